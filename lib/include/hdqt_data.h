/* SPDX-License-Identifier: MIT */
/*
 * Feature extraction for windows of 6-axis inertial signals, datasets (the
 * raw HAPT layout and feature CSVs) and class-incremental learning
 * strategies.  Same conventions as hdqt.h.
 */
#pragma once

#include <stddef.h>

#include "hdqt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- features ------------------------------------------------------------ */

#define HDQT_FEAT_CHANNELS 6      /* ax, ay, az (g), gx, gy, gz (rad/s) */
#define HDQT_FEAT_SIGNALS 8       /* the 6 axes, |acc|, |gyro| */
#define HDQT_FEAT_PER_SIGNAL 20
#define HDQT_FEAT_BANDS 8
#define HDQT_FEAT_DIM (HDQT_FEAT_SIGNALS * HDQT_FEAT_PER_SIGNAL + 6) /* 166 */

typedef struct hdqt_feat hdqt_feat;

/* A feature extractor for windows of `window` readings (even, 16..4096;
 * default 128 at 50 Hz).  Not thread-safe: one per thread. */
int hdqt_feat_new(hdqt_feat **out, int window);
void hdqt_feat_free(hdqt_feat *f);
int hdqt_feat_window(const hdqt_feat *f);
/* Number of features (HDQT_FEAT_DIM). */
int hdqt_feat_dim(const hdqt_feat *f);
/* Features of one window: rows[window][6] in, out[HDQT_FEAT_DIM].
 * HDQT_ERANGE if a reading is NaN/Inf or beyond +-1e6. */
int hdqt_feat_extract(hdqt_feat *f, const float *rows, float *out);
/* Name of feature i, e.g. "ax_mean" or "acc_corr_xy"; NULL when out of range. */
const char *hdqt_feat_name(int i, char *buf, size_t n);
/* Windows of `window` with hop `hop` in a segment of n readings. */
int hdqt_feat_count_windows(int n, int window, int hop);

/* ---- datasets ------------------------------------------------------------- */

typedef struct hdqt_dataset {
	int n, d;
	float *X;   /* n x d */
	int *y;     /* labels as in the source (HAPT: activity id 1..12) */
	int *user;  /* subject id */
} hdqt_dataset;

void hdqt_dataset_free(hdqt_dataset *ds);
/* Windows of every labelled segment of the raw HAPT directory (labels.csv +
 * expXX_userYY.csv.gz), features computed with hdqt_feat.  Segments shorter
 * than a window give none. */
int hdqt_hapt_load(const char *dir, int window, int hop, hdqt_dataset *out);
/* Read one raw experiment file (header ax,ay,az,gx,gy,gz; .gz or plain):
 * *rows gets n x 6 floats (malloc'd). */
int hdqt_raw_read(const char *path, float **rows, int *n);
/* A features CSV: "label,user,f0,f1,..." with a header line. */
int hdqt_csv_load(const char *path, hdqt_dataset *out);
/* Test users of the HAPT/UCI-HAR split: {2,4,9,10,12,13,18,20,24}. */
int hdqt_hapt_is_test_user(int user);

/* ---- exemplar memory ------------------------------------------------------- */

typedef struct hdqt_memory hdqt_memory;

/* A memory of at most `budget` exemplars of dimension d, split evenly over
 * the classes seen.  Exemplars keep their selection rank, so shrinking a
 * class keeps its best-ranked ones. */
int hdqt_memory_new(hdqt_memory **out, int budget, int d);
void hdqt_memory_free(hdqt_memory *m);
int hdqt_memory_size(const hdqt_memory *m);
int hdqt_memory_budget(const hdqt_memory *m);
int hdqt_memory_classes(const hdqt_memory *m);
/* Exemplars of class c in rank order: pointer to n x d rows (owned by the memory). */
const float *hdqt_memory_class(const hdqt_memory *m, int c, int *n);
/* Copy all exemplars into X (size x d) and y (size). */
int hdqt_memory_export(const hdqt_memory *m, float *X, int *y);
/* Replace class c's exemplars with rows (n x d, in rank order). */
int hdqt_memory_set_class(hdqt_memory *m, int c, const float *rows, int n);
/* Shrink every class to budget / n_classes, or to q exemplars. */
int hdqt_memory_rebalance(hdqt_memory *m);
int hdqt_memory_rebalance_to(hdqt_memory *m, int q);
/* Per-class quota for `classes` classes. */
int hdqt_memory_quota(const hdqt_memory *m, int classes);

