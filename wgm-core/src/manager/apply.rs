//! Apply: converge the live interface on a [`Host`] toward a server's head revision.
//!
//! [`Manager::apply`] runs named steps, each a function below: load the desired state
//! (`Manager::desired_for`, kept between applies), read the live state (or start from
//! what this manager verified there before, if the device is the same instance), plan
//! ([`crate::reconcile::plan`], pure), execute the deltas, verify — by the backends'
//! acknowledgement of every delta where [`Verify`] says that is proof, otherwise by
//! **re-reading and re-planning** — and record the applied revision only when the host
//! holds all of it. Per-item results say what landed; a backend failing part-way (the
//! kernel and UAPI are not atomic) is re-read and leaves the rest for the next pass.

use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::json;
use time::OffsetDateTime;

use super::Manager;
use std::collections::BTreeMap;

use crate::backend::firewall::{
    plan_firewall, FirewallBackend, FirewallDelta, FirewallState, LiveFirewall,
};
use crate::backend::{
    DeviceState, LinkDelta, LinkState, NetworkBackend, PeerState, WireGuardBackend,
};
use crate::keys::PublicKey;
use crate::model::{
    AppliedState, Change, Peer, PeerId, RevisionNo, RevisionRecord, ServerId, ServerState,
};
use crate::names::{InterfaceName, PeerName};
use crate::rbac::{Action, Principal, Resource, Target};
use crate::reconcile::{
    acknowledged_state, desired_host_with, plan, DesiredHost, DriftPolicy, Execution, Plan,
    PlanItem, PlanOptions, PlannedFrom, Verify,
};
use crate::{Error, Result};

/// The WireGuard host a server is applied to: a WireGuard backend (kernel or userspace)
/// and optionally a network backend for addresses, routes and MTU.
#[derive(Clone, Debug)]
pub struct Host {
    /// A stable name for this host (recorded with applied revisions).
    pub name: String,
    /// Where the device lives.
    pub wireguard: Arc<dyn WireGuardBackend>,
    /// The link side (`None`: leave addresses, routes and MTU alone).
    pub network: Option<Arc<dyn NetworkBackend>>,
    /// Unmanaged peers: report or remove. A property of the host (how its operator
    /// treats peers wgm does not manage), handed to the pure plan as
    /// [`PlanOptions::drift`].
    pub drift: DriftPolicy,
    /// The firewall (`None`, the default: leave the firewall alone). With one, every
    /// apply and plan also converges the server's firewall (see [`FirewallOutcome`]).
    pub firewall: Option<Arc<dyn FirewallBackend>>,
}

impl Host {
    /// A host called `name` with these backends and the [`DriftPolicy::Report`] policy.
    pub fn new(
        name: impl Into<String>,
        wireguard: Arc<dyn WireGuardBackend>,
        network: Option<Arc<dyn NetworkBackend>>,
    ) -> Host {
        Host {
            name: name.into(),
            wireguard,
            network,
            drift: DriftPolicy::Report,
            firewall: None,
        }
    }

    /// The same host with a firewall backend: applies then also converge each server's
    /// firewall ([`crate::reconcile::desired_firewall`]) and status shows quota use and
    /// drops.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use wgm_core::backend::firewall::MemoryFirewall;
    /// use wgm_core::backend::MemoryWireGuard;
    /// use wgm_core::manager::Host;
    /// let host = Host::new("h1", Arc::new(MemoryWireGuard::new()), None)
    ///     .with_firewall(Arc::new(MemoryFirewall::new()));
    /// assert!(host.firewall.is_some());
    /// ```
    #[must_use]
    pub fn with_firewall(mut self, firewall: Arc<dyn FirewallBackend>) -> Host {
        self.firewall = Some(firewall);
        self
    }

    /// The same host with another drift policy.
    #[must_use]
    pub fn with_drift(mut self, drift: DriftPolicy) -> Host {
        self.drift = drift;
        self
    }
}

/// Options of [`Manager::apply`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOptions {
    /// Compute and return the plan, change nothing.
    pub dry_run: bool,
    /// Replace every peer (`replace_peers`): resets tunnels; for explicit resyncs only.
    pub full_resync: bool,
    /// When to read the host back after executing.
    pub verify: Verify,
}

/// The outcome of one plan item.
#[derive(Clone, Debug, Serialize)]
pub struct ItemResult {
    /// The item.
    pub item: PlanItem,
    /// Whether the re-read shows it done.
    pub ok: bool,
}

/// What [`Manager::apply`] did.
#[derive(Clone, Debug, Serialize)]
pub struct ApplyReport {
    /// The plan that was executed (or would be, on a dry run).
    pub plan: Plan,
    /// Whether anything was executed.
    pub executed: bool,
    /// Per item: done or not, judged by re-reading the host (or, when
    /// [`ApplyReport::read_back`] is false, by the backends' acknowledgement).
    pub results: Vec<ItemResult>,
    /// Errors the backends returned while executing (the re-read says what landed).
    /// Serialized as their messages.
    pub errors: Vec<ApplyError>,
    /// Whether the host now matches the revision (then it was recorded as applied).
    pub converged: bool,
    /// What is still left after the re-read.
    pub remaining: Vec<PlanItem>,
    /// Whether the host was read back in full after executing; false when the
    /// backends' acknowledgement was proof enough (see [`Verify::Auto`]) or nothing was
    /// executed.
    pub read_back: bool,
    /// The firewall's part, when the host has a firewall backend. The apply converged
    /// only if the firewall did too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firewall: Option<FirewallOutcome>,
}

/// The firewall part of a plan: what [`plan_firewall`] says to change on the server's
/// firewall, and one line per change for people.
#[derive(Clone, Debug, Serialize)]
pub struct FirewallPlan {
    /// The exact delta.
    pub delta: FirewallDelta,
    /// One line per change: `write the static part`, `remove 2 stray elements`,
    /// `peer alice: add 4 elements, put quota`.
    pub items: Vec<String>,
}

