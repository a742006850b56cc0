/* SPDX-License-Identifier: MIT */
/*
 * Open-set prediction in the daemon: the serving model's calibration
 * (lib/novelty.c, stored with its version by the round that made it), the
 * unknown flag and novelty score of every prediction, the bounded store of
 * unknown windows, their groups, the novelty.detected event, and the
 * methods that show the groups and turn one into a class (PROTOCOL.md,
 * "Open-set prediction").
 *
 * Predictions never wait for the database: unknown windows go to a
 * bounded buffer on the loop and from there, one writer job at a time
 * (when 64 are waiting, or at the next tick), to the store; what does not
 * fit the buffer while a job runs is counted as dropped.
 *
 * Groups are formed as windows arrive (leader clustering on the loop,
 * against the live groups of the serving model) and stored with each
 * window, so a group id names the same windows from one listing to the
 * next and a promotion moves exactly what the operator saw, minus what was
 * trimmed meanwhile.  A new model starts new groups: its embeddings are
 * not comparable with the old one's.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "hdqt_novelty.h"
#include "log.h"
#include "openset.h"

#define UNK_BUF 256                 /* unknown windows waiting for the writer */
#define FLUSH_AT 64                 /* ... handed over at once when this many wait */
#define REBUILD_ROWS 2000           /* newest windows that rebuild the live groups */
#define MAX_LIVE 256                /* live groups; past them a window joins its nearest */

struct hdqtd_openset {
	hdqt_novelty *nv;    /* the serving model's calibration (NULL: none) */
	/* live groups of the serving model: id, window count, sum of directions */
	int e, n_live;
	int64_t gid[MAX_LIVE];
	int64_t gcount[MAX_LIVE];
	float *gsum;         /* MAX_LIVE x e */
	float gnorm2[MAX_LIVE]; /* |gsum|^2, kept as windows join */
	int64_t next_group;
	float X[UNK_BUF * HDQT_FEAT_DIM];
	float score[UNK_BUF];
	int label[UNK_BUF];
	int64_t group[UNK_BUF];
	int n;               /* windows in the buffer */
	int writing;         /* a store job is on the writer */
	int public_listing;  /* a non-admin unknowns.list is on the writer */
	int64_t stored;      /* rows in the store */
	int64_t since_alert; /* unknown predictions since the last novelty.detected */
	double last_alert;
	uint64_t seen, dropped;
};

int hdqtd_openset_calibrate(const hdqtd_config *c, hdqt_model *m, const hdqt_memory *mem, int classes,
			    const float *VX, int n, uint8_t **out, size_t *len, char *what, size_t wlen)
{
	*out = NULL;
	*len = 0;
	hdqt_novelty_kind kind = (hdqt_novelty_kind)c->novelty_kind;
	hdqt_novelty *nv = NULL;
	int rc = hdqt_novelty_fit(&nv, m, mem, classes, VX, n, kind, (float)c->unknown_rate);
	if (rc == HDQT_ESTATE && (kind == HDQT_NOVELTY_NME || kind == HDQT_NOVELTY_KNN)) {
		kind = HDQT_NOVELTY_ENERGY;
		rc = hdqt_novelty_fit(&nv, m, mem, classes, VX, n, kind, (float)c->unknown_rate);
	}
	if (rc == 0)
		rc = hdqt_novelty_save(nv, out, len);
	if (rc == 0 && what)
		snprintf(what, wlen, "(%s) on %d held-out samples, pooled threshold %.4f",
			 hdqt_novelty_kind_name(kind), n, hdqt_novelty_threshold(nv, -1));
	hdqt_novelty_free(nv);
	return rc;
}

