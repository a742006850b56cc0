#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""hdqt-bench --gemm-only --json: one JSON object whose "gemm" list has the
model's six products, each with its kernel, tile, figures and the packed
layout it ran in; HDQT_GEMM_TL8 moves the forward's tiles of 8 between the
tiles-in-lanes and the column layout under avx512vnni (and nothing else),
and the backward's tiles of 32 keep theirs.  Figures are not judged: this
machine is shared.  Usage: test_bench_json.py HDQT_BENCH"""
import json
import os
import subprocess
import sys

bench = sys.argv[1]


def run(tl8):
    env = dict(os.environ, HDQT_GEMM_TL8=tl8)
    env.pop("HDQT_KERNEL", None)
    out = subprocess.run([bench, "--gemm-only", "--json", "--seconds", "0.05"], env=env,
                         check=True, capture_output=True, text=True, timeout=120).stdout
    return json.loads(out)


on, off = run("1"), run("0")
for d in (on, off):
    shapes = [g["shape"] for g in d["gemm"]]
    assert len(shapes) == 6 and len(set(shapes)) == 6, shapes
    for g in d["gemm"]:
        assert g["layout"] in ("tiles-in-lanes", "column", "reference"), g
        assert g["tile"] == (8 if g["shape"].startswith("forward") else 32), g
        assert g["packed_gmacs"] > 0 and g["gmacs"] > 0, g
if on["kernel"] != "avx512vnni":
    print("kernel %s: no tiles-in-lanes layout here, HDQT_GEMM_TL8 not checked" % on["kernel"])
    sys.exit(77)
for a, b in zip(on["gemm"], off["gemm"]):
    if a["tile"] == 8:
        assert a["layout"] == "tiles-in-lanes" and b["layout"] == "column", (a, b)
    else:
        assert a["layout"] == b["layout"], (a, b)
print("ok: forward %s / %s, backward %s" % (on["gemm"][0]["layout"], off["gemm"][0]["layout"],
                                            on["gemm"][2]["layout"]))
