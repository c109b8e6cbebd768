//! Retention from the command line: `forget` with a policy (dry run and real), `prune`,
//! `pin`/`unpin`, the safety rails, per-source policies from lifeboat.toml, pre-restore
//! safety backups, bad input, and prune on an encrypted repository. Histories are built with
//! `backup --time` over a database that really changes between backups; after every
//! removal the repository must check clean and every kept backup must verify and restore to
//! the SHA-256 it recorded.

mod common;
#[path = "common/retention_support.rs"]
mod support;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use support::*;

/// One backup a day at noon UTC, `days` days ago down to yesterday, of `db` changed before
/// each one (half the rows of the first 1000 rewritten, 20 rows added; the rest of the
/// database stays and dedups). Returns (id, time, sha256) oldest first.
fn daily_history(
    lb: &Runner,
    db: &std::path::Path,
    days: i64,
) -> Vec<(String, jiff::Timestamp, String)> {
    let mut out = Vec::new();
    for (k, ago) in (1..=days).rev().enumerate() {
        if k > 0 {
            churn(db, 2, k as u32, 1000, 20);
        }
        let t = noon_days_ago(ago);
        let b = lb.backup_at(db, Some(&rfc3339(t)));
        let sha = sha256_file(db);
        assert_eq!(b["sha256"], sha.as_str(), "backup of the file as it is");
        out.push((b["id"].as_str().expect("id").to_string(), t, sha));
    }
    out
}

