/* SPDX-License-Identifier: MIT */
/*
 * hdqtctl: inspect and steer hdqtd from a shell.  Every protocol method is
 * a subcommand; output is for people by default and JSON with --json.
 *
 * Exit status: 0 success, 1 hdqtd answered with an error, 2 usage,
 * 3 cannot reach hdqtd, 4 a waited-for training round was not accepted.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "hdqt.h"
#include "hdqt_client.h"
#include "hdqt_data.h"
#include "hdqt_proto.h"

enum { EXIT_RPC = 1, EXIT_USAGE = 2, EXIT_CONNECT = 3, EXIT_ROUND = 4 };

static int json_out;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: hdqtctl [--socket PATH] [--json] [--timeout SEC] COMMAND [ARGS]\n"
		"\n"
		"commands:\n"
		"  status                      daemon, model, classes and training state\n"
		"  classes                     the classes with pending samples and accuracy\n"
		"  add-class NAME...           announce new classes\n"
		"  remove-class NAME           deactivate a class\n"
		"  add-sample [--batch-id ID] CLASS [F,F,...]\n"
		"                              one sample of 166 features (or CSV lines on stdin),\n"
		"                              stored once under ID when given (resend-safe)\n"
		"  predict [F,F,...]           classify features (or CSV lines on stdin)\n"
		"  predict --window FILE       classify the first window of a raw CSV (ax..gz)\n"
		"  train [--wait]              start a round (and follow it to the end)\n"
		"  cancel                      cancel the running round\n"
		"  models                      stored model versions\n"
		"  rollback VERSION            make a stored version current\n"
		"  watch [--count N]           print events as they happen\n"
		"  config                      the configuration in effect\n"
		"  describe                    the protocol's machine-readable description\n"
		"  export FILE                 write the current model as a bundle (docs/bundle.md)\n"
		"  import FILE [--remap]       load a bundle as a new model version (--remap: give\n"
		"                              its classes this box's labels instead of refusing)\n"
		"  backup FILE                 a consistent copy of the database (restore: see\n"
		"                              docs/operator-guide.md)\n"
		"  metrics [--prometheus]      counters and histograms (Prometheus text format)\n"
		"  unknowns                    windows called unknown, grouped (largest first)\n"
		"  unknowns promote GROUP CLASS  make a group's windows samples of CLASS (created\n"
		"                              if missing); the next round learns them\n"
		"  unknowns drop GROUP|all     delete unknown windows\n"
		"  call METHOD [JSON]          any method with raw JSON params\n"
		"\n"
		"The socket is --socket, else $HDQTD_SOCKET, else /run/hdqtd/hdqtd.sock.\n"
		"Exit status: 0 ok, 1 hdqtd returned an error, 2 usage, 3 cannot connect,\n"
		"4 train --wait ended without a new current model.\n");
}

static void print_json(const cJSON *j)
{
	char *s = cJSON_Print(j);
	if (s) {
		puts(s);
		free(s);
	}
}

static int rpc(hdqt_client *c, const char *method, cJSON *params, cJSON **res)
{
	int rc = hdqt_client_call(c, method, params, res);
	if (rc < 0) {
		fprintf(stderr, "hdqtctl: %s: %s\n", method, hdqt_client_errmsg(c));
		/* HDQT_ERANGE/EINVAL: refused by the library before sending (NaN, ...) */
		return rc < -1000 ? EXIT_RPC
		       : rc == HDQT_ERANGE || rc == HDQT_EINVAL ? EXIT_USAGE : EXIT_CONNECT;
	}
	return 0;
}

static double num(const cJSON *o, const char *k, double def)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsNumber(v) ? v->valuedouble : def;
}

static const char *str(const cJSON *o, const char *k, const char *def)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(v) ? v->valuestring : def;
}

static void print_classes(const cJSON *classes)
{
	printf("%-5s %-24s %-8s %8s %9s\n", "label", "class", "state", "pending", "accuracy");
	const cJSON *k;
	cJSON_ArrayForEach(k, classes) {
		const cJSON *acc = cJSON_GetObjectItemCaseSensitive(k, "validation_accuracy");
		char a[16] = "-";
		if (cJSON_IsNumber(acc))
			snprintf(a, sizeof(a), "%.1f%%", acc->valuedouble);
		printf("%-5d %-24s %-8s %8.0f %9s\n", (int)num(k, "label", -1), str(k, "name", "?"),
		       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(k, "active")) ? "active" : "removed",
		       num(k, "samples_pending", 0), a);
	}
}

