/* SPDX-License-Identifier: MIT */
/*
 * JSON-RPC methods (proto/PROTOCOL.md).  Each handler validates everything
 * before it changes anything, so a request that fails changed nothing; a
 * request that succeeded has been committed to the database.
 *
 * Reads run on the loop thread.  Writes are jobs for the writer thread
 * (writer.h): the handler checks what it can on the loop, submits a job
 * and returns with *async set; the job's done() applies the result to the
 * loop's state (class cache, counts, serving model) and hands the reply to
 * the connection.  Until then the job owns its data; the request's params
 * stay alive because the connection keeps its line until the reply.
 * Counts of pending samples are kept here, changed by exactly the writes
 * and rounds that change them; a rollback or quarantine change is never in
 * flight together with a round (d->exclusive), so no delta is lost.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "daemon.h"
#include "log.h"

typedef hdqtd_reply reply;
typedef hdqtd_call call;

cJSON *hdqtd_fail(reply *r, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
	va_end(ap);
	r->code = code;
	return NULL;
}
#define fail hdqtd_fail

static cJSON *store_fail(hdqtd *d, reply *r, int rc)
{
	if (rc == HDQT_EFULL)
		return fail(r, HDQT_RPC_LIMIT, "storage limit reached: %s", hdqt_store_errmsg(d->store));
	if (rc == HDQT_ERANGE || rc == HDQT_EINVAL)
		return fail(r, HDQT_RPC_INVALID_PARAMS, "%s", hdqt_store_errmsg(d->store));
	hdqtd_log(LOG_ERR, "database: %s", hdqt_store_errmsg(d->store));
	return fail(r, HDQT_RPC_STORAGE, "database error (nothing was changed): %s",
		    hdqt_store_errmsg(d->store));
}

double hdqtd_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- state helpers ---- */

int hdqtd_reload_classes(hdqtd *d)
{
	hdqt_store_class *cls = NULL;
	int n = 0;
	int rc = hdqt_store_class_list(d->store, &cls, &n);
	if (rc < 0)
		return rc;
	free(d->classes);
	d->classes = cls;
	d->n_classes = n;
	return 0;
}

static const hdqt_store_class *class_by_name(hdqtd *d, const char *name)
{
	for (int i = 0; i < d->n_classes; i++)
		if (strcmp(d->classes[i].name, name) == 0)
			return &d->classes[i];
	return NULL;
}

static const hdqt_store_class *class_by_label(hdqtd *d, int label)
{
	for (int i = 0; i < d->n_classes; i++)
		if (d->classes[i].label == label)
			return &d->classes[i];
	return NULL;
}

/* Recompute d->learned from the stored exemplars and validation samples. */
static void refresh_learned(hdqtd *d)
{
	free(d->learned);
	d->learned = NULL;
	d->n_learned = 0;
	if (!d->model)
		return;
	const int C = hdqt_model_n_classes(d->model);
	unsigned char *l = calloc((size_t)C, 1);
	int64_t *ids = NULL;
	int n = 0, any = 0;
	if (!l || hdqt_store_learned_classes(d->store, &ids, &n) < 0) {
		free(l);
		return;
	}
	for (int i = 0; i < n; i++)
		for (int k = 0; k < d->n_classes; k++)
			if (d->classes[k].id == ids[i] && d->classes[k].label < C) {
				any |= !l[d->classes[k].label];
				l[d->classes[k].label] = 1;
			}
	free(ids);
	if (!any) { /* e.g. LwF without held-out samples: nothing to go by */
		free(l);
		return;
	}
	d->learned = l;
	d->n_learned = C;
}

static int label_of_id(hdqtd *d, int64_t class_id)
{
	for (int i = 0; i < d->n_classes; i++)
		if (d->classes[i].id == class_id)
			return d->classes[i].label;
	return -1;
}

int hdqtd_load_counts(hdqtd *d)
{
	int64_t *ids = NULL, *cnt = NULL;
	int n = 0;
	int rc = hdqt_store_pending_by_class(d->store, &ids, &cnt, &n);
	if (rc < 0)
		return rc;
	memset(d->pending, 0, sizeof(d->pending));
	d->pending_total = 0;
	for (int i = 0; i < n; i++) {
		int l = label_of_id(d, ids[i]);
		if (l >= 0 && l < HDQT_MAX_CLASSES)
			d->pending[l] += cnt[i];
		d->pending_total += cnt[i];
	}
	free(ids);
	free(cnt);
	return hdqt_store_quarantine_count(d->store, &d->quarantined);
}

/* May label be predicted: active, and learned when that is known. */
static int predictable(hdqtd *d, int label)
{
	const hdqt_store_class *c = class_by_label(d, label);
	return c && c->active && (!d->learned || (label < d->n_learned && d->learned[label]));
}

static void set_metrics(hdqtd *d, const char *json)
{
	cJSON_Delete(d->metrics);
	d->metrics = json ? cJSON_Parse(json) : NULL;
}

int hdqtd_load_model(hdqtd *d)
{
	uint8_t *blob = NULL;
	size_t len = 0;
	int64_t v = 0;
	int rc = hdqt_store_model_current(d->store, &blob, &len, &v);
	if (rc == HDQT_ENOTFOUND)
		return 0;
	if (rc < 0)
		return rc;
	hdqt_model *m = NULL;
	rc = hdqt_model_load(blob, len, &m);
	free(blob);
	if (rc < 0)
		return rc;
	if (hdqt_model_n_in(m) != HDQT_FEAT_DIM) {
		hdqt_model_free(m);
		return HDQT_EFORMAT;
	}
	hdqt_model_free(d->model);
	d->model = m;
	d->model_version = v;
	hdqt_store_model *ms = NULL;
	int n = 0;
	set_metrics(d, NULL);
	if (hdqt_store_model_list(d->store, &ms, &n) == 0) {
		for (int i = 0; i < n; i++)
			if (ms[i].version == v)
				set_metrics(d, ms[i].metrics);
		free(ms);
	}
	refresh_learned(d);
	hdqtd_openset_load(d);
	if (hdqt_store_counts(d->store, &d->n_exemplars, &d->n_validation) < 0)
		hdqtd_log(LOG_WARNING, "counting exemplars: %s", hdqt_store_errmsg(d->store));
	return 0;
}

void hdqtd_install_model(hdqtd *d, hdqt_model *m, int64_t version, const char *metrics_json)
{
	hdqt_model_free(d->model);
	d->model = m; /* the swap: the next request sees the new model */
	d->model_version = version;
	set_metrics(d, metrics_json);
	refresh_learned(d);
	hdqtd_openset_load(d);
	if (hdqt_store_counts(d->store, &d->n_exemplars, &d->n_validation) < 0)
		hdqtd_log(LOG_WARNING, "counting exemplars: %s", hdqt_store_errmsg(d->store));
}

static cJSON *class_json(hdqtd *d, const hdqt_store_class *c, int detail)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "name", c->name);
	cJSON_AddNumberToObject(o, "label", c->label);
	cJSON_AddBoolToObject(o, "active", c->active);
	cJSON_AddNumberToObject(o, "created", (double)c->created);
	if (detail) {
		if (c->label >= 0 && c->label < HDQT_MAX_CLASSES)
			cJSON_AddNumberToObject(o, "samples_pending", (double)d->pending[c->label]);
		const cJSON *per = cJSON_GetObjectItemCaseSensitive(d->metrics, "per_class");
		const cJSON *acc = cJSON_GetArrayItem(per, c->label);
		cJSON_AddBoolToObject(o, "trained", d->model && c->label < hdqt_model_n_classes(d->model) &&
					   (!d->learned || (c->label < d->n_learned && d->learned[c->label])));
		if (cJSON_IsNumber(acc) && acc->valuedouble >= 0 && d->model &&
		    c->label < hdqt_model_n_classes(d->model))
			cJSON_AddNumberToObject(o, "validation_accuracy", acc->valuedouble);
		else
			cJSON_AddNullToObject(o, "validation_accuracy");
	}
	return o;
}

