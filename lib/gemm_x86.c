/* SPDX-License-Identifier: MIT */
/*
 * x86-64 kernels for gemm_q (layout in gemm.c).  Each function carries its
 * own target attribute, so one binary runs everywhere and the dispatcher in
 * gemm.c calls only what the CPU supports.  Vectorised across 16 output
 * columns; rows are register-blocked; every tile accumulator starts at the
 * offset correction, is clamped after its last 4-byte group and is then
 * added to the wide sum.  Results equal gemm_q_ref bit for bit.
 */
#include "config.h"

#if HDQT_X86_64
#include <immintrin.h>
#include <string.h>

#include "gemm.h"
#include "gemm_x86_impl.h"
#include "simd.h"

int gemm_x86_avx2_supported(void)
{
	__builtin_cpu_init();
	return SIMD_AVX2() && __builtin_cpu_supports("fma");
}

int gemm_x86_avxvnni_supported(void)
{
	__builtin_cpu_init();
	/* gcc 12 has no "avxvnni" name for __builtin_cpu_supports: ask CPUID
	 * leaf 7 sub-leaf 1, EAX bit 4. */
	unsigned a, b, c, d;
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(1));
	return gemm_x86_avx2_supported() && ((a >> 4) & 1);
}

int gemm_x86_avx512vnni_supported(void)
{
	__builtin_cpu_init();
	return SIMD_AVX512F() && __builtin_cpu_supports("avx512bw") &&
	       __builtin_cpu_supports("avx512vnni");
}

static inline int32_t load4(const uint8_t *p)
{
	int32_t v;
	memcpy(&v, p, 4);
	return v;
}

/* Store the first n lanes of 16 int32 values. */
static inline void store_tail(int32_t *dst, const int32_t *src, int n)
{
	memcpy(dst, src, sizeof(int32_t) * (size_t)n);
}

/* ---------------- AVX2 (maddubs + madd) ---------------- */

#define AVX2_T __attribute__((target("avx2,fma")))

AVX2_T static inline __m256i dot4_avx2(__m256i acc, __m256i a, __m256i b)
{
	const __m256i ones = _mm256_set1_epi16(1);
	return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones));
}

#define VNNI256_T __attribute__((target("avx2,fma,avxvnni")))

/* Row i, columns [j0, j0 + ncol) from two vectors of 8 int32 sums: the
 * sums into C, or (e set) gemm_rescale_rows' floats into Y, multiplied in
 * its order ((float)c * (sa[i] * inv)) * sb[j], so that the product goes
 * to memory once, as floats.  Sixteen columns store straight from the
 * registers (a variable-length memcpy was a libc call per row and block). */
AVX2_T static inline __attribute__((always_inline)) void
store_row16_avx2(__m256i lo, __m256i hi, int ncol, int32_t *C, const gemm_rescale *e, float *Y,
		 int i, int J, int j0)
{
	const size_t at = (size_t)i * J + (size_t)j0;
	if (!e) {
		if (ncol == 16) {
			_mm256_storeu_si256((__m256i *)(C + at), lo);
			_mm256_storeu_si256((__m256i *)(C + at + 8), hi);
			return;
		}
		int32_t out[16];
		_mm256_storeu_si256((__m256i *)out, lo);
		_mm256_storeu_si256((__m256i *)(out + 8), hi);
		store_tail(C + at, out, ncol);
		return;
	}
	const float si = e->sa[i] * e->inv;
	if (ncol == 16) {
		const __m256 vs = _mm256_set1_ps(si);
		_mm256_storeu_ps(Y + at, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(lo), vs),
						       _mm256_loadu_ps(e->sb + j0)));
		_mm256_storeu_ps(Y + at + 8, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(hi), vs),
							   _mm256_loadu_ps(e->sb + j0 + 8)));
		return;
	}
	int32_t out[16];
	_mm256_storeu_si256((__m256i *)out, lo);
	_mm256_storeu_si256((__m256i *)(out + 8), hi);
	for (int j = 0; j < ncol; j++)
		Y[at + j] = (float)out[j] * si * e->sb[j0 + j];
}

VNNI256_T static inline __m256i dot4_vnni256(__m256i acc, __m256i a, __m256i b)
{
	return _mm256_dpbusd_avx_epi32(acc, a, b);
}

/* One 256-bit kernel body, instantiated with either dot product.  Rows are
 * blocked by 2, 16 columns as two ymm halves.  NAME##_tile is one tile of
 * nk groups from k0; inlined with a constant nk (the model's tiles of 2
 * and 8 groups), its loop unrolls into straight code (with a variable
 * count GCC kept the four tile sums in a loop with register copies).
 * N16 (AVX2 only): the tile's maddubs pairs are added in their 16-bit
 * lanes and widened once per tile (one madd and the corr add) instead of
 * once per group: exact where every lane's sum fits int16 (4-bit
 * operands: 2 groups x 2 x 15 x 8 = 480); per tile of 2 groups 12
 * multiplies (maddubs, madd) instead of 16.  gemm.c's n16_lanes_fit says
 * where it runs. */
