//! The command line as users read it: every `--help` page is checked in under `tests/help/`
//! (a change to a flag or its text shows up in review), and the README's exit-code table
//! is held to the codes the binary documents.
//!
//! After a deliberate change: `LIFEBOAT_UPDATE_HELP=1 cargo test --test cli_help`.

mod common;

use std::path::PathBuf;

/// `lifeboat ARGS` with nothing from the environment (help shows variables' values).
fn help_of(path: &[String]) -> String {
    let out = std::process::Command::new(common::lifeboat_bin())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(path)
        .arg("--help")
        .output()
        .expect("run lifeboat --help");
    assert!(out.status.success(), "lifeboat {path:?} --help failed");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// The subcommands a help page lists under "Commands:".
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

fn all_commands() -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(path) = todo.pop() {
        let help = help_of(&path);
        for sub in subcommands(&help) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        out.push((path, help));
    }
    out.sort();
    out
}

fn snapshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/help")
}

#[test]
fn help_pages_match_their_snapshots() {
    let update = std::env::var_os("LIFEBOAT_UPDATE_HELP").is_some();
    let dir = snapshot_dir();
    let mut differ = Vec::new();
    let mut expected_files = Vec::new();
    let commands = all_commands();
    assert!(
        commands.len() > 20,
        "found only {} commands",
        commands.len()
    );
    for (path, help) in commands {
        let name = std::iter::once("lifeboat".to_string())
            .chain(path.iter().cloned())
            .collect::<Vec<_>>()
            .join("-")
            + ".txt";
        let file = dir.join(&name);
        expected_files.push(name.clone());
        if update {
            std::fs::create_dir_all(&dir).expect("mkdir tests/help");
            std::fs::write(&file, &help).expect("write snapshot");
            continue;
        }
        match std::fs::read_to_string(&file) {
            Ok(saved) if saved == help => {}
            Ok(_) => differ.push(format!("{name} differs")),
            Err(_) => differ.push(format!("{name} is missing")),
        }
    }
    // A snapshot of a command that is gone is stale.
    for entry in std::fs::read_dir(&dir).expect("tests/help").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !expected_files.contains(&name) {
            if update {
                std::fs::remove_file(entry.path()).expect("remove stale snapshot");
            } else {
                differ.push(format!("{name} has no command"));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "help pages changed: {differ:?}\nreview them, then run \
         LIFEBOAT_UPDATE_HELP=1 cargo test --test cli_help"
    );
}

/// Every exit code the binary documents is in the README's table, and nothing else is.
#[test]
fn readme_exit_code_table_matches_the_binary() {
    let help = help_of(&[]);
    let line = help
        .lines()
        .find(|l| l.starts_with("Exit codes: "))
        .expect("--help lists the exit codes");
    let from_binary: Vec<(u32, String)> = line
        .trim_start_matches("Exit codes: ")
        .split(", ")
        .map(|item| {
            let (code, what) = item.split_once(' ').expect("CODE meaning");
            (code.parse().expect("a number"), what.to_string())
        })
        .collect();
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("README.md");
    let table: Vec<(u32, String)> = readme
        .lines()
        .skip_while(|l| l.trim() != "## Exit codes")
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let code = cells.get(1)?.parse::<u32>().ok()?;
            Some((code, cells.get(2)?.to_string()))
        })
        .collect();
    let codes = |v: &[(u32, String)]| v.iter().map(|(c, _)| *c).collect::<Vec<_>>();
    assert_eq!(
        codes(&table),
        codes(&from_binary),
        "README table vs `lifeboat --help`"
    );
    for ((code, readme_text), (_, binary_text)) in table.iter().zip(&from_binary) {
        assert!(
            readme_text
                .to_lowercase()
                .contains(&binary_text.to_lowercase()),
            "exit code {code}: the README says {readme_text:?}, the binary {binary_text:?}"
        );
    }
}
