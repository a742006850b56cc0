/* SPDX-License-Identifier: MIT */
/*
 * The MLP: input normalisation, bias-free linear layers with ReLU, a growing
 * head; forward, backward and SGD with momentum in any recipe.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "linear_impl.h"
#include "model.h"
#include "simd.h"

void hdqt_qconfig_default(hdqt_qconfig *q, hdqt_mode mode)
{
	memset(q, 0, sizeof(*q));
	q->mode = mode;
	q->bits = 4;
	q->acc_bits = 8;
	q->tile = 32;
	q->had_max = 256;
	q->fwd_clip = 0.975f;          /* paper: forward scale 0.975 x max-abs */
	q->fwd_gran = HDQT_SCALE_TENSOR;
	q->bwd_gran = HDQT_SCALE_TENSOR;
	q->sr_grad = 1;
	q->sr_weight = 0;
	q->sr_act = 1;
	/* HadaNets' knobs (read only by those recipes). */
	q->beta_w = 32;
	q->beta_a = 32;
	q->bin_layers = HDQT_BIN_INNER;
	q->edges = HDQT_MODE_FP32;
	q->act_bin = HDQT_ACT_MASK;
	q->ste_clip = 1.0f;
	q->mean_term = 1;
	q->w_centre = 0;
	switch (mode) {
	case HDQT_MODE_FP32:
		break;
	case HDQT_MODE_INT:
		/* The paper's recipe with the Hadamard transforms off, gradients
		 * scaled correctly (not divided by a block size). */
		q->bwd_tile = 0;
		q->bwd_hadamard = 0;
		q->bwd_fwdq = 1;
		break;
	case HDQT_MODE_HDQT_PAPER:
		/* The paper's code tiles only the forward pass and clamps each
		 * backward product to the accumulator range over its whole length.
		 * Its backward multiplies the forward's quantised operands (the
		 * saved codes); with the float ones instead, training diverged in
		 * 4 of 6 runs (README, "hdqt-paper and the backward operands"). */
		q->bwd_tile = 0;
		q->bwd_hadamard = 1;
		q->bwd_fwdq = 1;
		break;
	case HDQT_MODE_HADANET:
		/* beta 32 both: whole words for the kernel.  See README
		 * "HadaNets" for the measurements behind these choices. */
		q->edges = HDQT_MODE_HDQT;
		q->act_bin = HDQT_ACT_CENTRE;
		break;
	case HDQT_MODE_HADANET_PAPER:
		/* The paper's best setting: beta_w 16, beta_a 2, first and last
		 * layers in fp32, sign(0) = 0. */
		q->beta_w = 16;
		q->beta_a = 2;
		break;
	case HDQT_MODE_XNOR:
		q->beta_w = 0;
		q->beta_a = 0;
		break;
	case HDQT_MODE_HBWN:
		q->beta_w = 0;
		q->beta_a = 1;
		break;
	case HDQT_MODE_HDQT:
	default:
		/* Project recipe: see README "The hdqt recipe, step by step".
		 * Per-row scales (forward: per sample and per output row, so the
		 * inner product stays integer; backward: per row of each operand)
		 * with the forward range min(max-abs, 3 rms) keep the outliers of
		 * standardised features from flattening everyone else to zero.
		 * Forward tiles of 8 keep the 8-bit accumulators from saturating
		 * on full-range codes (with 32, some rounds diverged).  A forward
		 * Hadamard rotation measured no better, so it stays off.  With
		 * this forward nearly lossless, the backward may multiply the
		 * float X and W (bwd_fwdq 0): as accurate as the quantised ones
		 * (within seed noise) and 15% faster. */
		q->tile = 8;
		q->bwd_tile = 32;
		q->bwd_hadamard = 1;
		q->fwd_hadamard = 0;
		q->fwd_gran = HDQT_SCALE_ROW;
		q->bwd_gran = HDQT_SCALE_ROW;
		q->fwd_clip = 1.0f;
		q->fwd_clip_sigma = 3.0f;
		break;
	}
}

