//! The catalog: a summary of every backup in the repository, kept in memory so the API
//! answers a list or a status from it (a request never reads manifests). It is filled at
//! start and refreshed by listing `backups/` and reading only the manifests it has not seen
//! (they are write-once); the daemon adds its own backups as it commits them.

use crate::error::Result;
use crate::repo::manifest::Manifest;
use crate::repo::Repository;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// One backup as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub id: String,
    pub time: String,
    /// Unix seconds of `time`, for ordering and ranges.
    #[serde(skip)]
    pub unix: i64,
    pub source: String,
    pub kind: String,
    /// `physical` for a PostgreSQL base backup, else the dump/image form.
    pub form: &'static str,
    pub host: String,
    pub run: Option<String>,
    pub tags: Vec<String>,
    pub trigger: String,
    pub description: Option<String>,
    pub size_bytes: u64,
    pub stored_bytes: u64,
    pub duration_ms: u64,
    pub encrypted: bool,
    /// The authentic verification record (`verify` or a drill with its `rto_ms`).
    pub verified: Option<serde_json::Value>,
}

impl Entry {
    pub fn from_manifest(m: &Manifest, encrypted: bool) -> Entry {
        let unix = m
            .time
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_second())
            .unwrap_or(0);
        Entry {
            id: m.id.clone(),
            time: m.time.clone(),
            unix,
            source: m.source.path.clone(),
            kind: m.source.kind.clone(),
            form: if m.postgres.as_ref().is_some_and(|p| p.physical.is_some()) {
                "physical"
            } else {
                "logical"
            },
            host: m.source.host.clone(),
            run: m.run.clone(),
            tags: m.tags.clone(),
            trigger: m.trigger.clone(),
            description: m.description.clone(),
            size_bytes: m.logical_bytes(),
            stored_bytes: m.stored.new_stored_bytes,
            duration_ms: m.duration_ms,
            encrypted,
            verified: None,
        }
    }

    /// `time` to the nanosecond (`unix` is whole seconds: a schedule counted from it would
    /// run up to a second early).
    pub fn timestamp(&self) -> Option<jiff::Timestamp> {
        self.time.parse().ok()
    }

    pub fn rto_ms(&self) -> Option<u64> {
        self.verified.as_ref()?.get("rto_ms")?.as_u64()
    }
}

/// What a refresh found: the backups listed, those new to the catalog, the verification
/// records when they were read.
#[derive(Default)]
pub struct Changes {
    pub present: std::collections::HashSet<String>,
    pub added: Vec<Entry>,
    pub records: Option<HashMap<String, serde_json::Value>>,
    /// Manifests that did not authenticate (keys changed, or tampering).
    pub unreadable: usize,
    /// Those of them that failed authentication (not a storage error).
    pub rejected: Vec<String>,
}

/// The filters of `GET /api/v1/backups`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    pub source: Option<String>,
    pub kind: Option<String>,
    pub tag: Option<String>,
    pub trigger: Option<String>,
    /// `verified`, `drilled` or `unverified`.
    pub status: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<usize>,
    /// `desc` (newest first, the default) or `asc`.
    pub order: Option<String>,
}

#[derive(Default)]
pub struct Catalog {
    entries: BTreeMap<String, Entry>,
    /// Listed backups whose manifest failed authentication even with the repository opened
    /// again: not read again while they are listed (manifests are write-once), so objects
    /// planted in the bucket cost one read each, not one per refresh.
    rejected: std::collections::HashSet<String>,
    refreshes: u64,
    pub repo_stored_bytes: Option<u64>,
}

