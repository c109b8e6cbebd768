//! Configuration: `lifeboat.toml`, overridden by `LIFEBOAT_*` variables, overridden by flags.
//! Flags and variables are handled by the CLI parser; this module reads the file, fills what
//! they left unset, and picks the defaults (no config is needed at all).

use crate::error::{Error, Result};
use crate::ops::policy::Policy;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Keys of `lifeboat.toml`. Every key is also a variable: `repo` is `LIFEBOAT_REPO`, and so on.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub repo: Option<String>,
    pub compression: Option<String>,
    pub level: Option<i32>,
    /// `written` (default), `full` or `none`.
    pub verify: Option<String>,
    pub temp_dir: Option<PathBuf>,
    /// Packs uploaded at once (default 4).
    pub transfers: Option<usize>,
    /// Extra replicas, besides those added with `lifeboat replica add`.
    #[serde(default)]
    pub replicas: Vec<String>,
    /// Time zone of retention periods (days, weeks, ...): an IANA name, `UTC` or `local`.
    pub timezone: Option<String>,
    /// Retention policies: `[retention]`, `[retention.source."PATH"]`,
    /// `[retention.target."URL"]` and `[retention.target."URL".source."PATH"]`.
    pub retention: Option<RetentionSection>,
    /// How to reach particular object-store targets: `[target."s3://bucket/prefix"]`.
    #[serde(default)]
    pub target: BTreeMap<String, TargetConfig>,
    /// `lifeboat replicate`: `[replicate]` and `[replicate.source."PATH"]`.
    pub replicate: Option<ReplicateSection>,
    /// `lifeboat drill`: `[drill]`.
    pub drill: Option<DrillSection>,
    /// `lifeboat daemon`: `[daemon]`, its tokens and webhooks.
    pub daemon: Option<DaemonSection>,
    /// What `lifeboat daemon` protects: `[[source]]`, one table per source.
    #[serde(default)]
    pub source: Vec<SourceSection>,
}

/// `[daemon]`: the HTTP API, its tokens, webhooks and the repository-wide jobs.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    /// Address of the HTTP API (default `127.0.0.1:7474`); `off` for none.
    pub listen: Option<String>,
    /// A PEM certificate chain and its key: the API is served over TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub token: Vec<TokenSection>,
    #[serde(default)]
    pub webhook: Vec<WebhookSection>,
    /// When `forget` (with the `[retention]` policies) and `prune` run, e.g. `0 3 * * *`.
    pub retention: Option<String>,
    /// Health checks of every source (default `every 6h`).
    pub health: Option<String>,
    /// Folders an API restore may write into.
    #[serde(default)]
    pub restore_dirs: Vec<PathBuf>,
    /// Where the daemon keeps its lock, schedule state and delivery log.
    pub state_dir: Option<PathBuf>,
    /// Retries of a failed scheduled job before it waits for its next run (default 3).
    pub retries: Option<u32>,
    /// Wait before the first retry, doubled for each next one (default `1m`).
    pub retry_delay: Option<String>,
    /// Requests served at once (default 64); more wait.
    pub max_requests: Option<usize>,
    /// Used fraction of a local target's disk that is reported as low storage (0.85).
    pub storage_warn: Option<f64>,
    /// A backup smaller than this fraction of the median of the previous ones is flagged
    /// by the health check (0.5).
    pub size_drop: Option<f64>,
    /// How often the catalog looks for backups other processes made (default `30s`).
    pub refresh: Option<String>,
    /// Replication lag of a continuous source that sends `replication.lagging` (default `5m`).
    pub lag_alert: Option<String>,
}

/// `[[daemon.token]]`: a bearer token of the API and what it may do.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    pub name: String,
    /// A file whose first line is the token.
    pub file: Option<PathBuf>,
    /// A variable holding the token.
    pub env: Option<String>,
    /// The token's SHA-256, `sha256:HEX` (the token itself is then written nowhere).
    pub sha256: Option<String>,
    /// `read`, `backup`, `restore`, `admin`.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// `[[daemon.webhook]]`: where events are posted.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    pub url: String,
    /// The HMAC-SHA256 key of the signature header: a file (first line) or a variable.
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
    /// Events sent (default all); `failures` is every failure event.
    #[serde(default)]
    pub events: Vec<String>,
    /// `json` (default) or `slack` (a Slack-compatible `{"text": …}` body).
    pub format: Option<String>,
    /// Deliveries tried before giving up (default 5).
    pub attempts: Option<u32>,
    /// Wait before the first retry, doubled each time (default `2s`).
    pub retry_delay: Option<String>,
    pub timeout: Option<String>,
}

