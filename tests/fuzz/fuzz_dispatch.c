/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: JSON-RPC method dispatch (daemon/methods.c) against a
 * real in-process daemon state: the daemon's objects except main.c and
 * server.c, a temporary SQLite database in /tmp, the serving model, the
 * feature extractor, a libuv loop, the writer and the training thread, set
 * up as daemon/main.c does.  server.c's socket I/O is replaced by the few
 * functions methods.c calls (below): replies are checked and dropped.
 * Every input line is parsed as server.c parses it and handed to
 * hdqtd_dispatch with an admin connection (a batch array entry by entry,
 * each answered before the next as server.c does; a write goes to the
 * writer thread and is answered through hdqtd_conn_complete); every reply
 * must serialise to one line.  The state carries over from input to input
 * (classes, samples, trained models), so sequences matter; after each input
 * the loop runs until the training thread is idle, and every RESET_EVERY
 * inputs the database starts afresh to keep it bounded.
 *
 * Small settings keep rounds quick: model.window=16 (a raw window is 16
 * rows of 6 readings, reachable by mutation), hidden 16, 1 epoch, rounds of
 * at most 200 samples, auto rounds from 64 pending samples.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"

#define CHECK(c)                                                                               \
	do {                                                                                   \
		if (!(c)) {                                                                    \
			fprintf(stderr, "fuzz_dispatch: check failed: %s (line %d)\n", #c,       \
				__LINE__);                                                     \
			abort();                                                               \
		}                                                                              \
	} while (0)

#define RESET_EVERY 1000
#define MAX_LINES 32

static uv_loop_t loop;
static hdqtd *d;
static hdqtd_conn *conn;
static char dbpath[256];
static unsigned generation, inputs;

static int completed;

static void answer(cJSON *resp);

/* ---- what methods.c needs of server.c ---- */

void hdqtd_conn_complete(hdqtd_conn *c, cJSON *resp)
{
	CHECK(c == conn && c->busy);
	c->busy = 0;
	answer(resp);
	completed = 1;
}

void hdqtd_broadcast(hdqtd *dd, cJSON *event)
{
	answer(event); /* no connection here is subscribed: checked and dropped */
}

size_t hdqtd_memory_in_use(hdqtd *dd)
{
	/* no connection buffers here: what the transfer sessions hold */
	return hdqtd_fleet_memory(dd, 0);
}

static void remove_db(void)
{
	char p[300];
	unlink(dbpath);
	snprintf(p, sizeof(p), "%s-wal", dbpath);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", dbpath);
	unlink(p);
}