impl Catalog {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// Backups of `source` (its path or configured name resolved by the caller), oldest first.
    pub fn of_source<'a>(&'a self, source: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.values().filter(move |e| e.source == source)
    }

    pub fn newest_of(&self, source: &str) -> Option<&Entry> {
        self.entries.values().rev().find(|e| e.source == source)
    }

    /// Add a backup this daemon just committed.
    pub fn add(&mut self, m: &Manifest, encrypted: bool) {
        let mut e = Entry::from_manifest(m, encrypted);
        if let Some(old) = self.entries.get(&m.id) {
            e.verified = old.verified.clone();
        }
        self.entries.insert(m.id.clone(), e);
    }

    pub fn set_verified(&mut self, id: &str, record: serde_json::Value) {
        if let Some(e) = self.entries.get_mut(id) {
            e.verified = Some(record);
        }
    }

    pub fn ids(&self) -> std::collections::HashSet<String> {
        self.entries.keys().cloned().collect()
    }

    /// The ids a refresh need not read: those in the catalog and those rejected before.
    pub fn seen(&self) -> std::collections::HashSet<String> {
        self.entries
            .keys()
            .chain(self.rejected.iter())
            .cloned()
            .collect()
    }

    /// Every tenth refresh re-reads all verification records (a record may be rewritten
    /// in place, which a listing does not show).
    pub fn records_due(&self) -> bool {
        self.refreshes % 10 == 0
    }

    /// What changed in the repository since the catalog held `known`: read without holding
    /// the catalog, so requests are answered meanwhile.
    pub fn fetch(
        repo: &Repository,
        known: &std::collections::HashSet<String>,
        all_records: bool,
    ) -> Result<Changes> {
        let encrypted = repo.is_encrypted();
        let listed: Vec<String> = repo
            .storage()
            .list("backups/")?
            .into_iter()
            .filter_map(|o| o.name.rsplit('/').next().map(str::to_string))
            .filter(|id| crate::id::is_backup_id(id))
            .collect();
        let mut changes = Changes {
            present: listed.iter().cloned().collect(),
            ..Changes::default()
        };
        for id in listed.iter().filter(|id| !known.contains(*id)) {
            match repo.read_manifest(id) {
                Ok(m) => changes.added.push(Entry::from_manifest(&m, encrypted)),
                // Deleted since listed: gone. One that does not authenticate is left out
                // (repo check names it), never shown.
                Err(e) if e.kind == crate::ErrorKind::NotFound => {}
                Err(e) => {
                    changes.unreadable += 1;
                    if matches!(
                        e.kind,
                        crate::ErrorKind::Integrity | crate::ErrorKind::Trust
                    ) {
                        changes.rejected.push(id.clone());
                    }
                    tracing::warn!("catalog: backup {id} left out: {e}");
                }
            }
        }
        if all_records || !changes.added.is_empty() {
            changes.records = Some(crate::ops::forget::verification_records(repo)?);
        }
        Ok(changes)
    }

    pub fn apply(&mut self, changes: Changes) -> usize {
        let before = self.entries.len();
        self.entries.retain(|id, _| changes.present.contains(id));
        self.rejected.retain(|id| changes.present.contains(id));
        self.rejected.extend(changes.rejected.iter().cloned());
        let removed = before - self.entries.len();
        let added = changes.added.len();
        for e in changes.added {
            self.entries.insert(e.id.clone(), e);
        }
        if let Some(records) = changes.records {
            for (id, e) in self.entries.iter_mut() {
                e.verified = records.get(id).cloned();
            }
        }
        self.refreshes += 1;
        added + removed
    }

    /// The backups `q` asks for, in its order, at most `limit` (default 100, at most 10,000).
    pub fn query(&self, q: &Query) -> std::result::Result<Vec<&Entry>, String> {
        let since = q.since.as_deref().map(parse_time).transpose()?;
        let until = q.until.as_deref().map(parse_time).transpose()?;
        let limit = q.limit.unwrap_or(100).min(10_000);
        let newest_first = match q.order.as_deref() {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(o) => return Err(format!("order {o:?}: asc or desc")),
        };
        if let Some(s) = q.status.as_deref() {
            if !matches!(s, "verified" | "drilled" | "unverified") {
                return Err(format!("status {s:?}: verified, drilled or unverified"));
            }
        }
        let keep = |e: &&Entry| {
            q.source.as_ref().is_none_or(|s| &e.source == s)
                && q.kind.as_ref().is_none_or(|k| &e.kind == k || e.form == k)
                && q.tag.as_ref().is_none_or(|t| e.tags.contains(t))
                && q.trigger.as_ref().is_none_or(|t| &e.trigger == t)
                && since.is_none_or(|s| e.unix >= s)
                && until.is_none_or(|u| e.unix <= u)
                && match q.status.as_deref() {
                    Some("verified") => e.verified.is_some(),
                    Some("drilled") => e.rto_ms().is_some(),
                    Some("unverified") => e.verified.is_none(),
                    _ => true,
                }
        };
        let values = self.entries.values();
        Ok(if newest_first {
            values.rev().filter(keep).take(limit).collect()
        } else {
            values.filter(keep).take(limit).collect()
        })
    }
}