#define KERNEL256(NAME, ATTR, DOT, N16)                                                      \
	ATTR static inline __attribute__((always_inline)) void NAME##_tile(                  \
		const uint8_t *a0, const uint8_t *a1, const int8_t *bb, const int32_t *cr,    \
		int k0, int nk, __m256i vlo, __m256i vhi, __m256i *w, const int two)          \
	{                                                                                     \
		__m256i s00, s01, s10, s11;                                                   \
		if (N16) {                                                                    \
			s00 = s01 = s10 = s11 = _mm256_setzero_si256();                       \
		} else {                                                                      \
			const __m256i c0 = _mm256_loadu_si256((const __m256i *)cr);           \
			const __m256i c1 = _mm256_loadu_si256((const __m256i *)(cr + 8));     \
			s00 = c0, s01 = c1, s10 = c0, s11 = c1;                               \
		}                                                                             \
		_Pragma("GCC unroll 8") for (int k = k0; k < k0 + nk; k++)                    \
		{                                                                             \
			__m256i b0 = _mm256_loadu_si256((const __m256i *)(bb + k * 64));      \
			__m256i b1 = _mm256_loadu_si256((const __m256i *)(bb + k * 64 + 32)); \
			__m256i x0 = _mm256_set1_epi32(load4(a0 + 4 * k));                    \
			__m256i x1 = two ? _mm256_set1_epi32(load4(a1 + 4 * k)) : x0;         \
			if (N16) {                                                            \
				s00 = _mm256_add_epi16(s00, _mm256_maddubs_epi16(x0, b0));    \
				s01 = _mm256_add_epi16(s01, _mm256_maddubs_epi16(x0, b1));    \
				if (two) {                                                    \
					s10 = _mm256_add_epi16(s10, _mm256_maddubs_epi16(x1, b0)); \
					s11 = _mm256_add_epi16(s11, _mm256_maddubs_epi16(x1, b1)); \
				}                                                             \
			} else {                                                              \
				s00 = DOT(s00, x0, b0);                                       \
				s01 = DOT(s01, x0, b1);                                       \
				if (two) {                                                    \
					s10 = DOT(s10, x1, b0);                               \
					s11 = DOT(s11, x1, b1);                               \
				}                                                             \
			}                                                                     \
		}                                                                             \
		if (N16) { /* corr read again here: 16 ymm registers hold no more */      \
			const __m256i ones = _mm256_set1_epi16(1);                            \
			const __m256i d0 = _mm256_loadu_si256((const __m256i *)cr);           \
			const __m256i d1 = _mm256_loadu_si256((const __m256i *)(cr + 8));     \
			s00 = _mm256_add_epi32(_mm256_madd_epi16(s00, ones), d0);             \
			s01 = _mm256_add_epi32(_mm256_madd_epi16(s01, ones), d1);             \
			if (two) {                                                            \
				s10 = _mm256_add_epi32(_mm256_madd_epi16(s10, ones), d0);     \
				s11 = _mm256_add_epi32(_mm256_madd_epi16(s11, ones), d1);     \
			}                                                                     \
		}                                                                             \
		w[0] = _mm256_add_epi32(w[0], _mm256_min_epi32(_mm256_max_epi32(s00, vlo), vhi)); \
		w[1] = _mm256_add_epi32(w[1], _mm256_min_epi32(_mm256_max_epi32(s01, vlo), vhi)); \
		if (two) {                                                                    \
			w[2] = _mm256_add_epi32(w[2], _mm256_min_epi32(_mm256_max_epi32(s10, vlo), vhi)); \
			w[3] = _mm256_add_epi32(w[3], _mm256_min_epi32(_mm256_max_epi32(s11, vlo), vhi)); \
		}                                                                             \
	}                                                                                     \
	/* Every tile of one or two rows (two a constant at each call: a last \
	 * row alone, as a prediction's one row is, makes half the multiplies, \
	 * where it had made its own again as the second row's). */              \
	ATTR static inline __attribute__((always_inline)) void NAME##_tiles(                 \
		const uint8_t *a0, const uint8_t *a1, const int8_t *bb, const int32_t *cr,    \
		int K4, int t4, int nfull, int ntiles, __m256i vlo, __m256i vhi, __m256i *w,  \
		const int two)                                                                \
	{                                                                                     \
		for (int t = 0; t < nfull; t++)                                               \
			NAME##_tile(a0, a1, bb, cr + t * 16, t * t4, t4, vlo, vhi, w, two);   \
		if (nfull < ntiles)                                                           \
			NAME##_tile(a0, a1, bb, cr + nfull * 16, nfull * t4, K4 - nfull * t4, \
				    vlo, vhi, w, two);                                        \
	}                                                                                     \
	ATTR static inline __attribute__((always_inline)) void NAME##_body(                  \
		const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,       \
		int K4, int t4, int ntiles, int32_t lo, int32_t hi, int32_t *C,               \
		const gemm_rescale *e, float *Y)                                              \
	{                                                                                     \
		const __m256i vlo = _mm256_set1_epi32(lo), vhi = _mm256_set1_epi32(hi);      \
		const int J16 = (J + 15) / 16;                                                \
		const int nfull = K4 / t4 < ntiles ? K4 / t4 : ntiles;                        \
		for (int jb = 0; jb < J16; jb++) {                                            \
			const int8_t *bb = Bp + (size_t)jb * K4 * 64;                         \
			const int32_t *cr = corr + (size_t)jb * ntiles * 16;                  \
			const int ncol = J - jb * 16 < 16 ? J - jb * 16 : 16;                 \
			for (int i = 0; i < I; i += 2) {                                      \
				const int two = (i + 1 < I);                                  \
				const uint8_t *a0 = Ap + (size_t)i * K4 * 4;                  \
				const uint8_t *a1 = two ? a0 + (size_t)K4 * 4 : a0;           \
				__m256i w[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), \
						_mm256_setzero_si256(), _mm256_setzero_si256()}; \
				if (two)                                                      \
					NAME##_tiles(a0, a1, bb, cr, K4, t4, nfull, ntiles, vlo, vhi, w, 1); \
				else                                                          \
					NAME##_tiles(a0, a1, bb, cr, K4, t4, nfull, ntiles, vlo, vhi, w, 0); \
				store_row16_avx2(w[0], w[1], ncol, C, e, Y, i, J, jb * 16);   \
				if (two)                                                      \
					store_row16_avx2(w[2], w[3], ncol, C, e, Y, i + 1, J, jb * 16); \
			}                                                                     \
		}                                                                             \
	}                                                                                     \
	/* The tile sizes of this model as constants (the tile loop unrolled); \
	 * inlined into both entries, so each keeps its store's constants. */ \
	ATTR static inline __attribute__((always_inline)) void NAME##_run(                   \
		const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,       \
		int K4, int tile4, int ntiles, int32_t lo, int32_t hi, int32_t *C,            \
		const gemm_rescale *e, float *Y)                                              \
	{                                                                                     \
		if (tile4 == 2)                                                               \
			NAME##_body(Ap, Bp, corr, I, J, K4, 2, ntiles, lo, hi, C, e, Y);      \
		else if (tile4 == 8)                                                          \
			NAME##_body(Ap, Bp, corr, I, J, K4, 8, ntiles, lo, hi, C, e, Y);      \
		else                                                                          \
			NAME##_body(Ap, Bp, corr, I, J, K4, tile4, ntiles, lo, hi, C, e, Y);  \
	}                                                                                     \
	ATTR void NAME##_f(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I,  \
			   int J, int K4, int tile4, int ntiles, int32_t lo, int32_t hi,      \
			   const gemm_rescale *e, float *Y)                                   \
	{                                                                                     \
		NAME##_run(Ap, Bp, corr, I, J, K4, tile4, ntiles, lo, hi, NULL, e, Y);        \
	}                                                                                     \
	ATTR void NAME(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I,      \
		       int J, int K4, int tile4, int ntiles, int32_t lo, int32_t hi,          \
		       int32_t *C)                                                            \
	{                                                                                     \
		NAME##_run(Ap, Bp, corr, I, J, K4, tile4, ntiles, lo, hi, C, NULL, NULL);     \
	}

KERNEL256(gemm_x86_avx2, AVX2_T, dot4_avx2, 0)
KERNEL256(gemm_x86_avx2_n16, AVX2_T, dot4_avx2, 1)
KERNEL256(gemm_x86_avxvnni, VNNI256_T, dot4_vnni256, 0)

/* Four rows against 16 columns with 16-bit tile sums and 16-bit wide sums
 * (AVX2 only).  The four rows' wide sums stay in four registers across
 * the whole reduction, each row's tile in a few more (r4_tile), and one
 * 16-column B block serves four rows from L1.  The wide sums fit four
 * registers because they are 16-bit: each tile's sum is made in one int16
 * register of 16 columns (hadd, below), clamped and added there, as the
 * AVX-512 pair path does.  hadd interleaves the columns by 4 per 128-bit
 * lane; the 64-bit permute at the store puts them back in column order.
 * Where it runs: a tile's whole sum fits int16 (gemm.c's n16_fits) and
 * every wide sum does (ntiles * 2^(a-1) <= 32767). */
/* One tile of the four rows, a row at a time: its two 16-bit sums, then
 * its clamp into the wide sum, then the next row, B read again from L1 for
 * each row (maddubs takes it as a memory operand).  With all four rows'
 * sums live at once (one B load and one broadcast per two maddubs less)
 * GCC 12 ran out of the 16 ymm registers and sent sums through the stack
 * in the loop: 0.88-0.92x this order (2026-12-07).  A tile's uncorrected
 * sum x is one hadd of its two 16-bit sums (each lane holds two of its k
 * of a column: the pair's sum is the column's; x fits int16 as n16_fits
 * says), and its correction c goes into the clamp's bounds instead of
 * into x: clamp(x + c, lo, hi) = clamp(x, lo - c, hi - c) + c, and the
 * tiles' c are added to the wide sum once, at the store (r4_body).  So a
 * row's tile costs hadd, max, min and add after its maddubs, four
 * instructions, where widening both halves to int32 (madd), adding the
 * int32 corrections and narrowing again (packs) cost eight.  hadd leaves
 * the columns in the order packs did ([0-3, 8-11 | 4-7, 12-15]), so the
 * store's permute is unchanged. */
