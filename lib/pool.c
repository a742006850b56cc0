/* SPDX-License-Identifier: MIT */
/*
 * Thread pool (pool.h).
 *
 * One 64-bit ticket holds the run's generation (high half) and the next
 * task (low half).  A worker claims a task with a compare-and-swap that
 * succeeds only for the current generation.  Before a run writes fn, arg
 * and ntasks it closes the previous generation (next task = CLOSED), so a
 * worker that read the old ticket can no longer claim anything with it and
 * run a new task twice or with a stale count; the new generation is then
 * published, and fn and arg are read only after a successful claim.  The caller counts finished tasks and returns
 * when all are done.  Idle workers spin briefly (a training step has tens
 * of parallel regions a few microseconds apart), then sleep on a condition
 * variable, so an idle daemon burns no CPU.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "hdqt.h"
#include "pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() ((void)0)
#endif

enum { SPIN = 1 << 11 }; /* ~0.1 ms of pause: a descheduled peer is not waited for long */

struct pool {
	int n;
	pthread_t th[POOL_MAX_THREADS];
	int started;
	_Atomic uint64_t ticket;  /* gen << 32 | next task */
	atomic_int done;          /* tasks finished in this run */
	atomic_int sleepers;
	atomic_int quit;
	atomic_uint ntasks;
	pool_fn fn;
	void *arg;
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

typedef struct worker_arg {
	pool *p;
	int id;
} worker_arg;

#define CLOSED 0xffffffffu /* the next task of a generation that takes no more claims */

/* Claim and run tasks of generation gen until none is left. */
static void run_tasks(pool *p, uint32_t gen, int worker)
{
	for (;;) {
		uint64_t t = atomic_load(&p->ticket);
		if ((uint32_t)(t >> 32) != gen || (uint32_t)t >= atomic_load(&p->ntasks))
			return;
		if (!atomic_compare_exchange_weak(&p->ticket, &t, t + 1))
			continue;
		/* Claimed: gen is still current, so fn, arg and ntasks are its. */
		p->fn(p->arg, (int)(uint32_t)t, worker);
		atomic_fetch_add(&p->done, 1);
	}
}

static void *worker_main(void *a)
{
	worker_arg wa = *(worker_arg *)a;
	free(a);
	pool *p = wa.p;
	uint32_t seen = (uint32_t)(atomic_load(&p->ticket) >> 32);
	while (!atomic_load(&p->quit)) {
		uint32_t gen = (uint32_t)(atomic_load(&p->ticket) >> 32);
		for (int s = 0; gen == seen && s < SPIN && !atomic_load(&p->quit); s++) {
			cpu_relax();
			gen = (uint32_t)(atomic_load(&p->ticket) >> 32);
		}
		if (gen == seen) {
			pthread_mutex_lock(&p->mu);
			atomic_fetch_add(&p->sleepers, 1);
			while ((uint32_t)(atomic_load(&p->ticket) >> 32) == seen && !atomic_load(&p->quit))
				pthread_cond_wait(&p->cv, &p->mu);
			atomic_fetch_sub(&p->sleepers, 1);
			pthread_mutex_unlock(&p->mu);
			continue;
		}
		seen = gen;
		run_tasks(p, gen, wa.id);
	}
	return NULL;
}

static void wake_all(pool *p)
{
	/* Sequentially consistent with the workers' "sleepers++, re-check":
	 * either the worker sees the new generation or we see it asleep. */
	if (atomic_load(&p->sleepers) > 0) {
		pthread_mutex_lock(&p->mu);
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mu);
	}
}

int pool_new(pool **out, int threads)
{
	if (!out || threads < 1 || threads > POOL_MAX_THREADS)
		return HDQT_EINVAL;
	pool *p = calloc(1, sizeof(*p));
	if (!p)
		return HDQT_ENOMEM;
	p->n = threads;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	for (int i = 1; i < threads; i++) {
		worker_arg *a = malloc(sizeof(*a));
		if (a) {
			a->p = p;
			a->id = i;
		}
		if (!a || pthread_create(&p->th[i], NULL, worker_main, a) != 0) {
			free(a);
			pool_free(p); /* joins the threads started so far */
			return HDQT_ENOMEM;
		}
		p->started = i;
	}
	*out = p;
	return 0;
}

void pool_free(pool *p)
{
	if (!p)
		return;
	atomic_store(&p->quit, 1);
	pthread_mutex_lock(&p->mu);
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	for (int i = 1; i <= p->started; i++)
		pthread_join(p->th[i], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p);
}

int pool_size(const pool *p)
{
	return p ? p->n : 1;
}

void pool_run(pool *p, int n, pool_fn fn, void *arg)
{
	if (n <= 0)
		return;
	if (!p || p->n == 1 || n == 1) {
		for (int i = 0; i < n; i++)
			fn(arg, i, 0);
		return;
	}
	const uint32_t old = (uint32_t)(atomic_load(&p->ticket) >> 32), gen = old + 1;
	atomic_store(&p->ticket, (uint64_t)old << 32 | CLOSED); /* no claim of the old run succeeds */
	p->fn = fn;
	p->arg = arg;
	atomic_store(&p->ntasks, (unsigned)n);
	atomic_store(&p->done, 0);
	atomic_store(&p->ticket, (uint64_t)gen << 32); /* publishes fn, arg, ntasks */
	wake_all(p);
	run_tasks(p, gen, 0);
	for (int s = 0; atomic_load(&p->done) < n; s++) {
		if (s < SPIN)
			cpu_relax();
		else
			sched_yield();
	}
}
