//! A task's standard output and error: FIFOs the shim writes to, drained here into a CRI log
//! file (one `<RFC 3339 time> <stream> <F|P> <text>` record per line) or into memory (exec),
//! and CRI log files read back as [`LogEntry`]s.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::unix::pipe;
use tokio::sync::watch;

use crate::error::{Result, RuntimeError};
use crate::types::{rfc3339_nanos, LogEntry, OutputStream};

/// Longest line kept whole; longer ones are split into partial (`P`) records.
const MAX_LINE: usize = 16 * 1024;

fn io_error(what: &str, path: &Path, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Internal(format!("{what} {}: {e}", path.display()))
}

/// Creates a FIFO at `path` (replacing a stale one) and opens its read end. It is opened
/// read-write, so it neither blocks waiting for the shim nor reads end-of-file before the
/// shim opens it; [`drain`] ends on its `done` signal instead.
pub(super) fn fifo(path: &Path) -> Result<pipe::Receiver> {
    make_fifo(path)?;
    reopen(path)
}

fn make_fifo(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("removing", path, e)),
    }
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| io_error("mkfifo", path, e))
}

/// Creates a FIFO at `path` (replacing a stale one) for a process's stdin and opens its write
/// end. It is opened read-write, so opening never waits for the shim; closing it (together
/// with containerd's `CloseIO`, which closes the shim's own write end) gives the process
/// end-of-file.
pub(super) fn stdin_fifo(path: &Path) -> Result<pipe::Sender> {
    make_fifo(path)?;
    reopen_stdin(path)
}

/// Opens the write end of an existing stdin FIFO (after a restart of the node agent).
pub(super) fn reopen_stdin(path: &Path) -> Result<pipe::Sender> {
    pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .map_err(|e| io_error("opening", path, e))
}

/// Opens the read end of an existing FIFO (after a restart of the node agent).
pub(super) fn reopen(path: &Path) -> Result<pipe::Receiver> {
    pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .map_err(|e| io_error("opening", path, e))
}

/// Reads `fifo` into `sink` until `done` turns true, then takes what is left in the pipe.
/// The caller sets `done` once the shim has flushed and closed its end (after deleting the
/// task or exec process).
pub(super) async fn drain(
    fifo: pipe::Receiver,
    mut done: watch::Receiver<bool>,
    mut sink: impl FnMut(&[u8]),
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            ready = fifo.readable() => {
                if ready.is_err() {
                    return;
                }
                match fifo.try_read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => sink(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
            changed = done.wait_for(|d| *d) => {
                let _ = changed;
                loop {
                    match fifo.try_read(&mut buf) {
                        Ok(n) if n > 0 => sink(&buf[..n]),
                        _ => return,
                    }
                }
            }
        }
    }
}

/// Writes CRI log records to one file for both streams of a container.
#[derive(Clone)]
pub(super) struct LogWriter {
    file: Arc<Mutex<std::fs::File>>,
    path: PathBuf,
}

impl LogWriter {
    /// Opens (creating it and its directory) `path` for appending.
    pub(super) fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error("creating", parent, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| io_error("opening", path, e))?;
        Ok(LogWriter {
            file: Arc::new(Mutex::new(file)),
            path: path.to_path_buf(),
        })
    }

    /// A line splitter for one stream writing into this file.
    pub(super) fn stream(&self, stream: OutputStream) -> LineSplitter {
        LineSplitter {
            writer: self.clone(),
            stream,
            pending: Vec::new(),
        }
    }

    fn record(&self, stream: OutputStream, partial: bool, text: &[u8]) {
        let mut out = format!(
            "{} {} {} ",
            rfc3339_nanos(SystemTime::now()),
            stream.as_str(),
            if partial { "P" } else { "F" }
        )
        .into_bytes();
        out.extend_from_slice(text);
        out.push(b'\n');
        // A full disk loses log lines rather than blocking the container.
        let _ = self.file.lock().write_all(&out);
    }
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("path", &self.path)
            .finish()
    }
}