AVX2_T static inline __attribute__((always_inline)) void
r4_tile(const uint8_t *a0, size_t rs, const int8_t *bb, const int16_t *bnd, int k0, int nk,
	__m256i *w, const int half)
{
	const __m256i blo = _mm256_load_si256((const __m256i *)bnd);
	const __m256i bhi = _mm256_load_si256((const __m256i *)(bnd + 16));
#define R4_K(X, K)                                                                                 \
	do {                                                                                       \
		const __m256i x_ = (X);                                                            \
		s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(x_, _mm256_loadu_si256((const __m256i *)(bb + (K) * 64)))); \
		if (!half)                                                                         \
			s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(x_, _mm256_loadu_si256((const __m256i *)(bb + (K) * 64 + 32)))); \
	} while (0)
#pragma GCC unroll 4
	for (int r = 0; r < 4; r++) {
		__m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
		const uint8_t *ar = a0 + r * rs;
		if (nk % 4 == 0) {
			/* Four k4 of the row in one 16-byte load, each broadcast by a
			 * shuffle: the loads, not the maddubs, bound this loop (two B
			 * loads and a broadcast load per two maddubs, where a core
			 * does two 256-bit loads a cycle), and a shuffle takes an ALU
			 * slot instead. */
#pragma GCC unroll 2
			for (int k = k0; k < k0 + nk; k += 4) {
				const __m256i a = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(ar + 4 * k)));
				R4_K(_mm256_shuffle_epi32(a, 0x00), k);
				R4_K(_mm256_shuffle_epi32(a, 0x55), k + 1);
				R4_K(_mm256_shuffle_epi32(a, 0xaa), k + 2);
				R4_K(_mm256_shuffle_epi32(a, 0xff), k + 3);
			}
		} else {
#pragma GCC unroll 8
			for (int k = k0; k < k0 + nk; k++)
				R4_K(_mm256_set1_epi32(load4(ar + 4 * k)), k);
		}
		const __m256i t = _mm256_hadd_epi16(s0, s1);
		w[r] = _mm256_add_epi16(w[r], _mm256_min_epi16(_mm256_max_epi16(t, blo), bhi));
	}
#undef R4_K
}

/* Every tile of the four rows: the whole ones, then the last, shorter one
 * if K4 ends inside a tile; half a constant at each call. */
AVX2_T static inline __attribute__((always_inline)) void
r4_tiles(const uint8_t *a0, size_t rs, const int8_t *bb, const int16_t *bnd, int K4, int t4,
	 int nfull, int ntiles, __m256i *w, const int half)
{
	for (int t = 0; t < nfull; t++)
		r4_tile(a0, rs, bb, bnd + t * 32, t * t4, t4, w, half);
	if (nfull < ntiles)
		r4_tile(a0, rs, bb, bnd + nfull * 32, nfull * t4, K4 - nfull * t4, w, half);
}

/* The 16 columns of four output rows that a later block will store, asked
 * for now (both ends: a row of J = 166 floats starts off a line; as
 * integers, not pointers, as the last block's may pass the array's end,
 * which a prefetch may).
 * Each block stores a line of a row 4 * J bytes after the last (a column
 * of lines, 2 KB apart for 512 columns), which no prefetcher follows: in
 * a training step the products whose output had left the caches stalled
 * on every store (grad-weight 512 x 512 x 128 1.8x its time with a warm
 * output, grad-input 128 x 512 x 12 at a tenth of the rate). */
#define PF_ROWS 8 /* 4 to 32 measured the same in a step on Zen 3 */
AVX2_T static inline __attribute__((always_inline)) void prefetch_out16(const int32_t *C, const float *Y,
									 int i, int J, int j0)
{
	const uintptr_t base = C ? (uintptr_t)C : (uintptr_t)Y;
	for (int r = 0; r < 4; r++) {
		const uintptr_t p = base + 4 * ((size_t)(i + r) * J + (size_t)j0);
		_mm_prefetch((const char *)p, _MM_HINT_T0);
		_mm_prefetch((const char *)(p + 60), _MM_HINT_T0);
	}
}

/* The most tiles r4_body takes: its bounds live on the stack (16 KB).
 * The 16-bit wide sums already bound ntiles by 32767 / 2^(a-1), 255 for
 * 8-bit accumulators; r4_run checks this bound too, so that the array
 * holds whatever accumulators a caller asks for. */
#define R4_MAX_TILES 256

AVX2_T static inline __attribute__((always_inline)) void
r4_body(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J, int K4, int t4,
	int ntiles, int32_t lo, int32_t hi, int32_t *C, const gemm_rescale *e, float *Y)
{
	const __m256i vlo16 = _mm256_set1_epi16((short)lo), vhi16 = _mm256_set1_epi16((short)hi);
	const int J16 = (J + 15) / 16;
	const int nfull = K4 / t4 < ntiles ? K4 / t4 : ntiles;
	const size_t rs = (size_t)K4 * 4;
	int16_t bnd[R4_MAX_TILES * 32] __attribute__((aligned(32)));
	for (int jb = 0; jb < J16; jb++) {
		if (I < 4) /* no block of four rows (r4_run does the rest) */
			break;
		const int8_t *bb = Bp + (size_t)jb * K4 * 64;
		const int32_t *cr = corr + (size_t)jb * ntiles * 16;
		const int ncol = J - jb * 16 < 16 ? J - jb * 16 : 16;
		/* Each tile's bounds lo - c and hi - c, in hadd's column order,
		 * and the sum of its c.  c narrows exactly (|c| <= off * 4 tile4
		 * * 2^(b-1), inside n16_fits' bound).  As lo < 0 < hi and |c| <=
		 * 32767, lo - c can saturate only downward and hi - c only
		 * upward, past values x never reaches, so the clamp is the same
		 * (for the operands n16_fits admits neither saturates at all).
		 * The sum may wrap, as the wide sum may before it is added:
		 * their total is the exact wide sum, which fits. */
		__m256i csum = _mm256_setzero_si256();
		for (int t = 0; t < ntiles; t++) {
			const __m256i c = _mm256_packs_epi32(_mm256_loadu_si256((const __m256i *)(cr + t * 16)),
							     _mm256_loadu_si256((const __m256i *)(cr + t * 16 + 8)));
			_mm256_store_si256((__m256i *)(bnd + t * 32), _mm256_subs_epi16(vlo16, c));
			_mm256_store_si256((__m256i *)(bnd + t * 32 + 16), _mm256_subs_epi16(vhi16, c));
			csum = _mm256_add_epi16(csum, c);
		}
		/* Rows ahead: 8 for a reduction of 32 groups or more, further
		 * for a shorter one (K = 12: 88 rows), past the column block's
		 * last row into the next block's first. */
		const int pf = K4 >= 32 ? PF_ROWS : (PF_ROWS * 32 / K4 + 3) / 4 * 4;
		for (int i = 0; i + 4 <= I; i += 4) {
			const uint8_t *a0 = Ap + (size_t)i * rs;
			__m256i w[4] = {csum, csum, csum, csum};
			if (i + pf + 4 <= I)
				prefetch_out16(C, Y, i + pf, J, jb * 16);
			else if (jb + 1 < J16 && i + pf >= I && i + pf - I + 4 <= I)
				prefetch_out16(C, Y, i + pf - I, J, jb * 16 + 16);
			/* A block of at most 8 columns (the last of 166): the
			 * maddubs of columns 8-15 would only make padding.  Not
			 * for tiles of 8 (the forward, whose widths are the
			 * hidden ones and the classes): that second copy of the
			 * loop cost the forward's products 2-3% on Zen 4. */
			if (t4 != 2 && ncol <= 8)
				r4_tiles(a0, rs, bb, bnd, K4, t4, nfull, ntiles, w, 1);
			else
				r4_tiles(a0, rs, bb, bnd, K4, t4, nfull, ntiles, w, 0);
			for (int r = 0; r < 4; r++) {
				const __m256i o = _mm256_permute4x64_epi64(w[r], 0xd8);
				store_row16_avx2(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(o)),
						 _mm256_cvtepi16_epi32(_mm256_extracti128_si256(o, 1)), ncol, C,
						 e, Y, i + r, J, jb * 16);
			}
		}
	}
}

