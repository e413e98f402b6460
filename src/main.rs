//! The `muster` binary: `muster serve` runs the broker.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use muster::{Config, cli};
use tokio_util::sync::CancellationToken;

/// mimalloc: the broker allocates many small, short-lived buffers per request (JSON,
/// events, sled values); measured faster than glibc malloc here (see BENCHMARKS.md). Built
/// without transparent huge pages (Cargo.toml says why).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "muster", version, about = "Coordination broker for teams of AI coding agents")]
struct Cli {
    #[command(flatten)]
    global: cli::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Made once, at start: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
enum Command {
    #[command(flatten)]
    Client(cli::Command),
    /// Serve MCP over stdio for one agent (Claude Code, Codex, Cursor...).
    Mcp {
        /// (Not used: MCP answers in JSON anyway; see `cli::Unused`.)
        #[arg(long, hide = true)]
        json: bool,
        /// The repository the file tools use when a call names none (default: the git
        /// remote of the directory the server runs in).
        #[arg(long, env = "MUSTER_REPO")]
        repo: Option<String>,
    },
    /// Issue, list and revoke tokens (only their hashes are stored, in the data dir).
    #[command(subcommand)]
    Token(cli::token::TokenCommand),
    /// Make the NATS user of a cluster's nodes: writes a fresh NKey seed to FILE (mode
    /// 0600; give it to each node as --nats-nkey FILE) and prints its public key, which the
    /// nats-servers' config names (`MUSTER_NKEY=... nats-server -c nats-1.conf`).
    NatsKey {
        /// Where to write the seed (it must not exist).
        file: std::path::PathBuf,
        #[command(flatten)]
        _client: cli::Unused,
    },
    /// Print shell completions, e.g. `muster completions bash >
    /// ~/.local/share/bash-completion/completions/muster`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
        #[command(flatten)]
        _client: cli::Unused,
    },
    /// Print the man page (roff), e.g. `muster man > ~/.local/share/man/man1/muster.1`.
    Man {
        #[command(flatten)]
        _client: cli::Unused,
    },
    /// Run the broker.
    Serve {
        #[command(flatten)]
        config: Config,
        #[command(flatten)]
        _client: cli::Unused,
        /// Print the effective configuration as JSON and exit.
        #[arg(long)]
        print_config: bool,
    },
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MUSTER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("muster=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if matches!(cli.command, Command::Client(_) | Command::Mcp { .. })
        && let Err(e) = cli.global.read_token_file()
    {
        eprintln!("muster: {e}");
        return ExitCode::from(2);
    }
    match cli.command {
        Command::Serve { config, print_config, .. } => {
            if print_config {
                match serde_json::to_string_pretty(&config) {
                    Ok(json) => println!("{json}"),
                    Err(e) => eprintln!("muster: {e}"),
                }
                return ExitCode::SUCCESS;
            }
            serve(config)
        }
        Command::Client(command) => client(cli.global, command),
        Command::Token(command) => cli::token::run(command),
        Command::NatsKey { file, .. } => cli::token::nats_key(&file),
        Command::Completions { shell, .. } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "muster", &mut out);
            print_all(&out)
        }
        Command::Man { .. } => {
            let mut out = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut out) {
                Ok(()) => print_all(&out),
                Err(e) => {
                    eprintln!("muster: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Mcp { repo, .. } => match cli.global.agent.clone() {
            Some(agent) => block_on(muster::mcp::serve(cli.global.options(), agent, repo)),
            None => {
                eprintln!("muster: name the agent this MCP server acts as: muster mcp --as NAME (or MUSTER_AGENT)");
                ExitCode::from(2)
            }
        },
    }
}

/// Writes `bytes` to stdout: a closed pipe ends quietly with 141, as every command does.
fn print_all(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(141),
        Err(e) => {
            eprintln!("muster: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a future on a small runtime: client commands do little at once.
fn block_on<F: std::future::Future<Output = ExitCode>>(future: F) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(future),
        Err(e) => {
            eprintln!("muster: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn client(global: cli::Global, command: cli::Command) -> ExitCode {
    block_on(cli::run(global, command))
}

fn serve(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("muster: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Before binding: a refused address must not be exposed even for a moment. (A
        // cluster's node takes the cluster's tokens as it joins; `serve` checks it then,
        // before it answers anything.)
        let checked = if config.cluster.is_empty() {
            muster::auth::Tokens::open(&config.data_dir)
                .map_err(muster::ServeError::from)
                .and_then(|tokens| muster::exposure(config.addr, &config, &tokens))
        } else {
            Ok(())
        };
        if let Err(e) = checked {
            eprintln!("muster: {e}");
            return ExitCode::FAILURE;
        }
        let listener = match muster::listen(config.addr) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                eprintln!(
                    "muster: address {} is already in use (is another muster running? pick another with --addr or MUSTER_ADDR)",
                    config.addr
                );
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("muster: cannot listen on {}: {e}", config.addr);
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        match muster::run(listener, config, shutdown).await {
            Ok(()) => {
                tracing::info!("muster stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("muster: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("stopping: finishing in-flight requests and flushing");
    shutdown.cancel();
}
