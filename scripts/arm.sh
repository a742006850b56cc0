#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# aarch64: cross-build hdqtd into build-arm64/ and run it under qemu-user
# (docs/arm.md).  Installs what it needs (arm64 architecture, the cross
# compiler, qemu-user, the :arm64 -dev packages) when run as root, and fails
# loudly otherwise -- it never skips.  Then:
#   - every Check suite (meson suites unit + slow) under each kernel variant forced with
#     HDQT_KERNEL: dotprod on QEMU_CPU=max (has FEAT_DotProd), neon and scalar
#     on cortex-a72 (ARMv8.0, no dot product); each run is a meson test run
#     whose log is build-arm64/meson-logs/arm-<kernel>-<cpu>.json.  neon and
#     scalar run once, on the v8.0 core: past ASIMD, which every aarch64 core
#     has, the dot product is the only HWCAP bit the engine's code reads.
#     What else max changes (libgcc's outline atomics take LSE, glibc's
#     ifuncs) does not depend on the kernel, and the dotprod run covers it;
#     the two runs on max took 4.5 of this script's 11 minutes on a Zen 3
#     box (2026-12-07);
#   - the HWCAP check: dotprod asked for on a cortex-a72 is refused;
#   - a daemon smoke test (tests/arm/smoke.py) with dotprod/max and neon/a72.
# Ends with one closing line counted over those logs; exit 1 on any failure.
# Runs two qemu processes at a time, one per core (build: -j2).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build-arm64
LOGS=$BUILD/meson-logs
T0=$(date +%s)
die() { echo "scripts/arm.sh: $*" >&2; exit 1; }
. scripts/apt.sh

# ---- packages ----------------------------------------------------------------
HOST_PKGS=(gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu qemu-user meson ninja-build pkg-config python3)
ARM_PKGS=(libc6:arm64 libuv1-dev:arm64 libcjson-dev:arm64 libsqlite3-dev:arm64 zlib1g-dev:arm64
          check:arm64 libsubunit-dev:arm64 libkissfft-dev:arm64 libinih-dev:arm64 libsystemd-dev:arm64)
missing=()
for p in "${HOST_PKGS[@]}" "${ARM_PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] || ! dpkg --print-foreign-architectures | grep -qx arm64; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "scripts/arm.sh: FAILED: missing packages for the aarch64 build: ${missing[*]}" >&2
		echo "  as root: dpkg --add-architecture arm64 && apt-get update &&" >&2
		echo "           apt-get install --no-install-recommends ${missing[*]}" >&2
		exit 1
	fi
	echo "scripts/arm.sh: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt_repair || true
	dpkg --add-architecture arm64
	apt_install "${missing[@]}" || die "FAILED: apt-get install ${missing[*]}"
fi
for t in aarch64-linux-gnu-gcc qemu-aarch64 meson ninja; do
	command -v "$t" >/dev/null || die "FAILED: $t not found after installing"
done
[ -e /lib/ld-linux-aarch64.so.1 ] || die "FAILED: /lib/ld-linux-aarch64.so.1 missing (libc6:arm64)"

# ---- cross build ----------------------------------------------------------------
if [ ! -f $BUILD/build.ninja ]; then
	meson setup $BUILD --cross-file cross/aarch64-linux-gnu.ini -Dwerror=true \
		--buildtype=debugoptimized
fi
ninja -C $BUILD -j2
file $BUILD/daemon/hdqtd | grep -q 'ARM aarch64' || die "FAILED: $BUILD/daemon/hdqtd is not an aarch64 binary"
T1=$(date +%s)

# ---- tests under qemu --------------------------------------------------------------
# The loader and libraries of libc6:arm64 (-L /), as the cross file's exe_wrapper.
QEMU=(qemu-aarch64 -L /)
# every unit and slow suite of tests/meson.build (a new suite joins by itself)
SUITES=(--suite unit --suite slow)
rm -f $LOGS/arm-*.json
failed=0
record() { # name result seconds: one line of meson's testlog format
	printf '{"name": "%s", "result": "%s", "duration": %s}\n' "$1" "$2" "$3" >>$LOGS/arm-checks.json
}
run_suites() { # cpu kernel
	local cpu=$1 kern=$2 got t
	got=$(QEMU_CPU=$cpu HDQT_KERNEL=$kern "${QEMU[@]}" $BUILD/bench/hdqt-bench --kernel-name)
	if [ "$got" != "$kern" ]; then
		echo "scripts/arm.sh: HDQT_KERNEL=$kern on $cpu runs '$got'" >&2
		record "kernel-forced-$kern-$cpu" FAIL 0
		failed=1
		return
	fi
	echo "== aarch64 suites: kernel $kern, QEMU_CPU=$cpu =="
	t=$(date +%s)
	QEMU_CPU=$cpu HDQT_KERNEL=$kern CK_FORK=no meson test -C $BUILD --no-rebuild \
		--num-processes 2 --print-errorlogs --logbase "arm-$kern-$cpu" "${SUITES[@]}" || failed=1
	echo "   ($(( $(date +%s) - t )) s)"
}
mkdir -p $LOGS
run_suites max dotprod
run_suites cortex-a72 neon
run_suites cortex-a72 scalar

# A v8.0 core must never be handed the SDOT kernel, even when asked for.
got=$(QEMU_CPU=cortex-a72 HDQT_KERNEL=dotprod "${QEMU[@]}" $BUILD/bench/hdqt-bench --kernel-name)
auto_max=$(QEMU_CPU=max "${QEMU[@]}" $BUILD/bench/hdqt-bench --kernel-name)
auto_a72=$(QEMU_CPU=cortex-a72 "${QEMU[@]}" $BUILD/bench/hdqt-bench --kernel-name)
echo "== HWCAP selection: max -> $auto_max, cortex-a72 -> $auto_a72, dotprod forced on cortex-a72 -> $got =="
if [ "$got" != dotprod ] && [ "$auto_max" = dotprod ] && [ "$auto_a72" = neon ]; then
	record hwcap-selection OK 0
else
	record hwcap-selection FAIL 0
	failed=1
fi

for cfg in "max dotprod" "cortex-a72 neon"; do
	set -- $cfg
	echo "== daemon smoke test: kernel $2, QEMU_CPU=$1 =="
	t=$(date +%s)
	if QEMU_CPU=$1 HDQT_KERNEL=$2 HDQT_SOURCE_ROOT=$PWD PYTHONDONTWRITEBYTECODE=1 \
		timeout 600 python3 tests/arm/smoke.py $BUILD/daemon/hdqtd "${QEMU[@]}"; then
		record "daemon-smoke-$2-$1" OK $(( $(date +%s) - t ))
	else
		record "daemon-smoke-$2-$1" FAIL $(( $(date +%s) - t ))
		failed=1
	fi
done

# ---- closing line ----------------------------------------------------------------------
python3 - $LOGS/arm-*.json <<'PY'
import json, sys
n = {"ok": 0, "fail": 0, "skip": 0}
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line)["result"]
        n["ok" if r in ("OK", "EXPECTEDFAIL") else "skip" if r == "SKIP" else "fail"] += 1
print("aarch64 (qemu): %d passed, %d failed, %d skipped" % (n["ok"], n["fail"], n["skip"]))
PY
echo "scripts/arm.sh: build $((T1 - T0)) s, tests $(( $(date +%s) - T1 )) s"
exit $failed