/* Into C (e NULL) or, rescaled, into Y: inlined into each of the two, so
 * that each store is made for its own case (left to GCC, the C and Y
 * kernels became one function once r4_body grew, and the forward's
 * products lost 7%). */
AVX2_T static inline __attribute__((always_inline)) void r4_run(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,
			  int K4, int tile4, int ntiles, int32_t lo, int32_t hi, int32_t *C,
			  const gemm_rescale *e, float *Y)
{
	if (!((long)ntiles * ((long)hi + 1) <= 32767 && lo >= -32768) || ntiles > R4_MAX_TILES) {
		if (e)
			gemm_x86_avx2_n16_f(Ap, Bp, corr, I, J, K4, tile4, ntiles, lo, hi, e, Y);
		else
			gemm_x86_avx2_n16(Ap, Bp, corr, I, J, K4, tile4, ntiles, lo, hi, C);
		return;
	}
	if (tile4 == 2)
		r4_body(Ap, Bp, corr, I, J, K4, 2, ntiles, lo, hi, C, e, Y);
	else if (tile4 == 8)
		r4_body(Ap, Bp, corr, I, J, K4, 8, ntiles, lo, hi, C, e, Y);
	else
		r4_body(Ap, Bp, corr, I, J, K4, tile4, ntiles, lo, hi, C, e, Y);
	/* The one to three rows after the last block of four: the two-row
	 * kernel (the same lanes, so the same bits). */
	const int i4 = I / 4 * 4;
	if (i4 == I)
		return;
	const uint8_t *At = Ap + (size_t)i4 * K4 * 4;
	if (e) {
		const gemm_rescale et = {.sa = e->sa + i4, .sb = e->sb, .inv = e->inv};
		gemm_x86_avx2_n16_f(At, Bp, corr, I - i4, J, K4, tile4, ntiles, lo, hi, &et,
				    Y + (size_t)i4 * J);
	} else {
		gemm_x86_avx2_n16(At, Bp, corr, I - i4, J, K4, tile4, ntiles, lo, hi, C + (size_t)i4 * J);
	}
}

AVX2_T void gemm_x86_avx2_r4(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I,
			     int J, int K4, int tile4, int ntiles, int32_t lo, int32_t hi, int32_t *C)
{
	r4_run(Ap, Bp, corr, I, J, K4, tile4, ntiles, lo, hi, C, NULL, NULL);
}

AVX2_T void gemm_x86_avx2_r4_f(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I,
			       int J, int K4, int tile4, int ntiles, int32_t lo, int32_t hi,
			       const gemm_rescale *e, float *Y)
{
	r4_run(Ap, Bp, corr, I, J, K4, tile4, ntiles, lo, hi, NULL, e, Y);
}

/* ---------------- AVX-512 VNNI ---------------- */

#define R8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

/* Rows [i0, I) of A against one block of 16 columns: eight rows at a
 * time (8 tile accumulators + 8 wide sums), then one by one. */
AVX512_T static void blk16_avx512(const uint8_t *Ap, size_t rs, const int8_t *bb, const int32_t *cr,
				  int i0, int I, int J, int jb, int K4, int tile4, int ntiles,
				  __m512i vlo, __m512i vhi, int32_t *C, const gemm_rescale *e, float *Y)
{
	const int ncol = J - jb * 16 < 16 ? J - jb * 16 : 16;
	const __mmask16 m = (__mmask16)((1u << ncol) - 1u);
	int i = i0;
	for (; i + 8 <= I; i += 8) {
		const uint8_t *a = Ap + (size_t)i * rs;
#define DECL(r) __m512i w##r = _mm512_setzero_si512();
		R8(DECL)
#undef DECL
		for (int t = 0; t < ntiles; t++) {
			const int k0 = t * tile4, k1 = k0 + tile4 < K4 ? k0 + tile4 : K4;
			const __m512i c = _mm512_loadu_si512((const void *)(cr + t * 16));
#define INIT(r) __m512i s##r = c;
			R8(INIT)
#undef INIT
			for (int k = k0; k < k1; k++) {
				const __m512i b = _mm512_loadu_si512((const void *)(bb + k * 64));
#define DOT(r) s##r = _mm512_dpbusd_epi32(s##r, _mm512_set1_epi32(load4(a + r * rs + 4 * k)), b);
				R8(DOT)
#undef DOT
			}
#define CLAMP(r) w##r = _mm512_add_epi32(w##r, _mm512_min_epi32(_mm512_max_epi32(s##r, vlo), vhi));
			R8(CLAMP)
#undef CLAMP
		}
#define STORE(r) store16(w##r, m, C, e, Y, i + r, J, jb * 16);
		R8(STORE)
#undef STORE
	}
	for (; i < I; i++) {
		const uint8_t *a = Ap + (size_t)i * rs;
		__m512i w = _mm512_setzero_si512();
		for (int t = 0; t < ntiles; t++) {
			const int k0 = t * tile4, k1 = k0 + tile4 < K4 ? k0 + tile4 : K4;
			__m512i sacc = _mm512_loadu_si512((const void *)(cr + t * 16));
			for (int k = k0; k < k1; k++) {
				const __m512i b = _mm512_loadu_si512((const void *)(bb + k * 64));
				sacc = _mm512_dpbusd_epi32(sacc, _mm512_set1_epi32(load4(a + 4 * k)), b);
			}
			w = _mm512_add_epi32(w, _mm512_min_epi32(_mm512_max_epi32(sacc, vlo), vhi));
		}
		store16(w, m, C, e, Y, i, J, jb * 16);
	}
}

/* NR rows against two blocks (32 columns) with 16-bit clamps and wide
 * sums: each tile's two int32 sums are narrowed with signed saturation
 * into one register (packs: exact, as the clamp bounds lie inside int16),
 * clamped and added there, so a tile costs four operations per 32 columns
 * instead of six.  Only when every wide sum fits int16 (ntiles *
 * 2^(a-1) <= 32767: 8-bit accumulators and up to 255 tiles).  packs
 * interleaves the two blocks by 4 columns per 128-bit lane; the wide sums
 * are put back in column order once, at the store.
 *
 * One tile: nk groups of 4 from k0.  Inlined with constant nr and nk, the
 * loops unroll into straight code in which only the wide sums live across
 * tiles (with a variable trip count GCC kept the tile sums in a loop and
 * spent as many register copies and spills as products). */
