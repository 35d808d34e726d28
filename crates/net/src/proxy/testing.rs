//! Golden-file assertions for the rule generators' tests.

use std::path::PathBuf;

/// Compares `actual` with `src/proxy/testdata/<name>`. With `CAPSTAN_BLESS=1` in the
/// environment the file is (re)written instead, to be reviewed in the diff.
pub(crate) fn assert_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/proxy/testdata")
        .join(name);
    if std::env::var_os("CAPSTAN_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read golden file {}: {error} (CAPSTAN_BLESS=1 writes it)",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the generated text at line {}:\n  golden:    {:?}\n  generated: {:?}\n--- generated ---\n{actual}",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first),
        );
    }
}
