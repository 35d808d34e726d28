//! The fake container's `sh`: enough of a POSIX shell for `kubectl exec POD -- sh -c '...'`,
//! probe commands, container command lines and an interactive `kubectl exec -it POD -- sh`.
//!
//! The subset: `sh -c SCRIPT [NAME [ARG...]]`, `sh FILE`, and `sh` reading commands from stdin
//! line by line (with a terminal: a `/ # ` prompt and the typed line echoed; an unfinished
//! compound command reads more lines). A script is commands separated by `;`, newlines,
//! `&&`, `||` (and `&`, run in the foreground), with pipelines (`a | b`, `! a`), the
//! compound commands `if/elif/else/fi`, `while`/`until ... do ... done`,
//! `for NAME [in WORDS]; do ... done`, `{ ...; }` and `( ... )`, single and double quotes,
//! backslash escapes, `#` comments, `$NAME`, `${NAME}`, `${NAME:-default}`, `${#NAME}`,
//! `$?`, `$#`, `$@`, `$0`-`$9`, command substitution (`$(...)` and backquotes), arithmetic
//! (`$((...))`, see [`arith`]), field splitting of unquoted expansions, leading
//! `NAME=value` assignments, and the redirections `>`, `>>`, `<`, `2>`, `2>>`, `2>&1` and
//! `>&2` (`/dev/null` included; redirected output is written when the command ends). Its
//! own commands are `exit [N]`, `cd [DIR]`, `export NAME=value...`, `unset NAME...`,
//! `exec CMD...`, `break [N]`, `continue [N]`, `read [-r] [NAME...]`, `shift [N]`,
//! `set -- ARGS` (other options are ignored), `eval ARGS`, and `trap` and `wait`, which
//! do nothing; every other command is a scripted or built-in one (`sh: NAME: not found`,
//! exit 127, otherwise). There is no globbing, no `case`, no functions and no background
//! jobs. Loops yield to the scheduler at each turn, so `while true; do :; done` only keeps
//! its own task busy.

mod arith;
mod expand;
mod parse;
mod special;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWrite};

use super::builtins::has_command;
use super::fs::{normalize_path, FsError};
use super::pipe::pipe;
use super::process::{run_in_place, write_out, FakeProcess};
use super::ImageBehaviour;
use crate::streaming::{ByteReader, ByteWriter};
use parse::{parse, tokenize, Cmd, Command, Compound, Join, List, Op, Part, Pipeline, Redirection};

/// A pending `break` or `continue`, with how many loops it leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Jump {
    Break(u32),
    Continue(u32),
}

/// A shell's variables and status.
#[derive(Clone)]
struct Shell<'a> {
    behaviour: &'a Arc<ImageBehaviour>,
    vars: HashMap<String, String>,
    positional: Vec<String>,
    status: i32,
    exit: Option<i32>,
    jump: Option<Jump>,
    loops: u32,
    /// The status of the last command substitution of the command being expanded.
    substituted: Option<i32>,
}

/// Where a redirected descriptor writes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dest {
    Stdout,
    Stderr,
    File(String),
    Null,
}

/// A cloneable in-memory writer (redirected output is written when the command ends).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock())
    }
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.lock().extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What a command's redirections replaced, to put back when it ends.
#[derive(Default)]
struct Redirected {
    stdin: Option<ByteReader>,
    stdout: Option<ByteWriter>,
    stderr: Option<ByteWriter>,
    captures: Vec<(Dest, Capture)>,
    /// A standard stream both descriptors write to (`2>&1` or `>&2`), and whether it is
    /// stdout.
    shared: Option<(Shared, bool)>,
}

