/* SPDX-License-Identifier: MIT */
/*
 * Linear layer in the four recipes.
 *
 * Forward (Schiemer et al., Sec. 3.1): X and W quantised to b bits with a
 * max-abs scale (times fwd_clip), tile-clamped integer product, rescale.
 * The hdqt recipe may rotate both operands by a block Hadamard H along the
 * reduction first: (X H)(W H)^T = blk * X W^T, which spreads outliers over
 * the block before quantisation (as QuaRot-style methods do), and may use
 * per-row scales, which keep the inner product integer.
 *
 * Backward (Sec. 3.2, Eq. 6-7), with H block-diagonal Sylvester:
 *   dX = Q_sr(dY H_M) . Q(H_M W) / blk_M
 *   dW = Q_sr(dY^T H_N) . Q_sr(H_N X) / blk_N
 * The straight-through estimator passes gradients through the quantisers.
 * With bwd_fwdq, X and W above are the values the forward multiplied
 * (quantised and dequantised), as in the paper's code; otherwise the float
 * ones.  With bwd_hadamard off (the ablation) blk = 1 and nothing is divided.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fwht.h"
#include "linear.h"
#include "quant.h"
#include "simd.h"
#include "blas.h"

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
	gemm_packed_free(&L->wpack);
	free(L->wscale);
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
	free(s->c);
	free(s->sa);
	free(s->sb);
	gemm_ws_free(&s->ws);
	for (int i = 0; i < POOL_MAX_THREADS; i++)
		gemm_ws_free(&s->wws[i]);
	gemm_packed_free(&s->bpack);
	pool *keep = s->pool;
	memset(s, 0, sizeof(*s));
	s->pool = keep;
}

static void *grow(void **p, size_t *cap, size_t n)
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

#define SF(s, i, n) ((float *)grow((void **)&(s)->f[i], &(s)->fcap[i], (size_t)(n) * sizeof(float)))
#define SQ(s, i, n) ((int8_t *)grow((void **)&(s)->q[i], &(s)->qcap[i], (size_t)(n)))

/* ---- parallel loops: every split is over rows, in blocks of 4 rows (the
 * float kernels' register blocking), so results do not depend on the
 * number of threads ---- */

/* Rows [r0, r1) of task t of a loop over R rows cut into n tasks. */
static int ntasks(const linear_scratch *s, int R)
{
	const int th = pool_size(s->pool);
	if (th == 1 || R < 8)
		return 1;
	int n = 4 * th, blocks = (R + 3) / 4;
	return n < blocks ? n : blocks;
}

static void task_rows(int R, int n, int t, int *r0, int *r1)
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
	const int32_t *c;
	int32_t *cc;
	const int8_t *qa;
	int8_t *q;
	float *scale;
	const quant_spec *sp;
	uint64_t seed;
	const gemm_packed *pb;
} par;

/* Rows [r0, r1): out = c * (sa[i] / div) * sb[j].  Locals and restrict:
 * through the task's struct, every store could alias it and nothing would
 * vectorise. */
HDQT_CLONES static void rescale_rows(const int32_t *restrict c, const float *restrict sa,
				     const float *restrict sb, int r0, int r1, int J, float inv,
				     float *restrict out)
{
	for (int i = r0; i < r1; i++) {
		const float si = sa[i] * inv;
		const int32_t *ci = c + (size_t)i * J;
		float *oi = out + (size_t)i * J;
		for (int j = 0; j < J; j++)
			oi[j] = (float)ci[j] * si * sb[j];
	}
}

static void rescale_task(void *arg, int t, int w)
{
	(void)w;
	const par *p = arg;
	int r0, r1;
	task_rows(p->R, p->n, t, &r0, &r1);
	rescale_rows(p->c, p->sa, p->sb, r0, r1, p->J, p->inv, p->y);
}

/* out (I x J) = c * sa[i] * sb[j] / div: integer products back to floats. */
static void rescale(linear_scratch *s, const int32_t *c, const float *sa, const float *sb, int I,
		    int J, float div, float *out)
{
	par p = {.s = s, .R = I, .n = ntasks(s, I), .J = J, .c = c, .sa = sa, .sb = sb,
		 .inv = 1.0f / div, .y = out};
	pool_run(s->pool, p.n, rescale_task, &p);
}

