//! File reservations' rules: reserving (all or nothing, refused on any overlap that is not
//! allowed), releasing, and the ends that come by themselves: the task's claim ends, the TTL
//! runs out, or the holder stays away past its claims' grace or lease.
//!
//! Overlap: two reservations of different agents in one repository may both match a path
//! only if both are shared. An agent's own reservations never conflict with each other.

use std::collections::BTreeMap;

use muster_protocol::glob::{Budget, Glob, OverBudget, check_path, exact};
use muster_protocol::{
    DEFAULT_TTL_SECONDS, EventKind, FileConflict, FilesQuery, FilesReleaseReason, MAX_MATCH_STEPS, MAX_PATTERNS,
    MAX_PER_AGENT, MAX_TTL_SECONDS, ReleaseFiles, ReleaseReason, Reservation, ReservationId, ReserveFiles, Seq, TaskId,
    check_repo,
};

use super::decider::Decider;
use super::error::DomainError;
use super::model::Model;
use super::reservations::Held;
use super::reserve::{Precheck, Reserve};
use super::rules::{require_agent, validate_note};

/// Most conflicts listed in one refusal.
const MAX_CONFLICTS: usize = 20;

/// The reservations in `repo` that hold `path`, by id, the matching counted against
/// `budget`.
pub fn holders<'m>(
    model: &'m Model,
    repo: &'m str,
    path: &'m str,
    budget: &mut Budget,
) -> Result<Vec<&'m Reservation>, OverBudget> {
    let mut found = Vec::new();
    for held in model.files.along(repo, path) {
        if held.matches(path, budget)? {
            found.push(&held.reservation);
        }
    }
    found.sort_by_key(|r| r.id);
    Ok(found)
}

/// The reservations that pass a filter, by id.
pub fn list<'m>(model: &'m Model, q: &'m FilesQuery) -> impl Iterator<Item = &'m Reservation> + 'm {
    let held: Box<dyn Iterator<Item = &std::sync::Arc<Held>>> = match (&q.agent, &q.task, &q.repo) {
        (Some(agent), _, _) => Box::new(model.files.of_agent(agent)),
        (None, Some(task), _) => Box::new(model.files.of_task(*task)),
        (None, None, Some(repo)) => Box::new(model.files.in_repo(repo)),
        (None, None, None) => Box::new(model.files.all()),
    };
    held.map(|h| &h.reservation).filter(move |r| {
        q.repo.as_ref().is_none_or(|repo| &r.repo == repo)
            && q.agent.as_ref().is_none_or(|a| &r.agent == a)
            && q.task.is_none_or(|t| r.task == Some(t))
    })
}

/// The refusal of a reserve whose checks would take more than their budget.
fn too_costly(i: usize, pattern: &str, repo: &str) -> DomainError {
    DomainError::TooCostly {
        field: format!("patterns[{i}]"),
        message: format!(
            "checking {pattern:?} (compiling the request's patterns, and matching them against the reservations \
             held in {repo}) would take more than {MAX_MATCH_STEPS} matching steps, so nothing was reserved: \
             reserve files or directories (src/auth/, src/auth/session.rs) rather than patterns with many \
             wildcards, or fewer at once"
        ),
    }
}

fn conflict_message(conflicts: &[FileConflict]) -> String {
    let each: Vec<String> = conflicts
        .iter()
        .map(|c| {
            let h = &c.holder;
            let task = h.task.map(|t| format!(", for {t}")).unwrap_or_default();
            let mode = if h.exclusive { "exclusive" } else { "shared" };
            format!(
                "{} overlaps {}'s {mode} {} ({}{task}): both match {}",
                c.pattern, h.agent, h.pattern, h.id, c.witness
            )
        })
        .collect();
    format!("not reserved, nothing was: {}", each.join("; "))
}

