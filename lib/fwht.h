/* SPDX-License-Identifier: MIT */
/* Fast Walsh-Hadamard transform with block-diagonal Sylvester blocks. */
#pragma once

/* Largest power of two dividing len, capped by cap (a power of two >= 1). */
int fwht_block(int len, int cap);
/* In place, unnormalised (H.H = blk I): each row of x (rows x len) is split
 * into len/blk blocks and each block is multiplied by the Sylvester H_blk.
 * blk must be a power of two dividing len. */
void fwht_rows(float *x, int rows, int len, int blk);
/* The portable reference of fwht_rows (the SIMD path equals it bit for bit). */
void fwht_rows_ref(float *x, int rows, int len, int blk);
/* The same transform along the row index: column c of x (len x cols) is
 * transformed, i.e. x <- H x for block-diagonal H of size len. */
void fwht_cols(float *x, int len, int cols, int blk);
/* fwht_cols on exactly 16 columns (x: len x 16), the column path's strips:
 * the same additions in the same order. */
void fwht_strip16(float *x, int len, int blk);
/* Its portable loops (the AVX-512 path equals them bit for bit). */
void fwht_strip16_ref(float *x, int len, int blk);
