//! `/metrics`: the daemon's state in Prometheus' text format (prometheus-client). Every
//! name here is what `docs/monitoring/` (alert rules, Grafana dashboard) uses; renaming one
//! breaks users' alerts, so a rename is a documented change.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackupLabels {
    pub source: String,
    pub kind: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub source: String,
    pub job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub backups: Family<BackupLabels, Counter>,
    pub backup_duration: Family<SourceLabel, Histogram>,
    pub last_size: Family<SourceLabel, Gauge>,
    pub last_success: Family<SourceLabel, Gauge>,
    pub backup_interval: Family<SourceLabel, Gauge>,
    pub next_run: Family<SourceLabel, Gauge>,
    pub replication_lag: Family<SourceLabel, FloatGauge>,
    pub uploaded: Counter,
    pub target_errors: Family<TargetLabel, Counter>,
    pub target_up: Family<TargetLabel, Gauge>,
    pub repo_size: Gauge,
    pub repo_backups: Gauge,
    pub drill_rto: Family<SourceLabel, FloatGauge>,
    pub drill_last_success: Family<SourceLabel, Gauge>,
    pub drill_last_time: Family<SourceLabel, Gauge>,
    pub verify_last_success: Family<SourceLabel, Gauge>,
    pub storage_used: Family<TargetLabel, FloatGauge>,
    pub health_ok: Family<SourceLabel, Gauge>,
    pub jobs_running: Gauge,
    pub job_failures: Family<JobLabels, Counter>,
    pub webhook_failures: Family<EventLabel, Counter>,
    pub start_time: Gauge,
    pub build_info: Family<VersionLabel, Gauge>,
    pub config_reloads: Family<EventLabel, Counter>,
}

pub fn source(s: &str) -> SourceLabel {
    SourceLabel {
        source: s.to_string(),
    }
}

pub fn target(t: &str) -> TargetLabel {
    TargetLabel {
        target: t.to_string(),
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::default();
        // A backup takes from under a second (a small SQLite file) to hours (a big cluster).
        let backup_duration = Family::<SourceLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0])
        });
        let m = Metrics {
            backups: Family::default(),
            backup_duration,
            last_size: Family::default(),
            last_success: Family::default(),
            backup_interval: Family::default(),
            next_run: Family::default(),
            replication_lag: Family::default(),
            uploaded: Counter::default(),
            target_errors: Family::default(),
            target_up: Family::default(),
            repo_size: Gauge::default(),
            repo_backups: Gauge::default(),
            drill_rto: Family::default(),
            drill_last_success: Family::default(),
            drill_last_time: Family::default(),
            verify_last_success: Family::default(),
            storage_used: Family::default(),
            health_ok: Family::default(),
            jobs_running: Gauge::default(),
            job_failures: Family::default(),
            webhook_failures: Family::default(),
            start_time: Gauge::default(),
            build_info: Family::default(),
            config_reloads: Family::default(),
            registry: Registry::default(),
        };
        // Counters get `_total` from the encoder.
        r.register(
            "lifeboat_backups",
            "Backups taken by the daemon, by source, kind and status (success, failure)",
            m.backups.clone(),
        );
        r.register(
            "lifeboat_backup_duration_seconds",
            "How long each backup took",
            m.backup_duration.clone(),
        );
        r.register(
            "lifeboat_backup_last_size_bytes",
            "Size of the newest backup's database (or files)",
            m.last_size.clone(),
        );
        r.register(
            "lifeboat_backup_last_success_timestamp_seconds",
            "When the newest backup of each source was taken (Unix time)",
            m.last_success.clone(),
        );
        r.register(
            "lifeboat_backup_interval_seconds",
            "The time between two scheduled backups (what overdue is measured against)",
            m.backup_interval.clone(),
        );
        r.register(
            "lifeboat_backup_next_run_timestamp_seconds",
            "When the next scheduled backup runs (Unix time)",
            m.next_run.clone(),
        );
        r.register(
            "lifeboat_replication_lag_seconds",
            "Age of the oldest commit not shipped yet, per continuously replicated source",
            m.replication_lag.clone(),
        );
        r.register(
            "lifeboat_uploaded_bytes",
            "Bytes the daemon's backups stored in the repository",
            m.uploaded.clone(),
        );
        r.register(
            "lifeboat_target_errors",
            "Errors reaching a storage target (the repository or a replica)",
            m.target_errors.clone(),
        );
        r.register(
            "lifeboat_target_up",
            "1 when the target answered the last health check, else 0",
            m.target_up.clone(),
        );
        r.register(
            "lifeboat_repository_size_bytes",
            "Bytes stored in the repository (packs and indexes)",
            m.repo_size.clone(),
        );
        r.register(
            "lifeboat_repository_backups",
            "Backups in the repository",
            m.repo_backups.clone(),
        );
        r.register(
            "lifeboat_drill_rto_seconds",
            "Measured restore time of the last passed drill",
            m.drill_rto.clone(),
        );
        r.register(
            "lifeboat_drill_last_success",
            "1 when the last drill of the source passed, 0 when it failed",
            m.drill_last_success.clone(),
        );
        r.register(
            "lifeboat_drill_last_timestamp_seconds",
            "When the last drill of the source ran (Unix time)",
            m.drill_last_time.clone(),
        );
        r.register(
            "lifeboat_verify_last_success_timestamp_seconds",
            "When a backup of the source last passed verify or a drill (Unix time)",
            m.verify_last_success.clone(),
        );
        r.register(
            "lifeboat_storage_used_ratio",
            "Used fraction of the disk of each local target",
            m.storage_used.clone(),
        );
        r.register(
            "lifeboat_health_check_ok",
            "1 when the last health check of the source passed, else 0",
            m.health_ok.clone(),
        );
        r.register(
            "lifeboat_jobs_running",
            "Jobs running now",
            m.jobs_running.clone(),
        );
        r.register(
            "lifeboat_job_failures",
            "Failed jobs (after their retries), by source and job",
            m.job_failures.clone(),
        );
        r.register(
            "lifeboat_webhook_failures",
            "Webhook deliveries given up after every retry",
            m.webhook_failures.clone(),
        );
        r.register(
            "lifeboat_daemon_start_time_seconds",
            "When the daemon started (Unix time)",
            m.start_time.clone(),
        );
        r.register(
            "lifeboat_build_info",
            "The daemon's version (value 1)",
            m.build_info.clone(),
        );
        r.register(
            "lifeboat_config_reloads",
            "Config reloads (SIGHUP), by event (success, failure)",
            m.config_reloads.clone(),
        );
        m.build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        m.start_time.set(jiff::Timestamp::now().as_second());
        Metrics { registry: r, ..m }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
