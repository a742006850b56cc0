/* SPDX-License-Identifier: MIT */
/*
 * Open-set scores and their calibration (lib/novelty.c) on a small model
 * and synthetic data whose answers are known: AUROC against hand-counted
 * cases, the calibrated rate on the calibration data itself, the three
 * scores' definitions, and a blob that survives saving and refuses damage.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hdqt_novelty.h"
#include "testutil.h"

START_TEST(test_auroc)
{
	const float pos[] = {3, 4, 5}, neg[] = {0, 1, 2};
	ck_assert_double_eq(hdqt_auroc(pos, 3, neg, 3), 1.0);
	ck_assert_double_eq(hdqt_auroc(neg, 3, pos, 3), 0.0);
	const float a[] = {1, 1}, b[] = {1, 1};
	ck_assert_double_eq(hdqt_auroc(a, 2, b, 2), 0.5); /* ties count one half */
	/* pos {2, 4} vs neg {1, 3}: pairs won (2>1), (4>1), (4>3); lost (2<3): 3/4 */
	const float p2[] = {2, 4}, n2[] = {3, 1};
	ck_assert_double_eq(hdqt_auroc(p2, 2, n2, 2), 0.75);
	ck_assert(isnan(hdqt_auroc(p2, 0, n2, 2)));
}
END_TEST

/* Two known classes as tight clusters in 8 features, trained a little so
 * the model separates them; "unknown" rows come from a third place. */
#define D 8
static void make(float *X, int *y, int n, int cls, unsigned seed)
{
	hdqt_rng r;
	hdqt_rng_seed(&r, seed, 0);
	for (int i = 0; i < n; i++) {
		for (int j = 0; j < D; j++)
			X[i * D + j] = 0.3f * hdqt_rng_normal(&r);
		X[i * D + cls] += 4.0f; /* class c sits at 4 e_c */
		if (y)
			y[i] = cls;
	}
}

static hdqt_model *trained(hdqt_memory **mem, hdqt_mode mode)
{
	hdqt_mlp_config mc = {.n_in = D, .n_hidden = 1, .hidden = {32}, .n_classes = 2};
	hdqt_qconfig q;
	hdqt_qconfig_default(&q, mode);
	hdqt_model *m;
	ck_assert_int_eq(hdqt_model_new(&m, &mc, &q, 7), 0);
	float X[400 * D];
	int y[400];
	make(X, y, 200, 0, 1);
	make(X + 200 * D, y + 200, 200, 1, 2);
	ck_assert_int_eq(hdqt_model_fit_norm(m, X, 400, 0), 0);
	hdqt_sgd o;
	hdqt_sgd_default(&o);
	for (int ep = 0; ep < 30; ep++) {
		hdqt_batch b = {.X = X, .y = y, .n = 400};
		float loss;
		ck_assert_int_eq(hdqt_model_train_step(m, &b, &o, 0.05f, &loss), 0);
	}
	ck_assert_int_eq(hdqt_memory_new(mem, 40, D), 0);
	ck_assert_int_eq(hdqt_memory_set_class(*mem, 0, X, 20), 0);
	ck_assert_int_eq(hdqt_memory_set_class(*mem, 1, X + 200 * D, 20), 0);
	return m;
}

START_TEST(test_calibrated_rate_and_separation)
{
	static const hdqt_mode modes[] = {HDQT_MODE_FP32, HDQT_MODE_HDQT};
	hdqt_memory *mem;
	hdqt_model *m = trained(&mem, modes[_i]);
	/* calibration rows: fresh draws of the known classes */
	float V[600 * D], U[200 * D];
	make(V, NULL, 300, 0, 11);
	make(V + 300 * D, NULL, 300, 1, 12);
	make(U, NULL, 200, 5, 13); /* a place no class is */
	for (int k = 0; k < HDQT_NOVELTY_COUNT; k++) {
		hdqt_novelty *nv;
		ck_assert_int_eq(hdqt_novelty_fit(&nv, m, mem, 2, V, 600, (hdqt_novelty_kind)k, 0.1f), 0);
		ck_assert_int_eq(hdqt_novelty_classes(nv), 2);
		ck_assert_int_eq(hdqt_novelty_calib_count(nv, 0) + hdqt_novelty_calib_count(nv, 1), 600);
		int unk[600];
		float s[600];
		ck_assert_int_eq(hdqt_novelty_score(nv, m, V, 600, NULL, s, unk), 0);
		int flagged = 0;
		for (int i = 0; i < 600; i++)
			flagged += unk[i];
		/* per class the conformal threshold leaves k - ceil((k+1) 0.9) above
		 * it: 29 of 300 (ties aside) */
		ck_assert_int_le(flagged, 60);
		ck_assert_int_ge(flagged, 50);
		float su[200];
		ck_assert_int_eq(hdqt_novelty_score(nv, m, U, 200, NULL, su, NULL), 0);
		const double auc = hdqt_auroc(su, 200, s, 600);
		if (k == HDQT_NOVELTY_NME || k == HDQT_NOVELTY_KNN)
			ck_assert_double_gt(auc, 0.95); /* a far-away cluster is obvious in the embedding */
		hdqt_novelty_free(nv);
	}
	hdqt_model_free(m);
	hdqt_memory_free(mem);
}
END_TEST

