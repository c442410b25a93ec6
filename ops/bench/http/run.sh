#!/usr/bin/env bash
# HTTP benchmark of the dataserver against the servers this field would otherwise pick: nginx
# (sendfile on and off; WebDAV for PUT) and XRootD with its HTTP plugin, all started by this
# script side by side on 127.0.0.1, serving the same files and driven by the same load (wrk and
# curl). Also measures the machine's limits for ingest (disk write + fsync, loopback TCP).
# Every figure is reported next to the best reference server measured in the same run, because
# absolute numbers on a shared machine are noisy. See README.md.
#
# Usage: ops/bench/http/run.sh            (Markdown report on stdout, progress on stderr)
# Environment:
#   DURATION   seconds of each measured wrk run (default 10)
#   WARMUP     seconds of the wrk warm-up run before each measured one (default 3)
#   SERVERS    subset of: nginx-sendfile nginx-nosendfile xrootd dataserver-verify
#              dataserver-noverify (default all; nginx itself always runs, for the limits)
#   KEEP_LOGS  1 to keep the logs even when nothing failed
#   XRD_USER   unprivileged user XRootD runs as when started by root (default: xrootd, else nobody)
#   RUST_LOG   passed to the dataserver (default: its own default, info)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
export BENCH_LUA_DIR="$HERE"
export PATH="$PATH:/usr/sbin:/sbin"

ALL_SERVERS="nginx-sendfile nginx-nosendfile xrootd dataserver-verify dataserver-noverify"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
SERVERS="${SERVERS:-$ALL_SERVERS}"
KEEP_LOGS="${KEEP_LOGS:-0}"

BIG_BYTES=$((1024 * 1024 * 1024)) # the large file, GET and PUT
RANGE_BYTES=65536                 # ranged GETs
SMALL_BYTES=4096                  # small-file GETs
SMALL_COUNT=1000
PUT_BYTES=65536 # small PUTs
REPS=3          # single-request runs (1 GiB GET/PUT, limits): median (limits: best) of REPS

START_SECONDS=$SECONDS
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "DURATION must be a positive number of seconds"
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "WARMUP must be a number of seconds"
SELECTED=()
for server in $SERVERS; do
    [[ " $ALL_SERVERS " == *" $server "* ]] || die "unknown server '$server' (known: $ALL_SERVERS)"
    SELECTED+=("$server")