int hdqt_qconfig_check(const hdqt_qconfig *q)
{
	if (!q || (int)q->mode < 0 || q->mode >= HDQT_MODE_COUNT)
		return HDQT_EINVAL;
	if (q->mode == HDQT_MODE_FP32)
		return 0;
	if (q->bits < 2 || q->bits > 8 || q->acc_bits < 8 || q->acc_bits > 24 || q->tile < 1 ||
	    q->bwd_tile < 0 || q->had_max < 1 || (q->had_max & (q->had_max - 1)) != 0 ||
	    !(q->fwd_clip > 0.0f && q->fwd_clip <= 1.0f) || !(q->fwd_clip_sigma >= 0.0f) ||
	    isinf(q->fwd_clip_sigma) || (q->fwd_gran != HDQT_SCALE_TENSOR && q->fwd_gran != HDQT_SCALE_ROW) ||
	    (q->bwd_gran != HDQT_SCALE_TENSOR && q->bwd_gran != HDQT_SCALE_ROW) ||
	    (q->bwd_fwdq != 0 && q->bwd_fwdq != 1))
		return HDQT_EINVAL;
	if (hdqt_mode_is_hadanet(q->mode)) {
		const int lo = q->beta_a < q->beta_w ? q->beta_a : q->beta_w;
		const int hi = q->beta_a < q->beta_w ? q->beta_w : q->beta_a;
		/* segments must nest (0 is the whole row, which always does) */
		if (q->beta_w < 0 || q->beta_a < 0 || q->beta_w > HDQT_MAX_DIM ||
		    q->beta_a > HDQT_MAX_DIM || (lo > 0 && hi % lo != 0) ||
		    (q->bin_layers != HDQT_BIN_INNER && q->bin_layers != HDQT_BIN_ALL) ||
		    (q->edges != HDQT_MODE_FP32 && q->edges != HDQT_MODE_HDQT) ||
		    (int)q->act_bin < HDQT_ACT_SIGN || q->act_bin > HDQT_ACT_CENTRE ||
		    !(q->ste_clip >= 0.0f) || isinf(q->ste_clip) ||
		    (q->mean_term != 0 && q->mean_term != 1) || (q->w_centre != 0 && q->w_centre != 1))
			return HDQT_EINVAL;
	}
	return 0;
}

void model_layer_qconfig(const hdqt_qconfig *q, int l, int n_layers, hdqt_qconfig *out)
{
	if (!hdqt_mode_is_hadanet(q->mode) ||
	    q->bin_layers == HDQT_BIN_ALL || (l > 0 && l < n_layers - 1)) {
		*out = *q;
		return;
	}
	hdqt_qconfig_default(out, q->edges);
	out->bits = q->bits;
	out->acc_bits = q->acc_bits;
}

int model_in_pad(const hdqt_qconfig *q0, int n_in)
{
	/* A forward Hadamard over 166 features would use blocks of 2; padding the
	 * input with zero features to a multiple of 32 buys a useful block. */
	if (q0->mode != HDQT_MODE_FP32 && !hdqt_mode_is_hadanet(q0->mode) && q0->fwd_hadamard)
		return (n_in + 31) / 32 * 32;
	return n_in;
}

static int check_cfg(const hdqt_mlp_config *c)
{
	if (!c || c->n_in < 1 || c->n_in > HDQT_MAX_DIM || c->n_hidden < 0 ||
	    c->n_hidden >= HDQT_MAX_LAYERS || c->n_classes < 1 || c->n_classes > HDQT_MAX_CLASSES)
		return HDQT_EINVAL;
	for (int i = 0; i < c->n_hidden; i++)
		if (c->hidden[i] < 1 || c->hidden[i] > HDQT_MAX_DIM)
			return HDQT_EINVAL;
	return 0;
}

int model_alloc(hdqt_model **out, const hdqt_mlp_config *cfg, const hdqt_qconfig *q)
{
	if (!out || check_cfg(cfg) < 0 || hdqt_qconfig_check(q) < 0)
		return HDQT_EINVAL;
	hdqt_model *m = calloc(1, sizeof(*m));
	if (!m)
		return HDQT_ENOMEM;
	m->cfg = *cfg;
	m->q = *q;
	m->n_layers = cfg->n_hidden + 1;
	for (int l = 0; l < m->n_layers; l++)
		model_layer_qconfig(q, l, m->n_layers, &m->lq[l]);
	m->in_pad = model_in_pad(&m->lq[0], cfg->n_in);
	for (int c = 0; c < HDQT_MAX_CLASSES; c++) {
		m->la[c] = 1.0f;
		m->lb[c] = 0.0f;
	}
	m->mean = calloc((size_t)cfg->n_in, sizeof(float));
	m->std = malloc((size_t)cfg->n_in * sizeof(float));
	int rc = (m->mean && m->std) ? 0 : HDQT_ENOMEM;
	for (int i = 0; rc == 0 && i < cfg->n_in; i++)
		m->std[i] = 1.0f;
	for (int l = 0; rc == 0 && l < m->n_layers; l++) {
		int in = l == 0 ? m->in_pad : cfg->hidden[l - 1];
		int o = l == m->n_layers - 1 ? cfg->n_classes : cfg->hidden[l];
		rc = linear_init(&m->L[l], in, o);
	}
	hdqt_rng_seed(&m->rng, 0, 1);
	if (rc < 0) {
		hdqt_model_free(m);
		return rc;
	}
	*out = m;
	return 0;
}

/* PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), so fp32
 * results are comparable with the PyTorch reference runs. */
static void init_rows(linear *L, int r0, hdqt_rng *r, int fan_in)
{
	float bound = 1.0f / sqrtf((float)fan_in);
	for (int o = r0; o < L->out; o++)
		for (int k = 0; k < L->in; k++)
			L->w[(size_t)o * L->in + k] = k < fan_in ? (2.0f * hdqt_rng_uniform(r) - 1.0f) * bound : 0.0f;
	linear_touch(L);
}

int hdqt_model_new(hdqt_model **out, const hdqt_mlp_config *cfg, const hdqt_qconfig *q,
		   uint64_t seed)
{
	hdqt_model *m;
	int rc = model_alloc(&m, cfg, q);
	if (rc < 0)
		return rc;
	hdqt_rng r;
	hdqt_rng_seed(&r, seed, 0);
	for (int l = 0; l < m->n_layers; l++)
		init_rows(&m->L[l], 0, &r, l == 0 ? cfg->n_in : m->L[l].in);
	hdqt_rng_seed(&m->rng, seed, 1);
	*out = m;
	return 0;
}

void hdqt_model_free(hdqt_model *m)
{
	if (!m)
		return;
	for (int l = 0; l < HDQT_MAX_LAYERS; l++)
		linear_free(&m->L[l]);
	for (int l = 0; l <= HDQT_MAX_LAYERS; l++)
		free(m->act[l]);
	free(m->grad[0]);
	free(m->grad[1]);
	free(m->mean);
	free(m->std);
	linear_scratch_free(&m->s);
	pool_free(m->pool);
	free(m);
}

int hdqt_model_set_threads(hdqt_model *m, int threads)
{
	if (!m || threads < 1 || threads > POOL_MAX_THREADS)
		return HDQT_EINVAL;
	if (pool_size(m->pool) == threads)
		return 0;
	pool *p = NULL;
	if (threads > 1) {
		int rc = pool_new(&p, threads);
		if (rc < 0)
			return rc;
	}
	pool_free(m->pool);
	m->pool = p;
	m->s.pool = p;
	return 0;
}

int hdqt_model_threads(const hdqt_model *m)
{
	return m ? pool_size(m->pool) : 1;
}

int hdqt_model_clone(const hdqt_model *m, hdqt_model **out)
{
	if (!m || !out)
		return HDQT_EINVAL;
	hdqt_model *c;
	int rc = model_alloc(&c, &m->cfg, &m->q);
	if (rc < 0)
		return rc;
	for (int l = 0; l < m->n_layers; l++) {
		if (m->L[l].out != c->L[l].out && (rc = linear_grow(&c->L[l], m->L[l].out)) < 0) {
			hdqt_model_free(c);
			return rc;
		}
		memcpy(c->L[l].w, m->L[l].w, (size_t)m->L[l].in * m->L[l].out * sizeof(float));
		linear_touch(&c->L[l]);
	}
	c->cfg.n_classes = m->cfg.n_classes;
	memcpy(c->mean, m->mean, (size_t)m->cfg.n_in * sizeof(float));
	memcpy(c->std, m->std, (size_t)m->cfg.n_in * sizeof(float));
	c->norm_clip = m->norm_clip;
	c->rng = m->rng;
	memcpy(c->la, m->la, sizeof(c->la));
	memcpy(c->lb, m->lb, sizeof(c->lb));
	c->affine_on = m->affine_on;
	if ((rc = hdqt_model_set_threads(c, pool_size(m->pool))) < 0) {
		hdqt_model_free(c);
		return rc;
	}
	*out = c;
	return 0;
}

int hdqt_model_n_in(const hdqt_model *m) { return m->cfg.n_in; }
int hdqt_model_n_classes(const hdqt_model *m) { return m->cfg.n_classes; }
const hdqt_qconfig *hdqt_model_qconfig(const hdqt_model *m) { return &m->q; }
const hdqt_mlp_config *hdqt_model_config(const hdqt_model *m) { return &m->cfg; }

int hdqt_model_embed_dim(const hdqt_model *m)
{
	return m->cfg.n_hidden > 0 ? m->cfg.hidden[m->cfg.n_hidden - 1] : m->in_pad;
}

void hdqt_model_seed(hdqt_model *m, uint64_t seed)
{
	hdqt_rng_seed(&m->rng, seed, 1);
}

void hdqt_model_reset_optimizer(hdqt_model *m)
{
	for (int l = 0; l < m->n_layers; l++)
		memset(m->L[l].v, 0, (size_t)m->L[l].in * m->L[l].out * sizeof(float));
}

