/* SPDX-License-Identifier: MIT */
/*
 * JSON-RPC 2.0 framing and message helpers shared by hdqtd and its clients.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hdqt.h"
#include "hdqt_proto.h"

const char *hdqt_rpc_code_name(int code)
{
	switch (code) {
	case HDQT_RPC_PARSE_ERROR: return "parse_error";
	case HDQT_RPC_INVALID_REQUEST: return "invalid_request";
	case HDQT_RPC_METHOD_NOT_FOUND: return "method_not_found";
	case HDQT_RPC_INVALID_PARAMS: return "invalid_params";
	case HDQT_RPC_INTERNAL_ERROR: return "internal_error";
	case HDQT_RPC_UNKNOWN_CLASS: return "unknown_class";
	case HDQT_RPC_CLASS_EXISTS: return "class_exists";
	case HDQT_RPC_BUSY: return "busy";
	case HDQT_RPC_NO_MODEL: return "no_model";
	case HDQT_RPC_LIMIT: return "limit";
	case HDQT_RPC_TOO_MANY_CONNECTIONS: return "too_many_connections";
	case HDQT_RPC_STORAGE: return "storage";
	case HDQT_RPC_FORBIDDEN: return "forbidden";
	case HDQT_RPC_TOO_LARGE: return "too_large";
	case HDQT_RPC_NOT_FOUND: return "not_found";
	case HDQT_RPC_SHUTTING_DOWN: return "shutting_down";
	case HDQT_RPC_INCOMPATIBLE: return "incompatible";
	case HDQT_RPC_CORRUPT: return "corrupt";
	default: return "error";
	}
}

/* ---- framing ---- */

int hdqt_linebuf_init(hdqt_linebuf *lb, size_t max)
{
	if (!lb || max < 2)
		return HDQT_EINVAL;
	memset(lb, 0, sizeof(*lb));
	lb->max = max;
	return 0;
}

void hdqt_linebuf_free(hdqt_linebuf *lb)
{
	if (!lb)
		return;
	free(lb->buf);
	memset(lb, 0, sizeof(*lb));
}

size_t hdqt_linebuf_partial(const hdqt_linebuf *lb)
{
	return lb->len - lb->pos;
}

int hdqt_linebuf_feed(hdqt_linebuf *lb, const char *data, size_t n)
{
	if (!lb || (!data && n))
		return HDQT_EINVAL;
	/* Drop consumed lines before growing. */
	if (lb->pos > 0) {
		memmove(lb->buf, lb->buf + lb->pos, lb->len - lb->pos);
		lb->len -= lb->pos;
		lb->pos = 0;
	}
	/* Every line (the held partial one continued by data, and each line
	 * within data) must fit in max bytes.  Callers drain complete lines
	 * with next() after each feed, so what is held is one partial line.
	 * On overflow the complete lines before the oversized one are still
	 * appended, so that they can be answered before the stream is given up. */
	size_t run = lb->len, take = n;
	int full = 0;
	for (const char *p = data, *end = data + n; p < end;) {
		const char *q = memchr(p, '\n', (size_t)(end - p));
		size_t seg = (size_t)((q ? q : end) - p);
		if (run + seg > lb->max) {
			take = (size_t)(p - data);
			full = 1;
			break;
		}
		if (!q)
			break;
		run = 0;
		p = q + 1;
	}
	size_t need = lb->len + take + 1;
	if (need > lb->cap) {
		size_t cap = lb->cap ? lb->cap : 4096;
		while (cap < need)
			cap *= 2;
		char *b = realloc(lb->buf, cap);
		if (!b)
			return HDQT_ENOMEM;
		lb->buf = b;
		lb->cap = cap;
	}
	if (take)
		memcpy(lb->buf + lb->len, data, take);
	lb->len += take;
	return full ? HDQT_EFULL : 0;
}

void hdqt_linebuf_shrink(hdqt_linebuf *lb)
{
	if (!lb || !lb->buf || lb->cap <= HDQT_LINEBUF_KEEP)
		return;
	const size_t held = lb->len - lb->pos;
	size_t cap = HDQT_LINEBUF_KEEP; /* lines up to it never reallocate */
	while (cap < held + 1)
		cap *= 2;
	if (cap > lb->cap / 4) /* not worth a copy */
		return;
	memmove(lb->buf, lb->buf + lb->pos, held);
	lb->len = held;
	lb->pos = 0;
	char *b = realloc(lb->buf, cap);
	if (b) { /* a failed shrink keeps the larger block, which still holds it all */
		lb->buf = b;
		lb->cap = cap;
	}
}

