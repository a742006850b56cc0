/* SPDX-License-Identifier: MIT */
/*
 * x86-64 kernels of the binary matrix multiply (layout and float contract
 * in bgemm.h).  Vectorised across the 16 columns of a weight block, four
 * rows at a time, so each weight word loaded serves four rows and each
 * row's word is a broadcast.  Per segment: XOR, population count, d = n -
 * 2 count, then the same two fused multiply-adds as bgemm_ref, lane for
 * lane: the results equal the reference's floats exactly.
 *
 * d = n - 2 count is formed in float as fma(count, -2, n): both are small
 * integers, so it is exact and equals the reference's (float)(n - 2 count),
 * one instruction instead of a shift, a subtraction and a conversion.
 *
 * Segments the kernels take (bgemm_fast): 16 bits (half a word), any
 * multiple of 32 (whole words), or the whole row.
 *   avx512:       VPOPCNTDQ on 32-bit lanes; 16-bit halves by masking.
 *   avx512bitalg: as avx512, with BITALG's 16-bit popcount for g = 16.
 *   avx2:         no vector popcount: nibble lookup (VPSHUFB), byte counts
 *                 summed over up to 31 words before widening.
 */
#include "config.h"

#if HDQT_X86_64
#include <immintrin.h>

#include "bgemm.h"
#include "simd.h"

int bgemm_x86_avx2_supported(void)
{
	__builtin_cpu_init();
	return SIMD_AVX2() && __builtin_cpu_supports("fma");
}

int bgemm_x86_avx512_supported(void)
{
	__builtin_cpu_init();
	return SIMD_AVX512F() && __builtin_cpu_supports("avx512vpopcntdq");
}

int bgemm_x86_bitalg_supported(void)
{
	__builtin_cpu_init();
	return bgemm_x86_avx512_supported() && __builtin_cpu_supports("avx512bw") &&
	       __builtin_cpu_supports("avx512bitalg");
}

/* Segment s of a g-segmented row of K bits: words [w0, w1), n bits. */
static inline void seg_words(int K, int g, int ns, int nw, int s, int *w0, int *w1, int *n)
{
	if (ns == 1) {
		*w0 = 0;
		*w1 = nw;
		*n = K;
		return;
	}
	*w0 = s * g / 32;
	*w1 = *w0 + g / 32 < nw ? *w0 + g / 32 : nw;
	*n = K - s * g < g ? K - s * g : g;
}

/* ---------------- AVX-512 ---------------- */

/* One segment's update of the four row accumulators. */
#define STEP512(s, n, c0, c1, c2, c3)                                                              \
	do {                                                                                       \
		const __m512 cw = _mm512_loadu_ps(wc + (size_t)(s) * 16);                          \
		const __m512 nv = _mm512_set1_ps((float)(n)), m2 = _mm512_set1_ps(-2.0f);          \
		acc0 = _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(c0), m2, nv),              \
				       _mm512_mul_ps(_mm512_set1_ps(ac[(s)]), cw), acc0);          \
		acc1 = _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(c1), m2, nv),              \
				       _mm512_mul_ps(_mm512_set1_ps(ac[ns + (s)]), cw), acc1);     \
		acc2 = _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(c2), m2, nv),              \
				       _mm512_mul_ps(_mm512_set1_ps(ac[2 * ns + (s)]), cw), acc2); \
		acc3 = _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(c3), m2, nv),              \
				       _mm512_mul_ps(_mm512_set1_ps(ac[3 * ns + (s)]), cw), acc3); \
		if (mu) {                                                                          \
			const __m512 sv = _mm512_loadu_ps(ws + (size_t)(s) * 16);                  \
			acc0 = _mm512_fmadd_ps(_mm512_set1_ps(mu[(s)]), sv, acc0);                 \
			acc1 = _mm512_fmadd_ps(_mm512_set1_ps(mu[ns + (s)]), sv, acc1);            \
			acc2 = _mm512_fmadd_ps(_mm512_set1_ps(mu[2 * ns + (s)]), sv, acc2);        \
			acc3 = _mm512_fmadd_ps(_mm512_set1_ps(mu[3 * ns + (s)]), sv, acc3);        \
		}                                                                                  \
	} while (0)

/* The kernel body; POPC_HALVES(x, lo, hi) yields the popcounts of the
 * low and high 16 bits of each 32-bit lane. */
