/* SPDX-License-Identifier: MIT */
/*
 * The daemon's state, owned by the loop thread.  Everything here is touched
 * only on the loop thread; the training thread talks to it through
 * trainer.h's callbacks, which also run on the loop thread.
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include <cjson/cJSON.h>

#include "conf.h"
#include "hdqt.h"
#include "hdqt_data.h"
#include "hdqt_proto.h"
#include "hdqt_store.h"
#include "trainer.h"

typedef struct hdqtd_conn hdqtd_conn;

typedef struct hdqtd {
	uv_loop_t *loop;
	hdqtd_config cfg;
	char config_path[4096];
	hdqt_store *store;
	hdqtd_trainer *trainer;
	hdqt_feat *feat;

	hdqt_model *model;          /* serving model (NULL before the first round) */
	int64_t model_version;
	cJSON *metrics;             /* the serving model's stored metrics */
	hdqt_store_class *classes;  /* cache of the classes table, by label */
	int n_classes;
	/* learned[label]: the class has exemplars or held-out samples, i.e. some
	 * round learned it; NULL when nothing tells (then every head row counts).
	 * A class announced but never given samples keeps an untrained head row
	 * that must not be predicted. */
	unsigned char *learned;
	int n_learned;

	uv_pipe_t listener;
	int listening, socket_activated, bound;
	hdqtd_conn *conns;
	int n_conns;
	uint64_t conn_seq;

	uv_signal_t sig_term, sig_int, sig_hup;
	uv_timer_t tick;            /* auto-training policy, watchdog */
	uv_timer_t stop_timer;      /* bounds how long shutdown waits for slow readers */
	uint64_t watchdog_usec;
	double started;             /* monotonic seconds */
	double last_round_end;
	int64_t pending_baseline;   /* pending samples left by the last unsuccessful round */
	int stopping;
	gid_t admin_gid;
	int admin_gid_set;
} hdqtd;

struct hdqtd_conn {
	uv_pipe_t pipe;
	hdqtd *d;
	hdqtd_conn *next, *prev;
	hdqt_linebuf lb;
	uint64_t id;
	int subscribed;
	int closing;
	int reading;
	int admin;                  /* may call state-changing methods */
	pid_t pid;
	uid_t uid;
};

double hdqtd_now(void);

/* server.c */
int hdqtd_server_listen(hdqtd *d, char *err, size_t errlen);
void hdqtd_server_close(hdqtd *d);
/* Close every connection now, dropping replies not yet written. */
void hdqtd_server_drop_all(hdqtd *d);
/* Send a notification to every subscribed connection. */
void hdqtd_broadcast(hdqtd *d, cJSON *event);

/* methods.c */
/* Handle one request object; returns the response, or NULL for a notification. */
cJSON *hdqtd_dispatch(hdqtd *d, hdqtd_conn *c, const cJSON *req);
int hdqtd_reload_classes(hdqtd *d);
int hdqtd_load_model(hdqtd *d);
void hdqtd_maybe_train(hdqtd *d);
extern const hdqtd_trainer_cb hdqtd_trainer_callbacks;
