//! The agent's configuration: a TOML file, then the environment over it.
//!
//! ```
//! use wgm_cli::agent::config::{AgentConfig, Selection};
//! let cfg = AgentConfig::from_toml(r#"
//!     store = "postgres://wgm@db.example.net/wgm"
//!     master_key_file = "/etc/wgm/master.key"
//!     host = "wg-fra-1"
//!     servers = ["office", "lab"]
//!     backend = "userspace"
//!     reconcile_interval = 30
//! "#).unwrap();
//! assert_eq!(cfg.selection, Selection::Named(vec!["office".into(), "lab".into()]));
//! assert_eq!(cfg.reconcile_interval.as_secs(), 30);
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use wgm_core::names::HostName;
use wgm_core::{Error, Result};

use crate::host::Backend;

/// Which servers an agent runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every server assigned to this host (`wgm server set NAME --host HOST`), as the
    /// assignments change.
    Assigned,
    /// These servers, by name or id, whatever their assignment.
    Named(Vec<String>),
}

/// What an agent runs with. Built by [`AgentConfig::load`] (file, then environment).
/// `Debug` shows the store URL without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Store URL (`None`: the default SQLite file, as for the CLI).
    pub store: Option<String>,
    /// Master key file (`None`: `WGM_MASTER_KEY`, else the key file beside the SQLite
    /// file).
    pub master_key_file: Option<PathBuf>,
    /// This host's name (`None`: the kernel's host name).
    pub host: Option<HostName>,
    /// Which servers to run.
    pub selection: Selection,
    /// Which WireGuard backend applies.
    pub backend: Backend,
    /// How often every server is reconciled in full (drift repair, statistics), besides
    /// the change feed.
    pub reconcile_interval: Duration,
    /// How often leases are renewed and reports refreshed.
    pub heartbeat_interval: Duration,
    /// How long a lease lasts without renewal (at least twice the heartbeat).
    pub lease_ttl: Duration,
    /// Remove peers the store does not know (default: report them only).
    pub remove_unmanaged: bool,
}

/// `url` with the password of its user part (`scheme://user:password@host`) replaced by
/// `***`, for output and logs.
///
/// ```
/// use wgm_cli::agent::config::redact_url;
/// assert_eq!(redact_url("postgres://wgm:s3cret@db/wgm"), "postgres://wgm:***@db/wgm");
/// assert_eq!(redact_url("sqlite:/var/lib/wgm/wgm.db"), "sqlite:/var/lib/wgm/wgm.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    match authority[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &authority[..colon],
            &url[scheme_end + at..]
        ),
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("store", &self.store.as_deref().map(redact_url))
            .field("master_key_file", &self.master_key_file)
            .field("host", &self.host)
            .field("selection", &self.selection)
            .field("backend", &self.backend)
            .field("reconcile_interval", &self.reconcile_interval)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("lease_ttl", &self.lease_ttl)
            .field("remove_unmanaged", &self.remove_unmanaged)
            .finish()
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            store: None,
            master_key_file: None,
            host: None,
            selection: Selection::Assigned,
            backend: Backend::Auto,
            reconcile_interval: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(20),
            remove_unmanaged: false,
        }
    }
}

/// The file's shape. Unknown keys are refused (a typo must not go unnoticed).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    store: Option<String>,
    master_key_file: Option<PathBuf>,
    host: Option<String>,
    servers: Option<Servers>,
    backend: Option<String>,
    reconcile_interval: Option<u64>,
    heartbeat_interval: Option<u64>,
    lease_ttl: Option<u64>,
    remove_unmanaged: Option<bool>,
}

/// `servers = "assigned"` or `servers = ["a", "b"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Servers {
    Word(String),
    List(Vec<String>),
}

/// The environment variables the agent reads, over the file.
pub const ENV_VARS: [&str; 9] = [
    "WGM_STORE",
    "WGM_MASTER_KEY_FILE",
    "WGM_AGENT_HOST",
    "WGM_AGENT_SERVERS",
    "WGM_AGENT_BACKEND",
    "WGM_AGENT_RECONCILE_INTERVAL",
    "WGM_AGENT_HEARTBEAT_INTERVAL",
    "WGM_AGENT_LEASE_TTL",
    "WGM_AGENT_REMOVE_UNMANAGED",
];

fn seconds(v: u64, field: &'static str) -> Result<Duration> {
    if v == 0 || v > 86_400 {
        return Err(Error::invalid(field, "must be 1 to 86400 seconds"));
    }
    Ok(Duration::from_secs(v))
}

fn selection(s: Servers, field: &'static str) -> Result<Selection> {
    match s {
        Servers::Word(w) if w == "assigned" => Ok(Selection::Assigned),
        Servers::Word(_) => Err(Error::invalid(
            field,
            "must be \"assigned\" or a list of server names",
        )),
        Servers::List(v) if v.is_empty() => Err(Error::invalid(
            field,
            "must name at least one server (or be \"assigned\")",
        )),
        Servers::List(v) => {
            for n in &v {
                if n.trim().is_empty() {
                    return Err(Error::invalid(field, "a server name is empty"));
                }
            }
            Ok(Selection::Named(v))
        }
    }
}

