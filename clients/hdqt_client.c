/* SPDX-License-Identifier: MIT */
/*
 * libhdqt-client: a blocking JSON-RPC client over a Unix stream socket,
 * with the framing of proto/ (one JSON text per line).
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "hdqt.h"
#include "hdqt_client.h"
#include "hdqt_proto.h"

#define EVENT_QUEUE 1024
#define MAX_REPLY (256u << 20) /* the longest reply line accepted */

struct hdqt_client {
	int fd;
	int timeout_ms;
	int64_t next_id;
	hdqt_linebuf lb;
	cJSON *events[EVENT_QUEUE];
	int ev_head, ev_n;
	char path[108];
	char err[256];
};

static int seterr(hdqt_client *c, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int seterr(hdqt_client *c, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	return rc;
}

const char *hdqt_client_default_socket(void)
{
	const char *s = getenv("HDQTD_SOCKET");
	return s && *s ? s : "/run/hdqtd/hdqtd.sock";
}

const char *hdqt_client_path(const hdqt_client *c)
{
	return c->path;
}

const char *hdqt_client_errmsg(const hdqt_client *c)
{
	return c ? c->err : "no client";
}

int hdqt_client_connect(hdqt_client **out, const char *path, int timeout_ms)
{
	if (!out)
		return HDQT_EINVAL;
	*out = NULL;
	if (!path)
		path = hdqt_client_default_socket();
	if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return HDQT_EINVAL;
	hdqt_client *c = calloc(1, sizeof(*c));
	if (!c)
		return HDQT_ENOMEM;
	snprintf(c->path, sizeof(c->path), "%s", path);
	c->timeout_ms = timeout_ms;
	c->next_id = 1;
	if (hdqt_linebuf_init(&c->lb, MAX_REPLY) < 0) {
		free(c);
		return HDQT_ENOMEM;
	}
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		if (c->fd >= 0)
			close(c->fd);
		hdqt_linebuf_free(&c->lb);
		free(c);
		errno = e;
		return HDQT_EIO;
	}
	*out = c;
	return 0;
}

void hdqt_client_close(hdqt_client *c)
{
	if (!c)
		return;
	close(c->fd);
	hdqt_linebuf_free(&c->lb);
	for (int i = 0; i < c->ev_n; i++)
		cJSON_Delete(c->events[(c->ev_head + i) % EVENT_QUEUE]);
	free(c);
}

