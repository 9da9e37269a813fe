#!/bin/bash
# F1 of `lowprec rf experiment` over recording seeds 0-9 for one precision policy: mean, worst
# and each, with the threshold-free figures (best-threshold F1, ROC AUC) and the median+6MAD
# rule's F1 from final.json. Usage: scripts/rf-seed-sweep.sh OUT PRECISION [experiment args...]
set -euo pipefail
out=$1; prec=$2; shift 2
lowprec=${LOWPREC:-target/release/lowprec}
for s in 0 1 2 3 4 5 6 7 8 9; do
  "$lowprec" rf experiment --out "$out/$prec-$s" --fpga none --threads 1 --precisions "$prec" \
    --seed "$s" "$@" > /dev/null 2>&1
done
python3 - "$out" "$prec" <<'PY'
import json, sys
out, prec = sys.argv[1], sys.argv[2]
rows = [json.load(open(f"{out}/{prec}-{s}/final.json"))[prec] for s in range(10)]
def col(f): return [f(r) for r in rows]
for name, v in [("F1 (p99)", col(lambda r: r["test"]["f1"])),
                ("best-threshold F1", col(lambda r: r["test"]["best_f1"])),
                ("ROC AUC", col(lambda r: r["test"]["roc_auc"])),
                ("PR AUC", col(lambda r: r["test"]["pr_auc"])),
                ("F1 (median+6mad)", col(lambda r: r["rules"][2]["f1"]))]:
    print(f"{prec} {name}: mean {sum(v)/len(v):.3f} worst {min(v):.3f} | " + " ".join(f"{x:.2f}" for x in v))
PY
