/* SPDX-License-Identifier: MIT */
/*
 * Quantisation.  Rounding avoids floorf() (a libm call without SSE4.1):
 * values are first clamped to [qmin, qmax], then shifted by a positive bias
 * so truncation towards zero equals floor, which compilers vectorise with
 * plain SSE2 conversions.
 */
#include <math.h>

#include "quant.h"
#include "rng.h"
#include "simd.h"

#define QBIAS 512.0f /* > |qmin| + 1 for any bits <= 8 */
/* Stochastic rounding adds a uniform u on a grid of 2^-14: floats in
 * [256, 1024), where v + u + QBIAS lies, have 14 or 15 fraction bits, so
 * for v on the grid (0, qmin, qmax: the group's zeros and its max-abs
 * element) the sum is exact and the code stays inside [qmin, qmax] and
 * zero stays zero; with 16-bit uniforms a draw within 2^-15 of 1 rounded
 * the sum up to the next integer (qmax + 1, which wraps at 8 bits).  Each
 * 32-bit draw gives two: bits 2-15 and bits 18-31. */
#define U14_LO(u) (((u) >> 2) & 0x3fffu)
#define U14_HI(u) ((u) >> 18)
#define USCALE (1.0f / 16384.0f)

int quant_qmax(const quant_spec *sp)
{
	return sp->is_unsigned ? (1 << sp->bits) - 1 : (1 << (sp->bits - 1)) - 1;
}

#if HDQT_X86_64
#include <immintrin.h>

/* The two reductions below keep 8 lanes (lane l takes elements i = l mod 8)
 * and combine them in a fixed order, so the AVX2 paths, which hold the lanes
 * in registers, give the scalar loops' results exactly.  GCC does not
 * vectorise the scalar forms (a max with NaN semantics, double sums). */
__attribute__((target("avx2"))) static long max_abs_avx2(const float *x, long n, float mx[8])
{
	const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	/* Four chains: a max waits for the one before it (4 cycles), and the
	 * max of non-negative, non-NaN values is the same in any order. */
	__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
	long i = 0;
	/* max_ps returns its second operand when one is NaN: as the scalar
	 * "a > m ? a : m" keeps m. */
	for (; i + 32 <= n; i += 32) {
		a0 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), absmask), a0);
		a1 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i + 8), absmask), a1);
		a2 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i + 16), absmask), a2);
		a3 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i + 24), absmask), a3);
	}
	for (; i + 8 <= n; i += 8)
		a0 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), absmask), a0);
	_mm256_storeu_ps(mx, _mm256_max_ps(_mm256_max_ps(a0, a1), _mm256_max_ps(a2, a3)));
	return i;
}

__attribute__((target("avx2"))) static long sum_sq_avx2(const float *x, long n, double acc[8])
{
	__m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
	long i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 v = _mm256_loadu_ps(x + i);
		__m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
		__m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
		lo = _mm256_add_pd(lo, _mm256_mul_pd(a, a));
		hi = _mm256_add_pd(hi, _mm256_mul_pd(b, b));
	}
	_mm256_storeu_pd(acc, lo);
	_mm256_storeu_pd(acc + 4, hi);
	return i;
}
#define HAVE_AVX2_RT() SIMD_AVX2()
#elif HDQT_AARCH64 /* issue 14: NEON twins, same lanes and order (simd_arm.c) */
#include "simd_arm.h"
#define HAVE_AVX2_RT() 1
#define max_abs_avx2(x, n, mx) simd_arm_max_abs(x, n, mx)
#define sum_sq_avx2(x, n, acc) simd_arm_sum_sq(x, n, acc)
#else
#define HAVE_AVX2_RT() 0
#define max_abs_avx2(x, n, mx) 0L
#define sum_sq_avx2(x, n, acc) 0L
#endif

