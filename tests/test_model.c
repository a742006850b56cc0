/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "hdqt.h"
#include "model.h"
#include "fwht.h"
#include "quant.h"
#include "testutil.h"

static hdqt_model *make(hdqt_mode mode, int n_in, int hidden, int classes, uint64_t seed)
{
	hdqt_mlp_config c = {.n_in = n_in, .n_hidden = 2, .hidden = {hidden, hidden},
			     .n_classes = classes};
	hdqt_qconfig q;
	hdqt_qconfig_default(&q, mode);
	hdqt_model *m = NULL;
	ck_assert_int_eq(hdqt_model_new(&m, &c, &q, seed), 0);
	return m;
}

/* Gaussian blobs: class c centred at 3 * e_c (+ noise), well separable. */
static void blobs(float *X, int *y, int n, int d, int classes, uint64_t seed)
{
	hdqt_rng r;
	hdqt_rng_seed(&r, seed, 0);
	for (int i = 0; i < n; i++) {
		y[i] = i % classes;
		for (int j = 0; j < d; j++)
			X[i * d + j] = hdqt_rng_normal(&r) + (j == y[i] ? 3.0f : 0.0f);
	}
}

static float batch_loss(hdqt_model *m, const float *X, const int *y, int n)
{
	int C = hdqt_model_n_classes(m);
	float *lg = malloc(sizeof(float) * n * C);
	ck_assert_int_eq(hdqt_model_forward(m, X, n, lg), 0);
	float L = hdqt_loss_ce(lg, y, n, C, NULL);
	free(lg);
	return L;
}

START_TEST(test_fp32_grad_finite_difference)
{
	enum { N = 8, D = 5, H = 6, C = 3 };
	float X[N * D];
	int y[N];
	blobs(X, y, N, D, C, 1);
	hdqt_model *m = make(HDQT_MODE_FP32, D, H, C, 11);
	hdqt_sgd o = {.lr = 0, .momentum = 0, .weight_decay = 0};
	hdqt_batch b = {.X = X, .y = y, .n = N};
	ck_assert_int_eq(hdqt_model_train_step(m, &b, &o, 0.0f, NULL), 0);
	const double eps = 1e-3;
	int checked = 0;
	for (int l = 0; l < m->n_layers; l++) {
		linear *L = &m->L[l];
		for (int i = 0; i < L->in * L->out; i += 3) {
			float w0 = L->w[i];
			L->w[i] = w0 + (float)eps;
			linear_touch(L);
			double lp = batch_loss(m, X, y, N);
			L->w[i] = w0 - (float)eps;
			linear_touch(L);
			double lm = batch_loss(m, X, y, N);
			L->w[i] = w0;
			linear_touch(L);
			double fd = (lp - lm) / (2 * eps);
			ck_assert_msg(fabs(fd - L->gw[i]) < 2e-3 + 2e-2 * fabs(fd),
				      "layer %d w[%d]: analytic %g vs numeric %g", l, i, L->gw[i], fd);
			checked++;
		}
	}
	ck_assert_int_gt(checked, 20);
	hdqt_model_free(m);
}
END_TEST

static double cosine(const float *a, const float *b, size_t n)
{
	double ab = 0, aa = 0, bb = 0;
	for (size_t i = 0; i < n; i++) {
		ab += (double)a[i] * b[i];
		aa += (double)a[i] * a[i];
		bb += (double)b[i] * b[i];
	}
	return ab / sqrt(aa * bb + 1e-30);
}

/* Quantised gradients of one batch point the same way as the fp32 ones:
 * a cosine above 0.5 with the exact weight gradients in every integer
 * recipe (measured on this batch: hdqt 0.88-0.91 with its per-row backward
 * scales, hdqt-paper 0.67-0.75, int 0.77-0.93; 4-bit stochastic rounding
 * is that noisy per step, and unbiased, which is what training needs). */
START_TEST(test_quantised_grads_align)
{
	enum { N = 128, D = 64, H = 128, C = 4 };
	float *X = malloc(sizeof(float) * N * D);
	int y[N];
	blobs(X, y, N, D, C, 2);
	hdqt_model *ref = make(HDQT_MODE_FP32, D, H, C, 5);
	hdqt_sgd o = {.lr = 0, .momentum = 0, .weight_decay = 0};
	hdqt_batch b = {.X = X, .y = y, .n = N};
	ck_assert_int_eq(hdqt_model_train_step(ref, &b, &o, 0.0f, NULL), 0);
	const hdqt_mode modes[] = {HDQT_MODE_HDQT, HDQT_MODE_HDQT_PAPER, HDQT_MODE_INT};
	const double thr[] = {0.8, 0.5, 0.5}; /* hdqt is held to more */
	for (int mi = 0; mi < 3; mi++) {
		hdqt_model *m = make(modes[mi], D, H, C, 5);
		ck_assert_int_eq(m->in_pad, D);
		ck_assert_int_eq(hdqt_model_train_step(m, &b, &o, 0.0f, NULL), 0);
		for (int l = 0; l < m->n_layers; l++) {
			double cs = cosine(m->L[l].gw, ref->L[l].gw, (size_t)m->L[l].in * m->L[l].out);
			ck_assert_msg(cs > thr[mi], "%s layer %d cosine %.3f", hdqt_mode_name(modes[mi]), l, cs);
		}
		hdqt_model_free(m);
	}
	hdqt_model_free(ref);
	free(X);
}
END_TEST