static int finite_all(const float *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isfinite(x[i]))
			return 0;
	return 1;
}

int hdqt_model_set_norm(hdqt_model *m, const float *mean, const float *std, float clip)
{
	int n = m->cfg.n_in;
	if (!mean || !std || !finite_all(mean, (size_t)n) || !finite_all(std, (size_t)n) ||
	    !isfinite(clip))
		return HDQT_ERANGE;
	for (int i = 0; i < n; i++)
		if (!(std[i] > 0.0f))
			return HDQT_ERANGE;
	memcpy(m->mean, mean, (size_t)n * sizeof(float));
	memcpy(m->std, std, (size_t)n * sizeof(float));
	m->norm_clip = clip;
	return 0;
}

int hdqt_model_fit_norm(hdqt_model *m, const float *X, int n, float clip)
{
	const int d = m->cfg.n_in;
	if (!X || n < 1 || !finite_all(X, (size_t)n * d))
		return HDQT_ERANGE;
	float *mean = malloc(sizeof(float) * d), *sd = malloc(sizeof(float) * d);
	if (!mean || !sd) {
		free(mean);
		free(sd);
		return HDQT_ENOMEM;
	}
	for (int j = 0; j < d; j++) {
		double s = 0.0, ss = 0.0;
		for (int i = 0; i < n; i++)
			s += X[(size_t)i * d + j];
		double mu = s / n;
		for (int i = 0; i < n; i++) {
			double e = X[(size_t)i * d + j] - mu;
			ss += e * e;
		}
		double v = ss / n;
		mean[j] = (float)mu;
		sd[j] = v > 1e-12 ? (float)sqrt(v) : 1.0f;
	}
	int rc = hdqt_model_set_norm(m, mean, sd, clip);
	free(mean);
	free(sd);
	return rc;
}

static int cmp_f32(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return x < y ? -1 : x > y;
}

static float median_of(float *v, int n)
{
	qsort(v, (size_t)n, sizeof(float), cmp_f32);
	return n % 2 ? v[n / 2] : 0.5f * (v[n / 2 - 1] + v[n / 2]);
}

int hdqt_model_fit_norm_robust(hdqt_model *m, const float *X, int n, float clip)
{
	const int d = m->cfg.n_in;
	if (!X || n < 1 || !finite_all(X, (size_t)n * d))
		return HDQT_ERANGE;
	float *mean = malloc(sizeof(float) * d), *sd = malloc(sizeof(float) * d);
	float *col = malloc(sizeof(float) * (size_t)n);
	if (!mean || !sd || !col) {
		free(mean);
		free(sd);
		free(col);
		return HDQT_ENOMEM;
	}
	for (int j = 0; j < d; j++) {
		for (int i = 0; i < n; i++)
			col[i] = X[(size_t)i * d + j];
		const double med = median_of(col, n);
		for (int i = 0; i < n; i++)
			col[i] = (float)fabs(X[(size_t)i * d + j] - med);
		/* A value this far out is a broken sensor, not a tail: it would set
		 * the scale of the feature for every other sample. */
		const double lim = 1e3 * (1.4826 * median_of(col, n) + 1e-6 * fabs(med) + 1e-12);
		double s = 0.0, ss = 0.0;
		int k = 0;
		for (int i = 0; i < n; i++) {
			const double x = X[(size_t)i * d + j];
			if (fabs(x - med) <= lim) {
				s += x;
				k++;
			}
		}
		const double mu = s / k; /* k >= 1: the median's own sample is kept */
		for (int i = 0; i < n; i++) {
			const double x = X[(size_t)i * d + j];
			if (fabs(x - med) <= lim)
				ss += (x - mu) * (x - mu);
		}
		const double v = ss / k;
		mean[j] = (float)mu;
		sd[j] = v > 1e-12 ? (float)sqrt(v) : 1.0f;
	}
	int rc = hdqt_model_set_norm(m, mean, sd, clip);
	free(mean);
	free(sd);
	free(col);
	return rc;
}

int hdqt_model_add_classes(hdqt_model *m, int k)
{
	if (k < 1 || m->cfg.n_classes + k > HDQT_MAX_CLASSES)
		return HDQT_EINVAL;
	linear *L = &m->L[m->n_layers - 1];
	int old = L->out;
	int rc = linear_grow(L, old + k);
	if (rc < 0)
		return rc;
	/* New rows drawn from a stream derived from the head size, so growth is
	 * reproducible and independent of how much training happened before. */
	hdqt_rng r;
	hdqt_rng_seed(&r, (uint64_t)old * 7919u + 17u, 2);
	init_rows(L, old, &r, m->n_layers == 1 ? m->cfg.n_in : L->in);
	m->cfg.n_classes = old + k;
	/* The new rows' logit affine is the identity already (rows beyond the
	 * head always are: model.h). */
	return 0;
}

