//! `wgm`: the command-line interface of wgm, an IPv6-first WireGuard manager.
//!
//! Every command goes through [`wgm_core::manager::Manager`]: the CLI parses arguments
//! with the library's strict parsers, calls one manager method, and prints the result as
//! a table for people or JSON for machines. Documented in `docs/cli.md`.

#![warn(clippy::unwrap_used)]

mod args;
mod cmd;
mod ctx;
mod error;
mod out;
mod progress;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use wgm_cli::parse;

use crate::args::{Cli, Command};
use crate::ctx::Ctx;
use crate::error::{one_line, CliError, CliResult};
use crate::out::{Out, Style};

fn main() -> ExitCode {
    let json = std::env::args_os().skip(1).any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return clap_error(&e, json),
    };
    init_logging();
    let out = Out::detect(cli.global.json);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run(cli, out)),
        Err(e) => Err(CliError::Failed(format!(
            "cannot start the async runtime: {e}"
        ))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e, out);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Logs to stderr when `WGM_LOG` is set (`WGM_LOG=debug`, `WGM_LOG=wgm_core=trace`).
fn init_logging() {
    if let Some(filter) = std::env::var_os("WGM_LOG").and_then(|v| v.into_string().ok()) {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// Print an error: one line on stderr (one JSON object with `--json`).
fn report(e: &CliError, out: Out) {
    if out.json {
        let doc = serde_json::json!({
            "error": { "code": e.code(), "exit_code": e.exit_code(), "message": e.message() }
        });
        eprintln!("{doc}");
    } else {
        let label = out.paint_err("error:", Style::Red);
        eprintln!("{label} {}", e.message());
    }
}

/// The message of a refused value: the flag, and why (the library's error, or the words
/// the flag takes). The value itself is not repeated: it may be long, hostile, or a key
/// the user would rather not see echoed.
fn bad_value_message(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let flag = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.split_whitespace().next().unwrap_or(s).to_owned(),
        _ => "a value".to_owned(),
    };
    let why = if let Some(core) =
        std::error::Error::source(e).and_then(|s| s.downcast_ref::<wgm_core::Error>())
    {
        core.to_string()
    } else if let Some(ContextValue::Strings(valid)) = e.get(ContextKind::ValidValue) {
        format!("must be one of {}", valid.join(", "))
    } else if let Some(source) = std::error::Error::source(e) {
        source.to_string()
    } else {
        "is not valid".to_owned()
    };
    format!("invalid value for {flag}: {why}")
}

/// Report a refused value: exit code 2.
fn bad_value(e: &clap::Error, json: bool) -> ExitCode {
    let err = CliError::BadValue(bad_value_message(e));
    report(&err, Out::detect(json));
    ExitCode::from(err.exit_code())
}

/// Whether clap refused a flag because its value is missing (not a bad value).
fn value_missing(e: &clap::Error) -> bool {
    use clap::error::{ContextKind, ContextValue};
    matches!(
        e.get(ContextKind::InvalidValue),
        Some(ContextValue::String(v)) if v.is_empty()
    )
}

/// Help and version go to stdout with exit code 0; a bad value is exit code 2 naming the
/// flag (and the library's field when a `value_parser` built on the library refused it);
/// every other parse failure is a usage error: one line on stderr, exit code 1.
fn clap_error(e: &clap::Error, json: bool) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        // A flag given without its value is also `InvalidValue` (with an empty value): that
        // stays a usage error. A value a `value_parser` refused (even an empty one) is
        // `ValueValidation`.
        ErrorKind::ValueValidation => bad_value(e, json),
        ErrorKind::InvalidValue if !value_missing(e) => bad_value(e, json),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(1)
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("invalid command line");
            let msg = one_line(first.strip_prefix("error: ").unwrap_or(first));
            let err = CliError::Usage(format!("{msg} (see --help)"));
            let out = Out::detect(json);
            report(&err, out);
            ExitCode::from(err.exit_code())
        }
    }
}

async fn run(cli: Cli, out: Out) -> CliResult {
    if let Command::Completions(a) = &cli.command {
        let mut buf = Vec::new();
        clap_complete::generate(a.shell, &mut Cli::command(), "wgm", &mut buf);
        return out.raw(&String::from_utf8_lossy(&buf));
    }
    // Whole-store commands open their stores themselves (no manager, no default store).
    match cli.command {
        Command::Store(args::StoreCmd::Copy(a)) => return cmd::transfer::copy(out, a).await,
        Command::Backup(a) => return cmd::transfer::backup(&cli.global, out, a).await,
        Command::Restore(a) => return cmd::transfer::restore(&cli.global, out, a).await,
        _ => {}
    }
    let ctx = Ctx::open(&cli.global, out).await?;
    match cli.command {
        Command::Init => cmd::setup::init(&ctx),
        Command::Quickstart(a) => cmd::setup::quickstart(&ctx, a).await,
        Command::Server(c) => cmd::server::run(&ctx, c).await,
        Command::Peer(c) => cmd::peer::run(&ctx, c).await,
        Command::Policy(c) => cmd::policy::run(&ctx, c).await,
        Command::Plan(a) => cmd::live::plan(&ctx, a).await,
        Command::Apply(a) => cmd::live::apply(&ctx, a).await,
        Command::Status(a) => cmd::live::status(&ctx, a).await,
        Command::Reconcile(a) => cmd::live::reconcile(&ctx, a).await,
        Command::History(a) => cmd::history::history(&ctx, a).await,
        Command::Diff(a) => cmd::history::diff(&ctx, a).await,
        Command::Rollback(a) => cmd::history::rollback(&ctx, a).await,
        Command::Audit(a) => cmd::history::audit(&ctx, a).await,
        Command::User(c) => cmd::identity::user(&ctx, c).await,
        Command::Token(c) => cmd::identity::token(&ctx, c).await,
        Command::Completions(_) | Command::Store(_) | Command::Backup(_) | Command::Restore(_) => {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
