//! The UAPI reply decoder: no panic on any input (raw, and as lines before a valid
//! `errno=0` ending); an accepted reply is complete and gives normalised state; that
//! state, encoded as a set request and read back as a reply, decodes to the same
//! configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgm_backend_userspace::uapi::{decode_errno, decode_get, encode_set, reply_len};
use wgm_core::backend::{DeviceDelta, DeviceState, PeerDelta};

fuzz_target!(|data: &[u8]| {
    let _ = decode_errno(data);
    check(data);

    // The same bytes as the body of a well-framed reply reach the line parser.
    let mut framed = data.to_vec();
    framed.retain(|b| *b != 0);
    while framed.ends_with(b"\n") {
        framed.pop();
    }
    // An empty line would end the reply early; keep the body free of them.
    let mut body = Vec::with_capacity(framed.len());
    for b in framed {
        if !(b == b'\n' && body.last() == Some(&b'\n')) {
            body.push(b);
        }
    }
    if body.first() == Some(&b'\n') {
        body.remove(0);
    }
    if !body.is_empty() {
        body.push(b'\n');
    }
    body.extend_from_slice(b"errno=0\n\n");
    check(&body);
});

fn check(reply: &[u8]) {
    let Ok(state) = decode_get(reply) else {
        return;
    };
    assert!(reply_len(reply).is_some(), "an accepted reply is complete");
    assert_eq!(state.public_key, state.private_key.as_ref().map(|k| k.public_key()));
    for (key, peer) in &state.peers {
        assert_eq!(*key, peer.public_key);
        assert!(peer.allowed_ips.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        assert!(peer.allowed_ips.iter().all(|ip| ip.trunc() == *ip), "no host bits");
    }
    round_trip(&state);
}

/// Encode the state's configuration as a set request, turn that into the reply a daemon
/// would give, decode: the configuration must come back.
fn round_trip(state: &DeviceState) {
    let delta = DeviceDelta {
        private_key: state.private_key.clone(),
        listen_port: Some(state.listen_port),
        fwmark: Some(state.fwmark),
        replace_peers: false,
        peers: state
            .peers
            .values()
            .map(|p| PeerDelta {
                preshared_key: Some(p.preshared_key.clone()),
                endpoint: p.endpoint,
                persistent_keepalive: Some(p.persistent_keepalive),
                allowed_ips: p.allowed_ips.clone(),
                ..PeerDelta::new(p.public_key)
            })
            .collect(),
    };
    let set = encode_set(&delta);
    let body = set.strip_prefix(b"set=1\n").expect("set header");
    let body = body.strip_suffix(b"\n").expect("blank line");
    let mut reply = body.to_vec();
    reply.extend_from_slice(b"errno=0\n\n");
    let back = decode_get(&reply).expect("an encoded state decodes");
    assert_eq!(back.private_key, state.private_key);
    assert_eq!((back.listen_port, back.fwmark), (state.listen_port, state.fwmark));
    assert_eq!(back.peers.len(), state.peers.len());
    for (key, p) in &state.peers {
        let q = &back.peers[key];
        assert_eq!(q.preshared_key, p.preshared_key);
        assert_eq!(q.endpoint.map(|e| (e.ip(), e.port())), p.endpoint.map(|e| (e.ip(), e.port())));
        assert_eq!(q.persistent_keepalive, p.persistent_keepalive);
        assert_eq!(q.allowed_ips, p.allowed_ips);
    }
}
