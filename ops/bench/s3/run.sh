#!/usr/bin/env bash
# S3 benchmark of the dataserver's S3 listener against reference S3 servers started by this
# script side by side on 127.0.0.1: s3s-fs (the s3s example server on a directory) and Garage
# (single-node layout). Every server gets the same load through presigned URLs: curl for the
# 1 GiB PUT and GET, wrk for 64 KiB object PUT and GET and for random 64 KiB ranged GETs of the
# 1 GiB object, at 16 and 64 connections. Figures are printed next to the best reference of
# the same run, as ratios (absolute numbers on a shared machine are noisy). See README.md.
#
# Usage: ops/bench/s3/run.sh          (Markdown report on stdout, progress on stderr)
# Environment:
#   DURATION     seconds of each measured wrk run (default 10)
#   WARMUP       seconds of the warm-up wrk run before each measured one (default 2)
#   BIG_MIB      size of the large object in MiB (default 1024)
#   SMALL_COUNT  64 KiB objects stored for the GET runs (default 1000)
#   SERVERS      subset of: dataserver s3s-fs garage (default all)
#   KEEP         1 to keep the work directory (logs, data) at the end
#   DATASERVER_BIN  a dataserver binary to use instead of building the release one
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
BIG_MIB="${BIG_MIB:-1024}"
export SMALL_COUNT="${SMALL_COUNT:-1000}"
SERVERS="${SERVERS:-dataserver s3s-fs garage}"
KEEP="${KEEP:-0}"
CONNECTIONS=(16 64)

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive number of seconds"
[[ "$BIG_MIB" =~ ^[1-9][0-9]*$ ]] || die "BIG_MIB must be a positive number"

# ---- tools ----------------------------------------------------------------------------------

command -v wrk >/dev/null || die "wrk is missing (apt-get install wrk)"
command -v curl >/dev/null || die "curl is missing (apt-get install curl)"
for server in $SERVERS; do
    case "$server" in
    dataserver) ;;
    s3s-fs) command -v s3s-fs >/dev/null || die "s3s-fs is missing: cargo install s3s-fs@0.14.1 --features binary" ;;
    garage) command -v garage >/dev/null || die "garage is missing: cargo install garage" ;;
    *) die "unknown server '$server' (known: dataserver s3s-fs garage)" ;;
    esac
done
PYTHON="$ROOT/target/python-venv/bin/python"
[[ -x "$PYTHON" ]] || die "run ./ops/test.sh once first: it creates $ROOT/target/python-venv with boto3"
DATASERVER="${DATASERVER_BIN:-}"
if [[ -z "$DATASERVER" ]]; then
    log "building the dataserver (cargo build --release -p daemon)"
    (cd "$ROOT" && cargo build --release -p daemon) >&2
    DATASERVER="${CARGO_TARGET_DIR:-$ROOT/target}/release/dataserver"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/s3-bench.XXXXXX")"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ "$KEEP" == 1 ]]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (bounded) until `curl URL` answers at all.
wait_http() {
    local url=$1 deadline=$((SECONDS + 30))
    until curl -s -o /dev/null --max-time 1 "$url"; do
        ((SECONDS < deadline)) || die "no answer from $url within 30 s"
        sleep 0.1
    done
}

log "writing the ${BIG_MIB} MiB object"
BIG="$WORK/big.bin"
head -c $((BIG_MIB * 1024 * 1024)) /dev/urandom >"$BIG"

# ---- servers: each sets ENDPOINT REGION ACCESS SECRET -------------------------------------

start_dataserver() {
    local dir="$WORK/dataserver"
    mkdir -p "$dir"
    "$DATASERVER" --data-dir "$dir/data" --http-listen 127.0.0.1:0 --s3-listen 127.0.0.1:0 \
        --addr-file "$dir/addr.json" 2>"$dir/log" &
    PIDS+=($!)
    local deadline=$((SECONDS + 30))
    until [[ -s "$dir/addr.json" ]]; do
        ((SECONDS < deadline)) || die "dataserver did not start: $(tail "$dir/log")"
        sleep 0.1
    done
    ENDPOINT="http://$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["s3"])' "$dir/addr.json")"
    REGION=us-east-1
    ACCESS=$("$PYTHON" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["access_key_id"])' "$dir/data/s3-credentials")
    SECRET=$("$PYTHON" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["secret_access_key"])' "$dir/data/s3-credentials")
}

start_s3s_fs() {
    local dir="$WORK/s3s-fs" port
    mkdir -p "$dir/root"
    port=$(free_port)
    ACCESS=benchaccesskey SECRET=benchsecretkey0123456789
    s3s-fs --host 127.0.0.1 --port "$port" --access-key "$ACCESS" --secret-key "$SECRET" \
        "$dir/root" 2>"$dir/log" >&2 &
    PIDS+=($!)
    ENDPOINT="http://127.0.0.1:$port"
    REGION=us-east-1
    wait_http "$ENDPOINT"
}

start_garage() {
    local dir="$WORK/garage" s3_port rpc_port admin_port node
    mkdir -p "$dir"
    s3_port=$(free_port) rpc_port=$(free_port) admin_port=$(free_port)
    cat >"$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
TOML
    local garage=(garage -c "$dir/garage.toml")
    garage -c "$dir/garage.toml" server 2>"$dir/log" >&2 &
    PIDS+=($!)
    local deadline=$((SECONDS + 60))
    until node=$("${garage[@]}" node id -q 2>/dev/null); do
        ((SECONDS < deadline)) || die "garage did not start: $(tail "$dir/log")"
        sleep 0.2
    done
    "${garage[@]}" layout assign -z dc1 -c 100G "${node%%@*}" >&2
    "${garage[@]}" layout apply --version 1 >&2
    "${garage[@]}" key create bench-key >"$dir/key.txt"
    ACCESS=$(awk '/Key ID/ {print $NF}' "$dir/key.txt")
    SECRET=$(awk '/Secret key/ {print $NF}' "$dir/key.txt")
    "${garage[@]}" bucket create bench >&2
    "${garage[@]}" bucket allow --read --write --owner bench --key bench-key >&2
    ENDPOINT="http://127.0.0.1:$s3_port"
    REGION=garage
}