/* Sum of squares in 8 interleaved lanes combined in a fixed order. */
double quant_sum_sq(const float *x, long n, int simd)
{
	double acc[8] = {0};
	long i = simd && HAVE_AVX2_RT() ? sum_sq_avx2(x, n, acc) : 0;
	for (; i + 8 <= n; i += 8)
		for (int l = 0; l < 8; l++)
			acc[l] += (double)x[i + l] * (double)x[i + l];
	for (int l = 0; i < n; i++, l++)
		acc[l] += (double)x[i] * (double)x[i];
	return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

static float max_abs(const float *x, long n, int simd)
{
	float mx[8] = {0};
	long i = simd && HAVE_AVX2_RT() ? max_abs_avx2(x, n, mx) : 0;
	for (; i + 8 <= n; i += 8)
		for (int l = 0; l < 8; l++) {
			float a = fabsf(x[i + l]);
			mx[l] = a > mx[l] ? a : mx[l];
		}
	for (int l = 0; i < n; i++, l++) {
		float a = fabsf(x[i]);
		mx[l] = a > mx[l] ? a : mx[l];
	}
	float m = 0.0f;
	for (int l = 0; l < 8; l++)
		m = mx[l] > m ? mx[l] : m; /* max is exact in any order */
	return m;
}

float quant_range_stats(float mx, double ss, long n, const quant_spec *sp)
{
	if (sp->clip_sigma > 0.0f) {
		float lim = sp->clip_sigma * (float)sqrt(ss / (double)(n > 0 ? n : 1));
		return lim < mx ? lim : mx;
	}
	return sp->clip * mx;
}

float quant_range(const float *x, long n, const quant_spec *sp, int simd)
{
	float mx = max_abs(x, n, simd);
	return quant_range_stats(mx, sp->clip_sigma > 0.0f ? quant_sum_sq(x, n, simd) : 0.0, n, sp);
}

float quant_step_of(float range, const quant_spec *sp)
{
	return range > 0.0f ? range / (float)quant_qmax(sp) : 1.0f;
}

#if HDQT_X86_64
/* 8 lanes of the scalar round-to-nearest: clamp with min/max (the same as
 * the ternaries for finite values), add the bias + 0.5, truncate.  Returns
 * how many elements it did; the scalar loop does the rest. */
__attribute__((target("avx2"))) static long round_avx2(const float *x, long n, float inv, float qmin,
						       float qmax, int8_t *q)
{
	const __m256 vinv = _mm256_set1_ps(inv), lo = _mm256_set1_ps(qmin), hi = _mm256_set1_ps(qmax);
	const __m256 half = _mm256_set1_ps(QBIAS + 0.5f);
	const __m256i ib = _mm256_set1_epi32((int)QBIAS);
	long i = 0;
	for (; i + 8 <= n; i += 8) {
		__m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv);
		v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
		v = _mm256_add_ps(v, half);
		__m256i r = _mm256_sub_epi32(_mm256_cvttps_epi32(v), ib);
		/* Narrow 8 int32 to their low bytes, as the scalar cast and
		 * vpmovdb (unsigned 8-bit codes reach 255: saturating packs
		 * would give 127). */
		r = _mm256_and_si256(r, _mm256_set1_epi32(0xff));
		__m128i w = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
		__m128i b = _mm_packus_epi16(w, w);
		_mm_storel_epi64((__m128i *)(q + i), b);
	}
	return i;
}
/* The same 16 lanes at a time (vpmovdb narrows: the codes lie in int8). */
__attribute__((target("avx512f"))) static long round_avx512(const float *x, long n, float inv,
							   float qmin, float qmax, int8_t *q)
{
	const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(qmin), hi = _mm512_set1_ps(qmax);
	const __m512 half = _mm512_set1_ps(QBIAS + 0.5f);
	const __m512i ib = _mm512_set1_epi32((int)QBIAS);
	long i = 0;
	for (; i + 16 <= n; i += 16) {
		__m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), vinv);
		v = _mm512_add_ps(_mm512_min_ps(_mm512_max_ps(v, lo), hi), half);
		_mm_storeu_si128((__m128i *)(q + i),
				 _mm512_cvtepi32_epi8(_mm512_sub_epi32(_mm512_cvttps_epi32(v), ib)));
	}
	return i;
}

