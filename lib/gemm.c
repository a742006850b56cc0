/* SPDX-License-Identifier: MIT */
/*
 * Tile-clamped integer GEMM (HDQT forward/backward products).
 *
 * Semantics (the scalar reference below): for every output C[i][j] the
 * reduction over k is cut into tiles of `tile`; each tile's exact sum is
 * clamped to the signed range of an a-bit accumulator, and the clamped tile
 * sums are added in int32.  This models 8-bit accumulators made feasible by
 * tiling the reduction (Schiemer et al., Sec. 3).
 *
 * The SIMD kernels work on packed operands:
 *   Ap: I rows of K4*4 bytes, A + off (off = 2^(b-1) for signed A, else 0),
 *       zero padded; unsigned so u8 x s8 dot-product instructions apply.
 *   Bp: blocks of 16 output columns: [J16][K4][16 columns][4 bytes of k].
 *   corr: [J16][ntiles][16] = -off * sum_{k in tile} B[j][k], the start
 *       value of each tile accumulator, which cancels the offset exactly.
 * A tile is a whole number of 4-byte groups, so the SIMD path needs
 * tile % 4 == 0 (or one tile); other shapes use the reference.
 * The aarch64 kernels (fn_s8) multiply signed bytes (SDOT, SMULL), so they
 * take the same layout with off = 0: Ap holds A's own bytes, corr is zero.
 * With 8-bit accumulators and tiles of 8 or 32 the AVX-512 kernel takes its
 * own layout, tiles in lanes (LAYOUT_TL, described in gemm_x86_tl.c; where
 * tl_takes lets it): the same bytes and sums in another order, whole
 * quads of four tiles and, where the tiles do not fill the last quad, one
 * to three tiles in the column layout after them.  b_at, corr_at and a_at
 * below say where each element goes.
 */
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "gemm.h"
#include "hdqt.h"
#include "simd.h"

void gemm_ws_free(gemm_ws *ws)
{
	if (!ws)
		return;
	free(ws->buf);
	ws->buf = NULL;
	ws->cap = 0;
}

static void *ws_get(gemm_ws *ws, size_t n)
{
	if (ws->cap < n) {
		void *p = realloc(ws->buf, n);
		if (!p)
			return NULL;
		ws->buf = p;
		ws->cap = n;
	}
	return ws->buf;
}

static int check_shape(int I, int J, int K, const gemm_params *p, int *tile)
{
	if (I < 0 || J < 0 || K < 1 || I > HDQT_MAX_DIM * 64 || J > HDQT_MAX_DIM ||
	    K > HDQT_MAX_DIM || p->tile < 0 || p->acc_bits < 8 || p->acc_bits > 24 ||
	    p->bits < 2 || p->bits > 8 || (!p->a_signed && p->bits > 7))
		return HDQT_EINVAL; /* unsigned A is stored in int8: at most 7 bits */
	int t = (p->tile == 0 || p->tile > K) ? K : p->tile;
	long ntiles = (K + t - 1) / t;
	/* Each clamped tile sum is below 2^(a-1) in magnitude; the int32 total must fit. */
	if (ntiles * ((long)1 << (p->acc_bits - 1)) > INT_MAX)
		return HDQT_ERANGE;
	*tile = t;
	return 0;
}

int gemm_q_ref(const int8_t *A, const int8_t *B, int I, int J, int K,
	       const gemm_params *p, int32_t *C)
{
	int tile;
	int rc = check_shape(I, J, K, p, &tile);
	if (rc < 0)
		return rc;
	const int32_t hi = (1 << (p->acc_bits - 1)) - 1, lo = -(1 << (p->acc_bits - 1));
	for (int i = 0; i < I; i++) {
		const int8_t *a = A + (long)i * K;
		for (int j = 0; j < J; j++) {
			const int8_t *b = B + (long)j * K;
			int32_t wide = 0;
			for (int k0 = 0; k0 < K; k0 += tile) {
				int k1 = k0 + tile < K ? k0 + tile : K;
				int32_t s = 0;
				for (int k = k0; k < k1; k++)
					s += (int32_t)a[k] * b[k];
				s = s < lo ? lo : (s > hi ? hi : s);
				wide += s;
			}
			C[(long)i * J + j] = wide;
		}
	}
	return 0;
}

long gemm_q_ref_count_clamped(const int8_t *A, const int8_t *B, int I, int J, int K,
			      const gemm_params *p)
{
	int tile;
	if (check_shape(I, J, K, p, &tile) < 0)
		return -1;
	const int32_t hi = (1 << (p->acc_bits - 1)) - 1, lo = -(1 << (p->acc_bits - 1));
	long n = 0;
	for (int i = 0; i < I; i++)
		for (int j = 0; j < J; j++)
			for (int k0 = 0; k0 < K; k0 += tile) {
				int k1 = k0 + tile < K ? k0 + tile : K;
				int32_t s = 0;
				for (int k = k0; k < k1; k++)
					s += (int32_t)A[(long)i * K + k] * B[(long)j * K + k];
				n += (s < lo || s > hi);
			}
	return n;
}

/* ---- kernel selection (once, at first use) ---- */