static int cmd_status(hdqt_client *c)
{
	cJSON *r;
	int rc = rpc(c, "status", NULL, &r);
	if (rc)
		return rc;
	if (json_out) {
		print_json(r);
	} else {
		const cJSON *mv = cJSON_GetObjectItemCaseSensitive(r, "model_version");
		const cJSON *tr = cJSON_GetObjectItemCaseSensitive(r, "training");
		const cJSON *va = cJSON_GetObjectItemCaseSensitive(r, "validation_accuracy");
		printf("hdqtd %s, up %.0f s, %s %s, kernel %s\n", str(r, "version", "?"),
		       num(r, "uptime_s", 0), str(r, "quant", "?"), str(r, "strategy", "?"),
		       str(r, "kernel", "?"));
		if (cJSON_IsNumber(mv))
			printf("model: version %d", mv->valueint);
		else
			printf("model: none yet");
		if (cJSON_IsNumber(va))
			printf(", validation accuracy %.2f%%", va->valuedouble);
		printf("\nsamples pending: %.0f, exemplars: %.0f, validation samples: %.0f, clients: %.0f\n",
		       num(r, "samples_pending", 0), num(r, "exemplars", 0),
		       num(r, "validation_samples", 0), num(r, "connections", 0));
		printf("training: %s", str(tr, "state", "?"));
		if (strcmp(str(tr, "state", ""), "idle") != 0)
			printf(" (round %.0f, epoch %.0f/%.0f)", num(tr, "round", 0), num(tr, "epoch", 0),
			       num(tr, "epochs", 0));
		printf(", %.0f rounds since start, auto %s\n", num(tr, "rounds", 0),
		       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(tr, "auto")) ? "on" : "off");
		print_classes(cJSON_GetObjectItemCaseSensitive(r, "classes"));
	}
	cJSON_Delete(r);
	return 0;
}

static int cmd_simple(hdqt_client *c, const char *method, cJSON *params, void (*show)(const cJSON *))
{
	cJSON *r;
	int rc = rpc(c, method, params, &r);
	if (rc)
		return rc;
	if (json_out || !show)
		print_json(r);
	else
		show(r);
	cJSON_Delete(r);
	return 0;
}

static void show_classes(const cJSON *r)
{
	print_classes(cJSON_GetObjectItemCaseSensitive(r, "classes"));
}

static void show_class(const cJSON *r)
{
	printf("%s: label %.0f, %s\n", str(r, "name", "?"), num(r, "label", -1),
	       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "active")) ? "active" : "removed");
}

static void show_models(const cJSON *r)
{
	printf("%-8s %-20s %-8s %9s %8s %s\n", "version", "created", "current", "accuracy", "samples",
	       "bytes");
	const cJSON *m;
	cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(r, "models")) {
		time_t t = (time_t)num(m, "created", 0);
		char when[32];
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&t));
		const cJSON *met = cJSON_GetObjectItemCaseSensitive(m, "metrics");
		printf("%-8.0f %-20s %-8s %8.2f%% %8.0f %.0f\n", num(m, "version", 0), when,
		       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "current")) ? "yes" : "",
		       num(met, "validation_accuracy", NAN), num(met, "train_samples", 0),
		       num(m, "bytes", 0));
	}
}

static void show_unknowns(const cJSON *r)
{
	printf("%.0f unknown windows (%.0f grouped under model %.0f)\n", num(r, "unknowns", 0),
	       num(r, "grouped", 0), num(r, "model_version", 0));
	printf("%-8s %6s %-20s %-20s %8s  %s\n", "group", "size", "first seen", "last seen", "novelty",
	       "closest class");
	const cJSON *g;
	cJSON_ArrayForEach(g, cJSON_GetObjectItemCaseSensitive(r, "groups")) {
		char a[32], b[32];
		time_t t0 = (time_t)num(g, "first_seen", 0), t1 = (time_t)num(g, "last_seen", 0);
		strftime(a, sizeof(a), "%Y-%m-%d %H:%M:%S", localtime(&t0));
		strftime(b, sizeof(b), "%Y-%m-%d %H:%M:%S", localtime(&t1));
		printf("%-8.0f %6.0f %-20s %-20s %8.4f  %s\n", num(g, "group", 0), num(g, "size", 0), a, b,
		       num(g, "mean_novelty", 0), str(g, "closest_class", "-"));
	}
}

static void show_promoted(const cJSON *r)
{
	printf("%.0f windows are now pending samples of %s class %s (label %.0f); %.0f unknown "
	       "windows left\n", num(r, "samples", 0),
	       cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "created")) ? "the new" : "",
	       str(r, "class", "?"), num(r, "label", -1), num(r, "unknowns", 0));
}

static void show_dropped(const cJSON *r)
{
	printf("%.0f windows dropped; %.0f unknown windows left\n", num(r, "dropped", 0),
	       num(r, "unknowns", 0));
}

