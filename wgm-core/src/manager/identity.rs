//! Users, roles, API tokens, TOTP and authentication.

#[cfg(feature = "auth")]
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{LocalAdmin, Manager};
use crate::audit::AuditAction;
#[cfg(feature = "auth")]
use crate::auth::jwt::TokenType;
use crate::auth::password::validate_password_with;
#[cfg(feature = "auth")]
use crate::auth::password::{
    hash_password_with, needs_rehash, verify_password, verify_without_hash,
};
use crate::auth::token::{generate_token, parse_token, verify_token, TokenHash};
#[cfg(feature = "auth")]
use crate::auth::totp::{Totp, TotpSecret};
#[cfg(feature = "auth")]
use crate::model::TotpEnrollment;
use crate::model::{
    normalize_email, ApiTokenRecord, AuditEntry, AuditOutcome, IdentityChange, Page,
    RoleAssignment, TokenId, User, UserId,
};
use crate::names::{RoleName, UserName};
#[cfg(feature = "auth")]
use crate::rbac::PrincipalKind;
use crate::rbac::{
    builtin_role, builtin_roles, check_grant, holds_admin, is_builtin_name, Action, Grantee,
    Permission, Principal, Resource, Role, Scope, Target,
};
use crate::{Error, Result};

/// A user to create.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// Login name.
    pub name: UserName,
    /// E-mail address.
    pub email: Option<String>,
    /// Initial password (`None`: token-only user). Hashing needs the `auth` feature;
    /// without it a password is refused as invalid input.
    pub password: Option<Zeroizing<String>>,
    /// Roles.
    pub roles: Vec<RoleAssignment>,
    /// Peer quota override.
    pub peer_quota: Option<u32>,
}

impl NewUser {
    /// A user with one global role and no password.
    pub fn new(name: UserName, role: RoleName) -> NewUser {
        NewUser {
            name,
            email: None,
            password: None,
            roles: vec![RoleAssignment {
                role,
                scope: Scope::Global,
            }],
            peer_quota: None,
        }
    }
}

/// Changes to a user. `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct UserUpdate {
    /// New e-mail (`Some(None)` clears it).
    pub email: Option<Option<String>>,
    /// New roles (needs `role:assign`; bumps the token version).
    pub roles: Option<Vec<RoleAssignment>>,
    /// Enable or disable (needs `user:update` beyond one's own record).
    pub active: Option<bool>,
    /// New peer quota (`Some(None)`: the roles' quota).
    pub peer_quota: Option<Option<u32>>,
}

/// An API token to create.
#[derive(Clone, Debug)]
pub struct NewToken {
    /// The owner.
    pub user: UserId,
    /// A label.
    pub name: String,
    /// Narrow to these permissions (`None`: everything the owner holds).
    pub scopes: Option<Vec<Permission>>,
    /// Expiry.
    pub expires_at: Option<OffsetDateTime>,
}

#[cfg(feature = "auth")]
/// The outcome of a password login.
#[derive(Clone, Debug)]
pub struct LoginOutcome {
    /// The user.
    pub user_id: UserId,
    /// A short-lived access token (bearer credential).
    pub access_token: Zeroizing<String>,
    /// A refresh token (bearer credential).
    pub refresh_token: Zeroizing<String>,
}

/// A user as callers see it: no password hash, no TOTP secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserView {
    /// Identifier.
    pub id: UserId,
    /// Name.
    pub name: UserName,
    /// E-mail.
    pub email: Option<String>,
    /// Active.
    pub active: bool,
    /// Roles.
    pub roles: Vec<RoleAssignment>,
    /// Whether a password is set.
    pub has_password: bool,
    /// Whether TOTP is enrolled and confirmed.
    pub totp: bool,
    /// Peer quota override.
    pub peer_quota: Option<u32>,
    /// Last login.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_login: Option<OffsetDateTime>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl UserView {
    /// The view of a user.
    pub fn of(u: &User) -> UserView {
        UserView {
            id: u.id,
            name: u.name.clone(),
            email: u.email.clone(),
            active: u.active,
            roles: u.roles.clone(),
            has_password: u.password_hash.is_some(),
            totp: u.totp.as_ref().is_some_and(|t| t.confirmed),
            peer_quota: u.peer_quota,
            last_login: u.last_login,
            created_at: u.created_at,
        }
    }
}

/// A token as callers see it: no hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenView {
    /// Identifier.
    pub id: TokenId,
    /// Owner.
    pub user_id: UserId,
    /// Label.
    pub name: String,
    /// Scope.
    pub scopes: Option<Vec<Permission>>,
    /// Created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Expiry.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Revoked.
    pub revoked: bool,
}

