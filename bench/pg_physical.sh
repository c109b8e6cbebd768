#!/usr/bin/env bash
# PostgreSQL PHYSICAL backup benchmark (the issue's spec, in one run on one machine):
# Lifeboat's `backup URI --physical` + `wal-push` against pgBackRest (zst level 3,
# process-max 2, repository on local disk) and `pg_basebackup -Ft -Z zstd`.
#
# The cluster (start_pg in lib.sh: a throwaway cluster run as `postgres`, fsync off; then
# full_page_writes back on, as on a real server, wal_level=replica, archive_mode=on):
#   * `pgbench -i -s $SCALE` (scale 100: 10 M accounts, ~1.5 GB on disk) in database bench;
#   * `docs (id bigint PRIMARY KEY, body text)`: ~$TEXT_MB MB of random-word text
#     (pg_docs.py, as postgres.sh), which compresses like prose.
#   Loaded with archiving off; then archive_mode=on (a restart) and
#     archive_command = 'LIFEBOAT --repo R wal-push %p && pgbackrest --stanza=bench archive-push %p'
#   (both tools archive every segment; R is the Lifeboat repository being measured: it is
#   switched with ALTER SYSTEM + reload when a run starts a new one).  Before every step the
#   archiver is checked (pg_switch_wal, then wait for it to be archived): a failing
#   archive_command stops the script.
#
# Steps (each timed run on a cold page cache: CHECKPOINT, sync, drop_caches before it, when
# /proc/sys/vm/drop_caches is writable; median of $RUNS runs where cheap, the tools
# interleaved run by run):
#   1 full backup   $RUNS runs: Lifeboat into a new unencrypted repository each run
#                   (`repo init`; `backup postgres://postgres@127.0.0.1:PORT/ --physical
#                   --json`); `pgbackrest --type=full backup` (one stanza, its fulls kept);
#                   `pg_basebackup -Ft -Z zstd -X none -c fast` into a new folder.
#                   Stored bytes, archived WAL left out everywhere: Lifeboat's repository
#                   without its WAL folder ($LB_WAL_DIR), pgBackRest's growth of
#                   backup/bench, pg_basebackup's folder.  Once (info): `-X fetch`.
#   3 change        `pgbench -c 2 -j 2 -T $PGBENCH_SECONDS` (tpcb-like), archiving on.
#     second backup once each: Lifeboat into the repository of the last step-1 run (bytes
#                   added = its growth without the WAL folder) and `pgbackrest --type=incr`
#                   (growth of backup/bench, its archive/ left out).
#   4 restore       $RUNS runs each into a new folder: `lifeboat restore ID --pgdata DIR` of
#                   the second backup, `pgbackrest restore --set LABEL` of the incremental,
#                   and (info) `tar -x --zstd` of the pg_basebackup tar of step 1.  Then each
#                   restored folder once, untimed: a server on it on a free port
#                   (archive_mode=off on its command line), wait for the end of recovery,
#                   and compare count(*) + sum(abalance) of pgbench_accounts, the rows of
#                   pgbench_history and docs and md5 checksums of pgbench_branches and
#                   pgbench_tellers with the source's at backup time.  Lifeboat's and
#                   pgBackRest's restores bring their own restore_command; the tar gets
#                   pgBackRest's archive-get and recovery_target='immediate'.  A mismatch or
#                   a server that does not come up: BAD RESTORE, and the script exits 1.
#   5 wal-push      $WAL_SEGMENTS real segments of the bench cluster (copied by a temporary
#                   archive_command while pgbench + CHECKPOINTs run) in a folder laid out
#                   like a data directory (pg_wal/<seg>, pg_wal/archive_status/<seg>.ready,
#                   global/pg_control), pushed the way PostgreSQL does: one call per
#                   segment, in order, from that folder, `.ready` renamed `.done` after each
#                   success; into new repositories: Lifeboat unencrypted and encrypted
#                   (`repo init --encrypt`, LIFEBOAT_PASSWORD), `pgbackrest archive-push`
#                   and the same with archive-async=y (spool folder, process-max 2; its
#                   background process detaches, so its RSS is not counted).  Segments/s.
#
# Peak RSS: GNU time's %M, the largest single process of the tool's tree.
# Targets (issue; report_pg_physical.py prints the table, ratios and verdicts): full backup
# time <= pgBackRest's; restore time <= pgBackRest's; second backup stores <= 0.3x
# pgBackRest's incremental; wal-push >= 50 segments/s; peak RSS <= 256 MiB.
#
# Usage (as root: the cluster and every tool run as `postgres`, the page cache is dropped):
#   bench/pg_physical.sh                                                    # full size
#   SCALE=5 TEXT_MB=10 PGBENCH_SECONDS=20 WAL_SEGMENTS=40 bench/pg_physical.sh   # quick check
# Environment:
#   SCALE             pgbench scale (100)
#   TEXT_MB           size of the docs table's text in MB (300)
#   PGBENCH_SECONDS   seconds of pgbench between the backups (300)
#   RUNS              timed runs of the full backups, restores and wal-push loops (3)
#   WAL_SEGMENTS      segments pushed in step 5 (200); WAL_GEN_SECONDS caps making them (1200)
#   LIFEBOAT_BIN      a lifeboat binary instead of `cargo build --release` (BENCH_LIFEBOAT too)
#   LB_WAL_DIR        Lifeboat's WAL folder in its repository, left out of backup bytes (pgwal)
#   SKIP_LIFEBOAT=1   development only: no Lifeboat at all (archive_command = pgBackRest's alone)
#   BENCH_SKIP_FETCH=1  no `pg_basebackup -X fetch` info row
#   BENCH_DIR         work folder (/tmp/lifeboat-bench; needs ~8x the database free); the run
#                     is in $BENCH_DIR/run-pg-physical (removed at the end unless KEEP=1)
#   BENCH_PG_BIN      PostgreSQL server binaries (newest /usr/lib/postgresql/*/bin)
# Writes $BENCH_DIR/results-pg-physical.tsv (raw) and results-pg-physical.md (the report).

