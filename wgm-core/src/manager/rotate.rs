//! Master-key rotation: re-seal every secret under the sealer's current key.

use serde::Serialize;
use serde_json::json;

use super::{Manager, Mutation};
use crate::audit::AuditAction;
use crate::model::{Change, IdentityChange, Page};
use crate::rbac::{Action, Principal, Resource, Target};
use crate::seal::SecretKind;
use crate::Result;

/// What [`Manager::reseal_all`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ResealReport {
    /// Servers that got a re-sealing revision.
    pub servers: usize,
    /// Secrets re-sealed (server keys, peer keys, PSKs, TOTP seeds, the audit key).
    pub secrets: usize,
    /// Users whose TOTP seed was re-sealed.
    pub users: usize,
}

impl Manager {
    /// Re-seal every secret that is not sealed under the sealer's current master key.
    ///
    /// Rotate like this: build a manager with `Sealer::new(new_key).with_previous(old_key)`,
    /// call `reseal_all`, then drop the old key. Each server with something to re-seal
    /// gets one revision (audited as `secret.reseal`); users' TOTP seeds are re-sealed
    /// in one identity commit each; the store's audit key is re-sealed unchanged (so
    /// every audit link and revision MAC keeps verifying) with its bound, and audited. Secrets that open with none of the sealer's keys fail
    /// the call with [`crate::Error::Sealed`] before that server is changed. Idempotent: a
    /// second call re-seals nothing. Needs global `server:update` and `secret:export`.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::sync::Arc;
    /// use wgm_core::manager::{Manager, NewServer};
    /// use wgm_core::names::{InterfaceName, ServerName};
    /// use wgm_core::net::ListenPort;
    /// use wgm_core::seal::{MasterKey, Sealer};
    /// use wgm_core::store::{MemoryStore, Store};
    ///
    /// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    /// let old = MasterKey::generate();
    /// let (m, local) = Manager::builder(store.clone(), Sealer::new(MasterKey::from_bytes(*old.expose_bytes())))
    ///     .build_with_local_admin();
    /// let admin = local.principal("root");
    /// m.create_server(&admin, NewServer::new(ServerName::new("s").unwrap(), InterfaceName::new("wg0").unwrap(), ListenPort::new(51820).unwrap())).await.unwrap();
    /// let rotated = Manager::builder(store, Sealer::new(MasterKey::generate()).with_previous(old)).build();
    /// // The server's key and the store's audit key.
    /// assert_eq!(rotated.reseal_all(&admin).await.unwrap().secrets, 2);
    /// assert_eq!(rotated.reseal_all(&admin).await.unwrap().secrets, 0);
    /// # });
    /// ```
    pub async fn reseal_all(&self, p: &Principal) -> Result<ResealReport> {
        self.authorize(p, Resource::Server, Action::Update, Target::none())
            .await?;
        self.authorize(p, Resource::Secret, Action::Export, Target::none())
            .await?;
        let mut report = ResealReport::default();
        // The audit key first: every commit below needs it open.
        let key = self.audit_key().await?;
        if self.sealer.needs_reseal(&key.stored.sealed) {
            let resealed = key.stored.reseal(&self.sealer)?;
            self.store
                .reseal_audit_key(&key.stored.sealed, &resealed)
                .await?;
            self.recache_audit_key(resealed)?;
            self.audit_only(
                p,
                AuditAction::SecretReseal,
                "audit_key".to_owned(),
                None,
                json!({ "what": "audit_key", "key_id": self.sealer.current_key_id().to_string() }),
            )
            .await?;
            report.secrets += 1;
        }
        for s in self.store.list_servers(Page::ALL).await? {
            let id = s.id;
            let res = self
                .mutate_if_any(p, id, |c, now| {
                    let sealer = &self.sealer;
                    let mut changes = Vec::new();
                    let mut n = 0usize;
                    let srv = &c.state.server;
                    if sealer.needs_reseal(&srv.private_key) {
                        let mut after = srv.clone();
                        after.private_key = sealer.reseal(SecretKind::ServerPrivateKey, &id.to_string(), &srv.private_key)?;
                        after.updated_at = now;
                        changes.push(Change::ServerUpdated { before: Box::new(srv.clone()), after: Box::new(after) });
                        n += 1;
                    }
                    for peer in c.state.peers.values() {
                        let pid = peer.id.to_string();
                        let mut after = peer.clone();
                        let mut touched = false;
                        if let Some(k) = &peer.private_key {
                            if sealer.needs_reseal(k) {
                                after.private_key = Some(sealer.reseal(SecretKind::PeerPrivateKey, &pid, k)?);
                                touched = true;
                                n += 1;
                            }
                        }
                        if let Some(k) = &peer.preshared_key {
                            if sealer.needs_reseal(k) {
                                after.preshared_key = Some(sealer.reseal(SecretKind::PeerPresharedKey, &pid, k)?);
                                touched = true;
                                n += 1;
                            }
                        }
                        if touched {
                            after.updated_at = now;
                            changes.push(Change::PeerUpdated { before: Box::new(peer.clone()), after: Box::new(after) });
                        }
                    }
                    Ok(Mutation {
                        summary: format!("re-seal {n} secrets under key {}", sealer.current_key_id()),
                        action: AuditAction::SecretReseal,
                        object: format!("server/{id}"),
                        details: json!({ "secrets": n, "key_id": sealer.current_key_id().to_string() }),
                        changes,
                        output: n,
                    })
                })
                .await;
            match res {
                Ok(Some((_, n))) => {
                    report.servers += 1;
                    report.secrets += n;
                }
                // Nothing to re-seal on this server: nothing was committed.
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        for u in self.store.list_users(Page::ALL).await? {
            let Some(t) = u
                .totp
                .as_ref()
                .filter(|t| self.sealer.needs_reseal(&t.secret))
            else {
                continue;
            };
            let mut after = u.clone();
            let resealed =
                self.sealer
                    .reseal(SecretKind::TotpSecret, &u.id.to_string(), &t.secret)?;
            if let Some(at) = after.totp.as_mut() {
                at.secret = resealed;
            }
            after.version += 1;
            after.updated_at = self.now();
            let entry = self.entry(
                p,
                AuditAction::SecretReseal,
                format!("user/{}", u.id),
                json!({ "what": "totp" }),
            );
            self.store_commit_identity(
                vec![IdentityChange::UserUpdated {
                    user: Box::new(after),
                }],
                entry,
            )
            .await?;
            report.users += 1;
            report.secrets += 1;
        }
        Ok(report)
    }
}
