//! The shape the code keeps (see each crate's docs): files a reader can hold in their head,
//! modules that do not import each other in a circle, and a signaling layer that talks to the
//! engine through the control protocol's types rather than untyped JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without its comments (line comments and doc comments).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string literal is rare enough here to ignore.
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The code of a file without the bodies of its inline modules (`mod tests { ... }` and the
/// like), whose `super::` means the file itself.
fn outer_code(path: &Path) -> String {
    let c = code(path);
    let mut out = String::with_capacity(c.len());
    let mut rest = c.as_str();
    while let Some(at) = find_inline_mod(rest) {
        out.push_str(&rest[..at.0]);
        let mut depth = 0;
        let mut end = rest.len();
        for (i, ch) in rest[at.1..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = at.1 + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Where the next `mod name {` starts, and where its `{` is.
fn find_inline_mod(c: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(i) = c[from..].find("mod ") {
        let start = from + i;
        let word_start =
            start == 0 || !c[..start].ends_with(|ch: char| ch.is_alphanumeric() || ch == '_');
        let after = &c[start + 4..];
        let name_len = after
            .chars()
            .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
            .count();
        let tail = after[name_len..].trim_start();
        if word_start && name_len > 0 && tail.starts_with('{') {
            let brace = c.len() - tail.len();
            return Some((start, brace));
        }
        from = start + 4;
    }
    None
}

#[test]
fn no_source_file_is_longer_than_800_lines_and_the_worker_loop_is_under_600() {
    let mut long = Vec::new();
    for dir in ["engine/src", "control/src"] {
        for f in rust_files(&root().join(dir)) {
            let n = std::fs::read_to_string(&f).unwrap().lines().count();
            let limit = if f.ends_with("worker/mod.rs") {
                599
            } else {
                800
            };
            if n > limit {
                long.push(format!("{} ({n} lines, limit {limit})", f.display()));
            }
        }
    }
    assert!(long.is_empty(), "files too long:\n{}", long.join("\n"));
}

#[test]
fn the_signaling_layer_reads_and_writes_the_engine_protocol_through_its_types() {
    let mut found = Vec::new();
    for f in rust_files(&root().join("control/src")) {
        let c = code(&f);
        for bad in [
            "json!",
            "serde_json::Value",
            "serde_json::json",
            ".request_json(",
        ] {
            if c.contains(bad) {
                found.push(format!("{}: {bad}", f.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "untyped engine protocol use:\n{}",
        found.join("\n")
    );
}

/// The first path segments of a `use` tree or path that follows a prefix such as `super::`:
/// `a`, `{a, b::c, D}` give `a`, `a b D`.
fn heads(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut item = String::new();
        let mut out = Vec::new();
        for ch in inner.chars() {
            match ch {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.extend(heads(&std::mem::take(&mut item)));
                    continue;
                }
                _ => {}
            }
            item.push(ch);
        }
        out.extend(heads(&item));
        return out;
    }
    let head: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if head.is_empty() || head == "self" {
        Vec::new()
    } else {
        vec![head]
    }
}

/// Which files of the module directory `dir` (whose module path is `module`, such as
/// `crate::worker`) each file imports: a sibling by name, or `mod` for the directory's
/// `mod.rs`.
fn imports(dir: &Path, module: &str) -> BTreeMap<String, BTreeSet<String>> {
    // The directory's files, and its subdirectories (modules of their own) as siblings the
    // files may import but whose own files are checked on their own.
    let mut modules: BTreeSet<String> = BTreeSet::new();
    let mut files: BTreeSet<String> = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let Some(name) = p.file_stem().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if p.is_dir() && p.join("mod.rs").exists() {
            modules.insert(name);
        } else if p.extension().is_some_and(|x| x == "rs") {
            modules.insert(name.clone());
            files.insert(name);
        }
    }
    let mut graph = BTreeMap::new();
    for f in &files {
        let c = outer_code(&dir.join(format!("{f}.rs")));
        let mut uses = BTreeSet::new();
        let mut note = |name: &str, from_mod_rs: bool| {
            if modules.contains(name) && name != "mod" && name != f {
                uses.insert(name.to_owned());
            } else if !from_mod_rs && f != "mod" && !modules.contains(name) {
                // An item of the parent module: defined in (or re-exported by) mod.rs.
                uses.insert("mod".to_owned());
            }
        };
        let prefixes: Vec<String> = if f == "mod" {
            vec![format!("{module}::"), "self::".into()]
        } else {
            vec!["super::".into(), format!("{module}::")]
        };
        for p in &prefixes {
            for (i, _) in c.match_indices(p.as_str()) {
                // `super::super::` and longer crate paths are not this directory's.
                if i > 0 && c[..i].ends_with(':') {
                    continue;
                }
                for h in heads(&c[i + p.len()..]) {
                    note(&h, false);
                }
            }
        }
        if f == "mod" {
            // A child referred to by its bare name: `use child::X`, `child::f()`.
            for child in &modules {
                if child == "mod" {
                    continue;
                }
                let pat = format!("{child}::");
                for (i, _) in c.match_indices(&pat) {
                    let before = c[..i].chars().next_back();
                    if !before.is_some_and(|b| b.is_alphanumeric() || b == '_' || b == ':') {
                        note(child, true);
                    }
                }
            }
        }
        graph.insert(f.clone(), uses);
    }
    graph
}

#[test]
fn no_two_files_of_a_module_import_each_other() {
    let dirs = [
        ("engine/src/worker", "crate::worker"),
        ("engine/src/media", "crate::media"),
        ("engine/src/model", "crate::model"),
        ("engine/src/ctl", "crate::ctl"),
        ("control/src/scenario", "crate::scenario"),
        ("control/src/sip", "crate::sip"),
        ("control/src/register", "crate::register"),
        ("control/src/media", "crate::media"),
        ("control/src/ua", "crate::ua"),
        ("control/src/sdp", "crate::sdp"),
        ("control/src/register/endpoint", "crate::register::endpoint"),
        ("control/src/cli", "crate::cli"),
        ("engine/src/proto", "crate::proto"),
        ("engine/src/proto/dtls", "crate::proto::dtls"),
        ("engine/src/proto/srtp", "crate::proto::srtp"),
        ("engine/src/ctl/protocol", "crate::ctl::protocol"),
        ("engine/src/io", "crate::io"),
        ("engine/src/metrics", "crate::metrics"),
    ];
    let mut circles = Vec::new();
    for (dir, module) in dirs {
        let g = imports(&root().join(dir), module);
        for (a, uses) in &g {
            for b in uses {
                if a < b && g.get(b).is_some_and(|u| u.contains(a)) {
                    circles.push(format!("{dir}: {a}.rs <-> {b}.rs"));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "modules that import each other:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_import_reader_sees_what_a_file_imports() {
    assert_eq!(heads("{a, b::c, D, self}"), ["a", "b", "D"]);
    assert_eq!(heads("x::{y, z}; more"), ["x"]);
    let dir = std::env::temp_dir().join(format!("arch-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("mod.rs"),
        "mod a;\nmod b;\nuse a::X;\npub struct M;\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("a.rs"),
        "use super::b::Y; // super::c\nmod tests {\n    use super::*;\n}\n",
    )
    .unwrap();
    std::fs::write(dir.join("b.rs"), "use super::{M, a::Z};\n").unwrap();
    let g = imports(&dir, "crate::m");
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(g["mod"], ["a".to_owned()].into());
    assert_eq!(g["a"], ["b".to_owned()].into());
    assert_eq!(g["b"], ["a".to_owned(), "mod".to_owned()].into());
}

/// Someone who clones the repository has every document it points to: no file refers to a
/// path outside it (a team folder beside the checkout, a home or build directory).
#[test]
fn no_file_refers_to_a_path_outside_the_repository() {
    let outside = ["../shared", "/work/", "/home/", "/root/"];
    let mut todo = vec![root()];
    let mut offenders = Vec::new();
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                // Build output, git's own files and fuzzing's generated corpora are not ours.
                if !matches!(name.as_str(), "target" | ".git" | "corpus" | "artifacts") {
                    todo.push(p);
                }
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue; // not text
            };
            for (n, line) in text.lines().enumerate() {
                // This test names the paths it looks for.
                if p.ends_with("tests/architecture.rs") {
                    break;
                }
                if let Some(o) = outside.iter().find(|o| line.contains(*o)) {
                    offenders.push(format!("{}:{}: {o}", p.display(), n + 1));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}