impl TokenView {
    fn of(t: &ApiTokenRecord) -> TokenView {
        TokenView {
            id: t.id,
            user_id: t.user_id,
            name: t.name.clone(),
            scopes: t.scopes.clone(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked: t.revoked,
        }
    }
}

/// Narrow a role to an assignment's scope (see [`Role::limited_to_server`]).
fn scoped(role: &Role, scope: Scope) -> Role {
    match scope {
        Scope::Global => role.clone(),
        Scope::Server(id) => role.limited_to_server(id),
    }
}

impl Manager {
    /// All roles: the built-in ones and the custom ones in the store (needs
    /// `role:read`).
    pub async fn roles(&self, p: &Principal) -> Result<Vec<Role>> {
        self.authorize(p, Resource::Role, Action::Read, Target::none())
            .await?;
        let mut all = builtin_roles();
        all.extend(self.store.list_roles().await?);
        Ok(all)
    }

    async fn role_by_name(&self, name: &RoleName) -> Result<Role> {
        if let Some(r) = builtin_role(&name.key()) {
            return Ok(r);
        }
        self.store
            .list_roles()
            .await?
            .into_iter()
            .find(|r| r.name.key() == name.key())
            .ok_or_else(|| Error::invalid("user.roles", format!("unknown role {name}")))
    }

    async fn resolve_roles(&self, assignments: &[RoleAssignment]) -> Result<Vec<Role>> {
        let mut out = Vec::with_capacity(assignments.len());
        for a in assignments {
            out.push(scoped(&self.role_by_name(&a.role).await?, a.scope));
        }
        Ok(out)
    }

    /// The principal of a stored user, for embedding callers that authenticate users
    /// themselves (a front end behind single sign-on, a test). Vouching for any user's
    /// identity is as strong as being an administrator, so it needs the
    /// local-administrator capability ([`LocalAdmin`]). A disabled user gets
    /// [`Error::Unauthenticated`].
    pub async fn principal_for(&self, _local: &LocalAdmin, user: &User) -> Result<Principal> {
        self.principal_of(user).await
    }

    /// The principal of a stored user who has just authenticated.
    pub(super) async fn principal_of(&self, user: &User) -> Result<Principal> {
        if !user.active {
            return Err(Error::unauthenticated("the account is disabled"));
        }
        let mut roles = self.resolve_roles(&user.roles).await?;
        if user.superuser {
            roles.extend(builtin_role("admin"));
        }
        Ok(Principal::new(user.id.0, user.name.clone(), roles))
    }

    #[cfg(feature = "auth")]
    async fn audit_identity(
        &self,
        p: Option<&Principal>,
        action: AuditAction,
        object: String,
        outcome: AuditOutcome,
        details: serde_json::Value,
    ) {
        let actor = match p {
            Some(p) => Self::actor(p),
            None => crate::model::Actor {
                user_id: None,
                label: "anonymous".into(),
            },
        };
        let entry = AuditEntry {
            at: self.now(),
            actor,
            action,
            object,
            server_id: None,
            revision: None,
            outcome,
            details,
        };
        if let Err(e) = self.store_append_audit(entry).await {
            tracing::warn!(error = %e, "could not write an audit record");
        }
    }

    pub(super) fn entry(
        &self,
        p: &Principal,
        action: AuditAction,
        object: String,
        details: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            at: self.now(),
            actor: Self::actor(p),
            action,
            object,
            server_id: None,
            revision: None,
            outcome: AuditOutcome::Success,
            details,
        }
    }

    /// Whether `roles` of every other active user still include an admin once `user`
    /// changes to `after` (or is deleted, `after = None`).
    async fn check_last_admin(&self, user: &User, after: Option<&User>) -> Result<()> {
        let was_admin =
            user.active && (user.superuser || holds_admin(&self.resolve_roles(&user.roles).await?));
        if !was_admin {
            return Ok(());
        }
        let still_admin = match after {
            Some(a) => {
                a.active && (a.superuser || holds_admin(&self.resolve_roles(&a.roles).await?))
            }
            None => false,
        };
        if still_admin {
            return Ok(());
        }
        for other in self.store.list_users(Page::ALL).await? {
            if other.id != user.id
                && other.active
                && (other.superuser || holds_admin(&self.resolve_roles(&other.roles).await?))
            {
                return Ok(());
            }
        }
        Err(Error::conflict(format!(
            "{} is the last administrator",
            user.name
        )))
    }

    /// Refuse giving roles the granter does not hold.
    async fn check_role_grant(&self, p: &Principal, roles: &[RoleAssignment]) -> Result<()> {
        for r in self.resolve_roles(roles).await? {
            if let Err(e) = check_grant(p, &r.permissions, Grantee::Others) {
                let e = e.in_field("user.roles");
                return Err(self
                    .refusal(p, Resource::Role, Action::Assign, Target::none(), e)
                    .await);
            }
        }
        Ok(())
    }

