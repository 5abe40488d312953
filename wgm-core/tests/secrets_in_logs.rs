//! F20: run a whole workflow with TRACE logging and look for every secret it generated —
//! private keys and PSKs (base64 and hex), the master key, passwords, TOTP seeds, JWTs,
//! API tokens — in the logs, in errors, in revisions and in audit records.

#![allow(clippy::format_push_string)] // The dump is test scaffolding, built for grepping.

use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use wgm_core::auth::totp::{Totp, TotpSecret};
use wgm_core::backend::MemoryWireGuard;
use wgm_core::manager::{ApplyOptions, Host};
use wgm_core::manager::{Manager, ManagerConfig, NewPeer, NewServer, NewToken, NewUser};
use wgm_core::model::{AuditQuery, RevisionNo};
use wgm_core::names::{InterfaceName, PeerName, RoleName, ServerName, UserName};
use wgm_core::net::ListenPort;
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::MemoryStore;
use wgm_core::wgquick::{self, ParseOptions};

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

#[test]
fn no_secret_reaches_logs_errors_revisions_or_audit() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    let mut secrets: Vec<String> = Vec::new();
    let master = MasterKey::generate();
    secrets.push(master.expose_base64().to_string());
    secrets.push(hex::encode(master.expose_bytes()));
    let store = Arc::new(MemoryStore::new());
    let issuer =
        wgm_core::auth::jwt::JwtIssuer::new(wgm_core::auth::jwt::JwtKey::generate(), "wgm", "wgm")
            .unwrap();
    let (m, local) = Manager::builder(store.clone(), Sealer::new(master))
        .config(ManagerConfig {
            password_params: wgm_core::auth::password::PasswordParams::insecure_for_tests(),
            ..ManagerConfig::default()
        })
        .jwt(issuer)
        .build_with_local_admin();
    let mut debug_dump = String::new();
    tracing::subscriber::with_default(subscriber, || {
        futures::executor::block_on(async {
            let admin = local.principal("root");
            let mut spec = NewServer::new(
                ServerName::new("f20").unwrap(),
                InterfaceName::new("wg0").unwrap(),
                ListenPort::new(51820).unwrap(),
            );
            spec.ipv4_pool = Some("10.8.0.0/24".parse().unwrap());
            let s = m.create_server(&admin, spec).await.unwrap();
            let mut ids = Vec::new();
            for name in ["a", "b", "c"] {
                ids.push(
                    m.add_peer(&admin, s.id, NewPeer::new(PeerName::new(name).unwrap()))
                        .await
                        .unwrap()
                        .id,
                );
            }
            // Exports: collect the secrets they reveal.
            let server_text = m.server_config(&admin, s.id).await.unwrap();
            let sc = wgquick::parse(&server_text, &ParseOptions::default()).unwrap();
            let sk = sc.interface.private_key.as_ref().unwrap();
            secrets.push(sk.expose_base64().to_string());
            secrets.push(sk.expose_hex().to_string());
            for id in &ids {
                let cfg = m.client_config(&admin, s.id, *id).await.unwrap();
                let c = wgquick::parse(&cfg.text, &ParseOptions::default()).unwrap();
                let pk = c.interface.private_key.as_ref().unwrap();
                secrets.push(pk.expose_base64().to_string());
                secrets.push(pk.expose_hex().to_string());
                let psk = c.peers[0].preshared_key.as_ref().unwrap();
                secrets.push(psk.expose_base64().to_string());
                secrets.push(psk.expose_hex().to_string());
            }
            // Apply through a backend (deltas with keys are traced).
            let wg = Arc::new(MemoryWireGuard::new());
            let host = Host::new("h", wg.clone(), Some(Arc::new(wg.network())));
            let report = m
                .apply(&admin, s.id, &host, ApplyOptions::default())
                .await
                .unwrap();
            assert!(report.converged);
            debug_dump.push_str(&format!(
                "{report:?}\n{}\n",
                serde_json::to_string(&report).unwrap()
            ));
            let st = m.status(&admin, s.id, &host).await.unwrap();
            debug_dump.push_str(&format!("{st:?}\n"));
            // Users, passwords, TOTP, JWT, tokens.
            let password = "a long and secret passphrase 7";
            secrets.push(password.to_owned());
            let mut nu = NewUser::new(
                UserName::new("alice").unwrap(),
                RoleName::new("operator").unwrap(),
            );
            nu.password = Some(zeroize::Zeroizing::new(password.to_owned()));
            let alice = m.create_user(&admin, nu).await.unwrap();
            let src: IpAddr = "192.0.2.1".parse().unwrap();
            let login = m.login("alice", password, None, src).await.unwrap();
            secrets.push(login.access_token.to_string());
            secrets.push(login.refresh_token.to_string());
            debug_dump.push_str(&format!("{login:?}\n"));
            let p = m.authenticate_jwt(&login.access_token).await.unwrap();
            let uri = m.enroll_totp(&p, alice.id, "wgm").await.unwrap();
            let seed = uri
                .split("secret=")
                .nth(1)
                .unwrap()
                .split('&')
                .next()
                .unwrap()
                .to_owned();
            secrets.push(seed.clone());
            let totp = TotpSecret::from_base32(&seed).unwrap();
            secrets.push(hex::encode(totp.expose_bytes()));
            let now = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap();
            m.confirm_totp(&p, alice.id, &Totp::default().code_at(&totp, now))
                .await
                .unwrap();
            let (tv, token) = m
                .create_token(
                    &p,
                    NewToken {
                        user: alice.id,
                        name: "ci".into(),
                        scopes: None,
                        expires_at: None,
                    },
                )
                .await
                .unwrap();
            secrets.push(token.to_string());
            debug_dump.push_str(&format!("{tv:?}\n{p:?}\n"));
            // Failures must not echo secrets either.
            let errs = [
                m.login("alice", "wrong but long password", None, src)
                    .await
                    .unwrap_err()
                    .to_string(),
                m.authenticate_token(&format!("{}x", &*token))
                    .await
                    .unwrap_err()
                    .to_string(),
                m.authenticate_jwt(&login.refresh_token)
                    .await
                    .unwrap_err()
                    .to_string(),
                wgm_core::keys::PublicKey::from_base64(&sk.expose_base64()[..43])
                    .unwrap_err()
                    .to_string(),
                wgm_core::keys::PrivateKey::from_base64(&format!("{}=", &sk.expose_base64()[..43]))
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
            ];
            for e in &errs {
                debug_dump.push_str(e);
                debug_dump.push('\n');
            }
            // Revisions and audit records as stored.
            let revs = m
                .history(&admin, s.id, RevisionNo::NONE, 100)
                .await
                .unwrap();
            debug_dump.push_str(&serde_json::to_string(&revs).unwrap());
            let audit = m.audit_log(&admin, &AuditQuery::default()).await.unwrap();
            debug_dump.push_str(&serde_json::to_string(&audit).unwrap());
            debug_dump.push_str(&format!("{m:?}"));
        });
    });
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("committed"),
        "the workflow logged nothing: TRACE capture is not working"
    );
    assert!(
        logs.contains("plan deltas"),
        "the apply path logged no deltas"
    );
    assert!(secrets.len() >= 20);
    for secret in &secrets {
        assert!(!secret.is_empty());
        assert!(
            !logs.contains(secret.as_str()),
            "a secret appeared in the TRACE logs"
        );
        assert!(
            !debug_dump.contains(secret.as_str()),
            "a secret appeared in Debug/JSON/errors/revisions/audit"
        );
    }
}
