//! `Native`, the object that holds a manager, and `Principal`, who a call acts as.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use wgm_backend_kernel::KernelNetwork;
use wgm_cli::host::Backend;
use wgm_cli::open::{self, KeySource, OpenOptions};
use wgm_core::auth::jwt::{JwtIssuer, JwtKey};
use wgm_core::backend::{NetworkBackend, WireGuardBackend};
use wgm_core::manager::{LocalAdmin, Manager};
use wgm_core::rbac::{Principal, PrincipalKind};
use wgm_core::{Error, Result};
use zeroize::Zeroizing;

use crate::runtime::{awaitable, awaitable_blocking, block};

/// Who a call acts as: obtained only from `Native.local_admin`, `authenticate_token`
/// or `login`, never built from parts (the library's rule for principals).
#[pyclass(module = "wgm._wgm", name = "Principal", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct PyPrincipal(pub Principal);

#[pymethods]
impl PyPrincipal {
    /// The user's name (for the local administrator: the name it was given).
    #[getter]
    fn name(&self) -> String {
        match self.0.kind() {
            PrincipalKind::Local { unix_user } => unix_user.clone(),
            _ => self.0.username().to_string(),
        }
    }

    /// The user's id as text (the local administrator's is the nil UUID).
    #[getter]
    fn user_id(&self) -> String {
        self.0.user_id().to_string()
    }

    /// `local`, `human` (a password login) or `api_token`.
    #[getter]
    fn kind(&self) -> &'static str {
        match self.0.kind() {
            PrincipalKind::Local { .. } => "local",
            PrincipalKind::Human => "human",
            PrincipalKind::ApiToken { .. } => "api_token",
        }
    }

    /// The id of the API token it authenticated with, as text.
    #[getter]
    fn token_id(&self) -> Option<String> {
        match self.0.kind() {
            PrincipalKind::ApiToken { token_id } => Some(token_id.to_string()),
            _ => None,
        }
    }

    /// The names of its roles.
    #[getter]
    fn roles(&self) -> Vec<String> {
        self.0.roles().iter().map(|r| r.name.to_string()).collect()
    }

    /// Whether it holds an administrator's rights.
    #[getter]
    fn is_admin(&self) -> bool {
        self.0.is_admin()
    }

    fn __repr__(&self) -> String {
        format!(
            "Principal(name={:?}, kind={:?}, roles={:?})",
            self.name(),
            self.kind(),
            self.roles()
        )
    }
}

/// What a `Native` holds: the manager, the local-admin capability when asked for, and
/// the backends of applies, kept so that a long-lived process plans from what it
/// verified last and supervises the wireguard-go daemons it started.
pub struct Inner {
    /// The manager.
    pub manager: Manager,
    local: Option<LocalAdmin>,
    location: String,
    wireguard: tokio::sync::Mutex<HashMap<Backend, Arc<dyn WireGuardBackend>>>,
    network: tokio::sync::Mutex<Option<Arc<dyn NetworkBackend>>>,
}

impl Inner {
    /// The WireGuard backend of `kind`, made on first use.
    pub async fn wireguard(&self, kind: Backend) -> Result<Arc<dyn WireGuardBackend>> {
        let mut map = self.wireguard.lock().await;
        if let Some(b) = map.get(&kind) {
            return Ok(b.clone());
        }
        let b = match wgm_cli::host::wireguard(kind).await {
            Err(Error::Unsupported { what }) if kind == Backend::Kernel => {
                return Err(Error::unsupported(format!(
                    "backend=\"kernel\": {what}: use backend=\"userspace\""
                )))
            }
            r => r?,
        };
        map.insert(kind, b.clone());
        Ok(b)
    }

    /// The network backend (addresses, routes, MTU over rtnetlink), made on first use.
    pub async fn network(&self) -> Result<Arc<dyn NetworkBackend>> {
        let mut slot = self.network.lock().await;
        if let Some(n) = &*slot {
            return Ok(n.clone());
        }
        let n: Arc<dyn NetworkBackend> = Arc::new(KernelNetwork::new()?);
        *slot = Some(n.clone());
        Ok(n)
    }
}

/// An open manager.
#[pyclass(module = "wgm._wgm", name = "Native", frozen)]
pub struct Native {
    inner: Arc<Inner>,
}

/// The options of `open`, from Python's arguments.
fn options(
    store_url: Option<String>,
    master_key_file: Option<PathBuf>,
    master_key: Option<String>,
    local_admin: bool,
) -> Result<OpenOptions> {
    let key = match (master_key_file, master_key) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "master_key",
                "give master_key_file or master_key, not both",
            ))
        }
        (Some(p), None) => KeySource::File(p),
        (None, Some(k)) => KeySource::Text(Zeroizing::new(k)),
        (None, None) => KeySource::Default,
    };
    // Password logins get JWTs from a key of this process only: the Principal a login
    // returns is what Python holds, the token never leaves the process.
    let jwt = JwtIssuer::new(JwtKey::generate(), "wgm-py", "wgm-py")?;
    Ok(OpenOptions {
        store: store_url,
        key,
        local_admin,
        jwt: Some(jwt),
    })
}

async fn open_inner(o: Result<OpenOptions>) -> Result<Native> {
    let opened = open::open(o?).await?;
    Ok(Native {
        inner: Arc::new(Inner {
            manager: opened.manager,
            local: opened.local,
            location: opened.location.redacted(),
            wireguard: tokio::sync::Mutex::new(HashMap::new()),
            network: tokio::sync::Mutex::new(None),
        }),
    })
}

