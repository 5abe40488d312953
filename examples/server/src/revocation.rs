//! Logged-out JWTs, by their `jti`, until they expire anyway.
//!
//! The library revokes all of a user's tokens at once (a password or role change bumps
//! the user's token version); ending one session needs a list of the tokens that were
//! logged out. It lives in this process ([`LocalRevocations`]), or in Redis
//! ([`RedisRevocations`], one key per token with its expiry) when `redis_url` is
//! configured, so that a logout holds on every copy of the server.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;
use wgm_core::{Error, Result};

/// Where logged-out token ids are kept.
#[async_trait]
pub trait Revocations: Debug + Send + Sync + 'static {
    /// Remember `jti` as logged out until `until` (the token's own expiry).
    async fn revoke(&self, jti: Uuid, until: OffsetDateTime) -> Result<()>;
    /// Whether `jti` was logged out.
    async fn is_revoked(&self, jti: Uuid) -> Result<bool>;
}

/// In this process: a map from token id to expiry, pruned as it grows.
#[derive(Debug, Default)]
pub struct LocalRevocations {
    map: Mutex<HashMap<Uuid, OffsetDateTime>>,
}

#[async_trait]
impl Revocations for LocalRevocations {
    async fn revoke(&self, jti: Uuid, until: OffsetDateTime) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        let mut m = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.len() > 1024 {
            m.retain(|_, t| *t > now);
        }
        m.insert(jti, until);
        Ok(())
    }

    async fn is_revoked(&self, jti: Uuid) -> Result<bool> {
        let m = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(m.get(&jti).is_some_and(|t| *t > OffsetDateTime::now_utc()))
    }
}

/// On Redis: key `NAMESPACE:revoked:JTI` with the token's expiry (`EXAT`).
pub struct RedisRevocations {
    conn: redis::aio::ConnectionManager,
    namespace: String,
}

impl Debug for RedisRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRevocations")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn redis_err(e: &redis::RedisError) -> Error {
    // The error's text names the server and command, never a password.
    Error::store("redis", format!("revocation list: {e}"))
}

impl RedisRevocations {
    /// Connect to `url`; keys under `namespace`.
    pub async fn connect(url: &str, namespace: &str) -> Result<RedisRevocations> {
        let client = redis::Client::open(url).map_err(|e| redis_err(&e))?;
        let conn = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            redis::aio::ConnectionManager::new(client),
        )
        .await
        .map_err(|_| Error::store("redis", "revocation list: no answer within 10 s"))?
        .map_err(|e| redis_err(&e))?;
        Ok(RedisRevocations {
            conn,
            namespace: namespace.to_owned(),
        })
    }

    fn key(&self, jti: Uuid) -> String {
        format!("{}:revoked:{jti}", self.namespace)
    }
}

#[async_trait]
impl Revocations for RedisRevocations {
    async fn revoke(&self, jti: Uuid, until: OffsetDateTime) -> Result<()> {
        let mut c = self.conn.clone();
        let at = until.unix_timestamp().max(1);
        redis::cmd("SET")
            .arg(self.key(jti))
            .arg(1)
            .arg("EXAT")
            .arg(at)
            .query_async::<()>(&mut c)
            .await
            .map_err(|e| redis_err(&e))
    }

    async fn is_revoked(&self, jti: Uuid) -> Result<bool> {
        let mut c = self.conn.clone();
        let n: i64 = redis::cmd("EXISTS")
            .arg(self.key(jti))
            .query_async(&mut c)
            .await
            .map_err(|e| redis_err(&e))?;
        Ok(n > 0)
    }
}
