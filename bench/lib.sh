# Shared by the benchmark scripts (sqlite.sh, s3.sh): setup, timing, recording
# and checks.  Source it after setting HERE (this folder); it sets the common
# variables below, and each script then sets its own before begin_run:
#   RUN  the run's work directory (wiped by begin_run)
#   DB   the "live" database the tools back up, in RUN (a copy of the pristine one)
#   TSV  the raw results file that record() appends to
# shellcheck shell=bash

ROOT=$(dirname "$HERE")
BENCH_DIR=${BENCH_DIR:-/tmp/lifeboat-bench}
if [[ ${BENCH_SMALL:-0} == 1 ]]; then
    ROWS=${BENCH_ROWS:-250000}
else
    ROWS=${BENCH_ROWS:-5500000}
fi
PRISTINE=$BENCH_DIR/pristine-$ROWS.db
LB=${BENCH_LIFEBOAT:-$ROOT/target/release/lifeboat}
LB_OK=0                           # set to 1 once the binary built
DIY="sqlite3 .backup + zstd -3"   # tool names; the report scripts match on them
CHANGED="changed pages, zstd -3"

log()  { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }
size() { stat -c %s "$1"; }
dusize() { du -sb "$1" | cut -f1; }

# Run one SQL statement with Python's sqlite3, so checks work even where the
# sqlite3 CLI is missing (it is only needed for the DIY pipeline itself).
sql() {
    python3 -c 'import sqlite3,sys
con = sqlite3.connect(sys.argv[1])
for row in con.execute(sys.argv[2]): print("|".join(map(str, row)))' "$1" "$2"
}

# --- setup -------------------------------------------------------------------

