#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60), one after another, and
# prints a summary line per target: runs, seconds, and whether it crashed.
#
#   scripts/fuzz.sh [--dev] [SECONDS] [TARGET...]
#
# --dev builds the targets unoptimised (`cargo fuzz build --dev`): a fraction of the build time
# and fewer runs per second, for a brief smoke run such as CI's.
#
# Bound: every target runs under libFuzzer's -rss_limit_mb and -malloc_limit_mb of 2048 MiB
# (a header claiming more must be an error, not an allocation) and -timeout of 30 s per input.
# The committed seeds (fuzz/corpus/<target>) are read, never written: new inputs go to
# fuzz/work/<target>, crashes to fuzz/artifacts/<target>/ (both ignored by git), logs to
# fuzz/work/logs/<target>.log. Reproduce a crash with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run -a <target> fuzz/artifacts/<target>/<file>`.
#
# Needs `cargo install cargo-fuzz`. cargo-fuzz passes nightly-only flags (sanitizer, coverage);
# RUSTC_BOOTSTRAP=1 lets a stable toolchain accept them.
set -uo pipefail
cd "$(dirname "$0")/.."

profile=release
build_flags=(-a)
if [ "${1:-}" = "--dev" ]; then
    profile=debug
    build_flags+=(--dev)
    shift
fi
secs=${1:-60}
shift || true
limit_mb=2048
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never
# as `cargo fuzz run` sets it
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo fuzz not installed (cargo install cargo-fuzz)" >&2
    exit 2
fi
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# -a: debug assertions (and so overflow checks) on, as in `cargo test`.
start=$(date +%s)
if ! cargo fuzz build "${build_flags[@]}" </dev/null; then
    echo "fuzz: building the targets failed" >&2
    exit 1
fi
echo "fuzz: built ($profile) in $(($(date +%s) - start)) s"
# where cargo put them: CARGO_TARGET_DIR when set, else the fuzz crate's own target folder
target_dir=${CARGO_TARGET_DIR:-fuzz/target}
bin_dir=$target_dir/$(rustc -vV | sed -n 's/^host: //p')/$profile

mkdir -p fuzz/work/logs
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/work/$t" "fuzz/corpus/$t"
    log="fuzz/work/logs/$t.log"
    t0=$(date +%s)
    mkdir -p "fuzz/artifacts/$t"
    # the binary `cargo fuzz build` made (what `cargo fuzz run -a` runs, without rebuilding)
    "$bin_dir/$t" -artifact_prefix="fuzz/artifacts/$t/" "fuzz/work/$t" "fuzz/corpus/$t" \
        -max_total_time="$secs" -rss_limit_mb=$limit_mb -malloc_limit_mb=$limit_mb \
        -timeout=30 -print_final_stats=1 </dev/null >"$log" 2>&1
    rc=$?
    wall=$(($(date +%s) - t0))
    runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
    ran=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -n 1)
    if [ "$rc" -eq 0 ]; then
        status="ok, 0 crashes"
    else
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        status="CRASH (exit $rc): ${artifact:-see $log}"
        failed+=("$t")
    fi
    line=$(printf '%-17s %10s runs %5s s  %s' "$t" "${runs:-?}" "${ran:-$wall}" "$status")
    echo "fuzz: $line"
    summary+=("$line")
done

echo
echo "fuzz summary (${secs} s per target, rss/malloc limit ${limit_mb} MiB):"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: ${#failed[@]} target(s) crashed: ${failed[*]} (logs in fuzz/work/logs)" >&2
    exit 1
fi
