#!/usr/bin/env bash
# Lifeboat DuckDB benchmark.
#
# Compares Lifeboat with what a user would otherwise do to back up a DuckDB database:
#   * cp + zstd:  copy the file, then zstd -T0 -3 (every backup is a full compressed copy)
#   * parquet:    EXPORT DATABASE 'dir' (FORMAT parquet), DuckDB's own logical export
#                 (DuckDB's default Parquet compression; every backup is a full export)
# on a ~1 GB analytics database (bench/duckdb_db.py: an `events` fact table of 46 M rows
# plus `users` and `products`), through these steps, each timed with a cold page cache:
#   full backup
#   change (a): a typical day: 1% new rows appended, a contiguous 1% of rows updated, CHECKPOINT
#   second backup (a)
#   -- back to the pristine file, and Lifeboat's repository as it was after the full backup --
#   change (b): 1% of rows updated at random, CHECKPOINT
#   second backup (b)
#   restore: `lifeboat restore ID --output` of backup (b) vs `zstd -d` of the (b) copy
#            (and IMPORT DATABASE of the (b) export, for the Parquet route)
# For each change it also records the floor for any block-level incremental: zstd -3 of the
# 256 KiB blocks of the new file that the old one lacks (bench/block_diff.py). Lifeboat's
# second backups are reported as `new_stored_bytes` from `backup --json`, and compared with
# "a new compressed copy": what cp + zstd stores for the same file.
# Measures wall time and peak RSS (GNU time; Lifeboat's includes the DuckDB CLI it runs,
# as the larger of the two), prints a table and a target check (targets of the issue: full
# backup <= 1.0x cp + zstd time; second backup (a) stores <= 0.05x a new compressed copy;
# (b) is reported, not judged), and writes them to $BENCH_DIR/results-duckdb.txt (raw
# numbers in $BENCH_DIR/results-duckdb.tsv).
#
# Usage:
#   bench/duckdb.sh                   # full size (~1 GB database, 46 M events)
#   BENCH_SMALL=1 bench/duckdb.sh     # ~60 MB database, under a minute: checks the script
# Environment:
#   LIFEBOAT_DUCKDB   the DuckDB CLI (default: duckdb on PATH; else duckdb-cli 1.5.6 is
#                     installed with pip into $BENCH_DIR/venv)
#   BENCH_DIR   work directory (default /tmp/lifeboat-bench); needs ~8x the DB size free
#   BENCH_ROWS  events in the generated database (default 46000000, or 1500000 with BENCH_SMALL=1)
#   BENCH_SKIP_BUILD=1  use the existing target/release/lifeboat without `cargo build`
#   BENCH_LIFEBOAT      path of another lifeboat binary to measure (implies no build)
#
# The generated database is kept as $BENCH_DIR/pristine-<rows>.duckdb and reused by later
# runs (generation takes a few minutes at full size); each run works on a fresh copy of it.
# Run as root so the page cache can be dropped; otherwise times are warm-cache.

set -uo pipefail   # no -e: a failing tool is recorded as failed, not fatal

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"   # BENCH_DIR, LB, timing (run_timed), recording (record), lifeboat_json
if [[ ${BENCH_SMALL:-0} == 1 ]]; then
    ROWS=${BENCH_ROWS:-1500000}
else
    ROWS=${BENCH_ROWS:-46000000}
fi
PRISTINE=$BENCH_DIR/pristine-$ROWS.duckdb
RUN=$BENCH_DIR/duckdb-run         # everything of one run; wiped at the start
DB=$RUN/app.duckdb                # the "live" database the tools back up
REPO=$RUN/lifeboat-repo
TSV=$BENCH_DIR/results-duckdb.tsv
TXT=$BENCH_DIR/results-duckdb.txt
DIY="cp + zstd -T0 -3"            # tool names; report_duckdb.py matches on them
PARQUET="EXPORT DATABASE parquet"
CHANGED="new blocks, zstd -3"

# The DuckDB CLI: LIFEBOAT_DUCKDB, else duckdb on PATH, else duckdb-cli from PyPI (the
# version the tests use) in a venv of the bench's own. Lifeboat gets the same one.
find_duckdb() {
    local d=${LIFEBOAT_DUCKDB:-$(command -v duckdb)}
    if [[ -z $d ]]; then
        d=$BENCH_DIR/venv/bin/duckdb
        if [[ ! -x $d ]]; then
            log "installing duckdb-cli 1.5.6 with pip into $BENCH_DIR/venv"
            { python3 -m venv "$BENCH_DIR/venv" && "$BENCH_DIR/venv/bin/pip" install -q \
                --disable-pip-version-check duckdb-cli==1.5.6; } >"$BENCH_DIR/pip.log" 2>&1
        fi
    fi
    [[ -x $d ]] || { echo "no DuckDB CLI: set LIFEBOAT_DUCKDB (see $BENCH_DIR/pip.log)" >&2; exit 1; }
    export LIFEBOAT_DUCKDB=$d
    DUCKDB=$d
}

