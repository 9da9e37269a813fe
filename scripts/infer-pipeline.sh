#!/usr/bin/env bash
# PTQ, retraining, inference and the precision report for one fp32 checkpoint.
# usage: scripts/infer-pipeline.sh LOWPREC CHECKPOINT OUTDIR EPOCHS [retrain options...]
set -euo pipefail
bin=$1; ck=$2; out=$3; epochs=$4; shift 4
mkdir -p "$out"
for spec in "int5bfp int5bfp" "int4bfp int4bfp" "int4bfp int5bfp" "int8bfp int8bfp" "int7bfp int7bfp"; do
  set -- $spec "$@"
  w=$1; a=$2; shift 2
  name="w-$w.a-$a"
  if [ ! -f "$out/$name.lpq" ]; then
    "$bin" quantize-model "$ck" --weights "$w" --activations "$a" --first-last fp32 \
      --out "$out/$name.lpq" --threads 1 > "$out/$name.ptq.txt" 2> "$out/$name.ptq.log"
  fi
  if [ ! -f "$out/retrain-$name/retrain.json" ]; then
    "$bin" retrain "$out/$name.lpq" --epochs "$epochs" --out "$out/retrain-$name" --threads 1 --quiet --resume "$@" \
      > "$out/retrain-$name.txt" 2> "$out/retrain-$name.log"
  fi
done
