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
#include <pthread.h>

#include "config.h"

#if HAVE_CBLAS
#include <cblas.h>

#include "blas.h"

/* Once per process, before any product: with a flag set first and the
 * setter run after, a second pool worker could start a product on
 * OpenBLAS's default thread count meanwhile. */
static pthread_once_t one_thread = PTHREAD_ONCE_INIT;

static void set_one_thread(void)
{
	openblas_set_num_threads(1);
}

void blas_sgemm(int ta, int tb, int rows, int cols, int depth, const float *A, int lda,
		const float *B, int ldb, float *C, int ldc)
{
	pthread_once(&one_thread, set_one_thread);
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, rows,
		    cols, depth, 1.0f, A, lda, B, ldb, 0.0f, C, ldc);
}

void blas_sgemv(int rows, int cols, const float *M, int ldm, const float *x, int incx, float *y)
{
	pthread_once(&one_thread, set_one_thread);
	cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, M, ldm, x, incx, 0.0f, y, 1);
}
#else
typedef int blas_unused; /* no BLAS in this build: linear.c uses its own kernel */
#endif
