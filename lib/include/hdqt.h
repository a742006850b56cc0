/* SPDX-License-Identifier: MIT */
/*
 * libhdqt: Hadamard Domain Quantized Training (HDQT) of small MLPs with
 * 4-bit integer matrix-multiply inputs and tile-clamped 8-bit accumulators.
 *
 * Conventions: every function that can fail returns 0 or a negative
 * HDQT_E* code (see hdqt_strerror()); a function that failed changed
 * nothing observable.  Objects are created by *_new() and released by
 * *_free() (NULL is accepted).  A model is not thread-safe: one thread
 * trains or predicts with it at a time; clone it to predict elsewhere.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
	HDQT_OK = 0,
	HDQT_EINVAL = -1,   /* invalid argument or configuration */
	HDQT_ENOMEM = -2,   /* allocation failed */
	HDQT_ECORRUPT = -3, /* blob or file failed its integrity checks */
	HDQT_EVERSION = -4, /* blob written by an unknown format version */
	HDQT_ERANGE = -5,   /* a value is out of its allowed range (NaN, Inf, too large) */
	HDQT_EIO = -6,      /* reading or writing a file failed */
	HDQT_EFORMAT = -7,  /* a text input (CSV, list) is malformed */
	HDQT_ENOTFOUND = -8,/* a named thing does not exist */
	HDQT_ESTATE = -9,   /* the call does not fit the object's state */
	HDQT_ECANCELED = -10,
	HDQT_EEXIST = -11,   /* a named thing exists already */
	HDQT_EFULL = -12,    /* storage full: disk, file-size limit or configured cap */
	HDQT_EBUSY = -13,    /* the database stayed locked past the busy timeout */
};

/* Human-readable message for an HDQT_E* code; never NULL. */
const char *hdqt_strerror(int err);

/* ---- quantisation recipe ------------------------------------------------ */

typedef enum {
	HDQT_MODE_FP32 = 0,   /* float reference, no quantisation */
	HDQT_MODE_INT,        /* integer path with the Hadamard transform off (ablation) */
	HDQT_MODE_HDQT_PAPER, /* Schiemer et al.'s recipe as published */
	HDQT_MODE_HDQT,       /* this project's best integer recipe */
	/* HadaNets (Akhauri 2019): delta (.) sign(X), binary products */
	HDQT_MODE_HADANET,       /* beta_w = beta_a = 32, every layer binary but the edges (4-bit hdqt) */
	HDQT_MODE_HADANET_PAPER, /* beta_w 16, beta_a 2, edges fp32: the paper's best setting */
	HDQT_MODE_XNOR,          /* the XNOR-Net end point: beta = the whole row for both */
	HDQT_MODE_HBWN,          /* binary weights (whole-row delta), full-precision activations */
	HDQT_MODE_COUNT
} hdqt_mode;

/* Parse "fp32", "int", "hdqt-paper", "hdqt", "hadanet", "hadanet-paper",
 * "xnor" or "hbwn"; HDQT_EINVAL otherwise. */
int hdqt_mode_parse(const char *s, hdqt_mode *out);
const char *hdqt_mode_name(hdqt_mode m);
/* 1 for the HadaNets recipes (binary products), 0 otherwise. */
int hdqt_mode_is_hadanet(hdqt_mode m);

/* HadaNets: which layers are binarised; the others run the edge recipe. */
typedef enum {
	HDQT_BIN_INNER = 0, /* all but the first and the last layer (the paper) */
	HDQT_BIN_ALL,       /* every layer */
} hdqt_bin_layers;

/* HadaNets: how an activation segment becomes off + c * sign.  The
 * paper's sign(0) = 0 cannot be one bit; on the non-negative outputs of
 * ReLU, delta * [x > 0] is off = c = delta / 2 with the bit of x <= 0. */
typedef enum {
	HDQT_ACT_SIGN = 0, /* delta * sign(x), sign(0) = +1: off = 0 */
	HDQT_ACT_MASK,     /* delta * [x > 0] on non-negative inputs (the paper's sign(0) = 0) */
	HDQT_ACT_CENTRE,   /* mu + c * sign(x - mu), mu the segment mean, c = mean |x - mu| */
} hdqt_act_bin;

typedef enum {
	HDQT_SCALE_TENSOR = 0, /* one max-abs scale for the whole tensor */
	HDQT_SCALE_ROW,        /* one scale per row along the reduction dim (keeps the inner product integer) */
} hdqt_scale_gran;

