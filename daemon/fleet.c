/* SPDX-License-Identifier: MIT */
/*
 * What an operator of many boxes needs over the socket (docs/bundle.md,
 * PROTOCOL.md): model export and import as a checksummed bundle, an
 * online backup of the database, and the metrics.
 *
 * Transfers are sessions: model.export (or backup) builds the whole thing
 * off the loop and answers its size and CRC-32, then the client reads it
 * in base64 chunks; model.import stages chunks in memory, then
 * model.import_commit checks and applies the bundle on the writer thread.
 * Each chunk is at most chunk_max bytes, derived from daemon.max_message
 * and daemon.max_write_queue so that no request or reply can hit a limit.
 *
 * Bounds: one session of each kind daemon-wide; a bundle or staging area
 * of at most FLEET_BUNDLE_MAX bytes; a session belongs to the connection
 * that opened it and ends when that connection closes, when it has been
 * unused for idle_bound() seconds, or with transfer.close.  A backup's file lives
 * in the state directory (the database's), the only place the sandboxed
 * daemon may write, and is removed when its session ends or at start-up.
 *
 * Invariant (ownership): while a job works on a session (x->busy), the job
 * owns its buffer; ending the session then only detaches it (x->orphan)
 * and the job's completion frees it.  Export and import are exclusive
 * changes (d->exclusive): no round runs meanwhile, so an export reads one
 * model version with its own memory, and an import cannot interleave with
 * a round's commit.
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "config.h"
#include "daemon.h"
#include "openset.h"
#include "hdqt_bundle.h"
#include "log.h"

#define FLEET_BUNDLE_MAX (64u << 20) /* bytes of a bundle, exported or staged */
#define FLEET_CHUNK_MAX (256u << 10) /* raw bytes of one chunk at most */
#define FLEET_IDLE_S 300.0           /* a session unused this long ends (at most) */
#define BUNDLE_FORMAT "hdqt-model-bundle"

static const char *const xf_name[HDQTD_XFER_KINDS] = {"export", "import", "backup"};

struct hdqtd_xfer {
	int kind;
	char id[48];
	uint64_t owner;             /* connection id */
	int busy, orphan;
	double last_used;
	uint8_t *buf;               /* export: the bundle; import: the staging area */
	size_t len, size;           /* bytes held / total (import: declared) */
	uint32_t crc;               /* of all size bytes */
	char path[4200];            /* backup: the copy in the state directory */
	int64_t model_version;
};

/* ---- sessions ---- */

/* A session unused this long ends: daemon.idle_timeout when it is shorter
 * than FLEET_IDLE_S, since a client that keeps its connection busy with
 * other requests must not pin a 64 MiB staging area for longer than an
 * idle one could pin its connection. */
static double idle_bound(const hdqtd *d)
{
	const double t = d->cfg.idle_timeout_s;
	return t > 0 && t < FLEET_IDLE_S ? t : FLEET_IDLE_S;
}

static void xfer_free(hdqtd_xfer *x)
{
	if (!x)
		return;
	if (x->path[0] && unlink(x->path) < 0 && errno != ENOENT)
		hdqtd_log(LOG_WARNING, "removing %s: %s", x->path, strerror(errno));
	free(x->buf);
	free(x);
}

/* End the session of this kind: freed now, or by the job working on it. */
static void xfer_end(hdqtd *d, int kind, const char *why)
{
	hdqtd_xfer *x = d->xfer[kind];
	if (!x)
		return;
	d->xfer[kind] = NULL;
	if (why)
		hdqtd_log(LOG_INFO, "%s %s ended: %s", xf_name[kind], x->id, why);
	if (x->busy)
		x->orphan = 1;
	else
		xfer_free(x);
}

/* A new session of kind for c, replacing c's own; NULL (r set) if another
 * client's session of that kind is live. */
static hdqtd_xfer *xfer_new(hdqtd *d, hdqtd_conn *c, int kind, hdqtd_reply *r)
{
	hdqtd_xfer *old = d->xfer[kind];
	if (old && old->owner != c->id) {
		hdqtd_fail(r, HDQT_RPC_BUSY, "another client's %s is in progress (one at a time; an "
			   "unused one ends after %.0f s)", xf_name[kind], idle_bound(d));
		return NULL;
	}
	if (old && old->busy) {
		hdqtd_fail(r, HDQT_RPC_BUSY, "this connection's %s %s is still being worked on",
			   xf_name[kind], old->id);
		return NULL;
	}
	xfer_end(d, kind, old ? "replaced" : NULL);
	hdqtd_xfer *x = calloc(1, sizeof(*x));
	if (!x) {
		hdqtd_fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
		return NULL;
	}
	x->kind = kind;
	x->owner = c->id;
	x->last_used = hdqtd_now();
	snprintf(x->id, sizeof(x->id), "%s-%llu-%llu", xf_name[kind], (unsigned long long)c->id,
		 (unsigned long long)++d->xfer_seq);
	d->xfer[kind] = x;
	return x;
}

/* c's idle session of kind with this id; NULL (r set) otherwise. */
static hdqtd_xfer *xfer_get(hdqtd *d, hdqtd_conn *c, int kind, const cJSON *p, hdqtd_reply *r)
{
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(p, "id");
	if (!cJSON_IsString(id)) {
		hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "params.id must be the %s's id (a string)",
			   xf_name[kind]);
		return NULL;
	}
	hdqtd_xfer *x = d->xfer[kind];
	if (!x || x->owner != c->id || strcmp(x->id, id->valuestring) != 0) {
		hdqtd_fail(r, HDQT_RPC_NOT_FOUND, "no %s \"%.60s\" on this connection (it ends with "
			   "the connection, with transfer.close, or after %.0f s unused)", xf_name[kind],
			   id->valuestring, idle_bound(d));
		return NULL;
	}
	if (x->busy) {
		hdqtd_fail(r, HDQT_RPC_BUSY, "%s %s is being worked on; wait for the reply", x->id,
			   xf_name[kind]);
		return NULL;
	}
	x->last_used = hdqtd_now();
	return x;
}

size_t hdqtd_fleet_memory(const hdqtd *d, uint64_t conn_id)
{
	size_t n = 0;
	for (int k = 0; k < HDQTD_XFER_KINDS; k++) {
		const hdqtd_xfer *x = d->xfer[k];
		/* a busy session's fields belong to its job on the writer thread
		 * until fjob_finish: not read here (an export's bundle is
		 * counted, and checked, once the job hands it over) */
		if (x && !x->busy && x->buf && (conn_id == 0 || x->owner == conn_id))
			n += x->size;
	}
	return n;
}

void hdqtd_fleet_conn_closed(hdqtd *d, uint64_t conn_id)
{
	for (int k = 0; k < HDQTD_XFER_KINDS; k++)
		if (d->xfer[k] && d->xfer[k]->owner == conn_id)
			xfer_end(d, k, "its connection closed");
}

void hdqtd_fleet_tick(hdqtd *d)
{
	const double now = hdqtd_now();
	for (int k = 0; k < HDQTD_XFER_KINDS; k++)
		if (d->xfer[k] && !d->xfer[k]->busy && now - d->xfer[k]->last_used > idle_bound(d))
			xfer_end(d, k, "unused for too long");
}

void hdqtd_fleet_free(hdqtd *d)
{
	for (int k = 0; k < HDQTD_XFER_KINDS; k++)
		xfer_end(d, k, NULL);
}

/* A name of its own per backup: a backup whose client left is still being
 * written when the next one may start. */
static void backup_path(const hdqtd *d, uint64_t seq, char *out, size_t n)
{
	snprintf(out, n, "%s.backup-%llu", d->cfg.db, (unsigned long long)seq);
}

