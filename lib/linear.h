/* SPDX-License-Identifier: MIT */
/* A bias-free linear layer Y = X W^T, forward and backward in every recipe. */
#pragma once

#include "gemm.h"
#include "hdqt.h"
#include "pool.h"

typedef struct linear {
	int in, out;  /* K, M */
	float *w;     /* out x in, row-major */
	float *v;     /* momentum buffer, same shape */
	float *gw;    /* last gradient, same shape */
	/* Forward weight cache: W quantised (rotated first under fwd_hadamard)
	 * and packed for the kernel.  Weights change only where linear_touch()
	 * is called; until then inference reuses it (it is deterministic:
	 * round-to-nearest), which makes a prediction several times cheaper. */
	gemm_packed wpack;
	float *wscale;
	int wcached;
	struct linear_bin *bin; /* HadaNets' packed binary weights (linear_hadanet.c) */
} linear;

static inline void linear_touch(linear *L) { L->wcached = 0; }

/* Scratch shared by the layers of one model (grow-only). */
typedef struct linear_scratch {
	float *f[6];
	size_t fcap[6];
	int8_t *q[2];
	size_t qcap[2];
	float *sa, *sb;
	size_t sacap, sbcap;
	gemm_ws ws;
	/* Threads (NULL: the caller's only; not owned), a packing workspace
	 * per thread, and B of the backward products packed once. */
	pool *pool;
	gemm_ws wws[POOL_MAX_THREADS];
	gemm_packed bpack;
	/* The column path (linear_colq_*): strips of floats and codes, their
	 * column statistics, and A packed straight from strips. */
	float *cqf, *cqmx;
	double *cqss;
	int8_t *cqc;
	uint8_t *ap;
	size_t cqfcap, cqmxcap, cqsscap, cqccap, apcap;
	void *bin; /* HadaNets' scratch (linear_hadanet.c) */
	int profile;                   /* hdqt_model_profile: time the phases */
	double prof[HDQT_PHASE_COUNT]; /* seconds per phase */
} linear_scratch;

int linear_init(linear *L, int in, int out);
void linear_free(linear *L);
/* Grow the output dimension to out (rows appended, zero-filled). */
int linear_grow(linear *L, int out);
void linear_scratch_free(linear_scratch *s);

/* Y (N x out) = X (N x in) W^T in recipe q.  x_unsigned: X is known to be
 * non-negative (after ReLU), so the unsigned grid may be used. */
int linear_forward(linear *L, const float *X, int N, int x_unsigned,
		   const hdqt_qconfig *q, linear_scratch *s, float *Y);
/* From dY (N x out): L->gw = dY^T X, and dX = dY W when dX != NULL.
 * x_unsigned as given to linear_forward (it matters under q->bwd_fwdq). */
int linear_backward(linear *L, const float *X, int x_unsigned, const float *dY, int N,
		    const hdqt_qconfig *q, linear_scratch *s, hdqt_rng *rng, float *dX);
/* One SGD step from L->gw, PyTorch's formulation with momentum mu and L2
 * weight decay wd: v = mu v + (g + wd w); w -= lr v, over s's pool.  Where
 * the family can, it rebuilds its cached forward operand for recipe q
 * (input x_unsigned, as linear_forward) from each block of new weights
 * while it is in cache; otherwise the cache is dropped (linear_touch).
 * Cannot fail: without memory for the cache the step is the plain one. */
void linear_sgd(linear *L, int x_unsigned, const hdqt_qconfig *q, linear_scratch *s, float mu,
		float wd, float lr);
