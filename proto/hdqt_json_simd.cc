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

// 1 and the item in *out; 0 declined; -1 without memory.
int conv(simdjson::dom::element e, cJSON **out, int depth)
{
	using simdjson::dom::element_type;
	*out = nullptr;
	if (depth > HDQT_JSON_FAST_DEPTH)
		return 0;
	switch (e.type()) {
	case element_type::ARRAY: {
		simdjson::dom::array a;
		if (e.get(a) != simdjson::SUCCESS)
			return 0;
		cJSON *arr = cJSON_CreateArray();
		if (!arr)
			return -1;
		cJSON *last = nullptr;
		for (simdjson::dom::element x : a) {
			cJSON *c;
			int r = conv(x, &c, depth + 1);
			if (r != 1) {
				cJSON_Delete(arr);
				return r;
			}
			// linked as cJSON's parser links them: the first child's
			// prev is the last one
			if (last) {
				last->next = c;
				c->prev = last;
			} else {
				arr->child = c;
			}
			last = c;
			arr->child->prev = c;
		}
		*out = arr;
		return 1;
	}
	case element_type::OBJECT: {
		simdjson::dom::object o;
		if (e.get(o) != simdjson::SUCCESS)
			return 0;
		cJSON *obj = cJSON_CreateObject();
		if (!obj)
			return -1;
		for (auto it = o.begin(); it != o.end(); ++it) {
			const char *k = it.key_c_str();
			if (strlen(k) != it.key_length()) {
				cJSON_Delete(obj);
				return 0;
			}
			cJSON *c;
			int r = conv(it.value(), &c, depth + 1);
			if (r != 1) {
				cJSON_Delete(obj);
				return r;
			}
			if (!cJSON_AddItemToObject(obj, k, c)) {
				cJSON_Delete(c);
				cJSON_Delete(obj);
				return -1;
			}
		}
		*out = obj;
		return 1;
	}
	case element_type::INT64: {
		int64_t v;
		if (e.get(v) != simdjson::SUCCESS)
			return 0;
		// the conversion rounds to nearest even, as strtod of the same
		// digits does; "-0" is not here (simdjson reads it as a double)
		*out = cJSON_CreateNumber(static_cast<double>(v));
		break;
	}
	case element_type::UINT64: {
		uint64_t v;
		if (e.get(v) != simdjson::SUCCESS)
			return 0;
		*out = cJSON_CreateNumber(static_cast<double>(v));
		break;
	}
	case element_type::DOUBLE: {
		double v;
		if (e.get(v) != simdjson::SUCCESS)
			return 0;
		*out = cJSON_CreateNumber(v);
		break;
	}
	case element_type::STRING: {
		const char *s;
		size_t n;
		if (e.get_c_str().get(s) != simdjson::SUCCESS ||
		    e.get_string_length().get(n) != simdjson::SUCCESS || strlen(s) != n)
			return 0;
		*out = cJSON_CreateString(s);
		break;
	}
	case element_type::BOOL: {
		bool v;
		if (e.get(v) != simdjson::SUCCESS)
			return 0;
		*out = cJSON_CreateBool(v);
		if (*out && v)
			(*out)->valueint = 1; // as cJSON's parser sets it for true
		break;
	}
	case element_type::NULL_VALUE:
		*out = cJSON_CreateNull();
		break;
	default:
		return 0;
	}
	return *out ? 1 : -1;
}

} // namespace

extern "C" void *hdqt_jsimd_new(size_t cap)
{
	try {
		jsimd *j = new (std::nothrow) jsimd;
		if (!j)
			return nullptr;
		j->buf = static_cast<char *>(malloc(cap + simdjson::SIMDJSON_PADDING));
		if (!j->buf || j->parser.allocate(cap, HDQT_JSON_FAST_DEPTH) != simdjson::SUCCESS) {
			free(j->buf);
			delete j;
			return nullptr;
		}
		j->cap = cap;
		return j;
	} catch (...) {
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
		return conv(root, out, 1);
	} catch (...) {
		cJSON_Delete(*out);
		*out = nullptr;
		return -1;
	}
}