static const gemm_kernel kernels[] = {
#if HDQT_X86_64
	{"avx512vnni", gemm_x86_avx512vnni, 8, NULL, 0, gemm_x86_avx512vnni_f, 1 << 2 | 1 << 8,
	 gemm_x86_tl, gemm_x86_tl_f, NULL, NULL, NULL, NULL},
	{"avxvnni", gemm_x86_avxvnni, 8, NULL, 0, gemm_x86_avxvnni_f, 0, NULL, NULL, NULL, NULL, NULL,
	 NULL},
	/* maddubs adds two u8*s8 products in int16: exact only while
	 * 2 * (2^b - 1) * (2^(b-1) - 1) fits, i.e. b <= 7. */
	{"avx2", gemm_x86_avx2, 7, NULL, 0, gemm_x86_avx2_f, 0, NULL, NULL, gemm_x86_avx2_r4,
	 gemm_x86_avx2_r4_f, gemm_x86_avx2_n16, gemm_x86_avx2_n16_f},
#endif
#if HDQT_AARCH64
	/* Both exact for 8-bit operands: SDOT sums in int32; the NEON path
	 * flushes its 16-bit partial sums as often as the bits require. */
	{"dotprod", NULL, 8, gemm_arm_dotprod, 0, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL},
	{"neon", NULL, 8, gemm_arm_neon, 0, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL},
#endif
	/* Every build has it: the choice where no architecture kernel runs. */
	{"portable", NULL, 8, gemm_portable_s8, 1, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL},
	{"scalar", NULL, 8, NULL, 0, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL},
};
#define N_KERNELS (sizeof(kernels) / sizeof(kernels[0]))

static int kernel_supported(const gemm_kernel *k)
{
#if HDQT_X86_64
	if (k->fn == gemm_x86_avx512vnni)
		return gemm_x86_avx512vnni_supported();
	if (k->fn == gemm_x86_avxvnni)
		return gemm_x86_avxvnni_supported();
	if (k->fn == gemm_x86_avx2)
		return gemm_x86_avx2_supported();
#endif
#if HDQT_AARCH64
	if (k->fn_s8 == gemm_arm_dotprod)
		return gemm_arm_dotprod_supported();
	if (k->fn_s8 == gemm_arm_neon)
		return gemm_arm_neon_supported();
#endif
	return 1;
}

/* Which packed layout kernel k takes for these operands: 0 none (the
 * reference runs), 1 offset-corrected A (fn), 2 A's own bytes (fn_s8), 3
 * the same with k-major groups (tgroups), 4 tiles in lanes (fn_tl: the
 * saturating packs are the clamp of 8-bit accumulators, nothing wider). */
enum { LAYOUT_NONE = 0, LAYOUT_OFFSET = 1, LAYOUT_RAW = 2, LAYOUT_RAWT = 3, LAYOUT_TL = 4 };

/* Tiles in lanes for these tiles: the kernel takes them (tl4); there is
 * at least one whole quad of four tiles (the tiles past the last whole
 * quad, one to three, are the column layout's: padding them to a quad
 * made K = 166 with tiles of 8 work through 192 k, and K = 64 with tiles
 * of 32 ran at 0.69 times the column layout padded to 128); and for tiles
 * of 32 (the backward's, whose operands mostly come from strips) the
 * strip packers must be vector code (VBMI): the scalar fallback of this
 * layout's would cost more than it gains. */
static int tl8_on(void);
static int tl_takes(const gemm_kernel *k, const gemm_params *p, int tile, int K)
{
	if (!k->tl4 || p->acc_bits != 8 || tile >= K || tile % 4 || tile / 4 > 30 ||
	    !(k->tl4 >> (tile / 4) & 1))
		return 0;
	if (tile == 8 && !tl8_on())
		return 0;
	if ((K + 3) / 4 < tile) /* four tiles of tile / 4 groups */
		return 0;
#if HDQT_X86_64
	if (tile / 4 == 8)
		return gemm_x86_vbmi_supported();
#endif
	return 1;
}
static int kernel_layout(const gemm_kernel *k, const gemm_params *p, int tile, int J, int K)
{
	if ((!k->fn && !k->fn_s8) || p->bits > k->max_bits || (tile % 4 != 0 && tile < K) || J <= 0)
		return LAYOUT_NONE;
	if (tl_takes(k, p, tile, K))
		return LAYOUT_TL;
	return k->fn_s8 ? (k->tgroups ? LAYOUT_RAWT : LAYOUT_RAW) : LAYOUT_OFFSET;
}

/* Groups of 4 k per row (K4), per tile (tile4) and tiles (ntiles) of a
 * packing under layout use. */
static void layout_dims(int use, int K, int tile, int *K4, int *tile4, int *ntiles)
{
	*K4 = (K + 3) / 4;
	*tile4 = tile >= K ? *K4 : (tile / 4 > 0 ? tile / 4 : 1);
	if (use == LAYOUT_TL) /* whole tiles */
		*K4 = (*K4 + *tile4 - 1) / *tile4 * *tile4;
	*ntiles = (*K4 + *tile4 - 1) / *tile4;
}

/* Where element k of column jl (< 16) lies in its block of B (K4 * 64
 * bytes), where tile t of column jl lies in its block of corr, and where
 * element k lies in a packed row of A.  In LAYOUT_TL (K4 whole tiles) the
 * K4 / (4 tile4) whole quads come first, in tiles in lanes; the rest, the
 * tail, has the column layout: B groups [jl][4 bytes], corr [t][jl], A in
 * k order. */
