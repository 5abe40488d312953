//! The JSON the API takes and returns, with their OpenAPI schemas.
//!
//! Responses carry the library's views as the CLI's `--json` prints them (the same serde
//! form); each field's schema is declared here. Requests take text and numbers, parsed
//! by the library's strict parsers, so every refusal names its field.

#![allow(missing_docs)]
// Fields are documented by their schema descriptions below.
// Updates distinguish absent (unchanged) from null (cleared), as the library's do.
#![allow(clippy::option_option)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use wgm_core::ipam::Strategy;
use wgm_core::keys::PublicKey;
use wgm_core::manager::{PeerView, ServerView, TokenView, UserView};
use wgm_core::model::{
    ClientTemplate, Delegation, DisabledBy, PeerId, PeerStats, RevisionNo, RoleAssignment,
    ServerId, TokenId, UserId,
};
use wgm_core::names::{
    Description, HostName, InterfaceName, PeerName, RoleName, ServerName, UserName,
};
use wgm_core::net::{DnsEntry, Endpoint, FwMark, Keepalive, ListenPort, Mtu};
use wgm_core::rbac::{Permission, Role};

use crate::extract::Root;

/// `Some(None)` for an explicit `null`, `None` when the field is absent (the library's
/// update types use the same three states).
#[allow(clippy::option_option)]
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

macro_rules! root {
    ($t:ty, $r:literal) => {
        impl Root for $t {
            const ROOT: &'static str = $r;
        }
    };
}

// ------------------------------------------------------------------ shared schemas

/// Where a role or permission applies: `"global"` or `{"server": ID}`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // Schema only: documents the library's serde form of `Scope`.
pub enum ScopeSchema {
    Global,
    Server(uuid::Uuid),
}

/// One permission.
#[derive(Serialize, ToSchema)]
#[schema(as = Permission)]
#[allow(dead_code)] // Schema only.
pub struct PermissionSchema {
    /// `server`, `peer`, `config`, `secret`, `user`, `role`, `token`, `audit`.
    resource: String,
    /// `create`, `read`, `update`, `delete`, `apply`, `export`, `rollback`, `assign`, `route`.
    action: String,
    scope: ScopeSchema,
    own_only: bool,
}

/// A role assignment.
#[derive(Serialize, ToSchema)]
#[schema(as = RoleAssignment)]
#[allow(dead_code)] // Schema only.
pub struct RoleAssignmentSchema {
    role: String,
    scope: ScopeSchema,
}

/// Prefix delegation.
#[derive(Serialize, ToSchema)]
#[schema(as = Delegation)]
#[allow(dead_code)] // Schema only.
pub struct DelegationSchema {
    pool: String,
    prefix_len: u8,
}

/// Defaults of every client config of a server.
#[derive(Serialize, ToSchema)]
#[schema(as = ClientTemplate)]
#[allow(dead_code)] // Schema only.
pub struct ClientTemplateSchema {
    /// `full` or `split`.
    tunnel: String,
    extra_allowed_ips: Vec<String>,
    keepalive: u16,
    dns: Option<Vec<String>>,
    mtu: Option<u16>,
}

/// Observed statistics of a peer.
#[derive(Serialize, ToSchema)]
#[schema(as = PeerStats)]
#[allow(dead_code)] // Schema only.
pub struct PeerStatsSchema {
    #[schema(format = DateTime)]
    last_seen: Option<String>,
    rx_bytes: u64,
    tx_bytes: u64,
}

// ------------------------------------------------------------------ responses

