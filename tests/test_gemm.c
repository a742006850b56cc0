/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "fwht.h"
#include "gemm.h"
#include "hdqt.h"
#include "linear_impl.h"
#include "model.h"
#include "pool.h"
#include "quant.h"
#include "simd.h"
#include "testutil.h"
#if HDQT_AARCH64
#include "simd_arm.h"
#endif

/* Every kernel variant of every architecture; those this CPU lacks are
 * skipped (hdqt_kernel_select refuses them). */
static const char *const variants[] = {"scalar", "avx2", "avxvnni", "avx512vnni", "neon", "dotprod",
				       "portable"};
#define N_VARIANTS (sizeof(variants) / sizeof(variants[0]))

static void fill(int8_t *x, int n, int lo, int hi, hdqt_rng *r)
{
	for (int i = 0; i < n; i++)
		x[i] = (int8_t)(lo + (int)hdqt_rng_below(r, (uint32_t)(hi - lo + 1)));
}

/* The rescale every float output of an integer product must equal:
 * ((float)c * (sa[i] * inv)) * sb[j], written out here. */
static void rescale_naive(const int32_t *C, int I, int J, const float *sa, const float *sb, float inv,
			  float *Y)
{
	for (int i = 0; i < I; i++)
		for (int j = 0; j < J; j++) {
			const float si = sa[i] * inv;
			const float a = (float)C[(size_t)i * J + j] * si;
			Y[(size_t)i * J + j] = a * sb[j];
		}
}

/* gemm_q_packed_f and gemm_rescale_rows against rescale_naive on C0 (the
 * reference's product of A and pb's B): the same floats, bit for bit. */
static void check_packed_f(gemm_ws *ws, const int8_t *A, int I, const gemm_packed *pb,
			   const int32_t *C0, hdqt_rng *r)
{
	const int J = pb->J;
	float *sa = malloc(sizeof(float) * (size_t)(I + 1)), *sb = malloc(sizeof(float) * (size_t)(J + 1));
	float *y0 = malloc(sizeof(float) * ((size_t)I * J + 1)), *y1 = malloc(sizeof(float) * ((size_t)I * J + 1));
	for (int i = 0; i < I; i++)
		sa[i] = 1e-3f + hdqt_rng_uniform(r);
	for (int j = 0; j < J; j++)
		sb[j] = 1e-3f + 3.0f * hdqt_rng_uniform(r);
	const float inv = 1.0f / (float)(1 << hdqt_rng_below(r, 8));
	const gemm_rescale e = {.sa = sa, .sb = sb, .inv = inv};
	rescale_naive(C0, I, J, sa, sb, inv, y0);
	memset(y1, 0xff, sizeof(float) * ((size_t)I * J + 1));
	ck_assert_int_eq(gemm_q_packed_f(ws, A, I, pb, &e, y1), 0);
	if (memcmp(y0, y1, sizeof(float) * (size_t)I * J) != 0)
		ck_abort_msg("%s packed_f: I=%d J=%d K=%d tile=%d", hdqt_kernel_name(), I, J, pb->K,
			     pb->p.tile);
	memset(y1, 0xff, sizeof(float) * ((size_t)I * J + 1));
	gemm_rescale_rows(C0, I, J, &e, y1);
	ck_assert_mem_eq(y0, y1, sizeof(float) * (size_t)I * J);
	free(sa), free(sb), free(y0), free(y1);
}

static void check_ab_against_ref(gemm_ws *ws, hdqt_rng *r, const int8_t *A, const int8_t *B, int I,
				 int J, int K, const gemm_params *p, int extreme);

#if HDQT_X86_64
/* The x86 packings of one block (AVX-512 and its AVX2 twin, each where
 * it runs) against the layout written out: bytes [k4][column][4] (zero
 * past K and past the rows), tile sums -off * sum. */
typedef void (*pack_b16_fn)(const int8_t *, int, int, int, int, int, int, int8_t *, int32_t *);

static int check_pack_b16(const char *name, pack_b16_fn fn, int (*supported)(void), uint64_t seed)
{
	if (!supported()) {
		fprintf(stderr, "test_pack_b16: %s skipped, not on this CPU (or HDQT_ISA)\n", name);
		return 0;
	}
	hdqt_rng r;
	hdqt_rng_seed(&r, seed, 0);
	for (int it = 0; it < 300; it++) {
		const int K = 1 + (int)hdqt_rng_below(&r, 300), nr = 1 + (int)hdqt_rng_below(&r, 16);
		const int K4 = (K + 3) / 4, tile4 = 1 + (int)hdqt_rng_below(&r, it % 3 ? 9 : (uint32_t)K4);
		const int ntiles = (K4 + tile4 - 1) / tile4, off = (it & 1) ? 8 : 0;
		int8_t *rows = malloc((size_t)nr * K), *bb = malloc((size_t)K4 * 64), *want = calloc((size_t)K4 * 64, 1);
		int32_t *cr = malloc(sizeof(int32_t) * 16 * ntiles), *cw = calloc(16 * (size_t)ntiles, sizeof(int32_t));
		fill(rows, nr * K, -128, 127, &r);
		memset(bb, 0x5a, (size_t)K4 * 64);
		memset(cr, 0x5a, sizeof(int32_t) * 16 * ntiles);
		for (int l = 0; l < nr; l++)
			for (int k = 0; k < K; k++) {
				want[(k / 4) * 64 + l * 4 + k % 4] = rows[l * K + k];
				cw[(k / 4 / tile4) * 16 + l] -= off * rows[l * K + k];
			}
		fn(rows, nr, K, K4, tile4, ntiles, off, bb, cr);
		if (memcmp(bb, want, (size_t)K4 * 64) != 0 || memcmp(cr, cw, sizeof(int32_t) * 16 * ntiles) != 0)
			ck_abort_msg("pack_b16 %s: K=%d nr=%d tile4=%d off=%d", name, K, nr, tile4, off);
		free(rows), free(bb), free(want), free(cr), free(cw);
	}
	return 1;
}

START_TEST(test_pack_b16_x86)
{
	const int ran = check_pack_b16("avx512", gemm_x86_pack_b16, gemm_x86_avx512vnni_supported, 23) +
			check_pack_b16("avx2", gemm_x86_pack_b16_avx2, gemm_x86_avx2_supported, 24);
	if (!ran)
		fprintf(stderr, "test_pack_b16_x86: skipped, this CPU has neither AVX-512 VNNI nor AVX2\n");
}
END_TEST

/* Where the tiles-in-lanes layout puts element k of column l (< 16) of a
 * B block, tile t's sum of it, and element k of an A row, written out
 * apart from gemm.c's b_at: nq whole quads of 16 G k, B bytes
 * [g][R][L][t][4] for column 4L + R and k = 16 G q + 4 G t + 4 g + kk,
 * tile sums [R][L][t], A [g][t][4]; then the tail (the tiles past the last
 * whole quad) as the column layout: B [group][l][4], sums [t][l], A in k
 * order. */
static size_t tl_want_b(int G, int nq, int l, int k)
{
	const int qk = 16 * G, q = k / qk, t = k % qk / (4 * G), g = k % (4 * G) / 4, kk = k % 4;
	if (q >= nq)
		return (size_t)nq * 256 * G + (size_t)(k / 4 - 4 * G * nq) * 64 + l * 4 + kk;
	return (size_t)q * 256 * G + g * 256 + (l % 4) * 64 + (l / 4) * 16 + t * 4 + kk;
}
static size_t tl_want_c(int G, int nq, int l, int k)
{
	const int t = k / (4 * G);
	if (t >= 4 * nq)
		return (size_t)nq * 64 + (size_t)(t - 4 * nq) * 16 + l;
	return (size_t)(t / 4) * 64 + (l % 4) * 16 + (l / 4) * 4 + t % 4;
}
static size_t tl_want_a(int G, int nq, int k)
{
	const int qk = 16 * G, q = k / qk, t = k % qk / (4 * G), g = k % (4 * G) / 4, kk = k % 4;
	return q >= nq ? (size_t)k : (size_t)q * qk + g * 16 + t * 4 + kk;
}

/* The tiles-in-lanes packers (gemm_x86_tl.c) against their layout written
 * out (tl_want_*), zeros past K, past the rows and in the last tile's
 * padding; K of one whole quad or more, with tails of 0 to 3 tiles.  And
 * gemm_pack takes this layout (K4 and ntiles in whole tiles) for tiles of
 * 8 and 32 with 8-bit accumulators under avx512vnni where there is a whole
 * quad (tiles of 32 with VBMI only), and only then. */
