/* SPDX-License-Identifier: MIT */
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "hdqt.h"
#include "testutil.h"

static void fill(int8_t *x, int n, int lo, int hi, hdqt_rng *r)
{
	for (int i = 0; i < n; i++)
		x[i] = (int8_t)(lo + (int)hdqt_rng_below(r, (uint32_t)(hi - lo + 1)));
}

/* Naive definition, written independently of gemm_q_ref. */
static int32_t naive(const int8_t *A, const int8_t *B, int i, int j, int K, int tile, int acc)
{
	long lo = -(1L << (acc - 1)), hi = (1L << (acc - 1)) - 1;
	long total = 0;
	int t = tile == 0 || tile > K ? K : tile;
	for (int k0 = 0; k0 < K; k0 += t) {
		long s = 0;
		for (int k = k0; k < K && k < k0 + t; k++)
			s += A[i * K + k] * B[j * K + k];
		total += s < lo ? lo : s > hi ? hi : s;
	}
	return (int32_t)total;
}

START_TEST(test_ref_matches_naive_random_shapes)
{
	hdqt_rng r;
	hdqt_rng_seed(&r, 99, 0);
	const int Ks[] = {1, 3, 31, 32, 33, 100, 166, 257};
	for (int it = 0; it < 40; it++) {
		int I = 1 + (int)hdqt_rng_below(&r, 20), J = 1 + (int)hdqt_rng_below(&r, 40);
		int K = Ks[it % 8];
		int tile = (int)hdqt_rng_below(&r, 3) == 0 ? 0 : 1 + (int)hdqt_rng_below(&r, 40);
		gemm_params p = {.tile = tile, .acc_bits = 8, .bits = 4, .a_signed = it & 1};
		int8_t *A = malloc((size_t)I * K), *B = malloc((size_t)J * K);
		int32_t *C = malloc(sizeof(int32_t) * I * J);
		fill(A, I * K, p.a_signed ? -7 : 0, p.a_signed ? 7 : 15, &r);
		fill(B, J * K, -7, 7, &r);
		ck_assert_int_eq(gemm_q_ref(A, B, I, J, K, &p, C), 0);
		for (int i = 0; i < I; i++)
			for (int j = 0; j < J; j++)
				ck_assert_int_eq(C[i * J + j], naive(A, B, i, j, K, tile, 8));
		free(A);
		free(B);
		free(C);
	}
}
END_TEST

START_TEST(test_clamp_triggers)
{
	/* 32 products of 15 * 7 = 105 each: one tile sums to 3360 and must clamp
	 * to 127 with an 8-bit accumulator; tiles of 1 never clamp. */
	int8_t A[32], B[32];
	memset(A, 15, sizeof(A));
	memset(B, 7, sizeof(B));
	int32_t C;
	gemm_params p = {.tile = 32, .acc_bits = 8, .bits = 4, .a_signed = 0};
	gemm_q_ref(A, B, 1, 1, 32, &p, &C);
	ck_assert_int_eq(C, 127);
	ck_assert_int_eq(gemm_q_ref_count_clamped(A, B, 1, 1, 32, &p), 1);
	p.tile = 1;
	gemm_q_ref(A, B, 1, 1, 32, &p, &C);
	ck_assert_int_eq(C, 32 * 105);
	ck_assert_int_eq(gemm_q_ref_count_clamped(A, B, 1, 1, 32, &p), 0);
	/* Negative side: -128. */
	memset(B, -7, sizeof(B));
	p.tile = 32;
	gemm_q_ref(A, B, 1, 1, 32, &p, &C);
	ck_assert_int_eq(C, -128);
	/* 16-bit accumulators hold it. */
	p.acc_bits = 16;
	gemm_q_ref(A, B, 1, 1, 32, &p, &C);
	ck_assert_int_eq(C, -3360);
}
END_TEST

START_TEST(test_overflow_rejected)
{
	int8_t A[4] = {0}, B[4] = {0};
	int32_t C;
	gemm_params p = {.tile = 1, .acc_bits = 24, .bits = 4};
	/* 4 tiles * 2^23 fits; 300 tiles would not. */
	ck_assert_int_eq(gemm_q_ref(A, B, 1, 1, 4, &p, &C), 0);
	int8_t *big = calloc(300, 1);
	ck_assert_int_eq(gemm_q_ref(big, big, 1, 1, 300, &p, &C), HDQT_ERANGE);
	free(big);
	p.acc_bits = 7;
	ck_assert_int_eq(gemm_q_ref(A, B, 1, 1, 4, &p, &C), HDQT_EINVAL);
}
END_TEST

