//! The JSON spellings of Kubernetes' time types: RFC 3339 timestamps and Go duration strings.

/// Seconds since 1970 of Go's zero `time.Time` (0001-01-01T00:00:00Z), which Kubernetes'
/// marshaller writes for an unset non-pointer `metav1.Time` and JSON spells `null`.
pub const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// `seconds` since 1970 in UTC as RFC 3339 (`2024-01-02T03:04:05Z`), with `fraction_digits`
/// digits of `nanos` (0 for `metav1.Time`, 6 for `metav1.MicroTime`).
pub fn rfc3339(seconds: i64, nanos: u32, fraction_digits: u32) -> String {
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let fraction = if fraction_digits == 0 {
        String::new()
    } else {
        let scaled = nanos.min(999_999_999) / 10u32.pow(9 - fraction_digits.min(9));
        format!(".{scaled:0width$}", width = fraction_digits as usize)
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60
    )
}

/// `nanos` as Go's `time.Duration.String` spells it: `1h2m3.5s`, `1.5ms`, `0s`.
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let magnitude = nanos.unsigned_abs();
    if magnitude < 1_000_000_000 {
        // Below a second: the largest unit that keeps a whole part.
        let (unit, scale) = match magnitude {
            0..1_000 => ("ns", 1),
            1_000..1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", with_fraction(magnitude, scale));
    }
    let hours = magnitude / 3_600_000_000_000;
    let minutes = magnitude / 60_000_000_000 % 60;
    let seconds = with_fraction(magnitude % 60_000_000_000, 1_000_000_000);
    let mut out = String::from(sign);
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{seconds}s"));
    out
}

/// `value / scale` with the fraction's trailing zeros dropped (`1500, 1000` → `1.5`).
fn with_fraction(value: u64, scale: u64) -> String {
    let (whole, fraction) = (value / scale, value % scale);
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = scale.ilog10() as usize;
    let text = format!("{fraction:0digits$}");
    format!("{whole}.{}", text.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_becomes_rfc3339_seconds() {
        assert_eq!(rfc3339(1_704_164_645, 0, 0), "2024-01-02T03:04:05Z");
        assert_eq!(rfc3339(0, 0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(-1, 0, 0), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(GO_ZERO_TIME_SECONDS, 0, 0), "0001-01-01T00:00:00Z");
    }

    #[test]
    fn a_micro_time_keeps_six_fraction_digits() {
        assert_eq!(
            rfc3339(1_704_164_645, 123_456_789, 6),
            "2024-01-02T03:04:05.123456Z"
        );
        assert_eq!(rfc3339(1_704_164_645, 0, 6), "2024-01-02T03:04:05.000000Z");
    }

    #[test]
    fn a_duration_reads_as_go_prints_it() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(90_500_000_000), "1m30.5s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(2_000), "2µs");
        assert_eq!(go_duration(7), "7ns");
        assert_eq!(go_duration(-5_000_000_000), "-5s");
        assert_eq!(go_duration(i64::MIN), "-2562047h47m16.854775808s");
    }
}
