//! The attacker's view of the new sources (files, DuckDB) and of tree restores: forged tree
//! blobs in an unencrypted repository (which authenticates nothing, but must still never make
//! a restore write outside its --output folder), links planted in a restore target or in a
//! backed-up folder, and secrets that must not survive redaction. Every test runs the real
//! binary.

mod common;
use common::attacker::{edit_config, Storage};
use common::*;
use lifeboat::id::Hash;
use serde_json::{json, Value};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The content of every file a forged tree names: found anywhere but in the carrier and the
/// repository, it was written by the restore.
const MARK: &[u8] = b"PWNED-BY-A-FORGED-TREE\n";

fn mark_id() -> String {
    Hash::of(MARK).to_hex()
}

fn file(path: &str) -> Value {
    json!({"path": path, "kind": "file", "mode": 0o644, "mtime_ns": 1_600_000_000_000_000_000i64,
           "size": MARK.len(), "chunks": [mark_id()]})
}

fn dir(path: &str) -> Value {
    json!({"path": path, "kind": "dir", "mode": 0o755, "mtime_ns": 1_600_000_000_000_000_000i64})
}

fn link(path: &str, target: &str) -> Value {
    json!({"path": path, "kind": "symlink", "mode": 0o777, "mtime_ns": 1_600_000_000_000_000_000i64,
           "target": target})
}

/// A forged tree of `entries` in the (unencrypted) repository of `env`: a real folder is
/// backed up whose file `node.bin` holds the tree blob (so the blob is stored and indexed
/// under its id) and `mark.bin` the content of every file; then the manifest is pointed at
/// that blob, with counts that match. The id of the forged backup.
fn forge_tree(env: &Env, entries: &[Value]) -> String {
    let carrier = env.path("carrier");
    std::fs::create_dir_all(&carrier).unwrap();
    std::fs::write(carrier.join("mark.bin"), MARK).unwrap();
    let node = serde_json::to_vec(&json!({ "entries": entries })).unwrap();
    std::fs::write(carrier.join("node.bin"), &node).unwrap();
    let v = env.json(&["backup", s(&carrier), "--no-redact"]);
    let id = v["id"].as_str().unwrap().to_string();
    let store = Storage::local(env, "repo");
    let name = format!("backups/{id}");
    let mut m: Value = serde_json::from_slice(&store.get(&name).unwrap()).unwrap();
    let bytes: u64 = entries
        .iter()
        .map(|e| e["size"].as_u64().unwrap_or(0))
        .sum();
    m["content"]["nodes"] = json!([Hash::of(&node).to_hex()]);
    m["content"]["entries"] = json!(entries.len());
    m["content"]["bytes"] = json!(bytes);
    store.put(&name, &serde_json::to_vec_pretty(&m).unwrap());
    id
}

/// Files (not following links) below `root` holding MARK, except the carrier and the
/// repository.
fn marked_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "carrier" || n == "repo") {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            out.extend(marked_files(&p));
        } else if meta.is_file()
            && std::fs::read(&p).is_ok_and(|d| d.windows(MARK.len()).any(|w| w == MARK))
        {
            out.push(p);
        }
    }
    out
}

/// Names of half-restored leftovers (staging folders, temporary files) directly in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    file_names(dir)
        .into_iter()
        .filter(|n| n.contains(".lifeboat-") && n.ends_with(".tmp"))
        .collect()
}

/// A forged tree whose paths leave the folder, or pass through a link or through something
/// that is not a folder of the tree, is refused (exit 4) naming the path; nothing is written
/// outside --output, and the partly restored staging folder is removed.
#[test]
fn forged_tree_paths_never_reach_outside_the_output_folder() {
    let env = Env::new();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), "precious\n").unwrap();
    let abs = outside.join("abs-pwned");
    let out_s = outside.display().to_string();
    let cases: Vec<(&str, Vec<Value>, &str)> = vec![
        ("dot-dot", vec![dir(""), file("../escape")], "../escape"),
        ("absolute", vec![dir(""), file(s(&abs))], s(&abs)),
        (
            "dot-dot inside",
            vec![dir(""), dir("a"), file("a/../../escape")],
            "a/../../escape",
        ),
        (
            "through a link of the tree",
            vec![dir(""), link("l", &out_s), file("l/pwned")],
            "l/pwned",
        ),
        (
            "a parent the tree never made",
            vec![dir(""), file("nowhere/pwned")],
            "nowhere/pwned",
        ),
        ("no root", vec![file("pwned")], "pwned"),
        (
            "children of a root file",
            vec![file(""), file("child")],
            "child",
        ),
        (
            "children of a root link",
            vec![link("", &out_s), file("pwned")],
            "pwned",
        ),
        ("dot", vec![dir(""), file("./x")], "./x"),
        ("empty part", vec![dir(""), dir("a"), file("a//x")], "a//x"),
        ("trailing slash", vec![dir(""), file("x/")], "x/"),
    ];
    for (what, entries, says) in cases {
        let id = forge_tree(&env, &entries);
        let out = env.path("out");
        let (code, text) = env.run(&["restore", &id, "--output", s(&out)]);
        assert_eq!(code, 4, "{what}: {text}");
        assert!(text.contains(says), "{what}: should name {says:?}: {text}");
        assert!(!out.exists(), "{what}: {} was created", out.display());
        assert_eq!(
            marked_files(env.dir.path()),
            Vec::<PathBuf>::new(),
            "{what}"
        );
        assert_eq!(leftovers(env.dir.path()), Vec::<String>::new(), "{what}");
        assert_eq!(file_names(&outside), vec!["victim"], "{what}");
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "precious\n"
        );
    }
}

