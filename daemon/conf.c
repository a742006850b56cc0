/* SPDX-License-Identifier: MIT */
/*
 * hdqtd configuration.  The INI file is parsed by inih; every key goes
 * through hdqtd_config_set, which the command line's --set uses too, so a
 * key has one parser and one error message wherever it comes from.
 */
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf.h"
#include "hdqt_data.h"
#include "hdqt_novelty.h"

void hdqtd_config_default(hdqtd_config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->socket, sizeof(c->socket), "/run/hdqtd/hdqtd.sock");
	c->socket_mode = 0660;
	snprintf(c->db, sizeof(c->db), "/var/lib/hdqtd/hdqtd.db");
	c->log_level = 6;
	c->max_connections = 64;
	c->max_message = 4u << 20;
	c->max_write_queue = 4u << 20; /* with max_message: at most 8 MiB per client */
	c->max_batch = 4096;
	c->max_rpc_batch = 64;
	c->max_connections_per_uid = 16;
	c->admin_reserved = 4;
	c->idle_timeout_s = 600;
	c->partial_timeout_s = 30;
	c->write_timeout_s = 60;
	c->max_memory = 256u << 20;
	c->busy_poll_us = 100; /* polls only for clients that ask again at once */
	c->n_hidden = 2;
	c->hidden[0] = c->hidden[1] = 512;
	c->quant = HDQT_MODE_HDQT;
	c->bits = 4;
	c->acc_bits = 8;
	c->beta_w = c->beta_a = -1;
	c->window = 128;
	c->norm_clip = 10; /* a sample far outside the training data cannot blow up training */
	c->seed = 1;
	c->strategy = HDQT_CL_ICARL;
	c->memory = 200;
	c->epochs = 100;
	c->batch = 128;
	c->lr = 0.01f;
	c->auto_train = 1;
	c->auto_min_samples = 200;
	c->auto_interval_s = 60;
	c->max_round_samples = 20000;
	c->holdout_every = 5;
	c->validation_per_class = 100;
	c->regression_margin = 5.0;
	c->sync_full = 1;
	c->max_bytes = 2LL << 30; /* bounds the start-up check and the disk used */
	c->max_pending_per_class = 100000;
	c->keep_models = 10;
	c->novelty_kind = HDQT_NOVELTY_NME;
	c->unknown_rate = 0.05;
	c->keep_unknowns = 1000;
	c->alert_count = 20;
	c->alert_interval_s = 300;
	c->group_similarity = 0.9;
}

static int fail(char *err, size_t errlen, const char *section, const char *key, const char *why)
{
	snprintf(err, errlen, "%s.%s: %s", section, key, why);
	return HDQT_EINVAL;
}

static int parse_long(const char *v, long lo, long hi, long *out, int base)
{
	char *end;
	errno = 0;
	long x = strtol(v, &end, base);
	if (errno || end == v || *end || x < lo || x > hi)
		return -1;
	*out = x;
	return 0;
}

static int parse_double(const char *v, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double x = strtod(v, &end);
	if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi)
		return -1;
	*out = x;
	return 0;
}

static int parse_bool(const char *v, int *out)
{
	if (!strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcmp(v, "1") || !strcasecmp(v, "on"))
		*out = 1;
	else if (!strcasecmp(v, "no") || !strcasecmp(v, "false") || !strcmp(v, "0") ||
		 !strcasecmp(v, "off"))
		*out = 0;
	else
		return -1;
	return 0;
}

static int parse_size(const char *v, int64_t lo, int64_t hi, int64_t *out)
{
	char *end;
	errno = 0;
	long long x = strtoll(v, &end, 10);
	if (errno || end == v || x < 0)
		return -1;
	long long mul = 1;
	if (*end == 'K' || *end == 'k')
		mul = 1LL << 10;
	else if (*end == 'M' || *end == 'm')
		mul = 1LL << 20;
	else if (*end == 'G' || *end == 'g')
		mul = 1LL << 30;
	if (mul != 1)
		end++;
	if (*end || x > INT64_MAX / mul || x * mul < lo || x * mul > hi)
		return -1;
	*out = x * mul;
	return 0;
}

