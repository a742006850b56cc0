# SPDX-License-Identifier: MIT
"""Daemon smoke test for a cross-built hdqtd under qemu-user (scripts/arm.sh).

usage: smoke.py HDQTD_BINARY [QEMU_PREFIX...]

Starts hdqtd on a temporary socket and database through the given prefix
(e.g. qemu-aarch64 -L /usr/aarch64-linux-gnu), adds three classes, sends
HAPT windows from data/hapt-subset, trains one small round, predicts, checks
that status and the ready line name the kernel HDQT_KERNEL asked for (when
set), and stops it with SIGTERM.  Standard library only; reuses the
integration tests' harness.  Exit 0 on success."""
import os
import stat
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import hdqtd_harness as h  # noqa: E402

SETS = ["training.auto=no", "training.epochs=10", "model.hidden=128,128", "training.batch=64"]
CLASSES = {1: "WALKING", 4: "SITTING", 6: "LAYING"}
PER_CLASS = 100


def main():
    binary, prefix = sys.argv[1], sys.argv[2:]
    t0 = time.time()
    # The harness starts one executable: a wrapper that execs qemu, so
    # SIGTERM reaches qemu, which passes it to hdqtd.
    tmp = tempfile.mkdtemp(prefix="hdqtd-arm-")
    wrapper = os.path.join(tmp, "hdqtd")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec %s \"$@\"\n" % " ".join([*prefix, binary]))
    os.chmod(wrapper, stat.S_IRWXU)
    h.HDQTD = wrapper
    want = os.environ.get("HDQT_KERNEL", "")
    d = h.Daemon(*SETS, folder=os.path.join(tmp, "d"))
    os.mkdir(d.dir)
    try:
        d.start()
        c = d.client(timeout=300)
        st = c.call("status")
        kernel = st.get("kernel")
        print("status: kernel %s" % kernel)
        assert kernel, st
        if want:
            assert kernel == want, "status kernel %r, HDQT_KERNEL=%r" % (kernel, want)
        for name in CLASSES.values():
            c.call("class.add", {"name": name})
        wins = h.hapt_windows(activities=set(CLASSES))
        train, test = [], []
        for a in CLASSES:
            mine = [w for w in wins if w[0] == a and w[1] not in h.TEST_USERS]
            train += mine[:PER_CLASS]
            test += [w for w in wins if w[0] == a and w[1] in h.TEST_USERS][:20]
        n = 0
        for i in range(0, len(train), 60):
            r = c.call("sample.add", {"samples": [{"class": CLASSES[a], "window": rows}
                                                  for a, _, rows in train[i:i + 60]]})
            n += r["accepted"]
        assert n == len(train), (n, len(train))
        ev = h.train_and_wait(c, timeout=400)
        assert ev["outcome"] == "accepted", ev
        r = c.call("predict", {"inputs": [{"window": rows} for _, _, rows in test]})
        preds = r["predictions"]
        assert len(preds) == len(test) and r["model_version"] == ev["model_version"], r
        hit = sum(p["class"] == CLASSES[a] for p, (a, _, _) in zip(preds, test))
        acc = 100.0 * hit / len(test)
        print("round: %d samples, model %s, held-out accuracy %.1f%% (chance 33%%)"
              % (n, ev["model_version"], acc))
        assert acc > 50.0, acc
        st = c.call("status")
        assert st["samples_pending"] == 0 and st["model_version"] == ev["model_version"], st
        c.close()
        rc = d.stop(timeout=120)
        assert rc == 0, "hdqtd exited with %s after SIGTERM" % rc
        assert not os.path.exists(d.sock), "socket file left behind"
        log = d.read_log()
        assert "kernel %s" % kernel in log, log[-2000:]
        print("smoke: OK in %.1f s (kernel %s)" % (time.time() - t0, kernel))
        return 0
    except Exception:
        sys.stderr.write(d.read_log()[-4000:])
        raise
    finally:
        d.cleanup()
        try:
            os.unlink(wrapper)
            os.rmdir(tmp)
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
