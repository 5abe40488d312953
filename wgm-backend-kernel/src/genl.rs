//! Generic netlink plumbing for the `wireguard` family: the message type the socket
//! carries, the codec that keeps key material out of logs, and the resolution of the
//! family's id.
//!
//! # Key material
//! `WG_CMD_SET_DEVICE` requests carry the private key and preshared keys, and a
//! `WG_CMD_GET_DEVICE` dump carries them back. The packet crate's types derive `Debug`
//! (a key prints as its 32 numbers), and netlink-proto's standard codec logs every
//! message it encodes or decodes at `trace` level, and the raw bytes of one it cannot
//! decode at `error` level. So:
//! - the socket never carries the packet crate's message directly but [`WgMessage`],
//!   whose `Debug` names the command and counts attributes, and which wipes the keys it
//!   holds when dropped;
//! - the connection uses [`QuietCodec`], which logs nothing, wipes the bytes of every
//!   message it decoded, and ends the connection (an error for the request in flight)
//!   on a message it cannot decode, instead of dropping it and letting a dump look
//!   complete without it.
//!
//! What this cannot reach: the copies inside netlink-proto's send and receive buffers
//! between the syscall and the codec, which it reuses without wiping.

use std::fmt;
use std::io;

use bytes::{BufMut, BytesMut};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::GenlMessage;
use netlink_packet_wireguard::{
    WireguardAttribute, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
};
use rtnetlink::packet_core::{
    DecodeError, NetlinkBuffer, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable,
};
use rtnetlink::proto::sys::protocols::NETLINK_GENERIC;
use rtnetlink::proto::sys::TokioSocket;
use rtnetlink::proto::NetlinkMessageCodec;
use zeroize::Zeroize;

use crate::error::NetlinkError;
use crate::socket::{Message, Netlink, Opened};

/// The generic netlink controller's fixed family id (`GENL_ID_CTRL`).
pub(crate) const GENL_ID_CTRL: u16 = 16;

/// The name the kernel registers the WireGuard family under.
pub(crate) const WG_FAMILY: &str = "wireguard";

/// A `wireguard` family message whose `Debug` shows no key, and whose keys are wiped
/// when it is dropped.
#[derive(Clone)]
pub(crate) struct WgMessage(pub(crate) GenlMessage<WireguardMessage>);

impl WgMessage {
    /// A message of `payload` addressed to the family with id `family`.
    pub(crate) fn new(payload: WireguardMessage, family: u16) -> Self {
        let mut msg = GenlMessage::from_payload(payload);
        msg.set_resolved_family_id(family);
        WgMessage(msg)
    }

    /// The attributes of the message.
    pub(crate) fn attributes(&self) -> &[WireguardAttribute] {
        &self.0.payload.attributes
    }
}

impl fmt::Debug for WgMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WgMessage({:?}, {} attributes, keys redacted)",
            self.0.payload.cmd,
            self.0.payload.attributes.len()
        )
    }
}

impl Drop for WgMessage {
    fn drop(&mut self) {
        wipe(&mut self.0.payload.attributes);
    }
}

/// Overwrites every private and preshared key in `attributes` with zeros.
pub(crate) fn wipe(attributes: &mut [WireguardAttribute]) {
    for attribute in attributes {
        match attribute {
            WireguardAttribute::PrivateKey(key) => key.zeroize(),
            WireguardAttribute::Peers(peers) => wipe_peers(peers),
            _ => {}
        }
    }
}

/// Overwrites every preshared key of `peers` with zeros.
pub(crate) fn wipe_peers(peers: &mut [WireguardPeer]) {
    for peer in peers {
        for a in &mut peer.0 {
            if let WireguardPeerAttribute::PresharedKey(key) = a {
                key.zeroize();
            }
        }
    }
}

/// What travels over the generic netlink socket: the controller's messages (to resolve
/// the family) and the `wireguard` family's.
#[derive(Clone, Debug)]
pub(crate) enum Genl {
    /// `nlctrl`.
    Ctrl(GenlMessage<GenlCtrl>),
    /// `wireguard`.
    Wg(WgMessage),
}

impl From<Genl> for NetlinkPayload<Genl> {
    fn from(message: Genl) -> Self {
        NetlinkPayload::InnerMessage(message)
    }
}

impl NetlinkSerializable for Genl {
    fn message_type(&self) -> u16 {
        match self {
            Genl::Ctrl(m) => m.message_type(),
            Genl::Wg(m) => m.0.message_type(),
        }
    }

    fn buffer_len(&self) -> usize {
        match self {
            Genl::Ctrl(m) => NetlinkSerializable::buffer_len(m),
            Genl::Wg(m) => NetlinkSerializable::buffer_len(&m.0),
        }
    }