/// One standard stream written through both descriptors as the command writes (`2>&1`
/// keeps a long-running command's output flowing). Shutting it down does nothing: the
/// shell takes the stream back when the command ends.
#[derive(Clone)]
struct Shared(Arc<Mutex<Option<ByteWriter>>>);

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.0.lock().as_mut() {
            Some(writer) => writer.as_mut().poll_write(cx, data),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.lock().as_mut() {
            Some(writer) => writer.as_mut().poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Whether `name` can be a variable's name.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Whether a word is an assignment (`NAME=...`, the name unquoted and literal).
fn is_assignment(parts: &[Part]) -> bool {
    match parts.first() {
        Some(Part::Lit(s)) => s.split_once('=').is_some_and(|(name, _)| is_name(name)),
        _ => false,
    }
}

impl<'a> Shell<'a> {
    fn new(behaviour: &'a Arc<ImageBehaviour>) -> Self {
        Shell {
            behaviour,
            vars: HashMap::new(),
            positional: vec!["sh".to_string()],
            status: 0,
            exit: None,
            jump: None,
            loops: 0,
            substituted: None,
        }
    }

    /// Runs a script; returns whether the shell should go on (no `exit`).
    async fn run_script(&mut self, p: &mut FakeProcess, src: &str) -> bool {
        let list = match tokenize(src).and_then(parse) {
            Ok(list) => list,
            Err(e) => {
                let _ = p.eprint(format!("sh: {e}\n")).await;
                self.status = 2;
                return true;
            }
        };
        self.exec_list(p, &list).await;
        self.exit.is_none()
    }

    fn exec_list<'s>(&'s mut self, p: &'s mut FakeProcess, list: &'s List) -> BoxFuture<'s, i32> {
        Box::pin(async move {
            for (join, pipeline) in list {
                let skip = match join {
                    Join::Always => false,
                    Join::IfSuccess => self.status != 0,
                    Join::IfFailure => self.status == 0,
                };
                if skip {
                    continue;
                }
                self.status = self.exec_pipeline(p, pipeline).await;
                if self.exit.is_some() || self.jump.is_some() {
                    break;
                }
            }
            self.status
        })
    }

    async fn exec_pipeline(&mut self, p: &mut FakeProcess, pipeline: &Pipeline) -> i32 {
        let code = if pipeline.commands.len() == 1 {
            self.exec_cmd(p, &pipeline.commands[0]).await
        } else {
            self.exec_stages(p, &pipeline.commands).await
        };
        match (pipeline.negate, code) {
            (false, code) => code,
            (true, 0) => 1,
            (true, _) => 0,
        }
    }

    /// Runs the stages of a pipeline, each in a copy of the shell (a subshell), all at once.
    async fn exec_stages(&mut self, p: &mut FakeProcess, commands: &[Cmd]) -> i32 {
        let stdin = std::mem::replace(&mut p.stdin, Box::pin(tokio::io::empty()));
        let stdout = std::mem::replace(&mut p.stdout, Box::pin(tokio::io::sink()));
        let (err_w, mut err_r) = pipe();
        let n = commands.len();
        let mut next_stdin: Option<ByteReader> = Some(stdin);
        let mut last_stdout: Option<ByteWriter> = Some(stdout);
        let mut stages = Vec::new();
        for (i, command) in commands.iter().enumerate() {
            let stage_stdin = next_stdin
                .take()
                .unwrap_or_else(|| Box::pin(tokio::io::empty()));
            let stage_stdout: ByteWriter = if i + 1 == n {
                last_stdout
                    .take()
                    .unwrap_or_else(|| Box::pin(tokio::io::sink()))
            } else {
                let (w, r) = pipe();
                next_stdin = Some(Box::pin(r));
                Box::pin(w)
            };
            let mut child = p.sibling(
                Vec::new(),
                stage_stdin,
                stage_stdout,
                Box::pin(err_w.clone()),
            );
            let mut shell = self.clone();
            shell.loops = 0;
            let (first, last) = (i == 0, i + 1 == n);
            stages.push(async move {
                let code = shell.exec_cmd(&mut child, command).await;
                // The shell's own stdin and stdout go back to it; the pipes close.
                let FakeProcess { stdin, stdout, .. } = child;
                (code, first.then_some(stdin), last.then_some(stdout))
            });
        }
        drop(err_w);
        let stderr = &mut p.stderr;
        let (results, _) = futures::join!(
            futures::future::join_all(stages),
            tokio::io::copy(&mut err_r, stderr)
        );
        let mut code = 0;
        for (stage_code, stdin, stdout) in results {
            code = stage_code;
            if let Some(stdin) = stdin {
                p.stdin = stdin;
            }
            if let Some(stdout) = stdout {
                p.stdout = stdout;
            }
        }
        code
    }

    fn exec_cmd<'s>(&'s mut self, p: &'s mut FakeProcess, cmd: &'s Cmd) -> BoxFuture<'s, i32> {
        Box::pin(async move {
            match cmd {
                Cmd::Simple(command) => self.simple(p, command).await,
                Cmd::Compound(compound, redirections) => {
                    let redirected = match self.redirect(p, redirections).await {
                        Ok(redirected) => redirected,
                        Err(code) => return code,
                    };
                    let code = self.exec_compound(p, compound).await;
                    restore(p, redirected).await;
                    code
                }
            }
        })
    }

    /// Settles a `break` or `continue` at the end of a loop's turn: returns whether the loop
    /// ends.
    fn loop_turn_ends_loop(&mut self) -> bool {
        match self.jump {
            None => false,
            Some(Jump::Break(n)) => {
                self.jump = (n > 1).then(|| Jump::Break(n - 1));
                true
            }
            Some(Jump::Continue(n)) if n > 1 => {
                self.jump = Some(Jump::Continue(n - 1));
                true
            }
            Some(Jump::Continue(_)) => {
                self.jump = None;
                false
            }
        }
    }

    async fn exec_compound(&mut self, p: &mut FakeProcess, compound: &Compound) -> i32 {
        match compound {
            Compound::If {
                branches,
                otherwise,
            } => {
                for (cond, body) in branches {
                    let code = self.exec_list(p, cond).await;
                    if self.exit.is_some() || self.jump.is_some() {
                        return code;
                    }
                    if code == 0 {
                        return self.exec_list(p, body).await;
                    }
                }
                match otherwise {
                    Some(body) => self.exec_list(p, body).await,
                    None => 0,
                }
            }
            Compound::Loop { until, cond, body } => {
                let mut code = 0;
                self.loops += 1;
                loop {
                    tokio::task::yield_now().await;
                    let test = self.exec_list(p, cond).await;
                    if self.exit.is_some() || self.jump.is_some() {
                        if self.exit.is_some() || self.loop_turn_ends_loop() {
                            break;
                        }
                        continue;
                    }
                    if (test == 0) == *until {
                        break;
                    }
                    code = self.exec_list(p, body).await;
                    if self.exit.is_some() || self.loop_turn_ends_loop() {
                        break;
                    }
                }
                self.loops -= 1;
                code
            }
            Compound::For { name, words, body } => {
                let values = match words {
                    Some(words) => {
                        let mut values = Vec::new();
                        for word in words {
                            values.extend(self.expand_fields(p, word).await);
                        }
                        values
                    }
                    None => self.positional.iter().skip(1).cloned().collect(),
                };
                let mut code = 0;
                self.loops += 1;
                for value in values {
                    tokio::task::yield_now().await;
                    self.vars.insert(name.clone(), value);
                    code = self.exec_list(p, body).await;
                    if self.exit.is_some() || self.loop_turn_ends_loop() {
                        break;
                    }
                }
                self.loops -= 1;
                code
            }
            Compound::Group(body) => self.exec_list(p, body).await,
            Compound::Subshell(body) => {
                let mut sub = self.clone();
                sub.exit = None;
                sub.loops = 0;
                let (env, cwd) = (p.env.clone(), p.cwd.clone());
                sub.exec_list(p, body).await;
                p.env = env;
                p.cwd = cwd;
                sub.exit.unwrap_or(sub.status)
            }
        }
    }

    /// Applies `redirections` to `p`'s stdio; `Err` is the exit code of a failed one (its
    /// message written).
    async fn redirect(
        &mut self,
        p: &mut FakeProcess,
        redirections: &[Redirection],
    ) -> Result<Redirected, i32> {
        let (mut out, mut err) = (Dest::Stdout, Dest::Stderr);
        let mut input: Option<Vec<u8>> = None;
        for (op, target) in redirections {
            let target = self.expand_word(p, target).await;
            let path = normalize_path(&p.cwd, &target);
            let file = |path: &str| {
                if path == "/dev/null" {
                    Dest::Null
                } else {
                    Dest::File(path.to_string())
                }
            };
            let opened = match op {
                Op::Out | Op::ErrOut if path != "/dev/null" => p.files.write(&path, ""),
                Op::Append | Op::ErrAppend if path != "/dev/null" => p.files.append(&path, ""),
                _ => Ok(()),
            };
            if let Err(e) = opened {
                let why = if e == FsError::NotFound {
                    "nonexistent directory".to_string()
                } else {
                    e.to_string()
                };
                let _ = p
                    .eprint(format!("sh: can't create {target}: {why}\n"))
                    .await;
                return Err(1);
            }
            match op {
                Op::Out | Op::Append => out = file(&path),
                Op::ErrOut | Op::ErrAppend => err = file(&path),
                Op::ErrToOut => err = out.clone(),
                Op::OutToErr => out = err.clone(),
                Op::In if path == "/dev/null" => input = Some(Vec::new()),
                Op::In => match p.files.read(&path) {
                    Ok(data) => input = Some(data.to_vec()),
                    Err(e) => {
                        let _ = p.eprint(format!("sh: can't open {target}: {e}\n")).await;
                        return Err(1);
                    }
                },
                _ => {}
            }
        }
        let mut redirected = Redirected {
            stdin: input
                .map(|data| std::mem::replace(&mut p.stdin, Box::pin(io::Cursor::new(data)))),
            ..Redirected::default()
        };
        let to_stdout = out == Dest::Stdout && err == Dest::Stdout;
        if to_stdout || (out == Dest::Stderr && err == Dest::Stderr) {
            let (shared_stream, other) = if to_stdout {
                (&mut p.stdout, &mut p.stderr)
            } else {
                (&mut p.stderr, &mut p.stdout)
            };
            let original = std::mem::replace(shared_stream, Box::pin(tokio::io::sink()));
            let shared = Shared(Arc::new(Mutex::new(Some(original))));
            *shared_stream = Box::pin(shared.clone());
            let saved = std::mem::replace(other, Box::pin(shared.clone()));
            if to_stdout {
                redirected.stderr = Some(saved);
            } else {
                redirected.stdout = Some(saved);
            }
            redirected.shared = Some((shared, to_stdout));
            return Ok(redirected);
        }
        let mut capture_for = |dest: &Dest| {
            if let Some((_, c)) = redirected.captures.iter().find(|(d, _)| d == dest) {
                return c.clone();
            }
            let c = Capture::default();
            redirected.captures.push((dest.clone(), c.clone()));
            c
        };
        let out_capture = (out != Dest::Stdout).then(|| capture_for(&out));
        let err_capture = (err != Dest::Stderr).then(|| capture_for(&err));
        if let Some(capture) = out_capture {
            redirected.stdout = Some(std::mem::replace(&mut p.stdout, Box::pin(capture)));
        }
        if let Some(capture) = err_capture {
            redirected.stderr = Some(std::mem::replace(&mut p.stderr, Box::pin(capture)));
        }
        Ok(redirected)
    }

    async fn simple(&mut self, p: &mut FakeProcess, command: &Command) -> i32 {
        self.substituted = None;
        let mut assignments = Vec::new();
        let mut words: Vec<String> = Vec::new();
        for word in &command.words {
            if words.is_empty() && is_assignment(word) {
                let text = self.expand_word(p, word).await;
                if let Some((name, value)) = text.split_once('=') {
                    assignments.push((name.to_string(), value.to_string()));
                }
            } else {
                let fields = self.expand_fields(p, word).await;
                words.extend(fields);
            }
        }
        if words.is_empty() {
            for (name, value) in assignments {
                match p.env.iter_mut().find(|(k, _)| *k == name) {
                    Some((_, v)) => *v = value,
                    None => {
                        self.vars.insert(name, value);
                    }
                }
            }
            if !command.redirections.is_empty() {
                let redirected = match self.redirect(p, &command.redirections).await {
                    Ok(redirected) => redirected,
                    Err(code) => return code,
                };
                restore(p, redirected).await;
            }
            return self.substituted.unwrap_or(0);
        }
        if words[0] == "exec" && words.len() > 1 {
            words.remove(0);
        }
        if let Some(code) = self.special(p, &words).await {
            return code;
        }
        let redirected = match self.redirect(p, &command.redirections).await {
            Ok(redirected) => redirected,
            Err(code) => return code,
        };
        let code = if has_command(self.behaviour, &words[0]) {
            let saved_env = p.env.clone();
            for (name, value) in assignments {
                p.env.retain(|(k, _)| *k != name);
                p.env.push((name, value));
            }
            let code = run_in_place(self.behaviour, p, words).await;
            p.env = saved_env;
            code
        } else {
            let _ = p.eprint(format!("sh: {}: not found\n", words[0])).await;
            127
        };
        restore(p, redirected).await;
        code
    }
}

