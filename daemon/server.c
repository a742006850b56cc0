/* SPDX-License-Identifier: MIT */
/*
 * The Unix-socket server: connections, line framing, back-pressure, limits.
 *
 * A connection answers its lines strictly in order, one at a time.  A line
 * is a request, a notification or a batch; a request whose method writes
 * the database is handed to the writer thread (writer.c) and the
 * connection reads nothing more until its reply is queued, so replies keep
 * the order of the requests.  Lines are taken from the connection's buffer
 * only while its unread replies stay under a high-water mark; otherwise
 * reading pauses and resumes when the client has read them (on_write).
 *
 * Invariant: every complete line read before EOF, an oversized line or
 * shutdown gets its reply (or, once stop has begun, a "shutting down"
 * error: no method runs after stop begins).  Once a connection is being
 * finished (conn_finish) nothing restarts reading on it.
 *
 * Limits (docs/reliability.md): a line over max_message gets one error and
 * closes the stream (it cannot be resynchronised); a JSON-RPC batch holds at
 * most max_rpc_batch entries and a line at most max_batch units of work
 * (inputs, samples, classes listed); a reply over max_write_queue is
 * replaced by an error; a client whose unread replies exceed
 * max_write_queue is dropped; idle and half-sent lines time out; one uid
 * holds at most max_connections_per_uid connections and non-admin peers
 * leave admin_reserved slots free; what all connections buffer together
 * stays under max_memory.
 */
#include <errno.h>
#include <grp.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "conf.h"
#include "config.h"
#include "daemon.h"
#include "log.h"
#if HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

typedef struct write_req {
	uv_write_t req;
	char *buf;
} write_req;

static void conn_close(hdqtd_conn *c);
static void conn_drain(hdqtd_conn *c);
static void tree_release(hdqtd_conn *c, cJSON *msg);
static size_t conn_memory(hdqtd_conn *c);
static void free_later(hdqtd *d, cJSON *msg);

/* A parsed number array takes about this many bytes of cJSON nodes per
 * byte of text ("0.1," is 4 bytes, its node 64). */
#define TREE_FACTOR 48
static void line_continue(hdqtd_conn *c);

static size_t queued(hdqtd_conn *c)
{
	return uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe);
}

static unsigned long long cid(const hdqtd_conn *c)
{
	return (unsigned long long)c->id;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	hdqtd *d = ((hdqtd_conn *)h->data)->d;
	(void)suggested;
	buf->base = d->rbuf;
	buf->len = sizeof(d->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void set_reading(hdqtd_conn *c, int on)
{
	/* A connection being finished or closed is never read again. */
	if (c->closing || (on && (c->finishing || c->eof || c->overflow)) || c->reading == on)
		return;
	int rc = on ? uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read)
		    : uv_read_stop((uv_stream_t *)&c->pipe);
	if (rc == 0) {
		c->reading = on;
		/* While not read, a half-sent line is the daemon's doing, not the
		 * client's: its clock starts again. */
		if (on && c->partial_since > 0)
			c->partial_since = hdqtd_now();
	} else {
		hdqtd_log(LOG_WARNING, "client %llu: %s: %s", cid(c), on ? "uv_read_start" : "uv_read_stop",
			  uv_strerror(rc));
		conn_close(c);
	}
}

static void on_write(uv_write_t *req, int status)
{
	write_req *w = (write_req *)req;
	hdqtd_conn *c = req->handle->data;
	free(w->buf);
	free(w);
	if (!c || c->closing)
		return;
	if (status < 0) {
		hdqtd_log(LOG_DEBUG, "client %llu: write: %s", cid(c), uv_strerror(status));
		conn_close(c);
		return;
	}
	c->last_written = hdqtd_now();
	/* Resume a paused connection once its replies have drained. */
	if (c->paused && queued(c) < c->d->cfg.max_write_queue / 4) {
		c->paused = 0;
		conn_drain(c);
	}
}

/* Queue bytes (taken) for the client. */
static int conn_queue(hdqtd_conn *c, char *data, size_t len)
{
	if (c->closing || c->shut) {
		free(data);
		return -1;
	}
	if (queued(c) + len > c->d->cfg.max_write_queue) {
		hdqtd_log(LOG_WARNING, "client %llu: %zu bytes of replies unread, %zu more to send: "
			  "disconnecting (daemon.max_write_queue = %zu)", cid(c), queued(c), len,
			  c->d->cfg.max_write_queue);
		free(data);
		conn_close(c);
		return -1;
	}
	size_t done = 0;
	if (queued(c) == 0) {
		/* Nothing waits: write now.  A reply the socket takes whole needs
		 * no request, no callback and no POLLOUT: libuv's uv__drain
		 * re-arms the watcher with an epoll_ctl for every finished
		 * uv_write, one system call in four of a small request. */
		uv_buf_t b = uv_buf_init(data, (unsigned)len);
		int n = uv_try_write((uv_stream_t *)&c->pipe, &b, 1);
		if (n < 0 && n != UV_EAGAIN) {
			hdqtd_log(LOG_DEBUG, "client %llu: write: %s", cid(c), uv_strerror(n));
			free(data);
			conn_close(c);
			return -1;
		}
		c->last_written = hdqtd_now(); /* the write timeout counts from here */
		c->last_active = c->last_written;
		if (n >= 0 && (size_t)n == len) {
			free(data);
			return 0;
		}
		done = n > 0 ? (size_t)n : 0;
	}
	write_req *w = malloc(sizeof(*w));
	if (!w) {
		free(data);
		conn_close(c);
		return -1;
	}
	w->buf = data;
	uv_buf_t b = uv_buf_init(data + done, (unsigned)(len - done));
	int rc = uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_write);
	if (rc < 0) {
		free(data);
		free(w);
		conn_close(c);
		return -1;
	}
	c->last_active = hdqtd_now();
	return 0;
}