ensure_tools() {
    local missing=()
    have zstd || missing+=(zstd)
    [[ -x /usr/bin/time ]] || missing+=(time)
    apt_install "${missing[@]}"
    have python3 || { echo "python3 is required" >&2; exit 1; }
    have zstd    || warn "zstd unavailable: cp + zstd and the new-blocks floor are skipped"
    [[ -x /usr/bin/time ]] || warn "GNU time unavailable: falling back to a Python timer"
    find_duckdb
}

# "events=N users=N products=N" of a DuckDB file (read-only), or nothing.
ddb_count() { python3 "$HERE/duckdb_db.py" count "$1" 2>/dev/null; }
ddb_events() { ddb_count "$1" | sed -n 's/^events=\([0-9]*\).*/\1/p'; }

# Make (or reuse) the pristine database: reuse needs the exact event count.
prepare_pristine() {
    if [[ -f $PRISTINE && $(ddb_events "$PRISTINE") == "$ROWS" ]]; then
        log "reusing $PRISTINE"
    else
        log "generating $PRISTINE ($ROWS events; a few minutes at full size, done once)"
        rm -f "$PRISTINE"
        python3 "$HERE/duckdb_db.py" make "$PRISTINE" "$ROWS" || { echo "duckdb_db.py make failed" >&2; exit 1; }
    fi
}

# A fresh $RUN holding the live database $DB (a copy of the pristine one), made the current
# directory, and $TSV started with the header. As lib.sh's begin_run, for DuckDB.
begin_run() {
    rm -rf "$RUN"; mkdir -p "$RUN"
    cd "$RUN" || exit 1
    export XDG_STATE_HOME="$RUN/state"   # a new machine to Lifeboat's trust state, each run
    unset LIFEBOAT_REPO LIFEBOAT_CONFIG LIFEBOAT_COMPRESSION LIFEBOAT_LEVEL
    unset LIFEBOAT_PASSWORD LIFEBOAT_PASSWORD_FILE LIFEBOAT_PASSWORD_COMMAND
    cp "$PRISTINE" "$DB"
    local bytes bs ver
    bytes=$(size "$DB")
    bs=$("$DUCKDB" -init /dev/null -readonly -noheader -list "$DB" \
        -c "SELECT block_size FROM pragma_database_size()" 2>/dev/null)
    ver=$("$DUCKDB" --version 2>/dev/null | head -n 1)
    {
        echo "# $1, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores," \
             "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)," \
             "$(lifeboat_version)"
        echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "# database: $(ddb_count "$DB"), $bytes bytes ($((bytes / 1048576)) MiB)," \
             "$(((bytes - 12288) / ${bs:-262144})) blocks of ${bs:-?} B; DuckDB CLI $ver"
    } >"$TSV"
    sed 's/^# //' "$TSV" >&2
}

# --- the tools ------------------------------------------------------------------

LB_ID=""   # id of Lifeboat's last backup
# lb_backup STEP OUTNAME -> one timed `lifeboat backup` of $DB. Bytes recorded: the whole
# repository for the full backup, `new_stored_bytes` for the others.
lb_backup() {
    local step=$1 out=$RUN/$2.out j rc id lo ne re ms stored
    if ((!LB_OK)); then record "$step" lifeboat "" "" "" "skipped: no working binary"; return; fi
    run_timed "$out" "$LB" backup --init "$DB" --repo "$REPO" --json; rc=$?
    if ((rc == 0)) && j=$(lifeboat_json "$out") && [[ -d $REPO ]]; then
        read -r id lo ne re ms <<<"$j"
        LB_ID=$id
        stored=$ne; [[ $step == "full backup" ]] && stored=$(dusize "$REPO")
        record "$step" lifeboat "$T_SECS" "$stored" "$T_RSS_KIB" \
            "cpu $T_CPU s; json: id=$id logical=$lo new_stored=$ne repo_stored=$re duration_ms=$ms; repo du $(dusize "$REPO") B"
        return 0
    fi
    record "$step" lifeboat "" "" "" "$(lb_failure $rc "$out")"
    if [[ $step == "full backup" ]]; then   # no point timing later steps against a broken binary
        LB_OK=0
        warn "lifeboat backup failed; its later steps are skipped:"
        tail -n 5 "$out.err" "$out" >&2
    fi
    return 1
}

