#!/usr/bin/env bash
# One sitting of the CNN speed comparison (issue 4): for each network and batch, lowprec's
# training iteration (fp32 and bfp8, 1 and 2 threads) and then the PyTorch peer's for the same
# network and batch, so that each ratio compares runs minutes apart on this shared host; then
# VGG16 b128's peak memory. Ratios: `scripts/cnn-sitting-summary.py OUT`.
#
#   scripts/cnn-sitting.sh OUT [PEER_DIR]
#
# PEER_DIR holds peer_bench.py and the venv its setup.sh makes (`bash setup.sh PEER_DIR` on a
# copy of ../shared/peer, which CI keeps read-only); default: ../peer beside the repository.
set -euo pipefail
out=${1:?usage: cnn-sitting.sh OUT [PEER_DIR]}
root="$(cd "$(dirname "$0")/.." && pwd)"
peer="$(cd "${2:-$root/../peer}" && pwd)"
[ -x "$peer/venv/bin/python" ] || { echo "no peer venv in $peer (run setup.sh there)"; exit 1; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"
cd "$root"
cargo build --release --quiet
L="$root/target/release/lowprec"
git rev-parse --short HEAD > "$out/commit"
date -u +%FT%TZ > "$out/start"
run_peer() {
  (cd "$peer" && ./venv/bin/python peer_bench.py --configs "$1" --threads 1,2 --iters 5 \
    --repeats 2 --jsonl "$out/peer-$1.jsonl" >> "$out/peer.txt" 2>&1)
}
echo "VGG16 b32 ..."
"$L" bench train vgg16-cifar --batch 32 --threads 1,2 --precision fp32,bfp8 --iters 6 \
  --warmup 1 --json "$out/vgg16_b32.json" > "$out/vgg16_b32.txt" 2>&1
run_peer vgg16_b32_fp32
echo "PreResNet-20 b128 ..."
"$L" bench train preresnet20-cifar --batch 128 --threads 1,2 --precision fp32,bfp8 --iters 10 \
  --warmup 2 --json "$out/preresnet20.json" > "$out/preresnet20.txt" 2>&1
run_peer preresnet20_b128_fp32
echo "VGG16 b128 ..."
"$L" bench train vgg16-cifar --batch 128 --threads 1,2 --precision fp32,bfp8 --iters 4 \
  --warmup 1 --json "$out/vgg16_b128.json" > "$out/vgg16_b128.txt" 2>&1
run_peer vgg16_b128_fp32
for p in bfp8 fp32; do
  "$L" profile vgg16-cifar --batch 128 --precision "$p" --threads 2 --iters 2 \
    --json "$out/profile_vgg16_b128_$p.json" > "$out/profile_vgg16_b128_$p.txt" 2>&1
done
date -u +%FT%TZ > "$out/end"
python3 "$root/scripts/cnn-sitting-summary.py" "$out"
