/* SPDX-License-Identifier: MIT */
/* Logging to stderr with syslog priority prefixes ("<6>..."), which journald
 * turns into priorities; plain text when stderr is a terminal. */
#pragma once

#include <syslog.h>

void hdqtd_log_init(int level);
/* Change the level at run time (any thread may be logging). */
void hdqtd_log_set_level(int level);
void hdqtd_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