/// `[[source]]`: one thing the daemon backs up, and its jobs.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// Anything `lifeboat backup` takes: a SQLite/DuckDB file, a folder, `postgres://…`.
    pub path: String,
    /// What the API and metrics call it (default: the path).
    pub name: Option<String>,
    /// `sqlite`, `duckdb`, `files`, `postgres` (found from the path when not given).
    pub kind: Option<String>,
    /// `every 6h`, `every 1d at 02:00`, `every 1h jitter 5m`, a cron expression
    /// (`0 2 * * *`), `continuous` (SQLite: replicate every commit) or `off`.
    pub schedule: Option<String>,
    /// Restore drills, verifications and health checks of this source.
    pub drill: Option<String>,
    pub verify: Option<String>,
    pub health: Option<String>,
    /// A PostgreSQL cluster's physical base backup instead of a dump.
    #[serde(default)]
    pub physical: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Files sources: patterns left out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Commands run (by `sh -c`) before and after each backup; a failing `before` cancels it.
    pub before: Option<String>,
    pub after: Option<String>,
    /// Time limit of each command (default `5m`).
    pub command_timeout: Option<String>,
    /// SQL a drill runs in the restored database; passes when its first value is true.
    pub drill_query: Option<String>,
}

/// Settings of restore drills.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillSection {
    /// SQL run in the restored database; the drill passes when it runs and its first value
    /// is not false, 0 or empty (e.g. `SELECT count(*) > 0 FROM orders`).
    pub query: Option<String>,
    /// A server where drills may create and drop a database, instead of a throwaway local
    /// cluster (postgres://USER@HOST/).
    pub server: Option<String>,
}

/// Settings of continuous replication, for every database or one (`[replicate.source."PATH"]`
/// wins); durations such as `1s`, `500ms`, `1h`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateSection {
    pub interval: Option<String>,
    pub base_every: Option<String>,
    #[serde(default)]
    pub source: BTreeMap<String, ReplicateSource>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateSource {
    pub interval: Option<String>,
    pub base_every: Option<String>,
}

impl ReplicateSection {
    /// `(interval, base_every)` of `source` (as `source_key` spells it), as written.
    pub fn for_source(&self, source: &str) -> (Option<&str>, Option<&str>) {
        let specific = self.source.get(source).or_else(|| {
            self.source
                .iter()
                .find(|(k, _)| crate::source::source_key(Path::new(k.as_str())) == source)
                .map(|(_, v)| v)
        });
        (
            specific
                .and_then(|s| s.interval.as_deref())
                .or(self.interval.as_deref()),
            specific
                .and_then(|s| s.base_every.as_deref())
                .or(self.base_every.as_deref()),
        )
    }
}

/// Settings of one object-store target, for replicas on another provider or account than
/// the primary.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Read this target's credentials and endpoint from `<prefix>AWS_*` (`<prefix>GOOGLE_*`,
    /// `<prefix>AZURE_*`) instead of the plain variables, e.g. `REPLICA_` for
    /// `REPLICA_AWS_ACCESS_KEY_ID`, `REPLICA_AWS_ENDPOINT`. Secrets stay in the environment.
    pub env_prefix: Option<String>,
}

/// Make the `[target."URL"]` sections known to the object stores, which open every target.
pub fn register_targets(targets: &BTreeMap<String, TargetConfig>) {
    crate::storage::object::set_env_prefixes(
        targets
            .iter()
            .filter_map(|(url, t)| Some((url.clone(), t.env_prefix.clone()?)))
            .collect(),
    );
}

/// One spelling for each way of writing a location, so that one target is never counted
/// twice (`/x` and `/x/`, `file:///x` and `/x`, `x` and `/cwd/x`): `file://PATH` is PATH; a
/// relative path is made absolute from the current folder; `.` parts and repeated or trailing
/// slashes are dropped (`..` is kept: the folder before it may be a link). An object URL loses
/// the slashes around its prefix, which it is opened without. Nothing is looked up: the
/// location need not exist.
pub fn normalize_location(location: &str) -> String {
    if crate::storage::object::is_object_url(location) {
        return crate::storage::object::normalize_url(location);
    }
    let path = location.strip_prefix("file://").unwrap_or(location);
    if path.is_empty() || path.contains("://") {
        return location.to_string(); // not a path: refused when it is opened
    }
    let path = Path::new(path);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        match std::env::current_dir() {
            Ok(dir) => dir.join(path),
            Err(_) => path.to_path_buf(),
        }
    };
    let clean: PathBuf = absolute
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    clean.display().to_string()
}

/// Whether two locations name the same target (see [`normalize_location`]).
pub fn same_location(a: &str, b: &str) -> bool {
    normalize_location(a) == normalize_location(b)
}

