//! [`Reservations`]: the file reservations held now, with their compiled patterns and the
//! indexes the rules and reads need (by repository, holder, task and expiry).

use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use muster_protocol::glob::Glob;
use muster_protocol::{Reservation, ReservationId, TaskId, Timestamp};

/// A reservation and its pattern, compiled once.
#[derive(Debug, PartialEq)]
pub struct Held {
    /// The reservation.
    pub reservation: Reservation,
    /// Its pattern; `None` only if a stored pattern no longer parses (a grammar change
    /// between versions), and then it matches nothing.
    pub glob: Option<Glob>,
}

impl Held {
    /// Whether this reservation holds `path`.
    pub fn matches(&self, path: &str) -> bool {
        self.glob.as_ref().is_some_and(|g| g.matches(path))
    }
}

/// Every reservation held now. The indexes hold the reservations themselves (not ids), so
/// that the overlap check of a new one walks its repository without a lookup per neighbour.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reservations {
    by_id: OrdMap<ReservationId, Arc<Held>>,
    by_repo: OrdMap<String, Group>,
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

    /// The agents holding reservations.
    pub fn holders(&self) -> impl Iterator<Item = &String> + '_ {
        self.by_agent.keys()
    }

    /// Reservations whose TTL has run out at `now`, soonest first.
    pub fn expired(&self, now: Timestamp) -> impl Iterator<Item = &Arc<Held>> + '_ {
        self.expiring.iter().take_while(move |(at, _)| *at <= now).filter_map(|(_, id)| self.by_id.get(id))
    }

    /// Adds a reservation, or replaces the one with its id.
    pub(super) fn put(&mut self, reservation: Reservation) {
        self.remove(reservation.id);
        let glob = Glob::parse(&reservation.pattern).ok();
        let held = Arc::new(Held { reservation, glob });
        let r = &held.reservation;
        index(&mut self.by_repo, &r.repo, r.id, Some(&held));
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
        index(&mut self.by_agent, &r.agent, id, None);
        if let Some(task) = r.task {
            index(&mut self.by_task, &task, id, None);
        }
        if let Some(at) = r.expires_at {
            self.expiring.remove(&(at, id));
        }
    }
}
