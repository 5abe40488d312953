//! [`KernelWireGuard`]: a [`WireGuardBackend`] on the Linux kernel's WireGuard, over
//! generic netlink (the device) and rtnetlink (creating, finding and deleting its link).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use netlink_packet_wireguard::{WireguardAttribute, WireguardCmd, WireguardMessage};
use nix::errno::Errno;
use rtnetlink::packet_route::link::{InfoKind, LinkMessage};
use rtnetlink::packet_route::RouteNetlinkMessage;
use wgm_core::backend::{Capabilities, DeviceDelta, DeviceState, WireGuardBackend};
use wgm_core::names::InterfaceName;

use crate::codec;
use crate::error::NetlinkError;
use crate::genl::{self, Genl, WgMessage};
use crate::socket::Netlink;
use crate::wire::{self, DEFAULT_MESSAGE_BYTES};

/// The backend's name in logs and errors.
const BACKEND: &str = "kernel";

/// Kernel WireGuard, spoken to over netlink: no `wg` process, no shell.
///
/// - `create_device` is `ip link add NAME type wireguard`; `delete_device` is
///   `ip link del NAME`, by index; both are idempotent, and both refuse (with
///   [`wgm_core::Error::Conflict`]) a link of that name that is not a WireGuard device,
///   which they never touch.
/// - `read_device` is one `WG_CMD_GET_DEVICE` dump, every part read to `NLMSG_DONE`,
///   read again when the kernel flags it as interrupted by a concurrent change, and
///   merged (a peer whose allowed IPs span parts becomes one peer).
/// - `apply_device` validates the delta, then sends it as `WG_CMD_SET_DEVICE` messages
///   of at most [`KernelWireGuard::max_message_bytes`] each (see [`crate::wire`]), each
///   acknowledged before the next is sent. Only what the delta names changes:
///   `WGDEVICE_F_REPLACE_PEERS` only for the delta's explicit full resync,
///   `WGPEER_F_REPLACE_ALLOWEDIPS` only for a peer whose delta asks for it.
/// - `device_instance` is the link's interface index, which the kernel gives anew to a
///   recreated link; so the reconciler can trust what it knows of a device until
///   someone runs `ip link del`.
/// - The kernels this backend supports cannot remove a single allowed IP
///   ([`Capabilities::remove_allowed_ip`] is false); the planner replaces the list of a
///   peer that loses one.
///
/// Sockets open on first use, on the Tokio runtime of the caller, and again after a
/// socket broke. The `wireguard` family's id is resolved once per socket. When the kernel
/// has no WireGuard (the module is neither built in nor loadable), every operation but
/// [`WireGuardBackend::list_devices`] fails with [`wgm_core::Error::Unsupported`] naming
/// the module; [`KernelWireGuard::probe`] asks that question up front.
///
/// ```no_run
/// use std::sync::Arc;
/// use wgm_backend_kernel::KernelWireGuard;
/// use wgm_core::backend::WireGuardBackend;
/// use wgm_core::names::InterfaceName;
/// # async fn f() -> wgm_core::Result<()> {
/// let wg = KernelWireGuard::new();
/// wg.probe().await?; // the kernel has WireGuard
/// let wg: Arc<dyn WireGuardBackend> = Arc::new(wg);
/// let name = InterfaceName::new("wg0")?;
/// wg.create_device(&name).await?; // ip link add wg0 type wireguard
/// assert!(wg.read_device(&name).await?.is_some());
/// wg.delete_device(&name).await?;
/// # Ok(()) }
/// ```
pub struct KernelWireGuard {
    netns: Option<PathBuf>,
    max_message_bytes: usize,
    genl: Mutex<Option<Arc<GenlSocket>>>,
    rtnl: Mutex<Option<Arc<Netlink>>>,
}

/// A generic netlink socket and the `wireguard` family's id on it.
struct GenlSocket {
    netlink: Netlink<Genl>,
    family: u16,
}

