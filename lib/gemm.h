/* SPDX-License-Identifier: MIT */
/*
 * Integer GEMM with per-tile accumulator clamping, and the float GEMMs of
 * the fp32 reference.  All integer products are C = A . B^T with the
 * reduction dimension K contiguous in both operands.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct gemm_params {
	int tile;     /* reduction tile (>= 1); a tile >= K is one tile */
	int acc_bits; /* tile sums are clamped to [-2^(a-1), 2^(a-1) - 1] */
	int bits;     /* operand bits (<= 8; <= 7 for unsigned A, stored in int8):
			 * A within [0, 2^b-1] or [-(2^(b-1)-1), 2^(b-1)-1] */
	int a_signed; /* A holds signed values */
} gemm_params;

/* Grow-only scratch for packing; zero-initialise, release with gemm_ws_free. */
typedef struct gemm_ws {
	void *buf;
	size_t cap;
} gemm_ws;
void gemm_ws_free(gemm_ws *ws);

/* Portable reference: the source of truth.  Returns 0, or HDQT_ERANGE when the
 * wide int32 sum could overflow (too many tiles for acc_bits), HDQT_EINVAL on
 * bad shapes. */
int gemm_q_ref(const int8_t *A, const int8_t *B, int I, int J, int K,
	       const gemm_params *p, int32_t *C);
/* The same result through the fastest kernel chosen at start-up. */
int gemm_q(gemm_ws *ws, const int8_t *A, const int8_t *B, int I, int J, int K,
	   const gemm_params *p, int32_t *C);
/* B packed once for many products with different A (inference reuses the
 * packed weights of a layer).  Zero-initialise; release with gemm_packed_free. */
typedef struct gemm_packed {
	void *mem;
	size_t cap;
	int8_t *raw;          /* J x K codes for the reference path (NULL under a kernel layout) */
	int8_t *Bp;           /* kernel layout */
	int32_t *corr;
	int J, K, K4, tile4, ntiles, off, kernel;
	gemm_params p;
} gemm_packed;
int gemm_pack(gemm_packed *pb, const int8_t *B, int J, int K, const gemm_params *p);
/* Tests and benches (before any worker starts, as hdqt_kernel_select):
 * the tiles-in-lanes layout for tiles of 8 on (1), off (0) or as this CPU
 * has it by default (-1; HDQT_GEMM_TL8=0/1 sets it at start-up).  Returns
 * the setting now in force.  Results are the same bit for bit either way. */
int gemm_tl8_select(int on);
/* gemm_pack in two steps, for callers that pack column blocks on several
 * threads: begin sizes pb and returns the number of 16-column blocks to
 * pack (0: the reference's copy is all there is), or an error; then
 * gemm_pack_blocks(pb, B, b0, b1) for disjoint ranges covering them. */
int gemm_pack_begin(gemm_packed *pb, const int8_t *B, int J, int K, const gemm_params *p);
void gemm_pack_blocks(gemm_packed *pb, const int8_t *B, int b0, int b1);
/* Block jb alone from its own rows (rows 16 jb .. of B, K codes each,
 * min(16, J - 16 jb) of them), after gemm_pack_begin: for callers that make
 * B block by block (the weights, as SGD updates them). */
void gemm_pack_rows(gemm_packed *pb, int jb, const int8_t *rows);
/* Operands built straight from strips of 16 columns, k-major: codes[k * 16 + l]
 * is element (row j0 + l, k) of the operand, for k < 4 ceil(K / 4) (zero from K on,
 * and in columns past the operand's rows).  gemm_pack_begin with B NULL
 * sizes pb; gemm_pack_strip then fills column block jb (rows 16 jb ..) of
 * B, for every block.  gemm_pack_a_strip writes rows [i0, i0 + ni) of A in
 * the layout gemm_q_apacked reads for pb's kernel (gemm_a_stride bytes per
 * row), and gemm_q_apacked multiplies it: gemm_q's integers, with no
 * separate transpose or packing pass. */
void gemm_pack_strip(gemm_packed *pb, int jb, const int8_t *codes);
size_t gemm_a_stride(const gemm_packed *pb);
void gemm_pack_a_strip(const gemm_packed *pb, int i0, int ni, const int8_t *codes, void *A);
int gemm_q_apacked(const void *A, int I, const gemm_packed *pb, int32_t *C);
/* C = A . B^T with B from gemm_pack (same params); identical to gemm_q. */
int gemm_q_packed(gemm_ws *ws, const int8_t *A, int I, const gemm_packed *pb, int32_t *C);

/* An integer product back to floats: Y[i][j] = (float)C[i][j] * (sa[i] *
 * inv) * sb[j], multiplied in that order on every path (the same floats). */
typedef struct gemm_rescale {
	const float *sa, *sb;
	float inv;
} gemm_rescale;
void gemm_rescale_rows(const int32_t *C, int I, int J, const gemm_rescale *e, float *Y);
/* gemm_q_packed and gemm_q_apacked followed by gemm_rescale_rows, the same
 * floats; kernels with a float store (fnf) rescale each output vector in
 * registers, and the int32 C never goes to memory.  ws: scratch (the
 * packed A, and C where the kernel has no float store). */
