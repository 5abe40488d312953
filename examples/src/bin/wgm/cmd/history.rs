//! `wgm history`, `wgm diff`, `wgm rollback`, `wgm audit`.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{json, Value};
use time::OffsetDateTime;
use wgm_core::model::{AuditOutcome, AuditQuery, Change, RevisionNo, RevisionRecord};

use crate::args::{AuditArgs, DiffArgs, HistoryArgs, RollbackArgs};
use crate::ctx::Ctx;
use crate::error::CliResult;
use crate::out::{self, Cell, Style};
use crate::parse::Relative;

/// One revision as `wgm history --json` prints it: no sealed values, just what changed.
#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    /// Revision number.
    pub revision: RevisionNo,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who (`local:root`, `user:alice`, …).
    pub author: String,
    /// One line.
    pub summary: String,
    /// The changes, by kind and object name.
    pub changes: Vec<ChangeEntry>,
}

/// One change of a revision.
#[derive(Debug, Serialize)]
pub struct ChangeEntry {
    /// `server_created`, `server_updated`, `server_deleted`, `peer_added`,
    /// `peer_updated`, `peer_removed`.
    pub kind: &'static str,
    /// `server` or `peer`.
    pub object: &'static str,
    /// The object's name (after the change).
    pub name: String,
    /// The object's id.
    pub id: String,
}

fn change_entry(c: &Change) -> ChangeEntry {
    let (object, name, id) = match c {
        Change::ServerCreated { server } | Change::ServerDeleted { server } => {
            ("server", server.name.to_string(), server.id.to_string())
        }
        Change::ServerUpdated { after, .. } => {
            ("server", after.name.to_string(), after.id.to_string())
        }
        Change::PeerAdded { peer } | Change::PeerRemoved { peer } => {
            ("peer", peer.name.to_string(), peer.id.to_string())
        }
        Change::PeerUpdated { after, .. } => ("peer", after.name.to_string(), after.id.to_string()),
        // The model may grow new kinds; show them without details.
        _ => ("other", String::new(), String::new()),
    };
    ChangeEntry {
        kind: c.kind(),
        object,
        name,
        id,
    }
}

/// The printable form of a revision.
pub fn entry(r: &RevisionRecord) -> HistoryEntry {
    HistoryEntry {
        revision: r.revision,
        at: r.at,
        author: r.author.label.clone(),
        summary: r.summary.clone(),
        changes: r.changes.iter().map(change_entry).collect(),
    }
}

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
    // A stable order: the server, then removed, changed and added peers, each by name.
    let rank = |k: &str| match k {
        "server" => 0,
        "peer_removed" => 1,
        "peer_changed" => 2,
        "peer_added" => 3,
        _ => 4,
    };
    entries.sort_by(|a, b| {
        (rank(&a.kind), a.object.to_lowercase()).cmp(&(rank(&b.kind), b.object.to_lowercase()))
    });
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