int hdqt_model_remap_classes(hdqt_model *m, const int *map, int n_classes)
{
	linear *L = &m->L[m->n_layers - 1];
	const int old = L->out;
	if (!map || n_classes < old || n_classes > HDQT_MAX_CLASSES)
		return HDQT_EINVAL;
	unsigned char seen[HDQT_MAX_CLASSES] = {0};
	for (int i = 0; i < old; i++) {
		if (map[i] < 0 || map[i] >= n_classes || seen[map[i]])
			return HDQT_EINVAL;
		seen[map[i]] = 1;
	}
	linear nl;
	memset(&nl, 0, sizeof(nl));
	int rc = linear_init(&nl, L->in, n_classes);
	if (rc < 0)
		return rc;
	/* Fresh rows from the same stream as a head grown to this size. */
	hdqt_rng r;
	hdqt_rng_seed(&r, (uint64_t)old * 7919u + 17u, 2);
	init_rows(&nl, 0, &r, m->n_layers == 1 ? m->cfg.n_in : L->in);
	for (int i = 0; i < old; i++)
		memcpy(nl.w + (size_t)map[i] * L->in, L->w + (size_t)i * L->in, sizeof(float) * L->in);
	linear_free(L);
	*L = nl;
	linear_touch(L);
	/* A row's logit affine moves with its row; rows nothing lands on are
	 * the identity, as fresh rows of add_classes are. */
	float la[HDQT_MAX_CLASSES], lb[HDQT_MAX_CLASSES];
	for (int c = 0; c < HDQT_MAX_CLASSES; c++) {
		la[c] = 1.0f;
		lb[c] = 0.0f;
	}
	for (int i = 0; i < old; i++) {
		la[map[i]] = m->la[i];
		lb[map[i]] = m->lb[i];
	}
	memcpy(m->la, la, sizeof(la));
	memcpy(m->lb, lb, sizeof(lb));
	m->cfg.n_classes = n_classes;
	model_affine_refresh(m);
	return 0;
}

void model_affine_refresh(hdqt_model *m)
{
	m->affine_on = 0;
	for (int c = 0; c < m->cfg.n_classes; c++)
		m->affine_on |= m->la[c] != 1.0f || m->lb[c] != 0.0f;
}

int hdqt_model_set_logit_affine(hdqt_model *m, const float *a, const float *b)
{
	if (!m || (!a) != (!b))
		return HDQT_EINVAL;
	const int C = m->cfg.n_classes;
	if (a && (!finite_all(a, (size_t)C) || !finite_all(b, (size_t)C)))
		return HDQT_ERANGE;
	/* A scale must keep the order of a class's logits (> 0) and neither
	 * may blow logits up to infinity (a loaded blob is checked here too). */
	for (int c = 0; a && c < C; c++)
		if (!(a[c] > 0 && a[c] <= HDQT_LOGIT_SCALE_MAX) || !(fabsf(b[c]) <= HDQT_LOGIT_SHIFT_MAX))
			return HDQT_ERANGE;
	for (int c = 0; c < C; c++) {
		m->la[c] = a ? a[c] : 1.0f;
		m->lb[c] = a ? b[c] : 0.0f;
	}
	model_affine_refresh(m);
	return 0;
}

int hdqt_model_get_logit_affine(const hdqt_model *m, float *a, float *b)
{
	if (!m || !a || !b)
		return HDQT_EINVAL;
	memcpy(a, m->la, sizeof(float) * (size_t)m->cfg.n_classes);
	memcpy(b, m->lb, sizeof(float) * (size_t)m->cfg.n_classes);
	return m->affine_on;
}

/* Grow the activation and gradient buffers to n rows for the current
 * shapes (the head may have grown since the last call). */
static int ensure_cap(hdqt_model *m, int n)
{
	const int C = m->cfg.n_classes;
	if (n <= m->cap_n && C <= m->cap_c)
		return 0;
	n = n > m->cap_n ? n : m->cap_n;
	size_t widest = (size_t)m->in_pad;
	for (int l = 0; l <= m->n_layers; l++) {
		int d = l == 0 ? m->in_pad : m->L[l - 1].out;
		float *p = realloc(m->act[l], (size_t)n * d * sizeof(float));
		if (!p)
			return HDQT_ENOMEM;
		m->act[l] = p;
		widest = (size_t)d > widest ? (size_t)d : widest;
	}
	for (int i = 0; i < 2; i++) {
		float *p = realloc(m->grad[i], (size_t)n * widest * sizeof(float));
		if (!p)
			return HDQT_ENOMEM;
		m->grad[i] = p;
	}
	m->cap_n = n;
	m->cap_c = C;
	return 0;
}

