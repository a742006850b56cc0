/* SPDX-License-Identifier: MIT */
/*
 * Class-incremental learning: fine-tuning, experience replay (ER), learning
 * without forgetting (LwF), iCaRL (Rebuffi et al., CVPR 2017) and BiC (Wu
 * et al., "Large Scale Incremental Learning", CVPR 2019) on top of one
 * hdqt_model and one hdqt_memory.
 *
 * Distillation targets come from the model as it was before the task; its
 * forward pass is deterministic in every recipe, so the teacher's logits are
 * computed once per task instead of once per batch.  They come from
 * hdqt_model_forward, so they include the previous task's bias correction,
 * as in the paper.
 *
 * Invariant: the model's logit affine is the identity while it trains.  It
 * is reset at the start of every task (after the teacher's logits), so the
 * raw logits the training step sees are the ones inference uses, except for
 * the correction BiC fits for the latest task's new classes at its end.  An
 * older correction is never left on a row the next task trains: it lives on
 * only through the distillation targets.
 *
 * BiC, per task (paper Sec. 3-4; the choices where it leaves room):
 *   1. validation split: v samples of every class seen, old and new alike
 *      (balanced).  v = bic_val x the per-class exemplar quota after the
 *      task (at least 1), lowered so that every class keeps one sample to
 *      train on.  Old classes give their v lowest-ranked exemplars (the
 *      ones a rebalance drops first), new classes v random samples.  Those
 *      samples are left out of stage 1, as the paper's 9:1 split leaves
 *      them out.
 *   2. stage 1: train on the new data + the remaining exemplars with
 *      (1 - lambda) CE + lambda KD, lambda = n_old / n_classes (Eq. 3-5;
 *      KD as iCaRL's here: T^2 KL at temperature kd_T over the old classes).
 *   3. stage 2: alpha, beta of o_k -> alpha o_k + beta for the new classes k
 *      (old classes unchanged) minimise the cross-entropy of the validation
 *      split under the frozen model (Eq. 6-7), by Newton's method.
 *   4. exemplars: herding, as iCaRL.
 * Without old classes, new classes, or a sample to spare in some class,
 * stages 1 and 3 are skipped (no bias to correct): BiC is then iCaRL's
 * training with the identity affine.
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

static const char *const method_names[HDQT_CL_COUNT] = {"finetune", "er", "lwf", "icarl", "bic"};

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
	c->bic_val = 0.2f;
	c->seed = 1;
}

int hdqt_cl_new(hdqt_cl **out, hdqt_model *model, const hdqt_cl_config *cfg)
{
	if (!out || !model || !cfg || (int)cfg->method < 0 || cfg->method >= HDQT_CL_COUNT ||
	    cfg->memory < 0 || cfg->epochs < 0 || cfg->batch < 1 || cfg->batch > 65536 ||
	    !(cfg->kd_T > 0) || !(cfg->kd_lambda >= 0) || !(cfg->sgd.lr >= 0) ||
	    !(cfg->bic_val > 0 && cfg->bic_val <= 1))
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

static int uses_memory(hdqt_cl_method m)
{
	return m == HDQT_CL_ER || m == HDQT_CL_ICARL || m == HDQT_CL_BIC;
}
static int uses_kd(hdqt_cl_method m)
{
	return m == HDQT_CL_LWF || m == HDQT_CL_ICARL || m == HDQT_CL_BIC;
}

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

/* BiC step 1: the balanced validation split over the task's rows (X's n
 * rows, then the memory's mem_n exported rows with labels My, each class's
 * in rank order).  Marks held[k] = 1 for the rows held out and returns
 * their count (0: no split, stage 2 is skipped), or HDQT_ENOMEM. */