/* A reply: queued, then the loop may poll for the client's next request
 * (none comes on a connection that is ending: no polling there). */
static int conn_send(hdqtd_conn *c, char *data, size_t len)
{
	const int rc = conn_queue(c, data, len);
	if (rc == 0 && !c->finishing && !c->eof && !c->overflow)
		hdqtd_server_replied(c);
	return rc;
}

static int conn_send_json(hdqtd_conn *c, cJSON *msg)
{
	size_t len;
	char *s = hdqt_rpc_print(msg, &len);
	cJSON_Delete(msg);
	if (!s) {
		conn_close(c);
		return -1;
	}
	return conn_send(c, s, len);
}

static void conn_free(hdqtd_conn *c)
{
	hdqt_linebuf_free(&c->lb);
	cJSON *msg = c->msg;
	c->msg = NULL;
	/* A long line's tree slot goes back (and its tree is freed off the
	 * loop) also when the connection died while its request ran. */
	tree_release(c, msg);
	free(c->out);
	free(c);
}

static void on_closed(uv_handle_t *h)
{
	hdqtd_conn *c = h->data;
	/* A request on the writer thread still points at c: the writer's
	 * completion frees it (hdqtd_conn_complete). */
	if (c->busy) {
		c->dead = 1;
		return;
	}
	conn_free(c);
}

static void conn_close(hdqtd_conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	hdqtd *d = c->d;
	if (c->prev)
		c->prev->next = c->next;
	else
		d->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	d->n_conns--;
	if (!c->admin)
		d->n_unprivileged--;
	hdqtd_log(LOG_DEBUG, "client %llu: closed", cid(c));
	hdqtd_fleet_conn_closed(d, c->id);
	uv_close((uv_handle_t *)&c->pipe, on_closed);
}

/* Close once what was queued has been written. */
static void on_shutdown(uv_shutdown_t *req, int status)
{
	(void)status;
	hdqtd_conn *c = req->handle->data;
	free(req);
	if (c)
		conn_close(c);
}

/* No more reading; close once every reply is written (after a request on
 * the writer thread has been answered). */
static void conn_finish(hdqtd_conn *c)
{
	if (c->closing)
		return;
	c->finishing = 1;
	set_reading(c, 0);
	if (c->busy || c->shut)
		return;
	c->shut = 1;
	uv_shutdown_t *req = malloc(sizeof(*req));
	if (!req || uv_shutdown(req, (uv_stream_t *)&c->pipe, on_shutdown) < 0) {
		free(req);
		conn_close(c);
	}
}

/* ---- one line ---- */

/* Work a request costs, for the per-line budget: the inputs or samples it
 * carries, the classes a listing prints, a large constant for the
 * description.  Unknown methods and malformed entries cost 1. */
static long entry_cost(hdqtd *d, const cJSON *req)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(req, "method");
	const cJSON *p = cJSON_GetObjectItemCaseSensitive(req, "params");
	if (!cJSON_IsString(m))
		return 1;
	const char *name = m->valuestring;
	if (!strcmp(name, "sample.add")) {
		const cJSON *a = cJSON_GetObjectItemCaseSensitive(p, "samples");
		int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : 1;
		return n > 1 ? n : 1;
	}
	if (!strcmp(name, "predict")) {
		const cJSON *a = cJSON_GetObjectItemCaseSensitive(p, "inputs");
		int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : 1;
		return n > 1 ? n : 1;
	}
	if (!strcmp(name, "status") || !strcmp(name, "class.list"))
		return 1 + d->n_classes;
	if (!strcmp(name, "rpc.describe") || !strcmp(name, "rpc.discover"))
		return 64;
	if (!strcmp(name, "model.list") || !strcmp(name, "quarantine.list"))
		return 16;
	return 1;
}

/* RFC 8259's number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
 * (cJSON also reads "01", "1." and "-.5", which must not be echoed). */
