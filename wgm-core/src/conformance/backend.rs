//! The conformance suite of [`WireGuardBackend`] and [`NetworkBackend`]: every
//! implementation (memory, userspace, kernel) runs these checks in its tests, so all of
//! them keep the semantics documented in [`crate::backend`].
//!
//! Each check takes the backend as a trait object and the name of a device that must not
//! exist yet; it creates the device, checks, and deletes it again. A failed expectation
//! panics (these are test helpers); a backend error is returned.
//!
//! ```
//! use wgm_core::backend::MemoryWireGuard;
//! use wgm_core::conformance::backend::{run_wireguard, Params};
//! use wgm_core::names::InterfaceName;
//! # futures::executor::block_on(async {
//! let wg = MemoryWireGuard::new();
//! let params = Params { large_peers: 100, many_allowed_ips: 100 };
//! run_wireguard(&wg, &InterfaceName::new("wgtest0")?, &params).await?;
//! # Ok::<(), wgm_core::Error>(())
//! # }).unwrap();
//! ```

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::backend::{
    DeviceDelta, DeviceState, LinkDelta, NetworkBackend, PeerDelta, PeerState, WireGuardBackend,
};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::names::InterfaceName;
use crate::{Error, Result};

/// Sizes for the scale checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Peers on the device of [`large_device`] (F10 asks for 10 000).
    pub large_peers: usize,
    /// Allowed IPs of the single peer of [`many_allowed_ips`].
    pub many_allowed_ips: usize,
}

impl Default for Params {
    /// 10 000 peers; one peer with 10 000 allowed IPs.
    fn default() -> Self {
        Params {
            large_peers: 10_000,
            many_allowed_ips: 10_000,
        }
    }
}

/// Run every [`WireGuardBackend`] check, one after the other, on device `name`.
pub async fn run_wireguard(
    wg: &dyn WireGuardBackend,
    name: &InterfaceName,
    params: &Params,
) -> Result<()> {
    device_lifecycle(wg, name).await?;
    device_instance(wg, name).await?;
    device_settings(wg, name).await?;
    incremental_peers(wg, name).await?;
    allowed_ip_moves(wg, name).await?;
    own_key_peer_ignored(wg, name).await?;
    replace_peers(wg, name).await?;
    invalid_delta_applies_nothing(wg, name).await?;
    large_device(wg, name, params.large_peers).await?;
    many_allowed_ips(wg, name, params.many_allowed_ips).await?;
    Ok(())
}

fn key() -> PublicKey {
    PrivateKey::generate().public_key()
}

fn net(s: &str) -> IpNet {
    // The literals below are all valid networks.
    s.parse()
        .unwrap_or_else(|e| panic!("bad test network {s}: {e}"))
}

fn sock(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test endpoint {s}: {e}"))
}

async fn read(wg: &dyn WireGuardBackend, name: &InterfaceName) -> Result<DeviceState> {
    wg.read_device(name)
        .await?
        .ok_or_else(|| Error::not_found("device", name))
}

/// The configured part of a peer (what a delta sets), for before/after comparisons that
/// must not depend on traffic.
fn config(p: &PeerState) -> (Option<PresharedKey>, Option<SocketAddr>, Vec<IpNet>, u16) {
    (
        p.preshared_key.clone(),
        p.endpoint,
        p.allowed_ips.clone(),
        p.persistent_keepalive,
    )
}

/// Start from nothing: delete leftovers of an earlier failed run, then create.
async fn fresh(wg: &dyn WireGuardBackend, name: &InterfaceName) -> Result<()> {
    wg.delete_device(name).await?;
    wg.create_device(name).await
}