impl AgentConfig {
    /// The configuration in TOML text alone (no environment).
    ///
    /// # Errors
    ///
    /// `Parse` for text that is not TOML or has unknown keys; `InvalidInput` naming the
    /// key for a bad value.
    pub fn from_toml(text: &str) -> Result<AgentConfig> {
        let file: Document = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].lines().count().max(1)
            });
            Error::parse(line, "config", e.message().to_owned())
        })?;
        let mut cfg = AgentConfig {
            store: file.store,
            master_key_file: file.master_key_file,
            ..AgentConfig::default()
        };
        if let Some(h) = file.host {
            cfg.host = Some(HostName::new(h)?);
        }
        if let Some(s) = file.servers {
            cfg.selection = selection(s, "servers")?;
        }
        if let Some(b) = file.backend {
            cfg.backend = Backend::parse(&b, "backend")?;
        }
        if let Some(v) = file.reconcile_interval {
            cfg.reconcile_interval = seconds(v, "reconcile_interval")?;
        }
        if let Some(v) = file.heartbeat_interval {
            cfg.heartbeat_interval = seconds(v, "heartbeat_interval")?;
        }
        if let Some(v) = file.lease_ttl {
            cfg.lease_ttl = seconds(v, "lease_ttl")?;
        }
        if let Some(v) = file.remove_unmanaged {
            cfg.remove_unmanaged = v;
        }
        cfg.check()?;
        Ok(cfg)
    }

    /// Apply environment variables ([`ENV_VARS`]) over this configuration; `env` is the
    /// environment (the process's in [`AgentConfig::load`]).
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use wgm_cli::agent::config::{AgentConfig, Selection};
    /// let env = HashMap::from([("WGM_AGENT_SERVERS".to_owned(), "a, b".to_owned())]);
    /// let cfg = AgentConfig::default().with_env(&env).unwrap();
    /// assert_eq!(cfg.selection, Selection::Named(vec!["a".into(), "b".into()]));
    /// ```
    ///
    /// # Errors
    ///
    /// `InvalidInput` naming the variable for a bad value.
    pub fn with_env(mut self, env: &HashMap<String, String>) -> Result<AgentConfig> {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty());
        if let Some(v) = get("WGM_STORE") {
            self.store = Some(v.clone());
        }
        if let Some(v) = get("WGM_MASTER_KEY_FILE") {
            self.master_key_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("WGM_AGENT_HOST") {
            self.host = Some(HostName::new(v.as_str()).map_err(|_| {
                Error::invalid("WGM_AGENT_HOST", "must be a host name (A-Z a-z 0-9 _ - .)")
            })?);
        }
        if let Some(v) = get("WGM_AGENT_SERVERS") {
            let s = if v.trim() == "assigned" {
                Servers::Word("assigned".into())
            } else {
                Servers::List(v.split(',').map(|x| x.trim().to_owned()).collect())
            };
            self.selection = selection(s, "WGM_AGENT_SERVERS")?;
        }
        if let Some(v) = get("WGM_AGENT_BACKEND") {
            self.backend = Backend::parse(v, "WGM_AGENT_BACKEND")?;
        }
        let secs = |k: &'static str| -> Result<Option<Duration>> {
            get(k)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| Error::invalid(k, "must be a number of seconds"))
                        .and_then(|n| seconds(n, k))
                })
                .transpose()
        };
        if let Some(d) = secs("WGM_AGENT_RECONCILE_INTERVAL")? {
            self.reconcile_interval = d;
        }
        if let Some(d) = secs("WGM_AGENT_HEARTBEAT_INTERVAL")? {
            self.heartbeat_interval = d;
        }
        if let Some(d) = secs("WGM_AGENT_LEASE_TTL")? {
            self.lease_ttl = d;
        }
        if let Some(v) = get("WGM_AGENT_REMOVE_UNMANAGED") {
            self.remove_unmanaged = match v.as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" => false,
                _ => {
                    return Err(Error::invalid(
                        "WGM_AGENT_REMOVE_UNMANAGED",
                        "must be true or false",
                    ))
                }
            };
        }
        self.check()?;
        Ok(self)
    }

    /// The file at `path` (if given) under the process's environment.
    ///
    /// # Errors
    ///
    /// The file cannot be read (`InvalidInput` naming `config`), or a value is bad.
    pub fn load(path: Option<&std::path::Path>) -> Result<AgentConfig> {
        let base = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    Error::invalid("config", format!("cannot read {}: {e}", p.display()))
                })?;
                Self::from_toml(&text)?
            }
            None => AgentConfig::default(),
        };
        let env: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| ENV_VARS.contains(&k.as_str()))
            .collect();
        base.with_env(&env)
    }

    fn check(&self) -> Result<()> {
        if self.lease_ttl < self.heartbeat_interval * 2 {
            return Err(Error::invalid(
                "lease_ttl",
                "must be at least twice heartbeat_interval (a lease must outlive one missed renewal)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<AgentConfig>) -> String {
        match r {
            Err(Error::InvalidInput { field, .. }) => field.to_string(),
            Err(Error::Parse { reason, .. }) => format!("parse: {reason}"),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_every_key() {
        let cfg = AgentConfig::from_toml("").unwrap();
        assert_eq!(cfg, AgentConfig::default());
        let cfg = AgentConfig::from_toml(
            "store = \"sqlite:/var/lib/wgm/wgm.db\"\nmaster_key_file = \"/k\"\nhost = \"h1\"\n\
             servers = \"assigned\"\nbackend = \"kernel\"\nreconcile_interval = 60\n\
             heartbeat_interval = 2\nlease_ttl = 10\nremove_unmanaged = true\n",
        )
        .unwrap();
        assert_eq!(cfg.store.as_deref(), Some("sqlite:/var/lib/wgm/wgm.db"));
        assert_eq!(cfg.master_key_file, Some(PathBuf::from("/k")));
        assert_eq!(cfg.host.as_ref().map(HostName::as_str), Some("h1"));
        assert_eq!(cfg.selection, Selection::Assigned);
        assert_eq!(cfg.backend, Backend::Kernel);
        assert_eq!(cfg.reconcile_interval, Duration::from_secs(60));
        assert_eq!(cfg.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(cfg.lease_ttl, Duration::from_secs(10));
        assert!(cfg.remove_unmanaged);
    }

    #[test]
    fn the_configuration_never_shows_a_password() {
        let cfg =
            AgentConfig::from_toml("store = \"postgres://wgm:s3cret@db:5432/wgm?sslmode=require\"")
                .unwrap();
        let shown = format!("{cfg:?} {cfg:#?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("postgres://wgm:***@db:5432/wgm?sslmode=require"),
            "{shown}"
        );
        assert_eq!(redact_url("postgres://wgm@db/wgm"), "postgres://wgm@db/wgm");
        assert_eq!(
            redact_url("postgres://a:b:c@db/x?u=1@2"),
            "postgres://a:***@db/x?u=1@2"
        );
    }

    #[test]
    fn the_sample_configuration_is_valid() {
        let cfg = AgentConfig::from_toml(include_str!("../../agent/wgm-agent.toml")).unwrap();
        assert_eq!(cfg.selection, Selection::Assigned);
        assert_eq!(cfg.host.as_ref().map(HostName::as_str), Some("wg-fra-1"));
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(field(AgentConfig::from_toml("host = \"a b\"")), "host");
        assert_eq!(field(AgentConfig::from_toml("servers = []")), "servers");
        assert_eq!(
            field(AgentConfig::from_toml("servers = \"all\"")),
            "servers"
        );
        assert_eq!(
            field(AgentConfig::from_toml("backend = \"boringtun\"")),
            "backend"
        );
        assert_eq!(
            field(AgentConfig::from_toml("reconcile_interval = 0")),
            "reconcile_interval"
        );
        assert_eq!(
            field(AgentConfig::from_toml(
                "heartbeat_interval = 10\nlease_ttl = 15"
            )),
            "lease_ttl"
        );
        assert!(field(AgentConfig::from_toml("colour = \"blue\"")).starts_with("parse: "));
        assert!(field(AgentConfig::from_toml("host = ")).starts_with("parse: "));
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let file = AgentConfig::from_toml("host = \"h1\"\nservers = [\"a\"]\nbackend = \"kernel\"")
            .unwrap();
        let env = HashMap::from([
            ("WGM_AGENT_HOST".to_owned(), "h2".to_owned()),
            ("WGM_AGENT_SERVERS".to_owned(), "assigned".to_owned()),
            ("WGM_AGENT_BACKEND".to_owned(), "userspace".to_owned()),
            ("WGM_AGENT_RECONCILE_INTERVAL".to_owned(), "7".to_owned()),
            ("WGM_STORE".to_owned(), String::new()), // empty: not set
        ]);
        let cfg = file.with_env(&env).unwrap();
        assert_eq!(cfg.host.as_ref().map(HostName::as_str), Some("h2"));
        assert_eq!(cfg.selection, Selection::Assigned);
        assert_eq!(cfg.backend, Backend::Userspace);
        assert_eq!(cfg.reconcile_interval, Duration::from_secs(7));
        assert_eq!(cfg.store, None);
        let bad = |k: &str, v: &str| {
            field(AgentConfig::default().with_env(&HashMap::from([(k.to_owned(), v.to_owned())])))
        };
        assert_eq!(bad("WGM_AGENT_HOST", "-x"), "WGM_AGENT_HOST");
        assert_eq!(bad("WGM_AGENT_SERVERS", "a,,b"), "WGM_AGENT_SERVERS");
        assert_eq!(bad("WGM_AGENT_LEASE_TTL", "ten"), "WGM_AGENT_LEASE_TTL");
        assert_eq!(
            bad("WGM_AGENT_REMOVE_UNMANAGED", "maybe"),
            "WGM_AGENT_REMOVE_UNMANAGED"
        );
    }
}