#define INT_KEY(sec, name, field, lo, hi)                                                      \
	if (!strcmp(section, sec) && !strcmp(key, name)) {                                     \
		long x;                                                                        \
		if (parse_long(value, lo, hi, &x, 10) < 0)                                     \
			return fail(err, errlen, section, key,                                 \
				    "expected an integer in [" #lo ", " #hi "]");              \
		c->field = (int)x;                                                             \
		return 0;                                                                      \
	}
#define BOOL_KEY(sec, name, field)                                                             \
	if (!strcmp(section, sec) && !strcmp(key, name)) {                                     \
		if (parse_bool(value, &c->field) < 0)                                          \
			return fail(err, errlen, section, key, "expected yes or no");          \
		return 0;                                                                      \
	}
#define STR_KEY(sec, name, field)                                                              \
	if (!strcmp(section, sec) && !strcmp(key, name)) {                                     \
		if (!*value || strlen(value) >= sizeof(c->field))                              \
			return fail(err, errlen, section, key, "empty or too long");           \
		snprintf(c->field, sizeof(c->field), "%s", value);                             \
		return 0;                                                                      \
	}

int hdqtd_config_set(hdqtd_config *c, const char *section, const char *key, const char *value,
		     char *err, size_t errlen)
{
	if (!section || !key || !value)
		return HDQT_EINVAL;
	/* [daemon] */
	STR_KEY("daemon", "socket", socket)
	STR_KEY("daemon", "database", db)
	if (!strcmp(section, "daemon") && !strcmp(key, "socket_mode")) {
		long x;
		if (parse_long(value, 0, 0777, &x, 8) < 0)
			return fail(err, errlen, section, key, "expected an octal mode such as 0660");
		c->socket_mode = (unsigned)x;
		return 0;
	}
	if (!strcmp(section, "daemon") && !strcmp(key, "log_level")) {
		static const char *const names[] = {"emerg", "alert", "crit", "err", "warning",
						    "notice", "info", "debug"};
		for (int i = 0; i < 8; i++)
			if (!strcasecmp(value, names[i])) {
				c->log_level = i;
				return 0;
			}
		return fail(err, errlen, section, key, "expected err, warning, notice, info or debug");
	}
	INT_KEY("daemon", "max_connections", max_connections, 1, 65536)
	INT_KEY("daemon", "max_batch", max_batch, 1, 1000000)
	INT_KEY("daemon", "max_rpc_batch", max_rpc_batch, 1, 1024)
	INT_KEY("daemon", "max_connections_per_uid", max_connections_per_uid, 1, 65536)
	INT_KEY("daemon", "admin_reserved", admin_reserved, 0, 65536)
	INT_KEY("daemon", "busy_poll_us", busy_poll_us, 0, 1000)
	if (!strcmp(section, "daemon") &&
	    (!strcmp(key, "idle_timeout") || !strcmp(key, "partial_timeout") ||
	     !strcmp(key, "write_timeout"))) {
		double *t = !strcmp(key, "idle_timeout")    ? &c->idle_timeout_s
			    : !strcmp(key, "partial_timeout") ? &c->partial_timeout_s
							      : &c->write_timeout_s;
		if (parse_double(value, 0, 1e9, t) < 0)
			return fail(err, errlen, section, key, "expected seconds >= 0 (0 = no timeout)");
		return 0;
	}
	if (!strcmp(section, "daemon") &&
	    (!strcmp(key, "max_message") || !strcmp(key, "max_write_queue") ||
	     !strcmp(key, "max_memory"))) {
		int64_t x;
		if (parse_size(value, 1024, 1LL << 30, &x) < 0)
			return fail(err, errlen, section, key,
				    "expected a size from 1K to 1G (suffix K, M or G)");
		if (!strcmp(key, "max_message"))
			c->max_message = (size_t)x;
		else if (!strcmp(key, "max_write_queue"))
			c->max_write_queue = (size_t)x;
		else
			c->max_memory = (size_t)x;
		return 0;
	}
	/* [model] */
	if (!strcmp(section, "model") && !strcmp(key, "hidden")) {
		int n = 0, w[HDQT_MAX_LAYERS];
		char buf[1024];
		if (strlen(value) >= sizeof(buf))
			return fail(err, errlen, section, key, "too long (at most 1023 bytes)");
		snprintf(buf, sizeof(buf), "%s", value);
		char *save = NULL;
		for (char *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
			long x;
			if (n >= HDQT_MAX_LAYERS - 1 || parse_long(t, 1, 8192, &x, 10) < 0)
				return fail(err, errlen, section, key,
					    "expected up to 7 comma-separated widths in [1, 8192]");
			w[n++] = (int)x;
		}
		if (n == 0)
			return fail(err, errlen, section, key, "expected at least one width");
		c->n_hidden = n;
		memcpy(c->hidden, w, sizeof(int) * n);
		return 0;
	}
	if (!strcmp(section, "model") && !strcmp(key, "quant")) {
		if (hdqt_mode_parse(value, &c->quant) < 0)
			return fail(err, errlen, section, key, "expected fp32, int, hdqt-paper, hdqt, hadanet, hadanet-paper, xnor or hbwn");
		return 0;
	}
	INT_KEY("model", "bits", bits, 2, 8)
	INT_KEY("model", "acc_bits", acc_bits, 8, 24)
	_Static_assert(HDQT_MAX_DIM == 65536, "model.beta_* bounds");
	INT_KEY("model", "beta_w", beta_w, -1, 65536) /* HDQT_MAX_DIM, spelt out for the message */
	INT_KEY("model", "beta_a", beta_a, -1, 65536)
	INT_KEY("model", "window", window, 16, 4096)
	if (!strcmp(section, "model") && !strcmp(key, "norm_clip")) {
		double x;
		if (parse_double(value, 0, 1e6, &x) < 0)
			return fail(err, errlen, section, key, "expected a number >= 0");
		c->norm_clip = (float)x;
		return 0;
	}
	if (!strcmp(section, "model") && !strcmp(key, "seed")) {
		long x;
		if (parse_long(value, 0, LONG_MAX, &x, 10) < 0)
			return fail(err, errlen, section, key, "expected a non-negative integer");
		c->seed = (uint64_t)x;
		return 0;
	}
	/* [training] */
	if (!strcmp(section, "training") && !strcmp(key, "strategy")) {
		if (hdqt_cl_method_parse(value, &c->strategy) < 0)
			return fail(err, errlen, section, key, "expected icarl, bic, er, lwf or finetune");
		return 0;
	}
	INT_KEY("training", "memory", memory, 0, 1000000)
	INT_KEY("training", "epochs", epochs, 1, 1000000)
	INT_KEY("training", "batch", batch, 1, 65536)
	INT_KEY("training", "threads", threads, 0, 64)
	BOOL_KEY("training", "auto", auto_train)
	INT_KEY("training", "auto_min_samples", auto_min_samples, 1, 100000000)
	INT_KEY("training", "max_round_samples", max_round_samples, 1, 10000000)
	INT_KEY("training", "holdout_every", holdout_every, 0, 1000)
	INT_KEY("training", "validation_per_class", validation_per_class, 0, 1000000)
	if (!strcmp(section, "training") && !strcmp(key, "lr")) {
		double x;
		if (parse_double(value, 1e-9, 10, &x) < 0)
			return fail(err, errlen, section, key, "expected a number in (0, 10]");
		c->lr = (float)x;
		return 0;
	}
	if (!strcmp(section, "training") && !strcmp(key, "auto_interval")) {
		if (parse_double(value, 0, 1e9, &c->auto_interval_s) < 0)
			return fail(err, errlen, section, key, "expected seconds >= 0");
		return 0;
	}
	if (!strcmp(section, "training") && !strcmp(key, "regression_margin")) {
		if (parse_double(value, 0, 100, &c->regression_margin) < 0)
			return fail(err, errlen, section, key, "expected percentage points in [0, 100]");
		return 0;
	}
	/* [store] */
	if (!strcmp(section, "store") && !strcmp(key, "sync")) {
		if (!strcasecmp(value, "full"))
			c->sync_full = 1;
		else if (!strcasecmp(value, "normal"))
			c->sync_full = 0;
		else
			return fail(err, errlen, section, key, "expected full or normal");
		return 0;
	}
	if (!strcmp(section, "store") && !strcmp(key, "max_bytes")) {
		if (parse_size(value, 0, INT64_MAX / 2, &c->max_bytes) < 0)
			return fail(err, errlen, section, key, "expected a size (0 = no cap; K, M, G)");
		return 0;
	}
	INT_KEY("store", "max_pending_per_class", max_pending_per_class, 0, 100000000)
	INT_KEY("store", "keep_models", keep_models, 1, 100000)
	/* [open_set] */
	if (!strcmp(section, "open_set") && !strcmp(key, "score")) {
		hdqt_novelty_kind k;
		if (hdqt_novelty_kind_parse(value, &k) < 0)
			return fail(err, errlen, section, key, "expected nme, knn, energy or msp");
		c->novelty_kind = (int)k;
		return 0;
	}
	if (!strcmp(section, "open_set") && !strcmp(key, "unknown_rate")) {
		if (parse_double(value, 0.001, 0.5, &c->unknown_rate) < 0)
			return fail(err, errlen, section, key, "expected a fraction in [0.001, 0.5]");
		return 0;
	}
	INT_KEY("open_set", "keep_unknowns", keep_unknowns, 0, HDQT_STORE_UNKNOWNS_MAX)
	INT_KEY("open_set", "alert_count", alert_count, 1, 100000000)
	if (!strcmp(section, "open_set") && !strcmp(key, "alert_interval")) {
		if (parse_double(value, 0, 1e9, &c->alert_interval_s) < 0)
			return fail(err, errlen, section, key, "expected seconds >= 0");
		return 0;
	}
	if (!strcmp(section, "open_set") && !strcmp(key, "group_similarity")) {
		if (parse_double(value, 0, 1, &c->group_similarity) < 0)
			return fail(err, errlen, section, key, "expected a cosine in [0, 1]");
		return 0;
	}
	/* [access] */
	if (!strcmp(section, "access") && !strcmp(key, "admin_group")) {
		if (strlen(value) >= sizeof(c->admin_group))
			return fail(err, errlen, section, key, "too long");
		snprintf(c->admin_group, sizeof(c->admin_group), "%s", value);
		return 0;
	}
	return fail(err, errlen, section, key, "unknown key");
}

#define MAX_KEYS 128         /* distinct section.key pairs remembered per file */
#define MAX_LINE (64 << 10)  /* longest line of the file */

struct load_ctx {
	hdqtd_config *c;
	char *err;
	size_t errlen;
	int failed;
	int n_seen;
	char seen[MAX_KEYS][80];
};

static int ini_cb(void *user, const char *section, const char *name, const char *value)
{
	struct load_ctx *x = user;
	if (x->failed)
		return 0;
	/* A key given twice is a mistake (which one did the operator mean?). */
	char k[80];
	snprintf(k, sizeof(k), "%s.%s", section, name);
	for (int i = 0; i < x->n_seen; i++)
		if (!strcmp(x->seen[i], k)) {
			snprintf(x->err, x->errlen, "%s: given more than once", k);
			x->failed = 1;
			return 0;
		}
	if (x->n_seen < MAX_KEYS)
		snprintf(x->seen[x->n_seen++], sizeof(x->seen[0]), "%s", k);
	if (hdqtd_config_set(x->c, section, name, value, x->err, x->errlen) < 0) {
		x->failed = 1;
		return 0;
	}
	return 1;
}

/* The number (1-based) of the first line longer than max bytes, 0 if none;
 * -1 if the file cannot be read. */
static int long_line(const char *path, size_t max)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	int ch, line = 1, found = 0;
	size_t run = 0;
	while ((ch = getc(f)) != EOF && !found) {
		if (ch == '\n') {
			line++;
			run = 0;
		} else if (++run > max) {
			found = line;
		}
	}
	fclose(f);
	return found;
}