static size_t b_at(int use, int tile4, int K4, int jl, int k)
{
	if (use == LAYOUT_RAWT)
		return (size_t)(k / 4) * 64 + (k % 4) * 16 + jl;
	if (use == LAYOUT_TL) {
		const int qk = 16 * tile4, nq = K4 / (4 * tile4), r = k % qk;
		if (k >= nq * qk)
			return (size_t)nq * 256 * tile4 + (size_t)(k / 4 - nq * 4 * tile4) * 64 + jl * 4 + k % 4;
		return (size_t)(k / qk) * 256 * tile4 + (r / 4 % tile4) * 256 + (jl % 4) * 64 +
		       (jl / 4) * 16 + (r / (4 * tile4)) * 4 + k % 4;
	}
	return (size_t)(k / 4) * 64 + jl * 4 + k % 4;
}

static size_t corr_at(int use, int tile4, int K4, int jl, int t)
{
	if (use == LAYOUT_TL) {
		const int nq = K4 / (4 * tile4);
		if (t >= 4 * nq)
			return (size_t)nq * 64 + (size_t)(t - 4 * nq) * 16 + jl;
		return (size_t)(t / 4) * 64 + (jl % 4) * 16 + (jl / 4) * 4 + t % 4;
	}
	return (size_t)t * 16 + jl;
}

static size_t a_at(int use, int tile4, int K4, int k)
{
	if (use != LAYOUT_TL)
		return (size_t)k;
	const int qk = 16 * tile4, nq = K4 / (4 * tile4), r = k % qk;
	if (k >= nq * qk)
		return (size_t)k;
	return (size_t)(k / qk) * qk + (r / 4 % tile4) * 16 + (r / (4 * tile4)) * 4 + k % 4;
}

/* Largest |a * b| under gemm_params' operand ranges (for fn_s8). */
static int max_product(const gemm_params *p)
{
	const int qb = (1 << (p->bits - 1)) - 1;
	const int qa = p->a_signed ? qb : (1 << p->bits) - 1;
	return qa * qb;
}

/* The AVX2 kernels with 16-bit tile sums for these operands.  Each lane
 * adds 2 tile4 products of A + off (at most 2^b - 1) and B (of magnitude
 * at most 2^(b-1)): where that fits, the two-row kernel runs (fn_n16l:
 * gemm_x86_avx2_n16, which widens each tile's lanes to int32).  The
 * four-row kernel (fn_n16: gemm_x86_avx2_r4) adds a tile's two lanes with
 * one hadd into its whole uncorrected sum, 4 tile4 such products: where
 * that fits too (4-bit operands with tiles of 8 and 32 do).  On Zen 4
 * (`hdqt-bench --gemm-only --kernel avx2`, 3 alternations) the four-row
 * blocks took the backward's tiles of 32 from 69-84 to 80-98 GMAC/s
 * against the two-row per-group widening; the forward's tiles of 8 stayed
 * at 85-93 (the two-row 16-bit form's), before the hadd. */
static int n16_holds(const gemm_params *p, int tile4, long products)
{
	const long qa = (1L << p->bits) - 1, qb = 1L << (p->bits - 1);
	return tile4 <= 8 && products * qa * qb <= 32767;
}

static int n16_lanes_fit(const gemm_params *p, int tile4)
{
	return n16_holds(p, tile4, 2L * tile4);
}

static int n16_fits(const gemm_params *p, int tile4)
{
	return n16_holds(p, tile4, 4L * tile4);
}

/* Which of a kernel's entries runs for these operands: the one choice
 * that both the int32 store (run_kernel) and the float store
 * (float_kernel) follow. */
enum { ENTRY_TL, ENTRY_S8, ENTRY_N16, ENTRY_N16L, ENTRY_PLAIN };

static int kernel_entry(const gemm_kernel *k, int use, const gemm_params *p, int tile4)
{
	if (use == LAYOUT_TL)
		return ENTRY_TL;
	if (k->fn_s8)
		return ENTRY_S8;
	if (k->fn_n16 && n16_fits(p, tile4))
		return ENTRY_N16;
	if (k->fn_n16l && n16_lanes_fit(p, tile4))
		return ENTRY_N16L;
	return ENTRY_PLAIN;
}

/* The float-store twin of what run_kernel runs for these operands, or NULL. */
static gemm_kern_f_fn float_kernel(const gemm_kernel *k, int use, const gemm_params *p, int tile4)
{
	switch (kernel_entry(k, use, p, tile4)) {
	case ENTRY_TL: return k->fnf_tl;
	case ENTRY_S8: return NULL;
	case ENTRY_N16: return k->fnf_n16;
	case ENTRY_N16L: return k->fnf_n16l;
	default: return k->fnf;
	}
}

static void run_kernel(const gemm_kernel *k, int use, const uint8_t *Ap, const int8_t *Bp,
		       const int32_t *corr, int I, int J, int K4, int tile4, int ntiles,
		       const gemm_params *p, int32_t *C)
{
	const int32_t hi = (1 << (p->acc_bits - 1)) - 1, lo = -(1 << (p->acc_bits - 1));
	switch (kernel_entry(k, use, p, tile4)) {
	case ENTRY_TL: k->fn_tl(Ap, Bp, corr, I, J, K4, tile4, ntiles, lo, hi, C); break;
	case ENTRY_S8:
		k->fn_s8((const int8_t *)Ap, Bp, I, J, K4, tile4, ntiles, max_product(p), lo, hi, C);
		break;
	case ENTRY_N16: k->fn_n16(Ap, Bp, corr, I, J, K4, tile4, ntiles, lo, hi, C); break;
	case ENTRY_N16L: k->fn_n16l(Ap, Bp, corr, I, J, K4, tile4, ntiles, lo, hi, C); break;
	default: k->fn(Ap, Bp, corr, I, J, K4, tile4, ntiles, lo, hi, C);
	}
}