AVX512_T static inline __attribute__((always_inline)) void
pair_tile_avx512(const uint8_t *a, size_t rs, const int8_t *bb0, const int8_t *bb1, int k0, int nk,
		 __m512i c0, __m512i c1, __m512i vlo16, __m512i vhi16, int nr, __m512i *w)
{
	__m512i s[8], u[8];
#pragma GCC unroll 8
	for (int r = 0; r < nr; r++) {
		s[r] = c0;
		u[r] = c1;
	}
#pragma GCC unroll 8
	for (int k = k0; k < k0 + nk; k++) {
		const __m512i b0 = _mm512_loadu_si512((const void *)(bb0 + k * 64));
		const __m512i b1 = _mm512_loadu_si512((const void *)(bb1 + k * 64));
#pragma GCC unroll 8
		for (int r = 0; r < nr; r++) {
			const __m512i x = _mm512_set1_epi32(load4(a + r * rs + 4 * k));
			s[r] = _mm512_dpbusd_epi32(s[r], x, b0);
			u[r] = _mm512_dpbusd_epi32(u[r], x, b1);
		}
	}
#pragma GCC unroll 8
	for (int r = 0; r < nr; r++)
		w[r] = _mm512_add_epi16(
			w[r], _mm512_min_epi16(_mm512_max_epi16(_mm512_packs_epi32(s[r], u[r]), vlo16), vhi16));
}

/* Rows from i0 in blocks of nr (constant after inlining) against two
 * blocks; full tiles of t4 groups (constant) and the ragged last tile.
 * Returns the first row not done. */
AVX512_T static inline __attribute__((always_inline)) int
pair_rows_avx512(const uint8_t *Ap, size_t rs, const int8_t *bb0, const int32_t *cr0,
		 const int8_t *bb1, const int32_t *cr1, int I, int J, int jb, int K4, int t4,
		 int ntiles, __m512i vlo16, __m512i vhi16, int nr, int32_t *C, const gemm_rescale *e,
		 float *Y, int i0)
{
	const int ncol1 = J - (jb + 1) * 16 < 16 ? J - (jb + 1) * 16 : 16;
	const __mmask16 m1 = (__mmask16)((1u << ncol1) - 1u);
	const __m512i ia = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
	const __m512i ib = _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
	const int nfull = K4 / t4 < ntiles ? K4 / t4 : ntiles;
	int i = i0;
	for (; i + nr <= I; i += nr) {
		const uint8_t *a = Ap + (size_t)i * rs;
		__m512i w[8];
#pragma GCC unroll 8
		for (int r = 0; r < nr; r++)
			w[r] = _mm512_setzero_si512();
		for (int t = 0; t < nfull; t++)
			pair_tile_avx512(a, rs, bb0, bb1, t * t4, t4,
					 _mm512_loadu_si512((const void *)(cr0 + t * 16)),
					 _mm512_loadu_si512((const void *)(cr1 + t * 16)), vlo16, vhi16, nr, w);
		if (nfull < ntiles)
			pair_tile_avx512(a, rs, bb0, bb1, nfull * t4, K4 - nfull * t4,
					 _mm512_loadu_si512((const void *)(cr0 + nfull * 16)),
					 _mm512_loadu_si512((const void *)(cr1 + nfull * 16)), vlo16, vhi16, nr, w);
#pragma GCC unroll 8
		for (int r = 0; r < nr; r++) {
			const __m512i lo = _mm512_cvtepi16_epi32(_mm512_castsi512_si256(w[r]));
			const __m512i hi = _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(w[r], 1));
			store16(_mm512_permutex2var_epi32(lo, ia, hi), 0xffff, C, e, Y, i + r, J, jb * 16);
			store16(_mm512_permutex2var_epi32(lo, ib, hi), m1, C, e, Y, i + r, J, jb * 16 + 16);
		}
	}
	return i;
}

/* The instances: the forward's tile of 8 (2 groups, 8 rows), the
 * backward's tile of 32 (8 groups, 6 rows: 8 rows of two blocks leave no
 * register for the operands), then the rows left in blocks of 4, 2 and 1
 * (through the one-block loop they took a fifth of a 2-thread step: a
 * task's rows are rarely a multiple of 6), anything else through a
 * variable tile. */
#define PAIR_TAIL(T4)                                                                               \
	i = pair_rows_avx512(Ap, rs, bb0, cr0, bb1, cr1, I, J, jb, K4, T4, ntiles, vlo16, vhi16, 4, C, \
			     e, Y, i);                                                             \
	i = pair_rows_avx512(Ap, rs, bb0, cr0, bb1, cr1, I, J, jb, K4, T4, ntiles, vlo16, vhi16, 2, C, \
			     e, Y, i);                                                             \
	return pair_rows_avx512(Ap, rs, bb0, cr0, bb1, cr1, I, J, jb, K4, T4, ntiles, vlo16, vhi16, 1, \
				C, e, Y, i)

AVX512_T static int pair_rows_t2(const uint8_t *Ap, size_t rs, const int8_t *bb0, const int32_t *cr0,
				 const int8_t *bb1, const int32_t *cr1, int I, int J, int jb, int K4,
				 int ntiles, __m512i vlo16, __m512i vhi16, int32_t *C, const gemm_rescale *e,
				 float *Y)
{
	int i = pair_rows_avx512(Ap, rs, bb0, cr0, bb1, cr1, I, J, jb, K4, 2, ntiles, vlo16, vhi16, 8, C,
				 e, Y, 0);
	PAIR_TAIL(2);
}

AVX512_T static int pair_rows_t8(const uint8_t *Ap, size_t rs, const int8_t *bb0, const int32_t *cr0,
				 const int8_t *bb1, const int32_t *cr1, int I, int J, int jb, int K4,
				 int ntiles, __m512i vlo16, __m512i vhi16, int32_t *C, const gemm_rescale *e,
				 float *Y)
{
	int i = pair_rows_avx512(Ap, rs, bb0, cr0, bb1, cr1, I, J, jb, K4, 8, ntiles, vlo16, vhi16, 6, C,
				 e, Y, 0);
	PAIR_TAIL(8);
}
#undef PAIR_TAIL

AVX512_T static int pair_rows_any(const uint8_t *Ap, size_t rs, const int8_t *bb0, const int32_t *cr0,
				  const int8_t *bb1, const int32_t *cr1, int I, int J, int jb, int K4,
				  int tile4, int ntiles, __m512i vlo16, __m512i vhi16, int32_t *C,
				  const gemm_rescale *e, float *Y)
{
	return pair_rows_avx512(Ap, rs, bb0, cr0, bb1, cr1, I, J, jb, K4, tile4, ntiles, vlo16, vhi16, 6,
				C, e, Y, 0);
}

