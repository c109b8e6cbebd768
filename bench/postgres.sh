#!/usr/bin/env bash
# PostgreSQL benchmark (the issue's spec, in one run on one machine): Lifeboat's
# `backup postgres://…` against `pg_dump -Fc` and `pg_dump | zstd -T0 -3`, a second
# backup after a stretch of writes against a new `pg_dump | zstd` and restic, and
# `restore --to` against `pg_restore -j2`.
#
# The database (a throwaway cluster, start_pg in lib.sh; database `bench`):
#   * `pgbench -i -s $SCALE` (scale 100: 10 M accounts, ~1.3 GB on disk);
#   * `docs (id bigint PRIMARY KEY, body text)`: ~$TEXT_MB MB of realistic documents
#     (pg_docs.py, COPY from a Python generator): each body 200..1800 characters, uniform
#     (1000 on average), of words of a fixed vocabulary of 4096 pseudo-words drawn with
#     Zipf-like frequencies (short words most often), sentences with a full stop and a
#     capital; it compresses ~2.5x with zstd -3, like prose, where pgbench's blank filler
#     compresses ~100x and would flatter every tool.  TEXT_MB * 1000 rows.
#
# Steps (each timed run on a cold page cache: CHECKPOINT, sync, drop_caches before it,
# when /proc/sys/vm/drop_caches is writable, else warm and the header says so; every
# timed step $RUNS times, the tools interleaved run by run, the median reported):
#   1 full backup   Lifeboat into a new unencrypted repository each run (`repo init`,
#                   then `backup URI --json`; --jobs left at its default, 2),
#                   `pg_dump -Fc -f FILE`, `pg_dump | zstd -T0 -3 -o FILE`;
#                   once: Lifeboat into an encrypted repository (`repo init --encrypt`,
#                   LIFEBOAT_PASSWORD), and the plain dump into restic
#                   (`pg_dump | restic backup --stdin`, repository format 2, compressed).
#                   Stored bytes: the repository folder (du -sb) or the file.
#                   Info rows (once, no target): `pg_dump -Fp >/dev/null` (the dump alone)
#                   and `pg_dump -Fd -Z0 -j2` to disk (what Lifeboat runs, without storing).
#   2 change        `pgbench -c 2 -j 2 -T $PGBENCH_SECONDS` (built-in tpcb-like), then
#                   1% of `docs` rows, drawn uniformly over the whole table, get a new
#                   body of the same length distribution (COPY of ids and bodies into
#                   a temporary table, one UPDATE … FROM).  pgbench runs unthrottled: at
#                   ~6000 tps it updates ~16% of the accounts at scale 100 in 300 s, so
#                   nearly every 4 KiB chunk of pgbench_accounts changes, and
#                   pgbench_history gains ~90 MB of new rows; the header gives each
#                   table's share of a new compressed dump.
#   3 second backup Lifeboat into the repository of step 1 ($RUNS times: the repository
#                   and Lifeboat's state folder are copied back before each run); bytes
#                   added = growth of the repository folder; a new `pg_dump | zstd`
#                   (what a compressed dump a day costs); restic: the new plain dump
#                   through --stdin into its repository of step 1 (growth); a new
#                   `pg_dump -Fc` (the file the competitor restore reads).
#   4 restore       `lifeboat restore ID --to postgres://…/NEWDB --create --jobs 2` of
#                   the second backup against `createdb NEWDB && pg_restore -j 2 -d NEWDB`
#                   of the step-3 `pg_dump -Fc` file, into a new database each run
#                   (dropped after it).  After each, the row count of every table
#                   must equal the source's: otherwise the row says BAD RESTORE, the
#                   report fails the target and this script exits 1.
#                   Info rows (once, no target): Lifeboat's restore of the step-1 full
#                   backup (chunks in stored order; checked against the counts then),
#                   `pg_restore -j2` of a `pg_dump -Fd -Z0` folder (what Lifeboat
#                   streams, from disk), and `lifeboat drill ID` on the same server.
#
# Peak RSS: GNU time's %M, the largest single process of the tool's tree (for
# Lifeboat: lifeboat itself or its pg_dump / pg_restore); Lifeboat's own peak
# (VmHWM of the lifeboat process, read every 0.1 s) is given in the note.  Pipelines:
# each process under its own GNU time; the larger is the row's figure, both in the note.
#
# Targets (issue): backup time <= 1.1x `pg_dump | zstd`; second backup stores <= 0.3x a
# new compressed dump and less than restic; restore <= 1.1x `pg_restore -j2`; peak RSS
# <= 256 MiB.  report_postgres.py prints the table, ratios and verdicts.
#
# Usage:
#   bench/postgres.sh                                           # full size, ~15 min here (+ the build)
#   SCALE=10 TEXT_MB=50 PGBENCH_SECONDS=20 bench/postgres.sh    # quick check of the script
# Environment:
#   SCALE             pgbench scale (100)
#   TEXT_MB           size of the docs table's text in MB (500)
#   PGBENCH_SECONDS   seconds of pgbench between the backups (300)
#   RUNS              timed runs of each backup and restore (3)
#   BENCH_SKIP_ENCRYPTED=1  no encrypted Lifeboat backup
#   BENCH_SKIP_DRILL=1      no `lifeboat drill`
#   BENCH_DIR         work folder (/tmp/lifeboat-bench; needs ~4x the database free);
#                     the run is in $BENCH_DIR/run-postgres (removed at the end unless KEEP=1)
#   BENCH_LIFEBOAT    a lifeboat binary to use instead of `cargo build --release`
#   BENCH_PG_BIN      PostgreSQL server binaries (newest /usr/lib/postgresql/*/bin)
#   RESTIC            restic binary (restic on PATH; its rows are skipped without it)
# Writes $BENCH_DIR/results-postgres.tsv (raw) and results-postgres.md (the report).
# Run as root: the cluster runs as `postgres`, and the page cache can be dropped.