int gemm_q_packed_f(gemm_ws *ws, const int8_t *A, int I, const gemm_packed *pb,
		    const gemm_rescale *e, float *Y);
int gemm_q_apacked_f(gemm_ws *ws, const void *A, int I, const gemm_packed *pb,
		     const gemm_rescale *e, float *Y);
void gemm_packed_free(gemm_packed *pb);
/* 1 if pb holds a packing of J x K codes under p. */
int gemm_packed_matches(const gemm_packed *pb, int J, int K, const gemm_params *p);

/* How many tile sums of the last gemm_q_ref call were clamped (test hook). */
long gemm_q_ref_count_clamped(const int8_t *A, const int8_t *B, int I, int J, int K,
			      const gemm_params *p);

/* Float: C (I x J) = A (I x K) . B (K x J). */
void gemm_f32_nn(const float *A, const float *B, int I, int J, int K, float *C);
/* Float transpose: out (cols x rows) = in (rows x cols)^T. */
void gemm_transpose(const float *in, int rows, int cols, float *out);
void gemm_transpose_ref(const float *in, int rows, int cols, float *out);
/* The same on a block inside larger matrices: out[c * ldo + r] = in[r * ldi + c]
 * for r < rows, c < cols (a block of rows of a transpose is a block of
 * columns of its result: threads split a transpose so). */
void gemm_transpose_ld(const float *in, int rows, int cols, int ldi, float *out, int ldo);
void gemm_transpose_ld_ref(const float *in, int rows, int cols, int ldi, float *out, int ldo);

/* Kernel table: packed operands (see gemm.c for the layout). */
typedef void (*gemm_kern_fn)(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr,
			     int I, int J, int K4, int tile4, int ntiles,
			     int32_t lo, int32_t hi, int32_t *C);
/* Kernels on unshifted signed bytes (aarch64): Ap holds A itself (off = 0,
 * corr unused and zero), multiplied as s8 x s8.  maxprod bounds |a * b|
 * from the operand bits (gemm_params' ranges), for kernels that keep
 * partial sums narrower than int32. */
typedef void (*gemm_kern_s8_fn)(const int8_t *Ap, const int8_t *Bp, int I, int J, int K4,
				int tile4, int ntiles, int maxprod, int32_t lo, int32_t hi,
				int32_t *C);
/* fn with the rescale in its store: floats into Y (gemm_rescale_rows' floats). */
typedef void (*gemm_kern_f_fn)(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I,
			       int J, int K4, int tile4, int ntiles, int32_t lo, int32_t hi,
			       const gemm_rescale *e, float *Y);
typedef struct gemm_kernel {
	const char *name;
	gemm_kern_fn fn;     /* NULL (and fn_s8 NULL): the scalar reference */
	int max_bits;        /* widest operands the kernel is exact for */
	gemm_kern_s8_fn fn_s8; /* set instead of fn: packed without the offset */
	int tgroups;         /* fn_s8 with each 4-byte group of B stored k-major:
				[4 bytes of k][16 columns] (a compiler vectorises that) */
	gemm_kern_f_fn fnf;  /* fn with the float store, or NULL */
	/* The tiles-in-lanes layout (gemm_x86_tl.c) for 8-bit accumulators:
	 * bit t of tl4 set where it takes tiles of 4 t bytes; its kernel with
	 * and without the float store; tl4 0 where the kernel has none. */
	int tl4;
	gemm_kern_fn fn_tl;
	gemm_kern_f_fn fnf_tl;
	/* fn where a tile's whole sum fits int16 (gemm.c's n16_fits), or
	 * NULL; and with the float store */
	gemm_kern_fn fn_n16;
	gemm_kern_f_fn fnf_n16;
	/* fn where only each 16-bit lane of a tile's pair sums fits
	 * (n16_lanes_fit), or NULL; and with the float store */
	gemm_kern_fn fn_n16l;
	gemm_kern_f_fn fnf_n16l;
} gemm_kernel;

/* Variants compiled for x86-64 (gemm_x86.c); supported() checks the CPU. */
int gemm_x86_avx2_supported(void);
int gemm_x86_avxvnni_supported(void);
int gemm_x86_avx512vnni_supported(void);
void gemm_x86_avx2(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,
		   int K4, int tile4, int ntiles, int32_t lo, int32_t hi, int32_t *C);
void gemm_x86_avx2_n16(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,
		   int K4, int tile4, int ntiles, int32_t lo, int32_t hi, int32_t *C);
void gemm_x86_avx2_r4(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,
		      int K4, int tile4, int ntiles, int32_t lo, int32_t hi, int32_t *C);
void gemm_x86_avxvnni(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,
		      int K4, int tile4, int ntiles, int32_t lo, int32_t hi, int32_t *C);
/* The three 256-bit kernels with the float store (gemm_kern_f_fn). */
void gemm_x86_avx2_f(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,
		     int K4, int tile4, int ntiles, int32_t lo, int32_t hi, const gemm_rescale *e,
		     float *Y);
