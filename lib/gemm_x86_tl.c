/* SPDX-License-Identifier: MIT */
/*
 * The tiles-in-lanes layout (gemm.c's LAYOUT_TL) and its AVX-512 VNNI
 * kernel: products with 8-bit tile accumulators and tiles of G groups of
 * 4 bytes: G = 2 (8 k, the forward of the hdqt recipe) and G = 8 (32 k,
 * its backward).
 *
 * Why: in the column layout every tile sum of 16 columns needs its own
 * clamp (packs, max, min, add on 32 columns), which for tiles of 8 is as
 * many operations as products: half the dot-product peak at best.  Here a
 * register holds four tiles of four columns instead: in each 128-bit lane
 * L of register R, dword t is tile t of column 4L + R.  The clamp of an
 * 8-bit accumulator is signed saturation to int8, so two packs to 16 bits
 * and one to 8 bits clamp 64 tile sums at once and leave, in lane L, the
 * bytes [R0 t0..3, R1 t0..3, R2 t0..3, R3 t0..3]; a dot product with ones
 * adds each column's four clamped tiles into dword 4L + R: column order,
 * no shuffle.  Four operations per 64 tile sums instead of eight per 64:
 * for G = 2 eight products in twelve operations (two thirds of the peak)
 * instead of one half; for G = 8 32 in 36 (eight ninths) instead of 32 in
 * 40 (four fifths: the column layout clamps 32 columns by packs, max, min
 * and add, two operations per tile of 16 columns).
 *
 * A quad is 4 tiles, 16 G bytes of k.  K4 is padded to whole tiles with
 * zeros (a zero tile adds clamp(0) = 0), not to whole quads: the one to
 * three tiles past the last whole quad (the tail) keep the column layout,
 * a dword per column, clamped by max and min and added: G + 3 operations
 * per tile of 16 columns where a quad padded with zero tiles costs 4 G +
 * 4 (K = 166 with tiles of 8: 21 tiles, five quads and one tile, where
 * padding to six quads made 26 of every 192 products zero).
 *   A row: per quad [g][t][4 bytes]  (k = 16 G q + 4 G t + 4 g + kk),
 *          then the tail in k order
 *   B block of 16 columns: per quad [g][R][L][t][4 bytes] (256 G bytes),
 *          then the tail's groups [column][4 bytes] (64 bytes each)
 *   corr: per quad [R][L][t], then the tail's [t][column]: -off * the
 *          tile's sum of B.
 * Results equal gemm_q_ref bit for bit (the saturations are exact clamps,
 * every sum is an exact integer).
 */
#include "config.h"

#if HDQT_X86_64
#include <immintrin.h>

#include <string.h>

#include "gemm.h"
#include "gemm_x86_impl.h"

/* The dot product in asm: for the intrinsic GCC 12 moved the wide sums
 * into another register and back around every product of a quad (8
 * register copies per quad, on the vector ports the 48 operations need):
 * 0.92 of this one's speed (tlb harness, best of 15, 128 x 512 x 512).
 * The corr start values stay plain loads: GCC loads each once and copies
 * it to the rows' accumulators, which measured faster than a fresh load
 * per accumulator (volatile asm, 0.83 of this). */
AVX512_T static inline __attribute__((always_inline)) __m512i dpb(__m512i acc, __m512i a, __m512i b)
{
	__asm__("vpdpbusd {%2, %1, %0|%0, %1, %2}" : "+v"(acc) : "v"(a), "v"(b));
	return acc;
}

/* nr rows from i against one block of 16 columns: KQ quads, then NT tail
 * tiles.  Inlined with constant nr and G, everything lives in registers:
 * 4 nr tile accumulators, nr wide sums, nr broadcast operands and one B
 * vector (30 of 32 at nr = 4). */
