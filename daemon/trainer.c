/* SPDX-License-Identifier: MIT */
/*
 * One incremental training round, on its own thread:
 *   1. read the pending samples (oldest first, up to max_round_samples), the
 *      current model and the exemplar memory from the database;
 *   2. hold out every k-th sample of each class for validation;
 *   3. learn the rest with the configured strategy (iCaRL by default);
 *   4. measure validation accuracy of the new and the current model on the
 *      held-out samples of all rounds; a drop of more than the margin keeps
 *      the new model out of service (stored, not current);
 *   5. commit model, exemplars and the samples' new state in one
 *      transaction, then hand the model to the loop thread.
 * A crash or cancel before step 5 leaves every sample pending.
 * A round that diverges three times (non-finite loss, each time with
 * another seed) quarantines its outlying samples (or, when none stands
 * out, all of them), so that one poisoned sample cannot stop training.
 *
 * Hand-over: the result belongs to the trainer until on_async takes it;
 * the round stays "running" until the loop's finished callback has applied
 * it, so a train or rollback in that window is refused, never lost.
 */
#include <math.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hdqt_data.h"
#include "hdqt_store.h"
#include "log.h"
#include "trainer.h"
#include "openset.h"

struct hdqtd_trainer {
	hdqtd_config cfg;
	hdqtd_trainer_cb cb;
	hdqt_store *store;
	uv_async_t async;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	/* under mu */
	int requested, quit;
	int finishing;              /* result handed over, not yet applied by the loop */
	hdqtd_progress prog;
	int started_pending, progress_pending;
	hdqtd_round_result *done;   /* finished round not yet given to the loop */
	atomic_int cancel;
	/* the training thread's own: the rounds rejected in a row, and the
	 * samples every one of them read (sorted) */
	int rejected_in_row;
	int64_t *rej_pids;
	int n_rej_pids;
};

const char *hdqtd_outcome_name(int o)
{
	static const char *const n[] = {"accepted", "rejected", "canceled", "failed", "empty"};
	return o >= 0 && o <= HDQTD_ROUND_EMPTY ? n[o] : "?";
}

static int cmp_id(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return x < y ? -1 : x > y;
}

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- loop side ---- */

static void on_async(uv_async_t *h)
{
	hdqtd_trainer *t = h->data;
	pthread_mutex_lock(&t->mu);
	hdqtd_progress p = t->prog;
	int st = t->started_pending, pr = t->progress_pending;
	hdqtd_round_result *r = t->done;
	t->started_pending = t->progress_pending = 0;
	t->done = NULL;
	pthread_mutex_unlock(&t->mu);
	if (st && t->cb.started)
		t->cb.started(t->cb.arg, &p);
	if (pr && !r && t->cb.progress)
		t->cb.progress(t->cb.arg, &p);
	if (r) {
		if (t->cb.finished)
			t->cb.finished(t->cb.arg, r);
		hdqt_model_free(r->model);
		free(r);
		/* Applied: only now is the trainer idle for the loop. */
		pthread_mutex_lock(&t->mu);
		t->finishing = 0;
		t->prog.running = 0;
		t->prog.canceling = 0;
		t->prog.rounds++;
		pthread_mutex_unlock(&t->mu);
	}
}

int hdqtd_trainer_request(hdqtd_trainer *t)
{
	pthread_mutex_lock(&t->mu);
	int rc = 0;
	if (t->requested || t->prog.running || t->finishing || t->quit)
		rc = HDQT_EBUSY;
	else {
		/* Visible as running from now on, so that train.status right after
		 * train never reads "idle". */
		t->requested = 1;
		t->prog.running = 1;
		t->prog.round = 0;
		t->prog.epoch = t->prog.epochs = t->prog.threads = 0;
		pthread_cond_signal(&t->cv);
	}
	pthread_mutex_unlock(&t->mu);
	return rc;
}

int hdqtd_trainer_cancel(hdqtd_trainer *t)
{
	pthread_mutex_lock(&t->mu);
	int running = (t->prog.running && !t->finishing) || t->requested;
	if (t->finishing) {
		/* done: nothing to cancel */
	} else if (t->requested) { /* not picked up by the thread yet */
		t->requested = 0;
		t->prog.running = 0;
	} else if (t->prog.running) {
		atomic_store(&t->cancel, 1);
		t->prog.canceling = 1;
	}
	pthread_mutex_unlock(&t->mu);
	return running;
}

void hdqtd_trainer_progress(hdqtd_trainer *t, hdqtd_progress *p)
{
	if (!t) {
		memset(p, 0, sizeof(*p));
		return;
	}
	pthread_mutex_lock(&t->mu);
	*p = t->prog;
	pthread_mutex_unlock(&t->mu);
}