set -uo pipefail   # no -e: a failing tool is recorded as failed; setup failures exit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"   # log, warn, have, dusize, run_timed, drop_caches, build_lifeboat, start_pg
SCALE=${SCALE:-100}
TEXT_MB=${TEXT_MB:-500}
PGBENCH_SECONDS=${PGBENCH_SECONDS:-300}
RUNS=${RUNS:-3}
RESTIC=${RESTIC:-$(command -v restic || true)}
RUN=$BENCH_DIR/run-postgres
TSV=$BENCH_DIR/results-postgres.tsv
MD=$BENCH_DIR/results-postgres.md
DBNAME=bench
# Tool names: report_postgres.py matches on them.
T_LB="lifeboat"
T_LB_ENC="lifeboat (encrypted)"
T_FC="pg_dump -Fc"
T_ZSTD="pg_dump | zstd -T0 -3"
T_RESTIC="restic --stdin (plain dump)"
T_PGR="pg_restore -j2"
T_FD="pg_dump -Fd -Z0 -j2 (to disk, info)"       # what Lifeboat runs, without storing
T_PLAIN="pg_dump -Fp >/dev/null (info)"         # the dump alone, the floor of the zstd pipeline
T_PGR_FD="pg_restore -j2 of -Fd -Z0 (info)"     # an uncompressed folder: the floor of Lifeboat's restore
T_LB_FIRST="lifeboat, the first backup (info)"  # the full backup of step 1, restored the same way
BAD_RESTORES=0

die() { echo "ERROR: $*" >&2; exit 1; }
mkdir -p "$BENCH_DIR" || die "cannot create $BENCH_DIR"
[[ -x /usr/bin/time ]] || apt_install time
[[ -x /usr/bin/time ]] || die "GNU time (/usr/bin/time) is required"
have zstd || apt_install zstd
have zstd || die "zstd is required"
[[ -n $RESTIC && -x $RESTIC ]] || { warn "no restic: its rows are skipped"; RESTIC=""; }
pg_bin   # PG_BIN (lib.sh)
PG_DUMP=$PG_BIN/pg_dump PG_RESTORE=$PG_BIN/pg_restore PSQL=$PG_BIN/psql PGBENCH=$PG_BIN/pgbench
CREATEDB=$PG_BIN/createdb DROPDB=$PG_BIN/dropdb

cleanup() {
    set +e   # on EXIT, also after a failure: stop the cluster whatever happens
    [[ -n ${HWM_PID:-} ]] && kill "$HWM_PID" 2>/dev/null
    stop_pg
    if [[ ${KEEP:-0} != 1 && -n ${RUN:-} ]]; then rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

q() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -At "$@"; }   # SQL from -c or stdin
mib() { [[ $1 =~ ^[0-9]+$ ]] && awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}' || echo "?"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
uri() { echo "postgres://postgres@$PGHOST:$PGPORT/$1"; }

# Before every timed run: flush the server's dirty pages, then (lib.sh) sync + drop caches.
settle() { q -d "$DBNAME" -c CHECKPOINT; }

