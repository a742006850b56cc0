/* SPDX-License-Identifier: MIT */
/*
 * The tile-clamped GEMM in plain C that a compiler vectorises on any
 * architecture: what a box without the x86 or ARM kernels (RISC-V,
 * POWER, a -Dsimd=false build) runs instead of the reference loop.
 *
 * Two paths on the same layout.  Where a tile's sum fits 16 bits (4-bit
 * operands: 32 k x 105 = 3360) and the tile fits a chunk, fast16 keeps
 * every sum in 16-bit lanes of GCC/Clang vector types (any architecture
 * they target lowers them to its own SIMD, or to scalars): 4 rows x 16
 * columns of tile sums stay in registers, each k is one widened load of
 * B and, per row, a multiply and an add with A's value, broadcast once
 * per chunk into a buffer.  Written as loops over arrays instead, GCC 12
 * kept the sums in memory (a load and a store per row and k: 3.2 GMAC/s
 * on a Xeon at -O2 against fast16's 10); as 32-byte vectors, SSE2 split
 * them through the stack.  wide_s8, the general path, is the plain loop:
 *
 * Layout (gemm.c, fn_s8 with tgroups): A's own signed bytes; B in blocks
 * of 16 columns whose 4-byte groups of k are stored k-major, [4][16], so
 * that for each k the 16 columns are contiguous bytes.  One row of A
 * against a block: for each k, 16 column sums += a[k] * b[k][c], a loop
 * over contiguous columns that GCC and Clang turn into widening multiplies
 * (with the interleaved [16][4] groups of the SIMD kernels they did not:
 * 3.3 GMAC/s, the reference's rate).  Each product is formed in 16 bits
 * (operands are at most 127 in magnitude: gemm_params' ranges, so
 * |a b| <= 16129 fits), which lets the vectoriser use 16-bit multiplies
 * before widening into the int32 sums.  Sums are int32
 * (exact for any int8 operands); each tile's sum is clamped after its last
 * group and added to the wide total: gemm_q_ref's integers bit for bit.
 */
#include <string.h>

#include "gemm.h"
#include "simd.h"

static void wide_s8(const int8_t *Ap, const int8_t *Bp, int I, int J, int K4,
				  int tile4, int ntiles, int maxprod, int32_t lo, int32_t hi,
				  int32_t *C)
{
	const int J16 = (J + 15) / 16;
	/* Four rows of A at a time: each k's 16 column bytes of B are widened
	 * once and serve the four rows. */
	for (int i0 = 0; i0 < I; i0 += 4) {
		const int nr = I - i0 < 4 ? I - i0 : 4;
		/* rows past I repeat row i0 (computed, not stored): fixed trip
		 * counts keep every compiler and level on the same loops */
		const int8_t *ar[4];
		for (int r = 0; r < 4; r++)
			ar[r] = Ap + (size_t)(i0 + (r < nr ? r : 0)) * K4 * 4;
		for (int jb = 0; jb < J16; jb++) {
			const int8_t *bb = Bp + (size_t)jb * K4 * 64;
			int32_t wide[4][16] = {{0}};
			for (int t = 0; t < ntiles; t++) {
				const int g0 = t * tile4, g1 = g0 + tile4 < K4 ? g0 + tile4 : K4;
				const int nk = (g1 - g0) * 4;
				const int8_t *bk = bb + (size_t)g0 * 64;
				int32_t s[4][16] = {{0}};
				if ((long)nk * maxprod <= 32767) {
					/* the whole tile's sum fits 16 bits (4-bit operands:
					 * 32 k x 105): 16-bit lanes, twice as many per vector */
					int16_t s16[4][16] = {{0}};
					for (int k = 0; k < nk; k++) {
						int16_t bw[16];
						for (int c = 0; c < 16; c++)
							bw[c] = bk[(size_t)k * 16 + c];
						for (int r = 0; r < 4; r++) {
							const int16_t av = ar[r][(size_t)g0 * 4 + k];
							for (int c = 0; c < 16; c++)
								s16[r][c] = (int16_t)(s16[r][c] + av * bw[c]);
						}
					}
					for (int r = 0; r < 4; r++)
						for (int c = 0; c < 16; c++)
							s[r][c] = s16[r][c];
				} else {
					for (int k = 0; k < nk; k++) {
						int16_t bw[16];
						for (int c = 0; c < 16; c++)
							bw[c] = bk[(size_t)k * 16 + c];
						for (int r = 0; r < 4; r++) {
							const int16_t av = ar[r][(size_t)g0 * 4 + k];
							for (int c = 0; c < 16; c++)
								s[r][c] += (int32_t)(int16_t)(av * bw[c]);
						}
					}
				}
				for (int r = 0; r < 4; r++)
					for (int c = 0; c < 16; c++)
						wide[r][c] += s[r][c] < lo ? lo : (s[r][c] > hi ? hi : s[r][c]);
			}
			const int n = J - jb * 16 < 16 ? J - jb * 16 : 16;
			for (int r = 0; r < nr; r++)
				memcpy(C + (size_t)(i0 + r) * J + (size_t)jb * 16, wide[r], sizeof(int32_t) * (size_t)n);
		}
	}
}

#if defined(__GNUC__) /* GCC and Clang: vector extensions */
typedef int16_t v8s __attribute__((vector_size(16)));
typedef int8_t v8b __attribute__((vector_size(8)));

