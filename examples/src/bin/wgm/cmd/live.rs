//! `wgm plan`, `wgm apply`, `wgm status`, `wgm reconcile`: the live interface.

use std::sync::Arc;
use std::time::Duration;

use wgm_backend_kernel::{KernelNetwork, NftFirewall};
use wgm_cli::host::{self, Backend};
use wgm_core::backend::{NetworkBackend, WireGuardBackend};
use wgm_core::manager::{ApplyOptions, ApplyReport, Host, Status};
use wgm_core::reconcile::{DriftPolicy, Verify};
use wgm_core::Error;

use crate::args::{
    ApplyArgs, BackendArg, BackendKind, FirewallKind, LiveArgs, ReconcileArgs, StatusArgs,
};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::out::{self, Cell, Style};
use crate::progress;

/// The WireGuard backend `--backend` asks for ([`wgm_cli::host::wireguard`]); the
/// kernel's, on a kernel without WireGuard, names the alternative.
async fn wireguard(kind: BackendKind) -> CliResult<Arc<dyn WireGuardBackend>> {
    let backend = match kind {
        BackendKind::Auto => Backend::Auto,
        BackendKind::Kernel => Backend::Kernel,
        BackendKind::Userspace => Backend::Userspace,
    };
    match host::wireguard(backend).await {
        Err(Error::Unsupported { what }) if backend == Backend::Kernel => Err(CliError::Core(
            Error::unsupported(format!("--backend kernel: {what}: --backend userspace")),
        )),
        r => Ok(r?),
    }
}

/// The host to apply to. `network`: also manage addresses, routes and MTU (needs an
/// rtnetlink socket).
async fn host(b: &BackendArg, network: bool, drift: DriftPolicy) -> CliResult<Host> {
    let name = host::host_name(b.host.as_deref())?;
    let wg = wireguard(b.backend).await?;
    let net: Option<Arc<dyn NetworkBackend>> = if network {
        Some(Arc::new(KernelNetwork::new()?))
    } else {
        None
    };
    let host = Host::new(name, wg, net).with_drift(drift);
    Ok(match b.firewall {
        FirewallKind::Nft => host.with_firewall(Arc::new(NftFirewall::new())),
        FirewallKind::None => host,
    })
}

fn drift(remove_unmanaged: bool) -> DriftPolicy {
    if remove_unmanaged {
        DriftPolicy::Remove
    } else {
        DriftPolicy::Report
    }
}

/// `wgm plan`.
pub async fn plan(ctx: &Ctx, a: LiveArgs) -> CliResult {
    let host = host(&a.backend, true, DriftPolicy::Report).await?;
    let sid = ctx.server(&a.server).await?;
    let plan = ctx.m.plan(&ctx.p, sid, &host).await?;
    let fw = ctx.m.firewall_plan(&ctx.p, sid, &host).await?;
    if ctx.out.json {
        let Some(fw) = fw else {
            return ctx.out.json(&plan);
        };
        let mut v = serde_json::to_value(&plan)
            .map_err(|e| CliError::Failed(format!("cannot show the plan: {e}")))?;
        v["firewall"] = serde_json::to_value(&fw)
            .map_err(|e| CliError::Failed(format!("cannot show the plan: {e}")))?;
        return ctx.out.json(&v);
    }
    ctx.out.raw(&plan.to_string())?;
    if let Some(fw) = fw {
        firewall_lines(ctx, &fw.items, "firewall: in line with the store")?;
    }
    Ok(())
}

/// The firewall part of a plan or report, one line per change.
fn firewall_lines(ctx: &Ctx, items: &[String], empty: &str) -> CliResult {
    if items.is_empty() {
        return ctx.out.line(empty);
    }
    ctx.out.line("firewall:")?;
    for i in items {
        ctx.out.line(&format!("  {i}"))?;
    }
    Ok(())
}

