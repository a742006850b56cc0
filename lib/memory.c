/* SPDX-License-Identifier: MIT */
/*
 * Exemplar memory: per-class lists of raw feature vectors in selection-rank
 * order, with a total budget split evenly over the classes seen (iCaRL).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hdqt_data.h"

typedef struct mem_class {
	float *X;
	int n;
} mem_class;

struct hdqt_memory {
	int budget, d, n_classes;
	mem_class cls[HDQT_MAX_CLASSES];
};

int hdqt_memory_new(hdqt_memory **out, int budget, int d)
{
	if (!out || budget < 0 || budget > (1 << 24) || d < 1 || d > HDQT_MAX_DIM)
		return HDQT_EINVAL;
	hdqt_memory *m = calloc(1, sizeof(*m));
	if (!m)
		return HDQT_ENOMEM;
	m->budget = budget;
	m->d = d;
	*out = m;
	return 0;
}

void hdqt_memory_free(hdqt_memory *m)
{
	if (!m)
		return;
	for (int c = 0; c < HDQT_MAX_CLASSES; c++)
		free(m->cls[c].X);
	free(m);
}

int hdqt_memory_size(const hdqt_memory *m)
{
	int s = 0;
	for (int c = 0; c < m->n_classes; c++)
		s += m->cls[c].n;
	return s;
}

int hdqt_memory_budget(const hdqt_memory *m) { return m->budget; }
int hdqt_memory_classes(const hdqt_memory *m) { return m->n_classes; }

int hdqt_memory_quota(const hdqt_memory *m, int classes)
{
	return classes > 0 ? m->budget / classes : m->budget;
}

const float *hdqt_memory_class(const hdqt_memory *m, int c, int *n)
{
	if (c < 0 || c >= m->n_classes) {
		*n = 0;
		return NULL;
	}
	*n = m->cls[c].n;
	return m->cls[c].X;
}

int hdqt_memory_export(const hdqt_memory *m, float *X, int *y)
{
	int k = 0;
	for (int c = 0; c < m->n_classes; c++) {
		if (m->cls[c].n == 0)
			continue; /* a class without exemplars has no buffer (memcpy from NULL is UB) */
		memcpy(X + (size_t)k * m->d, m->cls[c].X, sizeof(float) * (size_t)m->cls[c].n * m->d);
		for (int i = 0; i < m->cls[c].n; i++)
			y[k + i] = c;
		k += m->cls[c].n;
	}
	return k;
}

int hdqt_memory_set_class(hdqt_memory *m, int c, const float *rows, int n)
{
	if (c < 0 || c >= HDQT_MAX_CLASSES || n < 0 || (n > 0 && !rows))
		return HDQT_EINVAL;
	float *X = NULL;
	if (n > 0) {
		X = malloc(sizeof(float) * (size_t)n * m->d);
		if (!X)
			return HDQT_ENOMEM;
		memcpy(X, rows, sizeof(float) * (size_t)n * m->d);
	}
	free(m->cls[c].X);
	m->cls[c].X = X;
	m->cls[c].n = n;
	if (c + 1 > m->n_classes)
		m->n_classes = c + 1;
	return 0;
}

int hdqt_memory_rebalance(hdqt_memory *m)
{
	return hdqt_memory_rebalance_to(m, hdqt_memory_quota(m, m->n_classes));
}

int hdqt_memory_rebalance_to(hdqt_memory *m, int q)
{
	for (int c = 0; c < m->n_classes; c++)
		if (m->cls[c].n > q)
			m->cls[c].n = q; /* rank order: the first q are the best */
	return 0;
}

static int herd(const float *emb, float *z, int n, int e, int want, int *idx);

int hdqt_herding(const float *emb, int n, int e, int want, int *idx)
{
	if (!emb || !idx || n < 0 || e < 1 || want < 0)
		return HDQT_EINVAL;
	float *z = malloc(sizeof(float) * ((size_t)n * e > 0 ? (size_t)n * e : 1));
	if (!z)
		return HDQT_ENOMEM;
	int rc = herd(emb, z, n, e, want, idx);
	free(z);
	return rc;
}

int hdqt_herding_inplace(float *emb, int n, int e, int want, int *idx)
{
	if (!emb || !idx || n < 0 || e < 1 || want < 0)
		return HDQT_EINVAL;
	return herd(emb, emb, n, e, want, idx);
}

/* z (n x e) = the rows of emb normalised (z may be emb), then herding on z. */
static int herd(const float *emb, float *z, int n, int e, int want, int *idx)
{
	if (want > n)
		want = n;
	double *mu = malloc(sizeof(double) * e), *acc = calloc((size_t)e, sizeof(double));
	char *used = calloc((size_t)n > 0 ? (size_t)n : 1, 1);
	if (!mu || !acc || !used) {
		free(mu);
		free(acc);
		free(used);
		return HDQT_ENOMEM;
	}
	for (int j = 0; j < e; j++)
		mu[j] = 0.0;
	for (int i = 0; i < n; i++) {
		double ss = 0;
		for (int j = 0; j < e; j++)
			ss += (double)emb[(size_t)i * e + j] * emb[(size_t)i * e + j];
		float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
		for (int j = 0; j < e; j++) {
			z[(size_t)i * e + j] = emb[(size_t)i * e + j] * inv;
			mu[j] += z[(size_t)i * e + j];
		}
	}
	for (int j = 0; j < e; j++)
		mu[j] /= (n > 0 ? n : 1);
	for (int k = 1; k <= want; k++) {
		int best = -1;
		double bestd = INFINITY;
		for (int i = 0; i < n; i++) {
			if (used[i])
				continue;
			double dist = 0;
			for (int j = 0; j < e; j++) {
				double t = mu[j] - (acc[j] + z[(size_t)i * e + j]) / k;
				dist += t * t;
			}
			if (dist < bestd) {
				bestd = dist;
				best = i;
			}
		}
		used[best] = 1;
		idx[k - 1] = best;
		for (int j = 0; j < e; j++)
			acc[j] += z[(size_t)best * e + j];
	}
	free(mu);
	free(acc);
	free(used);
	return want;
}
