/* SPDX-License-Identifier: MIT */
/*
 * Two cJSON trees equal bit for bit: types and flags, keys, strings, each
 * number's double (memcmp: -0 is not 0) and int, children in order with
 * their prev links, and the list's tail link (the first child's prev) that
 * cJSON's appends rely on.  For the tests of proto/hdqt_json.h
 * (test_proto.c, fuzz/fuzz_json.c), which compare its trees with cJSON's.
 */
#ifndef HDQT_TEST_JSON_SAME_H
#define HDQT_TEST_JSON_SAME_H

#include <string.h>

#include <cjson/cJSON.h>

static int json_same_tree(const cJSON *a, const cJSON *b)
{
	if (!a || !b)
		return a == b;
	if (a->type != b->type || !a->string != !b->string ||
	    (a->string && strcmp(a->string, b->string)) || !a->valuestring != !b->valuestring ||
	    (a->valuestring && strcmp(a->valuestring, b->valuestring)) || a->valueint != b->valueint ||
	    memcmp(&a->valuedouble, &b->valuedouble, sizeof(double)))
		return 0;
	const cJSON *x = a->child, *y = b->child, *px = NULL, *py = NULL;
	for (; x && y; px = x, py = y, x = x->next, y = y->next)
		if (!json_same_tree(x, y) || (px && (x->prev != px || y->prev != py)))
			return 0;
	if (x || y)
		return 0;
	return !a->child || (a->child->prev && !a->child->prev->next && b->child->prev &&
			     !b->child->prev->next);
}

#endif
