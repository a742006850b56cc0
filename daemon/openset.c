/* SPDX-License-Identifier: MIT */
/*
 * Open-set prediction in the daemon: the serving model's calibration
 * (lib/novelty.c, stored with its version by the round that made it), the
 * unknown flag and novelty score of every prediction, the bounded store of
 * unknown windows, the novelty.detected event, and the methods that show
 * the unknowns grouped and turn a group into a class (PROTOCOL.md,
 * "Open-set prediction").
 *
 * Predictions never wait for the database: unknown windows go to a
 * bounded buffer on the loop and from there, one writer job at a time, to
 * the store; what does not fit the buffer while a job runs is counted as
 * dropped.  Grouping embeds the stored windows with a copy of the serving
 * model on the writer thread, at most one listing at a time, over the
 * newest HDQTD_UNKNOWNS_GROUPED windows: its cost is bounded.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"
#include "hdqt_novelty.h"
#include "log.h"

#define UNK_BUF 256                 /* unknown windows waiting for the writer */
#define HDQTD_UNKNOWNS_GROUPED 2000 /* newest windows a listing groups */
#define MAX_GROUPS 256              /* more distinct windows join their nearest group */
#define GROUP_IDS 20                /* ids shown per group */

struct hdqtd_openset {
	hdqt_novelty *nv;    /* the serving model's calibration (NULL: none) */
	float X[UNK_BUF * HDQT_FEAT_DIM];
	float score[UNK_BUF];
	int label[UNK_BUF];
	int n;               /* windows in the buffer */
	int writing;         /* a store job is on the writer */
	int listing;         /* an unknowns.list / promote is on the writer */
	int64_t stored;      /* rows in the store, as of the last job */
	int64_t since_alert; /* unknown predictions since the last novelty.detected */
	double last_alert;
	uint64_t seen, dropped;
};

int hdqtd_openset_new(hdqtd *d)
{
	if (!(d->openset = calloc(1, sizeof(*d->openset))))
		return HDQT_ENOMEM;
	d->openset->last_alert = -1e300;
	if (hdqt_store_unknowns_count(d->store, &d->openset->stored) < 0)
		hdqtd_log(LOG_WARNING, "counting unknown windows: %s", hdqt_store_errmsg(d->store));
	return 0;
}

void hdqtd_openset_free(hdqtd *d)
{
	if (!d->openset)
		return;
	hdqt_novelty_free(d->openset->nv);
	free(d->openset);
	d->openset = NULL;
}

void hdqtd_openset_load(hdqtd *d)
{
	hdqtd_openset *os = d->openset;
	if (!os)
		return;
	hdqt_novelty_free(os->nv);
	os->nv = NULL;
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
	if (rc == 0 && (hdqt_novelty_classes(nv) > hdqt_model_n_classes(d->model) ||
			hdqt_novelty_embed_dim(nv) != hdqt_model_embed_dim(d->model)))
		rc = HDQT_ECORRUPT;
	if (rc < 0) {
		hdqt_novelty_free(nv);
		hdqtd_log(LOG_WARNING, "model %lld: open-set calibration unusable (%s): no unknown flags",
			  (long long)d->model_version, hdqt_strerror(rc));
		return;
	}
	os->nv = nv;
}

int hdqtd_openset_needs_embedding(const hdqtd *d)
{
	if (!d->openset || !d->openset->nv)
		return 0;
	const hdqt_novelty_kind k = hdqt_novelty_get_kind(d->openset->nv);
	return k == HDQT_NOVELTY_NME || k == HDQT_NOVELTY_KNN;
}

/* ---- storing unknown windows ---- */

typedef struct ujob {
	hdqtd_job job;
	hdqtd *d;
	float *X, *score;
	int *label;
	int n, keep, rc;
	int64_t version, stored;
	char err[256];
} ujob;

