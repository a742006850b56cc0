#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Regression tests of the reliability review (issue 12): each test runs the
real hdqtd on a real socket and database and reproduces one finding; the
finding's number is in the test's docstring.

Run one class with `test_reliability.py TestLimits` (meson runs each class
as its own test)."""
import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from hdqtd_harness import (ACTIVITIES, HDQTD, TEST_USERS, Client, Daemon, RpcError,
                           hapt_windows, train_and_wait)

FAST = ["training.auto=no", "training.epochs=10", "model.hidden=32,32"]
DIM = 166
NOBODY_PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def feats(v=0.5, k=0):
    f = [v] * DIM
    f[k % DIM] += 0.01 * k
    return f


def rss_kb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def raw_call(sock_path, line, timeout=10):
    """Send one raw line on a fresh connection and return the first reply line."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock_path)
    s.sendall(line)
    buf = b""
    while b"\n" not in buf:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    s.close()
    return buf.split(b"\n", 1)[0]


def fill_until_refused(client, k, per):
    """sample.add batches of per samples of classes a and b (their features
    numbered from batch k on) until one is refused, at most up to batch
    2000: (batches taken, the refusal or None, the next k)."""
    got = 0
    while k < 2000:
        m = client.call_raw("sample.add", {"samples": [
            {"class": "ab"[i % 2], "features": feats(0.1 * (i % 2), k * per + i)}
            for i in range(per)]})
        k += 1
        if "error" in m:
            return got, m["error"], k
        got += 1
    return got, None, k


class Case(unittest.TestCase):
    sets = FAST

    def setUp(self):
        self.d = Daemon(*self.sets).start()
        self.c = self.d.client()

    def tearDown(self):
        self.c.close()
        self.d.cleanup()

    def code(self, method, params=None, c=None):
        m = (c or self.c).call_raw(method, params)
        return m["error"]["code"] if "error" in m else 0


class TestLimits(Case):
    """Findings 1, 15, 16, 17, 18: work and reply limits, exact ids."""
    sets = FAST + ["daemon.max_write_queue=4M"]

    def test_batch_work_is_bounded(self):
        """1: one line of 4096 status calls with many classes stalled the loop
        28 s and took 4 GB; as notifications it ran in full without reply."""
        for i in range(200):
            self.c.call("class.add", {"name": "c%03d" % i})
        other = self.d.client()
        stalls = []
        stop = threading.Event()

        def probe():
            while not stop.is_set():
                t0 = time.time()
                other.call("train.status")
                stalls.append(time.time() - t0)
                time.sleep(0.01)

        th = threading.Thread(target=probe)
        th.start()
        try:
            for notify in (False, True):
                batch = [{"jsonrpc": "2.0", "method": "status"} if notify else
                         {"jsonrpc": "2.0", "method": "status", "id": i} for i in range(4096)]
                self.c.send_raw((json.dumps(batch) + "\n").encode())
                m = self.c.read_msg()   # also for notifications: the line is refused
                self.assertEqual(m["error"]["code"], -32600, m)
                self.assertIn("max_rpc_batch", m["error"]["message"])
                # within the batch length, but over the work budget
                batch = batch[:60]
                self.c.send_raw((json.dumps(batch) + "\n").encode())
                m = self.c.read_msg()
                self.assertEqual(m["error"]["code"], -32600, m)
                self.assertIn("units of work", m["error"]["message"])
            for _ in range(20):   # the description is printed once, not per call
                self.c.send_raw((json.dumps([{"jsonrpc": "2.0", "method": "rpc.describe", "id": i}
                                             for i in range(64)]) + "\n").encode())
                m = self.c.read_msg()
                self.assertEqual(len(m), 64)
                self.assertIn("methods", m[0]["result"])
        finally:
            stop.set()
            th.join()
            other.close()
        self.assertLess(max(stalls), 1.0, "another client waited %.2f s" % max(stalls))
        self.assertLess(rss_kb(self.d.proc.pid), 300 * 1024)
        self.assertIn("version", self.c.call("status"))

    def test_clients_gone_before_their_replies(self):
        """A reply written at once to a client that has gone fails inside
        conn_send (EPIPE, not later in a write callback) and closes the
        connection there, with lines of it still unanswered: the daemon
        answers the others and goes on."""
        line = b'{"jsonrpc":"2.0","id":1,"method":"status"}\n'
        for i in range(40):
            s = socket.socket(socket.AF_UNIX)
            s.connect(self.d.sock)
            s.sendall(line * (1 + i % 20))
            s.close()   # before any reply is read
            if i % 10 == 9:
                self.assertIn("version", self.c.call("status"))
        self.assertIsNone(self.d.proc.poll())
        self.assertIn("version", self.c.call("status"))

    def train_sixty_classes(self, c):
        """60 classes of two samples each, one round: replies with top_k 60
        are long."""
        names = ["class-%02d" % i for i in range(60)]
        for n in names:
            c.call("class.add", {"name": n})
        for k in range(0, 120, 30):
            c.call("sample.add", {"samples": [{"class": names[i % 60], "features": feats(0.01 * (i % 60), i)}
                                              for i in range(k, k + 30)]})
        self.assertEqual(train_and_wait(c)["outcome"], "accepted")

    def test_reply_over_write_queue_is_an_error(self):
        """17: a legal predict whose reply exceeds max_write_queue dropped the
        connection without a word."""
        d = Daemon("training.auto=no", "training.epochs=2", "model.hidden=16,16",
                   "daemon.max_write_queue=64K", "daemon.max_message=64K").start()
        try:
            c = d.client()
            self.train_sixty_classes(c)
            inputs = [{"features": feats(0.3)} for _ in range(30)]
            m = c.call_raw("predict", {"inputs": inputs[:2], "top_k": 60})
            self.assertIn("result", m)
            m = c.call_raw("predict", {"inputs": inputs, "top_k": 60})   # ~85 KB of reply
            self.assertEqual(m["error"]["code"], -32005, m)
            self.assertIn("max_write_queue", m["error"]["message"])
            # a batch: its replies together exceed the limit; every request
            # is answered, the ones past the limit with an error
            batch = [{"jsonrpc": "2.0", "id": i, "method": "status"} for i in range(40)]
            c.send_raw((json.dumps(batch) + "\n").encode())
            r = c.read_msg()
            self.assertIsInstance(r, list)
            self.assertEqual([x["id"] for x in r], list(range(40)))
            errs = [x for x in r if "error" in x]
            self.assertTrue(errs and "result" in r[0], r[:2])
            self.assertIn("max_write_queue", errs[0]["error"]["message"])
            self.assertIn("version", c.call("status"))   # the connection lives on
            c.close()
        finally:
            d.cleanup()

    def test_replies_larger_than_the_socket_buffer_arrive_whole(self):
        """A reply is written at once when nothing waits (uv_try_write); what
        the socket does not take goes through a queued write from where the
        direct write stopped.  Replies several times the socket's buffer,
        and small ones queued behind them, must arrive byte for byte and in
        order while the client reads late."""
        d = Daemon("training.auto=no", "training.epochs=2", "model.hidden=16,16",
                   "daemon.max_write_queue=16M").start()
        try:
            c = d.client()
            self.train_sixty_classes(c)
            inputs = [{"features": feats(0.005 * i, i)} for i in range(400)]
            big = {"jsonrpc": "2.0", "method": "predict", "params": {"inputs": inputs, "top_k": 60}}
            lines = b""
            for i, m in enumerate([big, {"jsonrpc": "2.0", "method": "status"}, big,
                                   {"jsonrpc": "2.0", "method": "class.list"}]):
                lines += (json.dumps(dict(m, id=i + 1)) + "\n").encode()
            c.send_raw(lines)
            time.sleep(0.5)   # the replies pile up unread
            c.sock.settimeout(15)   # a lost newline shows as a timeout, not a hang
            raw = []
            while len(raw) < 4:
                line = c.read_line()
                if not line.startswith(b'{"jsonrpc":"2.0","method":"event"'):
                    raw.append(line)
            # several socket buffers (the daemon's sends are bounded by wmem_default)
            try:
                wmem = int(open("/proc/sys/net/core/wmem_default").read())
            except (OSError, ValueError):
                wmem = 212992
            if len(raw[0]) <= 2 * wmem:
                self.skipTest("wmem_default %d: a %d-byte reply fits the socket" % (wmem, len(raw[0])))
            msgs = [json.loads(x) for x in raw]
            self.assertEqual([m["id"] for m in msgs], [1, 2, 3, 4])
            self.assertTrue(all("result" in m for m in msgs), [str(m)[:200] for m in msgs])
            self.assertEqual(len(msgs[0]["result"]["predictions"]), 400)
            self.assertEqual(raw[0][:-len(b',"id":1}')], raw[2][:-len(b',"id":3}')])
            self.assertIn("version", msgs[1]["result"])
            self.assertEqual(len(msgs[3]["result"]["classes"]), 60)
            c.close()
        finally:
            d.cleanup()

    def test_ids_come_back_exactly(self):
        """15: ids of 1e15 and more came back changed, 1e400 came back null,
        a notification with a key "ID" got a reply."""
        for raw in (b"1000000000000001", b"12345678901234567890", b"1e400", b"-0.5", b"7"):
            r = raw_call(self.d.sock, b'{"jsonrpc":"2.0","method":"train.status","id":' + raw + b'}\n')
            self.assertTrue(r.endswith(b',"id":' + raw + b'}'), r)
        self.c.send_raw(b'{"jsonrpc":"2.0","method":"status","ID":4}\n'
                        b'{"jsonrpc":"2.0","method":"train.status","id":5}\n')
        self.assertEqual(self.c.read_msg()["id"], 5)   # nothing for the notification
        self.c.send_raw(b'[{"jsonrpc":"2.0","method":"status","id":90071992547409931},'
                        b'{"jsonrpc":"2.0","method":"status","id":"s"}]\n')
        line = self.c.read_line()
        self.assertIn(b'"id":90071992547409931}', line)

    def test_lines_before_an_oversized_one_are_answered(self):
        """16: complete lines in the same read as an oversized line got no reply."""
        d = Daemon(*FAST, "daemon.max_message=4K", "daemon.max_write_queue=64K").start()
        try:
            c = d.client()
            small = b''.join(b'{"jsonrpc":"2.0","method":"train.status","id":%d}\n' % i for i in range(5))
            c.send_raw(small + b'{"x":"' + b"y" * 8000 + b'"}\n')
            ids = [c.read_msg().get("id") for _ in range(5)]
            self.assertEqual(ids, [0, 1, 2, 3, 4])
            self.assertEqual(c.read_msg()["error"]["code"], -32009)
            with self.assertRaises((EOFError, ConnectionError)):
                c.read_msg()
        finally:
            d.cleanup()

    def test_top_k_range_before_conversion(self):
        """18: top_k was converted to int before its range was checked (UB)."""
        for tk in (1e300, -1e300, 100.5, 0, 101):
            self.assertEqual(self.code("predict", {"features": feats(), "top_k": tk}), -32602, tk)


