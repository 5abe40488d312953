//! The manager logs the audit log's new head after every write (`audit_head=SEQ:HASH`),
//! so that a log collector keeps a copy outside the store for `wgm audit --verify
//! --expect`. Alone in its binary: tracing caches per call site whether anyone listens,
//! and a test without a subscriber running first on another thread would hide events.

use std::io::Write;
use std::sync::{Arc, Mutex};

use wgm_core::integrity::AuditHead;
use wgm_core::manager::{Manager, NewPeer, NewServer, NewUser};
use wgm_core::model::RevisionNo;
use wgm_core::names::{InterfaceName, PeerName, RoleName, ServerName, UserName};
use wgm_core::net::ListenPort;
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::MemoryStore;

fn block<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The heads logged, in order (`audit_head=SEQ:HASH` fields of "audit head" events).
fn logged_heads(capture: &Capture) -> Vec<AuditHead> {
    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .filter(|l| l.contains("audit head"))
        .map(|l| {
            let field = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("audit_head="))
                .unwrap_or_else(|| panic!("no audit_head field: {l}"));
            field.parse().unwrap()
        })
        .collect()
}

#[test]
fn every_write_logs_the_new_audit_head() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let (m, local) = Manager::builder(
            Arc::new(MemoryStore::new()),
            Sealer::new(MasterKey::generate()),
        )
        .build_with_local_admin();
        let admin = local.principal("root");
        let mut spec = NewServer::new(
            ServerName::new("s").unwrap(),
            InterfaceName::new("wg0").unwrap(),
            ListenPort::new(51820).unwrap(),
        );
        spec.ipv4_pool = Some("10.8.0.0/24".parse().unwrap());
        let sid = block(m.create_server(&admin, spec)).unwrap().id;
        // Server commits, an appended record (a secret export), an identity commit and a
        // rollback.
        let mut first = None;
        for n in ["a", "b", "c"] {
            let p =
                block(m.add_peer(&admin, sid, NewPeer::new(PeerName::new(n).unwrap()))).unwrap();
            first.get_or_insert(p.id);
        }
        block(m.client_config(&admin, sid, first.unwrap())).unwrap();
        block(m.create_user(
            &admin,
            NewUser::new(
                UserName::new("u").unwrap(),
                RoleName::new("auditor").unwrap(),
            ),
        ))
        .unwrap();
        block(m.rollback(&admin, sid, RevisionNo(2))).unwrap();
        let heads = logged_heads(&capture);
        let seqs: Vec<u64> = heads.iter().map(|h| h.seq).collect();
        assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
        let v = block(m.verify_audit_chain(&admin, None)).unwrap();
        assert_eq!(heads.last(), Some(&v.head));
        // Every logged head is one a later verification accepts.
        for h in &heads {
            block(m.verify_audit_chain(&admin, Some(h))).unwrap();
        }
    });
}
