//! Validated names: [`InterfaceName`], [`ServerName`], [`PeerName`], [`UserName`],
//! [`RoleName`], [`TokenName`], [`HostName`], free-text [`Description`], and the check of
//! informational path text ([`check_path_text`]).
//!
//! Names end up in wg-quick files (`# Name = …` comments), in tables, in logs and in the
//! argv of tools an operator runs by hand. A newline in a client name once became a
//! `PostUp` line, and with it root command execution (wg-easy). So every name is checked
//! against an allow-list when it is created — and when it is deserialized, since serde goes
//! through the same constructor — and a value of these types can be written anywhere.
//!
//! | type | length | characters |
//! |---|---|---|
//! | [`InterfaceName`] | 1–15 bytes | `A–Z a–z 0–9 _ = + . -` (Linux `IFNAMSIZ` and wg-quick's rule); not `.`/`..`, no leading `-` |
//! | [`ServerName`], [`PeerName`], [`TokenName`] | 1–64 characters | printable Unicode and inner ASCII spaces; no `# [ ] = / \`, no control, format, invisible or private-use characters, no other whitespace; no leading `-` or `.`; not `.`/`..` |
//! | [`UserName`] | 1–64 characters | `A–Z a–z 0–9 _ - . @`; no leading `-` or `.` |
//! | [`RoleName`] | 1–64 characters | `A–Z a–z 0–9 _ - .`; no leading `-` or `.` |
//! | [`HostName`] | 1–253 bytes | `A–Z a–z 0–9 _ - .`; no leading `-` or `.`; compared exactly |
//! | [`Description`] | 0–256 characters | any text without control, format, invisible or line/paragraph-separator characters |
//! | path text ([`check_path_text`]) | 1–4095 bytes | as [`Description`] |
//!
//! Server, peer, user and role names are unique case-insensitively; [`PeerName::key`] (and
//! the same method on the others) gives the folded form to compare: NFKC-normalised, then
//! case-folded (lowercase of the uppercase, so `Straße` and `STRASSE` collide), then
//! NFKC-normalised again. Composed and decomposed spellings (`é` as one or two code points)
//! and full-width letters collide too.
//!
//! ```
//! use wgm_core::names::{InterfaceName, PeerName};
//!
//! let peer = PeerName::new("Alice's phone")?;
//! assert_eq!(peer.key(), PeerName::new("ALICE'S PHONE")?.key());
//! assert!(PeerName::new("evil\nPostUp = rm -rf /").is_err());
//! assert!(InterfaceName::new("wg0")?.as_str() == "wg0");
//! assert!(InterfaceName::new("a-very-long-name0").is_err()); // 17 bytes
//! # Ok::<(), wgm_core::Error>(())
//! ```

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use unicode_normalization::UnicodeNormalization as _;

use crate::{Error, Result};

/// Longest server, peer, user or role name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest [`Description`], in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 256;
/// Longest [`InterfaceName`], in bytes (Linux `IFNAMSIZ` − 1).
pub const MAX_INTERFACE_NAME_BYTES: usize = 15;
/// Longest [`HostName`], in bytes (a DNS name).
pub const MAX_HOST_NAME_BYTES: usize = 253;
/// Longest path text ([`check_path_text`]), in bytes (Linux `PATH_MAX` − 1).
pub const MAX_PATH_TEXT_BYTES: usize = 4095;

