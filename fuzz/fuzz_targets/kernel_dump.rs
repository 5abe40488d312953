//! The kernel WireGuard dump decoder (`wgm_backend_kernel::wire::decode_dump`): no panic
//! on any input; an accepted dump gives normalised state (allowed IPs sorted, unique,
//! without host bits); that state, split into set messages of a budget taken from the
//! input and read back as a dump, decodes to the same configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgm_backend_kernel::wire::{decode_dump, encode_set, MAX_MESSAGE_BYTES, MIN_MESSAGE_BYTES};
use wgm_core::backend::{DeviceDelta, PeerDelta};

fuzz_target!(|data: &[u8]| {
    let Ok(state) = decode_dump(data) else {
        return;
    };
    for (key, peer) in &state.peers {
        assert_eq!(*key, peer.public_key);
        assert!(peer.allowed_ips.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
        assert!(peer.allowed_ips.iter().all(|ip| ip.trunc() == *ip), "no host bits");
    }
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
    let seed = data.iter().fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(usize::from(*b)));
    let budget = MIN_MESSAGE_BYTES + seed % (MAX_MESSAGE_BYTES - MIN_MESSAGE_BYTES + 1);
    let messages = encode_set("wg0", 30, &delta, budget).expect("a decoded state encodes");
    assert!(messages.iter().all(|m| m.len() <= budget), "every message fits its budget");
    let back = decode_dump(&messages.concat()).expect("an encoded state decodes");
    assert_eq!(back.private_key, state.private_key);
    assert_eq!((back.listen_port, back.fwmark), (state.listen_port, state.fwmark));
    assert_eq!(back.peers.len(), state.peers.len());
    for (key, peer) in &state.peers {
        let b = &back.peers[key];
        assert_eq!(b.allowed_ips, peer.allowed_ips);
        assert_eq!(b.preshared_key, peer.preshared_key);
        assert_eq!(b.endpoint, peer.endpoint);
        assert_eq!(b.persistent_keepalive, peer.persistent_keepalive);
    }
});