void hdqtd_fleet_cleanup(hdqtd *d)
{
	/* Every DB.backup-N and its DB.backup-N.tmp (hdqt_store_backup's
	 * temporary name) next to the database. */
	char dir[4200], prefix[4200];
	snprintf(dir, sizeof(dir), "%s", d->cfg.db);
	char *slash = strrchr(dir, '/');
	const char *base = slash ? slash + 1 : d->cfg.db;
	snprintf(prefix, sizeof(prefix), "%s.backup-", base);
	if (slash == dir)
		dir[1] = 0;
	else if (slash)
		*slash = 0;
	else
		snprintf(dir, sizeof(dir), ".");
	DIR *dh = opendir(dir);
	if (!dh) {
		hdqtd_log(LOG_WARNING, "looking for old backups in %s: %s", dir, strerror(errno));
		return;
	}
	const size_t pl = strlen(prefix);
	struct dirent *e;
	while ((e = readdir(dh)) != NULL) {
		if (strncmp(e->d_name, prefix, pl) != 0)
			continue;
		if (unlinkat(dirfd(dh), e->d_name, 0) == 0)
			hdqtd_log(LOG_INFO, "removed %s/%s, left by a previous run's backup", dir, e->d_name);
		else
			hdqtd_log(LOG_WARNING, "removing %s/%s: %s", dir, e->d_name, strerror(errno));
	}
	closedir(dh);
}

/* Raw bytes per chunk: its base64 (4/3) plus the JSON around it must fit
 * both a request line (max_message) and a reply (max_write_queue). */
static size_t chunk_max(const hdqtd *d)
{
	size_t lim = d->cfg.max_message < d->cfg.max_write_queue ? d->cfg.max_message
								 : d->cfg.max_write_queue;
	size_t n = lim > 1024 + 512 ? (lim - 1024) / 4 * 3 : 384;
	return n > FLEET_CHUNK_MAX ? FLEET_CHUNK_MAX : n;
}

static int u64_param(const cJSON *p, const char *key, double max, uint64_t *out, hdqtd_reply *r)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(p, key);
	if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= max) ||
	    v->valuedouble != floor(v->valuedouble)) {
		hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "params.%s must be an integer in [0, %.0f]", key, max);
		return -1;
	}
	*out = (uint64_t)v->valuedouble;
	return 0;
}

static void crc_hex(uint32_t crc, char out[9])
{
	snprintf(out, 9, "%08x", crc);
}

/* ---- jobs ---- */

enum { FJ_EXPORT, FJ_IMPORT, FJ_BACKUP, FJ_CHUNK };

typedef struct fjob {
	hdqtd_job job;              /* writer jobs (export, import) */
	uv_work_t work;             /* pool jobs (backup, chunk reads) */
	int kind;
	hdqtd *d;
	hdqtd_conn *c;
	cJSON *id;
	int notify, exclusive;
	hdqtd_xfer *x;
	hdqtd_reply r;
	hdqtd_config cfg;           /* what the job needs of the configuration (a copy) */
	cJSON *res;                 /* built off the loop, handed over in done */
	/* chunks */
	uint64_t offset;
	size_t length;
	char *data;
	/* import */
	int remap;
	int64_t version, prev;
	char (*created)[HDQT_CLASS_NAME_MAX + 1];
	int n_created;
	hdqt_model *model;          /* the imported model, ready to serve (loop takes it) */
	char metrics[480];
} fjob;

static void fjob_free(fjob *j)
{
	cJSON_Delete(j->id);
	cJSON_Delete(j->res);
	free(j->data);
	free(j->created);
	hdqt_model_free(j->model);
	free(j);
}

static fjob *fjob_new(hdqtd *d, hdqtd_conn *c, hdqtd_call *k, int kind, hdqtd_xfer *x, hdqtd_reply *r)
{
	fjob *j = calloc(1, sizeof(*j));
	if (!j || (!k->notify && !(j->id = k->id ? cJSON_Duplicate(k->id, 1) : cJSON_CreateNull()))) {
		free(j);
		hdqtd_fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
		return NULL;
	}
	j->kind = kind;
	j->d = d;
	j->c = c;
	j->notify = k->notify;
	j->x = x;
	j->cfg = d->cfg;
	j->work.data = j;
	return j;
}

/* Loop side of every job: the session goes back to idle (or is freed if
 * it ended meanwhile), the reply goes out. */
static void fjob_finish(fjob *j, cJSON *res)
{
	hdqtd *d = j->d;
	hdqtd_xfer *x = j->x;
	if (j->exclusive)
		d->exclusive--;
	if (x) {
		x->busy = 0;
		x->last_used = hdqtd_now();
		/* A built bundle is buffer memory from now on: one that does not
		 * fit daemon.max_memory is refused here, not by closing its
		 * client at its first chunk request. */
		if (!x->orphan && !j->r.code && j->kind == FJ_EXPORT && x->buf) {
			const size_t used = hdqtd_memory_in_use(d) - x->size; /* counted now */
			if (used > d->cfg.max_memory || x->size > d->cfg.max_memory - used)
				hdqtd_fail(&j->r, HDQT_RPC_LIMIT, "the bundle (%zu bytes) would exceed "
					   "daemon.max_memory (%zu bytes, %zu in use)", x->size,
					   d->cfg.max_memory, used);
		}
		if (x->orphan)
			xfer_free(x);
		else if (j->r.code && j->kind != FJ_CHUNK)
			xfer_end(d, x->kind, "failed"); /* a failed build or import leaves nothing */
		else if (j->kind == FJ_IMPORT)
			xfer_end(d, x->kind, NULL);     /* applied: the staging area goes */
	}
	cJSON *resp = hdqtd_late_reply(j->id, j->notify || j->c->dead, j->r.code ? NULL : res, &j->r);
	if (j->r.code)
		cJSON_Delete(res);
	hdqtd_conn *c = j->c;
	fjob_free(j);
	hdqtd_conn_complete(c, resp);
	hdqtd_maybe_train(d);
}

/* ---- model.export ---- */

/* /etc/machine-id (systemd's stable box id), else the host name. */
static void box_id(char *out, size_t n)
{
	out[0] = 0;
	FILE *f = fopen("/etc/machine-id", "re");
	if (f) {
		if (!fgets(out, (int)n, f))
			out[0] = 0;
		fclose(f);
		out[strcspn(out, "\r\n")] = 0;
	}
	if (!out[0] && gethostname(out, n) < 0)
		snprintf(out, n, "unknown");
	out[n - 1] = 0;
}

static cJSON *recipe_json(const hdqt_qconfig *q)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "quant", hdqt_mode_name(q->mode));
	cJSON_AddNumberToObject(o, "bits", q->bits);
	cJSON_AddNumberToObject(o, "acc_bits", q->acc_bits);
	cJSON_AddNumberToObject(o, "tile", q->tile);
	cJSON_AddNumberToObject(o, "bwd_tile", q->bwd_tile);
	cJSON_AddNumberToObject(o, "had_max", q->had_max);
	return o;
}