char *hdqt_linebuf_next(hdqt_linebuf *lb, size_t *len)
{
	if (!lb || !lb->buf || lb->pos >= lb->len)
		return NULL;
	char *start = lb->buf + lb->pos;
	char *nl = memchr(start + lb->scan, '\n', lb->len - lb->pos - lb->scan);
	if (!nl) {
		lb->scan = lb->len - lb->pos;
		return NULL;
	}
	size_t l = (size_t)(nl - start);
	lb->pos += l + 1;
	lb->scan = 0;
	if (l > 0 && start[l - 1] == '\r')
		l--;
	start[l] = '\0';
	if (len)
		*len = l;
	return start;
}

/* ---- messages ---- */

static cJSON *envelope(void)
{
	cJSON *m = cJSON_CreateObject();
	if (m && !cJSON_AddStringToObject(m, "jsonrpc", "2.0")) {
		cJSON_Delete(m);
		return NULL;
	}
	return m;
}

cJSON *hdqt_rpc_request(const char *method, cJSON *params, int64_t id)
{
	cJSON *m = envelope();
	if (!m || !cJSON_AddStringToObject(m, "method", method)) {
		cJSON_Delete(params);
		cJSON_Delete(m);
		return NULL;
	}
	if (params)
		cJSON_AddItemToObject(m, "params", params);
	if (id >= 0 && !cJSON_AddNumberToObject(m, "id", (double)id)) {
		cJSON_Delete(m);
		return NULL;
	}
	return m;
}

static int add_id(cJSON *m, const cJSON *id)
{
	cJSON *c = id ? cJSON_Duplicate(id, 1) : cJSON_CreateNull();
	if (!c)
		return -1;
	cJSON_AddItemToObject(m, "id", c);
	return 0;
}

cJSON *hdqt_rpc_result(const cJSON *id, cJSON *result)
{
	cJSON *m = envelope();
	if (!m || !result) {
		cJSON_Delete(m);
		cJSON_Delete(result);
		return NULL;
	}
	cJSON_AddItemToObject(m, "result", result);
	if (add_id(m, id) < 0) {
		cJSON_Delete(m);
		return NULL;
	}
	return m;
}

cJSON *hdqt_rpc_error(const cJSON *id, int code, const char *message, cJSON *data)
{
	cJSON *m = envelope();
	cJSON *e = cJSON_CreateObject();
	if (!m || !e || !cJSON_AddNumberToObject(e, "code", code) ||
	    !cJSON_AddStringToObject(e, "message", message ? message : hdqt_rpc_code_name(code))) {
		cJSON_Delete(m);
		cJSON_Delete(e);
		cJSON_Delete(data);
		return NULL;
	}
	if (data)
		cJSON_AddItemToObject(e, "data", data);
	cJSON_AddItemToObject(m, "error", e);
	if (add_id(m, id) < 0) {
		cJSON_Delete(m);
		return NULL;
	}
	return m;
}

cJSON *hdqt_rpc_event(const char *type, cJSON *params)
{
	if (!params)
		params = cJSON_CreateObject();
	if (!params || !cJSON_AddStringToObject(params, "type", type)) {
		cJSON_Delete(params);
		return NULL;
	}
	return hdqt_rpc_request("event", params, -1);
}

char *hdqt_rpc_print(const cJSON *msg, size_t *len)
{
	char *s = msg ? cJSON_PrintUnformatted(msg) : NULL;
	if (!s)
		return NULL;
	size_t l = strlen(s);
	char *out = realloc(s, l + 2);
	if (!out) {
		cJSON_free(s);
		return NULL;
	}
	out[l] = '\n';
	out[l + 1] = '\0';
	if (len)
		*len = l + 1;
	return out;
}

