//! Role-based access control: permissions, roles, principals and the decision function.
//!
//! A [`Permission`] is a [`Resource`], an [`Action`], a [`Scope`] (every server, or one
//! server) and an ownership flag: an `own_only` permission applies only to objects the
//! principal owns (its own peers, its own tokens, its own user record). A [`Role`] is a
//! named set of permissions; a [`Principal`] is an authenticated user with its roles and,
//! when it authenticated with an API token, the token's scope, which can only narrow the
//! roles: a request is allowed when a role permission **and** (for a token) a token-scope
//! permission both match it.
//!
//! [`authorize`] is the one decision function; the `Manager` calls it first in every
//! operation, with a [`Target`] describing the object (its server and its owner), so
//! object-level checks (a `user` touches only peers it owns) are part of the same
//! decision. [`check_grant`] refuses handing out more than the granter holds (roles given
//! to users, permissions put into custom roles, API token scopes).
//!
//! ## The catalogue
//!
//! | resource | actions | object owner |
//! |---|---|---|
//! | `server` | read, create, update, delete, apply | — |
//! | `peer` | read, create, update, delete, assign (change owner, or create for someone else) | the peer's owner |
//! | `user` | read, create, update, delete | the user itself |
//! | `role` | read, create, update, delete, assign (give roles to users) | — |
//! | `token` | read, create, delete (revoke) | the token's owner |
//! | `audit` | read | — |
//! | `secret` | export (private keys, PSKs: client configs with keys, server key export) | the peer's owner |
//! | `config` | read (history, diff), rollback | — |
//!
//! Fields a holder may not change on its own objects — a user's roles, its enabled flag
//! or name, a peer's owner or server — need a permission that is not `own_only`
//! ([`authorize_elevated`]) or a separate action (`role:assign`, `peer:assign`).
//!
//! ## Built-in roles ([`builtin_roles`])
//!
//! - `admin`: everything.
//! - `operator`: servers and peers (including apply, owner changes, secret export, history
//!   and rollback) and reading users to pick owners; no user, role or audit management.
//! - `auditor`: reads everything, including audit and history; never secrets, never writes.
//! - `user`: self-service on its own peers (read, create, update, delete, export their
//!   configs) within a peer quota; reads servers to pick one.
//!
//! Every built-in role may read and update its own user record (password, TOTP) and
//! manage its own API tokens.
//!
//! ```
//! # futures::executor::block_on(async {
//! use std::sync::Arc;
//! use uuid::Uuid;
//! use wgm_core::manager::{Manager, NewToken, NewUser};
//! use wgm_core::names::{RoleName, UserName};
//! use wgm_core::rbac::{authorize, Action, Resource, Target};
//! use wgm_core::seal::{MasterKey, Sealer};
//! use wgm_core::store::MemoryStore;
//!
//! let builder = Manager::builder(Arc::new(MemoryStore::new()), Sealer::new(MasterKey::generate()));
//! let root = builder.local_admin_capability().principal("root");
//! let m = builder.build();
//! // Principals come from authenticating: here with an API token of alice, a `user`.
//! let alice = m.create_user(&root, NewUser::new(UserName::new("alice")?, RoleName::new("user")?)).await?;
//! let token = NewToken { user: alice.id, name: "laptop".into(), scopes: None, expires_at: None };
//! let (_, plaintext) = m.create_token(&root, token).await?;
//! let p = m.authenticate_token(&plaintext).await?;
//!
//! let server = Uuid::new_v4();
//! authorize(&p, Resource::Peer, Action::Update, Target::peer(server, Some(alice.id.0)))?;
//! let bobs = Target::peer(server, Some(Uuid::new_v4()));
//! assert!(authorize(&p, Resource::Peer, Action::Update, bobs).is_err());
//! # Ok::<(), wgm_core::Error>(())
//! # }).unwrap();
//! ```

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::auth::token::TokenId;
use crate::names::{Description, RoleName, UserName};
use crate::{Error, Result};

/// How many peers a holder of the built-in `user` role may own.
pub const DEFAULT_USER_PEER_QUOTA: u32 = 10;

/// What a permission is about.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Resource {
    /// Servers (the managed interfaces) and their settings.
    Server,
    /// Peers (clients) of a server.
    Peer,
    /// User accounts.
    User,
    /// Roles and role assignment.
    Role,
    /// API tokens.
    Token,
    /// The audit log.
    Audit,
    /// Export of secrets: private keys and preshared keys (client configs with keys).
    Secret,
    /// Configuration history: revisions, diffs, rollback.
    Config,
}

impl Resource {
    /// Every resource.
    pub const ALL: [Resource; 8] = [
        Resource::Server,
        Resource::Peer,
        Resource::User,
        Resource::Role,
        Resource::Token,
        Resource::Audit,
        Resource::Secret,
        Resource::Config,
    ];

    /// The stable lower-case name (`peer`).
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Server => "server",
            Resource::Peer => "peer",
            Resource::User => "user",
            Resource::Role => "role",
            Resource::Token => "token",
            Resource::Audit => "audit",
            Resource::Secret => "secret",
            Resource::Config => "config",
        }
    }

    /// The actions that mean something on this resource (the catalogue).
    pub fn actions(self) -> &'static [Action] {
        use Action::{
            Apply, Assign, Create, Delete, Export, Policy, Read, Rollback, Route, Update,
        };
        match self {
            Resource::Server => &[Read, Create, Update, Delete, Apply, Policy],
            Resource::Peer => &[Read, Create, Update, Delete, Assign, Route, Policy],
            Resource::Role => &[Read, Create, Update, Delete, Assign],
            Resource::User => &[Read, Create, Update, Delete],
            Resource::Token => &[Read, Create, Delete],
            Resource::Audit => &[Read],
            Resource::Secret => &[Export],
            Resource::Config => &[Read, Rollback],
        }
    }

    /// Whether objects of this resource can belong to one server (so a server-scoped
    /// permission on it means something): servers, peers, secrets, history, audit.
    pub fn server_bound(self) -> bool {
        matches!(
            self,
            Resource::Server
                | Resource::Peer
                | Resource::Secret
                | Resource::Config
                | Resource::Audit
        )
    }

    /// Whether objects of this resource have an owner (so `own_only` means something).
    pub fn has_owner(self) -> bool {
        matches!(
            self,
            Resource::Peer | Resource::User | Resource::Token | Resource::Secret
        )
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Resource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Resource::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| Error::invalid("permission.resource", "unknown resource"))
    }
}

