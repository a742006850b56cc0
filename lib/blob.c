/* SPDX-License-Identifier: MIT */
/*
 * Model blob: "HDQTMDL1", u32 format version, u32 payload length, payload,
 * u32 CRC-32 (zlib) of everything before it.  All integers and floats are
 * little-endian.  Loading checks magic, version, length and CRC before it
 * parses, then bounds-checks every field; any mismatch is an error, never a
 * crash.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "model.h"

#define BLOB_MAGIC "HDQTMDL1"
/* 2: + qconfig.bwd_fwdq; 3: + HadaNets' knobs; 4: + the logit affine (a[C], b[C]
 * after the PRNG state).  1 to 3 still load, with the identity affine. */
#define BLOB_VERSION 4u
#define HDR 16

typedef struct wbuf { uint8_t *p; size_t n, cap; int err; } wbuf;
typedef struct rbuf { const uint8_t *p; size_t n, off; int err; } rbuf;

static void put(wbuf *w, const void *src, size_t n)
{
	if (w->err)
		return;
	if (w->n + n > w->cap) {
		size_t c = w->cap ? w->cap : 256;
		while (c < w->n + n)
			c *= 2;
		uint8_t *q = realloc(w->p, c);
		if (!q) {
			w->err = HDQT_ENOMEM;
			return;
		}
		w->p = q;
		w->cap = c;
	}
	memcpy(w->p + w->n, src, n);
	w->n += n;
}

static void put_u32(wbuf *w, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
	put(w, b, 4);
}

static void put_i32(wbuf *w, int32_t v) { put_u32(w, (uint32_t)v); }

static void put_f32(wbuf *w, float f)
{
	uint32_t v;
	memcpy(&v, &f, 4);
	put_u32(w, v);
}

