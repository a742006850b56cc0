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
 * are queued for hdqt_client_next_event (at most 1024; older ones dropped).
 * HDQT_ERANGE, and nothing sent, if params hold a NaN or infinite number
 * (JSON cannot carry them).  An error reply with a null id (hdqtd could not
 * tie it to a request: parse error, line over daemon.max_message, refused
 * connection) is this call's answer. */
int hdqt_client_call(hdqt_client *c, const char *method, cJSON *params, cJSON **result);
/* sample.add: samples (a JSON array of {"class": ..., "features"|"window": ...};
 * taken) stored all or nothing, under batch_id when it is not NULL: 1 to
 * HDQT_CLIENT_BATCH_ID_MAX bytes of printable ASCII without spaces (0x21..0x7e),
 * chosen by the caller, unique per logical batch and the same in every
 * resend of it.  hdqtd stores a batch id once: a resend of a stored batch is
 * acknowledged without storing again, with "duplicate": true in *result
 * ({"accepted": N, "samples_pending": P[, "duplicate": true]}), so a batch
 * whose reply was lost can be sent again safely.  HDQT_EINVAL (samples
 * freed, nothing sent) for a malformed batch_id or samples not an array. */
#define HDQT_CLIENT_BATCH_ID_MAX 64
int hdqt_client_sample_add(hdqt_client *c, cJSON *samples, const char *batch_id, cJSON **result);
/* 1 if id is a well-formed batch id (see hdqt_client_sample_add), else 0. */
int hdqt_client_batch_id_valid(const char *id);

/* ---- fleet operations (docs/bundle.md); they need access.admin_group ---- */

/* model.export, every chunk written to fd as it arrives; the bytes are
 * checked against the size and CRC-32 hdqtd announced (HDQT_ECORRUPT
 * otherwise) and the transfer is closed.  *info (may be NULL) receives the
 * model.export result (with the bundle's manifest).  HDQT_EIO if writing
 * fd fails.  On failure fd may hold part of the bundle: write to a
 * temporary file and rename it only on success. */
int hdqt_client_export(hdqt_client *c, int fd, cJSON **info);
/* backup: a consistent copy of hdqtd's database, as hdqt_client_export. */
int hdqt_client_backup(hdqt_client *c, int fd, cJSON **info);
/* Upload a bundle of len bytes and apply it (model.import_commit); remap:
 * give the bundle's classes this box's labels instead of refusing.  On 0
 * *result holds model.import_commit's result.  A refused bundle (-32012
 * incompatible, -32013 corrupt) changed nothing. */
int hdqt_client_import(hdqt_client *c, const unsigned char *bundle, size_t len, int remap,
		       cJSON **result);

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
