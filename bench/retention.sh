#!/usr/bin/env bash
# Lifeboat retention benchmark (issue 6).
#
# Builds the same history in Lifeboat and in restic -- 60 daily backups of the
# WAL-mode database of sqlite.sh (~1.1 GB), each taken after a day of changes
# (change_db.py) and recorded at 02:00 UTC of its day, the last one today --
# then times the retention step of both tools with the same policy:
#   lifeboat forget --keep-daily 7 --keep-weekly 4 --timezone UTC --prune
#   restic   forget --keep-daily 7 --keep-weekly 4 --prune          (TZ=UTC)
# with GNU time (wall time, CPU time, peak RSS) and a cold page cache.  Records
# each repository's size (du -sb) before and after, the bytes freed, and which
# backups each tool kept: both must keep the same days, the ones the policy
# names (computed here independently).  Then proves the pruned repositories
# sound, untimed: `lifeboat repo check --read-data`, `lifeboat verify` of the
# latest and of the oldest kept backup (the one whose pages come from the
# oldest, most repacked packs), and `restic check --read-data`.
#
# Lifeboat keeps two repositories of the same history:
#   lifeboat (encrypted)  the one compared with restic (which always encrypts):
#                         `repo init --encrypt`, default Argon2id (46 MiB, 1 pass;
#                         BENCH_ARGON2_MEMORY=KiB to change it), passphrase in
#                         LIFEBOAT_PASSWORD; timed as one `forget --prune`
#   lifeboat              unencrypted; `forget` and `prune` timed as two commands
# The history itself is not timed as a benchmark (warm cache, no cache drop),
# but every backup's time and peak RSS is kept in $RUN/history.tsv and summed
# in the results, and its total duration is in the header.
#
# The daily change is change_db.py's realistic change scaled by 0.1: 0.1% of
# rows updated, 0.05% inserted, 0.02% deleted (~5.5 k / 2.8 k / 1.1 k rows at
# full size; at scale 1 each day rewrites a third of the pages).  restic stores
# nearly the whole file again every day at either scale (a few thousand
# scattered page writes touch every one of its ~1 MiB chunks): its repository
# grows by ~0.31x the database a day, Lifeboat's by ~0.02x.  So 60 days at full
# size need ~25 GB of disk, mostly restic's; the script checks the free space
# first, and stops (deleting its run) if it falls under 1 GiB during the history.
#
# Prints a table and the issue's targets (the encrypted repository against
# restic: forget+prune faster than restic, peak RSS <= 256 MiB, repository
# afterwards no larger than restic's) and writes them to
# $BENCH_DIR/results-retention.txt (raw: results-retention.tsv).
#
# Usage:
#   bench/retention.sh                      # ~1.1 GB DB, 60 days: ~25 GB of disk, ~45 min
#   BENCH_DAYS=30 bench/retention.sh        # ~1.1 GB DB, 30 days: ~15 GB, ~30 min
#   BENCH_ROWS=2750000 bench/retention.sh   # ~560 MB DB, 60 days: ~14 GB, ~25 min
#   BENCH_SMALL=1 bench/retention.sh        # ~50 MB DB, 60 days, ~2 min: checks the script
# (Most of the time after the history is the untimed checks: `lifeboat verify`
# rebuilds a backup and runs PRAGMA integrity_check, minutes at full size.)
# Environment (besides BENCH_DIR, BENCH_ROWS, BENCH_SKIP_BUILD, BENCH_LIFEBOAT
# as in sqlite.sh):
#   BENCH_DAYS          days of history (default 60)
#   BENCH_CHANGE_SCALE  scale of the daily change (default 0.1; 1 = sqlite.sh's change)
#   BENCH_ARGON2_MEMORY Argon2id memory (KiB) of the encrypted repository (default: Lifeboat's)
#
# Run as root so the page cache can be dropped; otherwise times are warm-cache.