START_TEST(test_score_definitions)
{
	hdqt_memory *mem;
	hdqt_model *m = trained(&mem, HDQT_MODE_FP32);
	float V[100 * D];
	make(V, NULL, 100, 0, 21);
	const int C = 2, e = hdqt_model_embed_dim(m);
	float lg[C], emb[32], l2[C], e2[32];
	ck_assert_int_eq(hdqt_model_forward_embed(m, V, 1, lg, emb), 0);
	ck_assert_int_eq(hdqt_model_forward(m, V, 1, l2), 0);
	ck_assert_int_eq(hdqt_model_embed(m, V, 1, e2), 0);
	ck_assert_mem_eq(lg, l2, sizeof(lg)); /* one pass, the same floats */
	ck_assert_mem_eq(emb, e2, sizeof(float) * e);
	hdqt_novelty *nv;
	ck_assert_int_eq(hdqt_novelty_fit(&nv, m, mem, C, V, 100, HDQT_NOVELTY_ENERGY, 0.05f), 0);
	const double mx = fmax(lg[0], lg[1]);
	const double energy = -(mx + log(exp(lg[0] - mx) + exp(lg[1] - mx)));
	ck_assert_double_eq_tol(hdqt_novelty_score1(nv, lg, NULL, 0, NULL), energy, 1e-5);
	/* every calibration keeps the known classes' centre (hdqtd groups by it) */
	const float *c0 = hdqt_novelty_centre(nv);
	double cn = 0;
	for (int j = 0; j < e; j++)
		cn += (double)c0[j] * c0[j];
	ck_assert(cn > 0.1 && cn <= 1.0 + 1e-5); /* a mean of unit vectors */
	hdqt_novelty_free(nv);
	ck_assert_int_eq(hdqt_novelty_fit(&nv, m, mem, C, V, 100, HDQT_NOVELTY_MSP, 0.05f), 0);
	const double pmax = 1.0 / (1.0 + exp(-fabs((double)lg[0] - lg[1])));
	ck_assert_double_eq_tol(hdqt_novelty_score1(nv, lg, NULL, 0, NULL), 1.0 - pmax, 1e-5);
	hdqt_novelty_free(nv);
	/* NME: 1 - cosine to the nearest class mean, in [0, 2]; the class
	 * means' centre is 1 - cos away from both of them at most */
	ck_assert_int_eq(hdqt_novelty_fit(&nv, m, mem, C, V, 100, HDQT_NOVELTY_NME, 0.05f), 0);
	const float sc = hdqt_novelty_score1(nv, lg, hdqt_novelty_centre(nv), 0, NULL);
	ck_assert(sc >= 0.0f && sc < 0.5f);
	const float se = hdqt_novelty_score1(nv, lg, emb, 0, NULL);
	ck_assert(se >= 0.0f && se <= 2.0f);
	float zero[32] = {0};
	int unk;
	ck_assert_float_eq(hdqt_novelty_score1(nv, lg, zero, 0, &unk), 2.0f); /* every unit off */
	ck_assert_int_eq(unk, 1);
	hdqt_novelty_free(nv);
	/* an empty memory has no means: NME cannot be calibrated */
	hdqt_memory *empty;
	ck_assert_int_eq(hdqt_memory_new(&empty, 10, D), 0);
	ck_assert_int_eq(hdqt_novelty_fit(&nv, m, empty, C, V, 100, HDQT_NOVELTY_NME, 0.05f), HDQT_ESTATE);
	ck_assert_int_eq(hdqt_novelty_fit(&nv, m, empty, C, V, 100, HDQT_NOVELTY_KNN, 0.05f), HDQT_ESTATE);
	ck_assert_int_eq(hdqt_novelty_fit(&nv, m, mem, C, V, 100, HDQT_NOVELTY_NME, 0.0f), HDQT_EINVAL);
	ck_assert_int_eq(hdqt_novelty_fit(&nv, m, mem, C, V, 100, HDQT_NOVELTY_NME, 1.0f), HDQT_EINVAL);
	ck_assert_int_eq(hdqt_novelty_fit(&nv, m, mem, 3, V, 100, HDQT_NOVELTY_NME, 0.05f), HDQT_EINVAL);
	V[3] = NAN;
	ck_assert_int_eq(hdqt_novelty_fit(&nv, m, mem, C, V, 100, HDQT_NOVELTY_NME, 0.05f), HDQT_ERANGE);
	hdqt_memory_free(empty);
	hdqt_model_free(m);
	hdqt_memory_free(mem);
}
END_TEST

