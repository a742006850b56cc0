/* SPDX-License-Identifier: MIT */
/*
 * hdqt_bundle: the container of a model export (docs/bundle.md): a fixed
 * header, a JSON manifest, the model blob, the exemplar memory (features
 * and labels) and a CRC-32 over everything before it.  This module only
 * frames and checks bytes; what the manifest says is the daemon's business.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "hdqt.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HDQT_BUNDLE_MAGIC "HDQTBDL1"
#define HDQT_BUNDLE_VERSION 1u
#define HDQT_BUNDLE_HEADER 28u            /* magic, version, 4 section sizes */
#define HDQT_BUNDLE_MANIFEST_MAX (1u << 20)

typedef struct hdqt_bundle {
	const char *manifest;     /* JSON text (not NUL-terminated when read) */
	size_t manifest_len;
	const uint8_t *model;     /* a hdqt_model_save() blob */
	size_t model_len;
	const float *ex_X;        /* n_ex x dim (write: caller's; read: a malloc'd copy) */
	const int32_t *ex_y;      /* n_ex labels, in the manifest's class order */
	int n_ex, dim;
} hdqt_bundle;

/* Serialise b into a malloc'd buffer (*out, caller frees).  HDQT_EINVAL
 * for sizes beyond the format's, HDQT_ENOMEM. */
int hdqt_bundle_write(const hdqt_bundle *b, uint8_t **out, size_t *len);
/* Check and split buf: HDQT_ECORRUPT (magic, sizes, CRC), HDQT_EVERSION.
 * On success manifest and model point into buf (keep it alive); ex_X and
 * ex_y are malloc'd copies released by hdqt_bundle_release. */
int hdqt_bundle_read(const uint8_t *buf, size_t len, hdqt_bundle *b);
void hdqt_bundle_release(hdqt_bundle *b);
/* CRC-32 (zlib's) of n bytes, for transfer checks. */
uint32_t hdqt_bundle_crc32(const uint8_t *p, size_t n);

#ifdef __cplusplus
}
#endif
