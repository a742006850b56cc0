/* SPDX-License-Identifier: MIT */
/* lib/pool.c: every task runs exactly once per run, and the run returns
 * only when all have; alternating task counts exercise the hand-over
 * between generations (a task once ran twice, or after its run returned,
 * when a late worker claimed it with the next run's count). */
#include <stdatomic.h>
#include <string.h>

#include "hdqt.h"
#include "pool.h"
#include "testutil.h"

typedef struct job {
	atomic_int cnt[8];
	int n, threads; /* worker indices lie in [0, threads): callers size per-worker buffers so */
} job;

static atomic_long bad;

static void count_task(void *a, int t, int w)
{
	job *j = a;
	if (t < 0 || t >= j->n || w < 0 || w >= j->threads) {
		atomic_fetch_add(&bad, 1);
		return;
	}
	atomic_fetch_add(&j->cnt[t], 1);
}

START_TEST(test_each_task_once)
{
	for (int threads = 1; threads <= 4; threads++) {
		pool *p;
		ck_assert_int_eq(pool_new(&p, threads), 0);
		ck_assert_int_eq(pool_size(p), threads);
		long dup = 0, miss = 0;
		job jobs[2];
		for (long r = 0; r < 200000; r++) {
			job *j = &jobs[r & 1];
			const int n = (r & 1) ? 2 : 5 + (int)(r % 3);
			memset(j, 0, sizeof(*j));
			j->n = n;
			j->threads = threads;
			pool_run(p, n, count_task, j);
			for (int t = 0; t < n; t++) {
				int c = atomic_load(&j->cnt[t]);
				dup += c > 1;
				miss += c < 1;
			}
		}
		pool_free(p);
		ck_assert_msg(dup == 0 && miss == 0 && atomic_load(&bad) == 0,
			      "%d threads: %ld tasks ran twice, %ld not before return, %ld bad", threads, dup,
			      miss, (long)atomic_load(&bad));
	}
	pool *p;
	ck_assert_int_eq(pool_new(&p, 0), HDQT_EINVAL);
	ck_assert_int_eq(pool_new(&p, POOL_MAX_THREADS + 1), HDQT_EINVAL);
	ck_assert_int_eq(pool_size(NULL), 1);
	job j = {.n = 3, .threads = 1};
	pool_run(NULL, 3, count_task, &j); /* no pool: in order, on the caller */
	for (int t = 0; t < 3; t++)
		ck_assert_int_eq(atomic_load(&j.cnt[t]), 1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("pool");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_each_task_once);
	suite_add_tcase(s, tc);
	return testutil_run(s);
}