int hdqtd_openset_new(hdqtd *d)
{
	if (!(d->openset = calloc(1, sizeof(*d->openset))))
		return HDQT_ENOMEM;
	hdqtd_openset *os = d->openset;
	os->last_alert = -1e300;
	int64_t maxg = 0;
	if (hdqt_store_unknowns_count(d->store, &os->stored, &maxg) < 0)
		hdqtd_log(LOG_WARNING, "counting unknown windows: %s", hdqt_store_errmsg(d->store));
	os->next_group = maxg + 1;
	return 0;
}

void hdqtd_openset_free(hdqtd *d)
{
	if (!d->openset)
		return;
	hdqt_novelty_free(d->openset->nv);
	free(d->openset->gsum);
	free(d->openset);
	d->openset = NULL;
}

/* Unit direction of embedding z (e floats, overwritten) seen from the
 * known classes' centre: after ReLU every embedding lies in the positive
 * orthant and raw cosines are all near 1 (1 - cos of 0.005 to 0.03 on
 * HAPT), while the direction away from what is known tells activities
 * apart. */
static void direction(const hdqtd_openset *os, float *z)
{
	const float *c = hdqt_novelty_centre(os->nv);
	double zz = 0;
	for (int k = 0; k < os->e; k++)
		zz += (double)z[k] * z[k];
	const float zn = zz > 0 ? (float)(1.0 / sqrt(zz)) : 0.0f;
	double ss = 0;
	for (int k = 0; k < os->e; k++) {
		z[k] = z[k] * zn - c[k];
		ss += (double)z[k] * z[k];
	}
	const float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
	for (int k = 0; k < os->e; k++)
		z[k] *= inv;
}

/* The live group a direction joins: the most similar one at or above
 * open_set.group_similarity, else a new one, else (all MAX_LIVE taken)
 * the most similar.  Its id; the group's sum takes z. */
/* Live group slot g takes unit direction z (dot: z . its sum before). */
static void join(hdqtd_openset *os, int g, const float *z, float dot)
{
	float *sum = os->gsum + (size_t)g * os->e;
	for (int k = 0; k < os->e; k++)
		sum[k] += z[k];
	os->gnorm2[g] += 2.0f * dot + hdqt_novelty_dot(z, z, os->e); /* |s + z|^2 = |s|^2 + 2 s.z + |z|^2 */
	os->gcount[g]++;
}

static int new_slot(hdqtd_openset *os, int64_t id)
{
	const int g = os->n_live++;
	os->gid[g] = id;
	os->gcount[g] = 0;
	os->gnorm2[g] = 0;
	memset(os->gsum + (size_t)g * os->e, 0, sizeof(float) * (size_t)os->e);
	return g;
}

static int64_t assign(hdqtd *d, const float *z)
{
	hdqtd_openset *os = d->openset;
	int best = -1;
	float bestc = -2, bestdot = 0;
	for (int g = 0; g < os->n_live; g++) {
		/* one dot product per group: its norm is kept as windows join */
		const float dot = hdqt_novelty_dot(z, os->gsum + (size_t)g * os->e, os->e);
		const float c = os->gnorm2[g] > 0 ? dot / sqrtf(os->gnorm2[g]) : 0;
		if (c > bestc) {
			bestc = c;
			best = g;
			bestdot = dot;
		}
	}
	if (best < 0 || (bestc < d->cfg.group_similarity && os->n_live < MAX_LIVE)) {
		best = new_slot(os, os->next_group++);
		bestdot = 0;
	}
	join(os, best, z, bestdot);
	return os->gid[best];
}

/* The live groups of the serving model from its stored windows (after a
 * restart, a rollback), the newest REBUILD_ROWS of them: on the loop,
 * bounded, once per model change. */
