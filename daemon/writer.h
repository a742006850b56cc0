/* SPDX-License-Identifier: MIT */
/*
 * The writer: every database write a client asks for (sample.add,
 * class.add/remove, model.rollback, quarantine.*) runs here, off the loop
 * thread, on a database connection of its own, one job at a time in the
 * order they were submitted.  A job's run() executes on a libuv thread-pool
 * thread and may use only the store and feature extractor it is given and
 * its own data; its done() runs afterwards on the loop thread, which owns
 * the job again and frees it.
 */
#pragma once

#include <uv.h>

#include "conf.h"
#include "hdqt_data.h"
#include "hdqt_store.h"

typedef struct hdqtd_writer hdqtd_writer;
typedef struct hdqtd_job hdqtd_job;

struct hdqtd_job {
	void (*run)(hdqtd_job *j, hdqt_store *s, hdqt_feat *f); /* writer side */
	void (*done)(hdqtd_job *j);                             /* loop side; frees j */
	/* private */
	uv_work_t work;
	hdqtd_writer *w;
	hdqtd_job *next;
};

/* Open the writer's connection and feature extractor; err receives a
 * message on failure (nothing is left open). */
int hdqtd_writer_start(hdqtd_writer **out, uv_loop_t *loop, const hdqtd_config *cfg, char *err,
		       size_t errlen);
/* Queue j (FIFO); its done() is always called, also when stop has begun. */
void hdqtd_writer_submit(hdqtd_writer *w, hdqtd_job *j);
/* Jobs queued or running. */
int hdqtd_writer_queued(const hdqtd_writer *w);
/* Free the writer once no job is left (after uv_run returned). */
void hdqtd_writer_free(hdqtd_writer *w);
