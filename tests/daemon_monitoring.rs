//! What docs/monitoring/ ships, checked against the real tools: `promtool` checks and
//! unit-tests the alert rules (and a wrong expression fails those tests), every metric name
//! the rules, the dashboard and the README use is one a running daemon serves, and a real
//! Prometheus scrapes the daemon with a bearer token, evaluates the shipped rules and
//! alerts on a failing source, while a scrape without the token is refused with 401.

mod common;

use common::daemon::{free_port, token_file, Daemon};
use common::Env;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring")
}

fn read_doc(name: &str) -> String {
    std::fs::read_to_string(docs().join(name))
        .unwrap_or_else(|e| panic!("docs/monitoring/{name}: {e}"))
}

/// A Prometheus tool: `$LIFEBOAT_<NAME>` or the first on PATH. Never skipped: a machine
/// without it fails here, saying what to install.
fn tool(name: &str) -> PathBuf {
    let var = format!("LIFEBOAT_{}", name.to_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{name} is not installed (nor named by ${var}): these tests run the real Prometheus \
         tools; install Debian's `prometheus` package (apt-get install prometheus), which \
         has both prometheus and promtool"
    );
}

/// Run promtool; (success, stdout + stderr).
fn promtool(args: &[&str], dir: &Path, stdin: Option<&[u8]>) -> (bool, String) {
    let mut c = Command::new(tool("promtool"));
    c.args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("run promtool");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input)
            .expect("promtool stdin");
    }
    let out = child.wait_with_output().expect("promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn yaml(text: &str) -> serde_norway::Value {
    serde_norway::from_str(text).expect("YAML")
}

/// The alert rules of the shipped file: name → (expr, labels, annotations).
fn alerts() -> BTreeMap<String, serde_norway::Value> {
    let rules = yaml(&read_doc("lifeboat.rules.yml"));
    let mut out = BTreeMap::new();
    for g in rules["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"]
                .as_str()
                .expect("only alerting rules")
                .to_string();
            assert!(
                out.insert(name.clone(), r.clone()).is_none(),
                "{name} twice"
            );
        }
    }
    out
}

