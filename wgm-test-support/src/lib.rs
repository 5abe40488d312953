//! How wgm's tests require what they need from the machine.
//!
//! Some tests need more than `cargo test` can count on: root and network namespaces with
//! `wireguard-go` and its friends, a kernel with WireGuard, a PostgreSQL server, a Redis
//! server. Each such test
//! belongs to an **opt-in suite**, switched on by an environment variable, and asks for
//! its resource with [`require`], the one way to do so in this workspace:
//!
//! | suite | switch | what [`require`] checks when the switch is on |
//! |---|---|---|
//! | `netns` | `WGM_TEST_NETNS=1` | root (network namespaces), and the tools the test names on `PATH` |
//! | `kernel` | `WGM_TEST_KERNEL=1` | root, network namespaces, WireGuard in the running kernel (`/sys/module/wireguard`), and the tools |
//! | `postgres` | `WGM_TEST_POSTGRES_URL` (an admin URL) | a PostgreSQL server answers there, and the tools |
//! | `redis` | `WGM_TEST_REDIS_URL` | a Redis server answers `PING` there, and the tools |
//!
//! - **Switch off** (unset or empty; for `WGM_TEST_NETNS` and `WGM_TEST_KERNEL` also
//!   `0`): [`require`] returns
//!   `None` and the test returns early. Once per suite and test binary, a `SKIPPED` line
//!   goes straight to the process's standard error, which `cargo test` shows even while
//!   it captures test output (it captures only what the `print!`/`eprint!` macros write).
//! - **Switch on, resource there**: [`require`] returns the [`Granted`] resource.
//! - **Switch on, resource missing**: [`require`] panics with a message naming what is
//!   missing, so the test **fails**. A suite that was asked for cannot pass by skipping.
//!
//! A value of `WGM_TEST_NETNS` or `WGM_TEST_KERNEL` other than `1`, `0` or empty is a
//! mistake (`yes`, `true`), and fails too rather than being read as "off".
//!
//! The machines that run `cargo test` usually have no WireGuard module, so CI runs the
//! `kernel` suite in a virtual machine: `.ci/vm` boots a distribution kernel under QEMU
//! with the module loaded and runs the test binaries listed in `.ci/vm-tests` there, with
//! `WGM_TEST_KERNEL=1` (see `docs/testing.md`).
//!
//! # The ledger
//!
//! When `WGM_TEST_LEDGER` names a file, every call of [`require`] appends one line to it:
//!
//! ```text
//! OUTCOME<TAB>SUITE<TAB>BINARY<TAB>TEST
//! ```
//!
//! `OUTCOME` is `ran` (the resource was granted), `skipped` (the switch is off) or
//! `missing` (the switch is on and the test is about to fail); `SUITE` is
//! [`Suite::name`]; `BINARY` the test binary as `PACKAGE/NAME` (cargo's hash suffix
//! dropped; the package from `CARGO_PKG_NAME`, which cargo sets); `TEST` the name
//! of the calling thread, which the standard test harness sets to the test's name. A test
//! that calls [`require`] more than once writes more than one line, so count distinct
//! `(SUITE, BINARY, TEST)`. `.ci/run` does that, prints how many tests of each suite ran,
//! and fails when a switched-on suite ran none. A ledger that cannot be written fails the
//! test (a count that silently misses tests would defeat its purpose).
//!
//! # Adding a suite
//!
//! A new kind of resource is one more [`Suite`] variant: its name, its switch, what it
//! checks, and what [`Granted`] carries (as [`Suite::Kernel`] was added). `.ci/suites`
//! then counts it like the others once it is listed there.
//!
//! # Example
//!
//! ```no_run
//! use wgm_test_support::{require, Suite};
//!
//! // In a `#[test]` function:
//! fn drives_wireguard_go_in_a_namespace() {
//!     let Some(_netns) = require(Suite::Netns, &["ip", "wireguard-go", "wg"]) else {
//!         return;
//!     };
//!     // ... create a namespace, start wireguard-go ...
//! }
//!
//! fn runs_on_postgresql() {
//!     let Some(pg) = require(Suite::Postgres, &[]) else {
//!         return;
//!     };
//!     let admin_url: &str = pg.url();
//!     // ... create a fresh database through `admin_url` ...
//! }
//! ```
#![warn(clippy::unwrap_used)]

mod probe;
mod report;

use std::fmt;
use std::path::Path;

pub use report::LEDGER_ENV;

/// An opt-in test suite: a kind of resource some tests need, and the environment
/// variable that says this machine provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Suite {
    /// Root and network namespaces (plus whatever tools the test names): tests that
    /// create namespaces, veth pairs, TUN devices and `wireguard-go` daemons.
    Netns,
    /// Root, network namespaces and WireGuard in the running kernel (the `wireguard`
    /// module loaded, or built in): tests that create kernel WireGuard devices. CI runs
    /// them in a virtual machine (`.ci/vm`), as the machines it runs on lack the module.
    Kernel,
    /// A PostgreSQL server, through an admin URL that may create and drop databases.
    Postgres,
    /// A Redis server.
    Redis,
}

