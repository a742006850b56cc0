/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hdqt_data.h"
#include "testutil.h"

static const char *subset_dir(void)
{
	static char buf[4096];
	const char *root = getenv("HDQT_SOURCE_ROOT");
	snprintf(buf, sizeof(buf), "%s/data/hapt-subset", root ? root : ".");
	return buf;
}

START_TEST(test_names_unique_and_complete)
{
	char a[64], b[64];
	ck_assert_int_eq(HDQT_FEAT_DIM, 166);
	for (int i = 0; i < HDQT_FEAT_DIM; i++) {
		ck_assert_ptr_nonnull(hdqt_feat_name(i, a, sizeof(a)));
		for (int j = i + 1; j < HDQT_FEAT_DIM; j++) {
			hdqt_feat_name(j, b, sizeof(b));
			ck_assert_str_ne(a, b);
		}
	}
	ck_assert_ptr_null(hdqt_feat_name(166, a, sizeof(a)));
	ck_assert_str_eq(hdqt_feat_name(0, a, sizeof(a)), "ax_mean");
	ck_assert_str_eq(hdqt_feat_name(19, a, sizeof(a)), "ax_dombin");
	ck_assert_str_eq(hdqt_feat_name(165, a, sizeof(a)), "gyro_corr_yz");
}
END_TEST

START_TEST(test_known_signals)
{
	/* ax: sine with 8 cycles per window -> dominant rFFT bin 8 of 64;
	 * ay = -ax (correlation -1), az = 2 ax (correlation 1); gyro constant. */
	enum { W = 128 };
	float rows[W * 6];
	for (int i = 0; i < W; i++) {
		float s = sinf(2.0f * (float)M_PI * 8.0f * i / W);
		rows[i * 6 + 0] = s;
		rows[i * 6 + 1] = -s;
		rows[i * 6 + 2] = 2.0f * s + 1.0f;
		rows[i * 6 + 3] = 0.5f;
		rows[i * 6 + 4] = 0.5f;
		rows[i * 6 + 5] = 0.5f;
	}
	hdqt_feat *f;
	ck_assert_int_eq(hdqt_feat_new(&f, W), 0);
	float o[HDQT_FEAT_DIM];
	ck_assert_int_eq(hdqt_feat_extract(f, rows, o), 0);
	ck_assert_float_eq_tol(o[0], 0.0f, 1e-5f);                  /* mean */
	ck_assert_float_eq_tol(o[1], sqrtf(0.5f), 1e-4f);           /* std of a sine */
	ck_assert_float_eq_tol(o[3], 1.0f, 1e-3f);                  /* max */
	ck_assert_float_eq_tol(o[7], 0.5f, 1e-4f);                  /* mean square */
	ck_assert_float_eq_tol(o[19], 8.0f / 64.0f, 1e-6f);         /* dominant bin */
	ck_assert_float_eq_tol(o[10], 16.0f / 127.0f, 0.02f);       /* 16 zero crossings */
	/* Band 1 (bins 9..16) holds bin 8? No: bands are 1..8, 9..16; bin 8 is band 0. */
	ck_assert_float_gt(o[11], o[12] + 5.0f);
	ck_assert_float_eq_tol(o[40 + 0], 1.0f, 1e-5f);             /* az mean = 1 */
	ck_assert_float_eq_tol(o[160], -1.0f, 1e-5f);               /* corr(ax, ay) */
	ck_assert_float_eq_tol(o[161], 1.0f, 1e-5f);                /* corr(ax, az) */
	/* Constant gyro: zero spread and shape, correlations defined as 0. */
	ck_assert_float_eq(o[60 + 1], 0.0f);
	ck_assert_float_eq(o[60 + 8], 0.0f);
	ck_assert_float_eq(o[60 + 10], 0.0f);
	ck_assert_float_eq(o[163], 0.0f);
	/* |gyro| = sqrt(3 * 0.25) */
	ck_assert_float_eq_tol(o[140], sqrtf(0.75f), 1e-5f);
	rows[5] = NAN;
	ck_assert_int_eq(hdqt_feat_extract(f, rows, o), HDQT_ERANGE);
	rows[5] = 1e9f;
	ck_assert_int_eq(hdqt_feat_extract(f, rows, o), HDQT_ERANGE);
	hdqt_feat_free(f);
	ck_assert_int_eq(hdqt_feat_new(&f, 127), HDQT_EINVAL);
	ck_assert_int_eq(hdqt_feat_new(&f, 8), HDQT_EINVAL);
}
END_TEST

