/* SPDX-License-Identifier: MIT */
/*
 * The tiles-in-lanes layout (gemm.c's LAYOUT_TL) and its AVX-512 VNNI
 * kernel: products with 8-bit tile accumulators and tiles of G = 2 groups
 * of 4 bytes (8 k, the forward of the hdqt recipe).
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
 * eight products in twelve operations (two thirds of the peak) instead of
 * one half.
 *
 * A quad is 4 tiles, 16 G bytes of k; K4 and ntiles are padded to whole
 * quads with zeros (a zero tile adds clamp(0) = 0).
 *   A row: per quad [g][t][4 bytes]  (k = 16 G q + 4 G t + 4 g + kk)
 *   B block of 16 columns: per quad [g][R][L][t][4 bytes] (256 G bytes)
 *   corr: per quad [R][L][t], -off * the tile's sum of B.
 * Results equal gemm_q_ref bit for bit (the saturations are exact clamps,
 * every sum is an exact integer).
 */
#include "config.h"

#if HDQT_X86_64
#include <immintrin.h>

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

/* nr rows from i against one block of 16 columns, G = 2.  Inlined with a
 * constant nr, everything lives in registers: 4 nr tile accumulators, nr
 * wide sums, nr broadcast operands and one B vector (30 of 32 at nr = 4). */
