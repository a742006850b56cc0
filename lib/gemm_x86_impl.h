/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the AVX-512 kernels and packers (gemm_x86.c and
 * gemm_x86_tl.c): the output store with the rescale, the 16 x 16 dword
 * transpose, and a strip group's byte permute (VBMI).  Internal to lib/;
 * x86-64 only.
 */
#pragma once

#include <immintrin.h>
#include <stddef.h>

#include "gemm.h"

#define AVX512_T __attribute__((target("avx512f,avx512bw,avx512vnni")))
#define VBMI_T __attribute__((target("avx512f,avx512bw,avx512vnni,avx512vbmi")))

/* Row i, columns [j0, j0 + 16) under mask m: the int32 sums, or (e set)
 * gemm_rescale_rows' floats, multiplied in its order, so that the product
 * goes to memory once, as floats. */
AVX512_T static inline __attribute__((always_inline)) void
store16(__m512i v, __mmask16 m, int32_t *C, const gemm_rescale *e, float *Y, int i, int J, int j0)
{
	const size_t at = (size_t)i * J + (size_t)j0;
	if (!e) {
		_mm512_mask_storeu_epi32(C + at, m, v);
		return;
	}
	const __m512 si = _mm512_set1_ps(e->sa[i] * e->inv);
	const __m512 sb = _mm512_maskz_loadu_ps(m, e->sb + j0);
	_mm512_mask_storeu_ps(Y + at, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(v), si), sb));
}

/* 16 x 16 dwords in place: dword g of r[l] becomes dword l of r[g]. */
AVX512_T static inline __attribute__((always_inline)) void tr16_epi32(__m512i r[16])
{
	__m512i a[16], b[16];
	for (int l = 0; l < 16; l += 2) {
		a[l] = _mm512_unpacklo_epi32(r[l], r[l + 1]);
		a[l + 1] = _mm512_unpackhi_epi32(r[l], r[l + 1]);
	}
	/* b[4q + p], 128-bit lane L: rows 4q..4q+3 of dword 4L + p */
	for (int l = 0; l < 16; l += 4) {
		b[l] = _mm512_unpacklo_epi64(a[l], a[l + 2]);
		b[l + 1] = _mm512_unpackhi_epi64(a[l], a[l + 2]);
		b[l + 2] = _mm512_unpacklo_epi64(a[l + 1], a[l + 3]);
		b[l + 3] = _mm512_unpackhi_epi64(a[l + 1], a[l + 3]);
	}
	/* gather lane L of the four q into dword 4L + p */
	for (int p = 0; p < 4; p++) {
		const __m512i x0 = _mm512_shuffle_i32x4(b[p], b[4 + p], 0x88);
		const __m512i x1 = _mm512_shuffle_i32x4(b[p], b[4 + p], 0xdd);
		const __m512i y0 = _mm512_shuffle_i32x4(b[8 + p], b[12 + p], 0x88);
		const __m512i y1 = _mm512_shuffle_i32x4(b[8 + p], b[12 + p], 0xdd);
		r[p] = _mm512_shuffle_i32x4(x0, y0, 0x88);
		r[p + 8] = _mm512_shuffle_i32x4(x0, y0, 0xdd);
		r[p + 4] = _mm512_shuffle_i32x4(x1, y1, 0x88);
		r[p + 12] = _mm512_shuffle_i32x4(x1, y1, 0xdd);
	}
}

/* A strip's 64 bytes of 4 k x 16 columns ([kk][l]) as [l][kk]: one byte
 * permute. */
VBMI_T static inline __attribute__((always_inline)) __m512i group16(const int8_t *codes)
{
	const __m512i idx = _mm512_set_epi8(
		63, 47, 31, 15, 62, 46, 30, 14, 61, 45, 29, 13, 60, 44, 28, 12, 59, 43, 27, 11, 58, 42,
		26, 10, 57, 41, 25, 9, 56, 40, 24, 8, 55, 39, 23, 7, 54, 38, 22, 6, 53, 37, 21, 5, 52, 36,
		20, 4, 51, 35, 19, 3, 50, 34, 18, 2, 49, 33, 17, 1, 48, 32, 16, 0);
	return _mm512_permutexvar_epi8(idx, _mm512_loadu_si512((const void *)codes));
}
