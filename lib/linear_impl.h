/* SPDX-License-Identifier: MIT */
/*
 * Inside the linear layer: the interface each quantisation family
 * implements, and the shared loops they are built from (lib/linear.c).
 * Every parallel loop splits rows in blocks of 4, never a reduction, so
 * results do not depend on the number of threads.
 */
#pragma once

#include "config.h"
#include "linear.h"
#include "quant.h"

/* A quantisation family: its forward product, its backward products, and
 * what it caches between steps on the layer (released by release()). */
typedef struct linear_family {
	const char *name;
	int (*forward)(linear *L, const float *X, int N, int x_unsigned, const hdqt_qconfig *q,
		       linear_scratch *s, float *Y);
	int (*backward)(linear *L, const float *X, int x_unsigned, const float *dY, int N,
			const hdqt_qconfig *q, linear_scratch *s, hdqt_rng *rng, float *dX);
	void (*release)(linear *L);
	/* linear_sgd with the forward cache rebuilt on the way (NULL: the
	 * plain step); returns 0 where it did not step (the caller does). */
	int (*sgd)(linear *L, int x_unsigned, const hdqt_qconfig *q, linear_scratch *s, float mu,
		   float wd, float lr);
} linear_family;

extern const linear_family linear_hdqt_family;    /* fp32, int, hdqt-paper, hdqt */
extern const linear_family linear_hadanet_family; /* hadanet, hadanet-paper, xnor, hbwn */

void linear_hadanet_scratch_free(linear_scratch *s);
/* Accumulate, over R rows of X (R x K) fed to a binarised layer under q:
 * acc[0] zeros, acc[1] cut by the STE, acc[2..4] squared error of the
 * sign / mask / centre rules (mask skipped once an input is negative),
 * acc[5] squared norm, acc[6] elements, acc[7] 1 once an input is negative. */
int linear_hadanet_stats(linear_scratch *s, const float *X, int R, int K, int x_unsigned,
			 const hdqt_qconfig *q, double acc[8]);

/* Phase timing (hdqt_model_profile): PHASE_BEGIN(s) in a block, then
 * PHASE_END(s, HDQT_PHASE_x) adds the elapsed time when profiling. */
double linear_clock(void);
#define PHASE_BEGIN(s) const double phase_t0_ = (s)->profile ? linear_clock() : 0.0
#define PHASE_END(s, ph)                                                                           \
	do {                                                                                       \
		if ((s)->profile)                                                                  \
			(s)->prof[ph] += linear_clock() - phase_t0_;                               \
	} while (0)

/* Grow-only scratch buffer; NULL on allocation failure (*p unchanged). */
void *linear_grow_mem(void **p, size_t *cap, size_t n);
#define SF(s, i, n) ((float *)linear_grow_mem((void **)&(s)->f[i], &(s)->fcap[i], (size_t)(n) * sizeof(float)))
#define SQ(s, i, n) ((int8_t *)linear_grow_mem((void **)&(s)->q[i], &(s)->qcap[i], (size_t)(n)))

/* Tasks for a loop over R rows on s's pool, and rows [r0, r1) of task t. */
int linear_ntasks(const linear_scratch *s, int R);
void linear_task_rows(int R, int n, int t, int *r0, int *r1);

void linear_quant_par(linear_scratch *s, const float *x, int R, int K, const quant_spec *sp,
		      hdqt_rng *rng, int8_t *q, float *scale);
void linear_fwht_par(linear_scratch *s, float *x, int R, int K, int blk);
/* Y (I x J) = (A . B^T) * sa[i] * sb[j] / div, B packed: the integer
 * product rescaled in its store (gemm_q_packed_f), rows over the pool. */
int linear_gemm_par(linear_scratch *s, const int8_t *qa, int I, const gemm_packed *pb,
		    const float *sa, const float *sb, float div, float *Y);
void linear_f32_par(linear_scratch *s, const float *A, const float *B, int I, int J, int K, float *C);
#if HAVE_CBLAS
void linear_blas_par(linear_scratch *s, int ta, int tb, int I, int J, int K, const float *A, int lda,
		     const float *B, int ldb, float *C);
#endif
/* gemm_pack with the column blocks packed on the pool (the same bytes). */
int linear_pack_par(linear_scratch *s, gemm_packed *pb, const int8_t *B, int J, int K,
		    const gemm_params *p);
/* The column path (linear.c): the operand whose row c is column c of z
 * (R x C, rows of C floats), zero-padded to Rp rows, transformed by the
 * block Hadamard of size blk along its rows and quantised with sp (scale[c]
 * per operand row, or one per tensor).  _b packs it as the B of a product
 * under gp into pb; _a writes it as the A of a product whose B is pb
 * (already packed or begun) into scratch returned in *A, for
 * linear_gemm_apacked_par.  Timed as HDQT_PHASE_FUSED. */
int linear_colq_b(linear_scratch *s, const float *z, int R, int C, int Rp, int blk,
		  const quant_spec *sp, hdqt_rng *rng, const gemm_params *gp, gemm_packed *pb,
		  float *scale);
int linear_colq_a(linear_scratch *s, const float *z, int R, int C, int Rp, int blk,
		  const quant_spec *sp, hdqt_rng *rng, const gemm_packed *pb, void **A,
		  float *scale);
/* The same with A from linear_colq_a. */
int linear_gemm_apacked_par(linear_scratch *s, const void *A, int I, const gemm_packed *pb,
			    const float *sa, const float *sb, float div, float *Y);

/* The SGD update of n weights (linear_sgd's formula): the same floats
 * however the weights are cut into spans. */
void linear_sgd_span(float *w, float *v, const float *g, size_t n, float mu, float wd, float lr);

/* Float products: Y = X W^T; gw = dY^T X and (dX != NULL) dX = dY W. */
int linear_fp32_forward(linear_scratch *s, const float *X, int N, const float *W, int M, int K,
			float *Y);
int linear_fp32_backward(linear_scratch *s, const float *X, const float *dY, const float *W, int N,
			 int M, int K, float *gw, float *dX);
