/* SPDX-License-Identifier: MIT */
/*
 * libhdqt-client: talk to hdqtd over its Unix socket (proto/PROTOCOL.md).
 *
 * One hdqt_client is one blocking connection, for one thread at a time.
 * Errors are negative: HDQT_E* codes (hdqt_strerror) for transport
 * problems, JSON-RPC error codes (< -32000, see hdqt_proto.h) for errors the
 * daemon returned; hdqt_client_errmsg() says what happened either way.
 */
#pragma once

#include <cjson/cJSON.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hdqt_client hdqt_client;

/* $HDQTD_SOCKET, else /run/hdqtd/hdqtd.sock. */
const char *hdqt_client_default_socket(void);

/* Connect (path NULL: the default socket).  timeout_ms bounds every later
 * wait for a reply (<= 0: wait forever).  HDQT_EIO if nothing listens. */
int hdqt_client_connect(hdqt_client **out, const char *path, int timeout_ms);
void hdqt_client_close(hdqt_client *c);

/* Call method with params (taken; NULL for none).  On 0, *result holds the
 * result (free with cJSON_Delete).  Event notifications that arrive first
 * are queued for hdqt_client_next_event (at most 1024; older ones dropped). */
int hdqt_client_call(hdqt_client *c, const char *method, cJSON *params, cJSON **result);
/* Message of the last failure on this client. */
const char *hdqt_client_errmsg(const hdqt_client *c);

/* The next event's params ({"type": ..., ...}); timeout_ms < 0 waits
 * forever, 0 only looks at what has arrived.  HDQT_ECANCELED on timeout. */
int hdqt_client_next_event(hdqt_client *c, int timeout_ms, cJSON **event);

/* The socket path this client uses (for messages). */
const char *hdqt_client_path(const hdqt_client *c);

#ifdef __cplusplus
}
#endif