static long round_fast(const float *x, long n, float inv, float qmin, float qmax, int8_t *q)
{
	if (SIMD_AVX512F()) {
		long i = round_avx512(x, n, inv, qmin, qmax, q);
		return i + round_avx2(x + i, n - i, inv, qmin, qmax, q + i);
	}
	return SIMD_AVX2() ? round_avx2(x, n, inv, qmin, qmax, q) : 0;
}
#define ROUND_FAST(x, n, inv, lo, hi, u, q) round_fast(x, n, inv, lo, hi, q)
#elif HDQT_AARCH64 /* issue 14: NEON rounding (simd_arm.c) */
#define ROUND_FAST(x, n, inv, lo, hi, u, q) simd_arm_round(x, n, inv, lo, hi, QBIAS, u, q)
#else
#define ROUND_FAST(x, n, inv, lo, hi, u, q) 0
#endif

/* The scalar rounding every portable loop and SIMD tail uses (the SIMD
 * paths compute the same terms in the same order): clamp (a NaN gives
 * qmin, as max_ps), then the biased truncation; stochastic adds a 14-bit
 * uniform u before the bias. */
static inline __attribute__((always_inline)) float clamp_scaled(float x, float inv, float qmin,
								 float qmax)
{
	float v = x * inv;
	v = v > qmin ? v : qmin;
	return v < qmax ? v : qmax;
}

static inline __attribute__((always_inline)) int8_t code_nearest(float x, float inv, float qmin,
								  float qmax)
{
	return (int8_t)((int)(clamp_scaled(x, inv, qmin, qmax) + (QBIAS + 0.5f)) - (int)QBIAS);
}

static inline __attribute__((always_inline)) int8_t code_sr(float x, float inv, float qmin, float qmax,
							     uint32_t u14)
{
	return (int8_t)((int)(clamp_scaled(x, inv, qmin, qmax) + (float)u14 * USCALE + QBIAS) - (int)QBIAS);
}

HDQT_CLONES static void quant_group(const float *x, long n, float step, const quant_spec *sp,
				    int8_t *q)
{
	const float qmax = (float)quant_qmax(sp);
	const float qmin = sp->is_unsigned ? 0.0f : -qmax;
	const float inv = 1.0f / step;
	/* nearest only: stochastic rows go through quant_row16_impl */
	for (long i = ROUND_FAST(x, n, inv, qmin, qmax, NULL, q); i < n; i++)
		q[i] = code_nearest(x[i], inv, qmin, qmax);
}

/* 16 xoshiro128++ generators side by side, one per lane: the same step as
 * rng_next() on arrays, which a compiler turns into vector shifts, adds and
 * xors on any architecture (the clones and the portable build compute the
 * same integers). */
typedef struct rng16 {
	uint32_t s0[16], s1[16], s2[16], s3[16];
} rng16;

static inline void rng16_next(rng16 *g, uint32_t out[16])
{
	for (int l = 0; l < 16; l++) {
		const uint32_t a = g->s0[l], b = g->s1[l], c = g->s2[l], d = g->s3[l];
		out[l] = rng_rotl(a + d, 7) + a;
		const uint32_t t = b << 9;
		const uint32_t c2 = c ^ a, d2 = d ^ b;
		g->s1[l] = b ^ c2;
		g->s0[l] = a ^ d2;
		g->s2[l] = c2 ^ t;
		g->s3[l] = rng_rotl(d2, 11);
	}
}

/* Stochastic rounding of one row with 16 generators side by side (seeded
 * from (seed, 16 stream + l)): one draw of the 16 serves 32 elements, its
 * low halves elements [32 c, 32 c + 16), its high halves the next 16.  A
 * scalar xoshiro step per two elements was most of a stochastic
 * quantisation's time. */
static void seed16(rng16 *g, uint64_t seed, uint64_t stream)
{
	for (int l = 0; l < 16; l++) {
		hdqt_rng r;
		hdqt_rng_seed(&r, seed, stream * 16 + (uint64_t)l);
		g->s0[l] = r.s[0];
		g->s1[l] = r.s[1];
		g->s2[l] = r.s[2];
		g->s3[l] = r.s[3];
	}
}

#if HDQT_X86_64
/* rng16_next on four zmm: the same integers lane by lane. */
__attribute__((target("avx512f"))) static inline __m512i rng16_step_avx512(__m512i *s0, __m512i *s1,
									  __m512i *s2, __m512i *s3)
{
	const __m512i u = _mm512_add_epi32(_mm512_rol_epi32(_mm512_add_epi32(*s0, *s3), 7), *s0);
	const __m512i t = _mm512_slli_epi32(*s1, 9);
	const __m512i c2 = _mm512_xor_si512(*s2, *s0), d2 = _mm512_xor_si512(*s3, *s1);
	*s1 = _mm512_xor_si512(*s1, c2);
	*s0 = _mm512_xor_si512(*s0, d2);
	*s2 = _mm512_xor_si512(c2, t);
	*s3 = _mm512_rol_epi32(d2, 11);
	return u;
}

