//! Replicas as a second source of reads. When the primary's copy of a frame is missing or
//! fails its check (authentication, decompression, or the hash of a blob in it), the same
//! pack on a replica is read at the same place and checked the same way. What each replica
//! served is tallied, and said once per command (when the repository is dropped), with
//! counts and what to do: `lifeboat repo repair`.

use crate::id::Hash;
use crate::storage::Storage;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Lists the replicas a repository may read from (see `Repository::set_replica_resolver`).
pub type ReplicaResolver = Box<dyn Fn(&super::Repository) -> Vec<String> + Send + Sync>;

/// Decompressed frames read from replicas, kept for the other blobs of the same frame (a
/// damaged frame that still decompresses fails page by page).
const CACHED_FRAMES: usize = 4;

/// What a repository reads from its replicas, and what it read.
pub struct Fallback {
    resolver: OnceLock<ReplicaResolver>,
    replicas: OnceLock<Vec<Box<dyn Storage>>>,
    /// False while a command must judge the primary alone (`repo check`).
    enabled: AtomicBool,
    tally: Mutex<BTreeMap<String, Served>>,
    /// (replica, pack, offset) → the frame, decompressed.
    cache: Mutex<VecDeque<(FrameAt, Arc<Vec<u8>>)>>,
}

/// Where a frame lies: replica number, pack, offset.
pub type FrameAt = (usize, Hash, u64);

/// What one replica served in place of the primary.
#[derive(Default, Debug, Clone)]
pub struct Served {
    /// Frames (pack, offset) the primary holds damaged.
    pub damaged: BTreeSet<(Hash, u64)>,
    /// Frames of packs the primary does not have.
    pub missing: BTreeSet<(Hash, u64)>,
    /// Object names of those packs, and of packs whose directory was read there instead.
    pub packs: BTreeSet<String>,
}

impl Default for Fallback {
    fn default() -> Self {
        Fallback {
            resolver: OnceLock::new(),
            replicas: OnceLock::new(),
            enabled: AtomicBool::new(true),
            tally: Mutex::default(),
            cache: Mutex::default(),
        }
    }
}

impl Fallback {
    pub fn set_resolver(&self, resolve: ReplicaResolver) {
        let _ = self.resolver.set(resolve);
    }

    /// The replica locations the opener vouches for (none opened).
    pub fn locations(&self, repo: &super::Repository) -> Vec<String> {
        self.resolver.get().map(|r| r(repo)).unwrap_or_default()
    }

    /// The replicas, opened on first use (only when a read needs them); those that cannot
    /// be opened or hold no repository are left out.
    pub fn replicas(&self, repo: &super::Repository) -> &[Box<dyn Storage>] {
        if !self.enabled.load(Ordering::Relaxed) {
            return &[];
        }
        self.replicas.get_or_init(|| {
            self.locations(repo)
                .iter()
                .filter_map(|url| match crate::storage::open(url, false) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::info!("replica {url} cannot be read from: {e}");
                        None
                    }
                })
                .filter(|s| s.exists("config").unwrap_or(false))
                .collect()
        })
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Note that `replica` served frame (`pack`, `offset`): `missing` if the primary has no
    /// such pack, else it holds it damaged. `offset` None: the pack's directory.
    pub fn note(&self, replica: &str, pack: &Hash, offset: Option<u64>, missing: bool) {
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        let served = tally.entry(replica.to_string()).or_default();
        served
            .packs
            .insert(crate::repo::pack::pack_object_name(pack));
        if let Some(offset) = offset {
            if missing {
                served.missing.insert((*pack, offset));
            } else {
                served.damaged.insert((*pack, offset));
            }
        }
    }

    pub fn cached(&self, at: &FrameAt) -> Option<Arc<Vec<u8>>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.iter().find(|(k, _)| k == at).map(|(_, f)| f.clone())
    }

    pub fn cache(&self, at: FrameAt, frame: Arc<Vec<u8>>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() == CACHED_FRAMES {
            cache.pop_front();
        }
        cache.push_back((at, frame));
    }

    /// What the replicas served since the last call, by replica.
    pub fn take(&self) -> BTreeMap<String, Served> {
        std::mem::take(&mut *self.tally.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The one warning of a command that read from replicas: how many frames each served, of
/// which packs, and what to do about it.
pub fn summary(served: &BTreeMap<String, Served>) -> Option<String> {
    if served.is_empty() {
        return None;
    }
    let packs: BTreeSet<&String> = served.values().flat_map(|s| s.packs.iter()).collect();
    let per_replica: Vec<String> = served
        .iter()
        .map(|(replica, s)| {
            let frames = counts(s.damaged.len(), s.missing.len());
            if frames.is_empty() {
                format!("replica {replica}")
            } else {
                format!("{frames} from replica {replica}")
            }
        })
        .collect();
    let named = if packs.len() <= 3 {
        format!(
            ": {}",
            packs
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    Some(format!(
        "the primary lacks good copies of {} {}{named}; read {} instead. Run `lifeboat repo repair` to fix the primary",
        packs.len(),
        if packs.len() == 1 { "pack" } else { "packs" },
        per_replica.join(", and ")
    ))
}

/// "3 damaged and 50 missing frames", "1 damaged frame", "" for none.
fn counts(damaged: usize, missing: usize) -> String {
    let frames = |n: usize| if n == 1 { "frame" } else { "frames" };
    match (damaged, missing) {
        (0, 0) => String::new(),
        (d, 0) => format!("{d} damaged {}", frames(d)),
        (0, m) => format!("{m} missing {}", frames(m)),
        (d, m) => format!("{d} damaged and {m} missing {}", frames(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sentence_with_counts_per_replica() {
        let f = Fallback::default();
        let (a, b) = (Hash::of(b"a"), Hash::of(b"b"));
        f.note("/r1", &a, Some(10), false);
        f.note("/r1", &a, Some(10), false); // the same frame twice counts once
        f.note("/r1", &b, Some(10), true);
        f.note("/r1", &b, Some(20), true);
        let text = summary(&f.take()).unwrap();
        assert!(
            text.contains("2 packs")
                && text.contains("1 damaged and 2 missing frames from replica /r1")
                && text.contains("lifeboat repo repair"),
            "{text}"
        );
        assert!(f.take().is_empty(), "said once");
        f.note("/r2", &a, None, false);
        let text = summary(&f.take()).unwrap();
        assert!(
            text.contains("1 pack: data/") && text.contains("replica /r2"),
            "{text}"
        );
    }
}
