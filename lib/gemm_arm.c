/* SPDX-License-Identifier: MIT */
/*
 * aarch64 kernels for gemm_q, plain NEON (ARMv8.0: Cortex-A53/A72, the
 * Raspberry Pi 3 and 4), and the CPU checks of both aarch64 variants (the
 * dot-product kernel is in gemm_arm_dot.c, the only file built with
 * +dotprod).  Layout as in gemm.c with off = 0: Ap holds A's own signed
 * bytes, Bp blocks of 16 columns x 4 bytes of k.
 *
 * The NEON kernel, one row of A at a time and 16 output columns:
 *   SMULL/SMLAL (vmull_s8, vmlal_s8) multiply 8 byte pairs into 8 int16
 *   lanes, so one 16-byte B register (4 columns x 4 k) takes two of them;
 *   each int16 lane collects the products of one (column, k mod 4) over
 *   successive 4-byte groups.  A flush folds the lanes into the int32 tile
 *   sum: ADDP (vpaddq_s16) adds neighbouring lanes (2 products -> 1 lane),
 *   SADALP (vpadalq_s16) adds the remaining pairs into int32 -- one lane per
 *   column.  Exactness: after n groups a lane holds n products and the ADDP
 *   result 2n, each at most maxprod = max|a| * max|b| in magnitude, so no
 *   int16 overflows while 2 n maxprod <= 32767, i.e. n = 32767 / (2 maxprod)
 *   groups between flushes: 8-bit operands (127 * 127) flush every group,
 *   4-bit unsigned A (15 * 7 = 105) every 156 groups (624 k), signed 4-bit
 *   (7 * 7) every 334.  The model's tiles (32 forward: 8 groups) therefore
 *   never flush mid-tile at 4 bits: the 8-bit tile clamp keeps each tile
 *   short enough that its exact sum is formed in 16-bit lanes.  Every tile
 *   sum is exact before its clamp, so the result is gemm_q_ref's bit for bit.
 */
#include "config.h"

#if HDQT_AARCH64
#include <arm_neon.h>
#include <string.h>
#include <sys/auxv.h>

#include "gemm.h"

#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1UL << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1UL << 20)
#endif

int gemm_arm_neon_supported(void)
{
	return (getauxval(AT_HWCAP) & HWCAP_ASIMD) != 0;
}

int gemm_arm_dotprod_supported(void)
{
	return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
}

/* 4 bytes of A broadcast to every 32-bit lane (LD1R): lane pattern a0 a1 a2 a3 x4. */
static inline int8x16_t bcast4(const int8_t *a)
{
	int32_t v;
	memcpy(&v, a, 4);
	return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

void gemm_arm_neon(const int8_t *Ap, const int8_t *Bp, int I, int J, int K4, int tile4,
		   int ntiles, int maxprod, int32_t lo, int32_t hi, int32_t *C)
{
	const int32x4_t vlo = vdupq_n_s32(lo), vhi = vdupq_n_s32(hi);
	const int J16 = (J + 15) / 16;
	int nflush = 32767 / (2 * (maxprod > 0 ? maxprod : 1));
	if (nflush < 1)
		nflush = 1; /* cannot happen for operands of <= 8 bits */
	for (int jb = 0; jb < J16; jb++) {
		const int8_t *bb = Bp + (size_t)jb * K4 * 64;
		const int ncol = J - jb * 16 < 16 ? J - jb * 16 : 16;
		for (int i = 0; i < I; i++) {
			const int8_t *a = Ap + (size_t)i * K4 * 4;
			int32x4_t w0 = vdupq_n_s32(0), w1 = w0, w2 = w0, w3 = w0;
			for (int t = 0; t < ntiles; t++) {
				const int k0 = t * tile4, k1 = k0 + tile4 < K4 ? k0 + tile4 : K4;
				int32x4_t s0 = vdupq_n_s32(0), s1 = s0, s2 = s0, s3 = s0;
				for (int k = k0; k < k1;) {
					const int kend = k1 - k > nflush ? k + nflush : k1;
					const int8_t *b = bb + (size_t)k * 64;
					int8x16_t x = bcast4(a + 4 * k);
					int8x16_t b0 = vld1q_s8(b), b1 = vld1q_s8(b + 16);
					int8x16_t b2 = vld1q_s8(b + 32), b3 = vld1q_s8(b + 48);
					const int8x8_t xl = vget_low_s8(x);
					int16x8_t h0 = vmull_s8(vget_low_s8(b0), xl), g0 = vmull_high_s8(b0, x);
					int16x8_t h1 = vmull_s8(vget_low_s8(b1), xl), g1 = vmull_high_s8(b1, x);
					int16x8_t h2 = vmull_s8(vget_low_s8(b2), xl), g2 = vmull_high_s8(b2, x);
					int16x8_t h3 = vmull_s8(vget_low_s8(b3), xl), g3 = vmull_high_s8(b3, x);
					for (k++; k < kend; k++) {
						b = bb + (size_t)k * 64;
						x = bcast4(a + 4 * k);
						b0 = vld1q_s8(b);
						b1 = vld1q_s8(b + 16);
						b2 = vld1q_s8(b + 32);
						b3 = vld1q_s8(b + 48);
						const int8x8_t yl = vget_low_s8(x);
						h0 = vmlal_s8(h0, vget_low_s8(b0), yl);
						g0 = vmlal_high_s8(g0, b0, x);
						h1 = vmlal_s8(h1, vget_low_s8(b1), yl);
						g1 = vmlal_high_s8(g1, b1, x);
						h2 = vmlal_s8(h2, vget_low_s8(b2), yl);
						g2 = vmlal_high_s8(g2, b2, x);
						h3 = vmlal_s8(h3, vget_low_s8(b3), yl);
						g3 = vmlal_high_s8(g3, b3, x);
					}
					/* Flush: lanes (c0 k0..3, c1 k0..3 | c2.., c3..) ->
					 * ADDP pairs -> SADALP into one int32 lane per column. */
					s0 = vpadalq_s16(s0, vpaddq_s16(h0, g0));
					s1 = vpadalq_s16(s1, vpaddq_s16(h1, g1));
					s2 = vpadalq_s16(s2, vpaddq_s16(h2, g2));
					s3 = vpadalq_s16(s3, vpaddq_s16(h3, g3));
				}
				w0 = vaddq_s32(w0, vminq_s32(vmaxq_s32(s0, vlo), vhi));
				w1 = vaddq_s32(w1, vminq_s32(vmaxq_s32(s1, vlo), vhi));
				w2 = vaddq_s32(w2, vminq_s32(vmaxq_s32(s2, vlo), vhi));
				w3 = vaddq_s32(w3, vminq_s32(vmaxq_s32(s3, vlo), vhi));
			}
			int32_t out[16];
			vst1q_s32(out, w0);
			vst1q_s32(out + 4, w1);
			vst1q_s32(out + 8, w2);
			vst1q_s32(out + 12, w3);
			memcpy(C + (size_t)i * J + jb * 16, out, sizeof(int32_t) * (size_t)ncol);
		}
	}
}
#endif /* HDQT_AARCH64 */
