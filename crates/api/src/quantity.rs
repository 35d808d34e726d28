//! Kubernetes resource quantities (`100m`, `1Gi`, `1e3`, `0.5`), parsed exactly with
//! apimachinery's grammar, so that every component reads the same amount from the same string.
//!
//! ```text
//! quantity        ::= signedNumber suffix
//! signedNumber    ::= number | sign number          sign ::= "+" | "-"
//! number          ::= digits | digits "." digits | digits "." | "." digits
//! suffix          ::= binarySI | decimalExponent | decimalSI
//! binarySI        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! decimalSI       ::= n | u | m | "" | k | M | G | T | P | E
//! decimalExponent ::= "e" signedNumber | "E" signedNumber   (an integer exponent)
//! ```
//!
//! The registry refuses a quantity that does not parse, so the scheduler and the kubelet never
//! meet one; [`ParsedQuantity::milli_value`] and [`ParsedQuantity::value`] round up and
//! saturate at `i64::MAX` in magnitude, as apimachinery's `MilliValue` and `Value` do.
//!
//! ```
//! use capstan_api::quantity::ParsedQuantity;
//!
//! let cpu: ParsedQuantity = "100m".parse().unwrap();
//! assert_eq!(cpu.milli_value(), 100);
//! assert_eq!("1Gi".parse::<ParsedQuantity>().unwrap().value(), 1 << 30);
//! assert!("1GB".parse::<ParsedQuantity>().is_err());
//! ```

use std::{cmp::Ordering, fmt, str::FromStr};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Kubernetes' message for a quantity that does not parse (the regular expression it quotes
/// is apimachinery's rough form; the grammar in the [module docs](self) is the exact one).
pub const QUANTITY_FORMAT_MESSAGE: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Significant digits kept of a mantissa; further digits are dropped, rounding up.
const MAX_DIGITS: usize = 36;

/// A quantity that does not follow the grammar; its text is [`QUANTITY_FORMAT_MESSAGE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuantityError;

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(QUANTITY_FORMAT_MESSAGE)
    }
}

impl std::error::Error for QuantityError {}

/// An exactly parsed quantity: `±mantissa × 10^exp10 × 2^exp2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedQuantity {
    negative: bool,
    mantissa: u128,
    exp10: i64,
    exp2: u32,
}

impl FromStr for ParsedQuantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, QuantityError> {
        parse_quantity(s)
    }
}

/// Parses `s` with Kubernetes' quantity grammar (see the [module docs](self)).
///
/// Errors: [`QuantityError`] for anything else (`1GB`, `abc`, `--1`, `1.2.3`, an empty string).
pub fn parse_quantity(s: &str) -> Result<ParsedQuantity, QuantityError> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let int = &s[int_start..i];
    let mut frac = "";
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        frac = &s[start..i];
    }
    if int.is_empty() && frac.is_empty() {
        return Err(QuantityError);
    }
    let (mut exp10, exp2): (i64, u32) = match &s[i..] {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        suffix => (decimal_exponent(suffix)?, 0),
    };
    // The digits as one integer, `frac.len()` places after the point.
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    exp10 -= frac.len() as i64;
    let (kept, dropped) = digits.split_at(digits.len().min(MAX_DIGITS));
    let mut mantissa: u128 = if kept.is_empty() {
        0
    } else {
        kept.parse().map_err(|_| QuantityError)?
    };
    if !dropped.is_empty() {
        exp10 += dropped.len() as i64;
        if dropped.bytes().any(|b| b != b'0') {
            mantissa += 1;
        }
    }
    Ok(ParsedQuantity {
        negative: negative && mantissa != 0,
        mantissa,
        exp10,
        exp2,
    })
}

/// `e<signed integer>` or `E<signed integer>`.
fn decimal_exponent(suffix: &str) -> Result<i64, QuantityError> {
    let rest = suffix.strip_prefix(['e', 'E']).ok_or(QuantityError)?;
    let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QuantityError);
    }
    rest.parse::<i32>()
        .map(i64::from)
        .map_err(|_| QuantityError)
}

impl ParsedQuantity {
    /// Whether the amount is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// The amount in thousandths (`100m` is 100, `1` is 1000), rounded up, saturating.
    pub fn milli_value(&self) -> i64 {
        self.scaled(3)
    }

    /// The amount in units (`1Ki` is 1024, `1500m` is 2), rounded up, saturating.
    pub fn value(&self) -> i64 {
        self.scaled(0)
    }

    /// The amount × 10^`decimals`, its magnitude rounded up, saturating at `i64::MAX`.
    fn scaled(&self, decimals: i64) -> i64 {
        let magnitude = self.magnitude(decimals).min(i64::MAX as u128) as i64;
        if self.negative {
            -magnitude
        } else {
            magnitude
        }
    }

