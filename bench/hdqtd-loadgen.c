/* SPDX-License-Identifier: MIT */
/*
 * hdqtd-loadgen: throughput and latency of the real daemon over its socket.
 *
 * Starts hdqtd on a temporary socket and database, ingests HAPT feature
 * vectors (batched and one per request), trains a first model, then
 * measures predictions per second and p50/p99 latency with 1 and 32
 * clients, idle, while a (deliberately endless) training round runs, and
 * while another client streams sample.add requests of 4096 samples (the
 * writes run on hdqtd's writer thread, so predictions should not wait).
 * Also the floor of the round trip (train.status, next to no work) and
 * the CPU time the daemon's loop thread spends per request
 * (/proc/PID/schedstat), which this shared machine's noise moves less
 * than latency, and the loop's busy polls per request (metrics).  Idle,
 * the predictions are timed twice: features as JSON numbers and as
 * features_f32 (base64 of float32).  The endless round's pace (epochs per
 * second) alone and while 1 and 32 clients predict shows what serving
 * takes from training.  Prints a table, or one JSON object with --json.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hdqt_data.h"
#include "hdqt_proto.h"

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct conn {
	int fd;
	char *buf;
	size_t len, cap;
} conn;

static int conn_open(conn *c, const char *path)
{
	memset(c, 0, sizeof(*c));
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (c->fd >= 0)
			close(c->fd);
		return -1;
	}
	c->cap = 1 << 16;
	c->buf = malloc(c->cap);
	return c->buf ? 0 : -1;
}

static void conn_close(conn *c)
{
	close(c->fd);
	free(c->buf);
}

/* Send a line and read one reply line (left in c->buf, NUL-terminated). */
static int call(conn *c, const char *req, size_t n)
{
	for (size_t off = 0; off < n;) {
		ssize_t w = write(c->fd, req + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		off += (size_t)w;
	}
	c->len = 0;
	for (;;) {
		if (c->len + 1 >= c->cap) {
			char *b = realloc(c->buf, c->cap * 2);
			if (!b)
				return -1;
			c->buf = b;
			c->cap *= 2;
		}
		ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		char *nl = memchr(c->buf + c->len, '\n', (size_t)r);
		c->len += (size_t)r;
		if (nl) {
			*nl = '\0';
			return strstr(c->buf, "\"error\"") ? -2 : 0;
		}
	}
}

static int calls(conn *c, const char *req)
{
	char line[512];
	int n = snprintf(line, sizeof(line), "%s\n", req);
	return call(c, line, (size_t)n);
}

/* {"jsonrpc":"2.0","id":1,"method":M,"params":{PREFIX"features":[...]SUFFIX}} */
static size_t put_features(char *o, const float *x, int d)
{
	size_t k = 0;
	for (int j = 0; j < d; j++)
		k += (size_t)sprintf(o + k, "%s%.6g", j ? "," : "", (double)x[j]);
	return k;
}

static const char *const names[] = {"", "WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS",
				    "SITTING", "STANDING", "LAYING"};

/* A sample.add request for the basic-activity windows of ds in [from, to),
 * at most max of them (*k gets how many), features as JSON numbers or, with
 * f32, as features_f32; req must hold max * 2600 bytes. */
static size_t sample_add_as(char *req, const hdqt_dataset *ds, int from, int to, int max, int *k,
			    int f32)
{
	size_t n = (size_t)sprintf(req, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"sample.add\","
				   "\"params\":{\"samples\":[", from);
	*k = 0;
	for (int r = from; r < to && r < ds->n && *k < max; r++) {
		if (ds->y[r] < 1 || ds->y[r] > 6)
			continue;
		char *b = f32 ? hdqt_rpc_f32_encode(ds->X + (size_t)r * ds->d, ds->d) : NULL;
		if (f32 && !b)
			break;
		n += (size_t)sprintf(req + n, "%s{\"class\":\"%s\",\"features%s", (*k)++ ? "," : "",
				     names[ds->y[r]], f32 ? "_f32\":\"" : "\":[");
		if (f32)
			n += (size_t)sprintf(req + n, "%s\"}", b);
		else
			n += put_features(req + n, ds->X + (size_t)r * ds->d, ds->d);
		n += (size_t)sprintf(req + n, "%s", f32 ? "" : "]}");
		free(b);
	}
	n += (size_t)sprintf(req + n, "]}}\n");
	return n;
}

static size_t sample_add(char *req, const hdqt_dataset *ds, int from, int to, int max, int *k)
{
	return sample_add_as(req, ds, from, to, max, k, 0);
}

typedef struct job {
	const char *sock;
	const hdqt_dataset *ds;
	int k;
	double until;
	double *lat;
	int nlat, cap;
	int errors;
	int trivial; /* train.status instead of predict: the round trip's floor */
	int f32;     /* features_f32 (base64 of float32) instead of JSON numbers */
} job;

static void *predict_worker(void *arg)
{
	job *j = arg;
	conn c;
	if (conn_open(&c, j->sock) < 0) {
		j->errors++;
		return NULL;
	}
	char *req = malloc(16384);
	for (int i = j->k; now_s() < j->until && req; i += 7) {
		int r = i % j->ds->n;
		size_t n;
		if (j->trivial) {
			n = (size_t)sprintf(req, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"train.status\"}\n", i);
		} else if (j->f32) {
			char *b = hdqt_rpc_f32_encode(j->ds->X + (size_t)r * j->ds->d, j->ds->d);
			if (!b) {
				j->errors++;
				break;
			}
			n = (size_t)snprintf(req, 16384, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":"
					     "\"predict\",\"params\":{\"features_f32\":\"%s\"}}\n", i, b);
			free(b);
		} else {
			n = (size_t)sprintf(req, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"predict\","
					    "\"params\":{\"features\":[", i);
			n += put_features(req + n, j->ds->X + (size_t)r * j->ds->d, j->ds->d);
			n += (size_t)sprintf(req + n, "]}}\n");
		}
		double t0 = now_s();
		if (call(&c, req, n) < 0) {
			j->errors++;
			break;
		}
		if (j->nlat == j->cap) {
			j->cap = j->cap ? j->cap * 2 : 4096;
			double *l = realloc(j->lat, sizeof(double) * j->cap);
			if (!l)
				break;
			j->lat = l;
		}
		j->lat[j->nlat++] = now_s() - t0;
	}
	free(req);
	conn_close(&c);
	return NULL;
}

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Streams sample.add requests of 4096 samples until `until`. */
typedef struct streamer {
	const char *sock;
	const hdqt_dataset *ds;
	double until;
	long samples;
	int errors;
} streamer;

static void *stream_worker(void *arg)
{
	streamer *s = arg;
	conn c;
	char *req = malloc((size_t)4096 * 2600 + 4096);
	if (!req || conn_open(&c, s->sock) < 0) {
		free(req);
		s->errors++;
		return NULL;
	}
	for (int from = 0; now_s() < s->until; from = (from + 997) % (s->ds->n / 2 + 1)) {
		int k;
		size_t n = sample_add(req, s->ds, from, s->ds->n, 4096, &k);
		if (k < 4096 && from > 0) /* too few windows left: start again from the top */
			n = sample_add(req, s->ds, 0, s->ds->n, 4096, &k);
		if (k == 0 || call(&c, req, n) < 0) {
			s->errors++;
			break;
		}
		s->samples += k;
	}
	free(req);
	conn_close(&c);
	return NULL;
}

/* The pace of the endless round: train.status every 5 ms on a connection
 * of its own (a slow client, so it starts no polling), noting the time of
 * each new epoch, so that a phase's epochs per second can be read from the
 * first and last epoch that began within it. */
enum { MAX_PACE = 1 << 16 };
typedef struct pacer {
	const char *sock;
	atomic_int stop;
	pthread_mutex_t mu;
	double t[MAX_PACE];
	int e[MAX_PACE];
	int n, errors;
} pacer;

static void *pace_worker(void *arg)
{
	pacer *p = arg;
	conn c;
	if (conn_open(&c, p->sock) < 0) {
		p->errors++;
		return NULL;
	}
	int last = -1;
	while (!atomic_load(&p->stop)) {
		if (calls(&c, "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"train.status\"}") < 0) {
			p->errors++;
			break;
		}
		const double t = now_s();
		const char *e = strstr(c.buf, "\"epoch\":");
		const int epoch = e ? atoi(e + 8) : -1;
		if (epoch >= 0 && epoch != last) {
			pthread_mutex_lock(&p->mu);
			if (p->n < MAX_PACE) {
				p->t[p->n] = t;
				p->e[p->n++] = epoch;
			}
			pthread_mutex_unlock(&p->mu);
			last = epoch;
		}
		usleep(5000);
	}
	conn_close(&c);
	return NULL;
}

/* Epochs per second between the first and the last epoch that began in
 * [t0, t1], or -1 with fewer than three. */
static double pace_between(pacer *p, double t0, double t1)
{
	int i = -1, j = -1;
	pthread_mutex_lock(&p->mu);
	for (int k = 0; k < p->n; k++)
		if (p->t[k] >= t0 && p->t[k] <= t1) {
			if (i < 0)
				i = k;
			j = k;
		}
	double r = i >= 0 && j - i >= 2 ? (p->e[j] - p->e[i]) / (p->t[j] - p->t[i]) : -1;
	pthread_mutex_unlock(&p->mu);
	return r;
}

typedef struct result {
	int clients, training;
	int streaming;
	int f32; /* features_f32 requests */
	double per_s, p50_ms, p99_ms, max_ms;
	double loop_cpu_us; /* the daemon's main (loop) thread's CPU time per request */
	double polls;       /* daemon.busy_poll_us polls per request (metrics) */
	int errors;
} result;

/* CPU time of pid's main thread in seconds (/proc/PID/schedstat: ns on
 * the CPU first), or -1. */
static double thread_cpu_s(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
	FILE *f = fopen(path, "r");
	unsigned long long ns = 0;
	int ok = f && fscanf(f, "%llu", &ns) == 1;
	if (f)
		fclose(f);
	return ok ? 1e-9 * (double)ns : -1;
}

/* The daemon's busy_polls_total, or -1. */
static double busy_polls(const char *sock)
{
	conn c;
	double n = -1;
	if (conn_open(&c, sock) < 0)
		return -1;
	if (calls(&c, "{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"metrics\"}") == 0) {
		const char *p = strstr(c.buf, "\"busy_polls_total\":");
		if (p)
			n = atof(p + 19);
	}
	conn_close(&c);
	return n;
}

static result run_requests(const char *sock, pid_t daemon, const hdqt_dataset *ds, int clients,
			   double secs, int trivial, int f32)
{
	job *jobs = calloc((size_t)clients, sizeof(job));
	pthread_t *th = calloc((size_t)clients, sizeof(pthread_t));
	result r = {.clients = clients, .f32 = f32};
	if (!jobs || !th)
		goto out;
	const double polls0 = busy_polls(sock);
	const double cpu0 = thread_cpu_s(daemon);
	double t0 = now_s(), until = t0 + secs;
	for (int i = 0; i < clients; i++) {
		jobs[i] = (job){.sock = sock, .ds = ds, .k = i * 101, .until = until, .trivial = trivial,
				  .f32 = f32};
		pthread_create(&th[i], NULL, predict_worker, &jobs[i]);
	}
	int total = 0;
	for (int i = 0; i < clients; i++) {
		pthread_join(th[i], NULL);
		total += jobs[i].nlat;
		r.errors += jobs[i].errors;
	}
	double dt = now_s() - t0;
	const double cpu1 = thread_cpu_s(daemon);
	const double polls1 = busy_polls(sock);
	r.polls = polls0 >= 0 && polls1 >= 0 && total ? (polls1 - polls0) / total : -1;
	r.loop_cpu_us = cpu0 >= 0 && cpu1 >= 0 && total ? 1e6 * (cpu1 - cpu0) / total : -1;
	double *all = malloc(sizeof(double) * (size_t)(total ? total : 1));
	int k = 0;
	for (int i = 0; i < clients; i++) {
		if (all)
			memcpy(all + k, jobs[i].lat, sizeof(double) * jobs[i].nlat);
		k += jobs[i].nlat;
		free(jobs[i].lat);
	}
	if (all && total) {
		qsort(all, (size_t)total, sizeof(double), cmpd);
		r.p50_ms = 1e3 * all[total / 2];
		r.p99_ms = 1e3 * all[(int)(0.99 * (total - 1))];
		r.max_ms = 1e3 * all[total - 1];
	}
	r.per_s = total / dt;
	free(all);
out:
	free(jobs);
	free(th);
	return r;
}

static result run_predict(const char *sock, pid_t daemon, const hdqt_dataset *ds, int clients, double secs)
{
	return run_requests(sock, daemon, ds, clients, secs, 0, 0);
}

/* --set KEY=VALUE options for hdqtd, after the benchmark's own. */
enum { MAX_SETS = 8 };
static const char *extra_sets[MAX_SETS];
static int n_extra_sets;

static pid_t start_daemon(const char *hdqtd, const char *dir, const char *epochs)
{
	/* Messages of 4096 samples (about 10 MB) for the streaming phase. */
	char sock[512], db[512], ep[64], logp[512];
	snprintf(sock, sizeof(sock), "%s/hdqtd.sock", dir);
	snprintf(db, sizeof(db), "%s/hdqtd.db", dir);
	snprintf(logp, sizeof(logp), "%s/hdqtd.log", dir);
	snprintf(ep, sizeof(ep), "training.epochs=%s", epochs);
	const char *const base[] = {
		hdqtd, "--socket", sock, "--db", db, "--set", "training.auto=no", "--set", ep,
		"--set", "store.sync=full", "--set", "daemon.max_message=16M", "--set",
		"daemon.max_write_queue=16M", "--set", "store.max_pending_per_class=0"};
	enum { NBASE = sizeof(base) / sizeof(base[0]) };
	const char *args[NBASE + 2 * MAX_SETS + 1];
	int na = 0;
	for (; na < NBASE; na++)
		args[na] = base[na];
	for (int i = 0; i < n_extra_sets; i++) {
		args[na++] = "--set";
		args[na++] = extra_sets[i];
	}
	args[na] = NULL;
	pid_t pid = fork();
	if (pid == 0) {
		/* The daemon goes when the benchmark does, even if it crashes. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		FILE *f = freopen(logp, "a", stderr);
		(void)f;
		execv(hdqtd, (char *const *)args);
		_exit(127);
	}
	if (pid < 0) {
		perror("hdqtd-loadgen: fork");
		return -1;
	}
	for (int i = 0; i < 400; i++) {
		conn c;
		if (conn_open(&c, sock) == 0) {
			conn_close(&c);
			return pid;
		}
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) /* it refused its options, say */
			return -1;
		usleep(25000);
	}
	kill(pid, SIGKILL);
	int st;
	waitpid(pid, &st, 0);
	return -1;
}

static void stop_daemon(pid_t pid)
{
	int st;
	kill(pid, SIGTERM);
	waitpid(pid, &st, 0);
}

static int wait_idle(conn *c)
{
	for (int i = 0; i < 6000; i++) {
		if (calls(c, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"train.status\"}") < 0)
			return -1;
		if (strstr(c->buf, "\"state\":\"idle\""))
			return 0;
		usleep(50000);
	}
	return -1;
}

int main(int argc, char **argv)
{
	const char *hdqtd = NULL, *data = NULL;
	double secs = 5;
	int json = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--hdqtd") && i + 1 < argc)
			hdqtd = argv[++i];
		else if (!strcmp(argv[i], "--data") && i + 1 < argc)
			data = argv[++i];
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			secs = atof(argv[++i]);
		else if (!strcmp(argv[i], "--json"))
			json = 1;
		else if (!strcmp(argv[i], "--set") && i + 1 < argc && n_extra_sets >= MAX_SETS) {
			fprintf(stderr, "hdqtd-loadgen: at most %d --set options\n", MAX_SETS);
			return 2;
		} else if (!strcmp(argv[i], "--set") && i + 1 < argc)
			extra_sets[n_extra_sets++] = argv[++i];
		else {
			fprintf(stderr, "usage: hdqtd-loadgen --hdqtd PATH --data HAPT_DIR [--seconds S] [--json]\n"
				"                     [--set SECTION.KEY=VALUE]...\n");
			return 2;
		}
	}
	if (!hdqtd || !data || !(secs > 0)) {
		fprintf(stderr, "usage: hdqtd-loadgen --hdqtd PATH --data HAPT_DIR [--seconds S] [--json]\n"
			"                     [--set SECTION.KEY=VALUE]...\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	hdqt_dataset ds;
	int rc = hdqt_hapt_load(data, 128, 64, &ds);
	if (rc < 0) {
		fprintf(stderr, "hdqtd-loadgen: %s: %s\n", data, hdqt_strerror(rc));
		return 1;
	}
	char dir[] = "/tmp/hdqtd-loadgen-XXXXXX";
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	char sock[512];
	snprintf(sock, sizeof(sock), "%s/hdqtd.sock", dir);
	pid_t pid = start_daemon(hdqtd, dir, "30");
	if (pid < 0) {
		fprintf(stderr, "hdqtd-loadgen: hdqtd did not start (see %s/hdqtd.log)\n", dir);
		return 1;
	}
	conn c;
	if (conn_open(&c, sock) < 0)
		return 1;
	/* 166 features of at most 14 characters: 2.4 KB per sample, 500 at most */
	char *req = malloc((size_t)500 * 2600 + 4096);
	if (!req)
		return 1;
	for (int a = 1; a <= 6; a++) {
		char line[256];
		snprintf(line, sizeof(line),
			 "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"class.add\",\"params\":{\"name\":\"%s\"}}",
			 names[a]);
		calls(&c, line);
	}
	/* Ingest: batches of 100 samples, then one sample per request. */
	int batch = 100, sent = 0, errors = 0;
	int limit = ds.n < 6000 ? ds.n : 6000;
	/* Batches alternate between JSON numbers and features_f32, each timed
	 * alone, so that the database's growth weighs on both forms alike. */
	double ingest_rate[2], spent[2] = {0, 0};
	int part[2] = {0, 0};
	for (int i = 0; i + batch <= limit; i += batch) {
		const int f32 = (i / batch) & 1;
		int k;
		size_t n = sample_add_as(req, &ds, i, i + batch, batch, &k, f32);
		double t = now_s();
		if (k && call(&c, req, n) < 0)
			errors++;
		spent[f32] += now_s() - t;
		part[f32] += k;
		sent += k;
	}
	for (int f = 0; f < 2; f++)
		ingest_rate[f] = spent[f] > 0 ? part[f] / spent[f] : 0;
	double ingest_batch = ingest_rate[0], ingest_batch_f32 = ingest_rate[1];
	double t0;
	int single = 0;
	t0 = now_s();
	for (int r = 0; r < limit && now_s() - t0 < secs; r++) {
		if (ds.y[r] < 1 || ds.y[r] > 6)
			continue;
		size_t n = (size_t)sprintf(req, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"sample.add\","
					   "\"params\":{\"class\":\"%s\",\"features\":[", r, names[ds.y[r]]);
		n += put_features(req + n, ds.X + (size_t)r * ds.d, ds.d);
		n += (size_t)sprintf(req + n, "]}}\n");
		if (call(&c, req, n) < 0)
			errors++;
		single++;
	}
	double ingest_single = single / (now_s() - t0);
	/* A first model, trained in the background. */
	t0 = now_s();
	calls(&c, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"train\"}");
	wait_idle(&c);
	double first_round = now_s() - t0;
	conn_close(&c);
	stop_daemon(pid);

	/* Prediction latency, idle and during an endless round. */
	result res[8];
	int nres = 0;
	pid = start_daemon(hdqtd, dir, "1000000");
	if (pid < 0 || conn_open(&c, sock) < 0)
		return 1;
	/* The floor: the same round trip for a request that does next to no
	 * work (train.status), then predictions. */
	result floor = run_requests(sock, pid, &ds, 1, secs, 1, 0);
	res[nres++] = run_predict(sock, pid, &ds, 1, secs);
	res[nres++] = run_predict(sock, pid, &ds, 32, secs);
	/* The same features as base64 of float32: no decimal parsing. */
	res[nres++] = run_requests(sock, pid, &ds, 1, secs, 0, 1);
	res[nres++] = run_requests(sock, pid, &ds, 32, secs, 0, 1);
	/* The idle one-client figures again, interleaved: ROUNDS rounds of the
	 * floor and both forms in turn, so that a slow spell of this shared
	 * machine weighs on all three; best and median p50 of each. */
	enum { ROUNDS = 7 };
	double ip50[3][ROUNDS], iloop[3][ROUNDS];
	for (int k = 0; k < ROUNDS; k++)
		for (int f = 0; f < 3; f++) {
			result x = run_requests(sock, pid, &ds, 1, secs / 4, f == 0, f == 2);
			ip50[f][k] = x.p50_ms;
			iloop[f][k] = x.loop_cpu_us;
		}
	for (int f = 0; f < 3; f++) {
		qsort(ip50[f], ROUNDS, sizeof(double), cmpd);
		qsort(iloop[f], ROUNDS, sizeof(double), cmpd);
	}
	/* pending samples for the round */
	int k500;
	size_t n = sample_add(req, &ds, 0, ds.n, 500, &k500);
	call(&c, req, n);
	calls(&c, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"train\"}");
	usleep(300000);
	/* The round's pace alone, then while 1 and 32 clients predict: what
	 * serving (and the loop's polling, daemon.busy_poll_us) takes from it. */
	static pacer pace = {.mu = PTHREAD_MUTEX_INITIALIZER};
	pace.sock = sock;
	pthread_t pace_th;
	const int pacing = pthread_create(&pace_th, NULL, pace_worker, &pace) == 0;
	if (!pacing)
		fprintf(stderr, "hdqtd-loadgen: no thread for the round's pace: not measured\n");
	double pace_alone, pace_with[2];
	t0 = now_s();
	struct timespec alone = {.tv_sec = (time_t)secs, .tv_nsec = (long)((secs - (time_t)secs) * 1e9)};
	while (nanosleep(&alone, &alone) < 0 && errno == EINTR)
		;
	pace_alone = pace_between(&pace, t0, now_s());
	for (int k = 0; k < 2; k++) {
		t0 = now_s();
		res[nres] = run_predict(sock, pid, &ds, k ? 32 : 1, secs);
		res[nres++].training = 1;
		pace_with[k] = pace_between(&pace, t0, now_s());
	}
	if (pacing) {
		atomic_store(&pace.stop, 1);
		pthread_join(pace_th, NULL);
	}
	errors += pace.errors;
	calls(&c, "{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"train.status\"}");
	int was_training = strstr(c.buf, "\"running\"") != NULL;
	calls(&c, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"train.cancel\"}");
	wait_idle(&c);
	/* Predictions while another client streams 4096-sample batches. */
	double streamed = 0;
	for (int k = 0; k < 2; k++) {
		streamer st = {.sock = sock, .ds = &ds, .until = now_s() + secs + 0.5};
		pthread_t th;
		pthread_create(&th, NULL, stream_worker, &st);
		usleep(300000);
		res[nres] = run_predict(sock, pid, &ds, k ? 32 : 1, secs);
		res[nres++].streaming = 1;
		pthread_join(th, NULL);
		errors += st.errors;
		streamed += st.samples / (secs + 0.5) / 2;
	}
	conn_close(&c);
	stop_daemon(pid);

	if (json) {
		printf("{\"ingest_batch100_samples_per_s\":%.0f,\"ingest_batch100_f32_samples_per_s\":%.0f,"
		       "\"ingest_single_samples_per_s\":%.0f,"
		       "\"first_round_s\":%.2f,\"training_confirmed\":%s,\"streamed_samples_per_s\":%.0f,"
		       "\"round_epochs_per_s\":{\"alone\":%.3f,\"predict_1\":%.3f,\"predict_32\":%.3f},"
		       "\"floor\":{\"method\":\"train.status\",\"per_s\":%.0f,\"p50_ms\":%.3f,"
		       "\"p99_ms\":%.3f,\"loop_cpu_us\":%.1f},\"predict\":[",
		       ingest_batch, ingest_batch_f32, ingest_single, first_round, was_training ? "true" : "false", streamed,
		       pace_alone, pace_with[0], pace_with[1],
		       floor.per_s, floor.p50_ms, floor.p99_ms, floor.loop_cpu_us);
		for (int i = 0; i < nres; i++)
			printf("%s{\"clients\":%d,\"input\":\"%s\",\"training\":%s,\"streaming\":%s,"
			       "\"per_s\":%.0f,"
			       "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"loop_cpu_us\":%.1f,"
			       "\"polls_per_request\":%.2f,\"errors\":%d}",
			       i ? "," : "", res[i].clients, res[i].f32 ? "features_f32" : "features",
			       res[i].training ? "true" : "false",
			       res[i].streaming ? "true" : "false", res[i].per_s, res[i].p50_ms,
			       res[i].p99_ms, res[i].max_ms, res[i].loop_cpu_us, res[i].polls, res[i].errors);
		printf("],\"interleaved\":{\"rounds\":%d", ROUNDS);
		static const char *const form[3] = {"floor", "features", "features_f32"};
		for (int f = 0; f < 3; f++)
			printf(",\"%s\":{\"p50_ms_best\":%.3f,\"p50_ms_median\":%.3f,"
			       "\"loop_cpu_us_median\":%.1f}",
			       form[f], ip50[f][0], ip50[f][ROUNDS / 2], iloop[f][ROUNDS / 2]);
		printf("},\"errors\":%d}\n", errors);
	} else {
		printf("ingest: %.0f samples/s in batches of 100 (%.0f with features_f32), %.0f samples/s "
		       "one per request (store.sync=full)\n", ingest_batch, ingest_batch_f32, ingest_single);
		printf("first round (%d samples, 30 epochs): %.2f s\n", sent + single, first_round);
		printf("round-trip floor (train.status, 1 client): p50 %.3f ms, p99 %.3f ms, "
		       "loop CPU %.1f us per request\n", floor.p50_ms, floor.p99_ms, floor.loop_cpu_us);
		printf("%-8s %-13s %-9s %-10s %12s %9s %9s %9s %9s %6s %7s\n", "clients", "input",
		       "training", "streaming", "predict/s", "p50 ms", "p99 ms", "max ms", "loop us",
		       "polls", "errors");
		for (int i = 0; i < nres; i++)
			printf("%-8d %-13s %-9s %-10s %12.0f %9.3f %9.3f %9.2f %9.1f %6.2f %7d\n", res[i].clients,
			       res[i].f32 ? "features_f32" : "features",
			       res[i].training ? (was_training ? "yes" : "yes?") : "no",
			       res[i].streaming ? "yes" : "no", res[i].per_s, res[i].p50_ms,
			       res[i].p99_ms, res[i].max_ms, res[i].loop_cpu_us, res[i].polls, res[i].errors);
		printf("streaming client: %.0f samples/s in sample.add requests of 4096\n", streamed);
		printf("the round's pace: %.2f epochs/s alone, %.2f with 1 client predicting (%.2f), "
		       "%.2f with 32 (%.2f)\n", pace_alone,
		       pace_with[0], pace_alone > 0 && pace_with[0] > 0 ? pace_with[0] / pace_alone : -1,
		       pace_with[1], pace_alone > 0 && pace_with[1] > 0 ? pace_with[1] / pace_alone : -1);
		printf("idle, 1 client, %d interleaved rounds of %.2f s each: p50 best / median "
		       "(loop CPU median)\n", ROUNDS, secs / 4);
		static const char *const form[3] = {"train.status", "features", "features_f32"};
		for (int f = 0; f < 3; f++)
			printf("  %-13s %.3f / %.3f ms (%.1f us)\n", form[f], ip50[f][0],
			       ip50[f][ROUNDS / 2], iloop[f][ROUNDS / 2]);
	}
	free(req);
	hdqt_dataset_free(&ds);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "hdqtd-loadgen: could not remove %s\n", dir);
	return errors || floor.errors ? 1 : 0;
}
