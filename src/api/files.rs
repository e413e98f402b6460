//! File reservations: reserve paths of a repository, release them, list them, and ask who
//! holds a path. The rules (overlap, all or nothing, when they end) are the domain's
//! (`core/files.rs`).

use muster_protocol::glob::{Budget, OverBudget, check_path};
use muster_protocol::{
    FilesQuery, MAX_MATCH_STEPS, MAX_WHO_PATHS, PathHolders, ReleaseFiles, ReservationList, ReserveFiles, WhoHas,
    WhoHasFiles, check_repo, names,
};

use super::broker::{Broker, Written};
use super::caller::Caller;
use super::error::ApiError;
use crate::core::{
    Command, DomainError, Model, Precheck, Reply, Reserve, decide, holders, list_reservations, validate_agent,
};
use crate::sequencer::IdempotencyKey;

fn reservations(reply: Reply) -> Option<ReservationList> {
    match reply {
        Reply::Reservations(reservations) => Some(ReservationList { reservations }),
        _ => None,
    }
}

/// The steps a reserve's or a `who`'s checks may take on the async worker that received
/// it (about 20 µs): ordinary requests take a few hundred to a few thousand. One that
/// needs more is checked again, in full, on the matcher's low-priority threads.
const INLINE_STEPS: u64 = 20_000;

/// Reserves paths for the acting agent, all or none: 409 listing every overlap with
/// another agent's reservation.
///
/// The reserve is decided first on a snapshot, off the writer: the overlap checks are the
/// costly part, and the writer holds every other write while it decides. An ordinary
/// reserve is decided there and then, within [`INLINE_STEPS`]; a costly one on the
/// matcher's threads (`Broker::matching`), within `MAX_MATCH_STEPS`. The writer then checks
/// only the reservations put since the snapshot (see `core::Precheck`).
pub(crate) async fn reserve(
    broker: &Broker,
    caller: &Caller,
    args: ReserveFiles,
    idempotency: Option<IdempotencyKey>,
) -> Result<Written<ReservationList>, ApiError> {
    let mut cmd = Command::ReserveFiles(Reserve { steps: Some(INLINE_STEPS), ..Reserve::from(args) });
    broker.bind(caller, &mut cmd)?;
    let (policy, now) = (broker.policy.clone(), broker.now());
    let snapshot = broker.read_fresh(caller).await?;
    let mut outcome = decide(&snapshot.model, &policy, &cmd, now).map(|_| snapshot.model.head);
    drop(snapshot);
    if let Err(DomainError::TooCostly { .. }) = outcome {
        if let Command::ReserveFiles(reserve) = &mut cmd {
            reserve.steps = None;
        }
        let checked = broker
            .matching(caller, move |snapshot| {
                let outcome = decide(&snapshot.model, &policy, &cmd, now).map(|_| snapshot.model.head);
                (cmd, outcome)
            })
            .await?;
        (cmd, outcome) = checked;
    }
    let precheck = match outcome {
        Ok(at) => Precheck::Clear { at },
        // With a key, the writer answers: a success recorded under it comes first.
        Err(refusal) if idempotency.is_some() => Precheck::Refused(refusal),
        Err(refusal) => {
            broker.refused();
            return Err(refusal.into());
        }
    };
    if let Command::ReserveFiles(reserve) = &mut cmd {
        (reserve.precheck, reserve.steps) = (precheck, None);
    }
    broker.write(caller, cmd, idempotency).await?.map(reservations)
}

/// Releases the acting agent's reservations (by pattern, by task, or all in the repo).
pub(crate) async fn release(
    broker: &Broker,
    caller: &Caller,
    args: ReleaseFiles,
    idempotency: Option<IdempotencyKey>,
) -> Result<Written<ReservationList>, ApiError> {
    broker.write(caller, Command::ReleaseFiles(args), idempotency).await?.map(reservations)
}

/// The reservations held now that pass a filter, by id.
pub(crate) async fn list(broker: &Broker, caller: &Caller, query: FilesQuery) -> Result<ReservationList, ApiError> {
    if let Some(repo) = &query.repo {
        check_repo(repo).map_err(|m| ApiError::invalid("repo", m))?;
    }
    if let Some(agent) = &query.agent {
        validate_agent("agent", agent)?;
    }
    let query = FilesQuery { agent: query.agent.as_deref().map(names::canonical), ..query };
    let snapshot = broker.read_fresh(caller).await?;
    Ok(ReservationList { reservations: list_reservations(&snapshot.model, &query).cloned().collect() })
}

/// Who holds each of these paths, in the order asked.
pub(crate) async fn who(broker: &Broker, caller: &Caller, args: WhoHasFiles) -> Result<WhoHas, ApiError> {
    check_repo(&args.repo).map_err(|m| ApiError::invalid("repo", m))?;
    if args.paths.is_empty() {
        return Err(ApiError::invalid("paths", "is empty: name the repository-relative paths to look up"));
    }
    if args.paths.len() > MAX_WHO_PATHS {
        return Err(ApiError::invalid(
            "paths",
            format!(
                "has more than {MAX_WHO_PATHS} paths (to check many, list the reservations once: GET /files?repo=)"
            ),
        ));
    }
    for (i, path) in args.paths.iter().enumerate() {
        check_path(path).map_err(|m| ApiError::invalid(format!("paths[{i}]"), m))?;
    }
    let WhoHasFiles { repo, paths } = args;
    // An ordinary question is answered here and now; a costly one on the matcher's threads.
    let snapshot = broker.read_fresh(caller).await?;
    let found = match holding(&snapshot.model, &repo, &paths, INLINE_STEPS) {
        Some(found) => Ok(found),
        None => broker
            .matching(caller, move |snapshot| holding(&snapshot.model, &repo, &paths, MAX_MATCH_STEPS))
            .await?
            .ok_or(OverBudget),
    };
    let paths = found.map_err(|OverBudget| {
        ApiError::invalid(
            "paths",
            format!(
                "matching these paths against the reservations held would take more than {MAX_MATCH_STEPS} steps: \
                 ask about fewer or shorter paths, or list the reservations once (GET /files?repo=)"
            ),
        )
    })?;
    Ok(WhoHas { paths })
}

/// Who holds each of `paths`, within `steps`; `None` when that is not enough.
fn holding(model: &Model, repo: &str, paths: &[String], steps: u64) -> Option<Vec<PathHolders>> {
    let mut budget = Budget::new(steps);
    let mut found = Vec::with_capacity(paths.len());
    for path in paths {
        let reservations = holders(model, repo, path, &mut budget).ok()?.into_iter().cloned().collect();
        found.push(PathHolders { path: path.clone(), reservations });
    }
    Some(found)
}
