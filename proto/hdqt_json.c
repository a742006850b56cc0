/* SPDX-License-Identifier: MIT */
/*
 * hdqt_json_parse (hdqt_json.h): simdjson where it is built in and sure to
 * agree with cJSON, cJSON for the rest.
 */
#include "config.h"

#include <stdlib.h>

#include "hdqt_json.h"

#if HAVE_SIMDJSON
/* proto/hdqt_json_simd.cc */
void *hdqt_jsimd_new(size_t cap);
void hdqt_jsimd_free(void *p);
int hdqt_jsimd_parse(void *p, const char *s, size_t n, cJSON **out);
#endif

struct hdqt_json {
	void *simd; /* NULL without simdjson */
	int last_fast;
};

hdqt_json *hdqt_json_new(size_t cap)
{
	hdqt_json *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
#if HAVE_SIMDJSON
	if (!(p->simd = hdqt_jsimd_new(cap))) {
		free(p);
		return NULL;
	}
#else
	(void)cap;
#endif
	return p;
}

void hdqt_json_free(hdqt_json *p)
{
	if (!p)
		return;
#if HAVE_SIMDJSON
	hdqt_jsimd_free(p->simd);
#endif
	free(p);
}

int hdqt_json_fast_available(void)
{
	return HAVE_SIMDJSON;
}

int hdqt_json_last_fast(const hdqt_json *p)
{
	return p ? p->last_fast : 0;
}

cJSON *hdqt_json_parse_cjson(const char *s, size_t n)
{
	const char *end = NULL;
	cJSON *msg = cJSON_ParseWithLengthOpts(s, n, &end, 0);
	/* cJSON stops at the end of the first value: only white space may
	 * follow it on the line */
	while (msg && end && end < s + n && (*end == ' ' || *end == '\t' || *end == '\r'))
		end++;
	if (msg && end && end < s + n) {
		cJSON_Delete(msg);
		msg = NULL;
	}
	return msg;
}

#if HAVE_SIMDJSON
/* Two kinds of number simdjson cannot give as cJSON does, found by a plain
 * scan (one in a string sends the text to cJSON too, which is only
 * slower): cJSON reads a number through a buffer of 63 characters of
 * [0-9+-.eE], so a longer run is cut and the text refused; and simdjson
 * reads the integer -0 as the integer 0, where strtod gives -0.0. */
/* [0-9+-.eE] */
static const unsigned char num_char[256] = {
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
	['8'] = 1, ['9'] = 1, ['.'] = 1, ['-'] = 1, ['+'] = 1, ['e'] = 1, ['E'] = 1,
};

static int needs_cjson(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t run = 0;
	for (size_t i = 0; i < n; i++) {
		/* a table and a multiply: no branch per byte (2 KB of numbers
		 * took 4 us with the comparisons, a third of the parse) */
		run = (run + 1) * num_char[u[i]];
		if (run == 2 && u[i] == '0' && u[i - 1] == '-' && (i + 1 == n || !num_char[u[i + 1]]))
			return 1;
		if (run >= 64)
			return 1;
	}
	return 0;
}

/* 1 and the tree in *out if simdjson took the text, 0 if cJSON must. */
static int fast(hdqt_json *p, const char *s, size_t n, cJSON **out)
{
	/* What may follow the value: the same white space as above.  simdjson
	 * also skips a newline there, which the line format never has and
	 * cJSON's ending refuses. */
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		n--;
	if (!n || s[n - 1] == '\n' || needs_cjson(s, n))
		return 0;
	return hdqt_jsimd_parse(p->simd, s, n, out) == 1;
}
#endif

cJSON *hdqt_json_parse(hdqt_json *p, const char *s, size_t n)
{
	if (p)
		p->last_fast = 0;
#if HAVE_SIMDJSON
	cJSON *t;
	if (p && fast(p, s, n, &t)) {
		p->last_fast = 1;
		return t;
	}
#endif
	return hdqt_json_parse_cjson(s, n);
}
