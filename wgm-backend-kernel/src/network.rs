//! [`KernelNetwork`]: links, addresses and routes of a managed interface over rtnetlink.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use async_trait::async_trait;
use ipnet::IpNet;
use nix::errno::Errno;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use rtnetlink::packet_route::RouteNetlinkMessage;

use crate::codec::{self, Family};
use crate::error::NetlinkError;
use crate::plan::{self, Changes, Live, Op};
use crate::socket::Netlink;
use wgm_core::backend::{LinkDelta, LinkState, NetworkBackend};
use wgm_core::names::InterfaceName;

/// The `proto` number this backend puts on its routes (and in `IFA_PROTO` of its
/// addresses) unless configured otherwise: 87, unassigned in iproute2's
/// `rt_protos` and by the kernel. `ip route show proto 87` lists wgm's routes; add
/// `87 wgm` to `/etc/iproute2/rt_protos.d/wgm.conf` to see the name instead.
pub const DEFAULT_ROUTE_PROTOCOL: u8 = 87;

/// Route protocol numbers up to this one (`RTPROT_STATIC`) mean something to the
/// kernel or are what `ip route add` uses by default, so they cannot tell our routes
/// from anybody else's.
const HIGHEST_RESERVED_PROTOCOL: u8 = 4;

/// The network part of a Linux host over rtnetlink: administrative state, MTU, IPv4
/// and IPv6 addresses and delegated-prefix routes of a managed interface.
///
/// Cheap to share (`Arc<KernelNetwork>`); requests from several tasks are multiplexed
/// over the one socket. It must be created inside a Tokio runtime and used in that
/// runtime: the netlink connection runs as a task on it, and stops when the value is
/// dropped.
///
/// IPv6 addresses are added with `IFA_F_NODAD`. Without it an address stays
/// *tentative* while duplicate address detection runs (a second or more), and a
/// tentative address can be neither a source nor bound to, so the first packets over a
/// freshly applied interface would be lost. DAD exists to catch two hosts choosing the
/// same address on a shared segment; wgm's addresses are allocated uniquely by its
/// IPAM and a `WireGuard` link has no neighbour discovery to detect a duplicate with, so
/// the check could only delay, never help.
///
/// ```no_run
/// # async fn demo() -> wgm_core::Result<()> {
/// use wgm_backend_kernel::KernelNetwork;
/// // In the caller's network namespace (needs CAP_NET_ADMIN to change anything):
/// let net = KernelNetwork::new()?;
/// // Or inside the namespace created by `ip netns add blue`:
/// let blue = KernelNetwork::in_netns("/run/netns/blue")?.with_route_protocol(200)?;
/// assert_eq!(blue.route_protocol(), 200);
/// # let _ = net; Ok(()) }
/// ```
pub struct KernelNetwork {
    netlink: Netlink,
    protocol: u8,
    netns: Option<String>,
}

impl fmt::Debug for KernelNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelNetwork")
            .field("route_protocol", &self.protocol)
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}

impl KernelNetwork {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    ///
    /// Fails with `Backend` when called outside a Tokio runtime or when the socket
    /// cannot be created. Reading needs no privilege; applying needs `CAP_NET_ADMIN`.
    pub fn new() -> wgm_core::Result<Self> {
        Ok(Self {
            netlink: Netlink::open()?,
            protocol: DEFAULT_ROUTE_PROTOCOL,
            netns: None,
        })
    }

    /// Opens an rtnetlink socket inside the network namespace whose file is `path`
    /// (`/run/netns/NAME` for a namespace made with `ip netns add NAME`, or
    /// `/proc/PID/ns/net`). Every later request operates in that namespace, from any
    /// thread; no thread of the caller changes namespace (a short-lived helper thread
    /// enters it to create the socket).
    ///
    /// Fails with `NotFound { kind: "network namespace" }` when the file does not
    /// exist, `PermissionDenied` without `CAP_SYS_ADMIN`, `Backend` otherwise.
    pub fn in_netns(path: impl AsRef<Path>) -> wgm_core::Result<Self> {
        let path = path.as_ref();
        Ok(Self {
            netlink: Netlink::open_in(path)?,
            protocol: DEFAULT_ROUTE_PROTOCOL,
            netns: Some(path.display().to_string()),
        })
    }

