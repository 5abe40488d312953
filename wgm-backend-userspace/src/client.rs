//! A UAPI client over the daemon's unix socket: one connection per operation, timeouts
//! on connect, every write and every read, replies read completely however large.
//!
//! One connection per operation because a daemon that refuses a `set` part-way answers
//! `errno` at once and then reads the rest of the request as new operations (wireguard-go
//! closes the connection on the first line that is not one): reusing that connection
//! would be undefined. Daemons do keep a connection open after a complete reply, so the
//! end of a reply is found by its framing (`errno=N` and a blank line), not by EOF.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::timeout;
use wgm_core::backend::{DeviceDelta, DeviceState};
use wgm_core::names::InterfaceName;
use zeroize::Zeroizing;

use crate::error::{Error, Gone};
use crate::uapi::{self, SecretBuf};

/// Where daemons put their sockets unless told otherwise (wireguard-go, boringtun).
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/wireguard";

/// Bytes per write call (each with its own timeout).
const WRITE_CHUNK: usize = 64 * 1024;

/// Bytes requested per read call.
const READ_CHUNK: usize = 64 * 1024;

/// Timeouts and limits of a [`UapiClient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// The directory holding `<iface>.sock`.
    pub socket_dir: PathBuf,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long one write or read call may wait for progress. A large reply is read in
    /// many calls, each with this timeout, so it bounds stalls, not total size.
    pub io_timeout: Duration,
    /// The largest reply accepted (a 10 000-peer device is a few MB).
    pub max_reply_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            socket_dir: PathBuf::from(DEFAULT_SOCKET_DIR),
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(15),
            max_reply_bytes: 512 * 1024 * 1024,
        }
    }
}

/// A connection-per-operation UAPI client.
///
/// ```no_run
/// use wgm_backend_userspace::client::{ClientConfig, UapiClient};
/// use wgm_core::names::InterfaceName;
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let client = UapiClient::new(ClientConfig::default());
/// let state = client.get(&InterfaceName::new("wg0")?).await?;
/// println!("{} peers", state.peers.len());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct UapiClient {
    config: ClientConfig,
}

impl UapiClient {
    /// A client with these settings.
    pub fn new(config: ClientConfig) -> Self {
        UapiClient { config }
    }

    /// The settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The socket path of `iface`: `<socket_dir>/<iface>.sock`.
    pub fn socket_path(&self, iface: &InterfaceName) -> PathBuf {
        self.config
            .socket_dir
            .join(format!("{}.sock", iface.as_str()))
    }

    /// Connect to the daemon of `iface`. A missing socket or a refused connection (a
    /// socket left behind by a dead daemon) is [`Error::DaemonGone`].
    pub async fn connect(&self, iface: &InterfaceName) -> Result<UnixStream, Error> {
        let path = self.socket_path(iface);
        connect(&path, iface.as_str(), self.config.connect_timeout).await
    }

    /// Read the device: `get=1`, decoded.
    pub async fn get(&self, iface: &InterfaceName) -> Result<DeviceState, Error> {
        let reply = self.exchange(iface, uapi::GET_REQUEST).await?;
        uapi::decode_get(&reply)
    }

    /// Apply a delta: `set=1`. Send only a delta that passed
    /// [`DeviceDelta::validate`]: the daemon applies line by line and stops at the first
    /// line it refuses, keeping what came before.
    pub async fn set(&self, iface: &InterfaceName, delta: &DeviceDelta) -> Result<(), Error> {
        let request = uapi::encode_set(delta);
        let reply = self.exchange(iface, &request).await?;
        uapi::decode_errno(&reply)
    }

    /// Send `request` on a fresh connection and read one complete reply (up to and
    /// including its blank line). The reply may hold key material: it is zeroized when
    /// dropped.
    pub async fn exchange(
        &self,
        iface: &InterfaceName,
        request: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let path = self.socket_path(iface);
        let mut stream = connect(&path, iface.as_str(), self.config.connect_timeout).await?;
        let io_timeout = self.config.io_timeout;

        // Write everything. If the daemon refuses part-way it answers and closes; the
        // write then fails (broken pipe) but the answer is waiting to be read.
        let mut write_error: Option<io::Error> = None;
        for chunk in request.chunks(WRITE_CHUNK) {
            match timeout(io_timeout, stream.write_all(chunk)).await {
                Err(_) => {
                    return Err(Error::Timeout {
                        during: "writing to",
                        path,
                        after: io_timeout,
                    })
                }
                Ok(Err(e)) => {
                    write_error = Some(e);
                    break;
                }
                Ok(Ok(())) => {}
            }
        }

        let mut buf = SecretBuf::with_capacity(READ_CHUNK);
        let mut searched = 0;
        loop {
            let start = buf.len();
            let limit = self.config.max_reply_bytes;
            let n = match timeout(io_timeout, stream.read(buf.spare(READ_CHUNK))).await {
                Err(_) => {
                    buf.commit(start, 0);
                    return Err(Error::Timeout {
                        during: "reading from",
                        path,
                        after: io_timeout,
                    });
                }
                Ok(Err(e)) => {
                    buf.commit(start, 0);
                    // The daemon went away mid-reply (killed, restarted): the reply is cut.
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    ) {
                        return Err(Error::Truncated {
                            received: buf.len(),
                        });
                    }
                    return Err(Error::Io { path, source: e });
                }
                Ok(Ok(n)) => n,
            };
            buf.commit(start, n);
            if n == 0 {
                // EOF before the end of a reply.
                if buf.len() == 0 {
                    if let Some(w) = write_error {
                        return Err(Error::Io { path, source: w });
                    }
                }
                return Err(Error::Truncated {
                    received: buf.len(),
                });
            }
            if let Some(end) = uapi::find_blank_line(buf.as_slice(), searched) {
                let mut reply = buf.into_inner();
                reply.truncate(end);
                return Ok(reply);
            }
            searched = buf.len();
            if buf.len() > limit {
                return Err(Error::ReplyTooLarge { limit });
            }
        }
    }
}

/// Connect to `path` within `after`.
pub(crate) async fn connect(
    path: &Path,
    iface: &str,
    after: Duration,
) -> Result<UnixStream, Error> {
    match timeout(after, UnixStream::connect(path)).await {
        Err(_) => Err(Error::Timeout {
            during: "connecting to",
            path: path.to_owned(),
            after,
        }),
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => {
            let reason = match e.kind() {
                io::ErrorKind::NotFound => Some(Gone::NoSocket),
                io::ErrorKind::ConnectionRefused => Some(Gone::Refused),
                _ => None,
            };
            match reason {
                Some(reason) => Err(Error::DaemonGone {
                    iface: iface.to_owned(),
                    path: path.to_owned(),
                    reason,
                }),
                None => Err(Error::Io {
                    path: path.to_owned(),
                    source: e,
                }),
            }
        }
    }
}