class TestShutdownAndHalfClose(unittest.TestCase):
    """Findings 4 and 6."""

    def test_sigterm_with_unread_requests(self):
        """4: reading restarted on a connection being finished; a status then
        used the freed trainer: segfault on SIGTERM."""
        for attempt in range(3):
            d = Daemon(*FAST).start()
            try:
                c = d.client()
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                # 200 requests whose 1.7 MB of replies stay unread at SIGTERM
                c.send_raw(b'{"jsonrpc":"2.0","method":"rpc.describe","id":1}\n' * 200)
                time.sleep(0.3)
                d.proc.send_signal(signal.SIGTERM)
                time.sleep(0.2)
                try:
                    for _ in range(50):
                        c.send_raw(b'{"jsonrpc":"2.0","method":"status","id":2}\n')
                except (BrokenPipeError, ConnectionError):
                    pass
                got = []
                try:
                    while True:
                        got.append(c.read_msg())
                except (EOFError, ConnectionError, socket.timeout):
                    pass
                self.assertEqual(d.proc.wait(30), 0, d.read_log())
                self.assertGreaterEqual(len(got), 200)
                self.assertEqual([m["id"] for m in got[:200]], [1] * 200)
                # what was read after stop began is answered "shutting down"
                late = [m for m in got if "error" in m]
                self.assertTrue(all(m["error"]["code"] == -32011 for m in late), late[:3])
            finally:
                d.cleanup()

    def test_half_close_gets_every_reply(self):
        """6: a client that sends 200 requests and shuts down its writing side
        (socat, nc -N) received 79 replies."""
        d = Daemon(*FAST).start()
        try:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(30)
            s.connect(d.sock)
            s.sendall(b"".join(b'{"jsonrpc":"2.0","method":"rpc.describe","id":%d}\n' % i
                               for i in range(200)))
            s.shutdown(socket.SHUT_WR)
            buf = b""
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
            ids = [json.loads(x)["id"] for x in buf.split(b"\n") if x]
            self.assertEqual(ids, list(range(200)))
            self.assertIn("version", d.client().call("status"))
        finally:
            d.cleanup()