void gemm_x86_avx2_n16_f(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,
			 int K4, int tile4, int ntiles, int32_t lo, int32_t hi,
			 const gemm_rescale *e, float *Y);
void gemm_x86_avx2_r4_f(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,
			int K4, int tile4, int ntiles, int32_t lo, int32_t hi, const gemm_rescale *e,
			float *Y);
void gemm_x86_avxvnni_f(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J,
			int K4, int tile4, int ntiles, int32_t lo, int32_t hi, const gemm_rescale *e,
			float *Y);
void gemm_x86_avx512vnni(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I,
			 int J, int K4, int tile4, int ntiles, int32_t lo, int32_t hi,
			 int32_t *C);
void gemm_x86_avx512vnni_f(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I,
			   int J, int K4, int tile4, int ntiles, int32_t lo, int32_t hi,
			   const gemm_rescale *e, float *Y);
void gemm_x86_transpose(const float *in, int rows, int cols, int ldi, float *out, int ldo);
/* pack_b_blocks (gemm.c) for one block of the offset layout, AVX-512 VNNI:
 * nr rows of K codes into bb (K4 groups of 64 bytes), tile sums into cr. */
void gemm_x86_pack_b16(const int8_t *rows, int nr, int K, int K4, int tile4, int ntiles, int off,
		       int8_t *bb, int32_t *cr);
/* With AVX-512 VBMI (byte permutes) too: gemm_pack_strip's offset layout
 * and gemm_pack_a_strip's rows from a strip of codes. */
int gemm_x86_vbmi_supported(void);
int gemm_x86_avx512_halves(void); /* AVX-512 in 256-bit halves (Zen 4) */
void gemm_x86_pack_strip16(const int8_t *codes, int K4, int tile4, int ntiles, int off, int8_t *bb,
			   int32_t *cr);
void gemm_x86_pack_a_strip16(const int8_t *codes, int ni, int K, int K4, int off, uint8_t *a,
			     size_t rs);
/* The three packers above with AVX2 only (the same bytes and sums). */
void gemm_x86_pack_b16_avx2(const int8_t *rows, int nr, int K, int K4, int tile4, int ntiles,
			    int off, int8_t *bb, int32_t *cr);
void gemm_x86_pack_strip16_avx2(const int8_t *codes, int K4, int tile4, int ntiles, int off,
				int8_t *bb, int32_t *cr);
void gemm_x86_pack_a_strip16_avx2(const int8_t *codes, int ni, int K, int K4, int off, uint8_t *a,
				  size_t rs);
void gemm_x86_f32_nn(const float *A, const float *B, int I, int J, int K, float *C);
/* The tiles-in-lanes layout, AVX-512 VNNI (gemm_x86_tl.c): its kernel
 * (tile4 2 or 8), rows of A into it (pack_a's job) and one block of B
 * (pack_b16's). */
void gemm_x86_tl(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J, int K4,
		 int tile4, int ntiles, int32_t lo, int32_t hi, int32_t *C);
void gemm_x86_tl_f(const uint8_t *Ap, const int8_t *Bp, const int32_t *corr, int I, int J, int K4,
		   int tile4, int ntiles, int32_t lo, int32_t hi, const gemm_rescale *e, float *Y);
void gemm_x86_tl_pack_a(const int8_t *A, int I, int K, int K4, int tile4, int off, uint8_t *Ap);
void gemm_x86_tl_pack_b16(const int8_t *rows, int nr, int K, int K4, int tile4, int off,
			  int8_t *bb, int32_t *cr);
/* The same from strips (gemm_pack_strip, gemm_pack_a_strip), with VBMI. */
void gemm_x86_tl_pack_strip16(const int8_t *codes, int K, int K4, int tile4, int off, int8_t *bb,
			      int32_t *cr);
void gemm_x86_tl_pack_a_strip16(const int8_t *codes, int ni, int K, int K4, int tile4, int off,
				uint8_t *a, size_t rs);

/* Plain C for any architecture, written to vectorise (gemm_portable.c),
 * on the fn_s8 layout with k-major groups (tgroups). */
void gemm_portable_s8(const int8_t *Ap, const int8_t *Bp, int I, int J, int K4, int tile4,
		      int ntiles, int maxprod, int32_t lo, int32_t hi, int32_t *C);

/* Variants compiled for aarch64 (gemm_arm.c, gemm_arm_dot.c): NEON v8.0
 * widening multiplies, and the ARMv8.2 dot product (SDOT).  supported()
 * reads getauxval(AT_HWCAP). */
int gemm_arm_neon_supported(void);
int gemm_arm_dotprod_supported(void);
void gemm_arm_neon(const int8_t *Ap, const int8_t *Bp, int I, int J, int K4, int tile4,
		   int ntiles, int maxprod, int32_t lo, int32_t hi, int32_t *C);
void gemm_arm_dotprod(const int8_t *Ap, const int8_t *Bp, int I, int J, int K4, int tile4,
		      int ntiles, int maxprod, int32_t lo, int32_t hi, int32_t *C);
