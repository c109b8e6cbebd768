//! Coordination between writers and prune, on stores with no rename, no append and no
//! locking primitive beyond create-only puts.
//!
//! - `locks/<kind>-<random>`: a *writer marker*. Every backup and sync writes one before it
//!   reads the index, refreshes it every minute, and deletes it at the end. A backup records
//!   in it which deletion plans it had seen when it loaded the index (`seen_plans`); sync
//!   records none, so it blocks every sweep while it runs.
//! - `locks/prune`: the prune lock, created with a create-only put: one prune at a time.
//! - `plans/<id>`: a *deletion plan*, written by prune: packs it intends to delete. Writers
//!   that have seen a plan do not reuse its packs. Prune deletes a plan's packs only when no
//!   live writer could still reuse them (every live marker has seen the plan), and only those
//!   packs that, re-checked at that moment, hold no blob a backup needs.
//!
//! So nothing relies on clocks agreeing, except to call a marker stale: a marker whose
//! process is gone (same host) or that has not been refreshed for `STALE_AFTER` (any host).

use crate::error::{Error, ErrorKind, Result};
use crate::repo::records::Records;
use crate::storage::Storage;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const LOCKS: &str = "locks/";
pub const PLANS: &str = "plans/";
pub const PRUNE_LOCK: &str = "locks/prune";

/// A marker not refreshed for this long belongs to a dead process on some host.
/// The kind of the prune lock's marker when a prune holds it (a key rotation or an upgrade
/// holds it under another kind, and then keeps writers out).
const PRUNE_KIND: &str = "prune";

pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

fn refresh_every() -> Duration {
    let secs = std::env::var("LIFEBOAT_LOCK_REFRESH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    /// `backup`, `sync`, `restore`, `verify`, `check` or `prune`.
    pub kind: String,
    pub host: String,
    pub pid: u32,
    pub started: String,
    pub refreshed: String,
    /// Deletion plans this writer had seen when it loaded the index; None: it may use any pack.
    #[serde(default)]
    pub seen_plans: Option<Vec<String>>,
    /// Where `pid` means something: boot id and pid namespace. A host name alone is not
    /// enough: containers sharing a host name, or cloned VMs, have their own pids.
    #[serde(default)]
    pub machine: String,
    /// The process's start time in clock ticks since boot, so a reused pid is not mistaken
    /// for the writer.
    #[serde(default)]
    pub start_ticks: u64,
    /// Random; tells the holder of the prune lock whether it still holds it.
    #[serde(default)]
    pub token: String,
}

impl Marker {
    fn new(kind: &str) -> Marker {
        let now = jiff::Timestamp::now().to_string();
        Marker {
            kind: kind.into(),
            host: crate::host::hostname(),
            pid: std::process::id(),
            started: now.clone(),
            refreshed: now,
            seen_plans: None,
            machine: this_machine(),
            start_ticks: start_ticks(std::process::id()).unwrap_or(0),
            token: format!("{:032x}", rand::random::<u128>()),
        }
    }

    /// Whether the process that wrote this marker is certainly gone: on this machine (same
    /// boot, same pid namespace) when its process no longer runs, anywhere when it has not
    /// been refreshed for `STALE_AFTER`.
    pub fn is_stale(&self) -> bool {
        let here = !self.machine.is_empty()
            && self.machine == this_machine()
            && self.host == crate::host::hostname();
        if here {
            // Its own process says it all: alive is alive, whatever its clock said.
            return !(process_alive(self.pid)
                && (self.start_ticks == 0 || start_ticks(self.pid) == Some(self.start_ticks)));
        }
        let Ok(refreshed) = self.refreshed.parse::<jiff::Timestamp>() else {
            return false; // unreadable time: assume alive rather than delete under it
        };
        let age = jiff::Timestamp::now().duration_since(refreshed);
        if age.as_secs() < -(STALE_AFTER.as_secs() as i64) {
            // Dated further ahead than any working clock is: an authentic marker written to
            // hold prune off for ever, or a host whose clock is wrong (object stores refuse
            // requests from clocks 15 minutes off).
            tracing::warn!(
                "a lock marker of {} (pid {}) is dated {} s in the future; treated as stale (check that host's clock)",
                self.host,
                self.pid,
                -age.as_secs()
            );
            return true;
        }
        age.as_secs() > STALE_AFTER.as_secs() as i64
    }

    pub fn describe(&self) -> String {
        format!(
            "{} on {} (pid {}) since {}",
            self.kind, self.host, self.pid, self.started
        )
    }

    fn encode(&self, records: &Records, name: &str) -> Result<Vec<u8>> {
        records.encode(name, self)
    }
}

/// Boot id and pid namespace of this process: pids are comparable only within both.
fn this_machine() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if boot.trim().is_empty() || ns.is_empty() {
        return String::new(); // unknown: never judge by pid
    }
    format!("{}/{ns}", boot.trim())
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 checks for existence and permission only; nothing is delivered.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A deletion plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub created: String,
    pub host: String,
    /// Pack ids (hex) to delete once no writer can reuse them.
    pub packs: Vec<String>,
}