impl Suite {
    /// Every suite, in the order `.ci/run` reports them.
    pub const ALL: [Suite; 4] = [Suite::Netns, Suite::Kernel, Suite::Postgres, Suite::Redis];

    /// The suite's short name, as written in the ledger: `netns`, `kernel`, `postgres`,
    /// `redis`.
    pub const fn name(self) -> &'static str {
        match self {
            Suite::Netns => "netns",
            Suite::Kernel => "kernel",
            Suite::Postgres => "postgres",
            Suite::Redis => "redis",
        }
    }

    /// The environment variable that switches the suite on.
    pub const fn switch(self) -> &'static str {
        match self {
            Suite::Netns => "WGM_TEST_NETNS",
            Suite::Kernel => "WGM_TEST_KERNEL",
            Suite::Postgres => "WGM_TEST_POSTGRES_URL",
            Suite::Redis => "WGM_TEST_REDIS_URL",
        }
    }

    /// How to switch the suite on, for the skip line.
    const fn how_to_switch_on(self) -> &'static str {
        match self {
            Suite::Netns => "set WGM_TEST_NETNS=1 and run as root",
            Suite::Kernel => {
                "set WGM_TEST_KERNEL=1 and run as root on a kernel with the wireguard \
                 module, or run them in a VM that has it with .ci/vm"
            }
            Suite::Postgres => {
                "set WGM_TEST_POSTGRES_URL to a PostgreSQL admin URL \
                 (postgres://USER@HOST:PORT/DB)"
            }
            Suite::Redis => "set WGM_TEST_REDIS_URL to a Redis URL (redis://HOST:PORT)",
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What [`require`] hands a test whose suite is on and whose resource is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    suite: Suite,
    url: Option<String>,
}

impl Granted {
    /// The suite the resource belongs to.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The service's URL, as given in the suite's switch (PostgreSQL, Redis).
    ///
    /// # Panics
    ///
    /// For a suite without a service URL ([`Suite::Netns`], [`Suite::Kernel`]): asking
    /// for one is a mistake in the test.
    pub fn url(&self) -> &str {
        match &self.url {
            Some(url) => url,
            None => panic!("the {} suite has no service URL", self.suite),
        }
    }
}

/// Require `suite`'s resource and the programs `tools` (looked up on `PATH`).
///
/// Returns `None` when the suite is switched off (the test should return: it is
/// skipped), after printing the suite's `SKIPPED` line once per test binary; returns the
/// resource when the suite is on and everything is there.
///
/// # Panics
///
/// When the suite is switched on and something is missing (not root, no WireGuard in
/// the kernel, a tool not on `PATH`, the service not answering), or its switch has a value that means neither on
/// nor off: the message names what is missing and how to switch the suite off.
///
/// # Example
///
/// ```no_run
/// use wgm_test_support::{require, Suite};
///
/// let Some(pg) = require(Suite::Postgres, &["psql"]) else {
///     return; // skipped: WGM_TEST_POSTGRES_URL is not set
/// };
/// println!("PostgreSQL admin URL: {}", pg.url());
/// ```
#[must_use = "a test must return when require gives None"]
pub fn require(suite: Suite, tools: &[&str]) -> Option<Granted> {
    let value = std::env::var(suite.switch()).ok();
    match decide(suite, value.as_deref(), tools) {
        Decision::Off => {
            report::skipped(suite);
            None
        }
        Decision::Run(granted) => {
            report::ran(suite);
            Some(granted)
        }
        Decision::Missing(what) => {
            report::missing(suite);
            panic!(
                "the {suite} suite is switched on ({}), so this test must run, but {what}. \
                 Fix that, or unset {} to skip the suite.",
                switch_shown(suite, value.as_deref()),
                suite.switch(),
            );
        }
    }
}

/// The switch as shown in a failure message: never a URL (it may hold a password).
fn switch_shown(suite: Suite, value: Option<&str>) -> String {
    match suite {
        Suite::Netns | Suite::Kernel => {
            format!("{}={}", suite.switch(), value.unwrap_or_default())
        }
        Suite::Postgres | Suite::Redis => format!("{} is set", suite.switch()),
    }
}

/// What [`require`] does, decided from the switch's value and the machine.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// The switch is off: skip.
    Off,
    /// The switch is on and the resource is there.
    Run(Granted),
    /// The switch is on (or malformed) and this is missing.
    Missing(String),
}

