/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <string.h>

#include "hdqt.h"
#include "quant.h"
#include "testutil.h"

START_TEST(test_nearest_exact_on_grid)
{
	/* Values already on the grid (max-abs 7 -> step 1) come back unchanged. */
	float x[15];
	for (int i = 0; i < 15; i++)
		x[i] = (float)(i - 7);
	int8_t q[15];
	float s;
	quant_spec sp = {.bits = 4, .clip = 1.0f};
	quant_rows(x, 1, 15, &sp, NULL, q, &s);
	ck_assert_float_eq(s, 1.0f);
	for (int i = 0; i < 15; i++)
		ck_assert_int_eq(q[i], i - 7);
}
END_TEST

START_TEST(test_nearest_rounds_and_clamps)
{
	float x[4] = {2.4f, -2.6f, 10.0f, 0.0f};
	int8_t q[4];
	float s[1];
	/* clip 0.5 of max-abs 10 -> range 5 -> step 5/7: 10 saturates at 7. */
	quant_spec sp = {.bits = 4, .clip = 0.5f};
	quant_rows(x, 1, 4, &sp, NULL, q, s);
	ck_assert_float_eq_tol(s[0], 5.0f / 7.0f, 1e-6f);
	ck_assert_int_eq(q[0], 3);  /* 2.4 / 0.714 = 3.36 */
	ck_assert_int_eq(q[1], -4); /* -3.64 */
	ck_assert_int_eq(q[2], 7);
	ck_assert_int_eq(q[3], 0);
}
END_TEST

START_TEST(test_unsigned_range)
{
	float x[3] = {0.0f, 1.5f, 3.0f};
	int8_t q[3];
	float s;
	quant_spec sp = {.bits = 4, .is_unsigned = 1, .clip = 1.0f};
	quant_rows(x, 1, 3, &sp, NULL, q, &s);
	ck_assert_float_eq_tol(s, 3.0f / 15.0f, 1e-7f);
	ck_assert_int_eq(q[2], 15);
	ck_assert_int_eq(q[1], 8); /* 7.5 rounds up */
}
END_TEST

START_TEST(test_stochastic_unbiased)
{
	/* E[Q_sr(x)] = x.  With n = 200000 draws of a value 0.3 steps above a
	 * grid point, the mean's standard error is sqrt(0.21/n) ~ 0.001; we
	 * allow 0.005 (5 sigma).  The fraction rounding up must be ~0.3. */
	enum { N = 200000 };
	static float x[N];
	static int8_t q[N];
	float s;
	for (int i = 0; i < N; i++)
		x[i] = 2.3f;
	x[0] = 7.0f; /* fixes the step at 1 */
	hdqt_rng r;
	hdqt_rng_seed(&r, 1234, 0);
	quant_spec sp = {.bits = 4, .clip = 1.0f, .stochastic = 1};
	quant_rows(x, 1, N, &sp, &r, q, &s);
	ck_assert_float_eq(s, 1.0f);
	double mean = 0;
	for (int i = 1; i < N; i++) {
		ck_assert(q[i] == 2 || q[i] == 3);
		mean += q[i];
	}
	mean /= (N - 1);
	ck_assert_double_eq_tol(mean, 2.3, 0.005);
	/* Nearest rounding is biased here: it always gives 2. */
	sp.stochastic = 0;
	quant_rows(x, 1, N, &sp, NULL, q, &s);
	ck_assert_int_eq(q[1], 2);
}
END_TEST

START_TEST(test_nearest_matches_formula_random)
{
	/* Long random rows exercise the vector path and its scalar tail; every
	 * code must equal floor(clamp(x / step) + 1/2) computed here. */
	enum { N = 1003 };
	static float x[N];
	static int8_t q[N];
	hdqt_rng r;
	hdqt_rng_seed(&r, 77, 0);
	for (int bits = 2; bits <= 8; bits++)
		for (int uns = 0; uns <= 1; uns++) {
			for (int i = 0; i < N; i++)
				x[i] = uns ? fabsf(hdqt_rng_normal(&r)) : hdqt_rng_normal(&r);
			float s;
			quant_spec sp = {.bits = bits, .is_unsigned = uns, .clip = 0.8f};
			quant_rows(x, 1, N, &sp, NULL, q, &s);
			float qmax = (float)quant_qmax(&sp), qmin = uns ? 0.0f : -qmax;
			for (int i = 0; i < N; i++) {
				float v = x[i] * (1.0f / s);
				v = v < qmin ? qmin : v > qmax ? qmax : v;
				/* unsigned 8-bit codes (to 255) are read as uint8 */
				ck_assert_int_eq(uns ? (uint8_t)q[i] : q[i], (int)floorf(v + 0.5f));
			}
		}
}
END_TEST

