//! File reservations: reserve paths of a repository, release them, list them, and ask who
//! holds a path. The rules (overlap, all or nothing, when they end) are the domain's
//! (`core/files.rs`).

use muster_protocol::glob::check_path;
use muster_protocol::{
    FilesQuery, MAX_WHO_PATHS, PathHolders, ReleaseFiles, ReservationList, ReserveFiles, WhoHas, WhoHasFiles,
    check_repo, names,
};

use super::broker::{Broker, Written};
use super::caller::Caller;
use super::error::ApiError;
use crate::core::{Command, Reply, holders, list_reservations, validate_agent};
use crate::sequencer::IdempotencyKey;

fn reservations(reply: Reply) -> Option<ReservationList> {
    match reply {
        Reply::Reservations(reservations) => Some(ReservationList { reservations }),
        _ => None,
    }
}

/// Reserves paths for the acting agent, all or none: 409 listing every overlap with
/// another agent's reservation.
pub(crate) async fn reserve(
    broker: &Broker,
    caller: &Caller,
    args: ReserveFiles,
    idempotency: Option<IdempotencyKey>,
) -> Result<Written<ReservationList>, ApiError> {
    broker.write(caller, Command::ReserveFiles(args), idempotency).await?.map(reservations)
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
    let snapshot = broker.read_fresh(caller).await?;
    let model = &snapshot.model;
    let paths = args
        .paths
        .into_iter()
        .map(|path| {
            let reservations = holders(model, &args.repo, &path).cloned().collect();
            PathHolders { path, reservations }
        })
        .collect();
    Ok(WhoHas { paths })
}