START_TEST(test_pack_tl_avx512)
{
	if (!gemm_x86_avx512vnni_supported()) {
		fprintf(stderr, "test_pack_tl_avx512: skipped, this CPU has no AVX-512 VNNI\n");
		return;
	}
	ck_assert_int_eq(gemm_tl8_select(1), 1); /* off by default on Zen 4 */
	hdqt_rng r;
	hdqt_rng_seed(&r, 29, 0);
	/* 300 with tiles of 8 (G = 2: a quad is 32 k, k = 32 q + 8 t + 4 g + kk,
	 * B 512 bytes a quad), then 200 with tiles of 32 (G = 8: 128 k, k = 128
	 * q + 32 t + 4 g + kk, B 2048 bytes a quad) */
	for (int it = 0; it < 500; it++) {
		const int G = it < 300 ? 2 : 8;
		const int K = 1 + (int)hdqt_rng_below(&r, G == 2 ? 300 : 600), nr = 1 + (int)hdqt_rng_below(&r, 16);
		const int ntiles = ((K + 3) / 4 + G - 1) / G, K4 = ntiles * G, nq = ntiles / 4;
		const int off = it % 3 == 0 ? 0 : it % 3 == 1 ? 8 : 128;
		int8_t *rows = malloc((size_t)nr * K), *bb = malloc((size_t)K4 * 64), *want = calloc((size_t)K4 * 64, 1);
		int32_t *cr = malloc(sizeof(int32_t) * 16 * ntiles), *cw = calloc(16 * (size_t)ntiles, sizeof(int32_t));
		uint8_t *a = malloc((size_t)nr * K4 * 4), *aw = calloc((size_t)nr * K4 * 4, 1);
		fill(rows, nr * K, -127, 127, &r);
		memset(bb, 0x5a, (size_t)K4 * 64);
		memset(cr, 0x5a, sizeof(int32_t) * 16 * ntiles);
		memset(a, 0x5a, (size_t)nr * K4 * 4);
		for (int l = 0; l < nr; l++)
			for (int k = 0; k < K; k++) {
				want[tl_want_b(G, nq, l, k)] = rows[l * K + k];
				cw[tl_want_c(G, nq, l, k)] -= off * rows[l * K + k];
				aw[(size_t)l * K4 * 4 + tl_want_a(G, nq, k)] = (uint8_t)(rows[l * K + k] + off);
			}
		gemm_x86_tl_pack_b16(rows, nr, K, K4, G, off, bb, cr);
		if (memcmp(bb, want, (size_t)K4 * 64) != 0 || memcmp(cr, cw, sizeof(int32_t) * 16 * ntiles) != 0)
			ck_abort_msg("tl_pack_b16: G=%d K=%d nr=%d off=%d", G, K, nr, off);
		gemm_x86_tl_pack_a(rows, nr, K, K4, G, off, a);
		if (memcmp(a, aw, (size_t)nr * K4 * 4) != 0)
			ck_abort_msg("tl_pack_a: G=%d K=%d nr=%d off=%d", G, K, nr, off);
		free(rows), free(bb), free(want), free(cr), free(cw), free(a), free(aw);
	}
	ck_assert_int_eq(hdqt_kernel_select("avx512vnni"), 0);
	int8_t B[12 * 166] = {0};
	gemm_params p = {.tile = 8, .acc_bits = 8, .bits = 4, .a_signed = 1};
	gemm_packed pb = {0};
	ck_assert_int_eq(gemm_pack(&pb, B, 12, 166, &p), 0);
	ck_assert_int_eq(pb.kernel, 4); /* gemm.c: LAYOUT_TL */
	ck_assert_int_eq(pb.K4, 42); /* 21 tiles: 5 quads and a tail of one, not 6 quads */
	ck_assert_int_eq(pb.ntiles, 21);
	p.acc_bits = 9; /* saturation is not that clamp: the column layout */
	ck_assert_int_eq(gemm_pack(&pb, B, 12, 166, &p), 0);
	ck_assert_int_eq(pb.K4, 42);
	ck_assert_int_eq(pb.kernel, 1);
	p.acc_bits = 8;
	p.tile = 32; /* 6 tiles: a quad and a tail of two, where the strip packers are vector code */
	ck_assert_int_eq(gemm_pack(&pb, B, 12, 166, &p), 0);
	ck_assert_int_eq(pb.K4, gemm_x86_vbmi_supported() ? 48 : 42);
	ck_assert_int_eq(pb.kernel, gemm_x86_vbmi_supported() ? 4 : 1);
	static int8_t B512[12 * 512];
	/* 512 k: tiles in lanes where the strip packers are vector code */
	ck_assert_int_eq(gemm_pack(&pb, B512, 12, 512, &p), 0);
	ck_assert_int_eq(pb.K4, 128);
	ck_assert_int_eq(pb.ntiles, 16);
	/* gemm.c: LAYOUT_TL is 4, LAYOUT_OFFSET 1 (K4 is 128 in both here) */
	ck_assert_int_eq(pb.kernel, gemm_x86_vbmi_supported() ? 4 : 1);
	ck_assert_int_eq(gemm_pack(&pb, B512, 12, 130, &p), 0); /* 33 groups: a quad and a tile */
	ck_assert_int_eq(pb.kernel, gemm_x86_vbmi_supported() ? 4 : 1);
	ck_assert_int_eq(pb.K4, gemm_x86_vbmi_supported() ? 40 : 33);
	ck_assert_int_eq(gemm_pack(&pb, B512, 12, 124, &p), 0); /* 31 groups: no whole quad */
	ck_assert_int_eq(pb.kernel, 1);
	p.tile = 8;
	ck_assert_int_eq(gemm_pack(&pb, B512, 12, 33, &p), 0); /* 9 groups: 5 tiles */
	ck_assert_int_eq(pb.kernel, 4);
	ck_assert_int_eq(pb.K4, 10);
	ck_assert_int_eq(pb.ntiles, 5);
	ck_assert_int_eq(gemm_pack(&pb, B512, 12, 28, &p), 0); /* 7 groups: no whole quad */
	ck_assert_int_eq(pb.kernel, 1);
	ck_assert_int_eq(gemm_pack(&pb, B512, 12, 63, &p), 0);
	ck_assert_int_eq(pb.kernel, 4);
	p.tile = 32;
	p.tile = 16; /* the kernel has no instance for G = 4 */
	ck_assert_int_eq(gemm_pack(&pb, B, 12, 166, &p), 0);
	ck_assert_int_eq(pb.K4, 42);
	p.tile = 32;
	if (hdqt_kernel_select("avxvnni") == 0) { /* no tiles in lanes there */
		p.tile = 8;
		ck_assert_int_eq(gemm_pack(&pb, B, 12, 166, &p), 0);
		ck_assert_int_eq(pb.K4, 42);
	}
	ck_assert_int_eq(hdqt_kernel_select("avx512vnni"), 0);
	/* tiles of 8 with it off: the column layout, tiles of 32 keep it */
	ck_assert_int_eq(gemm_tl8_select(0), 0);
	p.tile = 8;
	ck_assert_int_eq(gemm_pack(&pb, B512, 12, 166, &p), 0);
	ck_assert_int_eq(pb.kernel, 1);
	p.tile = 32;
	ck_assert_int_eq(gemm_pack(&pb, B512, 12, 512, &p), 0);
	ck_assert_int_eq(pb.kernel, gemm_x86_vbmi_supported() ? 4 : 1);
	gemm_tl8_select(-1);
	gemm_packed_free(&pb);
	hdqt_kernel_select(variants[0]);
}
END_TEST

static void check_shape_against_ref(gemm_ws *ws, hdqt_rng *r, int I, int J, int K,
				    const gemm_params *p, int extreme);

/* The AVX2 kernel's 16-bit tile sums (gemm_x86_avx2_r4, and the two-row
 * gemm_x86_avx2_n16 where its 16-bit wide sums do not fit: the 24-bit
 * accumulators here; gemm.c's n16_lanes_fit says where a lane cannot
 * overflow, n16_fits where a tile's whole sum cannot: tiles of 8 and 32)
 * at the edges of that
 * bound: the largest operands of 4 to 7 bits (7 bits: 2 x 2 x 127 x 63 =
 * 32004 in a lane; n16_fits bounds |B| by 64, one more than a code can
 * be), both signs, and tiles up to 512 k (the other path),
 * accumulators wide enough (24 bits) that no clamp hides a wrapped sum. */
START_TEST(test_avx2_n16_bounds)
{
	if (hdqt_kernel_select("avx2") != 0) {
		fprintf(stderr, "test_avx2_n16_bounds: skipped, this CPU has no AVX2\n");
		return;
	}
	hdqt_rng r;
	hdqt_rng_seed(&r, 43, 0);
	gemm_ws ws = {0};
	const int tiles[] = {8, 32, 64, 128, 512};
	for (int bits = 4; bits <= 7; bits++)
		for (size_t t = 0; t < sizeof(tiles) / sizeof(tiles[0]); t++)
			for (int acc = 8; acc <= 24; acc += 16)
				for (int sg = 0; sg < 2; sg++)
					for (int rep = 0; rep < 3; rep++) {
						gemm_params p = {.tile = tiles[t], .acc_bits = acc, .bits = bits,
								 .a_signed = sg};
						check_shape_against_ref(&ws, &r, 3, 17, tiles[t] * 2 + 4, &p, rep < 2);
					}
	gemm_ws_free(&ws);
	hdqt_kernel_select(variants[0]);
}
END_TEST

/* The AVX2 kernel's four-row blocks with 16-bit wide sums
 * (gemm_x86_avx2_r4, gemm.c's n16_fits: tiles of 8 and 32, and 16 through
 * its variable-tile instance): 1 to 9 rows
 * (whole blocks and the one to three rows after them), one column to
 * three blocks, a ragged last tile, the largest operands of 4 to 6 bits
 * (7 for tiles of 8; the widest of these, past n16_fits, take the two-row
 * kernel, n16_lanes_fit); and the bound of its 16-bit wide sums, ntiles *
 * 2^(a-1) <= 32767, on both sides (12-bit accumulators: 15 tiles of 32
 * in it, 17 past it; 8-bit ones: 255 tiles and 257), where it hands over
 * to the per-tile widening. */
START_TEST(test_avx2_r4_rows_and_bounds)
{
	if (hdqt_kernel_select("avx2") != 0) {
		fprintf(stderr, "test_avx2_r4_rows_and_bounds: skipped, this CPU has no AVX2\n");
		return;
	}
	hdqt_rng r;
	hdqt_rng_seed(&r, 47, 0);
	gemm_ws ws = {0};
	/* 9 and 25: a last block of 9 columns, just past the half blocks */
	const int Js[] = {1, 16, 17, 45, 9, 25};
	/* tiles of 8 and 32 (the model's) and 16 (the variable-tile instance) */
	for (int tile = 8; tile <= 32; tile *= 2)
		for (int bits = 4; bits <= (tile == 8 ? 7 : 6); bits++)
			for (int I = 1; I <= 9; I++) {
				gemm_params p = {.tile = tile, .acc_bits = 8, .bits = bits,
						 .a_signed = I & 1};
				check_shape_against_ref(&ws, &r, I, Js[I % 6], tile * 3 + 4 * (I % 3) + 4,
							&p, I % 3 != 0);
			}
	/* Extreme operands that differ by row and column (check_shape's are
	 * uniform: a row or column put in the wrong place would go unseen):
	 * row i of A at qa - i % 3, column j of B at +-(qb - j % 3 / 2) by
	 * j's parity, so that tile sums clamp at both ends. */
	for (int tile = 8; tile <= 32; tile += 24)
		for (int I = 1; I <= 9; I += 4) {
			const int J = 37, K = tile * 5 + 8, bits = 4, qb = 7, qa = 15;
			int8_t *A = malloc((size_t)I * K), *B = malloc((size_t)J * K);
			for (int i = 0; i < I; i++)
				memset(A + (size_t)i * K, qa - i % 3, (size_t)K);
			for (int j = 0; j < J; j++)
				memset(B + (size_t)j * K, (int8_t)((j & 1 ? 1 : -1) * (qb - j % 3 / 2)),
				       (size_t)K);
			gemm_params p = {.tile = tile, .acc_bits = 8, .bits = bits, .a_signed = 0};
			check_ab_against_ref(&ws, &r, A, B, I, J, K, &p, 1);
			free(A);
			free(B);
		}
	/* The wide sums' bound: 15 and 17 tiles of 32 with 12-bit
	 * accumulators, 255 and 257 tiles of 8 with 8-bit ones.  Past it, a
	 * row of tiles all clamped at -2^(a-1) would wrap int16 (17 x -2048,
	 * 257 x -128); extreme operands take both signs over the repeats. */
	for (int K = 480; K <= 544; K += 64)
		for (int rep = 0; rep < 6; rep++) {
			gemm_params p = {.tile = 32, .acc_bits = 12, .bits = 4, .a_signed = 0};
			check_shape_against_ref(&ws, &r, 6, 20, K, &p, rep < 5);
		}
	for (int K = 2040; K <= 2056; K += 16)
		for (int rep = 0; rep < 6; rep++) {
			gemm_params p = {.tile = 8, .acc_bits = 8, .bits = 4, .a_signed = 0};
			check_shape_against_ref(&ws, &r, 5, 17, K, &p, 1);
		}
	gemm_ws_free(&ws);
	hdqt_kernel_select(variants[0]);
}
END_TEST

