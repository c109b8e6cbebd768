//! PostgreSQL's client programs (`pg_dump`, `pg_dumpall`, `pg_restore`, `psql`): finding the
//! ones that match a server's major version, running them, and turning what they print on
//! failure into errors an operator can act on.
//!
//! Lifeboat drives the clients rather than speaking the protocol itself: `pg_dump` is the
//! only complete reader of a database's schema, and its archive is what `pg_restore` (and a
//! user without Lifeboat) restores.

use super::conn::{ClientEnv, PgTarget};
use crate::error::{Error, Result};
use crate::source::is_executable;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const INSTALL_HINT: &str = "install the PostgreSQL client programs of the server's major version \
     (Debian: apt-get install postgresql-client-<major>), or set LIFEBOAT_PG_BIN to the folder \
     holding pg_dump, pg_restore and psql";

/// The folders searched for client programs, best first: `$LIFEBOAT_PG_BIN`, Debian's
/// `/usr/lib/postgresql/<major>/bin` for the server's major (when known), `PATH`, then every
/// other `/usr/lib/postgresql/*/bin`, newest first.
fn search_dirs(major: Option<u32>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("LIFEBOAT_PG_BIN").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    if let Some(m) = major {
        dirs.push(PathBuf::from(format!("/usr/lib/postgresql/{m}/bin")));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    installed.sort_by_key(|d| std::cmp::Reverse(d.0));
    dirs.extend(installed.into_iter().map(|(_, d)| d));
    dirs
}

/// A client program and its major version.
#[derive(Debug, Clone)]
pub struct Client {
    pub path: PathBuf,
    /// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` → "15.18 (Debian …)".
    pub version: String,
    pub major: u32,
}

/// Find `program` able to work with a server of major version `server_major` (a client at
/// least as new as the server; `None` when the server's version is not known yet).
pub fn find(program: &str, server_major: Option<u32>) -> Result<Client> {
    find_in(program, server_major, search_dirs(server_major))
}

/// Find the server program `program` of exactly major version `major`: a data directory
/// runs only under the server version that wrote it.
pub fn find_exact(program: &str, major: u32) -> Result<Client> {
    let mut other: Option<Client> = None;
    for dir in search_dirs(Some(major)) {
        let path = dir.join(program);
        if !is_executable(&path) {
            continue;
        }
        let Some((version, found)) = version_of(&path) else {
            continue;
        };
        let client = Client {
            path,
            version,
            major: found,
        };
        if found == major {
            return Ok(client);
        }
        other.get_or_insert(client);
    }
    Err(match other {
        Some(o) => Error::usage(format!(
            "a PostgreSQL {major} data directory needs PostgreSQL {major}'s {program}; found only \
             {program} {} at {}",
            o.version,
            o.path.display()
        )),
        None => Error::usage(format!(
            "PostgreSQL {major}'s {program} was not found (searched LIFEBOAT_PG_BIN, /usr/lib/postgresql/*/bin and PATH)"
        )),
    }
    .hint(format!(
        "install PostgreSQL {major}'s server package (Debian: apt-get install postgresql-{major}), or set LIFEBOAT_PG_BIN to its bin folder"
    )))
}

fn find_in(program: &str, server_major: Option<u32>, dirs: Vec<PathBuf>) -> Result<Client> {
    let mut too_old: Option<Client> = None;
    for dir in dirs {
        let path = dir.join(program);
        if !is_executable(&path) {
            continue;
        }
        let Some((version, major)) = version_of(&path) else {
            continue;
        };
        let client = Client {
            path,
            version,
            major,
        };
        match server_major {
            Some(s) if major < s => {
                if too_old.is_none() {
                    too_old = Some(client);
                }
            }
            _ => return Ok(client),
        }
    }
    match (too_old, server_major) {
        (Some(old), Some(server)) => Err(Error::usage(format!(
            "{program} {} at {} is older than the PostgreSQL {server} server; an older {program} \
             cannot read a newer server's catalog",
            old.version,
            old.path.display()
        ))
        .hint(INSTALL_HINT)),
        _ => Err(Error::usage(format!(
            "PostgreSQL's {program} was not found (searched LIFEBOAT_PG_BIN, /usr/lib/postgresql/*/bin and PATH)"
        ))
        .hint(INSTALL_HINT)),
    }
}

/// `PROGRAM --version`: the version text after "(PostgreSQL) " and its major number.
fn version_of(path: &Path) -> Option<(String, u32)> {
    let out = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split(") ").nth(1)?.trim().to_string();
    let major = parse_major(&version)?;
    Some((version, major))
}

/// "15.18 (Debian…)" → 15, "9.6.24" → 9 (a 9.x major is reported as 9, old enough anyway).
pub fn parse_major(version: &str) -> Option<u32> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .find(|p| !p.is_empty())?
        .parse()
        .ok()
}

