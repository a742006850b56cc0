/* SPDX-License-Identifier: MIT */
/*
 * Class-incremental learning on real HAPT windows (the bundled subset:
 * train users 1, 3, 5; test users 2, 4), a reduced protocol: the six basic
 * activities in three tasks of two, 15 epochs, hdqt 4/8.  The full protocol
 * is a benchmark (README), not a test.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hdqt_data.h"
#include "testutil.h"

START_TEST(test_herding_order)
{
	/* Mean of the four points is (1, 0) after normalisation; the point
	 * closest to it must come first, and the next one must pull the
	 * running mean back towards it. */
	float emb[4 * 2] = {1, 0.1f, 1, -0.9f, 1, 0.8f, 1, 0.0f};
	int idx[4];
	ck_assert_int_eq(hdqt_herding(emb, 4, 2, 4, idx), 4);
	ck_assert_int_eq(idx[0], 3);
	int seen[4] = {0};
	for (int i = 0; i < 4; i++)
		seen[idx[i]]++;
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(seen[i], 1);
	ck_assert_int_eq(hdqt_herding(emb, 4, 2, 9, idx), 4);
}
END_TEST

START_TEST(test_memory_quota)
{
	hdqt_memory *m;
	ck_assert_int_eq(hdqt_memory_new(&m, 10, 2), 0);
	float rows[20];
	for (int i = 0; i < 20; i++)
		rows[i] = (float)i;
	ck_assert_int_eq(hdqt_memory_set_class(m, 0, rows, 5), 0);
	ck_assert_int_eq(hdqt_memory_set_class(m, 1, rows + 10, 5), 0);
	ck_assert_int_eq(hdqt_memory_size(m), 10);
	ck_assert_int_eq(hdqt_memory_set_class(m, 2, rows, 3), 0);
	hdqt_memory_rebalance(m); /* 10 / 3 = 3 per class */
	ck_assert_int_eq(hdqt_memory_size(m), 9);
	int n;
	const float *c1 = hdqt_memory_class(m, 1, &n);
	ck_assert_int_eq(n, 3);
	ck_assert_float_eq(c1[0], 10.0f); /* best-ranked kept */
	ck_assert_int_eq(hdqt_memory_set_class(m, -1, rows, 1), HDQT_EINVAL);
	hdqt_memory_free(m);
}
END_TEST

typedef struct data {
	int n, tn;
	float *X, *tX;
	int *y, *ty;
} data;

static data load(void)
{
	char dir[4096];
	const char *root = getenv("HDQT_SOURCE_ROOT");
	snprintf(dir, sizeof(dir), "%s/data/hapt-subset", root ? root : ".");
	hdqt_dataset ds;
	ck_assert_int_eq(hdqt_hapt_load(dir, 128, 64, &ds), 0);
	data d = {0};
	d.X = malloc(sizeof(float) * (size_t)ds.n * ds.d);
	d.tX = malloc(sizeof(float) * (size_t)ds.n * ds.d);
	d.y = malloc(sizeof(int) * ds.n);
	d.ty = malloc(sizeof(int) * ds.n);
	for (int i = 0; i < ds.n; i++) {
		if (ds.y[i] > 6)
			continue;
		int test = hdqt_hapt_is_test_user(ds.user[i]);
		float *dst = test ? d.tX + (size_t)d.tn * ds.d : d.X + (size_t)d.n * ds.d;
		memcpy(dst, ds.X + (size_t)i * ds.d, sizeof(float) * ds.d);
		if (test)
			d.ty[d.tn++] = ds.y[i] - 1;
		else
			d.y[d.n++] = ds.y[i] - 1;
	}
	hdqt_dataset_free(&ds);
	return d;
}

