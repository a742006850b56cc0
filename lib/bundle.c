/* SPDX-License-Identifier: MIT */
/*
 * Model export bundle (hdqt_bundle.h, docs/bundle.md):
 *   "HDQTBDL1", u32 version, u32 manifest bytes, u32 model bytes,
 *   u32 exemplar count, u32 exemplar dimension, manifest, model blob,
 *   count x dim f32 features, count i32 labels, u32 CRC-32 of all before.
 * Little-endian throughout.  Reading checks that the declared sizes add up
 * to exactly the bytes present (in 64-bit arithmetic, before anything is
 * allocated) and the CRC before it looks at any section, so a truncated or
 * damaged file is refused as a whole.
 */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "hdqt_bundle.h"

static void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint32_t hdqt_bundle_crc32(const uint8_t *p, size_t n)
{
	uLong c = crc32(0L, Z_NULL, 0);
	/* zlib takes uInt lengths: feed large buffers in pieces. */
	while (n > 0) {
		uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
		c = crc32(c, p, k);
		p += k;
		n -= k;
	}
	return (uint32_t)c;
}

/* Total size of a bundle with these sections, or 0 past the format's bounds. */
static uint64_t total_size(uint64_t man, uint64_t model, uint64_t n, uint64_t dim)
{
	if (man > HDQT_BUNDLE_MANIFEST_MAX || model > (1u << 30) || n > (1u << 24) ||
	    dim > HDQT_MAX_DIM || (n > 0 && dim == 0))
		return 0;
	return HDQT_BUNDLE_HEADER + man + model + n * dim * 4 + n * 4 + 4;
}

int hdqt_bundle_write(const hdqt_bundle *b, uint8_t **out, size_t *len)
{
	if (!b || !out || !len || !b->manifest || !b->model || b->model_len == 0 || b->n_ex < 0 ||
	    b->dim < 0 || (b->n_ex > 0 && (!b->ex_X || !b->ex_y)))
		return HDQT_EINVAL;
	uint64_t t = total_size(b->manifest_len, b->model_len, (uint64_t)b->n_ex, (uint64_t)b->dim);
	if (t == 0 || t > SIZE_MAX)
		return HDQT_EINVAL;
	uint8_t *p = malloc((size_t)t);
	if (!p)
		return HDQT_ENOMEM;
	memcpy(p, HDQT_BUNDLE_MAGIC, 8);
	put_u32(p + 8, HDQT_BUNDLE_VERSION);
	put_u32(p + 12, (uint32_t)b->manifest_len);
	put_u32(p + 16, (uint32_t)b->model_len);
	put_u32(p + 20, (uint32_t)b->n_ex);
	put_u32(p + 24, (uint32_t)b->dim);
	size_t o = HDQT_BUNDLE_HEADER;
	memcpy(p + o, b->manifest, b->manifest_len);
	o += b->manifest_len;
	memcpy(p + o, b->model, b->model_len);
	o += b->model_len;
	for (size_t i = 0; i < (size_t)b->n_ex * (size_t)b->dim; i++, o += 4) {
		uint32_t v;
		memcpy(&v, &b->ex_X[i], 4);
		put_u32(p + o, v);
	}
	for (int i = 0; i < b->n_ex; i++, o += 4)
		put_u32(p + o, (uint32_t)b->ex_y[i]);
	put_u32(p + o, hdqt_bundle_crc32(p, o));
	*out = p;
	*len = (size_t)t;
	return 0;
}

int hdqt_bundle_read(const uint8_t *buf, size_t len, hdqt_bundle *b)
{
	if (!b)
		return HDQT_EINVAL;
	memset(b, 0, sizeof(*b));
	if (!buf || len < HDQT_BUNDLE_HEADER + 4 || memcmp(buf, HDQT_BUNDLE_MAGIC, 8) != 0)
		return HDQT_ECORRUPT;
	/* Version 0 never existed: zeros are damage, not the future. */
	if (get_u32(buf + 8) == 0)
		return HDQT_ECORRUPT;
	if (get_u32(buf + 8) != HDQT_BUNDLE_VERSION)
		return HDQT_EVERSION;
	const uint32_t man = get_u32(buf + 12), model = get_u32(buf + 16);
	const uint32_t n = get_u32(buf + 20), dim = get_u32(buf + 24);
	uint64_t t = total_size(man, model, n, dim);
	if (t == 0 || t != len || model == 0)
		return HDQT_ECORRUPT;
	if (hdqt_bundle_crc32(buf, len - 4) != get_u32(buf + len - 4))
		return HDQT_ECORRUPT;
	float *X = malloc(sizeof(float) * ((size_t)n * dim + 1));
	int32_t *y = malloc(sizeof(int32_t) * ((size_t)n + 1));
	if (!X || !y) {
		free(X);
		free(y);
		return HDQT_ENOMEM;
	}
	size_t o = HDQT_BUNDLE_HEADER;
	b->manifest = (const char *)buf + o;
	b->manifest_len = man;
	o += man;
	b->model = buf + o;
	b->model_len = model;
	o += model;
	for (size_t i = 0; i < (size_t)n * dim; i++, o += 4) {
		uint32_t v = get_u32(buf + o);
		memcpy(&X[i], &v, 4);
	}
	for (uint32_t i = 0; i < n; i++, o += 4)
		y[i] = (int32_t)get_u32(buf + o);
	b->ex_X = X;
	b->ex_y = y;
	b->n_ex = (int)n;
	b->dim = (int)dim;
	return 0;
}

void hdqt_bundle_release(hdqt_bundle *b)
{
	if (!b)
		return;
	free((void *)b->ex_X);
	free((void *)b->ex_y);
	b->ex_X = NULL;
	b->ex_y = NULL;
}