/// What is done to a resource.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// Show or list.
    Read,
    /// Create.
    Create,
    /// Change (including enable/disable and key rotation of peers).
    Update,
    /// Delete or revoke.
    Delete,
    /// Push desired state to the live interface.
    Apply,
    /// Change ownership or membership (a peer's owner, a user's roles).
    Assign,
    /// Reveal a secret.
    Export,
    /// Roll configuration back to an earlier revision.
    Rollback,
    /// Route networks to a peer: server-side allowed IPs beyond the peer's own
    /// addresses (extra allowed IPs) and delegated prefixes. Installing such a route on
    /// the server sends other people's traffic to that peer, so it is a permission of
    /// its own that the built-in `user` role does not hold.
    Route,
    /// Change firewall policy: a server's (forwarding, masquerading, peer-to-peer, the
    /// default verdict) or a peer's (allow list, rate limits, quota). A policy limits
    /// what a peer may do, so the built-in `user` role does not hold it, not even on
    /// its own peers.
    Policy,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 10] = [
        Action::Read,
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::Apply,
        Action::Assign,
        Action::Export,
        Action::Rollback,
        Action::Route,
        Action::Policy,
    ];

    /// The stable lower-case name (`update`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Apply => "apply",
            Action::Assign => "assign",
            Action::Export => "export",
            Action::Rollback => "rollback",
            Action::Route => "route",
            Action::Policy => "policy",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| Error::invalid("permission.action", "unknown action"))
    }
}

/// Where a permission applies.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every server, and objects that belong to no server (users, roles, tokens, audit).
    #[default]
    Global,
    /// Objects of this one server only.
    Server(Uuid),
}

impl Scope {
    /// Whether this scope includes every object `other` includes.
    pub fn covers(self, other: Scope) -> bool {
        match (self, other) {
            (Scope::Global, _) => true,
            (Scope::Server(a), Scope::Server(b)) => a == b,
            (Scope::Server(_), Scope::Global) => false,
        }
    }
}

/// One right: `resource:action`, in a scope, optionally only on the holder's own objects.
///
/// Text form (for the CLI and token scopes): `resource:action`, then `:own` for an
/// own-only permission, then `@server:<uuid>` for a server scope, e.g.
/// `peer:update:own@server:67e55044-10b1-426f-9247-bb680e5fe0c8`.
///
/// ```
/// use wgm_core::rbac::{Action, Permission, Resource};
/// let p: Permission = "peer:update:own".parse()?;
/// assert_eq!(p, Permission::new(Resource::Peer, Action::Update).own());
/// assert!("audit:delete".parse::<Permission>().is_err()); // not in the catalogue
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Permission {
    /// The resource.
    pub resource: Resource,
    /// The action.
    pub action: Action,
    /// Where it applies.
    #[serde(default)]
    pub scope: Scope,
    /// Only on objects the principal owns.
    #[serde(default)]
    pub own_only: bool,
}

impl Permission {
    /// `resource:action` everywhere, on every object.
    pub const fn new(resource: Resource, action: Action) -> Self {
        Self {
            resource,
            action,
            scope: Scope::Global,
            own_only: false,
        }
    }

    /// The same permission limited to server `id`.
    #[must_use]
    pub const fn on_server(mut self, id: Uuid) -> Self {
        self.scope = Scope::Server(id);
        self
    }

    /// The same permission limited to the holder's own objects.
    #[must_use]
    pub const fn own(mut self) -> Self {
        self.own_only = true;
        self
    }

    /// Check the permission against the catalogue: the action exists on the resource,
    /// and `own_only` is set only on resources whose objects have an owner.
    pub fn validate(&self) -> Result<()> {
        if !self.resource.actions().contains(&self.action) {
            return Err(Error::invalid(
                "permission",
                format!("{}:{} is not in the catalogue", self.resource, self.action),
            ));
        }
        if self.own_only && !self.resource.has_owner() {
            return Err(Error::invalid(
                "permission",
                format!(
                    "{} objects have no owner, so :own does not apply",
                    self.resource
                ),
            ));
        }
        Ok(())
    }

    /// Whether this permission allows `action` on `resource` for the object `target`,
    /// when held by user `holder`.
    pub fn matches(
        &self,
        resource: Resource,
        action: Action,
        target: Target,
        holder: Uuid,
    ) -> bool {
        self.resource == resource
            && self.action == action
            && match self.scope {
                Scope::Global => true,
                Scope::Server(s) => target.server == Some(s),
            }
            && (!self.own_only || target.owner == Some(holder))
    }

    /// Whether holding `self` entitles one to hand out `other` to `grantee`.
    fn covers(&self, other: &Permission, grantee: Grantee) -> bool {
        self.resource == other.resource
            && self.action == other.action
            && self.scope.covers(other.scope)
            && (!self.own_only || (other.own_only && grantee == Grantee::Myself))
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource, self.action)?;
        if self.own_only {
            f.write_str(":own")?;
        }
        if let Scope::Server(id) = self.scope {
            write!(f, "@server:{id}")?;
        }
        Ok(())
    }
}

impl FromStr for Permission {
    type Err = Error;

    /// Parse the text form and [`Permission::validate`] it.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "permission",
                "must look like resource:action[:own][@server:<uuid>]",
            )
        };
        let (body, scope) = match s.split_once('@') {
            None => (s, Scope::Global),
            Some((body, scope)) => {
                let id = scope.strip_prefix("server:").ok_or_else(bad)?;
                let id = Uuid::try_parse(id).map_err(|_| bad())?;
                (body, Scope::Server(id))
            }
        };
        let mut parts = body.split(':');
        let resource: Resource = parts.next().ok_or_else(bad)?.parse()?;
        let action: Action = parts.next().ok_or_else(bad)?.parse()?;
        let own_only = match parts.next() {
            None => false,
            Some("own") => true,
            Some(_) => return Err(bad()),
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        let p = Permission {
            resource,
            action,
            scope,
            own_only,
        };
        p.validate()?;
        Ok(p)
    }
}

/// A named set of permissions.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Role {
    /// Unique name (case-insensitive).
    pub name: RoleName,
    /// What the role is for.
    pub description: Description,
    /// The permissions it grants.
    pub permissions: Vec<Permission>,
    /// Built-in roles cannot be edited or deleted.
    pub builtin: bool,
    /// How many peers a holder may own through this role (`None`: no limit). Only
    /// meaningful on roles that grant `peer:create`.
    #[serde(default)]
    pub peer_quota: Option<u32>,
}

impl Role {
    /// A custom role: permissions validated against the catalogue, duplicates removed,
    /// sorted. Its name must not be a built-in role's.
    pub fn custom(
        name: RoleName,
        description: Description,
        permissions: Vec<Permission>,
    ) -> Result<Self> {
        if is_builtin_name(&name) {
            return Err(Error::invalid(
                "role.name",
                "is the name of a built-in role",
            ));
        }
        let role = Role {
            name,
            description,
            permissions: normalise(permissions)?,
            builtin: false,
            peer_quota: None,
        };
        Ok(role)
    }

    /// The same role with a peer quota.
    #[must_use]
    pub fn with_peer_quota(mut self, quota: Option<u32>) -> Self {
        self.peer_quota = quota;
        self
    }