fn set(v: &[&String]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A history of 15 daily backups under `--keep-daily 5 --keep-weekly 2 --keep-tag release`,
/// one pinned, one verified: the dry run gives every decision with its reason and changes
/// nothing; the real run removes exactly those, `--prune` frees their space, and what is
/// left checks clean, verifies and restores byte for byte. A second prune does nothing.
#[test]
fn forget_history_dry_run_then_forget_and_prune() {
    let env = Env::new();
    let lb = Runner::local(&env);
    let db = env.path("app.db");
    make_random_db(&db, "wal", 1500, 200);
    let mut history = daily_history(&lb, &db, 14);
    // One more, tagged, for the tag rule: on the same day as the newest, an hour later.
    churn(&db, 2, 99, 1000, 5);
    let t = jiff::Timestamp::from_second(history[13].1.as_second() + 3600).expect("time");
    let tagged = lb.json(&[
        "backup",
        db.to_str().expect("utf-8"),
        "--time",
        &rfc3339(t),
        "--tag",
        "release",
    ]);
    history.push((
        tagged["id"].as_str().expect("id").to_string(),
        t,
        sha256_file(&db),
    ));
    assert_eq!(lb.ids().len(), 15);

    // What the policy keeps, worked out here, newest first.
    let mut expected: BTreeMap<String, (bool, Vec<String>)> = BTreeMap::new();
    let (mut days, mut weeks) = (Vec::new(), Vec::new());
    for (id, t, _) in history.iter().rev() {
        let mut why = Vec::new();
        let day = utc_day(*t);
        if !days.contains(&day) {
            days.push(day.clone());
            if days.len() <= 5 {
                why.push(format!("daily #{} ({day})", days.len()));
            }
        }
        let week = utc_iso_week(*t);
        if !weeks.contains(&week) {
            weeks.push(week.clone());
            if weeks.len() <= 2 {
                why.push(format!("weekly #{} ({week})", weeks.len()));
            }
        }
        if id == &history[14].0 {
            why.push("tag release".into());
        }
        expected.insert(id.clone(), (!why.is_empty(), why));
    }
    // The oldest is pinned; the oldest other one the rules drop is verified (the newest
    // verified one), so the rails keep both.
    let pinned = history[0].0.clone();
    let verified = history[1..]
        .iter()
        .map(|h| h.0.clone())
        .find(|id| !expected[id].0)
        .expect("a backup the rules drop");
    assert!(!expected[&pinned].0, "the oldest is beyond 2 weeks");
    let (code, out, err) = lb.run(&["pin", &pinned]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&pinned) && out.contains("pinned"), "{out}");
    let v = lb.json(&["verify", &verified]);
    assert_eq!(v["ok"], true, "{v}");
    expected.insert(pinned.clone(), (true, strings(&["pinned"])));
    expected.insert(verified.clone(), (true, strings(&["newest verified"])));
    for (keep, why) in expected.values_mut() {
        if !*keep {
            *why = strings(&["no rule keeps it"]);
        }
    }
    let keep: BTreeSet<String> = expected
        .iter()
        .filter(|(_, (k, _))| *k)
        .map(|(id, _)| id.clone())
        .collect();
    let remove: BTreeSet<String> = expected
        .iter()
        .filter(|(_, (k, _))| !*k)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        remove.len() >= 5,
        "the policy removes something: {expected:?}"
    );

    let policy = [
        "--keep-daily",
        "5",
        "--keep-weekly",
        "2",
        "--keep-tag",
        "release",
        "--timezone",
        "UTC",
    ];
    // Dry run, JSON: every decision and its reasons; nothing changes.
    let before = tree(&env.repo());
    let dry = lb.json(&[&["forget", "--dry-run"], &policy[..]].concat());
    let f = &dry["forget"];
    assert_eq!(f["dry_run"], true, "{dry}");
    assert_eq!(f["timezone"], "UTC", "{dry}");
    assert_eq!(dry["prune"], Value::Null, "{dry}");
    assert_eq!(decisions(f), expected, "{dry}");
    assert_eq!(removed(f), remove);
    for row in f["backups"].as_array().expect("rows") {
        assert_eq!(
            row["policy"], "daily 5, weekly 2, tag release",
            "the policy in words: {row}"
        );
        assert_eq!(row["source"], tagged["source"], "{row}");
    }
    // Dry run, text: the same, for people.
    let (code, text, err) = lb.run(&[&["forget", "--dry-run"], &policy[..]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains(&format!(
            "would remove {} of 15 backups (dry run: nothing changed)",
            remove.len()
        )),
        "{text}"
    );
    for id in &remove {
        let line = text.lines().find(|l| l.contains(id.as_str())).expect("row");
        assert!(
            line.contains("remove") && line.contains("no rule keeps it"),
            "{line}"
        );
    }
    let line = text.lines().find(|l| l.contains(&pinned)).expect("row");
    assert!(line.contains("keep") && line.contains("pinned"), "{line}");
    assert_eq!(tree(&env.repo()), before, "a dry run changes nothing");
    assert_eq!(lb.ids().len(), 15);

    // The real thing, with --prune: exactly those go, and their space is freed.
    let stats_before = lb.stats();
    let packs_before = pack_bytes(&env.repo());
    let v = lb.json(&[&["forget", "--prune"], &policy[..]].concat());
    assert_eq!(v["forget"]["dry_run"], false, "{v}");
    assert_eq!(removed(&v["forget"]), remove, "{v}");
    assert_eq!(lb.ids().into_iter().collect::<BTreeSet<_>>(), keep);
    let p = &v["prune"];
    assert_eq!(p["backups"], keep.len(), "{p}");
    assert!(num(p, "deleted_packs") > 0, "{p}");
    assert!(
        num(p, "bytes_after") < num(p, "bytes_before"),
        "prune frees bytes: {p}"
    );
    assert_eq!(p["missing_blobs"], 0, "{p}");
    assert_eq!(p["pending_packs"], 0, "nothing runs, so nothing waits: {p}");
    let packs_after = pack_bytes(&env.repo());
    assert!(
        packs_after < packs_before,
        "{packs_before} -> {packs_after}"
    );
    assert_eq!(p["bytes_after"], packs_after, "{p}");
    let stats_after = lb.stats();
    assert!(
        num(&stats_after, "stored_bytes") < num(&stats_before, "stored_bytes"),
        "{stats_before}\n{stats_after}"
    );
    assert_eq!(stats_after["backups"], keep.len());

    // Stable: the same policy on what is left removes nothing. (Before `verify --all` below,
    // which makes the newest backup the newest verified one and so frees the older one.)
    let stable = lb.json(&[&["forget", "--dry-run"], &policy[..]].concat());
    assert!(removed(&stable["forget"]).is_empty(), "{stable}");

    let report = lb.check_clean(true, "after forget --prune");
    assert_eq!(report["unreferenced_packs"], 0, "{report}");
    assert_eq!(report["temp_files"], 0, "{report}");
    assert!(
        files_under(&env.repo(), "plans").is_empty(),
        "no plan left behind"
    );
    assert!(
        files_under(&env.repo(), "locks").is_empty(),
        "no lock left behind"
    );
    assert_eq!(lb.verify_all("after forget --prune"), keep.len());
    for (id, _, sha) in &history {
        if keep.contains(id) {
            assert_eq!(&lb.restore_matches_manifest(id), sha, "backup {id}");
        }
    }

    // Idempotent: a second prune finds nothing to do, and the policy keeps all that is left.
    let data_before = (
        tree(&env.repo().join("data")),
        tree(&env.repo().join("index")),
    );
    let again = lb.json(&["prune"]);
    for key in [
        "deleted_packs",
        "deleted_bytes",
        "repacked_packs",
        "unused_packs",
        "deleted_index_files",
        "written_index_files",
        "pending_packs",
    ] {
        assert_eq!(again[key], 0, "second prune, {key}: {again}");
    }
    assert_eq!(again["bytes_after"], again["bytes_before"], "{again}");
    assert_eq!(
        (
            tree(&env.repo().join("data")),
            tree(&env.repo().join("index"))
        ),
        data_before
    );
}

