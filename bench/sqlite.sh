#!/usr/bin/env bash
# Lifeboat SQLite benchmark.
#
# Compares Lifeboat with what a user would otherwise do to back up a live
# SQLite database:
#   * DIY:    sqlite3 ".backup x.db" then zstd -T0 -3 (consistent, compressed,
#             but every backup is a full copy)
#   * restic: file-level dedup + compression (incremental, but SQLite-unaware)
# on a ~1.1 GB WAL-mode database, through four steps:
#   full backup -> realistic change -> second backup -> restore latest
# measuring wall time and peak RSS (GNU time) with a cold page cache, and
# the bytes each tool stores.  Prints a table and a target check, and writes
# them to $BENCH_DIR/results.txt (raw numbers in $BENCH_DIR/results.tsv).
#
# Lifeboat is also measured with an encrypted repository (`repo init --encrypt`,
# passphrase from LIFEBOAT_PASSWORD, default Argon2id): each Lifeboat step is
# followed by the same step on the encrypted repository, on the same database
# bytes (the second backups both see the one changed database), and the report
# adds an "encryption overhead" section: encrypted/unencrypted time and peak
# RSS ratios, with targets of <= 1.10x each.
#
# Usage:
#   bench/sqlite.sh                   # full size (~1.1 GB DB, 5.5 M rows)
#   BENCH_SMALL=1 bench/sqlite.sh     # ~50 MB DB, under a minute: checks the script
# Environment:
#   BENCH_DIR   work directory (default /tmp/lifeboat-bench); needs ~8x the DB size free
#   BENCH_ROWS  rows in the generated database (default 5500000, or 250000 with BENCH_SMALL=1)
#   BENCH_SKIP_BUILD=1  use the existing target/release/lifeboat without `cargo build`
#   BENCH_LIFEBOAT      path of another lifeboat binary to measure (implies no build)
#   BENCH_SKIP_ENCRYPTED=1  skip the encrypted-repository steps and the overhead section
#
# The generated database is kept as $BENCH_DIR/pristine-<rows>.db and reused
# by later runs (generation takes a minute or two at full size); each run
# works on a fresh reflink/copy of it so every run starts from the same bytes.
# Run as root so the page cache can be dropped; otherwise times are warm-cache.

set -uo pipefail   # no -e: a failing tool is recorded as failed, not fatal

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BENCH_DIR=${BENCH_DIR:-/tmp/lifeboat-bench}
if [[ ${BENCH_SMALL:-0} == 1 ]]; then
    ROWS=${BENCH_ROWS:-250000}
else
    ROWS=${BENCH_ROWS:-5500000}
fi
PRISTINE=$BENCH_DIR/pristine-$ROWS.db
RUN=$BENCH_DIR/run                # everything of one run; wiped at the start
DB=$RUN/db.sqlite                 # the "live" database the tools back up
TSV=$BENCH_DIR/results.tsv
TXT=$BENCH_DIR/results.txt
LB=${BENCH_LIFEBOAT:-$ROOT/target/release/lifeboat}
LB_OK=0                           # set to 1 once the binary built
LB_ENC="lifeboat (encrypted)"     # tool name of the encrypted runs; report.py matches on it
ENC_OK=0                          # set to 1 once the encrypted repository exists
ENC_PASSWORD=lifeboat-bench       # passed only to the encrypted runs, as LIFEBOAT_PASSWORD
DIY="sqlite3 .backup + zstd -3"   # tool names; report.py matches on them
CHANGED="changed pages, zstd -3"
export RESTIC_PASSWORD=lifeboat-bench RESTIC_REPOSITORY=$RUN/restic-repo
export RESTIC_CACHE_DIR=$RUN/restic-cache   # restic's normal local cache, but per run

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

