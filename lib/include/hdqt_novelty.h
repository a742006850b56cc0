/* SPDX-License-Identifier: MIT */
/*
 * Open-set prediction: a novelty score for every prediction and a
 * per-class threshold above which the window is called "unknown" (an
 * activity the model was never taught).  Thresholds are calibrated on
 * held-out samples of the known classes for a target false-unknown rate.
 * Same conventions as hdqt.h.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "hdqt.h"
#include "hdqt_data.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
	HDQT_NOVELTY_NME = 0, /* 1 - cosine of the embedding to the nearest class mean of exemplars */
	HDQT_NOVELTY_ENERGY,  /* -logsumexp of the known classes' logits (Liu et al. 2020) */
	HDQT_NOVELTY_MSP,     /* 1 - the largest softmax probability (Hendrycks & Gimpel 2017) */
	HDQT_NOVELTY_KNN,     /* 1 - cosine to the nearest exemplar's embedding (Sun et al. 2022, k = 1) */
	HDQT_NOVELTY_COUNT
} hdqt_novelty_kind;

int hdqt_novelty_kind_parse(const char *s, hdqt_novelty_kind *out);
const char *hdqt_novelty_kind_name(hdqt_novelty_kind k);

/* Classes with fewer calibration samples than this, or than 1 / rate (by
 * predicted class), take the threshold of all calibration samples pooled. */
#define HDQT_NOVELTY_MIN_PER_CLASS 20

typedef struct hdqt_novelty hdqt_novelty;

/* Calibrate for model m and its first `classes` classes: class means of
 * the memory's exemplars under m (the NME score; classes without exemplars
 * are never the nearest), or the exemplars' embeddings (kNN; both
 * HDQT_ESTATE without any exemplar), then, on the n held-out rows VX (raw
 * features of known classes, n >= 1), for each class c the split-conformal
 * (1 - rate) quantile of the scores of the rows m predicts as c, so that a
 * new known window drawn like them is called unknown with probability at
 * most `rate` (more on data unlike the calibration: another user).  rate
 * in (0, 1). */
int hdqt_novelty_fit(hdqt_novelty **out, hdqt_model *m, const hdqt_memory *mem, int classes,
		     const float *VX, int n, hdqt_novelty_kind kind, float rate);
void hdqt_novelty_free(hdqt_novelty *nv);

hdqt_novelty_kind hdqt_novelty_get_kind(const hdqt_novelty *nv);
float hdqt_novelty_rate(const hdqt_novelty *nv);
int hdqt_novelty_classes(const hdqt_novelty *nv);
int hdqt_novelty_embed_dim(const hdqt_novelty *nv);
/* Threshold of class c (the pooled one for c out of range). */
float hdqt_novelty_threshold(const hdqt_novelty *nv, int c);
/* The calibration rows' mean unit embedding (embed_dim floats): the origin
 * of the known classes, from which unknown windows are told apart by
 * direction (hdqtd groups them so). */
const float *hdqt_novelty_centre(const hdqt_novelty *nv);
/* Calibration samples the model predicted as c. */
int hdqt_novelty_calib_count(const hdqt_novelty *nv, int c);

/* Score one prediction from its logits (the first `classes` are read;
 * more may follow) and its embedding (embed_dim floats; read by the NME
 * and kNN scores, may be NULL for the others).  pred is the class reported for
 * it (its threshold decides *unknown).  Returns the score. */
float hdqt_novelty_score1(const hdqt_novelty *nv, const float *logits, const float *emb, int pred,
			  int *unknown);
/* Logits, embeddings, argmax predictions, scores and unknown flags of n
 * rows (pred, score, unknown each n; any may be NULL). */
int hdqt_novelty_score(const hdqt_novelty *nv, hdqt_model *m, const float *X, int n, int *pred,
		       float *score, int *unknown);

/* a . b over n floats, summed in a fixed order (the same on every build). */
float hdqt_novelty_dot(const float *a, const float *b, int n);

/* Versioned, CRC-32 checksummed serialisation (like the model blob). */
int hdqt_novelty_save(const hdqt_novelty *nv, uint8_t **blob, size_t *len);
int hdqt_novelty_load(const uint8_t *blob, size_t len, hdqt_novelty **out);

/* Area under the ROC curve of scores that should be high for positives
 * (ties count one half): the probability that a random positive outscores
 * a random negative.  NAN when either side is empty. */
double hdqt_auroc(const float *pos, int npos, const float *neg, int nneg);

#ifdef __cplusplus
}
#endif
