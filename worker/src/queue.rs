//! The queue's scheduling, without I/O or clocks of its own (every call takes `now`), so it
//! is unit-tested without an apiserver:
//!
//! - changed items (`metadata.generation` ≠ `status.observedGeneration`) go first, in the
//!   order they changed;
//! - the rest are swept for drift when their poll interval is due, handed out together so
//!   the sweep observes each kind once per database;
//! - a failure backs the item off exponentially; a new generation clears the backoff
//!   (the user changed the spec, try at once);
//! - one SQL object (kind, database, name — case-folded, since server collations usually
//!   are) is never handed out twice at once, even when two WorkItems name it.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

/// Identity of a SQL object, for mutual exclusion.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Kind.
    pub kind: String,
    /// Database (users, schemas), case-folded.
    pub database: Option<String>,
    /// Name, case-folded.
    pub name: String,
}

impl ObjectKey {
    /// Builds a case-folded key.
    pub fn new(kind: &str, database: Option<&str>, name: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            database: database.map(str::to_lowercase),
            name: name.to_lowercase(),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    object: ObjectKey,
    generation: i64,
    /// Generation last completed successfully (or seen as observed in the status).
    done_generation: Option<i64>,
    /// Order in which it became changed.
    changed_seq: u64,
    /// Since when the item has been waiting (changed or due).
    pending_since: Option<Instant>,
    next_due: Instant,
    backoff_until: Option<Instant>,
    attempts: u32,
    poll: Duration,
    running: bool,
}

impl Entry {
    fn changed(&self) -> bool {
        self.done_generation != Some(self.generation)
    }
}

/// Backoff bounds.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub base: Duration,
    /// Cap.
    pub max: Duration,
}

impl Backoff {
    /// Delay after `attempts` consecutive failures: base · 2^(attempts−1), capped.
    pub fn delay(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// The scheduler state.
#[derive(Debug)]
pub struct Scheduler {
    entries: HashMap<String, Entry>,
    in_flight: HashSet<ObjectKey>,
    seq: u64,
    backoff: Backoff,
    default_poll: Duration,
}

/// What the watch says about one WorkItem.
#[derive(Debug, Clone)]
pub struct Seen {
    /// WorkItem name.
    pub key: String,
    /// The object it manages.
    pub object: ObjectKey,
    /// `metadata.generation`.
    pub generation: i64,
    /// `status.observedGeneration`.
    pub observed_generation: Option<i64>,
    /// `spec.pollInterval`, when set.
    pub poll: Option<Duration>,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(default_poll: Duration, backoff: Backoff) -> Self {
        Self {
            entries: HashMap::new(),
            in_flight: HashSet::new(),
            seq: 0,
            backoff,
            default_poll,
        }
    }

    /// Records a WorkItem from the watch (added or modified).
    pub fn upsert(&mut self, seen: Seen, now: Instant) {
        self.seq += 1;
        let seq = self.seq;
        let poll = seen.poll.unwrap_or(self.default_poll);
        match self.entries.get_mut(&seen.key) {
            None => {
                // New to this process: observe it in the first sweep (or now, if changed).
                self.entries.insert(
                    seen.key,
                    Entry {
                        object: seen.object,
                        generation: seen.generation,
                        done_generation: seen.observed_generation,
                        changed_seq: seq,
                        pending_since: Some(now),
                        next_due: now,
                        backoff_until: None,
                        attempts: 0,
                        poll,
                        running: false,
                    },
                );
            }
            Some(e) => {
                let newer = seen.generation != e.generation;
                e.poll = poll;
                e.object = seen.object;
                if let Some(observed) = seen.observed_generation
                    && e.done_generation.is_none_or(|d| observed > d)
                {
                    e.done_generation = Some(observed);
                }
                if newer {
                    e.generation = seen.generation;
                    e.changed_seq = seq;
                    e.pending_since.get_or_insert(now);
                    // A new spec deserves an immediate try, whatever failed before.
                    e.backoff_until = None;
                    e.attempts = 0;
                }
            }
        }
    }

    /// Keeps only the WorkItems for which `live` is true (after a re-list).
    pub fn retain(&mut self, mut live: impl FnMut(&str) -> bool) {
        // A running entry stays until its task completes, so its object stays locked; the
        // watch's Delete event (or the next re-list) removes it afterwards.
        self.entries.retain(|k, e| e.running || live(k));
    }

    /// Forgets a deleted WorkItem.
    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }

    fn ready(&self, e: &Entry, now: Instant) -> bool {
        !e.running && e.backoff_until.is_none_or(|t| t <= now) && !self.in_flight.contains(&e.object)
    }

    /// The next changed item to process, oldest change first; marks it running.
    pub fn next_changed(&mut self, now: Instant) -> Option<String> {
        let key = self
            .entries
            .iter()
            .filter(|(_, e)| e.changed() && self.ready(e, now))
            .min_by_key(|(_, e)| e.changed_seq)
            .map(|(k, _)| k.clone())?;
        self.start(&key);
        Some(key)
    }

    /// Every unchanged item whose drift check is due; marks them running. At most one item
    /// per SQL object.
    pub fn due_for_sweep(&mut self, now: Instant) -> Vec<String> {
        let mut keys: Vec<(String, ObjectKey)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.changed() && e.next_due <= now && self.ready(e, now))
            .map(|(k, e)| (k.clone(), e.object.clone()))
            .collect();
        keys.sort();
        let mut taken = HashSet::new();
        keys.retain(|(_, o)| taken.insert(o.clone()));
        let keys: Vec<String> = keys.into_iter().map(|(k, _)| k).collect();
        for k in &keys {
            self.start(k);
        }
        keys
    }