/// Puts back what redirections replaced, writing what was captured where it goes.
async fn restore(p: &mut FakeProcess, redirected: Redirected) {
    let Redirected {
        stdin,
        stdout,
        stderr,
        captures,
        shared,
    } = redirected;
    if let Some((shared, is_stdout)) = shared {
        if let Some(writer) = shared.0.lock().take() {
            if is_stdout {
                p.stdout = writer;
            } else {
                p.stderr = writer;
            }
        }
    }
    if let Some(stdin) = stdin {
        p.stdin = stdin;
    }
    if let Some(stdout) = stdout {
        p.stdout = stdout;
    }
    if let Some(stderr) = stderr {
        p.stderr = stderr;
    }
    for (dest, capture) in captures {
        let data = capture.take();
        match dest {
            Dest::Stdout => {
                let _ = write_out(&mut p.stdout, &data).await;
            }
            Dest::Stderr => {
                let _ = write_out(&mut p.stderr, &data).await;
            }
            Dest::File(path) => {
                let _ = p.files.append(&path, data);
            }
            Dest::Null => {}
        }
    }
}
/// Reads one line from stdin (up to `\n`, or `\r` on a terminal); `None` at end of input.
/// On a terminal, what is typed is echoed as it comes (the terminal's `ECHO`), erasing with
/// backspace, and `^D` on an empty line ends the input.
async fn read_line(stdin: &mut ByteReader, echo: Option<&mut ByteWriter>) -> Option<String> {
    let tty = echo.is_some();
    let mut echo = echo;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stdin.read(&mut byte).await {
            Ok(0) | Err(_) => {
                return (!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned());
            }
            Ok(_) => {
                let shown: &[u8] = match byte[0] {
                    b'\n' | b'\r' if tty => b"\n",
                    b'\n' => break,
                    4 if tty && line.is_empty() => return None,
                    0x7f | 8 if tty => {
                        if line.pop().is_some() {
                            b"\x08 \x08"
                        } else {
                            b""
                        }
                    }
                    b => {
                        line.push(b);
                        &byte
                    }
                };
                if let Some(out) = echo.as_deref_mut() {
                    let _ = write_out(out, shown).await;
                }
                if tty && (byte[0] == b'\r' || byte[0] == b'\n') {
                    break;
                }
            }
        }
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

/// Runs `sh` with `args` (what follows `sh`).
pub(super) async fn run(
    behaviour: &Arc<ImageBehaviour>,
    p: &mut FakeProcess,
    args: &[String],
) -> i32 {
    let mut shell = Shell::new(behaviour);
    let mut rest = args;
    while let Some((first, tail)) = rest.split_first() {
        if first == "-c" {
            let Some((script, names)) = tail.split_first() else {
                let _ = p.eprint("sh: -c requires an argument\n").await;
                return 2;
            };
            if !names.is_empty() {
                shell.positional = names.to_vec();
            }
            shell.run_script(p, script).await;
            return shell.exit.unwrap_or(shell.status);
        }
        if first.starts_with('-') && first.len() > 1 {
            rest = tail;
            continue;
        }
        let path = normalize_path(&p.cwd, first);
        let script = match p.files.read(&path) {
            Ok(data) => String::from_utf8_lossy(&data).into_owned(),
            Err(e) => {
                let _ = p.eprint(format!("sh: can't open '{first}': {e}\n")).await;
                return 2;
            }
        };
        shell.positional = rest.to_vec();
        shell.run_script(p, &script).await;
        return shell.exit.unwrap_or(shell.status);
    }
    // Commands from stdin.
    let tty = p.terminal.is_tty();
    loop {
        if tty {
            let prompt = format!("{} # ", p.cwd);
            if write_out(&mut p.stdout, prompt.as_bytes()).await.is_err() {
                return 1;
            }
        }
        let echo = tty.then_some(&mut p.stdout);
        let Some(mut line) = read_line(&mut p.stdin, echo).await else {
            if tty {
                let _ = write_out(&mut p.stdout, b"\n").await;
            }
            return shell.status;
        };
        // An unfinished compound command (`while ...; do` on its own line) reads on.
        while tokenize(&line)
            .and_then(parse)
            .is_err_and(|e| e.contains("end of file"))
        {
            if tty && write_out(&mut p.stdout, b"> ").await.is_err() {
                return 1;
            }
            let echo = tty.then_some(&mut p.stdout);
            let Some(more) = read_line(&mut p.stdin, echo).await else {
                break;
            };
            line.push('\n');
            line.push_str(&more);
        }
        if !shell.run_script(p, &line).await {
            return shell.exit.unwrap_or(shell.status);
        }
    }
}
