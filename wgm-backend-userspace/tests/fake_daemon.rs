//! The UAPI client and the backend against fake daemons on unix sockets in a temporary
//! directory: large replies, truncated and garbage replies, errno, silence, dead daemons
//! (F15). No root needed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use wgm_backend_userspace::{
    uapi, ClientConfig, DaemonCommand, Errno, Error, Gone, UapiClient, UserspaceBackend,
    UserspaceConfig,
};
use wgm_core::backend::{DeviceDelta, PeerDelta, WireGuardBackend};
use wgm_core::keys::PrivateKey;
use wgm_core::names::InterfaceName;

fn iface() -> InterfaceName {
    InterfaceName::new("wgfake0").expect("valid name")
}

fn config(dir: &Path) -> ClientConfig {
    ClientConfig {
        socket_dir: dir.to_owned(),
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_millis(500),
        max_reply_bytes: 64 * 1024 * 1024,
    }
}

fn backend(dir: &Path) -> UserspaceBackend {
    UserspaceBackend::new(UserspaceConfig {
        client: config(dir),
        // Never started in these tests: every socket already has a (fake) daemon.
        daemon: DaemonCommand::wireguard_go().with_program("/nonexistent/wgm-test-daemon"),
        start_timeout: Duration::from_secs(2),
        stop_timeout: Duration::from_secs(2),
    })
}

/// What the fake daemon does with a connection.
#[derive(Clone)]
enum Behaviour {
    /// Read the request up to its blank line, then write this and keep the connection
    /// open (as wireguard-go does).
    Reply(Arc<Vec<u8>>),
    /// Read the request up to its blank line, write this, close.
    ReplyAndClose(Arc<Vec<u8>>),
    /// Read the first line of the request, answer this at once and close (a daemon that
    /// refuses a set part-way).
    RefuseEarly(Arc<Vec<u8>>),
    /// Read the request and never answer.
    Silent,
}

/// Start a fake daemon for `iface()` in `dir`; requests it receives are recorded.
fn serve(dir: &Path, behaviour: Behaviour) -> Arc<Mutex<Vec<Vec<u8>>>> {
    let path = dir.join("wgfake0.sock");
    let listener = UnixListener::bind(&path).expect("bind fake socket");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let behaviour = behaviour.clone();
            let record = Arc::clone(&record);
            tokio::spawn(async move { handle(stream, behaviour, record).await });
        }
    });
    seen
}

async fn read_request(stream: &mut UnixStream, first_line_only: bool) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) => return buf,
            Ok(_) => buf.push(byte[0]),
        }
        if first_line_only && buf.ends_with(b"\n") {
            return buf;
        }
        if buf.ends_with(b"\n\n") {
            return buf;
        }
    }
}

async fn handle(mut stream: UnixStream, behaviour: Behaviour, record: Arc<Mutex<Vec<Vec<u8>>>>) {
    let first_only = matches!(behaviour, Behaviour::RefuseEarly(_));
    let request = read_request(&mut stream, first_only).await;
    if request.is_empty() {
        return; // A probe: connect and close.
    }
    record.lock().expect("not poisoned").push(request);
    match behaviour {
        Behaviour::Reply(reply) => {
            let _ = stream.write_all(&reply).await;
            // Keep the connection open until the client closes it.
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        }
        Behaviour::ReplyAndClose(reply) | Behaviour::RefuseEarly(reply) => {
            let _ = stream.write_all(&reply).await;
        }
        Behaviour::Silent => {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    }
}

fn hexkey(i: usize) -> String {
    // Valid public keys, distinct per index.
    let key = PrivateKey::from_bytes({
        let mut b = [7u8; 32];
        b[1..9].copy_from_slice(&(i as u64).to_le_bytes()); // byte 0 is clamped
        b
    });
    key.public_key().to_hex()
}

/// A get reply with `peers` peers of two allowed IPs each, plus one peer with `many`
/// allowed IPs.
fn big_reply(peers: usize, many: usize) -> Vec<u8> {
    let mut s = String::from("private_key=");
    s.push_str(&"a8".repeat(32));
    s.push_str("\nlisten_port=51820\n");
    let peer = |s: &mut String, i: usize| {
        let _ = write!(
            s,
            "public_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=[2001:db8::1]:{}\n\
             last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes={i}\nrx_bytes={i}\n\
             persistent_keepalive_interval=0\n",
            hexkey(i),
            "00".repeat(32),
            1000 + i % 60_000,
        );
    };
    for i in 0..peers {
        peer(&mut s, i);
        let _ = writeln!(
            s,
            "allowed_ip=10.{}.{}.{}/32",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        );
        let _ = writeln!(s, "allowed_ip=fd00::{i:x}/128");
    }
    peer(&mut s, peers);
    for i in 0..many {
        let _ = writeln!(s, "allowed_ip=fd01::{i:x}/128");
    }
    s.push_str("errno=0\n\n");
    s.into_bytes()
}

#[tokio::test]
async fn large_replies_are_read_completely() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reply = big_reply(10_000, 10_000);
    eprintln!("reply of {} bytes", reply.len());
    serve(dir.path(), Behaviour::Reply(Arc::new(reply)));
    let client = UapiClient::new(config(dir.path()));
    let state = client.get(&iface()).await.expect("get");
    assert_eq!(state.peers.len(), 10_001);
    assert_eq!(state.listen_port, 51820);
    let many = state.peers.values().map(|p| p.allowed_ips.len()).max();
    assert_eq!(many, Some(10_000));
    assert!(
        state
            .peers
            .values()
            .filter(|p| p.allowed_ips.len() == 2)
            .count()
            == 10_000
    );

    // And through the backend.
    let live = backend(dir.path())
        .read_device(&iface())
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(live.peers.len(), 10_001);
}