int hdqtd_config_load(hdqtd_config *c, const char *path, char *err, size_t errlen)
{
	struct load_ctx *x = calloc(1, sizeof(*x));
	if (!x) {
		snprintf(err, errlen, "%s: out of memory", path);
		return HDQT_ENOMEM;
	}
	*x = (struct load_ctx){.c = c, .err = err, .errlen = errlen};
	/* Debian's inih reads lines of at most 200 bytes by default: let it
	 * grow its line buffer (these knobs are the library's own, set before
	 * any thread exists), and say so plainly when a line is too long. */
	ini_use_stack = false;
	ini_allow_realloc = true;
	ini_max_line = MAX_LINE + 3;
	ini_allow_multiline = false; /* an indented line is not a continuation */
	int ll = long_line(path, MAX_LINE);
	if (ll > 0) {
		snprintf(err, errlen, "%s:%d: line longer than %d bytes", path, ll, MAX_LINE);
		free(x);
		return HDQT_EINVAL;
	}
	int line = ini_parse(path, ini_cb, x);
	const int failed = x->failed;
	free(x);
	if (line == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno ? errno : ENOENT));
		return HDQT_EIO;
	}
	if (line == -2) {
		snprintf(err, errlen, "%s: out of memory", path);
		return HDQT_ENOMEM;
	}
	if (line > 0) {
		if (failed) {
			char msg[512];
			snprintf(msg, sizeof(msg), "%s:%d: %s", path, line, err);
			snprintf(err, errlen, "%s", msg);
		} else {
			snprintf(err, errlen, "%s:%d: syntax error", path, line);
		}
		return HDQT_EINVAL;
	}
	return 0;
}