static int bic_split(hdqt_cl *cl, const int *y, int n, const int *My, int mem_n, int old,
		     int classes_after, unsigned char *held)
{
	const int C = classes_after;
	int *cnt = calloc((size_t)C, sizeof(int));
	int *idx = malloc(sizeof(int) * (size_t)n);
	if (!cnt || !idx) {
		free(cnt);
		free(idx);
		return HDQT_ENOMEM;
	}
	for (int k = 0; k < mem_n; k++)
		if (My[k] >= 0 && My[k] < old)
			cnt[My[k]]++;
	for (int i = 0; i < n; i++)
		if (y[i] >= old)
			cnt[y[i]]++;
	int v = (int)(cl->cfg.bic_val * (float)hdqt_memory_quota(cl->mem, C));
	v = v < 1 ? 1 : v;
	/* A class with a single sample cannot spare it: it stays out of the
	 * split (with none it has nothing to give anyway). */
	int n_old = 0, n_new = 0;
	for (int c = 0; c < C; c++)
		if (cnt[c] >= 2) {
			v = cnt[c] - 1 < v ? cnt[c] - 1 : v;
			n_old += c < old;
			n_new += c >= old;
		}
	int nv = 0;
	if (n_old > 0 && n_new > 0) {
		/* Old classes: the last v of each class's exemplars. */
		for (int k = 0, r = 0; k < mem_n; k++) {
			r = k > 0 && My[k] == My[k - 1] ? r + 1 : 0;
			const int c = My[k];
			if (c >= 0 && c < old && cnt[c] >= 2 && r >= cnt[c] - v) {
				held[n + k] = 1;
				nv++;
			}
		}
		/* New classes: v random samples each (partial Fisher-Yates). */
		for (int c = old; c < C; c++) {
			if (cnt[c] < 2)
				continue;
			int k = 0;
			for (int i = 0; i < n; i++)
				if (y[i] == c)
					idx[k++] = i;
			for (int j = 0; j < v; j++) {
				int r = j + (int)hdqt_rng_below(&cl->rng, (uint32_t)(k - j));
				int t = idx[j];
				idx[j] = idx[r];
				idx[r] = t;
				held[idx[j]] = 1;
				nv++;
			}
		}
	}
	free(cnt);
	free(idx);
	return nv;
}

/* Mean cross-entropy of n rows of logits lg (n x C) when the classes >= c0
 * have o -> a o + b, plus the ridge; with g and H (2 and 3 entries: aa, ab,
 * bb) also its gradient and Hessian in (a, b).  In double: the logits of
 * a trained model reach tens, and the Newton step needs clean curvature. */
#define BIC_RIDGE 1e-3
static double bic_loss(const float *lg, const int *y, int n, int C, int c0, double a, double b,
		       double *g, double *H)
{
	double f = 0, ga = 0, gb = 0, haa = 0, hab = 0, hbb = 0;
	for (int i = 0; i < n; i++) {
		const float *o = lg + (size_t)i * C;
		double mx = -INFINITY;
		for (int c = 0; c < C; c++) {
			const double z = c < c0 ? o[c] : a * o[c] + b;
			mx = z > mx ? z : mx;
		}
		double se = 0, s0 = 0, s1 = 0, s2 = 0;
		for (int c = 0; c < C; c++) {
			const double z = c < c0 ? o[c] : a * o[c] + b, e = exp(z - mx);
			se += e;
			if (c >= c0) {
				s0 += e;
				s1 += e * o[c];
				s2 += e * o[c] * o[c];
			}
		}
		const int t = y[i];
		const double zt = t < c0 ? o[t] : a * o[t] + b;
		f += mx + log(se) - zt;
		s0 /= se; /* softmax mass of the new classes, and its moments */
		s1 /= se;
		s2 /= se;
		ga += s1 - (t >= c0 ? o[t] : 0.0);
		gb += s0 - (t >= c0 ? 1.0 : 0.0);
		haa += s2 - s1 * s1;
		hab += s1 - s0 * s1;
		hbb += s0 - s0 * s0;
	}
	const double r = 0.5 * BIC_RIDGE * ((a - 1) * (a - 1) + b * b);
	if (g) {
		g[0] = ga / n + BIC_RIDGE * (a - 1);
		g[1] = gb / n + BIC_RIDGE * b;
	}
	if (H) {
		H[0] = haa / n + BIC_RIDGE;
		H[1] = hab / n;
		H[2] = hbb / n + BIC_RIDGE;
	}
	return f / n + r;
}

/* BiC stage 2 (Wu et al. 2019, Sec. 3.3, Eq. 6-7): alpha, beta for the new
 * classes [c0, C) minimising bic_loss on the validation logits, from the
 * identity.  The loss is convex in (alpha, beta) (cross-entropy is convex
 * in the logits, which are affine in them); the paper's SGD on two
 * scalars becomes Newton's method with a backtracking line search, which
 * converges in a few steps and is deterministic.  The ridge (1e-3 towards
 * the identity, not in the paper) keeps the minimum finite when the small
 * split is separable.  alpha stays positive: a negative scale would turn
 * the new classes' ranking upside down.  HDQT_ERANGE if a logit is not
 * finite (then *alpha, *beta are the identity). */
/* Bounds of a fitted correction (hdqt_model_set_logit_affine accepts
 * wider ones: a loaded model's are checked there). */
