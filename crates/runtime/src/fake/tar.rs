//! The fake container's `tar`, for `kubectl cp`: kubectl copies out with
//! `tar cf - <path>` and in with `tar -xmf - -C <dir>` (or, with `--no-preserve`,
//! `tar --no-same-permissions --no-same-owner -xmf - -C <dir>`), and checks the destination
//! first with `test -d <path>`.
//!
//! Supported: the modes `c` (create), `x` (extract) and `t` (list), the options `f FILE`
//! (`-` for stdin/stdout, or a file in the container), `C DIR`, `v`, and the ignored `m`,
//! `o`, `p` and `--no-same-permissions`/`--no-same-owner`/`--same-owner`/
//! `--preserve-permissions`; options bundled old-style (`xmf`) or dashed (`-xmf`, `-C dir`).
//! Archives are uncompressed (GNU format on output); regular files and directories only
//! (links and special files in an archive are skipped).

use std::io::Read;

use bytes::Bytes;

use super::fs::{normalize_path, FsError};
use super::process::{unix_seconds, write_out, FakeProcess};

#[derive(Debug, Default)]
struct Options {
    mode: Option<char>,
    file: Option<String>,
    dir: Option<String>,
    verbose: bool,
    paths: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options::default();
    let mut wanted: Vec<char> = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        if let Some(kind) = wanted.first().copied() {
            wanted.remove(0);
            match kind {
                'f' => options.file = Some(arg.clone()),
                _ => options.dir = Some(arg.clone()),
            }
            continue;
        }
        let bundle = if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some(("directory", dir)) => options.dir = Some(dir.to_string()),
                Some(("file", file)) => options.file = Some(file.to_string()),
                None if matches!(
                    long,
                    "no-same-permissions"
                        | "no-same-owner"
                        | "same-owner"
                        | "preserve-permissions"
                        | "touch"
                ) => {}
                None if matches!(long, "create" | "extract" | "list") => {
                    options.mode = long.chars().next().map(|c| {
                        if c == 'e' {
                            'x'
                        } else if c == 'l' {
                            't'
                        } else {
                            c
                        }
                    });
                }
                _ => return Err(format!("unrecognized option '{arg}'")),
            }
            continue;
        } else if let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) {
            flags
        } else if i == 0 {
            arg.as_str()
        } else {
            options.paths.push(arg.clone());
            continue;
        };
        for c in bundle.chars() {
            match c {
                'c' | 'x' | 't' => options.mode = Some(c),
                'f' | 'C' => wanted.push(c),
                'v' => options.verbose = true,
                'm' | 'o' | 'p' => {}
                'z' | 'j' | 'J' => return Err("compressed archives are not supported".into()),
                other => return Err(format!("invalid option -- '{other}'")),
            }
        }
    }
    if !wanted.is_empty() {
        return Err("option requires an argument".into());
    }
    Ok(options)
}

/// Runs `tar` with `args`; returns the exit code.
pub(super) async fn run(p: &mut FakeProcess, args: &[String]) -> i32 {
    let options = match parse(args) {
        Ok(options) => options,
        Err(e) => {
            let _ = p.eprint(format!("tar: {e}\n")).await;
            return 1;
        }
    };
    let base = normalize_path(&p.cwd, options.dir.as_deref().unwrap_or("."));
    if options.dir.is_some() && !p.files.stat(&base).is_ok_and(|i| i.is_dir()) {
        let dir = options.dir.unwrap_or_default();
        let _ = p
            .eprint(format!(
                "tar: can't change directory to '{dir}': No such file or directory\n"
            ))
            .await;
        return 1;
    }
    match options.mode {
        Some('c') => create(p, &options, &base).await,
        Some(mode) => extract(p, &options, &base, mode == 't').await,
        None => {
            let _ = p
                .eprint("tar: need one of the -c, -x or -t options\n")
                .await;
            1
        }
    }
}