set -uo pipefail   # no -e: a failing tool is recorded as failed, not fatal

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"   # BENCH_DIR, ROWS, PRISTINE, LB, timing, recording, checks
RUN=$BENCH_DIR/run-retention      # everything of one run; wiped at the start
DB=$RUN/db.sqlite                 # the "live" database the tools back up
TSV=$BENCH_DIR/results-retention.tsv
TXT=$BENCH_DIR/results-retention.txt
DAYS=${BENCH_DAYS:-60}
SCALE=${BENCH_CHANGE_SCALE:-0.1}
POLICY=(--keep-daily 7 --keep-weekly 4)
LB_PLAIN=lifeboat                 # tool names; report_retention.py matches on them
LB_ENC="lifeboat (encrypted)"
TOOLS=("$LB_ENC" "$LB_PLAIN" restic)
ENC_PASSWORD=lifeboat-bench       # passed only to the encrypted runs, as LIFEBOAT_PASSWORD
export TZ=UTC                     # restic reads --time and buckets days in local time
export RESTIC_PASSWORD=lifeboat-bench RESTIC_REPOSITORY=$RUN/restic-repo
export RESTIC_CACHE_DIR=$RUN/restic-cache   # restic's normal local cache, but per run
declare -A OK FAIL REPO_BEFORE KEPT

ensure_tools() {
    local missing=()
    have restic || missing+=(restic)
    [[ -x /usr/bin/time ]] || missing+=(time)
    apt_install "${missing[@]}"
    have python3 || { echo "python3 is required" >&2; exit 1; }
    have restic  || { echo "restic is required (the reference)" >&2; exit 1; }
    [[ -x /usr/bin/time ]] || warn "GNU time unavailable: falling back to a Python timer"
}

# Will the three repositories fit?  restic stores ~0.31x the database per day
# whatever the change; Lifeboat the database once (~0.35x) plus the changed
# pages (~0.022x the database per day at scale 0.1, ~0.12x at scale 1), twice;
# plus the live database, restic's repacking and 2 GiB to spare.  Stop now
# rather than fill the disk half an hour in.
check_space() {
    local db free need
    db=$(size "$PRISTINE"); free=$(df -B1 --output=avail "$BENCH_DIR" | tail -n 1)
    [[ -d $RUN ]] && free=$((free + $(dusize "$RUN")))   # the last run's files go first
    need=$(awk -v d="$db" -v n="$DAYS" -v s="$SCALE" 'BEGIN {
        lb = 0.22 * s; if (lb > 0.12) lb = 0.12
        printf "%.0f", d * (1.5 + 0.32 * n + 2 * (0.35 + lb * n)) + 2 * 2^30 }')
    log "disk: ~$((need >> 30)) GiB needed in $BENCH_DIR, $((free >> 30)) GiB free"
    if ((free < need)); then
        echo "not enough disk space in $BENCH_DIR; try fewer BENCH_DAYS or a smaller BENCH_ROWS" >&2
        exit 1
    fi
}

# Under 1 GiB free while the history grows (other work on the machine needs
# disk too): give the space back and stop.
guard_space() {
    local free
    free=$(df -B1 --output=avail "$BENCH_DIR" | tail -n 1)
    if ((free < 1 << 30)); then
        echo "under 1 GiB free in $BENCH_DIR on $1: stopping, and deleting $RUN to give the space back" >&2
        cd / && rm -rf "$RUN"
        exit 1
    fi
}

# tool_argv TOOL -> ARGV, the command prefix that runs TOOL on its repository.
# The passphrase goes to the encrypted runs only, through env(1), which execs
# lifeboat (same process, so the peak RSS is still lifeboat's).
tool_argv() {
    case $1 in
        "$LB_ENC")   ARGV=(env "LIFEBOAT_PASSWORD=$ENC_PASSWORD" "$LB" --repo "$RUN/lifeboat-repo-enc") ;;
        "$LB_PLAIN") ARGV=("$LB" --repo "$RUN/lifeboat-repo") ;;
        restic)      ARGV=(restic) ;;
    esac
}
repo_dir() {
    case $1 in
        "$LB_ENC")   echo "$RUN/lifeboat-repo-enc" ;;
        "$LB_PLAIN") echo "$RUN/lifeboat-repo" ;;
        restic)      echo "$RESTIC_REPOSITORY" ;;
    esac
}
slug() { case $1 in "$LB_ENC") echo lb-enc ;; "$LB_PLAIN") echo lb ;; *) echo "$1" ;; esac; }

