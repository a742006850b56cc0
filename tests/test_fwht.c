/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <string.h>

#include "fwht.h"
#include "hdqt.h"
#include "simd.h"
#include "testutil.h"

/* Dense Sylvester entry H_n[i][j] = (-1)^popcount(i & j). */
static float sylvester(int i, int j)
{
	return (__builtin_popcount((unsigned)(i & j)) & 1) ? -1.0f : 1.0f;
}

START_TEST(test_fwht_equals_dense)
{
	hdqt_rng r;
	hdqt_rng_seed(&r, 42, 0);
	const int len = 96, blk = 32, rows = 3; /* three blocks of 32 per row */
	float x[3 * 96], y[3 * 96], ref[3 * 96];
	for (int i = 0; i < rows * len; i++)
		x[i] = hdqt_rng_normal(&r);
	memcpy(y, x, sizeof(x));
	fwht_rows(y, rows, len, blk);
	for (int row = 0; row < rows; row++)
		for (int b0 = 0; b0 < len; b0 += blk)
			for (int i = 0; i < blk; i++) {
				double s = 0;
				for (int j = 0; j < blk; j++)
					s += sylvester(i, j) * x[row * len + b0 + j];
				ref[row * len + b0 + i] = (float)s;
			}
	for (int i = 0; i < rows * len; i++)
		ck_assert_float_eq_tol(y[i], ref[i], 1e-4f);
}
END_TEST

START_TEST(test_fwht_involution)
{
	/* H.H = nI: applying twice multiplies by the block size. */
	hdqt_rng r;
	hdqt_rng_seed(&r, 7, 0);
	float x[256], y[256];
	for (int i = 0; i < 256; i++)
		x[i] = hdqt_rng_normal(&r);
	memcpy(y, x, sizeof(x));
	fwht_rows(y, 1, 256, 64);
	fwht_rows(y, 1, 256, 64);
	for (int i = 0; i < 256; i++)
		ck_assert_float_eq_tol(y[i], 64.0f * x[i], 1e-3f);
}
END_TEST

START_TEST(test_fwht_cols_matches_rows)
{
	hdqt_rng r;
	hdqt_rng_seed(&r, 9, 0);
	enum { L = 16, C = 5 };
	float a[L * C], t[C * L];
	for (int i = 0; i < L * C; i++)
		a[i] = hdqt_rng_normal(&r);
	for (int i = 0; i < L; i++)
		for (int c = 0; c < C; c++)
			t[c * L + i] = a[i * C + c];
	fwht_cols(a, L, C, 8);
	fwht_rows(t, C, L, 8);
	for (int i = 0; i < L; i++)
		for (int c = 0; c < C; c++)
			ck_assert_float_eq_tol(a[i * C + c], t[c * L + i], 1e-5f);
}
END_TEST

START_TEST(test_fwht_fast_equals_reference)
{
	/* Whatever path fwht_rows takes on this CPU gives the reference's
	 * floats exactly, for every block size. */
	hdqt_rng r;
	hdqt_rng_seed(&r, 11, 0);
	enum { R = 5, L = 512 };
	static float a[R * L], b[R * L];
	for (int blk = 1; blk <= 512; blk *= 2) {
		for (int i = 0; i < R * L; i++)
			a[i] = b[i] = hdqt_rng_normal(&r) * 100.0f;
		fwht_rows(a, R, L, blk);
		fwht_rows_ref(b, R, L, blk);
		ck_assert_mem_eq(a, b, sizeof(a));
	}
}
END_TEST

/* The strips of the column path: fwht_strip16 (AVX-512 where the CPU has
 * it, AVX2 under the avx2 cap of lib/simd.h), its portable loops and
 * fwht_cols give the same floats, for blocks from 1 to 256 (AVX-512 and
 * AVX2: trips of four stages, the last of four, three, two or one). */
START_TEST(test_fwht_strip16)
{
	const int cap0 = simd_cap();
	for (int cap = SIMD_AVX512; cap >= SIMD_BASELINE; cap--) {
		simd_cap_select(cap);
		hdqt_rng r;
		hdqt_rng_seed(&r, 16, 0);
		const int cases[][2] = {{8, 1}, {8, 2}, {12, 4}, {16, 8}, {32, 16}, {64, 32}, {128, 64},
					{128, 128}, {512, 256}, {1024, 256}};
		for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
			const int len = cases[k][0], blk = cases[k][1];
			float *a = malloc(sizeof(float) * 16 * len), *b = malloc(sizeof(float) * 16 * len);
			float *c = malloc(sizeof(float) * 16 * len);
			for (int i = 0; i < 16 * len; i++)
				a[i] = b[i] = c[i] = hdqt_rng_normal(&r);
			fwht_strip16(a, len, blk);
			fwht_strip16_ref(b, len, blk);
			fwht_cols(c, len, 16, blk);
			ck_assert_mem_eq(a, c, sizeof(float) * 16 * len);
			ck_assert_mem_eq(b, c, sizeof(float) * 16 * len);
			free(a), free(b), free(c);
		}
	}
	simd_cap_select(cap0);
}
END_TEST

START_TEST(test_fwht_block_size)
{
	ck_assert_int_eq(fwht_block(512, 256), 256);
	ck_assert_int_eq(fwht_block(166, 256), 2);
	ck_assert_int_eq(fwht_block(12, 256), 4);
	ck_assert_int_eq(fwht_block(37, 256), 1);
	ck_assert_int_eq(fwht_block(128, 64), 64);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fwht");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_fwht_equals_dense);
	tcase_add_test(tc, test_fwht_involution);
	tcase_add_test(tc, test_fwht_cols_matches_rows);
	tcase_add_test(tc, test_fwht_block_size);
	tcase_add_test(tc, test_fwht_strip16);
	tcase_add_test(tc, test_fwht_fast_equals_reference);
	suite_add_tcase(s, tc);
	return testutil_run(s);
}