# diy_backup STEP NAME -> cp + zstd -T0 -3 of $DB to $RUN/NAME.duckdb.zst (both timed together:
# that is the cost of one such backup); the uncompressed copy is removed.
diy_backup() {
    local step=$1 copy=$RUN/$2.duckdb
    if ! have zstd; then record "$step" "$DIY" "" "" "" "skipped: zstd missing"; return; fi
    if run_timed "$RUN/diy-$2.out" bash -c 'cp "$1" "$2" && zstd -T0 -3 -q -f "$2" -o "$2.zst"' _ "$DB" "$copy"; then
        record "$step" "$DIY" "$T_SECS" "$(size "$copy.zst")" "$T_RSS_KIB" "cpu $T_CPU s; copy $(size "$copy") B"
    else
        record "$step" "$DIY" "" "" "" "FAILED (see $RUN/diy-$2.out.err)"
    fi
    rm -f "$copy"
}

# parquet_backup STEP NAME -> EXPORT DATABASE of $DB (read-only) into $RUN/export-NAME.
parquet_backup() {
    local step=$1 dir=$RUN/export-$2 codec
    if run_timed "$RUN/export-$2.out" "$DUCKDB" -init /dev/null -readonly "$DB" \
        -c "EXPORT DATABASE '$dir' (FORMAT parquet)" && [[ -f $dir/schema.sql ]]; then
        local t=$T_SECS r=$T_RSS_KIB c=$T_CPU
        codec=$("$DUCKDB" -init /dev/null -noheader -list \
            -c "SELECT string_agg(DISTINCT compression, ',') FROM parquet_metadata('$dir/*.parquet')" 2>/dev/null)
        record "$step" "$PARQUET" "$t" "$(dusize "$dir")" "$r" \
            "cpu $c s; $(find "$dir" -name '*.parquet' | wc -l) parquet files, compression ${codec:-?} (DuckDB's default)"
    else
        record "$step" "$PARQUET" "" "" "" "FAILED (see $RUN/export-$2.out.err)"
    fi
}

# --- steps -----------------------------------------------------------------------

step_full_backup() {
    log "step 1: full backup"
    lb_backup "full backup" lb-full
    diy_backup "full backup" full
    parquet_backup "full backup" full
    rm -rf "$RUN/export-full" "$RUN/full.duckdb.zst"   # their sizes are recorded; save disk
    # For (b): Lifeboat's repository and trust state as they are after the full backup.
    if ((LB_OK)); then cp -a "$REPO" "$RUN/repo-after-full"; cp -a "$XDG_STATE_HOME" "$RUN/state-after-full"; fi
}

# step_change X -> apply change X to $DB (which holds the pristine bytes), and record the
# floor: zstd -3 of the blocks of the new file that the pristine one lacks.
step_change() {
    local x=$1 msg diff note
    log "change ($x)"
    cmp -s "$PRISTINE" "$DB" || warn "the live database differs from the pristine one before change ($x)"
    msg=$(python3 "$HERE/duckdb_db.py" change "$DB" "$x") || { echo "duckdb_db.py change $x failed" >&2; exit 1; }
    diff=$(python3 "$HERE/block_diff.py" "$PRISTINE" "$DB" "$RUN/new-blocks.bin") || { echo "block_diff.py failed" >&2; exit 1; }
    read -r _ nw _ mv _ tot _ <<<"$diff"
    note="$nw of $tot blocks new ($mv moved), raw $(size "$RUN/new-blocks.bin") B; file $(size "$DB") B"
    echo "# $msg; $diff" >>"$TSV"
    if have zstd; then
        record "change ($x)" "$CHANGED" "" "$(zstd -3 -q -c "$RUN/new-blocks.bin" | wc -c)" "" "$note"
    else
        record "change ($x)" "$CHANGED" "" "" "" "skipped: zstd missing; $note"
    fi
    rm -f "$RUN/new-blocks.bin"
}

step_second_backup() {
    local x=$1
    log "second backup ($x)"
    lb_backup "second backup ($x)" "lb-second-$x"
    diy_backup "second backup ($x)" "$x"
    parquet_backup "second backup ($x)" "$x"
}

