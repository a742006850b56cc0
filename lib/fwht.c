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
	if (blk >= 8 && SIMD_AVX2()) {
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

#if HDQT_X86_64
/* The strip transform in trips of up to four butterfly stages: sixteen
 * rows h0 apart held in sixteen vector registers (a row is one zmm with
 * AVX-512; with AVX2 a row's half is one ymm, the halves done in turn, as
 * the columns are independent), so blk 128 makes two trips through the
 * strip instead of seven and blk 256 two instead of eight; a block whose
 * stages do not divide by four ends with a trip of 3, 2 or 1 stages.  The
 * same add or subtract of the same operands as fwht_cols for every element,
 * stage after stage: identical floats.  Against trips of three stages in
 * eight registers (Zen 4; a harness over fwht_strip16, best of several
 * interleaved runs): 128 x 16 at blk 128 284 -> 246 ns with AVX-512 (the
 * butterflies' own bound: one 512-bit add or subtract a cycle, 896 of
 * them), 285 -> 253 ns capped at AVX2, where GCC 12 spills a few of the
 * sixteen ymm; 512 x 16 at blk 256 was near the bound already (1150 ->
 * 1120, 1155 -> 1164 ns).
 *
 * TRIP: ns stages on the 2^ns rows r, r + d, ...; ns is a constant at each
 * call, so the rows live in registers.  TRIPS: every trip of ns stages at
 * h0, the loops specialised per ns (one loop shared by all four sizes
 * spilled the 16-row trip's addresses and slowed the small ones, blk 4
 * 302 -> 446 ns). */
#define FWHT_STRIP16_TRIPS(SUF, ATTR, VT, LOAD, STORE, ADD, SUB, WIDTH)                             \
	ATTR static inline __attribute__((always_inline)) void trip_##SUF(float *r, size_t d, int ns) \
	{                                                                                          \
		VT v[16];                                                                          \
		const int n = 1 << ns;                                                             \
		_Pragma("GCC unroll 16") for (int i = 0; i < n; i++) v[i] = LOAD(r + i * d);      \
		_Pragma("GCC unroll 4") for (int h = 1; h < n; h <<= 1)                           \
		_Pragma("GCC unroll 16") for (int i = 0; i < n; i += 2 * h)                       \
		_Pragma("GCC unroll 8") for (int j = i; j < i + h; j++) {                         \
			const VT t_ = v[j];                                                        \
			v[j] = ADD(t_, v[j + h]);                                                  \
			v[j + h] = SUB(t_, v[j + h]);                                              \
		}                                                                                  \
		_Pragma("GCC unroll 16") for (int i = 0; i < n; i++) STORE(r + i * d, v[i]);      \
	}                                                                                          \
	ATTR static inline __attribute__((always_inline)) void trips_##SUF(float *x, int len, int h0, \
									   int ns)                 \
	{                                                                                          \
		const int span = h0 << ns;                                                         \
		const size_t d = (size_t)h0 * 16;                                                  \
		for (int b0 = 0; b0 < len; b0 += span)                                             \
			for (int o = 0; o < h0; o++)                                               \
				for (int hf = 0; hf < 16; hf += (WIDTH))                           \
					trip_##SUF(x + (size_t)(b0 + o) * 16 + hf, d, ns);         \
	}                                                                                          \
	ATTR static void fwht_strip16_##SUF(float *x, int len, int blk)                            \
	{                                                                                          \
		for (int h0 = 1, ns; h0 < blk; h0 <<= ns) {                                        \
			const int left = blk / h0;                                                 \
			ns = left >= 16 ? 4 : left == 8 ? 3 : left == 4 ? 2 : 1;                   \
			if (ns == 4)                                                               \
				trips_##SUF(x, len, h0, 4);                                        \
			else if (ns == 3)                                                          \
				trips_##SUF(x, len, h0, 3);                                        \
			else if (ns == 2)                                                          \
				trips_##SUF(x, len, h0, 2);                                        \
			else                                                                       \
				trips_##SUF(x, len, h0, 1);                                        \
		}                                                                                  \
	}

FWHT_STRIP16_TRIPS(avx512, __attribute__((target("avx512f"))), __m512, _mm512_loadu_ps,
		   _mm512_storeu_ps, _mm512_add_ps, _mm512_sub_ps, 16)
FWHT_STRIP16_TRIPS(avx2, __attribute__((target("avx2"))), __m256, _mm256_loadu_ps,
		   _mm256_storeu_ps, _mm256_add_ps, _mm256_sub_ps, 8)
#undef FWHT_STRIP16_TRIPS
#endif

HDQT_CLONES static void fwht_strip16_c(float *x, int len, int blk)
{
	/* fwht_cols' loops with the width fixed. */
	for (int h = 1; h < blk; h <<= 1)
		for (int i = 0; i < len; i += 2 * h)
			for (int j = i; j < i + h; j++)
				bfly16(x + (size_t)j * 16, x + (size_t)(j + h) * 16);
}

void fwht_strip16(float *x, int len, int blk)
{
#if HDQT_X86_64
	if (SIMD_AVX512F()) {
		fwht_strip16_avx512(x, len, blk);
		return;
	}
	if (SIMD_AVX2()) {
		fwht_strip16_avx2(x, len, blk);
		return;
	}
#endif
	fwht_strip16_c(x, len, blk);
}

void fwht_strip16_ref(float *x, int len, int blk)
{
	fwht_strip16_c(x, len, blk);
}
