#!/usr/bin/env bash
# Which pg_dump form deduplicates best from one day to the next under Lifeboat's
# content-defined chunking (FastCDC 64 KiB / 256 KiB / 1 MiB, then zstd -3)?
#
# A throwaway PostgreSQL cluster (start_pg in lib.sh) holds `pgbench -i -s $SCALE`
# plus `docs`, a table of ~$TEXT_MB MB of random hex text (1 KB rows, md5 words: it
# compresses ~2x, not the ~100x of pgbench's blank filler) and $LOBS large objects
# of 256 KiB each.
#
#   day 1   dump the database in each form (compression off in pg_dump where the
#           form allows it), time each dump, back each up with Lifeboat into its
#           own fresh repository, the plain dump also with restic (--stdin);
#   change  a day of ordinary writes: `pgbench -c 2 -j 2 -t $TXNS` (by default 1% of
#           the accounts' rows in transactions), UPDATE of 1% of `docs` rows chosen
#           at random (one md5 word of the body, author, updated_at), INSERT of 0.5%
#           new `docs` rows, one new large object.  CHANGE=recent: the same amount
#           of writes, but the updated rows (accounts and docs) are drawn from the
#           newest 5% of ids, as in tables where mostly recent rows change;
#   day 1b  the unchanged database dumped again in each form and backed up again: what
#           a re-dump costs with nothing changed (timestamps, plain's random \restrict key);
#   day 2   dump again in each form to the SAME path and back it up again into
#           the same repository: the repository's growth is what the day cost.
#
# Forms: plain  `pg_dump -Fp` (one stream)
#        custom0  `pg_dump -Fc -Z0` (one stream)
#        dir0  `pg_dump -Fd -Z0` (a folder: toc.dat, one NNNN.dat per table,
#              blobs.toc + blob_OID.dat); also timed with -j $JOBS (not backed up)
#        custom  `pg_dump -Fc` (default compression): what users store today
#        plain.zst  `pg_dump | zstd -3`: the "new compressed copy every day" reference
#
# Stored bytes are the growth of the repository folder (du -sb), which counts
# everything a backup writes (packs, index, manifest); Lifeboat's own
# new_stored_bytes from `backup --json` is given beside it.  Times are wall
# seconds with a warm page cache on a shared machine: compare, do not quote.
# It also checks facts about the directory format that a PostgreSQL source
# would rely on (rows per table = lines of NNNN.dat - 3, the `\.` end line,
# blobs, what differs between two dumps of an unchanged database, what
# `pg_restore -l` needs).
#
# Usage:   bench/pg_dump_forms.sh
# Environment:
#   LIFEBOAT   lifeboat binary (default target/release/lifeboat, not built here)
#   RESTIC     restic binary (default: restic on PATH; skipped when missing)
#   SCALE      pgbench scale (20: 2 M accounts, ~250 MB of COPY text)
#   TEXT_MB    size of the random-text table in MB (200)
#   LOBS       large objects of 256 KiB (20)
#   TXNS       pgbench transactions per client, 2 clients (SCALE*500: 1% of accounts)
#   JOBS       pg_dump -j for the parallel directory dump (2)
#   CHANGE     uniform (default: rows updated anywhere, pgbench's own tpcb-like) or
#              recent (updated rows drawn from the newest 5% of ids)
#   BENCH_DIR  work folder (/tmp/lifeboat-bench); the run is in $BENCH_DIR/pg-dump-forms
#   BENCH_PG_BIN  PostgreSQL server binaries (newest /usr/lib/postgresql/*/bin)
#   KEEP=1     keep the dumps and repositories (removed at the end otherwise)
# Writes $BENCH_DIR/results-pg-dump-forms-$CHANGE.md (the tables printed at the end).

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"   # log, warn, have, dusize, start_pg, stop_pg
LIFEBOAT=${LIFEBOAT:-$ROOT/target/release/lifeboat}
RESTIC=${RESTIC:-$(command -v restic || true)}
SCALE=${SCALE:-20}
TEXT_MB=${TEXT_MB:-200}
LOBS=${LOBS:-20}
TXNS=${TXNS:-$((SCALE * 500))}
JOBS=${JOBS:-2}
CHANGE=${CHANGE:-uniform}
[[ $CHANGE == uniform || $CHANGE == recent ]] || { echo "CHANGE is uniform or recent" >&2; exit 2; }
RUN=$BENCH_DIR/pg-dump-forms
OUT=$BENCH_DIR/results-pg-dump-forms-$CHANGE.md
DUMP=$RUN/dump      # today's dump of each form: the path every backup reads
FORMS=(plain custom0 dir0 custom plain.zst)
declare -A DESC=(
    [plain]='`pg_dump -Fp`'
    [custom0]='`pg_dump -Fc -Z0`'
    [dir0]='`pg_dump -Fd -Z0`'
    [dir0j]="\`pg_dump -Fd -Z0 -j $JOBS\`"
    [custom]='`pg_dump -Fc` (default compression)'
    [plain.zst]='`pg_dump \| zstd -3`'
)
declare -A DUMP_SECS DUMP_BYTES LB_SECS LB_ADDED LB_NEW LB_CHUNKS RS_ADDED RS_SECS