static void rebuild(hdqtd *d)
{
	hdqtd_openset *os = d->openset;
	hdqt_store_unknown *u = NULL;
	float *X = NULL, *emb = NULL;
	int n = 0;
	if (hdqt_store_unknowns_list(d->store, HDQT_FEAT_DIM, REBUILD_ROWS, d->model_version, &u, &X, &n) < 0) {
		hdqtd_log(LOG_WARNING, "unknown windows: %s", hdqt_store_errmsg(d->store));
		return;
	}
	if (n > 0 && (!(emb = malloc(sizeof(float) * (size_t)n * os->e)) ||
		      hdqt_model_embed(d->model, X, n, emb) < 0))
		n = 0;
	for (int i = 0; i < n; i++) {
		float *z = emb + (size_t)i * os->e;
		direction(os, z);
		int g = -1;
		for (int k = 0; k < os->n_live && g < 0; k++)
			if (os->gid[k] == u[i].group)
				g = k;
		if (g < 0 && os->n_live < MAX_LIVE)
			g = new_slot(os, u[i].group);
		if (g >= 0)
			join(os, g, z, hdqt_novelty_dot(z, os->gsum + (size_t)g * os->e, os->e));
	}
	free(u);
	free(X);
	free(emb);
}

void hdqtd_openset_load(hdqtd *d)
{
	hdqtd_openset *os = d->openset;
	if (!os)
		return;
	hdqt_novelty_free(os->nv);
	os->nv = NULL;
	os->n_live = 0;
	if (!d->model)
		return;
	uint8_t *blob = NULL;
	size_t len = 0;
	int rc = hdqt_store_model_novelty(d->store, d->model_version, &blob, &len);
	if (rc == HDQT_ENOTFOUND) {
		hdqtd_log(LOG_INFO, "model %lld has no open-set calibration: predictions carry no "
			  "unknown flag until the next round", (long long)d->model_version);
		return;
	}
	hdqt_novelty *nv = NULL;
	if (rc == 0)
		rc = hdqt_novelty_load(blob, len, &nv);
	free(blob);
	const int e = hdqt_model_embed_dim(d->model);
	if (rc == 0 && (hdqt_novelty_classes(nv) > hdqt_model_n_classes(d->model) ||
			hdqt_novelty_embed_dim(nv) != e))
		rc = HDQT_ECORRUPT;
	if (rc == 0 && e != os->e) {
		float *g = realloc(os->gsum, sizeof(float) * (size_t)MAX_LIVE * e);
		if (g) {
			os->gsum = g;
			os->e = e;
		} else {
			rc = HDQT_ENOMEM;
		}
	}
	if (rc < 0) {
		hdqt_novelty_free(nv);
		hdqtd_log(LOG_WARNING, "model %lld: open-set calibration unusable (%s): no unknown flags",
			  (long long)d->model_version, hdqt_strerror(rc));
		return;
	}
	os->nv = nv;
	rebuild(d);
}

int hdqtd_openset_needs_embedding(const hdqtd *d)
{
	/* every score: the embedding also places an unknown window in a group */
	return d->openset && d->openset->nv;
}

/* ---- storing unknown windows ---- */

typedef struct ujob {
	hdqtd_job job;
	hdqtd *d;
	float *X, *score;
	int *label;
	int64_t *group;
	int n, keep, rc, removed;
	int64_t version;
	char err[256];
} ujob;

static void ujob_run(hdqtd_job *hj, hdqt_store *s, hdqt_feat *f)
{
	(void)f;
	ujob *j = (ujob *)hj;
	j->rc = hdqt_store_unknowns_add(s, j->X, j->label, j->score, j->group, j->n, HDQT_FEAT_DIM,
					j->version, j->keep, &j->removed);
	if (j->rc < 0)
		snprintf(j->err, sizeof(j->err), "%s", hdqt_store_errmsg(s));
}

static void flush(hdqtd *d);

static void ujob_free(ujob *j)
{
	free(j->X);
	free(j->score);
	free(j->label);
	free(j->group);
	free(j);
}

static void ujob_done(hdqtd_job *hj)
{
	ujob *j = (ujob *)hj;
	hdqtd *d = j->d;
	hdqtd_openset *os = d->openset;
	if (j->rc < 0) {
		os->dropped += (uint64_t)j->n;
		hdqtd_log(LOG_WARNING, "storing %d unknown windows: %s", j->n, j->err);
	} else {
		os->stored += j->n - j->removed;
	}
	ujob_free(j);
	os->writing = 0;
	if (os->n >= FLUSH_AT)
		flush(d);
}

