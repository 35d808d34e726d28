//! The commands a fake container has when its image scripts nothing else, like a busybox
//! image: `true`, `false`, `:`, `echo`, `cat`, `ls`, `env`, `printenv`, `hostname`, `pwd`,
//! `whoami`, `id`, `sleep`, `date`, `mkdir`, `rm`, `touch`, `test`/`[`, `stty`, `tar` (see
//! [`super::tar`]), `httpd` and `nc -l` (see [`super::httpd`]) and `sh` (see
//! [`super::shell`]). Messages follow busybox's.
//!
//! A command that is not found exits 127 with runc's message on stderr.

use std::sync::Arc;
use std::time::Duration;

use super::fs::{normalize_path, FileInfo, FileKind, FsError};
use super::process::{clock_sleep, run_in_place, write_out, FakeProcess};
use super::{httpd, shell, tar, ImageBehaviour};
use crate::types::civil_from_days as civil;

/// The built-in command names.
const BUILTINS: &[&str] = &[
    "true", "false", ":", "echo", "cat", "ls", "env", "printenv", "hostname", "pwd", "whoami",
    "id", "sleep", "mkdir", "rm", "touch", "test", "[", "stty", "tar", "sh", "ash", "date",
    "httpd", "nc",
];

/// Whether `name` (a bare name or a path) is a command of the image: scripted or built in.
pub(super) fn has_command(behaviour: &ImageBehaviour, name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    behaviour.exec.contains_key(name)
        || behaviour.exec_stream.contains_key(name)
        || behaviour.exec.contains_key(base)
        || behaviour.exec_stream.contains_key(base)
        || (!behaviour.no_builtins && BUILTINS.contains(&base))
}

/// Runs built-in command `argv` with `p`'s stdio; returns its exit code.
pub(super) async fn run(
    behaviour: &Arc<ImageBehaviour>,
    p: &mut FakeProcess,
    argv: Vec<String>,
) -> i32 {
    let name = argv[0].rsplit('/').next().unwrap_or(&argv[0]).to_string();
    let args = &argv[1..];
    let name = if behaviour.no_builtins {
        ""
    } else {
        name.as_str()
    };
    match name {
        "true" | ":" => 0,
        "false" => 1,
        "echo" => echo(p, args).await,
        "cat" => cat(p, args).await,
        "ls" => ls(p, args).await,
        "env" => env(behaviour, p, args).await,
        "printenv" => printenv(p, args).await,
        "hostname" => {
            let line = format!("{}\n", p.hostname);
            status(p.print(line).await)
        }
        "pwd" => {
            let line = format!("{}\n", p.cwd);
            status(p.print(line).await)
        }
        "whoami" => status(p.print("root\n").await),
        "id" => status(
            p.print("uid=0(root) gid=0(root) groups=0(root),10(wheel)\n")
                .await,
        ),
        "sleep" => sleep(p, args).await,
        "date" => date(p, args).await,
        "httpd" => httpd::httpd(p, args).await,
        "nc" => httpd::nc(p, args).await,
        "mkdir" => mkdir(p, args).await,
        "rm" => rm(p, args).await,
        "touch" => touch(p, args).await,
        "test" => test_with(p, args),
        "[" => match args.split_last() {
            Some((last, rest)) if last == "]" => test_with(p, rest),
            _ => {
                let _ = p.eprint("[: missing ]\n").await;
                2
            }
        },
        "stty" => stty(p, args).await,
        "tar" => tar::run(p, args).await,
        "sh" | "ash" => shell::run(behaviour, p, args).await,
        _ => {
            let message = format!(
                "OCI runtime exec failed: exec failed: unable to start container process: exec: {:?}: executable file not found in $PATH: unknown\n",
                argv[0]
            );
            let _ = p.eprint(message).await;
            127
        }
    }
}

/// 0 if the output could be written, 1 otherwise (the reader went away).
fn status(written: std::io::Result<()>) -> i32 {
    if written.is_ok() {
        0
    } else {
        1
    }
}