/// An RFC 3339 time, or a date (midnight UTC).
fn parse_time(text: &str) -> std::result::Result<i64, String> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_second());
    }
    text.parse::<jiff::civil::Date>()
        .ok()
        .and_then(|d| d.to_zoned_datetime(jiff::tz::TimeZone::UTC).ok())
        .map(|z| z.timestamp().as_second())
        .ok_or_else(|| format!("{text:?} is not a time (2026-01-31T02:00:00Z or 2026-01-31)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, unix: i64, source: &str, tags: &[&str], trigger: &str) -> Entry {
        Entry {
            id: id.into(),
            time: jiff::Timestamp::from_second(unix).unwrap().to_string(),
            unix,
            source: source.into(),
            kind: "sqlite".into(),
            form: "logical",
            host: "h".into(),
            run: None,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            trigger: trigger.into(),
            description: None,
            size_bytes: 1,
            stored_bytes: 1,
            duration_ms: 1,
            encrypted: false,
            verified: None,
        }
    }

    fn catalog() -> Catalog {
        let mut c = Catalog::default();
        let day = 86_400;
        let base = 1_767_225_600; // 2026-01-01
        let added = vec![
            entry("01a", base, "/a.db", &["nightly"], "schedule"),
            entry("01b", base + day, "/b.db", &[], "api"),
            entry("01c", base + 2 * day, "/a.db", &["pre"], "pre-migration"),
            entry("01d", base + 3 * day, "/a.db", &[], "schedule"),
        ];
        let mut records = HashMap::new();
        records.insert(
            "01c".to_string(),
            serde_json::json!({"verified": "x", "rto_ms": 5}),
        );
        records.insert("01d".to_string(), serde_json::json!({"verified": "x"}));
        c.apply(Changes {
            present: added.iter().map(|e| e.id.clone()).collect(),
            added,
            records: Some(records),
            unreadable: 0,
            rejected: Default::default(),
        });
        c
    }

    fn ids(c: &Catalog, q: Query) -> Vec<String> {
        c.query(&q).unwrap().iter().map(|e| e.id.clone()).collect()
    }

    #[test]
    fn filters_orders_and_limits() {
        let c = catalog();
        assert_eq!(ids(&c, Query::default()), ["01d", "01c", "01b", "01a"]);
        let q = |f: fn(&mut Query)| {
            let mut q = Query::default();
            f(&mut q);
            q
        };
        assert_eq!(
            ids(&c, q(|q| q.order = Some("asc".into()))),
            ["01a", "01b", "01c", "01d"]
        );
        assert_eq!(
            ids(&c, q(|q| q.source = Some("/a.db".into()))),
            ["01d", "01c", "01a"]
        );
        assert_eq!(ids(&c, q(|q| q.tag = Some("pre".into()))), ["01c"]);
        assert_eq!(ids(&c, q(|q| q.trigger = Some("api".into()))), ["01b"]);
        assert_eq!(ids(&c, q(|q| q.status = Some("drilled".into()))), ["01c"]);
        assert_eq!(
            ids(&c, q(|q| q.status = Some("verified".into()))),
            ["01d", "01c"]
        );
        assert_eq!(
            ids(&c, q(|q| q.status = Some("unverified".into()))),
            ["01b", "01a"]
        );
        assert_eq!(
            ids(
                &c,
                q(|q| {
                    q.since = Some("2026-01-02".into());
                    q.until = Some("2026-01-03T00:00:00Z".into());
                })
            ),
            ["01c", "01b"]
        );
        assert_eq!(ids(&c, q(|q| q.limit = Some(2))), ["01d", "01c"]);
        assert!(c.query(&q(|q| q.order = Some("up".into()))).is_err());
        assert!(c.query(&q(|q| q.since = Some("yesterday".into()))).is_err());
        assert_eq!(c.newest_of("/a.db").map(|e| e.id.as_str()), Some("01d"));
    }

    #[test]
    fn a_refresh_drops_what_is_gone_and_keeps_records() {
        let mut c = catalog();
        let changed = c.apply(Changes {
            present: ["01a", "01c"].iter().map(|s| s.to_string()).collect(),
            added: Vec::new(),
            records: None,
            unreadable: 0,
            rejected: Default::default(),
        });
        assert_eq!(changed, 2);
        assert_eq!(ids(&c, Query::default()), ["01c", "01a"]);
        assert_eq!(c.get("01c").and_then(|e| e.rto_ms()), Some(5));
    }
}