#define BIC_ALPHA_MIN 0.1
#define BIC_ALPHA_MAX 10.0
#define BIC_BETA_MAX 50.0

static int bic_fit(const float *lg, const int *y, int n, int C, int c0, float *alpha, float *beta)
{
	*alpha = 1.0f;
	*beta = 0.0f;
	for (size_t i = 0; i < (size_t)n * C; i++)
		if (!isfinite(lg[i]))
			return HDQT_ERANGE;
	double a = 1, b = 0, g[2], H[3];
	double f = bic_loss(lg, y, n, C, c0, a, b, g, H);
	for (int it = 0; it < 100 && isfinite(f); it++) {
		if (fabs(g[0]) < 1e-9 && fabs(g[1]) < 1e-9)
			break;
		const double det = H[0] * H[2] - H[1] * H[1]; /* > 0: the ridge makes H positive definite */
		const double da = -(H[2] * g[0] - H[1] * g[1]) / det;
		const double db = -(H[0] * g[1] - H[1] * g[0]) / det;
		double t = 1, fn = f;
		int moved = 0;
		for (int ls = 0; ls < 40; ls++, t *= 0.5) {
			if (a + t * da <= 1e-3)
				continue;
			fn = bic_loss(lg, y, n, C, c0, a + t * da, b + t * db, NULL, NULL);
			if (fn <= f + 1e-4 * t * (g[0] * da + g[1] * db)) {
				moved = 1;
				break;
			}
		}
		if (!moved)
			break;
		a += t * da;
		b += t * db;
		f = bic_loss(lg, y, n, C, c0, a, b, g, H);
	}
	if (!isfinite(a) || !isfinite(b) || !isfinite(f))
		return HDQT_ERANGE;
	/* A split of a few separable samples lets the fit run off (the ridge
	 * is small): a correction may tilt the new classes, not silence them
	 * or make every logit overflow. */
	*alpha = (float)(a < BIC_ALPHA_MIN ? BIC_ALPHA_MIN : a > BIC_ALPHA_MAX ? BIC_ALPHA_MAX : a);
	*beta = (float)(b < -BIC_BETA_MAX ? -BIC_BETA_MAX : b > BIC_BETA_MAX ? BIC_BETA_MAX : b);
	return 0;
}

/* BiC stage 3 of hdqt_cl_learn: fit alpha, beta on the nv held-out rows
 * (vidx into the task's rows) and set them on the model's new classes. */
