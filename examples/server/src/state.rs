//! What every handler shares: the manager, the JWT issuer, the limiter, the list of
//! logged-out tokens, the metrics.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use wgm_core::auth::jwt::JwtIssuer;
use wgm_core::manager::Manager;
use wgm_core::model::ServerId;
use wgm_core::ratelimit::{Limit, RateLimiter};
use wgm_core::store::Store;

use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::revocation::Revocations;

/// The limits in force (`None`: off).
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// Per principal.
    pub per_principal: Option<Limit>,
    /// Per client address.
    pub per_address: Option<Limit>,
    /// Per client address on login and refresh.
    pub login_per_address: Option<Limit>,
}

/// The shared state (cheap to clone).
#[derive(Clone, Debug)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Inner {
    /// The manager: every operation goes through it.
    pub m: Manager,
    /// The store, for readiness only (one read; nothing else uses it directly).
    pub store: Arc<dyn Store>,
    /// The JWT issuer the manager also holds (to read a token's id for logout).
    pub jwt: JwtIssuer,
    /// Logged-out JWTs.
    pub revoked: Arc<dyn Revocations>,
    /// The rate limiter.
    pub limiter: Arc<dyn RateLimiter>,
    /// The limits.
    pub limits: Limits,
    /// Metrics.
    pub metrics: Metrics,
    /// Issuer in TOTP provisioning URIs.
    pub totp_issuer: String,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Access token lifetime (for `expires_in`).
    pub access_ttl: Duration,
    /// Per-server locks held from an `If-Match` check to the end of its write.
    locks: std::sync::Mutex<HashMap<ServerId, Arc<tokio::sync::Mutex<()>>>>,
    /// Fair (FIFO) gates in front of each server's requests, by a hash of the server
    /// reference in the path ([`Inner::server_gate`]).
    gates: Vec<Arc<tokio::sync::Mutex<()>>>,
}

/// How many gates [`Inner::server_gate`] stripes servers over.
const GATES: usize = 64;

impl Inner {
    /// Put the parts together.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        m: Manager,
        store: Arc<dyn Store>,
        jwt: JwtIssuer,
        revoked: Arc<dyn Revocations>,
        limiter: Arc<dyn RateLimiter>,
        limits: Limits,
        metrics: Metrics,
        totp_issuer: String,
        trusted_proxies: Vec<IpNet>,
        access_ttl: Duration,
    ) -> Inner {
        Inner {
            m,
            store,
            jwt,
            revoked,
            limiter,
            limits,
            metrics,
            totp_issuer,
            trusted_proxies,
            access_ttl,
            locks: std::sync::Mutex::new(HashMap::new()),
            gates: (0..GATES).map(|_| Arc::default()).collect(),
        }
    }

    /// The gate of requests about the server `reference` (as written in the path):
    /// requests for one server enter the Manager one at a time, in arrival order.
    ///
    /// The Manager serializes a server's operations on its own per-server lock
    /// (`futures::lock::Mutex`), whose unlock wakes the waiter in the lowest slot rather
    /// than the oldest one: under sustained concurrency on one server, some requests
    /// waited until the load stopped (30 s in the load run). This FIFO gate in front of it
    /// keeps the wait fair; it costs no parallelism the Manager's lock allowed. Striped
    /// by hash, so memory does not grow with the names clients send.
    pub fn server_gate(&self, reference: &str) -> Arc<tokio::sync::Mutex<()>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        reference.to_lowercase().hash(&mut h);
        let i = usize::try_from(h.finish() % GATES as u64).unwrap_or(0);
        self.gates[i].clone()
    }

    /// Run one manager operation, counted and timed as `name`.
    pub async fn op<T>(
        &self,
        name: &'static str,
        f: impl Future<Output = wgm_core::Result<T>>,
    ) -> ApiResult<T> {
        let t = Instant::now();
        let r = f.await;
        self.metrics.manager_op(name, r.as_ref().err(), t.elapsed());
        r.map_err(ApiError::from)
    }

    /// The lock of server `id`'s conditional writes in this process.
    pub fn server_lock(&self, id: ServerId) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(id)
            .or_default()
            .clone()
    }

    /// Check `key` against `limit`; a 429 when refused. A limiter that fails (Redis
    /// down) lets the request through and says so in the log: limits protect the
    /// service, an outage of the limiter should not take it down.
    pub async fn limit(
        &self,
        scope: &'static str,
        key: &str,
        limit: Option<&Limit>,
    ) -> ApiResult<()> {
        let Some(limit) = limit else {
            return Ok(());
        };
        match self.limiter.check(key, limit).await {
            Ok(d) if d.allowed => Ok(()),
            Ok(d) => {
                self.metrics.rate_limited(scope);
                Err(ApiError::rate_limited(scope, d.retry_after))
            }
            Err(e) => {
                tracing::warn!(error = %e, scope, "rate limiter unavailable; request let through");
                Ok(())
            }
        }
    }
}

/// The key of a client address for limits: IPv4 as is, IPv6 by /64 (one host usually
/// holds a whole /64), IPv4-mapped IPv6 as its IPv4 address.
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or_else(
            || ipnet::Ipv6Net::new(a, 64).map_or_else(|_| a.to_string(), |n| n.trunc().to_string()),
            |v4| v4.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn address_keys() {
        assert_eq!(
            super::address_key("2001:db8::7".parse().unwrap()),
            "2001:db8::/64"
        );
        assert_eq!(
            super::address_key("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1"
        );
        assert_eq!(super::address_key("10.0.0.1".parse().unwrap()), "10.0.0.1");
    }
}