/* ---- the round ---- */

static int progress_cb(void *arg, int epoch, int epochs, float loss)
{
	hdqtd_trainer *t = arg;
	pthread_mutex_lock(&t->mu);
	t->prog.epoch = epoch;
	t->prog.epochs = epochs;
	t->prog.loss = loss;
	t->progress_pending = 1;
	pthread_mutex_unlock(&t->mu);
	uv_async_send(&t->async);
	return atomic_load(&t->cancel);
}

/* Accuracy (percent) of m on X/y; labels the model does not have count as
 * errors.  per (may be NULL) gets per-label accuracy (NAN without samples). */
static double accuracy(hdqt_model *m, const float *X, const int *y, int n, int labels, float *per)
{
	if (n <= 0)
		return -1;
	int *pred = malloc(sizeof(int) * (size_t)n);
	int *hit = calloc((size_t)labels + 1, sizeof(int)), *tot = calloc((size_t)labels + 1, sizeof(int));
	double acc = -1;
	if (pred && hit && tot && hdqt_model_predict(m, X, n, pred) == 0) {
		int ok = 0;
		for (int i = 0; i < n; i++) {
			ok += pred[i] == y[i];
			if (y[i] < labels) {
				tot[y[i]]++;
				hit[y[i]] += pred[i] == y[i];
			}
		}
		acc = 100.0 * ok / n;
		for (int c = 0; per && c < labels; c++)
			per[c] = tot[c] ? 100.0f * (float)hit[c] / (float)tot[c] : NAN;
	}
	free(pred);
	free(hit);
	free(tot);
	return acc;
}

typedef struct round_data {
	hdqt_store_class *classes;
	int n_classes;
	float *P;                 /* pending */
	int64_t *pid, *pcls;
	int np;
	float *E;                 /* exemplars */
	int64_t *ecls;
	int ne;
	float *V;                 /* validation */
	int64_t *vcls;
	int nv;
} round_data;

static void round_data_free(round_data *r)
{
	free(r->classes);
	free(r->P);
	free(r->pid);
	free(r->pcls);
	free(r->E);
	free(r->ecls);
	free(r->V);
	free(r->vcls);
}

static int label_of(const round_data *r, int64_t class_id)
{
	for (int i = 0; i < r->n_classes; i++)
		if (r->classes[i].id == class_id)
			return r->classes[i].label;
	return -1;
}

static int64_t id_of(const round_data *r, int label)
{
	for (int i = 0; i < r->n_classes; i++)
		if (r->classes[i].label == label)
			return r->classes[i].id;
	return -1;
}

int hdqtd_trainer_cpus(void)
{
	/* The affinity mask, so that a daemon pinned to 2 CPUs of 16 (taskset,
	 * systemd's CPUAffinity=, a container's cpuset) counts 2.  It fails only
	 * beyond CPU_SETSIZE (1024) CPUs: then the online count. */
	cpu_set_t set;
	CPU_ZERO(&set);
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (n < 4096 ? (int)n : 4096) : 1;
}

/* training.threads, or by default all cores but one (which the loop keeps
 * for predictions) where there are more than two, else one.  Results do
 * not depend on it. */
static int training_threads(const hdqtd_config *c)
{
	if (c->threads > 0)
		return c->threads;
	const int n = hdqtd_trainer_cpus();
	return n > 2 ? (n - 1 < 64 ? n - 1 : 64) : 1;
}

/* The new model's open-set calibration on the round's validation rows
 * (its blob in *out, NULL when there is none: no validation rows, or a
 * failure, which costs the round nothing but the unknown flags). */
static void calibrate(const hdqtd_config *c, hdqt_model *m, const hdqt_memory *mem, int classes,
		      const float *VX, int nvx, int64_t round, uint8_t **out, size_t *len)
{
	if (nvx < 1) {
		*out = NULL;
		*len = 0;
		hdqtd_log(LOG_INFO, "round %lld: no validation samples: predictions carry no unknown flag",
			  (long long)round);
		return;
	}
	char what[160];
	int rc = hdqtd_openset_calibrate(c, m, mem, classes, VX, nvx, out, len, what, sizeof(what));
	if (rc < 0)
		hdqtd_log(LOG_WARNING, "round %lld: open-set calibration: %s", (long long)round,
			  hdqt_strerror(rc));
	else
		hdqtd_log(LOG_INFO, "round %lld: open-set calibration %s", (long long)round, what);
}