/* Three tasks {0,1}, {2,3}, {4,5}; returns final accuracy (%) on all six. */
static double run_q(const data *d, hdqt_cl_method method, const hdqt_qconfig *qc, double *nme)
{
	hdqt_mlp_config mc = {.n_in = HDQT_FEAT_DIM, .n_hidden = 2, .hidden = {128, 128}, .n_classes = 2};
	hdqt_qconfig q = *qc;
	hdqt_model *m;
	ck_assert_int_eq(hdqt_model_new(&m, &mc, &q, 7), 0);
	ck_assert_int_eq(hdqt_model_fit_norm(m, d->X, d->n, 0.0f), 0);
	hdqt_cl_config cc;
	hdqt_cl_config_default(&cc);
	cc.method = method;
	cc.epochs = 15;
	cc.batch = 64;
	cc.memory = 100;
	hdqt_cl *cl;
	ck_assert_int_eq(hdqt_cl_new(&cl, m, &cc), 0);
	float *X = malloc(sizeof(float) * (size_t)d->n * HDQT_FEAT_DIM);
	int *y = malloc(sizeof(int) * d->n);
	for (int t = 0; t < 3; t++) {
		int k = 0;
		for (int i = 0; i < d->n; i++)
			if (d->y[i] / 2 == t) {
				memcpy(X + (size_t)k * HDQT_FEAT_DIM, d->X + (size_t)i * HDQT_FEAT_DIM,
				       sizeof(float) * HDQT_FEAT_DIM);
				y[k++] = d->y[i];
			}
		ck_assert_int_eq(hdqt_cl_learn(cl, X, y, k, 2 * t + 2, NULL, NULL), 0);
	}
	int *pred = malloc(sizeof(int) * d->tn);
	ck_assert_int_eq(hdqt_model_predict(hdqt_cl_model(cl), d->tX, d->tn, pred), 0);
	int ok = 0;
	for (int i = 0; i < d->tn; i++)
		ok += pred[i] == d->ty[i];
	if (nme) {
		int rc = hdqt_cl_predict_nme(cl, d->tX, d->tn, pred);
		ck_assert_int_eq(rc, 0);
		int okn = 0;
		for (int i = 0; i < d->tn; i++)
			okn += pred[i] == d->ty[i];
		*nme = 100.0 * okn / d->tn;
	}
	if (method == HDQT_CL_ICARL || method == HDQT_CL_ER)
		ck_assert_int_le(hdqt_memory_size(hdqt_cl_memory(cl)), 100);
	free(pred);
	free(X);
	free(y);
	hdqt_cl_free(cl);
	return 100.0 * ok / d->tn;
}

static double run(const data *d, hdqt_cl_method method, hdqt_mode mode, double *nme)
{
	hdqt_qconfig q;
	hdqt_qconfig_default(&q, mode);
	return run_q(d, method, &q, nme);
}

/* A class that got no exemplars (announced, never given samples) is
 * skipped by export; the others keep their labels. */
START_TEST(test_memory_export_with_empty_class)
{
	hdqt_memory *m = NULL;
	ck_assert_int_eq(hdqt_memory_new(&m, 10, 2), 0);
	const float a[4] = {1, 2, 3, 4}, c[2] = {5, 6};
	ck_assert_int_eq(hdqt_memory_set_class(m, 0, a, 2), 0);
	ck_assert_int_eq(hdqt_memory_set_class(m, 1, NULL, 0), 0);
	ck_assert_int_eq(hdqt_memory_set_class(m, 2, c, 1), 0);
	float X[6] = {0};
	int y[3] = {-1, -1, -1};
	ck_assert_int_eq(hdqt_memory_export(m, X, y), 3);
	const float want[6] = {1, 2, 3, 4, 5, 6};
	ck_assert_mem_eq(X, want, sizeof(want));
	ck_assert_int_eq(y[0], 0);
	ck_assert_int_eq(y[1], 0);
	ck_assert_int_eq(y[2], 2);
	hdqt_memory_free(m);
}
END_TEST

