//! What an audit record says happened: [`AuditAction`].
//!
//! The action is typed inside the library and text only at the edges: stores persist it
//! (inside the chained audit entry) and the CLI and JSON show it as the same
//! `resource.verb` strings wgm has always written (`peer.add`, `server.create`,
//! `secret.reseal`), so stored records, their hashes and JSON output stay compatible.
//!
//! ## Strings this version does not know
//!
//! An audit log outlives the program that wrote it: a record may come from an older or a
//! newer wgm, or from an embedding that wrote its own actions. Reading one must never
//! fail or panic, and must keep the text exactly (the record's hash covers it). So
//! parsing is total: a known string becomes its variant, any other string becomes
//! [`AuditAction::Other`], which keeps the text verbatim and writes it back unchanged.
//! An [`UnknownAuditAction`] can only be made by parsing, so every value has one
//! spelling: `"peer.add".parse()` is always [`AuditAction::PeerAdd`], never `Other`.
//!
//! ```
//! use wgm_core::audit::AuditAction;
//! let a: AuditAction = "peer.add".parse().unwrap();
//! assert_eq!(a, AuditAction::PeerAdd);
//! assert_eq!(serde_json::to_string(&a).unwrap(), r#""peer.add""#);
//! // From a newer version: kept as it was written.
//! let future: AuditAction = serde_json::from_str(r#""peer.teleport""#).unwrap();
//! assert!(matches!(future, AuditAction::Other(_)));
//! assert_eq!(future.as_str(), "peer.teleport");
//! ```

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::rbac::{Action, Resource};

