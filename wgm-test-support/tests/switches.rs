//! `require` seen from outside, as `cargo test` runs it: this binary runs its own ignored
//! `child_*` tests in a child process with chosen switches, and checks the exit status,
//! the visible `SKIPPED` line and the ledger.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use wgm_test_support::{require, Suite, LEDGER_ENV};

/// Run the ignored tests `tests` of this binary with `env` set (and every switch and the
/// ledger not in `env` removed), with output captured as `cargo test` does by default.
fn child(tests: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", "--test-threads=2"])
        .args(tests);
    for suite in Suite::ALL {
        cmd.env_remove(suite.switch());
    }
    cmd.env_remove(LEDGER_ENV);
    // As `cargo test` does (also when this binary is run by hand).
    cmd.env("CARGO_PKG_NAME", env!("CARGO_PKG_NAME"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ledger(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_switched_off_suite_skips_with_one_visible_line_per_binary() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("ledger");
    let out = child(
        &["child_postgres", "child_postgres_again", "child_netns"],
        &[
            (LEDGER_ENV, book.to_str().unwrap()),
            ("WGM_TEST_NETNS", "0"),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    // Not captured by the harness: on the process's stderr, once per suite.
    assert_eq!(
        stderr
            .matches("SKIPPED: the postgres tests of `wgm-test-support/switches`")
            .count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains("WGM_TEST_POSTGRES_URL is not set"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("SKIPPED: the netns tests").count(),
        1,
        "{stderr}"
    );
    assert!(!stdout.contains("GRANTED"), "{stdout}");
    let mut lines = ledger(&book);
    lines.sort();
    assert_eq!(
        lines,
        [
            "skipped\tnetns\twgm-test-support/switches\tchild_netns",
            "skipped\tpostgres\twgm-test-support/switches\tchild_postgres",
            "skipped\tpostgres\twgm-test-support/switches\tchild_postgres_again",
        ]
    );
}

#[test]
fn a_switched_on_suite_whose_service_is_missing_fails() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("ledger");
    for (switch, url) in [
        (
            "WGM_TEST_POSTGRES_URL",
            "postgres://wgm:hunter2@127.0.0.1:1/db",
        ),
        ("WGM_TEST_REDIS_URL", "redis://:hunter2@127.0.0.1:1"),
    ] {
        let out = child(
            &["child_postgres", "child_redis"],
            &[(LEDGER_ENV, book.to_str().unwrap()), (switch, url)],
        );
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{stdout}{stderr}");
        let all = format!("{stdout}{stderr}");
        assert!(all.contains("suite is switched on"), "{all}");
        assert!(all.contains("nothing answers at 127.0.0.1:1"), "{all}");
        assert!(all.contains(&format!("unset {switch}")), "{all}");
        assert!(
            !all.contains("hunter2"),
            "the URL's password is shown: {all}"
        );
        assert!(!all.contains("GRANTED"), "{all}");
    }
    let mut lines = ledger(&book);
    lines.sort();
    assert_eq!(
        lines,
        [
            "missing\tpostgres\twgm-test-support/switches\tchild_postgres",
            "missing\tredis\twgm-test-support/switches\tchild_redis",
            "skipped\tpostgres\twgm-test-support/switches\tchild_postgres",
            "skipped\tredis\twgm-test-support/switches\tchild_redis",
        ]
    );
}

#[test]
fn a_switched_on_netns_suite_fails_without_its_tools_or_with_a_bad_value() {
    for value in ["1", "yes"] {
        let out = child(&["child_netns_missing_tool"], &[("WGM_TEST_NETNS", value)]);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{value}: {stdout}{stderr}");
        let all = format!("{stdout}{stderr}");
        assert!(
            all.contains(&format!(
                "the netns suite is switched on (WGM_TEST_NETNS={value})"
            )),
            "{all}"
        );
        // As root the tool is what is missing; otherwise root is.
        assert!(
            all.contains("`wgm-no-such-tool` is not on PATH")
                || all.contains("does not run as root")
                || all.contains("neither 1 (on) nor 0"),
            "{all}"
        );
    }
}

#[test]
fn a_switched_off_kernel_suite_skips_and_names_the_vm() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("ledger");
    let out = child(
        &["child_kernel"],
        &[
            (LEDGER_ENV, book.to_str().unwrap()),
            ("WGM_TEST_KERNEL", "0"),
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stderr
            .matches("SKIPPED: the kernel tests of `wgm-test-support/switches`")
            .count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("WGM_TEST_KERNEL=1"), "{stderr}");
    assert!(stderr.contains(".ci/vm"), "{stderr}");
    assert_eq!(
        ledger(&book),
        ["skipped\tkernel\twgm-test-support/switches\tchild_kernel"]
    );
}

#[test]
fn a_switched_on_kernel_suite_fails_without_wireguard_or_with_a_bad_value() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("ledger");
    // Where the module is there (the VM of .ci/vm) and this runs as root, `1` runs.
    let granted = Path::new("/sys/module/wireguard").exists()
        && std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    for value in ["1", "yes"] {
        let out = child(
            &["child_kernel", "--nocapture"],
            &[
                (LEDGER_ENV, book.to_str().unwrap()),
                ("WGM_TEST_KERNEL", value),
            ],
        );
        let (stdout, stderr) = text(&out);
        let all = format!("{stdout}{stderr}");
        if value == "1" && granted {
            assert!(out.status.success(), "{all}");
            assert!(stdout.contains("GRANTED kernel"), "{all}");
            continue;
        }
        assert!(!out.status.success(), "{value}: {all}");
        assert!(
            all.contains(&format!(
                "the kernel suite is switched on (WGM_TEST_KERNEL={value})"
            )),
            "{all}"
        );
        assert!(
            (all.contains("`wireguard` module") && all.contains(".ci/vm"))
                || all.contains("does not run as root")
                || all.contains("neither 1 (on) nor 0"),
            "{all}"
        );
        assert!(all.contains("unset WGM_TEST_KERNEL"), "{all}");
        assert!(!all.contains("GRANTED"), "{all}");
    }
    let outcome = if granted { "ran" } else { "missing" };
    assert_eq!(
        ledger(&book),
        [
            format!("{outcome}\tkernel\twgm-test-support/switches\tchild_kernel"),
            "missing\tkernel\twgm-test-support/switches\tchild_kernel".to_owned(),
        ]
    );
}

#[test]
fn a_switched_on_suite_whose_service_answers_runs_and_is_counted() {
    // A stand-in PostgreSQL that answers the SSLRequest with "N" (no TLS).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 8];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
        s.write_all(b"N").unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("ledger");
    let url = format!("postgres://wgm@{addr}/db");
    let out = child(
        &["child_postgres", "--nocapture"],
        &[
            (LEDGER_ENV, book.to_str().unwrap()),
            ("WGM_TEST_POSTGRES_URL", &url),
        ],
    );
    server.join().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("GRANTED {url}")), "{stdout}");
    assert!(!stderr.contains("SKIPPED"), "{stderr}");
    assert_eq!(
        ledger(&book),
        ["ran\tpostgres\twgm-test-support/switches\tchild_postgres"]
    );
}

#[test]
#[ignore = "run in a child process by the tests above"]
fn child_postgres() {
    let Some(pg) = require(Suite::Postgres, &[]) else {
        return;
    };
    println!("GRANTED {}", pg.url());
}

#[test]
#[ignore = "run in a child process by the tests above"]
fn child_postgres_again() {
    let Some(pg) = require(Suite::Postgres, &[]) else {
        return;
    };
    println!("GRANTED {}", pg.url());
}

#[test]
#[ignore = "run in a child process by the tests above"]
fn child_redis() {
    let Some(redis) = require(Suite::Redis, &[]) else {
        return;
    };
    println!("GRANTED {}", redis.url());
}

#[test]
#[ignore = "run in a child process by the tests above"]
fn child_netns() {
    let Some(_netns) = require(Suite::Netns, &["sh"]) else {
        return;
    };
    println!("GRANTED netns");
}

#[test]
#[ignore = "run in a child process by the tests above"]
fn child_kernel() {
    let Some(_kernel) = require(Suite::Kernel, &["sh"]) else {
        return;
    };
    println!("GRANTED kernel");
}

#[test]
#[ignore = "run in a child process by the tests above"]
fn child_netns_missing_tool() {
    let Some(_netns) = require(Suite::Netns, &["sh", "wgm-no-such-tool"]) else {
        return;
    };
    println!("GRANTED netns");
}
