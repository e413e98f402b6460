//! The NATS servers are the cluster's trust root: whoever may publish on Muster's subjects
//! or use its JetStream account can forge any agent's writes (the leader runs forwarded
//! commands as their node says the caller is), mint tokens or delete the log. So a node
//! connects as a user of its own ([`connect`]: an NKey seed or a `.creds` file) and, before
//! it joins, checks that a client without credentials can do neither ([`open_door`]); it
//! refuses to start on servers that let one, unless `--insecure-nats`.

use std::time::{Duration, Instant};

use async_nats::{ConnectErrorKind, ServerAddr};
use futures_util::StreamExt;

use super::nats::{CONNECT_FOR, JETSTREAM_TIMEOUT};
use crate::config::Config;

/// How long a probe waits to see whether the servers let an anonymous client through: a
/// publish the servers refuse is dropped silently, so only waiting tells.
const PROBE_FOR: Duration = Duration::from_secs(2);

/// The servers of `config.cluster`.
fn servers(config: &Config) -> Result<Vec<ServerAddr>, String> {
    config.cluster.iter().map(|url| url.parse().map_err(|e| format!("--cluster {url:?}: {e}"))).collect()
}

/// The prefix of this cluster's reply subjects: its own, so that the servers' permissions
/// can keep other users from reading the answers nodes send each other.
pub(super) fn inbox_prefix(cluster: &str) -> String {
    format!("_INBOX_{cluster}")
}

/// Connects to the NATS servers of `config.cluster` as this node's user, retrying for
/// [`CONNECT_FOR`] while they cannot be reached; credentials they refuse end it at once.
pub(super) async fn connect(config: &Config, node: &str) -> Result<async_nats::Client, String> {
    let servers = servers(config)?;
    let started = Instant::now();
    loop {
        let mut options = match (&config.nats_creds, &config.nats_nkey) {
            (Some(path), _) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| format!("--nats-creds {}: {e}", path.display()))?,
            (None, Some(path)) => {
                let seed = std::fs::read_to_string(path).map_err(|e| format!("--nats-nkey {}: {e}", path.display()))?;
                async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
            }
            (None, None) => async_nats::ConnectOptions::new(),
        };
        if let Some(ca) = &config.nats_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        options = options
            .name(format!("muster {node}"))
            .custom_inbox_prefix(inbox_prefix(&config.cluster_name))
            .request_timeout(Some(JETSTREAM_TIMEOUT))
            // A server that stops answering (paused, cut off) is left for another within
            // seconds (two pings unanswered), not the library's default of minutes.
            .ping_interval(Duration::from_secs(2))
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None);
        match async_nats::connect_with_options(servers.clone(), options).await {
            Ok(client) => return Ok(client),
            Err(e)
                if matches!(e.kind(), ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication) =>
            {
                return Err(format!(
                    "cluster: the NATS servers refused this node's credentials ({e}); give it the nodes' user \
                     (--nats-nkey FILE, made by `muster nats-key FILE`, or --nats-creds FILE)"
                ));
            }
            Err(e) if started.elapsed() < CONNECT_FOR => {
                tracing::warn!(error = %e, "cannot reach the NATS servers yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(format!("cluster: cannot reach the NATS servers {:?}: {e}", config.cluster)),
        }
    }
}

/// What a client without credentials may do on the servers that it should not, if anything:
/// publish on the cluster's subjects, read them, or use its JetStream account. `node` is
/// this node's own connection, which sees the other end of each probe.
pub(super) async fn open_door(config: &Config, node: &async_nats::Client) -> Result<Option<String>, String> {
    let mut options = async_nats::ConnectOptions::new().name("muster: probing the servers' doors");
    if let Some(ca) = &config.nats_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let anonymous = match tokio::time::timeout(
        PROBE_FOR * 3,
        async_nats::connect_with_options(servers(config)?, options.connection_timeout(PROBE_FOR)),
    )
    .await
    {
        // Refused (or not let in at all): nothing more to probe.
        Ok(Err(_)) | Err(_) => return Ok(None),
        Ok(Ok(client)) => client,
    };
    let cluster = &config.cluster_name;
    let probe = format!("{cluster}.probe.{:016x}", rand::random::<u64>());
    let fail = |e: &dyn std::fmt::Display| format!("cluster: probing the NATS servers: {e}");

    // Publishing: this node listens, the anonymous client sends.
    let mut heard = node.subscribe(format!("{probe}.in")).await.map_err(|e| fail(&e))?;
    node.flush().await.map_err(|e| fail(&e))?;
    // Reading: the anonymous client listens, this node sends.
    let overheard = anonymous.subscribe(format!("{probe}.out")).await;
    let _ = anonymous.publish(format!("{probe}.in"), "probe".into()).await;
    let _ = anonymous.flush().await;
    let _ = node.publish(format!("{probe}.out"), "probe".into()).await;
    let _ = node.flush().await;
    // JetStream: any answer at all (even "no such stream") means the account is open.
    let asked = anonymous.request(format!("$JS.API.STREAM.INFO.{cluster}-log"), "".into());

    let (heard, overheard, answered) = tokio::join!(
        tokio::time::timeout(PROBE_FOR, heard.next()),
        async {
            match overheard {
                Ok(mut subscriber) => tokio::time::timeout(PROBE_FOR, subscriber.next()).await,
                Err(_) => Ok(None),
            }
        },
        tokio::time::timeout(PROBE_FOR, asked),
    );
    let mut open = Vec::new();
    if matches!(heard, Ok(Some(_))) {
        open.push(format!("publish on {cluster}.> (forge any agent's writes)"));
    }
    if matches!(overheard, Ok(Some(_))) {
        open.push(format!("subscribe to {cluster}.> (read every event)"));
    }
    if matches!(answered, Ok(Ok(_))) {
        open.push("use the JetStream account (mint or wipe tokens, delete the log)".to_owned());
    }
    Ok((!open.is_empty()).then(|| open.join(", ")))
}

/// Refuses servers that let a client without credentials in, unless `--insecure-nats`.
pub(super) async fn refuse_open_door(config: &Config, node: &async_nats::Client) -> Result<(), String> {
    let Some(what) = open_door(config, node).await? else { return Ok(()) };
    if config.insecure_nats {
        tracing::warn!(
            open = %what,
            "the NATS servers let a client without credentials in (--insecure-nats): anyone who can reach them \
             has every agent's rights"
        );
        return Ok(());
    }
    Err(format!(
        "cluster: the NATS servers let a client without credentials {what}: anyone who can reach them would have \
         every agent's rights. Give the servers users (SECURITY.md, \"A cluster\"; tests/cluster/nats-1.conf) and \
         this node its own (--nats-nkey FILE), or pass --insecure-nats if you really mean it"
    ))
}