[[ -x $LIFEBOAT ]] || { echo "no lifeboat binary at $LIFEBOAT (cargo build --release, or set LIFEBOAT)" >&2; exit 1; }
have zstd || { echo "zstd is required" >&2; exit 1; }
[[ -n $RESTIC && -x $RESTIC ]] || { warn "no restic: its rows are skipped"; RESTIC=""; }
pg_bin   # PG_BIN (lib.sh)
PG_DUMP=$PG_BIN/pg_dump PG_RESTORE=$PG_BIN/pg_restore PSQL=$PG_BIN/psql PGBENCH=$PG_BIN/pgbench

cleanup() {
    set +e   # runs on EXIT, also after a failure: stop the cluster whatever happens
    stop_pg
    rm -rf "$RUN/pg"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# timed VAR CMD... -> run CMD, put its wall seconds in ${VAR}
timed() {
    local -n _secs=$1; shift
    local t0=$EPOCHREALTIME
    "$@"
    _secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')
}
q() { "$PSQL" -X -q -v ON_ERROR_STOP=1 -At "$@"; }   # SQL from -c or stdin
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }

# json_get FILE KEY... -> the keys of the last JSON object FILE holds, space-separated
json_get() {
    python3 -c 'import json,sys
text=open(sys.argv[1]).read()
obj=json.loads(text[text.find("{"):])
print(*[obj.get(k) for k in sys.argv[2:]])' "$@"
}

# --- the database and the day of changes ------------------------------------

make_db() {
    local rows=$((TEXT_MB * 1000000 / 1040))
    log "pgbench -i -s $SCALE"
    "$PGBENCH" -i -q -s "$SCALE" >"$RUN/pgbench-init.log" 2>&1
    log "docs: $rows rows of ~1 KB random hex text (~$TEXT_MB MB); $LOBS large objects"
    q >/dev/null <<SQL
CREATE TABLE docs (id bigint PRIMARY KEY, author int NOT NULL,
                   updated_at timestamptz NOT NULL, body text NOT NULL);
INSERT INTO docs
SELECT i, (random() * 10000)::int, now() - random() * interval '365 days',
       array_to_string(array(SELECT md5(random()::text || i || g) FROM generate_series(1, 30) g), ' ')
FROM generate_series(1, $rows) i;
SELECT count(lo_from_bytea(0, convert_to(
    (SELECT string_agg(md5(random()::text || g || n), '') FROM generate_series(1, 8192) g), 'UTF8')))
FROM generate_series(1, $LOBS) n;
VACUUM ANALYZE;
SQL
}

