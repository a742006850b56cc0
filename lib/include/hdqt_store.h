/* SPDX-License-Identifier: MIT */
/*
 * hdqt_store: all durable state of hdqtd in one SQLite database: classes,
 * samples waiting to be learned, the exemplar memory, held-out validation
 * samples, model versions and training runs.
 *
 * One hdqt_store is one connection: use it from one thread at a time and
 * open another for another thread (WAL lets readers and one writer work
 * together).  Every write is one transaction; a function that returned 0
 * has committed, and what it committed survives a crash or power loss with
 * synchronous=full.  A function that failed changed nothing.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "hdqt.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HDQT_STORE_SCHEMA 4      /* the schema version this build writes */
#define HDQT_CLASS_NAME_MAX 64   /* bytes of a class name */

typedef struct hdqt_store hdqt_store;

typedef struct hdqt_store_opts {
	int sync_full;            /* 1: synchronous=FULL (default); 0: NORMAL */
	int64_t max_bytes;        /* database size cap (0 = none) */
	int max_pending_per_class;/* samples waiting per class (0 = none) */
	int keep_models;          /* model versions kept (>= 1; the current one is never pruned) */
	int keep_learned;         /* learned samples: 1 keep as validation, 0 delete */
	int busy_timeout_ms;      /* wait for locks this long before HDQT_EBUSY */
	/* Room a training round needs to commit, kept free by every insert of
	 * samples (HDQT_EFULL past it), in the max_bytes cap and on the disk:
	 * round_bytes, what a round adds to the file (its model, exemplars;
	 * 0: none), and round_rows, the most samples it learns (each is
	 * written again to the WAL when the round deletes it; 0: any number). */
	int64_t round_bytes;
	int round_rows;
	int read_only;            /* open without creating or migrating */
	int quick_check;          /* 1 (default): PRAGMA quick_check at open, refusing a damaged file */
	/* Called about once a second while quick_check runs (e.g. to extend a
	 * service manager's start timeout); may be NULL. */
	void (*check_progress)(void *arg);
	void *check_arg;
	double check_interval_s;  /* between check_progress calls (0: 1 s) */
} hdqt_store_opts;

#define HDQT_BATCH_ID_MAX 64     /* bytes of a sample.add batch id */

void hdqt_store_opts_default(hdqt_store_opts *o);

/* Open (creating if missing) and migrate to HDQT_STORE_SCHEMA.  Refuses a
 * corrupt or foreign file (HDQT_ECORRUPT) and a database of a newer schema
 * (HDQT_EVERSION) without modifying it.  err (may be NULL) receives a
 * message for the operator. */
int hdqt_store_open(hdqt_store **out, const char *path, const hdqt_store_opts *o, char *err,
		    size_t errlen);
void hdqt_store_close(hdqt_store *s);
/* Message of the last failure on this connection. */
const char *hdqt_store_errmsg(const hdqt_store *s);
int hdqt_store_schema_version(hdqt_store *s);
/* PRAGMA integrity_check == "ok": 0, else HDQT_ECORRUPT. */
int hdqt_store_integrity_check(hdqt_store *s);

/* ---- classes ---- */
typedef struct hdqt_store_class {
	int64_t id;
	int label;        /* row of the model's output head, assigned in creation order */
	int active;
	int64_t created;  /* unix seconds */
	char name[HDQT_CLASS_NAME_MAX + 1];
} hdqt_store_class;

/* Name: 1..64 bytes of printable ASCII/UTF-8 without control characters.
 * HDQT_EEXIST if taken, HDQT_EINVAL if malformed. */
int hdqt_store_class_add(hdqt_store *s, const char *name, hdqt_store_class *out);
int hdqt_store_class_get(hdqt_store *s, const char *name, hdqt_store_class *out);
/* All classes by label; *out is malloc'd (free it). */
int hdqt_store_class_list(hdqt_store *s, hdqt_store_class **out, int *n);
int hdqt_store_class_set_active(hdqt_store *s, const char *name, int active);

/* ---- samples ---- */
/* n samples of dimension d for the given classes, in one transaction.
 * HDQT_ERANGE on NaN/Inf, HDQT_EFULL past a cap, HDQT_ENOTFOUND for an
 * unknown class id. */
int hdqt_store_samples_add(hdqt_store *s, const int64_t *class_ids, const float *X, int n, int d);
/* As hdqt_store_samples_add, under a client-chosen batch id (NULL: none):
 * a batch id already stored adds nothing and sets *dup to the sample count
 * it was stored with (else *dup is 0).  Ids are kept for the newest 100000
 * batches.  Refuses (HDQT_EFULL) a batch that would leave less than an
 * eighth of max_bytes free: that headroom is kept for training rounds. */
int hdqt_store_samples_add_batch(hdqt_store *s, const int64_t *class_ids, const float *X, int n,
				 int d, const char *batch_id, int64_t *dup);