__attribute__((target("avx512f"))) static long row16_avx512(const float *x, long n, float inv, float qmin,
							   float qmax, rng16 *g, int8_t *q)
{
	const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(qmin), hi = _mm512_set1_ps(qmax);
	const __m512 scale = _mm512_set1_ps(USCALE), bias = _mm512_set1_ps(QBIAS);
	const __m512i ib = _mm512_set1_epi32((int)QBIAS), m14 = _mm512_set1_epi32(0x3fff);
	__m512i s0 = _mm512_loadu_si512(g->s0), s1 = _mm512_loadu_si512(g->s1);
	__m512i s2 = _mm512_loadu_si512(g->s2), s3 = _mm512_loadu_si512(g->s3);
	long i = 0;
	for (; i + 32 <= n; i += 32) {
		const __m512i u = rng16_step_avx512(&s0, &s1, &s2, &s3);
		for (int h = 0; h < 2; h++) {
			const __m512i uh = h ? _mm512_srli_epi32(u, 18) : _mm512_and_si512(_mm512_srli_epi32(u, 2), m14);
			__m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i + 16 * h), vinv);
			v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
			v = _mm512_add_ps(v, _mm512_mul_ps(_mm512_cvtepi32_ps(uh), scale));
			const __m512i c = _mm512_sub_epi32(_mm512_cvttps_epi32(_mm512_add_ps(v, bias)), ib);
			_mm_storeu_si128((__m128i *)(q + i + 16 * h), _mm512_cvtepi32_epi8(c));
		}
	}
	_mm512_storeu_si512(g->s0, s0);
	_mm512_storeu_si512(g->s1, s1);
	_mm512_storeu_si512(g->s2, s2);
	_mm512_storeu_si512(g->s3, s3);
	return i;
}
/* ---- the AVX2 twins (a box without AVX-512): 16 lanes as two ymm ---- */
#define AVX2_Q __attribute__((target("avx2")))
#define ROTL_AVX2(x, r) _mm256_or_si256(_mm256_slli_epi32(x, r), _mm256_srli_epi32(x, 32 - (r)))

/* rng16_next on eight of the lanes: the same integers lane by lane. */
AVX2_Q static inline __m256i rng8_step_avx2(__m256i s[4])
{
	const __m256i u = _mm256_add_epi32(ROTL_AVX2(_mm256_add_epi32(s[0], s[3]), 7), s[0]);
	const __m256i t = _mm256_slli_epi32(s[1], 9);
	const __m256i c2 = _mm256_xor_si256(s[2], s[0]), d2 = _mm256_xor_si256(s[3], s[1]);
	s[1] = _mm256_xor_si256(s[1], c2);
	s[0] = _mm256_xor_si256(s[0], d2);
	s[2] = _mm256_xor_si256(c2, t);
	s[3] = ROTL_AVX2(d2, 11);
	return u;
}

/* Lanes [8 h, 8 h + 8) of the 16 generators, and back. */
AVX2_Q static inline void rng8_load(const rng16 *g, int h, __m256i s[4])
{
	s[0] = _mm256_loadu_si256((const __m256i *)(g->s0 + 8 * h));
	s[1] = _mm256_loadu_si256((const __m256i *)(g->s1 + 8 * h));
	s[2] = _mm256_loadu_si256((const __m256i *)(g->s2 + 8 * h));
	s[3] = _mm256_loadu_si256((const __m256i *)(g->s3 + 8 * h));
}

AVX2_Q static inline void rng8_store(rng16 *g, int h, const __m256i s[4])
{
	_mm256_storeu_si256((__m256i *)(g->s0 + 8 * h), s[0]);
	_mm256_storeu_si256((__m256i *)(g->s1 + 8 * h), s[1]);
	_mm256_storeu_si256((__m256i *)(g->s2 + 8 * h), s[2]);
	_mm256_storeu_si256((__m256i *)(g->s3 + 8 * h), s[3]);
}

