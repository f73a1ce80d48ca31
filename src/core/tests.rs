//! The boundary between the cores and the shell: no core's source names the shell.
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
    "slab",
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

/// Where `code` names the shell: a path through it, or `shell` in a `use crate::{…}` group.
fn names_the_shell(code: &str) -> Option<String> {
    for path in ["crate::shell", "super::shell", "makler::shell"] {
        if code.contains(path) {
            return Some(path.into());
        }
    }
    for root in ["crate::{", "makler::{"] {
        for (at, _) in code.match_indices(root) {
            let group = &code[at..];
            let group = &group[..group.find(';').unwrap_or(group.len())];
            if group.split(|c: char| !c.is_alphanumeric() && c != '_').any(|word| word == "shell") {
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
    assert!(offenders.is_empty(), "core modules depend on the shell (use crate::core instead):\n{offenders:#?}");
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
}