    /// The role as assigned on one server only: its global permissions on server-bound
    /// resources ([`Resource::server_bound`]) are limited to server `id`; its own-only
    /// permissions on users and tokens (self-service) stay; every other permission on
    /// resources outside servers (user, role and token management) is dropped, so a role
    /// assigned on one server never grants anything beyond it.
    ///
    /// ```
    /// use uuid::Uuid;
    /// use wgm_core::rbac::{builtin_role, Action, Resource, Scope};
    /// let a = Uuid::new_v4();
    /// let admin_of_a = builtin_role("admin").unwrap().limited_to_server(a);
    /// assert!(admin_of_a.permissions.iter().all(|p| p.scope == Scope::Server(a) || p.own_only));
    /// assert!(!admin_of_a.permissions.iter().any(|p| p.resource == Resource::User && p.action == Action::Create));
    /// ```
    #[must_use]
    pub fn limited_to_server(&self, id: Uuid) -> Role {
        let mut role = self.clone();
        role.permissions = self
            .permissions
            .iter()
            .filter_map(|p| {
                if p.resource.server_bound() {
                    let scope = match p.scope {
                        Scope::Global => Scope::Server(id),
                        Scope::Server(s) if s == id => p.scope,
                        // Already limited to another server: nothing left on this one.
                        Scope::Server(_) => return None,
                    };
                    Some(Permission { scope, ..*p })
                } else if p.own_only {
                    Some(*p)
                } else {
                    None
                }
            })
            .collect();
        role
    }

    /// Check every permission against the catalogue.
    pub fn validate(&self) -> Result<()> {
        for (i, p) in self.permissions.iter().enumerate() {
            p.validate()
                .map_err(|e| e.in_field(&format!("role.permissions[{i}]")))?;
        }
        Ok(())
    }
}

fn normalise(mut permissions: Vec<Permission>) -> Result<Vec<Permission>> {
    for (i, p) in permissions.iter().enumerate() {
        p.validate()
            .map_err(|e| e.in_field(&format!("role.permissions[{i}]")))?;
    }
    permissions.sort_unstable();
    permissions.dedup();
    Ok(permissions)
}

/// The names of the built-in roles.
pub const BUILTIN_ROLE_NAMES: [&str; 4] = ["admin", "operator", "auditor", "user"];

/// Whether `name` is (case-insensitively) the name of a built-in role.
pub fn is_builtin_name(name: &RoleName) -> bool {
    BUILTIN_ROLE_NAMES.contains(&name.key().as_str())
}

/// The four built-in roles, in the order `admin`, `operator`, `auditor`, `user`.
pub fn builtin_roles() -> Vec<Role> {
    BUILTIN_ROLE_NAMES
        .iter()
        .filter_map(|n| builtin_role(n))
        .collect()
}

/// The built-in role called `name`, if there is one.
pub fn builtin_role(name: &str) -> Option<Role> {
    use Action::{Apply, Assign, Create, Delete, Export, Policy, Read, Rollback, Route, Update};
    use Resource::{Audit, Config, Peer, Secret, Server, Token, User};
    let p = Permission::new;
    // Every built-in role manages its own account and its own API tokens.
    let self_service = [
        p(User, Read).own(),
        p(User, Update).own(),
        p(Token, Read).own(),
        p(Token, Create).own(),
        p(Token, Delete).own(),
    ];
    let (description, permissions, quota): (&str, Vec<Permission>, Option<u32>) = match name {
        "admin" => (
            "Everything, on every server",
            Resource::ALL
                .iter()
                .flat_map(|&r| r.actions().iter().map(move |&a| Permission::new(r, a)))
                .collect(),
            None,
        ),
        "operator" => (
            "Servers and peers: create, change, route, firewall policy, apply, export configs, history and rollback",
            [
                p(Server, Read),
                p(Server, Create),
                p(Server, Update),
                p(Server, Delete),
                p(Server, Apply),
                p(Server, Policy),
                p(Peer, Policy),
                p(Peer, Read),
                p(Peer, Create),
                p(Peer, Update),
                p(Peer, Delete),
                p(Peer, Assign),
                p(Peer, Route),
                p(Secret, Export),
                p(Config, Read),
                p(Config, Rollback),
                p(User, Read),
            ]
            .into_iter()
            .chain(self_service)
            .collect(),
            None,
        ),
        "auditor" => (
            "Reads everything, including the audit log and history; never secrets",
            [
                p(Server, Read),
                p(Peer, Read),
                p(User, Read),
                p(Resource::Role, Read),
                p(Token, Read),
                p(Audit, Read),
                p(Config, Read),
            ]
            .into_iter()
            .chain(self_service)
            .collect(),
            None,
        ),
        "user" => (
            "Self-service on own peers within a quota",
            [
                p(Server, Read),
                p(Peer, Read).own(),
                p(Peer, Create).own(),
                p(Peer, Update).own(),
                p(Peer, Delete).own(),
                p(Secret, Export).own(),
            ]
            .into_iter()
            .chain(self_service)
            .collect(),
            Some(DEFAULT_USER_PEER_QUOTA),
        ),
        _ => return None,
    };
    // The names and descriptions above are constants that satisfy the name rules; a
    // failure here would be a bug caught by the tests, so it maps to "no such role".
    let name = RoleName::new(name).ok()?;
    let description = Description::new(description).ok()?;
    let mut permissions = permissions;
    permissions.sort_unstable();
    permissions.dedup();
    Some(Role {
        name,
        description,
        permissions,
        builtin: true,
        peer_quota: quota,
    })
}

/// The built-in roles as a Markdown table: one row per permission of the catalogue,
/// one column per built-in role; a cell is `all` (every object), `own` (the holder's own
/// objects only) or `—`. `docs/security.md` carries this table, and a test checks that
/// it is current.
///
/// ```
/// let t = wgm_core::rbac::builtin_role_table();
/// assert!(t.contains("| `peer:route` | all | all | — | — |"));
/// assert!(t.contains("| `peer:update` | all | all | — | own |"));
/// ```
pub fn builtin_role_table() -> String {
    use std::fmt::Write as _;
    let roles = builtin_roles();
    let mut out = String::from("| permission |");
    for r in &roles {
        // Writing to a String cannot fail.
        let _ = write!(out, " {} |", r.name);
    }
    out.push_str("\n|---|");
    for _ in &roles {
        out.push_str("---|");
    }
    out.push('\n');
    for resource in Resource::ALL {
        for &action in resource.actions() {
            let _ = write!(out, "| `{resource}:{action}` |");
            for r in &roles {
                let held = r
                    .permissions
                    .iter()
                    .filter(|p| p.resource == resource && p.action == action);
                let mut cell = "—";
                for p in held {
                    if p.own_only {
                        if cell == "—" {
                            cell = "own";
                        }
                    } else {
                        cell = "all";
                    }
                }
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
    }
    out
}

/// Whether `role` grants every permission of the catalogue globally on every object
/// (built-in `admin`, or a custom role equivalent to it).
pub fn is_admin(role: &Role) -> bool {
    holds_admin(std::slice::from_ref(role))
}

/// Whether `roles` together grant every permission of the catalogue globally on every
/// object. The `Manager` uses this to refuse removing or demoting the last admin.
pub fn holds_admin(roles: &[Role]) -> bool {
    Resource::ALL.iter().all(|&r| {
        r.actions().iter().all(|&a| {
            roles.iter().flat_map(|role| &role.permissions).any(|p| {
                p.resource == r && p.action == a && p.scope == Scope::Global && !p.own_only
            })
        })
    })
}

/// The object a request is about: which server it belongs to and who owns it.
///
/// Leave `server` empty for objects outside any server (users, roles, tokens, the whole
/// audit log, a server not created yet); leave `owner` empty for objects nobody owns
/// (servers). A user record's owner is the user itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// The server the object belongs to.
    pub server: Option<Uuid>,
    /// The user who owns the object.
    pub owner: Option<Uuid>,
}

impl Target {
    /// An object outside any server and owned by nobody (the role catalogue, the audit
    /// log, "create a server").
    pub const fn none() -> Self {
        Self {
            server: None,
            owner: None,
        }
    }

    /// Server `id` itself, or an unowned object of it (its history, its private key).
    pub const fn server(id: Uuid) -> Self {
        Self {
            server: Some(id),
            owner: None,
        }
    }

    /// A peer (or its secrets) on `server`, owned by `owner`.
    pub const fn peer(server: Uuid, owner: Option<Uuid>) -> Self {
        Self {
            server: Some(server),
            owner,
        }
    }

    /// An object outside any server owned by `owner` (a user record, an API token).
    pub const fn owned_by(owner: Uuid) -> Self {
        Self {
            server: None,
            owner: Some(owner),
        }
    }
}

/// How a principal authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A person with a password (and TOTP) or a JWT issued after that.
    Human,
    /// An API token of the user.
    ApiToken {
        /// The token's id (for audit).
        token_id: TokenId,
    },
    /// A local process mapped to a wgm user (for example the CLI run by a unix user).
    Local {
        /// The unix user name.
        unix_user: String,
    },
}

