//! What a per-host agent needs of the manager: the change feed as the caller may see
//! it, the servers assigned to a host, the lease that makes one agent the only one to
//! apply a server on a host, and the reports it writes back for `status` anywhere.

use futures::stream::BoxStream;
use futures::StreamExt;

use super::Manager;
use crate::model::{HostReport, Lease, LeaseRequest, Page, ServerId, ServerSummary};
use crate::names::HostName;
use crate::rbac::{Action, Principal, Resource, Target};
use crate::store::FeedEvent;
use crate::Result;

impl Manager {
    /// Wake-ups after commits to the servers `p` may read ([`crate::store::ChangeFeed`]):
    /// events of other servers are left out; [`FeedEvent::Missed`] is passed on. Follow
    /// one server exactly with [`crate::store::Follower`] semantics by reading its
    /// history from a cursor when woken.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::sync::Arc;
    /// use futures::StreamExt;
    /// use wgm_core::manager::{Manager, NewServer};
    /// use wgm_core::names::{InterfaceName, ServerName};
    /// use wgm_core::net::ListenPort;
    /// use wgm_core::seal::{MasterKey, Sealer};
    /// use wgm_core::store::{FeedEvent, MemoryStore};
    /// let (m, local) = Manager::builder(Arc::new(MemoryStore::new()), Sealer::new(MasterKey::generate()))
    ///     .build_with_local_admin();
    /// let admin = local.principal("root");
    /// let mut feed = m.watch(&admin).await.unwrap();
    /// let s = m.create_server(&admin, NewServer::new(ServerName::new("s").unwrap(),
    ///     InterfaceName::new("wg0").unwrap(), ListenPort::new(51820).unwrap())).await.unwrap();
    /// assert_eq!(feed.next().await, Some(FeedEvent::Committed { server: s.id, revision: s.revision }));
    /// # });
    /// ```
    ///
    /// # Errors
    ///
    /// The store cannot start its feed.
    pub async fn watch(&self, p: &Principal) -> Result<BoxStream<'static, FeedEvent>> {
        let events = self.store().watch().await?;
        let p = p.clone();
        Ok(events
            .filter(move |e| {
                let keep = match e {
                    FeedEvent::Missed => true,
                    FeedEvent::Committed { server, .. } => crate::rbac::authorize(
                        &p,
                        Resource::Server,
                        Action::Read,
                        Target::server(server.0),
                    )
                    .is_ok(),
                };
                futures::future::ready(keep)
            })
            .boxed())
    }

    /// The servers assigned to `host` ([`crate::model::Server::host`]) that `p` may
    /// read, ordered by name.
    pub async fn servers_on_host(
        &self,
        p: &Principal,
        host: &HostName,
    ) -> Result<Vec<ServerSummary>> {
        let mut all = self.list_servers(p, Page::ALL).await?;
        all.retain(|s| s.host.as_ref() == Some(host));
        Ok(all)
    }

    /// Take or renew the lease of `req.server_id` on `req.host` ([`Lease::decide`]);
    /// needs `server:apply`.
    ///
    /// # Errors
    ///
    /// `Conflict` naming the holder while another agent's lease runs; the store's.
    pub async fn acquire_lease(&self, p: &Principal, req: &LeaseRequest) -> Result<Lease> {
        self.authorize(
            p,
            Resource::Server,
            Action::Apply,
            Target::server(req.server_id.0),
        )
        .await?;
        self.store().acquire_lease(req).await
    }

    /// Give `lease` back (on a clean exit), so that the next agent need not wait for it
    /// to lapse; needs `server:apply`. Returns whether it was still held as given.
    pub async fn release_lease(&self, p: &Principal, lease: &Lease) -> Result<bool> {
        self.authorize(
            p,
            Resource::Server,
            Action::Apply,
            Target::server(lease.server_id.0),
        )
        .await?;
        self.store().release_lease(lease, self.now()).await
    }

    /// Store an agent's report of a server on its host; needs `server:apply`. Its text
    /// is shown in tables: `agent` (1 to 512 characters) and `error` (at most 1024) may
    /// hold no control characters.
    ///
    /// # Errors
    ///
    /// `InvalidInput` (`report.agent`, `report.error`) for text that breaks those rules;
    /// `Conflict` when a newer lease fences the report out (its writer lost the lease).
    pub async fn report_host(&self, p: &Principal, report: &HostReport) -> Result<()> {
        self.authorize(
            p,
            Resource::Server,
            Action::Apply,
            Target::server(report.server_id.0),
        )
        .await?;
        let bad = |s: &str, max: usize| s.chars().count() > max || s.chars().any(char::is_control);
        if report.agent.is_empty() || bad(&report.agent, 512) {
            return Err(crate::Error::invalid(
                "report.agent",
                "must be 1 to 512 characters without control characters",
            ));
        }
        if report.error.as_deref().is_some_and(|e| bad(e, 1024)) {
            return Err(crate::Error::invalid(
                "report.error",
                "must be at most 1024 characters without control characters",
            ));
        }
        self.store().put_host_report(report).await
    }

    /// What every host's agent last reported of a server, by host name. A report sums
    /// up the whole device (its peer count, the last error), so like
    /// [`Manager::plan`] it needs `server:read` and `peer:read` on every peer of the
    /// server: operators, auditors and administrators, not users. Nothing here touches a
    /// device: it is the news the agents wrote, with its time ([`HostReport::heartbeat`]).
    pub async fn host_reports(&self, p: &Principal, server: ServerId) -> Result<Vec<HostReport>> {
        self.authorize(p, Resource::Server, Action::Read, Target::server(server.0))
            .await?;
        self.authorize_elevated(p, Resource::Peer, Action::Read, Target::server(server.0))
            .await?;
        self.store().host_reports(server).await
    }
}
