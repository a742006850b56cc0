/* SPDX-License-Identifier: MIT */
/* The export bundle's framing (lib/bundle.c) and the head remap an import
 * with --remap relies on (hdqt_model_remap_classes). */
#include <math.h>
#include <string.h>

#include "hdqt.h"
#include "hdqt_bundle.h"
#include "testutil.h"

static const char manifest[] = "{\"format\":\"hdqt-model-bundle\"}";
static const uint8_t model[] = {1, 2, 3, 4, 5, 6, 7};
static const float X[6] = {0.5f, -1.0f, 2.0f, 1e-3f, -7.25f, 3.0f};
static const int32_t y[2] = {1, 0};

static uint8_t *sample(size_t *len)
{
	hdqt_bundle b = {.manifest = manifest, .manifest_len = strlen(manifest), .model = model,
			 .model_len = sizeof(model), .ex_X = X, .ex_y = y, .n_ex = 2, .dim = 3};
	uint8_t *buf = NULL;
	ck_assert_int_eq(hdqt_bundle_write(&b, &buf, len), 0);
	return buf;
}

START_TEST(test_round_trip)
{
	size_t len;
	uint8_t *buf = sample(&len);
	ck_assert_uint_eq(len, HDQT_BUNDLE_HEADER + strlen(manifest) + sizeof(model) + 6 * 4 + 2 * 4 + 4);
	ck_assert_mem_eq(buf, HDQT_BUNDLE_MAGIC, 8);
	hdqt_bundle r;
	ck_assert_int_eq(hdqt_bundle_read(buf, len, &r), 0);
	ck_assert_uint_eq(r.manifest_len, strlen(manifest));
	ck_assert_mem_eq(r.manifest, manifest, r.manifest_len);
	ck_assert_uint_eq(r.model_len, sizeof(model));
	ck_assert_mem_eq(r.model, model, sizeof(model));
	ck_assert_int_eq(r.n_ex, 2);
	ck_assert_int_eq(r.dim, 3);
	ck_assert_mem_eq(r.ex_X, X, sizeof(X));
	ck_assert_mem_eq(r.ex_y, y, sizeof(y));
	hdqt_bundle_release(&r);
	free(buf);
}
END_TEST

START_TEST(test_every_damage_is_refused)
{
	size_t len;
	uint8_t *buf = sample(&len);
	hdqt_bundle r;
	/* Any single flipped bit anywhere, and every truncation. */
	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit++) {
			buf[i] ^= (uint8_t)(1u << bit);
			int rc = hdqt_bundle_read(buf, len, &r);
			ck_assert_msg(rc == HDQT_ECORRUPT || rc == HDQT_EVERSION, "byte %zu bit %d: %d", i,
				      bit, rc);
			buf[i] ^= (uint8_t)(1u << bit);
		}
	}
	for (size_t n = 0; n < len; n++)
		ck_assert_int_eq(hdqt_bundle_read(buf, n, &r), HDQT_ECORRUPT);
	ck_assert_int_eq(hdqt_bundle_read(buf, len, &r), 0);
	hdqt_bundle_release(&r);
	free(buf);
}
END_TEST

START_TEST(test_declared_sizes_are_checked_before_allocating)
{
	size_t len;
	uint8_t *buf = sample(&len);
	/* 2^24 exemplars of dimension 65536 declared in a small buffer. */
	buf[20] = 0;
	buf[21] = 0;
	buf[22] = 0;
	buf[23] = 1;
	buf[24] = 0;
	buf[25] = 0;
	buf[26] = 1;
	buf[27] = 0;
	hdqt_bundle r;
	ck_assert_int_eq(hdqt_bundle_read(buf, len, &r), HDQT_ECORRUPT);
	buf[8] = 2; /* a future version */
	ck_assert_int_eq(hdqt_bundle_read(buf, len, &r), HDQT_EVERSION);
	free(buf);
	hdqt_bundle b = {.manifest = manifest, .manifest_len = strlen(manifest), .model = model,
			 .model_len = 0};
	uint8_t *o = NULL;
	size_t ol;
	ck_assert_int_eq(hdqt_bundle_write(&b, &o, &ol), HDQT_EINVAL);
}
END_TEST

START_TEST(test_remap_moves_head_rows)
{
	hdqt_mlp_config mc = {.n_in = 12, .n_hidden = 1, .hidden = {16}, .n_classes = 3};
	hdqt_qconfig q;
	hdqt_qconfig_default(&q, HDQT_MODE_HDQT);
	hdqt_model *m = NULL, *c = NULL;
	ck_assert_int_eq(hdqt_model_new(&m, &mc, &q, 7), 0);
	ck_assert_int_eq(hdqt_model_clone(m, &c), 0);
	float in[2 * 12], a[2 * 3], b[2 * 5];
	hdqt_rng r;
	hdqt_rng_seed(&r, 3, 0);
	for (int i = 0; i < 24; i++)
		in[i] = hdqt_rng_normal(&r);
	ck_assert_int_eq(hdqt_model_forward(m, in, 2, a), 0);
	const int map[3] = {4, 0, 2};
	ck_assert_int_eq(hdqt_model_remap_classes(c, map, 5), 0);
	ck_assert_int_eq(hdqt_model_n_classes(c), 5);
	ck_assert_int_eq(hdqt_model_forward(c, in, 2, b), 0);
	/* Per-row scales: each output row's value depends on that row only. */
	for (int n = 0; n < 2; n++)
		for (int k = 0; k < 3; k++)
			ck_assert_float_eq(a[n * 3 + k], b[n * 5 + map[k]]);
	/* Through a blob, as an import stores it. */
	uint8_t *blob = NULL;
	size_t len;
	hdqt_model *l = NULL;
	ck_assert_int_eq(hdqt_model_save(c, &blob, &len), 0);
	ck_assert_int_eq(hdqt_model_load(blob, len, &l), 0);
	float b2[2 * 5];
	ck_assert_int_eq(hdqt_model_forward(l, in, 2, b2), 0);
	ck_assert_mem_eq(b, b2, sizeof(b));
	/* Bad maps change nothing. */
	const int dup[3] = {1, 1, 2}, out[3] = {0, 1, 9};
	ck_assert_int_eq(hdqt_model_remap_classes(m, dup, 4), HDQT_EINVAL);
	ck_assert_int_eq(hdqt_model_remap_classes(m, out, 4), HDQT_EINVAL);
	ck_assert_int_eq(hdqt_model_remap_classes(m, map, 2), HDQT_EINVAL);
	ck_assert_int_eq(hdqt_model_n_classes(m), 3);
	free(blob);
	hdqt_model_free(l);
	hdqt_model_free(c);
	hdqt_model_free(m);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("bundle");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_every_damage_is_refused);
	tcase_add_test(tc, test_declared_sizes_are_checked_before_allocating);
	tcase_add_test(tc, test_remap_moves_head_rows);
	suite_add_tcase(s, tc);
	return testutil_run(s);
}
