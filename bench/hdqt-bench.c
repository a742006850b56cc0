/* SPDX-License-Identifier: MIT */
/*
 * hdqt-bench: throughput figures, not tests.
 *   - a training step of the default HAPT model (166 -> 512 -> 512 -> 12,
 *     batch 128) in every recipe, as samples per second;
 *   - the tile-clamped integer GEMM per kernel variant, in GMAC/s, next to
 *     the machine's measured int8 dot-product peak (a register-only
 *     vpdpbusd loop) on one core;
 *   - one prediction (one sample in, its class out) per recipe, in us;
 *   - the fast Walsh-Hadamard transform, in M elements per second.
 *   - the HadaNets binary matrix multiply against the fastest fp32 GEMM
 *     of the build (OpenBLAS when present), same shapes, one thread.
 * Single-threaded unless --threads: one training thread is what the daemon uses.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bgemm.h"
#include "blas.h"
#include "config.h"
#include "fwht.h"
#include "gemm.h"
#include "hdqt.h"
#include "hdqt_store.h"
#include "simd.h"

#if HDQT_X86_64
#include <immintrin.h>
#endif

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The benchmarks' model (166-512-512-12, seed 1) in a recipe; NULL on error. */
static hdqt_model *bench_model(hdqt_mode mode)
{
	hdqt_mlp_config c = {.n_in = 166, .n_hidden = 2, .hidden = {512, 512}, .n_classes = 12};
	hdqt_qconfig q;
	hdqt_qconfig_default(&q, mode);
	hdqt_model *m;
	return hdqt_model_new(&m, &c, &q, 1) < 0 ? NULL : m;
}

/* n x 166 standard normal features and (y != NULL) labels in [0, 12), seed 2. */
static void bench_data(float *X, int *y, int n)
{
	hdqt_rng r;
	hdqt_rng_seed(&r, 2, 0);
	for (int i = 0; i < n * 166; i++)
		X[i] = hdqt_rng_normal(&r);
	for (int i = 0; y && i < n; i++)
		y[i] = (int)hdqt_rng_below(&r, 12);
}

/* The fraction of a training step spent in each of the engine's phases
 * (its own timers, hdqt_model_profile), threads threads; frac[COUNT] is
 * the rest (loss, normalisation, copies, scheduling). */
static int bench_phases(hdqt_mode mode, int threads, double min_s, double frac[HDQT_PHASE_COUNT + 1])
{
	hdqt_model *m = bench_model(mode);
	if (!m)
		return -1;
	enum { B = 128 };
	float *X = malloc(sizeof(float) * B * 166);
	int *y = malloc(sizeof(int) * B);
	int rc = X && y && hdqt_model_set_threads(m, threads) == 0 ? 0 : -1;
	if (rc == 0)
		bench_data(X, y, B);
	hdqt_sgd o;
	hdqt_sgd_default(&o);
	hdqt_batch b = {.X = X, .y = y, .n = B};
	for (int i = 0; rc == 0 && i < 5; i++)
		rc = hdqt_model_train_step(m, &b, &o, o.lr, NULL);
	hdqt_model_profile(m, 1);
	double t0 = now_s(), t = 0;
	while (rc == 0 && (t = now_s() - t0) < min_s)
		rc = hdqt_model_train_step(m, &b, &o, o.lr, NULL);
	double sec[HDQT_PHASE_COUNT], sum = 0;
	hdqt_model_profile_read(m, sec);
	for (int i = 0; i < HDQT_PHASE_COUNT; i++) {
		frac[i] = t > 0 ? sec[i] / t : 0;
		sum += frac[i];
	}
	frac[HDQT_PHASE_COUNT] = 1.0 - sum;
	hdqt_model_free(m);
	free(X);
	free(y);
	return rc;
}

/* Inference (forward of a batch of 128), samples per second. */
static double bench_infer(hdqt_mode mode, double min_s)
{
	hdqt_model *m = bench_model(mode);
	if (!m)
		return -1;
	enum { B = 128 };
	float *X = malloc(sizeof(float) * B * 166), *lg = malloc(sizeof(float) * B * 12);
	if (!X || !lg) {
		free(X);
		free(lg);
		hdqt_model_free(m);
		return -1;
	}
	bench_data(X, NULL, B);
	long n = 0;
	double t0 = now_s(), t;
	hdqt_model_forward(m, X, B, lg);
	do {
		if (hdqt_model_forward(m, X, B, lg) < 0)
			break;
		n += B;
		t = now_s() - t0;
	} while (t < min_s);
	hdqt_model_free(m);
	free(X);
	free(lg);
	return n / (now_s() - t0);
}

/* One prediction (one sample's features in, its class out), microseconds:
 * the best of batches of 200 calls, min_s in all. */