static void daemon_open(void)
{
	d = calloc(1, sizeof(*d));
	CHECK(d);
	hdqtd_config_default(&d->cfg);
	hdqtd_metrics_init(&d->stats);
	char err[512];
	snprintf(dbpath, sizeof(dbpath), "/tmp/hdqt-fuzz-dispatch-%d-%u.db", (int)getpid(),
		 generation++);
	remove_db();
	CHECK(hdqtd_config_set(&d->cfg, "daemon", "database", dbpath, err, sizeof(err)) == 0);
	static const char *const sets[][3] = {
		{"daemon", "log_level", "crit"},     {"daemon", "max_batch", "64"},
		{"model", "window", "16"},           {"model", "hidden", "16"},
		{"training", "epochs", "1"},         {"training", "batch", "32"},
		{"training", "memory", "20"},        {"training", "max_round_samples", "200"},
		{"training", "auto_min_samples", "64"}, {"training", "auto_interval", "0"},
		{"store", "sync", "normal"},         {"store", "max_pending_per_class", "2000"},
	};
	for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++)
		CHECK(hdqtd_config_set(&d->cfg, sets[i][0], sets[i][1], sets[i][2], err, sizeof(err)) == 0);
	CHECK(hdqtd_config_check(&d->cfg, err, sizeof(err)) == 0);
	hdqtd_log_init(d->cfg.log_level);
	hdqt_store_opts so;
	hdqtd_config_store_opts(&d->cfg, &so);
	so.busy_timeout_ms = 5000;
	if (hdqt_store_open(&d->store, d->cfg.db, &so, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_dispatch: %s: %s\n", dbpath, err);
		abort();
	}
	CHECK(hdqtd_openset_new(d) == 0);
	CHECK(hdqtd_reload_classes(d) == 0 && hdqtd_load_model(d) == 0 && hdqtd_load_counts(d) == 0);
	CHECK(hdqt_feat_new(&d->feat, d->cfg.window) == 0);
	d->loop = &loop;
	d->started = hdqtd_now();
	if (hdqtd_writer_start(&d->writer, d->loop, &d->cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_dispatch: database writer: %s\n", err);
		abort();
	}
	hdqtd_trainer_cb cb = hdqtd_trainer_callbacks;
	cb.arg = d;
	if (hdqtd_trainer_start(&d->trainer, d->loop, &d->cfg, &cb, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_dispatch: training thread: %s\n", err);
		abort();
	}
	/* A connection as server.c makes one; calloc'd so that new fields start at 0. */
	conn = calloc(1, sizeof(*conn));
	CHECK(conn);
	conn->d = d;
	conn->id = 1;
	conn->admin = 1;
}

static void daemon_close(void)
{
	hdqtd_trainer_stop(d->trainer);
	d->trainer = NULL;
	uv_run(&loop, UV_RUN_DEFAULT); /* the trainer's handle closes */
	hdqtd_writer_free(d->writer);
	hdqtd_fleet_free(d); /* transfers the input left open, and a backup's file */
	hdqtd_openset_free(d);
	free(d->describe);
	hdqt_store_close(d->store);
	hdqt_model_free(d->model);
	hdqt_feat_free(d->feat);
	cJSON_Delete(d->metrics);
	free(d->classes);
	free(d->learned);
	free(d);
	free(conn);
	d = NULL;
	conn = NULL;
	remove_db();
}

static void at_exit(void)
{
	if (d)
		daemon_close();
	uv_loop_close(&loop);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	CHECK(uv_loop_init(&loop) == 0);
	daemon_open();
	atexit(at_exit);
	return 0;
}

/* Run the loop until the training thread is idle and its result applied. */
static void settle(void)
{
	for (int i = 0; i < 20000; i++) {
		uv_run(&loop, UV_RUN_NOWAIT);
		hdqtd_progress p;
		hdqtd_trainer_progress(d->trainer, &p);
		if (!p.running) {
			uv_run(&loop, UV_RUN_NOWAIT);
			return;
		}
		struct timespec ts = {0, 250000};
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "fuzz_dispatch: a training round did not end within 5 s\n");
	abort();
}

static void answer(cJSON *resp)
{
	if (!resp)
		return;
	size_t len = 0;
	char *s = hdqt_rpc_print(resp, &len);
	CHECK(s && len > 1 && memchr(s, '\n', len - 1) == NULL);
	free(s);
	cJSON_Delete(resp);
}

/* One request; a write is answered (on the loop) before the next starts,
 * and the request stays alive until then (the job reads its params). */
static void request(cJSON *req)
{
	int async = 0;
	completed = 0;
	cJSON *resp = hdqtd_dispatch(d, conn, req, &async);
	if (!async) {
		answer(resp);
		return;
	}
	CHECK(resp == NULL);
	conn->busy = 1;
	for (int i = 0; !completed; i++) {
		CHECK(i < 1000000);
		uv_run(&loop, UV_RUN_ONCE);
	}
}

static void one_line(const char *line, size_t len)
{
	if (len == 0)
		return;
	cJSON *msg = cJSON_ParseWithLength(line, len);
	if (!msg)
		return; /* server.c answers a parse error itself */
	if (!cJSON_IsArray(msg)) {
		request(msg);
	} else {
		cJSON *req;
		cJSON_ArrayForEach(req, msg)
			request(req);
	}
	cJSON_Delete(msg);
	uv_run(&loop, UV_RUN_NOWAIT); /* round results arrive between requests, as in the daemon */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (++inputs % RESET_EVERY == 0) {
		daemon_close();
		daemon_open();
	}
	const char *p = (const char *)data, *end = p + size;
	for (int k = 0; p < end && k < MAX_LINES; k++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = (size_t)((nl ? nl : end) - p);
		one_line(p, len);
		if (!nl)
			break;
		p = nl + 1;
	}
	settle();
	return 0;
}
