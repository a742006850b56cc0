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
#include "metrics.h"
#include "hdqt.h"
#include "hdqt_data.h"
#include "hdqt_json.h"
#include "hdqt_proto.h"
#include "hdqt_store.h"
#include "trainer.h"
#include "writer.h"

/* Plausibility bounds of inputs (PROTOCOL.md): raw readings are g and rad/s
 * of an IMU (real ones saturate near 16 g and 35 rad/s); features are what
 * such windows give, with a wide margin.  Beyond them a value is a broken
 * sensor or an attack, and it could make training diverge. */
#define HDQTD_READING_MAX HDQT_RPC_READING_MAX
#define HDQTD_FEATURE_MAX HDQT_RPC_FEATURE_MAX

typedef struct hdqtd_conn hdqtd_conn;
typedef struct hdqtd_xfer hdqtd_xfer;
typedef struct hdqtd_openset hdqtd_openset;

/* Transfer sessions (fleet.c): model export, model import, backup; at most
 * one of each kind at a time, daemon-wide. */
enum { HDQTD_XFER_EXPORT, HDQTD_XFER_IMPORT, HDQTD_XFER_BACKUP, HDQTD_XFER_KINDS };

typedef struct hdqtd {
	uv_loop_t *loop;
	hdqtd_config cfg;
	char config_path[4096];
	hdqt_store *store;          /* the loop's connection: reads only */
	hdqtd_writer *writer;       /* every write a client asks for */
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
	/* Counts kept up to date by the writes and rounds that change them, so
	 * that no request counts the backlog (pending[label]). */
	int64_t pending_total, quarantined, n_exemplars, n_validation;
	int64_t pending[HDQT_MAX_CLASSES];
	int exclusive;              /* rollback / quarantine jobs in flight: no round starts */
	char *describe;             /* the OpenRPC document, printed once */
	size_t describe_len;
	char **sets;                /* --set overrides, re-applied on SIGHUP */
	int n_sets;

	uv_pipe_t listener;
	int listening, socket_activated, bound;
	hdqtd_conn *conns;
	int n_conns;
	int n_unprivileged;         /* connections of non-admin peers */
	int big_active;             /* long lines parsed or being parsed (tree slots in use) */
	hdqtd_conn *big_wait;       /* connections waiting for a tree slot, in order */
	hdqt_json *json;            /* the loop's parser of lines up to BIG_LINE (NULL: cJSON) */
	uint64_t conn_seq;

	uv_signal_t sig_term, sig_int, sig_hup;
	uv_timer_t tick;            /* auto-training policy, watchdog */
	uv_timer_t stop_timer;      /* bounds how long shutdown waits for slow readers */
	/* daemon.busy_poll_us: while this idle handle is active libuv polls with
	 * a zero timeout, so the loop does not sleep until spin_until (uv_hrtime). */
	uv_idle_t spin;
	uint64_t spin_until;
	int spin_open;
	int ncpu;                   /* CPUs hdqtd may run on, at start (hdqtd_trainer_cpus) */
	uint64_t watchdog_usec;
	double started;             /* monotonic seconds */
	double last_round_end;
	int64_t pending_baseline;   /* pending samples left by the last unsuccessful round */
	int stopping;
	int stop_timer_open;
	gid_t admin_gid;
	int admin_gid_set;
	hdqtd_metrics stats;        /* counters and histograms (metrics.h) */
	hdqtd_xfer *xfer[HDQTD_XFER_KINDS];
	uint64_t xfer_seq;
	hdqtd_openset *openset;     /* open-set calibration and unknown windows (openset.c) */
	/* Every read lands here: on_read copies it into its connection's line
	 * buffer before returning, so one buffer serves the loop (a 64 KB
	 * malloc and free per read cost glibc a heap consolidation each). */
	char rbuf[65536];
} hdqtd;

struct hdqtd_conn {
	uv_pipe_t pipe;
	hdqtd *d;
	hdqtd_conn *next, *prev;
	hdqt_linebuf lb;
	uint64_t id;
	int subscribed;
	int closing;                /* uv_close called */
	int finishing;              /* no more reading: close once replies are written */
	int shut;                   /* uv_shutdown called */
	int reading;
	int paused;                 /* too many unread replies: resumed by on_write */
	int eof;                    /* the peer shut down its side */
	int overflow;               /* a line over max_message: error, then finish */
	int busy;                   /* a request is on the writer thread */
	int dead;                   /* closed while busy: the writer's completion frees it */
	int admin;                  /* may call state-changing methods */
	const char *method;         /* the request being answered (method table name; NULL: none) */
	pid_t pid;
	uid_t uid;
	double last_active, partial_since;  /* monotonic seconds (0: no partial line) */
	double last_written;        /* a write completed */
	/* daemon.busy_poll_us: when its last reply was queued (uv_hrtime, 0:
	 * none since its last read) and until when that reply polled (0: it
	 * did not); whether its next bytes came soon enough after it that its
	 * next reply may poll (quick); polls in a row that its bytes missed,
	 * and how many quick replies are still to go without polling (skip:
	 * 2^misses - 1 after a miss). */
	uint64_t replied_ns, polled_until;
	int quick, misses, skip;
	/* The line being answered: its parsed message, the next batch entry to
	 * run, and a batch's replies so far as text ("[r1,r2]"). */
	cJSON *msg, *cursor;
	int batch, over, n_out;
	int big;                    /* a long line: parsed and freed off the loop, holds a tree slot */
	size_t tree_bytes;          /* its tree, as counted against max_memory */
	hdqtd_conn *big_next;       /* waiting for a tree slot (d->big_wait) */
	const char *wait_line;      /* ... with this line of its buffer */
	size_t wait_len;
	char *out;
	size_t out_len, out_cap;
};