    /// Resolve a user by name (case-insensitive) or id.
    pub async fn resolve_user(&self, p: &Principal, name_or_id: &str) -> Result<UserId> {
        let user = if let Ok(id) = name_or_id.parse::<UserId>() {
            self.store.get_user(id).await?
        } else {
            self.store.find_user(&UserName::new(name_or_id)?).await?
        };
        let user = user.ok_or_else(|| Error::not_found("user", name_or_id))?;
        let target = Target::owned_by(user.id.0);
        if crate::rbac::authorize(p, Resource::User, Action::Read, target).is_err() {
            return Err(self
                .hidden(p, Resource::User, target, "user", name_or_id)
                .await);
        }
        Ok(user.id)
    }

    /// Create a user.
    pub async fn create_user(&self, p: &Principal, spec: NewUser) -> Result<UserView> {
        self.authorize(p, Resource::User, Action::Create, Target::none())
            .await?;
        if !spec.roles.is_empty() {
            self.authorize(p, Resource::Role, Action::Assign, Target::none())
                .await?;
            self.check_role_grant(p, &spec.roles).await?;
        }
        if self.store.find_user(&spec.name).await?.is_some() {
            return Err(Error::invalid(
                "user.name",
                format!(
                    "{} is already used (names are compared case-insensitively)",
                    spec.name
                ),
            ));
        }
        let email = spec.email.as_deref().map(normalize_email).transpose()?;
        let password_hash = match &spec.password {
            Some(pw) => {
                validate_password_with(pw, &self.config.password_params)?;
                Some(hash_new_password(pw, &self.config.password_params)?)
            }
            None => None,
        };
        let now = self.now();
        let user = User {
            id: UserId::new_random(),
            name: spec.name,
            email,
            password_hash,
            active: true,
            superuser: false,
            roles: spec.roles,
            totp: None,
            token_version: 0,
            peer_quota: spec.peer_quota,
            last_login: None,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        let view = UserView::of(&user);
        let entry = self.entry(
            p,
            AuditAction::UserCreate,
            format!("user/{}", user.id),
            json!({ "name": user.name, "roles": user.roles }),
        );
        self.store_commit_identity(
            vec![IdentityChange::UserCreated {
                user: Box::new(user),
            }],
            entry,
        )
        .await?;
        Ok(view)
    }

    async fn load_user(&self, id: UserId) -> Result<User> {
        self.store
            .get_user(id)
            .await?
            .ok_or_else(|| Error::not_found("user", id))
    }

    /// Show a user (oneself, or anyone with `user:read`).
    pub async fn get_user(&self, p: &Principal, id: UserId) -> Result<UserView> {
        let target = Target::owned_by(id.0);
        if crate::rbac::authorize(p, Resource::User, Action::Read, target).is_err() {
            return Err(self.hidden(p, Resource::User, target, "user", id).await);
        }
        Ok(UserView::of(&self.load_user(id).await?))
    }

    /// List users (needs `user:read` beyond one's own record).
    pub async fn list_users(&self, p: &Principal, page: Page) -> Result<Vec<UserView>> {
        let all = self.store.list_users(page).await?;
        Ok(all
            .iter()
            .filter(|u| {
                crate::rbac::authorize(p, Resource::User, Action::Read, Target::owned_by(u.id.0))
                    .is_ok()
            })
            .map(UserView::of)
            .collect())
    }

    /// Change a user. Role changes need `role:assign` and cannot grant more than the
    /// caller holds; enabling/disabling needs `user:update` beyond one's own record;
    /// the last administrator can be neither disabled nor demoted.
    pub async fn update_user(&self, p: &Principal, id: UserId, u: UserUpdate) -> Result<UserView> {
        self.authorize(p, Resource::User, Action::Update, Target::owned_by(id.0))
            .await?;
        if u.roles.is_some() {
            self.authorize(p, Resource::Role, Action::Assign, Target::none())
                .await?;
        }
        if u.active.is_some() || u.peer_quota.is_some() {
            self.authorize_elevated(p, Resource::User, Action::Update, Target::owned_by(id.0))
                .await?;
        }
        if let Some(r) = &u.roles {
            self.check_role_grant(p, r).await?;
        }
        let before = self.load_user(id).await?;
        let mut after = before.clone();
        if let Some(e) = &u.email {
            after.email = e.as_deref().map(normalize_email).transpose()?;
        }
        if let Some(r) = &u.roles {
            after.roles.clone_from(r);
            after.token_version += 1;
        }
        if let Some(a) = u.active {
            after.active = a;
            if !a {
                after.token_version += 1;
            }
        }
        if let Some(q) = u.peer_quota {
            after.peer_quota = q;
        }
        self.check_last_admin(&before, Some(&after)).await?;
        after.version = before.version + 1;
        after.updated_at = self.now();
        let view = UserView::of(&after);
        let entry = self.entry(
            p,
            AuditAction::UserUpdate,
            format!("user/{id}"),
            json!({ "roles": u.roles.is_some(), "active": u.active }),
        );
        self.store_commit_identity(
            vec![IdentityChange::UserUpdated {
                user: Box::new(after),
            }],
            entry,
        )
        .await?;
        Ok(view)
    }

    #[cfg(feature = "auth")]
    /// Set a user's password. Users changing their own password must give the current
    /// one; administrators resetting another user's do not. Invalidates issued JWTs.
    pub async fn set_password(
        &self,
        p: &Principal,
        id: UserId,
        current: Option<&str>,
        new: &str,
    ) -> Result<()> {
        self.authorize(p, Resource::User, Action::Update, Target::owned_by(id.0))
            .await?;
        let own = matches!(
            p.kind(),
            PrincipalKind::Human | PrincipalKind::ApiToken { .. }
        ) && p.user_id() == id.0;
        let before = self.load_user(id).await?;
        if own {
            let ok = match (&before.password_hash, current) {
                (Some(h), Some(c)) => verify_password(c, h)?,
                (None, _) => true,
                (Some(_), None) => false,
            };
            if !ok {
                let e = Error::unauthenticated("the current password is wrong");
                return Err(self
                    .refusal(p, Resource::User, Action::Update, Target::owned_by(id.0), e)
                    .await);
            }
        } else {
            self.authorize_elevated(p, Resource::User, Action::Update, Target::owned_by(id.0))
                .await?;
        }
        validate_password_with(new, &self.config.password_params)?;
        let mut after = before.clone();
        after.password_hash = Some(hash_password_with(new, &self.config.password_params)?);
        after.token_version += 1;
        after.version += 1;
        after.updated_at = self.now();
        let entry = self.entry(
            p,
            AuditAction::UserPassword,
            format!("user/{id}"),
            json!({}),
        );
        self.store_commit_identity(
            vec![IdentityChange::UserUpdated {
                user: Box::new(after),
            }],
            entry,
        )
        .await
    }

    /// Delete a user and their tokens (not the last administrator).
    pub async fn delete_user(&self, p: &Principal, id: UserId) -> Result<()> {
        self.authorize_elevated(p, Resource::User, Action::Delete, Target::owned_by(id.0))
            .await?;
        let user = self.load_user(id).await?;
        self.check_last_admin(&user, None).await?;
        let entry = self.entry(
            p,
            AuditAction::UserDelete,
            format!("user/{id}"),
            json!({ "name": user.name }),
        );
        self.store_commit_identity(vec![IdentityChange::UserDeleted { id }], entry)
            .await
    }

    #[cfg(feature = "auth")]
    /// Start TOTP enrolment for oneself: returns the `otpauth://` URI (show it once, as
    /// a QR code). Takes effect after [`Manager::confirm_totp`].
    pub async fn enroll_totp(
        &self,
        p: &Principal,
        id: UserId,
        issuer: &str,
    ) -> Result<Zeroizing<String>> {
        if p.user_id() != id.0 {
            let e = Error::denied("TOTP can only be enrolled by the user themselves");
            return Err(self
                .refusal(p, Resource::User, Action::Update, Target::owned_by(id.0), e)
                .await);
        }
        self.authorize(p, Resource::User, Action::Update, Target::owned_by(id.0))
            .await?;
        let before = self.load_user(id).await?;
        let secret = TotpSecret::generate();
        let uri = Totp::default().otpauth_uri(issuer, before.name.as_str(), &secret)?;
        let mut after = before.clone();
        after.totp = Some(TotpEnrollment {
            secret: self.sealer.seal_totp_secret(&secret, &id.to_string())?,
            confirmed: false,
            last_used_step: None,
        });
        after.version += 1;
        after.updated_at = self.now();
        let entry = self.entry(
            p,
            AuditAction::UserTotpEnroll,
            format!("user/{id}"),
            json!({}),
        );
        self.store_commit_identity(
            vec![IdentityChange::UserUpdated {
                user: Box::new(after),
            }],
            entry,
        )
        .await?;
        Ok(uri)
    }

    #[cfg(feature = "auth")]
    /// Confirm TOTP enrolment with a first valid code.
    pub async fn confirm_totp(&self, p: &Principal, id: UserId, code: &str) -> Result<()> {
        if p.user_id() != id.0 {
            let e = Error::denied("TOTP can only be confirmed by the user themselves");
            return Err(self
                .refusal(p, Resource::User, Action::Update, Target::owned_by(id.0), e)
                .await);
        }
        // Like enrolment: changing one's own second factor needs `user:update` on it.
        self.authorize(p, Resource::User, Action::Update, Target::owned_by(id.0))
            .await?;
        let before = self.load_user(id).await?;
        let enrol = before
            .totp
            .clone()
            .ok_or_else(|| Error::invalid("totp", "no enrolment in progress"))?;
        let secret = self
            .sealer
            .open_totp_secret(&id.to_string(), &enrol.secret)?;
        let step = Totp::default().verify(&secret, code, unix(self.now()), enrol.last_used_step)?;
        let mut after = before.clone();
        after.totp = Some(TotpEnrollment {
            secret: enrol.secret,
            confirmed: true,
            last_used_step: Some(step),
        });
        after.version += 1;
        after.token_version += 1;
        after.updated_at = self.now();
        let entry = self.entry(
            p,
            AuditAction::UserTotpConfirm,
            format!("user/{id}"),
            json!({}),
        );
        self.store_commit_identity(
            vec![IdentityChange::UserUpdated {
                user: Box::new(after),
            }],
            entry,
        )
        .await
    }

    #[cfg(feature = "auth")]
    /// Log in with a password (and a TOTP code when enrolled) from `source`. Throttled
    /// per account and per source ([`ManagerConfig::login_throttle`](super::ManagerConfig::login_throttle));
    /// every attempt that is not throttled is audited; issues JWTs.
    ///
    /// The throttle's records live in the store ([`crate::store::ThrottleStore`]), so
    /// every process on one store shares one budget: a blocked account or source is
    /// refused by every manager on the store, before its password is looked at. A name
    /// that cannot be a user name is throttled by its source only (no account can be
    /// guessed through it).
    ///
    /// # Errors
    ///
    /// [`Error::Throttled`] while the account or the source is blocked;
    /// [`Error::Unauthenticated`] for a wrong user name, password or one-time code (one
    /// message for all). **Fail closed:** when the store cannot read the throttle's
    /// records, or cannot count a failure, the attempt fails with the store's error
    /// ([`Error::Store`]) — never is a password tried that the throttle did not see.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        totp_code: Option<&str>,
        source: IpAddr,
    ) -> Result<LoginOutcome> {
        let jwt = self
            .jwt
            .as_ref()
            .ok_or_else(|| Error::unsupported("password login needs a JWT issuer"))?;
        let now = self.now();
        let account = name.to_lowercase();
        let user_name = UserName::new(name).ok();
        // The account's throttle key is the name's uniqueness key, so every spelling of
        // one account shares its budget.
        let account_key = user_name.as_ref().map(UserName::key);
        let throttle = &self.config.login_throttle;
        let store = &*self.store;
        throttle
            .check(store, account_key.as_deref(), source, now)
            .await?;
        let user = match &user_name {
            Some(n) => self.store.find_user(n).await?,
            None => None,
        };
        let result = self.check_login(user.as_ref(), password, totp_code, now);
        let Ok((user, step)) = result else {
            // Counted before anything is answered: a failure the store cannot count
            // fails with the store's error. Counted as of now, when the failure is known
            // (after the password check's time), so a block lasts its whole length after
            // the answer.
            throttle
                .record_login_failure(store, account_key.as_deref(), source, self.now())
                .await?;
            self.audit_identity(
                None,
                AuditAction::UserLogin,
                format!("user/{account}"),
                AuditOutcome::Failed,
                json!({ "source": source }),
            )
            .await;
            return Err(Error::unauthenticated(
                "wrong user name, password or one-time code",
            ));
        };
        if let Some(k) = &account_key {
            throttle.record_login_success(store, k, now).await?;
        }
        let mut after = user.clone();
        after.last_login = Some(now);
        if let (Some(t), Some(s)) = (after.totp.as_mut(), step) {
            t.last_used_step = Some(s);
        }
        if let Some(h) = &user.password_hash {
            if needs_rehash(h, &self.config.password_params) {
                after.password_hash =
                    Some(hash_password_with(password, &self.config.password_params)?);
            }
        }
        after.version += 1;
        let principal = self.principal_of(&user).await?;
        let entry = AuditEntry {
            outcome: AuditOutcome::Success,
            ..self.entry(
                &principal,
                AuditAction::UserLogin,
                format!("user/{}", user.id),
                json!({ "source": source }),
            )
        };
        self.store_commit_identity(
            vec![IdentityChange::UserUpdated {
                user: Box::new(after),
            }],
            entry,
        )
        .await?;
        Ok(LoginOutcome {
            user_id: user.id,
            access_token: jwt.issue(user.id.0, user.token_version, TokenType::Access, now)?,
            refresh_token: jwt.issue(user.id.0, user.token_version, TokenType::Refresh, now)?,
        })
    }

