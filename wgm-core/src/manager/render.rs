//! Rendering the domain model as wg-quick files: each peer's client config and the
//! server's own config. Both contain secrets, so both are permission-checked and
//! audited exports.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::json;
use zeroize::Zeroizing;

use super::{Manager, PeerView};
use crate::audit::AuditAction;
use crate::model::{Peer, PeerId, ServerId, ServerState, TunnelMode};
use crate::rbac::{Action, Principal, Resource, Target};
use crate::seal::{Sealer, SecretKind};
use crate::wgquick::{self, InterfaceSection, PeerSection, WgQuickConfig};
use crate::Result;

/// A peer's client config, rendered.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The peer.
    pub peer: PeerView,
    /// The wg-quick text (holds the private key when wgm has it; zeroized on drop).
    pub text: Zeroizing<String>,
    /// `false` for a bring-your-own-key peer: the `PrivateKey` line is left for the
    /// user to fill in.
    pub complete: bool,
}

/// The client-side `[Interface]`/`[Peer]` config of `peer` on `state`'s server.
///
/// ```
/// # fn demo(state: &wgm_core::model::ServerState, peer: &wgm_core::model::Peer, sealer: &wgm_core::seal::Sealer) {
/// let cfg = wgm_core::manager::client_wgquick(state, peer, sealer).unwrap();
/// assert_eq!(cfg.peers.len(), 1);
/// # }
/// ```
pub fn client_wgquick(state: &ServerState, peer: &Peer, sealer: &Sealer) -> Result<WgQuickConfig> {
    let s = &state.server;
    let id = peer.id.to_string();
    let private_key = match &peer.private_key {
        Some(sealed) => Some(sealer.open_private_key(SecretKind::PeerPrivateKey, &id, sealed)?),
        None => None,
    };
    let preshared_key = match &peer.preshared_key {
        Some(sealed) => {
            Some(sealer.open_preshared_key(SecretKind::PeerPresharedKey, &id, sealed)?)
        }
        None => None,
    };
    let mut addresses = Vec::with_capacity(2);
    if let Some(a) = peer.address_v6 {
        addresses.push(IpNet::V6(Ipv6Net::from(a)));
    }
    if let Some(a) = peer.address_v4 {
        addresses.push(IpNet::V4(Ipv4Net::from(a)));
    }
    let interface = InterfaceSection {
        name: Some(peer.name.to_string()),
        private_key,
        addresses,
        dns: s
            .client_template
            .dns
            .clone()
            .unwrap_or_else(|| s.dns.clone()),
        mtu: Some(s.client_template.mtu.unwrap_or(s.mtu)),
        ..InterfaceSection::default()
    };
    let allowed_ips = match &peer.client_allowed_ips {
        Some(v) => v.clone(),
        None => match s.client_template.tunnel {
            TunnelMode::Full => vec![IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())],
            TunnelMode::Split => s.split_tunnel_networks(),
        },
    };
    let mut server_peer = PeerSection::new(s.public_key);
    server_peer.name = Some(s.name.to_string());
    server_peer.preshared_key = preshared_key;
    server_peer.allowed_ips = allowed_ips;
    server_peer.endpoint.clone_from(&s.endpoint);
    if !peer.keepalive.is_off() {
        server_peer.persistent_keepalive = Some(peer.keepalive);
    }
    Ok(WgQuickConfig {
        comments: Vec::new(),
        interface,
        peers: vec![server_peer],
    })
}

/// The server's own wg-quick config: its interface and every enabled peer.
///
/// ```
/// # fn demo(state: &wgm_core::model::ServerState, sealer: &wgm_core::seal::Sealer) {
/// let cfg = wgm_core::manager::server_wgquick(state, sealer).unwrap();
/// assert!(cfg.interface.private_key.is_some());
/// # }
/// ```
pub fn server_wgquick(state: &ServerState, sealer: &Sealer) -> Result<WgQuickConfig> {
    let s = &state.server;
    let key = sealer.open_private_key(
        SecretKind::ServerPrivateKey,
        &s.id.to_string(),
        &s.private_key,
    )?;
    let interface = InterfaceSection {
        name: Some(s.name.to_string()),
        private_key: Some(key),
        listen_port: Some(s.listen_port),
        fwmark: s.fwmark,
        addresses: s.interface_addresses(),
        mtu: Some(s.mtu),
        ..InterfaceSection::default()
    };
    let mut peers: Vec<&Peer> = state.peers.values().filter(|p| p.enabled).collect();
    peers.sort_by_cached_key(|x| x.name.key());
    let mut out = Vec::with_capacity(peers.len());
    for p in peers {
        let mut sec = PeerSection::new(p.public_key);
        sec.name = Some(p.name.to_string());
        if let Some(sealed) = &p.preshared_key {
            sec.preshared_key = Some(sealer.open_preshared_key(
                SecretKind::PeerPresharedKey,
                &p.id.to_string(),
                sealed,
            )?);
        }
        sec.allowed_ips = p.allowed_ips();
        sec.endpoint.clone_from(&p.endpoint);
        if p.endpoint.is_some() && !p.keepalive.is_off() {
            sec.persistent_keepalive = Some(p.keepalive);
        }
        out.push(sec);
    }
    Ok(WgQuickConfig {
        comments: Vec::new(),
        interface,
        peers: out,
    })
}

impl Manager {
    /// Render a peer's client config. This exports secrets (the peer's private key and
    /// PSK): it needs the export permission on the peer and is audited.
    pub async fn client_config(
        &self,
        p: &Principal,
        server: ServerId,
        peer: PeerId,
    ) -> Result<ClientConfig> {
        let owner = self.authorize_peer(p, server, peer, Action::Read).await?;
        let target = Target::peer(server.0, owner.map(|u| u.0));
        self.authorize(p, Resource::Secret, Action::Export, target)
            .await?;
        let (st, x) = self.settings_and_peer(server, peer).await?;
        let cfg = client_wgquick(&st, &x, &self.sealer)?;
        let (view, complete) = (PeerView::of(&x), x.private_key.is_some());
        let text = wgquick::render(&cfg)?;
        self.audit_only(
            p,
            AuditAction::SecretExport,
            format!("server/{server}/peer/{peer}"),
            Some(server),
            json!({ "what": "client_config", "private_key": complete }),
        )
        .await?;
        Ok(ClientConfig {
            peer: view,
            text,
            complete,
        })
    }

    /// Render the server's own wg-quick config (its private key and every enabled
    /// peer). An audited secret export.
    pub async fn server_config(
        &self,
        p: &Principal,
        server: ServerId,
    ) -> Result<Zeroizing<String>> {
        let target = Target::server(server.0);
        self.authorize(p, Resource::Secret, Action::Export, target)
            .await?;
        let cfg = self
            .read_server(server, |st| server_wgquick(st, &self.sealer))
            .await?;
        let text = wgquick::render(&cfg)?;
        self.audit_only(
            p,
            AuditAction::SecretExport,
            format!("server/{server}"),
            Some(server),
            json!({ "what": "server_config" }),
        )
        .await?;
        Ok(text)
    }
}