set -uo pipefail   # no -e: a failing tool is recorded as failed; setup failures exit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2034  # read by lib.sh (LB, build_lifeboat)
[[ -n ${LIFEBOAT_BIN:-} ]] && BENCH_LIFEBOAT=$(realpath "$LIFEBOAT_BIN")
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"   # log, warn, have, dusize, run_timed, record, start_pg, as_pg, median, json_field
SCALE=${SCALE:-100}
TEXT_MB=${TEXT_MB:-300}
PGBENCH_SECONDS=${PGBENCH_SECONDS:-300}
RUNS=${RUNS:-3}
WAL_SEGMENTS=${WAL_SEGMENTS:-200}
WAL_GEN_SECONDS=${WAL_GEN_SECONDS:-1200}
LB_WAL_DIR=${LB_WAL_DIR:-pgwal}
SKIP_LIFEBOAT=${SKIP_LIFEBOAT:-0}
RUN=$BENCH_DIR/run-pg-physical
TSV=$BENCH_DIR/results-pg-physical.tsv
MD=$BENCH_DIR/results-pg-physical.md
DBNAME=bench
STANZA=bench
# Tool names: report_pg_physical.py matches on them.
T_LB="lifeboat"
T_LB_ENC="lifeboat (encrypted)"
T_BR="pgbackrest"
T_BR_ASYNC="pgbackrest (archive-async)"
T_BB="pg_basebackup -Ft -Z zstd -X none"
T_BB_FETCH="pg_basebackup -Ft -Z zstd -X fetch (info)"
T_TAR="tar -x --zstd of the pg_basebackup tar (info)"
BAD_RESTORES=0
LB_FAILS=0

die() { echo "ERROR: $*" >&2; exit 1; }
mkdir -p "$BENCH_DIR" || die "cannot create $BENCH_DIR"
[[ $(id -u) == 0 ]] || warn "not root: the page cache cannot be dropped, and the tools run as $(id -un)"
[[ -x /usr/bin/time ]] || apt_install time
[[ -x /usr/bin/time ]] || die "GNU time (/usr/bin/time) is required"
have zstd || apt_install zstd
have zstd || die "zstd is required"
have pgbackrest || apt_install pgbackrest
have pgbackrest || die "pgbackrest is required (apt-get install pgbackrest)"
PGBACKREST=$(command -v pgbackrest)
pg_bin   # PG_BIN (lib.sh)
PSQL=$PG_BIN/psql PGBENCH=$PG_BIN/pgbench PG_BASEBACKUP=$PG_BIN/pg_basebackup
# Every tool runs as the cluster's owner (pgBackRest and PostgreSQL refuse root): one
# runuser around each timed command (as_pg, lib.sh, for the untimed ones).
AS_PG=()
[[ $(id -u) == 0 ]] && AS_PG=(runuser -u postgres --)
lb_skipped() { [[ $SKIP_LIFEBOAT == 1 ]]; }
SKIP_NOTE="skipped: SKIP_LIFEBOAT=1 (development run without Lifeboat)"

cleanup() {
    set +e   # on EXIT, also after a failure: stop every server we started
    [[ -n ${VERIFY_DATA:-} ]] && as_pg "$PG_BIN/pg_ctl" -D "$VERIFY_DATA" -m immediate -w -t 60 stop >/dev/null 2>&1
    stop_pg
    if [[ ${KEEP:-0} != 1 && -n ${RUN:-} ]]; then rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

q() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -At "$@"; }   # SQL from -c or stdin
load() { cut -d' ' -f1-3 /proc/loadavg; }
uri() { echo "postgres://postgres@$PGHOST:$PGPORT/"; }
settle() { q -d "$DBNAME" -c CHECKPOINT; }   # then run_timed: sync + drop_caches

# Lifeboat as postgres, untimed (repo init and the like).
lb() { as_pg "$LB" "$@"; }
# pgBackRest as postgres with our config file (CONF: the config of the stanza at hand).
pgbr() { as_pg "$PGBACKREST" --config="${CONF:-$PGBR_CONF}" --stanza=$STANZA "$@"; }

# lb_stored REPO -> LB_STORED: bytes of the repository without its WAL folder, LB_WAL: the
# WAL folder's bytes (0 if there is none).
lb_stored() {
    LB_WAL=0
    [[ -d $1/$LB_WAL_DIR ]] && LB_WAL=$(dusize "$1/$LB_WAL_DIR")
    LB_STORED=$(($(dusize "$1") - LB_WAL))
}
br_backup_bytes() { dusize "$PGBR_REPO/backup/$STANZA"; }
br_last_label() {
    pgbr info --output=json | python3 -c 'import json,sys
print(json.load(sys.stdin)[0]["backup"][-1]["label"])'
}

# --- the cluster and its archiving ------------------------------------------------------

# The data directory's state, one line: what a restore must reproduce.
# Args: extra psql options (e.g. -p PORT -h SOCKDIR for a restored server).
pg_state() {
    q "$@" -d "$DBNAME" -c "SELECT format('accounts %s sum %s; history %s; docs %s; branches md5 %s; tellers md5 %s',
        (SELECT count(*) FROM pgbench_accounts), (SELECT sum(abalance) FROM pgbench_accounts),
        (SELECT count(*) FROM pgbench_history), (SELECT count(*) FROM docs),
        (SELECT left(md5(string_agg(b::text, ',' ORDER BY bid)), 12) FROM pgbench_branches b),
        (SELECT left(md5(string_agg(t::text, ',' ORDER BY tid)), 12) FROM pgbench_tellers t))"
}