static void ujob_run(hdqtd_job *hj, hdqt_store *s, hdqt_feat *f)
{
	(void)f;
	ujob *j = (ujob *)hj;
	j->rc = hdqt_store_unknowns_add(s, j->X, j->label, j->score, j->n, HDQT_FEAT_DIM, j->version,
					j->keep);
	if (j->rc < 0)
		snprintf(j->err, sizeof(j->err), "%s", hdqt_store_errmsg(s));
	else if (hdqt_store_unknowns_count(s, &j->stored) < 0)
		j->stored = -1;
}

static void flush(hdqtd *d);

static void ujob_done(hdqtd_job *hj)
{
	ujob *j = (ujob *)hj;
	hdqtd *d = j->d;
	hdqtd_openset *os = d->openset;
	if (j->rc < 0) {
		os->dropped += (uint64_t)j->n;
		hdqtd_log(LOG_WARNING, "storing %d unknown windows: %s", j->n, j->err);
	} else if (j->stored >= 0) {
		os->stored = j->stored;
	}
	free(j->X);
	free(j->score);
	free(j->label);
	free(j);
	os->writing = 0;
	flush(d);
}

/* Hand the buffer to the writer, unless a job is on it already. */
static void flush(hdqtd *d)
{
	hdqtd_openset *os = d->openset;
	if (os->writing || os->n == 0 || d->stopping)
		return;
	ujob *j = calloc(1, sizeof(*j));
	const size_t n = (size_t)os->n;
	if (j) {
		j->X = malloc(sizeof(float) * n * HDQT_FEAT_DIM);
		j->score = malloc(sizeof(float) * n);
		j->label = malloc(sizeof(int) * n);
	}
	if (!j || !j->X || !j->score || !j->label) {
		if (j) {
			free(j->X);
			free(j->score);
			free(j->label);
		}
		free(j);
		os->dropped += n;
		os->n = 0;
		return;
	}
	memcpy(j->X, os->X, sizeof(float) * n * HDQT_FEAT_DIM);
	memcpy(j->score, os->score, sizeof(float) * n);
	memcpy(j->label, os->label, sizeof(int) * n);
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

void hdqtd_openset_annotate(hdqtd *d, cJSON *o, const float *x, const float *logits,
			    const float *emb, int label)
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
	if (isfinite(s))
		cJSON_AddNumberToObject(o, "novelty", s);
	else
		cJSON_AddNullToObject(o, "novelty");
	cJSON_AddNumberToObject(o, "novelty_threshold", hdqt_novelty_threshold(os->nv, label));
	if (!unknown)
		return;
	os->seen++;
	os->since_alert++;
	d->stats.predictions_unknown++;
	if (d->cfg.keep_unknowns > 0) {
		if (os->n < UNK_BUF) {
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
	return o;
}

/* ---- grouping, promotion, dropping ---- */

enum { LJ_LIST, LJ_PROMOTE, LJ_DROP };

typedef struct group {
	int64_t leader, first, last;
	int size;
	double score_sum;
	int votes[HDQT_MAX_CLASSES > 64 ? 64 : HDQT_MAX_CLASSES]; /* closest labels < 64 */
	float *sum; /* embedding sum (e) */
	int64_t ids[GROUP_IDS];
} group;

typedef struct ljob {
	hdqtd_job job;
	hdqtd *d;
	hdqtd_conn *c;
	cJSON *id;
	int notify, kind;
	hdqtd_reply r;
	hdqt_model *model;     /* a copy of the serving model (embeddings) */
	float *centre;         /* the known classes' mean direction (NULL: none) */
	double similarity;
	int max_groups;
	/* promote / drop */
	int64_t group;         /* the group's leader id; 0: the ids below */
	int64_t *ids;
	int n_ids, all;
	char name[HDQT_CLASS_NAME_MAX + 1];
	/* results */
	int rc;
	char err[256];
	group *groups;
	int n_groups, considered;
	int64_t stored;
	int created, moved, dropped;
	hdqt_store_class cls;
	hdqt_store_class *classes;
	int n_classes;
} ljob;

static void ljob_free(ljob *j)
{
	for (int g = 0; j->groups && g < j->n_groups; g++)
		free(j->groups[g].sum);
	free(j->groups);
	free(j->ids);
	free(j->classes);
	free(j->centre);
	hdqt_model_free(j->model);
	cJSON_Delete(j->id);
	free(j);
}

/* Leader clustering of the windows in id order on unit embeddings: a
 * window joins the group whose mean it is most similar to when that
 * cosine reaches `similarity`, else starts one.  Processing in id order
 * keeps a group's leader (its oldest window, its id) stable while newer
 * windows arrive.  Embeddings are taken relative to the known classes'
 * mean direction: after ReLU every embedding lies in the positive orthant
 * and raw cosines are all near 1 (measured on HAPT: 1 - cos about 0.005 to
 * 0.03), while the direction away from what is known tells activities
 * apart. */
static int cluster(ljob *j, const hdqt_store_unknown *u, const float *X, int n, int **member)
{
	const int e = hdqt_model_embed_dim(j->model);
	float *emb = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1) * e);
	int *mem = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
	j->groups = calloc(MAX_GROUPS, sizeof(group));
	int rc = emb && mem && j->groups ? 0 : HDQT_ENOMEM;
	if (rc == 0 && n > 0)
		rc = hdqt_model_embed(j->model, X, n, emb);
	for (int i = 0; rc == 0 && i < n; i++) {
		float *z = emb + (size_t)i * e;
		if (j->centre) {
			double zz = 0;
			for (int k = 0; k < e; k++)
				zz += (double)z[k] * z[k];
			const float zn = zz > 0 ? (float)(1.0 / sqrt(zz)) : 0.0f;
			for (int k = 0; k < e; k++)
				z[k] = z[k] * zn - j->centre[k];
		}
		double ss = 0;
		for (int k = 0; k < e; k++)
			ss += (double)z[k] * z[k];
		const float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
		for (int k = 0; k < e; k++)
			z[k] *= inv;
		int best = -1;
		double bestc = -2;
		for (int g = 0; g < j->n_groups; g++) {
			const float *sum = j->groups[g].sum;
			double dot = 0, nn = 0;
			for (int k = 0; k < e; k++) {
				dot += (double)z[k] * sum[k];
				nn += (double)sum[k] * sum[k];
			}
			const double c = nn > 0 ? dot / sqrt(nn) : 0;
			if (c > bestc) {
				bestc = c;
				best = g;
			}
		}
		if (best < 0 || (bestc < j->similarity && j->n_groups < MAX_GROUPS)) {
			group *g = &j->groups[j->n_groups];
			if (!(g->sum = calloc((size_t)e, sizeof(float)))) {
				rc = HDQT_ENOMEM;
				break;
			}
			g->leader = u[i].id;
			g->first = u[i].created;
			best = j->n_groups++;
		}
		group *g = &j->groups[best];
		for (int k = 0; k < e; k++)
			g->sum[k] += z[k];
		if (g->size < GROUP_IDS)
			g->ids[g->size] = u[i].id;
		g->size++;
		g->last = u[i].created;
		g->score_sum += u[i].score;
		if (u[i].label >= 0 && u[i].label < 64)
			g->votes[u[i].label]++;
		mem[i] = best;
	}
	free(emb);
	if (rc < 0 || !member)
		free(mem);
	else
		*member = mem;
	return rc;
}

