/* SPDX-License-Identifier: MIT */
/*
 * Counters and histograms of the daemon for the `metrics` method (and,
 * through hdqtctl, Prometheus).  Owned by the loop thread: every function
 * here is called on it, so no locking.  Counts only grow while the daemon
 * runs; a restart starts them from zero (Prometheus handles the reset).
 */
#pragma once

#include <stdint.h>

#include <cjson/cJSON.h>

#define HDQTD_METRICS_METHODS 48   /* distinct method names counted; more go to "(other)" */
#define HDQTD_METRICS_CODES 12     /* distinct error codes per method; more go to code 0 */
#define HDQTD_METRICS_BUCKETS 12

typedef struct hdqtd_histogram {
	const double *le;             /* upper bounds, ascending, n of them (+Inf implied) */
	int n;
	uint64_t count[HDQTD_METRICS_BUCKETS]; /* per bucket, not cumulative */
	uint64_t total;
	double sum;
} hdqtd_histogram;

typedef struct hdqtd_method_count {
	const char *name;             /* a method table name (static storage) */
	uint64_t requests;
	int n_codes;
	int code[HDQTD_METRICS_CODES];
	uint64_t errors[HDQTD_METRICS_CODES];
} hdqtd_method_count;

typedef struct hdqtd_metrics {
	hdqtd_method_count m[HDQTD_METRICS_METHODS];
	int n_methods;
	uint64_t predictions, predictions_unknown, samples_ingested, samples_quarantined, connections_accepted;
	uint64_t rounds[8];           /* by hdqtd_round_outcome */
	uint64_t exports, imports, backups;
	uint64_t busy_polls, busy_poll_hits; /* daemon.busy_poll_us: replies that polled; polls a request came in */
	hdqtd_histogram round_seconds, predict_seconds;
} hdqtd_metrics;

void hdqtd_metrics_init(hdqtd_metrics *m);
/* A request for method (NULL: not a valid request) was dispatched. */
void hdqtd_metrics_request(hdqtd_metrics *m, const char *method);
/* A reply to a request for method went out: counts its error, if any. */
void hdqtd_metrics_reply(hdqtd_metrics *m, const char *method, const cJSON *resp);
void hdqtd_metrics_observe(hdqtd_histogram *h, double v);
/* The counters as the `metrics` result's "requests", "rounds" and histograms. */
int hdqtd_metrics_json(const hdqtd_metrics *m, cJSON *o);