/* Process-wide dispatch state: written once by pthread_once (or by the
 * test/bench override before any worker starts), read-only afterwards. */
static const gemm_kernel *active;
static pthread_once_t active_once = PTHREAD_ONCE_INIT;
/* Tiles in lanes for tiles of 8: on, except where AVX-512 runs in 256-bit
 * halves (Zen 4: there the column layout was 1.03 to 1.10 times faster on
 * 128 x 512 x K for K from 64 to 512, and TL 1.1 times on K of 40 to 56);
 * HDQT_GEMM_TL8=0/1 or gemm_tl8_select() forces it.  Tiles of 32 keep it
 * everywhere (0.93 to 1.12 times the column layout on Zen 4). */
static int tl8 = 1;

static void pick_kernel(void)
{
	const char *t8 = getenv("HDQT_GEMM_TL8");
	if (t8 && (!strcmp(t8, "0") || !strcmp(t8, "1")))
		tl8 = *t8 == '1';
#if HDQT_X86_64
	else
		tl8 = !gemm_x86_avx512_halves();
#endif
	const char *force = getenv("HDQT_KERNEL");
	for (size_t i = 0; i < N_KERNELS; i++) {
		if (force && *force && strcmp(force, kernels[i].name) != 0)
			continue;
		if (kernel_supported(&kernels[i])) {
			active = &kernels[i];
			return;
		}
	}
	active = &kernels[N_KERNELS - 1];
}

static const gemm_kernel *get_kernel(void)
{
	pthread_once(&active_once, pick_kernel);
	return active;
}

static int tl8_on(void)
{
	pthread_once(&active_once, pick_kernel);
	return tl8;
}

int gemm_tl8_select(int on)
{
	pthread_once(&active_once, pick_kernel);
#if HDQT_X86_64
	tl8 = on < 0 ? !gemm_x86_avx512_halves() : on > 0;
#else
	tl8 = on != 0;
#endif
	return tl8;
}

const char *hdqt_kernel_name(void)
{
	return get_kernel()->name;
}

int hdqt_kernel_select(const char *name)
{
	get_kernel();
	for (size_t i = 0; i < N_KERNELS; i++) {
		if (name && strcmp(name, kernels[i].name) == 0) {
			if (!kernel_supported(&kernels[i]))
				return HDQT_ENOTFOUND;
			active = &kernels[i];
			return 0;
		}
	}
	return HDQT_ENOTFOUND;
}

HDQT_CLONES static void pack_a(const int8_t *A, int I, int K, int K4, int tile4, int off, int use,
				uint8_t *Ap)
{
	if (use == LAYOUT_TL) {
#if HDQT_X86_64
		if ((tile4 == 2 || tile4 == 8) && gemm_x86_avx512vnni_supported()) {
			gemm_x86_tl_pack_a(A, I, K, K4, tile4, off, Ap);
			return;
		}
#endif
		memset(Ap, 0, (size_t)I * K4 * 4);
		for (int i = 0; i < I; i++)
			for (int k = 0; k < K; k++)
				Ap[(size_t)i * K4 * 4 + a_at(use, tile4, K4, k)] = (uint8_t)(A[(long)i * K + k] + off);
		return;
	}
	for (int i = 0; i < I; i++) {
		uint8_t *d = Ap + (size_t)i * K4 * 4;
		const int8_t *s = A + (long)i * K;
		for (int k = 0; k < K; k++)
			d[k] = (uint8_t)(s[k] + off);
		for (int k = K; k < K4 * 4; k++)
			d[k] = 0;
	}
}

/* Column blocks [b0, b1) of B (16 columns each) into the kernel layout;
 * Bb points at B's row 16 b0. */
