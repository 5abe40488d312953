//! Server operations: create, update, delete, list, show, rotate key.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::json;

use super::{Cached, Manager, Mutation, ServerView};
use crate::audit::AuditAction;
use crate::ipam::{DualStack, Strategy};
use crate::keys::PrivateKey;
use crate::model::{
    AuditEntry, AuditOutcome, Change, ClientTemplate, Commit, Delegation, Page, RevisionNo, Server,
    ServerId,
};
use crate::names::{HostName, InterfaceName, ServerName};
use crate::net::{DnsEntry, Endpoint, FwMark, ListenPort, Mtu};
use crate::rbac::{Action, Principal, Resource, Target};
use crate::seal::SecretKind;
use crate::{Error, Result};

/// Everything needed to create a server. Only name, interface and port are required:
/// the IPv6 pool defaults to a random RFC 4193 /64, IPv4 is off unless a pool is given.
#[derive(Clone, Debug)]
pub struct NewServer {
    /// Unique name.
    pub name: ServerName,
    /// Interface name on the host.
    pub interface: InterfaceName,
    /// UDP listen port.
    pub listen_port: ListenPort,
    /// IPv6 pool; `None` picks a random ULA /64.
    pub ipv6_pool: Option<Ipv6Net>,
    /// IPv4 pool; `None` = IPv6 only.
    pub ipv4_pool: Option<Ipv4Net>,
    /// The server's own IPv6 address; `None` = the first usable address of the pool.
    pub address_v6: Option<Ipv6Addr>,
    /// The server's own IPv4 address; `None` = the first usable address of the pool.
    pub address_v4: Option<Ipv4Addr>,
    /// Prefix delegation for routed sites.
    pub delegation: Option<Delegation>,
    /// Allocation strategy.
    pub strategy: Strategy,
    /// DNS servers for clients.
    pub dns: Vec<DnsEntry>,
    /// MTU (default 1420).
    pub mtu: Option<Mtu>,
    /// Firewall mark.
    pub fwmark: Option<FwMark>,
    /// Endpoint advertised to clients.
    pub endpoint: Option<Endpoint>,
    /// Client template.
    pub client_template: ClientTemplate,
    /// Informational wg-quick path.
    pub config_path: Option<String>,
    /// Quarantine of released addresses in seconds (default from the manager config).
    pub quarantine_secs: Option<u64>,
    /// Use this private key instead of generating one (imports, migrations).
    pub private_key: Option<PrivateKey>,
    /// The host that runs the server (whose agent applies it); `None`: unassigned.
    pub host: Option<HostName>,
}

impl NewServer {
    /// A server with defaults for everything but the three required fields.
    pub fn new(name: ServerName, interface: InterfaceName, listen_port: ListenPort) -> NewServer {
        NewServer {
            name,
            interface,
            listen_port,
            ipv6_pool: None,
            ipv4_pool: None,
            address_v6: None,
            address_v4: None,
            delegation: None,
            strategy: Strategy::Sequential,
            dns: Vec::new(),
            mtu: None,
            fwmark: None,
            endpoint: None,
            client_template: ClientTemplate::default(),
            config_path: None,
            quarantine_secs: None,
            private_key: None,
            host: None,
        }
    }
}

/// Changes to a server's settings. `None` leaves a field as it is. Pools cannot change
/// once created (addresses were handed out from them).
#[derive(Clone, Debug, Default)]
pub struct ServerUpdate {
    /// New name.
    pub name: Option<ServerName>,
    /// New listen port.
    pub listen_port: Option<ListenPort>,
    /// New advertised endpoint (`Some(None)` clears it).
    pub endpoint: Option<Option<Endpoint>>,
    /// New DNS list.
    pub dns: Option<Vec<DnsEntry>>,
    /// New MTU.
    pub mtu: Option<Mtu>,
    /// New firewall mark (`Some(None)` clears it).
    pub fwmark: Option<Option<FwMark>>,
    /// New client template.
    pub client_template: Option<ClientTemplate>,
    /// New allocation strategy.
    pub strategy: Option<Strategy>,
    /// New quarantine time.
    pub quarantine_secs: Option<u64>,
    /// Whether the interface should be up.
    pub active: Option<bool>,
    /// Informational wg-quick path (`Some(None)` clears it).
    pub config_path: Option<Option<String>>,
    /// The host that runs the server (`Some(None)` unassigns it).
    pub host: Option<Option<HostName>>,
}

