/* SPDX-License-Identifier: MIT */
/*
 * The HadaNets family (Akhauri 2019): every operand row cut into segments
 * of beta elements and represented as delta (.) sign(X), delta the mean
 * |x| of the segment (computed, not learned); beta = 1 is full precision,
 * beta = the row is XNOR-Net.
 *
 * Forward: both operands binarised, multiplied by the Hadamard binary
 * matrix multiply (bgemm.h: per segment, delta_a delta_w (n - 2 popcount
 * (a ^ w))); segments too short for the kernels (beta_a = 2 in the
 * paper's setting) multiply the same binarised values as floats.
 * Backward: "standard backward propagation, gradients calculated using
 * W~" in full precision: dX~ = dY W~ and dW~ = dY^T X~ (the values the
 * forward multiplied), then the straight-through estimator of sign,
 * clipped at |x| <= ste_clip (Eq. 5), and, with mean_term, the segment
 * mean's term of Eq. 6 (the XNOR-Net form, per segment):
 *   dW_i = dW~_i (1 / n_s + delta_s [|W_i| <= clip])
 * without it dW_i = dW~_i [|W_i| <= clip] (BinaryConnect's estimator).
 * Where a representation is exact (beta = 1) nothing is cut: the
 * gradient is the float one.
 *
 * Activations after ReLU are non-negative, and sign(0) = +1 would make
 * every one of them +1: the act_bin choices are in hdqt.h.
 *
 * Cached between steps on the layer: the weights binarised and packed for
 * the kernel (recomputed after linear_touch).
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "bgemm.h"
#include "linear_impl.h"
#include "simd.h"

struct linear_bin {
	bgemm_w w;
	int g, valid;
	float *wmat;  /* or W~ materialised, for the float product of short segments */
	size_t wmat_cap;
	int wmat_valid;
	int beta_w, w_centre; /* what the cached operand was built with */
};

/* The cache was built for this layer's shape and q's weight knobs. */
static int bin_key_ok(const struct linear_bin *b, const linear *L, const hdqt_qconfig *q)
{
	return b->beta_w == q->beta_w && b->w_centre == q->w_centre && b->w.M == L->out &&
	       b->w.K == L->in;
}

/* Scratch of the family beside linear_scratch's float buffers: the
 * activations' kernel operand, and per worker room for one row's bits and
 * per-segment factors (rows can be 65536 wide: not on a thread's stack). */
typedef struct bin_scratch {
	bgemm_a a;
	float *tmp;
	size_t tmpcap, stride;
} bin_scratch;

static bin_scratch *scratch_of(linear_scratch *s, int K)
{
	bin_scratch *bs = s->bin;
	if (!bs && !(bs = s->bin = calloc(1, sizeof(bin_scratch))))
		return NULL;
	const size_t stride = 2 * (size_t)K + (size_t)K / 32 + 1 + (size_t)K / 4 + 1;
	const size_t need = stride * (size_t)pool_size(s->pool) * sizeof(float);
	if (!linear_grow_mem((void **)&bs->tmp, &bs->tmpcap, need))
		return NULL;
	bs->stride = stride;
	return bs;
}

/* Worker w's row scratch: c and off (K floats each), then the bits. */
static void row_tmp(const bin_scratch *bs, int w, int K, float **c, float **off, uint32_t **bits)
{
	float *t = bs->tmp + bs->stride * (size_t)w;
	*c = t;
	*off = t + K;
	*bits = (uint32_t *)(t + 2 * (size_t)K);
}

/* ... and after the bits, one byte per element (1 = the sign bit is set). */
static uint8_t *row_neg(const bin_scratch *bs, int w, int K)
{
	return (uint8_t *)(bs->tmp + bs->stride * (size_t)w + 2 * (size_t)K + (size_t)K / 32 + 1);
}

/* Effective segment length of beta over K (0 or >= K: the whole row). */
static int seg_len(int beta, int K) { return beta <= 0 || beta >= K ? K : beta; }

/* Common segment of the two operands, or HDQT_EINVAL when their segments
 * do not nest (then no segment has one delta on each side). */