HDQT_CLONES static void pack_b_blocks(const int8_t *Bb, int J, int K, int K4, int tile4, int ntiles,
				      int off, int use, int8_t *Bp, int32_t *corr, int b0, int b1)
{
	const int tg = use == LAYOUT_RAWT;
#if HDQT_X86_64
	if (use == LAYOUT_TL && (tile4 == 2 || tile4 == 8) && gemm_x86_avx512vnni_supported()) {
		for (int jb = b0; jb < b1; jb++)
			gemm_x86_tl_pack_b16(Bb + (size_t)(jb - b0) * 16 * K,
					     J - jb * 16 < 16 ? J - jb * 16 : 16, K, K4, tile4, off,
					     Bp + (size_t)jb * K4 * 64, corr + (size_t)jb * ntiles * 16);
		return;
	}
	if (use == LAYOUT_OFFSET && gemm_x86_avx512vnni_supported()) {
		for (int jb = b0; jb < b1; jb++)
			gemm_x86_pack_b16(Bb + (size_t)(jb - b0) * 16 * K, J - jb * 16 < 16 ? J - jb * 16 : 16,
					  K, K4, tile4, ntiles, off, Bp + (size_t)jb * K4 * 64,
					  corr + (size_t)jb * ntiles * 16);
		return;
	}
	if (use == LAYOUT_OFFSET && gemm_x86_avx2_supported()) {
		for (int jb = b0; jb < b1; jb++)
			gemm_x86_pack_b16_avx2(Bb + (size_t)(jb - b0) * 16 * K,
					       J - jb * 16 < 16 ? J - jb * 16 : 16, K, K4, tile4, ntiles,
					       off, Bp + (size_t)jb * K4 * 64,
					       corr + (size_t)jb * ntiles * 16);
		return;
	}
#endif
	memset(Bp + (size_t)b0 * K4 * 64, 0, (size_t)(b1 - b0) * K4 * 64);
	memset(corr + (size_t)b0 * ntiles * 16, 0, (size_t)(b1 - b0) * ntiles * 16 * sizeof(int32_t));
	const int kfull = K / 4;
	const int j1 = b1 * 16 < J ? b1 * 16 : J;
	for (int j = b0 * 16; j < j1; j++) {
		const int jb = j / 16, jl = j % 16;
		const int8_t *s = Bb + (long)(j - b0 * 16) * K;
		if (use == LAYOUT_TL) {
			int8_t *d = Bp + (size_t)jb * K4 * 64;
			for (int k = 0; k < K; k++)
				d[b_at(use, tile4, K4, jl, k)] = s[k];
		} else if (tg) { /* group = [4 bytes of k][16 columns] */
			int8_t *d = Bp + (size_t)jb * K4 * 64 + jl;
			for (int k = 0; k < K; k++)
				d[(size_t)(k / 4) * 64 + (k % 4) * 16] = s[k];
		} else {
			int8_t *d = Bp + (size_t)jb * K4 * 64 + jl * 4;
			for (int k4 = 0; k4 < kfull; k4++)
				memcpy(d + (size_t)k4 * 64, s + 4 * k4, 4);
			for (int k = kfull * 4; k < K; k++)
				d[(size_t)(k / 4) * 64 + (k % 4)] = s[k];
		}
		if (!off)
			continue;
		int32_t *cr = corr + (size_t)jb * ntiles * 16;
		for (int t = 0; t < ntiles; t++) {
			const int k0 = t * tile4 * 4, k1 = k0 + tile4 * 4 < K ? k0 + tile4 * 4 : K;
			int sum = 0;
			for (int k = k0; k < k1; k++)
				sum += s[k];
			cr[corr_at(use, tile4, K4, jl, t)] = -off * sum;
		}
	}
}

static void pack_b(const int8_t *B, int J, int K, int K4, int tile4, int ntiles, int off, int use,
		   int8_t *Bp, int32_t *corr)
{
	pack_b_blocks(B, J, K, K4, tile4, ntiles, off, use, Bp, corr, 0, (J + 15) / 16);
}

int gemm_q(gemm_ws *ws, const int8_t *A, const int8_t *B, int I, int J, int K,
	   const gemm_params *p, int32_t *C)
{
	int tile;
	int rc = check_shape(I, J, K, p, &tile);
	if (rc < 0)
		return rc;
	const gemm_kernel *kern = get_kernel();
	const int layout = kernel_layout(kern, p, tile, J, K);
	if (layout == LAYOUT_NONE || I == 0)
		return gemm_q_ref(A, B, I, J, K, p, C);

	const int J16 = (J + 15) / 16;
	int K4, tile4, ntiles;
	layout_dims(layout, K, tile, &K4, &tile4, &ntiles);
	const int off = p->a_signed && (layout == LAYOUT_OFFSET || layout == LAYOUT_TL) ? 1 << (p->bits - 1) : 0;
	size_t szA = (size_t)I * K4 * 4, szB = (size_t)J16 * K4 * 64;
	size_t szC = (size_t)J16 * ntiles * 16 * sizeof(int32_t);
	size_t szA_al = (szA + 63) & ~(size_t)63, szB_al = (szB + 63) & ~(size_t)63;
	uint8_t *base = ws_get(ws, szA_al + szB_al + szC + 64);
	if (!base)
		return HDQT_ENOMEM;
	uint8_t *Ap = (uint8_t *)(((uintptr_t)base + 63) & ~(uintptr_t)63);
	int8_t *Bp = (int8_t *)(Ap + szA_al);
	int32_t *corr = (int32_t *)((uint8_t *)Bp + szB_al);

	pack_a(A, I, K, K4, tile4, off, layout, Ap);
	pack_b(B, J, K, K4, tile4, ntiles, off, layout, Bp, corr);
	run_kernel(kern, layout, Ap, Bp, corr, I, J, K4, tile4, ntiles, p, C);
	return 0;
}

int gemm_pack(gemm_packed *pb, const int8_t *B, int J, int K, const gemm_params *p)
{
	int nb = gemm_pack_begin(pb, B, J, K, p);
	if (nb > 0)
		gemm_pack_blocks(pb, B, 0, nb);
	return nb < 0 ? nb : 0;
}

void gemm_pack_blocks(gemm_packed *pb, const int8_t *B, int b0, int b1)
{
	pack_b_blocks(B + (size_t)b0 * 16 * pb->K, pb->J, pb->K, pb->K4, pb->tile4, pb->ntiles, pb->off,
		      pb->kernel, pb->Bp, pb->corr, b0, b1);
}

void gemm_pack_rows(gemm_packed *pb, int jb, const int8_t *rows)
{
	if (pb->kernel == LAYOUT_NONE) { /* the reference's own copy of B */
		const int j0 = jb * 16, nr = pb->J - j0 < 16 ? pb->J - j0 : 16;
		if (nr > 0)
			memcpy(pb->raw + (size_t)j0 * pb->K, rows, (size_t)nr * pb->K);
		return;
	}
	pack_b_blocks(rows, pb->J, pb->K, pb->K4, pb->tile4, pb->ntiles, pb->off, pb->kernel, pb->Bp,
		      pb->corr, jb, jb + 1);
}

