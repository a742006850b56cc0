#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""hdqt-bench --gemm-only --json: one JSON object whose "gemm" list has the
model's six products, each with its kernel, tile, figures and the packed
layout it ran in; HDQT_GEMM_TL8 moves the forward's tiles of 8 between the
tiles-in-lanes and the column layout under avx512vnni (and nothing else:
elsewhere, on a box without AVX-512 VNNI, no layout moves), and the
backward's tiles of 32 keep theirs.  And one whole run (--json): the
keys issue 13 names (modes.<mode>.train_samples_per_s, int8_peak_gmacs,
gemm, phases).  Under the sanitizer build this runs the peak loops under
UBSan: their wrapped int32 sums were once added as int (an overflow that
stopped the ASan suite).  Figures are not judged: this machine is shared.
Usage: test_bench_json.py HDQT_BENCH"""
import json
import os
import subprocess
import sys

bench = sys.argv[1]


def run(tl8, *args):
    env = dict(os.environ, HDQT_GEMM_TL8=tl8)
    env.pop("HDQT_KERNEL", None)
    p = subprocess.run([bench, "--json", "--seconds", "0.05"] + list(args), env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])
    return json.loads(p.stdout)


full = run("", "--seconds", "0.02")
for mode in ("fp32", "int", "hdqt-paper", "hdqt", "hadanet"):
    assert full["modes"][mode]["train_samples_per_s"] > 0, full["modes"]
for mode in ("fp32", "hdqt", "hadanet"):  # the phases of one mode per family
    assert abs(sum(full["phases"][mode].values()) - 1) < 0.02, full["phases"][mode]
assert "int8_peak_gmacs" in full and len(full["gemm"]) == 6, sorted(full)
on, off = run("1", "--gemm-only"), run("0", "--gemm-only")
for d in (on, off):
    shapes = [g["shape"] for g in d["gemm"]]
    assert len(shapes) == 6 and len(set(shapes)) == 6, shapes
    for g in d["gemm"]:
        assert g["layout"] in ("tiles-in-lanes", "column", "reference"), g
        assert g["tile"] == (8 if g["shape"].startswith("forward") else 32), g
        assert g["packed_gmacs"] > 0 and g["gmacs"] > 0, g
if on["kernel"] != "avx512vnni":
    # No tiles-in-lanes layout for this kernel: the switch must change nothing.
    for a, b in zip(on["gemm"], off["gemm"]):
        assert a["layout"] == b["layout"] != "tiles-in-lanes", (on["kernel"], a, b)
    print("ok: kernel %s, forward %s whatever HDQT_GEMM_TL8 says" % (on["kernel"], on["gemm"][0]["layout"]))
    sys.exit(0)
for a, b in zip(on["gemm"], off["gemm"]):
    if a["tile"] == 8:
        assert a["layout"] == "tiles-in-lanes" and b["layout"] == "column", (a, b)
    else:
        assert a["layout"] == b["layout"], (a, b)
print("ok: forward %s / %s, backward %s" % (on["gemm"][0]["layout"], off["gemm"][0]["layout"],
                                            on["gemm"][2]["layout"]))
