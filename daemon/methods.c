/* SPDX-License-Identifier: MIT */
/*
 * JSON-RPC methods (proto/PROTOCOL.md).  Each handler validates everything
 * before it changes anything, so a request that fails changed nothing; a
 * request that succeeded has been committed to the database.
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

typedef struct reply {
	cJSON *result;   /* on success */
	int code;        /* on failure */
	char msg[256];
	cJSON *data;
} reply;

static cJSON *fail(reply *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static cJSON *fail(reply *r, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
	va_end(ap);
	r->code = code;
	return NULL;
}

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
	return 0;
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
		int64_t pend = 0;
		if (hdqt_store_samples_pending_count(d->store, c->id, &pend) == 0)
			cJSON_AddNumberToObject(o, "samples_pending", (double)pend);
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

/* features or window of one input object -> out[HDQT_FEAT_DIM]. */
static int input_features(hdqtd *d, const cJSON *o, float *out, reply *r, const char *what)
{
	const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "features");
	const cJSON *w = cJSON_GetObjectItemCaseSensitive(o, "window");
	if (!cJSON_IsObject(o) || (!f == !w)) {
		fail(r, HDQT_RPC_INVALID_PARAMS, "%s: give exactly one of \"features\" or \"window\"", what);
		return -1;
	}
	if (f) {
		int bad;
		int n = hdqt_rpc_floats(f, out, HDQT_FEAT_DIM, &bad);
		if (n == HDQT_ERANGE) {
			fail(r, HDQT_RPC_INVALID_PARAMS, "%s: features[%d] is not a finite number", what, bad);
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
	const int W = d->cfg.window;
	float *rows = malloc(sizeof(float) * (size_t)W * 6);
	if (!rows) {
		fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
		return -1;
	}
	char err[160];
	int rc = hdqt_rpc_window(w, W, 6, rows, err, sizeof(err));
	if (rc == 0)
		rc = hdqt_feat_extract(d->feat, rows, out);
	else
		fail(r, HDQT_RPC_INVALID_PARAMS, "%s: %s", what, err);
	free(rows);
	if (rc < 0 && r->code == 0)
		fail(r, HDQT_RPC_INVALID_PARAMS, "%s: window readings must be finite and within +-1e6",
		     what);
	return rc < 0 ? -1 : 0;
}

/* ---- methods ---- */

static cJSON *m_status(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r)
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
	int64_t pend = 0, ne = 0, nv = 0;
	hdqt_store_samples_pending_count(d->store, -1, &pend);
	cJSON_AddNumberToObject(o, "samples_pending", (double)pend);
	hdqt_store_counts(d->store, &ne, &nv);
	cJSON_AddNumberToObject(o, "exemplars", (double)ne);
	cJSON_AddNumberToObject(o, "validation_samples", (double)nv);
	cJSON_AddItemToObject(o, "training", training_json(d));
	const cJSON *acc = cJSON_GetObjectItemCaseSensitive(d->metrics, "validation_accuracy");
	if (cJSON_IsNumber(acc) && acc->valuedouble >= 0)
		cJSON_AddNumberToObject(o, "validation_accuracy", acc->valuedouble);
	else
		cJSON_AddNullToObject(o, "validation_accuracy");
	cJSON_AddStringToObject(o, "quant", hdqt_mode_name(d->cfg.quant));
	cJSON_AddStringToObject(o, "strategy", hdqt_cl_method_name(d->cfg.strategy));
	cJSON_AddStringToObject(o, "kernel", hdqt_kernel_name());
	cJSON_AddNumberToObject(o, "feature_dim", HDQT_FEAT_DIM);
	cJSON_AddNumberToObject(o, "window", d->cfg.window);
	cJSON_AddNumberToObject(o, "connections", d->n_conns);
	cJSON_AddStringToObject(o, "database", d->cfg.db);
	return o;
}

static cJSON *m_class_add(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r)
{
	const char *name = str_param(p, "name");
	if (!name)
		return fail(r, HDQT_RPC_INVALID_PARAMS, "params.name must be a string");
	const hdqt_store_class *old = class_by_name(d, name);
	if (old && old->active)
		return fail(r, HDQT_RPC_CLASS_EXISTS, "class \"%s\" exists (label %d)", name, old->label);
	if (!old && d->n_classes >= HDQT_MAX_CLASSES)
		return fail(r, HDQT_RPC_LIMIT, "hdqtd holds at most %d classes", HDQT_MAX_CLASSES);
	int rc;
	hdqt_store_class nc;
	if (old)
		rc = hdqt_store_class_set_active(d->store, name, 1);
	else
		rc = hdqt_store_class_add(d->store, name, &nc);
	if (rc == HDQT_EEXIST)
		return fail(r, HDQT_RPC_CLASS_EXISTS, "class \"%s\" exists", name);
	if (rc == HDQT_EINVAL)
		return fail(r, HDQT_RPC_INVALID_PARAMS,
			    "class name must be 1 to %d bytes of printable text", HDQT_CLASS_NAME_MAX);
	if (rc < 0)
		return store_fail(d, r, rc);
	if (hdqtd_reload_classes(d) < 0)
		hdqtd_log(LOG_ERR, "reloading classes: %s", hdqt_store_errmsg(d->store));
	const hdqt_store_class *now = class_by_name(d, name);
	if (!now)
		return fail(r, HDQT_RPC_STORAGE, "class vanished");
	hdqtd_log(LOG_INFO, "class \"%s\" %s (label %d)", name, old ? "reactivated" : "added",
		  now->label);
	cJSON *ev = cJSON_CreateObject();
	if (ev) {
		cJSON_AddStringToObject(ev, "name", name);
		cJSON_AddNumberToObject(ev, "label", now->label);
	}
	hdqtd_broadcast(d, hdqt_rpc_event("class.added", ev));
	return class_json(d, now, 0);
}

static cJSON *m_class_list(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r)
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

static cJSON *m_class_remove(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r)
{
	const char *name = str_param(p, "name");
	if (!name)
		return fail(r, HDQT_RPC_INVALID_PARAMS, "params.name must be a string");
	const hdqt_store_class *old = class_by_name(d, name);
	if (!old || !old->active)
		return fail(r, HDQT_RPC_UNKNOWN_CLASS, "no active class \"%s\"", name);
	int rc = hdqt_store_class_set_active(d->store, name, 0);
	if (rc < 0)
		return store_fail(d, r, rc);
	hdqtd_reload_classes(d);
	hdqtd_log(LOG_INFO, "class \"%s\" removed", name);
	cJSON *ev = cJSON_CreateObject();
	if (ev)
		cJSON_AddStringToObject(ev, "name", name);
	hdqtd_broadcast(d, hdqt_rpc_event("class.removed", ev));
	const hdqt_store_class *now = class_by_name(d, name);
	return now ? class_json(d, now, 0) : fail(r, HDQT_RPC_STORAGE, "class vanished");
}

static cJSON *m_sample_add(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r)
{
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "samples");
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
	if (n > d->cfg.max_batch)
		return fail(r, HDQT_RPC_LIMIT, "%d samples exceed daemon.max_batch (%d)", n,
			    d->cfg.max_batch);
	float *X = malloc(sizeof(float) * (size_t)n * HDQT_FEAT_DIM);
	int64_t *ids = malloc(sizeof(int64_t) * (size_t)n);
	if (!X || !ids) {
		free(X);
		free(ids);
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	}
	int i = 0;
	const cJSON *s = list ? list->child : p;
	for (; i < n; i++, s = s->next) {
		char what[48];
		snprintf(what, sizeof(what), list ? "samples[%d]" : "sample", i);
		const char *name = cJSON_IsObject(s) ? str_param(s, "class") : NULL;
		if (!name) {
			fail(r, HDQT_RPC_INVALID_PARAMS, "%s: \"class\" must be a class name", what);
			break;
		}
		const hdqt_store_class *k = class_by_name(d, name);
		if (!k || !k->active) {
			fail(r, HDQT_RPC_UNKNOWN_CLASS, "%s: unknown class \"%s\" (add it with class.add)",
			     what, name);
			break;
		}
		ids[i] = k->id;
		if (input_features(d, s, X + (size_t)i * HDQT_FEAT_DIM, r, what) < 0)
			break;
	}
	cJSON *o = NULL;
	if (i == n) {
		int rc = hdqt_store_samples_add(d->store, ids, X, n, HDQT_FEAT_DIM);
		if (rc < 0) {
			store_fail(d, r, rc);
		} else {
			int64_t pend = 0;
			hdqt_store_samples_pending_count(d->store, -1, &pend);
			o = cJSON_CreateObject();
			if (o) {
				cJSON_AddNumberToObject(o, "accepted", n);
				cJSON_AddNumberToObject(o, "samples_pending", (double)pend);
			}
		}
	}
	free(X);
	free(ids);
	if (o)
		hdqtd_maybe_train(d);
	return o;
}