static int write_all(hdqt_client *c, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return seterr(c, HDQT_EIO, "%s: write: %s", c->path, strerror(errno));
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Next line from the daemon (valid until the next read). */
static int read_line(hdqt_client *c, int timeout_ms, char **line)
{
	int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
	for (;;) {
		size_t len;
		char *l = hdqt_linebuf_next(&c->lb, &len);
		if (l) {
			*line = l;
			return 0;
		}
		int wait = -1;
		if (timeout_ms == 0)
			wait = 0;
		else if (timeout_ms > 0) {
			int64_t left = deadline - now_ms();
			wait = left > 0 ? (int)left : 0;
		}
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		int r = poll(&p, 1, wait);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return seterr(c, HDQT_EIO, "poll: %s", strerror(errno));
		if (r == 0)
			return seterr(c, HDQT_ECANCELED, "%s: no reply within %d ms", c->path, timeout_ms);
		char buf[65536];
		ssize_t n = read(c->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return seterr(c, HDQT_EIO, "%s: read: %s", c->path, strerror(errno));
		if (n == 0)
			return seterr(c, HDQT_EIO, "%s: hdqtd closed the connection", c->path);
		int rc = hdqt_linebuf_feed(&c->lb, buf, (size_t)n);
		if (rc < 0)
			return seterr(c, rc, "%s: reply too long", c->path);
	}
}

static void queue_event(hdqt_client *c, cJSON *params)
{
	if (c->ev_n == EVENT_QUEUE) { /* bounded: drop the oldest */
		cJSON_Delete(c->events[c->ev_head]);
		c->ev_head = (c->ev_head + 1) % EVENT_QUEUE;
		c->ev_n--;
	}
	c->events[(c->ev_head + c->ev_n) % EVENT_QUEUE] = params;
	c->ev_n++;
}

/* If m is an event notification, queue its params and return 1. */
static int take_event(hdqt_client *c, cJSON *m)
{
	const cJSON *meth = cJSON_GetObjectItemCaseSensitive(m, "method");
	if (!cJSON_IsString(meth) || strcmp(meth->valuestring, "event") != 0)
		return 0;
	cJSON *p = cJSON_DetachItemFromObjectCaseSensitive(m, "params");
	if (p)
		queue_event(c, p);
	return 1;
}

/* 1 if v or anything inside it is a NaN or infinite number: cJSON would
 * print it as null (and other writers as NaN, which is not JSON), so such a
 * request is refused before it is sent. */
static int has_nonfinite(const cJSON *v)
{
	if (cJSON_IsNumber(v))
		return !isfinite(v->valuedouble);
	for (const cJSON *k = v ? v->child : NULL; k; k = k->next)
		if (has_nonfinite(k))
			return 1;
	return 0;
}

/* The answer to request id: skips events (queued) and late replies to
 * earlier, timed-out calls.  An error reply with a null id is taken as the
 * answer: hdqtd sends those for what it could not attribute to a request
 * (a parse error, a line over daemon.max_message, a refused connection),
 * and replies come in request order, so it answers the oldest request still
 * waiting, which in this blocking client is this one. */
static int read_reply(hdqt_client *c, int64_t id, int timeout_ms, cJSON **result)
{
	for (;;) {
		char *line;
		int rc = read_line(c, timeout_ms, &line);
		if (rc < 0)
			return rc;
		cJSON *m = cJSON_Parse(line);
		if (!m)
			return seterr(c, HDQT_EFORMAT, "%s: reply is not JSON", c->path);
		if (take_event(c, m)) {
			cJSON_Delete(m);
			continue;
		}
		const cJSON *rid = cJSON_GetObjectItemCaseSensitive(m, "id");
		const cJSON *e = cJSON_GetObjectItemCaseSensitive(m, "error");
		if (cJSON_IsNumber(rid) && (int64_t)rid->valuedouble != id) {
			cJSON_Delete(m);
			continue; /* a late reply to an earlier, timed-out call */
		}
		if (e) {
			const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");
			const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
			int cd = cJSON_IsNumber(code) ? code->valueint : HDQT_RPC_INTERNAL_ERROR;
			if (cd > -1000) /* not a JSON-RPC code: never confuse it with HDQT_E* */
				cd = HDQT_RPC_INTERNAL_ERROR;
			seterr(c, cd, "%s", cJSON_IsString(msg) ? msg->valuestring : "error");
			cJSON_Delete(m);
			return cd;
		}
		cJSON *r = cJSON_DetachItemFromObjectCaseSensitive(m, "result");
		cJSON_Delete(m);
		if (!r)
			return seterr(c, HDQT_EFORMAT, "%s: reply without result", c->path);
		*result = r;
		return 0;
	}
}

int hdqt_client_call(hdqt_client *c, const char *method, cJSON *params, cJSON **result)
{
	if (!c || !method || !result) {
		cJSON_Delete(params);
		return HDQT_EINVAL;
	}
	*result = NULL;
	if (has_nonfinite(params)) {
		cJSON_Delete(params);
		return seterr(c, HDQT_ERANGE, "%s: a parameter is NaN or infinite (JSON has no such "
			      "numbers); not sent", method);
	}
	const int64_t id = c->next_id++;
	cJSON *req = hdqt_rpc_request(method, params, id);
	size_t len;
	char *s = req ? hdqt_rpc_print(req, &len) : NULL;
	cJSON_Delete(req);
	if (!s)
		return seterr(c, HDQT_ENOMEM, "out of memory");
	int rc = write_all(c, s, len);
	free(s);
	if (rc < 0) {
		/* hdqtd may have answered before it closed: a line over
		 * daemon.max_message gets -32009 and the connection closes while
		 * we are still writing.  Its reply is still readable; report it
		 * rather than the broken pipe, so the caller can tell a request
		 * that can never pass from a daemon that went away. */
		char werr[sizeof(c->err)];
		memcpy(werr, c->err, sizeof(werr));
		int rr = read_reply(c, id, 1000, result);
		if (rr < -1000)
			return rr;
		cJSON_Delete(*result);
		*result = NULL;
		memcpy(c->err, werr, sizeof(werr));
		return rc;
	}
	return read_reply(c, id, c->timeout_ms > 0 ? c->timeout_ms : -1, result);
}

int hdqt_client_next_event(hdqt_client *c, int timeout_ms, cJSON **event)
{
	if (!c || !event)
		return HDQT_EINVAL;
	*event = NULL;
	int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : 0;
	for (;;) {
		if (c->ev_n > 0) {
			*event = c->events[c->ev_head];
			c->ev_head = (c->ev_head + 1) % EVENT_QUEUE;
			c->ev_n--;
			return 0;
		}
		int wait = timeout_ms < 0 ? -1 : 0;
		if (timeout_ms > 0) {
			int64_t left = deadline - now_ms();
			if (left <= 0)
				return seterr(c, HDQT_ECANCELED, "no event within %d ms", timeout_ms);
			wait = (int)left;
		}
		char *line;
		int rc = read_line(c, wait, &line);
		if (rc == HDQT_ECANCELED && timeout_ms >= 0)
			return seterr(c, HDQT_ECANCELED, "no event within %d ms", timeout_ms);
		if (rc < 0)
			return rc;
		cJSON *m = cJSON_Parse(line);
		if (m && !take_event(c, m)) {
			/* a stray reply: nothing waits for it */
		}
		cJSON_Delete(m);
	}
}

int hdqt_client_batch_id_valid(const char *id)
{
	if (!id)
		return 0;
	size_t n = strlen(id);
	if (n < 1 || n > HDQT_CLIENT_BATCH_ID_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)id[i] < 0x21 || (unsigned char)id[i] > 0x7e)
			return 0;
	return 1;
}

int hdqt_client_sample_add(hdqt_client *c, cJSON *samples, const char *batch_id, cJSON **result)
{
	const char *bad = NULL;
	if (!c || !result)
		bad = "invalid argument";
	else if (!cJSON_IsArray(samples))
		bad = "samples must be an array";
	else if (batch_id && !hdqt_client_batch_id_valid(batch_id))
		bad = "batch_id must be 1-64 bytes of printable ASCII without spaces";
	if (bad) {
		cJSON_Delete(samples);
		if (result)
			*result = NULL;
		return c ? seterr(c, HDQT_EINVAL, "sample.add: %s", bad) : HDQT_EINVAL;
	}
	cJSON *params = cJSON_CreateObject();
	if (!params || !cJSON_AddItemToObject(params, "samples", samples)) {
		cJSON_Delete(params);
		cJSON_Delete(samples);
		*result = NULL;
		return seterr(c, HDQT_ENOMEM, "out of memory");
	}
	if (batch_id && !cJSON_AddStringToObject(params, "batch_id", batch_id)) {
		cJSON_Delete(params);
		*result = NULL;
		return seterr(c, HDQT_ENOMEM, "out of memory");
	}
	return hdqt_client_call(c, "sample.add", params, result);
}

/* ---- fleet operations ---- */

static void close_transfer(hdqt_client *c, const char *id)
{
	cJSON *p = cJSON_CreateObject(), *res = NULL;
	if (!p || !cJSON_AddStringToObject(p, "id", id)) {
		cJSON_Delete(p);
		return;
	}
	char keep[sizeof(c->err)];
	memcpy(keep, c->err, sizeof(keep)); /* the caller's failure stays the message */
	if (hdqt_client_call(c, "transfer.close", p, &res) == 0)
		cJSON_Delete(res);
	memcpy(c->err, keep, sizeof(keep));
}

static int write_fd(int fd, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* start (model.export or backup), then chunk_method until size bytes went
 * to fd, checking each chunk's place and the whole CRC-32. */
static int download(hdqt_client *c, const char *start, const char *chunk_method, int fd,
		    cJSON **info)
{
	cJSON *res = NULL;
	int rc = hdqt_client_call(c, start, NULL, &res);
	if (rc < 0)
		return rc;
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(res, "id");
	const cJSON *size = cJSON_GetObjectItemCaseSensitive(res, "size");
	const cJSON *crc = cJSON_GetObjectItemCaseSensitive(res, "crc32");
	const cJSON *cmax = cJSON_GetObjectItemCaseSensitive(res, "chunk_max");
	if (!cJSON_IsString(id) || !cJSON_IsNumber(size) || size->valuedouble < 0 ||
	    !cJSON_IsString(crc) || !cJSON_IsNumber(cmax) || cmax->valuedouble < 1) {
		cJSON_Delete(res);
		return seterr(c, HDQT_EFORMAT, "%s: unexpected reply", start);
	}
	const double total = size->valuedouble;
	double off = 0;
	uLong acc = crc32(0L, Z_NULL, 0);
	while (rc == 0 && off < total) {
		cJSON *p = cJSON_CreateObject(), *ch = NULL;
		if (!p || !cJSON_AddStringToObject(p, "id", id->valuestring) ||
		    !cJSON_AddNumberToObject(p, "offset", off) ||
		    !cJSON_AddNumberToObject(p, "length", cmax->valuedouble)) {
			cJSON_Delete(p);
			rc = seterr(c, HDQT_ENOMEM, "out of memory");
			break;
		}
		if ((rc = hdqt_client_call(c, chunk_method, p, &ch)) < 0)
			break;
		const cJSON *data = cJSON_GetObjectItemCaseSensitive(ch, "data");
		const cJSON *o = cJSON_GetObjectItemCaseSensitive(ch, "offset");
		size_t dl = cJSON_IsString(data) ? strlen(data->valuestring) : 0;
		unsigned char *buf = dl ? malloc(dl / 4 * 3 + 3) : NULL;
		long got = buf ? hdqt_base64_decode(data->valuestring, dl, buf) : -1;
		if (got <= 0 || !cJSON_IsNumber(o) || o->valuedouble != off) {
			rc = seterr(c, HDQT_ECORRUPT, "%s: bad chunk at offset %.0f", chunk_method, off);
		} else if (write_fd(fd, buf, (size_t)got) < 0) {
			rc = seterr(c, HDQT_EIO, "writing: %s", strerror(errno));
		} else {
			acc = crc32(acc, buf, (uInt)got);
			off += (double)got;
		}
		free(buf);
		cJSON_Delete(ch);
	}
	if (rc == 0) {
		char hex[9];
		snprintf(hex, sizeof(hex), "%08lx", (unsigned long)(acc & 0xffffffffUL));
		if (off != total || strcmp(hex, crc->valuestring) != 0)
			rc = seterr(c, HDQT_ECORRUPT, "%s: received %.0f bytes with CRC-32 %s, hdqtd "
				    "announced %.0f with %s", start, off, hex, total, crc->valuestring);
	}
	close_transfer(c, id->valuestring);
	if (rc == 0 && info)
		*info = res;
	else
		cJSON_Delete(res);
	return rc;
}

int hdqt_client_export(hdqt_client *c, int fd, cJSON **info)
{
	return download(c, "model.export", "model.export_chunk", fd, info);
}

int hdqt_client_backup(hdqt_client *c, int fd, cJSON **info)
{
	return download(c, "backup", "backup.chunk", fd, info);
}

int hdqt_client_import(hdqt_client *c, const unsigned char *bundle, size_t len, int remap,
		       cJSON **result)
{
	if (!bundle || len == 0)
		return seterr(c, HDQT_EINVAL, "model.import: empty bundle");
	uLong crc = crc32(0L, Z_NULL, 0);
	for (size_t o = 0; o < len; o += 1u << 30)
		crc = crc32(crc, bundle + o, (uInt)(len - o < (1u << 30) ? len - o : (1u << 30)));
	char hex[9];
	snprintf(hex, sizeof(hex), "%08lx", (unsigned long)(crc & 0xffffffffUL));
	cJSON *p = cJSON_CreateObject(), *res = NULL;
	if (!p || !cJSON_AddNumberToObject(p, "size", (double)len) ||
	    !cJSON_AddStringToObject(p, "crc32", hex)) {
		cJSON_Delete(p);
		return seterr(c, HDQT_ENOMEM, "out of memory");
	}
	int rc = hdqt_client_call(c, "model.import", p, &res);
	if (rc < 0)
		return rc;
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(res, "id");
	const cJSON *cmax = cJSON_GetObjectItemCaseSensitive(res, "chunk_max");
	if (!cJSON_IsString(id) || !cJSON_IsNumber(cmax) || cmax->valuedouble < 3) {
		cJSON_Delete(res);
		return seterr(c, HDQT_EFORMAT, "model.import: unexpected reply");
	}
	const size_t step = (size_t)cmax->valuedouble;
	for (size_t off = 0; rc == 0 && off < len; off += step) {
		size_t n = len - off < step ? len - off : step;
		char *b64 = hdqt_base64_encode(bundle + off, n);
		cJSON *q = cJSON_CreateObject(), *r = NULL;
		if (!b64 || !q || !cJSON_AddStringToObject(q, "id", id->valuestring) ||
		    !cJSON_AddNumberToObject(q, "offset", (double)off) ||
		    !cJSON_AddStringToObject(q, "data", b64)) {
			free(b64);
			cJSON_Delete(q);
			rc = seterr(c, HDQT_ENOMEM, "out of memory");
			break;
		}
		free(b64);
		if ((rc = hdqt_client_call(c, "model.import_chunk", q, &r)) == 0)
			cJSON_Delete(r);
	}
	if (rc == 0) {
		cJSON *q = cJSON_CreateObject();
		if (!q || !cJSON_AddStringToObject(q, "id", id->valuestring) ||
		    !cJSON_AddBoolToObject(q, "remap", remap != 0)) {
			cJSON_Delete(q);
			rc = seterr(c, HDQT_ENOMEM, "out of memory");
		} else {
			rc = hdqt_client_call(c, "model.import_commit", q, result);
		}
	}
	/* Committed or refused, the daemon has ended the staging; after a
	 * transport failure the connection's end does. */
	if (rc <= -32000)
		close_transfer(c, id->valuestring);
	cJSON_Delete(res);
	return rc;
}
