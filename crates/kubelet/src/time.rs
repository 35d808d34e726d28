//! Conversions from the runtime's `SystemTime`s to API timestamps.

use std::time::{Duration, SystemTime};

use capstan_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use capstan_api::k8s_openapi::jiff::Timestamp;

fn timestamp(t: SystemTime, whole_seconds: bool) -> Timestamp {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let since = if whole_seconds {
        Duration::from_secs(since.as_secs())
    } else {
        Duration::from_micros(since.as_micros() as u64)
    };
    Timestamp::from_second(since.as_secs() as i64)
        .ok()
        .and_then(|ts| ts.checked_add(jiff_nanos(since.subsec_nanos())).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn jiff_nanos(nanos: u32) -> capstan_api::k8s_openapi::jiff::SignedDuration {
    capstan_api::k8s_openapi::jiff::SignedDuration::from_nanos(i64::from(nanos))
}

/// `t` as an API `Time` (whole seconds, as Kubernetes stores it).
pub(crate) fn time(t: SystemTime) -> Time {
    Time(timestamp(t, true))
}

/// `t` as an API `MicroTime` (microseconds).
pub(crate) fn micro_time(t: SystemTime) -> MicroTime {
    MicroTime(timestamp(t, false))
}

/// `t` back as a `SystemTime`.
pub(crate) fn system_time(t: &Time) -> SystemTime {
    let secs = t.0.as_second();
    if secs < 0 {
        return SystemTime::UNIX_EPOCH;
    }
    SystemTime::UNIX_EPOCH + Duration::new(secs as u64, t.0.subsec_nanosecond().max(0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_truncated_to_seconds_and_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_704_067_200, 500_000_000);
        let api = time(t);
        assert_eq!(api.0.to_string(), "2024-01-01T00:00:00Z");
        assert_eq!(
            system_time(&api),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_067_200)
        );
        assert_eq!(micro_time(t).0.to_string(), "2024-01-01T00:00:00.5Z");
    }
}