static cJSON *training_json(hdqtd *d)
{
	hdqtd_progress p;
	hdqtd_trainer_progress(d->trainer, &p);
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "state", p.canceling ? "canceling" : p.running ? "running" : "idle");
	if (p.running) {
		cJSON_AddNumberToObject(o, "round", (double)p.round);
		cJSON_AddNumberToObject(o, "epoch", p.epoch);
		cJSON_AddNumberToObject(o, "epochs", p.epochs);
		cJSON_AddNumberToObject(o, "loss", isfinite(p.loss) ? p.loss : -1);
		cJSON_AddNumberToObject(o, "samples", p.samples);
		cJSON_AddNumberToObject(o, "elapsed_s", hdqtd_now() - p.started);
	}
	cJSON_AddNumberToObject(o, "rounds", (double)p.rounds);
	cJSON_AddBoolToObject(o, "auto", d->cfg.auto_train);
	if (d->metrics)
		cJSON_AddItemToObject(o, "last", cJSON_Duplicate(d->metrics, 1));
	else
		cJSON_AddNullToObject(o, "last");
	return o;
}

/* ---- parameter helpers ---- */

static const char *str_param(const cJSON *params, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(params, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The four forms of an input, exactly one per input object: numbers, or
 * the same floats as base64 of little-endian binary32 (hdqt_rpc_f32). */
static const char *const input_keys[] = {"features", "window", "features_f32", "window_f32"};

/* The readings of a window -> out[HDQT_FEAT_DIM], with the range checks. */
static int window_features(hdqt_feat *feat, const int W, const cJSON *w, int f32, float *out,
			   reply *r, const char *what)
{
	float *rows = malloc(sizeof(float) * (size_t)W * 6);
	if (!rows) {
		fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
		return -1;
	}
	char err[160];
	int rc;
	if (!f32) {
		rc = hdqt_rpc_window(w, W, 6, rows, err, sizeof(err));
	} else {
		int bad;
		rc = hdqt_rpc_f32(w, rows, W * 6, &bad);
		if (rc == HDQT_ENOMEM) {
			free(rows);
			fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
			return -1;
		}
		if (rc == HDQT_ERANGE)
			snprintf(err, sizeof(err), "window_f32 row %d column %d is not a finite number",
				 bad / 6, bad % 6);
		else if (rc < 0)
			snprintf(err, sizeof(err),
				 "window_f32 must be padded base64 of %d little-endian float32 "
				 "(window %d rows x 6, %d bytes, %d characters; got %s)", W * 6, W,
				 W * 24, W * 32,
				 cJSON_IsString(w) ? "another length or not base64" : "no string");
		rc = rc < 0 ? rc : 0;
	}
	if (rc < 0)
		fail(r, HDQT_RPC_INVALID_PARAMS, "%s: %s", what, err);
	for (int i = 0; rc == 0 && i < W * 6; i++)
		if (fabsf(rows[i]) > HDQTD_READING_MAX) {
			fail(r, HDQT_RPC_INVALID_PARAMS,
			     "%s: %s row %d column %d = %g is outside the plausible range +-%g "
			     "(readings are g and rad/s)", what, f32 ? "window_f32" : "window", i / 6,
			     i % 6, (double)rows[i], HDQTD_READING_MAX);
			rc = HDQT_ERANGE;
		}
	if (rc == 0)
		rc = hdqt_feat_extract(feat, rows, out);
	free(rows);
	if (rc < 0 && r->code == 0)
		fail(r, HDQT_RPC_INVALID_PARAMS, "%s: window readings must be finite numbers", what);
	return rc < 0 ? -1 : 0;
}

/* One input object (features, window, or their _f32 forms) -> out[HDQT_FEAT_DIM]. */
static int input_features_with(hdqt_feat *feat, int window, const cJSON *o, float *out, reply *r,
			       const char *what)
{
	const cJSON *v[4];
	int given = 0, form = -1;
	for (int i = 0; i < 4; i++)
		if ((v[i] = cJSON_GetObjectItemCaseSensitive(o, input_keys[i])))
			given++, form = i;
	if (!cJSON_IsObject(o) || given != 1) {
		fail(r, HDQT_RPC_INVALID_PARAMS,
		     "%s: give exactly one of \"features\", \"window\", \"features_f32\" or "
		     "\"window_f32\"", what);
		return -1;
	}
	if (form == 1 || form == 3)
		return window_features(feat, window, v[form], form == 3, out, r, what);
	int bad, n;
	if (form == 0) {
		n = hdqt_rpc_floats(v[0], out, HDQT_FEAT_DIM, &bad);
	} else {
		n = hdqt_rpc_f32(v[2], out, HDQT_FEAT_DIM, &bad);
		if (n == HDQT_ENOMEM) {
			fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
			return -1;
		}
		if (n == HDQT_EINVAL) {
			fail(r, HDQT_RPC_INVALID_PARAMS,
			     "%s: features_f32 must be padded base64 of %d little-endian float32 "
			     "(%d bytes, %d characters; got %s)", what, HDQT_FEAT_DIM, HDQT_FEAT_DIM * 4,
			     (HDQT_FEAT_DIM * 4 + 2) / 3 * 4,
			     cJSON_IsString(v[2]) ? "another length or not base64" : "no string");
			return -1;
		}
	}
	const char *key = input_keys[form];
	if (n == HDQT_ERANGE) {
		fail(r, HDQT_RPC_INVALID_PARAMS, "%s: %s[%d] is not a finite number", what, key, bad);
		return -1;
	}
	for (int i = 0; n == HDQT_FEAT_DIM && i < n; i++)
		if (fabsf(out[i]) > HDQTD_FEATURE_MAX) {
			fail(r, HDQT_RPC_INVALID_PARAMS,
			     "%s: %s[%d] = %g is outside the plausible range +-%g", what, key, i,
			     (double)out[i], HDQTD_FEATURE_MAX);
			return -1;
		}
	if (n != HDQT_FEAT_DIM) {
		fail(r, HDQT_RPC_INVALID_PARAMS,
		     "%s: features must be an array of %d numbers (got %s)", what, HDQT_FEAT_DIM,
		     n >= 0 || bad >= HDQT_FEAT_DIM ? (bad >= HDQT_FEAT_DIM ? "more" : "fewer")
						   : "a non-number");
		return -1;
	}
	return 0;
}

static int input_features(hdqtd *d, const cJSON *o, float *out, reply *r, const char *what)
{
	return input_features_with(d->feat, d->cfg.window, o, out, r, what);
}

/* ---- jobs for the writer thread ---- */

enum { JOB_SAMPLES, JOB_CLASS_ADD, JOB_CLASS_REMOVE, JOB_ROLLBACK, JOB_QUARANTINE };

typedef struct mjob {
	hdqtd_job job;
	hdqtd *d;
	hdqtd_conn *c;
	cJSON *id;                /* the request's id (copy); NULL: a notification */
	int notify, kind, window, exclusive;
	reply r;                  /* set by run() on failure */
	int rc;                   /* store result */
	char err[256];            /* the writer store's message */
	/* JOB_SAMPLES: params stay owned by the connection's line */
	const cJSON *list, *one;
	int n, n_bad_label;
	int64_t *ids;             /* class id per sample */
	int *labels;
	float *X;
	char batch_id[HDQT_BATCH_ID_MAX + 1];
	int64_t dup;
	/* JOB_CLASS_*: the class list after the change */
	char name[HDQT_CLASS_NAME_MAX + 1];
	int reactivate;
	hdqt_store_class *classes;
	int n_classes;
	/* JOB_ROLLBACK */
	int64_t version, prev;
	/* JOB_QUARANTINE */
	int release;
	int64_t *qids;
	int nq;
	int64_t changed;
	int64_t *pc_ids, *pc_cnt; /* pending per class afterwards */
	int n_pc;
	int64_t quarantined;
} mjob;

static void job_free(mjob *j)
{
	cJSON_Delete(j->id);
	free(j->ids);
	free(j->labels);
	free(j->X);
	free(j->classes);
	free(j->qids);
	free(j->pc_ids);
	free(j->pc_cnt);
	free(j);
}

static void job_done(hdqtd_job *hj);

/* The response of a request answered after work off the loop: the result
 * (taken), else the failure in r; NULL for a notification (or nobody to
 * answer). */
cJSON *hdqtd_late_reply(const cJSON *id, int no_reply, cJSON *res, const reply *r)
{
	if (no_reply) {
		cJSON_Delete(res);
		return NULL;
	}
	if (res)
		return hdqt_rpc_result(id, res);
	return hdqt_rpc_error(id, r->code ? r->code : HDQT_RPC_INTERNAL_ERROR,
			      r->code ? r->msg : "out of memory", NULL);
}

/* Start j on the writer; the request is answered by job_done. */
static cJSON *submit(hdqtd *d, hdqtd_conn *c, mjob *j, const cJSON *id, int notify, int *async)
{
	j->d = d;
	j->c = c;
	j->notify = notify;
	if (!notify && !(j->id = id ? cJSON_Duplicate(id, 1) : cJSON_CreateNull())) {
		job_free(j);
		return hdqt_rpc_error(id, HDQT_RPC_INTERNAL_ERROR, "out of memory", NULL);
	}
	j->job.done = job_done;
	if (j->exclusive)
		d->exclusive++;
	hdqtd_writer_submit(d->writer, &j->job);
	*async = 1;
	return NULL;
}

static void store_failed(mjob *j, hdqt_store *s, int rc)
{
	j->rc = rc;
	snprintf(j->err, sizeof(j->err), "%s", hdqt_store_errmsg(s));
}

static void run_samples(hdqtd_job *hj, hdqt_store *s, hdqt_feat *f)
{
	mjob *j = (mjob *)hj;
	const cJSON *it = j->list ? j->list->child : j->one;
	for (int i = 0; i < j->n; i++, it = it->next) {
		char what[48];
		snprintf(what, sizeof(what), j->list ? "samples[%d]" : "sample", i);
		if (input_features_with(f, j->window, it, j->X + (size_t)i * HDQT_FEAT_DIM, &j->r, what) < 0)
			return;
	}
	int rc = hdqt_store_samples_add_batch(s, j->ids, j->X, j->n, HDQT_FEAT_DIM,
					      j->batch_id[0] ? j->batch_id : NULL, &j->dup);
	if (rc < 0)
		store_failed(j, s, rc);
}

static void run_class(hdqtd_job *hj, hdqt_store *s, hdqt_feat *f)
{
	(void)f;
	mjob *j = (mjob *)hj;
	int rc;
	if (j->kind == JOB_CLASS_REMOVE || j->reactivate)
		rc = hdqt_store_class_set_active(s, j->name, j->kind == JOB_CLASS_ADD);
	else
		rc = hdqt_store_class_add(s, j->name, NULL);
	if (rc < 0) {
		store_failed(j, s, rc);
		return;
	}
	/* The change is committed: a failed re-read must not turn it into an
	 * error reply; the loop then keeps its old cache and says so. */
	if (hdqt_store_class_list(s, &j->classes, &j->n_classes) < 0) {
		j->classes = NULL;
		snprintf(j->err, sizeof(j->err), "%s", hdqt_store_errmsg(s));
	}
}

static void run_rollback(hdqtd_job *hj, hdqt_store *s, hdqt_feat *f)
{
	(void)f;
	mjob *j = (mjob *)hj;
	int rc = hdqt_store_model_rollback(s, j->version);
	if (rc < 0)
		store_failed(j, s, rc);
}

static void run_quarantine(hdqtd_job *hj, hdqt_store *s, hdqt_feat *f)
{
	(void)f;
	mjob *j = (mjob *)hj;
	int rc = hdqt_store_quarantine_resolve(s, j->qids, j->nq, j->release, &j->changed);
	if (rc < 0) {
		store_failed(j, s, rc);
		return;
	}
	/* No round runs meanwhile (d->exclusive): these counts are exact. */
	if (hdqt_store_pending_by_class(s, &j->pc_ids, &j->pc_cnt, &j->n_pc) < 0 ||
	    hdqt_store_quarantine_count(s, &j->quarantined) < 0) {
		j->n_pc = -1;
		snprintf(j->err, sizeof(j->err), "%s", hdqt_store_errmsg(s));
	}
}

/* The store's error as a reply (message taken from the writer's connection). */
static void job_store_fail(mjob *j)
{
	reply *r = &j->r;
	if (j->rc == HDQT_EFULL)
		fail(r, HDQT_RPC_LIMIT, "storage limit reached: %s", j->err);
	else if (j->rc == HDQT_ERANGE || j->rc == HDQT_EINVAL)
		fail(r, HDQT_RPC_INVALID_PARAMS, "%s", j->err);
	else if (j->rc == HDQT_ENOTFOUND && j->kind == JOB_SAMPLES)
		fail(r, HDQT_RPC_UNKNOWN_CLASS, "%s (nothing was stored)", j->err);
	else if (j->rc == HDQT_ENOTFOUND && j->kind == JOB_ROLLBACK)
		fail(r, HDQT_RPC_NOT_FOUND, "no stored model version %lld", (long long)j->version);
	else if (j->rc == HDQT_EEXIST && j->kind == JOB_CLASS_ADD)
		fail(r, HDQT_RPC_CLASS_EXISTS, "class \"%s\" exists", j->name);
	else {
		hdqtd_log(LOG_ERR, "database: %s", j->err);
		fail(r, HDQT_RPC_STORAGE, "database error (nothing was changed): %s", j->err);
	}
}

static void apply_classes(hdqtd *d, mjob *j)
{
	if (!j->classes) {
		hdqtd_log(LOG_ERR, "reloading classes after \"%s\": %s", j->name, j->err);
		return;
	}
	free(d->classes);
	d->classes = j->classes;
	d->n_classes = j->n_classes;
	j->classes = NULL;
}

static cJSON *done_samples(hdqtd *d, mjob *j)
{
	if (j->dup) {
		hdqtd_log(LOG_INFO, "sample.add: batch \"%s\" was stored before: acknowledged again",
			  j->batch_id);
	} else {
		for (int i = 0; i < j->n; i++)
			if (j->labels[i] >= 0 && j->labels[i] < HDQT_MAX_CLASSES)
				d->pending[j->labels[i]]++;
		d->pending_total += j->n;
		d->stats.samples_ingested += (uint64_t)j->n;
	}
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	cJSON_AddNumberToObject(o, "accepted", j->dup ? (double)j->dup : j->n);
	cJSON_AddNumberToObject(o, "samples_pending", (double)d->pending_total);
	if (j->batch_id[0])
		cJSON_AddBoolToObject(o, "duplicate", j->dup != 0);
	return o;
}

static cJSON *done_class(hdqtd *d, mjob *j)
{
	apply_classes(d, j);
	const int add = j->kind == JOB_CLASS_ADD;
	const hdqt_store_class *now = class_by_name(d, j->name);
	hdqtd_log(LOG_INFO, "class \"%s\" %s%s", j->name,
		  add ? (j->reactivate ? "reactivated" : "added") : "removed", now ? "" : " (not cached)");
	cJSON *ev = cJSON_CreateObject();
	if (ev) {
		cJSON_AddStringToObject(ev, "name", j->name);
		if (add && now)
			cJSON_AddNumberToObject(ev, "label", now->label);
	}
	hdqtd_broadcast(d, hdqt_rpc_event(add ? "class.added" : "class.removed", ev));
	return now ? class_json(d, now, 0) : fail(&j->r, HDQT_RPC_STORAGE, "class vanished");
}

static cJSON *done_rollback(hdqtd *d, mjob *j)
{
	int rc = hdqtd_load_model(d);
	if (rc < 0)
		return fail(&j->r, HDQT_RPC_STORAGE, "model %lld is current in the database, but loading "
			    "it failed (%s); restart hdqtd", (long long)j->version, hdqt_strerror(rc));
	hdqtd_log(LOG_NOTICE, "model rolled back from version %lld to %lld", (long long)j->prev,
		  (long long)j->version);
	cJSON *ev = cJSON_CreateObject();
	if (ev) {
		cJSON_AddNumberToObject(ev, "model_version", (double)j->version);
		cJSON_AddNumberToObject(ev, "previous", (double)j->prev);
		cJSON_AddStringToObject(ev, "reason", "rollback");
	}
	hdqtd_broadcast(d, hdqt_rpc_event("model.swapped", ev));
	cJSON *o = cJSON_CreateObject();
	if (o)
		cJSON_AddNumberToObject(o, "model_version", (double)j->version);
	return o;
}

static cJSON *done_quarantine(hdqtd *d, mjob *j)
{
	if (j->n_pc >= 0) {
		memset(d->pending, 0, sizeof(d->pending));
		d->pending_total = 0;
		for (int i = 0; i < j->n_pc; i++) {
			int l = label_of_id(d, j->pc_ids[i]);
			if (l >= 0 && l < HDQT_MAX_CLASSES)
				d->pending[l] += j->pc_cnt[i];
			d->pending_total += j->pc_cnt[i];
		}
		d->quarantined = j->quarantined;
	} else {
		hdqtd_log(LOG_ERR, "recounting samples: %s", j->err);
	}
	hdqtd_log(LOG_NOTICE, "%lld quarantined samples %s", (long long)j->changed,
		  j->release ? "released (pending again)" : "dropped");
	cJSON *o = cJSON_CreateObject();
	if (o) {
		cJSON_AddNumberToObject(o, j->release ? "released" : "dropped", (double)j->changed);
		cJSON_AddNumberToObject(o, "samples_quarantined", (double)d->quarantined);
		cJSON_AddNumberToObject(o, "samples_pending", (double)d->pending_total);
	}
	return o;
}

static void job_done(hdqtd_job *hj)
{
	mjob *j = (mjob *)hj;
	hdqtd *d = j->d;
	cJSON *res = NULL;
	if (j->exclusive)
		d->exclusive--;
	if (j->r.code == 0 && j->rc < 0)
		job_store_fail(j);
	if (j->r.code == 0) {
		switch (j->kind) {
		case JOB_SAMPLES: res = done_samples(d, j); break;
		case JOB_CLASS_ADD:
		case JOB_CLASS_REMOVE: res = done_class(d, j); break;
		case JOB_ROLLBACK: res = done_rollback(d, j); break;
		default: res = done_quarantine(d, j); break;
		}
	}
	cJSON *resp = hdqtd_late_reply(j->id, j->notify, res, &j->r);
	const int samples_added = j->kind == JOB_SAMPLES && j->r.code == 0 && !j->dup;
	hdqtd_conn *c = j->c;
	job_free(j);
	hdqtd_conn_complete(c, resp);
	if (samples_added)
		hdqtd_maybe_train(d);
}

/* ---- methods ---- */

static cJSON *m_status(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	cJSON *o = cJSON_CreateObject(), *cls = cJSON_CreateArray();
	if (!o || !cls) {
		cJSON_Delete(o);
		cJSON_Delete(cls);
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	}
	cJSON_AddStringToObject(o, "version", HDQT_VERSION);
	cJSON_AddNumberToObject(o, "uptime_s", hdqtd_now() - d->started);
	if (d->model)
		cJSON_AddNumberToObject(o, "model_version", (double)d->model_version);
	else
		cJSON_AddNullToObject(o, "model_version");
	for (int i = 0; i < d->n_classes; i++)
		cJSON_AddItemToArray(cls, class_json(d, &d->classes[i], 1));
	cJSON_AddItemToObject(o, "classes", cls);
	cJSON_AddNumberToObject(o, "samples_pending", (double)d->pending_total);
	cJSON_AddNumberToObject(o, "samples_quarantined", (double)d->quarantined);
	cJSON_AddNumberToObject(o, "exemplars", (double)d->n_exemplars);
	cJSON_AddNumberToObject(o, "validation_samples", (double)d->n_validation);
	cJSON_AddItemToObject(o, "training", training_json(d));
	const cJSON *acc = cJSON_GetObjectItemCaseSensitive(d->metrics, "validation_accuracy");
	if (cJSON_IsNumber(acc) && acc->valuedouble >= 0)
		cJSON_AddNumberToObject(o, "validation_accuracy", acc->valuedouble);
	else
		cJSON_AddNullToObject(o, "validation_accuracy");
	cJSON_AddStringToObject(o, "quant", hdqt_mode_name(d->cfg.quant));
	cJSON_AddStringToObject(o, "strategy", hdqt_cl_method_name(d->cfg.strategy));
	cJSON_AddStringToObject(o, "kernel", hdqt_kernel_name());
	cJSON_AddStringToObject(o, "binary_kernel", hdqt_binary_kernel_name());
	if (d->model) {
		/* the serving model's own recipe (it may predate the config) */
		const hdqt_qconfig *mq = hdqt_model_qconfig(d->model);
		cJSON *rq = cJSON_AddObjectToObject(o, "recipe");
		if (rq) {
			cJSON_AddStringToObject(rq, "quant", hdqt_mode_name(mq->mode));
			cJSON_AddNumberToObject(rq, "bits", mq->bits);
			if (hdqt_mode_is_hadanet(mq->mode)) {
				cJSON_AddNumberToObject(rq, "beta_w", mq->beta_w);
				cJSON_AddNumberToObject(rq, "beta_a", mq->beta_a);
			}
		}
	}
	cJSON_AddNumberToObject(o, "feature_dim", HDQT_FEAT_DIM);
	cJSON_AddNumberToObject(o, "window", d->cfg.window);
	cJSON_AddNumberToObject(o, "connections", d->n_conns);
	cJSON_AddStringToObject(o, "database", d->cfg.db);
	cJSON_AddItemToObject(o, "open_set", hdqtd_openset_status(d));
	return o;
}

static cJSON *m_class_add(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	const char *name = str_param(p, "name");
	if (!name)
		return fail(r, HDQT_RPC_INVALID_PARAMS, "params.name must be a string");
	size_t nl = strlen(name);
	int printable = nl >= 1 && nl <= HDQT_CLASS_NAME_MAX && hdqt_utf8_valid(name, nl) == nl;
	for (size_t i = 0; printable && i < nl; i++)
		printable = (unsigned char)name[i] >= 0x20 && name[i] != 0x7f;
	if (!printable)
		return fail(r, HDQT_RPC_INVALID_PARAMS,
			    "class name must be 1 to %d bytes of printable UTF-8", HDQT_CLASS_NAME_MAX);
	const hdqt_store_class *old = class_by_name(d, name);
	if (old && old->active)
		return fail(r, HDQT_RPC_CLASS_EXISTS, "class \"%s\" exists (label %d)", name, old->label);
	if (!old && d->n_classes >= HDQT_MAX_CLASSES)
		return fail(r, HDQT_RPC_LIMIT, "hdqtd holds at most %d classes", HDQT_MAX_CLASSES);
	mjob *j = calloc(1, sizeof(*j));
	if (!j)
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	j->kind = JOB_CLASS_ADD;
	j->job.run = run_class;
	j->reactivate = old != NULL;
	snprintf(j->name, sizeof(j->name), "%s", name);
	return submit(d, c, j, k->id, k->notify, k->async);
}

static cJSON *m_class_list(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *a = cJSON_AddArrayToObject(o, "classes");
	if (!a) {
		cJSON_Delete(o);
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	}
	for (int i = 0; i < d->n_classes; i++)
		cJSON_AddItemToArray(a, class_json(d, &d->classes[i], 1));
	return o;
}

static cJSON *m_class_remove(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	const char *name = str_param(p, "name");
	if (!name)
		return fail(r, HDQT_RPC_INVALID_PARAMS, "params.name must be a string");
	const hdqt_store_class *old = class_by_name(d, name);
	if (!old || !old->active)
		return fail(r, HDQT_RPC_UNKNOWN_CLASS, "no active class \"%s\"", name);
	mjob *j = calloc(1, sizeof(*j));
	if (!j)
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	j->kind = JOB_CLASS_REMOVE;
	j->job.run = run_class;
	snprintf(j->name, sizeof(j->name), "%s", name);
	return submit(d, c, j, k->id, k->notify, k->async);
}

static cJSON *m_sample_add(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "samples");
	const cJSON *bid = cJSON_GetObjectItemCaseSensitive(p, "batch_id");
	int n;
	if (list) {
		if (!cJSON_IsArray(list) || (n = cJSON_GetArraySize(list)) == 0)
			return fail(r, HDQT_RPC_INVALID_PARAMS, "params.samples must be a non-empty array");
		if (cJSON_GetObjectItemCaseSensitive(p, "class"))
			return fail(r, HDQT_RPC_INVALID_PARAMS,
				    "give either one sample or \"samples\", not both");
	} else {
		n = 1;
	}
	if (bid) {
		size_t bl = cJSON_IsString(bid) ? strlen(bid->valuestring) : 0;
		int ok = bl >= 1 && bl <= HDQT_BATCH_ID_MAX;
		for (size_t i = 0; ok && i < bl; i++)
			ok = bid->valuestring[i] >= 0x21 && bid->valuestring[i] <= 0x7e;
		if (!ok)
			return fail(r, HDQT_RPC_INVALID_PARAMS, "params.batch_id must be a string of 1 to %d "
				    "printable ASCII characters without spaces", HDQT_BATCH_ID_MAX);
	}
	if (n > d->cfg.max_batch)
		return fail(r, HDQT_RPC_LIMIT, "%d samples exceed daemon.max_batch (%d)", n,
			    d->cfg.max_batch);
	mjob *j = calloc(1, sizeof(*j));
	if (!j || !(j->X = malloc(sizeof(float) * (size_t)n * HDQT_FEAT_DIM)) ||
	    !(j->ids = malloc(sizeof(int64_t) * (size_t)n)) ||
	    !(j->labels = malloc(sizeof(int) * (size_t)n))) {
		if (j)
			job_free(j);
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	}
	/* Classes are checked here, against the loop's cache; the numbers are
	 * read and windows turned into features on the writer thread. */
	const cJSON *s = list ? list->child : p;
	for (int i = 0; i < n; i++, s = s->next) {
		char what[48];
		snprintf(what, sizeof(what), list ? "samples[%d]" : "sample", i);
		const char *name = cJSON_IsObject(s) ? str_param(s, "class") : NULL;
		const hdqt_store_class *cl = name ? class_by_name(d, name) : NULL;
		if (!name)
			fail(r, HDQT_RPC_INVALID_PARAMS, "%s: \"class\" must be a class name", what);
		else if (!cl || !cl->active)
			fail(r, HDQT_RPC_UNKNOWN_CLASS, "%s: unknown class \"%s\" (add it with class.add)",
			     what, name);
		if (r->code) {
			job_free(j);
			return NULL;
		}
		j->ids[i] = cl->id;
		j->labels[i] = cl->label;
	}
	j->kind = JOB_SAMPLES;
	j->job.run = run_samples;
	j->n = n;
	j->list = list;
	j->one = list ? NULL : p;
	j->window = d->cfg.window;
	if (bid)
		snprintf(j->batch_id, sizeof(j->batch_id), "%s", bid->valuestring);
	return submit(d, c, j, k->id, k->notify, k->async);
}

static int cmp_desc(const void *a, const void *b, void *arg)
{
	const float *p = arg;
	float x = p[*(const int *)a], y = p[*(const int *)b];
	return x < y ? 1 : x > y ? -1 : 0;
}

static cJSON *prediction_json(hdqtd *d, const float *x, const float *logits, float *emb, int C,
			      int top_k)
{
	/* Softmax over the active classes only. */
	float prob[HDQT_MAX_CLASSES];
	int idx[HDQT_MAX_CLASSES], k = 0;
	float mx = -INFINITY;
	for (int l = 0; l < C; l++) {
		if (predictable(d, l)) {
			idx[k++] = l;
			mx = logits[l] > mx ? logits[l] : mx;
		}
	}
	double sum = 0;
	for (int j = 0; j < k; j++)
		sum += exp((double)(logits[idx[j]] - mx));
	for (int l = 0; l < C; l++)
		prob[l] = 0;
	for (int j = 0; j < k; j++)
		prob[idx[j]] = (float)(exp((double)(logits[idx[j]] - mx)) / sum);
	qsort_r(idx, (size_t)k, sizeof(int), cmp_desc, prob);
	cJSON *o = cJSON_CreateObject();
	cJSON *top = cJSON_CreateArray();
	if (!o || !top || k == 0) {
		cJSON_Delete(o);
		cJSON_Delete(top);
		return NULL;
	}
	const hdqt_store_class *best = class_by_label(d, idx[0]);
	cJSON_AddStringToObject(o, "class", best->name);
	cJSON_AddNumberToObject(o, "label", idx[0]);
	hdqt_rpc_add_float(o, "confidence", prob[idx[0]]);
	for (int j = 0; j < k && j < top_k; j++) {
		cJSON *t = cJSON_CreateObject();
		if (!t)
			break;
		cJSON_AddStringToObject(t, "class", class_by_label(d, idx[j])->name);
		hdqt_rpc_add_float(t, "confidence", prob[idx[j]]);
		cJSON_AddItemToArray(top, t);
	}
	cJSON_AddItemToObject(o, "top", top);
	cJSON_AddNumberToObject(o, "model_version", (double)d->model_version);
	hdqtd_openset_annotate(d, o, x, logits, emb, idx[0]);
	return o;
}

/* The forward pass and reply of a predict whose inputs are in X (taken). */
static cJSON *predict_reply(hdqtd *d, float *X, int n, int many, int top_k, reply *r)
{
	if (!d->model) {
		free(X);
		return fail(r, HDQT_RPC_NO_MODEL, "no model yet: add classes and samples, then train");
	}
	int active = 0;
	const int C = hdqt_model_n_classes(d->model);
	for (int l = 0; l < C; l++)
		active += predictable(d, l);
	if (!active) {
		free(X);
		return fail(r, HDQT_RPC_NO_MODEL, "the model knows no active class");
	}
	/* The embedding comes from the same pass when the novelty score reads it. */
	const int E = hdqtd_openset_needs_embedding(d) ? hdqt_model_embed_dim(d->model) : 0;
	float *logits = malloc(sizeof(float) * (size_t)n * C);
	float *emb = E ? malloc(sizeof(float) * (size_t)n * E) : NULL;
	int rc = !logits || (E && !emb) ? HDQT_ENOMEM
		 : E ? hdqt_model_forward_embed(d->model, X, n, logits, emb)
		     : hdqt_model_forward(d->model, X, n, logits);
	if (rc < 0) {
		free(X);
		free(logits);
		free(emb);
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "inference: %s", hdqt_strerror(rc));
	}
	d->stats.predictions += (uint64_t)n;
	cJSON *o;
	if (!many) {
		o = prediction_json(d, X, logits, emb, C, top_k);
	} else {
		o = cJSON_CreateObject();
		cJSON *a = cJSON_AddArrayToObject(o, "predictions");
		for (int i = 0; a && i < n; i++)
			cJSON_AddItemToArray(a, prediction_json(d, X + (size_t)i * HDQT_FEAT_DIM,
								logits + (size_t)i * C,
								emb ? emb + (size_t)i * E : NULL, C, top_k));
		cJSON_AddNumberToObject(o, "model_version", (double)d->model_version);
	}
	free(X);
	free(logits);
	free(emb);
	hdqtd_openset_flush(d);
	return o ? o : fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
}

