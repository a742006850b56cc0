#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The daemon's open-set flags per activity, on the bundled HAPT subset:
start hdqtd, teach it KNOWN (activity ids) from the training users, then
predict every window of the test users and print, per activity, how many
were called unknown and their mean novelty.  The daemon calibrates on its
own validation samples (the training users' windows), so this shows what a
new wearer gets, for the known activities as for the never-announced ones.

  python3 bench/openset_daemon.py --hdqtd build-rel/daemon/hdqtd --known 1,4,6 [--score nme]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
import hdqtd_harness as H  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hdqtd", required=True)
    ap.add_argument("--known", default="1,4,6", help="activity ids taught (default 1,4,6)")
    ap.add_argument("--score", default="nme", choices=["nme", "knn", "energy", "msp"])
    ap.add_argument("--epochs", type=int, default=30)
    a = ap.parse_args()
    H.HDQTD = a.hdqtd
    known = {int(x) for x in a.known.split(",")}
    wins = H.hapt_windows(activities=set(H.ACTIVITIES))
    train = [w for w in wins if w[1] not in H.TEST_USERS and w[0] in known]
    test = [w for w in wins if w[1] in H.TEST_USERS]
    d = H.Daemon("training.auto=no", "training.epochs=%d" % a.epochs, "model.hidden=128,128",
                 "open_set.score=" + a.score)
    try:
        d.start()
        c = d.client()
        for k in sorted(known):
            c.call("class.add", {"name": H.ACTIVITIES[k]})
        for i in range(0, len(train), 150):
            c.call("sample.add", {"samples": [{"class": H.ACTIVITIES[k], "window": r}
                                              for k, _, r in train[i:i + 150]]})
        ev = H.train_and_wait(c)
        print("round %s; open set %s" % (ev["outcome"], c.call("status")["open_set"]))
        print("%-20s %-7s %7s %9s %13s" % ("activity", "", "windows", "unknown", "mean novelty"))
        for k in sorted(H.ACTIVITIES):
            part = [w for w in test if w[0] == k]
            r = c.call("predict", {"inputs": [{"window": rows} for _, _, rows in part]})["predictions"]
            print("%-20s %-7s %7d %8.1f%% %13.4f" % (H.ACTIVITIES[k], "known" if k in known else "unseen",
                  len(part), 100.0 * sum(p["unknown"] for p in r) / len(part),
                  sum(p["novelty"] for p in r) / len(part)))
    finally:
        d.cleanup()


if __name__ == "__main__":
    main()