AVX512_T static inline __attribute__((always_inline)) int
tl_rows(const uint8_t *Ap, size_t rs, const int8_t *bb, const int32_t *cr, int I, int J, int jb,
	int KQ, int NT, int nr, int G, __mmask16 m, int32_t *C, const gemm_rescale *e, float *Y, int i)
{
	const __m512i ones = _mm512_set1_epi8(1);
	const __m512i lo8 = _mm512_set1_epi32(-128), hi8 = _mm512_set1_epi32(127);
	for (; i + nr <= I; i += nr) {
		const uint8_t *a = Ap + (size_t)i * rs;
		__m512i w[4];
#pragma GCC unroll 4
		for (int r = 0; r < nr; r++)
			w[r] = _mm512_setzero_si512();
		for (int q = 0; q < KQ; q++) {
			const int8_t *b = bb + (size_t)q * 256 * G;
			const int32_t *c = cr + (size_t)q * 64;
			__m512i s[4][4];
#pragma GCC unroll 4
			for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
				for (int R = 0; R < 4; R++)
					s[r][R] = _mm512_loadu_si512((const void *)(c + 16 * R));
#pragma GCC unroll 8
			for (int g = 0; g < G; g++) {
				__m512i x[4];
#pragma GCC unroll 4
				for (int r = 0; r < nr; r++)
					x[r] = _mm512_broadcast_i32x4(_mm_loadu_si128(
						(const __m128i *)(a + (size_t)r * rs + (size_t)q * 16 * G + g * 16)));
#pragma GCC unroll 4
				for (int R = 0; R < 4; R++) {
					const __m512i bv = _mm512_loadu_si512((const void *)(b + g * 256 + R * 64));
#pragma GCC unroll 4
					for (int r = 0; r < nr; r++)
						s[r][R] = dpb(s[r][R], x[r], bv);
				}
			}
#pragma GCC unroll 4
			for (int r = 0; r < nr; r++) {
				const __m512i x8 = _mm512_packs_epi16(_mm512_packs_epi32(s[r][0], s[r][1]),
								      _mm512_packs_epi32(s[r][2], s[r][3]));
				w[r] = dpb(w[r], ones, x8);
			}
		}
		/* the tail: a dword per column, as the column layout */
		for (int t = 0; t < NT; t++) {
			const int8_t *b = bb + (size_t)KQ * 256 * G + (size_t)t * 64 * G;
			const uint8_t *at = a + (size_t)KQ * 16 * G + (size_t)t * 4 * G;
			__m512i s[4];
			const __m512i c = _mm512_loadu_si512((const void *)(cr + (size_t)KQ * 64 + 16 * t));
#pragma GCC unroll 4
			for (int r = 0; r < nr; r++)
				s[r] = c;
#pragma GCC unroll 8
			for (int g = 0; g < G; g++) {
				const __m512i bv = _mm512_loadu_si512((const void *)(b + g * 64));
#pragma GCC unroll 4
				for (int r = 0; r < nr; r++) {
					int32_t x;
					memcpy(&x, at + (size_t)r * rs + 4 * g, 4);
					s[r] = dpb(s[r], _mm512_set1_epi32(x), bv);
				}
			}
#pragma GCC unroll 4
			for (int r = 0; r < nr; r++)
				w[r] = _mm512_add_epi32(w[r], _mm512_min_epi32(_mm512_max_epi32(s[r], lo8), hi8));
		}
#pragma GCC unroll 4
		for (int r = 0; r < nr; r++)
			store16(w[r], m, C, e, Y, i + r, J, jb * 16);
	}
	return i;
}

AVX512_T static inline __attribute__((always_inline)) void
tl_run(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J, int K4, int ntiles,
       int G, int32_t *C, const gemm_rescale *e, float *Y)
{
	const int KQ = K4 / (4 * G), NT = ntiles - 4 * KQ, J16 = (J + 15) / 16;
	const size_t rs = (size_t)K4 * 4;
	for (int jb = 0; jb < J16; jb++) {
		const int ncol = J - jb * 16 < 16 ? J - jb * 16 : 16;
		const __mmask16 m = (__mmask16)((1u << ncol) - 1u);
		const int8_t *bb = Bp + (size_t)jb * K4 * 64;
		const int32_t *cr = corr + (size_t)jb * ntiles * 16;
		int i = tl_rows(Ap, rs, bb, cr, I, J, jb, KQ, NT, 4, G, m, C, e, Y, 0);
		i = tl_rows(Ap, rs, bb, cr, I, J, jb, KQ, NT, 2, G, m, C, e, Y, i);
		tl_rows(Ap, rs, bb, cr, I, J, jb, KQ, NT, 1, G, m, C, e, Y, i);
	}
	_mm256_zeroupper(); /* see avx512vnni_run */
}

/* One instance per G, so that each is unrolled with its constant. */
AVX512_T static void tl_run2(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,
			     int K4, int ntiles, int32_t *C, const gemm_rescale *e, float *Y)
{
	tl_run(Ap, Bp, corr, I, J, K4, ntiles, 2, C, e, Y);
}

