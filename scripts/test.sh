#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The whole test suite, twice: a normal -Dwerror=true build and an
# AddressSanitizer + UndefinedBehaviorSanitizer build; then the libFuzzer
# targets (tests/fuzz/) in a clang build, build-fuzz/.  Installs missing
# packages first (scripts/deps.sh).  Build trees: build-ci/, build-asan/, build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
# The npm client library used by the interoperability test (pinned by package-lock.json).
if [ ! -d tests/node/node_modules/json-rpc-2.0 ]; then
	(cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
fi

run_suite() {
	local dir=$1; shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" -Dwerror=true "$@"
	else
		meson configure "$dir" -Dwerror=true "$@" >/dev/null
	fi
	ninja -C "$dir"
	meson test -C "$dir" --print-errorlogs --num-processes 2
}

echo "== normal build =="
run_suite build-ci --buildtype=debugoptimized
echo "== ASan + UBSan build =="
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run_suite build-asan --buildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false
echo "== portable build (-Dsimd=false: no kernels, no clones): unit suites =="
if [ ! -f build-portable/build.ninja ]; then
	meson setup build-portable -Dwerror=true --buildtype=debugoptimized -Dsimd=false
fi
ninja -C build-portable
meson test -C build-portable --suite unit --suite slow --print-errorlogs --num-processes 2
echo "== fuzz build (clang libFuzzer, ASan + UBSan): corpus regression + short campaigns =="
# Its own build tree, build-fuzz/, with clang; only the fuzz targets are
# built and only suite 'fuzz' runs (scripts/fuzz.sh runs longer campaigns).
# -Dwerror=false: clang warns where gcc does not, and werror is the gcc builds' job.
if [ ! -f build-fuzz/build.ninja ]; then
	CC=clang CXX=clang++ meson setup build-fuzz --buildtype=debugoptimized -Dfuzz=true -Dtests=false \
		-Db_sanitize=address,undefined -Db_lundef=false -Dwerror=false
fi
ninja -C build-fuzz $(scripts/fuzz.sh --list | sed 's|^|tests/fuzz/fuzz_|')
meson test -C build-fuzz --no-rebuild --suite fuzz --print-errorlogs --num-processes 2

# ---- aarch64 (issue 14) -------------------------------------------------------
echo "== aarch64 cross build under qemu: every suite per kernel variant, daemon smoke test =="
# build-arm64/, cross/aarch64-linux-gnu.ini; installs what it needs or fails loudly.
# Its runs are logged as build-arm64/meson-logs/arm-*.json, counted below.
arm_rc=0
bash scripts/arm.sh || arm_rc=$?

# ---- Debian packages (issue 16) -----------------------------------------------
echo "== Debian packages: dpkg-buildpackage, lintian, contents, apt-get install, purge =="
# Builds in a scratch copy under /tmp, keeps the .debs in build-deb/; each
# check is logged in build-deb/testlog.json, counted below.
deb_rc=0
rm -f build-deb/testlog.json
bash scripts/deb.sh || deb_rc=$?
if [ ! -f build-deb/testlog.json ]; then
	mkdir -p build-deb && echo '{"name": "deb", "result": "FAIL"}' >build-deb/testlog.json
fi

# One closing line over the three builds, counted from meson's JSON test logs.
python3 - build-ci/meson-logs/testlog.json build-asan/meson-logs/testlog.json \
	build-portable/meson-logs/testlog.json build-fuzz/meson-logs/testlog.json build-arm64/meson-logs/arm-*.json \
	build-deb/testlog.json <<'PY'
import json, sys
passed = failed = skipped = 0
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif r == "SKIP":
            skipped += 1
        else:
            failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or passed == 0 else 0)
PY
[ $arm_rc -ne 0 ] && exit $arm_rc
exit $deb_rc