# archive_command for Lifeboat repository $1 (none: pgBackRest's alone).
archive_command() {
    local br="$PGBACKREST --config=$PGBR_CONF --stanza=$STANZA archive-push %p"
    if [[ -n ${1:-} ]]; then echo "$LB --repo $1 wal-push %p && $br"; else echo "$br"; fi
}
set_archive_command() {   # COMMAND -> ALTER SYSTEM + reload
    q -c "ALTER SYSTEM SET archive_command = \$ac\$$1\$ac\$" -c "SELECT pg_reload_conf()" >/dev/null \
        || die "ALTER SYSTEM SET archive_command failed"
    sleep 0.5   # the archiver reads the new value at its next cycle
}

# Switch to a new segment and wait (up to $1 s, default 600) until it is archived: every
# segment before is archived then.  Dies, loudly, when the archive_command keeps failing.
wait_archived() {
    local limit=${1:-600} seg t0=$SECONDS last failed0 failed
    failed0=$(q -c "SELECT failed_count FROM pg_stat_archiver")
    q -c CHECKPOINT   # a record, so the switch below is not a no-op
    seg=$(q -c "SELECT pg_walfile_name(pg_switch_wal())")
    while :; do
        IFS='|' read -r last failed < <(q -c "SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver")
        if [[ -n $last && ( $last == "$seg" || $last > $seg ) ]]; then return 0; fi
        if ((failed > failed0 + 2)); then
            echo "ERROR: archive_command keeps failing ($((failed - failed0)) failures while waiting for $seg)." >&2
            echo "  archive_command = $(q -c 'SHOW archive_command')" >&2
            lb_skipped || echo "  (a Lifeboat without \`wal-push\`? SKIP_LIFEBOAT=1 develops the rest without it)" >&2
            echo "  last lines of the server log $PG_LOG:" >&2
            tail -n 15 "$PG_LOG" >&2
            exit 1
        fi
        ((SECONDS - t0 > limit)) && die "segment $seg not archived after ${limit}s (last archived: ${last:-none}; server log $PG_LOG)"
        sleep 0.2
    done
}

setup_cluster() {
    start_pg "$RUN/pg"
    DATA=$RUN/pg/data SOCK=$RUN/pg/sock PG_LOG=$RUN/pg/pg.log
    make_pg_bench_db
    log "archiving on: archive_mode=on, wal_level=replica, full_page_writes=on (restart)"
    PGBR_REPO=$RUN/pgbr-repo PGBR_CONF=$RUN/pgbackrest/pgbackrest.conf
    write_pgbr_conf "$PGBR_CONF" "$PGBR_REPO" "$DATA"
    if lb_skipped; then
        LB_REPO=""
    else
        LB_REPO=$RUN/lb-repo-1
        lb --repo "$LB_REPO" repo init >"$RUN/lb-init-1.log" 2>&1 || { cat "$RUN/lb-init-1.log" >&2; die "lifeboat repo init failed"; }
    fi
    q -c "ALTER SYSTEM SET archive_mode = on" -c "ALTER SYSTEM SET wal_level = replica" \
      -c "ALTER SYSTEM SET full_page_writes = on" \
      -c "ALTER SYSTEM SET archive_command = \$ac\$$(archive_command "$LB_REPO")\$ac\$" || die "ALTER SYSTEM failed"
    as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$PG_LOG" -w -t 120 restart >/dev/null \
        || { tail -n 20 "$PG_LOG" >&2; die "restart with archiving failed"; }
    pgbr stanza-create >"$RUN/pgbackrest/stanza-create.log" 2>&1 \
        || { cat "$RUN/pgbackrest/stanza-create.log" >&2; die "pgbackrest stanza-create failed"; }
    wait_archived 300
    pgbr check >"$RUN/pgbackrest/check.log" 2>&1 || { cat "$RUN/pgbackrest/check.log" >&2; die "pgbackrest check failed"; }
    log "archive_command = $(q -c 'SHOW archive_command')"
}

# write_pgbr_conf FILE REPO PGDATA [EXTRA LINES...]: one stanza on our cluster, its logs,
# locks and spool beside FILE.
write_pgbr_conf() {
    local f=$1 repo=$2 pgdata=$3 dir; shift 3
    dir=$(dirname "$f")
    mkdir -p "$dir/log" "$dir/lock" "$dir/spool"
    [[ $(id -u) == 0 ]] && chown -R postgres: "$dir"
    {
        echo "[global]"
        echo "repo1-path=$repo"
        echo "repo1-retention-full=99"   # keep every full: no expire during the run
        echo "compress-type=zst"
        echo "compress-level=3"          # pgBackRest's default for zst, said explicitly
        echo "process-max=2"
        echo "start-fast=y"              # CHECKPOINT at once, as pg_basebackup -c fast
        echo "archive-timeout=600"
        echo "log-path=$dir/log"
        echo "lock-path=$dir/lock"
        echo "spool-path=$dir/spool"
        echo "log-level-console=warn"
        echo "log-level-file=info"
        printf '%s\n' "$@"
        echo
        echo "[$STANZA]"
        echo "pg1-path=$pgdata"
        echo "pg1-port=$PGPORT"
        echo "pg1-socket-path=$SOCK"
        echo "pg1-user=postgres"
    } >"$f"
    [[ $(id -u) == 0 ]] && chown postgres: "$f"
}


# --- step 1: full backups ----------------------------------------------------------------

lb_failed() {   # NOTE -> count a Lifeboat failure, loudly
    LB_FAILS=$((LB_FAILS + 1))
    warn "Lifeboat: $1"
}

