#!/usr/bin/env bash
# `lifeboat daemon` benchmark (issue 16): what an idle daemon costs, and how fast its API
# answers with 10,000 backups in the repository.
#
# The data (made once, cached in $BENCH_DIR/daemon/data-$BACKUPS; made again only when a
# repository is missing or does not list exactly $BACKUPS backups):
#   * 100 tiny SQLite files src/db001.db .. db100.db (8 KiB each);
#   * repo/: $BACKUPS/100 runs of `lifeboat backup src/*.db --time T` (one run of the 100
#     files makes 100 backups), T one hour apart ending now, $BENCH_PAR runs at once
#     (the repository lock lets runs overlap: 4 at once make it ~3x faster than one by one);
#   * repo-enc/: the same, encrypted (`repo init --encrypt`, LIFEBOAT_PASSWORD, a light
#     key derivation: --argon2-memory 8192 --argon2-iterations 1 --argon2-parallelism 1).
#
# Phases (each daemon runs with a config written here: a read-only token, [daemon]
# state_dir in the run folder; SIGTERM at the end, it must exit 0):
#   1 idle     a NEW repository and 10 of the SQLite files as 10 [[source]] tables,
#              schedule "every 24h", health "every 24h": the daemon starts, backs up each
#              source once (first run) and checks it; once /api/v1/status shows 10 sources
#              with a backup and no job queued or running (every job must have succeeded),
#              2 s of rest, then $IDLE_SECONDS of sampling: utime+stime of the process
#              (/proc/PID/stat, every thread) over the window -> CPU seconds per hour and %
#              of one core; VmRSS and VmHWM (/proc/PID/status) at the end; thread context
#              switches per second. No job may run in the window (/api/v1/jobs before and
#              after, and the repository still holds 10 backups).
#   2 loaded   the daemon on repo/ ($BACKUPS backups), 10 sources (db001..db010, schedule
#              and health "off": it only serves, and the cached repository is never
#              written): start to ready (spawn to the first 200 of /api/v1/health/ready:
#              the catalog reads every manifest once), RSS then; $IDLE_SECONDS of idle
#              sampling as in phase 1 (its catalog refresh lists the repository every 30 s);
#              then latency, daemon_load.py (http.client, keep-alive), $REQUESTS requests
#              per endpoint over 1 connection, then over $CONNS at once:
#                list         GET /api/v1/backups                 (default limit 100)
#                list-source  GET /api/v1/backups?source=db005   (its 100 of the 10,000)
#                status       GET /api/v1/status
#                metrics      GET /metrics                        (the scrape)
#                list-all     GET /api/v1/backups?limit=10000     (info, $REQUESTS/20 requests)
#              every answer must be 200, and the first and last of each connection must be
#              right (count, total, the source of every backup, the backup count of status,
#              lifeboat_repository_backups in /metrics); VmRSS and VmHWM at the end.
#   3 encrypted  the same on repo-enc/: start to ready, list, list-source, status over 1
#              connection, RSS (BENCH_ENCRYPTED=0: skipped).
#   4 CLI      what a cron script does today: `lifeboat list --json` (all, and --source
#              of db005) on the same repositories, $CLI_RUNS runs after one warm-up, warm
#              page cache, wall time (median, max) and peak RSS (GNU time); its output must
#              hold the same number of backups. The table puts the API's p50 against it.
#
# Targets (issue; report_daemon.py prints the table, ratios and verdicts): idle CPU < 1% of
# a core and RSS <= 64 MiB (phase 1); p99 <= 50 ms of list, list-source and status with
# 10,000 backups (the largest p99 over every run of the endpoint: 1 and $CONNS
# connections, plain and encrypted); /metrics p99 <= 20 ms. Start to ready and RSS with
# 10,000 backups are reported without a target. With fewer backups (--quick) the latency
# targets are "n/a".
#
# Usage:
#   bench/daemon.sh            # full size: 10,000 backups (made once, ~3 min), ~6 min a run
#   bench/daemon.sh --quick    # 1,000 backups, 20 s idle windows, 400 requests: checks the script
# Environment:
#   BENCH_BACKUPS        backups in the repositories (10000; --quick 1000); a multiple of 100
#   BENCH_IDLE_SECONDS   each idle window (60; --quick 20)
#   BENCH_REQUESTS       requests per endpoint and run (2000; --quick 400)
#   BENCH_CONNS          connections of the concurrent runs (4)
#   BENCH_CLI_RUNS       timed runs of `lifeboat list --json` (5; --quick 3)
#   BENCH_PAR            backup runs at once while making the data (4)
#   BENCH_ENCRYPTED=0    no encrypted repository
#   BENCH_LIFEBOAT       a lifeboat binary instead of `cargo build --release`
#   BENCH_DIR            work folder (/tmp/lifeboat-bench); data cached in $BENCH_DIR/daemon,
#                        the run in $BENCH_DIR/daemon/run (kept, for the daemons' logs)
# Writes $BENCH_DIR/results-daemon.tsv (raw) and results-daemon.md (the report);
# --quick: results-daemon-quick.*.