int hdqt_rpc_parse_response(const char *line, cJSON **root, const cJSON **result,
			    const char **message)
{
	*root = NULL;
	*result = NULL;
	if (message)
		*message = NULL;
	cJSON *m = cJSON_Parse(line);
	if (!m)
		return HDQT_EFORMAT;
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, "jsonrpc");
	const cJSON *r = cJSON_GetObjectItemCaseSensitive(m, "result");
	const cJSON *e = cJSON_GetObjectItemCaseSensitive(m, "error");
	if (!cJSON_IsObject(m) || !cJSON_IsString(v) || strcmp(v->valuestring, "2.0") != 0 ||
	    (!r == !e)) {
		cJSON_Delete(m);
		return HDQT_EFORMAT;
	}
	*root = m;
	if (r) {
		*result = r;
		return 0;
	}
	const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
	const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
	if (message && cJSON_IsString(msg))
		*message = msg->valuestring;
	int c = cJSON_IsNumber(code) ? code->valueint : HDQT_RPC_INTERNAL_ERROR;
	return c < 0 && c < -1000 ? c : HDQT_RPC_INTERNAL_ERROR;
}

/* ---- values ---- */

int hdqt_rpc_floats(const cJSON *arr, float *out, int max, int *bad)
{
	int dummy;
	if (!bad)
		bad = &dummy;
	*bad = -1;
	if (!cJSON_IsArray(arr))
		return HDQT_EINVAL;
	int n = 0;
	const cJSON *v;
	cJSON_ArrayForEach(v, arr) {
		if (n >= max) {
			*bad = n;
			return HDQT_EINVAL;
		}
		if (!cJSON_IsNumber(v)) {
			*bad = n;
			return HDQT_EINVAL;
		}
		double d = v->valuedouble;
		if (!isfinite(d) || fabs(d) > FLT_MAX) {
			*bad = n;
			return HDQT_ERANGE;
		}
		out[n++] = (float)d;
	}
	return n;
}

int hdqt_rpc_window(const cJSON *arr, int rows, int cols, float *out, char *err, size_t errlen)
{
	if (!cJSON_IsArray(arr)) {
		snprintf(err, errlen, "window must be an array of %d rows", rows);
		return HDQT_EINVAL;
	}
	int n = cJSON_GetArraySize(arr);
	if (n != rows) {
		snprintf(err, errlen, "window has %d rows, expected %d", n, rows);
		return HDQT_EINVAL;
	}
	int r = 0;
	const cJSON *row;
	cJSON_ArrayForEach(row, arr) {
		int bad;
		int got = hdqt_rpc_floats(row, out + (size_t)r * cols, cols, &bad);
		if (got == HDQT_ERANGE) {
			snprintf(err, errlen, "window row %d column %d is not a finite number", r, bad);
			return got;
		}
		if (got != cols) {
			snprintf(err, errlen, "window row %d must be an array of %d numbers", r, cols);
			return HDQT_EINVAL;
		}
		r++;
	}
	return 0;
}

cJSON *hdqt_rpc_float(float v)
{
	if (!isfinite(v))
		return cJSON_CreateNull();
	/* 9 significant digits identify every float (FLT_DECIMAL_DIG); %g's
	 * forms ("0.5", "1e-07", "-3.40282347e+38") are all JSON numbers. */
	char b[32];
	snprintf(b, sizeof(b), "%.9g", (double)v);
	return cJSON_CreateRaw(b);
}

cJSON *hdqt_rpc_add_float(cJSON *o, const char *key, float v)
{
	cJSON *x = hdqt_rpc_float(v);
	if (!x || !cJSON_AddItemToObject(o, key, x)) {
		cJSON_Delete(x);
		return NULL;
	}
	return x;
}

cJSON *hdqt_rpc_float_array(const float *x, int n)
{
	cJSON *a = cJSON_CreateArray();
	for (int i = 0; a && i < n; i++) {
		/* A request's NaN stays a NaN number, which hdqt_client_call
		 * refuses before sending; null would go out and be refused by
		 * hdqtd as a malformed array. */
		cJSON *v = isfinite(x[i]) ? hdqt_rpc_float(x[i]) : cJSON_CreateNumber((double)x[i]);
		if (!v || !cJSON_AddItemToArray(a, v)) {
			cJSON_Delete(v);
			cJSON_Delete(a);
			return NULL;
		}
	}
	return a;
}