    fn start(&mut self, key: &str) {
        if let Some(e) = self.entries.get_mut(key) {
            e.running = true;
            self.in_flight.insert(e.object.clone());
        }
    }

    /// Records the end of an attempt at `generation`. Returns the consecutive failures.
    pub fn complete(&mut self, key: &str, generation: i64, success: bool, now: Instant) -> u32 {
        let Some(e) = self.entries.get_mut(key) else {
            return 0;
        };
        e.running = false;
        self.in_flight.remove(&e.object);
        if success {
            e.attempts = 0;
            e.backoff_until = None;
            if e.generation == generation {
                e.done_generation = Some(generation);
                e.pending_since = None;
            }
            e.next_due = now + e.poll;
        } else {
            e.attempts = e.attempts.saturating_add(1);
            let until = now + self.backoff.delay(e.attempts);
            e.backoff_until = Some(until);
            e.next_due = until;
        }
        e.attempts
    }

    /// Items waiting: changed or due, not running.
    pub fn depth(&self, now: Instant) -> usize {
        self.entries
            .values()
            .filter(|e| !e.running && (e.changed() || e.next_due <= now))
            .count()
    }

    /// How long the oldest changed item has been waiting.
    pub fn oldest_pending(&self, now: Instant) -> Option<Duration> {
        self.entries
            .values()
            .filter(|e| e.changed())
            .filter_map(|e| e.pending_since)
            .min()
            .map(|t| now.saturating_duration_since(t))
    }

    /// The generation the scheduler has for `key`.
    pub fn generation(&self, key: &str) -> Option<i64> {
        self.entries.get(key).map(|e| e.generation)
    }