    /// Uses `protocol` as the route `proto` number instead of
    /// [`DEFAULT_ROUTE_PROTOCOL`]. Routes of any other protocol are invisible to, and
    /// never touched by, this backend. Values 0–4 (`unspec`, `redirect`, `kernel`,
    /// `boot`, `static`) are refused: the kernel or `ip route add` use them, so they
    /// cannot identify our routes.
    pub fn with_route_protocol(mut self, protocol: u8) -> wgm_core::Result<Self> {
        if protocol <= HIGHEST_RESERVED_PROTOCOL {
            return Err(wgm_core::Error::invalid(
                "route_protocol",
                "must be above 4 (0-4 are used by the kernel and by `ip route add`)",
            ));
        }
        self.protocol = protocol;
        Ok(self)
    }

    /// The route `proto` number that marks this backend's routes.
    pub fn route_protocol(&self) -> u8 {
        self.protocol
    }

    /// Reads the link named `name`: `None` when it does not exist.
    pub(crate) async fn read_live(&self, name: &str) -> Result<Option<Live>, NetlinkError> {
        let link = match self.get_link(name).await {
            Ok(link) => link,
            Err(e) if e.errno() == Some(Errno::ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        };
        // The link may vanish between the requests; the route dump then answers
        // ENODEV (its RTA_OIF filter names a missing link) and the address dump an
        // empty list, and the link reads as absent.
        match self.read_contents(name, link).await {
            Ok(live) => Ok(Some(live)),
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn get_link(&self, name: &str) -> Result<codec::LinkRecord, NetlinkError> {
        let op = format!("get link {name}");
        match self.netlink.get(codec::get_link(name), &op, name).await? {
            RouteNetlinkMessage::NewLink(msg) => codec::parse_link(&msg, name),
            other => Err(NetlinkError::Unexpected {
                op,
                what: format!(
                    "message type {} instead of RTM_NEWLINK",
                    other.message_type()
                ),
            }),
        }
    }

    async fn read_contents(
        &self,
        name: &str,
        link: codec::LinkRecord,
    ) -> Result<Live, NetlinkError> {
        let addresses = self.read_addresses(name, link.index).await?;
        let mut routes = BTreeSet::new();
        for family in [Family::V4, Family::V6] {
            routes.extend(self.read_routes(name, link.index, family).await?);
        }
        Ok(Live {
            link,
            addresses,
            routes,
        })
    }

    async fn read_addresses(
        &self,
        name: &str,
        index: u32,
    ) -> Result<BTreeSet<IpNet>, NetlinkError> {
        let op = format!("dump addresses of link {name}");
        let parts = self
            .netlink
            .dump(codec::dump_addresses(index), &op, name)
            .await?;
        Ok(parts
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => codec::parse_address(a, index, self.protocol),
                _ => None,
            })
            .collect())
    }

    async fn read_routes(
        &self,
        name: &str,
        index: u32,
        family: Family,
    ) -> Result<BTreeSet<IpNet>, NetlinkError> {
        let op = format!("dump {family:?} routes of link {name}");
        let request = codec::dump_routes(family, index, self.protocol);
        let parts = match self.netlink.dump(request, &op, name).await {
            Ok(parts) => parts,
            // A filtered IPv4 dump of a table that does not exist yet (no route was
            // ever added in this namespace) answers ENOENT: no routes.
            Err(e) if e.errno() == Some(Errno::ENOENT) => return Ok(BTreeSet::new()),
            Err(e) => return Err(e),
        };
        Ok(parts
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => codec::parse_route(r, index, self.protocol),
                _ => None,
            })
            .collect())
    }

    /// Applies `changes` to the link named `name`: reads it, plans the missing
    /// operations, and sends them in order. `NotFound` (via `ENODEV`) when the link
    /// does not exist.
    pub(crate) async fn apply_changes(
        &self,
        name: &str,
        changes: &Changes<'_>,
    ) -> Result<(), NetlinkError> {
        let link = self.get_link(name).await?;
        let live = self.read_contents(name, link).await?;
        let ops = plan::plan(&live, changes)?;
        let index = live.link.index;
        for op in ops {
            self.run(name, index, op).await?;
        }
        Ok(())
    }

    async fn run(&self, name: &str, index: u32, op: Op) -> Result<(), NetlinkError> {
        match op {
            Op::SetLink { mtu, up } => {
                let Some(msg) = codec::set_link(index, mtu, up) else {
                    return Ok(());
                };
                let what = format!("set link {name} mtu {mtu:?} up {up:?}");
                self.netlink.change(msg, 0, &what, name).await
            }
            Op::DelRoute(dst) => {
                let what = format!("delete route {dst} from link {name}");
                let msg = codec::del_route(index, dst, self.protocol);
                // ESRCH: already gone (someone else removed it since we read).
                ignore(self.netlink.change(msg, 0, &what, name).await, Errno::ESRCH)
            }
            Op::DelAddress(addr) => {
                let what = format!("delete address {addr} from link {name}");
                let msg = codec::del_address(index, addr);
                // EADDRNOTAVAIL: already gone.
                ignore(
                    self.netlink.change(msg, 0, &what, name).await,
                    Errno::EADDRNOTAVAIL,
                )
            }
            Op::AddAddress(addr) => {
                let what = format!("add address {addr} to link {name}");
                let msg = codec::add_address(index, addr, self.protocol);
                match self
                    .netlink
                    .change(msg, NLM_F_CREATE | NLM_F_EXCL, &what, name)
                    .await
                {
                    Err(e) if e.errno() == Some(Errno::EEXIST) => {
                        // Either someone added the same address since we read (fine),
                        // or the same IPv6 address exists with another prefix length.
                        if self.read_addresses(name, index).await?.contains(&addr) {
                            Ok(())
                        } else {
                            Err(NetlinkError::Conflict(format!(
                                "address {} is already on link {name} with another prefix length; remove it first",
                                addr.addr()
                            )))
                        }
                    }
                    other => other,
                }
            }
            Op::AddRoute(dst) => {
                let what = format!("add route {dst} to link {name}");
                let msg = codec::add_route(index, dst, self.protocol);
                match self
                    .netlink
                    .change(msg, NLM_F_CREATE | NLM_F_EXCL, &what, name)
                    .await
                {
                    Err(e) if e.errno() == Some(Errno::EEXIST) => {
                        let family = if dst.addr().is_ipv4() {
                            Family::V4
                        } else {
                            Family::V6
                        };
                        if self.read_routes(name, index, family).await?.contains(&dst) {
                            Ok(())
                        } else {
                            Err(NetlinkError::Conflict(format!(
                                "a route to {dst} that this backend does not own (another proto or link) is in the main table; it is left alone"
                            )))
                        }
                    }
                    other => other,
                }
            }
        }
    }
}

