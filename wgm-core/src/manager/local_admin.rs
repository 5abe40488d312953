//! The local-administrator capability: [`LocalAdmin`].

use uuid::Uuid;

use super::ManagerBuilder;
use crate::names::UserName;
use crate::rbac::{builtin_role, Principal};

/// The capability to act as the local administrator.
///
/// **Whoever holds the process and the master key is an administrator.** Such a caller
/// can open every sealed secret and write to the store directly, so refusing it anything
/// would protect nothing; wgm says so openly instead of pretending otherwise. The
/// capability is therefore handed out only by the [`ManagerBuilder`], which holds the
/// master key (inside the [`crate::seal::Sealer`]), and only when the binary asks for it
/// with [`ManagerBuilder::local_admin_capability`] (or
/// [`ManagerBuilder::build_with_local_admin`]):
///
/// - the CLI run on the host, tests and benchmarks ask for it;
/// - a binary that serves other people (a REST server, an agent) does not, and then no
///   code in that process — nothing that only holds the [`super::Manager`] — can produce
///   an administrator [`Principal`] without authenticating.
///
/// Its principals hold the built-in `admin` role, belong to no stored user (the nil id,
/// user name `local`, so they own no peers) and are audited as `local:<unix user>`.
///
/// ```
/// use std::sync::Arc;
/// use wgm_core::manager::Manager;
/// use wgm_core::seal::{MasterKey, Sealer};
/// use wgm_core::store::MemoryStore;
///
/// let store = Arc::new(MemoryStore::new());
/// let (manager, local) = Manager::builder(store, Sealer::new(MasterKey::generate()))
///     .build_with_local_admin();
/// let admin = local.principal("root");
/// assert!(admin.is_local() && admin.is_admin());
/// # let _ = manager;
/// ```
#[derive(Debug)]
pub struct LocalAdmin {
    /// Private: only [`ManagerBuilder::local_admin_capability`] makes one.
    _held: (),
}

impl ManagerBuilder {
    /// Take the local-administrator capability: this binary holds the master key and
    /// acts as the local administrator (see [`LocalAdmin`]). A binary that serves other
    /// people must not call this.
    pub fn local_admin_capability(&self) -> LocalAdmin {
        LocalAdmin { _held: () }
    }

    /// [`ManagerBuilder::build`], and take the local-administrator capability (see
    /// [`ManagerBuilder::local_admin_capability`]).
    pub fn build_with_local_admin(self) -> (super::Manager, LocalAdmin) {
        let local = self.local_admin_capability();
        (self.build(), local)
    }
}

impl LocalAdmin {
    /// The principal of the local administrator run by `unix_user`: holds every
    /// permission and is audited as `local:<unix_user>` (the name is cut to 32
    /// characters of `[A-Za-z0-9_.-]`; `unknown` when nothing is left).
    pub fn principal(&self, unix_user: &str) -> Principal {
        let clean: String = unix_user
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .take(32)
            .collect();
        let roles = builtin_role("admin").into_iter().collect();
        Principal::new(Uuid::nil(), local_user_name(), roles).local(if clean.is_empty() {
            "unknown".to_owned()
        } else {
            clean
        })
    }
}

/// The user name of local administrators (never stored as a user).
fn local_user_name() -> UserName {
    // A constant that satisfies the user-name rules (unit-tested in `manager::tests`).
    UserName::new("local").expect("`local` is a valid user name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rbac::PrincipalKind;

    #[test]
    fn local_principals() {
        assert_eq!(local_user_name().as_str(), "local");
        let b = crate::manager::Manager::builder(
            std::sync::Arc::new(crate::store::MemoryStore::new()),
            crate::seal::Sealer::new(crate::seal::MasterKey::generate()),
        );
        let local = b.local_admin_capability();
        for (given, label) in [
            ("root", "root"),
            ("al ice;rm -rf", "alicerm-rf"),
            ("", "unknown"),
            ("\u{202e}", "unknown"),
            (&"x".repeat(40), &"x".repeat(32)),
        ] {
            let p = local.principal(given);
            assert!(p.is_admin() && p.is_local(), "{given:?}");
            assert_eq!(p.user_id(), Uuid::nil());
            assert_eq!(
                p.kind(),
                &PrincipalKind::Local {
                    unix_user: label.to_owned()
                }
            );
        }
    }
}
