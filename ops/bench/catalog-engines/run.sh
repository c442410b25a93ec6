#!/usr/bin/env bash
# Builds catalog-engines and runs the sled-vs-redb comparison: for each engine
# the 50-cycle SIGKILL crash test, then a durable insert of COUNT records and a
# lookup run on the result, each in a fresh data directory under target/
# (same filesystem as this script; deleted afterwards). Prints one Markdown
# table on stdout; progress and the raw tool output go to stderr and to
# target/logs-*/.
#
# Usage: ./run.sh [COUNT]      (default 10000000)
# Memory: sled's RSS grows far past its cache capacity with this workload
# (~11.3 GiB peak at 4M records); 10M needs well over 24 GiB RAM — see README.
# Environment: SAMPLES (lookups, default 100000), SEED (crash-test kill
# schedule, default 42), ENGINES (default "redb sled").
set -euo pipefail
cd "$(dirname "$0")"

COUNT="${1:-10000000}"
SAMPLES="${SAMPLES:-100000}"
SEED="${SEED:-42}"
ENGINES="${ENGINES:-redb sled}"
CYCLES=50

cargo build --release --quiet
BIN=target/release/catalog-engines

RUN_ID="$(date +%Y%m%d-%H%M%S)-$$"
LOGDIR="target/logs-$RUN_ID"
mkdir -p "$LOGDIR"
# Every data directory of this run starts with this prefix, so the trap can
# remove them all even if a step fails half-way.
DATA_PREFIX="target/data-$RUN_ID"
cleanup() { rm -rf "$DATA_PREFIX"-*; }
trap cleanup EXIT

# run LOG ARGS...: runs the tool, copying its output to LOG and to stderr.
run() {
    local log="$1"
    shift
    echo "+ catalog-engines $*" >&2
    "$BIN" "$@" 2>&1 | tee "$log" >&2
}

# field LOG KEY: value of KEY= on the RESULT line in LOG.
field() {
    grep '^RESULT ' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}

mib() { awk -v k="$1" 'BEGIN { printf "%.0f MiB", k / 1024 }'; }

crate_version() {
    awk -v n="$1" '$0 == "name = \"" n "\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}

ROWS=""
NOTES=""
for engine in $ENGINES; do
    echo "=== $engine: crash test ($CYCLES cycles, seed $SEED)" >&2
    crash_dir="$DATA_PREFIX-$engine-crash"
    crash_log="$LOGDIR/$engine-crash.log"
    run "$crash_log" crash-test --engine "$engine" --dir "$crash_dir" --cycles "$CYCLES" --seed "$SEED"
    rm -rf "$crash_dir"

    echo "=== $engine: insert $COUNT records" >&2
    data_dir="$DATA_PREFIX-$engine-bench"
    insert_log="$LOGDIR/$engine-insert.log"
    lookup_log="$LOGDIR/$engine-lookup.log"
    run "$insert_log" insert --engine "$engine" --dir "$data_dir" --count "$COUNT"
    echo "=== $engine: lookup ($SAMPLES samples, fresh process)" >&2
    run "$lookup_log" lookup --engine "$engine" --dir "$data_dir" --count "$COUNT" --samples "$SAMPLES"
    rm -rf "$data_dir"

    ROWS+="| $engine $(crate_version "$engine")"
    ROWS+=" | $(field "$crash_log" missing) / $(field "$crash_log" damaged) / $(field "$crash_log" failed_opens)"
    ROWS+=" | $(field "$insert_log" rec_per_s)"
    ROWS+=" | $(field "$lookup_log" p50_us) µs / $(field "$lookup_log" p99_us) µs"
    ROWS+=" | $(field "$lookup_log" bytes_per_record)"
    ROWS+=" | $(mib "$(field "$insert_log" vmhwm_kib)")"
    ROWS+=" | $(mib "$(field "$lookup_log" vmrss_kib)")"
    ROWS+=" | $(field "$lookup_log" reopen_ms) ms |"$'\n'

    NOTES+="- $engine: crash test acknowledged $(field "$crash_log" acked) records;"
    NOTES+=" unacknowledged-but-present records $(field "$crash_log" unacked_whole) whole /"
    NOTES+=" $(field "$crash_log" unacked_partial) partial / $(field "$crash_log" unacked_damaged) damaged,"
    NOTES+=" partially present groups $(field "$crash_log" torn_groups);"
    NOTES+=" max checker reopen after kill $(field "$crash_log" max_reopen_ms) ms;"
    NOTES+=" insert $(field "$insert_log" elapsed_s) s;"
    NOTES+=" lookup max $(field "$lookup_log" max_us) µs;"
    NOTES+=" disk $(field "$lookup_log" disk_bytes) bytes ($(field "$lookup_log" disk_allocated_bytes) allocated)"$'\n'
done

echo "Records: $COUNT; lookups: $SAMPLES; crash cycles: $CYCLES (seed $SEED); cache 256 MiB each."
echo
echo "| engine | crash: acked missing / damaged / failed opens ($CYCLES cycles) | insert rec/s (durable, groups of 1000) | lookup p50 / p99 | bytes on disk per record | peak RSS insert | RSS after lookups | reopen time |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s' "$ROWS"
echo
printf '%s' "$NOTES"
echo "- logs: $LOGDIR/"