START_TEST(test_blob_round_trip_and_damage)
{
	static const hdqt_novelty_kind kinds[] = {HDQT_NOVELTY_NME, HDQT_NOVELTY_KNN, HDQT_NOVELTY_ENERGY};
	hdqt_memory *mem;
	hdqt_model *m = trained(&mem, HDQT_MODE_HDQT);
	float V[200 * D];
	make(V, NULL, 100, 0, 31);
	make(V + 100 * D, NULL, 100, 1, 32);
	hdqt_novelty *nv, *back;
	ck_assert_int_eq(hdqt_novelty_fit(&nv, m, mem, 2, V, 200, kinds[_i], 0.05f), 0);
	ck_assert_int_eq(hdqt_novelty_get_kind(nv), kinds[_i]);
	uint8_t *blob;
	size_t len;
	ck_assert_int_eq(hdqt_novelty_save(nv, &blob, &len), 0);
	ck_assert_int_eq(hdqt_novelty_load(blob, len, &back), 0);
	float s1[200], s2[200];
	int u1[200], u2[200];
	ck_assert_int_eq(hdqt_novelty_score(nv, m, V, 200, NULL, s1, u1), 0);
	ck_assert_int_eq(hdqt_novelty_score(back, m, V, 200, NULL, s2, u2), 0);
	ck_assert_mem_eq(s1, s2, sizeof(s1));
	ck_assert_mem_eq(u1, u2, sizeof(u1));
	for (int c = -1; c < 2; c++)
		ck_assert_float_eq(hdqt_novelty_threshold(nv, c), hdqt_novelty_threshold(back, c));
	hdqt_novelty_free(back);
	/* every flipped byte and every truncation is refused */
	for (size_t i = 0; i < len; i += 7) {
		blob[i] ^= 0x40;
		ck_assert_int_ne(hdqt_novelty_load(blob, len, &back), 0);
		blob[i] ^= 0x40;
	}
	for (size_t n = 0; n < len; n += 13)
		ck_assert_int_ne(hdqt_novelty_load(blob, n, &back), 0);
	/* a model whose embedding differs is refused by score */
	hdqt_mlp_config mc = {.n_in = D, .n_hidden = 1, .hidden = {16}, .n_classes = 2};
	hdqt_qconfig q;
	hdqt_qconfig_default(&q, HDQT_MODE_FP32);
	hdqt_model *other;
	ck_assert_int_eq(hdqt_model_new(&other, &mc, &q, 1), 0);
	ck_assert_int_eq(hdqt_novelty_score(nv, other, V, 1, NULL, s1, NULL), HDQT_EINVAL);
	hdqt_model_free(other);
	free(blob);
	hdqt_novelty_free(nv);
	hdqt_model_free(m);
	hdqt_memory_free(mem);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("novelty");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_auroc);
	tcase_add_loop_test(tc, test_calibrated_rate_and_separation, 0, 2);
	tcase_add_test(tc, test_score_definitions);
	tcase_add_loop_test(tc, test_blob_round_trip_and_damage, 0, 3);
	suite_add_tcase(s, tc);
	return testutil_run(s);
}