# apt_install PKG...  -> install the packages with apt (needs root); a failure
# only warns: the caller checks what it got and skips what is still missing.
apt_install() {
    (($#)) || return 0
    log "installing $* with apt"
    if have apt-get && [[ $(id -u) == 0 ]]; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq "$@"; } >"$BENCH_DIR/apt.log" 2>&1 \
            || warn "apt-get failed (see $BENCH_DIR/apt.log)"
    else
        warn "cannot apt-get install (not root or no apt)"
    fi
}

# Build the release binary.  A build failure is not fatal: the other tools
# still run and Lifeboat's rows say why they are missing.
build_lifeboat() {
    if [[ ${BENCH_SKIP_BUILD:-0} != 1 && -z ${BENCH_LIFEBOAT:-} ]]; then
        log "cargo build --release"
        if ! (cd "$ROOT" && cargo build --release) >"$BENCH_DIR/build.log" 2>&1; then
            warn "cargo build --release failed; Lifeboat is skipped. Last lines of $BENCH_DIR/build.log:"
            tail -n 15 "$BENCH_DIR/build.log" >&2
            return
        fi
    fi
    if [[ -x $LB ]]; then LB_OK=1; else warn "$LB not found; Lifeboat is skipped"; fi
}

# Make (or reuse) the pristine database.  Reuse needs the exact row count, so
# a different BENCH_ROWS or a damaged file triggers regeneration.
prepare_pristine() {
    if [[ -f $PRISTINE ]] && [[ $(sql "$PRISTINE" "SELECT count(*) FROM events" 2>/dev/null) == "$ROWS" ]]; then
        log "reusing $PRISTINE"
    else
        log "generating $PRISTINE ($ROWS rows; slow at full size, done once)"
        python3 "$HERE/make_db.py" "$PRISTINE" "$ROWS" || { echo "make_db.py failed" >&2; exit 1; }
    fi
}

# begin_run TITLE -> a fresh $RUN holding the live database $DB (a copy of the
# pristine one), made the current directory, and $TSV started with the header.
begin_run() {
    rm -rf "$RUN"; mkdir -p "$RUN"
    # Measure Lifeboat's defaults: no ./lifeboat.toml from the caller's
    # directory, no LIFEBOAT_* overrides from the caller's environment
    # (that includes any passphrase).
    cd "$RUN" || exit 1
    # Each run makes its repositories again in the same place: to Lifeboat's trust state
    # that is another repository where one was, so each run is a new machine to it.
    export XDG_STATE_HOME="$RUN/state"
    unset LIFEBOAT_REPO LIFEBOAT_CONFIG LIFEBOAT_COMPRESSION LIFEBOAT_LEVEL
    unset LIFEBOAT_PASSWORD LIFEBOAT_PASSWORD_FILE LIFEBOAT_PASSWORD_COMMAND
    cp --reflink=auto "$PRISTINE" "$DB"
    local bytes pages psize mode
    bytes=$(size "$DB")
    pages=$(sql "$DB" "PRAGMA page_count"); psize=$(sql "$DB" "PRAGMA page_size")
    mode=$(sql "$DB" "PRAGMA journal_mode")
    {
        echo "# $1, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores," \
             "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)," \
             "$(lifeboat_version)"
        # Other work on the machine (e.g. a cargo build) skews timings; say so.
        echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "# database: $ROWS rows, $bytes bytes ($((bytes / 1048576)) MiB), $pages pages of $psize B, journal_mode=$mode"
    } >"$TSV"
    sed 's/^# //' "$TSV" >&2
}

# --- measurement -------------------------------------------------------------

DROP_OK=1
# Cold cache for every timed step, so no tool benefits from the previous one
# having read the database.  Needs root; warn once and carry on otherwise.
drop_caches() {
    sync
    if ((DROP_OK)) && ! { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
        warn "cannot write /proc/sys/vm/drop_caches: timings are with a warm page cache"
        DROP_OK=0
    fi
}

# run_timed OUTFILE CMD...  -> sets T_SECS, T_RSS_KIB (peak RSS of the command
# and its children, KiB), T_CPU (user + system CPU seconds, which a busy machine
# skews less than wall time); stdout to OUTFILE, stderr to OUTFILE.err, stdin from
# /dev/null (nothing may prompt); returns the command's exit status.
run_timed() {
    local out=$1 tf=$RUN/.time rc; shift
    drop_caches
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -f '%e %M %U %S' -o "$tf" "$@" </dev/null >"$out" 2>"$out.err"; rc=$?
    else   # the same numbers from wait4(), for machines without GNU time
        python3 -c 'import os,sys,time
t=time.monotonic(); p=os.fork()
if p==0:
    fd=os.open(sys.argv[2],os.O_WRONLY|os.O_CREAT|os.O_TRUNC); os.dup2(fd,1)
    fd=os.open(sys.argv[2]+".err",os.O_WRONLY|os.O_CREAT|os.O_TRUNC); os.dup2(fd,2)
    os.execvp(sys.argv[3],sys.argv[3:])
_,st,ru=os.wait4(p,0)
open(sys.argv[1],"w").write("%.2f %d %.2f %.2f\n"%(time.monotonic()-t,ru.ru_maxrss,ru.ru_utime,ru.ru_stime))
sys.exit(os.waitstatus_to_exitcode(st))' "$tf" "$out" "$@" </dev/null; rc=$?
    fi
    # GNU time prefixes a "Command exited with non-zero status" line on failure.
    local user sys
    read -r T_SECS T_RSS_KIB user sys < <(tail -n 1 "$tf")
    T_CPU=$(awk -v u="${user:-0}" -v s="${sys:-0}" 'BEGIN {printf "%.2f", u + s}')
    return $rc
}

# record STEP TOOL SECS BYTES RSS_KIB NOTE  -> one row of the results table
record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$TSV"
    printf '    %-14s %-26s %8s s  %14s B  %6s KiB  %s\n' "$@" >&2
}

# "lifeboat <version> (commit X[, dirty])" for the results header.
lifeboat_version() {
    ((LB_OK)) || { echo "lifeboat not built"; return; }
    local v c
    v=$("$LB" --version 2>/dev/null | head -n 1); v=${v:-lifeboat (no --version)}
    c=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null) || c="no commits yet"
    [[ -n $(cd "$ROOT" && git status --porcelain -- src Cargo.toml 2>/dev/null) ]] && c+=", src dirty"
    # An outside binary was not built from this tree: say so, not just its state.
    if [[ -n ${BENCH_LIFEBOAT:-} ]]; then echo "$v (binary $LB; this tree: commit $c)"
    else echo "$v (commit $c)"; fi
}