typedef struct hdqt_qconfig {
	hdqt_mode mode;
	int bits;          /* matmul input bits, 2..8 (default 4) */
	int acc_bits;      /* tile accumulator bits, 8..24 (default 8) */
	int tile;          /* forward reduction tile, >= 1 (default 32) */
	int bwd_tile;      /* backward reduction tile; 0 = the whole reduction (paper's code) */
	int had_max;       /* largest Hadamard block, power of two (default 256) */
	float fwd_clip;    /* forward scale = fwd_clip * max-abs (paper: 0.975) */
	float fwd_clip_sigma; /* > 0: forward scale = min(max-abs, k * rms) instead (hdqt) */
	int bwd_hadamard;  /* Hadamard transforms in the backward pass */
	int fwd_hadamard;  /* rotate both forward operands by H along the reduction (hdqt) */
	hdqt_scale_gran fwd_gran; /* forward scale granularity */
	hdqt_scale_gran bwd_gran; /* backward scale granularity */
	int sr_grad;       /* stochastic rounding of the output gradient (both products) */
	int sr_weight;     /* stochastic rounding of H.W in grad-input (paper: nearest) */
	int sr_act;        /* stochastic rounding of H.X in grad-weight (paper: stochastic) */
	int signed_act;    /* quantise hidden activations with the signed range */
	int bwd_fwdq;      /* backward products take the forward's quantised X and W (the
			    * values the forward multiplied, as the paper's code does),
			    * not the float ones */
	/* HadaNets only (ignored by the other recipes): */
	int beta_w, beta_a;    /* segment lengths along the reduction; 0 = the whole row */
	hdqt_bin_layers bin_layers;
	hdqt_mode edges;       /* recipe of the layers not binarised: fp32 or hdqt */
	hdqt_act_bin act_bin;  /* on non-negative inputs (signed ones always use sign) */
	float ste_clip;        /* sign's straight-through gradient passes where |x| <= ste_clip
				* (Eq. 5; 0: everywhere) */
	int mean_term;         /* weight gradient gets the segment mean's term (Eq. 6) */
	int w_centre;          /* binarise W - mean of its row (the author's code) */
} hdqt_qconfig;

/* Fill *q with the defaults of a mode (4-bit inputs, 8-bit accumulators, tile 32). */
void hdqt_qconfig_default(hdqt_qconfig *q, hdqt_mode mode);
/* 0 if *q is consistent, HDQT_EINVAL otherwise. */
int hdqt_qconfig_check(const hdqt_qconfig *q);

/* ---- PRNG -------------------------------------------------------------- */

/* xoshiro128++ state: fast, small, one per thread; seeded through splitmix64. */
typedef struct hdqt_rng { uint32_t s[4]; } hdqt_rng;
void hdqt_rng_seed(hdqt_rng *r, uint64_t seed, uint64_t stream);
uint32_t hdqt_rng_u32(hdqt_rng *r);
float hdqt_rng_uniform(hdqt_rng *r);      /* [0, 1) */
float hdqt_rng_normal(hdqt_rng *r);       /* N(0, 1) */
uint32_t hdqt_rng_below(hdqt_rng *r, uint32_t n); /* [0, n), n > 0 */

/* ---- MLP model ----------------------------------------------------------- */

#define HDQT_MAX_LAYERS 8
#define HDQT_MAX_DIM 65536
#define HDQT_MAX_CLASSES 1024

typedef struct hdqt_mlp_config {
	int n_in;                        /* input features */
	int n_hidden;                    /* number of hidden layers (0..HDQT_MAX_LAYERS-1) */
	int hidden[HDQT_MAX_LAYERS];     /* their widths */
	int n_classes;                   /* initial head size (>= 1) */
} hdqt_mlp_config;

typedef struct hdqt_model hdqt_model;

/* Create a model with random (Kaiming-uniform) weights drawn from seed. */
int hdqt_model_new(hdqt_model **out, const hdqt_mlp_config *cfg,
		   const hdqt_qconfig *q, uint64_t seed);
void hdqt_model_free(hdqt_model *m);
/* Deep copy (weights, normalisation, recipe; optimiser state reset). */
int hdqt_model_clone(const hdqt_model *m, hdqt_model **out);

int hdqt_model_n_in(const hdqt_model *m);
int hdqt_model_n_classes(const hdqt_model *m);
int hdqt_model_embed_dim(const hdqt_model *m);
const hdqt_qconfig *hdqt_model_qconfig(const hdqt_model *m);
const hdqt_mlp_config *hdqt_model_config(const hdqt_model *m);

/* Input normalisation x' = clamp((x - mean) / std, -clip, clip) (clip <= 0: none).
 * hdqt_model_fit_norm computes mean/std from n rows of X. */