# ---- measurements ---------------------------------------------------------------------------

declare -A RESULT # RESULT[server,figure] = value (MiB/s or requests/s)
FIGURES=()
record() {
    RESULT["$1,$2"]=$3
    [[ " ${FIGURES[*]} " == *" $2 "* ]] || FIGURES+=("$2")
}

# wrk with urls.lua: prints requests/s, fails on any error response.
run_wrk() {
    local base=$1 connections=$2 urls=$3 method=$4 range_of=${5:-}
    local threads=$((connections < 2 ? connections : 2))
    if ((WARMUP > 0)); then
        URLS="$urls" METHOD="$method" RANGE_OF="$range_of" wrk -t"$threads" -c"$connections" \
            -d"${WARMUP}s" -s "$HERE/urls.lua" "$base" >/dev/null 2>&1 || true
    fi
    local out
    out=$(URLS="$urls" METHOD="$method" RANGE_OF="$range_of" wrk -t"$threads" -c"$connections" \
        -d"${DURATION}s" -s "$HERE/urls.lua" "$base" 2>&1 >/dev/null | grep RESULT)
    [[ "$out" =~ rps=([0-9.]+).*errors=([0-9]+) ]] || die "wrk gave no result: $out"
    ((BASH_REMATCH[2] == 0)) || die "wrk saw ${BASH_REMATCH[2]} errors ($method $urls on $base)"
    echo "${BASH_REMATCH[1]}"
}

# curl: prints MiB/s of a transfer.
run_curl() {
    local seconds
    seconds=$(curl -sS --fail --max-time 600 -o /dev/null -w '%{time_total}' "$@")
    "$PYTHON" -c "print(round($BIG_MIB / $seconds, 1))"
}

measure() {
    local server=$1 dir="$WORK/urls-$1"
    mkdir -p "$dir"
    log "$server: preparing (bucket, $SMALL_COUNT objects of 64 KiB, presigned URLs)"
    "$PYTHON" "$HERE/presign.py" "$ENDPOINT" "$REGION" "$ACCESS" "$SECRET" "$dir"
    log "$server: ${BIG_MIB} MiB PUT and GET"
    record "$server" "PUT ${BIG_MIB} MiB (MiB/s)" "$(run_curl -T "$BIG" "$(cat "$dir/big-put.url")")"
    record "$server" "GET ${BIG_MIB} MiB (MiB/s)" "$(run_curl "$(cat "$dir/big-get.url")")"
    "$PYTHON" -c 'import sys,urllib.parse as u; p=u.urlsplit(open(sys.argv[1]).read().strip()); print(p.path+"?"+p.query)' \
        "$dir/big-get.url" >"$dir/big-get-path.txt"
    for connections in "${CONNECTIONS[@]}"; do
        log "$server: 64 KiB objects at $connections connections"
        record "$server" "GET 64 KiB objects, c=$connections (req/s)" "$(run_wrk "$ENDPOINT" "$connections" "$dir/get-urls.txt" GET)"
        record "$server" "ranged GET 64 KiB, c=$connections (req/s)" "$(run_wrk "$ENDPOINT" "$connections" "$dir/big-get-path.txt" GET $((BIG_MIB * 1024 * 1024)))"
        record "$server" "PUT 64 KiB objects, c=$connections (req/s)" "$(run_wrk "$ENDPOINT" "$connections" "$dir/put-urls.txt" PUT)"
    done
}

for server in $SERVERS; do
    log "starting $server"
    case "$server" in
    dataserver) start_dataserver ;;
    s3s-fs) start_s3s_fs ;;
    garage) start_garage ;;
    esac
    measure "$server"
    # One server at a time on the shared CPU: stop it before the next starts.
    kill "${PIDS[-1]}" 2>/dev/null || true
    wait "${PIDS[-1]}" 2>/dev/null || true
    unset 'PIDS[-1]'
done

# ---- report ---------------------------------------------------------------------------------

echo "## S3 benchmark ($(date -u +%F), DURATION=${DURATION}s, $(nproc) cores)"
echo
header="| figure |"
rule="|---|"
for server in $SERVERS; do header+=" $server |"; rule+="---|"; done
if [[ " $SERVERS " == *" dataserver "* ]]; then header+=" dataserver / best reference |"; rule+="---|"; fi
echo "$header"
echo "$rule"
for figure in "${FIGURES[@]}"; do
    line="| $figure |"
    best=0
    for server in $SERVERS; do
        value=${RESULT["$server,$figure"]:-}
        line+=" ${value:-–} |"
        if [[ "$server" != dataserver && -n "$value" ]]; then
            best=$("$PYTHON" -c "print(max($best, $value))")
        fi
    done
    if [[ " $SERVERS " == *" dataserver "* ]]; then
        ours=${RESULT["dataserver,$figure"]:-0}
        line+=" $("$PYTHON" -c "print(f'{$ours / $best:.2f}×' if $best > 0 else '–')") |"
    fi
    echo "$line"
done
echo
echo "Durability differs: the dataserver fsyncs every object before answering (a large one's"
echo "blob, directory and catalogue record; objects of at most 64 KiB go to a pack file fsynced"
echo "once per catalogue commit); s3s-fs writes without fsync, Garage with its defaults"
echo "(data_fsync = false)."