static int common_seg(const hdqt_qconfig *q, int K, int *g)
{
	const int ba = seg_len(q->beta_a, K), bw = seg_len(q->beta_w, K);
	const int lo = ba < bw ? ba : bw, hi = ba < bw ? bw : ba;
	if (hi != K && hi % lo != 0)
		return HDQT_EINVAL;
	*g = lo;
	return 0;
}

/* The act_bin rule for an operand: signed inputs always take sign. */
static hdqt_act_bin act_rule(const hdqt_qconfig *q, int x_unsigned)
{
	if (q->act_bin == HDQT_ACT_MASK && !x_unsigned)
		return HDQT_ACT_SIGN;
	return q->act_bin;
}

/*
 * Binarise one row x of K values with segments of beta, as off + c * sign
 * with the sign bits in bits (nw words, cleared here): c[s], off[s] per
 * beta-segment (off may be NULL under HDQT_ACT_SIGN).  centre_row: subtract
 * the row's mean first and do not add it back (the weights' w_centre).
 * Sums run in index order: the same floats on every path.
 */
/* Sum over i < n of |(x[i] - a) - b| (abs) or (x[i] - a) - b: element i
 * goes to lane i % 8, each lane adds in index order, the lanes are then
 * added pairwise.  A fixed order (every path gives the same float) that a
 * vectoriser can keep, where one running sum would be a serial chain. */