async fn token_inner(inner: Arc<Inner>, secret: Zeroizing<String>) -> Result<PyPrincipal> {
    inner
        .manager
        .authenticate_token(&secret)
        .await
        .map(PyPrincipal)
}

async fn login_inner(
    inner: Arc<Inner>,
    user: String,
    password: Zeroizing<String>,
    totp: Option<Zeroizing<String>>,
    source: Option<String>,
) -> Result<PyPrincipal> {
    let source: IpAddr = match source {
        Some(s) => s
            .parse()
            .map_err(|_| Error::invalid("source", "must be an IP address"))?,
        None => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    };
    let out = inner
        .manager
        .login(
            &user,
            &password,
            totp.as_deref().map(String::as_str),
            source,
        )
        .await?;
    let p = inner.manager.authenticate_jwt(&out.access_token).await?;
    Ok(PyPrincipal(p))
}

#[pymethods]
impl Native {
    /// Open the store at `store_url` (the default SQLite file when `None`) with the
    /// master key from `master_key_file`, `master_key` or the defaults.
    #[staticmethod]
    #[pyo3(signature = (store_url=None, master_key_file=None, master_key=None, local_admin=false))]
    fn open(
        py: Python<'_>,
        store_url: Option<String>,
        master_key_file: Option<PathBuf>,
        master_key: Option<String>,
        local_admin: bool,
    ) -> PyResult<Native> {
        let o = options(store_url, master_key_file, master_key, local_admin);
        block(py, move || open_inner(o))
    }

    /// `open`, as an awaitable.
    #[staticmethod]
    #[pyo3(signature = (store_url=None, master_key_file=None, master_key=None, local_admin=false))]
    fn open_async(
        py: Python<'_>,
        store_url: Option<String>,
        master_key_file: Option<PathBuf>,
        master_key: Option<String>,
        local_admin: bool,
    ) -> PyResult<Bound<'_, PyAny>> {
        let o = options(store_url, master_key_file, master_key, local_admin);
        awaitable_blocking(py, move || open_inner(o))
    }

    /// The store's location, without a password.
    #[getter]
    fn store_url(&self) -> String {
        self.inner.location.clone()
    }

    /// The local administrator, audited as `local:<name>` (the library keeps at most
    /// 32 of `[A-Za-z0-9_.-]`); only when opened with `local_admin=True`.
    fn local_admin(&self, name: &str) -> PyResult<PyPrincipal> {
        let check = || -> Result<PyPrincipal> {
            let local =
                self.inner.local.as_ref().ok_or_else(|| {
                    Error::denied("this manager was opened without local_admin=True")
                })?;
            Ok(PyPrincipal(local.principal(name)))
        };
        crate::errors::raise(check())
    }

    /// The owner of an API token.
    fn authenticate_token(&self, py: Python<'_>, secret: &str) -> PyResult<PyPrincipal> {
        let inner = self.inner.clone();
        let secret = Zeroizing::new(secret.to_owned());
        block(py, move || token_inner(inner, secret))
    }

    /// `authenticate_token`, as an awaitable.
    fn authenticate_token_async<'py>(
        &self,
        py: Python<'py>,
        secret: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        let secret = Zeroizing::new(secret.to_owned());
        awaitable(py, token_inner(inner, secret))
    }

    /// A password login (with a TOTP code when enrolled), throttled and audited.
    #[pyo3(signature = (user, password, totp=None, source=None))]
    fn login(
        &self,
        py: Python<'_>,
        user: String,
        password: &str,
        totp: Option<&str>,
        source: Option<String>,
    ) -> PyResult<PyPrincipal> {
        let password = Zeroizing::new(password.to_owned());
        let totp = totp.map(|t| Zeroizing::new(t.to_owned()));
        let inner = self.inner.clone();
        block(py, move || login_inner(inner, user, password, totp, source))
    }

    /// `login`, as an awaitable.
    #[pyo3(signature = (user, password, totp=None, source=None))]
    fn login_async<'py>(
        &self,
        py: Python<'py>,
        user: String,
        password: &str,
        totp: Option<&str>,
        source: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let password = Zeroizing::new(password.to_owned());
        let totp = totp.map(|t| Zeroizing::new(t.to_owned()));
        awaitable(
            py,
            login_inner(self.inner.clone(), user, password, totp, source),
        )
    }

    /// Run operation `op` as `principal` with `args` (a JSON object); the result as
    /// JSON text.
    fn call(
        &self,
        py: Python<'_>,
        principal: &PyPrincipal,
        op: &str,
        args: &str,
    ) -> PyResult<String> {
        let inner = self.inner.clone();
        let p = principal.0.clone();
        let (op, args) = (op.to_owned(), Zeroizing::new(args.to_owned()));
        block(py, move || async move {
            crate::ops::call(&inner, &p, &op, &args).await
        })
    }

    /// `call`, as an awaitable.
    fn call_async<'py>(
        &self,
        py: Python<'py>,
        principal: &PyPrincipal,
        op: &str,
        args: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        let p = principal.0.clone();
        let (op, args) = (op.to_owned(), Zeroizing::new(args.to_owned()));
        awaitable(
            py,
            async move { crate::ops::call(&inner, &p, &op, &args).await },
        )
    }

    fn __repr__(&self) -> String {
        format!("Native(store={:?})", self.inner.location)
    }
}