impl FirewallPlan {
    /// The plan from `desired` to `live`, peers named by `names` where known.
    fn of(
        desired: &FirewallState,
        live: Option<&LiveFirewall>,
        names: &BTreeMap<PublicKey, String>,
    ) -> FirewallPlan {
        let delta = plan_firewall(desired, live);
        let mut items = Vec::new();
        if delta.server.is_some() {
            items.push("write the static part (server policy)".to_owned());
        }
        if !delta.remove_stray.is_empty() {
            items.push(format!(
                "remove {} stray elements",
                delta.remove_stray.len()
            ));
        }
        for c in &delta.peers {
            let who = names
                .get(&c.key)
                .map_or_else(|| format!("peer {}", c.key), |n| format!("peer {n}"));
            let mut what = Vec::new();
            if !c.remove_elements.is_empty() {
                what.push(format!("remove {} elements", c.remove_elements.len()));
            }
            for o in &c.remove_objects {
                what.push(format!("remove {o:?}").to_lowercase());
            }
            for o in &c.put_objects {
                what.push(format!("put {:?}", o.kind()).to_lowercase());
            }
            if !c.add_elements.is_empty() {
                what.push(format!("add {} elements", c.add_elements.len()));
            }
            items.push(format!("{who}: {}", what.join(", ")));
        }
        FirewallPlan { delta, items }
    }

    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.delta.is_empty()
    }
}

/// What an apply did to the server's firewall: planned from a full read, applied as one
/// atomic delta, read back and planned again (so drift is repaired on every apply).
#[derive(Clone, Debug, Serialize)]
pub struct FirewallOutcome {
    /// The plan that was executed (or would be, on a dry run).
    pub plan: FirewallPlan,
    /// Whether the delta was applied.
    pub executed: bool,
    /// The backend's error, if applying failed (then nothing of the delta landed).
    #[serde(serialize_with = "serialize_opt_error")]
    pub error: Option<Arc<Error>>,
    /// Whether the read-back firewall holds the desired state.
    pub converged: bool,
    /// What is still left after the read-back.
    pub remaining: Vec<String>,
}

#[allow(clippy::ref_option)] // the signature serde's `serialize_with` calls
fn serialize_opt_error<S: Serializer>(
    e: &Option<Arc<Error>>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    match e {
        Some(e) => serializer.collect_str(e),
        None => serializer.serialize_none(),
    }
}

/// A backend call of an apply that failed. Shown as the backend's message; which call
/// failed and on which interface are in the variant. Failures do not end an apply: the
/// host is read back to see what landed (neither the kernel nor UAPI is atomic).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// Deleting the device (the server is inactive) failed.
    #[error("{error}")]
    DeleteDevice {
        /// The interface.
        interface: InterfaceName,
        /// What the backend said.
        error: Arc<Error>,
    },
    /// Creating the device failed.
    #[error("{error}")]
    CreateDevice {
        /// The interface.
        interface: InterfaceName,
        /// What the backend said.
        error: Arc<Error>,
    },
    /// Applying the device delta failed, possibly part-way.
    #[error("{error}")]
    ApplyDevice {
        /// The interface.
        interface: InterfaceName,
        /// What the backend said.
        error: Arc<Error>,
    },
    /// Applying the link delta (MTU, addresses, routes, up) failed, possibly part-way.
    #[error("{error}")]
    ApplyLink {
        /// The interface.
        interface: InterfaceName,
        /// What the backend said.
        error: Arc<Error>,
    },
}

impl ApplyError {
    /// The interface the failed call was for.
    pub fn interface(&self) -> &InterfaceName {
        match self {
            ApplyError::DeleteDevice { interface, .. }
            | ApplyError::CreateDevice { interface, .. }
            | ApplyError::ApplyDevice { interface, .. }
            | ApplyError::ApplyLink { interface, .. } => interface,
        }
    }

    /// The backend's error.
    pub fn error(&self) -> &Error {
        match self {
            ApplyError::DeleteDevice { error, .. }
            | ApplyError::CreateDevice { error, .. }
            | ApplyError::ApplyDevice { error, .. }
            | ApplyError::ApplyLink { error, .. } => error,
        }
    }
}

/// As its message: the JSON of a report and the audit record show errors as text.
impl Serialize for ApplyError {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl ApplyReport {
    /// A dry run: the plan, nothing executed.
    fn dry_run(plan: Plan) -> ApplyReport {
        ApplyReport {
            plan,
            executed: false,
            results: Vec::new(),
            errors: Vec::new(),
            converged: false,
            remaining: Vec::new(),
            read_back: false,
            firewall: None,
        }
    }

    /// Every delta of `plan` was acknowledged: every item is done, not read back.
    fn acknowledged(plan: Plan, errors: Vec<ApplyError>) -> ApplyReport {
        ApplyReport {
            results: plan
                .items
                .iter()
                .map(|item| ItemResult {
                    item: item.clone(),
                    ok: true,
                })
                .collect(),
            plan,
            executed: true,
            errors,
            converged: true,
            remaining: Vec::new(),
            read_back: false,
            firewall: None,
        }
    }

    /// `plan` was executed and the host read back, which left `again` to do: each item
    /// is judged by whether it is still pending; drift the read found but leaves alone
    /// (unmanaged peers under the `report` policy) is reported too.
    fn judged(mut plan: Plan, errors: Vec<ApplyError>, again: Plan) -> ApplyReport {
        let reported: Vec<PlanItem> = again
            .items
            .iter()
            .filter(|i| i.is_report_only() && !plan.items.contains(i))
            .cloned()
            .collect();
        plan.items.extend(reported);
        let remaining: Vec<PlanItem> = again
            .items
            .into_iter()
            .filter(|i| !i.is_report_only())
            .collect();
        let results = plan
            .items
            .iter()
            .map(|item| ItemResult {
                item: item.clone(),
                ok: item.is_report_only() || !item_pending(item, &remaining),
            })
            .collect();
        ApplyReport {
            plan,
            executed: true,
            results,
            errors,
            converged: remaining.is_empty(),
            remaining,
            read_back: true,
            firewall: None,
        }
    }
}

/// The live state of a server on a host as this manager last verified it, at a revision:
/// read back in full at `read_at`, plus the deltas the backend acknowledged since.
#[derive(Debug)]
pub(super) struct LiveSnapshot {
    revision: RevisionNo,
    device: Option<DeviceState>,
    link: Option<LinkState>,
    /// The device's incarnation ([`WireGuardBackend::device_instance`]).
    instance: Option<u64>,
    /// When the host was last read in full.
    read_at: OffsetDateTime,
}

/// A snapshot's key: the server and the host's name.
type HostKey = (ServerId, String);

impl Manager {
    /// The verified live state of a server on a host, if this manager recorded one at
    /// exactly `applied` (the revision the store says that host has applied).
    fn live_snapshot(&self, key: &HostKey, applied: Option<RevisionNo>) -> Option<LiveSnapshot> {
        let mut g = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Taken out: whoever uses it puts back what the host holds afterwards.
        let s = g.remove(key)?;
        (Some(s.revision) == applied).then_some(s)
    }

