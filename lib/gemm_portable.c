/* SPDX-License-Identifier: MIT */
/*
 * The tile-clamped GEMM in plain C that a compiler vectorises on any
 * architecture: what a box without the x86 or ARM kernels (RISC-V,
 * POWER, a -Dsimd=false build) runs instead of the reference loop.
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

HDQT_CLONES void gemm_portable_s8(const int8_t *Ap, const int8_t *Bp, int I, int J, int K4,
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
