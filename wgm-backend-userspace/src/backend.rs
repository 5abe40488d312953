//! [`UserspaceBackend`]: a [`WireGuardBackend`] over UAPI with daemon supervision.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Child;
use tokio::time::{sleep, Instant};
use wgm_core::backend::{Capabilities, DeviceDelta, DeviceState, WireGuardBackend};
use wgm_core::names::InterfaceName;

use crate::client::{ClientConfig, UapiClient};
use crate::daemon::{self, DaemonCommand, POLL};
use crate::error::{Error, Gone, BACKEND};

/// Settings of a [`UserspaceBackend`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserspaceConfig {
    /// Socket directory, timeouts and reply limit of the UAPI client.
    pub client: ClientConfig,
    /// How to start a daemon.
    pub daemon: DaemonCommand,
    /// How long a new daemon may take to open its socket.
    pub start_timeout: Duration,
    /// How long a daemon may take to stop after its socket is removed (for a child of
    /// ours, then again after SIGTERM, before SIGKILL).
    pub stop_timeout: Duration,
}

impl Default for UserspaceConfig {
    /// `wireguard-go` from `PATH`, sockets in `/var/run/wireguard`, 10 s to start and
    /// to stop.
    fn default() -> Self {
        UserspaceConfig {
            client: ClientConfig::default(),
            daemon: DaemonCommand::wireguard_go(),
            start_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(10),
        }
    }
}

/// Userspace WireGuard: each device is a UAPI daemon (wireguard-go by default) with its
/// socket at `<socket_dir>/<iface>.sock`.
///
/// - `create_device` connects to the socket; when nothing answers it starts the daemon
///   (see [`DaemonCommand`]) and waits for the socket.
/// - `read_device` is `get=1`; a missing socket or a refused connection (the daemon
///   died, or the interface was deleted and the daemon went with it) reads as `None`.
/// - `apply_device` validates the delta, then sends one `set=1`.
/// - `delete_device` removes the socket (what `wg-quick down` does for userspace
///   devices), waits for the daemon to exit (for a child of ours, SIGTERM and SIGKILL
///   follow if it lingers) and so for the interface to go.
///
/// Every operation opens a fresh connection, so after a daemon restart the next call
/// simply works; bringing the configuration back is the reconciler's full resync.
/// Dropping the backend leaves the daemons running: tunnels outlive the manager.
///
/// Devices in other network namespaces: set [`DaemonCommand::prefix`] (e.g.
/// [`DaemonCommand::in_netns`]). The socket directory is on the shared filesystem, so
/// interface names must be unique across the namespaces served by one directory.
///
/// ```no_run
/// use std::sync::Arc;
/// use wgm_backend_userspace::{UserspaceBackend, UserspaceConfig};
/// use wgm_core::backend::WireGuardBackend;
/// use wgm_core::names::InterfaceName;
/// # async fn f() -> wgm_core::Result<()> {
/// let wg: Arc<dyn WireGuardBackend> = Arc::new(UserspaceBackend::new(UserspaceConfig::default()));
/// let name = InterfaceName::new("wg0")?;
/// wg.create_device(&name).await?; // starts wireguard-go wg0
/// assert!(wg.read_device(&name).await?.is_some());
/// wg.delete_device(&name).await?; // stops it
/// # Ok(()) }
/// ```
pub struct UserspaceBackend {
    client: UapiClient,
    daemon: DaemonCommand,
    start_timeout: Duration,
    stop_timeout: Duration,
    /// Daemons this backend started, by interface.
    children: Mutex<HashMap<InterfaceName, Child>>,
    /// Serialises create and delete, so two calls never start two daemons.
    lifecycle: tokio::sync::Mutex<()>,
}

