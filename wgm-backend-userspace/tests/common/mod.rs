//! Helpers shared by the tests that drive real tools in network namespaces: when to
//! skip, running a program (an argv, never a shell), polling for readiness.
//!
//! Each test binary uses a part of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Why `what` cannot run here, if it cannot: `WGM_TEST_NETNS=1` unset, not root, or one
/// of `tools` missing from `PATH`.
pub fn skip_reason(what: &str, tools: &[&str]) -> Option<String> {
    if std::env::var("WGM_TEST_NETNS").as_deref() != Ok("1") {
        return Some(format!(
            "set WGM_TEST_NETNS=1 to run {what} (root, wireguard-go)"
        ));
    }
    if !rustix::process::geteuid().is_root() {
        return Some(format!("{what} need root"));
    }
    for tool in tools {
        if find_in_path(tool).is_none() {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// Return from the test with one printed line when [`skip_reason`] gives a reason.
macro_rules! skip_unless_netns {
    ($what:expr, $tools:expr) => {
        if let Some(reason) = common::skip_reason($what, $tools) {
            eprintln!("skipping: {reason}");
            return;
        }
    };
}
pub(crate) use skip_unless_netns;

/// `tool` on `PATH`.
pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Run a program with no stdin and collect its output.
pub fn output(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Run a program; its stdout, or a panic with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = output(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tool output is UTF-8")
}

/// Poll `f` every 50 ms until it returns true, at most `limit` (a bound for readiness,
/// not a timing assertion).
pub async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
