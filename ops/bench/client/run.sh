#!/usr/bin/env bash
# `ds get` and `ds put` of one large file against curl doing the same, on the same release-built
# dataserver started by this script on 127.0.0.1, in the same run. Prints the throughput of each
# and the ratio ds / curl (1.0 = as fast as curl; the target is at least 1.0). See README.md.
#
# Usage: ops/bench/client/run.sh            (Markdown report on stdout, progress on stderr)
# Environment:
#   SIZE_MIB  size of the file in MiB (default 1024)
#   REPS      timed runs of each transfer; the median is reported (default 3)
#   WORK_DIR  where the data directory and files go (default: a new directory under /tmp;
#             it needs about 4 × SIZE_MIB of free space)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
SIZE_MIB="${SIZE_MIB:-1024}"
REPS="${REPS:-3}"

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
[[ "$SIZE_MIB" =~ ^[1-9][0-9]*$ ]] || die "SIZE_MIB must be a positive number"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive number"
command -v curl >/dev/null || die "curl is needed (apt-get install curl)"

log "building dataserver and ds (cargo build --release)"
(cd "$ROOT" && cargo build --release --locked -p daemon --bin dataserver -p client --bin ds) >&2
target="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$target" == /* ]] || target="$ROOT/$target"
DATASERVER="$target/release/dataserver"
DS="$target/release/ds"

WORK="${WORK_DIR:-$(mktemp -d /tmp/ds-bench.XXXXXX)}"
mkdir -p "$WORK"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    [[ -n "${WORK_DIR:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT

log "starting the dataserver in $WORK"
"$DATASERVER" --data-dir "$WORK/data" --http-listen 127.0.0.1:0 --addr-file "$WORK/addr.json" \
    2>"$WORK/dataserver.log" &
SERVER_PID=$!
for _ in $(seq 1 1000); do
    [[ -s "$WORK/addr.json" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "the dataserver exited: $(tail -5 "$WORK/dataserver.log")"
    sleep 0.01 # polling the file the server writes once listening, bounded by the loop
done
[[ -s "$WORK/addr.json" ]] || die "the dataserver did not listen within 10 s"
ADDRESS="$(sed -E 's/.*"http": *"([^"]+)".*/\1/' "$WORK/addr.json")"
URL="http://$ADDRESS"
TOKEN="$(head -1 "$WORK/data/admin-token")"
export DS_URL="$URL" DS_TOKEN="$TOKEN" DS_CONFIG="$WORK/no-config.toml"

log "writing a ${SIZE_MIB} MiB file of random bytes"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$WORK/file"
BYTES=$((SIZE_MIB * 1024 * 1024))
# The first store of the content is untimed, so every timed PUT finds the blob present and
# costs the server the same (hash, write, fsync, discard).
"$DS" put "$WORK/file" --key warmup --quiet

now() { date +%s.%N; }
# Seconds taken by the command given.
timed() {
    local start end
    start=$(now)
    "$@" >/dev/null
    end=$(now)
    awk -v start="$start" -v end="$end" 'BEGIN { printf "%.6f\n", end - start }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

declare -A SECONDS_OF
for kind in curl-put ds-put curl-get ds-get; do : >"$WORK/$kind.times"; done
for rep in $(seq 1 "$REPS"); do
    log "run $rep of $REPS"
    timed curl -sS -f -H "Expect:" -H "Authorization: Bearer $TOKEN" -T "$WORK/file" \
        "$URL/curl-put-$rep" >>"$WORK/curl-put.times"
    timed "$DS" put "$WORK/file" --key "ds-put-$rep" --quiet >>"$WORK/ds-put.times"
    rm -f "$WORK/copy"
    timed curl -sS -f -o "$WORK/copy" "$URL/warmup" >>"$WORK/curl-get.times"
    rm -f "$WORK/copy"
    timed "$DS" get warmup -o "$WORK/copy" --quiet >>"$WORK/ds-get.times"
    cmp -s "$WORK/file" "$WORK/copy" || die "ds get wrote different bytes"
done
for kind in curl-put ds-put curl-get ds-get; do
    SECONDS_OF[$kind]="$(median <"$WORK/$kind.times")"
done
rate() { awk -v bytes="$BYTES" -v seconds="$1" 'BEGIN { printf "%.1f", bytes / 1048576 / seconds }'; }
ratio() { awk -v curl="$1" -v ds="$2" 'BEGIN { printf "%.2f", curl / ds }'; }

echo "## ds against curl, ${SIZE_MIB} MiB, median of $REPS"
echo
echo "| transfer | curl MiB/s | ds MiB/s | ds / curl |"
echo "|---|---|---|---|"
echo "| GET (ds verifies BLAKE3) | $(rate "${SECONDS_OF[curl-get]}") | $(rate "${SECONDS_OF[ds-get]}") | $(ratio "${SECONDS_OF[curl-get]}" "${SECONDS_OF[ds-get]}") |"
echo "| PUT (ds hashes first, server checks) | $(rate "${SECONDS_OF[curl-put]}") | $(rate "${SECONDS_OF[ds-put]}") | $(ratio "${SECONDS_OF[curl-put]}" "${SECONDS_OF[ds-put]}") |"