static double bench_predict_one(hdqt_mode mode, double min_s)
{
	hdqt_model *m = bench_model(mode);
	if (!m)
		return -1;
	float X[166];
	bench_data(X, NULL, 1);
	int cls;
	double best = 1e30, t0 = now_s();
	if (hdqt_model_predict(m, X, 1, &cls) < 0) { /* weights packed once, as the daemon's */
		hdqt_model_free(m);
		return -1;
	}
	do {
		const double a = now_s();
		for (int i = 0; i < 200; i++)
			hdqt_model_predict(m, X, 1, &cls);
		const double d = (now_s() - a) / 200;
		best = d < best ? d : best;
	} while (now_s() - t0 < min_s);
	hdqt_model_free(m);
	return 1e6 * best;
}

/* Best of a few timings of one call, in microseconds. */
#define BEST_US(expr, min_s, out)                                                                  \
	do {                                                                                       \
		double best_ = 1e30, t0_ = now_s();                                                 \
		do {                                                                               \
			double a_ = now_s();                                                       \
			expr;                                                                      \
			double d_ = now_s() - a_;                                                  \
			best_ = d_ < best_ ? d_ : best_;                                           \
		} while (now_s() - t0_ < (min_s));                                                 \
		(out) = best_ * 1e6;                                                               \
	} while (0)

/* The binary matrix multiply (operands binarised and packed beforehand,
 * as the layer keeps its weights) against the fp32 product X W^T of the
 * same shape: N x K times (M x K)^T. */
static void bench_binary(int beta, int N, int M, int K, double min_s, double *bin_us, double *f32_us)
{
	const int g = beta <= 0 || beta >= K ? K : beta;
	bgemm_a a = {0};
	bgemm_w w = {0};
	float *X = malloc(sizeof(float) * (size_t)N * K), *W = malloc(sizeof(float) * (size_t)M * K);
	float *Y = malloc(sizeof(float) * (size_t)N * M);
	*bin_us = *f32_us = -1;
	if (!X || !W || !Y || bgemm_a_alloc(&a, N, K, g, 1) < 0 || bgemm_w_alloc(&w, M, K, g) < 0)
		goto out;
	hdqt_rng r;
	hdqt_rng_seed(&r, 4, 0);
	for (size_t i = 0; i < (size_t)N * K; i++)
		X[i] = hdqt_rng_normal(&r);
	for (size_t i = 0; i < (size_t)M * K; i++)
		W[i] = hdqt_rng_normal(&r);
	for (size_t i = 0; i < (size_t)N * a.nw; i++)
		a.bits[i] = hdqt_rng_u32(&r);
	for (size_t i = 0; i < (size_t)N * a.ns; i++) {
		a.c[i] = hdqt_rng_uniform(&r);
		a.mu[i] = hdqt_rng_uniform(&r);
	}
	uint32_t *bits = calloc((size_t)a.nw, 4);
	float *c = malloc(sizeof(float) * (size_t)a.ns);
	if (!bits || !c) {
		free(bits);
		free(c);
		goto out;
	}
	for (int m = 0; m < M; m++) {
		for (int i = 0; i < a.nw; i++)
			bits[i] = hdqt_rng_u32(&r);
		for (int s = 0; s < a.ns; s++)
			c[s] = hdqt_rng_uniform(&r);
		bgemm_w_set_row(&w, m, bits, c);
	}
	free(bits);
	free(c);
	BEST_US(bgemm_run(&a, &w, 0, a.R4, Y, M), min_s, *bin_us);
#if HAVE_CBLAS
	BEST_US(blas_sgemm(0, 1, N, M, K, X, K, W, K, Y, M), min_s, *f32_us);
#else
	float *Wt = malloc(sizeof(float) * (size_t)M * K);
	if (Wt) {
		gemm_transpose(W, M, K, Wt);
		BEST_US(gemm_f32_nn(X, Wt, N, M, K, Y), min_s, *f32_us);
		free(Wt);
	}
#endif
out:
	bgemm_a_free(&a);
	bgemm_w_free(&w);
	free(X);
	free(W);
	free(Y);
}

static double bench_train(hdqt_mode mode, int threads, double min_s, double *ms_per_step)
{
	hdqt_model *m = bench_model(mode);
	if (!m)
		return -1;
	enum { B = 128, NB = 8 };
	float *X = malloc(sizeof(float) * B * NB * 166);
	int *y = malloc(sizeof(int) * B * NB);
	if (!X || !y || hdqt_model_set_threads(m, threads) < 0) {
		free(X);
		free(y);
		hdqt_model_free(m);
		return -1;
	}
	bench_data(X, y, B * NB);
	hdqt_sgd o;
	hdqt_sgd_default(&o);
	for (int i = 0; i < 5; i++) { /* warm-up: buffers grow to size */
		hdqt_batch b = {.X = X, .y = y, .n = B};
		hdqt_model_train_step(m, &b, &o, o.lr, NULL);
	}
	long steps = 0;
	double t0 = now_s(), t;
	do {
		for (int k = 0; k < NB; k++) {
			hdqt_batch b = {.X = X + (size_t)k * B * 166, .y = y + k * B, .n = B};
			if (hdqt_model_train_step(m, &b, &o, o.lr, NULL) < 0)
				return -1;
		}
		steps += NB;
		t = now_s() - t0;
	} while (t < min_s);
	hdqt_model_free(m);
	free(X);
	free(y);
	*ms_per_step = 1e3 * t / steps;
	return (double)steps * B / t;
}

