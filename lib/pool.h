/* SPDX-License-Identifier: MIT */
/*
 * A small persistent thread pool for the engine's parallel loops.
 *
 * pool_run(p, n, fn, arg) calls fn(arg, task, worker) for every task in
 * [0, n), spread over the pool's threads (the caller is worker 0), and
 * returns when all have returned.  Tasks must be independent; callers
 * split work over output rows and never over a reduction, so results are
 * the same for every thread count.  A NULL pool runs the tasks in order on
 * the caller.  One caller at a time per pool.
 */
#pragma once

#define POOL_MAX_THREADS 64

typedef struct pool pool;
typedef void (*pool_fn)(void *arg, int task, int worker);

/* threads >= 1 (threads - 1 workers are started); HDQT_EINVAL, HDQT_ENOMEM. */
int pool_new(pool **out, int threads);
void pool_free(pool *p);
/* Threads of p (1 for NULL). */
int pool_size(const pool *p);
void pool_run(pool *p, int n, pool_fn fn, void *arg);
