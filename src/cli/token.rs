//! `muster token add|list|remove`: issue and revoke tokens in a data dir (see
//! [`crate::auth`]). Works whether or not the broker runs; a running broker picks the
//! change up within a second.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::auth;
use crate::config::default_data_dir;

/// `muster token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token acting as NAME; it is printed once, and only its hash is stored.
    Add {
        /// The agent (or person) the token acts as.
        name: String,
        /// For a person using the dashboard (in every workspace the token works in; issue
        /// another token to be an agent elsewhere).
        #[arg(long)]
        human: bool,
        /// A workspace the token works in (repeat for several; `*`: every one). Default:
        /// `default`. A token is refused (403) in any other.
        #[arg(long, value_name = "WORKSPACE")]
        workspace: Vec<String>,
        /// The broker's data dir.
        #[arg(long, env = "MUSTER_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
        /// The client options: not used here.
        #[command(flatten)]
        _client: crate::cli::UnusedConnection,
    },
    /// The names tokens are issued to (never the tokens).
    List {
        /// The broker's data dir.
        #[arg(long, env = "MUSTER_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
        /// The client options: not used here.
        #[command(flatten)]
        _client: crate::cli::Unused,
    },
    /// Revoke every token of NAME.
    Remove {
        /// The agent.
        name: String,
        /// The broker's data dir.
        #[arg(long, env = "MUSTER_DATA_DIR", default_value_os_t = default_data_dir())]
        data_dir: PathBuf,
        /// The client options: not used here.
        #[command(flatten)]
        _client: crate::cli::Unused,
    },
}

/// Runs a token command.
pub fn run(command: TokenCommand) -> ExitCode {
    let result = match command {
        TokenCommand::Add { name, human, workspace, data_dir, .. } => {
            auth::add(&data_dir, &name, human, &workspace).map(|token| {
                // The token alone on stdout, for `export MUSTER_TOKEN=$(muster token add ...)`.
                say!("{token}");
                let scope = if workspace.is_empty() { "default".to_owned() } else { workspace.join(", ") };
                eprintln!(
                    "muster: token for {name} issued (workspaces: {scope}); it is shown only now. Tokens are on for {}",
                    data_dir.display()
                );
            })
        }
        TokenCommand::List { data_dir, .. } => auth::list(&data_dir).map(|tokens| {
            if tokens.is_empty() {
                say!("no tokens: tokens are off");
            }
            for t in tokens {
                let kind = if t.human { " (human)" } else { "" };
                let (issued, workspaces) = (t.created_at.format("%Y-%m-%d %H:%M UTC"), t.workspaces().join(", "));
                say!("{}{kind}  issued {issued}  workspaces {workspaces}", t.agent);
            }
        }),
        TokenCommand::Remove { name, data_dir, .. } => auth::remove(&data_dir, &name).map(|n| {
            say!("revoked {n} token(s) of {name}");
            if n > 0 && auth::list(&data_dir).is_ok_and(|left| left.is_empty()) {
                eprintln!(
                    "muster: that was the last token: a broker running on {} refuses every request until it is \
                     restarted (tokens, once on, stay on); restart it to run without tokens",
                    data_dir.display()
                );
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("muster: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `muster nats-key FILE`: a fresh NKey for the nodes' NATS user. The seed goes to `file`
/// (created, mode 0600, never overwritten); the public key is printed alone on stdout, for
/// `MUSTER_NKEY=$(muster nats-key nodes.nk) nats-server -c nats-1.conf`.
pub fn nats_key(file: &std::path::Path) -> ExitCode {
    let key = nkeys::KeyPair::new_user();
    let written = key.seed().map_err(|e| e.to_string()).and_then(|seed| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        std::io::Write::write_all(&mut out, format!("{seed}\n").as_bytes())
            .map_err(|e| format!("{}: {e}", file.display()))
    });
    match written {
        Ok(()) => {
            say!("{}", key.public_key());
            eprintln!(
                "muster: the seed is in {} (give it to each node: --nats-nkey {}); the public key above goes in the \
                 nats-servers' config (MUSTER_NKEY)",
                file.display(),
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("muster: {e}");
            ExitCode::FAILURE
        }
    }
}