/// Create, read, list and delete are idempotent; `None` means absent; applying to an
/// absent device is `NotFound`.
pub async fn device_lifecycle(wg: &dyn WireGuardBackend, name: &InterfaceName) -> Result<()> {
    wg.delete_device(name).await?;
    assert!(
        wg.read_device(name).await?.is_none(),
        "{}: absent device must read as None",
        wg.name()
    );
    assert!(!wg.list_devices().await?.contains(name));
    let e = wg.apply_device(name, &DeviceDelta::default()).await;
    assert!(
        matches!(e, Err(Error::NotFound { kind: "device", .. })),
        "{}: apply to an absent device must be NotFound(device), got {e:?}",
        wg.name()
    );

    wg.create_device(name).await?;
    wg.create_device(name).await?; // idempotent
    let state = read(wg, name).await?;
    assert!(state.private_key.is_none() && state.public_key.is_none());
    assert!(state.peers.is_empty());
    assert_eq!(state.fwmark, 0);
    let listed = wg.list_devices().await?;
    assert!(
        listed.contains(name),
        "{}: {name} missing from {listed:?}",
        wg.name()
    );
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "list_devices must be sorted");

    // Creating again keeps the configuration.
    let key = PrivateKey::generate();
    wg.apply_device(
        name,
        &DeviceDelta {
            private_key: Some(key.clone()),
            ..DeviceDelta::default()
        },
    )
    .await?;
    wg.create_device(name).await?;
    assert_eq!(read(wg, name).await?.public_key, Some(key.public_key()));

    wg.delete_device(name).await?;
    wg.delete_device(name).await?; // idempotent
    assert!(wg.read_device(name).await?.is_none());
    assert!(!wg.list_devices().await?.contains(name));
    Ok(())
}

/// A backend that tells device instances keeps one stable while the device lives
/// (reads and applies do not change it) and gives a recreated device another one; an
/// absent device has none. A backend that cannot tell says `None` throughout.
pub async fn device_instance(wg: &dyn WireGuardBackend, name: &InterfaceName) -> Result<()> {
    wg.delete_device(name).await?;
    assert_eq!(
        wg.device_instance(name).await?,
        None,
        "{}: an absent device has no instance",
        wg.name()
    );
    wg.create_device(name).await?;
    let first = wg.device_instance(name).await?;
    let Some(first) = first else {
        wg.delete_device(name).await?;
        return Ok(()); // cannot tell: the reconciler always reads back
    };
    let mut delta = DeviceDelta {
        private_key: Some(PrivateKey::generate()),
        ..DeviceDelta::default()
    };
    delta.peers.push(PeerDelta::new(key()));
    wg.apply_device(name, &delta).await?;
    read(wg, name).await?;
    wg.create_device(name).await?; // exists already: the same device
    assert_eq!(
        wg.device_instance(name).await?,
        Some(first),
        "{}: reads, applies and an idempotent create keep the instance",
        wg.name()
    );
    wg.delete_device(name).await?;
    wg.create_device(name).await?;
    let second = wg.device_instance(name).await?;
    assert!(
        second.is_some() && second != Some(first),
        "{}: a recreated device must have another instance ({first} then {second:?})",
        wg.name()
    );
    wg.delete_device(name).await?;
    Ok(())
}

/// Private key, listen port and fwmark are set and read back; an empty delta changes
/// nothing.
pub async fn device_settings(wg: &dyn WireGuardBackend, name: &InterfaceName) -> Result<()> {
    fresh(wg, name).await?;
    let key = PrivateKey::generate();
    let port = 20_000 + rand::random::<u16>() % 30_000;
    let mark = if wg.capabilities().fwmark {
        Some(0x5a5a)
    } else {
        None
    };
    let delta = DeviceDelta {
        private_key: Some(key.clone()),
        listen_port: Some(port),
        fwmark: mark,
        ..DeviceDelta::default()
    };
    wg.apply_device(name, &delta).await?;
    let state = read(wg, name).await?;
    assert!(
        state.private_key.as_ref() == Some(&key),
        "{}: private key not read back",
        wg.name()
    );
    assert_eq!(state.public_key, Some(key.public_key()));
    assert_eq!(state.listen_port, port);
    assert_eq!(state.fwmark, mark.unwrap_or(0));

    wg.apply_device(name, &DeviceDelta::default()).await?;
    assert_eq!(
        read(wg, name).await?,
        state,
        "an empty delta must change nothing"
    );

    let other = PrivateKey::generate();
    let clear = DeviceDelta {
        private_key: Some(other.clone()),
        fwmark: mark.map(|_| 0),
        ..DeviceDelta::default()
    };
    wg.apply_device(name, &clear).await?;
    let state = read(wg, name).await?;
    assert_eq!(state.public_key, Some(other.public_key()));
    assert_eq!(state.fwmark, 0);
    assert_eq!(state.listen_port, port, "untouched port must stay");

    if !wg.capabilities().fwmark {
        let e = wg
            .apply_device(
                name,
                &DeviceDelta {
                    fwmark: Some(1),
                    ..DeviceDelta::default()
                },
            )
            .await;
        assert!(
            matches!(e, Err(Error::Unsupported { .. })),
            "fwmark without capability: {e:?}"
        );
    }
    wg.delete_device(name).await
}

