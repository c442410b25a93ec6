#!/usr/bin/env bash
# `?hdu=` of one CCD of a 32-extension FITS file against the equivalent byte range of the same
# object, on the same release-built dataserver in the same run (wrk, 16 connections), with
# verified reads (the default). The HDU is found through the index built at ingest, so the two
# should cost about the same: the ratio printed is hdu / range (target: about 1.0).
#
# Then ingest: PUTs (curl -T) of a large FITS file whose HDUs all carry CHECKSUM and DATASUM,
# so the server indexes it and sums every data block on the way in, against PUTs of the same
# bytes with the first card spoiled (`XIMPLE`), which the server stores as plain bytes without
# indexing. The two take turns; the ratio printed is FITS / plain throughput (target: about 1.0)
# with the server's CPU-seconds per PUT.
#
# Usage: ops/bench/fits/run.sh        (Markdown report on stdout, progress on stderr)
# Environment: DURATION (seconds per wrk run, default 10), CCDS (default 32),
#   WIDTH × HEIGHT of a CCD in pixels (default 1024 × 1024, 16-bit), HDU (default 17),
#   COPIES (the ingest file is the frame's extensions COPIES times over, default 16: 1 GiB),
#   REPS (timed PUTs of each file, default 5; the median is reported)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
DURATION="${DURATION:-10}"
CCDS="${CCDS:-32}"
WIDTH="${WIDTH:-1024}"
HEIGHT="${HEIGHT:-1024}"
HDU="${HDU:-17}"
COPIES="${COPIES:-16}"
REPS="${REPS:-5}"
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
for tool in curl wrk python3; do
    command -v "$tool" >/dev/null || { log "error: $tool is needed (apt-get install $tool)"; exit 1; }
done

log "building dataserver (cargo build --release)"
(cd "$ROOT" && cargo build --release --locked -p daemon --bin dataserver) >&2
target="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ "$target" == /* ]] || target="$ROOT/$target"