#if HDQT_X86_64
#include <immintrin.h>

/* AVX2 versions of the element-wise passes.  Each lane does exactly the
 * scalar loop's operations (mask select, separate multiply and add: no
 * FMA), so both paths give the same floats. */
__attribute__((target("avx2"))) static size_t relu_avx2(float *a, size_t n)
{
	size_t i = 0;
	const __m256 z = _mm256_setzero_ps();
	for (; i + 8 <= n; i += 8) {
		__m256 v = _mm256_loadu_ps(a + i);
		_mm256_storeu_ps(a + i, _mm256_and_ps(v, _mm256_cmp_ps(v, z, _CMP_GT_OQ)));
	}
	return i;
}

__attribute__((target("avx2"))) static size_t relu_back_avx2(float *dx, const float *a, size_t n)
{
	size_t i = 0;
	const __m256 z = _mm256_setzero_ps();
	for (; i + 8 <= n; i += 8) {
		__m256 m = _mm256_cmp_ps(_mm256_loadu_ps(a + i), z, _CMP_GT_OQ);
		_mm256_storeu_ps(dx + i, _mm256_and_ps(_mm256_loadu_ps(dx + i), m));
	}
	return i;
}

#define HAVE_AVX2() SIMD_AVX2()
#else
#define HAVE_AVX2() 0
#define relu_avx2(a, n) 0
#define relu_back_avx2(dx, a, n) 0
#endif

/* Element-wise loops over the pool: chunks of 4096 elements, so the
 * SIMD and scalar parts of each element are those of a serial run. */
typedef struct ew {
	float *a;
	const float *b;
	size_t n;
	int op;
} ew;

enum { EW_CHUNK = 4096, EW_RELU, EW_RELU_BACK };

static void relu(float *a, size_t n);
static void relu_back(float *dx, const float *a, size_t n);

static void ew_task(void *arg, int t, int w)
{
	(void)w;
	const ew *e = arg;
	size_t i0 = (size_t)t * EW_CHUNK, len = e->n - i0 < EW_CHUNK ? e->n - i0 : EW_CHUNK;
	if (e->op == EW_RELU)
		relu(e->a + i0, len);
	else
		relu_back(e->a + i0, e->b + i0, len);
}

static void ew_run(hdqt_model *m, ew *e)
{
	linear_scratch *s = &m->s;
	PHASE_BEGIN(s);
	pool_run(m->pool, (int)((e->n + EW_CHUNK - 1) / EW_CHUNK), ew_task, e);
	PHASE_END(s, HDQT_PHASE_ELEMENTWISE);
}

static const char *const phase_names[HDQT_PHASE_COUNT] = {
	[HDQT_PHASE_QUANT] = "quantise",     [HDQT_PHASE_FWHT] = "hadamard",
	[HDQT_PHASE_TRANSPOSE] = "transpose", [HDQT_PHASE_PACK] = "pack",
	[HDQT_PHASE_GEMM] = "int_gemm",      [HDQT_PHASE_RESCALE] = "rescale",
	[HDQT_PHASE_FLOAT_GEMM] = "float_gemm", [HDQT_PHASE_BINARY] = "binary",
	[HDQT_PHASE_ELEMENTWISE] = "elementwise",
	[HDQT_PHASE_FUSED] = "fused",
};

const char *hdqt_phase_name(int phase)
{
	return phase >= 0 && phase < HDQT_PHASE_COUNT ? phase_names[phase] : "?";
}

void hdqt_model_profile(hdqt_model *m, int on)
{
	if (!m)
		return;
	m->s.profile = on != 0;
	if (on)
		memset(m->s.prof, 0, sizeof(m->s.prof));
}

void hdqt_model_profile_read(const hdqt_model *m, double seconds[HDQT_PHASE_COUNT])
{
	for (int i = 0; i < HDQT_PHASE_COUNT; i++)
		seconds[i] = m ? m->s.prof[i] : 0.0;
}

static void relu(float *a, size_t n)
{
	size_t i = HAVE_AVX2() ? relu_avx2(a, n) : 0;
	for (; i < n; i++)
		a[i] = a[i] > 0.0f ? a[i] : 0.0f;
}

/* dX = (a > 0) ? dX : 0, the ReLU derivative, a being the ReLU output. */
static void relu_back(float *dx, const float *a, size_t n)
{
	size_t i = HAVE_AVX2() ? relu_back_avx2(dx, a, n) : 0;
	for (; i < n; i++)
		dx[i] = a[i] > 0.0f ? dx[i] : 0.0f;
}

