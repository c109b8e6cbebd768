//! When a job runs: `every 6h`, `every 1d at 02:00`, `every 1h jitter 5m`, a 5-field cron
//! expression, `continuous` or `off`, and the catch-up rule: a run missed while the daemon
//! was down happens once, at start, never once per missed slot.

use crate::error::{Error, Result};
use jiff::{Timestamp, ToSpan};
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Schedule {
    /// Every `interval` after the last run, or on the slots `at` + k × interval of each day
    /// (local time of `timezone`) when a preferred time is given.
    Every {
        interval: Duration,
        at: Option<(i8, i8)>,
        jitter: Duration,
    },
    Cron {
        expression: String,
        cron: Box<croner::Cron>,
    },
    /// Replicate every commit (SQLite); for other sources, the daemon only watches.
    Continuous,
    Off,
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule> {
        let text = text.trim();
        let bad = |why: String| {
            Error::usage(format!("schedule {text:?}: {why}")).hint(
                "write `every 6h`, `every 1d at 02:00`, `every 1h jitter 5m`, a cron expression \
                 such as `0 2 * * *`, `continuous` or `off`",
            )
        };
        match text {
            "continuous" => return Ok(Schedule::Continuous),
            "off" | "never" => return Ok(Schedule::Off),
            _ => {}
        }
        if let Some(rest) = text.strip_prefix("every ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let Some((first, mut more)) = words.split_first() else {
                return Err(bad("no interval".into()));
            };
            let interval = crate::config::parse_duration(first).map_err(bad)?;
            let (mut at, mut jitter) = (None, Duration::ZERO);
            while let Some((word, rest)) = more.split_first() {
                let Some((value, rest)) = rest.split_first() else {
                    return Err(bad(format!("{word:?} needs a value")));
                };
                match *word {
                    "at" => at = Some(parse_time_of_day(value).map_err(bad)?),
                    "jitter" => jitter = crate::config::parse_duration(value).map_err(bad)?,
                    w => return Err(bad(format!("unknown word {w:?} (at, jitter)"))),
                }
                more = rest;
            }
            if jitter >= interval {
                return Err(bad("the jitter must be shorter than the interval".into()));
            }
            return Ok(Schedule::Every {
                interval,
                at,
                jitter,
            });
        }
        if text.split_whitespace().count() != 5 && !text.starts_with('@') {
            return Err(bad(
                "a cron expression has 5 fields: minute hour day month weekday".into(),
            ));
        }
        let cron: croner::Cron = text
            .parse()
            .map_err(|e: croner::errors::CronError| bad(e.to_string()))?;
        Ok(Schedule::Cron {
            expression: text.to_string(),
            cron: Box::new(cron),
        })
    }

    /// The next run after a run at `last` (None: never ran), `now` being now: a time at or
    /// before `now` means "due" (a missed run is caught up once). None: never by schedule.
    pub fn next_run(
        &self,
        last: Option<Timestamp>,
        now: Timestamp,
        tz: &jiff::tz::TimeZone,
        jitter_seed: u64,
    ) -> Option<Timestamp> {
        match self {
            Schedule::Off | Schedule::Continuous => None,
            Schedule::Every {
                interval,
                at,
                jitter,
            } => {
                let Some(last) = last else {
                    return Some(now);
                };
                let base = match at {
                    None => last.checked_add(span(*interval)).ok()?,
                    Some((h, m)) => next_slot(last, *interval, (*h, *m), tz)?,
                };
                Some(add_jitter(base, *jitter, jitter_seed))
            }
            Schedule::Cron { cron, .. } => {
                let Some(last) = last else {
                    return Some(now);
                };
                next_cron(cron, last, tz)
            }
        }
    }

    /// About how long between two runs (what "overdue" is measured against).
    pub fn period(&self, tz: &jiff::tz::TimeZone) -> Option<Duration> {
        match self {
            Schedule::Every { interval, .. } => Some(*interval),
            Schedule::Cron { cron, .. } => {
                let a = next_cron(cron, Timestamp::now(), tz)?;
                let b = next_cron(cron, a, tz)?;
                Some(Duration::from_secs(
                    b.duration_since(a).as_secs().max(1) as u64
                ))
            }
            Schedule::Continuous | Schedule::Off => None,
        }
    }

    pub fn is_continuous(&self) -> bool {
        matches!(self, Schedule::Continuous)
    }

    pub fn describe(&self) -> String {
        match self {
            Schedule::Every {
                interval,
                at,
                jitter,
            } => {
                let mut s = format!("every {}", human_duration(*interval));
                if let Some((h, m)) = at {
                    s.push_str(&format!(" at {h:02}:{m:02}"));
                }
                if !jitter.is_zero() {
                    s.push_str(&format!(" jitter {}", human_duration(*jitter)));
                }
                s
            }
            Schedule::Cron { expression, .. } => format!("cron {expression}"),
            Schedule::Continuous => "continuous".into(),
            Schedule::Off => "off".into(),
        }
    }
}

fn span(d: Duration) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX)
}

fn parse_time_of_day(text: &str) -> std::result::Result<(i8, i8), String> {
    let (h, m) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not a time of day (HH:MM)"))?;
    match (h.parse::<i8>(), m.parse::<i8>()) {
        (Ok(h), Ok(m)) if (0..24).contains(&h) && (0..60).contains(&m) => Ok((h, m)),
        _ => Err(format!("{text:?} is not a time of day (HH:MM)")),
    }
}