/// Print what an apply did; an error when the host did not converge.
fn report(ctx: &Ctx, r: &ApplyReport) -> CliResult {
    if ctx.out.json {
        ctx.out.json(r)?;
    } else if !r.executed {
        ctx.out.raw(&r.plan.to_string())?;
        ctx.out.note("dry run: nothing was changed");
    } else if r.plan.items.is_empty() {
        ctx.out.raw(&r.plan.to_string())?;
    } else {
        ctx.out.line(&format!(
            "{} -> revision {}:",
            r.plan.interface, r.plan.revision
        ))?;
        for res in &r.results {
            let mark = if res.ok {
                ctx.out.paint("ok  ", Style::Green)
            } else {
                ctx.out.paint("FAIL", Style::Red)
            };
            ctx.out.line(&format!("  {mark} {}", res.item))?;
        }
    }
    if let (false, Some(fw)) = (ctx.out.json, &r.firewall) {
        firewall_lines(ctx, &fw.plan.items, "firewall: in line with the store")?;
        if let Some(e) = &fw.error {
            ctx.out.warn(&format!("firewall: {e}"));
        }
    }
    if !r.executed {
        return Ok(());
    }
    for e in &r.errors {
        ctx.out.warn(&e.to_string());
    }
    if r.converged {
        if !ctx.out.json && !r.plan.items.is_empty() {
            let how = if r.read_back {
                "verified by reading it back"
            } else {
                "every change acknowledged by the device"
            };
            ctx.out.note(&format!(
                "{} is at revision {} ({how})",
                r.plan.interface, r.plan.revision
            ));
        }
        return Ok(());
    }
    if r.remaining.is_empty() {
        if let Some(fw) = &r.firewall {
            let first = fw
                .remaining
                .first()
                .map_or_else(String::new, |i| format!("; first: {i}"));
            return Err(Error::backend(
                "apply",
                format!(
                    "the firewall of {} did not converge: {} items remain{first}",
                    r.plan.interface,
                    fw.remaining.len()
                ),
            )
            .into());
        }
    }
    let first = r
        .remaining
        .first()
        .map_or_else(String::new, |i| format!("; first: {i}"));
    Err(Error::backend(
        "apply",
        format!(
            "{} did not converge: {} items remain{first}",
            r.plan.interface,
            r.remaining.len()
        ),
    )
    .into())
}

/// `wgm apply`.
pub async fn apply(ctx: &Ctx, a: ApplyArgs) -> CliResult {
    let host = host(&a.backend, true, drift(a.remove_unmanaged)).await?;
    let sid = ctx.server(&a.server).await?;
    let spinner = progress::spinner(ctx.out, &format!("applying {}", a.server));
    let r = ctx
        .m
        .apply(
            &ctx.p,
            sid,
            &host,
            ApplyOptions {
                dry_run: a.dry_run,
                full_resync: a.full_resync,
                verify: if a.verify {
                    Verify::Always
                } else {
                    Verify::Auto
                },
            },
        )
        .await;
    spinner.finish();
    report(ctx, &r?)
}

/// "12 s ago", "3 min ago", "2 h ago", "5 d ago".
fn ago(now: i64, then: u64) -> String {
    let then = i64::try_from(then).unwrap_or(i64::MAX);
    let d = now.saturating_sub(then).max(0);
    if d < 120 {
        format!("{d} s ago")
    } else if d < 7200 {
        format!("{} min ago", d / 60)
    } else if d < 172_800 {
        format!("{} h ago", d / 3600)
    } else {
        format!("{} d ago", d / 86_400)
    }
}

