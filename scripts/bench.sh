#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# hdqt training step against PyTorch fp32, side by side on this machine:
# hdqt-bench --train-only and bench/torch_step.py (Debian's python3-torch,
# installed here if missing; the test command never needs it) alternately,
# ROUNDS times each (default 3) at 1 and 2 threads (PyTorch at the best of its
# intra-op / OpenBLAS thread settings for that many cores); prints the best of each,
# their ratio, and one JSON line.  Usage: scripts/bench.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-2}
if ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "bench.sh: needs python3-torch: apt-get install python3-torch" >&2
		exit 1
	fi
	. scripts/apt.sh
	apt_install python3-torch
fi
if [ ! -f build-rel/build.ninja ]; then
	meson setup build-rel --buildtype=release >/dev/null
fi
ninja -C build-rel bench/hdqt-bench >/dev/null
# Both fp32 sides (this engine's fp32 mode and PyTorch's Linear) multiply
# through Debian's OpenBLAS.  OpenBLAS 0.3.21 does not know every newer CPU
# and falls back to its Prescott (SSE3) kernels there (seen on a Xeon of
# family 6, model 207, with AVX-512): PyTorch ran 3x slower than with the
# kernels the CPU can run.  So that hdqt is compared with the best float
# this machine has, such a fallback on an AVX-512 / AVX2 CPU is overridden
# (OPENBLAS_CORETYPE, unless the caller set it) and the choice printed.
# HDQT_ISA=avx2 stands in for a box without AVX-512: the engine then runs
# only what such a box has, so the float side is held to the same
# instruction set (OpenBLAS's Haswell kernels, ATen's avx2 ones) unless the
# caller set them.  HDQT_ISA=baseline is refused here: the engine's
# load-time clones stay AVX2 (lib/simd.h), so it is no SSE2 box to compare
# with SSE2 float (build with -Dsimd=false for that).
isa=$(echo "${HDQT_ISA:-native}" | tr A-Z a-z)
case "$isa" in
native) ;;
avx2)
	grep -qw avx2 /proc/cpuinfo || { echo "bench.sh: HDQT_ISA=avx2 on a CPU without AVX2" >&2; exit 2; }
	export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
	export ATEN_CPU_CAPABILITY=${ATEN_CPU_CAPABILITY:-avx2}
	;;
*)
	echo "bench.sh: HDQT_ISA=$HDQT_ISA: native or avx2 here (baseline leaves the AVX2 clones on)" >&2
	exit 2
	;;
esac
export HDQT_ISA=$isa
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
	core=$(/usr/bin/python3 -c 'import ctypes; l = ctypes.CDLL("libopenblas.so.0"); l.openblas_get_corename.restype = ctypes.c_char_p; print(l.openblas_get_corename().decode())' 2>/dev/null || echo unknown)
	want=
	if grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo; then
		want=SkylakeX
	elif grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
		want=Haswell
	fi
	case "$core" in
	Prescott | Nehalem | Sandybridge | Core2 | Penryn | Dunnington | Katmai | Coppermine | Northwood)
		if [ -n "$want" ]; then
			echo "bench.sh: OpenBLAS picked $core kernels on this CPU; using OPENBLAS_CORETYPE=$want" >&2
			export OPENBLAS_CORETYPE=$want
		fi
		;;
	esac
fi
export BENCH_OPENBLAS_CORE=${OPENBLAS_CORETYPE:-${core:-unknown}}
echo "bench.sh: OpenBLAS core $BENCH_OPENBLAS_CORE" >&2
/usr/bin/python3 - "$rounds" "$secs" <<'PY'
import json, os, subprocess, sys
rounds, secs = int(sys.argv[1]), sys.argv[2]
best = {}
for r in range(rounds):
    for t in (1, 2):
        h = json.loads(subprocess.run(["build-rel/bench/hdqt-bench", "--train-only", "--json",
                                       "--threads", str(t), "--seconds", secs],
                                      check=True, capture_output=True, text=True).stdout)
        if h.get("isa") != os.environ["HDQT_ISA"]:
            sys.exit("bench.sh: hdqt-bench ran with isa %r, not %r" % (h.get("isa"), os.environ["HDQT_ISA"]))
        # PyTorch at its best for t cores: its intra-op threads and
        # OpenBLAS's each set to t or to 1 (they multiply otherwise).
        p = {"train_samples_per_s": 0}
        for tt, bt in ({(t, t), (t, 1), (1, t)}):
            env = dict(os.environ, OPENBLAS_NUM_THREADS=str(bt), OMP_NUM_THREADS=str(tt))
            q = json.loads(subprocess.run(["/usr/bin/python3", "bench/torch_step.py", "--threads",
                                           str(tt), "--seconds", secs], check=True,
                                          capture_output=True, text=True, env=env).stdout)
            p = q if q["train_samples_per_s"] > p["train_samples_per_s"] else p
        for mode, v in h["modes"].items():
            k = (mode, t)
            best[k] = max(best.get(k, 0), v["train_samples_per_s"])
        best[("pytorch-fp32", t)] = max(best.get(("pytorch-fp32", t), 0), p["train_samples_per_s"])
out = {"rounds": rounds, "model": "166-512-512-12", "batch": 128,
       "openblas_core": os.environ.get("BENCH_OPENBLAS_CORE", "unknown"),
       "isa": os.environ["HDQT_ISA"],
       "best_samples_per_s": {}, "ratio_to_pytorch": {}}
for t in (1, 2):
    torch_sps = best[("pytorch-fp32", t)]
    print("%d thread%s: PyTorch fp32 %.0f samples/s" % (t, "" if t == 1 else "s", torch_sps))
    for mode in ("fp32", "int", "hdqt-paper", "hdqt"):
        v = best[(mode, t)]
        print("  %-11s %8.0f samples/s  %.2fx PyTorch" % (mode, v, v / torch_sps))
        out["best_samples_per_s"]["%s@%d" % (mode, t)] = v
        out["ratio_to_pytorch"]["%s@%d" % (mode, t)] = round(v / torch_sps, 3)
    out["best_samples_per_s"]["pytorch-fp32@%d" % t] = torch_sps
print(json.dumps(out))
PY
