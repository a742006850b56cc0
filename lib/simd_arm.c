/* SPDX-License-Identifier: MIT */
/*
 * NEON element-wise passes (see simd_arm.h).  Floats equal the portable
 * loops': every lane computes the same single operations on the same
 * operands; the reductions keep quant.c's 8 interleaved lanes (two 4-lane
 * registers, or four 2-lane doubles), which quant.c then combines in its
 * fixed order.  Built in ISO C mode (-std=c11), so GCC does not contract a
 * multiply and an add into FMLA, here or in the portable loops.
 */
#include "config.h"

#if HDQT_AARCH64
#include <arm_neon.h>
#include <stddef.h>

#include "simd_arm.h"

/* m = a > m ? a : m per lane (FCMGT + BSL): a NaN a keeps m, as the scalar
 * ternary does; FMAX would propagate the NaN instead. */
static inline float32x4_t max_keep(float32x4_t m, float32x4_t a)
{
	return vbslq_f32(vcgtq_f32(a, m), a, m);
}

long simd_arm_max_abs(const float *x, long n, float mx[8])
{
	float32x4_t m0 = vld1q_f32(mx), m1 = vld1q_f32(mx + 4);
	long i = 0;
	for (; i + 8 <= n; i += 8) {
		m0 = max_keep(m0, vabsq_f32(vld1q_f32(x + i)));
		m1 = max_keep(m1, vabsq_f32(vld1q_f32(x + i + 4)));
	}
	vst1q_f32(mx, m0);
	vst1q_f32(mx + 4, m1);
	return i;
}

long simd_arm_sum_sq(const float *x, long n, double acc[8])
{
	float64x2_t a0 = vld1q_f64(acc), a1 = vld1q_f64(acc + 2);
	float64x2_t a2 = vld1q_f64(acc + 4), a3 = vld1q_f64(acc + 6);
	long i = 0;
	for (; i + 8 <= n; i += 8) {
		const float32x4_t v = vld1q_f32(x + i), u = vld1q_f32(x + i + 4);
		const float64x2_t d0 = vcvt_f64_f32(vget_low_f32(v)), d1 = vcvt_high_f64_f32(v);
		const float64x2_t d2 = vcvt_f64_f32(vget_low_f32(u)), d3 = vcvt_high_f64_f32(u);
		/* a separate multiply and add, as the scalar "acc += x * x" */
		a0 = vaddq_f64(a0, vmulq_f64(d0, d0));
		a1 = vaddq_f64(a1, vmulq_f64(d1, d1));
		a2 = vaddq_f64(a2, vmulq_f64(d2, d2));
		a3 = vaddq_f64(a3, vmulq_f64(d3, d3));
	}
	vst1q_f64(acc, a0);
	vst1q_f64(acc + 2, a1);
	vst1q_f64(acc + 4, a2);
	vst1q_f64(acc + 6, a3);
	return i;
}

static inline int32x4_t round4(float32x4_t v, float32x4_t vinv, float32x4_t lo, float32x4_t hi,
			       const uint16_t *u16, float32x4_t add, int32x4_t ib)
{
	static const float inv65536 = 1.0f / 65536.0f;
	v = vmulq_f32(v, vinv);
	v = vbslq_f32(vcgtq_f32(v, lo), v, lo); /* v > qmin ? v : qmin (NaN -> qmin) */
	v = vbslq_f32(vcltq_f32(v, hi), v, hi); /* v < qmax ? v : qmax */
	if (u16) {
		const float32x4_t u = vcvtq_f32_u32(vmovl_u16(vld1_u16(u16)));
		v = vaddq_f32(vaddq_f32(v, vmulq_n_f32(u, inv65536)), add);
	} else {
		v = vaddq_f32(v, add);
	}
	return vsubq_s32(vcvtq_s32_f32(v), ib); /* FCVTZS truncates, as (int) */
}

long simd_arm_round(const float *x, long n, float inv, float qmin, float qmax, float bias,
		    const uint16_t *u16, int8_t *q)
{
	const float32x4_t vinv = vdupq_n_f32(inv), lo = vdupq_n_f32(qmin), hi = vdupq_n_f32(qmax);
	const float32x4_t add = vdupq_n_f32(u16 ? bias : bias + 0.5f);
	const int32x4_t ib = vdupq_n_s32((int)bias);
	long i = 0;
	for (; i + 8 <= n; i += 8) {
		int32x4_t r0 = round4(vld1q_f32(x + i), vinv, lo, hi, u16 ? u16 + i : NULL, add, ib);
		int32x4_t r1 = round4(vld1q_f32(x + i + 4), vinv, lo, hi, u16 ? u16 + i + 4 : NULL,
				      add, ib);
		/* values in [-128, 127]: plain narrowing keeps them */
		int16x8_t w = vcombine_s16(vmovn_s32(r0), vmovn_s32(r1));
		vst1_s8(q + i, vmovn_s16(w));
	}
	return i;
}

/* The passes h = 1 and h = 2 on 4 values in registers; each output is the
 * scalar loop's a + b or a - b of the same two values. */
static inline float32x4_t fwht4(float32x4_t x)
{
	static const uint32_t odd[4] = {0, ~0u, 0, ~0u};
	float32x4_t s = vrev64q_f32(x); /* x1 x0 x3 x2 */
	x = vbslq_f32(vld1q_u32(odd), vsubq_f32(s, x), vaddq_f32(x, s));
	const float32x2_t l = vget_low_f32(x), h = vget_high_f32(x);
	return vcombine_f32(vadd_f32(l, h), vsub_f32(l, h));
}

void simd_arm_fwht_rows(float *x, int rows, int len, int blk)
{
	for (int r = 0; r < rows; r++) {
		float *v = x + (long)r * len;
		for (int i = 0; i < len; i += 4)
			vst1q_f32(v + i, fwht4(vld1q_f32(v + i)));
		for (int h = 4; h < blk; h <<= 1)
			for (int i = 0; i < len; i += 2 * h)
				for (int j = i; j < i + h; j += 4) {
					const float32x4_t a = vld1q_f32(v + j), b = vld1q_f32(v + j + h);
					vst1q_f32(v + j, vaddq_f32(a, b));
					vst1q_f32(v + j + h, vsubq_f32(a, b));
				}
	}
}
#endif /* HDQT_AARCH64 */