int hdqt_rpc_f32(const cJSON *v, float *out, int n, int *bad)
{
	int dummy;
	if (!bad)
		bad = &dummy;
	*bad = -1;
	if (!cJSON_IsString(v) || n < 0 || n > (1 << 24))
		return HDQT_EINVAL;
	const size_t bytes = (size_t)n * 4, want = (bytes + 2) / 3 * 4;
	const char *s = v->valuestring;
	if (strnlen(s, want + 1) != want)
		return HDQT_EINVAL;
	/* The decoder writes up to want / 4 * 3 bytes (2 past 4n before it
	 * knows the padding): decode aside, not into out. */
	uint8_t stack[1024], *b = want / 4 * 3 <= sizeof(stack) ? stack : malloc(want / 4 * 3);
	if (!b)
		return HDQT_ENOMEM;
	int rc = hdqt_base64_decode(s, want, b) == (long)bytes ? n : HDQT_EINVAL;
	for (int i = 0; rc == n && i < n; i++) {
		/* Little-endian on the wire whatever the host's order. */
		const uint8_t *p = b + (size_t)i * 4;
		uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
			     (uint32_t)p[3] << 24;
		float f;
		memcpy(&f, &u, sizeof(f));
		if (!isfinite(f)) {
			*bad = i;
			rc = HDQT_ERANGE;
		}
		out[i] = f;
	}
	if (b != stack)
		free(b);
	return rc;
}

char *hdqt_rpc_f32_encode(const float *x, int n)
{
	if (n < 0 || n > (1 << 24))
		return NULL;
	uint8_t *b = malloc((size_t)n * 4 + 1);
	if (!b)
		return NULL;
	for (int i = 0; i < n; i++) {
		uint32_t u;
		memcpy(&u, &x[i], sizeof(u));
		for (int k = 0; k < 4; k++)
			b[(size_t)i * 4 + k] = (uint8_t)(u >> (8 * k));
	}
	char *s = hdqt_base64_encode(b, (size_t)n * 4);
	free(b);
	return s;
}

/* ---- text checks ---- */

size_t hdqt_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	while (i < n) {
		/* JSON text is mostly ASCII: 8 bytes a test (every line is checked). */
		uint64_t w;
		while (n - i >= 8 && (memcpy(&w, p + i, 8), (w & 0x8080808080808080ull) == 0))
			i += 8;
		if (i == n)
			break;
		unsigned c = p[i];
		size_t k;
		unsigned min;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			k = 1, min = 0x80, c &= 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			k = 2, min = 0x800, c &= 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			k = 3, min = 0x10000, c &= 0x07;
		} else {
			return i;
		}
		if (k >= n - i)
			return i;
		for (size_t j = 1; j <= k; j++) {
			if ((p[i + j] & 0xc0) != 0x80)
				return i;
			c = (c << 6) | (p[i + j] & 0x3f);
		}
		/* Overlong forms, UTF-16 surrogates and code points past U+10FFFF
		 * are not UTF-8 (RFC 3629, section 3). */
		if (c < min || (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
			return i;
		i += k + 1;
	}
	return n;
}

size_t hdqt_json_nul_escape(const char *s, size_t n)
{
	const char *p = s, *e = s + n;
	/* From backslash to backslash: each starts an escape of one character,
	 * so an escaped backslash followed by the text u0000 is no NUL. */
	while ((p = memchr(p, '\\', (size_t)(e - p))) != NULL) {
		if (e - p >= 6 && !memcmp(p + 1, "u0000", 5))
			return (size_t)(p - s);
		p += 2;
		if (p >= e)
			break;
	}
	return n;
}

size_t hdqt_utf8_prefix(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n <= max)
		return n;
	/* Back up over continuation bytes so that no character is cut. */
	while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
		max--;
	return max;
}

/* ---- raw member spans (exact id echo) ---- */

static const char *skip_ws(const char *p, const char *e)
{
	while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	return p;
}

static const char *skip_string(const char *p, const char *e)
{
	for (p++; p < e; p++) {
		if (*p == '\\')
			p++;
		else if (*p == '"')
			return p + 1;
	}
	return NULL;
}

/* The end of the JSON value starting at p (text already accepted by cJSON). */
static const char *skip_value(const char *p, const char *e)
{
	p = skip_ws(p, e);
	if (p >= e)
		return NULL;
	if (*p == '"')
		return skip_string(p, e);
	if (*p == '{' || *p == '[') {
		int depth = 0;
		while (p < e) {
			if (*p == '"') {
				if (!(p = skip_string(p, e)))
					return NULL;
				continue;
			}
			if (*p == '{' || *p == '[')
				depth++;
			else if (*p == '}' || *p == ']') {
				if (--depth == 0)
					return p + 1;
			}
			p++;
		}
		return NULL;
	}
	while (p < e && !strchr(",]} \t\r\n", *p))
		p++;
	return p;
}