step_full() {
    log "step 1: full backups, $RUNS runs each, interleaved"
    local i rc out repo stored id new news=() lbs=() lbr=() lbb="" lbw="" lb_note="" brs=() brr=() brb=() br_note=""
    local bbs=() bbr=() bbb="" bb_note="" before dir
    DAY1_STATE=$(pg_state) || die "reading the source's state failed"
    log "  source: $DAY1_STATE"
    for ((i = 1; i <= RUNS; i++)); do
        if ! lb_skipped && [[ -z $lb_note ]]; then
            repo=$RUN/lb-repo-$i
            if ((i > 1)); then   # a new repository each run, archived into from now on
                lb --repo "$repo" repo init >"$RUN/lb-init-$i.log" 2>&1 || { cat "$RUN/lb-init-$i.log" >&2; die "lifeboat repo init failed"; }
                set_archive_command "$(archive_command "$repo")"
                LB_REPO=$repo FULL_ID=""   # the second backup goes where the WAL goes
                wait_archived
            fi
            out=$RUN/lb-full-$i.json
            settle
            run_timed "$out" "${AS_PG[@]}" "$LB" --repo "$repo" backup "$(uri)" --physical --json; rc=$?
            read -r id new <<<"$(json_field "$out" id new_stored_bytes)"
            if ((rc)) || [[ $id == "?" ]]; then
                lb_note=$(lb_failure $rc "$out"); lb_failed "full backup: $lb_note"
            else
                lb_stored "$repo"
                lbs+=("$T_SECS") lbr+=("$T_RSS_KIB") lbb=$LB_STORED lbw=$LB_WAL FULL_ID=$id news+=("$new")
                log "  lifeboat run $i: $T_SECS s (cpu $T_CPU s), $LB_STORED B stored + $LB_WAL B WAL, RSS $T_RSS_KIB KiB, id $id, load $(load)"
            fi
        fi

        if [[ -z $br_note ]]; then
            before=$(br_backup_bytes)
            settle
            run_timed "$RUN/br-full-$i.log" "${AS_PG[@]}" "$PGBACKREST" --config="$PGBR_CONF" --stanza=$STANZA --type=full backup; rc=$?
            if ((rc)); then
                br_note="FAILED: exit $rc (see $RUN/br-full-$i.log.err)"; warn "pgbackrest full backup: $br_note"
            else
                stored=$(($(br_backup_bytes) - before))
                brs+=("$T_SECS") brr+=("$T_RSS_KIB") brb+=("$stored")
                log "  pgbackrest full run $i: $T_SECS s (cpu $T_CPU s), +$stored B, RSS $T_RSS_KIB KiB, load $(load)"
            fi
        fi

        if [[ -z $bb_note ]]; then
            dir=$RUN/basebackup-$i
            rm -rf "$RUN/basebackup-$((i - 1))"
            settle
            run_timed "$RUN/bb-$i.log" "${AS_PG[@]}" "$PG_BASEBACKUP" -h "$PGHOST" -p "$PGPORT" -U postgres \
                -Ft -Z zstd -X none -c fast -D "$dir"; rc=$?
            if ((rc)); then
                bb_note="FAILED: exit $rc (see $RUN/bb-$i.log.err)"; warn "pg_basebackup: $bb_note"
            else
                bbs+=("$T_SECS") bbr+=("$T_RSS_KIB") bbb=$(dusize "$dir") BB_DIR=$dir
                log "  pg_basebackup run $i: $T_SECS s (cpu $T_CPU s), $bbb B, RSS $T_RSS_KIB KiB, load $(load)"
            fi
        fi
    done
    # The repositories of the earlier runs are done with (the archiver writes to the last).
    for ((i = 1; i < RUNS; i++)); do [[ $RUN/lb-repo-$i != "${LB_REPO:-}" ]] && rm -rf "$RUN/lb-repo-$i"; done
    if lb_skipped; then
        record "full backup" "$T_LB" "" "" "" "$SKIP_NOTE"
    else
        record "full backup" "$T_LB" "$(median "${lbs[@]:-}")" "$lbb" "$(maxof "${lbr[@]:-}")" \
            "${lb_note:-runs ${lbs[*]} s; a new repository each run; bytes: the repository without its WAL folder $LB_WAL_DIR/ (+$lbw B of WAL archived since repo init); new_stored_bytes ${news[*]}; backup --physical --json}"
    fi
    record "full backup" "$T_BR" "$(median "${brs[@]:-}")" "$(median "${brb[@]:-}")" "$(maxof "${brr[@]:-}")" \
        "${br_note:-runs ${brs[*]:-} s; --type=full, compress-type=zst level 3, process-max=2, start-fast; bytes: growth of backup/$STANZA (runs ${brb[*]:-} B; archive/ left out)}"
    record "full backup" "$T_BB" "$(median "${bbs[@]:-}")" "$bbb" "$(maxof "${bbr[@]:-}")" \
        "${bb_note:-runs ${bbs[*]:-} s; -c fast, client-side zstd; bytes: the folder (base.tar.zst + backup_manifest)}"
    BR_FULL_LABEL=$(br_last_label 2>/dev/null)

    if [[ ${BENCH_SKIP_FETCH:-0} != 1 ]]; then
        dir=$RUN/basebackup-fetch
        settle
        if run_timed "$RUN/bb-fetch.log" "${AS_PG[@]}" "$PG_BASEBACKUP" -h "$PGHOST" -p "$PGPORT" -U postgres \
            -Ft -Z zstd -X fetch -c fast -D "$dir"; then
            record "full backup" "$T_BB_FETCH" "$T_SECS" "$(dusize "$dir")" "$T_RSS_KIB" "1 run; the WAL of the backup inside the tar (self-contained); load $(load)"
        else
            record "full backup" "$T_BB_FETCH" "$T_SECS" "" "$T_RSS_KIB" "FAILED (see $RUN/bb-fetch.log.err)"
        fi
        rm -rf "$dir"
    fi
}

# --- step 3: the change and the second backups --------------------------------------------

