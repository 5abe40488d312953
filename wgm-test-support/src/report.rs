//! What [`crate::require`] tells the world: the `SKIPPED` line on standard error (once
//! per suite and test binary) and the ledger line of every call.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use crate::Suite;

/// The environment variable naming the ledger file (see the crate documentation).
pub const LEDGER_ENV: &str = "WGM_TEST_LEDGER";

/// The suites whose `SKIPPED` line this process has printed.
static SKIP_LINES: Mutex<Vec<Suite>> = Mutex::new(Vec::new());

pub(crate) fn skipped(suite: Suite) {
    let first = {
        let mut printed = SKIP_LINES.lock().unwrap_or_else(PoisonError::into_inner);
        let first = !printed.contains(&suite);
        if first {
            printed.push(suite);
        }
        first
    };
    if first {
        let line = skip_line(suite, &binary(), &test());
        // Through the `Stderr` handle, not `eprintln!`: the test harness captures only
        // what the print macros write, so this line shows in `cargo test`'s output. A
        // failed write to stderr cannot be reported anywhere else.
        drop(std::io::stderr().lock().write_all(line.as_bytes()));
    }
    ledger("skipped", suite);
}

pub(crate) fn ran(suite: Suite) {
    ledger("ran", suite);
}

pub(crate) fn missing(suite: Suite) {
    ledger("missing", suite);
}

fn skip_line(suite: Suite, binary: &str, test: &str) -> String {
    format!(
        "SKIPPED: the {suite} tests of `{binary}` pass without running ({} is not set; \
         first: {test}). To run them, {}.\n",
        suite.switch(),
        suite.how_to_switch_on(),
    )
}

/// Append `OUTCOME\tSUITE\tBINARY\tTEST` to the ledger, when there is one.
fn ledger(outcome: &str, suite: Suite) {
    let Some(path) = std::env::var_os(LEDGER_ENV).filter(|p| !p.is_empty()) else {
        return;
    };
    let line = ledger_line(outcome, suite, &binary(), &test());
    if let Err(e) = append(Path::new(&path), &line) {
        panic!(
            "{LEDGER_ENV} names {}, which cannot be appended to: {e}",
            Path::new(&path).display()
        );
    }
}

fn ledger_line(outcome: &str, suite: Suite, binary: &str, test: &str) -> String {
    // Tabs and newlines in a name would break the format; test names have none, but a
    // thread name could.
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    format!("{outcome}\t{suite}\t{}\t{}\n", clean(binary), clean(test))
}

/// One `write` of a short line to a file opened for appending: lines of concurrent tests
/// and processes do not interleave.
fn append(path: &Path, line: &str) -> std::io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())
}

/// The test binary: `PACKAGE/NAME` when cargo runs it (cargo sets `CARGO_PKG_NAME`), the
/// file name without cargo's `-<16 hex digits>` suffix.
fn binary() -> String {
    let exe = std::env::current_exe().ok();
    let name = exe
        .as_deref()
        .and_then(Path::file_name)
        .map_or_else(|| "?".to_owned(), |n| n.to_string_lossy().into_owned());
    let name = strip_hash(&name);
    match std::env::var("CARGO_PKG_NAME") {
        Ok(package) if !package.is_empty() => format!("{package}/{name}"),
        _ => name.to_owned(),
    }
}

fn strip_hash(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((stem, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            stem
        }
        _ => name,
    }
}

/// The calling thread's name: the test harness names each test's thread after the test.
fn test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed thread>")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_names_lose_cargo_hashes_only() {
        assert_eq!(strip_hash("conformance-0123456789abcdef"), "conformance");
        assert_eq!(strip_hash("e2e_apply-0123456789ABCDEF"), "e2e_apply");
        assert_eq!(
            strip_hash("wgm_test_support-0123456789abcdeg"),
            "wgm_test_support-0123456789abcdeg"
        );
        assert_eq!(strip_hash("cli-walkthrough"), "cli-walkthrough");
        assert_eq!(strip_hash("plain"), "plain");
    }

    #[test]
    fn the_test_name_is_the_thread_name() {
        assert_eq!(test(), "report::tests::the_test_name_is_the_thread_name");
    }

    #[test]
    fn lines() {
        assert_eq!(
            ledger_line("ran", Suite::Netns, "netns", "a::b"),
            "ran\tnetns\tnetns\ta::b\n"
        );
        assert_eq!(
            ledger_line("skipped", Suite::Postgres, "x\ty", "t\nu"),
            "skipped\tpostgres\tx y\tt u\n"
        );
        let skip = skip_line(Suite::Postgres, "sql", "pg_test");
        assert!(
            skip.starts_with("SKIPPED: the postgres tests of `sql`"),
            "{skip}"
        );
        assert!(skip.contains("WGM_TEST_POSTGRES_URL is not set"), "{skip}");
        assert!(skip.contains("first: pg_test"), "{skip}");
        assert!(
            skip.ends_with(".\n") && skip.matches('\n').count() == 1,
            "{skip}"
        );
    }

    #[test]
    fn appending_to_a_ledger() {
        let dir = std::env::temp_dir().join(format!("wgm-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ledger");
        append(&path, "a\n").unwrap();
        append(&path, "b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\nb\n");
        assert!(append(&dir.join("no/such/dir"), "c\n").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
