//! Putting it together: the state from the configuration, the middleware stack, and
//! serving over TLS (reloaded on SIGHUP) or plain HTTP, until SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use tower_http::cors::{AllowOrigin, CorsLayer};
use wgm_core::auth::jwt::{JwtIssuer, JwtKey};
use wgm_core::manager::Manager;
use wgm_core::ratelimit::{Limit, LocalLimiter, RateLimiter};
use wgm_core::seal::Sealer;
use zeroize::Zeroizing;

use crate::auth::PrincipalSlot;
use crate::config::{Config, LogFormat, Rate};
use crate::error::{ApiError, LoggedError};
use crate::extract::ClientAddr;
use crate::metrics::{HttpLabels, Metrics};
use crate::state::{address_key, AppState, Inner, Limits};

/// The request id header, returned on every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Anything that stops the server from starting, as one message.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// The environment variable holding the JWT key as base64 (instead of a key file).
pub const ENV_JWT_KEY: &str = "WGM_SERVER_JWT_KEY";

fn limit(r: Option<Rate>) -> Result<Option<Limit>, StartError> {
    Ok(match r {
        Some(r) => Some(Limit::new(r.count, r.period)?),
        None => None,
    })
}

/// The JWT signing key: `WGM_SERVER_JWT_KEY`, else the key file, else a fresh one (with
/// a warning: tokens then die with the process and other copies refuse them).
fn jwt_key(cfg: &Config) -> Result<JwtKey, StartError> {
    let decode = |text: &str, what: &str| -> Result<JwtKey, StartError> {
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| format!("{what}: not base64"))?,
        );
        Ok(JwtKey::from_bytes(&bytes).map_err(|e| format!("{what}: {e}"))?)
    };
    if let Some(v) = std::env::var_os(ENV_JWT_KEY).filter(|v| !v.is_empty()) {
        let v = Zeroizing::new(
            v.into_string()
                .map_err(|_| format!("{ENV_JWT_KEY} is not UTF-8"))?,
        );
        return decode(&v, ENV_JWT_KEY);
    }
    if let Some(path) = &cfg.jwt_key_file {
        return decode(&read_private_file(path)?, &path.display().to_string());
    }
    tracing::warn!(
        "no JWT key configured (jwt_key_file or {ENV_JWT_KEY}): using a fresh one; logins end \
         when this process does and other copies of the server will not accept its tokens"
    );
    Ok(JwtKey::generate())
}

/// A small secret file: a regular file (links followed), not readable by group or others.
fn read_private_file(path: &Path) -> Result<Zeroizing<String>, StartError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let opened = wgm_cli::files::open_regular(path, wgm_cli::files::Symlinks::Follow)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no such file", path.display()))?;
    if opened.meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{}: readable by group or others; chmod 600 it",
            path.display()
        )
        .into());
    }
    let mut text = Zeroizing::new(String::new());
    let mut f = opened.file;
    f.by_ref()
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text)
}

/// Open the store and the master key as the CLI does, build the manager and the limiter.
pub async fn build_state(cfg: &Config) -> Result<AppState, StartError> {
    let key_source = match &cfg.master_key_file {
        Some(p) => wgm_cli::open::KeySource::File(p.clone()),
        None => wgm_cli::open::KeySource::Default,
    };
    let (store, key, location) =
        wgm_cli::open::open_store_with_key(cfg.store.clone(), key_source).await?;
    tracing::info!(store = %location.redacted(), "store opened");
    let jwt = JwtIssuer::new(
        jwt_key(cfg)?,
        cfg.jwt_issuer.clone(),
        cfg.jwt_audience.clone(),
    )?
    .with_ttls(cfg.access_ttl, cfg.refresh_ttl)?;
    let mut throttle = wgm_core::store::LoginThrottle::default();
    for policy in [&mut throttle.account, &mut throttle.source] {
        policy.base_delay_secs = cfg.login_block.as_secs();
    }
    let m = Manager::builder(store.clone(), Sealer::new(key))
        .config(wgm_core::manager::ManagerConfig {
            login_throttle: throttle,
            ..wgm_core::manager::ManagerConfig::default()
        })
        .clock(Arc::new(wgm_cli::clock::TokioClock))
        .jwt(jwt.clone())
        .build();
    let limiter: Arc<dyn RateLimiter> = match &cfg.redis_url {
        Some(url) => {
            let l = wgm_store_redis::RedisLimiter::connect(url, &cfg.redis_namespace).await?;
            tracing::info!("rate limits shared through Redis");
            Arc::new(l)
        }
        None => Arc::new(LocalLimiter::new()),
    };
    let limits = Limits {
        per_principal: limit(cfg.rate_limit.per_principal)?,
        per_address: limit(cfg.rate_limit.per_address)?,
        login_per_address: limit(cfg.rate_limit.login_per_address)?,
    };
    Ok(AppState(Arc::new(Inner::new(
        m,
        store,
        jwt,
        limiter,
        limits,
        Metrics::default(),
        cfg.totp_issuer.clone(),
        cfg.trusted_proxies.clone(),
        cfg.access_ttl,
    ))))
}

/// The router with every middleware, and the OpenAPI document at
/// `/api/v1/openapi.json`.
pub fn app(state: AppState, cfg: &Config) -> Router {
    let (router, api) = crate::routes::router();
    // The document is built from static annotations; serializing it cannot fail.
    let doc: Arc<str> = serde_json::to_string_pretty(&api)
        .unwrap_or_else(|_| "{}".to_owned())
        .into();
    let timeout = cfg.request_timeout;
    let mut app = router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        )],
                        doc.to_string(),
                    )
                }
            }),
        )
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").kind("route")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), timeout),
            context,
        ))
        .with_state(state);
    if !cfg.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = cfg
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        app = app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                ])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::IF_MATCH,
                    REQUEST_ID,
                ])
                .expose_headers([header::ETAG, header::RETRY_AFTER, REQUEST_ID])
                .max_age(Duration::from_secs(600)),
        );
    }
    app
}

