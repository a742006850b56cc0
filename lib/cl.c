/* SPDX-License-Identifier: MIT */
/*
 * Class-incremental learning: fine-tuning, experience replay (ER), learning
 * without forgetting (LwF) and iCaRL (Rebuffi et al., CVPR 2017) on top of
 * one hdqt_model and one hdqt_memory.
 *
 * Distillation targets come from the model as it was before the task; its
 * forward pass is deterministic in every recipe, so the teacher's logits are
 * computed once per task instead of once per batch.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hdqt_data.h"

struct hdqt_cl {
	hdqt_cl_config cfg;
	hdqt_model *model;
	hdqt_memory *mem;
	hdqt_rng rng;
	int trained;       /* classes the model has learned so far */
	long seen;         /* samples offered to the reservoir */
	double sps;
};

static const char *const method_names[HDQT_CL_COUNT] = {"finetune", "er", "lwf", "icarl"};

int hdqt_cl_method_parse(const char *s, hdqt_cl_method *out)
{
	for (int i = 0; s && i < HDQT_CL_COUNT; i++)
		if (strcmp(s, method_names[i]) == 0) {
			*out = (hdqt_cl_method)i;
			return 0;
		}
	return HDQT_EINVAL;
}

const char *hdqt_cl_method_name(hdqt_cl_method m)
{
	return (int)m >= 0 && m < HDQT_CL_COUNT ? method_names[m] : "?";
}

void hdqt_cl_config_default(hdqt_cl_config *c)
{
	memset(c, 0, sizeof(*c));
	c->method = HDQT_CL_ICARL;
	c->memory = 200;
	c->epochs = 100;
	c->batch = 128;
	hdqt_sgd_default(&c->sgd);
	c->kd_T = 2.0f;
	c->kd_lambda = 1.0f;
	c->seed = 1;
}

int hdqt_cl_new(hdqt_cl **out, hdqt_model *model, const hdqt_cl_config *cfg)
{
	if (!out || !model || !cfg || (int)cfg->method < 0 || cfg->method >= HDQT_CL_COUNT ||
	    cfg->memory < 0 || cfg->epochs < 0 || cfg->batch < 1 || cfg->batch > 65536 ||
	    !(cfg->kd_T > 0) || !(cfg->kd_lambda >= 0) || !(cfg->sgd.lr >= 0))
		return HDQT_EINVAL;
	hdqt_cl *cl = calloc(1, sizeof(*cl));
	if (!cl)
		return HDQT_ENOMEM;
	int rc = hdqt_memory_new(&cl->mem, cfg->memory, hdqt_model_n_in(model));
	if (rc < 0) {
		free(cl);
		return rc;
	}
	cl->cfg = *cfg;
	cl->model = model;
	hdqt_rng_seed(&cl->rng, cfg->seed, 3);
	hdqt_model_seed(model, cfg->seed);
	*out = cl;
	return 0;
}

void hdqt_cl_free(hdqt_cl *cl)
{
	if (!cl)
		return;
	hdqt_model_free(cl->model);
	hdqt_memory_free(cl->mem);
	free(cl);
}

hdqt_model *hdqt_cl_model(hdqt_cl *cl) { return cl->model; }

int hdqt_cl_resume(hdqt_cl *cl, int classes)
{
	if (!cl || classes < 0 || classes > hdqt_model_n_classes(cl->model))
		return HDQT_EINVAL;
	cl->trained = classes;
	return 0;
}
hdqt_memory *hdqt_cl_memory(hdqt_cl *cl) { return cl->mem; }
double hdqt_cl_samples_per_s(const hdqt_cl *cl) { return cl->sps; }

/* hdqt_model_forward's inference chunk (lib/model.c CHUNK): the teacher's
 * logits are computed in the same chunks. */
#define TEACH_CHUNK 128

