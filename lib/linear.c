/* SPDX-License-Identifier: MIT */
/*
 * Linear layer: storage, the loops shared by the quantisation families
 * (row-parallel quantisation, transforms, integer and float products over
 * the pool) and the dispatch to the family of the layer's recipe:
 * linear_hdqt.c (fp32, int, hdqt-paper, hdqt) or linear_hadanet.c.
 */
#include <math.h>
#include <stdatomic.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fwht.h"
#include "linear.h"
#include "linear_impl.h"
#include "quant.h"
#include "simd.h"
#include "blas.h"

#if HDQT_X86_64
#include <immintrin.h>
#endif

int linear_init(linear *L, int in, int out)
{
	memset(L, 0, sizeof(*L));
	size_t n = (size_t)in * out;
	L->w = calloc(n, sizeof(float));
	L->v = calloc(n, sizeof(float));
	L->gw = calloc(n, sizeof(float));
	if (!L->w || !L->v || !L->gw) {
		linear_free(L);
		return HDQT_ENOMEM;
	}
	L->in = in;
	L->out = out;
	return 0;
}

void linear_free(linear *L)
{
	linear_hdqt_family.release(L);
	linear_hadanet_family.release(L);
	free(L->w);
	free(L->v);
	free(L->gw);
	memset(L, 0, sizeof(*L));
}

static int grow_buf(float **p, size_t old_n, size_t n)
{
	float *q = realloc(*p, n * sizeof(float));
	if (!q)
		return HDQT_ENOMEM;
	memset(q + old_n, 0, (n - old_n) * sizeof(float));
	*p = q;
	return 0;
}

int linear_grow(linear *L, int out)
{
	if (out < L->out)
		return HDQT_EINVAL;
	size_t o = (size_t)L->in * L->out, n = (size_t)L->in * out;
	/* realloc may move each buffer; a failure leaves the old ones valid, and
	 * L->out only changes once all three have grown. */
	if (grow_buf(&L->w, o, n) || grow_buf(&L->v, o, n) || grow_buf(&L->gw, o, n))
		return HDQT_ENOMEM;
	L->out = out;
	linear_touch(L);
	return 0;
}

void linear_scratch_free(linear_scratch *s)
{
	for (int i = 0; i < 6; i++)
		free(s->f[i]);
	for (int i = 0; i < 2; i++)
		free(s->q[i]);
	free(s->sa);
	free(s->sb);
	gemm_ws_free(&s->ws);
	for (int i = 0; i < POOL_MAX_THREADS; i++)
		gemm_ws_free(&s->wws[i]);
	gemm_packed_free(&s->bpack);
	free(s->cqf);
	free(s->cqmx);
	free(s->cqss);
	free(s->cqc);
	free(s->ap);
	linear_hadanet_scratch_free(s);
	pool *keep = s->pool;
	memset(s, 0, sizeof(*s));
	s->pool = keep;
}