/* Every kernel this CPU supports gives the reference's integers exactly. */
START_TEST(test_simd_matches_reference)
{
	const char *names[] = {"scalar", "avx2", "avxvnni", "avx512vnni"};
	hdqt_rng r;
	hdqt_rng_seed(&r, 5, 0);
	gemm_ws ws = {0};
	int tested = 0;
	for (size_t n = 0; n < sizeof(names) / sizeof(names[0]); n++) {
		if (hdqt_kernel_select(names[n]) != 0)
			continue;
		tested++;
		for (int it = 0; it < 60; it++) {
			int I = 1 + (int)hdqt_rng_below(&r, 19), J = 1 + (int)hdqt_rng_below(&r, 70);
			int K = 1 + (int)hdqt_rng_below(&r, 300);
			int tiles[] = {0, 4, 8, 32, 64, 6};
			int bits = 2 + (int)hdqt_rng_below(&r, 7); /* 2..8 */
			if (!(it & 1) && bits == 8)
				bits = 7; /* unsigned A is at most 7 bits (int8 storage) */
			int qm = (1 << (bits - 1)) - 1;
			gemm_params p = {.tile = tiles[it % 6], .acc_bits = 8 + (it % 3) * 4,
					 .bits = bits, .a_signed = it & 1};
			int8_t *A = malloc((size_t)I * K), *B = malloc((size_t)J * K);
			int32_t *C0 = malloc(sizeof(int32_t) * I * J), *C1 = malloc(sizeof(int32_t) * I * J);
			fill(A, I * K, p.a_signed ? -qm : 0, p.a_signed ? qm : 2 * qm + 1, &r);
			fill(B, J * K, -qm, qm, &r);
			int rc0 = gemm_q_ref(A, B, I, J, K, &p, C0);
			int rc1 = gemm_q(&ws, A, B, I, J, K, &p, C1);
			ck_assert_int_eq(rc0, rc1);
			/* B packed once (the forward weight cache) gives the same C. */
			gemm_packed pb = {0};
			int32_t *C2 = malloc(sizeof(int32_t) * I * J);
			if (gemm_pack(&pb, B, J, K, &p) == 0) {
				ck_assert(gemm_packed_matches(&pb, J, K, &p));
				int rc2 = gemm_q_packed(&ws, A, I, &pb, C2);
				ck_assert_int_eq(rc0, rc2);
				if (rc0 == 0)
					ck_assert_mem_eq(C0, C2, sizeof(int32_t) * I * J);
			} else {
				ck_assert_int_ne(rc0, 0);
			}
			gemm_packed_free(&pb);
			free(C2);
			if (rc0 == 0 && memcmp(C0, C1, sizeof(int32_t) * I * J) != 0)
				ck_abort_msg("%s: I=%d J=%d K=%d tile=%d acc=%d bits=%d signed=%d", names[n],
					     I, J, K, p.tile, p.acc_bits, bits, p.a_signed);
			if (rc0 == 0)
				ck_assert_mem_eq(C0, C1, sizeof(int32_t) * I * J);
			free(A);
			free(B);
			free(C0);
			free(C1);
		}
	}
	gemm_ws_free(&ws);
	ck_assert_int_ge(tested, 1);
}
END_TEST

START_TEST(test_f32_gemm)
{
	enum { I = 7, J = 19, K = 13 };
	float A[I * K], B[K * J], C[I * J];
	hdqt_rng r;
	hdqt_rng_seed(&r, 3, 0);
	for (int i = 0; i < I * K; i++)
		A[i] = hdqt_rng_normal(&r);
	for (int i = 0; i < K * J; i++)
		B[i] = hdqt_rng_normal(&r);
	gemm_f32_nn(A, B, I, J, K, C);
	for (int i = 0; i < I; i++)
		for (int j = 0; j < J; j++) {
			double s = 0;
			for (int k = 0; k < K; k++)
				s += (double)A[i * K + k] * B[k * J + j];
			ck_assert_float_eq_tol(C[i * J + j], (float)s, 1e-4f);
		}
}
END_TEST

START_TEST(test_transpose)
{
	hdqt_rng r;
	hdqt_rng_seed(&r, 4, 0);
	const int shapes[][2] = {{1, 1}, {8, 8}, {13, 29}, {128, 512}, {37, 8}, {8, 3}};
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		int R = shapes[s][0], C = shapes[s][1];
		float *in = malloc(sizeof(float) * R * C), *a = malloc(sizeof(float) * R * C),
		      *b = malloc(sizeof(float) * R * C);
		for (int i = 0; i < R * C; i++)
			in[i] = hdqt_rng_normal(&r);
		gemm_transpose(in, R, C, a);
		gemm_transpose_ref(in, R, C, b);
		for (int i = 0; i < R; i++)
			for (int j = 0; j < C; j++)
				ck_assert(a[j * R + i] == in[i * C + j]);
		ck_assert_mem_eq(a, b, sizeof(float) * R * C);
		free(in);
		free(a);
		free(b);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("gemm");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_ref_matches_naive_random_shapes);
	tcase_add_test(tc, test_clamp_triggers);
	tcase_add_test(tc, test_overflow_rejected);
	tcase_add_test(tc, test_simd_matches_reference);
	tcase_add_test(tc, test_f32_gemm);
	tcase_add_test(tc, test_transpose);
	suite_add_tcase(s, tc);
	return testutil_run(s);
}