/* The default for tiles of 8 follows the CPU, read here from
 * /proc/cpuinfo apart from gemm.c's CPUID: off on AMD family 25 with
 * AVX-512 VNNI (Zen 4, 512-bit operations in two halves) unless HDQT_ISA
 * caps it away, on elsewhere;
 * and either setting gives the reference's results. */
START_TEST(test_tl8_default_and_both)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (!f) {
		fprintf(stderr, "test_tl8_default_and_both: no /proc/cpuinfo, default not checked\n");
	} else {
		char line[4096];
		int amd = 0, fam = -1, vnni = 0;
		while (fgets(line, sizeof line, f)) {
			if (!strncmp(line, "vendor_id", 9) && strstr(line, "AuthenticAMD"))
				amd = 1;
			if (!strncmp(line, "cpu family", 10) && fam < 0)
				fam = atoi(strchr(line, ':') + 1);
			if (!strncmp(line, "flags", 5)) {
				vnni = strstr(line, " avx512_vnni") != NULL;
				break; /* the first CPU's */
			}
		}
		fclose(f);
		/* under HDQT_ISA=avx2 or baseline there is no AVX-512 to halve */
		ck_assert_int_eq(gemm_tl8_select(-1),
				 !(amd && fam == 25 && vnni && simd_cap() == SIMD_AVX512));
	}
	hdqt_rng r;
	hdqt_rng_seed(&r, 41, 0);
	gemm_ws ws = {0};
	for (int on = 0; on < 2; on++) {
		gemm_tl8_select(on);
		for (size_t n = 0; n < N_VARIANTS; n++) {
			if (hdqt_kernel_select(variants[n]) != 0)
				continue;
			const int Ks[] = {40, 64, 166, 512};
			for (size_t k = 0; k < sizeof(Ks) / sizeof(Ks[0]); k++) {
				gemm_params p = {.tile = 8, .acc_bits = 8, .bits = 4, .a_signed = (int)k & 1};
				check_shape_against_ref(&ws, &r, 7, 33, Ks[k], &p, (int)k % 2);
			}
		}
	}
	gemm_tl8_select(-1);
	hdqt_kernel_select(variants[0]);
	gemm_ws_free(&ws);
}
END_TEST

static void check_shape_against_ref(gemm_ws *ws, hdqt_rng *r, int I, int J, int K,
				    const gemm_params *p, int extreme);

/* The tiles-in-lanes kernel on the edges of its quads and row blocks (K
 * around 8, 32 and 64, a last quad of one to four tiles; 1 to 7 rows; one
 * column to three blocks), and packings that change hands: made under one
 * kernel and multiplied under another, the reference runs on B's bytes
 * read back out of the layout (or apacked refuses), for both directions. */
START_TEST(test_tl_edges_and_kernel_switch)
{
	if (hdqt_kernel_select("avx512vnni") != 0) {
		fprintf(stderr, "test_tl_edges_and_kernel_switch: skipped, this CPU has no AVX-512 VNNI\n");
		return;
	}
	gemm_tl8_select(1);
	hdqt_rng r;
	hdqt_rng_seed(&r, 31, 0);
	gemm_ws ws = {0};
	/* tiles of 8: quads of 32 k; tails of 0 to 3 tiles (48: 1 quad + 2, 56:
	 * 1 + 3, 88: 2 + 3); under 8 groups the column layout */
	const int Ks[] = {9, 24, 31, 32, 33, 40, 48, 56, 57, 63, 64, 65, 88, 100, 166};
	/* tiles of 32: quads of 128 k, tails of 0 to 3 tiles */
	const int Ks32[] = {33, 96, 127, 128, 129, 166, 200, 256, 300, 440, 480, 512, 650};
	const int Is[] = {1, 2, 3, 4, 5, 7}, Js[] = {1, 16, 17, 33};
	for (int tl = 8; tl <= 32; tl += 24)
		for (size_t k = 0; k < (tl == 8 ? sizeof(Ks) / sizeof(Ks[0]) : sizeof(Ks32) / sizeof(Ks32[0])); k++)
			for (size_t i = 0; i < sizeof(Is) / sizeof(Is[0]); i++)
				for (size_t j = 0; j < sizeof(Js) / sizeof(Js[0]); j++) {
					gemm_params p = {.tile = tl, .acc_bits = 8, .bits = 4,
							 .a_signed = (int)(k + i + j) & 1};
					check_shape_against_ref(&ws, &r, Is[i], Js[j], tl == 8 ? Ks[k] : Ks32[k], &p,
								(int)(i + j) % 3 == 0);
				}
	/* 8-bit signed operands (offset 128) at the extremes */
	for (int tl = 8; tl <= 32; tl += 24) {
		gemm_params p8 = {.tile = tl, .acc_bits = 8, .bits = 8, .a_signed = 1};
		check_shape_against_ref(&ws, &r, 7, 33, 100 + 4 * tl, &p8, 1);
		check_shape_against_ref(&ws, &r, 7, 33, 100 + 4 * tl, &p8, 0);
	}

	for (int tl = 8; tl <= 32; tl += 24) {
		/* K: a last quad of part of a tile, and little enough padding
		 * for the layout (tl_takes) */
		const int I = 5, J = 21, K = tl == 8 ? 57 : 250;
		gemm_params p = {.tile = tl, .acc_bits = 8, .bits = 4, .a_signed = 1};
		/* without VBMI tiles of 32 keep the column layout, as avx2's */
		const int tl_used = tl == 8 || gemm_x86_vbmi_supported();
		const int want_k4 = tl == 8 ? 16 : tl_used ? 64 : 63;
		int8_t A[5 * 250], B[21 * 250];
		fill(A, I * K, -7, 7, &r);
		fill(B, J * K, -7, 7, &r);
		int32_t C0[5 * 21], C1[5 * 21];
		ck_assert_int_eq(gemm_q_ref(A, B, I, J, K, &p, C0), 0);
		const char *other[] = {"avxvnni", "avx2", "portable", "scalar"};
		for (size_t o = 0; o < sizeof(other) / sizeof(other[0]); o++) {
			/* tiles in lanes, then another kernel */
			ck_assert_int_eq(hdqt_kernel_select("avx512vnni"), 0);
			gemm_packed pb = {0};
			ck_assert_int_eq(gemm_pack(&pb, B, J, K, &p), 0);
			ck_assert_int_eq(pb.K4, want_k4);
			/* the column path's operands in the same layout */
			gemm_packed ps = {0};
			ck_assert_int_eq(gemm_pack_begin(&ps, NULL, J, K, &p), 2);
			int8_t strip[256 * 16];
			for (int jb = 0; jb < 2; jb++) {
				memset(strip, 0, sizeof(strip));
				for (int l = 0; l < 16 && jb * 16 + l < J; l++)
					for (int kk = 0; kk < K; kk++)
						strip[kk * 16 + l] = B[(jb * 16 + l) * K + kk];
				gemm_pack_strip(&ps, jb, strip);
			}
			memset(strip, 0, sizeof(strip));
			for (int l = 0; l < I; l++)
				for (int kk = 0; kk < K; kk++)
					strip[kk * 16 + l] = A[l * K + kk];
			uint8_t ap[5 * 256];
			ck_assert_uint_eq(gemm_a_stride(&ps), 4 * (size_t)want_k4);
			gemm_pack_a_strip(&ps, 0, I, strip, ap);
			memset(C1, 0x5a, sizeof(C1));
			ck_assert_int_eq(gemm_q_apacked(ap, I, &ps, C1), 0);
			ck_assert_mem_eq(C0, C1, sizeof(C0));
			if (!tl_used || hdqt_kernel_select(other[o]) != 0) {
				gemm_packed_free(&pb);
				gemm_packed_free(&ps);
				continue;
			}
			ck_assert(!gemm_packed_matches(&pb, J, K, &p));
			memset(C1, 0x5a, sizeof(C1));
			ck_assert_int_eq(gemm_q_packed(&ws, A, I, &pb, C1), 0);
			ck_assert_mem_eq(C0, C1, sizeof(C0));
			check_packed_f(&ws, A, I, &pb, C0, &r);
			ck_assert_int_eq(gemm_q_apacked(ap, I, &ps, C1), HDQT_EINVAL);
			/* another kernel's packing, then tiles in lanes */
			ck_assert_int_eq(gemm_pack(&pb, B, J, K, &p), 0);
			ck_assert_int_eq(hdqt_kernel_select("avx512vnni"), 0);
			ck_assert(!gemm_packed_matches(&pb, J, K, &p));
			memset(C1, 0x5a, sizeof(C1));
			ck_assert_int_eq(gemm_q_packed(&ws, A, I, &pb, C1), 0);
			ck_assert_mem_eq(C0, C1, sizeof(C0));
			check_packed_f(&ws, A, I, &pb, C0, &r);
			gemm_packed_free(&pb);
			gemm_packed_free(&ps);
		}
	}
	gemm_ws_free(&ws);
	gemm_tl8_select(-1);
	hdqt_kernel_select(variants[0]);
}
END_TEST