static int cmp_desc(const void *a, const void *b, void *arg)
{
	const float *p = arg;
	float x = p[*(const int *)a], y = p[*(const int *)b];
	return x < y ? 1 : x > y ? -1 : 0;
}

static cJSON *prediction_json(hdqtd *d, const float *logits, int C, int top_k)
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
	cJSON_AddNumberToObject(o, "confidence", prob[idx[0]]);
	for (int j = 0; j < k && j < top_k; j++) {
		cJSON *t = cJSON_CreateObject();
		if (!t)
			break;
		cJSON_AddStringToObject(t, "class", class_by_label(d, idx[j])->name);
		cJSON_AddNumberToObject(t, "confidence", prob[idx[j]]);
		cJSON_AddItemToArray(top, t);
	}
	cJSON_AddItemToObject(o, "top", top);
	cJSON_AddNumberToObject(o, "model_version", (double)d->model_version);
	return o;
}

static cJSON *m_predict(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r)
{
	int top_k = 3;
	const cJSON *tk = cJSON_GetObjectItemCaseSensitive(p, "top_k");
	if (tk) {
		if (!cJSON_IsNumber(tk) || tk->valuedouble != (double)(int)tk->valuedouble ||
		    tk->valueint < 1 || tk->valueint > 100)
			return fail(r, HDQT_RPC_INVALID_PARAMS, "top_k must be an integer in [1, 100]");
		top_k = tk->valueint;
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
	float *X = malloc(sizeof(float) * (size_t)n * HDQT_FEAT_DIM);
	if (!X)
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	const cJSON *s = inputs ? inputs->child : p;
	for (int i = 0; i < n; i++, s = s->next) {
		char what[48];
		snprintf(what, sizeof(what), inputs ? "inputs[%d]" : "input", i);
		if (input_features(d, s, X + (size_t)i * HDQT_FEAT_DIM, r, what) < 0) {
			free(X);
			return NULL;
		}
	}
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
	float *logits = malloc(sizeof(float) * (size_t)n * C);
	int rc = logits ? hdqt_model_forward(d->model, X, n, logits) : HDQT_ENOMEM;
	free(X);
	if (rc < 0) {
		free(logits);
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "inference: %s", hdqt_strerror(rc));
	}
	cJSON *o;
	if (!inputs) {
		o = prediction_json(d, logits, C, top_k);
	} else {
		o = cJSON_CreateObject();
		cJSON *a = cJSON_AddArrayToObject(o, "predictions");
		for (int i = 0; a && i < n; i++)
			cJSON_AddItemToArray(a, prediction_json(d, logits + (size_t)i * C, C, top_k));
		cJSON_AddNumberToObject(o, "model_version", (double)d->model_version);
	}
	free(logits);
	return o ? o : fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
}

