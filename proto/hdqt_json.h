/* SPDX-License-Identifier: MIT */
/*
 * One JSON text parsed into the cJSON tree the rest of hdqtd works on,
 * faster where simdjson is built in (meson option simdjson): a predict of
 * 166 numbers took cJSON 28-31 us, most of it in glibc's strtod, and this
 * 8 us, the tree built from simdjson's result included (README,
 * Throughput).
 *
 * The accepted texts and the trees are cJSON's, bit for bit: simdjson
 * takes only what it is sure cJSON takes alike (strict RFC 8259 JSON,
 * nesting within simdjson's max_depth of HDQT_JSON_FAST_DEPTH, numbers of fewer than 64 characters,
 * no NUL in a string, texts up to the parser's capacity), and everything
 * else goes to cJSON, which decides as it always did.  test_proto.c and
 * the fuzz target json compare the two on the same texts.
 */
#ifndef HDQT_JSON_H
#define HDQT_JSON_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* Deeper texts go to cJSON (its own limit is 1000). */
#define HDQT_JSON_FAST_DEPTH 64

/* A reusable parser: its buffers for texts up to the capacity given at
 * creation.  One thread at a time. */
typedef struct hdqt_json hdqt_json;

/* A parser for texts up to cap bytes (longer ones go to cJSON); NULL
 * without memory.  Without simdjson in the build it holds nothing and
 * every text goes to cJSON. */
hdqt_json *hdqt_json_new(size_t cap);
void hdqt_json_free(hdqt_json *p);
/* 1 if simdjson is built in. */
int hdqt_json_fast_available(void);

/* s[0..n) (no NUL needed) as one JSON value followed only by spaces, tabs
 * and carriage returns: the tree, or NULL if the text is not that (or on
 * allocation failure).  p may be NULL: cJSON alone. */
cJSON *hdqt_json_parse(hdqt_json *p, const char *s, size_t n);
/* The same text through cJSON alone (the reference the tests compare to). */
cJSON *hdqt_json_parse_cjson(const char *s, size_t n);
/* How the last hdqt_json_parse of p went: 1 simdjson, 0 cJSON. */
int hdqt_json_last_fast(const hdqt_json *p);

#endif