    /// Number of items known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no item is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: Duration = Duration::from_secs(60);
    const BACKOFF: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(300),
    };

    fn seen(key: &str, name: &str, generation: i64, observed: Option<i64>) -> Seen {
        Seen {
            key: key.into(),
            object: ObjectKey::new("Login", None, name),
            generation,
            observed_generation: observed,
            poll: None,
        }
    }

    #[test]
    fn changed_items_first_in_the_order_they_changed() {
        let t = Instant::now();
        let mut s = Scheduler::new(POLL, BACKOFF);
        s.upsert(seen("synced", "a", 1, Some(1)), t);
        s.upsert(seen("second", "b", 1, None), t);
        s.upsert(seen("third", "c", 2, Some(1)), t);
        s.upsert(seen("first", "d", 1, Some(1)), t);
        // "first" changes now: it was in sync before, so it queues after the others.
        s.upsert(seen("first", "d", 2, Some(1)), t);
        assert_eq!(s.next_changed(t).as_deref(), Some("second"));
        assert_eq!(s.next_changed(t).as_deref(), Some("third"));
        assert_eq!(s.next_changed(t).as_deref(), Some("first"));
        assert_eq!(s.next_changed(t), None, "the synced item is not changed");
        assert_eq!(
            s.due_for_sweep(t),
            vec!["synced"],
            "but due for its first drift check"
        );
    }

    #[test]
    fn one_sql_object_is_never_handed_out_twice() {
        let t = Instant::now();
        let mut s = Scheduler::new(POLL, BACKOFF);
        // Two WorkItems naming the same login, differently cased.
        s.upsert(seen("x1", "App", 1, None), t);
        s.upsert(seen("x2", "app", 1, None), t);
        let first = s.next_changed(t).unwrap();
        assert_eq!(
            s.next_changed(t),
            None,
            "the other waits while the object is in flight"
        );
        s.complete(&first, 1, true, t);
        assert!(s.next_changed(t).is_some());
    }

    #[test]
    fn failures_back_off_exponentially_and_a_new_generation_resets() {
        let t = Instant::now();
        let mut s = Scheduler::new(POLL, BACKOFF);
        s.upsert(seen("x", "a", 1, None), t);
        let mut now = t;
        for (attempt, delay) in [(1, 1), (2, 2), (3, 4), (4, 8)] {
            assert_eq!(s.next_changed(now).as_deref(), Some("x"), "attempt {attempt}");
            assert_eq!(s.complete("x", 1, false, now), attempt);
            assert_eq!(
                s.next_changed(now + Duration::from_millis(delay * 1000 - 1)),
                None,
                "backing off"
            );
            now += Duration::from_secs(delay);
        }
        assert_eq!(BACKOFF.delay(30), Duration::from_secs(300), "capped");
        assert_eq!(s.next_changed(now).as_deref(), Some("x"));
        s.complete("x", 1, false, now);
        s.upsert(seen("x", "a", 2, None), now);
        assert_eq!(
            s.next_changed(now).as_deref(),
            Some("x"),
            "spec changed: retry at once"
        );
    }

    #[test]
    fn success_schedules_the_next_drift_check_and_counts() {
        let t = Instant::now();
        let mut s = Scheduler::new(POLL, BACKOFF);
        s.upsert(seen("x", "a", 1, None), t);
        s.upsert(seen("y", "b", 1, Some(1)), t);
        assert_eq!(s.depth(t), 2);
        assert_eq!(
            s.oldest_pending(t + Duration::from_secs(5)),
            Some(Duration::from_secs(5))
        );
        let k = s.next_changed(t).unwrap();
        s.complete(&k, 1, true, t);
        let swept = s.due_for_sweep(t);
        assert_eq!(swept, vec!["y"]);
        s.complete("y", 1, true, t);
        assert_eq!(s.depth(t), 0);
        assert_eq!(s.oldest_pending(t), None);
        assert!(s.due_for_sweep(t + POLL - Duration::from_secs(1)).is_empty());
        assert_eq!(
            s.due_for_sweep(t + POLL).len(),
            2,
            "both due again after the poll interval"
        );
        // Our own status write comes back through the watch: not a change.
        s.upsert(seen("x", "a", 1, Some(1)), t);
        assert_eq!(s.next_changed(t + POLL), None);
    }

    #[test]
    fn a_relist_forgets_deleted_items_but_not_running_ones() {
        let t = Instant::now();
        let mut s = Scheduler::new(POLL, BACKOFF);
        s.upsert(seen("busy", "b", 1, None), t);
        s.upsert(seen("gone", "a", 1, None), t);
        s.upsert(seen("kept", "c", 1, None), t);
        assert_eq!(s.next_changed(t).as_deref(), Some("busy"));
        s.retain(|k| k == "kept");
        assert_eq!(s.len(), 2, "busy stays until it completes");
        assert_eq!(s.next_changed(t).as_deref(), Some("kept"));
    }

    #[test]
    fn a_completion_for_an_older_generation_leaves_the_item_changed() {
        let t = Instant::now();
        let mut s = Scheduler::new(POLL, BACKOFF);
        s.upsert(seen("x", "a", 1, None), t);
        assert!(s.next_changed(t).is_some());
        s.upsert(seen("x", "a", 2, None), t);
        s.complete("x", 1, true, t);
        assert_eq!(
            s.next_changed(t).as_deref(),
            Some("x"),
            "generation 2 still to do"
        );
    }
}
