//! A repository on a full disk: the backup fails with exit 7 and a message about space,
//! commits nothing, leaves no staging files, and every earlier backup still restores.
//! The disk is a 3 MiB tmpfs mounted by the test (needs root, as in CI).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_fails_cleanly_and_keeps_earlier_backups() {
    let env = Env::new();
    let Some(_mount) = Mount::tmpfs(&env.path("small-disk"), "3m") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs to test a full disk"
        );
        eprintln!("SKIPPED full-disk test: mounting a tmpfs needs root");
        return;
    };
    let repo = env.path("small-disk/repo");
    let small = env.path("small.db");
    make_db(&small, 200);
    let big = env.path("big.db");
    make_random_db(&big, "wal", 20_000, 400); // incompressible: far more than 3 MiB stored
    let repo_arg = repo.to_str().expect("utf-8");

    let first = env.json(&["--repo", repo_arg, "backup", small.to_str().expect("utf-8")]);
    let first = first["id"].as_str().expect("id").to_string();

    let (code, out) = env.run(&["--repo", repo_arg, "backup", big.to_str().expect("utf-8")]);
    assert_eq!(code, 7, "a full disk is a storage failure:\n{out}");
    assert!(
        out.contains("No space left") || out.contains("space"),
        "the message says the disk is full:\n{out}"
    );
    assert!(out.contains("hint:"), "and what to do:\n{out}");

    let list = env.json(&["--repo", repo_arg, "list"]);
    assert_eq!(
        list.as_array().expect("list").len(),
        1,
        "nothing half-written: {list}"
    );
    let staged = std::fs::read_dir(repo.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(staged, 0, "no staging files left behind");
    let (code, out) = env.run(&["--repo", repo_arg, "repo", "check"]);
    assert_eq!(code, 0, "{out}");

    let restored = env.path("restored.db");
    env.cmd()
        .args(["--repo", repo_arg, "restore", &first, "--output"])
        .arg(&restored)
        .assert()
        .success();
    assert_eq!(dump(&restored), dump(&small));
}