START_TEST(test_window_count)
{
	ck_assert_int_eq(hdqt_feat_count_windows(127, 128, 64), 0);
	ck_assert_int_eq(hdqt_feat_count_windows(128, 128, 64), 1);
	ck_assert_int_eq(hdqt_feat_count_windows(191, 128, 64), 1);
	ck_assert_int_eq(hdqt_feat_count_windows(192, 128, 64), 2);
}
END_TEST

START_TEST(test_hapt_subset_windows)
{
	/* Expected windows computed from labels.csv here, independently of the
	 * loader: experiments 1..10 only, 1-based inclusive segments. */
	char path[4200];
	snprintf(path, sizeof(path), "%s/labels.csv", subset_dir());
	FILE *fp = fopen(path, "r");
	ck_assert_ptr_nonnull(fp);
	char line[256];
	int expect = 0, per_act[13] = {0};
	while (fgets(line, sizeof(line), fp)) {
		int e, u, a, s, t;
		if (sscanf(line, "%d,%d,%d,%d,%d", &e, &u, &a, &s, &t) != 5 || e > 10)
			continue;
		int L = t - s + 1, w = L < 128 ? 0 : (L - 128) / 64 + 1;
		expect += w;
		per_act[a] += w;
	}
	fclose(fp);
	hdqt_dataset ds;
	ck_assert_int_eq(hdqt_hapt_load(subset_dir(), 128, 64, &ds), 0);
	ck_assert_int_eq(ds.n, expect);
	ck_assert_int_eq(ds.d, HDQT_FEAT_DIM);
	int got[13] = {0}, test_users = 0;
	for (int i = 0; i < ds.n; i++) {
		ck_assert(ds.y[i] >= 1 && ds.y[i] <= 12);
		got[ds.y[i]]++;
		test_users += hdqt_hapt_is_test_user(ds.user[i]);
		for (int j = 0; j < ds.d; j++)
			ck_assert(isfinite(ds.X[(size_t)i * ds.d + j]));
	}
	for (int a = 1; a <= 12; a++)
		ck_assert_int_eq(got[a], per_act[a]);
	ck_assert_int_gt(test_users, 0);
	ck_assert_int_lt(test_users, ds.n);
	hdqt_dataset_free(&ds);
	ck_assert_int_eq(hdqt_hapt_load("/nonexistent", 128, 64, &ds), HDQT_EIO);
}
END_TEST

static int write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	fputs(text, f);
	return fclose(f);
}

START_TEST(test_csv)
{
	char path[] = "/tmp/hdqt-test-XXXXXX";
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	close(fd);
	hdqt_dataset ds;
	ck_assert_int_eq(write_file(path, "label,user,f0,f1\n3,2,0.5,-1e-3\n4,7,1,2\n"), 0);
	ck_assert_int_eq(hdqt_csv_load(path, &ds), 0);
	ck_assert_int_eq(ds.n, 2);
	ck_assert_int_eq(ds.d, 2);
	ck_assert_int_eq(ds.y[1], 4);
	ck_assert_int_eq(ds.user[0], 2);
	ck_assert_float_eq_tol(ds.X[1], -1e-3f, 1e-9f);
	hdqt_dataset_free(&ds);
	const char *bad[] = {
		"label,user,f0,f1\n3,2,0.5\n",        /* short row */
		"label,user,f0,f1\n3,2,0.5,x\n",      /* junk */
		"label,user,f0,f1\n3,2,0.5,nan\n",    /* NaN */
		"label,user,f0,f1\n3.5,2,0.5,1\n",    /* non-integer label */
		"label,user,f0,f1\n",                 /* empty */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_eq(write_file(path, bad[i]), 0);
		int rc = hdqt_csv_load(path, &ds);
		ck_assert_msg(rc == HDQT_EFORMAT || rc == HDQT_ERANGE, "case %zu rc %d", i, rc);
	}
	unlink(path);
	ck_assert_int_eq(hdqt_csv_load("/nonexistent.csv", &ds), HDQT_EIO);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("features");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_names_unique_and_complete);
	tcase_add_test(tc, test_known_signals);
	tcase_add_test(tc, test_window_count);
	tcase_add_test(tc, test_hapt_subset_windows);
	tcase_add_test(tc, test_csv);
	suite_add_tcase(s, tc);
	return testutil_run(s);
}