/// A `[retention]` section: a policy, and more specific ones per source and per target.
#[derive(Debug, Default, Clone)]
pub struct RetentionSection {
    pub policy: Option<Policy>,
    pub sources: BTreeMap<String, Policy>,
    pub targets: BTreeMap<String, RetentionSection>,
}

impl RetentionSection {
    /// The policy for backups of `source` (a database path) in the repository at `target`:
    /// the most specific section wins (target and source, then target, then source, then
    /// the plain `[retention]`). None: no policy applies, and nothing is forgotten.
    pub fn policy_for(&self, target: &str, source: &str) -> Option<Policy> {
        let on_target = self
            .targets
            .iter()
            .find(|(url, _)| same_location(url, target))
            .map(|(_, t)| t);
        if let Some(t) = on_target {
            if let Some(p) = source_policy(&t.sources, source) {
                return Some(p.clone());
            }
            if let Some(p) = &t.policy {
                return Some(p.clone());
            }
        }
        source_policy(&self.sources, source)
            .cloned()
            .or_else(|| self.policy.clone())
    }

    /// The `[retention.source."PATH"]` sections (plain, and those of `target`) that name no
    /// database in `known` (the sources of the target's backups): a misspelt path would
    /// otherwise quietly fall back to the general policy.
    pub fn unmatched_sources(&self, target: &str, known: &[String]) -> Vec<String> {
        self.source_sections(target)
            .filter(|k| !known.contains(&crate::source::source_key(Path::new(k.as_str()))))
            .cloned()
            .collect()
    }
}

impl RetentionSection {
    /// The paths of the `[retention.source."PATH"]` sections that apply on `target`.
    pub fn source_sections<'a>(&'a self, target: &'a str) -> impl Iterator<Item = &'a String> {
        let on_target = self
            .targets
            .iter()
            .filter(move |(url, _)| same_location(url, target))
            .flat_map(|(_, t)| t.sources.keys());
        self.sources.keys().chain(on_target)
    }
}

/// The policy of a `[retention.source."PATH"]` section naming `source`, spelt any way that
/// resolves to the same file (relative, trailing slash, through a symlink).
fn source_policy<'a>(sources: &'a BTreeMap<String, Policy>, source: &str) -> Option<&'a Policy> {
    sources.get(source).or_else(|| {
        sources
            .iter()
            .find(|(k, _)| crate::source::source_key(Path::new(k.as_str())) == source)
            .map(|(_, p)| p)
    })
}

impl<'de> Deserialize<'de> for RetentionSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = toml::Table::deserialize(d)?;
        let sources = match table.remove("source") {
            Some(v) => BTreeMap::<String, Policy>::deserialize(v).map_err(D::Error::custom)?,
            None => BTreeMap::new(),
        };
        let targets = match table.remove("target") {
            Some(v) => {
                BTreeMap::<String, RetentionSection>::deserialize(v).map_err(D::Error::custom)?
            }
            None => BTreeMap::new(),
        };
        if targets.values().any(|t| !t.targets.is_empty()) {
            return Err(D::Error::custom("a [retention.target] cannot hold targets"));
        }
        let policy = if table.is_empty() {
            None
        } else {
            Some(Policy::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)?)
        };
        Ok(RetentionSection {
            policy,
            sources,
            targets,
        })
    }
}

/// Where the config file is: `--config`/`LIFEBOAT_CONFIG`, else `./lifeboat.toml`, else
/// `$XDG_CONFIG_HOME/lifeboat/lifeboat.toml` (`~/.config/...`). None if there is none.
pub fn find_config(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    let local = PathBuf::from("lifeboat.toml");
    if local.is_file() {
        return Some(local);
    }
    let user = config_home()?.join("lifeboat").join("lifeboat.toml");
    user.is_file().then_some(user)
}

pub fn load(explicit: Option<&Path>) -> Result<(FileConfig, Option<PathBuf>)> {
    let Some(path) = find_config(explicit) else {
        return Ok((FileConfig::default(), None));
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io("cannot read config file", &path, e))?;
    let cfg: FileConfig = toml::from_str(&text).map_err(|e| {
        Error::usage(format!("config file {} is invalid: {e}", path.display()))
            .hint("valid keys: repo, compression, level, verify, temp_dir, transfers, replicas, timezone, [retention], [target], [replicate], [drill], [daemon], [[source]]; see the README and docs/DAEMON.md")
    })?;
    Ok((cfg, Some(path)))
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn config_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".config")))
}

/// Lifeboat's data folder: `$XDG_DATA_HOME/lifeboat`, else `~/.local/share/lifeboat`.
pub fn data_home() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".local").join("share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("lifeboat")
}

/// The repository used when none is configured.
pub fn default_repo() -> PathBuf {
    data_home().join("repo")
}

