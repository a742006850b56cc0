#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes the seed corpus of the text targets into tests/fuzz/corpus/
(linebuf, rpc, dispatch, features, config); existing files are overwritten,
regress-* files are left alone.  The blob seeds come from
fuzz_mkseed (mkseed.c).  Requests follow proto/PROTOCOL.md; windows have 16
rows because the dispatch target runs with model.window=16."""
import json
import math
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def req(i, method, params=None):
    m = {"jsonrpc": "2.0", "id": i, "method": method}
    if params is not None:
        m["params"] = params
    return json.dumps(m, separators=(",", ":"))


def feats(k, n=166):
    return [round(math.sin(0.1 * k + 0.37 * j), 2) for j in range(n)]


def window(k, rows=16):
    return [[round(math.sin(0.2 * r + k) + 0.1 * c, 3) for c in range(6)] for r in range(rows)]


def f32(values):
    """The binary form of features_f32 / window_f32 (PROTOCOL.md, Inputs)."""
    import base64
    return base64.b64encode(struct.pack("<%df" % len(values), *values)).decode()


def lines(*ls):
    return "\n".join(ls) + "\n"


# ---- dispatch: sequences of requests against the in-process daemon ----
classes = lines(req(1, "class.add", {"name": "WALKING"}), req(2, "class.add", {"name": "SITTING"}))
put("dispatch", "class-add", classes + req(3, "class.add", {"name": "WALKING"}) + "\n")
put("dispatch", "sample-features", classes + lines(
    req(3, "sample.add", {"class": "WALKING", "features": feats(1)}),
    req(4, "sample.add", {"samples": [{"class": "SITTING", "features": feats(k)} for k in range(3)]})))
put("dispatch", "sample-window", classes + lines(
    req(3, "sample.add", {"class": "SITTING", "window": window(0)}),
    req(4, "sample.add", {"samples": [{"class": "WALKING", "window": window(1)},
                                      {"class": "SITTING", "window": window(2)}]})))
batch = [{"class": ("WALKING", "SITTING")[k % 2], "features": feats(k, 166)} for k in range(8)]
put("dispatch", "sample-f32", classes + lines(
    req(3, "sample.add", {"class": "WALKING", "features_f32": f32(feats(1))}),
    req(4, "sample.add", {"samples": [{"class": "SITTING", "window_f32": f32(sum(window(2), []))},
                                      {"class": "WALKING", "features_f32": f32(feats(2)[:165])}]}),
    req(5, "predict", {"inputs": [{"features_f32": f32(feats(3))},
                                  {"window_f32": f32(sum(window(4), []))}]})))
put("dispatch", "train", classes + lines(
    req(3, "sample.add", {"samples": batch}), req(4, "train"), req(5, "train.status"),
    req(6, "train.cancel")))
put("dispatch", "train-predict", classes + lines(
    req(3, "sample.add", {"samples": batch}), req(4, "train")))
put("dispatch", "predict", lines(
    req(1, "predict", {"features": feats(3)}),
    req(2, "predict", {"inputs": [{"window": window(4)}, {"features": feats(5)}], "top_k": 2}),
    req(3, "status"), req(4, "model.list"), req(5, "class.list")))
put("dispatch", "rollback", lines(req(1, "model.list"), req(2, "model.rollback", {"version": 1}),
                                  req(3, "model.rollback", {"version": 99})))
put("dispatch", "class-remove", classes + lines(
    req(3, "class.remove", {"name": "SITTING"}), req(4, "class.add", {"name": "SITTING"}),
    req(5, "class.remove", {"name": "NONE"})))
put("dispatch", "misc", lines(
    req(1, "config.get"), req(2, "events.subscribe"), req(3, "events.unsubscribe"),
    req(4, "rpc.discover"), req(5, "nope"), req(6, "status", []),
    '{"jsonrpc":"2.0","method":"status"}', '{"jsonrpc":"1.0","id":7,"method":"status"}',
    '{"jsonrpc":"2.0","id":[1],"method":"status"}', '{"jsonrpc":"2.0","id":8,"method":"status","params":[1]}',
    '{"jsonrpc":"2.0","id":9,"method":"status","params":5}', '[]', '[1,2]',
    '[' + req(10, "status") + ',{"jsonrpc":"2.0","method":"train"}]'))
put("dispatch", "bad-samples", classes + lines(
    req(3, "sample.add", {"class": "WALKING", "features": feats(1, 165)}),
    req(4, "sample.add", {"class": "WALKING", "features": feats(1, 167)}),
    req(5, "sample.add", {"class": "WALKING", "features": ["x"] + feats(1, 165)}),
    req(6, "sample.add", {"class": "WALKING", "features": feats(1), "window": window(1)}),
    req(7, "sample.add", {"class": "WALKING", "window": window(1, 15)}),
    req(8, "sample.add", {"class": "WALKING", "window": [[1e7] * 6] * 16}),
    req(9, "sample.add", {"class": "NOPE", "features": feats(1)}),
    req(10, "sample.add", {"samples": []}),
    req(11, "sample.add", {"samples": [{"class": "WALKING", "features": feats(1)}], "class": "X"}),
    req(12, "predict", {"features": feats(1), "top_k": 0}),
    req(13, "class.add", {"name": ""}), req(14, "class.add", {"name": "a\u0001b"})))

# ---- rpc: requests and responses ----
put("rpc", "request", req(1, "sample.add", {"class": "WALKING", "features": feats(1, 8)}))
put("rpc", "window", req(2, "predict", {"window": window(1, 4)}))
put("rpc", "f32", req(3, "predict", {"features_f32": f32([1.0, -2.5, 3e38, 1e-45, 0.0])}))
put("rpc", "result", '{"jsonrpc":"2.0","result":{"accepted":1,"samples_pending":3},"id":1}')
put("rpc", "error", '{"jsonrpc":"2.0","error":{"code":-32002,"message":"class \\"WALKING\\" exists (label 0)"},"id":2}')
put("rpc", "floats", "[1, -2.5, 3e38, 1e-45, 0, -0]")
put("rpc", "rows", "[[1,2,3],[4,5,6],[7,8,1e39]]")
put("rpc", "batch", "[" + req(1, "status") + "," + req(2, "train") + "]")
put("rpc", "unicode", '{"jsonrpc":"2.0","result":"\\u00e9\\ud83d\\ude00","id":"x"}')

# ---- linebuf: limit (2 bytes) then length-prefixed chunks ----
def chunks(limit, *parts):
    out = bytes([limit & 0xff, (limit >> 8) & 3])
    for p in parts:
        p = p.encode() if isinstance(p, str) else p
        out += bytes([len(p)]) + p
    return out

put("linebuf", "lines", chunks(100, req(1, "status")[:40], req(1, "status")[40:] + "\n", "\n\r\n", "abc\r\ndef"))
put("linebuf", "full", chunks(8, "1234567\n", "12345678", "9\n"))
put("linebuf", "split", chunks(600, *[("x" * 30 + "\n")[i:i + 7] for i in range(0, 31, 7)] * 3))

# ---- features: byte 0 the window (0: 128), then float32 readings ----
def fwin(wbyte, rows, fn):
    return bytes([wbyte]) + b"".join(struct.pack("<6f", *[fn(r, c) for c in range(6)]) for r in range(rows))

put("features", "sine-128", fwin(0, 128, lambda r, c: math.sin(0.1 * r * (c + 1))))
put("features", "const-16", fwin(1, 16, lambda r, c: 1.0))
put("features", "steps-18", fwin(2, 18, lambda r, c: float((r // 3) % 2) * 1e5))
put("features", "big-32", fwin(9, 32, lambda r, c: (1e6 if (r + c) % 2 else -1e6)))

# ---- config: INI files (config/hdqtd.conf lists every key) ----
conf = os.path.join(HERE, "..", "..", "config", "hdqtd.conf")
if os.path.exists(conf):
    put("config", "hdqtd.conf", open(conf, "rb").read())
put("config", "all-keys", """[daemon]
socket = /tmp/x.sock
socket_mode = 0600
database = /tmp/x.db
log_level = debug
max_connections = 10
max_message = 1M
max_write_queue = 2M
max_batch = 100
[model]
hidden = 32, 16
quant = hdqt-paper
bits = 6
acc_bits = 16
window = 64
norm_clip = 3.5
seed = 7
[training]
strategy = er
memory = 50
epochs = 3
batch = 16
lr = 0.05
auto = no
auto_min_samples = 10
auto_interval = 2.5
max_round_samples = 1000
holdout_every = 0
validation_per_class = 0
regression_margin = 100
[store]
sync = normal
max_bytes = 10M
max_pending_per_class = 0
keep_models = 2
[access]
admin_group =
""")
put("config", "sets", "training.epochs=3\nmodel.hidden=32,32\ntraining.auto=no\nstore.max_bytes=1G\n")
put("config", "bad", "[model]\nwindow = 17\n[nope]\nx = 1\n")

# ---- dispatch: methods added with the writer (quarantine, batch ids) ----
put("dispatch", "quarantine", classes + lines(
    req(3, "sample.add", {"samples": [{"class": "WALKING", "features": feats(k)} for k in range(3)],
                          "batch_id": "host-1-2-3"}),
    req(4, "sample.add", {"samples": [{"class": "WALKING", "features": feats(k)} for k in range(3)],
                          "batch_id": "host-1-2-3"}),
    req(5, "quarantine.list"), req(6, "quarantine.release", {"ids": [1, 2]}),
    req(7, "quarantine.drop", {"all": True}), req(8, "quarantine.release", {"ids": []})))

# ---- dispatch: open-set prediction (issue 17) ----
put("dispatch", "unknowns", classes + lines(
    req(3, "sample.add", {"samples": [{"class": c, "features": feats(k + 7 * i)}
                                      for i, c in enumerate(["WALKING", "SITTING"]) for k in range(40)]}),
    req(4, "train"), req(5, "predict", {"inputs": [{"features": feats(100 + k)} for k in range(8)]}),
    req(6, "unknowns.list", {"max_groups": 3}), req(7, "unknowns.promote", {"group": 1, "class": "NEW"}),
    req(8, "unknowns.promote", {"ids": [1, 2], "class": "SITTING"}), req(9, "unknowns.drop", {"group": 2}),
    req(10, "unknowns.drop", {"all": True}), req(11, "unknowns.drop", {"ids": [1.5]}),
    req(12, "unknowns.promote", {"class": "X"}), req(13, "unknowns.list", {"max_groups": 0})))