/* Hand the buffer to the writer, unless a job is on it already. */
static void flush(hdqtd *d)
{
	hdqtd_openset *os = d->openset;
	if (os->writing || os->n == 0)
		return;
	const size_t n = (size_t)os->n;
	if (d->stopping) { /* the writer takes no new work: say what is lost */
		os->dropped += n;
		os->n = 0;
		return;
	}
	ujob *j = calloc(1, sizeof(*j));
	if (j) {
		j->X = malloc(sizeof(float) * n * HDQT_FEAT_DIM);
		j->score = malloc(sizeof(float) * n);
		j->label = malloc(sizeof(int) * n);
		j->group = malloc(sizeof(int64_t) * n);
	}
	if (!j || !j->X || !j->score || !j->label || !j->group) {
		if (j)
			ujob_free(j);
		os->dropped += n;
		os->n = 0;
		return;
	}
	memcpy(j->X, os->X, sizeof(float) * n * HDQT_FEAT_DIM);
	memcpy(j->score, os->score, sizeof(float) * n);
	memcpy(j->label, os->label, sizeof(int) * n);
	memcpy(j->group, os->group, sizeof(int64_t) * n);
	j->n = os->n;
	j->d = d;
	j->keep = d->cfg.keep_unknowns;
	j->version = d->model_version;
	j->job.run = ujob_run;
	j->job.done = ujob_done;
	os->n = 0;
	os->writing = 1;
	hdqtd_writer_submit(d->writer, &j->job);
}

static void maybe_alert(hdqtd *d)
{
	hdqtd_openset *os = d->openset;
	const double now = hdqtd_now();
	if (os->since_alert < d->cfg.alert_count || now - os->last_alert < d->cfg.alert_interval_s)
		return;
	cJSON *ev = cJSON_CreateObject();
	if (ev) {
		cJSON_AddNumberToObject(ev, "unknowns", (double)os->since_alert);
		cJSON_AddNumberToObject(ev, "unknowns_stored", (double)(os->stored + os->n));
		cJSON_AddNumberToObject(ev, "model_version", (double)d->model_version);
	}
	hdqtd_log(LOG_NOTICE, "novelty detected: %lld windows unlike every known class; see "
		  "hdqtctl unknowns", (long long)os->since_alert);
	hdqtd_broadcast(d, hdqt_rpc_event("novelty.detected", ev));
	os->since_alert = 0;
	os->last_alert = now;
}

void hdqtd_openset_annotate(hdqtd *d, cJSON *o, const float *x, const float *logits, float *emb,
			    int label)
{
	hdqtd_openset *os = d->openset;
	if (!os || !os->nv) {
		cJSON_AddBoolToObject(o, "unknown", 0);
		cJSON_AddNullToObject(o, "novelty");
		return;
	}
	int unknown = 0;
	const float s = hdqt_novelty_score1(os->nv, logits, emb, label, &unknown);
	cJSON_AddBoolToObject(o, "unknown", unknown);
	hdqt_rpc_add_float(o, "novelty", s); /* null unless finite */
	hdqt_rpc_add_float(o, "novelty_threshold", hdqt_novelty_threshold(os->nv, label));
	if (!unknown)
		return;
	os->seen++;
	os->since_alert++;
	d->stats.predictions_unknown++;
	if (d->cfg.keep_unknowns > 0 && emb) {
		if (os->n < UNK_BUF) {
			direction(os, emb); /* emb is the caller's scratch: done with it */
			os->group[os->n] = assign(d, emb);
			memcpy(os->X + (size_t)os->n * HDQT_FEAT_DIM, x, sizeof(float) * HDQT_FEAT_DIM);
			os->score[os->n] = s;
			os->label[os->n] = label;
			os->n++;
		} else {
			os->dropped++;
		}
	}
	maybe_alert(d);
}

