//! How a UAPI daemon is started and stopped.
//!
//! The daemon runs in the **foreground as a child this backend owns** (`wireguard-go -f
//! <iface>`), in its own process group (a Ctrl-C meant for the caller does not take the
//! tunnels down) with stdin closed and its output sent to a log file or nowhere (never
//! to a pipe: a daemon writing to a closed pipe would die). Owning the child gives its
//! pid without guessing; the daemon still outlives the backend, as tunnels should.
//!
//! Stopping follows `wg-quick down` for userspace devices: **remove the UAPI socket**.
//! wireguard-go watches its socket and shuts down (closing the TUN device, so the
//! interface disappears) when the file goes. UAPI has no "delete" operation. For a child
//! of ours that is still running after a grace period, SIGTERM and then SIGKILL follow;
//! a daemon this backend did not start is only ever asked through its socket.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::{sleep, timeout, Instant};
use wgm_core::names::InterfaceName;

use crate::error::Error;

/// Poll interval while waiting for a socket to appear or a process to go.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// The command that starts a UAPI daemon for an interface:
/// `prefix… program args… <iface>`, run without a shell, with `env` added.
///
/// ```
/// use wgm_backend_userspace::DaemonCommand;
/// use wgm_core::names::InterfaceName;
///
/// let cmd = DaemonCommand::wireguard_go().in_netns("blue");
/// let argv = cmd.argv(&InterfaceName::new("wg0")?);
/// assert_eq!(argv, ["ip", "netns", "exec", "blue", "wireguard-go", "-f", "wg0"]);
///
/// // Another UAPI daemon behind the same client, e.g. boringtun's CLI:
/// let boringtun = DaemonCommand {
///     program: "boringtun-cli".into(),
///     args: vec!["--foreground".into(), "--disable-drop-privileges".into()],
///     env: vec![],
///     ..DaemonCommand::wireguard_go()
/// };
/// assert_eq!(boringtun.argv(&InterfaceName::new("wg0")?)[0], "boringtun-cli");
/// # Ok::<(), wgm_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonCommand {
    /// Words before the program, e.g. `ip netns exec NS` to run it in a network
    /// namespace. The first word is looked up on `PATH`.
    pub prefix: Vec<OsString>,
    /// The daemon: a name looked up on `PATH` (`wireguard-go`) or a path.
    pub program: OsString,
    /// Arguments before the interface name; they must keep the daemon in the foreground.
    pub args: Vec<OsString>,
    /// Environment variables added to the daemon's environment.
    pub env: Vec<(OsString, OsString)>,
    /// Append the daemon's stdout and stderr to this file; `None` discards them.
    pub log_file: Option<PathBuf>,
}

impl DaemonCommand {
    /// `wireguard-go -f <iface>` from `PATH`, with `WG_PROCESS_FOREGROUND=1`.
    pub fn wireguard_go() -> Self {
        DaemonCommand {
            prefix: Vec::new(),
            program: "wireguard-go".into(),
            args: vec!["-f".into()],
            env: vec![("WG_PROCESS_FOREGROUND".into(), "1".into())],
            log_file: None,
        }
    }

    /// The same command with another program (a path, or a name on `PATH`).
    #[must_use]
    pub fn with_program(mut self, program: impl Into<OsString>) -> Self {
        self.program = program.into();
        self
    }

    /// The same command run inside network namespace `netns` (`ip netns exec <netns>`).
    #[must_use]
    pub fn in_netns(mut self, netns: impl Into<OsString>) -> Self {
        self.prefix = vec!["ip".into(), "netns".into(), "exec".into(), netns.into()];
        self
    }

    /// The same command logging to `path`.
    #[must_use]
    pub fn with_log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// The full argument vector for `iface` (the first element is what is executed).
    /// Interface names never start with `-`, so the name cannot be read as an option.
    pub fn argv(&self, iface: &InterfaceName) -> Vec<OsString> {
        let mut argv = self.prefix.clone();
        argv.push(self.program.clone());
        argv.extend(self.args.iter().cloned());
        argv.push(iface.as_str().into());
        argv
    }

    /// The program's name for messages.
    pub(crate) fn display_program(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// Start the daemon for `iface`.
    pub(crate) fn spawn(&self, iface: &InterfaceName) -> Result<Child, Error> {
        let argv = self.argv(iface);
        let program = self.display_program();
        let Some((first, rest)) = argv.split_first() else {
            // argv always holds at least the program and the interface name.
            return Err(Error::Spawn {
                program,
                source: std::io::Error::other("empty command"),
            });
        };
        let mut cmd = Command::new(first);
        cmd.args(rest)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        match &self.log_file {
            Some(path) => {
                let open = || {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                };
                let out = open().map_err(|source| Error::Spawn {
                    program: program.clone(),
                    source,
                })?;
                let err = open().map_err(|source| Error::Spawn {
                    program: program.clone(),
                    source,
                })?;
                cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        cmd.spawn()
            .map_err(|source| Error::Spawn { program, source })
    }
}

/// Whether process `pid` is gone (no such process, or a zombie waiting to be reaped).
pub(crate) fn process_gone(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // "pid (comm) S ...": the state follows the last ')', as comm may contain anything.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_none_or(|state| state == 'Z' || state == 'X')
}

/// Wait until process `pid` is gone, for at most `limit`. True when it went.
pub(crate) async fn wait_gone(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if process_gone(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL).await;
    }
}

/// Send SIGTERM to `pid`. Errors (the process went meanwhile) are ignored.
pub(crate) fn terminate(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
}

/// Stop a child of ours whose socket was just removed: wait `grace` for it to exit on
/// its own, then SIGTERM and wait `grace` again, then SIGKILL. Always reaps it.
pub(crate) async fn stop_child(child: &mut Child, grace: Duration) {
    if timeout(grace, child.wait()).await.is_ok() {
        return;
    }
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        tracing::debug!(
            pid,
            "daemon still running after its socket was removed: SIGTERM"
        );
        terminate(pid);
        if timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    tracing::debug!("daemon still running after SIGTERM: SIGKILL");
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Kill a child of ours at once and reap it.
pub(crate) async fn kill_child(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Remove a socket file; a missing one is fine.
pub(crate) fn remove_socket(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_prefix_program_args_iface() {
        let iface = InterfaceName::new("wg0").unwrap();
        assert_eq!(
            DaemonCommand::wireguard_go().argv(&iface),
            ["wireguard-go", "-f", "wg0"]
        );
        let custom = DaemonCommand::wireguard_go()
            .with_program("/opt/wg/bin/wireguard-go")
            .in_netns("ns1");
        assert_eq!(
            custom.argv(&iface),
            [
                "ip",
                "netns",
                "exec",
                "ns1",
                "/opt/wg/bin/wireguard-go",
                "-f",
                "wg0"
            ]
        );
    }

    #[test]
    fn own_process_is_not_gone_and_a_free_pid_is() {
        assert!(!process_gone(i32::try_from(std::process::id()).unwrap()));
        // pid_max is at most 2^22 on Linux.
        assert!(process_gone(i32::MAX));
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let cmd = DaemonCommand::wireguard_go().with_program("/nonexistent/wgm-no-such-daemon");
        let e = cmd.spawn(&InterfaceName::new("wg0").unwrap()).unwrap_err();
        assert!(matches!(e, Error::Spawn { .. }), "{e}");
    }
}
