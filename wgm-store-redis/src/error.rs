//! The crate's private detailed error, mapped into [`wgm_core::Error`] in one `From` impl.
//! Every message is free of the store's URL and password: Redis errors are copied as text
//! through [`crate::conn::Redactor`] when they are made.

use std::time::Duration;

/// The name of this store in errors and logs.
pub(crate) const S: &str = "redis";

/// What went wrong inside the Redis store, in detail. Never leaves the crate: every public
/// function returns [`wgm_core::Error`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisError {
    /// A semantic outcome decided by the commit rules (`wgm_core::store::rules`) or the
    /// model (`Lease::decide`): conflict, not found, ...
    #[error(transparent)]
    Core(#[from] wgm_core::Error),

    /// Redis (or the connection to it) failed; the message is redacted.
    #[error("{message}")]
    Redis {
        /// What the client said.
        message: String,
    },

    /// Redis did not answer a request within the bound.
    #[error("no answer from Redis within {} s", waited.as_secs_f32())]
    Timeout {
        /// How long the request waited.
        waited: Duration,
    },

    /// No connection could be made when the store was opened.
    #[error("cannot connect within {} s: {cause}", waited.as_secs_f32())]
    Unreachable {
        /// How long the open waited.
        waited: Duration,
        /// Why (redacted).
        cause: String,
    },

    /// A stored JSON body does not decode into the model (a corrupt or foreign value).
    #[error("a stored {what} does not decode: {source}")]
    Corrupt {
        /// The kind of value.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },

    /// A value could not be encoded to JSON (cannot happen for the model's own types).
    #[error("cannot encode a {what}: {source}")]
    Encode {
        /// The kind of value.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },

    /// A stored value is outside its domain (an unparsable revision or id, a reply of an
    /// unexpected shape, a key whose body names another key).
    #[error("a stored {what} is invalid")]
    BadValue {
        /// What was invalid.
        what: &'static str,
    },

    /// An optimistic transaction lost its verification this many times in a row.
    #[error("contention: the transaction ({what}) lost to concurrent writers {attempts} times in a row; try again")]
    Contention {
        /// The operation.
        what: &'static str,
        /// How many attempts were made.
        attempts: u32,
    },

    /// The keys were written by a newer wgm than this one.
    #[error("the Redis keys are at schema version {found}, newer than this build of wgm knows ({known})")]
    SchemaTooNew {
        /// The version stored.
        found: String,
        /// The version this build writes.
        known: u32,
    },

    /// The server does not keep writes durably and the options require it.
    #[error("Redis does not keep acknowledged writes durably: {reason}")]
    NotDurable {
        /// What was found.
        reason: String,
    },

    /// The store was closed ([`crate::RedisStore::close`]).
    #[error("the store is closed")]
    Closed,
}

impl RedisError {
    /// Whether this is a decision of the rules (a semantic outcome) rather than a failure
    /// of the engine.
    pub(crate) fn is_semantic(&self) -> bool {
        matches!(self, RedisError::Core(_))
    }
}

impl From<RedisError> for wgm_core::Error {
    fn from(e: RedisError) -> Self {
        match e {
            RedisError::Core(e) => e,
            other => wgm_core::Error::store(S, other),
        }
    }
}

/// Decode a JSON body into a model value.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    s: &str,
) -> Result<T, RedisError> {
    serde_json::from_str(s).map_err(|source| RedisError::Corrupt { what, source })
}

/// Serialize a model value to its JSON body.
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(
    what: &'static str,
    v: &T,
) -> Result<String, RedisError> {
    serde_json::to_string(v).map_err(|source| RedisError::Encode { what, source })
}

/// Parse a stored decimal number (a revision, a sequence number, a version).
pub(crate) fn number(what: &'static str, s: &str) -> Result<u64, RedisError> {
    s.parse().map_err(|_| RedisError::BadValue { what })
}

/// Parse a stored id.
pub(crate) fn parse_id<T: std::str::FromStr>(what: &'static str, s: &str) -> Result<T, RedisError> {
    s.parse().map_err(|_| RedisError::BadValue { what })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_pass_through_and_the_rest_are_store_errors() {
        let e: wgm_core::Error = RedisError::Core(wgm_core::Error::conflict("x")).into();
        assert_eq!(e.code(), "conflict");
        let e: wgm_core::Error = RedisError::BadValue { what: "revision" }.into();
        assert!(matches!(e, wgm_core::Error::Store { store: "redis", .. }));
        let e: wgm_core::Error = RedisError::Contention {
            what: "commit",
            attempts: 3,
        }
        .into();
        assert!(e.to_string().contains("contention"), "{e}");
        assert!(number("n", "12").is_ok_and(|n| n == 12));
        assert!(number("n", "-1").is_err());
        assert!(RedisError::Core(wgm_core::Error::conflict("x")).is_semantic());
        assert!(!RedisError::Closed.is_semantic());
    }
}
