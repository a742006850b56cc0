/* SPDX-License-Identifier: MIT */
/*
 * xoshiro128++ (Blackman & Vigna): 128-bit state, passes BigCrush, a few
 * cycles per draw.  Seeded through splitmix64 from (seed, stream) so that
 * every thread or purpose gets its own reproducible stream.
 */
#include <math.h>

#include "hdqt.h"
#include "rng.h"

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void hdqt_rng_seed(hdqt_rng *r, uint64_t seed, uint64_t stream)
{
	uint64_t x = seed ^ (stream * 0xd1342543de82ef95ULL);
	uint64_t a = splitmix64(&x), b = splitmix64(&x);
	r->s[0] = (uint32_t)a;
	r->s[1] = (uint32_t)(a >> 32);
	r->s[2] = (uint32_t)b;
	r->s[3] = (uint32_t)(b >> 32);
	if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3]))
		r->s[0] = 1; /* the all-zero state is a fixed point */
}

uint32_t hdqt_rng_u32(hdqt_rng *r)
{
	return rng_next(r);
}

float hdqt_rng_uniform(hdqt_rng *r)
{
	return (float)(hdqt_rng_u32(r) >> 8) * (1.0f / 16777216.0f);
}

float hdqt_rng_normal(hdqt_rng *r)
{
	/* Box-Muller; u1 in (0, 1] so the log is finite. */
	float u1 = ((float)(hdqt_rng_u32(r) >> 8) + 1.0f) * (1.0f / 16777216.0f);
	float u2 = hdqt_rng_uniform(r);
	return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}

uint32_t hdqt_rng_below(hdqt_rng *r, uint32_t n)
{
	/* Lemire's multiply-shift with rejection: unbiased. */
	uint64_t m = (uint64_t)hdqt_rng_u32(r) * n;
	uint32_t l = (uint32_t)m;
	if (l < n) {
		uint32_t t = (uint32_t)(-n) % n;
		while (l < t) {
			m = (uint64_t)hdqt_rng_u32(r) * n;
			l = (uint32_t)m;
		}
	}
	return (uint32_t)(m >> 32);
}