/// Cuts one stream's bytes into lines and writes each as a record.
pub(super) struct LineSplitter {
    writer: LogWriter,
    stream: OutputStream,
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Takes the next bytes of the stream.
    pub(super) fn push(&mut self, mut data: &[u8]) {
        while let Some(at) = data.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&data[..at]);
            self.writer.record(self.stream, false, &self.pending);
            self.pending.clear();
            data = &data[at + 1..];
        }
        self.pending.extend_from_slice(data);
        while self.pending.len() >= MAX_LINE {
            let rest = self.pending.split_off(MAX_LINE);
            self.writer.record(self.stream, true, &self.pending);
            self.pending = rest;
        }
    }

    /// Writes a last line that had no newline.
    pub(super) fn finish(&mut self) {
        if !self.pending.is_empty() {
            self.writer.record(self.stream, false, &self.pending);
            self.pending.clear();
        }
    }
}

/// Parses CRI log records from `data`, joining partial records; `None` for a malformed one
/// (skipped). Returns the entries and how many bytes were consumed (whole lines only, and
/// never the start of a partial sequence that has not ended yet).
pub(super) fn parse_log(data: &[u8]) -> (Vec<LogEntry>, usize) {
    let mut entries = Vec::new();
    let mut consumed = 0;
    let mut at = 0;
    let mut partial: Option<LogEntry> = None;
    while let Some(end) = data[at..].iter().position(|&b| b == b'\n') {
        let line = &data[at..at + end];
        at += end + 1;
        let Some((timestamp, stream, full, text)) = parse_record(line) else {
            if partial.is_none() {
                consumed = at;
            }
            continue;
        };
        let entry = partial.get_or_insert_with(|| LogEntry {
            timestamp,
            stream,
            line: Bytes::new(),
        });
        let mut joined = entry.line.to_vec();
        joined.extend_from_slice(text);
        entry.line = joined.into();
        if full {
            entries.extend(partial.take());
            consumed = at;
        }
    }
    (entries, consumed)
}

fn parse_record(line: &[u8]) -> Option<(SystemTime, OutputStream, bool, &[u8])> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = match parts.next()? {
        b"stdout" => OutputStream::Stdout,
        b"stderr" => OutputStream::Stderr,
        _ => return None,
    };
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    Some((
        parse_rfc3339(time)?,
        stream,
        full,
        parts.next().unwrap_or_default(),
    ))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (the form [`rfc3339_nanos`] writes).
pub(super) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut hms = hms.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    let nanos = if fraction.is_empty() {
        0
    } else {
        let digits: String = fraction
            .chars()
            .chain(std::iter::repeat('0'))
            .take(9)
            .collect();
        digits.parse::<u32>().ok()?
    };
    // Howard Hinnant's days-from-civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(days * 86_400 + h * 3_600 + m * 60 + s, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_back_to_what_was_written() {
        for t in [
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH + Duration::new(951_827_696, 123_456_789),
            SystemTime::UNIX_EPOCH + Duration::new(1_704_067_200, 5),
        ] {
            assert_eq!(parse_rfc3339(&rfc3339_nanos(t)), Some(t));
        }
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn partial_records_join_and_an_unfinished_one_is_left_for_later() {
        let data = b"2024-01-01T00:00:00.000000000Z stdout P hel\n\
2024-01-01T00:00:00.000000000Z stdout F lo\n\
garbage\n\
2024-01-01T00:00:01.000000000Z stderr F boom\n\
2024-01-01T00:00:02.000000000Z stdout P unfin\n";
        let (entries, consumed) = parse_log(data);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].line, Bytes::from("hello"));
        assert_eq!(entries[1].stream, OutputStream::Stderr);
        let unfinished = b"2024-01-01T00:00:02.000000000Z stdout P unfin\n".len();
        assert_eq!(consumed, data.len() - unfinished);
    }

    #[test]
    fn lines_are_written_as_records_and_long_ones_split() {
        let dir = std::env::temp_dir().join(format!("capstan-log-{}", std::process::id()));
        let path = dir.join("c/0.log");
        let writer = LogWriter::open(&path).unwrap();
        let mut out = writer.stream(OutputStream::Stdout);
        out.push(b"one\ntw");
        out.push(b"o\nthree");
        out.finish();
        let long = vec![b'x'; MAX_LINE + 10];
        let mut err = writer.stream(OutputStream::Stderr);
        err.push(&long);
        err.push(b"\n");
        let data = std::fs::read(&path).unwrap();
        let (entries, consumed) = parse_log(&data);
        assert_eq!(consumed, data.len());
        let lines: Vec<Bytes> = entries.iter().map(|e| e.line.clone()).collect();
        assert_eq!(
            lines,
            [
                Bytes::from("one"),
                Bytes::from("two"),
                Bytes::from("three"),
                Bytes::from(long)
            ]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
