//! Label selectors in their Kubernetes string form, parsed into kube-core's [`Selector`].
//!
//! The grammar is apimachinery's `labels.Parse`: comma-separated requirements, each one of
//! `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key`
//! (exists) or `!key` (does not exist). Whitespace between tokens is ignored and the empty
//! string selects everything. Keys must be qualified names and values label values, as
//! Kubernetes validates them. Kubernetes' `key>1` and `key<1` parse but are rejected, since
//! kube-core's [`Expression`] has no such operators.
//!
//! Matching is kube-core's [`SelectorExt::matches`]; [`matches()`] adds the "no labels" case.
//!
//! Errors are [`SelectorError`]s; `?` turns one into [`Error::BadRequest`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube_core::{Expression, Selector, SelectorExt};

use crate::error::Error;

/// A label or field selector that could not be parsed or validated.
///
/// Every message names the offending text. Converts into [`Error::BadRequest`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// The text does not follow the selector grammar.
    #[error("unable to parse requirement: found '{found}', expected: {expected}")]
    Syntax {
        /// The token found (empty at the end of input).
        found: String,
        /// What the grammar allows there.
        expected: String,
    },
    /// The operator exists in Kubernetes but cannot be represented (`>` and `<`).
    #[error("operator {operator} is not supported")]
    UnsupportedOperator {
        /// The operator as written.
        operator: String,
    },
    /// A label key is not a valid qualified name.
    #[error("invalid label key {key:?}: {reason}")]
    InvalidKey {
        /// The key as written.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A label value is not a valid label value.
    #[error("invalid label value {value:?}: {reason}")]
    InvalidValue {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A structured requirement has an unknown operator or the wrong number of values.
    #[error("invalid requirement for key {key:?}: {reason}")]
    InvalidRequirement {
        /// The requirement's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A field selector term is malformed (no operator, bad escape, unescaped `,` or `=`).
    #[error("invalid field selector {term:?}: {reason}")]
    InvalidField {
        /// The offending term.
        term: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl From<SelectorError> for Error {
    fn from(error: SelectorError) -> Self {
        Error::bad_request(error.to_string())
    }
}

/// Parses a Kubernetes label selector string, e.g. `app=web,tier in (a,b),!canary`.
///
/// The empty string (or only whitespace) gives the selector that matches everything.
/// Requirements keep their written order; `Display` of the result parses back to it.
pub fn parse_label_selector(selector: &str) -> Result<Selector, SelectorError> {
    Parser::new(selector).parse()
}

/// Converts a structured `metav1.LabelSelector` (as in a Deployment's `spec.selector`),
/// validating operators, value counts, keys and values as Kubernetes does.
///
/// An empty `LabelSelector` matches everything. (A missing one, in Kubernetes, matches
/// nothing; callers holding an `Option` decide that themselves.)
pub fn label_selector_from(selector: &LabelSelector) -> Result<Selector, SelectorError> {
    for requirement in selector.match_expressions.iter().flatten() {
        let key = &requirement.key;
        let values = requirement.values.as_deref().unwrap_or_default();
        let reason = match requirement.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                Some("values set can't be empty for 'In' and 'NotIn'".to_string())
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                Some("values set must be empty for 'Exists' and 'DoesNotExist'".to_string())
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => None,
            other => Some(format!("{other:?} is not a valid label selector operator")),
        };
        if let Some(reason) = reason {
            return Err(SelectorError::InvalidRequirement {
                key: key.clone(),
                reason,
            });
        }
        validate_key(key)?;
        values.iter().try_for_each(|v| validate_value(v))?;
    }
    for (key, value) in selector.match_labels.iter().flatten() {
        validate_key(key)?;
        validate_value(value)?;
    }
    Selector::try_from(selector.clone()).map_err(|e| SelectorError::InvalidRequirement {
        key: String::new(),
        reason: e.0,
    })
}

/// Whether `selector` matches an object's labels; `None` (no labels) is the empty set.
pub fn matches(selector: &Selector, labels: Option<&BTreeMap<String, String>>) -> bool {
    match labels {
        Some(labels) => selector.matches(labels),
        None => selector.matches(&BTreeMap::new()),
    }
}

/// Validates a label key as a Kubernetes qualified name: an optional DNS-subdomain prefix
/// (at most 253 characters) and `/`, then a name of at most 63 characters of
/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn validate_key(key: &str) -> Result<(), SelectorError> {
    let invalid = |reason: &str| SelectorError::InvalidKey {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err(invalid("prefix part must be non-empty"));
        }
        if prefix.len() > 253 {
            return Err(invalid("prefix part must be no more than 253 characters"));
        }
        if !is_dns_subdomain(prefix) {
            return Err(invalid(
                "prefix part must be a lowercase RFC 1123 subdomain (e.g. 'example.com')",
            ));
        }
    }
    if name.is_empty() {
        return Err(invalid("name part must be non-empty"));
    }
    if name.len() > 63 {
        return Err(invalid("name part must be no more than 63 characters"));
    }
    if !is_label_name(name) {
        return Err(invalid(
            "name part must consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character",
        ));
    }
    Ok(())
}

/// Validates a label value: empty, or at most 63 characters of
/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn validate_value(value: &str) -> Result<(), SelectorError> {
    let invalid = |reason: &str| SelectorError::InvalidValue {
        value: value.to_string(),
        reason: reason.to_string(),
    };
    if value.len() > 63 {
        return Err(invalid("must be no more than 63 characters"));
    }
    if !value.is_empty() && !is_label_name(value) {
        return Err(invalid(
            "must consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character",
        ));
    }
    Ok(())
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`
fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Lowercase RFC 1123 subdomain: dot-separated labels of `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let bytes = label.as_bytes();
            match (bytes.first(), bytes.last()) {
                (Some(first), Some(last)) => {
                    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
                    alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
                }
                _ => false,
            }
        })
}