/// Options of a wg-quick import.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Accept `PreUp`/`PostUp`/`PreDown`/`PostDown`. They are never stored or run: wgm
    /// applies through its backends; the count of dropped hooks is audited.
    pub allow_hooks: bool,
    /// Interface name; defaults to the server name when that is a valid interface name.
    pub interface: Option<InterfaceName>,
}

fn first_host_v6(pool: Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(pool.network()).wrapping_add(1))
}

fn first_host_v4(pool: Ipv4Net) -> Ipv4Addr {
    if pool.prefix_len() >= 31 {
        pool.network()
    } else {
        Ipv4Addr::from(u32::from(pool.network()).wrapping_add(1))
    }
}

impl Manager {
    /// Resolve a server by name (case-insensitive) or id, as the caller may see it.
    pub async fn resolve_server(&self, p: &Principal, name_or_id: &str) -> Result<ServerId> {
        let id = if let Ok(id) = name_or_id.parse::<ServerId>() {
            id
        } else {
            let name = ServerName::new(name_or_id)?;
            self.store
                .find_server(&name)
                .await?
                .ok_or_else(|| Error::not_found("server", name_or_id))?
        };
        self.authorize(p, Resource::Server, Action::Read, Target::server(id.0))
            .await?;
        Ok(id)
    }

    /// Create a server (revision 1).
    pub async fn create_server(&self, p: &Principal, spec: NewServer) -> Result<ServerView> {
        self.authorize(p, Resource::Server, Action::Create, Target::none())
            .await?;
        let (server, _) = self.prepare_server(spec, "server").await?;
        let id = self
            .commit_new_server(p, server, Vec::new(), AuditAction::ServerCreate, json!({}))
            .await?;
        self.get_server(p, id).await
    }

    /// The name and the interface of a new server are free. The name is what the
    /// caller chose, so a taken name is reported first, before the interface (which is
    /// usually derived from the name).
    async fn check_server_names_free(&self, spec: &NewServer, field: &'static str) -> Result<()> {
        let servers = self.store.list_servers(Page::ALL).await?;
        if let Some(s) = servers.iter().find(|s| s.name.key() == spec.name.key()) {
            return Err(Error::invalid(
                format!("{field}.name"),
                format!(
                    "{} is already used by server {} (names are compared case-insensitively)",
                    spec.name, s.name
                ),
            ));
        }
        if let Some(s) = servers.iter().find(|s| s.interface == spec.interface) {
            return Err(Error::invalid(
                format!("{field}.interface"),
                format!("{} is already used by server {}", spec.interface, s.name),
            ));
        }
        Ok(())
    }