/// A client-sent request id is kept when it is short and plain; else one is made.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// The client's address: the connection's peer, or behind a trusted proxy the
/// right-most `X-Forwarded-For` entry that is not a trusted proxy.
fn client_addr(s: &AppState, req: &Request) -> IpAddr {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0u8, 0, 0, 0]), |c| c.0.ip());
    let trusted = |ip: &IpAddr| s.trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return peer;
    }
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|x| x.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted(ip))
        .unwrap_or(peer)
}

/// Request id, client address, per-address limit, timeout, metrics and the request
/// log: one line per request with method, route template, status, latency, principal
/// and request id, never a credential, body or query string.
async fn context(
    State((s, timeout)): State<(AppState, Duration)>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let addr = client_addr(&s, &req);
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let slot = PrincipalSlot::default();
    req.extensions_mut().insert(ClientAddr(addr));
    req.extensions_mut().insert(slot.clone());
    let limited = route.starts_with("/api/") || route == "/metrics";
    let mut res = if limited {
        match s
            .limit(
                "address",
                &format!("addr:{}", address_key(addr)),
                s.limits.per_address.as_ref(),
            )
            .await
        {
            Ok(()) => run(next, req, timeout).await,
            Err(e) => e.into_response(),
        }
    } else {
        run(next, req, timeout).await
    };
    let latency = started.elapsed();
    let status = res.status();
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    s.metrics.http(
        &HttpLabels {
            method: method.to_string(),
            route: route.clone(),
            status: status.as_u16(),
        },
        latency,
    );
    let principal = slot.get();
    let err = res.extensions().get::<LoggedError>();
    let latency_ms = latency.as_secs_f64() * 1000.0;
    if status.is_server_error() {
        tracing::error!(
            target: "wgm_server::access",
            request_id = %id, method = %method, route = %route, status = status.as_u16(),
            latency_ms, principal = principal.as_deref().unwrap_or("-"), client = %addr,
            error = err.map_or("-", |e| e.code.as_str()),
            reason = err.map_or("-", |e| e.reason.as_str()),
            "request failed"
        );
    } else {
        tracing::info!(
            target: "wgm_server::access",
            request_id = %id, method = %method, route = %route, status = status.as_u16(),
            latency_ms, principal = principal.as_deref().unwrap_or("-"), client = %addr,
            error = err.map_or("-", |e| e.code.as_str()),
            "request"
        );
    }
    res
}

async fn run(next: Next, req: Request, timeout: Duration) -> Response {
    if let Ok(r) = tokio::time::timeout(timeout, next.run(req)).await {
        r
    } else {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {} s and was cancelled; a write may or may not have been committed",
                timeout.as_secs()
            ),
        );
        e.retry_after = Some(1);
        e.into_response()
    }
}

/// Log to stderr: JSON lines or text, filtered by `WGM_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WGM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().flatten_event(true).init(),
        LogFormat::Text => b.with_ansi(false).init(),
    }
}

/// Serve until SIGTERM or SIGINT; in-flight requests get `shutdown_grace` to finish.
/// Prints `listening on ADDR` on stdout once the socket is bound.
pub async fn serve(cfg: Config) -> Result<(), StartError> {
    // One process-wide provider: ring (rustls is built without aws-lc-rs, whose
    // post-quantum key exchange is what the deprecation note is about).
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let _ = provider.install_default();
    let state = build_state(&cfg).await?;
    let app = app(state, &cfg).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) if !cfg.insecure_http => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(c, k)
                .await
                .map_err(|e| {
                    format!(
                        "TLS certificate {} or key {}: {e}",
                        c.display(),
                        k.display()
                    )
                })?,
        ),
        _ => None,
    };
    spawn_signals(handle.clone(), &cfg, tls.clone())?;
    let announce = {
        let handle = handle.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        tokio::spawn(async move {
            if let Some(addr) = handle.listening().await {
                tracing::info!(%addr, scheme, "listening");
                println!("listening on {scheme}://{addr}");
            }
        })
    };
    let served = if let Some(t) = tls {
        axum_server::bind_rustls(cfg.listen, t)
            .handle(handle)
            .serve(app)
            .await
    } else {
        tracing::warn!(
            "serving plain HTTP (insecure_http): passwords and tokens cross the network \
             in clear text; use TLS, or a TLS-terminating proxy on a trusted network"
        );
        axum_server::bind(cfg.listen)
            .handle(handle)
            .serve(app)
            .await
    };
    announce.abort();
    served.map_err(|e| format!("cannot serve on {}: {e}", cfg.listen))?;
    tracing::info!("stopped");
    Ok(())
}

fn spawn_signals(
    handle: axum_server::Handle,
    cfg: &Config,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
) -> Result<(), StartError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let grace = cfg.shutdown_grace;
    let files = cfg.tls_cert.clone().zip(cfg.tls_key.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    if let (Some(t), Some((c, k))) = (&tls, &files) {
                        match t.reload_from_pem_file(c, k).await {
                            Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                            Err(e) => tracing::error!(error = %e, "SIGHUP: TLS reload failed; the old certificate stays"),
                        }
                    } else {
                        tracing::info!("SIGHUP: nothing to reload (no TLS)");
                    }
                }
            }
        }
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: in-flight requests may finish"
        );
        handle.graceful_shutdown(Some(grace));
    });
    Ok(())
}