static int json_number(const char *p)
{
	if (*p == '-')
		p++;
	if (*p == '0')
		p++;
	else if (*p >= '1' && *p <= '9')
		while (*p >= '0' && *p <= '9')
			p++;
	else
		return 0;
	if (*p == '.') {
		if (!(*++p >= '0' && *p <= '9'))
			return 0;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (!(*p >= '0' && *p <= '9'))
			return 0;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	return *p == '\0';
}

/* Replace a numeric id by the bytes the client sent (cJSON keeps numbers as
 * doubles: 1e15 + 1 or 1e400 would come back changed). */
static void keep_raw_id(cJSON *req, const char *text, size_t len)
{
	cJSON *id = cJSON_GetObjectItemCaseSensitive(req, "id");
	hdqt_span sp;
	if (!cJSON_IsNumber(id) || hdqt_json_member(text, len, "id", &sp) < 0 || sp.len > 64)
		return;
	char raw[72];
	memcpy(raw, text + sp.off, sp.len);
	raw[sp.len] = '\0';
	/* The raw scan compares key bytes; cJSON decodes escapes ("\u0069d"),
	 * so use the text only if it is the number cJSON read. */
	char *e;
	double v = strtod(raw, &e);
	if (*e || !json_number(raw) ||
	    !(v == id->valuedouble || (isinf(v) && isinf(id->valuedouble))))
		return;
	cJSON *r = cJSON_CreateRaw(raw);
	if (r && !cJSON_ReplaceItemInObjectCaseSensitive(req, "id", r))
		cJSON_Delete(r);
}

static void line_error(hdqtd_conn *c, int code, const char *msg)
{
	/* Counted as a request that never named a method (metrics). */
	cJSON *e = hdqt_rpc_error(NULL, code, msg, NULL);
	hdqtd_metrics_request(&c->d->stats, NULL);
	hdqtd_metrics_reply(&c->d->stats, NULL, e);
	conn_send_json(c, e);
}

/* A line parsed: the message, or the error that answers it. */
typedef struct parsed {
	cJSON *msg;
	int code;
	char err[128];
} parsed;

/* UTF-8 check, no U+0000, JSON parse, batch length, exact ids: no daemon state, so
 * that a long line can be parsed off the loop thread.  jp: the loop's parser
 * (hdqt_json.h), NULL off the loop, where cJSON alone parses: a parser made
 * per long line (or kept, grown to the longest) took the heap space the
 * last tree had freed, so that the next tree grew the heap: 40 lines of 500
 * samples left 68 MB resident (50 with one parser kept) against 39
 * (bench/round_rss.py), for twice the ingest of JSON numbers, which
 * features_f32 gives without it. */
static void parse_line(hdqt_json *jp, const char *line, size_t len, int max_rpc_batch, parsed *p)
{
	p->msg = NULL;
	p->code = 0;
	size_t ok = hdqt_utf8_valid(line, len);
	if (ok != len) {
		p->code = HDQT_RPC_PARSE_ERROR;
		snprintf(p->err, sizeof(p->err), "parse error: not valid UTF-8 (byte %zu)", ok);
		return;
	}
	if ((ok = hdqt_json_nul_escape(line, len)) != len) {
		p->code = HDQT_RPC_PARSE_ERROR;
		snprintf(p->err, sizeof(p->err),
			 "parse error: \\u0000 (byte %zu): strings may not contain U+0000", ok);
		return;
	}
	/* One JSON text per line: anything but white space after it is an error. */
	cJSON *msg = hdqt_json_parse(jp, line, len);
	if (!msg) {
		p->code = HDQT_RPC_PARSE_ERROR;
		snprintf(p->err, sizeof(p->err), "parse error: not valid JSON (one JSON text per line)");
		return;
	}
	if (cJSON_IsArray(msg)) {
		int n = cJSON_GetArraySize(msg);
		if (n == 0 || n > max_rpc_batch) {
			cJSON_Delete(msg);
			p->code = HDQT_RPC_INVALID_REQUEST;
			if (n == 0)
				snprintf(p->err, sizeof(p->err), "invalid request: empty batch");
			else
				snprintf(p->err, sizeof(p->err), "invalid request: batch of %d exceeds "
					 "daemon.max_rpc_batch (%d)", n, max_rpc_batch);
			return;
		}
		hdqt_span sp[n];
		int ns = hdqt_json_elements(line, len, sp, n);
		int i = 0;
		for (cJSON *e = msg->child; e; e = e->next, i++)
			if (ns == n && cJSON_IsObject(e))
				keep_raw_id(e, line + sp[i].off, sp[i].len);
	} else if (cJSON_IsObject(msg)) {
		keep_raw_id(msg, line, len);
	}
	p->msg = msg;
}

/* Check a parsed line against the work budget and start answering it. */
static void start_line(hdqtd_conn *c, parsed *p)
{
	hdqtd *d = c->d;
	if (!p->msg) {
		line_error(c, p->code, p->err);
		return;
	}
	cJSON *msg = p->msg;
	long cost = 0;
	if (cJSON_IsArray(msg))
		for (cJSON *e = msg->child; e; e = e->next)
			cost += entry_cost(d, e);
	else
		cost = entry_cost(d, msg);
	if (cost > d->cfg.max_batch) {
		const int code = cJSON_IsArray(msg) ? HDQT_RPC_INVALID_REQUEST : HDQT_RPC_LIMIT;
		tree_release(c, msg);
		char m[160];
		snprintf(m, sizeof(m), "invalid request: the message asks for %ld units of work "
			 "(inputs, samples, classes listed), more than daemon.max_batch (%d)", cost,
			 d->cfg.max_batch);
		line_error(c, code, m);
		return;
	}
	c->msg = msg;
	c->batch = cJSON_IsArray(msg);
	c->cursor = c->batch ? msg->child : msg;
	c->over = 0;
	c->out_len = 0;
	c->n_out = 0;
	line_continue(c);
}

/* Lines longer than this are parsed on a thread-pool thread: a 10 MB
 * sample.add takes tens of milliseconds to parse, which other clients'
 * predictions must not wait for. */
#define BIG_LINE (64u << 10)

typedef struct parse_job {
	uv_work_t work;
	hdqtd_conn *c;
	const char *line;   /* in c's line buffer, untouched while c is busy */
	size_t len;
	int max_rpc_batch;
	parsed p;
} parse_job;

static void parse_work(uv_work_t *w)
{
	parse_job *j = w->data;
	parse_line(NULL, j->line, j->len, j->max_rpc_batch, &j->p);
}

static void after_io(hdqtd_conn *c);

static void parse_done(uv_work_t *w, int status)
{
	(void)status; /* never canceled */
	parse_job *j = w->data;
	hdqtd_conn *c = j->c;
	parsed p = j->p;
	free(j);
	c->busy = 0;
	if (c->dead || c->closing || !p.msg) {
		tree_release(c, p.msg); /* the tree, if any, and the slot */
		if (c->dead) {
			conn_free(c);
		} else if (!c->closing) {
			p.msg = NULL;
			start_line(c, &p); /* answers the parse error */
			after_io(c);
		}
		return;
	}
	start_line(c, &p);
	after_io(c);
}

/* Start parsing c's long line on the thread pool (a tree slot is held). */
static void start_parse(hdqtd_conn *c, const char *line, size_t len)
{
	parse_job *j = calloc(1, sizeof(*j));
	c->busy = 1;
	set_reading(c, 0);
	c->big = 1;
	c->tree_bytes = len * TREE_FACTOR;
	c->d->big_active++;
	if (j) {
		*j = (parse_job){.c = c, .line = line, .len = len,
				 .max_rpc_batch = c->d->cfg.max_rpc_batch};
		j->work.data = j;
		if (uv_queue_work(c->d->loop, &j->work, parse_work, parse_done) == 0)
			return;
		free(j);
	}
	/* Cannot happen short of memory: parse here instead. */
	c->busy = 0;
	parsed p;
	parse_line(NULL, line, len, c->d->cfg.max_rpc_batch, &p);
	if (!p.msg)
		tree_release(c, NULL);
	start_line(c, &p);
}

/* Parsed long lines held at once: their trees are counted against
 * max_memory (TREE_FACTOR times the line), at least one. */
static int tree_slots(const hdqtd *d)
{
	size_t per = d->cfg.max_message * TREE_FACTOR;
	size_t n = per ? d->cfg.max_memory / per : 1;
	return n >= 1 ? (int)(n < 64 ? n : 64) : 1;
}

/* Free a message (a long line's off the loop) and give its slot to the
 * next connection waiting with a long line. */
static void tree_release(hdqtd_conn *c, cJSON *msg)
{
	hdqtd *d = c->d;
	if (!c->big) {
		cJSON_Delete(msg);
		return;
	}
	if (msg)
		free_later(d, msg);
	c->big = 0;
	c->tree_bytes = 0;
	d->big_active--;
	while (d->big_wait && d->big_active < tree_slots(d)) {
		hdqtd_conn *w = d->big_wait;
		d->big_wait = w->big_next;
		w->big_next = NULL;
		w->busy = 0;
		if (w->dead) {
			conn_free(w);
			continue;
		}
		if (w->closing)
			continue;
		start_parse(w, w->wait_line, w->wait_len);
		if (!w->busy) /* parsed here after all */
			after_io(w);
	}
}

/* Parse one line and start answering it. */
static void handle_line(hdqtd_conn *c, const char *line, size_t len)
{
	if (len == 0)
		return; /* blank lines are tolerated between messages */
	if (len > BIG_LINE) {
		hdqtd *d = c->d;
		if (d->big_active < tree_slots(d)) {
			start_parse(c, line, len);
			return;
		}
		/* Wait for a slot; the line stays in c's buffer, which is not fed
		 * while c is busy. */
		c->busy = 1;
		set_reading(c, 0);
		c->wait_line = line;
		c->wait_len = len;
		c->big_next = NULL;
		hdqtd_conn **pp = &d->big_wait;
		while (*pp)
			pp = &(*pp)->big_next;
		*pp = c;
		return;
	}
	/* the parser of short lines, made on first use: without memory cJSON
	 * parses, as it does without simdjson */
	hdqtd *d = c->d;
	if (!d->json && hdqt_json_fast_available())
		d->json = hdqt_json_new(BIG_LINE);
	parsed p;
	parse_line(d->json, line, len, d->cfg.max_rpc_batch, &p);
	start_line(c, &p);
}

/* A reply of the current line (NULL: a notification). */
static void line_add(hdqtd_conn *c, cJSON *resp)
{
	if (!resp)
		return;
	const size_t limit = c->d->cfg.max_write_queue;
	hdqtd_metrics_reply(&c->d->stats, c->method, resp);
	size_t len;
	char *s = hdqt_rpc_print(resp, &len);
	/* Counting what the client has not read yet: a reply that would take the
	 * queue over its limit would drop the connection without a word. */
	size_t room = 0; /* a batch: the errors that may follow (under 200 bytes each) */
	for (const cJSON *e = c->batch ? c->cursor : NULL; e; e = e->next)
		room += 200;
	if (s && len + c->out_len + 2 + queued(c) + room > limit) {
		/* The reply would be dropped with the connection: answer an error
		 * instead, and in a batch run nothing more. */
		free(s);
		char m[200];
		snprintf(m, sizeof(m), "the reply (%zu bytes%s) exceeds daemon.max_write_queue (%zu); "
			 "ask for fewer inputs or a smaller top_k", len + c->out_len,
			 c->batch ? " with the batch's earlier replies" : "", limit);
		hdqtd_log(LOG_INFO, "client %llu: %s", cid(c), m);
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(resp, "id");
		cJSON *e = hdqt_rpc_error(id, HDQT_RPC_LIMIT, m, NULL);
		s = hdqt_rpc_print(e, &len);
		cJSON_Delete(e);
		c->over = c->batch;
	}
	cJSON_Delete(resp);
	if (!s) {
		conn_close(c);
		return;
	}
	if (!c->batch) {
		conn_send(c, s, len);
		return;
	}
	/* Batch: "[r1,r2,...]\n", built as text so its size is known. */
	size_t need = c->out_len + len + 2;
	if (need > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < need)
			cap *= 2;
		char *o = realloc(c->out, cap);
		if (!o) {
			free(s);
			conn_close(c);
			return;
		}
		c->out = o;
		c->out_cap = cap;
	}
	if (c->n_out == 0)
		c->out[c->out_len++] = '[';
	else
		c->out[c->out_len - 1] = ','; /* the previous reply's closing slot */
	memcpy(c->out + c->out_len, s, len - 1);
	c->out_len += len - 1;
	c->out[c->out_len++] = ']';
	c->n_out++;
	free(s);
}

