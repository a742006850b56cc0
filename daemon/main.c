/* SPDX-License-Identifier: MIT */
/*
 * hdqtd: the continual-learning daemon.  Top level: options, configuration,
 * signals, systemd notification, start-up and orderly shutdown.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "daemon.h"
#include "log.h"
#if HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

static void notify(const char *msg)
{
#if HAVE_LIBSYSTEMD
	sd_notify(0, msg);
#else
	(void)msg;
#endif
}

/* During the start-up check of the database: ask systemd for 10 s more
 * each second, so that a large file does not trip TimeoutStartSec. */
static void extend_start_timeout(void *arg)
{
	(void)arg;
	notify("EXTEND_TIMEOUT_USEC=10000000");
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: hdqtd [--config FILE] [--socket PATH] [--db PATH] [--foreground]\n"
		"             [--set SECTION.KEY=VALUE]... [--check-config] [--version]\n"
		"  --config FILE    INI configuration (default " HDQT_SYSCONFDIR "/hdqtd/hdqtd.conf if present)\n"
		"  --socket PATH    listening socket (daemon.socket)\n"
		"  --db PATH        SQLite database (daemon.database)\n"
		"  --set S.K=V      override one configuration key\n"
		"  --foreground     accepted for compatibility: hdqtd never forks\n"
		"  --check-config   validate the configuration and exit\n");
}

static void shutdown_all(hdqtd *d, const char *why);

/* Apply the --set overrides (SECTION.KEY=VALUE) over c; 0 or -1 with err. */
static int apply_sets(hdqtd_config *c, char **sets, int n, char *err, size_t errlen)
{
	for (int i = 0; i < n; i++) {
		char buf[4200];
		snprintf(buf, sizeof(buf), "%s", sets[i]);
		char *dot = strchr(buf, '.'), *eq = strchr(buf, '=');
		if (!dot || !eq || dot > eq) {
			snprintf(err, errlen, "--set expects SECTION.KEY=VALUE, got '%s'", sets[i]);
			return -1;
		}
		*dot = *eq = '\0';
		char e2[512];
		if (hdqtd_config_set(c, buf, dot + 1, eq + 1, e2, sizeof(e2)) < 0) {
			snprintf(err, errlen, "--set %s", e2);
			return -1;
		}
	}
	return 0;
}

/* Keys SIGHUP applies at once, with the field each one sets; every other
 * change waits for a restart.  One table names and copies them. */
#define LIVE(name, field) {name, offsetof(hdqtd_config, field), sizeof(((hdqtd_config *)0)->field)}
static const struct live_key {
	const char *name;
	size_t off, size;
} reloadable[] = {
	LIVE("daemon.log_level", log_level),
	LIVE("daemon.max_connections", max_connections),
	LIVE("daemon.max_batch", max_batch),
	LIVE("daemon.max_rpc_batch", max_rpc_batch),
	LIVE("daemon.max_connections_per_uid", max_connections_per_uid),
	LIVE("daemon.admin_reserved", admin_reserved),
	LIVE("daemon.idle_timeout", idle_timeout_s),
	LIVE("daemon.partial_timeout", partial_timeout_s),
	LIVE("daemon.write_timeout", write_timeout_s),
	LIVE("daemon.busy_poll_us", busy_poll_us),
	LIVE("training.auto", auto_train),
	LIVE("training.auto_min_samples", auto_min_samples),
	LIVE("training.auto_interval", auto_interval_s),
};

