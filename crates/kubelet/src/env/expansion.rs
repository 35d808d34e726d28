//! `$(VAR)` references in environment values, `command` and `args`, expanded by Kubernetes'
//! rules (its forked `expansion` package):
//!
//! - `$(NAME)` becomes the value of `NAME` when it is defined, and stays `$(NAME)` otherwise;
//! - `$$` is an escaped `$`: `$$(NAME)` gives the literal `$(NAME)`;
//! - a `$` followed by anything else, or a `$(` never closed, is kept as written;
//! - the expansion is one pass: a value brought in by a reference is not expanded again.

/// Expands the `$(NAME)` references of `input`, looking each name up with `lookup` (`None`:
/// undefined, kept as `$(NAME)`). Pure; see the [module docs](self) for the rules.
pub(crate) fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let bytes = input.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.extend_from_slice(&bytes[checkpoint..cursor]);
            let rest = &bytes[cursor + 1..];
            let advance = match rest[0] {
                // An escaped operator: one `$`.
                b'$' => {
                    out.push(b'$');
                    1
                }
                b'(' => match rest.iter().position(|&b| b == b')') {
                    Some(close) => {
                        // Between ASCII delimiters, so a whole UTF-8 string.
                        let name = &input[cursor + 2..cursor + 1 + close];
                        match lookup(name) {
                            Some(value) => out.extend_from_slice(value.as_bytes()),
                            None => {
                                out.extend_from_slice(b"$(");
                                out.extend_from_slice(name.as_bytes());
                                out.push(b')');
                            }
                        }
                        close + 1
                    }
                    // An unclosed reference: kept, scanning on after the `(`.
                    None => {
                        out.extend_from_slice(b"$(");
                        1
                    }
                },
                // Not a reference: the operator and the byte after it, as written.
                other => {
                    out.push(b'$');
                    out.push(other);
                    1
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.extend_from_slice(&bytes[checkpoint.min(bytes.len())..]);
    // Only whole runs of the input and whole values were copied: still UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&'static str, &'static str)]) -> impl Fn(&str) -> Option<&'static str> {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        move |name| map.get(name).copied()
    }

    #[test]
    fn defined_references_are_replaced_and_undefined_ones_kept() {
        let lookup = with(&[("VAR_A", "A"), ("VAR_B", "B"), ("EMPTY", "")]);
        let cases = [
            ("$(VAR_A)", "A"),
            ("___$(VAR_A)___", "___A___"),
            ("$(VAR_A)$(VAR_B)", "AB"),
            ("$(VAR_A)-$(VAR_B)-$(VAR_C)", "A-B-$(VAR_C)"),
            ("$(EMPTY)x", "x"),
            ("$()", "$()"),
            ("no references", "no references"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &lookup), want, "input {input:?}");
        }
    }

    #[test]
    fn a_doubled_operator_escapes_a_reference() {
        let lookup = with(&[("VAR_A", "A")]);
        let cases = [
            ("$$(VAR_A)", "$(VAR_A)"),
            ("$$$(VAR_A)", "$A"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("f000-$$VAR_A", "f000-$VAR_A"),
            ("$$", "$"),
            ("$$$", "$$"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &lookup), want, "input {input:?}");
        }
    }

    #[test]
    fn malformed_references_are_kept_as_written() {
        let lookup = with(&[("VAR_A", "A")]);
        let cases = [
            ("$", "$"),
            ("x$", "x$"),
            ("$VAR_A", "$VAR_A"),
            ("${VAR_A}", "${VAR_A}"),
            ("$(VAR_A", "$(VAR_A"),
            ("$(VAR_A$(VAR_A)", "$(VAR_A$(VAR_A)"),
            ("$(VAR_A)$(", "A$("),
            ("$é$(VAR_A)", "$éA"),
            ("ünï$(VAR_A)cödé", "ünïAcödé"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &lookup), want, "input {input:?}");
        }
    }

    #[test]
    fn an_expanded_value_is_not_expanded_again() {
        let lookup = with(&[("OUTER", "$(INNER)"), ("INNER", "no")]);
        assert_eq!(expand("$(OUTER)", &lookup), "$(INNER)");
    }
}