/* Freeing the tree of a 10 MB line takes milliseconds: a thread-pool
 * thread does it (nothing refers to it any more). */
typedef struct free_job {
	uv_work_t work;
	cJSON *msg;
} free_job;

static void free_work(uv_work_t *w)
{
	cJSON_Delete(((free_job *)w->data)->msg);
}

static void free_done(uv_work_t *w, int status)
{
	(void)status;
	free(w->data);
}

static void free_later(hdqtd *d, cJSON *msg)
{
	free_job *j = malloc(sizeof(*j));
	if (j) {
		j->msg = msg;
		j->work.data = j;
		if (uv_queue_work(d->loop, &j->work, free_work, free_done) == 0)
			return;
		free(j);
	}
	cJSON_Delete(msg);
}

/* Run the current line's requests until one goes to the writer thread. */
static void line_continue(hdqtd_conn *c)
{
	hdqtd *d = c->d;
	while (c->cursor && !c->closing) {
		cJSON *req = c->cursor;
		c->cursor = c->batch ? req->next : NULL;
		if (c->over) {
			c->method = NULL; /* not run: counted as no method's */
			const cJSON *id = cJSON_GetObjectItemCaseSensitive(req, "id");
			if (cJSON_IsObject(req) && id)
				line_add(c, hdqt_rpc_error(id, HDQT_RPC_LIMIT,
							   "not run: the batch's reply reached "
							   "daemon.max_write_queue", NULL));
			continue;
		}
		int async = 0;
		cJSON *resp = hdqtd_dispatch(d, c, req, &async);
		if (async) {
			c->busy = 1;
			set_reading(c, 0); /* nothing more is read until the reply is queued */
			return;
		}
		line_add(c, resp);
	}
	if (c->batch && c->n_out > 0 && !c->closing) {
		char *o = c->out;
		size_t n = c->out_len + 1;
		if (n > c->out_cap && !(o = realloc(c->out, n))) {
			conn_close(c);
		} else {
			o[n - 1] = '\n';
			c->out = NULL;
			c->out_cap = 0;
			conn_send(c, o, n);
		}
	}
	c->out_len = 0;
	c->n_out = 0;
	cJSON *msg = c->msg;
	c->msg = NULL;
	tree_release(c, msg);
}

