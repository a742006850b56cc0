#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Peak memory of the daemon during a training round (a benchmark, not a
test): start the real hdqtd on a temporary socket and database, announce
the six HAPT activities, send N samples (feature vectors of the real HAPT
recordings, cut with --hop so that there are enough), train one round and
print the daemon's peak RSS (VmHWM of /proc/PID/status) before and after
the round, and the round's duration.

  python3 bench/round_rss.py --hdqtd build-rel/daemon/hdqtd \\
      --eval build-rel/bench/hdqt-eval --data ../shared/data/hapt --samples 20000
"""
import argparse
import csv
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import hdqtd_harness  # noqa: E402
from hdqtd_harness import ACTIVITIES, Daemon  # noqa: E402


def vm(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hdqtd", required=True)
    ap.add_argument("--eval", required=True, help="hdqt-eval, to cut HAPT into feature vectors")
    ap.add_argument("--data", required=True, help="HAPT directory")
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--hop", type=int, default=24)
    ap.add_argument("--set", action="append", default=[], help="extra --set KEY=VALUE")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="hdqt-rss-")
    csvp = os.path.join(tmp, "features.csv")
    rc = os.system("%s --data %s --hop %d --dump-features %s > /dev/null" % (a.eval, a.data, a.hop, csvp))
    if rc != 0:
        sys.exit("hdqt-eval --dump-features failed")
    rows = []
    with open(csvp) as f:
        r = csv.reader(f)
        for row in r:
            if not row or not row[0].lstrip("-").isdigit():
                continue
            lab = int(row[0])
            if lab in ACTIVITIES:
                rows.append((ACTIVITIES[lab], [float(x) for x in row[2:]]))
    rows = rows[:a.samples]
    if len(rows) < a.samples:
        print("only %d samples at hop %d" % (len(rows), a.hop))
    hdqtd_harness.HDQTD = a.hdqtd
    d = Daemon("training.auto=no", *a.set)
    try:
        d.start()
        c = d.client()
        for name in sorted(set(n for n, _ in rows)):
            c.call("class.add", {"name": name})
        for i in range(0, len(rows), 500):
            c.call("sample.add", {"samples": [{"class": n, "features": x} for n, x in rows[i:i + 500]]})
        pid = d.proc.pid
        before = vm(pid, "VmHWM")
        rss0 = vm(pid, "VmRSS")
        t0 = time.time()
        ev = hdqtd_harness.train_and_wait(c, timeout=3600)
        dt = time.time() - t0
        after = vm(pid, "VmHWM")
        print("samples %d, round %s in %.1f s; daemon RSS when the round starts %.1f MB (peak so far "
              "%.1f MB), peak RSS after the round %.1f MB"
              % (len(rows), ev.get("outcome"), dt, rss0 / 1024, before / 1024, after / 1024))
        if os.environ.get("ROUND_RSS_SMAPS"):
            top = {}
            name = None
            with open("/proc/%d/smaps" % pid) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 5 and "-" in parts[0] and ":" not in parts[0]:
                        name = parts[5] if len(parts) > 5 else "[anon]"
                    elif parts and parts[0] == "Rss:":
                        top[name] = top.get(name, 0) + int(parts[1])
            for k, v in sorted(top.items(), key=lambda kv: -kv[1])[:8]:
                print("  %8.1f MB  %s" % (v / 1024, k))
        c.close()
        d.stop()
    finally:
        d.cleanup()


if __name__ == "__main__":
    main()