    /// |amount| × 10^`decimals`, rounded up, saturating at `u128::MAX`.
    fn magnitude(&self, decimals: i64) -> u128 {
        if self.mantissa == 0 {
            return 0;
        }
        let Some(shifted) = 1u128
            .checked_shl(self.exp2)
            .and_then(|factor| self.mantissa.checked_mul(factor))
        else {
            return u128::MAX;
        };
        let exp = self.exp10 + decimals;
        if exp >= 0 {
            u32::try_from(exp)
                .ok()
                .and_then(|exp| 10u128.checked_pow(exp))
                .and_then(|factor| shifted.checked_mul(factor))
                .unwrap_or(u128::MAX)
        } else {
            match u32::try_from(-exp).ok().and_then(|e| 10u128.checked_pow(e)) {
                Some(divisor) => shifted.div_ceil(divisor),
                // Smaller than any unit we count in: one, rounded up.
                None => 1,
            }
        }
    }
}

impl PartialOrd for ParsedQuantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ParsedQuantity {
    /// Compares the amounts, exact to a nano-unit (10^-9), beyond which quantities do not go.
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.magnitude(9), other.magnitude(9));
        match (self.negative, other.negative) {
            (false, false) => a.cmp(&b),
            (true, true) => b.cmp(&a),
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
        }
    }
}

/// Parsing for k8s-openapi's [`Quantity`].
pub trait QuantityExt {
    /// The parsed amount; see [`parse_quantity`].
    fn parse(&self) -> Result<ParsedQuantity, QuantityError>;
}

impl QuantityExt for Quantity {
    fn parse(&self) -> Result<ParsedQuantity, QuantityError> {
        parse_quantity(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> ParsedQuantity {
        s.parse().unwrap_or_else(|_| panic!("{s} should parse"))
    }

    #[test]
    fn kubernetes_quantities_parse_exactly_and_round_up() {
        let cases: &[(&str, i64, i64)] = &[
            ("100m", 100, 1),
            ("1", 1000, 1),
            ("2.5", 2500, 3),
            ("0.5", 500, 1),
            ("1Ki", 1024 * 1000, 1024),
            ("1Gi", 1_073_741_824_000, 1_073_741_824),
            ("1.5k", 1_500_000, 1500),
            ("1e3", 1_000_000, 1000),
            ("1E3", 1_000_000, 1000),
            ("5e-3", 5, 1),
            ("0.0001", 1, 1),
            ("500M", 500_000_000_000, 500_000_000),
            ("1E", i64::MAX, 1_000_000_000_000_000_000),
            ("+1", 1000, 1),
            ("-1", -1000, -1),
            ("1.", 1000, 1),
            (".5", 500, 1),
            ("10n", 1, 1),
            ("0", 0, 0),
            ("-0", 0, 0),
            ("1e100", i64::MAX, i64::MAX),
            (
                "100000000000000000000000000000000000000000Ei",
                i64::MAX,
                i64::MAX,
            ),
        ];
        for (s, milli, value) in cases {
            assert_eq!(q(s).milli_value(), *milli, "milli of {s}");
            assert_eq!(q(s).value(), *value, "value of {s}");
        }
    }

    #[test]
    fn strings_outside_the_grammar_are_refused() {
        for s in [
            "",
            "1GB",
            "abc",
            "--1",
            "+-1",
            "1.2.3",
            ".",
            "1x",
            "1 ",
            " 1",
            "1e",
            "1e+",
            "1ee3",
            "1Kii",
            "1k1",
            "1i",
            "m",
            "1E3.5",
            "1e99999999999",
        ] {
            assert_eq!(
                parse_quantity(s),
                Err(QuantityError),
                "{s:?} should be refused"
            );
        }
    }

    #[test]
    fn quantities_compare_by_amount() {
        assert!(q("500m") < q("1"));
        assert_eq!(q("1000m").cmp(&q("1")), Ordering::Equal);
        assert!(q("1Gi") > q("1G"));
        assert!(q("-2") < q("-1"));
        assert!(q("-1") < q("0"));
        assert!(q("1e3") == q("1e3"));
        assert_eq!(q("1k").cmp(&q("1e3")), Ordering::Equal);
    }

    #[test]
    fn negative_amounts_are_reported() {
        assert!(q("-100m").is_negative());
        assert!(!q("100m").is_negative());
        assert!(q("0").is_zero());
        assert!(Quantity("1Gi".into()).parse().is_ok());
        assert!(Quantity("1GB".into()).parse().is_err());
    }
}