static int bic_correct(hdqt_cl *cl, const float *X, const int *y, int n, const float *MX,
		       const int *My, const int *vidx, int nv, int old, int classes_after)
{
	hdqt_model *m = cl->model;
	/* The head may be wider than the classes learned so far (a model made
	 * with spare rows): logits come out head-wide, the fit reads the first
	 * classes_after of each row, and the spare rows stay the identity. */
	const int d = hdqt_model_n_in(m), C = classes_after, H = hdqt_model_n_classes(m);
	float *VX = malloc(sizeof(float) * (size_t)nv * d);
	int *vy = malloc(sizeof(int) * (size_t)nv);
	float *lg = malloc(sizeof(float) * (size_t)nv * H);
	float *A = malloc(sizeof(float) * (size_t)H), *B = malloc(sizeof(float) * (size_t)H);
	int rc = (VX && vy && lg && A && B) ? 0 : HDQT_ENOMEM;
	for (int j = 0; rc == 0 && j < nv; j++) {
		const int k = vidx[j];
		memcpy(VX + (size_t)j * d, k < n ? X + (size_t)k * d : MX + (size_t)(k - n) * d,
		       sizeof(float) * d);
		vy[j] = k < n ? y[k] : My[k - n];
	}
	/* The affine is the identity here (reset at the start of the task):
	 * these are the raw logits. */
	if (rc == 0)
		rc = hdqt_model_forward(m, VX, nv, lg);
	for (int j = 0; rc == 0 && H != C && j < nv; j++) /* rows of C logits, in place */
		memmove(lg + (size_t)j * C, lg + (size_t)j * H, sizeof(float) * (size_t)C);
	float alpha = 1, beta = 0;
	if (rc == 0)
		rc = bic_fit(lg, vy, nv, C, old, &alpha, &beta);
	if (rc == 0) {
		for (int c = 0; c < H; c++) {
			A[c] = c < old || c >= C ? 1.0f : alpha;
			B[c] = c < old || c >= C ? 0.0f : beta;
		}
		rc = hdqt_model_set_logit_affine(m, A, B);
	}
	free(VX);
	free(vy);
	free(lg);
	free(A);
	free(B);
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
	const int bic = meth == HDQT_CL_BIC && old > 0 && classes_after > old && mem_n > 0;
	int rc = 0, nv = 0;

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
	unsigned char *held = bic ? calloc((size_t)N, 1) : NULL;
	int *vidx = bic ? malloc(sizeof(int) * (size_t)N) : NULL;
	if (!MX || !My || !perm || !bX || !by || (kd && (!teach || !bT || !CX)) ||
	    (bic && (!held || !vidx))) {
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
	/* The teacher had its correction; the student trains on raw logits
	 * (the invariant at the top) and a task with new classes fits a new
	 * one.  A BiC round without a new class (the daemon's rounds of more
	 * samples of known classes) fits none: it keeps the last correction,
	 * whose imbalance of exemplars against new samples is still there,
	 * rather than dropping it. */
	if (!(meth == HDQT_CL_BIC && !bic) && (rc = hdqt_model_set_logit_affine(m, NULL, NULL)) < 0)
		goto out;
	if (classes_after > head_before && (rc = hdqt_model_add_classes(m, classes_after - head_before)) < 0)
		goto out;
	hdqt_model_reset_optimizer(m);
	if (bic && (nv = bic_split(cl, y, n, My, mem_n, old, classes_after, held)) < 0) {
		rc = nv;
		goto out;
	}
	/* perm holds the rows stage 1 trains on, vidx the held-out ones. */
	int NT = 0;
	for (int i = 0, j = 0; i < N; i++) {
		if (held && held[i])
			vidx[j++] = i;
		else
			perm[NT++] = i;
	}
	/* BiC's loss (1 - lambda) CE + lambda KD (Eq. 5) is (1 - lambda) times
	 * CE + lambda / (1 - lambda) KD, the loss the step computes.  Scaling
	 * the learning rate by (1 - lambda) and dividing the weight decay by
	 * it gives the very update of the scaled loss (momentum starts at 0
	 * each task, so v stays 1 / (1 - lambda) times the exact one). */
	hdqt_sgd sgd = cl->cfg.sgd;
	float kd_lambda = cl->cfg.kd_lambda, lr_scale = 1.0f;
	if (meth == HDQT_CL_BIC && kd && classes_after > old) {
		/* (A round without a new class, in the daemon, would have lambda
		 * = 1 and no CE at all: it keeps iCaRL's mix.) */
		const float lam = (float)old / (float)classes_after;
		kd_lambda = lam / (1.0f - lam);
		lr_scale = 1.0f - lam;
		sgd.weight_decay /= lr_scale;
	}
	if (NT < 1) { /* cannot happen: bic_split leaves every class a row */
		rc = HDQT_ESTATE;
		goto out;
	}
	double t0 = now_s();
	long trained = 0;
	for (int ep = 0; ep < cl->cfg.epochs; ep++) {
		for (int i = NT - 1; i > 0; i--) {
			int j = (int)hdqt_rng_below(&cl->rng, (uint32_t)(i + 1));
			int t = perm[i];
			perm[i] = perm[j];
			perm[j] = t;
		}
		const float lr = hdqt_sgd_lr_at(&cl->cfg.sgd, ep) * lr_scale;
		double loss_sum = 0;
		int nb = 0;
		/* ceil(N / B) batches of nearly equal size (e.g. 257 -> 86, 86, 85)
		 * rather than B, B, 1: a one-sample step carries B times the weight
		 * of a sample and, with momentum, can throw a small task off. */
		const int nbatch = (NT + B - 1) / B, base = NT / nbatch, extra = NT % nbatch;
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
					 .n_old = old, .kd_T = cl->cfg.kd_T, .kd_lambda = kd_lambda};
			float loss = 0;
			if ((rc = hdqt_model_train_step(m, &bt, &sgd, lr, &loss)) < 0)
				goto out;
			loss_sum += loss * lr_scale; /* BiC: the paper's loss, Eq. 5 */
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
	if (nv > 0 && (rc = bic_correct(cl, X, y, n, MX, My, vidx, nv, old, classes_after)) < 0)
		goto out;

	/* Memory update after the task. */
	if (uses_memory(meth) && cl->cfg.memory > 0) {
		int quota = hdqt_memory_quota(cl->mem, classes_after);
		if (meth == HDQT_CL_ICARL || meth == HDQT_CL_BIC) {
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
	free(held);
	free(vidx);
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