/* Pending (not yet learned) samples: class_id < 0 counts all classes. */
int hdqt_store_samples_pending_count(hdqt_store *s, int64_t class_id, int64_t *count);
/* Up to max pending samples of dimension d, oldest first (malloc'd arrays). */
int hdqt_store_samples_pending(hdqt_store *s, int d, int max, float **X, int64_t **ids,
			       int64_t **class_ids, int *n);
/* Mark samples learned: moved to validation or deleted per keep_learned. */
int hdqt_store_samples_learned(hdqt_store *s, const int64_t *ids, int n);
/* Pending samples per class: parallel malloc'd arrays (free both). */
int hdqt_store_pending_by_class(hdqt_store *s, int64_t **class_ids, int64_t **counts, int *n);

/* ---- quarantine: samples a round could not learn (non-finite loss) ---- */
typedef struct hdqt_store_qsample {
	int64_t id, class_id, created;
} hdqt_store_qsample;
/* Move pending samples to quarantine (no longer read by rounds). */
int hdqt_store_quarantine(hdqt_store *s, const int64_t *ids, int n);
int hdqt_store_quarantine_count(hdqt_store *s, int64_t *count);
/* Up to max quarantined samples, oldest first (malloc'd). */
int hdqt_store_quarantine_list(hdqt_store *s, int max, hdqt_store_qsample **out, int *n);
/* Delete (release = 0) or make pending again (release = 1) the given
 * quarantined samples, or all of them when ids is NULL; *done = rows changed. */
int hdqt_store_quarantine_resolve(hdqt_store *s, const int64_t *ids, int n, int release,
				  int64_t *done);

/* ---- exemplar memory and validation ---- */
/* The exemplar memory belongs to a model version: a rollback brings back
 * the memory of the version it makes current. */
/* Replace the current model's exemplar memory (rank = order within its class). */
int hdqt_store_exemplars_replace(hdqt_store *s, const int64_t *class_ids, const float *X, int n,
				 int d);
/* The current model's memory in (class, rank) order (malloc'd arrays). */
int hdqt_store_exemplars_load(hdqt_store *s, int d, float **X, int64_t **class_ids, int *n);
int hdqt_store_validation_load(hdqt_store *s, int d, float **X, int64_t **class_ids, int *n);

/* Rows in the current model's exemplar memory and in the validation set. */
int hdqt_store_counts(hdqt_store *s, int64_t *exemplars, int64_t *validation);
/* Ids of the classes the current model learned: those with exemplars in
 * its memory, or, for a model without memory, with validation samples
 * (malloc'd; *ids may be NULL when *n is 0). */
int hdqt_store_learned_classes(hdqt_store *s, int64_t **ids, int *n);

/* ---- model versions ---- */
typedef struct hdqt_store_model {
	int64_t version, created;
	int current;
	size_t blob_len;
	char metrics[512];   /* JSON, truncated to fit */
	char config[512];    /* JSON: the recipe it was trained with ("" if none or too long) */
} hdqt_store_model;

/* Store a blob; with make_current, mark it current in the same transaction.
 * Prunes versions beyond keep_models (never the current one). */
int hdqt_store_model_save(hdqt_store *s, const uint8_t *blob, size_t len, const char *config_json,
			  const char *metrics_json, int make_current, int64_t *version);
/* The current model's blob (malloc'd); HDQT_ENOTFOUND if none. */
int hdqt_store_model_current(hdqt_store *s, uint8_t **blob, size_t *len, int64_t *version);
int hdqt_store_model_list(hdqt_store *s, hdqt_store_model **out, int *n);
/* Make an existing version current again. */
int hdqt_store_model_rollback(hdqt_store *s, int64_t version);

/* ---- training runs ---- */
int hdqt_store_run_begin(hdqt_store *s, int64_t *id);
int hdqt_store_run_end(hdqt_store *s, int64_t id, const char *outcome, const char *figures_json);

/* ---- a training round ---- */
typedef struct hdqt_store_round {
	const uint8_t *blob;          /* the new model */
	size_t blob_len;
	const char *config_json, *metrics_json;
	int make_current;             /* 0: stored but not current (regression guard) */
	const int64_t *learned;       /* samples trained on: deleted (or kept as validation */
	int n_learned;                /*   per keep_learned) */
	const int64_t *holdout;       /* samples held out: moved to validation */
	int n_holdout;
	const int64_t *exemplar_class;/* the new exemplar memory (replaces the old) */
	const float *exemplars;
	int n_exemplars, dim;
	int validation_per_class;     /* > 0: keep only the newest this many per class */
	const uint8_t *novelty;       /* the new model's open-set calibration (NULL: none) */
	size_t novelty_len;
} hdqt_store_round;

