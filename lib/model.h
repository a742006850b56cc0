/* SPDX-License-Identifier: MIT */
/* The MLP's private layout, shared by model.c and blob.c. */
#pragma once

#include "hdqt.h"
#include "linear.h"

struct hdqt_model {
	hdqt_mlp_config cfg;
	hdqt_qconfig q;
	hdqt_qconfig lq[HDQT_MAX_LAYERS]; /* each layer's recipe (model_layer_qconfig) */
	int n_layers;           /* cfg.n_hidden + 1 */
	int in_pad;             /* K of the first layer (>= n_in) */
	linear L[HDQT_MAX_LAYERS];
	float *mean, *std;      /* n_in each */
	float norm_clip;        /* <= 0: none */
	hdqt_rng rng;           /* stochastic rounding stream */
	/* scratch, grown to the largest batch seen */
	int cap_n, cap_c;
	float *act[HDQT_MAX_LAYERS + 1]; /* act[l]: input of layer l; act[n_layers]: logits */
	float *grad[2];
	linear_scratch s;
	pool *pool;             /* hdqt_model_set_threads (NULL: one thread) */
	/* Per-class logit affine of inference (BiC's bias correction): logits
	 * o_c -> la[c] * o_c + lb[c] in hdqt_model_forward / predict, never in
	 * training.  Rows >= cfg.n_classes are always the identity, so growing
	 * the head needs no work; affine_on is 0 exactly when every row is the
	 * identity, and then the logits are not touched (bit-identical). */
	float la[HDQT_MAX_CLASSES], lb[HDQT_MAX_CLASSES];
	int affine_on;
};

/* Recompute m->affine_on from la, lb (after a load or a copy). */
void model_affine_refresh(hdqt_model *m);

/* The recipe layer l of n_layers runs under q: q itself, or for a HadaNets
 * recipe's layers left unbinarised its edge recipe (with q's bits). */
void model_layer_qconfig(const hdqt_qconfig *q, int l, int n_layers, hdqt_qconfig *out);
/* K of the first layer for n_in features under layer 0's recipe. */
int model_in_pad(const hdqt_qconfig *q0, int n_in);
/* Allocate an empty model with weights zeroed (used by new, clone and load). */
int model_alloc(hdqt_model **out, const hdqt_mlp_config *cfg, const hdqt_qconfig *q);