/* The scalar formula on 8 lanes: clamp (NaN -> qmin: max_ps gives its
 * second operand), add (the bias and half, or the uniform), truncate. */
AVX2_Q static inline __m256 round8(__m256 v, __m256 inv, __m256 lo, __m256 hi, __m256 add)
{
	v = _mm256_mul_ps(v, inv);
	v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
	return _mm256_add_ps(v, add);
}

/* 16 int32 codes to their low bytes (the scalar cast; unsigned 8-bit codes
 * reach 255, which saturating packs would turn into 127): masked, then
 * packed without saturation taking effect. */
AVX2_Q static inline void store_codes16(int8_t *q, __m256i c0, __m256i c1)
{
	const __m256i m = _mm256_set1_epi32(0xff);
	c0 = _mm256_and_si256(c0, m);
	c1 = _mm256_and_si256(c1, m);
	const __m128i w0 = _mm_packus_epi32(_mm256_castsi256_si128(c0), _mm256_extracti128_si256(c0, 1));
	const __m128i w1 = _mm_packus_epi32(_mm256_castsi256_si128(c1), _mm256_extracti128_si256(c1, 1));
	_mm_storeu_si128((__m128i *)q, _mm_packus_epi16(w0, w1));
}

/* u's 14-bit uniform (the low one, or the high one) times 2^-14. */
AVX2_Q static inline __m256 uniform8(__m256i u, int high)
{
	const __m256i b = high ? _mm256_srli_epi32(u, 18)
			       : _mm256_and_si256(_mm256_srli_epi32(u, 2), _mm256_set1_epi32(0x3fff));
	return _mm256_mul_ps(_mm256_cvtepi32_ps(b), _mm256_set1_ps(USCALE));
}

/* Stochastic codes of 16 values x[0..16) with the uniforms ua (lanes 0-7)
 * and ub (8-15): (v + u') + bias, truncated, as code_sr. */
AVX2_Q static inline void sr16_avx2(const float *x, __m256 inv0, __m256 inv1, __m256 lo, __m256 hi,
				    __m256 ua, __m256 ub, int8_t *q)
{
	const __m256 bias = _mm256_set1_ps(QBIAS);
	const __m256i ib = _mm256_set1_epi32((int)QBIAS);
	const __m256 v0 = round8(_mm256_loadu_ps(x), inv0, lo, hi, ua);
	const __m256 v1 = round8(_mm256_loadu_ps(x + 8), inv1, lo, hi, ub);
	store_codes16(q, _mm256_sub_epi32(_mm256_cvttps_epi32(_mm256_add_ps(v0, bias)), ib),
		      _mm256_sub_epi32(_mm256_cvttps_epi32(_mm256_add_ps(v1, bias)), ib));
}

AVX2_Q static long row16_avx2(const float *x, long n, float inv, float qmin, float qmax, rng16 *g,
			      int8_t *q)
{
	const __m256 vinv = _mm256_set1_ps(inv), lo = _mm256_set1_ps(qmin), hi = _mm256_set1_ps(qmax);
	__m256i a[4], b[4];
	rng8_load(g, 0, a);
	rng8_load(g, 1, b);
	long i = 0;
	for (; i + 32 <= n; i += 32) {
		const __m256i ua = rng8_step_avx2(a), ub = rng8_step_avx2(b);
		sr16_avx2(x + i, vinv, vinv, lo, hi, uniform8(ua, 0), uniform8(ub, 0), q + i);
		sr16_avx2(x + i + 16, vinv, vinv, lo, hi, uniform8(ua, 1), uniform8(ub, 1), q + i + 16);
	}
	rng8_store(g, 0, a);
	rng8_store(g, 1, b);
	return i;
}
#define ROW16_FAST(x, n, inv, lo, hi, g, q)                                   \
	(simd && SIMD_AVX512F() ? row16_avx512(x, n, inv, lo, hi, g, q)        \
	 : simd && SIMD_AVX2()	? row16_avx2(x, n, inv, lo, hi, g, q) \
				: 0)
#else
#define ROW16_FAST(x, n, inv, lo, hi, g, q) 0
#endif

