//! UAPI: the codec alone, and wgm's userspace backend side by side with wireguard-tools
//! on the same wireguard-go device.
//!
//! - `uapi/codec/encode_set_10k` and `uapi/codec/decode_get_10k`: the sans-I/O codec on
//!   a 10 000-peer device (no root needed).
//! - `uapi/initial_apply_10k/{wgm,wg_setconf}`: configure an empty device with 10 000
//!   peers: one `apply_device`, vs `wg setconf` of the same configuration as a file.
//! - `uapi/add_one_peer_at_10k/{wgm,wg_syncconf}`: add one peer to the 10 000-peer device:
//!   a one-peer delta, vs `wg syncconf` with the full 10 001-peer file (what scripts built
//!   on wireguard-tools do). Ours should be far below 1 in the ratio.
//! - `uapi/read_10k/{wgm,wg_show_dump}`: read the status of the 10 000 peers:
//!   `read_device`, vs `wg show <iface> dump`.
//!
//! A closing line per pair gives the ratio wgm / wg. The device half needs root,
//! `wireguard-go` and `wg`, and runs only with `WGM_TEST_NETNS=1` (it creates its own
//! network namespace, and kills only the daemon it started); otherwise it is skipped
//! with one printed line. With the switch on, a missing tool or root fails the run.
//!
//! Run: `WGM_TEST_NETNS=1 cargo bench -p wgm-benches --bench uapi`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use wgm_backend_userspace::{
    uapi, DaemonCommand, UserspaceBackend, UserspaceConfig, DEFAULT_SOCKET_DIR,
};
use wgm_core::backend::{DeviceDelta, PeerDelta, WireGuardBackend};
use wgm_core::keys::{PrivateKey, PublicKey};
use wgm_core::names::InterfaceName;
use wgm_test_support::{require, Suite};

const PEERS: usize = 10_000;

/// Timed totals `(time, runs)` per (pair, side), for the closing ratio lines.
static TOTALS: Mutex<[[(Duration, u32); 2]; 3]> = Mutex::new([[(Duration::ZERO, 0); 2]; 3]);
const APPLY: usize = 0;
const ADD_ONE: usize = 1;
const READ: usize = 2;
const WGM: usize = 0;
const WG: usize = 1;

fn record(pair: usize, side: usize, elapsed: Duration, runs: u64) {
    let mut t = TOTALS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    t[pair][side].0 += elapsed;
    t[pair][side].1 += u32::try_from(runs).unwrap_or(u32::MAX);
}

/// The device's peers: public key and two allowed IPs each.
struct Fixture {
    private: PrivateKey,
    peers: Vec<(PublicKey, String, String)>,
}

impl Fixture {
    fn new(n: usize) -> Fixture {
        let peers = (0..n)
            .map(|i| {
                (
                    PrivateKey::generate().public_key(),
                    format!("fd00:b::{i:x}/128"),
                    format!("10.{}.{}.{}/32", 100 + (i >> 16), (i >> 8) & 255, i & 255),
                )
            })
            .collect();
        Fixture {
            private: PrivateKey::generate(),
            peers,
        }
    }

    fn delta(&self) -> DeviceDelta {
        DeviceDelta {
            private_key: Some(self.private.clone()),
            listen_port: Some(51_820),
            peers: self
                .peers
                .iter()
                .map(|(k, v6, v4)| PeerDelta {
                    allowed_ips: vec![v6.parse().expect("net"), v4.parse().expect("net")],
                    ..PeerDelta::new(*k)
                })
                .collect(),
            ..DeviceDelta::default()
        }
    }

    /// The same configuration in `wg setconf` format, plus `extra` peers.
    fn wg_conf(&self, extra: &[(PublicKey, &str)]) -> String {
        let mut s = String::with_capacity(self.peers.len() * 120);
        let _ = write!(
            s,
            "[Interface]\nPrivateKey = {}\nListenPort = 51820\n",
            self.private.expose_base64().as_str()
        );
        for (k, v6, v4) in &self.peers {
            let _ = write!(s, "\n[Peer]\nPublicKey = {k}\nAllowedIPs = {v6}, {v4}\n");
        }
        for (k, ip) in extra {
            let _ = write!(s, "\n[Peer]\nPublicKey = {k}\nAllowedIPs = {ip}\n");
        }
        s
    }

    /// A get reply for this device, as wireguard-go writes it.
    fn reply(&self) -> Vec<u8> {
        let mut s = format!(
            "private_key={}\nlisten_port=51820\n",
            self.private.expose_hex().as_str()
        );
        for (k, v6, v4) in &self.peers {
            let _ = write!(
                s,
                "public_key={}\npreshared_key={}\nprotocol_version=1\nlast_handshake_time_sec=0\n\
                 last_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n\
                 allowed_ip={v6}\nallowed_ip={v4}\n",
                k.to_hex(),
                "0".repeat(64)
            );
        }
        s.push_str("errno=0\n\n");
        s.into_bytes()
    }
}

fn codec(c: &mut Criterion) {
    let fixture = Fixture::new(PEERS);
    let delta = fixture.delta();
    let reply = fixture.reply();
    let mut group = c.benchmark_group("uapi/codec");
    group.sample_size(20);
    group.bench_function("encode_set_10k", |b| {
        b.iter(|| black_box(uapi::encode_set(black_box(&delta))));
    });
    group.bench_function("decode_get_10k", |b| {
        b.iter(|| black_box(uapi::decode_get(black_box(&reply)).expect("decodes")));
    });
    group.finish();
}

