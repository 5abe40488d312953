//! wg-quick: render and parse a server config with 10 000 peers.
//!
//! The config is what a dual-stack server exports: each peer has a `# Name =` comment, a
//! public key, a preshared key and an IPv6 + IPv4 host route; every tenth peer also
//! routes a delegated IPv6 /56 and an IPv4 /24. Benchmarks, all over the same text:
//!
//! - `wgquick/render/10000`: `wgquick::render` (validation included: every name, comment
//!   and value is checked to read back unchanged);
//! - `wgquick/document/10000`: the lossless layer alone (`Document::parse`);
//! - `wgquick/parse/10000`: `wgquick::parse`, lossless layer plus every value parsed into
//!   its type (keys decoded, public keys checked against the low-order points);
//! - `wgquick/parse_lossless/10000`: `ParsedConfig::parse`, the typed config and the
//!   document that renders the input back byte for byte.
//!
//! Throughput is reported in peers per second. The text is about 2.3 MB, over the
//! default import limit of 1 MiB, so the parse benches raise `max_bytes`.
//!
//! Run: `cargo bench -p wgm-benches --bench wgquick`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wgm_core::keys::{PresharedKey, PrivateKey};
use wgm_core::net::{ListenPort, Mtu};
use wgm_core::wgquick::{self, Document, ParseOptions, ParsedConfig, PeerSection, WgQuickConfig};

const PEERS: usize = 10_000;

/// The server config described in the module docs.
fn server_config(n: usize) -> WgQuickConfig {
    let mut cfg = WgQuickConfig {
        comments: vec!["wgm bench: a server with many peers".into()],
        ..WgQuickConfig::default()
    };
    cfg.interface.name = Some("bench".into());
    cfg.interface.private_key = Some(PrivateKey::generate());
    cfg.interface.addresses = vec![
        "fd42:4243::1/64".parse().expect("literal"),
        "10.43.0.1/16".parse().expect("literal"),
    ];
    cfg.interface.listen_port = Some(ListenPort::new(51820).expect("literal"));
    cfg.interface.mtu = Some(Mtu::new(1420).expect("literal"));
    for i in 0..n {
        let host = i + 2;
        let mut p = PeerSection::new(PrivateKey::generate().public_key());
        p.name = Some(format!("peer-{i:05}"));
        p.preshared_key = Some(PresharedKey::generate());
        p.allowed_ips = vec![
            format!("fd42:4243::{host:x}/128").parse().expect("valid"),
            format!("10.43.{}.{}/32", host >> 8, host & 0xff)
                .parse()
                .expect("valid"),
        ];
        if i % 10 == 0 {
            let site = i / 10;
            p.allowed_ips.push(
                format!("fd43:0:{:x}:{:x}00::/56", site >> 8, site & 0xff)
                    .parse()
                    .expect("valid"),
            );
            p.allowed_ips.push(
                format!("172.{}.{}.0/24", 16 + (site >> 8), site & 0xff)
                    .parse()
                    .expect("valid"),
            );
        }
        cfg.peers.push(p);
    }
    cfg
}

fn wgquick(c: &mut Criterion) {
    let cfg = server_config(PEERS);
    let text = wgquick::render(&cfg).expect("the bench config renders");
    let opts = ParseOptions {
        max_bytes: 64 << 20,
        ..ParseOptions::default()
    };
    // Both directions compute what they claim before anything is measured.
    assert_eq!(wgquick::parse(&text, &opts).expect("parses"), cfg);
    eprintln!(
        "wgquick: {PEERS} peers, {} bytes of wg-quick text",
        text.len()
    );

    let mut group = c.benchmark_group("wgquick");
    group.throughput(Throughput::Elements(PEERS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function(format!("render/{PEERS}"), |b| {
        b.iter(|| wgquick::render(black_box(&cfg)).expect("renders"));
    });
    group.bench_function(format!("document/{PEERS}"), |b| {
        b.iter(|| Document::parse(black_box(&text), &opts).expect("parses"));
    });
    group.bench_function(format!("parse/{PEERS}"), |b| {
        b.iter(|| wgquick::parse(black_box(&text), &opts).expect("parses"));
    });
    group.bench_function(format!("parse_lossless/{PEERS}"), |b| {
        b.iter(|| ParsedConfig::parse(black_box(&text), &opts).expect("parses"));
    });
    group.finish();
}

criterion_group!(benches, wgquick);
criterion_main!(benches);