# Why a lifeboat backup run failed: exit status, or output without JSON.
lb_failure() {
    local rc=$1 out=$2
    if ((rc)); then echo "FAILED: exit $rc (see $out.err)"
    else echo "FAILED: exit 0 but no JSON object on stdout (see $out)"; fi
}

# Last JSON object printed by `lifeboat ... --json` -> "id logical new repo ms".
lifeboat_json() {
    python3 -c 'import json,sys
obj=None
text=open(sys.argv[1]).read()
try: obj=json.loads(text[text.find("{"):])    # whole output, or all from the first "{"
except ValueError:
    for line in reversed(text.splitlines()):
        try: obj=json.loads(line); break
        except ValueError: pass
if not isinstance(obj,dict): sys.exit(1)
print(*[obj.get(k,"?") for k in ("id","logical_bytes","new_stored_bytes","repo_stored_bytes","duration_ms")])' "$1"
}

# Median and largest of the numbers given as arguments (postgres.sh, pg_physical.sh).
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
maxof() { printf '%s\n' "$@" | sort -g | tail -n 1; }

json_field() {   # FILE KEY... -> the keys of the JSON object FILE holds (the last one)
    python3 -c 'import json,sys
text=open(sys.argv[1]).read()
obj=None
try: obj=json.loads(text[text.find("{"):])
except ValueError:
    for line in reversed(text.splitlines()):
        try: obj=json.loads(line); break
        except ValueError: pass
print(*[(obj or {}).get(k, "?") for k in sys.argv[2:]])' "$@" 2>/dev/null || echo "?"
}

# Is FILE a sound database with WANT rows?  -> note text
check_restored() {
    local f=$1 want=$2 qc cnt
    [[ -s $f ]] || { echo "MISSING OUTPUT"; return 1; }
    qc=$(sql "$f" "PRAGMA quick_check" 2>&1 | head -n1)
    cnt=$(sql "$f" "SELECT count(*) FROM events" 2>&1)
    if [[ $qc == ok && $cnt == "$want" ]]; then echo "quick_check ok, $cnt rows"
    else echo "BAD RESTORE: quick_check=$qc rows=$cnt want=$want"; return 1; fi
}

# --- the change --------------------------------------------------------------

# Apply the change once, then measure the floor for an incremental backup:
# zstd -3 of exactly the pages that differ (recorded as the "change" row).
step_change() {
    log "step 2: realistic change (1% update, 0.5% insert, 0.2% delete)"
    # The pre-change copy is taken now, after the full backups, and both files
    # are checkpointed (pristine is; change_db.py checkpoints at its end), so
    # the main files hold the whole state when compared.
    sql "$DB" "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null
    cp --reflink=auto "$DB" "$RUN/pre-change.db"
    local msg diff pages_note
    msg=$(python3 "$HERE/change_db.py" "$DB") || { echo "change_db.py failed" >&2; exit 1; }
    sql "$DB" "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null
    diff=$(python3 "$HERE/page_diff.py" "$RUN/pre-change.db" "$DB" "$RUN/changed-pages.bin")
    read -r _ ch _ nw _ tot _ ps <<<"$diff"
    pages_note="$((ch + nw)) of $tot pages differ ($ch changed, $nw new), raw $(size "$RUN/changed-pages.bin") B"
    echo "# change: $msg; $pages_note" >>"$TSV"
    if have zstd; then
        record "change" "$CHANGED" "" "$(zstd -3 -q -c "$RUN/changed-pages.bin" | wc -c)" "" "$pages_note"
    else
        record "change" "$CHANGED" "" "" "" "skipped: zstd missing; $pages_note"
    fi
    rm -f "$RUN/pre-change.db" "$RUN/changed-pages.bin"
}

