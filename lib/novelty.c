/* SPDX-License-Identifier: MIT */
/*
 * Open-set prediction: novelty scores and per-class thresholds.
 *
 * A score is high where a window looks unlike the classes the model knows.
 * Three are offered because which one separates best depends on the
 * features and the recipe; hdqt-eval --open-set measures them (README,
 * "Open-set prediction").  The threshold of a class is the (1 - rate)
 * quantile of the scores of held-out known windows the model predicts as
 * that class: thresholds are per predicted class because that is what is
 * known at inference, and pooled for classes with too few such windows,
 * whose quantile would be noise.
 *
 * Blob: "HDQTNOV1", u32 version, u32 payload length, payload, u32 CRC-32 of
 * everything before it; little-endian, bounds-checked like the model blob.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "hdqt_novelty.h"
#include "model.h"

#define NOV_MAGIC "HDQTNOV1"
#define NOV_VERSION 1u
#define NOV_HDR 16

struct hdqt_novelty {
	hdqt_novelty_kind kind;
	int classes, e;
	float rate;
	float thr_all;
	float *thr;   /* classes */
	int *count;   /* calibration rows predicted as each class */
	/* Reference directions, unit rows: the class means (NME: nref =
	 * classes, a class without exemplars has a zero row) or every
	 * exemplar (kNN); the score is 1 - the largest cosine to one. */
	int nref;
	float *ref;
	unsigned char *present; /* nref: the row is a direction (not zero) */
	float *centre;          /* e: mean unit embedding of the calibration rows */
};

static const char *const kind_names[HDQT_NOVELTY_COUNT] = {"nme", "energy", "msp", "knn"};

int hdqt_novelty_kind_parse(const char *s, hdqt_novelty_kind *out)
{
	for (int i = 0; s && i < HDQT_NOVELTY_COUNT; i++)
		if (strcmp(s, kind_names[i]) == 0) {
			*out = (hdqt_novelty_kind)i;
			return 0;
		}
	return HDQT_EINVAL;
}

const char *hdqt_novelty_kind_name(hdqt_novelty_kind k)
{
	return (int)k >= 0 && k < HDQT_NOVELTY_COUNT ? kind_names[k] : "?";
}

static hdqt_novelty *nov_alloc(int classes, int e, int nref)
{
	hdqt_novelty *nv = calloc(1, sizeof(*nv));
	if (!nv)
		return NULL;
	nv->classes = classes;
	nv->e = e;
	nv->nref = nref;
	nv->thr = calloc((size_t)classes, sizeof(float));
	nv->count = calloc((size_t)classes, sizeof(int));
	nv->ref = calloc((size_t)(nref > 0 ? nref : 1) * e, sizeof(float));
	nv->present = calloc((size_t)(nref > 0 ? nref : 1), 1);
	nv->centre = calloc((size_t)e, sizeof(float));
	if (!nv->thr || !nv->count || !nv->ref || !nv->present || !nv->centre) {
		hdqt_novelty_free(nv);
		return NULL;
	}
	return nv;
}

void hdqt_novelty_free(hdqt_novelty *nv)
{
	if (!nv)
		return;
	free(nv->thr);
	free(nv->count);
	free(nv->ref);
	free(nv->present);
	free(nv->centre);
	free(nv);
}

hdqt_novelty_kind hdqt_novelty_get_kind(const hdqt_novelty *nv) { return nv->kind; }
float hdqt_novelty_rate(const hdqt_novelty *nv) { return nv->rate; }
int hdqt_novelty_classes(const hdqt_novelty *nv) { return nv->classes; }
int hdqt_novelty_embed_dim(const hdqt_novelty *nv) { return nv->e; }

float hdqt_novelty_threshold(const hdqt_novelty *nv, int c)
{
	return c >= 0 && c < nv->classes ? nv->thr[c] : nv->thr_all;
}

const float *hdqt_novelty_centre(const hdqt_novelty *nv)
{
	return nv->centre;
}

int hdqt_novelty_calib_count(const hdqt_novelty *nv, int c)
{
	return c >= 0 && c < nv->classes ? nv->count[c] : 0;
}

/* Scale v (n floats) to unit length; a zero vector stays zero. */
static void unit(float *v, int n)
{
	double ss = 0;
	for (int j = 0; j < n; j++)
		ss += (double)v[j] * v[j];
	const float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
	for (int j = 0; j < n; j++)
		v[j] *= inv;
}