/// `pin` keeps a backup whatever the policy, even with --force; `unpin` lets it go.
#[test]
fn pin_protects_and_unpin_releases() {
    let env = Env::new();
    let lb = Runner::local(&env);
    let db = env.path("app.db");
    make_random_db(&db, "wal", 600, 200);
    let h = daily_history(&lb, &db, 4);
    let old = &h[0].0;
    lb.json(&["pin", old]);
    let (code, show, _) = lb.run(&["show", old]);
    assert_eq!(code, 0);
    assert!(show.contains("pinned"), "{show}");
    let v = lb.json(&["pin", &old[..8]]);
    assert_eq!(
        v["id"],
        old.as_str(),
        "a prefix names it; pinning twice is fine: {v}"
    );
    assert_eq!(v["pinned"], true, "{v}");

    let v = lb.json(&["forget", "--keep-last", "1", "--timezone", "UTC", "--prune"]);
    let d = decisions(&v["forget"]);
    assert_eq!(d[old], (true, strings(&["pinned"])), "{v}");
    assert_eq!(d[&h[3].0], (true, strings(&["last #1"])), "{v}");
    assert_eq!(removed(&v["forget"]), set(&[&h[1].0, &h[2].0]));
    lb.check_clean(true, "after pruning around a pin");
    assert_eq!(lb.restore_matches_manifest(old), h[0].2);

    // --force lifts the rails, not pins.
    let v = lb.json(&["forget", "--max-age", "1h", "--force", "--dry-run"]);
    let d = decisions(&v["forget"]);
    assert_eq!(d[old], (true, strings(&["pinned"])), "{v}");
    assert!(!d[&h[3].0].0, "{v}");

    let v = lb.json(&["unpin", old]);
    assert_eq!(v["pinned"], false, "{v}");
    let (_, show, _) = lb.run(&["show", old]);
    assert!(!show.contains("pinned"), "{show}");
    let v = lb.json(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(removed(&v["forget"]), set(&[old]), "{v}");
    assert_eq!(lb.ids(), vec![h[3].0.clone()]);
    lb.check_clean(true, "after unpin and prune");
    assert_eq!(lb.verify_all("after unpin"), 1);

    // Pinning what does not exist is "not found".
    let (code, _, err) = lb.run(&["pin", "0zzzzzzz"]);
    assert_eq!(code, 3, "{err}");
}

/// The only backup of a source survives any policy; a policy that would empty a source is
/// refused (exit 2, nothing removed) unless --force; with every backup gone, prune empties
/// the repository's data and the repository stays usable.
#[test]
fn rails_only_backup_and_removing_everything() {
    let env = Env::new();
    let lb = Runner::local(&env);
    let db = env.path("app.db");
    make_random_db(&db, "wal", 600, 200);
    let lone = lb.backup_at(&db, Some(&rfc3339(noon_days_ago(30))));
    let lone = lone["id"].as_str().expect("id").to_string();

    let v = lb.json(&["forget", "--max-age", "1d", "--prune"]);
    assert_eq!(
        decisions(&v["forget"])[&lone],
        (true, strings(&["only backup of this source"])),
        "{v}"
    );
    assert!(removed(&v["forget"]).is_empty());
    assert_eq!(lb.ids(), vec![lone.clone()]);
    assert_eq!(v["prune"]["deleted_packs"], 0, "{v}");
    // (Not `verify`: that would make it the newest verified backup, another rail.)
    lb.restore_matches_manifest(&lone);

    // A second old backup: now the policy would remove both. Refused, nothing removed.
    churn(&db, 3, 1, 600, 10);
    lb.backup_at(&db, Some(&rfc3339(noon_days_ago(20))));
    let before = tree(&env.repo());
    let (code, v, err) = lb.run_json(&["forget", "--max-age", "1d"]);
    assert_eq!(code, 2, "{v}\n{err}");
    assert_eq!(v["error"]["exit_code"], 2, "{v}");
    assert!(
        err.contains("would remove every backup of") && err.contains("app.db"),
        "{err}"
    );
    assert!(err.contains("--force"), "the hint names the way out: {err}");
    let (code, _, err) = lb.run(&["forget", "--max-age", "1d", "--prune"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        tree(&env.repo()),
        before,
        "a refused forget changes nothing"
    );
    assert_eq!(lb.ids().len(), 2);

    // --force: both go, and prune then deletes every pack.
    let v = lb.json(&["forget", "--max-age", "1d", "--force", "--prune"]);
    assert_eq!(removed(&v["forget"]).len(), 2, "{v}");
    assert!(lb.ids().is_empty());
    let p = &v["prune"];
    assert_eq!(p["backups"], 0, "{p}");
    assert_eq!(p["packs_after"], 0, "{p}");
    assert_eq!(p["bytes_after"], 0, "{p}");
    assert_eq!(pack_bytes(&env.repo()), 0);
    assert!(
        tree(&env.repo().join("index")).is_empty(),
        "no index file left"
    );
    let report = lb.check_clean(true, "empty repository");
    assert_eq!(report["packs"], 0, "{report}");
    // With nothing left, forget says so (not found), and the repository takes new backups.
    let (code, _, err) = lb.run(&["forget", "--keep-last", "1"]);
    assert_eq!(code, 3, "{err}");
    let id = env.backup(&db);
    assert_eq!(lb.restore_matches_manifest(&id), sha256_file(&db));
    lb.check_clean(true, "a backup after emptying");
}

/// No rules at all is refused (exit 2), whether nothing is given or only options that are
/// not rules (the pre-restore age); nothing is removed.
#[test]
fn empty_policy_is_refused() {
    let env = Env::new();
    let lb = Runner::local(&env);
    let db = env.path("app.db");
    make_random_db(&db, "wal", 300, 200);
    daily_history(&lb, &db, 3);
    let before = tree(&env.repo());
    let (code, v, err) = lb.run_json(&["forget"]);
    assert_eq!(code, 2, "{v}\n{err}");
    assert!(err.contains("no retention policy"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    let (code, _, err) = lb.run(&["forget", "--keep-pre-restore", "3d", "--prune"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no rules"), "{err}");
    let (code, _, err) = lb.run(&["forget", "--dry-run", "--force"]);
    assert_eq!(code, 2, "{err}");
    // An empty [retention] section in lifeboat.toml: the same.
    let cfg = env.path("empty.toml");
    std::fs::write(&cfg, "[retention]\nkeep_pre_restore = \"3d\"\n").expect("config");
    let (code, _, err) = lb.run(&["--config", cfg.to_str().expect("utf-8"), "forget"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no rules"), "{err}");
    assert_eq!(tree(&env.repo()), before, "nothing changed");
}

/// Per-source policies from lifeboat.toml with two databases; `--source`; flags replace the
/// file's policies; a source no section covers is left alone.
#[test]
fn per_source_policies_from_lifeboat_toml() {
    let env = Env::new();
    let lb = Runner::local(&env);
    let a = env.path("a.db");
    let b = env.path("b.db");
    make_random_db(&a, "wal", 400, 200);
    make_random_db(&b, "delete", 400, 200);
    let ha = daily_history(&lb, &a, 6);
    let hb = daily_history(&lb, &b, 6);
    let list = lb.json(&["list"]);
    let source_of = |id: &str| -> String {
        list.as_array()
            .expect("list")
            .iter()
            .find(|m| m["id"] == id)
            .and_then(|m| m["source"].as_str())
            .expect("source")
            .to_string()
    };
    let (sa, sb) = (source_of(&ha[0].0), source_of(&hb[0].0));
    std::fs::write(
        env.path("lifeboat.toml"),
        format!(
            "timezone = \"UTC\"\n[retention]\nkeep_last = 2\n\n[retention.source.\"{sa}\"]\nkeep_daily = 4\n"
        ),
    )
    .expect("lifeboat.toml");

    let dry = lb.json(&["forget", "--dry-run"]);
    let f = &dry["forget"];
    assert_eq!(f["timezone"], "UTC", "the file's time zone: {dry}");
    let d = decisions(f);
    for (k, (id, t, _)) in ha.iter().enumerate() {
        let n = 6 - k; // 1 for the newest
        let want = if n <= 4 {
            (true, vec![format!("daily #{n} ({})", utc_day(*t))])
        } else {
            (false, strings(&["no rule keeps it"]))
        };
        assert_eq!(d[id], want, "a.db {id}: {dry}");
    }
    for (k, (id, _, _)) in hb.iter().enumerate() {
        let n = 6 - k;
        let want = if n <= 2 {
            (true, vec![format!("last #{n}")])
        } else {
            (false, strings(&["no rule keeps it"]))
        };
        assert_eq!(d[id], want, "b.db {id}: {dry}");
    }
    for row in f["backups"].as_array().expect("rows") {
        let want = if row["source"] == sa.as_str() {
            "daily 4"
        } else {
            "last 2"
        };
        assert_eq!(row["policy"], want, "{row}");
    }

    // --source: only b.db's backups are considered and removed.
    let v = lb.json(&["forget", "--source", b.to_str().expect("utf-8")]);
    assert_eq!(
        removed(&v["forget"]),
        hb[..4].iter().map(|h| h.0.clone()).collect::<BTreeSet<_>>(),
        "{v}"
    );
    assert!(
        v["forget"]["backups"]
            .as_array()
            .expect("rows")
            .iter()
            .all(|r| r["source"] == sb.as_str()),
        "{v}"
    );
    assert_eq!(lb.ids().len(), 8);
    // A relative --source names the same database.
    let v = lb.json(&["forget", "--source", "b.db", "--dry-run"]);
    assert_eq!(v["forget"]["backups"].as_array().map(Vec::len), Some(2));

    // Flags replace the file's policies for every source.
    let v = lb.json(&["forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(removed(&v["forget"]).len(), 5 + 1, "{v}");

    // The file again, for all sources; then prune and check.
    let v = lb.json(&["forget", "--prune"]);
    assert_eq!(
        removed(&v["forget"]),
        ha[..2].iter().map(|h| h.0.clone()).collect::<BTreeSet<_>>(),
        "{v}"
    );
    assert_eq!(lb.ids().len(), 6);
    lb.check_clean(true, "per-source forget");
    assert_eq!(lb.verify_all("per-source forget"), 6);
    for (id, _, sha) in ha[2..].iter().chain(&hb[4..]) {
        assert_eq!(&lb.restore_matches_manifest(id), sha);
    }

    // A file whose only section is for a.db leaves b.db alone, and says so.
    let only_a = env.path("only-a.toml");
    std::fs::write(
        &only_a,
        format!("[retention.source.\"{sa}\"]\nkeep_last = 1\n"),
    )
    .expect("config");
    let v = lb.json(&[
        "--config",
        only_a.to_str().expect("utf-8"),
        "forget",
        "--dry-run",
    ]);
    let f = &v["forget"];
    let no_policy: Vec<&str> = f["no_policy"]
        .as_array()
        .expect("no_policy")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(no_policy.len(), 1, "{v}");
    assert!(no_policy[0].contains(&sb), "{v}");
    assert_eq!(removed(f).len(), 3, "a.db's 4 down to 1: {v}");
    let (code, text, _) = lb.run(&[
        "--config",
        only_a.to_str().expect("utf-8"),
        "forget",
        "--dry-run",
    ]);
    assert_eq!(code, 0);
    assert!(
        text.contains("no retention policy applies; all kept"),
        "{text}"
    );
}

/// The safety backup an in-place restore takes is kept 7 days by default, outside the
/// counts of the other rules; older, it goes; `--keep-pre-restore` changes the age.
#[test]
fn pre_restore_backups_are_kept_seven_days_by_default() {
    let env = Env::new();
    let lb = Runner::local(&env);
    let db = env.path("app.db");
    make_random_db(&db, "wal", 500, 200);
    let h = daily_history(&lb, &db, 3);
    let current_sha = sha256_file(&db);
    let v = lb.json(&[
        "restore",
        &h[0].0,
        "--db",
        db.to_str().expect("utf-8"),
        "--yes",
    ]);
    let safety = v["safety_backup"]
        .as_str()
        .expect("a safety backup")
        .to_string();
    assert_eq!(sha256_file(&db), h[0].2, "restored in place");
    let m = lb.json(&["show", &safety]);
    assert_eq!(m["trigger"], "pre-restore", "{m}");
    assert_eq!(m["sqlite"]["sha256"], current_sha.as_str(), "{m}");

    let policy = ["forget", "--keep-last", "1", "--timezone", "UTC"];
    let v = lb.json(&[&policy[..], &["--dry-run"]].concat());
    let d = decisions(&v["forget"]);
    assert_eq!(
        d[&safety],
        (true, strings(&["pre-restore, within 7d"])),
        "{v}"
    );
    // keep-last counts ordinary backups: the newest of those is kept, not only the safety one.
    assert_eq!(d[&h[2].0], (true, strings(&["last #1"])), "{v}");
    assert_eq!(removed(&v["forget"]), set(&[&h[0].0, &h[1].0]));

    // Eight days later (the manifest's time moved back), the default lets it go ...
    let manifest = env.repo().join("backups").join(&safety);
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(&manifest).expect("manifest")).expect("json");
    m["time"] = Value::String(rfc3339(
        jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - 8 * 86_400)
            .expect("time"),
    ));
    std::fs::write(&manifest, serde_json::to_vec_pretty(&m).expect("encode")).expect("write");
    let v = lb.json(&[&policy[..], &["--dry-run"]].concat());
    assert_eq!(
        decisions(&v["forget"])[&safety],
        (false, strings(&["pre-restore, older than 7d"])),
        "{v}"
    );
    // ... and --keep-pre-restore 10d keeps it.
    let v = lb.json(&[&policy[..], &["--dry-run", "--keep-pre-restore", "10d"]].concat());
    assert_eq!(
        decisions(&v["forget"])[&safety],
        (true, strings(&["pre-restore, within 10d"])),
        "{v}"
    );
    let v = lb.json(&[&policy[..], &["--prune"]].concat());
    assert_eq!(removed(&v["forget"]).len(), 3, "{v}");
    assert_eq!(lb.ids(), vec![h[2].0.clone()]);
    lb.check_clean(true, "after the safety backup went");
    assert_eq!(lb.restore_matches_manifest(&h[2].0), h[2].2);
}

/// Bad ages, counts, percentages, time zones and config values: exit 2, a message that says
/// what is wrong, and nothing removed.
#[test]
fn bad_policy_input_is_a_usage_error() {
    let env = Env::new();
    let lb = Runner::local(&env);
    let db = env.path("app.db");
    make_random_db(&db, "wal", 300, 200);
    daily_history(&lb, &db, 3);
    let before = tree(&env.repo());
    let cases: &[(&[&str], &str)] = &[
        (&["forget", "--keep-within", "3x"], "'3x' is not an age"),
        (&["forget", "--max-age", "90"], "'90' is not an age"),
        (&["forget", "--keep-within-daily", "d7"], "is not an age"),
        (
            &["forget", "--keep-pre-restore", "soon", "--keep-last", "1"],
            "is not an age",
        ),
        (&["forget", "--keep-daily", "abc"], "'abc' is not a count"),
        (&["forget", "--keep-weekly", "1.5"], "is not a count"),
        (&["forget", "--keep-monthly", "-2"], "-2"),
        (&["forget", "--min-count", "many"], "--min-count"),
        (&["forget", "--max-count", "x"], "--max-count"),
        (
            &["forget", "--keep-last", "1", "--timezone", "Mars/Olympus"],
            "unknown time zone 'Mars/Olympus'",
        ),
        (
            &[
                "forget",
                "--keep-last",
                "1",
                "--prune",
                "--max-unused",
                "150%",
            ],
            "not a percentage",
        ),
        (&["prune", "--max-unused", "lots"], "not a percentage"),
        (&["prune", "--max-unused", "101"], "not a percentage"),
    ];
    for (args, needle) in cases {
        let (code, out, err) = lb.run(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected '{needle}' in: {err}"
        );
        let (code, v, _) = lb.run_json(args);
        assert_eq!(code, 2, "{args:?} --json");
        assert_eq!(v["error"]["exit_code"], 2, "{args:?}: {v}");
        assert_eq!(v["error"]["kind"], "Usage", "{args:?}: {v}");
    }
    // Bad values in lifeboat.toml's [retention] are usage errors too.
    let configs = [
        ("[retention]\nkeep_daily = \"lots\"\n", "is not a count"),
        ("[retention]\nkeep_within = \"3x\"\n", "is not an age"),
        ("[retention]\nkeep_dialy = 7\n", "keep_dialy"),
        (
            "timezone = \"Nowhere/Land\"\n[retention]\nkeep_last = 1\n",
            "Nowhere/Land",
        ),
        ("[retention.source.\"/x.db\"]\nmax_age = 5\n", "max_age"),
    ];
    for (i, (text, needle)) in configs.iter().enumerate() {
        let cfg = env.path(&format!("bad-{i}.toml"));
        std::fs::write(&cfg, text).expect("config");
        let (code, out, err) = lb.run(&["--config", cfg.to_str().expect("utf-8"), "forget"]);
        assert_eq!(code, 2, "{text}: {out}{err}");
        assert!(
            err.contains(needle),
            "{text}: expected '{needle}' in: {err}"
        );
    }
    assert_eq!(tree(&env.repo()), before, "nothing changed");
    // The spellings of "no limit" are accepted.
    for args in [
        &["forget", "--keep-daily", "all", "--dry-run"][..],
        &["forget", "--keep-daily", "unlimited", "--dry-run"][..],
        &["forget", "--keep-daily=-1", "--dry-run"][..],
    ] {
        let v = lb.json(args);
        assert!(removed(&v["forget"]).is_empty(), "{args:?}: {v}");
    }
}

/// The "newest verified" rail: the newest backup that passed `verify` (or `backup
/// --verify`) is kept unless --force; an older verified one is not protected.
#[test]
fn newest_verified_backup_is_kept_unless_forced() {
    let env = Env::new();
    let lb = Runner::local(&env);
    let db = env.path("app.db");
    make_random_db(&db, "wal", 400, 200);
    let h = daily_history(&lb, &db, 4);
    // h[1] fully verified at backup time: a new backup with --verify.
    churn(&db, 2, 1, 400, 3);
    let full = lb.json(&[
        "backup",
        db.to_str().expect("utf-8"),
        "--verify",
        "--time",
        &rfc3339(jiff::Timestamp::from_second(h[1].1.as_second() + 60).expect("t")),
    ]);
    let full = full["id"].as_str().expect("id").to_string();
    lb.json(&["verify", &h[0].0]);
    let v = lb.json(&["forget", "--keep-last", "1", "--dry-run"]);
    let d = decisions(&v["forget"]);
    assert_eq!(d[&full], (true, strings(&["newest verified"])), "{v}");
    assert!(
        !d[&h[0].0].0,
        "an older verified backup is not protected: {v}"
    );
    // `verify` of a newer one moves the rail.
    lb.json(&["verify", &h[2].0]);
    let v = lb.json(&["forget", "--keep-last", "1", "--dry-run"]);
    let d = decisions(&v["forget"]);
    assert_eq!(d[&h[2].0], (true, strings(&["newest verified"])), "{v}");
    assert!(!d[&full].0, "{v}");
    // --force lifts it.
    let v = lb.json(&["forget", "--keep-last", "1", "--force", "--prune"]);
    assert_eq!(removed(&v["forget"]).len(), 4, "{v}");
    assert_eq!(lb.ids(), vec![h[3].0.clone()]);
    lb.check_clean(true, "forced");
    assert_eq!(lb.restore_matches_manifest(&h[3].0), h[3].2);
}

/// `prune --dry-run` changes nothing and predicts the repacking; `--max-unused 100%` never
/// repacks, `0%` repacks every partly used pack; then nothing is left to do.
#[test]
fn prune_dry_run_and_max_unused() {
    let env = Env::new();
    let lb = Runner::local(&env);
    let db = env.path("app.db");
    make_random_db(&db, "wal", 3000, 200);
    let h = daily_history(&lb, &db, 5);
    lb.json(&["forget", "--keep-last", "2"]);

    let before = tree(&env.repo());
    let dry = lb.json(&["prune", "--dry-run", "--max-unused", "0%"]);
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert!(num(&dry, "repacked_packs") > 0, "{dry}");
    assert!(
        num(&dry, "bytes_after") < num(&dry, "bytes_before"),
        "{dry}"
    );
    assert_eq!(tree(&env.repo()), before, "a dry run changes nothing");
    let (code, text, _) = lb.run(&["prune", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("dry run") && text.contains("would leave"),
        "{text}"
    );

    let lazy = lb.json(&["prune", "--max-unused", "100%"]);
    assert_eq!(lazy["repacked_packs"], 0, "{lazy}");
    assert_eq!(lazy["repack_written_bytes"], 0, "{lazy}");
    lb.check_clean(true, "after prune 100%");
    assert_eq!(lb.verify_all("after prune 100%"), 2);

    let eager = lb.json(&["prune", "--max-unused", "0%"]);
    assert_eq!(
        eager["repacked_packs"], dry["repacked_packs"],
        "{dry}\n{eager}"
    );
    assert!(num(&eager, "repack_written_bytes") > 0, "{eager}");
    assert!(
        num(&eager, "deleted_packs") >= num(&eager, "repacked_packs"),
        "{eager}"
    );
    assert!(
        num(&eager, "bytes_after") < num(&eager, "bytes_before"),
        "{eager}"
    );
    let report = lb.check_clean(true, "after prune 0%");
    assert_eq!(report["unreferenced_packs"], 0, "{report}");
    assert_eq!(lb.verify_all("after prune 0%"), 2);
    for (id, _, sha) in &h[3..] {
        assert_eq!(&lb.restore_matches_manifest(id), sha);
    }
    let after = lb.json(&["prune", "--dry-run", "--max-unused", "0%"]);
    assert_eq!(after["repacked_packs"], 0, "{after}");
    assert_eq!(after["unused_packs"], 0, "{after}");
    assert_eq!(
        after["unused_bytes_after"], 0,
        "nothing unused is left: {after}"
    );
    // forget --dry-run --prune prunes nothing.
    let before = tree(&env.repo());
    let v = lb.json(&["forget", "--keep-last", "1", "--dry-run", "--prune"]);
    assert_eq!(v["prune"], Value::Null, "{v}");
    assert_eq!(tree(&env.repo()), before);
}

/// Prune on an encrypted repository: partly used packs are decrypted, repacked and sealed
/// again; everything checks, verifies and restores; a wrong passphrase changes nothing.
#[test]
fn prune_on_an_encrypted_repository() {
    let env = Env::new();
    let lb = Runner::local(&env).with("LIFEBOAT_PASSWORD", "correct horse battery staple");
    lb.json(&[
        "repo",
        "init",
        "--encrypt",
        "--argon2-memory",
        "64",
        "--argon2-iterations",
        "1",
    ]);
    let db = env.path("secret.db");
    make_random_db(&db, "wal", 3000, 200);
    let h = daily_history(&lb, &db, 5);
    let shown = lb.json(&["repo", "show"]);
    assert_eq!(shown["encrypted"], true, "{shown}");

    let wrong = Runner::local(&env).with("LIFEBOAT_PASSWORD", "wrong");
    let before = tree(&env.repo());
    let (code, _, err) = wrong.run(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(code, 8, "{err}");
    let (code, _, err) = wrong.run(&["prune"]);
    assert_eq!(code, 8, "{err}");
    assert_eq!(
        tree(&env.repo()),
        before,
        "a wrong passphrase changes nothing"
    );

    let v = lb.json(&[
        "forget",
        "--keep-last",
        "2",
        "--prune",
        "--max-unused",
        "0%",
    ]);
    assert_eq!(removed(&v["forget"]).len(), 3, "{v}");
    let p = &v["prune"];
    assert!(num(p, "repacked_packs") > 0, "{p}");
    assert!(num(p, "deleted_packs") > 0, "{p}");
    assert!(num(p, "bytes_after") < num(p, "bytes_before"), "{p}");
    let report = lb.check_clean(true, "encrypted, after prune");
    assert_eq!(report["unreferenced_packs"], 0, "{report}");
    assert_eq!(lb.verify_all("encrypted, after prune"), 2);
    for (id, _, sha) in &h[3..] {
        assert_eq!(&lb.restore_matches_manifest(id), sha);
    }
    // The repacked data is sealed too: no pack holds a page of the database in clear.
    let page = {
        let bytes = std::fs::read(&db).expect("db");
        bytes[4096 * 3..4096 * 3 + 64].to_vec()
    };
    for (name, _) in tree(&env.repo().join("data")) {
        let data = std::fs::read(env.repo().join("data").join(&name)).expect("pack");
        assert!(
            !data.windows(page.len()).any(|w| w == page.as_slice()),
            "pack {name} holds database bytes in clear"
        );
    }
    // A new backup after the prune dedups against the repacked data and restores.
    let id = env_backup(&lb, &db);
    assert_eq!(lb.restore_matches_manifest(&id), sha256_file(&db));
    let again = lb.json(&["prune", "--max-unused", "0%"]);
    assert_eq!(again["deleted_packs"], 0, "{again}");
}

fn env_backup(lb: &Runner, db: &std::path::Path) -> String {
    let b = lb.backup_at(db, None);
    assert_eq!(
        b["new_blobs"], 0,
        "nothing changed since the last backup: {b}"
    );
    b["id"].as_str().expect("id").to_string()
}

/// Rules measured in time: `--keep-within` counts back from the newest backup (so a policy
/// does not erode when backups stop), `--max-age` from now; `--max-count` trims what the
/// rules keep, `--min-count` keeps the newest whatever; days follow `--timezone` (and
/// `timezone` in lifeboat.toml).
#[test]
fn time_rules_counts_and_time_zones() {
    let env = Env::new();
    let lb = Runner::local(&env);
    let db = env.path("app.db");
    make_random_db(&db, "wal", 300, 200);
    // Backups stopped three weeks ago: noon UTC, 30 down to 21 days ago.
    let mut h = Vec::new();
    for ago in (21..=30).rev() {
        churn(&db, 2, ago as u32, 300, 2);
        let b = lb.backup_at(&db, Some(&rfc3339(noon_days_ago(ago))));
        h.push((b["id"].as_str().expect("id").to_string(), ago));
    }
    let decide = |args: &[&str]| {
        let v = lb.json(&[&["forget", "--dry-run", "--timezone", "UTC"], args].concat());
        decisions(&v["forget"])
    };
    // Within 3 days of the newest backup (21 days ago): 21..=24 days ago.
    let d = decide(&["--keep-within", "3d"]);
    for (id, ago) in &h {
        let want = if *ago <= 24 {
            (true, strings(&["within 3d"]))
        } else {
            (false, strings(&["no rule keeps it"]))
        };
        assert_eq!(d[id], want, "{ago} days ago");
    }
    // The newest of each day within 5 days of the newest backup.
    let d = decide(&["--keep-within-daily", "5d"]);
    assert_eq!(d.values().filter(|x| x.0).count(), 6, "{d:?}");
    // Max-age counts from now. The backups were taken at noon, so one taken N days ago is
    // N days old, give or take half a day depending on when the test runs: 612 h (25.5 days)
    // keeps the one of 25 days ago and drops the one of 26 at any time of day.
    let d = decide(&["--keep-last", "10", "--max-age", "612h"]);
    for (k, (id, ago)) in h.iter().enumerate() {
        let want = if *ago <= 25 {
            (true, vec![format!("last #{}", 10 - k)])
        } else {
            (false, strings(&["older than max-age 612h"]))
        };
        assert_eq!(d[id], want, "{ago} days ago");
    }
    // Max-count trims the oldest of what the rules keep.
    let d = decide(&["--keep-last", "all", "--max-count", "3"]);
    for (id, ago) in &h {
        assert_eq!(d[id].0, *ago <= 23, "{ago} days ago: {:?}", d[id]);
        if *ago > 23 {
            assert_eq!(d[id].1, strings(&["beyond max-count 3"]));
        }
    }
    // Min-count keeps the newest N even when a limit removes everything.
    let d = decide(&["--max-age", "1d", "--min-count", "2"]);
    for (id, ago) in &h {
        let want = if *ago <= 22 {
            (true, strings(&["min-count 2"]))
        } else {
            (false, strings(&["older than max-age 1d"]))
        };
        assert_eq!(d[id], want, "{ago} days ago");
    }

    // Time zones: 23:30 UTC and 08:00 UTC the next morning are two days in UTC and one in
    // Berlin (00:30 and 09:00 there, UTC+1 in winter, UTC+2 in summer).
    let other = env.path("tz.db");
    make_random_db(&other, "wal", 200, 200);
    let base = noon_days_ago(40).as_second();
    let late = jiff::Timestamp::from_second(base + 11 * 3600 + 1800).expect("t");
    let morning = jiff::Timestamp::from_second(base + 20 * 3600).expect("t");
    let first = lb.backup_at(&other, Some(&rfc3339(late)));
    churn(&other, 2, 1, 200, 1);
    let second = lb.backup_at(&other, Some(&rfc3339(morning)));
    let (first, second) = (
        first["id"].as_str().expect("id").to_string(),
        second["id"].as_str().expect("id").to_string(),
    );
    let src = other.to_str().expect("utf-8");
    let v = lb.json(&[
        "forget",
        "--dry-run",
        "--keep-daily",
        "5",
        "--source",
        src,
        "--timezone",
        "UTC",
    ]);
    assert!(removed(&v["forget"]).is_empty(), "two days in UTC: {v}");
    let v = lb.json(&[
        "forget",
        "--dry-run",
        "--keep-daily",
        "5",
        "--source",
        src,
        "--timezone",
        "Europe/Berlin",
    ]);
    assert_eq!(v["forget"]["timezone"], "Europe/Berlin", "{v}");
    assert_eq!(
        removed(&v["forget"]),
        set(&[&first]),
        "one day in Berlin: {v}"
    );
    let berlin_day = {
        let z = morning.to_zoned_datetime(jiff::tz::TimeZone::get("Europe/Berlin").expect("tz"));
        format!("{:04}-{:02}-{:02}", z.year(), z.month(), z.day())
    };
    assert_eq!(
        decisions(&v["forget"])[&second],
        (true, vec![format!("daily #1 ({berlin_day})")]),
        "{v}"
    );
    // The same from lifeboat.toml, and the flag beats the file.
    std::fs::write(
        env.path("lifeboat.toml"),
        "timezone = \"Europe/Berlin\"\n[retention]\nkeep_daily = 5\n",
    )
    .expect("config");
    let v = lb.json(&["forget", "--dry-run", "--source", src]);
    assert_eq!(removed(&v["forget"]), set(&[&first]), "{v}");
    let v = lb.json(&["forget", "--dry-run", "--source", src, "--timezone", "UTC"]);
    assert!(removed(&v["forget"]).is_empty(), "{v}");
    // The text output shows times in the policy's zone.
    let (code, text, _) = lb.run(&["forget", "--dry-run", "--source", src]);
    assert_eq!(code, 0);
    assert!(text.contains("time zone Europe/Berlin"), "{text}");
    assert!(
        text.contains(&format!("{berlin_day} 0")),
        "Berlin times: {text}"
    );
}

/// `-1` is a count meaning "every period" (`all` or `-1`, restic's spelling), also as a
/// separate argument on the command line (`--keep-daily -1`), which the parser must not
/// take for a flag. (This test found that it did.)
#[test]
fn minus_one_count_on_the_command_line() {
    let env = Env::new();
    let lb = Runner::local(&env);
    let db = env.path("app.db");
    make_random_db(&db, "wal", 300, 200);
    daily_history(&lb, &db, 3);
    for flag in [
        "--keep-hourly",
        "--keep-daily",
        "--keep-weekly",
        "--keep-monthly",
        "--keep-yearly",
    ] {
        let (code, v, err) = lb.run_json(&["forget", flag, "-1", "--dry-run"]);
        assert_eq!(code, 0, "`forget {flag} -1` as documented: {v}\n{err}");
        // Three daily backups: every hour and every day keeps each; a week, a month or a
        // year keeps its newest only (how many periods three days span depends on today).
        let gone = removed(&v["forget"]).len();
        if matches!(flag, "--keep-hourly" | "--keep-daily") {
            assert_eq!(gone, 0, "{flag}: {v}");
        } else {
            assert!(gone < 3, "{flag}: {v}");
        }
    }
}