/// A token of apimachinery's label selector lexer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token<'a> {
    Identifier(&'a str),
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Bang,
    GreaterThan,
    LessThan,
    OpenParen,
    CloseParen,
    Comma,
    End,
    /// A run of operator characters that forms no operator, e.g. `=!`.
    Unknown(&'a str),
}

impl Token<'_> {
    fn text(&self) -> &str {
        match self {
            Token::Identifier(s) | Token::Unknown(s) => s,
            Token::In => "in",
            Token::NotIn => "notin",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::Bang => "!",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
            Token::OpenParen => "(",
            Token::CloseParen => ")",
            Token::Comma => ",",
            Token::End => "",
        }
    }

    /// In value position `in` and `notin` are ordinary identifiers.
    fn as_value(self) -> Self {
        match self {
            Token::In => Token::Identifier("in"),
            Token::NotIn => Token::Identifier("notin"),
            other => other,
        }
    }
}

/// apimachinery's lexer separates tokens by exactly these.
fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn special_token(s: &str) -> Option<Token<'_>> {
    Some(match s {
        "=" => Token::Equals,
        "==" => Token::DoubleEquals,
        "!=" => Token::NotEquals,
        "!" => Token::Bang,
        ">" => Token::GreaterThan,
        "<" => Token::LessThan,
        "(" => Token::OpenParen,
        ")" => Token::CloseParen,
        "," => Token::Comma,
        _ => return None,
    })
}

fn lex(input: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut rest = input;
    loop {
        rest = rest.trim_start_matches(is_whitespace);
        let Some(first) = rest.chars().next() else {
            tokens.push(Token::End);
            return tokens;
        };
        if is_special(first) {
            // Longest run of operator characters that still forms a token, as apimachinery.
            let run_len = rest.find(|c: char| !is_special(c)).unwrap_or(rest.len());
            let run = &rest[..run_len];
            let longest = (1..=run.len())
                .rev()
                .find_map(|len| special_token(&run[..len]).map(|t| (t, len)));
            match longest {
                Some((token, len)) => {
                    tokens.push(token);
                    rest = &rest[len..];
                }
                None => {
                    tokens.push(Token::Unknown(run));
                    rest = &rest[run_len..];
                }
            }
        } else {
            let end = rest
                .find(|c: char| is_special(c) || is_whitespace(c))
                .unwrap_or(rest.len());
            let word = &rest[..end];
            tokens.push(match word {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier(word),
            });
            rest = &rest[end..];
        }
    }
}

