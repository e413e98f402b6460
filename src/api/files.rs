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
use crate::core::{Command, Precheck, Reply, Reserve, decide, holders, list_reservations, validate_agent};
use crate::sequencer::IdempotencyKey;

fn reservations(reply: Reply) -> Option<ReservationList> {
    match reply {
        Reply::Reservations(reservations) => Some(ReservationList { reservations }),
        _ => None,
    }
}

/// Reserves paths for the acting agent, all or none: 409 listing every overlap with
/// another agent's reservation.
///
/// The reserve is decided first on a snapshot, off the async workers and off the writer
/// (`Broker::matching`): the overlap checks are the costly part, and the writer holds every
/// other write while it decides. The writer then checks only the reservations put since
/// the snapshot (see `core::Precheck`).
pub(crate) async fn reserve(
    broker: &Broker,
    caller: &Caller,
    args: ReserveFiles,
    idempotency: Option<IdempotencyKey>,
) -> Result<Written<ReservationList>, ApiError> {
    let mut cmd = Command::ReserveFiles(Reserve::from(args));
    broker.bind(caller, &mut cmd)?;
    let (policy, now) = (broker.policy.clone(), broker.now());
    let (mut cmd, outcome) = broker
        .matching(caller, move |snapshot| {
            let outcome = decide(&snapshot.model, &policy, &cmd, now).map(|_| snapshot.model.head);
            (cmd, outcome)
        })
        .await?;
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
        reserve.precheck = precheck;
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
    let found = broker
        .matching(caller, move |snapshot| {
            let mut budget = Budget::new(MAX_MATCH_STEPS);
            let mut found = Vec::with_capacity(paths.len());
            for path in paths {
                let reservations = holders(&snapshot.model, &repo, &path, &mut budget)?.into_iter().cloned().collect();
                found.push(PathHolders { path, reservations });
            }
            Ok::<_, OverBudget>(found)
        })
        .await?;
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
