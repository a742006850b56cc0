#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The main job, end to end: install missing packages, build, start hdqtd
# with the default configuration and a fresh database in ./state, and replay
# HAPT recordings through hdqt-sensor so that the six basic activities
# arrive two at a time: classes announced, samples streamed, a background
# round trained (4-bit inputs, 8-bit tile accumulators, iCaRL), then the
# accuracy on held-out users for all classes seen so far.  Ends with live
# predictions at the recorded 50 Hz, stops hdqtd and leaves state/hdqtd.db.
#
# Data: ../shared/data/hapt when present, else the bundled data/hapt-subset
# (or HDQT_DATA=DIR).  HDQT_LIVE_SECONDS (default 20) bounds the live part.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
if [ ! -f build/build.ninja ]; then
	meson setup build --buildtype=release >/dev/null
fi
ninja -C build >/dev/null

data=${HDQT_DATA:-../shared/data/hapt}
[ -f "$data/labels.csv" ] || data=data/hapt-subset
state=state
sock=$state/hdqtd.sock
mkdir -p "$state"
rm -f "$state"/hdqtd.db "$state"/hdqtd.db-wal "$state"/hdqtd.db-shm "$state"/hdqtd.log
ctl() { build/clients/hdqtctl --socket "$sock" "$@"; }
sensor() { build/clients/hdqt-sensor --socket "$sock" --labels "$data/labels.csv" "$@"; }

# Recordings of the HAPT test users (UCI-HAR split) are held out.
train_files=() test_files=()
for f in "$data"/exp*_user*.csv.gz; do
	u=$(basename "$f" | sed -E 's/.*_user0*([0-9]+)\.csv\.gz/\1/')
	case " 2 4 9 10 12 13 18 20 24 " in
	*" $u "*) test_files+=("$f") ;;
	*) train_files+=("$f") ;;
	esac
done
echo "== hdqtd demo: ${#train_files[@]} training and ${#test_files[@]} held-out recordings from $data"

# auto training is off so that each task is exactly one round; the round
# still runs in the background while hdqtctl follows its progress.
build/daemon/hdqtd --config config/hdqtd.conf --socket "$sock" --db "$state/hdqtd.db" \
	--set training.auto=no 2>"$state/hdqtd.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
ctl status >/dev/null

tasks=("WALKING WALKING_UPSTAIRS" "WALKING_DOWNSTAIRS SITTING" "STANDING LAYING")
seen=""
for t in "${tasks[@]}"; do
	echo
	echo "== new classes: $t"
	# shellcheck disable=SC2086
	ctl add-class $t
	seen=${seen:+$seen,}${t// /,}
	sensor --send --classes "${t// /,}" "${train_files[@]}"
	ctl train --wait
	echo "held-out users, classes seen so far ($seen):"
	sensor --predict --json --classes "$seen" "${test_files[@]}" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("  accuracy %.2f%% on %d windows" % (r["accuracy"], r["labelled"]))
for k, v in r["per_class"].items():
    print("    %-20s %6.2f%%" % (k, v))'
done

echo
ctl status
echo
echo "== live predictions at 50 Hz (${HDQT_LIVE_SECONDS:-20} s of ${test_files[0]##*/})"
timeout "${HDQT_LIVE_SECONDS:-20}" build/clients/hdqt-sensor --socket "$sock" \
	--labels "$data/labels.csv" --predict --rate 50 "${test_files[0]}" || true

kill -TERM $pid
wait $pid || true
trap - EXIT
echo
echo "== done. The database is in $state/hdqtd.db; to inspect it:"
echo "   build/daemon/hdqtd --socket $sock --db $state/hdqtd.db &"
echo "   build/clients/hdqtctl --socket $sock status    # or: models, classes, watch"
