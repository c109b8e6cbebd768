//! The daemon's settings, checked: `[daemon]`, its tokens and webhooks, and the `[[source]]`
//! tables of `lifeboat.toml`, each schedule parsed and each secret read (then kept only as a
//! hash or a key), so that a mistake is found by `--check-config` or at start, never at 3 a.m.

use crate::config::{FileConfig, SourceSection};
use crate::daemon::schedule::Schedule;
pub use crate::daemon::webhooks::{redact_url, Webhook};
use crate::error::{Error, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a token may do. `admin` implies the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Backup,
    Restore,
    Admin,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "read" => Scope::Read,
            "backup" => Scope::Backup,
            "restore" => Scope::Restore,
            "admin" => Scope::Admin,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Backup => "backup",
            Scope::Restore => "restore",
            Scope::Admin => "admin",
        }
    }
}

/// A bearer token, kept as its SHA-256 only.
pub struct Token {
    pub name: String,
    pub sha256: [u8; 32],
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({}, {:?})", self.name, self.scopes)
    }
}

impl Token {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

#[derive(Debug, Clone)]
pub struct Source {
    /// What the API, metrics and webhooks call it.
    pub name: String,
    /// As written (a path or a URI); `key` is how backups record it.
    pub path: String,
    pub key: String,
    pub kind: Option<crate::source::Kind>,
    pub schedule: Schedule,
    pub drill: Option<Schedule>,
    pub verify: Option<Schedule>,
    pub health: Schedule,
    pub physical: bool,
    pub tags: Vec<String>,
    pub exclude: Vec<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    pub command_timeout: Duration,
    pub drill_query: Option<String>,
}

impl Source {
    /// The path as it is shown (API, status page, `--check-config`): a PostgreSQL URI
    /// without its password.
    pub fn shown_path(&self) -> String {
        shown_path(&self.path)
    }
}

/// `path` as it may be shown: a PostgreSQL URI loses its password (and `password=`).
pub fn shown_path(path: &str) -> String {
    use crate::source::postgres::conn;
    if !crate::source::postgres::is_postgres_uri(path) {
        return path.to_string();
    }
    conn::PgTarget::parse(path)
        .map(|t| t.display())
        .unwrap_or_else(|_| conn::redact_uri_text(path))
}

#[derive(Debug)]
pub struct DaemonConfig {
    pub listen: Option<SocketAddr>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub tokens: Vec<Token>,
    pub webhooks: Vec<Webhook>,
    pub sources: Vec<Source>,
    pub retention: Option<Schedule>,
    pub restore_dirs: Vec<PathBuf>,
    pub state_dir: PathBuf,
    pub retries: u32,
    pub retry_delay: Duration,
    pub max_requests: usize,
    pub storage_warn: f64,
    pub size_drop: f64,
    pub refresh: Duration,
    pub lag_alert: Duration,
    pub tz: jiff::tz::TimeZone,
    /// The config file these settings came from (None: no file).
    pub config_file: Option<PathBuf>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7474";

fn duration(text: Option<&str>, key: &str, default: Duration) -> Result<Duration> {
    match text {
        None => Ok(default),
        Some(t) => crate::config::parse_duration(t)
            .map_err(|e| Error::usage(format!("{key} in the config file: {e}"))),
    }
}

/// The first line of a secret file, refused when others may read the file.
fn read_secret_file(path: &Path, what: &str) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).map_err(|e| Error::io(&format!("cannot read {what}"), path, e))?;
    if meta.mode() & 0o077 != 0 {
        return Err(Error::usage(format!(
            "{what} {} can be read by other users (mode {:o})",
            path.display(),
            meta.mode() & 0o777
        ))
        .hint(format!("chmod 600 {}", path.display())));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(&format!("cannot read {what}"), path, e))?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

fn read_secret(file: Option<&Path>, env: Option<&str>, what: &str) -> Result<Option<String>> {
    match (file, env) {
        (Some(_), Some(_)) => Err(Error::usage(format!(
            "{what}: give a file or a variable, not both"
        ))),
        (Some(f), None) => read_secret_file(f, what).map(Some),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_string())),
            _ => Err(
                Error::usage(format!("{what}: variable {var} is not set")).hint(format!(
                    "export {var}=… in the daemon's environment (or a systemd EnvironmentFile)"
                )),
            ),
        },
        (None, None) => Ok(None),
    }
}

