/* SPDX-License-Identifier: MIT */
/* Error strings and the names of the quantisation modes. */
#include <string.h>

#include "hdqt.h"

const char *hdqt_strerror(int err)
{
	switch (err) {
	case HDQT_OK: return "success";
	case HDQT_EINVAL: return "invalid argument";
	case HDQT_ENOMEM: return "out of memory";
	case HDQT_ECORRUPT: return "data is corrupt (checksum or structure)";
	case HDQT_EVERSION: return "unsupported format version";
	case HDQT_ERANGE: return "value out of range (NaN, Inf or too large)";
	case HDQT_EIO: return "input/output error";
	case HDQT_EFORMAT: return "malformed input";
	case HDQT_ENOTFOUND: return "not found";
	case HDQT_ESTATE: return "operation not valid in the current state";
	case HDQT_ECANCELED: return "canceled";
	case HDQT_EEXIST: return "already exists";
	case HDQT_EFULL: return "storage full (disk, file-size limit or configured cap)";
	case HDQT_EBUSY: return "database busy";
	default: return "unknown error";
	}
}

static const char *const mode_names[HDQT_MODE_COUNT] = {
	[HDQT_MODE_FP32] = "fp32",
	[HDQT_MODE_INT] = "int",
	[HDQT_MODE_HDQT_PAPER] = "hdqt-paper",
	[HDQT_MODE_HDQT] = "hdqt",
	[HDQT_MODE_HADANET] = "hadanet",
	[HDQT_MODE_HADANET_PAPER] = "hadanet-paper",
	[HDQT_MODE_XNOR] = "xnor",
	[HDQT_MODE_HBWN] = "hbwn",
};

int hdqt_mode_parse(const char *s, hdqt_mode *out)
{
	if (!s || !out)
		return HDQT_EINVAL;
	for (int i = 0; i < HDQT_MODE_COUNT; i++) {
		if (strcmp(s, mode_names[i]) == 0) {
			*out = (hdqt_mode)i;
			return 0;
		}
	}
	return HDQT_EINVAL;
}

const char *hdqt_mode_name(hdqt_mode m)
{
	if ((int)m < 0 || m >= HDQT_MODE_COUNT)
		return "?";
	return mode_names[m];
}

int hdqt_mode_is_hadanet(hdqt_mode m)
{
	return m == HDQT_MODE_HADANET || m == HDQT_MODE_HADANET_PAPER || m == HDQT_MODE_XNOR ||
	       m == HDQT_MODE_HBWN;
}