    fn serialize(&self, buffer: &mut [u8]) {
        match self {
            Genl::Ctrl(m) => m.serialize(buffer),
            Genl::Wg(m) => m.0.serialize(buffer),
        }
    }
}

impl NetlinkDeserializable for Genl {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        if header.message_type == GENL_ID_CTRL {
            GenlMessage::<GenlCtrl>::deserialize(header, payload).map(Genl::Ctrl)
        } else {
            // The generic netlink header is 4 bytes; the crate refuses a shorter payload.
            if let Some(attributes) = payload.get(4..) {
                crate::wire::check_wireguard_payload(attributes).map_err(DecodeError::from)?;
            }
            GenlMessage::<WireguardMessage>::deserialize(header, payload)
                .map(|m| Genl::Wg(WgMessage(m)))
        }
    }
}

impl Message for Genl {
    fn describe(&self) -> String {
        match self {
            Genl::Ctrl(m) => format!("nlctrl command {:?}", m.payload.cmd),
            Genl::Wg(m) => format!("wireguard command {:?}", m.0.payload.cmd),
        }
    }
}

/// netlink-proto's codec without its logging (see the module docs): a message that
/// does not decode ends the connection rather than being dropped, and the bytes of
/// every decoded message are wiped.
pub(crate) struct QuietCodec;

impl NetlinkMessageCodec for QuietCodec {
    fn decode<T>(src: &mut BytesMut) -> io::Result<Option<NetlinkMessage<T>>>
    where
        T: NetlinkDeserializable + fmt::Debug,
    {
        if src.is_empty() {
            return Ok(None);
        }
        let len = match NetlinkBuffer::new_checked(src.as_ref()) {
            Ok(buf) => buf.length() as usize,
            Err(e) => {
                src.as_mut().zeroize();
                src.clear();
                return Err(io::Error::other(format!(
                    "a netlink datagram is truncated or malformed: {e}"
                )));
            }
        };
        let mut bytes = src.split_to(len);
        let parsed = NetlinkMessage::<T>::deserialize(&bytes);
        bytes.as_mut().zeroize();
        match parsed {
            Ok(message) => Ok(Some(message)),
            Err(e) => {
                src.as_mut().zeroize();
                src.clear();
                Err(io::Error::other(format!(
                    "a netlink message could not be decoded: {e}"
                )))
            }
        }
    }

    fn encode<T>(msg: NetlinkMessage<T>, buf: &mut BytesMut) -> io::Result<()>
    where
        T: NetlinkSerializable + fmt::Debug,
    {
        let len = msg.buffer_len();
        if buf.remaining_mut() < len {
            return Err(io::Error::other(format!(
                "a netlink message of {len} bytes does not fit the send buffer"
            )));
        }
        let old = buf.len();
        buf.resize(old + len, 0);
        msg.serialize(&mut buf[old..old + len]);
        Ok(())
    }
}

/// A generic netlink socket in the calling thread's network namespace (run it through
/// [`crate::socket::in_namespace`] for another one).
pub(crate) fn connect() -> Result<Opened<Genl, QuietCodec>, NetlinkError> {
    let (conn, handle, unsolicited) =
        rtnetlink::proto::new_connection_with_codec::<Genl, TokioSocket, QuietCodec>(
            NETLINK_GENERIC,
        )
        .map_err(NetlinkError::Socket)?;
    drop(unsolicited);
    Ok((conn, handle))
}

/// `CTRL_CMD_GETFAMILY` for `wireguard`.
pub(crate) fn get_family_request() -> Genl {
    Genl::Ctrl(GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(WG_FAMILY.to_owned())],
    }))
}

/// The family id in the controller's answer.
pub(crate) fn family_id(reply: &Genl) -> Option<u16> {
    match reply {
        Genl::Ctrl(m) => m.payload.nlas.iter().find_map(|a| match a {
            GenlCtrlAttrs::FamilyId(id) => Some(*id),
            _ => None,
        }),
        Genl::Wg(_) => None,
    }
}