int gemm_pack_begin(gemm_packed *pb, const int8_t *B, int J, int K, const gemm_params *p)
{
	int tile;
	int rc = check_shape(1, J, K, p, &tile);
	if (rc < 0)
		return rc;
	const gemm_kernel *kern = get_kernel();
	const int use = kernel_layout(kern, p, tile, J, K);
	const int J16 = (J + 15) / 16;
	int K4, tile4, ntiles;
	layout_dims(use, K, tile, &K4, &tile4, &ntiles);
	/* B's own bytes only where the reference will read them: a kernel
	 * layout holds them too (gemm_q_packed unpacks it if it must). */
	size_t szR = use ? 0 : ((size_t)J * K + 63) & ~(size_t)63;
	size_t szB = use ? ((size_t)J16 * K4 * 64 + 63) & ~(size_t)63 : 0;
	size_t szC = use ? (size_t)J16 * ntiles * 16 * sizeof(int32_t) : 0;
	size_t need = szR + szB + szC + 64;
	if (pb->cap < need) {
		void *m = realloc(pb->mem, need);
		if (!m)
			return HDQT_ENOMEM;
		pb->mem = m;
		pb->cap = need;
	}
	uint8_t *base = (uint8_t *)(((uintptr_t)pb->mem + 63) & ~(uintptr_t)63);
	pb->raw = use ? NULL : (int8_t *)base;
	pb->Bp = (int8_t *)(base + szR);
	pb->corr = (int32_t *)(base + szR + szB);
	if (!use && B)
		memcpy(pb->raw, B, (size_t)J * K);
	pb->J = J;
	pb->K = K;
	pb->K4 = K4;
	pb->tile4 = tile4;
	pb->ntiles = ntiles;
	pb->off = p->a_signed && (use == LAYOUT_OFFSET || use == LAYOUT_TL) ? 1 << (p->bits - 1) : 0;
	pb->kernel = use;
	pb->p = *p;
	return use ? J16 : 0;
}

int gemm_packed_matches(const gemm_packed *pb, int J, int K, const gemm_params *p)
{
	const gemm_kernel *kern = get_kernel();
	int tile = p->tile == 0 || p->tile > K ? K : p->tile;
	int use = kernel_layout(kern, p, tile, J, K);
	return pb->mem && pb->J == J && pb->K == K && pb->p.tile == p->tile &&
	       pb->p.acc_bits == p->acc_bits && pb->p.bits == p->bits &&
	       pb->p.a_signed == p->a_signed && pb->kernel == use;
}

/* The packed products.  With e, Y gets the rescaled floats: in the
 * kernel's store where it has one (fnf), else C is made in ws and
 * rescaled after. */
static int packed_impl(gemm_ws *ws, const int8_t *A, int I, const gemm_packed *pb, int32_t *C,
		       const gemm_rescale *e, float *Y)
{
	if (!pb || !pb->mem)
		return HDQT_EINVAL;
	const int J = pb->J, K = pb->K;
	int tile;
	int rc = check_shape(I, J, K, &pb->p, &tile);
	if (rc < 0 || I == 0)
		return rc;
	const gemm_kernel *kern = get_kernel();
	/* A packing made under another kernel (a test or bench switched
	 * kernels since) is not this kernel's layout: the reference runs. */
	const int fast = pb->kernel && kernel_layout(kern, &pb->p, tile, J, K) == pb->kernel;
	const gemm_kern_f_fn fnf = float_kernel(kern, pb->kernel, &pb->p, pb->tile4);
	const int fuse = e && fast && fnf;
	const size_t szC = e && !fuse ? (((size_t)I * J * sizeof(int32_t) + 63) & ~(size_t)63) : 0;
	const size_t szA = fast ? (size_t)I * pb->K4 * 4 : (pb->raw ? 0 : (size_t)J * K + 1);
	uint8_t *base = NULL; /* the reference on B's own bytes into C needs no scratch */
	if (szC + szA > 0) {
		if (!(base = ws_get(ws, szC + szA + 64)))
			return HDQT_ENOMEM;
		base = (uint8_t *)(((uintptr_t)base + 63) & ~(uintptr_t)63);
	}
	if (szC)
		C = (int32_t *)base;
	if (!fast) {
		const int8_t *raw = pb->raw;
		if (!raw) { /* B back out of the kernel layout (its bytes are B's) */
			int8_t *r = (int8_t *)(base + szC);
			for (int j = 0; j < J; j++)
				for (int k = 0; k < K; k++)
					r[(size_t)j * K + k] = pb->Bp[(size_t)(j / 16) * pb->K4 * 64 +
								      b_at(pb->kernel, pb->tile4, pb->K4, j % 16, k)];
			raw = r;
		}
		rc = gemm_q_ref(A, raw, I, J, K, &pb->p, C);
	} else {
		uint8_t *Ap = base + szC;
		pack_a(A, I, K, pb->K4, pb->tile4, pb->off, pb->kernel, Ap);
		if (fuse) {
			const int32_t hi = (1 << (pb->p.acc_bits - 1)) - 1, lo = -(1 << (pb->p.acc_bits - 1));
			fnf(Ap, pb->Bp, pb->corr, I, J, pb->K4, pb->tile4, pb->ntiles, lo, hi, e, Y);
			return 0;
		}
		run_kernel(kern, pb->kernel, Ap, pb->Bp, pb->corr, I, J, pb->K4, pb->tile4, pb->ntiles, &pb->p, C);
	}
	if (rc == 0 && e)
		gemm_rescale_rows(C, I, J, e, Y);
	return rc;
}