void hdqtd_openset_flush(hdqtd *d)
{
	if (d->openset && d->openset->n >= FLUSH_AT)
		flush(d);
}

void hdqtd_openset_tick(hdqtd *d)
{
	if (d->openset)
		flush(d);
}

cJSON *hdqtd_openset_status(hdqtd *d)
{
	hdqtd_openset *os = d->openset;
	cJSON *o = cJSON_CreateObject();
	if (!o || !os)
		return o;
	cJSON_AddBoolToObject(o, "calibrated", os->nv != NULL);
	if (os->nv) {
		cJSON_AddStringToObject(o, "score", hdqt_novelty_kind_name(hdqt_novelty_get_kind(os->nv)));
		cJSON_AddNumberToObject(o, "unknown_rate", hdqt_novelty_rate(os->nv));
		cJSON_AddNumberToObject(o, "threshold", hdqt_novelty_threshold(os->nv, -1));
		cJSON_AddNumberToObject(o, "classes", hdqt_novelty_classes(os->nv));
	}
	cJSON_AddNumberToObject(o, "unknowns_seen", (double)os->seen);
	cJSON_AddNumberToObject(o, "unknowns_stored", (double)(os->stored + os->n));
	cJSON_AddNumberToObject(o, "unknowns_dropped", (double)os->dropped);
	cJSON_AddNumberToObject(o, "groups_live", os->n_live);
	return o;
}

/* ---- listing, promotion, dropping ---- */

enum { LJ_LIST, LJ_PROMOTE, LJ_DROP };

typedef struct ljob {
	hdqtd_job job;
	hdqtd *d;
	hdqtd_conn *c;
	cJSON *id;
	int notify, kind, is_public;
	hdqtd_reply r;
	int max_groups;
	/* promote / drop: a group, ids, or (drop) all */
	int64_t group;
	int64_t *ids;
	int n_ids, all;
	char name[HDQT_CLASS_NAME_MAX + 1];
	/* results */
	int rc;
	char err[256];
	hdqt_store_ugroup *groups;
	int n_groups;
	int created;
	int64_t moved, dropped;
	hdqt_store_class cls;
	hdqt_store_class *classes;
	int n_classes;
} ljob;

static void ljob_free(ljob *j)
{
	free(j->groups);
	free(j->ids);
	free(j->classes);
	cJSON_Delete(j->id);
	free(j);
}

static void ljob_run(hdqtd_job *hj, hdqt_store *s, hdqt_feat *f)
{
	(void)f;
	ljob *j = (ljob *)hj;
	int rc;
	if (j->kind == LJ_LIST) {
		rc = hdqt_store_unknowns_groups(s, &j->groups, &j->n_groups);
	} else if (j->kind == LJ_DROP) {
		rc = hdqt_store_unknowns_drop(s, j->all ? 0 : j->group, j->ids, j->n_ids, HDQT_FEAT_DIM,
					      &j->dropped);
	} else {
		rc = hdqt_store_unknowns_promote(s, j->name, j->group, j->ids, j->n_ids, HDQT_FEAT_DIM,
						 &j->cls, &j->created, &j->moved);
		if (rc == 0 && hdqt_store_class_list(s, &j->classes, &j->n_classes) < 0)
			j->classes = NULL; /* committed: the loop keeps its cache and says so */
	}
	if (rc < 0)
		snprintf(j->err, sizeof(j->err), "%s", rc == HDQT_ENOMEM ? "out of memory" : hdqt_store_errmsg(s));
	j->rc = rc;
}

static int cmp_group(const void *a, const void *b)
{
	const hdqt_store_ugroup *x = a, *y = b;
	if (x->size != y->size)
		return x->size > y->size ? -1 : 1;
	return (x->group > y->group) - (x->group < y->group);
}