change_db() {
    local txns tps segs0 segs1 touched
    log "change: pgbench -c 2 -j 2 -T $PGBENCH_SECONDS (tpcb-like), archiving on"
    segs0=$(q -c "SELECT archived_count FROM pg_stat_archiver")
    # The archived WAL's growth from here to the end of the second backups (wal_growth).
    BR_ARCH0=$(dusize "$PGBR_REPO/archive/$STANZA") LB_WAL0=0
    [[ -n ${LB_REPO:-} ]] && { lb_stored "$LB_REPO"; LB_WAL0=$LB_WAL; }
    "$PGBENCH" -c 2 -j 2 -T "$PGBENCH_SECONDS" "$DBNAME" >"$RUN/pgbench-run.log" 2>&1 || { tail "$RUN/pgbench-run.log" >&2; die "pgbench failed"; }
    txns=$(awk -F': ' '/number of transactions actually processed/ {print $2}' "$RUN/pgbench-run.log" | cut -d/ -f1)
    tps=$(awk '/^tps/ {printf "%.0f", $3; exit}' "$RUN/pgbench-run.log")
    log "pgbench: $txns transactions, $tps tps; waiting for the archiver to catch up"
    wait_archived 3600
    segs1=$(q -c "SELECT archived_count FROM pg_stat_archiver")
    SOURCE_STATE=$(pg_state) || die "reading the source's state failed"
    log "  source: $SOURCE_STATE"
    touched=$(q -c "SELECT round(100.0 * count(*) FILTER (WHERE abalance <> 0) / count(*), 1) FROM pgbench_accounts")
    echo "# change: pgbench -c 2 -j 2 -T $PGBENCH_SECONDS tpcb-like: $txns transactions ($tps tps); $touched% of pgbench_accounts rows updated; $((segs1 - segs0)) WAL files archived from its start until the archiver caught up" >>"$TSV"
}

step_second() {
    log "step 3: second backups (once each)"
    local rc out before stored
    if lb_skipped; then
        record "second backup" "$T_LB" "" "" "" "$SKIP_NOTE"
    elif [[ -z ${LB_REPO:-} || -z ${FULL_ID:-} ]]; then
        record "second backup" "$T_LB" "" "" "" "FAILED: no full backup to follow"; lb_failed "no second backup"
    else
        lb_stored "$LB_REPO"; before=$LB_STORED; local wal0=$LB_WAL
        out=$RUN/lb-second.json
        settle
        run_timed "$out" "${AS_PG[@]}" "$LB" --repo "$LB_REPO" backup "$(uri)" --physical --json; rc=$?
        local new
        read -r LB_ID new <<<"$(json_field "$out" id new_stored_bytes)"
        if ((rc)) || [[ $LB_ID == "?" ]]; then
            local note; note=$(lb_failure $rc "$out"); LB_ID=""
            record "second backup" "$T_LB" "$T_SECS" "" "$T_RSS_KIB" "$note"; lb_failed "second backup: $note"
        else
            lb_stored "$LB_REPO"; stored=$((LB_STORED - before))
            record "second backup" "$T_LB" "$T_SECS" "$stored" "$T_RSS_KIB" \
                "1 run; CPU $T_CPU s; repository growth without $LB_WAL_DIR/ (the WAL archived meanwhile: +$((LB_WAL - wal0)) B); new_stored_bytes $new; backup id $LB_ID; load $(load)"
        fi
    fi

    before=$(br_backup_bytes)
    settle
    run_timed "$RUN/br-incr.log" "${AS_PG[@]}" "$PGBACKREST" --config="$PGBR_CONF" --stanza=$STANZA --type=incr backup; rc=$?
    if ((rc)); then
        record "second backup" "$T_BR" "$T_SECS" "" "$T_RSS_KIB" "FAILED: exit $rc (see $RUN/br-incr.log.err)"; BR_LABEL=""
    else
        BR_LABEL=$(br_last_label)
        record "second backup" "$T_BR" "$T_SECS" "$(($(br_backup_bytes) - before))" "$T_RSS_KIB" \
            "1 run; CPU $T_CPU s; --type=incr ($BR_LABEL, on the last full $BR_FULL_LABEL); growth of backup/$STANZA (archive/ left out); load $(load)"
    fi
}

# A header line: what each tool's WAL archive grew by from the change's start.
wal_growth() {
    local br lb="Lifeboat skipped"
    br=$(($(dusize "$PGBR_REPO/archive/$STANZA") - BR_ARCH0))
    if [[ -n ${LB_REPO:-} ]]; then
        lb_stored "$LB_REPO"; lb="Lifeboat +$((LB_WAL - LB_WAL0)) B ($LB_WAL_DIR/ of its repository)"
    fi
    echo "# WAL archived from the change's start to the end of the second backups: $lb, pgBackRest +$br B (archive/$STANZA)" >>"$TSV"
}

# --- step 4: restores ----------------------------------------------------------------------

# verify_restore DIR EXPECTED NAME -> note: "recovered in N s; <state>" or "BAD RESTORE: …"
# A server on DIR (a free port, its own socket folder, archive_mode off), to the end of
# recovery, its state compared with EXPECTED, stopped.
verify_restore() {
    local dir=$1 want=$2 name=$3 port sock=$RUN/vsock-$3 log=$RUN/verify-$3.log got t0 rec
    port=$(free_port)
    mkdir -p "$sock"
    [[ $(id -u) == 0 ]] && chown postgres: "$sock"
    as_pg chmod 700 "$dir"
    t0=$SECONDS
    VERIFY_DATA=$dir
    if ! as_pg "$PG_BIN/pg_ctl" -D "$dir" -l "$log" -w -t 1800 \
        -o "-c port=$port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$sock -c archive_mode=off" \
        start >/dev/null 2>&1; then
        echo "BAD RESTORE: the server did not start on it ($log: $(grep -E 'FATAL|PANIC' "$log" | tail -n 1))"
        as_pg "$PG_BIN/pg_ctl" -D "$dir" -m immediate -w -t 60 stop >/dev/null 2>&1; VERIFY_DATA=""
        return
    fi
    while :; do
        rec=$(q -h "$sock" -p "$port" -d postgres -c "SELECT pg_is_in_recovery()" 2>/dev/null)
        [[ $rec == f ]] && break
        if ((SECONDS - t0 > 1800)); then rec=timeout; break; fi
        sleep 0.5
    done
    if [[ $rec == f ]]; then
        got=$(pg_state -h "$sock" -p "$port" 2>&1)
    else
        got="still in recovery after 1800 s"
    fi
    as_pg "$PG_BIN/pg_ctl" -D "$dir" -m fast -w -t 120 stop >/dev/null 2>&1; VERIFY_DATA=""
    if [[ $got == "$want" ]]; then
        echo "checked: server up and recovery ended in $((SECONDS - t0)) s; $got, as the source at backup time"
    else
        echo "BAD RESTORE: got '$got', want '$want' (server log $log)"
        echo "BAD RESTORE of $name: got '$got', want '$want'; server log $log" >&2
    fi
}

