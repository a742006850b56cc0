#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The main job: install missing packages, build, and run the class-incremental
# HAPT demo: 11 activity classes arrive two at a time and are learned with
# 4-bit inputs / 8-bit tile accumulators (hdqt) next to the fp32 reference.
# Uses ../shared/data/hapt when present, else the bundled data/hapt-subset.
# Extra arguments go to hdqt-eval (e.g. --epochs 100 --seeds 3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
if [ ! -f build/build.ninja ]; then
	meson setup build --buildtype=release >/dev/null
fi
ninja -C build >/dev/null
data=../shared/data/hapt
[ -f "$data/labels.csv" ] || data=data/hapt-subset
echo "hdqt: class-incremental learning on $data (kernel: $(HDQT_KERNEL= build/bench/hdqt-bench --kernel-name 2>/dev/null || echo auto))"
exec build/bench/hdqt-eval --data "$data" --quant fp32,hdqt --method icarl \
	--epochs 30 --seeds 1 --plot build/demo-accuracy.svg "$@"