impl Decider<'_> {
    /// Reserves `r.patterns` for the acting agent, all or none.
    pub(super) fn reserve(&mut self, reserve: &Reserve) -> Result<Vec<Reservation>, DomainError> {
        let r = &reserve.files;
        let mut budget = Budget::new(reserve.steps.unwrap_or(MAX_MATCH_STEPS));
        let agent = require_agent("agent", r.agent.as_deref())?;
        check_repo(&r.repo).map_err(|m| DomainError::invalid("repo", m))?;
        if r.patterns.is_empty() {
            return Err(DomainError::invalid("patterns", "is empty: name the paths or globs to reserve"));
        }
        if r.patterns.len() > MAX_PATTERNS {
            return Err(DomainError::invalid("patterns", format!("has more than {MAX_PATTERNS} patterns")));
        }
        let mut globs: Vec<Glob> = Vec::with_capacity(r.patterns.len());
        // What each glob was read from (for an edit, the path).
        let mut read_from: Vec<&str> = Vec::with_capacity(r.patterns.len());
        for (i, raw) in r.patterns.iter().enumerate() {
            let pattern = if r.auto {
                // `/src/a.rs`, anchored as a pattern would be, is the path `src/a.rs`.
                let path = raw.strip_prefix('/').unwrap_or(raw);
                check_path(path).map_err(|m| {
                    DomainError::invalid(format!("patterns[{i}]"), format!("{m} (auto: give the paths of files)"))
                })?;
                exact(path)
            } else {
                raw.clone()
            };
            let glob = Glob::parse_within(&pattern, &mut budget)
                .map_err(|OverBudget| too_costly(i, &pattern, &r.repo))?
                .map_err(|e| DomainError::invalid(format!("patterns[{i}]"), e.0))?;
            if !globs.contains(&glob) {
                globs.push(glob);
                read_from.push(raw);
            }
        }
        if let Some(reason) = &r.reason {
            validate_note(reason)
                .map_err(|_| DomainError::invalid("reason", "must be one line of at most 256 characters"))?;
        }
        // An edit is for the task the agent claimed last, unless it names one.
        let task = match (r.task, r.auto) {
            (None, true) => self.model.held_by(agent).max_by_key(|t| t.claim.as_ref().map(|c| c.at)).map(|t| t.id),
            (task, _) => task,
        };
        let ttl = match r.ttl_seconds {
            Some(0) => return Err(DomainError::invalid("ttlSeconds", "must be at least 1")),
            Some(s) if s > MAX_TTL_SECONDS => {
                return Err(DomainError::invalid("ttlSeconds", format!("must be at most {MAX_TTL_SECONDS} (a week)")));
            }
            Some(s) => Some(s),
            None if task.is_none() => Some(DEFAULT_TTL_SECONDS),
            None => None,
        };
        if let Some(id) = r.task {
            let task = self.task(id)?;
            match &task.claim {
                Some(claim) if claim.agent == agent => {}
                Some(claim) => {
                    return Err(DomainError::Conflict {
                        field: None,
                        message: format!("{id} is claimed by {}: only its owner reserves files for it", claim.agent),
                    });
                }
                None => {
                    return Err(DomainError::InvalidTransition {
                        message: format!("{id} is not claimed: claim it before reserving files for it"),
                    });
                }
            }
        }

        let since = match &reserve.precheck {
            Precheck::Refused(refusal) => return Err(refusal.clone()),
            Precheck::Clear { at } => Some(*at),
            Precheck::None => None,
        };
        // What an edit writes that the agent holds already (not through the same pattern,
        // which is renewed) needs nothing more.
        let mut covering: Vec<Reservation> = Vec::new();
        if r.auto {
            let mut kept = Vec::with_capacity(globs.len());
            for (glob, path) in globs.into_iter().zip(read_from) {
                let path = path.strip_prefix('/').unwrap_or(path);
                let held = self.model.files.along(&r.repo, path).find(|h| {
                    let mine = &h.reservation;
                    mine.agent == agent
                        && mine.exclusive
                        && mine.pattern != glob.as_str()
                        && h.matches(path, &mut budget).unwrap_or(false)
                });
                match held {
                    Some(h) if !covering.contains(&h.reservation) => covering.push(h.reservation.clone()),
                    Some(_) => {}
                    None => kept.push(glob),
                }
            }
            globs = kept;
            if globs.is_empty() {
                self.touch(agent);
                return Ok(covering);
            }
        }
        let conflicts = self.conflicts(r, agent, &globs, since, &mut budget)?;
        if !conflicts.is_empty() {
            return Err(DomainError::FilesConflict { message: conflict_message(&conflicts), conflicts });
        }

        // The agent's own reservations of the same patterns are renewed (same id).
        let mine: BTreeMap<&str, ReservationId> = self
            .model
            .files
            .of_agent(agent)
            .filter(|h| h.reservation.repo == r.repo)
            .map(|h| (h.reservation.pattern.as_str(), h.reservation.id))
            .collect();
        let new = globs.iter().filter(|g| !mine.contains_key(g.as_str())).count();
        let held = self.model.files.of_agent(agent).count();
        if held + new > MAX_PER_AGENT {
            return Err(DomainError::Conflict {
                field: None,
                message: format!(
                    "{agent} holds {held} reservations: at most {MAX_PER_AGENT} at once (release some first)"
                ),
            });
        }
        let exclusive = !r.shared;
        let expires_at = ttl.map(|s| self.now + std::time::Duration::from_secs(s));
        let mut next = self.model.last_reservation;
        let reservations: Vec<Reservation> = globs
            .iter()
            .map(|glob| {
                let id = mine.get(glob.as_str()).copied().unwrap_or_else(|| {
                    next += 1;
                    ReservationId(next)
                });
                Reservation {
                    id,
                    repo: r.repo.clone(),
                    pattern: glob.as_str().to_owned(),
                    agent: agent.to_owned(),
                    exclusive,
                    task,
                    reason: r.reason.clone().filter(|s| !s.is_empty()),
                    at: self.now,
                    expires_at,
                    auto: r.auto,
                }
            })
            .collect();
        self.touch(agent);
        self.events.push(EventKind::FilesReserved { agent: agent.to_owned(), reservations: reservations.clone() });
        Ok(covering.into_iter().chain(reservations).collect())
    }

    /// The overlaps of `globs` (for `agent`) with other agents' reservations in `r.repo`
    /// that are not allowed, of those put after `since` (all without it): at most
    /// [`MAX_CONFLICTS`], the search stopping there. The work is bounded by
    /// [`MAX_MATCH_STEPS`]; a search that needs more is refused as a conflict.
    fn conflicts(
        &self,
        r: &ReserveFiles,
        agent: &str,
        globs: &[Glob],
        since: Option<Seq>,
        budget: &mut Budget,
    ) -> Result<Vec<FileConflict>, DomainError> {
        let exclusive = !r.shared;
        let mut conflicts = Vec::new();
        for glob in globs {
            let others = self.model.files.near(&r.repo, glob).filter(|h| {
                h.reservation.agent != agent
                    && since.is_none_or(|at| h.put > at)
                    && (exclusive || h.reservation.exclusive)
            });
            for held in others {
                let Some(theirs) = &held.glob else { continue };
                let Some(witness) = glob.overlap_within(theirs, budget).map_err(|OverBudget| {
                    let i = r.patterns.iter().position(|p| p == glob.as_str()).unwrap_or_default();
                    too_costly(i, glob.as_str(), &r.repo)
                })?
                else {
                    continue;
                };
                conflicts.push(FileConflict {
                    pattern: glob.as_str().to_owned(),
                    holder: held.reservation.clone(),
                    witness,
                });
                if conflicts.len() == MAX_CONFLICTS {
                    return Ok(conflicts);
                }
            }
        }
        Ok(conflicts)
    }

    /// Releases the acting agent's reservations in `r.repo`: those with `r.patterns`, those
    /// of `r.task`, or all. Releasing what is not held changes nothing.
    pub(super) fn release_files(&mut self, r: &ReleaseFiles) -> Result<Vec<Reservation>, DomainError> {
        let agent = require_agent("agent", r.agent.as_deref())?;
        check_repo(&r.repo).map_err(|m| DomainError::invalid("repo", m))?;
        if r.patterns.len() > MAX_PATTERNS {
            return Err(DomainError::invalid("patterns", format!("has more than {MAX_PATTERNS} patterns")));
        }
        let released: Vec<Reservation> = self
            .model
            .files
            .of_agent(agent)
            .map(|h| &h.reservation)
            .filter(|h| h.repo == r.repo)
            .filter(|h| r.patterns.is_empty() || r.patterns.contains(&h.pattern))
            .filter(|h| r.task.is_none_or(|t| h.task == Some(t)))
            .cloned()
            .collect();
        self.touch(agent);
        if !released.is_empty() {
            self.events.push(EventKind::FilesReleased {
                agent: agent.to_owned(),
                by: Some(agent.to_owned()),
                reason: FilesReleaseReason::Released,
                reservations: released.clone(),
            });
        }
        Ok(released)
    }

    /// Whether an event of this decision already ended the reservation.
    fn ended(&self, id: ReservationId) -> bool {
        self.events.iter().any(
            |e| matches!(e, EventKind::FilesReleased { reservations, .. } if reservations.iter().any(|r| r.id == id)),
        )
    }

    /// Ends `reservations` (those not ended yet in this decision), one event per holder.
    fn end(&mut self, reservations: Vec<Reservation>, by: Option<&str>, reason: FilesReleaseReason) {
        let mut per_agent: BTreeMap<String, Vec<Reservation>> = BTreeMap::new();
        for r in reservations.into_iter().filter(|r| !self.ended(r.id)) {
            per_agent.entry(r.agent.clone()).or_default().push(r);
        }
        for (agent, reservations) in per_agent {
            self.events.push(EventKind::FilesReleased { agent, by: by.map(str::to_owned), reason, reservations });
        }
    }

    /// After the rules of a command ran: the reservations of every task whose claim its
    /// events ended (completed, cancelled, released, taken away, owner gone) end too. A
    /// task event that leaves its task without a claim is such an end (a task that never had
    /// one has no reservations to end); the one who acted ended it.
    pub(super) fn end_reservations_of_ended_claims(&mut self) {
        let ended: Vec<(TaskId, Option<String>, FilesReleaseReason)> = self
            .events
            .iter()
            .filter_map(|e| {
                let task = e.task().filter(|t| t.claim.is_none())?;
                let reason = if let EventKind::TaskReleased { reason: ReleaseReason::OwnerGone, .. } = e {
                    FilesReleaseReason::OwnerGone
                } else {
                    FilesReleaseReason::TaskEnded
                };
                Some((task.id, e.actor().map(str::to_owned), reason))
            })
            .collect();
        for (task, by, reason) in ended {
            let held: Vec<Reservation> = self.model.files.of_task(task).map(|h| h.reservation.clone()).collect();
            if !held.is_empty() {
                self.end(held, by.as_deref(), reason);
            }
        }
    }

    /// At a tick: reservations whose TTL ran out, and every reservation of an agent that has
    /// been away longer than its claims' grace or lease.
    pub(super) fn end_expired_reservations(&mut self) {
        let expired: Vec<Reservation> = self.model.files.expired(self.now).map(|h| h.reservation.clone()).collect();
        if !expired.is_empty() {
            self.end(expired, None, FilesReleaseReason::Expired);
        }
        let gone: Vec<Reservation> = self
            .model
            .files
            .holders()
            .filter_map(|name| self.model.agents.get(name))
            .filter(|agent| self.policy.claims_expire_at(agent).is_some_and(|at| self.now >= at))
            .flat_map(|agent| self.model.files.of_agent(&agent.name).map(|h| h.reservation.clone()))
            .collect();
        if !gone.is_empty() {
            self.end(gone, None, FilesReleaseReason::OwnerGone);
        }
    }
}