static double train_blobs(hdqt_mode mode, uint64_t seed, float *final_w, size_t nw)
{
	enum { N = 512, D = 16, C = 4 };
	float *X = malloc(sizeof(float) * N * D), *Xt = malloc(sizeof(float) * N * D);
	int y[N], yt[N], pred[N];
	blobs(X, y, N, D, C, 10);
	blobs(Xt, yt, N, D, C, 20);
	hdqt_model *m = make(mode, D, 64, C, seed);
	ck_assert_int_eq(hdqt_model_fit_norm(m, X, N, 0.0f), 0);
	hdqt_sgd o;
	hdqt_sgd_default(&o);
	o.lr = 0.05f;
	for (int ep = 0; ep < 15; ep++)
		for (int i = 0; i < N; i += 64) {
			hdqt_batch b = {.X = X + i * D, .y = y + i, .n = 64};
			ck_assert_int_eq(hdqt_model_train_step(m, &b, &o, o.lr, NULL), 0);
		}
	ck_assert_int_eq(hdqt_model_predict(m, Xt, N, pred), 0);
	int ok = 0;
	for (int i = 0; i < N; i++)
		ok += pred[i] == yt[i];
	if (final_w) {
		/* The first layer is D wide, or padded to the Hadamard block. */
		size_t have = (size_t)m->L[0].in * m->L[0].out;
		ck_assert_uint_ge(nw, have);
		memset(final_w, 0, nw * sizeof(float));
		memcpy(final_w, m->L[0].w, have * sizeof(float));
	}
	hdqt_model_free(m);
	free(X);
	free(Xt);
	return (double)ok / N;
}

START_TEST(test_learns_separable_every_mode)
{
	/* Bayes accuracy of these blobs is ~0.93; chance is 0.25. */
	for (int mode = 0; mode < HDQT_MODE_COUNT; mode++) {
		double acc = train_blobs((hdqt_mode)mode, 3, NULL, 0);
		ck_assert_msg(acc > 0.85, "%s accuracy %.3f", hdqt_mode_name((hdqt_mode)mode), acc);
	}
}
END_TEST

START_TEST(test_reproducible)
{
	size_t nw = 32 * 64;
	float *a = malloc(nw * sizeof(float)), *b = malloc(nw * sizeof(float));
	train_blobs(HDQT_MODE_HDQT, 8, a, nw);
	train_blobs(HDQT_MODE_HDQT, 8, b, nw);
	ck_assert_mem_eq(a, b, nw * sizeof(float));
	train_blobs(HDQT_MODE_HDQT, 9, b, nw);
	ck_assert(memcmp(a, b, nw * sizeof(float)) != 0);
	free(a);
	free(b);
}
END_TEST

/* Threads change nothing: every mode, 1 to 4 threads, a batch that is not
 * a multiple of the row blocks, a few steps: weights and logits bit for
 * bit the same (fp32: BLAS blocks spread over the pool, blas.c). */
START_TEST(test_threads_bit_identical)
{
	enum { N = 101, D = 166, C = 7, STEPS = 3 };
	static float X[N * D];
	static int y[N];
	blobs(X, y, N, D, C, 5);
	const hdqt_mode modes[] = {HDQT_MODE_FP32, HDQT_MODE_INT, HDQT_MODE_HDQT_PAPER, HDQT_MODE_HDQT,
				   HDQT_MODE_HADANET, HDQT_MODE_HADANET_PAPER};
	for (size_t k = 0; k < sizeof(modes) / sizeof(modes[0]); k++) {
		/* The recipes that multiply in float through BLAS get a hidden
		 * layer of two BLAS blocks (linear.c), the rest a smaller one. */
		const int fl = modes[k] == HDQT_MODE_FP32 || modes[k] == HDQT_MODE_HADANET ||
			       modes[k] == HDQT_MODE_HADANET_PAPER;
		const int H = fl ? 200 : 96;
		hdqt_model *ref = make(modes[k], D, H, C, 21);
		ck_assert_int_eq(hdqt_model_fit_norm(ref, X, N, 0.0f), 0);
		hdqt_model *m[4];
		for (int t = 0; t < 4; t++) {
			ck_assert_int_eq(hdqt_model_clone(ref, &m[t]), 0);
			ck_assert_int_eq(hdqt_model_set_threads(m[t], t + 1), 0);
			ck_assert_int_eq(hdqt_model_threads(m[t]), t + 1);
		}
		hdqt_sgd o;
		hdqt_sgd_default(&o);
		hdqt_batch b = {.X = X, .y = y, .n = N};
		for (int st = 0; st < STEPS; st++)
			for (int t = 0; t < 4; t++)
				ck_assert_int_eq(hdqt_model_train_step(m[t], &b, &o, 0.05f, NULL), 0);
		static float lg[4][N * C];
		for (int t = 0; t < 4; t++)
			ck_assert_int_eq(hdqt_model_forward(m[t], X, N, lg[t]), 0);
		for (int t = 1; t < 4; t++) {
			for (int l = 0; l < m[0]->n_layers; l++)
				ck_assert_msg(memcmp(m[0]->L[l].w, m[t]->L[l].w,
						     sizeof(float) * m[0]->L[l].in * m[0]->L[l].out) == 0,
					      "mode %s, %d threads: layer %d weights differ",
					      hdqt_mode_name(modes[k]), t + 1, l);
			ck_assert_msg(memcmp(lg[0], lg[t], sizeof(lg[0])) == 0, "mode %s, %d threads: logits",
				      hdqt_mode_name(modes[k]), t + 1);
		}
		for (int t = 0; t < 4; t++)
			hdqt_model_free(m[t]);
		hdqt_model_free(ref);
	}
	hdqt_model *m = make(HDQT_MODE_HDQT, 8, 8, 2, 1);
	ck_assert_int_eq(hdqt_model_set_threads(m, 0), HDQT_EINVAL);
	ck_assert_int_eq(hdqt_model_set_threads(m, 65), HDQT_EINVAL);
	hdqt_model_free(m);
}
END_TEST

/* A single row through the float products (a prediction: one BLAS
 * matrix-vector product per block, linear.c) gives each row's logits of
 * the batch forward to float rounding, and the same bits on 1 and 3
 * threads; hidden 200 (two BLAS blocks) and 12 (one).  The recipes that
 * multiply in float forward: fp32, hadanet-paper, and xnor and hbwn in
 * their first and last layers. */
