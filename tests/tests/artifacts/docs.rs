//! The documentation held to the code: the configuration table in docs/configuration.md lists
//! exactly the environment variables the code reads; every citation of a docs page names a page
//! and a heading that exist; no comment cites a README section or a design document that is not
//! in the repository; links between the docs pages land on a heading; the README stays short and
//! the docs carry no changelog.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    // Canonical, so that no path below it contains `tests/..`.
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).canonicalize().unwrap()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `path` relative to the workspace root, with `/` separators, for messages.
fn rel(path: &Path) -> String {
    // Lexically, so that a path to a file that does not exist is named too.
    let mut normal = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                normal.pop();
            }
            std::path::Component::CurDir => {}
            other => normal.push(other),
        }
    }
    normal.strip_prefix(root()).unwrap_or(&normal).to_string_lossy().replace('\\', "/")
}

/// Every file under `dir` whose name ends with one of `exts`, leaving out build output,
/// installed dependencies, virtualenvs and other hidden directories, and the fuzz corpus.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                let corpus = name == "corpus" && path.parent().is_some_and(|p| p.ends_with("fuzz"));
                if !(name.starts_with('.') || name == "target" || name == "node_modules" || name == "dist" || corpus) {
                    walk(&path, exts, out);
                }
            } else if exts.iter().any(|ext| name.ends_with(ext)) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, exts, &mut out);
    out
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The text after each occurrence of `needle` up to `end`, with the line it starts on.
fn after<'a>(text: &'a str, needle: &str, end: char) -> Vec<(usize, &'a str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(needle) {
        let start = from + i + needle.len();
        if let Some(len) = text[start..].find(end) {
            out.push((text[..start].lines().count().max(1), &text[start..start + len]));
        }
        from = start;
    }
    out
}

/// A variable and where it is read (the first place found).
type Reads = BTreeMap<String, String>;

fn note(reads: &mut Reads, name: &str, file: &Path, line: usize) {
    if is_env_name(name) {
        reads.entry(name.to_owned()).or_insert_with(|| format!("{}:{line}", rel(file)));
    }
}

/// The environment variables a Rust source file reads. `by_name` also counts every string
/// literal that is a `TOLLGATE_`, `STRIPE_` or `AWS_` name: the configuration reads them through
/// helpers (`get("TOLLGATE_TABLE")`, `seconds(...)`, `arn(...)`, constants), and in the crates
/// scanned that way such a literal is never anything but a variable's name.
fn rust_reads(file: &Path, by_name: bool, reads: &mut Reads) {
    let text = read(file);
    // Unit tests set variables of their own; they are not configuration.
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    // Comments name variables without reading them.
    let code: String =
        text.lines().map(|l| if l.trim_start().starts_with("//") { "" } else { l }).collect::<Vec<_>>().join("\n");
    for needle in ["env::var(\"", "env::var_os(\"", "env = \"", "env!(\"", "option_env!(\""] {
        for (line, name) in after(&code, needle, '"') {
            note(reads, name, file, line);
        }
    }
    // `const NAME: &str = "X";` read with `env::var(NAME)`.
    for (line, decl) in after(&code, "const ", ';') {
        let Some((ident, value)) = decl.split_once(": &str = \"") else { continue };
        let ident = ident.trim();
        let value = value.trim_end_matches('"');
        if code.contains(&format!("var({ident})")) || code.contains(&format!("var_os({ident})")) {
            note(reads, value, file, line);
        }
    }
    if by_name {
        for (line, literal) in after(&code, "\"", '"') {
            if ["TOLLGATE_", "STRIPE_", "AWS_"].iter().any(|p| literal.starts_with(p)) {
                note(reads, literal, file, line);
            }
        }
    }
}

/// The variables a shell script or the Makefile reads from its caller: `${NAME:-default}`,
/// `${NAME:=default}`, `${NAME-default}`.
fn shell_reads(file: &Path, reads: &mut Reads) {
    let text = read(file);
    for (line, rest) in after(&text, "${", '}') {
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if rest[name.len()..].starts_with(":-")
            || rest[name.len()..].starts_with(":=")
            || rest[name.len()..].starts_with('-')
        {
            note(reads, &name, file, line);
        }
    }
}

/// The variables the console's build and browser tests read: `process.env.NAME`, unless assigned.
fn node_reads(file: &Path, reads: &mut Reads) {
    let text = read(file);
    for (line, rest) in after(&text, "process.env.", '\n') {
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let tail = rest[name.len()..].trim_start();
        let assigned = tail.starts_with('=') && !tail.starts_with("==");
        if !assigned {
            note(reads, &name, file, line);
        }
    }
}