/// Peers are added, updated field by field and removed incrementally; untouched peers
/// and untouched fields keep their state.
pub async fn incremental_peers(wg: &dyn WireGuardBackend, name: &InterfaceName) -> Result<()> {
    fresh(wg, name).await?;
    wg.apply_device(
        name,
        &DeviceDelta {
            private_key: Some(PrivateKey::generate()),
            ..DeviceDelta::default()
        },
    )
    .await?;
    let (a, b, c, d) = (key(), key(), key(), key());
    let psk = PresharedKey::generate();
    let add = DeviceDelta {
        peers: vec![
            PeerDelta {
                preshared_key: Some(Some(psk.clone())),
                endpoint: Some(sock("[2001:db8::1]:51820")),
                persistent_keepalive: Some(25),
                allowed_ips: vec![net("fd00:a::/64"), net("10.10.0.0/24")],
                ..PeerDelta::new(a)
            },
            PeerDelta {
                endpoint: Some(sock("192.0.2.7:4500")),
                allowed_ips: vec![net("fd00:b::2/128")],
                ..PeerDelta::new(b)
            },
            PeerDelta {
                allowed_ips: vec![net("10.12.0.3/32")],
                ..PeerDelta::new(c)
            },
        ],
        ..DeviceDelta::default()
    };
    wg.apply_device(name, &add).await?;
    let s1 = read(wg, name).await?;
    assert_eq!(s1.peers.len(), 3);
    let pa = &s1.peers[&a];
    assert!(
        pa.preshared_key.as_ref() == Some(&psk),
        "preshared key not read back"
    );
    assert_eq!(pa.endpoint, Some(sock("[2001:db8::1]:51820")));
    assert_eq!(pa.persistent_keepalive, 25);
    assert_eq!(
        pa.allowed_ips,
        vec![net("10.10.0.0/24"), net("fd00:a::/64")],
        "allowed IPs sorted"
    );
    assert_eq!(pa.protocol_version, 1);
    assert!(s1.peers[&c].endpoint.is_none() && s1.peers[&c].preshared_key.is_none());

    // Change only B's endpoint.
    let roam = DeviceDelta {
        peers: vec![PeerDelta {
            endpoint: Some(sock("[2001:db8::9]:1234")),
            ..PeerDelta::new(b)
        }],
        ..DeviceDelta::default()
    };
    wg.apply_device(name, &roam).await?;
    let s2 = read(wg, name).await?;
    assert_eq!(s2.peers[&b].endpoint, Some(sock("[2001:db8::9]:1234")));
    assert_eq!(
        s2.peers[&b].allowed_ips, s1.peers[&b].allowed_ips,
        "untouched field changed"
    );
    assert_eq!(
        config(&s2.peers[&a]),
        config(&s1.peers[&a]),
        "untouched peer changed"
    );
    assert_eq!(
        config(&s2.peers[&c]),
        config(&s1.peers[&c]),
        "untouched peer changed"
    );

    // Clear A's preshared key and keepalive; update_only never creates; remove C and an
    // absent D.
    let change = DeviceDelta {
        peers: vec![
            PeerDelta {
                preshared_key: Some(None),
                persistent_keepalive: Some(0),
                ..PeerDelta::new(a)
            },
            PeerDelta {
                update_only: true,
                allowed_ips: vec![net("10.99.0.0/16")],
                ..PeerDelta::new(d)
            },
            PeerDelta::remove(c),
            PeerDelta::remove(key()),
        ],
        ..DeviceDelta::default()
    };
    wg.apply_device(name, &change).await?;
    let s3 = read(wg, name).await?;
    assert_eq!(
        s3.peers.keys().copied().collect::<BTreeSet<_>>(),
        [a, b].into_iter().collect()
    );
    assert!(s3.peers[&a].preshared_key.is_none());
    assert_eq!(s3.peers[&a].persistent_keepalive, 0);
    assert_eq!(s3.peers[&a].endpoint, s1.peers[&a].endpoint);
    assert_eq!(s3.peers[&a].allowed_ips, s1.peers[&a].allowed_ips);
    assert_eq!(config(&s3.peers[&b]), config(&s2.peers[&b]));
    assert!(
        s3.peer_with_allowed_ip(&net("10.99.0.0/16")).is_none(),
        "update_only created a peer"
    );

    // update_only on an existing peer updates it.
    let update = DeviceDelta {
        peers: vec![PeerDelta {
            update_only: true,
            persistent_keepalive: Some(15),
            ..PeerDelta::new(b)
        }],
        ..DeviceDelta::default()
    };
    wg.apply_device(name, &update).await?;
    assert_eq!(read(wg, name).await?.peers[&b].persistent_keepalive, 15);
    wg.delete_device(name).await
}