    /// A delta failed part-way: what the host holds is no longer known, so the durable
    /// record keeps the applied revision but drops the device part, and the next apply
    /// (in any process) reads the device in full.
    async fn distrust_device(&self, server: ServerId, host: &str, applied: Option<RevisionNo>) {
        let Some(rev) = applied else {
            return;
        };
        if let Err(e) = self.store().set_applied(server, host, rev).await {
            tracing::warn!(error = %e, "could not mark the host's device as unverified");
        }
    }

    /// Whether this manager keeps a verified state of the host (then it plans from that).
    fn has_snapshot(&self, key: &HostKey) -> bool {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(key)
    }

    /// Apply from the durable record of what the host holds (a fresh process's fast
    /// path): when the store says `host` converged to revision R on device instance I,
    /// verified in full less than `reverify_after_secs` ago, the device is still
    /// instance I, and the revisions after R only add, change or remove peers (no route
    /// through the link among them), then the plan is made from those revisions alone —
    /// the touched peers as they were at R against the same peers at the head — without
    /// loading the server's other peers or reading the device. Every delta acknowledged:
    /// the head is recorded as applied (same instance and verification time). `None`
    /// whenever any of that does not hold, or the delta is empty (an apply with nothing
    /// to do reads the host, which is how drift is repaired), or a delta failed: the
    /// caller takes the full path, which reads the device.
    async fn apply_from_log(
        &self,
        p: &Principal,
        server: ServerId,
        host: &Host,
    ) -> Result<Option<ApplyReport>> {
        self.authorize(p, Resource::Server, Action::Apply, Target::server(server.0))
            .await?;
        let Some(applied) = self.store().applied_state(server, &host.name).await? else {
            return Ok(None);
        };
        let Some(instance) = applied.instance else {
            return Ok(None);
        };
        if self.now() - applied.verified_at >= self.reverify_after() {
            return Ok(None);
        }
        let Some((srv, head)) = self.store().load_server_settings(server).await? else {
            return Ok(None);
        };
        let behind = head.0.saturating_sub(applied.revision.0);
        if behind == 0 || behind > MAX_LOG_DELTA || !srv.active {
            return Ok(None);
        }
        if instance_of(host, &srv.interface).await != Some(instance) {
            return Ok(None);
        }
        let revs = self
            .store()
            .revisions(server, applied.revision, behind)
            .await?;
        self.check_revisions(server, applied.revision, &revs)
            .await?;
        if revs.last().map(|r| r.revision) != Some(head) {
            return Ok(None);
        }
        let Some((was, now)) = touched_peers(&revs) else {
            return Ok(None);
        };
        let brings_routes =
            |p: &Peer| p.delegated_prefix.is_some() || !p.extra_allowed_ips.is_empty();
        if was.values().chain(now.values()).any(brings_routes) {
            return Ok(None);
        }
        let removed: Vec<(PublicKey, PeerName)> = was
            .values()
            .filter(|b| now.get(&b.id).is_none_or(|a| a.public_key != b.public_key))
            .map(|b| (b.public_key, b.name.clone()))
            .collect();
        let mut opened = crate::reconcile::OpenedSecrets::default();
        let at = |peers: BTreeMap<PeerId, Peer>, revision| ServerState {
            server: srv.clone(),
            peers,
            revision,
        };
        let desired = desired_host_with(&at(now, head), self.sealer(), removed, &mut opened)?;
        let before = desired_host_with(&at(was, applied.revision), self.sealer(), [], &mut opened)?;
        // The device as it was verified, for the touched peers: what they were at R.
        let live = DeviceState {
            private_key: Some(desired.private_key.clone()),
            public_key: Some(desired.public_key),
            listen_port: desired.listen_port,
            fwmark: desired.fwmark,
            peers: before
                .peers
                .values()
                .map(|d| (d.public_key, held_peer(d)))
                .collect(),
        };
        let link = LinkState {
            up: true,
            mtu: desired.mtu,
            addresses: desired.addresses.clone(),
            routes: desired.routes.clone(),
        };
        let pl = plan_for(&desired, Some(&live), Some(&link), host, false);
        if pl.is_empty() || pl.create_device || pl.delete_device || !pl.link.is_empty() {
            return Ok(None);
        }
        let key = (server, host.name.clone());
        self.forget_snapshot(&key);
        let errors = execute(host, &srv.interface, &pl).await;
        if !errors.is_empty() {
            self.distrust_device(server, &host.name, Some(applied.revision))
                .await;
            tracing::debug!(interface = %srv.interface, errors = errors.len(), "a delta from the log failed; reading the device");
            return Ok(None);
        }
        tracing::debug!(interface = %srv.interface, from = %applied.revision, to = %head, items = pl.items.len(), "applied from the log; not read back");
        let state = AppliedState {
            revision: head,
            instance: Some(instance),
            verified_at: applied.verified_at,
        };
        self.store()
            .set_applied_state(server, &host.name, &state)
            .await?;
        let report = ApplyReport::acknowledged(pl, errors);
        self.audit_apply(p, server, head, &host.name, &report).await;
        Ok(Some(report))
    }

