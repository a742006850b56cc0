/* SPDX-License-Identifier: MIT */
/* proto/hdqt_proto.c: the UTF-8 check against a byte-at-a-time reference
 * (its ASCII path tests 8 bytes at once, so every offset of the first
 * non-ASCII byte matters), and floats printed for replies: one %.9g each,
 * read back as the same float, parsed by cJSON as a number. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hdqt.h"
#include "hdqt_json.h"
#include "hdqt_proto.h"
#include "json_same.h"
#include "testutil.h"

/* RFC 3629 one byte at a time: the longest valid prefix. */
static size_t utf8_ref(const unsigned char *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned c = p[i], k, min;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			k = 1, min = 0x80, c &= 0x1f;
		else if ((c & 0xf0) == 0xe0)
			k = 2, min = 0x800, c &= 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			k = 3, min = 0x10000, c &= 0x07;
		else
			return i;
		if (i + k >= n)
			return i;
		for (unsigned j = 1; j <= k; j++) {
			if ((p[i + j] & 0xc0) != 0x80)
				return i;
			c = (c << 6) | (p[i + j] & 0x3f);
		}
		if (c < min || (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
			return i;
		i += k + 1;
	}
	return n;
}

static uint64_t rng = 88172645463325252ull;
static unsigned rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned)(rng >> 16);
}

