/* SPDX-License-Identifier: MIT */
/* hdqtd configuration: defaults, the INI file (config/hdqtd.conf documents
 * every key), command-line overrides and validation. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "hdqt.h"
#include "hdqt_data.h"
#include "hdqt_store.h"

typedef struct hdqtd_config {
	/* [daemon] */
	char socket[108];          /* sun_path */
	unsigned socket_mode;      /* octal in the file */
	char db[4096];
	int log_level;             /* syslog priority: 3 err .. 7 debug */
	int max_connections;
	size_t max_message;        /* bytes per JSON-RPC line */
	size_t max_write_queue;    /* unread reply bytes before a client is dropped */
	int max_batch;             /* samples / inputs per request; units of work per line */
	int max_rpc_batch;         /* entries of one JSON-RPC batch */
	int max_connections_per_uid; /* for non-admin peers */
	int admin_reserved;        /* connection slots non-admin peers cannot take */
	double idle_timeout_s;     /* close a connection silent this long (0 = never) */
	double partial_timeout_s;  /* a started line must be complete within this (0 = never) */
	double write_timeout_s;    /* drop a client that reads none of its replies this long */
	size_t max_memory;         /* bytes all connections may buffer together */
	int busy_poll_us;          /* the loop polls this long after a reply to a client that asks again at once (0 = off) */
	/* [model] */
	int n_hidden, hidden[HDQT_MAX_LAYERS];
	hdqt_mode quant;
	int bits, acc_bits;
	int beta_w, beta_a; /* HadaNets segments (-1: the recipe's; 0: whole row) */
	int window;                /* readings per raw window (feature extractor) */
	float norm_clip;
	uint64_t seed;
	/* [training] */
	hdqt_cl_method strategy;
	int memory, epochs, batch;
	int threads;               /* training threads (0: all cores but one when more than two) */
	float lr;
	int auto_train;            /* start rounds by itself */
	int auto_min_samples;      /* ... when this many samples are pending */
	double auto_interval_s;    /* ... and at least this long after the last round */
	int max_round_samples;
	int holdout_every;         /* every k-th sample of a class is held out for validation (0 = none) */
	int validation_per_class;
	double regression_margin;  /* percentage points */
	/* [store] */
	int sync_full;
	int64_t max_bytes;
	int max_pending_per_class;
	int keep_models;
	/* [open_set] */
	int novelty_kind;          /* hdqt_novelty_kind */
	double unknown_rate;       /* target false-unknown rate of the calibration */
	int keep_unknowns;         /* unknown windows kept for the operator (0: none) */
	int alert_count;           /* novelty.detected after this many new unknowns ... */
	double alert_interval_s;   /* ... at most once in this long */
	double group_similarity;   /* cosine above which unknowns form one group */
	/* [access] */
	char admin_group[64];      /* may call state-changing methods ("" = anyone who can connect) */
} hdqtd_config;

void hdqtd_config_default(hdqtd_config *c);
/* Set one key; HDQT_EINVAL with a message naming section.key otherwise. */
int hdqtd_config_set(hdqtd_config *c, const char *section, const char *key, const char *value,
		     char *err, size_t errlen);
/* Load an INI file over the current values. */
int hdqtd_config_load(hdqtd_config *c, const char *path, char *err, size_t errlen);
/* Cross-key checks. */
int hdqtd_config_check(const hdqtd_config *c, char *err, size_t errlen);
/* About what a training round adds to the database (store.max_bytes must
 * hold twice it). */
int64_t hdqtd_config_round_bytes(const hdqtd_config *c);
/* 1 and a message for the operator when the configuration works but will
 * run into a limit (store.max_bytes under keep_models versions), else 0. */
int hdqtd_config_warning(const hdqtd_config *c, char *msg, size_t len);
/* Store options of the [store] section, as both of hdqtd's connections use
 * them (learned samples are deleted: they live on in model and exemplars). */
void hdqtd_config_store_opts(const hdqtd_config *c, hdqt_store_opts *o);
/* The configuration as {"daemon": {...}, "model": {...}, ...}. */
cJSON *hdqtd_config_json(const hdqtd_config *c);