static void run_export(hdqtd_job *hj, hdqt_store *s, hdqt_feat *f)
{
	(void)f;
	fjob *j = (fjob *)((char *)hj - offsetof(fjob, job));
	hdqtd_xfer *x = j->x;
	uint8_t *blob = NULL;
	size_t blen = 0;
	int64_t v = 0;
	hdqt_model *m = NULL;
	hdqt_store_class *cls = NULL;
	hdqt_store_model *ms = NULL;
	float *X = NULL;
	int64_t *ecls = NULL;
	int32_t *ey = NULL;
	int ncls = 0, nms = 0, ne = 0;
	cJSON *man = NULL;
	char *mtext = NULL;
	int rc = hdqt_store_model_current(s, &blob, &blen, &v);
	if (rc == HDQT_ENOTFOUND) {
		hdqtd_fail(&j->r, HDQT_RPC_NO_MODEL, "no model to export yet: train first");
		goto out;
	}
	if (rc < 0 || (rc = hdqt_store_class_list(s, &cls, &ncls)) < 0 ||
	    (rc = hdqt_store_model_list(s, &ms, &nms)) < 0 ||
	    (rc = hdqt_store_exemplars_load(s, HDQT_FEAT_DIM, &X, &ecls, &ne)) < 0) {
		hdqtd_fail(&j->r, HDQT_RPC_STORAGE, "reading the model: %s", hdqt_store_errmsg(s));
		goto out;
	}
	if ((rc = hdqt_model_load(blob, blen, &m)) < 0) {
		hdqtd_fail(&j->r, HDQT_RPC_STORAGE, "the current model %lld does not load: %s",
			   (long long)v, hdqt_strerror(rc));
		goto out;
	}
	if (!(ey = malloc(sizeof(int32_t) * ((size_t)ne + 1))))
		goto oom;
	for (int i = 0; i < ne; i++) {
		ey[i] = -1;
		for (int k = 0; k < ncls; k++)
			if (cls[k].id == ecls[i])
				ey[i] = cls[k].label;
		if (ey[i] < 0) { /* cannot happen: exemplars reference classes by foreign key */
			hdqtd_fail(&j->r, HDQT_RPC_STORAGE, "an exemplar has no class");
			goto out;
		}
	}
	const hdqt_mlp_config *mc = hdqt_model_config(m);
	char box[128];
	box_id(box, sizeof(box));
	man = cJSON_CreateObject();
	cJSON *shape = cJSON_AddObjectToObject(man, "shape");
	cJSON *hid = cJSON_AddArrayToObject(shape, "hidden");
	cJSON *ca = cJSON_AddArrayToObject(man, "classes");
	cJSON *recipe = recipe_json(hdqt_model_qconfig(m));
	if (!man || !shape || !hid || !ca || !recipe) {
		cJSON_Delete(recipe);
		goto oom;
	}
	cJSON_AddStringToObject(man, "format", BUNDLE_FORMAT);
	cJSON_AddNumberToObject(man, "format_version", HDQT_BUNDLE_VERSION);
	cJSON_AddStringToObject(man, "hdqtd_version", HDQT_VERSION);
	cJSON_AddStringToObject(man, "box_id", box);
	cJSON_AddNumberToObject(man, "created", (double)time(NULL));
	cJSON_AddNumberToObject(man, "model_version", (double)v);
	cJSON_AddNumberToObject(man, "feature_dim", HDQT_FEAT_DIM);
	cJSON_AddNumberToObject(man, "window", j->cfg.window);
	cJSON_AddItemToObject(man, "recipe", recipe);
	cJSON_AddNumberToObject(shape, "n_in", mc->n_in);
	for (int l = 0; l < mc->n_hidden; l++)
		cJSON_AddItemToArray(hid, cJSON_CreateNumber(mc->hidden[l]));
	cJSON_AddNumberToObject(shape, "n_classes", mc->n_classes);
	cJSON_AddStringToObject(man, "normalisation", "model");
	cJSON_AddStringToObject(man, "strategy", hdqt_cl_method_name(j->cfg.strategy));
	cJSON_AddNumberToObject(man, "memory", j->cfg.memory);
	for (int k = 0; k < ncls; k++) {
		cJSON *e = cJSON_CreateObject();
		if (!e)
			goto oom;
		cJSON_AddStringToObject(e, "name", cls[k].name);
		cJSON_AddNumberToObject(e, "label", cls[k].label);
		cJSON_AddBoolToObject(e, "active", cls[k].active);
		cJSON_AddItemToArray(ca, e);
	}
	cJSON *met = NULL;
	for (int i = 0; i < nms && !met; i++)
		if (ms[i].version == v)
			met = cJSON_Parse(ms[i].metrics);
	cJSON_AddItemToObject(man, "metrics", met ? met : cJSON_CreateObject());
	cJSON_AddNumberToObject(man, "exemplars", ne);
	if (!(mtext = cJSON_PrintUnformatted(man)))
		goto oom;
	hdqt_bundle b = {.manifest = mtext, .manifest_len = strlen(mtext), .model = blob,
			 .model_len = blen, .ex_X = X, .ex_y = ey, .n_ex = ne, .dim = HDQT_FEAT_DIM};
	if ((rc = hdqt_bundle_write(&b, &x->buf, &x->size)) < 0) {
		hdqtd_fail(&j->r, HDQT_RPC_LIMIT, "the bundle cannot be built: %s", hdqt_strerror(rc));
		goto out;
	}
	if (x->size > FLEET_BUNDLE_MAX) {
		hdqtd_fail(&j->r, HDQT_RPC_LIMIT, "the bundle (%zu bytes) exceeds the %u-byte limit",
			   x->size, FLEET_BUNDLE_MAX);
		goto out;
	}
	x->len = x->size;
	x->crc = hdqt_bundle_crc32(x->buf, x->size);
	x->model_version = v;
	char crc[9];
	crc_hex(x->crc, crc);
	j->res = cJSON_CreateObject();
	if (!j->res)
		goto oom;
	cJSON_AddStringToObject(j->res, "id", x->id);
	cJSON_AddNumberToObject(j->res, "size", (double)x->size);
	cJSON_AddStringToObject(j->res, "crc32", crc);
	cJSON_AddNumberToObject(j->res, "chunk_max", (double)chunk_max(j->d));
	cJSON_AddNumberToObject(j->res, "model_version", (double)v);
	cJSON_AddItemToObject(j->res, "manifest", man);
	man = NULL;
	goto out;
oom:
	hdqtd_fail(&j->r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
out:
	cJSON_Delete(man);
	free(mtext);
	free(blob);
	hdqt_model_free(m);
	free(cls);
	free(ms);
	free(X);
	free(ecls);
	free(ey);
}

static void writer_done(hdqtd_job *hj);

cJSON *hdqtd_m_model_export(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k)
{
	(void)p;
	if (!d->model)
		return hdqtd_fail(r, HDQT_RPC_NO_MODEL, "no model to export yet: train first");
	if (hdqtd_exclusive_busy(d, r))
		return NULL;
	hdqtd_xfer *x = xfer_new(d, c, HDQTD_XFER_EXPORT, r);
	if (!x)
		return NULL;
	fjob *j = fjob_new(d, c, k, FJ_EXPORT, x, r);
	if (!j) {
		xfer_end(d, HDQTD_XFER_EXPORT, NULL);
		return NULL;
	}
	x->busy = 1;
	j->exclusive = 1;
	d->exclusive++;
	j->job.run = run_export;
	j->job.done = writer_done;
	hdqtd_writer_submit(d->writer, &j->job);
	*k->async = 1;
	return NULL;
}

/* ---- chunk reads (export and backup) ---- */

static void chunk_work(uv_work_t *w)
{
	fjob *j = w->data;
	hdqtd_xfer *x = j->x;
	uint8_t *tmp = NULL;
	const uint8_t *src = NULL;
	if (x->kind == HDQTD_XFER_BACKUP) {
		/* The file is the daemon's own, in its state directory. */
		tmp = malloc(j->length ? j->length : 1);
		int fd = tmp ? open(x->path, O_RDONLY | O_CLOEXEC) : -1;
		ssize_t got = fd >= 0 ? pread(fd, tmp, j->length, (off_t)j->offset) : -1;
		if (fd >= 0)
			close(fd);
		if (got != (ssize_t)j->length) {
			hdqtd_fail(&j->r, HDQT_RPC_STORAGE, "reading the backup: %s",
				   got < 0 ? strerror(errno) : "short read");
			free(tmp);
			return;
		}
		src = tmp;
	} else {
		src = x->buf + j->offset;
	}
	j->data = hdqt_base64_encode(src, j->length);
	free(tmp);
	if (!j->data)
		hdqtd_fail(&j->r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
}

static void chunk_done(uv_work_t *w, int status)
{
	(void)status; /* never canceled */
	fjob *j = w->data;
	cJSON *o = NULL;
	if (!j->r.code && (o = cJSON_CreateObject())) {
		cJSON_AddNumberToObject(o, "offset", (double)j->offset);
		cJSON_AddNumberToObject(o, "length", (double)j->length);
		cJSON_AddBoolToObject(o, "eof", j->offset + j->length == j->x->size);
		cJSON *raw = cJSON_CreateString(j->data);
		if (!raw) {
			cJSON_Delete(o);
			o = NULL;
		} else {
			cJSON_AddItemToObject(o, "data", raw);
		}
	}
	fjob_finish(j, o);
}

static cJSON *read_chunk(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k,
			 int kind)
{
	hdqtd_xfer *x = xfer_get(d, c, kind, p, r);
	uint64_t off, len;
	if (!x || u64_param(p, "offset", 9e15, &off, r) < 0)
		return NULL;
	if (!cJSON_GetObjectItemCaseSensitive(p, "length"))
		len = chunk_max(d);
	else if (u64_param(p, "length", (double)chunk_max(d), &len, r) < 0)
		return NULL;
	if (off > x->size)
		return hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "offset %llu is past the end (%zu bytes)",
				  (unsigned long long)off, x->size);
	if (len > x->size - off)
		len = x->size - off;
	fjob *j = fjob_new(d, c, k, FJ_CHUNK, x, r);
	if (!j)
		return NULL;
	j->offset = off;
	j->length = (size_t)len;
	x->busy = 1;
	if (uv_queue_work(d->loop, &j->work, chunk_work, chunk_done) < 0) {
		x->busy = 0; /* cannot happen with a valid loop */
		fjob_free(j);
		return hdqtd_fail(r, HDQT_RPC_INTERNAL_ERROR, "cannot queue the read");
	}
	*k->async = 1;
	return NULL;
}

cJSON *hdqtd_m_export_chunk(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k)
{
	return read_chunk(d, c, p, r, k, HDQTD_XFER_EXPORT);
}

cJSON *hdqtd_m_backup_chunk(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k)
{
	return read_chunk(d, c, p, r, k, HDQTD_XFER_BACKUP);
}

cJSON *hdqtd_m_transfer_close(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k)
{
	(void)k;
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(p, "id");
	if (!cJSON_IsString(id))
		return hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "params.id must be a transfer's id");
	for (int kind = 0; kind < HDQTD_XFER_KINDS; kind++) {
		hdqtd_xfer *x = d->xfer[kind];
		if (x && x->owner == c->id && strcmp(x->id, id->valuestring) == 0) {
			xfer_end(d, kind, "closed by its client");
			cJSON *o = cJSON_CreateObject();
			if (o)
				cJSON_AddBoolToObject(o, "closed", 1);
			return o;
		}
	}
	return hdqtd_fail(r, HDQT_RPC_NOT_FOUND, "no transfer \"%.60s\" on this connection",
			  id->valuestring);
}