/* The tiles-in-lanes strip packers (gemm_x86_tl.c, VBMI) against the
 * layout written out, for tiles of 8 and 32 (G = 2, 8): B bytes
 * [g][R][L][t][4] per quad of 16 G k, tile sums [R][L][t], A rows
 * [g][t][4] with the offset below K, zeros to the stride; the strip holds
 * only its (K + 3) / 4 groups (ASan sees a read past them), rows past ni
 * untouched. */
START_TEST(test_pack_tl_strips_vbmi)
{
	if (!gemm_x86_vbmi_supported()) {
		fprintf(stderr, "test_pack_tl_strips_vbmi: skipped, this CPU has no AVX-512 VBMI\n");
		return;
	}
	hdqt_rng r;
	hdqt_rng_seed(&r, 37, 0);
	/* the edges first (quads, partial groups, a partial last batch of 32
	 * groups for G = 2), then random K */
	static const int fixedK[] = {1, 2, 3, 31, 32, 33, 127, 128, 129, 160, 161, 255, 257, 300};
	const int nfix = (int)(sizeof(fixedK) / sizeof(fixedK[0]));
	for (int it = 0; it < 400; it++) {
		const int G = it & 1 ? 8 : 2;
		const int K = it / 2 < nfix ? fixedK[it / 2] : 1 + (int)hdqt_rng_below(&r, it % 5 ? 300 : 700);
		const int have = (K + 3) / 4;
		const int ntiles = (have + G - 1) / G, K4 = ntiles * G, nq = ntiles / 4;
		const int off = it % 3 == 0 ? 0 : it % 3 == 1 ? 8 : 128, ni = 1 + (int)hdqt_rng_below(&r, 16);
		const size_t rs = (size_t)K4 * 4;
		int8_t *codes = calloc((size_t)have * 64, 1), *bb = malloc((size_t)K4 * 64);
		int8_t *want = calloc((size_t)K4 * 64, 1);
		int32_t *cr = malloc(sizeof(int32_t) * 16 * ntiles), *cw = calloc(16 * (size_t)ntiles, sizeof(int32_t));
		uint8_t *a = malloc(16 * rs), *aw = malloc(16 * rs);
		for (int k = 0; k < K; k++)
			for (int l = 0; l < 16; l++)
				codes[k * 16 + l] = (int8_t)(hdqt_rng_below(&r, 255) - 127);
		memset(aw, 0xa5, 16 * rs);
		for (int l = 0; l < ni; l++)
			memset(aw + l * rs, 0, rs);
		for (int k = 0; k < K; k++)
			for (int l = 0; l < 16; l++) {
				want[tl_want_b(G, nq, l, k)] = codes[k * 16 + l];
				cw[tl_want_c(G, nq, l, k)] -= off * codes[k * 16 + l];
				if (l < ni)
					aw[l * rs + tl_want_a(G, nq, k)] = (uint8_t)(codes[k * 16 + l] + off);
			}
		memset(bb, 0x5a, (size_t)K4 * 64);
		memset(cr, 0x5a, sizeof(int32_t) * 16 * ntiles);
		gemm_x86_tl_pack_strip16(codes, K, K4, G, off, bb, cr);
		if (memcmp(bb, want, (size_t)K4 * 64) != 0 || memcmp(cr, cw, sizeof(int32_t) * 16 * ntiles) != 0)
			ck_abort_msg("tl_pack_strip16: K=%d G=%d off=%d", K, G, off);
		memset(a, 0xa5, 16 * rs);
		gemm_x86_tl_pack_a_strip16(codes, ni, K, K4, G, off, a, rs);
		if (memcmp(a, aw, 16 * rs) != 0)
			ck_abort_msg("tl_pack_a_strip16: K=%d G=%d ni=%d off=%d", K, G, ni, off);
		free(codes), free(bb), free(want), free(cr), free(cw), free(a), free(aw);
	}
}
END_TEST

/* The x86 strip packers of the column path (VBMI and their AVX2 twins,
 * each where it runs) against their layouts written out, every byte: B
 * groups [k4][column][4] with tile sums, A rows with the offset below K
 * and zeros from K to the row stride (codes past K are nonzero here, so a
 * missed zero shows), rows past ni untouched. */
typedef void (*pack_strip_fn)(const int8_t *, int, int, int, int, int8_t *, int32_t *);
typedef void (*pack_a_strip_fn)(const int8_t *, int, int, int, int, uint8_t *, size_t);

static int check_pack_strips(const char *name, pack_strip_fn fb, pack_a_strip_fn fa,
			     int (*supported)(void), uint64_t seed)
{
	if (!supported()) {
		fprintf(stderr, "test_pack_strips: %s skipped, not on this CPU (or HDQT_ISA)\n", name);
		return 0;
	}
	hdqt_rng r;
	hdqt_rng_seed(&r, seed, 0);
	for (int it = 0; it < 300; it++) {
		const int K = 1 + (int)hdqt_rng_below(&r, 300), K4 = (K + 3) / 4;
		const int tile4 = 1 + (int)hdqt_rng_below(&r, it % 3 ? 9 : (uint32_t)K4);
		const int ntiles = (K4 + tile4 - 1) / tile4, off = (it & 1) ? 8 : 0;
		const int ni = 1 + (int)hdqt_rng_below(&r, 16);
		const size_t rs = (size_t)K4 * 4;
		int8_t *codes = malloc((size_t)K4 * 64), *bb = malloc((size_t)K4 * 64), *want = malloc((size_t)K4 * 64);
		int32_t *cr = malloc(sizeof(int32_t) * 16 * ntiles), *cw = calloc(16 * (size_t)ntiles, sizeof(int32_t));
		uint8_t *a = malloc(16 * rs), *aw = malloc(16 * rs);
		fill(codes, K4 * 64, -8, 7, &r);
		for (int k = 0; k < K4 * 4; k++)
			for (int l = 0; l < 16; l++) {
				want[(k / 4) * 64 + l * 4 + k % 4] = codes[k * 16 + l];
				cw[(k / 4 / tile4) * 16 + l] -= off * codes[k * 16 + l];
			}
		memset(bb, 0x5a, (size_t)K4 * 64);
		memset(cr, 0x5a, sizeof(int32_t) * 16 * ntiles);
		fb(codes, K4, tile4, ntiles, off, bb, cr);
		if (memcmp(bb, want, (size_t)K4 * 64) != 0 || memcmp(cr, cw, sizeof(int32_t) * 16 * ntiles) != 0)
			ck_abort_msg("pack_strip16 %s: K4=%d tile4=%d off=%d", name, K4, tile4, off);
		memset(a, 0xa5, 16 * rs);
		memset(aw, 0xa5, 16 * rs);
		for (int l = 0; l < ni; l++)
			for (size_t k = 0; k < rs; k++)
				aw[l * rs + k] = (int)k < K ? (uint8_t)(codes[k * 16 + l] + off) : 0;
		fa(codes, ni, K, K4, off, a, rs);
		if (memcmp(a, aw, 16 * rs) != 0)
			ck_abort_msg("pack_a_strip16 %s: K=%d ni=%d off=%d", name, K, ni, off);
		free(codes), free(bb), free(want), free(cr), free(cw), free(a), free(aw);
	}
	return 1;
}

START_TEST(test_pack_strips_x86)
{
	const int ran = check_pack_strips("vbmi", gemm_x86_pack_strip16, gemm_x86_pack_a_strip16,
					  gemm_x86_vbmi_supported, 29) +
			check_pack_strips("avx2", gemm_x86_pack_strip16_avx2, gemm_x86_pack_a_strip16_avx2,
					  gemm_x86_avx2_supported, 30);
	if (!ran)
		fprintf(stderr, "test_pack_strips_x86: skipped, this CPU has neither AVX-512 VBMI nor AVX2\n");
}
END_TEST
#endif

/* The cap that the test command's `<suite>-isa-<cap>` runs set is the
 * one in force, down to the kernel chosen and the intrinsics passes' own
 * question (SIMD_AVX512F / SIMD_AVX2): otherwise those runs would test
 * the native paths again and call it AVX2 or baseline coverage.  (Under
 * avx2 a CPU with AVX-VNNI takes its 256-bit VNNI kernel, still no
 * AVX-512.) */
START_TEST(test_isa_cap_in_force)
{
	const char *want = getenv("HDQT_ISA");
	if (!want || !*want || !strcasecmp(want, "native")) {
		ck_assert_str_eq(simd_cap_name(), "native");
		return;
	}
	ck_assert_msg(!strcasecmp(simd_cap_name(), want), "cap %s, HDQT_ISA %s", simd_cap_name(), want);
#if HDQT_X86_64
	/* What the cap lets a kernel choice take, not what was taken last
	 * (other tests select kernels, and CK_FORK=no shares the process). */
	char was[32];
	snprintf(was, sizeof was, "%s", hdqt_kernel_name());
	ck_assert(!SIMD_AVX512F());
	ck_assert_int_ne(hdqt_kernel_select("avx512vnni"), 0);
	if (!strcasecmp(want, "baseline")) {
		ck_assert(!SIMD_AVX2());
		ck_assert_int_ne(hdqt_kernel_select("avx2"), 0);
		ck_assert_int_ne(hdqt_kernel_select("avxvnni"), 0);
	} else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
		ck_assert(SIMD_AVX2());
		ck_assert_int_eq(hdqt_kernel_select("avx2"), 0);
	}
	ck_assert_int_eq(hdqt_kernel_select(was), 0);
#endif
}
END_TEST

/* Naive definition, written independently of gemm_q_ref. */
static int32_t naive(const int8_t *A, const int8_t *B, int i, int j, int K, int tile, int acc)
{
	long lo = -(1L << (acc - 1)), hi = (1L << (acc - 1)) - 1;
	long total = 0;
	int t = tile == 0 || tile > K ? K : tile;
	for (int k0 = 0; k0 < K; k0 += t) {
		long s = 0;
		for (int k = k0; k < K && k < k0 + t; k++)
			s += A[i * K + k] * B[j * K + k];
		total += s < lo ? lo : s > hi ? hi : s;
	}
	return (int32_t)total;
}