# Mark TOOL failed: its later steps are recorded as skipped, with this reason.
failed() {
    OK[$1]=0; FAIL[$1]=$2
    warn "$1: $2"
    [[ -n ${3:-} ]] && tail -n 5 "$3.err" "$3" >&2
}

# Create the repositories (one-off setup, not timed).
init_repos() {
    local t out
    for t in "${TOOLS[@]}"; do OK[$t]=1; FAIL[$t]=""; done
    ((LB_OK)) || { failed "$LB_ENC" "no working binary"; failed "$LB_PLAIN" "no working binary"; }
    for t in "${TOOLS[@]}"; do
        ((OK[$t])) || continue
        tool_argv "$t"; out=$RUN/$(slug "$t")-init.out
        case $t in
            "$LB_ENC")   "${ARGV[@]}" repo init --encrypt \
                             ${BENCH_ARGON2_MEMORY:+--argon2-memory "$BENCH_ARGON2_MEMORY"} --json ;;
            "$LB_PLAIN") "${ARGV[@]}" repo init --json ;;
            restic)      restic init ;;
        esac </dev/null >"$out" 2>"$out.err" || failed "$t" "init failed (see $out.err)" "$out"
    done
    tool_argv "$LB_ENC"
    if ((OK[$LB_ENC])) && ! "${ARGV[@]}" repo show --json </dev/null 2>&1 | grep -q '"encrypted":true'; then
        failed "$LB_ENC" "repository does not report itself encrypted"
    fi
}

# --- history -----------------------------------------------------------------