/* unknowns [promote GROUP CLASS | drop GROUP|all] */
static int cmd_unknowns(hdqt_client *c, int argc, char **argv, int i)
{
	if (i >= argc)
		return cmd_simple(c, "unknowns.list", NULL, show_unknowns);
	const int promote = !strcmp(argv[i], "promote"), drop = !strcmp(argv[i], "drop");
	char *end = NULL;
	const long g = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : 0;
	const int all = drop && i + 1 < argc && !strcmp(argv[i + 1], "all");
	if ((!promote && !drop) || argc != i + (promote ? 3 : 2) || (!all && (*end || g < 1))) {
		fprintf(stderr, "hdqtctl: usage: hdqtctl unknowns [promote GROUP CLASS | drop GROUP|all]\n");
		return EXIT_USAGE;
	}
	cJSON *p = cJSON_CreateObject();
	if (!p)
		return EXIT_USAGE;
	if (all)
		cJSON_AddBoolToObject(p, "all", 1);
	else
		cJSON_AddNumberToObject(p, "group", (double)g);
	if (promote)
		cJSON_AddStringToObject(p, "class", argv[i + 2]);
	return cmd_simple(c, promote ? "unknowns.promote" : "unknowns.drop", p,
			  promote ? show_promoted : show_dropped);
}

/* Numbers separated by commas/spaces -> array; n must be 166. */
static cJSON *parse_features(const char *s, char *err, size_t errlen)
{
	float f[HDQT_FEAT_DIM + 1];
	int n = 0;
	const char *p = s;
	while (*p) {
		while (*p == ',' || *p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
			p++;
		if (!*p)
			break;
		char *end;
		double v = strtod(p, &end);
		if (end == p) {
			snprintf(err, errlen, "not a number near '%.10s'", p);
			return NULL;
		}
		if (!isfinite((float)v)) { /* NaN, inf, or beyond the float range */
			snprintf(err, errlen, "feature %d: '%.*s' is not a finite number", n + 1,
				 (int)(end - p) < 20 ? (int)(end - p) : 20, p);
			return NULL;
		}
		if (n > HDQT_FEAT_DIM) {
			snprintf(err, errlen, "more than %d numbers", HDQT_FEAT_DIM);
			return NULL;
		}
		f[n++] = (float)v;
		p = end;
	}
	if (n != HDQT_FEAT_DIM) {
		snprintf(err, errlen, "%d numbers, expected %d features", n, HDQT_FEAT_DIM);
		return NULL;
	}
	return hdqt_rpc_float_array(f, n);
}

/* Append {"features": [...]} (with "class" when cls) parsed from text. */
static int add_input(cJSON *list, const char *text, const char *cls, char *err, size_t errlen)
{
	cJSON *f = parse_features(text, err, errlen);
	cJSON *o = f ? cJSON_CreateObject() : NULL;
	if (!o) {
		cJSON_Delete(f);
		return -1;
	}
	if (cls)
		cJSON_AddStringToObject(o, "class", cls);
	cJSON_AddItemToObject(o, "features", f);
	cJSON_AddItemToArray(list, o);
	return 0;
}

/* Feature lines from argv[i] or stdin, each turned into {"features": [...]} (+ class). */
static cJSON *read_inputs(int argc, char **argv, int i, const char *cls)
{
	cJSON *list = cJSON_CreateArray();
	char err[128] = "out of memory";
	if (i < argc) {
		if (add_input(list, argv[i], cls, err, sizeof(err)) < 0) {
			fprintf(stderr, "hdqtctl: %s\n", err);
			cJSON_Delete(list);
			return NULL;
		}
		return list;
	}
	char *line = NULL;
	size_t cap = 0;
	int lineno = 0;
	while (getline(&line, &cap, stdin) > 0) {
		lineno++;
		if (line[0] == '#' || line[strspn(line, " \t\r\n")] == '\0')
			continue;
		if (add_input(list, line, cls, err, sizeof(err)) < 0) {
			fprintf(stderr, "hdqtctl: stdin line %d: %s\n", lineno, err);
			free(line);
			cJSON_Delete(list);
			return NULL;
		}
	}
	free(line);
	if (cJSON_GetArraySize(list) == 0) {
		fprintf(stderr, "hdqtctl: no features given (argument or CSV lines on stdin)\n");
		cJSON_Delete(list);
		return NULL;
	}
	return list;
}

static void show_prediction(const cJSON *p)
{
	/* An unknown window is said first: its class is only the nearest. */
	if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "unknown")))
		printf("UNKNOWN (novelty %.4f > %.4f), nearest ", num(p, "novelty", NAN),
		       num(p, "novelty_threshold", NAN));
	printf("%s (%.1f%%)", str(p, "class", "?"), 100 * num(p, "confidence", 0));
	const cJSON *t;
	int k = 0;
	cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(p, "top")) {
		if (k++ == 0)
			continue;
		printf("%s %s %.1f%%", k == 2 ? "  then" : ",", str(t, "class", "?"),
		       100 * num(t, "confidence", 0));
	}
	printf("\n");
}

