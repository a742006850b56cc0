/* SPDX-License-Identifier: MIT */
/*
 * Fast Walsh-Hadamard transform: log2(blk) butterfly passes of additions,
 * O(n log n), never a dense product.  Blocks of a block-diagonal H are
 * contiguous, so a pass of stride h < blk over the whole row touches every
 * block independently.
 */
#include "fwht.h"

int fwht_block(int len, int cap)
{
	int b = 1;
	while (len > 0 && (len % (b * 2)) == 0 && b * 2 <= cap)
		b *= 2;
	return b;
}

void fwht_rows(float *x, int rows, int len, int blk)
{
	for (int r = 0; r < rows; r++) {
		float *v = x + (long)r * len;
		for (int h = 1; h < blk; h <<= 1) {
			for (int i = 0; i < len; i += 2 * h) {
				for (int j = i; j < i + h; j++) {
					float a = v[j], b = v[j + h];
					v[j] = a + b;
					v[j + h] = a - b;
				}
			}
		}
	}
}

void fwht_cols(float *x, int len, int cols, int blk)
{
	/* Butterflies between whole rows: the inner loop is a contiguous
	 * vector operation over cols, which the compiler vectorises. */
	for (int h = 1; h < blk; h <<= 1) {
		for (int i = 0; i < len; i += 2 * h) {
			for (int j = i; j < i + h; j++) {
				float *a = x + (long)j * cols, *b = x + (long)(j + h) * cols;
				for (int c = 0; c < cols; c++) {
					float p = a[c], q = b[c];
					a[c] = p + q;
					b[c] = p - q;
				}
			}
		}
	}
}
