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
#include "hdqt_proto.h"
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

int main(void)
{
	Suite *s = suite_create("proto");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_utf8_every_offset);
	tcase_add_test(tc, test_float_prints_exactly);
	tcase_add_test(tc, test_float_array_and_object);
	suite_add_tcase(s, tc);
	return testutil_run(s);
}
