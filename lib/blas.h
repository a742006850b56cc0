/* SPDX-License-Identifier: MIT */
/*
 * The fp32 reference recipe's products through BLAS (Debian's OpenBLAS),
 * when the build has it (HAVE_CBLAS).  Kept out of linear.c: cblas.h pulls
 * in <complex.h>, whose macro I clashes with the engine's dimension names.
 */
#pragma once

/* C (rows x cols, row-major, leading dimension ldc) = op(A) . op(B), op =
 * transpose when ta / tb; lda and ldb are the row-major leading dimensions
 * of A and B as stored; on the calling thread. */
void blas_sgemm(int ta, int tb, int rows, int cols, int depth, const float *A, int lda, const float *B,
		int ldb, float *C, int ldc);
/* y (rows) = M . x (cols) for M (rows x cols, row-major, leading dimension
 * ldm) and x with stride incx; on the calling thread. */
void blas_sgemv(int rows, int cols, const float *M, int ldm, const float *x, int incx, float *y);