impl DaemonConfig {
    /// Check the config file's daemon settings and read the secrets they name.
    pub fn from_file(file: &FileConfig) -> Result<DaemonConfig> {
        let section = file.daemon.clone().unwrap_or_default();
        let listen = match section.listen.as_deref().unwrap_or(DEFAULT_LISTEN) {
            "off" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|e| {
                Error::usage(format!("[daemon] listen = {text:?}: {e}"))
                    .hint("an address and port such as 127.0.0.1:7474, or \"off\"")
            })?),
        };
        let tls = match (section.tls_cert, section.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(Error::usage("[daemon] tls_cert and tls_key go together"));
            }
        };
        let mut tokens = Vec::new();
        for t in &section.token {
            let what = format!("token {:?}", t.name);
            if t.name.is_empty() {
                return Err(Error::usage("[[daemon.token]] needs a name"));
            }
            let sha256 = match (
                read_secret(t.file.as_deref(), t.env.as_deref(), &what)?,
                &t.sha256,
            ) {
                (Some(_), Some(_)) => {
                    return Err(Error::usage(format!(
                        "{what}: give file, env or sha256, one of them"
                    )))
                }
                (Some(token), None) => {
                    if token.len() < 16 {
                        return Err(
                            Error::usage(format!("{what} is shorter than 16 characters"))
                                .hint("make one with: head -c 32 /dev/urandom | base64"),
                        );
                    }
                    token_hash(&token)
                }
                (None, Some(h)) => {
                    let hex_part = h.strip_prefix("sha256:").unwrap_or(h);
                    let bytes = hex::decode(hex_part)
                        .ok()
                        .filter(|b| b.len() == 32)
                        .ok_or_else(|| {
                            Error::usage(format!("{what}: sha256 must be sha256:<64 hex digits>"))
                                .hint("printf %s \"$TOKEN\" | sha256sum")
                        })?;
                    let mut a = [0u8; 32];
                    a.copy_from_slice(&bytes);
                    a
                }
                (None, None) => {
                    return Err(Error::usage(format!("{what} has no file, env or sha256")))
                }
            };
            let mut scopes = Vec::new();
            for s in &t.scopes {
                scopes.push(Scope::parse(s).ok_or_else(|| {
                    Error::usage(format!("{what}: unknown scope {s:?}"))
                        .hint("scopes: read, backup, restore, admin")
                })?);
            }
            if scopes.is_empty() {
                return Err(Error::usage(format!("{what} has no scopes"))
                    .hint("scopes = [\"read\"] (read, backup, restore, admin)"));
            }
            if tokens.iter().any(|o: &Token| o.name == t.name) {
                return Err(Error::usage(format!("two tokens are named {:?}", t.name)));
            }
            tokens.push(Token {
                name: t.name.clone(),
                sha256,
                scopes,
            });
        }
        if listen.is_some_and(|a| !a.ip().is_loopback()) && tls.is_none() {
            tracing::warn!("the API listens beyond this machine without TLS: tokens cross the network in clear");
        }
        let mut webhooks = Vec::new();
        for w in &section.webhook {
            let what = format!("webhook {}", redact_url(&w.url));
            let parsed =
                url::Url::parse(&w.url).map_err(|e| Error::usage(format!("{what}: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(Error::usage(format!("{what}: only http and https")));
            }
            for e in &w.events {
                if e != "failures" && !crate::daemon::webhooks::EVENTS.contains(&e.as_str()) {
                    return Err(Error::usage(format!("{what}: unknown event {e:?}")).hint(
                        format!(
                            "events: failures, {}",
                            crate::daemon::webhooks::EVENTS.join(", ")
                        ),
                    ));
                }
            }
            let slack = match w.format.as_deref() {
                None | Some("json") => false,
                Some("slack") => true,
                Some(f) => {
                    return Err(Error::usage(format!(
                        "{what}: format {f:?} (json or slack)"
                    )))
                }
            };
            let secret = read_secret(
                w.secret_file.as_deref(),
                w.secret_env.as_deref(),
                &format!("{what} secret"),
            )?
            .map(|s| zeroize::Zeroizing::new(s.into_bytes()));
            webhooks.push(Webhook {
                url: w.url.clone(),
                secret,
                events: w.events.clone(),
                slack,
                attempts: w.attempts.unwrap_or(5).clamp(1, 20),
                retry_delay: duration(
                    w.retry_delay.as_deref(),
                    "webhook retry_delay",
                    Duration::from_secs(2),
                )?,
                timeout: duration(
                    w.timeout.as_deref(),
                    "webhook timeout",
                    Duration::from_secs(10),
                )?,
            });
        }
        let default_health = Schedule::parse(section.health.as_deref().unwrap_or("every 6h"))?;
        let mut sources: Vec<Source> = Vec::new();
        for s in &file.source {
            let src = source(s, &default_health)?;
            if let Some(o) = sources
                .iter()
                .find(|o| o.name == src.name || o.key == src.key)
            {
                return Err(Error::usage(format!(
                    "two [[source]] tables name {} ({} and {})",
                    o.name,
                    o.shown_path(),
                    src.shown_path()
                ))
                .hint("give each a different name = \"…\""));
            }
            sources.push(src);
        }
        let retention = match section.retention.as_deref() {
            None => None,
            Some(text) => {
                if file.retention.is_none() {
                    return Err(Error::usage(
                        "[daemon] retention is set but there is no [retention] policy",
                    )
                    .hint("add [retention] keep_daily = 7 … (see docs/RETENTION.md)"));
                }
                Some(Schedule::parse(text)?)
            }
        };
        let state_dir = match &section.state_dir {
            Some(d) if d.is_relative() => {
                return Err(Error::usage("[daemon] state_dir must be an absolute path"))
            }
            Some(d) => d.clone(),
            // state_home() is already …/lifeboat.
            None => crate::trust::state_home().join("daemon"),
        };
        let ratio = |v: Option<f64>, key: &str, default: f64| -> Result<f64> {
            match v {
                None => Ok(default),
                Some(r) if (0.0..=1.0).contains(&r) => Ok(r),
                Some(r) => Err(Error::usage(format!(
                    "[daemon] {key} = {r}: a fraction between 0 and 1"
                ))),
            }
        };
        Ok(DaemonConfig {
            listen,
            tls,
            tokens,
            webhooks,
            sources,
            retention,
            restore_dirs: section.restore_dirs.clone(),
            state_dir,
            retries: section.retries.unwrap_or(3),
            retry_delay: duration(
                section.retry_delay.as_deref(),
                "[daemon] retry_delay",
                Duration::from_secs(60),
            )?,
            max_requests: section.max_requests.unwrap_or(64).max(1),
            storage_warn: ratio(section.storage_warn, "storage_warn", 0.85)?,
            size_drop: ratio(section.size_drop, "size_drop", 0.5)?,
            refresh: duration(
                section.refresh.as_deref(),
                "[daemon] refresh",
                Duration::from_secs(30),
            )?,
            lag_alert: duration(
                section.lag_alert.as_deref(),
                "[daemon] lag_alert",
                Duration::from_secs(300),
            )?,
            tz: crate::ops::policy::time_zone(file.timezone.as_deref())?,
            config_file: None,
        })
    }

    /// The source `spec` names: its name, its path as written, or its path as backups
    /// record it.
    pub fn source(&self, spec: &str) -> Option<&Source> {
        self.sources
            .iter()
            .find(|s| s.name == spec || s.path == spec || s.key == spec)
    }
}

