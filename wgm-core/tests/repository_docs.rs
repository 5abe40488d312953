//! The repository stands alone, and its documents claim only what the code does.
//!
//! These tests read files of the workspace (the root is the parent of this crate's
//! manifest directory); the no-I/O rule is for the library, not for its tests.
//!
//! - No file refers to design or security documents that live outside the repository.
//! - Every fault number cited anywhere (`F7` in text, `fn f7_…` in tests) has its section
//!   in `docs/faults.md`, and every section there lists tests or says what is not covered.
//! - Every test that `docs/` lists ("- `file`: `test`, …") exists as a function in that
//!   file, and every test the README's comparison table names exists somewhere.
//! - The foreign crates in `wgm-core`'s public signatures are exactly the ones
//!   `ARCHITECTURE.md` lists.
//! - The dependency rules of `docs/design.md` hold in the manifests.
//!
//! Each scanner is also run on small made-up inputs, so that a scanner that stopped
//! finding anything would fail here rather than pass silently.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

// ------------------------------------------------------------------------- the files

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("wgm-core sits inside the workspace")
        .to_path_buf()
}

/// Directories that hold no source of ours: build output, version control, fuzzing
/// inputs and findings, caches.
fn skipped_dir(rel: &str, name: &str) -> bool {
    matches!(
        name,
        "target" | ".git" | "node_modules" | "__pycache__" | ".venv" | ".pytest_cache"
    ) || matches!(
        rel,
        "fuzz/corpus" | "fuzz/artifacts" | "fuzz/coverage" | "fuzz/target"
    ) || (name.starts_with('.') && !matches!(name, ".ci" | ".github" | ".cargo"))
}

/// Every text file of the repository with its path relative to the root ('/'-separated),
/// in a stable order. Files that are not UTF-8 (images, binaries) are left out.
fn text_files() -> Vec<(String, String)> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry"))
            .collect();
        entries.sort_by_key(fs::DirEntry::file_name);
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                if !skipped_dir(&rel, &name) {
                    walk(&entry.path(), &rel, out);
                }
            } else if kind.is_file() {
                if let Ok(text) = fs::read_to_string(entry.path()) {
                    out.push((rel, text));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&root(), "", &mut out);
    assert!(
        out.iter().any(|(p, _)| p == "wgm-core/src/lib.rs"),
        "the walk must see the sources"
    );
    out
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn has_extension(path: &str, ext: &str) -> bool {
    Path::new(path).extension().is_some_and(|e| e == ext)
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `text` defines a function called `name`.
fn defines_fn(text: &str, name: &str) -> bool {
    text.match_indices(&format!("fn {name}")).any(|(i, m)| {
        let before = text[..i].chars().next_back();
        let after = text[i + m.len()..].chars().next();
        !before.is_some_and(is_word) && matches!(after, Some('(' | '<'))
    })
}

// ------------------------------------------------- documents outside the repository

/// Names under which documents outside the repository were cited. Built from pieces so
/// that this file does not cite them itself.
fn outside_references() -> Vec<String> {
    let mut v: Vec<String> = ["DESIGN", "SECURITY", "TESTING", "MISSION", "STYLE"]
        .iter()
        .map(|n| format!("{n}.md"))
        .collect();
    // The bare upper-case document names, as in "the <NAME> invariant 3".
    v.extend(
        ["DESIGN", "SECURITY", "MISSION"]
            .iter()
            .map(|n| format!("{n} ")),
    );
    v.push(format!("{}/shared", ".."));
    v.push(format!("/work/{}", "shared"));
    v
}

/// Lines of `text` that cite an outside document, as `(line number, line)`.
fn outside_citations(text: &str, needles: &[String]) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            needles.iter().any(|n| {
                line.match_indices(n.as_str())
                    .any(|(i, _)| !line[..i].chars().next_back().is_some_and(is_word))
            })
        })
        .map(|(i, line)| (i + 1, line.trim().to_owned()))
        .collect()
}