static void normalise(const hdqt_model *m, const float *X, int n, float *out)
{
	const int d = m->cfg.n_in, dp = m->in_pad;
	const float c = m->norm_clip;
	for (int i = 0; i < n; i++) {
		const float *x = X + (size_t)i * d;
		float *o = out + (size_t)i * dp;
		for (int j = 0; j < d; j++) {
			float v = (x[j] - m->mean[j]) / m->std[j];
			if (c > 0.0f)
				v = v < -c ? -c : (v > c ? c : v);
			o[j] = v;
		}
		for (int j = d; j < dp; j++)
			o[j] = 0.0f;
	}
}

/* Forward through all layers, keeping activations for backward. */
static int forward_cached(hdqt_model *m, const float *X, int n)
{
	int rc = ensure_cap(m, n);
	if (rc < 0)
		return rc;
	normalise(m, X, n, m->act[0]);
	for (int l = 0; l < m->n_layers; l++) {
		rc = linear_forward(&m->L[l], m->act[l], n, l > 0, &m->lq[l], &m->s, m->act[l + 1]);
		if (rc < 0)
			return rc;
		if (l < m->n_layers - 1)
			ew_run(m, &(ew){.op = EW_RELU, .a = m->act[l + 1], .n = (size_t)n * m->L[l].out});
	}
	return 0;
}

/* Inference runs in chunks of the training batch size: under per-tensor
 * scales (int, hdqt-paper) a sample's output depends on the other samples
 * of its chunk, and a larger chunk has larger outliers, so a larger max-abs
 * scale and more inputs quantised to zero than training saw (the paper's
 * code evaluates in batches of 128 too).  Per-row scales (hdqt) do not
 * depend on the chunk. */
#define CHUNK 128

/* Inference in CHUNK rows: logits (with the logit affine) and/or
 * embeddings (the last layer's input), each may be NULL. */
static int forward_chunks(hdqt_model *m, const float *X, int n, float *logits, float *emb)
{
	if (!m || !X || (!logits && !emb) || n < 0)
		return HDQT_EINVAL;
	if (!finite_all(X, (size_t)n * m->cfg.n_in))
		return HDQT_ERANGE;
	const int d = m->cfg.n_in, C = m->cfg.n_classes, e = hdqt_model_embed_dim(m);
	for (int i = 0; i < n; i += CHUNK) {
		int b = n - i < CHUNK ? n - i : CHUNK;
		int rc = forward_cached(m, X + (size_t)i * d, b);
		if (rc < 0)
			return rc;
		if (emb)
			memcpy(emb + (size_t)i * e, m->act[m->n_layers - 1], (size_t)b * e * sizeof(float));
		if (!logits)
			continue;
		float *o = logits + (size_t)i * C;
		memcpy(o, m->act[m->n_layers], (size_t)b * C * sizeof(float));
		/* The logit affine belongs to inference only: the training step
		 * reads act[] directly and never sees it. */
		if (m->affine_on)
			for (int r = 0; r < b; r++)
				for (int c = 0; c < C; c++)
					o[(size_t)r * C + c] = m->la[c] * o[(size_t)r * C + c] + m->lb[c];
	}
	return 0;
}

int hdqt_model_forward(hdqt_model *m, const float *X, int n, float *logits)
{
	return logits ? forward_chunks(m, X, n, logits, NULL) : HDQT_EINVAL;
}

int hdqt_model_embed(hdqt_model *m, const float *X, int n, float *emb)
{
	return emb ? forward_chunks(m, X, n, NULL, emb) : HDQT_EINVAL;
}

int hdqt_model_forward_embed(hdqt_model *m, const float *X, int n, float *logits, float *emb)
{
	return logits && emb ? forward_chunks(m, X, n, logits, emb) : HDQT_EINVAL;
}

int hdqt_model_bin_stats(hdqt_model *m, const float *X, int n, hdqt_bin_stats st[HDQT_MAX_LAYERS])
{
	if (!m || !X || !st || n < 1)
		return HDQT_EINVAL;
	if (!finite_all(X, (size_t)n * m->cfg.n_in))
		return HDQT_ERANGE;
	double acc[HDQT_MAX_LAYERS][8];
	memset(acc, 0, sizeof(acc));
	memset(st, 0, sizeof(hdqt_bin_stats) * HDQT_MAX_LAYERS);
	const int d = m->cfg.n_in;
	for (int i = 0; i < n; i += CHUNK) {
		const int b = n - i < CHUNK ? n - i : CHUNK;
		int rc = forward_cached(m, X + (size_t)i * d, b);
		for (int l = 0; rc == 0 && l < m->n_layers; l++)
			if (hdqt_mode_is_hadanet(m->lq[l].mode))
				rc = linear_hadanet_stats(&m->s, m->act[l], b, m->L[l].in, l > 0, &m->lq[l],
							  acc[l]);
		if (rc < 0)
			return rc;
	}
	for (int l = 0; l < m->n_layers; l++) {
		if (!hdqt_mode_is_hadanet(m->lq[l].mode))
			continue;
		const double *a = acc[l];
		st[l].binary = 1;
		st[l].frac_zero = a[0] / a[6];
		st[l].frac_cut = a[1] / a[6];
		for (int r = 0; r < 3; r++)
			st[l].rel_err[r] = r == HDQT_ACT_MASK && a[7] > 0 ? -1.0
					   : a[5] > 0 ? sqrt(a[2 + r] / a[5]) : 0.0;
	}
	return 0;
}