static int cmd_predict(hdqt_client *c, int argc, char **argv, int i)
{
	cJSON *params = cJSON_CreateObject();
	if (i + 1 < argc && strcmp(argv[i], "--window") == 0) {
		float *rows = NULL;
		int n = 0;
		int rc = hdqt_raw_read(argv[i + 1], &rows, &n);
		if (rc < 0 || n < 128) {
			fprintf(stderr, "hdqtctl: %s: %s\n", argv[i + 1],
				rc < 0 ? hdqt_strerror(rc) : "fewer than 128 readings");
			free(rows);
			cJSON_Delete(params);
			return EXIT_USAGE;
		}
		cJSON *w = cJSON_AddArrayToObject(params, "window");
		for (int r = 0; r < 128; r++)
			cJSON_AddItemToArray(w, hdqt_rpc_float_array(rows + (size_t)r * 6, 6));
		free(rows);
		return cmd_simple(c, "predict", params, show_prediction);
	}
	cJSON *inputs = read_inputs(argc, argv, i, NULL);
	if (!inputs) {
		cJSON_Delete(params);
		return EXIT_USAGE;
	}
	cJSON_AddItemToObject(params, "inputs", inputs);
	cJSON *r;
	int rc = rpc(c, "predict", params, &r);
	if (rc)
		return rc;
	if (json_out)
		print_json(r);
	else {
		const cJSON *p;
		cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(r, "predictions"))
			show_prediction(p);
	}
	cJSON_Delete(r);
	return 0;
}

static int cmd_add_sample(hdqt_client *c, int argc, char **argv, int i)
{
	const char *batch_id = NULL;
	if (i + 1 < argc && !strcmp(argv[i], "--batch-id")) {
		batch_id = argv[i + 1];
		i += 2;
		if (!hdqt_client_batch_id_valid(batch_id)) {
			fprintf(stderr, "hdqtctl: --batch-id: 1-%d bytes of printable ASCII without "
				"spaces\n", HDQT_CLIENT_BATCH_ID_MAX);
			return EXIT_USAGE;
		}
	}
	if (i >= argc) {
		fprintf(stderr, "hdqtctl: add-sample needs a class\n");
		return EXIT_USAGE;
	}
	cJSON *samples = read_inputs(argc, argv, i + 1, argv[i]);
	if (!samples)
		return EXIT_USAGE;
	cJSON *r;
	int rc = hdqt_client_sample_add(c, samples, batch_id, &r);
	if (rc < 0) {
		fprintf(stderr, "hdqtctl: sample.add: %s\n", hdqt_client_errmsg(c));
		return rc < -1000 ? EXIT_RPC : EXIT_CONNECT;
	}
	const cJSON *dup = cJSON_GetObjectItemCaseSensitive(r, "duplicate");
	if (json_out)
		print_json(r);
	else if (cJSON_IsTrue(dup))
		printf("batch %s was stored before (%.0f samples): not stored again, %.0f pending\n",
		       batch_id, num(r, "accepted", 0), num(r, "samples_pending", 0));
	else
		printf("%.0f samples stored, %.0f pending\n", num(r, "accepted", 0),
		       num(r, "samples_pending", 0));
	cJSON_Delete(r);
	return 0;
}

static void print_event(const cJSON *e)
{
	if (json_out) {
		char *s = cJSON_PrintUnformatted(e);
		if (s) {
			puts(s);
			free(s);
		}
		fflush(stdout);
		return;
	}
	const char *t = str(e, "type", "?");
	char when[16];
	time_t now = time(NULL);
	strftime(when, sizeof(when), "%H:%M:%S", localtime(&now));
	if (!strcmp(t, "training.progress"))
		printf("%s round %.0f: epoch %.0f/%.0f, loss %.4f\n", when, num(e, "round", 0),
		       num(e, "epoch", 0), num(e, "epochs", 0), num(e, "loss", 0));
	else if (!strcmp(t, "training.finished")) {
		printf("%s round %.0f %s: serving model %.0f", when, num(e, "round", 0),
		       str(e, "outcome", "?"), num(e, "model_version", 0));
		if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(e, "validation_accuracy")))
			printf(", validation %.2f%%", num(e, "validation_accuracy", 0));
		if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(e, "previous_accuracy")))
			printf(" (previous model %.2f%%)", num(e, "previous_accuracy", 0));
		printf("%s%s\n", *str(e, "reason", "") ? ": " : "", str(e, "reason", ""));
	}
	else if (!strcmp(t, "training.started"))
		printf("%s round %.0f started\n", when, num(e, "round", 0));
	else if (!strcmp(t, "model.swapped"))
		printf("%s serving model %.0f (was %.0f, %s)\n", when, num(e, "model_version", 0),
		       num(e, "previous", 0), str(e, "reason", ""));
	else
		printf("%s %s %s\n", when, t, str(e, "name", ""));
	fflush(stdout);
}