int gemm_q_packed(gemm_ws *ws, const int8_t *A, int I, const gemm_packed *pb, int32_t *C)
{
	return packed_impl(ws, A, I, pb, C, NULL, NULL);
}

int gemm_q_packed_f(gemm_ws *ws, const int8_t *A, int I, const gemm_packed *pb,
		    const gemm_rescale *e, float *Y)
{
	return e ? packed_impl(ws, A, I, pb, NULL, e, Y) : HDQT_EINVAL;
}

/* The order of gemm_rescale: ((float)c * (sa[i] * inv)) * sb[j]. */
HDQT_CLONES void gemm_rescale_rows(const int32_t *restrict C, int I, int J, const gemm_rescale *e,
				   float *restrict Y)
{
	const float *restrict sb = e->sb;
	for (int i = 0; i < I; i++) {
		const float si = e->sa[i] * e->inv;
		const int32_t *ci = C + (size_t)i * J;
		float *yi = Y + (size_t)i * J;
		for (int j = 0; j < J; j++)
			yi[j] = (float)ci[j] * si * sb[j];
	}
}

/* ---- operands packed from strips of 16 k-major columns (gemm.h) ---- */

/* bb[k4][l][4] = codes[4 k4 + kk][l]: 4 x 16 byte transposes, the
 * interleaved groups of the dot-product kernels. */
HDQT_CLONES static void group_strip(const int8_t *restrict codes, int K4, int8_t *restrict bb)
{
	for (int k4 = 0; k4 < K4; k4++)
		for (int l = 0; l < 16; l++)
			for (int kk = 0; kk < 4; kk++)
				bb[(size_t)k4 * 64 + l * 4 + kk] = codes[((size_t)k4 * 4 + kk) * 16 + l];
}

void gemm_pack_strip(gemm_packed *pb, int jb, const int8_t *codes)
{
	const int J = pb->J, K = pb->K, K4 = pb->K4;
	const int j0 = jb * 16, nc = J - j0 < 16 ? J - j0 : 16;
	if (pb->kernel == LAYOUT_NONE) {
		for (int l = 0; l < nc; l++) {
			int8_t *d = pb->raw + (size_t)(j0 + l) * K;
			for (int k = 0; k < K; k++)
				d[k] = codes[(size_t)k * 16 + l];
		}
		return;
	}
	int8_t *bb = pb->Bp + (size_t)jb * K4 * 64;
	int32_t *cr = pb->corr + (size_t)jb * pb->ntiles * 16;
#if HDQT_X86_64
	if (pb->kernel == LAYOUT_OFFSET && gemm_x86_vbmi_supported()) {
		gemm_x86_pack_strip16(codes, K4, pb->tile4, pb->ntiles, pb->off, bb, cr);
		return;
	}
	if (pb->kernel == LAYOUT_OFFSET && gemm_x86_avx2_supported()) {
		gemm_x86_pack_strip16_avx2(codes, K4, pb->tile4, pb->ntiles, pb->off, bb, cr);
		return;
	}
	if (pb->kernel == LAYOUT_TL && (pb->tile4 == 2 || pb->tile4 == 8) && gemm_x86_vbmi_supported()) {
		gemm_x86_tl_pack_strip16(codes, K, K4, pb->tile4, pb->off, bb, cr);
		return;
	}
#endif
	if (pb->kernel == LAYOUT_RAWT)
		memcpy(bb, codes, (size_t)K4 * 64); /* already [k4][4 bytes of k][16 columns] */
	else if (pb->kernel == LAYOUT_TL) {
		memset(bb, 0, (size_t)K4 * 64);
		for (int k = 0; k < K; k++)
			for (int l = 0; l < 16; l++)
				bb[b_at(LAYOUT_TL, pb->tile4, K4, l, k)] = codes[(size_t)k * 16 + l];
	} else
		group_strip(codes, K4, bb);
	for (int t = 0; t < pb->ntiles; t++) {
		const int k0 = t * pb->tile4 * 4, k1 = k0 + pb->tile4 * 4 < K ? k0 + pb->tile4 * 4 : K;
		int32_t sum[16] = {0};
		for (int k = k0; k < k1; k++)
			for (int l = 0; l < 16; l++)
				sum[l] += codes[(size_t)k * 16 + l];
		for (int l = 0; l < 16; l++)
			cr[corr_at(pb->kernel, pb->tile4, K4, l, t)] = -pb->off * sum[l];
	}
}

size_t gemm_a_stride(const gemm_packed *pb)
{
	return pb->kernel == LAYOUT_NONE ? (size_t)pb->K : (size_t)pb->K4 * 4;
}