/* ---- model.import ---- */

cJSON *hdqtd_m_model_import(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k)
{
	(void)k;
	uint64_t size;
	const cJSON *crc = cJSON_GetObjectItemCaseSensitive(p, "crc32");
	if (u64_param(p, "size", 9e15, &size, r) < 0)
		return NULL;
	if (size < HDQT_BUNDLE_HEADER + 4)
		return hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "a bundle has at least %u bytes",
				  HDQT_BUNDLE_HEADER + 4);
	if (size > FLEET_BUNDLE_MAX)
		return hdqtd_fail(r, HDQT_RPC_LIMIT, "%llu bytes exceed the bundle limit (%u bytes)",
				  (unsigned long long)size, FLEET_BUNDLE_MAX);
	/* The staging area is buffer memory like a connection's: refused
	 * before it is taken when it would not fit daemon.max_memory (less
	 * this client's own idle staging area, which the new one replaces). */
	size_t used = hdqtd_memory_in_use(d);
	const hdqtd_xfer *mine = d->xfer[HDQTD_XFER_IMPORT];
	if (mine && !mine->busy && mine->owner == c->id && mine->buf && used >= mine->size)
		used -= mine->size;
	if (used > d->cfg.max_memory || (size_t)size > d->cfg.max_memory - used)
		return hdqtd_fail(r, HDQT_RPC_LIMIT, "a staging area of %llu bytes would exceed "
				  "daemon.max_memory (%zu bytes, %zu in use)", (unsigned long long)size,
				  d->cfg.max_memory, used);
	char *end = NULL;
	unsigned long cv = cJSON_IsString(crc) ? strtoul(crc->valuestring, &end, 16) : 0;
	if (!cJSON_IsString(crc) || strlen(crc->valuestring) != 8 || *end || cv > 0xffffffffUL)
		return hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "params.crc32 must be the bundle's CRC-32 "
				  "as 8 hex digits");
	hdqtd_xfer *x = xfer_new(d, c, HDQTD_XFER_IMPORT, r);
	if (!x)
		return NULL;
	if (!(x->buf = malloc((size_t)size))) {
		xfer_end(d, HDQTD_XFER_IMPORT, NULL);
		return hdqtd_fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	}
	x->size = (size_t)size;
	x->crc = (uint32_t)cv;
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return hdqtd_fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	cJSON_AddStringToObject(o, "id", x->id);
	cJSON_AddNumberToObject(o, "chunk_max", (double)chunk_max(d));
	return o;
}

cJSON *hdqtd_m_import_chunk(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k)
{
	(void)k;
	hdqtd_xfer *x = xfer_get(d, c, HDQTD_XFER_IMPORT, p, r);
	uint64_t off;
	if (!x || u64_param(p, "offset", 9e15, &off, r) < 0)
		return NULL;
	const cJSON *data = cJSON_GetObjectItemCaseSensitive(p, "data");
	if (!cJSON_IsString(data))
		return hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "params.data must be base64 text");
	const size_t n = strlen(data->valuestring), max = chunk_max(d);
	if (n / 4 * 3 > max + 2)
		return hdqtd_fail(r, HDQT_RPC_LIMIT, "a chunk holds at most %zu bytes", max);
	/* In order; the last chunk again (its reply lost) is accepted. */
	if (off > x->len)
		return hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "offset %llu: the staging area holds %zu "
				  "bytes; send the chunks in order", (unsigned long long)off, x->len);
	uint8_t *tmp = malloc(n / 4 * 3 + 3);
	if (!tmp)
		return hdqtd_fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	long got = hdqt_base64_decode(data->valuestring, n, tmp);
	if (got < 0 || got == 0 || (size_t)got > max || off + (uint64_t)got > x->size) {
		free(tmp);
		if (got <= 0)
			return hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "params.data is not base64 of 1 to "
					  "%zu bytes", max);
		return hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "chunk at %llu of %ld bytes goes past the "
				  "declared size (%zu)", (unsigned long long)off, got, x->size);
	}
	memcpy(x->buf + off, tmp, (size_t)got);
	free(tmp);
	if (off + (uint64_t)got > x->len)
		x->len = (size_t)(off + (uint64_t)got);
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return hdqtd_fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	cJSON_AddNumberToObject(o, "received", (double)x->len);
	cJSON_AddNumberToObject(o, "size", (double)x->size);
	return o;
}

