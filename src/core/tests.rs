//! The boundary between the cores and the shell: no core's source names the shell, or any
//! other module that owns sockets or threads (the broker's set-up, the client library with its
//! registrar and announcer threads, the multicast sockets, socket set-up, shutdown).
//!
//! The rule is about dependencies, so what is checked is code: `use` paths and qualified names
//! (and the `use` lines of doc tests). Prose that links to the shell in a doc comment is not a
//! dependency and is allowed.

use std::path::{Path, PathBuf};

/// The sans-IO modules, as paths under `src/` without `.rs`: each is the file, the directory of
/// that name, or both. A module renamed away fails the test rather than drop out of it.
const CORES: &[&str] = &[
    "core",
    "protocol",
    "registry",
    "service",
    "node",
    "probe",
    "limit",
    "metrics",
    "timers",
    "sim",
    "oracles",
    "balancer/control",
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for entry in entries {
            rust_files(&entry, out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// The code of a source file: comments dropped, except the `use` lines of doc tests.
fn code(source: &str) -> String {
    let mut out = String::new();
    for line in source.lines() {
        let line = line.trim_start();
        let line = match line.strip_prefix("///").or_else(|| line.strip_prefix("//!")) {
            Some(doc) if doc.trim_start().starts_with("use ") => doc,
            Some(_) => continue,
            None if line.starts_with("//") => continue,
            None => line.split("//").next().unwrap_or(""),
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The modules that do I/O, which no core may name.
const IO: &[&str] = &["shell", "broker", "client", "multicast", "net", "shutdown"];

/// Where `code` names an I/O module: a path through it, or its name in a `use crate::{…}` group.
fn names_the_shell(code: &str) -> Option<String> {
    for module in IO {
        for root in ["crate", "super", "makler"] {
            let path = format!("{root}::{module}");
            let whole = |at: usize| !code[at + path.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_');
            if code.match_indices(&path).any(|(at, _)| whole(at)) {
                return Some(path);
            }
        }
    }
    for root in ["crate::{", "makler::{"] {
        for (at, _) in code.match_indices(root) {
            let group = &code[at..];
            let group = &group[..group.find(';').unwrap_or(group.len())];
            if group.split(|c: char| !c.is_alphanumeric() && c != '_').any(|word| IO.contains(&word)) {
                return Some(group.into());
            }
        }
    }
    None
}

#[test]
fn no_core_module_names_the_shell() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    for core in CORES {
        let mut files = Vec::new();
        rust_files(&src.join(format!("{core}.rs")), &mut files);
        rust_files(&src.join(core), &mut files);
        assert!(!files.is_empty(), "no source for the core module {core}: update CORES");
        // This file spells the paths it looks for.
        for file in files.into_iter().filter(|f| !f.ends_with("core/tests.rs")) {
            let source = std::fs::read_to_string(&file).unwrap();
            if let Some(what) = names_the_shell(&code(&source)) {
                offenders.push(format!("{}: {what}", file.strip_prefix(&src).unwrap_or(&file).display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "core modules depend on the shell or other I/O (take what they need from crate::core):\n{offenders:#?}"
    );
}

#[test]
fn the_check_sees_imports_but_not_prose() {
    assert!(names_the_shell(&code("use crate::shell::Outbox;")).is_some());
    assert!(names_the_shell(&code("use crate::{protocol, shell::Shell};")).is_some());
    assert!(names_the_shell(&code("    let x = crate::shell::Shell::new(core);")).is_some());
    assert!(names_the_shell(&code("//! use makler::shell::Core;")).is_some());
    assert!(names_the_shell(&code("//! The [`Shell`](crate::shell::Shell) feeds it.")).is_none());
    assert!(names_the_shell(&code("use crate::core::{Core, Outbox}; // not the shell")).is_none());
    assert!(names_the_shell(&code("use crate::{protocol, registry};\nlet shell = 1;")).is_none());
    assert!(names_the_shell(&code("use crate::client::{Announcer, Registrar};")).is_some());
    assert!(names_the_shell(&code("let at = crate::network::X;")).is_none());
}
