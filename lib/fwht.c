/* SPDX-License-Identifier: MIT */
/*
 * Fast Walsh-Hadamard transform: log2(blk) butterfly passes of additions,
 * O(n log n), never a dense product.  Blocks of a block-diagonal H are
 * contiguous, so a pass of stride h < blk over the whole row touches every
 * block independently.
 */
#include <string.h>

#include "config.h"
#include "fwht.h"
#include "simd.h"
#if HDQT_AARCH64 /* issue 14 */
#include "simd_arm.h"
#endif

#if HDQT_X86_64
#include <immintrin.h>

/* In-register 8-point Sylvester transform: the three butterfly passes h = 1,
 * 2, 4 as permutes and blends.  Each output is the same single add or
 * subtract of the same operands as in the scalar loop, so results match
 * bit for bit. */
__attribute__((target("avx2"))) static inline __m256 fwht8(__m256 x)
{
	__m256 s = _mm256_permute_ps(x, 0xB1); /* swap neighbours */
	x = _mm256_blend_ps(_mm256_add_ps(x, s), _mm256_sub_ps(s, x), 0xAA);
	s = _mm256_permute_ps(x, 0x4E);        /* swap pairs */
	x = _mm256_blend_ps(_mm256_add_ps(x, s), _mm256_sub_ps(s, x), 0xCC);
	s = _mm256_permute2f128_ps(x, x, 1);   /* swap halves */
	return _mm256_blend_ps(_mm256_add_ps(x, s), _mm256_sub_ps(s, x), 0xF0);
}

__attribute__((target("avx2"))) static void fwht_rows_avx2(float *x, int rows, int len, int blk)
{
	for (int r = 0; r < rows; r++) {
		float *v = x + (long)r * len;
		for (int i = 0; i < len; i += 8)
			_mm256_storeu_ps(v + i, fwht8(_mm256_loadu_ps(v + i)));
		for (int h = 8; h < blk; h <<= 1)
			for (int i = 0; i < len; i += 2 * h)
				for (int j = i; j < i + h; j += 8) {
					__m256 a = _mm256_loadu_ps(v + j), b = _mm256_loadu_ps(v + j + h);
					_mm256_storeu_ps(v + j, _mm256_add_ps(a, b));
					_mm256_storeu_ps(v + j + h, _mm256_sub_ps(a, b));
				}
	}
}
#endif

int fwht_block(int len, int cap)
{
	int b = 1;
	while (len > 0 && (len % (b * 2)) == 0 && b * 2 <= cap)
		b *= 2;
	return b;
}

void fwht_rows(float *x, int rows, int len, int blk)
{
#if HDQT_X86_64
	if (blk >= 8 && __builtin_cpu_supports("avx2")) {
		fwht_rows_avx2(x, rows, len, blk);
		return;
	}
#elif HDQT_AARCH64 /* issue 14: NEON rows (simd_arm.c) */
	if (blk >= 4) {
		simd_arm_fwht_rows(x, rows, len, blk);
		return;
	}
#endif
	fwht_rows_ref(x, rows, len, blk);
}

void fwht_rows_ref(float *x, int rows, int len, int blk)
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

HDQT_CLONES void fwht_cols(float *x, int len, int cols, int blk)
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

/* One butterfly between two rows of 16: restrict and the fixed width let
 * a compiler keep each row in one or two vector registers. */
static inline __attribute__((always_inline)) void bfly16(float *restrict a, float *restrict b)
{
	for (int l = 0; l < 16; l++) {
		const float p = a[l], q = b[l];
		a[l] = p + q;
		b[l] = p - q;
	}
}

HDQT_CLONES void fwht_strip16(float *x, int len, int blk)
{
	/* fwht_cols' loops with the width fixed. */
	for (int h = 1; h < blk; h <<= 1)
		for (int i = 0; i < len; i += 2 * h)
			for (int j = i; j < i + h; j++)
				bfly16(x + (size_t)j * 16, x + (size_t)(j + h) * 16);
}
