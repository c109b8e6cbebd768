//! Retention policy: which backups to keep, and why. A pure function of the backups, the
//! policy, the current time and a time zone, so it is tested exhaustively on its own
//! (`forget` applies it to a repository).
//!
//! Per source (one group of backups), newest first:
//! 1. Pre-restore safety backups follow their own rule (`keep_pre_restore`, default 7 days
//!    from now) and are not counted by the other rules.
//! 2. Keep rules, a backup is kept if any one keeps it: `keep_last N`; `keep_hourly`, `daily`,
//!    `weekly`, `monthly`, `yearly N` (the newest backup of each of the N newest calendar
//!    periods that have a backup, restic's semantics); `keep_within D` (everything within D
//!    of the newest backup, so a policy never erodes when backups stop); `keep_within_daily
//!    D` etc. (the newest of each period within D of the newest backup); `keep_tag T`. With
//!    no keep rule at all, every backup is kept and only the limits below remove any.
//! 3. Limits, in this order: `max_age D` removes kept backups older than D (from now);
//!    `max_count N` removes the oldest kept beyond N; `min_count N` keeps the newest N whatever
//!    the other rules said.
//! 4. Pinned backups are kept. Unless forced: the newest backup that passed a full
//!    verification, and the only backup of a source, are kept; a result that keeps no
//!    backup of a source is refused.
//!
//! Periods are calendar periods in the given time zone: hours, days, ISO weeks (Monday to
//! Sunday), months, years.

use crate::error::{Error, Result};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, ZonedDateTime};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A count that may be unlimited (`all`, or `-1` as restic spells it).
pub type Count = u32;
pub const UNLIMITED: Count = u32::MAX;

/// A retention policy. Every field is optional; see the module comment for the semantics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none", with = "count_opt")]
    pub keep_last: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "count_opt")]
    pub keep_hourly: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "count_opt")]
    pub keep_daily: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "count_opt")]
    pub keep_weekly: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "count_opt")]
    pub keep_monthly: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "count_opt")]
    pub keep_yearly: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<Age>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_hourly: Option<Age>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_daily: Option<Age>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_weekly: Option<Age>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_monthly: Option<Age>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within_yearly: Option<Age>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_tag: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_count: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Age>,
    /// How long pre-restore safety backups are kept (default 7 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_pre_restore: Option<Age>,
}

/// Default life of a pre-restore safety backup.
pub const PRE_RESTORE_DEFAULT: &str = "7d";

impl Policy {
    /// True when some rule says what to keep or remove (an empty policy is refused: it
    /// would be a typo, not an intent).
    pub fn is_empty(&self) -> bool {
        self.keep_rules().is_empty()
            && self.min_count.is_none()
            && self.max_count.is_none()
            && self.max_age.is_none()
    }

    fn periods(&self) -> [(Period, Option<Count>, Option<&Age>); 5] {
        [
            (
                Period::Hour,
                self.keep_hourly,
                self.keep_within_hourly.as_ref(),
            ),
            (
                Period::Day,
                self.keep_daily,
                self.keep_within_daily.as_ref(),
            ),
            (
                Period::Week,
                self.keep_weekly,
                self.keep_within_weekly.as_ref(),
            ),
            (
                Period::Month,
                self.keep_monthly,
                self.keep_within_monthly.as_ref(),
            ),
            (
                Period::Year,
                self.keep_yearly,
                self.keep_within_yearly.as_ref(),
            ),
        ]
    }

    fn keep_rules(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.keep_last.is_some() {
            v.push("keep_last");
        }
        if self.keep_within.is_some() {
            v.push("keep_within");
        }
        if !self.keep_tag.is_empty() {
            v.push("keep_tag");
        }
        for (p, n, w) in self.periods() {
            if n.is_some() || w.is_some() {
                v.push(p.name());
            }
        }
        v
    }

