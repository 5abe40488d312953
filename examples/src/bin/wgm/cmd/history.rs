//! `wgm history`, `wgm diff`, `wgm rollback`, `wgm audit`.

use std::fmt::Write as _;

use serde_json::{json, Value};
use wgm_cli::views::{self, entry, HistoryEntry};
use wgm_core::model::{AuditOutcome, AuditQuery, RevisionNo};

use crate::args::{AuditArgs, DiffArgs, HistoryArgs, RollbackArgs};
use crate::ctx::Ctx;
use crate::error::CliResult;
use crate::out::{self, Cell, Style};
use crate::parse::Relative;

/// `wgm history`.
pub async fn history(ctx: &Ctx, a: HistoryArgs) -> CliResult {
    let sid = ctx.server(&a.server).await?;
    let after = a.after.unwrap_or(RevisionNo::NONE);
    let limit = a.limit.unwrap_or(u64::MAX);
    let revs = ctx.m.history(&ctx.p, sid, after, limit).await?;
    let entries: Vec<HistoryEntry> = revs.iter().map(entry).collect();
    if ctx.out.json {
        return ctx.out.json(&entries);
    }
    let rows: Vec<Vec<Cell>> = entries
        .iter()
        .map(|e| {
            vec![
                Cell::plain(e.revision.to_string()),
                Cell::plain(out::time(e.at)),
                Cell::plain(e.author.as_str()),
                Cell::plain(e.summary.as_str()),
            ]
        })
        .collect();
    ctx.out
        .table(&["REV", "TIME", "AUTHOR", "SUMMARY"], &rows, "no revisions")
}

fn compact(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `wgm diff`.
pub async fn diff(ctx: &Ctx, a: DiffArgs) -> CliResult {
    let sid = ctx.server(&a.server).await?;
    let (from, to) = (a.from, a.to);
    let mut entries = ctx.m.diff(&ctx.p, sid, from, to).await?;
    views::sort_diff(&mut entries);
    if ctx.out.json {
        return ctx.out.json(&entries);
    }
    if entries.is_empty() {
        return ctx
            .out
            .line(&format!("no differences between revisions {from} and {to}"));
    }
    let mut text = String::new();
    for e in &entries {
        let (mark, style, what) = match e.kind.as_str() {
            "peer_added" => ("+", Style::Green, "peer"),
            "peer_removed" => ("-", Style::Red, "peer"),
            "server" => ("~", Style::Yellow, "server"),
            _ => ("~", Style::Yellow, "peer"),
        };
        text.push_str(&ctx.out.paint(&format!("{mark} {what} {}", e.object), style));
        text.push('\n');
        for (field, (before, after)) in &e.fields {
            let _ = writeln!(
                text,
                "    {field}: {} -> {}",
                compact(before),
                compact(after)
            );
        }
    }
    ctx.out.raw(&text)
}

/// `wgm rollback`.
pub async fn rollback(ctx: &Ctx, a: RollbackArgs) -> CliResult {
    let sid = ctx.server(&a.server).await?;
    let to = a.revision;
    let rec = ctx.m.rollback(&ctx.p, sid, to).await?;
    if ctx.out.json {
        return ctx
            .out
            .json(&json!({ "restored": to, "revision": entry(&rec) }));
    }
    let n = rec.changes.len();
    ctx.out.line(&format!(
        "restored revision {to} as revision {} ({n} change{}); apply it to the live interface with: wgm apply {}",
        rec.revision,
        if n == 1 { "" } else { "s" },
        a.server
    ))
}

/// `wgm audit`.
pub async fn audit(ctx: &Ctx, a: AuditArgs) -> CliResult {
    if a.verify {
        let v = ctx.m.verify_audit_chain(&ctx.p, a.expect.as_ref()).await?;
        if ctx.out.json {
            return ctx.out.json(&v);
        }
        let legacy = if v.legacy_records == 0 {
            String::new()
        } else {
            format!(
                " ({} unkeyed, written before the store had an audit key)",
                v.legacy_records
            )
        };
        let expected = a
            .expect
            .as_ref()
            .map_or_else(String::new, |h| format!("; holds the expected head {h}"));
        return ctx.out.line(&format!(
            "audit chain intact: {} records{legacy}{expected}; head {}",
            v.records, v.head
        ));
    }
    let now = ctx.m.now();
    let mut q = AuditQuery {
        actor: a.actor.clone(),
        ..AuditQuery::default()
    };
    if let Some(s) = &a.server {
        q.server_id = Some(ctx.server(s).await?);
    }
    q.since = a.since.map(|w| w.at(now, Relative::Past));
    q.until = a.until.map(|w| w.at(now, Relative::Past));
    q.limit = a.limit;
    let records = ctx.m.audit_log(&ctx.p, &q).await?;
    if ctx.out.json {
        return ctx.out.json(&records);
    }
    let rows: Vec<Vec<Cell>> = records
        .iter()
        .map(|r| {
            let outcome = match r.entry.outcome {
                AuditOutcome::Success => Cell::styled("ok", Style::Green),
                AuditOutcome::Denied => Cell::styled("denied", Style::Red),
                AuditOutcome::Failed => Cell::styled("failed", Style::Red),
            };
            vec![
                Cell::plain(r.seq.to_string()),
                Cell::plain(out::time(r.entry.at)),
                Cell::plain(r.entry.actor.label.as_str()),
                Cell::plain(r.entry.action.as_str()),
                Cell::plain(r.entry.object.as_str()),
                Cell::plain(out::opt(r.entry.revision)),
                outcome,
            ]
        })
        .collect();
    ctx.out.table(
        &["SEQ", "TIME", "ACTOR", "ACTION", "OBJECT", "REV", "RESULT"],
        &rows,
        "no audit records match",
    )
}
