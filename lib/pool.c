/* SPDX-License-Identifier: MIT */
/*
 * Thread pool (pool.h).
 *
 * Each run cuts its n tasks into one contiguous chunk per thread (thread w
 * first runs tasks [w n / th, (w + 1) n / th), in order, then takes what is
 * left of the others'), so that phases split the same way keep their rows
 * on the same core: with one shared counter the rows a thread wrote were
 * read next by the other core, and at two threads the column path's loads
 * and SGD took twice the CPU time they take on one.
 *
 * Each chunk has a 64-bit ticket: the run's generation (high half) and the
 * chunk's next task (low half).  A thread claims a task with a
 * compare-and-swap that succeeds only for the current generation.  Before
 * a run writes fn, arg and ntasks it closes every ticket of the previous
 * generation (next task = CLOSED), so a thread that read an old ticket can
 * no longer claim anything with it and run a new task twice or with a
 * stale count; the new tickets are then published, then the generation
 * that wakes the workers, and fn and arg are read only after a successful
 * claim.  The caller counts finished tasks and returns
 * when all are done.  Idle workers spin briefly (a training step has tens
 * of parallel regions a few microseconds apart), then sleep on a condition
 * variable, so an idle daemon burns no CPU.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* A chunk's ticket on its own cache line (threads claim from their own). */
typedef struct chunk {
	_Alignas(64) _Atomic uint64_t ticket; /* gen << 32 | next task of the chunk */
} chunk;

struct pool {
	int n;
	pthread_t th[POOL_MAX_THREADS];
	int started;
	_Atomic uint64_t ticket;  /* gen << 32: a new run for the workers */
	chunk ch[POOL_MAX_THREADS];
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

/* Claim and run tasks of generation gen from chunk c until it is empty
 * (or the generation is over). */
static void run_chunk(pool *p, uint32_t gen, int c, int worker)
{
	for (;;) {
		uint64_t t = atomic_load(&p->ch[c].ticket);
		if ((uint32_t)(t >> 32) != gen)
			return;
		/* seen the generation's ticket: ntasks is its count */
		const unsigned n = atomic_load(&p->ntasks), th = (unsigned)p->n;
		const unsigned start = (unsigned)((uint64_t)n * (unsigned)c / th);
		const unsigned len = (unsigned)((uint64_t)n * (unsigned)(c + 1) / th) - start;
		if ((uint32_t)t >= len)
			return;
		if (!atomic_compare_exchange_weak(&p->ch[c].ticket, &t, t + 1))
			continue;
		/* Claimed: gen is still current, so fn, arg and ntasks are its. */
		p->fn(p->arg, (int)(start + (uint32_t)t), worker);
		atomic_fetch_add(&p->done, 1);
	}
}

/* Worker w's own chunk first, then the others' remainders. */
static void run_tasks(pool *p, uint32_t gen, int worker)
{
	for (int k = 0; k < p->n; k++)
		run_chunk(p, gen, (worker + k) % p->n, worker);
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
	pool *p = aligned_alloc(_Alignof(pool), sizeof(*p)); /* the chunks' cache lines */
	if (!p)
		return HDQT_ENOMEM;
	memset(p, 0, sizeof(*p));
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
	for (int c = 0; c < p->n; c++) /* no claim of the old run succeeds */
		atomic_store(&p->ch[c].ticket, (uint64_t)old << 32 | CLOSED);
	p->fn = fn;
	p->arg = arg;
	atomic_store(&p->ntasks, (unsigned)n);
	atomic_store(&p->done, 0);
	for (int c = 0; c < p->n; c++) /* publishes fn, arg, ntasks */
		atomic_store(&p->ch[c].ticket, (uint64_t)gen << 32);
	atomic_store(&p->ticket, (uint64_t)gen << 32); /* wakes the workers */
	wake_all(p);
	run_tasks(p, gen, 0);
	for (int s = 0; atomic_load(&p->done) < n; s++) {
		if (s < SPIN)
			cpu_relax();
		else
			sched_yield();
	}
}
