#!/usr/bin/env bash
# `ds get` and `ds put` of one large file against curl doing the same, on the same release-built
# dataserver started by this script on 127.0.0.1, in the same run. Prints the throughput of each,
# the ratio ds / curl (1.0 = as fast as curl; the target is at least 1.0), and the CPU-seconds
# the client and the server spent on each transfer, and what a first touch of free memory costs
# the machine (it decides much of a PUT's cost on a virtual machine). See README.md.
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

# How much a first touch of free memory costs on this machine (README.md): the file is copied
# into the page cache twice, first after a few idle seconds (into memory that has been free a
# while), then right after the first copy is deleted (into the memory it just freed). System
# CPU-seconds of each copy, printed with the results.
page_cache_copy() {
    local timing
    timing="$( { TIMEFORMAT='%S'; time dd if="$WORK/file" of="$WORK/probe" bs=1M status=none; } 2>&1)"
    rm -f "$WORK/probe"
    echo "$timing"
}
sleep 3 # idle, so the kernel may report the memory freed so far to the host
COPY_INTO_IDLE="$(page_cache_copy)"
COPY_INTO_FREED="$(page_cache_copy)"

TICKS_PER_SECOND="$(getconf CLK_TCK)"
# CPU-seconds the dataserver has used so far (user + system, from /proc).
server_cpu() {
    awk -v ticks="$TICKS_PER_SECOND" '{ printf "%.2f\n", ($14 + $15) / ticks }' "/proc/$SERVER_PID/stat"
}
# Runs the command given; appends "wall-seconds client-cpu-seconds server-cpu-seconds" to the
# file named first. Client CPU is the command's user + system time (bash's `time`).
timed() {
    local into="$1" before after timing
    shift
    before="$(server_cpu)"
    timing="$( { TIMEFORMAT='%R %U %S'; time "$@" >/dev/null 2>"$WORK/command.err"; } 2>&1)" ||
        die "$* failed: $(cat "$WORK/command.err")"
    after="$(server_cpu)"
    awk -v timing="$timing" -v before="$before" -v after="$after" 'BEGIN {
        split(timing, t, " "); printf "%.3f %.2f %.2f\n", t[1], t[2] + t[3], after - before }' >>"$into"
}
# The median of column `$1` of the lines on stdin.
median() { awk -v column="$1" '{ print $column }' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

declare -A SECONDS_OF CLIENT_CPU SERVER_CPU
for kind in curl-put ds-put curl-get ds-get; do : >"$WORK/$kind.times"; done
curl_put_command() {
    curl -sS -f -H "Expect:" -H "Authorization: Bearer $TOKEN" -T "$WORK/file" "$URL/$1"
}
ds_put_command() { "$DS" put "$WORK/file" --key "$1" --quiet; }
# Each timed PUT follows an untimed PUT by the same client. On a virtual machine whose free
# memory is reported to the host, the upload right after a curl PUT was measured to cost the
# server 1 to 1.5 CPU-seconds more per GiB, whichever client sent it (README.md); in turns,
# every `ds put` would pay for the curl PUT before it and no curl PUT would pay in return.
# The server answers a PUT whose bytes it already stores before it removes the body's staging
# file; that removal (about 0.25 s of kernel time for 1 GiB here) must not overlap the next
# timed transfer, whichever client it is. Bounded wait: 10 s.
staging_settled() {
    for _ in $(seq 1 1000); do
        [[ -z "$(ls -A "$WORK/data/staging" 2>/dev/null)" ]] && return
        sleep 0.01 # polling the directory the server empties, bounded by the loop
    done
    die "the server's staging directory did not empty within 10 s"
}
curl_put() {
    curl_put_command "curl-put-$1-untimed" >/dev/null || die "curl PUT failed"
    staging_settled
    timed "$WORK/curl-put.times" curl_put_command "curl-put-$1"
}
ds_put() {
    ds_put_command "ds-put-$1-untimed" || die "ds put failed"
    staging_settled
    timed "$WORK/ds-put.times" ds_put_command "ds-put-$1"
}
# Each timed GET follows an untimed GET by the same client, for the same reason: the memory a
# deleted download frees is what the next download writes its page cache into. curl writes in
# 16 KiB pieces and ds in 1 MiB ones, which the kernel caches in folios of those sizes; right
# after curl's copy was deleted, `ds get` measured 0.9-2.5 s instead of 0.63-0.67, nearly all
# of it in the kernel's copy into the new file's page cache (README.md), while curl after ds
# was unaffected.
curl_get_command() { curl -sS -f -o "$WORK/copy" "$URL/warmup"; }
ds_get_command() { "$DS" get warmup -o "$WORK/copy" --quiet; }
curl_get() {
    staging_settled
    rm -f "$WORK/copy"
    curl_get_command || die "curl GET failed"
    rm -f "$WORK/copy"
    timed "$WORK/curl-get.times" curl_get_command
}
ds_get() {
    staging_settled
    rm -f "$WORK/copy"
    ds_get_command || die "ds get failed"
    rm -f "$WORK/copy"
    timed "$WORK/ds-get.times" ds_get_command
    cmp -s "$WORK/file" "$WORK/copy" || die "ds get wrote different bytes"
}
# The order alternates between runs: a PUT right after another client's PUT of the same gigabyte
# was measured to cost the server more CPU (page-cache work left by the previous upload), which
# would otherwise always fall on the same client.
for rep in $(seq 1 "$REPS"); do
    log "run $rep of $REPS"
    if ((rep % 2)); then
        curl_put "$rep"
        ds_put "$rep"
        curl_get
        ds_get
    else
        ds_put "$rep"
        curl_put "$rep"
        ds_get
        curl_get
    fi
done
for kind in curl-put ds-put curl-get ds-get; do
    SECONDS_OF[$kind]="$(median 1 <"$WORK/$kind.times")"
    CLIENT_CPU[$kind]="$(median 2 <"$WORK/$kind.times")"
    SERVER_CPU[$kind]="$(median 3 <"$WORK/$kind.times")"
done
rate() { awk -v bytes="$BYTES" -v seconds="$1" 'BEGIN { printf "%.1f", bytes / 1048576 / seconds }'; }
ratio() { awk -v curl="$1" -v ds="$2" 'BEGIN { printf "%.2f", curl / ds }'; }
row() {
    local label="$1" curl="$2" ds="$3"
    echo "| $label | $(rate "${SECONDS_OF[$curl]}") | $(rate "${SECONDS_OF[$ds]}") | $(ratio "${SECONDS_OF[$curl]}" "${SECONDS_OF[$ds]}") | ${CLIENT_CPU[$curl]} / ${CLIENT_CPU[$ds]} | ${SERVER_CPU[$curl]} / ${SERVER_CPU[$ds]} |"
}

echo "## ds against curl, ${SIZE_MIB} MiB, median of $REPS"
echo
# In a virtual machine whose balloon driver reports free memory to the host, pages the kernel
# hands out again after a report cost a host fault each on first touch: the server's copy into
# the page cache then costs several times more, for whichever upload gets those pages. The
# setting is printed so that runs on different machines can be compared (README.md).
reporting=/sys/module/page_reporting/parameters/page_reporting_order
if [[ -r "$reporting" ]]; then
    echo "This kernel has free page reporting (to the host, when a balloon device asks for it), for free blocks of order $(cat "$reporting") and up."
    echo
fi
echo "Copying the file into the page cache cost ${COPY_INTO_IDLE} CPU-seconds into memory idle for 3 s and ${COPY_INTO_FREED} into memory just freed (\`dd\`, system time)."
echo
echo "| transfer | curl MiB/s | ds MiB/s | ds / curl | client CPU-s curl / ds | server CPU-s curl / ds |"
echo "|---|---|---|---|---|---|"
row "GET (ds verifies BLAKE3)" curl-get ds-get
row "PUT (ds sends BLAKE3 as a trailer, server checks)" curl-put ds-put
