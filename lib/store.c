/* SPDX-License-Identifier: MIT */
/*
 * SQLite persistence for hdqtd (see hdqt_store.h).
 *
 * Durability: WAL journal, synchronous=FULL by default (NORMAL may lose the
 * last transactions on power loss, never corrupts), one transaction per
 * logical update, and callers acknowledge only after commit.  Open runs
 * PRAGMA quick_check and refuses a damaged file instead of recreating it.
 * Schema migrations run in one transaction; a database written by a newer
 * build is refused before anything is written.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "hdqt_store.h"

enum {
	ST_CLASS_ADD, ST_CLASS_GET, ST_CLASS_MAXLABEL, ST_SAMPLE_ADD, ST_SAMPLE_COUNT_CLASS,
	ST_SAMPLE_COUNT_ALL, ST_CLASS_EXISTS, ST_PENDING, ST_SAMPLE_GET, ST_SAMPLE_DEL,
	ST_VALID_ADD, ST_EXEMPLAR_ADD, ST_MODEL_ADD, ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
	[ST_CLASS_ADD] = "INSERT INTO classes(name, label, created, active) VALUES(?, ?, ?, 1)",
	[ST_CLASS_GET] = "SELECT id, label, active, created, name FROM classes WHERE name = ?",
	[ST_CLASS_MAXLABEL] = "SELECT COALESCE(MAX(label) + 1, 0) FROM classes",
	[ST_SAMPLE_ADD] = "INSERT INTO samples(class_id, created, dim, features) VALUES(?, ?, ?, ?)",
	[ST_SAMPLE_COUNT_CLASS] = "SELECT COUNT(*) FROM samples WHERE learned = 0 AND class_id = ?",
	[ST_SAMPLE_COUNT_ALL] = "SELECT COUNT(*) FROM samples WHERE learned = 0",
	[ST_CLASS_EXISTS] = "SELECT active FROM classes WHERE id = ?",
	[ST_PENDING] = "SELECT id, class_id, dim, features FROM samples WHERE learned = 0 "
		       "ORDER BY id LIMIT ?",
	[ST_SAMPLE_GET] = "SELECT class_id, created, dim, features FROM samples WHERE id = ?",
	[ST_SAMPLE_DEL] = "DELETE FROM samples WHERE id = ?",
	[ST_VALID_ADD] = "INSERT INTO validation(class_id, created, dim, features) VALUES(?, ?, ?, ?)",
	[ST_EXEMPLAR_ADD] = "INSERT INTO exemplars(class_id, rank, dim, features, model_version) "
			    "VALUES(?, ?, ?, ?, ?)",
	[ST_MODEL_ADD] = "INSERT INTO models(created, config, blob, current, metrics) "
			 "VALUES(?, ?, ?, 0, ?)",
};

struct hdqt_store {
	sqlite3 *db;
	hdqt_store_opts o;
	sqlite3_stmt *st[ST_COUNT];
	char err[256];
};

/* Schema history.  Index i upgrades version i to i + 1; never edit a
 * shipped step, append a new one. */
static const char *const migrations[HDQT_STORE_SCHEMA] = {
	/* 0 -> 1 */
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
	"CREATE TABLE classes(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
	" label INTEGER NOT NULL UNIQUE, created INTEGER NOT NULL, active INTEGER NOT NULL DEFAULT 1);"
	"CREATE TABLE samples(id INTEGER PRIMARY KEY,"
	" class_id INTEGER NOT NULL REFERENCES classes(id), created INTEGER NOT NULL,"
	" dim INTEGER NOT NULL, features BLOB NOT NULL, learned INTEGER NOT NULL DEFAULT 0);"
	"CREATE INDEX samples_pending ON samples(learned, class_id);"
	"CREATE TABLE exemplars(class_id INTEGER NOT NULL REFERENCES classes(id),"
	" rank INTEGER NOT NULL, dim INTEGER NOT NULL, features BLOB NOT NULL,"
	" PRIMARY KEY(class_id, rank));"
	"CREATE TABLE models(version INTEGER PRIMARY KEY AUTOINCREMENT, created INTEGER NOT NULL,"
	" config TEXT NOT NULL, blob BLOB NOT NULL, current INTEGER NOT NULL DEFAULT 0);"
	"INSERT INTO meta(key, value) VALUES('schema_version', '1');",
	/* 1 -> 2: validation samples, training runs, per-version metrics */
	"ALTER TABLE models ADD COLUMN metrics TEXT NOT NULL DEFAULT '{}';"
	"CREATE TABLE validation(id INTEGER PRIMARY KEY,"
	" class_id INTEGER NOT NULL REFERENCES classes(id), created INTEGER NOT NULL,"
	" dim INTEGER NOT NULL, features BLOB NOT NULL);"
	"CREATE INDEX validation_class ON validation(class_id);"
	"CREATE TABLE runs(id INTEGER PRIMARY KEY, started INTEGER NOT NULL, ended INTEGER,"
	" outcome TEXT, figures TEXT NOT NULL DEFAULT '{}');"
	"UPDATE meta SET value = '2' WHERE key = 'schema_version';",
	/* 2 -> 3: batch ids (exactly-once sample.add), exemplar memory per model
	 * version (rollback restores it); quarantined samples have learned = 2 */
	"CREATE TABLE batches(seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
	" n INTEGER NOT NULL, created INTEGER NOT NULL);"
	"CREATE TABLE exemplars3(model_version INTEGER NOT NULL,"
	" class_id INTEGER NOT NULL REFERENCES classes(id), rank INTEGER NOT NULL,"
	" dim INTEGER NOT NULL, features BLOB NOT NULL, PRIMARY KEY(model_version, class_id, rank));"
	"INSERT INTO exemplars3 SELECT COALESCE((SELECT version FROM models WHERE current = 1), 0),"
	" class_id, rank, dim, features FROM exemplars;"
	"DROP TABLE exemplars;"
	"ALTER TABLE exemplars3 RENAME TO exemplars;"
	"UPDATE meta SET value = '3' WHERE key = 'schema_version';",
	/* 3 -> 4: open-set calibration per model version, unknown windows */
	"ALTER TABLE models ADD COLUMN novelty BLOB;"
	/* AUTOINCREMENT: an id once shown to an operator never names another
	 * window; grp is the group a window joined when it was seen */
	"CREATE TABLE unknowns(id INTEGER PRIMARY KEY AUTOINCREMENT, created INTEGER NOT NULL,"
	" model_version INTEGER NOT NULL, grp INTEGER NOT NULL, label INTEGER NOT NULL,"
	" score REAL NOT NULL, dim INTEGER NOT NULL, features BLOB NOT NULL);"
	"CREATE INDEX unknowns_grp ON unknowns(grp);"
	"UPDATE meta SET value = '4' WHERE key = 'schema_version';",
};

void hdqt_store_opts_default(hdqt_store_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->sync_full = 1;
	o->keep_models = 5;
	o->keep_learned = 1;
	o->busy_timeout_ms = 5000;
	o->quick_check = 1;
}

static int seterr(hdqt_store *s, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->err, sizeof(s->err), fmt, ap);
	va_end(ap);
	return rc;
}

/* Map an SQLite result code to ours, recording SQLite's message. */
static int sqlerr(hdqt_store *s, int rc, const char *what)
{
	int prim = rc & 0xff, out;
	switch (prim) {
	case SQLITE_FULL: out = HDQT_EFULL; break;
	case SQLITE_BUSY:
	case SQLITE_LOCKED: out = HDQT_EBUSY; break;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB: out = HDQT_ECORRUPT; break;
	case SQLITE_NOMEM: out = HDQT_ENOMEM; break;
	case SQLITE_CONSTRAINT:
		out = rc == SQLITE_CONSTRAINT_FOREIGNKEY ? HDQT_ENOTFOUND : HDQT_EEXIST;
		break;
	case SQLITE_TOOBIG: out = HDQT_ERANGE; break;
	case SQLITE_IOERR:
		/* A write past RLIMIT_FSIZE or onto a full disk surfaces as an I/O
		 * error with errno EFBIG/ENOSPC. */
		{
			/* SQLite keeps the errno of the failed system call when it
			 * knows it (errno itself may have been changed since); for
			 * WAL writes it reports 0, and errno is still the write's. */
			int e = s->db ? sqlite3_system_errno(s->db) : 0;
			if (e == 0)
				e = errno;
			out = (e == EFBIG || e == ENOSPC) ? HDQT_EFULL : HDQT_EIO;
		}
		break;
	default: out = HDQT_EIO; break;
	}
	return seterr(s, out, "%s: %s", what, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
}

static int exec(hdqt_store *s, const char *sql, const char *what)
{
	int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : sqlerr(s, rc, what);
}

static int begin(hdqt_store *s)
{
	/* A database file deleted or replaced under a running hdqtd takes
	 * writes into an inode that no one opens again: every sample
	 * acknowledged from then on would be gone at the next start, without
	 * a word.  Every write begins here, so none is acknowledged. */
	int moved = 0;
	if (sqlite3_file_control(s->db, "main", SQLITE_FCNTL_HAS_MOVED, &moved) == SQLITE_OK && moved)
		return seterr(s, HDQT_EIO, "the database file was deleted or replaced while hdqtd ran; "
			      "nothing more is written to it (restart hdqtd to open the file at its path)");
	/* IMMEDIATE takes the write lock up front, so a transaction never fails
	 * half-way with SQLITE_BUSY on lock upgrade. */
	return exec(s, "BEGIN IMMEDIATE", "begin");
}

static int commit(hdqt_store *s)
{
	return exec(s, "COMMIT", "commit");
}

static void rollback(hdqt_store *s)
{
	if (!sqlite3_get_autocommit(s->db))
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

static sqlite3_stmt *stmt(hdqt_store *s, int i)
{
	sqlite3_stmt *p = s->st[i];
	if (!p) {
		if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &p, NULL) != SQLITE_OK)
			return NULL;
		s->st[i] = p;
	}
	sqlite3_reset(p);
	sqlite3_clear_bindings(p);
	return p;
}

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

static double mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

struct check_clock {
	void (*fn)(void *);
	void *arg;
	double last, every;
};

/* SQLite progress handler during quick_check: the caller's callback about
 * once a second; never interrupts (returns 0). */
static int check_tick(void *arg)
{
	struct check_clock *c = arg;
	double t = mono_s();
	if (t - c->last >= c->every) {
		c->last = t;
		c->fn(c->arg);
	}
	return 0;
}