/* Both entry points: int32 C (e NULL) or rescaled floats in Y. */
AVX512_T static inline __attribute__((always_inline)) void avx512vnni_run(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I,
				    int J, int K4, int tile4, int ntiles, int32_t lo, int32_t hi,
				    int32_t *C, const gemm_rescale *e, float *Y)
{
	const __m512i vlo = _mm512_set1_epi32(lo), vhi = _mm512_set1_epi32(hi);
	const int J16 = (J + 15) / 16;
	const size_t rs = (size_t)K4 * 4; /* packed row stride of A */
	const int narrow = (long)ntiles * ((long)hi + 1) <= 32767 && lo >= -32768;
	int jb = 0;
	if (narrow) {
		const __m512i vlo16 = _mm512_set1_epi16((short)lo), vhi16 = _mm512_set1_epi16((short)hi);
		for (; jb + 1 < J16; jb += 2) {
			const int8_t *bb0 = Bp + (size_t)jb * K4 * 64, *bb1 = bb0 + (size_t)K4 * 64;
			const int32_t *cr0 = corr + (size_t)jb * ntiles * 16, *cr1 = cr0 + (size_t)ntiles * 16;
			const int i = tile4 == 2   ? pair_rows_t2(Ap, rs, bb0, cr0, bb1, cr1, I, J, jb, K4,
									  ntiles, vlo16, vhi16, C, e, Y)
				      : tile4 == 8 ? pair_rows_t8(Ap, rs, bb0, cr0, bb1, cr1, I, J, jb, K4,
									  ntiles, vlo16, vhi16, C, e, Y)
						   : pair_rows_any(Ap, rs, bb0, cr0, bb1, cr1, I, J, jb, K4,
								   tile4, ntiles, vlo16, vhi16, C, e, Y);
			blk16_avx512(Ap, rs, bb0, cr0, i, I, J, jb, K4, tile4, ntiles, vlo, vhi, C, e, Y);
			blk16_avx512(Ap, rs, bb1, cr1, i, I, J, jb + 1, K4, tile4, ntiles, vlo, vhi, C, e, Y);
		}
	}
	for (; jb < J16; jb++)
		blk16_avx512(Ap, rs, Bp + (size_t)jb * K4 * 64, corr + (size_t)jb * ntiles * 16, 0, I,
			     J, jb, K4, tile4, ntiles, vlo, vhi, C, e, Y);
	/* The helpers take vectors by value, so GCC leaves the upper halves
	 * to their caller, and after the last helper call it put no
	 * vzeroupper on the way out: the SSE code that ran next (expf in the
	 * loss, after the last layer's product) paid the transition penalty
	 * on every instruction, 9% of a training step. */
	_mm256_zeroupper();
}

AVX512_T void gemm_x86_avx512vnni(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr,
				  int I, int J, int K4, int tile4, int ntiles, int32_t lo,
				  int32_t hi, int32_t *C)
{
	avx512vnni_run(Ap, Bp, corr, I, J, K4, tile4, ntiles, lo, hi, C, NULL, NULL);
}

AVX512_T void gemm_x86_avx512vnni_f(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr,
				    int I, int J, int K4, int tile4, int ntiles, int32_t lo,
				    int32_t hi, const gemm_rescale *e, float *Y)
{
	avx512vnni_run(Ap, Bp, corr, I, J, K4, tile4, ntiles, lo, hi, NULL, e, Y);
}

/* ---------------- packing, AVX-512 ---------------- */

/* Group g (64 bytes: 16 columns x 4 bytes of k) to bb, and its column sums
 * into the running tile sum; a finished tile's -off * sum to cr. */
typedef struct tsum16 {
	__m512i sum;
	int t, in;
} tsum16;

AVX512_T static inline __attribute__((always_inline)) void
emit_group(__m512i v, int g, int K4, int tile4, int off, int8_t *bb, int32_t *cr, tsum16 *ts)
{
	_mm512_storeu_si512((void *)(bb + (size_t)g * 64), v);
	if (!off)
		return;
	ts->sum = _mm512_dpbusd_epi32(ts->sum, _mm512_set1_epi8(1), v);
	if (++ts->in == tile4 || g == K4 - 1) {
		_mm512_storeu_si512((void *)(cr + (size_t)ts->t * 16),
				    _mm512_mullo_epi32(ts->sum, _mm512_set1_epi32(-off)));
		ts->sum = _mm512_setzero_si512();
		ts->in = 0;
		ts->t++;
	}
}

/* One block of 16 output columns into the offset layout from nr <= 16 rows
 * of K codes: each row's 64 bytes are 16 groups of 4, and a 16 x 16
 * transpose puts group k4 of all 16 columns in one register (the layout's
 * 64 bytes); zeros past K and past nr.  The tile sums of the correction
 * come from the same registers (a dot product with ones sums each
 * column's 4 bytes).  Byte moves and integer sums: pack_b_blocks' bytes. */
AVX512_T void gemm_x86_pack_b16(const int8_t *rows, int nr, int K, int K4, int tile4, int ntiles,
				int off, int8_t *bb, int32_t *cr)
{
	tsum16 ts = {_mm512_setzero_si512(), 0, 0};
	for (int g0 = 0; g0 < K4; g0 += 16) {
		const int nb = K - 4 * g0 < 64 ? K - 4 * g0 : 64; /* bytes of each row here */
		const __mmask64 lm = nb == 64 ? ~(__mmask64)0 : (((__mmask64)1 << nb) - 1);
		__m512i r[16];
		for (int l = 0; l < 16; l++)
			r[l] = l < nr ? _mm512_maskz_loadu_epi8(lm, rows + (size_t)l * K + 4 * g0)
				      : _mm512_setzero_si512();
		tr16_epi32(r);
		const int ng = K4 - g0 < 16 ? K4 - g0 : 16;
		for (int g = 0; g < ng; g++)
			emit_group(r[g], g0 + g, K4, tile4, off, bb, cr, &ts);
	}
	if (!off)
		memset(cr, 0, sizeof(int32_t) * 16 * (size_t)ntiles);
}

int gemm_x86_vbmi_supported(void)
{
	__builtin_cpu_init();
	return gemm_x86_avx512vnni_supported() && __builtin_cpu_supports("avx512vbmi");
}

/* AMD family 19h with AVX-512 (Zen 4) runs 512-bit operations as two
 * 256-bit halves; the saturating packs that the tiles-in-lanes layout
 * trades the column layout's max/min/add for then cost more than they
 * save for tiles of 8 (gemm.c's tl_takes).  Family 1Ah (Zen 5) has whole
 * 512-bit units. */
int gemm_x86_avx512_halves(void)
{
	unsigned a, b, c, d;
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0), "c"(0));
	const int amd = b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u; /* AuthenticAMD */
	if (!amd || !gemm_x86_avx512vnni_supported())
		return 0;
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
	const unsigned fam = (a >> 8 & 0xf) == 0xf ? 0xf + (a >> 20 & 0xff) : a >> 8 & 0xf;
	return fam == 0x19;
}


/* gemm_pack_strip's offset layout from a strip (codes[k * 16 + l], K4 * 4
 * rows, zero from K on): one permute per group, the tile sums as above. */
VBMI_T void gemm_x86_pack_strip16(const int8_t *codes, int K4, int tile4, int ntiles, int off,
				  int8_t *bb, int32_t *cr)
{
	tsum16 ts = {_mm512_setzero_si512(), 0, 0};
	for (int g = 0; g < K4; g++)
		emit_group(group16(codes + (size_t)g * 64), g, K4, tile4, off, bb, cr, &ts);
	if (!off)
		memset(cr, 0, sizeof(int32_t) * 16 * (size_t)ntiles);
}

/* gemm_pack_a_strip's rows from a strip: ni <= 16 rows of rs = K4 * 4
 * bytes, a[l][k] = codes[k * 16 + l] + off below K, zero from K on.
 * Groups of 16 k4 are permuted to [l][4 bytes] and transposed, which
 * leaves 64 bytes of one row in each register. */
VBMI_T void gemm_x86_pack_a_strip16(const int8_t *codes, int ni, int K, int K4, int off, uint8_t *a,
				    size_t rs)
{
	const __m512i voff = _mm512_set1_epi8((char)off);
	for (int g0 = 0; g0 < K4; g0 += 16) {
		const int ng = K4 - g0 < 16 ? K4 - g0 : 16;
		__m512i r[16];
		for (int g = 0; g < 16; g++)
			r[g] = g < ng ? group16(codes + (size_t)(g0 + g) * 64) : _mm512_setzero_si512();
		tr16_epi32(r);
		const int k0 = 4 * g0, nk = K - k0 < 64 ? (K - k0 > 0 ? K - k0 : 0) : 64;
		const int nb = 4 * ng; /* bytes of each row here, up to rs */
		const __mmask64 km = nk == 64 ? ~(__mmask64)0 : (((__mmask64)1 << nk) - 1);
		const __mmask64 sm = nb == 64 ? ~(__mmask64)0 : (((__mmask64)1 << nb) - 1);
		for (int l = 0; l < ni; l++)
			_mm512_mask_storeu_epi8(a + (size_t)l * rs + k0, sm,
						_mm512_maskz_add_epi8(km, r[l], voff));
	}
}