fn decide(suite: Suite, value: Option<&str>, tools: &[&str]) -> Decision {
    let value = value.unwrap_or_default();
    let url = match suite {
        Suite::Netns | Suite::Kernel => match value {
            "" | "0" => return Decision::Off,
            "1" => {
                let there = probe::netns().and_then(|()| {
                    if suite == Suite::Kernel {
                        probe::kernel_wireguard(Path::new(probe::WIREGUARD_MODULE))
                    } else {
                        Ok(())
                    }
                });
                if let Err(e) = there {
                    return Decision::Missing(e);
                }
                None
            }
            other => {
                return Decision::Missing(format!(
                    "its value {other:?} is neither 1 (on) nor 0 or empty (off)"
                ))
            }
        },
        Suite::Postgres | Suite::Redis => {
            if value.is_empty() {
                return Decision::Off;
            }
            let answered = if suite == Suite::Postgres {
                probe::postgres(value)
            } else {
                probe::redis(value)
            };
            if let Err(e) = answered {
                return Decision::Missing(e);
            }
            Some(value.to_owned())
        }
    };
    let absent: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| probe::find_tool(t).is_none())
        .collect();
    if !absent.is_empty() {
        let list: Vec<String> = absent.iter().map(|t| format!("`{t}`")).collect();
        let verb = if absent.len() == 1 { "is" } else { "are" };
        return Decision::Missing(format!("{} {verb} not on PATH", list.join(", ")));
    }
    Decision::Run(Granted { suite, url })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_that_are_off() {
        for suite in [Suite::Netns, Suite::Kernel] {
            for v in [None, Some(""), Some("0")] {
                assert_eq!(decide(suite, v, &["ip"]), Decision::Off, "{suite} {v:?}");
            }
        }
        for suite in [Suite::Postgres, Suite::Redis] {
            for v in [None, Some("")] {
                assert_eq!(decide(suite, v, &[]), Decision::Off, "{suite} {v:?}");
            }
        }
    }

    #[test]
    fn a_netns_or_kernel_switch_that_means_neither_on_nor_off_fails() {
        for suite in [Suite::Netns, Suite::Kernel] {
            for v in ["yes", "true", "2", " 1"] {
                let Decision::Missing(why) = decide(suite, Some(v), &[]) else {
                    panic!("{suite}: {v:?} was accepted");
                };
                assert!(why.contains("neither 1"), "{why}");
            }
            assert_eq!(
                switch_shown(suite, Some("yes")),
                format!("{}=yes", suite.switch())
            );
        }
    }

    #[test]
    fn a_switched_on_kernel_suite_checks_root_and_the_module() {
        let there = Path::new(probe::WIREGUARD_MODULE).exists();
        match decide(Suite::Kernel, Some("1"), &["sh"]) {
            Decision::Run(granted) => {
                assert!(rustix::process::geteuid().is_root() && there);
                assert_eq!(granted.suite(), Suite::Kernel);
            }
            Decision::Missing(why) => {
                assert!(
                    why.contains("root") || why.contains("`wireguard` module"),
                    "{why}"
                );
                assert!(!rustix::process::geteuid().is_root() || !there, "{why}");
            }
            Decision::Off => panic!("WGM_TEST_KERNEL=1 was read as off"),
        }
    }

    #[test]
    fn a_service_that_does_not_answer_is_missing_and_the_url_is_not_shown() {
        for (suite, url) in [
            (Suite::Postgres, "postgres://u:hunter2@127.0.0.1:1/db"),
            (Suite::Redis, "redis://:hunter2@127.0.0.1:1"),
        ] {
            let Decision::Missing(why) = decide(suite, Some(url), &[]) else {
                panic!("{suite}: a closed port was accepted");
            };
            assert!(why.contains("127.0.0.1:1"), "{why}");
            assert!(!why.contains("hunter2"), "{why}");
            assert!(!switch_shown(suite, Some(url)).contains("hunter2"));
        }
    }

    #[test]
    fn missing_tools_are_named() {
        // A closed port fails first; use a service-less check through a fake listener.
        let server = probe::tests::answering(b"N");
        let url = format!("postgres://u@{}/db", server.addr);
        let granted = decide(Suite::Postgres, Some(&url), &["sh"]);
        assert_eq!(
            granted,
            Decision::Run(Granted {
                suite: Suite::Postgres,
                url: Some(url.clone()),
            })
        );
        let server = probe::tests::answering(b"N");
        let url = format!("postgres://u@{}/db", server.addr);
        let Decision::Missing(why) = decide(
            Suite::Postgres,
            Some(&url),
            &["sh", "wgm-no-such-tool", "wgm-nor-this"],
        ) else {
            panic!("absent tools were accepted");
        };
        assert_eq!(
            why, "`wgm-no-such-tool`, `wgm-nor-this` are not on PATH",
            "{why}"
        );
    }

    #[test]
    fn granted_urls() {
        let g = Granted {
            suite: Suite::Redis,
            url: Some("redis://127.0.0.1:6379".into()),
        };
        assert_eq!(g.url(), "redis://127.0.0.1:6379");
        assert_eq!(g.suite(), Suite::Redis);
        let netns = Granted {
            suite: Suite::Netns,
            url: None,
        };
        let panicked = std::panic::catch_unwind(|| netns.url().len());
        assert!(panicked.is_err());
    }

    #[test]
    fn names_and_switches_are_distinct() {
        for (i, a) in Suite::ALL.iter().enumerate() {
            for b in &Suite::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
                assert_ne!(a.switch(), b.switch());
            }
            assert!(a.how_to_switch_on().contains(a.switch()));
        }
    }
}