# Install what is missing with apt (once).  A tool that still cannot be had is
# skipped later with a message; only python3 and a timer are truly required.
ensure_tools() {
    local missing=()
    have restic  || missing+=(restic)
    have zstd    || missing+=(zstd)
    have sqlite3 || missing+=(sqlite3)
    [[ -x /usr/bin/time ]] || missing+=(time)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} with apt"
        if have apt-get && [[ $(id -u) == 0 ]]; then
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq "${missing[@]}"; } >"$BENCH_DIR/apt.log" 2>&1 \
                || warn "apt-get failed (see $BENCH_DIR/apt.log)"
        else
            warn "cannot apt-get install (not root or no apt)"
        fi
    fi
    have python3 || { echo "python3 is required" >&2; exit 1; }
    have restic  || warn "restic unavailable: its rows are skipped"
    have zstd    || warn "zstd unavailable: DIY pipeline and changed-pages size are skipped"
    have sqlite3 || warn "sqlite3 CLI unavailable: DIY pipeline is skipped"
    [[ -x /usr/bin/time ]] || warn "GNU time unavailable: falling back to a Python timer"
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
# and its children, KiB); stdout to OUTFILE, stderr to OUTFILE.err, stdin from
# /dev/null (nothing may prompt); returns the command's exit status.
run_timed() {
    local out=$1 tf=$RUN/.time rc; shift
    drop_caches
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -f '%e %M' -o "$tf" "$@" </dev/null >"$out" 2>"$out.err"; rc=$?
    else   # same two numbers from wait4(), for machines without GNU time
        python3 -c 'import os,sys,time
t=time.monotonic(); p=os.fork()
if p==0:
    fd=os.open(sys.argv[2],os.O_WRONLY|os.O_CREAT|os.O_TRUNC); os.dup2(fd,1)
    fd=os.open(sys.argv[2]+".err",os.O_WRONLY|os.O_CREAT|os.O_TRUNC); os.dup2(fd,2)
    os.execvp(sys.argv[3],sys.argv[3:])
_,st,ru=os.wait4(p,0)
open(sys.argv[1],"w").write("%.2f %d\n"%(time.monotonic()-t,ru.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(st))' "$tf" "$out" "$@" </dev/null; rc=$?
    fi
    # GNU time prefixes a "Command exited with non-zero status" line on failure.
    read -r T_SECS T_RSS_KIB < <(tail -n 1 "$tf")
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

# Is FILE a sound database with the same rows as the live DB?  -> note text
check_restored() {
    local f=$1 want=$2 qc cnt
    [[ -s $f ]] || { echo "MISSING OUTPUT"; return 1; }
    qc=$(sql "$f" "PRAGMA quick_check" 2>&1 | head -n1)
    cnt=$(sql "$f" "SELECT count(*) FROM events" 2>&1)
    if [[ $qc == ok && $cnt == "$want" ]]; then echo "quick_check ok, $cnt rows"
    else echo "BAD RESTORE: quick_check=$qc rows=$cnt want=$want"; return 1; fi
}

# --- lifeboat runs (plain and encrypted) ------------------------------------

# lb_cmd TOOL -> sets LB_CMD, the command line that runs lifeboat as TOOL, and
# LB_REPO, its repository.  The encrypted runs get the passphrase in their own
# environment only (through env(1), which execs lifeboat: same process, so the
# peak RSS is still lifeboat's).
lb_cmd() {
    if [[ $1 == "$LB_ENC" ]]; then
        LB_CMD=(env "LIFEBOAT_PASSWORD=$ENC_PASSWORD" "$LB"); LB_REPO=$RUN/lifeboat-repo-enc
    else
        LB_CMD=("$LB"); LB_REPO=$RUN/lifeboat-repo
    fi
}

# Create the encrypted repository (not timed: one-off setup, like restic init)
# and check that it reports itself encrypted.
init_encrypted() {
    ENC_OK=0
    if [[ ${BENCH_SKIP_ENCRYPTED:-0} == 1 ]]; then log "encrypted steps skipped (BENCH_SKIP_ENCRYPTED=1)"; return; fi
    ((LB_OK)) || return
    lb_cmd "$LB_ENC"
    if "${LB_CMD[@]}" repo init --encrypt --repo "$LB_REPO" --json </dev/null >"$RUN/lb-enc-init.out" 2>&1 \
        && "${LB_CMD[@]}" repo show --repo "$LB_REPO" --json </dev/null 2>&1 | grep -q '"encrypted":true'; then
        ENC_OK=1
    else
        warn "lifeboat repo init --encrypt failed (see $RUN/lb-enc-init.out); encrypted steps are skipped"
    fi
}

# Is TOOL runnable?  The plain runs need the binary; the encrypted ones also
# the encrypted repository, and are silent (no rows) when BENCH_SKIP_ENCRYPTED=1.
# -> 0 run it, 1 record it as skipped, 2 leave it out
lb_runnable() {
    if [[ $1 == "$LB_ENC" ]]; then
        [[ ${BENCH_SKIP_ENCRYPTED:-0} == 1 ]] && return 2
        ((LB_OK && ENC_OK)) && return 0
        return 1
    fi
    ((LB_OK)) && return 0
    return 1
}

# lb_backup STEP TOOL OUTNAME -> one timed `lifeboat backup` of the live DB,
# recorded with the repository's growth (whole size for the full backup).
lb_backup() {
    local step=$1 tool=$2 out=$RUN/$3.out j note rc id lo ne re ms before
    lb_runnable "$tool"; rc=$?
    ((rc == 2)) && return
    if ((rc)); then record "$step" "$tool" "" "" "" "skipped: no working binary or repository"; return; fi
    lb_cmd "$tool"
    before=0; [[ -d $LB_REPO ]] && before=$(dusize "$LB_REPO")
    [[ $step == "full backup" ]] && before=0
    run_timed "$out" "${LB_CMD[@]}" backup "$DB" --repo "$LB_REPO" --json; rc=$?
    if ((rc == 0)) && j=$(lifeboat_json "$out") && [[ -d $LB_REPO ]]; then
        read -r id lo ne re ms <<<"$j"
        note="json: id=$id logical=$lo new_stored=$ne repo_stored=$re duration_ms=$ms"
        record "$step" "$tool" "$T_SECS" "$(($(dusize "$LB_REPO") - before))" "$T_RSS_KIB" "$note"
        return 0
    fi
    record "$step" "$tool" "" "" "" "$(lb_failure $rc "$out")"
    if [[ $step == "full backup" ]]; then   # no point timing later steps against a broken binary
        if [[ $tool == "$LB_ENC" ]]; then ENC_OK=0; else LB_OK=0; fi
        warn "$tool backup failed; its later steps are skipped:"
        tail -n 5 "$out.err" "$out" >&2
    fi
    return 1
}

# lb_restore TOOL OUTNAME WANT_ROWS -> timed `lifeboat restore latest`, checked.
lb_restore() {
    local tool=$1 out=$RUN/$2.out file=$RUN/$2.db want=$3 note rc
    lb_runnable "$tool"; rc=$?
    ((rc == 2)) && return
    if ((rc)); then record "restore" "$tool" "" "" "" "skipped: no working binary or repository"; return; fi
    lb_cmd "$tool"
    if run_timed "$out" "${LB_CMD[@]}" restore latest --repo "$LB_REPO" --output "$file"; then
        local t=$T_SECS r=$T_RSS_KIB
        note=$(check_restored "$file" "$want")
        cmp -s "$file" "$DB" && note+=", byte-identical to source"
        record "restore" "$tool" "$t" "" "$r" "$note"
    else
        record "restore" "$tool" "" "" "" "FAILED (see $out.err)"
    fi
}

# --- steps -------------------------------------------------------------------

step_full_backup() {
    log "step 1: full backup"
    lb_backup "full backup" lifeboat lb-full
    init_encrypted
    lb_backup "full backup" "$LB_ENC" lb-enc-full

    if have sqlite3 && have zstd; then
        # Both halves timed together: that is the cost of one DIY backup.
        if run_timed "$RUN/diy.out" bash -c 'sqlite3 "$1" ".backup '\''$2'\''" && zstd -T0 -3 -q -f "$2" -o "$2.zst"' \
            _ "$DB" "$RUN/x.db"; then
            record "full backup" "$DIY" "$T_SECS" "$(size "$RUN/x.db.zst")" "$T_RSS_KIB" \
                "x.db $(size "$RUN/x.db") B"
            rm -f "$RUN/x.db"   # only the .zst is the backup; save disk
        else
            record "full backup" "$DIY" "" "" "" "FAILED (see $RUN/diy.out.err)"
        fi
    else
        record "full backup" "$DIY" "" "" "" "skipped: sqlite3 or zstd missing"
    fi

    if have restic; then
        restic init >"$RUN/restic-init.out" 2>&1   # not timed: one-off setup
        if run_timed "$RUN/restic-full.out" restic backup "$DB"; then
            RESTIC_FULL_REPO=$(dusize "$RESTIC_REPOSITORY")
            record "full backup" restic "$T_SECS" "$RESTIC_FULL_REPO" "$T_RSS_KIB" "du of repo (v2, compression auto)"
        else
            record "full backup" restic "" "" "" "FAILED (see $RUN/restic-full.out.err)"
        fi
    else
        record "full backup" restic "" "" "" "skipped: not installed"
    fi
}

# Apply the change once, then measure the floor for an incremental backup:
# zstd -3 of exactly the pages that differ.
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

step_second_backup() {
    log "step 3: second backup (after the change)"
    lb_backup "second backup" lifeboat lb-second
    lb_backup "second backup" "$LB_ENC" lb-enc-second

    if have restic && [[ -n ${RESTIC_FULL_REPO:-} ]]; then
        if run_timed "$RUN/restic-second.out" restic backup "$DB"; then
            record "second backup" restic "$T_SECS" "$(($(dusize "$RESTIC_REPOSITORY") - RESTIC_FULL_REPO))" \
                "$T_RSS_KIB" "repo size delta"
        else
            record "second backup" restic "" "" "" "FAILED (see $RUN/restic-second.out.err)"
        fi
    else
        record "second backup" restic "" "" "" "skipped"
    fi
}

# Restore the latest backup.  Lifeboat's and restic's latest is the
# post-change state; the DIY file is the pre-change one (same size, and
# decompressing it is all the DIY restore does).
step_restore() {
    log "step 4: restore latest"
    local want
    want=$(sql "$DB" "SELECT count(*) FROM events")
    lb_restore lifeboat lb-restore "$want"
    lb_restore "$LB_ENC" lb-enc-restore "$want"

    if [[ -f $RUN/x.db.zst ]]; then
        if run_timed "$RUN/unzstd.out" zstd -d -q -f "$RUN/x.db.zst" -o "$RUN/y.db"; then
            local t=$T_SECS r=$T_RSS_KIB
            record "restore" "zstd -d" "$t" "" "$r" "$(check_restored "$RUN/y.db" "$ROWS") (pre-change copy)"
        else
            record "restore" "zstd -d" "" "" "" "FAILED (see $RUN/unzstd.out.err)"
        fi
    else
        record "restore" "zstd -d" "" "" "" "skipped: no DIY backup"
    fi

    if have restic && [[ -n ${RESTIC_FULL_REPO:-} ]]; then
        if run_timed "$RUN/restic-restore.out" restic restore latest --target "$RUN/restic-restore"; then
            local t=$T_SECS r=$T_RSS_KIB
            record "restore" restic "$t" "" "$r" "$(check_restored "$RUN/restic-restore$DB" "$want")"
        else
            record "restore" restic "" "" "" "FAILED (see $RUN/restic-restore.out.err)"
        fi
    else
        record "restore" restic "" "" "" "skipped"
    fi
}

# --- main --------------------------------------------------------------------

main() {
    mkdir -p "$BENCH_DIR"
    ensure_tools
    build_lifeboat
    prepare_pristine

    rm -rf "$RUN"; mkdir -p "$RUN"
    # Measure Lifeboat's defaults: no ./lifeboat.toml from the caller's
    # directory, no LIFEBOAT_* overrides from the caller's environment.
    cd "$RUN" || exit 1
    # (That includes any passphrase: only the encrypted runs get one.)
    unset LIFEBOAT_REPO LIFEBOAT_CONFIG LIFEBOAT_COMPRESSION LIFEBOAT_LEVEL
    unset LIFEBOAT_PASSWORD LIFEBOAT_PASSWORD_FILE LIFEBOAT_PASSWORD_COMMAND
    cp --reflink=auto "$PRISTINE" "$DB"
    local bytes pages psize mode
    bytes=$(size "$DB")
    pages=$(sql "$DB" "PRAGMA page_count"); psize=$(sql "$DB" "PRAGMA page_size")
    mode=$(sql "$DB" "PRAGMA journal_mode")
    {
        echo "# Lifeboat SQLite benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores," \
             "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)," \
             "$(lifeboat_version)"
        # Other work on the machine (e.g. a cargo build) skews timings; say so.
        echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "# database: $ROWS rows, $bytes bytes ($((bytes / 1048576)) MiB), $pages pages of $psize B, journal_mode=$mode"
    } >"$TSV"
    sed 's/^# //' "$TSV" >&2

    step_full_backup
    step_change
    step_second_backup
    step_restore

    ((DROP_OK)) || echo "# WARNING: page cache could not be dropped; times are warm-cache" >>"$TSV"
    echo >&2
    python3 "$HERE/report.py" "$TSV" | tee "$TXT"
    log "results written to $TXT (raw: $TSV); run files in $RUN"
}

main "$@"