static void run_round(hdqtd_trainer *t, hdqtd_round_result *res, int attempt)
{
	const hdqtd_config *c = &t->cfg;
	const int d = HDQT_FEAT_DIM;
	round_data rd = {0};
	hdqt_model *cur = NULL;
	hdqt_cl *cl = NULL;
	int *y = NULL, *vy = NULL, *my = NULL, *lab = NULL;
	float *TX = NULL, *VX = NULL, *MX = NULL;
	int64_t *learned = NULL, *holdout = NULL, *mcls = NULL;
	uint8_t *blob = NULL, *nblob = NULL;
	size_t blen = 0, nlen = 0;
	const int threads = training_threads(c);
	int rc;
	double t0 = mono_s();
	res->outcome = HDQTD_ROUND_FAILED;
	res->val_acc = res->prev_acc = -1;
#if defined(__GLIBC__)
	/* What ingestion freed (parse trees, the writer's buffers, in the
	 * threads' arenas) goes back to the system before the round's own
	 * buffers are taken: the round's peak is then the round's. */
	malloc_trim(0);
#endif

	if ((rc = hdqt_store_class_list(t->store, &rd.classes, &rd.n_classes)) < 0 ||
	    (rc = hdqt_store_samples_pending(t->store, d, c->max_round_samples, &rd.P, &rd.pid,
					     &rd.pcls, &rd.np)) < 0 ||
	    (rc = hdqt_store_exemplars_load(t->store, d, &rd.E, &rd.ecls, &rd.ne)) < 0 ||
	    (rc = hdqt_store_validation_load(t->store, d, &rd.V, &rd.vcls, &rd.nv)) < 0) {
		snprintf(res->reason, sizeof(res->reason), "reading the database: %s",
			 hdqt_store_errmsg(t->store));
		goto out;
	}
	/* The round's samples, for a quarantine after three divergences. */
	free(res->pids);
	if ((res->pids = malloc(sizeof(int64_t) * (size_t)rd.np)) != NULL) {
		memcpy(res->pids, rd.pid, sizeof(int64_t) * (size_t)rd.np);
		res->n_pids = rd.np;
	}
	if (rd.np == 0) {
		res->outcome = HDQTD_ROUND_EMPTY;
		snprintf(res->reason, sizeof(res->reason), "no pending samples");
		goto out;
	}
	/* Split: every holdout_every-th sample of a class (by arrival) is held
	 * out.  In place, without copies of the round's rows (a round of
	 * 20,000 samples held three 13 MB copies): a first pass labels each
	 * pending sample (-1: skipped, -2 - label: held out), then the
	 * training rows are moved to the front of rd.P (TX) and the validation
	 * rows kept and the held-out ones appended in rd.V (VX). */
	lab = calloc((size_t)rd.n_classes + 1, sizeof(int));
	y = malloc(sizeof(int) * (size_t)rd.np);
	learned = malloc(sizeof(int64_t) * (size_t)rd.np);
	holdout = malloc(sizeof(int64_t) * (size_t)rd.np);
	if (!lab || !y || !learned || !holdout) {
		snprintf(res->reason, sizeof(res->reason), "out of memory");
		goto out;
	}
	int nt = 0, nh = 0, nvx = 0, max_label = -1;
	for (int i = 0; i < rd.np; i++) {
		int l = label_of(&rd, rd.pcls[i]);
		if (l < 0 || l >= HDQT_MAX_CLASSES) {
			y[i] = -1; /* cannot happen: samples reference classes by foreign key */
			continue;
		}
		int k = lab[l < rd.n_classes ? l : rd.n_classes]++;
		int out_ = c->holdout_every > 1 && k % c->holdout_every == c->holdout_every - 1;
		y[i] = out_ ? -2 - l : l;
		nh += out_;
	}
	vy = malloc(sizeof(int) * (size_t)(rd.nv + nh + 1));
	float *grown = realloc(rd.V, sizeof(float) * ((size_t)rd.nv + nh + 1) * d);
	if (!vy || !grown) {
		snprintf(res->reason, sizeof(res->reason), "out of memory");
		goto out;
	}
	rd.V = grown;
	for (int i = 0; i < rd.nv; i++) {
		int l = label_of(&rd, rd.vcls[i]);
		if (l < 0)
			continue;
		if (nvx != i)
			memcpy(rd.V + (size_t)nvx * d, rd.V + (size_t)i * d, sizeof(float) * d);
		vy[nvx++] = l;
	}
	nh = 0;
	for (int i = 0; i < rd.np; i++) {
		const int l = y[i];
		if (l == -1)
			continue;
		if (l <= -2) { /* row i is read before any later move overwrites it (nt <= i) */
			holdout[nh++] = rd.pid[i];
			memcpy(rd.V + (size_t)nvx * d, rd.P + (size_t)i * d, sizeof(float) * d);
			vy[nvx++] = -2 - l;
		} else {
			learned[nt] = rd.pid[i];
			if (nt != i)
				memcpy(rd.P + (size_t)nt * d, rd.P + (size_t)i * d, sizeof(float) * d);
			y[nt++] = l; /* nt <= i: y[i] was read above */
			max_label = l > max_label ? l : max_label;
		}
	}
	TX = rd.P;
	VX = rd.V;
	res->samples = nt;
	res->holdout = nh;
	res->val_samples = nvx;
	if (nt == 0) {
		res->outcome = HDQTD_ROUND_EMPTY;
		snprintf(res->reason, sizeof(res->reason), "all pending samples were held out");
		goto out;
	}

	/* The model to continue from, or a new one. */
	int64_t cur_version = 0;
	rc = hdqt_store_model_current(t->store, &blob, &blen, &cur_version);
	if (rc == 0) {
		if ((rc = hdqt_model_load(blob, blen, &cur)) < 0) {
			snprintf(res->reason, sizeof(res->reason), "current model %lld: %s",
				 (long long)cur_version, hdqt_strerror(rc));
			goto out;
		}
	} else if (rc != HDQT_ENOTFOUND) {
		snprintf(res->reason, sizeof(res->reason), "reading the model: %s",
			 hdqt_store_errmsg(t->store));
		goto out;
	}
	free(blob);
	blob = NULL;
	const int head = cur ? hdqt_model_n_classes(cur) : 0;
	const int classes_after = max_label + 1 > head ? max_label + 1 : head;
	res->classes = classes_after;
	hdqt_model *m = NULL;
	if (cur) {
		rc = hdqt_model_clone(cur, &m);
	} else {
		hdqt_qconfig q;
		hdqt_qconfig_default(&q, c->quant);
		q.bits = c->bits;
		q.acc_bits = c->acc_bits;
		if (c->beta_w >= 0)
			q.beta_w = c->beta_w;
		if (c->beta_a >= 0)
			q.beta_a = c->beta_a;
		hdqt_mlp_config mc = {.n_in = d, .n_hidden = c->n_hidden, .n_classes = classes_after};
		memcpy(mc.hidden, c->hidden, sizeof(int) * c->n_hidden);
		rc = hdqt_model_new(&m, &mc, &q, c->seed);
		if (rc == 0)
			rc = hdqt_model_fit_norm_robust(m, TX, nt, c->norm_clip);
	}
	if (rc == 0)
		rc = hdqt_model_set_threads(m, threads);
	if (rc < 0) {
		hdqt_model_free(m);
		snprintf(res->reason, sizeof(res->reason), "model: %s", hdqt_strerror(rc));
		goto out;
	}
	hdqt_cl_config cc;
	hdqt_cl_config_default(&cc);
	cc.method = c->strategy;
	cc.memory = c->memory;
	cc.epochs = c->epochs;
	cc.batch = c->batch;
	cc.sgd.lr = c->lr;
	cc.seed = c->seed + (uint64_t)res->round + 7919u * (uint64_t)attempt;
	if ((rc = hdqt_cl_new(&cl, m, &cc)) < 0) {
		hdqt_model_free(m);
		snprintf(res->reason, sizeof(res->reason), "learner: %s", hdqt_strerror(rc));
		goto out;
	}
	if (cur && (rc = hdqt_cl_resume(cl, head)) < 0)
		goto fail_rc;
	/* Restore the exemplar memory, class by class. */
	for (int i = 0; i < rd.ne;) {
		int j = i;
		while (j < rd.ne && rd.ecls[j] == rd.ecls[i])
			j++;
		int l = label_of(&rd, rd.ecls[i]);
		if (l >= 0 && l < head &&
		    (rc = hdqt_memory_set_class(hdqt_cl_memory(cl), l, rd.E + (size_t)i * d, j - i)) < 0)
			goto fail_rc;
		i = j;
	}
	pthread_mutex_lock(&t->mu);
	t->prog.samples = nt;
	t->prog.classes = classes_after;
	t->prog.epochs = c->epochs;
	t->prog.threads = threads;
	pthread_mutex_unlock(&t->mu);
	hdqtd_log(LOG_INFO, "round %lld: learning %d samples (%d held out), %d classes, from model %lld",
		  (long long)res->round, nt, nh, classes_after, (long long)cur_version);

	rc = hdqt_cl_learn(cl, TX, y, nt, classes_after, progress_cb, t);
	if (rc == HDQT_ECANCELED) {
		res->outcome = HDQTD_ROUND_CANCELED;
		snprintf(res->reason, sizeof(res->reason), "canceled");
		goto out;
	}
	if (rc == HDQT_ERANGE) {
		res->diverged = 1;
		snprintf(res->reason, sizeof(res->reason), "training diverged (non-finite loss)");
		goto out;
	}
	if (rc < 0)
		goto fail_rc;

	/* Validation, and the regression guard. */
	float per[HDQT_MAX_CLASSES];
	for (int l = 0; l < HDQT_MAX_CLASSES; l++)
		per[l] = NAN; /* stays so without validation samples */
	hdqt_model *nm = hdqt_cl_model(cl);
	res->val_acc = accuracy(nm, VX, vy, nvx, classes_after, per);
	res->prev_acc = cur ? accuracy(cur, VX, vy, nvx, classes_after, NULL) : -1;
	int accept = 1;
	if (cur && res->val_acc >= 0 && res->prev_acc >= 0 &&
	    res->val_acc < res->prev_acc - c->regression_margin) {
		accept = 0;
		snprintf(res->reason, sizeof(res->reason),
			 "validation accuracy %.2f%% is more than %.2f points below the current "
			 "model's %.2f%%", res->val_acc, c->regression_margin, res->prev_acc);
	}
	int o = snprintf(res->metrics, sizeof(res->metrics),
			 "{\"round\":%lld,\"train_samples\":%d,\"validation_samples\":%d,"
			 "\"validation_accuracy\":%.2f,\"previous_accuracy\":%.2f,\"seconds\":%.2f,"
			 "\"per_class\":[",
			 (long long)res->round, nt, nvx, res->val_acc, res->prev_acc, mono_s() - t0);
	/* A rejected version is marked so: the store prunes it before any
	 * version that served (see prune_models).  The list stops short (many
	 * classes) so that its end and the mark always fit: the metrics stay
	 * JSON. */
	const int tail = (int)sizeof("],\"rejected\":true}");
	for (int l = 0; l < classes_after && o < (int)sizeof(res->metrics) - 16 - tail; l++)
		o += snprintf(res->metrics + o, sizeof(res->metrics) - o, "%s%.1f", l ? "," : "",
			      isnan(per[l]) ? -1.0 : (double)per[l]);
	if (o < (int)sizeof(res->metrics) - tail)
		snprintf(res->metrics + o, sizeof(res->metrics) - o, "]%s}", accept ? "" : ",\"rejected\":true");
	char cfgjson[320];
	/* The recipe the model runs (a stored model keeps its own, whatever
	 * the configuration says now), with HadaNets' segments. */
	const hdqt_qconfig *mq = hdqt_model_qconfig(nm);
	char betas[64] = "";
	if (hdqt_mode_is_hadanet(mq->mode))
		snprintf(betas, sizeof(betas), ",\"beta_w\":%d,\"beta_a\":%d", mq->beta_w, mq->beta_a);
	snprintf(cfgjson, sizeof(cfgjson),
		 "{\"quant\":\"%s\",\"bits\":%d,\"acc_bits\":%d%s,\"strategy\":\"%s\",\"epochs\":%d}",
		 hdqt_mode_name(mq->mode), mq->bits, mq->acc_bits, betas, hdqt_cl_method_name(c->strategy),
		 c->epochs);
	if ((rc = hdqt_model_save(nm, &blob, &blen)) < 0)
		goto fail_rc;
	calibrate(c, nm, hdqt_cl_memory(cl), classes_after, VX, nvx, res->round, &nblob, &nlen);
	/* The new memory, labels mapped back to class ids (stored with the
	 * version also when it is rejected: a rollback to it brings it back). */
	int mn = hdqt_memory_size(hdqt_cl_memory(cl));
	MX = malloc(sizeof(float) * (size_t)(mn > 0 ? mn : 1) * d);
	my = malloc(sizeof(int) * (size_t)(mn > 0 ? mn : 1));
	mcls = malloc(sizeof(int64_t) * (size_t)(mn > 0 ? mn : 1));
	if (!MX || !my || !mcls) {
		rc = HDQT_ENOMEM;
		goto fail_rc;
	}
	hdqt_memory_export(hdqt_cl_memory(cl), MX, my);
	for (int i = 0; i < mn; i++)
		mcls[i] = id_of(&rd, my[i]);
	/* A rejected round changes no sample: they stay pending. */
	hdqt_store_round sr = {
		.blob = blob, .blob_len = blen, .config_json = cfgjson, .metrics_json = res->metrics,
		.make_current = accept, .learned = learned, .n_learned = accept ? nt : 0,
		.holdout = holdout, .n_holdout = accept ? nh : 0, .exemplar_class = mcls,
		.exemplars = MX, .n_exemplars = mn, .dim = d,
		.validation_per_class = accept ? c->validation_per_class : 0,
		.novelty = nblob, .novelty_len = nlen,
	};
	if ((rc = hdqt_store_round_commit(t->store, &sr, &res->model_version)) < 0) {
		snprintf(res->reason, sizeof(res->reason), "storing the round: %s",
			 hdqt_store_errmsg(t->store));
		goto out;
	}
	if (!accept) {
		res->outcome = HDQTD_ROUND_REJECTED;
		goto out;
	}
	for (int i = 0; i < rd.np; i++) {
		int l = label_of(&rd, rd.pcls[i]);
		if (l >= 0 && l < HDQT_MAX_CLASSES)
			res->consumed[l]++;
	}
	/* The serving copy predicts on the loop thread: one thread. */
	if ((rc = hdqt_model_clone(nm, &res->model)) < 0 ||
	    (rc = hdqt_model_set_threads(res->model, 1)) < 0) {
		hdqt_model_free(res->model);
		/* Stored and current in the database; the loop reloads it. */
		res->model = NULL;
	}
	res->outcome = HDQTD_ROUND_ACCEPTED;
	goto out;
fail_rc:
	snprintf(res->reason, sizeof(res->reason), "training: %s", hdqt_strerror(rc));
out:
	res->seconds = mono_s() - t0;
	hdqt_cl_free(cl);
	hdqt_model_free(cur);
	round_data_free(&rd);
	free(y);
	free(vy);
	free(my);
	free(lab);
	/* TX and VX are rd.P and rd.V, freed with rd */
	free(MX);
	free(learned);
	free(holdout);
	free(mcls);
	free(blob);
	free(nblob);
#if defined(__GLIBC__)
	malloc_trim(0); /* an idle box gives the round's memory back */
#endif
}

