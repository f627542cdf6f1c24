//! The committed fuzz corpus (`fuzz/corpus/<target>/`, grown by `make fuzz`) replayed through
//! the same target bodies cargo-fuzz runs (`tollgate_tests::fuzz`), on stable, so every input
//! that ever found new code stays a regression test. An empty or missing corpus fails.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

#[test]
fn every_corpus_input_of_every_target_passes() {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus"));
    let mut failures = vec![];
    for (target, run) in tollgate_tests::fuzz::TARGETS {
        let dir = root.join(target);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (the corpus is committed; `make fuzz` grows it)", dir.display()))
            .map(|entry| entry.expect("a corpus entry").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "no corpus for {target} in {}", dir.display());
        for input in &inputs {
            let data = std::fs::read(input).expect("a corpus file");
            if std::panic::catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failures.push(input.display().to_string());
            }
        }
        eprintln!("{target}: {} inputs", inputs.len());
    }
    assert!(failures.is_empty(), "corpus inputs that fail: {failures:#?}");
}