    /// Validate a new server and build its record: defaults (a random ULA /64, the
    /// first usable addresses, MTU 1420), pools and the server's own addresses checked
    /// exactly as allocation will check them, name and interface not taken, the key
    /// generated (or given) and sealed. Returns the record and its address manager.
    /// `field` prefixes error fields (`server`, `import`).
    async fn prepare_server(
        &self,
        spec: NewServer,
        field: &'static str,
    ) -> Result<(Server, DualStack)> {
        spec.check_limits(field)?;
        let now = self.now();
        self.check_server_names_free(&spec, field).await?;
        let mtu = spec.mtu.unwrap_or_default();
        mtu.check_ipv6("mtu").map_err(|e| e.in_field(field))?;
        let ipv6_pool = match spec.ipv6_pool {
            Some(n) => n,
            None => crate::net::random_ula_prefix(&mut rand::thread_rng()),
        };
        let address_v6 = spec.address_v6.unwrap_or_else(|| first_host_v6(ipv6_pool));
        let address_v4 = spec
            .ipv4_pool
            .map(|pool| spec.address_v4.unwrap_or_else(|| first_host_v4(pool)));
        if spec.address_v4.is_some() && spec.ipv4_pool.is_none() {
            return Err(Error::invalid(
                format!("{field}.address_v4"),
                "needs an IPv4 pool",
            ));
        }
        let mut ipam = DualStack::new(
            ipv6_pool,
            spec.ipv4_pool,
            spec.delegation.map(|d| (d.pool, d.prefix_len)),
        )
        .map_err(|e| e.in_field(field))?;
        ipam.claim(IpAddr::V6(address_v6), "address_v6", now)
            .map_err(|e| e.in_field(field))?;
        if let Some(a) = address_v4 {
            ipam.claim(IpAddr::V4(a), "address_v4", now)
                .map_err(|e| e.in_field(field))?;
        }
        let id = ServerId::new_random();
        let key = spec.private_key.unwrap_or_else(PrivateKey::generate);
        let sealed =
            self.sealer
                .seal_private_key(&key, SecretKind::ServerPrivateKey, &id.to_string())?;
        let server = Server {
            id,
            name: spec.name,
            interface: spec.interface,
            listen_port: spec.listen_port,
            private_key: sealed,
            public_key: key.public_key(),
            ipv6_pool,
            ipv4_pool: spec.ipv4_pool,
            address_v6,
            address_v4,
            delegation: spec.delegation,
            strategy: spec.strategy,
            quarantine_secs: spec
                .quarantine_secs
                .unwrap_or(self.config.default_quarantine_secs),
            reserved: Vec::new(),
            quarantine: Vec::new(),
            dns: spec.dns,
            mtu,
            fwmark: spec.fwmark,
            endpoint: spec.endpoint,
            client_template: spec.client_template,
            config_path: spec.config_path,
            active: true,
            host: spec.host,
            policy: crate::policy::ServerPolicy::default(),
            created_at: now,
            updated_at: now,
        };
        self.check_other_servers(&server, field).await?;
        Ok((server, ipam))
    }

