//! A throwaway PostgreSQL cluster for restore drills: `initdb` in a private temporary folder,
//! started on a Unix socket in that folder only (no TCP port), stopped and deleted on drop.
//!
//! PostgreSQL refuses to run as root: when Lifeboat runs as root (a system cron job), the
//! cluster runs as the `postgres` system user that the distribution's packages create.

use super::conn::PgTarget;
use super::tools;
use crate::error::{Error, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Cluster {
    dir: super::WorkDir,
    bin: PathBuf,
    /// The user the server runs as (uid, gid), when not this process's.
    run_as: Option<(u32, u32)>,
    started: bool,
    port: u16,
}

impl Cluster {
    /// Create and start a cluster of major version `major` (or newer, when that is what is
    /// installed).
    pub fn start(major: u32) -> Result<Cluster> {
        let initdb = tools::find("initdb", Some(major)).map_err(|e| {
            Error::usage(format!(
                "a drill without --drill-server starts a throwaway PostgreSQL {major} cluster, \
                 which needs initdb: {e}"
            ))
            .hint("install the PostgreSQL server package (Debian: apt-get install postgresql), or give --drill-server postgres://USER@HOST/ (a server where Lifeboat may create and drop a database)")
        })?;
        let bin = initdb
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
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| Error::io("cannot hand over", dir.path(), e))?;
            Some((uid, gid))
        } else {
            None
        };
        let port = free_port();
        let mut cluster = Cluster {
            dir,
            bin,
            run_as,
            started: false,
            port,
        };
        let data = cluster.data();
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
        let conf = format!(
            "listen_addresses = ''\nport = {port}\nunix_socket_directories = '{}'\n\
             unix_socket_permissions = 0700\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\nmax_wal_size = 4GB\n",
            cluster.dir.path().display()
        );
        let conf_path = data.join("postgresql.auto.conf");
        std::fs::write(&conf_path, conf).map_err(|e| Error::io("cannot write", &conf_path, e))?;
        let log = cluster.dir.path().join("server.log");
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                &data.display().to_string(),
                "-l",
                &log.display().to_string(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        cluster.started = true;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The URI of database `db` on this cluster (its socket, user postgres).
    pub fn target(&self, db: &str) -> Result<PgTarget> {
        PgTarget::parse(&format!(
            "postgresql:///{db}?host={}&port={}&user=postgres",
            self.dir.path().display(),
            self.port
        ))
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<()> {
        let path = self.bin.join(program);
        let mut cmd = Command::new(&path);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid).env("HOME", self.dir.path());
        }
        let out = cmd
            .output()
            .map_err(|e| Error::io("cannot run", &path, e))?;
        if !out.status.success() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            return Err(Error::source(format!(
                "{program} of the drill's throwaway cluster failed: {} {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                log.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
            )));
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.started {
            let data = self.data().display().to_string();
            let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        }
    }
}

/// uid and gid of a system user.
fn system_user(name: &str) -> Option<(u32, u32)> {
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