    /// A one-line description, e.g. `daily 7, weekly 4, max-age 90d`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let count = |n: Count| {
            if n == UNLIMITED {
                "all".to_string()
            } else {
                n.to_string()
            }
        };
        if let Some(n) = self.keep_last {
            parts.push(format!("last {}", count(n)));
        }
        for (p, n, w) in self.periods() {
            if let Some(n) = n {
                parts.push(format!("{} {}", p.name(), count(n)));
            }
            if let Some(w) = w {
                parts.push(format!("{} within {w}", p.name()));
            }
        }
        if let Some(w) = &self.keep_within {
            parts.push(format!("within {w}"));
        }
        for t in &self.keep_tag {
            parts.push(format!("tag {t}"));
        }
        if let Some(a) = &self.max_age {
            parts.push(format!("max-age {a}"));
        }
        if let Some(n) = self.max_count {
            parts.push(format!("max-count {n}"));
        }
        if let Some(n) = self.min_count {
            parts.push(format!("min-count {n}"));
        }
        parts.join(", ")
    }
}

/// An age such as `48h`, `7d`, `4w`, `6m` (months), `1y`, or combined: `1y6m`.
/// Months and years are calendar months and years in the policy's time zone.
#[derive(Debug, Clone)]
pub struct Age {
    text: String,
    span: Span,
}

impl Age {
    pub fn parse(text: &str) -> Result<Age> {
        let bad = || {
            Error::usage(format!("'{text}' is not an age"))
                .hint("write a number and a unit: h (hours), d (days), w (weeks), m (months), y (years), e.g. 48h, 90d, 1y6m")
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(bad());
        }
        let mut span = Span::new();
        let mut digits = String::new();
        for c in t.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let n: i64 = digits.parse().map_err(|_| bad())?;
            digits.clear();
            span = match c {
                'h' => span.try_hours(n),
                'd' => span.try_days(n),
                'w' => span.try_weeks(n),
                'm' => span.try_months(n),
                'y' => span.try_years(n),
                _ => return Err(bad()),
            }
            .map_err(|_| bad())?;
        }
        if !digits.is_empty() {
            return Err(bad());
        }
        Ok(Age {
            text: t.to_string(),
            span,
        })
    }

    /// The instant this age before `reference`, in `tz` (so months are calendar months).
    pub fn before(&self, reference: Timestamp, tz: &TimeZone) -> Timestamp {
        reference
            .to_zoned_datetime(tz.clone())
            .checked_sub(self.span)
            .map(|z| z.timestamp())
            .unwrap_or(Timestamp::MIN)
    }
}

impl PartialEq for Age {
    fn eq(&self, other: &Age) -> bool {
        self.text == other.text
    }
}

impl std::fmt::Display for Age {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Age {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Age {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Age, D::Error> {
        let text = String::deserialize(d)?;
        Age::parse(&text).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// Parse a count: a number from 1, `all`, `unlimited` or `-1`. Zero is refused: a rule that
/// keeps nothing is a slip (restic reads 0 as "no rule"; either reading of a typo could
/// remove backups, so neither is guessed).
pub fn parse_count(text: &str) -> Result<Count> {
    match text.trim() {
        "all" | "unlimited" | "-1" => Ok(UNLIMITED),
        t => match t.parse::<Count>() {
            // Any spelling of zero (`0`, `00`, `+0`).
            Ok(0) => Err(Error::usage(format!(
                "a count of 0 ('{text}') is not allowed: it would keep nothing"
            ))
            .hint("leave the rule out to not use it, or give 1 or more")),
            Ok(n) => Ok(n),
            Err(_) => Err(Error::usage(format!("'{text}' is not a count"))
                .hint("use a number, or `all` for no limit")),
        },
    }
}

/// Counts in lifeboat.toml: a number (`-1` for all) or the string `"all"`.
mod count_opt {
    use super::{parse_count, Count, UNLIMITED};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Count>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) if *n == UNLIMITED => s.serialize_str("all"),
            Some(n) => s.serialize_u32(*n),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Count>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        let parsed = match Raw::deserialize(d)? {
            Raw::N(-1) => Ok(UNLIMITED),
            Raw::N(n) => parse_count(&n.to_string()).map_err(|e| e.message),
            Raw::S(s) => parse_count(&s).map_err(|e| e.message),
        };
        parsed.map(Some).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        }
    }