    /// The rules between the servers of one installation, which today all run on the
    /// host that applies them: no two share a listen port or a key pair, and no two
    /// have overlapping IPv6, IPv4 or delegation pools (a route can go to one interface
    /// only). `field` prefixes error fields (`server`, `import`).
    async fn check_other_servers(&self, me: &Server, field: &str) -> Result<()> {
        let mine = server_networks(me);
        for summary in self.store.list_servers(Page::ALL).await? {
            if summary.id == me.id {
                continue;
            }
            let other = match self
                .read_server(summary.id, |st| Ok(st.server.clone()))
                .await
            {
                Ok(x) => x,
                // Deleted since the listing.
                Err(Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            if other.listen_port == me.listen_port {
                return Err(Error::invalid(
                    format!("{field}.listen_port"),
                    format!(
                        "port {} is already used by server {}",
                        me.listen_port, other.name
                    ),
                ));
            }
            if other.public_key == me.public_key {
                return Err(Error::invalid(
                    format!("{field}.private_key"),
                    format!("is the private key of server {}", other.name),
                ));
            }
            for (what, net) in &mine {
                for (_, theirs) in server_networks(&other) {
                    if net.contains(&theirs) || theirs.contains(net) {
                        return Err(Error::invalid(
                            format!("{field}.{what}"),
                            format!("{net} overlaps {theirs} of server {}", other.name),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Commit a new server (and optionally its first peers) as revision 1.
    pub(super) async fn commit_new_server(
        &self,
        p: &Principal,
        server: Server,
        mut more: Vec<Change>,
        action: AuditAction,
        details: serde_json::Value,
    ) -> Result<ServerId> {
        let id = server.id;
        let now = self.now();
        let summary = if more.is_empty() {
            format!("create server {}", server.name)
        } else {
            format!("import server {} with {} peers", server.name, more.len())
        };
        let object = format!("server/{id}");
        let mut changes = vec![Change::ServerCreated {
            server: Box::new(server),
        }];
        changes.append(&mut more);
        let commit = Commit {
            server_id: id,
            expected: RevisionNo::NONE,
            changes,
            author: Self::actor(p),
            at: now,
            summary,
            audit: AuditEntry {
                at: now,
                actor: Self::actor(p),
                action,
                object,
                server_id: Some(id),
                revision: None,
                outcome: AuditOutcome::Success,
                details,
            },
        };
        self.store_commit(commit).await?;
        Ok(id)
    }

    /// Show one server.
    pub async fn get_server(&self, p: &Principal, id: ServerId) -> Result<ServerView> {
        self.authorize(p, Resource::Server, Action::Read, Target::server(id.0))
            .await?;
        if let Some(v) = self.if_cached(id, |c| ServerView::of(&c.state)).await? {
            return Ok(v);
        }
        // Not loaded here: one read, whatever the server's size.
        let (server, revision, peers) = self
            .store
            .load_server_overview(id)
            .await?
            .ok_or_else(|| Error::not_found("server", id))?;
        Ok(ServerView::of_settings(&server, revision, peers))
    }

    /// List servers the caller may see, ordered by name.
    pub async fn list_servers(
        &self,
        p: &Principal,
        page: Page,
    ) -> Result<Vec<crate::model::ServerSummary>> {
        let all = self.store.list_servers(page).await?;
        Ok(all
            .into_iter()
            .filter(|s| {
                crate::rbac::authorize(p, Resource::Server, Action::Read, Target::server(s.id.0))
                    .is_ok()
            })
            .collect())
    }

    /// Change a server's settings (one revision).
    pub async fn update_server(
        &self,
        p: &Principal,
        id: ServerId,
        u: ServerUpdate,
    ) -> Result<ServerView> {
        self.authorize(p, Resource::Server, Action::Update, Target::server(id.0))
            .await?;
        u.check_limits()?;
        if let Some(m) = u.mtu {
            m.check_ipv6("server.mtu")?;
        }
        if let Some(port) = u.listen_port {
            let mut moved = self.read_server(id, |st| Ok(st.server.clone())).await?;
            moved.listen_port = port;
            self.check_other_servers(&moved, "server").await?;
        }
        if let Some(name) = &u.name {
            if let Some(other) = self.store.find_server(name).await? {
                if other != id {
                    return Err(Error::invalid(
                        "server.name",
                        format!("{name} is already used (names are compared case-insensitively)"),
                    ));
                }
            }
        }
        self.mutate(p, id, |c: &mut Cached, now| {
            let before = c.state.server.clone();
            let mut after = before.clone();
            if let Some(v) = &u.name {
                after.name = v.clone();
            }
            if let Some(v) = u.listen_port {
                after.listen_port = v;
            }
            if let Some(v) = &u.endpoint {
                after.endpoint.clone_from(v);
            }
            if let Some(v) = &u.dns {
                after.dns.clone_from(v);
            }
            if let Some(v) = u.mtu {
                after.mtu = v;
            }
            if let Some(v) = u.fwmark {
                after.fwmark = v;
            }
            if let Some(v) = &u.client_template {
                after.client_template = v.clone();
            }
            if let Some(v) = u.strategy {
                after.strategy = v;
            }
            if let Some(v) = u.quarantine_secs {
                after.quarantine_secs = v;
            }
            if let Some(v) = u.active {
                after.active = v;
            }
            if let Some(v) = &u.config_path {
                after.config_path.clone_from(v);
            }
            if let Some(v) = &u.host {
                after.host.clone_from(v);
            }
            let mut before_cmp = before.clone();
            before_cmp.updated_at = after.updated_at;
            if before_cmp == after {
                return Err(Error::invalid("server", "the update changes nothing"));
            }
            after.updated_at = now;
            Ok(Mutation {
                summary: format!("update server {}", after.name),
                action: AuditAction::ServerUpdate,
                object: format!("server/{id}"),
                details: json!({}),
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

    /// Generate a new server key pair (F11). Peers' configs render with the new public
    /// key from now on; the device is updated on the next apply.
    pub async fn rotate_server_key(&self, p: &Principal, id: ServerId) -> Result<ServerView> {
        self.authorize(p, Resource::Server, Action::Update, Target::server(id.0))
            .await?;
        self.mutate(p, id, |c, now| {
            let key = PrivateKey::generate();
            let public = key.public_key();
            if c.index.keys.contains_key(&public) {
                return Err(Error::conflict(
                    "the new server key equals a peer's key; try again",
                ));
            }
            let before = c.state.server.clone();
            let mut after = before.clone();
            after.private_key = self.sealer.seal_private_key(
                &key,
                SecretKind::ServerPrivateKey,
                &id.to_string(),
            )?;
            after.public_key = public;
            after.updated_at = now;
            Ok(Mutation {
                summary: format!("rotate key of server {}", after.name),
                action: AuditAction::ServerRotateKey,
                object: format!("server/{id}"),
                details: json!({ "public_key": public.to_base64() }),
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

    /// Bring back the key pair the server had at revision `from`: the explicit, audited
    /// act that [`Manager::rollback`] never does. Needs `server:update` and
    /// `config:rollback` on the server; one revision, audited as
    /// `server.restore_key`. Refused when the server already has that key or a peer or
    /// another server holds it now. A key sealed under an earlier master key is sealed
    /// again under the current one. Clients need new configs, as after a rotation.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::sync::Arc;
    /// use wgm_core::manager::{Manager, NewServer};
    /// use wgm_core::names::{InterfaceName, ServerName};
    /// use wgm_core::net::ListenPort;
    /// use wgm_core::seal::{MasterKey, Sealer};
    /// use wgm_core::store::MemoryStore;
    ///
    /// let (m, local) = Manager::builder(Arc::new(MemoryStore::new()), Sealer::new(MasterKey::generate()))
    ///     .build_with_local_admin();
    /// let admin = local.principal("root");
    /// let s = m.create_server(&admin, NewServer::new(ServerName::new("s").unwrap(),
    ///     InterfaceName::new("wg0").unwrap(), ListenPort::new(51820).unwrap())).await.unwrap();
    /// m.rotate_server_key(&admin, s.id).await.unwrap();
    /// let back = m.restore_server_key(&admin, s.id, wgm_core::model::RevisionNo(1)).await.unwrap();
    /// assert_eq!(back.public_key, s.public_key);
    /// # });
    /// ```
    pub async fn restore_server_key(
        &self,
        p: &Principal,
        id: ServerId,
        from: RevisionNo,
    ) -> Result<ServerView> {
        self.authorize(p, Resource::Server, Action::Update, Target::server(id.0))
            .await?;
        self.authorize(p, Resource::Config, Action::Rollback, Target::server(id.0))
            .await?;
        let old = self.state_at(id, from).await?.server;
        let sealed = if self.sealer.needs_reseal(&old.private_key) {
            self.sealer.reseal(
                SecretKind::ServerPrivateKey,
                &id.to_string(),
                &old.private_key,
            )?
        } else {
            old.private_key.clone()
        };
        let mut moved = self.read_server(id, |st| Ok(st.server.clone())).await?;
        moved.public_key = old.public_key;
        self.check_other_servers(&moved, "server").await?;
        self.mutate(p, id, |c, now| {
            if c.state.server.public_key == old.public_key {
                return Err(Error::invalid(
                    "revision",
                    format!("the server already has the key it had at revision {from}"),
                ));
            }
            if c.index.keys.contains_key(&old.public_key) {
                return Err(Error::conflict(format!(
                    "the key the server had at revision {from} is now a peer's key"
                )));
            }
            let before = c.state.server.clone();
            let mut after = before.clone();
            after.private_key = sealed.clone();
            after.public_key = old.public_key;
            after.updated_at = now;
            Ok(Mutation {
                summary: format!(
                    "restore the key of server {} from revision {from}",
                    after.name
                ),
                action: AuditAction::ServerRestoreKey,
                object: format!("server/{id}"),
                details: json!({ "from": from.0, "public_key": old.public_key.to_base64() }),
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

    /// Delete a server and all its peers (one final revision; history is kept).
    pub async fn delete_server(&self, p: &Principal, id: ServerId) -> Result<RevisionNo> {
        self.authorize(p, Resource::Server, Action::Delete, Target::server(id.0))
            .await?;
        let (rec, ()) = self
            .mutate(p, id, |c, _now| {
                Ok(Mutation {
                    summary: format!("delete server {}", c.state.server.name),
                    action: AuditAction::ServerDelete,
                    object: format!("server/{id}"),
                    details: json!({ "peers": c.state.peers.len() }),
                    changes: vec![Change::ServerDeleted {
                        server: Box::new(c.state.server.clone()),
                    }],
                    output: (),
                })
            })
            .await?;
        Ok(rec.revision)
    }
}

impl Manager {
    /// Import a wg-quick server config as a new server with all its peers, in one
    /// revision. The interface's IPv6 `Address` gives the IPv6 pool (a random ULA /64
    /// when there is none); an IPv4 `Address` gives the IPv4 pool. Each peer's host
    /// routes inside the pools become its addresses; its other `AllowedIPs` become
    /// extra allowed IPs. Keys are kept (sealed); names come from `# Name =` comments.
    pub async fn import_server(
        &self,
        p: &Principal,
        name: ServerName,
        text: &str,
        opts: ImportOptions,
    ) -> Result<ServerView> {
        use crate::model::{Peer, PeerId, PeerStats};
        use ipnet::IpNet;
        self.authorize(p, Resource::Server, Action::Create, Target::none())
            .await?;
        let popts = crate::wgquick::ParseOptions {
            allow_hooks: opts.allow_hooks,
            max_bytes: self.config.max_import_bytes,
        };
        let cfg = crate::wgquick::parse(text, &popts)?;
        let iface = &cfg.interface;
        let key = iface.private_key.clone().ok_or_else(|| {
            Error::invalid("import.PrivateKey", "a server config needs its private key")
        })?;
        let interface = match opts.interface {
            Some(i) => i,
            None => InterfaceName::new(name.as_str()).map_err(|_| {
                Error::invalid(
                    "import.interface",
                    "the server name is not a valid interface name; give one",
                )
            })?,
        };
        let mut spec = NewServer::new(
            name,
            interface,
            iface.listen_port.ok_or_else(|| {
                Error::invalid("import.ListenPort", "a server config needs a listen port")
            })?,
        );
        for a in &iface.addresses {
            match a {
                IpNet::V6(n) if spec.ipv6_pool.is_none() => {
                    spec.ipv6_pool = Some(n.trunc());
                    spec.address_v6 = Some(n.addr());
                }
                IpNet::V4(n) if spec.ipv4_pool.is_none() => {
                    spec.ipv4_pool = Some(n.trunc());
                    spec.address_v4 = Some(n.addr());
                }
                _ => {}
            }
        }
        spec.mtu = iface.mtu;
        spec.fwmark = iface.fwmark.filter(|f| !f.is_off());
        spec.dns.clone_from(&iface.dns);
        spec.private_key = Some(key);
        let hooks = iface.hooks.pre_up.len()
            + iface.hooks.post_up.len()
            + iface.hooks.pre_down.len()
            + iface.hooks.post_down.len();
        let (server, mut ipam) = self.prepare_server(spec, "import").await?;
        let (ipv6_pool, ipv4_pool) = (server.ipv6_pool, server.ipv4_pool);
        let (id, now) = (server.id, self.now());
        let mut changes = Vec::with_capacity(cfg.peers.len());
        let mut names = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for (i, sec) in cfg.peers.iter().enumerate() {
            let field = format!("import.peers[{i}]");
            if sec.public_key == server.public_key {
                return Err(Error::invalid(
                    format!("{field}.PublicKey"),
                    "equals the server's own public key",
                ));
            }
            if !keys.insert(sec.public_key) {
                return Err(Error::invalid(
                    format!("{field}.PublicKey"),
                    "duplicate peer public key",
                ));
            }
            let pname = match &sec.name {
                Some(n) => {
                    crate::names::PeerName::new(n.clone()).map_err(|e| e.in_field(&field))?
                }
                None => crate::names::PeerName::new(format!("peer-{}", i + 1))?,
            };
            if !names.insert(pname.key()) {
                return Err(Error::invalid(
                    format!("{field}.Name"),
                    format!("duplicate peer name {pname}"),
                ));
            }
            let pid = PeerId::new_random();
            let mut address_v6 = None;
            let mut address_v4 = None;
            let mut extra = Vec::new();
            for net in &sec.allowed_ips {
                match net {
                    IpNet::V6(n)
                        if n.prefix_len() == 128
                            && ipv6_pool.contains(&n.addr())
                            && address_v6.is_none() =>
                    {
                        ipam.claim(IpAddr::V6(n.addr()), "import.AllowedIPs", now)
                            .map_err(|e| e.in_field(&field))?;
                        address_v6 = Some(n.addr());
                    }
                    IpNet::V4(n)
                        if n.prefix_len() == 32
                            && ipv4_pool.is_some_and(|p| p.contains(&n.addr()))
                            && address_v4.is_none() =>
                    {
                        ipam.claim(IpAddr::V4(n.addr()), "import.AllowedIPs", now)
                            .map_err(|e| e.in_field(&field))?;
                        address_v4 = Some(n.addr());
                    }
                    other => extra.push(*other),
                }
            }
            // The rules `peer set` applies: nothing a peer may not route, nothing over
            // the pools (so not the server's address: a peer's address in the pool must
            // be a single host route, one per family), no overlap within the list.
            super::peers::check_extra_list(&server, &extra).map_err(|(j, reason)| {
                Error::invalid(format!("{field}.AllowedIPs[{j}]"), reason)
            })?;
            let preshared_key = match &sec.preshared_key {
                Some(psk) => Some(self.sealer.seal_preshared_key(
                    psk,
                    SecretKind::PeerPresharedKey,
                    &pid.to_string(),
                )?),
                None => None,
            };
            changes.push(Change::PeerAdded {
                peer: Box::new(Peer {
                    id: pid,
                    server_id: id,
                    name: pname,
                    description: None,
                    owner: None,
                    public_key: sec.public_key,
                    private_key: None,
                    preshared_key,
                    address_v6,
                    address_v4,
                    delegated_prefix: None,
                    extra_allowed_ips: extra,
                    client_allowed_ips: None,
                    endpoint: sec.endpoint.clone(),
                    keepalive: sec.persistent_keepalive.unwrap_or_default(),
                    enabled: true,
                    policy: crate::policy::PeerPolicy::default(),
                    disabled_by: None,
                    expires_at: None,
                    config_path: None,
                    stats: PeerStats::default(),
                    created_at: now,
                    updated_at: now,
                }),
            });
        }
        // Server-side allowed IPs must not overlap between peers (a route can only go
        // to one peer): check the imported set as a whole.
        let mut state = crate::model::ServerState {
            server: server.clone(),
            peers: std::collections::BTreeMap::default(),
            revision: RevisionNo(1),
        };
        for c in &changes {
            state.apply_change(c)?;
        }
        crate::store::check_server_uniqueness(&state)?;
        check_no_overlaps(&state)?;
        if state
            .peers
            .values()
            .any(|x| !x.extra_allowed_ips.is_empty())
        {
            // Routing networks to peers is a permission of its own.
            self.authorize(p, Resource::Peer, Action::Route, Target::server(id.0))
                .await?;
        }
        let count = changes.len();
        let id = self
            .commit_new_server(
                p,
                server,
                changes,
                AuditAction::ServerImport,
                json!({ "peers": count, "hooks_dropped": hooks }),
            )
            .await?;
        self.get_server(p, id).await
    }
}

/// The networks a server claims on its host: its IPv6, IPv4 and delegation pools, named
/// by their field.
fn server_networks(s: &Server) -> Vec<(&'static str, ipnet::IpNet)> {
    let mut v = vec![("ipv6_pool", ipnet::IpNet::V6(s.ipv6_pool))];
    if let Some(p) = s.ipv4_pool {
        v.push(("ipv4_pool", ipnet::IpNet::V4(p)));
    }
    if let Some(d) = s.delegation {
        v.push(("delegation", ipnet::IpNet::V6(d.pool)));
    }
    v
}

/// No two peers' allowed IPs may overlap (WireGuard routes each address to one peer).
/// Sorted sweep: O(n log n).
pub(super) fn check_no_overlaps(state: &crate::model::ServerState) -> Result<()> {
    use ipnet::IpNet;
    let mut nets: Vec<(IpNet, &crate::model::Peer)> = state
        .peers
        .values()
        .flat_map(|p| p.allowed_ips().into_iter().map(move |n| (n, p)))
        .collect();
    nets.sort_by_key(|a| (a.0.network(), a.0.prefix_len()));
    // After sorting by network address, an overlap is always with an earlier net that
    // still covers the current start: keep the widest open one per family.
    let mut open: [Option<(IpNet, &crate::model::Peer)>; 2] = [None, None];
    for (net, p) in nets {
        if net.prefix_len() == 0 {
            return Err(Error::invalid(
                format!("peer {}.allowed_ips", p.name),
                "a default route is not allowed on the server side",
            ));
        }
        let fam = usize::from(net.addr().is_ipv4());
        if let Some((o, op)) = open[fam] {
            if o.contains(&net.network()) {
                if op.id != p.id {
                    return Err(Error::conflict(format!(
                        "allowed IPs {o} of peer {} and {net} of peer {} overlap",
                        op.name, p.name
                    )));
                }
                continue;
            }
        }
        open[fam] = Some((net, p));
    }
    Ok(())
}