static void quant_task(void *arg, int t, int w)
{
	(void)w;
	par *p = arg;
	int r0, r1;
	task_rows(p->R, p->n, t, &r0, &r1);
	quant_rows_part(p->x, r0, r1, p->K, p->sp, p->seed, p->step, p->q, p->scale);
}

/* quant_rows over the pool: the same codes for every thread count. */
static void quant_par(linear_scratch *s, const float *x, int R, int K, const quant_spec *sp,
		      hdqt_rng *rng, int8_t *q, float *scale)
{
	par p = {.s = s, .R = R, .n = ntasks(s, R), .K = K, .x = x, .sp = sp, .q = q, .scale = scale};
	p.step = sp->per_row ? 0.0f : quant_tensor_step(x, R, K, sp);
	p.seed = sp->stochastic ? quant_seed(rng) : 0;
	pool_run(s->pool, p.n, quant_task, &p);
}

static void fwht_task(void *arg, int t, int w)
{
	(void)w;
	par *p = arg;
	int r0, r1;
	task_rows(p->R, p->n, t, &r0, &r1);
	if (r1 > r0)
		fwht_rows(p->y + (size_t)r0 * p->K, r1 - r0, p->K, p->blk);
}

static void fwht_par(linear_scratch *s, float *x, int R, int K, int blk)
{
	par p = {.s = s, .R = R, .n = ntasks(s, R), .K = K, .y = x, .blk = blk};
	pool_run(s->pool, p.n, fwht_task, &p);
}

static void gemm_task(void *arg, int t, int w)
{
	par *p = arg;
	int r0, r1;
	task_rows(p->R, p->n, t, &r0, &r1);
	if (r1 > r0) {
		int rc = gemm_q_packed(&p->s->wws[w], p->qa + (size_t)r0 * p->pb->K, r1 - r0, p->pb,
				       p->cc + (size_t)r0 * p->pb->J);
		if (rc < 0)
			atomic_store(&p->rc, rc); /* any failure: the caller reports one */
	}
}

/* C (I x J) = A . B^T with B packed, rows of A over the pool. */
static int gemm_par(linear_scratch *s, const int8_t *qa, int I, const gemm_packed *pb, int32_t *c)
{
	par p = {.s = s, .R = I, .n = ntasks(s, I), .qa = qa, .pb = pb, .cc = c};
	pool_run(s->pool, p.n, gemm_task, &p);
	return atomic_load(&p.rc);
}

static void f32_task(void *arg, int t, int w)
{
	(void)w;
	par *p = arg;
	int r0, r1;
	task_rows(p->R, p->n, t, &r0, &r1);
	if (r1 > r0)
		gemm_f32_nn(p->x + (size_t)r0 * p->K, p->sb, r1 - r0, p->J, p->K, p->y + (size_t)r0 * p->J);
}

/* Float C (I x J) = A (I x K) . B (K x J), rows of A over the pool. */
static void f32_par(linear_scratch *s, const float *A, const float *B, int I, int J, int K, float *C)
{
	par p = {.s = s, .R = I, .n = ntasks(s, I), .x = A, .sb = B, .J = J, .K = K, .y = C};
	pool_run(s->pool, p.n, f32_task, &p);
}

#if HAVE_CBLAS
/* The fp32 reference through BLAS, on as many BLAS threads as the pool has
 * (results do not depend on it: blas.c). */
static void blas_par(linear_scratch *s, int ta, int tb, int I, int J, int K, const float *A, int lda,
		     const float *B, int ldb, float *C)
{
	blas_sgemm(ta, tb, I, J, K, A, lda, B, ldb, C, pool_size(s->pool));
}
#endif

/* Two independent transposes at once (one per thread): each whole, so the
 * result is the serial one whatever the thread count. */
typedef struct tr2 {
	const float *in[2];
	int rows[2], cols[2];
	float *out[2];
} tr2;

static void transpose_task(void *arg, int t, int w)
{
	(void)w;
	const tr2 *p = arg;
	gemm_transpose(p->in[t], p->rows[t], p->cols[t], p->out[t]);
}