static int cmd_watch(hdqt_client *c, int count)
{
	cJSON *r;
	int rc = rpc(c, "events.subscribe", NULL, &r);
	if (rc)
		return rc;
	cJSON_Delete(r);
	for (int n = 0; count <= 0 || n < count; n++) {
		cJSON *e;
		if ((rc = hdqt_client_next_event(c, -1, &e)) < 0) {
			fprintf(stderr, "hdqtctl: %s\n", hdqt_client_errmsg(c));
			return EXIT_CONNECT;
		}
		print_event(e);
		cJSON_Delete(e);
	}
	return 0;
}

static int cmd_train(hdqt_client *c, int wait)
{
	cJSON *r;
	int rc;
	if (wait && (rc = rpc(c, "events.subscribe", NULL, &r)) != 0)
		return rc;
	if (wait)
		cJSON_Delete(r);
	if ((rc = rpc(c, "train", NULL, &r)) != 0)
		return rc;
	int started = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(r, "started"));
	if (json_out && !wait)
		print_json(r);
	else if (!started)
		printf("not started: %s\n", str(r, "reason", "?"));
	else if (!wait)
		printf("training round started on %.0f pending samples\n", num(r, "samples", 0));
	cJSON_Delete(r);
	if (!wait || !started)
		return 0;
	const int tty = isatty(STDOUT_FILENO) && !json_out;
	for (;;) {
		cJSON *e;
		if ((rc = hdqt_client_next_event(c, -1, &e)) < 0) {
			fprintf(stderr, "hdqtctl: %s\n", hdqt_client_errmsg(c));
			return EXIT_CONNECT;
		}
		const char *t = str(e, "type", "");
		if (!strcmp(t, "training.progress") && tty) {
			double ep = num(e, "epoch", 0), eps = num(e, "epochs", 1);
			int w = 40, fill = eps > 0 ? (int)(w * ep / eps) : 0;
			char bar[64];
			memset(bar, '#', (size_t)fill);
			memset(bar + fill, '.', (size_t)(w - fill));
			bar[w] = '\0';
			printf("\r[%s] epoch %.0f/%.0f loss %.4f ", bar, ep, eps, num(e, "loss", 0));
			fflush(stdout);
		} else if (!strcmp(t, "training.finished")) {
			if (tty)
				printf("\n");
			print_event(e);
			int ok = !strcmp(str(e, "outcome", ""), "accepted");
			cJSON_Delete(e);
			return ok ? 0 : EXIT_ROUND;
		}
		cJSON_Delete(e);
	}
}

/* ---- fleet: export, import, backup, metrics ---- */

static int fsync_dir_of(const char *path)
{
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash == dir)
		dir[1] = 0;
	else if (slash)
		*slash = 0;
	else
		snprintf(dir, sizeof(dir), ".");
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	close(fd);
	return rc;
}

/* export / backup FILE: written to FILE.tmp, fsynced, renamed, the folder
 * fsynced, so FILE is either the whole checked copy or untouched. */
static int cmd_download(hdqt_client *c, const char *cmd, const char *path)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		fprintf(stderr, "hdqtctl: %s: path too long\n", path);
		return EXIT_USAGE;
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "hdqtctl: %s: %s\n", tmp, strerror(errno));
		return EXIT_USAGE;
	}
	cJSON *info = NULL;
	int rc = cmd[0] == 'e' ? hdqt_client_export(c, fd, &info) : hdqt_client_backup(c, fd, &info);
	if (rc == 0 && fsync(fd) < 0)
		rc = HDQT_EIO;
	if (close(fd) < 0 && rc == 0)
		rc = HDQT_EIO;
	if (rc == 0 && (rename(tmp, path) < 0 || fsync_dir_of(path) < 0))
		rc = HDQT_EIO;
	if (rc < 0) {
		fprintf(stderr, "hdqtctl: %s: %s\n", cmd,
			rc == HDQT_EIO ? strerror(errno) : hdqt_client_errmsg(c));
		unlink(tmp);
		cJSON_Delete(info);
		return rc < -1000 ? EXIT_RPC : rc == HDQT_EIO ? EXIT_USAGE : EXIT_CONNECT;
	}
	if (json_out) {
		print_json(info);
	} else {
		const cJSON *sz = cJSON_GetObjectItemCaseSensitive(info, "size");
		const cJSON *crc = cJSON_GetObjectItemCaseSensitive(info, "crc32");
		const cJSON *man = cJSON_GetObjectItemCaseSensitive(info, "manifest");
		const cJSON *cls = cJSON_GetObjectItemCaseSensitive(man, "classes");
		printf("%s: %.0f bytes, CRC-32 %s, model version %.0f", path, num(info, "size", 0),
		       cJSON_IsString(crc) ? crc->valuestring : "?", num(info, "model_version", 0));
		if (cJSON_IsArray(cls))
			printf(", %d classes", cJSON_GetArraySize(cls));
		printf("\n");
		(void)sz;
	}
	cJSON_Delete(info);
	return 0;
}

#define IMPORT_FILE_MAX (64u << 20) /* hdqtd's bundle limit */