int hdqtd_config_check(const hdqtd_config *c, char *err, size_t errlen)
{
	if (c->auto_min_samples < 1)
		return fail(err, errlen, "training", "auto_min_samples", "must be >= 1");
	if (c->strategy == HDQT_CL_ICARL && c->memory < 1)
		return fail(err, errlen, "training", "memory", "iCaRL needs an exemplar memory >= 1");
	/* BiC's validation split and exemplars come from the memory too. */
	if (c->strategy == HDQT_CL_BIC && c->memory < 1)
		return fail(err, errlen, "training", "memory", "BiC needs an exemplar memory >= 1");
	if (c->window % 2)
		return fail(err, errlen, "model", "window", "must be even");
	if (hdqt_mode_is_hadanet(c->quant)) {
		hdqt_qconfig q;
		hdqt_qconfig_default(&q, c->quant);
		if (c->beta_w >= 0)
			q.beta_w = c->beta_w;
		if (c->beta_a >= 0)
			q.beta_a = c->beta_a;
		if (hdqt_qconfig_check(&q) < 0)
			return fail(err, errlen, "model", "beta_w",
				    "beta_w and beta_a must nest (one a multiple of the other, or 0)");
		if (c->n_hidden < 2)
			return fail(err, errlen, "model", "hidden",
				    "a HadaNets recipe binarises the inner layers: it needs two hidden layers");
	}
	if (c->max_write_queue < c->max_message)
		return fail(err, errlen, "daemon", "max_write_queue", "must be >= daemon.max_message");
	if (c->max_memory < c->max_message + c->max_write_queue)
		return fail(err, errlen, "daemon", "max_memory",
			    "must hold at least one client's max_message + max_write_queue");
	/* A cap that cannot hold two rounds of this model (the one kept free,
	 * and the model it replaces) never commits one: refused.  Under what
	 * store.keep_models versions take, hdqtd_config_warning says so. */
	if (c->max_bytes > 0 && c->max_bytes < 2 * hdqtd_config_round_bytes(c)) {
		char m[192];
		snprintf(m, sizeof(m), "too small for a round of this model, which adds about %lld bytes "
			 "(model.hidden, training.memory): give at least %lld",
			 (long long)hdqtd_config_round_bytes(c), (long long)(2 * hdqtd_config_round_bytes(c)));
		return fail(err, errlen, "store", "max_bytes", m);
	}
	return 0;
}