async fn create(p: &mut FakeProcess, options: &Options, base: &str) -> i32 {
    if options.paths.is_empty() {
        let _ = p.eprint("tar: empty archive\n").await;
        return 1;
    }
    let mut code = 0;
    let mut warned = false;
    let mtime = unix_seconds(p.clock.now());
    let mut builder = ::tar::Builder::new(Vec::new());
    let mut listing = String::new();
    for path in &options.paths {
        let full = normalize_path(base, path);
        let entries = match p.files.walk(&full) {
            Ok(entries) => entries,
            Err(e) => {
                let _ = p.eprint(format!("tar: {path}: {e}\n")).await;
                code = 1;
                continue;
            }
        };
        let name = if let Some(stripped) = path.strip_prefix('/') {
            if !warned {
                warned = true;
                let _ = p
                    .eprint("tar: removing leading '/' from member names\n")
                    .await;
            }
            stripped.trim_start_matches('/').to_string()
        } else {
            path.clone()
        };
        let name = name.trim_end_matches('/').to_string();
        for (abs, info) in entries {
            let rel = &abs[full.len()..];
            let mut member = if name.is_empty() {
                rel.trim_start_matches('/').to_string()
            } else {
                format!("{name}{rel}")
            };
            if member.is_empty() {
                continue;
            }
            let mut header = ::tar::Header::new_gnu();
            header.set_mode(info.mode);
            header.set_mtime(mtime);
            header.set_uid(0);
            header.set_gid(0);
            let _ = header.set_username("root");
            let _ = header.set_groupname("root");
            let data = if info.is_dir() {
                member.push('/');
                header.set_entry_type(::tar::EntryType::Directory);
                Bytes::new()
            } else {
                header.set_entry_type(::tar::EntryType::Regular);
                match p.files.read(&abs) {
                    Ok(data) => data,
                    Err(e) => {
                        let _ = p.eprint(format!("tar: {member}: {e}\n")).await;
                        code = 1;
                        continue;
                    }
                }
            };
            header.set_size(data.len() as u64);
            if let Err(e) = builder.append_data(&mut header, &member, &data[..]) {
                let _ = p.eprint(format!("tar: {member}: {e}\n")).await;
                code = 1;
                continue;
            }
            if options.verbose {
                listing.push_str(&member);
                listing.push('\n');
            }
        }
    }
    let archive = match builder.into_inner() {
        Ok(archive) => archive,
        Err(e) => {
            let _ = p.eprint(format!("tar: {e}\n")).await;
            return 1;
        }
    };
    let to_stdout = options.file.as_deref().is_none_or(|f| f == "-");
    if to_stdout {
        if write_out(&mut p.stdout, &archive).await.is_err() {
            return 1;
        }
        if !listing.is_empty() {
            let _ = p.eprint(listing).await;
        }
    } else {
        let file = options.file.clone().unwrap_or_default();
        if let Err(e) = p.files.write(&normalize_path(&p.cwd, &file), archive) {
            let _ = p.eprint(format!("tar: can't open '{file}': {e}\n")).await;
            return 1;
        }
        if !listing.is_empty() {
            let _ = p.print(listing).await;
        }
    }
    code
}

async fn extract(p: &mut FakeProcess, options: &Options, base: &str, list_only: bool) -> i32 {
    let from_stdin = options.file.as_deref().is_none_or(|f| f == "-");
    let archive = if from_stdin {
        match p.read_stdin().await {
            Ok(data) => data,
            Err(e) => {
                let _ = p.eprint(format!("tar: read error: {e}\n")).await;
                return 1;
            }
        }
    } else {
        let file = options.file.clone().unwrap_or_default();
        match p.files.read(&normalize_path(&p.cwd, &file)) {
            Ok(data) => data.to_vec(),
            Err(e) => {
                let _ = p.eprint(format!("tar: can't open '{file}': {e}\n")).await;
                return 1;
            }
        }
    };
    if archive.is_empty() {
        // An empty input is an empty archive (as GNU tar treats a zero-length file).
        return 0;
    }
    let (messages, listing, code) = unpack(p, &archive, base, list_only, options.verbose);
    if !listing.is_empty() {
        let _ = p.print(listing).await;
    }
    if !messages.is_empty() {
        let _ = p.eprint(messages).await;
    }
    code
}