static int cmd_import(hdqt_client *c, const char *path, int remap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "hdqtctl: %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return EXIT_USAGE;
	}
	if (!S_ISREG(st.st_mode) || st.st_size < 1 || (uint64_t)st.st_size > IMPORT_FILE_MAX) {
		fprintf(stderr, "hdqtctl: %s: not a bundle file of 1 to %u bytes\n", path,
			IMPORT_FILE_MAX);
		close(fd);
		return EXIT_USAGE;
	}
	unsigned char *buf = malloc((size_t)st.st_size);
	size_t got = 0;
	while (buf && got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (!buf || got != (size_t)st.st_size) {
		fprintf(stderr, "hdqtctl: %s: %s\n", path, buf ? "short read" : "out of memory");
		free(buf);
		return EXIT_USAGE;
	}
	cJSON *res = NULL;
	int rc = hdqt_client_import(c, buf, got, remap, &res);
	free(buf);
	if (rc < 0) {
		fprintf(stderr, "hdqtctl: import: %s\n", hdqt_client_errmsg(c));
		return rc < -1000 ? EXIT_RPC : EXIT_CONNECT;
	}
	if (json_out) {
		print_json(res);
	} else {
		const cJSON *src = cJSON_GetObjectItemCaseSensitive(res, "source");
		const cJSON *box = cJSON_GetObjectItemCaseSensitive(src, "box_id");
		const cJSON *cr = cJSON_GetObjectItemCaseSensitive(res, "classes_created");
		printf("imported as model version %.0f (was %.0f) from box %s, model %.0f; %d classes "
		       "created%s\n", num(res, "model_version", 0), num(res, "previous", 0),
		       cJSON_IsString(box) ? box->valuestring : "?", num(src, "model_version", 0),
		       cJSON_GetArraySize(cr), cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(res, "remapped"))
						   ? ", labels remapped" : "");
	}
	cJSON_Delete(res);
	return 0;
}

/* Label values: backslash, double quote and newline escaped (exposition format). */
static void prom_label(const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			putchar('\\');
		if (*s == '\n') {
			fputs("\\n", stdout);
			continue;
		}
		putchar(*s);
	}
}

static void prom_head(const char *name, const char *type, const char *help)
{
	printf("# HELP hdqtd_%s %s\n# TYPE hdqtd_%s %s\n", name, help, name, type);
}

static void prom_value(const cJSON *v)
{
	if (cJSON_IsNumber(v))
		printf("%.17g\n", v->valuedouble);
	else
		printf("NaN\n");
}

static void prom_scalar(const cJSON *m, const char *key, const char *name, const char *type,
			const char *help)
{
	prom_head(name, type, help);
	printf("hdqtd_%s ", name);
	prom_value(cJSON_GetObjectItemCaseSensitive(m, key));
}

static void prom_histogram(const cJSON *m, const char *key, const char *help)
{
	const cJSON *h = cJSON_GetObjectItemCaseSensitive(m, key);
	prom_head(key, "histogram", help);
	const cJSON *b;
	cJSON_ArrayForEach(b, cJSON_GetObjectItemCaseSensitive(h, "buckets")) {
		printf("hdqtd_%s_bucket{le=\"%g\"} %.0f\n", key, num(b, "le", 0), num(b, "count", 0));
	}
	printf("hdqtd_%s_bucket{le=\"+Inf\"} %.0f\n", key, num(h, "count", 0));
	printf("hdqtd_%s_sum %.17g\n", key, num(h, "sum", 0));
	printf("hdqtd_%s_count %.0f\n", key, num(h, "count", 0));
}

