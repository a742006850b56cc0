/* SPDX-License-Identifier: MIT */
/* Uniform b-bit quantisers: max-abs (or clipped) scales, nearest or stochastic rounding. */
#pragma once

#include <stdint.h>

#include "hdqt.h"

typedef struct quant_spec {
	int bits;         /* 2..8 */
	int is_unsigned;  /* [0, 2^b - 1] instead of [-(2^(b-1) - 1), 2^(b-1) - 1] */
	float clip;       /* range = clip * max-abs (when clip_sigma <= 0) */
	float clip_sigma; /* > 0: range = min(max-abs, clip_sigma * rms) */
	int per_row;      /* one scale per row instead of one per tensor */
	int stochastic;   /* floor(x/s + u), u ~ U[0,1): unbiased */
} quant_spec;

/* The range a group of n values is quantised over: clip * max-abs, or
 * min(max-abs, clip_sigma * rms).  simd 0 forces the portable loops (tests
 * compare them with the AVX2 paths, which give the same float). */
float quant_range(const float *x, long n, const quant_spec *sp, int simd);
/* Sum of squares (in double) in 8 interleaved lanes combined in a fixed
 * order: the same bits with simd 0 or 1. */
double quant_sum_sq(const float *x, long n, int simd);
/* The same range from a group's max-abs mx and sum of squares ss (read only
 * with clip_sigma) over n values; quant_step_of(range) is its step. */
float quant_range_stats(float mx, double ss, long n, const quant_spec *sp);
float quant_step_of(float range, const quant_spec *sp);
/* Largest quantised magnitude for the spec (e.g. 7 signed / 15 unsigned at 4 bits). */
int quant_qmax(const quant_spec *sp);
/* Quantise x (rows x cols, row-major) into q; scale[r] receives the step of
 * row r (the same value in every row for per-tensor scales), so that
 * x ~= q * scale.  An all-zero group gets step 1.  rng is used only when
 * stochastic. */
void quant_rows(const float *x, int rows, int cols, const quant_spec *sp,
		hdqt_rng *rng, int8_t *q, float *scale);

/* Stochastic rounding of a row of n values with step: 16 generators seeded
 * from (seed, 16 stream + l), each draw serving 32 elements (low halves the
 * first 16, high halves the next); simd 0 forces the portable loop (the
 * AVX-512 path gives the same codes).  quant_rows uses it with stream r for
 * row r. */
void quant_row16_impl(const float *x, long n, float step, const quant_spec *sp, uint64_t seed,
		      uint64_t stream, int8_t *q, int simd);

/* The pieces of quant_rows, for callers that split the rows over threads:
 * one seed is drawn per call, and row r's stochastic stream is seeded from
 * (seed, r), so the codes are the same however the rows are split.
 * quant_tensor_step is the per-tensor step (unused with per_row);
 * quant_rows_part quantises rows [r0, r1) and sets their scale[]. */
uint64_t quant_seed(hdqt_rng *rng);
float quant_tensor_step(const float *x, int rows, int cols, const quant_spec *sp);
void quant_rows_part(const float *x, int r0, int r1, int cols, const quant_spec *sp,
		     uint64_t seed, float step, int8_t *q, float *scale);

/* A strip of 16 columns, rows x 16 floats (row-major, 16 per row): column l
 * quantised with step[l] into q (the same layout), rounding as quant_rows.
 * Stochastic draws come from 16 generators seeded from (seed, 16 * stream
 * + l), one per column, each draw's two 14-bit uniforms (quant.c) serving two rows: the
 * codes depend on (seed, stream) alone, not on how strips are spread over
 * threads.  A zero input gives code 0 under either rounding. */
void quant_strip16(const float *x, int rows, const float step[16], const quant_spec *sp,
		   uint64_t seed, uint64_t stream, int8_t *q);
/* Per column of such a strip: max-abs into mx and (ss != NULL) the sum of
 * squares in row order, for quant_range_stats. */
void quant_strip16_stats(const float *x, int rows, float mx[16], double *ss);
/* Both with simd 0: the portable loops alone (tests compare them with the
 * AVX-512 paths, which give the same codes and maxima). */
void quant_strip16_impl(const float *x, int rows, const float step[16], const quant_spec *sp,
			uint64_t seed, uint64_t stream, int8_t *q, int simd);
void quant_strip16_stats_impl(const float *x, int rows, float mx[16], double *ss, int simd);