/* Median of the n values v (reordered). */
static float median(float *v, int n)
{
	/* Insertion into a sorted copy would be O(n^2); n is at most
	 * max_round_samples, so sort. */
	qsort(v, (size_t)n, sizeof(float), cmp_float);
	return n % 2 ? v[n / 2] : 0.5f * (v[n / 2 - 1] + v[n / 2]);
}

/* After three divergences: quarantine the round's samples that have a
 * feature more than QUARANTINE_Z robust standard deviations (1.4826 MAD)
 * from the round's median, or all of its samples when none does.  The
 * pending samples read again are the round's: no other round or
 * quarantine change runs meanwhile, and new samples come after them. */
#define QUARANTINE_Z 1e4
/* Rejected rounds in a row before their samples are quarantined: a batch
 * of wrong labels would otherwise be learned again, and rejected again, in
 * every round from then on, and nothing after it learned. */
#define REJECTIONS_TO_QUARANTINE 3
static void quarantine(hdqtd_trainer *t, hdqtd_round_result *res, int rejected)
{
	const int d = HDQT_FEAT_DIM;
	round_data rd = {0};
	float *col = NULL;
	unsigned char *bad = NULL;
	int64_t *ids = NULL;
	if (hdqt_store_class_list(t->store, &rd.classes, &rd.n_classes) < 0 ||
	    hdqt_store_samples_pending(t->store, d, t->cfg.max_round_samples, &rd.P, &rd.pid, &rd.pcls,
				       &rd.np) < 0) {
		hdqtd_log(LOG_ERR, "round %lld: reading its samples for quarantine: %s",
			  (long long)res->round, hdqt_store_errmsg(t->store));
		goto out;
	}
	/* Only the samples this round read: a sensor may have added more
	 * meanwhile (they come after, but LIMIT may not have cut them). */
	if (res->n_pids == 0) {
		hdqtd_log(LOG_ERR, "round %lld: its samples are unknown (out of memory): nothing "
			  "quarantined", (long long)res->round);
		goto out;
	}
	qsort(res->pids, (size_t)res->n_pids, sizeof(int64_t), cmp_id);
	{
		int k = 0;
		for (int i = 0; i < rd.np; i++) {
			if (!bsearch(&rd.pid[i], res->pids, (size_t)res->n_pids, sizeof(int64_t), cmp_id))
				continue;
			if (k != i) {
				memcpy(rd.P + (size_t)k * d, rd.P + (size_t)i * d, sizeof(float) * d);
				rd.pid[k] = rd.pid[i];
				rd.pcls[k] = rd.pcls[i];
			}
			k++;
		}
		rd.np = k;
	}
	if (rd.np == 0)
		goto out;
	col = malloc(sizeof(float) * (size_t)rd.np);
	bad = calloc((size_t)rd.np, 1);
	ids = malloc(sizeof(int64_t) * (size_t)rd.np);
	if (!col || !bad || !ids)
		goto out;
	int nbad = 0;
	for (int j = 0; j < d && !rejected; j++) { /* wrong labels stand out in no feature */
		for (int i = 0; i < rd.np; i++)
			col[i] = rd.P[(size_t)i * d + j];
		const float med = median(col, rd.np);
		for (int i = 0; i < rd.np; i++)
			col[i] = fabsf(rd.P[(size_t)i * d + j] - med);
		const double sd = 1.4826 * median(col, rd.np) + 1e-6 * fabs((double)med) + 1e-12;
		for (int i = 0; i < rd.np; i++)
			if (!bad[i] && fabs((double)rd.P[(size_t)i * d + j] - med) > QUARANTINE_Z * sd) {
				bad[i] = 1;
				nbad++;
			}
	}
	int n = 0;
	for (int i = 0; i < rd.np; i++)
		if (bad[i] || nbad == 0)
			ids[n++] = rd.pid[i];
	if (hdqt_store_quarantine(t->store, ids, n) < 0) {
		hdqtd_log(LOG_ERR, "round %lld: quarantining %d samples: %s", (long long)res->round, n,
			  hdqt_store_errmsg(t->store));
		goto out;
	}
	for (int i = 0; i < rd.np; i++)
		if (bad[i] || nbad == 0) {
			int l = label_of(&rd, rd.pcls[i]);
			if (l >= 0 && l < HDQT_MAX_CLASSES)
				res->consumed[l]++;
		}
	res->quarantined = n;
	if (rejected) {
		char why[sizeof(res->reason)];
		snprintf(why, sizeof(why), "%s", res->reason);
		snprintf(res->reason, sizeof(res->reason), "%.160s; rejected %d rounds in a row: the %d "
			 "samples all of them read quarantined", why, REJECTIONS_TO_QUARANTINE, n);
	} else
		snprintf(res->reason, sizeof(res->reason), "training diverged (non-finite loss) three "
			 "times; %d %s quarantined", n,
			 nbad ? "outlying samples" : "samples of the round (none stood out)");
out:
	round_data_free(&rd);
	free(col);
	free(bad);
	free(ids);
}