int hdqt_model_set_norm(hdqt_model *m, const float *mean, const float *std, float clip);
int hdqt_model_fit_norm(hdqt_model *m, const float *X, int n, float clip);
/* Threads for training steps and forward passes (1 by default, at most 64;
 * a clone inherits the count).  Work is split over output rows and
 * elements, never over a reduction: results are bit-identical for every
 * count.  HDQT_EINVAL, or HDQT_ENOMEM if the threads cannot be started. */
int hdqt_model_set_threads(hdqt_model *m, int threads);
int hdqt_model_threads(const hdqt_model *m);
/* As hdqt_model_fit_norm, but values more than 1000 robust standard
 * deviations (1.4826 MAD) from a feature's median are left out of its mean
 * and std, so one absurd sample cannot squash the others; on data without
 * such values the result equals hdqt_model_fit_norm's up to rounding. */
int hdqt_model_fit_norm_robust(hdqt_model *m, const float *X, int n, float clip);

/* Grow the head by k classes; existing rows are kept, new ones initialised. */
int hdqt_model_add_classes(hdqt_model *m, int k);
/* Move the head's rows: old row i becomes row map[i] of a head of n_classes
 * rows (map injective, every entry in [0, n_classes)); rows no old row
 * lands on are initialised as hdqt_model_add_classes would.  Momentum is
 * reset.  HDQT_EINVAL for a bad map (nothing changed), HDQT_ENOMEM. */
int hdqt_model_remap_classes(hdqt_model *m, const int *map, int n_classes);
/* Per-class logit affine of inference, BiC's bias correction (Wu et al.,
 * CVPR 2019, Eq. 6): hdqt_model_forward and hdqt_model_predict return
 * a[c] * o_c + b[c] for the raw logit o_c; hdqt_model_train_step always
 * uses the raw logits.  a and b hold n_classes floats each (copied);
 * NULL, NULL sets the identity (a = 1, b = 0), the default.  With the
 * identity the logits are bit-identical to a model without it.  Rows
 * added by hdqt_model_add_classes start at the identity; remap moves
 * them with their rows; clone, save and load keep them.  HDQT_EINVAL for
 * one NULL, HDQT_ERANGE unless every 0 < a <= HDQT_LOGIT_SCALE_MAX and
 * |b| <= HDQT_LOGIT_SHIFT_MAX (nothing changed; a blob with such values
 * does not load). */
#define HDQT_LOGIT_SCALE_MAX 1000.0f
#define HDQT_LOGIT_SHIFT_MAX 10000.0f
int hdqt_model_set_logit_affine(hdqt_model *m, const float *a, const float *b);
/* Copy the affine into a and b (n_classes floats each, caller's): 1 if it
 * is not the identity, 0 if it is, HDQT_EINVAL for NULL. */
int hdqt_model_get_logit_affine(const hdqt_model *m, float *a, float *b);

/* Inference in the model's recipe.  logits: n x n_classes.  Rejects NaN/Inf input
 * with HDQT_ERANGE.  Uses internal scratch: not re-entrant on one model. */
int hdqt_model_forward(hdqt_model *m, const float *X, int n, float *logits);
/* Penultimate-layer features (n x embed_dim), for NME / herding. */
int hdqt_model_embed(hdqt_model *m, const float *X, int n, float *emb);
/* Both of one pass: logits (n x n_classes) and embeddings (n x embed_dim),
 * the same floats as hdqt_model_forward's and hdqt_model_embed's. */
int hdqt_model_forward_embed(hdqt_model *m, const float *X, int n, float *logits, float *emb);
/* argmax predictions (n). */
int hdqt_model_predict(hdqt_model *m, const float *X, int n, int *pred);

/* HadaNets: what binarisation does to the inputs of the binarised layers
 * on data X (n rows), for choosing and checking the recipe.  Per layer:
 * binary (0 for layers in the edge recipe, whose other fields are 0),
 * the fraction of inputs that are exactly zero, the fraction the sign's
 * straight-through estimator cuts (|x - off| > ste_clip under the
 * model's act_bin), and the relative error |X~ - X| / |X| of each
 * act_bin rule (sign, mask, centre; mask only on non-negative inputs,
 * else -1) at the model's beta_a. */
typedef struct hdqt_bin_stats {
	int binary;
	double frac_zero, frac_cut;
	double rel_err[3];
} hdqt_bin_stats;
int hdqt_model_bin_stats(hdqt_model *m, const float *X, int n, hdqt_bin_stats st[HDQT_MAX_LAYERS]);

/* Where a model's time goes (hdqt-bench's phase fractions): seconds per
 * phase of its products and element-wise passes, summed over threads'
 * wall time of each call (a pool call counts once).  Off by default; on,
 * each phase reads the monotonic clock twice. */