START_TEST(test_fp32_one_row)
{
	enum { N = 6, D = 166, C = 5 };
	static float X[N * D];
	static int y[N];
	blobs(X, y, N, D, C, 13);
	const hdqt_mode modes[] = {HDQT_MODE_FP32, HDQT_MODE_HADANET_PAPER, HDQT_MODE_XNOR,
				   HDQT_MODE_HBWN};
	const int hs[] = {200, 12};
	for (size_t k = 0; k < sizeof(modes) / sizeof(modes[0]); k++)
		for (size_t h = 0; h < sizeof(hs) / sizeof(hs[0]); h++) {
			hdqt_model *m = make(modes[k], D, hs[h], C, 31);
			ck_assert_int_eq(hdqt_model_fit_norm(m, X, N, 0.0f), 0);
			float all[N * C], one[C], one3[C];
			ck_assert_int_eq(hdqt_model_forward(m, X, N, all), 0);
			for (int i = 0; i < N; i++) {
				ck_assert_int_eq(hdqt_model_set_threads(m, 1), 0);
				ck_assert_int_eq(hdqt_model_forward(m, X + (size_t)i * D, 1, one), 0);
				ck_assert_int_eq(hdqt_model_set_threads(m, 3), 0);
				ck_assert_int_eq(hdqt_model_forward(m, X + (size_t)i * D, 1, one3), 0);
				ck_assert_msg(memcmp(one, one3, sizeof(one)) == 0, "%s h %d row %d: threads",
					      hdqt_mode_name(modes[k]), hs[h], i);
				for (int c = 0; c < C; c++) {
					const float a = all[i * C + c], b = one[c];
					ck_assert_msg(fabsf(a - b) <= 1e-4f * (1.0f + fabsf(a)),
						      "%s h %d row %d class %d: %g alone, %g in the batch",
						      hdqt_mode_name(modes[k]), hs[h], i, c, b, a);
				}
			}
			hdqt_model_free(m);
		}
}
END_TEST

START_TEST(test_blob_round_trip_and_corruption)
{
	enum { N = 32, D = 10, C = 3 };
	float X[N * D], l0[N * 5], l1[N * 5];
	int y[N];
	blobs(X, y, N, D, C, 4);
	for (int mode = 0; mode < HDQT_MODE_COUNT; mode++) {
		hdqt_model *m = make((hdqt_mode)mode, D, 24, C, 1);
		ck_assert_int_eq(hdqt_model_fit_norm(m, X, N, 4.0f), 0);
		ck_assert_int_eq(hdqt_model_add_classes(m, 2), 0);
		hdqt_sgd o;
		hdqt_sgd_default(&o);
		hdqt_batch b = {.X = X, .y = y, .n = N};
		ck_assert_int_eq(hdqt_model_train_step(m, &b, &o, 0.05f, NULL), 0);
		uint8_t *blob;
		size_t len;
		ck_assert_int_eq(hdqt_model_save(m, &blob, &len), 0);
		hdqt_model *m2 = NULL;
		ck_assert_int_eq(hdqt_model_load(blob, len, &m2), 0);
		ck_assert_int_eq(hdqt_model_n_classes(m2), 5);
		ck_assert_int_eq(hdqt_model_forward(m, X, N, l0), 0);
		ck_assert_int_eq(hdqt_model_forward(m2, X, N, l1), 0);
		ck_assert_mem_eq(l0, l1, sizeof(l0));
		/* Every single flipped byte is caught. */
		for (size_t i = 0; i < len; i += 7) {
			blob[i] ^= 0x20;
			hdqt_model *bad = NULL;
			int rc = hdqt_model_load(blob, len, &bad);
			ck_assert_msg(rc == HDQT_ECORRUPT || rc == HDQT_EVERSION, "byte %zu rc %d", i, rc);
			ck_assert_ptr_null(bad);
			blob[i] ^= 0x20;
		}
		hdqt_model *bad = NULL;
		/* A value that is not finite under a valid CRC: the last weight
		 * (before the 16-byte RNG state, the 2 x 5 logit floats and the
		 * CRC) and the first normalisation mean (after the 4-byte
		 * norm_clip that ends the header's fields; found as the float
		 * the model holds). */
		const size_t at_w = len - 4 - 2 * 5 * 4 - 16 - 4;
		size_t at_mean = 0;
		for (size_t i = 16; i + 4 <= at_w && !at_mean; i++) {
			float f;
			memcpy(&f, blob + i, 4);
			if (memcmp(&f, &m->mean[0], 4) == 0 && memcmp(blob + i + 4, &m->mean[1], 4) == 0)
				at_mean = i;
		}
		ck_assert_uint_gt(at_mean, 0);
		const float nonfinite[2] = {NAN, INFINITY};
		const size_t at[2] = {at_w, at_mean};
		for (int k = 0; k < 4; k++) {
			uint8_t *v = malloc(len);
			ck_assert_ptr_nonnull(v);
			memcpy(v, blob, len);
			memcpy(v + at[k / 2], &nonfinite[k % 2], 4);
			const uint32_t crc = (uint32_t)crc32(0L, v, (uInt)(len - 4));
			for (int i = 0; i < 4; i++)
				v[len - 4 + i] = (uint8_t)(crc >> (8 * i));
			ck_assert_int_eq(hdqt_model_load(v, len, &bad), HDQT_ECORRUPT);
			ck_assert_ptr_null(bad);
			free(v);
		}
		ck_assert_int_eq(hdqt_model_load(blob, len - 1, &bad), HDQT_ECORRUPT);
		ck_assert_int_eq(hdqt_model_load(blob, 10, &bad), HDQT_ECORRUPT);
		blob[8] = 99; /* a future format version */
		ck_assert_int_eq(hdqt_model_load(blob, len, &bad), HDQT_EVERSION);
		free(blob);
		hdqt_model_free(m);
		hdqt_model_free(m2);
	}
}
END_TEST

/* A version-1 blob (before qconfig.bwd_fwdq) still loads, with the flag of
 * its mode; version 2 keeps a non-default flag. */
/* blob with drop bytes at off removed, as format version ver (length and
 * CRC fixed); malloc'd. */
static uint8_t *old_version(const uint8_t *blob, size_t len, size_t off, size_t drop, int ver,
			    size_t *out_len)
{
	uint8_t *v = malloc(len - drop);
	if (!v)
		return NULL;
	memcpy(v, blob, off);
	memcpy(v + off, blob + off + drop, len - off - drop);
	const size_t n = len - drop;
	v[8] = (uint8_t)ver;
	uint32_t plen = (uint32_t)(n - 16 - 4);
	for (int i = 0; i < 4; i++)
		v[12 + i] = (uint8_t)(plen >> (8 * i));
	uint32_t crc = (uint32_t)crc32(0L, v, (uInt)(n - 4));
	for (int i = 0; i < 4; i++)
		v[n - 4 + i] = (uint8_t)(crc >> (8 * i));
	*out_len = n;
	return v;
}