static int uses_memory(hdqt_cl_method m) { return m == HDQT_CL_ER || m == HDQT_CL_ICARL; }
static int uses_kd(hdqt_cl_method m) { return m == HDQT_CL_LWF || m == HDQT_CL_ICARL; }

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* iCaRL: herding on the current model's penultimate features per new class. */
static int select_herding(hdqt_cl *cl, const float *X, const int *y, int n, int c0, int c1,
			  int quota)
{
	const int d = hdqt_model_n_in(cl->model), e = hdqt_model_embed_dim(cl->model);
	int rc = 0;
	/* Buffers for the largest new class, not for all n rows: the
	 * embeddings of a 20,000-sample round were 41 MB. */
	int kmax = 1;
	for (int c = c0; c < c1; c++) {
		int k = 0;
		for (int i = 0; i < n; i++)
			k += y[i] == c;
		kmax = k > kmax ? k : kmax;
	}
	float *rows = malloc(sizeof(float) * (size_t)kmax * d);
	float *emb = malloc(sizeof(float) * (size_t)kmax * e);
	int *idx = malloc(sizeof(int) * (size_t)kmax);
	float *sel = malloc(sizeof(float) * (size_t)(quota > 0 ? quota : 1) * d);
	if (!rows || !emb || !idx || !sel)
		rc = HDQT_ENOMEM;
	for (int c = c0; rc == 0 && c < c1; c++) {
		int k = 0;
		for (int i = 0; i < n; i++)
			if (y[i] == c)
				memcpy(rows + (size_t)k++ * d, X + (size_t)i * d, sizeof(float) * d);
		if ((rc = hdqt_model_embed(cl->model, rows, k, emb)) < 0)
			break;
		int got = hdqt_herding_inplace(emb, k, e, quota, idx); /* emb is not needed after */
		if (got < 0) {
			rc = got;
			break;
		}
		for (int j = 0; j < got; j++)
			memcpy(sel + (size_t)j * d, rows + (size_t)idx[j] * d, sizeof(float) * d);
		rc = hdqt_memory_set_class(cl->mem, c, sel, got);
	}
	free(rows);
	free(emb);
	free(idx);
	free(sel);
	return rc;
}

/* ER: a uniformly random subset of each new class. */
static int select_random(hdqt_cl *cl, const float *X, const int *y, int n, int c0, int c1,
			 int quota)
{
	const int d = hdqt_model_n_in(cl->model);
	int *idx = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
	float *sel = malloc(sizeof(float) * (size_t)(quota > 0 ? quota : 1) * d);
	int rc = (idx && sel) ? 0 : HDQT_ENOMEM;
	for (int c = c0; rc == 0 && c < c1; c++) {
		int k = 0;
		for (int i = 0; i < n; i++)
			if (y[i] == c)
				idx[k++] = i;
		int take = k < quota ? k : quota;
		for (int j = 0; j < take; j++) { /* partial Fisher-Yates */
			int r = j + (int)hdqt_rng_below(&cl->rng, (uint32_t)(k - j));
			int t = idx[j];
			idx[j] = idx[r];
			idx[r] = t;
			memcpy(sel + (size_t)j * d, X + (size_t)idx[j] * d, sizeof(float) * d);
		}
		rc = hdqt_memory_set_class(cl->mem, c, sel, take);
	}
	free(idx);
	free(sel);
	return rc;
}

/* ER with reservoir sampling over the whole stream (class-agnostic): every
 * sample seen so far is in memory with equal probability budget / seen. */
static int select_reservoir(hdqt_cl *cl, const float *X, const int *y, int n, int classes)
{
	const int d = hdqt_model_n_in(cl->model), B = hdqt_memory_budget(cl->mem);
	int size = hdqt_memory_size(cl->mem);
	float *RX = malloc(sizeof(float) * (size_t)(B > 0 ? B : 1) * d);
	int *Ry = malloc(sizeof(int) * (size_t)(B > 0 ? B : 1));
	if (!RX || !Ry) {
		free(RX);
		free(Ry);
		return HDQT_ENOMEM;
	}
	hdqt_memory_export(cl->mem, RX, Ry);
	for (int i = 0; i < n; i++) {
		cl->seen++;
		long slot = -1;
		if (size < B)
			slot = size++;
		else {
			uint64_t r = ((uint64_t)hdqt_rng_u32(&cl->rng) << 32 | hdqt_rng_u32(&cl->rng)) %
				     (uint64_t)cl->seen;
			if (r < (uint64_t)B)
				slot = (long)r;
		}
		if (slot >= 0) {
			memcpy(RX + (size_t)slot * d, X + (size_t)i * d, sizeof(float) * d);
			Ry[slot] = y[i];
		}
	}
	int rc = 0;
	float *tmp = malloc(sizeof(float) * (size_t)(size > 0 ? size : 1) * d);
	if (!tmp)
		rc = HDQT_ENOMEM;
	for (int c = 0; rc == 0 && c < classes; c++) {
		int k = 0;
		for (int i = 0; i < size; i++)
			if (Ry[i] == c)
				memcpy(tmp + (size_t)k++ * d, RX + (size_t)i * d, sizeof(float) * d);
		rc = hdqt_memory_set_class(cl->mem, c, tmp, k);
	}
	free(tmp);
	free(RX);
	free(Ry);
	return rc;
}