/// A connection through `psql`, for the few questions Lifeboat asks the server.
pub struct Psql<'a> {
    pub client: Client,
    pub target: &'a PgTarget,
    pub env: &'a ClientEnv,
}

impl Psql<'_> {
    /// Run `sql` and return its rows, fields split on the unit separator (0x1f).
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        let mut cmd = Command::new(&self.client.path);
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            // Records end with NUL: a table's name may hold a line break.
            "-0",
            "-v",
            "ON_ERROR_STOP=1",
            "-F",
            "\u{1f}",
        ])
        .arg("-c")
        .arg(sql)
        .arg(format!("--dbname={}", self.target.conn_uri()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("PGAPPNAME", "lifeboat")
        // Never wait at a password prompt: fail at once with the server's message.
        .arg("--no-password");
        self.env.apply(&mut cmd);
        let out = cmd
            .output()
            .map_err(|e| Error::io("cannot run", &self.client.path, e))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(client_failure("psql", self.target, &stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .split('\0')
            .filter(|l| !l.is_empty() && *l != "\n")
            .map(|l| l.split('\u{1f}').map(str::to_string).collect())
            .collect())
    }

    /// One value.
    pub fn value(&self, sql: &str) -> Result<String> {
        self.query(sql)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .ok_or_else(|| Error::source(format!("the server returned nothing for: {sql}")))
    }
}

/// A client program running in a process group of its own (it and the parallel workers it
/// forks), watched by a tiny shell that kills the whole group if Lifeboat dies: a worker
/// copying a large table would otherwise go on for as long as the table takes, holding its
/// snapshot and filling the temporary folder. (The leader also gets a parent-death signal,
/// which its forked workers do not inherit.)
pub struct Guarded {
    pub child: std::process::Child,
    watchdog: Option<(std::process::Child, std::process::ChildStdin)>,
}

impl Guarded {
    pub fn spawn(cmd: &mut Command, what: &Path) -> Result<Guarded> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe, called between fork and exec with constant
        // arguments.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| Error::io("cannot run", what, e))?;
        // The watchdog reads its stdin, whose other end only this process holds (close on
        // exec): end of file without "done" means Lifeboat is gone.
        let watchdog = Command::new("/bin/sh")
            .arg("-c")
            .arg("read line; [ \"$line\" = done ] || kill -KILL -\"$1\" 2>/dev/null")
            .arg("lifeboat-watchdog")
            .arg(child.id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .and_then(|mut w| w.stdin.take().map(|i| (w, i)));
        if watchdog.is_none() {
            tracing::warn!(
                "no watchdog for {}: its workers may outlive a killed lifeboat",
                what.display()
            );
        }
        Ok(Guarded { child, watchdog })
    }

    /// Kill the program and every process of its group.
    pub fn kill(&mut self) {
        // SAFETY: signalling a process group this process created.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.kill();
    }

    /// Stand the watchdog down (the program has exited or was killed).
    fn release(&mut self) {
        if let Some((mut w, mut stdin)) = self.watchdog.take() {
            use std::io::Write;
            let _ = stdin.write_all(b"done\n");
            drop(stdin);
            let _ = w.wait();
        }
    }

    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        let status = self.child.wait();
        self.release();
        status
    }

    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        let status = self.child.try_wait()?;
        if status.is_some() {
            self.release();
        }
        Ok(status)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.watchdog.is_some() {
            if let Ok(None) = self.child.try_wait() {
                self.kill();
                let _ = self.child.wait();
            }
            self.release();
        }
    }
}