float hdqt_novelty_dot(const float *a, const float *b, int n)
{
	/* Eight running sums in a fixed order: a compiler may vectorise it
	 * without reassociating, and every build gets the same float. */
	float s[8] = {0};
	int j = 0;
	for (; j + 8 <= n; j += 8)
		for (int k = 0; k < 8; k++)
			s[k] += a[j + k] * b[j + k];
	for (; j < n; j++)
		s[j & 7] += a[j] * b[j];
	return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

static float score_row(const hdqt_novelty *nv, const float *logits, const float *emb)
{
	const int C = nv->classes;
	if (nv->kind == HDQT_NOVELTY_NME || nv->kind == HDQT_NOVELTY_KNN) {
		/* cos(z, mu) = z . mu / |z| for unit mu */
		const float zz = hdqt_novelty_dot(emb, emb, nv->e);
		float best = -INFINITY;
		for (int c = 0; c < nv->nref; c++) {
			if (!nv->present[c])
				continue;
			const float v = hdqt_novelty_dot(emb, nv->ref + (size_t)c * nv->e, nv->e);
			best = v > best ? v : best;
		}
		/* A zero embedding (every ReLU off) is as far as it gets. */
		return zz > 0 ? (float)(1.0 - (double)best / sqrt((double)zz)) : 2.0f;
	}
	double mx = -INFINITY;
	for (int c = 0; c < C; c++)
		mx = logits[c] > mx ? logits[c] : mx;
	double s = 0;
	for (int c = 0; c < C; c++)
		s += exp((double)logits[c] - mx);
	if (nv->kind == HDQT_NOVELTY_ENERGY)
		return (float)-(mx + log(s));
	return (float)(1.0 - 1.0 / s); /* 1 - max softmax = 1 - exp(0) / s */
}

float hdqt_novelty_score1(const hdqt_novelty *nv, const float *logits, const float *emb, int pred,
			  int *unknown)
{
	float s = score_row(nv, logits, emb);
	if (unknown)
		*unknown = !(s <= hdqt_novelty_threshold(nv, pred)); /* NaN: unknown */
	return s;
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

/* The split-conformal threshold: the ceil((n + 1)(1 - rate))-th smallest
 * of the n sorted values (the largest when that is past n), so that a new
 * window drawn like them lands above it with probability at most rate.
 * The plain (1 - rate) quantile would give (floor(rate n) + 1) / (n + 1):
 * 9.5 % instead of 5 % for 20 windows. */
static float quantile_above(const float *sorted, int n, float rate)
{
	long k = (long)ceil((double)(n + 1) * (1.0 - (double)rate)) - 1;
	return sorted[k < 0 ? 0 : k >= n ? n - 1 : k];
}

/* Fewer calibration windows than this make a class's threshold the
 * pooled one: below 1 / rate - 1 even a class's largest window bounds the
 * rate by more than rate (1 / (k + 1)), and below 20 a quantile is noise. */
static int min_per_class(float rate)
{
	const int k = (int)ceil(1.0 / (double)rate);
	return k > HDQT_NOVELTY_MIN_PER_CLASS ? k : HDQT_NOVELTY_MIN_PER_CLASS;
}

static int argmax_n(const float *v, int n)
{
	int best = 0;
	for (int c = 1; c < n; c++)
		if (v[c] > v[best])
			best = c;
	return best;
}

#define SCORE_CHUNK 256

int hdqt_novelty_score(const hdqt_novelty *nv, hdqt_model *m, const float *X, int n, int *pred,
		       float *score, int *unknown)
{
	if (!nv || !m || !X || n < 0)
		return HDQT_EINVAL;
	const int K = hdqt_model_n_classes(m), e = hdqt_model_embed_dim(m), d = hdqt_model_n_in(m);
	if (K < nv->classes || e != nv->e)
		return HDQT_EINVAL;
	float *lg = malloc(sizeof(float) * (size_t)SCORE_CHUNK * K);
	float *em = malloc(sizeof(float) * (size_t)SCORE_CHUNK * e);
	int rc = lg && em ? 0 : HDQT_ENOMEM;
	for (int i = 0; rc == 0 && i < n; i += SCORE_CHUNK) {
		const int b = n - i < SCORE_CHUNK ? n - i : SCORE_CHUNK;
		if ((rc = hdqt_model_forward_embed(m, X + (size_t)i * d, b, lg, em)) < 0)
			break;
		for (int r = 0; r < b; r++) {
			const float *l = lg + (size_t)r * K;
			const int p = argmax_n(l, nv->classes);
			int u;
			const float s = hdqt_novelty_score1(nv, l, em + (size_t)r * e, p, &u);
			if (pred)
				pred[i + r] = p;
			if (score)
				score[i + r] = s;
			if (unknown)
				unknown[i + r] = u;
		}
	}
	free(lg);
	free(em);
	return rc;
}

/* The calibration rows' mean unit embedding: the known classes' origin
 * (hdqt_novelty_centre), for every score. */
static int fit_centre(hdqt_novelty *nv, hdqt_model *m, const float *VX, int n)
{
	const int d = hdqt_model_n_in(m), e = nv->e;
	float *em = malloc(sizeof(float) * (size_t)SCORE_CHUNK * e);
	double *acc = calloc((size_t)e, sizeof(double));
	int rc = em && acc ? 0 : HDQT_ENOMEM;
	for (int i = 0; rc == 0 && i < n; i += SCORE_CHUNK) {
		const int b = n - i < SCORE_CHUNK ? n - i : SCORE_CHUNK;
		if ((rc = hdqt_model_embed(m, VX + (size_t)i * d, b, em)) < 0)
			break;
		for (int r = 0; r < b; r++) {
			unit(em + (size_t)r * e, e);
			for (int j = 0; j < e; j++)
				acc[j] += em[(size_t)r * e + j];
		}
	}
	for (int j = 0; rc == 0 && j < e; j++)
		nv->centre[j] = (float)(acc[j] / n);
	free(em);
	free(acc);
	return rc;
}

/* kNN keeps at most this many exemplar directions (the best-ranked of each
 * class, as many per class as fit): a prediction compares against each. */
#define KNN_MAX_REF 4096

int hdqt_novelty_fit(hdqt_novelty **out, hdqt_model *m, const hdqt_memory *mem, int classes,
		     const float *VX, int n, hdqt_novelty_kind kind, float rate)
{
	if (!out || !m || !VX || n < 1 || (int)kind < 0 || kind >= HDQT_NOVELTY_COUNT ||
	    !(rate > 0 && rate < 1) || classes < 1 || classes > hdqt_model_n_classes(m) ||
	    ((kind == HDQT_NOVELTY_NME || kind == HDQT_NOVELTY_KNN) && !mem))
		return HDQT_EINVAL;
	const int e = hdqt_model_embed_dim(m);
	const int by_emb = kind == HDQT_NOVELTY_NME || kind == HDQT_NOVELTY_KNN;
	int total = 0, have = 0;
	for (int c = 0; by_emb && c < classes; c++) {
		int k;
		hdqt_memory_class(mem, c, &k);
		total += k;
		have += k > 0;
	}
	if (by_emb && total == 0)
		return HDQT_ESTATE;
	const int per_class = total > KNN_MAX_REF ? KNN_MAX_REF / have : total;
	if (kind == HDQT_NOVELTY_KNN && total > KNN_MAX_REF) {
		total = 0;
		for (int c = 0; c < classes; c++) {
			int k;
			hdqt_memory_class(mem, c, &k);
			total += k < per_class ? k : per_class;
		}
	}
	hdqt_novelty *nv = nov_alloc(classes, e, kind == HDQT_NOVELTY_KNN ? total : by_emb ? classes : 0);
	if (!nv)
		return HDQT_ENOMEM;
	nv->kind = kind;
	nv->rate = rate;
	int rc = 0;
	/* NME: class means of unit exemplar embeddings, renormalised (iCaRL's
	 * NME); kNN: the unit exemplar embeddings themselves. */
	float *emb = NULL;
	if (by_emb) {
		int kmax = 1;
		for (int c = 0; c < classes; c++) {
			int k;
			hdqt_memory_class(mem, c, &k);
			kmax = k > kmax ? k : kmax;
		}
		if (!(emb = malloc(sizeof(float) * (size_t)kmax * e)))
			rc = HDQT_ENOMEM;
		int r0 = 0; /* kNN: next reference row */
		for (int c = 0; rc == 0 && c < classes; c++) {
			int k;
			const float *rows = hdqt_memory_class(mem, c, &k);
			if (k < 1)
				continue; /* e.g. announced, never taught: never the nearest */
			if ((rc = hdqt_model_embed(m, rows, k, emb)) < 0)
				break;
			for (int i = 0; i < k; i++)
				unit(emb + (size_t)i * e, e);
			if (kind == HDQT_NOVELTY_KNN) {
				const int take = k < per_class ? k : per_class;
				memcpy(nv->ref + (size_t)r0 * e, emb, sizeof(float) * (size_t)take * e);
				r0 += take;
				continue;
			}
			float *mu = nv->ref + (size_t)c * e;
			for (int i = 0; i < k; i++)
				for (int j = 0; j < e; j++)
					mu[j] += emb[(size_t)i * e + j];
			unit(mu, e);
		}
		/* A zero row (every unit off, or no exemplar) is no direction. */
		for (int i = 0; i < nv->nref; i++)
			for (int j = 0; j < e && !nv->present[i]; j++)
				nv->present[i] = nv->ref[(size_t)i * e + j] != 0.0f;
	}
	free(emb);
	int *pred = malloc(sizeof(int) * (size_t)n);
	float *score = malloc(sizeof(float) * (size_t)n);
	float *tmp = malloc(sizeof(float) * (size_t)n);
	if (rc == 0 && (!pred || !score || !tmp))
		rc = HDQT_ENOMEM;
	/* Predictions and scores of the calibration rows (no thresholds yet:
	 * the unknown flags are not asked for). */
	if (rc == 0)
		rc = hdqt_novelty_score(nv, m, VX, n, pred, score, NULL);
	if (rc == 0)
		rc = fit_centre(nv, m, VX, n);
	if (rc == 0) {
		memcpy(tmp, score, sizeof(float) * (size_t)n);
		qsort(tmp, (size_t)n, sizeof(float), cmp_float);
		nv->thr_all = quantile_above(tmp, n, rate);
		for (int c = 0; c < classes; c++) {
			int k = 0;
			for (int i = 0; i < n; i++)
				if (pred[i] == c)
					tmp[k++] = score[i];
			nv->count[c] = k;
			if (k < min_per_class(rate)) {
				nv->thr[c] = nv->thr_all;
				continue;
			}
			qsort(tmp, (size_t)k, sizeof(float), cmp_float);
			nv->thr[c] = quantile_above(tmp, k, rate);
		}
		for (int c = 0; c < classes; c++)
			if (!isfinite(nv->thr[c]))
				rc = HDQT_ERANGE;
		if (!isfinite(nv->thr_all))
			rc = HDQT_ERANGE;
	}
	free(pred);
	free(score);
	free(tmp);
	if (rc < 0) {
		hdqt_novelty_free(nv);
		return rc;
	}
	*out = nv;
	return 0;
}

double hdqt_auroc(const float *pos, int npos, const float *neg, int nneg)
{
	if (npos < 1 || nneg < 1)
		return NAN;
	/* Mann-Whitney U over the sorted negatives: for each positive, the
	 * negatives below it plus half the ties. */
	float *s = malloc(sizeof(float) * (size_t)nneg);
	if (!s)
		return NAN;
	memcpy(s, neg, sizeof(float) * (size_t)nneg);
	qsort(s, (size_t)nneg, sizeof(float), cmp_float);
	double u = 0;
	for (int i = 0; i < npos; i++) {
		int lo = 0, hi = nneg; /* first index with s >= pos[i] */
		while (lo < hi) {
			int mid = (lo + hi) / 2;
			if (s[mid] < pos[i])
				lo = mid + 1;
			else
				hi = mid;
		}
		int lt = lo;
		lo = lt, hi = nneg; /* first index with s > pos[i] */
		while (lo < hi) {
			int mid = (lo + hi) / 2;
			if (s[mid] <= pos[i])
				lo = mid + 1;
			else
				hi = mid;
		}
		u += lt + 0.5 * (lo - lt);
	}
	free(s);
	return u / ((double)npos * nneg);
}

/* ---- serialisation ---- */

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void putf(uint8_t *p, float f)
{
	uint32_t v;
	memcpy(&v, &f, 4);
	put32(p, v);
}

static float getf(const uint8_t *p)
{
	uint32_t v = get32(p);
	float f;
	memcpy(&f, &v, 4);
	return f;
}

/* payload: kind, classes, e, nref, rate, thr_all, thr[classes],
 * count[classes], ref[nref x e], centre[e] */
#define NOV_FIXED 24
static size_t payload_len(uint32_t classes, uint32_t e, uint32_t nref)
{
	return NOV_FIXED + 8 * (size_t)classes + 4 * ((size_t)nref + 1) * e;
}

int hdqt_novelty_save(const hdqt_novelty *nv, uint8_t **blob, size_t *len)
{
	if (!nv || !blob || !len)
		return HDQT_EINVAL;
	const size_t pl = payload_len((uint32_t)nv->classes, (uint32_t)nv->e, (uint32_t)nv->nref);
	const size_t n = NOV_HDR + pl + 4;
	if (pl > UINT32_MAX - NOV_HDR - 4)
		return HDQT_ERANGE;
	uint8_t *p = malloc(n);
	if (!p)
		return HDQT_ENOMEM;
	memcpy(p, NOV_MAGIC, 8);
	put32(p + 8, NOV_VERSION);
	put32(p + 12, (uint32_t)pl);
	uint8_t *q = p + NOV_HDR;
	put32(q, (uint32_t)nv->kind), q += 4;
	put32(q, (uint32_t)nv->classes), q += 4;
	put32(q, (uint32_t)nv->e), q += 4;
	put32(q, (uint32_t)nv->nref), q += 4;
	putf(q, nv->rate), q += 4;
	putf(q, nv->thr_all), q += 4;
	for (int c = 0; c < nv->classes; c++, q += 4)
		putf(q, nv->thr[c]);
	for (int c = 0; c < nv->classes; c++, q += 4)
		put32(q, (uint32_t)nv->count[c]);
	for (size_t i = 0; i < (size_t)nv->nref * nv->e; i++, q += 4)
		putf(q, nv->ref[i]);
	for (int j = 0; j < nv->e; j++, q += 4)
		putf(q, nv->centre[j]);
	put32(q, (uint32_t)crc32(0L, p, (uInt)(n - 4)));
	*blob = p;
	*len = n;
	return 0;
}

int hdqt_novelty_load(const uint8_t *blob, size_t len, hdqt_novelty **out)
{
	if (!blob || !out)
		return HDQT_EINVAL;
	if (len < NOV_HDR + NOV_FIXED + 4 || len > UINT32_MAX || memcmp(blob, NOV_MAGIC, 8) != 0)
		return HDQT_ECORRUPT;
	const uint32_t ver = get32(blob + 8), pl = get32(blob + 12);
	if (ver < 1u || ver > NOV_VERSION)
		return HDQT_EVERSION;
	if ((size_t)pl != len - NOV_HDR - 4 || (uint32_t)crc32(0L, blob, (uInt)(len - 4)) != get32(blob + len - 4))
		return HDQT_ECORRUPT;
	const uint8_t *q = blob + NOV_HDR;
	const uint32_t kind = get32(q), classes = get32(q + 4), e = get32(q + 8), nref = get32(q + 12);
	/* Every size is checked against the bytes present before anything is
	 * allocated (nref x e is then bounded by the blob's length). */
	if (kind >= HDQT_NOVELTY_COUNT || classes < 1 || classes > HDQT_MAX_CLASSES || e < 1 ||
	    e > HDQT_MAX_DIM || nref > (1u << 24) || payload_len(classes, e, nref) != pl)
		return HDQT_ECORRUPT;
	const int by_emb = kind == HDQT_NOVELTY_NME || kind == HDQT_NOVELTY_KNN;
	if (by_emb != (nref > 0) || (kind == HDQT_NOVELTY_NME && nref != classes))
		return HDQT_ECORRUPT;
	const float rate = getf(q + 16), thr_all = getf(q + 20);
	if (!(rate > 0 && rate < 1) || !isfinite(thr_all))
		return HDQT_ECORRUPT;
	hdqt_novelty *nv = nov_alloc((int)classes, (int)e, (int)nref);
	if (!nv)
		return HDQT_ENOMEM;
	nv->kind = (hdqt_novelty_kind)kind;
	nv->rate = rate;
	nv->thr_all = thr_all;
	q += NOV_FIXED;
	int bad = 0;
	for (uint32_t c = 0; c < classes; c++, q += 4)
		bad |= !isfinite(nv->thr[c] = getf(q));
	for (uint32_t c = 0; c < classes; c++, q += 4)
		bad |= (nv->count[c] = (int)get32(q)) < 0;
	for (size_t i = 0; i < (size_t)nref * e; i++, q += 4)
		bad |= !isfinite(nv->ref[i] = getf(q));
	for (uint32_t j = 0; j < e; j++, q += 4)
		bad |= !isfinite(nv->centre[j] = getf(q));
	for (uint32_t c = 0; c < nref; c++)
		for (uint32_t j = 0; j < e && !nv->present[c]; j++)
			nv->present[c] = nv->ref[(size_t)c * e + j] != 0.0f;
	if (bad) {
		hdqt_novelty_free(nv);
		return HDQT_ECORRUPT;
	}
	*out = nv;
	return 0;
}