#[test]
fn shipped_rules_pass_promtool_and_their_tests_catch_wrong_expressions() {
    let dir = docs();
    let (ok, out) = promtool(&["check", "rules", "lifeboat.rules.yml"], &dir, None);
    let alerts = alerts();
    assert!(ok, "promtool check rules:\n{out}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{out}"
    );
    let (ok, out) = promtool(&["test", "rules", "lifeboat.rules.test.yml"], &dir, None);
    assert!(ok && out.contains("SUCCESS"), "promtool test rules:\n{out}");

    // What the issue asks for is there, each alert labelled and explained.
    for name in [
        "LifeboatBackupFailed",
        "LifeboatBackupOverdue",
        "LifeboatReplicationLagging",
        "LifeboatDrillFailed",
        "LifeboatStorageAlmostFull",
        "LifeboatTargetUnreachable",
        "LifeboatDaemonDown",
    ] {
        assert!(alerts.contains_key(name), "no alert {name}");
    }
    for (name, r) in &alerts {
        let sev = r["labels"]["severity"].as_str().unwrap_or("");
        assert!(
            sev == "critical" || sev == "warning",
            "{name}: severity {sev:?}"
        );
        let summary = r["annotations"]["summary"].as_str().unwrap_or("");
        let desc = r["annotations"]["description"].as_str().unwrap_or("");
        assert!(
            summary.contains("{{ $labels.instance }}"),
            "{name}: the summary names the daemon"
        );
        assert!(
            desc.contains("What to do"),
            "{name}: the description says what to do"
        );
        let expr = r["expr"].as_str().unwrap();
        for (label, metric) in [("source", "lifeboat_backup"), ("target", "lifeboat_target")] {
            if expr.contains(metric) && !expr.contains("lifeboat_daemon") {
                assert!(
                    summary.contains(&format!("$labels.{label}")),
                    "{name}: the summary names the {label}"
                );
            }
        }
    }

    // Every alert has a case where it fires and one where it must not.
    let tests = yaml(&read_doc("lifeboat.rules.test.yml"));
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests["tests"].as_sequence().unwrap() {
        for c in t["alert_rule_test"].as_sequence().unwrap() {
            let name = c["alertname"].as_str().unwrap().to_string();
            match c["exp_alerts"].as_sequence() {
                Some(a) if !a.is_empty() => fires.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    for name in alerts.keys() {
        assert!(fires.contains(name), "no test where {name} fires");
        assert!(quiet.contains(name), "no test where {name} stays quiet");
    }

    // A wrong expression, threshold or `for` fails the unit tests: each mutation below is a
    // plausible mistake, applied to a copy of the rules next to a copy of the tests.
    let rules = read_doc("lifeboat.rules.yml");
    let test_file = read_doc("lifeboat.rules.test.yml");
    let mutations: &[(&str, &str)] = &[
        // counts successes too
        (
            r#"increase(lifeboat_backups_total{status="failure"}[15m])"#,
            r#"increase(lifeboat_backups_total[15m])"#,
        ),
        // forgets a failure after 5 minutes
        (r#"{status="failure"}[15m]"#, r#"{status="failure"}[5m]"#),
        // overdue after one interval instead of two
        (
            "> 2 * lifeboat_backup_interval_seconds",
            "> lifeboat_backup_interval_seconds",
        ),
        // overdue without waiting
        (
            "> 2 * lifeboat_backup_interval_seconds\n        for: 5m",
            "> 2 * lifeboat_backup_interval_seconds\n        for: 0m",
        ),
        // never-succeeded ignoring how long the daemon has run
        (
            "(time() - lifeboat_daemon_start_time_seconds)",
            "(time() + 0 * lifeboat_daemon_start_time_seconds)",
        ),
        // never-succeeded excluding every source of a daemon with one backup
        (
            "unless on (instance, job, source)",
            "unless on (instance, job)",
        ),
        (
            "lifeboat_replication_lag_seconds > 120",
            "lifeboat_replication_lag_seconds > 60",
        ),
        (
            "lifeboat_drill_last_success == 0",
            "lifeboat_drill_last_success == 1",
        ),
        (
            "lifeboat_storage_used_ratio > 0.85",
            "lifeboat_storage_used_ratio >= 0.85",
        ),
        ("lifeboat_target_up == 0", "lifeboat_target_up < 2"),
        (r#"up{job="lifeboat"} == 0"#, "up == 0"),
        (
            "lifeboat_health_check_ok == 0\n        for: 10m",
            "lifeboat_health_check_ok == 0\n        for: 5m",
        ),
        ("> 8 * 86400", "> 7 * 86400"),
        (
            "increase(lifeboat_webhook_failures_total[1h]) > 0",
            "lifeboat_webhook_failures_total > 0",
        ),
    ];
    let env = Env::new();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = mutations
            .chunks(mutations.len().div_ceil(3))
            .enumerate()
            .map(|(n, chunk)| {
                let (env, rules, test_file) = (&env, &rules, &test_file);
                scope.spawn(move || {
                    let mut survived = Vec::new();
                    for (i, (from, to)) in chunk.iter().enumerate() {
                        assert_eq!(
                            rules.matches(from).count(),
                            1,
                            "mutation {from:?} is not unique"
                        );
                        let dir = env.path(&format!("mutant-{n}-{i}"));
                        std::fs::create_dir_all(&dir).unwrap();
                        std::fs::write(dir.join("lifeboat.rules.yml"), rules.replacen(from, to, 1))
                            .unwrap();
                        std::fs::write(dir.join("lifeboat.rules.test.yml"), test_file).unwrap();
                        // The mutant still loads: it is the tests that catch it.
                        let (loads, out) =
                            promtool(&["check", "rules", "lifeboat.rules.yml"], &dir, None);
                        assert!(loads, "mutant {to:?} does not load: {out}");
                        let (ok, _) =
                            promtool(&["test", "rules", "lifeboat.rules.test.yml"], &dir, None);
                        if ok {
                            survived.push(format!("{from:?} -> {to:?}"));
                        }
                    }
                    survived
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "the rules' unit tests still pass with these wrong expressions: {failures:#?}"
    );
}

#[test]
fn dashboard_is_grafana_json_with_a_datasource_input() {
    let d: serde_json::Value =
        serde_json::from_str(&read_doc("grafana-dashboard.json")).expect("JSON");
    assert_eq!(d["schemaVersion"], 39);
    assert_eq!(d["uid"], "lifeboat-daemon");
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_i64().unwrap()), "panel id twice: {p}");
        let g = &p["gridPos"];
        assert!(
            g["x"].as_i64().unwrap() + g["w"].as_i64().unwrap() <= 24,
            "panel wider than the grid: {p}"
        );
        if p["type"] == "row" {
            continue;
        }
        titles.push(p["title"].as_str().unwrap().to_string());
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
            assert!(
                t["expr"]
                    .as_str()
                    .is_some_and(|e| e.contains("lifeboat") || e.contains("up{")),
                "{}",
                p["title"]
            );
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        assert_eq!(v["datasource"]["uid"], "${DS_PROMETHEUS}");
    }
    for want in [
        "Backups by status per source",
        "Time since last success vs. interval",
        "Backup duration (quantiles)",
        "Latest backup size",
        "Replication lag",
        "Drill RTO",
        "Last drill result",
        "Storage used",
        "Target up",
        "Repository size",
        "Backups in the repository",
        "Jobs running",
        "Webhook failures",
    ] {
        assert!(
            titles.iter().any(|t| t == want),
            "no panel {want:?}: {titles:?}"
        );
    }
}

/// The PromQL expressions of the dashboard, its variables filled as Grafana fills them.
fn dashboard_queries() -> Vec<(String, String)> {
    let d: serde_json::Value = serde_json::from_str(&read_doc("grafana-dashboard.json")).unwrap();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$instance", ".*")
                .replace("$source", ".*")
                .replace("$__rate_interval", "30s");
            out.push((p["title"].as_str().unwrap().to_string(), expr));
        }
    }
    out
}

/// `lifeboat_…` names in a text; histogram series named by their family.
fn metric_tokens(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("lifeboat_") {
        let start = i + at;
        let boundary =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start + "lifeboat_".len();
        while end < b.len() && (b[end].is_ascii_lowercase() || b[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.insert(family(&text[start..end]).to_string());
        }
        i = end;
    }
    out
}

fn family(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(f) = name.strip_suffix(suffix) {
            return f;
        }
    }
    name
}

/// The exposition: TYPE of each family, and each sample name with its label names.
struct Exposition {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, BTreeSet<String>>,
}

fn parse_exposition(body: &str) -> Exposition {
    let mut types = BTreeMap::new();
    let mut samples: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').unwrap();
            types.insert(name.to_string(), t.to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap();
            let name = line[..end].to_string();
            let labels = samples.entry(name).or_default();
            if line[end..].starts_with('{') {
                let inner = &line[end + 1..line.find('}').unwrap()];
                for pair in inner.split("\",") {
                    let key = pair.split('=').next().unwrap().trim_matches(',');
                    if key != "le" {
                        labels.insert(key.to_string());
                    }
                }
            }
        }
    }
    Exposition { types, samples }
}

struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
    agent: ureq::Agent,
}

impl Prometheus {
    fn start(env: &Env, config: &Path) -> Prometheus {
        let port = free_port();
        let log = env.path("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                env.path("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(env.dir.path())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start prometheus");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let p = Prometheus {
            child,
            port,
            log,
            agent,
        };
        p.wait("Prometheus is ready", Duration::from_secs(60), || {
            p.agent
                .get(format!("http://127.0.0.1:{port}/-/ready"))
                .call()
                .is_ok_and(|r| r.status() == 200)
        });
        p
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn api(&self, path: &str, query: &[(&str, &str)]) -> serde_json::Value {
        let mut req = self
            .agent
            .get(format!("http://127.0.0.1:{}{path}", self.port));
        for (k, v) in query {
            req = req.query(*k, *v);
        }
        let mut resp = req.call().expect("Prometheus answers");
        let body = resp.body_mut().read_to_string().unwrap();
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// An instant query; panics on a PromQL error.
    fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let v = self.api("/api/v1/query", &[("query", expr)]);
        assert_eq!(v["status"], "success", "{expr}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The single value of an instant query, None while it has no result.
    fn value(&self, expr: &str) -> Option<f64> {
        let r = self.query(expr);
        assert!(r.len() <= 1, "{expr}: {r:?}");
        r.first()
            .and_then(|s| s["value"][1].as_str())
            .map(|v| v.parse().unwrap())
    }

    fn alerts(&self) -> Vec<serde_json::Value> {
        self.api("/api/v1/alerts", &[])["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn wait(&self, what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
        let until = Instant::now() + limit;
        while !ok() {
            assert!(
                Instant::now() < until,
                "timed out waiting until {what}\nPrometheus log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sqlite_db(path: &Path, rows: i64, wal: bool) {
    let db = rusqlite::Connection::open(path).unwrap();
    if wal {
        db.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .unwrap();
    }
    db.execute_batch("CREATE TABLE t(x INTEGER, pad TEXT);")
        .unwrap();
    for i in 0..rows {
        db.execute("INSERT INTO t VALUES (?1, hex(randomblob(32)))", [i])
            .unwrap();
    }
}

fn alert_of<'a>(
    alerts: &'a [serde_json::Value],
    name: &str,
    label: &str,
    value: &str,
) -> Option<&'a serde_json::Value> {
    alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == name && a["labels"][label] == value)
}

#[test]
fn prometheus_scrapes_the_daemon_with_a_token_and_the_shipped_rules_alert() {
    let env = Env::new();
    env.cmd().args(["repo", "init"]).assert().success();
    let app = env.path("app.db");
    sqlite_db(&app, 50, false);
    let live = env.path("live.db");
    sqlite_db(&live, 5, true);
    let once = env.path("once.db");
    sqlite_db(&once, 5, false);
    // Not a database: every backup of it fails.
    let broken = env.path("broken.db");
    std::fs::write(&broken, "this is not a database\n").unwrap();
    // A replica under a regular file: unreachable, so the target metrics have a failing target.
    let replica = format!("{}/replica", broken.display());
    // `once` fails exactly once: when this flag exists (the command removes it).
    let flag = env.path("fail-once");
    let (tok, token) = token_file(&env, "prometheus");
    let (wrong_tok, _) = token_file(&env, "unknown");
    let port = free_port();
    // Nobody listens there: every webhook delivery is given up.
    let dead_hook = free_port();
    let config = format!(
        r#"repo = "{repo}"
replicas = ["{replica}"]
[daemon]
listen = "127.0.0.1:{port}"
refresh = "1s"
health = "every 3s"
retry_delay = "1s"
[[daemon.token]]
name = "prometheus"
file = "{tok}"
scopes = ["read"]
[[daemon.webhook]]
url = "http://127.0.0.1:{dead_hook}/hook"
attempts = 1
timeout = "1s"
[[source]]
name = "app"
path = "{app}"
schedule = "every 2s"
drill = "every 3s"
[[source]]
name = "live"
path = "{live}"
schedule = "continuous"
[[source]]
name = "broken"
path = "{broken}"
kind = "sqlite"
schedule = "every 2s"
[[source]]
name = "once"
path = "{once}"
schedule = "every 2s"
before = "if [ -e '{flag}' ]; then rm -f '{flag}'; exit 1; fi"
"#,
        repo = env.repo().display(),
        tok = tok.display(),
        app = app.display(),
        live = live.display(),
        broken = broken.display(),
        once = once.display(),
        flag = flag.display(),
    );
    let mut d = Daemon::start(&env, &config, port);
    d.wait_until(
        Duration::from_secs(60),
        "a backup, a drill and a health check",
        |d| {
            let m = d.get("/metrics", Some(&token)).text();
            m.contains("lifeboat_backups_total{source=\"app\",kind=\"sqlite\",status=\"success\"}")
                && m.contains("lifeboat_drill_last_success{source=\"app\"} 1")
                && m.contains("lifeboat_health_check_ok{source=\"app\"}")
                && m.contains("lifeboat_replication_lag_seconds{source=\"live\"}")
                && m.contains("lifeboat_target_errors_total{")
        },
    );
    d.signal(libc::SIGHUP);
    d.wait_until(Duration::from_secs(30), "the reload is counted", |d| {
        d.get("/metrics", Some(&token))
            .text()
            .contains("lifeboat_config_reloads_total{event=\"success\"} 1")
    });
    {
        let w = rusqlite::Connection::open(&live).unwrap();
        w.execute("INSERT INTO t VALUES (1000, 'after start')", [])
            .unwrap();
    }

    // /metrics: OpenMetrics as declared, refused without the token.
    assert_eq!(d.get("/metrics", None).status, 401);
    let m = d.get("/metrics", Some(&token));
    assert_eq!(m.status, 200);
    let ctype = m.header("content-type").unwrap_or("").to_string();
    assert!(
        ctype.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ctype}"
    );
    let body = m.text();
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(!body.contains(&token), "the token is in /metrics");
    // The failure counter of a source that never failed exists at 0, so increase() sees
    // its first failure.
    assert!(
        body.contains("lifeboat_backups_total{source=\"app\",kind=\"\",status=\"failure\"} 0"),
        "{body}"
    );
    // So does each webhook event's (retention never runs here).
    assert!(
        body.contains("lifeboat_webhook_failures_total{event=\"retention.cleanup\"} 0"),
        "{body}"
    );
    let expo = parse_exposition(&body);
    let families: BTreeSet<String> = expo.samples.keys().map(|n| family(n).to_string()).collect();

    // Every name the rules, the dashboard and the README use is served.
    for (file, text) in [
        ("lifeboat.rules.yml", read_doc("lifeboat.rules.yml")),
        (
            "lifeboat.rules.test.yml",
            read_doc("lifeboat.rules.test.yml"),
        ),
        ("grafana-dashboard.json", read_doc("grafana-dashboard.json")),
        ("README.md", read_doc("README.md")),
    ] {
        let used = metric_tokens(&text);
        assert!(used.len() >= 5, "{file}: {used:?}");
        let unknown: Vec<_> = used.difference(&families).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics the daemon does not serve: {unknown:?}\nserved: {families:?}"
        );
    }
    // The README's table is the registry: every metric, its type and its labels.
    let readme = read_doc("README.md");
    let mut rows = BTreeMap::new();
    for line in readme.lines().filter(|l| l.starts_with("| `lifeboat_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_string();
        let labels: BTreeSet<String> = cells[3]
            .split(", ")
            .filter(|l| *l != "—")
            .map(str::to_string)
            .collect();
        rows.insert(name, (cells[2].to_string(), labels));
    }
    let registered = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/daemon/metrics.rs"),
    )
    .unwrap()
    .matches("r.register(")
    .count();
    assert_eq!(expo.types.len(), registered, "{:?}", expo.types);
    assert_eq!(rows.len(), registered, "README rows: {:?}", rows.keys());
    for (fam, t) in &expo.types {
        let sample = if t == "counter" {
            format!("{fam}_total")
        } else {
            fam.clone()
        };
        let (rt, rlabels) = rows
            .get(&sample)
            .unwrap_or_else(|| panic!("README has no row for {sample}"));
        assert_eq!(rt, t, "README type of {sample}");
        let served = expo
            .samples
            .get(&if t == "histogram" {
                format!("{fam}_bucket")
            } else {
                sample.clone()
            })
            .unwrap_or_else(|| {
                panic!(
                    "no sample of {sample} after a backup, drill, health check and reload:\n{body}"
                )
            });
        assert_eq!(rlabels, served, "README labels of {sample}");
    }

    // promtool reads the exposition: the only thing it reports is the HELP of counters,
    // which OpenMetrics writes on the family name (no parse error, nothing else).
    let (_, out) = promtool(&["check", "metrics"], env.dir.path(), Some(body.as_bytes()));
    let mut reported = 0;
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let name = line
            .strip_suffix(" no help text")
            .unwrap_or_else(|| panic!("promtool check metrics: {out}"));
        let fam = name
            .strip_suffix("_total")
            .unwrap_or_else(|| panic!("{out}"));
        assert_eq!(
            expo.types.get(fam).map(String::as_str),
            Some("counter"),
            "{out}"
        );
        assert!(body.contains(&format!("# HELP {fam} ")), "{out}");
        reported += 1;
    }
    let counters = expo.types.values().filter(|t| *t == "counter").count();
    assert_eq!(reported, counters, "{out}");

    // A real Prometheus, configured from the shipped example: the token file, this daemon,
    // the shipped rules, every second. Two more jobs scrape without a token and with one
    // the daemon does not know.
    let mut prom: serde_norway::Value = yaml(&read_doc("prometheus.yml"));
    prom["global"]["scrape_interval"] = "1s".into();
    prom["global"]["scrape_timeout"] = "1s".into();
    prom["global"]["evaluation_interval"] = "1s".into();
    prom["rule_files"] = serde_norway::Value::Sequence(vec![docs()
        .join("lifeboat.rules.yml")
        .display()
        .to_string()
        .into()]);
    let job = &mut prom["scrape_configs"][0];
    assert_eq!(job["job_name"], "lifeboat");
    assert_eq!(job["authorization"]["type"], "Bearer");
    job["authorization"]["credentials_file"] = tok.display().to_string().into();
    job["static_configs"][0]["targets"][0] = format!("127.0.0.1:{port}").into();
    let mut noauth = job.clone();
    noauth["job_name"] = "lifeboat-noauth".into();
    if let serde_norway::Value::Mapping(m) = &mut noauth {
        m.remove("authorization");
    }
    let mut wrong = job.clone();
    wrong["job_name"] = "lifeboat-wrongtoken".into();
    wrong["authorization"]["credentials_file"] = wrong_tok.display().to_string().into();
    let jobs = prom["scrape_configs"].as_sequence_mut().unwrap();
    jobs.push(noauth);
    jobs.push(wrong);
    let prom_config = env.path("prometheus.yml");
    std::fs::write(&prom_config, serde_norway::to_string(&prom).unwrap()).unwrap();
    let (ok, out) = promtool(
        &["check", "config", prom_config.to_str().unwrap()],
        env.dir.path(),
        None,
    );
    assert!(ok, "promtool check config:\n{out}");
    let p = Prometheus::start(&env, &prom_config);

    p.wait(
        "two successful backups of app are scraped",
        Duration::from_secs(60),
        || {
            p.value(r#"lifeboat_backups_total{job="lifeboat",source="app",status="success"}"#)
                .is_some_and(|v| v >= 2.0)
        },
    );
    assert_eq!(p.value(r#"up{job="lifeboat"}"#), Some(1.0));
    let age = p
        .value(r#"time() - lifeboat_backup_last_success_timestamp_seconds{source="app"}"#)
        .unwrap();
    assert!(
        (-5.0..60.0).contains(&age),
        "newest backup of app {age} s old"
    );

    // Auth is enforced: without the token, or with an unknown one, the scrape gets 401.
    p.wait(
        "the unauthenticated targets are down",
        Duration::from_secs(30),
        || {
            let t = p.api("/api/v1/targets", &[]);
            let targets = t["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let by_job = |j: &str| {
                targets
                    .iter()
                    .find(|t| t["labels"]["job"] == j)
                    .cloned()
                    .unwrap_or_default()
            };
            let ok = by_job("lifeboat");
            let (noauth, wrong) = (by_job("lifeboat-noauth"), by_job("lifeboat-wrongtoken"));
            ok["health"] == "up"
                && ok["lastError"] == ""
                && [noauth, wrong].iter().all(|t| {
                    t["health"] == "down"
                        && t["lastError"].as_str().is_some_and(|e| e.contains("401"))
                })
        },
    );
    assert_eq!(p.value(r#"up{job="lifeboat-noauth"}"#), Some(0.0));
    assert!(p
        .query(r#"lifeboat_build_info{job="lifeboat-noauth"}"#)
        .is_empty());

    // Every rule evaluates without error on real series (label matching included).
    p.wait("the rules are evaluated", Duration::from_secs(30), || {
        let r = p.api("/api/v1/rules", &[]);
        let rules: Vec<serde_json::Value> = r["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        for rule in &rules {
            assert_ne!(
                rule["health"], "err",
                "rule {} fails to evaluate: {rule}",
                rule["name"]
            );
        }
        rules.len() == alerts().len() && rules.iter().all(|r| r["health"] == "ok")
    });

    // The failing source alerts; the other alerts with a `for` are pending on real data.
    p.wait(
        "LifeboatBackupFailed fires for broken",
        Duration::from_secs(60),
        || {
            let a = p.alerts();
            alert_of(&a, "LifeboatBackupFailed", "source", "broken")
                .is_some_and(|a| a["state"] == "firing")
                && alert_of(&a, "LifeboatBackupNeverSucceeded", "source", "broken").is_some()
                && alert_of(&a, "LifeboatTargetUnreachable", "target", &replica).is_some()
        },
    );
    let a = p.alerts();
    let failed = alert_of(&a, "LifeboatBackupFailed", "source", "broken").unwrap();
    assert_eq!(failed["labels"]["severity"], "warning");
    assert_eq!(failed["labels"]["kind"], "sqlite");
    assert!(
        failed["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("Backup of broken failed on 127.0.0.1:{port}")),
        "{failed}"
    );
    assert!(
        alert_of(&a, "LifeboatBackupFailed", "source", "app").is_none(),
        "{a:?}"
    );
    assert!(
        alert_of(&a, "LifeboatBackupFailed", "source", "once").is_none(),
        "{a:?}"
    );
    assert!(
        alert_of(&a, "LifeboatBackupNeverSucceeded", "source", "app").is_none(),
        "{a:?}"
    );
    assert_eq!(
        alert_of(&a, "LifeboatBackupNeverSucceeded", "source", "broken").unwrap()["state"],
        "pending"
    );
    assert!(
        alert_of(&a, "LifeboatDrillFailed", "source", "app").is_none(),
        "{a:?}"
    );
    assert!(alert_of(
        &a,
        "LifeboatTargetUnreachable",
        "target",
        &env.repo().display().to_string()
    )
    .is_none());
    assert!(
        a.iter()
            .all(|x| x["labels"]["alertname"] != "LifeboatDaemonDown"),
        "{a:?}"
    );

    // One failure of a source that otherwise succeeds alerts too: Prometheus saw its
    // failure counter at 0 first.
    p.wait(
        "the failure counter of once is scraped at 0",
        Duration::from_secs(30),
        || {
            p.value(
                r#"count_over_time(lifeboat_backups_total{source="once",status="failure"}[1m])"#,
            )
            .is_some_and(|n| n >= 3.0)
                && p.value(
                    r#"max_over_time(lifeboat_backups_total{source="once",status="failure"}[1m])"#,
                ) == Some(0.0)
        },
    );
    std::fs::write(&flag, "").unwrap();
    p.wait(
        "one failure of once alerts",
        Duration::from_secs(60),
        || alert_of(&p.alerts(), "LifeboatBackupFailed", "source", "once").is_some(),
    );
    assert!(!flag.exists(), "the before command did not run");
    assert_eq!(
        p.value(r#"lifeboat_backups_total{source="once",status="failure"}"#),
        Some(1.0),
        "once failed more than once"
    );

    // Every dashboard query is valid PromQL with a result on this daemon.
    let label_values = p.api(
        "/api/v1/label/source/values",
        &[("match[]", "lifeboat_backups_total")],
    );
    for s in ["app", "broken", "once"] {
        assert!(
            label_values["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == s),
            "{label_values}"
        );
    }
    for (title, expr) in dashboard_queries() {
        p.wait(
            &format!("panel {title:?} has data: {expr}"),
            Duration::from_secs(30),
            || !p.query(&expr).is_empty(),
        );
    }

    drop(p);
    let s = d.stop(Duration::from_secs(60));
    assert!(s.success(), "{s}\n{}", d.log_text());
}