/// A server (no secret).
#[derive(Serialize, ToSchema)]
#[schema(as = Server)]
pub struct ServerOut {
    #[schema(value_type = uuid::Uuid)]
    pub id: ServerId,
    #[schema(value_type = String)]
    pub name: ServerName,
    #[schema(value_type = String)]
    pub interface: InterfaceName,
    #[schema(value_type = u16)]
    pub listen_port: ListenPort,
    #[schema(value_type = String)]
    pub public_key: PublicKey,
    #[schema(value_type = String)]
    pub ipv6_pool: Ipv6Net,
    #[schema(value_type = Option<String>)]
    pub ipv4_pool: Option<Ipv4Net>,
    #[schema(value_type = String)]
    pub address_v6: Ipv6Addr,
    #[schema(value_type = Option<String>)]
    pub address_v4: Option<Ipv4Addr>,
    #[schema(value_type = Option<DelegationSchema>)]
    pub delegation: Option<Delegation>,
    /// `sequential` or `random`.
    #[schema(value_type = String)]
    pub strategy: Strategy,
    pub quarantine_secs: u64,
    #[schema(value_type = Vec<String>)]
    pub dns: Vec<DnsEntry>,
    #[schema(value_type = u16)]
    pub mtu: Mtu,
    #[schema(value_type = Option<u32>)]
    pub fwmark: Option<FwMark>,
    #[schema(value_type = Option<String>)]
    pub endpoint: Option<Endpoint>,
    #[schema(value_type = ClientTemplateSchema)]
    pub client_template: ClientTemplate,
    /// The server's firewall policy.
    pub policy: ServerPolicyDoc,
    pub config_path: Option<String>,
    pub active: bool,
    #[schema(value_type = Option<String>)]
    pub host: Option<HostName>,
    pub peer_count: usize,
    /// Head revision (also the `ETag`).
    #[schema(value_type = u64)]
    pub revision: RevisionNo,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<ServerView> for ServerOut {
    fn from(v: ServerView) -> ServerOut {
        ServerOut {
            id: v.id,
            name: v.name,
            interface: v.interface,
            listen_port: v.listen_port,
            public_key: v.public_key,
            ipv6_pool: v.ipv6_pool,
            ipv4_pool: v.ipv4_pool,
            address_v6: v.address_v6,
            address_v4: v.address_v4,
            delegation: v.delegation,
            strategy: v.strategy,
            quarantine_secs: v.quarantine_secs,
            dns: v.dns,
            mtu: v.mtu,
            fwmark: v.fwmark,
            endpoint: v.endpoint,
            client_template: v.client_template,
            policy: v.policy.into(),
            config_path: v.config_path,
            active: v.active,
            host: v.host,
            peer_count: v.peer_count,
            revision: v.revision,
            created_at: v.created_at,
            updated_at: v.updated_at,
        }
    }
}

/// A peer (no secret: only whether wgm holds its keys).
#[derive(Serialize, ToSchema)]
#[schema(as = Peer)]
pub struct PeerOut {
    #[schema(value_type = uuid::Uuid)]
    pub id: PeerId,
    #[schema(value_type = uuid::Uuid)]
    pub server_id: ServerId,
    #[schema(value_type = String)]
    pub name: PeerName,
    #[schema(value_type = Option<String>)]
    pub description: Option<Description>,
    #[schema(value_type = Option<uuid::Uuid>)]
    pub owner: Option<UserId>,
    #[schema(value_type = String)]
    pub public_key: PublicKey,
    pub has_private_key: bool,
    pub has_preshared_key: bool,
    #[schema(value_type = Option<String>)]
    pub address_v6: Option<Ipv6Addr>,
    #[schema(value_type = Option<String>)]
    pub address_v4: Option<Ipv4Addr>,
    #[schema(value_type = Option<String>)]
    pub delegated_prefix: Option<Ipv6Net>,
    #[schema(value_type = Vec<String>)]
    pub extra_allowed_ips: Vec<IpNet>,
    #[schema(value_type = Vec<String>)]
    pub allowed_ips: Vec<IpNet>,
    #[schema(value_type = Option<Vec<String>>)]
    pub client_allowed_ips: Option<Vec<IpNet>>,
    #[schema(value_type = Option<String>)]
    pub endpoint: Option<Endpoint>,
    #[schema(value_type = u16)]
    pub keepalive: Keepalive,
    pub enabled: bool,
    /// `owner`, `administrator` or `expiry` while disabled.
    #[schema(value_type = Option<String>)]
    pub disabled_by: Option<DisabledBy>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    #[schema(value_type = PeerStatsSchema)]
    pub stats: PeerStats,
    /// The peer's firewall policy.
    pub policy: PeerPolicyDoc,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<PeerView> for PeerOut {
    fn from(v: PeerView) -> PeerOut {
        PeerOut {
            id: v.id,
            server_id: v.server_id,
            name: v.name,
            description: v.description,
            owner: v.owner,
            public_key: v.public_key,
            has_private_key: v.has_private_key,
            has_preshared_key: v.has_preshared_key,
            address_v6: v.address_v6,
            address_v4: v.address_v4,
            delegated_prefix: v.delegated_prefix,
            extra_allowed_ips: v.extra_allowed_ips,
            allowed_ips: v.allowed_ips,
            client_allowed_ips: v.client_allowed_ips,
            endpoint: v.endpoint,
            keepalive: v.keepalive,
            enabled: v.enabled,
            disabled_by: v.disabled_by,
            expires_at: v.expires_at,
            stats: v.stats,
            policy: v.policy.into(),
            created_at: v.created_at,
            updated_at: v.updated_at,
        }
    }
}

/// A user (no password hash, no TOTP secret).
#[derive(Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserOut {
    #[schema(value_type = uuid::Uuid)]
    pub id: UserId,
    #[schema(value_type = String)]
    pub name: UserName,
    pub email: Option<String>,
    pub active: bool,
    #[schema(value_type = Vec<RoleAssignmentSchema>)]
    pub roles: Vec<RoleAssignment>,
    pub has_password: bool,
    pub totp: bool,
    pub peer_quota: Option<u32>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_login: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl From<UserView> for UserOut {
    fn from(v: UserView) -> UserOut {
        UserOut {
            id: v.id,
            name: v.name,
            email: v.email,
            active: v.active,
            roles: v.roles,
            has_password: v.has_password,
            totp: v.totp,
            peer_quota: v.peer_quota,
            last_login: v.last_login,
            created_at: v.created_at,
        }
    }
}

/// An API token (never its secret, which only its creation returns).
#[derive(Serialize, ToSchema)]
#[schema(as = Token)]
pub struct TokenOut {
    #[schema(value_type = uuid::Uuid)]
    pub id: TokenId,
    #[schema(value_type = uuid::Uuid)]
    pub user_id: UserId,
    pub name: String,
    /// `null`: everything the user holds.
    #[schema(value_type = Option<Vec<PermissionSchema>>)]
    pub scopes: Option<Vec<Permission>>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    pub revoked: bool,
}

impl From<TokenView> for TokenOut {
    fn from(v: TokenView) -> TokenOut {
        TokenOut {
            id: v.id,
            user_id: v.user_id,
            name: v.name,
            scopes: v.scopes,
            created_at: v.created_at,
            expires_at: v.expires_at,
            revoked: v.revoked,
        }
    }
}

/// A role: built-in or custom.
#[derive(Serialize, ToSchema)]
#[schema(as = Role)]
pub struct RoleOut {
    #[schema(value_type = String)]
    pub name: RoleName,
    #[schema(value_type = String)]
    pub description: Description,
    #[schema(value_type = Vec<PermissionSchema>)]
    pub permissions: Vec<Permission>,
    pub builtin: bool,
    pub peer_quota: Option<u32>,
}

impl From<Role> for RoleOut {
    fn from(r: Role) -> RoleOut {
        RoleOut {
            name: r.name,
            description: r.description,
            permissions: r.permissions,
            builtin: r.builtin,
            peer_quota: r.peer_quota,
        }
    }
}

macro_rules! list_of {
    ($name:ident, $item:ty) => {
        /// One page of a listing.
        #[derive(Serialize, ToSchema)]
        pub struct $name {
            /// The items of this page.
            pub items: Vec<$item>,
            /// How many items match the filters, over all pages.
            pub total: u64,
            /// Items skipped.
            pub offset: u64,
            /// Page size asked for.
            pub limit: u64,
            /// The `offset` of the next page; `null` on the last one.
            pub next_offset: Option<u64>,
        }
    };
}

list_of!(ServerList, ServerOut);
list_of!(PeerList, PeerOut);
list_of!(UserList, UserOut);
list_of!(TokenList, TokenOut);
list_of!(RoleList, RoleOut);

/// One change of a revision.
#[derive(Serialize, ToSchema)]
#[schema(as = Change)]
#[allow(dead_code)] // Schema only: `wgm_cli::views::ChangeEntry`.
pub struct ChangeSchema {
    /// `server_created`, `server_updated`, `server_deleted`, `peer_added`,
    /// `peer_updated`, `peer_removed`.
    kind: String,
    /// `server` or `peer`.
    object: String,
    name: String,
    id: String,
}

/// One revision (no sealed value).
#[derive(Serialize, ToSchema)]
#[schema(as = Revision)]
#[allow(dead_code)] // Schema only: `wgm_cli::views::HistoryEntry`.
pub struct RevisionSchema {
    revision: u64,
    #[schema(format = DateTime)]
    at: String,
    author: String,
    summary: String,
    changes: Vec<ChangeSchema>,
}

/// A server's revisions, oldest first.
#[derive(Serialize, ToSchema)]
pub struct HistoryOut {
    /// The revisions.
    #[schema(value_type = Vec<RevisionSchema>)]
    pub items: Vec<wgm_cli::views::HistoryEntry>,
    /// The `after` of the next page; `null` when there is none.
    pub next_after: Option<u64>,
}

/// One difference between two revisions.
#[derive(Serialize, ToSchema)]
#[schema(as = DiffEntry)]
#[allow(dead_code)] // Schema only: `wgm_core::manager::DiffEntry`.
pub struct DiffSchema {
    /// `server`, `peer_added`, `peer_removed` or `peer_changed`.
    kind: String,
    object: String,
    /// Field name to `[before, after]`; secrets only as `<changed>`.
    fields: BTreeMap<String, Vec<serde_json::Value>>,
}

/// What changed between two revisions.
#[derive(Serialize, ToSchema)]
pub struct DiffOut {
    /// From.
    pub from: u64,
    /// To.
    pub to: u64,
    /// The differences: server, removed, changed, added peers, each by name.
    #[schema(value_type = Vec<DiffSchema>)]
    pub entries: Vec<wgm_core::manager::DiffEntry>,
}

/// A rollback's result.
#[derive(Serialize, ToSchema)]
pub struct RollbackOut {
    /// The revision restored.
    pub restored: u64,
    /// The new revision.
    #[schema(value_type = RevisionSchema)]
    pub revision: wgm_cli::views::HistoryEntry,
}

/// Who did it.
#[derive(Serialize, ToSchema)]
#[schema(as = Actor)]
#[allow(dead_code)] // Schema only.
pub struct ActorSchema {
    user_id: Option<uuid::Uuid>,
    /// `user:NAME`, `user:NAME token:ID`, `local:USER`, `system:expiry`.
    label: String,
}

/// An audit entry.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditEntry)]
#[allow(dead_code)] // Schema only.
pub struct AuditEntrySchema {
    #[schema(format = DateTime)]
    at: String,
    actor: ActorSchema,
    action: String,
    object: String,
    server_id: Option<uuid::Uuid>,
    revision: Option<u64>,
    /// `success`, `denied` or `failed`.
    outcome: String,
    details: serde_json::Value,
}

/// An audit record.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditRecord)]
#[allow(dead_code)] // Schema only: `wgm_core::model::AuditRecord`.
pub struct AuditRecordSchema {
    seq: u64,
    entry: AuditEntrySchema,
    prev_hash: String,
    hash: String,
}

/// Audit records, oldest first.
#[derive(Serialize, ToSchema)]
pub struct AuditOut {
    /// The records.
    #[schema(value_type = Vec<AuditRecordSchema>)]
    pub items: Vec<wgm_core::model::AuditRecord>,
    /// The `after_seq` of the next page; `null` when this page was not full.
    pub next_after_seq: Option<u64>,
}

/// The audit chain verified.
#[derive(Serialize, ToSchema)]
pub struct VerifyOut {
    pub records: u64,
    pub legacy_records: u64,
    pub head_seq: u64,
    pub head_hash: String,
    /// `SEQ:HASH`: keep it and pass it as `expect` later.
    pub head: String,
}

/// What one host's agent last reported.
#[derive(Serialize, ToSchema)]
pub struct HostStatusOut {
    pub host: String,
    pub agent: String,
    pub applied: Option<u64>,
    /// Revisions between `applied` and the head.
    pub behind: u64,
    pub instance: Option<u64>,
    pub converged: bool,
    pub peers: u64,
    pub error: Option<String>,
    #[schema(format = DateTime)]
    pub heartbeat: String,
    pub age_secs: i64,
}

/// A server's status as its hosts' agents reported it (no device is touched).
#[derive(Serialize, ToSchema)]
pub struct StatusOut {
    /// The head revision.
    pub revision: u64,
    pub hosts: Vec<HostStatusOut>,
}

/// One host's pending changes ([`PlanOut`]).
#[derive(Serialize, ToSchema)]
pub struct HostPlanOut {
    pub host: String,
    /// The revision the host's agent applied, if any.
    pub applied: Option<u64>,
    /// Whether the host reported its device converged at the head.
    pub converged: bool,
    /// The changes from `applied` to the head (empty at the head); `null` when the host
    /// applied nothing yet (everything is to do).
    #[schema(value_type = Option<Vec<DiffSchema>>)]
    pub pending: Option<Vec<wgm_core::manager::DiffEntry>>,
}

/// What each host still has to do to reach the head.
#[derive(Serialize, ToSchema)]
pub struct PlanOut {
    /// The head revision.
    pub revision: u64,
    pub hosts: Vec<HostPlanOut>,
}

/// A deleted server.
#[derive(Serialize, ToSchema)]
pub struct DeletedServer {
    #[schema(value_type = uuid::Uuid)]
    pub id: ServerId,
    #[schema(value_type = String)]
    pub name: ServerName,
    /// The final revision.
    pub revision: u64,
}

/// A removed peer.
#[derive(Serialize, ToSchema)]
pub struct RemovedPeer {
    #[schema(value_type = uuid::Uuid)]
    pub id: PeerId,
    #[schema(value_type = uuid::Uuid)]
    pub server_id: ServerId,
    #[schema(value_type = String)]
    pub name: PeerName,
}

/// A client config (holds the private key when wgm has it).
#[derive(Serialize, ToSchema)]
pub struct ClientConfigOut {
    pub peer: PeerOut,
    /// `false` for a bring-your-own-key peer (its `PrivateKey` line is to be filled in).
    pub complete: bool,
    /// The wg-quick file.
    pub config: String,
}

/// The server's own wg-quick file (with its private key).
#[derive(Serialize, ToSchema)]
pub struct ServerConfigOut {
    pub server: String,
    pub config: String,
}

/// Tokens of a login.
#[derive(Serialize, ToSchema)]
pub struct LoginOut {
    #[schema(value_type = uuid::Uuid)]
    pub user_id: UserId,
    /// Short-lived access token (send as `Authorization: Bearer …`).
    pub access_token: String,
    /// Exchange at `/api/v1/refresh` for a new access token.
    pub refresh_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds the access token is valid.
    pub expires_in: u64,
}

/// A new access token.
#[derive(Serialize, ToSchema)]
pub struct RefreshOut {
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    pub expires_in: u64,
}

/// A TOTP enrolment to confirm.
#[derive(Serialize, ToSchema)]
pub struct TotpOut {
    /// `otpauth://` URI (show once).
    pub uri: String,
    /// The URI as a QR code (SVG).
    pub qr_svg: String,
}

/// A new API token: the secret is shown this once.
#[derive(Serialize, ToSchema)]
pub struct TokenCreated {
    pub token: TokenOut,
    pub secret: String,
}

/// Liveness and readiness.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or what is not.
    pub status: String,
}

// ------------------------------------------------------------------ requests

/// A password login.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginIn {
    pub user: String,
    pub password: String,
    /// The one-time code, when TOTP is enrolled.
    pub totp: Option<String>,
}
root!(LoginIn, "login");