# Lifeboat's own peak RSS: VmHWM of the process GNU time runs (the child of a `time`
# child of this shell), read every 0.1 s with builtins only; the largest in file $1.
hwm_watch() {
    local file=$1 parent=$2 max=0 t c k v _
    while sleep 0.1; do
        for t in $(cat /proc/"$parent"/task/*/children 2>/dev/null); do
            [[ $(cat /proc/"$t"/comm 2>/dev/null) == time ]] || continue
            for c in $(cat /proc/"$t"/task/*/children 2>/dev/null); do
                while read -r k v _; do
                    if [[ $k == VmHWM: ]] && ((v > max)); then max=$v; echo "$max" >"$file"; fi
                done <"/proc/$c/status" 2>/dev/null
            done
        done
    done
}

# lb_timed OUT ARGS... -> run_timed of lifeboat ARGS; also LB_HWM (lifeboat's own peak, KiB)
lb_timed() {
    local out=$1 rc me=$BASHPID; shift   # ($BASHPID after `&` would be the watcher's)
    settle
    rm -f "$RUN/.hwm"
    hwm_watch "$RUN/.hwm" "$me" &
    HWM_PID=$!
    run_timed "$out" "$LB" "$@"; rc=$?
    kill "$HWM_PID" 2>/dev/null; wait "$HWM_PID" 2>/dev/null; HWM_PID=""
    LB_HWM=$(cat "$RUN/.hwm" 2>/dev/null || echo "?")
    return $rc
}

# pipe_timed OUT CONSUMER... -> `pg_dump -Fp bench | CONSUMER... >OUT`, cold cache, each
# process under GNU time: P_SECS (wall of the whole pipeline), P_RSS (the larger peak),
# P_RSS1 (pg_dump), P_RSS2 (the consumer), P_CPU1, P_CPU2 (their user + system seconds);
# returns non-zero if either failed.
pipe_timed() {
    local out=$1 t0 s; shift
    settle; drop_caches
    t0=$EPOCHREALTIME
    /usr/bin/time -f '%e %M %U %S' -o "$RUN/.t1" "$PG_DUMP" -Fp -d "$DBNAME" 2>"$out.err1" </dev/null \
        | /usr/bin/time -f '%e %M %U %S' -o "$RUN/.t2" "$@" >"$out" 2>"$out.err2"
    s=("${PIPESTATUS[@]}")
    P_SECS=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.2f", b - a}')
    P_RSS1=$(tail -n 1 "$RUN/.t1" | cut -d' ' -f2) P_RSS2=$(tail -n 1 "$RUN/.t2" | cut -d' ' -f2)
    P_RSS=$(maxof "$P_RSS1" "$P_RSS2")
    P_CPU1=$(tail -n 1 "$RUN/.t1" | awk '{printf "%.1f", $3 + $4}') P_CPU2=$(tail -n 1 "$RUN/.t2" | awk '{printf "%.1f", $3 + $4}')
    ((s[0] == 0 && s[1] == 0))
}

