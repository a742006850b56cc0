/* SPDX-License-Identifier: MIT */
/*
 * aarch64 dot-product kernel for gemm_q (ARMv8.2 FEAT_DotProd: Cortex-A55,
 * A76, A78, Neoverse N1, the Raspberry Pi 5).  The only file built with
 * -march=armv8.2-a+dotprod; gemm.c calls it only when getauxval(AT_HWCAP)
 * has HWCAP_ASIMDDP, so one binary still runs on v8.0 cores.
 *
 * SDOT (vdotq_laneq_s32) adds, in each of 4 int32 lanes, the dot product of
 * 4 signed bytes of B (one column, 4 k) with 4 bytes of A chosen by lane
 * index from a 16-byte register, i.e. 16 multiply-accumulates per
 * instruction with exact int32 sums: no width limit, so 8-bit operands are
 * exact.  Layout as in gemm.c with off = 0 (s8 x s8, no offset correction).
 * Two rows of A by 16 columns: 8 tile accumulators + 8 wide sums in
 * registers; one 16-byte load of A serves 4 groups of k.  Each tile sum is
 * clamped after its last group and added to the wide sum, as gemm_q_ref.
 */
#include "config.h"

#if HDQT_AARCH64
#include <arm_neon.h>
#include <string.h>

#include "gemm.h"

#if !defined(__ARM_FEATURE_DOTPROD)
#error "gemm_arm_dot.c must be compiled with -march=armv8.2-a+dotprod"
#endif

static inline int8x16_t bcast4(const int8_t *a)
{
	int32_t v;
	memcpy(&v, a, 4);
	return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

static inline int32x4_t clamp_add(int32x4_t w, int32x4_t s, int32x4_t lo, int32x4_t hi)
{
	return vaddq_s32(w, vminq_s32(vmaxq_s32(s, lo), hi));
}

/* One group of 4 k for two rows (one where two is 0): 4 B registers x 2
 * rows = 8 SDOT. */
#define GROUP(bp, X0, X1, L)                                                      \
	do {                                                                      \
		const int8x16_t b0 = vld1q_s8(bp), b1 = vld1q_s8((bp) + 16);      \
		const int8x16_t b2 = vld1q_s8((bp) + 32), b3 = vld1q_s8((bp) + 48); \
		s00 = vdotq_laneq_s32(s00, b0, X0, L);                            \
		s01 = vdotq_laneq_s32(s01, b1, X0, L);                            \
		s02 = vdotq_laneq_s32(s02, b2, X0, L);                            \
		s03 = vdotq_laneq_s32(s03, b3, X0, L);                            \
		if (two) {                                                        \
			s10 = vdotq_laneq_s32(s10, b0, X1, L);                    \
			s11 = vdotq_laneq_s32(s11, b1, X1, L);                    \
			s12 = vdotq_laneq_s32(s12, b2, X1, L);                    \
			s13 = vdotq_laneq_s32(s13, b3, X1, L);                    \
		}                                                                 \
	} while (0)

/* Rows i and i + 1 (two) or row i alone against one 16-column block; two
 * a constant at each call, so that a last row alone (a prediction's one
 * row) makes half the SDOTs instead of its own again as the second row's. */
static inline __attribute__((always_inline)) void
rows_block(const int8_t *Ap, const int8_t *bb, int i, int J, int jb, int ncol, int K4, int tile4,
	   int ntiles, int32x4_t vlo, int32x4_t vhi, int32_t *C, const int two)
{
	const size_t rs = (size_t)K4 * 4;
	const int8_t *a0 = Ap + (size_t)i * rs;
	const int8_t *a1 = two ? a0 + rs : a0;
	int32x4_t w00 = vdupq_n_s32(0), w01 = w00, w02 = w00, w03 = w00;
	int32x4_t w10 = w00, w11 = w00, w12 = w00, w13 = w00;
	for (int t = 0; t < ntiles; t++) {
		const int k0 = t * tile4, k1 = k0 + tile4 < K4 ? k0 + tile4 : K4;
		int32x4_t s00 = vdupq_n_s32(0), s01 = s00, s02 = s00, s03 = s00;
		int32x4_t s10 = s00, s11 = s00, s12 = s00, s13 = s00;
		int k = k0;
		for (; k + 4 <= k1; k += 4) {
			const int8x16_t x0 = vld1q_s8(a0 + 4 * k), x1 = vld1q_s8(a1 + 4 * k);
			const int8_t *b = bb + (size_t)k * 64;
			GROUP(b, x0, x1, 0);
			GROUP(b + 64, x0, x1, 1);
			GROUP(b + 128, x0, x1, 2);
			GROUP(b + 192, x0, x1, 3);
		}
		for (; k < k1; k++) {
			const int8x16_t x0 = bcast4(a0 + 4 * k), x1 = bcast4(a1 + 4 * k);
			GROUP(bb + (size_t)k * 64, x0, x1, 0);
		}
		w00 = clamp_add(w00, s00, vlo, vhi);
		w01 = clamp_add(w01, s01, vlo, vhi);
		w02 = clamp_add(w02, s02, vlo, vhi);
		w03 = clamp_add(w03, s03, vlo, vhi);
		if (two) {
			w10 = clamp_add(w10, s10, vlo, vhi);
			w11 = clamp_add(w11, s11, vlo, vhi);
			w12 = clamp_add(w12, s12, vlo, vhi);
			w13 = clamp_add(w13, s13, vlo, vhi);
		}
	}
	int32_t out[32];
	vst1q_s32(out, w00);
	vst1q_s32(out + 4, w01);
	vst1q_s32(out + 8, w02);
	vst1q_s32(out + 12, w03);
	vst1q_s32(out + 16, w10);
	vst1q_s32(out + 20, w11);
	vst1q_s32(out + 24, w12);
	vst1q_s32(out + 28, w13);
	memcpy(C + (size_t)i * J + jb * 16, out, sizeof(int32_t) * (size_t)ncol);
	if (two)
		memcpy(C + (size_t)(i + 1) * J + jb * 16, out + 16, sizeof(int32_t) * (size_t)ncol);
}

void gemm_arm_dotprod(const int8_t *Ap, const int8_t *Bp, int I, int J, int K4, int tile4,
		      int ntiles, int maxprod, int32_t lo, int32_t hi, int32_t *C)
{
	(void)maxprod; /* int32 lanes: exact for any int8 operands */
	const int32x4_t vlo = vdupq_n_s32(lo), vhi = vdupq_n_s32(hi);
	const int J16 = (J + 15) / 16;
	for (int jb = 0; jb < J16; jb++) {
		const int8_t *bb = Bp + (size_t)jb * K4 * 64;
		const int ncol = J - jb * 16 < 16 ? J - jb * 16 : 16;
		for (int i = 0; i < I; i += 2) {
			if (i + 1 < I)
				rows_block(Ap, bb, i, J, jb, ncol, K4, tile4, ntiles, vlo, vhi, C, 1);
			else
				rows_block(Ap, bb, i, J, jb, ncol, K4, tile4, ntiles, vlo, vhi, C, 0);
		}
	}
}
#endif /* HDQT_AARCH64 */