static double bench_gemm_tile(const char *kernel, int I, int J, int K, int tile, double min_s,
			      int packed);

static double bench_gemm(const char *kernel, int I, int J, int K, double min_s)
{
	return bench_gemm_tile(kernel, I, J, K, 32, min_s, 0);
}

/* C (I x J) = A (I x K) . B^T with 4-bit operands and 8-bit tiles of
 * `tile`, through gemm_q (packing included), or with packed (B packed once,
 * as the forward's cached weights and the backward's column path, which
 * writes B in the kernel's layout as it quantises: A's packing and the
 * kernel); GMAC/s. */
static double bench_gemm_tile(const char *kernel, int I, int J, int K, int tile, double min_s,
			      int packed)
{
	if (hdqt_kernel_select(kernel) < 0)
		return -1;
	int8_t *A = malloc((size_t)I * K), *Bm = malloc((size_t)J * K);
	int32_t *C = malloc(sizeof(int32_t) * I * J);
	hdqt_rng r;
	hdqt_rng_seed(&r, 1, 0);
	for (int i = 0; i < I * K; i++)
		A[i] = (int8_t)hdqt_rng_below(&r, 16);
	for (int i = 0; i < J * K; i++)
		Bm[i] = (int8_t)((int)hdqt_rng_below(&r, 15) - 7);
	gemm_ws ws = {0};
	gemm_params p = {.tile = tile, .acc_bits = 8, .bits = 4, .a_signed = 0};
	gemm_packed pb = {0};
	if (packed && gemm_pack(&pb, Bm, J, K, &p) < 0)
		packed = 0;
	gemm_q(&ws, A, Bm, I, J, K, &p, C);
	long n = 0;
	double t0 = now_s(), t;
	do {
		if (packed)
			gemm_q_packed(&ws, A, I, &pb, C);
		else
			gemm_q(&ws, A, Bm, I, J, K, &p, C);
		n++;
		t = now_s() - t0;
	} while (t < min_s);
	gemm_packed_free(&pb);
	gemm_ws_free(&ws);
	free(A);
	free(Bm);
	free(C);
	return (double)n * I * J * K / t / 1e9;
}

#if HDQT_X86_64
/* Peak of one core: 16 independent vpdpbusd chains, 64 MACs each. */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static double peak_avx512vnni(double min_s)
{
	/* In asm, 16 accumulators in registers: GCC 12 gives the intrinsic's
	 * accumulator a register copy per product here, which measured about
	 * half the peak. */
	__m512i c0 = _mm512_set1_epi32(0), c1 = _mm512_set1_epi32(1), c2 = _mm512_set1_epi32(2),
		c3 = _mm512_set1_epi32(3), c4 = _mm512_set1_epi32(4), c5 = _mm512_set1_epi32(5),
		c6 = _mm512_set1_epi32(6), c7 = _mm512_set1_epi32(7), c8 = _mm512_set1_epi32(8),
		c9 = _mm512_set1_epi32(9), c10 = _mm512_set1_epi32(10), c11 = _mm512_set1_epi32(11),
		c12 = _mm512_set1_epi32(12), c13 = _mm512_set1_epi32(13), c14 = _mm512_set1_epi32(14),
		c15 = _mm512_set1_epi32(15);
	const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
	long iters = 0;
	double t0 = now_s(), t;
	do {
		for (int k = 0; k < 100000; k++) {
#define DOT8(x0, x1, x2, x3, x4, x5, x6, x7)                                                   \
	__asm__ volatile("vpdpbusd %8, %9, %0\n\tvpdpbusd %8, %9, %1\n\tvpdpbusd %8, %9, %2\n\t"          \
		"vpdpbusd %8, %9, %3\n\tvpdpbusd %8, %9, %4\n\tvpdpbusd %8, %9, %5\n\t"          \
		"vpdpbusd %8, %9, %6\n\tvpdpbusd %8, %9, %7"                                      \
		: "+v"(x0), "+v"(x1), "+v"(x2), "+v"(x3), "+v"(x4), "+v"(x5), "+v"(x6), "+v"(x7) \
		: "v"(b), "v"(a))
			DOT8(c0, c1, c2, c3, c4, c5, c6, c7);
			DOT8(c8, c9, c10, c11, c12, c13, c14, c15);
#undef DOT8
		}
		iters += 100000;
		t = now_s() - t0;
	} while (t < min_s);
	const __m512i acc[16] = {c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15};
	/* The sums wrap (they only keep the products alive): add them as
	 * unsigned, where wrapping is defined (UBSan saw the int sum overflow). */
	volatile unsigned sink = 0;
	int32_t tmp[16];
	for (int i = 0; i < 16; i++) {
		_mm512_storeu_si512((void *)tmp, acc[i]); /* not _mm512_reduce_add_epi32: int adds */
		for (int l = 0; l < 16; l++)
			sink += (unsigned)tmp[l];
	}
	(void)sink;
	return (double)iters * 16 * 64 / t / 1e9;
}