/// Every environment variable read anywhere in the workspace's code and scripts.
fn variables_read() -> Reads {
    let root = root();
    let mut reads = Reads::new();
    for dir in ["shared", "functions", "dev", "client", "bench"] {
        for file in files(&root.join(dir), &[".rs"]) {
            let path = rel(&file);
            // Test code sets the variables it needs; it reads none a user sets.
            if path.split('/').any(|part| part == "tests" || part == "tests.rs") {
                continue;
            }
            rust_reads(&file, true, &mut reads);
        }
    }
    // The test harness reads a few a user sets (`TOLLGATE_TEST_DYNAMODB_ENDPOINT`); it also
    // names the variables it sets for the binaries it starts, so only direct reads count here.
    for file in files(&root.join("tests/src"), &[".rs"]) {
        rust_reads(&file, false, &mut reads);
    }
    let mut scripts = files(&root.join("scripts"), &[".sh"]);
    scripts.push(root.join("Makefile"));
    for file in scripts {
        shell_reads(&file, &mut reads);
    }
    for file in files(&root.join("console"), &[".ts", ".tsx", ".mjs", ".js"]) {
        node_reads(&file, &mut reads);
    }
    // Ambient variables of the shell and of Cargo, read as any program reads them: not
    // Tollgate's configuration.
    for ambient in ["HOME", "PATH", "TMPDIR", "CARGO_MANIFEST_DIR", "CARGO_TARGET_DIR"] {
        reads.remove(ambient);
    }
    reads
}

/// The variables in the table of docs/configuration.md, and how many tables the page has.
fn configuration_table() -> (BTreeMap<String, usize>, usize) {
    let text = read(&root().join("docs/configuration.md"));
    let tables = text.lines().filter(|l| l.starts_with("|---") || l.starts_with("| ---")).count();
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("| variable |") {
            in_table = true;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
        }
        if !in_table || line.starts_with("|---") {
            continue;
        }
        let first = line.trim_start_matches('|').split('|').next().unwrap_or("");
        for (i, cell) in first.split('`').enumerate() {
            if i % 2 == 1 && is_env_name(cell) {
                assert!(
                    rows.insert(cell.to_owned(), n + 1).is_none(),
                    "{cell} is listed twice in docs/configuration.md"
                );
            }
        }
    }
    (rows, tables)
}

#[test]
fn the_configuration_table_lists_every_variable_the_code_reads_and_no_other() {
    let read = variables_read();
    let (table, tables) = configuration_table();
    assert_eq!(tables, 1, "docs/configuration.md holds the one configuration table, and nothing else in a table");
    assert!(table.len() > 20, "the table of docs/configuration.md was not found (a `| variable |` header)");
    // Read by the AWS SDK's own configuration chain, so no Tollgate code names them.
    const READ_BY_THE_AWS_SDK: &[&str] = &["AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_PROFILE"];

    let missing: Vec<String> = read
        .iter()
        .filter(|(name, _)| !table.contains_key(*name))
        .map(|(name, at)| format!("{name} (read at {at})"))
        .collect();
    assert!(
        missing.is_empty(),
        "read by the code but not in the table of docs/configuration.md:\n  {}",
        missing.join("\n  ")
    );

    let unread: Vec<String> = table
        .iter()
        .filter(|(name, _)| !read.contains_key(*name) && !READ_BY_THE_AWS_SDK.contains(&name.as_str()))
        .map(|(name, line)| format!("{name} (docs/configuration.md:{line})"))
        .collect();
    assert!(unread.is_empty(), "in the table of docs/configuration.md but read by nothing:\n  {}", unread.join("\n  "));
}

/// The headings of a Markdown file (any level), outside code blocks.
fn headings(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            let heading = line.trim_start_matches('#');
            if heading.starts_with(' ') {
                out.push(heading.trim().to_owned());
            }
        }
    }
    out
}

/// Every *.rs and *.md file of the workspace.
fn sources() -> Vec<PathBuf> {
    files(&root(), &[".rs", ".md"])
}

