/* SPDX-License-Identifier: MIT */
/*
 * hdqt-sensor: stream raw inertial readings to hdqtd.
 *
 * Reads rows "ax,ay,az,gx,gy,gz" (CSV or gzipped CSV files, or stdin),
 * cuts windows with the same extractor the daemon and hdqt-eval use, and
 * either sends them as labelled samples (--send) or asks for predictions
 * (--predict, with a running accuracy when the true labels are known).
 * Labels come from a constant --label or an HAPT-style labels file
 * (exp,user,activity,start,end; windows lie inside one labelled segment,
 * exactly as lib/dataset.c cuts them).  --rate replays at the recorded
 * 50 Hz; the default is as fast as possible.  A request that fails for a
 * reason that may pass (hdqtd restarting, busy, database locked) is sent
 * again with backoff for up to --retry-max seconds, so no sample is lost
 * when the daemon restarts; one that can never pass (unknown class, over
 * daemon.max_message, ...) ends the run with status 1 (call_retry).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "hdqt.h"
#include "hdqt_client.h"
#include "hdqt_data.h"
#include "hdqt_proto.h"

#define MAX_SEGS 4096
#define NAME_MAX_LEN 64 /* = HDQT_CLASS_NAME_MAX */
#define MAX_NAMES 64
#define MAX_BATCH 4096  /* --batch upper bound = the daemon's default daemon.max_batch */

typedef struct seg { int exp, act, a, b; } seg; /* 0-based inclusive rows */

typedef struct opts {
	const char *sock;
	int predict;
	const char *label;
	const char *labels_path, *activities_path;
	int exp;               /* -1: from the file name */
	char classes[MAX_NAMES][NAME_MAX_LEN + 1];
	int n_classes;         /* filter (0 = all) */
	double rate;           /* readings per second; 0 = as fast as possible */
	int window, hop, batch;
	int quiet, json;
	double retry_s;        /* --retry-max (--retry: its old name) */
} opts;

typedef struct state {
	opts o;
	hdqt_client *cl;
	hdqt_feat *feat;
	seg segs[MAX_SEGS];
	int n_segs;
	char names[MAX_NAMES][NAME_MAX_LEN + 1];  /* activity id -> name */
	/* pending batch */
	cJSON *items;
	char truth[MAX_BATCH][NAME_MAX_LEN + 1]; /* one per item: --batch is at most MAX_BATCH */
	double when[MAX_BATCH];
	int n_items;
	/* batch ids: "<host>-<pid>-<start, ns since the epoch>-<sequence>" */
	char id_prefix[48];
	unsigned long long batch_seq;
	/* figures */
	long windows, sent, duplicates, predicted, correct, labelled;
	long per_hit[MAX_NAMES], per_n[MAX_NAMES];
	double t0;
} state;

static volatile sig_atomic_t stop;
static void on_sig(int s) { (void)s; stop = 1; }

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: hdqt-sensor [--socket PATH] (--send | --predict) [options] [FILE...]\n"
		"  FILE               raw readings ax,ay,az,gx,gy,gz (.csv or .csv.gz; - or none: stdin)\n"
		"  --send             send labelled windows as samples\n"
		"  --predict          ask for predictions (accuracy when labels are known)\n"
		"  --label NAME       every window has this class\n"
		"  --labels FILE      HAPT labels (exp,user,activity,start,end); names from\n"
		"                     activities.csv beside it or --activities FILE\n"
		"  --exp N            experiment of the input (default: from expNN_ in its name)\n"
		"  --classes A,B,...  only windows of these classes\n"
		"  --rate HZ|max      replay at HZ readings per second (HAPT: 50; default max)\n"
		"  --window N --hop N window length and hop in readings (128, 64)\n"
		"  --batch N          windows per request (default 64; 1 with --rate)\n"
		"  --retry-max SEC    resend a failed request for at most SEC seconds when the\n"
		"                     failure may pass (hdqtd away, busy, locked); 0: never (60)\n"
		"  --quiet            only the summary;  --json  the summary as JSON\n");
}

/* ---- labels ---- */