class TestRounds(unittest.TestCase):
    """Findings 2, 3, 11: rounds, quarantine, rollback."""

    def test_rejected_rounds_quarantine_and_keep_rollback_targets(self):
        """Review of 2026-12-08 (second), 3: a round rejected by the regression
        guard left its samples pending, so every later round learned them
        again and was rejected again (nothing after them was ever learned),
        and each rejected version pushed a version that had served out of
        store.keep_models."""
        import random

        def pattern(k, n, seed):   # class k's pattern, noisy
            rnd = random.Random(seed * 1000 + k)
            base = [((i * (k + 3)) % 11) / 11.0 - 0.5 for i in range(DIM)]
            return [[b + rnd.gauss(0, 0.05) for b in base] for _ in range(n)]
        d = Daemon("training.auto=no", "training.epochs=10", "model.hidden=32,32",
                   "training.memory=40", "store.keep_models=3",
                   "training.regression_margin=0").start()
        try:
            c = d.client()
            for n in ("a", "b", "c"):
                c.call("class.add", {"name": n})

            def add(cls, k, seed, n):
                c.call("sample.add", {"samples": [{"class": cls, "features": f}
                                                  for f in pattern(k, n, seed)]})
            for r in range(2):
                add("a", 0, r, 100)
                add("b", 1, r, 100)
                self.assertEqual(train_and_wait(c)["outcome"], "accepted")
            served = [m["version"] for m in c.call("model.list")["models"]]
            # class c with class a's very pattern: learning it costs a's
            # validation samples, so each round is rejected (margin 0)
            add("c", 0, 10, 150)
            got = []
            for r in range(3):
                ev = train_and_wait(c)
                st = c.call("status")
                got.append((ev["outcome"], st["samples_pending"], st["samples_quarantined"]))
            self.assertEqual(got, [("rejected", 150, 0)] * 2 + [("rejected", 0, 150)])
            self.assertIn("rounds in a row", d.read_log())
            versions = [m["version"] for m in c.call("model.list")["models"]]
            for v in served:     # three rejected versions pushed none out
                self.assertIn(v, versions)
            self.assertEqual(len(versions), len(served) + 1)   # and only the newest stays
            add("a", 0, 20, 50)  # learning goes on with what came after
            add("b", 1, 20, 50)
            self.assertEqual(train_and_wait(c)["outcome"], "accepted")
            self.assertEqual(c.call("model.rollback", {"version": min(served)})["model_version"],
                             min(served))
        finally:
            d.cleanup()

    def test_finished_round_is_never_lost(self):
        """2: the trainer reported idle before the loop applied the round; a
        train (or rollback) in that window lost the accepted round: "no model
        yet" while the database held one, no training.finished event."""
        d = Daemon("training.auto=no", "training.epochs=1", "model.hidden=8,8",
                   "training.holdout_every=0").start()
        try:
            c = d.client()
            c.call("events.subscribe")
            for n in ("a", "b"):
                c.call("class.add", {"name": n})
            spam = d.client()
            started = finished = 0
            for r in range(30):
                c.call("sample.add", {"samples": [{"class": "ab"[i % 2], "features": feats(0.1 * (i % 2), i)}
                                                  for i in range(4)]})
                c.call("sample.add", {"samples": [{"class": "ab"[i % 2], "features": feats(0.1 * (i % 2), i)}
                                                  for i in range(4)]})
                # pipelined trains and rollbacks hit the end of the round
                spam.send_raw((b'{"jsonrpc":"2.0","method":"train","id":1}\n'
                               b'{"jsonrpc":"2.0","method":"model.rollback","id":2,"params":{"version":1}}\n') * 40)
                for _ in range(80):
                    spam.read_msg()
                # every round started gets its finished event
                c.call_raw("train")   # busy when a spammed train already started one
                deadline = time.time() + 30
                while c.call("train.status")["state"] != "idle" and time.time() < deadline:
                    time.sleep(0.005)
                c.call("status")
                for e in c.events:
                    started += e.get("type") == "training.started"
                    finished += e.get("type") == "training.finished"
                c.events.clear()
                st = c.call("status")
                db = sqlite3.connect("file:%s?mode=ro" % d.db, uri=True)
                cur = db.execute("SELECT version FROM models WHERE current = 1").fetchone()
                db.close()
                # the loop's view and the database agree
                self.assertEqual(st["model_version"], cur[0] if cur else None, "round %d" % r)
            time.sleep(0.2)
            c.call("status")
            for e in c.events:
                started += e.get("type") == "training.started"
                finished += e.get("type") == "training.finished"
            self.assertEqual(started, finished)
            self.assertGreaterEqual(started, 30)
            spam.close()
            c.close()
            self.assertEqual(d.stop(), 0)
        finally:
            d.cleanup()

    def setup_two(self, *sets):
        d = Daemon("training.auto=no", "training.epochs=5", "model.hidden=32,32", *sets).start()
        c = d.client()
        c.call("events.subscribe")
        for n in ("a", "b"):
            c.call("class.add", {"name": n})
        return d, c

    def normal(self, n, start=0):
        return [{"class": "ab"[i % 2], "features": feats(0.2 * (i % 2), i)} for i in range(start, start + n)]

    def test_poison_inputs_are_refused(self):
        """3: features of 1e30, or a window of alternating +-1e6 readings,
        were accepted and made every later round diverge."""
        d, c = self.setup_two()
        try:
            for bad in ({"class": "a", "features": [1e30] * DIM},
                        {"class": "a", "window": [[1e6 * (-1) ** i] * 6 for i in range(128)]}):
                m = c.call_raw("sample.add", bad)
                self.assertEqual(m["error"]["code"], -32602, m)
                self.assertIn("plausible range", m["error"]["message"])
            self.assertEqual(c.call("status")["samples_pending"], 0)
            # In range but absurd for this data (one feature at 1e8): with
            # the default clipping after a robust standardisation the round
            # learns and the other samples keep their scale.
            s = self.normal(40)
            s[3] = {"class": "a", "features": [1e8] * DIM}
            c.call("sample.add", {"samples": s})
            ev = train_and_wait(c)
            self.assertEqual(ev["outcome"], "accepted", ev)
        finally:
            d.cleanup()

    def test_diverging_round_quarantines_and_training_goes_on(self):
        """3: one sample that makes the loss non-finite stopped training for
        ever; now it is quarantined and the next round learns the rest."""
        # Without clipping, a sample at 9e8 in a feature whose others vary
        # by 0.01 makes most rounds diverge; whether all three attempts of
        # a round do depends on the seeds (training is deterministic for a
        # given model.seed), so try a few seeds until one does.
        for seed in range(1, 6):
            d, c = self.setup_two("model.norm_clip=0", "training.epochs=60", "model.seed=%d" % seed)
            try:
                s = self.normal(40)
                s[5] = {"class": "b", "features": [9e8 * (-1) ** k for k in range(DIM)]}
                c.call("sample.add", {"samples": s})
                c.call("train")
                seen = list(c.events)
                c.events.clear()
                while not any(e.get("type") == "training.finished" for e in seen):
                    m = c.read_msg()
                    if m.get("method") == "event":
                        seen.append(m["params"])
                ev = [e for e in seen if e.get("type") == "training.finished"][0]
                if ev["outcome"] == "accepted":
                    continue   # this seed's third attempt stayed finite
                q = [e for e in seen if e.get("type") == "samples.quarantined"]
                self.assertEqual([e["samples"] for e in q], [1], seen)
                self.assertEqual(ev["outcome"], "failed", ev)
                self.assertIn("quarantined", ev["reason"])
                st = c.call("status")
                self.assertEqual(st["samples_quarantined"], 1)
                self.assertEqual(st["samples_pending"], 39)
                lst = c.call("quarantine.list")
                self.assertEqual(len(lst["samples"]), 1)
                self.assertEqual(lst["samples"][0]["class"], "b")
                self.assertIn("samples quarantined", d.read_log())
                ev = train_and_wait(c)
                self.assertEqual(ev["outcome"], "accepted", ev)
                self.assertEqual(c.call("status")["samples_pending"], 0)
                r = c.call("quarantine.drop", {"ids": [lst["samples"][0]["id"]]})
                self.assertEqual(r["dropped"], 1)
                self.assertEqual(c.call("status")["samples_quarantined"], 0)
                self.assertEqual(self.code_of(c, "quarantine.drop", {}), -32602)
                return
            finally:
                d.cleanup()
        self.fail("no seed made the poisoned round diverge three times")

    def code_of(self, c, method, params):
        m = c.call_raw(method, params)
        return m["error"]["code"] if "error" in m else 0

    def test_rollback_keeps_the_memory_of_its_version(self):
        """11: after a rollback, any round deleted for ever the exemplars of
        classes the rolled-back model did not know; those classes kept being
        predicted, as other classes."""
        wins = hapt_windows(activities={1, 4, 6})
        d = Daemon("training.auto=no", "training.epochs=20", "model.hidden=64,64").start()
        try:
            c = d.client()
            c.call("events.subscribe")
            names = {1: "WALKING", 4: "SITTING", 6: "LAYING"}
            for a in (1, 4):
                c.call("class.add", {"name": names[a]})

            def send(acts, k):
                part = [w for w in wins if w[0] in acts][k::3]
                for i in range(0, len(part), 100):
                    c.call("sample.add", {"samples": [{"class": names[a], "window": rows}
                                                      for a, _, rows in part[i:i + 100]]})
            send({1}, 0)
            v1 = train_and_wait(c)["model_version"]
            send({4}, 0)
            v2 = train_and_wait(c)["model_version"]
            self.assertTrue(c.call("model.rollback", {"version": v1}))
            # a new class after the rollback grows the head past SITTING's label
            c.call("class.add", {"name": "LAYING"})
            send({1, 6}, 1)
            ev = train_and_wait(c)
            self.assertEqual(ev["outcome"], "accepted", ev)
            st = c.call("status")
            trained = {k["name"]: k["trained"] for k in st["classes"]}
            self.assertFalse(trained["SITTING"], st["classes"])   # v3 never learned it
            sit = [w for w in wins if w[0] == 4][:60]
            r = c.call("predict", {"inputs": [{"window": rows} for _, _, rows in sit]})
            self.assertNotIn("SITTING", {p["class"] for p in r["predictions"]})
            # Rolling forward to v2 brings its memory back, SITTING included.
            c.call("model.rollback", {"version": v2})
            st = c.call("status")
            self.assertTrue({k["name"]: k["trained"] for k in st["classes"]}["SITTING"])
            db = sqlite3.connect("file:%s?mode=ro" % d.db, uri=True)
            n = db.execute("SELECT COUNT(*) FROM exemplars e JOIN classes c ON c.id = e.class_id "
                           "WHERE e.model_version = ? AND c.name = 'SITTING'", (v2,)).fetchone()[0]
            db.close()
            self.assertGreater(n, 0)
        finally:
            d.cleanup()