static int single_int(hdqt_store *s, const char *sql, int64_t *out)
{
	sqlite3_stmt *p;
	int rc = sqlite3_prepare_v2(s->db, sql, -1, &p, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, sql);
	rc = sqlite3_step(p);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(p, 0);
	sqlite3_finalize(p);
	if (rc != SQLITE_ROW)
		return rc == SQLITE_DONE ? HDQT_ENOTFOUND : sqlerr(s, rc, sql);
	return 0;
}

static int read_version(hdqt_store *s, int *version)
{
	int64_t n = 0;
	int rc = single_int(s, "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'meta'", &n);
	if (rc < 0)
		return rc;
	if (n == 0) {
		int64_t tables = 0;
		if ((rc = single_int(s, "SELECT COUNT(*) FROM sqlite_schema", &tables)) < 0)
			return rc;
		if (tables > 0)
			return seterr(s, HDQT_ECORRUPT, "database has tables but no hdqtd schema: not an hdqtd database");
		*version = 0;
		return 0;
	}
	int64_t v;
	rc = single_int(s, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'schema_version'", &v);
	if (rc < 0)
		return rc == HDQT_ENOTFOUND ? seterr(s, HDQT_ECORRUPT, "meta table without schema_version") : rc;
	*version = (int)v;
	return 0;
}

static int migrate(hdqt_store *s, int from)
{
	int rc = begin(s);
	if (rc < 0)
		return rc;
	/* Re-read inside the write transaction: another process may have
	 * migrated meanwhile. */
	int v = from;
	if ((rc = read_version(s, &v)) < 0)
		goto fail;
	for (; v < HDQT_STORE_SCHEMA; v++)
		if ((rc = exec(s, migrations[v], "schema migration")) < 0)
			goto fail;
	return commit(s);
fail:
	rollback(s);
	return rc;
}

int hdqt_store_open(hdqt_store **out, const char *path, const hdqt_store_opts *opts, char *err,
		    size_t errlen)
{
	if (!out || !path)
		return HDQT_EINVAL;
	hdqt_store_opts o;
	if (opts)
		o = *opts;
	else
		hdqt_store_opts_default(&o);
	if (o.keep_models < 1 || o.max_bytes < 0 || o.max_pending_per_class < 0 || o.busy_timeout_ms < 0 ||
	    o.round_bytes < 0 || o.round_rows < 0)
		return HDQT_EINVAL;
	hdqt_store *s = calloc(1, sizeof(*s));
	if (!s)
		return HDQT_ENOMEM;
	s->o = o;
	int flags = o.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
	int rc = sqlite3_open_v2(path, &s->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
	int v = 0;
	char check[64] = "";
	if (rc != SQLITE_OK) {
		rc = sqlerr(s, rc, "open");
		goto fail;
	}
	sqlite3_extended_result_codes(s->db, 1);
	sqlite3_busy_timeout(s->db, o.busy_timeout_ms);
	/* quick_check reads every page: a damaged or foreign file fails here,
	 * before anything is written to it.  It takes seconds per GB on a cold
	 * cache, so the caller can ask for progress calls (hdqtd extends
	 * systemd's start timeout with them) or skip it on a second connection. */
	if (o.quick_check) {
		struct check_clock ck = {o.check_progress, o.check_arg, mono_s(),
					 o.check_interval_s > 0 ? o.check_interval_s : 1.0};
		if (o.check_progress)
			sqlite3_progress_handler(s->db, 10000, check_tick, &ck);
		sqlite3_stmt *p;
		rc = sqlite3_prepare_v2(s->db, "PRAGMA quick_check", -1, &p, NULL);
		if (rc == SQLITE_OK) {
			rc = sqlite3_step(p);
			if (rc == SQLITE_ROW) {
				snprintf(check, sizeof(check), "%s", (const char *)sqlite3_column_text(p, 0));
				rc = SQLITE_OK;
			}
			sqlite3_finalize(p);
		}
		sqlite3_progress_handler(s->db, 0, NULL, NULL);
		if (rc != SQLITE_OK) {
			rc = sqlerr(s, rc, "integrity check");
			goto fail;
		}
		if (strcmp(check, "ok") != 0) {
			rc = seterr(s, HDQT_ECORRUPT, "integrity check failed: %s", check);
			goto fail;
		}
	}
	if ((rc = read_version(s, &v)) < 0)
		goto fail;
	if (v > HDQT_STORE_SCHEMA) {
		rc = seterr(s, HDQT_EVERSION, "database schema version %d is newer than this hdqtd (%d); "
			    "refusing to touch it", v, HDQT_STORE_SCHEMA);
		goto fail;
	}
	if (!o.read_only) {
		/* journal_mode answers the mode in force, which stays "delete" when
		 * WAL cannot be had (e.g. no shared memory): then refuse, since the
		 * daemon's reader and writer connections rely on WAL. */
		char mode[16] = "";
		sqlite3_stmt *p;
		rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &p, NULL);
		if (rc == SQLITE_OK) {
			if ((rc = sqlite3_step(p)) == SQLITE_ROW) {
				snprintf(mode, sizeof(mode), "%s", (const char *)sqlite3_column_text(p, 0));
				rc = SQLITE_OK;
			}
			sqlite3_finalize(p);
		}
		if (rc != SQLITE_OK) {
			rc = sqlerr(s, rc, "journal_mode");
			goto fail;
		}
		if (strcmp(mode, "wal") != 0) {
			rc = seterr(s, HDQT_EIO, "journal_mode: WAL refused (mode %s)", mode);
			goto fail;
		}
		/* Truncate the WAL after checkpoints instead of letting it keep
		 * its largest size for ever. */
		if ((rc = exec(s, "PRAGMA journal_size_limit = 16777216", "journal_size_limit")) < 0)
			goto fail;
		if ((rc = exec(s, o.sync_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
			       "synchronous")) < 0)
			goto fail;
	}
	if ((rc = exec(s, "PRAGMA foreign_keys = ON", "foreign_keys")) < 0)
		goto fail;
	if (o.max_bytes > 0) {
		int64_t page = 4096;
		single_int(s, "PRAGMA page_size", &page);
		char sql[96];
		snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %lld",
			 (long long)(o.max_bytes / (page > 0 ? page : 4096)));
		if ((rc = exec(s, sql, "max_page_count")) < 0)
			goto fail;
	}
	if (v < HDQT_STORE_SCHEMA) {
		if (o.read_only) {
			rc = seterr(s, HDQT_EVERSION, "database schema %d needs migration; opened read-only", v);
			goto fail;
		}
		if ((rc = migrate(s, v)) < 0)
			goto fail;
	}
	*out = s;
	return 0;
fail:
	if (err && errlen)
		snprintf(err, errlen, "%s: %s", path, s->err[0] ? s->err : hdqt_strerror(rc));
	hdqt_store_close(s);
	return rc;
}

void hdqt_store_close(hdqt_store *s)
{
	if (!s)
		return;
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(s->st[i]);
	if (s->db)
		sqlite3_close(s->db); /* all statements finalised: cannot be BUSY */
	free(s);
}

const char *hdqt_store_errmsg(const hdqt_store *s)
{
	return s && s->err[0] ? s->err : "no error";
}

int hdqt_store_schema_version(hdqt_store *s)
{
	int v = -1;
	return read_version(s, &v) < 0 ? -1 : v;
}

int hdqt_store_integrity_check(hdqt_store *s)
{
	sqlite3_stmt *p;
	int rc = sqlite3_prepare_v2(s->db, "PRAGMA integrity_check", -1, &p, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, "integrity_check");
	rc = sqlite3_step(p);
	int ok = rc == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(p, 0), "ok") == 0;
	sqlite3_finalize(p);
	return ok ? 0 : seterr(s, HDQT_ECORRUPT, "integrity_check failed");
}

/* ---- classes ---- */

