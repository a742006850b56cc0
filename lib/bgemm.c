/* SPDX-License-Identifier: MIT */
/*
 * Hadamard binary matrix multiply: operand storage, the scalar reference
 * and the choice of kernel (the formula and the float contract: bgemm.h).
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "bgemm.h"
#include "config.h"
#include "hdqt.h"

/* Grow-only, and cleared: rows never written must read as zero. */
static void *zgrow(void **mem, size_t *cap, size_t n)
{
	if (*cap < n) {
		void *p = realloc(*mem, n);
		if (!p)
			return NULL;
		*mem = p;
		*cap = n;
	}
	memset(*mem, 0, n);
	return *mem;
}

int bgemm_a_alloc(bgemm_a *a, int R, int K, int g, int with_mu)
{
	if (R < 1 || K < 1 || K > HDQT_MAX_DIM || g < 1)
		return HDQT_EINVAL;
	const int R4 = (R + 3) / 4 * 4, nw = (K + 31) / 32, ns = bgemm_nseg(K, g);
	size_t nb = (size_t)R4 * nw * 4, nc = (size_t)R4 * ns * sizeof(float);
	char *p = zgrow(&a->mem, &a->cap, nb + nc * (with_mu ? 2 : 1));
	if (!p)
		return HDQT_ENOMEM;
	a->bits = (uint32_t *)p;
	a->c = (float *)(p + nb);
	a->mu = with_mu ? (float *)(p + nb + nc) : NULL;
	a->R = R;
	a->R4 = R4;
	a->K = K;
	a->g = g;
	a->nw = nw;
	a->ns = ns;
	return 0;
}

void bgemm_a_free(bgemm_a *a)
{
	free(a->mem);
	memset(a, 0, sizeof(*a));
}

int bgemm_w_alloc(bgemm_w *w, int M, int K, int g)
{
	if (M < 1 || K < 1 || K > HDQT_MAX_DIM || g < 1)
		return HDQT_EINVAL;
	const int M16 = (M + 15) / 16 * 16, nw = (K + 31) / 32, ns = bgemm_nseg(K, g);
	size_t nb = (size_t)M16 * nw * 4, nc = (size_t)M16 * ns * sizeof(float);
	char *p = zgrow(&w->mem, &w->cap, nb + 2 * nc);
	if (!p)
		return HDQT_ENOMEM;
	w->bits = (uint32_t *)p;
	w->c = (float *)(p + nb);
	w->sw = (float *)(p + nb + nc);
	w->M = M;
	w->M16 = M16;
	w->K = K;
	w->g = g;
	w->nw = nw;
	w->ns = ns;
	return 0;
}

void bgemm_w_free(bgemm_w *w)
{
	free(w->mem);
	memset(w, 0, sizeof(*w));
}

/* Segment s spans bits [lo, hi). */
static void seg_range(int K, int g, int s, int *lo, int *hi)
{
	*lo = g >= K ? 0 : s * g;
	*hi = g >= K ? K : (s * g + g < K ? s * g + g : K);
}

/* popcount of (a ^ b) over bits [lo, hi) of two row-major bit rows. */
static int popc_range(const uint32_t *a, const uint32_t *b, int lo, int hi)
{
	int n = 0;
	for (int k = lo; k < hi;) {
		const int wi = k >> 5, o = k & 31;
		const int take = 32 - o < hi - k ? 32 - o : hi - k;
		const uint32_t m = take == 32 ? ~0u : ((1u << take) - 1u) << o;
		n += __builtin_popcount(((a ? a[wi] : 0u) ^ b[wi]) & m); /* bits past hi masked */
		k += take;
	}
	return n;
}

void bgemm_w_set_row(bgemm_w *w, int r, const uint32_t *bits, const float *c)
{
	const int b = r / 16, lane = r % 16;
	/* bits past K must be zero: the kernels XOR whole words */
	const uint32_t last = w->K % 32 ? (1u << (w->K % 32)) - 1u : ~0u;
	for (int i = 0; i < w->nw; i++)
		w->bits[((size_t)b * w->nw + i) * 16 + lane] = i == w->nw - 1 ? bits[i] & last : bits[i];
	for (int s = 0; s < w->ns; s++) {
		int lo, hi;
		seg_range(w->K, w->g, s, &lo, &hi);
		const int d = (hi - lo) - 2 * popc_range(NULL, bits, lo, hi);
		const size_t at = ((size_t)b * w->ns + s) * 16 + lane;
		w->c[at] = c[s];
		w->sw[at] = c[s] * (float)d;
	}
}