done
((${#SELECTED[@]} > 0)) || die "SERVERS is empty"
selected() { [[ " ${SELECTED[*]} " == *" $1 "* ]]; }
is_dataserver() { [[ "$1" == dataserver-* ]]; }
is_reference() { ! is_dataserver "$1"; }
any_dataserver() { [[ " ${SELECTED[*]} " == *" dataserver-"* ]]; }

# ---- install and build --------------------------------------------------------------------

missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if selected xrootd && ! command -v xrootd >/dev/null; then missing+=(xrootd-server); fi
if ((${#missing[@]} > 0)); then
    log "installing ${missing[*]}"
    if [[ $EUID -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2
    else
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2
    fi
fi

BIN=""
if any_dataserver; then
    log "building the dataserver (cargo build --release -p daemon)"
    (cd "$ROOT" && cargo build --release -p daemon) >&2
    target="${CARGO_TARGET_DIR:-$ROOT/target}"
    [[ "$target" == /* ]] || target="$ROOT/$target"
    BIN="$target/release/dataserver"
    [[ -x "$BIN" ]] || die "no dataserver binary at $BIN after the build"
fi

# ---- temporary directory, servers, cleanup ------------------------------------------------

WORK="$(mktemp -d -t dataserver-http-bench.XXXXXX)"
chmod 755 "$WORK" # the unprivileged server users must reach the files below
LOGS="$WORK/logs"
WWW="$WORK/www" # served by nginx and XRootD alike
mkdir -p "$LOGS" "$WWW/small"

PIDS=()  # every server process this script started
declare -A PID_NAME
NOTES=() # footnotes for the report

stop_pid() {
    local pid="$1" waited=0
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null && ((waited < 150)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ $status -ne 0 || "$KEEP_LOGS" == 1 ]]; then
        local kept
        kept="$(mktemp -d -t dataserver-http-bench-logs.XXXXXX)"
        cp -a "$LOGS/." "$kept/"
        log "logs kept in $kept"
        echo
        echo "Logs kept in \`$kept\`."
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

USED_PORTS=" "
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        [[ "$USED_PORTS" == *" $port "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            USED_PORTS+="$port "
            echo "$port"
            return 0
        fi
    done
    die "no free TCP port found"
}

# wait_http PID URL SECONDS: polls URL until it answers 200; fails if PID dies or time runs out.
wait_http() {
    local pid="$1" url="$2" deadline=$((SECONDS + $3))
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || return 1
        [[ "$(curl -s -o /dev/null --max-time 1 -w '%{http_code}' "$url" || true)" == 200 ]] && return 0
        sleep 0.1
    done
    return 1
}

declare -A BASE      # server -> http://127.0.0.1:PORT
declare -A PUT_PATH  # server -> URL path prefix of fresh PUT keys
declare -A PUT_DIR   # server -> directory the PUTs land in (reference servers only)
declare -A TOKEN     # server -> bearer token (dataserver only)
declare -A DOWN      # server -> why it is not available
declare -A PUT_DOWN  # server -> why PUT is not available

# ---- test data ----------------------------------------------------------------------------

log "writing test data to $WORK"
head -c "$BIG_BYTES" /dev/urandom >"$WWW/big.bin"
head -c $((SMALL_COUNT * SMALL_BYTES)) /dev/urandom | split -b "$SMALL_BYTES" -a 4 -d - "$WWW/small/"
PUT_SOURCE="$WORK/put.bin" # the 1 GiB PUT body; its first 64 bytes are rewritten before each PUT
head -c "$BIG_BYTES" /dev/urandom >"$PUT_SOURCE"
PUT_SMALL="$WORK/put-small.bin"
head -c "$PUT_BYTES" /dev/urandom >"$PUT_SMALL"
chmod -R a+rX "$WWW"

# ---- nginx: one process, one port per variant plus a sink for the loopback measurement ----

NGINX_USER=""
if [[ $EUID -eq 0 ]]; then
    NGINX_USER="www-data"
    id "$NGINX_USER" >/dev/null 2>&1 || NGINX_USER="nobody"
fi
mkdir -p "$WORK/nginx/body" "$WWW/put-nginx"
[[ -n "$NGINX_USER" ]] && chown "$NGINX_USER" "$WORK/nginx/body" "$WWW/put-nginx"
NGINX_SENDFILE_PORT="$(free_port)"
NGINX_NOSENDFILE_PORT="$(free_port)"
SINK_PORT="$(free_port)"
cat >"$WORK/nginx/nginx.conf" <<EOF
${NGINX_USER:+user $NGINX_USER;}
worker_processes auto;
worker_rlimit_nofile 65536;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $LOGS/nginx-error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    default_type application/octet-stream;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    tcp_nopush off;
    tcp_nodelay on;
    open_file_cache max=10000 inactive=60s;
    open_file_cache_valid 60s;
    client_max_body_size 0;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    root $WWW;
    dav_methods PUT;
    create_full_put_path on;
    server {
        listen 127.0.0.1:$NGINX_SENDFILE_PORT;
        sendfile on;
    }
    server {
        listen 127.0.0.1:$NGINX_NOSENDFILE_PORT;
        sendfile off;
        output_buffers 2 256k;
    }
    server {
        # Reads and discards request bodies: the loopback ingest ceiling.
        listen 127.0.0.1:$SINK_PORT;
        location / { return 204; }
    }
}
EOF
log "starting nginx"
nginx -c "$WORK/nginx/nginx.conf" -e "$LOGS/nginx-error.log" >"$LOGS/nginx.out" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
PID_NAME[$NGINX_PID]=nginx
NGINX_OK=1
if ! wait_http "$NGINX_PID" "http://127.0.0.1:$NGINX_SENDFILE_PORT/small/0000" 20; then
    NGINX_OK=0
    KEEP_LOGS=1
    NOTES+=("nginx did not start (see nginx-error.log and nginx.out in the kept logs)")
fi
for variant in nginx-sendfile nginx-nosendfile; do
    if [[ "$variant" == nginx-sendfile ]]; then port=$NGINX_SENDFILE_PORT; else port=$NGINX_NOSENDFILE_PORT; fi
    BASE[$variant]="http://127.0.0.1:$port"
    PUT_PATH[$variant]="/put-nginx/$variant/"
    PUT_DIR[$variant]="$WWW/put-nginx/$variant"
    ((NGINX_OK)) || DOWN[$variant]="nginx did not start"
done

# ---- XRootD with XrdHttp ------------------------------------------------------------------

if selected xrootd; then
    XRD_RUN=()
    XRD_USER="${XRD_USER:-}"
    if [[ $EUID -eq 0 ]]; then
        # XRootD refuses to run as root: drop to an unprivileged user (setpriv execs, so the
        # PID we record is xrootd's own).
        if [[ -z "$XRD_USER" ]]; then
            XRD_USER=xrootd
            id "$XRD_USER" >/dev/null 2>&1 || XRD_USER=nobody
        fi
        XRD_RUN=(setpriv "--reuid=$(id -u "$XRD_USER")" "--regid=$(id -g "$XRD_USER")" --clear-groups --)
    fi
    mkdir -p "$WORK/xrootd/admin" "$LOGS/xrootd" "$WWW/put-xrd"
    [[ $EUID -eq 0 ]] && chown "$XRD_USER" "$WORK/xrootd" "$WORK/xrootd/admin" "$LOGS/xrootd" "$WWW/put-xrd"
    XRD_PORT="$(free_port)"
    XRD_HTTP_PORT="$(free_port)"
    cat >"$WORK/xrootd/xrootd.cfg" <<EOF
all.export / writable
oss.localroot $WWW
all.adminpath $WORK/xrootd/admin
all.pidpath $WORK/xrootd/admin
xrd.port $XRD_PORT
xrd.protocol XrdHttp:$XRD_HTTP_PORT libXrdHttp.so
EOF
    log "starting XRootD${XRD_USER:+ as $XRD_USER}"
    (cd "$WORK/xrootd" && exec "${XRD_RUN[@]}" xrootd -c "$WORK/xrootd/xrootd.cfg" \
        -l "$LOGS/xrootd/xrootd.log" -n bench) >"$LOGS/xrootd.out" 2>&1 &
    XRD_PID=$!
    PIDS+=("$XRD_PID")
    PID_NAME[$XRD_PID]=xrootd
    BASE[xrootd]="http://127.0.0.1:$XRD_HTTP_PORT"
    PUT_PATH[xrootd]="/put-xrd/"
    PUT_DIR[xrootd]="$WWW/put-xrd"
    if ! wait_http "$XRD_PID" "${BASE[xrootd]}/small/0000" 30; then
        DOWN[xrootd]="XRootD did not start (see xrootd.out and xrootd/ in the kept logs)"
        KEEP_LOGS=1
    fi
fi

# ---- dataserver: one instance per verify_reads setting ------------------------------------

start_dataserver() {
    local server="$1" verify="$2" dir="$WORK/$1" pid addr deadline
    mkdir -p "$dir"
    cat >"$dir/config.toml" <<EOF
verify_reads = "$verify"

[limits]
max_connections = 4096
max_requests = 4096
shutdown_grace_secs = 10
EOF
    log "starting $server (verify_reads = \"$verify\")"
    "$BIN" --data-dir "$dir/data" --http-listen 127.0.0.1:0 --addr-file "$dir/addr.json" \
        --config "$dir/config.toml" 2>"$LOGS/$server.log" &
    pid=$!
    PIDS+=("$pid")
    PID_NAME[$pid]="$server"
    deadline=$((SECONDS + 60))
    while [[ ! -s "$dir/addr.json" ]]; do
        if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
            DOWN[$server]="did not start (see $server.log in the kept logs)"
            KEEP_LOGS=1
            return 0
        fi
        sleep 0.05
    done
    addr="$(sed -n 's/.*"http": *"\([^"]*\)".*/\1/p' "$dir/addr.json")"
    BASE[$server]="http://$addr"
    PUT_PATH[$server]="/put/$server/"
    TOKEN[$server]="$(head -n 1 "$dir/data/admin-token")"
    if ! wait_http "$pid" "${BASE[$server]}/_/health" 30; then
        DOWN[$server]="did not answer /_/health (see $server.log in the kept logs)"
        KEEP_LOGS=1
        return 0
    fi
    # Load the same files the reference servers serve from $WWW.
    local code
    code="$(curl -sS -H 'Expect:' -H "Authorization: Bearer ${TOKEN[$server]}" -T "$WWW/big.bin" \
        --max-time 600 -o "$LOGS/$server-load-big.json" -w '%{http_code}' "${BASE[$server]}/big.bin" || true)"
    if [[ "$code" != 201 ]]; then
        DOWN[$server]="loading big.bin answered HTTP $code (see $server-load-big.json)"
        KEEP_LOGS=1
        return 0
    fi
    local config="$dir/load-small.curl"
    : >"$config"
    for file in "$WWW"/small/*; do
        [[ -s "$config" ]] && echo next >>"$config"
        printf 'url = "%s/small/%s"\nupload-file = "%s"\nheader = "Authorization: Bearer %s"\nheader = "Expect:"\nsilent\nshow-error\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' \
            "${BASE[$server]}" "${file##*/}" "$file" "${TOKEN[$server]}" >>"$config"
    done
    curl -sS --parallel --parallel-max 16 -K "$config" >"$dir/load-small.codes" 2>"$LOGS/$server-load-small.err" || true
    local created
    created="$(grep -c '^201$' "$dir/load-small.codes" || true)"
    if [[ "$created" != "$SMALL_COUNT" ]]; then
        DOWN[$server]="loading the small files: $created of $SMALL_COUNT answered 201 (see $server-load-small.err)"
        KEEP_LOGS=1
    fi
}
selected dataserver-verify && start_dataserver dataserver-verify always
selected dataserver-noverify && start_dataserver dataserver-noverify never

for server in "${SELECTED[@]}"; do
    [[ -n "${DOWN[$server]:-}" ]] && log "$server: n/a: ${DOWN[$server]}"
done

# ---- measuring helpers --------------------------------------------------------------------

# set_auth SERVER: AUTH becomes the curl arguments that authorise a write on SERVER.
AUTH=()
set_auth() {
    AUTH=()
    if [[ -n "${TOKEN[$1]:-}" ]]; then AUTH=(-H "Authorization: Bearer ${TOKEN[$1]}"); fi
}
mib_per_s() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
best() { printf '%s\n' "$@" | sort -g | tail -n 1; }
now_ns() { date +%s%N; }

# cpu_ticks PID: CPU time (user + system, clock ticks) the process has used so far.
cpu_ticks() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || {
        echo 0
        return
    }
    read -r -a stat <<<"${stat##*) }" # fields from the 3rd on: utime is the 14th, stime the 15th
    echo $((stat[11] + stat[12]))
}

# quiesce LABEL: waits (at most 120 s) until no server this script started uses CPU, so that
# background work one server does after a load (the dataserver computes deferred MD5s after
# ingest, for example) is not charged to the next server measured. Long waits become notes.
quiesce() {
    local start busy="" pid idle
    start="$(now_ns)"
    declare -A before
    while (($(now_ns) - start < 120000000000)); do
        for pid in "${PIDS[@]}"; do before[$pid]="$(cpu_ticks "$pid")"; done
        sleep 0.3
        idle=1
        for pid in "${PIDS[@]}"; do
            if (($(cpu_ticks "$pid") - ${before[$pid]} > 1)); then
                idle=0
                [[ " $busy " == *" ${PID_NAME[$pid]} "* ]] || busy+="${PID_NAME[$pid]} "
            fi
        done
        ((idle)) && break
    done
    local waited_ms=$((($(now_ns) - start) / 1000000))
    if ((!idle)); then
        NOTES+=("$1: the servers were still busy after 120 s (${busy% }); measured anyway")
    elif ((waited_ms >= 2000)); then
        NOTES+=("$1: waited $((waited_ms / 1000)) s for ${busy% } to go idle")
    fi
}

# fresh_memory: writes and deletes a 1.5 GiB scratch file, right before every timed 1 GiB write
# (the dd passes below and every server's PUT). On a virtual machine that reports free memory to
# its host (free page reporting), the first touch of memory left free for a few seconds costs a
# fault in the host: copying 1 GiB into the page cache was measured at 2-3 CPU-seconds into such
# memory and 0.4-0.9 into memory just freed (ops/bench/client/README.md). Which write happened
# to get which memory then decided the PUT figures more than the writer did (eighth run: the
# same dd at 350 and 1264 MiB/s). After this, every writer starts from memory just freed, as
# on a storage node whose memory is full of cache; the scratch file is deleted before any of
# it is written back, so the disk sees none of it.
fresh_memory() {
    dd if=/dev/zero of="$WORK/scratch" bs=1M count=1536 status=none
    rm -f "$WORK/scratch"
}

# wrk_run SERVER NAME CONNECTIONS SECONDS SCRIPT ARGS...: runs wrk, logs its output to
# NAME.txt and sets RESULT to its RESULT line (empty when wrk failed).
RESULT=""
wrk_run() {
    local server="$1" name="$2" connections="$3" seconds="$4" script="$5"
    shift 5
    local out="$LOGS/wrk-$name-$server.txt"
    timeout $((seconds + 60)) wrk -t2 -c"$connections" -d"${seconds}s" --timeout 10s --latency \
        -s "$HERE/$script" "${BASE[$server]}" -- "$@" >"$out" 2>&1 || true
    RESULT="$(grep '^RESULT ' "$out" || true)"
}
field() { tr ' ' '\n' <<<"$RESULT" | sed -n "s/^$1=//p"; }

declare -A FIG # "workload server" -> figure; "workload server p99", "... errors", etc.

# record_wrk WORKLOAD SERVER BYTES_PER_REQUEST: stores the figures of the last wrk run.
record_wrk() {
    local w="$1" server="$2" size="$3"
    if [[ -z "$RESULT" ]]; then
        FIG[$w $server na]="wrk failed (see wrk-$w-$server.txt)"
        KEEP_LOGS=1
        return
    fi
    local requests duration errors
    requests="$(field requests)"
    duration="$(field duration_us)"
    errors=$(($(field status_errors) + $(field connect_errors) + $(field read_errors) + $(field write_errors) + $(field timeouts)))
    FIG[$w $server]="$(awk -v r="$requests" -v d="$duration" 'BEGIN { printf "%.0f", r / (d / 1e6) }')"
    FIG[$w $server mib]="$(awk -v r="$requests" -v d="$duration" -v s="$size" 'BEGIN { printf "%.0f", r * s / 1048576 / (d / 1e6) }')"
    FIG[$w $server p50]="$(field p50_us)"
    FIG[$w $server p99]="$(field p99_us)"
    FIG[$w $server errors]="$errors"
    if ((errors > 0)); then
        FIG[$w $server error_detail]="status $(field status_errors), connect $(field connect_errors), read $(field read_errors), write $(field write_errors), timeouts $(field timeouts) of $requests requests"
        KEEP_LOGS=1
    fi
}

# check_range SERVER FIRST: one ranged GET compared with the file; prints a problem or nothing.
check_range() {
    local server="$1" first="$2" last=$(($2 + RANGE_BYTES - 1)) code
    code="$(curl -sS --max-time 30 -H "Range: bytes=$first-$last" -o "$WORK/range.out" -w '%{http_code}' \
        "${BASE[$server]}/big.bin" 2>&1 || true)"
    if [[ "$code" != 206 ]]; then
        echo "Range: bytes=$first-$last answered $code"
    elif ! dd if="$WWW/big.bin" bs=64K iflag=skip_bytes,count_bytes skip="$first" count="$RANGE_BYTES" status=none |
        cmp -s - "$WORK/range.out"; then
        echo "Range: bytes=$first-$last answered 206 with wrong bytes ($(stat -c %s "$WORK/range.out") bytes)"
    fi
}

# check_put SERVER: a PUT of a fresh key, read back; prints a problem or nothing.
check_put() {
    local server="$1" url code
    url="${BASE[$server]}${PUT_PATH[$server]}check-$(now_ns)"
    set_auth "$server"
    code="$(curl -sS --max-time 30 -H 'Expect:' "${AUTH[@]}" -T "$PUT_SMALL" \
        -o "$LOGS/put-check-$server.out" -w '%{http_code}' "$url" 2>&1 || true)"
    if [[ "$code" != 20[01] ]]; then
        echo "PUT answered $code (body in put-check-$server.out)"
    elif ! curl -sS --max-time 30 "$url" | cmp -s - "$PUT_SMALL"; then
        echo "PUT answered $code but a GET of the key did not return the bytes"
    fi
}

available() { [[ -z "${DOWN[$1]:-}" ]]; }

# ---- workload 1: 1 GiB GET, one connection ------------------------------------------------

log "workload 1: 1 GiB GET"
for server in "${SELECTED[@]}"; do
    available "$server" || continue
    # Warm-up, and a check that the bytes are right.
    if ! curl -sS --max-time 120 "${BASE[$server]}/big.bin" | cmp -s - "$WWW/big.bin"; then
        FIG[w1 $server na]="GET /big.bin did not return the file's bytes"
        KEEP_LOGS=1
    fi
done
declare -A SPEEDS
for rep in $(seq "$REPS"); do
    for server in "${SELECTED[@]}"; do
        available "$server" && [[ -z "${FIG[w1 $server na]:-}" ]] || continue
        quiesce "before 1 GiB GET, $server, rep $rep"
        read -r code size speed < <(curl -sS --max-time 120 -o /dev/null \
            -w '%{http_code} %{size_download} %{speed_download}\n' "${BASE[$server]}/big.bin" || echo "000 0 0")
        if [[ "$code" != 200 || "$size" != "$BIG_BYTES" ]]; then
            FIG[w1 $server na]="GET /big.bin answered $code with $size bytes (rep $rep)"
            KEEP_LOGS=1
            continue
        fi
        SPEEDS[$server]+="$speed "
        log "  $server rep $rep: $(mib_per_s "$speed") MiB/s"
    done
done
for server in "${SELECTED[@]}"; do
    # shellcheck disable=SC2086 # a list of numbers
    [[ -n "${SPEEDS[$server]:-}" ]] && FIG[w1 $server]="$(mib_per_s "$(median ${SPEEDS[$server]})")"
done

# ---- workload 2: random 64 KiB ranged GETs at 16 and 64 connections ------------------------

for connections in 16 64; do
    w="w2c$connections"
    log "workload 2: ranged GETs at $connections connections"
    for server in "${SELECTED[@]}"; do
        available "$server" || continue
        problem="$(check_range "$server" 0)$(check_range "$server" 123457)$(check_range "$server" $((BIG_BYTES - RANGE_BYTES)))"
        if [[ -n "$problem" ]]; then
            FIG[$w $server na]="$problem"
            KEEP_LOGS=1
            continue
        fi
        quiesce "before ranged GETs at $connections connections, $server"
        ((WARMUP > 0)) && wrk_run "$server" "$w-warmup" "$connections" "$WARMUP" range.lua /big.bin "$BIG_BYTES" "$RANGE_BYTES"
        wrk_run "$server" "$w" "$connections" "$DURATION" range.lua /big.bin "$BIG_BYTES" "$RANGE_BYTES"
        record_wrk "$w" "$server" "$RANGE_BYTES"
        log "  $server: ${FIG[$w $server]:-?} req/s, p99 ${FIG[$w $server p99]:-?} µs"
    done
done

# ---- workload 3: 4 KiB GETs at 16 connections ---------------------------------------------

log "workload 3: 4 KiB GETs at 16 connections"
for server in "${SELECTED[@]}"; do
    available "$server" || continue
    if ! curl -sS --max-time 30 "${BASE[$server]}/small/0123" | cmp -s - "$WWW/small/0123"; then
        FIG[w3 $server na]="GET /small/0123 did not return the file's bytes"
        KEEP_LOGS=1
        continue
    fi
    quiesce "before 4 KiB GETs, $server"
    ((WARMUP > 0)) && wrk_run "$server" w3-warmup 16 "$WARMUP" small.lua /small/ "$SMALL_COUNT"
    wrk_run "$server" w3 16 "$DURATION" small.lua /small/ "$SMALL_COUNT"
    record_wrk w3 "$server" "$SMALL_BYTES"
    log "  $server: ${FIG[w3 $server]:-?} req/s, p99 ${FIG[w3 $server p99]:-?} µs"
done

# ---- machine limits for ingest ------------------------------------------------------------

log "machine limits: disk write + fsync, loopback"
DISK=()
for _ in 1 2; do
    quiesce "before the disk measurement"
    sync
    fresh_memory
    t0="$(now_ns)"
    dd if="$PUT_SOURCE" of="$WORK/dd.out" bs=1M conv=fsync status=none
    t1="$(now_ns)"
    rm -f "$WORK/dd.out"
    DISK+=("$(awk -v b="$BIG_BYTES" -v ns=$((t1 - t0)) 'BEGIN { printf "%.0f", b / 1048576 / (ns / 1e9) }')")
done
LIMIT_DISK="$(best "${DISK[@]}")"
LOOP_UP=()
LOOP_DOWN=()
if ((NGINX_OK)); then
    for _ in $(seq "$REPS"); do
        read -r code speed < <(curl -sS --max-time 120 -H 'Expect:' -T "$PUT_SOURCE" -o /dev/null \
            -w '%{http_code} %{speed_upload}\n' "http://127.0.0.1:$SINK_PORT/sink" || echo "000 0")
        [[ "$code" == 204 ]] && LOOP_UP+=("$(mib_per_s "$speed")")
        read -r code speed < <(curl -sS --max-time 120 -o /dev/null -w '%{http_code} %{speed_download}\n' \
            "http://127.0.0.1:$NGINX_SENDFILE_PORT/big.bin" || echo "000 0")
        [[ "$code" == 200 ]] && LOOP_DOWN+=("$(mib_per_s "$speed")")
    done
fi
LIMIT_UP="$( ((${#LOOP_UP[@]} > 0)) && best "${LOOP_UP[@]}" || echo "")"
LIMIT_DOWN="$( ((${#LOOP_DOWN[@]} > 0)) && best "${LOOP_DOWN[@]}" || echo "")"
if [[ -n "$LIMIT_UP" ]]; then
    LIMIT_INGEST=$((LIMIT_DISK < LIMIT_UP ? LIMIT_DISK : LIMIT_UP))
else
    LIMIT_INGEST="$LIMIT_DISK"
fi
log "  disk ${DISK[*]} MiB/s, loopback upload ${LOOP_UP[*]:-n/a}, download ${LOOP_DOWN[*]:-n/a} MiB/s"

# ---- workload 4: 1 GiB PUT, one connection ------------------------------------------------

log "workload 4: 1 GiB PUT"
for server in "${SELECTED[@]}"; do
    available "$server" || continue
    problem="$(check_put "$server")"
    if [[ -n "$problem" ]]; then
        PUT_DOWN[$server]="$problem"
        [[ "$server" == xrootd ]] || KEEP_LOGS=1
    fi
done
declare -A PUT_SPEEDS PUT_FLUSHED
for rep in $(seq "$REPS"); do
    for server in "${SELECTED[@]}"; do
        available "$server" && [[ -z "${PUT_DOWN[$server]:-}" && -z "${FIG[w4 $server na]:-}" ]] || continue
        # Distinct content for every PUT: a content-addressed store must not deduplicate it.
        printf '%-64.64s' "$server rep $rep $(now_ns)" | dd of="$PUT_SOURCE" bs=64 count=1 conv=notrunc status=none
        quiesce "before 1 GiB PUT, $server, rep $rep"
        sync # nothing of an earlier run is left to write back during this one
        fresh_memory
        key="${PUT_PATH[$server]}big-$rep"
        t0="$(now_ns)"
        set_auth "$server"
        read -r code size speed < <(curl -sS --max-time 600 -H 'Expect:' "${AUTH[@]}" \
            -T "$PUT_SOURCE" -o "$LOGS/put-big-$server.out" -w '%{http_code} %{size_upload} %{speed_upload}\n' \
            "${BASE[$server]}$key" || echo "000 0 0")
        t1="$(now_ns)"
        sync # what the server left in the page cache, made durable
        t2="$(now_ns)"
        if [[ "$code" != 20[01] || "$size" != "$BIG_BYTES" ]]; then
            FIG[w4 $server na]="PUT $key answered $code after $size bytes (body in put-big-$server.out)"
            KEEP_LOGS=1
            continue
        fi
        if is_reference "$server"; then
            cmp -s "${PUT_DIR[$server]}/big-$rep" "$PUT_SOURCE" || FIG[w4 $server na]="the stored file differs from the PUT body"
            rm -f "${PUT_DIR[$server]}/big-$rep"
        else
            curl -sS --max-time 120 "${BASE[$server]}$key" | cmp -s - "$PUT_SOURCE" ||
                FIG[w4 $server na]="GET $key after the PUT did not return the PUT body"
        fi
        PUT_SPEEDS[$server]+="$(mib_per_s "$speed") "
        PUT_FLUSHED[$server]+="$(awk -v b="$BIG_BYTES" -v ns=$((t2 - t0)) 'BEGIN { printf "%.0f", b / 1048576 / (ns / 1e9) }') "
        log "  $server rep $rep: $(mib_per_s "$speed") MiB/s (sync afterwards $(((t2 - t1) / 1000000)) ms)"
    done
done
for server in "${SELECTED[@]}"; do
    if [[ -n "${PUT_SPEEDS[$server]:-}" && -z "${FIG[w4 $server na]:-}" ]]; then
        # shellcheck disable=SC2086
        FIG[w4 $server]="$(median ${PUT_SPEEDS[$server]})"
        # shellcheck disable=SC2086
        FIG[w4 $server flushed]="$(median ${PUT_FLUSHED[$server]})"
    fi
done

# ---- workload 5: 64 KiB PUTs at 16 connections --------------------------------------------

log "workload 5: 64 KiB PUTs at 16 connections"
for server in "${SELECTED[@]}"; do
    available "$server" && [[ -z "${PUT_DOWN[$server]:-}" ]] || continue
    if is_reference "$server" && [[ ! -d "${PUT_DIR[$server]}" ]]; then
        mkdir -p "${PUT_DIR[$server]}"
        chown --reference="$(dirname "${PUT_DIR[$server]}")" "${PUT_DIR[$server]}"
    fi
    quiesce "before 64 KiB PUTs, $server"
    sync
    ((WARMUP > 0)) && wrk_run "$server" w5-warmup 16 "$WARMUP" put.lua "${PUT_PATH[$server]}warm-" "$PUT_BYTES" "${TOKEN[$server]:-}"
    sync
    wrk_run "$server" w5 16 "$DURATION" put.lua "${PUT_PATH[$server]}w5-" "$PUT_BYTES" "${TOKEN[$server]:-}"
    t0="$(now_ns)"
    sync
    t1="$(now_ns)"
    record_wrk w5 "$server" "$PUT_BYTES"
    FIG[w5 $server sync_ms]=$(((t1 - t0) / 1000000))
    if is_reference "$server"; then
        FIG[w5 $server files]="$(find "${PUT_DIR[$server]}" -name 'w5-*' | wc -l)"
        find "${PUT_DIR[$server]:?}" -mindepth 1 -delete
    fi
    log "  $server: ${FIG[w5 $server]:-?} req/s, p99 ${FIG[w5 $server p99]:-?} µs (sync afterwards ${FIG[w5 $server sync_ms]} ms)"
done

# Warnings the dataserver logged during the run.
for server in dataserver-verify dataserver-noverify; do
    if selected "$server" && [[ -f "$LOGS/$server.log" ]]; then
        count="$(grep -cE ' (WARN|ERROR) ' "$LOGS/$server.log" || true)"
        if ((count > 0)); then
            NOTES+=("$server logged $count WARN/ERROR lines, first: \`$(grep -m1 -E ' (WARN|ERROR) ' "$LOGS/$server.log" | cut -c1-300)\`")
            KEEP_LOGS=1
        fi
    fi
done

# ---- report -------------------------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "–"; else printf "%.2f×", a / b }'; }
ms() { awk -v us="$1" 'BEGIN { if (us == "") print "–"; else printf "%.2f ms", us / 1000 }'; }

# best_ref WORKLOAD [KEY] [min]: the best reference server for that figure (highest, or lowest
# with "min"); prints "server value" or nothing.
best_ref() {
    local w="$1" key="${2:-}" mode="${3:-max}" server value best_server="" best_value=""
    for server in "${SELECTED[@]}"; do
        is_reference "$server" || continue
        value="${FIG[$w $server${key:+ $key}]:-}"
        [[ -n "$value" && -z "${FIG[$w $server na]:-}" ]] || continue
        if [[ -z "$best_value" ]] ||
            awk -v a="$value" -v b="$best_value" -v m="$mode" 'BEGIN { exit !((m == "max") ? a > b : a < b) }'; then
            best_server="$server"
            best_value="$value"
        fi
    done
    [[ -n "$best_server" ]] && echo "$best_server $best_value"
    return 0
}

# na_reason WORKLOAD SERVER: why there is no figure, or nothing.
na_reason() {
    local w="$1" server="$2"
    if [[ -n "${DOWN[$server]:-}" ]]; then
        echo "n/a: ${DOWN[$server]}"
    elif [[ ("$w" == w4 || "$w" == w5) && -n "${PUT_DOWN[$server]:-}" ]]; then
        echo "n/a: ${PUT_DOWN[$server]}"
    elif [[ -n "${FIG[$w $server na]:-}" ]]; then
        echo "n/a: ${FIG[$w $server na]}"
    elif [[ -z "${FIG[$w $server]:-}" ]]; then
        echo "n/a: no figure"
    fi
}

# wrk_table WORKLOAD INGEST(0|1)
wrk_table() {
    local w="$1" ingest="$2" ref ref_server ref_rps ref_p99 server reason extra head
    ref="$(best_ref "$w")"
    ref_server="${ref% *}"
    ref_rps="${ref#* }"
    ref="$(best_ref "$w" p99 min)"
    ref_p99="${ref#* }"
    head="| server | requests/s | MiB/s | p50 | p99 | errors | requests/s vs best ref | p99 vs best ref |"
    ((ingest)) && head+=" MiB/s vs min(disk, loopback) |"
    echo "$head"
    ((ingest)) && echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|" || echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for server in "${SELECTED[@]}"; do
        reason="$(na_reason "$w" "$server")"
        if [[ -n "$reason" ]]; then
            extra=""
            ((ingest)) && extra=" |"
            echo "| $server | $reason | | | | | | |$extra"
            continue
        fi
        local rps="${FIG[$w $server]}" rps_ratio="" p99_ratio=""
        if is_dataserver "$server"; then
            rps_ratio="$(ratio "$rps" "$ref_rps")"
            p99_ratio="$(ratio "${FIG[$w $server p99]}" "$ref_p99")"
        elif [[ "$server" == "$ref_server" ]]; then
            rps_ratio="(best ref)"
        fi
        local line="| $server | $rps | ${FIG[$w $server mib]} | $(ms "${FIG[$w $server p50]}") | $(ms "${FIG[$w $server p99]}") | ${FIG[$w $server errors]} | $rps_ratio | $p99_ratio |"
        ((ingest)) && line+=" $(ratio "${FIG[$w $server mib]}" "$LIMIT_INGEST") |"
        echo "$line"
    done
    echo
    for server in "${SELECTED[@]}"; do
        [[ -n "${FIG[$w $server error_detail]:-}" ]] && echo "- $server errors: ${FIG[$w $server error_detail]} (wrk output: wrk-$w-$server.txt)"
    done
    return 0
}

version_of() { "$@" 2>&1 | head -n 1; }
commit="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git -C "$ROOT" --no-optional-locks diff-index --quiet HEAD -- 2>/dev/null; then commit+=" + uncommitted changes"; fi
command_line="DURATION=$DURATION WARMUP=$WARMUP SERVERS=\"${SELECTED[*]}\" ${HERE#"$ROOT"/}/run.sh"

echo "# dataserver HTTP benchmark"
echo
echo "Reproduce (from the repository root): \`$command_line\`"
echo
echo "- dataserver: commit $commit; $(version_of nginx -v | sed 's/^nginx version: //'); XRootD $(version_of xrootd -v 2>/dev/null || echo n/a); $(version_of wrk -v | cut -d' ' -f1-2); $(version_of curl --version | cut -d' ' -f1-2)"
echo "- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r); temp dir on $(df -PT "$WORK" | awk 'NR == 2 { print $2 }'); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- every server on 127.0.0.1 alongside the load generator (2 wrk threads); each wrk run: ${WARMUP} s warm-up, then ${DURATION} s measured; single-request figures: median of $REPS"
echo "- ratios: the dataserver's figure divided by the best reference server's (nginx with or without sendfile, XRootD) in this run; for p99 lower is better, for everything else higher"
echo
echo "## Machine limits"
echo
echo "| measurement | MiB/s | how |"
echo "|---|---:|---|"
echo "| disk write + fsync, 1 GiB | $LIMIT_DISK | \`dd if=<1 GiB file in page cache> of=<temp dir> bs=1M conv=fsync\`, best of 2 (${DISK[*]}) |"
echo "| loopback TCP, upload | ${LIMIT_UP:-n/a} | curl -T 1 GiB to an nginx location that discards the body (\`return 204\`), best of $REPS (${LOOP_UP[*]:-}) |"
echo "| loopback TCP, download | ${LIMIT_DOWN:-n/a} | curl GET of 1 GiB from nginx with sendfile (page cache), best of $REPS (${LOOP_DOWN[*]:-}); informative only: curl's receive path, not the wire, bounds it |"
echo "| ingest ceiling | $LIMIT_INGEST | min(disk write + fsync, loopback upload) |"
echo

echo "## 1. GET of a 1 GiB file (page-cached), one connection"
echo
ref="$(best_ref w1)"
echo "| server | MiB/s | vs best ref |"
echo "|---|---:|---:|"
for server in "${SELECTED[@]}"; do
    reason="$(na_reason w1 "$server")"
    if [[ -n "$reason" ]]; then
        echo "| $server | $reason | |"
    elif is_dataserver "$server"; then
        echo "| $server | ${FIG[w1 $server]} | $(ratio "${FIG[w1 $server]}" "${ref#* }") |"
    else
        echo "| $server | ${FIG[w1 $server]} | $([[ "$server" == "${ref% *}" ]] && echo "(best ref)") |"
    fi
done
echo
echo "## 2a. Random 64 KiB ranged GETs of the 1 GiB file, 16 connections"
echo
wrk_table w2c16 0
echo "## 2b. Random 64 KiB ranged GETs of the 1 GiB file, 64 connections"
echo
wrk_table w2c64 0
echo "## 3. GETs of random 4 KiB files (1000 files), 16 connections"
echo
wrk_table w3 0
echo "## 4. PUT of a 1 GiB file, one connection"
echo
ref="$(best_ref w4)"
ref_flushed="$(best_ref w4 flushed)"
echo "| server | MiB/s (until the response) | MiB/s (until the response + \`sync\`) | vs best ref | vs best ref, both incl. \`sync\` | vs min(disk, loopback) |"
echo "|---|---:|---:|---:|---:|---:|"
for server in "${SELECTED[@]}"; do
    reason="$(na_reason w4 "$server")"
    if [[ -n "$reason" ]]; then
        echo "| $server | $reason | | | | |"
    elif is_dataserver "$server"; then
        echo "| $server | ${FIG[w4 $server]} | ${FIG[w4 $server flushed]} | $(ratio "${FIG[w4 $server]}" "${ref#* }") | $(ratio "${FIG[w4 $server flushed]}" "${ref_flushed#* }") | $(ratio "${FIG[w4 $server]}" "$LIMIT_INGEST") |"
    else
        echo "| $server | ${FIG[w4 $server]} | ${FIG[w4 $server flushed]} | $([[ "$server" == "${ref% *}" ]] && echo "(best ref)") | $([[ "$server" == "${ref_flushed% *}" ]] && echo "(best ref)") | $(ratio "${FIG[w4 $server]}" "$LIMIT_INGEST") |"
    fi
done
echo
echo "## 5. PUTs of 64 KiB under fresh keys, 16 connections"
echo
wrk_table w5 1
for server in "${SELECTED[@]}"; do
    [[ -n "${FIG[w5 $server sync_ms]:-}" ]] || continue
    echo "- $server: \`sync\` right after the run took ${FIG[w5 $server sync_ms]} ms${FIG[w5 $server files]:+; ${FIG[w5 $server files]} files on disk}"
done
echo
echo "## Notes"
echo
echo "- nginx and XRootD acknowledge a PUT once the bytes are in the page cache; the dataserver fsyncs before it answers. The \"+ sync\" column of workload 4 and the sync times under workload 5 show what the page cache still had to write."
echo "- For PUT, nginx-sendfile and nginx-nosendfile run the same code (sendfile only serves responses): the gap between their rows is this run's noise."
echo "- Workload 5 ratio to min(disk, loopback) compares MiB/s of 64 KiB bodies with the sequential 1 GiB limits: an upper bound, not a target."
for server in "${SELECTED[@]}"; do
    [[ -n "${DOWN[$server]:-}" ]] && echo "- $server: n/a: ${DOWN[$server]}"
    [[ -n "${PUT_DOWN[$server]:-}" ]] && echo "- $server PUT: n/a: ${PUT_DOWN[$server]}"
done
for note in "${NOTES[@]}"; do echo "- $note"; done
echo "- total runtime: $((SECONDS - START_SECONDS)) s (including the build)"
log "done in $((SECONDS - START_SECONDS)) s"