/// Asks the controller for the `wireguard` family's id. `ENOENT` means the kernel has
/// no such family: the module is neither built in nor loaded (the controller does ask
/// for it to be loaded when the caller may).
pub(crate) async fn resolve_family(nl: &Netlink<Genl>) -> Result<u16, NetlinkError> {
    let op = "resolve the wireguard generic netlink family";
    let reply = nl.get(get_family_request(), op, WG_FAMILY).await?;
    family_id(&reply).ok_or_else(|| NetlinkError::Unexpected {
        op: op.to_owned(),
        what: "a controller answer without CTRL_ATTR_FAMILY_ID".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_wireguard::WireguardCmd;

    fn keyed() -> WireguardMessage {
        WireguardMessage {
            cmd: WireguardCmd::SetDevice,
            attributes: vec![
                WireguardAttribute::IfName("wg0".into()),
                WireguardAttribute::PrivateKey([0xa8; 32]),
                WireguardAttribute::Peers(vec![WireguardPeer(vec![
                    WireguardPeerAttribute::PublicKey([0x11; 32]),
                    WireguardPeerAttribute::PresharedKey([0x5c; 32]),
                ])]),
            ],
        }
    }

    #[test]
    fn debug_shows_no_key() {
        let msg = WgMessage::new(keyed(), 30);
        let text = format!("{:?} {:?}", msg, Genl::Wg(msg.clone()));
        for byte in ["168", "92", "a8", "5c"] {
            assert!(!text.contains(byte), "{text}");
        }
        assert!(text.contains("SetDevice"), "{text}");
        let framed = NetlinkMessage::from(Genl::Wg(msg));
        let text = format!("{framed:?}");
        assert!(!text.contains("168") && !text.contains("92,"), "{text}");
    }

    #[test]
    fn describe_names_the_command_and_no_key() {
        let wg = Genl::Wg(WgMessage::new(keyed(), 30)).describe();
        assert_eq!(wg, "wireguard command SetDevice");
        assert_eq!(get_family_request().describe(), "nlctrl command GetFamily");
    }

    #[test]
    fn wipe_zeroes_private_and_preshared_keys_only() {
        let mut m = keyed();
        wipe(&mut m.attributes);
        assert_eq!(m.attributes[1], WireguardAttribute::PrivateKey([0; 32]));
        let WireguardAttribute::Peers(peers) = &m.attributes[2] else {
            panic!("peers")
        };
        assert_eq!(peers[0].0[0], WireguardPeerAttribute::PublicKey([0x11; 32]));
        assert_eq!(peers[0].0[1], WireguardPeerAttribute::PresharedKey([0; 32]));
    }

    fn framed(msg: Genl, seq: u32) -> Vec<u8> {
        let mut m = NetlinkMessage::from(msg);
        m.header.sequence_number = seq;
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        buf
    }

    #[test]
    fn codec_round_trips_and_wipes_what_it_decoded() {
        let mut out = BytesMut::with_capacity(4096);
        let m = NetlinkMessage::from(Genl::Wg(WgMessage::new(keyed(), 30)));
        let mut m2 = m.clone();
        m2.finalize();
        QuietCodec::encode(m2, &mut out).expect("encode");
        assert!(out.windows(32).any(|w| w == [0xa8; 32]), "the key is sent");
        let mut src = out.clone();
        let back = QuietCodec::decode::<Genl>(&mut src)
            .expect("decode")
            .expect("one message");
        assert!(src.is_empty());
        match back.payload {
            rtnetlink::packet_core::NetlinkPayload::InnerMessage(Genl::Wg(w)) => {
                assert_eq!(w.attributes(), keyed().attributes.as_slice());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(QuietCodec::decode::<Genl>(&mut src)
            .expect("empty")
            .is_none());
    }

    #[test]
    fn codec_refuses_what_it_cannot_decode_instead_of_dropping_it() {
        // A wireguard message whose peers nest holds a truncated attribute.
        let mut bytes = framed(Genl::Wg(WgMessage::new(keyed(), 30)), 1);
        let good = bytes.clone();
        // Cut the private key attribute's length to 5 (it must be 36).
        let at = 16 + 4 + 8; // nlmsghdr, genlmsghdr, IFNAME (4 + "wg0\0")
        bytes[at] = 5;
        let mut src = BytesMut::from(&bytes[..]);
        assert!(QuietCodec::decode::<Genl>(&mut src).is_err());
        // A datagram shorter than its header says.
        let mut src = BytesMut::from(&good[..good.len() - 3]);
        assert!(QuietCodec::decode::<Genl>(&mut src).is_err());
        assert!(src.is_empty());
    }

    #[test]
    fn family_answer_is_read() {
        let reply = Genl::Ctrl(GenlMessage::from_payload(GenlCtrl {
            cmd: GenlCtrlCmd::NewFamily,
            nlas: vec![
                GenlCtrlAttrs::FamilyName(WG_FAMILY.into()),
                GenlCtrlAttrs::FamilyId(31),
            ],
        }));
        assert_eq!(family_id(&reply), Some(31));
        let bytes = framed(reply, 7);
        let mut src = BytesMut::from(&bytes[..]);
        let decoded = QuietCodec::decode::<Genl>(&mut src)
            .expect("decode")
            .expect("message");
        match decoded.payload {
            rtnetlink::packet_core::NetlinkPayload::InnerMessage(m) => {
                assert_eq!(family_id(&m), Some(31));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(family_id(&get_family_request()), None);
    }
}