int hdqt_cl_learn(hdqt_cl *cl, const float *X, const int *y, int n, int classes_after,
		  hdqt_cl_progress_fn cb, void *arg)
{
	if (!cl || !X || !y || n < 1 || classes_after < 1 || classes_after > HDQT_MAX_CLASSES ||
	    classes_after < cl->trained)
		return HDQT_EINVAL;
	for (int i = 0; i < n; i++)
		if (y[i] < 0 || y[i] >= classes_after)
			return HDQT_EINVAL;
	hdqt_model *m = cl->model;
	const int d = hdqt_model_n_in(m), old = cl->trained;
	const hdqt_cl_method meth = cl->cfg.method;
	const int mem_n = uses_memory(meth) ? hdqt_memory_size(cl->mem) : 0;
	const int N = n + mem_n;
	const int kd = uses_kd(meth) && old > 0;
	int rc = 0;

	/* The task's rows are X's and then the memory's, read in place: no
	 * copy of X (for a daemon round of 20,000 samples that was 13 MB). */
	float *MX = malloc(sizeof(float) * (size_t)(mem_n > 0 ? mem_n : 1) * d);
	int *My = malloc(sizeof(int) * (size_t)(mem_n > 0 ? mem_n : 1));
	float *CX = kd ? malloc(sizeof(float) * (size_t)TEACH_CHUNK * d) : NULL;
	int *perm = malloc(sizeof(int) * (size_t)N);
	float *teach = kd ? malloc(sizeof(float) * (size_t)N * hdqt_model_n_classes(m)) : NULL;
	const int B = cl->cfg.batch;
	float *bX = malloc(sizeof(float) * (size_t)B * d);
	int *by = malloc(sizeof(int) * (size_t)B);
	float *bT = kd ? malloc(sizeof(float) * (size_t)B * old) : NULL;
	if (!MX || !My || !perm || !bX || !by || (kd && (!teach || !bT || !CX))) {
		rc = HDQT_ENOMEM;
		goto out;
	}
	if (mem_n)
		hdqt_memory_export(cl->mem, MX, My);
#define ROW(k) ((k) < n ? X + (size_t)(k) * d : MX + (size_t)((k) - n) * d)
#define LABEL(k) ((k) < n ? y[k] : My[(k) - n])
	const int head_before = hdqt_model_n_classes(m);
	/* The old model's logits, in the chunks hdqt_model_forward cuts a
	 * call into (so the same floats as one call over X and the memory
	 * concatenated: under per-tensor scales an output depends on its
	 * chunk); the chunk that straddles the two is gathered. */
	for (int i = 0; kd && i < N; i += TEACH_CHUNK) {
		const int b = N - i < TEACH_CHUNK ? N - i : TEACH_CHUNK;
		const float *src = X + (size_t)i * d;
		if (i + b > n) {
			for (int r = 0; r < b; r++)
				memcpy(CX + (size_t)r * d, ROW(i + r), sizeof(float) * d);
			src = CX;
		}
		if ((rc = hdqt_model_forward(m, src, b, teach + (size_t)i * head_before)) < 0)
			goto out;
	}
	if (classes_after > head_before && (rc = hdqt_model_add_classes(m, classes_after - head_before)) < 0)
		goto out;
	hdqt_model_reset_optimizer(m);
	for (int i = 0; i < N; i++)
		perm[i] = i;
	double t0 = now_s();
	long trained = 0;
	for (int ep = 0; ep < cl->cfg.epochs; ep++) {
		for (int i = N - 1; i > 0; i--) {
			int j = (int)hdqt_rng_below(&cl->rng, (uint32_t)(i + 1));
			int t = perm[i];
			perm[i] = perm[j];
			perm[j] = t;
		}
		const float lr = hdqt_sgd_lr_at(&cl->cfg.sgd, ep);
		double loss_sum = 0;
		int nb = 0;
		/* ceil(N / B) batches of nearly equal size (e.g. 257 -> 86, 86, 85)
		 * rather than B, B, 1: a one-sample step carries B times the weight
		 * of a sample and, with momentum, can throw a small task off. */
		const int nbatch = (N + B - 1) / B, base = N / nbatch, extra = N % nbatch;
		for (int bi = 0, s = 0; bi < nbatch; bi++) {
			const int b = base + (bi < extra);
			for (int r = 0; r < b; r++) {
				int k = perm[s + r];
				memcpy(bX + (size_t)r * d, ROW(k), sizeof(float) * d);
				by[r] = LABEL(k);
				if (kd)
					memcpy(bT + (size_t)r * old, teach + (size_t)k * head_before,
					       sizeof(float) * old);
			}
			hdqt_batch bt = {.X = bX, .y = by, .n = b, .teacher = kd ? bT : NULL,
					 .n_old = old, .kd_T = cl->cfg.kd_T, .kd_lambda = cl->cfg.kd_lambda};
			float loss = 0;
			if ((rc = hdqt_model_train_step(m, &bt, &cl->cfg.sgd, lr, &loss)) < 0)
				goto out;
			loss_sum += loss;
			nb++;
			trained += b;
			s += b;
		}
		if (cb && cb(arg, ep + 1, cl->cfg.epochs, nb ? (float)(loss_sum / nb) : 0.0f)) {
			rc = HDQT_ECANCELED;
			goto out;
		}
	}
	double dt = now_s() - t0;
	cl->sps = dt > 0 ? (double)trained / dt : 0.0;

	/* Memory update after the task. */
	if (uses_memory(meth) && cl->cfg.memory > 0) {
		int quota = hdqt_memory_quota(cl->mem, classes_after);
		if (meth == HDQT_CL_ICARL) {
			hdqt_memory_rebalance_to(cl->mem, quota);
			rc = select_herding(cl, X, y, n, old, classes_after, quota);
		} else if (cl->cfg.er_reservoir) {
			rc = select_reservoir(cl, X, y, n, classes_after);
		} else {
			hdqt_memory_rebalance_to(cl->mem, quota);
			rc = select_random(cl, X, y, n, old, classes_after, quota);
		}
		if (rc < 0)
			goto out;
	}
	cl->trained = classes_after;
#undef ROW
#undef LABEL
out:
	free(MX);
	free(My);
	free(CX);
	free(perm);
	free(teach);
	free(bX);
	free(by);
	free(bT);
	return rc;
}