static void ljob_run(hdqtd_job *hj, hdqt_store *s, hdqt_feat *f)
{
	(void)f;
	ljob *j = (ljob *)hj;
	hdqt_store_unknown *u = NULL;
	float *X = NULL;
	int *member = NULL, n = 0;
	int rc = 0;
	if (j->kind == LJ_DROP && (j->all || !j->group)) {
		rc = hdqt_store_unknowns_drop(s, j->all ? NULL : j->ids, j->n_ids, &j->dropped);
		goto out;
	}
	if (j->kind == LJ_PROMOTE && !j->group)
		goto move;
	if ((rc = hdqt_store_unknowns_list(s, HDQT_FEAT_DIM, HDQTD_UNKNOWNS_GROUPED, &u, &X, &n)) < 0 ||
	    (rc = cluster(j, u, X, n, j->kind == LJ_LIST ? NULL : &member)) < 0)
		goto out;
	j->considered = n;
	if (j->kind != LJ_LIST) {
		/* The members of the group led by j->group, as grouped now. */
		int g = -1;
		for (int k = 0; k < j->n_groups; k++)
			if (j->groups[k].leader == j->group)
				g = k;
		if (g < 0) {
			rc = HDQT_ENOTFOUND;
			snprintf(j->err, sizeof(j->err), "no group %lld: list the groups again (hdqtctl "
				 "unknowns); a group is named by its oldest window", (long long)j->group);
			goto out;
		}
		free(j->ids);
		if (!(j->ids = malloc(sizeof(int64_t) * (size_t)j->groups[g].size))) {
			rc = HDQT_ENOMEM;
			goto out;
		}
		j->n_ids = 0;
		for (int i = 0; i < n; i++)
			if (member[i] == g)
				j->ids[j->n_ids++] = u[i].id;
		if (j->kind == LJ_DROP) {
			rc = hdqt_store_unknowns_drop(s, j->ids, j->n_ids, &j->dropped);
			goto out;
		}
	}
move:
	if (j->kind == LJ_PROMOTE) {
		rc = hdqt_store_unknowns_promote(s, j->name, j->ids, j->n_ids, HDQT_FEAT_DIM, &j->cls,
						 &j->created, &j->moved);
		if (rc == 0 && hdqt_store_class_list(s, &j->classes, &j->n_classes) < 0)
			j->classes = NULL; /* committed: the loop keeps its cache and says so */
	}
out:
	if (rc < 0 && !j->err[0])
		snprintf(j->err, sizeof(j->err), "%s", rc == HDQT_ENOMEM ? "out of memory" : hdqt_store_errmsg(s));
	j->rc = rc;
	if (hdqt_store_unknowns_count(s, &j->stored) < 0)
		j->stored = -1;
	free(u);
	free(X);
	free(member);
}