static int load_labels(state *s)
{
	FILE *f = fopen(s->o.labels_path, "r");
	if (!f) {
		fprintf(stderr, "hdqt-sensor: %s: %s\n", s->o.labels_path, strerror(errno));
		return -1;
	}
	char line[256];
	while (fgets(line, sizeof(line), f)) {
		int e, u, a, st, en;
		if (sscanf(line, "%d,%d,%d,%d,%d", &e, &u, &a, &st, &en) != 5)
			continue; /* header */
		if (s->n_segs == MAX_SEGS || a < 0 || a >= MAX_NAMES) {
			fprintf(stderr, "hdqt-sensor: %s: too many segments or bad activity\n",
				s->o.labels_path);
			fclose(f);
			return -1;
		}
		s->segs[s->n_segs++] = (seg){e, a, st - 1, en - 1};
	}
	fclose(f);
	char ap[4096];
	if (s->o.activities_path)
		snprintf(ap, sizeof(ap), "%s", s->o.activities_path);
	else {
		snprintf(ap, sizeof(ap), "%s", s->o.labels_path);
		char *slash = strrchr(ap, '/');
		snprintf(slash ? slash + 1 : ap, sizeof(ap) - (size_t)(slash ? slash + 1 - ap : 0),
			 "activities.csv");
	}
	for (int i = 0; i < MAX_NAMES; i++)
		snprintf(s->names[i], sizeof(s->names[i]), "activity%d", i);
	f = fopen(ap, "r");
	if (f) {
		while (fgets(line, sizeof(line), f)) {
			int id;
			char name[128];
			if (sscanf(line, "%d,%127[^\r\n]", &id, name) == 2 && id >= 0 && id < MAX_NAMES)
				snprintf(s->names[id], sizeof(s->names[id]), "%.64s", name);
		}
		fclose(f);
	} else if (s->o.activities_path) {
		fprintf(stderr, "hdqt-sensor: %s: %s\n", ap, strerror(errno));
		return -1;
	}
	return 0;
}

static int wanted(const state *s, const char *name)
{
	if (s->o.n_classes == 0)
		return 1;
	for (int i = 0; i < s->o.n_classes; i++)
		if (!strcmp(s->o.classes[i], name))
			return 1;
	return 0;
}

/* ---- talking to hdqtd ---- */

static const char *sock_name(const state *s)
{
	return s->o.sock ? s->o.sock : hdqt_client_default_socket();
}

/* Whether a failed call may pass if sent again later.  Transport failures
 * (nothing listening, connection lost, no reply in time) and the daemon's
 * transient states are; errors about the request itself repeat forever, so
 * they are reported once and end the run (exit status 1).  A request over
 * daemon.max_message (-32009) is one of those: a smaller --batch fits.
 * -32005 is a configured limit: the pending cap clears after a round, but
 * a batch over daemon.max_batch never passes (the daemon's message names
 * the limit; if the wording changes, the bounded retry still ends). */
static int retryable(int rc, const char *msg)
{
	switch (rc) {
	case HDQT_EIO:       /* cannot connect, connection lost, EOF */
	case HDQT_ECANCELED: /* no reply within the timeout */
	case HDQT_RPC_STORAGE:
	case HDQT_RPC_SHUTTING_DOWN:
	case HDQT_RPC_BUSY:
	case HDQT_RPC_TOO_MANY_CONNECTIONS:
	case HDQT_RPC_INTERNAL_ERROR: /* out of memory in hdqtd */
		return 1;
	case HDQT_RPC_LIMIT:
		return !strstr(msg, "max_batch");
	default: /* parse/invalid request/params, unknown class, forbidden, too large, ... */
		return 0;
	}
}

/* Whether the connection is still usable after this failure. */
static int keeps_connection(int rc)
{
	return rc == HDQT_RPC_STORAGE || rc == HDQT_RPC_BUSY || rc == HDQT_RPC_LIMIT ||
	       rc == HDQT_RPC_INTERNAL_ERROR;
}

/* Sleep up to sec, in short steps so that SIGINT/SIGTERM end it early. */
static void nap(double sec)
{
	double until = now_s() + sec;
	while (!stop) {
		double left = until - now_s();
		if (left <= 0)
			break;
		struct timespec ts = {0, (long)(1e9 * (left < 0.1 ? left : 0.1))};
		nanosleep(&ts, NULL);
	}
}

/* Call method, sending the same request again after a retryable failure
 * (reconnecting when the connection is gone) with exponential backoff:
 * 100 ms doubling to 5 s, each wait drawn from its upper half (jitter, so
 * that sensors that lost the same daemon do not come back in step), for at
 * most --retry-max seconds from the first failure (0: no retry).
 *
 * A resend is not idempotent by itself: when a reply is lost (daemon
 * killed after its commit, timeout), the batch may already be stored.
 * sample.add requests carry a batch_id (flush), which hdqtd uses to store
 * the batch once and to answer the resend with "duplicate": true; a daemon
 * without batch ids ignores it and may store such a batch twice.
 * params is kept by the caller.  Returns 0 or the last error (< 0). */
