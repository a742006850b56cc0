/* SPDX-License-Identifier: MIT */
/*
 * The Hadamard binary matrix multiply (HadaNets, Akhauri 2019, Eq. 7).
 *
 * An operand row of K values is cut into segments of g consecutive
 * elements and stored as off[s] + c[s] * sign bits: bit k % 32 of word
 * k / 32 set means -1.  With Y = A . W^T and both operands in that form
 * (W without offset), per segment s of length n_s:
 *
 *   sum_k a~_k w~_k = ca[s] cw[s] (n_s - 2 popcount(a_s ^ w_s)) + mu[s] sw[s]
 *
 * where sw[s] = cw[s] (n_s - 2 popcount(w_s)) is the sum of w~ over the
 * segment (the paper prints the bare popcount of the XNOR; the signed dot
 * product of n sign bits is n - 2 popcount(xor)).  The offset term lets
 * one kernel serve sign binarisation (mu = 0), the paper's sign(0) = 0 on
 * non-negative inputs (mu = c = delta / 2) and a centred binarisation.
 * Bits past K are zero in both operands, so ragged rows need no masks.
 *
 * Floats: every output is the chain, over s in order,
 *   acc = fmaf((float)d_s, ca[s] * cw[s], acc); then, with offsets,
 *   acc = fmaf(mu[s], sw[s], acc)
 * which the SIMD kernels reproduce lane for lane: identical results.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Activations side: R rows (padded to a multiple of 4 with zero rows),
 * row-major, nw words and ns segments per row. */
typedef struct bgemm_a {
	void *mem;
	size_t cap;
	uint32_t *bits; /* R4 x nw */
	float *c;       /* R4 x ns */
	float *mu;      /* R4 x ns, NULL when every offset is zero */
	int R, R4, K, g, nw, ns;
} bgemm_a;

/* Weights side, in the kernel's layout: columns in blocks of 16 (the last
 * padded with zero columns), each block word-major: bits[b][w][16],
 * c[b][s][16], sw[b][s][16]. */
typedef struct bgemm_w {
	void *mem;
	size_t cap;
	uint32_t *bits;
	float *c, *sw;
	int M, M16, K, g, nw, ns;
} bgemm_w;

/* Segments: g >= 1 elements (g >= K: one segment, the whole row). */
static inline int bgemm_nseg(int K, int g) { return g >= K ? 1 : (K + g - 1) / g; }

/* Size a and clear it for R x K at segment g (grow-only; HDQT_ENOMEM). */
int bgemm_a_alloc(bgemm_a *a, int R, int K, int g, int with_mu);
void bgemm_a_free(bgemm_a *a);
int bgemm_w_alloc(bgemm_w *w, int M, int K, int g);
void bgemm_w_free(bgemm_w *w);

/* Write row r of w from sign bits (nw words, row-major: 1 = negative) and
 * per-segment scales; computes sw.  Rows never written stay zero. */
void bgemm_w_set_row(bgemm_w *w, int r, const uint32_t *bits, const float *c);
/* Row r's bits back in row-major order (nw words), for the reference. */
void bgemm_w_get_row(const bgemm_w *w, int r, uint32_t *bits);

/* Y rows [r0, r1) (r0 a multiple of 4) of A . W^T, ldy floats per row of
 * Y.  The reference loops bit by bit over segments; the kernels chosen at
 * start-up give the same floats. */
void bgemm_ref(const bgemm_a *a, const bgemm_w *w, int r0, int r1, float *Y, int ldy);
void bgemm_run(const bgemm_a *a, const bgemm_w *w, int r0, int r1, float *Y, int ldy);

/* Is segment g over K one the kernels take (16, a multiple of 32, or the
 * whole row)?  Then bgemm_run gives the same floats on every machine (a
 * kernel, or the reference where there is none); callers with other
 * segments may prefer a float product. */
int bgemm_fast(int K, int g);
/* "scalar", "avx2", "avx512" (VPOPCNTDQ), "avx512bitalg" or "neon"; forced by
 * HDQT_BKERNEL (or HDQT_KERNEL=scalar) at start-up. */
const char *bgemm_kernel_name(void);
/* Force a variant (tests, bench); HDQT_ENOTFOUND if this CPU lacks it. */
int bgemm_kernel_select(const char *name);

/* Kernel signature: rows [r0, r1) (r0 a multiple of 4), every column. */
typedef void (*bgemm_fn)(const bgemm_a *a, const bgemm_w *w, int r0, int r1, float *Y, int ldy);
int bgemm_x86_avx2_supported(void);
int bgemm_x86_avx512_supported(void);
int bgemm_x86_bitalg_supported(void);
void bgemm_x86_avx2(const bgemm_a *a, const bgemm_w *w, int r0, int r1, float *Y, int ldy);
void bgemm_x86_avx512(const bgemm_a *a, const bgemm_w *w, int r0, int r1, float *Y, int ldy);
void bgemm_x86_bitalg(const bgemm_a *a, const bgemm_w *w, int r0, int r1, float *Y, int ldy);
int bgemm_arm_neon_supported(void);
void bgemm_arm_neon(const bgemm_a *a, const bgemm_w *w, int r0, int r1, float *Y, int ldy);
