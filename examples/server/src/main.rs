//! `wgm-server`: the REST API. See `docs/rest.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// wgm's REST API server.
#[derive(Parser, Debug)]
#[command(name = "wgm-server", version, about = "wgm's REST API (docs/rest.md)")]
struct Args {
    /// Configuration file (TOML); environment variables override it.
    #[arg(long, env = "WGM_SERVER_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match wgm_server::config::Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wgm-server: {e}");
            return ExitCode::from(2);
        }
    };
    wgm_server::app::init_logging(cfg.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wgm-server: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(wgm_server::app::serve(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve");
            eprintln!("wgm-server: {e}");
            ExitCode::from(1)
        }
    }
}