/// Entries of a forged tree that clash (a link, then a folder or a file of the same name;
/// a folder, then a link of its name) never write through the link.
#[test]
fn forged_tree_clashes_never_write_through_a_link() {
    let env = Env::new();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), "precious\n").unwrap();
    let out_s = outside.display().to_string();
    let victim_s = outside.join("victim").display().to_string();
    let cases: Vec<(&str, Vec<Value>)> = vec![
        (
            "link, then a folder of its name",
            vec![dir(""), link("l", &out_s), dir("l"), file("l/pwned")],
        ),
        (
            "folder, then a link of its name",
            vec![dir(""), dir("d"), link("d", &out_s), file("d/pwned")],
        ),
        (
            "a folder, then a file of its name",
            vec![dir(""), dir("d"), file("d")],
        ),
    ];
    for (what, entries) in cases {
        let id = forge_tree(&env, &entries);
        let out = env.path("out");
        let (code, text) = env.run(&["restore", &id, "--output", s(&out)]);
        assert_ne!(code, 0, "{what}: {text}");
        assert!(!out.exists(), "{what}");
        assert_eq!(
            marked_files(env.dir.path()),
            Vec::<PathBuf>::new(),
            "{what}"
        );
        assert_eq!(leftovers(env.dir.path()), Vec::<String>::new(), "{what}");
        assert_eq!(file_names(&outside), vec!["victim"], "{what}");
    }
    // A link to a file outside, then a file of the link's name: the link is replaced, the
    // file it pointed to is not written.
    let id = forge_tree(&env, &[dir(""), link("l", &victim_s), file("l")]);
    let out = env.path("out");
    env.json(&["restore", &id, "--output", s(&out)]);
    assert_eq!(std::fs::read(out.join("l")).unwrap(), MARK);
    assert!(std::fs::symlink_metadata(out.join("l")).unwrap().is_file());
    assert_eq!(
        std::fs::read_to_string(outside.join("victim")).unwrap(),
        "precious\n"
    );
}

/// `path` and `path_hex` of an entry disagree: the bytes in `path_hex` are the name, and the
/// refusal names those bytes, not the harmless-looking text beside them.
#[test]
fn a_name_in_path_hex_is_the_one_checked_and_shown() {
    let env = Env::new();
    let mut sneaky = file("innocent.txt");
    sneaky["path_hex"] = json!(hex::encode(b"../escape"));
    let id = forge_tree(&env, &[dir(""), sneaky]);
    let out = env.path("out");
    let (code, text) = env.run(&["restore", &id, "--output", s(&out)]);
    assert_eq!(code, 4, "{text}");
    assert_eq!(marked_files(env.dir.path()), Vec::<PathBuf>::new());
    assert!(
        text.contains("../escape"),
        "the refusal should name the path the restore would have written, not the text \
         `path` claims: {text}"
    );
}

