//! Input limits through the `Manager`, at every entry point of the value: DNS lists
//! (server and client template, on create, import and update), API token names, a
//! server's `config_path` and user e-mail addresses. Each refusal names the field and
//! writes nothing.

// Tests panic on unexpected results by design.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use wgm_core::manager::{
    ImportOptions, LocalAdmin, Manager, ManagerConfig, NewServer, NewToken, NewUser, ServerUpdate,
};
use wgm_core::model::{AuditQuery, ClientTemplate, UserId};
use wgm_core::names::{InterfaceName, RoleName, ServerName, UserName};
use wgm_core::net::{DnsEntry, ListenPort, MAX_DNS_ENTRIES};
use wgm_core::rbac::Principal;
use wgm_core::seal::{MasterKey, Sealer};
use wgm_core::store::{AuditStore, MemoryStore, ServerStore};
use wgm_core::{auth, Error};

fn block<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

fn new_manager() -> (Manager, Arc<MemoryStore>, LocalAdmin) {
    let store = Arc::new(MemoryStore::new());
    let (m, cap) = Manager::builder(store.clone(), Sealer::new(MasterKey::generate()))
        .config(ManagerConfig {
            password_params: auth::password::PasswordParams::insecure_for_tests(),
            ..ManagerConfig::default()
        })
        .build_with_local_admin();
    (m, store, cap)
}

fn spec(name: &str) -> NewServer {
    let mut s = NewServer::new(
        ServerName::new(name).unwrap(),
        InterfaceName::new(format!("wg-{name}")).unwrap(),
        ListenPort::new(51820).unwrap(),
    );
    s.ipv6_pool = Some("fd12:3456:789a:1::/64".parse().unwrap());
    s
}

fn dns(n: usize) -> Vec<DnsEntry> {
    (1..=n)
        .map(|i| format!("fd00::{i:x}").parse().unwrap())
        .collect()
}

/// The field of an `InvalidInput` (or `Parse`) error.
fn field(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Err(Error::InvalidInput { field, .. } | Error::Parse { field, .. }) => field.into_owned(),
        other => panic!("expected invalid input, got {other:?}"),
    }
}

/// Everything a refusal must leave unchanged: servers and the audit log.
async fn written(store: &MemoryStore) -> (usize, usize) {
    let servers = store
        .list_servers(wgm_core::model::Page::first(1000))
        .await
        .unwrap()
        .len();
    let audit = store
        .query_audit(&AuditQuery::default())
        .await
        .unwrap()
        .len();
    (servers, audit)
}

#[test]
fn dns_lists_are_checked_on_create_import_and_update() {
    let (m, store, cap) = new_manager();
    let admin = cap.principal("root");
    block(async {
        // Create: 16 is fine, 17 is not; a repeat names its index; the template too.
        let mut over = spec("over");
        over.dns = dns(MAX_DNS_ENTRIES + 1);
        assert_eq!(field(m.create_server(&admin, over).await), "server.dns");
        let mut twice = spec("twice");
        twice.dns = vec![dns(1)[0].clone(), "lan".parse().unwrap(), dns(1)[0].clone()];
        assert_eq!(field(m.create_server(&admin, twice).await), "server.dns[2]");
        let mut tpl = spec("tpl");
        tpl.client_template = ClientTemplate {
            dns: Some(vec![DnsEntry::SearchDomain("Not.Lowercase".into())]),
            ..ClientTemplate::default()
        };
        assert_eq!(
            field(m.create_server(&admin, tpl).await),
            "server.client_template.dns[0]"
        );
        assert_eq!(written(&store).await, (0, 0), "nothing written");

        let mut ok = spec("office");
        ok.dns = dns(MAX_DNS_ENTRIES);
        let s = m.create_server(&admin, ok).await.unwrap();
        let before = written(&store).await;

        // Update: the server's list and the template's.
        let u = ServerUpdate {
            dns: Some(dns(MAX_DNS_ENTRIES + 1)),
            ..ServerUpdate::default()
        };
        assert_eq!(field(m.update_server(&admin, s.id, u).await), "server.dns");
        let u = ServerUpdate {
            client_template: Some(ClientTemplate {
                dns: Some(vec!["1.1.1.1".parse().unwrap(), "1.1.1.1".parse().unwrap()]),
                ..ClientTemplate::default()
            }),
            ..ServerUpdate::default()
        };
        assert_eq!(
            field(m.update_server(&admin, s.id, u).await),
            "server.client_template.dns[1]"
        );
        assert_eq!(written(&store).await, before, "nothing written");

        // Import: the parser refuses a repeat with its line.
        let key = wgm_core::keys::PrivateKey::generate().expose_base64();
        let text = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 51821\nAddress = fd00:1::1/64\nDNS = lan, LAN\n",
            key.as_str()
        );
        let r = m
            .import_server(
                &admin,
                ServerName::new("imported").unwrap(),
                &text,
                ImportOptions::default(),
            )
            .await;
        assert_eq!(field(r), "Interface.DNS");
        assert_eq!(written(&store).await, before, "nothing written");
    });
}