/// The packs named by `plans`.
pub fn planned_packs(plans: &[Plan]) -> std::collections::HashSet<crate::id::Hash> {
    plans
        .iter()
        .flat_map(|p| {
            p.packs
                .iter()
                .filter_map(|h| crate::id::Hash::from_hex(h).ok())
        })
        .collect()
}

/// Every authentic deletion plan. One that is not authentic (planted) is ignored: it decides
/// nothing (prune re-checks every pack it deletes anyway).
pub fn read_plans(storage: &dyn Storage, records: &Records) -> Result<Vec<Plan>> {
    let mut plans = Vec::new();
    let found: Vec<(String, Plan)> = records.read_all(
        storage,
        PLANS,
        "delete that object; the next `lifeboat prune` plans again from scratch",
    )?;
    for (name, plan) in found {
        if plan_object(&plan.id) != name {
            tracing::warn!("ignored {name}: it describes plan {}", plan.id);
            continue;
        }
        plans.push(plan);
    }
    plans.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(plans)
}

pub fn write_plan(storage: &dyn Storage, records: &Records, packs: Vec<String>) -> Result<Plan> {
    let now = jiff::Timestamp::now();
    let plan = Plan {
        id: crate::id::new_backup_id(now.as_millisecond().max(0) as u64),
        created: now.to_string(),
        host: crate::host::hostname(),
        packs,
    };
    let name = plan_object(&plan.id);
    storage.put_replace(&name, &records.encode(&name, &plan)?)?;
    Ok(plan)
}

pub fn plan_object(id: &str) -> String {
    format!("{PLANS}{id}")
}

/// Every marker present, with its object name. Stale markers of dead processes on this host
/// are deleted on the way (they would otherwise block sweeps for half an hour). In a
/// repository whose records are sealed, a marker that is not authentic was planted: it is
/// ignored (it must not hold prune off forever); in one whose records are plain, an
/// unreadable marker counts as a live writer.
/// The marker kind of `wal-push`, which writes only `pgwal/` objects: it never reuses a pack,
/// so prune's sweep, index compaction and clean-up need not wait for it (a key rotation or
/// an upgrade still does).
pub const WAL_PUSH: &str = "wal-push";

/// Whether a marker's writer may reuse packs or stage them (prune waits for those).
pub fn touches_packs(m: &Marker) -> bool {
    m.kind != WAL_PUSH
}

