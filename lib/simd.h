/* SPDX-License-Identifier: MIT */
/*
 * Function multi-versioning for the element-wise loops around the kernels
 * (quantisation, transforms, transposes, optimiser).  GCC emits a baseline
 * and an AVX2 clone and picks one at load time through an ifunc, so one
 * binary runs on every x86-64 box.  The loops do no reassociation and C11
 * mode keeps -ffp-contract=off, so both clones compute identical floats.
 *
 * The cap: every explicit x86 path (the GEMM kernels and the intrinsics
 * loops) asks SIMD_AVX2() / SIMD_AVX512F(), which is the CPU's feature
 * under the level HDQT_ISA allows (native, avx2, baseline).  So one box
 * runs, measures and tests what a smaller one runs: HDQT_ISA=avx2 on an
 * AVX-512 machine is a machine without AVX-512 (the load-time clones are
 * AVX2 on both).  Every path gives the same bits, so the cap changes speed
 * only.  A cap of baseline still leaves the clones at AVX2 where the CPU
 * has it.
 */
#pragma once

#include "config.h"

#if HDQT_X86_64 && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define HDQT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define HDQT_CLONES
#endif

enum { SIMD_BASELINE = 0, SIMD_AVX2 = 1, SIMD_AVX512 = 2 };

/* The level allowed: HDQT_ISA's (read once) or simd_cap_select's. */
int simd_cap(void);
/* "native" (or NULL, empty) / "avx2" / "baseline" to a level; -1 if unknown. */
int simd_cap_parse(const char *name);
/* The level's name as simd_cap_parse takes it. */
const char *simd_cap_name(void);
/* For tests and benchmarks, before any worker runs; -1 for a bad level.
 * Kernels already chosen stay (hdqt_kernel_select picks again). */
int simd_cap_select(int level);

#if HDQT_X86_64
#define SIMD_AVX2() (simd_cap() >= SIMD_AVX2 && __builtin_cpu_supports("avx2"))
#define SIMD_AVX512F() (simd_cap() >= SIMD_AVX512 && __builtin_cpu_supports("avx512f"))
#endif