/// Recursive-descent parser following apimachinery's `labels.Parser`.
struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    position: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Parser {
            tokens: lex(input),
            position: 0,
        }
    }

    fn peek(&self) -> Token<'a> {
        self.tokens
            .get(self.position)
            .copied()
            .unwrap_or(Token::End)
    }

    fn next(&mut self) -> Token<'a> {
        let token = self.peek();
        if token != Token::End {
            self.position += 1;
        }
        token
    }

    fn parse(mut self) -> Result<Selector, SelectorError> {
        let mut expressions = Vec::new();
        loop {
            match self.peek().as_value() {
                Token::Identifier(_) | Token::Bang => {
                    expressions.push(self.parse_requirement()?);
                    match self.next() {
                        Token::End => break,
                        Token::Comma => match self.peek().as_value() {
                            Token::Identifier(_) | Token::Bang => {}
                            other => return Err(syntax(other, "identifier after ','")),
                        },
                        other => return Err(syntax(other, "',' or 'end of string'")),
                    }
                }
                Token::End => break,
                other => return Err(syntax(other, "!, identifier, or 'end of string'")),
            }
        }
        Ok(expressions.into_iter().collect())
    }

    fn parse_requirement(&mut self) -> Result<Expression, SelectorError> {
        let negated = self.peek() == Token::Bang;
        if negated {
            self.next();
        }
        let key = match self.next().as_value() {
            Token::Identifier(key) => key.to_string(),
            other => return Err(syntax(other, "identifier")),
        };
        validate_key(&key)?;
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(if negated {
                Expression::DoesNotExist(key)
            } else {
                Expression::Exists(key)
            });
        }
        if negated {
            return Err(syntax(self.peek(), "',' or 'end of string'"));
        }
        match self.next() {
            Token::In => Ok(Expression::In(key, self.parse_value_set()?)),
            Token::NotIn => Ok(Expression::NotIn(key, self.parse_value_set()?)),
            Token::Equals | Token::DoubleEquals => {
                Ok(Expression::Equal(key, self.parse_exact_value()?))
            }
            Token::NotEquals => Ok(Expression::NotEqual(key, self.parse_exact_value()?)),
            operator @ (Token::GreaterThan | Token::LessThan) => {
                Err(SelectorError::UnsupportedOperator {
                    operator: operator.text().to_string(),
                })
            }
            other => Err(syntax(other, "[=, ==, !=, in, notin]")),
        }
    }

    fn parse_exact_value(&mut self) -> Result<String, SelectorError> {
        match self.peek().as_value() {
            Token::End | Token::Comma => Ok(String::new()),
            Token::Identifier(value) => {
                self.next();
                validate_value(value)?;
                Ok(value.to_string())
            }
            other => Err(syntax(other, "identifier")),
        }
    }

    fn parse_value_set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        match self.next() {
            Token::OpenParen => {}
            other => return Err(syntax(other, "'('")),
        }
        let mut values = BTreeSet::new();
        // `()` is the set holding the empty value, as in apimachinery.
        if self.peek() == Token::CloseParen {
            self.next();
            values.insert(String::new());
            return Ok(values);
        }
        loop {
            match self.next().as_value() {
                Token::Identifier(value) => {
                    validate_value(value)?;
                    values.insert(value.to_string());
                    match self.peek() {
                        Token::Comma => {}
                        Token::CloseParen => {
                            self.next();
                            return Ok(values);
                        }
                        other => return Err(syntax(other, "',' or ')'")),
                    }
                }
                Token::Comma => {
                    // `(,a)`, `(a,)` and `(a,,b)` each hold the empty value too.
                    if values.is_empty() {
                        values.insert(String::new());
                    }
                    match self.peek() {
                        Token::CloseParen => {
                            self.next();
                            values.insert(String::new());
                            return Ok(values);
                        }
                        Token::Comma => {
                            self.next();
                            values.insert(String::new());
                        }
                        _ => {}
                    }
                }
                other => return Err(syntax(other, "',', ')' or identifier")),
            }
        }
    }
}