START_TEST(test_blob_v1_loads)
{
	enum { N = 16, D = 10, C = 3, H = 24 };
	float X[N * D], l0[N * C], l1[N * C];
	int y[N];
	blobs(X, y, N, D, C, 4);
	hdqt_model *m = make(HDQT_MODE_HDQT_PAPER, D, H, C, 1);
	m->q.bwd_fwdq = 0;
	uint8_t *blob4;
	size_t len4;
	ck_assert_int_eq(hdqt_model_save(m, &blob4, &len4), 0);
	hdqt_model *m2 = NULL;
	ck_assert_int_eq(hdqt_model_load(blob4, len4, &m2), 0);
	ck_assert_int_eq(hdqt_model_qconfig(m2)->bwd_fwdq, 0);
	hdqt_model_free(m2);
	/* Version 3 first: without version 4's logit affine (2 C floats
	 * before the CRC). */
	size_t len;
	uint8_t *blob = old_version(blob4, len4, len4 - 4 - 8 * C, 8 * C, 3, &len);
	ck_assert_ptr_nonnull(blob);
	free(blob4);
	/* Rewrite as version 1: drop the flag and version 3's eight HadaNets
	 * fields (after 19 + n_hidden i32 fields of the 16-byte header), fix
	 * the payload length and the CRC. */
	const size_t off = 16 + 4 * (19 + 2);
	size_t len1;
	uint8_t *v1 = old_version(blob, len, off, 4 + 32, 1, &len1);
	ck_assert_ptr_nonnull(v1);
	ck_assert_int_eq(hdqt_model_load(v1, len1, &m2), 0);
	ck_assert_int_eq(hdqt_model_qconfig(m2)->bwd_fwdq, 1);
	ck_assert_int_eq(hdqt_model_forward(m, X, N, l0), 0);
	ck_assert_int_eq(hdqt_model_forward(m2, X, N, l1), 0);
	ck_assert_mem_eq(l0, l1, sizeof(l0));
	hdqt_model_free(m2);
	free(v1);
	/* Version 2: the flag kept, no HadaNets fields. */
	uint8_t *v2 = old_version(blob, len, off + 4, 32, 2, &len1);
	ck_assert_ptr_nonnull(v2);
	ck_assert_int_eq(hdqt_model_load(v2, len1, &m2), 0);
	ck_assert_int_eq(hdqt_model_qconfig(m2)->bwd_fwdq, 0);
	ck_assert_int_eq(hdqt_model_forward(m2, X, N, l1), 0);
	ck_assert_mem_eq(l0, l1, sizeof(l0));
	hdqt_model_free(m2);
	free(v2);
	free(blob);
	hdqt_model_free(m);
}
END_TEST

/* The logit affine (BiC's bias correction): identity by default and then
 * invisible bit for bit; applied by forward and predict, never by the
 * training step; kept by clone, extended by add_classes, moved by remap. */