START_TEST(test_replay_beats_finetune)
{
	data d = load();
	ck_assert_int_gt(d.n, 500);
	ck_assert_int_gt(d.tn, 300);
	double nme;
	double ft = run(&d, HDQT_CL_FINETUNE, HDQT_MODE_HDQT, NULL);
	double er = run(&d, HDQT_CL_ER, HDQT_MODE_HDQT, NULL);
	double ic = run(&d, HDQT_CL_ICARL, HDQT_MODE_HDQT, &nme);
	fprintf(stderr, "reduced protocol (hdqt 4/8): finetune %.1f%%, er %.1f%%, icarl %.1f%% (nme %.1f%%)\n",
		ft, er, ic, nme);
	/* Chance is 16.7%.  Replay must be well above it and well above
	 * fine-tuning, which forgets most of the first four classes. */
	ck_assert_double_gt(er, 60.0);
	ck_assert_double_gt(ic, 60.0);
	ck_assert_double_gt(nme, 60.0);
	ck_assert_double_gt(er, ft + 20.0);
	ck_assert_double_gt(ic, ft + 20.0);
	free(d.X);
	free(d.tX);
	free(d.y);
	free(d.ty);
}
END_TEST

/* The paper's recipe and its no-Hadamard ablation learn the reduced
 * protocol too (they lose several points to hdqt on the full one). */
START_TEST(test_paper_recipes_learn)
{
	data d = load();
	const hdqt_mode modes[] = {HDQT_MODE_HDQT_PAPER, HDQT_MODE_INT};
	for (int i = 0; i < 2; i++) {
		hdqt_qconfig q;
		hdqt_qconfig_default(&q, modes[i]);
		double nme, ic = run_q(&d, HDQT_CL_ICARL, &q, &nme);
		fprintf(stderr, "reduced protocol (%s): icarl %.1f%% (nme %.1f%%)\n",
			hdqt_mode_name(modes[i]), ic, nme);
		/* measured 73-76% (NME 77-78%); chance is 16.7% */
		ck_assert_double_gt(ic, 60.0);
		ck_assert_double_gt(nme, 60.0);
	}
	free(d.X);
	free(d.tX);
	free(d.y);
	free(d.ty);
}
END_TEST

START_TEST(test_bad_calls)
{
	hdqt_mlp_config mc = {.n_in = 4, .n_hidden = 1, .hidden = {8}, .n_classes = 2};
	hdqt_qconfig q;
	hdqt_qconfig_default(&q, HDQT_MODE_HDQT);
	hdqt_model *m;
	ck_assert_int_eq(hdqt_model_new(&m, &mc, &q, 1), 0);
	hdqt_cl_config cc;
	hdqt_cl_config_default(&cc);
	cc.batch = 0;
	hdqt_cl *cl;
	ck_assert_int_eq(hdqt_cl_new(&cl, m, &cc), HDQT_EINVAL);
	cc.batch = 8;
	cc.epochs = 1;
	ck_assert_int_eq(hdqt_cl_new(&cl, m, &cc), 0);
	float X[8] = {0};
	int y[2] = {0, 3};
	ck_assert_int_eq(hdqt_cl_learn(cl, X, y, 2, 2, NULL, NULL), HDQT_EINVAL); /* label 3 >= 2 */
	ck_assert_int_eq(hdqt_cl_predict_nme(cl, X, 2, y), HDQT_ESTATE);       /* nothing learned */
	hdqt_cl_method md;
	ck_assert_int_eq(hdqt_cl_method_parse("icarl", &md), 0);
	ck_assert_int_eq(hdqt_cl_method_parse("ewc", &md), HDQT_EINVAL);
	hdqt_cl_free(cl);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cl");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 900);
	tcase_add_test(tc, test_herding_order);
	tcase_add_test(tc, test_memory_quota);
	tcase_add_test(tc, test_memory_export_with_empty_class);
	tcase_add_test(tc, test_bad_calls);
	tcase_add_test(tc, test_replay_beats_finetune);
	tcase_add_test(tc, test_paper_recipes_learn);
	suite_add_tcase(s, tc);
	return testutil_run(s);
}