/* Any other outcome ends a run of rejected rounds.  Within one, only the
 * samples every round of it read count: those a sensor added meanwhile, or
 * an operator dropped or released, do not; after the third, those are
 * quarantined (none: the run goes on from this round). */
static void count_rejection(hdqtd_trainer *t, hdqtd_round_result *r)
{
	if (r->outcome != HDQTD_ROUND_REJECTED || atomic_load(&t->cancel) || !r->pids) {
		free(t->rej_pids);
		t->rej_pids = NULL;
		t->n_rej_pids = t->rejected_in_row = 0;
		return;
	}
	qsort(r->pids, (size_t)r->n_pids, sizeof(int64_t), cmp_id);
	if (t->rejected_in_row > 0) {
		int k = 0;
		for (int i = 0; i < t->n_rej_pids; i++)
			if (bsearch(&t->rej_pids[i], r->pids, (size_t)r->n_pids, sizeof(int64_t), cmp_id))
				t->rej_pids[k++] = t->rej_pids[i];
		t->n_rej_pids = k;
		if (k == 0) /* nothing in common: this round starts a run */
			t->rejected_in_row = 0;
	}
	if (t->rejected_in_row == 0) {
		free(t->rej_pids);
		t->n_rej_pids = 0;
		t->rej_pids = r->n_pids > 0 ? malloc(sizeof(int64_t) * (size_t)r->n_pids) : NULL;
		if (!t->rej_pids)
			return; /* no samples, or out of memory: no run counted */
		memcpy(t->rej_pids, r->pids, sizeof(int64_t) * (size_t)r->n_pids);
		t->n_rej_pids = r->n_pids;
	}
	if (++t->rejected_in_row < REJECTIONS_TO_QUARANTINE)
		return;
	/* quarantine() takes the round's samples from r->pids */
	int64_t *own = r->pids;
	const int n_own = r->n_pids;
	r->pids = t->rej_pids;
	r->n_pids = t->n_rej_pids;
	quarantine(t, r, 1);
	r->pids = own;
	r->n_pids = n_own;
	free(t->rej_pids);
	t->rej_pids = NULL;
	t->n_rej_pids = t->rejected_in_row = 0;
}