/* Herding (iCaRL, Rebuffi et al. Alg. 4): order the n rows of emb (n x e,
 * L2-normalised inside) so that the running mean of the first k best
 * approximates the class mean; writes the first `want` indices to idx. */
int hdqt_herding(const float *emb, int n, int e, int want, int *idx);
/* The same, normalising emb in place (no copy of it: emb is overwritten). */
int hdqt_herding_inplace(float *emb, int n, int e, int want, int *idx);

/* ---- class-incremental learner ---------------------------------------- */

typedef enum {
	HDQT_CL_FINETUNE = 0, /* no protection against forgetting */
	HDQT_CL_ER,           /* experience replay from the exemplar memory */
	HDQT_CL_LWF,          /* distillation from the previous model, no exemplars */
	HDQT_CL_ICARL,        /* exemplars (herding) + distillation + NME */
	HDQT_CL_BIC,          /* iCaRL's exemplars and distillation + bias correction
			       * of the new classes' logits (Wu et al., CVPR 2019) */
	HDQT_CL_COUNT
} hdqt_cl_method;

int hdqt_cl_method_parse(const char *s, hdqt_cl_method *out);
const char *hdqt_cl_method_name(hdqt_cl_method m);

typedef struct hdqt_cl_config {
	hdqt_cl_method method;
	int memory;        /* exemplar budget (200) */
	int epochs;        /* per task (100) */
	int batch;         /* 128 */
	hdqt_sgd sgd;
	float kd_T;        /* 2 */
	float kd_lambda;   /* 1 (BiC ignores it: its weight is n_old / n_classes) */
	int er_reservoir;  /* ER: reservoir sampling instead of random selection */
	float bic_val;     /* BiC: validation samples per class, as a fraction of the
			    * per-class exemplar quota after the task (0.2; at least 1) */
	uint64_t seed;
} hdqt_cl_config;

void hdqt_cl_config_default(hdqt_cl_config *c);

typedef struct hdqt_cl hdqt_cl;

/* Progress callback: epoch done of epochs in this task; return non-zero to cancel. */
typedef int (*hdqt_cl_progress_fn)(void *arg, int epoch, int epochs, float loss);

/* A learner owning a model (taken over: freed with the learner) and a memory. */
int hdqt_cl_new(hdqt_cl **out, hdqt_model *model, const hdqt_cl_config *cfg);
void hdqt_cl_free(hdqt_cl *cl);
hdqt_model *hdqt_cl_model(hdqt_cl *cl);
hdqt_memory *hdqt_cl_memory(hdqt_cl *cl);
/* Resume from stored state: the model has already learned its first
 * `classes` head rows (fill the memory with hdqt_memory_set_class). */
int hdqt_cl_resume(hdqt_cl *cl, int classes);
/* Learn one task: X (n x d raw features), y in [0, classes_after); new
 * classes are those >= the model's current head size, which grows to
 * classes_after.  The model's logit affine is reset to the identity first
 * (after the teacher's logits are taken); BiC then sets it for the new
 * classes (hdqt_model_set_logit_affine).  HDQT_ECANCELED if the callback asked to stop (the model is
 * then partly trained; the memory is unchanged). */
int hdqt_cl_learn(hdqt_cl *cl, const float *X, const int *y, int n, int classes_after,
		  hdqt_cl_progress_fn cb, void *arg);
/* Nearest-mean-of-exemplars predictions (iCaRL), using class means of the
 * memory's exemplars under the current model.  HDQT_ESTATE if some class has
 * no exemplar. */
int hdqt_cl_predict_nme(hdqt_cl *cl, const float *X, int n, int *pred);
/* Samples trained per second in the last hdqt_cl_learn. */
double hdqt_cl_samples_per_s(const hdqt_cl *cl);

#ifdef __cplusplus
}
#endif