static int call_retry(state *s, const char *method, const cJSON *params, cJSON **res)
{
	double deadline = 0, delay = 0.1;
	int failures = 0;
	for (;;) {
		int rc;
		char why[400];
		if (!s->cl && (rc = hdqt_client_connect(&s->cl, s->o.sock, 120000)) < 0) {
			if (rc != HDQT_EIO) { /* a bad socket path, out of memory */
				fprintf(stderr, "hdqt-sensor: cannot connect to hdqtd at %s: %s\n",
					sock_name(s), hdqt_strerror(rc));
				return rc;
			}
			snprintf(why, sizeof(why), "cannot connect to hdqtd at %s: %s", sock_name(s),
				 strerror(errno));
		} else {
			rc = hdqt_client_call(s->cl, method, cJSON_Duplicate(params, 1), res);
			if (rc == 0) {
				if (failures)
					fprintf(stderr, "hdqt-sensor: reconnected to %s; %s sent\n",
						sock_name(s), method);
				return 0;
			}
			snprintf(why, sizeof(why), "%s", hdqt_client_errmsg(s->cl));
		}
		if (!retryable(rc, why)) {
			fprintf(stderr, "hdqt-sensor: %s: %s (%s; not retried)%s\n", method, why,
				rc < -1000 ? hdqt_rpc_code_name(rc) : hdqt_strerror(rc),
				rc == HDQT_RPC_TOO_LARGE || rc == HDQT_RPC_LIMIT
					? "; a smaller --batch may fit" : "");
			return rc;
		}
		if (s->cl && !keeps_connection(rc)) {
			hdqt_client_close(s->cl);
			s->cl = NULL;
		}
		double now = now_s();
		if (!failures++)
			deadline = now + s->o.retry_s;
		if (stop || now >= deadline) {
			fprintf(stderr, "hdqt-sensor: %s: %s; giving up%s\n", method, why,
				s->o.retry_s > 0 ? " (--retry-max reached)" : " (--retry-max 0)");
			return rc;
		}
		double wait = delay * (0.5 + 0.5 * drand48());
		if (wait > deadline - now)
			wait = deadline - now;
		fprintf(stderr, "hdqt-sensor: %s: %s; retrying in %.1f s\n", method, why, wait);
		nap(wait);
		delay = delay * 2 > 5.0 ? 5.0 : delay * 2;
	}
}

/* The prefix of this run's batch ids: unique per host and run (pid and start
 * time), made of printable ASCII only (the host name is filtered and cut so
 * that the whole id fits in HDQT_CLIENT_BATCH_ID_MAX bytes). */
static void batch_id_init(state *s)
{
	char host[256] = "";
	if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
		snprintf(host, sizeof(host), "host");
	host[15] = '\0';
	for (char *p = host; *p; p++)
		if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
			*p = '_';
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	/* 15 + 1 + 7 (pid_max 2^22) + 1 + 19 + 1 = 44 bytes, 20 left for the sequence */
	snprintf(s->id_prefix, sizeof(s->id_prefix), "%s-%d-%lld", host, (int)getpid(),
		 (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
}

/* Send the pending batch.  A sample.add batch gets the next batch id here,
 * once: every resend by call_retry carries the same id, so hdqtd stores the
 * batch once even when an acknowledgement was lost ("duplicate": true). */
static int flush(state *s)
{
	if (s->n_items == 0)
		return 0;
	cJSON *params = cJSON_CreateObject();
	cJSON_AddItemToObject(params, s->o.predict ? "inputs" : "samples", s->items);
	s->items = cJSON_CreateArray();
	if (!s->o.predict) {
		char id[HDQT_CLIENT_BATCH_ID_MAX + 1];
		snprintf(id, sizeof(id), "%s-%llu", s->id_prefix, ++s->batch_seq);
		cJSON_AddStringToObject(params, "batch_id", id);
	}
	cJSON *res = NULL;
	int rc = call_retry(s, s->o.predict ? "predict" : "sample.add", params, &res);
	cJSON_Delete(params);
	if (rc < 0)
		return rc;
	if (!s->o.predict) {
		s->sent += s->n_items;
		if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(res, "duplicate")))
			s->duplicates++;
	} else {
		const cJSON *p;
		int i = 0;
		cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(res, "predictions")) {
			const cJSON *k = cJSON_GetObjectItemCaseSensitive(p, "class");
			const cJSON *cf = cJSON_GetObjectItemCaseSensitive(p, "confidence");
			const char *got = cJSON_IsString(k) ? k->valuestring : "?";
			s->predicted++;
			const char *truth = s->truth[i];
			if (*truth) {
				s->labelled++;
				int hit = !strcmp(got, truth);
				s->correct += hit;
				for (int a = 0; a < MAX_NAMES; a++)
					if (!strcmp(s->names[a], truth)) {
						s->per_n[a]++;
						s->per_hit[a] += hit;
					}
			}
			if (!s->o.quiet && !s->o.json) {
				printf("t=%7.2fs  %-20s %5.1f%%", s->when[i], got,
				       cJSON_IsNumber(cf) ? 100 * cf->valuedouble : 0.0);
				if (*truth)
					printf("  true %-20s %s  running accuracy %.1f%% (%ld)", truth,
					       strcmp(got, truth) ? "x" : "ok",
					       100.0 * s->correct / s->labelled, s->labelled);
				printf("\n");
				fflush(stdout);
			}
			i++;
		}
	}
	cJSON_Delete(res);
	s->n_items = 0;
	return 0;
}

