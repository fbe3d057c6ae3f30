#!/usr/bin/env bash
# The service-level benchmark (issue 16): builds the service three ways
# (this crate, OpenTelemetry, telemetry compiled out), runs rounds that
# interleave the four builds (on, disabled, off, otel) of both frameworks,
# and prints a table per framework. What it measures: src/main.rs.
#
#   benches/service/run.sh                        # 3 rounds x 10 s x 8 runs
#   ROUNDS=1 SECONDS=2 benches/service/run.sh     # a smoke run
#
# Environment (defaults in brackets): ROUNDS [3], SECONDS [10] (the measured
# window of each run), WARMUP [2], CONCURRENCY [32], FRAMEWORKS ["actix axum"],
# BUILDS ["on disabled off otel"], OUT [a new directory under /tmp: the
# binaries, results.jsonl, each service's log, report.txt], CARGO_TARGET_DIR
# [benches/service/target].

# First of all: bash's own SECONDS counts up from the value it was given.
measured=$(printenv SECONDS || echo 10)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
rounds=${ROUNDS:-3}
warmup=${WARMUP:-2}
concurrency=${CONCURRENCY:-32}
frameworks=${FRAMEWORKS:-actix axum}
builds=${BUILDS:-on disabled off otel}
out=${OUT:-$(mktemp -d /tmp/service-bench.XXXXXX)}
target=${CARGO_TARGET_DIR:-$here/target}
mkdir -p "$out/bin" "$out/logs"

# Three binaries side by side, one per feature set.
for feature in nr otel none; do
    flags=()
    [ "$feature" != none ] && flags=(--features "$feature")
    started=$(date +%s)
    CARGO_TARGET_DIR=$target cargo build --release --quiet --manifest-path "$here/Cargo.toml" "${flags[@]}"
    cp "$target/release/service-bench" "$out/bin/service-bench-$feature"
    echo "built $feature in $(($(date +%s) - started)) s"
done

binary_of() {
    case $1 in
        on | disabled) echo "$out/bin/service-bench-nr" ;;
        otel) echo "$out/bin/service-bench-otel" ;;
        off) echo "$out/bin/service-bench-none" ;;
        *) echo "unknown build $1" >&2; exit 2 ;;
    esac
}

results=$out/results.jsonl
: >"$results"
read -r -a build_list <<<"$builds"
for round in $(seq 1 "$rounds"); do
    for framework in $frameworks; do
        # Each round starts at another build, so none always runs first.
        n=${#build_list[@]}
        for i in $(seq 0 $((n - 1))); do
            build=${build_list[$(((i + round - 1) % n))]}
            "$out/bin/service-bench-none" drive \
                --server "$(binary_of "$build")" --build "$build" --framework "$framework" \
                --seconds "$measured" --warmup "$warmup" --concurrency "$concurrency" \
                --round "$round" --out "$results" --log-dir "$out/logs"
        done
    done
done

"$out/bin/service-bench-none" report "$results" | tee "$out/report.txt"
echo
echo "results, logs and report in $out"