# The newest day: today, or yesterday before 02:00 UTC (no backup in the future).
end_day() {
    if ((10#$(date -u +%H) < 2)); then date -u -d yesterday +%F; else date -u +%F; fi
}

# backup_day TOOL DAY -> one (warm, untimed-as-benchmark) backup of $DB dated
# DAY 02:00 UTC; appends "day tool secs rss_kib cpu_secs" to history.tsv.
backup_day() {
    local t=$1 day=$2 out rc saved=$DROP_OK
    ((OK[$t])) || return 0
    tool_argv "$t"; out=$RUN/history/$day-$(slug "$t").out
    DROP_OK=0   # no cache drop: the history is set-up (run_timed still syncs first)
    if [[ $t == restic ]]; then
        run_timed "$out" restic backup --time "$day 02:00:00" "$DB"; rc=$?
    else
        run_timed "$out" "${ARGV[@]}" backup "$DB" --time "${day}T02:00:00Z" --json; rc=$?
    fi
    DROP_OK=$saved
    if ((rc)); then failed "$t" "backup of $day failed: exit $rc (see $out.err)" "$out"; return 1; fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$day" "$t" "$T_SECS" "$T_RSS_KIB" "$T_CPU" >>"$RUN/history.tsv"
    HIST_LINE+=" | $t $T_SECS s"
}

build_history() {
    local end d day t0 t1 msg total_change=0 start=$EPOCHREALTIME
    end=$(end_day)
    mkdir -p "$RUN/history"; : >"$RUN/history.tsv"
    log "history: $DAYS daily backups ending $end, change scale $SCALE (not timed; warm cache)"
    for ((d = 1; d <= DAYS; d++)); do
        day=$(date -u -d "$end - $((DAYS - d)) days" +%F)
        DAYS_LIST+=("$day")
        t0=$EPOCHREALTIME
        msg=$(python3 "$HERE/change_db.py" "$DB" "$d" "$SCALE") || { echo "change_db.py failed" >&2; exit 1; }
        t1=$EPOCHREALTIME
        total_change=$(awk -v a="$total_change" -v b="$t0" -v c="$t1" 'BEGIN {printf "%.1f", a + c - b}')
        HIST_LINE="day $d/$DAYS $day: change $(awk -v b="$t0" -v c="$t1" 'BEGIN {printf "%.1f", c - b}') s"
        for t in "${TOOLS[@]}"; do backup_day "$t" "$day"; guard_space "$day"; done
        log "$HIST_LINE"
        ((d == 1)) && echo "# change (day 1): $msg" >>"$TSV"
    done
    local secs n sum mean mx rss cpu
    secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.0f", b - a}')
    echo "# history: $DAYS daily backups ${DAYS_LIST[0]}..${DAYS_LIST[-1]} at 02:00 UTC, built in" \
         "$((secs / 60)) min $((secs % 60)) s (changes $total_change s, change_db.py scale $SCALE:" \
         "$(python3 -c "s=$SCALE; print(f'{s:g}% updated, {s/2:g}% inserted, {s/5:g}% deleted')") per day);" \
         "database now $(size "$DB") B, $(sql "$DB" "SELECT count(*) FROM events") rows" >>"$TSV"
    tail -n 1 "$TSV" | sed 's/^# //' >&2
    for t in "${TOOLS[@]}"; do
        if ((OK[$t])); then
            REPO_BEFORE[$t]=$(dusize "$(repo_dir "$t")")
            # secs: sum of the backups' wall times; RSS: the largest; bytes: repository size
            read -r n sum mean mx rss cpu < <(awk -F'\t' -v t="$t" '$2 == t {n++; s += $3; c += $5
                if ($3 > m) m = $3; if ($4 > r) r = $4}
                END {printf "%d %.2f %.2f %.2f %d %.2f\n", n, s, n ? s / n : 0, m, r, c}' "$RUN/history.tsv")
            record "history" "$t" "$sum" "${REPO_BEFORE[$t]}" "$rss" \
                "cpu $cpu s; $n backups (warm cache, not a benchmark): mean $mean s, max $mx s; bytes = repository size"
        else
            record "history" "$t" "" "" "" "FAILED: ${FAIL[$t]}"
        fi
    done
}

# --- what each tool keeps ----------------------------------------------------

# kept_days TOOL -> the days (YYYY-MM-DD, UTC) of the backups in TOOL's repository, sorted
kept_days() {
    tool_argv "$1"
    if [[ $1 == restic ]]; then restic snapshots --json </dev/null
    else "${ARGV[@]}" list --json </dev/null; fi 2>>"$RUN/list.err" \
        | python3 -c 'import json,sys
print(" ".join(sorted(s["time"][:10] for s in json.load(sys.stdin))))'
}

# The days the policy keeps, computed here, independently of both tools:
# newest backup of each of the last 7 days that have one, and of each of the
# last 4 ISO weeks (Monday-Sunday) that have one.
expected_days() {
    python3 -c 'import datetime,sys
days = sorted(set(sys.argv[1:]), reverse=True)
keep, seen_d, seen_w = set(), [], []
for d in days:   # one backup per day, so each day is its own newest
    w = datetime.date.fromisoformat(d).isocalendar()[:2]
    if d not in seen_d and len(seen_d) < 7: seen_d.append(d); keep.add(d)
    if w not in seen_w and len(seen_w) < 4: seen_w.append(w); keep.add(d)
print(" ".join(sorted(keep)))' "${DAYS_LIST[@]}"
}

# --- retention (timed) -------------------------------------------------------

# Listing the 60 backups, cold: the fixed cost of opening each repository
# (restic's scrypt key: ~0.5 s by design; Lifeboat's Argon2id key), for scale.
step_list() {
    log "listing $DAYS backups (cold; the cost of opening each repository)"
    local t out n
    for t in "${TOOLS[@]}"; do
        ((OK[$t])) || { record "list" "$t" "" "" "" "skipped: ${FAIL[$t]}"; continue; }
        tool_argv "$t"; out=$RUN/$(slug "$t")-list.out
        if [[ $t == restic ]]; then run_timed "$out" restic snapshots --json
        else run_timed "$out" "${ARGV[@]}" list --json; fi || {
            record "list" "$t" "" "" "" "FAILED (see $out.err)"; continue; }
        n=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$out" 2>/dev/null)
        record "list" "$t" "$T_SECS" "" "$T_RSS_KIB" "cpu $T_CPU s; ${n:-?} backups listed"
    done
}

# after_retention TOOL STEP SECS RSS CPU NOTE -> records the step with the bytes
# it freed, and the state it left (size, which days are kept) as a "repo after" row.
after_retention() {
    local t=$1 after dir
    dir=$(repo_dir "$t"); after=$(dusize "$dir")
    KEPT[$t]=$(kept_days "$t")
    record "$2" "$t" "$3" "$((REPO_BEFORE[$t] - after))" "$4" \
        "cpu $5 s; bytes = freed; repository ${REPO_BEFORE[$t]} -> $after B${6:+; $6}"
    record "repo after" "$t" "" "$after" "" "kept $(wc -w <<<"${KEPT[$t]}") of $DAYS: ${KEPT[$t]}"
}

# Lifeboat's forget/prune report (from --json) in a few words.
summary() {
    python3 -c 'import json,sys
t = open(sys.argv[1]).read(); o = json.loads(t[t.find("{"):])
f = o.get("forget") or (o if "removed" in o else None)
p = o.get("prune") or (o if "packs_before" in o else None)
out = []
if f:
    out.append("removed %d backups" % len(f["removed"]))
if p:
    out.append(("prune: deleted {deleted_packs} packs ({deleted_bytes} B), repacked {repacked_packs}"
                " ({repacked_bytes} B, {repack_written_bytes} B written), packs {packs_before} -> {packs_after},"
                " unused after {unused_bytes_after} B, pending {pending_packs}, missing blobs {missing_blobs}").format(**p))
print("; ".join(out))' "$1" 2>/dev/null
}

step_retention() {
    log "retention: ${POLICY[*]}, then prune (cold cache, timed)"
    echo "# retention: load average at start $(cut -d' ' -f1-3 /proc/loadavg)" >>"$TSV"
    local out t f_secs f_rss f_cpu

    t=$LB_ENC
    if ((OK[$t])); then
        tool_argv "$t"; out=$RUN/lb-enc-forget-prune.out
        if run_timed "$out" "${ARGV[@]}" forget "${POLICY[@]}" --timezone UTC --prune --json; then
            after_retention "$t" "forget+prune" "$T_SECS" "$T_RSS_KIB" "$T_CPU" "one command; $(summary "$out")"
        else
            record "forget+prune" "$t" "" "" "" "FAILED: exit $? (see $out.err)"; failed "$t" "forget --prune failed" "$out"
        fi
    else
        record "forget+prune" "$t" "" "" "" "skipped: ${FAIL[$t]}"
    fi

    # Plain repository: the same, as two commands, each timed.
    t=$LB_PLAIN
    if ((OK[$t])); then
        tool_argv "$t"; out=$RUN/lb-forget.out
        if run_timed "$out" "${ARGV[@]}" forget "${POLICY[@]}" --timezone UTC --json; then
            f_secs=$T_SECS f_rss=$T_RSS_KIB f_cpu=$T_CPU
            record "forget" "$t" "$T_SECS" "" "$T_RSS_KIB" \
                "cpu $T_CPU s; $(summary "$out") (manifests only: the data goes at prune)"
            out=$RUN/lb-prune.out
            if run_timed "$out" "${ARGV[@]}" prune --json; then
                record "prune" "$t" "$T_SECS" "" "$T_RSS_KIB" "cpu $T_CPU s; $(summary "$out")"
                after_retention "$t" "forget+prune" \
                    "$(awk -v a="$f_secs" -v b="$T_SECS" 'BEGIN {printf "%.2f", a + b}')" \
                    "$((f_rss > T_RSS_KIB ? f_rss : T_RSS_KIB))" \
                    "$(awk -v a="$f_cpu" -v b="$T_CPU" 'BEGIN {printf "%.2f", a + b}')" \
                    "two commands: forget $f_secs s + prune $T_SECS s"
            else
                record "prune" "$t" "" "" "" "FAILED (see $out.err)"; failed "$t" "prune failed" "$out"
            fi
        else
            record "forget" "$t" "" "" "" "FAILED (see $out.err)"; failed "$t" "forget failed" "$out"
        fi
    else
        record "forget+prune" "$t" "" "" "" "skipped: ${FAIL[$t]}"
    fi

    t=restic
    if ((OK[$t])); then
        out=$RUN/restic-forget-prune.out
        if run_timed "$out" restic forget "${POLICY[@]}" --prune; then
            after_retention "$t" "forget+prune" "$T_SECS" "$T_RSS_KIB" "$T_CPU" \
                "$(grep -E '^(remove [0-9]+ snapshots|to repack|to delete|remaining|removing [0-9]+ old packs)' "$out" \
                   | sed -e 's/  */ /g' -e 's/:$//' | paste -sd ';' | sed 's/;/; /g')"
        else
            record "forget+prune" "$t" "" "" "" "FAILED (see $out.err)"; failed "$t" "forget --prune failed" "$out"
        fi
    else
        record "forget+prune" "$t" "" "" "" "skipped: ${FAIL[$t]}"
    fi
}

# The policy's days, and whether every tool kept exactly those.
step_compare() {
    local want t
    want=$(expected_days)
    echo "# policy keeps (computed here): $(wc -w <<<"$want") of $DAYS: $want" >>"$TSV"
    for t in "${TOOLS[@]}"; do
        [[ -n ${KEPT[$t]:-} ]] || continue
        if [[ ${KEPT[$t]} == "$want" ]]; then
            record "kept" "$t" "" "" "" "ok: the $(wc -w <<<"$want") days the policy keeps"
        else
            record "kept" "$t" "" "" "" "MISMATCH: kept ${KEPT[$t]:-nothing}; policy keeps $want"
        fi
    done
    log "kept: $(for t in "${TOOLS[@]}"; do printf '%s %s; ' "$t" "$(wc -w <<<"${KEPT[$t]:-}")"; done)policy $(wc -w <<<"$want")"
}

# --- soundness after pruning (not timed) -------------------------------------

step_check() {
    log "checking the pruned repositories (not timed)"
    local t out note oldest rc
    for t in "$LB_ENC" "$LB_PLAIN"; do
        ((OK[$t])) || { record "check" "$t" "" "" "" "skipped: ${FAIL[$t]}"; continue; }
        tool_argv "$t"; out=$RUN/$(slug "$t")-check
        note=""
        "${ARGV[@]}" repo check --read-data --json </dev/null >"$out-repo.out" 2>"$out-repo.out.err"; rc=$?
        if ((rc == 0)) && grep -q '"ok":true' "$out-repo.out"; then note="repo check --read-data ok"
        else note="repo check --read-data FAILED: exit $rc (see $out-repo.out)"; fi
        "${ARGV[@]}" verify latest --json </dev/null >"$out-latest.out" 2>"$out-latest.out.err"; rc=$?
        if ((rc == 0)); then note+="; verify latest ok"
        else note+="; verify latest FAILED: exit $rc (see $out-latest.out)"; fi
        oldest=$("${ARGV[@]}" list --json </dev/null 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
        "${ARGV[@]}" verify "$oldest" --json </dev/null >"$out-oldest.out" 2>"$out-oldest.out.err"; rc=$?
        if ((rc == 0)); then note+="; verify oldest ($oldest) ok"
        else note+="; verify oldest ($oldest) FAILED: exit $rc (see $out-oldest.out)"; fi
        record "check" "$t" "" "" "" "$note"
    done
    if ((OK[restic])); then
        out=$RUN/restic-check.out
        if restic check --read-data </dev/null >"$out" 2>&1 && grep -q 'no errors were found' "$out"; then
            record "check" restic "" "" "" "restic check --read-data ok"
        else
            record "check" restic "" "" "" "restic check --read-data FAILED (see $out)"
        fi
    else
        record "check" restic "" "" "" "skipped: ${FAIL[restic]}"
    fi
}

# --- main --------------------------------------------------------------------

main() {
    mkdir -p "$BENCH_DIR"
    ensure_tools
    build_lifeboat
    prepare_pristine
    check_space
    begin_run "Lifeboat retention benchmark (issue 6)"
    echo "# $(restic version | head -n 1); policy: ${POLICY[*]}, then prune; times in UTC" >>"$TSV"
    DAYS_LIST=()
    init_repos
    build_history
    step_list
    step_retention
    step_compare
    step_check

    ((DROP_OK)) || echo "# WARNING: page cache could not be dropped; times are warm-cache" >>"$TSV"
    echo >&2
    python3 "$HERE/report_retention.py" "$TSV" | tee "$TXT"
    log "results written to $TXT (raw: $TSV); run files in $RUN"
}

main "$@"