async fn echo(p: &mut FakeProcess, args: &[String]) -> i32 {
    let mut newline = true;
    let mut escapes = false;
    let mut words = args;
    while let Some((first, rest)) = words.split_first() {
        if first.len() > 1
            && first.starts_with('-')
            && first[1..].chars().all(|c| "neE".contains(c))
        {
            for c in first[1..].chars() {
                match c {
                    'n' => newline = false,
                    'e' => escapes = true,
                    _ => escapes = false,
                }
            }
            words = rest;
        } else {
            break;
        }
    }
    let mut out = words.join(" ");
    if escapes {
        out = unescape(&out);
    }
    if newline {
        out.push('\n');
    }
    status(p.print(out).await)
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

async fn cat(p: &mut FakeProcess, args: &[String]) -> i32 {
    let files: Vec<&String> = args
        .iter()
        .filter(|a| !(a.starts_with('-') && a.len() > 1))
        .collect();
    if files.is_empty() {
        return copy_stdin(p).await;
    }
    let mut code = 0;
    for file in files {
        if file == "-" {
            code = code.max(copy_stdin(p).await);
            continue;
        }
        match p.files.read(&normalize_path(&p.cwd, file)) {
            Ok(data) => {
                if write_out(&mut p.stdout, &data).await.is_err() {
                    return 1;
                }
            }
            Err(FsError::IsADirectory) => {
                let _ = p.eprint("cat: read error: Is a directory\n").await;
                code = 1;
            }
            Err(e) => {
                let _ = p.eprint(format!("cat: can't open '{file}': {e}\n")).await;
                code = 1;
            }
        }
    }
    code
}

async fn copy_stdin(p: &mut FakeProcess) -> i32 {
    let FakeProcess { stdin, stdout, .. } = p;
    let mut buf = vec![0u8; 8192];
    loop {
        use tokio::io::AsyncReadExt;
        match stdin.read(&mut buf).await {
            Ok(0) => return 0,
            Ok(n) => {
                if write_out(stdout, &buf[..n]).await.is_err() {
                    return 1;
                }
            }
            Err(_) => return 1,
        }
    }
}

fn mode_string(info: &FileInfo) -> String {
    let mut s = String::with_capacity(10);
    s.push(if info.kind == FileKind::Directory {
        'd'
    } else {
        '-'
    });
    for shift in [6, 3, 0] {
        let bits = (info.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    if info.mode & 0o1000 != 0 {
        s.pop();
        s.push('t');
    }
    s
}

fn long_line(name: &str, info: &FileInfo) -> String {
    let links = if info.is_dir() { 2 } else { 1 };
    format!(
        "{} {links:>4} root     root     {:>9} Jan  1 00:00 {name}\n",
        mode_string(info),
        info.size
    )
}

async fn ls(p: &mut FakeProcess, args: &[String]) -> i32 {
    let (mut long, mut all, mut dir_itself) = (false, false, false);
    let mut paths: Vec<&String> = Vec::new();
    for arg in args {
        match arg.strip_prefix('-') {
            Some(flags) if !flags.is_empty() => {
                for c in flags.chars() {
                    match c {
                        'l' => long = true,
                        'a' | 'A' => all = true,
                        'd' => dir_itself = true,
                        _ => {}
                    }
                }
            }
            _ => paths.push(arg),
        }
    }
    let dot = ".".to_string();
    if paths.is_empty() {
        paths.push(&dot);
    }
    let mut code = 0;
    let mut errors = String::new();
    let (files, dirs): (Vec<_>, Vec<_>) = paths
        .iter()
        .filter_map(|path| match p.files.stat(&normalize_path(&p.cwd, path)) {
            Ok(info) => Some((*path, info)),
            Err(e) => {
                errors.push_str(&format!("ls: {path}: {e}\n"));
                code = 1;
                None
            }
        })
        .partition(|(_, info)| !info.is_dir() || dir_itself);
    if !errors.is_empty() {
        let _ = p.eprint(errors).await;
    }
    let mut out = String::new();
    for (path, info) in &files {
        if long {
            out.push_str(&long_line(path, info));
        } else {
            out.push_str(&format!("{path}\n"));
        }
    }
    let headers = paths.len() > 1;
    for (i, (path, _)) in dirs.iter().enumerate() {
        if headers {
            if i > 0 || !files.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("{path}:\n"));
        }
        let entries = match p.files.list(&normalize_path(&p.cwd, path)) {
            Ok(entries) => entries,
            Err(e) => {
                let _ = p.eprint(format!("ls: {path}: {e}\n")).await;
                code = 1;
                continue;
            }
        };
        if long {
            out.push_str(&format!("total {}\n", entries.len() * 4));
        }
        if all {
            let here = FileInfo {
                kind: FileKind::Directory,
                mode: 0o755,
                size: 4096,
            };
            for name in [".", ".."] {
                if long {
                    out.push_str(&long_line(name, &here));
                } else {
                    out.push_str(&format!("{name}\n"));
                }
            }
        }
        for (name, info) in entries {
            if !all && name.starts_with('.') {
                continue;
            }
            if long {
                out.push_str(&long_line(&name, &info));
            } else {
                out.push_str(&format!("{name}\n"));
            }
        }
    }
    if p.print(out).await.is_err() {
        return 1;
    }
    code
}

async fn env(behaviour: &Arc<ImageBehaviour>, p: &mut FakeProcess, args: &[String]) -> i32 {
    let mut rest = args;
    let mut extra = Vec::new();
    while let Some((first, tail)) = rest.split_first() {
        match first.split_once('=') {
            Some((k, v)) if !k.is_empty() && !first.starts_with('-') => {
                extra.push((k.to_string(), v.to_string()));
                rest = tail;
            }
            _ => break,
        }
    }
    if rest.is_empty() {
        let mut out = String::new();
        for (k, v) in p.env.iter().chain(extra.iter()) {
            out.push_str(&format!("{k}={v}\n"));
        }
        return status(p.print(out).await);
    }
    if !super::builtins::has_command(behaviour, &rest[0]) {
        let _ = p
            .eprint(format!(
                "env: can't execute '{}': No such file or directory\n",
                rest[0]
            ))
            .await;
        return 127;
    }
    let saved = p.env.clone();
    p.env.extend(extra);
    let code = run_in_place(behaviour, p, rest.to_vec()).await;
    p.env = saved;
    code
}

async fn printenv(p: &mut FakeProcess, args: &[String]) -> i32 {
    if args.is_empty() {
        let out: String = p.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        return status(p.print(out).await);
    }
    let mut code = 0;
    let mut out = String::new();
    for name in args {
        match p.getenv(name) {
            Some(v) => out.push_str(&format!("{v}\n")),
            None => code = 1,
        }
    }
    if p.print(out).await.is_err() {
        return 1;
    }
    code
}

/// Parses `sleep`'s duration: seconds with an optional `s`, `m`, `h` or `d` suffix;
/// `inf`/`infinity` is forever (`None`).
fn parse_duration(arg: &str) -> Result<Option<Duration>, ()> {
    if arg == "inf" || arg == "infinity" {
        return Ok(None);
    }
    let (number, unit) = match arg.char_indices().last() {
        Some((i, c)) if "smhd".contains(c) => (&arg[..i], c),
        _ => (arg, 's'),
    };
    let value: f64 = number.parse().map_err(|_| ())?;
    if !value.is_finite() || value < 0.0 {
        return Err(());
    }
    let factor = match unit {
        'm' => 60.0,
        'h' => 3600.0,
        'd' => 86_400.0,
        _ => 1.0,
    };
    Ok(Some(Duration::from_secs_f64(value * factor)))
}

async fn sleep(p: &mut FakeProcess, args: &[String]) -> i32 {
    if args.is_empty() {
        let _ = p.eprint("sleep: missing operand\n").await;
        return 1;
    }
    let mut total = Some(Duration::ZERO);
    for arg in args {
        match parse_duration(arg) {
            Ok(Some(d)) => total = total.map(|t| t + d),
            Ok(None) => total = None,
            Err(()) => {
                let _ = p.eprint(format!("sleep: invalid number '{arg}'\n")).await;
                return 1;
            }
        }
    }
    match total {
        Some(d) => clock_sleep(p.clock.as_ref(), d).await,
        None => futures::future::pending::<()>().await,
    }
    0
}

/// Splits `-xyz` flags from operands (`--` ends the flags).
fn flags_and_operands(args: &[String]) -> (String, Vec<&String>) {
    let mut flags = String::new();
    let mut operands = Vec::new();
    let mut only_operands = false;
    for arg in args {
        if !only_operands && arg == "--" {
            only_operands = true;
        } else if !only_operands && arg.len() > 1 && arg.starts_with('-') {
            flags.push_str(&arg[1..]);
        } else {
            operands.push(arg);
        }
    }
    (flags, operands)
}

async fn mkdir(p: &mut FakeProcess, args: &[String]) -> i32 {
    let (flags, dirs) = flags_and_operands(args);
    let parents = flags.contains('p');
    if dirs.is_empty() {
        let _ = p.eprint("mkdir: missing operand\n").await;
        return 1;
    }
    let mut code = 0;
    for dir in dirs {
        if let Err(e) = p.files.mkdir(&normalize_path(&p.cwd, dir), parents) {
            let _ = p
                .eprint(format!("mkdir: can't create directory '{dir}': {e}\n"))
                .await;
            code = 1;
        }
    }
    code
}

async fn rm(p: &mut FakeProcess, args: &[String]) -> i32 {
    let (flags, paths) = flags_and_operands(args);
    let recursive = flags.contains('r') || flags.contains('R');
    let force = flags.contains('f');
    if paths.is_empty() && !force {
        let _ = p.eprint("rm: missing operand\n").await;
        return 1;
    }
    let mut code = 0;
    for path in paths {
        match p.files.remove(&normalize_path(&p.cwd, path), recursive) {
            Ok(()) => {}
            Err(FsError::NotFound) if force => {}
            Err(FsError::IsADirectory) => {
                let _ = p.eprint(format!("rm: '{path}' is a directory\n")).await;
                code = 1;
            }
            Err(e) => {
                let _ = p.eprint(format!("rm: can't remove '{path}': {e}\n")).await;
                code = 1;
            }
        }
    }
    code
}

async fn touch(p: &mut FakeProcess, args: &[String]) -> i32 {
    let (_, paths) = flags_and_operands(args);
    let mut code = 0;
    for path in paths {
        let full = normalize_path(&p.cwd, path);
        if p.files.exists(&full) {
            continue;
        }
        if let Err(e) = p.files.write(&full, "") {
            let _ = p.eprint(format!("touch: {path}: {e}\n")).await;
            code = 1;
        }
    }
    code
}

/// `test`: file tests (`-e`, `-f`, `-d`, `-s`, `-r`, `-w`, `-x`), string tests (`-n`, `-z`,
/// `=`, `!=`), integer comparisons (`-eq`, `-lt`, ...) and `!`; 2 for an expression it does
/// not understand.
pub(super) fn test_with(p: &FakeProcess, args: &[String]) -> i32 {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let files = |f: &str| p.files.stat(&normalize_path(&p.cwd, f)).ok();
    match test_eval(&words, &files) {
        Some(true) => 0,
        Some(false) => 1,
        None => 2,
    }
}

fn test_eval(args: &[&str], files: &dyn Fn(&str) -> Option<FileInfo>) -> Option<bool> {
    match args {
        [] => Some(false),
        ["!", rest @ ..] => test_eval(rest, files).map(|b| !b),
        [s] => Some(!s.is_empty()),
        ["-n", s] => Some(!s.is_empty()),
        ["-z", s] => Some(s.is_empty()),
        ["-e", f] | ["-r", f] | ["-w", f] | ["-x", f] => Some(files(f).is_some()),
        ["-f", f] => Some(files(f).is_some_and(|i| !i.is_dir())),
        ["-d", f] => Some(files(f).is_some_and(|i| i.is_dir())),
        ["-s", f] => Some(files(f).is_some_and(|i| i.size > 0)),
        [a, "=", b] | [a, "==", b] => Some(a == b),
        [a, "!=", b] => Some(a != b),
        [a, op, b] => {
            let (a, b): (i64, i64) = (a.parse().ok()?, b.parse().ok()?);
            match *op {
                "-eq" => Some(a == b),
                "-ne" => Some(a != b),
                "-lt" => Some(a < b),
                "-le" => Some(a <= b),
                "-gt" => Some(a > b),
                "-ge" => Some(a >= b),
                _ => None,
            }
        }
        _ => None,
    }
}

async fn stty(p: &mut FakeProcess, args: &[String]) -> i32 {
    if !p.terminal.is_tty() {
        let _ = p.eprint("stty: standard input: Not a tty\n").await;
        return 1;
    }
    if args.first().map(String::as_str) == Some("size") {
        let size = p.terminal.size().unwrap_or_default();
        let line = format!("{} {}\n", size.height, size.width);
        return status(p.print(line).await);
    }
    0
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats `secs` since the epoch (UTC) with `date`'s `+FORMAT` conversions: `%Y %y %m %d
/// %e %H %M %S %s %T %F %D %R %a %A %b %B %h %j %Z %z %n %t %%`.
pub(super) fn format_date(secs: i64, format: &str) -> String {
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil(days);
    let (hour, minute, second) = (of_day / 3600, of_day / 60 % 60, of_day % 60);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let month_name = MONTHS[month as usize - 1];
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('s') => out.push_str(&secs.to_string()),
            Some('T') => out.push_str(&format!("{hour:02}:{minute:02}:{second:02}")),
            Some('R') => out.push_str(&format!("{hour:02}:{minute:02}")),
            Some('F') => out.push_str(&format!("{year}-{month:02}-{day:02}")),
            Some('D') => out.push_str(&format!("{month:02}/{day:02}/{:02}", year.rem_euclid(100))),
            Some('a') => out.push_str(&weekday[..3]),
            Some('A') => out.push_str(weekday),
            Some('b' | 'h') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('j') => out.push_str(&format!("{day_of_year:03}")),
            Some('Z') => out.push_str("UTC"),
            Some('z') => out.push_str("+0000"),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// `date [-u] [-R] [+FORMAT]`: the clock's time, in UTC.
async fn date(p: &mut FakeProcess, args: &[String]) -> i32 {
    let now = p.clock.now();
    let secs = match now.duration_since(std::time::SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    let mut format = "%a %b %e %H:%M:%S %Z %Y".to_string();
    for arg in args {
        match arg.as_str() {
            "-u" | "--utc" => {}
            "-R" => format = "%a, %d %b %Y %H:%M:%S +0000".into(),
            "-I" => format = "%F".into(),
            "-Iseconds" => format = "%FT%T+00:00".into(),
            f if f.starts_with('+') => format = f[1..].to_string(),
            other => {
                let _ = p.eprint(format!("date: invalid date '{other}'\n")).await;
                return 1;
            }
        }
    }
    let line = format!("{}\n", format_date(secs, &format));
    status(p.print(line).await)
}