static const char *label_name(hdqtd *d, int label)
{
	for (int i = 0; i < d->n_classes; i++)
		if (d->classes[i].label == label)
			return d->classes[i].name;
	return NULL;
}

static cJSON *list_result(hdqtd *d, ljob *j)
{
	if (j->n_groups > 1) /* none: groups is NULL, which qsort may not be given */
		qsort(j->groups, (size_t)j->n_groups, sizeof(*j->groups), cmp_group);
	cJSON *o = cJSON_CreateObject();
	cJSON *a = o ? cJSON_AddArrayToObject(o, "groups") : NULL;
	if (!a) {
		cJSON_Delete(o);
		return NULL;
	}
	int64_t total = 0;
	for (int k = 0; k < j->n_groups; k++)
		total += j->groups[k].size;
	d->openset->stored = total; /* exact as of this read (the buffer comes on top) */
	cJSON_AddNumberToObject(o, "unknowns", (double)total);
	cJSON_AddNumberToObject(o, "groups_total", j->n_groups);
	cJSON_AddNumberToObject(o, "model_version", (double)d->model_version);
	for (int k = 0; k < j->n_groups && k < j->max_groups; k++) {
		const hdqt_store_ugroup *g = &j->groups[k];
		cJSON *go = cJSON_CreateObject();
		if (!go)
			break;
		cJSON_AddNumberToObject(go, "group", (double)g->group);
		cJSON_AddNumberToObject(go, "size", (double)g->size);
		cJSON_AddNumberToObject(go, "first_seen", (double)g->first);
		cJSON_AddNumberToObject(go, "last_seen", (double)g->last);
		cJSON_AddNumberToObject(go, "mean_novelty", g->size ? g->score_sum / (double)g->size : 0);
		const char *nm = g->label >= 0 ? label_name(d, g->label) : NULL;
		if (nm)
			cJSON_AddStringToObject(go, "closest_class", nm);
		else
			cJSON_AddNullToObject(go, "closest_class");
		cJSON *ids = cJSON_AddArrayToObject(go, "ids");
		for (int i = 0; ids && i < g->size && i < HDQT_STORE_GROUP_IDS; i++)
			cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)g->ids[i]));
		cJSON_AddItemToArray(a, go);
	}
	return o;
}

static cJSON *promote_result(hdqtd *d, ljob *j)
{
	if (j->classes) {
		free(d->classes);
		d->classes = j->classes;
		d->n_classes = j->n_classes;
		j->classes = NULL;
	} else {
		hdqtd_log(LOG_ERR, "reloading classes after promoting unknowns to \"%s\"", j->name);
	}
	if (j->cls.label >= 0 && j->cls.label < HDQT_MAX_CLASSES)
		d->pending[j->cls.label] += j->moved;
	d->pending_total += j->moved;
	d->openset->stored -= j->moved;
	hdqtd_log(LOG_NOTICE, "%lld unknown windows are now samples of %sclass \"%s\"",
		  (long long)j->moved, j->created ? "the new " : "", j->name);
	if (j->created) {
		cJSON *ev = cJSON_CreateObject();
		if (ev) {
			cJSON_AddStringToObject(ev, "name", j->cls.name);
			cJSON_AddNumberToObject(ev, "label", j->cls.label);
		}
		hdqtd_broadcast(d, hdqt_rpc_event("class.added", ev));
	}
	cJSON *o = cJSON_CreateObject();
	if (o) {
		cJSON_AddStringToObject(o, "class", j->cls.name);
		cJSON_AddNumberToObject(o, "label", j->cls.label);
		cJSON_AddBoolToObject(o, "created", j->created);
		cJSON_AddNumberToObject(o, "samples", (double)j->moved);
		cJSON_AddNumberToObject(o, "samples_pending", (double)d->pending_total);
		cJSON_AddNumberToObject(o, "unknowns", (double)(d->openset->stored > 0 ? d->openset->stored : 0));
	}
	return o;
}