    /// Drop a host's snapshot (before changing the host).
    fn forget_snapshot(&self, key: &HostKey) {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    /// Keep what a host holds after an apply converged there (read back, or known from
    /// the backends' acknowledgement).
    fn remember_snapshot(&self, key: HostKey, snapshot: LiveSnapshot) {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, snapshot);
    }

    /// [`super::ManagerConfig::reverify_after_secs`].
    fn reverify_after(&self) -> time::Duration {
        time::Duration::seconds(
            i64::try_from(self.config.reverify_after_secs).unwrap_or(i64::MAX / 2),
        )
    }

    /// Load what the reconciler needs: the server's desired state (from the manager's
    /// cache) with the keys of peers removed since the last revision `host` applied, and
    /// that revision.
    async fn desired_for(
        &self,
        p: &Principal,
        server: ServerId,
        host: &Host,
        action: Action,
    ) -> Result<(DesiredHost, Option<RevisionNo>)> {
        self.authorize(p, Resource::Server, action, Target::server(server.0))
            .await?;
        let applied = self.store().applied(server, &host.name).await?;
        // From the manager's cached state (validated against the store's head), not a
        // fresh load of every peer.
        let mut desired = self
            .with_cached(server, |c| {
                let kept = c
                    .desired
                    .as_ref()
                    .filter(|d| d.revision == c.state.revision)
                    .cloned();
                if let Some(d) = kept {
                    return Ok(d);
                }
                let d = desired_host_with(&c.state, self.sealer(), [], &mut c.opened)?;
                c.desired = Some(d.clone());
                Ok(d)
            })
            .await?;
        // The peers removed (or re-keyed) after the applied revision, up to exactly the
        // revision of the desired state: read after it, so that a change another process
        // commits in between is either in both or in neither (read before it, a removal
        // could be missing here while the desired state already lacks the peer, which
        // would then be left on the device as unmanaged, and the apply recorded past it).
        let since = applied.unwrap_or(RevisionNo::NONE);
        let mut removed = Vec::new();
        let count = desired.revision.0.saturating_sub(since.0);
        if count > 0 {
            for rec in self.store().revisions(server, since, count).await? {
                if rec.revision > desired.revision {
                    break;
                }
                for ch in &rec.changes {
                    match ch {
                        Change::PeerRemoved { peer } => {
                            removed.push((peer.public_key, peer.name.clone()));
                        }
                        Change::PeerUpdated { before, .. } => {
                            removed.push((before.public_key, before.name.clone()));
                        }
                        _ => {}
                    }
                }
            }
        }
        let own = desired.public_key;
        desired.removed = removed.into_iter().filter(|(k, _)| *k != own).collect();
        Ok((desired, applied))
    }

    /// The plan that [`Manager::apply`] would execute now. It shows every peer of the
    /// device, so it needs `server:read` and `peer:read` on every peer of the server
    /// (not only one's own): operators, auditors and administrators, not users.
    pub async fn plan(&self, p: &Principal, server: ServerId, host: &Host) -> Result<Plan> {
        self.authorize(p, Resource::Server, Action::Read, Target::server(server.0))
            .await?;
        self.authorize_elevated(p, Resource::Peer, Action::Read, Target::server(server.0))
            .await?;
        let (desired, _) = self.desired_for(p, server, host, Action::Read).await?;
        let (dev, link) = read_host(host, &desired.interface).await?;
        Ok(plan_for(&desired, dev.as_ref(), link.as_ref(), host, false))
    }

    /// Converge the live interface on `host` toward the server's head revision
    /// (needs `server:apply`). Executes the plan, verifies it (see [`Verify`]), and
    /// records the revision as applied on `host` only when nothing is left. Audited.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::sync::Arc;
    /// use wgm_core::backend::MemoryWireGuard;
    /// use wgm_core::manager::{ApplyOptions, Host, Manager, NewPeer, NewServer};
    /// use wgm_core::names::{InterfaceName, PeerName, ServerName};
    /// use wgm_core::net::ListenPort;
    /// use wgm_core::seal::{MasterKey, Sealer};
    /// use wgm_core::store::MemoryStore;
    ///
    /// let (m, local) = Manager::builder(Arc::new(MemoryStore::new()), Sealer::new(MasterKey::generate()))
    ///     .build_with_local_admin();
    /// let admin = local.principal("root");
    /// let s = m.create_server(&admin, NewServer::new(ServerName::new("s").unwrap(),
    ///     InterfaceName::new("wg0").unwrap(), ListenPort::new(51820).unwrap())).await.unwrap();
    /// m.add_peer(&admin, s.id, NewPeer::new(PeerName::new("a").unwrap())).await.unwrap();
    /// let wg = Arc::new(MemoryWireGuard::new());
    /// let host = Host::new("h1", wg.clone(), Some(Arc::new(wg.network())));
    /// let report = m.apply(&admin, s.id, &host, ApplyOptions::default()).await.unwrap();
    /// assert!(report.converged);
    /// // Nothing left to do: the next plan is empty.
    /// assert!(m.plan(&admin, s.id, &host).await.unwrap().is_empty());
    /// # });
    /// ```
    ///
    /// With a firewall backend on the host ([`Host::with_firewall`]) the server's
    /// firewall is converged after the device: read in full, planned
    /// ([`plan_firewall`]), applied as one atomic delta and read back, so drift is
    /// repaired on every apply; [`ApplyReport::firewall`] says what happened, and the
    /// apply converged only if the firewall did too. An invalid desired firewall (two
    /// peers with one firewall tag) is refused before anything is changed.
    pub async fn apply(
        &self,
        p: &Principal,
        server: ServerId,
        host: &Host,
        opts: ApplyOptions,
    ) -> Result<ApplyReport> {
        let Some(fw) = &host.firewall else {
            return self.apply_device(p, server, host, opts).await;
        };
        self.authorize(p, Resource::Server, Action::Apply, Target::server(server.0))
            .await?;
        let (desired, names) = self.desired_firewall(server).await?;
        let mut report = self.apply_device(p, server, host, opts).await?;
        let outcome =
            converge_firewall(fw.as_ref(), desired.as_ref(), &names, opts.dry_run).await?;
        report.converged = report.converged && outcome.converged;
        report.firewall = Some(outcome);
        Ok(report)
    }