/// SHA-256 of a token, as tokens are kept and compared.
pub fn token_hash(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut a = [0u8; 32];
    a.copy_from_slice(d.as_ref());
    a
}

fn source(s: &SourceSection, default_health: &Schedule) -> Result<Source> {
    let key = crate::source::source_key(Path::new(&s.path));
    let name = s.name.clone().unwrap_or_else(|| key.clone());
    let what = |k: &str| format!("[[source]] {name}: {k}");
    let sched = |text: &Option<String>, k: &str| -> Result<Option<Schedule>> {
        text.as_deref()
            .map(Schedule::parse)
            .transpose()
            .map_err(|e| {
                Error::usage(format!("{}: {}", what(k), e.message)).hint(e.hint.unwrap_or_default())
            })
    };
    if name.is_empty() || name.chars().any(|c| c.is_control()) {
        return Err(Error::usage(format!(
            "[[source]] {}: a name without control characters",
            shown_path(&s.path)
        )));
    }
    let kind = s
        .kind
        .as_deref()
        .map(crate::source::Kind::parse)
        .transpose()?;
    let schedule = sched(&s.schedule, "schedule")?.unwrap_or(Schedule::Off);
    let sql = match kind {
        Some(k) => matches!(
            k,
            crate::source::Kind::Sqlite | crate::source::Kind::Postgres
        ),
        None => {
            crate::source::postgres::is_postgres_uri(&s.path)
                || matches!(
                    crate::source::detect(Path::new(&s.path)),
                    Ok(crate::source::Kind::Sqlite) | Err(_)
                )
        }
    };
    if s.drill_query.is_some() && !sql {
        return Err(Error::usage(format!(
            "{}: a check query is SQL, run in a restored SQLite or PostgreSQL database; {key} is not one",
            what("drill_query")
        ))
        .hint("remove drill_query: a drill of this source checks every byte as it restores"));
    }
    if schedule.is_continuous() {
        let sqlite = match kind {
            Some(k) => k == crate::source::Kind::Sqlite,
            None => {
                !crate::source::postgres::is_postgres_uri(&s.path) && !Path::new(&s.path).is_dir()
            }
        };
        if !sqlite {
            return Err(Error::usage(format!(
                "{}: \"continuous\" replicates a SQLite database; {} is not one",
                what("schedule"),
                shown_path(&s.path)
            ))
            .hint("PostgreSQL ships its WAL with archive_command = 'lifeboat wal-push %p' (docs/POSTGRES.md); use an interval for the others"));
        }
    }
    Ok(Source {
        key,
        kind,
        schedule,
        drill: sched(&s.drill, "drill")?,
        verify: sched(&s.verify, "verify")?,
        health: sched(&s.health, "health")?.unwrap_or_else(|| default_health.clone()),
        physical: s.physical,
        tags: s.tags.clone(),
        exclude: s.exclude.clone(),
        before: s.before.clone(),
        after: s.after.clone(),
        command_timeout: duration(
            s.command_timeout.as_deref(),
            &what("command_timeout"),
            Duration::from_secs(300),
        )?,
        drill_query: s.drill_query.clone(),
        name,
        path: s.path.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DaemonConfig> {
        let file: FileConfig = toml::from_str(text).map_err(|e| Error::usage(e.to_string()))?;
        DaemonConfig::from_file(&file)
    }

    #[test]
    fn tokens_are_kept_as_digests_with_their_scopes() {
        std::env::set_var("LIFEBOAT_TEST_TOKEN_A", "a-token-long-enough-1234");
        let cfg = parse(
            "[[daemon.token]]\nname = \"a\"\nenv = \"LIFEBOAT_TEST_TOKEN_A\"\nscopes = [\"read\", \"backup\"]\n",
        )
        .unwrap();
        let t = &cfg.tokens[0];
        assert_eq!(t.sha256, token_hash("a-token-long-enough-1234"));
        assert!(t.allows(Scope::Read) && t.allows(Scope::Backup));
        assert!(!t.allows(Scope::Restore) && !t.allows(Scope::Admin));
        assert!(!format!("{t:?}").contains("a-token"));
        // Admin implies every scope.
        let hash = hex::encode(token_hash("x"));
        let cfg = parse(&format!(
            "[[daemon.token]]\nname = \"b\"\nsha256 = \"sha256:{hash}\"\nscopes = [\"admin\"]\n"
        ))
        .unwrap();
        assert!(cfg.tokens[0].allows(Scope::Restore));
    }

    #[test]
    fn mistakes_are_refused_before_anything_runs() {
        std::env::set_var("LIFEBOAT_TEST_TOKEN_SHORT", "short");
        for (bad, says) in [
            ("[[daemon.token]]\nname = \"a\"\nenv = \"LIFEBOAT_TEST_TOKEN_SHORT\"\nscopes = [\"read\"]\n", "shorter than 16"),
            ("[[daemon.token]]\nname = \"a\"\nsha256 = \"sha256:00\"\nscopes = [\"read\"]\n", "64 hex"),
            ("[[daemon.token]]\nname = \"a\"\nenv = \"LIFEBOAT_TEST_NO_SUCH_VAR\"\nscopes = [\"read\"]\n", "not set"),
            ("[[daemon.token]]\nname = \"a\"\nsha256 = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\nscopes = [\"root\"]\n", "unknown scope"),
            ("[[daemon.token]]\nname = \"a\"\nsha256 = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n", "no scopes"),
            ("[[daemon.webhook]]\nurl = \"ftp://x/\"\n", "only http"),
            ("[[daemon.webhook]]\nurl = \"http://x/\"\nevents = [\"backup.done\"]\n", "unknown event"),
            ("[daemon]\nlisten = \"localhost\"\n", "listen"),
            ("[daemon]\nretention = \"every 1d\"\n", "no [retention]"),
            ("[daemon]\nstorage_warn = 1.5\n", "fraction"),
            ("[daemon]\ntls_cert = \"/x\"\n", "go together"),
            ("[[source]]\npath = \"postgres://u@h/db\"\nschedule = \"continuous\"\n", "continuous"),
            ("[[source]]\npath = \"/tmp\"\ndrill_query = \"SELECT 1\"\n", "check query is SQL"),
            ("[[source]]\npath = \"/a.db\"\n[[source]]\npath = \"/a.db\"\n", "two [[source]]"),
            ("[[source]]\npath = \"/a.db\"\nschedule = \"every 6x\"\n", "schedule"),
        ] {
            let e = parse(bad).err().unwrap_or_else(|| panic!("accepted: {bad}"));
            assert!(e.message.contains(says), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn urls_are_shown_without_their_path() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9000/hook?k=s"),
            "http://127.0.0.1:9000/…"
        );
        let cfg =
            parse("[daemon]\nlisten = \"off\"\n[[source]]\npath = \"postgres://u:pw@h/db\"\n")
                .unwrap();
        assert!(cfg.listen.is_none());
        // A source is named by its password-less key.
        assert_eq!(cfg.sources[0].name, "postgres://u@h:5432/db");
    }
}
