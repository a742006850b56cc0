/* SPDX-License-Identifier: MIT */
/*
 * hdqt_proto: the wire format shared by hdqtd and its clients.
 *
 * JSON-RPC 2.0, one JSON text per line ("\n"-terminated, UTF-8) over a Unix
 * stream socket; see proto/PROTOCOL.md for the methods and
 * proto/hdqt-rpc.json for their machine-readable description.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#ifdef __cplusplus
extern "C" {
#endif

/* JSON-RPC 2.0's own codes, then hdqtd's application codes. */
enum {
	HDQT_RPC_PARSE_ERROR = -32700,
	HDQT_RPC_INVALID_REQUEST = -32600,
	HDQT_RPC_METHOD_NOT_FOUND = -32601,
	HDQT_RPC_INVALID_PARAMS = -32602,
	HDQT_RPC_INTERNAL_ERROR = -32603,
	HDQT_RPC_UNKNOWN_CLASS = -32001,   /* class name not known (or inactive) */
	HDQT_RPC_CLASS_EXISTS = -32002,    /* class.add with a taken name */
	HDQT_RPC_BUSY = -32003,            /* a training round is running / none is */
	HDQT_RPC_NO_MODEL = -32004,        /* predict before the first round */
	HDQT_RPC_LIMIT = -32005,           /* a configured limit (pending samples, size) */
	HDQT_RPC_TOO_MANY_CONNECTIONS = -32006,
	HDQT_RPC_STORAGE = -32007,         /* the database failed; nothing was changed */
	HDQT_RPC_FORBIDDEN = -32008,       /* the peer's credentials do not allow this method */
	HDQT_RPC_TOO_LARGE = -32009,       /* a message over the size limit (connection closed) */
	HDQT_RPC_NOT_FOUND = -32010,       /* e.g. an unknown model version */
	HDQT_RPC_SHUTTING_DOWN = -32011,
	HDQT_RPC_INCOMPATIBLE = -32012,    /* a bundle of another dimension, window, recipe or classes */
	HDQT_RPC_CORRUPT = -32013,         /* a bundle that fails its checksum or format checks */
};

/* A short name for a code ("parse_error", "unknown_class", ...). */
const char *hdqt_rpc_code_name(int code);

/* What hdqtd takes as plausible, and refuses past (-32602): a window's
 * readings (g and rad/s) and a feature.  Clients check before sending, so
 * that one glitched reading costs its windows, not the batch around it. */
#define HDQT_RPC_READING_MAX 1000.0
#define HDQT_RPC_FEATURE_MAX 1e9

/* ---- framing -------------------------------------------------------------- */

/* Splits a byte stream into lines of at most max bytes. */
typedef struct hdqt_linebuf {
	char *buf;
	size_t len;   /* bytes held */
	size_t pos;   /* start of the first unread line */
	size_t scan;  /* bytes from pos already searched for '\n' */
	size_t cap, max;
} hdqt_linebuf;

int hdqt_linebuf_init(hdqt_linebuf *lb, size_t max);
void hdqt_linebuf_free(hdqt_linebuf *lb);
/* Append n bytes.  HDQT_EFULL (and nothing appended) when the line being
 * received would exceed max bytes: the stream cannot be resynchronised. */
int hdqt_linebuf_feed(hdqt_linebuf *lb, const char *data, size_t n);
/* The next complete line, NUL-terminated, without its "\n" (and a "\r"
 * before it); NULL when none is complete.  Valid until the next feed. */
char *hdqt_linebuf_next(hdqt_linebuf *lb, size_t *len);
/* Give back the memory a long line grew the buffer to, down to
 * HDQT_LINEBUF_KEEP bytes (so that lines up to that size never
 * reallocate), once what is held (an unfinished line, or lines not read
 * yet) fits a quarter of it.  Lines returned by next() before it are
 * invalid after it. */
#define HDQT_LINEBUF_KEEP ((size_t)64 << 10)
void hdqt_linebuf_shrink(hdqt_linebuf *lb);
/* Bytes of an unfinished line held. */
size_t hdqt_linebuf_partial(const hdqt_linebuf *lb);

/* ---- messages ------------------------------------------------------------- */

/* A request (id >= 0) or notification (id < 0); params is taken (may be NULL). */
cJSON *hdqt_rpc_request(const char *method, cJSON *params, int64_t id);
/* A response to id (copied; JSON null when NULL); result is taken. */
cJSON *hdqt_rpc_result(const cJSON *id, cJSON *result);
/* An error response; data is taken (may be NULL). */
cJSON *hdqt_rpc_error(const cJSON *id, int code, const char *message, cJSON *data);
/* A notification from the daemon: {"jsonrpc":"2.0","method":"event","params":params}. */
cJSON *hdqt_rpc_event(const char *type, cJSON *params);
/* Serialise without spaces and append "\n" (malloc'd; NULL on failure). */
char *hdqt_rpc_print(const cJSON *msg, size_t *len);