#[test]
fn no_file_cites_documents_outside_the_repository() {
    let needles = outside_references();
    let mut found = Vec::new();
    for (path, text) in text_files() {
        for (n, line) in outside_citations(&text, &needles) {
            found.push(format!("{path}:{n}: {line}"));
        }
    }
    assert!(
        found.is_empty(),
        "these cite documents that are not in the repository; cite docs/design.md, \
         docs/faults.md or docs/security.md instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_outside_reference_scanner_finds_what_it_should() {
    let needles = outside_references();
    let sample = format!(
        "ok line\nsee {}.md §4\n// (the {} invariant 3)\nread ../{}/x\nDESIGN_NOTES and DESIGNS are fine\n",
        "DESIGN", "DESIGN", "shared"
    );
    let hits: Vec<usize> = outside_citations(&sample, &needles)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(hits, [2, 3, 4]);
}

// ------------------------------------------------------------------------ fault numbers

/// Fault numbers cited in `text`: `F<digits>` as a word, and test functions named
/// `f<digits>_…`. Returned with the line they are on.
fn cited_faults(text: &str) -> Vec<(u32, usize)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let b = line.as_bytes();
        for (at, _) in line.match_indices('F') {
            if at > 0 && is_word(char::from(b[at - 1])) {
                continue;
            }
            let digits: String = line[at + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let end = at + 1 + digits.len();
            if digits.is_empty() || line[end..].chars().next().is_some_and(is_word) {
                continue;
            }
            out.push((digits.parse().expect("digits"), i + 1));
        }
        for (at, m) in line.match_indices("fn f") {
            if at > 0 && is_word(char::from(b[at - 1])) {
                continue;
            }
            let digits: String = line[at + m.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if !digits.is_empty() && line[at + m.len() + digits.len()..].starts_with('_') {
                out.push((digits.parse().expect("digits"), i + 1));
            }
        }
    }
    out
}

/// The sections of `docs/faults.md`: number → body.
fn fault_sections(text: &str) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<u32> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("## ") {
            current = rest
                .strip_prefix('F')
                .map(|r| {
                    r.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                })
                .filter(|d| !d.is_empty())
                .map(|d| d.parse().expect("digits"));
            if let Some(n) = current {
                assert!(
                    out.insert(n, String::new()).is_none(),
                    "docs/faults.md has two sections for F{n}"
                );
            }
            continue;
        }
        if let Some(n) = current {
            let body = out.get_mut(&n).expect("section");
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[test]
fn every_cited_fault_has_an_entry_in_docs_faults_md() {
    let sections = fault_sections(&read("docs/faults.md"));
    assert!(sections.len() >= 10, "docs/faults.md lost its sections");
    let mut missing = Vec::new();
    let mut cited = BTreeSet::new();
    for (path, text) in text_files() {
        for (n, line) in cited_faults(&text) {
            cited.insert(n);
            if !sections.contains_key(&n) {
                missing.push(format!("{path}:{line}: F{n}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "cited, but docs/faults.md has no section for them:\n{}",
        missing.join("\n")
    );
    assert!(
        cited.contains(&1) && cited.contains(&21),
        "the scan must see citations"
    );
    for (n, body) in &sections {
        assert!(
            body.contains("- `") || body.contains("Not covered"),
            "docs/faults.md F{n} neither lists a test nor says what is not covered"
        );
    }
}

#[test]
fn the_fault_scanner_finds_what_it_should() {
    let sample = format!(
        "see F{a} and (F{b}, F{c}).\nF{d}x and xF{e} and 0xF{f} are not citations\nfn f{g}_crash() {{}}\nfn f{i}_value() and fn ff{h}_x()\n",
        a = 99, b = 98, c = 97, d = 1, e = 2, f = 3, g = 96, h = 4, i = 64
    );
    assert_eq!(
        cited_faults(&sample),
        [(99, 1), (98, 1), (97, 1), (96, 3), (64, 4)]
    );
    let sections = fault_sections("## F1 — a\n- `x.rs`: `t`\n## F2 — b\nNot covered.\n## Other\n");
    assert_eq!(sections.keys().copied().collect::<Vec<_>>(), [1, 2]);
}

// ------------------------------------------------------------------- tests docs name

/// The test lists of a document: lines "- `path.rs`: `test`, `test` — text" (a line
/// that wraps continues with indentation). Returns (line, path, test names).
fn listed_tests(text: &str) -> Vec<(usize, String, Vec<String>)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("- `") else {
            continue;
        };
        let Some((path, after)) = rest.split_once('`') else {
            continue;
        };
        if !has_extension(path, "rs") {
            continue;
        }
        let Some(after) = after.strip_prefix(':') else {
            panic!("line {}: a test list needs \"- `file`: `test`\"", i + 1);
        };
        let mut item = after.to_owned();
        for next in &lines[i + 1..] {
            if next.starts_with("  ") && !next.trim().is_empty() {
                item.push(' ');
                item.push_str(next.trim());
            } else {
                break;
            }
        }
        let names_part = item.split(" — ").next().unwrap_or_default();
        let names: Vec<String> = names_part
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        out.push((i + 1, path.to_owned(), names));
    }
    out
}

#[test]
fn every_test_the_docs_list_exists() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for (doc, text) in text_files() {
        if !(doc.starts_with("docs/") && has_extension(&doc, "md")) {
            continue;
        }
        for (line, path, names) in listed_tests(&text) {
            let Ok(source) = fs::read_to_string(root().join(&path)) else {
                problems.push(format!("{doc}:{line}: {path} does not exist"));
                continue;
            };
            if names.is_empty() {
                problems.push(format!("{doc}:{line}: no test named for {path}"));
            }
            for name in names {
                checked += 1;
                if !defines_fn(&source, &name) {
                    problems.push(format!("{doc}:{line}: {path} has no fn {name}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked > 50, "only {checked} tests found in docs/ lists");
}

#[test]
fn the_test_list_parser_finds_what_it_should() {
    let doc = "text\n- `a/b.rs`: `one`, `two` — what they show, with `code`\n- `c.rs`: `three`,\n  `four` — wrapped\n- `not-a-file`: x\n";
    let got = listed_tests(doc);
    assert_eq!(
        got,
        [
            (
                2,
                "a/b.rs".to_owned(),
                vec!["one".to_owned(), "two".to_owned()]
            ),
            (
                3,
                "c.rs".to_owned(),
                vec!["three".to_owned(), "four".to_owned()]
            ),
        ]
    );
    assert!(defines_fn("async fn one() {}", "one"));
    assert!(defines_fn("pub async fn two<T>() {}", "two"));
    assert!(!defines_fn("fn one_more() {}", "one"));
    assert!(!defines_fn("fn xone() {}", "one"));
}

/// Backticked names in the wgm column of the README's comparison table.
fn readme_table_names(readme: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_table = false;
    for line in readme.lines() {
        if line.starts_with("## ") {
            in_table = line.starts_with("## Compared with");
            continue;
        }
        if !in_table || !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.split('|').collect();
        let Some(wgm) = cells.get(2) else { continue };
        out.extend(wgm.split('`').skip(1).step_by(2).map(str::to_owned));
    }
    out
}

#[test]
fn every_test_the_readme_names_exists() {
    let readme = read("README.md");
    let names = readme_table_names(&readme);
    assert!(
        names.len() > 10,
        "the README's comparison table was not found"
    );
    let sources: Vec<String> = text_files()
        .into_iter()
        .filter(|(p, _)| has_extension(p, "rs"))
        .map(|(_, t)| t)
        .collect();
    let missing: Vec<&String> = names
        .iter()
        // A command quoted in the table (`wg syncconf`) is not a test name.
        .filter(|n| !n.contains(' '))
        .filter(|n| !sources.iter().any(|s| defines_fn(s, n)))
        .collect();
    assert!(
        missing.is_empty(),
        "the README's comparison table names tests that do not exist (backticks in the wgm \
         column are for test names): {missing:?}"
    );
}

// ------------------------------------------------- foreign crates in the public API

/// `src` without comments, and with string and character literals emptied.
fn strip_comments_and_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let word_before = |out: &String| out.chars().next_back().is_some_and(is_word);
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r')))
            && !word_before(&out)
            && {
                let mut j = i + if c[i] == 'b' { 2 } else { 1 };
                while c.get(j) == Some(&'#') {
                    j += 1;
                }
                c.get(j) == Some(&'"')
            }
        {
            // A raw string: r"…", r#"…"#, br"…".
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while c[j] == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            while j < c.len() {
                if c[j] == '"' && (0..hashes).all(|k| c.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' {
            // A character literal ('a', '\n', '\u{85}') or a lifetime ('a, 'static).
            if c.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Index just past the bracket that closes the one at `open` (any of `([{`).
fn matching(c: &[char], open: usize) -> usize {
    let mut depth = 0i32;
    let mut i = open;
    while i < c.len() {
        match c[i] {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    c.len()
}

fn skip_ws(c: &[char], mut i: usize) -> usize {
    while i < c.len() && c[i].is_whitespace() {
        i += 1;
    }
    i
}

fn word_at(c: &[char], i: usize) -> String {
    c[i..].iter().take_while(|ch| is_word(**ch)).collect()
}

/// Drops test modules (`#[cfg(test)] mod … { … }`) and every attribute.
fn strip_tests_and_attributes(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        if c[i] == '#' {
            let mut j = i + 1;
            if c.get(j) == Some(&'!') {
                j += 1;
            }
            if c.get(j) == Some(&'[') {
                let end = matching(&c, j);
                let attr: String = c[j..end].iter().collect();
                i = end;
                if attr.replace(' ', "") == "[cfg(test)]" {
                    let k = skip_ws(&c, i);
                    let mut w = k;
                    if word_at(&c, w) == "pub" {
                        w = skip_ws(&c, w + 3);
                    }
                    if word_at(&c, w) == "mod" {
                        let mut m = w;
                        while m < c.len() && c[m] != '{' && c[m] != ';' {
                            m += 1;
                        }
                        i = if c.get(m) == Some(&'{') {
                            matching(&c, m)
                        } else {
                            m + 1
                        };
                    }
                }
                out.push(' ');
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

/// The names a file imports, each mapped to the first segment of its path
/// (`use futures::stream::BoxStream;` → `BoxStream` ↦ `futures`), and the paths that
/// `pub use` re-exports (their first segments).
fn imports(src: &str) -> (BTreeMap<String, String>, Vec<String>) {
    fn tree(body: &str, root: Option<&str>, out: &mut BTreeMap<String, String>) {
        let body = body.trim();
        if let Some(open) = body.find('{') {
            let close = body.rfind('}').unwrap_or(body.len());
            let prefix = body[..open].trim_start_matches("::");
            let first = root.or_else(|| prefix.split("::").find(|s| !s.trim().is_empty()));
            let inner = &body[open + 1..close];
            let mut depth = 0;
            let mut start = 0;
            for (k, ch) in inner.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        tree(&inner[start..k], first, out);
                        start = k + 1;
                    }
                    _ => {}
                }
            }
            tree(&inner[start..], first, out);
            return;
        }
        let (path, alias) = match body.split_once(" as ") {
            Some((p, a)) => (p.trim(), Some(a.trim())),
            None => (body, None),
        };
        let segs: Vec<&str> = path
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let Some(&last) = segs.last() else { return };
        let Some(first) = root.or(segs.first().copied()) else {
            return;
        };
        let name = match alias {
            Some(a) => a,
            None if last == "self" => match segs.len() {
                1 => first,
                n => segs[n - 2],
            },
            None => last,
        };
        if name != "*" && name != "_" {
            out.insert(name.to_owned(), first.to_owned());
        }
    }
    let c: Vec<char> = src.chars().collect();
    let mut map = BTreeMap::new();
    let mut reexports = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if (i == 0 || !is_word(c[i - 1])) && word_at(&c, i) == "use" {
            let mut b = i;
            while b > 0 && c[b - 1].is_whitespace() {
                b -= 1;
            }
            let public = b >= 3 && c[b - 3..b] == ['p', 'u', 'b'] && (b == 3 || !is_word(c[b - 4]));
            let mut end = i;
            while end < c.len() && c[end] != ';' {
                end += 1;
            }
            let body: String = c[i + 3..end].iter().collect();
            let mut one = BTreeMap::new();
            tree(&body, None, &mut one);
            if public {
                reexports.extend(one.values().cloned());
            }
            map.extend(one);
            i = end;
        }
        i += 1;
    }
    (map, reexports)
}

/// The text of the public signatures in `src` (already stripped): public functions up to
/// their body, public fields, public type aliases and constants up to their value, the
/// headers of public structs, whole public enums (variant fields are public), and
/// public traits without the bodies of their default methods.
fn public_signatures(src: &str) -> Vec<String> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if !((i == 0 || !is_word(c[i - 1])) && word_at(&c, i) == "pub") {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = skip_ws(&c, i + 3);
        if c.get(j) == Some(&'(') {
            // pub(crate), pub(super): not public.
            i = j;
            continue;
        }
        let mut kw = word_at(&c, j);
        while matches!(kw.as_str(), "async" | "unsafe" | "extern") {
            j = skip_ws(&c, j + kw.len());
            if c.get(j) == Some(&'"') {
                j = skip_ws(&c, j + 2);
            }
            kw = word_at(&c, j);
        }
        let (text, next) = match kw.as_str() {
            "use" | "mod" => (String::new(), j + kw.len()),
            "enum" => {
                let mut k = j;
                while k < c.len() && c[k] != '{' {
                    k += 1;
                }
                let end = matching(&c, k);
                // Variant names (first word after `{` or `,` at depth 1) declare, not use.
                let mut text: String = c[start..=k].iter().collect();
                let (mut depth, mut expect_variant) = (1, true);
                let mut m = k + 1;
                while m < end {
                    let ch = c[m];
                    if depth == 1 && expect_variant && is_word(ch) {
                        m += word_at(&c, m).len();
                        text.push('_');
                        expect_variant = false;
                        continue;
                    }
                    match ch {
                        '{' | '(' | '[' | '<' => depth += 1,
                        '}' | ')' | ']' | '>' => depth -= 1,
                        ',' if depth == 1 => expect_variant = true,
                        _ => {}
                    }
                    text.push(ch);
                    m += 1;
                }
                (text, end)
            }
            "trait" => {
                let mut k = j;
                while k < c.len() && c[k] != '{' {
                    k += 1;
                }
                let end = matching(&c, k);
                let mut text: String = c[start..=k].iter().collect();
                let mut depth = 1;
                for &ch in &c[k + 1..end] {
                    match ch {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ if depth == 1 => text.push(ch),
                        _ => {}
                    }
                }
                (text, end)
            }
            _ => {
                // Up to the body, the value or the end of the field, at nesting depth 0.
                let mut depth = 0i32;
                let mut k = j;
                while k < c.len() {
                    match c[k] {
                        '-' | '=' if c.get(k + 1) == Some(&'>') => k += 1,
                        // A tuple struct: its fields are public only one by one.
                        '(' if depth == 0 && kw == "struct" => break,
                        '(' | '[' | '<' => depth += 1,
                        ')' | ']' | '>' if depth > 0 => depth -= 1,
                        // The end of the signature: its body, the end of the item or field, or the
                        // value of a constant.
                        ch if depth == 0
                            && (matches!(ch, '{' | ';' | ',' | ')' | '}')
                                || (ch == '=' && matches!(kw.as_str(), "const" | "static"))) =>
                        {
                            break
                        }
                        _ => {}
                    }
                    k += 1;
                }
                (c[start..k].iter().collect(), k)
            }
        };
        if !text.is_empty() {
            out.push(text);
        }
        i = next.max(i + 1);
    }
    out
}

/// First path segments that are not crates: ours and Rust's.
const LOCAL: &[&str] = &["crate", "self", "super", "$crate"];

/// Keywords after which the next word is the name being declared.
const DECLARING: &[&str] = &[
    "fn", "struct", "enum", "trait", "type", "const", "static", "union",
];

/// The foreign crates that the public signatures of the sources name, each with an
/// example (file and signature). `allowed` crates are not reported as violations but
/// still counted as seen.
fn foreign_crates_in_public_api(
    files: &[(String, String)],
    local_modules: &BTreeSet<String>,
) -> BTreeMap<String, (String, String)> {
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    // Upper-case heads (`Self::`, `Error::`, `T::`) are types, not crates.
    let is_local = |s: &str| {
        LOCAL.contains(&s)
            || local_modules.contains(s)
            || s.starts_with(|c: char| c.is_ascii_uppercase())
    };
    for (path, raw) in files {
        let src = strip_tests_and_attributes(&strip_comments_and_literals(raw));
        let (uses, reexports) = imports(&src);
        for first in reexports {
            if !is_local(&first) {
                seen.entry(first)
                    .or_insert_with(|| (path.clone(), "pub use".to_owned()));
            }
        }
        for sig in public_signatures(&src) {
            let c: Vec<char> = sig.chars().collect();
            let mut i = 0;
            let mut previous_word = String::new();
            while i < c.len() {
                let starts_word = is_word(c[i])
                    && !c[i].is_ascii_digit()
                    && (i == 0 || !(is_word(c[i - 1]) || c[i - 1] == '$'));
                if !starts_word {
                    i += 1;
                    continue;
                }
                let w = word_at(&c, i);
                let after_path_sep = i >= 2 && c[i - 1] == ':' && c[i - 2] == ':';
                let next = skip_ws(&c, i + w.len());
                let before_path_sep = c.get(next) == Some(&':') && c.get(next + 1) == Some(&':');
                // `name: Type` (a field or a parameter) and `fn name` declare a name.
                let declared = (c.get(next) == Some(&':') && !before_path_sep)
                    || DECLARING.contains(&previous_word.as_str());
                let krate = if after_path_sep || declared {
                    None
                } else if before_path_sep {
                    // `fmt::Display` after `use std::fmt;` is std's; `time::…` is time's.
                    Some(uses.get(&w).cloned().unwrap_or_else(|| w.clone()))
                        .filter(|k| !is_local(k))
                } else {
                    uses.get(&w).filter(|k| !is_local(k)).cloned()
                };
                previous_word.clone_from(&w);
                if let Some(k) = krate {
                    seen.entry(k).or_insert_with(|| {
                        let one_line = sig.split_whitespace().collect::<Vec<_>>().join(" ");
                        (path.clone(), one_line)
                    });
                }
                i += w.len();
            }
        }
    }
    seen
}

/// The `.rs` files of `wgm-core/src` that are not test files, and the names of its
/// modules.
fn core_sources() -> (Vec<(String, String)>, BTreeSet<String>) {
    let files: Vec<(String, String)> = text_files()
        .into_iter()
        .filter(|(p, _)| {
            p.starts_with("wgm-core/src/") && has_extension(p, "rs") && !p.ends_with("/tests.rs")
        })
        .collect();
    let mut modules = BTreeSet::new();
    for (path, text) in &files {
        let stem = Path::new(path).file_stem().expect("stem").to_string_lossy();
        modules.insert(stem.into_owned());
        let c: Vec<char> = strip_comments_and_literals(text).chars().collect();
        for (i, _) in c.iter().enumerate() {
            if (i == 0 || !is_word(c[i - 1])) && word_at(&c, i) == "mod" {
                let name = word_at(&c, skip_ws(&c, i + 3));
                if !name.is_empty() {
                    modules.insert(name);
                }
            }
        }
    }
    (files, modules)
}

/// The crates `ARCHITECTURE.md` lists under its invariant about foreign types: the
/// bullets "- `crate` …" that follow the line containing the marker.
fn documented_foreign_crates() -> BTreeSet<String> {
    let text = read("ARCHITECTURE.md");
    let marker = "public API exposes types and traits of these foreign crates only";
    let after = text
        .split_once(marker)
        .unwrap_or_else(|| panic!("ARCHITECTURE.md lost the sentence \"{marker}\""))
        .1;
    after
        .lines()
        .skip(1)
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| l.starts_with("- ") || l.starts_with("  "))
        .filter_map(|l| l.strip_prefix("- "))
        .flat_map(|l| {
            let names = l.split(':').next().unwrap_or_default();
            names
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn foreign_crates_in_the_public_api_are_the_documented_ones() {
    let documented = documented_foreign_crates();
    assert!(documented.contains("ipnet"), "{documented:?}");
    let (files, modules) = core_sources();
    let found = foreign_crates_in_public_api(&files, &modules);
    let undocumented: Vec<String> = found
        .iter()
        .filter(|(k, _)| !documented.contains(*k))
        .map(|(k, (path, sig))| format!("{k}: {path}: {sig}"))
        .collect();
    assert!(
        undocumented.is_empty(),
        "wgm-core's public signatures name crates that ARCHITECTURE.md does not list; \
         keep them out of the API or list them:\n{}",
        undocumented.join("\n")
    );
    // std is always there; every other listed crate must really be used, so that the
    // list says what the API exposes and no more.
    let unused: Vec<&String> = documented
        .iter()
        .filter(|k| !matches!(k.as_str(), "std" | "core" | "alloc") && !found.contains_key(*k))
        .collect();
    assert!(
        unused.is_empty(),
        "ARCHITECTURE.md lists crates that no public signature names: {unused:?}"
    );
}

#[test]
fn the_public_api_scanner_finds_what_it_should() {
    let src = r#"
use futures::stream::BoxStream;
use sha2::{Digest, Sha256 as Hash};
use crate::model::{Peer, ServerId};
use serde_json::{self, Value};
pub use hex::encode;

/// pub fn in_a_comment() -> argon2::Params
pub fn hash(x: &str) -> Hash { let _ = "pub fn in_a_string() -> image::Image"; todo!() }
pub(crate) fn private_one() -> subtle::Choice { todo!() }
pub struct S<'a> {
    pub when: time::OffsetDateTime,
    pub details: Value,
    hidden: argon2::Params,
    pub name: &'a str,
}
pub enum E { Bad { source: base64::DecodeError }, Fine(ServerId) }
pub trait T {
    fn feed(&self) -> BoxStream<'static, Peer>;
    fn with_default(&self) -> u8 { let d = qrcode::QrCode::new(b"x"); 0 }
}
pub const C: u8 = { zeroize::Zeroize::zeroize; 1 };
use sha1::Sha1;
use std::fmt;
pub struct Key(x25519_dalek::StaticSecret);
pub struct Id(pub uuid::Uuid);
pub enum Algorithm { Sha1, Other(u8) }
pub fn show(encode: impl fmt::Display) -> Self::Out { todo!() }
#[cfg(test)]
mod tests {
    pub fn t() -> rand::rngs::StdRng { todo!() }
}
"#;
    let files = vec![("x.rs".to_owned(), src.to_owned())];
    let found = foreign_crates_in_public_api(&files, &BTreeSet::new());
    let crates: Vec<&str> = found.keys().map(String::as_str).collect();
    assert_eq!(
        crates,
        [
            "base64",
            "futures",
            "hex",
            "serde_json",
            "sha2",
            "std",
            "time",
            "uuid"
        ],
        "{found:#?}"
    );
}

// -------------------------------------------------------------- dependency rules

/// The normal dependencies a manifest declares (`[dependencies]`,
/// `[target.….dependencies]`, `[dependencies.name]`).
fn normal_dependencies(manifest: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_end_matches(']');
            in_deps = header == "dependencies" || header.ends_with(".dependencies");
            if let Some(name) = header.strip_prefix("dependencies.") {
                out.insert(name.to_owned());
            }
            continue;
        }
        if in_deps && !line.is_empty() && !line.starts_with('#') {
            if let Some(name) = line.split(['=', '.', ' ']).next() {
                out.insert(name.trim().to_owned());
            }
        }
    }
    out
}

#[test]
fn crates_depend_only_as_docs_design_md_allows() {
    // wgm-core: no runtime, database, netlink, process, HTTP or Python crate, and none of ours.
    let core = normal_dependencies(&read("wgm-core/Cargo.toml"));
    assert!(core.contains("ipnet") && core.contains("uuid"), "{core:?}");
    let io = [
        "tokio",
        "async-std",
        "smol",
        "sqlx",
        "redis",
        "rtnetlink",
        "netlink-proto",
        "netlink-sys",
        "nix",
        "rustix",
        "libc",
        "pyo3",
        "axum",
        "hyper",
        "reqwest",
        "tower",
        "clap",
    ];
    let bad: Vec<&String> = core
        .iter()
        .filter(|d| d.starts_with("wgm-") || io.contains(&d.as_str()))
        .collect();
    assert!(bad.is_empty(), "wgm-core must not depend on {bad:?}");

    // Backends and stores: on wgm-core, never on each other.
    for krate in [
        "wgm-backend-kernel",
        "wgm-backend-userspace",
        "wgm-store-sql",
        "wgm-store-redis",
    ] {
        let deps = normal_dependencies(&read(&format!("{krate}/Cargo.toml")));
        assert!(deps.contains("wgm-core"), "{krate}: {deps:?}");
        let ours: Vec<&String> = deps
            .iter()
            .filter(|d| d.starts_with("wgm-") && *d != "wgm-core")
            .collect();
        assert!(ours.is_empty(), "{krate} depends on {ours:?}");
        // Only the Python bindings know Python.
        assert!(!deps.contains("pyo3"), "{krate} depends on pyo3");
    }
}

#[test]
fn the_manifest_reader_finds_what_it_should() {
    let m = "[package]\nname = \"x\"\n[dependencies]\nwgm-core.workspace = true\n# tokio = 1\nipnet = { workspace = true }\n[dev-dependencies]\nproptest = 1\n[target.'cfg(unix)'.dependencies]\nrustix = \"1\"\n[dependencies.serde]\nversion = \"1\"\n";
    let got: Vec<String> = normal_dependencies(m).into_iter().collect();
    assert_eq!(got, ["ipnet", "rustix", "serde", "wgm-core"]);
}

/// `docs/security.md` carries the table of what each built-in role may do, between
/// `<!-- roles:begin -->` and `<!-- roles:end -->`, exactly as
/// `wgm_core::rbac::builtin_role_table` makes it from the roles in the code.
#[test]
fn the_role_table_in_docs_security_md_is_the_built_in_roles() {
    let doc = read("docs/security.md");
    let (begin, end) = ("<!-- roles:begin -->\n", "<!-- roles:end -->");
    let start = doc
        .find(begin)
        .expect("docs/security.md has no roles:begin marker")
        + begin.len();
    let stop = doc[start..]
        .find(end)
        .expect("docs/security.md has no roles:end marker")
        + start;
    let want = wgm_core::rbac::builtin_role_table();
    assert_eq!(
        &doc[start..stop],
        want,
        "docs/security.md's role table is out of date; replace it with:\n{want}"
    );
}