static cJSON *start_round(hdqtd *d, reply *r, int explicit)
{
	int64_t pend = 0;
	int rc = hdqt_store_samples_pending_count(d->store, -1, &pend);
	if (rc < 0)
		return store_fail(d, r, rc);
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	if (pend == 0) {
		cJSON_AddBoolToObject(o, "started", 0);
		cJSON_AddStringToObject(o, "reason", "no pending samples");
		return o;
	}
	if ((rc = hdqtd_trainer_request(d->trainer)) < 0) {
		cJSON_Delete(o);
		return fail(r, HDQT_RPC_BUSY, "a training round is already running");
	}
	hdqtd_log(LOG_INFO, "training round requested (%s, %lld samples pending)",
		  explicit ? "train" : "auto", (long long)pend);
	cJSON_AddBoolToObject(o, "started", 1);
	cJSON_AddNumberToObject(o, "samples", (double)pend);
	return o;
}

static cJSON *m_train(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r)
{
	return start_round(d, r, 1);
}

static cJSON *m_train_status(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r)
{
	cJSON *o = training_json(d);
	return o ? o : fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
}

static cJSON *m_train_cancel(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	cJSON_AddBoolToObject(o, "canceled", hdqtd_trainer_cancel(d->trainer));
	return o;
}

static cJSON *m_model_list(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r)
{
	hdqt_store_model *ms = NULL;
	int n = 0;
	int rc = hdqt_store_model_list(d->store, &ms, &n);
	if (rc < 0)
		return store_fail(d, r, rc);
	cJSON *o = cJSON_CreateObject();
	cJSON *a = cJSON_AddArrayToObject(o, "models");
	for (int k = 0; a && k < n; k++) {
		const int i = ms[0].version < ms[n - 1].version ? n - 1 - k : k; /* newest first */
		cJSON *m = cJSON_CreateObject();
		if (!m)
			break;
		cJSON_AddNumberToObject(m, "version", (double)ms[i].version);
		cJSON_AddNumberToObject(m, "created", (double)ms[i].created);
		cJSON_AddBoolToObject(m, "current", ms[i].current);
		cJSON_AddNumberToObject(m, "bytes", (double)ms[i].blob_len);
		cJSON *met = cJSON_Parse(ms[i].metrics);
		cJSON_AddItemToObject(m, "metrics", met ? met : cJSON_CreateObject());
		cJSON_AddItemToArray(a, m);
	}
	free(ms);
	return a ? o : (cJSON_Delete(o), fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory"));
}

static cJSON *m_model_rollback(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(p, "version");
	if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 9e15 ||
	    v->valuedouble != floor(v->valuedouble))
		return fail(r, HDQT_RPC_INVALID_PARAMS, "params.version must be a positive integer");
	hdqtd_progress pr;
	hdqtd_trainer_progress(d->trainer, &pr);
	if (pr.running)
		return fail(r, HDQT_RPC_BUSY, "a training round is running; cancel it first");
	int64_t ver = (int64_t)v->valuedouble, prev = d->model_version;
	int rc = hdqt_store_model_rollback(d->store, ver);
	if (rc == HDQT_ENOTFOUND)
		return fail(r, HDQT_RPC_NOT_FOUND, "no stored model version %lld", (long long)ver);
	if (rc < 0)
		return store_fail(d, r, rc);
	if ((rc = hdqtd_load_model(d)) < 0)
		return fail(r, HDQT_RPC_STORAGE, "loading model %lld: %s", (long long)ver,
			    hdqt_strerror(rc));
	hdqtd_log(LOG_NOTICE, "model rolled back from version %lld to %lld", (long long)prev,
		  (long long)ver);
	cJSON *ev = cJSON_CreateObject();
	if (ev) {
		cJSON_AddNumberToObject(ev, "model_version", (double)ver);
		cJSON_AddNumberToObject(ev, "previous", (double)prev);
		cJSON_AddStringToObject(ev, "reason", "rollback");
	}
	hdqtd_broadcast(d, hdqt_rpc_event("model.swapped", ev));
	cJSON *o = cJSON_CreateObject();
	if (o)
		cJSON_AddNumberToObject(o, "model_version", (double)ver);
	return o;
}

