//! Word expansion: parameters (`$NAME`, `${NAME:-default}`, `${#NAME}`, the special ones),
//! command substitution, arithmetic and field splitting.

use futures::future::BoxFuture;

use super::parse::Part;
use super::{arith, is_name, Capture, Shell};
use crate::fake::process::{write_out, FakeProcess};

impl Shell<'_> {
    pub(super) fn get(&self, p: &FakeProcess, name: &str) -> Option<String> {
        match name {
            "?" => Some(self.status.to_string()),
            "#" => Some(self.positional.len().saturating_sub(1).to_string()),
            "$" | "!" => Some("1".into()),
            "@" | "*" => Some(self.positional.get(1..).unwrap_or_default().join(" ")),
            n if n.chars().all(|c| c.is_ascii_digit()) => n
                .parse::<usize>()
                .ok()
                .and_then(|i| self.positional.get(i).cloned()),
            n => self
                .vars
                .get(n)
                .cloned()
                .or_else(|| p.getenv(n).map(str::to_string)),
        }
    }

    /// A parameter's value: `NAME`, `#NAME` (its length), `NAME:-word` or `NAME-word`.
    pub(super) fn lookup(&self, p: &FakeProcess, name: &str) -> String {
        if let Some(inner) = name.strip_prefix('#').filter(|n| !n.is_empty()) {
            return self.lookup(p, inner).chars().count().to_string();
        }
        if let Some((var, default)) = name.split_once(":-") {
            return match self.get(p, var) {
                Some(v) if !v.is_empty() => v,
                _ => default.to_string(),
            };
        }
        if let Some((var, default)) = name.split_once('-').filter(|(v, _)| is_name(v)) {
            return self.get(p, var).unwrap_or_else(|| default.to_string());
        }
        self.get(p, name).unwrap_or_default()
    }

    pub(super) async fn arith(&mut self, p: &mut FakeProcess, expr: &str) -> String {
        let cleaned: String = expr.chars().filter(|c| *c != '{' && *c != '}').collect();
        let result = arith::eval(&cleaned, &|name| self.lookup(p, name));
        match result {
            Ok(value) => value.to_string(),
            Err(e) => {
                let _ = p.eprint(format!("sh: {e}\n")).await;
                self.substituted = Some(2);
                "0".into()
            }
        }
    }

    /// Runs `script` in a subshell and returns its output without trailing newlines.
    pub(super) fn substitute<'s>(
        &'s mut self,
        p: &'s mut FakeProcess,
        script: &'s str,
    ) -> BoxFuture<'s, String> {
        Box::pin(async move {
            let (out, err) = (Capture::default(), Capture::default());
            let mut child = p.sibling(
                Vec::new(),
                Box::pin(tokio::io::empty()),
                Box::pin(out.clone()),
                Box::pin(err.clone()),
            );
            let mut sub = self.clone();
            sub.exit = None;
            sub.jump = None;
            sub.loops = 0;
            sub.run_script(&mut child, script).await;
            drop(child);
            self.substituted = Some(sub.exit.unwrap_or(sub.status));
            let err = err.take();
            if !err.is_empty() {
                let _ = write_out(&mut p.stderr, &err).await;
            }
            let mut text = String::from_utf8_lossy(&out.take()).into_owned();
            while text.ends_with('\n') {
                text.pop();
            }
            text
        })
    }

    /// Expands a word into one string, without field splitting (assignments, redirection
    /// targets).
    pub(super) async fn expand_word(&mut self, p: &mut FakeProcess, parts: &[Part]) -> String {
        let mut out = String::new();
        for part in parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var { name, .. } => out.push_str(&self.lookup(p, name)),
                Part::Cmd { script, .. } => out.push_str(&self.substitute(p, script).await),
                Part::Arith(expr) => out.push_str(&self.arith(p, expr).await),
            }
        }
        out
    }

    /// Expands a word into fields: unquoted expansions split on whitespace, `"$@"` gives one
    /// field per argument, and a word of nothing but empty unquoted expansions gives none.
    pub(super) async fn expand_fields(
        &mut self,
        p: &mut FakeProcess,
        parts: &[Part],
    ) -> Vec<String> {
        if parts.is_empty() {
            return vec![String::new()];
        }
        let mut fields = Vec::new();
        let mut current = String::new();
        let mut started = false;
        for part in parts {
            let (value, quoted) = match part {
                Part::Lit(s) => (s.clone(), true),
                Part::Arith(expr) => (self.arith(p, expr).await, true),
                Part::Var { name, quoted: true } if name == "@" => {
                    for (i, arg) in self.positional.iter().skip(1).enumerate() {
                        if i > 0 {
                            fields.push(std::mem::take(&mut current));
                        }
                        current.push_str(arg);
                        started = true;
                    }
                    continue;
                }
                Part::Var { name, quoted } => (self.lookup(p, name), *quoted),
                Part::Cmd { script, quoted } => (self.substitute(p, script).await, *quoted),
            };
            if quoted {
                current.push_str(&value);
                started = true;
                continue;
            }
            let words: Vec<&str> = value.split_whitespace().collect();
            if words.is_empty() {
                if !value.is_empty() && started {
                    fields.push(std::mem::take(&mut current));
                    started = false;
                }
                continue;
            }
            if value.starts_with(char::is_whitespace) && started {
                fields.push(std::mem::take(&mut current));
            }
            for (i, word) in words.iter().enumerate() {
                if i > 0 {
                    fields.push(std::mem::take(&mut current));
                }
                current.push_str(word);
            }
            started = true;
            if value.ends_with(char::is_whitespace) {
                fields.push(std::mem::take(&mut current));
                started = false;
            }
        }
        if started {
            fields.push(current);
        }
        fields
    }
}
