/* SPDX-License-Identifier: MIT */
/*
 * Function multi-versioning for the element-wise loops around the kernels
 * (quantisation, transforms, transposes, optimiser).  GCC emits a baseline
 * and an AVX2 clone and picks one at load time through an ifunc, so one
 * binary runs on every x86-64 box.  The loops do no reassociation and C11
 * mode keeps -ffp-contract=off, so both clones compute identical floats.
 */
#pragma once

#include "config.h"

#if HDQT_X86_64 && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define HDQT_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define HDQT_CLONES
#endif
