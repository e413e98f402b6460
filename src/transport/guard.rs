//! Who may drive the broker from a browser: a local server is reachable by every web page
//! the user opens, so two checks run before any handler.
//!
//! - **Host** must be one of the broker's names: `localhost`, a loopback address, the
//!   address it listens on, or a `--host-name`. A page on `evil.example` whose DNS now
//!   points at 127.0.0.1 (DNS rebinding) sends `Host: evil.example` and is refused.
//! - **Origin**: a browser names the page's origin on state-changing requests and WebSocket
//!   upgrades. Only the broker's own origin (the dashboard) and `--allow-origin` entries
//!   may write or open `/ws`; a request a browser marks `Sec-Fetch-Site: cross-site` (or
//!   `same-site`) without an allowed Origin is refused too.
//! - **The one GET that writes**, `GET /tasks/next?claim=true`, is decided by its handler on
//!   the query as parsed (so `claim=%74rue` is `claim=true` there too): it needs an
//!   `X-Agent` or `Authorization` header, which a page of another origin cannot send without
//!   a CORS preflight the broker never grants (older browsers send neither `Origin` nor
//!   `Sec-Fetch-Site` with an `<img>`), and it passes the same Origin check ([`may_write`]).
//!
//! Clients that are not browsers (curl, agents, the CLI) send no Origin and pass. The
//! broker sends no CORS headers, so no other origin can read its answers either.
//!
//! Who the caller is (tokens) is not decided here: each handler takes a `Caller`, and the
//! api layer checks it.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use muster_protocol::ErrorCode;

use super::response::HttpError;
use super::state::{App, AppState};
use crate::api::ApiError;

/// The host part of `host[:port]` / `[v6]:port`, lowercased.
fn hostname(authority: &str) -> String {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(h, port)| if port.chars().all(|c| c.is_ascii_digit()) { h } else { authority }),
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn forbidden(message: String) -> Response {
    HttpError(ApiError::new(ErrorCode::Forbidden, message)).into_response()
}

/// Whether the request changes state (or opens the WebSocket, from which it can). The GET
/// that claims is checked by its handler (see the module docs).
fn writes(request: &Request) -> bool {
    match *request.method() {
        Method::GET | Method::HEAD | Method::OPTIONS => request.uri().path() == "/ws",
        _ => true,
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

/// The middleware: Host first, then Origin for requests that write.
pub(crate) async fn guard(App(state): App, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = header_str(headers, header::HOST).unwrap_or("");
    if !host.is_empty() {
        let name = hostname(host);
        let listening = state.config.addr.ip().to_string();
        let ours = name == "localhost"
            || name == "127.0.0.1"
            || name == "::1"
            || name == listening
            || state.config.host_names.iter().any(|n| n.eq_ignore_ascii_case(&name));
        if !ours {
            return forbidden(format!(
                "Host {host:?} is not a name of this broker (localhost, 127.0.0.1, [::1], {listening}); \
                 if you reach it by that name, start it with --host-name {name}"
            ));
        }
    }
    if writes(&request)
        && let Err(refused) = may_write(&state, headers)
    {
        return refused.into_response();
    }
    next.run(request).await
}

/// Whether a request that changes state may come from where it comes from: no Origin (not
/// a browser), or the broker's own origin, or an `--allow-origin`; and never a browser's
/// cross-site request without one.
pub(crate) fn may_write(state: &AppState, headers: &HeaderMap) -> Result<(), HttpError> {
    let host = header_str(headers, header::HOST).unwrap_or("");
    let own = |origin: &str| {
        let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        authority.is_some_and(|a| !host.is_empty() && a.eq_ignore_ascii_case(host))
            || state.config.allow_origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    };
    let refused = |message: String| Err(HttpError(ApiError::new(ErrorCode::Forbidden, message)));
    match header_str(headers, header::ORIGIN) {
        Some(origin) if !own(origin) => refused(format!(
            "cross-origin request refused: a page from {origin} may not change this broker's state \
             or open its WebSocket (allow it with --allow-origin)"
        )),
        Some(_) => Ok(()),
        None => match header_str(headers, header::HeaderName::from_static("sec-fetch-site")) {
            Some(site @ ("cross-site" | "same-site")) => {
                refused(format!("cross-site request refused (Sec-Fetch-Site: {site}) without an allowed Origin"))
            }
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_drop_the_port_and_brackets() {
        assert_eq!(hostname("localhost:4445"), "localhost");
        assert_eq!(hostname("LocalHost"), "localhost");
        assert_eq!(hostname("[::1]:4445"), "::1");
        assert_eq!(hostname("127.0.0.1"), "127.0.0.1");
        assert_eq!(hostname("evil.example.:80"), "evil.example");
    }
}