static cJSON *m_subscribe(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r)
{
	c->subscribed = 1;
	cJSON *o = cJSON_CreateObject();
	if (o)
		cJSON_AddBoolToObject(o, "subscribed", 1);
	return o;
}

static cJSON *m_unsubscribe(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r)
{
	c->subscribed = 0;
	cJSON *o = cJSON_CreateObject();
	if (o)
		cJSON_AddBoolToObject(o, "subscribed", 0);
	return o;
}

static cJSON *m_config_get(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r)
{
	cJSON *o = hdqtd_config_json(&d->cfg);
	return o ? o : fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
}

static cJSON *m_describe(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r)
{
	cJSON *o = cJSON_Parse(hdqt_rpc_description);
	return o ? o : fail(r, HDQT_RPC_INTERNAL_ERROR, "description unavailable");
}

typedef cJSON *(*method_fn)(hdqtd *d, hdqtd_conn *c, const cJSON *p, reply *r);
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
	{"events.subscribe", m_subscribe, 0},
	{"events.unsubscribe", m_unsubscribe, 0},
	{"config.get", m_config_get, 0},
	{"rpc.describe", m_describe, 0},
	{"rpc.discover", m_describe, 0},
};

cJSON *hdqtd_dispatch(hdqtd *d, hdqtd_conn *c, const cJSON *req)
{
	/* Validate the envelope (JSON-RPC 2.0, section 4). */
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(req, "id");
	const cJSON *ver = cJSON_GetObjectItemCaseSensitive(req, "jsonrpc");
	const cJSON *meth = cJSON_GetObjectItemCaseSensitive(req, "method");
	const cJSON *params = cJSON_GetObjectItemCaseSensitive(req, "params");
	int bad_id = 0;
	if (id && !cJSON_IsString(id) && !cJSON_IsNumber(id) && !cJSON_IsNull(id)) {
		id = NULL; /* an invalid id is answered with a null id */
		bad_id = 1;
	}
	if (!cJSON_IsObject(req) || !cJSON_IsString(ver) || strcmp(ver->valuestring, "2.0") != 0 ||
	    !cJSON_IsString(meth) || bad_id)
		return hdqt_rpc_error(id, HDQT_RPC_INVALID_REQUEST,
				      "invalid request: expected {\"jsonrpc\": \"2.0\", \"method\": ...}",
				      NULL);
	const int notify = !cJSON_HasObjectItem(req, "id");
	if (params && !cJSON_IsObject(params) &&
	    !(cJSON_IsArray(params) && cJSON_GetArraySize(params) == 0)) {
		if (cJSON_IsArray(params))
			return notify ? NULL
				      : hdqt_rpc_error(id, HDQT_RPC_INVALID_PARAMS,
						       "params must be an object (named parameters)", NULL);
		return notify ? NULL
			      : hdqt_rpc_error(id, HDQT_RPC_INVALID_REQUEST,
					       "invalid request: params must be an object", NULL);
	}
	if (cJSON_IsArray(params))
		params = NULL;
	const struct method *m = NULL;
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strcmp(methods[i].name, meth->valuestring) == 0)
			m = &methods[i];
	if (!m) {
		char msg[160];
		snprintf(msg, sizeof(msg), "method not found: %.100s", meth->valuestring);
		return notify ? NULL : hdqt_rpc_error(id, HDQT_RPC_METHOD_NOT_FOUND, msg, NULL);
	}
	reply r = {0};
	cJSON *res;
	if (d->stopping && m->admin)
		res = fail(&r, HDQT_RPC_SHUTTING_DOWN, "hdqtd is shutting down");
	else if (m->admin && !c->admin)
		res = fail(&r, HDQT_RPC_FORBIDDEN, "%s needs membership of group \"%s\"", m->name,
			   d->cfg.admin_group);
	else
		res = m->fn(d, c, params ? params : NULL, &r);
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
	if (!d->cfg.auto_train || d->stopping)
		return;
	hdqtd_progress p;
	hdqtd_trainer_progress(d->trainer, &p);
	if (p.running)
		return;
	int64_t pend = 0;
	if (hdqt_store_samples_pending_count(d->store, -1, &pend) < 0)
		return;
	if (pend - d->pending_baseline < d->cfg.auto_min_samples)
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
	int64_t pend = 0;
	hdqt_store_samples_pending_count(d->store, -1, &pend);
	/* Auto rounds wait for new samples after a round that left its own pending. */
	d->pending_baseline = res->outcome == HDQTD_ROUND_ACCEPTED ? 0 : pend;
	const int prio = res->outcome == HDQTD_ROUND_FAILED ? LOG_ERR
		       : res->outcome == HDQTD_ROUND_REJECTED ? LOG_WARNING : LOG_INFO;
	hdqtd_log(prio, "round %lld %s in %.1f s: %d samples, %d classes, validation %.2f%% "
		  "(current model %.2f%%)%s%s", (long long)res->round,
		  hdqtd_outcome_name(res->outcome), res->seconds, res->samples, res->classes,
		  res->val_acc, res->prev_acc, res->reason[0] ? ": " : "", res->reason);
	int64_t prev = d->model_version;
	if (res->outcome == HDQTD_ROUND_ACCEPTED) {
		if (res->model) {
			hdqt_model_free(d->model);
			d->model = res->model; /* the swap: the next request sees the new model */
			res->model = NULL;
			d->model_version = res->model_version;
			set_metrics(d, res->metrics);
			refresh_learned(d);
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