/// A folder that exists (`--yes`) and holds links planted by someone else: a folder of the
/// tree is never created through a link, a file never written through one (the link itself
/// is replaced), and a hard link to a file elsewhere is replaced, not written into.
#[test]
fn links_planted_in_an_existing_target_are_never_followed() {
    let env = Env::new();
    let src = env.path("myapp");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/file"), "from the backup\n").unwrap();
    std::fs::write(src.join("f"), "from the backup\n").unwrap();
    std::fs::write(src.join("h"), "from the backup\n").unwrap();
    let id = env.json(&["backup", s(&src)])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let outside = env.path("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), "precious\n").unwrap();
    std::fs::write(outside.join("hard"), "precious\n").unwrap();

    // out/sub -> elsewhere: the tree's folder `sub` is refused.
    let out = env.path("out");
    std::fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("sub")).unwrap();
    let (code, text) = env.run(&["restore", &id, "--output", s(&out), "--yes"]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("sub"), "{text}");
    assert_eq!(file_names(&outside), vec!["hard", "victim"]);

    // out/f -> elsewhere/victim and out/h a hard link of elsewhere/hard: both replaced.
    let out2 = env.path("out2");
    std::fs::create_dir_all(&out2).unwrap();
    std::os::unix::fs::symlink(outside.join("victim"), out2.join("f")).unwrap();
    std::fs::hard_link(outside.join("hard"), out2.join("h")).unwrap();
    env.json(&["restore", &id, "--output", s(&out2), "--yes"]);
    for name in ["victim", "hard"] {
        assert_eq!(
            std::fs::read_to_string(outside.join(name)).unwrap(),
            "precious\n",
            "{name} was written through a link"
        );
    }
    assert!(std::fs::symlink_metadata(out2.join("f")).unwrap().is_file());
    assert_eq!(
        std::fs::read_to_string(out2.join("h")).unwrap(),
        "from the backup\n"
    );

    // --output itself a link to a folder elsewhere: refused, nothing written there.
    let out3 = env.path("out3");
    std::os::unix::fs::symlink(&outside, &out3).unwrap();
    let (code, text) = env.run(&["restore", &id, "--output", s(&out3), "--yes"]);
    assert_ne!(code, 0, "{text}");
    assert_eq!(file_names(&outside), vec!["hard", "victim"]);
}

/// A file restored as root must not become a setuid or setgid program owned by root: the
/// restore does not put owners back, so a bit that meant "run as the app user" would now
/// mean "run as root" (and in an unencrypted repository anyone who can write the bucket
/// chooses the bits and the content).
#[test]
fn a_restore_never_creates_setuid_or_setgid_files() {
    let env = Env::new();
    let id = forge_tree(&env, &{
        let mut suid = file("suid");
        suid["mode"] = json!(0o4755);
        let mut sgid = file("sgid");
        sgid["mode"] = json!(0o2755);
        vec![dir(""), sgid, suid]
    });
    let out = env.path("out");
    env.json(&["restore", &id, "--output", s(&out)]);
    for name in ["suid", "sgid"] {
        let mode = std::fs::metadata(out.join(name)).unwrap().mode() & 0o7777;
        assert_eq!(
            mode & 0o6000,
            0,
            "{name} restored with mode {mode:o} (owner uid {})",
            std::fs::metadata(out.join(name)).unwrap().uid()
        );
        assert_eq!(mode & 0o777, 0o755, "{name}: the permission bits are kept");
    }
}