int hdqt_cl_predict_nme(hdqt_cl *cl, const float *X, int n, int *pred)
{
	if (!cl || !X || !pred || n < 0)
		return HDQT_EINVAL;
	hdqt_model *m = cl->model;
	const int C = cl->trained, e = hdqt_model_embed_dim(m);
	if (C < 1)
		return HDQT_ESTATE;
	for (int c = 0; c < C; c++) {
		int k;
		hdqt_memory_class(cl->mem, c, &k);
		if (k < 1)
			return HDQT_ESTATE;
	}
	float *means = calloc((size_t)C * e, sizeof(float));
	int maxk = 0;
	for (int c = 0; c < C; c++) {
		int k;
		hdqt_memory_class(cl->mem, c, &k);
		maxk = k > maxk ? k : maxk;
	}
	int big = maxk > n ? maxk : n;
	float *emb = malloc(sizeof(float) * (size_t)(big > 0 ? big : 1) * e);
	int rc = (means && emb) ? 0 : HDQT_ENOMEM;
	/* Class means of L2-normalised exemplar features, renormalised. */
	for (int c = 0; rc == 0 && c < C; c++) {
		int k;
		const float *rows = hdqt_memory_class(cl->mem, c, &k);
		if ((rc = hdqt_model_embed(m, rows, k, emb)) < 0)
			break;
		float *mu = means + (size_t)c * e;
		for (int i = 0; i < k; i++) {
			double ss = 0;
			for (int j = 0; j < e; j++)
				ss += (double)emb[(size_t)i * e + j] * emb[(size_t)i * e + j];
			float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
			for (int j = 0; j < e; j++)
				mu[j] += emb[(size_t)i * e + j] * inv;
		}
		double ss = 0;
		for (int j = 0; j < e; j++)
			ss += (double)mu[j] * mu[j];
		float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
		for (int j = 0; j < e; j++)
			mu[j] *= inv;
	}
	if (rc == 0)
		rc = hdqt_model_embed(m, X, n, emb);
	for (int i = 0; rc == 0 && i < n; i++) {
		/* argmin ||z/|z| - mu||  ==  argmax z . mu for unit mu */
		const float *z = emb + (size_t)i * e;
		int best = 0;
		double bestv = -INFINITY;
		for (int c = 0; c < C; c++) {
			double v = 0;
			for (int j = 0; j < e; j++)
				v += (double)z[j] * means[(size_t)c * e + j];
			if (v > bestv) {
				bestv = v;
				best = c;
			}
		}
		pred[i] = best;
	}
	free(means);
	free(emb);
	return rc;
}