/// The first slot after `last` among `at` + k × interval, counted from `at` on the day of
/// `last` (local time).
fn next_slot(
    last: Timestamp,
    interval: Duration,
    (h, m): (i8, i8),
    tz: &jiff::tz::TimeZone,
) -> Option<Timestamp> {
    let local = last.to_zoned_datetime(tz.clone());
    let anchor = local
        .date()
        .at(h, m, 0, 0)
        .to_zoned_datetime(tz.clone())
        .ok()?
        .timestamp();
    // The day's anchor may be after `last`: step back whole intervals first.
    let step = interval.as_secs().max(1) as i64;
    let mut slot = anchor.as_second();
    let last_s = last.as_second();
    if slot > last_s {
        slot -= (slot - last_s + step - 1) / step * step;
    }
    slot += ((last_s - slot) / step + 1) * step;
    Timestamp::from_second(slot).ok()
}

fn next_cron(cron: &croner::Cron, after: Timestamp, tz: &jiff::tz::TimeZone) -> Option<Timestamp> {
    // croner speaks jiff 0.2; the instant and the zone's name cross over.
    let zone = match tz.iana_name() {
        Some(name) => jiff02::tz::TimeZone::get(name).ok()?,
        None if *tz == jiff::tz::TimeZone::UTC => jiff02::tz::TimeZone::UTC,
        None => jiff02::tz::TimeZone::system(),
    };
    let start = jiff02::Timestamp::from_second(after.as_second())
        .ok()?
        .to_zoned(zone);
    let next = cron.find_next_occurrence(&start, false).ok()?;
    Timestamp::from_second(next.timestamp().as_second()).ok()
}

/// A delay in [0, jitter) that stays the same for one job's run (so a restart does not
/// move it), but differs between jobs and runs.
fn add_jitter(at: Timestamp, jitter: Duration, seed: u64) -> Timestamp {
    if jitter.is_zero() {
        return at;
    }
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(&at.as_second().to_le_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    let ms = u64::from_le_bytes(b) % jitter.as_millis().max(1) as u64;
    at.checked_add((ms as i64).milliseconds()).unwrap_or(at)
}

pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 && d.subsec_millis() == 0 {
        return "0s".into();
    }
    if d.subsec_millis() != 0 || s == 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, n) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if s % n == 0 {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn intervals_follow_the_last_run_and_catch_up_once() {
        let s = Schedule::parse("every 6h").unwrap();
        let utc = jiff::tz::TimeZone::UTC;
        let now = ts("2026-01-02T00:00:00Z");
        assert_eq!(s.next_run(None, now, &utc, 0), Some(now));
        let last = ts("2026-01-01T10:00:00Z");
        assert_eq!(
            s.next_run(Some(last), now, &utc, 0),
            Some(ts("2026-01-01T16:00:00Z"))
        );
        // Missed runs: one due time in the past, not one per slot.
        assert!(s.next_run(Some(last), now, &utc, 0).unwrap() <= now);
    }

    #[test]
    fn preferred_time_picks_the_slots_of_the_day() {
        let s = Schedule::parse("every 6h at 02:00").unwrap();
        let utc = jiff::tz::TimeZone::UTC;
        let now = ts("2026-01-02T00:00:00Z");
        let next = |last: &str| s.next_run(Some(ts(last)), now, &utc, 0).unwrap();
        assert_eq!(next("2026-01-01T01:00:00Z"), ts("2026-01-01T02:00:00Z"));
        assert_eq!(next("2026-01-01T02:00:00Z"), ts("2026-01-01T08:00:00Z"));
        assert_eq!(next("2026-01-01T21:30:00Z"), ts("2026-01-02T02:00:00Z"));
        let daily = Schedule::parse("every 1d at 02:30").unwrap();
        assert_eq!(
            daily
                .next_run(Some(ts("2026-01-01T03:00:00Z")), now, &utc, 0)
                .unwrap(),
            ts("2026-01-02T02:30:00Z")
        );
    }

    #[test]
    fn cron_expressions() {
        let s = Schedule::parse("0 2 * * *").unwrap();
        let utc = jiff::tz::TimeZone::UTC;
        let now = ts("2026-01-05T00:00:00Z");
        assert_eq!(
            s.next_run(Some(ts("2026-01-01T02:00:00Z")), now, &utc, 0),
            Some(ts("2026-01-02T02:00:00Z"))
        );
        assert_eq!(s.period(&utc), Some(Duration::from_secs(86400)));
        let paris = jiff::tz::TimeZone::get("Europe/Paris").unwrap();
        assert_eq!(
            s.next_run(Some(ts("2026-01-01T02:00:00Z")), now, &paris, 0),
            Some(ts("2026-01-02T01:00:00Z"))
        );
    }

    #[test]
    fn jitter_stays_within_its_bound_and_is_stable() {
        let s = Schedule::parse("every 1h jitter 10m").unwrap();
        let utc = jiff::tz::TimeZone::UTC;
        let last = ts("2026-01-01T00:00:00Z");
        let a = s.next_run(Some(last), last, &utc, 7).unwrap();
        assert_eq!(a, s.next_run(Some(last), last, &utc, 7).unwrap());
        let base = ts("2026-01-01T01:00:00Z");
        assert!(a >= base && a < base.checked_add(10.minutes()).unwrap());
    }

    #[test]
    fn bad_schedules_are_refused_with_the_forms() {
        for bad in [
            "every",
            "every 6x",
            "every 1h at 25:00",
            "every 1h jitter 2h",
            "0 2 * *",
            "61 * * * *",
            "sometimes",
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(
                e.hint.as_deref().unwrap_or("").contains("every 6h"),
                "{bad}"
            );
        }
        assert!(Schedule::parse("continuous").unwrap().is_continuous());
        assert_eq!(
            Schedule::parse("every 90s").unwrap().describe(),
            "every 90s"
        );
    }
}