START_TEST(test_utf8_every_offset)
{
	/* One bad byte (or a valid multi-byte character, or a truncated one)
	 * after a run of ASCII of every length 0..40, then more ASCII. */
	static const char *const ins[] = {"\xff", "\x80", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
					  "\xc3", "\xe2\x82", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80"};
	char b[128];
	for (size_t a = 0; a <= 40; a++) {
		for (size_t k = 0; k < sizeof(ins) / sizeof(ins[0]); k++) {
			for (size_t tail = 0; tail <= 9; tail += 9) {
				memset(b, 'a', a);
				size_t l = strlen(ins[k]);
				memcpy(b + a, ins[k], l);
				memset(b + a + l, 'z', tail);
				size_t n = a + l + tail;
				size_t want = utf8_ref((const unsigned char *)b, n);
				ck_assert_msg(hdqt_utf8_valid(b, n) == want,
					      "ascii %zu, insert %zu, tail %zu: %zu, want %zu", a, k, tail,
					      hdqt_utf8_valid(b, n), want);
			}
		}
	}
	/* Random text, mostly ASCII, some of it broken. */
	unsigned char r[300];
	for (int t = 0; t < 20000; t++) {
		size_t n = rnd() % sizeof(r);
		for (size_t i = 0; i < n; i++) {
			unsigned x = rnd() % 64;
			r[i] = x < 60 ? (unsigned char)(0x20 + rnd() % 95) : (unsigned char)(0x80 + rnd() % 128);
		}
		ck_assert_uint_eq(hdqt_utf8_valid((const char *)r, n), utf8_ref(r, n));
	}
	ck_assert_uint_eq(hdqt_utf8_valid("", 0), 0);
}
END_TEST

/* The text hdqt_rpc_float gives v, printed by cJSON; "" for a non-raw item. */
static void print_float(float v, char *out, size_t cap)
{
	cJSON *a = cJSON_CreateArray();
	ck_assert_ptr_nonnull(a);
	cJSON *x = hdqt_rpc_float(v);
	ck_assert_ptr_nonnull(x);
	ck_assert(cJSON_AddItemToArray(a, x));
	char *s = cJSON_PrintUnformatted(a);
	ck_assert_ptr_nonnull(s);
	size_t l = strlen(s);
	ck_assert(l >= 2 && s[0] == '[' && s[l - 1] == ']' && l - 2 < cap);
	memcpy(out, s + 1, l - 2);
	out[l - 2] = '\0';
	cJSON_free(s);
	cJSON_Delete(a);
}

static void check_float(float v)
{
	char t[64];
	print_float(v, t, sizeof(t));
	/* The same float back, at most 9 significant digits (a double would
	 * have taken 17 for most floats: 0.1f is 0.100000001490116119). */
	char *end;
	float back = strtof(t, &end);
	ck_assert_msg(*end == '\0' && back == v && signbit(back) == signbit(v), "%a printed %s", v, t);
	int digits = 0, lead = 1; /* significant: from the first nonzero digit */
	for (const char *p = t; *p && *p != 'e'; p++) {
		lead = lead && (*p < '1' || *p > '9');
		digits += !lead && *p >= '0' && *p <= '9';
	}
	ck_assert_msg(digits <= 9, "%a printed %s", v, t);
	/* And a JSON number to a real parser. */
	cJSON *j = cJSON_Parse(t);
	ck_assert_msg(cJSON_IsNumber(j), "%s", t);
	ck_assert((float)j->valuedouble == v);
	cJSON_Delete(j);
}

START_TEST(test_float_prints_exactly)
{
	static const float edge[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, 0.1f, 1.0f / 3, FLT_MAX, -FLT_MAX,
				     FLT_MIN, FLT_TRUE_MIN, 1e-7f, 123456789.0f, 0.41776526f};
	for (size_t i = 0; i < sizeof(edge) / sizeof(edge[0]); i++)
		check_float(edge[i]);
	for (int t = 0; t < 100000; t++) {
		uint32_t u = (uint32_t)rnd() << 16 ^ (uint32_t)rnd();
		float v;
		memcpy(&v, &u, 4);
		if (isfinite(v))
			check_float(v);
	}
	/* Probabilities, as the replies carry them: short. */
	char t[64];
	print_float(0.1f, t, sizeof(t));
	ck_assert_str_eq(t, "0.100000001");
	print_float(0.5f, t, sizeof(t));
	ck_assert_str_eq(t, "0.5");
	print_float(NAN, t, sizeof(t));
	ck_assert_str_eq(t, "null");
	print_float(-INFINITY, t, sizeof(t));
	ck_assert_str_eq(t, "null");
}
END_TEST

START_TEST(test_float_array_and_object)
{
	const float x[4] = {0.25f, -2.5e-3f, 1e20f, NAN};
	cJSON *a = hdqt_rpc_float_array(x, 4);
	ck_assert_ptr_nonnull(a);
	char *s = cJSON_PrintUnformatted(a);
	ck_assert_str_eq(s, "[0.25,-0.00249999994,1.00000002e+20,null]");
	cJSON_free(s);
	/* the NaN is a number still, for the client library's check */
	ck_assert(cJSON_IsNumber(cJSON_GetArrayItem(a, 3)) && isnan(cJSON_GetArrayItem(a, 3)->valuedouble));
	ck_assert(cJSON_IsRaw(cJSON_GetArrayItem(a, 0)));
	cJSON_Delete(a);
	cJSON *o = cJSON_CreateObject();
	ck_assert_ptr_nonnull(hdqt_rpc_add_float(o, "confidence", 0.75f));
	s = cJSON_PrintUnformatted(o);
	ck_assert_str_eq(s, "{\"confidence\":0.75}");
	cJSON_free(s);
	cJSON_Delete(o);
}
END_TEST


/* ---- hdqt_json_parse against cJSON ----------------------------------------- */


/* hdqt_json_parse(p) and cJSON on s[0..n): the same tree, or both NULL.
 * Returns whether the fast path took the text. */
static int check_same(hdqt_json *p, const char *s, size_t n)
{
	cJSON *a = hdqt_json_parse(p, s, n);
	const int fast = hdqt_json_last_fast(p);
	cJSON *b = hdqt_json_parse_cjson(s, n);
	if (!json_same_tree(a, b))
		ck_abort_msg("hdqt_json_parse (%s) and cJSON differ on \"%.*s\" (%s vs %s)",
			     fast ? "simdjson" : "cJSON", (int)(n < 200 ? n : 200), s,
			     a ? "a tree" : "NULL", b ? "a tree" : "NULL");
	cJSON_Delete(a);
	cJSON_Delete(b);
	return fast;
}

/* Texts simdjson must take (when built in), texts it must leave to cJSON,
 * and texts both refuse or cJSON alone takes. */
START_TEST(test_json_edges)
{
	static const char *const taken[] = {
		"0", "[-0.0]", "-0e0", "[-0E+1]", "[0e0]", "-10", "[-1,-20]", "1E2", "[1e-400]", "4.9e-324",
		"2.2250738585072011e-308", "1.7976931348623157e308", "9007199254740993",
		"18446744073709551615", "-9223372036854775808", "0.1", "2147483647",
		"2147483648", "-2147483648", "-2147483649", "1e15", "0.30000000000000004",
		"\"\\u00e9\\ud83d\\ude00\\/\\b\\f\\n\\r\\t\\\"\\\\\"", "\"\xc3\xa9\xf0\x9f\x98\x80\"",
		"{}", "[]", "{\"a\":1,\"a\":2}", "{\"\":0}", "true", "false", "null",
		"[true,false,null]", " \t\n\r[1] \t\r", "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":"
		"\"predict\",\"params\":{\"features\":[0.5,-1.25e-3,3,1e10],\"top_k\":3}}",
		"[[[[[[[[[[]]]]]]]]]]", "{\"a\":{\"b\":{\"c\":[1,{\"d\":\"e\"}]}}}",
		"\"x\"", "0.1234567890123456789012345678901234567890123456789012345678901",
	};
	static const char *const declined[] = {
		"-0", "[-0]", "[1,-0,2]", "-0 ", "1e400",
		/* integers past 64 bits: simdjson refuses them */
		"18446744073709551616", "-9223372036854775809", "123456789012345678901234567890", "[-1e400]", "1.7976931348623159e308", "+1", ".5", "1.", "01", "[1.e5]",
		"0x10", "[1,]", "{\"a\":1,}", "[1 2]", "\x01[1]", "[1]\n", "[1] x", "", " ",
		"nul", "\"a\\u0000b\"", "{\"a\\u0000\":1}", "\"a\tb\"", "\"\x01\"", "\"\\ud800\"",
		"\"\\udc00\"", "\"\\ud800\\u0041\"", "\"\\x\"", "[1]]", "{\"a\" 1}", "{1:2}",
		"1234567890123456789012345678901234567890123456789012345678901234",
		"[0.000000000000000000000000000000000000000000000000000000000000001]",
		"[\"1234567890123456789012345678901234567890123456789012345678901234\"]",
		"NaN", "[Infinity]", "'a'", "[1]\x01",
	};
	hdqt_json *p = hdqt_json_new(1 << 16);
	ck_assert_ptr_nonnull(p);
	const int fast = hdqt_json_fast_available();
	for (size_t i = 0; i < sizeof(taken) / sizeof(*taken); i++)
		if (check_same(p, taken[i], strlen(taken[i])) != fast)
			ck_abort_msg("simdjson %s \"%s\"", fast ? "declined" : "took", taken[i]);
	for (size_t i = 0; i < sizeof(declined) / sizeof(*declined); i++)
		if (check_same(p, declined[i], strlen(declined[i])))
			ck_abort_msg("simdjson took \"%s\"", declined[i]);
	/* a NUL byte in the text, as a line may hold one */
	check_same(p, "[1,\0 2]", 7);
	check_same(p, "\"a\0b\"", 5);
	/* nesting: up to HDQT_JSON_FAST_DEPTH simdjson, deeper cJSON (which
	 * refuses past 1000) */
	static char deep[2 * 1100 + 1];
	const int depths[] = {HDQT_JSON_FAST_DEPTH - 1, HDQT_JSON_FAST_DEPTH, HDQT_JSON_FAST_DEPTH + 1,
			      999, 1000, 1001, 1100};
	for (size_t t = 0; t < sizeof(depths) / sizeof(*depths); t++) {
		const int d = depths[t];
		memset(deep, '[', (size_t)d);
		memset(deep + d, ']', (size_t)d);
		if (check_same(p, deep, 2 * (size_t)d) != (fast && d <= HDQT_JSON_FAST_DEPTH))
			ck_abort_msg("nesting %d went the wrong way", d);
	}
	hdqt_json_free(p);
	/* without a parser, and past its capacity: cJSON, the same trees */
	ck_assert_int_eq(check_same(NULL, "[1,2]", 5), 0);
	p = hdqt_json_new(8);
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(check_same(p, "[1,2,3,4]", 9), 0);
	ck_assert_int_eq(check_same(p, "[1,2,3]", 7), fast);
	hdqt_json_free(p);
}
END_TEST

/* A random JSON-ish text: mostly valid, with numbers of every form and
 * strings with escapes, then sometimes a byte changed, added or cut. */
static void gen_value(char *b, size_t *n, size_t cap, int depth)
{
	static const char *const atoms[] = {
		"0", "-0", "1", "-1", "0.5", "1e5", "1E-5", "-2.5e+10", "1e308", "1e309", "4e-324",
		"1e-330", "2147483647", "2147483648", "-2147483649", "9223372036854775807",
		"9223372036854775808", "18446744073709551616", "true", "false", "null", "\"\"",
		"\"a\"", "\"\\u0041\\n\"", "\"\\ud834\\udd1e\"", "\"\xce\xbb\"", "+1", ".5", "01", "1.",
	};
	if (*n + 64 >= cap)
		return;
	unsigned r = rnd() % 10;
	if (depth < 6 && r < 2) {
		const int obj = r == 1, k = (int)(rnd() % 5);
		b[(*n)++] = obj ? '{' : '[';
		for (int i = 0; i < k && *n + 80 < cap; i++) {
			if (i)
				b[(*n)++] = ',';
			if (obj)
				*n += (size_t)snprintf(b + *n, cap - *n, "\"k%u\":", rnd() % 3);
			gen_value(b, n, cap, depth + 1);
		}
		b[(*n)++] = obj ? '}' : ']';
	} else if (r < 5) {
		/* a random decimal of 1 to 25 digits, a fraction and an exponent */
		char num[80];
		int m = 0;
		if (rnd() % 2)
			num[m++] = '-';
		const int digits = 1 + (int)(rnd() % 25);
		for (int i = 0; i < digits; i++)
			num[m++] = (char)('0' + (i == 0 && digits > 1 ? 1 + rnd() % 9 : rnd() % 10));
		if (rnd() % 2) {
			num[m++] = '.';
			for (int i = 0, f = 1 + (int)(rnd() % 20); i < f; i++)
				num[m++] = (char)('0' + rnd() % 10);
		}
		if (rnd() % 2)
			m += snprintf(num + m, sizeof(num) - (size_t)m, "e%d", (int)(rnd() % 700) - 350);
		memcpy(b + *n, num, (size_t)m);
		*n += (size_t)m;
	} else {
		const char *a = atoms[rnd() % (sizeof(atoms) / sizeof(*atoms))];
		memcpy(b + *n, a, strlen(a));
		*n += strlen(a);
	}
	if (rnd() % 8 == 0)
		b[(*n)++] = ' ';
}

START_TEST(test_json_random_texts)
{
	hdqt_json *p = hdqt_json_new(1 << 16);
	ck_assert_ptr_nonnull(p);
	char b[4096];
	int taken = 0;
	const int N = 20000;
	for (int it = 0; it < N; it++) {
		size_t n = 0;
		gen_value(b, &n, sizeof(b) - 8, 0);
		const unsigned m = rnd() % 6;
		if (m == 0 && n) { /* a byte changed */
			static const char bytes[] = "{}[],:\"\\ -+.eE0159tfn\t\r\n\x01";
			b[rnd() % n] = bytes[rnd() % (sizeof(bytes) - 1)];
		} else if (m == 1 && n) { /* cut */
			n = rnd() % n;
		} else if (m == 2) { /* trailing bytes */
			b[n++] = " \t\r\nx]"[rnd() % 6];
		}
		taken += check_same(p, b, n);
	}
	hdqt_json_free(p);
	/* most texts are valid JSON: the fast path must have taken many */
	if (hdqt_json_fast_available())
		ck_assert_int_gt(taken, N / 3);
}
END_TEST

/* A long line's buffer is given back once it is answered, whatever it left
 * held (a partial next line survives the copy); short lines never
 * reallocate; a buffer still mostly held keeps its size. */
START_TEST(test_linebuf_shrinks)
{
	hdqt_linebuf lb;
	ck_assert_int_eq(hdqt_linebuf_init(&lb, (size_t)8 << 20), 0);
	const size_t n = (size_t)3 << 20;
	char *big = malloc(n + 1);
	ck_assert_ptr_nonnull(big);
	memset(big, 'x', n);
	big[n] = '\n';
	ck_assert_int_eq(hdqt_linebuf_feed(&lb, big, n + 1), 0);
	ck_assert_int_eq(hdqt_linebuf_feed(&lb, "abc", 3), 0);
	ck_assert_uint_ge(lb.cap, n + 1);
	size_t len = 0;
	const char *line = hdqt_linebuf_next(&lb, &len);
	ck_assert_ptr_nonnull(line);
	ck_assert_uint_eq(len, n);
	ck_assert_ptr_null(hdqt_linebuf_next(&lb, &len));
	hdqt_linebuf_shrink(&lb);
	ck_assert_uint_eq(lb.cap, HDQT_LINEBUF_KEEP);
	ck_assert_uint_eq(hdqt_linebuf_partial(&lb), 3);
	ck_assert_int_eq(hdqt_linebuf_feed(&lb, "def\n", 4), 0);
	line = hdqt_linebuf_next(&lb, &len);
	ck_assert_ptr_nonnull(line);
	ck_assert_str_eq(line, "abcdef");
	/* lines up to HDQT_LINEBUF_KEEP: the block stays */
	hdqt_linebuf_shrink(&lb);
	ck_assert_uint_eq(lb.cap, HDQT_LINEBUF_KEEP);
	/* more than a quarter still held (an unfinished long line): kept */
	ck_assert_int_eq(hdqt_linebuf_feed(&lb, big, n), 0);
	const size_t cap = lb.cap;
	ck_assert_ptr_null(hdqt_linebuf_next(&lb, &len));
	hdqt_linebuf_shrink(&lb);
	ck_assert_uint_eq(lb.cap, cap);
	ck_assert_uint_eq(hdqt_linebuf_partial(&lb), n);
	ck_assert_int_eq(hdqt_linebuf_feed(&lb, "\n", 1), 0);
	ck_assert_ptr_nonnull(hdqt_linebuf_next(&lb, &len));
	ck_assert_uint_eq(len, n);
	hdqt_linebuf_shrink(&lb);
	ck_assert_uint_eq(lb.cap, HDQT_LINEBUF_KEEP);
	hdqt_linebuf_free(&lb);
	free(big);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("proto");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_utf8_every_offset);
	tcase_add_test(tc, test_float_prints_exactly);
	tcase_add_test(tc, test_float_array_and_object);
	tcase_add_test(tc, test_json_edges);
	tcase_add_test(tc, test_json_random_texts);
	tcase_add_test(tc, test_linebuf_shrinks);
	suite_add_tcase(s, tc);
	return testutil_run(s);
}
