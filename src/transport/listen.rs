//! Accepting connections: the listening socket (with a deep backlog, so that a burst of
//! connects is queued rather than dropped into a one-second SYN retry), and each connection
//! served as HTTP/1.1 with a deadline for its request headers — which is also how long an
//! idle keep-alive connection stays — in the bounded pool of [`Conns`]. WebSocket upgrades go
//! through the same connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conns::{Conn, Conns};
use super::workspace::Dispatch;

/// Connections the kernel may queue for `accept`: a burst of this many connects is served
/// without a SYN dropped and retried a second later. Capped by `net.core.somaxconn`
/// (4096 on current Linux).
const BACKLOG: u32 = 4096;
/// How long `accept` rests after the process ran out of file descriptors, so that it does
/// not spin while connections close.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Binds `addr` with [`BACKLOG`] (and `SO_REUSEADDR`, so that a restarted broker takes its
/// address back at once).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves `router` on `listener` until `shutdown`: then stops accepting and asks every
/// connection to close once its request is answered; returns when they have.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Dispatch,
    conns: Arc<Conns>,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(error) => {
                // Out of file descriptors, or a connection reset before it was accepted.
                tracing::debug!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Small frames and replies go out at once: no Nagle delay waiting for the peer's ACK.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let conn = conns.open();
        connections.spawn(connection(tcp, app.clone(), conn, header_timeout, shutdown.clone()));
    }
    connections.close();
    connections.wait().await;
}

/// One connection, until it closes, the pool needs its room, or the broker stops.
async fn connection(tcp: TcpStream, app: Dispatch, conn: Conn, header_timeout: Duration, shutdown: CancellationToken) {
    // Until the client sends its first byte, the connection is a socket and a small task:
    // no HTTP state, no buffers. One that sends nothing in time is closed. (`peek` waits for
    // a byte without taking it; `readable` says yes at once on a new socket.)
    let mut first = [0u8; 1];
    tokio::select! {
        peeked = tcp.peek(&mut first) => {
            if !matches!(peeked, Ok(1..)) {
                conn.closed();
                return;
            }
        }
        () = tokio::time::sleep(header_timeout) => {
            conn.closed();
            return;
        }
        () = conn.closing().cancelled() => {
            conn.closed();
            return;
        }
        () = shutdown.cancelled() => {
            conn.closed();
            return;
        }
    }
    let requests = conn.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(requests.clone());
        requests.begin();
        let (app, requests) = (app.clone(), requests.clone());
        async move {
            let response = app.serve(request).await;
            requests.end();
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(served);
    let result = tokio::select! {
        result = served.as_mut() => result,
        () = conn.closing().cancelled() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
        () = shutdown.cancelled() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(error) = result {
        // A peer that went away, or was too slow with its headers.
        tracing::debug!(%error, "connection ended");
    }
    conn.closed();
}