HDQT_CLONES void quant_row16_impl(const float *x, long n, float step, const quant_spec *sp,
				  uint64_t seed, uint64_t stream, int8_t *q, int simd)
{
	const float qmax = (float)quant_qmax(sp);
	const float qmin = sp->is_unsigned ? 0.0f : -qmax;
	const float inv = 1.0f / step;
	rng16 g;
	seed16(&g, seed, stream);
	for (long i = ROW16_FAST(x, n, inv, qmin, qmax, &g, q); i < n; i += 32) {
		uint32_t u[16];
		rng16_next(&g, u);
		for (int k = 0; k < 32 && i + k < n; k++) {
			const uint32_t uk = k < 16 ? U14_LO(u[k]) : U14_HI(u[k - 16]);
			q[i + k] = code_sr(x[i + k], inv, qmin, qmax, uk);
		}
	}
}

uint64_t quant_seed(hdqt_rng *rng)
{
	if (!rng)
		return 0;
	uint64_t hi = rng_next(rng);
	return hi << 32 | rng_next(rng);
}

float quant_tensor_step(const float *x, int rows, int cols, const quant_spec *sp)
{
	return quant_step_of(quant_range(x, (long)rows * cols, sp, 1), sp);
}

void quant_rows_part(const float *x, int r0, int r1, int cols, const quant_spec *sp,
		     uint64_t seed, float step, int8_t *q, float *scale)
{
	for (int r = r0; r < r1; r++) {
		const float *xr = x + (long)r * cols;
		float st = step;
		if (sp->per_row)
			st = quant_step_of(quant_range(xr, cols, sp, 1), sp);
		scale[r] = st;
		if (sp->stochastic) /* row r's own 16 streams */
			quant_row16_impl(xr, cols, st, sp, seed, (uint64_t)r, q + (long)r * cols, 1);
		else
			quant_group(xr, cols, st, sp, q + (long)r * cols);
	}
}

void quant_rows(const float *x, int rows, int cols, const quant_spec *sp,
		hdqt_rng *rng, int8_t *q, float *scale)
{
	const float step = sp->per_row ? 0.0f : quant_tensor_step(x, rows, cols, sp);
	quant_rows_part(x, 0, rows, cols, sp, sp->stochastic ? quant_seed(rng) : 0, step, q, scale);
}

/* ---- strips of 16 columns (the backward's transposed operands, lib/linear.c) ---- */

#if HDQT_X86_64
/* A row of a strip is one zmm.  The generators' state is four zmm; each
 * operation is the scalar loop's on 16 lanes (rotates, adds, xors), the
 * rounding the scalar formula term by term: identical codes. */
#define AVX512_Q __attribute__((target("avx512f")))

AVX512_Q static inline __m512 round16(__m512 v, __m512 inv, __m512 lo, __m512 hi, __m512 add)
{
	v = _mm512_mul_ps(v, inv);
	v = _mm512_min_ps(_mm512_max_ps(v, lo), hi); /* NaN -> qmin, as the scalar ternaries */
	return _mm512_add_ps(v, add);
}