impl std::fmt::Debug for LoginIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginIn(<redacted>)")
    }
}

/// A refresh.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshIn {
    pub refresh_token: String,
}
root!(RefreshIn, "refresh");

/// A logout: the refresh token to end with the session (recommended).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct LogoutIn {
    pub refresh_token: Option<String>,
}
root!(LogoutIn, "logout");

/// A TOTP confirmation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfirmIn {
    pub code: String,
}
root!(TotpConfirmIn, "totp");

/// A password change. `current` is needed when users change their own.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordIn {
    pub current: Option<String>,
    pub new: String,
}
root!(PasswordIn, "password");

/// Prefix delegation of a new server.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DelegationIn {
    /// IPv6 network delegated prefixes come from.
    pub pool: String,
    /// Length of each delegated prefix (default 64).
    pub prefix_len: Option<u8>,
}

/// Allocation strategy.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum StrategyIn {
    Sequential,
    Random,
}

/// Tunnel mode of client configs.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum TunnelIn {
    Full,
    Split,
}

/// A server to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerIn {
    pub name: String,
    /// Interface name (default: the server's name, when valid).
    pub interface: Option<String>,
    pub listen_port: u16,
    /// IPv6 pool (default: a random ULA /64).
    pub ipv6_pool: Option<String>,
    /// IPv4 pool (default: none, IPv6 only).
    pub ipv4_pool: Option<String>,
    /// `HOST:PORT` advertised to clients.
    pub endpoint: Option<String>,
    pub dns: Option<Vec<String>>,
    pub mtu: Option<u16>,
    pub strategy: Option<StrategyIn>,
    pub fwmark: Option<u32>,
    /// The host that runs it (its agent applies it).
    pub host: Option<String>,
    pub tunnel: Option<TunnelIn>,
    pub delegation: Option<DelegationIn>,
    pub quarantine_secs: Option<u64>,
}
root!(ServerIn, "server");

