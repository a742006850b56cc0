# SPDX-License-Identifier: MIT
"""Test harness: runs the real hdqtd on a temporary socket and database and
talks to it over the socket.  Standard library only (plus jsonschema for the
description tests)."""
import csv
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SRC = os.environ.get("HDQT_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
HDQTD = os.environ.get("HDQTD", os.path.join(SRC, "build", "daemon", "hdqtd"))
HAPT = os.path.join(SRC, "data", "hapt-subset")
ACTIVITIES = {1: "WALKING", 2: "WALKING_UPSTAIRS", 3: "WALKING_DOWNSTAIRS", 4: "SITTING",
              5: "STANDING", 6: "LAYING"}
TEST_USERS = {2, 4}   # the HAPT/UCI-HAR test users present in the subset


def hapt_windows(window=128, hop=64, activities=None):
    """[(activity, user, rows)] for the bundled HAPT subset, cut exactly as
    lib/dataset.c cuts them (windows inside each labelled segment)."""
    labels = list(csv.DictReader(open(os.path.join(HAPT, "labels.csv"))))
    out = []
    cache = {}
    for seg in labels:
        exp, user, act = int(seg["exp"]), int(seg["user"]), int(seg["activity"])
        if activities is not None and act not in activities:
            continue
        path = os.path.join(HAPT, "exp%02d_user%02d.csv.gz" % (exp, user))
        if not os.path.exists(path):
            continue
        if path not in cache:
            with gzip.open(path, "rt") as f:
                r = csv.reader(f)
                next(r)
                cache[path] = [[float(x) for x in row] for row in r]
        rows = cache[path]
        a, b = int(seg["start"]) - 1, int(seg["end"]) - 1
        s = a
        while s + window - 1 <= b:
            out.append((act, user, rows[s:s + window]))
            s += hop
    return out


class RpcError(Exception):
    def __init__(self, error):
        super().__init__("%s: %s" % (error.get("code"), error.get("message")))
        self.code = error.get("code")
        self.message = error.get("message")


class Client:
    def __init__(self, path, timeout=60):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 1
        self.events = []

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def read_line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("connection closed by hdqtd")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def read_msg(self):
        return json.loads(self.read_line())

    def reply(self, want_id):
        """The response with id want_id; events that arrive first are kept."""
        while True:
            m = self.read_msg()
            if isinstance(m, dict) and m.get("method") == "event":
                self.events.append(m["params"])
                continue
            return m

    def call_raw(self, method, params=None):
        i = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "method": method, "id": i}
        if params is not None:
            msg["params"] = params
        self.send_raw((json.dumps(msg) + "\n").encode())
        m = self.reply(i)
        assert m.get("id") == i, m
        return m

    def call(self, method, params=None):
        m = self.call_raw(method, params)
        if "error" in m:
            raise RpcError(m["error"])
        return m["result"]

    def wait_event(self, etype, timeout=300, pred=None):
        deadline = time.time() + timeout
        while True:
            for k, e in enumerate(self.events):
                if e.get("type") == etype and (pred is None or pred(e)):
                    del self.events[:k + 1]
                    return e
            self.events.clear()
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no %s event" % etype)
            self.sock.settimeout(left)
            m = self.read_msg()
            if isinstance(m, dict) and m.get("method") == "event":
                self.events.append(m["params"])


class Daemon:
    """One hdqtd process with its own folder, socket and database."""

    def __init__(self, *sets, folder=None, keep=False):
        self.dir = folder or tempfile.mkdtemp(prefix="hdqtd-test-")
        self.sock = os.path.join(self.dir, "hdqtd.sock")
        self.db = os.path.join(self.dir, "hdqtd.db")
        self.log = os.path.join(self.dir, "hdqtd.log")
        self.sets = list(sets)
        self.proc = None
        self.keep = keep

    def start(self, *extra_sets, wait=True):
        args = [HDQTD, "--socket", self.sock, "--db", self.db]
        for s in self.sets + list(extra_sets):
            args += ["--set", s]
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=self.logf)
        if wait:
            deadline = time.time() + 30
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError("hdqtd exited with %s:\n%s" % (self.proc.returncode,
                                                                       self.read_log()))
                try:
                    c = Client(self.sock, timeout=5)
                    c.call("status")
                    c.close()
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.time() > deadline:
                        raise
                    time.sleep(0.05)
        return self

    def client(self, timeout=120):
        return Client(self.sock, timeout)

    def read_log(self):
        try:
            return open(self.log, errors="replace").read()
        except OSError:
            return ""

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.logf.close()

    def stop(self, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        if self.proc:
            self.logf.close()
        return self.proc.returncode if self.proc else None

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc and not self.logf.closed:
            self.logf.close()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def train_and_wait(client, timeout=600):
    """Start a round and wait for its training.finished event."""
    client.call("events.subscribe")
    r = client.call("train")
    assert r["started"], r
    return client.wait_event("training.finished", timeout)