change_db() {
    local upd ins n lo=1 script=(-b tpcb-like) where
    n=$(q -c "SELECT count(*) FROM docs")
    upd=$((n / 100)) ins=$((n / 200))
    if [[ $CHANGE == recent ]]; then
        lo=$((SCALE * 100000 * 95 / 100 + 1))
        # pgbench's built-in tpcb-like, but the account drawn from the newest 5%
        cat >"$RUN/tpcb-recent.sql" <<PGB
\\set aid random($lo, $((SCALE * 100000)))
\\set bid random(1, $SCALE)
\\set tid random(1, $((SCALE * 10)))
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
PGB
        script=(-f "$RUN/tpcb-recent.sql")
        where="WHERE id > $((n * 95 / 100))"
    fi
    log "a day of changes ($CHANGE): pgbench -c 2 -j 2 -t $TXNS; UPDATE $upd docs rows; INSERT $ins; 1 new large object"
    "$PGBENCH" -c 2 -j 2 -t "$TXNS" "${script[@]}" >"$RUN/pgbench-run.log" 2>&1
    grep -E '^(tps|number of transactions actually)' "$RUN/pgbench-run.log" >&2 || true
    q >/dev/null <<SQL
UPDATE docs SET author = (random() * 10000)::int, updated_at = now(),
       body = overlay(body PLACING md5(random()::text) FROM 1 + 33 * floor(random() * 30)::int FOR 32)
WHERE id IN (SELECT id FROM docs ${where:-} ORDER BY random() LIMIT $upd);
INSERT INTO docs
SELECT m + i, (random() * 10000)::int, now(),
       array_to_string(array(SELECT md5(random()::text || i || g) FROM generate_series(1, 30) g), ' ')
FROM (SELECT max(id) AS m FROM docs) x, generate_series(1, $ins) i;
SELECT lo_from_bytea(0, convert_to(
    (SELECT string_agg(md5(random()::text || g), '') FROM generate_series(1, 8192) g), 'UTF8'));
SQL
    if [[ $CHANGE == recent ]]; then where="among the newest 5% of ids, accounts too"; else where="anywhere"; fi
    CHANGE_NOTE="$CHANGE: pgbench tpcb-like -c 2 -t $TXNS ($((2 * TXNS)) transactions, $(awk '/^tps/ {printf "%.0f tps", $3; exit}' "$RUN/pgbench-run.log")); $upd docs rows (1%) updated at random $where, $ins inserted; 1 large object added"
}

# --- dumps and backups ------------------------------------------------------

# dump DAY FORM -> today's dump of FORM at $DUMP/FORM (dir0j: $RUN/dir0j, time only)
dump_form() {
    local day=$1 form=$2 path=$DUMP/$2 secs
    [[ $form == dir0j ]] && path=$RUN/dir0j
    rm -rf "$path"
    case $form in
        plain)     timed secs "$PG_DUMP" -Fp -f "$path" ;;
        custom0)   timed secs "$PG_DUMP" -Fc -Z0 -f "$path" ;;
        dir0)      timed secs "$PG_DUMP" -Fd -Z0 -f "$path" ;;
        dir0j)     timed secs "$PG_DUMP" -Fd -Z0 -j "$JOBS" -f "$path" ;;
        custom)    timed secs "$PG_DUMP" -Fc -f "$path" ;;
        plain.zst) timed secs bash -c 'set -o pipefail; "$1" -Fp | zstd -3 -q -o "$2"' _ "$PG_DUMP" "$path" ;;
    esac
    DUMP_SECS[$day.$form]=$secs
    DUMP_BYTES[$day.$form]=$(dusize "$path")
    log "day $day $form: $(mib "${DUMP_BYTES[$day.$form]}") MiB in $secs s"
}

# lb_backup DAY FORM -> back up $DUMP/FORM into $RUN/repo-FORM (created on day 1)
lb_backup() {
    local day=$1 form=$2 repo=$RUN/repo-$2 out=$RUN/lb-$1-$2.json before=0 secs init=()
    [[ $day == 1 ]] && init=(--init)
    [[ -d $repo ]] && before=$(dusize "$repo")
    timed secs "$LIFEBOAT" backup "${init[@]}" --kind files --no-redact --json --repo "$repo" \
        "$DUMP/$form" >"$out" 2>"$out.err"
    LB_SECS[$day.$form]=$secs
    LB_ADDED[$day.$form]=$(($(dusize "$repo") - before))
    local nb rb
    read -r LB_NEW["$day.$form"] nb rb <<<"$(json_get "$out" new_stored_bytes new_blobs reused_blobs)"
    LB_CHUNKS[$day.$form]="$nb new / $((nb + rb))"
    log "lifeboat day $day $form: +$(mib "${LB_ADDED[$day.$form]}") MiB ($nb of $((nb + rb)) chunks new) in $secs s"
}

# restic_backup DAY FORM -> the plain dump through --stdin, a folder as a folder
restic_backup() {
    local day=$1 form=$2 repo=$RUN/restic-$2 before=0 secs
    [[ -n $RESTIC ]] || return 0
    export RESTIC_PASSWORD=x RESTIC_CACHE_DIR=$RUN/restic-cache
    if [[ $day == 1 ]]; then "$RESTIC" -r "$repo" init >"$RUN/restic-init-$form.log" 2>&1; fi
    before=$(dusize "$repo")
    if [[ -d $DUMP/$form ]]; then
        timed secs "$RESTIC" -r "$repo" backup -q "$DUMP/$form" >"$RUN/restic-$day-$form.log" 2>&1
    else
        timed secs bash -c '"$1" -r "$2" backup -q --stdin --stdin-filename "$3" <"$4"' \
            _ "$RESTIC" "$repo" "$form.sql" "$DUMP/$form" >"$RUN/restic-$day-$form.log" 2>&1
    fi
    RS_SECS[$day.$form]=$secs
    RS_ADDED[$day.$form]=$(($(dusize "$repo") - before))
    log "restic day $day $form: +$(mib "${RS_ADDED[$day.$form]}") MiB in $secs s"
}

