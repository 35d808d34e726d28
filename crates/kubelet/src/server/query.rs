//! The query strings of the kubelet's API: container log options (`v1.PodLogOptions` as the
//! kubelet decodes them) and the stream options of exec, attach and port-forward.

use std::time::{Duration, SystemTime};

use capstan_api::k8s_openapi::jiff::Timestamp;
use capstan_runtime::StdioOptions;

/// Decodes `a=1&b=x%20y&b=z` into pairs, in order (repeated keys kept).
pub(crate) fn pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// Percent-decoding with `+` as a space (form encoding); invalid escapes are kept as is.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of `key`, as Go's `url.Values.Get` gives it.
fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Go's `strconv.ParseBool`.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Why a log query was refused, with the kubelet's status and text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QueryError {
    /// A value does not parse: 400 `{"message": "Unable to decode query."}`.
    #[error("{{\"message\": \"Unable to decode query.\"}}")]
    Undecodable,
    /// The options are inconsistent or out of range: 422 `{"message": "Invalid request."}`.
    #[error("{{\"message\": \"Invalid request.\"}}")]
    Invalid,
}

/// Container log options (`v1.PodLogOptions` minus `container`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LogQuery {
    pub(crate) follow: bool,
    pub(crate) previous: bool,
    pub(crate) timestamps: bool,
    pub(crate) tail_lines: Option<u64>,
    pub(crate) limit_bytes: Option<u64>,
    pub(crate) since_seconds: Option<u64>,
    pub(crate) since_time: Option<SystemTime>,
}

impl LogQuery {
    /// Parses and validates the query as the kubelet does (`tail` is the old name of
    /// `tailLines`, `tail=all` meaning no limit).
    pub(crate) fn parse(query: &str) -> Result<Self, QueryError> {
        let pairs = pairs(query);
        let boolean = |key: &str| -> Result<bool, QueryError> {
            match first(&pairs, key) {
                None => Ok(false),
                Some(v) => parse_bool(v).ok_or(QueryError::Undecodable),
            }
        };
        let integer = |key: &str| -> Result<Option<i64>, QueryError> {
            first(&pairs, key)
                .map(|v| v.parse::<i64>().map_err(|_| QueryError::Undecodable))
                .transpose()
        };
        let mut tail = integer("tailLines")?;
        if let Some(old) = first(&pairs, "tail") {
            tail = match old {
                "all" => None,
                v => Some(v.parse::<i64>().map_err(|_| QueryError::Undecodable)?),
            };
        }
        let limit = integer("limitBytes")?;
        let since_seconds = integer("sinceSeconds")?;
        let since_time = first(&pairs, "sinceTime")
            .map(|v| {
                v.parse::<Timestamp>()
                    .map_err(|_| QueryError::Undecodable)
                    .map(to_system_time)
            })
            .transpose()?;
        let query = LogQuery {
            follow: boolean("follow")?,
            previous: boolean("previous")?,
            timestamps: boolean("timestamps")?,
            tail_lines: match tail {
                Some(n) if n < 0 => return Err(QueryError::Invalid),
                n => n.map(|n| n as u64),
            },
            limit_bytes: match limit {
                Some(n) if n < 1 => return Err(QueryError::Invalid),
                n => n.map(|n| n as u64),
            },
            since_seconds: match since_seconds {
                Some(n) if n < 1 => return Err(QueryError::Invalid),
                n => n.map(|n| n as u64),
            },
            since_time,
        };
        if query.since_seconds.is_some() && query.since_time.is_some() {
            return Err(QueryError::Invalid);
        }
        Ok(query)
    }

    /// The earliest time of the lines wanted: `sinceTime`, or `now - sinceSeconds`.
    pub(crate) fn since(&self, now: SystemTime) -> Option<SystemTime> {
        self.since_time.or_else(|| {
            self.since_seconds.map(|s| {
                now.checked_sub(Duration::from_secs(s))
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            })
        })
    }
}

fn to_system_time(ts: Timestamp) -> SystemTime {
    let nanos = ts.as_nanosecond();
    if nanos <= 0 {
        return SystemTime::UNIX_EPOCH;
    }
    SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos as u64)
}