int hdqtd_config_warning(const hdqtd_config *c, char *msg, size_t len)
{
	/* keep_models versions and the newest rejected one, a round's room kept
	 * free (at least an eighth), and as much again for pending samples */
	const int64_t rb = hdqtd_config_round_bytes(c);
	const int64_t want = (int64_t)(c->keep_models + 2) * rb * 8 / 7 + rb;
	if (c->max_bytes > 0 && c->max_bytes < want) {
		snprintf(msg, len, "store.max_bytes = %lld holds fewer than store.keep_models = %d "
			 "versions of this model (about %lld bytes each, with their exemplars) and a "
			 "round's room: once they fill it, sample.add is refused until versions go; "
			 "give at least %lld, or keep fewer", (long long)c->max_bytes, c->keep_models,
			 (long long)rb, (long long)want);
		return 1;
	}
	return 0;
}

/* What a training round adds to the database, about: its model (the
 * configured layers, with up to 64 classes), its exemplars, the rest of
 * its row (novelty state, metrics) in 64 KB. */
int64_t hdqtd_config_round_bytes(const hdqtd_config *c)
{
	int64_t w = 0, in = HDQT_FEAT_DIM;
	for (int l = 0; l < c->n_hidden; l++) {
		w += in * c->hidden[l];
		in = c->hidden[l];
	}
	w += in * 64 + 2 * HDQT_FEAT_DIM;
	return 4 * w + (int64_t)c->memory * (4 * HDQT_FEAT_DIM + 64) + (64 << 10);
}

