/* SPDX-License-Identifier: MIT */
/* Inline xoshiro128++ step for hot loops; hdqt_rng_u32() is the same function. */
#pragma once

#include "hdqt.h"

static inline uint32_t rng_rotl(uint32_t x, int k)
{
	return (x << k) | (x >> (32 - k));
}

static inline uint32_t rng_next(hdqt_rng *r)
{
	uint32_t *s = r->s;
	uint32_t result = rng_rotl(s[0] + s[3], 7) + s[0];
	uint32_t t = s[1] << 9;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rng_rotl(s[3], 11);
	return result;
}