int hdqt_json_elements(const char *text, size_t len, hdqt_span *out, int max)
{
	const char *p = skip_ws(text, text + len), *e = text + len;
	if (p >= e || *p != '[')
		return HDQT_EINVAL;
	p = skip_ws(p + 1, e);
	int n = 0;
	if (p < e && *p == ']')
		return 0;
	while (p < e) {
		const char *q = skip_value(p, e);
		if (!q)
			return HDQT_EINVAL;
		p = skip_ws(p, e);
		if (n < max) {
			out[n].off = (size_t)(p - text);
			out[n].len = (size_t)(q - p);
		}
		n++;
		p = skip_ws(q, e);
		if (p < e && *p == ',') {
			p = skip_ws(p + 1, e);
			continue;
		}
		break;
	}
	return n;
}

int hdqt_json_member(const char *text, size_t len, const char *key, hdqt_span *out)
{
	const char *p = skip_ws(text, text + len), *e = text + len;
	const size_t kl = strlen(key);
	if (p >= e || *p != '{')
		return HDQT_EINVAL;
	p = skip_ws(p + 1, e);
	while (p < e && *p == '"') {
		const char *k = p, *ke = skip_string(p, e);
		if (!ke)
			return HDQT_EINVAL;
		p = skip_ws(ke, e);
		if (p >= e || *p != ':')
			return HDQT_EINVAL;
		p = skip_ws(p + 1, e);
		const char *ve = skip_value(p, e);
		if (!ve)
			return HDQT_EINVAL;
		if ((size_t)(ke - k) == kl + 2 && memcmp(k + 1, key, kl) == 0) {
			out->off = (size_t)(p - text);
			out->len = (size_t)(ve - p);
			return 0;
		}
		p = skip_ws(ve, e);
		if (p < e && *p == ',')
			p = skip_ws(p + 1, e);
		else
			break;
	}
	return HDQT_ENOTFOUND;
}

/* ---- base64 (RFC 4648, with padding) ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *hdqt_base64_encode(const uint8_t *p, size_t n)
{
	char *o = malloc((n + 2) / 3 * 4 + 1), *q = o;
	if (!o)
		return NULL;
	size_t i = 0;
	for (; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		*q++ = b64[v >> 18];
		*q++ = b64[(v >> 12) & 63];
		*q++ = b64[(v >> 6) & 63];
		*q++ = b64[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
		*q++ = b64[v >> 18];
		*q++ = b64[(v >> 12) & 63];
		*q++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
		*q++ = '=';
	}
	*q = 0;
	return o;
}

/* Inverse of b64: the value of each byte, -1 for bytes outside the alphabet. */
static const signed char b64_inv[256] = {
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1, -1, 63,
	52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
	-1,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
	15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, -1,
	-1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
	41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
	-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

long hdqt_base64_decode(const char *s, size_t n, uint8_t *out)
{
	if (n % 4)
		return -1;
	const unsigned char *u = (const unsigned char *)s;
	size_t o = 0, full = n >= 4 ? n - 4 : 0;
	/* Every quad but the last has no padding: four table look-ups. */
	for (size_t i = 0; i < full; i += 4) {
		int a = b64_inv[u[i]], b = b64_inv[u[i + 1]], c = b64_inv[u[i + 2]], d = b64_inv[u[i + 3]];
		if ((a | b | c | d) < 0)
			return -1;
		uint32_t x = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
		out[o++] = (uint8_t)(x >> 16);
		out[o++] = (uint8_t)(x >> 8);
		out[o++] = (uint8_t)x;
	}
	if (n == 0)
		return 0;
	/* The last quad: "xx==", "xxx=" or "xxxx". */
	const unsigned char *q = u + full;
	int pad = q[3] == '=' ? (q[2] == '=' ? 2 : 1) : 0;
	int v[4];
	for (int k = 0; k < 4; k++) {
		v[k] = k >= 4 - pad ? 0 : b64_inv[q[k]];
		if (v[k] < 0)
			return -1;
	}
	/* The bits of the last character past the data must be zero (RFC 4648,
	 * 3.5): otherwise 16 texts would decode to the same bytes. */
	if ((pad == 2 && (v[1] & 15)) || (pad == 1 && (v[2] & 3)))
		return -1;
	uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
	out[o++] = (uint8_t)(x >> 16);
	if (pad < 2)
		out[o++] = (uint8_t)(x >> 8);
	if (pad < 1)
		out[o++] = (uint8_t)x;
	return (long)o;
}