#define KERNEL512(NAME, TARGET, POPC_HALVES)                                                       \
	TARGET void NAME(const bgemm_a *a, const bgemm_w *w, int r0, int r1, float *Y, int ldy)    \
	{                                                                                          \
		const int nw = a->nw, ns = a->ns, K = a->K, g = a->g;                              \
		const int rend = r1 < a->R ? r1 : a->R; /* rows stored: [r0, min(r1, R)) */        \
		const __m512i low16 = _mm512_set1_epi32(0xffff);                                   \
		(void)low16;                                                                       \
		for (int b = 0; b < w->M16 / 16; b++) {                                            \
			const uint32_t *wb = w->bits + (size_t)b * nw * 16;                        \
			const float *wc = w->c + (size_t)b * ns * 16;                              \
			const float *ws = w->sw + (size_t)b * ns * 16;                             \
			const int cols = w->M - b * 16 < 16 ? w->M - b * 16 : 16;                  \
			const __mmask16 km = (__mmask16)((1u << cols) - 1u);                       \
			for (int r = r0; r < rend; r += 4) {                                \
				const uint32_t *x0 = a->bits + (size_t)r * nw, *x1 = x0 + nw;      \
				const uint32_t *x2 = x1 + nw, *x3 = x2 + nw;                       \
				const float *ac = a->c + (size_t)r * ns;                           \
				const float *mu = a->mu ? a->mu + (size_t)r * ns : NULL;           \
				__m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0; \
				if (g == 16 && ns > 1) {                                           \
					for (int wi = 0; wi < nw; wi++) {                          \
						const __m512i wv = _mm512_loadu_si512(wb + (size_t)wi * 16); \
						__m512i l0, l1, l2, l3, h0, h1, h2, h3;            \
						POPC_HALVES(_mm512_xor_si512(_mm512_set1_epi32((int)x0[wi]), wv), l0, h0); \
						POPC_HALVES(_mm512_xor_si512(_mm512_set1_epi32((int)x1[wi]), wv), l1, h1); \
						POPC_HALVES(_mm512_xor_si512(_mm512_set1_epi32((int)x2[wi]), wv), l2, h2); \
						POPC_HALVES(_mm512_xor_si512(_mm512_set1_epi32((int)x3[wi]), wv), l3, h3); \
						const int s = 2 * wi;                              \
						STEP512(s, K - s * 16 < 16 ? K - s * 16 : 16, l0, l1, l2, l3); \
						if (s + 1 < ns)                                    \
							STEP512(s + 1, K - (s + 1) * 16 < 16 ? K - (s + 1) * 16 : 16, \
								h0, h1, h2, h3);                   \
					}                                                          \
				} else {                                                           \
					for (int s = 0; s < ns; s++) {                             \
						int w0, w1, n;                                     \
						seg_words(K, g, ns, nw, s, &w0, &w1, &n);          \
						__m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0; \
						for (int wi = w0; wi < w1; wi++) {                 \
							const __m512i wv = _mm512_loadu_si512(wb + (size_t)wi * 16); \
							c0 = _mm512_add_epi32(c0, _mm512_popcnt_epi32(_mm512_xor_si512(_mm512_set1_epi32((int)x0[wi]), wv))); \
							c1 = _mm512_add_epi32(c1, _mm512_popcnt_epi32(_mm512_xor_si512(_mm512_set1_epi32((int)x1[wi]), wv))); \
							c2 = _mm512_add_epi32(c2, _mm512_popcnt_epi32(_mm512_xor_si512(_mm512_set1_epi32((int)x2[wi]), wv))); \
							c3 = _mm512_add_epi32(c3, _mm512_popcnt_epi32(_mm512_xor_si512(_mm512_set1_epi32((int)x3[wi]), wv))); \
						}                                                  \
						STEP512(s, n, c0, c1, c2, c3);                     \
					}                                                          \
				}                                                                  \
				float *y = Y + (size_t)r * ldy + (size_t)b * 16;                   \
				_mm512_mask_storeu_ps(y, km, acc0);                                \
				if (r + 1 < rend)                                                     \
					_mm512_mask_storeu_ps(y + ldy, km, acc1);                  \
				if (r + 2 < rend)                                                     \
					_mm512_mask_storeu_ps(y + 2 * (size_t)ldy, km, acc2);      \
				if (r + 3 < rend)                                                     \
					_mm512_mask_storeu_ps(y + 3 * (size_t)ldy, km, acc3);      \
			}                                                                          \
		}                                                                                  \
	}

