//! [`Reservations`]: the file reservations held now, with their compiled patterns and the
//! indexes the rules and reads need (by repository, holder, task and expiry, and within a
//! repository by the directory a pattern fixes).

use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use muster_protocol::glob::{Budget, Glob, OverBudget};
use muster_protocol::{Reservation, ReservationId, Seq, TaskId, Timestamp};

/// A reservation and its pattern, compiled once.
#[derive(Debug)]
pub struct Held {
    /// The reservation.
    pub reservation: Reservation,
    /// Its pattern; `None` only if a stored pattern no longer parses (a grammar change
    /// between versions, or a limit lowered), and then it matches nothing.
    pub glob: Option<Glob>,
    /// No later than the `seq` of the event that put it (its own, or the head the model was
    /// loaded at): a check made on a snapshot at `seq` N has seen every reservation with
    /// `put <= N` (see `core::files`).
    pub put: Seq,
}

impl PartialEq for Held {
    /// The same reservation, however it was put (`put` depends on when the model was
    /// loaded).
    fn eq(&self, other: &Held) -> bool {
        self.reservation == other.reservation
    }
}

impl Held {
    /// Whether this reservation holds `path`, counting the steps against `budget`.
    pub fn matches(&self, path: &str, budget: &mut Budget) -> Result<bool, OverBudget> {
        match &self.glob {
            Some(g) => g.matches_within(path, budget),
            None => Ok(false),
        }
    }
}

/// Every reservation held now. The indexes hold the reservations themselves (not ids), so
/// that the overlap check of a new one walks its neighbours without a lookup each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reservations {
    by_id: OrdMap<ReservationId, Arc<Held>>,
    by_repo: OrdMap<String, Group>,
    /// By repository and the directory the pattern fixes (`src/auth/` for `src/auth/*.rs`,
    /// `docs/` for `docs/api.md`): see [`Reservations::near`].
    by_dir: OrdMap<(String, Vec<u8>), Group>,
    /// By repository, the patterns that fix no directory (`*.lock`, `src*/**`).
    loose: OrdMap<String, Group>,
    by_agent: OrdMap<String, Group>,
    by_task: OrdMap<TaskId, Group>,
    expiring: OrdSet<(Timestamp, ReservationId)>,
}

/// Some reservations, by id.
type Group = OrdMap<ReservationId, Arc<Held>>;

fn index<K: Ord + Clone>(map: &mut OrdMap<K, Group>, key: &K, id: ReservationId, held: Option<&Arc<Held>>) {
    match held {
        Some(held) => {
            map.entry(key.clone()).or_default().insert(id, Arc::clone(held));
        }
        None => {
            if let Some(group) = map.get_mut(key) {
                group.remove(&id);
                if group.is_empty() {
                    map.remove(key);
                }
            }
        }
    }
}

impl Reservations {
    /// How many are held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The reservation with this id.
    pub fn get(&self, id: ReservationId) -> Option<&Arc<Held>> {
        self.by_id.get(&id)
    }