/// An allowed IP given to a second peer moves; `replace_allowed_ips` replaces;
/// `remove_allowed_ips` removes (or is refused without the capability).
pub async fn allowed_ip_moves(wg: &dyn WireGuardBackend, name: &InterfaceName) -> Result<()> {
    fresh(wg, name).await?;
    let (a, b) = (key(), key());
    let first = DeviceDelta {
        peers: vec![
            PeerDelta {
                allowed_ips: vec![net("10.1.0.0/24"), net("fd00:1::/64")],
                ..PeerDelta::new(a)
            },
            PeerDelta {
                allowed_ips: vec![net("10.2.0.0/24")],
                ..PeerDelta::new(b)
            },
        ],
        ..DeviceDelta::default()
    };
    wg.apply_device(name, &first).await?;
    let moved = DeviceDelta {
        peers: vec![PeerDelta {
            allowed_ips: vec![net("10.1.0.0/24")],
            ..PeerDelta::new(b)
        }],
        ..DeviceDelta::default()
    };
    wg.apply_device(name, &moved).await?;
    let s = read(wg, name).await?;
    assert_eq!(
        s.peers[&a].allowed_ips,
        vec![net("fd00:1::/64")],
        "the IP must leave the first peer"
    );
    assert_eq!(
        s.peers[&b].allowed_ips,
        vec![net("10.1.0.0/24"), net("10.2.0.0/24")]
    );

    let replace = DeviceDelta {
        peers: vec![PeerDelta {
            replace_allowed_ips: true,
            allowed_ips: vec![net("fd00:2::/64")],
            ..PeerDelta::new(a)
        }],
        ..DeviceDelta::default()
    };
    wg.apply_device(name, &replace).await?;
    assert_eq!(
        read(wg, name).await?.peers[&a].allowed_ips,
        vec![net("fd00:2::/64")]
    );

    let remove = DeviceDelta {
        peers: vec![PeerDelta {
            remove_allowed_ips: vec![net("10.2.0.0/24")],
            ..PeerDelta::new(b)
        }],
        ..DeviceDelta::default()
    };
    let result = wg.apply_device(name, &remove).await;
    if wg.capabilities().remove_allowed_ip {
        result?;
        assert_eq!(
            read(wg, name).await?.peers[&b].allowed_ips,
            vec![net("10.1.0.0/24")]
        );
    } else {
        assert!(
            matches!(result, Err(Error::Unsupported { .. })),
            "without capability: {result:?}"
        );
        assert_eq!(
            read(wg, name).await?.peers[&b].allowed_ips.len(),
            2,
            "a refused delta applied"
        );
    }

    let empty = DeviceDelta {
        peers: vec![PeerDelta {
            replace_allowed_ips: true,
            ..PeerDelta::new(a)
        }],
        ..DeviceDelta::default()
    };
    wg.apply_device(name, &empty).await?;
    let s = read(wg, name).await?;
    assert!(
        s.peers[&a].allowed_ips.is_empty(),
        "replace with nothing must clear"
    );
    assert!(
        s.peers.contains_key(&a),
        "clearing allowed IPs must keep the peer"
    );
    wg.delete_device(name).await
}