void hdqtd_conn_complete(hdqtd_conn *c, cJSON *resp)
{
	c->busy = 0;
	if (c->dead) {
		cJSON_Delete(resp);
		conn_free(c);
		return;
	}
	if (c->closing) {
		cJSON_Delete(resp);
		return;
	}
	line_add(c, resp);
	line_continue(c);
	after_io(c);
}

/* After work off the loop: go on with the connection's lines. */
static void after_io(hdqtd_conn *c)
{
	if (!c->busy && !c->closing) {
		if (c->finishing)
			conn_finish(c);
		else
			conn_drain(c);
	}
}

/* Answer buffered lines while the client reads its replies; then read more,
 * or finish after EOF / an oversized line. */
static void conn_drain(hdqtd_conn *c)
{
	size_t len;
	char *line;
	for (;;) {
		if (c->closing || c->busy || c->msg)
			return;
		if (queued(c) > c->d->cfg.max_write_queue / 2) {
			c->paused = 1;
			set_reading(c, 0);
			return;
		}
		if (!(line = hdqt_linebuf_next(&c->lb, &len)))
			break;
		handle_line(c, line, len);
	}
	/* Every complete line answered and none being parsed (the loop ends
	 * only so): a long line's buffer goes back, or an idle client that once
	 * sent one would stay counted for it against daemon.max_memory and be
	 * the first closed when the budget runs out. */
	hdqt_linebuf_shrink(&c->lb);
	if (c->overflow) {
		char m[128];
		snprintf(m, sizeof(m), "message exceeds daemon.max_message (%zu bytes); closing",
			 c->d->cfg.max_message);
		line_error(c, HDQT_RPC_TOO_LARGE, m);
		conn_finish(c);
		return;
	}
	if (c->eof || c->finishing) {
		conn_finish(c);
		return;
	}
	set_reading(c, 1);
}

/* Bytes a connection holds in buffers: its line buffer, its unread replies,
 * a batch reply being built.  Parsed long lines are bounded apart, by their
 * slots (tree_slots). */
static size_t conn_buffers(hdqtd_conn *c)
{
	return c->lb.cap + queued(c) + c->out_cap;
}

/* A connection's buffers and the transfer sessions it owns (closing it
 * ends them): what closing it gives back. */
static size_t conn_memory(hdqtd_conn *c)
{
	return conn_buffers(c) + hdqtd_fleet_memory(c->d, c->id);
}

static size_t memory_in_use(hdqtd *d)
{
	size_t n = hdqtd_fleet_memory(d, 0); /* the sessions (not an orphan its job still holds) */
	for (hdqtd_conn *c = d->conns; c; c = c->next)
		n += conn_buffers(c);
	return n;
}

