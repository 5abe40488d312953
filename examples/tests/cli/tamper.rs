//! Tampering with the SQLite store behind the binary's back: `wgm audit --verify` must
//! fail (exit 5, one line naming the record), and `--expect` with a head printed earlier
//! must catch what the stored head alone cannot.

use serde_json::Value;
use sqlx::Connection;

use crate::harness::Env;

/// Run SQL statements on the test's SQLite file, as someone with write access to it.
fn sql(env: &Env, statements: &[&str]) {
    let url = env.store.clone();
    let statements: Vec<String> = statements.iter().map(|s| (*s).to_owned()).collect();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async move {
            let mut c = sqlx::SqliteConnection::connect(&url).await.expect("open");
            for s in &statements {
                sqlx::query(s).execute(&mut c).await.expect("tamper");
            }
            c.close().await.expect("close");
        });
}

/// A store with a server, two peers and a secret export: 4 audit records.
fn populated() -> Env {
    let env = Env::new();
    env.server("office", 51820);
    env.ok(&["peer", "add", "office", "alice"]);
    env.ok(&["peer", "add", "office", "bob"]);
    env.ok(&["peer", "config", "office", "alice"]);
    env
}

fn verify(env: &Env) -> Value {
    env.json(&["audit", "--verify"])
}

#[test]
fn verify_prints_the_head_and_takes_it_back() {
    let env = populated();
    let v = verify(&env);
    assert_eq!(v["records"], 4);
    assert_eq!(v["legacy_records"], 0);
    assert_eq!(v["head_seq"], 4);
    let head = v["head"].as_str().expect("head").to_owned();
    assert_eq!(
        head,
        format!("4:{}", v["head_hash"].as_str().expect("hash"))
    );
    let human = env.ok(&["audit", "--verify"]);
    assert!(
        human.contains("audit chain intact: 4 records") && human.contains(&head),
        "{human}"
    );
    // The head printed then is still there after more records.
    env.ok(&["peer", "add", "office", "carol"]);
    let later = env.ok(&["audit", "--verify", "--expect", &head]);
    assert!(later.contains(&format!("expected head {head}")), "{later}");
    // Malformed heads are refused as input, naming the option.
    for bad in ["4", "x:00", &format!("4:{}", &head[2..10])] {
        let e = env.fails(&["audit", "--verify", "--expect", bad], 2);
        assert!(e.contains("audit.expect"), "{e}");
    }
    // --expect only goes with --verify.
    let r = env.run(&["audit", "--expect", &head]);
    assert_ne!(r.code, 0);
    // The format is documented in --help.
    let help = env.ok(&["audit", "--help"]);
    assert!(
        help.contains("SEQ:HASH") && help.contains("--expect"),
        "{help}"
    );
}

#[test]
fn deleting_the_newest_record_fails_verification() {
    let env = populated();
    verify(&env);
    sql(
        &env,
        &["DELETE FROM audit WHERE seq = (SELECT max(seq) FROM audit)"],
    );
    let e = env.fails(&["audit", "--verify"], 4);
    assert!(
        e.contains("ends at record 3") && e.contains("stored head is record 4"),
        "{e}"
    );
}

#[test]
fn deleting_the_newest_three_records_fails_verification() {
    let env = populated();
    sql(&env, &["DELETE FROM audit WHERE seq > 1"]);
    let e = env.fails(&["audit", "--verify"], 4);
    assert!(e.contains("ends at record 1"), "{e}");
}

#[test]
fn a_rewritten_head_is_caught_with_an_exported_head() {
    let env = populated();
    let exported = verify(&env)["head"].as_str().expect("head").to_owned();
    // Delete the newest two records and move the stored head back to record 2.
    sql(
        &env,
        &[
            "DELETE FROM audit WHERE seq > 2",
            "UPDATE audit_head SET seq = 2, hash = (SELECT hash FROM audit WHERE seq = 2)",
        ],
    );
    // The stored head agrees with the log now: without a copy kept elsewhere, intact.
    assert_eq!(verify(&env)["records"], 2);
    // With the head exported before, caught.
    let e = env.fails(&["audit", "--verify", "--expect", &exported], 4);
    assert!(e.contains("expected head, record 4"), "{e}");
}

#[test]
fn an_edited_filter_column_fails_verification() {
    for (column, edit) in [
        (
            "actor",
            "UPDATE audit SET actor = 'local:nobody' WHERE seq = 2",
        ),
        (
            "object",
            "UPDATE audit SET object = 'elsewhere' WHERE seq = 2",
        ),
        ("at_ns", "UPDATE audit SET at_ns = at_ns + 1 WHERE seq = 2"),
        (
            "server_id",
            "UPDATE audit SET server_id = NULL WHERE seq = 2",
        ),
    ] {
        let env = populated();
        sql(&env, &[edit]);
        let e = env.fails(&["audit", "--verify"], 4);
        assert!(
            e.contains("record 2") && e.contains(&format!("column {column}")),
            "{column}: {e}"
        );
    }
}
