/* SPDX-License-Identifier: MIT */
/*
 * BLAS products (blas.h).
 *
 * OpenBLAS splits a product over blocks of rows and columns of C, never
 * over the reduction, so its results do not depend on its thread count
 * (test_model's test_threads_bit_identical checks it for the fp32 mode).
 * The thread count is OpenBLAS's process-wide setting: it is changed only
 * when a caller asks for another one.
 */
#include <stdatomic.h>

#include "config.h"

#if HAVE_CBLAS
#include <cblas.h>

#include "blas.h"

static atomic_int threads_set; /* 0: not set yet */

void blas_sgemm(int ta, int tb, int rows, int cols, int depth, const float *A, int lda,
		const float *B, int ldb, float *C, int threads)
{
	if (atomic_exchange(&threads_set, threads) != threads)
		openblas_set_num_threads(threads);
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, rows,
		    cols, depth, 1.0f, A, lda, B, ldb, 0.0f, C, cols);
}
#else
typedef int blas_unused; /* no BLAS in this build: linear.c uses its own kernel */
#endif