fn show_status(ctx: &Ctx, s: &Status) -> CliResult {
    if ctx.out.json {
        return ctx.out.json(s);
    }
    if s.exists {
        ctx.out.line(&format!(
            "{}: listening on port {}, {} peers",
            s.interface,
            s.listen_port,
            s.peers.len()
        ))?;
        let now = ctx.m.now().unix_timestamp();
        let rows: Vec<Vec<Cell>> = s
            .peers
            .iter()
            .map(|p| {
                let name = match &p.name {
                    Some(n) => Cell::plain(n.as_str()),
                    None => Cell::styled("(unmanaged)", Style::Yellow),
                };
                let hs = match p.last_handshake {
                    Some(t) if now.saturating_sub(i64::try_from(t).unwrap_or(i64::MAX)) < 180 => {
                        Cell::styled(ago(now, t), Style::Green)
                    }
                    Some(t) => Cell::plain(ago(now, t)),
                    None => Cell::plain("never"),
                };
                vec![
                    name,
                    Cell::plain(out::opt(p.endpoint)),
                    hs,
                    Cell::plain(format!(
                        "{} in, {} out",
                        out::bytes(p.rx_bytes),
                        out::bytes(p.tx_bytes)
                    )),
                    Cell::plain(out::list(&p.allowed_ips)),
                ]
            })
            .collect();
        let with_firewall = s.peers.iter().any(|p| p.firewall.is_some());
        let mut headers = vec![
            "PEER",
            "ENDPOINT",
            "LATEST HANDSHAKE",
            "TRANSFER",
            "ALLOWED IPS",
        ];
        let mut rows = rows;
        if with_firewall {
            headers.extend(["QUOTA USED", "DROPPED"]);
            for (row, p) in rows.iter_mut().zip(&s.peers) {
                let (quota, dropped) = match &p.firewall {
                    None => ("-".to_owned(), "-".to_owned()),
                    Some(f) => (
                        match (f.quota_used, f.quota_bytes) {
                            (Some(u), Some(b)) => format!(
                                "{} of {} ({} left)",
                                out::bytes(u),
                                out::bytes(b),
                                out::bytes(f.quota_remaining.unwrap_or(0))
                            ),
                            _ => "-".to_owned(),
                        },
                        out::bytes(f.dropped_bytes),
                    ),
                };
                row.push(Cell::plain(quota));
                row.push(Cell::plain(dropped));
            }
        }
        ctx.out.table(&headers, &rows, "no peers on the device")?;
    } else {
        ctx.out.line(&format!(
            "{}: {} (apply it: wgm apply)",
            s.interface,
            ctx.out.paint("not present", Style::Red)
        ))?;
    }
    if !s.missing.is_empty() {
        ctx.out.warn(&format!(
            "in the store but not on the device: {} (wgm apply)",
            s.missing.join(", ")
        ));
    }
    Ok(())
}

/// `wgm status --reported`: each host's last report, from the store.
async fn reported(ctx: &Ctx, sid: wgm_core::model::ServerId) -> CliResult {
    let head = ctx.m.get_server(&ctx.p, sid).await?.revision;
    let reports = ctx.m.host_reports(&ctx.p, sid).await?;
    let now = ctx.m.now();
    if ctx.out.json {
        let hosts: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "host": r.host,
                    "agent": r.agent,
                    "applied": r.applied,
                    "behind": r.applied.map_or(head.0, |a| head.0.saturating_sub(a.0)),
                    "instance": r.instance,
                    "converged": r.converged,
                    "peers": r.peers,
                    "error": r.error,
                    "heartbeat": out::time(r.heartbeat),
                    "age_secs": (now - r.heartbeat).whole_seconds().max(0),
                })
            })
            .collect();
        return ctx
            .out
            .json(&serde_json::json!({ "revision": head, "hosts": hosts }));
    }
    let rows: Vec<Vec<Cell>> = reports
        .iter()
        .map(|r| {
            let state = match (r.applied, r.converged) {
                (Some(a), true) if a == head => Cell::styled("up to date", Style::Green),
                (Some(a), true) => Cell::styled(
                    format!("{} behind", head.0.saturating_sub(a.0)),
                    Style::Yellow,
                ),
                (_, false) => Cell::styled("not converged", Style::Red),
                (None, true) => Cell::plain("starting"),
            };
            let age = (now - r.heartbeat).whole_seconds().max(0);
            let when = ago(
                now.unix_timestamp(),
                r.heartbeat.unix_timestamp().max(0).unsigned_abs(),
            );
            vec![
                Cell::plain(r.host.as_str()),
                Cell::plain(out::opt(r.applied)),
                state,
                Cell::plain(r.peers.to_string()),
                if age > 60 {
                    Cell::styled(when, Style::Red)
                } else {
                    Cell::plain(when)
                },
                Cell::plain(r.error.clone().unwrap_or_else(|| "-".into())),
            ]
        })
        .collect();
    ctx.out.line(&format!("head revision {head}"))?;
    ctx.out.table(
        &[
            "HOST",
            "APPLIED",
            "STATE",
            "PEERS",
            "HEARTBEAT",
            "LAST ERROR",
        ],
        &rows,
        "no agent has reported this server (start wgm-agent on its host)",
    )
}