static void ljob_done(hdqtd_job *hj)
{
	ljob *j = (ljob *)hj;
	hdqtd *d = j->d;
	hdqtd_openset *os = d->openset;
	if (j->is_public)
		os->public_listing = 0;
	cJSON *res = NULL;
	if (j->rc == HDQT_ENOTFOUND)
		hdqtd_fail(&j->r, HDQT_RPC_NOT_FOUND, "%s (list the groups with hdqtctl unknowns)", j->err);
	else if (j->rc == HDQT_EINVAL || j->rc == HDQT_ERANGE)
		hdqtd_fail(&j->r, HDQT_RPC_INVALID_PARAMS, "%s", j->err);
	else if (j->rc == HDQT_EFULL)
		hdqtd_fail(&j->r, HDQT_RPC_LIMIT, "%s (nothing was changed)", j->err);
	else if (j->rc < 0)
		hdqtd_fail(&j->r, HDQT_RPC_STORAGE, "database error (nothing was changed): %s", j->err);
	else if (j->kind == LJ_LIST)
		res = list_result(d, j);
	else if (j->kind == LJ_PROMOTE)
		res = promote_result(d, j);
	else {
		os->stored = j->all ? 0 : os->stored - j->dropped;
		if ((res = cJSON_CreateObject()) != NULL) {
			cJSON_AddNumberToObject(res, "dropped", (double)j->dropped);
			cJSON_AddNumberToObject(res, "unknowns", (double)(os->stored > 0 ? os->stored : 0));
		}
	}
	const int promoted = j->kind == LJ_PROMOTE && j->rc == 0 && j->moved > 0;
	cJSON *resp = hdqtd_late_reply(j->id, j->notify || j->c->dead, res, &j->r);
	hdqtd_conn *c = j->c;
	ljob_free(j);
	hdqtd_conn_complete(c, resp);
	if (promoted)
		hdqtd_maybe_train(d);
}

static ljob *ljob_new(hdqtd *d, hdqtd_conn *c, hdqtd_call *k, int kind, hdqtd_reply *r)
{
	if (!d->openset) {
		hdqtd_fail(r, HDQT_RPC_INTERNAL_ERROR, "open-set state unavailable");
		return NULL;
	}
	/* A listing reads every stored window's row (not its features): one
	 * at a time for peers outside access.admin_group, so that none of
	 * them can keep the writer busy; an operator's requests never wait
	 * for that slot. */
	const int is_public = kind == LJ_LIST && !c->admin;
	if (is_public && d->openset->public_listing) {
		hdqtd_fail(r, HDQT_RPC_BUSY, "another unknowns.list is running: retry when it is done");
		return NULL;
	}
	ljob *j = calloc(1, sizeof(*j));
	if (!j || (!k->notify && !(j->id = k->id ? cJSON_Duplicate(k->id, 1) : cJSON_CreateNull()))) {
		free(j);
		hdqtd_fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
		return NULL;
	}
	j->d = d;
	j->c = c;
	j->notify = k->notify;
	j->kind = kind;
	j->is_public = is_public;
	j->max_groups = 20;
	j->job.run = ljob_run;
	j->job.done = ljob_done;
	return j;
}

static cJSON *submit(hdqtd *d, ljob *j, hdqtd_call *k)
{
	flush(d); /* what is buffered goes first: the request sees it */
	if (j->is_public)
		d->openset->public_listing = 1;
	hdqtd_writer_submit(d->writer, &j->job);
	*k->async = 1;
	return NULL;
}

/* A positive integer id parameter, or 0 when absent; -1 (r set) when bad. */
static int64_t id_param(const cJSON *p, const char *key, hdqtd_reply *r)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(p, key);
	if (!v)
		return 0;
	if (!cJSON_IsNumber(v) || !(v->valuedouble >= 1 && v->valuedouble <= 9007199254740992.0) ||
	    v->valuedouble != floor(v->valuedouble)) {
		hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "%s must be a positive integer", key);
		return -1;
	}
	return (int64_t)v->valuedouble;
}