#[tokio::test]
async fn set_sends_exactly_the_encoded_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seen = serve(
        dir.path(),
        Behaviour::Reply(Arc::new(b"errno=0\n\n".to_vec())),
    );
    let peer = PrivateKey::generate().public_key();
    let delta = DeviceDelta {
        listen_port: Some(5000),
        peers: vec![PeerDelta {
            allowed_ips: vec!["fd00::/64".parse().expect("net")],
            ..PeerDelta::new(peer)
        }],
        ..DeviceDelta::default()
    };
    backend(dir.path())
        .apply_device(&iface(), &delta)
        .await
        .expect("apply");
    let got = seen.lock().expect("not poisoned").clone();
    assert_eq!(got, vec![uapi::encode_set(&delta).to_vec()]);
}

#[tokio::test]
async fn truncated_replies_are_typed_errors() {
    let full = big_reply(3, 3);
    for cut in [0, 1, full.len() / 2, full.len() - 1] {
        let dir = tempfile::tempdir().expect("tempdir");
        serve(
            dir.path(),
            Behaviour::ReplyAndClose(Arc::new(full[..cut].to_vec())),
        );
        let client = UapiClient::new(config(dir.path()));
        let e = client.get(&iface()).await.expect_err("truncated");
        assert!(
            matches!(e, Error::Truncated { received } if received == cut),
            "cut {cut}: {e}"
        );
        // Through the trait: a backend error, not "no such device".
        let core = backend(dir.path())
            .read_device(&iface())
            .await
            .expect_err("truncated");
        assert_eq!(core.code(), "backend", "{core}");
    }
}

#[tokio::test]
async fn garbage_replies_are_malformed() {
    let dir = tempfile::tempdir().expect("tempdir");
    serve(
        dir.path(),
        Behaviour::Reply(Arc::new(b"HTTP/1.1 200 OK\n\n".to_vec())),
    );
    let e = UapiClient::new(config(dir.path()))
        .get(&iface())
        .await
        .expect_err("garbage");
    assert!(
        matches!(e, Error::Malformed { .. } | Error::Truncated { .. }),
        "{e}"
    );
    let core = backend(dir.path())
        .read_device(&iface())
        .await
        .expect_err("garbage");
    assert!(matches!(core.code(), "parse" | "backend"), "{core}");
}

#[tokio::test]
async fn errno_replies_are_typed() {
    let dir = tempfile::tempdir().expect("tempdir");
    serve(
        dir.path(),
        Behaviour::Reply(Arc::new(b"errno=-22\n\n".to_vec())),
    );
    let client = UapiClient::new(config(dir.path()));
    let e = client
        .set(&iface(), &DeviceDelta::default())
        .await
        .expect_err("errno");
    assert!(matches!(e, Error::Errno(Errno::Invalid)), "{e}");
    let e = backend(dir.path())
        .apply_device(&iface(), &DeviceDelta::default())
        .await
        .expect_err("errno");
    assert_eq!(e.code(), "backend");
    assert!(e.to_string().contains("errno=-22"), "{e}");
}