set -uo pipefail   # no -e: a failing measurement is recorded as failed; setup failures exit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"   # log, warn, have, dusize, build_lifeboat, lifeboat_version, median, maxof, free_port

QUICK=0
case ${1:-} in
--quick) QUICK=1 ;;
"") ;;
*) echo "usage: bench/daemon.sh [--quick]" >&2; exit 2 ;;
esac
if ((QUICK)); then
    BACKUPS=${BENCH_BACKUPS:-1000} IDLE_SECONDS=${BENCH_IDLE_SECONDS:-20}
    REQUESTS=${BENCH_REQUESTS:-400} CLI_RUNS=${BENCH_CLI_RUNS:-3} SUFFIX=-quick
else
    BACKUPS=${BENCH_BACKUPS:-10000} IDLE_SECONDS=${BENCH_IDLE_SECONDS:-60}
    REQUESTS=${BENCH_REQUESTS:-2000} CLI_RUNS=${BENCH_CLI_RUNS:-5} SUFFIX=""
fi
CONNS=${BENCH_CONNS:-4}
PAR=${BENCH_PAR:-4}
ENCRYPTED=${BENCH_ENCRYPTED:-1}
FILES=100          # SQLite files, backed up together by each run
SOURCES=10         # [[source]] tables of the daemons
FILTER=db005       # the source of the filtered list
PASSWORD=bench-password
WORK=$BENCH_DIR/daemon
DATA=$WORK/data-$BACKUPS
RUN=$WORK/run
TSV=$BENCH_DIR/results-daemon$SUFFIX.tsv
MD=$BENCH_DIR/results-daemon$SUFFIX.md
LOAD=(python3 "$HERE/daemon_load.py")
FAILS=0
D_PID=""

die() { echo "ERROR: $*" >&2; exit 1; }
((BACKUPS % FILES == 0 && BACKUPS >= FILES)) || die "BENCH_BACKUPS must be a multiple of $FILES"
[[ -x /usr/bin/time ]] || apt_install time
[[ -x /usr/bin/time ]] || die "GNU time (/usr/bin/time) is required"
load() { cut -d' ' -f1-3 /proc/loadavg; }

# row STEP CASE REPO CONNS FIELDS NOTE -> one line of the results (report_daemon.py's format)
row() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$TSV"
    printf '    %-8s %-12s %-9s %-2s %s  %s\n' "$@" >&2
}
failed() {   # STEP CASE REPO CONNS WHY -> a FAILED row, counted
    FAILS=$((FAILS + 1))
    warn "$2 ($3): $5"
    row "$1" "$2" "$3" "$4" "" "FAILED: $5"
}

# --- the data ------------------------------------------------------------------------------

