/* SPDX-License-Identifier: MIT */
/* The SQLite store against real database files in a temporary directory. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hdqt_store.h"
#include "testutil.h"

static char dir[256];

static void mkdir_tmp(void)
{
	snprintf(dir, sizeof(dir), "/tmp/hdqt-store-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void rm_tmp(void)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static void path_in(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", dir, name);
}

static hdqt_store *open_ok(const char *path, const hdqt_store_opts *o)
{
	hdqt_store *s = NULL;
	char err[512];
	int rc = hdqt_store_open(&s, path, o, err, sizeof(err));
	ck_assert_msg(rc == 0, "open %s: %s", path, err);
	return s;
}

/* Contents of a file, for "unchanged" checks. */
static char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	long len = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *b = malloc((size_t)len + 1);
	ck_assert_int_eq(fread(b, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	*n = (size_t)len;
	return b;
}

START_TEST(test_classes)
{
	mkdir_tmp();
	char p[300];
	path_in(p, sizeof(p), "a.db");
	hdqt_store *s = open_ok(p, NULL);
	ck_assert_int_eq(hdqt_store_schema_version(s), HDQT_STORE_SCHEMA);
	hdqt_store_class c;
	ck_assert_int_eq(hdqt_store_class_add(s, "walking", &c), 0);
	ck_assert_int_eq(c.label, 0);
	ck_assert_int_eq(hdqt_store_class_add(s, "sitting", &c), 0);
	ck_assert_int_eq(c.label, 1);
	ck_assert_str_eq(c.name, "sitting");
	ck_assert_int_eq(hdqt_store_class_add(s, "walking", NULL), HDQT_EEXIST);
	ck_assert_int_eq(hdqt_store_class_add(s, "", NULL), HDQT_EINVAL);
	ck_assert_int_eq(hdqt_store_class_add(s, "bad\nname", NULL), HDQT_EINVAL);
	char longname[80];
	memset(longname, 'x', sizeof(longname) - 1);
	longname[79] = 0;
	ck_assert_int_eq(hdqt_store_class_add(s, longname, NULL), HDQT_EINVAL);
	ck_assert_int_eq(hdqt_store_class_set_active(s, "sitting", 0), 0);
	ck_assert_int_eq(hdqt_store_class_set_active(s, "lying", 0), HDQT_ENOTFOUND);
	hdqt_store_class *list;
	int n;
	ck_assert_int_eq(hdqt_store_class_list(s, &list, &n), 0);
	ck_assert_int_eq(n, 2);
	ck_assert_str_eq(list[0].name, "walking");
	ck_assert_int_eq(list[0].active, 1);
	ck_assert_int_eq(list[1].active, 0);
	free(list);
	hdqt_store_close(s);
	/* Persisted. */
	s = open_ok(p, NULL);
	ck_assert_int_eq(hdqt_store_class_get(s, "sitting", &c), 0);
	ck_assert_int_eq(c.label, 1);
	ck_assert_int_eq(hdqt_store_class_get(s, "lying", &c), HDQT_ENOTFOUND);
	hdqt_store_close(s);
	rm_tmp();
}
END_TEST

START_TEST(test_samples_and_validation)
{
	mkdir_tmp();
	char p[300];
	path_in(p, sizeof(p), "s.db");
	hdqt_store_opts o;
	hdqt_store_opts_default(&o);
	o.max_pending_per_class = 5;
	hdqt_store *s = open_ok(p, &o);
	hdqt_store_class a, b;
	hdqt_store_class_add(s, "a", &a);
	hdqt_store_class_add(s, "b", &b);
	float X[4 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
	int64_t cls[4] = {a.id, b.id, a.id, a.id};
	ck_assert_int_eq(hdqt_store_samples_add(s, cls, X, 4, 3), 0);
	int64_t cnt;
	ck_assert_int_eq(hdqt_store_samples_pending_count(s, -1, &cnt), 0);
	ck_assert_int_eq(cnt, 4);
	ck_assert_int_eq(hdqt_store_samples_pending_count(s, a.id, &cnt), 0);
	ck_assert_int_eq(cnt, 3);
	/* Bad batches change nothing. */
	X[5] = NAN;
	ck_assert_int_eq(hdqt_store_samples_add(s, cls, X, 4, 3), HDQT_ERANGE);
	X[5] = 6;
	int64_t bad[2] = {a.id, 999};
	ck_assert_int_eq(hdqt_store_samples_add(s, bad, X, 2, 3), HDQT_ENOTFOUND);
	int64_t three_a[3] = {a.id, a.id, a.id};
	ck_assert_int_eq(hdqt_store_samples_add(s, three_a, X, 3, 3), HDQT_EFULL); /* 3 + 3 > 5 */
	ck_assert_int_eq(hdqt_store_samples_pending_count(s, -1, &cnt), 0);
	ck_assert_int_eq(cnt, 4);
	float *PX;
	int64_t *ids, *pc;
	int n;
	ck_assert_int_eq(hdqt_store_samples_pending(s, 3, 100, &PX, &ids, &pc, &n), 0);
	ck_assert_int_eq(n, 4);
	ck_assert_mem_eq(PX, X, sizeof(X));
	ck_assert_int_eq(pc[1], b.id);
	ck_assert_int_eq(hdqt_store_samples_pending(s, 4, 100, &PX, &ids, &pc, &n) == HDQT_EFORMAT, 1);
	/* Learned: moved to validation (keep_learned = 1). */
	ck_assert_int_eq(hdqt_store_samples_learned(s, ids, 2), 0);
	ck_assert_int_eq(hdqt_store_samples_pending_count(s, -1, &cnt), 0);
	ck_assert_int_eq(cnt, 2);
	float *VX;
	int64_t *vc;
	ck_assert_int_eq(hdqt_store_validation_load(s, 3, &VX, &vc, &n), 0);
	ck_assert_int_eq(n, 2);
	ck_assert_mem_eq(VX, X, 6 * sizeof(float));
	ck_assert_int_eq(vc[0], a.id);
	free(VX);
	free(vc);
	free(PX);
	free(ids);
	free(pc);
	hdqt_store_close(s);
	/* keep_learned = 0: deleted. */
	o.keep_learned = 0;
	s = open_ok(p, &o);
	ck_assert_int_eq(hdqt_store_samples_pending(s, 3, 100, &PX, &ids, &pc, &n), 0);
	ck_assert_int_eq(hdqt_store_samples_learned(s, ids, n), 0);
	ck_assert_int_eq(hdqt_store_validation_load(s, 3, &VX, &vc, &n), 0);
	ck_assert_int_eq(n, 2);
	free(VX);
	free(vc);
	free(PX);
	free(ids);
	free(pc);
	hdqt_store_close(s);
	rm_tmp();
}
END_TEST

START_TEST(test_exemplars_models_runs_backup)
{
	mkdir_tmp();
	char p[300], bk[300];
	path_in(p, sizeof(p), "m.db");
	path_in(bk, sizeof(bk), "backup.db");
	hdqt_store_opts o;
	hdqt_store_opts_default(&o);
	o.keep_models = 3;
	hdqt_store *s = open_ok(p, &o);
	hdqt_store_class a, b;
	hdqt_store_class_add(s, "a", &a);
	hdqt_store_class_add(s, "b", &b);
	float E[3 * 2] = {1, 1, 2, 2, 3, 3};
	int64_t ec[3] = {b.id, a.id, b.id};
	ck_assert_int_eq(hdqt_store_exemplars_replace(s, ec, E, 3, 2), 0);
	float *LX;
	int64_t *lc;
	int n;
	ck_assert_int_eq(hdqt_store_exemplars_load(s, 2, &LX, &lc, &n), 0);
	ck_assert_int_eq(n, 3);
	/* (class, rank) order: a's exemplar, then b's two in their rank order. */
	ck_assert_int_eq(lc[0], a.id);
	ck_assert_float_eq(LX[0], 2.0f);
	ck_assert_float_eq(LX[2], 1.0f);
	ck_assert_float_eq(LX[4], 3.0f);
	free(LX);
	free(lc);
	int64_t unknown[1] = {777};
	ck_assert_int_eq(hdqt_store_exemplars_replace(s, unknown, E, 1, 2), HDQT_ENOTFOUND);
	ck_assert_int_eq(hdqt_store_exemplars_load(s, 2, &LX, &lc, &n), 0);
	ck_assert_int_eq(n, 3); /* the failed replace changed nothing */
	free(LX);
	free(lc);
	uint8_t blob[64];
	int64_t v[6];
	for (int i = 0; i < 6; i++) {
		memset(blob, 'A' + i, sizeof(blob));
		/* Version 2 is made current; later ones are stored only. */
		ck_assert_int_eq(hdqt_store_model_save(s, blob, sizeof(blob), "{\"hidden\":[512,512]}",
						       "{\"val_acc\":0.9}", i <= 1, &v[i]), 0);
	}
	hdqt_store_model *ml;
	ck_assert_int_eq(hdqt_store_model_list(s, &ml, &n), 0);
	ck_assert_int_eq(n, 4); /* newest 3 + the current one */
	ck_assert_int_eq(ml[0].version, v[1]);
	ck_assert_int_eq(ml[0].current, 1);
	ck_assert_str_eq(ml[0].metrics, "{\"val_acc\":0.9}");
	free(ml);
	uint8_t *cur;
	size_t len;
	int64_t cv;
	ck_assert_int_eq(hdqt_store_model_current(s, &cur, &len, &cv), 0);
	ck_assert_int_eq(cv, v[1]);
	ck_assert_int_eq(cur[0], 'B');
	free(cur);
	ck_assert_int_eq(hdqt_store_model_rollback(s, v[5]), 0);
	ck_assert_int_eq(hdqt_store_model_current(s, &cur, &len, &cv), 0);
	ck_assert_int_eq(cur[0], 'F');
	free(cur);
	ck_assert_int_eq(hdqt_store_model_rollback(s, v[0]), HDQT_ENOTFOUND); /* pruned */
	int64_t run;
	ck_assert_int_eq(hdqt_store_run_begin(s, &run), 0);
	ck_assert_int_eq(hdqt_store_run_end(s, run, "ok", "{\"samples\":10}"), 0);
	ck_assert_int_eq(hdqt_store_run_end(s, run + 100, "ok", NULL), HDQT_ENOTFOUND);
	ck_assert_int_eq(hdqt_store_backup(s, bk), 0);
	hdqt_store_close(s);
	struct stat st;
	char tmp[320];
	snprintf(tmp, sizeof(tmp), "%s.tmp", bk);
	ck_assert_int_ne(stat(tmp, &st), 0);
	s = open_ok(bk, NULL);
	ck_assert_int_eq(hdqt_store_model_current(s, &cur, &len, &cv), 0);
	ck_assert_int_eq(cur[0], 'F');
	ck_assert_int_eq(len, 64);
	free(cur);
	ck_assert_int_eq(hdqt_store_integrity_check(s), 0);
	hdqt_store_close(s);
	rm_tmp();
}
END_TEST

/* Counts and learned classes come from the tables, without loading rows. */
START_TEST(test_counts_and_learned_classes)
{
	mkdir_tmp();
	char p[300];
	path_in(p, sizeof(p), "c.db");
	hdqt_store_opts o;
	hdqt_store_opts_default(&o);
	o.keep_learned = 0;
	hdqt_store *s = open_ok(p, &o);
	hdqt_store_class a, b, c;
	hdqt_store_class_add(s, "a", &a);
	hdqt_store_class_add(s, "b", &b);
	hdqt_store_class_add(s, "c", &c);
	int64_t ne = -1, nv = -1, *ids = NULL;
	int n = -1;
	ck_assert_int_eq(hdqt_store_counts(s, &ne, &nv), 0);
	ck_assert_int_eq(ne, 0);
	ck_assert_int_eq(nv, 0);
	ck_assert_int_eq(hdqt_store_learned_classes(s, &ids, &n), 0);
	ck_assert_int_eq(n, 0);
	free(ids);
	/* a: two exemplars; c: one held-out sample; b: nothing */
	float E[4] = {1, 1, 2, 2}, V[2] = {3, 3};
	int64_t ec[2] = {a.id, a.id}, vc[1] = {c.id}, sid[1] = {0};
	ck_assert_int_eq(hdqt_store_exemplars_replace(s, ec, E, 2, 2), 0);
	ck_assert_int_eq(hdqt_store_samples_add(s, vc, V, 1, 2), 0);
	float *PX;
	int64_t *pid, *pc;
	int np;
	ck_assert_int_eq(hdqt_store_samples_pending(s, 2, 10, &PX, &pid, &pc, &np), 0);
	ck_assert_int_eq(np, 1);
	sid[0] = pid[0];
	free(PX);
	free(pid);
	free(pc);
	uint8_t blob[4] = {1, 2, 3, 4};
	hdqt_store_round r = {.blob = blob, .blob_len = 4, .make_current = 1, .holdout = sid,
			      .n_holdout = 1, .exemplar_class = ec, .exemplars = E, .n_exemplars = 2,
			      .dim = 2};
	ck_assert_int_eq(hdqt_store_round_commit(s, &r, NULL), 0);
	ck_assert_int_eq(hdqt_store_counts(s, &ne, &nv), 0);
	ck_assert_int_eq(ne, 2);
	ck_assert_int_eq(nv, 1);
	/* The current model's memory tells what it learned: a, not c (whose
	 * only trace is a held-out sample, e.g. of a version rolled back). */
	ck_assert_int_eq(hdqt_store_learned_classes(s, &ids, &n), 0);
	ck_assert_int_eq(n, 1);
	ck_assert(ids[0] == a.id);
	free(ids);
	/* A model without memory (LwF): the validation samples tell. */
	hdqt_store_round r2 = {.blob = blob, .blob_len = 4, .make_current = 1, .dim = 2};
	ck_assert_int_eq(hdqt_store_round_commit(s, &r2, NULL), 0);
	ck_assert_int_eq(hdqt_store_counts(s, &ne, &nv), 0);
	ck_assert_int_eq(ne, 0);
	ck_assert_int_eq(hdqt_store_learned_classes(s, &ids, &n), 0);
	ck_assert_int_eq(n, 1);
	ck_assert(ids[0] == c.id);
	free(ids);
	hdqt_store_close(s);
	rm_tmp();
}
END_TEST

/* Regression (review finding 11): a rollback followed by a round deleted
 * for ever the exemplars of classes the rolled-back model did not know. */
START_TEST(test_exemplars_follow_rollback)
{
	mkdir_tmp();
	char p[300];
	path_in(p, sizeof(p), "ex.db");
	hdqt_store *s = open_ok(p, NULL);
	hdqt_store_class a, b;
	ck_assert_int_eq(hdqt_store_class_add(s, "a", &a), 0);
	ck_assert_int_eq(hdqt_store_class_add(s, "b", &b), 0);
	uint8_t blob[4] = {1, 2, 3, 4};
	float E1[2] = {1, 1}, E2[4] = {1, 1, 2, 2}, E3[2] = {5, 5};
	int64_t c1[1] = {a.id}, c2[2] = {a.id, b.id}, c3[1] = {a.id};
	int64_t v1, v2, v3;
	hdqt_store_round r = {.blob = blob, .blob_len = 4, .make_current = 1, .exemplar_class = c1,
			      .exemplars = E1, .n_exemplars = 1, .dim = 2};
	ck_assert_int_eq(hdqt_store_round_commit(s, &r, &v1), 0);
	r.exemplar_class = c2, r.exemplars = E2, r.n_exemplars = 2;
	ck_assert_int_eq(hdqt_store_round_commit(s, &r, &v2), 0);
	ck_assert_int_eq(hdqt_store_model_rollback(s, v1), 0);
	float *X;
	int64_t *cl;
	int n;
	ck_assert_int_eq(hdqt_store_exemplars_load(s, 2, &X, &cl, &n), 0);
	ck_assert_int_eq(n, 1);
	ck_assert(cl[0] == a.id && X[0] == 1);
	free(X);
	free(cl);
	/* A round from version 1 writes its own memory ... */
	r.exemplar_class = c3, r.exemplars = E3, r.n_exemplars = 1;
	ck_assert_int_eq(hdqt_store_round_commit(s, &r, &v3), 0);
	/* ... and version 2 keeps b's exemplars: rolling forward restores them. */
	ck_assert_int_eq(hdqt_store_model_rollback(s, v2), 0);
	ck_assert_int_eq(hdqt_store_exemplars_load(s, 2, &X, &cl, &n), 0);
	ck_assert_int_eq(n, 2);
	ck_assert(cl[1] == b.id && X[2] == 2);
	free(X);
	free(cl);
	hdqt_store_close(s);
	rm_tmp();
}
END_TEST

/* Open-set (issue 17): the calibration goes with its version, unknown
 * windows are bounded, persistent, promoted and dropped atomically. */
START_TEST(test_novelty_and_unknowns)
{
	mkdir_tmp();
	char p[300];
	path_in(p, sizeof(p), "os.db");
	hdqt_store *s = open_ok(p, NULL);
	hdqt_store_class a;
	ck_assert_int_eq(hdqt_store_class_add(s, "a", &a), 0);
	uint8_t blob[4] = {1, 2, 3, 4}, nov[3] = {7, 8, 9};
	int64_t v1, v2;
	hdqt_store_round r = {.blob = blob, .blob_len = 4, .make_current = 1, .dim = 2,
			      .novelty = nov, .novelty_len = 3};
	ck_assert_int_eq(hdqt_store_round_commit(s, &r, &v1), 0);
	r.novelty = NULL;
	ck_assert_int_eq(hdqt_store_round_commit(s, &r, &v2), 0);
	uint8_t *got;
	size_t len;
	ck_assert_int_eq(hdqt_store_model_novelty(s, v1, &got, &len), 0);
	ck_assert(len == 3 && memcmp(got, nov, 3) == 0);
	free(got);
	ck_assert_int_eq(hdqt_store_model_novelty(s, v2, &got, &len), HDQT_ENOTFOUND);
	ck_assert_int_eq(hdqt_store_model_novelty(s, 999, &got, &len), HDQT_ENOTFOUND);

	/* five windows, keep 3: the newest three stay, oldest first */
	float X[5 * 2] = {0, 0, 1, 1, 2, 2, 3, 3, 4, 4};
	int lab[5] = {0, 0, 0, 0, 0};
	float sc[5] = {.1f, .2f, .3f, .4f, .5f};
	int64_t grp[5] = {7, 7, 7, 8, 8};
	int removed;
	ck_assert_int_eq(hdqt_store_unknowns_add(s, X, lab, sc, grp, 2, 2, v1, 3, &removed), 0);
	ck_assert_int_eq(removed, 0);
	ck_assert_int_eq(hdqt_store_unknowns_add(s, X + 4, lab, sc + 2, grp + 2, 3, 2, v1, 3, &removed), 0);
	ck_assert_int_eq(removed, 2);
	int64_t cnt, maxg;
	ck_assert_int_eq(hdqt_store_unknowns_count(s, &cnt, &maxg), 0);
	ck_assert_int_eq(cnt, 3);
	ck_assert_int_eq(maxg, 8);
	hdqt_store_unknown *u;
	float *UX;
	int n;
	ck_assert_int_eq(hdqt_store_unknowns_list(s, 2, 100, v1, &u, &UX, &n), 0);
	ck_assert_int_eq(n, 3);
	ck_assert(u[0].id < u[1].id && u[1].id < u[2].id);
	ck_assert_float_eq(UX[0], 2.0f);
	ck_assert_float_eq(u[2].score, 0.5f);
	ck_assert_int_eq(u[0].group, 7);
	ck_assert_int_eq(u[2].group, 8);
	const int64_t last = u[2].id;
	free(u);
	free(UX);
	ck_assert_int_eq(hdqt_store_unknowns_list(s, 2, 100, v2, &u, &UX, &n), 0);
	ck_assert_int_eq(n, 0); /* another model's windows */
	free(u);
	free(UX);
	hdqt_store_ugroup *g;
	ck_assert_int_eq(hdqt_store_unknowns_groups(s, &g, &n), 0);
	ck_assert_int_eq(n, 2);
	ck_assert(g[0].group == 7 && g[0].size == 1 && g[1].group == 8 && g[1].size == 2);
	ck_assert_int_eq(g[1].label, 0);
	ck_assert_double_eq_tol(g[1].score_sum, 0.9, 1e-6);
	ck_assert_int_eq(g[1].ids[1], last);
	free(g);
	/* a NaN window stores nothing of its batch */
	float bad[4] = {1, NAN, 2, 2};
	ck_assert_int_eq(hdqt_store_unknowns_add(s, bad, lab, sc, grp, 2, 2, v1, 3, &removed), HDQT_ERANGE);
	ck_assert_int_eq(hdqt_store_unknowns_count(s, &cnt, &maxg), 0);
	ck_assert_int_eq(cnt, 3);
	ck_assert_int_eq(hdqt_store_unknowns_add(s, X, lab, sc, grp, 1, 2, v1, HDQT_STORE_UNKNOWNS_MAX + 1,
						 &removed), HDQT_EINVAL);

	/* promote group 8: a new class, pending samples with their features,
	 * one transaction */
	hdqt_store_class b;
	int created;
	int64_t moved;
	ck_assert_int_eq(hdqt_store_unknowns_promote(s, "b", 8, NULL, 0, 2, &b, &created, &moved), 0);
	ck_assert_int_eq(created, 1);
	ck_assert_int_eq(moved, 2);
	ck_assert_int_eq(hdqt_store_samples_pending_count(s, b.id, &cnt), 0);
	ck_assert_int_eq(cnt, 2);
	ck_assert_int_eq(hdqt_store_unknowns_count(s, &cnt, &maxg), 0);
	ck_assert_int_eq(cnt, 1);
	float *PX;
	int64_t *pid, *pcl;
	ck_assert_int_eq(hdqt_store_samples_pending(s, 2, 10, &PX, &pid, &pcl, &n), 0);
	ck_assert_int_eq(n, 2);
	ck_assert(PX[0] == 3.0f && PX[2] == 4.0f && pcl[0] == b.id);
	free(PX);
	free(pid);
	free(pcl);
	/* again: the group is gone: nothing moves, no class appears */
	ck_assert_int_eq(hdqt_store_unknowns_promote(s, "c", 8, NULL, 0, 2, &b, &created, &moved),
			 HDQT_ENOTFOUND);
	ck_assert(created == 0 && moved == 0);
	ck_assert_int_eq(hdqt_store_class_get(s, "c", &b), HDQT_ENOTFOUND);
	ck_assert_int_eq(hdqt_store_unknowns_promote(s, "bad\x01", 7, NULL, 0, 2, &b, &created, &moved),
			 HDQT_EINVAL);
	/* a removed class takes none */
	ck_assert_int_eq(hdqt_store_class_set_active(s, "a", 0), 0);
	ck_assert_int_eq(hdqt_store_unknowns_promote(s, "a", 7, NULL, 0, 2, &b, &created, &moved),
			 HDQT_EINVAL);
	int64_t done;
	ck_assert_int_eq(hdqt_store_unknowns_count(s, &cnt, &maxg), 0);
	ck_assert_int_eq(cnt, 1);
	/* ids never come back after a drop (AUTOINCREMENT) */
	ck_assert_int_eq(hdqt_store_unknowns_drop(s, 0, NULL, 0, 2, &done), 0);
	ck_assert_int_eq(done, 1);
	ck_assert_int_eq(hdqt_store_unknowns_add(s, X, lab, sc, grp, 1, 2, v1, 3, &removed), 0);
	ck_assert_int_eq(hdqt_store_unknowns_list(s, 2, 100, v1, &u, &UX, &n), 0);
	ck_assert_int_eq(n, 1);
	ck_assert_int_gt(u[0].id, last);
	const int64_t fresh = u[0].id;
	free(u);
	free(UX);
	ck_assert_int_eq(hdqt_store_unknowns_drop(s, 0, &fresh, 1, 2, &done), 0);
	ck_assert_int_eq(done, 1);
	hdqt_store_close(s);
	rm_tmp();
}
END_TEST

/* Regression (finding 9): a batch id stored once acknowledges a resend
 * without storing it again. */
START_TEST(test_batch_id_once)
{
	mkdir_tmp();
	char p[300];
	path_in(p, sizeof(p), "bid.db");
	hdqt_store *s = open_ok(p, NULL);
	hdqt_store_class a;
	ck_assert_int_eq(hdqt_store_class_add(s, "a", &a), 0);
	float X[6] = {1, 2, 3, 4, 5, 6};
	int64_t ids[3] = {a.id, a.id, a.id}, dup = -1, cnt = 0;
	ck_assert_int_eq(hdqt_store_samples_add_batch(s, ids, X, 3, 2, "box1-7", &dup), 0);
	ck_assert_int_eq(dup, 0);
	ck_assert_int_eq(hdqt_store_samples_add_batch(s, ids, X, 3, 2, "box1-7", &dup), 0);
	ck_assert_int_eq(dup, 3);
	ck_assert_int_eq(hdqt_store_samples_pending_count(s, -1, &cnt), 0);
	ck_assert_int_eq(cnt, 3);
	ck_assert_int_eq(hdqt_store_samples_add_batch(s, ids, X, 3, 2, "has space", &dup), HDQT_EINVAL);
	ck_assert_int_eq(hdqt_store_samples_add_batch(s, ids, X, 3, 2, "box1-8", &dup), 0);
	ck_assert_int_eq(hdqt_store_samples_pending_count(s, -1, &cnt), 0);
	ck_assert_int_eq(cnt, 6);
	hdqt_store_close(s);
	rm_tmp();
}
END_TEST

/* Regression (finding 7): a store at its size cap could never commit a
 * round again (the model was inserted before the learned samples were
 * deleted); now sample.add keeps headroom and the round frees first. */
START_TEST(test_full_store_still_trains)
{
	mkdir_tmp();
	char p[300];
	path_in(p, sizeof(p), "full.db");
	hdqt_store_opts o;
	hdqt_store_opts_default(&o);
	o.max_bytes = 1 << 20;
	o.keep_learned = 0;
	hdqt_store *s = open_ok(p, &o);
	hdqt_store_class a;
	ck_assert_int_eq(hdqt_store_class_add(s, "a", &a), 0);
	enum { D = 166, N = 50 };
	static float X[N * D];
	int64_t ids[N];
	for (int i = 0; i < N; i++)
		ids[i] = a.id;
	int rc, k = 0;
	while ((rc = hdqt_store_samples_add(s, ids, X, N, D)) == 0)
		k++;
	ck_assert_int_eq(rc, HDQT_EFULL);
	ck_assert_int_gt(k, 0);
	float *PX;
	int64_t *pid, *pc;
	int np;
	ck_assert_int_eq(hdqt_store_samples_pending(s, D, 1000000, &PX, &pid, &pc, &np), 0);
	static uint8_t blob[64 * 1024];
	hdqt_store_round r = {.blob = blob, .blob_len = sizeof(blob), .make_current = 1,
			      .learned = pid, .n_learned = np, .dim = D};
	ck_assert_int_eq(hdqt_store_round_commit(s, &r, NULL), 0);
	free(PX);
	free(pid);
	free(pc);
	ck_assert_int_eq(hdqt_store_samples_add(s, ids, X, N, D), 0);
	hdqt_store_close(s);
	/* A round that adds more than an eighth of the cap (round_bytes) keeps
	 * that much free instead: ingest stops sooner. */
	char p2[300];
	path_in(p2, sizeof(p2), "full2.db");
	o.round_bytes = 1 << 19;
	s = open_ok(p2, &o);
	ck_assert_int_eq(hdqt_store_class_add(s, "a", &a), 0);
	for (int i = 0; i < N; i++)
		ids[i] = a.id;
	int k2 = 0;
	while ((rc = hdqt_store_samples_add(s, ids, X, N, D)) == 0)
		k2++;
	ck_assert_int_eq(rc, HDQT_EFULL);
	ck_assert_msg(k2 < k && k2 > 0, "%d batches with a 512 KB round, %d with none", k2, k);
	ck_assert_ptr_nonnull(strstr(hdqt_store_errmsg(s), "524288 are kept free"));
	hdqt_store_close(s);
	rm_tmp();
}
END_TEST

static void count_call(void *arg)
{
	(*(int *)arg)++;
}

/* Regression (finding 12): the start-up check can report progress (hdqtd
 * extends systemd's start timeout with it) and can be skipped on the
 * daemon's second and third connections. */
START_TEST(test_check_progress)
{
	mkdir_tmp();
	char p[300];
	path_in(p, sizeof(p), "chk.db");
	hdqt_store *s = open_ok(p, NULL);
	hdqt_store_class a;
	ck_assert_int_eq(hdqt_store_class_add(s, "a", &a), 0);
	enum { D = 166, N = 500 };
	static float X[N * D];
	int64_t ids[N];
	for (int i = 0; i < N; i++)
		ids[i] = a.id;
	for (int k = 0; k < 4; k++)
		ck_assert_int_eq(hdqt_store_samples_add(s, ids, X, N, D), 0);
	hdqt_store_close(s);
	hdqt_store_opts o;
	hdqt_store_opts_default(&o);
	int calls = 0;
	o.check_progress = count_call;
	o.check_arg = &calls;
	o.check_interval_s = 1e-9;
	s = open_ok(p, &o);
	hdqt_store_close(s);
	ck_assert_int_gt(calls, 0);
	calls = 0;
	o.quick_check = 0;
	s = open_ok(p, &o);
	hdqt_store_close(s);
	ck_assert_int_eq(calls, 0);
	rm_tmp();
}
END_TEST

/* Quarantined samples are not pending; they can be listed, released, dropped. */
START_TEST(test_quarantine)
{
	mkdir_tmp();
	char p[300];
	path_in(p, sizeof(p), "q.db");
	hdqt_store *s = open_ok(p, NULL);
	hdqt_store_class a;
	ck_assert_int_eq(hdqt_store_class_add(s, "a", &a), 0);
	float X[8] = {0};
	int64_t ids[4] = {a.id, a.id, a.id, a.id}, cnt = 0, done = 0;
	ck_assert_int_eq(hdqt_store_samples_add(s, ids, X, 4, 2), 0);
	float *PX;
	int64_t *pid, *pc;
	int np;
	ck_assert_int_eq(hdqt_store_samples_pending(s, 2, 10, &PX, &pid, &pc, &np), 0);
	ck_assert_int_eq(hdqt_store_quarantine(s, pid, 2), 0);
	ck_assert_int_eq(hdqt_store_samples_pending_count(s, -1, &cnt), 0);
	ck_assert_int_eq(cnt, 2);
	ck_assert_int_eq(hdqt_store_quarantine_count(s, &cnt), 0);
	ck_assert_int_eq(cnt, 2);
	hdqt_store_qsample *q;
	int nq;
	ck_assert_int_eq(hdqt_store_quarantine_list(s, 10, &q, &nq), 0);
	ck_assert_int_eq(nq, 2);
	ck_assert(q[0].id == pid[0] && q[0].class_id == a.id);
	free(q);
	ck_assert_int_eq(hdqt_store_quarantine_resolve(s, pid, 1, 1, &done), 0);
	ck_assert_int_eq(done, 1);
	ck_assert_int_eq(hdqt_store_quarantine_resolve(s, NULL, 0, 0, &done), 0);
	ck_assert_int_eq(done, 1);
	ck_assert_int_eq(hdqt_store_samples_pending_count(s, -1, &cnt), 0);
	ck_assert_int_eq(cnt, 3);
	ck_assert_int_eq(hdqt_store_quarantine_count(s, &cnt), 0);
	ck_assert_int_eq(cnt, 0);
	free(PX);
	free(pid);
	free(pc);
	hdqt_store_close(s);
	rm_tmp();
}
END_TEST

START_TEST(test_migration_from_v1_fixture)
{
	mkdir_tmp();
	char p[300], cmd[800];
	path_in(p, sizeof(p), "v1.db");
	const char *root = getenv("HDQT_SOURCE_ROOT");
	snprintf(cmd, sizeof(cmd), "cp '%s/tests/fixtures/store-v1.db' '%s'", root ? root : ".", p);
	ck_assert_int_eq(system(cmd), 0);
	hdqt_store *s = open_ok(p, NULL);
	ck_assert_int_eq(hdqt_store_schema_version(s), HDQT_STORE_SCHEMA);
	hdqt_store_class c;
	ck_assert_int_eq(hdqt_store_class_get(s, "sitting", &c), 0);
	ck_assert_int_eq(c.label, 1);
	int64_t cnt;
	ck_assert_int_eq(hdqt_store_samples_pending_count(s, -1, &cnt), 0);
	ck_assert_int_eq(cnt, 3);
	float *X;
	int64_t *ids, *cl;
	int n;
	ck_assert_int_eq(hdqt_store_samples_pending(s, 4, 10, &X, &ids, &cl, &n), 0);
	ck_assert_float_eq(X[4 + 1], 1.5f);
	free(X);
	free(ids);
	free(cl);
	uint8_t *blob;
	size_t len;
	ck_assert_int_eq(hdqt_store_model_current(s, &blob, &len, NULL), 0);
	ck_assert_int_eq(len, 16);
	ck_assert_int_eq(memcmp(blob, "HDQTMDL1-fixture", 16), 0);
	free(blob);
	hdqt_store_model *ml;
	ck_assert_int_eq(hdqt_store_model_list(s, &ml, &n), 0);
	ck_assert_str_eq(ml[0].metrics, "{}");
	free(ml);
	/* New tables work. */
	int64_t run;
	ck_assert_int_eq(hdqt_store_run_begin(s, &run), 0);
	hdqt_store_close(s);
	rm_tmp();
}
END_TEST

START_TEST(test_refuses_newer_and_corrupt)
{
	mkdir_tmp();
	char p[300];
	path_in(p, sizeof(p), "n.db");
	hdqt_store *s = open_ok(p, NULL);
	hdqt_store_close(s);
	sqlite3 *db;
	ck_assert_int_eq(sqlite3_open(p, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "PRAGMA journal_mode=DELETE; UPDATE meta SET value='99'", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	size_t n0, n1;
	char *before = slurp(p, &n0);
	char err[512];
	ck_assert_int_eq(hdqt_store_open(&s, p, NULL, err, sizeof(err)), HDQT_EVERSION);
	ck_assert_ptr_nonnull(strstr(err, "newer"));
	char *after = slurp(p, &n1);
	ck_assert_int_eq(n0, n1);
	ck_assert_mem_eq(before, after, n0);
	free(before);
	free(after);

	/* Not a database at all. */
	char g[300];
	path_in(g, sizeof(g), "garbage.db");
	FILE *f = fopen(g, "wb");
	for (int i = 0; i < 8192; i++)
		fputc((i * 7919) & 0xff, f);
	fclose(f);
	before = slurp(g, &n0);
	ck_assert_int_eq(hdqt_store_open(&s, g, NULL, err, sizeof(err)), HDQT_ECORRUPT);
	after = slurp(g, &n1);
	ck_assert_int_eq(n0, n1);
	ck_assert_mem_eq(before, after, n0);
	free(before);
	free(after);

	/* A real database with a damaged b-tree page. */
	char c[300];
	path_in(c, sizeof(c), "damaged.db");
	s = open_ok(c, NULL);
	hdqt_store_class cl;
	hdqt_store_class_add(s, "a", &cl);
	float X[64 * 32];
	int64_t ids[64];
	for (int i = 0; i < 64 * 32; i++)
		X[i] = (float)i;
	for (int i = 0; i < 64; i++)
		ids[i] = cl.id;
	for (int k = 0; k < 4; k++)
		ck_assert_int_eq(hdqt_store_samples_add(s, ids, X, 64, 32), 0);
	hdqt_store_close(s);
	ck_assert_int_eq(sqlite3_open(c, &db), SQLITE_OK);
	ck_assert_int_eq(sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	int fd = open(c, O_RDWR);
	ck_assert_int_ge(fd, 0);
	char junk[512];
	memset(junk, 0xA5, sizeof(junk));
	/* Page 2 onwards hold the tables' b-trees: overwrite the header of page 3. */
	ck_assert_int_eq(pwrite(fd, junk, sizeof(junk), 2 * 4096), (ssize_t)sizeof(junk));
	close(fd);
	ck_assert_int_eq(hdqt_store_open(&s, c, NULL, err, sizeof(err)), HDQT_ECORRUPT);
	rm_tmp();
}
END_TEST

/* Crash safety: a child inserts batches and reports each acknowledged
 * batch through a pipe; the parent kills it with SIGKILL at a random
 * moment after its first one, reopens the database and checks that every acknowledged batch is
 * there.  50 kills, seeded. */
START_TEST(test_sigkill_keeps_acknowledged)
{
	mkdir_tmp();
	char p[300];
	path_in(p, sizeof(p), "crash.db");
	hdqt_store *s = open_ok(p, NULL);
	hdqt_store_class cl;
	ck_assert_int_eq(hdqt_store_class_add(s, "c", &cl), 0);
	hdqt_store_close(s);
	srand(12345);
	enum { B = 50, D = 8 };
	int next_batch = 0;
	for (int kill_no = 0; kill_no < 50; kill_no++) {
		int fds[2];
		ck_assert_int_eq(pipe(fds), 0);
		pid_t pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			close(fds[0]);
			hdqt_store *cs;
			if (hdqt_store_open(&cs, p, NULL, NULL, 0) < 0)
				_exit(3);
			float X[B * D];
			int64_t ids[B];
			for (int batch = next_batch;; batch++) {
				for (int i = 0; i < B; i++) {
					ids[i] = cl.id;
					for (int j = 0; j < D; j++)
						X[i * D + j] = (float)batch; /* the batch number, stored */
				}
				if (hdqt_store_samples_add(cs, ids, X, B, D) < 0)
					_exit(4);
				if (write(fds[1], &batch, sizeof(batch)) != sizeof(batch))
					_exit(5);
			}
		}
		close(fds[1]);
		/* The kill falls at a random moment after the child's first
		 * acknowledged batch: with a fixed delay from the fork, a slow
		 * start (the store's open under qemu) used up the whole window
		 * and the run made fewer batches than kills. */
		int acked = next_batch - 1, b;
		if (read(fds[0], &b, sizeof(b)) == sizeof(b))
			acked = b;
		struct timespec ts = {0, (long)(1 + rand() % 40) * 1000000L};
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		int status;
		waitpid(pid, &status, 0);
		ck_assert_msg(WIFSIGNALED(status), "child exited early with %d", WEXITSTATUS(status));
		while (read(fds[0], &b, sizeof(b)) == sizeof(b))
			acked = b;
		close(fds[0]);
		s = open_ok(p, NULL);
		ck_assert_int_eq(hdqt_store_integrity_check(s), 0);
		float *X;
		int64_t *ids, *cls;
		int n;
		ck_assert_int_eq(hdqt_store_samples_pending(s, D, 1 << 30, &X, &ids, &cls, &n), 0);
		/* Count rows per batch: every acknowledged batch is complete; an
		 * unacknowledged one is complete or absent, never partial. */
		int *per = calloc((size_t)acked + 3, sizeof(int));
		int maxb = -1;
		for (int i = 0; i < n; i++) {
			int bn = (int)X[(size_t)i * D];
			ck_assert_int_le(bn, acked + 1);
			per[bn]++;
			maxb = bn > maxb ? bn : maxb;
		}
		for (int bn = 0; bn <= acked; bn++)
			ck_assert_int_eq(per[bn], B);
		if (maxb == acked + 1)
			ck_assert_int_eq(per[acked + 1], B);
		next_batch = maxb + 1;
		free(per);
		free(X);
		free(ids);
		free(cls);
		hdqt_store_close(s);
	}
	ck_assert_int_gt(next_batch, 50);
	rm_tmp();
}
END_TEST

/* Rejected versions (metrics "rejected": true) never push a version that
 * served out: keep_models counts the others, and of the rejected ones only
 * the newest stays (review of 2026-12-08: four rejected rounds had pruned
 * every rollback target).  Metrics that are not JSON count as served. */
START_TEST(test_rejected_versions_prune_first)
{
	mkdir_tmp();
	char p[300];
	path_in(p, sizeof(p), "rej.db");
	hdqt_store_opts o;
	hdqt_store_opts_default(&o);
	o.keep_models = 3;
	hdqt_store *s = open_ok(p, &o);
	uint8_t blob[16] = {'A'};
	int64_t v[8];
	ck_assert_int_eq(hdqt_store_model_save(s, blob, sizeof(blob), "{}", "{\"round\":1}", 1, &v[0]), 0);
	ck_assert_int_eq(hdqt_store_model_save(s, blob, sizeof(blob), "{}", "not json", 1, &v[1]), 0);
	ck_assert_int_eq(hdqt_store_model_save(s, blob, sizeof(blob), "{}", "{\"round\":3}", 1, &v[2]), 0);
	for (int i = 3; i < 8; i++)
		ck_assert_int_eq(hdqt_store_model_save(s, blob, sizeof(blob), "{}",
						       "{\"round\":4,\"rejected\":true}", 0, &v[i]), 0);
	hdqt_store_model *ml;
	int n;
	ck_assert_int_eq(hdqt_store_model_list(s, &ml, &n), 0);
	ck_assert_int_eq(n, 4); /* the three that served and the newest rejected */
	int seen[8] = {0};
	for (int i = 0; i < n; i++)
		for (int k = 0; k < 8; k++)
			seen[k] += ml[i].version == v[k];
	free(ml);
	ck_assert(seen[0] && seen[1] && seen[2] && seen[7]);
	ck_assert_int_eq(hdqt_store_model_rollback(s, v[0]), 0);
	ck_assert_int_eq(hdqt_store_model_rollback(s, v[6]), HDQT_ENOTFOUND);
	/* the rejected one brought back serves: no longer marked */
	ck_assert_int_eq(hdqt_store_model_rollback(s, v[7]), 0);
	ck_assert_int_eq(hdqt_store_model_list(s, &ml, &n), 0);
	for (int i = 0; i < n; i++)
		if (ml[i].version == v[7])
			ck_assert_ptr_null(strstr(ml[i].metrics, "rejected"));
	free(ml);
	hdqt_store_close(s);
	rm_tmp();
}
END_TEST

/* A backup onto a full disk is HDQT_EFULL (a limit, -32005 over the socket),
 * as an insert is, not HDQT_EIO: a child whose RLIMIT_FSIZE the backup's
 * file outgrows; no partial backup is left behind. */
START_TEST(test_backup_disk_full)
{
	mkdir_tmp();
	char p[300], bk[300], tmp[310];
	path_in(p, sizeof(p), "src.db");
	path_in(bk, sizeof(bk), "full-backup.db");
	snprintf(tmp, sizeof(tmp), "%s.tmp", bk);
	hdqt_store *s = open_ok(p, NULL);
	hdqt_store_class cl;
	ck_assert_int_eq(hdqt_store_class_add(s, "c", &cl), 0);
	static float X[200 * 64];
	int64_t ids[200];
	for (int i = 0; i < 200 * 64; i++)
		X[i] = (float)i;
	for (int i = 0; i < 200; i++)
		ids[i] = cl.id;
	for (int k = 0; k < 5; k++) /* about 260 KB */
		ck_assert_int_eq(hdqt_store_samples_add(s, ids, X, 200, 64), 0);
	int fds[2];
	ck_assert_int_eq(pipe(fds), 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		signal(SIGXFSZ, SIG_IGN);
		struct rlimit rl = {64 * 1024, 64 * 1024};
		setrlimit(RLIMIT_FSIZE, &rl);
		int rc = hdqt_store_backup(s, bk);
		_exit(write(fds[1], &rc, sizeof(rc)) == sizeof(rc) ? 0 : 5);
	}
	close(fds[1]);
	int rc = 0;
	ck_assert_int_eq(read(fds[0], &rc, sizeof(rc)), sizeof(rc));
	close(fds[0]);
	int status;
	waitpid(pid, &status, 0);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_msg(rc == HDQT_EFULL, "backup onto a full disk gave %d (%s)", rc, hdqt_strerror(rc));
	ck_assert_int_ne(access(bk, F_OK), 0);
	ck_assert_int_ne(access(tmp, F_OK), 0);
	ck_assert_int_eq(hdqt_store_backup(s, bk), 0); /* without the limit it goes */
	hdqt_store_close(s);
	rm_tmp();
}
END_TEST

/* Disk full: a child with RLIMIT_FSIZE inserts until the limit; the failure
 * is a clear HDQT_EFULL, and the database stays usable and intact. */
START_TEST(test_file_size_limit)
{
	mkdir_tmp();
	char p[300];
	path_in(p, sizeof(p), "full.db");
	hdqt_store *s = open_ok(p, NULL);
	hdqt_store_class cl;
	hdqt_store_class_add(s, "c", &cl);
	hdqt_store_close(s);
	int fds[2];
	ck_assert_int_eq(pipe(fds), 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		signal(SIGXFSZ, SIG_IGN); /* get EFBIG instead of being killed */
		struct rlimit rl = {512 * 1024, 512 * 1024};
		setrlimit(RLIMIT_FSIZE, &rl);
		hdqt_store *cs;
		if (hdqt_store_open(&cs, p, NULL, NULL, 0) < 0)
			_exit(3);
		float X[100 * 64];
		int64_t ids[100];
		for (int i = 0; i < 100 * 64; i++)
			X[i] = (float)i;
		for (int i = 0; i < 100; i++)
			ids[i] = cl.id;
		int rc = 0, acked = 0;
		for (int k = 0; k < 1000 && rc == 0; k++)
			if ((rc = hdqt_store_samples_add(cs, ids, X, 100, 64)) == 0)
				acked++;
		/* The store still answers reads after the failure. */
		int64_t cnt = -1;
		int rc2 = hdqt_store_samples_pending_count(cs, -1, &cnt);
		int msg[4] = {rc, acked, rc2, (int)cnt};
		if (write(fds[1], msg, sizeof(msg)) != sizeof(msg))
			_exit(5);
		hdqt_store_close(cs);
		_exit(0);
	}
	close(fds[1]);
	int msg[4];
	ck_assert_int_eq(read(fds[0], msg, sizeof(msg)), sizeof(msg));
	close(fds[0]);
	int status;
	waitpid(pid, &status, 0);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_msg(msg[0] == HDQT_EFULL, "insert past the limit gave %d (%s)", msg[0], hdqt_strerror(msg[0]));
	ck_assert_int_gt(msg[1], 0);
	ck_assert_int_eq(msg[2], 0);
	ck_assert_int_eq(msg[3], msg[1] * 100);
	s = open_ok(p, NULL);
	ck_assert_int_eq(hdqt_store_integrity_check(s), 0);
	int64_t cnt;
	ck_assert_int_eq(hdqt_store_samples_pending_count(s, -1, &cnt), 0);
	ck_assert_int_eq(cnt, (int64_t)msg[1] * 100);
	hdqt_store_close(s);

	/* The configured size cap gives the same clear error. */
	hdqt_store_opts o;
	hdqt_store_opts_default(&o);
	o.max_bytes = 256 * 1024;
	char q[300];
	path_in(q, sizeof(q), "cap.db");
	s = open_ok(q, &o);
	hdqt_store_class_add(s, "c", &cl);
	float X[100 * 64] = {0};
	int64_t ids[100];
	for (int i = 0; i < 100; i++)
		ids[i] = cl.id;
	int rc = 0, k = 0;
	for (; k < 1000 && rc == 0; k++)
		rc = hdqt_store_samples_add(s, ids, X, 100, 64);
	ck_assert_int_eq(rc, HDQT_EFULL);
	ck_assert_int_eq(hdqt_store_integrity_check(s), 0);
	hdqt_store_close(s);
	rm_tmp();
}
END_TEST

typedef struct conc {
	const char *path;
	int stop, errors, reads, writes;
	pthread_mutex_t mu;
} conc;

static void *writer(void *arg)
{
	conc *c = arg;
	hdqt_store *s;
	if (hdqt_store_open(&s, c->path, NULL, NULL, 0) < 0) {
		__atomic_add_fetch(&c->errors, 1, __ATOMIC_SEQ_CST);
		return NULL;
	}
	hdqt_store_class cl;
	hdqt_store_class_get(s, "c", &cl);
	float X[20 * 16] = {0};
	int64_t ids[20];
	for (int i = 0; i < 20; i++)
		ids[i] = cl.id;
	while (!__atomic_load_n(&c->stop, __ATOMIC_SEQ_CST)) {
		if (hdqt_store_samples_add(s, ids, X, 20, 16) < 0)
			__atomic_add_fetch(&c->errors, 1, __ATOMIC_SEQ_CST);
		else
			__atomic_add_fetch(&c->writes, 1, __ATOMIC_SEQ_CST);
	}
	hdqt_store_close(s);
	return NULL;
}

static void *reader(void *arg)
{
	conc *c = arg;
	hdqt_store *s;
	if (hdqt_store_open(&s, c->path, NULL, NULL, 0) < 0) {
		__atomic_add_fetch(&c->errors, 1, __ATOMIC_SEQ_CST);
		return NULL;
	}
	int64_t last = 0;
	while (!__atomic_load_n(&c->stop, __ATOMIC_SEQ_CST)) {
		int64_t cnt;
		float *X;
		int64_t *ids, *cls;
		int n;
		int rc = hdqt_store_samples_pending_count(s, -1, &cnt);
		if (rc == 0)
			rc = hdqt_store_samples_pending(s, 16, 1 << 30, &X, &ids, &cls, &n);
		if (rc < 0 || cnt < last || n % 20 != 0) {
			__atomic_add_fetch(&c->errors, 1, __ATOMIC_SEQ_CST);
		} else {
			free(X);
			free(ids);
			free(cls);
			last = cnt;
			__atomic_add_fetch(&c->reads, 1, __ATOMIC_SEQ_CST);
		}
	}
	hdqt_store_close(s);
	return NULL;
}

START_TEST(test_one_writer_many_readers)
{
	mkdir_tmp();
	char p[300];
	path_in(p, sizeof(p), "conc.db");
	hdqt_store *s = open_ok(p, NULL);
	hdqt_store_class cl;
	hdqt_store_class_add(s, "c", &cl);
	hdqt_store_close(s);
	conc c = {.path = p};
	pthread_t w, r[3];
	pthread_create(&w, NULL, writer, &c);
	for (int i = 0; i < 3; i++)
		pthread_create(&r[i], NULL, reader, &c);
	struct timespec ts = {1, 500000000L};
	nanosleep(&ts, NULL);
	__atomic_store_n(&c.stop, 1, __ATOMIC_SEQ_CST);
	pthread_join(w, NULL);
	for (int i = 0; i < 3; i++)
		pthread_join(r[i], NULL);
	ck_assert_int_eq(c.errors, 0);
	ck_assert_int_gt(c.writes, 5);
	ck_assert_int_gt(c.reads, 5);
	rm_tmp();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("store");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_classes);
	tcase_add_test(tc, test_samples_and_validation);
	tcase_add_test(tc, test_exemplars_models_runs_backup);
	tcase_add_test(tc, test_backup_disk_full);
	tcase_add_test(tc, test_rejected_versions_prune_first);
	tcase_add_test(tc, test_counts_and_learned_classes);
	tcase_add_test(tc, test_exemplars_follow_rollback);
	tcase_add_test(tc, test_novelty_and_unknowns);
	tcase_add_test(tc, test_batch_id_once);
	tcase_add_test(tc, test_full_store_still_trains);
	tcase_add_test(tc, test_quarantine);
	tcase_add_test(tc, test_check_progress);
	tcase_add_test(tc, test_migration_from_v1_fixture);
	tcase_add_test(tc, test_refuses_newer_and_corrupt);
	tcase_add_test(tc, test_sigkill_keeps_acknowledged);
	tcase_add_test(tc, test_file_size_limit);
	tcase_add_test(tc, test_one_writer_many_readers);
	suite_add_tcase(s, tc);
	return testutil_run(s);
}