# --- the S3 server (s3.sh, replicate.sh): SeaweedFS `weed mini` on 127.0.0.1 -----
# Needs WEED, RUN and BUCKET; WEED_PID and ENDPOINT are set by start_s3.

# Are all the ports of port base $1 free on 127.0.0.1?
ports_free() {
    python3 -c 'import socket,sys
b=int(sys.argv[1])
for p in [b+o+g for o in (1,2,3,4,7) for g in (0,10000)]:
    s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
    try: s.bind(("127.0.0.1",p))
    except OSError: sys.exit(1)
    finally: s.close()' "$1"
}

# Start weed mini (no auth: no AWS_* in its environment) and create the bucket.
# Sets WEED_PID and ENDPOINT (the caller stops it with stop_s3, e.g. on EXIT).  Flags as in tests/common/s3.rs.
start_s3() {
    local dir=$RUN/weed base code i
    mkdir -p "$dir/data"
    for ((base = ${BENCH_S3_BASE:-30000}, i = 0; i < 5; base += 20, i++)); do
        ports_free $base || continue
        (cd "$dir" && exec env -i PATH="$PATH" HOME="$dir" TMPDIR="$dir" "$WEED" mini \
            -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
            -master.port=$((base + 1)) -volume.port=$((base + 2)) -filer.port=$((base + 3)) \
            -s3.port=$((base + 4)) -s3.port.iceberg=0 -s3.port.lance=0 \
            -admin.port=$((base + 7)) -admin.ui=false -webdav=false -master.telemetry=false \
            -volume.preStopSeconds=0 \
            -filer.localSocket="$dir/filer.sock" -s3.localSocket="$dir/s3.sock") \
            </dev/null >"$dir/weed.log" 2>&1 &
        WEED_PID=$!
        ENDPOINT=http://127.0.0.1:$((base + 4))
        for ((t = 0; t < 200; t++)); do   # up to 20 s; it is usually ready within 1 s
            kill -0 "$WEED_PID" 2>/dev/null || break
            code=$(curl -s -o /dev/null -w '%{http_code}' "$ENDPOINT/")
            [[ $code != 000 ]] && break
            sleep 0.1
        done
        if kill -0 "$WEED_PID" 2>/dev/null && [[ $code != 000 ]]; then
            for ((t = 0; t < 100; t++)); do   # the bucket, retried briefly like the tests do
                [[ $(curl -s -o /dev/null -w '%{http_code}' -X PUT "$ENDPOINT/$BUCKET") == 200 ]] && {
                    log "weed mini (pid $WEED_PID) serving S3 on $ENDPOINT, bucket $BUCKET"; return; }
                sleep 0.1
            done
            echo "could not create bucket $BUCKET on $ENDPOINT; log: $dir/weed.log" >&2; exit 1
        fi
        warn "weed mini on port base $base did not come up; trying another (log: $dir/weed.log)"
        stop_s3
    done
    echo "weed mini failed to start; last log:" >&2; tail -n 20 "$dir/weed.log" >&2; exit 1
}

# Stop our server by its PID: SIGTERM, SIGKILL after 30 s (it usually takes ~4 s).
stop_s3() {
    [[ -n $WEED_PID ]] || return 0
    kill "$WEED_PID" 2>/dev/null
    for ((t = 0; t < 300; t++)); do kill -0 "$WEED_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$WEED_PID" 2>/dev/null && { warn "weed mini ignored SIGTERM; SIGKILL"; kill -9 "$WEED_PID"; }
    wait "$WEED_PID" 2>/dev/null
    WEED_PID=""
}

