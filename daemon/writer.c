/* SPDX-License-Identifier: MIT */
/*
 * Database writes off the loop thread (writer.h).
 *
 * Invariant: at most one job runs at a time, so the writer's connection
 * and extractor are used by one thread at a time; jobs run in submission
 * order, which keeps the order of one connection's requests (a connection
 * submits its next request only after the previous one's done()).
 */
#include <stdio.h>
#include <stdlib.h>

#include "writer.h"

struct hdqtd_writer {
	uv_loop_t *loop;
	hdqt_store *store;
	hdqt_feat *feat;
	hdqtd_job *head, *tail; /* waiting; the running job is not in the list */
	int running, n;
};

int hdqtd_writer_start(hdqtd_writer **out, uv_loop_t *loop, const hdqtd_config *cfg, char *err,
		       size_t errlen)
{
	hdqtd_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return HDQT_ENOMEM;
	w->loop = loop;
	hdqt_store_opts so;
	hdqtd_config_store_opts(cfg, &so);
	so.quick_check = 0;            /* the loop's connection checked the file */
	so.busy_timeout_ms = 10000;    /* waits for a round's commit, off the loop */
	int rc = hdqt_store_open(&w->store, cfg->db, &so, err, errlen);
	if (rc == 0 && (rc = hdqt_feat_new(&w->feat, cfg->window)) < 0)
		snprintf(err, errlen, "feature extractor: %s", hdqt_strerror(rc));
	if (rc < 0) {
		hdqt_store_close(w->store);
		free(w);
		return rc;
	}
	*out = w;
	return 0;
}

static void next_job(hdqtd_writer *w);

static void work_cb(uv_work_t *req)
{
	hdqtd_job *j = req->data;
	j->run(j, j->w->store, j->w->feat);
}

static void after_cb(uv_work_t *req, int status)
{
	(void)status; /* UV_ECANCELED cannot happen: jobs are never canceled */
	hdqtd_job *j = req->data;
	hdqtd_writer *w = j->w;
	w->running = 0;
	w->n--;
	j->done(j);
	next_job(w);
}

static void next_job(hdqtd_writer *w)
{
	if (w->running || !w->head)
		return;
	hdqtd_job *j = w->head;
	w->head = j->next;
	if (!w->head)
		w->tail = NULL;
	j->work.data = j;
	w->running = 1;
	int rc = uv_queue_work(w->loop, &j->work, work_cb, after_cb);
	if (rc < 0) {
		/* Cannot happen with a valid loop and callback; run it here rather
		 * than lose an acknowledged request. */
		j->run(j, w->store, w->feat);
		after_cb(&j->work, 0);
	}
}

void hdqtd_writer_submit(hdqtd_writer *w, hdqtd_job *j)
{
	j->w = w;
	j->next = NULL;
	if (w->tail)
		w->tail->next = j;
	else
		w->head = j;
	w->tail = j;
	w->n++;
	next_job(w);
}

int hdqtd_writer_queued(const hdqtd_writer *w)
{
	return w ? w->n : 0;
}

void hdqtd_writer_free(hdqtd_writer *w)
{
	if (!w)
		return;
	hdqt_store_close(w->store);
	hdqt_feat_free(w->feat);
	free(w);
}