/// Declares a validated string newtype with the common trait implementations.
macro_rules! name_type {
    ($(#[$meta:meta])* $name:ident, $validate:path, $field:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validate `s`. Errors are [`Error::InvalidInput`] naming the field
            #[doc = concat!("`", $field, "`.")]
            pub fn new(s: impl Into<String>) -> Result<Self> {
                let s = s.into();
                $validate(&s).map_err(|reason| Error::invalid($field, reason))?;
                Ok($name(s))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name as an owned `String`.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }
    };
}

/// Adds `key()`, the case-insensitive uniqueness key, to a name type.
macro_rules! name_key {
    ($name:ident, $fold:path) => {
        impl $name {
            /// The folded form used for case-insensitive uniqueness: two names with the
            /// same key are the same name. See the [module docs](self).
            pub fn key(&self) -> String {
                $fold(&self.0)
            }
        }
    };
}

name_type!(
    /// A network interface name: 1–15 bytes of `[a-zA-Z0-9_=+.-]`, not `.` or `..`, and
    /// (stricter than Linux) not starting with `-`, so it can never be read as an option.
    ///
    /// ```
    /// use wgm_core::names::InterfaceName;
    /// assert!(InterfaceName::new("wg-office.1").is_ok());
    /// assert!(InterfaceName::new("wg 0").is_err());
    /// ```
    InterfaceName,
    validate_interface_name,
    "interface_name"
);

name_type!(
    /// The display name of a server (an interface managed by wgm), e.g.
    /// `Berlin office`. Rules in the [module docs](self).
    ///
    /// ```
    /// use wgm_core::names::ServerName;
    /// assert!(ServerName::new("Berlin office").is_ok());
    /// assert!(ServerName::new("[Interface]").is_err());
    /// ```
    ServerName,
    validate_display_name,
    "server.name"
);
name_key!(ServerName, fold_unicode);

name_type!(
    /// The name of a peer (a client device), e.g. `Jürgen's laptop`. Rules in the
    /// [module docs](self).
    ///
    /// ```
    /// use wgm_core::names::PeerName;
    /// assert!(PeerName::new("Jürgen's laptop").is_ok());
    /// assert!(PeerName::new("a = b").is_err());
    /// assert!(PeerName::new("left\u{202e}right").is_err()); // bidi override
    /// ```
    PeerName,
    validate_display_name,
    "peer.name"
);
name_key!(PeerName, fold_unicode);

name_type!(
    /// A login name: 1–64 characters of `[A-Za-z0-9_.@-]`, not starting with `-` or `.`.
    /// ASCII only, so that no two user names look alike.
    ///
    /// ```
    /// use wgm_core::names::UserName;
    /// assert_eq!(UserName::new("Alice@example.org")?.key(), "alice@example.org");
    /// assert!(UserName::new("alice smith").is_err());
    /// # Ok::<(), wgm_core::Error>(())
    /// ```
    UserName,
    validate_user_name,
    "user.name"
);
name_key!(UserName, fold_ascii);

name_type!(
    /// The name of an RBAC role: 1–64 characters of `[A-Za-z0-9_.-]`, not starting with
    /// `-` or `.`.
    ///
    /// ```
    /// use wgm_core::names::RoleName;
    /// assert!(RoleName::new("network-operator").is_ok());
    /// assert!(RoleName::new("admin@x").is_err());
    /// ```
    RoleName,
    validate_role_name,
    "role.name"
);
name_key!(RoleName, fold_ascii);

name_type!(
    /// Free text describing an object: up to 256 characters, possibly empty, without
    /// control, format, invisible or line-separator characters. Never written to a
    /// config file or an argv, but shown in tables and logs, where a newline or a bidi
    /// override could forge lines.
    ///
    /// ```
    /// use wgm_core::names::Description;
    /// assert!(Description::new("Laptop of the #2 team = [QA]").is_ok());
    /// assert!(Description::new("two\nlines").is_err());
    /// ```
    Description,
    validate_description,
    "description"
);

name_type!(
    /// The label of an API token, e.g. `ci deploy`: the rules of [`PeerName`] (1–64
    /// characters, no control, bidirectional, zero-width or other invisible characters,
    /// no leading or trailing whitespace; rules in the [module docs](self)). Token names
    /// are labels shown in lists and the audit log, not unique, so there is no `key()`.
    ///
    /// ```
    /// use wgm_core::names::TokenName;
    /// assert!(TokenName::new("ci deploy (2025)").is_ok());
    /// assert!(TokenName::new("").is_err());
    /// assert!(TokenName::new("ci\u{202e}yolpde").is_err()); // bidi override
    /// assert!(TokenName::new(" padded").is_err());
    /// ```
    TokenName,
    validate_display_name,
    "token.name"
);

name_type!(
    /// The name of a WireGuard host (a machine that runs servers' interfaces, where an
    /// agent applies them): 1–253 characters of `[A-Za-z0-9_.-]`, not starting with `-`
    /// or `.` — a DNS host name, as `hostname` prints it. Compared exactly as written.
    ///
    /// ```
    /// use wgm_core::names::HostName;
    /// assert!(HostName::new("wg-fra-1.example.net").is_ok());
    /// assert!(HostName::new("two words").is_err());
    /// assert!(HostName::new("-h").is_err());
    /// ```
    HostName,
    validate_host_name,
    "host"
);

/// Check informational path text (a server's `config_path`): 1 to 4095 bytes
/// ([`MAX_PATH_TEXT_BYTES`]), without control, line-break, format or invisible
/// characters. Not a check that the path exists or is safe to open: wgm never opens it.
/// Errors are [`Error::InvalidInput`] naming `field`.
///
/// ```
/// use wgm_core::names::check_path_text;
/// assert!(check_path_text("/etc/wireguard/wg0.conf", "server.config_path").is_ok());
/// let e = check_path_text("/etc/wg0.conf\nPostUp = id", "server.config_path").unwrap_err();
/// assert!(e.to_string().starts_with("invalid server.config_path: "));
/// ```
pub fn check_path_text(s: &str, field: impl Into<Cow<'static, str>>) -> Result<()> {
    validate_path_text(s).map_err(|reason| Error::invalid(field, reason))
}

fn validate_path_text(s: &str) -> Check {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > MAX_PATH_TEXT_BYTES {
        return Err("must be at most 4095 bytes");
    }
    check_text_characters(s)
}

// ---------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------

pub(crate) type Check = std::result::Result<(), &'static str>;

fn validate_interface_name(s: &str) -> Check {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > MAX_INTERFACE_NAME_BYTES {
        return Err("must be at most 15 bytes (Linux IFNAMSIZ)");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_=+.-".contains(&b))
    {
        return Err("may contain only the characters A-Z a-z 0-9 _ = + . -");
    }
    if s == "." || s == ".." {
        return Err("must not be '.' or '..'");
    }
    if s.starts_with('-') {
        return Err("must not start with '-'");
    }
    Ok(())
}

fn validate_display_name(s: &str) -> Check {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.chars().count() > MAX_NAME_CHARS {
        return Err("must be at most 64 characters");
    }
    for c in s.chars() {
        if is_line_break(c) || c.is_control() {
            return Err("must not contain control characters or line breaks");
        }
        if is_invisible(c) {
            return Err(
                "must not contain format or invisible characters (bidi overrides, zero-width)",
            );
        }
        if c.is_whitespace() && c != ' ' {
            return Err("may contain no whitespace other than the ASCII space");
        }
        if is_private_use_or_noncharacter(c) {
            return Err("must not contain private-use or noncharacter code points");
        }
        if matches!(c, '#' | '[' | ']' | '=') {
            return Err("must not contain '#', '[', ']' or '=' (wg-quick syntax)");
        }
        if matches!(c, '/' | '\\') {
            return Err("must not contain '/' or '\\'");
        }
    }
    check_edges(s)?;
    if s.starts_with(' ') || s.ends_with(' ') {
        return Err("must not start or end with whitespace");
    }
    Ok(())
}

fn validate_user_name(s: &str) -> Check {
    validate_ascii_identifier(
        s,
        b"_-.@",
        "may contain only the characters A-Z a-z 0-9 _ - . @",
    )
}

fn validate_role_name(s: &str) -> Check {
    validate_ascii_identifier(
        s,
        b"_-.",
        "may contain only the characters A-Z a-z 0-9 _ - .",
    )
}

fn validate_host_name(s: &str) -> Check {
    if s.len() > MAX_HOST_NAME_BYTES {
        return Err("must be at most 253 characters");
    }
    if s.is_empty() {
        return Err("must not be empty");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        return Err("may contain only the characters A-Z a-z 0-9 _ - .");
    }
    check_edges(s)
}

fn validate_ascii_identifier(s: &str, extra: &[u8], charset: &'static str) -> Check {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    {
        return Err(charset);
    }
    if s.len() > MAX_NAME_CHARS {
        return Err("must be at most 64 characters");
    }
    check_edges(s)
}

/// Leading `-` (option injection) or `.` (hidden files, `.`/`..`).
fn check_edges(s: &str) -> Check {
    if s.starts_with('-') {
        return Err("must not start with '-'");
    }
    if s.starts_with('.') {
        return Err("must not start with '.'");
    }
    Ok(())
}

fn validate_description(s: &str) -> Check {
    if s.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err("must be at most 256 characters");
    }
    check_text_characters(s)
}