static void *thread_main(void *arg)
{
	hdqtd_trainer *t = arg;
	for (;;) {
		pthread_mutex_lock(&t->mu);
		while (!t->requested && !t->quit)
			pthread_cond_wait(&t->cv, &t->mu);
		if (t->quit) {
			pthread_mutex_unlock(&t->mu);
			break;
		}
		t->requested = 0;
		atomic_store(&t->cancel, 0);
		int64_t run = 0;
		pthread_mutex_unlock(&t->mu);
		if (hdqt_store_run_begin(t->store, &run) < 0)
			run = 0;
		pthread_mutex_lock(&t->mu);
		int64_t rounds = t->prog.rounds;
		memset(&t->prog, 0, sizeof(t->prog));
		t->prog.rounds = rounds;
		t->prog.running = 1;
		t->prog.canceling = 0;
		t->prog.round = run;
		t->prog.started = mono_s();
		t->started_pending = 1;
		pthread_mutex_unlock(&t->mu);
		uv_async_send(&t->async);

		hdqtd_round_result *r = calloc(1, sizeof(*r));
		if (r) {
			r->round = run;
			/* 4-bit training with 8-bit accumulators can, rarely, diverge;
			 * another stochastic-rounding stream usually does not. */
			for (int attempt = 0; attempt < 3; attempt++) {
				free(r->pids);
				memset(r, 0, sizeof(*r));
				r->round = run;
				run_round(t, r, attempt);
				if (!r->diverged || atomic_load(&t->cancel))
					break;
				hdqtd_log(LOG_WARNING, "round %lld diverged (attempt %d); retrying with "
					  "another seed", (long long)run, attempt + 1);
			}
			if (r->diverged && !atomic_load(&t->cancel))
				quarantine(t, r, 0);
			count_rejection(t, r);
			free(r->pids); /* the loop gets the result without them */
			r->pids = NULL;
			r->n_pids = 0;
			char fig[640];
			snprintf(fig, sizeof(fig), "{\"reason\":\"%s\",\"metrics\":%s}",
				 r->outcome == HDQTD_ROUND_REJECTED ? "regression" : "",
				 r->metrics[0] ? r->metrics : "null");
			if (run && hdqt_store_run_end(t->store, run, hdqtd_outcome_name(r->outcome), fig) < 0)
				hdqtd_log(LOG_WARNING, "round %lld: could not record its outcome: %s",
					  (long long)run, hdqt_store_errmsg(t->store));
		}
		pthread_mutex_lock(&t->mu);
		if (r) {
			/* No request is taken while a result waits (finishing), so
			 * t->done is free: the loop has applied the previous one. */
			t->done = r;
			t->finishing = 1;
		} else {
			t->prog.running = 0; /* out of memory: nothing to hand over */
			t->prog.canceling = 0;
			t->prog.rounds++;
		}
		pthread_mutex_unlock(&t->mu);
		uv_async_send(&t->async);
	}
	return NULL;
}