step_restore() {
    log "step 4: restores into a new folder, $RUNS runs each, interleaved"
    local i rc lbs=() lbr=() brs=() brr=() tas=() tar=() lb_note="" br_note="" ta_note=""
    local lbdir=$RUN/restore-lifeboat brdir=$RUN/restore-pgbackrest tadir=$RUN/restore-tar chk
    for ((i = 1; i <= RUNS; i++)); do
        if ! lb_skipped && [[ -n ${LB_ID:-} && -z $lb_note ]]; then
            rm -rf "$lbdir"
            run_timed "$RUN/lb-restore-$i.log" "${AS_PG[@]}" "$LB" --repo "$LB_REPO" restore "$LB_ID" --pgdata "$lbdir"; rc=$?
            if ((rc)); then lb_note="FAILED: exit $rc (see $RUN/lb-restore-$i.log.err)"; lb_failed "restore: $lb_note"
            else lbs+=("$T_SECS") lbr+=("$T_RSS_KIB"); fi
            log "  lifeboat restore run $i: $T_SECS s (cpu $T_CPU s), RSS $T_RSS_KIB KiB, load $(load) ${lb_note}"
        fi
        if [[ -n ${BR_LABEL:-} && -z $br_note ]]; then
            rm -rf "$brdir"; as_pg mkdir -m 700 "$brdir"
            run_timed "$RUN/br-restore-$i.log" "${AS_PG[@]}" "$PGBACKREST" --config="$PGBR_CONF" --stanza=$STANZA \
                --pg1-path="$brdir" --set="$BR_LABEL" restore; rc=$?
            if ((rc)); then br_note="FAILED: exit $rc (see $RUN/br-restore-$i.log.err)"
            else brs+=("$T_SECS") brr+=("$T_RSS_KIB"); fi
            log "  pgbackrest restore run $i: $T_SECS s (cpu $T_CPU s), RSS $T_RSS_KIB KiB, load $(load) ${br_note}"
        fi
        if [[ -n ${BB_DIR:-} && -z $ta_note ]]; then
            rm -rf "$tadir"; as_pg mkdir -m 700 "$tadir"
            run_timed "$RUN/tar-$i.log" "${AS_PG[@]}" tar -x --zstd -f "$BB_DIR/base.tar.zst" -C "$tadir"; rc=$?
            if ((rc)); then ta_note="FAILED: exit $rc (see $RUN/tar-$i.log.err)"
            else tas+=("$T_SECS") tar+=("$T_RSS_KIB"); fi
            log "  tar -x run $i: $T_SECS s, RSS $T_RSS_KIB KiB, load $(load) ${ta_note}"
        fi
    done

    log "  checking each restored folder: a server on it, to the end of recovery"
    if lb_skipped; then
        record "restore" "$T_LB" "" "" "" "$SKIP_NOTE"
    elif [[ -z ${LB_ID:-} ]]; then
        record "restore" "$T_LB" "" "" "" "FAILED: no second backup to restore"; lb_failed "no restore"
    else
        if [[ -z $lb_note ]]; then
            chk=$(verify_restore "$lbdir" "$SOURCE_STATE" lifeboat)
            [[ $chk == BAD* ]] && { lb_note=$chk; BAD_RESTORES=$((BAD_RESTORES + 1)); lb_failed "restore: $chk"; }
        fi
        record "restore" "$T_LB" "$(median "${lbs[@]:-}")" "" "$(maxof "${lbr[@]:-}")" \
            "${lb_note:-runs ${lbs[*]} s; restore $LB_ID (the second backup) --pgdata DIR; $chk}"
    fi
    if [[ -z ${BR_LABEL:-} ]]; then
        record "restore" "$T_BR" "" "" "" "FAILED: no incremental backup to restore"
    else
        if [[ -z $br_note ]]; then
            chk=$(verify_restore "$brdir" "$SOURCE_STATE" pgbackrest)
            [[ $chk == BAD* ]] && { br_note=$chk; BAD_RESTORES=$((BAD_RESTORES + 1)); }
        fi
        record "restore" "$T_BR" "$(median "${brs[@]:-}")" "" "$(maxof "${brr[@]:-}")" \
            "${br_note:-runs ${brs[*]} s; restore --set $BR_LABEL (the incremental), process-max=2; $chk}"
    fi
    if [[ -n ${BB_DIR:-} ]]; then
        if [[ -z $ta_note ]]; then
            # -X none: the WAL comes from pgBackRest's archive, up to the end of the backup
            # (archive-get wants its --pg1-path to be the server's working directory).
            as_pg touch "$tadir/recovery.signal"
            printf '%s\n' "restore_command = '$PGBACKREST --config=$PGBR_CONF --stanza=$STANZA --pg1-path=$tadir archive-get %f \"%p\"'" \
                "recovery_target = 'immediate'" "recovery_target_action = 'promote'" \
                | as_pg tee -a "$tadir/postgresql.auto.conf" >/dev/null
            chk=$(verify_restore "$tadir" "$DAY1_STATE" tar)
            [[ $chk == BAD* ]] && { ta_note=$chk; BAD_RESTORES=$((BAD_RESTORES + 1)); }
        fi
        record "restore" "$T_TAR" "$(median "${tas[@]:-}")" "" "$(maxof "${tar[@]:-}")" \
            "${ta_note:-runs ${tas[*]} s; the step-1 backup (before the change), WAL by pgbackrest archive-get, recovery_target=immediate; $chk}"
    fi
    rm -rf "$lbdir" "$brdir" "$tadir" "$RUN"/vsock-*
}

