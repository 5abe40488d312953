//! The server's configuration: a TOML file (`--config`, `WGM_SERVER_CONFIG`), then
//! environment variables, which win. Every field has a default except what only the
//! operator can know (TLS files, or the explicit choice of plain HTTP).
//!
//! ```
//! let c = wgm_server::config::Config::from_toml(
//!     "listen = \"127.0.0.1:8080\"\ninsecure_http = true\n[rate_limit]\nper_address = \"100/60\"\n",
//! )
//! .unwrap();
//! assert_eq!(c.listen.port(), 8080);
//! assert_eq!(c.rate_limit.per_address.map(|r| r.count), Some(100));
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// A configuration error, naming the setting.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn bad(setting: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("invalid {setting}: {reason}"))
}

/// `COUNT/SECONDS`: `count` requests per `period`, in bursts of up to `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests per period.
    pub count: u32,
    /// The period.
    pub period: Duration,
}

impl Rate {
    /// Parse `COUNT/SECONDS` (`600/60`); `0` or `off` switches the limit off (`None`).
    pub fn parse(s: &str, setting: &str) -> Result<Option<Rate>, ConfigError> {
        let s = s.trim();
        if s == "0" || s == "off" {
            return Ok(None);
        }
        let (count, secs) = s
            .split_once('/')
            .ok_or_else(|| bad(setting, "must be COUNT/SECONDS, e.g. 600/60, or off"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| bad(setting, "COUNT must be a whole number"))?;
        let secs: u64 = secs
            .trim()
            .trim_end_matches('s')
            .parse()
            .map_err(|_| bad(setting, "SECONDS must be a whole number"))?;
        if count == 0 || secs == 0 {
            return Ok(None);
        }
        Ok(Some(Rate {
            count,
            period: Duration::from_secs(secs),
        }))
    }
}

/// Rate limits (GCRA; in this process, or shared through Redis with `redis_url`).
#[derive(Clone, Debug)]
pub struct RateLimits {
    /// Per authenticated principal (user), over every authenticated request.
    pub per_principal: Option<Rate>,
    /// Per client address (IPv6 per /64), over every request to `/api` and `/metrics`.
    pub per_address: Option<Rate>,
    /// Per client address, for `login` and `refresh` on top of the above (the library's
    /// login throttle also backs off per account and per source after failures).
    pub login_per_address: Option<Rate>,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            per_principal: Some(Rate {
                count: 600,
                period: Duration::from_secs(60),
            }),
            per_address: Some(Rate {
                count: 1200,
                period: Duration::from_secs(60),
            }),
            login_per_address: Some(Rate {
                count: 30,
                period: Duration::from_secs(60),
            }),
        }
    }
}

/// Log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (the default).
    Json,
    /// Human-readable lines.
    Text,
}

