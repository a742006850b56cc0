/* SPDX-License-Identifier: MIT */
/*
 * The cap on the engine's own x86 paths (simd.h).  Process-wide dispatch
 * state like gemm.c's kernel: HDQT_ISA is read once by pthread_once, or a
 * test or benchmark sets the cap before any worker starts.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hdqt.h"

#include "simd.h"

static int cap = SIMD_AVX512;
static pthread_once_t cap_once = PTHREAD_ONCE_INIT;

int simd_cap_parse(const char *s)
{
	if (!s || !*s || !strcasecmp(s, "native"))
		return SIMD_AVX512;
	if (!strcasecmp(s, "avx2"))
		return SIMD_AVX2;
	if (!strcasecmp(s, "baseline"))
		return SIMD_BASELINE;
	return -1;
}

static void read_env(void)
{
	/* an unknown name caps nothing (hdqt-bench refuses it, hdqtd logs it) */
	const int c = simd_cap_parse(getenv("HDQT_ISA"));
	cap = c < 0 ? SIMD_AVX512 : c;
}

const char *simd_cap_name(void)
{
	static const char *const names[] = {"baseline", "avx2", "native"};
	return names[simd_cap()];
}

const char *hdqt_isa_name(void)
{
	return simd_cap_name();
}

int simd_cap(void)
{
	pthread_once(&cap_once, read_env);
	return cap;
}

int simd_cap_select(int level)
{
	pthread_once(&cap_once, read_env);
	if (level < SIMD_BASELINE || level > SIMD_AVX512)
		return -1;
	cap = level;
	return 0;
}