void bgemm_w_get_row(const bgemm_w *w, int r, uint32_t *bits)
{
	const int b = r / 16, lane = r % 16;
	for (int i = 0; i < w->nw; i++)
		bits[i] = w->bits[((size_t)b * w->nw + i) * 16 + lane];
}

void bgemm_ref(const bgemm_a *a, const bgemm_w *w, int r0, int r1, float *Y, int ldy)
{
	uint32_t wrow[HDQT_MAX_DIM / 32 + 1];
	if (r1 > a->R)
		r1 = a->R;
	for (int m = 0; m < w->M; m++) {
		bgemm_w_get_row(w, m, wrow);
		const int b = m / 16, lane = m % 16;
		for (int r = r0; r < r1; r++) {
			const uint32_t *ar = a->bits + (size_t)r * a->nw;
			float acc = 0.0f;
			for (int s = 0; s < a->ns; s++) {
				int lo, hi;
				seg_range(a->K, a->g, s, &lo, &hi);
				const int d = (hi - lo) - 2 * popc_range(ar, wrow, lo, hi);
				const size_t at = ((size_t)b * w->ns + s) * 16 + lane;
				const float t = a->c[(size_t)r * a->ns + s] * w->c[at];
				acc = fmaf((float)d, t, acc);
				if (a->mu)
					acc = fmaf(a->mu[(size_t)r * a->ns + s], w->sw[at], acc);
			}
			Y[(size_t)r * ldy + m] = acc;
		}
	}
}

/* ---- kernel choice (once, at first use) ---- */

typedef struct bkernel {
	const char *name;
	bgemm_fn fn; /* NULL: the reference */
	int (*supported)(void);
} bkernel;

static int always(void) { return 1; }

static const bkernel kernels[] = {
#if HDQT_X86_64
	{"avx512bitalg", bgemm_x86_bitalg, bgemm_x86_bitalg_supported},
	{"avx512", bgemm_x86_avx512, bgemm_x86_avx512_supported},
	{"avx2", bgemm_x86_avx2, bgemm_x86_avx2_supported},
#endif
#if HDQT_AARCH64
	{"neon", bgemm_arm_neon, bgemm_arm_neon_supported},
#endif
	{"scalar", NULL, always},
};
#define N_KERNELS (sizeof(kernels) / sizeof(kernels[0]))

/* Written once by pthread_once (or by a test/bench override before any
 * worker starts), read-only afterwards. */
static const bkernel *active;
static pthread_once_t active_once = PTHREAD_ONCE_INIT;

static void pick(void)
{
	const char *force = getenv("HDQT_BKERNEL");
	const char *all = getenv("HDQT_KERNEL");
	if ((!force || !*force) && all && strcmp(all, "scalar") == 0)
		force = "scalar";
	/* a forced name this CPU has; otherwise (unknown, unsupported) the best */
	for (size_t i = 0; force && *force && i < N_KERNELS; i++)
		if (strcmp(force, kernels[i].name) == 0 && kernels[i].supported()) {
			active = &kernels[i];
			return;
		}
	for (size_t i = 0; i < N_KERNELS; i++)
		if (kernels[i].supported()) {
			active = &kernels[i];
			return;
		}
	active = &kernels[N_KERNELS - 1];
}

static const bkernel *get(void)
{
	pthread_once(&active_once, pick);
	return active;
}

const char *bgemm_kernel_name(void) { return get()->name; }

const char *hdqt_binary_kernel_name(void) { return bgemm_kernel_name(); }

int bgemm_kernel_select(const char *name)
{
	get();
	for (size_t i = 0; i < N_KERNELS; i++)
		if (name && strcmp(name, kernels[i].name) == 0) {
			if (!kernels[i].supported())
				return HDQT_ENOTFOUND;
			active = &kernels[i];
			return 0;
		}
	return HDQT_ENOTFOUND;
}

int bgemm_fast(int K, int g)
{
	return g >= K || g == 16 || g % 32 == 0;
}

void bgemm_run(const bgemm_a *a, const bgemm_w *w, int r0, int r1, float *Y, int ldy)
{
	const bkernel *k = get();
	if (k->fn && bgemm_fast(a->K, a->g))
		k->fn(a, w, r0, r1, Y, ldy);
	else
		bgemm_ref(a, w, r0, r1, Y, ldy);
}