/* Raw windows of a predict are turned into features on a thread-pool
 * thread (about 0.25 ms each: 1000 of them would stall the loop); the
 * forward pass and the reply follow on the loop.  The request's params
 * stay alive: the connection keeps its line until the reply. */
#define PREDICT_WINDOWS_ON_LOOP 4

typedef struct pjob {
	uv_work_t work;
	hdqtd *d;
	hdqtd_conn *c;
	cJSON *id;
	int notify, n, many, top_k, window;
	const cJSON *first;
	float *X;
	reply r;
	double t0;
} pjob;

static void pjob_work(uv_work_t *w)
{
	pjob *j = w->data;
	hdqt_feat *f = NULL;
	if (hdqt_feat_new(&f, j->window) < 0) {
		fail(&j->r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
		return;
	}
	const cJSON *s = j->first;
	for (int i = 0; i < j->n; i++, s = s->next) {
		char what[48];
		snprintf(what, sizeof(what), j->many ? "inputs[%d]" : "input", i);
		if (input_features_with(f, j->window, s, j->X + (size_t)i * HDQT_FEAT_DIM, &j->r, what) < 0)
			break;
	}
	hdqt_feat_free(f);
}

static void pjob_done(uv_work_t *w, int status)
{
	(void)status; /* never canceled */
	pjob *j = w->data;
	cJSON *res = NULL;
	if (j->r.code == 0 && !j->c->dead) {
		res = predict_reply(j->d, j->X, j->n, j->many, j->top_k, &j->r);
		j->X = NULL;
		if (res)
			hdqtd_metrics_observe(&j->d->stats.predict_seconds, hdqtd_now() - j->t0);
	}
	cJSON *resp = hdqtd_late_reply(j->id, j->notify || j->c->dead, res, &j->r);
	hdqtd_conn *c = j->c;
	cJSON_Delete(j->id);
	free(j->X);
	free(j);
	hdqtd_conn_complete(c, resp);
}

static cJSON *m_predict(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	int top_k = 3;
	const cJSON *tk = cJSON_GetObjectItemCaseSensitive(p, "top_k");
	if (tk) {
		/* Range first: converting 1e300 to int is undefined behaviour. */
		if (!cJSON_IsNumber(tk) || !(tk->valuedouble >= 1 && tk->valuedouble <= 100) ||
		    tk->valuedouble != floor(tk->valuedouble))
			return fail(r, HDQT_RPC_INVALID_PARAMS, "top_k must be an integer in [1, 100]");
		top_k = (int)tk->valuedouble;
	}
	const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(p, "inputs");
	int n = 1;
	if (inputs) {
		if (!cJSON_IsArray(inputs) || (n = cJSON_GetArraySize(inputs)) == 0)
			return fail(r, HDQT_RPC_INVALID_PARAMS, "params.inputs must be a non-empty array");
		if (n > d->cfg.max_batch)
			return fail(r, HDQT_RPC_LIMIT, "%d inputs exceed daemon.max_batch (%d)", n,
				    d->cfg.max_batch);
	}
	const cJSON *first = inputs ? inputs->child : p;
	int windows = 0;
	for (const cJSON *s = first; s && windows <= PREDICT_WINDOWS_ON_LOOP; s = inputs ? s->next : NULL)
		windows += cJSON_GetObjectItemCaseSensitive(s, "window") != NULL ||
			   cJSON_GetObjectItemCaseSensitive(s, "window_f32") != NULL;
	float *X = malloc(sizeof(float) * (size_t)n * HDQT_FEAT_DIM);
	if (!X)
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	if (windows > PREDICT_WINDOWS_ON_LOOP) {
		pjob *j = calloc(1, sizeof(*j));
		if (j && (k->notify || (j->id = k->id ? cJSON_Duplicate(k->id, 1) : cJSON_CreateNull()))) {
			*j = (pjob){.d = d, .c = c, .id = j->id, .notify = k->notify, .n = n,
				    .many = inputs != NULL, .top_k = top_k, .window = d->cfg.window,
				    .first = first, .X = X, .t0 = hdqtd_now()};
			j->work.data = j;
			if (uv_queue_work(d->loop, &j->work, pjob_work, pjob_done) == 0) {
				*k->async = 1;
				return NULL;
			}
			cJSON_Delete(j->id);
		}
		free(j);
		/* cannot happen short of memory: extract here */
	}
	const cJSON *s = first;
	for (int i = 0; i < n; i++, s = s->next) {
		char what[48];
		snprintf(what, sizeof(what), inputs ? "inputs[%d]" : "input", i);
		if (input_features(d, s, X + (size_t)i * HDQT_FEAT_DIM, r, what) < 0) {
			free(X);
			return NULL;
		}
	}
	return predict_reply(d, X, n, inputs != NULL, top_k, r);
}

static cJSON *start_round(hdqtd *d, reply *r, int explicit)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	if (d->pending_total == 0) {
		cJSON_AddBoolToObject(o, "started", 0);
		cJSON_AddStringToObject(o, "reason", "no pending samples");
		return o;
	}
	if (d->exclusive) {
		cJSON_Delete(o);
		return fail(r, HDQT_RPC_BUSY, "a rollback or quarantine change is being written; try again");
	}
	if (hdqtd_trainer_request(d->trainer) < 0) {
		cJSON_Delete(o);
		return fail(r, HDQT_RPC_BUSY, "a training round is already running");
	}
	hdqtd_log(LOG_INFO, "training round requested (%s, %lld samples pending)",
		  explicit ? "train" : "auto", (long long)d->pending_total);
	cJSON_AddBoolToObject(o, "started", 1);
	cJSON_AddNumberToObject(o, "samples", (double)d->pending_total);
	return o;
}