AVX512_T static void tl_run8(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,
			     int K4, int ntiles, int32_t *C, const gemm_rescale *e, float *Y)
{
	tl_run(Ap, Bp, corr, I, J, K4, ntiles, 8, C, e, Y);
}

/* The layout's two entry points (gemm_kern_fn and gemm_kern_f_fn): tile4
 * (G) is 2 or 8 and the bounds those of 8-bit accumulators (gemm.c's
 * kernel_layout checks both). */
AVX512_T void gemm_x86_tl(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,
			  int K4, int tile4, int ntiles, int32_t lo, int32_t hi, int32_t *C)
{
	(void)lo, (void)hi;
	(tile4 == 8 ? tl_run8 : tl_run2)(Ap, Bp, corr, I, J, K4, ntiles, C, NULL, NULL);
}

AVX512_T void gemm_x86_tl_f(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,
			    int K4, int tile4, int ntiles, int32_t lo, int32_t hi,
			    const gemm_rescale *e, float *Y)
{
	(void)lo, (void)hi;
	(tile4 == 8 ? tl_run8 : tl_run2)(Ap, Bp, corr, I, J, K4, ntiles, NULL, e, Y);
}

/* Within a quad of 4 G dwords, dword 4g + t of the layout holds dword
 * G t + g of the row (a_at in gemm.c).  The index of permutex2var over
 * 128 bytes for output dwords [16 h, 16 h + 16): for G = 2 two quads per
 * 64 bytes (h = 0, the high half repeats it 8 dwords on), for G = 8 one
 * quad per 128. */
AVX512_T static inline __attribute__((always_inline)) __m512i tl_idx(int G, int h)
{
	int32_t v[16];
	for (int o = 0; o < 16; o++) {
		const int d = 16 * h + o, qd = 4 * G, base = d / qd * qd, r = d % qd;
		v[o] = base + (r % 4) * G + r / 4;
	}
	return _mm512_loadu_si512((const void *)v);
}

/* Bytes [a, b) of 64 as a mask (a, b may lie outside 0..64). */
static inline __mmask64 bytes_mask(int a, int b)
{
	const __mmask64 mb = b >= 64 ? ~(__mmask64)0 : (b > 0 ? ((__mmask64)1 << b) - 1 : 0);
	const __mmask64 ma = a >= 64 ? ~(__mmask64)0 : (a > 0 ? ((__mmask64)1 << a) - 1 : 0);
	return mb & ~ma;
}

/* nb <= 128 bytes of one row in natural k order (lo, hi) into the layout:
 * those below qb (a whole number of quads from d) permuted into the quads,
 * those from qb on, the tail, as they are. */
AVX512_T static inline __attribute__((always_inline)) void
tl_store128(uint8_t *d, int nb, int qb, __m512i lo, __m512i hi, __m512i i0, __m512i i1)
{
	const int nq = nb < qb ? nb : qb;
	if (nq > 0) {
		_mm512_mask_storeu_epi8(d, bytes_mask(0, nq), _mm512_permutex2var_epi32(lo, i0, hi));
		if (nq > 64)
			_mm512_mask_storeu_epi8(d + 64, bytes_mask(0, nq - 64),
						_mm512_permutex2var_epi32(lo, i1, hi));
	}
	if (nb > nq) {
		_mm512_mask_storeu_epi8(d, bytes_mask(nq, nb), lo);
		if (nb > 64)
			_mm512_mask_storeu_epi8(d + 64, bytes_mask(nq - 64, nb - 64), hi);
	}
}

/* 64 bytes of a row of K codes from k0, + off below K and zero after (no
 * pointer formed past the row). */
AVX512_T static inline __attribute__((always_inline)) __m512i load_off(const int8_t *row, int k0,
									int K, __m512i voff)
{
	const int n = K - k0;
	if (n <= 0)
		return _mm512_setzero_si512();
	const __mmask64 km = n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1);
	return _mm512_maskz_add_epi8(km, _mm512_maskz_loadu_epi8(km, row + k0), voff);
}

/* Rows of A into the layout: A + off below K, zero after, 128 bytes at a
 * time (the quads end on a multiple of 32 bytes for G = 2, of 128 for
 * G = 8, so a batch of 128 never splits one). */
