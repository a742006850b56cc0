// SPDX-License-Identifier: MIT
//
// simdjson's DOM turned into cJSON's tree (proto/hdqt_json.h): the fast
// half of hdqt_json_parse, compiled only where the simdjson option found
// the library.  It declines (returns 0) whatever it cannot give exactly as
// cJSON would, and hdqt_json.c then hands the text to cJSON: a number of
// a type it does not know, a string or key holding a NUL (cJSON's C
// strings would end there), anything simdjson refuses.  No exception
// leaves this file: C calls it.
#include <cstdlib>
#include <cstring>
#include <new>

#include <simdjson.h>

#include "hdqt_json.h"

namespace {

struct jsimd {
	simdjson::dom::parser parser;
	char *buf = nullptr; // the text, copied with simdjson's padding after it
	size_t cap = 0;
};

// Each value filled into an item already made, its key set before it:
// the allocations of cJSON's own parser in its order (item, key, the
// value's string or children, in document order).
char *copy(const char *s, size_t n)
{
	char *c = static_cast<char *>(cJSON_malloc(n + 1));
	if (c)
		memcpy(c, s, n + 1);
	return c;
}

// A number of simdjson's type T as cJSON's double (valueint saturated as
// cJSON sets it).
template <class T> int number(simdjson::dom::element e, cJSON *it)
{
	T v;
	if (e.get(v) != simdjson::SUCCESS)
		return 0;
	cJSON_SetNumberHelper(it, static_cast<double>(v));
	it->type = cJSON_Number;
	return 1;
}

// A new item after *last among it's children, linked as cJSON's parser
// links them (the first child's prev is the last one); NULL without memory.
cJSON *append(cJSON *it, cJSON **last)
{
	cJSON *c = cJSON_CreateNull();
	if (!c)
		return nullptr;
	if (*last) {
		(*last)->next = c;
		c->prev = *last;
	} else {
		it->child = c;
	}
	*last = c;
	it->child->prev = c;
	return c;
}

// 1 filled; 0 declined; -1 without memory.  The item is the caller's to
// free either way.
int fill(simdjson::dom::element e, cJSON *it, int depth)
{
	using simdjson::dom::element_type;
	// the parser's max_depth bounds this already; the recursion's own
	// bound, should that change
	if (depth > HDQT_JSON_FAST_DEPTH)
		return 0;
	switch (e.type()) {
	case element_type::ARRAY: {
		simdjson::dom::array a;
		if (e.get(a) != simdjson::SUCCESS)
			return 0;
		it->type = cJSON_Array;
		cJSON *last = nullptr;
		for (simdjson::dom::element x : a) {
			cJSON *c = append(it, &last);
			if (!c)
				return -1;
			int r = fill(x, c, depth + 1);
			if (r != 1)
				return r;
		}
		return 1;
	}
	case element_type::OBJECT: {
		simdjson::dom::object o;
		if (e.get(o) != simdjson::SUCCESS)
			return 0;
		it->type = cJSON_Object;
		cJSON *last = nullptr;
		for (auto m = o.begin(); m != o.end(); ++m) {
			const char *k = m.key_c_str();
			if (strlen(k) != m.key_length())
				return 0;
			cJSON *c = append(it, &last);
			if (!c)
				return -1;
			if (!(c->string = copy(k, m.key_length())))
				return -1;
			int r = fill(m.value(), c, depth + 1);
			if (r != 1)
				return r;
		}
		return 1;
	}
	case element_type::INT64:
		// the conversions round to nearest even, as strtod of the same
		// digits does; the integer -0 never comes here (hdqt_json.c)
		return number<int64_t>(e, it);
	case element_type::UINT64:
		return number<uint64_t>(e, it);
	case element_type::DOUBLE:
		return number<double>(e, it);
	case element_type::STRING: {
		const char *s;
		size_t n;
		if (e.get_c_str().get(s) != simdjson::SUCCESS ||
		    e.get_string_length().get(n) != simdjson::SUCCESS || strlen(s) != n)
			return 0;
		if (!(it->valuestring = copy(s, n)))
			return -1;
		it->type = cJSON_String;
		return 1;
	}
	case element_type::BOOL: {
		bool v;
		if (e.get(v) != simdjson::SUCCESS)
			return 0;
		it->type = v ? cJSON_True : cJSON_False;
		if (v)
			it->valueint = 1; // as cJSON's parser sets it
		return 1;
	}
	case element_type::NULL_VALUE:
		it->type = cJSON_NULL;
		return 1;
	default:
		return 0;
	}
}

} // namespace

extern "C" void *hdqt_jsimd_new(size_t cap)
{
	jsimd *j = nullptr;
	try {
		j = new (std::nothrow) jsimd;
		if (!j)
			return nullptr;
		j->buf = static_cast<char *>(malloc(cap + simdjson::SIMDJSON_PADDING));
		if (!j->buf || j->parser.allocate(cap, HDQT_JSON_FAST_DEPTH) != simdjson::SUCCESS)
			throw std::bad_alloc();
		j->cap = cap;
		// simdjson sizes its document buffers at the first parse, to that
		// text, and again for each longer one: one text of cap bytes now
		// allocates them once, here, instead of between requests' trees
		memset(j->buf, ' ', cap + simdjson::SIMDJSON_PADDING);
		j->buf[0] = '0';
		simdjson::dom::element e;
		if (j->parser.parse(reinterpret_cast<const uint8_t *>(j->buf), cap, false).get(e) !=
		    simdjson::SUCCESS)
			throw std::bad_alloc();
		return j;
	} catch (...) {
		if (j)
			free(j->buf);
		delete j;
		return nullptr;
	}
}

extern "C" void hdqt_jsimd_free(void *p)
{
	jsimd *j = static_cast<jsimd *>(p);
	if (!j)
		return;
	free(j->buf);
	delete j;
}

// 1: *out is the tree; 0: declined (cJSON decides); -1: without memory.
extern "C" int hdqt_jsimd_parse(void *p, const char *s, size_t n, cJSON **out)
{
	*out = nullptr;
	cJSON *t = nullptr;
	try {
		jsimd *j = static_cast<jsimd *>(p);
		if (n > j->cap)
			return 0;
		memcpy(j->buf, s, n);
		memset(j->buf + n, 0, simdjson::SIMDJSON_PADDING);
		simdjson::dom::element root;
		if (j->parser.parse(reinterpret_cast<const uint8_t *>(j->buf), n, false).get(root) !=
		    simdjson::SUCCESS)
			return 0;
		if (!(t = cJSON_CreateNull()))
			return -1;
		int r = fill(root, t, 1);
		if (r != 1) {
			cJSON_Delete(t);
			return r;
		}
		*out = t;
		return 1;
	} catch (...) {
		cJSON_Delete(t);
		return -1;
	}
}