static void transpose2(linear_scratch *s, const float *a, int ar, int ac, float *at, const float *b,
		       int br, int bc, float *bt)
{
	tr2 p = {{a, b}, {ar, br}, {ac, bc}, {at, bt}};
	pool_run(s->pool, 2, transpose_task, &p);
}

static int qproduct(const float *a, int I, const float *b, int J, int K, int tile,
		    const quant_spec *spa, const quant_spec *spb, const hdqt_qconfig *q,
		    linear_scratch *s, hdqt_rng *rng, float div, float *out)
{
	int8_t *qa = SQ(s, 0, (size_t)I * K), *qb = SQ(s, 1, (size_t)J * K);
	int32_t *c = grow((void **)&s->c, &s->ccap, (size_t)I * J * sizeof(int32_t));
	float *sa = grow((void **)&s->sa, &s->sacap, (size_t)I * sizeof(float));
	float *sb = grow((void **)&s->sb, &s->sbcap, (size_t)J * sizeof(float));
	if (!qa || !qb || !c || !sa || !sb)
		return HDQT_ENOMEM;
	quant_par(s, a, I, K, spa, rng, qa, sa);
	quant_par(s, b, J, K, spb, rng, qb, sb);
	gemm_params gp = {.tile = tile, .acc_bits = q->acc_bits, .bits = q->bits,
			  .a_signed = !spa->is_unsigned};
	/* Packed once, then the rows of A over the pool: the same integers as
	 * gemm_q (gemm_pack's contract). */
	int rc = gemm_pack(&s->bpack, qb, J, K, &gp);
	if (rc == 0)
		rc = gemm_par(s, qa, I, &s->bpack, c);
	if (rc < 0)
		return rc;
	rescale(s, c, sa, sb, I, J, div, out);
	return 0;
}

/* The forward quantisers of X and W.  x_unsigned: X is non-negative and not
 * rotated. */
static void fwd_specs(const hdqt_qconfig *q, int x_unsigned, quant_spec *spx, quant_spec *spw)
{
	/* 8-bit unsigned codes do not fit the int8 operand type: use the signed grid. */
	quant_spec sp = {.bits = q->bits, .is_unsigned = x_unsigned && !q->signed_act && q->bits < 8,
			 .clip = q->fwd_clip, .clip_sigma = q->fwd_clip_sigma,
			 .per_row = q->fwd_gran == HDQT_SCALE_ROW, .stochastic = 0};
	*spx = sp;
	*spw = sp;
	spw->is_unsigned = 0;
}

/* out (R x K) = the values the forward multiplied for a (R x K): a rotated
 * by the forward Hadamard block blk when blk > 1, quantised with sp
 * (round-to-nearest, so the codes are the forward's), dequantised and
 * rotated back (H H = blk I).  The straight-through estimator's gradient
 * dY^T Q(X) then follows the product the forward computed: with one
 * max-abs scale per tensor about half of the standardised inputs quantise
 * to zero, and a gradient built from the float X moves weights the
 * forward does not see. */
static int fwd_values(const float *a, int R, int K, const quant_spec *sp, int blk,
		      linear_scratch *s, float *out)
{
	int8_t *qa = SQ(s, 0, (size_t)R * K);
	float *sc = grow((void **)&s->sa, &s->sacap, (size_t)R * sizeof(float));
	if (!qa || !sc)
		return HDQT_ENOMEM;
	if (out != a)
		memcpy(out, a, (size_t)R * K * sizeof(float));
	if (blk > 1)
		fwht_par(s, out, R, K, blk);
	quant_par(s, out, R, K, sp, NULL, qa, sc);
	for (int i = 0; i < R; i++) {
		const int8_t *qi = qa + (size_t)i * K;
		float *oi = out + (size_t)i * K;
		for (int k = 0; k < K; k++)
			oi[k] = (float)qi[k] * sc[i];
	}
	if (blk > 1) {
		fwht_par(s, out, R, K, blk);
		const float inv = 1.0f / (float)blk;
		for (size_t i = 0; i < (size_t)R * K; i++)
			out[i] *= inv;
	}
	return 0;
}