#[tokio::test]
async fn port_in_use_is_a_conflict() {
    let dir = tempfile::tempdir().expect("tempdir");
    serve(
        dir.path(),
        Behaviour::Reply(Arc::new(b"errno=-98\n\n".to_vec())),
    );
    let delta = DeviceDelta {
        listen_port: Some(51820),
        ..DeviceDelta::default()
    };
    let e = backend(dir.path())
        .apply_device(&iface(), &delta)
        .await
        .expect_err("in use");
    assert_eq!(e.code(), "conflict");
}

#[tokio::test]
async fn a_refusal_part_way_through_a_large_set_is_reported_as_errno() {
    let dir = tempfile::tempdir().expect("tempdir");
    serve(
        dir.path(),
        Behaviour::RefuseEarly(Arc::new(b"errno=-22\n\n".to_vec())),
    );
    // Large enough that the daemon closes while the client is still writing.
    let peers = (0..20_000)
        .map(|i| PeerDelta {
            allowed_ips: vec![format!("fd00::{i:x}/128").parse().expect("net")],
            ..PeerDelta::new(PrivateKey::generate().public_key())
        })
        .collect();
    let delta = DeviceDelta {
        peers,
        ..DeviceDelta::default()
    };
    let e = UapiClient::new(config(dir.path()))
        .set(&iface(), &delta)
        .await
        .expect_err("refused");
    assert!(matches!(e, Error::Errno(Errno::Invalid)), "{e}");
}

#[tokio::test]
async fn a_silent_daemon_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    serve(dir.path(), Behaviour::Silent);
    let e = UapiClient::new(config(dir.path()))
        .get(&iface())
        .await
        .expect_err("silent");
    assert!(
        matches!(
            e,
            Error::Timeout {
                during: "reading from",
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn an_oversized_reply_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    serve(dir.path(), Behaviour::Reply(Arc::new(big_reply(2_000, 0))));
    let small = ClientConfig {
        max_reply_bytes: 64 * 1024,
        ..config(dir.path())
    };
    let e = UapiClient::new(small)
        .get(&iface())
        .await
        .expect_err("too large");
    assert!(matches!(e, Error::ReplyTooLarge { limit: 65_536 }), "{e}");
}

fn stale_socket(dir: &Path) -> PathBuf {
    // Bind and drop a listener: the file stays, nobody listens (a dead daemon).
    let path = dir.join("wgfake0.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    path
}

#[tokio::test]
async fn a_dead_daemon_reads_as_no_device() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = UapiClient::new(config(dir.path()));
    let b = backend(dir.path());

    // No socket at all.
    let e = client.get(&iface()).await.expect_err("no socket");
    assert!(
        matches!(
            e,
            Error::DaemonGone {
                reason: Gone::NoSocket,
                ..
            }
        ),
        "{e}"
    );
    assert!(b.read_device(&iface()).await.expect("read").is_none());
    let e = b
        .apply_device(&iface(), &DeviceDelta::default())
        .await
        .expect_err("absent");
    assert!(
        matches!(e, wgm_core::Error::NotFound { kind: "device", .. }),
        "{e}"
    );

    // A socket left behind by a dead daemon.
    let path = stale_socket(dir.path());
    let e = client.get(&iface()).await.expect_err("refused");
    assert!(
        matches!(
            e,
            Error::DaemonGone {
                reason: Gone::Refused,
                ..
            }
        ),
        "{e}"
    );
    assert!(b.read_device(&iface()).await.expect("read").is_none());
    assert!(b.list_devices().await.expect("list").is_empty());

    // delete_device cleans the stale socket up and is idempotent.
    b.delete_device(&iface()).await.expect("delete");
    assert!(!path.exists());
    b.delete_device(&iface()).await.expect("delete again");
}

#[tokio::test]
async fn the_next_call_after_a_restart_reaches_the_new_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = backend(dir.path());
    let path = stale_socket(dir.path());
    assert!(b.read_device(&iface()).await.expect("read").is_none());
    // "Restart": a new daemon replaces the stale socket.
    std::fs::remove_file(&path).expect("remove");
    serve(
        dir.path(),
        Behaviour::Reply(Arc::new(b"listen_port=7\nerrno=0\n\n".to_vec())),
    );
    let state = b.read_device(&iface()).await.expect("read").expect("back");
    assert_eq!(state.listen_port, 7);
    assert_eq!(b.list_devices().await.expect("list"), vec![iface()]);
}

#[tokio::test]
async fn create_fails_cleanly_when_the_daemon_cannot_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = backend(dir.path())
        .create_device(&iface())
        .await
        .expect_err("no daemon binary");
    assert_eq!(e.code(), "backend");
    assert!(e.to_string().contains("could not start"), "{e}");
}