AVX512_T void gemm_x86_tl_pack_a(const int8_t *A, int I, int K, int K4, int tile4, int off,
				 uint8_t *Ap)
{
	const __m512i i0 = tl_idx(tile4, 0), i1 = tl_idx(tile4, 1);
	const __m512i voff = _mm512_set1_epi8((char)off);
	const int rs = K4 * 4, qb = K4 / (4 * tile4) * 16 * tile4;
	for (int i = 0; i < I; i++) {
		const int8_t *s = A + (size_t)i * K;
		uint8_t *d = Ap + (size_t)i * rs;
		for (int k0 = 0; k0 < rs; k0 += 128)
			tl_store128(d + k0, rs - k0 < 128 ? rs - k0 : 128, qb - k0, load_off(s, k0, K, voff),
				    load_off(s, k0 + 64, K, voff), i0, i1);
	}
	_mm256_zeroupper();
}

/* Four registers' dwords transposed within each 128-bit lane: dword R of
 * x[t] becomes dword t of x[R]. */
AVX512_T static inline __attribute__((always_inline)) void tr4_lanes(__m512i x[4])
{
	const __m512i u0 = _mm512_unpacklo_epi32(x[0], x[1]), u1 = _mm512_unpackhi_epi32(x[0], x[1]);
	const __m512i u2 = _mm512_unpacklo_epi32(x[2], x[3]), u3 = _mm512_unpackhi_epi32(x[2], x[3]);
	x[0] = _mm512_unpacklo_epi64(u0, u2);
	x[1] = _mm512_unpackhi_epi64(u0, u2);
	x[2] = _mm512_unpacklo_epi64(u1, u3);
	x[3] = _mm512_unpackhi_epi64(u1, u3);
}

/* One step g of a quad: its four tiles' groups x[t] (dword l = column l)
 * transposed within lanes into the layout's registers R at d, their bytes
 * added into the quad's tile sums. */
AVX512_T static inline __attribute__((always_inline)) void tl_put_step(__m512i x[4], int8_t *d,
									__m512i sum[4])
{
	const __m512i ones = _mm512_set1_epi8(1);
	tr4_lanes(x);
	for (int R = 0; R < 4; R++) {
		_mm512_storeu_si512((void *)(d + R * 64), x[R]);
		sum[R] = _mm512_dpbusd_epi32(sum[R], ones, x[R]);
	}
}

/* A quad's corr, [R][L][t]: -off times its tile sums. */
AVX512_T static inline __attribute__((always_inline)) void tl_put_corr(int32_t *c, const __m512i sum[4],
									int off)
{
	const __m512i moff = _mm512_set1_epi32(-off);
	for (int R = 0; R < 4; R++)
		_mm512_storeu_si512((void *)(c + R * 16), _mm512_mullo_epi32(sum[R], moff));
}

/* Group k4 of the tail (x: dword l = column l) into the B block at tail
 * group tg, its bytes added into its tile's sums. */
AVX512_T static inline __attribute__((always_inline)) void tl_put_tail(__m512i x, int8_t *bb,
									int tg, __m512i *sum)
{
	_mm512_storeu_si512((void *)(bb + (size_t)tg * 64), x);
	*sum = _mm512_dpbusd_epi32(*sum, _mm512_set1_epi8(1), x);
}

/* Tail tile t's corr (after the nq quads' [R][L][t]): -off times its
 * sums, a dword per column. */
AVX512_T static inline __attribute__((always_inline)) void tl_put_tail_corr(int32_t *cr, int nq,
									     int t, __m512i tsum,
									     int off)
{
	_mm512_storeu_si512((void *)(cr + (size_t)nq * 64 + 16 * t),
			    _mm512_mullo_epi32(tsum, _mm512_set1_epi32(-off)));
}

AVX512_T static void tl_pack_b16_g8(const int8_t *rows, int nr, int K, int K4, int off,
				    int8_t *bb, int32_t *cr);

/* One block of 16 output columns from nr <= 16 rows of K codes: the 16 x
 * 16 transpose of gemm_x86_pack_b16 leaves group k4 of the 16 columns in
 * r[k4] (dword l = column l); for each quad and g, the groups of its four
 * tiles (for G = 2, r[8h + 2t + g]) transposed within lanes give the four
 * registers R of the layout.  The tile sums: a dot product with ones per
 * register and g. */