/// A peer equal to the device's own public key is silently ignored (the rest of the
/// delta applies); setting a private key removes the peer equal to the new public key.
pub async fn own_key_peer_ignored(wg: &dyn WireGuardBackend, name: &InterfaceName) -> Result<()> {
    fresh(wg, name).await?;
    let own = PrivateKey::generate();
    let next = PrivateKey::generate();
    let (a, b) = (key(), key());
    let delta = DeviceDelta {
        private_key: Some(own.clone()),
        peers: vec![
            PeerDelta::new(a),
            PeerDelta {
                allowed_ips: vec![net("10.3.0.0/24")],
                ..PeerDelta::new(own.public_key())
            },
            PeerDelta {
                allowed_ips: vec![net("10.4.0.0/24")],
                ..PeerDelta::new(next.public_key())
            },
            PeerDelta::new(b),
        ],
        ..DeviceDelta::default()
    };
    wg.apply_device(name, &delta).await?;
    let s = read(wg, name).await?;
    let keys: BTreeSet<PublicKey> = s.peers.keys().copied().collect();
    assert_eq!(
        keys,
        [a, b, next.public_key()].into_iter().collect(),
        "own key must be ignored"
    );
    assert!(s.peer_with_allowed_ip(&net("10.3.0.0/24")).is_none());

    wg.apply_device(
        name,
        &DeviceDelta {
            private_key: Some(next.clone()),
            ..DeviceDelta::default()
        },
    )
    .await?;
    let s = read(wg, name).await?;
    assert_eq!(s.public_key, Some(next.public_key()));
    assert!(
        !s.peers.contains_key(&next.public_key()),
        "{}: the peer equal to the new public key must go",
        wg.name()
    );
    assert!(s.peer_with_allowed_ip(&net("10.4.0.0/24")).is_none());
    assert_eq!(s.peers.len(), 2);
    wg.delete_device(name).await
}

/// `replace_peers` leaves exactly the delta's peers; device settings stay.
pub async fn replace_peers(wg: &dyn WireGuardBackend, name: &InterfaceName) -> Result<()> {
    fresh(wg, name).await?;
    let (a, b, c) = (key(), key(), key());
    let key = PrivateKey::generate();
    let first = DeviceDelta {
        private_key: Some(key.clone()),
        peers: vec![
            PeerDelta {
                allowed_ips: vec![net("fd00:5::/64")],
                ..PeerDelta::new(a)
            },
            PeerDelta::new(b),
        ],
        ..DeviceDelta::default()
    };
    wg.apply_device(name, &first).await?;
    let replace = DeviceDelta {
        replace_peers: true,
        peers: vec![PeerDelta {
            allowed_ips: vec![net("fd00:5::/64")],
            ..PeerDelta::new(c)
        }],
        ..DeviceDelta::default()
    };
    wg.apply_device(name, &replace).await?;
    let s = read(wg, name).await?;
    assert_eq!(s.peers.keys().copied().collect::<Vec<_>>(), vec![c]);
    assert_eq!(s.peers[&c].allowed_ips, vec![net("fd00:5::/64")]);
    assert_eq!(s.public_key, Some(key.public_key()));

    let none = DeviceDelta {
        replace_peers: true,
        ..DeviceDelta::default()
    };
    wg.apply_device(name, &none).await?;
    assert!(read(wg, name).await?.peers.is_empty());
    wg.delete_device(name).await
}

/// A delta that fails validation applies nothing, not even the device settings before
/// the bad peer.
pub async fn invalid_delta_applies_nothing(
    wg: &dyn WireGuardBackend,
    name: &InterfaceName,
) -> Result<()> {
    fresh(wg, name).await?;
    let before = read(wg, name).await?;
    let a = key();
    let delta = DeviceDelta {
        private_key: Some(PrivateKey::generate()),
        peers: vec![
            PeerDelta {
                allowed_ips: vec![net("10.5.0.0/24")],
                ..PeerDelta::new(a)
            },
            PeerDelta {
                allowed_ips: vec![net("10.5.0.1/24")],
                ..PeerDelta::new(key())
            },
        ],
        ..DeviceDelta::default()
    };
    let e = wg.apply_device(name, &delta).await;
    assert!(
        matches!(e, Err(Error::InvalidInput { .. })),
        "host bits must be refused: {e:?}"
    );
    let after = read(wg, name).await?;
    assert_eq!(
        after.public_key, before.public_key,
        "a refused delta set the key"
    );
    assert!(after.peers.is_empty(), "a refused delta added peers");
    wg.delete_device(name).await
}