    /// Every reservation, by id.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Held>> + '_ {
        self.by_id.values()
    }

    fn some(group: Option<&Group>) -> impl Iterator<Item = &Arc<Held>> + '_ {
        group.into_iter().flat_map(|g| g.values())
    }

    /// The reservations in a repository, by id.
    pub fn in_repo<'a>(&'a self, repo: &str) -> impl Iterator<Item = &'a Arc<Held>> + 'a {
        Self::some(self.by_repo.get(repo))
    }

    /// An agent's reservations, by id.
    pub fn of_agent<'a>(&'a self, agent: &str) -> impl Iterator<Item = &'a Arc<Held>> + 'a {
        Self::some(self.by_agent.get(agent))
    }

    /// A task's reservations, by id.
    pub fn of_task(&self, task: TaskId) -> impl Iterator<Item = &Arc<Held>> + '_ {
        Self::some(self.by_task.get(&task))
    }

    /// The reservations in `repo` that may share a path with `glob`: those whose directory
    /// is one `glob`'s directory is in, or inside it (a common path starts with both
    /// patterns' literal beginnings, so one extends the other), and those that fix no
    /// directory. Most of a large repository's reservations are in neither.
    pub fn near<'a>(&'a self, repo: &'a str, glob: &'a Glob) -> impl Iterator<Item = &'a Arc<Held>> + 'a {
        // Without a directory, its literal beginning (no `/` in it) begins every directory
        // that may hold a common path.
        let (dir, own) = match glob.fixed_dir() {
            Some(dir) => (dir, dir.len()),
            None => (glob.prefix(), 0),
        };
        let key = move |end: usize| (repo.to_owned(), dir[..end].to_vec());
        let ends = dir.iter().enumerate().filter(|(_, b)| **b == b'/').map(|(i, _)| i + 1);
        let outer = ends.filter(move |end| *end < own).filter_map(move |end| self.by_dir.get(&key(end)));
        let inner = self.by_dir.range(key(dir.len())..).take_while(move |((r, d), _)| r == repo && d.starts_with(dir));
        outer.chain(inner.map(|(_, group)| group)).chain(self.loose.get(repo)).flat_map(|g| g.values())
    }

    /// The reservations in `repo` that may hold `path`: those of the directories it is in,
    /// and those that fix no directory.
    pub fn along<'a>(&'a self, repo: &'a str, path: &'a str) -> impl Iterator<Item = &'a Arc<Held>> + 'a {
        let bytes = path.as_bytes();
        let ends = bytes.iter().enumerate().filter(|(_, b)| **b == b'/').map(|(i, _)| i + 1);
        let dirs = ends.filter_map(move |end| self.by_dir.get(&(repo.to_owned(), bytes[..end].to_vec())));
        dirs.chain(self.loose.get(repo)).flat_map(|g| g.values())
    }

    /// The agents holding reservations.
    pub fn holders(&self) -> impl Iterator<Item = &String> + '_ {
        self.by_agent.keys()
    }

    /// Reservations whose TTL has run out at `now`, soonest first.
    pub fn expired(&self, now: Timestamp) -> impl Iterator<Item = &Arc<Held>> + '_ {
        self.expiring.iter().take_while(move |(at, _)| *at <= now).filter_map(|(_, id)| self.by_id.get(id))
    }

    /// Adds a reservation, or replaces the one with its id; `put` is the `seq` of the event
    /// (see [`Held::put`]).
    pub(super) fn put(&mut self, reservation: Reservation, put: Seq) {
        self.remove(reservation.id);
        let glob = Glob::parse(&reservation.pattern).ok();
        let held = Arc::new(Held { reservation, glob, put });
        let r = &held.reservation;
        index(&mut self.by_repo, &r.repo, r.id, Some(&held));
        match held.glob.as_ref().and_then(Glob::fixed_dir) {
            Some(dir) => index(&mut self.by_dir, &(r.repo.clone(), dir.to_vec()), r.id, Some(&held)),
            None => index(&mut self.loose, &r.repo, r.id, Some(&held)),
        }
        index(&mut self.by_agent, &r.agent, r.id, Some(&held));
        if let Some(task) = r.task {
            index(&mut self.by_task, &task, r.id, Some(&held));
        }
        if let Some(at) = r.expires_at {
            self.expiring.insert((at, r.id));
        }
        self.by_id.insert(r.id, Arc::clone(&held));
    }

    /// Removes a reservation, if held.
    pub(super) fn remove(&mut self, id: ReservationId) {
        let Some(held) = self.by_id.remove(&id) else { return };
        let r = &held.reservation;
        index(&mut self.by_repo, &r.repo, id, None);
        match held.glob.as_ref().and_then(Glob::fixed_dir) {
            Some(dir) => index(&mut self.by_dir, &(r.repo.clone(), dir.to_vec()), id, None),
            None => index(&mut self.loose, &r.repo, id, None),
        }
        index(&mut self.by_agent, &r.agent, id, None);
        if let Some(task) = r.task {
            index(&mut self.by_task, &task, id, None);
        }
        if let Some(at) = r.expires_at {
            self.expiring.remove(&(at, id));
        }
    }
}