/// Citations are written `docs/<page>.md, "<Heading text>"`, on one line.
#[test]
fn every_docs_citation_names_a_page_and_a_heading_that_exist() {
    let root = root();
    let mut pages: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    let mut failures = Vec::new();
    for file in sources() {
        let text = read(&file);
        for (n, line) in text.lines().enumerate() {
            let at = format!("{}:{}", rel(&file), n + 1);
            let mut from = 0;
            while let Some(i) = line[from..].find("docs/") {
                let start = from + i + "docs/".len();
                from = start;
                let page: String =
                    line[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
                let rest = &line[start + page.len()..];
                let Some(quoted) = rest.strip_prefix(".md, \"") else { continue };
                let Some(end) = quoted.find('"') else {
                    failures
                        .push(format!("{at}: a citation of docs/{page}.md broken across lines: keep it on one line"));
                    continue;
                };
                let heading = &quoted[..end];
                let known = pages.entry(page.clone()).or_insert_with(|| {
                    fs::read_to_string(root.join(format!("docs/{page}.md"))).ok().map(|t| headings(&t))
                });
                match known {
                    None => failures.push(format!("{at}: docs/{page}.md does not exist")),
                    Some(h) if !h.iter().any(|h| h == heading) => {
                        failures.push(format!("{at}: docs/{page}.md has no heading \"{heading}\""))
                    }
                    Some(_) => {}
                }
            }
        }
    }
    assert!(failures.is_empty(), "citations that lead nowhere:\n  {}", failures.join("\n  "));
}

#[test]
fn nothing_cites_a_readme_section_or_a_missing_design_document() {
    // Built here, so that this file does not match itself.
    let readme = "README";
    let design = ["DESIGN", ".md"].concat();
    let forms: Vec<String> = [", \"", " \"", "'s \"", ".md, \""].iter().map(|f| format!("{readme}{f}")).collect();
    let mut failures = Vec::new();
    for file in sources() {
        let text = read(&file);
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let at = format!("{}:{}", rel(&file), n + 1);
            if line.contains(&design) {
                failures.push(format!("{at}: {design} is not in the repository"));
            }
            if forms.iter().any(|f| line.contains(f.as_str())) {
                failures.push(format!("{at}: cites a README section; cite the docs page instead"));
            }
            // `(README,` at the end of one comment line and `"Heading")` at the start of the next.
            let trimmed = line.trim_end();
            if trimmed.ends_with(readme) || trimmed.ends_with(&format!("{readme},")) {
                let next = lines.get(n + 1).map(|l| l.trim_start().trim_start_matches(['/', '!', '*']).trim_start());
                if next.is_some_and(|l| l.starts_with('"')) {
                    failures.push(format!("{at}: cites a README section; cite the docs page instead"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for h in headings(text) {
        let s = slug(&h);
        let n = seen.entry(s.clone()).or_insert(0);
        out.insert(if *n == 0 { s.clone() } else { format!("{s}-{n}") });
        *n += 1;
    }
    out
}

#[test]
fn links_between_the_readme_and_the_docs_pages_land_on_a_heading() {
    let root = root();
    let mut pages = vec![root.join("README.md")];
    pages.extend(files(&root.join("docs"), &[".md"]));
    let mut failures = Vec::new();
    for page in &pages {
        let text = read(page);
        let mut fenced = false;
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
            }
            if fenced {
                continue;
            }
            for (_, target) in after(line, "](", ')') {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                let file = if path.is_empty() { page.clone() } else { page.parent().unwrap().join(path) };
                let name = rel(&file);
                // The README and the docs pages are held here; other files' links by their owners.
                if !(name == "README.md" || (name.starts_with("docs/") && name.ends_with(".md"))) {
                    continue;
                }
                let at = format!("{}:{}", rel(page), n + 1);
                let Ok(target_text) = fs::read_to_string(&file) else {
                    failures.push(format!("{at}: {target}: no such page"));
                    continue;
                };
                if !anchor.is_empty() && !anchors(&target_text).contains(anchor) {
                    failures.push(format!("{at}: {target}: no such heading in {name}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "links that lead nowhere:\n  {}", failures.join("\n  "));
}

#[test]
fn the_readme_is_short_and_the_docs_keep_no_changelog() {
    let root = root();
    let readme = read(&root.join("README.md"));
    let lines = readme.lines().count();
    assert!(lines <= 250, "README.md has {lines} lines, at most 250: move the detail to a docs page");
    let mut pages = vec![root.join("README.md")];
    pages.extend(files(&root.join("docs"), &[".md"]));
    let mut failures = Vec::new();
    for page in pages {
        for (n, line) in read(&page).lines().enumerate() {
            let lower = line.to_lowercase();
            for phrase in ["round 2", "round 3", "this round"] {
                if lower.contains(phrase) {
                    failures.push(format!("{}:{}: \"{phrase}\": git log is the changelog", rel(&page), n + 1));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