# --- step 5: wal-push throughput -------------------------------------------------------------

# WAL_SEGMENTS real segments of the bench cluster in $WALDIR/pg_wal, with its pg_control:
# a temporary archive_command copies each segment while pgbench and CHECKPOINTs (full-page
# images after each) make WAL.
make_segments() {
    WALDIR=$RUN/walsrc
    local got=0 t0=$SECONDS rounds=0 stop=""
    rm -rf "$WALDIR"; as_pg mkdir -p "$WALDIR/pg_wal/archive_status" "$WALDIR/global"
    as_pg cp "$DATA/global/pg_control" "$WALDIR/global/pg_control"
    log "step 5: making $WAL_SEGMENTS WAL segments (pgbench + CHECKPOINT, archive_command copies them)"
    set_archive_command "cp %p $WALDIR/pg_wal/%f"
    wait_archived
    rm -f "$WALDIR"/pg_wal/0*   # from the first whole segment after the switch on
    while ((got < WAL_SEGMENTS + 1)); do   # one more: the last may be mid-copy
        "$PGBENCH" -n -c 2 -j 2 -T 5 "$DBNAME" >>"$RUN/pgbench-wal.log" 2>&1 || die "pgbench (WAL) failed"
        q -c CHECKPOINT
        rounds=$((rounds + 1))
        got=$(find "$WALDIR/pg_wal" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9A-F]{24}' | wc -l)
        if ((SECONDS - t0 > WAL_GEN_SECONDS)); then stop="capped at WAL_GEN_SECONDS=$WAL_GEN_SECONDS"; break; fi
    done
    set_archive_command "true"   # the archiver is done with copies: none during the timing
    wait_archived
    # Keep the first WAL_SEGMENTS (all complete: the archiver copies one at a time, in order).
    find "$WALDIR/pg_wal" -maxdepth 1 -type f -printf '%f\n' | sort >"$RUN/walfiles.txt"
    grep -E '^[0-9A-F]{24}$' "$RUN/walfiles.txt" | head -n "$WAL_SEGMENTS" >"$RUN/segments.txt"
    grep -vxF -f "$RUN/segments.txt" "$RUN/walfiles.txt" | sed "s|^|$WALDIR/pg_wal/|" | xargs -r rm -f
    NSEG=$(wc -l <"$RUN/segments.txt")
    ((NSEG > 0)) || die "no WAL segments made"
    SEG_NOTE="$NSEG segments of 16 MiB ($(head -n 1 "$RUN/segments.txt")..$(tail -n 1 "$RUN/segments.txt")), from $rounds rounds of pgbench -T 5 + CHECKPOINT${stop:+; $stop}"
    log "  $SEG_NOTE, $(dusize "$WALDIR/pg_wal") B"
}

# The loop PostgreSQL's archiver runs: push_loop DIR LIST CMD... (as postgres).
PUSH_LOOP='cd "$1" || exit 1; list=$2; shift 2
while read -r seg; do
    "$@" "pg_wal/$seg" </dev/null || { echo "push of $seg failed" >&2; exit 1; }
    mv "pg_wal/archive_status/$seg.ready" "pg_wal/archive_status/$seg.done"
done <"$list"'

reset_ready() {
    find "$WALDIR/pg_wal/archive_status" -mindepth 1 -delete
    as_pg bash -c 'cd "$1/pg_wal/archive_status" && while read -r s; do : >"$s.ready"; done <"$2"' _ "$WALDIR" "$RUN/segments.txt"
}

# push_timed OUT CMD... -> run_timed of the loop over all segments (the .ready files made anew)
push_timed() {
    local out=$1; shift
    reset_ready
    run_timed "$out" "${AS_PG[@]}" bash -c "$PUSH_LOOP" _ "$WALDIR" "$RUN/segments.txt" "$@"
}