/// Client template changes (absent: unchanged; `null` clears).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplatePatch {
    pub tunnel: Option<TunnelIn>,
    pub extra_allowed_ips: Option<Vec<String>>,
    pub keepalive: Option<u16>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    pub dns: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u16>)]
    pub mtu: Option<Option<u16>>,
}

/// Server changes (absent: unchanged; `null` clears where allowed).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerPatch {
    pub name: Option<String>,
    pub listen_port: Option<u16>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub endpoint: Option<Option<String>>,
    pub dns: Option<Vec<String>>,
    pub mtu: Option<u16>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u32>)]
    pub fwmark: Option<Option<u32>>,
    pub strategy: Option<StrategyIn>,
    pub quarantine_secs: Option<u64>,
    pub active: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub config_path: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub host: Option<Option<String>>,
    pub client_template: Option<TemplatePatch>,
}
root!(ServerPatch, "server");

/// A wg-quick server file to import, with its peers, as one revision.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportIn {
    pub name: String,
    /// The wg-quick text.
    pub config: String,
    pub interface: Option<String>,
    /// Accept (and drop) `PreUp`/`PostUp`/`PreDown`/`PostDown`.
    #[serde(default)]
    pub allow_hooks: bool,
}
root!(ImportIn, "import");

impl std::fmt::Debug for ImportIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportIn")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A revision to restore keys from.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FromRevisionIn {
    pub from: u64,
}
root!(FromRevisionIn, "restore");

