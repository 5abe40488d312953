//! Key generation: keypairs per second in-process vs the real tools, side by side.
//!
//! `keys/keypairs/in_process` makes [`BATCH`] keypairs with
//! `wgm_core::keys::PrivateKey::generate()` + `public_key()` (x25519 on the OS RNG);
//! `keys/keypairs/wg_genkey_pubkey` makes the same number the way shell scripts do,
//! `wg genkey | wg pubkey`, as two processes per keypair run with argv only (no shell):
//! `wg genkey`, then `wg pubkey` with the private key written to its stdin. Both report
//! keypairs per second (criterion's `thrpt`), and a last line gives the ratio. Before
//! measuring, one keypair made by the tools is checked against wgm's derivation of the
//! same private key, so both sides provably compute the same thing. The tool half is
//! skipped with one printed line when `wg` is not on `PATH`.
//!
//! Run: `cargo bench -p wgm-benches --bench keys`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::io::{ErrorKind, Write};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use wgm_core::keys::PrivateKey;

/// Keypairs per timed iteration, the same on both sides.
const BATCH: u64 = 100;

/// Timed totals `(time, keypairs)` per side, for the closing ratio line. They include
/// criterion's warm-up calls, which time the same work.
static TOTALS: Mutex<[(Duration, u64); 2]> = Mutex::new([(Duration::ZERO, 0); 2]);
const IN_PROCESS: usize = 0;
const TOOLS: usize = 1;

fn record(side: usize, elapsed: Duration, keypairs: u64) {
    let mut t = TOTALS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    t[side].0 += elapsed;
    t[side].1 += keypairs;
}

/// `wg` answers `--version`: the tools are installed and runnable.
fn wg_available() -> bool {
    match Command::new("wg")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out.status.success(),
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => panic!("could not run `wg --version`: {e}"),
    }
}

/// One keypair from `wg genkey` and `wg pubkey` (private key on stdin), as base64 text.
fn wg_keypair() -> (String, String) {
    let out = Command::new("wg")
        .arg("genkey")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("`wg genkey` runs");
    assert!(out.status.success(), "`wg genkey` failed: {}", out.status);
    let private = String::from_utf8(out.stdout).expect("`wg genkey` prints base64");
    let private = private.trim_end().to_owned();

    let mut child = Command::new("wg")
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("`wg pubkey` starts");
    {
        let mut stdin = child.stdin.take().expect("stdin was piped");
        stdin
            .write_all(private.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"))
            .expect("`wg pubkey` reads its stdin");
        // Dropping stdin closes it: `wg pubkey` reads to end of file.
    }
    let out = child.wait_with_output().expect("`wg pubkey` finishes");
    assert!(out.status.success(), "`wg pubkey` failed: {}", out.status);
    let public = String::from_utf8(out.stdout).expect("`wg pubkey` prints base64");
    (private, public.trim_end().to_owned())
}

/// The tools and wgm agree on the public key of a private key made by the tools.
fn check_tools_agree() {
    let (private, public) = wg_keypair();
    let ours = PrivateKey::from_base64(&private)
        .expect("`wg genkey` output parses as a private key")
        .public_key()
        .to_base64();
    assert_eq!(
        ours, public,
        "wgm and `wg pubkey` derive different public keys"
    );
}

// Rates are printed to three significant digits: u64 -> f64 loses nothing that shows.
#[allow(clippy::cast_precision_loss)]
fn keypairs(c: &mut Criterion) {
    let tools = wg_available();
    if tools {
        check_tools_agree();
    } else {
        eprintln!("skipping: `wg` is not on PATH; only the in-process half runs");
    }

    let mut group = c.benchmark_group("keys/keypairs");
    group.throughput(Throughput::Elements(BATCH));
    // One tool-made batch takes ~0.3 s: flat sampling of 10 keeps the pair under ~15 s.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));

    group.bench_function("in_process", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                for _ in 0..BATCH {
                    let k = PrivateKey::generate();
                    black_box(k.public_key());
                }
            }
            let elapsed = start.elapsed();
            record(IN_PROCESS, elapsed, iters * BATCH);
            elapsed
        });
    });

    if tools {
        group.bench_function("wg_genkey_pubkey", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..BATCH {
                        black_box(wg_keypair());
                    }
                }
                let elapsed = start.elapsed();
                record(TOOLS, elapsed, iters * BATCH);
                elapsed
            });
        });
    }
    group.finish();

    let t = *TOTALS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rate = |(d, n): (Duration, u64)| n as f64 / d.as_secs_f64();
    let ours = rate(t[IN_PROCESS]);
    if tools && t[TOOLS].1 > 0 {
        let theirs = rate(t[TOOLS]);
        println!(
            "keys/keypairs: in-process {ours:.0} keypairs/s, `wg genkey` + `wg pubkey` \
             {theirs:.1} keypairs/s: in-process is {:.0}x faster",
            ours / theirs
        );
    } else {
        println!("keys/keypairs: in-process {ours:.0} keypairs/s");
    }
}

criterion_group!(benches, keypairs);
criterion_main!(benches);