static int cmp_group(const void *a, const void *b)
{
	const group *x = a, *y = b;
	if (x->size != y->size)
		return x->size > y->size ? -1 : 1;
	return (x->leader > y->leader) - (x->leader < y->leader);
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
	qsort(j->groups, (size_t)j->n_groups, sizeof(group), cmp_group);
	cJSON *o = cJSON_CreateObject();
	cJSON *a = o ? cJSON_AddArrayToObject(o, "groups") : NULL;
	if (!a) {
		cJSON_Delete(o);
		return NULL;
	}
	cJSON_AddNumberToObject(o, "unknowns", (double)j->stored);
	cJSON_AddNumberToObject(o, "grouped", j->considered);
	cJSON_AddNumberToObject(o, "model_version", (double)d->model_version);
	for (int k = 0; k < j->n_groups && k < j->max_groups; k++) {
		const group *g = &j->groups[k];
		cJSON *go = cJSON_CreateObject();
		if (!go)
			break;
		int best = -1;
		for (int l = 0; l < 64; l++)
			if (g->votes[l] && (best < 0 || g->votes[l] > g->votes[best]))
				best = l;
		cJSON_AddNumberToObject(go, "group", (double)g->leader);
		cJSON_AddNumberToObject(go, "size", g->size);
		cJSON_AddNumberToObject(go, "first_seen", (double)g->first);
		cJSON_AddNumberToObject(go, "last_seen", (double)g->last);
		cJSON_AddNumberToObject(go, "mean_novelty", g->size ? g->score_sum / g->size : 0);
		const char *nm = best >= 0 ? label_name(d, best) : NULL;
		if (nm)
			cJSON_AddStringToObject(go, "closest_class", nm);
		else
			cJSON_AddNullToObject(go, "closest_class");
		cJSON *ids = cJSON_AddArrayToObject(go, "ids");
		for (int i = 0; ids && i < g->size && i < GROUP_IDS; i++)
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
	hdqtd_log(LOG_NOTICE, "%d unknown windows are now samples of %s class \"%s\"", j->moved,
		  j->created ? "the new" : "", j->name);
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
		cJSON_AddNumberToObject(o, "samples", j->moved);
		cJSON_AddNumberToObject(o, "samples_pending", (double)d->pending_total);
		cJSON_AddNumberToObject(o, "unknowns", (double)j->stored);
	}
	return o;
}