size_t hdqtd_memory_in_use(hdqtd *d)
{
	return memory_in_use(d);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	hdqtd_conn *c = s->data;
	if (nread == 0) { /* EAGAIN: nothing to do */
		return;
	}
	if (nread < 0) {
		if (nread != UV_EOF) {
			hdqtd_log(LOG_DEBUG, "client %llu: read: %s", cid(c), uv_strerror((int)nread));
			conn_close(c);
			return;
		}
		/* EOF (the client may have only shut down its writing side): answer
		 * every complete line, then close. */
		if (hdqt_linebuf_partial(&c->lb) > 0)
			hdqtd_log(LOG_INFO, "client %llu: disconnected in the middle of a message "
				  "(%zu bytes dropped)", cid(c), hdqt_linebuf_partial(&c->lb));
		set_reading(c, 0);
		c->eof = 1;
		conn_drain(c);
		return;
	}
	/* A line is still arriving when the last byte read is not its end:
	 * time it from its first read (trickling bytes does not restart the
	 * clock); whether earlier lines wait for their replies is no matter. */
	hdqtd_server_heard(c);
	const char *nl = memrchr(buf->base, '\n', (size_t)nread);
	const int ends_line = nl == buf->base + nread - 1;
	int rc = hdqt_linebuf_feed(&c->lb, buf->base, (size_t)nread);
	c->last_active = hdqtd_now();
	/* A newline completes the line that was arriving: the clock starts
	 * again with the bytes after it, if any. */
	if (nl)
		c->partial_since = ends_line ? 0 : c->last_active;
	else if (c->partial_since == 0)
		c->partial_since = c->last_active;
	if (rc == HDQT_EFULL) {
		hdqtd_log(LOG_WARNING, "client %llu: message exceeds daemon.max_message (%zu bytes); closing",
			  cid(c), c->d->cfg.max_message);
		/* Lines complete before the oversized one still get their replies. */
		set_reading(c, 0);
		c->overflow = 1;
	} else if (rc < 0) {
		conn_close(c);
		return;
	}
	if (memory_in_use(c->d) > c->d->cfg.max_memory) {
		/* Over budget: the connection holding the most goes, not whoever
		 * happened to read next. */
		hdqtd_conn *big = c->busy ? NULL : c;
		for (hdqtd_conn *k = c->d->conns; k; k = k->next)
			if (!k->closing && !k->finishing && !k->busy &&
			    (!big || conn_memory(k) > conn_memory(big)))
				big = k; /* only one whose buffers closing frees now */
		if (!big) {
			conn_drain(c);
			return;
		}
		hdqtd_log(LOG_WARNING, "client %llu: connections buffer more than daemon.max_memory "
			  "(%zu bytes); closing the one holding most (%zu bytes)", cid(big),
			  c->d->cfg.max_memory, conn_memory(big));
		line_error(big, HDQT_RPC_LIMIT, "hdqtd's buffer memory (daemon.max_memory) is exhausted "
			   "and this connection holds the most; closing");
		big->eof = 1; /* answer nothing more */
		if (!big->busy) /* a parse job may point into a busy one's buffer */
			hdqt_linebuf_free(&big->lb);
		/* its transfer sessions go now, not when its shutdown completes:
		 * otherwise they stay counted and the next reader is closed too */
		hdqtd_fleet_conn_closed(big->d, big->id);
		conn_finish(big);
		if (big == c)
			return;
	}
	conn_drain(c);
}

/* ---- access ---- */

/* Admin: uid 0, hdqtd's own uid, or admin_group among the peer's groups as
 * the kernel saw them at connect (SO_PEERGROUPS: the real supplementary
 * groups, no NSS lookup on the loop). */
static int peer_is_admin(hdqtd *d, int fd, uid_t uid, gid_t gid)
{
	if (!d->admin_gid_set || uid == 0 || uid == geteuid() || gid == d->admin_gid)
		return 1;
	gid_t groups[256];
	socklen_t len = sizeof(groups);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0) {
		/* ERANGE: more than 256 groups; ENOPROTOOPT: kernel before 4.13.
		 * Either way the supplementary groups are unknown: not admin. */
		hdqtd_log(LOG_DEBUG, "SO_PEERGROUPS: %s", strerror(errno));
		return 0;
	}
	for (size_t i = 0; i < len / sizeof(gid_t); i++)
		if (groups[i] == d->admin_gid)
			return 1;
	return 0;
}

/* Slots non-admin peers may take: admin_reserved stay free for admins,
 * but at least one slot is left (a tiny max_connections keeps working). */
static int unprivileged_slots(const hdqtd *d)
{
	int n = d->cfg.max_connections - d->cfg.admin_reserved;
	return n >= 1 ? n : 1;
}

static int conns_of_uid(hdqtd *d, uid_t uid)
{
	int n = 0;
	for (hdqtd_conn *c = d->conns; c; c = c->next)
		n += c->uid == uid;
	return n;
}

