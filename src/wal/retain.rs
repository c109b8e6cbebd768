//! What retention keeps of a stream of continuous replication: a pure function of its bases
//! (and which of them the policy keeps), its segments, when its newest commit was, and the
//! point-in-time window. `forget` applies it; see docs/RETENTION.md.
//!
//! Retention only ever removes the start of a stream (its segments numbered below
//! `keep_from`): a restore to time T takes the newest base at or before T and applies the
//! segments from its `next_seq` on, so what a kept base needs after it is always kept.
//!
//! - With a window (`keep_within D`, counted from now): a stream whose newest commit is in
//!   the window keeps its *anchor*, the newest base at or before the window's start (its
//!   oldest base when none is that old), whatever the policy said, and every segment from the
//!   anchor on: any moment of the window can be restored. A stream that ended before the
//!   window loses its segments, unless it is the newest stream of its source (a database
//!   idle for longer than the window): then the rule without a window applies, so the last
//!   state Lifeboat saw stays restorable.
//! - Without a window: the segments from the newest kept base on stay (the latest state and
//!   every moment since that base). When the policy keeps no base of the newest stream of a
//!   source and commits were shipped after its newest base, that base is kept: without it
//!   those commits could not be restored.

use crate::repo::segment::SegmentName;

/// The reason given for a base kept by these rules.
pub const POINT_IN_TIME_BASE: &str = "point-in-time base";

/// One base of the stream, as the policy decided it.
#[derive(Debug, Clone)]
pub struct Base {
    pub id: String,
    /// The time of its image, milliseconds since the epoch.
    pub time_ms: i64,
    pub next_seq: u64,
    /// Kept by the policy.
    pub kept: bool,
}

pub struct Facts<'a> {
    /// Oldest first.
    pub bases: &'a [Base],
    /// By sequence number.
    pub segments: &'a [SegmentName],
    /// Time of the stream's newest commit (authenticated), or of its newest base.
    pub last_ms: i64,
    /// No other stream of the same source has a later commit.
    pub newest_of_source: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// A base (index into `bases`) kept whatever the policy said.
    pub rescue: Option<usize>,
    /// Segments numbered below this go.
    pub keep_from: u64,
    /// In words, for the report.
    pub why: String,
}