static int valid_name(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	if (n < 1 || n > HDQT_CLASS_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			return 0;
	return 1;
}

static void read_class(sqlite3_stmt *p, hdqt_store_class *c)
{
	c->id = sqlite3_column_int64(p, 0);
	c->label = sqlite3_column_int(p, 1);
	c->active = sqlite3_column_int(p, 2);
	c->created = sqlite3_column_int64(p, 3);
	snprintf(c->name, sizeof(c->name), "%s", (const char *)sqlite3_column_text(p, 4));
}

int hdqt_store_class_get(hdqt_store *s, const char *name, hdqt_store_class *out)
{
	if (!s || !valid_name(name) || !out)
		return HDQT_EINVAL;
	sqlite3_stmt *p = stmt(s, ST_CLASS_GET);
	if (!p)
		return sqlerr(s, sqlite3_errcode(s->db), "prepare");
	sqlite3_bind_text(p, 1, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(p);
	if (rc == SQLITE_ROW) {
		read_class(p, out);
		sqlite3_reset(p);
		return 0;
	}
	sqlite3_reset(p);
	return rc == SQLITE_DONE ? seterr(s, HDQT_ENOTFOUND, "no class '%s'", name) : sqlerr(s, rc, "class get");
}

/* Inside a transaction: insert class `name` (not taken) with the next label. */
static int class_insert(hdqt_store *s, const char *name)
{
	sqlite3_stmt *p = stmt(s, ST_CLASS_MAXLABEL);
	if (!p || sqlite3_step(p) != SQLITE_ROW) {
		if (p)
			sqlite3_reset(p);
		return sqlerr(s, sqlite3_errcode(s->db), "class label");
	}
	const int64_t label = sqlite3_column_int64(p, 0);
	sqlite3_reset(p);
	if (label >= HDQT_MAX_CLASSES)
		return seterr(s, HDQT_EFULL, "at most %d classes", HDQT_MAX_CLASSES);
	if (!(p = stmt(s, ST_CLASS_ADD)))
		return sqlerr(s, sqlite3_errcode(s->db), "prepare");
	sqlite3_bind_text(p, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(p, 2, label);
	sqlite3_bind_int64(p, 3, now_s());
	int rc = sqlite3_step(p);
	sqlite3_reset(p);
	return rc == SQLITE_DONE ? 0 : sqlerr(s, rc, "class add");
}

int hdqt_store_class_add(hdqt_store *s, const char *name, hdqt_store_class *out)
{
	if (!s || !valid_name(name))
		return s ? seterr(s, HDQT_EINVAL, "class name must be 1..%d bytes without control characters",
				  HDQT_CLASS_NAME_MAX) : HDQT_EINVAL;
	int rc = begin(s);
	if (rc < 0)
		return rc;
	hdqt_store_class tmp;
	if (hdqt_store_class_get(s, name, &tmp) == 0) {
		rollback(s);
		return seterr(s, HDQT_EEXIST, "class '%s' exists already", name);
	}
	if ((rc = class_insert(s, name)) < 0 || (rc = commit(s)) < 0) {
		rollback(s);
		return rc;
	}
	return out ? hdqt_store_class_get(s, name, out) : 0;
}

/* Room for one more row in a list read from a statement: v itself while
 * cnt < *cap, else v grown to twice *cap (first rows at the start); NULL
 * when out of memory (v stays valid for the caller to free). */
static void *grow_rows(void *v, int cnt, int *cap, size_t elem, int first)
{
	if (cnt < *cap)
		return v;
	int nc = *cap ? *cap * 2 : first;
	void *q = realloc(v, elem * (size_t)nc);
	if (q)
		*cap = nc;
	return q;
}

int hdqt_store_class_list(hdqt_store *s, hdqt_store_class **out, int *n)
{
	if (!s || !out || !n)
		return HDQT_EINVAL;
	sqlite3_stmt *p;
	int rc = sqlite3_prepare_v2(s->db, "SELECT id, label, active, created, name FROM classes ORDER BY label",
				    -1, &p, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, "class list");
	hdqt_store_class *v = NULL;
	int cnt = 0, cap = 0;
	while ((rc = sqlite3_step(p)) == SQLITE_ROW) {
		void *q = grow_rows(v, cnt, &cap, sizeof(*v), 16);
		if (!q) {
			rc = SQLITE_NOMEM;
			break;
		}
		v = q;
		read_class(p, &v[cnt++]);
	}
	sqlite3_finalize(p);
	if (rc != SQLITE_DONE) {
		free(v);
		return sqlerr(s, rc, "class list");
	}
	*out = v;
	*n = cnt;
	return 0;
}

int hdqt_store_class_set_active(hdqt_store *s, const char *name, int active)
{
	if (!s || !valid_name(name))
		return HDQT_EINVAL;
	sqlite3_stmt *p;
	int rc = sqlite3_prepare_v2(s->db, "UPDATE classes SET active = ? WHERE name = ?", -1, &p, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, "class update");
	sqlite3_bind_int(p, 1, active ? 1 : 0);
	sqlite3_bind_text(p, 2, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(p);
	sqlite3_finalize(p);
	if (rc != SQLITE_DONE)
		return sqlerr(s, rc, "class update");
	return sqlite3_changes(s->db) ? 0 : seterr(s, HDQT_ENOTFOUND, "no class '%s'", name);
}

/* ---- samples ---- */

static int count_pending(hdqt_store *s, int64_t class_id, int64_t *count)
{
	sqlite3_stmt *p = stmt(s, class_id < 0 ? ST_SAMPLE_COUNT_ALL : ST_SAMPLE_COUNT_CLASS);
	if (!p)
		return sqlerr(s, sqlite3_errcode(s->db), "prepare");
	if (class_id >= 0)
		sqlite3_bind_int64(p, 1, class_id);
	int rc = sqlite3_step(p);
	if (rc == SQLITE_ROW)
		*count = sqlite3_column_int64(p, 0);
	sqlite3_reset(p);
	return rc == SQLITE_ROW ? 0 : sqlerr(s, rc, "count");
}

int hdqt_store_samples_pending_count(hdqt_store *s, int64_t class_id, int64_t *count)
{
	if (!s || !count)
		return HDQT_EINVAL;
	return count_pending(s, class_id, count);
}

static int insert_samples(hdqt_store *s, const int64_t *class_ids, const float *X, int n, int d)
{
	const int64_t t = now_s();
	for (int i = 0; i < n; i++) {
		sqlite3_stmt *p = stmt(s, ST_SAMPLE_ADD);
		if (!p)
			return sqlerr(s, sqlite3_errcode(s->db), "prepare");
		sqlite3_bind_int64(p, 1, class_ids[i]);
		sqlite3_bind_int64(p, 2, t);
		sqlite3_bind_int(p, 3, d);
		sqlite3_bind_blob(p, 4, X + (size_t)i * d, (int)(sizeof(float) * d), SQLITE_STATIC);
		int rc = sqlite3_step(p);
		sqlite3_reset(p);
		if (rc != SQLITE_DONE)
			return sqlerr(s, rc, "insert");
	}
	return 0;
}

/* Bytes the database's pages hold (free pages not counted). */
static int used_bytes(hdqt_store *s, int64_t *used)
{
	int64_t pages = 0, freel = 0, size = 0;
	int rc;
	if ((rc = single_int(s, "PRAGMA page_count", &pages)) < 0 ||
	    (rc = single_int(s, "PRAGMA freelist_count", &freel)) < 0 ||
	    (rc = single_int(s, "PRAGMA page_size", &size)) < 0)
		return rc;
	*used = (pages - freel) * size;
	return 0;
}

/* Room for n more rows of d floats that still leaves the next training
 * round room to commit: a round that cannot commit frees nothing, so
 * without it a full database or disk stopped rounds and ingest for good.
 * In the cap, an eighth of it or what a round adds, whichever is more.  On
 * the disk, the WAL takes every page a commit changes before the file
 * takes the new ones: the rows the round learns (deleted: written again),
 * then twice what it adds, and a megabyte for the WAL index and slack.
 * Pending samples are counted only when the disk is that close to full. */
static int prune_models(hdqt_store *s, int keep);

static int room_for(hdqt_store *s, int n, int d)
{
	const int64_t row = (int64_t)sizeof(float) * d + 64, want = (int64_t)n * row;
	int rc;
	if (s->o.max_bytes > 0) {
		int64_t used = 0;
		if ((rc = used_bytes(s, &used)) < 0)
			return rc;
		const int64_t keep = s->o.round_bytes > s->o.max_bytes / 8 ? s->o.round_bytes
									 : s->o.max_bytes / 8;
		int64_t pending = -1;
		if (used + want > s->o.max_bytes - keep) {
			/* With nothing pending no round can run, and only a round
			 * prunes: model versions filling the cap would refuse
			 * samples for good.  The others go instead (the current one
			 * stays, and the newest rejected), in this transaction. */
			if ((rc = count_pending(s, -1, &pending)) < 0)
				return rc;
			if (pending == 0 && ((rc = prune_models(s, 1)) < 0 || (rc = used_bytes(s, &used)) < 0))
				return rc;
		}
		if (used + want > s->o.max_bytes - keep)
			return seterr(s, HDQT_EFULL, "the database holds %lld of store.max_bytes = %lld "
				      "bytes; %lld are kept free for a training round (%s)", (long long)used,
				      (long long)s->o.max_bytes, (long long)keep,
				      pending == 0 ? "raise the cap" : "train, or raise the cap");
	}
	const char *path = sqlite3_db_filename(s->db, "main");
	struct statvfs v;
	if (!path || !*path || statvfs(path, &v) != 0)
		return 0; /* no file (in memory) or no answer: SQLite's own errors remain */
	/* In WAL mode the rows go to the WAL first (want), and into the file at
	 * a checkpoint with whatever the WAL holds already (at most its size):
	 * the file grows by what its free pages (the rows rounds deleted)
	 * cannot take. */
	int64_t freel = 0, page = 0;
	if ((rc = single_int(s, "PRAGMA freelist_count", &freel)) < 0 ||
	    (rc = single_int(s, "PRAGMA page_size", &page)) < 0)
		return rc;
	char wal[4200];
	struct stat ws;
	snprintf(wal, sizeof(wal), "%s-wal", path);
	const int64_t in_wal = stat(wal, &ws) == 0 ? (int64_t)ws.st_size : 0;
	const int64_t avail = (int64_t)v.f_bavail * (int64_t)v.f_frsize;
	const int64_t later = in_wal + want - freel * page;
	const int64_t grow = want + (later > 0 ? later : 0);
	const int64_t fixed = grow + 2 * s->o.round_bytes + ((int64_t)1 << 20);
	int64_t rows = s->o.round_rows > 0 ? s->o.round_rows : (int64_t)1 << 20;
	if (avail >= fixed + rows * row * 5 / 4)
		return 0;
	int64_t pending = 0;
	if ((rc = count_pending(s, -1, &pending)) < 0)
		return rc;
	if (pending + n < rows)
		rows = pending + n;
	if (avail >= fixed + rows * row * 5 / 4)
		return 0;
	return seterr(s, HDQT_EFULL, "the disk holding the database has %lld bytes free and these "
		      "samples would take %lld of them (in the WAL and at its checkpoint), keeping "
		      "%lld for the next training round to commit (free disk space, or train)",
		      (long long)avail, (long long)grow, (long long)(fixed - grow + rows * row * 5 / 4));
}

int hdqt_store_samples_add(hdqt_store *s, const int64_t *class_ids, const float *X, int n, int d)
{
	return hdqt_store_samples_add_batch(s, class_ids, X, n, d, NULL, NULL);
}

int hdqt_store_samples_add_batch(hdqt_store *s, const int64_t *class_ids, const float *X, int n,
				 int d, const char *batch_id, int64_t *dup)
{
	if (!s || !class_ids || !X || n < 1 || d < 1 || d > HDQT_MAX_DIM)
		return HDQT_EINVAL;
	if (dup)
		*dup = 0;
	if (batch_id) {
		size_t bl = strlen(batch_id);
		if (bl < 1 || bl > HDQT_BATCH_ID_MAX)
			return seterr(s, HDQT_EINVAL, "batch id must be 1 to %d bytes", HDQT_BATCH_ID_MAX);
		for (size_t i = 0; i < bl; i++)
			if (batch_id[i] < 0x21 || batch_id[i] > 0x7e)
				return seterr(s, HDQT_EINVAL, "batch id must be printable ASCII without spaces");
	}
	for (size_t i = 0; i < (size_t)n * d; i++)
		if (!isfinite(X[i]))
			return seterr(s, HDQT_ERANGE, "sample %zu has a NaN or infinite feature", i / d);
	int rc = begin(s);
	if (rc < 0)
		return rc;
	if (batch_id) {
		sqlite3_stmt *q;
		if ((rc = sqlite3_prepare_v2(s->db, "SELECT n FROM batches WHERE id = ?", -1, &q, NULL)) !=
		    SQLITE_OK) {
			rc = sqlerr(s, rc, "batch lookup");
			goto fail;
		}
		sqlite3_bind_text(q, 1, batch_id, -1, SQLITE_STATIC);
		int r = sqlite3_step(q);
		int64_t had = r == SQLITE_ROW ? sqlite3_column_int64(q, 0) : -1;
		sqlite3_finalize(q);
		if (r != SQLITE_ROW && r != SQLITE_DONE) {
			rc = sqlerr(s, r, "batch lookup");
			goto fail;
		}
		if (had >= 0) { /* a resend of a stored batch: acknowledge, add nothing */
			rollback(s);
			if (dup)
				*dup = had > 0 ? had : 1;
			return 0;
		}
	}
	if ((rc = room_for(s, n, d)) < 0)
		goto fail;
	/* Check classes and per-class caps inside the transaction. */
	for (int i = 0; i < n; i++) {
		int seen = 0;
		for (int j = 0; j < i && !seen; j++)
			seen = class_ids[j] == class_ids[i];
		if (seen)
			continue;
		sqlite3_stmt *p = stmt(s, ST_CLASS_EXISTS);
		if (!p) {
			rc = sqlerr(s, sqlite3_errcode(s->db), "prepare");
			goto fail;
		}
		sqlite3_bind_int64(p, 1, class_ids[i]);
		int r = sqlite3_step(p);
		/* A class removed after the caller checked it (a class.remove
		 * ahead in the writer's queue) takes no samples. */
		const int active = r == SQLITE_ROW && sqlite3_column_int(p, 0);
		sqlite3_reset(p);
		if (r != SQLITE_ROW) {
			rc = r == SQLITE_DONE ? seterr(s, HDQT_ENOTFOUND, "unknown class id %lld",
						       (long long)class_ids[i])
					      : sqlerr(s, r, "class lookup");
			goto fail;
		}
		if (!active) {
			rc = seterr(s, HDQT_ENOTFOUND, "class id %lld was removed", (long long)class_ids[i]);
			goto fail;
		}
		if (s->o.max_pending_per_class > 0) {
			int64_t have = 0, add = 0;
			if ((rc = count_pending(s, class_ids[i], &have)) < 0)
				goto fail;
			for (int j = i; j < n; j++)
				add += class_ids[j] == class_ids[i];
			if (have + add > s->o.max_pending_per_class) {
				rc = seterr(s, HDQT_EFULL, "class id %lld would hold %lld pending samples (limit %d)",
					    (long long)class_ids[i], (long long)(have + add),
					    s->o.max_pending_per_class);
				goto fail;
			}
		}
	}
	if ((rc = insert_samples(s, class_ids, X, n, d)) < 0)
		goto fail;
	if (batch_id) {
		sqlite3_stmt *q;
		if ((rc = sqlite3_prepare_v2(s->db, "INSERT INTO batches(id, n, created) VALUES(?, ?, ?)",
					     -1, &q, NULL)) != SQLITE_OK) {
			rc = sqlerr(s, rc, "batch insert");
			goto fail;
		}
		sqlite3_bind_text(q, 1, batch_id, -1, SQLITE_STATIC);
		sqlite3_bind_int(q, 2, n);
		sqlite3_bind_int64(q, 3, now_s());
		int r = sqlite3_step(q);
		sqlite3_finalize(q);
		if (r != SQLITE_DONE) {
			rc = sqlerr(s, r, "batch insert");
			goto fail;
		}
		/* Remember the newest 100000 batch ids (a resend comes within
		 * minutes, not after 100000 further batches). */
		char sql[128];
		snprintf(sql, sizeof(sql), "DELETE FROM batches WHERE seq <= %lld",
			 (long long)sqlite3_last_insert_rowid(s->db) - 100000);
		if ((rc = exec(s, sql, "batch prune")) < 0)
			goto fail;
	}
	if ((rc = commit(s)) < 0)
		goto fail;
	return 0;
fail:
	rollback(s);
	return rc;
}

int hdqt_store_pending_by_class(hdqt_store *s, int64_t **class_ids, int64_t **counts, int *n)
{
	if (!s || !class_ids || !counts || !n)
		return HDQT_EINVAL;
	sqlite3_stmt *p;
	int rc = sqlite3_prepare_v2(s->db, "SELECT class_id, COUNT(*) FROM samples WHERE learned = 0 "
				    "GROUP BY class_id", -1, &p, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, "pending counts");
	int64_t *ids = NULL, *cnt = NULL;
	int k = 0, cap = 0;
	while ((rc = sqlite3_step(p)) == SQLITE_ROW) {
		int c2 = cap;
		void *q = grow_rows(ids, k, &cap, sizeof(*ids), 16);
		void *q2 = q ? grow_rows(cnt, k, &c2, sizeof(*cnt), 16) : NULL;
		if (q)
			ids = q;
		if (q2)
			cnt = q2;
		if (!q || !q2) {
			rc = SQLITE_NOMEM;
			break;
		}
		ids[k] = sqlite3_column_int64(p, 0);
		cnt[k++] = sqlite3_column_int64(p, 1);
	}
	sqlite3_finalize(p);
	if (rc != SQLITE_DONE) {
		free(ids);
		free(cnt);
		return sqlerr(s, rc, "pending counts");
	}
	*class_ids = ids;
	*counts = cnt;
	*n = k;
	return 0;
}

/* ---- quarantine ---- */

int hdqt_store_quarantine(hdqt_store *s, const int64_t *ids, int n)
{
	if (!s || n < 0 || (n > 0 && !ids))
		return HDQT_EINVAL;
	int rc = begin(s);
	if (rc < 0)
		return rc;
	sqlite3_stmt *p;
	if ((rc = sqlite3_prepare_v2(s->db, "UPDATE samples SET learned = 2 WHERE id = ? AND learned = 0",
				     -1, &p, NULL)) != SQLITE_OK) {
		rc = sqlerr(s, rc, "quarantine");
		goto fail;
	}
	for (int i = 0; i < n; i++) {
		sqlite3_reset(p);
		sqlite3_bind_int64(p, 1, ids[i]);
		int r = sqlite3_step(p);
		if (r != SQLITE_DONE) {
			sqlite3_finalize(p);
			rc = sqlerr(s, r, "quarantine");
			goto fail;
		}
	}
	sqlite3_finalize(p);
	if ((rc = commit(s)) < 0)
		goto fail;
	return 0;
fail:
	rollback(s);
	return rc;
}

int hdqt_store_quarantine_count(hdqt_store *s, int64_t *count)
{
	if (!s || !count)
		return HDQT_EINVAL;
	return single_int(s, "SELECT COUNT(*) FROM samples WHERE learned = 2", count);
}

int hdqt_store_quarantine_list(hdqt_store *s, int max, hdqt_store_qsample **out, int *n)
{
	if (!s || max < 0 || !out || !n)
		return HDQT_EINVAL;
	sqlite3_stmt *p;
	int rc = sqlite3_prepare_v2(s->db, "SELECT id, class_id, created FROM samples WHERE learned = 2 "
				    "ORDER BY id LIMIT ?", -1, &p, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, "quarantine list");
	sqlite3_bind_int(p, 1, max);
	hdqt_store_qsample *v = NULL;
	int cnt = 0, cap = 0;
	while ((rc = sqlite3_step(p)) == SQLITE_ROW) {
		void *q = grow_rows(v, cnt, &cap, sizeof(*v), 16);
		if (!q) {
			rc = SQLITE_NOMEM;
			break;
		}
		v = q;
		v[cnt].id = sqlite3_column_int64(p, 0);
		v[cnt].class_id = sqlite3_column_int64(p, 1);
		v[cnt++].created = sqlite3_column_int64(p, 2);
	}
	sqlite3_finalize(p);
	if (rc != SQLITE_DONE) {
		free(v);
		return sqlerr(s, rc, "quarantine list");
	}
	*out = v;
	*n = cnt;
	return 0;
}

int hdqt_store_quarantine_resolve(hdqt_store *s, const int64_t *ids, int n, int release,
				  int64_t *done)
{
	if (!s || n < 0 || !done)
		return HDQT_EINVAL;
	*done = 0;
	int rc = begin(s);
	if (rc < 0)
		return rc;
	const char *sql = release ? (ids ? "UPDATE samples SET learned = 0 WHERE id = ? AND learned = 2"
					 : "UPDATE samples SET learned = 0 WHERE learned = 2")
				  : (ids ? "DELETE FROM samples WHERE id = ? AND learned = 2"
					 : "DELETE FROM samples WHERE learned = 2");
	sqlite3_stmt *p;
	if ((rc = sqlite3_prepare_v2(s->db, sql, -1, &p, NULL)) != SQLITE_OK) {
		rc = sqlerr(s, rc, "quarantine");
		goto fail;
	}
	int64_t total = 0;
	for (int i = 0; i < (ids ? n : 1); i++) {
		sqlite3_reset(p);
		if (ids)
			sqlite3_bind_int64(p, 1, ids[i]);
		int r = sqlite3_step(p);
		if (r != SQLITE_DONE) {
			sqlite3_finalize(p);
			rc = sqlerr(s, r, "quarantine");
			goto fail;
		}
		total += sqlite3_changes(s->db);
	}
	sqlite3_finalize(p);
	if ((rc = commit(s)) < 0)
		goto fail;
	*done = total;
	return 0;
fail:
	rollback(s);
	return rc;
}

/* Read rows (id?, class_id, dim, blob) of dimension d from a prepared query. */
static int read_rows(hdqt_store *s, sqlite3_stmt *p, int with_id, int d, float **X, int64_t **ids,
		     int64_t **class_ids, int *n)
{
	int cap = 0, cnt = 0, rc;
	float *x = NULL;
	int64_t *id = NULL, *cl = NULL;
	while ((rc = sqlite3_step(p)) == SQLITE_ROW) {
		int c = with_id ? 1 : 0;
		if (sqlite3_column_int(p, c + 1) != d ||
		    sqlite3_column_bytes(p, c + 2) != (int)(sizeof(float) * d)) {
			rc = -1;
			break; /* a row of another feature layout */
		}
		if (cnt == cap) {
			cap = cap ? cap * 2 : 256;
			float *nx = realloc(x, sizeof(float) * (size_t)cap * d);
			int64_t *ni = realloc(id, sizeof(int64_t) * cap);
			if (nx)
				x = nx;
			if (ni)
				id = ni;
			int64_t *nc = realloc(cl, sizeof(int64_t) * cap);
			if (nc)
				cl = nc;
			if (!nx || !ni || !nc) {
				rc = SQLITE_NOMEM;
				break;
			}
		}
		id[cnt] = with_id ? sqlite3_column_int64(p, 0) : cnt;
		cl[cnt] = sqlite3_column_int64(p, c);
		memcpy(x + (size_t)cnt * d, sqlite3_column_blob(p, c + 2), sizeof(float) * d);
		cnt++;
	}
	if (rc != SQLITE_DONE) {
		free(x);
		free(id);
		free(cl);
		return rc == -1 ? seterr(s, HDQT_EFORMAT, "stored feature vector is not %d floats", d)
				: sqlerr(s, rc, "read");
	}
	/* Give back the doubling's slack (a round of 20,000 rows held 32,768). */
	if (cnt > 0 && cnt < cap) {
		float *fit = realloc(x, sizeof(float) * (size_t)cnt * d);
		if (fit)
			x = fit;
	}
	*X = x;
	*n = cnt;
	if (ids)
		*ids = id;
	else
		free(id);
	*class_ids = cl;
	return 0;
}

int hdqt_store_samples_pending(hdqt_store *s, int d, int max, float **X, int64_t **ids,
			       int64_t **class_ids, int *n)
{
	if (!s || d < 1 || max < 0 || !X || !ids || !class_ids || !n)
		return HDQT_EINVAL;
	sqlite3_stmt *p = stmt(s, ST_PENDING);
	if (!p)
		return sqlerr(s, sqlite3_errcode(s->db), "prepare");
	sqlite3_bind_int(p, 1, max);
	int rc = read_rows(s, p, 1, d, X, ids, class_ids, n);
	sqlite3_reset(p);
	return rc;
}

/* Inside a transaction: delete samples, copying them to validation first
 * when to_validation. */
static int learned_tx(hdqt_store *s, const int64_t *ids, int n, int to_validation)
{
	int rc = 0;
	for (int i = 0; i < n; i++) {
		if (to_validation) {
			sqlite3_stmt *g = stmt(s, ST_SAMPLE_GET);
			if (!g) {
				rc = sqlerr(s, sqlite3_errcode(s->db), "prepare");
				goto fail;
			}
			sqlite3_bind_int64(g, 1, ids[i]);
			int r = sqlite3_step(g);
			if (r == SQLITE_ROW) {
				/* Copy to validation (bind the blob before resetting g). */
				sqlite3_stmt *v = stmt(s, ST_VALID_ADD);
				if (!v) {
					sqlite3_reset(g);
					rc = sqlerr(s, sqlite3_errcode(s->db), "prepare");
					goto fail;
				}
				sqlite3_bind_int64(v, 1, sqlite3_column_int64(g, 0));
				sqlite3_bind_int64(v, 2, sqlite3_column_int64(g, 1));
				sqlite3_bind_int(v, 3, sqlite3_column_int(g, 2));
				sqlite3_bind_blob(v, 4, sqlite3_column_blob(g, 3), sqlite3_column_bytes(g, 3),
						  SQLITE_TRANSIENT);
				sqlite3_reset(g);
				r = sqlite3_step(v);
				sqlite3_reset(v);
				if (r != SQLITE_DONE) {
					rc = sqlerr(s, r, "validation insert");
					goto fail;
				}
			} else {
				sqlite3_reset(g);
				if (r != SQLITE_DONE) {
					rc = sqlerr(s, r, "sample read");
					goto fail;
				}
			}
		}
		sqlite3_stmt *p = stmt(s, ST_SAMPLE_DEL);
		if (!p) {
			rc = sqlerr(s, sqlite3_errcode(s->db), "prepare");
			goto fail;
		}
		sqlite3_bind_int64(p, 1, ids[i]);
		int r = sqlite3_step(p);
		sqlite3_reset(p);
		if (r != SQLITE_DONE) {
			rc = sqlerr(s, r, "sample delete");
			goto fail;
		}
	}
fail:
	return rc;
}

int hdqt_store_samples_learned(hdqt_store *s, const int64_t *ids, int n)
{
	if (!s || (!ids && n > 0) || n < 0)
		return HDQT_EINVAL;
	int rc = begin(s);
	if (rc < 0)
		return rc;
	if ((rc = learned_tx(s, ids, n, s->o.keep_learned)) < 0 || (rc = commit(s)) < 0) {
		rollback(s);
		return rc;
	}
	return 0;
}

/* ---- exemplars and validation ---- */

static int exemplars_tx(hdqt_store *s, int64_t version, const int64_t *class_ids, const float *X,
			int n, int d);

/* The current model's version, 0 when there is none (exemplars written
 * before the first model, as unit tests do, belong to version 0). */
static int current_version(hdqt_store *s, int64_t *v)
{
	int rc = single_int(s, "SELECT version FROM models WHERE current = 1", v);
	if (rc == HDQT_ENOTFOUND) {
		*v = 0;
		return 0;
	}
	return rc;
}

#define CUR_VERSION "COALESCE((SELECT version FROM models WHERE current = 1), 0)"

int hdqt_store_exemplars_replace(hdqt_store *s, const int64_t *class_ids, const float *X, int n,
				 int d)
{
	if (!s || n < 0 || (n > 0 && (!class_ids || !X)) || d < 1 || d > HDQT_MAX_DIM)
		return HDQT_EINVAL;
	for (size_t i = 0; i < (size_t)n * d; i++)
		if (!isfinite(X[i]))
			return seterr(s, HDQT_ERANGE, "exemplar %zu has a NaN or infinite feature", i / d);
	int rc = begin(s);
	if (rc < 0)
		return rc;
	int64_t v = 0;
	if ((rc = current_version(s, &v)) < 0 || (rc = exemplars_tx(s, v, class_ids, X, n, d)) < 0 ||
	    (rc = commit(s)) < 0) {
		rollback(s);
		return rc;
	}
	return 0;
}

static int exemplars_tx(hdqt_store *s, int64_t version, const int64_t *class_ids, const float *X,
			int n, int d)
{
	int rc;
	char sql[96];
	snprintf(sql, sizeof(sql), "DELETE FROM exemplars WHERE model_version = %lld", (long long)version);
	if ((rc = exec(s, sql, "exemplars clear")) < 0)
		goto fail;
	for (int i = 0; i < n; i++) {
		int rank = 0;
		for (int j = 0; j < i; j++)
			rank += class_ids[j] == class_ids[i];
		sqlite3_stmt *p = stmt(s, ST_EXEMPLAR_ADD);
		if (!p) {
			rc = sqlerr(s, sqlite3_errcode(s->db), "prepare");
			goto fail;
		}
		sqlite3_bind_int64(p, 1, class_ids[i]);
		sqlite3_bind_int(p, 2, rank);
		sqlite3_bind_int(p, 3, d);
		sqlite3_bind_blob(p, 4, X + (size_t)i * d, (int)(sizeof(float) * d), SQLITE_STATIC);
		sqlite3_bind_int64(p, 5, version);
		int r = sqlite3_step(p);
		sqlite3_reset(p);
		if (r != SQLITE_DONE) {
			rc = sqlerr(s, r, "exemplar insert");
			goto fail;
		}
	}
fail:
	return rc;
}

static int load_table(hdqt_store *s, const char *sql, int d, float **X, int64_t **class_ids, int *n)
{
	if (!s || d < 1 || !X || !class_ids || !n)
		return HDQT_EINVAL;
	sqlite3_stmt *p;
	int rc = sqlite3_prepare_v2(s->db, sql, -1, &p, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, "prepare");
	rc = read_rows(s, p, 0, d, X, NULL, class_ids, n);
	sqlite3_finalize(p);
	return rc;
}

int hdqt_store_exemplars_load(hdqt_store *s, int d, float **X, int64_t **class_ids, int *n)
{
	return load_table(s, "SELECT class_id, dim, features FROM exemplars WHERE model_version = "
			  CUR_VERSION " ORDER BY class_id, rank", d, X, class_ids, n);
}

int hdqt_store_validation_load(hdqt_store *s, int d, float **X, int64_t **class_ids, int *n)
{
	return load_table(s, "SELECT class_id, dim, features FROM validation ORDER BY id", d, X, class_ids, n);
}

int hdqt_store_counts(hdqt_store *s, int64_t *exemplars, int64_t *validation)
{
	if (!s || !exemplars || !validation)
		return HDQT_EINVAL;
	int rc = single_int(s, "SELECT COUNT(*) FROM exemplars WHERE model_version = " CUR_VERSION,
			    exemplars);
	return rc < 0 ? rc : single_int(s, "SELECT COUNT(*) FROM validation", validation);
}

int hdqt_store_learned_classes(hdqt_store *s, int64_t **ids, int *n)
{
	if (!s || !ids || !n)
		return HDQT_EINVAL;
	sqlite3_stmt *p;
	/* A class missing from the current version's memory was not learned
	 * by it (e.g. learned after the version a rollback went back to). */
	int rc = sqlite3_prepare_v2(s->db, "SELECT DISTINCT class_id FROM exemplars WHERE model_version = "
				    CUR_VERSION " UNION SELECT class_id FROM validation WHERE NOT EXISTS "
				    "(SELECT 1 FROM exemplars WHERE model_version = " CUR_VERSION ")",
				    -1, &p, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, "learned classes");
	int64_t *v = NULL;
	int cnt = 0, cap = 0;
	while ((rc = sqlite3_step(p)) == SQLITE_ROW) {
		void *q = grow_rows(v, cnt, &cap, sizeof(*v), 16);
		if (!q) {
			rc = SQLITE_NOMEM;
			break;
		}
		v = q;
		v[cnt++] = sqlite3_column_int64(p, 0);
	}
	sqlite3_finalize(p);
	if (rc != SQLITE_DONE) {
		free(v);
		return sqlerr(s, rc, "learned classes");
	}
	*ids = v;
	*n = cnt;
	return 0;
}

/* ---- models ---- */

static int novelty_tx(hdqt_store *s, int64_t version, const uint8_t *blob, size_t len);

static int model_tx(hdqt_store *s, const uint8_t *blob, size_t len, const char *config_json,
		    const char *metrics_json, int make_current, int64_t *version);

int hdqt_store_model_save(hdqt_store *s, const uint8_t *blob, size_t len, const char *config_json,
			  const char *metrics_json, int make_current, int64_t *version)
{
	if (!s || !blob || len == 0 || len > (size_t)1 << 30)
		return HDQT_EINVAL;
	int rc = begin(s);
	if (rc < 0)
		return rc;
	if ((rc = model_tx(s, blob, len, config_json, metrics_json, make_current, version)) < 0 ||
	    (rc = commit(s)) < 0) {
		rollback(s);
		return rc;
	}
	return 0;
}

/* Keep the current version, the newest keep of the versions that were not
 * rejected, and the newest rejected one (metrics "rejected": true, as
 * hdqtd marks a round's model that lost to the current one; metrics that
 * are not JSON count as not rejected, without an error): a run of
 * rejected rounds had pushed every rollback target out.  Exemplar
 * memories go with their versions. */
#define REJECTED "(CASE WHEN json_valid(metrics) THEN json_extract(metrics, '$.rejected') END)"
static int prune_models(hdqt_store *s, int keep)
{
	char sql[512];
	snprintf(sql, sizeof(sql),
		 "DELETE FROM models WHERE current = 0 AND version NOT IN "
		 "(SELECT version FROM models WHERE " REJECTED " IS NOT 1 "
		 "ORDER BY version DESC LIMIT %d) AND version NOT IN "
		 "(SELECT version FROM models WHERE " REJECTED " IS 1 "
		 "ORDER BY version DESC LIMIT 1)", keep);
	int rc = exec(s, sql, "model prune");
	if (rc == 0)
		rc = exec(s, "DELETE FROM exemplars WHERE model_version <> 0 AND model_version NOT IN "
			  "(SELECT version FROM models)", "exemplar prune");
	return rc;
}

static int model_tx(hdqt_store *s, const uint8_t *blob, size_t len, const char *config_json,
		    const char *metrics_json, int make_current, int64_t *version)
{
	/* Make room first: with a full database the insert must not be what
	 * fails, the versions it would prune are gone anyway (for a version
	 * that serves; one stored only, as a rejected round's, prunes none
	 * that served). */
	int rc = prune_models(s, make_current && s->o.keep_models > 1 ? s->o.keep_models - 1
								      : s->o.keep_models);
	if (rc < 0)
		return rc;
	sqlite3_stmt *p = stmt(s, ST_MODEL_ADD);
	if (!p) {
		rc = sqlerr(s, sqlite3_errcode(s->db), "prepare");
		goto fail;
	}
	sqlite3_bind_int64(p, 1, now_s());
	sqlite3_bind_text(p, 2, config_json ? config_json : "{}", -1, SQLITE_STATIC);
	sqlite3_bind_blob64(p, 3, blob, len, SQLITE_STATIC);
	sqlite3_bind_text(p, 4, metrics_json ? metrics_json : "{}", -1, SQLITE_STATIC);
	int r = sqlite3_step(p);
	sqlite3_reset(p);
	if (r != SQLITE_DONE) {
		rc = sqlerr(s, r, "model insert");
		goto fail;
	}
	int64_t v = sqlite3_last_insert_rowid(s->db);
	if (make_current) {
		char sql[128];
		snprintf(sql, sizeof(sql), "UPDATE models SET current = (version = %lld)", (long long)v);
		if ((rc = exec(s, sql, "model current")) < 0)
			goto fail;
	}
	if ((rc = prune_models(s, s->o.keep_models)) < 0)
		goto fail;
	if (version)
		*version = v;
fail:
	return rc;
}

int hdqt_store_model_current(hdqt_store *s, uint8_t **blob, size_t *len, int64_t *version)
{
	if (!s || !blob || !len)
		return HDQT_EINVAL;
	sqlite3_stmt *p;
	int rc = sqlite3_prepare_v2(s->db, "SELECT version, blob FROM models WHERE current = 1", -1, &p, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, "prepare");
	rc = sqlite3_step(p);
	if (rc != SQLITE_ROW) {
		sqlite3_finalize(p);
		return rc == SQLITE_DONE ? seterr(s, HDQT_ENOTFOUND, "no current model") : sqlerr(s, rc, "model");
	}
	size_t n = (size_t)sqlite3_column_bytes(p, 1);
	uint8_t *b = malloc(n ? n : 1);
	if (!b) {
		sqlite3_finalize(p);
		return HDQT_ENOMEM;
	}
	memcpy(b, sqlite3_column_blob(p, 1), n);
	if (version)
		*version = sqlite3_column_int64(p, 0);
	sqlite3_finalize(p);
	*blob = b;
	*len = n;
	return 0;
}

int hdqt_store_model_list(hdqt_store *s, hdqt_store_model **out, int *n)
{
	if (!s || !out || !n)
		return HDQT_EINVAL;
	sqlite3_stmt *p;
	int rc = sqlite3_prepare_v2(s->db, "SELECT version, created, current, length(blob), metrics, "
				    "config FROM models ORDER BY version", -1, &p, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, "prepare");
	hdqt_store_model *v = NULL;
	int cnt = 0, cap = 0;
	while ((rc = sqlite3_step(p)) == SQLITE_ROW) {
		void *q = grow_rows(v, cnt, &cap, sizeof(*v), 8);
		if (!q) {
			rc = SQLITE_NOMEM;
			break;
		}
		v = q;
		hdqt_store_model *m = &v[cnt++];
		m->version = sqlite3_column_int64(p, 0);
		m->created = sqlite3_column_int64(p, 1);
		m->current = sqlite3_column_int(p, 2);
		m->blob_len = (size_t)sqlite3_column_int64(p, 3);
		snprintf(m->metrics, sizeof(m->metrics), "%s", (const char *)sqlite3_column_text(p, 4));
		const unsigned char *cf = sqlite3_column_text(p, 5);
		/* too long to keep whole: none, rather than a truncated text */
		snprintf(m->config, sizeof(m->config), "%s",
			 cf && strlen((const char *)cf) < sizeof(m->config) ? (const char *)cf : "");
	}
	sqlite3_finalize(p);
	if (rc != SQLITE_DONE) {
		free(v);
		return sqlerr(s, rc, "model list");
	}
	*out = v;
	*n = cnt;
	return 0;
}

int hdqt_store_model_rollback(hdqt_store *s, int64_t version)
{
	if (!s)
		return HDQT_EINVAL;
	int rc = begin(s);
	if (rc < 0)
		return rc;
	int64_t exists = 0;
	char sql[160];
	snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM models WHERE version = %lld", (long long)version);
	if ((rc = single_int(s, sql, &exists)) < 0)
		goto fail;
	if (!exists) {
		rc = seterr(s, HDQT_ENOTFOUND, "no model version %lld", (long long)version);
		goto fail;
	}
	snprintf(sql, sizeof(sql), "UPDATE models SET current = (version = %lld)", (long long)version);
	if ((rc = exec(s, sql, "rollback")) < 0)
		goto fail;
	/* A rejected version brought back serves: it is pruned as one that did. */
	snprintf(sql, sizeof(sql), "UPDATE models SET metrics = json_remove(metrics, '$.rejected') "
		 "WHERE version = %lld AND json_valid(metrics)", (long long)version);
	if ((rc = exec(s, sql, "rollback")) < 0 || (rc = commit(s)) < 0)
		goto fail;
	return 0;
fail:
	rollback(s);
	return rc;
}

/* ---- runs ---- */

int hdqt_store_run_begin(hdqt_store *s, int64_t *id)
{
	if (!s || !id)
		return HDQT_EINVAL;
	sqlite3_stmt *p;
	int rc = sqlite3_prepare_v2(s->db, "INSERT INTO runs(started) VALUES(?)", -1, &p, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, "prepare");
	sqlite3_bind_int64(p, 1, now_s());
	rc = sqlite3_step(p);
	sqlite3_finalize(p);
	if (rc != SQLITE_DONE)
		return sqlerr(s, rc, "run begin");
	*id = sqlite3_last_insert_rowid(s->db);
	return 0;
}

int hdqt_store_run_end(hdqt_store *s, int64_t id, const char *outcome, const char *figures_json)
{
	if (!s || !outcome)
		return HDQT_EINVAL;
	sqlite3_stmt *p;
	int rc = sqlite3_prepare_v2(s->db, "UPDATE runs SET ended = ?, outcome = ?, figures = ? WHERE id = ?",
				    -1, &p, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, "prepare");
	sqlite3_bind_int64(p, 1, now_s());
	sqlite3_bind_text(p, 2, outcome, -1, SQLITE_STATIC);
	sqlite3_bind_text(p, 3, figures_json ? figures_json : "{}", -1, SQLITE_STATIC);
	sqlite3_bind_int64(p, 4, id);
	rc = sqlite3_step(p);
	sqlite3_finalize(p);
	if (rc != SQLITE_DONE)
		return sqlerr(s, rc, "run end");
	return sqlite3_changes(s->db) ? 0 : seterr(s, HDQT_ENOTFOUND, "no run %lld", (long long)id);
}

/* ---- backup ---- */

static int fsync_path(const char *path, int dir)
{
	int fd = open(path, (dir ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	close(fd);
	return rc;
}

int hdqt_store_backup(hdqt_store *s, const char *path)
{
	if (!s || !path || strlen(path) > 4000)
		return HDQT_EINVAL;
	char tmp[4100];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	unlink(tmp);
	sqlite3 *dst = NULL;
	int rc = sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_backup *b = sqlite3_backup_init(dst, "main", s->db, "main");
		if (b) {
			/* All pages in one step, i.e. one read transaction: a
			 * backup done in steps restarts whenever another
			 * connection writes in between, which under a steady
			 * stream of samples could go on for ever.  In WAL mode
			 * the reader blocks no writer meanwhile. */
			int tries = 0;
			do {
				rc = sqlite3_backup_step(b, -1);
				if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
					sqlite3_sleep(10);
			} while ((rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED) &&
				 ++tries < 1000);
			sqlite3_backup_finish(b);
			if (rc == SQLITE_DONE)
				rc = SQLITE_OK;
		} else {
			rc = sqlite3_errcode(dst);
		}
	}
	if (dst && rc == SQLITE_OK)
		rc = sqlite3_exec(dst, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL);
	const int dst_errno = dst ? sqlite3_system_errno(dst) : 0;
	if (dst)
		sqlite3_close(dst);
	if (rc != SQLITE_OK) {
		/* A full disk is a limit (-32005 over the socket), as everywhere
		 * else, not a broken store: SQLITE_FULL, or an I/O error of
		 * ENOSPC / EFBIG (the destination's errno, read before close). */
		const int prim = rc & 0xff;
		const int full = prim == SQLITE_FULL || (prim == SQLITE_IOERR && (dst_errno == ENOSPC || dst_errno == EFBIG));
		unlink(tmp);
		return seterr(s, full ? HDQT_EFULL : HDQT_EIO, "backup to %s failed: %s", path,
			      sqlite3_errstr(rc));
	}
	char dirbuf[4100];
	snprintf(dirbuf, sizeof(dirbuf), "%s", path);
	if (fsync_path(tmp, 0) < 0 || rename(tmp, path) < 0 || fsync_path(dirname(dirbuf), 1) < 0) {
		int e = errno;
		unlink(tmp);
		return seterr(s, e == ENOSPC || e == EFBIG ? HDQT_EFULL : HDQT_EIO, "backup to %s failed: %s",
			      path, strerror(e));
	}
	return 0;
}

/* ---- a model import, atomically ---- */

int hdqt_store_import_commit(hdqt_store *s, const hdqt_store_import *im, int64_t *version)
{
	if (!s || !im || !im->blob || im->blob_len == 0 || im->blob_len > (size_t)1 << 30 ||
	    im->n_new < 0 || im->n_new > HDQT_MAX_CLASSES ||
	    (im->n_new > 0 && (!im->new_names || !im->new_labels || !im->new_active)) ||
	    im->n_exemplars < 0 || im->dim < 1 || im->dim > HDQT_MAX_DIM ||
	    (im->n_exemplars > 0 && (!im->exemplar_label || !im->exemplars)))
		return HDQT_EINVAL;
	for (int i = 0; i < im->n_new; i++)
		if (!valid_name(im->new_names[i]) || im->new_labels[i] < 0 ||
		    im->new_labels[i] >= HDQT_MAX_CLASSES)
			return seterr(s, HDQT_EINVAL, "import: class %d is malformed", i);
	for (size_t i = 0; i < (size_t)im->n_exemplars * im->dim; i++)
		if (!isfinite(im->exemplars[i]))
			return seterr(s, HDQT_ERANGE, "exemplar %zu has a NaN or infinite feature",
				      i / im->dim);
	int64_t *cid = malloc(sizeof(int64_t) * ((size_t)im->n_exemplars + 1));
	if (!cid)
		return HDQT_ENOMEM;
	int rc = begin(s);
	if (rc < 0) {
		free(cid);
		return rc;
	}
	for (int i = 0; i < im->n_new; i++) {
		sqlite3_stmt *p = stmt(s, ST_CLASS_ADD);
		if (!p) {
			rc = sqlerr(s, sqlite3_errcode(s->db), "prepare");
			goto fail;
		}
		sqlite3_bind_text(p, 1, im->new_names[i], -1, SQLITE_STATIC);
		sqlite3_bind_int64(p, 2, im->new_labels[i]);
		sqlite3_bind_int64(p, 3, now_s());
		int r = sqlite3_step(p);
		sqlite3_reset(p);
		if (r != SQLITE_DONE) {
			rc = sqlerr(s, r, "import: class add");
			goto fail;
		}
		if (!im->new_active[i]) {
			char sql[96];
			snprintf(sql, sizeof(sql), "UPDATE classes SET active = 0 WHERE id = %lld",
				 (long long)sqlite3_last_insert_rowid(s->db));
			if ((rc = exec(s, sql, "import: class state")) < 0)
				goto fail;
		}
	}
	/* Labels to class ids, now that every class is in. */
	int64_t last_label = -1, last_id = -1;
	for (int i = 0; i < im->n_exemplars; i++) {
		if (im->exemplar_label[i] != last_label) {
			char sql[96];
			snprintf(sql, sizeof(sql), "SELECT id FROM classes WHERE label = %d",
				 im->exemplar_label[i]);
			if ((rc = single_int(s, sql, &last_id)) < 0) {
				if (rc == HDQT_ENOTFOUND)
					seterr(s, rc, "import: no class has label %d", im->exemplar_label[i]);
				goto fail;
			}
			last_label = im->exemplar_label[i];
		}
		cid[i] = last_id;
	}
	int64_t v = 0;
	if ((rc = model_tx(s, im->blob, im->blob_len, im->config_json, im->metrics_json, 1, &v)) < 0 ||
	    (rc = exemplars_tx(s, v, cid, im->exemplars, im->n_exemplars, im->dim)) < 0 ||
	    (im->novelty && (rc = novelty_tx(s, v, im->novelty, im->novelty_len)) < 0) ||
	    (rc = commit(s)) < 0)
		goto fail;
	free(cid);
	if (version)
		*version = v;
	return 0;
fail:
	rollback(s);
	free(cid);
	return rc;
}

/* ---- open-set: calibration per version, unknown windows ---- */

static int novelty_tx(hdqt_store *s, int64_t version, const uint8_t *blob, size_t len)
{
	sqlite3_stmt *p;
	int rc = sqlite3_prepare_v2(s->db, "UPDATE models SET novelty = ? WHERE version = ?", -1, &p, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, "novelty");
	sqlite3_bind_blob64(p, 1, blob, len, SQLITE_STATIC);
	sqlite3_bind_int64(p, 2, version);
	rc = sqlite3_step(p);
	sqlite3_finalize(p);
	return rc == SQLITE_DONE ? 0 : sqlerr(s, rc, "novelty");
}

int hdqt_store_model_novelty(hdqt_store *s, int64_t version, uint8_t **blob, size_t *len)
{
	if (!s || !blob || !len)
		return HDQT_EINVAL;
	sqlite3_stmt *p;
	int rc = sqlite3_prepare_v2(s->db, "SELECT novelty FROM models WHERE version = ?", -1, &p, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, "prepare");
	sqlite3_bind_int64(p, 1, version);
	rc = sqlite3_step(p);
	if (rc != SQLITE_ROW || sqlite3_column_type(p, 0) != SQLITE_BLOB) {
		sqlite3_finalize(p);
		return rc == SQLITE_ROW || rc == SQLITE_DONE
			       ? seterr(s, HDQT_ENOTFOUND, "model %lld has no open-set calibration", (long long)version)
			       : sqlerr(s, rc, "novelty");
	}
	size_t n = (size_t)sqlite3_column_bytes(p, 0);
	uint8_t *b = malloc(n ? n : 1);
	if (!b) {
		sqlite3_finalize(p);
		return HDQT_ENOMEM;
	}
	memcpy(b, sqlite3_column_blob(p, 0), n);
	sqlite3_finalize(p);
	*blob = b;
	*len = n;
	return 0;
}

/* Inside a transaction: keep the newest keep windows (the rowid index
 * finds the cut; no scan of the rest). */
static int unknowns_trim(hdqt_store *s, int keep, int *removed)
{
	char sql[192];
	snprintf(sql, sizeof(sql), "DELETE FROM unknowns WHERE id <= (SELECT id FROM unknowns "
		 "ORDER BY id DESC LIMIT 1 OFFSET %d)", keep);
	int rc = exec(s, sql, "unknowns trim");
	*removed = rc == 0 ? sqlite3_changes(s->db) : 0;
	return rc;
}

int hdqt_store_unknowns_add(hdqt_store *s, const float *X, const int *labels, const float *scores,
			    const int64_t *groups, int n, int d, int64_t model_version, int keep,
			    int *removed)
{
	if (!s || n < 0 || (n > 0 && (!X || !labels || !scores || !groups)) || d < 1 ||
	    d > HDQT_MAX_DIM || keep < 0 || keep > HDQT_STORE_UNKNOWNS_MAX || !removed)
		return HDQT_EINVAL;
	*removed = 0;
	for (size_t i = 0; i < (size_t)n * d; i++)
		if (!isfinite(X[i]))
			return seterr(s, HDQT_ERANGE, "unknown window %zu has a NaN or infinite feature", i / d);
	int rc = begin(s);
	if (rc < 0)
		return rc;
	sqlite3_stmt *p = NULL;
	if ((rc = room_for(s, n, d)) < 0) /* as samples: a round must still commit */
		goto fail;
	rc = sqlite3_prepare_v2(s->db, "INSERT INTO unknowns(created, model_version, grp, label, score, "
				"dim, features) VALUES(?, ?, ?, ?, ?, ?, ?)", -1, &p, NULL);
	if (rc != SQLITE_OK) {
		rc = sqlerr(s, rc, "unknowns");
		goto fail;
	}
	rc = 0;
	const int64_t t = now_s();
	/* Only the newest keep are kept: older rows of the batch would go at once. */
	for (int i = n > keep ? n - keep : 0; i < n; i++) {
		sqlite3_bind_int64(p, 1, t);
		sqlite3_bind_int64(p, 2, model_version);
		sqlite3_bind_int64(p, 3, groups[i]);
		sqlite3_bind_int(p, 4, labels[i]);
		sqlite3_bind_double(p, 5, isfinite(scores[i]) ? scores[i] : 0.0);
		sqlite3_bind_int(p, 6, d);
		sqlite3_bind_blob(p, 7, X + (size_t)i * d, (int)(sizeof(float) * d), SQLITE_STATIC);
		int r = sqlite3_step(p);
		sqlite3_reset(p);
		if (r != SQLITE_DONE) {
			rc = sqlerr(s, r, "unknowns insert");
			goto fail;
		}
	}
	sqlite3_finalize(p);
	p = NULL;
	if ((rc = unknowns_trim(s, keep, removed)) < 0 || (rc = commit(s)) < 0)
		goto fail;
	*removed += n > keep ? n - keep : 0;
	return 0;
fail:
	sqlite3_finalize(p);
	rollback(s);
	*removed = 0;
	return rc;
}

int hdqt_store_unknowns_count(hdqt_store *s, int64_t *n, int64_t *max_group)
{
	if (!s || !n || !max_group)
		return HDQT_EINVAL;
	int rc = single_int(s, "SELECT COUNT(*) FROM unknowns", n);
	return rc < 0 ? rc : single_int(s, "SELECT COALESCE(MAX(grp), 0) FROM unknowns", max_group);
}

int hdqt_store_unknowns_list(hdqt_store *s, int d, int max, int64_t model_version,
			     hdqt_store_unknown **meta, float **X, int *n)
{
	if (!s || d < 1 || d > HDQT_MAX_DIM || max < 0 || !meta || !X || !n)
		return HDQT_EINVAL;
	sqlite3_stmt *p;
	int rc = sqlite3_prepare_v2(s->db, "SELECT id, created, model_version, grp, label, score, dim, "
				    "features FROM (SELECT * FROM unknowns WHERE model_version = ? "
				    "ORDER BY id DESC LIMIT ?) ORDER BY id", -1, &p, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, "unknowns");
	sqlite3_bind_int64(p, 1, model_version);
	sqlite3_bind_int(p, 2, max);
	hdqt_store_unknown *v = NULL;
	float *x = NULL;
	int cnt = 0, cap = 0;
	while ((rc = sqlite3_step(p)) == SQLITE_ROW) {
		if (sqlite3_column_int(p, 6) != d || sqlite3_column_bytes(p, 7) != (int)(sizeof(float) * d))
			continue; /* a row of another feature layout: not ours to show */
		if (cnt == cap) {
			int nc = cap ? cap * 2 : 64;
			hdqt_store_unknown *nv = realloc(v, sizeof(*v) * (size_t)nc);
			if (nv)
				v = nv;
			float *nx = realloc(x, sizeof(float) * (size_t)nc * d);
			if (nx)
				x = nx;
			if (!nv || !nx) {
				rc = SQLITE_NOMEM;
				break;
			}
			cap = nc;
		}
		v[cnt] = (hdqt_store_unknown){.id = sqlite3_column_int64(p, 0),
					      .created = sqlite3_column_int64(p, 1),
					      .model_version = sqlite3_column_int64(p, 2),
					      .group = sqlite3_column_int64(p, 3),
					      .label = sqlite3_column_int(p, 4),
					      .score = (float)sqlite3_column_double(p, 5)};
		memcpy(x + (size_t)cnt * d, sqlite3_column_blob(p, 7), sizeof(float) * d);
		cnt++;
	}
	sqlite3_finalize(p);
	if (rc != SQLITE_DONE) {
		free(v);
		free(x);
		return sqlerr(s, rc, "unknowns");
	}
	*meta = v;
	*X = x;
	*n = cnt;
	return 0;
}

int hdqt_store_unknowns_groups(hdqt_store *s, hdqt_store_ugroup **out, int *n)
{
	if (!s || !out || !n)
		return HDQT_EINVAL;
	sqlite3_stmt *p;
	int rc = sqlite3_prepare_v2(s->db, "SELECT grp, id, created, label, score FROM unknowns "
				    "ORDER BY grp, id", -1, &p, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, "unknowns");
	hdqt_store_ugroup *v = NULL;
	int cnt = 0, cap = 0;
	/* The closest class of a group is its most frequent label: counts by
	 * label, reset through the list of labels the group touched. */
	int *votes = calloc(HDQT_MAX_CLASSES, sizeof(int)), *touched = malloc(sizeof(int) * HDQT_MAX_CLASSES);
	int nt = 0;
	if (!votes || !touched)
		rc = SQLITE_NOMEM;
	while (votes && touched && (rc = sqlite3_step(p)) == SQLITE_ROW) {
		const int64_t g = sqlite3_column_int64(p, 0);
		if (cnt == 0 || v[cnt - 1].group != g) {
			void *q = grow_rows(v, cnt, &cap, sizeof(*v), 16);
			if (!q) {
				rc = SQLITE_NOMEM;
				break;
			}
			v = q;
			for (int k = 0; k < nt; k++)
				votes[touched[k]] = 0;
			nt = 0;
			memset(&v[cnt], 0, sizeof(v[cnt]));
			v[cnt].group = g;
			v[cnt].label = -1;
			v[cnt].first = sqlite3_column_int64(p, 2);
			cnt++;
		}
		hdqt_store_ugroup *u = &v[cnt - 1];
		if (u->size < HDQT_STORE_GROUP_IDS)
			u->ids[u->size] = sqlite3_column_int64(p, 1);
		u->size++;
		const int64_t t = sqlite3_column_int64(p, 2);
		u->first = t < u->first ? t : u->first;
		u->last = t > u->last ? t : u->last;
		u->score_sum += sqlite3_column_double(p, 4);
		const int l = sqlite3_column_int(p, 3);
		if (l >= 0 && l < HDQT_MAX_CLASSES) {
			if (votes[l]++ == 0)
				touched[nt++] = l;
			if (u->label < 0 || votes[l] > votes[u->label])
				u->label = l;
		}
	}
	sqlite3_finalize(p);
	free(votes);
	free(touched);
	if (rc != SQLITE_DONE) {
		free(v);
		return sqlerr(s, rc, "unknowns");
	}
	*out = v;
	*n = cnt;
	return 0;
}

/* Inside a transaction: the WHERE clause and binding of a selection (a
 * group, one id, or everything). */
static int unknowns_where(hdqt_store *s, const char *head, int64_t group, int by_id, int d,
			  sqlite3_stmt **out)
{
	char sql[256];
	snprintf(sql, sizeof(sql), "%s%s", head,
		 group > 0 ? " WHERE grp = ?1 AND dim = ?2" : by_id ? " WHERE id = ?1 AND dim = ?2" : "");
	int rc = sqlite3_prepare_v2(s->db, sql, -1, out, NULL);
	if (rc != SQLITE_OK)
		return sqlerr(s, rc, "unknowns");
	if (group > 0 || by_id)
		sqlite3_bind_int(*out, 2, d);
	if (group > 0)
		sqlite3_bind_int64(*out, 1, group);
	return 0;
}

/* Run `head` (DELETE, or INSERT ... SELECT) over the selection, adding
 * the rows changed to *changed. */
static int unknowns_apply(hdqt_store *s, const char *head, int64_t group, const int64_t *ids, int n,
			  int d, int64_t *changed)
{
	sqlite3_stmt *p;
	int rc = unknowns_where(s, head, group, ids != NULL, d, &p);
	if (rc < 0)
		return rc;
	for (int i = 0; i < (ids ? n : 1); i++) {
		if (ids)
			sqlite3_bind_int64(p, 1, ids[i]);
		int r = sqlite3_step(p);
		sqlite3_reset(p);
		if (r != SQLITE_DONE) {
			sqlite3_finalize(p);
			return sqlerr(s, r, "unknowns");
		}
		*changed += sqlite3_changes(s->db);
	}
	sqlite3_finalize(p);
	return 0;
}

int hdqt_store_unknowns_drop(hdqt_store *s, int64_t group, const int64_t *ids, int n, int d,
			     int64_t *done)
{
	if (!s || n < 0 || (ids && n < 1) || d < 1 || d > HDQT_MAX_DIM || !done || (group > 0 && ids))
		return HDQT_EINVAL;
	*done = 0;
	int rc = begin(s);
	if (rc < 0)
		return rc;
	if ((rc = unknowns_apply(s, "DELETE FROM unknowns", group, ids, n, d, done)) < 0 ||
	    (rc = commit(s)) < 0) {
		rollback(s);
		*done = 0;
		return rc;
	}
	return 0;
}

int hdqt_store_unknowns_promote(hdqt_store *s, const char *name, int64_t group, const int64_t *ids,
				int n, int d, hdqt_store_class *cls, int *created, int64_t *moved)
{
	if (!s || (group > 0) == (ids != NULL) || (ids && n < 1) || d < 1 || d > HDQT_MAX_DIM || !cls ||
	    !created || !moved)
		return HDQT_EINVAL;
	*created = 0;
	*moved = 0;
	if (!valid_name(name))
		return seterr(s, HDQT_EINVAL, "class name must be 1..%d bytes without control characters",
			      HDQT_CLASS_NAME_MAX);
	/* The class (created if missing) and the move are one transaction:
	 * after a crash, or on any failure, the windows are still unknown and
	 * no class appeared. */
	int rc = begin(s);
	if (rc < 0)
		return rc;
	rc = hdqt_store_class_get(s, name, cls);
	if (rc == HDQT_ENOTFOUND) {
		if ((rc = class_insert(s, name)) < 0 || (rc = hdqt_store_class_get(s, name, cls)) < 0)
			goto fail;
		*created = 1;
	} else if (rc < 0) {
		goto fail;
	} else if (!cls->active) {
		rc = seterr(s, HDQT_EINVAL, "class '%s' was removed: class.add reactivates it", name);
		goto fail;
	}
	char head[160];
	snprintf(head, sizeof(head), "INSERT INTO samples(class_id, created, dim, features) SELECT %lld, "
		 "created, dim, features FROM unknowns", (long long)cls->id);
	int64_t gone = 0;
	if ((rc = unknowns_apply(s, head, group, ids, n, d, moved)) < 0)
		goto fail;
	if (*moved == 0) {
		rc = seterr(s, HDQT_ENOTFOUND, group > 0 ? "no unknown windows in group %lld"
							 : "none of the %lld ids is an unknown window",
			    group > 0 ? (long long)group : (long long)n);
		goto fail;
	}
	if (s->o.max_pending_per_class > 0) {
		int64_t have = 0;
		if ((rc = count_pending(s, cls->id, &have)) < 0)
			goto fail;
		if (have > s->o.max_pending_per_class) {
			rc = seterr(s, HDQT_EFULL, "class '%s' would hold %lld pending samples (limit %d)", name,
				    (long long)have, s->o.max_pending_per_class);
			goto fail;
		}
	}
	if ((rc = unknowns_apply(s, "DELETE FROM unknowns", group, ids, n, d, &gone)) < 0 ||
	    (rc = commit(s)) < 0)
		goto fail;
	return 0;
fail:
	rollback(s);
	*moved = 0;
	*created = 0;
	return rc;
}

/* ---- a training round, atomically ---- */

int hdqt_store_round_commit(hdqt_store *s, const hdqt_store_round *r, int64_t *version)
{
	if (!s || !r || !r->blob || r->blob_len == 0 || r->blob_len > (size_t)1 << 30 ||
	    r->n_learned < 0 || (r->n_learned > 0 && !r->learned) || r->n_holdout < 0 ||
	    (r->n_holdout > 0 && !r->holdout) || r->n_exemplars < 0 || r->dim < 1 ||
	    r->dim > HDQT_MAX_DIM || (r->n_exemplars > 0 && (!r->exemplar_class || !r->exemplars)) ||
	    r->validation_per_class < 0)
		return HDQT_EINVAL;
	for (size_t i = 0; i < (size_t)r->n_exemplars * r->dim; i++)
		if (!isfinite(r->exemplars[i]))
			return seterr(s, HDQT_ERANGE, "exemplar %zu has a NaN or infinite feature",
				      i / r->dim);
	int rc = begin(s);
	if (rc < 0)
		return rc;
	/* Free space first (learned samples, old validation rows, pruned
	 * versions), then write the model and its memory. */
	if ((rc = learned_tx(s, r->learned, r->n_learned, s->o.keep_learned)) < 0 ||
	    (rc = learned_tx(s, r->holdout, r->n_holdout, 1)) < 0)
		goto fail;
	if (r->validation_per_class > 0) {
		/* Keep the newest validation_per_class rows of every class. */
		char sql[256];
		snprintf(sql, sizeof(sql),
			 "DELETE FROM validation WHERE id IN (SELECT id FROM (SELECT id, "
			 "ROW_NUMBER() OVER (PARTITION BY class_id ORDER BY id DESC) AS k "
			 "FROM validation) WHERE k > %d)", r->validation_per_class);
		if ((rc = exec(s, sql, "validation prune")) < 0)
			goto fail;
	}
	int64_t v = 0;
	if ((rc = model_tx(s, r->blob, r->blob_len, r->config_json, r->metrics_json, r->make_current,
			   &v)) < 0 ||
	    (rc = exemplars_tx(s, v, r->exemplar_class, r->exemplars, r->n_exemplars, r->dim)) < 0 ||
	    (r->novelty && (rc = novelty_tx(s, v, r->novelty, r->novelty_len)) < 0))
		goto fail;
	if ((rc = commit(s)) < 0)
		goto fail;
	if (version)
		*version = v;
	/* Give the WAL's space back to the disk: the round rewrote every row it
	 * learned there, and room_for counts only what the file system and the
	 * database's free pages hold.  Briefly: a reader or writer in the way
	 * leaves it for the next round (the autocheckpoint still bounds it). */
	sqlite3_busy_timeout(s->db, 100);
	sqlite3_wal_checkpoint_v2(s->db, "main", SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	sqlite3_busy_timeout(s->db, s->o.busy_timeout_ms);
	return 0;
fail:
	rollback(s);
	return rc;
}