    /// The calendar period holding `z`, as a comparable key and a label.
    fn bucket(self, z: &ZonedDateTime) -> (i64, String) {
        let (y, m, d, h) = (
            i64::from(z.year()),
            i64::from(z.month()),
            i64::from(z.day()),
            i64::from(z.hour()),
        );
        match self {
            // The offset tells apart the two 01:00 hours of a night when clocks go back.
            Period::Hour => (
                (((y * 100 + m) * 100 + d) * 100 + h) * 100_000
                    + i64::from(z.offset().seconds())
                    + 50_000,
                format!("{y:04}-{m:02}-{d:02} {h:02}h"),
            ),
            Period::Day => ((y * 100 + m) * 100 + d, format!("{y:04}-{m:02}-{d:02}")),
            Period::Week => {
                let w = z.iso_week_date();
                let (wy, wn) = (i64::from(w.year()), i64::from(w.week()));
                (wy * 100 + wn, format!("{wy:04}-W{wn:02}"))
            }
            Period::Month => (y * 100 + m, format!("{y:04}-{m:02}")),
            Period::Year => (y, format!("{y:04}")),
        }
    }
}

/// What the policy needs to know about one backup.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub time: Timestamp,
    /// Backups are grouped by this (the source: host and path).
    pub group: String,
    pub tags: Vec<String>,
    pub pinned: bool,
    /// Passed a full verification (`backup --verify` or `lifeboat verify`).
    pub verified: bool,
    /// A safety backup taken before an in-place restore.
    pub pre_restore: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub keep: bool,
    /// Why it is kept (every rule that keeps it), or why it goes.
    pub reasons: Vec<String>,
}

/// Apply `policy` to `backups` (any order), returning one decision per backup in the
/// order given. `force` lifts the safety rails. Errors if the policy is empty, or if it
/// would leave a source with no backup and `force` is not set.
pub fn apply(
    backups: &[Candidate],
    policy: &Policy,
    now: Timestamp,
    tz: &TimeZone,
    force: bool,
) -> Result<Vec<Decision>> {
    if policy.is_empty() {
        return Err(Error::usage("the retention policy has no rules: it would remove every backup")
            .hint("give keep rules such as --keep-daily 7 --keep-weekly 4, or a [retention] section in lifeboat.toml"));
    }
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, b) in backups.iter().enumerate() {
        groups.entry(&b.group).or_default().push(i);
    }
    let mut decisions: Vec<Decision> = backups
        .iter()
        .map(|b| Decision {
            id: b.id.clone(),
            keep: false,
            reasons: Vec::new(),
        })
        .collect();
    for (group, mut members) in groups {
        // Newest first; ids break ties between equal times deterministically.
        members.sort_by(|&a, &b| {
            (backups[b].time, &backups[b].id).cmp(&(backups[a].time, &backups[a].id))
        });
        apply_group(backups, &members, policy, now, tz, force, &mut decisions);
        // Safety backups taken before restores do not count: a source must keep one of its
        // ordinary backups.
        let ordinary: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| !backups[i].pre_restore)
            .collect();
        let kept = |v: &[usize]| v.iter().any(|&i| decisions[i].keep);
        let emptied = if ordinary.is_empty() {
            !kept(&members)
        } else {
            !kept(&ordinary)
        };
        if emptied && !force {
            return Err(Error::usage(format!(
                "the policy would remove every backup of {group}"
            ))
            .hint("keep at least one (e.g. --keep-last 1), or add --force if that is really meant"));
        }
    }
    Ok(decisions)
}