/// The IPv6 network `fd00:<tag>::<i>/128`.
fn v6_host(tag: u16, i: usize) -> IpNet {
    let i = i as u128;
    let addr = Ipv6Addr::from((0xfd00_u128 << 112) | (u128::from(tag) << 96) | i);
    IpNet::V6(
        Ipv6Net::new(addr, 128)
            .unwrap_or_else(|_| unreachable!("128 is a valid IPv6 prefix length")),
    )
}

/// The IPv4 network `10.x.y.z/32` for `i` below 2^24.
fn v4_host(i: usize) -> IpNet {
    let addr = Ipv4Addr::from(0x0a00_0000_u32 | (i as u32 & 0x00ff_ffff));
    IpNet::V4(
        Ipv4Net::new(addr, 32).unwrap_or_else(|_| unreachable!("32 is a valid IPv4 prefix length")),
    )
}

/// A device with `n` peers (one IPv6 and one IPv4 allowed IP each, an endpoint on every
/// tenth) is set in one delta and read back completely; then one more peer is added and
/// one removed incrementally, leaving every other peer as it was (F10).
pub async fn large_device(wg: &dyn WireGuardBackend, name: &InterfaceName, n: usize) -> Result<()> {
    assert!(n > 0, "large_device needs at least one peer");
    fresh(wg, name).await?;
    let keys: Vec<PublicKey> = (0..n).map(|_| key()).collect();
    let peers: Vec<PeerDelta> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| PeerDelta {
            allowed_ips: vec![v6_host(1, i), v4_host(i)],
            endpoint: (i % 10 == 0).then(|| {
                let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
                SocketAddr::new(ip, 1000 + (i % 50_000) as u16)
            }),
            ..PeerDelta::new(*k)
        })
        .collect();
    wg.apply_device(
        name,
        &DeviceDelta {
            private_key: Some(PrivateKey::generate()),
            peers,
            ..DeviceDelta::default()
        },
    )
    .await?;
    let s = read(wg, name).await?;
    assert_eq!(
        s.peers.len(),
        n,
        "{}: {n} peers set, {} read back",
        wg.name(),
        s.peers.len()
    );
    for (i, k) in keys.iter().enumerate() {
        let p = s.peers.get(k).unwrap_or_else(|| panic!("peer {i} missing"));
        let mut expected = vec![v6_host(1, i), v4_host(i)];
        expected.sort();
        assert_eq!(p.allowed_ips, expected, "peer {i}");
        assert_eq!(p.endpoint.is_some(), i % 10 == 0, "peer {i} endpoint");
    }

    let extra = key();
    let delta = DeviceDelta {
        peers: vec![
            PeerDelta {
                allowed_ips: vec![v6_host(2, 0)],
                ..PeerDelta::new(extra)
            },
            PeerDelta::remove(keys[n / 2]),
        ],
        ..DeviceDelta::default()
    };
    wg.apply_device(name, &delta).await?;
    let s2 = read(wg, name).await?;
    assert_eq!(s2.peers.len(), n, "one added, one removed");
    assert!(s2.peers.contains_key(&extra));
    for (k, p) in &s.peers {
        if *k == keys[n / 2] {
            assert!(!s2.peers.contains_key(k));
        } else {
            assert_eq!(
                s2.peers.get(k).map(config),
                Some(config(p)),
                "untouched peer changed"
            );
        }
    }
    wg.delete_device(name).await
}