impl fmt::Debug for UserspaceBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserspaceBackend")
            .field("socket_dir", &self.client.config().socket_dir)
            .field("daemon", &self.daemon)
            .field("children", &self.lock_children().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Default for UserspaceBackend {
    fn default() -> Self {
        Self::new(UserspaceConfig::default())
    }
}

impl UserspaceBackend {
    /// A backend with these settings. Starts nothing yet.
    pub fn new(config: UserspaceConfig) -> Self {
        UserspaceBackend {
            client: UapiClient::new(config.client),
            daemon: config.daemon,
            start_timeout: config.start_timeout,
            stop_timeout: config.stop_timeout,
            children: Mutex::new(HashMap::new()),
            lifecycle: tokio::sync::Mutex::new(()),
        }
    }

    /// The UAPI client (for raw `exchange`s, e.g. in tests and benchmarks).
    pub fn client(&self) -> &UapiClient {
        &self.client
    }

    /// The pid of the daemon of `iface` if this backend started it and it still runs.
    pub fn child_pid(&self, iface: &InterfaceName) -> Option<u32> {
        let mut children = self.lock_children();
        let child = children.get_mut(iface)?;
        match child.try_wait() {
            Ok(None) => child.id(),
            _ => None,
        }
    }

    /// The pid of the process serving the socket of `iface` (from the socket's peer
    /// credentials), whoever started it; `None` when no daemon answers.
    pub async fn daemon_pid(&self, iface: &InterfaceName) -> Result<Option<i32>, wgm_core::Error> {
        match self.client.connect(iface).await {
            Ok(stream) => Ok(stream.peer_cred().ok().and_then(|c| c.pid())),
            Err(Error::DaemonGone { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn lock_children(&self) -> MutexGuard<'_, HashMap<InterfaceName, Child>> {
        // The map stays consistent even if a holder panicked (each operation is one
        // insert or remove).
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take_child(&self, iface: &InterfaceName) -> Option<Child> {
        self.lock_children().remove(iface)
    }

    /// Start the daemon and wait for its socket.
    async fn start(&self, iface: &InterfaceName) -> Result<(), Error> {
        let program = self.daemon.display_program();
        let mut child = self.daemon.spawn(iface)?;
        tracing::debug!(
            iface = iface.as_str(),
            pid = child.id(),
            program,
            "started UAPI daemon"
        );
        let deadline = Instant::now() + self.start_timeout;
        loop {
            match self.client.connect(iface).await {
                Ok(_) => {
                    self.lock_children().insert(iface.clone(), child);
                    return Ok(());
                }
                Err(Error::DaemonGone { .. }) => {}
                Err(e) => {
                    daemon::kill_child(&mut child).await;
                    return Err(e);
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::DaemonExited {
                    program,
                    iface: iface.to_string(),
                    status: status.to_string(),
                });
            }
            if Instant::now() >= deadline {
                daemon::kill_child(&mut child).await;
                return Err(Error::StartTimeout {
                    program,
                    iface: iface.to_string(),
                    after: self.start_timeout,
                });
            }
            sleep(POLL).await;
        }
    }

    async fn stop(&self, iface: &InterfaceName) -> Result<(), Error> {
        let mut child = self.take_child(iface);
        let path = self.client.socket_path(iface);
        match self.client.connect(iface).await {
            Ok(stream) => {
                let pid = stream.peer_cred().ok().and_then(|c| c.pid());
                drop(stream);
                daemon::remove_socket(&path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                tracing::debug!(
                    iface = iface.as_str(),
                    pid,
                    "removed UAPI socket to stop the daemon"
                );
                if let Some(child) = child.as_mut() {
                    daemon::stop_child(child, self.stop_timeout).await;
                }
                // The process serving the socket may not be our child (started by
                // someone else, or by a wrapper that forked): wait for it as well.
                if let Some(pid) = pid {
                    if !daemon::wait_gone(pid, self.stop_timeout).await {
                        return Err(Error::StopTimeout {
                            iface: iface.to_string(),
                            pid,
                            after: self.stop_timeout,
                        });
                    }
                }
                Ok(())
            }
            Err(Error::DaemonGone { reason, .. }) => {
                if reason == Gone::Refused {
                    // A socket left behind by a dead daemon.
                    daemon::remove_socket(&path).map_err(|source| Error::Io {
                        path: path.clone(),
                        source,
                    })?;
                }
                if let Some(child) = child.as_mut() {
                    daemon::kill_child(child).await;
                }
                Ok(())
            }
            Err(e) => {
                if let Some(child) = child {
                    self.lock_children().insert(iface.clone(), child);
                }
                Err(e)
            }
        }
    }

    /// Forget (and reap) a child of ours whose daemon has exited.
    fn reap_exited(&self, iface: &InterfaceName) {
        let mut children = self.lock_children();
        if let Some(child) = children.get_mut(iface) {
            if matches!(child.try_wait(), Ok(Some(_))) {
                children.remove(iface);
            }
        }
    }

    async fn list(&self) -> Result<Vec<InterfaceName>, Error> {
        let dir = &self.client.config().socket_dir;
        let mut entries = match tokio::fs::read_dir(dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Io {
                    path: dir.clone(),
                    source,
                })
            }
        };
        let mut names = Vec::new();
        loop {
            let entry = match entries.next_entry().await {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                Err(source) => {
                    return Err(Error::Io {
                        path: dir.clone(),
                        source,
                    })
                }
            };
            let file = entry.file_name();
            let Some(stem) = file.to_str().and_then(|f| f.strip_suffix(".sock")) else {
                continue;
            };
            let Ok(name) = InterfaceName::new(stem) else {
                continue; // Not a socket of ours to manage.
            };
            match self.client.connect(&name).await {
                Ok(_) => names.push(name),
                Err(Error::DaemonGone { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        names.sort();
        Ok(names)
    }
}

#[async_trait]
impl WireGuardBackend for UserspaceBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    /// fwmark: yes (wireguard-go on Linux sets `SO_MARK`); removing single allowed IPs:
    /// no (UAPI cannot); no size limit on a set (the daemon reads a stream).
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kernel: false,
            fwmark: true,
            remove_allowed_ip: false,
            max_set_bytes: None,
        }
    }

    /// Sockets in the socket directory that a daemon answers on, sorted.
    async fn list_devices(&self) -> wgm_core::Result<Vec<InterfaceName>> {
        Ok(self.list().await?)
    }

    async fn create_device(&self, name: &InterfaceName) -> wgm_core::Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        match self.client.connect(name).await {
            Ok(_) => return Ok(()),
            Err(Error::DaemonGone { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(mut stale) = self.take_child(name) {
            // Ours, but not answering: stuck or dead. Replace it.
            daemon::kill_child(&mut stale).await;
        }
        Ok(self.start(name).await?)
    }

    async fn delete_device(&self, name: &InterfaceName) -> wgm_core::Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        Ok(self.stop(name).await?)
    }

    async fn read_device(&self, name: &InterfaceName) -> wgm_core::Result<Option<DeviceState>> {
        match self.client.get(name).await {
            Ok(state) => Ok(Some(state)),
            Err(Error::DaemonGone { .. }) => {
                self.reap_exited(name);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn apply_device(
        &self,
        name: &InterfaceName,
        delta: &DeviceDelta,
    ) -> wgm_core::Result<()> {
        delta.validate(&self.capabilities())?;
        Ok(self.client.set(name, delta).await?)
    }

    /// The daemon's pid (the socket's peer credentials) with the socket file's device,
    /// inode and change time, hashed: a restarted daemon, or another one started on the
    /// same name, has another pid and has bound a new socket file. One connect and one
    /// `stat`, no UAPI request. `None` when no daemon answers.
    async fn device_instance(&self, name: &InterfaceName) -> wgm_core::Result<Option<u64>> {
        let stream = match self.client.connect(name).await {
            Ok(stream) => stream,
            Err(Error::DaemonGone { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(pid) = stream.peer_cred().ok().and_then(|c| c.pid()) else {
            return Ok(None);
        };
        drop(stream);
        let path = self.client.socket_path(name);
        let meta = match tokio::fs::metadata(&path).await {
            Ok(m) => m,
            // Gone between the connect and the stat: the daemon just went away.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path, source }.into()),
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (pid, meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()).hash(&mut h);
        Ok(Some(h.finish()))
    }
}
