/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: hdqt_json_parse (proto/hdqt_json.h) against cJSON on
 * arbitrary input.  Check: the same tree bit for bit (types, keys,
 * strings, each number's double and int, child order and links) or both
 * NULL, for the whole input and for it cut at every line break (the
 * daemon parses one line at a time).  Without simdjson in the build the
 * two are the same code and the target checks only that it does not crash.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hdqt_json.h"
#include "json_same.h"

#define CHECK(c)                                                                               \
	do {                                                                                   \
		if (!(c)) {                                                                    \
			fprintf(stderr, "fuzz_json: check failed: %s (line %d)\n", #c, __LINE__); \
			abort();                                                               \
		}                                                                              \
	} while (0)


static hdqt_json *parser;

static void one(const char *s, size_t n)
{
	cJSON *a = hdqt_json_parse(parser, s, n);
	cJSON *b = hdqt_json_parse_cjson(s, n);
	CHECK(json_same_tree(a, b));
	cJSON_Delete(a);
	cJSON_Delete(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	if (!parser)
		CHECK((parser = hdqt_json_new(1 << 16)) != NULL);
	const char *s = (const char *)d;
	one(s, n);
	for (size_t i = 0, start = 0; i <= n; i++)
		if (i == n || s[i] == '\n') {
			if (start > 0 || i < n)
				one(s + start, i - start);
			start = i + 1;
		}
	return 0;
}