enum {
	HDQT_PHASE_QUANT,       /* ranges and rounding to the integer grid */
	HDQT_PHASE_FWHT,        /* Walsh-Hadamard transforms */
	HDQT_PHASE_TRANSPOSE,   /* float transposes and copies of the backward */
	HDQT_PHASE_PACK,        /* packing B for the integer kernel */
	HDQT_PHASE_GEMM,        /* tile-clamped integer products */
	HDQT_PHASE_RESCALE,     /* integer results back to floats: now inside the products
				   (HDQT_PHASE_GEMM; the AVX-512 VNNI kernel rescales in its
				   store), so always 0; kept so that the indices stay */
	HDQT_PHASE_FLOAT_GEMM,  /* float products (fp32, HadaNets' backward) */
	HDQT_PHASE_BINARY,      /* HadaNets: binarisation and the binary product */
	HDQT_PHASE_ELEMENTWISE, /* ReLU, its derivative, the plain SGD update */
	HDQT_PHASE_FUSED,       /* the backward's transposed operands (Hadamard, ranges,
				   rounding and packing in one pass, no transpose) and
				   the hdqt SGD update with the next forward's weight
				   operand (ranges, rounding, packing) */
	HDQT_PHASE_COUNT
};
const char *hdqt_phase_name(int phase);
/* on: reset the counters and start timing; off: stop. */
void hdqt_model_profile(hdqt_model *m, int on);
void hdqt_model_profile_read(const hdqt_model *m, double seconds[HDQT_PHASE_COUNT]);

/* ---- training -------------------------------------------------------- */

typedef struct hdqt_sgd {
	float lr;            /* base learning rate (paper: 0.01) */
	float momentum;      /* 0.9 */
	float weight_decay;  /* 2e-4 */
	int step_every;      /* epochs between learning-rate drops (0 = none) */
	float step_gamma;    /* multiplier at each drop */
} hdqt_sgd;

void hdqt_sgd_default(hdqt_sgd *o);
/* Learning rate in effect at a given epoch under the step schedule. */
float hdqt_sgd_lr_at(const hdqt_sgd *o, int epoch);

typedef struct hdqt_batch {
	const float *X;          /* n x n_in, raw (the model normalises) */
	const int *y;            /* n labels in [0, n_classes) */
	int n;
	const float *teacher;    /* optional n x n_old logits of a previous model */
	int n_old;               /* distillation over the first n_old classes */
	float kd_T;              /* distillation temperature (2) */
	float kd_lambda;         /* weight of the distillation term */
} hdqt_batch;

/* One SGD step with learning rate lr.  *loss gets the mean batch loss.
 * On error the model is unchanged. */
int hdqt_model_train_step(hdqt_model *m, const hdqt_batch *b, const hdqt_sgd *o,
			  float lr, float *loss);
/* Reset momentum buffers (e.g. at the start of a task). */
void hdqt_model_reset_optimizer(hdqt_model *m);
/* Reseed the stochastic-rounding stream (reproducible runs). */
void hdqt_model_seed(hdqt_model *m, uint64_t seed);

/* Losses, exposed for tests: mean softmax cross-entropy and its gradient
 * (grad may be NULL); mean temperature distillation T^2*KL(p_t||p_s). */
float hdqt_loss_ce(const float *logits, const int *y, int n, int c, float *grad);
float hdqt_loss_kd(const float *logits, int ld, const float *teacher, int n, int c_old,
		   float T, float lambda, float *grad);

/* ---- serialisation ----------------------------------------------------- */

/* Serialise to a versioned, CRC-32 checksummed blob (malloc'd, caller frees). */
int hdqt_model_save(const hdqt_model *m, uint8_t **blob, size_t *len);
/* Load a blob; HDQT_ECORRUPT / HDQT_EVERSION / HDQT_EINVAL on bad input. */
int hdqt_model_load(const uint8_t *blob, size_t len, hdqt_model **out);

/* ---- kernels info ------------------------------------------------------- */

/* Name of the integer GEMM variant chosen at start-up ("scalar", "avx2",
 * "avxvnni", "avx512vnni"). */
const char *hdqt_kernel_name(void);
/* Force a variant by name (tests/bench); HDQT_ENOTFOUND if unsupported here. */
int hdqt_kernel_select(const char *name);
/* The HadaNets binary matrix multiply's variant ("scalar", "avx2",
 * "avx512", "avx512bitalg", "neon"; HDQT_BKERNEL forces one). */
const char *hdqt_binary_kernel_name(void);
/* The cap HDQT_ISA puts on the engine's x86 paths: "native", "avx2" or
 * "baseline" (case-insensitive; an unknown name caps nothing, so a caller
 * that reads HDQT_ISA itself can tell it was not understood). */
const char *hdqt_isa_name(void);

#ifdef __cplusplus
}
#endif