pub fn live_markers(storage: &dyn Storage, records: &Records) -> Result<Vec<(String, Marker)>> {
    let mut out = Vec::new();
    for obj in storage.list(LOCKS)? {
        let Some(data) = crate::repo::records::fetch(storage, &obj.name)? else {
            continue;
        };
        let marker = match records.decode::<Marker>(&obj.name, &data) {
            Ok(m) => m,
            Err(e) if records.is_sealed() => {
                tracing::warn!("ignored {}: {e}", obj.name);
                continue;
            }
            Err(_) => {
                tracing::warn!(
                    "{} is not a Lifeboat lock; treated as a live writer",
                    obj.name
                );
                out.push((obj.name, Marker::new("unknown")));
                continue;
            }
        };
        if marker.is_stale() {
            tracing::info!("removing stale lock {} ({})", obj.name, marker.describe());
            storage.delete(&obj.name)?;
            continue;
        }
        out.push((obj.name, marker));
    }
    Ok(out)
}

/// The authentic markers whose holder is gone (killed, or a host that stopped refreshing):
/// what `repo check` reports. Nothing is deleted; the next prune removes them.
pub fn stale_markers(storage: &dyn Storage, records: &Records) -> Result<Vec<(String, Marker)>> {
    let mut out = Vec::new();
    for obj in storage.list(LOCKS)? {
        let Some(data) = crate::repo::records::fetch(storage, &obj.name)? else {
            continue;
        };
        if let Ok(marker) = records.decode::<Marker>(&obj.name, &data) {
            if marker.is_stale() {
                out.push((obj.name, marker));
            }
        }
    }
    Ok(out)
}

/// What a marker's holder knows about it: whether it has been kept fresh without a gap a
/// prune could have taken for death, and (for the prune lock) whether it is still ours.
pub struct Lease {
    state: std::sync::Mutex<LeaseState>,
    what: String,
}

struct LeaseState {
    last_ok: std::time::Instant,
    broken: Option<String>,
}

/// A marker older than this is close enough to stale that its holder must not commit.
const LEASE_MARGIN: Duration = Duration::from_secs(5 * 60);

impl Lease {
    fn new(what: &str) -> Lease {
        Lease {
            state: std::sync::Mutex::new(LeaseState {
                last_ok: std::time::Instant::now(),
                broken: None,
            }),
            what: what.to_string(),
        }
    }

    fn refreshed(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.last_ok.elapsed() > STALE_AFTER - LEASE_MARGIN && st.broken.is_none() {
            st.broken = Some(format!(
                "its lock was not refreshed for {} s (process paused, or the store unreachable)",
                st.last_ok.elapsed().as_secs()
            ));
        }
        st.last_ok = std::time::Instant::now();
    }

    fn lose(&self, why: String) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.broken.get_or_insert(why);
    }

    /// Fails if a prune may have judged this process dead: call before committing (a
    /// manifest) or deleting anything.
    pub fn check(&self) -> Result<()> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let why = match &st.broken {
            Some(w) => Some(w.clone()),
            None if st.last_ok.elapsed() > STALE_AFTER - LEASE_MARGIN => Some(format!(
                "its lock was not refreshed for {} s",
                st.last_ok.elapsed().as_secs()
            )),
            None => None,
        };
        match why {
            None => Ok(()),
            Some(why) => Err(Error::new(
                ErrorKind::InUse,
                format!(
                    "{} stopped: {why}; another process may have taken it for dead",
                    self.what
                ),
            )
            .hint("nothing was committed; run the command again")),
        }
    }
}