START_TEST(test_logit_affine)
{
	enum { N = 24, D = 10, C = 3, H = 24 };
	float X[N * D], l0[N * 5], l1[N * 5], a[5], b[5];
	int y[N], p0[N], p1[N];
	blobs(X, y, N, D, C, 5);
	hdqt_model *m = make(HDQT_MODE_HDQT, D, H, C, 3);
	ck_assert_int_eq(hdqt_model_fit_norm(m, X, N, 0.0f), 0);
	ck_assert_int_eq(hdqt_model_get_logit_affine(m, a, b), 0);
	for (int c = 0; c < C; c++) {
		ck_assert_float_eq(a[c], 1.0f);
		ck_assert_float_eq(b[c], 0.0f);
	}
	ck_assert_int_eq(hdqt_model_forward(m, X, N, l0), 0);
	const float ones[3] = {1, 1, 1}, zeros[3] = {0, 0, 0};
	ck_assert_int_eq(hdqt_model_set_logit_affine(m, ones, zeros), 0);
	ck_assert_int_eq(hdqt_model_forward(m, X, N, l1), 0);
	ck_assert_mem_eq(l0, l1, sizeof(float) * N * C);
	/* Applied at inference: exactly a o + b. */
	const float A[3] = {1.0f, 0.5f, 2.0f}, B[3] = {0.0f, -1.0f, 0.25f};
	ck_assert_int_eq(hdqt_model_set_logit_affine(m, A, B), 0);
	ck_assert_int_eq(hdqt_model_get_logit_affine(m, a, b), 1);
	ck_assert_int_eq(hdqt_model_forward(m, X, N, l1), 0);
	for (int i = 0; i < N * C; i++)
		ck_assert_float_eq(l1[i], A[i % C] * l0[i] + B[i % C]);
	ck_assert_int_eq(hdqt_model_predict(m, X, N, p1), 0);
	for (int i = 0; i < N; i++) {
		int best = 0;
		for (int c = 1; c < C; c++)
			best = l1[i * C + c] > l1[i * C + best] ? c : best;
		ck_assert_int_eq(p1[i], best);
	}
	/* Training ignores it: one step with and one without give the same weights. */
	hdqt_model *c1 = NULL, *c2 = NULL;
	ck_assert_int_eq(hdqt_model_clone(m, &c1), 0);
	ck_assert_int_eq(hdqt_model_clone(m, &c2), 0);
	ck_assert_int_eq(hdqt_model_get_logit_affine(c1, a, b), 1); /* clone keeps it */
	ck_assert_mem_eq(a, A, sizeof(A));
	ck_assert_mem_eq(b, B, sizeof(B));
	ck_assert_int_eq(hdqt_model_set_logit_affine(c2, NULL, NULL), 0);
	hdqt_sgd o;
	hdqt_sgd_default(&o);
	hdqt_batch bt = {.X = X, .y = y, .n = N};
	float loss1, loss2;
	ck_assert_int_eq(hdqt_model_train_step(c1, &bt, &o, 0.05f, &loss1), 0);
	ck_assert_int_eq(hdqt_model_train_step(c2, &bt, &o, 0.05f, &loss2), 0);
	ck_assert_float_eq(loss1, loss2);
	ck_assert_int_eq(hdqt_model_set_logit_affine(c1, NULL, NULL), 0);
	ck_assert_int_eq(hdqt_model_get_logit_affine(c1, a, b), 0);
	ck_assert_int_eq(hdqt_model_forward(c1, X, N, l0), 0);
	ck_assert_int_eq(hdqt_model_forward(c2, X, N, l1), 0);
	ck_assert_mem_eq(l0, l1, sizeof(float) * N * C);
	/* add_classes: new rows are the identity, old ones kept. */
	ck_assert_int_eq(hdqt_model_add_classes(m, 2), 0);
	ck_assert_int_eq(hdqt_model_get_logit_affine(m, a, b), 1);
	ck_assert_mem_eq(a, A, sizeof(A));
	ck_assert_mem_eq(b, B, sizeof(B));
	ck_assert_float_eq(a[3], 1.0f);
	ck_assert_float_eq(a[4], 1.0f);
	ck_assert_float_eq(b[3], 0.0f);
	ck_assert_float_eq(b[4], 0.0f);
	/* remap: rows move with their classes; the row nothing lands on is the identity. */
	const int map[5] = {5, 0, 1, 2, 3};
	ck_assert_int_eq(hdqt_model_remap_classes(m, map, 6), 0);
	float a6[6], b6[6];
	ck_assert_int_eq(hdqt_model_get_logit_affine(m, a6, b6), 1);
	for (int i = 0; i < 5; i++) {
		ck_assert_float_eq(a6[map[i]], i < 3 ? A[i] : 1.0f);
		ck_assert_float_eq(b6[map[i]], i < 3 ? B[i] : 0.0f);
	}
	ck_assert_float_eq(a6[4], 1.0f);
	ck_assert_float_eq(b6[4], 0.0f);
	/* Bad calls change nothing. */
	const float nan3[6] = {1, NAN, 1, 1, 1, 1}, z6[6] = {0};
	ck_assert_int_eq(hdqt_model_set_logit_affine(m, nan3, z6), HDQT_ERANGE);
	/* a scale that reverses or zeroes a class's logits, or values that
	 * overflow them, are refused too (review of the BiC change) */
	const float zero3[6] = {1, 0, 1, 1, 1, 1}, neg3[6] = {1, -1, 1, 1, 1, 1},
		    big3[6] = {1, 2000, 1, 1, 1, 1}, ones6[6] = {1, 1, 1, 1, 1, 1},
		    far6[6] = {0, 0, 1e5f, 0, 0, 0};
	ck_assert_int_eq(hdqt_model_set_logit_affine(m, zero3, z6), HDQT_ERANGE);
	ck_assert_int_eq(hdqt_model_set_logit_affine(m, neg3, z6), HDQT_ERANGE);
	ck_assert_int_eq(hdqt_model_set_logit_affine(m, big3, z6), HDQT_ERANGE);
	ck_assert_int_eq(hdqt_model_set_logit_affine(m, ones6, far6), HDQT_ERANGE);
	ck_assert_int_eq(hdqt_model_set_logit_affine(m, A, NULL), HDQT_EINVAL);
	ck_assert_int_eq(hdqt_model_set_logit_affine(NULL, NULL, NULL), HDQT_EINVAL);
	float a6b[6], b6b[6];
	ck_assert_int_eq(hdqt_model_get_logit_affine(m, a6b, b6b), 1);
	ck_assert_mem_eq(a6, a6b, sizeof(a6));
	ck_assert_mem_eq(b6, b6b, sizeof(b6));
	(void)p0;
	hdqt_model_free(c1);
	hdqt_model_free(c2);
	hdqt_model_free(m);
}
END_TEST

/* Version 4 stores the affine: save + load keeps it (and the logits); a
 * non-finite value in a blob is refused. */
START_TEST(test_logit_affine_blob)
{
	enum { N = 16, D = 10, C = 3, H = 24 };
	float X[N * D], l0[N * C], l1[N * C], a[C], b[C];
	int y[N];
	blobs(X, y, N, D, C, 6);
	hdqt_model *m = make(HDQT_MODE_FP32, D, H, C, 2);
	const float A[C] = {1.5f, 1.0f, 0.75f}, B[C] = {-0.5f, 0.0f, 2.0f};
	ck_assert_int_eq(hdqt_model_set_logit_affine(m, A, B), 0);
	uint8_t *blob;
	size_t len;
	ck_assert_int_eq(hdqt_model_save(m, &blob, &len), 0);
	ck_assert_int_eq(blob[8], 4);
	hdqt_model *m2 = NULL;
	ck_assert_int_eq(hdqt_model_load(blob, len, &m2), 0);
	ck_assert_int_eq(hdqt_model_get_logit_affine(m2, a, b), 1);
	ck_assert_mem_eq(a, A, sizeof(A));
	ck_assert_mem_eq(b, B, sizeof(B));
	ck_assert_int_eq(hdqt_model_forward(m, X, N, l0), 0);
	ck_assert_int_eq(hdqt_model_forward(m2, X, N, l1), 0);
	ck_assert_mem_eq(l0, l1, sizeof(l0));
	hdqt_model_free(m2);
	m2 = NULL;
	/* A NaN scale, with length and CRC repaired: refused. */
	const float nan = NAN;
	memcpy(blob + len - 4 - 8 * C, &nan, 4);
	uint32_t crc = (uint32_t)crc32(0L, blob, (uInt)(len - 4));
	for (int i = 0; i < 4; i++)
		blob[len - 4 + i] = (uint8_t)(crc >> (8 * i));
	ck_assert_int_eq(hdqt_model_load(blob, len, &m2), HDQT_ECORRUPT);
	ck_assert_ptr_null(m2);
	/* ... and so is a zero scale (it would erase the class's logits). */
	const float zero = 0.0f;
	memcpy(blob + len - 4 - 8 * C, &zero, 4);
	crc = (uint32_t)crc32(0L, blob, (uInt)(len - 4));
	for (int i = 0; i < 4; i++)
		blob[len - 4 + i] = (uint8_t)(crc >> (8 * i));
	ck_assert_int_eq(hdqt_model_load(blob, len, &m2), HDQT_ECORRUPT);
	ck_assert_ptr_null(m2);
	/* A version-3 blob (no affine) loads with the identity. */
	ck_assert_int_eq(hdqt_model_set_logit_affine(m, NULL, NULL), 0);
	free(blob);
	ck_assert_int_eq(hdqt_model_save(m, &blob, &len), 0);
	size_t len3;
	uint8_t *v3 = old_version(blob, len, len - 4 - 8 * C, 8 * C, 3, &len3);
	ck_assert_ptr_nonnull(v3);
	ck_assert_int_eq(hdqt_model_load(v3, len3, &m2), 0);
	ck_assert_int_eq(hdqt_model_get_logit_affine(m2, a, b), 0);
	ck_assert_int_eq(hdqt_model_forward(m, X, N, l0), 0);
	ck_assert_int_eq(hdqt_model_forward(m2, X, N, l1), 0);
	ck_assert_mem_eq(l0, l1, sizeof(l0));
	/* The same model saved again is version 4 and byte-identical to m's. */
	uint8_t *again;
	size_t len_again;
	ck_assert_int_eq(hdqt_model_save(m2, &again, &len_again), 0);
	ck_assert_uint_eq(len_again, len);
	ck_assert_mem_eq(again, blob, len);
	free(again);
	free(v3);
	free(blob);
	hdqt_model_free(m2);
	hdqt_model_free(m);
}
END_TEST

