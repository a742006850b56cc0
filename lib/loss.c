/* SPDX-License-Identifier: MIT */
/*
 * Softmax cross-entropy and temperature distillation (Hinton et al.), the
 * two terms of iCaRL/LwF-style training.  Both are means over the batch and
 * add their gradient into grad (which the caller zeroes).
 */
#include <math.h>

#include "hdqt.h"

/* Stable log-softmax of z[0..c) / T into p (probabilities); returns log-sum-exp. */
static float softmax_T(const float *z, int c, float T, float *p)
{
	float mx = -INFINITY;
	for (int j = 0; j < c; j++)
		mx = z[j] / T > mx ? z[j] / T : mx;
	double sum = 0.0;
	for (int j = 0; j < c; j++) {
		p[j] = expf(z[j] / T - mx);
		sum += p[j];
	}
	for (int j = 0; j < c; j++)
		p[j] = (float)(p[j] / sum);
	return mx + (float)log(sum);
}

float hdqt_loss_ce(const float *logits, const int *y, int n, int c, float *grad)
{
	double total = 0.0;
	float p[HDQT_MAX_CLASSES];
	for (int i = 0; i < n; i++) {
		const float *z = logits + (long)i * c;
		float lse = softmax_T(z, c, 1.0f, p);
		total += lse - z[y[i]];
		if (grad) {
			float *g = grad + (long)i * c;
			for (int j = 0; j < c; j++)
				g[j] += (p[j] - (j == y[i])) / (float)n;
		}
	}
	return n > 0 ? (float)(total / n) : 0.0f;
}

float hdqt_loss_kd(const float *logits, int ld, const float *teacher, int n, int c_old,
		   float T, float lambda, float *grad)
{
	/* L = lambda * T^2 * KL(softmax(t/T) || softmax(z/T)); dL/dz = lambda*T*(p_s - p_t). */
	double total = 0.0;
	float ps[HDQT_MAX_CLASSES], pt[HDQT_MAX_CLASSES];
	for (int i = 0; i < n; i++) {
		const float *z = logits + (long)i * ld, *t = teacher + (long)i * c_old;
		softmax_T(z, c_old, T, ps);
		softmax_T(t, c_old, T, pt);
		double kl = 0.0;
		for (int j = 0; j < c_old; j++)
			if (pt[j] > 0.0f)
				kl += pt[j] * (log(pt[j]) - log(ps[j] > 1e-30f ? ps[j] : 1e-30f));
		total += kl;
		if (grad) {
			float *g = grad + (long)i * ld;
			for (int j = 0; j < c_old; j++)
				g[j] += lambda * T * (ps[j] - pt[j]) / (float)n;
		}
	}
	return n > 0 ? (float)(lambda * T * T * total / n) : 0.0f;
}