#[test]
fn config_path_is_limited() {
    let (m, store, cap) = new_manager();
    let admin = cap.principal("root");
    block(async {
        let mut bad = spec("bad");
        bad.config_path = Some("/etc/wireguard/wg0.conf\nPostUp = id".into());
        assert_eq!(
            field(m.create_server(&admin, bad).await),
            "server.config_path"
        );
        let mut ok = spec("office");
        ok.config_path = Some("/etc/wireguard/wg-office.conf".into());
        let s = m.create_server(&admin, ok).await.unwrap();
        let before = written(&store).await;
        let u = ServerUpdate {
            config_path: Some(Some(format!("/{}", "a".repeat(5000)))),
            ..ServerUpdate::default()
        };
        assert_eq!(
            field(m.update_server(&admin, s.id, u).await),
            "server.config_path"
        );
        assert_eq!(written(&store).await, before);
    });
}

async fn user(m: &Manager, admin: &Principal, name: &str) -> UserId {
    m.create_user(
        admin,
        NewUser::new(
            UserName::new(name).unwrap(),
            RoleName::new("operator").unwrap(),
        ),
    )
    .await
    .unwrap()
    .id
}

#[test]
fn token_names_follow_the_name_rules() {
    let (m, store, cap) = new_manager();
    let admin = cap.principal("root");
    block(async {
        let op = user(&m, &admin, "op").await;
        let before = written(&store).await;
        let long = "x".repeat(65);
        for bad in [
            "",
            " padded",
            "padded ",
            "a\nb",
            "ci\u{202e}yolped",
            "a\u{200b}b",
            "a\u{ad}b",
            long.as_str(),
        ] {
            let spec = NewToken {
                user: op,
                name: bad.into(),
                scopes: None,
                expires_at: None,
            };
            assert_eq!(
                field(m.create_token(&admin, spec).await),
                "token.name",
                "{bad:?}"
            );
        }
        assert_eq!(written(&store).await, before, "nothing written");
        let (view, _) = m
            .create_token(
                &admin,
                NewToken {
                    user: op,
                    name: "ci deploy".into(),
                    scopes: None,
                    expires_at: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(view.name, "ci deploy");
    });
}

#[test]
fn emails_refuse_invisible_characters() {
    let (m, _store, cap) = new_manager();
    let admin = cap.principal("root");
    block(async {
        for bad in ["eve\u{202e}gro@example.org", "a\u{200b}@example.org"] {
            let mut u = NewUser::new(
                UserName::new("eve").unwrap(),
                RoleName::new("operator").unwrap(),
            );
            u.email = Some(bad.into());
            assert_eq!(field(m.create_user(&admin, u).await), "user.email");
        }
    });
}