# do_day DAY -> dump in every form and back each up (DAY 1 and 2: also the -j dump;
# DAY 1b: the unchanged day-1 database dumped again, backed up after day 1)
do_day() {
    local day=$1 f
    for f in "${FORMS[@]}"; do dump_form "$day" "$f"; done
    if [[ $day != 1b ]]; then
        sleep 1.1   # so the two directory dumps of the same data differ in their creation time
        dump_form "$day" dir0j
    fi
    for f in "${FORMS[@]}"; do lb_backup "$day" "$f"; done
    restic_backup "$day" plain
    restic_backup "$day" dir0
}

# Keep day 1's dumps next to the day-2 ones (for the checks), freeing the backup path.
keep_day1() {
    mkdir -p "$RUN/day1"
    mv "$DUMP"/* "$RUN/day1/"
    mv "$RUN/dir0j" "$RUN/day1/dir0j"
}

# --- facts about the directory format ---------------------------------------

nfiles() { local n=0 f; for f in "$@"; do [[ -e $f ]] && n=$((n + 1)); done; echo "$n"; }

# differing_bytes A B -> "N bytes differ (offsets X..Y)" or "identical"
differing_bytes() {
    local n first last
    n=$(cmp -l "$1" "$2" 2>/dev/null | wc -l) || true
    if [[ $(size "$1") != "$(size "$2")" ]]; then echo "sizes differ ($(size "$1") vs $(size "$2") B)"; return; fi
    if ((n == 0)); then echo "identical"; return; fi
    ((n == 1)) && { echo "1 byte differs, at offset $(cmp -l "$1" "$2" | awk '{print $1 - 1}')"; return; }
    first=$(cmp -l "$1" "$2" | head -n 1 | awk '{print $1 - 1}') || true
    last=$(cmp -l "$1" "$2" | tail -n 1 | awk '{print $1 - 1}') || true
    echo "$n bytes differ, at offsets $first..$last"
}

facts() {
    local d=$DUMP/dir0 id tbl file f lines rows tail_ok
    echo "### Directory format (\`pg_dump -Fd -Z0\`, PostgreSQL $("$PG_DUMP" --version | awk '{print $3}'))"
    echo
    local others=()
    for file in "$d"/*; do [[ $file == *.dat ]] || others+=("${file##*/}"); done
    echo "Day-2 dump folder: $(nfiles "$d"/[0-9]*.dat) NNNN.dat (one per table, NNNN = the TABLE DATA entry's dump id)," \
         "$(nfiles "$d"/blob_*.dat) blob_OID.dat, toc.dat ($(size "$d/toc.dat") B), and ${others[*]:-nothing else}."
    echo
    echo "| TABLE DATA (pg_restore -l) | file | bytes | newlines | count(*) | newlines - count(*) | ends with \`\\.\\n\\n\\n\` |"
    echo "|---|---|---:|---:|---:|---:|---|"
    while read -r id tbl <&3; do
        file=$d/$id.dat
        lines=$(wc -l <"$file")
        rows=$(q -c "SELECT count(*) FROM $tbl")
        if [[ $(tail -c 5 "$file" | od -An -c | tr -s ' ') == ' \ . \n \n \n' ]]; then tail_ok=yes; else tail_ok="no: $(tail -c 5 "$file" | od -An -c)"; fi
        echo "| $tbl | $id.dat | $(size "$file") | $lines | $rows | $((lines - rows)) | $tail_ok |"
    done 3< <("$PG_RESTORE" -l "$d" | awk '$4 == "TABLE" && $5 == "DATA" {sub(";", "", $1); print $1, $6 "." $7}')
    echo
    local nlo blobs_lines lo_bytes blob_bytes
    nlo=$(q -c "SELECT count(*) FROM pg_largeobject_metadata")
    lo_bytes=$(q -c "SELECT sum(length(lo_get(oid))) FROM pg_largeobject_metadata")
    blobs_lines=$(wc -l <"$d/blobs.toc")
    blob_bytes=$(cat "$d"/blob_*.dat | wc -c)
    echo "- Large objects: $nlo in the database ($lo_bytes B); blobs.toc has $blobs_lines lines, the first \`$(head -n 1 "$d/blobs.toc")\`;" \
         "$(nfiles "$d"/blob_*.dat) blob_OID.dat files, $blob_bytes B in all (the raw bytes, no escaping);" \
         "pg_restore -l lists $("$PG_RESTORE" -l "$d" | grep -c ' BLOB - ') \`BLOB\` entries (metadata) and $("$PG_RESTORE" -l "$d" | grep -c ' BLOBS - ') \`BLOBS\` entry (the data)."
    echo "- toc.dat of two dumps of the unchanged day-1 database (\`-Fd -Z0\`, then \`-Fd -Z0 -j $JOBS\`, ${DUMP_SECS[1.dir0]} s apart or more):" \
         "$(differing_bytes "$RUN/day1/dir0/toc.dat" "$RUN/day1/dir0j/toc.dat");" \
         "header: \`$("$PG_RESTORE" -l "$RUN/day1/dir0" | grep 'Archive created')\` vs \`$("$PG_RESTORE" -l "$RUN/day1/dir0j" | grep 'Archive created')\`."
    local same=0 other=()
    for file in "$RUN/day1/dir0"/*; do
        [[ ${file##*/} == toc.dat ]] && continue
        if cmp -s "$file" "$RUN/day1/dir0j/${file##*/}"; then same=$((same + 1)); else other+=("${file##*/}"); fi
    done
    echo "  The other files of those two dumps: $same identical, ${#other[@]} different ${other[*]:-}."
    local ident=() changed=() new=()
    for file in "$d"/*; do
        f=${file##*/}
        if [[ ! -e $RUN/day1/dir0/$f ]]; then new+=("$f")
        elif cmp -s "$file" "$RUN/day1/dir0/$f"; then ident+=("$f")
        else changed+=("$f"); fi
    done
    echo "- Day 1 vs day 2 (\`-Fd -Z0\`): ${#ident[@]} files identical ($(printf '%s\n' "${ident[@]}" | grep -c '^blob_') of them blob_OID.dat)," \
         "changed: ${changed[*]:-none}; new: ${new[*]:-none}."
    local only=$RUN/toc-only
    rm -rf "$only"; mkdir -p "$only"; cp "$d/toc.dat" "$only/"
    echo "- \`pg_restore -l\` on a folder holding only toc.dat: exit $("$PG_RESTORE" -l "$only" >"$RUN/toc-only.list" 2>&1; echo $?)," \
         "$(grep -vc '^;' "$RUN/toc-only.list") entries, the same list as with the data files: $(cmp -s "$RUN/toc-only.list" <("$PG_RESTORE" -l "$d") && echo yes || echo no);" \
         "\`pg_restore -s\` (schema only) exit $("$PG_RESTORE" -s -f /dev/null "$only" >/dev/null 2>&1; echo $?);" \
         "a full \`pg_restore -f /dev/null\` exit $("$PG_RESTORE" -f /dev/null "$only" >"$RUN/toc-only.err" 2>&1; echo $?) (\`$(head -n 1 "$RUN/toc-only.err")\`)."
    # Two schema-only dumps a second apart, plain and custom: what differs run to run.
    "$PG_DUMP" -s -Fp -f "$RUN/s1.sql"; "$PG_DUMP" -s -Fc -Z0 -f "$RUN/s1.dump"; sleep 1.1
    "$PG_DUMP" -s -Fp -f "$RUN/s2.sql"; "$PG_DUMP" -s -Fc -Z0 -f "$RUN/s2.dump"
    echo "- Two dumps of an unchanged database: plain (\`-s -Fp\`) differs in the lines" \
         "\`$(diff "$RUN/s1.sql" "$RUN/s2.sql" | grep '^<' | cut -c3- | sed 's/ .*/ <random key>/' | tr '\n' ',' | sed 's/,$//; s/,/`, `/g')\`;" \
         "custom (\`-s -Fc -Z0\`): $(differing_bytes "$RUN/s1.dump" "$RUN/s2.dump") (the creation time in the header)."
}