/// A single file restored to a new --output (no --yes): a file that appears at that name
/// while the restore runs is never replaced (the new-file restore of an image uses link(2)
/// for that; a tree whose root is a file must not be weaker).
#[test]
fn a_file_that_appears_during_a_restore_is_not_replaced() {
    let env = Env::new();
    let big = env.path("big.bin");
    std::fs::write(&big, common::tree::noise(96 << 20, 3)).unwrap();
    let id = env.json(&["backup", s(&big), "--kind", "files"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.path("restored.bin");
    let mut child = env
        .std_cmd()
        .args(["restore", &id, "--output", s(&out)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // As soon as the restore writes its temporary file, someone creates the output.
    let started = wait_until(std::time::Duration::from_secs(60), || {
        !leftovers(env.dir.path()).is_empty()
    });
    assert!(started, "the restore never started writing");
    std::fs::write(&out, "someone else's file\n").unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap_or_default(),
        "someone else's file\n",
        "the restore (exit {status}) replaced a file it had not been allowed to: {err}"
    );
    assert!(!status.success(), "{err}");
    assert_eq!(leftovers(env.dir.path()), Vec::<String>::new());
}

/// A backed-up folder with links that loop, point at themselves or at /etc, a FIFO and a
/// socket: links are stored as links (never followed), special files skipped, nothing hangs.
#[test]
fn links_loops_fifos_and_sockets_in_a_folder_are_not_followed() {
    let env = Env::new();
    let src = env.path("myapp");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("app.toml"), "a = 1\n").unwrap();
    std::os::unix::fs::symlink("b", src.join("a")).unwrap();
    std::os::unix::fs::symlink("a", src.join("b")).unwrap();
    std::os::unix::fs::symlink("self", src.join("self")).unwrap();
    std::os::unix::fs::symlink("..", src.join("sub/up")).unwrap();
    std::os::unix::fs::symlink("/etc", src.join("etc")).unwrap();
    let fifo = src.join("pipe");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    let out = env
        .cmd()
        .args(["backup", s(&src), "--json"])
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    let out = Out::of(out).ok("backup of a folder with loops and a FIFO");
    let id = out.json()["id"].as_str().unwrap().to_string();
    let m = env.json(&["show", &id]);
    assert_eq!(m["files"]["files"], 1, "{m}");
    assert_eq!(m["files"]["symlinks"], 5, "{m}");
    assert_eq!(m["files"]["bytes"], 6, "nothing of /etc was read: {m}");
    let restored = env.path("out");
    env.json(&["restore", &id, "--output", s(&restored)]);
    assert_eq!(
        std::fs::read_link(restored.join("etc")).unwrap(),
        Path::new("/etc")
    );
    assert!(!restored.join("pipe").exists() && !restored.join("sock").exists());
}

/// Back up `src` 15 times while a thread swaps each `src/xNNN` with `swap/yNNN` (a link to
/// something outside `src`) over and over (`RENAME_EXCHANGE`): every file of `src` holds
/// "harmless\n", so a backup whose bytes are not 9 per file read something else.
fn back_up_while_swapping(env: &Env, src: &Path, swap: &Path, n: usize) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (src, swap, stop) = (src.to_path_buf(), swap.to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..n {
                    rustix::fs::renameat_with(
                        rustix::fs::CWD,
                        src.join(format!("x{i:03}")),
                        rustix::fs::CWD,
                        swap.join(format!("y{i:03}")),
                        rustix::fs::RenameFlags::EXCHANGE,
                    )
                    .unwrap();
                }
            }
        })
    };
    let mut leaked = None;
    let mut refused = 0;
    for _ in 0..15 {
        let (code, v, err) = env.run_json(&["backup", s(src), "--no-redact"]);
        if code != 0 {
            // Refusing a name that changed under the walk is fine; following the link is not.
            assert_eq!(code, 5, "{err}");
            assert!(err.contains("changed while it was backed up"), "{err}");
            refused += 1;
            continue;
        }
        let m = env.json(&["show", v["id"].as_str().unwrap()]);
        let (files, bytes) = (num(&m, "files.files"), num(&m, "files.bytes"));
        if bytes != files * "harmless\n".len() as u64 {
            leaked = Some(m);
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(
        leaked.is_none(),
        "a backup stored what a link swapped in during the walk points to ({refused} refused): {}",
        leaked.unwrap()
    );
}

/// A file swapped for a link to a file outside the folder between the walk's look at it and
/// its open: the backup must not store the file the link points to (the open must not follow
/// a link: `O_NOFOLLOW`, and it must be the same file the walk saw). Someone who can write
/// the folder (an application's own config folder) could otherwise have a root backup copy
/// /etc/shadow into the repository, where they may be able to read it.
#[test]
fn a_file_swapped_for_a_link_during_the_walk_is_not_followed() {
    const N: usize = 300;
    let env = Env::new();
    let (src, swap) = (env.path("myapp"), env.path("swap"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&swap).unwrap();
    let secret = env.path("shadow");
    std::fs::write(&secret, "TOP-SECRET-OF-ANOTHER-USER\n").unwrap();
    for i in 0..N {
        std::fs::write(src.join(format!("x{i:03}")), "harmless\n").unwrap();
        std::os::unix::fs::symlink(&secret, swap.join(format!("y{i:03}"))).unwrap();
    }
    back_up_while_swapping(&env, &src, &swap, N);
}

/// The same with folders: `x007/f` is a file, and `x007` is swapped for a link to a folder
/// outside holding its own `f`. Reading `x007` and then opening `x007/f` by path would go
/// through the link.
#[test]
fn a_folder_swapped_for_a_link_during_the_walk_is_not_followed() {
    const N: usize = 200;
    let env = Env::new();
    let (src, swap, etc) = (env.path("myapp"), env.path("swap"), env.path("etc"));
    for d in [&src, &swap, &etc] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(etc.join("f"), "TOP-SECRET-OF-ANOTHER-USER\n").unwrap();
    for i in 0..N {
        std::fs::create_dir_all(src.join(format!("x{i:03}"))).unwrap();
        std::fs::write(src.join(format!("x{i:03}/f")), "harmless\n").unwrap();
        std::os::unix::fs::symlink(&etc, swap.join(format!("y{i:03}"))).unwrap();
    }
    back_up_while_swapping(&env, &src, &swap, N);
}

/// A folder nested as deep as paths allow (someone who can write the folder makes it): the
/// backup finishes or fails with an error, it does not crash.
#[test]
fn a_very_deep_folder_does_not_crash_the_backup() {
    let env = Env::new();
    let src = env.path("deep");
    std::fs::create_dir_all(&src).unwrap();
    let room = 4000 - src.as_os_str().len();
    let depth = room / 2;
    let mut fd = rustix::fs::open(
        &src,
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    for _ in 0..depth {
        rustix::fs::mkdirat(&fd, "d", rustix::fs::Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(
            &fd,
            "d",
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
    }
    drop(fd);
    let (code, text) = env.run(&["backup", s(&src)]);
    assert!(
        code == 0 || (2..=10).contains(&code),
        "a backup of a folder {depth} deep crashed (exit {code}): {}",
        &text[..text.len().min(2000)]
    );
}

/// Back up `src` with redaction on: exit code and output.
fn back_up_redacted(env: &Env, src: &Path) -> (i32, String) {
    env.run(&["backup", s(src)])
}

/// Every byte of the files a backup of `src` restores (the backup must succeed).
fn restored_bytes(env: &Env, src: &Path) -> Vec<u8> {
    let id = env.json(&["backup", s(src)])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.path(&format!("restored-{id}"));
    env.json(&["restore", &id, "--output", s(&out)]);
    let mut all = Vec::new();
    for p in walk_files(&out) {
        all.extend(std::fs::read(p).unwrap());
    }
    all.extend(serde_json::to_vec(&env.json(&["show", &id])).unwrap());
    all
}

fn holds(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A config file of a redacted format larger than the redaction reads whole (16 MiB) was
/// stored as it was, secrets and all: it must stop the backup like any file that cannot be
/// redacted.
#[test]
fn a_large_config_file_is_not_stored_unredacted() {
    let env = Env::new();
    let src = env.path("myapp");
    std::fs::create_dir_all(&src).unwrap();
    let mut big = String::from("{\"password\": \"hunter2-in-a-big-file\", \"blob\": \"");
    big.push_str(&"x".repeat(17 << 20));
    big.push_str("\"}\n");
    std::fs::write(src.join("settings.json"), big).unwrap();
    let (code, text) = back_up_redacted(&env, &src);
    assert_eq!(code, 5, "{text}");
    assert!(
        text.contains("settings.json") && text.contains("could not be redacted"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

/// An unquoted `.env` value continued with `\` (a shell-sourced file reads `hun` and `ter2`
/// as one value): redacting the first line only stored the rest of the secret.
#[test]
fn an_env_value_continued_with_a_backslash_is_not_half_redacted() {
    let env = Env::new();
    let src = env.path("myapp");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join(".env"),
        "DB_USER=app\nDB_PASSWORD=first-half-\\\nSECONDHALFOFTHEPASSWORD\n",
    )
    .unwrap();
    let (code, text) = back_up_redacted(&env, &src);
    assert_eq!(code, 5, "{text}");
    assert!(text.contains(".env") && text.contains("line 2"), "{text}");
    assert!(!text.contains("SECONDHALF"), "{text}");
    // An escaped backslash at the end is a value that ends in a backslash: redacted whole.
    std::fs::write(src.join(".env"), "DB_PASSWORD=ends-in-\\\\\nOTHER=1\n").unwrap();
    let all = restored_bytes(&env, &src);
    assert!(
        !holds(&all, "ends-in-"),
        "{}",
        String::from_utf8_lossy(&all)
    );
}

/// Secrets in commented-out lines (an old password kept "for reference", a line disabled
/// while testing) of the line-based formats: the `name=value` pairs and URL passwords of a
/// comment are redacted, and listed by line; the prose around them is kept. (YAML `# key:
/// value` and JSON `// "key": …` comments are not read: prose uses colons too; CONFIG_FILES.md
/// says so.)
#[test]
fn commented_out_assignments_are_redacted() {
    let env = Env::new();
    let src = env.path("myapp");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join(".env"),
        "# DB_PASSWORD=OLD-ENV-SECRET (rotated in May)\nDB_PASSWORD=new\n# old: postgres://app:OLD-DSN-SECRET@db/app\n",
    )
    .unwrap();
    std::fs::write(src.join("app.ini"), ";password=OLD-INI-SECRET\na=1\n").unwrap();
    let all = restored_bytes(&env, &src);
    for secret in ["OLD-ENV-SECRET", "OLD-DSN-SECRET", "OLD-INI-SECRET"] {
        assert!(!holds(&all, secret), "{secret} was stored");
    }
    assert!(
        holds(&all, "(rotated in May)"),
        "the comment's prose is kept"
    );
    assert!(
        holds(&all, "(comment, line 1)"),
        "the comment is listed by line"
    );
}

/// A password that starts with `$` and is otherwise letters, digits and `_` is taken for a
/// variable reference (`$NAME`) and kept, also in formats that expand no variables (JSON,
/// TOML) and in single quotes (`.env`), where it can only be the password itself.
#[test]
fn a_dollar_password_is_redacted_where_nothing_expands_it() {
    let env = Env::new();
    let src = env.path("myapp");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.json"), "{\"password\": \"$JsonSup3rSecret\"}\n").unwrap();
    std::fs::write(src.join("a.toml"), "password = \"$TomlSup3rSecret\"\n").unwrap();
    std::fs::write(src.join(".env"), "DB_PASSWORD='$EnvSup3rSecret'\n").unwrap();
    let all = restored_bytes(&env, &src);
    for secret in ["JsonSup3rSecret", "TomlSup3rSecret", "EnvSup3rSecret"] {
        assert!(!holds(&all, secret), "{secret} was stored");
    }
}

/// Under a secret key whose value is a mapping, the values are redacted and the listing names
/// the secret key only: the mapping's keys (`api_tokens: {"sk-live-…": "ci"}`), which may be
/// secrets themselves, never reach the manifest (printed by `show` and `restore`). The keys
/// stay in the stored file (only values are replaced; docs/CONFIG_FILES.md says so).
#[test]
fn keys_of_a_secret_mapping_are_not_listed() {
    let env = Env::new();
    let src = env.path("myapp");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("auth.json"),
        "{\"api_tokens\": {\"sk-live-51HxQTOKENINAKEY\": \"ci-bot\"}}\n",
    )
    .unwrap();
    let id = env.json(&["backup", s(&src)])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let m = env.json(&["show", &id]);
    assert!(!m.to_string().contains("sk-live-51HxQTOKENINAKEY"), "{m}");
    assert_eq!(
        m["files"]["redacted"],
        serde_json::json!([{"path": "auth.json", "keys": ["api_tokens"]}]),
        "{m}"
    );
    let (code, said) = env.run(&["restore", &id, "--output", s(&env.path("out"))]);
    assert_eq!(code, 0, "{said}");
    assert!(!said.contains("sk-live"), "{said}");
    assert!(!holds(
        &std::fs::read(env.path("out/auth.json")).unwrap(),
        "ci-bot"
    ));
}

fn duckdb_cli() -> PathBuf {
    std::env::var_os("LIFEBOAT_DUCKDB")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/duckdb"))
}

fn duckdb_sql(db: &Path, statements: &str) -> String {
    let out = std::process::Command::new(duckdb_cli())
        .arg(db)
        .args(["-csv", "-noheader", "-c", statements])
        .output()
        .expect("run duckdb");
    assert!(
        out.status.success(),
        "duckdb {statements}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The DuckDB CLI reads lifeboat's queries on its input, where a line that starts with `.`
/// is a shell command (`.shell`, `.system`) when no statement is open. A database file name
/// and table and schema names with quotes, semicolons, newlines and dot commands in them
/// (whoever writes the database chooses them) are data in those queries, never commands.
#[test]
fn duckdb_names_with_quotes_newlines_and_dot_commands_are_only_names() {
    let env = Env::new();
    // Relative: lifeboat (and so DuckDB) runs in the test's folder; names hold no `/`.
    let pwned = env.path("PWNED");
    let shell = ".shell touch PWNED".to_string();
    let dir = env.path(&format!("we'ird; \"dir\"\n{shell}\n"));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join(format!("a'b\"; c\n{shell}\n.duckdb"));
    let ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let table = format!("t'; DROP TABLE keep; --\n{shell}\n\"x");
    let schema = format!("s\"; \n{shell}\n");
    duckdb_sql(
        &db,
        &format!(
            "CREATE TABLE keep AS SELECT 1 AS a; CREATE SCHEMA {s}; \
             CREATE TABLE {s}.{t} AS SELECT range AS a FROM range(7); CHECKPOINT;",
            s = ident(&schema),
            t = ident(&table)
        ),
    );
    let out = Out::of(
        env.std_cmd()
            .env("LIFEBOAT_DUCKDB", duckdb_cli())
            .args(["backup", db.to_str().unwrap(), "--json"])
            .output()
            .unwrap(),
    )
    .ok("backup of a DuckDB database with odd names");
    assert!(!pwned.exists(), "a dot command in a name was run");
    let id = out.json()["id"].as_str().unwrap().to_string();
    let m = env.json(&["show", &id]);
    let tables = m["duckdb"]["tables"].as_object().unwrap();
    assert_eq!(tables.len(), 2, "{m}");
    assert!(tables.values().any(|n| n == 7), "{m}");
    assert_eq!(duckdb_sql(&db, "SELECT count(*) FROM keep"), "1");
    let restored = env.path("restored.duckdb");
    Out::of(
        env.std_cmd()
            .env("LIFEBOAT_DUCKDB", duckdb_cli())
            .args(["restore", &id, "--output", s(&restored), "--json"])
            .output()
            .unwrap(),
    )
    .ok("restore");
    let verified = Out::of(
        env.std_cmd()
            .env("LIFEBOAT_DUCKDB", duckdb_cli())
            .args(["verify", &id, "--json"])
            .output()
            .unwrap(),
    )
    .ok("verify");
    assert_eq!(verified.json()["ok"], true, "{}", verified.text());
    assert!(!pwned.exists(), "a dot command in a name was run");
}

/// Names and sizes of the files under `dir`: what a refused command must leave as it was.
fn data_listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut v: Vec<_> = walk_files(dir)
        .into_iter()
        .map(|p| {
            let n = std::fs::metadata(&p).unwrap().len();
            (p, n)
        })
        .collect();
    v.sort();
    v
}

/// A tree backup that is damaged or forged (its nodes missing or not ids, a node that is not
/// a tree blob, a chunk id that is not an id, a content kind this version does not know) hides
/// which blobs it needs: prune, with garbage to delete, deletes nothing on its account; sync
/// and repair delete nothing either. A sound tree keeps every blob it needs through a prune
/// that repacks everything.
#[test]
fn prune_sync_and_repair_delete_nothing_on_account_of_a_damaged_tree() {
    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit)> = vec![
        ("nodes missing", |m| {
            m["content"].as_object_mut().unwrap().remove("nodes");
        }),
        ("a node id that is not an id", |m| {
            m["content"]["nodes"] = json!(["zz"]);
        }),
        ("a node that is not a tree blob", |m| {
            m["content"]["nodes"] = json!([mark_id()]);
        }),
        ("a content kind from a newer Lifeboat", |m| {
            m["content"]["kind"] = json!("hologram");
        }),
        ("a chunk id that is not an id", |_| {}),
    ];
    for (what, edit) in cases {
        let env = Env::new();
        // Garbage: the first backup of `old`, forgotten.
        let old = env.path("old");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("u.bin"), common::tree::noise(300_000, 1)).unwrap();
        env.json(&["backup", s(&old)]);
        std::fs::write(old.join("u.bin"), common::tree::noise(300_000, 2)).unwrap();
        env.json(&["backup", s(&old)]);
        env.json(&[
            "forget",
            "--keep-last",
            "1",
            "--source",
            s(&std::fs::canonicalize(&old).unwrap()),
        ]);
        let dry = env.json(&["prune", "--dry-run", "--max-unused", "0%"]);
        assert!(
            num(&dry, "unused_packs") >= 1,
            "{what}: no garbage to delete: {dry}"
        );
        let mut bad = file("f");
        if what == "a chunk id that is not an id" {
            bad["chunks"] = json!(["not-an-id"]);
        }
        let id = forge_tree(&env, &[dir(""), bad]);
        let store = Storage::local(&env, "repo");
        let name = format!("backups/{id}");
        let mut m: Value = serde_json::from_slice(&store.get(&name).unwrap()).unwrap();
        edit(&mut m);
        store.put(&name, &serde_json::to_vec_pretty(&m).unwrap());
        let data = env.repo().join("data");
        let before = data_listing(&data);
        let (code, text) = env.run(&["prune", "--max-unused", "0%"]);
        assert_ne!(code, 0, "{what}: prune went ahead: {text}");
        assert_eq!(data_listing(&data), before, "{what}: prune deleted data");
        let (code, text) = env.run(&["repo", "repair"]);
        assert_eq!(
            data_listing(&data),
            before,
            "{what}: repair ({code}) changed data: {text}"
        );
        let copy = env.path("copy");
        let (_, text) = env.run(&["sync", "--target", s(&copy)]);
        assert_eq!(
            data_listing(&data),
            before,
            "{what}: sync changed data: {text}"
        );
    }
    // The same with a sound tree: a prune that repacks everything keeps what it needs.
    let env = Env::new();
    let old = env.path("old");
    std::fs::create_dir_all(old.join("sub")).unwrap();
    std::fs::write(old.join("sub/u.bin"), common::tree::noise(3 << 20, 1)).unwrap();
    env.json(&["backup", s(&old)]);
    std::fs::write(old.join("sub/u.bin"), common::tree::noise(3 << 20, 2)).unwrap();
    let keep = env.json(&["backup", s(&old)])["id"]
        .as_str()
        .unwrap()
        .to_string();
    env.json(&[
        "forget",
        "--keep-last",
        "1",
        "--source",
        s(&std::fs::canonicalize(&old).unwrap()),
        "--prune",
        "--max-unused",
        "0%",
    ]);
    let verified = env.json(&["verify", &keep]);
    assert_eq!(verified["ok"], true, "{verified}");
}

/// Someone without the keys removes the `manifest-2` feature from an encrypted repository's
/// config (so that backups of files are refused, or an older Lifeboat misreads format-2
/// manifests): the config's MAC gives it away, on this machine and on a fresh one.
#[test]
fn removing_a_feature_from_an_encrypted_config_is_refused() {
    let env = Env::new();
    let pw = [("LIFEBOAT_PASSWORD", "an owner's passphrase")];
    let run = |home: &str, args: &[&str]| {
        let mut c = env.std_cmd();
        c.env("HOME", env.path(home)).envs(pw).args(args);
        Out::of(c.output().unwrap())
    };
    let mut init = vec!["repo", "init", "--encrypt"];
    init.extend(FAST_KDF);
    run("home", &init).ok("init");
    let src = env.path("myapp");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.toml"), "a = 1\n").unwrap();
    run("home", &["backup", s(&src)]).ok("backup");
    let store = Storage::local(&env, "repo");
    let before = store.snapshot();
    edit_config(&store, |v| {
        let f = v["features"].as_array_mut().unwrap();
        assert!(f.iter().any(|x| x == "manifest-2"), "{v}");
        f.retain(|x| x != "manifest-2");
    });
    for home in ["home", "fresh-home"] {
        for args in [vec!["list"], vec!["backup", s(&src)]] {
            let o = run(home, &args);
            assert!(
                o.code == 4 || o.code == 9,
                "{home}: {args:?} accepted a config without its feature: {}",
                o.text()
            );
        }
    }
    let after = store.snapshot();
    let changed: Vec<&String> = after
        .keys()
        .filter(|k| *k != "config" && before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "objects written: {changed:?}");
}

/// `restore --yes` into a folder someone else can write, who swaps one of its folders for a
/// link to a folder elsewhere while the restore runs: the restore checks each folder (not a
/// link) and then writes its files by path, so a swap between the check and the write puts
/// files (and their temporary files) elsewhere.
#[test]
fn a_folder_swapped_for_a_link_during_a_restore_is_not_followed() {
    const N: usize = 200;
    let env = Env::new();
    let src = env.path("myapp");
    for i in 0..N {
        std::fs::create_dir_all(src.join(format!("x{i:03}"))).unwrap();
        std::fs::write(src.join(format!("x{i:03}/f")), "from the backup\n").unwrap();
    }
    let id = env.json(&["backup", s(&src)])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (out, swap, elsewhere) = (env.path("out"), env.path("swap"), env.path("elsewhere"));
    for d in [&swap, &elsewhere] {
        std::fs::create_dir_all(d).unwrap();
    }
    for i in 0..N {
        std::fs::create_dir_all(out.join(format!("x{i:03}"))).unwrap();
        std::os::unix::fs::symlink(&elsewhere, swap.join(format!("y{i:03}"))).unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (out, swap, stop) = (out.clone(), swap.clone(), stop.clone());
        std::thread::spawn(move || {
            // One folder only: a restore stops at the first folder it finds to be a link.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    out.join("x100"),
                    rustix::fs::CWD,
                    swap.join("y100"),
                    rustix::fs::RenameFlags::EXCHANGE,
                );
            }
        })
    };
    let mut written = Vec::new();
    for _ in 0..50 {
        env.run(&["restore", &id, "--output", s(&out), "--yes"]);
        written = file_names(&elsewhere);
        if !written.is_empty() {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
    assert!(
        written.is_empty(),
        "the restore wrote into a folder outside --output: {written:?}"
    );
}
