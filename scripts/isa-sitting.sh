#!/usr/bin/env bash
# One sitting of issue 17's speed table: per round and network, lowprec's training step (fp32
# and bfp8, 1 and 2 threads) for this checkout, then for a baseline revision if given, then the
# PyTorch peer's, so that each ratio compares runs minutes apart on a shared host. With `--cap
# avx2` both lowprec builds are `--no-default-features` (the `gemm` crate's f32 kernels held to
# AVX2/FMA) and run under LOWPREC_ISA=avx2, and PyTorch is held to AVX2 the same way: an
# AVX2-only processor's whole path, measured on an AVX-512 one. The markdown table:
# `scripts/isa-sitting-table.py OUT`.
#
#   scripts/isa-sitting.sh OUT [--cap avx2] [--rounds N] [--baseline REV] [--nets LIST] [--peer DIR]
#
# LIST: comma-separated, from vgg16_b32, preresnet20_b128, logreg_b128, vgg16_b128 (default: the
# first three). PEER_DIR holds peer_bench.py and the venv its setup.sh makes (default: ../peer
# beside the repository). REV is built once in a temporary worktree, beside this checkout's build.
set -euo pipefail
usage="usage: isa-sitting.sh OUT [--cap avx2] [--rounds N] [--baseline REV] [--nets LIST] [--peer DIR]"
out=${1:?$usage}
shift
root="$(cd "$(dirname "$0")/.." && pwd)"
cap="" rounds=2 baseline="" nets="vgg16_b32,preresnet20_b128,logreg_b128" peer="$root/../peer"
while [ $# -gt 0 ]; do
  case "$1" in
    --cap) cap=${2:?$usage}; shift 2 ;;
    --rounds) rounds=${2:?$usage}; shift 2 ;;
    --baseline) baseline=${2:?$usage}; shift 2 ;;
    --nets) nets=${2:?$usage}; shift 2 ;;
    --peer) peer=${2:?$usage}; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
case "$cap" in "" | avx2) ;; *) echo "--cap takes avx2 only, not '$cap'" >&2; exit 2 ;; esac
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds must be a positive integer" >&2; exit 2; }
[ -x "$peer/venv/bin/python" ] || { echo "no peer venv in $peer (run setup.sh there)" >&2; exit 1; }
peer="$(cd "$peer" && pwd)"

# name -> preset batch iters warmup peer-config peer-iters peer-repeats
declare -A spec=(
  [vgg16_b32]="vgg16-cifar 32 6 1 vgg16_b32_fp32 5 2"
  [preresnet20_b128]="preresnet20-cifar 128 10 2 preresnet20_b128_fp32 5 2"
  [logreg_b128]="mnist-logreg 128 500 20 logreg_b128_fp32 200 3"
  [vgg16_b128]="vgg16-cifar 128 4 1 vgg16_b128_fp32 3 2"
)
IFS=, read -r -a netlist <<< "$nets"
for n in "${netlist[@]}"; do
  [ -n "${spec[$n]:-}" ] || { echo "unknown network '$n' (see --nets in the header)" >&2; exit 2; }
done

mkdir -p "$out"
out="$(cd "$out" && pwd)"
features=()
envs=()
if [ "$cap" = avx2 ]; then
  features=(--no-default-features)
  envs=(LOWPREC_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2)
fi

cd "$root"
tgt="$root/target/isa-sitting"
cargo build --release --quiet "${features[@]}" --target-dir "$tgt/head"
bins=(head)
if [ -n "$baseline" ]; then
  wt="$(mktemp -d)"
  trap 'git -C "$root" worktree remove --force "$wt" >/dev/null 2>&1 || true' EXIT
  git worktree add --detach --quiet "$wt" "$baseline"
  (cd "$wt" && cargo build --release --quiet "${features[@]}" --target-dir "$tgt/baseline")
  bins+=(baseline)
fi

{
  echo "head $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo +changes)"
  [ -n "$baseline" ] && echo "baseline $(git rev-parse --short "$baseline")"
  echo "cap ${cap:-none}"
  echo "cpu $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | xargs) model $(grep -m1 '^model\s' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "start $(date -u +%FT%TZ)"
} > "$out/meta"

for r in $(seq 1 "$rounds"); do
  for n in "${netlist[@]}"; do
    read -r preset batch iters warmup pcfg piters prep <<< "${spec[$n]}"
    for b in "${bins[@]}"; do
      echo "round $r: $n, lowprec $b ..."
      env "${envs[@]}" "$tgt/$b/release/lowprec" bench train "$preset" --batch "$batch" --threads 1,2 \
        --precision fp32,bfp8 --iters "$iters" --warmup "$warmup" \
        --json "$out/$b-$n-r$r.json" >> "$out/log.txt" 2>&1 < /dev/null
    done
    echo "round $r: $n, PyTorch ..."
    (cd "$peer" && env "${envs[@]}" ./venv/bin/python peer_bench.py --configs "$pcfg" \
      --threads 1,2 --iters "$piters" --repeats "$prep" --jsonl "$out/peer-$n-r$r.jsonl" \
      >> "$out/log.txt" 2>&1 < /dev/null)
  done
done
echo "end $(date -u +%FT%TZ)" >> "$out/meta"
python3 "$root/scripts/isa-sitting-table.py" "$out"