/// A rollback target.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackIn {
    pub revision: u64,
}
root!(RollbackIn, "rollback");

/// A peer to add; with `count`, `NAME-1` … `NAME-N` in one revision.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerIn {
    pub name: String,
    pub description: Option<String>,
    /// User name or id (default: the caller, for self-service users).
    pub owner: Option<String>,
    /// Bring your own public key (base64): wgm never holds the private key.
    pub public_key: Option<String>,
    /// `auto` (default) or an address.
    pub ipv6: Option<String>,
    /// `auto` (default), `none` or an address.
    pub ipv4: Option<String>,
    /// `none` (default), `auto` or an IPv6 prefix.
    pub prefix: Option<String>,
    /// Extra networks routed to the peer.
    pub allowed_ips: Option<Vec<String>>,
    /// Client-side `AllowedIPs` override.
    pub client_allowed_ips: Option<Vec<String>>,
    pub keepalive: Option<u16>,
    pub endpoint: Option<String>,
    /// RFC 3339 time or a duration from now (`30d`, `12h`).
    pub expires_at: Option<String>,
    /// Generate a preshared key (default true).
    pub preshared_key: Option<bool>,
    /// Add this many numbered peers in one revision (1–100000).
    pub count: Option<u32>,
}
root!(PeerIn, "peer");

