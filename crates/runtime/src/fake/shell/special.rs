//! The shell's own commands: `exit`, `break`, `continue`, `cd`, `export`, `unset`, `shift`,
//! `set --`, `eval`, `read`, and `trap` and `wait` (which do nothing).

use super::{read_line, Jump, Shell};
use crate::fake::fs::normalize_path;
use crate::fake::process::FakeProcess;

impl Shell<'_> {
    /// The shell's own commands; `None` for any other.
    pub(super) async fn special(&mut self, p: &mut FakeProcess, words: &[String]) -> Option<i32> {
        let count = |default: u32| -> Result<u32, String> {
            match words.get(1) {
                None => Ok(default),
                Some(n) => n
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| n.clone()),
            }
        };
        let code = match words[0].as_str() {
            "exit" => {
                let code = match words.get(1) {
                    None => self.status,
                    Some(n) => match n.parse::<i64>() {
                        Ok(n) => (n & 0xff) as i32,
                        Err(_) => {
                            let _ = p.eprint(format!("sh: exit: Illegal number: {n}\n")).await;
                            2
                        }
                    },
                };
                self.exit = Some(code);
                code
            }
            "break" | "continue" => match count(1) {
                Ok(n) => {
                    if self.loops > 0 {
                        let n = n.min(self.loops);
                        self.jump = Some(if words[0] == "break" {
                            Jump::Break(n)
                        } else {
                            Jump::Continue(n)
                        });
                    }
                    0
                }
                Err(n) => {
                    let _ = p
                        .eprint(format!("sh: {}: Illegal number: {n}\n", words[0]))
                        .await;
                    2
                }
            },
            "cd" => {
                let home = p.getenv("HOME").unwrap_or("/").to_string();
                let target = words.get(1).cloned().unwrap_or(home);
                let full = normalize_path(&p.cwd, &target);
                match p.files.stat(&full) {
                    Ok(info) if info.is_dir() => {
                        p.cwd = full;
                        0
                    }
                    Ok(_) => {
                        let _ = p
                            .eprint(format!("sh: cd: can't cd to {target}: Not a directory\n"))
                            .await;
                        2
                    }
                    Err(e) => {
                        let _ = p
                            .eprint(format!("sh: cd: can't cd to {target}: {e}\n"))
                            .await;
                        2
                    }
                }
            }
            "export" => {
                for word in &words[1..] {
                    let (name, value) = match word.split_once('=') {
                        Some((n, v)) => (n.to_string(), v.to_string()),
                        None => (
                            word.clone(),
                            self.vars.get(word).cloned().unwrap_or_default(),
                        ),
                    };
                    self.vars.remove(&name);
                    p.env.retain(|(k, _)| *k != name);
                    p.env.push((name, value));
                }
                0
            }
            "unset" => {
                for word in &words[1..] {
                    self.vars.remove(word);
                    p.env.retain(|(k, _)| k != word);
                }
                0
            }
            "shift" => match count(1) {
                Ok(n) if (n as usize) < self.positional.len() => {
                    self.positional.drain(1..=n as usize);
                    0
                }
                _ => 1,
            },
            "set" => {
                if let Some(i) = words.iter().position(|w| w == "--") {
                    let mut positional = vec![self.positional[0].clone()];
                    positional.extend(words[i + 1..].iter().cloned());
                    self.positional = positional;
                }
                0
            }
            "eval" => {
                let script = words[1..].join(" ");
                self.run_script(p, &script).await;
                self.status
            }
            "read" => {
                let names: Vec<&String> =
                    words[1..].iter().filter(|w| !w.starts_with('-')).collect();
                let Some(line) = read_line(&mut p.stdin, None).await else {
                    return Some(1);
                };
                if names.is_empty() {
                    self.vars.insert("REPLY".into(), line);
                    return Some(0);
                }
                let mut rest = line.trim_start();
                for (i, name) in names.iter().enumerate() {
                    let value = if i + 1 == names.len() {
                        std::mem::take(&mut rest).trim_end()
                    } else {
                        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                        let (value, tail) = rest.split_at(end);
                        rest = tail.trim_start();
                        value
                    };
                    self.vars.insert((*name).clone(), value.to_string());
                }
                0
            }
            "trap" | "wait" => 0,
            _ => return None,
        };
        Some(code)
    }
}