static void reload(hdqtd *d)
{
	if (!d->config_path[0]) {
		hdqtd_log(LOG_NOTICE, "SIGHUP: no configuration file to reload");
		return;
	}
	/* The file over the defaults, then the command line's overrides again,
	 * as at start: an override keeps winning over the file. */
	hdqtd_config n;
	hdqtd_config_default(&n);
	char err[600];
	if (hdqtd_config_load(&n, d->config_path, err, sizeof(err)) < 0 ||
	    apply_sets(&n, d->sets, d->n_sets, err, sizeof(err)) < 0 ||
	    hdqtd_config_check(&n, err, sizeof(err)) < 0) {
		hdqtd_log(LOG_ERR, "SIGHUP: configuration not reloaded: %s", err);
		return;
	}
	/* Compare key by key through the JSON view, so that no key is missed. */
	cJSON *was = hdqtd_config_json(&d->cfg), *now = hdqtd_config_json(&n);
	int pending = 0;
	const cJSON *sec, *key;
	cJSON_ArrayForEach(sec, now) {
		const cJSON *osec = cJSON_GetObjectItemCaseSensitive(was, sec->string);
		cJSON_ArrayForEach(key, sec) {
			const cJSON *okey = cJSON_GetObjectItemCaseSensitive(osec, key->string);
			if (okey && cJSON_Compare(okey, key, 1))
				continue;
			char name[128];
			snprintf(name, sizeof(name), "%s.%s", sec->string, key->string);
			int live = 0;
			for (size_t i = 0; i < sizeof(reloadable) / sizeof(reloadable[0]); i++)
				live |= !strcmp(reloadable[i].name, name);
			if (!live && !strcmp(name, "daemon.socket") && d->socket_activated)
				continue; /* ignored under socket activation anyway */
			char *v = cJSON_PrintUnformatted(key);
			hdqtd_log(live ? LOG_NOTICE : LOG_WARNING, "SIGHUP: %s = %s%s", name, v ? v : "?",
				  live ? "" : ": takes effect at the next restart");
			cJSON_free(v);
			pending += !live;
		}
	}
	cJSON_Delete(was);
	cJSON_Delete(now);
	for (size_t i = 0; i < sizeof(reloadable) / sizeof(reloadable[0]); i++)
		memcpy((char *)&d->cfg + reloadable[i].off, (const char *)&n + reloadable[i].off,
		       reloadable[i].size);
	hdqtd_log_set_level(n.log_level);
	hdqtd_log(LOG_NOTICE, "configuration reloaded from %s%s", d->config_path,
		  pending ? " (some keys wait for a restart)" : "");
}

