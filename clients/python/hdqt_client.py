# SPDX-License-Identifier: MIT
"""A client for hdqtd using only the Python standard library.

    from hdqt_client import Client
    with Client() as c:                       # $HDQTD_SOCKET or /run/hdqtd/hdqtd.sock
        c.add_class("WALKING")
        c.add_samples([{"class": "WALKING", "window": rows}])   # rows: 128 x [ax..gz]
        c.train(wait=True)
        print(c.predict(window=rows)["class"])

Fleet operations (admin): bundle, info = c.export_model(); c.import_model(bundle,
remap=False); db, info = c.backup(); c.metrics() (docs/bundle.md).

Errors that hdqtd returns raise RpcError (with .code, see proto/PROTOCOL.md);
transport problems raise OSError; parameters that JSON cannot carry (NaN,
infinities) raise ValueError before anything is sent.  One Client is one
connection; use it from one thread at a time.
"""
import base64
import json
import math
import os
import socket
import struct
import time
import zlib

__all__ = ["Client", "RpcError", "default_socket", "valid_batch_id", "f32"]


def f32(values):
    """values (features, or a window's readings row after row) in the binary
    form hdqtd reads as "features_f32" / "window_f32": base64 of little-endian
    float32.  The exact floats hdqtd computes with, and no decimal parsing on
    its side (a third of a predict's cost).  ValueError for NaN or infinities."""
    out = []
    for i, v in enumerate(values):
        if isinstance(v, (bool, str, bytes)):   # float() would take them; hdqtd would not
            raise ValueError("value %d is %r: not a number; not sent" % (i, v))
        v = float(v)
        if not math.isfinite(v):
            raise ValueError("value %d is %r: not finite; not sent" % (i, v))
        out.append(v)
    try:
        return base64.b64encode(struct.pack("<%df" % len(out), *out)).decode()
    except OverflowError:
        raise ValueError("a value is beyond the float32 range; not sent") from None


def default_socket():
    return os.environ.get("HDQTD_SOCKET") or "/run/hdqtd/hdqtd.sock"


BATCH_ID_MAX = 64


def valid_batch_id(batch_id):
    """Whether batch_id is 1-64 characters from "!" to "~" (printable ASCII, no space)."""
    return (isinstance(batch_id, str) and 1 <= len(batch_id) <= BATCH_ID_MAX
            and all("!" <= ch <= "~" for ch in batch_id))


class RpcError(Exception):
    """An error response from hdqtd."""

    def __init__(self, code, message, data=None):
        super().__init__("%s (%d)" % (message, code))
        self.code = code
        self.message = message
        self.data = data