/// One peer with `n` allowed IPs (alternating IPv6 /128 and IPv4 /32) reads back
/// completely (F10).
pub async fn many_allowed_ips(
    wg: &dyn WireGuardBackend,
    name: &InterfaceName,
    n: usize,
) -> Result<()> {
    fresh(wg, name).await?;
    let a = key();
    let ips: Vec<IpNet> = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                v6_host(3, i)
            } else {
                v4_host(i)
            }
        })
        .collect();
    let delta = DeviceDelta {
        peers: vec![
            PeerDelta {
                allowed_ips: ips.clone(),
                ..PeerDelta::new(a)
            },
            PeerDelta::new(key()),
        ],
        ..DeviceDelta::default()
    };
    wg.apply_device(name, &delta).await?;
    let s = read(wg, name).await?;
    let mut expected = ips;
    expected.sort();
    let got = &s.peers[&a].allowed_ips;
    assert_eq!(
        got.len(),
        n,
        "{}: {n} allowed IPs set, {} read back",
        wg.name(),
        got.len()
    );
    assert!(*got == expected, "allowed IPs differ after read-back");
    assert_eq!(
        s.peers.len(),
        2,
        "the peer after the big one must be there too"
    );
    wg.delete_device(name).await
}

/// Run every [`NetworkBackend`] check on link `name`, which must exist (create the
/// WireGuard device first). The link is left down and empty.
pub async fn run_network(net_backend: &dyn NetworkBackend, name: &InterfaceName) -> Result<()> {
    link_settings(net_backend, name).await
}

/// MTU, up/down, addresses and routes are applied idempotently and read back; Linux's
/// rules for down links and small MTUs hold; an absent link reads as `None`.
pub async fn link_settings(nb: &dyn NetworkBackend, name: &InterfaceName) -> Result<()> {
    let absent = InterfaceName::new("wgm-absent0")?;
    assert!(
        nb.read_link(&absent).await?.is_none(),
        "{}: absent link must read as None",
        nb.name()
    );
    let e = nb
        .apply_link(
            &absent,
            &LinkDelta {
                up: Some(true),
                ..LinkDelta::default()
            },
        )
        .await;
    assert!(
        matches!(e, Err(Error::NotFound { .. })),
        "apply to an absent link: {e:?}"
    );

    let v4 = net("10.77.0.1/24");
    let v6 = net("fd00:77::1/64");
    let routes = vec![net("10.78.0.0/16"), net("fd00:78::/48")];
    let up = LinkDelta {
        up: Some(true),
        mtu: Some(1420),
        add_addresses: vec![v6, v4],
        add_routes: routes.clone(),
        ..LinkDelta::default()
    };
    nb.apply_link(name, &up).await?;
    nb.apply_link(name, &up).await?; // idempotent
    let l = nb
        .read_link(name)
        .await?
        .ok_or_else(|| Error::not_found("link", name))?;
    assert!(l.up);
    assert_eq!(l.mtu, 1420);
    assert_eq!(l.addresses, vec![v4, v6]);
    assert_eq!(
        l.routes,
        routes,
        "{}: routes (without the kernel's prefix routes)",
        nb.name()
    );

    let less = LinkDelta {
        remove_addresses: vec![v4, net("10.200.0.1/24")],
        remove_routes: vec![routes[0], net("10.201.0.0/16")],
        mtu: Some(1400),
        ..LinkDelta::default()
    };
    nb.apply_link(name, &less).await?;
    let l = nb
        .read_link(name)
        .await?
        .ok_or_else(|| Error::not_found("link", name))?;
    assert_eq!(
        (l.mtu, l.addresses.clone(), l.routes.clone()),
        (1400, vec![v6], vec![routes[1]])
    );

    let down = LinkDelta {
        up: Some(false),
        add_addresses: vec![v4],
        ..LinkDelta::default()
    };
    nb.apply_link(name, &down).await?;
    let l = nb
        .read_link(name)
        .await?
        .ok_or_else(|| Error::not_found("link", name))?;
    assert!(!l.up);
    assert_eq!(
        l.addresses,
        vec![v4],
        "down drops IPv6 addresses and keeps IPv4 ones"
    );
    assert!(l.routes.is_empty(), "down drops routes");

    nb.apply_link(
        name,
        &LinkDelta {
            remove_addresses: vec![v4],
            ..LinkDelta::default()
        },
    )
    .await?;
    let l = nb
        .read_link(name)
        .await?
        .ok_or_else(|| Error::not_found("link", name))?;
    assert!(l.addresses.is_empty() && l.routes.is_empty() && !l.up);
    Ok(())
}