START_TEST(test_per_row_scales)
{
	float x[6] = {1, -2, 4, 100, 50, -25};
	int8_t q[6];
	float s[2];
	quant_spec sp = {.bits = 4, .clip = 1.0f, .per_row = 1};
	quant_rows(x, 2, 3, &sp, NULL, q, s);
	ck_assert_float_eq_tol(s[0], 4.0f / 7, 1e-6f);
	ck_assert_float_eq_tol(s[1], 100.0f / 7, 1e-5f);
	ck_assert_int_eq(q[2], 7);
	ck_assert_int_eq(q[1], -3); /* -3.5 rounds half up: floor(-3.5 + 0.5) */
}
END_TEST

START_TEST(test_sigma_clip)
{
	/* One outlier among small values: a 3-sigma range keeps resolution for
	 * the bulk, max-abs would zero it. */
	enum { N = 1024 };
	static float x[N];
	for (int i = 0; i < N; i++)
		x[i] = (i % 2) ? 0.5f : -0.5f;
	x[0] = 40.0f;
	static int8_t q[N];
	float s;
	quant_spec sp = {.bits = 4, .clip = 1.0f};
	quant_rows(x, 1, N, &sp, NULL, q, &s);
	ck_assert_int_eq(q[1], 0); /* 0.5 / (40/7) = 0.0875 -> 0 */
	sp.clip_sigma = 3.0f;
	quant_rows(x, 1, N, &sp, NULL, q, &s);
	ck_assert_int_ne(q[1], 0);
	ck_assert_int_eq(q[0], 7); /* the outlier saturates */
}
END_TEST

/* The sum of squares of the range's clip_sigma: the SIMD lanes are the
 * scalar loop's, bit for bit.  Magnitudes 1e4 apart make the double sum
 * depend on its order, so lanes taken in another order change the bits. */
START_TEST(test_sum_sq_simd_lanes)
{
	enum { NMAX = 700 };
	static float x[NMAX];
	hdqt_rng r;
	hdqt_rng_seed(&r, 78, 0);
	for (int i = 0; i < NMAX; i++)
		x[i] = hdqt_rng_normal(&r) * (i % 7 == 3 ? 1e4f : 1.0f);
	for (int n = 0; n < NMAX; n += (n < 70 ? 1 : 23)) {
		double a = quant_sum_sq(x, n, 1), b = quant_sum_sq(x, n, 0);
		ck_assert_msg(memcmp(&a, &b, sizeof(a)) == 0, "n %d: %.17g vs %.17g", n, a, b);
	}
}
END_TEST

/* The AVX2 reductions give the portable loops' range to the bit, for every
 * length (tails of 0..7) and both range rules; and the range is what its
 * definition says. */
START_TEST(test_range_simd_matches_scalar)
{
	enum { NMAX = 1100 };
	static float x[NMAX];
	hdqt_rng r;
	hdqt_rng_seed(&r, 77, 0);
	for (int i = 0; i < NMAX; i++)
		x[i] = hdqt_rng_normal(&r) * (i % 97 == 5 ? 40.0f : 1.0f);
	const quant_spec specs[] = {{.bits = 4, .clip = 0.975f}, {.bits = 4, .clip = 1.0f, .clip_sigma = 3.0f}};
	for (int si = 0; si < 2; si++)
		for (int n = 1; n < NMAX; n += (n < 40 ? 1 : 37)) {
			float a = quant_range(x, n, &specs[si], 1), b = quant_range(x, n, &specs[si], 0);
			ck_assert_msg(memcmp(&a, &b, sizeof(a)) == 0, "spec %d n %d: %.9g vs %.9g", si, n, a, b);
			double mx = 0, ss = 0;
			for (int i = 0; i < n; i++) {
				mx = fabs(x[i]) > mx ? fabs(x[i]) : mx;
				ss += (double)x[i] * x[i];
			}
			double want = si == 0 ? 0.975 * mx : fmin(mx, 3.0 * sqrt(ss / n));
			ck_assert_msg(fabs(a - want) <= 1e-5 * want, "spec %d n %d: %.9g, want %.9g", si, n, a, want);
		}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("quant");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_nearest_exact_on_grid);
	tcase_add_test(tc, test_nearest_rounds_and_clamps);
	tcase_add_test(tc, test_unsigned_range);
	tcase_add_test(tc, test_stochastic_unbiased);
	tcase_add_test(tc, test_per_row_scales);
	tcase_add_test(tc, test_nearest_matches_formula_random);
	tcase_add_test(tc, test_sigma_clip);
	tcase_add_test(tc, test_range_simd_matches_scalar);
	tcase_add_test(tc, test_sum_sq_simd_lanes);
	suite_add_tcase(s, tc);
	return testutil_run(s);
}