static void on_connection(uv_stream_t *server, int status)
{
	hdqtd *d = server->data;
	if (status < 0) {
		hdqtd_log(LOG_WARNING, "accept: %s", uv_strerror(status));
		return;
	}
	hdqtd_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return;
	if (uv_pipe_init(d->loop, &c->pipe, 0) < 0) {
		free(c);
		return;
	}
	c->pipe.data = c;
	c->d = d;
	c->id = ++d->conn_seq;
	if (hdqt_linebuf_init(&c->lb, d->cfg.max_message) < 0 ||
	    uv_accept(server, (uv_stream_t *)&c->pipe) < 0) {
		c->closing = 1;
		uv_close((uv_handle_t *)&c->pipe, on_closed);
		return;
	}
	uv_os_fd_t fd;
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	int known = uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0 &&
		    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0;
	if (known) {
		c->pid = cred.pid;
		c->uid = cred.uid;
		c->admin = peer_is_admin(d, fd, cred.uid, cred.gid);
	} else {
		c->uid = (uid_t)-1;
		c->admin = !d->admin_gid_set;
	}
	int same_uid = conns_of_uid(d, c->uid);
	c->next = d->conns;
	if (d->conns)
		d->conns->prev = c;
	d->conns = c;
	d->n_conns++;
	d->stats.connections_accepted++;
	if (!c->admin)
		d->n_unprivileged++;
	c->last_active = hdqtd_now();
	hdqtd_log(LOG_DEBUG, "client %llu: connected (pid %d, uid %u%s)", cid(c), (int)c->pid,
		  (unsigned)c->uid, c->admin ? ", admin" : "");
	char m[160] = "";
	int code = HDQT_RPC_TOO_MANY_CONNECTIONS;
	if (d->stopping) {
		code = HDQT_RPC_SHUTTING_DOWN;
		snprintf(m, sizeof(m), "hdqtd is shutting down");
	} else if (d->n_conns > d->cfg.max_connections) {
		snprintf(m, sizeof(m), "too many connections (daemon.max_connections = %d)",
			 d->cfg.max_connections);
	} else if (!c->admin && d->n_unprivileged > unprivileged_slots(d)) {
		snprintf(m, sizeof(m), "too many connections: the last %d of daemon.max_connections "
			 "(%d) are kept for admin peers (daemon.admin_reserved)", d->cfg.admin_reserved,
			 d->cfg.max_connections);
	} else if (!c->admin && same_uid >= d->cfg.max_connections_per_uid) {
		snprintf(m, sizeof(m), "too many connections from uid %u "
			 "(daemon.max_connections_per_uid = %d)", (unsigned)c->uid,
			 d->cfg.max_connections_per_uid);
	}
	if (m[0]) {
		if (!d->stopping)
			hdqtd_log(LOG_WARNING, "client %llu (uid %u) refused: %s", cid(c), (unsigned)c->uid, m);
		if (conn_send_json(c, hdqt_rpc_error(NULL, code, m, NULL)) == 0)
			conn_finish(c);
		return;
	}
	set_reading(c, 1);
}

void hdqtd_server_tick(hdqtd *d)
{
	const double now = hdqtd_now();
	for (hdqtd_conn *c = d->conns, *next; c; c = next) {
		next = c->next;
		if (c->closing)
			continue;
		/* Replies queued and none read for that long: the client is stuck
		 * (also when paused for it, or half-closed and never reading);
		 * what it pins is freed. */
		if (d->cfg.write_timeout_s > 0 && queued(c) > 0 &&
		    now - c->last_written > d->cfg.write_timeout_s) {
			hdqtd_log(LOG_WARNING, "client %llu: %zu bytes of replies unread for longer than "
				  "daemon.write_timeout: disconnecting", cid(c), queued(c));
			conn_close(c);
			continue;
		}
		if (c->finishing || c->busy)
			continue; /* on its way out, or waiting for the daemon itself */
		const char *why = NULL;
		if (d->cfg.partial_timeout_s > 0 && c->reading && c->partial_since > 0 &&
		    now - c->partial_since > d->cfg.partial_timeout_s)
			why = "a message was not completed within daemon.partial_timeout";
		else if (d->cfg.idle_timeout_s > 0 && !c->subscribed && queued(c) == 0 && !c->paused &&
			 now - c->last_active > d->cfg.idle_timeout_s)
			why = "idle for longer than daemon.idle_timeout";
		if (!why)
			continue;
		hdqtd_log(LOG_INFO, "client %llu: %s: closing", cid(c), why);
		line_error(c, HDQT_RPC_LIMIT, why);
		conn_finish(c);
	}
}

int hdqtd_server_listen(hdqtd *d, char *err, size_t errlen)
{
	int rc = uv_pipe_init(d->loop, &d->listener, 0);
	if (rc < 0) {
		snprintf(err, errlen, "uv_pipe_init: %s", uv_strerror(rc));
		return HDQT_EIO;
	}
	d->listener.data = d;
	d->listening = 1;
#if HAVE_LIBSYSTEMD
	/* Socket activation: systemd passes the listening socket as fd 3. */
	int n = sd_listen_fds(1);
	if (n > 1) {
		snprintf(err, errlen, "systemd passed %d sockets; hdqtd takes one", n);
		return HDQT_EINVAL;
	}
	if (n == 1) {
		int fd = SD_LISTEN_FDS_START;
		if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
			snprintf(err, errlen, "the socket systemd passed is not a listening Unix stream socket");
			return HDQT_EINVAL;
		}
		if ((rc = uv_pipe_open(&d->listener, fd)) < 0) {
			snprintf(err, errlen, "adopting the systemd socket: %s", uv_strerror(rc));
			return HDQT_EIO;
		}
		d->socket_activated = 1;
	}
#endif
	if (!d->socket_activated) {
		/* A stale socket file of a previous run is replaced; a live one is
		 * not: a second daemon on the same socket is refused. */
		struct stat st;
		if (lstat(d->cfg.socket, &st) == 0) {
			if (!S_ISSOCK(st.st_mode)) {
				snprintf(err, errlen, "%s exists and is not a socket", d->cfg.socket);
				return HDQT_EEXIST;
			}
			int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
			struct sockaddr_un sa = {.sun_family = AF_UNIX};
			snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d->cfg.socket);
			int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
			if (probe >= 0)
				close(probe);
			if (live) {
				snprintf(err, errlen, "%s: another hdqtd is listening there", d->cfg.socket);
				return HDQT_EEXIST;
			}
			unlink(d->cfg.socket);
		}
		mode_t old = umask(0177); /* no window in which the socket is world-accessible */
		rc = uv_pipe_bind(&d->listener, d->cfg.socket);
		umask(old);
		if (rc < 0) {
			snprintf(err, errlen, "bind %s: %s", d->cfg.socket, uv_strerror(rc));
			return HDQT_EIO;
		}
		d->bound = 1;
		if (chmod(d->cfg.socket, d->cfg.socket_mode) < 0) {
			snprintf(err, errlen, "chmod %s: %s", d->cfg.socket, strerror(errno));
			return HDQT_EIO;
		}
	}
	if ((rc = uv_listen((uv_stream_t *)&d->listener, 128, on_connection)) < 0) {
		snprintf(err, errlen, "listen %s: %s", d->cfg.socket, uv_strerror(rc));
		return HDQT_EIO;
	}
	return 0;
}