START_TEST(test_ref_matches_naive_random_shapes)
{
	hdqt_rng r;
	hdqt_rng_seed(&r, 99, 0);
	const int Ks[] = {1, 3, 31, 32, 33, 100, 166, 257};
	for (int it = 0; it < 40; it++) {
		int I = 1 + (int)hdqt_rng_below(&r, 20), J = 1 + (int)hdqt_rng_below(&r, 40);
		int K = Ks[it % 8];
		int tile = (int)hdqt_rng_below(&r, 3) == 0 ? 0 : 1 + (int)hdqt_rng_below(&r, 40);
		gemm_params p = {.tile = tile, .acc_bits = 8, .bits = 4, .a_signed = it & 1};
		int8_t *A = malloc((size_t)I * K), *B = malloc((size_t)J * K);
		int32_t *C = malloc(sizeof(int32_t) * I * J);
		fill(A, I * K, p.a_signed ? -7 : 0, p.a_signed ? 7 : 15, &r);
		fill(B, J * K, -7, 7, &r);
		ck_assert_int_eq(gemm_q_ref(A, B, I, J, K, &p, C), 0);
		for (int i = 0; i < I; i++)
			for (int j = 0; j < J; j++)
				ck_assert_int_eq(C[i * J + j], naive(A, B, i, j, K, tile, 8));
		free(A);
		free(B);
		free(C);
	}
}
END_TEST

START_TEST(test_clamp_triggers)
{
	/* 32 products of 15 * 7 = 105 each: one tile sums to 3360 and must clamp
	 * to 127 with an 8-bit accumulator; tiles of 1 never clamp. */
	int8_t A[32], B[32];
	memset(A, 15, sizeof(A));
	memset(B, 7, sizeof(B));
	int32_t C;
	gemm_params p = {.tile = 32, .acc_bits = 8, .bits = 4, .a_signed = 0};
	gemm_q_ref(A, B, 1, 1, 32, &p, &C);
	ck_assert_int_eq(C, 127);
	ck_assert_int_eq(gemm_q_ref_count_clamped(A, B, 1, 1, 32, &p), 1);
	p.tile = 1;
	gemm_q_ref(A, B, 1, 1, 32, &p, &C);
	ck_assert_int_eq(C, 32 * 105);
	ck_assert_int_eq(gemm_q_ref_count_clamped(A, B, 1, 1, 32, &p), 0);
	/* Negative side: -128. */
	memset(B, -7, sizeof(B));
	p.tile = 32;
	gemm_q_ref(A, B, 1, 1, 32, &p, &C);
	ck_assert_int_eq(C, -128);
	/* 16-bit accumulators hold it. */
	p.acc_bits = 16;
	gemm_q_ref(A, B, 1, 1, 32, &p, &C);
	ck_assert_int_eq(C, -3360);
}
END_TEST

START_TEST(test_overflow_rejected)
{
	int8_t A[4] = {0}, B[4] = {0};
	int32_t C;
	gemm_params p = {.tile = 1, .acc_bits = 24, .bits = 4};
	/* 4 tiles * 2^23 fits; 300 tiles would not. */
	ck_assert_int_eq(gemm_q_ref(A, B, 1, 1, 4, &p, &C), 0);
	int8_t *big = calloc(300, 1);
	ck_assert_int_eq(gemm_q_ref(big, big, 1, 1, 300, &p, &C), HDQT_ERANGE);
	free(big);
	p.acc_bits = 7;
	ck_assert_int_eq(gemm_q_ref(A, B, 1, 1, 4, &p, &C), HDQT_EINVAL);
}
END_TEST

/* Every kernel this CPU supports gives the reference's integers exactly. */
START_TEST(test_simd_matches_reference)
{
	const char *const *names = variants;
	hdqt_rng r;
	hdqt_rng_seed(&r, 5, 0);
	gemm_ws ws = {0};
	int tested = 0;
	for (size_t n = 0; n < N_VARIANTS; n++) {
		if (hdqt_kernel_select(names[n]) != 0)
			continue;
		tested++;
		for (int it = 0; it < 60; it++) {
			int I = 1 + (int)hdqt_rng_below(&r, 19), J = 1 + (int)hdqt_rng_below(&r, 70);
			int K = 1 + (int)hdqt_rng_below(&r, 300);
			int tiles[] = {0, 4, 8, 32, 64, 6};
			int bits = 2 + (int)hdqt_rng_below(&r, 7); /* 2..8 */
			if (!(it & 1) && bits == 8)
				bits = 7; /* unsigned A is at most 7 bits (int8 storage) */
			int qm = (1 << (bits - 1)) - 1;
			/* tile and width independent: every tile meets 8-bit accumulators */
			gemm_params p = {.tile = tiles[it % 6], .acc_bits = 8 + (it / 6 % 3) * 4,
					 .bits = bits, .a_signed = it & 1};
			int8_t *A = malloc((size_t)I * K), *B = malloc((size_t)J * K);
			int32_t *C0 = malloc(sizeof(int32_t) * I * J), *C1 = malloc(sizeof(int32_t) * I * J);
			fill(A, I * K, p.a_signed ? -qm : 0, p.a_signed ? qm : 2 * qm + 1, &r);
			fill(B, J * K, -qm, qm, &r);
			int rc0 = gemm_q_ref(A, B, I, J, K, &p, C0);
			int rc1 = gemm_q(&ws, A, B, I, J, K, &p, C1);
			ck_assert_int_eq(rc0, rc1);
			/* B packed once (the forward weight cache) gives the same C. */
			gemm_packed pb = {0};
			int32_t *C2 = malloc(sizeof(int32_t) * I * J);
			if (gemm_pack(&pb, B, J, K, &p) == 0) {
				ck_assert(gemm_packed_matches(&pb, J, K, &p));
				int rc2 = gemm_q_packed(&ws, A, I, &pb, C2);
				ck_assert_int_eq(rc0, rc2);
				if (rc0 == 0) {
					ck_assert_mem_eq(C0, C2, sizeof(int32_t) * I * J);
					check_packed_f(&ws, A, I, &pb, C0, &r);
				}
			} else {
				ck_assert_int_ne(rc0, 0);
			}
			gemm_packed_free(&pb);
			free(C2);
			if (rc0 == 0 && memcmp(C0, C1, sizeof(int32_t) * I * J) != 0)
				ck_abort_msg("%s: I=%d J=%d K=%d tile=%d acc=%d bits=%d signed=%d", names[n],
					     I, J, K, p.tile, p.acc_bits, bits, p.a_signed);
			if (rc0 == 0)
				ck_assert_mem_eq(C0, C1, sizeof(int32_t) * I * J);
			free(A);
			free(B);
			free(C0);
			free(C1);
		}
	}
	gemm_ws_free(&ws);
	ck_assert_int_ge(tested, 1);
}
END_TEST

/* gemm_q and the packed path under the active kernel against gemm_q_ref;
 * returns 0 or aborts with the shape.  A within the operand range, or at
 * its extremes (every product the largest: the worst case for narrow
 * partial sums) when extreme is set. */
static void check_shape_against_ref(gemm_ws *ws, hdqt_rng *r, int I, int J, int K,
				    const gemm_params *p, int extreme)
{
	const int qb = (1 << (p->bits - 1)) - 1, qa = p->a_signed ? qb : (1 << p->bits) - 1;
	int8_t *A = malloc((size_t)I * K), *B = malloc((size_t)J * K);
	if (extreme) {
		const int s = (int)hdqt_rng_below(r, 2) ? 1 : -1;
		memset(A, qa, (size_t)I * K);
		memset(B, (int8_t)(s * qb), (size_t)J * K);
	} else {
		fill(A, I * K, p->a_signed ? -qa : 0, qa, r);
		fill(B, J * K, -qb, qb, r);
	}
	check_ab_against_ref(ws, r, A, B, I, J, K, p, extreme);
	free(A);
	free(B);
}

/* The active kernel on operands A and B, through gemm_q and the packed
 * paths, against the reference. */
static void check_ab_against_ref(gemm_ws *ws, hdqt_rng *r, const int8_t *A, const int8_t *B, int I,
				 int J, int K, const gemm_params *p, int extreme)
{
	int32_t *C0 = malloc(sizeof(int32_t) * I * J), *C1 = malloc(sizeof(int32_t) * I * J);
	ck_assert_int_eq(gemm_q_ref(A, B, I, J, K, p, C0), 0);
	ck_assert_int_eq(gemm_q(ws, A, B, I, J, K, p, C1), 0);
	if (memcmp(C0, C1, sizeof(int32_t) * I * J) != 0)
		ck_abort_msg("%s: I=%d J=%d K=%d tile=%d acc=%d bits=%d signed=%d extreme=%d",
			     hdqt_kernel_name(), I, J, K, p->tile, p->acc_bits, p->bits, p->a_signed,
			     extreme);
	gemm_packed pb = {0};
	ck_assert_int_eq(gemm_pack(&pb, B, J, K, p), 0);
	ck_assert_int_eq(gemm_q_packed(ws, A, I, &pb, C1), 0);
	if (memcmp(C0, C1, sizeof(int32_t) * I * J) != 0)
		ck_abort_msg("%s packed: I=%d J=%d K=%d tile=%d acc=%d bits=%d signed=%d", hdqt_kernel_name(),
			     I, J, K, p->tile, p->acc_bits, p->bits, p->a_signed);
	check_packed_f(ws, A, I, &pb, C0, r);
	gemm_packed_free(&pb);
	free(C0);
	free(C1);
}

/* Every variant on this machine, on the model's own products (hdqtd's
 * default 166 features, 512-wide hidden layers, batch 128: forward with
 * tiles of 32 and of 8 (the tiles-in-lanes layout: every layer, a ragged
 * row count), grad-weight over the batch and grad-input over 512 with the
 * whole reduction as one tile), on random shapes with tiles 8 and 32 for
 * every operand width, signed and unsigned A, and on extreme operands
 * with long tiles (the NEON path's 16-bit partial sums must flush). */
