//! Layering of `wgm-core`'s top-level modules, read from the source text.
//!
//! `reconcile` is pure: it derives the desired state, plans and decides what verifies an
//! apply, and knows nothing of the `manager`, which orchestrates it (authorize, load,
//! read the host, plan, execute, verify, record). So `manager` may use `reconcile` and
//! never the other way round. More generally the graph of top-level modules, built from
//! the `crate::<top>` paths in code (use lines, grouped `crate::{…}` imports, inline
//! paths, and `super::super::<top>` from a submodule), has no cycle.
//!
//! The graph is read from text, not from the compiler: a path built by a macro would
//! slip through; comments (`//`, `///`, `//!`) are ignored, so doc links are not edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Dependencies between top-level modules that exist on purpose, with the direction
/// allowed; the reverse is a layering error.
const ALLOWED: &[(&str, &str, &str)] = &[(
    "manager",
    "reconcile",
    "the manager orchestrates apply/plan/status around the pure reconciler",
)];

/// Paths that no file under `src/reconcile/` may contain, comments included.
const FORBIDDEN_IN_RECONCILE: &[&str] = &["crate::manager", "super::super::manager"];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its path relative to `src/`, sorted.
fn sources(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// The module path of a file relative to `src/`: `reconcile/plan.rs` is
/// `[reconcile, plan]`, `reconcile/mod.rs` is `[reconcile]`, `lib.rs` is `[]`.
fn module_path(rel: &str) -> Vec<String> {
    let stem = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = stem.split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The top-level modules `text` (the file at module path `me`) refers to, by path.
fn referenced_tops(text: &str, me: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        // `crate::x`, and `crate::{x, y::z}`.
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    out.insert(first_segment(item.trim()));
                }
            } else {
                out.insert(first_segment(after));
            }
            rest = after;
        }
        // `super::super::x` from a submodule resolves to a top-level module when the
        // chain climbs to the crate root.
        let mut rest = code;
        while let Some(at) = rest.find("super::") {
            let mut after = &rest[at..];
            let mut ups = 0;
            while let Some(a) = after.strip_prefix("super::") {
                ups += 1;
                after = a;
            }
            if ups == me.len() {
                out.insert(first_segment(after));
            }
            rest = after;
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn first_segment(path: &str) -> String {
    path.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The graph of top-level modules: `a -> {b}` when a file of `a` names `b`.
fn module_graph(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let tops: BTreeSet<String> = files
        .iter()
        .filter_map(|(rel, _)| module_path(rel).first().cloned())
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, text) in files {
        let me = module_path(rel);
        let Some(top) = me.first() else { continue };
        let deps = graph.entry(top.clone()).or_default();
        for t in referenced_tops(text, &me) {
            if t != *top && tops.contains(&t) {
                deps.insert(t);
            }
        }
    }
    graph
}

/// One cycle of `graph` (as the list of modules around it), if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(n.to_owned());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_owned());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

/// What is wrong with the layering of these files (empty: nothing).
fn layering_errors(files: &[(String, String)]) -> Vec<String> {
    let mut errors = Vec::new();
    for (rel, text) in files {
        if !rel.starts_with("reconcile/") {
            continue;
        }
        for bad in FORBIDDEN_IN_RECONCILE {
            if text.contains(bad) {
                errors.push(format!(
                    "src/{rel} mentions `{bad}`: reconcile must not depend on the manager"
                ));
            }
        }
    }
    let graph = module_graph(files);
    for (from, to, why) in ALLOWED {
        if graph.get(*to).is_some_and(|d| d.contains(*from)) {
            errors.push(format!(
                "{to} depends on {from}; only {from} -> {to} is allowed ({why})"
            ));
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        errors.push(format!(
            "cycle between top-level modules: {}",
            cycle.join(" -> ")
        ));
    }
    errors
}

fn crate_sources() -> Vec<(String, String)> {
    let src = src_dir();
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    files
}

#[test]
fn reconcile_does_not_depend_on_the_manager_and_modules_form_no_cycle() {
    let files = crate_sources();
    assert!(
        files.iter().any(|(rel, _)| rel.starts_with("reconcile/")),
        "src/reconcile/ not found"
    );
    let errors = layering_errors(&files);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn the_allowed_direction_is_the_one_in_use() {
    // The parser sees the real dependency: otherwise the checks above prove nothing.
    let graph = module_graph(&crate_sources());
    for (from, to, _) in ALLOWED {
        assert!(
            graph.get(*from).is_some_and(|d| d.contains(*to)),
            "{from} -> {to} not found in {graph:?}"
        );
    }
}

/// The checks fail on the old layout, where the reconciler's file imported the manager
/// (`use crate::manager::{LiveSnapshot, Manager};`), and on the other spellings.
#[test]
fn the_checks_fail_when_reconcile_reaches_for_the_manager() {
    let manager = (
        "manager/mod.rs".to_owned(),
        "use crate::reconcile::DesiredHost;\n".to_owned(),
    );
    for reconcile in [
        "use crate::manager::{LiveSnapshot, Manager};\n",
        "use crate::{backend::DeviceState, manager::Manager};\n",
        "fn f(m: &crate::manager::Manager) {}\n",
        "use super::super::manager::Manager;\n",
    ] {
        let files = vec![
            manager.clone(),
            ("reconcile/plan.rs".to_owned(), reconcile.to_owned()),
        ];
        let errors = layering_errors(&files);
        assert!(
            errors.iter().any(|e| e.contains("cycle")),
            "{reconcile}: {errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("only manager -> reconcile")),
            "{reconcile}: {errors:?}"
        );
    }
    // A cycle elsewhere fails too, a comment is no edge, and a clean tree passes.
    let files = vec![
        ("a.rs".to_owned(), "use crate::b::X;\n".to_owned()),
        ("b/mod.rs".to_owned(), "use crate::a::Y;\n".to_owned()),
    ];
    assert!(layering_errors(&files)[0].contains("a -> b -> a"));
    let files = vec![
        ("a.rs".to_owned(), "use crate::b::X;\n".to_owned()),
        (
            "b/mod.rs".to_owned(),
            "/// See [`crate::a::Y`].\n".to_owned(),
        ),
        manager,
    ];
    assert_eq!(layering_errors(&files), Vec::<String>::new());
}