static cJSON *m_train(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	return start_round(d, r, 1);
}

static cJSON *m_train_status(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	cJSON *o = training_json(d);
	return o ? o : fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
}

static cJSON *m_train_cancel(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	cJSON_AddBoolToObject(o, "canceled", hdqtd_trainer_cancel(d->trainer));
	return o;
}

static cJSON *m_model_list(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	hdqt_store_model *ms = NULL;
	int n = 0;
	int rc = hdqt_store_model_list(d->store, &ms, &n);
	if (rc < 0)
		return store_fail(d, r, rc);
	cJSON *o = cJSON_CreateObject();
	cJSON *a = cJSON_AddArrayToObject(o, "models");
	for (int q = 0; a && q < n; q++) {
		const int i = ms[0].version < ms[n - 1].version ? n - 1 - q : q; /* newest first */
		cJSON *m = cJSON_CreateObject();
		if (!m)
			break;
		cJSON_AddNumberToObject(m, "version", (double)ms[i].version);
		cJSON_AddNumberToObject(m, "created", (double)ms[i].created);
		cJSON_AddBoolToObject(m, "current", ms[i].current);
		cJSON_AddNumberToObject(m, "bytes", (double)ms[i].blob_len);
		cJSON *met = cJSON_Parse(ms[i].metrics);
		cJSON_AddItemToObject(m, "metrics", met ? met : cJSON_CreateObject());
		/* the recipe the version was trained with (quant, bits, segments, strategy) */
		cJSON *cfg = ms[i].config[0] ? cJSON_Parse(ms[i].config) : NULL;
		cJSON_AddItemToObject(m, "config", cfg ? cfg : cJSON_CreateObject());
		cJSON_AddItemToArray(a, m);
	}
	free(ms);
	return a ? o : (cJSON_Delete(o), fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory"));
}

/* A round or another exclusive change in flight: refuse, so that the loop's
 * view, the database and the events cannot disagree. */
int hdqtd_exclusive_busy(hdqtd *d, reply *r)
{
	hdqtd_progress pr;
	hdqtd_trainer_progress(d->trainer, &pr);
	if (pr.running) {
		fail(r, HDQT_RPC_BUSY, "a training round is running; cancel it first");
		return 1;
	}
	if (d->exclusive) {
		fail(r, HDQT_RPC_BUSY, "another rollback, quarantine change, export or import is "
		     "being written");
		return 1;
	}
	return 0;
}

static cJSON *m_model_rollback(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(p, "version");
	if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 9e15 ||
	    v->valuedouble != floor(v->valuedouble))
		return fail(r, HDQT_RPC_INVALID_PARAMS, "params.version must be a positive integer");
	if (hdqtd_exclusive_busy(d, r))
		return NULL;
	mjob *j = calloc(1, sizeof(*j));
	if (!j)
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	j->kind = JOB_ROLLBACK;
	j->job.run = run_rollback;
	j->exclusive = 1;
	j->version = (int64_t)v->valuedouble;
	j->prev = d->model_version;
	return submit(d, c, j, k->id, k->notify, k->async);
}