    #[cfg(feature = "auth")]
    fn check_login(
        &self,
        user: Option<&User>,
        password: &str,
        totp: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(User, Option<u64>)> {
        let Some(user) = user.filter(|u| u.active) else {
            // Spend the same time as a real check, so timing does not reveal users.
            verify_without_hash(password, &self.config.password_params);
            return Err(Error::unauthenticated("login failed"));
        };
        let Some(hash) = &user.password_hash else {
            verify_without_hash(password, &self.config.password_params);
            return Err(Error::unauthenticated("login failed"));
        };
        if !verify_password(password, hash)? {
            return Err(Error::unauthenticated("login failed"));
        }
        let step = match user.totp.as_ref().filter(|t| t.confirmed) {
            None => None,
            Some(t) => {
                let code = totp.ok_or_else(|| Error::unauthenticated("one-time code required"))?;
                let secret = self
                    .sealer
                    .open_totp_secret(&user.id.to_string(), &t.secret)?;
                Some(Totp::default().verify(&secret, code, unix(now), t.last_used_step)?)
            }
        };
        Ok((user.clone(), step))
    }

    #[cfg(feature = "auth")]
    /// Authenticate a JWT access token: signature, claims, type, and the user's current
    /// token version (a password or role change invalidates older tokens).
    pub async fn authenticate_jwt(&self, token: &str) -> Result<Principal> {
        let jwt = self
            .jwt
            .as_ref()
            .ok_or_else(|| Error::unsupported("no JWT issuer configured"))?;
        let claims = jwt.verify(token, TokenType::Access, self.now())?;
        self.check_session(&claims).await?;
        let user = self
            .store
            .get_user(UserId(claims.sub))
            .await?
            .ok_or_else(|| Error::unauthenticated("unknown user"))?;
        if user.token_version != claims.ver {
            return Err(Error::unauthenticated("the token was revoked"));
        }
        self.principal_of(&user).await
    }

    #[cfg(feature = "auth")]
    /// Exchange a refresh token for a new access token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Zeroizing<String>> {
        let jwt = self
            .jwt
            .as_ref()
            .ok_or_else(|| Error::unsupported("no JWT issuer configured"))?;
        let now = self.now();
        let claims = jwt.verify(refresh_token, TokenType::Refresh, now)?;
        self.check_session(&claims).await?;
        let user = self
            .store
            .get_user(UserId(claims.sub))
            .await?
            .ok_or_else(|| Error::unauthenticated("unknown user"))?;
        if user.token_version != claims.ver || !user.active {
            return Err(Error::unauthenticated("the token was revoked"));
        }
        jwt.issue(user.id.0, user.token_version, TokenType::Access, now)
    }