/* The forward weight operand: codes packed in L->wpack, scales in L->wscale,
 * recomputed only after linear_touch() or a change of recipe. */
static int weight_operand(linear *L, const quant_spec *spw, const gemm_params *gp, int blk,
			  linear_scratch *s)
{
	const int K = L->in, M = L->out;
	if (L->wcached && gemm_packed_matches(&L->wpack, M, K, gp))
		return 0;
	const float *wa = L->w;
	if (blk > 1) {
		float *fw = SF(s, 1, (size_t)M * K);
		if (!fw)
			return HDQT_ENOMEM;
		memcpy(fw, L->w, (size_t)M * K * sizeof(float));
		fwht_par(s, fw, M, K, blk);
		wa = fw;
	}
	int8_t *qb = SQ(s, 1, (size_t)M * K);
	float *sc = realloc(L->wscale, sizeof(float) * (size_t)M);
	if (!qb || !sc)
		return HDQT_ENOMEM;
	L->wscale = sc;
	quant_par(s, wa, M, K, spw, NULL, qb, sc);
	int rc = gemm_pack(&L->wpack, qb, M, K, gp);
	if (rc < 0)
		return rc;
	L->wcached = 1;
	return 0;
}

int linear_forward(linear *L, const float *X, int N, int x_unsigned,
		   const hdqt_qconfig *q, linear_scratch *s, float *Y)
{
	const int K = L->in, M = L->out;
	if (q->mode == HDQT_MODE_FP32) {
#if HAVE_CBLAS
		blas_par(s, 0, 1, N, M, K, X, K, L->w, K, Y); /* X W^T */
		return 0;
#endif
		float *wt = SF(s, 0, (size_t)K * M);
		if (!wt)
			return HDQT_ENOMEM;
		gemm_transpose(L->w, M, K, wt);
		f32_par(s, X, wt, N, M, K, Y);
		return 0;
	}
	const float *xa = X;
	float div = 1.0f;
	int blk = 1;
	if (q->fwd_hadamard) {
		blk = fwht_block(K, q->had_max);
		if (blk > 1) {
			float *fx = SF(s, 0, (size_t)N * K);
			if (!fx)
				return HDQT_ENOMEM;
			memcpy(fx, X, (size_t)N * K * sizeof(float));
			fwht_par(s, fx, N, K, blk);
			xa = fx;
			div = (float)blk;
			x_unsigned = 0; /* rotated activations take both signs */
		}
	}
	quant_spec spx, spw;
	fwd_specs(q, x_unsigned, &spx, &spw);
	gemm_params gp = {.tile = q->tile, .acc_bits = q->acc_bits, .bits = q->bits,
			  .a_signed = !spx.is_unsigned};
	int rc = weight_operand(L, &spw, &gp, blk, s);
	if (rc < 0)
		return rc;
	int8_t *qa = SQ(s, 0, (size_t)N * K);
	int32_t *c = grow((void **)&s->c, &s->ccap, (size_t)N * M * sizeof(int32_t));
	float *sa = grow((void **)&s->sa, &s->sacap, (size_t)N * sizeof(float));
	if (!qa || !c || !sa)
		return HDQT_ENOMEM;
	quant_par(s, xa, N, K, &spx, NULL, qa, sa);
	if ((rc = gemm_par(s, qa, N, &L->wpack, c)) < 0)
		return rc;
	rescale(s, c, sa, L->wscale, N, M, div, Y);
	return 0;
}