/// The whole configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (default `[::1]:8443`).
    pub listen: SocketAddr,
    /// Store URL (`WGM_STORE`); `None`: the default SQLite file of the CLI.
    pub store: Option<String>,
    /// Master key file (`WGM_MASTER_KEY_FILE`); else `WGM_MASTER_KEY`, else the CLI's
    /// default beside the SQLite file.
    pub master_key_file: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP (no TLS); only when asked for, with a warning.
    pub insecure_http: bool,
    /// The file holding the JWT signing key (base64 of at least 32 random bytes, mode
    /// 0600); every copy of the server needs the same key.
    pub jwt_key_file: Option<PathBuf>,
    /// JWT issuer (`iss`).
    pub jwt_issuer: String,
    /// JWT audience (`aud`).
    pub jwt_audience: String,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// Origins allowed by CORS (exact `scheme://host[:port]`); empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Largest request body, bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// Longest a request may take (default 30 s).
    pub request_timeout: Duration,
    /// Redis for shared rate limits and the list of logged-out JWTs.
    pub redis_url: Option<String>,
    /// Key prefix on that Redis (default `wgm-server`).
    pub redis_namespace: String,
    /// Proxies whose `X-Forwarded-For` is believed (the client address for limits and
    /// logs is the right-most address not in this list).
    pub trusted_proxies: Vec<IpNet>,
    /// Issuer shown in authenticator apps (default `wgm`).
    pub totp_issuer: String,
    /// The rate limits.
    pub rate_limit: RateLimits,
    /// Log format.
    pub log_format: LogFormat,
    /// How long in-flight requests may take to finish after SIGTERM (default 30 s).
    pub shutdown_grace: Duration,
    /// The library's login throttle: the first block after the free failures (default
    /// 1 s; it doubles with each further failure, up to 15 minutes).
    pub login_block: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 8443)),
            store: None,
            master_key_file: None,
            tls_cert: None,
            tls_key: None,
            insecure_http: false,
            jwt_key_file: None,
            jwt_issuer: "wgm".to_owned(),
            jwt_audience: "wgm-api".to_owned(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(7 * 24 * 3600),
            cors_origins: Vec::new(),
            max_body_bytes: 1 << 20,
            request_timeout: Duration::from_secs(30),
            redis_url: None,
            redis_namespace: "wgm-server".to_owned(),
            trusted_proxies: Vec::new(),
            totp_issuer: "wgm".to_owned(),
            rate_limit: RateLimits::default(),
            log_format: LogFormat::Json,
            shutdown_grace: Duration::from_secs(30),
            login_block: Duration::from_secs(1),
        }
    }
}

/// The file's form: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    store: Option<String>,
    master_key_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    insecure_http: Option<bool>,
    jwt_key_file: Option<PathBuf>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    access_ttl_secs: Option<u64>,
    refresh_ttl_secs: Option<u64>,
    cors_origins: Option<Vec<String>>,
    max_body_bytes: Option<usize>,
    request_timeout_secs: Option<u64>,
    redis_url: Option<String>,
    redis_namespace: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    totp_issuer: Option<String>,
    log_format: Option<LogFormat>,
    shutdown_grace_secs: Option<u64>,
    login_block_secs: Option<u64>,
    rate_limit: Option<FileRates>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRates {
    per_principal: Option<String>,
    per_address: Option<String>,
    login_per_address: Option<String>,
}