    /// The firewall part of what [`Manager::apply`] would do now on `host` (`None` when
    /// the host has no firewall backend). Needs what [`Manager::plan`] needs.
    pub async fn firewall_plan(
        &self,
        p: &Principal,
        server: ServerId,
        host: &Host,
    ) -> Result<Option<FirewallPlan>> {
        self.authorize(p, Resource::Server, Action::Read, Target::server(server.0))
            .await?;
        self.authorize_elevated(p, Resource::Peer, Action::Read, Target::server(server.0))
            .await?;
        let Some(fw) = &host.firewall else {
            return Ok(None);
        };
        let (desired, names) = self.desired_firewall(server).await?;
        let iface = desired
            .as_ref()
            .map_or_else(|| names.interface.clone(), |d| d.interface.clone());
        let live = fw.read_firewall(&iface).await?;
        Ok(Some(match desired {
            Some(d) => FirewallPlan::of(&d, live.as_ref(), &names.peers),
            None => removal_plan(live.as_ref()),
        }))
    }

    /// The server's desired firewall (`None`: the server is inactive, so its firewall
    /// goes), validated, and its peers' names by key for reports.
    async fn desired_firewall(
        &self,
        server: ServerId,
    ) -> Result<(Option<FirewallState>, FirewallNames)> {
        let now = u64::try_from(self.now().unix_timestamp()).unwrap_or(0);
        let (desired, names) = self
            .read_server(server, |st| {
                let names = FirewallNames {
                    interface: st.server.interface.clone(),
                    peers: st
                        .peers
                        .values()
                        .map(|x| (x.public_key, x.name.to_string()))
                        .collect(),
                };
                let desired = st
                    .server
                    .active
                    .then(|| crate::reconcile::desired_firewall(st, now));
                Ok((desired, names))
            })
            .await?;
        if let Some(d) = &desired {
            d.validate()?;
        }
        Ok((desired, names))
    }

    async fn apply_device(
        &self,
        p: &Principal,
        server: ServerId,
        host: &Host,
        opts: ApplyOptions,
    ) -> Result<ApplyReport> {
        let key = (server, host.name.clone());
        if !opts.dry_run
            && !opts.full_resync
            && opts.verify == Verify::Auto
            && !self.has_snapshot(&key)
        {
            if let Some(report) = self.apply_from_log(p, server, host).await? {
                return Ok(report);
            }
        }
        let (desired, applied) = self.desired_for(p, server, host, Action::Apply).await?;
        let iface = &desired.interface;
        let live = self.read_live(host, iface, &key, applied, opts).await?;
        let pl = plan_for(
            &desired,
            live.device.as_ref(),
            live.link.as_ref(),
            host,
            opts.full_resync,
        );
        tracing::debug!(interface = %iface, revision = %desired.revision, items = pl.items.len(), from_snapshot = live.from_snapshot, "planned");
        tracing::trace!(device = ?pl.device, link = ?pl.link, "plan deltas");
        if opts.dry_run {
            return Ok(ApplyReport::dry_run(pl));
        }
        self.forget_snapshot(&key);
        let errors = execute(host, iface, &pl).await;
        if !errors.is_empty() {
            self.distrust_device(server, &host.name, applied).await;
        }
        let planned_from = if live.from_snapshot {
            PlannedFrom::Kept {
                age: self.now() - live.read_at,
            }
        } else {
            PlannedFrom::Read
        };
        let ex = Execution {
            plan: &pl,
            failed: !errors.is_empty(),
            instance_known: live.instance.is_some(),
            planned_from,
            reverify_after: self.reverify_after(),
        };
        if opts.verify.trusts_acknowledgement(&ex) {
            // Every delta was acknowledged in full: the host holds what we planned from
            // with the deltas applied, by the backends' own semantics.
            if let Some((device, link)) = acknowledged_state(&pl, live.device, live.link) {
                tracing::debug!(interface = %iface, items = pl.items.len(), "acknowledged; not read back");
                let report = ApplyReport::acknowledged(pl, errors);
                let held = LiveSnapshot {
                    revision: desired.revision,
                    device,
                    link,
                    instance: live.instance,
                    read_at: live.read_at,
                };
                self.record_applied(p, key, &desired, held, &report).await?;
                return Ok(report);
            }
        }
        let (report, held) = self
            .verify_by_reading(host, &desired, pl, errors, live.from_snapshot)
            .await?;
        if report.converged {
            self.record_applied(p, key, &desired, held, &report).await?;
        } else {
            self.audit_apply(p, server, desired.revision, &host.name, &report)
                .await;
        }
        Ok(report)
    }

    /// The live state to plan from: what this manager verified on the host at the
    /// revision the store records as applied there, unless the device is not the one it
    /// verified (recreated, daemon restarted), or a full read. A dry run and a full
    /// resync always read.
    async fn read_live(
        &self,
        host: &Host,
        iface: &InterfaceName,
        key: &HostKey,
        applied: Option<RevisionNo>,
        opts: ApplyOptions,
    ) -> Result<Live> {
        let snapshot = if opts.full_resync || opts.dry_run {
            None
        } else {
            match self.live_snapshot(key, applied) {
                Some(s) if s.instance.is_some() => {
                    let now = instance_of(host, iface).await;
                    (now == s.instance).then_some(s)
                }
                // The backend cannot tell: plan from it, always verify by reading.
                other => other,
            }
        };
        if let Some(s) = snapshot {
            return Ok(Live {
                device: s.device,
                link: s.link,
                instance: s.instance,
                read_at: s.read_at,
                from_snapshot: true,
            });
        }
        let instance = instance_of(host, iface).await;
        let (device, link) = read_host(host, iface).await?;
        Ok(Live {
            device,
            link,
            instance,
            read_at: self.now(),
            from_snapshot: false,
        })
    }

