//! Firewall policy: a server's [`ServerPolicy`] and each peer's [`PeerPolicy`], changed
//! as revisions of their own (so history, diff and rollback cover them) under the
//! `server:policy` and `peer:policy` permissions.

use serde_json::json;

use super::{Cached, Manager, Mutation, PeerView, ServerView};
use crate::audit::AuditAction;
use crate::model::{Change, PeerId, ServerId};
use crate::policy::{PeerPolicy, ServerPolicy};
use crate::rbac::{Action, Principal, Resource, Target};
use crate::{Error, Result};

impl Manager {
    /// Replace a server's firewall policy (needs `server:policy`; one revision). The
    /// firewall changes on the next apply to a host with a firewall backend.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::sync::Arc;
    /// use wgm_core::manager::{Manager, NewServer};
    /// use wgm_core::names::{InterfaceName, ServerName};
    /// use wgm_core::net::ListenPort;
    /// use wgm_core::policy::{ServerPolicy, Verdict};
    /// use wgm_core::seal::{MasterKey, Sealer};
    /// use wgm_core::store::MemoryStore;
    ///
    /// let (m, local) = Manager::builder(Arc::new(MemoryStore::new()), Sealer::new(MasterKey::generate()))
    ///     .build_with_local_admin();
    /// let admin = local.principal("root");
    /// let s = m.create_server(&admin, NewServer::new(ServerName::new("s").unwrap(),
    ///     InterfaceName::new("wg0").unwrap(), ListenPort::new(51820).unwrap())).await.unwrap();
    /// let policy = ServerPolicy { default_verdict: Verdict::Deny, ..ServerPolicy::default() };
    /// let v = m.set_server_policy(&admin, s.id, policy.clone()).await.unwrap();
    /// assert_eq!(v.policy, policy);
    /// assert_eq!(v.revision.0, 2);
    /// # });
    /// ```
    pub async fn set_server_policy(
        &self,
        p: &Principal,
        id: ServerId,
        policy: ServerPolicy,
    ) -> Result<ServerView> {
        self.authorize(p, Resource::Server, Action::Read, Target::server(id.0))
            .await?;
        self.authorize(p, Resource::Server, Action::Policy, Target::server(id.0))
            .await?;
        self.mutate(p, id, |c: &mut Cached, now| {
            let before = c.state.server.clone();
            if before.policy == policy {
                return Err(Error::invalid(
                    "server.policy",
                    "the server already has this policy",
                ));
            }
            let mut after = before.clone();
            after.policy = policy.clone();
            after.updated_at = now;
            Ok(Mutation {
                summary: format!("set the firewall policy of server {}", after.name),
                action: AuditAction::ServerPolicy,
                object: format!("server/{id}"),
                details: json!({ "policy": &policy }),
                changes: vec![Change::ServerUpdated {
                    before: Box::new(before),
                    after: Box::new(after),
                }],
                output: (),
            })
        })
        .await?;
        self.get_server(p, id).await
    }

    /// Replace a peer's firewall policy (needs `peer:policy`, which the built-in `user`
    /// role does not hold even on its own peers; one revision). The allow list is
    /// checked first ([`PeerPolicy::validate`], errors naming `peer.policy.allow[i]`).
    /// The firewall changes on the next apply to a host with a firewall backend.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::sync::Arc;
    /// use wgm_core::manager::{Manager, NewPeer, NewServer};
    /// use wgm_core::names::{InterfaceName, PeerName, ServerName};
    /// use wgm_core::net::ListenPort;
    /// use wgm_core::policy::PeerPolicy;
    /// use wgm_core::seal::{MasterKey, Sealer};
    /// use wgm_core::store::MemoryStore;
    ///
    /// let (m, local) = Manager::builder(Arc::new(MemoryStore::new()), Sealer::new(MasterKey::generate()))
    ///     .build_with_local_admin();
    /// let admin = local.principal("root");
    /// let s = m.create_server(&admin, NewServer::new(ServerName::new("s").unwrap(),
    ///     InterfaceName::new("wg0").unwrap(), ListenPort::new(51820).unwrap())).await.unwrap();
    /// let a = m.add_peer(&admin, s.id, NewPeer::new(PeerName::new("a").unwrap())).await.unwrap();
    /// let policy = PeerPolicy { rate_up: Some("10mbit".parse().unwrap()), ..PeerPolicy::default() };
    /// let v = m.set_peer_policy(&admin, s.id, a.id, policy.clone()).await.unwrap();
    /// assert_eq!(v.policy, policy);
    /// let bad = PeerPolicy { allow: Some(vec!["10.0.0.0/8".parse().unwrap(), "10.1.0.0/16".parse().unwrap()]), ..PeerPolicy::default() };
    /// let e = m.set_peer_policy(&admin, s.id, a.id, bad).await.unwrap_err();
    /// assert!(e.to_string().contains("peer.policy.allow[1]"));
    /// # });
    /// ```
    pub async fn set_peer_policy(
        &self,
        p: &Principal,
        server: ServerId,
        peer: PeerId,
        policy: PeerPolicy,
    ) -> Result<PeerView> {
        self.authorize_peer(p, server, peer, Action::Policy).await?;
        policy.validate("peer.policy")?;
        self.change_peer(
            p,
            server,
            peer,
            (Action::Policy, true),
            AuditAction::PeerPolicy,
            |_, after, _, _| {
                after.policy = policy.clone();
                Ok(Vec::new())
            },
        )
        .await
    }
}
