/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: lib/features.c, hdqt_feat_extract on arbitrary floats.
 * Input: byte 0 picks the window (16..526 readings, even; 128, the default,
 * for byte 0 == 0), the rest are the readings as float32 (little endian,
 * row-major window x 6, zero-padded or cut).  Checks: HDQT_ERANGE exactly
 * when a reading is not finite or beyond +-1e6; otherwise all 166 features
 * finite, and the same window gives the same features again.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hdqt.h"
#include "hdqt_data.h"

#define CHECK(c)                                                                               \
	do {                                                                                   \
		if (!(c)) {                                                                    \
			fprintf(stderr, "fuzz_features: check failed: %s (line %d)\n", #c,       \
				__LINE__);                                                     \
			abort();                                                               \
		}                                                                              \
	} while (0)

#define WMAX 526
static hdqt_feat *cache[WMAX + 1]; /* one extractor per window, kept for the run */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const int w = data[0] == 0 ? 128 : 16 + 2 * (data[0] - 1);
	data++;
	size--;
	if (!cache[w])
		CHECK(hdqt_feat_new(&cache[w], w) == 0);
	hdqt_feat *f = cache[w];
	CHECK(hdqt_feat_window(f) == w && hdqt_feat_dim(f) == HDQT_FEAT_DIM);
	const size_t n = (size_t)w * HDQT_FEAT_CHANNELS;
	float *rows = calloc(n, sizeof(float));
	CHECK(rows);
	memcpy(rows, data, size < n * 4 ? size : n * 4);
	int in_range = 1;
	for (size_t i = 0; i < n; i++)
		in_range &= isfinite(rows[i]) && fabsf(rows[i]) <= 1e6f;
	float out[HDQT_FEAT_DIM], again[HDQT_FEAT_DIM];
	int rc = hdqt_feat_extract(f, rows, out);
	if (!in_range) {
		CHECK(rc == HDQT_ERANGE);
	} else {
		CHECK(rc == 0);
		for (int i = 0; i < HDQT_FEAT_DIM; i++) {
			if (!isfinite(out[i])) {
				char name[64];
				fprintf(stderr, "fuzz_features: feature %d (%s) is %g\n", i,
					hdqt_feat_name(i, name, sizeof(name)), (double)out[i]);
				abort();
			}
		}
		CHECK(hdqt_feat_extract(f, rows, again) == 0);
		CHECK(memcmp(out, again, sizeof(out)) == 0);
	}
	free(rows);
	return 0;
}