HDQT_CLONES static float lane_sum(const float *restrict x, int n, float a, float b, int abs)
{
	float l[8] = {0, 0, 0, 0, 0, 0, 0, 0};
	int i = 0;
	if (abs)
		for (; i + 8 <= n; i += 8)
			for (int j = 0; j < 8; j++)
				l[j] += fabsf((x[i + j] - a) - b);
	else
		for (; i + 8 <= n; i += 8)
			for (int j = 0; j < 8; j++)
				l[j] += (x[i + j] - a) - b;
	for (; i < n; i++)
		l[i & 7] += abs ? fabsf((x[i] - a) - b) : (x[i] - a) - b;
	return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

/* Returns the row mean subtracted (0 without centre_row). */
static float bin_row(const float *x, int K, int beta, hdqt_act_bin rule, int centre_row,
		     uint32_t *bits, float *c, float *off, uint8_t *neg8)
{
	const int nw = (K + 31) / 32;
	memset(bits, 0, (size_t)nw * 4);
	const float rm = centre_row ? lane_sum(x, K, 0.0f, 0.0f, 0) / (float)K : 0.0f;
	for (int s = 0, k0 = 0; k0 < K; s++, k0 += beta) {
		const int k1 = k0 + beta < K ? k0 + beta : K;
		const float n = (float)(k1 - k0);
		float mu = rule == HDQT_ACT_CENTRE ? lane_sum(x + k0, k1 - k0, rm, 0.0f, 0) / n : 0.0f;
		const float sa = lane_sum(x + k0, k1 - k0, rm, mu, 1);
		float cs;
		/* a word at a time in a register (|= into memory per element
		 * made a store-to-load chain) */
		for (int k = k0; k < k1;) {
			const int e = (k | 31) + 1 < k1 ? (k | 31) + 1 : k1;
			uint32_t wv = 0;
			for (int i = k; i < e; i++) {
				const float v = (x[i] - rm) - mu;
				const uint32_t neg = rule == HDQT_ACT_MASK ? !(v > 0.0f) : v < 0.0f;
				wv |= neg << (i & 31);
				if (neg8)
					neg8[i] = (uint8_t)neg;
			}
			bits[k >> 5] |= wv;
			k = e;
		}
		cs = sa / n;
		if (rule == HDQT_ACT_MASK) {
			/* delta [x > 0] = delta/2 + delta/2 sign: off = c = delta/2 */
			cs *= 0.5f;
			mu = cs;
		}
		c[s] = cs;
		if (off)
			off[s] = mu;
	}
	return rm;
}

/* out[i] = neg[i] ? lo : hi, as bit patterns: branch-free, so it
 * vectorises (the values are copied, not computed: exact). */
HDQT_CLONES static void select_seg(const uint8_t *restrict neg, int n, float hi, float lo,
				   float *restrict out)
{
	uint32_t hb, lb;
	memcpy(&hb, &hi, 4);
	memcpy(&lb, &lo, 4);
	const uint32_t x = hb ^ lb;
	uint32_t *o = (uint32_t *)out;
	for (int i = 0; i < n; i++)
		o[i] = hb ^ (x & (0u - (uint32_t)neg[i]));
}

/* pass[i] = 1 where the sign's gradient passes: |(x - a) - b| <= clip
 * (the argument of sign, as bin_row forms it; clip 0: everywhere). */
HDQT_CLONES static void pass_seg(const float *restrict x, int n, float a, float b, float clip,
				 uint8_t *restrict pass)
{
	if (clip <= 0.0f) {
		memset(pass, 1, (size_t)n);
		return;
	}
	for (int i = 0; i < n; i++)
		pass[i] = fabsf((x[i] - a) - b) <= clip;
}

/* The value the forward multiplies at k. */
static inline float bin_value(const uint32_t *bits, const float *c, const float *off, int k, int beta)
{
	const int s = k / beta;
	const float v = (bits[k >> 5] >> (k & 31)) & 1u ? -c[s] : c[s];
	return off ? off[s] + v : v;
}

/* Rows of X (R x K) binarised and materialised into out (R x K), for the
 * float products; sgn (optional) receives per element 1 where the sign's
 * gradient passes (|x - off| <= clip, or everywhere when clip is 0). */
typedef struct mat_job {
	const float *x;
	int R, K, beta, centre_row, n;
	hdqt_act_bin rule;
	float clip;
	float *out;
	uint8_t *pass;
	const bin_scratch *bs;
} mat_job;

static void mat_rows(const mat_job *j, int w, int r0, int r1)
{
	const int K = j->K;
	float *c, *off;
	uint32_t *bits;
	row_tmp(j->bs, w, K, &c, &off, &bits);
	for (int r = r0; r < r1; r++) {
		const float *x = j->x + (size_t)r * K;
		float *o = j->out + (size_t)r * K;
		if (j->beta == 1) { /* exact: delta |x| sign(x) = x */
			memcpy(o, x, (size_t)K * sizeof(float));
			if (j->pass)
				memset(j->pass + (size_t)r * K, 1, (size_t)K);
			continue;
		}
		uint8_t *neg = row_neg(j->bs, w, K);
		const float rm = bin_row(x, K, j->beta, j->rule, j->centre_row, bits, c, off, neg);
		uint8_t *p = j->pass ? j->pass + (size_t)r * K : NULL;
		/* Segment by segment (no division per element): the two values a
		 * segment takes are off + c and off - c (= off + (-c): the floats
		 * of bin_value). */
		for (int s = 0, k0 = 0; k0 < K; s++, k0 += j->beta) {
			const int k1 = k0 + j->beta < K ? k0 + j->beta : K;
			const float os = j->rule == HDQT_ACT_SIGN ? 0.0f : off[s];
			const float hi = j->rule == HDQT_ACT_SIGN ? c[s] : os + c[s];
			const float lo = j->rule == HDQT_ACT_SIGN ? -c[s] : os - c[s];
			select_seg(neg + k0, k1 - k0, hi, lo, o + k0);
			if (p) {
				/* the argument of sign: x - rm - off (mask: x itself) */
				pass_seg(x + k0, k1 - k0, rm, j->rule == HDQT_ACT_CENTRE ? os : 0.0f, j->clip,
					 p + k0);
			}
		}
	}
}

static void mat_task(void *arg, int t, int w)
{
	const mat_job *j = arg;
	int r0, r1;
	linear_task_rows(j->R, j->n, t, &r0, &r1);
	mat_rows(j, w, r0, r1);
}

static int materialise(linear_scratch *s, const float *x, int R, int K, int beta,
		       hdqt_act_bin rule, int centre_row, float clip, float *out, uint8_t *pass)
{
	mat_job j = {.x = x, .R = R, .K = K, .beta = seg_len(beta, K), .centre_row = centre_row,
		     .rule = rule, .clip = clip, .out = out, .pass = pass, .bs = scratch_of(s, K)};
	if (!j.bs)
		return HDQT_ENOMEM;
	j.n = linear_ntasks(s, R);
	PHASE_BEGIN(s);
	pool_run(s->pool, j.n, mat_task, &j);
	PHASE_END(s, HDQT_PHASE_BINARY);
	return 0;
}

/* ---- the kernel path ---- */

/* Expand per-beta factors to the common segment g (beta a multiple of g,
 * or beta = K with one segment). */
static void expand(const float *src, int K, int beta, int g, float *dst)
{
	const int ns = bgemm_nseg(K, g);
	for (int s = 0; s < ns; s++)
		dst[s] = src[beta >= K ? 0 : (s * g) / beta];
}

static int weight_operand(linear *L, const hdqt_qconfig *q, int g, const bin_scratch *bs)
{
	const int K = L->in, M = L->out;
	struct linear_bin *b = L->bin;
	if (!b) {
		if (!(b = calloc(1, sizeof(*b))))
			return HDQT_ENOMEM;
		L->bin = b;
	}
	if (L->wcached && b->valid && b->g == g && bin_key_ok(b, L, q))
		return 0;
	b->valid = 0;
	b->wmat_valid = 0;
	int rc = bgemm_w_alloc(&b->w, M, K, g);
	if (rc < 0)
		return rc;
	const int bw = seg_len(q->beta_w, K);
	float *c, *cg;
	uint32_t *bits;
	row_tmp(bs, 0, K, &c, &cg, &bits);
	for (int m = 0; m < M; m++) {
		bin_row(L->w + (size_t)m * K, K, bw, HDQT_ACT_SIGN, q->w_centre, bits, c, NULL, NULL);
		expand(c, K, bw, g, cg);
		bgemm_w_set_row(&b->w, m, bits, cg);
	}
	b->g = g;
	b->beta_w = q->beta_w;
	b->w_centre = q->w_centre;
	b->valid = 1;
	L->wcached = 1;
	return 0;
}

typedef struct fwd_job {
	const float *x;
	int N, K, ba, g, n;
	hdqt_act_bin rule;
	bgemm_a *a;
	const bgemm_w *w;
	float *Y;
	int M;
	const bin_scratch *bs;
} fwd_job;

/* Rows [r0, r1): binarise into the kernel's operand, then multiply. */
static void fwd_task(void *arg, int t, int wk)
{
	const fwd_job *j = arg;
	int r0, r1;
	linear_task_rows(j->N, j->n, t, &r0, &r1);
	if (r1 <= r0)
		return;
	bgemm_a *a = j->a;
	float *c, *off;
	uint32_t *unused;
	row_tmp(j->bs, wk, j->K, &c, &off, &unused);
	for (int r = r0; r < r1; r++) {
		bin_row(j->x + (size_t)r * j->K, j->K, j->ba, j->rule, 0, a->bits + (size_t)r * a->nw, c,
			off, NULL);
		expand(c, j->K, j->ba, j->g, a->c + (size_t)r * a->ns);
		if (a->mu)
			expand(off, j->K, j->ba, j->g, a->mu + (size_t)r * a->ns);
	}
	bgemm_run(a, j->w, r0, r1, j->Y, j->M);
}

static int hadanet_forward(linear *L, const float *X, int N, int x_unsigned, const hdqt_qconfig *q,
			   linear_scratch *s, float *Y)
{
	const int K = L->in, M = L->out;
	int g, rc = common_seg(q, K, &g);
	if (rc < 0)
		return rc;
	const hdqt_act_bin rule = act_rule(q, x_unsigned);
	const int ba = seg_len(q->beta_a, K), bw = seg_len(q->beta_w, K);
	if (g == 1 || !bgemm_fast(K, g)) {
		/* Short segments: the same binarised values through the float product. */
		float *xa = SF(s, 4, (size_t)N * K);
		if (!xa)
			return HDQT_ENOMEM;
		struct linear_bin *b = L->bin;
		if (!b && !(b = L->bin = calloc(1, sizeof(*b))))
			return HDQT_ENOMEM;
		const int same = b->beta_w == q->beta_w && b->w_centre == q->w_centre &&
				 b->wmat_cap == (size_t)M * K;
		if (!L->wcached || !b->wmat_valid || !same) {
			/* W~ kept until the weights change, as the kernel path keeps its bits */
			b->wmat_valid = 0;
			if (b->wmat_cap != (size_t)M * K) {
				free(b->wmat);
				b->wmat_cap = 0;
				if (!(b->wmat = malloc(sizeof(float) * (size_t)M * K)))
					return HDQT_ENOMEM;
				b->wmat_cap = (size_t)M * K;
			}
			if ((rc = materialise(s, L->w, M, K, bw, HDQT_ACT_SIGN, q->w_centre, 0.0f, b->wmat,
					      NULL)) < 0)
				return rc;
			b->beta_w = q->beta_w;
			b->w_centre = q->w_centre;
			b->wmat_valid = 1;
			b->valid = 0; /* the kernel's copy is not refreshed here */
			L->wcached = 1;
		}
		if ((rc = materialise(s, X, N, K, ba, rule, 0, 0.0f, xa, NULL)) < 0)
			return rc;
		return linear_fp32_forward(s, xa, N, b->wmat, M, K, Y);
	}
	bin_scratch *bs = scratch_of(s, K);
	if (!bs)
		return HDQT_ENOMEM;
	{
		PHASE_BEGIN(s);
		rc = weight_operand(L, q, g, bs);
		PHASE_END(s, HDQT_PHASE_BINARY);
		if (rc < 0)
			return rc;
	}
	if ((rc = bgemm_a_alloc(&bs->a, N, K, g, rule != HDQT_ACT_SIGN)) < 0)
		return rc;
	fwd_job j = {.x = X, .N = N, .K = K, .ba = ba, .g = g, .rule = rule, .a = &bs->a,
		     .w = &L->bin->w, .Y = Y, .M = M, .bs = bs};
	j.n = linear_ntasks(s, N);
	PHASE_BEGIN(s);
	pool_run(s->pool, j.n, fwd_task, &j);
	PHASE_END(s, HDQT_PHASE_BINARY);
	return 0;
}

/* Eq. 5 and 6 applied to the gradients of the binarised operands. */
typedef struct ste_job {
	float *g;            /* in: gradient w.r.t. the binarised values; out: w.r.t. the latent */
	const uint8_t *pass;
	const float *x;      /* latent values (weights, for Eq. 6's delta) */
	int R, K, beta, n, mean_term, centre_row;
	const bin_scratch *bs;
} ste_job;

static void ste_task(void *arg, int t, int w)
{
	const ste_job *j = arg;
	int r0, r1;
	linear_task_rows(j->R, j->n, t, &r0, &r1);
	float *c, *unused;
	uint32_t *bits;
	row_tmp(j->bs, w, j->K, &c, &unused, &bits);
	for (int r = r0; r < r1; r++) {
		float *g = j->g + (size_t)r * j->K;
		const uint8_t *p = j->pass + (size_t)r * j->K;
		if (!j->mean_term) {
			for (int k = 0; k < j->K; k++)
				g[k] = p[k] ? g[k] : 0.0f;
			continue;
		}
		bin_row(j->x + (size_t)r * j->K, j->K, j->beta, HDQT_ACT_SIGN, j->centre_row, bits, c,
			NULL, NULL);
		for (int s = 0, k0 = 0; k0 < j->K; s++, k0 += j->beta) {
			const int k1 = k0 + j->beta < j->K ? k0 + j->beta : j->K;
			const float cut = 1.0f / (float)(k1 - k0), pass = cut + c[s];
			for (int k = k0; k < k1; k++)
				g[k] *= p[k] ? pass : cut;
		}
	}
}

static int ste(linear_scratch *s, float *g, const uint8_t *pass, const float *x, int R, int K,
	       int beta, int mean_term, int centre_row)
{
	ste_job j = {.g = g, .pass = pass, .x = x, .R = R, .K = K, .beta = beta,
		     .mean_term = mean_term, .centre_row = centre_row, .bs = scratch_of(s, K)};
	if (!j.bs)
		return HDQT_ENOMEM;
	j.n = linear_ntasks(s, R);
	PHASE_BEGIN(s);
	pool_run(s->pool, j.n, ste_task, &j);
	PHASE_END(s, HDQT_PHASE_BINARY);
	return 0;
}

static int hadanet_backward(linear *L, const float *X, int x_unsigned, const float *dY, int N,
			    const hdqt_qconfig *q, linear_scratch *s, hdqt_rng *rng, float *dX)
{
	(void)rng;
	const int K = L->in, M = L->out;
	int g, rc = common_seg(q, K, &g);
	if (rc < 0)
		return rc;
	const hdqt_act_bin rule = act_rule(q, x_unsigned);
	const int ba = seg_len(q->beta_a, K), bw = seg_len(q->beta_w, K);
	float *xa = SF(s, 4, (size_t)N * K), *wa = SF(s, 5, (size_t)M * K);
	uint8_t *px = (uint8_t *)SQ(s, 0, (size_t)N * K), *pw = (uint8_t *)SQ(s, 1, (size_t)M * K);
	if (!xa || !wa || !px || !pw)
		return HDQT_ENOMEM;
	if ((rc = materialise(s, X, N, K, ba, rule, 0, q->ste_clip, xa, px)) < 0 ||
	    (rc = materialise(s, L->w, M, K, bw, HDQT_ACT_SIGN, q->w_centre, q->ste_clip, wa, pw)) < 0 ||
	    (rc = linear_fp32_backward(s, xa, dY, wa, N, M, K, L->gw, dX)) < 0)
		return rc;
	if (bw > 1 && (rc = ste(s, L->gw, pw, L->w, M, K, bw, q->mean_term, q->w_centre)) < 0)
		return rc;
	if (dX && ba > 1 && (rc = ste(s, dX, px, X, N, K, ba, 0, 0)) < 0)
		return rc;
	return 0;
}

static void hadanet_release(linear *L)
{
	if (L->bin) {
		bgemm_w_free(&L->bin->w);
		free(L->bin->wmat);
		free(L->bin);
		L->bin = NULL;
	}
}

int linear_hadanet_stats(linear_scratch *s, const float *X, int R, int K, int x_unsigned,
			 const hdqt_qconfig *q, double acc[8])
{
	bin_scratch *bs = scratch_of(s, K);
	if (!bs)
		return HDQT_ENOMEM;
	const int ba = seg_len(q->beta_a, K);
	const hdqt_act_bin rule = act_rule(q, x_unsigned);
	float *c, *off;
	uint32_t *bits;
	row_tmp(bs, 0, K, &c, &off, &bits);
	for (int r = 0; r < R; r++) {
		const float *x = X + (size_t)r * K;
		for (int k = 0; k < K; k++) {
			acc[0] += x[k] == 0.0f;
			acc[5] += (double)x[k] * x[k];
			if (x[k] < 0.0f)
				acc[7] = 1;
		}
		acc[6] += K;
		for (int rl = HDQT_ACT_SIGN; rl <= HDQT_ACT_CENTRE; rl++) {
			if (rl == HDQT_ACT_MASK && acc[7] > 0)
				continue;
			bin_row(x, K, ba, (hdqt_act_bin)rl, 0, bits, c, off, NULL);
			const float *o = rl == HDQT_ACT_SIGN ? NULL : off;
			for (int k = 0; k < K; k++) {
				const double e = (ba == 1 ? x[k] : bin_value(bits, c, o, k, ba)) - x[k];
				acc[2 + rl] += e * e;
				if (rl == (int)rule && ba > 1 && q->ste_clip > 0.0f) {
					const float a = rl == HDQT_ACT_CENTRE ? x[k] - off[k / ba] : x[k];
					acc[1] += fabsf(a) > q->ste_clip;
				}
			}
		}
	}
	return 0;
}

void linear_hadanet_scratch_free(linear_scratch *s)
{
	bin_scratch *bs = s->bin;
	if (bs) {
		bgemm_a_free(&bs->a);
		free(bs->tmp);
		free(bs);
		s->bin = NULL;
	}
}

const linear_family linear_hadanet_family = {
	.name = "hadanet",
	.forward = hadanet_forward,
	.backward = hadanet_backward,
	.release = hadanet_release,
};
