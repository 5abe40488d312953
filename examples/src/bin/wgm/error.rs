//! Errors of the CLI and their exit codes.

use std::fmt;

/// Everything a command can fail with.
#[derive(Debug)]
pub enum CliError {
    /// An error of the library, mapped to an exit code by meaning.
    Core(wgm_core::Error),
    /// The command line is malformed or contradictory (exit 1).
    Usage(String),
    /// A value on the command line that clap's parser refused: a word outside a closed
    /// set, or a value a `value_parser` (built on the library's parsers) refused. Exit 2,
    /// code `invalid_input`, like the library's `InvalidInput`.
    BadValue(String),
    /// Something outside the library failed, such as writing an output file (exit 1).
    Failed(String),
}

impl From<wgm_core::Error> for CliError {
    fn from(e: wgm_core::Error) -> Self {
        CliError::Core(e)
    }
}

/// Shorthand.
pub type CliResult<T = ()> = Result<T, CliError>;

impl CliError {
    /// The exit code (documented in `docs/cli.md`).
    pub fn exit_code(&self) -> u8 {
        use wgm_core::Error as E;
        match self {
            CliError::Usage(_) | CliError::Failed(_) => 1,
            CliError::BadValue(_) => 2,
            CliError::Core(e) => match e {
                E::InvalidInput { .. } | E::Parse { .. } => 2,
                E::NotFound { .. } => 3,
                E::AlreadyExists { .. } | E::Conflict { .. } | E::PoolExhausted { .. } => 4,
                E::PermissionDenied { .. } | E::Unauthenticated { .. } | E::Throttled { .. } => 5,
                // Store, Backend, Sealed, Unsupported, and anything added later: the
                // operation could not be carried out by what is behind the manager.
                _ => 6,
            },
        }
    }

    /// A stable machine code (the library's code for its errors).
    pub fn code(&self) -> &'static str {
        match self {
            CliError::Usage(_) => "usage",
            CliError::BadValue(_) => "invalid_input",
            CliError::Failed(_) => "failed",
            CliError::Core(e) => e.code(),
        }
    }

    /// The message on one line, control characters replaced, with a hint where the
    /// library's message alone does not say what to do.
    pub fn message(&self) -> String {
        let raw = match self {
            CliError::Core(e @ wgm_core::Error::PoolExhausted { .. }) => format!(
                "{e} (every address of the pool is allocated, reserved or quarantined; \
                 remove or disable peers, wait for quarantined addresses, or use a server with a larger pool)"
            ),
            CliError::Core(e @ wgm_core::Error::Sealed { .. }) => format!(
                "{e} (check --master-key-file / WGM_MASTER_KEY: it must be the key this store was created with)"
            ),
            CliError::Core(e) => e.to_string(),
            CliError::Usage(m) | CliError::Failed(m) | CliError::BadValue(m) => m.clone(),
        };
        one_line(&raw)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

/// Replace line breaks and other control characters so an error is one line and can
/// never carry terminal escape sequences.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last_space = false;
    for c in s.chars() {
        let c = if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}') {
            ' '
        } else {
            c
        };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        out.push(c);
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgm_core::Error;

    #[test]
    fn exit_codes_by_meaning() {
        let cases: Vec<(Error, u8)> = vec![
            (Error::invalid("peer.name", "x"), 2),
            (Error::parse(3, "Address", "x"), 2),
            (Error::not_found("peer", "a"), 3),
            (Error::already_exists("peer", "a"), 4),
            (Error::conflict("x"), 4),
            (
                Error::PoolExhausted {
                    pool: "10.0.0.0/30".into(),
                },
                4,
            ),
            (Error::denied("x"), 5),
            (Error::unauthenticated("x"), 5),
            (Error::sealed("x"), 6),
            (Error::store("sqlite", "down"), 6),
            (Error::backend("userspace", "down"), 6),
            (Error::unsupported("x"), 6),
        ];
        for (e, code) in cases {
            assert_eq!(CliError::Core(e).exit_code(), code);
        }
        assert_eq!(CliError::Usage("x".into()).exit_code(), 1);
        assert_eq!(CliError::BadValue("x".into()).exit_code(), 2);
        assert_eq!(CliError::BadValue("x".into()).code(), "invalid_input");
    }

    #[test]
    fn messages_are_one_line() {
        let e = CliError::Core(Error::store("sqlite", "a\nb\r\n\x1b[31mc"));
        let m = e.message();
        assert!(!m.contains('\n') && !m.contains('\x1b'), "{m}");
        let e = CliError::Core(Error::PoolExhausted {
            pool: "10.0.0.0/30".into(),
        });
        assert!(e.message().contains("larger pool"));
    }
}