# --- report ------------------------------------------------------------------

report() {
    local zst=${DUMP_BYTES[2.plain.zst]} fc=${DUMP_BYTES[2.custom]} f
    echo "## pg_dump forms under Lifeboat, day 1 -> day 2"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores (shared), $("$LIFEBOAT" --version | head -n 1)," \
         "PostgreSQL $("$PG_DUMP" --version | awk '{print $3}')${RESTIC:+, $("$RESTIC" version | cut -d' ' -f1-2)}."
    echo "Database: pgbench -s $SCALE, docs $(q -c "SELECT pg_size_pretty(pg_total_relation_size('docs'))") ($(q -c "SELECT count(*) FROM docs") rows of random hex text), $(q -c "SELECT count(*) FROM pg_largeobject_metadata") large objects; $(q -c "SELECT pg_size_pretty(pg_database_size(current_database()))") on disk on day 2."
    echo "Change: $CHANGE_NOTE."
    echo "Reference for a day: a new \`pg_dump | zstd -3\` of day 2 = $zst B ($(mib "$zst") MiB); a new \`pg_dump -Fc\` = $fc B ($(mib "$fc") MiB)."
    echo
    echo "| form | dump day 2 | pg_dump s (day 1 / 2) | Lifeboat day 1 stored | re-dump unchanged: added | **day 2 added** | of new \`pg_dump\\|zstd -3\` | of new \`pg_dump -Fc\` | chunks day 2 | Lifeboat new_stored_bytes | backup s (day 1 / 2) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for f in "${FORMS[@]}" dir0j; do
        if [[ $f == dir0j ]]; then
            echo "| ${DESC[$f]} | $(mib "${DUMP_BYTES[2.$f]}") MiB | ${DUMP_SECS[1.$f]} / ${DUMP_SECS[2.$f]} | (same files as dir0) | | | | | | | |"
            continue
        fi
        echo "| ${DESC[$f]} | $(mib "${DUMP_BYTES[2.$f]}") MiB | ${DUMP_SECS[1.$f]} / ${DUMP_SECS[2.$f]} |" \
             "$(mib "${LB_ADDED[1.$f]}") MiB | ${LB_ADDED[1b.$f]} B | **$(mib "${LB_ADDED[2.$f]}") MiB** (${LB_ADDED[2.$f]} B) |" \
             "$(ratio "${LB_ADDED[2.$f]}" "$zst") | $(ratio "${LB_ADDED[2.$f]}" "$fc") | ${LB_CHUNKS[2.$f]} |" \
             "${LB_NEW[2.$f]} | ${LB_SECS[1.$f]} / ${LB_SECS[2.$f]} |"
    done
    if [[ -n $RESTIC ]]; then
        for f in plain dir0; do
            echo "| restic $([[ $f == plain ]] && echo '--stdin, ')${DESC[$f]} | $(mib "${DUMP_BYTES[2.$f]}") MiB | (as above) |" \
                 "$(mib "${RS_ADDED[1.$f]}") MiB | ${RS_ADDED[1b.$f]} B | **$(mib "${RS_ADDED[2.$f]}") MiB** (${RS_ADDED[2.$f]} B) |" \
                 "$(ratio "${RS_ADDED[2.$f]}" "$zst") | $(ratio "${RS_ADDED[2.$f]}" "$fc") | | | ${RS_SECS[1.$f]} / ${RS_SECS[2.$f]} |"
        done
    fi
    echo
    echo "Stored and added bytes: growth of the repository folder (du -sb). Times: wall seconds, warm cache, shared machine."
    echo
    facts
}

# --- main --------------------------------------------------------------------

main() {
    rm -rf "$RUN"; mkdir -p "$RUN" "$DUMP"
    # Lifeboat's defaults, and a trust state of its own (each run's repositories are new).
    unset LIFEBOAT_REPO LIFEBOAT_CONFIG LIFEBOAT_COMPRESSION LIFEBOAT_LEVEL
    unset LIFEBOAT_PASSWORD LIFEBOAT_PASSWORD_FILE LIFEBOAT_PASSWORD_COMMAND
    export XDG_STATE_HOME=$RUN/state
    cd "$RUN"
    start_pg "$RUN/pg"
    make_db
    log "day 1"
    do_day 1
    keep_day1
    log "day 1 again: the unchanged database dumped and backed up once more"
    do_day 1b
    rm -rf "${DUMP:?}"/*
    change_db
    log "day 2"
    do_day 2
    report | tee "$OUT"
    log "written to $OUT"
    if [[ ${KEEP:-0} != 1 ]]; then
        rm -rf "$DUMP" "$RUN/day1" "$RUN/dir0j" "$RUN"/repo-* "$RUN"/restic-* "$RUN/toc-only"
    fi
}

main "$@"
