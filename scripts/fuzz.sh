#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Coverage-guided fuzzing of hdqtd's input parsers with libFuzzer (clang,
# ASan + UBSan); the targets are in tests/fuzz/.
#
#   scripts/fuzz.sh --list              the target names
#   scripts/fuzz.sh TARGET SECONDS      one campaign (one worker) over a copy of
#                                       tests/fuzz/corpus/TARGET
#   scripts/fuzz.sh --exe PATH TARGET SECONDS   the same with a given binary (meson tests)
#
# Builds build-fuzz/ first (CC=clang -Dfuzz=true) unless --exe is given or
# HDQT_FUZZ_BUILD names another build directory.  Exits non-zero on any
# finding (crash, leak, timeout, out-of-memory, sanitizer report); the
# reproducer is left in $HDQT_FUZZ_FINDINGS (default BUILD/fuzz-findings/TARGET/)
# and the grown corpus in a temporary folder that is printed, so that new
# inputs can be added to the committed corpus by hand (or with -merge=1).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
TARGETS=(linebuf rpc json dispatch features blob config)

usage() {
	echo "usage: $0 --list | [--exe PATH] TARGET SECONDS" >&2
	exit 2
}

exe=""
case "${1:-}" in
--list)
	printf '%s\n' "${TARGETS[@]}"
	exit 0
	;;
--exe)
	[ $# -ge 2 ] || usage
	exe=$2
	shift 2
	;;
-h | --help | "") usage ;;
esac
[ $# -eq 2 ] || usage
target=$1 seconds=$2
[[ " ${TARGETS[*]} " == *" $target "* ]] || { echo "fuzz.sh: no target '$target' (--list)" >&2; exit 2; }
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -ge 1 ] || { echo "fuzz.sh: SECONDS must be a positive integer" >&2; exit 2; }

if [ -z "$exe" ]; then
	build=${HDQT_FUZZ_BUILD:-$root/build-fuzz}
	if [ ! -f "$build/build.ninja" ]; then
		CC=clang CXX=clang++ meson setup "$build" "$root" --buildtype=debugoptimized -Dfuzz=true -Dtests=false \
			-Db_sanitize=address,undefined -Db_lundef=false >/dev/null
	fi
	ninja -C "$build" -j2 "tests/fuzz/fuzz_$target" >/dev/null
	exe=$build/tests/fuzz/fuzz_$target
	keep=1
else
	build=$(cd "$(dirname "$exe")/../.." && pwd)
	keep=0
fi

findings=${HDQT_FUZZ_FINDINGS:-$build/fuzz-findings/$target}
mkdir -p "$findings"
work=$(mktemp -d "${TMPDIR:-/tmp}/hdqt-fuzz-$target.XXXXXX")
cp -r "$root/tests/fuzz/corpus/$target/." "$work/"
rm -f "$work/README.md"
log=$work.log
before=$(find "$findings" -type f | wc -l)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
extra=()
[ "$target" = dispatch ] && extra+=(-max_len=32768)
echo "== fuzz $target for ${seconds}s: $exe, corpus copy $work"
set +e
"$exe" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
	-artifact_prefix="$findings/" "${extra[@]}" "$work" >"$log" 2>&1 &
pid=$!
wait $pid
rc=$?
set -e
rm -f /tmp/hdqt-fuzz-*-"$pid"* /tmp/hdqt-fuzz-*-"$pid"-* 2>/dev/null || true

after=$(find "$findings" -type f | wc -l)
# The figures: executions, coverage, corpus.
grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added' "$log" |
	sed 's/^/  /' || true
if [ $rc -ne 0 ] || [ "$after" -ne "$before" ] ||
	grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|SUMMARY: ' "$log"; then
	echo "fuzz.sh: $target: FINDING (exit $rc); log $log, reproducer in $findings/" >&2
	grep -E -A30 'ERROR: |runtime error:' "$log" | head -60 >&2 || tail -40 "$log" >&2
	exit 1
fi
rm -f "$log"
if [ $keep = 1 ]; then
	echo "fuzz.sh: $target: no finding in ${seconds}s (grown corpus: $work)"
else
	rm -rf "$work"
	echo "fuzz.sh: $target: no finding in ${seconds}s"
fi