/* All of a round's effects in one transaction: after a crash either the
 * round happened completely or its samples are still pending.  Space is
 * freed (samples, pruned versions) before the model is written, so a full
 * database can still take a round.  The exemplars are stored with the new
 * version, also when it is not made current. */
int hdqt_store_round_commit(hdqt_store *s, const hdqt_store_round *r, int64_t *version);

/* ---- open-set prediction ---- */
/* The open-set calibration stored with a version (hdqt_novelty_save's
 * blob, malloc'd); HDQT_ENOTFOUND if it has none (older versions,
 * imported models, rounds without validation samples). */
int hdqt_store_model_novelty(hdqt_store *s, int64_t version, uint8_t **blob, size_t *len);

/* Windows predictions called unknown, kept for the operator to look at and
 * turn into a class: the newest `keep` are kept (at most this many).  Each
 * carries the group it joined when it was seen (hdqtd groups them as they
 * arrive), so a group names the same windows until they are trimmed. */
#define HDQT_STORE_UNKNOWNS_MAX 100000
#define HDQT_STORE_GROUP_IDS 20
typedef struct hdqt_store_unknown {
	int64_t id, created, model_version, group;
	int label;      /* the class it was closest to */
	float score;    /* its novelty score */
} hdqt_store_unknown;
typedef struct hdqt_store_ugroup {
	int64_t group, first, last;     /* first and last seen (seconds) */
	int64_t size;
	double score_sum;
	int label;                      /* most frequent closest class (-1: none) */
	int64_t ids[HDQT_STORE_GROUP_IDS]; /* its oldest windows */
} hdqt_store_ugroup;
/* Store n windows (features of dimension d, labels, scores, groups), then
 * drop all but the newest keep; *removed = rows dropped (of this batch or
 * older).  HDQT_ERANGE on a non-finite feature, HDQT_EFULL when it would
 * eat into the eighth of store.max_bytes kept for rounds (nothing stored). */
int hdqt_store_unknowns_add(hdqt_store *s, const float *X, const int *labels, const float *scores,
			    const int64_t *groups, int n, int d, int64_t model_version, int keep,
			    int *removed);
/* Rows stored and the largest group id (0 when empty). */
int hdqt_store_unknowns_count(hdqt_store *s, int64_t *n, int64_t *max_group);
/* The newest max windows of dimension d seen under model_version, oldest
 * first (malloc'd arrays). */
int hdqt_store_unknowns_list(hdqt_store *s, int d, int max, int64_t model_version,
			     hdqt_store_unknown **meta, float **X, int *n);
/* Every group with its size, times, mean score (score_sum / size), closest
 * class and oldest ids, by group id (malloc'd). */
int hdqt_store_unknowns_groups(hdqt_store *s, hdqt_store_ugroup **out, int *n);
/* Delete the windows of group (> 0), or with the given ids, or all (group
 * 0 and ids NULL); *done = rows deleted. */
int hdqt_store_unknowns_drop(hdqt_store *s, int64_t group, const int64_t *ids, int n, int d,
			     int64_t *done);
/* Make the windows of group (> 0) or with the given ids (not both)
 * pending samples of class `name`, created when missing (*created = 1),
 * and remove them from the unknowns, all in one transaction; *moved =
 * windows moved.  HDQT_ENOTFOUND when none of them exists (nothing
 * changed, no class created), HDQT_EINVAL for a removed class or a bad
 * name, HDQT_EFULL past store.max_pending_per_class. */
int hdqt_store_unknowns_promote(hdqt_store *s, const char *name, int64_t group, const int64_t *ids,
				int n, int d, hdqt_store_class *cls, int *created, int64_t *moved);

/* ---- a model import (docs/bundle.md) ---- */
typedef struct hdqt_store_import {
	const uint8_t *blob;          /* the imported model: a new version, made current */
	size_t blob_len;
	const char *config_json, *metrics_json;
	const char *const *new_names; /* classes to create, with these labels and states */
	const int *new_labels, *new_active;
	int n_new;
	const int *exemplar_label;    /* the new version's memory, by label (all labels */
	const float *exemplars;       /*   must exist once the new classes are in) */
	int n_exemplars, dim;
	const uint8_t *novelty;       /* its open-set calibration on this box (NULL: none) */
	size_t novelty_len;
} hdqt_store_import;

/* Create the classes, store the model as a new current version and its
 * exemplar memory, in one transaction.  HDQT_EEXIST if a name or label is
 * taken, HDQT_ENOTFOUND for an exemplar label no class has, HDQT_ERANGE
 * for a non-finite feature; nothing changed on failure. */
int hdqt_store_import_commit(hdqt_store *s, const hdqt_store_import *im, int64_t *version);

/* ---- backup ---- */
/* Online copy to path: written to path.tmp, fsynced, renamed, directory fsynced. */
int hdqt_store_backup(hdqt_store *s, const char *path);

#ifdef __cplusplus
}
#endif
