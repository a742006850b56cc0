/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#include "log.h"

/* The level changes on SIGHUP while the training and writer threads log:
 * atomic.  The prefix is set once at start-up, before any thread exists. */
static atomic_int log_level = LOG_INFO;
static int log_prefix = 1;

void hdqtd_log_init(int level)
{
	atomic_store(&log_level, level);
	log_prefix = !isatty(STDERR_FILENO);
}

void hdqtd_log_set_level(int level)
{
	atomic_store(&log_level, level);
}

void hdqtd_log(int prio, const char *fmt, ...)
{
	if (prio > atomic_load(&log_level))
		return;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* One write per line so that lines of the two threads never interleave. */
	if (log_prefix)
		fprintf(stderr, "<%d>%s\n", prio, msg);
	else
		fprintf(stderr, "hdqtd: %s\n", msg);
}