/* ---------------- packing, AVX2 ---------------- */

/* The AVX-512 packers' twins for machines without AVX-512 (same bytes,
 * same sums; tested against the layouts written out): without them an
 * AVX2 box packed B through the compiler's clone of pack_b_blocks'
 * byte loop, 5% of its training step (`HDQT_ISA=avx2 perf record
 * hdqt-bench --mode hdqt --train-only`, 2026-12-07). */

/* The running tile sum of one block's 16 columns, in two halves of 8. */
typedef struct tsum8x2 {
	__m256i lo, hi;
	int t, in;
} tsum8x2;

/* Group g (columns 0-7 in lo, 8-15 in hi, 4 bytes each) to bb, and its
 * column sums (maddubs with ones sums byte pairs, madd the pairs) into
 * the running tile sum; a finished tile's -off * sum to cr. */
AVX2_T static inline __attribute__((always_inline)) void
emit_group_avx2(__m256i lo, __m256i hi, int g, int K4, int tile4, int off, int8_t *bb, int32_t *cr,
		tsum8x2 *ts)
{
	_mm256_storeu_si256((__m256i *)(bb + (size_t)g * 64), lo);
	_mm256_storeu_si256((__m256i *)(bb + (size_t)g * 64 + 32), hi);
	if (!off)
		return;
	const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
	ts->lo = _mm256_add_epi32(ts->lo, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, lo), ones16));
	ts->hi = _mm256_add_epi32(ts->hi, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, hi), ones16));
	if (++ts->in == tile4 || g == K4 - 1) {
		const __m256i m = _mm256_set1_epi32(-off);
		_mm256_storeu_si256((__m256i *)(cr + (size_t)ts->t * 16), _mm256_mullo_epi32(ts->lo, m));
		_mm256_storeu_si256((__m256i *)(cr + (size_t)ts->t * 16 + 8), _mm256_mullo_epi32(ts->hi, m));
		ts->lo = ts->hi = _mm256_setzero_si256();
		ts->in = 0;
		ts->t++;
	}
}