fn apply_group(
    backups: &[Candidate],
    members: &[usize],
    policy: &Policy,
    now: Timestamp,
    tz: &TimeZone,
    force: bool,
    out: &mut [Decision],
) {
    let keep = |out: &mut [Decision], i: usize, why: String| {
        out[i].keep = true;
        out[i].reasons.push(why);
    };
    // 1. Pre-restore safety backups: their own rule, outside the counts.
    let pre_age = policy
        .keep_pre_restore
        .clone()
        .unwrap_or_else(|| Age::parse(PRE_RESTORE_DEFAULT).expect("constant age parses"));
    let pre_cutoff = pre_age.before(now, tz);
    let (pre, normal): (Vec<usize>, Vec<usize>) =
        members.iter().partition(|&&i| backups[i].pre_restore);
    for &i in &pre {
        if backups[i].time >= pre_cutoff {
            keep(out, i, format!("pre-restore, within {pre_age}"));
        } else {
            out[i]
                .reasons
                .push(format!("pre-restore, older than {pre_age}"));
        }
    }

    // 2. Keep rules over the ordinary backups, newest first.
    if policy.keep_rules().is_empty() {
        for &i in &normal {
            keep(
                out,
                i,
                "no keep rule: kept unless a limit removes it".into(),
            );
        }
    }
    if let Some(n) = policy.keep_last {
        for (k, &i) in normal.iter().take(n as usize).enumerate() {
            keep(out, i, format!("last #{}", k + 1));
        }
    }
    let newest = normal.first().map(|&i| backups[i].time);
    if let (Some(age), Some(newest)) = (&policy.keep_within, newest) {
        let cutoff = age.before(newest, tz);
        for &i in &normal {
            if backups[i].time >= cutoff {
                keep(out, i, format!("within {age}"));
            }
        }
    }
    for (period, count, within) in policy.periods() {
        if count.is_none() && within.is_none() {
            continue;
        }
        let cutoff = within
            .zip(newest)
            .map(|(age, newest)| age.before(newest, tz));
        let mut last_bucket = None;
        let mut taken: Count = 0;
        for &i in &normal {
            let z = backups[i].time.to_zoned_datetime(tz.clone());
            let (bucket, label) = period.bucket(&z);
            if last_bucket == Some(bucket) {
                continue; // an older backup of a period already represented
            }
            last_bucket = Some(bucket);
            if let Some(n) = count {
                if taken < n {
                    taken += 1;
                    keep(out, i, format!("{} #{taken} ({label})", period.name()));
                }
            }
            if let (Some(cutoff), Some(age)) = (cutoff, within) {
                if backups[i].time >= cutoff {
                    keep(out, i, format!("{} within {age} ({label})", period.name()));
                }
            }
        }
    }
    for tag in &policy.keep_tag {
        for &i in &normal {
            if backups[i].tags.contains(tag) {
                keep(out, i, format!("tag {tag}"));
            }
        }
    }

    // 3. Limits.
    let drop = |out: &mut [Decision], i: usize, why: String| {
        out[i].keep = false;
        out[i].reasons = vec![why];
    };
    if let Some(age) = &policy.max_age {
        let cutoff = age.before(now, tz);
        for &i in &normal {
            if out[i].keep && backups[i].time < cutoff {
                drop(out, i, format!("older than max-age {age}"));
            }
        }
    }
    if let Some(n) = policy.max_count {
        let kept: Vec<usize> = normal.iter().copied().filter(|&i| out[i].keep).collect();
        for &i in kept.iter().skip(n as usize) {
            drop(out, i, format!("beyond max-count {n}"));
        }
    }
    if let Some(n) = policy.min_count {
        for &i in normal.iter().take(n as usize) {
            if !out[i].keep {
                out[i].reasons.clear();
            }
            keep(out, i, format!("min-count {n}"));
        }
    }

    // 4. Pins and safety rails.
    let rescue = |out: &mut [Decision], i: usize, why: &str| {
        if !out[i].keep {
            out[i].reasons.clear();
        }
        keep(out, i, why.to_string());
    };
    for &i in members {
        if backups[i].pinned {
            rescue(out, i, "pinned");
        }
    }
    if !force {
        if let Some(&i) = members.iter().find(|&&i| backups[i].verified) {
            rescue(out, i, "newest verified");
        }
        if normal.len() == 1 {
            rescue(out, normal[0], "only backup of this source");
        } else if normal.is_empty() && members.len() == 1 {
            rescue(out, members[0], "only backup of this source");
        }
    }
    for &i in members {
        if !out[i].keep && out[i].reasons.is_empty() {
            out[i].reasons.push("no rule keeps it".into());
        }
    }
}