    #[cfg(feature = "auth")]
    /// End the session of a JWT (an access or a refresh token, checked as
    /// [`Manager::authenticate_jwt`] checks it, whatever its type): from now on it is
    /// refused by [`Manager::authenticate_jwt`] and [`Manager::refresh`] in every process
    /// on this store, until it expires. The record lives with the login throttle's
    /// ([`ThrottleKey::Session`](crate::auth::throttle::ThrottleKey::Session)) and is
    /// forgotten when the token expires. Ending an ended session again is no error. A
    /// token already refused (bad signature, expired, revoked by a password change) is
    /// `Unauthenticated`; a store that does not answer is `Store` (the logout did not
    /// happen: try again).
    ///
    /// ```
    /// # futures::executor::block_on(async {
    /// use std::sync::Arc;
    /// use wgm_core::auth::jwt::{JwtIssuer, JwtKey};
    /// use wgm_core::manager::{Manager, NewUser};
    /// use wgm_core::names::{RoleName, UserName};
    /// use wgm_core::seal::{MasterKey, Sealer};
    /// use wgm_core::store::MemoryStore;
    ///
    /// let store = Arc::new(MemoryStore::new());
    /// let jwt = JwtIssuer::new(JwtKey::generate(), "wgm", "wgm-api").unwrap();
    /// let (m, local) = Manager::builder(store.clone(), Sealer::new(MasterKey::generate()))
    ///     .jwt(jwt.clone())
    ///     .build_with_local_admin();
    /// let mut spec = NewUser::new(UserName::new("alice").unwrap(), RoleName::new("user").unwrap());
    /// spec.password = Some(zeroize::Zeroizing::new("a long enough password".into()));
    /// m.create_user(&local.principal("root"), spec).await.unwrap();
    /// let login = m.login("alice", "a long enough password", None, "2001:db8::1".parse().unwrap()).await.unwrap();
    /// m.authenticate_jwt(&login.access_token).await.unwrap();
    /// m.logout(&login.access_token).await.unwrap();
    /// m.logout(&login.refresh_token).await.unwrap();
    /// assert!(m.authenticate_jwt(&login.access_token).await.is_err());
    /// assert!(m.refresh(&login.refresh_token).await.is_err());
    /// // Another process on the same store sees the logout too.
    /// let other = Manager::builder(store, Sealer::new(MasterKey::generate())).jwt(jwt).build();
    /// assert!(other.authenticate_jwt(&login.access_token).await.is_err());
    /// # });
    /// ```
    pub async fn logout(&self, token: &str) -> Result<()> {
        let jwt = self
            .jwt
            .as_ref()
            .ok_or_else(|| Error::unsupported("no JWT issuer configured"))?;
        let now = self.now();
        let claims = jwt
            .verify(token, TokenType::Access, now)
            .or_else(|_| jwt.verify(token, TokenType::Refresh, now))?;
        let user = self
            .store
            .get_user(UserId(claims.sub))
            .await?
            .ok_or_else(|| Error::unauthenticated("unknown user"))?;
        if user.token_version != claims.ver {
            // Already refused everywhere; nothing to end.
            return Err(Error::unauthenticated("the token was revoked"));
        }
        let key = crate::auth::throttle::ThrottleKey::Session(claims.jti);
        let state = crate::auth::throttle::ThrottleState {
            failures: 0,
            last_failure: unix(now),
            blocked_until: claims.exp,
        };
        let record = crate::store::ThrottleRecord {
            state,
            expires_at: OffsetDateTime::from_unix_timestamp(
                i64::try_from(claims.exp).unwrap_or(i64::MAX),
            )
            .unwrap_or(OffsetDateTime::now_utc() + time::Duration::days(366)),
        };
        // Absent → ended; already ended (the swap finds a record) is no error.
        if !self
            .store
            .swap_throttle_record(&key, None, Some(&record), now)
            .await?
        {
            let held = self.store.throttle_records(&[key], now).await?;
            if held.first().is_none_or(Option::is_none) {
                return Err(Error::store(
                    self.store.name(),
                    "the logout was not recorded; try again",
                ));
            }
        }
        self.audit_identity(
            None,
            AuditAction::UserLogout,
            format!("user/{}", user.name.key()),
            AuditOutcome::Success,
            json!({ "token": claims.jti, "kind": claims.typ }),
        )
        .await;
        Ok(())
    }

