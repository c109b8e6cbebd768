#!/usr/bin/env bash
# Lifeboat configuration-folder benchmark.
#
# Backs up a folder of 2,000 configuration files (bench/make_config.py: .toml, .yaml, .json,
# .ini, .env and .conf files of 200 B to 20 KB in nested folders, like /etc/myapp) and
# compares Lifeboat with
#   * tar | zstd:  tar -c of the folder piped to zstd -3 (every backup is a full archive)
#   * restic:      file-level dedup + compression (skipped with a message if unavailable)
# through three steps, each timed with a cold page cache:
#   full backup -> second backup, nothing changed -> restore to a new folder
# measuring wall time and peak RSS (GNU time) and the bytes each tool stores (Lifeboat's
# whole repository for the full backup, `new_stored_bytes` of `backup --json` for the
# second; the archive; restic's repository growth). Every restore is compared with the
# source folder file by file. Prints a table and a target check (the issue's: backup and
# restore under 1 s each, an unchanged second backup stores under 10 KB) and writes them to
# $BENCH_DIR/results-config.txt (raw numbers in $BENCH_DIR/results-config.tsv).
#
# Usage:
#   bench/config.sh                   # 2,000 files
#   BENCH_SMALL=1 bench/config.sh     # 200 files: checks the script
# Environment:
#   BENCH_DIR    work directory (default /tmp/lifeboat-bench)
#   BENCH_FILES  files in the generated folder (default 2000, or 200 with BENCH_SMALL=1)
#   BENCH_SKIP_BUILD=1  use the existing target/release/lifeboat without `cargo build`
#   BENCH_LIFEBOAT      path of another lifeboat binary to measure (implies no build)
#
# The generated folder is kept as $BENCH_DIR/config-<files> and reused by later runs; each
# run backs up a fresh copy of it. Run as root so the page cache can be dropped.

set -uo pipefail   # no -e: a failing tool is recorded as failed, not fatal

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"   # BENCH_DIR, LB, timing (run_timed), recording (record), lifeboat_json
if [[ ${BENCH_SMALL:-0} == 1 ]]; then
    FILES=${BENCH_FILES:-200}
else
    FILES=${BENCH_FILES:-2000}
fi
PRISTINE=$BENCH_DIR/config-$FILES
RUN=$BENCH_DIR/config-run         # everything of one run; wiped at the start
SRC=$RUN/myapp                    # the folder the tools back up (a copy of the pristine one)
REPO=$RUN/lifeboat-repo
TSV=$BENCH_DIR/results-config.tsv
TXT=$BENCH_DIR/results-config.txt
TAR="tar -c | zstd -3"            # tool names; report_config.py matches on them
UNTAR="zstd -d | tar -x"
export RESTIC_PASSWORD=lifeboat-bench RESTIC_REPOSITORY=$RUN/restic-repo
export RESTIC_CACHE_DIR=$RUN/restic-cache   # restic's normal local cache, but per run

ensure_tools() {
    local missing=()
    have restic || missing+=(restic)
    have zstd   || missing+=(zstd)
    [[ -x /usr/bin/time ]] || missing+=(time)
    apt_install "${missing[@]}"
    have python3 || { echo "python3 is required" >&2; exit 1; }
    have restic  || warn "restic unavailable: its rows are skipped"
    have zstd    || warn "zstd unavailable: the tar | zstd rows are skipped"
    [[ -x /usr/bin/time ]] || warn "GNU time unavailable: falling back to a Python timer"
}

nfiles() { find "$1" -type f | wc -l; }

# Make (or reuse) the pristine folder: reuse needs the exact file count.
prepare_pristine() {
    if [[ -d $PRISTINE && $(nfiles "$PRISTINE") == "$FILES" ]]; then
        log "reusing $PRISTINE"
    else
        log "generating $PRISTINE ($FILES files)"
        rm -rf "$PRISTINE"
        python3 "$HERE/make_config.py" "$PRISTINE" "$FILES" >/dev/null || { echo "make_config.py failed" >&2; exit 1; }
    fi
}