/// `wgm status`.
pub async fn status(ctx: &Ctx, a: StatusArgs) -> CliResult {
    if a.reported {
        let sid = ctx.server(&a.server).await?;
        return reported(ctx, sid).await;
    }
    let host = host(&a.backend, false, DriftPolicy::Report).await?;
    let sid = ctx.server(&a.server).await?;
    let mut s = ctx.m.status(&ctx.p, sid, &host).await?;
    // Managed peers by name, then unmanaged ones by key: a stable order to read and diff.
    s.peers.sort_by(|a, b| {
        (
            a.name.is_none(),
            a.name.as_ref().map(|n| n.to_lowercase()),
            a.public_key.to_base64(),
        )
            .cmp(&(
                b.name.is_none(),
                b.name.as_ref().map(|n| n.to_lowercase()),
                b.public_key.to_base64(),
            ))
    });
    s.missing.sort();
    show_status(ctx, &s)
}

/// Errors after which another pass cannot help.
fn fatal(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound { .. }
            | Error::PermissionDenied { .. }
            | Error::Unauthenticated { .. }
            | Error::Sealed { .. }
            | Error::InvalidInput { .. }
            | Error::Unsupported { .. }
    )
}

/// `wgm reconcile`: disable expired peers and apply, every interval, until SIGINT or
/// SIGTERM. Passes that change nothing print nothing. Store or backend failures are
/// reported and retried at the next pass (live tunnels keep running meanwhile).
pub async fn reconcile(ctx: &Ctx, a: ReconcileArgs) -> CliResult {
    let secs = a.interval;
    let host = host(&a.backend, true, drift(a.remove_unmanaged)).await?;
    let sid = ctx.server(&a.server).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::Failed(format!("cannot handle SIGTERM: {e}")))?;
    ctx.out.note(&format!(
        "reconciling {} every {secs} s on host {}; Ctrl-C to stop",
        a.server, host.name
    ));
    loop {
        match ctx.m.sweep_expired(&ctx.p).await {
            // Nothing expired; or, without the right to disable peers everywhere,
            // expiry is someone else's job.
            Ok(0) | Err(Error::PermissionDenied { .. }) => {}
            Ok(n) => ctx.out.note(&format!("disabled {n} expired peers")),
            Err(e) if fatal(&e) => return Err(e.into()),
            Err(e) => ctx.out.warn(&format!("expiry sweep failed: {e}")),
        }
        match ctx
            .m
            .apply(&ctx.p, sid, &host, ApplyOptions::default())
            .await
        {
            Ok(r) if r.converged && r.plan.is_empty() => {}
            Ok(r) => {
                let stamp = out::time(ctx.m.now());
                if ctx.out.json {
                    let line = serde_json::to_string(&r)
                        .map_err(|e| CliError::Failed(format!("cannot encode JSON: {e}")))?;
                    ctx.out.line(&line)?;
                } else {
                    ctx.out.line(&format!(
                        "{stamp} {} revision {}: {} changes, {}",
                        r.plan.interface,
                        r.plan.revision,
                        r.results.len(),
                        if r.converged {
                            "converged"
                        } else {
                            "not converged"
                        }
                    ))?;
                    for res in &r.results {
                        ctx.out.line(&format!(
                            "  {} {}",
                            if res.ok { "ok  " } else { "FAIL" },
                            res.item
                        ))?;
                    }
                }
                for e in &r.errors {
                    ctx.out.warn(&e.to_string());
                }
            }
            Err(e) if fatal(&e) => return Err(e.into()),
            Err(e) => ctx.out.warn(&format!("pass failed, retrying: {e}")),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(secs)) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    ctx.out.note("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ago_formats() {
        assert_eq!(ago(100, 88), "12 s ago");
        assert_eq!(ago(10_000, 10_000 - 600), "10 min ago");
        assert_eq!(ago(100_000, 100_000 - 7200), "2 h ago");
        assert_eq!(ago(1_000_000, 1_000_000 - 3 * 86_400), "3 d ago");
        assert_eq!(ago(0, 5), "0 s ago");
    }
}