/// An error for a client program that failed, by what its message says. The message is
/// libpq's or the server's, which never holds the password.
pub fn client_failure(program: &str, target: &PgTarget, stderr: &str) -> Error {
    let what = target.display();
    let detail = last_lines(stderr, 6);
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("password authentication failed")
        || lower.contains("no password supplied")
        || lower.contains("authentication failed")
    {
        return Error::source(format!(
            "PostgreSQL refused the login of {} at {what}: {detail}",
            target.user()
        ))
        .hint("check the user and password (in the URI, PGPASSWORD or ~/.pgpass)");
    }
    if lower.contains("does not exist") && lower.contains("database") {
        return Error::not_found(format!("{what}: {detail}"))
            .hint("check the database name in the URI (`psql -l` lists the databases); restore with --create makes a new one");
    }
    if lower.contains("could not connect")
        || lower.contains("connection refused")
        || lower.contains("could not translate host name")
        || lower.contains("timeout expired")
        || lower.contains("no route to host")
        || lower.contains("is the server running")
        || lower.contains("connection to server")
    {
        return Error::source(format!("cannot reach PostgreSQL at {what}: {detail}")).hint(
            "check that the server runs and listens on that host and port, and that a firewall lets you in",
        );
    }
    let lock_wait = lower.contains("could not obtain lock")
        || lower.contains("lock timeout")
        || (lower.contains("statement timeout") && lower.contains("lock table"));
    if lock_wait {
        return Error::new(
            crate::error::ErrorKind::InUse,
            format!("{program} waited too long for a table lock on {what}: {detail}"),
        )
        .hint("a transaction holds an exclusive lock (a migration, VACUUM FULL, LOCK TABLE): run the backup when it is done, or raise LIFEBOAT_BUSY_TIMEOUT (seconds)");
    }
    if lower.contains("permission denied") || lower.contains("must be owner") {
        return Error::source(format!("{program} lacks privileges on {what}: {detail}"))
            .hint("run as a role that can read every table being backed up (the owner, or a member of pg_read_all_data)");
    }
    if lower.contains("server version mismatch") {
        return Error::usage(format!("{program}: {detail}")).hint(INSTALL_HINT);
    }
    Error::source(format!("{program} failed on {what}: {detail}"))
}

/// The last `n` lines that say something: without the programs' `name: error:` prefixes,
/// nor libpq's note of which password file it read (Lifeboat's own, a temporary path).
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| {
            let l = l.trim();
            [
                "psql: error: ",
                "pg_dump: error: ",
                "pg_dumpall: error: ",
                "pg_restore: error: ",
            ]
            .iter()
            .find_map(|p| l.strip_prefix(p))
            .unwrap_or(l)
        })
        .filter(|l| !l.is_empty() && !l.contains("password retrieved from file"))
        .collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors() {
        assert_eq!(parse_major("15.18 (Debian 15.18-0+deb12u1)"), Some(15));
        assert_eq!(parse_major("17devel"), Some(17));
        assert_eq!(parse_major("9.6.24"), Some(9));
    }

    /// A folder with a fake `program` that prints `version` like the real ones do.
    fn fake_client(program: &str, version: &str) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(program);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho '{program} (PostgreSQL) {version}'\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn a_client_older_than_the_server_is_refused_and_a_newer_one_taken() {
        let old = fake_client("pg_dump", "14.11 (Debian 14.11-1)");
        let new = fake_client("pg_dump", "16.4");
        let e = find_in("pg_dump", Some(15), vec![old.path().into()]).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Usage);
        assert!(
            e.to_string().contains("14.11")
                && e.to_string()
                    .contains("older than the PostgreSQL 15 server"),
            "{e}"
        );
        let found = find_in(
            "pg_dump",
            Some(15),
            vec![old.path().into(), new.path().into()],
        )
        .unwrap();
        assert_eq!((found.major, found.path), (16, new.path().join("pg_dump")));
        let none = find_in("pg_dump", Some(15), vec![]).unwrap_err();
        assert!(none.to_string().contains("was not found"), "{none}");
    }

    #[test]
    fn failures_are_named() {
        let t = PgTarget::parse("postgres://app:pw@h:5/db").unwrap();
        let e = client_failure(
            "psql",
            &t,
            "psql: error: connection to server at \"h\" (1.2.3.4), port 5 failed: FATAL:  password authentication failed for user \"app\"",
        );
        assert_eq!(e.kind, crate::error::ErrorKind::Source);
        assert!(e.to_string().contains("refused the login"), "{e}");
        let e = client_failure("psql", &t, "FATAL:  database \"db\" does not exist");
        assert_eq!(e.kind, crate::error::ErrorKind::NotFound);
        let e = client_failure(
            "pg_dump",
            &t,
            "connection to server at \"h\", port 5 failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
        );
        assert!(e.to_string().contains("cannot reach"), "{e}");
        let e = client_failure(
            "pg_dump",
            &t,
            "pg_dump: error: query failed: ERROR:  canceling statement due to lock timeout\npg_dump: error: could not obtain lock on relation \"public.t\"",
        );
        assert_eq!(e.kind, crate::error::ErrorKind::InUse);
        assert!(!e.to_string().contains("pw"), "{e}");
    }
}