/* daemon.busy_poll_us.  A client that asks, waits for the reply and asks
 * again finds the loop asleep in epoll_wait each time, and where waking a
 * CPU is slow (a KVM guest that halts at once costs an exit to the host and
 * back) that wake-up was most of the one-client round trip.  So after a
 * reply the loop may poll without sleeping for a bounded time: only replies
 * start it (a read, a partial line, an event or a job still on another
 * thread does not; the job's reply may), and only for a connection whose
 * first bytes after its previous reply came soon: within that reply's poll
 * if it polled, else within twice the window (without polling the gap
 * includes the wake-up itself).  A poll its bytes missed makes the next
 * 2^misses - 1 such replies go without (misses in a row, up to 6), so that
 * a client asking every 1.2 windows does not make every other reply poll
 * in vain, while a client that asks at once and stalls once loses one
 * reply's poll.  So a client asking again at once is answered
 * by an awake loop, while one asking every few milliseconds, or once per
 * connection, costs no polling at all: the CPU sleeps at once as with 0.
 * The window (at most 1 ms) bounds what one reply costs; a client that
 * stops costs one window.  And no reply polls while a round's engine
 * threads (by default all cores but one) leave no core beside the loop's
 * and the client's: no core is idle to halt, so there is no wake-up to
 * save, and the poll would only take the core from the client it waits
 * for (on two cores it cost the loop 4-13 us more per predict, and the
 * client up to 18% of its rate: hdqtd-loadgen's "training" rows). */
static int core_to_spare(hdqtd *d)
{
	hdqtd_progress p;
	hdqtd_trainer_progress(d->trainer, &p);
	return !p.running || d->ncpu >= (p.threads > 1 ? p.threads : 1) + 2;
}

static void on_spin(uv_idle_t *h)
{
	hdqtd *d = h->data;
	if (uv_hrtime() >= d->spin_until || d->stopping)
		uv_idle_stop(h);
}

void hdqtd_server_heard(hdqtd_conn *c)
{
	if (!c->replied_ns)
		return;
	const uint64_t now = uv_hrtime();
	const uint64_t w = (uint64_t)(c->d->cfg.busy_poll_us > 0 ? c->d->cfg.busy_poll_us : 0) * 1000u;
	if (c->polled_until) {
		c->quick = now <= c->polled_until;
		if (c->quick) {
			c->misses = 0;
			c->d->stats.busy_poll_hits++;
		} else {
			c->misses += c->misses < 6;
			c->skip = (1 << c->misses) - 1;
		}
	} else {
		c->quick = now - c->replied_ns <= 2 * w;
	}
	c->replied_ns = c->polled_until = 0;
}

void hdqtd_server_replied(hdqtd_conn *c)
{
	hdqtd *d = c->d;
	if (d->cfg.busy_poll_us <= 0 || !d->spin_open || d->stopping)
		return;
	const uint64_t now = uv_hrtime();
	c->replied_ns = now;
	c->polled_until = 0;
	if (!c->quick)
		return;
	if (c->skip > 0) {
		c->skip--;
		return;
	}
	if (!core_to_spare(d))
		return;
	c->polled_until = now + (uint64_t)d->cfg.busy_poll_us * 1000u;
	d->stats.busy_polls++;
	if (c->polled_until > d->spin_until || !uv_is_active((uv_handle_t *)&d->spin))
		d->spin_until = c->polled_until;
	if (!uv_is_active((uv_handle_t *)&d->spin) && uv_idle_start(&d->spin, on_spin) < 0) {
		/* libuv refuses only a NULL callback: never; if it did, no spinning */
		hdqtd_log(LOG_WARNING, "daemon.busy_poll_us: the loop's idle handle did not start");
		d->cfg.busy_poll_us = 0;
	}
}

void hdqtd_server_close(hdqtd *d)
{
	if (d->listening) {
		d->listening = 0;
		uv_close((uv_handle_t *)&d->listener, NULL);
		if (d->bound)
			unlink(d->cfg.socket);
	}
	/* Lines already read are answered ("shutting down" once stop has
	 * begun); replies queued are written before each connection closes. */
	for (hdqtd_conn *c = d->conns, *next; c; c = next) {
		next = c->next;
		c->finishing = 1;
		set_reading(c, 0);
		conn_drain(c);
	}
}

void hdqtd_server_drop_all(hdqtd *d)
{
	for (hdqtd_conn *c = d->conns, *next; c; c = next) {
		next = c->next;
		conn_close(c);
	}
}

void hdqtd_broadcast(hdqtd *d, cJSON *event)
{
	if (!event)
		return;
	size_t len;
	char *s = hdqt_rpc_print(event, &len);
	cJSON_Delete(event);
	if (!s)
		return;
	for (hdqtd_conn *c = d->conns, *next; c; c = next) {
		next = c->next; /* conn_queue may close c */
		if (!c->subscribed || c->closing)
			continue;
		char *copy = malloc(len);
		if (!copy)
			continue;
		memcpy(copy, s, len);
		conn_queue(c, copy, len); /* an event asks for no answer: no polling */
	}
	free(s);
}