/// Many peers in one revision, all or nothing.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeersIn {
    pub peers: Vec<PeerIn>,
}
root!(PeersIn, "peers");

/// Peer changes (absent: unchanged; `null` clears where allowed).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerPatch {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// User name or id; `null` clears.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub owner: Option<Option<String>>,
    pub allowed_ips: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    pub client_allowed_ips: Option<Option<Vec<String>>>,
    pub keepalive: Option<u16>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub endpoint: Option<Option<String>>,
    /// RFC 3339 time or a duration from now; `null` lifts it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<String>>,
    pub enabled: Option<bool>,
}
root!(PeerPatch, "peer");

/// A role held, optionally on one server (name or id).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRefIn {
    pub role: String,
    pub server: Option<String>,
}

/// A user to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserIn {
    pub name: String,
    #[serde(default)]
    pub roles: Vec<RoleRefIn>,
    pub email: Option<String>,
    /// Initial password (none: a token-only user).
    pub password: Option<String>,
    pub peer_quota: Option<u32>,
}
root!(UserIn, "user");

impl std::fmt::Debug for UserIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserIn")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// User changes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    pub roles: Option<Vec<RoleRefIn>>,
    pub active: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<u32>)]
    pub peer_quota: Option<Option<u32>>,
}
root!(UserPatch, "user");