/// An authenticated caller: a user, its roles, and — for an API token — the token's
/// scope, which only narrows what the roles allow.
///
/// A principal cannot be made from parts: its fields are private and it has no public
/// constructor. It is obtained only by authenticating through the `Manager` (password
/// and TOTP, then a JWT: [`crate::manager::Manager::login`] and
/// [`crate::manager::Manager::authenticate_jwt`]; an API token:
/// [`crate::manager::Manager::authenticate_token`]), or from the local-administrator
/// capability a binary chooses to hold ([`crate::manager::LocalAdmin`]). So holding a
/// `Principal` means someone proved who it is, and every authorization decision starts
/// from that proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    user_id: Uuid,
    username: UserName,
    kind: PrincipalKind,
    roles: Vec<Role>,
    token_scope: Option<Vec<Permission>>,
    /// The request's precondition on server writes ([`Principal::if_revision`]).
    /// (Revision numbers: `rbac` sits below `model` in the module layering.)
    if_revision: Option<Vec<u64>>,
}

impl Principal {
    /// A human principal with `roles`. Crate-private: only authentication (and the
    /// local-administrator capability) make principals.
    pub(crate) fn new(user_id: Uuid, username: UserName, roles: Vec<Role>) -> Self {
        Self {
            user_id,
            username,
            kind: PrincipalKind::Human,
            roles,
            token_scope: None,
            if_revision: None,
        }
    }

    /// The same user acting through API token `token_id` limited to `scope`.
    #[must_use]
    pub(crate) fn with_token(mut self, token_id: TokenId, scope: Vec<Permission>) -> Self {
        self.kind = PrincipalKind::ApiToken { token_id };
        self.token_scope = Some(scope);
        self
    }

    /// The same principal, for requests whose server writes must happen only while the
    /// server is at one of `revisions` (revision numbers, as in
    /// [`RevisionNo`](crate::model::RevisionNo); HTTP's `If-Match`). A write of such a principal
    /// commits with that revision as the store's compare-and-swap, so the condition holds
    /// across processes and copies: if the server has moved on (before the write, or
    /// between its read and its commit), the write changes nothing and fails with
    /// [`ConflictKind::StaleRevision`](crate::error::ConflictKind::StaleRevision), with no
    /// retry. An empty `revisions` matches nothing. Reads ignore the condition; it does not
    /// change what the principal may do.
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::sync::Arc;
    /// use wgm_core::manager::{Manager, NewPeer, NewServer};
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
    /// let at = m.get_server(&admin, s.id).await.unwrap().revision;
    /// let stale = admin.clone().if_revision([at.0 + 1]);
    /// let e = m.add_peer(&stale, s.id, NewPeer::new(PeerName::new("a").unwrap())).await.unwrap_err();
    /// assert!(e.is_stale_revision());
    /// let current = admin.clone().if_revision([at.0]);
    /// m.add_peer(&current, s.id, NewPeer::new(PeerName::new("a").unwrap())).await.unwrap();
    /// // The condition held once: the server has moved on.
    /// assert!(m.add_peer(&current, s.id, NewPeer::new(PeerName::new("b").unwrap())).await.unwrap_err().is_stale_revision());
    /// # });
    /// ```
    #[must_use]
    pub fn if_revision(mut self, revisions: impl IntoIterator<Item = u64>) -> Self {
        self.if_revision = Some(revisions.into_iter().collect());
        self
    }

    /// The revisions [`Principal::if_revision`] requires of server writes, if any.
    pub fn required_revisions(&self) -> Option<&[u64]> {
        self.if_revision.as_deref()
    }

    /// The same user as a local process of `unix_user`.
    #[must_use]
    pub(crate) fn local(mut self, unix_user: impl Into<String>) -> Self {
        self.kind = PrincipalKind::Local {
            unix_user: unix_user.into(),
        };
        self
    }

    /// The user's id (the nil id for a local administrator, who is no stored user).
    pub fn user_id(&self) -> Uuid {
        self.user_id
    }

    /// The user's name (for audit and messages; `local` for a local administrator).
    pub fn username(&self) -> &UserName {
        &self.username
    }

    /// How the caller authenticated.
    pub fn kind(&self) -> &PrincipalKind {
        &self.kind
    }

    /// Whether this is a local administrator ([`PrincipalKind::Local`]).
    pub fn is_local(&self) -> bool {
        matches!(self.kind, PrincipalKind::Local { .. })
    }

    /// The user's roles, as assigned (a role assigned on one server is already limited
    /// to it).
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// For an API token: the permissions it was limited to. `None` for humans and local
    /// administrators.
    pub fn token_scope(&self) -> Option<&[Permission]> {
        self.token_scope.as_deref()
    }

    /// Every permission the roles grant (before any token narrowing).
    pub fn role_permissions(&self) -> impl Iterator<Item = &Permission> {
        self.roles.iter().flat_map(|r| &r.permissions)
    }

    /// Whether the request is allowed (see [`authorize`]).
    pub fn allows(&self, resource: Resource, action: Action, target: Target) -> bool {
        self.decide(resource, action, target, false).is_ok()
    }

    /// Whether the roles (ignoring any token scope) make this user an admin.
    pub fn is_admin(&self) -> bool {
        holds_admin(&self.roles) && self.token_scope.is_none()
    }