#define HALVES_DQ(x, lo, hi)                                                                       \
	do {                                                                                       \
		const __m512i x_ = (x);                                                            \
		lo = _mm512_popcnt_epi32(_mm512_and_si512(x_, low16));                             \
		hi = _mm512_popcnt_epi32(_mm512_srli_epi32(x_, 16));                               \
	} while (0)

/* One 16-bit popcount gives both halves of each 32-bit lane at once. */
#define HALVES_BITALG(x, lo, hi)                                                                   \
	do {                                                                                       \
		const __m512i p_ = _mm512_popcnt_epi16(x);                                         \
		lo = _mm512_and_si512(p_, low16);                                                  \
		hi = _mm512_srli_epi32(p_, 16);                                                    \
	} while (0)

KERNEL512(bgemm_x86_avx512, __attribute__((target("avx512f,avx512vpopcntdq"))), HALVES_DQ)
KERNEL512(bgemm_x86_bitalg, __attribute__((target("avx512f,avx512bw,avx512vpopcntdq,avx512bitalg"))),
	  HALVES_BITALG)

/* ---------------- AVX2 ---------------- */

#define AVX2_T __attribute__((target("avx2,fma")))

/* Per-byte popcounts (0..8) by nibble lookup. */
AVX2_T static inline __m256i popc8(__m256i x)
{
	const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
					     1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
	const __m256i m = _mm256_set1_epi8(0x0f);
	return _mm256_add_epi8(_mm256_shuffle_epi8(lut, _mm256_and_si256(x, m)),
			       _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 4), m)));
}

/* Byte counts to 16-bit lanes (pairs of bytes), then to 32-bit lanes. */
AVX2_T static inline __m256i widen16(__m256i c8)
{
	return _mm256_maddubs_epi16(c8, _mm256_set1_epi8(1));
}

AVX2_T static inline __m256i widen32(__m256i c8)
{
	return _mm256_madd_epi16(widen16(c8), _mm256_set1_epi16(1));
}

#define STEP256(s, n, c0, c1, c2, c3)                                                              \
	do {                                                                                       \
		const __m256 cw = _mm256_loadu_ps(wc + (size_t)(s) * 16);                          \
		const __m256i nv = _mm256_set1_epi32(n);                                           \
		acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(nv, _mm256_slli_epi32(c0, 1))), \
				       _mm256_mul_ps(_mm256_set1_ps(ac[(s)]), cw), acc0);          \
		acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(nv, _mm256_slli_epi32(c1, 1))), \
				       _mm256_mul_ps(_mm256_set1_ps(ac[ns + (s)]), cw), acc1);     \
		acc2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(nv, _mm256_slli_epi32(c2, 1))), \
				       _mm256_mul_ps(_mm256_set1_ps(ac[2 * ns + (s)]), cw), acc2); \
		acc3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(nv, _mm256_slli_epi32(c3, 1))), \
				       _mm256_mul_ps(_mm256_set1_ps(ac[3 * ns + (s)]), cw), acc3); \
		if (mu) {                                                                          \
			const __m256 sv = _mm256_loadu_ps(ws + (size_t)(s) * 16);                  \
			acc0 = _mm256_fmadd_ps(_mm256_set1_ps(mu[(s)]), sv, acc0);                 \
			acc1 = _mm256_fmadd_ps(_mm256_set1_ps(mu[ns + (s)]), sv, acc1);            \
			acc2 = _mm256_fmadd_ps(_mm256_set1_ps(mu[2 * ns + (s)]), sv, acc2);        \
			acc3 = _mm256_fmadd_ps(_mm256_set1_ps(mu[3 * ns + (s)]), sv, acc3);        \
		}                                                                                  \
	} while (0)

#define XORB(x, wi) _mm256_xor_si256(_mm256_set1_epi32((int)(x)[wi]), wv)

/* Store the first n lanes of v. */
AVX2_T static inline void store8(float *y, __m256 v, int n)
{
	if (n >= 8) {
		_mm256_storeu_ps(y, v);
		return;
	}
	float t[8];
	_mm256_storeu_ps(t, v);
	for (int i = 0; i < n; i++)
		y[i] = t[i];
}