static int valid_class_name(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > HDQT_CLASS_NAME_MAX || hdqt_utf8_valid(s, n) != n)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

static int man_int(const cJSON *o, const char *key, int lo, int hi, int *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi) ||
	    v->valuedouble != floor(v->valuedouble))
		return -1;
	*out = (int)v->valuedouble;
	return 0;
}

#define BAD(code, ...) do { hdqtd_fail(&j->r, code, __VA_ARGS__); goto out; } while (0)

/* Check everything, then change everything in one transaction. */
/* The imported model m (already in this box's labels: bundle label l is
 * map[l], for l < C) calibrated on this box's validation samples of the
 * classes it knows; nothing (*out NULL) without any, or on a failure,
 * which only leaves the version without unknown flags until its first
 * round here.  classes: the class table before the import (the new
 * classes have no samples here yet). */
static void calibrate_import(hdqt_store *s, const hdqtd_config *cfg, hdqt_model *m,
			     const hdqt_store_class *classes, int n_classes, const int *map, int C,
			     const float *EX, const int *elab, int n_ex, uint8_t **out, size_t *len)
{
	const int d = HDQT_FEAT_DIM, head = hdqt_model_n_classes(m);
	*out = NULL;
	*len = 0;
	unsigned char known[HDQT_MAX_CLASSES] = {0};
	for (int l = 0; l < C; l++)
		if (map[l] >= 0 && map[l] < HDQT_MAX_CLASSES)
			known[map[l]] = 1;
	float *V = NULL, *rows = NULL;
	int64_t *vcls = NULL;
	int nv = 0, kept = 0, rc;
	hdqt_memory *mem = NULL;
	if ((rc = hdqt_store_validation_load(s, d, &V, &vcls, &nv)) < 0)
		goto out;
	for (int i = 0; i < nv; i++) {
		int lab = -1;
		for (int k = 0; k < n_classes; k++)
			if (classes[k].id == vcls[i])
				lab = classes[k].label;
		if (lab < 0 || lab >= head || !known[lab])
			continue; /* a class the imported model never learned */
		memmove(V + (size_t)kept++ * d, V + (size_t)i * d, sizeof(float) * d);
	}
	if (kept == 0) {
		hdqtd_log(LOG_INFO, "import: no validation samples of the bundle's classes here: the "
			  "imported model carries no unknown flag until its first round");
		goto out;
	}
	rows = malloc(sizeof(float) * (size_t)(n_ex > 0 ? n_ex : 1) * d);
	if (!rows || (rc = hdqt_memory_new(&mem, n_ex > 0 ? n_ex : 1, d)) < 0) {
		rc = HDQT_ENOMEM;
		goto out;
	}
	for (int l = 0; l < head; l++) {
		int k = 0;
		for (int i = 0; i < n_ex; i++)
			if (elab[i] == l)
				memcpy(rows + (size_t)k++ * d, EX + (size_t)i * d, sizeof(float) * d);
		if (k > 0 && (rc = hdqt_memory_set_class(mem, l, rows, k)) < 0)
			goto out;
	}
	char what[160];
	if ((rc = hdqtd_openset_calibrate(cfg, m, mem, head, V, kept, out, len, what, sizeof(what))) == 0)
		hdqtd_log(LOG_INFO, "import: open-set calibration %s", what);
out:
	if (rc < 0)
		hdqtd_log(LOG_WARNING, "import: open-set calibration: %s", hdqt_strerror(rc));
	hdqt_memory_free(mem);
	free(V);
	free(vcls);
	free(rows);
}

