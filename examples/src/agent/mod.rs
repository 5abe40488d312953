//! The per-host agent (`wgm-agent`): the one process on a WireGuard host that applies
//! the servers of that host, following the store's change feed.
//!
//! What it does, in order:
//!
//! 1. Finds its servers ([`config::Selection`]: by name, or every server assigned to this
//!    host) and takes the **lease** of each on this host
//!    ([`wgm_core::model::Lease`]). A lease held by another live agent makes it refuse to
//!    start (exactly one agent applies a server on a host); a lease whose holder is an
//!    agent of this host whose process is gone (killed with `SIGKILL`) is taken over at
//!    once, and any other lapses after its time to live.
//! 2. Reconciles every server in full, then follows the feed
//!    ([`wgm_core::manager::Manager::watch`]): each wake-up for one of its servers applies
//!    it incrementally (a burst of commits costs one apply), on the manager's verified
//!    state kept between applies. With `servers = "assigned"` a wake-up also reads the
//!    woken server's assignment (its own settings, not a listing of every server): a
//!    server assigned here is taken, one assigned elsewhere or deleted is let go. A
//!    [`FeedEvent::Missed`] (the feed's connection was cut) applies everything.
//! 3. Every `reconcile_interval`: expired peers are disabled, every server is applied
//!    (drift is repaired by the manager's policy: a full read at least every
//!    `reverify_after_secs`), the device's statistics are written back, and with
//!    `servers = "assigned"` the assignments are looked at again.
//! 4. Every `heartbeat_interval`: leases are renewed and each server's
//!    [`HostReport`] is written (applied revision, device instance, peers, last error,
//!    time), so `wgm status SERVER --reported` anywhere shows what each host holds.
//! 5. On `SIGTERM`/`SIGINT` it finishes the apply under way, releases its leases and
//!    returns; tunnels are never torn down on exit.
//!
//! When the store is unavailable, tunnels stay as they are: the agent logs one line
//! when the store goes away and one when it is back (not one per retry), retries with
//! backoff (1 s doubling to 30 s), and runs a full pass once it is back.

pub mod config;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};
use wgm_core::manager::{ApplyOptions, ApplyReport, Host, Manager};
use wgm_core::model::{HostReport, Lease, LeaseRequest, RevisionNo, ServerId};
use wgm_core::names::HostName;
use wgm_core::rbac::Principal;
use wgm_core::store::FeedEvent;
use wgm_core::{Error, Result};

use config::{AgentConfig, Selection};

/// The identity of this agent process as a lease holder: `HOST/PID/START`, where
/// `START` is the process's start time in clock ticks since boot (so a reused process
/// id is a different holder).
pub fn holder_id(host: &HostName) -> String {
    let pid = std::process::id();
    format!("{host}/{pid}/{}", start_time(pid).unwrap_or(0))
}

/// A process's start time (field 22 of `/proc/PID/stat`), if it exists.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count the
    // fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `holder` names an agent of `host` whose process is gone: then its lease can