macro_rules! audit_actions {
    ($( $(#[$doc:meta])* $variant:ident => $text:literal, )*) => {
        /// What an audit record says happened (or was refused, or failed: see
        /// [`crate::model::AuditOutcome`]).
        ///
        /// Serialized as its stable text ([`AuditAction::as_str`]); see the
        /// [module documentation](self) for strings this version does not know.
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum AuditAction {
            $( $(#[$doc])* $variant, )*
            /// An action this version does not know (read from an audit log written by
            /// another version or an embedding), kept verbatim.
            Other(UnknownAuditAction),
        }

        impl AuditAction {
            /// Every action this version knows, in declaration order.
            pub const KNOWN: &'static [AuditAction] = &[ $( AuditAction::$variant, )* ];

            /// The stable text (`peer.add`).
            pub fn as_str(&self) -> &str {
                match self {
                    $( AuditAction::$variant => $text, )*
                    AuditAction::Other(o) => o.as_str(),
                }
            }

            /// The known action spelled `s`.
            fn known(s: &str) -> Option<AuditAction> {
                match s {
                    $( $text => Some(AuditAction::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

audit_actions! {
    /// A refused `server:read`.
    ServerRead => "server.read",
    /// A refused `peer:read` (answered as "not found" where the peer is hidden).
    PeerRead => "peer.read",
    /// A refused `user:read`.
    UserRead => "user.read",
    /// A refused `role:read`.
    RoleRead => "role.read",
    /// A refused `token:read`.
    TokenRead => "token.read",
    /// A refused `audit:read`.
    AuditRead => "audit.read",
    /// A refused `config:read` (history and diffs).
    ConfigRead => "config.read",
    /// A server was created.
    ServerCreate => "server.create",
    /// A server was imported from a wg-quick file.
    ServerImport => "server.import",
    /// A server's settings changed (also a refused `server:update`).
    ServerUpdate => "server.update",
    /// A server's key pair was replaced.
    ServerRotateKey => "server.rotate_key",
    /// A server's key pair was brought back from an earlier revision.
    ServerRestoreKey => "server.restore_key",
    /// A server was deleted (also a refused `server:delete`).
    ServerDelete => "server.delete",
    /// A server's desired state was applied to a host (also a refused `server:apply`).
    ServerApply => "server.apply",
    /// A peer was added.
    PeerAdd => "peer.add",
    /// A refused `peer:create`.
    PeerCreate => "peer.create",
    /// A peer's settings changed (also a refused `peer:update`).
    PeerUpdate => "peer.update",
    /// A peer was enabled.
    PeerEnable => "peer.enable",
    /// A peer was disabled.
    PeerDisable => "peer.disable",
    /// A peer's key pair was replaced.
    PeerRotateKey => "peer.rotate_key",
    /// A peer's preshared key was replaced.
    PeerRotatePsk => "peer.rotate_psk",
    /// A peer's key pair and preshared key were brought back from an earlier revision
    /// (the explicit act a rollback never does).
    PeerRestoreKeys => "peer.restore_keys",
    /// A peer was removed.
    PeerRemove => "peer.remove",
    /// A refused `peer:delete`.
    PeerDelete => "peer.delete",
    /// A refused `peer:assign` (changing a peer's owner, or creating one for someone
    /// else).
    PeerAssign => "peer.assign",
    /// A refused `peer:route` (extra allowed IPs or a delegated prefix).
    PeerRoute => "peer.route",
    /// A peer's firewall policy was changed (also a refused `peer:policy`).
    PeerPolicy => "peer.policy",
    /// A server's firewall policy was changed (also a refused `server:policy`).
    ServerPolicy => "server.policy",
    /// The expiry sweep disabled expired peers.
    PeerExpire => "peer.expire",
    /// A secret (a client configuration with keys, a server key) was exported (also a
    /// refused `secret:export`).
    SecretExport => "secret.export",
    /// Secrets were sealed again under the current master key.
    SecretReseal => "secret.reseal",
    /// A server's configuration was rolled back (also a refused `config:rollback`).
    ConfigRollback => "config.rollback",
    /// A user was created (also a refused `user:create`).
    UserCreate => "user.create",
    /// A user's record changed (also a refused `user:update`).
    UserUpdate => "user.update",
    /// A user's password was set.
    UserPassword => "user.password",
    /// A user was deleted (also a refused `user:delete`).
    UserDelete => "user.delete",
    /// A user started TOTP enrolment.
    UserTotpEnroll => "user.totp_enroll",
    /// A user confirmed TOTP enrolment.
    UserTotpConfirm => "user.totp_confirm",
    /// A password login (successful or failed).
    UserLogin => "user.login",
    /// A login session was ended (a JWT logged out).
    UserLogout => "user.logout",
    /// A custom role was created or replaced.
    RolePut => "role.put",
    /// A refused `role:create`.
    RoleCreate => "role.create",
    /// A refused `role:update`.
    RoleUpdate => "role.update",
    /// A custom role was deleted (also a refused `role:delete`).
    RoleDelete => "role.delete",
    /// A refused `role:assign`.
    RoleAssign => "role.assign",
    /// An API token was created (also a refused `token:create`).
    TokenCreate => "token.create",
    /// An API token was revoked.
    TokenRevoke => "token.revoke",
    /// A refused `token:delete` (revoking a token).
    TokenDelete => "token.delete",
}

impl AuditAction {
    /// The action a refused request for permission `resource:action` is audited as:
    /// `resource.action` (`peer.create`), a known variant for every permission of the
    /// catalogue (every refusal is audited, reads included).
    pub fn refused(resource: Resource, action: Action) -> AuditAction {
        let text = format!("{}.{}", resource.as_str(), action.as_str());
        Self::parse(&text)
    }

    /// Parse `s`: its known variant, or [`AuditAction::Other`] keeping `s` verbatim.
    /// Never fails.
    pub fn parse(s: &str) -> AuditAction {
        Self::known(s).unwrap_or_else(|| AuditAction::Other(UnknownAuditAction(s.to_owned())))
    }

    /// Whether this version knows the action.
    pub fn is_known(&self) -> bool {
        !matches!(self, AuditAction::Other(_))
    }
}

/// The text of an audit action this version does not know. Made only by parsing
/// ([`AuditAction::parse`]), never for a string that names a known action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UnknownAuditAction(String);

impl UnknownAuditAction {
    /// The text, exactly as it was read.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditAction {
    type Err = Infallible;
    fn from_str(s: &str) -> Result<Self, Infallible> {
        Ok(Self::parse(s))
    }
}

impl From<&str> for AuditAction {
    fn from(s: &str) -> Self {
        Self::parse(s)
    }
}

impl PartialEq<str> for AuditAction {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for AuditAction {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for AuditAction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AuditAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Self::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for a in AuditAction::KNOWN {
            assert!(seen.insert(a.as_str()), "{a} spelled twice");
            assert_eq!(&AuditAction::parse(a.as_str()), a);
            let json = serde_json::to_string(a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.as_str()));
            assert_eq!(&serde_json::from_str::<AuditAction>(&json).unwrap(), a);
            assert!(a.is_known());
        }
    }

    #[test]
    fn the_strings_written_before_the_enum_are_unchanged() {
        // Every action text earlier versions wrote, so old logs read as known actions.
        for s in [
            "server.create",
            "server.import",
            "server.update",
            "server.rotate_key",
            "server.delete",
            "server.apply",
            "peer.add",
            "peer.update",
            "peer.enable",
            "peer.disable",
            "peer.rotate_key",
            "peer.rotate_psk",
            "peer.remove",
            "peer.expire",
            "secret.export",
            "secret.reseal",
            "config.rollback",
            "user.create",
            "user.update",
            "user.password",
            "user.delete",
            "user.totp_enroll",
            "user.totp_confirm",
            "user.login",
            "token.create",
            "token.revoke",
            "role.put",
            "role.delete",
        ] {
            let a = AuditAction::parse(s);
            assert!(a.is_known(), "{s}");
            assert_eq!(a.as_str(), s);
        }
    }

    #[test]
    fn every_refusable_permission_has_a_known_action() {
        for r in Resource::ALL {
            for &a in r.actions() {
                let refused = AuditAction::refused(r, a);
                assert_eq!(refused.as_str(), format!("{r}.{a}"));
                assert!(refused.is_known(), "{r}:{a}");
            }
        }
    }

    #[test]
    fn unknown_strings_are_kept_verbatim() {
        for s in [
            "",
            "peer.teleport",
            "Peer.Add",
            "conformance.commit",
            "ü.ß",
            "a\"b",
        ] {
            let a = AuditAction::parse(s);
            assert!(!a.is_known(), "{s:?}");
            assert_eq!(a.as_str(), s);
            let back: AuditAction =
                serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
            assert_eq!(back, a);
        }
        assert!(serde_json::from_str::<AuditAction>("17").is_err());
    }
}