# Back to the state after the full backup: the pristine file, Lifeboat's repository and its
# trust state as they were then (so backup (b) is a second backup, as (a) was).
step_reset() {
    log "reset: pristine database, repository as after the full backup"
    rm -f "$DB" "$DB".wal*; cp "$PRISTINE" "$DB"
    rm -rf "$RUN/export-a" "$RUN/a.duckdb.zst"
    if ((LB_OK)); then
        rm -rf "$REPO" "$XDG_STATE_HOME"
        cp -a "$RUN/repo-after-full" "$REPO"; cp -a "$RUN/state-after-full" "$XDG_STATE_HOME"
    fi
    echo "# (b) starts again from the pristine file and the repository as it was after the full backup" >>"$TSV"
}

# check_restored FILE -> note text: rows and byte identity with $DB (the state backed up).
check_restored() {
    local f=$1 want got
    [[ -s $f ]] || { echo "MISSING OUTPUT"; return 1; }
    want=$(ddb_count "$DB"); got=$(ddb_count "$f")
    if [[ -n $got && $got == "$want" ]]; then
        if cmp -s "$f" "$DB"; then echo "$got, byte-identical to source"; else echo "$got"; fi
    else
        echo "BAD RESTORE: ${got:-unreadable} want $want"; return 1
    fi
}

# Restore backup (b): Lifeboat's by id, the zstd copy (b), and the Parquet export (b).
step_restore() {
    log "restore (the state of second backup (b))"
    if ((LB_OK)) && [[ -n $LB_ID ]]; then
        if run_timed "$RUN/lb-restore.out" "$LB" restore "$LB_ID" --repo "$REPO" --output "$RUN/restored.duckdb"; then
            local t=$T_SECS r=$T_RSS_KIB c=$T_CPU
            record "restore" lifeboat "$t" "" "$r" "cpu $c s; $(check_restored "$RUN/restored.duckdb")"
        else
            record "restore" lifeboat "" "" "" "FAILED (see $RUN/lb-restore.out.err)"
        fi
        rm -f "$RUN/restored.duckdb"
    else
        record "restore" lifeboat "" "" "" "skipped: no Lifeboat backup"
    fi

    if [[ -f $RUN/b.duckdb.zst ]]; then
        if run_timed "$RUN/unzstd.out" zstd -d -q -f "$RUN/b.duckdb.zst" -o "$RUN/y.duckdb"; then
            local t=$T_SECS r=$T_RSS_KIB c=$T_CPU
            record "restore" "zstd -d" "$t" "" "$r" "cpu $c s; $(check_restored "$RUN/y.duckdb")"
        else
            record "restore" "zstd -d" "" "" "" "FAILED (see $RUN/unzstd.out.err)"
        fi
        rm -f "$RUN/y.duckdb"
    else
        record "restore" "zstd -d" "" "" "" "skipped: no cp + zstd backup"
    fi

    if [[ -f $RUN/export-b/schema.sql ]]; then
        if run_timed "$RUN/import.out" "$DUCKDB" -init /dev/null "$RUN/imported.duckdb" \
            -c "IMPORT DATABASE '$RUN/export-b'"; then
            local t=$T_SECS r=$T_RSS_KIB c=$T_CPU
            record "restore" "IMPORT DATABASE parquet" "$t" "" "$r" \
                "cpu $c s; $(check_restored "$RUN/imported.duckdb"), a new file of $(size "$RUN/imported.duckdb") B"
        else
            record "restore" "IMPORT DATABASE parquet" "" "" "" "FAILED (see $RUN/import.out.err)"
        fi
        rm -f "$RUN/imported.duckdb"*
    else
        record "restore" "IMPORT DATABASE parquet" "" "" "" "skipped: no export"
    fi
}

# --- main ------------------------------------------------------------------------

main() {
    mkdir -p "$BENCH_DIR"
    ensure_tools
    build_lifeboat
    prepare_pristine
    begin_run "Lifeboat DuckDB benchmark"

    step_full_backup
    step_change a
    step_second_backup a
    step_reset
    step_change b
    step_second_backup b
    step_restore

    ((DROP_OK)) || echo "# WARNING: page cache could not be dropped; times are warm-cache" >>"$TSV"
    echo >&2
    python3 "$HERE/report_duckdb.py" "$TSV" | tee "$TXT"
    rm -rf "$RUN/repo-after-full" "$RUN/state-after-full" "$RUN/export-b"   # save disk; the rest stays for a look
    log "results written to $TXT (raw: $TSV); run files in $RUN"
}

main "$@"