int hdqtd_trainer_start(hdqtd_trainer **out, uv_loop_t *loop, const hdqtd_config *cfg,
			const hdqtd_trainer_cb *cb, char *err, size_t errlen)
{
	hdqtd_trainer *t = calloc(1, sizeof(*t));
	if (!t)
		return HDQT_ENOMEM;
	t->cfg = *cfg;
	t->cb = *cb;
	hdqt_store_opts so;
	hdqtd_config_store_opts(cfg, &so);
	so.busy_timeout_ms = 10000; /* a round's commit may wait for the writer's */
	so.quick_check = 0;         /* the loop's connection checked the file */
	int rc = hdqt_store_open(&t->store, cfg->db, &so, err, errlen);
	if (rc < 0) {
		free(t);
		return rc;
	}
	pthread_mutex_init(&t->mu, NULL);
	pthread_cond_init(&t->cv, NULL);
	if ((rc = uv_async_init(loop, &t->async, on_async)) < 0) {
		snprintf(err, errlen, "uv_async_init: %s", uv_strerror(rc));
		hdqt_store_close(t->store);
		free(t);
		return HDQT_EIO;
	}
	t->async.data = t;
	if ((rc = pthread_create(&t->thread, NULL, thread_main, t)) != 0) {
		snprintf(err, errlen, "pthread_create: %s", strerror(rc));
		uv_close((uv_handle_t *)&t->async, NULL);
		hdqt_store_close(t->store);
		/* t is freed by the close callback's owner: leak it rather than
		 * free memory the loop still references until the handle closes. */
		return HDQT_ENOMEM;
	}
	*out = t;
	return 0;
}

static void on_async_closed(uv_handle_t *h)
{
	hdqtd_trainer *t = h->data;
	if (t->done) {
		hdqt_model_free(t->done->model);
		free(t->done);
	}
	free(t->rej_pids);
	pthread_mutex_destroy(&t->mu);
	pthread_cond_destroy(&t->cv);
	free(t);
}

void hdqtd_trainer_stop(hdqtd_trainer *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->mu);
	t->quit = 1;
	t->requested = 0;
	atomic_store(&t->cancel, 1);
	pthread_cond_signal(&t->cv);
	pthread_mutex_unlock(&t->mu);
	pthread_join(t->thread, NULL);
	hdqt_store_close(t->store);
	t->store = NULL;
	uv_close((uv_handle_t *)&t->async, on_async_closed);
}