__attribute__((target("avx2,avxvnni"))) static double peak_avxvnni(double min_s)
{
	/* In asm as the 512-bit loop (VEX encoding: no AVX-512 needed). */
	__m256i c0 = _mm256_set1_epi32(0), c1 = _mm256_set1_epi32(1), c2 = _mm256_set1_epi32(2),
		c3 = _mm256_set1_epi32(3), c4 = _mm256_set1_epi32(4), c5 = _mm256_set1_epi32(5),
		c6 = _mm256_set1_epi32(6), c7 = _mm256_set1_epi32(7), c8 = _mm256_set1_epi32(8),
		c9 = _mm256_set1_epi32(9), c10 = _mm256_set1_epi32(10), c11 = _mm256_set1_epi32(11);
	const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
	long iters = 0;
	double t0 = now_s(), t;
	do {
		for (int k = 0; k < 100000; k++) {
#define DOT6(x0, x1, x2, x3, x4, x5)                                                          \
	__asm__ volatile("%{vex%} vpdpbusd %6, %7, %0\n\t%{vex%} vpdpbusd %6, %7, %1\n\t"                     \
		"%{vex%} vpdpbusd %6, %7, %2\n\t%{vex%} vpdpbusd %6, %7, %3\n\t"                     \
		"%{vex%} vpdpbusd %6, %7, %4\n\t%{vex%} vpdpbusd %6, %7, %5"                          \
		: "+x"(x0), "+x"(x1), "+x"(x2), "+x"(x3), "+x"(x4), "+x"(x5)                   \
		: "x"(b), "x"(a))
			DOT6(c0, c1, c2, c3, c4, c5);
			DOT6(c6, c7, c8, c9, c10, c11);
#undef DOT6
		}
		iters += 100000;
		t = now_s() - t0;
	} while (t < min_s);
	const __m256i acc[12] = {c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11};
	volatile unsigned sink = 0;
	int32_t tmp[8];
	for (int i = 0; i < 12; i++) {
		_mm256_storeu_si256((__m256i *)tmp, acc[i]);
		sink += (unsigned)tmp[0];
	}
	(void)sink;
	return (double)iters * 12 * 32 / t / 1e9;
}

/* AVX2 without VNNI: the kernels' inner step is vpmaddubsw (32 byte
 * products summed in pairs) then vpaddw into a 16-bit accumulator, so the
 * peak is that pair in 6 independent chains (6 accumulators and 6 products
 * in 16 ymm: no AVX-512 registers on such a box), 32 MACs per pair. */
__attribute__((target("avx2"))) static double peak_avx2(double min_s)
{
	__m256i c0 = _mm256_set1_epi16(0), c1 = _mm256_set1_epi16(1), c2 = _mm256_set1_epi16(2),
		c3 = _mm256_set1_epi16(3), c4 = _mm256_set1_epi16(4), c5 = _mm256_set1_epi16(5);
	__m256i p0, p1, p2, p3, p4, p5;
	const __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
	long iters = 0;
	double t0 = now_s(), t;
	do {
		for (int k = 0; k < 100000; k++) {
			__asm__ volatile("vpmaddubsw %12, %13, %6\n\tvpmaddubsw %12, %13, %7\n\t"
					 "vpmaddubsw %12, %13, %8\n\tvpmaddubsw %12, %13, %9\n\t"
					 "vpmaddubsw %12, %13, %10\n\tvpmaddubsw %12, %13, %11\n\t"
					 "vpaddw %6, %0, %0\n\tvpaddw %7, %1, %1\n\tvpaddw %8, %2, %2\n\t"
					 "vpaddw %9, %3, %3\n\tvpaddw %10, %4, %4\n\tvpaddw %11, %5, %5"
					 : "+x"(c0), "+x"(c1), "+x"(c2), "+x"(c3), "+x"(c4), "+x"(c5),
					   "=&x"(p0), "=&x"(p1), "=&x"(p2), "=&x"(p3), "=&x"(p4), "=&x"(p5)
					 : "x"(b), "x"(a));
		}
		iters += 100000;
		t = now_s() - t0;
	} while (t < min_s);
	const __m256i acc[6] = {c0, c1, c2, c3, c4, c5};
	volatile unsigned sink = 0;
	int16_t tmp[16];
	for (int i = 0; i < 6; i++) {
		_mm256_storeu_si256((__m256i *)tmp, acc[i]);
		sink += (unsigned)(uint16_t)tmp[0];
	}
	(void)sink;
	return (double)iters * 6 * 32 / t / 1e9;
}
#endif