double linear_clock(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void *linear_grow_mem(void **p, size_t *cap, size_t n)
{
	if (*cap < n) {
		void *q = realloc(*p, n);
		if (!q)
			return NULL;
		*p = q;
		*cap = n;
	}
	return *p;
}


/* ---- parallel loops: every split is over rows, in blocks of 4 rows (the
 * float kernels' register blocking), so results do not depend on the
 * number of threads ---- */

/* Rows [r0, r1) of task t of a loop over R rows cut into n tasks. */
int linear_ntasks(const linear_scratch *s, int R)
{
	const int th = pool_size(s->pool);
	if (th == 1 || R < 8)
		return 1;
	int n = 4 * th, blocks = (R + 3) / 4;
	return n < blocks ? n : blocks;
}

void linear_task_rows(int R, int n, int t, int *r0, int *r1)
{
	const int blocks = (R + 3) / 4;
	int b0 = (int)((long)blocks * t / n), b1 = (int)((long)blocks * (t + 1) / n);
	*r0 = b0 * 4 < R ? b0 * 4 : R;
	*r1 = b1 * 4 < R ? b1 * 4 : R;
}

typedef struct par {
	linear_scratch *s;
	int R, n, J, K, blk;
	atomic_int rc;
	const float *x;
	float *y;
	const float *sa, *sb;
	float inv, step;
	const int8_t *qa;
	int8_t *q;
	float *scale;
	const quant_spec *sp;
	uint64_t seed;
	const gemm_packed *pb;
} par;

static void quant_task(void *arg, int t, int w)
{
	(void)w;
	par *p = arg;
	int r0, r1;
	linear_task_rows(p->R, p->n, t, &r0, &r1);
	quant_rows_part(p->x, r0, r1, p->K, p->sp, p->seed, p->step, p->q, p->scale);
}

/* quant_rows over the pool: the same codes for every thread count. */
void linear_quant_par(linear_scratch *s, const float *x, int R, int K, const quant_spec *sp,
		      hdqt_rng *rng, int8_t *q, float *scale)
{
	PHASE_BEGIN(s);
	par p = {.s = s, .R = R, .n = linear_ntasks(s, R), .K = K, .x = x, .sp = sp, .q = q, .scale = scale};
	p.step = sp->per_row ? 0.0f : quant_tensor_step(x, R, K, sp);
	p.seed = sp->stochastic ? quant_seed(rng) : 0;
	pool_run(s->pool, p.n, quant_task, &p);
	PHASE_END(s, HDQT_PHASE_QUANT);
}

static void fwht_task(void *arg, int t, int w)
{
	(void)w;
	par *p = arg;
	int r0, r1;
	linear_task_rows(p->R, p->n, t, &r0, &r1);
	if (r1 > r0)
		fwht_rows(p->y + (size_t)r0 * p->K, r1 - r0, p->K, p->blk);
}

void linear_fwht_par(linear_scratch *s, float *x, int R, int K, int blk)
{
	PHASE_BEGIN(s);
	par p = {.s = s, .R = R, .n = linear_ntasks(s, R), .K = K, .y = x, .blk = blk};
	pool_run(s->pool, p.n, fwht_task, &p);
	PHASE_END(s, HDQT_PHASE_FWHT);
}

static void gemm_task(void *arg, int t, int w)
{
	par *p = arg;
	int r0, r1;
	linear_task_rows(p->R, p->n, t, &r0, &r1);
	if (r1 > r0) {
		const gemm_rescale e = {.sa = p->sa + r0, .sb = p->sb, .inv = p->inv};
		int rc = gemm_q_packed_f(&p->s->wws[w], p->qa + (size_t)r0 * p->pb->K, r1 - r0, p->pb,
					 &e, p->y + (size_t)r0 * p->pb->J);
		if (rc < 0)
			atomic_store(&p->rc, rc); /* any failure: the caller reports one */
	}
}

/* Y (I x J) = (A . B^T) * sa[i] * sb[j] / div with B packed, rows of A over
 * the pool; the rescale happens in the product's store (gemm_q_packed_f). */
int linear_gemm_par(linear_scratch *s, const int8_t *qa, int I, const gemm_packed *pb,
		    const float *sa, const float *sb, float div, float *Y)
{
	PHASE_BEGIN(s);
	par p = {.s = s, .R = I, .n = linear_ntasks(s, I), .qa = qa, .pb = pb, .sa = sa, .sb = sb,
		 .inv = 1.0f / div, .y = Y};
	pool_run(s->pool, p.n, gemm_task, &p);
	PHASE_END(s, HDQT_PHASE_GEMM);
	return atomic_load(&p.rc);
}

static void f32_task(void *arg, int t, int w)
{
	(void)w;
	par *p = arg;
	int r0, r1;
	linear_task_rows(p->R, p->n, t, &r0, &r1);
	if (r1 > r0)
		gemm_f32_nn(p->x + (size_t)r0 * p->K, p->sb, r1 - r0, p->J, p->K, p->y + (size_t)r0 * p->J);
}

/* Float C (I x J) = A (I x K) . B (K x J), rows of A over the pool. */
void linear_f32_par(linear_scratch *s, const float *A, const float *B, int I, int J, int K, float *C)
{
	par p = {.s = s, .R = I, .n = linear_ntasks(s, I), .x = A, .sb = B, .J = J, .K = K, .y = C};
	pool_run(s->pool, p.n, f32_task, &p);
}

#if HAVE_CBLAS
/* The fp32 reference through BLAS over the pool: C is cut along its longer
 * side into blocks of about BLAS_BLOCK rows or columns (a multiple of 16),
 * each one single-threaded BLAS call.  The cut depends on the shape only,
 * so every element comes from the same call whatever the thread count. */
enum { BLAS_BLOCK = 128 };

typedef struct blas_job {
	int ta, tb, I, J, K, lda, ldb, by_cols, step;
	const float *A, *B;
	float *C;
} blas_job;

static void blas_task(void *arg, int t, int worker)
{
	(void)worker;
	const blas_job *b = arg;
	const int L = b->by_cols ? b->J : b->I;
	const int x0 = t * b->step, n = L - x0 < b->step ? L - x0 : b->step;
	if (n <= 0)
		return;
	if (b->by_cols && b->I == 1 && b->tb) /* one row of A against rows x0.. of B: see linear_blas_par */
		blas_sgemv(n, b->K, b->B + (size_t)x0 * b->ldb, b->ldb, b->A, b->ta ? b->lda : 1, b->C + x0);
	else if (b->by_cols) /* columns x0.. of op(B) and of C */
		blas_sgemm(b->ta, b->tb, b->I, n, b->K, b->A, b->lda,
			   b->B + (b->tb ? (size_t)x0 * b->ldb : (size_t)x0), b->ldb, b->C + x0, b->J);
	else /* rows x0.. of op(A) and of C */
		blas_sgemm(b->ta, b->tb, n, b->J, b->K,
			   b->A + (b->ta ? (size_t)x0 : (size_t)x0 * b->lda), b->lda, b->B, b->ldb,
			   b->C + (size_t)x0 * b->J, b->J);
}

/* One row of A times B^T (a prediction's forward) is a matrix-vector
 * product: OpenBLAS 0.3.21's sgemm packs all of B for it, 123-135 us for
 * 512 x 512 on Zen 3 against 23-29 us through sgemv (2026-12-07, a
 * throwaway harness).  The choice depends on the shape only, so it is the
 * same whatever the thread count. */
void linear_blas_par(linear_scratch *s, int ta, int tb, int I, int J, int K, const float *A, int lda,
		     const float *B, int ldb, float *C)
{
	blas_job b = {.ta = ta, .tb = tb, .I = I, .J = J, .K = K, .lda = lda, .ldb = ldb,
		      .by_cols = J >= I, .A = A, .B = B, .C = C};
	const int L = b.by_cols ? J : I;
	const int n = (L + BLAS_BLOCK / 2) / BLAS_BLOCK > 1 ? (L + BLAS_BLOCK / 2) / BLAS_BLOCK : 1;
	b.step = ((L + n - 1) / n + 15) / 16 * 16;
	pool_run(s->pool, n, blas_task, &b);
}
#endif

/* ---- packing B over the pool: disjoint column blocks, the same bytes ---- */

typedef struct pack_job {
	gemm_packed *pb;
	const int8_t *B;
	int nb, n;
} pack_job;

static void pack_task(void *arg, int t, int w)
{
	(void)w;
	const pack_job *j = arg;
	const int b0 = (int)((long)j->nb * t / j->n), b1 = (int)((long)j->nb * (t + 1) / j->n);
	if (b1 > b0)
		gemm_pack_blocks(j->pb, j->B, b0, b1);
}

int linear_pack_par(linear_scratch *s, gemm_packed *pb, const int8_t *B, int J, int K,
		    const gemm_params *p)
{
	PHASE_BEGIN(s);
	int nb = gemm_pack_begin(pb, B, J, K, p);
	if (nb > 0) {
		const int th = pool_size(s->pool);
		pack_job j = {.pb = pb, .B = B, .nb = nb, .n = th > 1 && nb >= 2 * th ? 2 * th : 1};
		pool_run(s->pool, j.n, pack_task, &j);
	}
	PHASE_END(s, HDQT_PHASE_PACK);
	return nb < 0 ? nb : 0;
}

/* ---- the column path: operands whose rows are the columns of a matrix ----
 *
 * The backward's products reduce over the batch (dW = dY^T X) or multiply
 * W^T: their operands are the columns of matrices stored by rows.  Rather
 * than a float transpose, a Hadamard pass over the transposed rows, a range
 * pass, a rounding pass and a packing pass, each strip of 16 columns is
 * loaded once (16 contiguous floats per row), transformed along its rows
 * (fwht_cols: butterflies between rows, 16-wide vector operations), measured
 * and rounded while it is in L1, and written straight into the layout the
 * kernel reads.  Strips are independent tasks with their own random
 * streams (quant_strip16), so the codes do not depend on the thread
 * count; with round-to-nearest and clip_sigma 0 (as the backward uses)
 * they are the codes of the old passes (test_gemm's test_column_path).
 * With clip_sigma > 0 the sums of squares are taken per column in row
 * order, not in quant_range's lane order: the range can differ from the
 * row path's in its last bits. */

typedef struct colq_job {
	const float *z;
	int R, C, ldz, Rp, Rp4, blk, phase, gs; /* gs: strips per task (1, 2, 4) */
	const quant_spec *sp;
	uint64_t seed;
	float tstep;
	float *buf, *mx, *scale;
	double *ss;
	int8_t *codes;
	gemm_packed *pb; /* B: filled block by block; A: the product's B, for the layout */
	void *A;         /* NULL: the strips are B's column blocks */
} colq_job;

enum { COLQ_BOTH = 0, COLQ_STATS = 1, COLQ_EMIT = 2 };

/* Strip st (16 columns from 16 st) after its floats are in buf: the
 * transform, the ranges and (not in the statistics pass) the codes. */
static void colq_strip(const colq_job *j, int st, float *buf, int8_t *codes)
{
	const int Rp4 = j->Rp4, c0 = st * 16, nc = j->C - c0 < 16 ? j->C - c0 : 16;
	if (j->phase != COLQ_EMIT) {
		memset(buf + (size_t)j->R * 16, 0, sizeof(float) * 16 * (size_t)(Rp4 - j->R));
		if (j->blk > 1)
			fwht_strip16(buf, j->Rp, j->blk);
		quant_strip16_stats(buf, j->Rp, j->mx + c0, j->sp->clip_sigma > 0.0f ? j->ss + c0 : NULL);
	}
	if (j->phase == COLQ_STATS)
		return;
	float step[16];
	for (int l = 0; l < 16; l++) {
		step[l] = j->sp->per_row
			? quant_step_of(quant_range_stats(j->mx[c0 + l], j->ss[c0 + l], j->Rp, j->sp), j->sp)
			: j->tstep;
		if (l < nc)
			j->scale[c0 + l] = step[l];
	}
	quant_strip16(buf, j->Rp, step, j->sp, j->seed, (uint64_t)st, codes);
	memset(codes + (size_t)j->Rp * 16, 0, 16 * (size_t)(Rp4 - j->Rp));
	if (j->A)
		gemm_pack_a_strip(j->pb, c0, nc, codes, j->A);
	else
		gemm_pack_strip(j->pb, st, codes);
}

/* Task t: strips [t gs, t gs + gs).  Their floats are loaded together, row
 * by row (gs adjacent cache lines per row: one strip per task read a
 * single line per row at a row's stride, which the prefetchers do not
 * follow).  In one pass a strip's floats and codes live only inside its
 * task: gs buffers per worker, in L1/L2 (a buffer per strip is a float
 * copy of the whole matrix, and each strip's stores missed); the two
 * passes of a tensor scale keep every strip's. */
static void colq_task(void *arg, int t, int w)
{
	const colq_job *j = arg;
	const int ns = (j->C + 15) / 16, st0 = t * j->gs;
	const int ng = ns - st0 < j->gs ? ns - st0 : j->gs;
	float *buf[4];
	int8_t *codes[4];
	for (int k = 0; k < ng; k++) {
		const size_t slot = (size_t)(j->phase == COLQ_BOTH ? w * j->gs + k : st0 + k) * j->Rp4 * 16;
		buf[k] = j->buf + slot;
		codes[k] = j->codes + slot;
	}
	if (j->phase != COLQ_EMIT)
		for (int r = 0; r < j->R; r++) {
			const float *zr = j->z + (size_t)r * j->ldz;
			for (int k = 0; k < ng; k++) {
				const int c0 = (st0 + k) * 16, nc = j->C - c0 < 16 ? j->C - c0 : 16;
				float *b = buf[k] + (size_t)r * 16;
				if (nc == 16) {
					memcpy(b, zr + c0, 16 * sizeof(float));
				} else {
					int l = 0;
					for (; l < nc; l++)
						b[l] = zr[c0 + l];
					for (; l < 16; l++)
						b[l] = 0.0f;
				}
			}
		}
	for (int k = 0; k < ng; k++)
		colq_strip(j, st0 + k, buf[k], codes[k]);
}

static int colq_run(linear_scratch *s, colq_job *j, hdqt_rng *rng)
{
	const int ns = (j->C + 15) / 16, th = pool_size(s->pool);
	j->Rp4 = (j->Rp + 3) / 4 * 4;
	/* up to 4 strips per task while every thread keeps 4 tasks */
	j->gs = 4;
	while (j->gs > 1 && (ns + j->gs - 1) / j->gs < 4 * th)
		j->gs /= 2;
	const int nt = (ns + j->gs - 1) / j->gs;
	const size_t n = (size_t)(j->sp->per_row ? th * j->gs : ns) * 16 * j->Rp4;
	j->buf = linear_grow_mem((void **)&s->cqf, &s->cqfcap, n * sizeof(float));
	j->codes = linear_grow_mem((void **)&s->cqc, &s->cqccap, n);
	j->mx = linear_grow_mem((void **)&s->cqmx, &s->cqmxcap, (size_t)ns * 16 * sizeof(float));
	j->ss = linear_grow_mem((void **)&s->cqss, &s->cqsscap, (size_t)ns * 16 * sizeof(double));
	if (!j->buf || !j->codes || !j->mx || !j->ss)
		return HDQT_ENOMEM;
	if (j->sp->clip_sigma <= 0.0f)
		memset(j->ss, 0, (size_t)ns * 16 * sizeof(double));
	j->seed = j->sp->stochastic ? quant_seed(rng) : 0;
	if (j->sp->per_row) {
		j->phase = COLQ_BOTH;
		pool_run(s->pool, nt, colq_task, j);
		return 0;
	}
	j->phase = COLQ_STATS;
	pool_run(s->pool, nt, colq_task, j);
	/* One range for the tensor: the max is exact in any order; the sum of
	 * squares is added column by column, whatever the threads did. */
	float mx = 0.0f;
	double ss = 0.0;
	for (int c = 0; c < j->C; c++) {
		mx = j->mx[c] > mx ? j->mx[c] : mx;
		ss += j->ss[c];
	}
	j->tstep = quant_step_of(quant_range_stats(mx, ss, (long)j->Rp * j->C, j->sp), j->sp);
	j->phase = COLQ_EMIT;
	pool_run(s->pool, nt, colq_task, j);
	return 0;
}

int linear_colq_b(linear_scratch *s, const float *z, int R, int C, int Rp, int blk,
		  const quant_spec *sp, hdqt_rng *rng, const gemm_params *gp, gemm_packed *pb,
		  float *scale)
{
	PHASE_BEGIN(s);
	int rc = gemm_pack_begin(pb, NULL, C, Rp, gp);
	if (rc >= 0) {
		colq_job j = {.z = z, .R = R, .C = C, .ldz = C, .Rp = Rp, .blk = blk, .sp = sp,
			      .scale = scale, .pb = pb};
		rc = colq_run(s, &j, rng);
	}
	PHASE_END(s, HDQT_PHASE_FUSED);
	return rc < 0 ? rc : 0;
}

int linear_colq_a(linear_scratch *s, const float *z, int R, int C, int Rp, int blk,
		  const quant_spec *sp, hdqt_rng *rng, const gemm_packed *pb, void **A,
		  float *scale)
{
	PHASE_BEGIN(s);
	int rc = 0;
	if (pb->K != Rp) /* A's rows must be as long as the product's reduction */
		return HDQT_EINVAL;
	*A = linear_grow_mem((void **)&s->ap, &s->apcap, (size_t)C * gemm_a_stride(pb) + 1);
	if (!*A) {
		rc = HDQT_ENOMEM;
	} else {
		colq_job j = {.z = z, .R = R, .C = C, .ldz = C, .Rp = Rp, .blk = blk, .sp = sp,
			      .scale = scale, .pb = (gemm_packed *)pb, .A = *A};
		rc = colq_run(s, &j, rng);
	}
	PHASE_END(s, HDQT_PHASE_FUSED);
	return rc;
}

typedef struct apar {
	linear_scratch *s;
	const uint8_t *A;
	size_t stride;
	int I, n;
	const gemm_packed *pb;
	const float *sa, *sb;
	float inv;
	float *y;
	atomic_int rc;
} apar;

static void gemm_a_task(void *arg, int t, int w)
{
	apar *p = arg;
	int r0, r1;
	linear_task_rows(p->I, p->n, t, &r0, &r1);
	if (r1 > r0) {
		const gemm_rescale e = {.sa = p->sa + r0, .sb = p->sb, .inv = p->inv};
		int rc = gemm_q_apacked_f(&p->s->wws[w], p->A + (size_t)r0 * p->stride, r1 - r0, p->pb,
					  &e, p->y + (size_t)r0 * p->pb->J);
		if (rc < 0)
			atomic_store(&p->rc, rc);
	}
}

int linear_gemm_apacked_par(linear_scratch *s, const void *A, int I, const gemm_packed *pb,
			    const float *sa, const float *sb, float div, float *Y)
{
	PHASE_BEGIN(s);
	apar p = {.s = s, .A = A, .stride = gemm_a_stride(pb), .I = I, .n = linear_ntasks(s, I),
		  .pb = pb, .sa = sa, .sb = sb, .inv = 1.0f / div, .y = Y};
	pool_run(s->pool, p.n, gemm_a_task, &p);
	PHASE_END(s, HDQT_PHASE_GEMM);
	return atomic_load(&p.rc);
}

/* ---- the fp32 products, shared by the fp32 recipe and the families that
 * multiply in float (HadaNets' backward) ---- */

int linear_fp32_forward(linear_scratch *s, const float *X, int N, const float *W, int M, int K,
			float *Y)
{
	PHASE_BEGIN(s);
	int rc = 0;
#if HAVE_CBLAS
	linear_blas_par(s, 0, 1, N, M, K, X, K, W, K, Y); /* X W^T */
#else
	float *wt = SF(s, 0, (size_t)K * M);
	if (wt) {
		gemm_transpose(W, M, K, wt); /* inside the float phase: not timed twice */
		linear_f32_par(s, X, wt, N, M, K, Y);
	} else {
		rc = HDQT_ENOMEM;
	}
#endif
	PHASE_END(s, HDQT_PHASE_FLOAT_GEMM);
	return rc;
}

int linear_fp32_backward(linear_scratch *s, const float *X, const float *dY, const float *W, int N,
			 int M, int K, float *gw, float *dX)
{
	PHASE_BEGIN(s);
	int rc = 0;
#if HAVE_CBLAS
	linear_blas_par(s, 1, 0, M, K, N, dY, M, X, K, gw); /* dY^T X */
	if (dX)
		linear_blas_par(s, 0, 0, N, K, M, dY, M, W, K, dX); /* dY W */
#else
	float *t = SF(s, 2, (size_t)M * N);
	if (t) {
		gemm_transpose(dY, N, M, t);          /* dY^T: M x N */
		linear_f32_par(s, t, X, M, K, N, gw); /* M x K */
		if (dX)
			linear_f32_par(s, dY, W, N, K, M, dX);
	} else {
		rc = HDQT_ENOMEM;
	}
#endif
	PHASE_END(s, HDQT_PHASE_FLOAT_GEMM);
	return rc;
}

/* ---- dispatch ---- */

static const linear_family *family_of(const hdqt_qconfig *q)
{
	return hdqt_mode_is_hadanet(q->mode) ? &linear_hadanet_family : &linear_hdqt_family;
}

int linear_forward(linear *L, const float *X, int N, int x_unsigned, const hdqt_qconfig *q,
		   linear_scratch *s, float *Y)
{
	return family_of(q)->forward(L, X, N, x_unsigned, q, s, Y);
}

int linear_backward(linear *L, const float *X, int x_unsigned, const float *dY, int N,
		    const hdqt_qconfig *q, linear_scratch *s, hdqt_rng *rng, float *dX)
{
	return family_of(q)->backward(L, X, x_unsigned, dY, N, q, s, rng, dX);
}

/* ---- SGD ---- */

#if HDQT_X86_64
/* Each lane does the scalar loop's operations (separate multiply and add:
 * no FMA), so both give the same floats. */
__attribute__((target("avx2"))) static size_t sgd_avx2(float *w, float *v, const float *g, size_t n,
						      float mu, float wd, float lr)
{
	size_t i = 0;
	const __m256 vmu = _mm256_set1_ps(mu), vwd = _mm256_set1_ps(wd), vlr = _mm256_set1_ps(lr);
	for (; i + 8 <= n; i += 8) {
		__m256 wi = _mm256_loadu_ps(w + i);
		__m256 d = _mm256_add_ps(_mm256_loadu_ps(g + i), _mm256_mul_ps(vwd, wi));
		__m256 vi = _mm256_add_ps(_mm256_mul_ps(vmu, _mm256_loadu_ps(v + i)), d);
		_mm256_storeu_ps(v + i, vi);
		_mm256_storeu_ps(w + i, _mm256_sub_ps(wi, _mm256_mul_ps(vlr, vi)));
	}
	return i;
}
#define SGD_FAST(w, v, g, n, mu, wd, lr) \
	(SIMD_AVX2() ? sgd_avx2(w, v, g, n, mu, wd, lr) : 0)
#else
#define SGD_FAST(w, v, g, n, mu, wd, lr) 0
#endif

void linear_sgd_span(float *w, float *v, const float *g, size_t n, float mu, float wd, float lr)
{
	for (size_t i = SGD_FAST(w, v, g, n, mu, wd, lr); i < n; i++) {
		float d = g[i] + wd * w[i];
		v[i] = mu * v[i] + d;
		w[i] -= lr * v[i];
	}
}

typedef struct sgd_job {
	linear *L;
	float mu, wd, lr;
} sgd_job;

enum { SGD_CHUNK = 4096 };

static void sgd_task(void *arg, int t, int w)
{
	(void)w;
	const sgd_job *j = arg;
	const size_t n = (size_t)j->L->in * j->L->out, i0 = (size_t)t * SGD_CHUNK;
	linear_sgd_span(j->L->w + i0, j->L->v + i0, j->L->gw + i0, n - i0 < SGD_CHUNK ? n - i0 : SGD_CHUNK,
			j->mu, j->wd, j->lr);
}

void linear_sgd(linear *L, int x_unsigned, const hdqt_qconfig *q, linear_scratch *s, float mu,
		float wd, float lr)
{
	const linear_family *f = family_of(q);
	if (f->sgd && f->sgd(L, x_unsigned, q, s, mu, wd, lr))
		return;
	PHASE_BEGIN(s);
	sgd_job j = {.L = L, .mu = mu, .wd = wd, .lr = lr};
	const size_t n = (size_t)L->in * L->out;
	pool_run(s->pool, (int)((n + SGD_CHUNK - 1) / SGD_CHUNK), sgd_task, &j);
	linear_touch(L);
	PHASE_END(s, HDQT_PHASE_ELEMENTWISE);
}