static cJSON *m_quarantine_list(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	hdqt_store_qsample *q = NULL;
	int n = 0;
	int rc = hdqt_store_quarantine_list(d->store, 1000, &q, &n);
	if (rc < 0)
		return store_fail(d, r, rc);
	cJSON *o = cJSON_CreateObject();
	cJSON *a = cJSON_AddArrayToObject(o, "samples");
	for (int i = 0; a && i < n; i++) {
		cJSON *e = cJSON_CreateObject();
		if (!e)
			break;
		const hdqt_store_class *cl = NULL;
		for (int m = 0; m < d->n_classes && !cl; m++)
			if (d->classes[m].id == q[i].class_id)
				cl = &d->classes[m];
		cJSON_AddNumberToObject(e, "id", (double)q[i].id);
		cJSON_AddStringToObject(e, "class", cl ? cl->name : "?");
		cJSON_AddNumberToObject(e, "created", (double)q[i].created);
		cJSON_AddItemToArray(a, e);
	}
	free(q);
	if (!a) {
		cJSON_Delete(o);
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	}
	cJSON_AddNumberToObject(o, "total", (double)d->quarantined);
	return o;
}

static cJSON *quarantine_change(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k,
				int release)
{
	const cJSON *ids = cJSON_GetObjectItemCaseSensitive(p, "ids");
	const cJSON *all = cJSON_GetObjectItemCaseSensitive(p, "all");
	if (!ids == !cJSON_IsTrue(all))
		return fail(r, HDQT_RPC_INVALID_PARAMS, "give \"ids\" (an array of sample ids) or "
			    "\"all\": true");
	int n = ids ? (cJSON_IsArray(ids) ? cJSON_GetArraySize(ids) : -1) : 0;
	if (n < 0 || (ids && n == 0) || n > d->cfg.max_batch)
		return fail(r, HDQT_RPC_INVALID_PARAMS, "ids must be an array of 1 to %d sample ids",
			    d->cfg.max_batch);
	if (hdqtd_exclusive_busy(d, r))
		return NULL;
	mjob *j = calloc(1, sizeof(*j));
	if (!j || (n && !(j->qids = malloc(sizeof(int64_t) * (size_t)n)))) {
		free(j);
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	}
	int i = 0;
	for (const cJSON *e = ids ? ids->child : NULL; e; e = e->next, i++) {
		if (!cJSON_IsNumber(e) || e->valuedouble < 1 || e->valuedouble > 9e15 ||
		    e->valuedouble != floor(e->valuedouble)) {
			job_free(j);
			return fail(r, HDQT_RPC_INVALID_PARAMS, "ids[%d] is not a sample id", i);
		}
		j->qids[i] = (int64_t)e->valuedouble;
	}
	j->nq = n;
	j->kind = JOB_QUARANTINE;
	j->job.run = run_quarantine;
	j->exclusive = 1;
	j->release = release;
	return submit(d, c, j, k->id, k->notify, k->async);
}

