/* SPDX-License-Identifier: MIT */
/*
 * The Unix-socket server: connections, line framing, back-pressure.
 *
 * Requests are handled synchronously on the loop thread, in order, one line
 * at a time.  A client that sends faster than it reads has its reading
 * paused while its unread replies exceed a high-water mark, and is dropped
 * when they exceed daemon.max_write_queue (notifications do not wait for
 * it); a line longer than daemon.max_message gets one error reply and the
 * connection is closed, because the stream cannot be resynchronised.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
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

static size_t queued(hdqtd_conn *c)
{
	return uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	(void)h;
	size_t n = suggested < 65536 ? suggested : 65536;
	buf->base = malloc(n);
	buf->len = buf->base ? n : 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void set_reading(hdqtd_conn *c, int on)
{
	if (c->closing || c->reading == on)
		return;
	int rc = on ? uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read)
		    : uv_read_stop((uv_stream_t *)&c->pipe);
	if (rc == 0)
		c->reading = on;
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
		hdqtd_log(LOG_DEBUG, "client %llu: write: %s", (unsigned long long)c->id,
			  uv_strerror(status));
		conn_close(c);
		return;
	}
	/* Resume a paused reader once its replies have drained. */
	if (!c->reading && queued(c) < c->d->cfg.max_write_queue / 4)
		set_reading(c, 1);
}

/* Queue bytes (taken) for the client. */
static int conn_send(hdqtd_conn *c, char *data, size_t len)
{
	if (c->closing) {
		free(data);
		return -1;
	}
	if (queued(c) + len > c->d->cfg.max_write_queue) {
		hdqtd_log(LOG_WARNING, "client %llu: %zu bytes of replies unread: disconnecting",
			  (unsigned long long)c->id, queued(c));
		free(data);
		conn_close(c);
		return -1;
	}
	write_req *w = malloc(sizeof(*w));
	if (!w) {
		free(data);
		conn_close(c);
		return -1;
	}
	w->buf = data;
	uv_buf_t b = uv_buf_init(data, (unsigned)len);
	int rc = uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_write);
	if (rc < 0) {
		free(data);
		free(w);
		conn_close(c);
		return -1;
	}
	return 0;
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

