//! Durations written as Go writes them (`metav1.Duration`): `15s`, `1m30s`, `500ms`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration in a configuration file: a string in Go's `time.ParseDuration` syntax (a sign,
/// then numbers with units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`, e.g. `1m30s`), printed as
/// Go prints it. May be negative (validation refuses that where it matters); `0s` is zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration {
    nanos: i64,
}

impl GoDuration {
    /// Zero.
    pub const ZERO: GoDuration = GoDuration { nanos: 0 };

    /// `seconds` seconds.
    pub const fn from_secs(seconds: i64) -> Self {
        GoDuration {
            nanos: seconds * 1_000_000_000,
        }
    }

    /// The duration in nanoseconds.
    pub fn as_nanos(self) -> i64 {
        self.nanos
    }

    /// Whether it is zero.
    pub fn is_zero(self) -> bool {
        self.nanos == 0
    }

    /// The duration, `None` when negative.
    pub fn to_std(self) -> Option<Duration> {
        u64::try_from(self.nanos).ok().map(Duration::from_nanos)
    }

    /// Parses Go's duration syntax.
    ///
    /// Errors: a message naming the text, as Go's `time: invalid duration "..."`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("time: invalid duration {text:?}");
        let (negative, mut rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        if rest == "0" {
            return Ok(GoDuration::ZERO);
        }
        if rest.is_empty() {
            return Err(invalid());
        }
        let mut total: f64 = 0.0;
        while !rest.is_empty() {
            let number_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| format!("time: missing unit in duration {text:?}"))?;
            let number = &rest[..number_end];
            if number.is_empty() || number == "." {
                return Err(invalid());
            }
            let value: f64 = number.parse().map_err(|_| invalid())?;
            rest = &rest[number_end..];
            let unit_end = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = match &rest[..unit_end] {
                "ns" => 1.0,
                "us" | "µs" | "μs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                other => return Err(format!("time: unknown unit {other:?} in duration {text:?}")),
            };
            rest = &rest[unit_end..];
            total += value * unit;
        }
        if total > i64::MAX as f64 {
            return Err(invalid());
        }
        let nanos = total.round() as i64;
        Ok(GoDuration {
            nanos: if negative { -nanos } else { nanos },
        })
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        GoDuration {
            nanos: i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        }
    }
}

/// `value / 10^digits` with the fraction's trailing zeros dropped: `fraction(1500, 3)` is
/// `1.5`.
fn fraction(value: u64, digits: u32) -> String {
    let scale = 10u64.pow(digits);
    let (whole, frac) = (value / scale, value % scale);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0width$}", width = digits as usize);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

impl fmt::Display for GoDuration {
    /// As Go's `Duration.String`: `0s`, `1.5s`, `1m30s`, `2h0m0s`, `500ms`, `1µs`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos < 0 {
            f.write_str("-")?;
        }
        let n = self.nanos.unsigned_abs();
        if n == 0 {
            return f.write_str("0s");
        }
        if n < 1_000 {
            return write!(f, "{n}ns");
        }
        if n < 1_000_000 {
            return write!(f, "{}µs", fraction(n, 3));
        }
        if n < 1_000_000_000 {
            return write!(f, "{}ms", fraction(n, 6));
        }
        let (hours, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
        let (minutes, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if hours > 0 || minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        write!(f, "{}s", fraction(rest, 9))
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        GoDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::GoDuration;

    #[test]
    fn go_durations_parse_and_print_as_go_does() {
        for (text, nanos, printed) in [
            ("15s", 15_000_000_000, "15s"),
            ("1m30s", 90_000_000_000, "1m30s"),
            ("1.5s", 1_500_000_000, "1.5s"),
            ("500ms", 500_000_000, "500ms"),
            ("2h", 7_200_000_000_000, "2h0m0s"),
            ("0", 0, "0s"),
            ("-3s", -3_000_000_000, "-3s"),
            ("10us", 10_000, "10µs"),
        ] {
            let d = GoDuration::parse(text).unwrap();
            assert_eq!(d.as_nanos(), nanos, "{text}");
            assert_eq!(d.to_string(), printed, "{text}");
        }
        assert_eq!(
            GoDuration::parse("15").unwrap_err(),
            "time: missing unit in duration \"15\""
        );
        assert_eq!(
            GoDuration::parse("3d").unwrap_err(),
            "time: unknown unit \"d\" in duration \"3d\""
        );
        assert!(GoDuration::parse("").is_err());
    }
}