# A fresh $RUN holding $SRC (a copy of the pristine folder), made the current directory,
# and $TSV started with the header. As lib.sh's begin_run, for a folder.
begin_run() {
    rm -rf "$RUN"; mkdir -p "$RUN"
    cd "$RUN" || exit 1
    export XDG_STATE_HOME="$RUN/state"   # a new machine to Lifeboat's trust state, each run
    unset LIFEBOAT_REPO LIFEBOAT_CONFIG LIFEBOAT_COMPRESSION LIFEBOAT_LEVEL
    unset LIFEBOAT_PASSWORD LIFEBOAT_PASSWORD_FILE LIFEBOAT_PASSWORD_COMMAND
    cp -a "$PRISTINE" "$SRC"
    local bytes kinds
    bytes=$(find "$SRC" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
    kinds=$(find "$SRC" -type f -printf '%f\n' | sed 's/^\.env$/x.env/; s/.*\.//' | sort | uniq -c \
        | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2}')
    {
        echo "# $1, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores," \
             "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)," \
             "$(lifeboat_version)"
        echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "# folder: $(nfiles "$SRC") files ($kinds), $(find "$SRC" -mindepth 1 -type d | wc -l) folders," \
             "$bytes bytes of content ($(dusize "$SRC") B on disk)"
    } >"$TSV"
    sed 's/^# //' "$TSV" >&2
}

# check_tree DIR [REDACTED_JSON] -> note text: DIR against $SRC, file by file. Files that
# differ are allowed only if Lifeboat's backup says it redacted them.
check_tree() {
    python3 - "$SRC" "$1" "${2:-}" <<'PY'
import json, os, sys
src, dst, out = sys.argv[1:]
def files(root):
    found = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            found[os.path.relpath(p, root)] = p
    return found
a, b = files(src), files(dst) if os.path.isdir(dst) else {}
redacted = set()
if out:
    text = open(out).read()
    obj = json.loads(text[text.find("{"):])
    redacted = {r.get("path", "") for r in obj.get("redacted") or []}
missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
differ = [f for f in sorted(set(a) & set(b)) if open(a[f], "rb").read() != open(b[f], "rb").read()]
bad = [f for f in differ if f not in redacted and os.path.join(os.path.basename(src), f) not in redacted]
if not b:
    print("MISSING OUTPUT"); sys.exit(1)
if missing or extra or bad:
    print(f"BAD RESTORE: {len(missing)} missing, {len(extra)} extra, {len(bad)} differ"
          f" (first: {(missing + extra + bad)[0]})"); sys.exit(1)
note = f"{len(b)} files, {len(b) - len(differ)} byte-identical"
print(note + (f", {len(differ)} redacted" if differ else ""))
PY
}

# --- steps -----------------------------------------------------------------------

LB_ID=""
# lb_backup STEP OUTNAME -> timed `lifeboat backup` of $SRC.
lb_backup() {
    local step=$1 out=$RUN/$2.out j rc id lo ne re ms stored before=0
    if ((!LB_OK)); then record "$step" lifeboat "" "" "" "skipped: no working binary"; return; fi
    [[ -d $REPO ]] && before=$(dusize "$REPO")
    run_timed "$out" "$LB" backup --init "$SRC" --repo "$REPO" --json; rc=$?
    if ((rc == 0)) && j=$(lifeboat_json "$out") && [[ -d $REPO ]]; then
        read -r id lo ne re ms <<<"$j"
        LB_ID=$id
        stored=$ne; [[ $step == "full backup" ]] && stored=$(dusize "$REPO")
        # The repository's growth also counts the manifest, which new_stored_bytes does not.
        record "$step" lifeboat "$T_SECS" "$stored" "$T_RSS_KIB" \
            "cpu $T_CPU s; json: id=$id logical=$lo new_stored=$ne repo_stored=$re duration_ms=$ms; repo grew $(($(dusize "$REPO") - before)) B"
        return 0
    fi
    record "$step" lifeboat "" "" "" "$(lb_failure $rc "$out")"
    if [[ $step == "full backup" ]]; then
        LB_OK=0
        warn "lifeboat backup failed; its later steps are skipped:"
        tail -n 5 "$out.err" "$out" >&2
    fi
}

# tar_backup STEP NAME -> tar -c | zstd -3 of $SRC to $RUN/NAME.tar.zst.
tar_backup() {
    local step=$1 f=$RUN/$2.tar.zst
    if ! have zstd; then record "$step" "$TAR" "" "" "" "skipped: zstd missing"; return; fi
    if run_timed "$RUN/tar-$2.out" bash -c 'set -o pipefail; tar -C "$(dirname "$1")" -cf - "$(basename "$1")" | zstd -3 -q -o "$2"' \
        _ "$SRC" "$f"; then
        record "$step" "$TAR" "$T_SECS" "$(size "$f")" "$T_RSS_KIB" "cpu $T_CPU s; a new full archive"
    else
        record "$step" "$TAR" "" "" "" "FAILED (see $RUN/tar-$2.out.err)"
    fi
}

RESTIC_BEFORE=""
restic_backup() {
    local step=$1 name=$2 before
    if ! have restic; then record "$step" restic "" "" "" "skipped: not installed"; return; fi
    if [[ $step == "full backup" ]]; then
        restic init >"$RUN/restic-init.out" 2>&1 || { record "$step" restic "" "" "" "FAILED: restic init (see $RUN/restic-init.out)"; return; }
        before=0
    else
        [[ -n $RESTIC_BEFORE ]] || { record "$step" restic "" "" "" "skipped"; return; }
        before=$RESTIC_BEFORE
    fi
    if run_timed "$RUN/restic-$name.out" restic backup "$SRC"; then
        RESTIC_BEFORE=$(dusize "$RESTIC_REPOSITORY")
        record "$step" restic "$T_SECS" "$((RESTIC_BEFORE - before))" "$T_RSS_KIB" \
            "cpu $T_CPU s; $([[ $step == "full backup" ]] && echo "du of repo" || echo "repo size delta")"
    else
        record "$step" restic "" "" "" "FAILED (see $RUN/restic-$name.out.err)"
    fi
}

step_backups() {
    log "step 1: full backup"
    lb_backup "full backup" lb-full
    tar_backup "full backup" full
    restic_backup "full backup" full
    log "step 2: second backup, nothing changed"
    lb_backup "second backup" lb-second
    tar_backup "second backup" second
    restic_backup "second backup" second
}

step_restore() {
    log "step 3: restore to a new folder"
    if ((LB_OK)) && [[ -n $LB_ID ]]; then
        if run_timed "$RUN/lb-restore.out" "$LB" restore "$LB_ID" --repo "$REPO" --output "$RUN/lb-restore"; then
            local t=$T_SECS r=$T_RSS_KIB c=$T_CPU
            record "restore" lifeboat "$t" "" "$r" "cpu $c s; $(check_tree "$RUN/lb-restore" "$RUN/lb-second.out")"
        else
            record "restore" lifeboat "" "" "" "FAILED (see $RUN/lb-restore.out.err)"
        fi
    else
        record "restore" lifeboat "" "" "" "skipped: no Lifeboat backup"
    fi

    if [[ -f $RUN/second.tar.zst ]]; then
        mkdir -p "$RUN/tar-restore"
        if run_timed "$RUN/untar.out" bash -c 'set -o pipefail; zstd -d -q -c "$1" | tar -C "$2" -xf -' \
            _ "$RUN/second.tar.zst" "$RUN/tar-restore"; then
            local t=$T_SECS r=$T_RSS_KIB c=$T_CPU
            record "restore" "$UNTAR" "$t" "" "$r" "cpu $c s; $(check_tree "$RUN/tar-restore/$(basename "$SRC")")"
        else
            record "restore" "$UNTAR" "" "" "" "FAILED (see $RUN/untar.out.err)"
        fi
    else
        record "restore" "$UNTAR" "" "" "" "skipped: no archive"
    fi

    if have restic && [[ -n $RESTIC_BEFORE ]]; then
        if run_timed "$RUN/restic-restore.out" restic restore latest --target "$RUN/restic-restore"; then
            local t=$T_SECS r=$T_RSS_KIB c=$T_CPU
            record "restore" restic "$t" "" "$r" "cpu $c s; $(check_tree "$RUN/restic-restore$SRC")"
        else
            record "restore" restic "" "" "" "FAILED (see $RUN/restic-restore.out.err)"
        fi
    else
        record "restore" restic "" "" "" "skipped"
    fi
}

# --- main ------------------------------------------------------------------------

main() {
    mkdir -p "$BENCH_DIR"
    ensure_tools
    build_lifeboat
    prepare_pristine
    begin_run "Lifeboat config folder benchmark"

    step_backups
    step_restore

    ((DROP_OK)) || echo "# WARNING: page cache could not be dropped; times are warm-cache" >>"$TSV"
    echo >&2
    python3 "$HERE/report_config.py" "$TSV" | tee "$TXT"
    log "results written to $TXT (raw: $TSV); run files in $RUN"
}

main "$@"
