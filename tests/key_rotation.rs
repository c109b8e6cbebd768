//! `key rotate --full` killed at every step (strace's fault injection at the N-th rename,
//! for N across the whole run): what it leaves opens with the old or the new passphrase,
//! the next rotation (with another new passphrase) finishes it, every genuine backup then
//! restores byte for byte, and a manifest the leaked key's holder planted while the
//! rotation was interrupted is left out, not re-sealed.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

const OLD_PW: &str = "old-passphrase-5120";
const LEAKED_PW: &str = "leaked-passphrase-7731";

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn run(env: &Env, pw: &str, args: &[&str]) -> Out {
    Out::of(
        env.std_cmd()
            .env("LIFEBOAT_PASSWORD", pw)
            .args(args)
            .output()
            .expect("run lifeboat"),
    )
}

/// `lifeboat key rotate --full` under strace: killed at the `kill_at`-th rename in the
/// repository (None: not killed); the renames are logged to `log`.
fn rotate_traced(env: &Env, pw: &str, new_pw: &str, kill_at: Option<u32>, log: &Path) -> Out {
    let mut c = lifeboat_under_strace(kill_at, log);
    c.current_dir(env.dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.path("home"))
        .env("LIFEBOAT_REPO", env.repo())
        .env("LIFEBOAT_PASSWORD", pw)
        .env("LIFEBOAT_NEW_PASSWORD", new_pw)
        .args(["key", "rotate", "--full", "--yes", "--json"])
        .args(FAST_KDF);
    Out::of(c.output().expect("strace"))
}

fn config(repo: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(repo.join("config")).unwrap()).unwrap()
}

/// How many manifests are sealed under key epoch `epoch` (their envelope says so).
fn manifests_of_epoch(env: &Env, pw: &str, ids: &[String], epoch: u64) -> usize {
    ids.iter()
        .filter(|id| {
            let o = run(
                env,
                pw,
                &["repo", "inspect", &format!("backups/{id}"), "--json"],
            )
            .ok("repo inspect");
            o.json()["epoch"].as_u64() == Some(epoch)
        })
        .count()
}

struct Template {
    env: Env,
    ids: Vec<String>,
    dumps: Vec<Vec<String>>,
    /// A manifest the leaked key's holder made in their copy: name and bytes.
    forged: (String, Vec<u8>),
}

fn template() -> Template {
    let env = Env::new();
    let db = env.path("app.db");
    drop(make_db(&db, 800));
    let mut init = vec!["repo", "init", "--encrypt"];
    init.extend(FAST_KDF);
    run(&env, OLD_PW, &init).ok("init");
    let mut add = vec!["key", "add"];
    add.extend(FAST_KDF);
    Out::of(
        env.std_cmd()
            .env("LIFEBOAT_PASSWORD", OLD_PW)
            .env("LIFEBOAT_NEW_PASSWORD", LEAKED_PW)
            .args(&add)
            .output()
            .unwrap(),
    )
    .ok("key add");
    let (mut ids, mut dumps) = (Vec::new(), Vec::new());
    for round in 0..6 {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute(
            "UPDATE t SET v = ?1 WHERE id % 5 = ?2",
            rusqlite::params![format!("round {round}"), round % 5],
        )
        .unwrap();
        drop(c);
        let b = run(&env, OLD_PW, &["backup", s(&db), "--json"])
            .ok("backup")
            .json();
        ids.push(b["id"].as_str().unwrap().to_string());
        dumps.push(dump(&db));
    }
    run(&env, OLD_PW, &["pin", &ids[0]]).ok("pin");
    // The leaked key's holder backs up into a copy of the repository as it is now.
    let copy = env.path("stolen");
    copy_dir(&env.repo(), &copy);
    let o = Out::of(
        env.std_cmd()
            .env("HOME", env.path("home-thief"))
            .env("LIFEBOAT_PASSWORD", LEAKED_PW)
            .args(["--repo", s(&copy), "backup", s(&db), "--json"])
            .output()
            .unwrap(),
    )
    .ok("the thief's backup");
    let name = format!("backups/{}", o.json()["id"].as_str().unwrap());
    let forged = (name.clone(), std::fs::read(copy.join(&name)).unwrap());
    Template {
        env,
        ids,
        dumps,
        forged,
    }
}

