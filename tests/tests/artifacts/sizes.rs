//! Rooms stay small: no source file holds more than [`MAX_LINES`] lines before its tests, so a
//! file keeps one reason to change and a new rule lands in a file of its own. Test code (the
//! `tests/` crate, benches, fuzz targets, a module's `tests.rs`, and what follows a
//! `#[cfg(test)]` line) is not counted.

use std::path::{Path, PathBuf};

/// Lines a source file may have before its first `#[cfg(test)]` line.
const MAX_LINES: usize = 500;

/// The folders that hold shipped code.
const SOURCE_ROOTS: &[&str] = &["shared/src", "functions", "dev/src", "client/src"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !matches!(path.file_name().and_then(|n| n.to_str()), Some("target" | "tests" | "node_modules")) {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().is_some_and(|n| n != "tests.rs") {
            out.push(path);
        }
    }
}

/// Lines before the first `#[cfg(test)]`, or all of them.
fn lines_before_tests(text: &str) -> usize {
    text.lines().position(|l| l.trim_start().starts_with("#[cfg(test)]")).unwrap_or_else(|| text.lines().count())
}

#[test]
fn no_source_file_grows_past_its_room() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = vec![];
    for dir in SOURCE_ROOTS {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} source files under {SOURCE_ROOTS:?}", files.len());
    let mut over: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = lines_before_tests(&std::fs::read_to_string(f).ok()?);
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.strip_prefix(&root).unwrap_or(f).display()))
        })
        .collect();
    over.sort();
    assert!(over.is_empty(), "over {MAX_LINES} lines before their tests (split them by concern): {over:#?}");
}

#[test]
fn the_count_stops_at_the_tests() {
    assert_eq!(lines_before_tests("a\nb\n#[cfg(test)]\nmod tests {}\n"), 2);
    assert_eq!(lines_before_tests("a\nb\nc\n"), 3);
}