/* k per chunk: A's broadcast values for 4 rows take KC * 64 bytes. */
#define KC 256

/* 8 columns of B at k, widened to 16 bits. */
#define LOAD8(dst, p)                                                                              \
	do {                                                                                       \
		v8b b_;                                                                            \
		memcpy(&b_, (p), 8);                                                               \
		(dst) = __builtin_convertvector(b_, v8s);                                          \
	} while (0)
/* s = min(max(s, l), h) with masks (C has no vector ?:). */
#define CLAMP(s)                                                                                   \
	do {                                                                                       \
		v8s m_ = (s) < l;                                                                  \
		(s) = ((s) & ~m_) | (l & m_);                                                      \
		m_ = (s) > h;                                                                      \
		(s) = ((s) & ~m_) | (h & m_);                                                      \
	} while (0)

/* tl (k per tile) <= KC and tl * maxprod <= 32767: every tile sum, and a
 * chunk's sum of clamped tile sums (the chunk is cut so), fits int16; the
 * bounds are cut to +-32767, which changes no sum that fits.  Chunks add
 * into C in int32. */
static void fast16(const int8_t *Ap, const int8_t *Bp, int I, int J, int K, int tl, int32_t lo,
		   int32_t hi, int32_t *C)
{
	const int J16 = (J + 15) / 16;
	const int16_t l16 = (int16_t)(lo < -32767 ? -32767 : lo), h16 = (int16_t)(hi > 32767 ? 32767 : hi);
	const int mag = -l16 > h16 ? -l16 : h16;
	const int per = KC / tl < 32767 / mag ? KC / tl : 32767 / mag; /* tiles per chunk, >= 1 */
	const int kc = per * tl;
	const v8s l = (v8s){0} + l16, h = (v8s){0} + h16;
	v8s abuf[KC * 4];
	for (int i0 = 0; i0 < I; i0 += 4) {
		const int nr = I - i0 < 4 ? I - i0 : 4;
		for (int c0 = 0; c0 < K; c0 += kc) {
			const int c1 = c0 + kc < K ? c0 + kc : K;
			/* rows past I repeat row i0 (computed, not stored) */
			for (int k = c0; k < c1; k++)
				for (int r = 0; r < 4; r++)
					abuf[(k - c0) * 4 + r] =
						(v8s){0} + (int16_t)Ap[(size_t)(i0 + (r < nr ? r : 0)) * K + k];
			for (int jb = 0; jb < J16; jb++) {
				const int8_t *bb = Bp + (size_t)jb * K * 16;
				v8s w0 = {0}, w1 = {0}, w2 = {0}, w3 = {0}, w4 = {0}, w5 = {0}, w6 = {0}, w7 = {0};
				for (int k0 = c0; k0 < c1; k0 += tl) {
					const int k1 = k0 + tl < c1 ? k0 + tl : c1;
					v8s s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0}, s4 = {0}, s5 = {0}, s6 = {0}, s7 = {0};
					const v8s *a = abuf + (size_t)(k0 - c0) * 4;
					/* k1 - k0 is a multiple of 4 (whole groups): a constant
					 * inner trip count that -O2 unrolls (1.3x there) */
					for (int k = k0; k < k1; k += 4, a += 16) {
						for (int u = 0; u < 4; u++) {
							v8s bl, bh;
							LOAD8(bl, bb + (size_t)(k + u) * 16);
							LOAD8(bh, bb + (size_t)(k + u) * 16 + 8);
							const v8s *au = a + 4 * u;
							s0 += au[0] * bl;
							s1 += au[0] * bh;
							s2 += au[1] * bl;
							s3 += au[1] * bh;
							s4 += au[2] * bl;
							s5 += au[2] * bh;
							s6 += au[3] * bl;
							s7 += au[3] * bh;
						}
					}
					CLAMP(s0);
					CLAMP(s1);
					CLAMP(s2);
					CLAMP(s3);
					CLAMP(s4);
					CLAMP(s5);
					CLAMP(s6);
					CLAMP(s7);
					w0 += s0, w1 += s1, w2 += s2, w3 += s3;
					w4 += s4, w5 += s5, w6 += s6, w7 += s7;
				}
				const v8s w[8] = {w0, w1, w2, w3, w4, w5, w6, w7};
				const int n = J - jb * 16 < 16 ? J - jb * 16 : 16;
				for (int r = 0; r < nr; r++) {
					int32_t *c = C + (size_t)(i0 + r) * J + (size_t)jb * 16;
					for (int x = 0; x < n; x++) {
						const int32_t v = w[2 * r + x / 8][x % 8];
						c[x] = c0 ? c[x] + v : v;
					}
				}
			}
		}
	}
}
#endif

HDQT_CLONES void gemm_portable_s8(const int8_t *Ap, const int8_t *Bp, int I, int J, int K4,
				  int tile4, int ntiles, int maxprod, int32_t lo, int32_t hi,
				  int32_t *C)
{
#if defined(__GNUC__)
	if (tile4 >= 1 && tile4 * 4 <= KC && (long)tile4 * 4 * maxprod <= 32767) {
		fast16(Ap, Bp, I, J, K4 * 4, tile4 * 4, lo, hi, C);
		return;
	}
#endif
	wide_s8(Ap, Bp, I, J, K4, tile4, ntiles, maxprod, lo, hi, C);
}