AVX512_T void gemm_x86_tl_pack_b16(const int8_t *rows, int nr, int K, int K4, int tile4, int off,
				   int8_t *bb, int32_t *cr)
{
	if (tile4 == 8) {
		tl_pack_b16_g8(rows, nr, K, K4, off, bb, cr);
		return;
	}
	const int nq = K4 / 8;
	__m512i tsum = _mm512_setzero_si512(); /* the tail tile's sums */
	for (int g0 = 0; g0 < K4; g0 += 16) {
		const int nb = K - 4 * g0 >= 64 ? 64 : (K - 4 * g0 > 0 ? K - 4 * g0 : 0);
		const __mmask64 lm = nb == 64 ? ~(__mmask64)0 : (((__mmask64)1 << nb) - 1);
		__m512i r[16];
		for (int l = 0; l < 16; l++)
			r[l] = l < nr && nb ? _mm512_maskz_loadu_epi8(lm, rows + (size_t)l * K + 4 * g0)
					    : _mm512_setzero_si512();
		tr16_epi32(r);
		for (int h = 0; h < 2 && g0 + 8 * h < K4; h++) {
			const int q = g0 / 8 + h;
			if (q >= nq) { /* the tail: tiles of 2 groups */
				for (int k4 = g0 + 8 * h; k4 < K4 && k4 < g0 + 8 * h + 8; k4++) {
					const int tg = k4 - 8 * nq;
					tl_put_tail(r[k4 - g0], bb + (size_t)nq * 512, tg, &tsum);
					if (tg % 2 == 1) {
						tl_put_tail_corr(cr, nq, tg / 2, tsum, off);
						tsum = _mm512_setzero_si512();
					}
				}
				continue;
			}
			__m512i sum[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(),
					  _mm512_setzero_si512(), _mm512_setzero_si512()};
			for (int g = 0; g < 2; g++) {
				__m512i x[4] = {r[8 * h + g], r[8 * h + 2 + g], r[8 * h + 4 + g], r[8 * h + 6 + g]};
				tl_put_step(x, bb + (size_t)q * 512 + g * 256, sum);
			}
			tl_put_corr(cr + (size_t)q * 64, sum, off);
		}
	}
	_mm256_zeroupper();
}

/* G = 8: a quad is 32 groups, two transposes of 16; tile t, step g is
 * group 8 t + g of the quad: register 8 (t % 2) + g of transpose t / 2. */
AVX512_T static void tl_pack_b16_g8(const int8_t *rows, int nr, int K, int K4, int off,
				    int8_t *bb, int32_t *cr)
{
	const int nq = K4 / 32;
	for (int q = 0; q < nq; q++) {
		__m512i r[2][16];
		for (int h = 0; h < 2; h++) {
			const int k0 = 128 * q + 64 * h;
			const int nb = K - k0 >= 64 ? 64 : (K - k0 > 0 ? K - k0 : 0);
			const __mmask64 lm = nb == 64 ? ~(__mmask64)0 : (((__mmask64)1 << nb) - 1);
			for (int l = 0; l < 16; l++)
				r[h][l] = l < nr && nb ? _mm512_maskz_loadu_epi8(lm, rows + (size_t)l * K + k0)
						       : _mm512_setzero_si512();
			tr16_epi32(r[h]);
		}
		__m512i sum[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(),
				  _mm512_setzero_si512(), _mm512_setzero_si512()};
		for (int g = 0; g < 8; g++) {
			__m512i x[4] = {r[0][g], r[0][8 + g], r[1][g], r[1][8 + g]};
			tl_put_step(x, bb + (size_t)q * 2048 + g * 256, sum);
		}
		tl_put_corr(cr + (size_t)q * 64, sum, off);
	}
	/* the tail, two tiles (16 groups) at a time */
	for (int g0 = 32 * nq; g0 < K4; g0 += 16) {
		const int k0 = 4 * g0;
		const int nb = K - k0 >= 64 ? 64 : (K - k0 > 0 ? K - k0 : 0);
		const __mmask64 lm = nb == 64 ? ~(__mmask64)0 : (((__mmask64)1 << nb) - 1);
		__m512i r[16];
		for (int l = 0; l < 16; l++)
			r[l] = l < nr && nb ? _mm512_maskz_loadu_epi8(lm, rows + (size_t)l * K + k0)
					    : _mm512_setzero_si512();
		tr16_epi32(r);
		for (int h = 0; h < 2 && g0 + 8 * h < K4; h++) {
			const int t = (g0 - 32 * nq) / 8 + h;
			__m512i tsum = _mm512_setzero_si512();
			for (int g = 0; g < 8; g++)
				tl_put_tail(r[8 * h + g], bb + (size_t)nq * 2048, 8 * t + g, &tsum);
			tl_put_tail_corr(cr, nq, t, tsum, off);
		}
	}
	_mm256_zeroupper();
}