static cJSON *m_quarantine_drop(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	return quarantine_change(d, c, p, r, k, 0);
}

static cJSON *m_quarantine_release(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	return quarantine_change(d, c, p, r, k, 1);
}

static cJSON *m_subscribe(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	c->subscribed = 1;
	cJSON *o = cJSON_CreateObject();
	if (o)
		cJSON_AddBoolToObject(o, "subscribed", 1);
	return o;
}

static cJSON *m_unsubscribe(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	c->subscribed = 0;
	cJSON *o = cJSON_CreateObject();
	if (o)
		cJSON_AddBoolToObject(o, "subscribed", 0);
	return o;
}

static cJSON *m_config_get(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	cJSON *o = hdqtd_config_json(&d->cfg);
	return o ? o : fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
}

static cJSON *m_describe(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k)
{
	/* Parsed and printed once; each reply embeds the text as is. */
	if (!d->describe) {
		cJSON *o = cJSON_Parse(hdqt_rpc_description);
		d->describe = o ? cJSON_PrintUnformatted(o) : NULL;
		cJSON_Delete(o);
		if (!d->describe)
			return fail(r, HDQT_RPC_INTERNAL_ERROR, "description unavailable");
	}
	cJSON *raw = cJSON_CreateRaw(d->describe);
	return raw ? raw : fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
}