/// Run `work` as a writer: with a marker in the repository for its whole duration. A
/// backup (`sees_plans`) gets the deletion plans it must respect; packs in them must not be
/// reused. `work` must call `Lease::check` before it commits.
pub fn as_writer<T>(
    storage: &dyn Storage,
    records: &Records,
    kind: &str,
    sees_plans: bool,
    work: impl FnOnce(&[Plan], &Lease) -> Result<T>,
) -> Result<T> {
    let name = format!("{LOCKS}{kind}-{:016x}", rand::random::<u64>());
    let mut marker = Marker::new(kind);
    storage.put_replace(&name, &marker.encode(records, &name)?)?;
    let lease = Lease::new(&format!("the {kind}"));
    let result = (|| {
        // The marker is visible before the prune lock is read: a key rotation or upgrade
        // that takes the lock after this sees the marker and stops; one that took it before
        // is seen here.
        if let Some(holder) = read_lock_holder(storage, records) {
            if holder.kind != PRUNE_KIND && !holder.is_stale() {
                return Err(Error::new(
                    ErrorKind::InUse,
                    format!("the repository is being changed: {}", holder.describe()),
                )
                .hint(format!("run the {kind} again when it has finished")));
            }
        }
        let plans = if sees_plans {
            // The marker is visible before the plans are read: a prune that writes a plan
            // after this listing will see the marker, and wait for this writer.
            let plans = read_plans(storage, records)?;
            marker.seen_plans = Some(plans.iter().map(|p| p.id.clone()).collect());
            storage.put_replace(&name, &marker.encode(records, &name)?)?;
            plans
        } else {
            Vec::new()
        };
        with_refresh(storage, records, &name, &marker, &lease, false, || {
            work(&plans, &lease)
        })
    })();
    if let Err(e) = storage.delete(&name) {
        tracing::warn!("could not remove lock {name}: {e}; it goes stale in 30 minutes");
    }
    result
}

/// Run `work` as a reader (restore, verify, check): with a marker, so that a prune does not
/// delete packs it may read from an index loaded before a deletion plan. Unlike a writer's,
/// a reader's marker is a courtesy: where it cannot be written (read-only credentials), the
/// reader goes on without, and a concurrent prune can make it fail (never return wrong data).
pub fn as_reader<T>(
    storage: &dyn Storage,
    records: &Records,
    kind: &str,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let name = format!("{LOCKS}{kind}-{:016x}", rand::random::<u64>());
    let mut marker = Marker::new(kind);
    let marked = marker
        .encode(records, &name)
        .and_then(|data| storage.put_replace(&name, &data));
    if let Err(e) = marked {
        tracing::info!("reading without a lock ({e}); a prune running now could interrupt this");
        return work();
    }
    let lease = Lease::new(&format!("the {kind}"));
    let result = (|| {
        // Plans seen now are also seen by the index load that follows.
        marker.seen_plans = Some(
            read_plans(storage, records)?
                .into_iter()
                .map(|p| p.id)
                .collect(),
        );
        storage.put_replace(&name, &marker.encode(records, &name)?)?;
        with_refresh(storage, records, &name, &marker, &lease, false, work)
    })();
    if let Err(e) = storage.delete(&name) {
        tracing::warn!("could not remove lock {name}: {e}; it goes stale in 30 minutes");
    }
    result
}

/// Keep `marker` fresh under `name` while `work` runs. An `exclusive` marker (the prune
/// lock) is re-read first, and if another process holds it now, the lease is lost and the
/// marker left alone.
fn with_refresh<T>(
    storage: &dyn Storage,
    records: &Records,
    name: &str,
    marker: &Marker,
    lease: &Lease,
    exclusive: bool,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut m = marker.clone();
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                stop_rx.recv_timeout(refresh_every())
            {
                if exclusive {
                    let holder: Option<Marker> = storage
                        .get_small(name, crate::repo::format::RECORD_MAX)
                        .ok()
                        .and_then(|d| records.decode(name, &d).ok());
                    if holder.as_ref().map(|h| h.token.as_str()) != Some(m.token.as_str()) {
                        lease.lose(format!(
                            "{name} was taken over by {}",
                            holder
                                .map(|h| h.describe())
                                .unwrap_or_else(|| "nobody".into())
                        ));
                        return;
                    }
                }
                m.refreshed = jiff::Timestamp::now().to_string();
                match m
                    .encode(records, name)
                    .and_then(|data| storage.put_replace(name, &data))
                {
                    Ok(()) => lease.refreshed(),
                    Err(e) => tracing::warn!("could not refresh lock {name}: {e}"),
                }
            }
        });
        let r = work();
        drop(stop_tx);
        r
    })
}

