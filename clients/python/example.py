#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Example: teach hdqtd two activities from a raw HAPT recording, train,
and classify windows of another recording.

    HDQTD_SOCKET=state/hdqtd.sock python3 clients/python/example.py data/hapt-subset
"""
import csv
import gzip
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hdqt_client import Client, RpcError  # noqa: E402

NAMES = {1: "WALKING", 6: "LAYING"}


def windows(folder, exp, user, window=128, hop=64):
    rows = []
    with gzip.open(os.path.join(folder, "exp%02d_user%02d.csv.gz" % (exp, user)), "rt") as f:
        r = csv.reader(f)
        next(r)
        rows = [[float(x) for x in row] for row in r]
    for seg in csv.DictReader(open(os.path.join(folder, "labels.csv"))):
        if int(seg["exp"]) != exp or int(seg["activity"]) not in NAMES:
            continue
        a, b = int(seg["start"]) - 1, int(seg["end"]) - 1
        for s in range(a, b - window + 2, hop):
            yield NAMES[int(seg["activity"])], rows[s:s + window]


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else "data/hapt-subset"
    with Client() as c:
        for name in NAMES.values():
            try:
                c.add_class(name)
            except RpcError as e:
                if e.code != -32002:   # already there is fine
                    raise
        n = c.add_samples({"class": k, "window": w} for k, w in windows(folder, 1, 1))
        print("sent %d samples" % n)
        done = c.train(wait=True, progress=lambda e: print("\repoch %d/%d" % (e["epoch"], e["epochs"]),
                                                           end="", flush=True))
        print("\nround %s: %s, model %s" % (done["round"], done["outcome"], done["model_version"]))
        test = list(windows(folder, 3, 2))
        preds = c.predict_many({"window": w} for _, w in test)
        hit = sum(p["class"] == k for p, (k, _) in zip(preds, test))
        print("user 2: %d/%d windows right (%.1f%%)" % (hit, len(test), 100.0 * hit / len(test)))


if __name__ == "__main__":
    main()