/// No control, line-break, format or invisible character: the characters free text may
/// not hold ([`Description`], path text, e-mail addresses).
pub(crate) fn check_text_characters(s: &str) -> Check {
    for c in s.chars() {
        if is_line_break(c) || c.is_control() {
            return Err("must not contain control characters or line breaks");
        }
        if is_invisible(c) {
            return Err(
                "must not contain format or invisible characters (bidi overrides, zero-width)",
            );
        }
    }
    Ok(())
}

/// Characters that end a line somewhere: C0/C1 breaks and U+2028/U+2029.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{b}' | '\u{c}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// Unicode general category Cf (format) and the `Default_Ignorable_Code_Point` property,
/// Unicode 15.1: characters that render as nothing or reorder the text around them.
fn is_invisible(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x034F
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// Private-use areas and the 66 noncharacters.
fn is_private_use_or_noncharacter(c: char) -> bool {
    let u = u32::from(c);
    matches!(u, 0xE000..=0xF8FF | 0xF_0000..=0x10_FFFF | 0xFDD0..=0xFDEF) || (u & 0xFFFE) == 0xFFFE
}

/// NFKC, full case folding approximated by lowercase-of-uppercase, NFKC again —
/// repeated until nothing changes, so that a key is its own key. One round is not
/// always enough: the capital sharp s `ẞ` is its own uppercase and lowercases to `ß`,
/// whose uppercase is `SS`, so `ẞ` folds to `ß` in one round and to `ss` in two. Every
/// round maps a string to one the next round changes less; the bound only guards
/// against a table that would not settle.
fn fold_unicode(s: &str) -> String {
    let round = |s: &str| -> String {
        let nfkc: String = s.nfkc().collect();
        let folded = nfkc.to_uppercase().to_lowercase();
        folded.nfkc().collect()
    };
    let mut cur = round(s);
    for _ in 0..8 {
        let next = round(&cur);
        if next == cur {
            break;
        }
        cur = next;
    }
    cur
}

fn fold_ascii(s: &str) -> String {
    s.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reason_of(e: &Error) -> (String, String) {
        match e {
            Error::InvalidInput { field, reason } => (field.to_string(), reason.to_string()),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    /// Every display-name rejection of docs/security.md, with the part of the reason expected.
    const BAD_DISPLAY_NAMES: &[(&str, &str)] = &[
        ("", "empty"),
        ("a\nPostUp = id", "control"),
        ("a\rb", "control"),
        ("a\0b", "control"),
        ("a\tb", "control"),
        ("a\u{85}b", "control"),
        ("a\u{2028}b", "control"),
        ("a\u{2029}b", "control"),
        ("a\u{7f}b", "control"),
        ("a\u{9b}b", "control"),
        ("a\u{202e}b", "bidi"),
        ("a\u{202a}b", "bidi"),
        ("a\u{2066}b", "bidi"),
        ("a\u{2069}b", "bidi"),
        ("a\u{200f}b", "bidi"),
        ("a\u{200b}b", "zero-width"),
        ("a\u{200d}b", "zero-width"),
        ("a\u{feff}b", "zero-width"),
        ("a\u{ad}b", "invisible"),
        ("a\u{e0041}b", "invisible"),
        ("a\u{a0}b", "whitespace"),
        ("a\u{3000}b", "whitespace"),
        ("a\u{e000}b", "private-use"),
        ("a\u{fffe}b", "noncharacter"),
        ("# comment", "'#'"),
        ("[Peer]", "'['"),
        ("a]", "']'"),
        ("a=b", "'='"),
        ("-rf", "'-'"),
        (".hidden", "'.'"),
        (".", "'.'"),
        ("..", "'.'"),
        ("a/b", "'/'"),
        ("a\\b", "'\\'"),
        (" lead", "whitespace"),
        ("trail ", "whitespace"),
        (" ", "whitespace"),
    ];

    #[test]
    fn display_names_reject_every_listed_input() {
        let long = "x".repeat(65);
        let mut cases: Vec<(&str, &str)> = BAD_DISPLAY_NAMES.to_vec();
        cases.push((&long, "64"));
        for (input, want) in cases {
            for (e, field) in [
                (PeerName::new(input).unwrap_err(), "peer.name"),
                (ServerName::new(input).unwrap_err(), "server.name"),
            ] {
                let (f, reason) = reason_of(&e);
                assert_eq!(f, field);
                assert!(reason.contains(want), "{input:?}: {reason}");
            }
        }
    }

    #[test]
    fn display_names_accept_ordinary_names() {
        for ok in [
            "a",
            "Alice's phone",
            "Jürgen (laptop)",
            "東京オフィス",
            "über-server_2.backup",
            "a.b",
            "x-",
            "a..b",
            "100% uptime!",
            "e\u{301}",
            &"x".repeat(64),
            &"é".repeat(64),
        ] {
            assert_eq!(PeerName::new(ok).unwrap().as_str(), ok);
            assert_eq!(ServerName::new(ok).unwrap().to_string(), ok);
        }
    }

    #[test]
    fn keys_fold_case_width_and_composition() {
        let same = [
            ("Alice", "ALICE"),
            ("Straße", "STRASSE"),
            // The capital sharp s folds to `ss` like `ß` does (found by fuzzing: one
            // round of folding gave `ß`, whose key was `ss`).
            ("0+\u{17bd}-\u{1e9e}", "0+\u{17bd}-ss"),
            ("\u{1e9e}x", "ßx"),
            ("caf\u{e9}", "CAFE\u{301}"),
            ("ａｌｉｃｅ", "alice"),
            ("ΣΑΣ", "σας"),
        ];
        for (a, b) in same {
            assert_eq!(
                PeerName::new(a).unwrap().key(),
                PeerName::new(b).unwrap().key(),
                "{a} vs {b}"
            );
            assert_eq!(
                ServerName::new(a).unwrap().key(),
                ServerName::new(b).unwrap().key()
            );
        }
        assert_ne!(
            PeerName::new("alice").unwrap().key(),
            PeerName::new("alice2").unwrap().key()
        );
        assert_eq!(
            UserName::new("Bob@Example.ORG").unwrap().key(),
            "bob@example.org"
        );
        assert_eq!(
            RoleName::new("Admin").unwrap().key(),
            RoleName::new("admin").unwrap().key()
        );
    }

    #[test]
    fn interface_names() {
        for ok in [
            "wg0",
            "a",
            "wg_office=+.-1",
            "abcdefghijklmno",
            "..a",
            "a.",
            "0",
        ] {
            assert!(InterfaceName::new(ok).is_ok(), "{ok}");
        }
        let bad = [
            ("", "empty"),
            ("abcdefghijklmnop", "15 bytes"),
            ("wg 0", "characters"),
            ("wg0\n", "characters"),
            ("wg/0", "characters"),
            ("wg:0", "characters"),
            ("wg%0", "characters"),
            ("wgü", "characters"),
            ("ü", "characters"),
            (".", "'.'"),
            ("..", "'..'"),
            ("-wg0", "'-'"),
        ];
        for (input, want) in bad {
            let (field, reason) = reason_of(&InterfaceName::new(input).unwrap_err());
            assert_eq!(field, "interface_name");
            assert!(reason.contains(want), "{input:?}: {reason}");
        }
    }

    #[test]
    fn user_and_role_names() {
        for ok in ["alice", "alice.smith@example.org", "a_b-c", "A1"] {
            assert!(UserName::new(ok).is_ok(), "{ok}");
        }
        for ok in ["admin", "network-operator", "read_only.v2"] {
            assert!(RoleName::new(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(65);
        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            ("alice smith", "characters"),
            ("alice\n", "characters"),
            ("alice#1", "characters"),
            ("a=b", "characters"),
            ("a/b", "characters"),
            ("a\\b", "characters"),
            ("[a]", "characters"),
            ("jürgen", "characters"),
            ("-alice", "'-'"),
            (".alice", "'.'"),
            (".", "'.'"),
            ("..", "'.'"),
            (&long, "64"),
        ];
        for (input, want) in bad {
            let (field, reason) = reason_of(&UserName::new(*input).unwrap_err());
            assert_eq!(field, "user.name");
            assert!(reason.contains(want), "{input:?}: {reason}");
            let (field, reason) = reason_of(&RoleName::new(*input).unwrap_err());
            assert_eq!(field, "role.name");
            assert!(reason.contains(want), "{input:?}: {reason}");
        }
        assert!(RoleName::new("a@b").is_err());
        assert!(UserName::new("a".repeat(64)).is_ok());
    }

    #[test]
    fn descriptions() {
        assert!(Description::new("").is_ok());
        assert!(Description::new("Laptop #2 = [QA] / team \\ ok; -- .x").is_ok());
        assert!(Description::new("x".repeat(256)).is_ok());
        assert!(Description::new(" padded ").is_ok());
        for (input, want) in [
            ("a\nb", "control"),
            ("a\u{2028}b", "control"),
            ("a\u{85}b", "control"),
            ("a\tb", "control"),
            ("a\u{202e}b", "bidi"),
            ("a\u{200b}b", "zero-width"),
        ] {
            let (field, reason) = reason_of(&Description::new(input).unwrap_err());
            assert_eq!(field, "description");
            assert!(reason.contains(want), "{input:?}: {reason}");
        }
        assert!(reason_of(&Description::new("x".repeat(257)).unwrap_err())
            .1
            .contains("256"));
    }

    #[test]
    fn token_names_follow_the_display_name_rules() {
        let long = "x".repeat(65);
        let mut cases: Vec<(&str, &str)> = BAD_DISPLAY_NAMES.to_vec();
        cases.push((&long, "64"));
        for (input, want) in cases {
            let (field, reason) = reason_of(&TokenName::new(input).unwrap_err());
            assert_eq!(field, "token.name");
            assert!(reason.contains(want), "{input:?}: {reason}");
        }
        for ok in [
            "cli",
            "ci deploy",
            "Jürgen's laptop (2025)",
            &"x".repeat(64),
        ] {
            assert_eq!(TokenName::new(ok).unwrap().as_str(), ok);
        }
        assert!(serde_json::from_str::<TokenName>("\"a\\u202eb\"").is_err());
    }

    #[test]
    fn path_text_is_limited() {
        assert!(check_path_text("/etc/wireguard/wg0.conf", "f").is_ok());
        assert!(check_path_text(&format!("/{}", "a".repeat(4094)), "f").is_ok());
        for (input, want) in [
            (String::new(), "empty"),
            (format!("/{}", "a".repeat(4095)), "4095"),
            ("/etc/a\nb".to_owned(), "control"),
            ("/etc/a\0b".to_owned(), "control"),
            ("/etc/\u{202e}fnoc.0gw".to_owned(), "bidi"),
            ("/etc/a\u{200b}b".to_owned(), "zero-width"),
        ] {
            let (field, reason) =
                reason_of(&check_path_text(&input, "server.config_path").unwrap_err());
            assert_eq!(field, "server.config_path");
            assert!(reason.contains(want), "{reason}");
        }
    }

    #[test]
    fn invisible_table_covers_bidi_controls_and_zero_width() {
        // Sanity: the table includes all of the bidi controls and zero-width characters.
        for c in [
            '\u{200b}', '\u{200c}', '\u{200d}', '\u{200e}', '\u{200f}', '\u{2060}', '\u{2061}',
            '\u{2064}',
        ] {
            assert!(is_invisible(c), "{:x}", u32::from(c));
        }
        for c in 0x202A..=0x202E_u32 {
            assert!(is_invisible(char::from_u32(c).unwrap()));
        }
        for c in 0x2066..=0x2069_u32 {
            assert!(is_invisible(char::from_u32(c).unwrap()));
        }
        assert!(!is_invisible('a') && !is_invisible('é') && !is_invisible(' '));
    }

    #[test]
    fn serde_validates_on_the_way_in() {
        let p = PeerName::new("Alice").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"Alice\"");
        assert_eq!(serde_json::from_str::<PeerName>("\"Alice\"").unwrap(), p);
        assert!(serde_json::from_str::<PeerName>("\"a\\nPostUp = x\"").is_err());
        assert!(serde_json::from_str::<InterfaceName>("\"wg 0\"").is_err());
        assert!(serde_json::from_str::<UserName>("\"-x\"").is_err());
        assert!(serde_json::from_str::<RoleName>("\"\"").is_err());
        assert!(serde_json::from_str::<ServerName>("\"[Peer]\"").is_err());
        assert!(serde_json::from_str::<Description>("\"a\\u2028b\"").is_err());
        let e = serde_json::from_str::<PeerName>("\"a=b\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("peer.name"), "{e}");
    }

    #[test]
    fn traits() {
        let i: InterfaceName = "wg0".parse().unwrap();
        assert_eq!(i.as_ref(), "wg0");
        assert_eq!(format!("{i:?}"), "InterfaceName(\"wg0\")");
        assert_eq!(String::from(i.clone()), "wg0");
        assert_eq!(InterfaceName::try_from("wg0").unwrap(), i);
        assert!(PeerName::new("a").unwrap() < PeerName::new("b").unwrap());
        assert_eq!(i.into_string(), "wg0");
    }

    proptest! {
        #[test]
        fn any_text_is_judged_without_panic(s in "\\PC{0,80}|[\\x00-\\x7f]{0,20}|.{0,20}") {
            for check in [
                InterfaceName::new(s.as_str()).map(|n| n.to_string()),
                ServerName::new(s.as_str()).map(|n| n.to_string()),
                PeerName::new(s.as_str()).map(|n| n.to_string()),
                UserName::new(s.as_str()).map(|n| n.to_string()),
                RoleName::new(s.as_str()).map(|n| n.to_string()),
                Description::new(s.as_str()).map(|n| n.to_string()),
                TokenName::new(s.as_str()).map(|n| n.to_string()),
            ]
            .into_iter()
            .flatten()
            {
                prop_assert_eq!(&check, &s);
                prop_assert!(!check.contains('\n') && !check.contains('\r'));
            }
        }

        #[test]
        fn valid_names_round_trip(s in "[A-Za-z0-9_][A-Za-z0-9_ .'()-]{0,40}[A-Za-z0-9_]") {
            let p = PeerName::new(s.clone()).unwrap();
            prop_assert_eq!(p.to_string().parse::<PeerName>().unwrap(), p.clone());
            let json = serde_json::to_string(&p).unwrap();
            prop_assert_eq!(serde_json::from_str::<PeerName>(&json).unwrap(), p);
        }

        #[test]
        fn key_is_idempotent_and_case_blind(s in "[a-zA-Zà-ÿ0-9ẞ]{1,30}") {
            let p = PeerName::new(s.clone()).unwrap();
            let upper = PeerName::new(s.to_uppercase()).unwrap();
            prop_assert_eq!(p.key(), upper.key());
            prop_assert_eq!(fold_unicode(&p.key()), p.key());
        }
    }
}
