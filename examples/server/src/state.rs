//! What every handler shares: the manager, the JWT issuer, the limiter, the list of
//! logged-out tokens, the metrics.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use wgm_core::auth::jwt::JwtIssuer;
use wgm_core::manager::Manager;
use wgm_core::ratelimit::{Limit, RateLimiter};
use wgm_core::store::Store;

use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

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
}

impl Inner {
    /// Put the parts together.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        m: Manager,
        store: Arc<dyn Store>,
        jwt: JwtIssuer,
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
            limiter,
            limits,
            metrics,
            totp_issuer,
            trusted_proxies,
            access_ttl,
        }
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
