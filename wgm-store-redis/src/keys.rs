//! The key layout: every key of a store starts with its prefix `{NAMESPACE}`, one hash
//! tag, so all of them live in one Redis Cluster slot (see the crate docs, "Deployments").

use wgm_core::model::{PeerId, ServerId, TokenId, UserId};
use wgm_core::store::rules::ProbeField;

/// Separates a name key from an id in the members of the sorted listings: below every
/// character a validated name may hold (names hold no control characters), so members sort
/// by name key and then id, in byte order.
pub(crate) const SEP: char = '\u{1}';

/// The keys of one store (one namespace).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// `{NAMESPACE}`.
    p: String,
}

impl Keys {
    pub(crate) fn new(namespace: &str) -> Keys {
        Keys {
            p: format!("{{{namespace}}}"),
        }
    }

    /// The prefix every key starts with, `{NAMESPACE}` (scripts that list build keys
    /// from it).
    pub(crate) fn prefix(&self) -> &str {
        &self.p
    }

    /// Schema version of the layout (string).
    pub(crate) fn schema(&self) -> String {
        format!("{}:schema", self.p)
    }
    /// A server's JSON body (string); exists while the server does.
    pub(crate) fn server(&self, id: ServerId) -> String {
        format!("{}:server:{id}", self.p)
    }
    /// Server id → head revision (hash); deleted servers keep their head.
    pub(crate) fn heads(&self) -> String {
        format!("{}:heads", self.p)
    }
    /// Server name key → server id (hash).
    pub(crate) fn server_names(&self) -> String {
        format!("{}:server-names", self.p)
    }
    /// `name key SEP id` of every server (sorted set, all scores 0): the listing order.
    pub(crate) fn server_list(&self) -> String {
        format!("{}:servers", self.p)
    }
    /// Peer id → peer JSON body without statistics (hash), per server.
    pub(crate) fn peers(&self, id: ServerId) -> String {
        format!("{}:peers:{id}", self.p)
    }
    /// Peer id → statistics JSON (hash), per server.
    pub(crate) fn stats(&self, id: ServerId) -> String {
        format!("{}:stats:{id}", self.p)
    }
    /// Unique value (`field tag : probe text`) → peer id (hash), per server.
    pub(crate) fn index(&self, id: ServerId) -> String {
        format!("{}:index:{id}", self.p)
    }
    /// Revision JSON bodies scored by revision number (sorted set), per server.
    pub(crate) fn revisions(&self, id: ServerId) -> String {
        format!("{}:revisions:{id}", self.p)
    }
    /// Audit record JSON bodies scored by sequence number (sorted set).
    pub(crate) fn audit(&self) -> String {
        format!("{}:audit", self.p)
    }
    /// The stored head of the audit log, `SEQ HASH` (string).
    pub(crate) fn audit_head(&self) -> String {
        format!("{}:audit-head", self.p)
    }
    /// The sealed audit key, JSON (string).
    pub(crate) fn audit_key(&self) -> String {
        format!("{}:audit-key", self.p)
    }
    /// The change feed (stream).
    pub(crate) fn feed(&self) -> String {
        format!("{}:feed", self.p)
    }
    /// The number of the last feed entry (string counter).
    pub(crate) fn feed_seq(&self) -> String {
        format!("{}:feed-seq", self.p)
    }
    /// The durable allocator state of a server: fields `revision` and `body` (hash).
    pub(crate) fn allocator(&self, id: ServerId) -> String {
        format!("{}:allocator:{id}", self.p)
    }
    /// Host → applied revision (and device part) JSON (hash), per server.
    pub(crate) fn applied(&self, id: ServerId) -> String {
        format!("{}:applied:{id}", self.p)
    }
    /// Host → lease JSON (hash), per server.
    pub(crate) fn leases(&self, id: ServerId) -> String {
        format!("{}:leases:{id}", self.p)
    }
    /// Host → latest host report JSON (hash), per server.
    pub(crate) fn reports(&self, id: ServerId) -> String {
        format!("{}:reports:{id}", self.p)
    }
    /// A user's JSON body (string).
    pub(crate) fn user(&self, id: UserId) -> String {
        format!("{}:user:{id}", self.p)
    }
    /// The prefix of [`Keys::user`] (scripts append the id).
    pub(crate) fn user_prefix(&self) -> String {
        format!("{}:user:", self.p)
    }
    /// User name key → user id (hash).
    pub(crate) fn user_names(&self) -> String {
        format!("{}:user-names", self.p)
    }
    /// E-mail address → user id (hash).
    pub(crate) fn user_emails(&self) -> String {
        format!("{}:user-emails", self.p)
    }
    /// `name key SEP id` of every user (sorted set, all scores 0).
    pub(crate) fn user_list(&self) -> String {
        format!("{}:users", self.p)
    }
    /// Role name key → role JSON (hash).
    pub(crate) fn roles(&self) -> String {
        format!("{}:roles", self.p)
    }
    /// A token's JSON body (string).
    pub(crate) fn token(&self, id: TokenId) -> String {
        format!("{}:token:{id}", self.p)
    }
    /// The prefix of [`Keys::token`] (scripts append the id).
    pub(crate) fn token_prefix(&self) -> String {
        format!("{}:token:", self.p)
    }
    /// Token id → user id of every token (hash).
    pub(crate) fn tokens(&self) -> String {
        format!("{}:tokens", self.p)
    }
    /// Token id → `1` of one user's tokens (hash).
    pub(crate) fn user_tokens(&self, id: UserId) -> String {
        format!("{}:user-tokens:{id}", self.p)
    }
}

impl Keys {
    /// A login-throttle record (string with an expiry) by its throttle key's text
    /// (`wgm_core::auth::throttle::ThrottleKey::store_key`).
    pub(crate) fn throttle(&self, key: &str) -> String {
        format!("{}:throttle:{key}", self.p)
    }

    /// The prefix of every [`Keys::throttle`] key.
    pub(crate) fn throttle_prefix(&self) -> String {
        format!("{}:throttle:", self.p)
    }
}

/// The member of a sorted listing for `name_key` and `id` (see [`SEP`]).
pub(crate) fn list_member(name_key: &str, id: &impl std::fmt::Display) -> String {
    format!("{name_key}{SEP}{id}")
}

/// The field of a peer index ([`Keys::index`]) for a probed value.
pub(crate) fn index_field(field: ProbeField, value: &str) -> String {
    let tag = match field {
        ProbeField::Name => "n",
        ProbeField::Key => "k",
        ProbeField::V6 => "6",
        ProbeField::V4 => "4",
        ProbeField::Prefix => "p",
    };
    format!("{tag}:{value}")
}

/// A peer id as an index value.
pub(crate) fn peer_value(id: PeerId) -> String {
    id.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_one_hash_tag() {
        let k = Keys::new("t1");
        let s = ServerId::new_random();
        for key in [
            k.server(s),
            k.heads(),
            k.peers(s),
            k.audit(),
            k.feed(),
            k.user_prefix(),
            k.throttle("account:alice"),
        ] {
            assert!(key.starts_with("{t1}:"), "{key}");
        }
        assert!(list_member("a", &"z") < list_member("a b", &"a"));
        assert_eq!(index_field(ProbeField::V6, "fd00::1"), "6:fd00::1");
        assert!(k
            .throttle("source:192.0.2.1")
            .starts_with(&k.throttle_prefix()));
    }
}