static void on_signal(uv_signal_t *h, int signum)
{
	hdqtd *d = h->data;
	if (signum == SIGHUP) {
		reload(d);
		return;
	}
	shutdown_all(d, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

static void on_tick(uv_timer_t *t)
{
	hdqtd *d = t->data;
	if (d->watchdog_usec)
		notify("WATCHDOG=1");
	hdqtd_maybe_train(d);
	hdqtd_server_tick(d);
	hdqtd_fleet_tick(d);
	hdqtd_openset_tick(d);
	char st[160];
	hdqtd_progress p;
	hdqtd_trainer_progress(d->trainer, &p);
	if (p.running)
		snprintf(st, sizeof(st), "STATUS=training round %lld, epoch %d/%d; serving model %lld",
			 (long long)p.round, p.epoch, p.epochs, (long long)d->model_version);
	else
		snprintf(st, sizeof(st), "STATUS=serving model %lld, %d classes, %d clients",
			 (long long)d->model_version, d->n_classes, d->n_conns);
	notify(st);
}

static void on_stop_timer(uv_timer_t *t)
{
	hdqtd *d = t->data;
	if (d->n_conns > 0)
		hdqtd_log(LOG_WARNING, "%d clients did not read their replies: closing them", d->n_conns);
	hdqtd_server_drop_all(d);
	uv_close((uv_handle_t *)t, NULL);
}

static void shutdown_all(hdqtd *d, const char *why)
{
	if (d->stopping)
		return;
	d->stopping = 1;
	hdqtd_log(LOG_NOTICE, "%s: shutting down", why);
	notify("STOPPING=1");
	/* From here no method runs (dispatch answers "shutting down"); a write
	 * already on the writer thread completes and is answered.  A running
	 * round is canceled and its samples stay pending. */
	hdqtd_trainer_stop(d->trainer);
	d->trainer = NULL;
	hdqtd_server_close(d);
	/* Replies are flushed before each connection closes, but a client
	 * that never reads must not hold the daemon up: 5 s, then drop. */
	if (uv_timer_init(d->loop, &d->stop_timer) == 0) {
		d->stop_timer_open = 1;
		d->stop_timer.data = d;
		uv_timer_start(&d->stop_timer, on_stop_timer, 5000, 0);
		uv_unref((uv_handle_t *)&d->stop_timer);
	} else {
		hdqtd_server_drop_all(d);
	}
	uv_close((uv_handle_t *)&d->tick, NULL);
	if (d->spin_open)
		uv_close((uv_handle_t *)&d->spin, NULL);
	d->spin_open = 0;
	uv_close((uv_handle_t *)&d->sig_term, NULL);
	uv_close((uv_handle_t *)&d->sig_int, NULL);
	uv_close((uv_handle_t *)&d->sig_hup, NULL);
}

/* Options and configuration: -1 to go on, else the exit status. */
static int configure(hdqtd *d, int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'}, {"socket", required_argument, NULL, 's'},
		{"db", required_argument, NULL, 'd'},     {"set", required_argument, NULL, 'S'},
		{"foreground", no_argument, NULL, 'f'},   {"check-config", no_argument, NULL, 'C'},
		{"version", no_argument, NULL, 'V'},      {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	hdqtd_config_default(&d->cfg);
	const char *config = NULL, *sock = NULL, *db = NULL;
	static char *sets[64];
	int nsets = 0, check_only = 0, c;
	while ((c = getopt_long(argc, argv, "c:s:d:fh", opts, NULL)) != -1) {
		switch (c) {
		case 'c': config = optarg; break;
		case 's': sock = optarg; break;
		case 'd': db = optarg; break;
		case 'f': break;
		case 'C': check_only = 1; break;
		case 'S':
			if (nsets == 64) {
				fprintf(stderr, "hdqtd: too many --set options\n");
				return 2;
			}
			sets[nsets++] = optarg;
			break;
		case 'V': printf("hdqtd %s (kernel %s)\n", HDQT_VERSION, hdqt_kernel_name()); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "hdqtd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	char err[600];
	if (!config && access(HDQT_SYSCONFDIR "/hdqtd/hdqtd.conf", R_OK) == 0)
		config = HDQT_SYSCONFDIR "/hdqtd/hdqtd.conf";
	if (config) {
		snprintf(d->config_path, sizeof(d->config_path), "%s", config);
		if (hdqtd_config_load(&d->cfg, config, err, sizeof(err)) < 0) {
			fprintf(stderr, "hdqtd: invalid configuration: %s\n", err);
			return 2;
		}
	}
	if (apply_sets(&d->cfg, sets, nsets, err, sizeof(err)) < 0) {
		fprintf(stderr, "hdqtd: invalid configuration: %s\n", err);
		return 2;
	}
	d->sets = sets; /* argv strings: valid for the whole run */
	d->n_sets = nsets;
	/* --socket and --db are overrides like --set, re-applied on SIGHUP. */
	static char sock_set[200], db_set[4200];
	if (sock && nsets < 64) {
		snprintf(sock_set, sizeof(sock_set), "daemon.socket=%s", sock);
		sets[nsets++] = sock_set;
	}
	if (db && nsets < 64) {
		snprintf(db_set, sizeof(db_set), "daemon.database=%s", db);
		sets[nsets++] = db_set;
	}
	d->n_sets = nsets;
	if ((sock && hdqtd_config_set(&d->cfg, "daemon", "socket", sock, err, sizeof(err)) < 0) ||
	    (db && hdqtd_config_set(&d->cfg, "daemon", "database", db, err, sizeof(err)) < 0) ||
	    hdqtd_config_check(&d->cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "hdqtd: invalid configuration: %s\n", err);
		return 2;
	}
	if (d->cfg.admin_group[0]) {
		struct group *g = getgrnam(d->cfg.admin_group);
		if (!g) {
			fprintf(stderr, "hdqtd: invalid configuration: access.admin_group: no group \"%s\"\n",
				d->cfg.admin_group);
			return 2;
		}
		d->admin_gid = g->gr_gid;
		d->admin_gid_set = 1;
	}
	char warn[400];
	if (hdqtd_config_warning(&d->cfg, warn, sizeof(warn))) /* the journal has stderr */
		fprintf(stderr, "hdqtd: warning: %s\n", warn);
	if (check_only) {
		printf("configuration OK\n");
		return 0;
	}
	return -1;
}

int main(int argc, char **argv)
{
	hdqtd *d = calloc(1, sizeof(*d));
	if (!d)
		return 1;
	int status = configure(d, argc, argv);
	if (status >= 0) {
		free(d);
		return status;
	}
	status = 1;
	char err[512];
	hdqtd_log_init(d->cfg.log_level);
	hdqtd_metrics_init(&d->stats);
	signal(SIGPIPE, SIG_IGN);

	/* Open the database and the serving state. */
	hdqt_store_opts so;
	hdqtd_config_store_opts(&d->cfg, &so);
	so.busy_timeout_ms = 5000;
	so.check_progress = extend_start_timeout; /* quick_check reads the whole file */
	int rc = hdqt_store_open(&d->store, d->cfg.db, &so, err, sizeof(err));
	if (rc < 0) {
		hdqtd_log(LOG_ERR, "database %s: %s", d->cfg.db, err);
		goto out;
	}
	if ((rc = hdqtd_openset_new(d)) < 0) {
		hdqtd_log(LOG_ERR, "out of memory");
		goto out;
	}
	if ((rc = hdqtd_reload_classes(d)) < 0 || (rc = hdqtd_load_model(d)) < 0 ||
	    (rc = hdqtd_load_counts(d)) < 0) {
		hdqtd_log(LOG_ERR, "database %s: %s", d->cfg.db,
			  rc == HDQT_EFORMAT ? "the current model does not take this build's features"
					     : hdqt_store_errmsg(d->store));
		goto out;
	}
	hdqtd_fleet_cleanup(d);
	if ((rc = hdqt_feat_new(&d->feat, d->cfg.window)) < 0) {
		hdqtd_log(LOG_ERR, "feature extractor: %s", hdqt_strerror(rc));
		goto out;
	}
	d->loop = uv_default_loop();
	d->started = hdqtd_now();
	if (hdqtd_writer_start(&d->writer, d->loop, &d->cfg, err, sizeof(err)) < 0) {
		hdqtd_log(LOG_ERR, "database writer: %s", err);
		goto out;
	}
	hdqtd_trainer_cb cb = hdqtd_trainer_callbacks;
	cb.arg = d;
	if (hdqtd_trainer_start(&d->trainer, d->loop, &d->cfg, &cb, err, sizeof(err)) < 0) {
		hdqtd_log(LOG_ERR, "training thread: %s", err);
		goto out;
	}
	if (hdqtd_server_listen(d, err, sizeof(err)) < 0) {
		hdqtd_log(LOG_ERR, "%s", err);
		d->bound = 0; /* never unlink a socket that another daemon may own */
		hdqtd_trainer_stop(d->trainer);
		d->trainer = NULL;
		if (d->listening) {
			d->listening = 0;
			uv_close((uv_handle_t *)&d->listener, NULL);
		}
		uv_run(d->loop, UV_RUN_DEFAULT); /* let the closed handles finish */
		uv_loop_close(d->loop);
		goto out;
	}
	uint64_t tick_ms = 1000;
#if HAVE_LIBSYSTEMD
	if (sd_watchdog_enabled(0, &d->watchdog_usec) > 0 && d->watchdog_usec / 2000 < tick_ms)
		tick_ms = d->watchdog_usec / 2000 ? d->watchdog_usec / 2000 : 1;
#endif
	d->sig_term.data = d->sig_int.data = d->sig_hup.data = d->tick.data = d;
	if ((rc = uv_signal_init(d->loop, &d->sig_term)) < 0 ||
	    (rc = uv_signal_init(d->loop, &d->sig_int)) < 0 ||
	    (rc = uv_signal_init(d->loop, &d->sig_hup)) < 0 || (rc = uv_timer_init(d->loop, &d->tick)) < 0 ||
	    (rc = uv_signal_start(&d->sig_term, on_signal, SIGTERM)) < 0 ||
	    (rc = uv_signal_start(&d->sig_int, on_signal, SIGINT)) < 0 ||
	    (rc = uv_signal_start(&d->sig_hup, on_signal, SIGHUP)) < 0 ||
	    (rc = uv_timer_start(&d->tick, on_tick, tick_ms, tick_ms)) < 0) {
		/* Cannot happen short of running out of file descriptors. */
		hdqtd_log(LOG_ERR, "signal and timer handles: %s", uv_strerror(rc));
		goto out;
	}
	/* Counted once, as a round counts them, for the busy polling's rule
	 * (server.c, core_to_spare). */
	d->ncpu = hdqtd_trainer_cpus();
	/* The busy-poll handle (server.c): never what keeps the loop running. */
	if ((rc = uv_idle_init(d->loop, &d->spin)) == 0) {
		d->spin.data = d;
		d->spin_open = 1;
		uv_unref((uv_handle_t *)&d->spin);
	} else {
		if (d->cfg.busy_poll_us > 0)
			hdqtd_log(LOG_WARNING, "daemon.busy_poll_us: no idle handle (%s): the loop "
				  "never polls", uv_strerror(rc));
		d->cfg.busy_poll_us = 0;
	}
	const int64_t pend = d->pending_total;
	const char *isa_env = getenv("HDQT_ISA");
	if (isa_env && *isa_env && strcasecmp(isa_env, hdqt_isa_name()) != 0)
		hdqtd_log(LOG_WARNING, "HDQT_ISA=%.32s not understood (native, avx2 or baseline): "
			  "running uncapped", isa_env);
	hdqtd_log(LOG_NOTICE, "hdqtd %s ready on %s%s: database %s, model %lld, %d classes, %lld samples "
		  "pending, %s %d/%d-bit, %s, kernel %s, isa %s, cpus %d", HDQT_VERSION, d->cfg.socket,
		  d->socket_activated ? " (socket activation)" : "", d->cfg.db,
		  (long long)d->model_version, d->n_classes, (long long)pend,
		  hdqt_mode_name(d->cfg.quant), d->cfg.bits, d->cfg.acc_bits,
		  hdqt_cl_method_name(d->cfg.strategy), hdqt_kernel_name(), hdqt_isa_name(), d->ncpu);
	notify("READY=1");
	/* Samples left pending by a round that a crash or stop interrupted are
	 * picked up again by the auto policy (or an explicit train). */
	hdqtd_maybe_train(d);

	uv_run(d->loop, UV_RUN_DEFAULT);
	status = 0;
	if (d->stopping && d->stop_timer_open && !uv_is_closing((uv_handle_t *)&d->stop_timer)) {
		/* Every client left in time: the unreferenced timer is still open. */
		uv_close((uv_handle_t *)&d->stop_timer, NULL);
		uv_run(d->loop, UV_RUN_DEFAULT);
	}

	int close_rc = uv_loop_close(d->loop);
	if (close_rc < 0)
		hdqtd_log(LOG_WARNING, "loop closed with handles open: %s", uv_strerror(close_rc));
	hdqtd_log(LOG_NOTICE, "stopped");
out:
	hdqtd_writer_free(d->writer); /* no job is left once uv_run returned */
	hdqtd_fleet_free(d);
	hdqtd_openset_free(d);
	free(d->describe);
	hdqt_store_close(d->store);
	hdqt_model_free(d->model);
	hdqt_feat_free(d->feat);
	cJSON_Delete(d->metrics);
	hdqt_json_free(d->json);
	free(d->classes);
	free(d->learned);
	free(d);
	return status;
}
