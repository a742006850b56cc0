/* SPDX-License-Identifier: MIT */
/*
 * The open-set calibration a model version is stored with: shared by the
 * training thread (after a round) and the writer (after an import).  It
 * touches no daemon state, so either thread may call it.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "hdqt.h"
#include "hdqt_data.h"

/* Calibrate m (its first `classes` classes, class means from mem) on the n
 * held-out rows VX under open_set.score and open_set.unknown_rate, and
 * serialise it (*out malloc'd).  A score that needs exemplars falls back
 * to energy when mem has none (LwF, fine-tuning).  what (may be NULL)
 * receives a line for the log. */
int hdqtd_openset_calibrate(const hdqtd_config *c, hdqt_model *m, const hdqt_memory *mem, int classes,
			    const float *VX, int n, uint8_t **out, size_t *len, char *what, size_t wlen);
