/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: lib/blob.c, hdqt_model_load on arbitrary bytes.
 * Each input is loaded twice: as it is (magic, version, length and CRC
 * checks), and with its magic, length and CRC fields repaired so that the
 * mutations reach the parser and the size checks behind them.  A blob that
 * loads must answer a forward pass, and it must save back to
 * the very same bytes when it is of the version save writes (4: with the
 * logit affine).  Seeds: corpus/blob/ (small models from mkseed.c).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "hdqt.h"

#define CHECK(c)                                                                               \
	do {                                                                                   \
		if (!(c)) {                                                                    \
			fprintf(stderr, "fuzz_blob: check failed: %s (line %d)\n", #c, __LINE__); \
			abort();                                                               \
		}                                                                              \
	} while (0)

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void try_load(const uint8_t *b, size_t n)
{
	hdqt_model *m = NULL;
	int rc = hdqt_model_load(b, n, &m);
	if (rc < 0) {
		CHECK(rc == HDQT_ECORRUPT || rc == HDQT_EVERSION || rc == HDQT_EINVAL ||
		      rc == HDQT_ENOMEM);
		CHECK(m == NULL);
		return;
	}
	CHECK(m);
	const int d = hdqt_model_n_in(m), C = hdqt_model_n_classes(m);
	CHECK(d >= 1 && C >= 1);
	/* The blob holds every weight, so a model that loads from a small input is small. */
	float *X = calloc((size_t)2 * d, sizeof(float));
	float *logits = malloc(sizeof(float) * 2 * (size_t)C);
	int *pred = malloc(sizeof(int) * 2);
	CHECK(X && logits && pred);
	for (int i = 0; i < d; i++)
		X[d + i] = (float)(i % 7) - 3.0f;
	rc = hdqt_model_forward(m, X, 2, logits);
	CHECK(rc == 0 || rc == HDQT_ERANGE);
	rc = hdqt_model_predict(m, X, 2, pred);
	CHECK(rc < 0 || (pred[0] >= 0 && pred[0] < C && pred[1] >= 0 && pred[1] < C));
	uint32_t ver = (uint32_t)b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 |
		       (uint32_t)b[11] << 24;
	uint8_t *out = NULL;
	size_t len = 0;
	CHECK(hdqt_model_save(m, &out, &len) == 0);
	/* A blob of the version save writes comes back byte for byte (older
	 * versions load into the newer layout, so they grow). */
	const uint32_t ver_out = (uint32_t)out[8] | (uint32_t)out[9] << 8 | (uint32_t)out[10] << 16 |
				 (uint32_t)out[11] << 24;
	if (ver == ver_out) {
		if (len != n || memcmp(out, b, n) != 0) {
			fprintf(stderr, "fuzz_blob: load + save is not the identity (%zu -> %zu bytes)\n",
				n, len);
			abort();
		}
	}
	/* What was saved loads again. */
	hdqt_model *m2 = NULL;
	CHECK(hdqt_model_load(out, len, &m2) == 0);
	hdqt_model_free(m2);
	free(out);
	free(X);
	free(logits);
	free(pred);
	hdqt_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	try_load(data, size);
	if (size < 20)
		return 0;
	uint8_t *b = malloc(size);
	CHECK(b);
	memcpy(b, data, size);
	memcpy(b, "HDQTMDL1", 8);
	put_u32(b + 12, (uint32_t)(size - 20));
	put_u32(b + size - 4, (uint32_t)crc32(0L, b, (uInt)(size - 4)));
	try_load(b, size);
	free(b);
	return 0;
}