backups_in() { find "$1/backups" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

make_files() {
    [[ $(find "$DATA/src" -name 'db*.db' 2>/dev/null | wc -l) == "$FILES" ]] && return
    rm -rf "$DATA/src"; mkdir -p "$DATA/src"
    python3 - "$DATA/src" "$FILES" <<'PY' || die "making the SQLite files failed"
import sqlite3, sys
for i in range(1, int(sys.argv[2]) + 1):
    c = sqlite3.connect(f"{sys.argv[1]}/db{i:03d}.db")
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    c.executemany("INSERT INTO t (v) VALUES (?)", [(f"source {i} row {j}",) for j in range(20)])
    c.commit()
    c.close()
PY
}

# make_repo NAME [--encrypt] -> $DATA/NAME with $BACKUPS backups (reused when it has them)
make_repo() {
    local name=$1 repo=$DATA/$1 enc=${2:-} t0=$SECONDS runs=$((BACKUPS / FILES)) now got
    got=$(backups_in "$repo")
    if [[ -f $repo.ok && $got == "$BACKUPS" ]]; then
        log "reusing $repo ($got backups)"
        row setup repository "$name" - "backups=$got secs=0 bytes=$(dusize "$repo") cached=1" "made earlier: $(cat "$repo.ok")"
        return
    fi
    log "making $repo: $runs runs of \`lifeboat backup\` of $FILES files, $PAR at once"
    rm -rf "$repo" "$repo.ok" "$DATA/state-$name"
    local init=(repo init)
    [[ -n $enc ]] && init+=(--encrypt --argon2-memory 8192 --argon2-iterations 1 --argon2-parallelism 1)
    lbdata "$name" --repo "$repo" "${init[@]}" >"$DATA/$name-init.log" 2>&1 \
        || { cat "$DATA/$name-init.log" >&2; die "repo init of $repo failed"; }
    now=$(date -u +%s)
    lbenv "$name"
    # shellcheck disable=SC2016  # the bash -c script expands its own arguments
    # One line per run: its time, an hour apart, the newest now.
    seq 1 "$runs" | while read -r k; do date -u -d "@$((now - (runs - k) * 3600))" +%Y-%m-%dT%H:%M:%SZ; done \
        | xargs -P "$PAR" -I{} bash -c '"$@" >/dev/null 2>>"$0" || { echo "a backup run failed" >>"$0"; exit 255; }' \
            "$DATA/$name-backup.err" "${LBENV[@]}" --repo "$repo" backup --time {} "$DATA"/src/db*.db
    got=$(backups_in "$repo")
    [[ $got == "$BACKUPS" ]] || { tail -n 5 "$DATA/$name-backup.err" >&2; die "$repo lists $got backups, not $BACKUPS"; }
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $runs runs in $((SECONDS - t0)) s, $PAR at once" >"$repo.ok"
    row setup repository "$name" - "backups=$got secs=$((SECONDS - t0)) bytes=$(dusize "$repo") cached=0" \
        "$runs runs of lifeboat backup of $FILES files, $PAR at once"
}
# Lifeboat on the cached data: its own trust state (made again with the repositories), the
# passphrase for repo-enc. lbenv NAME -> LBENV, the command's start; lbdata NAME ARGS... runs it.
lbenv() {
    LBENV=(env -i PATH="$PATH" HOME="$DATA/home" XDG_STATE_HOME="$DATA/state-$1" LIFEBOAT_TEMP_DIR="$DATA")
    [[ $1 == repo-enc ]] && LBENV+=("LIFEBOAT_PASSWORD=$PASSWORD")
    LBENV+=("$LB")
}
lbdata() { lbenv "$1"; shift; "${LBENV[@]}" "$@"; }

# --- a daemon ------------------------------------------------------------------------------

# write_config FILE REPO SRC_DIR SCHEDULE HEALTH STATE_DIR PORT -> a daemon config of
# $SOURCES sources (db001.. of SRC_DIR) and a read-only token ($TOKEN, in $RUN/token).
write_config() {
    local f=$1 repo=$2 src=$3 sched=$4 health=$5 state=$6 port=$7 i
    {
        echo "repo = \"$repo\""
        echo "[daemon]"
        echo "listen = \"127.0.0.1:$port\""
        echo "state_dir = \"$state\""
        echo "health = \"$health\""
        echo "[[daemon.token]]"
        echo "name = \"bench\""
        echo "file = \"$RUN/token\""
        echo "scopes = [\"read\"]"
        for ((i = 1; i <= SOURCES; i++)); do
            printf '[[source]]\nname = "db%03d"\npath = "%s/db%03d.db"\nschedule = "%s"\n' "$i" "$src" "$i" "$sched"
        done
    } >"$f"
}

# start_daemon CONFIG XDG_STATE_HOME [VAR=VALUE...] -> D_PID, URL, READY_S (spawn to ready)
start_daemon() {
    local conf=$1 state=$2 port out start; shift 2
    port=$(sed -n 's/^listen = "127.0.0.1:\([0-9]*\)"/\1/p' "$conf")
    URL=http://127.0.0.1:$port
    D_LOG=$RUN/daemon-$(basename "$conf" .toml).log
    start=$(date +%s.%N)
    env -i PATH="$PATH" HOME="$RUN/home" XDG_STATE_HOME="$state" LIFEBOAT_TEMP_DIR="$RUN" "$@" \
        "$LB" --config "$conf" daemon >"$D_LOG" 2>&1 &
    D_PID=$!
    if ! out=$("${LOAD[@]}" ready "$URL" "$start" 600); then
        tail -n 20 "$D_LOG" >&2
        die "the daemon ($conf) did not become ready; log $D_LOG"
    fi
    READY_S=${out#ready_s=}
    log "daemon $D_PID on $URL ready after $READY_S s"
}

stop_daemon() {
    [[ -n $D_PID ]] || return 0
    local pid=$D_PID rc
    D_PID=""
    kill -TERM "$pid" 2>/dev/null
    for ((t = 0; t < 300; t++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        warn "daemon $pid ignored SIGTERM for 30 s; SIGKILL"
        kill -9 "$pid"; wait "$pid" 2>/dev/null
        FAILS=$((FAILS + 1)); return 1
    fi
    wait "$pid"; rc=$?
    ((rc == 0)) || { warn "daemon $pid exited $rc on SIGTERM (log $D_LOG)"; FAILS=$((FAILS + 1)); }
    return 0
}
# shellcheck disable=SC2317  # run by the trap
cleanup() { stop_daemon; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# latency NAME REPO CONNS N PATH CHECKS... -> one latency row
latency() {
    local name=$1 repo=$2 conns=$3 n=$4 path=$5 out; shift 5
    if out=$("${LOAD[@]}" latency "$URL" "$TOKEN" "$path" "$n" "$conns" "$@" 2>"$RUN/latency.err"); then
        row latency "$name" "$repo" "$conns" "$out" "GET $path"
    else
        failed latency "$name" "$repo" "$conns" "$(tail -n 1 "$RUN/latency.err")"
    fi
}

# --- phases --------------------------------------------------------------------------------

phase_idle() {
    log "phase 1: idle daemon, $SOURCES sources on a new repository, ${IDLE_SECONDS}s window"
    local dir=$RUN/idle out
    mkdir -p "$dir/src"
    cp "$DATA"/src/db0{01..10}.db "$dir/src/"
    env -i PATH="$PATH" HOME="$RUN/home" XDG_STATE_HOME="$dir/xdg" "$LB" --repo "$dir/repo" repo init \
        >"$dir/init.log" 2>&1 || { cat "$dir/init.log" >&2; die "repo init failed"; }
    write_config "$RUN/idle.toml" "$dir/repo" "$dir/src" "every 24h" "every 24h" "$dir/state" "$(free_port)"
    start_daemon "$RUN/idle.toml" "$dir/xdg"
    if ! out=$("${LOAD[@]}" settle "$URL" "$TOKEN" "$SOURCES" 600 2>&1); then
        failed idle fresh plain - "first backups: $out"; stop_daemon; return
    fi
    log "  first backups and health checks done ($out); resting 2 s"
    sleep 2
    local before after n
    before=$("${LOAD[@]}" jobs "$URL" "$TOKEN")
    out=$("${LOAD[@]}" idle "$D_PID" "$IDLE_SECONDS") || { failed idle fresh plain - "sampling failed"; stop_daemon; return; }
    after=$("${LOAD[@]}" jobs "$URL" "$TOKEN")
    n=$(backups_in "$dir/repo")
    if [[ $n != "$SOURCES" ]]; then
        failed idle fresh plain - "the repository holds $n backups after the window, not $SOURCES (a job ran)"
    elif [[ $before != "$after" ]]; then
        failed idle fresh plain - "jobs ran during the window (before: $before; after: $after)"
    else
        row idle fresh plain - "$out" "$SOURCES sources, schedule and health every 24h, after their first backups; ready in $READY_S s"
    fi
    stop_daemon
}

phase_loaded() {   # REPO_NAME: repo or repo-enc
    local name=$1 full=1 out c pw=() conf=$RUN/$1.toml per=$((BACKUPS / FILES))
    [[ $name == repo-enc ]] && { full=0; pw=("LIFEBOAT_PASSWORD=$PASSWORD"); }
    log "phase: the daemon on $DATA/$name ($BACKUPS backups)"
    write_config "$conf" "$DATA/$name" "$DATA/src" off off "$RUN/state-$name" "$(free_port)"
    start_daemon "$conf" "$DATA/state-$name" "${pw[@]}"
    out=$("${LOAD[@]}" mem "$D_PID")
    row start loaded "$name" - "ready_s=$READY_S backups=$BACKUPS $out" "spawn to the first 200 of /api/v1/health/ready: the catalog of $BACKUPS manifests"
    if ((full)); then
        if out=$("${LOAD[@]}" idle "$D_PID" "$IDLE_SECONDS"); then
            row idle loaded "$name" - "$out" "$SOURCES sources (schedule and health off), catalog refresh every 30 s"
        else
            failed idle loaded "$name" - "sampling failed"
        fi
    fi
    local conns_list=(1)
    ((full)) && conns_list+=("$CONNS")
    for c in "${conns_list[@]}"; do
        log "  latency over $c connection(s), $REQUESTS requests per endpoint"
        latency list "$name" "$c" "$REQUESTS" /api/v1/backups --count "$((BACKUPS < 100 ? BACKUPS : 100))" --total "$BACKUPS"
        latency list-source "$name" "$c" "$REQUESTS" "/api/v1/backups?source=$FILTER" \
            --count "$((per < 100 ? per : 100))" --total "$BACKUPS" --source "$DATA/src/$FILTER.db"
        latency status "$name" "$c" "$REQUESTS" /api/v1/status --backups "$BACKUPS"
        ((full)) && latency metrics "$name" "$c" "$REQUESTS" /metrics --metric "lifeboat_repository_backups=$BACKUPS"
    done
    ((full)) && latency list-all "$name" 1 "$((REQUESTS / 20 > 10 ? REQUESTS / 20 : 10))" "/api/v1/backups?limit=10000" \
        --count "$BACKUPS" --total "$BACKUPS"
    out=$("${LOAD[@]}" mem "$D_PID")
    row memory loaded "$name" - "$out" "after the latency runs"
    stop_daemon
}

# cli_list REPO_NAME CASE WANT [ARGS...] -> a cli row: `lifeboat list --json ARGS`, warm
cli_list() {
    local name=$1 case=$2 want=$3 i secs=() rss=() got; shift 3
    lbenv "$name"
    "${LBENV[@]}" --repo "$DATA/$name" list --json "$@" >"$RUN/cli.json" 2>"$RUN/cli.err"   # warm-up
    for ((i = 1; i <= CLI_RUNS; i++)); do
        if ! /usr/bin/time -f '%e %M' -o "$RUN/cli.time" "${LBENV[@]}" --repo "$DATA/$name" list --json "$@" \
            >"$RUN/cli.json" 2>"$RUN/cli.err"; then
            failed cli "$case" "$name" 1 "lifeboat list --json $* failed: $(tail -n 1 "$RUN/cli.err")"; return
        fi
        read -r s r < <(tail -n 1 "$RUN/cli.time")
        secs+=("$s") rss+=("$r")
    done
    got=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$RUN/cli.json" 2>/dev/null)
    if [[ $got != "$want" ]]; then
        failed cli "$case" "$name" 1 "lifeboat list --json $* printed ${got:-no JSON list}, not $want backups"; return
    fi
    row cli "$case" "$name" 1 "runs=$CLI_RUNS median_s=$(median "${secs[@]}") max_s=$(maxof "${secs[@]}") rss_kib=$(maxof "${rss[@]}") backups=$got" \
        "lifeboat list --json${*:+ $*} (a new process each time, warm page cache); runs ${secs[*]} s"
}

phase_cli() {
    log "phase: \`lifeboat list --json\`, $CLI_RUNS runs each"
    local name
    for name in repo repo-enc; do
        [[ $name == repo-enc && $ENCRYPTED != 1 ]] && continue
        cli_list "$name" list "$BACKUPS"
        cli_list "$name" list-source "$((BACKUPS / FILES))" --source "$DATA/src/$FILTER.db"
    done
}

# --- main ----------------------------------------------------------------------------------

main() {
    local t0=$SECONDS
    mkdir -p "$WORK" || die "cannot create $WORK"
    unset LIFEBOAT_REPO LIFEBOAT_CONFIG LIFEBOAT_COMPRESSION LIFEBOAT_LEVEL LIFEBOAT_INIT
    unset LIFEBOAT_PASSWORD LIFEBOAT_PASSWORD_FILE LIFEBOAT_PASSWORD_COMMAND
    build_lifeboat
    ((LB_OK)) || die "no lifeboat binary"
    rm -rf "$RUN"; mkdir -p "$RUN/home" "$DATA/home"
    cd "$RUN" || exit 1
    TOKEN=bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    (umask 077 && echo "$TOKEN" >"$RUN/token")
    {
        echo "# lifeboat daemon benchmark$( ((QUICK)) && echo ' (--quick)'), $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores (shared with other work), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lifeboat_version)"
        echo "# load average at start: $(load)"
        echo "# repositories: $BACKUPS backups of $FILES SQLite files (8 KiB each) in $DATA; daemons with $SOURCES sources; $REQUESTS requests per endpoint and run, keep-alive (http.client), warm page cache"
    } >"$TSV"
    sed 's/^# //' "$TSV" >&2

    make_files
    make_repo repo
    [[ $ENCRYPTED == 1 ]] && make_repo repo-enc --encrypt
    phase_idle
    phase_loaded repo
    [[ $ENCRYPTED == 1 ]] && phase_loaded repo-enc
    phase_cli
    echo "# load average at end: $(load); whole run $((SECONDS - t0)) s" >>"$TSV"

    python3 "$HERE/report_daemon.py" "$TSV" | tee "$MD"
    log "written to $MD (raw: $TSV; daemon logs in $RUN)"
    ((FAILS)) && { echo "ERROR: $FAILS measurement(s) failed (see above)" >&2; exit 1; }
    exit 0
}

main