static double bench_fwht(double min_s)
{
	enum { R = 512, L = 512 };
	float *x = malloc(sizeof(float) * R * L);
	for (int i = 0; i < R * L; i++)
		x[i] = (float)(i % 17) * 0.01f;
	long n = 0;
	double t0 = now_s(), t;
	do {
		fwht_rows(x, R, L, 256);
		for (int i = 0; i < R * L; i++)
			x[i] *= 1.0f / 256.0f; /* keep values bounded */
		n++;
		t = now_s() - t0;
	} while (t < min_s);
	free(x);
	return (double)n * R * L / t / 1e6;
}

/* Ingest into a fresh database: 166-float samples in committed batches. */
static double bench_store(int sync_full, int batch, double min_s)
{
	char dir[] = "/tmp/hdqt-bench-XXXXXX", path[64], cmd[96];
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/bench.db", dir);
	hdqt_store_opts o;
	hdqt_store_opts_default(&o);
	o.sync_full = sync_full;
	hdqt_store *s;
	double rate = -1;
	if (hdqt_store_open(&s, path, &o, NULL, 0) == 0) {
		hdqt_store_class c;
		float *X = malloc(sizeof(float) * 166 * (size_t)batch);
		int64_t *ids = malloc(sizeof(int64_t) * (size_t)batch);
		if (X && ids && hdqt_store_class_add(s, "bench", &c) == 0) {
			for (int i = 0; i < 166 * batch; i++)
				X[i] = (float)i * 0.001f;
			for (int i = 0; i < batch; i++)
				ids[i] = c.id;
			long n = 0;
			double t0 = now_s(), t;
			do {
				if (hdqt_store_samples_add(s, ids, X, batch, 166) < 0)
					break;
				n += batch;
				t = now_s() - t0;
			} while (t < min_s);
			rate = n / (now_s() - t0);
		}
		free(X);
		free(ids);
		hdqt_store_close(s);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "hdqt-bench: could not remove %s\n", dir);
	return rate;
}

/* The packed layout gemm_pack gives these operands under the kernel now
 * selected (gemm.c's numbers: 4 tiles in lanes, 1 and 2 the column
 * layouts, 0 the reference's own copy; HDQT_GEMM_TL8 moves tiles of 8). */
static const char *layout_name(int J, int K, int tile)
{
	gemm_params p = {.tile = tile, .acc_bits = 8, .bits = 4, .a_signed = 0};
	gemm_packed pb = {0};
	const char *name = "unknown";
	if (gemm_pack_begin(&pb, NULL, J, K, &p) >= 0)
		name = pb.kernel == 4 ? "tiles-in-lanes" : pb.kernel ? "column" : "reference";
	gemm_packed_free(&pb);
	return name;
}

/* The model's own products (166-512-512-12, batch 128) under the training
 * kernel, forward tile 8 and backward tile 32, as JSON "int8_peak_gmacs"
 * and "gemm": with B packed on every call and packed once.  The peak
 * (peak(), NULL where no dot-product kernel runs) and every shape are
 * measured in turn, GEMM_ROUNDS times, best of each: this machine's speed
 * changes from minute to minute, and a peak measured apart from the
 * shapes made "of_peak" swing from 0.24 to 0.77 on one kernel. */