double hdqtd_now(void);

/* server.c */
int hdqtd_server_listen(hdqtd *d, char *err, size_t errlen);
void hdqtd_server_close(hdqtd *d);
/* A reply to c was queued: keep the loop awake for daemon.busy_poll_us
 * from now if c's requests come back quickly (no-op when 0). */
void hdqtd_server_replied(hdqtd_conn *c);
/* Bytes from c arrived: note how soon after its last reply. */
void hdqtd_server_heard(hdqtd_conn *c);
/* Close every connection now, dropping replies not yet written. */
void hdqtd_server_drop_all(hdqtd *d);
/* Once a second: idle and partial-line timeouts. */
void hdqtd_server_tick(hdqtd *d);
/* The reply (NULL for a notification) of c's request that went to the
 * writer thread; on the loop thread.  Frees c if it was closed meanwhile. */
void hdqtd_conn_complete(hdqtd_conn *c, cJSON *resp);
/* Send a notification to every subscribed connection. */
void hdqtd_broadcast(hdqtd *d, cJSON *event);

/* A method's failure, filled by a handler that returns NULL. */
typedef struct hdqtd_reply {
	cJSON *result;   /* on success */
	int code;        /* on failure */
	char msg[256];
	cJSON *data;
} hdqtd_reply;

/* The request a handler answers: its id, whether it is a notification, and
 * where to say that the reply comes later (hdqtd_conn_complete). */
typedef struct hdqtd_call {
	const cJSON *id;
	int notify;
	int *async;
} hdqtd_call;

/* methods.c */
/* Set r's code and message; returns NULL (for `return hdqtd_fail(...)`). */
cJSON *hdqtd_fail(hdqtd_reply *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The response of a request answered after work off the loop: the result
 * (taken), else the failure in r; NULL for a notification. */
cJSON *hdqtd_late_reply(const cJSON *id, int no_reply, cJSON *res, const hdqtd_reply *r);
/* 1 (and r set) if a round or another exclusive change is in flight. */
int hdqtd_exclusive_busy(hdqtd *d, hdqtd_reply *r);

/* Handle one request object; returns the response, or NULL for a
 * notification, or sets *async when the reply comes later through
 * hdqtd_conn_complete (a database write on the writer thread). */
cJSON *hdqtd_dispatch(hdqtd *d, hdqtd_conn *c, cJSON *req, int *async);
int hdqtd_reload_classes(hdqtd *d);
int hdqtd_load_model(hdqtd *d);
/* Serve m (taken; loaded off the loop, one thread), stored as version with
 * these metrics: the swap a round or an import hands to the loop. */
void hdqtd_install_model(hdqtd *d, hdqt_model *m, int64_t version, const char *metrics_json);
/* Read the counts of pending and quarantined samples (start-up). */
int hdqtd_load_counts(hdqtd *d);
void hdqtd_maybe_train(hdqtd *d);
extern const hdqtd_trainer_cb hdqtd_trainer_callbacks;

/* openset.c: unknown flags, the unknown windows, their groups */
int hdqtd_openset_new(hdqtd *d);
void hdqtd_openset_free(hdqtd *d);
/* Load the serving model's calibration (after every model change). */
void hdqtd_openset_load(hdqtd *d);
/* 1 when the score needs the prediction's embedding. */
int hdqtd_openset_needs_embedding(const hdqtd *d);
/* Add unknown, novelty and novelty_threshold to prediction o of input x
 * (features) reported as label; keeps x, in its group, when it is unknown
 * (emb, the embedding, is overwritten then). */
void hdqtd_openset_annotate(hdqtd *d, cJSON *o, const float *x, const float *logits, float *emb,
			    int label);
/* After a request's predictions: hand the kept windows to the writer when
 * enough wait; the tick (once a second) hands over the rest. */
void hdqtd_openset_flush(hdqtd *d);
void hdqtd_openset_tick(hdqtd *d);
cJSON *hdqtd_openset_status(hdqtd *d);
cJSON *hdqtd_m_unknowns_list(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k);
cJSON *hdqtd_m_unknowns_promote(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k);
cJSON *hdqtd_m_unknowns_drop(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k);

/* fleet.c: model export and import, backup (docs/bundle.md) */
cJSON *hdqtd_m_model_export(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k);
cJSON *hdqtd_m_export_chunk(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k);
cJSON *hdqtd_m_model_import(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k);
cJSON *hdqtd_m_import_chunk(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k);
cJSON *hdqtd_m_import_commit(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k);
cJSON *hdqtd_m_backup(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k);
cJSON *hdqtd_m_backup_chunk(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k);
cJSON *hdqtd_m_transfer_close(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k);
cJSON *hdqtd_m_metrics(hdqtd *d, hdqtd_conn *c, const cJSON *p, hdqtd_reply *r, hdqtd_call *k);
/* The connection with this id closed: its transfers end. */
void hdqtd_fleet_conn_closed(hdqtd *d, uint64_t conn_id);
/* Bytes the transfer sessions hold (bundles, staging areas), all of them
 * or those of one connection (conn_id != 0): they count against
 * daemon.max_memory like the connections' buffers. */
size_t hdqtd_fleet_memory(const hdqtd *d, uint64_t conn_id);
/* What connections and sessions buffer together (server.c). */
size_t hdqtd_memory_in_use(hdqtd *d);
/* Once a second: transfers idle for longer than their bound end. */
void hdqtd_fleet_tick(hdqtd *d);
/* Start-up: remove a backup file a previous run left behind. */
void hdqtd_fleet_cleanup(hdqtd *d);
/* After uv_run: free what is left. */
void hdqtd_fleet_free(hdqtd *d);