/// A fresh copy of the template's repository and HOME.
fn fresh(t: &Template) -> Env {
    let env = Env::new();
    copy_dir(&t.env.repo(), &env.repo());
    copy_dir(&t.env.path("home"), &env.path("home"));
    env
}

#[test]
fn full_rotation_killed_at_any_step_finishes_and_re_seals_nothing_planted() {
    let t = template();
    // How many renames a whole rotation makes.
    let probe = fresh(&t);
    let log = probe.path("renames.log");
    rotate_traced(&probe, OLD_PW, "probe-pw", None, &log).ok("untouched rotation");
    let renames = renames_logged(&log);
    assert!(renames > 10, "{renames} renames");
    eprintln!("a rotation makes {renames} renames");

    let mut seen_half_resealed = false;
    let mut seen_before_commit = false;
    for n in 1..=renames {
        let env = fresh(&t);
        let p1 = format!("first-new-{n}");
        let out = rotate_traced(&env, OLD_PW, &p1, Some(n), &env.path("log"));
        assert_ne!(out.code, 0, "killed at rename {n}:\n{}", out.text());
        assert_eq!(renames_logged(&env.path("log")), n, "killed at rename {n}");
        let cfg = config(&env.repo());
        let epoch = cfg["keys"]["epoch"].as_u64().unwrap();
        // Whatever it left opens with exactly one of the passphrases.
        let (current, stale) = match epoch {
            0 => (OLD_PW, p1.as_str()),
            1 => (p1.as_str(), OLD_PW),
            e => panic!("kill at rename {n}: epoch {e}"),
        };
        let refused = run(&env, stale, &["key", "list"]);
        assert!(
            [8, 9].contains(&refused.code),
            "the other passphrase after a kill at rename {n}:\n{}",
            refused.text()
        );
        if epoch == 0 {
            seen_before_commit = true;
            run(&env, current, &["list"]).ok("list before the rotation committed");
        } else {
            let rekeying = cfg["keys"]["rekeying"].as_bool().unwrap_or(false);
            if rekeying {
                let resealed = manifests_of_epoch(&env, current, &t.ids, 1);
                if resealed > 0 && resealed < t.ids.len() {
                    seen_half_resealed = true;
                }
                // Nothing writes until the rotation is finished (it could undo the write).
                run(&env, current, &["unpin", &t.ids[0]]).fails(
                    6,
                    &format!("unpin after a kill at rename {n}"),
                    "a full key rotation of",
                );
            }
            // The leaked key's holder plants its manifest while the rotation is unfinished.
            std::fs::write(env.repo().join(&t.forged.0), &t.forged.1).unwrap();
        }
        // The next rotation, with another new passphrase, finishes it.
        let p2 = format!("second-new-{n}");
        let r = rotate_traced(&env, current, &p2, None, &env.path("log2"))
            .ok(&format!("rotation after a kill at rename {n}"))
            .json();
        if epoch == 1 {
            assert!(
                r["left_out"].to_string().contains(&t.forged.0),
                "kill at rename {n}: {r}"
            );
            std::fs::remove_file(env.repo().join(&t.forged.0)).unwrap();
        }
        let list = run(&env, &p2, &["list", "--json"]).ok("list").json();
        assert_eq!(
            list.as_array().unwrap().len(),
            t.ids.len(),
            "kill at rename {n}: {list}"
        );
        let plan = run(
            &env,
            &p2,
            &["forget", "--keep-last", "1", "--dry-run", "--json"],
        )
        .ok("forget --dry-run")
        .json();
        let removed = plan["forget"]["removed"].to_string();
        assert!(
            !removed.contains(&t.ids[0]) && removed.contains(&t.ids[1]),
            "the pin survived a kill at rename {n}: {plan}"
        );
        for (k, id) in t.ids.iter().enumerate() {
            let out = env.path(&format!("restored-{k}.db"));
            run(&env, &p2, &["restore", id, "--output", s(&out)])
                .ok(&format!("restore {id} after a kill at rename {n}"));
            assert_eq!(dump(&out), t.dumps[k], "kill at rename {n}");
        }
        for pw in [OLD_PW, LEAKED_PW, p1.as_str()] {
            assert_ne!(
                run(&env, pw, &["key", "list"]).code,
                0,
                "{pw} still opens it"
            );
        }
    }
    assert!(
        seen_before_commit,
        "no kill landed before the new keys were committed"
    );
    assert!(
        seen_half_resealed,
        "no kill landed half way through re-sealing"
    );
}