static int emit(state *s, const float *rows, long end_row, const char *truth)
{
	float f[HDQT_FEAT_DIM];
	/* hdqtd refuses a batch with one implausible window in it, and a
	 * refusal ends the run: such a window is skipped here instead, as one
	 * that is not finite is.  The daemon checks readings only in raw
	 * windows, so without this check a glitch (5000 g) went in as features. */
	const int W = s->o.window;
	for (int i = 0; i < W * 6; i++)
		if (isfinite(rows[i]) && fabsf(rows[i]) > HDQT_RPC_READING_MAX) {
			fprintf(stderr, "hdqt-sensor: window ending at reading %ld: reading %ld column %d = %g "
				"is outside the plausible range +-%g (skipped)\n", end_row + 1,
				end_row - W + 2 + i / 6, i % 6 + 1, (double)rows[i], HDQT_RPC_READING_MAX);
			return 0;
		}
	int rc = hdqt_feat_extract(s->feat, rows, f);
	for (int i = 0; rc == 0 && i < HDQT_FEAT_DIM; i++)
		if (!(fabsf(f[i]) <= HDQT_RPC_FEATURE_MAX))
			rc = HDQT_ERANGE;
	if (rc < 0) {
		fprintf(stderr, "hdqt-sensor: window ending at reading %ld: %s (skipped)\n", end_row + 1,
			hdqt_strerror(rc));
		return 0;
	}
	s->windows++;
	/* features_f32: the exact floats, a third of the bytes of decimals,
	 * and no decimal parsing in hdqtd (PROTOCOL.md, "Inputs"). */
	char *b64 = hdqt_rpc_f32_encode(f, HDQT_FEAT_DIM);
	cJSON *o = cJSON_CreateObject();
	if (!b64 || !o || (!s->o.predict && !cJSON_AddStringToObject(o, "class", truth)) ||
	    !cJSON_AddStringToObject(o, "features_f32", b64) || !cJSON_AddItemToArray(s->items, o)) {
		free(b64);
		cJSON_Delete(o);
		fprintf(stderr, "hdqt-sensor: out of memory\n");
		return -1;
	}
	free(b64);
	snprintf(s->truth[s->n_items], sizeof(s->truth[0]), "%s", truth ? truth : "");
	s->when[s->n_items] = s->o.rate > 0 ? (double)(end_row + 1) / s->o.rate : (double)(end_row + 1) / 50.0;
	s->n_items++;
	return s->n_items >= s->o.batch ? flush(s) : 0;
}

/* ---- reading ---- */

static int exp_of(const char *path)
{
	const char *b = strrchr(path, '/');
	b = b ? b + 1 : path;
	int e;
	return sscanf(b, "exp%d_", &e) == 1 ? e : -1;
}

