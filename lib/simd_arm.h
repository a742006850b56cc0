/* SPDX-License-Identifier: MIT */
/*
 * NEON twins of the element-wise passes around the kernels (aarch64 only):
 * quant.c's range reductions and rounding, fwht.c's row transform.  Each
 * does exactly the portable loop's operations in the same order (same lane
 * split for the reductions, no FMA, compare-and-select for the NaN rules),
 * so it returns the same floats; each returns how many elements it did and
 * the portable loop does the rest.
 */
#pragma once

#include <stdint.h>

/* Lane l of mx[8] gets the max of |x[i]| over i = l mod 8, i < returned n
 * ("a > m ? a : m": a NaN never replaces m).  mx must start at 0. */
long simd_arm_max_abs(const float *x, long n, float mx[8]);
/* acc[l] += (double)x[i] * x[i] over i = l mod 8, i < returned n. */
long simd_arm_sum_sq(const float *x, long n, double acc[8]);
/* q[i] = (int)(clamp(x[i] * inv, qmin, qmax) + r) - (int)bias, with r =
 * bias + 0.5 (nearest, u16 NULL) or u16[i] / 65536 then + bias. */
long simd_arm_round(const float *x, long n, float inv, float qmin, float qmax, float bias,
		    const uint16_t *u16, int8_t *q);
/* fwht_rows for blk >= 4 (blk divides len), the whole transform. */
void simd_arm_fwht_rows(float *x, int rows, int len, int blk);