class Client:
    MAX_LINE = 256 << 20

    def __init__(self, path=None, timeout=60.0):
        self.path = path or default_socket()
        self.timeout = timeout
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(self.path)
        self._buf = b""
        self._id = 0
        self._outstanding = []   # ids sent and not answered yet, oldest first
        self._events = []

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- transport --
    def _read_msg(self, timeout):
        while b"\n" not in self._buf:
            self._sock.settimeout(timeout)
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("hdqtd closed the connection")
            self._buf += chunk
            if len(self._buf) > self.MAX_LINE:
                raise ConnectionError("reply too long")
        line, self._buf = self._buf.split(b"\n", 1)
        # hdqtd speaks UTF-8, but a reply may echo bytes that are not (a class
        # name stored by an older daemon): decode leniently (U+FFFD) so that one
        # bad name cannot make status, class.list, predict and events all fail.
        return json.loads(line.decode("utf-8", errors="replace"))

    @staticmethod
    def _error(m):
        e = m.get("error")
        if not isinstance(e, dict):
            e = {"message": str(e)}
        return RpcError(e.get("code", -32603), e.get("message", "error"), e.get("data"))

    def _answer(self, m):
        """The id of the request that message m answers (None: not a response).
        An error with a null id is one hdqtd could not tie to a request (a
        parse error, a line over daemon.max_message, a refused connection);
        replies come in request order, so it answers the oldest request still
        waiting for its reply."""
        rid = m.get("id")
        if rid is None and "error" in m:
            rid = self._outstanding[0] if self._outstanding else None
        if rid in self._outstanding:
            self._outstanding.remove(rid)
        return rid

    def call(self, method, params=None):
        """Call a method; returns its result or raises RpcError.  ValueError,
        and nothing sent, when params hold NaN or an infinity (not JSON)."""
        msg = {"jsonrpc": "2.0", "method": method, "id": self._id + 1}
        if params is not None:
            msg["params"] = params
        try:
            data = json.dumps(msg, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        except ValueError as e:
            raise ValueError("%s: a parameter is NaN or infinite, which JSON cannot carry (%s); "
                             "not sent" % (method, e)) from None
        self._id += 1
        rid = self._id
        self._outstanding.append(rid)
        try:
            self._sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            # hdqtd may have answered before it closed (-32009 for a line over
            # daemon.max_message): that answer says more than the broken pipe.
            try:
                m = self._read_msg(1.0)
            except (OSError, ValueError):
                m = None
            if isinstance(m, dict) and "error" in m and self._answer(m) == rid:
                raise self._error(m) from None
            raise
        while True:
            m = self._read_msg(self.timeout)
            if not isinstance(m, dict):
                continue
            if m.get("method") == "event":
                self._events.append(m.get("params", {}))
                del self._events[:-1024]   # bounded
                continue
            if self._answer(m) != rid:
                continue   # a late reply to an earlier, timed-out call
            if "error" in m:
                raise self._error(m)
            return m["result"]

    def next_event(self, timeout=None):
        """The next event notification's params (after subscribe()).  An error
        with a null id (e.g. -32006 when the connection was refused) raises."""
        if self._events:
            return self._events.pop(0)
        while True:
            m = self._read_msg(timeout)
            if not isinstance(m, dict):
                continue
            if m.get("method") == "event":
                return m.get("params", {})
            if m.get("id") is None and "error" in m:
                raise self._error(m)

    # -- convenience --
    def status(self):
        return self.call("status")

    def add_class(self, name):
        return self.call("class.add", {"name": name})

    def remove_class(self, name):
        return self.call("class.remove", {"name": name})

    def classes(self):
        return self.call("class.list")["classes"]

    def sample_add(self, samples, batch_id=None):
        """Store samples (dicts {"class": NAME, "features": [...]} or {"class", "window"})
        in one request, all or nothing; returns {"accepted", "samples_pending"}.

        batch_id (1-64 characters of printable ASCII without spaces, chosen by the
        caller, unique per logical batch) makes a resend safe: hdqtd stores a batch
        id once and answers a resend of a stored batch with "duplicate": True
        (and the original batch's "accepted"), storing nothing again."""
        params = {"samples": list(samples)}
        if batch_id is not None:
            if not valid_batch_id(batch_id):
                raise ValueError("batch_id must be 1-64 characters of printable ASCII without "
                                 "spaces, not %r" % (batch_id,))
            params["batch_id"] = batch_id
        return self.call("sample.add", params)

    def add_samples(self, samples, chunk=500):
        """samples: dicts {"class": NAME, "features": [...]} or {"class", "window"}.
        Sent in requests of chunk samples, without batch ids (see sample_add)."""
        samples = list(samples)
        total = 0
        for i in range(0, len(samples), chunk):
            total += self.call("sample.add", {"samples": samples[i:i + chunk]})["accepted"]
        return total

    def predict(self, features=None, window=None, top_k=3, binary=False):
        """Classify features or a window; binary=True sends them as float32
        (features_f32 / window_f32, see f32()), which hdqtd reads faster."""
        p = {"top_k": top_k}
        if features is not None:
            p["features_f32" if binary else "features"] = f32(features) if binary else list(features)
        if window is not None:
            rows = [list(r) for r in window]
            if binary:
                # Flat on the wire: a transposed window would pass as garbage.
                if any(len(r) != 6 for r in rows):
                    raise ValueError("window rows must hold 6 readings [ax, ay, az, gx, gy, gz]")
                p["window_f32"] = f32(v for r in rows for v in r)
            else:
                p["window"] = rows
        return self.call("predict", p)

    def predict_many(self, inputs, top_k=1):
        return self.call("predict", {"inputs": list(inputs), "top_k": top_k})["predictions"]

    def subscribe(self):
        return self.call("events.subscribe")

    def train(self, wait=False, timeout=None, progress=None):
        """Start a round; with wait, return its training.finished event."""
        if wait:
            self.subscribe()
        r = self.call("train")
        if not wait or not r.get("started"):
            return r
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            e = self.next_event(left)
            if e.get("type") == "training.progress" and progress:
                progress(e)
            if e.get("type") == "training.finished":
                return e

    def models(self):
        return self.call("model.list")["models"]

    def rollback(self, version):
        return self.call("model.rollback", {"version": int(version)})

    # ---- fleet: export, import, backup, metrics (docs/bundle.md) ----

    def _download(self, start, chunk_method, params=None):
        """Run start (model.export or backup), then read every chunk; the
        bytes, checked against the size and CRC-32 the daemon announced."""
        info = self.call(start, params)
        out = bytearray()
        try:
            while len(out) < info["size"]:
                r = self.call(chunk_method, {"id": info["id"], "offset": len(out),
                                             "length": info["chunk_max"]})
                piece = base64.b64decode(r["data"], validate=True)
                if r["offset"] != len(out) or len(piece) != r["length"] or not piece:
                    raise RpcError(-32603, "short or misplaced chunk at %d" % len(out))
                out += piece
        finally:
            try:
                self.call("transfer.close", {"id": info["id"]})
            except RpcError:
                pass
        if "%08x" % zlib.crc32(out) != info["crc32"]:
            raise RpcError(-32013, "the received bytes do not match the announced CRC-32")
        return bytes(out), info

    def export_model(self):
        """(bundle bytes, the model.export result with its manifest)."""
        return self._download("model.export", "model.export_chunk")

    def import_model(self, bundle, remap=False):
        """Upload a bundle (bytes) and apply it; the model.import_commit result."""
        info = self.call("model.import", {"size": len(bundle), "crc32": "%08x" % zlib.crc32(bundle)})
        step = info["chunk_max"]
        try:
            for off in range(0, len(bundle), step):
                self.call("model.import_chunk", {"id": info["id"], "offset": off,
                                                 "data": base64.b64encode(bundle[off:off + step]).decode()})
            return self.call("model.import_commit", {"id": info["id"], "remap": bool(remap)})
        except RpcError:
            try:
                self.call("transfer.close", {"id": info["id"]})
            except RpcError:
                pass
            raise

    def backup(self):
        """(database copy bytes, the backup result)."""
        return self._download("backup", "backup.chunk")

    def metrics(self):
        return self.call("metrics")