/* gemm_pack_strip's block from a strip (codes[k * 16 + l], zero from K
 * on, (K + 3) / 4 groups of 64 bytes; K4 is the padded count): group k4 as
 * [l][kk] (group16) is dword l = column l, and the four groups of a
 * quad's tiles at step g (k4 = 4 G q + G t + g) transposed within lanes
 * give its registers R, as in gemm_x86_tl_pack_b16. */
VBMI_T void gemm_x86_tl_pack_strip16(const int8_t *codes, int K, int K4, int tile4, int off,
				     int8_t *bb, int32_t *cr)
{
	const int G = tile4, have = (K + 3) / 4, nq = K4 / (4 * G);
	for (int q = 0; q < nq; q++) {
		__m512i sum[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(),
				  _mm512_setzero_si512(), _mm512_setzero_si512()};
		for (int g = 0; g < G; g++) {
			__m512i x[4];
			for (int t = 0; t < 4; t++) {
				const int k4 = 4 * G * q + G * t + g;
				x[t] = k4 < have ? group16(codes + (size_t)k4 * 64) : _mm512_setzero_si512();
			}
			tl_put_step(x, bb + (size_t)q * 256 * G + g * 256, sum);
		}
		tl_put_corr(cr + (size_t)q * 64, sum, off);
	}
	for (int t = 0; 4 * G * nq + G * t < K4; t++) { /* the tail */
		__m512i tsum = _mm512_setzero_si512();
		for (int g = 0; g < G; g++) {
			const int k4 = 4 * G * nq + G * t + g;
			tl_put_tail(k4 < have ? group16(codes + (size_t)k4 * 64) : _mm512_setzero_si512(),
				    bb + (size_t)nq * 256 * G, G * t + g, &tsum);
		}
		tl_put_tail_corr(cr, nq, t, tsum, off);
	}
	_mm256_zeroupper();
}

/* gemm_pack_a_strip's rows from a strip: ni <= 16 rows of rs = K4 * 4
 * bytes.  Two batches of 16 groups transposed (gemm_x86_pack_a_strip16's
 * way) leave 128 bytes of each row, in natural order, in two registers;
 * tl_store128 moves them into the layout. */
VBMI_T void gemm_x86_tl_pack_a_strip16(const int8_t *codes, int ni, int K, int K4, int tile4,
				       int off, uint8_t *a, size_t rs)
{
	const __m512i i0 = tl_idx(tile4, 0), i1 = tl_idx(tile4, 1);
	const __m512i voff = _mm512_set1_epi8((char)off);
	const int have = (K + 3) / 4, qb = K4 / (4 * tile4) * 16 * tile4;
	for (int g0 = 0; g0 < K4; g0 += 32) {
		__m512i r[2][16];
		for (int h = 0; h < 2; h++) {
			for (int g = 0; g < 16; g++) {
				const int k4 = g0 + 16 * h + g;
				r[h][g] = k4 < have ? group16(codes + (size_t)k4 * 64) : _mm512_setzero_si512();
			}
			tr16_epi32(r[h]);
		}
		const int k0 = 4 * g0, nb = (int)rs - k0 < 128 ? (int)rs - k0 : 128;
		for (int h = 0; h < 2; h++) {
			const int nk = K - k0 - 64 * h;
			const __mmask64 km = nk >= 64 ? ~(__mmask64)0 : (nk > 0 ? ((__mmask64)1 << nk) - 1 : 0);
			for (int l = 0; l < ni; l++)
				r[h][l] = _mm512_maskz_add_epi8(km, r[h][l], voff);
		}
		for (int l = 0; l < ni; l++)
			tl_store128(a + (size_t)l * rs + k0, nb, qb - k0, r[0][l], r[1][l], i0, i1);
	}
	_mm256_zeroupper();
}
#endif /* HDQT_X86_64 */