# --- a throwaway PostgreSQL cluster (pg_dump_forms.sh, a later postgres.sh) -------
# start_pg DIR -> initdb a new cluster in DIR/data (socket in DIR/sock, log DIR/pg.log),
# listening on 127.0.0.1 at a free port, fsync off; starts it and exports PGHOST, PGPORT,
# PGUSER (postgres) and PGDATABASE (postgres) for the clients, PG_DIR for stop_pg.  The
# server programs run as the `postgres` user when we are root (initdb refuses root).
# PG_BIN: the server binaries (default BENCH_PG_BIN, else the newest /usr/lib/postgresql/*/bin).
# The caller sets `trap stop_pg EXIT` (stop_pg is safe to call twice or before start_pg).
# As root, DIR and its parents must be reachable by `postgres` (e.g. under /tmp, not /root).
PG_DIR=""
pg_bin() {
    [[ -z ${PG_BIN:-} ]] || return 0   # (a bare `return` in a trap gives the trap's status)
    PG_BIN=${BENCH_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
    [[ -x $PG_BIN/initdb ]] || { echo "no PostgreSQL server binaries (set BENCH_PG_BIN)" >&2; exit 1; }
}
as_pg() {   # run a server program as `postgres` when root
    if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
start_pg() {
    local dir=$1 port
    pg_bin
    mkdir -p "$dir/sock"
    [[ $(id -u) == 0 ]] && chown postgres: "$dir" "$dir/sock"
    as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale \
        >"$dir/initdb.log" 2>&1 || { echo "initdb failed; see $dir/initdb.log" >&2; exit 1; }
    port=$(free_port)
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/sock'
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 4GB
CONF
    PG_DIR=$dir
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -w -t 60 start >/dev/null \
        || { echo "PostgreSQL did not start; see $dir/pg.log" >&2; tail -n 20 "$dir/pg.log" >&2; exit 1; }
    export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres
    unset PGPASSWORD PGSERVICE PGSERVICEFILE PGPASSFILE PGOPTIONS
    log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $dir/data"
}
# make_pg_bench_db -> database $DBNAME on the running cluster (start_pg): `pgbench -i -s
# $SCALE`, then `docs (id, body)` with TEXT_MB*1000 rows of random-word text (pg_docs.py);
# vacuumed and checkpointed. Sets PGDATABASE and DOCS_ROWS. The caller defines q (psql, -c
# or stdin) and die, and sets PGBENCH, RUN and HERE (the bench folder).
make_pg_bench_db() {
    local rows=$((TEXT_MB * 1000))
    q -c "CREATE DATABASE $DBNAME"
    export PGDATABASE=$DBNAME
    log "pgbench -i -s $SCALE"
    "$PGBENCH" -i -q -s "$SCALE" "$DBNAME" >"$RUN/pgbench-init.log" 2>&1 || { tail "$RUN/pgbench-init.log" >&2; die "pgbench -i failed"; }
    log "docs: $rows rows of random words (~$TEXT_MB MB), COPY from pg_docs.py"
    q -c "CREATE TABLE docs (id bigint PRIMARY KEY, body text NOT NULL)" || die "CREATE TABLE docs"
    python3 "$HERE/pg_docs.py" docs "$rows" 1 | q -c "COPY docs FROM STDIN" || die "loading docs failed"
    q -c "VACUUM ANALYZE" && q -c CHECKPOINT || die "VACUUM"
    DOCS_ROWS=$rows
}
# Stop our cluster (fast shutdown; SIGQUIT to its postmaster by pid if that fails).
stop_pg() {
    [[ -n $PG_DIR ]] || return 0
    local data=$PG_DIR/data pid
    PG_DIR=""
    pg_bin
    as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null 2>&1 && return 0
    pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null) || return 0
    [[ -n $pid ]] && kill -QUIT "$pid" 2>/dev/null
    return 0
}