enum { GEMM_ROUNDS = 3 };
static void print_gemm_shapes(const char *train_kernel, double (*peak_fn)(double), double min_s)
{
	static const struct { const char *what; int I, J, K, tile; } shp[] = {
		{"forward 128x512x166", 128, 512, 166, 8}, {"forward 128x512x512", 128, 512, 512, 8},
		{"grad-weight 512x512x128", 512, 512, 128, 32},
		{"grad-weight 512x166x128", 512, 166, 128, 32},
		{"grad-input 128x166x512", 128, 166, 512, 32},
		{"grad-input 128x512x512", 128, 512, 512, 32},
	};
	enum { NS = sizeof(shp) / sizeof(shp[0]) };
	double peak = -1, g[NS][2];
	for (int i = 0; i < NS; i++)
		g[i][0] = g[i][1] = -1;
	for (int r = 0; r < GEMM_ROUNDS; r++) {
		const double pk = peak_fn ? peak_fn(min_s / 4) : -1;
		peak = pk > peak ? pk : peak;
		for (int i = 0; i < NS; i++)
			for (int packed = 0; packed < 2; packed++) {
				const double v = bench_gemm_tile(train_kernel, shp[i].I, shp[i].J, shp[i].K,
								 shp[i].tile, min_s / (4 * GEMM_ROUNDS), packed);
				g[i][packed] = v > g[i][packed] ? v : g[i][packed];
			}
	}
	printf("\"int8_peak_gmacs\": %.1f, \"gemm_rounds\": %d, \"gemm\": [", peak, GEMM_ROUNDS);
	hdqt_kernel_select(train_kernel);
	for (int i = 0; i < NS; i++)
		printf("%s{\"kernel\": \"%s\", \"shape\": \"%s\", \"tile\": %d, \"gmacs\": %.1f, "
		       "\"of_peak\": %.3f, \"packed_gmacs\": %.1f, \"packed_of_peak\": %.3f, \"layout\": \"%s\"}",
		       i ? ", " : "", train_kernel, shp[i].what, shp[i].tile, g[i][0],
		       peak > 0 ? g[i][0] / peak : -1.0, g[i][1], peak > 0 ? g[i][1] / peak : -1.0,
		       layout_name(shp[i].J, shp[i].K, shp[i].tile));
	printf("]");
}

/* The peak of the widest dot product this CPU has, for print_gemm_shapes. */
static double (*peak_of_cpu(void))(double)
{
	const char *k = hdqt_kernel_name();
	double (*fn)(double) = NULL;
#if HDQT_X86_64
	if (hdqt_kernel_select("avx512vnni") == 0)
		fn = peak_avx512vnni;
	else if (hdqt_kernel_select("avxvnni") == 0)
		fn = peak_avxvnni;
	else if (hdqt_kernel_select("avx2") == 0)
		fn = peak_avx2;
#endif
	hdqt_kernel_select(k);
	return fn;
}