int linear_backward(linear *L, const float *X, int x_unsigned, const float *dY, int N,
		    const hdqt_qconfig *q, linear_scratch *s, hdqt_rng *rng, float *dX)
{
	const int K = L->in, M = L->out;
	const float *W = L->w;
	if (q->mode != HDQT_MODE_FP32 && q->bwd_fwdq) {
		const int blk = q->fwd_hadamard ? fwht_block(K, q->had_max) : 1;
		quant_spec spx, spw;
		fwd_specs(q, x_unsigned && blk == 1, &spx, &spw);
		float *xh = SF(s, 4, (size_t)N * K), *wh = SF(s, 5, (size_t)M * K);
		if (!xh || !wh)
			return HDQT_ENOMEM;
		int rc = fwd_values(X, N, K, &spx, blk, s, xh);
		if (rc == 0 && dX)
			rc = fwd_values(L->w, M, K, &spw, blk, s, wh);
		if (rc < 0)
			return rc;
		X = xh;
		W = wh;
	}
	float *t = SF(s, 2, (size_t)M * N);
	float *u = SF(s, 3, (size_t)K * (N > M ? N : M));
	if (!t || !u)
		return HDQT_ENOMEM;
	if (q->mode == HDQT_MODE_FP32) {
#if HAVE_CBLAS
		blas_par(s, 1, 0, M, K, N, dY, M, X, K, L->gw); /* dY^T X */
		if (dX)
			blas_par(s, 0, 0, N, K, M, dY, M, W, K, dX); /* dY W */
		return 0;
#endif
		gemm_transpose(dY, N, M, t);            /* dY^T: M x N */
		f32_par(s, t, X, M, K, N, L->gw);       /* M x K */
		if (dX)
			f32_par(s, dY, W, N, K, M, dX);
		return 0;
	}
	const int per_row = q->bwd_gran == HDQT_SCALE_ROW;
	quant_spec sp_g = {.bits = q->bits, .is_unsigned = 0, .clip = 1.0f, .clip_sigma = 0.0f,
			   .per_row = per_row, .stochastic = q->sr_grad};
	quant_spec sp_w = sp_g, sp_x = sp_g;
	sp_w.stochastic = q->sr_weight;
	sp_x.stochastic = q->sr_act;
	int rc;

	/* grad-weight: reduction over the batch.  A batch of, say, 122 rows
	 * has no Hadamard block larger than 2, and without the transform the
	 * 4-bit gradient product loses too much (training diverged), so the
	 * batch is padded with zero rows to a multiple of a power-of-two
	 * block: zero rows add nothing to dY^T X. */
	int blkN = 1, Np = N;
	if (q->bwd_hadamard) {
		int p2 = 1;
		while (p2 < N && p2 < q->had_max)
			p2 <<= 1;
		Np = (N + p2 - 1) / p2 * p2;
		blkN = fwht_block(Np, q->had_max);
	}
	float *t2 = t, *u2 = u;
	if (Np != N) {
		float *pg = SF(s, 0, (size_t)Np * M), *px = SF(s, 1, (size_t)Np * K);
		t2 = SF(s, 2, (size_t)M * Np);
		u2 = SF(s, 3, (size_t)K * (Np > M ? Np : M));
		if (!pg || !px || !t2 || !u2)
			return HDQT_ENOMEM;
		memcpy(pg, dY, (size_t)N * M * sizeof(float));
		memset(pg + (size_t)N * M, 0, (size_t)(Np - N) * M * sizeof(float));
		memcpy(px, X, (size_t)N * K * sizeof(float));
		memset(px + (size_t)N * K, 0, (size_t)(Np - N) * K * sizeof(float));
		transpose2(s, pg, Np, M, t2, px, Np, K, u2); /* M x Np, K x Np */
	} else {
		transpose2(s, dY, N, M, t2, X, N, K, u2);   /* M x N, K x N */
	}
	if (blkN > 1) {
		fwht_par(s, t2, M, Np, blkN);
		fwht_par(s, u2, K, Np, blkN);
	}
	rc = qproduct(t2, M, u2, K, Np, q->bwd_tile, &sp_g, &sp_x, q, s, rng, (float)blkN, L->gw);
	if (rc < 0 || !dX)
		return rc;

	/* grad-input: reduction over the output dimension. */
	int blkM = q->bwd_hadamard ? fwht_block(M, q->had_max) : 1;
	t = s->f[2]; /* (re)fetched: the padding above may have grown them */
	u = s->f[3];
	float *g = t; /* reuse: N x M */
	memcpy(g, dY, (size_t)N * M * sizeof(float));
	gemm_transpose(W, M, K, u); /* K x M */
	if (blkM > 1) {
		fwht_par(s, g, N, M, blkM);
		fwht_par(s, u, K, M, blkM);
	}
	return qproduct(g, N, u, K, M, q->bwd_tile, &sp_g, &sp_w, q, s, rng, (float)blkM, dX);
}