    /// Verify an executed plan by reading the host back and planning again. When the
    /// plan was made from a kept state that turns out stale (something is left and
    /// nothing failed), converge from the fresh read once more and read again. Returns
    /// the report and what the host holds per the last read.
    async fn verify_by_reading(
        &self,
        host: &Host,
        desired: &DesiredHost,
        mut pl: Plan,
        mut errors: Vec<ApplyError>,
        from_snapshot: bool,
    ) -> Result<(ApplyReport, LiveSnapshot)> {
        let iface = &desired.interface;
        let (mut held, mut again) = self.reread_and_plan(host, desired).await?;
        if from_snapshot && !again.is_empty() && errors.is_empty() {
            tracing::debug!(interface = %iface, "live state changed since the last verified read; second pass");
            errors.extend(execute(host, iface, &again).await);
            let second: Vec<PlanItem> = again
                .items
                .iter()
                .filter(|i| !pl.items.contains(i))
                .cloned()
                .collect();
            pl.items.extend(second);
            (held, again) = self.reread_and_plan(host, desired).await?;
        }
        Ok((ApplyReport::judged(pl, errors, again), held))
    }

    /// Read the host in full and plan again (never a full resync).
    async fn reread_and_plan(
        &self,
        host: &Host,
        desired: &DesiredHost,
    ) -> Result<(LiveSnapshot, Plan)> {
        let iface = &desired.interface;
        let instance = instance_of(host, iface).await;
        let (device, link) = read_host(host, iface).await?;
        let read_at = self.now();
        let again = plan_for(desired, device.as_ref(), link.as_ref(), host, false);
        let held = LiveSnapshot {
            revision: desired.revision,
            device,
            link,
            instance,
            read_at,
        };
        Ok((held, again))
    }

    /// The host converged at the desired revision: record it as applied there, keep
    /// what the host now holds for the next apply, audit.
    async fn record_applied(
        &self,
        p: &Principal,
        key: HostKey,
        desired: &DesiredHost,
        snapshot: LiveSnapshot,
        report: &ApplyReport,
    ) -> Result<()> {
        let state = AppliedState {
            revision: desired.revision,
            instance: snapshot.instance,
            verified_at: snapshot.read_at,
        };
        self.store()
            .set_applied_state(desired.server_id, &key.1, &state)
            .await?;
        let host = key.1.clone();
        self.remember_snapshot(key, snapshot);
        self.audit_apply(p, desired.server_id, desired.revision, &host, report)
            .await;
        Ok(())
    }

    async fn audit_apply(
        &self,
        p: &Principal,
        server: ServerId,
        rev: RevisionNo,
        host: &str,
        report: &ApplyReport,
    ) {
        let details = json!({
            "host": host,
            "revision": rev.0,
            "converged": report.converged,
            "items": report.plan.items.len(),
            "errors": report.errors,
        });
        if let Err(e) = self
            .audit_only(
                p,
                crate::audit::AuditAction::ServerApply,
                format!("server/{server}"),
                Some(server),
                details,
            )
            .await
        {
            tracing::warn!(error = %e, "could not audit an apply");
        }
    }
}

/// The most revisions [`Manager::apply`] plans from without reading the device; more
/// behind than that, reading the device is cheaper than replaying the log.
const MAX_LOG_DELTA: u64 = 1024;

/// The peers `revs` touch, as they were before the first (absent: added since) and as
/// they are after the last (absent: removed since); `None` when a revision changes
/// anything but peers (the server's settings, its deletion).
fn touched_peers(
    revs: &[RevisionRecord],
) -> Option<(BTreeMap<PeerId, Peer>, BTreeMap<PeerId, Peer>)> {
    let mut was: BTreeMap<PeerId, Option<Peer>> = BTreeMap::new();
    let mut now: BTreeMap<PeerId, Option<Peer>> = BTreeMap::new();
    for rec in revs {
        for ch in &rec.changes {
            match ch {
                Change::PeerAdded { peer } => {
                    was.entry(peer.id).or_insert(None);
                    now.insert(peer.id, Some((**peer).clone()));
                }
                Change::PeerRemoved { peer } => {
                    was.entry(peer.id).or_insert_with(|| Some((**peer).clone()));
                    now.insert(peer.id, None);
                }
                Change::PeerUpdated { before, after } => {
                    was.entry(before.id)
                        .or_insert_with(|| Some((**before).clone()));
                    now.insert(after.id, Some((**after).clone()));
                }
                // Bookkeeping of the server that the host does not see (the quarantine
                // of a removed peer's addresses, the update time).
                Change::ServerUpdated { before, after } if same_on_host(before, after) => {}
                _ => return None,
            }
        }
    }
    let keep = |m: BTreeMap<PeerId, Option<Peer>>| -> BTreeMap<PeerId, Peer> {
        m.into_iter()
            .filter_map(|(id, p)| p.map(|p| (id, p)))
            .collect()
    };
    Some((keep(was), keep(now)))
}

/// Whether two versions of a server are the same to its host: the device's settings
/// and the link's (everything `desired_host` reads of the server itself).
fn same_on_host(a: &crate::model::Server, b: &crate::model::Server) -> bool {
    a.id == b.id
        && a.interface == b.interface
        && a.listen_port == b.listen_port
        && a.private_key == b.private_key
        && a.public_key == b.public_key
        && a.fwmark == b.fwmark
        && a.mtu == b.mtu
        && a.active == b.active
        && a.interface_addresses() == b.interface_addresses()
}

/// A peer as a device holds it after it was applied as `d`.
fn held_peer(d: &crate::reconcile::DesiredPeer) -> PeerState {
    PeerState {
        preshared_key: d.preshared_key.clone(),
        endpoint: d.endpoint,
        allowed_ips: d.allowed_ips.clone(),
        persistent_keepalive: d.keepalive,
        ..PeerState::new(d.public_key)
    }
}

/// The live state an apply plans from.
struct Live {
    device: Option<DeviceState>,
    link: Option<LinkState>,
    /// The device's incarnation when it was read (or kept).
    instance: Option<u64>,
    /// When the host was last read in full.
    read_at: OffsetDateTime,
    /// Whether this is what the manager kept from an earlier apply (not a read of this one).
    from_snapshot: bool,
}

/// The plan for `host`: its drift policy and its backend's capabilities, without link
/// items when the host has no network backend.
fn plan_for(
    desired: &DesiredHost,
    device: Option<&DeviceState>,
    link: Option<&LinkState>,
    host: &Host,
    full_resync: bool,
) -> Plan {
    let opts = PlanOptions {
        drift: host.drift,
        remove_allowed_ip: host.wireguard.capabilities().remove_allowed_ip,
        full_resync,
    };
    let mut pl = plan(desired, device, link, opts);
    if host.network.is_none() {
        strip_link(&mut pl);
    }
    pl
}

/// Without a network backend, the link is not ours to change: drop link items.
fn strip_link(pl: &mut Plan) {
    pl.link = LinkDelta::default();
    pl.items.retain(|i| {
        !matches!(
            i,
            PlanItem::SetMtu { .. }
                | PlanItem::SetUp
                | PlanItem::AddAddress { .. }
                | PlanItem::RemoveAddress { .. }
                | PlanItem::AddRoute { .. }
                | PlanItem::RemoveRoute { .. }
        )
    });
}

/// Whether `item` (from the executed plan) is still pending in `remaining`.
fn item_pending(item: &PlanItem, remaining: &[PlanItem]) -> bool {
    let key = |i: &PlanItem| -> String {
        match i {
            PlanItem::AddPeer { public_key, .. }
            | PlanItem::UpdatePeer { public_key, .. }
            | PlanItem::RemovePeer { public_key, .. }
            | PlanItem::Unmanaged { public_key, .. } => format!("peer:{public_key}"),
            PlanItem::AddAddress { address } | PlanItem::RemoveAddress { address } => {
                format!("addr:{address}")
            }
            PlanItem::AddRoute { route } | PlanItem::RemoveRoute { route } => {
                format!("route:{route}")
            }
            other => format!("{:?}", std::mem::discriminant(other)),
        }
    };
    let k = key(item);
    remaining.iter().any(|r| key(r) == k)
}

/// The device's incarnation, or `None` when there is none or it cannot be told (a
/// failure to tell only costs a full read).
async fn instance_of(host: &Host, iface: &InterfaceName) -> Option<u64> {
    match host.wireguard.device_instance(iface).await {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!(interface = %iface, error = %e, "could not tell the device's instance");
            None
        }
    }
}