/// be taken over at once. Holders of other hosts, or that do not parse, are not judged.
pub fn holder_is_gone(holder: &str, host: &HostName) -> bool {
    let mut parts = holder.rsplitn(3, '/');
    let (Some(start), Some(pid), Some(h)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if h != host.as_str() {
        return false;
    }
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    start_time(pid) != Some(start)
}

/// One server this agent applies.
#[derive(Debug)]
struct Held {
    name: String,
    lease: Lease,
    report: HostReport,
}

/// Whether the store is reachable, as last seen; changes are logged once each.
#[derive(Debug)]
struct StoreHealth {
    up: bool,
    backoff: Duration,
    retry_at: Option<Instant>,
}

impl StoreHealth {
    const FIRST: Duration = Duration::from_secs(1);
    const MOST: Duration = Duration::from_secs(30);

    fn ok(&mut self) -> bool {
        let was_down = !self.up;
        if was_down {
            tracing::info!("store available again; resuming");
        }
        self.up = true;
        self.backoff = Self::FIRST;
        self.retry_at = None;
        was_down
    }

    fn failed(&mut self, e: &Error) {
        if self.up {
            tracing::warn!(error = %e, "store unavailable; tunnels stay as they are, retrying with backoff");
        } else {
            tracing::debug!(error = %e, "store still unavailable");
        }
        self.up = false;
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(Self::MOST);
    }
}

fn is_store_error(e: &Error) -> bool {
    matches!(e, Error::Store { .. })
}

/// The agent: a manager, the principal it acts as, the host it applies to.
pub struct Agent {
    m: Arc<Manager>,
    p: Principal,
    host: Host,
    host_name: HostName,
    holder: String,
    cfg: AgentConfig,
    held: BTreeMap<ServerId, Held>,
    /// Servers whose lease another agent holds (logged once, looked at again each pass).
    refused: BTreeSet<ServerId>,
    health: StoreHealth,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("host", &self.host_name)
            .field("holder", &self.holder)
            .field("servers", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent acting as `p` (it needs `server:apply` on its servers; the binary uses
    /// the local administrator) on `host`, whose name must be a [`HostName`].
    ///
    /// # Errors
    ///
    /// `InvalidInput` (field `host`) when the host's name is not a valid host name.
    pub fn new(m: Arc<Manager>, p: Principal, host: Host, cfg: AgentConfig) -> Result<Agent> {
        let host_name = HostName::new(host.name.as_str())?;
        let holder = holder_id(&host_name);
        Ok(Agent {
            m,
            p,
            host,
            host_name,
            holder,
            cfg,
            held: BTreeMap::new(),
            refused: BTreeSet::new(),
            health: StoreHealth {
                up: true,
                backoff: StoreHealth::FIRST,
                retry_at: None,
            },
        })
    }

    /// The same agent under another holder id than [`holder_id`]'s (several agents in
    /// one process, as tests run them).
    #[must_use]
    pub fn with_holder(mut self, holder: impl Into<String>) -> Agent {
        self.holder = holder.into();
        self
    }

    /// This agent's lease holder id ([`holder_id`]).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The servers this agent applies now, by id with their names.
    pub fn servers(&self) -> Vec<(ServerId, String)> {
        self.held
            .iter()
            .map(|(id, h)| (*id, h.name.clone()))
            .collect()
    }

    /// Find the servers to run and take their leases: the start-up half of
    /// [`Agent::run`], separate so that a refusal can end the process before it
    /// reports ready.
    ///
    /// # Errors
    ///
    /// `Conflict` when another live agent holds a server's lease on this host (the
    /// message names it); `NotFound` for a named server that does not exist; the
    /// store's errors.
    pub async fn start(&mut self) -> Result<()> {
        for (id, name) in self.wanted().await? {
            self.take(id, &name).await?;
        }
        Ok(())
    }

    /// The servers the configuration selects.
    async fn wanted(&self) -> Result<Vec<(ServerId, String)>> {
        match &self.cfg.selection {
            Selection::Named(names) => {
                let mut out = Vec::with_capacity(names.len());
                for n in names {
                    let id = self.m.resolve_server(&self.p, n).await?;
                    out.push((id, n.clone()));
                }
                Ok(out)
            }
            Selection::Assigned => Ok(self
                .m
                .servers_on_host(&self.p, &self.host_name)
                .await?
                .into_iter()
                .map(|s| (s.id, s.name.to_string()))
                .collect()),
        }
    }

    fn request(&self, id: ServerId, take_over: Option<String>) -> LeaseRequest {
        LeaseRequest {
            server_id: id,
            host: self.host_name.clone(),
            holder: self.holder.clone(),
            now: self.m.now(),
            ttl: time::Duration::try_from(self.cfg.lease_ttl)
                .unwrap_or(time::Duration::seconds(20)),
            take_over,
        }
    }

    /// Take the lease of `id`; a lease of a gone agent of this host is taken over.
    async fn take(&mut self, id: ServerId, name: &str) -> Result<()> {
        let lease = match self.m.acquire_lease(&self.p, &self.request(id, None)).await {
            Ok(l) => l,
            Err(e @ Error::Conflict { .. }) => {
                // Who holds it? The last report names the agent that wrote it.
                let gone = self
                    .m
                    .host_reports(&self.p, id)
                    .await?
                    .into_iter()
                    .find(|r| r.host == self.host_name)
                    .map(|r| r.agent)
                    .filter(|a| holder_is_gone(a, &self.host_name));
                let Some(gone) = gone else {
                    return Err(e);
                };
                tracing::info!(server = name, previous = %gone, "taking over the lease of an agent that is gone");
                self.m
                    .acquire_lease(&self.p, &self.request(id, Some(gone)))
                    .await?
            }
            Err(e) => return Err(e),
        };
        tracing::info!(server = name, fencing = lease.fencing, "lease taken");
        let report = HostReport {
            server_id: id,
            host: self.host_name.clone(),
            agent: self.holder.clone(),
            fencing: lease.fencing,
            applied: None,
            instance: None,
            converged: false,
            peers: 0,
            error: None,
            heartbeat: self.m.now(),
        };
        // Written at once, so that an agent killed before its first apply is known as
        // the holder (and can be taken over from).
        self.m.report_host(&self.p, &report).await?;
        self.refused.remove(&id);
        self.held.insert(
            id,
            Held {
                name: name.to_owned(),
                lease,
                report,
            },
        );
        Ok(())
    }

    /// Apply one server and record the outcome in its report (written at once).
    async fn apply_one(&mut self, id: ServerId) {
        let Some(name) = self.held.get(&id).map(|h| h.name.clone()) else {
            return;
        };
        let r = self
            .m
            .apply(&self.p, id, &self.host, ApplyOptions::default())
            .await;
        match r {
            Ok(report) => {
                self.health.ok();
                log_apply(&name, &report);
                let instance = self
                    .host
                    .wireguard
                    .device_instance(&report.plan.interface)
                    .await
                    .ok()
                    .flatten();
                if let Some(h) = self.held.get_mut(&id) {
                    if report.converged {
                        h.report.applied = Some(report.plan.revision);
                        h.report.instance = instance;
                    }
                    h.report.converged = report.converged;
                    h.report.error = report
                        .errors
                        .first()
                        .map(|e| one_line(&e.to_string()))
                        .or_else(|| {
                            (!report.converged).then(|| {
                                format!("{} items left after applying", report.remaining.len())
                            })
                        });
                }
                self.write_report(id).await;
            }
            Err(e) if is_store_error(&e) => self.health.failed(&e),
            Err(Error::NotFound { .. }) => {
                tracing::warn!(server = name, "server deleted; its device is left as it is");
                self.drop_server(id).await;
            }
            Err(e) => {
                tracing::warn!(server = name, error = %e, "apply failed; retrying at the next pass");
                if let Some(h) = self.held.get_mut(&id) {
                    h.report.converged = false;
                    h.report.error = Some(one_line(&e.to_string()));
                }
                self.write_report(id).await;
            }
        }
    }

    /// Write the report of `id` with a fresh heartbeat.
    async fn write_report(&mut self, id: ServerId) {
        let now = self.m.now();
        let Some(h) = self.held.get_mut(&id) else {
            return;
        };
        h.report.heartbeat = now;
        let report = h.report.clone();
        match self.m.report_host(&self.p, &report).await {
            Ok(()) => {
                self.health.ok();
            }
            Err(e) if is_store_error(&e) => self.health.failed(&e),
            Err(e @ Error::Conflict { .. }) => {
                tracing::error!(server = %id, error = %e, "lost the lease; no longer applying this server");
                self.held.remove(&id);
                self.refused.insert(id);
            }
            Err(e) => tracing::warn!(server = %id, error = %e, "could not write the host report"),
        }
    }

    /// Stop applying `id` and give its lease back.
    async fn drop_server(&mut self, id: ServerId) {
        if let Some(h) = self.held.remove(&id) {
            if let Err(e) = self.m.release_lease(&self.p, &h.lease).await {
                tracing::debug!(server = h.name, error = %e, "could not release the lease");
            }
        }
    }

    /// Renew every lease and refresh every report.
    async fn heartbeat(&mut self) {
        let ids: Vec<ServerId> = self.held.keys().copied().collect();
        for id in ids {
            let req = self.request(id, None);
            match self.m.acquire_lease(&self.p, &req).await {
                Ok(l) => {
                    self.health.ok();
                    if let Some(h) = self.held.get_mut(&id) {
                        // A lease of ours that lapsed (a long store outage) comes back
                        // with a new number: the reports follow it.
                        if l.fencing != h.lease.fencing {
                            tracing::info!(
                                server = h.name,
                                fencing = l.fencing,
                                "lease taken again after it lapsed"
                            );
                        }
                        h.report.fencing = l.fencing;
                        h.lease = l;
                    }
                    self.write_report(id).await;
                }
                Err(e) if is_store_error(&e) => {
                    self.health.failed(&e);
                    return;
                }
                Err(e) => {
                    tracing::error!(server = %id, error = %e, "lost the lease; no longer applying this server");
                    self.held.remove(&id);
                    self.refused.insert(id);
                }
            }
        }
    }

    /// With `servers = "assigned"`: take servers newly assigned here, let go of those
    /// assigned elsewhere (their devices are left as they are).
    async fn reassign(&mut self) {
        if self.cfg.selection != Selection::Assigned {
            return;
        }
        let wanted = match self.wanted().await {
            Ok(w) => {
                self.health.ok();
                w
            }
            Err(e) if is_store_error(&e) => return self.health.failed(&e),
            Err(e) => {
                tracing::warn!(error = %e, "could not list the servers assigned to this host");
                return;
            }
        };
        let ids: BTreeSet<ServerId> = wanted.iter().map(|(id, _)| *id).collect();
        let gone: Vec<ServerId> = self
            .held
            .keys()
            .filter(|id| !ids.contains(id))
            .copied()
            .collect();
        for id in gone {
            tracing::info!(server = %id, "no longer assigned to this host; its device is left as it is");
            self.drop_server(id).await;
        }
        for (id, name) in wanted {
            if self.held.contains_key(&id) {
                continue;
            }
            match self.take(id, &name).await {
                Ok(()) => self.apply_one(id).await,
                Err(e) if is_store_error(&e) => return self.health.failed(&e),
                Err(e) => {
                    if self.refused.insert(id) {
                        tracing::error!(server = name, error = %e, "not applying this server");
                    }
                }
            }
        }
    }

    /// With `servers = "assigned"`, after wake-ups for `ids`: the assignment of just
    /// those servers, each read from its own settings (one row, or this process's cache;
    /// not a listing of every server): take a server newly assigned here (the caller
    /// applies it), let go of one assigned elsewhere or deleted.
    async fn reassign_woken(&mut self, ids: &BTreeSet<ServerId>) {
        if self.cfg.selection != Selection::Assigned {
            return;
        }
        for &id in ids {
            let here = match self.m.get_server(&self.p, id).await {
                Ok(v) => {
                    self.health.ok();
                    (v.host.as_ref() == Some(&self.host_name)).then(|| v.name.to_string())
                }
                Err(Error::NotFound { .. }) => None,
                Err(e) if is_store_error(&e) => return self.health.failed(&e),
                Err(e) => {
                    tracing::warn!(server = %id, error = %e, "could not read the server's assignment");
                    continue;
                }
            };
            match (self.held.contains_key(&id), here) {
                (true, None) => {
                    tracing::info!(server = %id, "no longer assigned to this host; its device is left as it is");
                    self.drop_server(id).await;
                }
                (false, Some(name)) => match self.take(id, &name).await {
                    Ok(()) => {}
                    Err(e) if is_store_error(&e) => return self.health.failed(&e),
                    Err(e) => {
                        if self.refused.insert(id) {
                            tracing::error!(server = name, error = %e, "not applying this server");
                        }
                    }
                },
                _ => {}
            }
        }
    }

    /// The periodic pass: expiry, every server, statistics, assignments.
    async fn full_pass(&mut self) {
        match self.m.sweep_expired(&self.p).await {
            Ok(0) | Err(Error::PermissionDenied { .. }) => {}
            Ok(n) => tracing::info!(peers = n, "disabled expired peers"),
            Err(e) if is_store_error(&e) => return self.health.failed(&e),
            Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
        }
        self.reassign().await;
        let ids: Vec<ServerId> = self.held.keys().copied().collect();
        for id in ids {
            self.apply_one(id).await;
            if !self.health.up {
                return;
            }
            // Statistics: status reads the device and writes what changed.
            match self.m.status(&self.p, id, &self.host).await {
                Ok(s) => {
                    if let Some(h) = self.held.get_mut(&id) {
                        h.report.peers = s.peers.len() as u64;
                    }
                }
                Err(e) if is_store_error(&e) => return self.health.failed(&e),
                Err(e) => tracing::debug!(server = %id, error = %e, "status failed"),
            }
        }
    }

    /// Watch the feed, or note the store as down.
    async fn watch(&mut self) -> Option<BoxStream<'static, FeedEvent>> {
        match self.m.watch(&self.p).await {
            Ok(s) => Some(s),
            Err(e) => {
                self.health.failed(&e);
                None
            }
        }
    }

    /// Run until `shutdown` resolves: reconcile everything, then follow the feed (see
    /// the [module docs](self)). Call [`Agent::start`] first.
    ///
    /// # Errors
    ///
    /// None once started: failures are logged and retried. The result is for the
    /// binary's exit status.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let shutdown = shutdown.fuse();
        futures::pin_mut!(shutdown);
        let mut feed = self.watch().await;
        self.full_pass().await;
        let mut reconcile = tokio::time::interval_at(
            Instant::now() + self.cfg.reconcile_interval,
            self.cfg.reconcile_interval,
        );
        reconcile.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval_at(
            Instant::now() + self.cfg.heartbeat_interval,
            self.cfg.heartbeat_interval,
        );
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tracing::info!(host = %self.host_name, servers = self.held.len(), "following the change feed");
        loop {
            let retry_at = self.health.retry_at;
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                ev = next_event(&mut feed) => {
                    let Some(ev) = ev else {
                        // The feed ended (the store closed it): watch again after a pause.
                        feed = None;
                        self.health.failed(&Error::store("feed", "the change feed ended"));
                        continue;
                    };
                    let mut dirty = BTreeSet::new();
                    let mut everything = false;
                    let mut take = |ev: FeedEvent| match ev {
                        FeedEvent::Missed => everything = true,
                        FeedEvent::Committed { server, .. } => { dirty.insert(server); }
                    };
                    take(ev);
                    // A burst of commits costs one apply per server.
                    if let Some(f) = feed.as_mut() {
                        while let Some(Some(ev)) = f.next().now_or_never() {
                            take(ev);
                        }
                    }
                    if everything {
                        self.full_pass().await;
                        continue;
                    }
                    // A woken server may have been assigned here or elsewhere.
                    self.reassign_woken(&dirty).await;
                    for id in dirty {
                        if self.held.contains_key(&id) {
                            self.apply_one(id).await;
                        }
                    }
                }
                _ = reconcile.tick() => self.full_pass().await,
                _ = heartbeat.tick() => self.heartbeat().await,
                () = sleep_until(retry_at) => {
                    if feed.is_none() {
                        feed = self.watch().await;
                    }
                    let was_up = self.health.up;
                    self.health.retry_at = None;
                    // Look at the store again: a full pass, which marks it up or down.
                    self.full_pass().await;
                    if !was_up && self.health.up {
                        self.heartbeat().await;
                    }
                }
            }
        }
        tracing::info!("stopping: releasing leases; tunnels stay up");
        let ids: Vec<ServerId> = self.held.keys().copied().collect();
        for id in ids {
            self.drop_server(id).await;
        }
        Ok(())
    }
}

/// An error as one line of at most 1024 characters (what a report may hold).
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1024)
        .collect()
}

async fn next_event(feed: &mut Option<BoxStream<'static, FeedEvent>>) -> Option<FeedEvent> {
    match feed {
        Some(f) => f.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One line per apply that changed something or did not converge.
fn log_apply(name: &str, r: &ApplyReport) {
    if r.converged && r.plan.is_empty() {
        return;
    }
    let revision: RevisionNo = r.plan.revision;
    if r.converged {
        tracing::info!(server = name, revision = %revision, changes = r.results.len(), read_back = r.read_back, "applied");
    } else {
        tracing::warn!(server = name, revision = %revision, remaining = r.remaining.len(), "not converged");
    }
    for e in &r.errors {
        tracing::warn!(server = name, error = %e, "backend error");
    }
}
