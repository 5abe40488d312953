//! `wgm policy …`: a server's firewall policy (peers' policies are set with
//! `wgm peer set`).

use serde::Serialize;
use wgm_core::manager::{PeerView, ServerView};
use wgm_core::policy::ServerPolicy;

use crate::args::{PolicyCmd, PolicySet};
use crate::cmd::peer::{policy_allow, policy_quota};
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::out::{self, Cell};

/// What `wgm policy show --json` prints.
#[derive(Serialize)]
struct PolicyView<'a> {
    server: &'a str,
    policy: &'a ServerPolicy,
    peers: Vec<PeerPolicyView<'a>>,
}

#[derive(Serialize)]
struct PeerPolicyView<'a> {
    name: &'a str,
    policy: &'a wgm_core::policy::PeerPolicy,
}

/// Run a `policy` subcommand.
pub async fn run(ctx: &Ctx, cmd: PolicyCmd) -> CliResult {
    match cmd {
        PolicyCmd::Show(a) => {
            let sid = ctx.server(&a.server).await?;
            let v = ctx.m.get_server(&ctx.p, sid).await?;
            let peers = ctx.m.list_peers(&ctx.p, sid).await?;
            show(ctx, &v, &peers)
        }
        PolicyCmd::Set(a) => set(ctx, a).await,
    }
}

async fn set(ctx: &Ctx, a: PolicySet) -> CliResult {
    let sid = ctx.server(&a.server).await?;
    let v = ctx.m.get_server(&ctx.p, sid).await?;
    let mut p = v.policy.clone();
    let mut any = false;
    if let Some(x) = a.forwarding {
        p.forwarding = x;
        any = true;
    }
    if let Some(x) = a.masquerade4 {
        p.masquerade4 = x.into_option();
        any = true;
    }
    if let Some(x) = a.masquerade6 {
        p.masquerade6 = x.into_option();
        any = true;
    }
    if let Some(x) = a.peer_to_peer {
        p.peer_to_peer = x;
        any = true;
    }
    if let Some(x) = a.default_verdict {
        p.default_verdict = x;
        any = true;
    }
    if !any {
        return Err(CliError::Usage(
            "nothing to change: give at least one option (see wgm policy set --help)".into(),
        ));
    }
    // The options merge into the policy read above: commit only at that revision, so a
    // concurrent change is refused (a conflict, exit 4), never overwritten.
    let writer = ctx.p.clone().if_revision([v.revision.0]);
    let v = ctx.m.set_server_policy(&writer, sid, p).await?;
    let peers = ctx.m.list_peers(&ctx.p, sid).await?;
    show(ctx, &v, &peers)
}

fn show(ctx: &Ctx, v: &ServerView, peers: &[PeerView]) -> CliResult {
    if ctx.out.json {
        return ctx.out.json(&PolicyView {
            server: v.name.as_str(),
            policy: &v.policy,
            peers: peers
                .iter()
                .map(|p| PeerPolicyView {
                    name: p.name.as_str(),
                    policy: &p.policy,
                })
                .collect(),
        });
    }
    let p = &v.policy;
    let word = |b: bool, yes: &str, no: &str| if b { yes } else { no }.to_owned();
    ctx.out.kv(&[
        ("server", v.name.to_string()),
        ("forwarding", word(p.forwarding, "on", "off")),
        ("masquerade4", out::opt(p.masquerade4.as_ref())),
        ("masquerade6", out::opt(p.masquerade6.as_ref())),
        ("peer-to-peer", word(p.peer_to_peer, "allow", "deny")),
        ("default", p.default_verdict.to_string()),
    ])?;
    let rows: Vec<Vec<Cell>> = peers
        .iter()
        .filter(|x| x.policy != wgm_core::policy::PeerPolicy::default())
        .map(|x| {
            vec![
                Cell::plain(x.name.to_string()),
                Cell::plain(policy_allow(&x.policy)),
                Cell::plain(out::opt(x.policy.rate_up)),
                Cell::plain(out::opt(x.policy.rate_down)),
                Cell::plain(policy_quota(&x.policy)),
            ]
        })
        .collect();
    ctx.out.table(
        &["PEER", "ALLOW", "RATE UP", "RATE DOWN", "QUOTA"],
        &rows,
        "(no peer has a policy of its own)",
    )
}