/// Read a host's device and link.
async fn read_host(
    host: &Host,
    iface: &InterfaceName,
) -> Result<(Option<DeviceState>, Option<LinkState>)> {
    let d = host.wireguard.read_device(iface).await?;
    let l = match &host.network {
        Some(n) => n.read_link(iface).await?,
        None => None,
    };
    Ok((d, l))
}

/// Execute a plan's deltas; returns the backends' errors (the caller re-reads to see
/// what landed: neither the kernel nor UAPI is atomic).
async fn execute(host: &Host, iface: &InterfaceName, pl: &Plan) -> Vec<ApplyError> {
    let mut errors = Vec::new();
    if pl.delete_device {
        if let Err(e) = host.wireguard.delete_device(iface).await {
            errors.push(ApplyError::DeleteDevice {
                interface: iface.clone(),
                error: Arc::new(e),
            });
        }
        return errors;
    }
    if pl.create_device {
        if let Err(e) = host.wireguard.create_device(iface).await {
            errors.push(ApplyError::CreateDevice {
                interface: iface.clone(),
                error: Arc::new(e),
            });
        }
    }
    if !pl.device.is_empty() {
        if let Err(e) = host.wireguard.apply_device(iface, &pl.device).await {
            tracing::warn!(interface = %iface, error = %e, "device apply failed part-way; re-reading");
            errors.push(ApplyError::ApplyDevice {
                interface: iface.clone(),
                error: Arc::new(e),
            });
        }
    }
    if let Some(net) = &host.network {
        if !pl.link.is_empty() {
            // After the device exists: its link comes with it.
            if let Err(e) = net.apply_link(iface, &pl.link).await {
                errors.push(ApplyError::ApplyLink {
                    interface: iface.clone(),
                    error: Arc::new(e),
                });
            }
        }
    }
    errors
}
/// A server's interface and its peers' names by key, for firewall reports.
struct FirewallNames {
    interface: InterfaceName,
    peers: BTreeMap<PublicKey, String>,
}

/// The plan for an inactive server: remove its firewall if anything of it exists.
fn removal_plan(live: Option<&LiveFirewall>) -> FirewallPlan {
    FirewallPlan {
        delta: FirewallDelta::default(),
        items: live
            .map(|_| vec!["remove the firewall (the server is inactive)".to_owned()])
            .unwrap_or_default(),
    }
}

