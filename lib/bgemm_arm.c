/* SPDX-License-Identifier: MIT */
/*
 * aarch64 kernel of the binary matrix multiply (layout and float contract
 * in bgemm.h), in ARMv8.0 NEON: every aarch64 core has it.  Four rows at
 * a time against four columns of a weight block (one 128-bit lane group),
 * the block's four quarters in turn.  Population counts come from CNT
 * (per byte) and pairwise widening adds (UADDLP) to 16-bit lanes, which
 * are the two half-word counts of g = 16, then to 32-bit lanes.  The float
 * steps are the reference's: d = fma(count, -2, n), exact for these small
 * integers, then acc = fma(d, ca * cw, acc) and, with offsets,
 * acc = fma(mu, sw, acc); FMLA rounds once, as fmaf does.
 */
#include "config.h"

#if HDQT_AARCH64
#include <arm_neon.h>

#include "bgemm.h"

int bgemm_arm_neon_supported(void)
{
	return 1; /* Advanced SIMD is mandatory in ARMv8-A */
}

static inline uint16x8_t popc16(uint32x4_t x)
{
	return vpaddlq_u8(vcntq_u8(vreinterpretq_u8_u32(x)));
}

static inline uint32x4_t popc32(uint32x4_t x)
{
	return vpaddlq_u16(popc16(x));
}

#define STEPN(s, n, c0, c1, c2, c3)                                                                \
	do {                                                                                       \
		const float32x4_t cw = vld1q_f32(wc + (size_t)(s) * 16);                           \
		const float32x4_t nv = vdupq_n_f32((float)(n)), m2 = vdupq_n_f32(-2.0f);           \
		acc0 = vfmaq_f32(acc0, vfmaq_f32(nv, vcvtq_f32_u32(c0), m2), vmulq_n_f32(cw, ac[(s)])); \
		acc1 = vfmaq_f32(acc1, vfmaq_f32(nv, vcvtq_f32_u32(c1), m2),                         \
				 vmulq_n_f32(cw, ac[ns + (s)]));                                    \
		acc2 = vfmaq_f32(acc2, vfmaq_f32(nv, vcvtq_f32_u32(c2), m2),                         \
				 vmulq_n_f32(cw, ac[2 * ns + (s)]));                                \
		acc3 = vfmaq_f32(acc3, vfmaq_f32(nv, vcvtq_f32_u32(c3), m2),                         \
				 vmulq_n_f32(cw, ac[3 * ns + (s)]));                                \
		if (mu) {                                                                          \
			const float32x4_t sv = vld1q_f32(ws + (size_t)(s) * 16);                   \
			acc0 = vfmaq_f32(acc0, vdupq_n_f32(mu[(s)]), sv);                          \
			acc1 = vfmaq_f32(acc1, vdupq_n_f32(mu[ns + (s)]), sv);                     \
			acc2 = vfmaq_f32(acc2, vdupq_n_f32(mu[2 * ns + (s)]), sv);                 \
			acc3 = vfmaq_f32(acc3, vdupq_n_f32(mu[3 * ns + (s)]), sv);                 \
		}                                                                                  \
	} while (0)

#define XORN(x, wi) veorq_u32(vdupq_n_u32((x)[wi]), wv)

static inline void store4(float *y, float32x4_t v, int n)
{
	if (n >= 4) {
		vst1q_f32(y, v);
		return;
	}
	float t[4];
	vst1q_f32(t, v);
	for (int i = 0; i < n; i++)
		y[i] = t[i];
}

void bgemm_arm_neon(const bgemm_a *a, const bgemm_w *w, int r0, int r1, float *Y, int ldy)
{
	const int nw = a->nw, ns = a->ns, K = a->K, g = a->g;
	const int rend = r1 < a->R ? r1 : a->R; /* rows stored: [r0, min(r1, R)) */
	const uint32x4_t low16 = vdupq_n_u32(0xffff);
	for (int b = 0; b < w->M16 / 16; b++) {
		for (int qt = 0; qt < 4; qt++) {
			const int col0 = b * 16 + qt * 4;
			if (col0 >= w->M)
				break;
			const int cols = w->M - col0 < 4 ? w->M - col0 : 4;
			const uint32_t *wb = w->bits + (size_t)b * nw * 16 + qt * 4;
			const float *wc = w->c + (size_t)b * ns * 16 + qt * 4;
			const float *ws = w->sw + (size_t)b * ns * 16 + qt * 4;
			for (int r = r0; r < rend; r += 4) {
				const uint32_t *x0 = a->bits + (size_t)r * nw, *x1 = x0 + nw;
				const uint32_t *x2 = x1 + nw, *x3 = x2 + nw;
				const float *ac = a->c + (size_t)r * ns;
				const float *mu = a->mu ? a->mu + (size_t)r * ns : NULL;
				float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0, acc2 = acc0, acc3 = acc0;
				if (g == 16 && ns > 1) {
					for (int wi = 0; wi < nw; wi++) {
						const uint32x4_t wv = vld1q_u32(wb + (size_t)wi * 16);
						const uint32x4_t p0 = vreinterpretq_u32_u16(popc16(XORN(x0, wi)));
						const uint32x4_t p1 = vreinterpretq_u32_u16(popc16(XORN(x1, wi)));
						const uint32x4_t p2 = vreinterpretq_u32_u16(popc16(XORN(x2, wi)));
						const uint32x4_t p3 = vreinterpretq_u32_u16(popc16(XORN(x3, wi)));
						const int s = 2 * wi;
						STEPN(s, K - s * 16 < 16 ? K - s * 16 : 16, vandq_u32(p0, low16),
						      vandq_u32(p1, low16), vandq_u32(p2, low16), vandq_u32(p3, low16));
						if (s + 1 < ns)
							STEPN(s + 1, K - (s + 1) * 16 < 16 ? K - (s + 1) * 16 : 16,
							      vshrq_n_u32(p0, 16), vshrq_n_u32(p1, 16),
							      vshrq_n_u32(p2, 16), vshrq_n_u32(p3, 16));
					}
				} else {
					for (int s = 0; s < ns; s++) {
						int w0, w1, n;
						if (ns == 1) {
							w0 = 0;
							w1 = nw;
							n = K;
						} else {
							w0 = s * g / 32;
							w1 = w0 + g / 32 < nw ? w0 + g / 32 : nw;
							n = K - s * g < g ? K - s * g : g;
						}
						uint32x4_t c0 = vdupq_n_u32(0), c1 = c0, c2 = c0, c3 = c0;
						for (int wi = w0; wi < w1; wi++) {
							const uint32x4_t wv = vld1q_u32(wb + (size_t)wi * 16);
							c0 = vaddq_u32(c0, popc32(XORN(x0, wi)));
							c1 = vaddq_u32(c1, popc32(XORN(x1, wi)));
							c2 = vaddq_u32(c2, popc32(XORN(x2, wi)));
							c3 = vaddq_u32(c3, popc32(XORN(x3, wi)));
						}
						STEPN(s, n, c0, c1, c2, c3);
					}
				}
				float *y = Y + (size_t)r * ldy + col0;
				store4(y, acc0, cols);
				if (r + 1 < rend)
					store4(y + ldy, acc1, cols);
				if (r + 2 < rend)
					store4(y + 2 * (size_t)ldy, acc2, cols);
				if (r + 3 < rend)
					store4(y + 3 * (size_t)ldy, acc3, cols);
			}
		}
	}
}

#endif