#[test]
fn a_backup_does_not_start_while_a_full_rotation_runs() {
    // The rotation is held for 3 s at its first rename (strace), after it took the lock and
    // its inventory; a backup started then refuses (exit 6) instead of writing objects under
    // keys being retired, which the rotation would not re-seal.
    let t = template();
    let env = fresh(&t);
    let db = t.env.path("app.db");
    let mut c = std::process::Command::new("strace");
    c.args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=renameat", "-e"])
        .arg("inject=renameat:delay_enter=3000000:when=1")
        .arg(lifeboat_bin())
        .current_dir(env.dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.path("home"))
        .env("LIFEBOAT_REPO", env.repo())
        .env("LIFEBOAT_PASSWORD", OLD_PW)
        .env("LIFEBOAT_NEW_PASSWORD", "during-pw")
        .args(["key", "rotate", "--full", "--yes", "--json"])
        .args(FAST_KDF)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let rotation = c.spawn().unwrap();
    // Wait until the rotation holds the lock.
    assert!(
        wait_until(std::time::Duration::from_secs(20), || env
            .repo()
            .join("locks/prune")
            .exists()),
        "the rotation took the lock"
    );
    let refused = run(&env, OLD_PW, &["backup", s(&db)]);
    let done = Out::of(rotation.wait_with_output().unwrap()).ok("the rotation");
    refused.fails(6, "a backup during the rotation", "key rotation on");
    assert_eq!(done.json()["left_out"], serde_json::json!([]));
    // Afterwards the backup runs, and every backup is listed.
    run(&env, "during-pw", &["backup", s(&db)]).ok("backup after the rotation");
    let list = run(&env, "during-pw", &["list", "--json"])
        .ok("list")
        .json();
    assert_eq!(list.as_array().unwrap().len(), t.ids.len() + 1, "{list}");
}

/// Continuous-replication segments (sealed under the data key of their epoch, like the
/// manifests) are re-sealed by a full rotation: a restore to the latest commit works with
/// the new passphrase afterwards.
#[test]
fn replication_segments_survive_a_full_rotation() {
    let env = Env::new();
    let db = env.path("app.db");
    make_random_db(&db, "wal", 200, 100);
    run(&env, OLD_PW, &["repo", "init", "--encrypt"]).ok("init");
    let child = env
        .std_cmd()
        .env("LIFEBOAT_PASSWORD", OLD_PW)
        .args(["replicate", s(&db), "--interval", "200ms", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    for i in 0..10 {
        conn.execute("CREATE TABLE IF NOT EXISTS later (i INTEGER); ", [])
            .unwrap();
        conn.execute("INSERT INTO later (i) VALUES (?1)", [i])
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(800));
    // SAFETY: a signal to the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let segments = walk_files(&env.repo().join("wal")).len();
    assert!(segments > 0, "nothing shipped");
    let new_pw = "new-passphrase-2231";
    Out::of(
        env.std_cmd()
            .env("LIFEBOAT_PASSWORD", OLD_PW)
            .env("LIFEBOAT_NEW_PASSWORD", new_pw)
            .args(["key", "rotate", "--full", "--yes"])
            .args(FAST_KDF)
            .output()
            .unwrap(),
    )
    .ok("rotate --full");
    let latest = env.path("latest.db");
    run(
        &env,
        new_pw,
        &[
            "restore",
            "--source",
            s(&db),
            "--at",
            "latest",
            "--output",
            s(&latest),
        ],
    )
    .ok("restore --at latest after the rotation");
    let count: i64 = rusqlite::Connection::open(&latest)
        .unwrap()
        .query_row("SELECT count(*) FROM later", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 10);
}
