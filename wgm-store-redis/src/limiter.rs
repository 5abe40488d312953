//! [`RedisLimiter`]: the core's GCRA rate limit ([`wgm_core::ratelimit`]) kept in Redis,
//! so that every process on one Redis (the copies of a REST server behind a load
//! balancer) shares one budget per key.
//!
//! One script decides and records a request in one atomic step: it reads the key's
//! theoretical arrival time, takes *now* from the Redis server's clock (`TIME`, so copies
//! whose clocks disagree still agree on the limit), applies the same arithmetic as
//! [`Limit::decide`], and stores the new time with an expiry at the moment the key's
//! budget is whole again (an idle key costs nothing). A refused request writes nothing.
//! Each call touches one key, so limiter keys may live on any shard of a cluster.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use async_trait::async_trait;
use redis::Script;
use wgm_core::ratelimit::{Decision, Limit, RateLimiter};
use wgm_core::Result;

use crate::conn::Conn;
use crate::error::RedisError;
use crate::{connect, RedisOptions, RedisStore};

/// GCRA in one script. KEYS[1]: the key. ARGV: interval and burst in microseconds.
/// Returns `{allowed 0|1, remaining, retry_after µs, reset_after µs}`.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
local ttl_ms = math.floor((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
return {1, math.floor((now - allow_at) / interval), 0, new_tat - now}
";

/// A [`RateLimiter`] whose state lives in Redis under `{NAMESPACE}:ratelimit:KEY`.
///
/// ```no_run
/// use std::time::Duration;
/// use wgm_core::ratelimit::{Limit, RateLimiter};
/// use wgm_store_redis::RedisLimiter;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> wgm_core::Result<()> {
/// let limiter = RedisLimiter::connect("redis://127.0.0.1:6379", "wgm").await?;
/// let limit = Limit::new(100, Duration::from_secs(60))?;
/// let d = limiter.check("addr:2001:db8::/64", &limit).await?;
/// if !d.allowed {
///     println!("429, Retry-After: {}", d.retry_after_secs());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisLimiter {
    conn: Conn,
    prefix: String,
    script: Arc<Script>,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// Connect to the Redis at `url` (the store's URL forms) and keep limits under
    /// `namespace` (the rules of [`RedisOptions::namespace`]), with the default timeouts.
    ///
    /// # Errors
    /// `InvalidInput` (`store.url`, `store.namespace`) for an unusable URL or namespace;
    /// `Store` when Redis cannot be reached in time. No error carries the password.
    pub async fn connect(url: &str, namespace: &str) -> Result<RedisLimiter> {
        Self::connect_with(url, RedisOptions::default().namespace(namespace)).await
    }

    /// [`RedisLimiter::connect`] with explicit options (namespace and timeouts; the
    /// store's other options do not apply).
    ///
    /// # Errors
    /// As [`RedisLimiter::connect`].
    pub async fn connect_with(url: &str, options: RedisOptions) -> Result<RedisLimiter> {
        options.check()?;
        let (conn, _client, _closed): (Conn, redis::Client, Arc<AtomicBool>) =
            connect(url, &options).await?;
        Ok(Self::on(conn, &options.namespace))
    }

    fn on(conn: Conn, namespace: &str) -> RedisLimiter {
        RedisLimiter {
            conn,
            prefix: format!("{{{namespace}}}:ratelimit:"),
            script: Arc::new(Script::new(GCRA)),
        }
    }
}

impl RedisStore {
    /// A [`RedisLimiter`] on this store's connection and namespace.
    ///
    /// ```no_run
    /// # use wgm_store_redis::{RedisOptions, RedisStore};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> wgm_core::Result<()> {
    /// let store = RedisStore::open("redis://127.0.0.1", RedisOptions::default()).await?;
    /// let limiter = store.limiter();
    /// # let _ = limiter; Ok(()) }
    /// ```
    pub fn limiter(&self) -> RedisLimiter {
        RedisLimiter::on(self.inner.conn.clone(), &self.inner.options.namespace)
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, key: &str, limit: &Limit) -> Result<Decision> {
        let mut inv = self.script.key(format!("{}{key}", self.prefix));
        inv.arg(limit.interval_micros()).arg(limit.burst_micros());
        let reply: Vec<i64> = self.conn.script(&inv).await?;
        let [allowed, remaining, retry, reset] = reply[..] else {
            return Err(RedisError::BadValue {
                what: "rate limiter reply",
            }
            .into());
        };
        let micros = |v: i64| std::time::Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(Decision {
            allowed: allowed == 1,
            remaining: u32::try_from(remaining).unwrap_or(0),
            retry_after: micros(retry),
            reset_after: micros(reset),
        })
    }
}
