//! Extractors that turn a request into typed input, or into a clear 400/413.
//!
//! JSON bodies are read as bytes and parsed here whatever the `Content-Type` says: the
//! seed's `curl -d '{...}'` sends `application/x-www-form-urlencoded`, and axum's `Json`
//! would refuse it with 415.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use muster_protocol::{ErrorCode, TaskId, grammar};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::response::HttpError;
use super::state::{App, AppState};
use crate::api::{ApiError, Caller, IdempotencyKey};

/// Largest request body accepted: a task with a full 8 KiB description and its JSON
/// escaping fits several times over.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// A JSON object body, required.
pub(crate) struct JsonBody<T>(pub(crate) T);

/// A JSON object body that may be omitted (an empty body, or `null`, reads as `{}`).
pub(crate) struct OptionalJsonBody<T>(pub(crate) T);

/// Bytes of an oversize body read (and dropped) before its 413 is sent. A client that is
/// still sending when the connection closes gets a reset instead of the answer (Python's
/// urllib did, 2 times in 5, for a 2 MiB body); reading on lets it finish and read the 413.
/// Beyond this, the connection is closed.
const DRAIN_AFTER_LIMIT: usize = 4 << 20;

/// The body, read within `--body-timeout` (a client sending a byte a second would hold the
/// connection for hours).
async fn body_bytes(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let limit = state.config.body_timeout;
    match tokio::time::timeout(limit, read_at_most(req, MAX_BODY)).await {
        Ok(Ok(Some(bytes))) => Ok(bytes),
        Ok(Ok(None)) => {
            Err(ApiError::new(ErrorCode::TooLarge, format!("request body is larger than {MAX_BODY} bytes")))
        }
        Ok(Err(())) => Err(ApiError::invalid("body", "could not be read")),
        Err(_) => Err(ApiError::new(
            ErrorCode::RequestTimeout,
            format!("the request body did not arrive within {}", humantime::format_duration(limit)),
        )),
    }
}

/// The body if it has at most `max` bytes; `None` if it has more, after reading on (up to
/// [`DRAIN_AFTER_LIMIT`]) so that the client gets to read the answer.
async fn read_at_most(req: Request, max: usize) -> Result<Option<Bytes>, ()> {
    use futures_util::StreamExt;
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let mut body = req.into_body().into_data_stream();
    if declared.is_some_and(|n| n > (max + DRAIN_AFTER_LIMIT) as u64) {
        // Too much to read through: closed at once.
        return Ok(None);
    }
    let mut read = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|_| ())?;
        if read.len() + chunk.len() > max {
            let mut drained = read.len() + chunk.len();
            drop(read);
            while drained <= max + DRAIN_AFTER_LIMIT {
                match body.next().await {
                    Some(Ok(chunk)) => drained += chunk.len(),
                    _ => break,
                }
            }
            return Ok(None);
        }
        read.extend_from_slice(&chunk);
    }
    Ok(Some(read.freeze()))
}

/// Parses a JSON object, naming the field at fault when it does not fit `T`.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ApiError::invalid("body", format!("is not UTF-8 ({e})")))?;
    if !text.trim_start().starts_with('{') {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    de.end().map_err(|e| ApiError::invalid("body", format!("is not valid JSON: {e}")))?;
    Ok(value)
}

fn path_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::invalid("body", format!("is not valid JSON: {inner}"));
    }
    let message = inner.to_string();
    // serde_json appends " at line 1 column 42"; the field name says more.
    let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(m, _)| m);
    ApiError::invalid(field_at(&path, message), message)
}

/// The field an error is about. serde reports a missing field at its parent's path, so
/// the name is taken from the message then.
fn field_at(path: &str, message: &str) -> String {
    let missing = message.strip_prefix("missing field `").and_then(|m| m.split('`').next());
    match (missing, path) {
        (Some(name), "." | "") => name.to_owned(),
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, "." | "") => "body".to_owned(),
        (None, path) => path.to_owned(),
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, HttpError> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid("body", "is empty: send a JSON object").into());
        }
        Ok(JsonBody(parse_json(&bytes)?))
    }
}

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, HttpError> {
        let bytes = body_bytes(req, state).await?;
        // No body, or JSON `null` (the schema's `oneOf: [null, ...]`): the defaults.
        if bytes.iter().all(u8::is_ascii_whitespace) || bytes.trim_ascii() == b"null" {
            return Ok(OptionalJsonBody(T::default()));
        }
        Ok(OptionalJsonBody(parse_json(&bytes)?))
    }
}

/// Query parameters, parsed with the parameter at fault named on error.
pub(crate) struct Query<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, HttpError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize(de).map(Query).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            let field = match field_at(&path, &message) {
                f if f == "body" => "query".to_owned(),
                f => f,
            };
            ApiError::invalid(field, message).into()
        })
    }
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

/// A page cursor from a query: empty (`cursor=`) is the first page, as no cursor is.
pub(crate) fn first_page_if_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|c| !c.is_empty()))
}

/// The `Idempotency-Key` header, if any.
pub(crate) struct Idempotency(pub(crate) Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for Idempotency {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, HttpError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(Idempotency(None));
        };
        let key = value.to_str().map_err(|_| "must be 1-255 visible ASCII characters".to_owned());
        match key.and_then(|k| grammar::check_idempotency_key(k).map(|()| k)) {
            Ok(key) => Ok(Idempotency(Some(IdempotencyKey(key.to_owned())))),
            Err(message) => Err(ApiError::invalid("Idempotency-Key", message).into()),
        }
    }
}

/// Parses a task id from a path segment.
pub(crate) fn task_id(raw: &str) -> Result<TaskId, ApiError> {
    raw.parse().map_err(|e| ApiError::invalid("id", e))
}

/// The caller, from `Authorization: Bearer <token>`: refused (401) at once where tokens
/// are on and the token is missing or not issued. Every handler that reaches the broker
/// takes one; a handler without it cannot call an operation. With it, the last event the
/// client has seen, from `Muster-After` (a read waits until the node has applied it).
pub(crate) struct Auth(pub(crate) Caller);

/// Request header: the last `seq` the client has seen (every response's `Muster-Seq`).
pub(crate) const AFTER: &str = "muster-after";

impl FromRequestParts<AppState> for Auth {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Auth, HttpError> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"))
            .and_then(|v| v.strip_prefix("Bearer "));
        let mut caller = App::of(parts, state).broker.authenticate(bearer)?;
        // The agent the request says it acts as (decided in `api::Caller`, as for every
        // transport).
        if let Some(agent) = parts.headers.get("x-agent") {
            let agent = agent.to_str().map_err(|_| ApiError::invalid("X-Agent", "must be visible ASCII"))?;
            caller = caller.declaring(agent.trim().to_owned());
        }
        match parts.headers.get(AFTER) {
            None => Ok(Auth(caller)),
            // A seq is at most i64::MAX (JSON's and the API description's integers).
            Some(after) => {
                match after.to_str().ok().and_then(|v| v.trim().parse::<i64>().ok()).and_then(|v| u64::try_from(v).ok())
                {
                    Some(seq) => Ok(Auth(caller.having_seen(seq))),
                    None => Err(ApiError::invalid("Muster-After", "must be an event's seq (a whole number)").into()),
                }
            }
        }
    }
}