impl fmt::Debug for KernelWireGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelWireGuard")
            .field("netns", &self.netns)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for KernelWireGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelWireGuard {
    /// Kernel WireGuard in the network namespace of the thread that first uses it. No
    /// I/O happens here.
    pub fn new() -> Self {
        KernelWireGuard {
            netns: None,
            max_message_bytes: DEFAULT_MESSAGE_BYTES,
            genl: Mutex::new(None),
            rtnl: Mutex::new(None),
        }
    }

    /// Kernel WireGuard inside the network namespace whose file is `path` (for example
    /// `/run/netns/NAME`, as `ip netns add NAME` creates it), as `ip -n NAME` does.
    /// Opening a socket there needs `CAP_SYS_ADMIN`; no thread of the caller changes
    /// namespace.
    ///
    /// ```no_run
    /// # use wgm_backend_kernel::KernelWireGuard;
    /// let wg = KernelWireGuard::in_netns("/run/netns/test");
    /// ```
    pub fn in_netns(path: impl AsRef<Path>) -> Self {
        KernelWireGuard {
            netns: Some(path.as_ref().to_owned()),
            ..Self::new()
        }
    }

    /// Sets the largest set message, netlink headers included: between
    /// [`wire::MIN_MESSAGE_BYTES`] and [`wire::MAX_MESSAGE_BYTES`]; the default is
    /// [`wire::DEFAULT_MESSAGE_BYTES`].
    ///
    /// # Errors
    /// [`wgm_core::Error::InvalidInput`] (field `max_message_bytes`) outside that range.
    ///
    /// ```
    /// # use wgm_backend_kernel::KernelWireGuard;
    /// let wg = KernelWireGuard::new().with_max_message_bytes(4096)?;
    /// assert_eq!(wg.max_message_bytes(), 4096);
    /// assert!(KernelWireGuard::new().with_max_message_bytes(100).is_err());
    /// # Ok::<(), wgm_core::Error>(())
    /// ```
    pub fn with_max_message_bytes(mut self, bytes: usize) -> wgm_core::Result<Self> {
        if !(wire::MIN_MESSAGE_BYTES..=wire::MAX_MESSAGE_BYTES).contains(&bytes) {
            return Err(wgm_core::Error::invalid(
                "max_message_bytes",
                format!(
                    "{bytes} is outside {}..={} bytes",
                    wire::MIN_MESSAGE_BYTES,
                    wire::MAX_MESSAGE_BYTES
                ),
            ));
        }
        self.max_message_bytes = bytes;
        Ok(self)
    }

    /// The largest set message this backend sends.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Whether the kernel has WireGuard: `Ok` when the `wireguard` generic netlink family
    /// resolves (the kernel loads the module on that request when it can).
    ///
    /// # Errors
    /// [`wgm_core::Error::Unsupported`] naming the module when there is none;
    /// [`wgm_core::Error::PermissionDenied`] or a backend error when the question could
    /// not be asked.
    pub async fn probe(&self) -> wgm_core::Result<()> {
        self.genl().await.map(drop).map_err(Into::into)
    }

    /// The generic netlink socket, opened (and the family resolved) when there is none
    /// or the last one broke.
    async fn genl(&self) -> Result<Arc<GenlSocket>, NetlinkError> {
        {
            let guard = self.genl.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(socket) = guard.as_ref().filter(|s| s.netlink.is_open()) {
                return Ok(Arc::clone(socket));
            }
        }
        let netlink = Netlink::open_with(self.netns.as_deref(), genl::connect)?;
        let family = match genl::resolve_family(&netlink).await {
            Err(e) if e.errno() == Some(Errno::ENOENT) => return Err(NetlinkError::NoWireGuard),
            other => other?,
        };
        let socket = Arc::new(GenlSocket { netlink, family });
        *self.genl.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&socket));
        Ok(socket)
    }

    /// The rtnetlink socket, opened when there is none or the last one broke.
    fn rtnl(&self) -> Result<Arc<Netlink>, NetlinkError> {
        let mut guard = self.rtnl.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(socket) = guard.as_ref().filter(|s| s.is_open()) {
            return Ok(Arc::clone(socket));
        }
        let socket = Arc::new(match &self.netns {
            Some(path) => Netlink::open_in(path)?,
            None => Netlink::open()?,
        });
        *guard = Some(Arc::clone(&socket));
        Ok(socket)
    }

    /// The link named `name`, `None` when there is none.
    async fn link(&self, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
        let op = format!("read link {name}");
        match self.rtnl()?.get(codec::get_link(name), &op, name).await {
            Ok(RouteNetlinkMessage::NewLink(msg)) => Ok(Some(msg)),
            Ok(other) => Err(NetlinkError::Unexpected {
                op,
                what: format!("message type {}", other.message_type()),
            }),
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The index of the WireGuard link `name`; `None` when there is no link of that
    /// name, a conflict when there is one of another kind.
    async fn wireguard_link(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let Some(msg) = self.link(name).await? else {
            return Ok(None);
        };
        match codec::link_kind(&msg) {
            Some(InfoKind::Wireguard) => Ok(Some(msg.header.index)),
            other => Err(not_wireguard(name, other)),
        }
    }

    async fn read(&self, name: &str) -> Result<Option<DeviceState>, NetlinkError> {
        let socket = self.genl().await?;
        let op = format!("read WireGuard device {name}");
        let request = Genl::Wg(WgMessage::new(
            WireguardMessage {
                cmd: WireguardCmd::GetDevice,
                attributes: vec![WireguardAttribute::IfName(name.to_owned())],
            },
            socket.family,
        ));
        let parts = match socket.netlink.dump(request, &op, name).await {
            Ok(parts) => parts,
            Err(e) if e.errno() == Some(Errno::ENODEV) => return Ok(None),
            Err(e) => return Err(self.explain(e, name).await),
        };
        let mut messages = Vec::with_capacity(parts.len());
        for part in parts {
            match part {
                Genl::Wg(m) => messages.push(m),
                Genl::Ctrl(_) => {
                    return Err(NetlinkError::BadReply {
                        op,
                        reason: "a controller message inside a device dump".into(),
                    })
                }
            }
        }
        wire::merge_dump(messages.iter().map(WgMessage::attributes), &op).map(Some)
    }

    async fn apply(&self, name: &str, delta: &DeviceDelta) -> Result<(), NetlinkError> {
        let socket = self.genl().await?;
        let messages: Vec<WgMessage> = wire::split_set(name, delta, self.max_message_bytes)?
            .into_iter()
            .map(|m| WgMessage::new(m, socket.family))
            .collect();
        let count = messages.len();
        for (i, message) in messages.into_iter().enumerate() {
            let op = if count == 1 {
                format!("set WireGuard device {name}")
            } else {
                format!("set WireGuard device {name} (message {} of {count})", i + 1)
            };
            if let Err(e) = socket.netlink.change(Genl::Wg(message), 0, &op, name).await {
                return Err(self.explain(e, name).await);
            }
        }
        Ok(())
    }

    /// The kernel answers `EOPNOTSUPP` to a WireGuard request on a link of another kind:
    /// that becomes a conflict naming the link's kind. Other errors stay as they are.
    async fn explain(&self, e: NetlinkError, name: &str) -> NetlinkError {
        if e.errno() != Some(Errno::EOPNOTSUPP) {
            return e;
        }
        match self.link(name).await {
            Ok(link) => not_wireguard(name, link.as_ref().and_then(codec::link_kind)),
            Err(other) => other,
        }
    }

    /// `ip link add NAME type wireguard`.
    async fn add_link(&self, name: &str, op: &str) -> Result<(), NetlinkError> {
        self.rtnl()?
            .change(
                codec::new_wireguard_link(name),
                rtnetlink::packet_core::NLM_F_CREATE | rtnetlink::packet_core::NLM_F_EXCL,
                op,
                name,
            )
            .await
    }
}

fn not_wireguard(name: &str, kind: Option<&InfoKind>) -> NetlinkError {
    let kind = kind.map_or_else(
        || "a link without a kind".to_owned(),
        |k| format!("{k:?}").to_lowercase(),
    );
    NetlinkError::Conflict(format!(
        "link {name} exists and is not a WireGuard device (kind {kind}); wgm does not touch it"
    ))
}

/// Maps an error of a device operation: `ENODEV` means the device, not a link, is
/// missing; everything else as [`NetlinkError`]'s own mapping says.
fn device_error(e: NetlinkError, name: &str) -> wgm_core::Error {
    match e.errno() {
        Some(Errno::ENODEV) => wgm_core::Error::not_found("device", name),
        _ => e.into(),
    }
}

#[async_trait]
impl WireGuardBackend for KernelWireGuard {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kernel: true,
            fwmark: true,
            remove_allowed_ip: false,
            max_set_bytes: Some(self.max_message_bytes),
        }
    }

    async fn list_devices(&self) -> wgm_core::Result<Vec<InterfaceName>> {
        let links = self
            .rtnl()?
            .dump(codec::dump_links(), "list links", "")
            .await?;
        let mut names = Vec::new();
        for link in &links {
            let RouteNetlinkMessage::NewLink(msg) = link else {
                continue;
            };
            if codec::link_kind(msg) != Some(&InfoKind::Wireguard) {
                continue;
            }
            let Some(name) = codec::link_name(msg) else {
                continue;
            };
            match InterfaceName::new(name) {
                Ok(n) => names.push(n),
                Err(e) => {
                    tracing::debug!(link = name, error = %e, "WireGuard link with a name wgm does not manage");
                }
            }
        }
        names.sort();
        Ok(names)
    }

    async fn create_device(&self, name: &InterfaceName) -> wgm_core::Result<()> {
        let name = name.as_str();
        let op = format!("create WireGuard device {name}");
        match self.add_link(name, &op).await {
            Ok(()) => Ok(()),
            // Something holds the name: fine if it is a WireGuard device.
            Err(e) if e.errno() == Some(Errno::EEXIST) => match self.wireguard_link(name).await? {
                Some(_) => Ok(()),
                // Deleted again in between: try once more.
                None => Ok(self.add_link(name, &op).await?),
            },
            // The kernel could not find the link kind: no module.
            Err(e) if e.errno() == Some(Errno::EOPNOTSUPP) => Err(NetlinkError::NoWireGuard.into()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_device(&self, name: &InterfaceName) -> wgm_core::Result<()> {
        let name = name.as_str();
        let Some(index) = self.wireguard_link(name).await? else {
            return Ok(());
        };
        let op = format!("delete WireGuard device {name}");
        match self
            .rtnl()?
            .change(codec::del_link(index), 0, &op, name)
            .await
        {
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(()),
            other => Ok(other?),
        }
    }

    async fn read_device(&self, name: &InterfaceName) -> wgm_core::Result<Option<DeviceState>> {
        self.read(name.as_str())
            .await
            .map_err(|e| device_error(e, name.as_str()))
    }

    async fn apply_device(
        &self,
        name: &InterfaceName,
        delta: &DeviceDelta,
    ) -> wgm_core::Result<()> {
        delta.validate(&self.capabilities())?;
        self.apply(name.as_str(), delta)
            .await
            .map_err(|e| device_error(e, name.as_str()))
    }

    async fn device_instance(&self, name: &InterfaceName) -> wgm_core::Result<Option<u64>> {
        Ok(self.wireguard_link(name.as_str()).await?.map(u64::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enodev_of_a_device_operation_is_device_not_found() {
        let e = device_error(
            NetlinkError::Kernel {
                op: "set WireGuard device wg3".into(),
                link: "wg3".into(),
                errno: Errno::ENODEV,
            },
            "wg3",
        );
        assert!(
            matches!(&e, wgm_core::Error::NotFound { kind: "device", id } if id == "wg3"),
            "{e}"
        );
        let e = device_error(
            NetlinkError::Kernel {
                op: "set WireGuard device wg3".into(),
                link: "wg3".into(),
                errno: Errno::EPERM,
            },
            "wg3",
        );
        assert!(matches!(e, wgm_core::Error::PermissionDenied { .. }), "{e}");
    }

    #[test]
    fn a_link_of_another_kind_is_named_with_its_kind() {
        let e: wgm_core::Error = not_wireguard("eth0", Some(&InfoKind::Veth)).into();
        assert!(matches!(e, wgm_core::Error::Conflict { .. }), "{e}");
        assert!(
            e.to_string().contains("eth0") && e.to_string().contains("veth"),
            "{e}"
        );
        let e: wgm_core::Error = not_wireguard("lo", None).into();
        assert!(e.to_string().contains("without a kind"), "{e}");
    }

    #[test]
    fn message_budget_is_checked() {
        for bad in [0, wire::MIN_MESSAGE_BYTES - 1, wire::MAX_MESSAGE_BYTES + 1] {
            let e = KernelWireGuard::new()
                .with_max_message_bytes(bad)
                .unwrap_err();
            assert!(e.to_string().contains("max_message_bytes"), "{e}");
        }
        for good in [wire::MIN_MESSAGE_BYTES, wire::MAX_MESSAGE_BYTES] {
            let wg = KernelWireGuard::new()
                .with_max_message_bytes(good)
                .expect("in range");
            assert_eq!(wg.capabilities().max_set_bytes, Some(good));
        }
        let debug = format!("{:?}", KernelWireGuard::in_netns("/run/netns/x"));
        assert!(debug.contains("/run/netns/x"), "{debug}");
    }
}