/* 8 x 8 transpose of 32-bit lanes: r[g] becomes lane g of every input. */
AVX2_T static inline __attribute__((always_inline)) void tr8_epi32(__m256i r[8])
{
	__m256i t[8], u[8];
	for (int i = 0; i < 4; i++) {
		t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
		t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
	}
	for (int i = 0; i < 2; i++) {
		u[4 * i] = _mm256_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
		u[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
		u[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
		u[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
	}
	for (int i = 0; i < 4; i++) {
		r[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
		r[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
	}
}

/* gemm_x86_pack_b16 with AVX2: 32 bytes (8 groups) of each of the 16 rows,
 * two 8 x 8 transposes, which leave group g of columns 0-7 and 8-15 in
 * one register each; zeros past K and past nr. */
AVX2_T void gemm_x86_pack_b16_avx2(const int8_t *rows, int nr, int K, int K4, int tile4,
				   int ntiles, int off, int8_t *bb, int32_t *cr)
{
	tsum8x2 ts = {_mm256_setzero_si256(), _mm256_setzero_si256(), 0, 0};
	for (int g0 = 0; g0 < K4; g0 += 8) {
		const int nb = K - 4 * g0 < 32 ? K - 4 * g0 : 32; /* >= 1: 4 (K4 - 1) < K */
		__m256i r[16];
		for (int l = 0; l < 16; l++) {
			if (l >= nr) {
				r[l] = _mm256_setzero_si256();
				continue;
			}
			const int8_t *src = rows + (size_t)l * K + 4 * g0;
			if (nb == 32) {
				r[l] = _mm256_loadu_si256((const __m256i *)src);
			} else {
				int8_t tmp[32] = {0};
				memcpy(tmp, src, (size_t)nb);
				r[l] = _mm256_loadu_si256((const __m256i *)tmp);
			}
		}
		tr8_epi32(r);
		tr8_epi32(r + 8);
		const int ng = K4 - g0 < 8 ? K4 - g0 : 8;
		for (int g = 0; g < ng; g++)
			emit_group_avx2(r[g], r[8 + g], g0 + g, K4, tile4, off, bb, cr, &ts);
	}
	if (!off)
		memset(cr, 0, sizeof(int32_t) * 16 * (size_t)ntiles);
}

/* One group of a strip (codes[k * 16 + l], 4 rows of k) as [l][4 bytes]:
 * bytes of rows k0, k1 and k2, k3 interleaved, then their pairs. */
AVX2_T static inline __attribute__((always_inline)) void group_avx2(const int8_t *codes, __m256i *lo,
								 __m256i *hi)
{
	const __m128i x0 = _mm_loadu_si128((const __m128i *)codes);
	const __m128i x1 = _mm_loadu_si128((const __m128i *)(codes + 16));
	const __m128i x2 = _mm_loadu_si128((const __m128i *)(codes + 32));
	const __m128i x3 = _mm_loadu_si128((const __m128i *)(codes + 48));
	const __m128i t0 = _mm_unpacklo_epi8(x0, x1), t1 = _mm_unpackhi_epi8(x0, x1);
	const __m128i t2 = _mm_unpacklo_epi8(x2, x3), t3 = _mm_unpackhi_epi8(x2, x3);
	*lo = _mm256_set_m128i(_mm_unpackhi_epi16(t0, t2), _mm_unpacklo_epi16(t0, t2));
	*hi = _mm256_set_m128i(_mm_unpackhi_epi16(t1, t3), _mm_unpacklo_epi16(t1, t3));
}

/* gemm_x86_pack_strip16 with AVX2.  As there, the tile sums take every
 * row of the strip, so the rows from K on must be zero (gemm.h). */
AVX2_T void gemm_x86_pack_strip16_avx2(const int8_t *codes, int K4, int tile4, int ntiles, int off,
				       int8_t *bb, int32_t *cr)
{
	tsum8x2 ts = {_mm256_setzero_si256(), _mm256_setzero_si256(), 0, 0};
	for (int g = 0; g < K4; g++) {
		__m256i lo, hi;
		group_avx2(codes + (size_t)g * 64, &lo, &hi);
		emit_group_avx2(lo, hi, g, K4, tile4, off, bb, cr, &ts);
	}
	if (!off)
		memset(cr, 0, sizeof(int32_t) * 16 * (size_t)ntiles);
}

/* 16 x 16 byte transpose: x[k] (16 columns of row k) becomes x[l] (16 k
 * of column l), in four rounds of unpacks of doubling width. */
AVX2_T static inline __attribute__((always_inline)) void tr16_epi8(__m128i x[16])
{
	__m128i a[16], b[16];
	for (int i = 0; i < 8; i++) {
		a[2 * i] = _mm_unpacklo_epi8(x[2 * i], x[2 * i + 1]);
		a[2 * i + 1] = _mm_unpackhi_epi8(x[2 * i], x[2 * i + 1]);
	}
	for (int q = 0; q < 4; q++) { /* k 4q..4q+3: columns 0-3, 4-7, 8-11, 12-15 */
		b[4 * q] = _mm_unpacklo_epi16(a[4 * q], a[4 * q + 2]);
		b[4 * q + 1] = _mm_unpackhi_epi16(a[4 * q], a[4 * q + 2]);
		b[4 * q + 2] = _mm_unpacklo_epi16(a[4 * q + 1], a[4 * q + 3]);
		b[4 * q + 3] = _mm_unpackhi_epi16(a[4 * q + 1], a[4 * q + 3]);
	}
	for (int h = 0; h < 2; h++) /* k 8h..8h+7: column pairs */
		for (int m = 0; m < 4; m++) {
			a[8 * h + 2 * m] = _mm_unpacklo_epi32(b[8 * h + m], b[8 * h + 4 + m]);
			a[8 * h + 2 * m + 1] = _mm_unpackhi_epi32(b[8 * h + m], b[8 * h + 4 + m]);
		}
	for (int m = 0; m < 8; m++) {
		x[2 * m] = _mm_unpacklo_epi64(a[m], a[m + 8]);
		x[2 * m + 1] = _mm_unpackhi_epi64(a[m], a[m + 8]);
	}
}

/* gemm_x86_pack_a_strip16 with AVX2: 16 k at a time transposed, the
 * offset added below K, zeros from K on (codes there need not be). */
AVX2_T void gemm_x86_pack_a_strip16_avx2(const int8_t *codes, int ni, int K, int K4, int off,
					 uint8_t *a, size_t rs)
{
	const __m128i voff = _mm_set1_epi8((char)off);
	const __m128i idx = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	const int nk_all = K4 * 4; /* rows of the strip */
	for (int k0 = 0; k0 < nk_all; k0 += 16) {
		__m128i x[16];
		for (int k = 0; k < 16; k++)
			x[k] = k0 + k < nk_all ? _mm_loadu_si128((const __m128i *)(codes + (size_t)(k0 + k) * 16))
					       : _mm_setzero_si128();
		tr16_epi8(x);
		const int below = K - k0 < 16 ? (K - k0 > 0 ? K - k0 : 0) : 16;
		const __m128i keep = _mm_cmpgt_epi8(_mm_set1_epi8((char)below), idx);
		const int nb = nk_all - k0 < 16 ? nk_all - k0 : 16; /* bytes of each row here */
		for (int l = 0; l < ni; l++) {
			const __m128i v = _mm_and_si128(_mm_add_epi8(x[l], voff), keep);
			uint8_t *d = a + (size_t)l * rs + k0;
			if (nb == 16) {
				_mm_storeu_si128((__m128i *)d, v);
			} else {
				uint8_t tmp[16];
				_mm_storeu_si128((__m128i *)tmp, v);
				memcpy(d, tmp, (size_t)nb);
			}
		}
	}
}

/* ---------------- float transpose, AVX2 ---------------- */

/* 8x8 blocks transposed in registers (tr8_epi32); the ragged
 * edges are copied element by element.  Pure data movement: identical to
 * the portable loop. */
AVX2_T void gemm_x86_transpose(const float *in, int rows, int cols, int ldi, float *out, int ldo)
{
	int r0 = 0;
	for (; r0 + 8 <= rows; r0 += 8) {
		int c0 = 0;
		for (; c0 + 8 <= cols; c0 += 8) {
			const float *s = in + (long)r0 * ldi + c0;
			__m256i v[8];
			for (int r = 0; r < 8; r++)
				v[r] = _mm256_castps_si256(_mm256_loadu_ps(s + (long)r * ldi));
			tr8_epi32(v); /* the packers' 8 x 8 transpose: bits moved, not floats */
			float *d = out + (long)c0 * ldo + r0;
			for (int c = 0; c < 8; c++)
				_mm256_storeu_ps(d + (long)c * ldo, _mm256_castsi256_ps(v[c]));
		}
		for (int r = r0; r < r0 + 8; r++)
			for (int c = c0; c < cols; c++)
				out[(long)c * ldo + r] = in[(long)r * ldi + c];
	}
	for (int r = r0; r < rows; r++)
		for (int c = 0; c < cols; c++)
			out[(long)c * ldo + r] = in[(long)r * ldi + c];
}

/* ---------------- float, AVX2 + FMA ---------------- */

/* C = A . B, rows of A blocked by 4, columns in 8-wide vectors; the scalar
 * column tail keeps the same accumulation order per element. */
AVX2_T void gemm_x86_f32_nn(const float *A, const float *B, int I, int J, int K, float *C)
{
	int i = 0;
	for (; i + 4 <= I; i += 4) {
		const float *a0 = A + (long)i * K, *a1 = a0 + K, *a2 = a1 + K, *a3 = a2 + K;
		float *c0 = C + (long)i * J, *c1 = c0 + J, *c2 = c1 + J, *c3 = c2 + J;
		int j = 0;
		for (; j + 16 <= J; j += 16) {
			__m256i z = _mm256_setzero_si256();
			__m256 x00 = _mm256_castsi256_ps(z), x01 = x00, x10 = x00, x11 = x00,
			       x20 = x00, x21 = x00, x30 = x00, x31 = x00;
			for (int k = 0; k < K; k++) {
				const float *b = B + (long)k * J + j;
				__m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
				__m256 v0 = _mm256_set1_ps(a0[k]), v1 = _mm256_set1_ps(a1[k]);
				__m256 v2 = _mm256_set1_ps(a2[k]), v3 = _mm256_set1_ps(a3[k]);
				x00 = _mm256_fmadd_ps(v0, b0, x00); x01 = _mm256_fmadd_ps(v0, b1, x01);
				x10 = _mm256_fmadd_ps(v1, b0, x10); x11 = _mm256_fmadd_ps(v1, b1, x11);
				x20 = _mm256_fmadd_ps(v2, b0, x20); x21 = _mm256_fmadd_ps(v2, b1, x21);
				x30 = _mm256_fmadd_ps(v3, b0, x30); x31 = _mm256_fmadd_ps(v3, b1, x31);
			}
			_mm256_storeu_ps(c0 + j, x00); _mm256_storeu_ps(c0 + j + 8, x01);
			_mm256_storeu_ps(c1 + j, x10); _mm256_storeu_ps(c1 + j + 8, x11);
			_mm256_storeu_ps(c2 + j, x20); _mm256_storeu_ps(c2 + j + 8, x21);
			_mm256_storeu_ps(c3 + j, x30); _mm256_storeu_ps(c3 + j + 8, x31);
		}
		for (; j < J; j++) {
			float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
			for (int k = 0; k < K; k++) {
				float b = B[(long)k * J + j];
				s0 += a0[k] * b; s1 += a1[k] * b; s2 += a2[k] * b; s3 += a3[k] * b;
			}
			c0[j] = s0; c1[j] = s1; c2[j] = s2; c3[j] = s3;
		}
	}
	for (; i < I; i++) {
		const float *a = A + (long)i * K;
		float *c = C + (long)i * J;
		int j = 0;
		for (; j + 8 <= J; j += 8) {
			__m256 x = _mm256_setzero_ps();
			for (int k = 0; k < K; k++)
				x = _mm256_fmadd_ps(_mm256_set1_ps(a[k]), _mm256_loadu_ps(B + (long)k * J + j), x);
			_mm256_storeu_ps(c + j, x);
		}
		for (; j < J; j++) {
			float s = 0;
			for (int k = 0; k < K; k++)
				s += a[k] * B[(long)k * J + j];
			c[j] = s;
		}
	}
}
#endif /* HDQT_X86_64 */
