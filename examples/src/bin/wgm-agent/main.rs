//! `wgm-agent`: the per-host agent. It applies this host's servers and follows the
//! store's change feed; see `docs/agent.md` and the `wgm_cli::agent` module.
//!
//! ```text
//! wgm-agent [--config FILE]      run (FILE also from WGM_AGENT_CONFIG)
//! wgm-agent --check [--config FILE]   print the configuration it would run with, exit
//! ```
//!
//! Exit status: 0 after SIGTERM/SIGINT; 1 usage; 2 a bad configuration value; 3 a named
//! server that does not exist; 4 another live agent applies one of the servers on this
//! host; 5 not allowed; 6 the store, master key or backend failed at start-up.

use std::process::ExitCode;
use std::sync::Arc;

use wgm_backend_kernel::KernelNetwork;
use wgm_cli::agent::config::{AgentConfig, Selection};
use wgm_cli::agent::Agent;
use wgm_cli::host;
use wgm_cli::open::{self, KeySource, OpenOptions};
use wgm_core::backend::NetworkBackend;
use wgm_core::manager::Host;
use wgm_core::names::HostName;
use wgm_core::reconcile::DriftPolicy;
use wgm_core::Error;

const USAGE: &str = "usage: wgm-agent [--config FILE] [--check]";

/// The exit status of an error, as the CLI's.
fn exit_code(e: &Error) -> u8 {
    match e {
        Error::InvalidInput { .. } | Error::Parse { .. } => 2,
        Error::NotFound { .. } => 3,
        Error::AlreadyExists { .. } | Error::Conflict { .. } | Error::PoolExhausted { .. } => 4,
        Error::PermissionDenied { .. }
        | Error::Unauthenticated { .. }
        | Error::Throttled { .. } => 5,
        _ => 6,
    }
}

fn main() -> ExitCode {
    let mut config: Option<std::path::PathBuf> = std::env::var_os("WGM_AGENT_CONFIG")
        .filter(|v| !v.is_empty())
        .map(Into::into);
    let mut check = false;
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--config") => {
                let Some(v) = args.next() else {
                    eprintln!("{USAGE}");
                    return ExitCode::from(1);
                };
                config = Some(v.into());
            }
            Some("--check") => check = true,
            Some("--help" | "-h") => {
                println!("{USAGE}\n\nConfiguration: a TOML file (see docs/agent.md) and the variables WGM_STORE, WGM_MASTER_KEY_FILE, WGM_MASTER_KEY, WGM_AGENT_HOST, WGM_AGENT_SERVERS, WGM_AGENT_BACKEND, WGM_AGENT_RECONCILE_INTERVAL, WGM_AGENT_HEARTBEAT_INTERVAL, WGM_AGENT_LEASE_TTL, WGM_AGENT_REMOVE_UNMANAGED. Logs: WGM_LOG (default info).");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(1);
            }
        }
    }
    let filter = std::env::var("WGM_LOG").unwrap_or_else(|_| "info".into());
    // Colours only on a terminal: under systemd or into a file, plain lines.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
    let cfg = match AgentConfig::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wgm-agent: {e}");
            return ExitCode::from(exit_code(&e));
        }
    };
    if check {
        println!("{cfg:#?}");
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wgm-agent: cannot start the async runtime: {e}");
            return ExitCode::from(6);
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wgm-agent: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

async fn run(cfg: AgentConfig) -> wgm_core::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::backend("signal", format!("cannot handle SIGTERM: {e}")))?;
    let host_name = match &cfg.host {
        Some(h) => h.clone(),
        None => HostName::new(host::host_name(None)?).map_err(|_| {
            Error::invalid(
                "host",
                "this machine's host name is not a valid host name: set host in the configuration",
            )
        })?,
    };
    let opened = open::open(OpenOptions {
        store: cfg.store.clone(),
        key: cfg
            .master_key_file
            .clone()
            .map_or(KeySource::Default, KeySource::File),
        local_admin: true,
        jwt: None,
    })
    .await?;
    let principal = opened
        .local
        .as_ref()
        .map(|l| l.principal(&wgm_cli::unix_user_name()))
        .ok_or_else(|| Error::denied("no local-administrator capability"))?;
    let wg = match host::wireguard(cfg.backend).await {
        Err(Error::Unsupported { what }) => {
            return Err(Error::unsupported(format!(
                "backend kernel: {what}: set backend = \"userspace\""
            )))
        }
        r => r?,
    };
    let net: Arc<dyn NetworkBackend> = Arc::new(KernelNetwork::new()?);
    let drift = if cfg.remove_unmanaged {
        DriftPolicy::Remove
    } else {
        DriftPolicy::Report
    };
    let host = Host::new(host_name.as_str(), wg, Some(net)).with_drift(drift);
    let selection = cfg.selection.clone();
    let mut agent = Agent::new(Arc::new(opened.manager), principal, host, cfg)?;
    agent.start().await?;
    let names: Vec<String> = agent.servers().into_iter().map(|(_, n)| n).collect();
    tracing::info!(
        host = %host_name,
        agent = agent.holder(),
        servers = %names.join(", "),
        assigned = selection == Selection::Assigned,
        "started"
    );
    agent
        .run(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await
}
