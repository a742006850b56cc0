/* SPDX-License-Identifier: MIT */
/*
 * The HDQT family: the fp32 reference and the integer recipes int,
 * hdqt-paper and hdqt.
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
 *
 * Cached between steps: the forward weight codes, packed (L->wpack).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fwht.h"
#include "linear_impl.h"
#include "quant.h"

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
	float *sc = linear_grow_mem((void **)&s->sa, &s->sacap, (size_t)R * sizeof(float));
	if (!qa || !sc)
		return HDQT_ENOMEM;
	if (out != a)
		memcpy(out, a, (size_t)R * K * sizeof(float));
	if (blk > 1)
		linear_fwht_par(s, out, R, K, blk);
	linear_quant_par(s, out, R, K, sp, NULL, qa, sc);
	for (int i = 0; i < R; i++) {
		const int8_t *qi = qa + (size_t)i * K;
		float *oi = out + (size_t)i * K;
		for (int k = 0; k < K; k++)
			oi[k] = (float)qi[k] * sc[i];
	}
	if (blk > 1) {
		linear_fwht_par(s, out, R, K, blk);
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
		linear_fwht_par(s, fw, M, K, blk);
		wa = fw;
	}
	int8_t *qb = SQ(s, 1, (size_t)M * K);
	float *sc = realloc(L->wscale, sizeof(float) * (size_t)M);
	if (!qb || !sc)
		return HDQT_ENOMEM;
	L->wscale = sc;
	linear_quant_par(s, wa, M, K, spw, NULL, qb, sc);
	int rc = linear_pack_par(s, &L->wpack, qb, M, K, gp);
	if (rc < 0)
		return rc;
	L->wcached = 1;
	return 0;
}

static int hdqt_forward(linear *L, const float *X, int N, int x_unsigned, const hdqt_qconfig *q,
			linear_scratch *s, float *Y)
{
	const int K = L->in, M = L->out;
	if (q->mode == HDQT_MODE_FP32)
		return linear_fp32_forward(s, X, N, L->w, M, K, Y);
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
			linear_fwht_par(s, fx, N, K, blk);
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
	float *sa = linear_grow_mem((void **)&s->sa, &s->sacap, (size_t)N * sizeof(float));
	if (!qa || !sa)
		return HDQT_ENOMEM;
	linear_quant_par(s, xa, N, K, &spx, NULL, qa, sa);
	return linear_gemm_par(s, qa, N, &L->wpack, sa, L->wscale, div, Y);
}

static int hdqt_backward(linear *L, const float *X, int x_unsigned, const float *dY, int N,
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
	if (q->mode == HDQT_MODE_FP32)
		return linear_fp32_backward(s, X, dY, W, N, M, K, L->gw, dX);
	const int per_row = q->bwd_gran == HDQT_SCALE_ROW;
	quant_spec sp_g = {.bits = q->bits, .is_unsigned = 0, .clip = 1.0f, .clip_sigma = 0.0f,
			   .per_row = per_row, .stochastic = q->sr_grad};
	quant_spec sp_w = sp_g, sp_x = sp_g;
	sp_w.stochastic = q->sr_weight;
	sp_x.stochastic = q->sr_act;
	gemm_params gp = {.tile = q->bwd_tile, .acc_bits = q->acc_bits, .bits = q->bits, .a_signed = 1};
	float *sa = linear_grow_mem((void **)&s->sa, &s->sacap, (size_t)(M > N ? M : N) * sizeof(float));
	float *sb = linear_grow_mem((void **)&s->sb, &s->sbcap, (size_t)K * sizeof(float));
	if (!sa || !sb)
		return HDQT_ENOMEM;
	void *A;
	int rc;

	/* grad-weight: reduction over the batch.  A batch of, say, 122 rows
	 * has no Hadamard block larger than 2, and without the transform the
	 * 4-bit gradient product loses too much (training diverged), so the
	 * batch is padded with zero rows to a multiple of a power-of-two
	 * block: zero rows add nothing to dY^T X.  Both operands are columns
	 * of row-major matrices (dY^T, X^T): the column path builds them with
	 * the transform along the batch and no transpose. */
	int blkN = 1, Np = N;
	if (q->bwd_hadamard) {
		int p2 = 1;
		while (p2 < N && p2 < q->had_max)
			p2 <<= 1;
		Np = (N + p2 - 1) / p2 * p2;
		blkN = fwht_block(Np, q->had_max);
	}
	rc = linear_colq_b(s, X, N, K, Np, blkN, &sp_x, rng, &gp, &s->bpack, sb);
	if (rc == 0)
		rc = linear_colq_a(s, dY, N, M, Np, blkN, &sp_g, rng, &s->bpack, &A, sa);
	if (rc == 0)
		rc = linear_gemm_apacked_par(s, A, M, &s->bpack, sa, sb, (float)blkN, L->gw);
	if (rc < 0)
		return rc;
	if (!dX)
		return 0;

	/* grad-input: reduction over the output dimension.  B = (H_M W)^T is
	 * W's columns transformed along M (the column path again); A = dY H_M
	 * by rows. */
	const int blkM = q->bwd_hadamard ? fwht_block(M, q->had_max) : 1;
	float *g = SF(s, 2, (size_t)N * M);
	int8_t *qa = SQ(s, 0, (size_t)N * M);
	if (!g || !qa)
		return HDQT_ENOMEM;
	{
		PHASE_BEGIN(s);
		memcpy(g, dY, (size_t)N * M * sizeof(float));
		PHASE_END(s, HDQT_PHASE_TRANSPOSE);
	}
	if (blkM > 1)
		linear_fwht_par(s, g, N, M, blkM);
	rc = linear_colq_b(s, W, M, K, M, blkM, &sp_w, rng, &gp, &s->bpack, sb);
	if (rc < 0)
		return rc;
	linear_quant_par(s, g, N, M, &sp_g, rng, qa, sa);
	return linear_gemm_par(s, qa, N, &s->bpack, sa, sb, (float)blkM, dX);
}