/* Parse a response line.  On 0, *root holds the parsed message (free it
 * with cJSON_Delete) and *result its result; on an error response returns
 * the JSON-RPC error code (< 0, never a HDQT_E* value) with *result NULL
 * and *message set; HDQT_EFORMAT if the line is not a JSON-RPC response. */
int hdqt_rpc_parse_response(const char *line, cJSON **root, const cJSON **result,
			    const char **message);

/* ---- values --------------------------------------------------------------- */

/* Read a JSON array of numbers into out (at most max).  Returns the count,
 * or HDQT_EINVAL (not an array, not numbers, too many) / HDQT_ERANGE (NaN,
 * infinite or beyond the float range); *bad receives the offending index. */
int hdqt_rpc_floats(const cJSON *arr, float *out, int max, int *bad);
/* A window: an array of rows readings x cols numbers, row-major into out. */
int hdqt_rpc_window(const cJSON *arr, int rows, int cols, float *out, char *err, size_t errlen);
/* A float as a JSON number of 9 significant digits, which read back as a
 * float give v exactly (JSON null when v is NaN or infinite; NULL without
 * memory).  cJSON prints a double with up to three calls (%1.15g, sscanf,
 * %1.17g) and 17 digits of which 8 are noise for a float; this is one call.
 * The item is cJSON raw text: for printing, not for reading back. */
cJSON *hdqt_rpc_float(float v);
/* hdqt_rpc_float(v) added to object o as key: the item, NULL without memory. */
cJSON *hdqt_rpc_add_float(cJSON *o, const char *key, float v);
/* An array of floats as a JSON array, each as hdqt_rpc_float, except that
 * NaN and infinities stay cJSON numbers (so that hdqt_client_call refuses
 * them: cJSON would print null); NULL on allocation failure. */
cJSON *hdqt_rpc_float_array(const float *x, int n);
/* The binary form of n floats (features_f32, window_f32): a JSON string of
 * padded base64 of n little-endian IEEE-754 binary32 values, 4n bytes.  It
 * carries the exact floats the engine uses and skips decimal parsing, which
 * costs more than the whole rest of a predict (PROTOCOL.md, "Inputs").
 * Returns n; HDQT_EINVAL if v is no such string of exactly n values (*bad
 * -1), HDQT_ERANGE if value *bad is NaN or infinite, HDQT_ENOMEM. */
int hdqt_rpc_f32(const cJSON *v, float *out, int n, int *bad);
/* n floats in that form (malloc'd, NUL-terminated); NULL without memory. */
char *hdqt_rpc_f32_encode(const float *x, int n);

/* ---- text ---------------------------------------------------------------- */

/* Length of the longest valid UTF-8 prefix of s[0..n) (n when all of it is
 * valid: no overlong forms, surrogates or code points past U+10FFFF). */
size_t hdqt_utf8_valid(const char *s, size_t n);
/* Offset of the first \u0000 escape in the JSON text s[0..n), n if none.
 * cJSON ends its strings at a NUL, so "x\u0000y" would read as "x": such
 * text is refused before it is parsed, not truncated. */
size_t hdqt_json_nul_escape(const char *s, size_t n);
/* Bytes of the NUL-terminated s to keep to cut it to at most max bytes
 * without splitting a UTF-8 character. */
size_t hdqt_utf8_prefix(const char *s, size_t max);

/* A byte range of a JSON text. */
typedef struct hdqt_span {
	size_t off, len;
} hdqt_span;
/* Spans of the elements of the JSON array text (already parsed by cJSON);
 * returns their count (spans beyond max are not stored) or HDQT_EINVAL. */
int hdqt_json_elements(const char *text, size_t len, hdqt_span *out, int max);
/* Span of the value of the first member named exactly key (no escapes) of
 * the JSON object text; HDQT_ENOTFOUND, HDQT_EINVAL if not an object.
 * Used to echo request ids byte for byte (cJSON keeps numbers as doubles). */
int hdqt_json_member(const char *text, size_t len, const char *key, hdqt_span *out);

/* The machine-readable description (OpenRPC document), proto/hdqt-rpc.json. */
extern const char hdqt_rpc_description[];

/* ---- base64 (RFC 4648, with padding), for binary transfers ---------------- */

/* n bytes as base64 text (malloc'd, NUL-terminated); NULL without memory. */
char *hdqt_base64_encode(const uint8_t *p, size_t n);
/* Decode n chars (a multiple of 4) into out (room for n / 4 * 3 bytes): the
 * decoded length, or -1 if s is not padded base64 in its one canonical form
 * (the unused bits of the last character zero). */
long hdqt_base64_decode(const char *s, size_t n, uint8_t *out);

#ifdef __cplusplus
}
#endif