static void ljob_done(hdqtd_job *hj)
{
	ljob *j = (ljob *)hj;
	hdqtd *d = j->d;
	d->openset->listing = 0;
	if (j->stored >= 0)
		d->openset->stored = j->stored;
	cJSON *res = NULL;
	if (j->rc == HDQT_ENOTFOUND)
		hdqtd_fail(&j->r, HDQT_RPC_NOT_FOUND, "%s", j->err);
	else if (j->rc == HDQT_EINVAL || j->rc == HDQT_ERANGE)
		hdqtd_fail(&j->r, HDQT_RPC_INVALID_PARAMS, "%s", j->err);
	else if (j->rc == HDQT_EFULL)
		hdqtd_fail(&j->r, HDQT_RPC_LIMIT, "storage limit reached: %s", j->err);
	else if (j->rc < 0)
		hdqtd_fail(&j->r, HDQT_RPC_STORAGE, "database error (nothing was changed): %s", j->err);
	else if (j->kind == LJ_LIST)
		res = list_result(d, j);
	else if (j->kind == LJ_PROMOTE)
		res = promote_result(d, j);
	else if ((res = cJSON_CreateObject()) != NULL) {
		cJSON_AddNumberToObject(res, "dropped", j->dropped);
		cJSON_AddNumberToObject(res, "unknowns", (double)j->stored);
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
	if (d->openset->listing) {
		hdqtd_fail(r, HDQT_RPC_BUSY, "another unknowns request is running: retry when it is done");
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
	j->similarity = d->cfg.group_similarity;
	j->max_groups = 20;
	j->job.run = ljob_run;
	j->job.done = ljob_done;
	return j;
}

static cJSON *submit(hdqtd *d, ljob *j, hdqtd_reply *r, hdqtd_call *k)
{
	/* Grouping embeds with the serving model; a copy, as the loop keeps
	 * predicting with it meanwhile. */
	if ((j->kind == LJ_LIST || j->group) &&
	    (!d->model || hdqt_model_clone(d->model, &j->model) < 0 ||
	     (hdqtd_openset_needs_embedding(d) &&
	      hdqt_novelty_embed_dim(d->openset->nv) == hdqt_model_embed_dim(d->model) &&
	      (!(j->centre = malloc(sizeof(float) * (size_t)hdqt_model_embed_dim(d->model))) ||
	       hdqt_novelty_centre(d->openset->nv, j->centre) < 0)))) {
		ljob_free(j);
		return d->model ? hdqtd_fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory")
				: hdqtd_fail(r, HDQT_RPC_NO_MODEL, "no model yet: nothing is grouped");
	}
	flush(d); /* what is buffered goes first: the listing includes it */
	d->openset->listing = 1;
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
	if (mg && (!cJSON_IsNumber(mg) || !(mg->valuedouble >= 1 && mg->valuedouble <= MAX_GROUPS) ||
		   mg->valuedouble != floor(mg->valuedouble)))
		return hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "max_groups must be an integer in [1, %d]",
				  MAX_GROUPS);
	ljob *j = ljob_new(d, c, k, LJ_LIST, r);
	if (!j)
		return NULL;
	if (mg)
		j->max_groups = (int)mg->valuedouble;
	return submit(d, j, r, k);
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
	return submit(d, j, r, k);
}

cJSON *hdqtd_m_unknowns_drop(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k)
{
	ljob *j = target_job(d, c, p, r, k, LJ_DROP);
	return j ? submit(d, j, r, k) : NULL;
}