AVX512_Q static void strip16_avx512(const float *x, int rows, const float inv[16], float qmin,
				    float qmax, const rng16 *g0, int8_t *q)
{
	const __m512 vinv = _mm512_loadu_ps(inv), lo = _mm512_set1_ps(qmin), hi = _mm512_set1_ps(qmax);
	const __m512i ib = _mm512_set1_epi32((int)QBIAS);
	if (!g0) {
		const __m512 half = _mm512_set1_ps(QBIAS + 0.5f);
		for (int r = 0; r < rows; r++) {
			__m512 v = round16(_mm512_loadu_ps(x + r * 16), vinv, lo, hi, half);
			__m512i c = _mm512_sub_epi32(_mm512_cvttps_epi32(v), ib);
			_mm_storeu_si128((__m128i *)(q + r * 16), _mm512_cvtepi32_epi8(c));
		}
		return;
	}
	__m512i s0 = _mm512_loadu_si512(g0->s0), s1 = _mm512_loadu_si512(g0->s1);
	__m512i s2 = _mm512_loadu_si512(g0->s2), s3 = _mm512_loadu_si512(g0->s3);
	const __m512 scale = _mm512_set1_ps(USCALE), bias = _mm512_set1_ps(QBIAS);
	const __m512i m14 = _mm512_set1_epi32(0x3fff);
	for (int r = 0; r < rows; r += 2) {
		const __m512i u = rng16_step_avx512(&s0, &s1, &s2, &s3);
		/* v + u * 2^-14 + bias, in the scalar's order: (v + u') + bias */
		__m512 ulo = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(u, 2), m14)), scale);
		__m512 v = round16(_mm512_loadu_ps(x + r * 16), vinv, lo, hi, ulo);
		__m512i c = _mm512_sub_epi32(_mm512_cvttps_epi32(_mm512_add_ps(v, bias)), ib);
		_mm_storeu_si128((__m128i *)(q + r * 16), _mm512_cvtepi32_epi8(c));
		if (r + 1 < rows) {
			__m512 uhi = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(u, 18)), scale);
			v = round16(_mm512_loadu_ps(x + (r + 1) * 16), vinv, lo, hi, uhi);
			c = _mm512_sub_epi32(_mm512_cvttps_epi32(_mm512_add_ps(v, bias)), ib);
			_mm_storeu_si128((__m128i *)(q + (r + 1) * 16), _mm512_cvtepi32_epi8(c));
		}
	}
}

AVX512_Q static void strip16_max_avx512(const float *x, int rows, float mx[16])
{
	const __m512i absmask = _mm512_set1_epi32(0x7fffffff);
	__m512 m = _mm512_setzero_ps();
	for (int r = 0; r < rows; r++)
		/* max_ps gives its second operand when one is NaN: the scalar
		 * "a > m ? a : m" keeps m */
		m = _mm512_max_ps(_mm512_castsi512_ps(_mm512_and_si512(
				      _mm512_castps_si512(_mm512_loadu_ps(x + r * 16)), absmask)), m);
	_mm512_storeu_ps(mx, m);
}
#define HAVE_AVX512_RT() SIMD_AVX512F()

/* A row of a strip is two ymm; the generators' state eight. */
AVX2_Q static void strip16_avx2(const float *x, int rows, const float inv[16], float qmin, float qmax,
				const rng16 *g0, int8_t *q)
{
	const __m256 inv0 = _mm256_loadu_ps(inv), inv1 = _mm256_loadu_ps(inv + 8);
	const __m256 lo = _mm256_set1_ps(qmin), hi = _mm256_set1_ps(qmax);
	if (!g0) {
		const __m256 half = _mm256_set1_ps(QBIAS + 0.5f);
		const __m256i ib = _mm256_set1_epi32((int)QBIAS);
		for (int r = 0; r < rows; r++) {
			const __m256 v0 = round8(_mm256_loadu_ps(x + r * 16), inv0, lo, hi, half);
			const __m256 v1 = round8(_mm256_loadu_ps(x + r * 16 + 8), inv1, lo, hi, half);
			store_codes16(q + r * 16, _mm256_sub_epi32(_mm256_cvttps_epi32(v0), ib),
				      _mm256_sub_epi32(_mm256_cvttps_epi32(v1), ib));
		}
		return;
	}
	__m256i a[4], b[4];
	rng8_load(g0, 0, a);
	rng8_load(g0, 1, b);
	for (int r = 0; r < rows; r += 2) {
		const __m256i ua = rng8_step_avx2(a), ub = rng8_step_avx2(b);
		sr16_avx2(x + r * 16, inv0, inv1, lo, hi, uniform8(ua, 0), uniform8(ub, 0), q + r * 16);
		if (r + 1 < rows)
			sr16_avx2(x + (r + 1) * 16, inv0, inv1, lo, hi, uniform8(ua, 1), uniform8(ub, 1),
				  q + (r + 1) * 16);
	}
}