WORK="$(mktemp -d /tmp/fits-bench.XXXXXX)"
SERVER_PID=""
cleanup() {
    [[ -n "$SERVER_PID" ]] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

log "writing a $CCDS-extension FITS file ($WIDTH × $HEIGHT 16-bit CCDs)"
python3 "$HERE/make_mef.py" "$WORK/frame.fits" "$CCDS" "$WIDTH" "$HEIGHT"
"$target/release/dataserver" --data-dir "$WORK/data" --http-listen 127.0.0.1:0 \
    --addr-file "$WORK/addr.json" 2>"$WORK/dataserver.log" &
SERVER_PID=$!
for _ in $(seq 200); do [[ -s "$WORK/addr.json" ]] && break; sleep 0.05; done
[[ -s "$WORK/addr.json" ]] || { log "error: the dataserver did not start"; cat "$WORK/dataserver.log" >&2; exit 1; }
URL="http://$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$WORK/addr.json")"
TOKEN="$(head -n1 "$WORK/data/admin-token")"
curl -sSf -o /dev/null -H "Authorization: Bearer $TOKEN" -T "$WORK/frame.fits" "$URL/frame.fits"
read -r FIRST LAST < <(curl -sSf "$URL/frame.fits?fitsindex" | python3 -c '
import json, sys
hdu = json.load(sys.stdin)["hdus"][int(sys.argv[1])]
print(hdu["header_offset"], hdu["data_offset"] + hdu["data_span"] - 1)' "$HDU")
# Both answers must be the same bytes before they are timed.
cmp -s <(curl -sSf "$URL/frame.fits?hdu=$HDU") <(curl -sSf -H "Range: bytes=$FIRST-$LAST" "$URL/frame.fits") ||
    { log "error: ?hdu=$HDU and bytes $FIRST-$LAST differ"; exit 1; }

cat >"$WORK/hdu.lua" <<LUA
request = function() return wrk.format("GET", "/frame.fits?hdu=$HDU") end
LUA
cat >"$WORK/range.lua" <<LUA
request = function() return wrk.format("GET", "/frame.fits", { ["Range"] = "bytes=$FIRST-$LAST" }) end
LUA
rate() { wrk -t2 -c16 -d"${DURATION}s" -s "$1" "$URL" | awk '/Requests\/sec/ { print $2 }'; }
log "warming up"
wrk -t2 -c16 -d2s -s "$WORK/range.lua" "$URL" >/dev/null
declare -A RATES
for round in 1 2; do
    for kind in hdu range; do
        log "wrk $kind, round $round"
        RATES[$kind]+="$(rate "$WORK/$kind.lua") "
    done
done
best() { tr ' ' '\n' <<<"$1" | sort -g | tail -n1; }
hdu_rate="$(best "${RATES[hdu]}")"
range_rate="$(best "${RATES[range]}")"
echo "# ?hdu= against the equivalent byte range"
echo
echo "Reproduce: \`DURATION=$DURATION CCDS=$CCDS WIDTH=$WIDTH HEIGHT=$HEIGHT HDU=$HDU ops/bench/fits/run.sh\`"
echo
echo "- HDU $HDU of $CCDS: bytes $FIRST-$LAST ($(((LAST - FIRST + 1) / 1024)) KiB), 16 connections, verified reads, best of 2 runs of ${DURATION} s each; load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| request | requests/s |"
echo "|---|---:|"
echo "| \`GET /frame.fits?hdu=$HDU\` | $hdu_rate |"
echo "| \`GET /frame.fits\` with \`Range: bytes=$FIRST-$LAST\` | $range_rate |"
echo
awk -v h="$hdu_rate" -v r="$range_rate" 'BEGIN { printf "ratio hdu / range = %.2f (target: about 1.0)\n", h / r }'

echo

# ---- ingest: FITS (indexed, every DATASUM verified) against the same bytes as plain data ----

log "writing the ingest files: the frame's extensions $COPIES times over, and a plain twin"
python3 - "$WORK/frame.fits" "$WORK/ingest.fits" "$WORK/ingest.plain" "$COPIES" <<'PY'
import sys

source, fits_path, plain_path, copies = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
frame = open(source, "rb").read()
# The primary HDU is a header only (NAXIS = 0): it ends with the block holding its END card.
end = next(i for i in range(0, len(frame), 80) if frame[i:i + 8] == b"END     ")
primary = (end // 2880 + 1) * 2880
extensions = frame[primary:]
with open(fits_path, "wb") as out:
    out.write(frame[:primary])
    for _ in range(copies):
        out.write(extensions)
with open(fits_path, "rb") as fits, open(plain_path, "wb") as out:
    out.write(b"X" + fits.read(1)[1:])
    fits.seek(1)
    while chunk := fits.read(1 << 20):
        out.write(chunk)
PY
INGEST_BYTES="$(stat -c %s "$WORK/ingest.fits")"
server_cpu() { awk -v ticks="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / ticks }' "/proc/$SERVER_PID/stat"; }
put() { curl -sSf -o /dev/null -H "Expect:" -H "Authorization: Bearer $TOKEN" -T "$1" "$URL/$2"; }
# Each content is stored once untimed, so every timed PUT costs the server the same: receive,
# hash (and index), write, fsync, and drop the copy of a blob it already has.
put "$WORK/ingest.fits" ingest-warm.fits
put "$WORK/ingest.plain" ingest-warm.plain
[[ "$(curl -sSf "$URL/ingest-warm.fits?fitsindex" | python3 -c 'import json, sys; i = json.load(sys.stdin); print(i["valid"], i["checksum"], len(i["hdus"]))')" == "True valid $((COPIES * CCDS + 1))" ]] ||
    { log "error: the ingest file was not indexed as valid FITS"; exit 1; }
declare -A TIMES RATE
for rep in $(seq 1 "$REPS"); do
    kinds="fits plain"
    ((rep % 2)) || kinds="plain fits"
    for kind in $kinds; do
        log "ingest $kind, run $rep of $REPS"
        before="$(server_cpu)"
        started="$(date +%s.%N)"
        put "$WORK/ingest.$kind" "ingest-$rep.$kind"
        TIMES[$kind]+="$(awk -v s="$started" -v e="$(date +%s.%N)" -v b="$before" -v a="$(server_cpu)" 'BEGIN { printf "%.3f:%.2f", e - s, a - b }') "
    done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
column() { tr ' ' '\n' <<<"$1" | grep . | cut -d: -f"$2" | tr '\n' ' '; }
echo "# Ingest of a FITS file, indexed, against the same bytes as plain data"
echo
echo "- $((INGEST_BYTES / 1048576)) MiB: a primary header and $((COPIES * CCDS)) image extensions, each with CHECKSUM and DATASUM; the plain twin differs in its first byte. \`curl -T\`, $REPS PUTs of each taking turns, median; load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| body | MiB/s | server CPU-s per PUT | each PUT: seconds:CPU-s |"
echo "|---|---:|---:|---|"
for kind in fits plain; do
    seconds="$(median "$(column "${TIMES[$kind]}" 1)")"
    cpu="$(median "$(column "${TIMES[$kind]}" 2)")"
    RATE[$kind]="$(awk -v b="$INGEST_BYTES" -v s="$seconds" 'BEGIN { printf "%.0f", b / 1048576 / s }')"
    echo "| $kind | ${RATE[$kind]} | $cpu | ${TIMES[$kind]}|"
done
echo
awk -v f="${RATE[fits]}" -v p="${RATE[plain]}" 'BEGIN { printf "ratio FITS / plain ingest = %.2f (target: about 1.0)\n", f / p }'