/* The metrics result in the Prometheus text exposition format 0.0.4. */
static void print_prometheus(const cJSON *m)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, "version");
	prom_head("up", "gauge", "1 if hdqtd answered the metrics request.");
	printf("hdqtd_up 1\n");
	prom_head("build_info", "gauge", "hdqtd's version, as a label.");
	printf("hdqtd_build_info{version=\"");
	prom_label(cJSON_IsString(v) ? v->valuestring : "");
	printf("\"} 1\n");
	prom_scalar(m, "uptime_s", "uptime_seconds", "gauge", "Seconds since hdqtd started.");
	prom_head("requests_total", "counter", "Requests by method.");
	const cJSON *r, *e;
	cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(m, "requests")) {
		const cJSON *meth = cJSON_GetObjectItemCaseSensitive(r, "method");
		printf("hdqtd_requests_total{method=\"");
		prom_label(cJSON_IsString(meth) ? meth->valuestring : "");
		printf("\"} %.0f\n", num(r, "count", 0));
	}
	prom_head("request_errors_total", "counter", "Error replies by method and JSON-RPC code.");
	cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(m, "requests")) {
		const cJSON *meth = cJSON_GetObjectItemCaseSensitive(r, "method");
		cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "errors")) {
			printf("hdqtd_request_errors_total{method=\"");
			prom_label(cJSON_IsString(meth) ? meth->valuestring : "");
			printf("\",code=\"%.0f\"} %.0f\n", num(e, "code", 0), num(e, "count", 0));
		}
	}
	prom_scalar(m, "predictions_total", "predictions_total", "counter", "Inputs classified.");
	prom_scalar(m, "predictions_unknown_total", "predictions_unknown_total", "counter",
		    "Inputs called unknown (unlike every class taught).");
	prom_scalar(m, "samples_ingested_total", "samples_ingested_total", "counter",
		    "Labelled samples stored (duplicates of a batch id not counted).");
	prom_scalar(m, "samples_quarantined_total", "samples_quarantined_total", "counter",
		    "Samples quarantined by diverging rounds.");
	prom_head("rounds_total", "counter", "Training rounds by outcome.");
	const cJSON *o;
	cJSON_ArrayForEach(o, cJSON_GetObjectItemCaseSensitive(m, "rounds")) {
		printf("hdqtd_rounds_total{outcome=\"");
		prom_label(o->string);
		printf("\"} ");
		prom_value(o);
	}
	prom_histogram(m, "round_duration_seconds", "Duration of training rounds.");
	prom_histogram(m, "predict_latency_seconds", "Time from a predict request to its reply.");
	prom_scalar(m, "connections_accepted_total", "connections_accepted_total", "counter",
		    "Client connections accepted.");
	prom_scalar(m, "exports_total", "exports_total", "counter", "Model bundles exported.");
	prom_scalar(m, "imports_total", "imports_total", "counter", "Model bundles imported.");
	prom_scalar(m, "backups_total", "backups_total", "counter", "Database backups taken.");
	prom_scalar(m, "busy_polls_total", "busy_polls_total", "counter",
		    "Replies after which the loop polled (daemon.busy_poll_us).");
	prom_scalar(m, "busy_poll_hits_total", "busy_poll_hits_total", "counter",
		    "Polls during which the client's next request came.");
	prom_scalar(m, "model_version", "model_version", "gauge",
		    "Serving model version (NaN before the first round).");
	prom_scalar(m, "database_bytes", "database_bytes", "gauge",
		    "Size of the database file and its write-ahead log.");
	prom_scalar(m, "connections", "connections", "gauge", "Open client connections.");
	prom_scalar(m, "classes", "classes", "gauge", "Classes known (active or not).");
	prom_scalar(m, "samples_pending", "samples_pending", "gauge",
		    "Samples waiting for the next round.");
	prom_scalar(m, "samples_in_quarantine", "samples_in_quarantine", "gauge",
		    "Samples in quarantine now.");
	prom_scalar(m, "exemplars", "exemplars", "gauge", "Rows of the exemplar memory.");
	prom_head("training", "gauge", "1 while a round runs.");
	printf("hdqtd_training %d\n", cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "training")));
	prom_scalar(m, "validation_accuracy", "validation_accuracy_percent", "gauge",
		    "Validation accuracy of the serving model (NaN if unknown).");
}