static void on_closed(uv_handle_t *h)
{
	hdqtd_conn *c = h->data;
	hdqt_linebuf_free(&c->lb);
	free(c);
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
	hdqtd_log(LOG_DEBUG, "client %llu: closed", (unsigned long long)c->id);
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

static void conn_finish(hdqtd_conn *c)
{
	set_reading(c, 0);
	uv_shutdown_t *req = malloc(sizeof(*req));
	if (!req || uv_shutdown(req, (uv_stream_t *)&c->pipe, on_shutdown) < 0) {
		free(req);
		conn_close(c);
	}
}

/* One line: a request, a notification or a batch. */
static void handle_line(hdqtd_conn *c, const char *line, size_t len)
{
	hdqtd *d = c->d;
	if (len == 0)
		return; /* blank lines are tolerated between messages */
	cJSON *msg = cJSON_ParseWithLength(line, len);
	if (!msg) {
		conn_send_json(c, hdqt_rpc_error(NULL, HDQT_RPC_PARSE_ERROR, "parse error: not valid JSON",
						 NULL));
		return;
	}
	if (!cJSON_IsArray(msg)) {
		cJSON *resp = hdqtd_dispatch(d, c, msg);
		if (resp)
			conn_send_json(c, resp);
		cJSON_Delete(msg);
		return;
	}
	int n = cJSON_GetArraySize(msg);
	if (n == 0) {
		cJSON_Delete(msg);
		conn_send_json(c, hdqt_rpc_error(NULL, HDQT_RPC_INVALID_REQUEST,
						 "invalid request: empty batch", NULL));
		return;
	}
	if (n > d->cfg.max_batch) {
		cJSON_Delete(msg);
		char m[96];
		snprintf(m, sizeof(m), "invalid request: batch of %d exceeds daemon.max_batch (%d)", n,
			 d->cfg.max_batch);
		conn_send_json(c, hdqt_rpc_error(NULL, HDQT_RPC_INVALID_REQUEST, m, NULL));
		return;
	}
	cJSON *out = cJSON_CreateArray();
	const cJSON *req;
	cJSON_ArrayForEach(req, msg) {
		cJSON *resp = hdqtd_dispatch(d, c, req);
		if (resp && out)
			cJSON_AddItemToArray(out, resp);
		else
			cJSON_Delete(resp);
	}
	cJSON_Delete(msg);
	if (!out) {
		conn_close(c);
		return;
	}
	if (cJSON_GetArraySize(out) == 0) { /* only notifications: nothing is sent */
		cJSON_Delete(out);
		return;
	}
	conn_send_json(c, out);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	hdqtd_conn *c = s->data;
	if (nread < 0) {
		free(buf->base);
		if (nread != UV_EOF)
			hdqtd_log(LOG_DEBUG, "client %llu: read: %s", (unsigned long long)c->id,
				  uv_strerror((int)nread));
		else if (hdqt_linebuf_partial(&c->lb) > 0)
			hdqtd_log(LOG_INFO, "client %llu: disconnected in the middle of a message "
				  "(%zu bytes dropped)", (unsigned long long)c->id,
				  hdqt_linebuf_partial(&c->lb));
		/* EOF: finish writing what is queued, then close. */
		if (nread == UV_EOF)
			conn_finish(c);
		else
			conn_close(c);
		return;
	}
	if (nread == 0) {
		free(buf->base);
		return;
	}
	int rc = hdqt_linebuf_feed(&c->lb, buf->base, (size_t)nread);
	free(buf->base);
	if (rc == HDQT_EFULL) {
		char m[128];
		snprintf(m, sizeof(m), "message exceeds daemon.max_message (%zu bytes); closing",
			 c->d->cfg.max_message);
		hdqtd_log(LOG_WARNING, "client %llu: %s", (unsigned long long)c->id, m);
		/* Lines complete before the oversized one still get their replies. */
		conn_send_json(c, hdqt_rpc_error(NULL, HDQT_RPC_TOO_LARGE, m, NULL));
		if (!c->closing)
			conn_finish(c);
		return;
	}
	if (rc < 0) {
		conn_close(c);
		return;
	}
	size_t len;
	char *line;
	while (!c->closing && (line = hdqt_linebuf_next(&c->lb, &len)))
		handle_line(c, line, len);
	/* Back-pressure: stop reading while replies pile up. */
	if (!c->closing && queued(c) > c->d->cfg.max_write_queue / 2)
		set_reading(c, 0);
}

static int peer_is_admin(hdqtd *d, uid_t uid, gid_t gid)
{
	if (!d->admin_gid_set || uid == 0 || uid == geteuid() || gid == d->admin_gid)
		return 1;
	struct passwd pw, *pp = NULL;
	char buf[4096];
	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &pp) != 0 || !pp)
		return 0;
	gid_t groups[256];
	int ng = 256;
	if (getgrouplist(pp->pw_name, pp->pw_gid, groups, &ng) < 0)
		return 0;
	for (int i = 0; i < ng; i++)
		if (groups[i] == d->admin_gid)
			return 1;
	return 0;
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
	c->next = d->conns;
	if (d->conns)
		d->conns->prev = c;
	d->conns = c;
	d->n_conns++;
	uv_os_fd_t fd;
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	if (uv_fileno((uv_handle_t *)&c->pipe, &fd) == 0 &&
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0) {
		c->pid = cred.pid;
		c->uid = cred.uid;
		c->admin = peer_is_admin(d, cred.uid, cred.gid);
	} else {
		c->admin = !d->admin_gid_set;
	}
	hdqtd_log(LOG_DEBUG, "client %llu: connected (pid %d, uid %u)", (unsigned long long)c->id,
		  (int)c->pid, (unsigned)c->uid);
	if (d->n_conns > d->cfg.max_connections || d->stopping) {
		int code = d->stopping ? HDQT_RPC_SHUTTING_DOWN : HDQT_RPC_TOO_MANY_CONNECTIONS;
		char m[128];
		snprintf(m, sizeof(m), d->stopping ? "hdqtd is shutting down"
						   : "too many connections (daemon.max_connections = %d)",
			 d->cfg.max_connections);
		if (!d->stopping)
			hdqtd_log(LOG_WARNING, "client %llu refused: %s", (unsigned long long)c->id, m);
		c->reading = 0;
		if (conn_send_json(c, hdqt_rpc_error(NULL, code, m, NULL)) == 0)
			conn_finish(c);
		return;
	}
	set_reading(c, 1);
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

void hdqtd_server_close(hdqtd *d)
{
	if (d->listening) {
		d->listening = 0;
		uv_close((uv_handle_t *)&d->listener, NULL);
		if (d->bound)
			unlink(d->cfg.socket);
	}
	/* Replies already queued are written before each connection closes. */
	for (hdqtd_conn *c = d->conns, *next; c; c = next) {
		next = c->next;
		conn_finish(c);
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
		next = c->next; /* conn_send may close c */
		if (!c->subscribed || c->closing)
			continue;
		char *copy = malloc(len);
		if (!copy)
			continue;
		memcpy(copy, s, len);
		conn_send(c, copy, len);
	}
	free(s);
}