/* The phase timers: off by default (nothing counted), on they see the
 * phases each recipe has, and only those. */
START_TEST(test_profile_phases)
{
	enum { N = 64, D = 40, H = 64, C = 4 };
	static float X[N * D];
	static int y[N];
	blobs(X, y, N, D, C, 3);
	const hdqt_mode modes[] = {HDQT_MODE_FP32, HDQT_MODE_HDQT, HDQT_MODE_HADANET};
	for (int k = 0; k < 3; k++) {
		hdqt_model *m = make(modes[k], D, H, C, 1);
		hdqt_sgd o;
		hdqt_sgd_default(&o);
		hdqt_batch b = {.X = X, .y = y, .n = N};
		double sec[HDQT_PHASE_COUNT];
		ck_assert_int_eq(hdqt_model_train_step(m, &b, &o, 0.01f, NULL), 0);
		hdqt_model_profile_read(m, sec);
		for (int ph = 0; ph < HDQT_PHASE_COUNT; ph++)
			ck_assert(sec[ph] == 0.0);
		hdqt_model_profile(m, 1);
		for (int i = 0; i < 3; i++)
			ck_assert_int_eq(hdqt_model_train_step(m, &b, &o, 0.01f, NULL), 0);
		hdqt_model_profile(m, 0);
		hdqt_model_profile_read(m, sec);
		for (int ph = 0; ph < HDQT_PHASE_COUNT; ph++)
			ck_assert(sec[ph] >= 0.0 && sec[ph] < 10.0);
		ck_assert(sec[HDQT_PHASE_ELEMENTWISE] > 0.0);
		if (modes[k] == HDQT_MODE_FP32) {
			ck_assert(sec[HDQT_PHASE_FLOAT_GEMM] > 0.0);
			ck_assert(sec[HDQT_PHASE_GEMM] == 0.0 && sec[HDQT_PHASE_BINARY] == 0.0);
		} else if (modes[k] == HDQT_MODE_HDQT) {
			/* packing happens inside the fused passes (the column path,
			 * SGD with the next weight operand) */
			ck_assert(sec[HDQT_PHASE_GEMM] > 0.0 && sec[HDQT_PHASE_QUANT] > 0.0 &&
				  sec[HDQT_PHASE_FWHT] > 0.0 && sec[HDQT_PHASE_FUSED] > 0.0);
			ck_assert(sec[HDQT_PHASE_FLOAT_GEMM] == 0.0 && sec[HDQT_PHASE_BINARY] == 0.0);
		} else {
			ck_assert(sec[HDQT_PHASE_BINARY] > 0.0 && sec[HDQT_PHASE_FLOAT_GEMM] > 0.0);
		}
		/* off: counting stopped */
		double again[HDQT_PHASE_COUNT];
		ck_assert_int_eq(hdqt_model_train_step(m, &b, &o, 0.01f, NULL), 0);
		hdqt_model_profile_read(m, again);
		ck_assert_mem_eq(sec, again, sizeof(sec));
		ck_assert_str_eq(hdqt_phase_name(HDQT_PHASE_GEMM), "int_gemm");
		ck_assert_str_eq(hdqt_phase_name(HDQT_PHASE_COUNT), "?");
		hdqt_model_free(m);
	}
}
END_TEST

START_TEST(test_head_growth_keeps_rows)
{
	hdqt_model *m = make(HDQT_MODE_HDQT, 8, 16, 2, 1);
	linear *head = &m->L[m->n_layers - 1];
	float old[2 * 16];
	memcpy(old, head->w, sizeof(old));
	ck_assert_int_eq(hdqt_model_add_classes(m, 3), 0);
	head = &m->L[m->n_layers - 1];
	ck_assert_int_eq(head->out, 5);
	ck_assert_mem_eq(head->w, old, sizeof(old));
	int nonzero = 0;
	for (int i = 2 * 16; i < 5 * 16; i++)
		nonzero += head->w[i] != 0.0f;
	ck_assert_int_gt(nonzero, 40);
	ck_assert_int_eq(hdqt_model_add_classes(m, 0), HDQT_EINVAL);
	ck_assert_int_eq(hdqt_model_add_classes(m, HDQT_MAX_CLASSES), HDQT_EINVAL);
	hdqt_model_free(m);
}
END_TEST