fn syntax(found: Token<'_>, expected: &str) -> SelectorError {
    SelectorError::Syntax {
        found: found.text().to_string(),
        expected: expected.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selects(selector: &str, pairs: &[(&str, &str)]) -> bool {
        let selector = parse_label_selector(selector).unwrap();
        matches(&selector, Some(&labels(pairs)))
    }

    #[test]
    fn set_form_with_negation_matches_only_non_canary_pods() {
        let selector = "app=web,tier in (a,b),!canary";
        assert!(selects(selector, &[("app", "web"), ("tier", "a")]));
        assert!(selects(
            selector,
            &[("app", "web"), ("tier", "b"), ("x", "y")]
        ));
        assert!(!selects(
            selector,
            &[("app", "web"), ("tier", "a"), ("canary", "true")]
        ));
        assert!(!selects(selector, &[("app", "web"), ("tier", "c")]));
        assert!(!selects(selector, &[("app", "api"), ("tier", "a")]));
        assert!(!selects(selector, &[("tier", "a")]));
    }

    #[test]
    fn parsed_requirements_keep_their_kube_core_shape() {
        let selector = parse_label_selector("app=web, tier in (a, b), !canary").unwrap();
        let expected: Selector = [
            Expression::Equal("app".into(), "web".into()),
            Expression::In("tier".into(), ["a".to_string(), "b".to_string()].into()),
            Expression::DoesNotExist("canary".into()),
        ]
        .into_iter()
        .collect();
        assert_eq!(selector, expected);
    }

    #[test]
    fn double_equals_means_equals() {
        assert_eq!(
            parse_label_selector("app==web").unwrap(),
            parse_label_selector("app=web").unwrap()
        );
        assert!(selects("app==web", &[("app", "web")]));
    }

    #[test]
    fn not_equals_also_matches_objects_without_the_label() {
        assert!(selects("env!=prod", &[("env", "dev")]));
        assert!(selects("env!=prod", &[]));
        assert!(!selects("env!=prod", &[("env", "prod")]));
    }

    #[test]
    fn notin_excludes_listed_values_and_matches_missing_labels() {
        assert!(selects("env notin (prod,staging)", &[("env", "dev")]));
        assert!(selects("env notin (prod,staging)", &[]));
        assert!(!selects("env notin (prod,staging)", &[("env", "staging")]));
    }

    #[test]
    fn bare_key_requires_the_label_to_exist() {
        assert!(selects("gpu", &[("gpu", "")]));
        assert!(!selects("gpu", &[("cpu", "x")]));
        assert!(selects("!gpu", &[("cpu", "x")]));
    }

    #[test]
    fn empty_selector_matches_everything_including_unlabelled_objects() {
        let everything = parse_label_selector("  ").unwrap();
        assert!(everything.selects_all());
        assert!(matches(&everything, None));
        assert!(matches(&everything, Some(&labels(&[("a", "b")]))));
    }

    #[test]
    fn missing_labels_are_treated_as_no_labels() {
        let selector = parse_label_selector("!canary,env!=prod").unwrap();
        assert!(matches(&selector, None));
        let selector = parse_label_selector("app").unwrap();
        assert!(!matches(&selector, None));
    }

    #[test]
    fn empty_values_are_allowed() {
        assert!(selects("app=", &[("app", "")]));
        assert!(selects("app in (),b", &[("app", ""), ("b", "1")]));
        assert_eq!(
            parse_label_selector("app in (,x)").unwrap(),
            Expression::In("app".into(), [String::new(), "x".to_string()].into()).into()
        );
    }

    #[test]
    fn prefixed_keys_and_keyword_values_parse() {
        assert!(selects(
            "app.kubernetes.io/name=web,x in (in,notin)",
            &[("app.kubernetes.io/name", "web"), ("x", "notin")]
        ));
    }

    #[test]
    fn malformed_selectors_are_rejected_with_the_offending_text() {
        for (input, needle) in [
            ("app in (a", "found ''"),
            ("=web", "found '='"),
            ("app=we b", "found 'b'"),
            ("in (a)", "found '('"),
            ("app=web,", "found ''"),
            ("app=(x)", "found '('"),
            ("!app=web", "found '='"),
            ("app notin a", "found 'a'"),
            ("app =! web", "found '!'"),
        ] {
            let error = parse_label_selector(input).unwrap_err();
            assert!(
                matches!(error, SelectorError::Syntax { .. }),
                "{input}: {error:?}"
            );
            assert!(error.to_string().contains(needle), "{input}: {error}");
        }
    }

    #[test]
    fn invalid_keys_and_values_are_rejected() {
        for input in [
            "-app=web",
            "Example.com/app=web",
            "/app",
            "a/b/c=d",
            "app=web-",
            "app in (a,b_)",
        ] {
            let error = parse_label_selector(input).unwrap_err();
            assert!(
                matches!(
                    error,
                    SelectorError::InvalidKey { .. } | SelectorError::InvalidValue { .. }
                ),
                "{input}: {error:?}"
            );
        }
        let long = "a".repeat(64);
        assert!(parse_label_selector(&format!("app={long}")).is_err());
        assert!(parse_label_selector(&long).is_err());
        assert!(parse_label_selector(&format!("{}/app", "a".repeat(254))).is_err());
        assert!(parse_label_selector(&format!("{}/app", "a".repeat(63))).is_ok());
    }

    #[test]
    fn greater_and_less_than_are_reported_as_unsupported() {
        let error = parse_label_selector("replicas>5").unwrap_err();
        assert_eq!(error.to_string(), "operator > is not supported");
        let error = parse_label_selector("replicas < 5").unwrap_err();
        assert_eq!(error.to_string(), "operator < is not supported");
    }

    #[test]
    fn selector_errors_become_bad_requests() {
        let error: Error = parse_label_selector("app in (a").unwrap_err().into();
        assert_eq!(error.code(), 400);
        assert!(error.to_string().starts_with("unable to parse requirement"));
    }

    #[test]
    fn structured_label_selectors_convert_and_match() {
        let selector = label_selector_from(&LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        })
        .unwrap();
        assert!(matches(
            &selector,
            Some(&labels(&[("app", "web"), ("tier", "fe")]))
        ));
        assert!(!matches(
            &selector,
            Some(&labels(&[("app", "web"), ("tier", "db")]))
        ));
        assert!(label_selector_from(&LabelSelector::default())
            .unwrap()
            .selects_all());
    }

    #[test]
    fn structured_label_selectors_with_bad_requirements_are_rejected() {
        let requirement = |operator: &str, values: Option<Vec<String>>| LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: operator.into(),
                values,
            }]),
        };
        for selector in [
            requirement("Gt", Some(vec!["1".into()])),
            requirement("In", None),
            requirement("NotIn", Some(vec![])),
            requirement("Exists", Some(vec!["x".into()])),
        ] {
            let error = label_selector_from(&selector).unwrap_err();
            assert!(
                matches!(error, SelectorError::InvalidRequirement { .. }),
                "{error:?}"
            );
        }
        let bad_key = LabelSelector {
            match_labels: Some(labels(&[("bad key", "x")])),
            match_expressions: None,
        };
        assert!(matches!(
            label_selector_from(&bad_key),
            Err(SelectorError::InvalidKey { .. })
        ));
    }

    fn name_part() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,10}[a-zA-Z0-9])?"
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            name_part(),
            ("[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,2}", name_part())
                .prop_map(|(prefix, name)| format!("{prefix}/{name}")),
            Just("in".to_string()),
            Just("notin".to_string()),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), Just("in".to_string()), name_part()]
    }

    fn expression() -> impl Strategy<Value = Expression> {
        let set = || prop::collection::btree_set(value(), 1..4);
        prop_oneof![
            (key(), value()).prop_map(|(k, v)| Expression::Equal(k, v)),
            (key(), value()).prop_map(|(k, v)| Expression::NotEqual(k, v)),
            (key(), set()).prop_map(|(k, vs)| Expression::In(k, vs)),
            (key(), set()).prop_map(|(k, vs)| Expression::NotIn(k, vs)),
            key().prop_map(Expression::Exists),
            key().prop_map(Expression::DoesNotExist),
        ]
    }

    proptest! {
        #[test]
        fn display_of_any_valid_selector_parses_back_to_it(
            expressions in prop::collection::vec(expression(), 0..5)
        ) {
            let selector: Selector = expressions.into_iter().collect();
            let text = selector.to_string();
            prop_assert_eq!(parse_label_selector(&text).unwrap(), selector, "{}", text);
        }
    }
}