/// Decide for one stream with at least one base. `window`: the start of the point-in-time
/// window (ms) and how it was written (`24h`), when the policy has one.
pub fn decide(f: &Facts, window: Option<(i64, &str)>) -> Decision {
    assert!(!f.bases.is_empty(), "streams without a base are prune's");
    let gone = |why: String| Decision {
        rescue: None,
        keep_from: f.segments.last().map_or(0, |s| s.last_seq + 1),
        why,
    };
    if let Some((start, text)) = window {
        if f.last_ms >= start {
            let anchor = f
                .bases
                .iter()
                .rposition(|b| b.time_ms <= start)
                .unwrap_or(0);
            // Later bases start later in the stream; should one not (a base is only ever
            // taken ahead), what it needs is kept too.
            let keep_from = f.bases[anchor..]
                .iter()
                .enumerate()
                .filter(|(i, b)| *i == 0 || b.kept)
                .map(|(_, b)| b.next_seq)
                .min()
                .unwrap_or(0);
            return Decision {
                rescue: Some(anchor),
                keep_from,
                why: format!("point-in-time window {text}: any moment since its start"),
            };
        }
        if !f.newest_of_source {
            return gone(format!(
                "ended before the point-in-time window {text}, and a newer stream follows it"
            ));
        }
    }
    if let Some(i) = f.bases.iter().rposition(|b| b.kept) {
        return Decision {
            rescue: None,
            keep_from: f.bases[i].next_seq,
            why: "from the newest kept base on".into(),
        };
    }
    let newest = f.bases.len() - 1;
    let after_newest = f
        .segments
        .last()
        .is_some_and(|s| s.last_seq >= f.bases[newest].next_seq);
    if f.newest_of_source && after_newest {
        return Decision {
            rescue: Some(newest),
            keep_from: f.bases[newest].next_seq,
            why: "the newest commits of the source need their base".into(),
        };
    }
    gone("no base of this stream is kept".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn bases(spec: &[(i64, u64, bool)]) -> Vec<Base> {
        spec.iter()
            .enumerate()
            .map(|(i, &(t, next, kept))| Base {
                id: format!("b{i}"),
                time_ms: t,
                next_seq: next,
                kept,
            })
            .collect()
    }

    /// One segment an hour: segment `n` holds the commits of hour `n`.
    fn segments(range: std::ops::Range<u64>) -> Vec<SegmentName> {
        range
            .map(|n| SegmentName {
                stream: "01m8axc18gnpx3".into(),
                seq: n,
                first_ms: n as i64 * H,
                last_ms: n as i64 * H + H - 1,
                unseen_since_ms: None,
                last_seq: n,
                size: 100,
            })
            .collect()
    }

    fn facts<'a>(b: &'a [Base], s: &'a [SegmentName], newest: bool) -> Facts<'a> {
        Facts {
            bases: b,
            segments: s,
            last_ms: s
                .last()
                .map_or(b.last().map_or(0, |b| b.time_ms), |s| s.last_ms),
            newest_of_source: newest,
        }
    }

    #[test]
    fn the_anchor_is_the_newest_base_at_or_before_the_window() {
        // Bases every 24 h at hours 0, 24, 48, 72; segments for 100 hours; window from 60.
        let b = bases(&[
            (0, 0, true),
            (24 * H, 24, false),
            (48 * H, 48, false),
            (72 * H, 72, true),
        ]);
        let s = segments(0..100);
        let d = decide(&facts(&b, &s, true), Some((60 * H, "40h")));
        assert_eq!(d.rescue, Some(2), "the base of hour 48 covers hour 60");
        assert_eq!(d.keep_from, 48);
        // A window starting exactly at a base's time: that base is enough.
        let d = decide(&facts(&b, &s, true), Some((72 * H, "28h")));
        assert_eq!((d.rescue, d.keep_from), (Some(3), 72));
        // A window older than every base: the oldest base, and everything after it.
        let late = bases(&[(10 * H, 10, false), (72 * H, 72, true)]);
        let d = decide(&facts(&late, &s, true), Some((2 * H, "98h")));
        assert_eq!((d.rescue, d.keep_from), (Some(0), 10));
    }

    #[test]
    fn a_kept_base_that_starts_earlier_keeps_its_segments() {
        let b = bases(&[(0, 0, true), (48 * H, 48, false), (72 * H, 40, true)]);
        let s = segments(0..100);
        let d = decide(&facts(&b, &s, true), Some((60 * H, "40h")));
        assert_eq!((d.rescue, d.keep_from), (Some(1), 40));
    }

    #[test]
    fn a_stream_that_ended_before_the_window_loses_its_segments_unless_it_is_the_newest() {
        let b = bases(&[(0, 0, true), (24 * H, 24, true)]);
        let s = segments(0..30);
        let d = decide(&facts(&b, &s, false), Some((60 * H, "40h")));
        assert_eq!((d.rescue, d.keep_from), (None, 30), "every segment goes");
        // The newest stream of an idle source keeps its latest state.
        let d = decide(&facts(&b, &s, true), Some((60 * H, "40h")));
        assert_eq!((d.rescue, d.keep_from), (None, 24));
    }

    #[test]
    fn without_a_window_segments_from_the_newest_kept_base_stay() {
        let b = bases(&[(0, 0, true), (24 * H, 24, true), (48 * H, 48, false)]);
        let s = segments(0..60);
        let d = decide(&facts(&b, &s, true), None);
        assert_eq!((d.rescue, d.keep_from), (None, 24));
        // No base kept: the newest commits keep the newest base of the newest stream…
        let none = bases(&[(0, 0, false), (48 * H, 48, false)]);
        let d = decide(&facts(&none, &s, true), None);
        assert_eq!((d.rescue, d.keep_from), (Some(1), 48));
        // …but not when nothing was shipped after it, nor for an older stream.
        let d = decide(&facts(&none, &segments(0..48), true), None);
        assert_eq!((d.rescue, d.keep_from), (None, 48));
        let d = decide(&facts(&none, &s, false), None);
        assert_eq!((d.rescue, d.keep_from), (None, 60));
    }

    #[test]
    fn a_stream_without_segments_keeps_nothing_it_does_not_need() {
        let b = bases(&[(0, 0, false), (24 * H, 3, true)]);
        let d = decide(&facts(&b, &[], true), None);
        assert_eq!((d.rescue, d.keep_from), (None, 3));
    }
}
