#!/usr/bin/env python3
"""PyTorch's fp32 time per convolution layer of VGG16 (SWALP's CIFAR variant), forward and
backward, to set beside `lowprec profile vgg16-cifar --batch B --precision fp32`: where the
whole-step ratio of issue 17's table comes from, layer by layer.

    PEER/venv/bin/python scripts/peer-conv-layers.py --batch 32 --threads 1 [--iters 5]

Each layer is one `nn.Conv2d(cin, cout, 3, padding=1)` (+ bias) on a random input of the layer's
shape; backward computes the input's gradient (except for the first layer, as in training) and
the weight and bias gradients. Cap PyTorch to AVX2 the way `scripts/isa-sitting.sh --cap avx2`
does, with ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2.
Prints one line per layer (median ms of the timed iterations) and the capability PyTorch used.
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn

# (name, cin, cout, map side) of VGG16LP's 13 convolutions on 32x32 inputs.
LAYERS = [
    ("conv1", 3, 64, 32), ("conv2", 64, 64, 32),
    ("conv3", 64, 128, 16), ("conv4", 128, 128, 16),
    ("conv5", 128, 256, 8), ("conv6", 256, 256, 8), ("conv7", 256, 256, 8),
    ("conv8", 256, 512, 4), ("conv9", 512, 512, 4), ("conv10", 512, 512, 4),
    ("conv11", 512, 512, 2), ("conv12", 512, 512, 2), ("conv13", 512, 512, 2),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5, help="timed iterations per layer (median)")
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    if a.batch < 1 or a.threads < 1 or a.iters < 1 or a.warmup < 0:
        ap.error("--batch, --threads and --iters must be positive, --warmup non-negative")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cap = torch.backends.cpu.get_cpu_capability()
    print(f"PyTorch {torch.__version__}, capability {cap}, {a.threads} thread(s), batch {a.batch}")
    print(f"{'layer':<8} {'shape':<22} {'fwd ms':>8} {'bwd ms':>8} {'total':>8}")
    tot_f = tot_b = 0.0
    for i, (name, cin, cout, side) in enumerate(LAYERS):
        conv = nn.Conv2d(cin, cout, 3, padding=1)
        x = torch.randn(a.batch, cin, side, side, requires_grad=i > 0)
        fwd, bwd = [], []
        for it in range(a.warmup + a.iters):
            conv.zero_grad(set_to_none=True)
            x.grad = None
            t0 = time.perf_counter()
            y = conv(x)
            t1 = time.perf_counter()
            y.backward(torch.ones_like(y))
            t2 = time.perf_counter()
            if it >= a.warmup:
                fwd.append((t1 - t0) * 1e3)
                bwd.append((t2 - t1) * 1e3)
        f, b = statistics.median(fwd), statistics.median(bwd)
        tot_f += f
        tot_b += b
        shape = f"{cin}->{cout} {side}x{side}"
        print(f"{name:<8} {shape:<22} {f:>8.2f} {b:>8.2f} {f + b:>8.2f}")
    print(f"{'total':<8} {'':<22} {tot_f:>8.2f} {tot_b:>8.2f} {tot_f + tot_b:>8.2f}")


if __name__ == "__main__":
    main()
