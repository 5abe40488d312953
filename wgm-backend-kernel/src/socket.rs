//! The thin I/O half: one netlink socket (rtnetlink, or generic netlink for the
//! `wireguard` family), its connection task, and the three request shapes the backends
//! need (single reply, acknowledged change, complete dump).
//!
//! Completeness is checked, not assumed. The connection forwards `NLMSG_DONE` and ACKs
//! to us, so a dump counts only when its `NLMSG_DONE` arrived (a stream that merely
//! ends, because the connection broke, is an error rather than a short answer), a dump
//! flagged `NLM_F_DUMP_INTR` (the table changed while the kernel walked it) is read
//! again, and a change counts only when its ACK arrived.

use std::fmt::Debug;
use std::fs::File;
use std::path::Path;

use futures::StreamExt;
use nix::errno::Errno;
use nix::sched::CloneFlags;
use rtnetlink::packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::proto::sys::{protocols::NETLINK_ROUTE, AsyncSocket, SocketAddr, TokioSocket};
use rtnetlink::proto::{Connection, ConnectionHandle, NetlinkCodec, NetlinkMessageCodec};

use crate::error::NetlinkError;

/// How often a dump is retried when the kernel flags it as interrupted.
const DUMP_ATTEMPTS: u32 = 5;

/// A message type a [`Netlink`] socket carries.
pub(crate) trait Message:
    NetlinkSerializable + NetlinkDeserializable + Debug + Clone + Send + Unpin + 'static
{
    /// What the message is, for an "unexpected reply" error (never its contents: a
    /// message may carry key material).
    fn describe(&self) -> String;
}

impl Message for RouteNetlinkMessage {
    fn describe(&self) -> String {
        format!("message type {}", self.message_type())
    }
}

/// An open netlink socket with its connection task. Dropping it stops the task and
/// closes the socket.
#[derive(Debug)]
pub(crate) struct Netlink<T: Message = RouteNetlinkMessage> {
    handle: ConnectionHandle<T>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Message> Drop for Netlink<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connection not yet running, with the handle that talks to it.
pub(crate) type Opened<T, C> = (Connection<T, TokioSocket, C>, ConnectionHandle<T>);

/// An rtnetlink socket (in the calling thread's network namespace) with
/// `NETLINK_GET_STRICT_CHK`, so the kernel filters dumps by link, table and protocol
/// instead of sending the whole table. Must run with a Tokio runtime entered (the socket
/// registers with its reactor).
fn connect_route() -> Result<Opened<RouteNetlinkMessage, NetlinkCodec>, NetlinkError> {
    let (mut conn, handle, unsolicited) =
        rtnetlink::proto::new_connection_with_codec::<_, TokioSocket, NetlinkCodec>(NETLINK_ROUTE)
            .map_err(NetlinkError::Socket)?;
    conn.socket_mut()
        .socket_mut()
        .set_netlink_get_strict_chk(true)
        .map_err(NetlinkError::Socket)?;
    // We join no multicast group; closing the receiver makes the connection discard
    // anything unsolicited instead of queueing it.
    drop(unsolicited);
    Ok((conn, handle))
}

/// Runs `connect` inside the network namespace whose file is `path` (for example
/// `/run/netns/NAME` as created by `ip netns add NAME`), or in the calling thread's own
/// when `path` is `None`.
///
/// The namespace switch happens on a short-lived helper thread (`setns(2)` changes
/// only the calling thread's namespace): it enters the namespace, creates the socket
/// and ends. A socket belongs to the namespace it was created in for its whole life,
/// whichever thread uses it later, so no thread of the caller ever changes namespace.
/// Needs `CAP_SYS_ADMIN`.
pub(crate) fn in_namespace<R: Send>(
    path: Option<&Path>,
    connect: impl FnOnce() -> Result<R, NetlinkError> + Send,
) -> Result<R, NetlinkError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
    let Some(path) = path else {
        return connect();
    };
    let ns = File::open(path).map_err(|source| NetlinkError::NetnsOpen {
        path: path.to_owned(),
        source,
    })?;
    std::thread::scope(|scope| {
        let helper = std::thread::Builder::new()
            .name("wgm-netns".into())
            .spawn_scoped(scope, || {
                nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                    NetlinkError::NetnsEnter {
                        path: path.to_owned(),
                        errno,
                    }
                })?;
                let _entered = runtime.enter();
                connect()
            })
            .map_err(|e| NetlinkError::NetnsThread {
                path: path.to_owned(),
                reason: format!("could not spawn: {e}"),
            })?;
        helper.join().map_err(|_| NetlinkError::NetnsThread {
            path: path.to_owned(),
            reason: "panicked".into(),
        })?
    })
}

impl Netlink<RouteNetlinkMessage> {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    pub(crate) fn open() -> Result<Self, NetlinkError> {
        Self::open_with(None, connect_route)
    }

    /// Opens an rtnetlink socket inside the network namespace whose file is `path` (see
    /// [`in_namespace`]).
    pub(crate) fn open_in(path: &Path) -> Result<Self, NetlinkError> {
        Self::open_with(Some(path), connect_route)
    }
}