step_walpush() {
    make_segments
    log "  wal-push: $NSEG segments one call each, $RUNS runs per tool, interleaved"
    local i rc repo conf v names=(lb lbenc br brasync)
    declare -A secs=() rss=() bytes=() note=()
    for ((i = 1; i <= RUNS; i++)); do
        for v in "${names[@]}"; do
            [[ -n ${note[$v]:-} ]] && continue   # failed before
            case $v in
            lb|lbenc)
                lb_skipped && continue
                repo=$RUN/walrepo-$v-$i; rm -rf "$repo"
                if [[ $v == lbenc ]]; then export LIFEBOAT_PASSWORD=bench-password; fi
                if [[ $v == lbenc ]]; then lb --repo "$repo" repo init --encrypt; else lb --repo "$repo" repo init; fi \
                    >"$RUN/push-$v-$i.log.err" 2>&1; rc=$?
                ((rc)) || { push_timed "$RUN/push-$v-$i.log" "$LB" --repo "$repo" wal-push; rc=$?; }
                unset LIFEBOAT_PASSWORD
                ;;
            br|brasync)
                repo=$RUN/walrepo-$v-$i conf=$RUN/pgbr-$v-$i/pgbackrest.conf; rm -rf "$repo" "$(dirname "$conf")"
                if [[ $v == brasync ]]; then write_pgbr_conf "$conf" "$repo" "$DATA" "archive-async=y"
                else write_pgbr_conf "$conf" "$repo" "$DATA"; fi
                CONF=$conf pgbr stanza-create >"$RUN/walrepo-$v-$i.init.log" 2>&1 \
                    || { cat "$RUN/walrepo-$v-$i.init.log" >&2; die "pgbackrest stanza-create ($v) failed"; }
                # pg1-path: the segments' folder (archive-push wants the working directory
                # there, reads its global/pg_control, and the async process its .ready files).
                push_timed "$RUN/push-$v-$i.log" "$PGBACKREST" --config="$conf" --stanza=$STANZA \
                    --pg1-path="$WALDIR" archive-push; rc=$?
                ;;
            esac
            if ((rc)); then
                note[$v]="FAILED: exit $rc (see $RUN/push-$v-$i.log.err: $(tail -n 2 "$RUN/push-$v-$i.log.err" | tr '\n' ' '))"
                [[ $v == lb* ]] && lb_failed "wal-push: ${note[$v]}"
            else
                sleep 1   # an async pgBackRest finishes its bookkeeping
                secs[$v]+="$T_SECS " rss[$v]+="$T_RSS_KIB " bytes[$v]=$(dusize "$repo")
                log "  $v run $i: $T_SECS s ($(awk -v n="$NSEG" -v s="$T_SECS" 'BEGIN {printf "%.1f", n / s}') seg/s), cpu $T_CPU s, RSS $T_RSS_KIB KiB, repo $(dusize "$repo") B, load $(load)"
            fi
            ((i < RUNS)) && rm -rf "$repo"
        done
    done
    local -A tool=([lb]=$T_LB [lbenc]=$T_LB_ENC [br]=$T_BR [brasync]=$T_BR_ASYNC)
    local -A how=([lb]="lifeboat --repo R wal-push pg_wal/SEG, unencrypted repository"
        [lbenc]="lifeboat --repo R wal-push pg_wal/SEG, repo init --encrypt (LIFEBOAT_PASSWORD)"
        [br]="pgbackrest archive-push pg_wal/SEG (sync), zst level 3"
        [brasync]="pgbackrest archive-push pg_wal/SEG, archive-async=y, process-max=2, spool folder; the detached async process's RSS is not counted")
    for v in "${names[@]}"; do
        if [[ $v == lb* ]] && lb_skipped; then record "wal-push" "${tool[$v]}" "" "" "" "$SKIP_NOTE"; continue; fi
        # shellcheck disable=SC2086
        record "wal-push" "${tool[$v]}" "$(median ${secs[$v]:-})" "${bytes[$v]:-}" "$(maxof ${rss[$v]:-})" \
            "${note[$v]:-$SEG_NOTE; runs ${secs[$v]}s; ${how[$v]}; bytes: the repository after}"
    done
}

# --- main ------------------------------------------------------------------------------------

main() {
    local t0=$SECONDS
    rm -rf "$RUN"; mkdir -p "$RUN"
    [[ $(id -u) == 0 ]] && chown postgres: "$RUN"
    # Lifeboat's defaults, and a trust state of its own (each run's repositories are new),
    # shared by every Lifeboat process: ours and the server's archive/restore commands.
    unset LIFEBOAT_REPO LIFEBOAT_CONFIG LIFEBOAT_COMPRESSION LIFEBOAT_LEVEL LIFEBOAT_INIT
    unset LIFEBOAT_PASSWORD LIFEBOAT_PASSWORD_FILE LIFEBOAT_PASSWORD_COMMAND LIFEBOAT_DRILL_SERVER
    export XDG_STATE_HOME=$RUN/state
    as_pg mkdir -p "$XDG_STATE_HOME"
    cd "$RUN" || exit 1
    if lb_skipped; then
        warn "SKIP_LIFEBOAT=1: Lifeboat is not run (development only); its rows say skipped"
    else
        build_lifeboat
        ((LB_OK)) || die "no lifeboat binary"
        LB_VERSION=$(lifeboat_version)
        # A copy the postgres user can run, at an absolute path for archive_command.
        mkdir -p "$RUN/bin"; cp "$LB" "$RUN/bin/lifeboat" && chmod 755 "$RUN/bin" "$RUN/bin/lifeboat" || die "copying $LB"
        LB=$RUN/bin/lifeboat
        as_pg "$LB" --help 2>/dev/null | grep -q 'wal-push' \
            || warn "$LB --help lists no wal-push: the archive check below will likely fail"
    fi
    drop_caches
    local cache="cold page cache before every timed run (CHECKPOINT, sync, drop_caches)"
    ((DROP_OK)) || cache="WARM page cache (drop_caches not writable); CHECKPOINT before every timed run"
    setup_cluster
    {
        echo "# PostgreSQL physical backup benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores (shared), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), ${LB_VERSION:-Lifeboat skipped (SKIP_LIFEBOAT=1)}"
        echo "# PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') (fsync off, full_page_writes on, archive_mode on), $("$PGBACKREST" version), $(zstd --version | grep -o 'v[0-9.]*' | head -n 1 | sed 's/^/zstd /')"
        echo "# database: pgbench -s $SCALE + docs ($((TEXT_MB * 1000)) rows of random-word text); $(q -c "SELECT pg_size_pretty(pg_database_size(current_database()))") on disk"
        echo "# archive_command: $(q -c 'SHOW archive_command' | sed "s|$RUN|RUN|g; s|lb-repo-1|lb-repo-N (the repository of the run)|")"
        echo "# timing: median of $RUNS runs (tools interleaved) where so noted, wall seconds; $cache"
        echo "# load average at start: $(load)"
    } >"$TSV"
    sed 's/^# //' "$TSV" >&2

    step_full
    change_db
    step_second
    wal_growth
    step_restore
    step_walpush
    echo "# load average at end: $(load); whole run $(((SECONDS - t0) / 60)) min" >>"$TSV"

    python3 "$HERE/report_pg_physical.py" "$TSV" | tee "$MD"
    log "written to $MD (raw: $TSV)"
    local rc=0
    if ((BAD_RESTORES)); then
        echo "ERROR: $BAD_RESTORES restore(s) did not come up with the source's data" >&2; rc=1
    fi
    if ((LB_FAILS)); then
        echo "ERROR: $LB_FAILS Lifeboat step(s) failed (see the notes above)" >&2; rc=1
    fi
    exit $rc
}

main "$@"