#[async_trait]
impl NetworkBackend for KernelNetwork {
    /// `"netlink"`.
    fn name(&self) -> &'static str {
        "netlink"
    }

    /// `ip link show dev NAME` + `ip address show dev NAME` + `ip route show table main
    /// proto P dev NAME` (both families), each dump read to its end. `Ok(None)` when
    /// the link does not exist (also when it disappears while being read).
    async fn read_link(&self, name: &InterfaceName) -> wgm_core::Result<Option<LinkState>> {
        let live = self.read_live(name.as_str()).await?;
        Ok(live.map(|live| LinkState {
            up: live.link.up,
            mtu: live.link.mtu,
            addresses: live.addresses.into_iter().collect(),
            routes: live.routes.into_iter().collect(),
        }))
    }

    /// Validates `delta` ([`LinkDelta::validate`] and this backend's own checks), reads
    /// the link, and sends only what differs, in the order MTU, removed addresses,
    /// added addresses, up/down, removed routes, added routes. Not atomic: an error
    /// part-way keeps what came before. `NotFound { kind: "link" }` when the link does
    /// not exist; `Conflict` when an added route collides with a route this backend
    /// does not own, or an added IPv6 address exists with another prefix length.
    async fn apply_link(&self, name: &InterfaceName, delta: &LinkDelta) -> wgm_core::Result<()> {
        delta.validate()?;
        let changes = Changes {
            up: delta.up,
            mtu: delta.mtu,
            add_addresses: &delta.add_addresses,
            remove_addresses: &delta.remove_addresses,
            add_routes: &delta.add_routes,
            remove_routes: &delta.remove_routes,
        };
        Ok(self.apply_changes(name.as_str(), &changes).await?)
    }
}

/// Turns the kernel error `benign` into success (the idempotent outcomes).
fn ignore(result: Result<(), NetlinkError>, benign: Errno) -> Result<(), NetlinkError> {
    match result {
        Err(e) if e.errno() == Some(benign) => Ok(()),
        other => other,
    }
}
