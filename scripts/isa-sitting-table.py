#!/usr/bin/env python3
"""The markdown table of one sitting of scripts/isa-sitting.sh OUT: per network, batch and
thread count, lowprec's median ms per training iteration in each round (ratio to PyTorch fp32 in
the same round), for this checkout and the baseline if the sitting had one, then PyTorch's."""
import glob
import json
import re
import sys

NETS = {"vgg16_b32": "VGG16 b32", "vgg16_b128": "VGG16 b128",
        "preresnet20_b128": "PreResNet-20 b128", "logreg_b128": "MNIST LogReg b128"}


def fmt(ms):
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def main(out):
    meta = dict(line.rstrip("\n").split(" ", 1) for line in open(f"{out}/meta") if " " in line)
    bins = ["head"] + (["baseline"] if "baseline" in meta else [])
    ours = {}  # (net, threads, bin, precision) -> {round: ms}
    machines = {}  # bin -> the processor and kernel families its records name
    for f in glob.glob(f"{out}/*-r*.json"):
        m = re.fullmatch(r"(head|baseline)-(\w+)-r(\d+)\.json", f.rsplit("/", 1)[-1])
        if not m:
            continue
        b, net, r = m.group(1), m.group(2), int(m.group(3))
        for rec in json.load(open(f)):
            key = (net, rec["threads"], b, rec["precision"])
            ours.setdefault(key, {})[r] = rec["median_ms"]
            if "machine" in rec:
                machines.setdefault(b, set()).add(rec["machine"])
    peer = {}  # (net, threads) -> {round: ms}; the peer prints each record twice
    capabilities = set()
    for f in glob.glob(f"{out}/peer-*-r*.jsonl"):
        m = re.fullmatch(r"peer-(\w+)-r(\d+)\.jsonl", f.rsplit("/", 1)[-1])
        net, r = m.group(1), int(m.group(2))
        for line in open(f):
            rec = json.loads(line)
            if rec.get("kind") == "env":
                capabilities.add(rec.get("torch_cpu_capability", "?"))
            elif rec.get("status") == "ok" and "median_ms" in rec:
                peer.setdefault((net, rec["threads"]), {})[r] = rec["median_ms"]
    label = {"head": meta["head"], "baseline": meta.get("baseline", "")}
    cols = [(b, p) for p in ("bfp8", "fp32") for b in bins]
    print(f"{meta.get('cpu', '?')}; cap {meta.get('cap', '?')}; PyTorch capability "
          f"{'/'.join(sorted(capabilities)) or '?'}; {meta.get('start', '?')} .. "
          f"{meta.get('end', 'unfinished')}")
    for b in bins:
        for m in sorted(machines.get(b, ())):
            print(f"{label[b]}: {m}")
    print()
    print("| network | threads | " + " | ".join(f"{p} {label[b]}" for b, p in cols)
          + " | PyTorch fp32 |")
    print("| --- | --- | " + " | ".join("---" for _ in cols) + " | --- |")
    for net in NETS:
        for t in (1, 2):
            pt = peer.get((net, t), {})
            if not pt:
                continue
            cells = []
            for b, p in cols:
                v = ours.get((net, t, b, p), {})
                cells.append(", ".join(f"{fmt(v[r])} ({v[r] / pt[r]:.2f}x)"
                                       for r in sorted(v) if r in pt) or "-")
            print(f"| {NETS[net]} | {t} | " + " | ".join(cells) + " | "
                  + ", ".join(fmt(pt[r]) for r in sorted(pt)) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: isa-sitting-table.py OUT")
    main(sys.argv[1])