void hdqtd_config_store_opts(const hdqtd_config *c, hdqt_store_opts *o)
{
	hdqt_store_opts_default(o);
	o->sync_full = c->sync_full;
	o->max_bytes = c->max_bytes;
	o->max_pending_per_class = c->max_pending_per_class;
	o->keep_models = c->keep_models;
	o->keep_learned = 0;
	o->round_bytes = hdqtd_config_round_bytes(c);
	o->round_rows = c->max_round_samples;
}

cJSON *hdqtd_config_json(const hdqtd_config *c)
{
	cJSON *r = cJSON_CreateObject();
	cJSON *d = cJSON_AddObjectToObject(r, "daemon");
	cJSON *m = cJSON_AddObjectToObject(r, "model");
	cJSON *t = cJSON_AddObjectToObject(r, "training");
	cJSON *s = cJSON_AddObjectToObject(r, "store");
	cJSON *a = cJSON_AddObjectToObject(r, "access");
	cJSON *os = cJSON_AddObjectToObject(r, "open_set");
	if (!r || !d || !m || !t || !s || !a || !os) {
		cJSON_Delete(r);
		return NULL;
	}
	static const char *const lv[] = {"emerg", "alert", "crit", "err", "warning", "notice", "info",
					 "debug"};
	char mode[8], hidden[128] = "";
	snprintf(mode, sizeof(mode), "%04o", c->socket_mode);
	for (int i = 0, o = 0; i < c->n_hidden && o < (int)sizeof(hidden); i++)
		o += snprintf(hidden + o, sizeof(hidden) - o, "%s%d", i ? "," : "", c->hidden[i]);
	cJSON_AddStringToObject(d, "socket", c->socket);
	cJSON_AddStringToObject(d, "socket_mode", mode);
	cJSON_AddStringToObject(d, "database", c->db);
	cJSON_AddStringToObject(d, "log_level", lv[c->log_level & 7]);
	cJSON_AddNumberToObject(d, "max_connections", c->max_connections);
	cJSON_AddNumberToObject(d, "max_message", (double)c->max_message);
	cJSON_AddNumberToObject(d, "max_write_queue", (double)c->max_write_queue);
	cJSON_AddNumberToObject(d, "max_batch", c->max_batch);
	cJSON_AddNumberToObject(d, "max_rpc_batch", c->max_rpc_batch);
	cJSON_AddNumberToObject(d, "max_connections_per_uid", c->max_connections_per_uid);
	cJSON_AddNumberToObject(d, "admin_reserved", c->admin_reserved);
	cJSON_AddNumberToObject(d, "busy_poll_us", c->busy_poll_us);
	cJSON_AddNumberToObject(d, "idle_timeout", c->idle_timeout_s);
	cJSON_AddNumberToObject(d, "partial_timeout", c->partial_timeout_s);
	cJSON_AddNumberToObject(d, "write_timeout", c->write_timeout_s);
	cJSON_AddNumberToObject(d, "max_memory", (double)c->max_memory);
	cJSON_AddStringToObject(m, "hidden", hidden);
	cJSON_AddStringToObject(m, "quant", hdqt_mode_name(c->quant));
	cJSON_AddNumberToObject(m, "bits", c->bits);
	cJSON_AddNumberToObject(m, "acc_bits", c->acc_bits);
	cJSON_AddNumberToObject(m, "beta_w", c->beta_w);
	cJSON_AddNumberToObject(m, "beta_a", c->beta_a);
	cJSON_AddNumberToObject(m, "window", c->window);
	cJSON_AddNumberToObject(m, "norm_clip", c->norm_clip);
	cJSON_AddNumberToObject(m, "seed", (double)c->seed);
	cJSON_AddStringToObject(t, "strategy", hdqt_cl_method_name(c->strategy));
	cJSON_AddNumberToObject(t, "memory", c->memory);
	cJSON_AddNumberToObject(t, "epochs", c->epochs);
	cJSON_AddNumberToObject(t, "batch", c->batch);
	cJSON_AddNumberToObject(t, "threads", c->threads);
	cJSON_AddNumberToObject(t, "lr", c->lr);
	cJSON_AddBoolToObject(t, "auto", c->auto_train);
	cJSON_AddNumberToObject(t, "auto_min_samples", c->auto_min_samples);
	cJSON_AddNumberToObject(t, "auto_interval", c->auto_interval_s);
	cJSON_AddNumberToObject(t, "max_round_samples", c->max_round_samples);
	cJSON_AddNumberToObject(t, "holdout_every", c->holdout_every);
	cJSON_AddNumberToObject(t, "validation_per_class", c->validation_per_class);
	cJSON_AddNumberToObject(t, "regression_margin", c->regression_margin);
	cJSON_AddStringToObject(s, "sync", c->sync_full ? "full" : "normal");
	cJSON_AddNumberToObject(s, "max_bytes", (double)c->max_bytes);
	cJSON_AddNumberToObject(s, "max_pending_per_class", c->max_pending_per_class);
	cJSON_AddNumberToObject(s, "keep_models", c->keep_models);
	cJSON_AddStringToObject(a, "admin_group", c->admin_group);
	cJSON_AddStringToObject(os, "score", hdqt_novelty_kind_name((hdqt_novelty_kind)c->novelty_kind));
	cJSON_AddNumberToObject(os, "unknown_rate", c->unknown_rate);
	cJSON_AddNumberToObject(os, "keep_unknowns", c->keep_unknowns);
	cJSON_AddNumberToObject(os, "alert_count", c->alert_count);
	cJSON_AddNumberToObject(os, "alert_interval", c->alert_interval_s);
	cJSON_AddNumberToObject(os, "group_similarity", c->group_similarity);
	return r;
}