/// For the holder of the prune lock as a key rotation or upgrade (see [`exclusively`]): an
/// InUse error naming every live writer (backup, sync) that started before it took the lock.
pub fn ensure_no_writers(storage: &dyn Storage, records: &Records, hint: &str) -> Result<()> {
    let writers: Vec<String> = live_markers(storage, records)?
        .into_iter()
        .filter(|(name, _)| name != PRUNE_LOCK)
        .map(|(_, m)| m.describe())
        .collect();
    if writers.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InUse,
        format!("the repository is in use: {}", writers.join("; ")),
    )
    .hint(hint))
}

/// The authentic holder of the prune lock, if any.
fn read_lock_holder(storage: &dyn Storage, records: &Records) -> Option<Marker> {
    storage
        .get_small(PRUNE_LOCK, crate::repo::format::RECORD_MAX)
        .ok()
        .and_then(|d| records.decode(PRUNE_LOCK, &d).ok())
}

/// Run `work` holding the prune lock. Another live prune is an error (exit 6) naming it;
/// a stale prune lock is taken over. `work` must call `Lease::check` before deleting.
/// A prune lock that is not authentic (planted) is treated like a stale one: taken over.
pub fn as_pruner<T>(
    storage: &dyn Storage,
    records: &Records,
    work: impl FnOnce(&Lease) -> Result<T>,
) -> Result<T> {
    holding_prune_lock(storage, records, PRUNE_KIND, work)
}

/// Run `work` holding the prune lock as `kind` (a full key rotation, an upgrade): writers
/// refuse to start while it is held (`as_writer`), and `work` must check for the writers
/// that started before.
pub fn exclusively<T>(
    storage: &dyn Storage,
    records: &Records,
    kind: &str,
    work: impl FnOnce(&Lease) -> Result<T>,
) -> Result<T> {
    holding_prune_lock(storage, records, kind, work)
}