static void run_import(hdqtd_job *hj, hdqt_store *s, hdqt_feat *f)
{
	(void)f;
	fjob *j = (fjob *)((char *)hj - offsetof(fjob, job));
	hdqtd_xfer *x = j->x;
	const hdqtd_config *cfg = &j->cfg;
	hdqt_bundle b = {0};
	cJSON *man = NULL;
	hdqt_model *m = NULL;
	hdqt_store_class *have = NULL;
	int n_have = 0;
	uint8_t *blob2 = NULL;
	size_t blen2 = 0;
	int *ex_label = NULL;
	const char **new_names = NULL;
	int *new_labels = NULL, *new_active = NULL;
	/* By the bundle's label: its class's name index, and the label here. */
	int bname[HDQT_MAX_CLASSES], map[HDQT_MAX_CLASSES];
	int rc = hdqt_bundle_read(x->buf, x->size, &b);
	if (rc == HDQT_EVERSION)
		BAD(HDQT_RPC_INCOMPATIBLE, "bundle format version %u is not supported (this hdqtd reads "
		    "%u)", x->size >= 12 ? (unsigned)x->buf[8] : 0u, HDQT_BUNDLE_VERSION);
	if (rc == HDQT_ENOMEM)
		BAD(HDQT_RPC_INTERNAL_ERROR, "out of memory");
	if (rc < 0)
		BAD(HDQT_RPC_CORRUPT, "not an intact bundle (bad magic, sizes or checksum): nothing "
		    "was changed");
	if (!(man = cJSON_ParseWithLength(b.manifest, b.manifest_len)) || !cJSON_IsObject(man))
		BAD(HDQT_RPC_CORRUPT, "the bundle's manifest is not a JSON object");
	const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(man, "format");
	if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, BUNDLE_FORMAT) != 0)
		BAD(HDQT_RPC_CORRUPT, "the manifest does not name the format \"" BUNDLE_FORMAT "\"");
	int fdim = 0, win = 0;
	if (man_int(man, "feature_dim", 1, HDQT_MAX_DIM, &fdim) < 0 ||
	    man_int(man, "window", 1, 1 << 20, &win) < 0)
		BAD(HDQT_RPC_CORRUPT, "the manifest lacks feature_dim or window");
	if (fdim != HDQT_FEAT_DIM || (b.n_ex > 0 && b.dim != HDQT_FEAT_DIM))
		BAD(HDQT_RPC_INCOMPATIBLE, "the bundle's features have %d dimensions, this box's %d",
		    b.n_ex > 0 && b.dim != HDQT_FEAT_DIM ? b.dim : fdim, HDQT_FEAT_DIM);
	if (win != cfg->window)
		BAD(HDQT_RPC_INCOMPATIBLE, "the bundle was learned from windows of %d readings, this "
		    "box uses %d (model.window)", win, cfg->window);
	if ((rc = hdqt_model_load(b.model, b.model_len, &m)) < 0)
		BAD(HDQT_RPC_CORRUPT, "the bundle's model does not load: %s", hdqt_strerror(rc));
	if (hdqt_model_n_in(m) != HDQT_FEAT_DIM)
		BAD(HDQT_RPC_INCOMPATIBLE, "the bundle's model takes %d inputs, this box's features "
		    "have %d", hdqt_model_n_in(m), HDQT_FEAT_DIM);
	const hdqt_qconfig *q = hdqt_model_qconfig(m);
	/* The next round continues from the imported model in its own recipe;
	 * a box configured for another would silently train in the bundle's. */
	if (q->mode != cfg->quant || q->bits != cfg->bits || q->acc_bits != cfg->acc_bits)
		BAD(HDQT_RPC_INCOMPATIBLE, "incompatible recipe: the bundle's model is %s with %d-bit "
		    "inputs and %d-bit accumulators, this box trains %s with %d and %d (model.quant, "
		    "model.bits, model.acc_bits)", hdqt_mode_name(q->mode), q->bits, q->acc_bits,
		    hdqt_mode_name(cfg->quant), cfg->bits, cfg->acc_bits);
	/* The same for the shape: the next round clones the imported model,
	 * so model.hidden (and HadaNets' betas) would be ignored for good. */
	const hdqt_mlp_config *mc = hdqt_model_config(m);
	int same = mc->n_hidden == cfg->n_hidden;
	for (int l = 0; same && l < mc->n_hidden; l++)
		same = mc->hidden[l] == cfg->hidden[l];
	if (!same) {
		char got[96] = "", want[96] = "";
		for (int l = 0; l < mc->n_hidden; l++)
			snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%d", l ? "," : "",
				 mc->hidden[l]);
		for (int l = 0; l < cfg->n_hidden; l++)
			snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%d", l ? "," : "",
				 cfg->hidden[l]);
		BAD(HDQT_RPC_INCOMPATIBLE, "incompatible shape: the bundle's model has hidden layers "
		    "%s, this box's model.hidden is %s", got, want);
	}
	if (hdqt_mode_is_hadanet(q->mode) &&
	    ((cfg->beta_w >= 0 && q->beta_w != cfg->beta_w) || (cfg->beta_a >= 0 && q->beta_a != cfg->beta_a)))
		BAD(HDQT_RPC_INCOMPATIBLE, "incompatible recipe: the bundle's model has beta_w %d and "
		    "beta_a %d, this box's model.beta_w and model.beta_a say %d and %d", q->beta_w,
		    q->beta_a, cfg->beta_w, cfg->beta_a);
	const int C = hdqt_model_n_classes(m);
	const cJSON *ca = cJSON_GetObjectItemCaseSensitive(man, "classes");
	const int nb = cJSON_IsArray(ca) ? cJSON_GetArraySize(ca) : -1;
	if (nb < C || nb > HDQT_MAX_CLASSES)
		BAD(HDQT_RPC_CORRUPT, "the manifest must list the model's %d classes", C);
	for (int l = 0; l < HDQT_MAX_CLASSES; l++)
		bname[l] = map[l] = -1;
	const cJSON *e = ca->child;
	for (int i = 0; i < nb; i++, e = e->next) {
		const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
		int lab;
		if (!cJSON_IsString(nm) || !valid_class_name(nm->valuestring) ||
		    man_int(e, "label", 0, nb - 1, &lab) < 0 || bname[lab] >= 0 ||
		    !cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(e, "active")))
			BAD(HDQT_RPC_CORRUPT, "manifest classes[%d] is not {name, label (0..%d, once "
			    "each), active}", i, nb - 1);
		for (int k = 0; k < i; k++)
			if (!strcmp(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(ca, k), "name")
					    ->valuestring, nm->valuestring))
				BAD(HDQT_RPC_CORRUPT, "manifest names class \"%s\" twice", nm->valuestring);
		bname[lab] = i;
	}
	for (int i = 0; i < b.n_ex; i++)
		if (b.ex_y[i] < 0 || b.ex_y[i] >= C)
			BAD(HDQT_RPC_CORRUPT, "exemplar %d has label %d, the model has %d classes", i,
			    b.ex_y[i], C);
	/* Classes by name against this box's. */
	if ((rc = hdqt_store_class_list(s, &have, &n_have)) < 0)
		BAD(HDQT_RPC_STORAGE, "reading the classes: %s", hdqt_store_errmsg(s));
	int next_label = 0, conflicts = 0;
	char conflict[200] = "";
	unsigned char used[HDQT_MAX_CLASSES] = {0};
	for (int i = 0; i < n_have; i++)
		if (have[i].label >= 0 && have[i].label < HDQT_MAX_CLASSES)
			used[have[i].label] = 1;
	if (!(new_names = calloc((size_t)nb, sizeof(char *))) ||
	    !(new_labels = calloc((size_t)nb, sizeof(int))) ||
	    !(new_active = calloc((size_t)nb, sizeof(int))) ||
	    !(j->created = calloc((size_t)nb, sizeof(*j->created))))
		BAD(HDQT_RPC_INTERNAL_ERROR, "out of memory");
	for (int pass = 0; pass < 2; pass++) {
		/* Pass 0 maps names the box knows, pass 1 places the new ones, so
		 * that a remap never hands a new class a label a known one keeps. */
		for (int l = 0; l < nb; l++) {
			const cJSON *bc = cJSON_GetArrayItem(ca, bname[l]);
			const char *name = cJSON_GetObjectItemCaseSensitive(bc, "name")->valuestring;
			const hdqt_store_class *byname = NULL, *bylabel = NULL;
			for (int i = 0; i < n_have; i++) {
				if (!strcmp(have[i].name, name))
					byname = &have[i];
				if (have[i].label == l)
					bylabel = &have[i];
			}
			if (pass == 0 && byname) {
				if (byname->label == l || j->remap) {
					map[l] = byname->label;
				} else if (!conflicts++) {
					snprintf(conflict, sizeof(conflict), "class \"%s\" has label %d here and "
						 "%d in the bundle", name, byname->label, l);
				}
			} else if (pass == 1 && !byname) {
				if (!bylabel && !used[l]) {
					map[l] = l;
				} else if (j->remap) {
					while (next_label < HDQT_MAX_CLASSES && used[next_label])
						next_label++;
					if (next_label == HDQT_MAX_CLASSES)
						BAD(HDQT_RPC_LIMIT, "the import would leave more than %d classes",
						    HDQT_MAX_CLASSES);
					map[l] = next_label;
				} else if (!conflicts++) {
					snprintf(conflict, sizeof(conflict), "label %d is class \"%s\" here and "
						 "\"%s\" in the bundle", l, bylabel->name, name);
				}
				if (map[l] >= 0) {
					used[map[l]] = 1;
					snprintf(j->created[j->n_created], sizeof(j->created[0]), "%s", name);
					new_names[j->n_created] = j->created[j->n_created];
					new_labels[j->n_created] = map[l];
					new_active[j->n_created] =
						cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bc, "active"));
					j->n_created++;
				}
			}
		}
	}
	if (conflicts)
		BAD(HDQT_RPC_INCOMPATIBLE, "classes do not match by label (%d conflicts; %s): nothing "
		    "was changed; import with remap (hdqtctl import --remap) to give the bundle's "
		    "classes this box's labels", conflicts, conflict);
	if (n_have + j->n_created > HDQT_MAX_CLASSES)
		BAD(HDQT_RPC_LIMIT, "the import would leave more than %d classes", HDQT_MAX_CLASSES);
	int identity = 1, head = C;
	for (int l = 0; l < C; l++) {
		identity &= map[l] == l;
		head = map[l] + 1 > head ? map[l] + 1 : head;
	}
	const uint8_t *blob = b.model;
	size_t blen = b.model_len;
	if (!identity) {
		if ((rc = hdqt_model_remap_classes(m, map, head)) < 0 ||
		    (rc = hdqt_model_save(m, &blob2, &blen2)) < 0)
			BAD(HDQT_RPC_INTERNAL_ERROR, "remapping the model: %s", hdqt_strerror(rc));
		blob = blob2;
		blen = blen2;
	}
	if (!(ex_label = malloc(sizeof(int) * ((size_t)b.n_ex + 1))))
		BAD(HDQT_RPC_INTERNAL_ERROR, "out of memory");
	for (int i = 0; i < b.n_ex; i++)
		ex_label[i] = map[b.ex_y[i]];
	/* The new version's metrics: the source's validation accuracy, per class
	 * in this box's labels (kept short: the column is read back in 512 bytes). */
	const cJSON *met = cJSON_GetObjectItemCaseSensitive(man, "metrics");
	const cJSON *va = cJSON_GetObjectItemCaseSensitive(met, "validation_accuracy");
	const cJSON *per = cJSON_GetObjectItemCaseSensitive(met, "per_class");
	int src_v = 0;
	man_int(man, "model_version", 0, 2000000000, &src_v);
	char *metrics = j->metrics, config[256];
	const size_t metrics_len = sizeof(j->metrics);
	int o = snprintf(metrics, metrics_len, "{\"imported\":true,\"source_version\":%d,"
			 "\"validation_accuracy\":%.2f,\"per_class\":[", src_v,
			 cJSON_IsNumber(va) ? va->valuedouble : -1.0);
	for (int l = 0; l < head && o < (int)metrics_len - 16; l++) {
		double a = -1;
		for (int bl = 0; bl < C; bl++)
			if (map[bl] == l && cJSON_IsNumber(cJSON_GetArrayItem(per, bl)))
				a = cJSON_GetArrayItem(per, bl)->valuedouble;
		o += snprintf(metrics + o, metrics_len - (size_t)o, "%s%.1f", l ? "," : "", a);
	}
	if (o >= (int)metrics_len - 3)
		snprintf(metrics, metrics_len, "{\"imported\":true,\"source_version\":%d}", src_v);
	else
		snprintf(metrics + o, metrics_len - (size_t)o, "]}");
	const cJSON *box = cJSON_GetObjectItemCaseSensitive(man, "box_id");
	char boxs[40];
	snprintf(boxs, sizeof(boxs), "%s", cJSON_IsString(box) ? box->valuestring : "?");
	for (char *ch = boxs; *ch; ch++)
		if (*ch == '"' || *ch == '\\' || (unsigned char)*ch < 0x20 || (unsigned char)*ch >= 0x7f)
			*ch = '_';
	snprintf(config, sizeof(config), "{\"quant\":\"%s\",\"bits\":%d,\"acc_bits\":%d,"
		 "\"imported_from\":\"%s\",\"source_version\":%d}", hdqt_mode_name(q->mode), q->bits,
		 q->acc_bits, boxs, src_v);
	/* This box's open-set calibration of the imported model: on its own
	 * validation samples (the source's thresholds were set on another
	 * wearer), with the bundle's exemplars as the class means. */
	uint8_t *nblob = NULL;
	size_t nlen = 0;
	calibrate_import(s, cfg, m, have, n_have, map, C, b.ex_X, ex_label, b.n_ex, &nblob, &nlen);
	hdqt_store_import im = {
		.blob = blob, .blob_len = blen, .config_json = config, .metrics_json = metrics,
		.new_names = new_names, .new_labels = new_labels, .new_active = new_active,
		.n_new = j->n_created, .exemplar_label = ex_label, .exemplars = b.ex_X,
		.n_exemplars = b.n_ex, .dim = HDQT_FEAT_DIM, .novelty = nblob, .novelty_len = nlen,
	};
	rc = hdqt_store_import_commit(s, &im, &j->version);
	free(nblob);
	if (rc < 0) {
		if (rc == HDQT_EFULL)
			BAD(HDQT_RPC_LIMIT, "storage limit reached: %s", hdqt_store_errmsg(s));
		if (rc == HDQT_ERANGE)
			BAD(HDQT_RPC_CORRUPT, "%s", hdqt_store_errmsg(s));
		BAD(HDQT_RPC_STORAGE, "database error (nothing was changed): %s", hdqt_store_errmsg(s));
	}
	/* The serving copy, loaded here rather than on the loop (as a round's). */
	if (hdqt_model_set_threads(m, 1) == 0) {
		j->model = m;
		m = NULL;
	}
	j->res = cJSON_CreateObject();
	cJSON *cr = cJSON_AddArrayToObject(j->res, "classes_created");
	if (!cr)
		BAD(HDQT_RPC_INTERNAL_ERROR, "out of memory"); /* committed: the loop reloads anyway */
	for (int i = 0; i < j->n_created; i++)
		cJSON_AddItemToArray(cr, cJSON_CreateString(j->created[i]));
	cJSON_AddNumberToObject(j->res, "model_version", (double)j->version);
	cJSON_AddBoolToObject(j->res, "remapped", !identity);
	cJSON_AddNumberToObject(j->res, "exemplars", b.n_ex);
	cJSON *src = cJSON_AddObjectToObject(j->res, "source");
	if (src) {
		const cJSON *hv = cJSON_GetObjectItemCaseSensitive(man, "hdqtd_version");
		const cJSON *cr2 = cJSON_GetObjectItemCaseSensitive(man, "created");
		cJSON_AddStringToObject(src, "box_id", cJSON_IsString(box) ? box->valuestring : "");
		cJSON_AddNumberToObject(src, "model_version", src_v);
		cJSON_AddStringToObject(src, "hdqtd_version", cJSON_IsString(hv) ? hv->valuestring : "");
		cJSON_AddNumberToObject(src, "created", cJSON_IsNumber(cr2) ? cr2->valuedouble : 0);
	}