START_TEST(test_bad_input_rejected)
{
	hdqt_model *m = make(HDQT_MODE_HDQT, 4, 8, 2, 1);
	float X[8] = {1, 2, 3, NAN, 0, 0, 0, 0}, lg[4];
	ck_assert_int_eq(hdqt_model_forward(m, X, 2, lg), HDQT_ERANGE);
	X[3] = INFINITY;
	ck_assert_int_eq(hdqt_model_forward(m, X, 2, lg), HDQT_ERANGE);
	X[3] = 0;
	int y[2] = {0, 5};
	hdqt_sgd o;
	hdqt_sgd_default(&o);
	hdqt_batch b = {.X = X, .y = y, .n = 2};
	ck_assert_int_eq(hdqt_model_train_step(m, &b, &o, 0.01f, NULL), HDQT_EINVAL);
	float mean[4] = {0}, sd[4] = {1, 1, 0, 1};
	ck_assert_int_eq(hdqt_model_set_norm(m, mean, sd, 0), HDQT_ERANGE);
	hdqt_qconfig q;
	hdqt_qconfig_default(&q, HDQT_MODE_HDQT);
	q.bits = 9;
	ck_assert_int_eq(hdqt_qconfig_check(&q), HDQT_EINVAL);
	hdqt_mode md;
	ck_assert_int_eq(hdqt_mode_parse("int4", &md), HDQT_EINVAL);
	ck_assert_int_eq(hdqt_mode_parse("hdqt-paper", &md), 0);
	ck_assert_int_eq(md, HDQT_MODE_HDQT_PAPER);
	hdqt_model_free(m);
}
END_TEST

START_TEST(test_distillation_gradient)
{
	/* KD gradient vanishes when student equals teacher and matches a
	 * finite difference otherwise. */
	float z[3] = {0.5f, -1.0f, 2.0f}, t[3] = {0.5f, -1.0f, 2.0f}, g[3] = {0};
	float L = hdqt_loss_kd(z, 3, t, 1, 3, 2.0f, 1.0f, g);
	ck_assert_float_eq_tol(L, 0.0f, 1e-6f);
	for (int j = 0; j < 3; j++)
		ck_assert_float_eq_tol(g[j], 0.0f, 1e-6f);
	t[0] = 2.0f;
	memset(g, 0, sizeof(g));
	hdqt_loss_kd(z, 3, t, 1, 3, 2.0f, 1.0f, g);
	for (int j = 0; j < 3; j++) {
		float zp[3], zm[3];
		memcpy(zp, z, sizeof(z));
		memcpy(zm, z, sizeof(z));
		zp[j] += 1e-3f;
		zm[j] -= 1e-3f;
		float fd = (hdqt_loss_kd(zp, 3, t, 1, 3, 2.0f, 1.0f, NULL) -
			    hdqt_loss_kd(zm, 3, t, 1, 3, 2.0f, 1.0f, NULL)) / 2e-3f;
		ck_assert_float_eq_tol(g[j], fd, 2e-3f);
	}
}
END_TEST

/* The forward weight cache never changes a result: logits of a model that
 * predicted before (cache filled; in hdqt, rebuilt by each SGD step as it
 * updates the weights) equal those of a fresh clone (no cache), after
 * every training step, in every integer recipe, with a ragged last block
 * of 16 weight rows and on two threads. */
START_TEST(test_weight_cache_is_transparent)
{
	enum { N = 40, D = 24, HMAX = 40, C = 4 };
	float X[N * D], L0[N * (C + 1)], L1[N * (C + 1)]; /* the head grows by one */
	int y[N];
	blobs(X, y, N, D, C, 3);
	const hdqt_mode modes[] = {HDQT_MODE_INT, HDQT_MODE_HDQT_PAPER, HDQT_MODE_HDQT};
	const int widths[] = {32, HMAX};
	for (int mi = 0; mi < 3; mi++)
	for (int wi = 0; wi < 2; wi++) {
		hdqt_model *m = make(modes[mi], D, widths[wi], C, 5);
		ck_assert_int_eq(hdqt_model_set_threads(m, 1 + wi), 0);
		ck_assert_int_eq(hdqt_model_fit_norm(m, X, N, 0), 0);
		hdqt_sgd o;
		hdqt_sgd_default(&o);
		hdqt_batch b = {.X = X, .y = y, .n = N};
		for (int step = 0; step < 4; step++) {
			ck_assert_int_eq(hdqt_model_forward(m, X, N, L0), 0);
			hdqt_model *c = NULL;
			ck_assert_int_eq(hdqt_model_clone(m, &c), 0);
			ck_assert_int_eq(hdqt_model_forward(c, X, N, L1), 0);
			ck_assert_mem_eq(L0, L1, sizeof(float) * N * hdqt_model_n_classes(m));
			hdqt_model_free(c);
			ck_assert_int_eq(hdqt_model_train_step(m, &b, &o, 0.05f, NULL), 0);
			/* hdqt's SGD rebuilt every layer's forward operand (where a
			 * kernel layout exists: not under the scalar reference) */
			if (modes[mi] == HDQT_MODE_HDQT && strcmp(hdqt_kernel_name(), "scalar") != 0)
				for (int l = 0; l < m->n_layers; l++)
					ck_assert_int_eq(m->L[l].wcached, 1);
			if (step == 2)
				ck_assert_int_eq(hdqt_model_add_classes(m, 1), 0);
		}
		/* a stale cache would keep the logits of before the last step */
		float L2[N * (C + 1)];
		ck_assert_int_eq(hdqt_model_forward(m, X, N, L2), 0);
		hdqt_model *c = NULL;
		ck_assert_int_eq(hdqt_model_clone(m, &c), 0);
		float L3[N * (C + 1)];
		ck_assert_int_eq(hdqt_model_forward(c, X, N, L3), 0);
		ck_assert_mem_eq(L2, L3, sizeof(L2));
		hdqt_model_free(c);
		hdqt_model_free(m);
	}
}
END_TEST

/* Dequantised values of x under sp: what the forward multiplied.  blk > 1:
 * the forward rotated x by H first, so rotate, quantise, dequantise and
 * rotate back (H H = blk I). */