/// Converge one server's firewall: read, plan, apply atomically, read back and plan
/// again. `desired: None` removes the server's firewall. Errors of the apply itself are
/// reported in the outcome (nothing of a failed delta landed); a failed read is an
/// error of the whole call.
async fn converge_firewall(
    fw: &dyn FirewallBackend,
    desired: Option<&FirewallState>,
    names: &FirewallNames,
    dry_run: bool,
) -> Result<FirewallOutcome> {
    let iface = &names.interface;
    let live = fw.read_firewall(iface).await?;
    let Some(desired) = desired else {
        let plan = removal_plan(live.as_ref());
        if dry_run || plan.items.is_empty() {
            let converged = plan.items.is_empty();
            return Ok(FirewallOutcome {
                remaining: plan.items.clone(),
                plan,
                executed: false,
                error: None,
                converged,
            });
        }
        let error = fw.remove_firewall(iface).await.err().map(Arc::new);
        let again = removal_plan(fw.read_firewall(iface).await?.as_ref());
        return Ok(FirewallOutcome {
            plan,
            executed: true,
            error,
            converged: again.items.is_empty(),
            remaining: again.items,
        });
    };
    let plan = FirewallPlan::of(desired, live.as_ref(), &names.peers);
    if dry_run {
        return Ok(FirewallOutcome {
            remaining: plan.items.clone(),
            plan,
            executed: false,
            error: None,
            converged: false,
        });
    }
    if plan.is_empty() {
        return Ok(FirewallOutcome {
            plan,
            executed: false,
            error: None,
            converged: true,
            remaining: Vec::new(),
        });
    }
    let error = fw
        .apply_firewall(iface, &plan.delta)
        .await
        .err()
        .map(Arc::new);
    if let Some(e) = &error {
        tracing::warn!(interface = %iface, error = %e, "the firewall delta failed");
    }
    let again = FirewallPlan::of(
        desired,
        fw.read_firewall(iface).await?.as_ref(),
        &names.peers,
    );
    Ok(FirewallOutcome {
        plan,
        executed: true,
        error,
        converged: again.is_empty(),
        remaining: again.items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryWireGuard;
    use crate::manager::{NewPeer, PeerUpdate};
    use crate::model::PeerId;
    use crate::names::PeerName;
    use crate::net::{Endpoint, Keepalive};
    use crate::reconcile::desired_host;
    use futures::executor::block_on;
    use rand::{Rng, SeedableRng};

    /// The desired state the manager keeps following changes equals one derived afresh.
    fn assert_follows(m: &Manager, id: ServerId) {
        block_on(m.with_cached(id, |c| {
            let Some(kept) = c.desired.clone() else {
                return Ok(());
            };
            let fresh = desired_host(&c.state, m.sealer(), [])?;
            assert_eq!(kept.revision, fresh.revision);
            assert_eq!(kept.public_key, fresh.public_key);
            assert_eq!(*kept.peers, *fresh.peers);
            assert_eq!(*kept.known_keys, *fresh.known_keys);
            assert_eq!(*kept.known_names, *fresh.known_names);
            assert_eq!(kept.routes, fresh.routes);
            assert_eq!(kept.unresolved_endpoints, fresh.unresolved_endpoints);
            assert_eq!(kept.addresses, fresh.addresses);
            assert_eq!(
                (kept.listen_port, kept.fwmark, kept.mtu, kept.active),
                (fresh.listen_port, fresh.fwmark, fresh.mtu, fresh.active)
            );
            Ok(())
        }))
        .unwrap();
    }

    #[test]
    fn the_kept_desired_state_follows_every_peer_change() {
        let (m, admin, id) = crate::manager::tests::dual_stack_server(Some(0));
        let wg = Arc::new(MemoryWireGuard::new());
        let host = Host::new("h", wg, None);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut alive: Vec<PeerId> = Vec::new();
        let mut followed = 0;
        for step in 0..160u32 {
            // Keep the kept state alive: a plan derives it when a change was not
            // followable (server settings, rollback of those).
            block_on(m.plan(&admin, id, &host)).unwrap();
            let op = rng.gen_range(0..9);
            let pick = |rng: &mut rand::rngs::StdRng, alive: &[PeerId]| {
                alive[rng.gen_range(0..alive.len())]
            };
            match op {
                0..=2 => {
                    let mut np = NewPeer::new(PeerName::new(format!("p{step}")).unwrap());
                    match rng.gen_range(0..4) {
                        0 => {
                            np.extra_allowed_ips =
                                vec![format!("10.{}.{step}.0/24", 100 + step / 250)
                                    .parse()
                                    .unwrap()];
                        }
                        1 => np.prefix = crate::manager::AddrRequest::Auto,
                        2 => {
                            np.endpoint = Some(Endpoint::Host {
                                host: format!("h{step}.example.org"),
                                port: 51820,
                            });
                        }
                        _ => {
                            np.endpoint =
                                Some(Endpoint::Addr("[2001:db8::1]:51820".parse().unwrap()));
                            np.keepalive = Some(Keepalive::new(25).unwrap());
                        }
                    }
                    np.preshared_key = rng.gen_bool(0.7);
                    alive.push(block_on(m.add_peer(&admin, id, np)).unwrap().id);
                }
                3 if !alive.is_empty() => {
                    let peer = pick(&mut rng, &alive);
                    let up = PeerUpdate {
                        enabled: Some(rng.gen_bool(0.5)),
                        ..PeerUpdate::default()
                    };
                    let _ = block_on(m.update_peer(&admin, id, peer, up));
                }
                4 if !alive.is_empty() => {
                    let peer = pick(&mut rng, &alive);
                    let up = PeerUpdate {
                        extra_allowed_ips: Some(if rng.gen_bool(0.5) {
                            Vec::new()
                        } else {
                            vec![format!("fd90:{step:x}::/64").parse().unwrap()]
                        }),
                        endpoint: Some(if rng.gen_bool(0.5) {
                            None
                        } else {
                            Some(Endpoint::Host {
                                host: format!("x{step}.example.org"),
                                port: 1,
                            })
                        }),
                        ..PeerUpdate::default()
                    };
                    let _ = block_on(m.update_peer(&admin, id, peer, up));
                }
                5 if !alive.is_empty() => {
                    let peer = pick(&mut rng, &alive);
                    block_on(m.rotate_peer_psk(&admin, id, peer)).unwrap();
                }
                6 if !alive.is_empty() => {
                    let peer = pick(&mut rng, &alive);
                    let _ = block_on(m.rotate_peer_key(&admin, id, peer));
                }
                7 if !alive.is_empty() => {
                    let i = rng.gen_range(0..alive.len());
                    block_on(m.remove_peer(&admin, id, alive.swap_remove(i))).unwrap();
                }
                8 if step % 5 == 0 => {
                    // A rollback a few revisions back: peers come and go in one revision.
                    let head = block_on(m.get_server(&admin, id)).unwrap().revision;
                    if head.0 > 4
                        && block_on(m.rollback(&admin, id, RevisionNo(head.0 - 3))).is_ok()
                    {
                        alive = block_on(m.list_peers(&admin, id))
                            .unwrap()
                            .into_iter()
                            .map(|p| p.id)
                            .collect();
                    }
                }
                _ => {}
            }
            if block_on(m.with_cached(id, |c| Ok(c.desired.is_some()))).unwrap() {
                followed += 1;
            }
            assert_follows(&m, id);
        }
        assert!(
            followed > 100,
            "the kept state was followed {followed} times"
        );
    }
}