START_TEST(test_variants_model_and_tile_shapes)
{
	hdqt_rng r;
	hdqt_rng_seed(&r, 14, 0);
	gemm_ws ws = {0};
	int tested = 0;
	for (size_t n = 0; n < N_VARIANTS; n++) {
		if (hdqt_kernel_select(variants[n]) != 0)
			continue;
		tested++;
		const struct { int I, J, K, tile; } model[] = {
			{128, 512, 166, 32}, {128, 512, 512, 32}, {128, 6, 512, 32},
			{512, 166, 128, 0},  {128, 166, 512, 0},  {128, 512, 166, 8},
			{128, 512, 512, 8},  {128, 12, 512, 8},   {61, 37, 166, 8},
		};
		for (size_t m = 0; m < sizeof(model) / sizeof(model[0]); m++)
			for (int sg = 0; sg < 2; sg++) {
				gemm_params p = {.tile = model[m].tile, .acc_bits = 8, .bits = 4,
						 .a_signed = sg};
				check_shape_against_ref(&ws, &r, model[m].I, model[m].J, model[m].K, &p, 0);
			}
		for (int it = 0; it < 56; it++) {
			const int bits = 2 + it % 7, sg = (it / 7) & 1;
			gemm_params p = {.tile = (it / 14) & 1 ? 32 : 8, .acc_bits = (it / 28) ? 16 : 8,
					 .bits = sg || bits < 8 ? bits : 7, .a_signed = sg};
			int I = 1 + (int)hdqt_rng_below(&r, 9), J = 1 + (int)hdqt_rng_below(&r, 40);
			int K = 1 + (int)hdqt_rng_below(&r, 200);
			check_shape_against_ref(&ws, &r, I, J, K, &p, 0);
		}
		/* 8-bit accumulators with tiles of 8 and 32 on two column blocks
		 * and more (the AVX-512 two-block path, row blocks of 8 and 6 and
		 * the rest): narrow operands fold the offset correction into the
		 * clamp, wide ones (|c| beyond int16) must not; both random and
		 * at the extremes, every width. */
		for (int bits = 2; bits <= 8; bits++)
			for (int sg = 0; sg < 2; sg++)
				for (int tl = 8; tl <= 32; tl += 24) {
					if (!sg && bits == 8)
						continue;
					gemm_params p = {.tile = tl, .acc_bits = 8, .bits = bits, .a_signed = sg};
					check_shape_against_ref(&ws, &r, 19, 48, 200, &p, 0);
					check_shape_against_ref(&ws, &r, 19, 48, 200, &p, 1);
				}
		/* Whole-reduction tiles of extreme products with wide accumulators:
		 * sums far beyond int16 (2048 * 127 * 127), every width. */
		for (int bits = 2; bits <= 8; bits++)
			for (int sg = 0; sg < 2; sg++) {
				if (!sg && bits == 8)
					continue;
				gemm_params p = {.tile = 0, .acc_bits = 24, .bits = bits, .a_signed = sg};
				check_shape_against_ref(&ws, &r, 3, 17, 2048, &p, 1);
				p.tile = 32;
				p.acc_bits = 16;
				check_shape_against_ref(&ws, &r, 3, 17, 300, &p, 1);
			}
	}
	gemm_ws_free(&ws);
	hdqt_kernel_select(variants[0]);
	/* The scalar reference and at least one kernel, where the build has
	 * kernels (-Dsimd=false builds the portable C alone). */
	ck_assert_int_ge(tested, HDQT_X86_64 || HDQT_AARCH64 ? 2 : 1);
}
END_TEST

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}
#define FNV0 14695981039346656037ull

/* Cross-architecture reproducibility (docs/arm.md): the same seed gives the
 * same integers on x86-64 and aarch64 under every kernel.  The constants
 * were computed on x86-64 (scripts/arm.sh runs this suite under qemu for
 * aarch64).  1. a fixed-seed tile-clamped GEMM; 2. one fixed-seed training
 * step of the default recipe (hdqt: Hadamard rotations, per-row scales,
 * stochastic rounding), whose quantised weights (4-bit, per-row, nearest)
 * are hashed.  Stochastic rounding draws one seed per quantisation and
 * seeds row r's stream from (seed, r) (quant_rows_part), so the checksums
 * are those of any thread count too. */
#define REPRO_GEMM_SUM 0xa5a062f4f0b5ed56ull
#define REPRO_STEP_QSUM 0x17eb501a23fe78a6ull
/* The step's float weights too: equal on x86-64 (every kernel, AVX2 passes
 * or not) and aarch64 with Debian 12's glibc, whose expf/logf (the loss) are
 * the same portable code on both; another libm may change only this one. */
#define REPRO_STEP_FSUM 0x7c27f07dfb5a3606ull
START_TEST(test_repro_across_architectures)
{
	hdqt_rng r;
	hdqt_rng_seed(&r, 2024, 0);
	enum { I = 37, J = 70, K = 166 };
	static int8_t A[I * K], B[J * K];
	static int32_t C[I * J];
	fill(A, I * K, 0, 15, &r);
	fill(B, J * K, -7, 7, &r);
	gemm_params p = {.tile = 32, .acc_bits = 8, .bits = 4, .a_signed = 0};
	gemm_ws ws = {0};
	uint64_t gsum[N_VARIANTS] = {0};
	for (size_t n = 0; n < N_VARIANTS; n++) {
		if (hdqt_kernel_select(variants[n]) != 0)
			continue;
		ck_assert_int_eq(gemm_q(&ws, A, B, I, J, K, &p, C), 0);
		gsum[n] = fnv1a(FNV0, C, sizeof(C));
		printf("repro: gemm %s %016llx\n", variants[n], (unsigned long long)gsum[n]);
	}
	gemm_ws_free(&ws);

	/* One training step: integer inputs turned into exact floats, weights
	 * from the model's integer-seeded uniform initialisation. */
	enum { N = 64, F = 166, H = 128, NC = 6 };
	static float X[N * F];
	static int y[N];
	for (int i = 0; i < N * F; i++)
		X[i] = (float)((int)hdqt_rng_below(&r, 2001) - 1000) / 256.0f;
	for (int i = 0; i < N; i++)
		y[i] = (int)hdqt_rng_below(&r, NC);
	hdqt_mlp_config c = {.n_in = F, .n_hidden = 2, .hidden = {H, H}, .n_classes = NC};
	hdqt_qconfig q;
	hdqt_qconfig_default(&q, HDQT_MODE_HDQT);
	hdqt_sgd o;
	hdqt_sgd_default(&o);
	/* Every kernel, and (x86) each under the caps of lib/simd.h: the
	 * element-wise passes of a box without AVX-512 (avx2) or without AVX2
	 * (baseline) around it. */
	enum { NCAP = 3 };
	uint64_t qsum[N_VARIANTS * NCAP] = {0}, fsum[N_VARIANTS * NCAP] = {0};
	const int cap0 = simd_cap();
	for (size_t nc = 0; nc < N_VARIANTS * NCAP; nc++) {
		const size_t n = nc % N_VARIANTS;
		const int cap = SIMD_AVX512 - (int)(nc / N_VARIANTS);
		if (cap < SIMD_AVX512 && !HDQT_X86_64)
			break;
		simd_cap_select(cap);
		if (hdqt_kernel_select(variants[n]) != 0)
			continue;
		hdqt_model *m;
		ck_assert_int_eq(hdqt_model_new(&m, &c, &q, 7), 0);
		hdqt_model_seed(m, 8);
		hdqt_batch b = {.X = X, .y = y, .n = N};
		float loss;
		ck_assert_int_eq(hdqt_model_train_step(m, &b, &o, 0.05f, &loss), 0);
		uint64_t hq = FNV0, hf = FNV0;
		for (int l = 0; l < m->n_layers; l++) {
			const linear *L = &m->L[l];
			quant_spec sp = {.bits = 4, .clip = 1.0f, .per_row = 1};
			int8_t *qw = malloc((size_t)L->in * L->out);
			float *sc = malloc(sizeof(float) * L->out);
			quant_rows(L->w, L->out, L->in, &sp, NULL, qw, sc);
			hq = fnv1a(hq, qw, (size_t)L->in * L->out);
			hf = fnv1a(hf, L->w, sizeof(float) * L->in * L->out);
			free(qw);
			free(sc);
		}
		qsum[nc] = hq;
		fsum[nc] = hf;
		printf("repro: step %s (cap %s) quantised %016llx float %016llx loss %.9g\n", variants[n],
		       simd_cap_name(), (unsigned long long)hq, (unsigned long long)hf, loss);
		hdqt_model_free(m);
	}
	simd_cap_select(cap0);
	hdqt_kernel_select(variants[0]);
	int ran = 0;
	for (size_t nc = 0; nc < N_VARIANTS * NCAP; nc++) {
		const size_t n = nc % N_VARIANTS;
		if (nc < N_VARIANTS && gsum[n])
			ck_assert_msg(gsum[n] == REPRO_GEMM_SUM, "gemm checksum %016llx under %s",
				      (unsigned long long)gsum[n], variants[n]);
		if (!qsum[nc])
			continue;
		ran++;
		ck_assert_msg(qsum[nc] == REPRO_STEP_QSUM, "step checksum %016llx under %s, cap %d",
			      (unsigned long long)qsum[nc], variants[n], SIMD_AVX512 - (int)(nc / N_VARIANTS));
		ck_assert_msg(fsum[nc] == REPRO_STEP_FSUM, "float weights checksum %016llx under %s, cap %d",
			      (unsigned long long)fsum[nc], variants[n], SIMD_AVX512 - (int)(nc / N_VARIANTS));
	}
	ck_assert_int_ge(ran, 2); /* scalar and portable run everywhere */
}
END_TEST

#if HDQT_AARCH64
/* The NEON element-wise passes against the portable formulas, NaN rules
 * included (quant.c and fwht.c's own tests cover them through the public
 * functions; these reach the tails and NaN lanes directly). */