AVX2_T void bgemm_x86_avx2(const bgemm_a *a, const bgemm_w *w, int r0, int r1, float *Y, int ldy)
{
	const int nw = a->nw, ns = a->ns, K = a->K, g = a->g;
	const int rend = r1 < a->R ? r1 : a->R; /* rows stored: [r0, min(r1, R)) */
	const __m256i low16 = _mm256_set1_epi32(0xffff);
	for (int b = 0; b < w->M16 / 16; b++) {
		for (int half = 0; half < 2; half++) {
			const int col0 = b * 16 + half * 8;
			if (col0 >= w->M)
				break;
			const int cols = w->M - col0 < 8 ? w->M - col0 : 8;
			/* 8 of the block's 16 lanes: offset the block pointers. */
			const uint32_t *wb = w->bits + (size_t)b * nw * 16 + half * 8;
			const float *wc = w->c + (size_t)b * ns * 16 + half * 8;
			const float *ws = w->sw + (size_t)b * ns * 16 + half * 8;
			for (int r = r0; r < rend; r += 4) {
				const uint32_t *x0 = a->bits + (size_t)r * nw, *x1 = x0 + nw;
				const uint32_t *x2 = x1 + nw, *x3 = x2 + nw;
				const float *ac = a->c + (size_t)r * ns;
				const float *mu = a->mu ? a->mu + (size_t)r * ns : NULL;
				__m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
				if (g == 16 && ns > 1) {
					for (int wi = 0; wi < nw; wi++) {
						const __m256i wv = _mm256_loadu_si256((const __m256i *)(wb + (size_t)wi * 16));
						const __m256i p0 = widen16(popc8(XORB(x0, wi)));
						const __m256i p1 = widen16(popc8(XORB(x1, wi)));
						const __m256i p2 = widen16(popc8(XORB(x2, wi)));
						const __m256i p3 = widen16(popc8(XORB(x3, wi)));
						const int s = 2 * wi;
						STEP256(s, K - s * 16 < 16 ? K - s * 16 : 16,
							_mm256_and_si256(p0, low16), _mm256_and_si256(p1, low16),
							_mm256_and_si256(p2, low16), _mm256_and_si256(p3, low16));
						if (s + 1 < ns)
							STEP256(s + 1, K - (s + 1) * 16 < 16 ? K - (s + 1) * 16 : 16,
								_mm256_srli_epi32(p0, 16), _mm256_srli_epi32(p1, 16),
								_mm256_srli_epi32(p2, 16), _mm256_srli_epi32(p3, 16));
					}
				} else {
					for (int s = 0; s < ns; s++) {
						int w0, w1, n;
						seg_words(K, g, ns, nw, s, &w0, &w1, &n);
						__m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
						/* Byte counts reach at most 8 per word: 31 words fit a byte. */
						for (int wj = w0; wj < w1; wj += 31) {
							const int we = wj + 31 < w1 ? wj + 31 : w1;
							__m256i b0 = _mm256_setzero_si256(), b1 = b0, b2 = b0, b3 = b0;
							for (int wi = wj; wi < we; wi++) {
								const __m256i wv = _mm256_loadu_si256((const __m256i *)(wb + (size_t)wi * 16));
								b0 = _mm256_add_epi8(b0, popc8(XORB(x0, wi)));
								b1 = _mm256_add_epi8(b1, popc8(XORB(x1, wi)));
								b2 = _mm256_add_epi8(b2, popc8(XORB(x2, wi)));
								b3 = _mm256_add_epi8(b3, popc8(XORB(x3, wi)));
							}
							c0 = _mm256_add_epi32(c0, widen32(b0));
							c1 = _mm256_add_epi32(c1, widen32(b1));
							c2 = _mm256_add_epi32(c2, widen32(b2));
							c3 = _mm256_add_epi32(c3, widen32(b3));
						}
						STEP256(s, n, c0, c1, c2, c3);
					}
				}
				float *y = Y + (size_t)r * ldy + col0;
				store8(y, acc0, cols);
				if (r + 1 < rend)
					store8(y + ldy, acc1, cols);
				if (r + 2 < rend)
					store8(y + 2 * (size_t)ldy, acc2, cols);
				if (r + 3 < rend)
					store8(y + 3 * (size_t)ldy, acc3, cols);
			}
		}
	}
}

#endif