static void fwd_dequant(const float *x, int R, int K, const quant_spec *sp, int blk, float *out)
{
	int8_t *q = malloc((size_t)R * K);
	float *sc = malloc(sizeof(float) * R), *xr = malloc(sizeof(float) * R * K);
	ck_assert_ptr_nonnull(q);
	ck_assert_ptr_nonnull(sc);
	ck_assert_ptr_nonnull(xr);
	memcpy(xr, x, sizeof(float) * R * K);
	if (blk > 1)
		fwht_rows(xr, R, K, blk);
	quant_rows(xr, R, K, sp, NULL, q, sc);
	for (int i = 0; i < R; i++)
		for (int k = 0; k < K; k++)
			out[i * K + k] = (float)q[i * K + k] * sc[i];
	if (blk > 1) {
		fwht_rows(out, R, K, blk);
		for (int i = 0; i < R * K; i++)
			out[i] *= 1.0f / (float)blk;
	}
	free(q);
	free(sc);
	free(xr);
}

/* Under bwd_fwdq the backward equals the float backward run on the values
 * the forward multiplied: X and W quantised with the forward's quantisers
 * and dequantised.  Heavy-tailed X (one outlier per row) makes the two
 * differ: most of its entries quantise to zero under a max-abs scale. */
START_TEST(test_backward_uses_forward_values)
{
	enum { N = 40, K = 48, M = 32 };
	float *X = malloc(sizeof(float) * N * K), *dY = malloc(sizeof(float) * N * M);
	float *Xh = malloc(sizeof(float) * N * K), *g1 = malloc(sizeof(float) * M * K);
	float *dX1 = malloc(sizeof(float) * N * K), *dX2 = malloc(sizeof(float) * N * K);
	hdqt_rng r;
	hdqt_rng_seed(&r, 9, 0);
	/* case 0, 1: hdqt-paper with signed / non-negative X; case 2: hdqt with
	 * per-row scales and the forward Hadamard rotation (blocks of 16) */
	for (int cs = 0; cs < 3; cs++) {
		const int unsig = cs == 1;
		for (int i = 0; i < N * K; i++) {
			float v = hdqt_rng_normal(&r) * (i % 17 == 0 ? 12.0f : 1.0f);
			X[i] = unsig ? fabsf(v) : v;
		}
		for (int i = 0; i < N * M; i++)
			dY[i] = 0.01f * hdqt_rng_normal(&r);
		linear A, B;
		ck_assert_int_eq(linear_init(&A, K, M), 0);
		ck_assert_int_eq(linear_init(&B, K, M), 0);
		for (int i = 0; i < M * K; i++)
			A.w[i] = 0.2f * hdqt_rng_normal(&r);
		hdqt_qconfig q;
		hdqt_qconfig_default(&q, cs < 2 ? HDQT_MODE_HDQT_PAPER : HDQT_MODE_HDQT);
		ck_assert_int_eq(q.bwd_fwdq, cs < 2);
		const int blk = cs == 2 ? fwht_block(K, q.had_max) : 1;
		if (cs == 2) {
			q.fwd_hadamard = 1;
			q.bwd_fwdq = 1;
			ck_assert_int_eq(blk, 16);
		}
		quant_spec spx = {.bits = q.bits, .is_unsigned = unsig, .clip = q.fwd_clip,
				  .clip_sigma = q.fwd_clip_sigma, .per_row = q.fwd_gran == HDQT_SCALE_ROW};
		quant_spec spw = spx;
		spw.is_unsigned = 0;
		fwd_dequant(X, N, K, &spx, blk, Xh);
		fwd_dequant(A.w, M, K, &spw, blk, B.w);
		if (cs < 2) {
			int zeros = 0;
			for (int i = 0; i < N * K; i++)
				zeros += Xh[i] == 0.0f && X[i] != 0.0f;
			ck_assert_int_gt(zeros, N * K / 4);
		}

		linear_scratch s1 = {0}, s2 = {0};
		hdqt_rng r1, r2;
		hdqt_rng_seed(&r1, 4, 1);
		hdqt_rng_seed(&r2, 4, 1);
		ck_assert_int_eq(linear_backward(&A, X, unsig, dY, N, &q, &s1, &r1, dX1), 0);
		memcpy(g1, A.gw, sizeof(float) * M * K);
		hdqt_qconfig q0 = q;
		q0.bwd_fwdq = 0;
		ck_assert_int_eq(linear_backward(&B, Xh, unsig, dY, N, &q0, &s2, &r2, dX2), 0);
		ck_assert_mem_eq(g1, B.gw, sizeof(float) * M * K);
		ck_assert_mem_eq(dX1, dX2, sizeof(float) * N * K);
		/* and the float operands give another gradient */
		hdqt_rng_seed(&r1, 4, 1);
		ck_assert_int_eq(linear_backward(&A, X, unsig, dY, N, &q0, &s1, &r1, dX1), 0);
		ck_assert(memcmp(g1, A.gw, sizeof(float) * M * K) != 0);
		linear_scratch_free(&s1);
		linear_scratch_free(&s2);
		linear_free(&A);
		linear_free(&B);
	}
	free(X);
	free(dY);
	free(Xh);
	free(g1);
	free(dX1);
	free(dX2);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("model");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_weight_cache_is_transparent);
	tcase_add_test(tc, test_fp32_grad_finite_difference);
	tcase_add_test(tc, test_quantised_grads_align);
	tcase_add_test(tc, test_backward_uses_forward_values);
	tcase_add_test(tc, test_learns_separable_every_mode);
	tcase_add_test(tc, test_reproducible);
	tcase_add_test(tc, test_threads_bit_identical);
	tcase_add_test(tc, test_fp32_one_row);
	tcase_add_test(tc, test_blob_round_trip_and_corruption);
	tcase_add_test(tc, test_blob_v1_loads);
	tcase_add_test(tc, test_logit_affine);
	tcase_add_test(tc, test_logit_affine_blob);
	tcase_add_test(tc, test_head_growth_keeps_rows);
	tcase_add_test(tc, test_profile_phases);
	tcase_add_test(tc, test_bad_input_rejected);
	tcase_add_test(tc, test_distillation_gradient);
	suite_add_tcase(s, tc);
	return testutil_run(s);
}