    /// How many peers this principal may own: `None` when a role grants `peer:create`
    /// without a quota (or for everyone's peers), otherwise the largest quota among roles
    /// granting `peer:create`, and `Some(0)` when no role grants it.
    pub fn peer_quota(&self) -> Option<u32> {
        let mut quota = Some(0u32);
        for role in &self.roles {
            let creates = role
                .permissions
                .iter()
                .filter(|p| p.resource == Resource::Peer && p.action == Action::Create);
            let mut any = false;
            for p in creates {
                any = true;
                if !p.own_only {
                    return None;
                }
            }
            if any {
                match role.peer_quota {
                    None => return None,
                    Some(q) => quota = quota.map(|cur| cur.max(q)),
                }
            }
        }
        quota
    }

    fn decide(
        &self,
        resource: Resource,
        action: Action,
        target: Target,
        elevated: bool,
    ) -> Result<()> {
        let holder = self.user_id;
        let counts = |p: &&Permission| !(elevated && p.own_only);
        let by_role = self
            .role_permissions()
            .filter(counts)
            .any(|p| p.matches(resource, action, target, holder));
        if !by_role {
            return Err(Error::denied(describe(
                resource, action, target, holder, elevated, "",
            )));
        }
        if let Some(scope) = &self.token_scope {
            if !scope
                .iter()
                .filter(counts)
                .any(|p| p.matches(resource, action, target, holder))
            {
                return Err(Error::denied(describe(
                    resource,
                    action,
                    target,
                    holder,
                    elevated,
                    " (outside the API token's scope)",
                )));
            }
        }
        Ok(())
    }
}

fn describe(
    resource: Resource,
    action: Action,
    target: Target,
    holder: Uuid,
    elevated: bool,
    suffix: &str,
) -> String {
    let mut s = format!("{resource}:{action}");
    if let Some(server) = target.server {
        s.push_str(" on server ");
        s.push_str(&server.to_string());
    }
    if let Some(owner) = target.owner {
        if owner != holder {
            s.push_str(" for an object of another user");
        } else if elevated {
            s.push_str(" beyond own objects");
        }
    }
    s.push_str(suffix);
    s
}

/// Allow or deny `action` on `resource` for the object `target`. Denials are
/// [`Error::PermissionDenied`] naming the permission and the server, e.g.
/// `permission denied: peer:update on server <id> for an object of another user`.
pub fn authorize(
    principal: &Principal,
    resource: Resource,
    action: Action,
    target: Target,
) -> Result<()> {
    principal.decide(resource, action, target, false)
}

/// Like [`authorize`], but `own_only` permissions do not count: for changes a holder may
/// not make even to its own objects (its own roles, enabled flag or user name).
pub fn authorize_elevated(
    principal: &Principal,
    resource: Resource,
    action: Action,
    target: Target,
) -> Result<()> {
    principal.decide(resource, action, target, true)
}

/// Who receives the permissions in a [`check_grant`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grantee {
    /// The granter itself (an API token for one's own use): own-only permissions may be
    /// passed on, since "own" stays the same user.
    Myself,
    /// Someone else (a role given to another user, a custom role anyone may hold):
    /// own-only permissions would apply to *their* objects, so they need a permission
    /// that is not own-only.
    Others,
}