HDQT_CLONES void gemm_pack_a_strip(const gemm_packed *pb, int i0, int ni, const int8_t *codes, void *A)
{
	const int K = pb->K;
	const size_t rs = gemm_a_stride(pb);
	/* The kernel layout is pack_a's: A + off as bytes, zero past K. */
	const int off = pb->kernel == LAYOUT_NONE ? 0 : pb->off;
	uint8_t *a = (uint8_t *)A + (size_t)i0 * rs;
#if HDQT_X86_64
	if (pb->kernel != LAYOUT_NONE && pb->kernel != LAYOUT_TL && gemm_x86_vbmi_supported()) {
		gemm_x86_pack_a_strip16(codes, ni, K, pb->K4, off, a, rs);
		return;
	}
	if (pb->kernel != LAYOUT_NONE && pb->kernel != LAYOUT_TL && gemm_x86_avx2_supported()) {
		gemm_x86_pack_a_strip16_avx2(codes, ni, K, pb->K4, off, a, rs);
		return;
	}
	if (pb->kernel == LAYOUT_TL && (pb->tile4 == 2 || pb->tile4 == 8) && gemm_x86_vbmi_supported()) {
		gemm_x86_tl_pack_a_strip16(codes, ni, K, pb->K4, pb->tile4, off, a, rs);
		return;
	}
#endif
	if (pb->kernel == LAYOUT_TL) {
		for (int l = 0; l < ni; l++) {
			uint8_t *d = a + (size_t)l * rs;
			memset(d, 0, rs);
			for (int k = 0; k < K; k++)
				d[a_at(LAYOUT_TL, pb->tile4, pb->K4, k)] = (uint8_t)(codes[(size_t)k * 16 + l] + off);
		}
		return;
	}
	for (int l = 0; l < ni; l++) {
		uint8_t *d = a + (size_t)l * rs;
		for (int k = 0; k < K; k++)
			d[k] = (uint8_t)(codes[(size_t)k * 16 + l] + off);
		for (size_t k = (size_t)K; k < rs; k++)
			d[k] = 0;
	}
}

static int apacked_impl(gemm_ws *ws, const void *A, int I, const gemm_packed *pb, int32_t *C,
			const gemm_rescale *e, float *Y)
{
	if (!pb || !pb->mem)
		return HDQT_EINVAL;
	const int J = pb->J, K = pb->K;
	int tile;
	int rc = check_shape(I, J, K, &pb->p, &tile);
	if (rc < 0 || I == 0)
		return rc;
	const gemm_kernel *kern = get_kernel();
	if (pb->kernel != LAYOUT_NONE && kernel_layout(kern, &pb->p, tile, J, K) != pb->kernel)
		return HDQT_EINVAL; /* packed under another kernel: pack again */
	const gemm_kern_f_fn fnf = float_kernel(kern, pb->kernel, &pb->p, pb->tile4);
	if (e && pb->kernel != LAYOUT_NONE && fnf) {
		const int32_t hi = (1 << (pb->p.acc_bits - 1)) - 1, lo = -(1 << (pb->p.acc_bits - 1));
		fnf((const uint8_t *)A, pb->Bp, pb->corr, I, J, pb->K4, pb->tile4, pb->ntiles, lo, hi, e,
		    Y);
		return 0;
	}
	if (e) {
		C = ws_get(ws, (size_t)I * J * sizeof(int32_t));
		if (!C)
			return HDQT_ENOMEM;
	}
	if (pb->kernel == LAYOUT_NONE)
		rc = gemm_q_ref((const int8_t *)A, pb->raw, I, J, K, &pb->p, C);
	else
		run_kernel(kern, pb->kernel, (const uint8_t *)A, pb->Bp, pb->corr, I, J, pb->K4, pb->tile4,
			   pb->ntiles, &pb->p, C);
	if (rc == 0 && e)
		gemm_rescale_rows(C, I, J, e, Y);
	return rc;
}

int gemm_q_apacked(const void *A, int I, const gemm_packed *pb, int32_t *C)
{
	return apacked_impl(NULL, A, I, pb, C, NULL, NULL);
}

int gemm_q_apacked_f(gemm_ws *ws, const void *A, int I, const gemm_packed *pb,
		     const gemm_rescale *e, float *Y)
{
	return e ? apacked_impl(ws, A, I, pb, NULL, e, Y) : HDQT_EINVAL;
}

void gemm_packed_free(gemm_packed *pb)
{
	free(pb->mem);
	memset(pb, 0, sizeof(*pb));
}

/* ---- float reference products ---- */

void gemm_f32_nn(const float *A, const float *B, int I, int J, int K, float *C)
{
#if HDQT_X86_64
	if (gemm_x86_avx2_supported()) {
		gemm_x86_f32_nn(A, B, I, J, K, C);
		return;
	}
#endif
	for (int i = 0; i < I; i++) {
		float *c = C + (long)i * J;
		memset(c, 0, sizeof(float) * J);
		for (int k = 0; k < K; k++) {
			const float a = A[(long)i * K + k];
			const float *b = B + (long)k * J;
			for (int j = 0; j < J; j++)
				c[j] += a * b[j];
		}
	}
}

void gemm_transpose(const float *in, int rows, int cols, float *out)
{
	gemm_transpose_ld(in, rows, cols, cols, out, rows);
}

void gemm_transpose_ref(const float *in, int rows, int cols, float *out)
{
	gemm_transpose_ld_ref(in, rows, cols, cols, out, rows);
}

void gemm_transpose_ld(const float *in, int rows, int cols, int ldi, float *out, int ldo)
{
#if HDQT_X86_64
	if (gemm_x86_avx2_supported()) {
		gemm_x86_transpose(in, rows, cols, ldi, out, ldo);
		return;
	}
#endif
	gemm_transpose_ld_ref(in, rows, cols, ldi, out, ldo);
}

void gemm_transpose_ld_ref(const float *in, int rows, int cols, int ldi, float *out, int ldo)
{
	enum { BS = 32 };
	for (int r0 = 0; r0 < rows; r0 += BS)
		for (int c0 = 0; c0 < cols; c0 += BS) {
			int r1 = r0 + BS < rows ? r0 + BS : rows;
			int c1 = c0 + BS < cols ? c0 + BS : cols;
			for (int r = r0; r < r1; r++)
				for (int c = c0; c < c1; c++)
					out[(long)c * ldo + r] = in[(long)r * ldi + c];
		}
}