/// Exec and attach options: the command (repeated `command`) and the streams (`input`,
/// `output`, `error`, `tty`, each `1` or `true`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StreamQuery {
    pub(crate) command: Vec<String>,
    pub(crate) stdio: StdioOptions,
}

impl StreamQuery {
    /// Parses the options; a terminal drops stderr (it is merged into stdout), and at least
    /// one stream is required (the error is the kubelet's text).
    pub(crate) fn parse(query: &str) -> Result<Self, String> {
        let pairs = pairs(query);
        let flag = |key: &str| matches!(first(&pairs, key), Some("1" | "true"));
        let tty = flag("tty");
        let stdio = StdioOptions {
            stdin: flag("input"),
            stdout: flag("output"),
            stderr: flag("error") && !tty,
            tty,
        };
        if !stdio.stdin && !stdio.stdout && !stdio.stderr {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        Ok(StreamQuery {
            command: pairs
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect(),
            stdio,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_percent_decoded_and_repeated_keys_kept_in_order() {
        assert_eq!(
            pairs("command=sh&command=-c&command=echo%20a+b%26c&x"),
            vec![
                ("command".to_string(), "sh".to_string()),
                ("command".to_string(), "-c".to_string()),
                ("command".to_string(), "echo a b&c".to_string()),
                ("x".to_string(), String::new()),
            ]
        );
        assert_eq!(pairs("a=%zz%4"), vec![("a".into(), "%zz%4".into())]);
    }

    #[test]
    fn log_options_parse_with_go_booleans_and_the_old_tail_name() {
        let q = LogQuery::parse(
            "follow=true&previous=1&timestamps=T&tailLines=3&limitBytes=10&sinceSeconds=5",
        )
        .unwrap();
        assert!(q.follow && q.previous && q.timestamps);
        assert_eq!(
            (q.tail_lines, q.limit_bytes, q.since_seconds),
            (Some(3), Some(10), Some(5))
        );
        assert_eq!(LogQuery::parse("tail=7").unwrap().tail_lines, Some(7));
        assert_eq!(
            LogQuery::parse("tailLines=2&tail=all").unwrap().tail_lines,
            None
        );
        assert_eq!(LogQuery::parse("").unwrap(), LogQuery::default());
        let t = LogQuery::parse("sinceTime=2024-01-01T00:00:01.5Z").unwrap();
        assert_eq!(
            t.since_time,
            Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_704_067_201_500))
        );
    }

    #[test]
    fn bad_log_options_are_refused_with_the_kubelets_texts() {
        for bad in [
            "follow=yes",
            "tailLines=x",
            "sinceTime=yesterday",
            "limitBytes=1.5",
        ] {
            assert_eq!(LogQuery::parse(bad), Err(QueryError::Undecodable), "{bad}");
        }
        for invalid in [
            "tailLines=-1",
            "limitBytes=0",
            "sinceSeconds=0",
            "sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z",
        ] {
            assert_eq!(
                LogQuery::parse(invalid),
                Err(QueryError::Invalid),
                "{invalid}"
            );
        }
        assert_eq!(
            QueryError::Undecodable.to_string(),
            r#"{"message": "Unable to decode query."}"#
        );
    }

    #[test]
    fn since_is_the_given_time_or_now_less_the_seconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let q = LogQuery::parse("sinceSeconds=30").unwrap();
        assert_eq!(
            q.since(now),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(70))
        );
        assert_eq!(LogQuery::default().since(now), None);
    }

    #[test]
    fn stream_options_take_one_or_true_and_a_terminal_drops_stderr() {
        let q = StreamQuery::parse("command=ls&command=-l&output=1&error=true&input=0").unwrap();
        assert_eq!(q.command, vec!["ls".to_string(), "-l".to_string()]);
        assert_eq!(q.stdio, StdioOptions::output());
        let tty = StreamQuery::parse("input=1&output=1&error=1&tty=1").unwrap();
        assert!(tty.stdio.tty && tty.stdio.stdin && !tty.stdio.stderr);
        assert_eq!(
            StreamQuery::parse("command=ls&error=0").unwrap_err(),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        assert!(StreamQuery::parse("tty=1&error=1").is_err());
    }
}