impl<T: Message> Netlink<T> {
    /// Opens a socket with `connect`, in the namespace of `path` or the caller's own,
    /// and starts its connection task on the current runtime.
    pub(crate) fn open_with<C>(
        path: Option<&Path>,
        connect: impl FnOnce() -> Result<Opened<T, C>, NetlinkError> + Send,
    ) -> Result<Self, NetlinkError>
    where
        C: NetlinkMessageCodec + Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        let (mut conn, handle) = in_namespace(path, connect)?;
        conn.set_forward_done(true);
        conn.set_forward_ack(true);
        let task = runtime.spawn(conn);
        Ok(Netlink { handle, task })
    }

    /// False once the connection task has ended (the socket broke, or a reply could not
    /// be decoded): every later request would fail, so the owner opens a new socket.
    pub(crate) fn is_open(&self) -> bool {
        !self.task.is_finished()
    }

    fn send(
        &self,
        msg: T,
        flags: u16,
        op: &str,
    ) -> Result<impl futures::Stream<Item = NetlinkMessage<T>> + use<T>, NetlinkError> {
        let mut req =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(msg));
        req.header.flags = flags;
        self.handle
            .clone()
            .request(req, SocketAddr::new(0, 0))
            .map_err(|_| NetlinkError::ConnectionClosed { op: op.to_owned() })
    }

    /// A request answered by exactly one message (e.g. `RTM_GETLINK` by name).
    pub(crate) async fn get(&self, msg: T, op: &str, link: &str) -> Result<T, NetlinkError> {
        let mut replies = self.send(msg, NLM_F_REQUEST, op)?;
        let mut answer = None;
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(m) if answer.is_none() => answer = Some(m),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(kernel_error(op, link, code.get()));
                    }
                }
                other => return Err(unexpected(op, &other)),
            }
        }
        answer.ok_or_else(|| NetlinkError::ConnectionClosed { op: op.to_owned() })
    }

    /// A change acknowledged by the kernel (`NLM_F_ACK`), with `extra_flags` such as
    /// `NLM_F_CREATE | NLM_F_EXCL`. Ok only once the ACK arrived.
    pub(crate) async fn change(
        &self,
        msg: T,
        extra_flags: u16,
        op: &str,
        link: &str,
    ) -> Result<(), NetlinkError> {
        let mut replies = self.send(msg, NLM_F_REQUEST | NLM_F_ACK | extra_flags, op)?;
        // The answer to an acknowledged change is exactly one NLMSG_ERROR: code 0 is
        // the ACK, a negative code the refusal.
        match replies.next().await.map(|reply| reply.payload) {
            Some(NetlinkPayload::Error(e)) => match e.code {
                None => Ok(()),
                Some(code) => Err(kernel_error(op, link, code.get())),
            },
            Some(other) => Err(unexpected(op, &other)),
            None => Err(NetlinkError::NoAck { op: op.to_owned() }),
        }
    }

    /// A complete dump: every part of the multi-part answer, up to `NLMSG_DONE`,
    /// re-read when the kernel flags it as interrupted.
    pub(crate) async fn dump(&self, msg: T, op: &str, link: &str) -> Result<Vec<T>, NetlinkError> {
        for _ in 0..DUMP_ATTEMPTS {
            let mut replies = self.send(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP, op)?;
            let mut parts = Vec::new();
            let mut done = false;
            let mut interrupted = false;
            while let Some(reply) = replies.next().await {
                interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
                match reply.payload {
                    NetlinkPayload::InnerMessage(m) => parts.push(m),
                    NetlinkPayload::Done(d) => {
                        if d.code < 0 {
                            return Err(kernel_error(op, link, d.code));
                        }
                        done = true;
                    }
                    NetlinkPayload::Error(e) => {
                        if let Some(code) = e.code {
                            return Err(kernel_error(op, link, code.get()));
                        }
                    }
                    NetlinkPayload::Overrun(_) => {
                        return Err(NetlinkError::Overrun { op: op.to_owned() })
                    }
                    NetlinkPayload::Noop => {}
                    other => return Err(unexpected(op, &other)),
                }
            }
            if !done {
                return Err(NetlinkError::TruncatedDump { op: op.to_owned() });
            }
            if !interrupted {
                return Ok(parts);
            }
            tracing::debug!(
                op,
                "dump interrupted by a concurrent change; reading it again"
            );
        }
        Err(NetlinkError::DumpInterrupted {
            op: op.to_owned(),
            attempts: DUMP_ATTEMPTS,
        })
    }
}

fn kernel_error(op: &str, link: &str, code: i32) -> NetlinkError {
    NetlinkError::Kernel {
        op: op.to_owned(),
        link: link.to_owned(),
        errno: Errno::from_raw(code.saturating_abs()),
    }
}

fn unexpected<T: Message>(op: &str, payload: &NetlinkPayload<T>) -> NetlinkError {
    let what = match payload {
        NetlinkPayload::Done(_) => "NLMSG_DONE".to_owned(),
        NetlinkPayload::Error(_) => "NLMSG_ERROR".to_owned(),
        NetlinkPayload::Noop => "NLMSG_NOOP".to_owned(),
        NetlinkPayload::Overrun(_) => "NLMSG_OVERRUN".to_owned(),
        NetlinkPayload::InnerMessage(m) => m.describe(),
        _ => "an unknown netlink payload".to_owned(),
    };
    NetlinkError::Unexpected {
        op: op.to_owned(),
        what,
    }
}