/// Unpacks (or lists) `archive` into `base`: returns the error messages, the listing and the
/// exit code. Synchronous: the archive is in memory.
fn unpack(
    p: &FakeProcess,
    archive: &[u8],
    base: &str,
    list_only: bool,
    verbose: bool,
) -> (String, String, i32) {
    let mut messages = String::new();
    let mut listing = String::new();
    let mut code = 0;
    let mut reader = ::tar::Archive::new(archive);
    let entries = match reader.entries() {
        Ok(entries) => entries,
        Err(e) => return (format!("tar: {e}\n"), listing, 1),
    };
    for entry in entries {
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                messages.push_str(&format!("tar: corrupted data: {e}\n"));
                return (messages, listing, 1);
            }
        };
        let name = match entry.path() {
            Ok(path) => path.to_string_lossy().into_owned(),
            Err(e) => {
                messages.push_str(&format!("tar: {e}\n"));
                code = 1;
                continue;
            }
        };
        if list_only || verbose {
            listing.push_str(&name);
            listing.push('\n');
        }
        if list_only {
            continue;
        }
        // No member may land outside the directory: drop `..` and leading slashes.
        let clean: Vec<&str> = name
            .split('/')
            .filter(|c| !c.is_empty() && *c != "." && *c != "..")
            .collect();
        if clean.is_empty() {
            continue;
        }
        let dest = normalize_path(base, &clean.join("/"));
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let kind = entry.header().entry_type();
        let parent = dest
            .rsplit_once('/')
            .map_or("/", |(p, _)| if p.is_empty() { "/" } else { p });
        if let Err(e) = p.files.mkdir(parent, true) {
            messages.push_str(&format!("tar: can't create directory '{parent}': {e}\n"));
            code = 1;
            continue;
        }
        let result: Result<(), FsError> = if kind.is_dir() {
            p.files.mkdir(&dest, true)
        } else if kind.is_file() || kind == ::tar::EntryType::Continuous {
            let mut data = Vec::new();
            match entry.read_to_end(&mut data) {
                Ok(_) => p.files.write_with_mode(&dest, data, mode),
                Err(e) => Err(FsError::Io(e.to_string())),
            }
        } else {
            Ok(())
        };
        if let Err(e) = result {
            messages.push_str(&format!("tar: can't open '{name}': {e}\n"));
            code = 1;
        }
    }
    (messages, listing, code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kubectl_cp_forms_parse() {
        let o = parse(&strings(&["cf", "-", "/tmp/foo"])).unwrap();
        assert_eq!(
            (o.mode, o.file.as_deref(), o.paths),
            (Some('c'), Some("-"), strings(&["/tmp/foo"]))
        );
        let o = parse(&strings(&["-xmf", "-", "-C", "/dst"])).unwrap();
        assert_eq!(
            (o.mode, o.file.as_deref(), o.dir.as_deref()),
            (Some('x'), Some("-"), Some("/dst"))
        );
        let o = parse(&strings(&[
            "--no-same-permissions",
            "--no-same-owner",
            "-xmf",
            "-",
            "-C",
            "/d",
        ]))
        .unwrap();
        assert_eq!((o.mode, o.dir.as_deref()), (Some('x'), Some("/d")));
        let o = parse(&strings(&["xmf", "-", "-C", "/d"])).unwrap();
        assert_eq!((o.mode, o.dir.as_deref()), (Some('x'), Some("/d")));
        assert!(parse(&strings(&["--bogus"])).is_err());
        assert!(parse(&strings(&["-cf"])).is_err());
    }
}
