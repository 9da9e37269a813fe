#!/usr/bin/env python3
"""Ratios of one CNN sitting (scripts/cnn-sitting.sh OUT): lowprec's medians against the
PyTorch peer's of the same sitting, and VGG16 b128's peak memory against the peer's."""
import glob
import json
import sys

out = sys.argv[1]
peer = {}
for f in glob.glob(f"{out}/peer-*.jsonl"):
    for line in open(f):
        j = json.loads(line)
        if j.get("status") == "ok" and "median_ms" in j:
            peer[(j["config"], j["threads"])] = (j["median_ms"], j["peak_rss_mb"])
ours = {}
for name in ("vgg16_b32", "preresnet20", "vgg16_b128"):
    for r in json.load(open(f"{out}/{name}.json")):
        ours[(r["config"], r["batch"], r["precision"], r["threads"])] = r["median_ms"]
print(f"commit {open(out + '/commit').read().strip()}, "
      f"{open(out + '/start').read().strip()} .. {open(out + '/end').read().strip()}")
for net, batch, cfg in (("vgg16-cifar", 32, "vgg16_b32_fp32"),
                        ("vgg16-cifar", 128, "vgg16_b128_fp32"),
                        ("preresnet20-cifar", 128, "preresnet20_b128_fp32")):
    for t in (1, 2):
        pt = peer[(cfg, t)][0]
        q, f = ours[(net, batch, "bfp8", t)], ours[(net, batch, "fp32", t)]
        print(f"{net} b{batch} {t} thread(s): bfp8 {q:.1f} ms ({q / pt:.2f}x), "
              f"fp32 {f:.1f} ms ({f / pt:.2f}x), PyTorch {pt:.1f} ms")
for p in ("bfp8", "fp32"):
    prof = json.load(open(f"{out}/profile_vgg16_b128_{p}.json"))
    print(f"VGG16 b128 {p} peak RSS {prof['peak_rss_mb']:.0f} MB")
print("PyTorch VGG16 b128 peak RSS "
      + " / ".join(f"{peer[('vgg16_b128_fp32', t)][1]:.0f}" for t in (1, 2)) + " MB")