out:
	hdqt_bundle_release(&b);
	cJSON_Delete(man);
	hdqt_model_free(m);
	free(have);
	free(blob2);
	free(ex_label);
	free(new_names);
	free(new_labels);
	free(new_active);
}

cJSON *hdqtd_m_import_commit(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k)
{
	hdqtd_xfer *x = xfer_get(d, c, HDQTD_XFER_IMPORT, p, r);
	if (!x)
		return NULL;
	const cJSON *remap = cJSON_GetObjectItemCaseSensitive(p, "remap");
	if (remap && !cJSON_IsBool(remap))
		return hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "params.remap must be true or false");
	if (x->len != x->size)
		return hdqtd_fail(r, HDQT_RPC_INVALID_PARAMS, "the bundle is incomplete: %zu of %zu "
				  "bytes received", x->len, x->size);
	if (hdqt_bundle_crc32(x->buf, x->size) != x->crc) {
		xfer_end(d, HDQTD_XFER_IMPORT, "checksum mismatch");
		return hdqtd_fail(r, HDQT_RPC_CORRUPT, "the bytes received do not match params.crc32 "
				  "of model.import: nothing was changed; send the bundle again");
	}
	if (hdqtd_exclusive_busy(d, r))
		return NULL;
	fjob *j = fjob_new(d, c, k, FJ_IMPORT, x, r);
	if (!j)
		return NULL;
	j->remap = cJSON_IsTrue(remap);
	j->prev = d->model_version;
	x->busy = 1;
	j->exclusive = 1;
	d->exclusive++;
	j->job.run = run_import;
	j->job.done = writer_done;
	hdqtd_writer_submit(d->writer, &j->job);
	*k->async = 1;
	return NULL;
}