typedef cJSON *(*method_fn)(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r, call *k);
static const struct method {
	const char *name;
	method_fn fn;
	int admin;   /* changes state: restricted to access.admin_group */
} methods[] = {
	{"status", m_status, 0},
	{"class.add", m_class_add, 1},
	{"class.list", m_class_list, 0},
	{"class.remove", m_class_remove, 1},
	{"sample.add", m_sample_add, 1},
	{"predict", m_predict, 0},
	{"train", m_train, 1},
	{"train.status", m_train_status, 0},
	{"train.cancel", m_train_cancel, 1},
	{"model.list", m_model_list, 0},
	{"model.rollback", m_model_rollback, 1},
	{"quarantine.list", m_quarantine_list, 0},
	{"quarantine.drop", m_quarantine_drop, 1},
	{"quarantine.release", m_quarantine_release, 1},
	{"events.subscribe", m_subscribe, 0},
	{"events.unsubscribe", m_unsubscribe, 0},
	{"config.get", m_config_get, 0},
	{"model.export", hdqtd_m_model_export, 1},
	{"model.export_chunk", hdqtd_m_export_chunk, 1},
	{"model.import", hdqtd_m_model_import, 1},
	{"model.import_chunk", hdqtd_m_import_chunk, 1},
	{"model.import_commit", hdqtd_m_import_commit, 1},
	{"backup", hdqtd_m_backup, 1},
	{"backup.chunk", hdqtd_m_backup_chunk, 1},
	{"transfer.close", hdqtd_m_transfer_close, 1},
	{"metrics", hdqtd_m_metrics, 0},
	{"unknowns.list", hdqtd_m_unknowns_list, 0},
	{"unknowns.promote", hdqtd_m_unknowns_promote, 1},
	{"unknowns.drop", hdqtd_m_unknowns_drop, 1},
	{"rpc.describe", m_describe, 0},
	{"rpc.discover", m_describe, 0},
};

cJSON *hdqtd_dispatch(hdqtd *d, hdqtd_conn *c, cJSON *req, int *async)
{
	*async = 0;
	/* Validate the envelope (JSON-RPC 2.0, section 4).  Member names are
	 * case-sensitive: a notification carrying "ID" is still one. */
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(req, "id");
	const cJSON *ver = cJSON_GetObjectItemCaseSensitive(req, "jsonrpc");
	const cJSON *meth = cJSON_GetObjectItemCaseSensitive(req, "method");
	const cJSON *params = cJSON_GetObjectItemCaseSensitive(req, "params");
	int bad_id = 0;
	if (id && !cJSON_IsString(id) && !cJSON_IsNumber(id) && !cJSON_IsNull(id) && !cJSON_IsRaw(id)) {
		id = NULL; /* an invalid id is answered with a null id */
		bad_id = 1;
	}
	c->method = NULL;
	if (!cJSON_IsObject(req) || !cJSON_IsString(ver) || strcmp(ver->valuestring, "2.0") != 0 ||
	    !cJSON_IsString(meth) || bad_id) {
		hdqtd_metrics_request(&d->stats, NULL);
		return hdqt_rpc_error(id, HDQT_RPC_INVALID_REQUEST,
				      "invalid request: expected {\"jsonrpc\": \"2.0\", \"method\": ...}",
				      NULL);
	}
	const int notify = id == NULL && !cJSON_GetObjectItemCaseSensitive(req, "id");
	const struct method *m = NULL;
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strcmp(methods[i].name, meth->valuestring) == 0)
			m = &methods[i];
	/* A request is counted under the name its reply's error is counted
	 * under (line_add): a known method with positional params under its
	 * own, a params member of another type as invalid. */
	if (params && !cJSON_IsObject(params) &&
	    !(cJSON_IsArray(params) && cJSON_GetArraySize(params) == 0)) {
		if (cJSON_IsArray(params)) {
			c->method = m ? m->name : "(unknown)";
			hdqtd_metrics_request(&d->stats, c->method);
			return notify ? NULL
				      : hdqt_rpc_error(id, HDQT_RPC_INVALID_PARAMS,
						       "params must be an object (named parameters)", NULL);
		}
		hdqtd_metrics_request(&d->stats, NULL);
		return notify ? NULL
			      : hdqt_rpc_error(id, HDQT_RPC_INVALID_REQUEST,
					       "invalid request: params must be an object", NULL);
	}
	if (cJSON_IsArray(params))
		params = NULL;
	if (!m) {
		c->method = "(unknown)";
		hdqtd_metrics_request(&d->stats, c->method);
		char msg[160];
		snprintf(msg, sizeof(msg), "method not found: %.*s",
			 (int)hdqt_utf8_prefix(meth->valuestring, 100), meth->valuestring);
		return notify ? NULL : hdqt_rpc_error(id, HDQT_RPC_METHOD_NOT_FOUND, msg, NULL);
	}
	reply r = {0};
	call k = {id, notify, async};
	cJSON *res;
	c->method = m->name;
	hdqtd_metrics_request(&d->stats, m->name);
	const double t0 = hdqtd_now();
	if (d->stopping)
		res = fail(&r, HDQT_RPC_SHUTTING_DOWN, "hdqtd is shutting down");
	else if (m->admin && !c->admin)
		res = fail(&r, HDQT_RPC_FORBIDDEN, "%s needs membership of group \"%s\"", m->name,
			   d->cfg.admin_group);
	else
		res = m->fn(d, c, params ? params : NULL, &r, &k);
	if (*async)
		return NULL;
	if (m->fn == m_predict && res)
		hdqtd_metrics_observe(&d->stats.predict_seconds, hdqtd_now() - t0);
	if (notify) {
		cJSON_Delete(res);
		return NULL;
	}
	if (res)
		return hdqt_rpc_result(id, res);
	if (r.code == 0)
		fail(&r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	return hdqt_rpc_error(id, r.code, r.msg, r.data);
}