START_TEST(test_simd_arm_passes)
{
	enum { NX = 203 };
	float x[NX];
	uint16_t u[NX];
	hdqt_rng r;
	hdqt_rng_seed(&r, 3, 0);
	for (int i = 0; i < NX; i++) {
		x[i] = hdqt_rng_normal(&r) * 9.0f;
		u[i] = (uint16_t)hdqt_rng_u32(&r);
	}
	x[5] = __builtin_nanf("");
	x[17] = -__builtin_inff();
	float mx[8] = {0}, want[8] = {0};
	long done = simd_arm_max_abs(x, NX, mx);
	ck_assert_int_eq(done, NX / 8 * 8);
	for (long i = 0; i < done; i++) {
		float a = __builtin_fabsf(x[i]);
		want[i % 8] = a > want[i % 8] ? a : want[i % 8];
	}
	ck_assert_mem_eq(mx, want, sizeof(mx));
	double acc[8] = {0}, wacc[8] = {0};
	x[5] = 1.0f;
	x[17] = 3.0f;
	simd_arm_sum_sq(x, NX, acc);
	for (long i = 0; i < done; i++)
		wacc[i % 8] += (double)x[i] * (double)x[i];
	ck_assert_mem_eq(acc, wacc, sizeof(acc));
	x[5] = __builtin_nanf("");
	for (int st = 0; st < 2; st++) {
		int8_t q[NX];
		const float inv = 0.7f, qmin = st ? -7.0f : 0.0f, qmax = st ? 7.0f : 15.0f;
		long k = simd_arm_round(x, NX, inv, qmin, qmax, 512.0f, st ? u : NULL, q);
		ck_assert_int_eq(k, done);
		for (long i = 0; i < k; i++) {
			float v = x[i] * inv;
			v = v > qmin ? v : qmin;
			v = v < qmax ? v : qmax;
			int w = st ? (int)(v + (float)u[i] * (1.0f / 65536.0f) + 512.0f) - 512
				   : (int)(v + 512.5f) - 512;
			ck_assert_int_eq(q[i], w);
		}
	}
}
END_TEST
#endif

START_TEST(test_f32_gemm)
{
	enum { I = 7, J = 19, K = 13 };
	float A[I * K], B[K * J], C[I * J];
	hdqt_rng r;
	hdqt_rng_seed(&r, 3, 0);
	for (int i = 0; i < I * K; i++)
		A[i] = hdqt_rng_normal(&r);
	for (int i = 0; i < K * J; i++)
		B[i] = hdqt_rng_normal(&r);
	gemm_f32_nn(A, B, I, J, K, C);
	for (int i = 0; i < I; i++)
		for (int j = 0; j < J; j++) {
			double s = 0;
			for (int k = 0; k < K; k++)
				s += (double)A[i * K + k] * B[k * J + j];
			ck_assert_float_eq_tol(C[i * J + j], (float)s, 1e-4f);
		}
}
END_TEST

START_TEST(test_transpose)
{
	hdqt_rng r;
	hdqt_rng_seed(&r, 4, 0);
	const int shapes[][2] = {{1, 1}, {8, 8}, {13, 29}, {128, 512}, {37, 8}, {8, 3}};
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		int R = shapes[s][0], C = shapes[s][1];
		float *in = malloc(sizeof(float) * R * C), *a = malloc(sizeof(float) * R * C),
		      *b = malloc(sizeof(float) * R * C);
		for (int i = 0; i < R * C; i++)
			in[i] = hdqt_rng_normal(&r);
		gemm_transpose(in, R, C, a);
		gemm_transpose_ref(in, R, C, b);
		for (int i = 0; i < R; i++)
			for (int j = 0; j < C; j++)
				ck_assert(a[j * R + i] == in[i * C + j]);
		ck_assert_mem_eq(a, b, sizeof(float) * R * C);
		/* in blocks of rows with leading dimensions, as the pool splits
		 * it: the whole transpose, byte for byte (the AVX2 kernel and the
		 * reference) */
		for (int bs = 1; bs <= 40; bs += 13) {
			memset(b, 0, sizeof(float) * R * C);
			for (int r0 = 0; r0 < R; r0 += bs) {
				const int nr = R - r0 < bs ? R - r0 : bs;
				gemm_transpose_ld(in + (size_t)r0 * C, nr, C, C, b + r0, R);
			}
			ck_assert_mem_eq(a, b, sizeof(float) * R * C);
			memset(b, 0, sizeof(float) * R * C);
			for (int r0 = 0; r0 < R; r0 += bs) {
				const int nr = R - r0 < bs ? R - r0 : bs;
				gemm_transpose_ld_ref(in + (size_t)r0 * C, nr, C, C, b + r0, R);
			}
			ck_assert_mem_eq(a, b, sizeof(float) * R * C);
		}
		free(in);
		free(a);
		free(b);
	}
}
END_TEST

/* A transpose of a block inside larger matrices (ldi != cols): the AVX2
 * path moves the reference's bytes and nothing outside the block. */
START_TEST(test_transpose_ld)
{
	hdqt_rng r;
	hdqt_rng_seed(&r, 5, 0);
	/* a 24 x 20 block at (3, 5) of a 40 x 37 matrix into a 30 x 50 one at (2, 7) */
	float in[40 * 37], o1[30 * 50], o2[30 * 50];
	for (int i = 0; i < 40 * 37; i++)
		in[i] = hdqt_rng_normal(&r);
	for (int i = 0; i < 30 * 50; i++)
		o1[i] = o2[i] = -1.0f;
	gemm_transpose_ld(in + 3 * 37 + 5, 24, 20, 37, o1 + 2 * 50 + 7, 50);
	gemm_transpose_ld_ref(in + 3 * 37 + 5, 24, 20, 37, o2 + 2 * 50 + 7, 50);
	ck_assert_mem_eq(o1, o2, sizeof(o1));
	ck_assert(o1[(2 + 4) * 50 + 7 + 9] == in[(3 + 9) * 37 + 5 + 4]);
	ck_assert(o1[0] == -1.0f && o1[(2 + 20) * 50 + 7] == -1.0f); /* nothing outside the block */
}
END_TEST

/* The column path (linear_colq_a/_b): the operand whose rows are z's
 * columns, padded, transformed along them and quantised, built straight
 * into the kernels' layouts.  With round-to-nearest its integers are the
 * old passes' (transpose, pad, fwht_rows, quant_rows), for every kernel,
 * 1 to 3 threads, per-row and per-tensor scales, Hadamard blocks or none,
 * partial strips; stochastic codes do not depend on the thread count and
 * differ from the nearest ones.  Checked through products with the
 * reference GEMM, as A and as B. */
static void colq_old(const float *z, int R, int C, int Rp, int blk, const quant_spec *sp, int8_t *q,
		     float *sc)
{
	float *t = calloc((size_t)C * Rp + 1, sizeof(float));
	for (int r = 0; r < R; r++)
		for (int c = 0; c < C; c++)
			t[(size_t)c * Rp + r] = z[(size_t)r * C + c];
	if (blk > 1)
		fwht_rows_ref(t, C, Rp, blk);
	quant_rows(t, C, Rp, sp, NULL, q, sc);
	free(t);
}

START_TEST(test_column_path)
{
	hdqt_rng r;
	hdqt_rng_seed(&r, 77, 0);
	/* R, C, Rp, blk */
	const int shapes[][4] = {{128, 166, 128, 128}, {122, 37, 128, 128}, {64, 512, 64, 64},
				 {12, 48, 12, 4}, {7, 20, 7, 1}, {5, 16, 8, 8}};
	const char *kern[] = {"scalar", "avx2", "avx512vnni", "portable", "neon", "dotprod"};
	const int J2 = 21;
	for (size_t sh = 0; sh < sizeof(shapes) / sizeof(shapes[0]); sh++) {
		const int R = shapes[sh][0], C = shapes[sh][1], Rp = shapes[sh][2], blk = shapes[sh][3];
		float *z = malloc(sizeof(float) * (size_t)R * C);
		for (int i = 0; i < R * C; i++)
			z[i] = hdqt_rng_normal(&r) * (i % 7 == 0 ? 4.0f : 1.0f);
		int8_t *qo = malloc((size_t)C * Rp), *other = malloc((size_t)J2 * Rp);
		float *so = malloc(sizeof(float) * C), *sn = malloc(sizeof(float) * C);
		int32_t *c_ref = malloc(sizeof(int32_t) * (size_t)C * J2), *c_new = malloc(sizeof(int32_t) * (size_t)C * J2);
		float *y_st[2] = {malloc(sizeof(float) * (size_t)C * J2), malloc(sizeof(float) * (size_t)C * J2)};
		float *y_ref = malloc(sizeof(float) * (size_t)C * J2), *y_new = malloc(sizeof(float) * (size_t)C * J2);
		float sbo[J2];
		for (int j = 0; j < J2; j++)
			sbo[j] = 0.25f + hdqt_rng_uniform(&r);
		for (int i = 0; i < J2 * Rp; i++)
			other[i] = (int8_t)((int)hdqt_rng_below(&r, 15) - 7);
		for (int per_row = 0; per_row <= 1; per_row++) {
			quant_spec sp = {.bits = 4, .clip = 1.0f, .per_row = per_row};
			colq_old(z, R, C, Rp, blk, &sp, qo, so);
			/* the forward's tile and the backward's, in turn (tiles in
			 * lanes for both where the shape lets them) */
			gemm_params gp = {.tile = (sh + (size_t)per_row) & 1 ? 32 : 8, .acc_bits = 8, .bits = 4,
					  .a_signed = 1};
			for (size_t kn = 0; kn < sizeof(kern) / sizeof(kern[0]); kn++) {
				if (hdqt_kernel_select(kern[kn]) != 0)
					continue;
				for (int th = 1; th <= 3; th++) {
					pool *p = NULL;
					ck_assert_int_eq(pool_new(&p, th), 0);
					linear_scratch s;
					memset(&s, 0, sizeof(s));
					s.pool = p;
					/* as B: other (J2 x Rp) . B^T */
					gemm_packed pb = {0};
					ck_assert_int_eq(linear_colq_b(&s, z, R, C, Rp, blk, &sp, &r, &gp, &pb, sn), 0);
					ck_assert_mem_eq(sn, so, sizeof(float) * C);
					ck_assert_int_eq(gemm_q_ref(other, qo, J2, C, Rp, &gp, c_ref), 0);
					gemm_ws ws = {0};
					ck_assert_int_eq(gemm_q_packed(&ws, other, J2, &pb, c_new), 0);
					ck_assert_mem_eq(c_new, c_ref, sizeof(int32_t) * (size_t)J2 * C);
					/* as A: A . other^T */
					gemm_packed po = {0};
					ck_assert_int_eq(gemm_pack(&po, other, J2, Rp, &gp), 0);
					void *A;
					memset(sn, 0, sizeof(float) * C);
					ck_assert_int_eq(linear_colq_a(&s, z, R, C, Rp, blk, &sp, &r, &po, &A, sn), 0);
					ck_assert_mem_eq(sn, so, sizeof(float) * C);
					ck_assert_int_eq(gemm_q_ref(qo, other, C, J2, Rp, &gp, c_ref), 0);
					rescale_naive(c_ref, C, J2, so, sbo, 1.0f / (float)blk, y_ref);
					ck_assert_int_eq(linear_gemm_apacked_par(&s, A, C, &po, sn, sbo, (float)blk, y_new), 0);
					ck_assert_mem_eq(y_new, y_ref, sizeof(float) * (size_t)C * J2);
					/* stochastic: one seed, any thread count, the same codes */
					quant_spec ss = sp;
					ss.stochastic = 1;
					hdqt_rng r2;
					hdqt_rng_seed(&r2, 99, 0);
					ck_assert_int_eq(linear_colq_a(&s, z, R, C, Rp, blk, &ss, &r2, &po, &A, sn), 0);
					ck_assert_int_eq(linear_gemm_apacked_par(&s, A, C, &po, sn, sbo, (float)blk, y_new), 0);
					if (th == 1 && kn == 0)
						memcpy(y_st[per_row], y_new, sizeof(float) * (size_t)C * J2);
					else
						ck_assert_mem_eq(y_new, y_st[per_row], sizeof(float) * (size_t)C * J2);
					ck_assert(memcmp(y_new, y_ref, sizeof(float) * (size_t)C * J2) != 0);
					gemm_ws_free(&ws);
					gemm_packed_free(&pb);
					gemm_packed_free(&po);
					linear_scratch_free(&s);
					pool_free(p);
				}
			}
		}
		free(z), free(qo), free(other), free(so), free(sn), free(c_ref), free(c_new);
		free(y_st[0]), free(y_st[1]), free(y_ref), free(y_new);
	}
	hdqt_kernel_select(variants[0]);
}
END_TEST