fn holding_prune_lock<T>(
    storage: &dyn Storage,
    records: &Records,
    kind: &str,
    work: impl FnOnce(&Lease) -> Result<T>,
) -> Result<T> {
    let marker = Marker::new(kind);
    let data = marker.encode(records, PRUNE_LOCK)?;
    let read_holder = || read_lock_holder(storage, records);
    let mut taken = storage.put_new(PRUNE_LOCK, &data)?;
    if !taken {
        let other: Option<Marker> = read_holder();
        match other {
            Some(m) if !m.is_stale() => {
                let what = if m.kind == PRUNE_KIND {
                    "another prune is running"
                } else {
                    "the repository is being changed"
                };
                return Err(Error::new(
                    ErrorKind::InUse,
                    format!("{what}: {}", m.describe()),
                )
                .hint("wait for it to finish; a lock from a process that died is taken over after 30 minutes"));
            }
            _ => {
                storage.delete(PRUNE_LOCK)?;
                taken = storage.put_new(PRUNE_LOCK, &data)?;
            }
        }
    }
    // Two prunes taking over one stale lock at once can both see their put succeed (one
    // deleted the other's): the lock's content says who won.
    let holder: Option<Marker> = read_holder();
    if !taken || holder.map(|h| h.token) != Some(marker.token.clone()) {
        return Err(Error::new(
            ErrorKind::InUse,
            "another prune took the prune lock at the same moment",
        )
        .hint("run the command again later"));
    }
    let lease = Lease::new("the prune");
    let r = with_refresh(storage, records, PRUNE_LOCK, &marker, &lease, true, || {
        work(&lease)
    });
    let still_ours = read_holder().is_some_and(|h| h.token == marker.token);
    if still_ours {
        if let Err(e) = storage.delete(PRUNE_LOCK) {
            tracing::warn!("could not remove the prune lock: {e}");
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStorage;

    #[test]
    fn markers_come_and_go_and_see_plans() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        let r = Records::plain();
        let plan = write_plan(&s, &r, vec!["ab".into()]).unwrap();
        let seen = as_writer(&s, &r, "backup", true, |plans, _| {
            let live = live_markers(&s, &r)?;
            assert_eq!(live.len(), 1);
            assert_eq!(
                live[0].1.seen_plans.as_deref(),
                Some(&[plan.id.clone()][..])
            );
            Ok(plans.len())
        })
        .unwrap();
        assert_eq!(seen, 1);
        assert!(live_markers(&s, &r).unwrap().is_empty());
    }

    #[test]
    fn dead_local_process_is_stale_and_prune_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        let r = Records::plain();
        let mut dead = Marker::new("backup");
        dead.pid = u32::MAX - 1;
        assert!(dead.is_stale());
        s.put_replace(
            "locks/backup-1",
            &dead.encode(&r, "locks/backup-1").unwrap(),
        )
        .unwrap();
        assert!(live_markers(&s, &r).unwrap().is_empty());
        let inner = as_pruner(&s, &r, |_| {
            Ok(as_pruner(&s, &r, |_| Ok(())).unwrap_err().kind)
        })
        .unwrap();
        assert_eq!(inner, ErrorKind::InUse);
        // A stale prune lock is taken over.
        s.put_replace(PRUNE_LOCK, &dead.encode(&r, PRUNE_LOCK).unwrap())
            .unwrap();
        as_pruner(&s, &r, |_| Ok(())).unwrap();
    }

    #[test]
    fn planted_locks_and_plans_decide_nothing_in_sealed_repositories() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        let r = Records::sealed(std::sync::Arc::new(
            crate::repo::crypto::MasterKeys::generate(),
        ));
        // An attacker writes a live-looking marker, a prune lock and a plan in plain JSON.
        let live = Marker::new("backup");
        let plain = Records::plain();
        s.put_replace(
            "locks/backup-2",
            &live.encode(&plain, "locks/backup-2").unwrap(),
        )
        .unwrap();
        s.put_replace(PRUNE_LOCK, &live.encode(&plain, PRUNE_LOCK).unwrap())
            .unwrap();
        write_plan(&s, &plain, vec!["cd".into()]).unwrap();
        assert!(
            live_markers(&s, &r).unwrap().is_empty(),
            "planted marker ignored"
        );
        assert!(
            read_plans(&s, &r).unwrap().is_empty(),
            "planted plan ignored"
        );
        as_pruner(&s, &r, |_| Ok(())).unwrap();
        // A genuine plan moved to another name is ignored too.
        let genuine = write_plan(&s, &r, vec!["ef".into()]).unwrap();
        let data = s.get(&plan_object(&genuine.id)).unwrap();
        s.put_replace("plans/01zzzzzzzzzzzz", &data).unwrap();
        let plans = read_plans(&s, &r).unwrap();
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].id, genuine.id);
    }

    #[test]
    fn markers_dated_far_ahead_are_stale() {
        let mut m = Marker::new("backup");
        m.machine = String::new(); // another host: judged by its time alone
        let at = |secs: i64| {
            jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_secs(secs))
                .unwrap()
                .to_string()
        };
        m.refreshed = at(60);
        assert!(!m.is_stale(), "a clock a minute ahead");
        m.refreshed = at(-60);
        assert!(!m.is_stale());
        m.refreshed = at(-(STALE_AFTER.as_secs() as i64) - 60);
        assert!(m.is_stale(), "not refreshed for too long");
        m.refreshed = at(STALE_AFTER.as_secs() as i64 + 60);
        assert!(m.is_stale(), "dated beyond any clock skew");
        m.refreshed = "3000-01-01T00:00:00Z".into();
        assert!(m.is_stale());
    }
}