/// Refuse handing out more than the granter holds: each of `permissions` must be in the
/// catalogue and covered by one of the granter's role permissions — same resource and
/// action, a scope at least as wide, and not own-only unless passed on own-only to
/// oneself — and, when the granter is itself an API token, by its token scope too.
pub fn check_grant(granter: &Principal, permissions: &[Permission], to: Grantee) -> Result<()> {
    for (i, p) in permissions.iter().enumerate() {
        p.validate()
            .map_err(|e| e.in_field(&format!("permissions[{i}]")))?;
        let held = granter.role_permissions().any(|q| q.covers(p, to))
            && granter
                .token_scope
                .as_ref()
                .is_none_or(|scope| scope.iter().any(|q| q.covers(p, to)));
        if !held {
            return Err(Error::denied(format!(
                "cannot grant {p}: the granter does not hold it"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    const ME: u128 = 1;
    const OTHER: u128 = 2;
    const SERVER_A: u128 = 0xa;
    const SERVER_B: u128 = 0xb;

    fn principal(roles: Vec<Role>) -> Principal {
        Principal::new(uid(ME), UserName::new("me").unwrap(), roles)
    }

    /// The expected decisions for the four built-in roles, for every (resource, action)
    /// pair: two characters per role, on an object the principal owns and on one another
    /// user owns (`Y` allowed, `.` denied). For unowned resources both characters agree.
    const MATRIX: &str = "
        #                 admin operator auditor user
        server:read       YY    YY       YY      YY
        server:create     YY    YY       ..      ..
        server:update     YY    YY       ..      ..
        server:delete     YY    YY       ..      ..
        server:apply      YY    YY       ..      ..
        server:assign     ..    ..       ..      ..
        server:export     ..    ..       ..      ..
        server:rollback   ..    ..       ..      ..
        server:route      ..    ..       ..      ..
        server:policy     YY    YY       ..      ..
        peer:read         YY    YY       YY      Y.
        peer:create       YY    YY       ..      Y.
        peer:update       YY    YY       ..      Y.
        peer:delete       YY    YY       ..      Y.
        peer:apply        ..    ..       ..      ..
        peer:assign       YY    YY       ..      ..
        peer:export       ..    ..       ..      ..
        peer:rollback     ..    ..       ..      ..
        peer:route        YY    YY       ..      ..
        peer:policy       YY    YY       ..      ..
        user:read         YY    YY       YY      Y.
        user:create       YY    ..       ..      ..
        user:update       YY    Y.       Y.      Y.
        user:delete       YY    ..       ..      ..
        user:apply        ..    ..       ..      ..
        user:assign       ..    ..       ..      ..
        user:export       ..    ..       ..      ..
        user:rollback     ..    ..       ..      ..
        user:route        ..    ..       ..      ..
        user:policy       ..    ..       ..      ..
        role:read         YY    ..       YY      ..
        role:create       YY    ..       ..      ..
        role:update       YY    ..       ..      ..
        role:delete       YY    ..       ..      ..
        role:apply        ..    ..       ..      ..
        role:assign       YY    ..       ..      ..
        role:export       ..    ..       ..      ..
        role:rollback     ..    ..       ..      ..
        role:route        ..    ..       ..      ..
        role:policy       ..    ..       ..      ..
        token:read        YY    Y.       YY      Y.
        token:create      YY    Y.       Y.      Y.
        token:update      ..    ..       ..      ..
        token:delete      YY    Y.       Y.      Y.
        token:apply       ..    ..       ..      ..
        token:assign      ..    ..       ..      ..
        token:export      ..    ..       ..      ..
        token:rollback    ..    ..       ..      ..
        token:route       ..    ..       ..      ..
        token:policy      ..    ..       ..      ..
        audit:read        YY    ..       YY      ..
        audit:create      ..    ..       ..      ..
        audit:update      ..    ..       ..      ..
        audit:delete      ..    ..       ..      ..
        audit:apply       ..    ..       ..      ..
        audit:assign      ..    ..       ..      ..
        audit:export      ..    ..       ..      ..
        audit:rollback    ..    ..       ..      ..
        audit:route       ..    ..       ..      ..
        audit:policy      ..    ..       ..      ..
        secret:read       ..    ..       ..      ..
        secret:create     ..    ..       ..      ..
        secret:update     ..    ..       ..      ..
        secret:delete     ..    ..       ..      ..
        secret:apply      ..    ..       ..      ..
        secret:assign     ..    ..       ..      ..
        secret:export     YY    YY       ..      Y.
        secret:rollback   ..    ..       ..      ..
        secret:route      ..    ..       ..      ..
        secret:policy     ..    ..       ..      ..
        config:read       YY    YY       YY      ..
        config:create     ..    ..       ..      ..
        config:update     ..    ..       ..      ..
        config:delete     ..    ..       ..      ..
        config:apply      ..    ..       ..      ..
        config:assign     ..    ..       ..      ..
        config:export     ..    ..       ..      ..
        config:rollback   YY    YY       ..      ..
        config:route      ..    ..       ..      ..
        config:policy     ..    ..       ..      ..
    ";

    /// Parsed matrix: (resource, action) → per role (own, other).
    /// One matrix row: resource, action, and per built-in role (own, other).
    type Row = (Resource, Action, [(bool, bool); 4]);

    fn matrix() -> Vec<Row> {
        let mut rows = Vec::new();
        for line in MATRIX
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols.len(), 5, "{line}");
            let (r, a) = cols[0].split_once(':').unwrap();
            let cell = |s: &str| {
                let b = s.as_bytes();
                assert_eq!(b.len(), 2, "{line}");
                (b[0] == b'Y', b[1] == b'Y')
            };
            rows.push((
                r.parse().unwrap(),
                a.parse().unwrap(),
                [cell(cols[1]), cell(cols[2]), cell(cols[3]), cell(cols[4])],
            ));
        }
        rows
    }

    /// The object used for `resource`: on `server` when the resource lives on a server,
    /// owned by `owner` when it has owners.
    fn target(resource: Resource, action: Action, server: Uuid, owner: Uuid) -> Target {
        match resource {
            Resource::Server if action == Action::Create => Target::none(), // not created yet
            Resource::Server | Resource::Config => Target::server(server),
            Resource::Peer | Resource::Secret => Target::peer(server, Some(owner)),
            Resource::User | Resource::Token => Target::owned_by(owner),
            Resource::Role | Resource::Audit => Target::none(),
        }
    }

    fn lives_on_a_server(resource: Resource, action: Action) -> bool {
        target(resource, action, uid(SERVER_A), uid(ME))
            .server
            .is_some()
    }

    fn rescoped(role: &Role, server: Uuid) -> Role {
        let mut r = role.clone();
        for p in &mut r.permissions {
            p.scope = Scope::Server(server);
        }
        r
    }

    #[test]
    fn matrix_covers_every_resource_and_action() {
        let rows = matrix();
        assert_eq!(rows.len(), Resource::ALL.len() * Action::ALL.len());
        for r in Resource::ALL {
            for a in Action::ALL {
                assert_eq!(
                    rows.iter()
                        .filter(|(rr, aa, _)| *rr == r && *aa == a)
                        .count(),
                    1,
                    "{r}:{a}"
                );
            }
        }
    }

    /// Every (built-in role, resource, action, own/other object, in/out of scope server)
    /// combination against the matrix: the roles as built in (global), and each role
    /// limited to server A, tried on server A (in scope) and server B (out of scope).
    #[test]
    fn builtin_roles_match_the_matrix_everywhere() {
        let roles = builtin_roles();
        assert_eq!(
            roles.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            BUILTIN_ROLE_NAMES
        );
        let mut checked = 0;
        for (resource, action, expected) in matrix() {
            for (role, &(own, other)) in roles.iter().zip(&expected) {
                if !resource.has_owner() {
                    assert_eq!(
                        own, other,
                        "{resource}:{action} for {}: unowned, cells must agree",
                        role.name
                    );
                }
                let scoped = rescoped(role, uid(SERVER_A));
                for (owner, want) in [(uid(ME), own), (uid(OTHER), other)] {
                    for server in [uid(SERVER_A), uid(SERVER_B)] {
                        let t = target(resource, action, server, owner);
                        let global = principal(vec![role.clone()]);
                        assert_eq!(
                            global.allows(resource, action, t),
                            want,
                            "{} {resource}:{action} {t:?}",
                            role.name
                        );
                        let in_scope =
                            server == uid(SERVER_A) && lives_on_a_server(resource, action);
                        let p = principal(vec![scoped.clone()]);
                        assert_eq!(
                            p.allows(resource, action, t),
                            want && in_scope,
                            "{} limited to server A: {resource}:{action} {t:?}",
                            role.name
                        );
                        let r = authorize(&p, resource, action, t);
                        assert_eq!(r.is_ok(), want && in_scope);
                        if let Err(e) = r {
                            assert!(matches!(e, Error::PermissionDenied { .. }));
                            assert!(
                                e.to_string().contains(&format!("{resource}:{action}")),
                                "{e}"
                            );
                        }
                        checked += 2;
                    }
                }
            }
        }
        assert_eq!(checked, 80 * 4 * 2 * 2 * 2);
    }

    #[test]
    fn denial_messages_name_the_permission_and_server() {
        let user = principal(vec![builtin_role("user").unwrap()]);
        let e = authorize(
            &user,
            Resource::Peer,
            Action::Update,
            Target::peer(uid(SERVER_A), Some(uid(OTHER))),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "permission denied: peer:update on server {} for an object of another user",
                uid(SERVER_A)
            )
        );
        let e = authorize(&user, Resource::Role, Action::Create, Target::none()).unwrap_err();
        assert_eq!(e.to_string(), "permission denied: role:create");
    }

    #[test]
    fn api_token_scopes_only_narrow() {
        let admin = builtin_role("admin").unwrap();
        let user_role = builtin_role("user").unwrap();
        let mine = Target::peer(uid(SERVER_A), Some(uid(ME)));
        let theirs = Target::peer(uid(SERVER_A), Some(uid(OTHER)));

        // A read-only token of an admin: reads, cannot write.
        let p = principal(vec![admin.clone()]).with_token(
            TokenId::generate(),
            vec![Permission::new(Resource::Peer, Action::Read)],
        );
        assert!(p.allows(Resource::Peer, Action::Read, theirs));
        let e = authorize(&p, Resource::Peer, Action::Delete, theirs).unwrap_err();
        assert!(
            e.to_string().ends_with("(outside the API token's scope)"),
            "{e}"
        );
        assert!(!p.is_admin());

        // A token whose scope claims more than the user holds gains nothing.
        let p = principal(vec![user_role.clone()]).with_token(
            TokenId::generate(),
            vec![
                Permission::new(Resource::Peer, Action::Delete),
                Permission::new(Resource::User, Action::Create),
            ],
        );
        assert!(p.allows(Resource::Peer, Action::Delete, mine));
        assert!(!p.allows(Resource::Peer, Action::Delete, theirs));
        assert!(!p.allows(Resource::User, Action::Create, Target::none()));
        assert!(!p.allows(Resource::Peer, Action::Read, mine)); // not in the token's scope

        // A server-scoped token of an operator.
        let p = principal(vec![builtin_role("operator").unwrap()]).with_token(
            TokenId::generate(),
            vec![Permission::new(Resource::Server, Action::Apply).on_server(uid(SERVER_A))],
        );
        assert!(p.allows(
            Resource::Server,
            Action::Apply,
            Target::server(uid(SERVER_A))
        ));
        assert!(!p.allows(
            Resource::Server,
            Action::Apply,
            Target::server(uid(SERVER_B))
        ));

        // An empty scope allows nothing.
        let p = principal(vec![admin]).with_token(TokenId::generate(), vec![]);
        for r in Resource::ALL {
            for &a in r.actions() {
                assert!(!p.allows(r, a, Target::peer(uid(SERVER_A), Some(uid(ME)))));
            }
        }
    }

    #[test]
    fn grants_cannot_exceed_what_the_granter_holds() {
        let operator = principal(vec![builtin_role("operator").unwrap()]);
        // An operator cannot hand out user or role management, to anyone.
        for p in ["user:create", "role:assign", "audit:read"] {
            let perm: Permission = p.parse().unwrap();
            assert!(
                check_grant(&operator, &[perm], Grantee::Myself).is_err(),
                "{p}"
            );
            assert!(
                check_grant(&operator, &[perm], Grantee::Others).is_err(),
                "{p}"
            );
        }
        // It can narrow what it holds: to a server, or to own objects.
        let narrow = [
            Permission::new(Resource::Peer, Action::Update).on_server(uid(SERVER_A)),
            Permission::new(Resource::Peer, Action::Read).own(),
            Permission::new(Resource::Server, Action::Apply),
        ];
        check_grant(&operator, &narrow, Grantee::Others).unwrap();
        // Own-only tokens: passable to itself, not to others (their objects differ).
        let own_token = [Permission::new(Resource::Token, Action::Create).own()];
        check_grant(&operator, &own_token, Grantee::Myself).unwrap();
        let e = check_grant(&operator, &own_token, Grantee::Others).unwrap_err();
        assert!(matches!(e, Error::PermissionDenied { .. }));
        // Own-only held does not cover everyone's.
        let user = principal(vec![builtin_role("user").unwrap()]);
        assert!(check_grant(
            &user,
            &[Permission::new(Resource::Peer, Action::Read)],
            Grantee::Myself
        )
        .is_err());
        check_grant(
            &user,
            &[Permission::new(Resource::Peer, Action::Read).own()],
            Grantee::Myself,
        )
        .unwrap();
        // A server-scoped holder cannot grant globally or on another server.
        let scoped = principal(vec![rescoped(
            &builtin_role("operator").unwrap(),
            uid(SERVER_A),
        )]);
        let on_a = Permission::new(Resource::Peer, Action::Create).on_server(uid(SERVER_A));
        check_grant(&scoped, &[on_a], Grantee::Others).unwrap();
        assert!(check_grant(
            &scoped,
            &[Permission::new(Resource::Peer, Action::Create)],
            Grantee::Others
        )
        .is_err());
        assert!(check_grant(&scoped, &[on_a.on_server(uid(SERVER_B))], Grantee::Others).is_err());
        // A token granter is limited by its own scope.
        let tok = principal(vec![builtin_role("admin").unwrap()]).with_token(
            TokenId::generate(),
            vec![Permission::new(Resource::Peer, Action::Read)],
        );
        check_grant(
            &tok,
            &[Permission::new(Resource::Peer, Action::Read)],
            Grantee::Myself,
        )
        .unwrap();
        assert!(check_grant(
            &tok,
            &[Permission::new(Resource::Peer, Action::Update)],
            Grantee::Myself
        )
        .is_err());
        // Nonsense permissions are invalid, not denied.
        let bad = Permission::new(Resource::Audit, Action::Delete);
        assert!(matches!(
            check_grant(&tok, &[bad], Grantee::Myself),
            Err(Error::InvalidInput { .. })
        ));
        // The admin can grant anything in the catalogue.
        let admin = principal(vec![builtin_role("admin").unwrap()]);
        let all: Vec<Permission> = builtin_roles()
            .into_iter()
            .flat_map(|r| r.permissions)
            .collect();
        check_grant(&admin, &all, Grantee::Others).unwrap();
    }

    #[test]
    fn elevated_checks_ignore_own_only_permissions() {
        let user = principal(vec![builtin_role("user").unwrap()]);
        let me = Target::owned_by(uid(ME));
        authorize(&user, Resource::User, Action::Update, me).unwrap();
        let e = authorize_elevated(&user, Resource::User, Action::Update, me).unwrap_err();
        assert!(e.to_string().contains("beyond own objects"), "{e}");
        let admin = principal(vec![builtin_role("admin").unwrap()]);
        authorize_elevated(&admin, Resource::User, Action::Update, me).unwrap();
    }

    #[test]
    fn admin_detection() {
        let roles = builtin_roles();
        let flags: Vec<bool> = roles.iter().map(is_admin).collect();
        assert_eq!(flags, [true, false, false, false]);
        // A custom role equal to admin counts; spread over two roles counts too.
        let admin = builtin_role("admin").unwrap();
        let (a, b) = admin.permissions.split_at(admin.permissions.len() / 2);
        let half = |n: &str, ps: &[Permission]| {
            Role::custom(
                RoleName::new(n).unwrap(),
                Description::new("").unwrap(),
                ps.to_vec(),
            )
            .unwrap()
        };
        let (ra, rb) = (half("half-a", a), half("half-b", b));
        assert!(!is_admin(&ra) && !is_admin(&rb));
        assert!(holds_admin(&[ra.clone(), rb.clone()]));
        assert!(principal(vec![ra.clone(), rb]).is_admin());
        // Server-scoped or own-only copies do not count.
        assert!(!is_admin(&rescoped(&admin, uid(SERVER_A))));
        assert!(!holds_admin(&[]));
        assert!(!principal(vec![ra]).is_admin());
    }

    #[test]
    fn roles_limited_to_one_server() {
        let a = uid(SERVER_A);
        let b = uid(SERVER_B);
        let p = principal(vec![builtin_role("admin").unwrap().limited_to_server(a)]);
        let mine = |s| Target::peer(s, Some(uid(ME)));
        let theirs = |s| Target::peer(s, Some(uid(OTHER)));
        assert!(p.allows(Resource::Peer, Action::Update, theirs(a)));
        assert!(!p.allows(Resource::Peer, Action::Update, theirs(b)));
        assert!(p.allows(Resource::Secret, Action::Export, theirs(a)));
        assert!(!p.allows(Resource::Secret, Action::Export, mine(b)));
        assert!(p.allows(Resource::Audit, Action::Read, Target::server(a)));
        assert!(!p.allows(Resource::Audit, Action::Read, Target::none()));
        assert!(!p.allows(Resource::Server, Action::Create, Target::none()));
        // No user, role or token management beyond the server ...
        assert!(!p.allows(Resource::User, Action::Create, Target::none()));
        assert!(!p.allows(Resource::Role, Action::Assign, Target::none()));
        assert!(!p.allows(Resource::User, Action::Update, Target::owned_by(uid(OTHER))));
        assert!(!p.allows(
            Resource::Token,
            Action::Delete,
            Target::owned_by(uid(OTHER))
        ));
        assert!(!p.is_admin());
        // ... but self-service stays.
        let user_on_a = principal(vec![builtin_role("user").unwrap().limited_to_server(a)]);
        assert!(user_on_a.allows(Resource::User, Action::Update, Target::owned_by(uid(ME))));
        assert!(user_on_a.allows(Resource::Token, Action::Create, Target::owned_by(uid(ME))));
        assert!(user_on_a.allows(Resource::Peer, Action::Create, mine(a)));
        assert!(!user_on_a.allows(Resource::Peer, Action::Create, mine(b)));
        assert!(!user_on_a.allows(Resource::Server, Action::Read, Target::server(b)));
        // A permission already limited to another server is dropped, not widened.
        let custom = Role::custom(
            RoleName::new("b-only").unwrap(),
            Description::new("").unwrap(),
            vec![Permission::new(Resource::Peer, Action::Read).on_server(b)],
        )
        .unwrap();
        assert!(custom.limited_to_server(a).permissions.is_empty());
        assert_eq!(custom.limited_to_server(b).permissions, custom.permissions);
    }

    #[test]
    fn quotas() {
        let user = builtin_role("user").unwrap();
        assert_eq!(
            principal(vec![user.clone()]).peer_quota(),
            Some(DEFAULT_USER_PEER_QUOTA)
        );
        assert_eq!(
            principal(vec![builtin_role("auditor").unwrap()]).peer_quota(),
            Some(0)
        );
        assert_eq!(
            principal(vec![builtin_role("operator").unwrap()]).peer_quota(),
            None
        );
        assert_eq!(
            principal(vec![user.clone(), builtin_role("operator").unwrap()]).peer_quota(),
            None
        );
        let bigger = user.clone().with_peer_quota(Some(50));
        assert_eq!(principal(vec![user.clone(), bigger]).peer_quota(), Some(50));
        assert_eq!(
            principal(vec![user.with_peer_quota(None)]).peer_quota(),
            None
        );
    }

    #[test]
    fn permission_text_form() {
        let id = uid(SERVER_A);
        for (text, p) in [
            (
                "peer:update",
                Permission::new(Resource::Peer, Action::Update),
            ),
            (
                "peer:update:own",
                Permission::new(Resource::Peer, Action::Update).own(),
            ),
            (
                "secret:export:own@server:00000000-0000-0000-0000-00000000000a",
                Permission::new(Resource::Secret, Action::Export)
                    .own()
                    .on_server(id),
            ),
            (
                "config:rollback@server:00000000-0000-0000-0000-00000000000a",
                Permission::new(Resource::Config, Action::Rollback).on_server(id),
            ),
        ] {
            assert_eq!(text.parse::<Permission>().unwrap(), p, "{text}");
            assert_eq!(p.to_string(), text);
        }
        for bad in [
            "",
            "peer",
            "peer:",
            "peer:fly",
            "ship:read",
            "Peer:read",
            "peer:read:mine",
            "peer:read:own:own",
            "peer:read@",
            "peer:read@server:",
            "peer:read@server:nope",
            "peer:read@host:00000000-0000-0000-0000-00000000000a",
            "audit:delete",
            "server:read:own",
            "secret:read",
        ] {
            let e = bad.parse::<Permission>().unwrap_err();
            assert!(matches!(e, Error::InvalidInput { .. }), "{bad:?}: {e:?}");
        }
    }

    #[test]
    fn serde_forms() {
        let p = Permission::new(Resource::Peer, Action::Update)
            .own()
            .on_server(uid(SERVER_A));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"resource":"peer","action":"update","scope":{"server":"00000000-0000-0000-0000-00000000000a"},"own_only":true}"#
        );
        assert_eq!(serde_json::from_str::<Permission>(&json).unwrap(), p);
        let short: Permission =
            serde_json::from_str(r#"{"resource":"server","action":"read"}"#).unwrap();
        assert_eq!(short, Permission::new(Resource::Server, Action::Read));
        assert_eq!(
            serde_json::to_string(&Scope::Global).unwrap(),
            r#""global""#
        );
        for role in builtin_roles() {
            role.validate().unwrap();
            let back: Role = serde_json::from_str(&serde_json::to_string(&role).unwrap()).unwrap();
            assert_eq!(back, role);
        }
    }

    #[test]
    fn custom_roles_are_validated() {
        let name = |s: &str| RoleName::new(s).unwrap();
        let d = Description::new("net ops for A").unwrap();
        let r = Role::custom(
            name("net-ops-a"),
            d.clone(),
            vec![
                Permission::new(Resource::Peer, Action::Read),
                Permission::new(Resource::Peer, Action::Read),
                Permission::new(Resource::Server, Action::Apply).on_server(uid(SERVER_A)),
            ],
        )
        .unwrap();
        assert_eq!(r.permissions.len(), 2);
        assert!(!r.builtin);
        let e = Role::custom(
            name("x"),
            d.clone(),
            vec![Permission::new(Resource::Audit, Action::Delete)],
        )
        .unwrap_err();
        assert!(e.to_string().contains("role.permissions[0]"), "{e}");
        assert!(Role::custom(
            name("x"),
            d.clone(),
            vec![Permission::new(Resource::Role, Action::Read).own()]
        )
        .is_err());
        for builtin in ["admin", "Admin", "USER"] {
            assert!(
                Role::custom(name(builtin), d.clone(), vec![]).is_err(),
                "{builtin}"
            );
        }
        assert!(builtin_role("root").is_none());
    }

    #[test]
    fn auditor_never_touches_secrets_and_user_never_other_peers() {
        // Spelled out on top of the matrix, since these are the advisories' failures.
        let auditor = principal(vec![builtin_role("auditor").unwrap()]);
        let user = principal(vec![builtin_role("user").unwrap()]);
        for t in [
            Target::server(uid(SERVER_A)),
            Target::peer(uid(SERVER_A), Some(uid(ME))),
            Target::peer(uid(SERVER_A), Some(uid(OTHER))),
            Target::peer(uid(SERVER_A), None),
        ] {
            assert!(!auditor.allows(Resource::Secret, Action::Export, t));
            if t.owner != Some(uid(ME)) {
                for a in [Action::Read, Action::Update, Action::Delete] {
                    assert!(!user.allows(Resource::Peer, a, t));
                }
                assert!(!user.allows(Resource::Secret, Action::Export, t));
            }
        }
        // Changing another user's password (wg-portal) is refused.
        assert!(!user.allows(Resource::User, Action::Update, Target::owned_by(uid(OTHER))));
        // An unowned peer is nobody's own.
        assert!(!user.allows(
            Resource::Peer,
            Action::Create,
            Target::peer(uid(SERVER_A), None)
        ));
    }
}