/// Where a repository location came from, for the line that tells the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    FlagOrEnv,
    File,
    Default,
}

/// Pick the repository: flag/variable, then file, then the default.
pub fn repo_location(flag_or_env: Option<&str>, file: &FileConfig) -> (String, Origin) {
    if let Some(r) = flag_or_env {
        return (r.to_string(), Origin::FlagOrEnv);
    }
    if let Some(r) = &file.repo {
        return (r.clone(), Origin::File);
    }
    (default_repo().display().to_string(), Origin::Default)
}

/// The hint for a repository location that holds no repository: a known location it looks
/// like a typo of (`known`: locations this machine has used, the configured one), else how
/// to create one.
pub fn missing_repo_hint(location: &str, known: &[String]) -> String {
    let given = crate::trust::normalize_location(location);
    let close = known
        .iter()
        .filter(|k| **k != given)
        .map(|k| (strsim::levenshtein(&given, k), k))
        .filter(|(d, k)| *d <= 2.max(k.chars().count() / 10))
        .min_by_key(|(d, _)| *d);
    match close {
        Some((_, k)) => format!(
            "did you mean {k}? (a repository this machine has used). To start a new repository \
             here, run `lifeboat repo init` (or add --init)"
        ),
        None => "check --repo / LIFEBOAT_REPO; to start a new repository here, run `lifeboat \
                 repo init` (--encrypt to encrypt it), or add --init to `backup`"
            .to_string(),
    }
}

/// A duration as the config and flags write it: `1s`, `500ms`, `5m`, `1h`, `7d`, or seconds.
pub fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 1s, 500ms, 5m, 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h, d)")),
    };
    if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
        return Err(format!("{s:?} is not a positive duration"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_file_beats_default() {
        let file = FileConfig {
            repo: Some("/from/file".into()),
            ..Default::default()
        };
        assert_eq!(repo_location(Some("/flag"), &file).0, "/flag");
        assert_eq!(
            repo_location(None, &file),
            ("/from/file".into(), Origin::File)
        );
        assert_eq!(
            repo_location(None, &FileConfig::default()).1,
            Origin::Default
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("rpeo = 'x'").is_err());
        let c: FileConfig = toml::from_str("repo = '/r'\nlevel = 5").unwrap();
        assert_eq!(c.level, Some(5));
    }

    #[test]
    fn retention_sections_pick_the_most_specific() {
        let c: FileConfig = toml::from_str(
            r#"
            timezone = "Europe/Berlin"
            [retention]
            keep_daily = 7
            [retention.source."/srv/app.db"]
            keep_hourly = 48
            [retention.target."s3://b/p"]
            keep_monthly = 12
            [retention.target."s3://b/p".source."/srv/app.db"]
            keep_yearly = "all"
            "#,
        )
        .unwrap();
        let r = c.retention.unwrap();
        let get = |t: &str, s: &str| r.policy_for(t, s).unwrap().describe();
        assert_eq!(get("/repo", "/other.db"), "daily 7");
        assert_eq!(get("/repo", "/srv/app.db"), "hourly 48");
        assert_eq!(get("s3://b/p/", "/other.db"), "monthly 12");
        assert_eq!(get("s3://b/p", "/srv/app.db"), "yearly all");
        assert!(toml::from_str::<FileConfig>(
            "[retention]
keep_dialy = 7"
        )
        .is_err());
    }

    #[test]
    fn a_typo_of_a_known_repository_is_named() {
        let known = vec!["/var/backups/lifeboat".to_string()];
        assert!(missing_repo_hint("/var/backups/lifebot", &known)
            .contains("did you mean /var/backups/lifeboat?"));
        assert!(!missing_repo_hint("/srv/other", &known).contains("did you mean"));
    }

    #[test]
    fn one_spelling_per_location() {
        for same in [
            "/x",
            "/x/",
            "/x//",
            "//x",
            "/./x/.",
            "file:///x",
            "file:///x/",
        ] {
            assert_eq!(normalize_location(same), "/x", "{same}");
        }
        assert_eq!(normalize_location("/a/../b/"), "/a/../b");
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            normalize_location("rel/x/"),
            cwd.join("rel/x").display().to_string()
        );
        assert_eq!(
            normalize_location("./rel"),
            normalize_location("file://rel/")
        );
        for same in ["s3://b/p", "s3://b/p/", "s3://b//p//"] {
            assert_eq!(normalize_location(same), "s3://b/p", "{same}");
        }
        assert_eq!(normalize_location("gs://b/"), "gs://b");
        assert!(!same_location("s3://b/p", "s3://b/q"));
        assert!(!same_location("s3://b/p", "gs://b/p"));
    }
}
