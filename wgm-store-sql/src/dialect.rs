//! What differs between the engines in the SQL text of the shared reads (`common.rs`),
//! and nothing else.
//!
//! A shared query is written once, in a template:
//!
//! - placeholders are `$1`, `$2`, …; SQLite gets them as `?1`, `?2`, … (the same numbers,
//!   so a query may use them in any order and repeat them);
//! - text in braces is PostgreSQL's only: the `wgm.` schema, `::text` on the `jsonb`
//!   columns read as text, casts that type a nullable parameter (`$1::uuid IS NULL`),
//!   `COLLATE "C"` (SQLite's default `BINARY` collation already is byte order), and
//!   `FOR UPDATE` (SQLite's `BEGIN IMMEDIATE` already holds the write lock). SQLite gets
//!   the template without it.
//!
//! The other differences are not text: how ids are bound and come back (text on SQLite,
//! `uuid` on PostgreSQL) and how a read snapshot begins; each engine module supplies
//! those next to its `reads!` (see `common.rs`).

use std::sync::OnceLock;

use crate::common::Reads;

/// One engine's way of writing the shared SQL.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// The character that starts a numbered placeholder: `?` or `$`.
    placeholder: char,
    /// Whether the text in braces (PostgreSQL's only) is kept.
    keep_braced: bool,
    /// The shared reads, rendered once on first use.
    reads: OnceLock<Reads>,
}

/// SQLite: `?1` placeholders, no schema, no casts, no collation, no row locks.
#[cfg(feature = "sqlite")]
pub(crate) static SQLITE: Dialect = Dialect {
    placeholder: '?',
    keep_braced: false,
    reads: OnceLock::new(),
};

/// PostgreSQL: `$1` placeholders and everything in braces.
#[cfg(feature = "postgres")]
pub(crate) static POSTGRES: Dialect = Dialect {
    placeholder: '$',
    keep_braced: true,
    reads: OnceLock::new(),
};

impl Dialect {
    /// The shared reads in this dialect.
    pub(crate) fn reads(&self) -> &Reads {
        self.reads.get_or_init(|| Reads::render(self))
    }

    /// A template in this dialect (see the module documentation).
    pub(crate) fn render(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 32);
        let mut braced = false;
        for c in template.chars() {
            match c {
                '{' => braced = true,
                '}' => braced = false,
                _ if braced && !self.keep_braced => {}
                '$' => out.push(self.placeholder),
                _ => out.push(c),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shared template is well formed: braces neither nested nor left open, every
    /// `$` starts a placeholder, and the placeholders are exactly `$1..$n`.
    #[test]
    fn templates_are_well_formed() {
        for (name, template) in Reads::TEMPLATES {
            let mut braced = false;
            for c in template.chars() {
                match c {
                    '{' => {
                        assert!(!braced, "{name}: nested braces");
                        braced = true;
                    }
                    '}' => {
                        assert!(braced, "{name}: unopened brace");
                        braced = false;
                    }
                    '?' => panic!("{name}: `?` in a template (placeholders are `$n`)"),
                    _ => {}
                }
            }
            assert!(!braced, "{name}: unclosed brace");
            let mut numbers: Vec<usize> = template
                .split('$')
                .skip(1)
                .map(|rest| {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    digits
                        .parse()
                        .unwrap_or_else(|_| panic!("{name}: `$` not followed by a number"))
                })
                .collect();
            numbers.sort_unstable();
            numbers.dedup();
            let expected: Vec<usize> = (1..=numbers.len()).collect();
            assert_eq!(numbers, expected, "{name}: placeholders are not $1..$n");
        }
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_gets_no_postgres_text() {
        for (name, template) in Reads::TEMPLATES {
            let sql = SQLITE.render(template);
            for pg in ["wgm.", "::", "COLLATE", "FOR UPDATE", "$", "{", "}"] {
                assert!(!sql.contains(pg), "{name}: {pg:?} in SQLite's {sql:?}");
            }
        }
        assert_eq!(
            SQLITE.render("SELECT x{::text} FROM {wgm.}t WHERE a = $2 OR b = $1"),
            "SELECT x FROM t WHERE a = ?2 OR b = ?1"
        );
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_keeps_everything_but_the_braces() {
        for (name, template) in Reads::TEMPLATES {
            let sql = POSTGRES.render(template);
            assert_eq!(sql, template.replace(['{', '}'], ""), "{name}");
            assert!(!sql.contains('?'), "{name}: `?` in PostgreSQL's {sql:?}");
        }
        assert!(POSTGRES.reads().list_users.contains("wgm.users"));
    }
}