/* The loop applies a committed import: classes and the serving model. */
static cJSON *apply_import(hdqtd *d, fjob *j)
{
	if (hdqtd_reload_classes(d) < 0)
		hdqtd_log(LOG_ERR, "reloading classes after an import: %s", hdqt_store_errmsg(d->store));
	int rc = 0;
	if (j->model) {
		hdqtd_install_model(d, j->model, j->version, j->metrics);
		j->model = NULL;
	} else {
		rc = hdqtd_load_model(d); /* no memory for the hand-over: read it back */
	}
	if (rc < 0) {
		hdqtd_fail(&j->r, HDQT_RPC_STORAGE, "model %lld was imported and is current, but "
			   "loading it failed (%s); restart hdqtd", (long long)j->version,
			   hdqt_strerror(rc));
		return NULL;
	}
	d->stats.imports++;
	hdqtd_log(LOG_NOTICE, "model imported as version %lld (was %lld), %d classes created",
		  (long long)j->version, (long long)j->prev, j->n_created);
	for (int i = 0; i < j->n_created; i++) {
		cJSON *ev = cJSON_CreateObject();
		if (ev)
			cJSON_AddStringToObject(ev, "name", j->created[i]);
		hdqtd_broadcast(d, hdqt_rpc_event("class.added", ev));
	}
	cJSON *ev = cJSON_CreateObject();
	if (ev) {
		cJSON_AddNumberToObject(ev, "model_version", (double)j->version);
		cJSON_AddNumberToObject(ev, "previous", (double)j->prev);
		cJSON_AddStringToObject(ev, "reason", "import");
	}
	hdqtd_broadcast(d, hdqt_rpc_event("model.swapped", ev));
	cJSON *res = j->res;
	j->res = NULL;
	if (res)
		cJSON_AddNumberToObject(res, "previous", (double)j->prev);
	return res;
}

static void writer_done(hdqtd_job *hj)
{
	fjob *j = (fjob *)((char *)hj - offsetof(fjob, job));
	cJSON *res = NULL;
	if (!j->r.code) {
		if (j->kind == FJ_IMPORT) {
			res = apply_import(j->d, j);
		} else {
			j->d->stats.exports++;
			res = j->res;
			j->res = NULL;
		}
	} else if (j->kind == FJ_IMPORT && j->version > 0) {
		/* Committed, but the reply could not be built: the state follows. */
		hdqtd_reload_classes(j->d);
		hdqtd_load_model(j->d);
	}
	fjob_finish(j, res);
}

/* ---- backup ---- */

static void backup_work(uv_work_t *w)
{
	fjob *j = w->data;
	hdqtd_xfer *x = j->x;
	hdqt_store *s = NULL;
	hdqt_store_opts so;
	hdqtd_config_store_opts(&j->cfg, &so);
	so.read_only = 1;
	so.quick_check = 0;
	so.busy_timeout_ms = 10000;
	char err[256];
	int rc = hdqt_store_open(&s, j->cfg.db, &so, err, sizeof(err));
	if (rc < 0) {
		hdqtd_fail(&j->r, HDQT_RPC_STORAGE, "opening the database for the backup: %s", err);
		return;
	}
	/* The online backup API, from a connection of its own: the copy is one
	 * consistent snapshot while writes and rounds go on (WAL). */
	rc = hdqt_store_backup(s, x->path);
	if (rc < 0)
		hdqtd_fail(&j->r, rc == HDQT_EFULL ? HDQT_RPC_LIMIT : HDQT_RPC_STORAGE, "backup: %s",
			   hdqt_store_errmsg(s));
	hdqt_store_close(s);
	if (rc < 0)
		return;
	/* Size and CRC of the copy, for the client to check what it received. */
	int fd = open(x->path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		hdqtd_fail(&j->r, HDQT_RPC_STORAGE, "backup file: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	uint8_t *buf = malloc(1 << 16);
	uint32_t crc = hdqt_bundle_crc32(NULL, 0);
	uLong acc = crc;
	size_t total = 0;
	ssize_t got = 0;
	while (buf && (got = read(fd, buf, 1 << 16)) > 0) {
		acc = crc32(acc, buf, (uInt)got);
		total += (size_t)got;
	}
	close(fd);
	free(buf);
	if (!buf || got < 0 || total != (size_t)st.st_size) {
		hdqtd_fail(&j->r, HDQT_RPC_STORAGE, "reading the backup back failed");
		return;
	}
	x->size = total;
	x->crc = (uint32_t)acc;
}

static void backup_done(uv_work_t *w, int status)
{
	(void)status; /* never canceled */
	fjob *j = w->data;
	cJSON *o = NULL;
	if (!j->r.code && (o = cJSON_CreateObject())) {
		char crc[9];
		crc_hex(j->x->crc, crc);
		cJSON_AddStringToObject(o, "id", j->x->id);
		cJSON_AddNumberToObject(o, "size", (double)j->x->size);
		cJSON_AddStringToObject(o, "crc32", crc);
		cJSON_AddNumberToObject(o, "chunk_max", (double)chunk_max(j->d));
		cJSON_AddNumberToObject(o, "model_version", (double)j->d->model_version);
		j->d->stats.backups++;
	}
	fjob_finish(j, o);
}

cJSON *hdqtd_m_backup(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k)
{
	(void)p;
	hdqtd_xfer *x = xfer_new(d, c, HDQTD_XFER_BACKUP, r);
	if (!x)
		return NULL;
	fjob *j = fjob_new(d, c, k, FJ_BACKUP, x, r);
	if (!j) {
		xfer_end(d, HDQTD_XFER_BACKUP, NULL);
		return NULL;
	}
	backup_path(d, d->xfer_seq, x->path, sizeof(x->path));
	x->busy = 1;
	if (uv_queue_work(d->loop, &j->work, backup_work, backup_done) < 0) {
		x->busy = 0; /* cannot happen with a valid loop */
		fjob_free(j);
		xfer_end(d, HDQTD_XFER_BACKUP, NULL);
		return hdqtd_fail(r, HDQT_RPC_INTERNAL_ERROR, "cannot queue the backup");
	}
	*k->async = 1;
	return NULL;
}

/* ---- metrics ---- */

cJSON *hdqtd_m_metrics(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k)
{
	(void)c;
	(void)p;
	(void)k;
	cJSON *o = cJSON_CreateObject();
	if (!o || hdqtd_metrics_json(&d->stats, o) < 0) {
		cJSON_Delete(o);
		return hdqtd_fail(r, HDQT_RPC_INTERNAL_ERROR, "out of memory");
	}
	cJSON_AddStringToObject(o, "version", HDQT_VERSION);
	cJSON_AddNumberToObject(o, "uptime_s", hdqtd_now() - d->started);
	if (d->model)
		cJSON_AddNumberToObject(o, "model_version", (double)d->model_version);
	else
		cJSON_AddNullToObject(o, "model_version");
	/* The file and its write-ahead log: stat() is cheap enough for the loop. */
	struct stat st;
	double bytes = 0;
	char wal[4200];
	if (stat(d->cfg.db, &st) == 0)
		bytes += (double)st.st_size;
	snprintf(wal, sizeof(wal), "%s-wal", d->cfg.db);
	if (stat(wal, &st) == 0)
		bytes += (double)st.st_size;
	cJSON_AddNumberToObject(o, "database_bytes", bytes);
	cJSON_AddNumberToObject(o, "connections", d->n_conns);
	cJSON_AddNumberToObject(o, "classes", d->n_classes);
	cJSON_AddNumberToObject(o, "samples_pending", (double)d->pending_total);
	cJSON_AddNumberToObject(o, "samples_in_quarantine", (double)d->quarantined);
	cJSON_AddNumberToObject(o, "exemplars", (double)d->n_exemplars);
	hdqtd_progress pr;
	hdqtd_trainer_progress(d->trainer, &pr);
	cJSON_AddBoolToObject(o, "training", pr.running);
	const cJSON *acc = cJSON_GetObjectItemCaseSensitive(d->metrics, "validation_accuracy");
	if (cJSON_IsNumber(acc) && acc->valuedouble >= 0)
		cJSON_AddNumberToObject(o, "validation_accuracy", acc->valuedouble);
	else
		cJSON_AddNullToObject(o, "validation_accuracy");
	return o;
}