int hdqt_model_predict(hdqt_model *m, const float *X, int n, int *pred)
{
	if (!m || !pred)
		return HDQT_EINVAL;
	const int C = m->cfg.n_classes, d = m->cfg.n_in;
	float *lg = malloc(sizeof(float) * (size_t)C * CHUNK);
	if (!lg)
		return HDQT_ENOMEM;
	int rc = 0;
	for (int i = 0; i < n && rc == 0; i += CHUNK) {
		int b = n - i < CHUNK ? n - i : CHUNK;
		rc = hdqt_model_forward(m, X + (size_t)i * d, b, lg);
		for (int r = 0; rc == 0 && r < b; r++) {
			int best = 0;
			for (int c = 1; c < C; c++)
				if (lg[(size_t)r * C + c] > lg[(size_t)r * C + best])
					best = c;
			pred[i + r] = best;
		}
	}
	free(lg);
	return rc;
}

void hdqt_sgd_default(hdqt_sgd *o)
{
	o->lr = 0.01f;
	o->momentum = 0.9f;
	o->weight_decay = 2e-4f;
	o->step_every = 0;
	o->step_gamma = 0.1f;
}

float hdqt_sgd_lr_at(const hdqt_sgd *o, int epoch)
{
	float lr = o->lr;
	if (o->step_every > 0)
		for (int e = o->step_every; e <= epoch; e += o->step_every)
			lr *= o->step_gamma;
	return lr;
}

int hdqt_model_train_step(hdqt_model *m, const hdqt_batch *b, const hdqt_sgd *o, float lr,
			  float *loss)
{
	if (!m || !b || !o || !b->X || !b->y || b->n < 1 || !isfinite(lr) || lr < 0.0f)
		return HDQT_EINVAL;
	const int n = b->n, C = m->cfg.n_classes;
	for (int i = 0; i < n; i++)
		if (b->y[i] < 0 || b->y[i] >= C)
			return HDQT_EINVAL;
	if (b->teacher && (b->n_old < 1 || b->n_old > C || !(b->kd_T > 0.0f)))
		return HDQT_EINVAL;
	if (!finite_all(b->X, (size_t)n * m->cfg.n_in))
		return HDQT_ERANGE;
	int rc = forward_cached(m, b->X, n);
	if (rc < 0)
		return rc;
	/* Loss gradient w.r.t. logits. */
	float *g = m->grad[0];
	memset(g, 0, (size_t)n * C * sizeof(float));
	float L = hdqt_loss_ce(m->act[m->n_layers], b->y, n, C, g);
	if (b->teacher && b->kd_lambda > 0.0f)
		L += hdqt_loss_kd(m->act[m->n_layers], C, b->teacher, n, b->n_old, b->kd_T,
				  b->kd_lambda, g);
	if (!isfinite(L))
		return HDQT_ERANGE;
	/* Backward: gradients first, weights updated only once all succeeded. */
	for (int l = m->n_layers - 1; l >= 0; l--) {
		float *dX = l > 0 ? m->grad[1] : NULL;
		rc = linear_backward(&m->L[l], m->act[l], l > 0, g, n, &m->lq[l], &m->s, &m->rng, dX);
		if (rc < 0)
			return rc;
		if (l > 0) {
			/* ReLU: act[l] is the ReLU output feeding layer l. */
			ew_run(m, &(ew){.op = EW_RELU_BACK, .a = dX, .b = m->act[l],
					.n = (size_t)n * m->L[l].in});
			float *t = m->grad[0];
			m->grad[0] = m->grad[1];
			m->grad[1] = t;
			g = m->grad[0];
		}
	}
	for (int l = 0; l < m->n_layers; l++)
		linear_sgd(&m->L[l], l > 0, &m->lq[l], &m->s, o->momentum, o->weight_decay, lr);
	if (loss)
		*loss = L;
	return 0;
}