int main(int argc, char **argv)
{
	int json = 0;
	double min_s = 1.0;
	const char *kernel = NULL;
	int threads = 1, train_only = 0, only = -1, gemm_only = 0;
	static const struct option lo[] = {{"json", 0, 0, 'j'}, {"seconds", 1, 0, 's'},
					   {"kernel", 1, 0, 'k'}, {"kernel-name", 0, 0, 'n'},
					   {"threads", 1, 0, 't'}, {"train-only", 0, 0, 'T'},
					   {"mode", 1, 0, 'm'}, {"gemm-only", 0, 0, 'G'},
					   {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'j': json = 1; break;
		case 's':
			min_s = atof(optarg);
			if (!(min_s > 0 && min_s < 600)) {
				fprintf(stderr, "hdqt-bench: --seconds must be in (0, 600)\n");
				return 2;
			}
			break;
		case 'k': kernel = optarg; break;
		case 't': {
			char *end;
			long v = strtol(optarg, &end, 10);
			if (*end || v < 1 || v > 64) {
				fprintf(stderr, "hdqt-bench: --threads must be an integer in [1, 64]\n");
				return 2;
			}
			threads = (int)v;
			break;
		}
		case 'T': train_only = 1; break;
		case 'G': gemm_only = 1; break;
		case 'm': {
			hdqt_mode md;
			if (hdqt_mode_parse(optarg, &md) < 0) {
				fprintf(stderr, "hdqt-bench: unknown --mode '%s'\n", optarg);
				return 2;
			}
			only = (int)md;
			train_only = 1; /* one recipe's training step (for perf and quick runs) */
			break;
		}
		case 'n': printf("%s\n", hdqt_kernel_name()); return 0;
		case 'h':
			printf("usage: hdqt-bench [--json] [--seconds S] [--kernel NAME] [--kernel-name]\n"
			       "                  [--threads N] [--train-only] [--mode NAME] [--gemm-only]\n");
			return 0;
		default: return 2;
		}
	}
	/* HDQT_ISA caps the engine's x86 paths (lib/simd.h): refused here when
	 * unknown, where the library would only ignore it. */
	if (simd_cap_parse(getenv("HDQT_ISA")) < 0) {
		fprintf(stderr, "hdqt-bench: HDQT_ISA must be native, avx2 or baseline\n");
		return 2;
	}
	if (kernel && hdqt_kernel_select(kernel) < 0) {
		fprintf(stderr, "hdqt-bench: kernel '%s' is not supported on this CPU\n", kernel);
		return 2;
	}
	const char *train_kernel = hdqt_kernel_name();
	if (gemm_only) {
		/* The kernel alone on the model's shapes, as JSON (for kernel work). */
		printf("{\"kernel\": \"%s\", \"isa\": \"%s\", ", train_kernel, simd_cap_name());
		print_gemm_shapes(train_kernel, peak_of_cpu(), min_s);
		printf("}\n");
		return 0;
	}
	double sps[HDQT_MODE_COUNT], ms[HDQT_MODE_COUNT];
	for (int mde = 0; mde < HDQT_MODE_COUNT; mde++)
		sps[mde] = only < 0 || only == mde ? bench_train((hdqt_mode)mde, threads, min_s, &ms[mde]) : -1;
	if (train_only) {
		if (json) {
			printf("{\"kernel\": \"%s\", \"isa\": \"%s\", \"threads\": %d, \"modes\": {",
			       train_kernel, simd_cap_name(), threads);
			for (int mde = 0, first = 1; mde < HDQT_MODE_COUNT; mde++) {
				if (only >= 0 && only != mde)
					continue;
				printf("%s\"%s\": {\"train_samples_per_s\": %.0f, \"ms_per_step\": %.3f}",
				       first ? "" : ", ", hdqt_mode_name((hdqt_mode)mde), sps[mde], ms[mde]);
				first = 0;
			}
			printf("}}\n");
		} else {
			for (int mde = 0; mde < HDQT_MODE_COUNT; mde++)
				if (only < 0 || only == mde)
					printf("  %-11s %9.0f samples/s  %7.3f ms/step  (%d threads)\n",
					       hdqt_mode_name((hdqt_mode)mde), sps[mde], ms[mde], threads);
		}
		return 0;
	}
	static const hdqt_mode pmodes[] = {HDQT_MODE_FP32, HDQT_MODE_HDQT, HDQT_MODE_HADANET};
	double pf[3][HDQT_PHASE_COUNT + 1];
	for (int k = 0; k < 3; k++)
		if (bench_phases(pmodes[k], threads, min_s / 2, pf[k]) < 0)
			memset(pf[k], 0, sizeof(pf[k]));
	double ips[HDQT_MODE_COUNT], pus[HDQT_MODE_COUNT];
	for (int mde = 0; mde < HDQT_MODE_COUNT; mde++) {
		ips[mde] = bench_infer((hdqt_mode)mde, min_s / 2);
		pus[mde] = bench_predict_one((hdqt_mode)mde, min_s / 4);
	}
	static const struct { int N, M, K; const char *name; } bshp[] = {
		{128, 512, 512, "128x512x512"}, {128, 512, 166, "128x166x512"}, {1024, 1024, 1024, "1024^3"}};
	static const int betas[] = {16, 32, 64, 0};
	double bus[3][4], fus[3][4];
	for (int i = 0; i < 3; i++)
		for (int b = 0; b < 4; b++)
			bench_binary(betas[b], bshp[i].N, bshp[i].M, bshp[i].K, min_s / 4, &bus[i][b], &fus[i][b]);
	static const char *const kernels[] = {"scalar", "portable", "avx2", "avxvnni", "avx512vnni", "neon",
					      "dotprod"};
	enum { NK = sizeof(kernels) / sizeof(kernels[0]) };
	double gm[NK], gm_small[NK];
	for (int k = 0; k < NK; k++) {
		gm[k] = bench_gemm(kernels[k], 128, 512, 512, min_s / 2);
		gm_small[k] = bench_gemm(kernels[k], 512, 166, 128, min_s / 2);
	}
	hdqt_kernel_select(train_kernel);
	double peak512 = -1, peak256 = -1, peakavx2 = -1;
#if HDQT_X86_64
	if (hdqt_kernel_select("avx512vnni") == 0)
		peak512 = peak_avx512vnni(min_s / 2);
	if (hdqt_kernel_select("avxvnni") == 0)
		peak256 = peak_avxvnni(min_s / 2);
	if (hdqt_kernel_select("avx2") == 0)
		peakavx2 = peak_avx2(min_s / 2);
	hdqt_kernel_select(train_kernel);
#endif
	double fw = bench_fwht(min_s / 2);
	double ing_full = bench_store(1, 500, min_s / 2), ing_norm = bench_store(0, 500, min_s / 2);
	double ing_one = bench_store(1, 1, min_s / 2);
	if (json) {
		printf("{\"kernel\": \"%s\", \"isa\": \"%s\", \"model\": \"166-512-512-12\", \"batch\": 128, "
		       "\"threads\": %d, \"modes\": {", train_kernel, simd_cap_name(), threads);
		for (int mde = 0; mde < HDQT_MODE_COUNT; mde++)
			printf("%s\"%s\": {\"train_samples_per_s\": %.0f, \"ms_per_step\": %.3f, "
			       "\"infer_samples_per_s\": %.0f, \"predict_one_us\": %.2f}", mde ? ", " : "",
			       hdqt_mode_name((hdqt_mode)mde), sps[mde], ms[mde], ips[mde], pus[mde]);
		printf("}, \"phases\": {");
		for (int k = 0; k < 3; k++) {
			printf("%s\"%s\": {", k ? ", " : "", hdqt_mode_name(pmodes[k]));
			for (int ph = 0; ph < HDQT_PHASE_COUNT; ph++)
				printf("\"%s\": %.4f, ", hdqt_phase_name(ph), pf[k][ph]);
			printf("\"other\": %.4f}", pf[k][HDQT_PHASE_COUNT]);
		}
		printf("}, \"binary_kernel\": \"%s\", \"binary_gemm\": [", bgemm_kernel_name());
		for (int i = 0, first = 1; i < 3; i++)
			for (int b = 0; b < 4; b++, first = 0)
				printf("%s{\"beta\": %d, \"shape\": \"%s\", \"binary_us\": %.1f, \"fp32_us\": %.1f, "
				       "\"speedup\": %.2f}", first ? "" : ", ", betas[b] ? betas[b] : bshp[i].K,
				       bshp[i].name, bus[i][b], fus[i][b], fus[i][b] / bus[i][b]);
		printf("], \"gemm_gmacs\": {");
		for (int k = 0, first = 1; k < NK; k++)
			if (gm[k] >= 0) {
				printf("%s\"%s\": {\"128x512x512\": %.2f, \"512x166x128\": %.2f}", first ? "" : ", ",
				       kernels[k], gm[k], gm_small[k]);
				first = 0;
			}
		printf("}, \"int8_peak_gmacs_per_core\": {\"avx512vnni\": %.1f, \"avxvnni\": %.1f, \"avx2\": %.1f}, ",
		       peak512, peak256, peakavx2);
		printf("\"fwht_melem_per_s\": %.1f, ", fw);
		print_gemm_shapes(train_kernel, peak_of_cpu(), min_s);
		printf(", ");
		printf("\"store_ingest_samples_per_s\": {\"batch500_sync_full\": %.0f, \"batch500_sync_normal\": %.0f, "
		       "\"batch1_sync_full\": %.0f}}\n", ing_full, ing_norm, ing_one);
		return 0;
	}
	printf("training step, 166-512-512-12, batch 128, kernel %s, %d thread%s:\n", train_kernel, threads,
	       threads == 1 ? "" : "s");
	for (int mde = 0; mde < HDQT_MODE_COUNT; mde++)
		printf("  %-13s %9.0f samples/s  %7.3f ms/step  inference %9.0f samples/s  one prediction %6.2f us\n",
		       hdqt_mode_name((hdqt_mode)mde), sps[mde], ms[mde], ips[mde], pus[mde]);
	printf("fraction of a training step per phase (the engine's timers, %d thread%s):\n", threads,
	       threads == 1 ? "" : "s");
	for (int k = 0; k < 3; k++) {
		printf("  %-8s", hdqt_mode_name(pmodes[k]));
		for (int ph = 0; ph <= HDQT_PHASE_COUNT; ph++)
			if (pf[k][ph] >= 0.005)
				printf(" %s %.0f%%", ph < HDQT_PHASE_COUNT ? hdqt_phase_name(ph) : "other",
				       100 * pf[k][ph]);
		printf("\n");
	}
	printf("binary matrix multiply (%s) vs fp32 GEMM, one thread, us (speed-up):\n", bgemm_kernel_name());
	for (int i = 0; i < 3; i++) {
		printf("  %-12s", bshp[i].name);
		for (int b = 0; b < 4; b++)
			printf("  beta %4d: %8.1f / %8.1f (%.2fx)", betas[b] ? betas[b] : bshp[i].K, bus[i][b],
			       fus[i][b], fus[i][b] / bus[i][b]);
		printf("\n");
	}
	printf("tile-clamped int GEMM (4-bit operands, 8-bit acc, tile 32), GMAC/s:\n");
	for (int k = 0; k < NK; k++)
		if (gm[k] >= 0)
			printf("  %-11s 128x512x512: %7.2f   512x166x128: %7.2f\n", kernels[k], gm[k], gm_small[k]);
	if (peak512 > 0 || peak256 > 0 || peakavx2 > 0)
		printf("int8 dot-product peak, one core: avx512vnni %.1f GMAC/s, avxvnni %.1f GMAC/s, "
		       "avx2 (maddubs + add) %.1f GMAC/s\n", peak512, peak256, peakavx2);
	printf("FWHT (512 rows x 512, blocks of 256): %.1f M elements/s\n", fw);
	printf("SQLite ingest of 166-float samples (/tmp): batches of 500, synchronous=full %.0f/s, "
	       "normal %.0f/s; one sample per transaction, full %.0f/s\n", ing_full, ing_norm, ing_one);
	return 0;
}