/* SGD fused with the next forward's weight operand: each task updates a
 * block of 16 weight rows (one column block of the packed B), then
 * measures, rounds and packs those rows while they are in L1, so the
 * forward finds L->wpack ready instead of reading W three more times
 * (range, rounding, packing).  The same functions on the same rows as
 * linear_sgd + weight_operand: the same floats, codes and bytes.  Only
 * for per-row scales (a tensor scale needs every row first) and no
 * forward rotation. */
typedef struct wsgd_job {
	linear *L;
	linear_scratch *s;
	const quant_spec *sp;
	float mu, wd, lr;
} wsgd_job;

static void wsgd_task(void *arg, int jb, int w)
{
	const wsgd_job *j = arg;
	linear *L = j->L;
	const int K = L->in, r0 = jb * 16, nr = L->out - r0 < 16 ? L->out - r0 : 16;
	const size_t o = (size_t)r0 * K;
	linear_sgd_span(L->w + o, L->v + o, L->gw + o, (size_t)nr * K, j->mu, j->wd, j->lr);
	int8_t *codes = j->s->wws[w].buf;
	quant_rows_part(L->w + o, 0, nr, K, j->sp, 0, 0.0f, codes, L->wscale + r0);
	gemm_pack_rows(&L->wpack, jb, codes);
}

static int fused_sgd(linear *L, int x_unsigned, const hdqt_qconfig *q, linear_scratch *s, float mu,
		    float wd, float lr)
{
	const int K = L->in, M = L->out;
	if (q->mode == HDQT_MODE_FP32 || (q->fwd_hadamard && fwht_block(K, q->had_max) > 1))
		return 0;
	quant_spec spx, spw;
	fwd_specs(q, x_unsigned, &spx, &spw);
	if (!spw.per_row)
		return 0;
	const gemm_params gp = {.tile = q->tile, .acc_bits = q->acc_bits, .bits = q->bits,
				.a_signed = !spx.is_unsigned};
	/* Everything that can fail before any weight moves. */
	float *sc = realloc(L->wscale, sizeof(float) * (size_t)M);
	if (!sc)
		return 0;
	L->wscale = sc;
	const int th = pool_size(s->pool);
	for (int i = 0; i < th; i++)
		if (!linear_grow_mem(&s->wws[i].buf, &s->wws[i].cap, (size_t)16 * K))
			return 0;
	L->wcached = 0;
	const int nb = gemm_pack_begin(&L->wpack, NULL, M, K, &gp);
	if (nb != (M + 15) / 16) /* no kernel layout (or no memory): the plain step */
		return 0;
	PHASE_BEGIN(s);
	wsgd_job j = {.L = L, .s = s, .sp = &spw, .mu = mu, .wd = wd, .lr = lr};
	pool_run(s->pool, nb, wsgd_task, &j);
	L->wcached = 1;
	PHASE_END(s, HDQT_PHASE_FUSED);
	return 1;
}

static void hdqt_release(linear *L)
{
	gemm_packed_free(&L->wpack);
	free(L->wscale);
	L->wscale = NULL;
	L->wcached = 0;
}

const linear_family linear_hdqt_family = {
	.name = "hdqt",
	.forward = hdqt_forward,
	.backward = hdqt_backward,
	.release = hdqt_release,
	.sgd = fused_sgd,
};