AVX512_T static inline __attribute__((always_inline)) int
tl_rows(const uint8_t *Ap, size_t rs, const int8_t *bb, const int32_t *cr, int I, int J, int jb,
	int KQ, int nr, __mmask16 m, int32_t *C, const gemm_rescale *e, float *Y, int i)
{
	const __m512i ones = _mm512_set1_epi8(1);
	for (; i + nr <= I; i += nr) {
		const uint8_t *a = Ap + (size_t)i * rs;
		__m512i w[4];
#pragma GCC unroll 4
		for (int r = 0; r < nr; r++)
			w[r] = _mm512_setzero_si512();
		for (int q = 0; q < KQ; q++) {
			const int8_t *b = bb + (size_t)q * 512;
			const int32_t *c = cr + (size_t)q * 64;
			__m512i s[4][4];
#pragma GCC unroll 4
			for (int r = 0; r < nr; r++)
#pragma GCC unroll 4
				for (int R = 0; R < 4; R++)
					s[r][R] = _mm512_loadu_si512((const void *)(c + 16 * R));
#pragma GCC unroll 2
			for (int g = 0; g < 2; g++) {
				__m512i x[4];
#pragma GCC unroll 4
				for (int r = 0; r < nr; r++)
					x[r] = _mm512_broadcast_i32x4(_mm_loadu_si128(
						(const __m128i *)(a + (size_t)r * rs + (size_t)q * 32 + g * 16)));
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
#pragma GCC unroll 4
		for (int r = 0; r < nr; r++)
			store16(w[r], m, C, e, Y, i + r, J, jb * 16);
	}
	return i;
}

AVX512_T static inline __attribute__((always_inline)) void
tl_run(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J, int K4, int ntiles,
       int32_t *C, const gemm_rescale *e, float *Y)
{
	const int KQ = K4 / 8, J16 = (J + 15) / 16;
	const size_t rs = (size_t)K4 * 4;
	for (int jb = 0; jb < J16; jb++) {
		const int ncol = J - jb * 16 < 16 ? J - jb * 16 : 16;
		const __mmask16 m = (__mmask16)((1u << ncol) - 1u);
		const int8_t *bb = Bp + (size_t)jb * K4 * 64;
		const int32_t *cr = corr + (size_t)jb * ntiles * 16;
		int i = tl_rows(Ap, rs, bb, cr, I, J, jb, KQ, 4, m, C, e, Y, 0);
		i = tl_rows(Ap, rs, bb, cr, I, J, jb, KQ, 2, m, C, e, Y, i);
		tl_rows(Ap, rs, bb, cr, I, J, jb, KQ, 1, m, C, e, Y, i);
	}
	_mm256_zeroupper(); /* see avx512vnni_run */
}

/* The layout's two entry points (gemm_kern_fn and gemm_kern_f_fn): tile4
 * is 2 and the bounds those of 8-bit accumulators (gemm.c checks both). */
AVX512_T void gemm_x86_tl(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,
			  int K4, int tile4, int ntiles, int32_t lo, int32_t hi, int32_t *C)
{
	(void)tile4, (void)lo, (void)hi;
	tl_run(Ap, Bp, corr, I, J, K4, ntiles, C, NULL, NULL);
}

AVX512_T void gemm_x86_tl_f(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,
			    int K4, int tile4, int ntiles, int32_t lo, int32_t hi,
			    const gemm_rescale *e, float *Y)
{
	(void)tile4, (void)lo, (void)hi;
	tl_run(Ap, Bp, corr, I, J, K4, ntiles, NULL, e, Y);
}

/* Rows of A into the layout: A + off below K, zero after; each 64 bytes
 * (two quads) moved by one dword permute, output dword 8h + 4g + t from
 * input dword 8h + 2t + g. */
AVX512_T void gemm_x86_tl_pack_a(const int8_t *A, int I, int K, int K4, int off, uint8_t *Ap)
{
	const __m512i idx = _mm512_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
	const __m512i voff = _mm512_set1_epi8((char)off);
	const int rs = K4 * 4;
	for (int i = 0; i < I; i++) {
		const int8_t *s = A + (size_t)i * K;
		uint8_t *d = Ap + (size_t)i * rs;
		for (int k0 = 0; k0 < rs; k0 += 64) {
			const int nk = K - k0 >= 64 ? 64 : (K - k0 > 0 ? K - k0 : 0);
			const int nb = rs - k0 >= 64 ? 64 : rs - k0; /* a multiple of 32 */
			const __mmask64 km = nk == 64 ? ~(__mmask64)0 : (((__mmask64)1 << nk) - 1);
			const __mmask64 sm = nb == 64 ? ~(__mmask64)0 : (((__mmask64)1 << nb) - 1);
			const __m512i x = nk ? _mm512_maskz_loadu_epi8(km, s + k0) : _mm512_setzero_si512();
			const __m512i v = _mm512_maskz_add_epi8(km, x, voff);
			_mm512_mask_storeu_epi8(d + k0, sm, _mm512_permutexvar_epi32(idx, v));
		}
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

/* One block of 16 output columns from nr <= 16 rows of K codes: the 16 x
 * 16 transpose of gemm_x86_pack_b16 leaves group k4 of the 16 columns in
 * r[k4] (dword l = column l); for each quad and g, the groups of its four
 * tiles (r[8h + 2t + g]) transposed within lanes give the four registers
 * R of the layout.  The tile sums: a dot product with ones per register
 * and g. */
AVX512_T void gemm_x86_tl_pack_b16(const int8_t *rows, int nr, int K, int K4, int off, int8_t *bb,
				   int32_t *cr)
{
	const __m512i ones = _mm512_set1_epi8(1), moff = _mm512_set1_epi32(-off);
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
			__m512i sum[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(),
					  _mm512_setzero_si512(), _mm512_setzero_si512()};
			for (int g = 0; g < 2; g++) {
				__m512i x[4] = {r[8 * h + g], r[8 * h + 2 + g], r[8 * h + 4 + g], r[8 * h + 6 + g]};
				tr4_lanes(x);
				for (int R = 0; R < 4; R++) {
					_mm512_storeu_si512((void *)(bb + (size_t)q * 512 + g * 256 + R * 64), x[R]);
					sum[R] = _mm512_dpbusd_epi32(sum[R], ones, x[R]);
				}
			}
			for (int R = 0; R < 4; R++)
				_mm512_storeu_si512((void *)(cr + (size_t)q * 64 + R * 16),
						    _mm512_mullo_epi32(sum[R], moff));
		}
	}
	_mm256_zeroupper();
}
#endif /* HDQT_X86_64 */