static int run_file(state *s, const char *path)
{
	const int W = s->o.window, hop = s->o.hop;
	int exp = s->o.exp >= 0 ? s->o.exp : exp_of(path);
	if (s->o.labels_path && exp < 0) {
		fprintf(stderr, "hdqt-sensor: %s: give --exp N (the name has no expNN_)\n", path);
		return -1;
	}
	gzFile g = strcmp(path, "-") ? gzopen(path, "rb") : gzdopen(dup(0), "rb");
	if (!g) {
		fprintf(stderr, "hdqt-sensor: %s: %s\n", path, strerror(errno));
		return -1;
	}
	float *ring = malloc(sizeof(float) * (size_t)W * 6), *win = malloc(sizeof(float) * (size_t)W * 6);
	if (!ring || !win) {
		gzclose(g);
		free(ring);
		free(win);
		return -1;
	}
	char line[512];
	long r = 0;
	int lineno = 0, rc = 0, nmine = 0;
	/* This experiment's segments. */
	static seg mine[MAX_SEGS];
	for (int k = 0; k < s->n_segs; k++)
		if (s->segs[k].exp == exp)
			mine[nmine++] = s->segs[k];
	double t0 = now_s();
	while (!stop && gzgets(g, line, sizeof(line))) {
		lineno++;
		float v[6];
		if (sscanf(line, "%f,%f,%f,%f,%f,%f", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6) {
			if (lineno == 1)
				continue; /* header */
			fprintf(stderr, "hdqt-sensor: %s:%d: expected 6 numbers (skipped)\n", path, lineno);
			continue;
		}
		memcpy(ring + (size_t)(r % W) * 6, v, sizeof(v));
		if (s->o.rate > 0) {
			double due = t0 + (double)r / s->o.rate, now = now_s();
			if (due > now)
				usleep((useconds_t)((due - now) * 1e6));
		}
		long start = r - W + 1;
		const char *truth = NULL;
		int take = 0;
		if (start >= 0) {
			if (s->o.labels_path) {
				for (int k = 0; k < nmine; k++) {
					const seg *g2 = &mine[k];
					if (start >= g2->a && r <= g2->b &&
					    (start - g2->a) % hop == 0) {
						truth = s->names[g2->act];
						take = 1;
						break;
					}
				}
				if (!take && s->o.predict && start % hop == 0)
					take = 1; /* unlabelled stretch: predicted, not scored */
			} else {
				take = start % hop == 0;
				truth = s->o.label;
			}
		}
		if (take && truth && !wanted(s, truth))
			take = 0;
		if (take && !truth && (s->o.n_classes > 0 || !s->o.predict))
			take = 0;
		if (take) {
			for (int k = 0; k < W; k++)
				memcpy(win + (size_t)k * 6, ring + (size_t)((start + k) % W) * 6,
				       sizeof(float) * 6);
			if ((rc = emit(s, win, r, truth)) < 0)
				break;
		}
		r++;
	}
	if (rc == 0)
		rc = flush(s);
	gzclose(g);
	free(ring);
	free(win);
	return rc;
}

/* A whole number or a finite decimal in [lo, hi], or -1 and a message. */
static int num_arg(const char *opt, const char *v, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double x = strtod(v, &end);
	if (errno || end == v || *end || !isfinite(x) || x < lo || x > hi) {
		fprintf(stderr, "hdqt-sensor: %s expects a number from %g to %g, not '%s'\n", opt, lo, hi, v);
		return -1;
	}
	*out = x;
	return 0;
}

static int parse_classes(opts *o, const char *list)
{
	char buf[4096];
	snprintf(buf, sizeof(buf), "%s", list);
	char *save = NULL;
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (o->n_classes == MAX_NAMES || strlen(t) > NAME_MAX_LEN)
			return -1;
		snprintf(o->classes[o->n_classes++], NAME_MAX_LEN + 1, "%s", t);
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{"socket", required_argument, NULL, 's'},  {"send", no_argument, NULL, 'S'},
		{"predict", no_argument, NULL, 'P'},       {"label", required_argument, NULL, 'l'},
		{"labels", required_argument, NULL, 'L'},  {"activities", required_argument, NULL, 'A'},
		{"exp", required_argument, NULL, 'e'},     {"classes", required_argument, NULL, 'c'},
		{"rate", required_argument, NULL, 'r'},    {"window", required_argument, NULL, 'w'},
		{"hop", required_argument, NULL, 'H'},     {"batch", required_argument, NULL, 'b'},
		{"retry-max", required_argument, NULL, 'R'}, {"retry", required_argument, NULL, 'R'},
		{"quiet", no_argument, NULL, 'q'},
		{"json", no_argument, NULL, 'j'},          {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	static state st;
	state *s = &st;
	opts *o = &s->o;
	o->exp = -1;
	o->window = 128;
	o->hop = 64;
	o->batch = 0;
	o->retry_s = 60;
	int mode = 0, c;
	double x;
	while ((c = getopt_long(argc, argv, "s:h", lo, NULL)) != -1) {
		switch (c) {
		case 's': o->sock = optarg; break;
		case 'S': mode |= 1; break;
		case 'P': mode |= 2; o->predict = 1; break;
		case 'l': o->label = optarg; break;
		case 'L': o->labels_path = optarg; break;
		case 'A': o->activities_path = optarg; break;
		case 'e':
			if (num_arg("--exp", optarg, 0, 1e6, &x) < 0)
				return 2;
			o->exp = (int)x;
			break;
		case 'c':
			if (parse_classes(o, optarg) < 0) {
				fprintf(stderr, "hdqt-sensor: --classes: too many or too long names\n");
				return 2;
			}
			break;
		case 'r':
			if (strcmp(optarg, "max") == 0)
				o->rate = 0;
			else if (num_arg("--rate", optarg, 0.001, 1e7, &o->rate) < 0)
				return 2;
			break;
		case 'w':
			if (num_arg("--window", optarg, 16, 4096, &x) < 0)
				return 2;
			o->window = (int)x;
			break;
		case 'H':
			if (num_arg("--hop", optarg, 1, 1e6, &x) < 0)
				return 2;
			o->hop = (int)x;
			break;
		case 'b':
			if (num_arg("--batch", optarg, 1, MAX_BATCH, &x) < 0)
				return 2;
			o->batch = (int)x;
			break;
		case 'R':
			if (num_arg("--retry-max", optarg, 0, 1e6, &o->retry_s) < 0)
				return 2;
			break;
		case 'q': o->quiet = 1; break;
		case 'j': o->json = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (mode != 1 && mode != 2) {
		fprintf(stderr, "hdqt-sensor: give exactly one of --send or --predict\n");
		return 2;
	}
	if (!o->predict && !o->label && !o->labels_path) {
		fprintf(stderr, "hdqt-sensor: --send needs --label NAME or --labels FILE\n");
		return 2;
	}
	if (o->hop < 1 || o->rate < 0 || o->batch < 0 || o->batch > MAX_BATCH) {
		fprintf(stderr, "hdqt-sensor: --hop, --rate or --batch out of range\n");
		return 2;
	}
	if (o->batch == 0)
		o->batch = o->rate > 0 ? 1 : 64;
	if (hdqt_feat_new(&s->feat, o->window) < 0) {
		fprintf(stderr, "hdqt-sensor: --window must be even, 16..4096\n");
		return 2;
	}
	if (o->labels_path && load_labels(s) < 0)
		return 2;
	signal(SIGINT, on_sig);
	signal(SIGTERM, on_sig);
	signal(SIGPIPE, SIG_IGN);
	s->items = cJSON_CreateArray();
	s->t0 = now_s();
	batch_id_init(s);
	srand48((long)getpid() ^ (long)time(NULL)); /* backoff jitter only */
	int rc = 0;
	if (optind >= argc)
		rc = run_file(s, "-");
	for (int i = optind; i < argc && rc == 0 && !stop; i++)
		rc = run_file(s, argv[i]);
	double dt = now_s() - s->t0;
	double acc = s->labelled ? 100.0 * s->correct / s->labelled : -1;
	if (o->json) {
		char accs[32] = "null";
		if (acc >= 0)
			snprintf(accs, sizeof(accs), "%.2f", acc);
		printf("{\"windows\":%ld,\"sent\":%ld,\"duplicate_batches\":%ld,\"predicted\":%ld,"
		       "\"labelled\":%ld,\"accuracy\":%s,\"seconds\":%.2f,\"per_class\":{",
		       s->windows, s->sent, s->duplicates, s->predicted, s->labelled, accs, dt);
		int first = 1;
		for (int a = 0; a < MAX_NAMES; a++)
			if (s->per_n[a]) {
				printf("%s\"%s\":%.2f", first ? "" : ",", s->names[a],
				       100.0 * s->per_hit[a] / s->per_n[a]);
				first = 0;
			}
		printf("}}\n");
	} else if (o->predict) {
		printf("%ld windows predicted in %.1f s", s->predicted, dt);
		if (acc >= 0)
			printf(", accuracy %.2f%% on %ld labelled windows", acc, s->labelled);
		printf("\n");
	} else {
		printf("%ld samples sent in %.1f s (%.0f/s)\n", s->sent, dt, dt > 0 ? s->sent / dt : 0);
	}
	cJSON_Delete(s->items);
	hdqt_client_close(s->cl);
	hdqt_feat_free(s->feat);
	return rc < 0 ? (rc < -1000 ? 1 : 3) : 0;
}