class TestStore(unittest.TestCase):
    """Findings 7, 8, 9, 12, 21: the database."""

    def test_full_store_still_trains(self):
        """7: at the size cap no round could commit again (the round inserted
        its model before deleting the samples it learned)."""
        d = Daemon("training.auto=no", "training.epochs=2", "model.hidden=16,16",
                   "store.max_bytes=2M").start()
        try:
            c = d.client()
            for n in ("a", "b"):
                c.call("class.add", {"name": n})
            k, err = 0, None
            while err is None and k < 200:
                m = c.call_raw("sample.add", {"samples": [{"class": "ab"[i % 2], "features": feats(0.1 * (i % 2), i)}
                                                          for i in range(100)]})
                err = m.get("error")
                k += 1
            self.assertIsNotNone(err)
            self.assertEqual(err["code"], -32005, err)
            self.assertIn("max_bytes", err["message"])
            ev = train_and_wait(c)
            self.assertEqual(ev["outcome"], "accepted", ev)
            self.assertEqual(c.call("sample.add", {"class": "a", "features": feats()})["accepted"], 1)
        finally:
            d.cleanup()

    def test_cap_too_small_for_a_round_is_refused(self):
        """Review of 2026-12-08 (second), 1b: store.max_bytes=1M passed the
        configuration check with model.hidden=512,512, whose every round then
        failed to commit (its model alone is 1.4 MB) and stopped learning."""
        r = subprocess.run([HDQTD, "--check-config", "--set", "store.max_bytes=1M",
                            "--set", "model.hidden=512,512"], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertIn("store.max_bytes", r.stderr)
        self.assertIn("too small for a round", r.stderr)
        # room for a round but not for keep_models versions: runs, with a warning
        r = subprocess.run([HDQTD, "--check-config", "--set", "store.max_bytes=16M",
                            "--set", "model.hidden=512,512"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("warning: store.max_bytes", r.stderr)
        r = subprocess.run([HDQTD, "--check-config", "--set", "store.max_bytes=64M",
                            "--set", "model.hidden=512,512"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("warning", r.stderr)

    @unittest.skipUnless(os.geteuid() == 0, "mounts a small tmpfs")
    def test_full_disk_still_trains(self):
        """Review of 2026-12-08 (second), 1a: on a full disk (no max_bytes)
        ingest ran until SQLite failed, and then no round could commit (its
        model, exemplars and the WAL of the rows it learns had no room):
        training and ingest stopped for good, across restarts.  A review of
        the first fix: after a cycle or two the WAL and the database's free
        pages, unseen by the check, stopped ingest for good too.  Three
        cycles of fill, train, fill on a 4 MB and an 8 MB disk."""
        for size in ("4m", "8m"):
            mnt = tempfile.mkdtemp(prefix="hdqt-full-")
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", mnt],
                               capture_output=True, text=True)
            if r.returncode != 0:
                os.rmdir(mnt)
                self.skipTest("cannot mount a tmpfs here: " + r.stderr.strip())
            d = None
            try:
                d = Daemon(*FAST)
                d.db = os.path.join(mnt, "hdqtd.db")
                d.start()
                c = d.client()
                for n in ("a", "b"):
                    c.call("class.add", {"name": n})
                k = 0
                for cycle in range(3):
                    got, err, k = fill_until_refused(c, k, 50)
                    self.assertIsNotNone(err)
                    self.assertEqual(err["code"], -32005, err)
                    self.assertIn("disk holding the database", err["message"])
                    self.assertGreater(got, 2, (size, cycle, err))   # each cycle takes samples
                    ev = train_and_wait(c)
                    self.assertEqual(ev["outcome"], "accepted", (size, cycle, ev))
                    self.assertEqual(c.call("status")["samples_pending"], 0)
            finally:
                if d:
                    d.cleanup()
                subprocess.run(["umount", mnt])
                os.rmdir(mnt)

    def test_versions_filling_the_cap_give_way(self):
        """Review of 2026-12-08 (fourth): a cap above two rounds but under
        keep_models versions filled with versions; with nothing pending no
        round ran, and only a round prunes: every sample.add was refused for
        good.  Now, with nothing pending, the older versions give way."""
        d = Daemon("training.auto=no", "training.epochs=2", "model.hidden=32,32",
                   "store.max_bytes=600K").start()
        try:
            self.assertIn("warning: store.max_bytes", d.read_log())
            c = d.client()
            for n in ("a", "b"):
                c.call("class.add", {"name": n})
            k = 0
            for cycle in range(5):
                got, err, k = fill_until_refused(c, k, 20)
                self.assertEqual(err["code"], -32005, err)
                self.assertGreater(got, 0, (cycle, err))
                self.assertEqual(train_and_wait(c)["outcome"], "accepted", cycle)
            self.assertGreaterEqual(len(c.call("model.list")["models"]), 2)
        finally:
            d.cleanup()

    def test_deleted_database_takes_no_writes(self):
        """Review of 2026-12-08 (second), 2: with the database file deleted
        under it, hdqtd went on acknowledging samples into the unlinked
        inode; at the next start a new empty database had replaced them."""
        d = Daemon(*FAST).start()
        try:
            c = d.client()
            c.call("class.add", {"name": "a"})
            self.assertEqual(c.call("sample.add", {"class": "a", "features": feats()})["accepted"], 1)
            os.unlink(d.db)
            m = c.call_raw("sample.add", {"samples": [{"class": "a", "features": feats(k=i)}
                                                      for i in range(10)], "batch_id": "b1"})
            self.assertEqual(m.get("error", {}).get("code"), -32007, m)
            self.assertIn("deleted or replaced", m["error"]["message"])
            self.assertIn("version", c.call("status"))   # reads still served
        finally:
            d.cleanup()

    def test_locked_database_does_not_stall_the_loop(self):
        """8: SQLite ran on the loop thread: while another writer held the lock,
        every client stalled up to the busy timeout."""
        d = Daemon(*FAST).start()
        try:
            c = d.client()
            c.call("class.add", {"name": "a"})
            db = sqlite3.connect(d.db, timeout=1, isolation_level=None)
            db.execute("BEGIN IMMEDIATE")
            writer = d.client()
            writer.send_raw((json.dumps({"jsonrpc": "2.0", "id": 1, "method": "sample.add",
                                         "params": {"class": "a", "features": feats()}}) + "\n").encode())
            time.sleep(0.3)
            t0 = time.time()
            for _ in range(5):
                c.call("status")
                c.call("train.status")
            waited = time.time() - t0
            db.execute("COMMIT")
            db.close()
            m = writer.read_msg()   # the write completes once the lock is free
            self.assertEqual(m["result"]["accepted"], 1, m)
            self.assertLess(waited, 1.0, "status waited %.2f s for the lock" % waited)
            self.assertEqual(c.call("status")["samples_pending"], 1)
        finally:
            d.cleanup()

    def test_requests_of_one_connection_keep_their_order(self):
        """8: with writes off the loop, replies still come in request order."""
        d = Daemon(*FAST).start()
        try:
            c = d.client()
            lines = [{"jsonrpc": "2.0", "id": 0, "method": "class.add", "params": {"name": "a"}}]
            for i in range(1, 40):
                lines.append({"jsonrpc": "2.0", "id": i, "method": "sample.add" if i % 2 else "status",
                              "params": {"class": "a", "features": feats()} if i % 2 else None})
            c.send_raw(b"".join((json.dumps({k: v for k, v in x.items() if v is not None}) + "\n").encode()
                                for x in lines))
            got = [c.read_msg() for _ in lines]
            self.assertEqual([m["id"] for m in got], list(range(40)))
            pend = [m["result"]["samples_pending"] for m in got[2::2]]
            self.assertEqual(pend, list(range(1, 20)))   # each status saw the writes before it
        finally:
            d.cleanup()

    def test_batch_id_stores_once(self):
        """9: a resend after a lost acknowledgement stored the samples twice."""
        d = Daemon(*FAST).start()
        try:
            c = d.client()
            c.call("class.add", {"name": "a"})
            p = {"samples": [{"class": "a", "features": feats(k=i)} for i in range(7)], "batch_id": "box-1.42"}
            r1 = c.call("sample.add", p)
            r2 = c.call("sample.add", p)
            self.assertEqual((r1["accepted"], r1["duplicate"]), (7, False))
            self.assertEqual((r2["accepted"], r2["duplicate"]), (7, True))
            self.assertEqual(c.call("status")["samples_pending"], 7)
            for bad in ("", "x" * 65, "has space", 5):
                self.assertEqual(c.call_raw("sample.add", dict(p, batch_id=bad))["error"]["code"], -32602)
            d.stop()
            d.start()   # remembered across restarts
            self.assertTrue(d.client().call("sample.add", p)["duplicate"])
        finally:
            d.cleanup()

    def test_default_size_cap(self):
        """12: no default size cap: start-up checks of a multi-GB database
        could overrun systemd's start timeout (the progress calls that
        extend it are tested in test_store's test_check_progress)."""
        d = Daemon(*FAST).start()
        try:
            cfg = d.client().call("config.get")
            self.assertEqual(cfg["store"]["max_bytes"], 2 << 30)
        finally:
            d.cleanup()


class TestText(Case):
    """Finding 13 (daemon side): strings are valid UTF-8."""

    def test_invalid_utf8_is_refused(self):
        for bad in (b"\xff\xfe", b"a\xc3", b"\xed\xa0\x80", b"\xc0\xaf"):
            r = json.loads(raw_call(self.d.sock, b'{"jsonrpc":"2.0","id":1,"method":"class.add",'
                                    b'"params":{"name":"x' + bad + b'"}}\n'))
            self.assertEqual(r["error"]["code"], -32700, r)
            self.assertIn("UTF-8", r["error"]["message"])
        self.assertEqual(self.c.call("class.list")["classes"], [])
        r = self.c.call("class.add", {"name": "café ☕"})
        self.assertEqual(r["name"], "café ☕")
        self.assertEqual(self.code("class.add", {"name": "bell\u0007"}), -32602)
        # an unknown method name is cut without splitting a character
        m = self.c.call_raw("é" * 80)
        self.assertEqual(m["error"]["code"], -32601)
        m["error"]["message"].encode("utf-8")


class TestConnections(unittest.TestCase):
    """Findings 10 and 20: slots, timeouts, groups."""

    def nobody(self, d, script, groups=()):
        os.chmod(d.dir, 0o755)
        return subprocess.run([NOBODY_PY, "-c", script, d.sock], capture_output=True, text=True,
                              timeout=60, preexec_fn=lambda: (os.setgroups(list(groups)), os.setgid(65534),
                                                              os.setuid(65534)))

    def test_timeouts(self):
        """10: no idle or partial-line timeout: a client could hold a slot and
        a partial line for ever."""
        d = Daemon(*FAST, "daemon.idle_timeout=1", "daemon.partial_timeout=1").start()
        try:
            idle = d.client()
            part = d.client()
            part.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"sta')
            sub = d.client()
            sub.call("events.subscribe")   # a subscriber waits for events: not idle
            t0 = time.time()
            for k in (idle, part):
                m = k.read_msg()
                self.assertEqual(m["error"]["code"], -32005)
                with self.assertRaises((EOFError, ConnectionError)):
                    k.read_msg()
            self.assertLess(time.time() - t0, 10)
            time.sleep(1.5)
            self.assertIn("version", sub.call("status"))
        finally:
            d.cleanup()

    def test_memory_budget(self):
        """10: partial lines and queued replies of all clients had no common
        bound (4 MiB each, 64 clients).  Over the budget, the connection
        holding the most is closed, whoever read last."""
        d = Daemon(*FAST, "daemon.max_message=256K", "daemon.max_write_queue=256K",
                   "daemon.max_memory=600K").start()
        try:
            ks = [d.client(timeout=5) for _ in range(3)]
            for k in ks:
                k.send_raw(b'{"x":"' + b"y" * (200 << 10))   # 200 KiB held, not complete
                time.sleep(0.2)
            closed = []
            for i, k in enumerate(ks):
                try:
                    m = k.read_msg()
                except socket.timeout:
                    continue
                self.assertEqual(m["error"]["code"], -32005, m)
                self.assertIn("max_memory", m["error"]["message"])
                with self.assertRaises((EOFError, ConnectionError)):
                    k.read_msg()
                closed.append(i)
            self.assertGreaterEqual(len(closed), 1)
            self.assertIn("holding most", d.read_log())
            c = d.client()
            self.assertIn("version", c.call("status"))   # the others are served
            for i, k in enumerate(ks):
                if i not in closed:   # the rest complete their lines and are answered
                    k.send_raw(b'"}\n')
                    self.assertEqual(k.read_msg()["error"]["code"], -32600)
        finally:
            d.cleanup()

    @unittest.skipUnless(os.geteuid() == 0, "connects as user nobody")
    def test_per_uid_cap_and_admin_slots(self):
        """10: one non-admin uid could take every connection slot."""
        d = Daemon(*FAST, "daemon.socket_mode=0666", "access.admin_group=root",
                   "daemon.max_connections=12", "daemon.max_connections_per_uid=3",
                   "daemon.admin_reserved=2").start()
        try:
            script = r"""
import json, socket, sys, time
socks, codes = [], []
for i in range(6):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(5)
    try:
        s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"status"}\n')
    except OSError:
        pass   # refused: the error is waiting to be read
    r = json.loads(s.makefile("rb").readline())
    codes.append(r.get("error", {}).get("code", 0)); socks.append(s)
print(json.dumps(codes))
"""
            r = self.nobody(d, script)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(json.loads(r.stdout), [0, 0, 0, -32006, -32006, -32006])
            # root (admin) is not capped per uid
            cs = [d.client() for _ in range(6)]
            for k in cs:
                k.call("status")
        finally:
            d.cleanup()

    @unittest.skipUnless(os.geteuid() == 0, "connects as user nobody")
    def test_admin_by_peer_groups(self):
        """20: the admin check read the uid's groups from the group database,
        not the peer's real supplementary groups."""
        d = Daemon(*FAST, "daemon.socket_mode=0666", "access.admin_group=users").start()
        try:
            script = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"class.add","params":{"name":"x"}}\n')
print(json.dumps(json.loads(s.makefile("rb").readline()).get("error", {}).get("code", 0)))
"""
            import grp
            users = grp.getgrnam("users").gr_gid
            self.assertEqual(json.loads(self.nobody(d, script).stdout), -32008)
            self.assertEqual(json.loads(self.nobody(d, script, groups=[users]).stdout), 0)
        finally:
            d.cleanup()


class TestReview(unittest.TestCase):
    """Defects a review of the fixes found (numbers of its report)."""

    def test_idle_client_after_long_line_keeps_its_slot(self):
        """Review of 2026-12-08, 1: a line buffer grown by one long line
        never shrank, and daemon.max_memory counts its capacity: clients that
        had each sent one large batch and sat idle were closed with -32005
        when anyone else read, though nothing was held for them."""
        d = Daemon(*FAST, "daemon.max_message=1M", "daemon.max_write_queue=1M",
                   "daemon.max_memory=3M").start()
        try:
            pad = "x" * (900 << 10)   # grows a buffer to 1 MiB
            idle = []
            for i in range(4):        # 4 MiB of capacity without the shrink
                k = d.client(timeout=5)
                k.send_raw((json.dumps({"jsonrpc": "2.0", "id": 1, "method": "status",
                                        "params": {"pad": pad}}) + "\n").encode())
                self.assertIn("result", k.read_msg())
                idle.append(k)
            for _ in range(3):        # others read: over the budget only if counted
                c = d.client()
                self.assertIn("version", c.call("status"))
                c.close()
            for k in idle:            # every idle client is still served
                self.assertIn("version", k.call("status"))
            self.assertNotIn("holding most", d.read_log())
        finally:
            d.cleanup()

    def test_partial_clock_after_split_line(self):
        """R2: a line that arrived in two reads and went to the writer left
        the partial-line clock running: a streaming sensor was dropped."""
        d = Daemon(*FAST, "daemon.partial_timeout=1").start()
        try:
            c = d.client()
            c.call("class.add", {"name": "a"})

            def req(i):
                return (json.dumps({"jsonrpc": "2.0", "id": i, "method": "sample.add",
                                    "params": {"class": "a", "features": feats(k=i)}}) + "\n").encode()
            line = req(1)
            c.send_raw(line[:20])
            time.sleep(0.3)
            c.send_raw(line[20:])
            self.assertIn("result", c.read_msg())
            for i in range(2, 8):   # 3 s of complete lines, 0.5 s apart
                time.sleep(0.5)
                c.send_raw(req(i))
                self.assertIn("result", c.read_msg())
        finally:
            d.cleanup()

    def test_partial_clock_for_pipelined_lines(self):
        """R2 again (second review): a client streaming lines in writes that
        end mid-line never restarted the clock and was dropped."""
        d = Daemon(*FAST, "daemon.partial_timeout=1").start()
        try:
            c = d.client(timeout=30)

            def line(i):
                t = json.dumps({"jsonrpc": "2.0", "id": i, "method": "train.status"})
                return (t + " " * (500 - len(t)) + "\n").encode()   # 501 bytes
            stream = b"".join(line(i) for i in range(60))
            for off in range(0, len(stream), 500):   # every write ends mid-line
                c.send_raw(stream[off:off + 500])
                time.sleep(0.05)
            got = [c.read_msg() for _ in range(60)]   # 3 s of lines, each done in 0.05 s
            self.assertEqual([m.get("id") for m in got], list(range(60)))
        finally:
            d.cleanup()

    def test_tree_slot_comes_back_when_the_client_leaves(self):
        """Second review, 1: a client closing while its long line's request
        ran off the loop kept the only tree slot for ever: every later line
        over 64 KiB waited."""
        d = Daemon(*FAST, "daemon.max_message=32M", "daemon.max_write_queue=32M").start()
        try:
            w = d.client(timeout=20)

            def long_status(i):
                w.send_raw((json.dumps({"jsonrpc": "2.0", "id": i, "method": "status",
                                        "params": {"pad": "x" * 70000}}) + "\n").encode())
                return w.read_msg()
            self.assertIn("result", long_status(1))
            for delay in (0.3, 0.6, 1.0):
                v = d.client()
                win = [[0.1] * 6 for _ in range(128)]
                data = b"".join((json.dumps({"jsonrpc": "2.0", "id": 100 + i, "method": "rpc.describe"})
                                 + "\n").encode() for i in range(20))
                data += (json.dumps({"jsonrpc": "2.0", "id": 7, "method": "predict",
                                     "params": {"inputs": [{"window": win}] * 4000}},
                                    separators=(",", ":")) + "\n").encode()
                v.send_raw(data)
                time.sleep(delay)   # during the parse, or during the feature job
                v.sock.close()
                time.sleep(1.5)
                self.assertIn("result", long_status(2))   # a slot is free again
        finally:
            d.cleanup()

    def test_write_timeout_applies_to_paused_clients(self):
        """R3: a client paused for its unread replies (the very case of
        write_timeout) or half-closed and never reading was never dropped."""
        for half_close in (False, True):
            d = Daemon(*FAST, "daemon.max_message=16K", "daemon.max_write_queue=16K",
                       "daemon.max_memory=1M", "daemon.write_timeout=1").start()
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(d.sock)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.settimeout(0.5)
                try:
                    for _ in range(20000):
                        s.sendall(b'{"jsonrpc":"2.0","method":"config.get","id":1}\n')
                except socket.timeout:
                    pass   # hdqtd stopped reading: paused
                if half_close:
                    s.shutdown(socket.SHUT_WR)
                c = d.client()
                deadline = time.time() + 10
                while c.call("status")["connections"] > 1 and time.time() < deadline:
                    time.sleep(0.2)
                self.assertEqual(c.call("status")["connections"], 1)
                self.assertIn("daemon.write_timeout", d.read_log())
                s.close()
            finally:
                d.cleanup()

    def test_predict_of_many_windows_does_not_stall(self):
        """R6: a predict of raw windows extracted their features on the loop
        thread (3800 windows: about 0.3 s) before answering anyone else."""
        d = Daemon(*FAST, "daemon.max_message=16M", "daemon.max_write_queue=16M").start()
        try:
            c = d.client()
            other = d.client()
            win = [[0.5 * ((i * 7 + j) % 5) for j in range(6)] for i in range(128)]   # short numbers: 3.6 MB
            line = (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "predict",
                                "params": {"inputs": [{"window": win}] * 3800}}) + "\n").encode()
            stalls = []
            stop = threading.Event()

            def probe():
                while not stop.is_set():
                    t0 = time.time()
                    other.call("train.status")
                    stalls.append(time.time() - t0)

            th = threading.Thread(target=probe)
            th.start()
            took = []
            try:
                for _ in range(3):
                    t0 = time.time()
                    c.send_raw(line)
                    m = c.read_msg()
                    took.append(time.time() - t0)
                    self.assertEqual(m["error"]["code"], -32004)   # no model yet: after the windows
            finally:
                stop.set()
                th.join()
            # On the loop, the windows' features stalled the probe once per
            # request: three stalls of 0.5 s in a release build (requests of
            # 1.0-1.7 s); off it, 1-7 ms.  A probe may still wait for CPU once
            # (2 cores shared with the pool, another test and ASan: 0.15-0.17 s
            # seen), so the limit is on the third-longest stall, and a looser
            # one on the longest.
            self.assertGreaterEqual(len(stalls), 3)
            top = sorted(stalls, reverse=True)
            why = "the loop stalled %s s (requests took %s s)" % (
                ", ".join("%.3f" % t for t in top[:3]), ", ".join("%.2f" % t for t in took))
            self.assertLess(top[2], 0.15, why)
            self.assertLess(top[0], 0.4, why)
        finally:
            d.cleanup()

    def test_one_json_text_per_line_and_ids_from_the_real_member(self):
        """Trailing text after the first JSON value was ignored (a second
        request on the line got no reply); an escaped key "\\u0069d" made the
        id echo come from another member."""
        d = Daemon(*FAST).start()
        try:
            c = d.client()
            c.send_raw(b'{"jsonrpc":"2.0","method":"status","id":1} {"jsonrpc":"2.0","method":"status","id":2}\n')
            m = c.read_msg()
            self.assertEqual(m["error"]["code"], -32700, m)
            c.send_raw(b'{"jsonrpc":"2.0","method":"status","id":1}xyz\n')
            self.assertEqual(c.read_msg()["error"]["code"], -32700)
            c.send_raw(b'{"jsonrpc":"2.0","method":"train.status","id":1}   \n')
            self.assertEqual(c.read_msg()["id"], 1)
            c.send_raw(b'{"jsonrpc":"2.0","method":"train.status","\\u0069d":7,"zz":[1,{"a":2}]}\n')
            self.assertEqual(c.read_msg()["id"], 7)
        finally:
            d.cleanup()

    def test_removed_class_takes_no_samples(self):
        """A sample.add checked against the class cache while a class.remove
        of another client waited ahead of it in the writer stored samples of
        the removed class."""
        d = Daemon(*FAST).start()
        try:
            a, b = d.client(), d.client()
            a.call("class.add", {"name": "a"})
            a.send_raw((json.dumps({"jsonrpc": "2.0", "id": 1, "method": "class.remove",
                                    "params": {"name": "a"}}) + "\n").encode())
            b.send_raw((json.dumps({"jsonrpc": "2.0", "id": 2, "method": "sample.add",
                                    "params": {"class": "a", "features": feats()}}) + "\n").encode())
            self.assertIn("result", a.read_msg())
            r = b.read_msg()
            self.assertEqual(r.get("error", {}).get("code"), -32001, r)
            self.assertEqual(a.call("status")["samples_pending"], 0)
        finally:
            d.cleanup()


class TestConfig(unittest.TestCase):
    """Findings 14 and 19: configuration file and reload."""

    def test_reload_keeps_overrides_and_names_waiting_keys(self):
        """14: SIGHUP replaced --set overrides with the file's values; keys
        that cannot be reloaded changed nothing and logged nothing."""
        tmp = tempfile.mkdtemp(prefix="hdqtd-conf-")
        conf = os.path.join(tmp, "hdqtd.conf")
        open(conf, "w").write("[training]\nauto = no\nepochs = 7\n[daemon]\nmax_batch = 100\n")
        d = Daemon("daemon.max_batch=50")
        d.sets = ["daemon.max_batch=50"]
        try:
            args_conf = ["--config", conf]
            d.start_args = args_conf
            d.proc = subprocess.Popen([HDQTD, "--config", conf, "--socket", d.sock, "--db", d.db,
                                       "--set", "daemon.max_batch=50"],
                                      stdout=open(d.log, "ab"), stderr=subprocess.STDOUT)
            d.logf = open(d.log, "ab")
            deadline = time.time() + 30
            while not os.path.exists(d.sock) and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)
            c = d.client()
            self.assertEqual(c.call("config.get")["daemon"]["max_batch"], 50)
            open(conf, "w").write("[training]\nauto = no\nepochs = 9\n[daemon]\nmax_batch = 100\n")
            d.proc.send_signal(signal.SIGHUP)
            deadline = time.time() + 10
            while "configuration reloaded" not in d.read_log() and time.time() < deadline:
                time.sleep(0.05)
            cfg = c.call("config.get")
            self.assertEqual(cfg["daemon"]["max_batch"], 50)   # the override still wins
            self.assertEqual(cfg["training"]["epochs"], 7)     # needs a restart ...
            self.assertIn("training.epochs = 9: takes effect at the next restart", d.read_log())
        finally:
            d.cleanup()

    def test_version_names_the_kernel(self):
        """hdqtd --version names the integer kernel in use (issue 14: also on ARM)."""
        r = subprocess.run([HDQTD, "--version"], capture_output=True, text=True, timeout=30)
        self.assertRegex(r.stdout, r"^hdqtd \S+ \(kernel \w+\)$")
        r = subprocess.run([HDQTD, "--version"], capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, HDQT_KERNEL="scalar"))
        self.assertIn("(kernel scalar)", r.stdout)

    def test_ini_errors_are_clear(self):
        """19: a line over 200 bytes was a "syntax error"; model.hidden was cut
        at 255 bytes; duplicate keys silently took the last value."""
        tmp = tempfile.mkdtemp(prefix="hdqtd-conf-")
        conf = os.path.join(tmp, "c.conf")

        def check(text):
            open(conf, "w").write(text)
            return subprocess.run([HDQTD, "--config", conf, "--check-config"], capture_output=True,
                                  text=True, timeout=30)
        long_path = "/tmp/" + "d" * 300 + ".db"
        r = check("[daemon]\ndatabase = %s\n" % long_path)
        self.assertEqual(r.returncode, 0, r.stderr)   # long lines are read whole
        # model.hidden was cut at 255 bytes: "8" + 300 spaces + ",16" was [8]
        open(conf, "w").write("[model]\nhidden = 8" + " " * 300 + ",16\n[training]\nauto = no\n")
        d = Daemon()
        try:
            d.proc = subprocess.Popen([HDQTD, "--config", conf, "--socket", d.sock, "--db", d.db],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 30
            while not os.path.exists(d.sock) and time.time() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)
            d.logf = open(d.log, "ab")
            self.assertEqual(d.client().call("config.get")["model"]["hidden"], "8,16")
        finally:
            d.cleanup()
        r = check("[training]\nepochs = 5\nepochs = 6\n")
        self.assertEqual(r.returncode, 2)
        self.assertIn("training.epochs", r.stderr)
        self.assertIn("more than once", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
