#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""PyTorch fp32 training step on hdqt-bench's model, for the side-by-side
comparison of scripts/bench.sh: MLP 166-512-512-12 (bias-free, ReLU), batch
128, SGD with momentum 0.9 and weight decay 2e-4 (hdqt_sgd_default), the
same 8 random batches in turn, one warm-up second.  Prints one JSON object:
{"threads": T, "train_samples_per_s": ..., "ms_per_step": ...}.

Debian's python3-torch (CPU, OpenBLAS); scripts/bench.sh installs it, the
test command never needs it."""
import argparse
import json
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(166, 512, bias=False), torch.nn.ReLU(),
        torch.nn.Linear(512, 512, bias=False), torch.nn.ReLU(),
        torch.nn.Linear(512, 12, bias=False))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    X = torch.randn(8, 128, 166)
    y = torch.randint(0, 12, (8, 128))

    def step(k):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(X[k]), y[k])
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        for k in range(8):
            step(k)
    steps = 0
    t0 = time.perf_counter()
    while True:
        for k in range(8):
            step(k)
        steps += 8
        t = time.perf_counter() - t0
        if t >= a.seconds:
            break
    print(json.dumps({"threads": a.threads, "train_samples_per_s": round(steps * 128 / t),
                      "ms_per_step": round(1e3 * t / steps, 3)}))


if __name__ == "__main__":
    main()
