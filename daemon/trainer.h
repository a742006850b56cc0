/* SPDX-License-Identifier: MIT */
/*
 * The training thread.  It owns its own database connection and its own
 * copy of the model; the loop thread keeps serving predictions with the
 * current model and receives the new one, already stored, when a round
 * ends (through a uv_async handle, on the loop thread).
 */
#pragma once

#include <stdint.h>
#include <uv.h>

#include "conf.h"
#include "hdqt.h"

enum hdqtd_outcome {
	HDQTD_ROUND_ACCEPTED,   /* stored and made current */
	HDQTD_ROUND_REJECTED,   /* stored, not current: validation fell by more than the margin */
	HDQTD_ROUND_CANCELED,   /* samples stay pending */
	HDQTD_ROUND_FAILED,     /* samples stay pending */
	HDQTD_ROUND_EMPTY,      /* nothing was pending */
};
const char *hdqtd_outcome_name(int outcome);

typedef struct hdqtd_progress {
	int running, canceling;
	int64_t round;
	int epoch, epochs, samples, classes;
	int threads;              /* the round's engine threads (0 until its model is made) */
	float loss;
	double started;           /* monotonic seconds */
	int64_t rounds;           /* rounds finished since start */
} hdqtd_progress;

typedef struct hdqtd_round_result {
	int64_t round;
	int outcome;
	int64_t model_version;    /* 0 when nothing was stored */
	hdqt_model *model;        /* ACCEPTED: the new model; the callee takes it */
	double val_acc, prev_acc; /* percent; < 0 when unknown */
	int samples, holdout, classes, val_samples;
	int diverged;             /* FAILED because the loss became non-finite */
	double seconds;
	char metrics[512];        /* as stored with the model */
	char reason[256];
	/* Samples the round took out of the backlog, by label: learned and held
	 * out (ACCEPTED) or quarantined (FAILED after diverging). */
	int64_t consumed[HDQT_MAX_CLASSES];
	int quarantined;
	int64_t *pids;            /* the pending samples the round read (trainer-private) */
	int n_pids;
} hdqtd_round_result;

typedef struct hdqtd_trainer_cb {
	void *arg;
	void (*started)(void *arg, const hdqtd_progress *p);
	void (*progress)(void *arg, const hdqtd_progress *p);
	void (*finished)(void *arg, hdqtd_round_result *r);
} hdqtd_trainer_cb;

typedef struct hdqtd_trainer hdqtd_trainer;

/* CPUs this process may run on (its affinity mask), at least 1: what the
 * default training.threads and the loop's busy polling count. */
int hdqtd_trainer_cpus(void);

int hdqtd_trainer_start(hdqtd_trainer **out, uv_loop_t *loop, const hdqtd_config *cfg,
			const hdqtd_trainer_cb *cb, char *err, size_t errlen);
/* Ask for a round; HDQT_EBUSY if one is running or queued. */
int hdqtd_trainer_request(hdqtd_trainer *t);
/* Cancel the running round (1 if one was running; 0 also when the round
 * has finished and only waits for the loop to take its result). */
int hdqtd_trainer_cancel(hdqtd_trainer *t);
/* A round counts as running from the request until the loop thread has
 * applied its result (the finished callback has returned): "idle" means
 * the loop's view, the database and the events agree.  t may be NULL
 * (stopped): then idle. */
void hdqtd_trainer_progress(hdqtd_trainer *t, hdqtd_progress *p);
/* Cancel, join the thread, close its handle (on the loop thread). */
void hdqtd_trainer_stop(hdqtd_trainer *t);
