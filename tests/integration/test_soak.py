#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""kill -9 soak: the real hdqtd is killed with SIGKILL at random moments
while one client streams sample.add batches and, every few cycles, a
training round runs.  After every kill a copy of the database (with its WAL)
is checked before the daemon restarts on the original:

- PRAGMA integrity_check is ok;
- every sample (each carries a unique sequence number in features[0],
  seq / 1024 exactly as float32) is stored at most once across the samples
  and validation tables;
- every acknowledged sample is there: pending (samples), held out
  (validation), or learned by a round whose model version was committed
  (the daemon deletes learned samples: keep_learned = 0);
- a round is all or nothing: without a new model version no sample left the
  pending set and validation did not change; with one, exactly the samples
  pending when it started left it (all older than every sample still
  pending), every 5th of each class went to validation (holdout_every = 5),
  and as many were deleted as the model's metrics say it learned
  (train_samples), and validation holds validation_samples rows;
- a batch that was sent but not acknowledged is there completely or not at all;
  when the daemon takes batch ids (exactly-once sample.add), the batch is
  sent again after the restart with the same id and must then be there
  exactly once.
After the restart the daemon's status agrees with the copy (pending,
validation samples, model version).

Usage: test_soak.py [--cycles N] [--seed S] [--keep]   (meson: 50 cycles)
"""
import argparse
import json
import math
import os
import random
import shutil
import sqlite3
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from hdqtd_harness import Daemon  # noqa: E402

DIM = 166
CLASSES = ["SOAK_A", "SOAK_B", "SOAK_C"]
HOLDOUT_EVERY = 5
SETS = ["training.epochs=3", "model.hidden=32,32", "training.auto=no",
        "training.validation_per_class=0",       # no pruning: validation only grows
        "training.holdout_every=%d" % HOLDOUT_EVERY,
        "training.regression_margin=100",        # every finished round is accepted
        "store.keep_models=100000",              # no pruning: one row per committed round
        "daemon.log_level=notice"]


class SoakFailure(AssertionError):
    pass


def features(seq, cls):
    """A sample of class cls, unique by seq (feature 0, exact in float32)."""
    rnd = random.Random(seq)
    f = [math.sin(0.05 * (j + 1) * (cls + 1)) + 0.3 * rnd.random() for j in range(DIM)]
    f[0] = seq / 1024.0
    return f


def decode(blob):
    if blob is None or len(blob) < 4:
        return None
    x = struct.unpack("<f", blob[:4])[0] * 1024.0
    return int(x) if math.isfinite(x) and x == int(x) and x >= 1 else None


class Soak:
    def __init__(self, cycles, seed, keep=False, verbose=False):
        self.cycles = cycles
        self.rng = random.Random(seed)
        self.seed = seed
        self.verbose = verbose
        self.d = Daemon(*SETS, keep=keep)
        self.seq = 0
        self.cls_of = {}          # seq -> class index, every sample ever sent
        self.acked = set()        # acknowledged by a sample.add reply
        self.batches = []         # (cycle, [seqs], acked)
        self.pending = set()      # at the last check
        self.valid = set()
        self.model_version = 0    # newest committed model version at the last check
        self.last_version = 0
        self.runs_seen = 0
        self.timer = None
        self.batch_ids = None     # does the daemon take sample.add batch ids? (probed)
        self.resend = None        # the unacknowledged batch of the last cycle: (seqs, params)
        self.resend_stored = None
        self.round_est = 0.5      # seconds a round takes (from the committed metrics)
        self.fig = {"cycles": 0, "samples_sent": 0, "samples_acknowledged": 0,
                    "batches_unacknowledged": 0, "unacknowledged_present": 0,
                    "rounds_requested": 0, "rounds_committed": 0,
                    "kills_during_training": 0, "kills_after_commit_before_run_end": 0,
                    "batches_resent": 0, "resent_duplicates": 0,
                    "samples_learned": 0, "quarantined": 0, "max_pending": 0}

    def log(self, *a):
        if self.verbose:
            print(*a, flush=True)

    def fail(self, msg):
        raise SoakFailure("cycle %d: %s (seed %d, folder %s)" % (self.fig["cycles"], msg,
                                                                 self.seed, self.d.dir))

    # ---- one cycle -------------------------------------------------------

    def stream(self, c, stop, cycle, train_after):
        """Send batches one at a time until the connection breaks (the kill)
        or stop is set.  Returns True if train was requested."""
        sent = 0
        trained = False
        while not stop.is_set():
            n = self.rng.randint(5, 40)
            seqs = []
            samples = []
            for _ in range(n):
                self.seq += 1
                k = self.rng.randrange(len(CLASSES))
                self.cls_of[self.seq] = k
                seqs.append(self.seq)
                samples.append({"class": CLASSES[k], "features": features(self.seq, k)})
            entry = [cycle, seqs, False]
            self.batches.append(entry)
            self.fig["samples_sent"] += n
            params = {"samples": samples}
            if self.batch_ids:
                params["batch_id"] = "soak-%d-%d" % (self.seed, seqs[0])
            try:
                r = c.call("sample.add", params)
            except (EOFError, OSError, ValueError):
                self.resend = (seqs, params) if self.batch_ids else None
                return trained
            if r.get("accepted") != n or r.get("duplicate"):
                self.fail("sample.add answered %r for a new batch of %d" % (r, n))
            entry[2] = True
            self.acked.update(seqs)
            self.fig["samples_acknowledged"] += n
            sent += 1
            if train_after is not None and sent == train_after and not trained:
                try:
                    r = c.call("train")
                except (EOFError, OSError, ValueError):
                    return trained
                if r.get("started"):
                    trained = True
                    self.fig["rounds_requested"] += 1
                    # Somewhere in the round, or just after it.
                    self.arm(self.rng.uniform(0.0, 1.5 * self.round_est))
        return trained

    def arm(self, delay):
        """Kill the daemon after delay seconds (once per cycle)."""
        if self.timer:
            self.timer.cancel()
        proc = self.d.proc
        self.timer = threading.Timer(delay, lambda: proc.poll() is None and proc.kill())
        self.timer.start()

    def cycle(self, n):
        self.d.start()
        self.check_daemon()
        c = self.d.client(timeout=30)
        if n == 0:
            for name in CLASSES:
                c.call("class.add", {"name": name})
            self.batch_ids = "batch_id" in json.dumps(c.call("rpc.describe"))
        if self.resend:
            # The batch the kill left unanswered, again with its id: stored
            # once whether or not the first attempt was committed.
            seqs, params = self.resend[:2]
            stored = self.resend_stored   # was the first attempt committed? None: cannot tell
            self.resend = None
            r = c.call("sample.add", params)
            if r.get("accepted") != len(seqs):
                self.fail("resent batch: %r for %d samples" % (r, len(seqs)))
            if stored is not None and bool(r.get("duplicate")) != stored:
                self.fail("resent batch: duplicate=%r, but its first attempt was %s"
                          % (r.get("duplicate"), "stored" if stored else "not stored"))
            self.batches.append([n, seqs, True])
            self.acked.update(seqs)
            self.fig["samples_acknowledged"] += len(seqs)
            self.fig["batches_resent"] += 1
            self.fig["resent_duplicates"] += bool(r.get("duplicate"))
        train_after = self.rng.randint(1, 6) if n % 2 == 1 else None
        if train_after is None:
            self.arm(self.rng.uniform(0.02, 0.6))
        else:
            self.arm(5.0)  # in case train is refused; replaced once it started
        stop = threading.Event()
        self.stream(c, stop, n, train_after)
        # The connection broke: the kill happened (or the daemon died by itself).
        self.d.proc.wait(30)
        if self.timer:
            self.timer.cancel()
        rc = self.d.proc.returncode
        self.d.logf.close()
        if rc != -9:
            self.fail("hdqtd exited with %s, not by SIGKILL:\n%s" % (rc, self.d.read_log()[-3000:]))
        c.close()
        self.fig["cycles"] += 1
        self.check_db(n)

    # ---- checks ----------------------------------------------------------

    def snapshot(self):
        snap = tempfile.mkdtemp(prefix="hdqtd-soak-snap-")
        for suffix in ("", "-wal", "-shm"):
            p = self.d.db + suffix
            if os.path.exists(p):
                shutil.copy2(p, os.path.join(snap, "hdqtd.db" + suffix))
        return snap

    def check_db(self, cycle):
        snap = self.snapshot()
        try:
            db = sqlite3.connect(os.path.join(snap, "hdqtd.db"))
            try:
                self.check_tables(db, cycle)
            finally:
                db.close()
        finally:
            shutil.rmtree(snap, ignore_errors=True)

    def rows(self, db, table, where=""):
        out = []
        for cid, blob in db.execute("SELECT class_id, features FROM %s %s" % (table, where)):
            s = decode(blob)
            if s is None or s not in self.cls_of:
                self.fail("%s holds a row that was never sent (feature 0 = %r)" % (table, s))
            out.append(s)
        return out

    def check_tables(self, db, cycle):
        ic = db.execute("PRAGMA integrity_check").fetchall()
        if ic != [("ok",)]:
            self.fail("integrity_check: %r" % ic)
        samples = self.rows(db, "samples", "WHERE learned = 0")
        other = self.rows(db, "samples", "WHERE learned != 0")   # quarantined (learned = 2)
        valid = self.rows(db, "validation")
        S, Q, V = set(samples), set(other), set(valid)
        if len(S) + len(Q) != len(set(samples + other)):
            self.fail("%d samples stored twice in samples"
                      % (len(samples) + len(other) - len(set(samples + other))))
        if len(V) != len(valid):
            self.fail("%d samples stored twice in validation" % (len(valid) - len(V)))
        if (S | Q) & V:
            self.fail("%d samples both in samples and in validation" % len((S | Q) & V))
        self.fig["quarantined"] = len(Q)
        if not V >= self.valid:
            self.fail("%d validation samples vanished" % len(self.valid - V))
        # Models committed since the last check (rounds), and runs.
        models = db.execute("SELECT version, current, metrics FROM models WHERE version > ? "
                            "ORDER BY version", (self.last_version,)).fetchall()
        runs = db.execute("SELECT id, ended, outcome FROM runs WHERE id > ? ORDER BY id",
                          (self.runs_seen,)).fetchall()
        if runs:
            self.runs_seen = runs[-1][0]
        if len(models) > 1:
            self.fail("%d model versions in one cycle, at most one round was requested"
                      % len(models))
        # This cycle's batches: acknowledged ones must be there (or learned),
        # the unacknowledged one all or nothing.
        mine = [b for b in self.batches if b[0] == cycle]
        acked_now = set(s for b in mine if b[2] for s in b[1])
        unacked = [b[1] for b in mine if not b[2]]
        if len(unacked) > 1:
            self.fail("more than one batch in flight")
        U = set(unacked[0]) if unacked else set()
        if U:
            self.fig["batches_unacknowledged"] += 1
        before = (self.pending | acked_now) - Q    # must all be accounted for
        present = S | Q | V
        new_present = present - self.pending - self.valid
        if not new_present <= acked_now | U:
            self.fail("%d samples appeared that were not sent this cycle"
                      % len(new_present - acked_now - U))
        U_seen = U & present
        self.resend_stored = True if U_seen else (False if not models else None)
        if U_seen:
            self.fig["unacknowledged_present"] += 1
        if not models:
            # No round committed: nothing left the pending set.
            if V != self.valid:
                self.fail("validation changed (%d -> %d rows) without a committed model"
                          % (len(self.valid), len(V)))
            missing = before - S
            if missing:
                self.fail("%d acknowledged samples lost without a committed round (e.g. %s)"
                          % (len(missing), sorted(missing)[:5]))
            if U_seen and U_seen != U:
                self.fail("unacknowledged batch partly stored (%d of %d)" % (len(U_seen), len(U)))
            if len(runs) > 0 and all(r[1] is None for r in runs):
                self.fig["kills_during_training"] += 1
                self.round_est *= 1.4  # aim later next time: about half the rounds commit
        else:
            version, current, metrics = models[0]
            m = json.loads(metrics)
            if current != 1:
                self.fail("model %d committed by a round is not current" % version)
            # Either the unacknowledged batch was committed (then it may have
            # been learned too) or it was not: one of the two must fit.
            errors = []
            for u_in in ((True, False) if U and not U_seen else (bool(U_seen),)):
                err = self.check_round(S, V, before | (U if u_in else set()), m)
                if err is None:
                    break
                errors.append(err)
            else:
                self.fail("round of model %d is not all or nothing: %s" % (version, "; ".join(errors)))
            self.fig["rounds_committed"] += 1
            self.fig["samples_learned"] += m["train_samples"]
            self.round_est = max(0.05, 0.8 * self.round_est)
            self.model_version = version
            self.last_version = version
            if any(r[1] is None for r in runs):
                self.fig["kills_after_commit_before_run_end"] += 1
        self.pending, self.valid = S, V
        self.fig["max_pending"] = max(self.fig["max_pending"], len(S))
        self.log("cycle %d: %d pending, %d validation, model %d, runs %s"
                 % (cycle, len(S), len(V), self.model_version, runs))

    def check_round(self, S, V, before, m):
        """None if one committed round explains the change, else why not."""
        R = before - S                         # left the pending set
        gained = V - self.valid
        if not gained <= R:
            return "%d validation rows did not come from the pending set" % len(gained - R)
        stay = before & S
        if R and stay and max(R) > min(stay):
            return "the round took sample %d but left the older %d pending" % (max(R), min(stay))
        # Holdout: every 5th sample of each class, by arrival.
        want = set()
        per = {}
        for s in sorted(R):
            k = self.cls_of[s]
            i = per.get(k, 0)
            per[k] = i + 1
            if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1:
                want.add(s)
        if gained != want:
            return "held out %d samples, expected %d" % (len(gained), len(want))
        learned = len(R) - len(gained)
        if learned != m.get("train_samples"):
            return "%d samples left the pending set, the model learned %s" % (
                learned, m.get("train_samples"))
        if len(V) != m.get("validation_samples"):
            return "validation holds %d rows, the round validated on %s" % (
                len(V), m.get("validation_samples"))
        return None

    def check_daemon(self):
        """The restarted daemon agrees with the last copy."""
        c = self.d.client(timeout=30)
        st = c.call("status")
        c.close()
        if st["samples_pending"] != len(self.pending):
            self.fail("status: %d pending, the database copy had %d"
                      % (st["samples_pending"], len(self.pending)))
        if st["validation_samples"] != len(self.valid):
            self.fail("status: %d validation samples, the copy had %d"
                      % (st["validation_samples"], len(self.valid)))
        if (st["model_version"] or 0) != self.model_version:
            self.fail("status: model %s, the copy had %d" % (st["model_version"], self.model_version))

    def run(self):
        t0 = time.time()
        try:
            for n in range(self.cycles):
                self.cycle(n)
            # Last: a clean restart and stop.
            self.d.start()
            self.check_daemon()
            if self.d.stop() != 0:
                self.fail("hdqtd did not stop cleanly")
            self.check_db(-1)
        finally:
            if self.timer:
                self.timer.cancel()
            self.d.cleanup()
        self.fig["elapsed_s"] = round(time.time() - t0, 1)
        return self.fig


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the daemon's folder")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else int(time.time()) % 100000
    print("soak: %d cycles, seed %d" % (a.cycles, seed), flush=True)
    try:
        fig = Soak(a.cycles, seed, keep=a.keep, verbose=a.verbose).run()
    except SoakFailure as e:
        print("FAIL:", e, flush=True)
        return 1
    print("soak: " + ", ".join("%s %s" % (k, v) for k, v in fig.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
