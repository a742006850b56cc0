/* SPDX-License-Identifier: MIT */
/*
 * Quantisation.  Rounding avoids floorf() (a libm call without SSE4.1):
 * values are first clamped to [qmin, qmax], then shifted by a positive bias
 * so truncation towards zero equals floor, which compilers vectorise with
 * plain SSE2 conversions.
 */
#include <math.h>

#include "quant.h"
#include "simd.h"

#define QBIAS 512.0f /* > |qmin| + 1 for any bits <= 8 */

int quant_qmax(const quant_spec *sp)
{
	return sp->is_unsigned ? (1 << sp->bits) - 1 : (1 << (sp->bits - 1)) - 1;
}

/* Sum of squares in 8 interleaved lanes combined in a fixed order: the
 * result does not depend on which clone ran. */
HDQT_CLONES static double sum_sq(const float *x, long n)
{
	double acc[8] = {0};
	long i = 0;
	for (; i + 8 <= n; i += 8)
		for (int l = 0; l < 8; l++)
			acc[l] += (double)x[i + l] * (double)x[i + l];
	for (int l = 0; i < n; i++, l++)
		acc[l] += (double)x[i] * (double)x[i];
	return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

HDQT_CLONES static float max_abs(const float *x, long n)
{
	float mx[8] = {0};
	long i = 0;
	for (; i + 8 <= n; i += 8)
		for (int l = 0; l < 8; l++) {
			float a = fabsf(x[i + l]);
			mx[l] = a > mx[l] ? a : mx[l];
		}
	for (int l = 0; i < n; i++, l++) {
		float a = fabsf(x[i]);
		mx[l] = a > mx[l] ? a : mx[l];
	}
	float m = 0.0f;
	for (int l = 0; l < 8; l++)
		m = mx[l] > m ? mx[l] : m; /* max is exact in any order */
	return m;
}

static float group_range(const float *x, long n, const quant_spec *sp)
{
	float mx = max_abs(x, n);
	if (sp->clip_sigma > 0.0f) {
		double ss = sum_sq(x, n);
		float lim = sp->clip_sigma * (float)sqrt(ss / (double)(n > 0 ? n : 1));
		return lim < mx ? lim : mx;
	}
	return sp->clip * mx;
}

HDQT_CLONES static void quant_group(const float *x, long n, float step, const quant_spec *sp,
			hdqt_rng *rng, int8_t *q)
{
	const float qmax = (float)quant_qmax(sp);
	const float qmin = sp->is_unsigned ? 0.0f : -qmax;
	const float inv = 1.0f / step;
	if (!sp->stochastic) {
		for (long i = 0; i < n; i++) {
			float v = x[i] * inv;
			v = v < qmin ? qmin : (v > qmax ? qmax : v);
			q[i] = (int8_t)((int)(v + (QBIAS + 0.5f)) - (int)QBIAS);
		}
		return;
	}
	/* Two 16-bit uniforms per 32-bit draw: ample resolution for <= 8-bit grids. */
	long i = 0;
	for (; i + 1 < n; i += 2) {
		uint32_t u = hdqt_rng_u32(rng);
		float u0 = (float)(u & 0xffff) * (1.0f / 65536.0f);
		float u1 = (float)(u >> 16) * (1.0f / 65536.0f);
		float v0 = x[i] * inv, v1 = x[i + 1] * inv;
		v0 = v0 < qmin ? qmin : (v0 > qmax ? qmax : v0);
		v1 = v1 < qmin ? qmin : (v1 > qmax ? qmax : v1);
		q[i] = (int8_t)((int)(v0 + u0 + QBIAS) - (int)QBIAS);
		q[i + 1] = (int8_t)((int)(v1 + u1 + QBIAS) - (int)QBIAS);
	}
	if (i < n) {
		float u0 = (float)(hdqt_rng_u32(rng) & 0xffff) * (1.0f / 65536.0f);
		float v0 = x[i] * inv;
		v0 = v0 < qmin ? qmin : (v0 > qmax ? qmax : v0);
		q[i] = (int8_t)((int)(v0 + u0 + QBIAS) - (int)QBIAS);
	}
}

void quant_rows(const float *x, int rows, int cols, const quant_spec *sp,
		hdqt_rng *rng, int8_t *q, float *scale)
{
	const float qmax = (float)quant_qmax(sp);
	if (sp->per_row) {
		for (int r = 0; r < rows; r++) {
			const float *xr = x + (long)r * cols;
			float range = group_range(xr, cols, sp);
			float step = range > 0.0f ? range / qmax : 1.0f;
			scale[r] = step;
			quant_group(xr, cols, step, sp, rng, q + (long)r * cols);
		}
		return;
	}
	float range = group_range(x, (long)rows * cols, sp);
	float step = range > 0.0f ? range / qmax : 1.0f;
	for (int r = 0; r < rows; r++)
		scale[r] = step;
	quant_group(x, (long)rows * cols, step, sp, rng, q);
}