static uint32_t get_u32(rbuf *r)
{
	if (r->err || r->n - r->off < 4) {
		r->err = HDQT_ECORRUPT;
		return 0;
	}
	const uint8_t *b = r->p + r->off;
	r->off += 4;
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static int32_t get_i32(rbuf *r) { return (int32_t)get_u32(r); }

static float get_f32(rbuf *r)
{
	uint32_t v = get_u32(r);
	float f;
	memcpy(&f, &v, 4);
	return f;
}

int hdqt_model_save(const hdqt_model *m, uint8_t **blob, size_t *len)
{
	if (!m || !blob || !len)
		return HDQT_EINVAL;
	wbuf w = {0};
	put(&w, BLOB_MAGIC, 8);
	put_u32(&w, BLOB_VERSION);
	put_u32(&w, 0); /* payload length, patched below */
	const hdqt_mlp_config *c = &m->cfg;
	const hdqt_qconfig *q = &m->q;
	put_i32(&w, c->n_in);
	put_i32(&w, c->n_hidden);
	for (int i = 0; i < c->n_hidden; i++)
		put_i32(&w, c->hidden[i]);
	put_i32(&w, c->n_classes);
	put_i32(&w, q->mode);
	put_i32(&w, q->bits);
	put_i32(&w, q->acc_bits);
	put_i32(&w, q->tile);
	put_i32(&w, q->bwd_tile);
	put_i32(&w, q->had_max);
	put_f32(&w, q->fwd_clip);
	put_f32(&w, q->fwd_clip_sigma);
	put_i32(&w, q->bwd_hadamard);
	put_i32(&w, q->fwd_hadamard);
	put_i32(&w, q->fwd_gran);
	put_i32(&w, q->bwd_gran);
	put_i32(&w, q->sr_grad);
	put_i32(&w, q->sr_weight);
	put_i32(&w, q->sr_act);
	put_i32(&w, q->signed_act);
	put_i32(&w, q->bwd_fwdq);
	put_i32(&w, q->beta_w);
	put_i32(&w, q->beta_a);
	put_i32(&w, q->bin_layers);
	put_i32(&w, q->edges);
	put_i32(&w, q->act_bin);
	put_f32(&w, q->ste_clip);
	put_i32(&w, q->mean_term);
	put_i32(&w, q->w_centre);
	put_f32(&w, m->norm_clip);
	for (int i = 0; i < c->n_in; i++)
		put_f32(&w, m->mean[i]);
	for (int i = 0; i < c->n_in; i++)
		put_f32(&w, m->std[i]);
	for (int l = 0; l < m->n_layers; l++) {
		size_t sz = (size_t)m->L[l].in * m->L[l].out;
		for (size_t i = 0; i < sz; i++)
			put_f32(&w, m->L[l].w[i]);
	}
	for (int i = 0; i < 4; i++)
		put_u32(&w, m->rng.s[i]);
	for (int i = 0; i < c->n_classes; i++)
		put_f32(&w, m->la[i]);
	for (int i = 0; i < c->n_classes; i++)
		put_f32(&w, m->lb[i]);
	if (w.err) {
		free(w.p);
		return w.err;
	}
	uint32_t plen = (uint32_t)(w.n - HDR);
	for (int i = 0; i < 4; i++)
		w.p[12 + i] = (uint8_t)(plen >> (8 * i));
	put_u32(&w, (uint32_t)crc32(0L, w.p, (uInt)w.n));
	if (w.err) {
		free(w.p);
		return w.err;
	}
	*blob = w.p;
	*len = w.n;
	return 0;
}

int hdqt_model_load(const uint8_t *blob, size_t len, hdqt_model **out)
{
	if (!blob || !out)
		return HDQT_EINVAL;
	if (len < HDR + 4 || memcmp(blob, BLOB_MAGIC, 8) != 0)
		return HDQT_ECORRUPT;
	rbuf r = {blob, len - 4, 8, 0};
	uint32_t ver = get_u32(&r), plen = get_u32(&r);
	if (ver < 1u || ver > BLOB_VERSION)
		return HDQT_EVERSION;
	if ((size_t)plen != len - HDR - 4)
		return HDQT_ECORRUPT;
	uint32_t want = (uint32_t)blob[len - 4] | (uint32_t)blob[len - 3] << 8 |
			(uint32_t)blob[len - 2] << 16 | (uint32_t)blob[len - 1] << 24;
	if ((uint32_t)crc32(0L, blob, (uInt)(len - 4)) != want)
		return HDQT_ECORRUPT;

	hdqt_mlp_config c = {0};
	hdqt_qconfig q;
	/* Fields a version predates keep the defaults (versions 1 and 2 knew
	 * no HadaNets recipe, so their knobs are never read). */
	hdqt_qconfig_default(&q, HDQT_MODE_HDQT);
	c.n_in = get_i32(&r);
	c.n_hidden = get_i32(&r);
	if (r.err || c.n_hidden < 0 || c.n_hidden >= HDQT_MAX_LAYERS)
		return HDQT_ECORRUPT;
	for (int i = 0; i < c.n_hidden; i++)
		c.hidden[i] = get_i32(&r);
	c.n_classes = get_i32(&r);
	q.mode = (hdqt_mode)get_i32(&r);
	q.bits = get_i32(&r);
	q.acc_bits = get_i32(&r);
	q.tile = get_i32(&r);
	q.bwd_tile = get_i32(&r);
	q.had_max = get_i32(&r);
	q.fwd_clip = get_f32(&r);
	q.fwd_clip_sigma = get_f32(&r);
	q.bwd_hadamard = get_i32(&r);
	q.fwd_hadamard = get_i32(&r);
	q.fwd_gran = (hdqt_scale_gran)get_i32(&r);
	q.bwd_gran = (hdqt_scale_gran)get_i32(&r);
	q.sr_grad = get_i32(&r);
	q.sr_weight = get_i32(&r);
	q.sr_act = get_i32(&r);
	q.signed_act = get_i32(&r);
	if (ver >= 2u) {
		q.bwd_fwdq = get_i32(&r);
	} else {
		/* Version 1 predates the flag: take the mode's recipe, so that a
		 * stored hdqt-paper model goes on training as the paper does. */
		hdqt_qconfig d;
		hdqt_qconfig_default(&d, (int)q.mode >= 0 && q.mode < HDQT_MODE_COUNT ? q.mode : HDQT_MODE_HDQT);
		q.bwd_fwdq = d.bwd_fwdq;
	}
	if (ver >= 3u) {
		q.beta_w = get_i32(&r);
		q.beta_a = get_i32(&r);
		q.bin_layers = (hdqt_bin_layers)get_i32(&r);
		q.edges = (hdqt_mode)get_i32(&r);
		q.act_bin = (hdqt_act_bin)get_i32(&r);
		q.ste_clip = get_f32(&r);
		q.mean_term = get_i32(&r);
		q.w_centre = get_i32(&r);
	}
	float norm_clip = get_f32(&r);
	if (r.err)
		return HDQT_ECORRUPT;
	/* The weights are in the blob, so the declared sizes must account for
	 * exactly the bytes left before anything is allocated: otherwise a
	 * 150-byte blob with a valid CRC declaring 65536-wide layers makes
	 * model_alloc reserve gigabytes (found by tests/fuzz/fuzz_blob.c).  The
	 * first layer's input is padded as model_alloc pads it. */
	if (c.n_in < 1 || c.n_in > HDQT_MAX_DIM || c.n_classes < 1 || c.n_classes > HDQT_MAX_CLASSES)
		return HDQT_ECORRUPT;
	const size_t affine = ver >= 4u ? 2 * (size_t)c.n_classes : 0;
	size_t need = 2 * (size_t)c.n_in + 4 + affine;
	if (hdqt_qconfig_check(&q) < 0)
		return HDQT_ECORRUPT;
	hdqt_qconfig q0;
	model_layer_qconfig(&q, 0, c.n_hidden + 1, &q0);
	size_t fan_in = (size_t)model_in_pad(&q0, c.n_in);
	for (int l = 0; l <= c.n_hidden; l++) {
		int o = l == c.n_hidden ? c.n_classes : c.hidden[l];
		if (o < 1 || o > HDQT_MAX_DIM)
			return HDQT_ECORRUPT;
		need += fan_in * (size_t)o;
		fan_in = (size_t)o;
	}
	if ((r.n - r.off) % 4 != 0 || (r.n - r.off) / 4 != need)
		return HDQT_ECORRUPT;
	/* Sizes are validated by model_alloc; the remaining length is checked
	 * again against the layers it made before anything large is read. */
	hdqt_model *m;
	int rc = model_alloc(&m, &c, &q);
	if (rc < 0)
		return rc == HDQT_ENOMEM ? rc : HDQT_ECORRUPT;
	need = 2 * (size_t)c.n_in + 4 + affine;
	for (int l = 0; l < m->n_layers; l++)
		need += (size_t)m->L[l].in * m->L[l].out;
	if ((r.n - r.off) / 4 != need || (r.n - r.off) % 4 != 0) {
		hdqt_model_free(m);
		return HDQT_ECORRUPT;
	}
	/* A blob whose CRC holds can still carry a value that is not finite
	 * (written by a broken build, or crafted into an imported bundle): one
	 * NaN weight makes every prediction NaN, so such a blob is corrupt. */
	int bad = !isfinite(norm_clip);
	m->norm_clip = norm_clip;
	for (int i = 0; i < c.n_in; i++)
		bad |= !isfinite(m->mean[i] = get_f32(&r));
	for (int i = 0; i < c.n_in; i++)
		bad |= !isfinite(m->std[i] = get_f32(&r));
	for (int l = 0; l < m->n_layers; l++) {
		size_t sz = (size_t)m->L[l].in * m->L[l].out;
		for (size_t i = 0; i < sz; i++)
			bad |= !isfinite(m->L[l].w[i] = get_f32(&r));
		linear_touch(&m->L[l]);
	}
	for (int i = 0; i < 4; i++)
		m->rng.s[i] = get_u32(&r);
	/* Kept as read (so that load + save is the identity on the bytes);
	 * a value that is not finite would poison every logit of its class. */
	for (int i = 0; affine && i < c.n_classes; i++)
		m->la[i] = get_f32(&r);
	for (int i = 0; affine && i < c.n_classes; i++)
		m->lb[i] = get_f32(&r);
	for (int i = 0; i < c.n_classes; i++)
		bad |= !(m->la[i] > 0 && m->la[i] <= HDQT_LOGIT_SCALE_MAX) ||
		       !(fabsf(m->lb[i]) <= HDQT_LOGIT_SHIFT_MAX);
	if (r.err || bad) {
		hdqt_model_free(m);
		return HDQT_ECORRUPT;
	}
	model_affine_refresh(m);
	*out = m;
	return 0;
}