/// A custom role.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleIn {
    pub description: String,
    /// `resource:action[:own][@server:NAME-or-ID]`.
    pub permissions: Vec<String>,
    pub peer_quota: Option<u32>,
}
root!(RoleIn, "role");

/// An API token to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenIn {
    /// The owner (name or id; default: the caller).
    pub user: Option<String>,
    pub name: String,
    /// Narrow to these permissions, `resource:action[:own][@server:NAME-or-ID]`.
    pub scopes: Option<Vec<String>>,
    /// RFC 3339 time or a duration from now (`30d`).
    pub expires_at: Option<String>,
}
root!(TokenIn, "token");

/// A server's firewall policy (applied by the hosts' agents with `--firewall nft`).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerPolicyDoc {
    /// Forward the peers' traffic to other interfaces (default `true`); when `false`
    /// only peer-to-peer traffic (if allowed) is forwarded.
    #[serde(default = "yes")]
    pub forwarding: bool,
    /// Masquerade the peers' IPv4 traffic leaving through this interface.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub masquerade4: Option<InterfaceName>,
    /// Masquerade the peers' IPv6 traffic leaving through this interface.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub masquerade6: Option<InterfaceName>,
    /// Let peers reach each other through the server (default `false`).
    #[serde(default)]
    pub peer_to_peer: bool,
    /// `allow` (default) or `deny`: the verdict for traffic nothing else decides.
    #[serde(default)]
    #[schema(value_type = String)]
    pub default_verdict: wgm_core::policy::Verdict,
}

fn yes() -> bool {
    true
}

impl From<wgm_core::policy::ServerPolicy> for ServerPolicyDoc {
    fn from(p: wgm_core::policy::ServerPolicy) -> ServerPolicyDoc {
        ServerPolicyDoc {
            forwarding: p.forwarding,
            masquerade4: p.masquerade4,
            masquerade6: p.masquerade6,
            peer_to_peer: p.peer_to_peer,
            default_verdict: p.default_verdict,
        }
    }
}

impl From<ServerPolicyDoc> for wgm_core::policy::ServerPolicy {
    fn from(p: ServerPolicyDoc) -> wgm_core::policy::ServerPolicy {
        wgm_core::policy::ServerPolicy {
            forwarding: p.forwarding,
            masquerade4: p.masquerade4,
            masquerade6: p.masquerade6,
            peer_to_peer: p.peer_to_peer,
            default_verdict: p.default_verdict,
        }
    }
}

/// A server's policy and the revision it is at.
#[derive(Serialize, ToSchema)]
pub struct ServerPolicyOut {
    /// The server's head revision.
    pub revision: u64,
    pub policy: ServerPolicyDoc,
}

/// A peer's firewall policy. Absent fields are unset (`allow` absent or `null`: the
/// server's default verdict decides).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerPolicyDoc {
    /// Destinations the peer may reach, each `CIDR[:tcp|udp|icmp[:PORT[-PORT]]]`; `[]`
    /// allows nothing.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub allow: Option<Vec<wgm_core::policy::FilterRule>>,
    /// The most the peer may send, like `10mbit`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub rate_up: Option<wgm_core::policy::Rate>,
    /// The most the peer may receive, like `10mbit`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub rate_down: Option<wgm_core::policy::Rate>,
    /// Traffic per period, like `10GiB/30d`; a new quota counts from when it is set.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub quota: Option<wgm_core::policy::Quota>,
    /// `drop` (default) or `report`, once the quota is used up.
    #[serde(default)]
    #[schema(value_type = String)]
    pub quota_action: wgm_core::policy::QuotaAction,
    /// When the quota's first period started (Unix seconds); set by the server.
    #[serde(default)]
    pub quota_start: u64,
}

impl From<wgm_core::policy::PeerPolicy> for PeerPolicyDoc {
    fn from(p: wgm_core::policy::PeerPolicy) -> PeerPolicyDoc {
        PeerPolicyDoc {
            allow: p.allow,
            rate_up: p.rate_up,
            rate_down: p.rate_down,
            quota: p.quota,
            quota_action: p.quota_action,
            quota_start: p.quota_start,
        }
    }
}

root!(ServerPolicyDoc, "policy");
root!(PeerPolicyDoc, "policy");
