#!/usr/bin/env python3
"""Cut SigMF recordings (cf32_le) into windows of feature vectors, the form RF data sets are
usually shipped in, for `lowprec rf detect --vectors`.

    sigmf-to-vectors.py OUT_PREFIX REC [REC ...] [--window 16] [--train-windows N]

Each REC is a SigMF base name (REC.sigmf-data + REC.sigmf-meta). Every window of `--window`
complex samples (stride = window) becomes one row of 2 x window float32 values (I, Q
interleaved); its label is 1 when at least half of its samples lie inside an annotation of the
recording, else 0. With --train-windows N only the first N windows of the first recording are
kept (the training batch), then every window of the others. Writes OUT_PREFIX-x.npy (float32,
[rows, 2 x window]) and OUT_PREFIX-y.npy (uint8, [rows]). Needs numpy only.
"""
import argparse
import json

import numpy as np


def windows(base, w):
    iq = np.fromfile(base + ".sigmf-data", dtype="<f4")
    meta = json.load(open(base + ".sigmf-meta"))
    n = iq.size // 2 // w
    x = iq[: n * 2 * w].reshape(n, 2 * w)
    inside = np.zeros(iq.size // 2, dtype=bool)
    for a in meta.get("annotations", []):
        s = a["core:sample_start"]
        inside[s : s + a.get("core:sample_count", 0)] = True
    y = inside[: n * w].reshape(n, w).mean(axis=1) >= 0.5
    return x, y.astype(np.uint8)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("recordings", nargs="+")
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--train-windows", type=int, default=0)
    a = p.parse_args()
    xs, ys = [], []
    for k, base in enumerate(a.recordings):
        x, y = windows(base, a.window)
        if k == 0 and a.train_windows:
            x, y = x[: a.train_windows], y[: a.train_windows]
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    np.save(a.out + "-x.npy", x.astype(np.float32))
    np.save(a.out + "-y.npy", y)
    print(f"{a.out}-x.npy {x.shape}, {int(y.sum())} anomalous")


if __name__ == "__main__":
    main()