/* quant_strip16 and its statistics: the AVX-512 paths and, under the
 * avx2 cap (lib/simd.h: a box without AVX-512), the AVX2 ones (where the
 * CPU has them) give the portable loops' codes and maxima, nearest and
 * stochastic, signed and unsigned grids, odd row counts, values off the
 * grid, a NaN. */
START_TEST(test_strip16_simd_matches_portable)
{
	const int cap0 = simd_cap();
	for (int cap = SIMD_AVX512; cap >= SIMD_AVX2; cap--) {
		ck_assert_int_eq(simd_cap_select(cap), 0);
		hdqt_rng r;
		hdqt_rng_seed(&r, 61, 0);
		enum { ROWS = 37 };
		static float x[ROWS * 16];
		static int8_t q1[ROWS * 16], q2[ROWS * 16];
		for (int i = 0; i < ROWS * 16; i++)
			x[i] = 3.0f * hdqt_rng_normal(&r);
		x[5 * 16 + 3] = NAN;
		float step[16], m1[16], m2[16];
		for (int l = 0; l < 16; l++)
			step[l] = 0.2f + 0.05f * (float)l;
		for (int var = 0; var < 8; var++) { /* unsigned 8-bit: codes to 255 */
			quant_spec sp = {.bits = var & 2 ? 8 : 4, .clip = 1.0f, .per_row = 1, .stochastic = var & 1,
					 .is_unsigned = (var & 4) != 0};
			float st[16]; /* at 8 bits, steps that take the codes past 127 */
			for (int l = 0; l < 16; l++)
				st[l] = sp.bits == 8 ? 0.05f * step[l] : step[l];
			quant_strip16_impl(x, ROWS, st, &sp, 5, 3, q1, 1);
			quant_strip16_impl(x, ROWS, st, &sp, 5, 3, q2, 0);
			ck_assert_mem_eq(q1, q2, sizeof(q1));
		}
		/* rows: 16 generators, 32 elements a draw, any tail */
		for (int n = 1; n <= ROWS * 16; n += 97)
			for (int var = 0; var < 4; var++) {
				quant_spec sp = {.bits = var & 2 ? 8 : 4, .clip = 1.0f, .stochastic = 1,
						 .is_unsigned = var & 1};
				memset(q1, 0, sizeof(q1));
				memset(q2, 0, sizeof(q2));
				const float st = sp.bits == 8 ? 0.02f : 0.3f;
				quant_row16_impl(x, n, st, &sp, 8, 2, q1, 1);
				quant_row16_impl(x, n, st, &sp, 8, 2, q2, 0);
				ck_assert_mem_eq(q1, q2, sizeof(q1));
			}
		double s1[16], s2[16];
		quant_strip16_stats_impl(x, ROWS, m1, s1, 1);
		quant_strip16_stats_impl(x, ROWS, m2, s2, 0);
		ck_assert_mem_eq(m1, m2, sizeof(m1));
		ck_assert_mem_eq(s1, s2, sizeof(s1));
		ck_assert(m1[0] > 0.0f && m1[3] == m1[3]); /* the NaN is skipped */
	}
	simd_cap_select(cap0);
}
END_TEST

/* Stochastic rounding at the grid's edges: an input at +-range (the
 * group's max-abs element under per-row scales) stays inside [qmin, qmax]
 * and a zero stays zero, for every draw, at 4 and 8 bits, on the strips and
 * on the rows.  With 16-bit uniforms two draws in 65536 rounded the sum up
 * to the next integer: qmax + 1 (a wrap to -128 at 8 bits) and 1 from 0. */
START_TEST(test_stochastic_grid_edges)
{
	enum { ROWS = 64 };
	static float x[ROWS * 16];
	static int8_t q[ROWS * 16];
	for (int bits = 4; bits <= 8; bits += 4) {
		const int qm = (1 << (bits - 1)) - 1;
		quant_spec sp = {.bits = bits, .clip = 1.0f, .per_row = 1, .stochastic = 1};
		float step[16];
		for (int l = 0; l < 16; l++) {
			step[l] = 0.25f + 0.01f * (float)l;
			for (int rr = 0; rr < ROWS; rr++) /* +range, -range, zero in turn */
				x[rr * 16 + l] = rr % 3 == 0 ? (float)qm * step[l] : (rr % 3 == 1 ? -(float)qm * step[l] : 0.0f);
		}
		const int cap0 = simd_cap();
		long bad = 0;
		/* simd 0: the portable loops; 1: AVX-512 (or NEON); 2: AVX2 (the cap) */
		for (int st = 0; st < 600; st++)
			for (int simd = 0; simd <= 2; simd++) {
				simd_cap_select(simd == 2 ? SIMD_AVX2 : cap0);
				quant_strip16_impl(x, ROWS, step, &sp, 77, (uint64_t)st, q, simd);
				for (int i = 0; i < ROWS * 16; i++) {
					const int rr = i / 16, want = rr % 3 == 0 ? qm : (rr % 3 == 1 ? -qm : 0);
					bad += q[i] != want;
				}
				/* a row: 16 generators, 32 elements a draw */
				quant_row16_impl(x, ROWS * 16, step[0], &sp, 78, (uint64_t)st, q, simd);
				for (int i = 0; i < ROWS * 16; i++) {
					const int rr = i / 16;
					const float v = x[i] / step[0];
					if (rr % 3 == 2)
						bad += q[i] != 0;
					else
						bad += q[i] < -qm || q[i] > qm || (v > 0) != (q[i] > 0);
				}
			}
		simd_cap_select(cap0);
		ck_assert_msg(bad == 0, "%ld codes off the grid or zeros moved at %d bits", bad, bits);
	}
}
END_TEST

/* quant_strip16's stochastic rounding is unbiased per column: the mean
 * code over many streams is the value over the step. */
START_TEST(test_strip16_unbiased)
{
	enum { ROWS = 64 };
	static float x[ROWS * 16];
	static int8_t q[ROWS * 16];
	float step[16];
	for (int l = 0; l < 16; l++) {
		step[l] = 0.5f + 0.1f * (float)l;
		for (int rr = 0; rr < ROWS; rr++)
			x[rr * 16 + l] = step[l] * (-3.0f + 0.37f * (float)l); /* 0.37 l off the grid */
	}
	quant_spec sp = {.bits = 4, .clip = 1.0f, .per_row = 1, .stochastic = 1};
	double sum[16] = {0};
	const int S = 400;
	for (int st = 0; st < S; st++) {
		quant_strip16(x, ROWS, step, &sp, 1234, (uint64_t)st, q);
		for (int rr = 0; rr < ROWS; rr++)
			for (int l = 0; l < 16; l++)
				sum[l] += q[rr * 16 + l];
	}
	for (int l = 0; l < 16; l++) {
		const double want = -3.0 + 0.37 * l, got = sum[l] / (S * ROWS);
		ck_assert_msg(fabs(got - want) < 0.02, "column %d: mean %f, want %f", l, got, want);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("gemm");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_ref_matches_naive_random_shapes);
	tcase_add_test(tc, test_clamp_triggers);
	tcase_add_test(tc, test_overflow_rejected);
	tcase_add_test(tc, test_simd_matches_reference);
	tcase_add_test(tc, test_isa_cap_in_force);
#if HDQT_X86_64
	tcase_add_test(tc, test_pack_b16_x86);
	tcase_add_test(tc, test_pack_tl_avx512);
	tcase_add_test(tc, test_tl_edges_and_kernel_switch);
	tcase_add_test(tc, test_tl8_default_and_both);
	tcase_add_test(tc, test_avx2_n16_bounds);
	tcase_add_test(tc, test_avx2_r4_rows_and_bounds);
	tcase_add_test(tc, test_pack_tl_strips_vbmi);
	tcase_add_test(tc, test_pack_strips_x86);
#endif
	tcase_add_test(tc, test_variants_model_and_tile_shapes);
	tcase_add_test(tc, test_repro_across_architectures);
#if HDQT_AARCH64
	tcase_add_test(tc, test_simd_arm_passes);
#endif
	tcase_add_test(tc, test_f32_gemm);
	tcase_add_test(tc, test_transpose);
	tcase_add_test(tc, test_transpose_ld);
	tcase_add_test(tc, test_column_path);
	tcase_add_test(tc, test_strip16_unbiased);
	tcase_add_test(tc, test_strip16_simd_matches_portable);
	tcase_add_test(tc, test_stochastic_grid_edges);
	suite_add_tcase(s, tc);
	return testutil_run(s);
}
