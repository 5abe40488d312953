//! Output: JSON for machines, aligned tables and key/value blocks for people, colour
//! only on a terminal (and never with `NO_COLOR`).

use std::io::{IsTerminal, Write};

use serde::Serialize;

use crate::error::{one_line, CliError, CliResult};

/// How results are printed.
#[derive(Clone, Copy, Debug)]
#[allow(clippy::struct_excessive_bools)] // four independent switches, not a state machine
pub struct Out {
    /// `--json`.
    pub json: bool,
    /// Colour on stdout.
    pub color: bool,
    /// Colour on stderr.
    pub color_err: bool,
    /// stderr is a terminal (spinners, progress bars).
    pub interactive: bool,
}

/// Text styles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Headers.
    Bold,
    /// Good states.
    Green,
    /// Bad states.
    Red,
    /// Warnings.
    Yellow,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Bold => "1",
            Style::Green => "32",
            Style::Red => "31",
            Style::Yellow => "33",
        }
    }
}

/// One table cell: text and an optional style.
#[derive(Clone, Debug)]
pub struct Cell {
    text: String,
    style: Option<Style>,
}

impl Cell {
    /// A plain cell.
    pub fn plain(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            style: None,
        }
    }

    /// A styled cell.
    pub fn styled(text: impl Into<String>, style: Style) -> Cell {
        Cell {
            text: text.into(),
            style: Some(style),
        }
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Cell {
        Cell::plain(s)
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Cell {
        Cell::plain(s)
    }
}

fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

impl Out {
    /// Decide from `--json`, the terminals and `NO_COLOR`.
    pub fn detect(json: bool) -> Out {
        let no_color = no_color_env() || std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Out {
            json,
            color: !no_color && std::io::stdout().is_terminal(),
            color_err: !no_color && std::io::stderr().is_terminal(),
            interactive: std::io::stderr().is_terminal(),
        }
    }

    /// `text` in `style` when colour is on.
    pub fn paint(self, text: &str, style: Style) -> String {
        paint(self.color, text, style)
    }

    /// `text` in `style` when stderr gets colour.
    pub fn paint_err(self, text: &str, style: Style) -> String {
        paint(self.color_err, text, style)
    }

    /// Print `value` as pretty JSON on stdout.
    #[allow(clippy::unused_self)] // one call style for every kind of output
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> CliResult {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| CliError::Failed(format!("cannot encode JSON: {e}")))?;
        print_stdout(&format!("{text}\n"))
    }

    /// Print a line on stdout.
    #[allow(clippy::unused_self)] // one call style for every kind of output
    pub fn line(self, text: &str) -> CliResult {
        print_stdout(&format!("{text}\n"))
    }

    /// Print raw text on stdout (configs, completion scripts, QR codes).
    #[allow(clippy::unused_self)] // one call style for every kind of output
    pub fn raw(self, text: &str) -> CliResult {
        print_stdout(text)
    }

    /// A notice on stderr (never part of machine output).
    #[allow(clippy::unused_self)] // one call style for every kind of output
    pub fn note(self, text: &str) {
        eprintln!("{}", one_line(text));
    }

    /// A warning on stderr.
    pub fn warn(self, text: &str) {
        let label = paint(self.color_err, "warning:", Style::Yellow);
        eprintln!("{label} {}", one_line(text));
    }

    /// An aligned table on stdout; `empty` is printed instead when there are no rows.
    pub fn table(self, headers: &[&str], rows: &[Vec<Cell>], empty: &str) -> CliResult {
        if rows.is_empty() {
            return self.line(empty);
        }
        print_stdout(&render_table(self.color, headers, rows))
    }

    /// `key  value` lines, keys aligned, on stdout.
    pub fn kv(self, pairs: &[(&str, String)]) -> CliResult {
        let key_width = pairs.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
        let mut s = String::new();
        for (k, v) in pairs {
            let key = format!("{k}:");
            let pad = " ".repeat(key_width + 1 - width(k));
            s.push_str(&self.paint(&key, Style::Bold));
            s.push_str(&pad);
            s.push(' ');
            s.push_str(&clean(v));
            s.push('\n');
        }
        print_stdout(&s)
    }
}

fn paint(on: bool, text: &str, style: Style) -> String {
    if on {
        format!("\x1b[{}m{text}\x1b[0m", style.code())
    } else {
        text.to_owned()
    }
}

/// Cells never carry control characters (no terminal escapes from stored data).
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Display width in terminal columns (one per character; names are allow-listed).
fn width(s: &str) -> usize {
    s.chars().count()
}

/// The table as text: headers, then rows, columns separated by two spaces, trailing
/// spaces trimmed.
pub fn render_table(color: bool, headers: &[&str], rows: &[Vec<Cell>]) -> String {
    let cols = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    let rows: Vec<Vec<(String, Option<Style>)>> = rows
        .iter()
        .map(|r| r.iter().map(|c| (clean(&c.text), c.style)).collect())
        .collect();
    for r in &rows {
        for (i, (t, _)) in r.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(width(t));
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: Vec<(String, Option<Style>)>| {
        let mut line = String::new();
        let n = cells.len().min(cols);
        for (i, (t, style)) in cells.into_iter().enumerate().take(cols) {
            let pad = widths[i] - width(&t);
            match style {
                Some(s) => line.push_str(&paint(color, &t, s)),
                None => line.push_str(&t),
            }
            if i + 1 < n {
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_row(
        headers
            .iter()
            .map(|h| ((*h).to_owned(), Some(Style::Bold)))
            .collect(),
    );
    for r in rows {
        push_row(r);
    }
    out
}

/// Write to stdout; a closed pipe (`wgm … | head`) ends quietly.
fn print_stdout(text: &str) -> CliResult {
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Failed(format!("cannot write to stdout: {e}"))),
    }
}

/// Format a time for people: `2026-01-02 03:04:05Z`.
pub fn time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Format an optional value, `-` when absent.
pub fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |x| x.to_string())
}

/// A list joined by `, `, `-` when empty.
pub fn list<T: std::fmt::Display>(v: &[T]) -> String {
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Bytes for people: `0 B`, `1.5 KiB`, `3.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)] // display only
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_trim() {
        let t = render_table(
            false,
            &["NAME", "IPV6"],
            &[
                vec!["alice".into(), "fd00::2".into()],
                vec!["b".into(), Cell::plain("")],
            ],
        );
        assert_eq!(t, "NAME   IPV6\nalice  fd00::2\nb\n");
    }

    #[test]
    fn colour_only_when_asked_and_cells_are_cleaned() {
        let t = render_table(true, &["A"], &[vec![Cell::styled("x\x1b[2J", Style::Red)]]);
        assert!(t.contains("\x1b[1mA\x1b[0m"));
        assert!(t.contains("\x1b[31mx?[2J\x1b[0m"));
        let plain = render_table(false, &["A"], &[vec![Cell::styled("x", Style::Red)]]);
        assert!(!plain.contains('\x1b'));
    }

    #[test]
    fn human_formats() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(
            time(time::macros::datetime!(2026-01-02 03:04:05 UTC)),
            "2026-01-02 03:04:05Z"
        );
        assert_eq!(opt::<u8>(None), "-");
        assert_eq!(list::<u8>(&[]), "-");
        assert_eq!(list(&[1, 2]), "1, 2");
    }
}