AVX2_Q static void strip16_max_avx2(const float *x, int rows, float mx[16])
{
	const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
	__m256 m0 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps();
	for (int r = 0; r < rows; r++) { /* max_ps(a, m): a NaN keeps m */
		m0 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + r * 16), absmask), m0);
		m1 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + r * 16 + 8), absmask), m1);
	}
	_mm256_storeu_ps(mx, m0);
	_mm256_storeu_ps(mx + 8, m1);
}
#define HAVE_STRIP_AVX2_RT() SIMD_AVX2()
#else
#define HAVE_AVX512_RT() 0
#define HAVE_STRIP_AVX2_RT() 0
#define strip16_avx512(x, rows, inv, qmin, qmax, g, q) ((void)0)
#define strip16_max_avx512(x, rows, mx) ((void)0)
#define strip16_avx2(x, rows, inv, qmin, qmax, g, q) ((void)0)
#define strip16_max_avx2(x, rows, mx) ((void)0)
#endif

static void strip16_c(const float *x, int rows, const float inv[16], float qmin, float qmax,
		      rng16 *g, int8_t *q);

void quant_strip16(const float *x, int rows, const float step[16], const quant_spec *sp,
		   uint64_t seed, uint64_t stream, int8_t *q)
{
	quant_strip16_impl(x, rows, step, sp, seed, stream, q, 1);
}

void quant_strip16_impl(const float *x, int rows, const float step[16], const quant_spec *sp,
			uint64_t seed, uint64_t stream, int8_t *q, int simd)
{
	const float qmax = (float)quant_qmax(sp);
	const float qmin = sp->is_unsigned ? 0.0f : -qmax;
	float inv[16];
	for (int l = 0; l < 16; l++)
		inv[l] = 1.0f / step[l];
	rng16 g;
	if (sp->stochastic)
		seed16(&g, seed, stream); /* lane l of strip `stream` */
	if (simd && HAVE_AVX512_RT()) {
		strip16_avx512(x, rows, inv, qmin, qmax, sp->stochastic ? &g : NULL, q);
		return;
	}
	if (simd && HAVE_STRIP_AVX2_RT()) {
		strip16_avx2(x, rows, inv, qmin, qmax, sp->stochastic ? &g : NULL, q);
		return;
	}
	strip16_c(x, rows, inv, qmin, qmax, sp->stochastic ? &g : NULL, q);
}

HDQT_CLONES static void strip16_c(const float *x, int rows, const float inv[16], float qmin, float qmax,
				  rng16 *g, int8_t *q)
{
	if (!g) {
		for (int r = 0; r < rows; r++)
			for (int l = 0; l < 16; l++)
				q[r * 16 + l] = code_nearest(x[r * 16 + l], inv[l], qmin, qmax);
		return;
	}
	/* One draw per lane serves two rows: its low half the even row, its
	 * high half the odd one (14-bit uniforms, U14_LO / U14_HI). */
	for (int r = 0; r < rows; r += 2) {
		uint32_t u[16];
		rng16_next(g, u);
		const int two = r + 1 < rows;
		for (int l = 0; l < 16; l++)
			q[r * 16 + l] = code_sr(x[r * 16 + l], inv[l], qmin, qmax, U14_LO(u[l]));
		if (two)
			for (int l = 0; l < 16; l++)
				q[(r + 1) * 16 + l] = code_sr(x[(r + 1) * 16 + l], inv[l], qmin, qmax, U14_HI(u[l]));
	}
}

void quant_strip16_stats(const float *x, int rows, float mx[16], double *ss)
{
	quant_strip16_stats_impl(x, rows, mx, ss, 1);
}

HDQT_CLONES void quant_strip16_stats_impl(const float *x, int rows, float mx[16], double *ss, int simd)
{
	if (simd && HAVE_AVX512_RT()) {
		strip16_max_avx512(x, rows, mx);
		goto sums;
	}
	if (simd && HAVE_STRIP_AVX2_RT()) {
		strip16_max_avx2(x, rows, mx);
		goto sums;
	}
	float m[16] = {0};
	for (int r = 0; r < rows; r++)
		for (int l = 0; l < 16; l++) {
			const float a = fabsf(x[r * 16 + l]);
			m[l] = a > m[l] ? a : m[l]; /* as max_abs: a NaN is skipped */
		}
	for (int l = 0; l < 16; l++)
		mx[l] = m[l];
sums:
	if (!ss)
		return;
	double q[16] = {0};
	for (int r = 0; r < rows; r++)
		for (int l = 0; l < 16; l++)
			q[l] += (double)x[r * 16 + l] * (double)x[r * 16 + l];
	for (int l = 0; l < 16; l++)
		ss[l] = q[l];
}