/// The time zone named in config or on the command line: an IANA name (`Europe/Paris`),
/// `UTC`, or `local` (the system's, the default).
pub fn time_zone(name: Option<&str>) -> Result<TimeZone> {
    match name {
        None | Some("local") => Ok(TimeZone::system()),
        Some("UTC") | Some("utc") => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(n).map_err(|e| {
            Error::usage(format!("unknown time zone '{n}': {e}"))
                .hint("use an IANA name such as Europe/Berlin, or UTC, or local")
        }),
    }
}

/// A name for a time zone in messages.
pub fn zone_name(tz: &TimeZone) -> String {
    tz.iana_name().unwrap_or("local").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn backup(id: usize, time: Timestamp) -> Candidate {
        Candidate {
            id: format!("b{id:05}"),
            time,
            group: "g".into(),
            tags: vec![],
            pinned: false,
            verified: false,
            pre_restore: false,
        }
    }

    /// One backup a day at 02:00 UTC for `days` days ending on `last`.
    fn daily(days: usize, last: &str) -> Vec<Candidate> {
        let end = ts(last);
        (0..days)
            .map(|k| backup(k, end - Span::new().hours(24 * (days - 1 - k) as i64)))
            .collect()
    }

    fn kept(d: &[Decision]) -> Vec<String> {
        d.iter().filter(|d| d.keep).map(|d| d.id.clone()).collect()
    }

    fn policy(toml_text: &str) -> Policy {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn ages_parse() {
        assert!(Age::parse("48h").is_ok());
        assert!(Age::parse("1y6m").is_ok());
        assert!(Age::parse("90").is_err());
        assert!(Age::parse("3x").is_err());
        assert!(Age::parse("").is_err());
        assert_eq!(parse_count("all").unwrap(), UNLIMITED);
        assert_eq!(parse_count("-1").unwrap(), UNLIMITED);
        assert!(parse_count("-2").is_err());
    }

    #[test]
    fn empty_policy_is_refused() {
        let b = daily(3, "2026-11-26T02:00:00Z");
        let e = apply(
            &b,
            &Policy::default(),
            ts("2026-11-26T12:00:00Z"),
            &TimeZone::UTC,
            false,
        )
        .unwrap_err();
        assert!(e.message.contains("no rules"));
    }

    /// Seed 000 (Signal Harvester) and 004 (kr-scraper): daily 7, weekly 4, monthly 12.
    #[test]
    fn seed_daily_weekly_monthly() {
        let b = daily(400, "2026-11-26T02:00:00Z");
        let p = policy("keep_daily = 7\nkeep_weekly = 4\nkeep_monthly = 12");
        let d = apply(&b, &p, ts("2026-11-26T12:00:00Z"), &TimeZone::UTC, false).unwrap();
        let k = kept(&d);
        // 7 days, plus the Sundays of 3 earlier weeks (the newest week is this one), plus
        // month ends of earlier months: 7 + 3 + 11 minus overlaps.
        assert!(k.len() >= 12 && k.len() <= 22, "{}", k.len());
        for id in &k[k.len() - 7..] {
            assert!(d
                .iter()
                .any(|x| &x.id == id && x.reasons[0].starts_with("daily")));
        }
        // The oldest kept is the last backup of a month about a year ago.
        let oldest = b.iter().find(|c| c.id == k[0]).unwrap();
        assert!(oldest.time < ts("2026-01-01T00:00:00Z"));
    }

    /// Seed 002 (Cartographus): min 5, max 100, max 90 days, recent 24 h, daily 14 days,
    /// weekly 8 weeks, monthly 12 months.
    #[test]
    fn seed_cartographus() {
        // Every 6 hours for 200 days.
        let end = ts("2026-11-26T00:00:00Z");
        let b: Vec<Candidate> = (0..800)
            .map(|k| backup(k, end - Span::new().hours(6 * (799 - k) as i64)))
            .collect();
        let p = policy(
            "min_count = 5\nmax_count = 100\nmax_age = '90d'\nkeep_within = '24h'\n\
             keep_within_daily = '14d'\nkeep_within_weekly = '8w'\nkeep_within_monthly = '12m'",
        );
        let now = ts("2026-11-26T01:00:00Z");
        let d = apply(&b, &p, now, &TimeZone::UTC, false).unwrap();
        let cutoff = now - Span::new().hours(90 * 24);
        for (c, d) in b.iter().zip(&d) {
            if d.keep {
                assert!(
                    c.time >= cutoff,
                    "{} kept past max-age: {:?}",
                    c.id,
                    d.reasons
                );
            }
            if c.time >= ts("2026-11-25T00:00:00Z") {
                assert!(d.keep, "recent 24h");
            }
        }
        assert!(kept(&d).len() <= 100);
    }

    /// Seed 003 (GENESIS): hourly for 7 days, daily for 30, monthly for 365, yearly forever.
    #[test]
    fn seed_genesis() {
        let end = ts("2026-11-26T00:00:00Z");
        let b: Vec<Candidate> = (0..(24 * 800))
            .step_by(4)
            .map(|h| backup(h, end - Span::new().hours(h as i64)))
            .collect();
        let p = policy(
            "keep_within_hourly = '7d'\nkeep_within_daily = '30d'\n\
             keep_within_monthly = '365d'\nkeep_yearly = 'all'",
        );
        let d = apply(&b, &p, end, &TimeZone::UTC, false).unwrap();
        let kept_times: Vec<Timestamp> = b
            .iter()
            .zip(&d)
            .filter(|(_, d)| d.keep)
            .map(|(c, _)| c.time)
            .collect();
        // Every 4 h for 7 days (43 incl. both ends), ~23 more days, ~11 more months, and the
        // years 2024 and 2025 (2026 is the newest backup itself).
        let within_week = kept_times
            .iter()
            .filter(|t| **t >= end - Span::new().hours(7 * 24))
            .count();
        assert_eq!(within_week, 43);
        assert!(kept_times.iter().any(|t| *t < ts("2025-01-01T00:00:00Z")));
    }

    /// Seed 001 (Spywatcher): 7 days locally, 30 days in S3.
    #[test]
    fn seed_spywatcher_per_target() {
        let b = daily(60, "2026-11-26T02:00:00Z");
        let now = ts("2026-11-26T03:00:00Z");
        let local = policy("max_age = '7d'");
        let s3 = policy("max_age = '30d'");
        let dl = apply(&b, &local, now, &TimeZone::UTC, false).unwrap();
        let ds = apply(&b, &s3, now, &TimeZone::UTC, false).unwrap();
        // 02:00 on the 19th is just over 7 days before 03:00 on the 26th.
        assert_eq!(kept(&dl).len(), 7);
        assert_eq!(kept(&ds).len(), 30);
    }

    #[test]
    fn rails_pins_and_pre_restore() {
        let mut b = daily(10, "2026-11-26T02:00:00Z");
        b[2].pinned = true;
        b[5].verified = true;
        b[9].verified = true;
        b[8].pre_restore = true;
        let now = ts("2026-11-26T03:00:00Z");
        let p = policy("keep_last = 1");
        let d = apply(&b, &p, now, &TimeZone::UTC, false).unwrap();
        assert_eq!(d[2].reasons, ["pinned"]);
        assert!(d[9].keep && d[9].reasons.contains(&"newest verified".to_string()));
        assert!(!d[5].keep, "only the newest verified is protected");
        assert!(d[8].keep && d[8].reasons[0].starts_with("pre-restore"));
        // A lone backup survives any rule unless forced.
        let lone = daily(1, "2020-01-01T00:00:00Z");
        let p = policy("max_age = '1d'");
        let d = apply(&lone, &p, now, &TimeZone::UTC, false).unwrap();
        assert_eq!(d[0].reasons, ["only backup of this source"]);
        // Removing everything is refused, or allowed with force.
        let two = daily(2, "2020-01-02T00:00:00Z");
        assert!(apply(&two, &p, now, &TimeZone::UTC, false).is_err());
        let d = apply(&two, &p, now, &TimeZone::UTC, true).unwrap();
        assert!(d.iter().all(|d| !d.keep));
    }

    #[test]
    fn buckets_follow_the_time_zone() {
        // 23:30 UTC on the 25th is the 26th in Berlin: one day there, two in UTC.
        let b = vec![
            backup(0, ts("2026-11-25T23:30:00Z")),
            backup(1, ts("2026-11-26T08:00:00Z")),
        ];
        let p = policy("keep_daily = 5");
        let utc = apply(&b, &p, ts("2026-11-26T09:00:00Z"), &TimeZone::UTC, false).unwrap();
        assert_eq!(kept(&utc).len(), 2);
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let d = apply(&b, &p, ts("2026-11-26T09:00:00Z"), &berlin, false).unwrap();
        assert_eq!(kept(&d), ["b00001"]);
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        let count = prop::option::of(prop_oneof![0u32..6, Just(UNLIMITED)]);
        let age = prop::option::of(
            (1i64..60, prop::sample::select(vec!['h', 'd', 'w', 'm']))
                .prop_map(|(n, u)| Age::parse(&format!("{n}{u}")).unwrap()),
        );
        (
            (count.clone(), count.clone(), count.clone(), count.clone()),
            (count.clone(), count.clone()),
            (age.clone(), age.clone(), age.clone()),
            prop::option::of(Just("t".to_string())),
            (prop::option::of(0u32..5), prop::option::of(1u32..20)),
        )
            .prop_map(
                |(
                    (last, hourly, daily, weekly),
                    (monthly, yearly),
                    (within, wd, max_age),
                    tag,
                    (min, max),
                )| Policy {
                    keep_last: last,
                    keep_hourly: hourly,
                    keep_daily: daily,
                    keep_weekly: weekly,
                    keep_monthly: monthly,
                    keep_yearly: yearly,
                    keep_within: within,
                    keep_within_daily: wd,
                    keep_tag: tag.into_iter().collect(),
                    min_count: min,
                    max_count: max,
                    max_age,
                    ..Default::default()
                },
            )
            .prop_filter("not empty", |p| !p.is_empty())
    }

    fn arb_timeline() -> impl Strategy<Value = Vec<Candidate>> {
        prop::collection::vec(
            (0i64..(3 * 365 * 24), any::<bool>(), 0u8..20, 0u8..3),
            1..80,
        )
        .prop_map(|v| {
            let end = ts("2026-11-26T00:00:00Z");
            v.into_iter()
                .enumerate()
                .map(|(k, (hours_ago, tagged, flags, group))| Candidate {
                    id: format!("b{k:05}"),
                    time: end - Span::new().hours(hours_ago),
                    group: format!("g{group}"),
                    tags: if tagged { vec!["t".into()] } else { vec![] },
                    pinned: flags == 0,
                    verified: flags == 1,
                    pre_restore: flags == 2,
                })
                .collect()
        })
    }

    fn newest_first(b: &[Candidate], group: &str) -> Vec<usize> {
        let mut v: Vec<usize> = (0..b.len()).filter(|&i| b[i].group == group).collect();
        v.sort_by(|&x, &y| (b[y].time, &b[y].id).cmp(&(b[x].time, &b[x].id)));
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The guarantees of every rule hold, for any timeline and policy.
        #[test]
        fn rules_hold(b in arb_timeline(), p in arb_policy()) {
            let now = ts("2026-11-26T06:00:00Z");
            let tz = TimeZone::UTC;
            let Ok(d) = apply(&b, &p, now, &tz, false) else {
                // Refused: then some group really would have been emptied.
                let forced = apply(&b, &p, now, &tz, true).unwrap();
                let groups: std::collections::BTreeSet<&str> = b.iter().map(|c| c.group.as_str()).collect();
                let emptied = |g: &str| {
                    let ordinary = b.iter().any(|c| c.group == g && !c.pre_restore);
                    b.iter().zip(&forced)
                        .filter(|(c, _)| c.group == g && (!ordinary || !c.pre_restore))
                        .all(|(_, d)| !d.keep)
                };
                prop_assert!(groups.iter().any(|g| emptied(g)));
                return Ok(());
            };
            prop_assert_eq!(d.len(), b.len());
            let groups: std::collections::BTreeSet<&str> = b.iter().map(|c| c.group.as_str()).collect();
            for g in groups {
                let order = newest_first(&b, g);
                let normal: Vec<usize> = order.iter().copied().filter(|&i| !b[i].pre_restore).collect();
                // Never empties a source; the lone backup and the newest verified survive.
                prop_assert!(order.iter().any(|&i| d[i].keep));
                if order.len() == 1 { prop_assert!(d[order[0]].keep); }
                if let Some(&v) = order.iter().find(|&&i| b[i].verified) { prop_assert!(d[v].keep); }
                // min-count: the newest N ordinary backups.
                if let Some(n) = p.min_count {
                    for &i in normal.iter().take(n as usize) { prop_assert!(d[i].keep); }
                }
                let limited = |i: usize| b[i].pinned || b[i].verified || normal.len() == 1 || order.len() == 1;
                // max-age: nothing kept older, except what min-count, pins or rails hold.
                if let Some(age) = &p.max_age {
                    let cutoff = age.before(now, &tz);
                    let protected: Vec<usize> = normal.iter().copied().take(p.min_count.unwrap_or(0) as usize).collect();
                    for &i in &normal {
                        if d[i].keep && b[i].time < cutoff {
                            prop_assert!(protected.contains(&i) || limited(i), "{:?}", d[i]);
                        }
                    }
                }
                if p.max_count.is_none() && p.max_age.is_none() {
                    // keep-last N.
                    if let Some(n) = p.keep_last {
                        for &i in normal.iter().take(n as usize) { prop_assert!(d[i].keep); }
                    }
                    // Tags.
                    for &i in &normal {
                        if p.keep_tag.iter().any(|t| b[i].tags.contains(t)) { prop_assert!(d[i].keep); }
                    }
                    // Daily N: the newest backup of each of the N newest days is kept.
                    if let Some(n) = p.keep_daily {
                        let mut days = Vec::new();
                        for &i in &normal {
                            let day = b[i].time.to_zoned_datetime(tz.clone()).date();
                            if !days.contains(&day) {
                                days.push(day);
                                if (days.len() as u64) <= u64::from(n) { prop_assert!(d[i].keep); }
                            }
                        }
                    }
                    // Pinned always kept.
                    for &i in &order { if b[i].pinned { prop_assert!(d[i].keep); } }
                }
                // max-count holds for what only the policy keeps.
                if let Some(n) = p.max_count {
                    let by_policy = normal.iter().filter(|&&i| d[i].keep && !limited(i)
                        && !d[i].reasons.iter().any(|r| r.starts_with("min-count"))).count();
                    prop_assert!(by_policy <= n as usize);
                }
            }
            // Every decision says why.
            for x in &d { prop_assert!(!x.reasons.is_empty()); }
        }

        /// Forgetting is stable: applying the policy again to what it kept keeps all of it.
        #[test]
        fn applying_twice_changes_nothing(b in arb_timeline(), p in arb_policy()) {
            let now = ts("2026-11-26T06:00:00Z");
            let tz = TimeZone::UTC;
            // max-count trims what the keep rules keep; on a smaller set the rules can reach a
            // pinned or verified backup they skipped before, so only without it is this exact.
            prop_assume!(p.max_count.is_none());
            let Ok(d) = apply(&b, &p, now, &tz, false) else { return Ok(()); };
            let kept: Vec<Candidate> = b.iter().zip(&d).filter(|(_, d)| d.keep).map(|(c, _)| c.clone()).collect();
            let again = apply(&kept, &p, now, &tz, false).unwrap();
            for x in &again { prop_assert!(x.keep, "{:?}", x); }
        }

        /// More keep rules never keep less.
        #[test]
        fn adding_rules_keeps_more(b in arb_timeline(), p in arb_policy(), n in 1u32..5) {
            let now = ts("2026-11-26T06:00:00Z");
            let tz = TimeZone::UTC;
            let mut base = p.clone();
            base.max_count = None;
            base.max_age = None;
            prop_assume!(!base.keep_rules().is_empty());
            let Ok(d1) = apply(&b, &base, now, &tz, true) else { return Ok(()); };
            let mut more = base.clone();
            more.keep_weekly = Some(more.keep_weekly.unwrap_or(0).saturating_add(n));
            let d2 = apply(&b, &more, now, &tz, true).unwrap();
            for (x, y) in d1.iter().zip(&d2) { prop_assert!(!x.keep || y.keep); }
        }
    }
}