impl Config {
    /// The configuration from the TOML text of a file (no environment).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let f: FileConfig =
            toml::from_str(text).map_err(|e| ConfigError(format!("configuration file: {e}")))?;
        let mut c = Config::default();
        c.apply_file(f)?;
        c.check()?;
        Ok(c)
    }

    /// The configuration from the file at `path` (when given) and then the process
    /// environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(p) = path {
            let text = std::fs::read_to_string(p)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))?;
            let f: FileConfig =
                toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", p.display())))?;
            c.apply_file(f)?;
        }
        c.apply_env(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))?;
        c.check()?;
        Ok(c)
    }

    fn apply_file(&mut self, f: FileConfig) -> Result<(), ConfigError> {
        if let Some(v) = f.listen {
            self.listen = parse_listen(&v, "listen")?;
        }
        set(&mut self.store, f.store.map(Some));
        set(&mut self.master_key_file, f.master_key_file.map(Some));
        set(&mut self.tls_cert, f.tls_cert.map(Some));
        set(&mut self.tls_key, f.tls_key.map(Some));
        set(&mut self.insecure_http, f.insecure_http);
        set(&mut self.jwt_key_file, f.jwt_key_file.map(Some));
        set(&mut self.jwt_issuer, f.jwt_issuer);
        set(&mut self.jwt_audience, f.jwt_audience);
        set(
            &mut self.access_ttl,
            f.access_ttl_secs.map(Duration::from_secs),
        );
        set(
            &mut self.refresh_ttl,
            f.refresh_ttl_secs.map(Duration::from_secs),
        );
        set(&mut self.cors_origins, f.cors_origins);
        set(&mut self.max_body_bytes, f.max_body_bytes);
        set(
            &mut self.request_timeout,
            f.request_timeout_secs.map(Duration::from_secs),
        );
        set(&mut self.redis_url, f.redis_url.map(Some));
        set(&mut self.redis_namespace, f.redis_namespace);
        if let Some(v) = f.trusted_proxies {
            self.trusted_proxies = parse_proxies(v.iter().map(String::as_str), "trusted_proxies")?;
        }
        set(&mut self.totp_issuer, f.totp_issuer);
        set(&mut self.log_format, f.log_format);
        set(
            &mut self.login_block,
            f.login_block_secs.map(Duration::from_secs),
        );
        set(
            &mut self.shutdown_grace,
            f.shutdown_grace_secs.map(Duration::from_secs),
        );
        if let Some(r) = f.rate_limit {
            if let Some(v) = r.per_principal {
                self.rate_limit.per_principal = Rate::parse(&v, "rate_limit.per_principal")?;
            }
            if let Some(v) = r.per_address {
                self.rate_limit.per_address = Rate::parse(&v, "rate_limit.per_address")?;
            }
            if let Some(v) = r.login_per_address {
                self.rate_limit.login_per_address =
                    Rate::parse(&v, "rate_limit.login_per_address")?;
            }
        }
        Ok(())
    }

    /// Apply the environment (`env` returns a variable's non-empty value).
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("WGM_SERVER_LISTEN") {
            self.listen = parse_listen(&v, "WGM_SERVER_LISTEN")?;
        }
        if let Some(v) = env("WGM_STORE") {
            self.store = Some(v);
        }
        if let Some(v) = env("WGM_MASTER_KEY_FILE") {
            self.master_key_file = Some(v.into());
        }
        if let Some(v) = env("WGM_SERVER_TLS_CERT") {
            self.tls_cert = Some(v.into());
        }
        if let Some(v) = env("WGM_SERVER_TLS_KEY") {
            self.tls_key = Some(v.into());
        }
        if let Some(v) = env("WGM_SERVER_INSECURE_HTTP") {
            self.insecure_http = parse_bool(&v, "WGM_SERVER_INSECURE_HTTP")?;
        }
        if let Some(v) = env("WGM_SERVER_JWT_KEY_FILE") {
            self.jwt_key_file = Some(v.into());
        }
        if let Some(v) = env("WGM_SERVER_CORS_ORIGINS") {
            self.cors_origins = v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(v) = env("WGM_SERVER_MAX_BODY_BYTES") {
            self.max_body_bytes = v
                .parse()
                .map_err(|_| bad("WGM_SERVER_MAX_BODY_BYTES", "must be a number of bytes"))?;
        }
        if let Some(v) = env("WGM_SERVER_REQUEST_TIMEOUT_SECS") {
            self.request_timeout = Duration::from_secs(v.parse().map_err(|_| {
                bad(
                    "WGM_SERVER_REQUEST_TIMEOUT_SECS",
                    "must be a number of seconds",
                )
            })?);
        }
        if let Some(v) = env("WGM_SERVER_REDIS_URL") {
            self.redis_url = Some(v);
        }
        if let Some(v) = env("WGM_SERVER_REDIS_NAMESPACE") {
            self.redis_namespace = v;
        }
        if let Some(v) = env("WGM_SERVER_TRUSTED_PROXIES") {
            self.trusted_proxies = parse_proxies(v.split(','), "WGM_SERVER_TRUSTED_PROXIES")?;
        }
        if let Some(v) = env("WGM_SERVER_RATE_PER_PRINCIPAL") {
            self.rate_limit.per_principal = Rate::parse(&v, "WGM_SERVER_RATE_PER_PRINCIPAL")?;
        }
        if let Some(v) = env("WGM_SERVER_RATE_PER_ADDRESS") {
            self.rate_limit.per_address = Rate::parse(&v, "WGM_SERVER_RATE_PER_ADDRESS")?;
        }
        if let Some(v) = env("WGM_SERVER_RATE_LOGIN_PER_ADDRESS") {
            self.rate_limit.login_per_address =
                Rate::parse(&v, "WGM_SERVER_RATE_LOGIN_PER_ADDRESS")?;
        }
        if let Some(v) = env("WGM_SERVER_LOG_FORMAT") {
            self.log_format = match v.as_str() {
                "json" => LogFormat::Json,
                "text" => LogFormat::Text,
                _ => return Err(bad("WGM_SERVER_LOG_FORMAT", "must be json or text")),
            };
        }
        if let Some(v) = env("WGM_SERVER_LOGIN_BLOCK_SECS") {
            self.login_block =
                Duration::from_secs(v.parse().map_err(|_| {
                    bad("WGM_SERVER_LOGIN_BLOCK_SECS", "must be a number of seconds")
                })?);
        }
        if let Some(v) = env("WGM_SERVER_SHUTDOWN_GRACE_SECS") {
            self.shutdown_grace = Duration::from_secs(v.parse().map_err(|_| {
                bad(
                    "WGM_SERVER_SHUTDOWN_GRACE_SECS",
                    "must be a number of seconds",
                )
            })?);
        }
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigError> {
        if !(1..=900).contains(&self.login_block.as_secs()) {
            return Err(bad(
                "login_block_secs",
                "must be 1 to 900 seconds (the longest block is 15 minutes)",
            ));
        }
        match (&self.tls_cert, &self.tls_key, self.insecure_http) {
            (Some(_), Some(_), false) | (None, None, true) => {}
            (Some(_), Some(_), true) => {
                return Err(bad(
                    "insecure_http",
                    "TLS files are given too; choose TLS or plain HTTP",
                ))
            }
            (None, None, false) => {
                return Err(ConfigError(
                    "no TLS: give tls_cert and tls_key (WGM_SERVER_TLS_CERT, WGM_SERVER_TLS_KEY), \
                     or ask for plain HTTP with insecure_http = true (WGM_SERVER_INSECURE_HTTP=1)"
                        .to_owned(),
                ))
            }
            _ => return Err(bad("tls_cert/tls_key", "give both files")),
        }
        if self.max_body_bytes < 1024 {
            return Err(bad("max_body_bytes", "must be at least 1024"));
        }
        if self.request_timeout.is_zero() {
            return Err(bad("request_timeout_secs", "must be at least 1"));
        }
        for o in &self.cors_origins {
            if !(o.starts_with("https://") || o.starts_with("http://")) || o.ends_with('/') {
                return Err(bad(
                    "cors_origins",
                    format!("{o:?} is not an origin (scheme://host[:port], no path)"),
                ));
            }
        }
        Ok(())
    }
}

fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

fn parse_listen(s: &str, setting: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| bad(setting, "must be ADDRESS:PORT ([::1]:8443, 0.0.0.0:8443)"))
}

fn parse_bool(s: &str, setting: &str) -> Result<bool, ConfigError> {
    match s {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(bad(setting, "must be 1 or 0")),
    }
}

fn parse_proxies<'a>(
    items: impl Iterator<Item = &'a str>,
    setting: &str,
) -> Result<Vec<IpNet>, ConfigError> {
    items
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| bad(setting, format!("{s:?} is not an address or network")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_env() {
        assert_eq!(Rate::parse("off", "x").unwrap(), None);
        assert_eq!(
            Rate::parse("10/2s", "x").unwrap(),
            Some(Rate {
                count: 10,
                period: Duration::from_secs(2)
            })
        );
        assert!(Rate::parse("ten", "x").is_err());
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "WGM_SERVER_INSECURE_HTTP" => Some("1".into()),
            "WGM_SERVER_LISTEN" => Some("127.0.0.1:1".into()),
            "WGM_SERVER_CORS_ORIGINS" => Some("https://a.example, https://b.example".into()),
            _ => None,
        })
        .unwrap();
        c.check().unwrap();
        assert_eq!(c.cors_origins.len(), 2);
        assert!(Config::from_toml("bogus = 1").is_err());
        assert!(Config::from_toml("").is_err(), "neither TLS nor plain HTTP");
    }
}