/// A network namespace deleted on drop, after killing what runs in it (our daemon).
struct Netns {
    name: String,
    iface: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Some(pid) = pid.parse().ok().and_then(rustix::process::Pid::from_raw) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        let _ = std::fs::remove_file(
            Path::new(DEFAULT_SOCKET_DIR).join(format!("{}.sock", self.iface)),
        );
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn wg(args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = Command::new("wg")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run wg");
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "wg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    black_box(out.stdout.len());
    elapsed
}

#[allow(clippy::too_many_lines)] // Three side-by-side pairs on one device.
fn device(c: &mut Criterion) {
    if require(Suite::Netns, &["wireguard-go", "wg", "ip"]).is_none() {
        return;
    }
    let pid = std::process::id();
    let ns = Netns {
        name: format!("wgmb-{pid}"),
        iface: format!("wgb{pid}"),
    };
    let _ = Command::new("ip").args(["netns", "del", &ns.name]).output();
    let ok = Command::new("ip")
        .args(["netns", "add", &ns.name])
        .status()
        .expect("ip netns add");
    assert!(ok.success(), "ip netns add failed");
    let name = InterfaceName::new(ns.iface.clone()).expect("valid name");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let backend = UserspaceBackend::new(UserspaceConfig {
        daemon: DaemonCommand::wireguard_go().in_netns(&ns.name),
        ..UserspaceConfig::default()
    });
    rt.block_on(backend.create_device(&name))
        .expect("create device");

    let fixture = Fixture::new(PEERS);
    let full = fixture.delta();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("wg.conf");
    std::fs::write(&conf, fixture.wg_conf(&[])).expect("write conf");
    let conf = conf.to_str().expect("utf-8 path").to_owned();
    let iface = ns.iface.as_str();
    let clear = DeviceDelta {
        replace_peers: true,
        ..DeviceDelta::default()
    };

    let mut group = c.benchmark_group("uapi/initial_apply_10k");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("wgm", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                rt.block_on(backend.apply_device(&name, &clear))
                    .expect("clear");
                let start = Instant::now();
                rt.block_on(backend.apply_device(&name, &full))
                    .expect("apply");
                total += start.elapsed();
            }
            record(APPLY, WGM, total, iters);
            total
        });
    });
    group.bench_function("wg_setconf", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                rt.block_on(backend.apply_device(&name, &clear))
                    .expect("clear");
                total += wg(&["setconf", iface, &conf]);
            }
            record(APPLY, WG, total, iters);
            total
        });
    });
    group.finish();

    // From here on the device holds the 10 000 peers.
    rt.block_on(backend.apply_device(
        &name,
        &DeviceDelta {
            replace_peers: true,
            ..full.clone()
        },
    ))
    .expect("apply");
    let extra = PrivateKey::generate().public_key();
    let extra_ip = "fd00:c::1/128";
    let add = DeviceDelta {
        peers: vec![PeerDelta {
            allowed_ips: vec![extra_ip.parse().expect("net")],
            ..PeerDelta::new(extra)
        }],
        ..DeviceDelta::default()
    };
    let remove = DeviceDelta {
        peers: vec![PeerDelta::remove(extra)],
        ..DeviceDelta::default()
    };
    let conf_plus = dir.path().join("wg-plus.conf");
    std::fs::write(&conf_plus, fixture.wg_conf(&[(extra, extra_ip)])).expect("write conf");
    let conf_plus = conf_plus.to_str().expect("utf-8 path").to_owned();

    let mut group = c.benchmark_group("uapi/add_one_peer_at_10k");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("wgm", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                rt.block_on(backend.apply_device(&name, &remove))
                    .expect("remove");
                let start = Instant::now();
                rt.block_on(backend.apply_device(&name, &add)).expect("add");
                total += start.elapsed();
            }
            record(ADD_ONE, WGM, total, iters);
            total
        });
    });
    group.bench_function("wg_syncconf", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                rt.block_on(backend.apply_device(&name, &remove))
                    .expect("remove");
                total += wg(&["syncconf", iface, &conf_plus]);
            }
            record(ADD_ONE, WG, total, iters);
            total
        });
    });
    group.finish();
    let state = rt
        .block_on(backend.read_device(&name))
        .expect("read")
        .expect("exists");
    assert_eq!(
        state.peers.len(),
        PEERS + 1,
        "both sides leave the device with the extra peer"
    );

    let mut group = c.benchmark_group("uapi/read_10k");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("wgm", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(rt.block_on(backend.read_device(&name)).expect("read"));
            }
            let total = start.elapsed();
            record(READ, WGM, total, iters);
            total
        });
    });
    group.bench_function("wg_show_dump", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += wg(&["show", iface, "dump"]);
            }
            record(READ, WG, total, iters);
            total
        });
    });
    group.finish();

    rt.block_on(backend.delete_device(&name))
        .expect("delete device");

    let t = *TOTALS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mean = |(d, n): (Duration, u32)| if n == 0 { Duration::ZERO } else { d / n };
    for (pair, label, tool) in [
        (APPLY, "initial apply of 10 000 peers", "wg setconf"),
        (ADD_ONE, "add one peer at 10 000", "wg syncconf"),
        (READ, "read 10 000 peers", "wg show dump"),
    ] {
        let (ours, theirs) = (mean(t[pair][WGM]), mean(t[pair][WG]));
        println!(
            "uapi: {label}: wgm {ours:?}, {tool} {theirs:?}: ratio wgm/wg = {:.3}",
            ours.as_secs_f64() / theirs.as_secs_f64().max(f64::MIN_POSITIVE)
        );
    }
}

criterion_group!(benches, codec, device);
criterion_main!(benches);