# Row counts of every table of database $1, "schema.table count" a line, sorted.
table_counts() {
    q -d "$1" <<'SQL'
SELECT format('%I.%I', n.nspname, c.relname) || ' ' ||
       (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY 1;
SQL
}

# check_restore DB [EXPECTED] -> note: "N tables, row counts equal to the source's" or
# "BAD RESTORE: …" (the caller counts the bad ones: this runs in a command substitution).
# EXPECTED: table_counts of the source when backed up (default: now, $SOURCE_COUNTS).
check_restore() {
    local got want=${2:-$SOURCE_COUNTS}
    got=$(table_counts "$1" 2>&1)
    if [[ $got == "$want" ]]; then
        echo "$(wc -l <<<"$got") tables, row counts equal to the source's"
    else
        echo "BAD RESTORE: row counts differ from the source's: $(diff <(echo "$want") <(echo "$got") | grep '^[<>]' | head -n 6 | tr '\n' ';')"
        echo "BAD RESTORE of $1; source vs restored:" >&2
        diff <(echo "$want") <(echo "$got") >&2
    fi
}


# --- the database ---------------------------------------------------------------------


# The writes between the two backups.
change_db() {
    local upd=$((DOCS_ROWS / 100)) n
    log "change: pgbench -c 2 -j 2 -T $PGBENCH_SECONDS (tpcb-like)"
    "$PGBENCH" -c 2 -j 2 -T "$PGBENCH_SECONDS" "$DBNAME" >"$RUN/pgbench-run.log" 2>&1 || { tail "$RUN/pgbench-run.log" >&2; die "pgbench failed"; }
    local txns tps
    txns=$(awk -F': ' '/number of transactions actually processed/ {print $2}' "$RUN/pgbench-run.log" | cut -d/ -f1)
    tps=$(awk '/^tps/ {printf "%.0f", $3; exit}' "$RUN/pgbench-run.log")
    log "pgbench: $txns transactions, $tps tps; UPDATE of $upd docs rows (1%) drawn uniformly"
    n=$(python3 "$HERE/pg_docs.py" update "$DOCS_ROWS" "$upd" 2 | q -d "$DBNAME" \
        -c "CREATE TEMP TABLE docs_new (id bigint PRIMARY KEY, body text NOT NULL)" \
        -c "COPY docs_new FROM STDIN" \
        -c "UPDATE docs d SET body = n.body FROM docs_new n WHERE d.id = n.id RETURNING 1" | wc -l)
    [[ $n == "$upd" ]] || die "docs update changed $n rows, not $upd"
    q -c CHECKPOINT
    local touched
    touched=$(q -c "SELECT round(100.0 * count(*) FILTER (WHERE abalance <> 0) / count(*), 1) FROM pgbench_accounts")
    CHANGE_NOTE="pgbench -c 2 -j 2 -T $PGBENCH_SECONDS tpcb-like: $txns transactions ($tps tps; $touched% of pgbench_accounts rows now have abalance <> 0, i.e. were updated); $upd docs rows (1%, uniform over ids) given a new body"
    echo "# change: $CHANGE_NOTE" >>"$TSV"
}

# --- steps ----------------------------------------------------------------------------

# record STEP TOOL SECS BYTES RSS_KIB NOTE (lib.sh) writes one TSV row.

step_full() {
    log "step 1: full backups, $RUNS runs each, interleaved"
    local i rc out repo stored lbs=() lbr=() lbh=() lbc=() fcs=() fcr=() zs=() zr=() zc=() lb_bytes="" fc_bytes="" z_bytes=""
    local lb_note="" fc_note="" z_note="" new="" id
    for ((i = 1; i <= RUNS; i++)); do
        repo=$RUN/repo-$i
        rm -rf "$repo"
        "$LB" --repo "$repo" repo init >"$RUN/init-$i.log" 2>&1 || { cat "$RUN/init-$i.log" >&2; die "lifeboat repo init failed"; }
        out=$RUN/lb-full-$i.json
        lb_timed "$out" backup --repo "$repo" --json "$(uri $DBNAME)"; rc=$?
        if ((rc)) || [[ $(json_field "$out" id) == "?" ]]; then
            lb_note=$(lb_failure $rc "$out"); lbs+=("$T_SECS"); break
        fi
        stored=$(dusize "$repo")
        read -r id new <<<"$(json_field "$out" id new_stored_bytes)"
        lbs+=("$T_SECS") lbr+=("$T_RSS_KIB") lbh+=("$LB_HWM") lbc+=("$T_CPU") lb_bytes=$stored
        log "  lifeboat run $i: $T_SECS s (cpu $T_CPU s), repo $stored B (new_stored_bytes $new), RSS $T_RSS_KIB KiB (own $LB_HWM), load $(load)"
        ((i < RUNS)) && rm -rf "$repo"

        out=$RUN/full.dump
        rm -f "$out"
        settle
        run_timed "$RUN/fc.log" "$PG_DUMP" -Fc -f "$out" -d "$DBNAME"; rc=$?
        ((rc)) && { fc_note="FAILED: exit $rc (see $RUN/fc.log.err)"; break; }
        fcs+=("$T_SECS") fcr+=("$T_RSS_KIB") fc_bytes=$(size "$out")
        log "  pg_dump -Fc run $i: $T_SECS s, $fc_bytes B, RSS $T_RSS_KIB KiB, load $(load)"
        rm -f "$out"

        out=$RUN/full.sql.zst
        pipe_timed "$out" zstd -T0 -3 -q -c || { z_note="FAILED: pipeline (see $out.err1, .err2)"; break; }
        zs+=("$P_SECS") zr+=("$P_RSS") zc+=("$P_CPU1+$P_CPU2") z_bytes=$(size "$out")
        log "  pg_dump | zstd run $i: $P_SECS s (cpu $P_CPU1 + $P_CPU2 s), $z_bytes B, RSS pg_dump $P_RSS1 / zstd $P_RSS2 KiB, load $(load)"
        rm -f "$out"
    done
    REPO=$RUN/repo-$RUNS FULL_ID=${id:-}
    DAY1_COUNTS=$(table_counts "$DBNAME")
    record "full backup" "$T_LB" "$(median "${lbs[@]}")" "$lb_bytes" "$(maxof "${lbr[@]:-}")" \
        "${lb_note:-runs ${lbs[*]} s; CPU of lifeboat + its pg_dump ${lbc[*]} s; repository folder; new_stored_bytes $new; lifeboat own peak RSS $(mib "$(maxof "${lbh[@]:-0}")") MiB; --jobs 2 (default)}"
    record "full backup" "$T_FC" "$(median "${fcs[@]:-}")" "$fc_bytes" "$(maxof "${fcr[@]:-}")" \
        "${fc_note:-runs ${fcs[*]:-} s}"
    record "full backup" "$T_ZSTD" "$(median "${zs[@]:-}")" "$z_bytes" "$(maxof "${zr[@]:-}")" \
        "${z_note:-runs ${zs[*]:-} s; CPU pg_dump+zstd ${zc[*]:-} s; RSS pg_dump $P_RSS1 KiB, zstd $P_RSS2 KiB (last run)}"

    # Floors (once each, info): what the dumping itself costs, without compressing or storing.
    settle
    if run_timed "$RUN/plain.log" "$PG_DUMP" -Fp -f /dev/null -d "$DBNAME"; then
        record "full backup" "$T_PLAIN" "$T_SECS" "" "$T_RSS_KIB" "1 run; CPU $T_CPU s; load $(load)"
    fi
    rm -rf "$RUN/full.dir"; settle
    if run_timed "$RUN/fd.log" "$PG_DUMP" -Fd -Z0 -j 2 -f "$RUN/full.dir" -d "$DBNAME"; then
        record "full backup" "$T_FD" "$T_SECS" "$(dusize "$RUN/full.dir")" "$T_RSS_KIB" "1 run; CPU $T_CPU s; the folder Lifeboat's pg_dump writes; load $(load)"
    fi
    rm -rf "$RUN/full.dir"

    if [[ ${BENCH_SKIP_ENCRYPTED:-0} != 1 ]]; then
        log "  encrypted Lifeboat backup (once)"
        repo=$RUN/repo-enc
        rm -rf "$repo"
        if LIFEBOAT_PASSWORD=x "$LB" --repo "$repo" repo init --encrypt >"$RUN/init-enc.log" 2>&1; then
            out=$RUN/lb-full-enc.json
            LIFEBOAT_PASSWORD=x lb_timed "$out" backup --repo "$repo" --json "$(uri $DBNAME)"; rc=$?
            if ((rc)); then
                record "full backup" "$T_LB_ENC" "$T_SECS" "" "$T_RSS_KIB" "$(lb_failure $rc "$out")"
            else
                record "full backup" "$T_LB_ENC" "$T_SECS" "$(dusize "$repo")" "$T_RSS_KIB" \
                    "1 run; repo init --encrypt (LIFEBOAT_PASSWORD); lifeboat own peak RSS $(mib "$LB_HWM") MiB; load $(load)"
            fi
        else
            record "full backup" "$T_LB_ENC" "" "" "" "FAILED: repo init --encrypt (see $RUN/init-enc.log)"
        fi
        rm -rf "$repo"
    fi

    if [[ -n $RESTIC ]]; then
        log "  restic: the plain dump through --stdin (once)"
        export RESTIC_PASSWORD=x RESTIC_CACHE_DIR=$RUN/restic-cache
        RESTIC_REPO=$RUN/restic
        "$RESTIC" -r "$RESTIC_REPO" init --repository-version 2 >"$RUN/restic-init.log" 2>&1 || die "restic init failed"
        if pipe_timed "$RUN/restic-1.log" "$RESTIC" -r "$RESTIC_REPO" backup -q --stdin --stdin-filename "$DBNAME.sql"; then
            record "full backup" "$T_RESTIC" "$P_SECS" "$(dusize "$RESTIC_REPO")" "$P_RSS" \
                "1 run; repository format 2 (compression auto); RSS pg_dump $P_RSS1 KiB, restic $P_RSS2 KiB"
        else
            record "full backup" "$T_RESTIC" "" "" "" "FAILED (see $RUN/restic-1.log.err2)"
        fi
    fi
}

step_second() {
    log "step 3: second backups"
    local i rc out before added="" new id secs=() rss=() hwm=() cpu=() bytes=() news=() note=""
    # Repository and Lifeboat's state as after the full backup, restored before each run.
    cp -a "$REPO" "$RUN/repo-snap"; cp -a "$XDG_STATE_HOME" "$RUN/state-snap"
    for ((i = 1; i <= RUNS; i++)); do
        if ((i > 1)); then
            rm -rf "$REPO" "$XDG_STATE_HOME"
            cp -a "$RUN/repo-snap" "$REPO"; cp -a "$RUN/state-snap" "$XDG_STATE_HOME"
        fi
        before=$(dusize "$REPO")
        out=$RUN/lb-second-$i.json
        lb_timed "$out" backup --repo "$REPO" --json "$(uri $DBNAME)"; rc=$?
        if ((rc)) || [[ $(json_field "$out" id) == "?" ]]; then note=$(lb_failure $rc "$out"); secs+=("$T_SECS"); break; fi
        added=$(($(dusize "$REPO") - before))
        read -r id new <<<"$(json_field "$out" id new_stored_bytes)"
        secs+=("$T_SECS") rss+=("$T_RSS_KIB") hwm+=("$LB_HWM") cpu+=("$T_CPU") bytes+=("$added") news+=("$new")
        log "  lifeboat run $i: $T_SECS s, +$added B (new_stored_bytes $new), RSS $T_RSS_KIB KiB (own $LB_HWM), load $(load)"
    done
    rm -rf "$RUN/repo-snap" "$RUN/state-snap"
    LB_ID=${id:-}
    record "second backup" "$T_LB" "$(median "${secs[@]}")" "$added" "$(maxof "${rss[@]:-}")" \
        "${note:-runs ${secs[*]} s; CPU ${cpu[*]} s; repository growth ${bytes[*]} B; new_stored_bytes ${news[*]}; lifeboat own peak RSS $(mib "$(maxof "${hwm[@]:-0}")") MiB; backup id $LB_ID}"

    out=$RUN/second.sql.zst
    if pipe_timed "$out" zstd -T0 -3 -q -c; then
        record "second backup" "$T_ZSTD" "$P_SECS" "$(size "$out")" "$P_RSS" "1 run: a new compressed dump of the changed database; CPU pg_dump+zstd $P_CPU1+$P_CPU2 s"
    else
        record "second backup" "$T_ZSTD" "" "" "" "FAILED: pipeline (see $out.err1, .err2)"
    fi
    rm -f "$out"

    if [[ -n $RESTIC ]]; then
        before=$(dusize "$RESTIC_REPO")
        if pipe_timed "$RUN/restic-2.log" "$RESTIC" -r "$RESTIC_REPO" backup -q --stdin --stdin-filename "$DBNAME.sql"; then
            record "second backup" "$T_RESTIC" "$P_SECS" "$(($(dusize "$RESTIC_REPO") - before))" "$P_RSS" \
                "1 run; repository growth; RSS pg_dump $P_RSS1 KiB, restic $P_RSS2 KiB"
        else
            record "second backup" "$T_RESTIC" "" "" "" "FAILED (see $RUN/restic-2.log.err2)"
        fi
        rm -rf "$RESTIC_REPO" "$RUN/restic-cache"
    fi

    FC_FILE=$RUN/second.dump
    settle
    if run_timed "$RUN/fc2.log" "$PG_DUMP" -Fc -f "$FC_FILE" -d "$DBNAME"; then
        record "second backup" "$T_FC" "$T_SECS" "$(size "$FC_FILE")" "$T_RSS_KIB" "1 run; the file $T_PGR restores"
    else
        record "second backup" "$T_FC" "" "" "" "FAILED (see $RUN/fc2.log.err)"
        FC_FILE=""
    fi
    FD_DIR=$RUN/second.dir
    rm -rf "$FD_DIR"; settle
    run_timed "$RUN/fd2.log" "$PG_DUMP" -Fd -Z0 -j 2 -f "$FD_DIR" -d "$DBNAME" || FD_DIR=""
}

# What a new compressed dump is made of, table by table (COPY text, zstd -3): a header line.
table_sizes() {
    local t raw z i parts=()
    while read -r t; do
        rm -f "$RUN/.raw"
        z=$(q -c "COPY $t TO STDOUT" | tee >(wc -c >"$RUN/.raw.tmp"; mv "$RUN/.raw.tmp" "$RUN/.raw") | zstd -3 -q -c | wc -c)
        for ((i = 0; i < 100; i++)); do [[ -s $RUN/.raw ]] && break; sleep 0.05; done   # the tee's counter
        raw=$(cat "$RUN/.raw" 2>/dev/null || echo 0)
        parts+=("$t $(awk -v r="$raw" -v z="$z" 'BEGIN {printf "%.1f MB raw, %.1f MB zstd -3", r / 1e6, z / 1e6}')")
    done < <(q -c "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables ORDER BY pg_total_relation_size(relid) DESC")
    echo "# second backup's database, table data (COPY text): $(IFS=';'; echo "${parts[*]}" | sed 's/;/; /g')" >>"$TSV"
}

step_restore() {
    log "step 4: restores into a new database, $RUNS runs each, interleaved"
    local i rc out lbs=() lbr=() lbh=() lbc=() pgs=() pgr=() pgc=() lb_note="" pg_note="" lb_check="" pg_check=""
    for ((i = 1; i <= RUNS; i++)); do
        if [[ -n $LB_ID ]]; then
            "$DROPDB" --if-exists r_lifeboat 2>/dev/null
            out=$RUN/lb-restore-$i.log
            lb_timed "$out" restore "$LB_ID" --repo "$REPO" --to "$(uri r_lifeboat)" --create --jobs 2; rc=$?
            if ((rc)); then
                lb_note="FAILED: exit $rc (see $out.err)"; BAD_RESTORES=$((BAD_RESTORES + 1))
            else
                lbs+=("$T_SECS") lbr+=("$T_RSS_KIB") lbh+=("$LB_HWM") lbc+=("$T_CPU")
                lb_check=$(check_restore r_lifeboat)
                [[ $lb_check == BAD* ]] && { lb_note=$lb_check; BAD_RESTORES=$((BAD_RESTORES + 1)); }
            fi
            log "  lifeboat restore run $i: $T_SECS s, RSS $T_RSS_KIB KiB (own $LB_HWM), load $(load): ${lb_note:-$lb_check}"
            "$DROPDB" --if-exists r_lifeboat 2>/dev/null
        fi
        if [[ -n $FC_FILE ]]; then
            "$DROPDB" --if-exists r_pg_restore 2>/dev/null
            settle
            run_timed "$RUN/pgr-$i.log" bash -c '"$1" "$2" && exec "$3" -j 2 -d "$2" "$4"' \
                _ "$CREATEDB" r_pg_restore "$PG_RESTORE" "$FC_FILE"; rc=$?
            if ((rc)); then
                pg_note="FAILED: exit $rc (see $RUN/pgr-$i.log.err)"
            else
                pgs+=("$T_SECS") pgr+=("$T_RSS_KIB") pgc+=("$T_CPU")
                pg_check=$(check_restore r_pg_restore)
                [[ $pg_check == BAD* ]] && { pg_note=$pg_check; BAD_RESTORES=$((BAD_RESTORES + 1)); }
            fi
            log "  pg_restore -j2 run $i: $T_SECS s, RSS $T_RSS_KIB KiB, load $(load): ${pg_note:-$pg_check}"
            "$DROPDB" --if-exists r_pg_restore 2>/dev/null
        fi
    done
    [[ -n $LB_ID ]] && record "restore" "$T_LB" "$(median "${lbs[@]:-}")" "" "$(maxof "${lbr[@]:-}")" \
        "${lb_note:-runs ${lbs[*]} s; CPU of lifeboat + its pg_restore ${lbc[*]} s; --to NEWDB --create --jobs 2; $lb_check; lifeboat own peak RSS $(mib "$(maxof "${lbh[@]:-0}")") MiB}"
    [[ -n $FC_FILE ]] && record "restore" "$T_PGR" "$(median "${pgs[@]:-}")" "" "$(maxof "${pgr[@]:-}")" \
        "${pg_note:-runs ${pgs[*]} s; CPU ${pgc[*]} s; createdb + pg_restore -j 2 of the second pg_dump -Fc; $pg_check}"

    if [[ -n $FULL_ID ]]; then   # once, info: the first backup, its chunks in the order stored
        "$DROPDB" --if-exists r_lifeboat 2>/dev/null
        out=$RUN/lb-restore-full.log
        if lb_timed "$out" restore "$FULL_ID" --repo "$REPO" --to "$(uri r_lifeboat)" --create --jobs 2; then
            local chk
            chk=$(check_restore r_lifeboat "$DAY1_COUNTS")
            [[ $chk == BAD* ]] && BAD_RESTORES=$((BAD_RESTORES + 1))
            record "restore" "$T_LB_FIRST" "$T_SECS" "" "$T_RSS_KIB" "1 run; CPU of lifeboat + its pg_restore $T_CPU s; the full backup of step 1 (the database before the change); $chk; lifeboat own peak RSS $(mib "$LB_HWM") MiB"
        else
            record "restore" "$T_LB_FIRST" "$T_SECS" "" "$T_RSS_KIB" "FAILED: exit $? (see $out.err)"
        fi
        "$DROPDB" --if-exists r_lifeboat 2>/dev/null
    fi

    if [[ -n $FD_DIR ]]; then   # once, info
        "$DROPDB" --if-exists r_pg_restore 2>/dev/null
        settle
        if run_timed "$RUN/pgr-fd.log" bash -c '"$1" "$2" && exec "$3" -j 2 -d "$2" "$4"' \
            _ "$CREATEDB" r_pg_restore "$PG_RESTORE" "$FD_DIR"; then
            record "restore" "$T_PGR_FD" "$T_SECS" "" "$T_RSS_KIB" "1 run; createdb + pg_restore -j 2 of a pg_dump -Fd -Z0 folder on disk (what Lifeboat streams); $(check_restore r_pg_restore)"
        fi
        "$DROPDB" --if-exists r_pg_restore 2>/dev/null
        rm -rf "$FD_DIR"
    fi

    if [[ -n $LB_ID && ${BENCH_SKIP_DRILL:-0} != 1 ]]; then
        out=$RUN/lb-drill.json
        lb_timed "$out" drill "$LB_ID" --repo "$REPO" --json --drill-server "postgres://postgres@$PGHOST:$PGPORT/"; rc=$?
        if ((rc)); then
            record "drill" "$T_LB" "$T_SECS" "" "$T_RSS_KIB" "FAILED: exit $rc (see $out.err)"
        else
            record "drill" "$T_LB" "$T_SECS" "" "$T_RSS_KIB" "1 run (info, no target): restore into a throwaway database on the same server, row counts compared, dropped; lifeboat own peak RSS $(mib "$LB_HWM") MiB"
        fi
    fi
}

# --- main -----------------------------------------------------------------------------

main() {
    local t0=$SECONDS
    rm -rf "$RUN"; mkdir -p "$RUN"
    # Lifeboat's defaults, and a trust state of its own (each run's repositories are new).
    unset LIFEBOAT_REPO LIFEBOAT_CONFIG LIFEBOAT_COMPRESSION LIFEBOAT_LEVEL LIFEBOAT_INIT
    unset LIFEBOAT_PASSWORD LIFEBOAT_PASSWORD_FILE LIFEBOAT_PASSWORD_COMMAND LIFEBOAT_DRILL_SERVER
    export XDG_STATE_HOME=$RUN/state
    cd "$RUN" || exit 1
    build_lifeboat
    ((LB_OK)) || die "no lifeboat binary"
    drop_caches
    local cache="cold page cache before every timed run (CHECKPOINT, sync, drop_caches)"
    ((DROP_OK)) || cache="WARM page cache (drop_caches not writable); CHECKPOINT before every timed run"
    start_pg "$RUN/pg"
    make_pg_bench_db
    SOURCE_COUNTS=""   # set after the change
    {
        echo "# PostgreSQL benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores (shared), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lifeboat_version)"
        echo "# PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') (fsync off), $(zstd --version | grep -o 'v[0-9.]*' | head -n 1 | sed 's/^/zstd /')${RESTIC:+, $("$RESTIC" version | cut -d' ' -f1-2)}"
        echo "# database: pgbench -s $SCALE + docs ($DOCS_ROWS rows, $(q -c "SELECT pg_size_pretty(pg_total_relation_size('docs'))") of random-word text); $(q -c "SELECT pg_size_pretty(pg_database_size(current_database()))") on disk"
        echo "# timing: median of $RUNS runs (tools interleaved), wall seconds; $cache"
        echo "# load average at start: $(load)"
    } >"$TSV"
    sed 's/^# //' "$TSV" >&2

    step_full
    change_db
    SOURCE_COUNTS=$(table_counts "$DBNAME") || die "counting the source's rows failed"
    step_second
    table_sizes
    step_restore
    echo "# load average at end: $(load); whole run $(((SECONDS - t0) / 60)) min" >>"$TSV"

    python3 "$HERE/report_postgres.py" "$TSV" | tee "$MD"
    log "written to $MD (raw: $TSV)"
    if ((BAD_RESTORES)); then
        echo "ERROR: $BAD_RESTORES restore(s) failed or did not give the source's row counts" >&2
        exit 1
    fi
}

main "$@"
