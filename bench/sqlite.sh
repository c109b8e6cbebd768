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
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"   # BENCH_DIR, ROWS, PRISTINE, LB, timing, recording, checks, step_change
RUN=$BENCH_DIR/run                # everything of one run; wiped at the start
DB=$RUN/db.sqlite                 # the "live" database the tools back up
TSV=$BENCH_DIR/results.tsv
TXT=$BENCH_DIR/results.txt
LB_ENC="lifeboat (encrypted)"     # tool name of the encrypted runs; report.py matches on it
ENC_OK=0                          # set to 1 once the encrypted repository exists
ENC_PASSWORD=lifeboat-bench       # passed only to the encrypted runs, as LIFEBOAT_PASSWORD
export RESTIC_PASSWORD=lifeboat-bench RESTIC_REPOSITORY=$RUN/restic-repo
export RESTIC_CACHE_DIR=$RUN/restic-cache   # restic's normal local cache, but per run

# Install what is missing with apt (once).  A tool that still cannot be had is
# skipped later with a message; only python3 and a timer are truly required.
ensure_tools() {
    local missing=()
    have restic  || missing+=(restic)
    have zstd    || missing+=(zstd)
    have sqlite3 || missing+=(sqlite3)
    [[ -x /usr/bin/time ]] || missing+=(time)
    apt_install "${missing[@]}"
    have python3 || { echo "python3 is required" >&2; exit 1; }
    have restic  || warn "restic unavailable: its rows are skipped"
    have zstd    || warn "zstd unavailable: DIY pipeline and changed-pages size are skipped"
    have sqlite3 || warn "sqlite3 CLI unavailable: DIY pipeline is skipped"
    [[ -x /usr/bin/time ]] || warn "GNU time unavailable: falling back to a Python timer"
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
    run_timed "$out" "${LB_CMD[@]}" backup --init "$DB" --repo "$LB_REPO" --json; rc=$?
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

# What every command on an encrypted repository pays to open it: Argon2id of its key file
# (the default parameters of `repo init --encrypt`). Measured as `repo show` on each
# repository, warm, median of 9 runs; the difference is the key derivation.
step_kdf() {
    [[ $ENC_OK == 1 ]] || return
    log "step 5: key derivation per command"
    python3 - "$LB" "$RUN/lifeboat-repo" "$RUN/lifeboat-repo-enc" "$ENC_PASSWORD" >"$RUN/kdf.txt" <<'PY'
import json, os, statistics, subprocess, sys, time
lb, plain, enc, pw = sys.argv[1:]
def median_ms(repo, env):
    times = []
    for _ in range(9):
        t = time.perf_counter()
        subprocess.run([lb, "repo", "show", "--repo", repo], env=env, check=True,
                       stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)
base = {k: v for k, v in os.environ.items() if k != "LIFEBOAT_PASSWORD"}
p = median_ms(plain, base)
e = median_ms(enc, dict(base, LIFEBOAT_PASSWORD=pw))
keys = json.loads(subprocess.run([lb, "key", "list", "--repo", enc, "--json"], check=True,
                  env=dict(base, LIFEBOAT_PASSWORD=pw), capture_output=True).stdout)
k = keys["keys"][0]["params"]
print(f"key derivation per command: `repo show` {e:.0f} ms encrypted vs {p:.0f} ms plain "
      f"(+{e - p:.0f} ms: Argon2id {k['memory_kib'] // 1024} MiB, {k['iterations']} passes, "
      f"{k['parallelism']} lanes; median of 9, warm)")
PY
}

# --- main --------------------------------------------------------------------

main() {
    mkdir -p "$BENCH_DIR"
    ensure_tools
    build_lifeboat
    prepare_pristine
    begin_run "Lifeboat SQLite benchmark"

    step_full_backup
    step_change        # in lib.sh: s3.sh makes the same change
    step_second_backup
    step_restore
    step_kdf

    ((DROP_OK)) || echo "# WARNING: page cache could not be dropped; times are warm-cache" >>"$TSV"
    echo >&2
    python3 "$HERE/report.py" "$TSV" | tee "$TXT"
    [[ -f $RUN/kdf.txt ]] && tee -a "$TXT" <"$RUN/kdf.txt"
    log "results written to $TXT (raw: $TSV); run files in $RUN"
}

main "$@"