static int cmd_metrics(hdqt_client *c, int prometheus)
{
	cJSON *res = NULL;
	int rc = rpc(c, "metrics", NULL, &res);
	if (rc)
		return rc;
	if (prometheus)
		print_prometheus(res);
	else
		print_json(res);
	cJSON_Delete(res);
	return fflush(stdout) == 0 && !ferror(stdout) ? 0 : EXIT_USAGE;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"socket", required_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'},
		{"timeout", required_argument, NULL, 't'}, {"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},       {NULL, 0, NULL, 0},
	};
	const char *sock = NULL;
	int timeout = 60, c;
	while ((c = getopt_long(argc, argv, "+s:jt:h", opts, NULL)) != -1) {
		switch (c) {
		case 's': sock = optarg; break;
		case 'j': json_out = 1; break;
		case 't': {
			char *end;
			long v = strtol(optarg, &end, 10);
			if (end == optarg || *end || v < 1 || v > 86400) {
				fprintf(stderr, "hdqtctl: --timeout expects seconds from 1 to 86400\n");
				return EXIT_USAGE;
			}
			timeout = (int)v;
			break;
		}
		case 'h': usage(stdout); return 0;
		case 'V': printf("hdqtctl %s\n", HDQT_VERSION); return 0;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *cmd = argv[optind++];
	static const char *const known[] = {"status", "classes", "add-class", "remove-class",
					    "add-sample", "predict", "train", "cancel", "models",
					    "rollback", "watch", "config", "describe", "call", "export",
					    "import", "backup", "metrics", "unknowns"};
	int ok = 0;
	for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
		ok |= !strcmp(cmd, known[k]);
	if (!ok) {
		fprintf(stderr, "hdqtctl: unknown command '%s' (see hdqtctl --help)\n", cmd);
		return EXIT_USAGE;
	}
	signal(SIGPIPE, SIG_IGN);
	hdqt_client *cl;
	/* watch and train --wait may wait for long: no reply timeout there. */
	int wait_long = !strcmp(cmd, "watch") || !strcmp(cmd, "train");
	if (!strcmp(cmd, "export") || !strcmp(cmd, "import") || !strcmp(cmd, "backup")) {
		/* Arguments first: a usage error needs no daemon. */
		int remap = optind + 1 < argc && !strcmp(argv[optind + 1], "--remap");
		if (optind >= argc || optind + 1 + (cmd[0] == 'i' && remap) != argc) {
			fprintf(stderr, "hdqtctl: usage: hdqtctl %s FILE%s\n", cmd,
				cmd[0] == 'i' ? " [--remap]" : "");
			return EXIT_USAGE;
		}
	}
	if (hdqt_client_connect(&cl, sock, wait_long ? 0 : timeout * 1000) < 0) {
		fprintf(stderr, "hdqtctl: cannot connect to hdqtd at %s: %s\n",
			sock ? sock : hdqt_client_default_socket(), strerror(errno));
		return EXIT_CONNECT;
	}
	int rc = EXIT_USAGE;
	if (!strcmp(cmd, "status"))
		rc = cmd_status(cl);
	else if (!strcmp(cmd, "classes"))
		rc = cmd_simple(cl, "class.list", NULL, show_classes);
	else if (!strcmp(cmd, "add-class") || !strcmp(cmd, "remove-class")) {
		if (optind >= argc)
			fprintf(stderr, "hdqtctl: %s needs a class name\n", cmd);
		rc = optind < argc ? 0 : EXIT_USAGE;
		for (int i = optind; i < argc && rc == 0; i++) {
			cJSON *p = cJSON_CreateObject();
			cJSON_AddStringToObject(p, "name", argv[i]);
			rc = cmd_simple(cl, cmd[0] == 'a' ? "class.add" : "class.remove", p, show_class);
		}
	} else if (!strcmp(cmd, "add-sample"))
		rc = cmd_add_sample(cl, argc, argv, optind);
	else if (!strcmp(cmd, "predict"))
		rc = cmd_predict(cl, argc, argv, optind);
	else if (!strcmp(cmd, "train"))
		rc = cmd_train(cl, optind < argc && !strcmp(argv[optind], "--wait"));
	else if (!strcmp(cmd, "cancel"))
		rc = cmd_simple(cl, "train.cancel", NULL, NULL);
	else if (!strcmp(cmd, "models"))
		rc = cmd_simple(cl, "model.list", NULL, show_models);
	else if (!strcmp(cmd, "rollback")) {
		char *end = NULL;
		long v = optind < argc ? strtol(argv[optind], &end, 10) : 0;
		if (optind >= argc || *end || v < 1) {
			fprintf(stderr, "hdqtctl: rollback needs a model version (see hdqtctl models)\n");
		} else {
			cJSON *p = cJSON_CreateObject();
			cJSON_AddNumberToObject(p, "version", (double)v);
			rc = cmd_simple(cl, "model.rollback", p, NULL);
		}
	} else if (!strcmp(cmd, "watch")) {
		int count = 0;
		char *end = NULL;
		if (optind + 1 < argc && !strcmp(argv[optind], "--count"))
			count = (int)strtol(argv[optind + 1], &end, 10);
		if (end && (end == argv[optind + 1] || *end || count < 1))
			fprintf(stderr, "hdqtctl: watch --count expects a positive number\n");
		else
			rc = cmd_watch(cl, count);
	} else if (!strcmp(cmd, "config"))
		rc = cmd_simple(cl, "config.get", NULL, NULL);
	else if (!strcmp(cmd, "describe"))
		rc = cmd_simple(cl, "rpc.describe", NULL, NULL);
	else if (!strcmp(cmd, "export") || !strcmp(cmd, "backup"))
		rc = cmd_download(cl, cmd, argv[optind]);
	else if (!strcmp(cmd, "import"))
		rc = cmd_import(cl, argv[optind], optind + 1 < argc);
	else if (!strcmp(cmd, "metrics")) {
		if (optind < argc && strcmp(argv[optind], "--prometheus") != 0)
			fprintf(stderr, "hdqtctl: metrics takes only --prometheus\n");
		else
			rc = cmd_metrics(cl, optind < argc);
	} else if (!strcmp(cmd, "unknowns")) {
		rc = cmd_unknowns(cl, argc, argv, optind);
	} else if (!strcmp(cmd, "call")) {
		cJSON *p = NULL;
		if (optind >= argc) {
			fprintf(stderr, "hdqtctl: call needs a method\n");
		} else if (optind + 1 < argc && !(p = cJSON_Parse(argv[optind + 1]))) {
			fprintf(stderr, "hdqtctl: params are not valid JSON\n");
		} else {
			json_out = 1;
			rc = cmd_simple(cl, argv[optind], p, NULL);
		}
	}
	hdqt_client_close(cl);
	return rc;
}
