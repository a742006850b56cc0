/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: the JSON-RPC layer of proto/hdqt_proto.c on arbitrary
 * input: cJSON_ParseWithLength (as the daemon parses a line), then
 * hdqt_rpc_parse_response (as the clients parse a reply), hdqt_rpc_floats,
 * hdqt_rpc_window and hdqt_rpc_f32 on the parsed value and on its members, and the
 * message builders on whatever id the input holds.  Checks: the counts and
 * codes the header promises, floats finite, results re-serialise and parse.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hdqt.h"
#include "hdqt_proto.h"

#define CHECK(c)                                                                               \
	do {                                                                                   \
		if (!(c)) {                                                                    \
			fprintf(stderr, "fuzz_rpc: check failed: %s (line %d)\n", #c, __LINE__);  \
			abort();                                                               \
		}                                                                              \
	} while (0)

#define MAXF 1024

static void floats(const cJSON *v)
{
	static float out[MAXF];
	int bad = -2;
	int max = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 4;
	if (max > MAXF)
		max = MAXF;
	int n = hdqt_rpc_floats(v, out, max, &bad);
	CHECK(n >= 0 || n == HDQT_EINVAL || n == HDQT_ERANGE);
	if (n >= 0) {
		CHECK(bad == -1 && n <= max);
		for (int i = 0; i < n; i++)
			CHECK(isfinite(out[i]));
	} else if (cJSON_IsArray(v)) {
		CHECK(bad >= 0 && bad <= max);
	}
	/* With a smaller bound, an array that fits is still read, one that does not is refused. */
	if (max > 0 && n > 0) {
		int m = hdqt_rpc_floats(v, out, n - 1, &bad);
		CHECK(m == HDQT_EINVAL && bad == n - 1);
	}
	hdqt_rpc_floats(v, out, max, NULL);
}

static void window(const cJSON *v)
{
	if (!cJSON_IsArray(v))
		return;
	int rows = cJSON_GetArraySize(v);
	int cols = cJSON_GetArraySize(cJSON_GetArrayItem(v, 0));
	if (rows < 1 || cols < 1 || (size_t)rows * cols > 1u << 16)
		cols = 6;
	if ((size_t)rows * cols > 1u << 16)
		return;
	float *out = malloc(sizeof(float) * (size_t)rows * cols);
	CHECK(out);
	char err[160];
	int rc = hdqt_rpc_window(v, rows, cols, out, err, sizeof(err));
	CHECK(rc == 0 || rc == HDQT_EINVAL || rc == HDQT_ERANGE);
	if (rc == 0)
		for (size_t i = 0; i < (size_t)rows * cols; i++)
			CHECK(isfinite(out[i]));
	/* A wrong row count is refused. */
	CHECK(hdqt_rpc_window(v, rows + 1, cols, out, err, sizeof(err)) == HDQT_EINVAL);
	free(out);
}

/* The binary form: a string of padded base64 holding n float32. */
static void f32(const cJSON *v)
{
	static float out[MAXF];
	if (!cJSON_IsString(v))
		return;
	const size_t len = strlen(v->valuestring);
	const int n = (int)(len / 4 * 3 / 4); /* the count a string this long could hold */
	for (int k = n > 2 ? n - 2 : 0; k <= n + 1 && k <= MAXF; k++) {
		int bad = -2;
		int rc = hdqt_rpc_f32(v, out, k, &bad);
		CHECK(rc == k || rc == HDQT_EINVAL || rc == HDQT_ERANGE);
		if (rc == k) {
			CHECK(bad == -1 && len == ((size_t)k * 4 + 2) / 3 * 4);
			for (int i = 0; i < k; i++)
				CHECK(isfinite(out[i]));
			/* What decodes encodes back to the same text. */
			char *e = hdqt_rpc_f32_encode(out, k);
			CHECK(e && strcmp(e, v->valuestring) == 0);
			cJSON *s = cJSON_CreateString(e);
			CHECK(s);
			float again[MAXF];
			CHECK(hdqt_rpc_f32(s, again, k, NULL) == k);
			CHECK(memcmp(again, out, sizeof(float) * (size_t)k) == 0);
			cJSON_Delete(s);
			free(e);
		} else if (rc == HDQT_ERANGE) {
			CHECK(bad >= 0 && bad < k && !isfinite(out[bad]));
		} else {
			CHECK(bad == -1);
		}
	}
}

static void reprint(const cJSON *m)
{
	size_t len = 0;
	char *s = hdqt_rpc_print(m, &len);
	if (!s)
		return;
	CHECK(len == strlen(s) && len >= 2 && s[len - 1] == '\n');
	CHECK(memchr(s, '\n', len - 1) == NULL); /* one line: the framing depends on it */
	cJSON *back = cJSON_ParseWithLength(s, len);
	CHECK(back);
	cJSON_Delete(back);
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* As the daemon parses a received line. */
	cJSON *m = cJSON_ParseWithLength((const char *)data, size);
	if (m) {
		floats(m);
		window(m);
		const cJSON *it;
		int k = 0;
		cJSON_ArrayForEach(it, m) {
			if (k++ >= 16)
				break;
			floats(it);
			window(it);
			const cJSON *params = cJSON_GetObjectItemCaseSensitive(it, "params");
			floats(cJSON_GetObjectItemCaseSensitive(params, "features"));
			window(cJSON_GetObjectItemCaseSensitive(params, "window"));
			f32(it);
			f32(cJSON_GetObjectItemCaseSensitive(params, "features_f32"));
		}
		const cJSON *params = cJSON_GetObjectItemCaseSensitive(m, "params");
		floats(cJSON_GetObjectItemCaseSensitive(params, "features"));
		window(cJSON_GetObjectItemCaseSensitive(params, "window"));
		f32(m);
		f32(cJSON_GetObjectItemCaseSensitive(params, "features_f32"));
		f32(cJSON_GetObjectItemCaseSensitive(params, "window_f32"));
		reprint(m);
		/* Replies echo whatever id came in. */
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
		cJSON *r = hdqt_rpc_result(id, cJSON_CreateTrue());
		reprint(r);
		cJSON_Delete(r);
		const cJSON *msg = cJSON_GetObjectItemCaseSensitive(m, "method");
		r = hdqt_rpc_error(id, HDQT_RPC_INVALID_PARAMS,
				   cJSON_IsString(msg) ? msg->valuestring : NULL, cJSON_Duplicate(m, 1));
		reprint(r);
		cJSON_Delete(r);
		cJSON_Delete(m);
	}
	/* As a client parses a reply (NUL-terminated line). */
	char *line = malloc(size + 1);
	CHECK(line);
	memcpy(line, data, size);
	line[size] = '\0';
	cJSON *root = NULL;
	const cJSON *result = NULL;
	const char *message = NULL;
	int rc = hdqt_rpc_parse_response(line, &root, &result, &message);
	if (rc == 0) {
		CHECK(root && result);
	} else if (rc == HDQT_EFORMAT) {
		CHECK(!root && !result);
	} else {
		CHECK(rc < -1000 && root && !result);
		const char *name = hdqt_rpc_code_name(rc);
		CHECK(name && *name);
	}
	if (result) {
		floats(result);
		window(result);
	}
	cJSON_Delete(root);
	free(line);
	return 0;
}
