/* SPDX-License-Identifier: MIT */
/*
 * BLAS products (blas.h).
 *
 * Always on one OpenBLAS thread: the engine spreads a product over its own
 * pool in blocks that do not depend on the thread count (linear.c), so the
 * fp32 recipe gives the same floats on any number of threads.  OpenBLAS's
 * own threading does not: with the kernels it picks where it does not know
 * the CPU (Prescott, Haswell; seen on a Xeon of family 6 model 207 with
 * 0.3.21) a product at two threads differs from the same at one, and its
 * worker threads would spin against the pool's.
 */
#include <stdatomic.h>

#include "config.h"

#if HAVE_CBLAS
#include <cblas.h>

#include "blas.h"

static atomic_int one_thread; /* 0: OpenBLAS not told yet */

void blas_sgemm(int ta, int tb, int rows, int cols, int depth, const float *A, int lda,
		const float *B, int ldb, float *C, int ldc)
{
	if (!atomic_exchange(&one_thread, 1))
		openblas_set_num_threads(1);
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, rows,
		    cols, depth, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
}
#else
typedef int blas_unused; /* no BLAS in this build: linear.c uses its own kernel */
#endif
