/* SPDX-License-Identifier: MIT */
/*
 * hdqtd: the continual-learning daemon.  Top level: options, configuration,
 * signals, systemd notification, start-up and orderly shutdown.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void on_signal(uv_signal_t *h, int signum)
{
	hdqtd *d = h->data;
	if (signum == SIGHUP) {
		if (!d->config_path[0]) {
			hdqtd_log(LOG_NOTICE, "SIGHUP: no configuration file to reload");
			return;
		}
		hdqtd_config n = d->cfg;
		char err[512];
		if (hdqtd_config_load(&n, d->config_path, err, sizeof(err)) < 0 ||
		    hdqtd_config_check(&n, err, sizeof(err)) < 0) {
			hdqtd_log(LOG_ERR, "SIGHUP: configuration not reloaded: %s", err);
			return;
		}
		/* What the loop can change on the fly; the rest needs a restart. */
		d->cfg.log_level = n.log_level;
		d->cfg.max_connections = n.max_connections;
		d->cfg.max_batch = n.max_batch;
		d->cfg.auto_train = n.auto_train;
		d->cfg.auto_min_samples = n.auto_min_samples;
		d->cfg.auto_interval_s = n.auto_interval_s;
		hdqtd_log_init(n.log_level);
		if (strcmp(n.socket, d->cfg.socket) || strcmp(n.db, d->cfg.db) ||
		    n.quant != d->cfg.quant || n.n_hidden != d->cfg.n_hidden ||
		    n.epochs != d->cfg.epochs || n.strategy != d->cfg.strategy ||
		    n.memory != d->cfg.memory || n.window != d->cfg.window)
			hdqtd_log(LOG_WARNING, "SIGHUP: socket, database, model and training keys "
				  "take effect at the next restart");
		hdqtd_log(LOG_NOTICE, "configuration reloaded from %s", d->config_path);
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
	/* Requests already read have been answered (they run synchronously);
	 * a running round is canceled and its samples stay pending. */
	hdqtd_trainer_stop(d->trainer);
	d->trainer = NULL;
	hdqtd_server_close(d);
	/* Replies are flushed before each connection closes, but a client
	 * that never reads must not hold the daemon up: 5 s, then drop. */
	uv_timer_init(d->loop, &d->stop_timer);
	d->stop_timer.data = d;
	uv_timer_start(&d->stop_timer, on_stop_timer, 5000, 0);
	uv_unref((uv_handle_t *)&d->stop_timer);
	uv_close((uv_handle_t *)&d->tick, NULL);
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
	char *sets[64];
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
		case 'V': printf("hdqtd %s\n", HDQT_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "hdqtd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	char err[512];
	if (!config && access(HDQT_SYSCONFDIR "/hdqtd/hdqtd.conf", R_OK) == 0)
		config = HDQT_SYSCONFDIR "/hdqtd/hdqtd.conf";
	if (config) {
		snprintf(d->config_path, sizeof(d->config_path), "%s", config);
		if (hdqtd_config_load(&d->cfg, config, err, sizeof(err)) < 0) {
			fprintf(stderr, "hdqtd: invalid configuration: %s\n", err);
			return 2;
		}
	}
	for (int i = 0; i < nsets; i++) {
		char buf[4200];
		snprintf(buf, sizeof(buf), "%s", sets[i]);
		char *dot = strchr(buf, '.'), *eq = strchr(buf, '=');
		if (!dot || !eq || dot > eq) {
			fprintf(stderr, "hdqtd: --set expects SECTION.KEY=VALUE, got '%s'\n", sets[i]);
			return 2;
		}
		*dot = *eq = '\0';
		if (hdqtd_config_set(&d->cfg, buf, dot + 1, eq + 1, err, sizeof(err)) < 0) {
			fprintf(stderr, "hdqtd: invalid configuration: --set %s\n", err);
			return 2;
		}
	}
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
	signal(SIGPIPE, SIG_IGN);

	/* Open the database and the serving state. */
	hdqt_store_opts so;
	hdqtd_config_store_opts(&d->cfg, &so);
	so.busy_timeout_ms = 5000;
	int rc = hdqt_store_open(&d->store, d->cfg.db, &so, err, sizeof(err));
	if (rc < 0) {
		hdqtd_log(LOG_ERR, "database %s: %s", d->cfg.db, err);
		goto out;
	}
	if ((rc = hdqtd_reload_classes(d)) < 0 || (rc = hdqtd_load_model(d)) < 0) {
		hdqtd_log(LOG_ERR, "database %s: %s", d->cfg.db,
			  rc == HDQT_EFORMAT ? "the current model does not take this build's features"
					     : hdqt_store_errmsg(d->store));
		goto out;
	}
	if ((rc = hdqt_feat_new(&d->feat, d->cfg.window)) < 0) {
		hdqtd_log(LOG_ERR, "feature extractor: %s", hdqt_strerror(rc));
		goto out;
	}
	d->loop = uv_default_loop();
	d->started = hdqtd_now();
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
	uv_signal_init(d->loop, &d->sig_term);
	uv_signal_init(d->loop, &d->sig_int);
	uv_signal_init(d->loop, &d->sig_hup);
	d->sig_term.data = d->sig_int.data = d->sig_hup.data = d;
	uv_signal_start(&d->sig_term, on_signal, SIGTERM);
	uv_signal_start(&d->sig_int, on_signal, SIGINT);
	uv_signal_start(&d->sig_hup, on_signal, SIGHUP);
	uint64_t tick_ms = 1000;
#if HAVE_LIBSYSTEMD
	if (sd_watchdog_enabled(0, &d->watchdog_usec) > 0 && d->watchdog_usec / 2000 < tick_ms)
		tick_ms = d->watchdog_usec / 2000 ? d->watchdog_usec / 2000 : 1;
#endif
	uv_timer_init(d->loop, &d->tick);
	d->tick.data = d;
	uv_timer_start(&d->tick, on_tick, tick_ms, tick_ms);

	int64_t pend = 0;
	hdqt_store_samples_pending_count(d->store, -1, &pend);
	hdqtd_log(LOG_NOTICE, "hdqtd %s ready on %s%s: database %s, model %lld, %d classes, %lld samples "
		  "pending, %s %d/%d-bit, %s, kernel %s", HDQT_VERSION, d->cfg.socket,
		  d->socket_activated ? " (socket activation)" : "", d->cfg.db,
		  (long long)d->model_version, d->n_classes, (long long)pend,
		  hdqt_mode_name(d->cfg.quant), d->cfg.bits, d->cfg.acc_bits,
		  hdqt_cl_method_name(d->cfg.strategy), hdqt_kernel_name());
	notify("READY=1");
	/* Samples left pending by a round that a crash or stop interrupted are
	 * picked up again by the auto policy (or an explicit train). */
	hdqtd_maybe_train(d);

	uv_run(d->loop, UV_RUN_DEFAULT);
	status = 0;
	if (d->stopping && !uv_is_closing((uv_handle_t *)&d->stop_timer)) {
		/* Every client left in time: the unreferenced timer is still open. */
		uv_close((uv_handle_t *)&d->stop_timer, NULL);
		uv_run(d->loop, UV_RUN_DEFAULT);
	}

	int close_rc = uv_loop_close(d->loop);
	if (close_rc < 0)
		hdqtd_log(LOG_WARNING, "loop closed with handles open: %s", uv_strerror(close_rc));
	hdqtd_log(LOG_NOTICE, "stopped");
out:
	hdqt_store_close(d->store);
	hdqt_model_free(d->model);
	hdqt_feat_free(d->feat);
	cJSON_Delete(d->metrics);
	free(d->classes);
	free(d->learned);
	free(d);
	return status;
}
