//! A throwaway PostgreSQL cluster for restore drills: `initdb` in a private temporary folder,
//! started on a Unix socket in that folder only (no TCP port), stopped and deleted on drop.
//!
//! PostgreSQL refuses to run as root: when Lifeboat runs as root (a system cron job), the
//! cluster runs as the `postgres` system user that the distribution's packages create.

use super::conn::PgTarget;
use super::tools;
use crate::error::{Error, Result};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Cluster {
    dir: super::WorkDir,
    bin: PathBuf,
    /// The user the server runs as (uid, gid), when not this process's.
    run_as: Option<(u32, u32)>,
    server: Option<tools::Guarded>,
    port: u16,
}

impl Cluster {
    /// Create and start a cluster of major version `major` (or newer, when that is what is
    /// installed).
    pub fn start(major: u32) -> Result<Cluster> {
        let mut cluster = Cluster::prepare(major, "initdb", false)?;
        let data = cluster.data();
        crate::storage::local::create_private_dir(&data)?;
        if let Some((uid, gid)) = cluster.run_as {
            chown_tree(&data, uid, gid)?;
        }
        cluster.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
        )?;
        cluster.launch("", &[])?;
        Ok(cluster)
    }

    /// The folder, the server programs of major version `major` (`program` must be among
    /// them) and the user to run them as, without a data directory yet (`data()`, to be
    /// created, e.g. by a restore, before [`Cluster::launch`]).
    /// `exact`: only that major version will do (a restored data directory).
    pub fn prepare(major: u32, program: &str, exact: bool) -> Result<Cluster> {
        let found = if exact {
            tools::find_exact(program, major)
        } else {
            tools::find(program, Some(major))
        };
        let program_found = found.map_err(|e| {
            if exact {
                return e; // says which version to install
            }
            Error::usage(format!(
                "a drill without --drill-server starts a throwaway PostgreSQL {major} cluster, \
                 which needs {program}: {e}"
            ))
            .hint("install the PostgreSQL server package (Debian: apt-get install postgresql), or give --drill-server postgres://USER@HOST/ (a server where Lifeboat may create and drop a database)")
        })?;
        let bin = program_found
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let dir = super::work_dir("drill-cluster")?;
        // SAFETY: geteuid has no preconditions.
        let run_as = if unsafe { libc::geteuid() } == 0 {
            let (uid, gid) = system_user("postgres").ok_or_else(|| {
                Error::usage(
                    "PostgreSQL does not run as root, and there is no `postgres` user to run the \
                     drill's throwaway cluster as",
                )
                .hint("run lifeboat as another user, create the postgres user, or give --drill-server")
            })?;
            Some((uid, gid))
        } else {
            None
        };
        // The folder stays Lifeboat's (the server's user may pass through it, not rename
        // what is in it: the data directory is built and handed over here); the socket
        // gets a folder of its own that the server's user owns.
        let sock = dir.path().join("sock");
        crate::storage::local::create_private_dir(&sock)?;
        if let Some((uid, gid)) = run_as {
            std::fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o711),
            )
            .map_err(|e| Error::io("cannot set the mode of", dir.path(), e))?;
            chown_tree(&sock, uid, gid)?;
        }
        Ok(Cluster {
            dir,
            bin,
            run_as,
            server: None,
            port: free_port(),
        })
    }

    /// The folder of the server's socket.
    fn sock(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// Start the server on `data()`, reachable only through a socket in the private
    /// folder, with `extra` settings after Lifeboat's; wait until it accepts connections.
    /// `settings` are given on the server's command line (`-c name=value`), where they win
    /// over every configuration file the data directory brings.
    pub fn launch(&mut self, extra: &str, settings: &[(&str, String)]) -> Result<()> {
        let data = self.data();
        let conf = format!(
            "listen_addresses = ''\nport = {}\nunix_socket_directories = {}\n\
             unix_socket_permissions = 0700\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\nmax_wal_size = 4GB\n{extra}",
            self.port,
            quote_setting(&self.sock().display().to_string())
        );
        append_conf(&data.join("postgresql.auto.conf"), &conf)?;
        self.hand_over_data()?;
        let cluster = self;
        // The server runs as this process's child (not daemonized by pg_ctl), in a process
        // group the watchdog kills if Lifeboat is killed: a killed drill leaves no server.
        let log_path = cluster.dir.path().join("server.log");
        let log = super::private_file(&log_path)?;
        let log_err = log
            .try_clone()
            .map_err(|e| Error::io("cannot open", &log_path, e))?;
        let postgres = cluster.bin.join("postgres");
        let mut cmd = cluster.server_program(&postgres);
        for (k, v) in settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.arg("-D")
            .arg(&data)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        cluster.server = Some(tools::Guarded::spawn(&mut cmd, &postgres)?);
        cluster.wait_ready(&data)
    }

    /// Give the data directory to the server's user (when not this process's), after
    /// everything in it is written.
    pub fn hand_over_data(&self) -> Result<()> {
        match self.run_as {
            Some((uid, gid)) => chown_tree(&self.data(), uid, gid),
            None => Ok(()),
        }
    }

    /// Whether the server is still running.
    pub fn running(&mut self) -> bool {
        self.server
            .as_mut()
            .is_some_and(|s| matches!(s.try_wait(), Ok(None)))
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let mut last: Vec<&str> = log.lines().rev().take(lines).collect();
        last.reverse();
        last.join(" / ")
    }

    /// The private folder the cluster lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The user the server runs as, when not this process's.
    pub fn run_as(&self) -> Option<(u32, u32)> {
        self.run_as
    }

    /// The server programs' folder.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Wait until the postmaster says it is ready (the status line of `postmaster.pid`, what
    /// `pg_ctl -w` reads), or fail with the end of its log.
    fn wait_ready(&mut self, data: &Path) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            crate::interrupt::check()?;
            let status = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
            if status.lines().nth(7).is_some_and(|l| l.trim() == "ready") {
                return Ok(());
            }
            let exited = match self.server.as_mut() {
                Some(s) => s
                    .try_wait()
                    .map_err(|e| Error::io("cannot wait for", Path::new("postgres"), e))?
                    .is_some(),
                None => true,
            };
            if exited || std::time::Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                return Err(Error::source(format!(
                    "the drill's throwaway PostgreSQL server did not start: {}",
                    log.lines().rev().take(8).collect::<Vec<_>>().join(" / ")
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The URI of database `db` on this cluster (its socket, user postgres).
    pub fn target(&self, db: &str) -> Result<PgTarget> {
        PgTarget::parse(&format!(
            "postgresql:///{db}?host={}&port={}&user=postgres",
            self.sock().display(),
            self.port
        ))
    }

    /// The URI of database `db` on this cluster as role `user`.
    pub fn target_as(&self, db: &str, user: &str) -> Result<PgTarget> {
        let mut u = url::Url::parse("postgresql://localhost/")
            .map_err(|e| Error::internal(e.to_string()))?;
        u.set_path(db);
        u.query_pairs_mut()
            .append_pair("host", &self.sock().display().to_string())
            .append_pair("port", &self.port.to_string())
            .append_pair("user", user);
        PgTarget::parse(&u.to_string().replacen("//localhost/", "///", 1))
    }

    /// A server program, run in the cluster's folder as the server's user, with none of
    /// Lifeboat's environment (a passphrase, cloud keys): the server runs what the
    /// backed-up settings say.
    fn server_program(&self, path: &Path) -> Command {
        let mut cmd = Command::new(path);
        cmd.stdin(Stdio::null()).current_dir(self.dir.path());
        clean_env(&mut cmd, self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<()> {
        let path = self.bin.join(program);
        let mut cmd = self.server_program(&path);
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
        let out = cmd
            .output()
            .map_err(|e| Error::io("cannot run", &path, e))?;
        if !out.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            return Err(Error::source(format!(
                "{program} of the drill's throwaway cluster failed: {} {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                log.lines().rev().take(8).collect::<Vec<_>>().join(" / ")
            )));
        }
        Ok(())
    }
}

impl Drop for Cluster {
    /// Immediate shutdown (SIGQUIT: nothing of a throwaway cluster needs saving), then the
    /// group is killed if anything is left.
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(server.child.id() as i32, libc::SIGQUIT) };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if !matches!(server.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// A value for a PostgreSQL settings file, quoted (`\\` escapes, `''`).
pub fn quote_setting(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// Append `text` to a data directory's `postgresql.auto.conf` (or another settings file)
/// that a backup brought: a link there is refused, never followed (it could name any file
/// the restoring user may write).
pub fn append_conf(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io("cannot write", path, e))?;
    let meta = f
        .metadata()
        .map_err(|e| Error::io("cannot read", path, e))?;
    if !meta.is_file() {
        return Err(Error::integrity(format!(
            "{} is not a plain file",
            path.display()
        )));
    }
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("cannot write", path, e))
}

/// The value of setting `name` as the server would start with it on `data`
/// (`postgres -C`), run as the server's user.
pub fn effective_setting(cluster: &Cluster, name: &str) -> Result<String> {
    let program = cluster.bin.join("postgres");
    let mut cmd = cluster.server_program(&program);
    cmd.arg("-C").arg(name).arg("-D").arg(cluster.data());
    let out = cmd
        .output()
        .map_err(|e| Error::io("cannot run", &program, e))?;
    if !out.status.success() {
        return Err(Error::source(format!(
            "postgres -C {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The environment of a server program: a search path, a home, the C locale, and nothing
/// else of Lifeboat's.
pub fn clean_env(cmd: &mut Command, home: &Path) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("LANG", "C");
}

/// Hand `path` and everything below it to `uid:gid`, never following a link: the walk goes
/// through descriptors of folders opened without following links, and a folder is handed
/// over only after everything in it, so the new owner cannot rename anything under a
/// folder while it is being walked (to send the walk elsewhere).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    use rustix::fs::{AtFlags, Mode, OFlags, CWD};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let owner = |e: rustix::io::Errno| Error::io("cannot hand over", path, e.into());
    let (uid, gid) = (
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    );
    match rustix::fs::openat(CWD, path, flags, Mode::empty()) {
        Ok(dir) => {
            chown_below(&dir, path, uid, gid)?;
            rustix::fs::fchown(&dir, uid, gid).map_err(owner)
        }
        Err(rustix::io::Errno::NOTDIR) | Err(rustix::io::Errno::LOOP) => {
            rustix::fs::chownat(CWD, path, uid, gid, AtFlags::SYMLINK_NOFOLLOW).map_err(owner)
        }
        Err(e) => Err(owner(e)),
    }
}

fn chown_below(
    dir: &std::os::fd::OwnedFd,
    shown: &Path,
    uid: Option<rustix::fs::Uid>,
    gid: Option<rustix::fs::Gid>,
) -> Result<()> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    let fail = |e: rustix::io::Errno| Error::io("cannot hand over", shown, e.into());
    let entries = rustix::fs::Dir::read_from(dir).map_err(fail)?;
    for entry in entries {
        let entry = entry.map_err(fail)?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let here = shown.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        let fail = |e: rustix::io::Errno| Error::io("cannot hand over", &here, e.into());
        let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).map_err(fail)?;
        // A second name of a file may be one the new owner linked to a file of ours:
        // left as it is (a restore makes no hard links).
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory && st.st_nlink > 1 {
            continue;
        }
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let sub = rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(fail)?;
            chown_below(&sub, &here, uid, gid)?;
            rustix::fs::fchown(&sub, uid, gid).map_err(fail)?;
        } else {
            rustix::fs::chownat(dir, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW).map_err(fail)?;
        }
    }
    Ok(())
}

/// A system user's home folder.
pub fn system_user_home(name: &str) -> Option<PathBuf> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns null or a pointer to static storage, read at once.
    unsafe {
        let pw = libc::getpwnam(cname.as_ptr());
        if pw.is_null() || (*pw).pw_dir.is_null() {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr((*pw).pw_dir);
        Some(PathBuf::from(std::ffi::OsStr::from_bytes(dir.to_bytes())))
    }
}

/// uid and gid of a system user.
pub fn system_user(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns null or a pointer to static storage, read at once.
    unsafe {
        let pw = libc::getpwnam(cname.as_ptr());
        (!pw.is_null()).then(|| ((*pw).pw_uid, (*pw).pw_gid))
    }
}

/// A port number for the socket's name: the socket lives in a private folder, so any number
/// works; one no local server listens on keeps `ps` and logs unambiguous.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(54329)
}