    #[cfg(feature = "auth")]
    /// `Unauthenticated` when the session of `claims` was logged out ([`Manager::logout`]).
    async fn check_session(&self, claims: &crate::auth::jwt::Claims) -> Result<()> {
        let key = crate::auth::throttle::ThrottleKey::Session(claims.jti);
        let ended = self.store.throttle_records(&[key], self.now()).await?;
        if ended.first().is_some_and(Option::is_some) {
            return Err(Error::unauthenticated("the session was logged out"));
        }
        Ok(())
    }

    /// Authenticate an API token (`wgm_<id>_<secret>`).
    pub async fn authenticate_token(&self, token: &str) -> Result<Principal> {
        let (id, secret) = parse_token(token)?;
        let bad = || Error::unauthenticated("invalid API token");
        let rec = self.store.get_token(id).await?.ok_or_else(bad)?;
        let hash = TokenHash::from_hex(&rec.secret_hash).map_err(|_| bad())?;
        if !verify_token(&secret, &hash)
            || rec.revoked
            || rec.expires_at.is_some_and(|t| t <= self.now())
        {
            return Err(bad());
        }
        let user = self.store.get_user(rec.user_id).await?.ok_or_else(bad)?;
        let p = self.principal_of(&user).await?;
        Ok(if let Some(scope) = rec.scopes {
            p.with_token(rec.id, scope)
        } else {
            {
                let all: Vec<Permission> = p.role_permissions().copied().collect();
                p.with_token(rec.id, all)
            }
        })
    }