/* params.ids: a non-empty array of at most max_batch positive integers. */
static int ids_param(hdqtd *d, const cJSON *p, ljob *j, hdqtd_reply *r)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(p, "ids");
	if (!a)
		return 0;
	const int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : -1;
	if (n < 1 || n > d->cfg.max_batch) {
		hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "ids must be an array of 1..%d window ids",
			   d->cfg.max_batch);
		return -1;
	}
	if (!(j->ids = malloc(sizeof(int64_t) * (size_t)n))) {
		hdqtd_fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
		return -1;
	}
	const cJSON *it;
	cJSON_ArrayForEach(it, a) {
		if (!cJSON_IsNumber(it) || !(it->valuedouble >= 1 && it->valuedouble <= 9007199254740992.0) ||
		    it->valuedouble != floor(it->valuedouble)) {
			hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "ids[%d] must be a positive integer", j->n_ids);
			return -1;
		}
		j->ids[j->n_ids++] = (int64_t)it->valuedouble;
	}
	return 1;
}

cJSON *hdqtd_m_unknowns_list(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k)
{
	const cJSON *mg = cJSON_GetObjectItemCaseSensitive(p, "max_groups");
	if (mg && (!cJSON_IsNumber(mg) || !(mg->valuedouble >= 1 && mg->valuedouble <= 1000) ||
		   mg->valuedouble != floor(mg->valuedouble)))
		return hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "max_groups must be an integer in [1, 1000]");
	ljob *j = ljob_new(d, c, k, LJ_LIST, r);
	if (!j)
		return NULL;
	if (mg)
		j->max_groups = (int)mg->valuedouble;
	return submit(d, j, k);
}

/* group or ids (promote, drop) or all (drop): exactly one. */
static ljob *target_job(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k,
			int kind)
{
	const int64_t g = id_param(p, "group", r);
	if (g < 0)
		return NULL;
	const cJSON *all = cJSON_GetObjectItemCaseSensitive(p, "all");
	if (all && !cJSON_IsBool(all)) {
		hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "all must be true or false");
		return NULL;
	}
	const int want_all = kind == LJ_DROP && cJSON_IsTrue(all);
	const int has_ids = cJSON_GetObjectItemCaseSensitive(p, "ids") != NULL;
	if ((g > 0) + has_ids + want_all != 1) {
		hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, kind == LJ_DROP
			   ? "give exactly one of group, ids or all: true"
			   : "give exactly one of group or ids");
		return NULL;
	}
	ljob *j = ljob_new(d, c, k, kind, r);
	if (!j)
		return NULL;
	j->group = g;
	j->all = want_all;
	if (ids_param(d, p, j, r) < 0) {
		ljob_free(j);
		return NULL;
	}
	return j;
}

cJSON *hdqtd_m_unknowns_promote(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k)
{
	const cJSON *nm = cJSON_GetObjectItemCaseSensitive(p, "class");
	if (!cJSON_IsString(nm) || !nm->valuestring[0] || strlen(nm->valuestring) > HDQT_CLASS_NAME_MAX ||
	    hdqt_utf8_valid(nm->valuestring, strlen(nm->valuestring)) != strlen(nm->valuestring))
		return hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "class must be a class name of 1..%d bytes",
				  HDQT_CLASS_NAME_MAX);
	ljob *j = target_job(d, c, p, r, k, LJ_PROMOTE);
	if (!j)
		return NULL;
	snprintf(j->name, sizeof(j->name), "%s", nm->valuestring);
	return submit(d, j, k);
}

cJSON *hdqtd_m_unknowns_drop(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k)
{
	ljob *j = target_job(d, c, p, r, k, LJ_DROP);
	return j ? submit(d, j, k) : NULL;
}