/* ---- training policy and callbacks ---- */

void hdqtd_maybe_train(hdqtd *d)
{
	if (!d->cfg.auto_train || d->stopping || d->exclusive)
		return;
	hdqtd_progress p;
	hdqtd_trainer_progress(d->trainer, &p);
	if (p.running)
		return;
	if (d->pending_total - d->pending_baseline < d->cfg.auto_min_samples)
		return;
	if (d->last_round_end > 0 && hdqtd_now() - d->last_round_end < d->cfg.auto_interval_s)
		return;
	reply r = {0};
	cJSON_Delete(start_round(d, &r, 0));
}

static void cb_started(void *arg, const hdqtd_progress *p)
{
	hdqtd *d = arg;
	cJSON *ev = cJSON_CreateObject();
	if (ev) {
		cJSON_AddNumberToObject(ev, "round", (double)p->round);
		cJSON_AddNumberToObject(ev, "model_version", (double)d->model_version);
	}
	hdqtd_broadcast(d, hdqt_rpc_event("training.started", ev));
}

static void cb_progress(void *arg, const hdqtd_progress *p)
{
	hdqtd *d = arg;
	cJSON *ev = cJSON_CreateObject();
	if (ev) {
		cJSON_AddNumberToObject(ev, "round", (double)p->round);
		cJSON_AddNumberToObject(ev, "epoch", p->epoch);
		cJSON_AddNumberToObject(ev, "epochs", p->epochs);
		cJSON_AddNumberToObject(ev, "loss", isfinite(p->loss) ? p->loss : -1);
		cJSON_AddNumberToObject(ev, "samples", p->samples);
	}
	hdqtd_broadcast(d, hdqt_rpc_event("training.progress", ev));
}

static void cb_finished(void *arg, hdqtd_round_result *res)
{
	hdqtd *d = arg;
	d->last_round_end = hdqtd_now();
	/* The samples the round took out of the backlog (learned, held out or
	 * quarantined), by label: the counts follow exactly. */
	for (int l = 0; l < HDQT_MAX_CLASSES; l++) {
		d->pending[l] -= res->consumed[l];
		d->pending_total -= res->consumed[l];
	}
	d->quarantined += res->quarantined;
	d->stats.samples_quarantined += (uint64_t)res->quarantined;
	if (res->outcome >= 0 && res->outcome <= HDQTD_ROUND_EMPTY)
		d->stats.rounds[res->outcome]++;
	if (res->outcome != HDQTD_ROUND_EMPTY)
		hdqtd_metrics_observe(&d->stats.round_seconds, res->seconds);
	/* Auto rounds wait for new samples after a round that left its own
	 * pending (a round that quarantined samples may try the rest at once). */
	d->pending_baseline = res->outcome == HDQTD_ROUND_ACCEPTED || res->quarantined ? 0
										      : d->pending_total;
	const int prio = res->outcome == HDQTD_ROUND_FAILED ? LOG_ERR
		       : res->outcome == HDQTD_ROUND_REJECTED ? LOG_WARNING : LOG_INFO;
	hdqtd_log(prio, "round %lld %s in %.1f s: %d samples, %d classes, validation %.2f%% "
		  "(current model %.2f%%)%s%s", (long long)res->round,
		  hdqtd_outcome_name(res->outcome), res->seconds, res->samples, res->classes,
		  res->val_acc, res->prev_acc, res->reason[0] ? ": " : "", res->reason);
	int64_t prev = d->model_version;
	if (res->quarantined) {
		hdqtd_log(LOG_WARNING, "round %lld: %d samples quarantined (%s); list them with "
			  "quarantine.list, then quarantine.drop or quarantine.release",
			  (long long)res->round, res->quarantined, res->reason);
		cJSON *qe = cJSON_CreateObject();
		if (qe) {
			cJSON_AddNumberToObject(qe, "round", (double)res->round);
			cJSON_AddNumberToObject(qe, "samples", res->quarantined);
			cJSON_AddNumberToObject(qe, "samples_quarantined", (double)d->quarantined);
			cJSON_AddStringToObject(qe, "reason", res->reason);
		}
		hdqtd_broadcast(d, hdqt_rpc_event("samples.quarantined", qe));
	}
	if (res->outcome == HDQTD_ROUND_ACCEPTED) {
		if (res->model) {
			hdqtd_install_model(d, res->model, res->model_version, res->metrics);
			res->model = NULL;
		} else if (hdqtd_load_model(d) < 0) {
			hdqtd_log(LOG_ERR, "loading the new model failed; still serving %lld",
				  (long long)prev);
		}
	}
	cJSON *ev = cJSON_CreateObject();
	if (ev) {
		cJSON_AddNumberToObject(ev, "round", (double)res->round);
		cJSON_AddStringToObject(ev, "outcome", hdqtd_outcome_name(res->outcome));
		cJSON_AddNumberToObject(ev, "model_version", (double)d->model_version);
		if (res->model_version)
			cJSON_AddNumberToObject(ev, "stored_version", (double)res->model_version);
		cJSON_AddNumberToObject(ev, "samples", res->samples);
		cJSON_AddNumberToObject(ev, "seconds", res->seconds);
		if (res->val_acc >= 0)
			cJSON_AddNumberToObject(ev, "validation_accuracy", res->val_acc);
		if (res->prev_acc >= 0)
			cJSON_AddNumberToObject(ev, "previous_accuracy", res->prev_acc);
		cJSON_AddStringToObject(ev, "reason", res->reason);
	}
	hdqtd_broadcast(d, hdqt_rpc_event("training.finished", ev));
	if (d->model_version != prev) {
		cJSON *sw = cJSON_CreateObject();
		if (sw) {
			cJSON_AddNumberToObject(sw, "model_version", (double)d->model_version);
			cJSON_AddNumberToObject(sw, "previous", (double)prev);
			cJSON_AddStringToObject(sw, "reason", "training");
		}
		hdqtd_broadcast(d, hdqt_rpc_event("model.swapped", sw));
	}
}

const hdqtd_trainer_cb hdqtd_trainer_callbacks = {
	.arg = NULL, .started = cb_started, .progress = cb_progress, .finished = cb_finished,
};