    /// Create an API token for a user (oneself, or anyone with `token:create` beyond own).
    /// Its scope must be within what the caller holds. The plaintext is returned once.
    pub async fn create_token(
        &self,
        p: &Principal,
        spec: NewToken,
    ) -> Result<(TokenView, Zeroizing<String>)> {
        self.authorize(
            p,
            Resource::Token,
            Action::Create,
            Target::owned_by(spec.user.0),
        )
        .await?;
        let owner = self.load_user(spec.user).await?;
        if let Some(s) = &spec.scopes {
            let to = if spec.user.0 == p.user_id() {
                Grantee::Myself
            } else {
                Grantee::Others
            };
            let owner_p = self.principal_of(&owner).await?;
            let granted = check_grant(p, s, to)
                .and_then(|()| check_grant(&owner_p, s, Grantee::Myself))
                .map_err(|e| e.in_field("token.scopes"));
            if let Err(e) = granted {
                let target = Target::owned_by(spec.user.0);
                return Err(self
                    .refusal(p, Resource::Token, Action::Create, target, e)
                    .await);
            }
        }
        let name = crate::names::TokenName::new(spec.name)?.into_string();
        let now = self.now();
        if spec.expires_at.is_some_and(|t| t <= now) {
            return Err(Error::invalid("token.expires_at", "must be in the future"));
        }
        let generated = generate_token();
        let rec = ApiTokenRecord {
            id: generated.id,
            user_id: spec.user,
            name,
            secret_hash: generated.hash.to_hex(),
            scopes: spec.scopes,
            created_at: now,
            expires_at: spec.expires_at,
            revoked: false,
        };
        let view = TokenView::of(&rec);
        let entry = self.entry(
            p,
            AuditAction::TokenCreate,
            format!("user/{}/token/{}", rec.user_id, rec.id),
            json!({ "name": rec.name }),
        );
        self.store_commit_identity(vec![IdentityChange::TokenCreated { token: rec }], entry)
            .await?;
        Ok((view, generated.plaintext))
    }

