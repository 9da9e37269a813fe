#!/usr/bin/env bash
# Paper 001's low-bit formats end to end for one fp32 checkpoint: PTQ (quantize-model), the
# packed engine against the fp32 model (infer --check), retraining, inference of the retrained
# model, and the precision report with the low-bit rows.
# usage: scripts/lowbit-pipeline.sh LOWPREC CHECKPOINT OUTDIR EPOCHS [retrain options...]
# e.g.   scripts/lowbit-pipeline.sh target/release/lowprec out/fp32/lenet5/checkpoint.safetensors out/lowbit/lenet5 2
set -euo pipefail
bin=$1; ck=$2; out=$3; epochs=$4; shift 4
mkdir -p "$out"
retrained=()
for spec in "twn:channel a2:fit" "binary:channel a2:fit" "binary:channel a1:fit" "ternary a2"; do
  w=${spec% *}; a=${spec#* }
  name="w-${w//:/-}.a-${a//:/-}"
  if [ ! -f "$out/$name.lpq" ]; then
    "$bin" quantize-model "$ck" --weights "$w" --activations "$a" \
      --out "$out/$name.lpq" --threads 1 > "$out/$name.ptq.txt" 2> "$out/$name.ptq.log"
  fi
  "$bin" infer "$out/$name.lpq" --threads 1 --check 64 --json "$out/$name.infer.json" > "$out/$name.infer.txt"
  if [ ! -f "$out/retrain-$name/retrain.json" ]; then
    "$bin" retrain "$out/$name.lpq" --epochs "$epochs" --out "$out/retrain-$name" --threads 1 --quiet --resume "$@" \
      > "$out/retrain-$name.txt" 2> "$out/retrain-$name.log"
  fi
  "$bin" infer "$out/retrain-$name/model.lpq" --threads 1 --check 64 \
    --json "$out/retrain-$name.infer.json" > "$out/retrain-$name.infer.txt"
  retrained+=("$out/retrain-$name/retrain.json")
  grep -h "accuracy" "$out/$name.infer.txt" "$out/retrain-$name.infer.txt" | sed "s|^|$name: |"
done
"$bin" report precision "$ck" --out "$out/report" --threads 1 --retrained "${retrained[@]}" > "$out/report.txt"
cat "$out/report/report.md"