    /// List tokens (one's own, or a user's/everyone's with `token:read`).
    pub async fn list_tokens(&self, p: &Principal, user: Option<UserId>) -> Result<Vec<TokenView>> {
        let all = self.store.list_tokens(user).await?;
        Ok(all
            .iter()
            .filter(|t| {
                crate::rbac::authorize(
                    p,
                    Resource::Token,
                    Action::Read,
                    Target::owned_by(t.user_id.0),
                )
                .is_ok()
            })
            .map(TokenView::of)
            .collect())
    }

    /// Revoke a token.
    pub async fn revoke_token(&self, p: &Principal, id: TokenId) -> Result<()> {
        let rec = self
            .store
            .get_token(id)
            .await?
            .ok_or_else(|| Error::not_found("token", id))?;
        let target = Target::owned_by(rec.user_id.0);
        if crate::rbac::authorize(p, Resource::Token, Action::Read, target).is_err() {
            return Err(self.hidden(p, Resource::Token, target, "token", id).await);
        }
        self.authorize(
            p,
            Resource::Token,
            Action::Delete,
            Target::owned_by(rec.user_id.0),
        )
        .await?;
        let entry = self.entry(
            p,
            AuditAction::TokenRevoke,
            format!("user/{}/token/{id}", rec.user_id),
            json!({}),
        );
        self.store_commit_identity(vec![IdentityChange::TokenRevoked { id }], entry)
            .await
    }

    /// Create or replace a custom role (not a built-in name; only permissions the caller
    /// holds).
    pub async fn put_role(&self, p: &Principal, role: Role) -> Result<()> {
        self.authorize(p, Resource::Role, Action::Create, Target::none())
            .await?;
        if is_builtin_name(&role.name) {
            return Err(Error::invalid(
                "role.name",
                "built-in roles cannot be changed",
            ));
        }
        role.validate()?;
        if let Err(e) = check_grant(p, &role.permissions, Grantee::Others) {
            let e = e.in_field("role.permissions");
            return Err(self
                .refusal(p, Resource::Role, Action::Create, Target::none(), e)
                .await);
        }
        let mut role = role;
        role.builtin = false;
        let entry = self.entry(
            p,
            AuditAction::RolePut,
            format!("role/{}", role.name),
            json!({ "permissions": role.permissions.len() }),
        );
        self.store_commit_identity(vec![IdentityChange::RolePut { role }], entry)
            .await
    }

    /// Delete a custom role that no user holds.
    pub async fn delete_role(&self, p: &Principal, name: &RoleName) -> Result<()> {
        self.authorize(p, Resource::Role, Action::Delete, Target::none())
            .await?;
        if is_builtin_name(name) {
            return Err(Error::invalid(
                "role.name",
                "built-in roles cannot be deleted",
            ));
        }
        for u in self.store.list_users(Page::ALL).await? {
            if u.roles.iter().any(|r| r.role.key() == name.key()) {
                return Err(Error::conflict(format!(
                    "role {name} is still held by user {}",
                    u.name
                )));
            }
        }
        let entry = self.entry(
            p,
            AuditAction::RoleDelete,
            format!("role/{name}"),
            json!({}),
        );
        self.store_commit_identity(
            vec![IdentityChange::RoleDeleted { name: name.clone() }],
            entry,
        )
        .await
    }
}

/// Hash a new user's password (argon2id with `params`).
#[cfg(feature = "auth")]
fn hash_new_password(pw: &str, params: &crate::auth::password::PasswordParams) -> Result<String> {
    hash_password_with(pw, params)
}

/// Without the `auth` feature there is no password hashing: a password is refused.
#[cfg(not(feature = "auth"))]
fn hash_new_password(_pw: &str, _params: &crate::auth::password::PasswordParams) -> Result<String> {
    Err(Error::invalid(
        "password",
        "passwords need wgm-core's `auth` feature (argon2id hashing)",
    ))
}

#[cfg(feature = "auth")]
fn unix(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap_or(0)
}
