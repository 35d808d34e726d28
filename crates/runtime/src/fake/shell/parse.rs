//! The shell's grammar: a script's words and operators ([`tokenize`]) and its commands
//! ([`parse`]): lists joined by `;`, newlines, `&&` and `||`, pipelines (with `!`), simple
//! commands with redirections, and the compound commands `if`, `while`, `until`, `for`,
//! `{ ...; }` and `( ... )`. `Err` values carry busybox's syntax error text.

/// One piece of a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    /// Text taken as it is (quoted or not).
    Lit(String),
    /// `$NAME`, `${NAME}`, `${NAME:-default}`; split into fields unless quoted.
    Var { name: String, quoted: bool },
    /// `$(script)` or `` `script` ``: the script's output; split into fields unless quoted.
    Cmd { script: String, quoted: bool },
    /// `$((expression))`.
    Arith(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Semi,
    And,
    Or,
    Pipe,
    Out,
    Append,
    In,
    ErrOut,
    ErrAppend,
    ErrToOut,
    OutToErr,
    LParen,
    RParen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token {
    Word(Vec<Part>),
    Op(Op),
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// Reads a parameter name after `$`: `{...}`, a special parameter or a name.
fn var(chars: &mut Chars<'_>) -> Option<String> {
    match chars.peek().copied() {
        Some('{') => {
            chars.next();
            let mut name = String::new();
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
                name.push(c);
            }
            Some(name)
        }
        Some(c) if "?#$@*!".contains(c) || c.is_ascii_digit() => {
            chars.next();
            Some(c.to_string())
        }
        Some(c) if c == '_' || c.is_ascii_alphabetic() => {
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if c == '_' || c.is_ascii_alphanumeric() {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            Some(name)
        }
        _ => None,
    }
}

/// Reads up to the `)` closing an already opened `(` (nested parentheses and quotes
/// included); `None` if it never closes.
fn until_close(chars: &mut Chars<'_>) -> Option<String> {
    let mut depth = 1;
    let mut out = String::new();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => {
                out.push(c);
                if let Some(n) = chars.next() {
                    out.push(n);
                }
                continue;
            }
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '\\') => {
                out.push(c);
                if let Some(n) = chars.next() {
                    out.push(n);
                }
                continue;
            }
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(out);
                }
            }
            _ => {}
        }
        out.push(c);
    }
    None
}

/// Reads what follows a `$`: a parameter, `$(...)` or `$((...))`. `Ok(None)` for a lone `$`.
fn dollar(chars: &mut Chars<'_>, quoted: bool) -> Result<Option<Part>, String> {
    if chars.peek() != Some(&'(') {
        return Ok(var(chars).map(|name| Part::Var { name, quoted }));
    }
    chars.next();
    let unterminated = || "syntax error: unterminated $(".to_string();
    if chars.peek() == Some(&'(') {
        chars.next();
        let inner = until_close(chars).ok_or_else(unterminated)?;
        if chars.next() != Some(')') {
            return Err("syntax error: missing '))'".into());
        }
        return Ok(Some(Part::Arith(inner)));
    }
    let script = until_close(chars).ok_or_else(unterminated)?;
    Ok(Some(Part::Cmd { script, quoted }))
}

/// Reads a backquoted command up to its closing backquote.
fn backquote(chars: &mut Chars<'_>, quoted: bool) -> Result<Part, String> {
    let mut script = String::new();
    while let Some(c) = chars.next() {
        match c {
            '`' => return Ok(Part::Cmd { script, quoted }),
            '\\' => match chars.next() {
                Some(n @ ('`' | '\\' | '$')) => script.push(n),
                Some(n) => {
                    script.push('\\');
                    script.push(n);
                }
                None => script.push('\\'),
            },
            c => script.push(c),
        }
    }
    Err("syntax error: unterminated `".into())
}

/// Accumulates the parts of the word being read.
#[derive(Default)]
struct WordBuf {
    parts: Vec<Part>,
    lit: String,
    in_word: bool,
}

impl WordBuf {
    fn push_part(&mut self, part: Part) {
        if !self.lit.is_empty() {
            self.parts.push(Part::Lit(std::mem::take(&mut self.lit)));
        }
        self.parts.push(part);
        self.in_word = true;
    }

    fn end(&mut self, tokens: &mut Vec<Token>) {
        if !self.lit.is_empty() {
            self.parts.push(Part::Lit(std::mem::take(&mut self.lit)));
        }
        if self.in_word {
            tokens.push(Token::Word(std::mem::take(&mut self.parts)));
        }
        self.in_word = false;
    }
}

/// Splits a script into words and operators.
pub(super) fn tokenize(src: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut w = WordBuf::default();
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' => w.end(&mut tokens),
            '\n' => {
                w.end(&mut tokens);
                tokens.push(Token::Op(Op::Semi));
            }
            '#' if !w.in_word => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        tokens.push(Token::Op(Op::Semi));
                        break;
                    }
                }
            }
            '(' | ')' => {
                w.end(&mut tokens);
                tokens.push(Token::Op(if c == '(' { Op::LParen } else { Op::RParen }));
            }
            ';' | '&' | '|' | '<' | '>' => {
                // `2>`, `2>>`, `2>&1` and `1>`: the descriptor is the word so far.
                let fd = (c == '>' && w.parts.is_empty() && (w.lit == "2" || w.lit == "1"))
                    .then(|| std::mem::take(&mut w.lit));
                if fd.is_some() {
                    w.in_word = false;
                } else {
                    w.end(&mut tokens);
                }
                let op = match c {
                    ';' => Op::Semi,
                    '&' if chars.peek() == Some(&'&') => {
                        chars.next();
                        Op::And
                    }
                    '&' => Op::Semi,
                    '|' if chars.peek() == Some(&'|') => {
                        chars.next();
                        Op::Or
                    }
                    '|' => Op::Pipe,
                    '<' => Op::In,
                    _ => {
                        let append = chars.peek() == Some(&'>');
                        if append {
                            chars.next();
                        }
                        let dup = !append && chars.peek() == Some(&'&');
                        if dup {
                            chars.next();
                            let target = chars.next();
                            match (fd.as_deref(), target) {
                                (Some("2"), Some('1')) => Op::ErrToOut,
                                (None | Some("1"), Some('2')) => Op::OutToErr,
                                (Some("2"), Some('2')) | (None | Some("1"), Some('1')) => {
                                    continue;
                                }
                                _ => return Err("syntax error: bad fd number".into()),
                            }
                        } else {
                            match (fd.as_deref(), append) {
                                (Some("2"), false) => Op::ErrOut,
                                (Some("2"), true) => Op::ErrAppend,
                                (_, false) => Op::Out,
                                (_, true) => Op::Append,
                            }
                        }
                    }
                };
                tokens.push(Token::Op(op));
            }
            '\'' => {
                w.in_word = true;
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '\'' {
                        closed = true;
                        break;
                    }
                    w.lit.push(c);
                }
                if !closed {
                    return Err("syntax error: unterminated quoted string".into());
                }
            }
            '"' => {
                w.in_word = true;
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.peek().copied() {
                            Some(n @ ('"' | '\\' | '$' | '`')) => {
                                chars.next();
                                w.lit.push(n);
                            }
                            Some('\n') => {
                                chars.next();
                            }
                            _ => w.lit.push('\\'),
                        },
                        '$' => match dollar(&mut chars, true)? {
                            Some(part) => w.push_part(part),
                            None => w.lit.push('$'),
                        },
                        '`' => {
                            let part = backquote(&mut chars, true)?;
                            w.push_part(part);
                        }
                        other => w.lit.push(other),
                    }
                }
                if !closed {
                    return Err("syntax error: unterminated quoted string".into());
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(n) => {
                    w.in_word = true;
                    w.lit.push(n);
                }
                None => {
                    w.in_word = true;
                    w.lit.push('\\');
                }
            },
            '$' => {
                w.in_word = true;
                match dollar(&mut chars, false)? {
                    Some(part) => w.push_part(part),
                    None => w.lit.push('$'),
                }
            }
            '`' => {
                let part = backquote(&mut chars, false)?;
                w.push_part(part);
            }
            other => {
                w.in_word = true;
                w.lit.push(other);
            }
        }
    }
    w.end(&mut tokens);
    Ok(tokens)
}

/// A redirection: its operator and target word (empty for `2>&1` and `>&2`).
pub(super) type Redirection = (Op, Vec<Part>);

/// One simple command: its words and redirections, in order.
#[derive(Debug, Clone, Default)]
pub(super) struct Command {
    pub(super) words: Vec<Vec<Part>>,
    pub(super) redirections: Vec<Redirection>,
}

/// A compound command.
#[derive(Debug, Clone)]
pub(super) enum Compound {
    /// `if C; then B; [elif C; then B;]... [else B;] fi`.
    If {
        branches: Vec<(List, List)>,
        otherwise: Option<List>,
    },
    /// `while C; do B; done`, or `until` (`until: true`).
    Loop { until: bool, cond: List, body: List },
    /// `for NAME [in WORD...]; do B; done` (without `in`: the positional parameters).
    For {
        name: String,
        words: Option<Vec<Vec<Part>>>,
        body: List,
    },
    /// `{ B; }`.
    Group(List),
    /// `( B )`: run in a copy of the shell.
    Subshell(List),
}

/// A command of a pipeline.
#[derive(Debug, Clone)]
pub(super) enum Cmd {
    Simple(Command),
    Compound(Box<Compound>, Vec<Redirection>),
}

/// Commands joined by `|`, maybe negated with `!`.
#[derive(Debug, Clone)]
pub(super) struct Pipeline {
    pub(super) negate: bool,
    pub(super) commands: Vec<Cmd>,
}

/// How a pipeline joins the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Join {
    Always,
    IfSuccess,
    IfFailure,
}

/// Pipelines in order, each with how it joins the previous one.
pub(super) type List = Vec<(Join, Pipeline)>;

/// Parses a script.
pub(super) fn parse(tokens: Vec<Token>) -> Result<List, String> {
    let mut parser = Parser { tokens, pos: 0 };
    let list = parser.list(&[])?;
    match parser.peek() {
        None => Ok(list),
        Some(token) => Err(unexpected(token)),
    }
}

/// Words with a meaning at the start of a command.
const RESERVED: &[&str] = &[
    "if", "then", "elif", "else", "fi", "while", "until", "do", "done", "for", "in", "{", "}", "!",
];

fn unexpected(token: &Token) -> String {
    let text = match token {
        Token::Word(parts) => match parts.as_slice() {
            [Part::Lit(s)] => s.clone(),
            _ => "word".into(),
        },
        Token::Op(op) => match op {
            Op::Semi => ";",
            Op::And => "&&",
            Op::Or => "||",
            Op::Pipe => "|",
            Op::LParen => "(",
            Op::RParen => ")",
            _ => "redirection",
        }
        .into(),
    };
    format!("syntax error: unexpected \"{text}\"")
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    /// The reserved word at the current position, if it is one.
    fn keyword(&self) -> Option<&str> {
        match self.peek()? {
            Token::Word(parts) => match parts.as_slice() {
                [Part::Lit(s)] if RESERVED.contains(&s.as_str()) => Some(s),
                _ => None,
            },
            Token::Op(_) => None,
        }
    }

    fn skip_separators(&mut self) {
        while self.peek() == Some(&Token::Op(Op::Semi)) {
            self.pos += 1;
        }
    }

    /// Consumes reserved word `word`, or fails.
    fn expect(&mut self, word: &str) -> Result<(), String> {
        if self.keyword() == Some(word) {
            self.pos += 1;
            return Ok(());
        }
        match self.peek() {
            Some(token) => Err(unexpected(token)),
            None => Err(format!(
                "syntax error: unexpected end of file (expecting \"{word}\")"
            )),
        }
    }

    /// A list, up to the end, a `)` or one of the reserved words `until`.
    fn list(&mut self, until: &[&str]) -> Result<List, String> {
        let mut list = List::new();
        loop {
            self.skip_separators();
            match self.peek() {
                None | Some(Token::Op(Op::RParen)) => break,
                _ => {}
            }
            if self.keyword().is_some_and(|k| until.contains(&k)) {
                break;
            }
            let mut join = Join::Always;
            loop {
                let pipeline = self.pipeline()?;
                list.push((join, pipeline));
                join = match self.peek() {
                    Some(Token::Op(Op::And)) => Join::IfSuccess,
                    Some(Token::Op(Op::Or)) => Join::IfFailure,
                    _ => break,
                };
                self.pos += 1;
                // A newline may follow `&&` and `||` (the tokens do not tell it from `;`).
                self.skip_separators();
            }
            match self.peek() {
                None | Some(Token::Op(Op::Semi | Op::RParen)) => {}
                Some(_) if self.keyword().is_some_and(|k| until.contains(&k)) => {}
                Some(token) => return Err(unexpected(token)),
            }
        }
        Ok(list)
    }

    fn pipeline(&mut self) -> Result<Pipeline, String> {
        let negate = self.keyword() == Some("!");
        if negate {
            self.pos += 1;
        }
        let mut commands = vec![self.command()?];
        while self.peek() == Some(&Token::Op(Op::Pipe)) {
            self.pos += 1;
            self.skip_separators();
            commands.push(self.command()?);
        }
        Ok(Pipeline { negate, commands })
    }

    fn redirections(&mut self, into: &mut Vec<Redirection>) -> Result<bool, String> {
        match self.peek() {
            Some(Token::Op(op @ (Op::Out | Op::Append | Op::In | Op::ErrOut | Op::ErrAppend))) => {
                let op = *op;
                self.pos += 1;
                match self.peek() {
                    Some(Token::Word(target)) => {
                        into.push((op, target.clone()));
                        self.pos += 1;
                        Ok(true)
                    }
                    _ => Err("syntax error: unexpected newline".into()),
                }
            }
            Some(Token::Op(op @ (Op::ErrToOut | Op::OutToErr))) => {
                into.push((*op, Vec::new()));
                self.pos += 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn command(&mut self) -> Result<Cmd, String> {
        let compound = match (self.keyword(), self.peek()) {
            (Some("if"), _) => {
                self.pos += 1;
                Some(self.if_clause()?)
            }
            (Some(k @ ("while" | "until")), _) => {
                let until = k == "until";
                self.pos += 1;
                let cond = self.list(&["do"])?;
                self.expect("do")?;
                let body = self.list(&["done"])?;
                self.expect("done")?;
                Some(Compound::Loop { until, cond, body })
            }
            (Some("for"), _) => {
                self.pos += 1;
                Some(self.for_clause()?)
            }
            (Some("{"), _) => {
                self.pos += 1;
                let body = self.list(&["}"])?;
                self.expect("}")?;
                Some(Compound::Group(body))
            }
            (Some(k), Some(token)) if k != "!" && k != "in" => return Err(unexpected(token)),
            (_, Some(Token::Op(Op::LParen))) => {
                self.pos += 1;
                let body = self.list(&[])?;
                match self.peek() {
                    Some(Token::Op(Op::RParen)) => self.pos += 1,
                    Some(token) => return Err(unexpected(token)),
                    None => return Err("syntax error: unexpected end of file".into()),
                }
                Some(Compound::Subshell(body))
            }
            _ => None,
        };
        if let Some(compound) = compound {
            let mut redirections = Vec::new();
            while self.redirections(&mut redirections)? {}
            return Ok(Cmd::Compound(Box::new(compound), redirections));
        }
        let mut command = Command::default();
        loop {
            if self.redirections(&mut command.redirections)? {
                continue;
            }
            match self.peek() {
                Some(Token::Word(parts)) => {
                    command.words.push(parts.clone());
                    self.pos += 1;
                }
                _ => break,
            }
        }
        if command.words.is_empty() && command.redirections.is_empty() {
            return Err(match self.peek() {
                Some(token) => unexpected(token),
                None => "syntax error: unexpected end of file".into(),
            });
        }
        Ok(Cmd::Simple(command))
    }

    fn if_clause(&mut self) -> Result<Compound, String> {
        let mut branches = Vec::new();
        let mut otherwise = None;
        loop {
            let cond = self.list(&["then"])?;
            self.expect("then")?;
            let body = self.list(&["elif", "else", "fi"])?;
            branches.push((cond, body));
            match self.keyword() {
                Some("elif") => self.pos += 1,
                Some("else") => {
                    self.pos += 1;
                    otherwise = Some(self.list(&["fi"])?);
                    self.expect("fi")?;
                    break;
                }
                _ => {
                    self.expect("fi")?;
                    break;
                }
            }
        }
        Ok(Compound::If {
            branches,
            otherwise,
        })
    }

    fn for_clause(&mut self) -> Result<Compound, String> {
        let name = match self.peek() {
            Some(Token::Word(parts)) => match parts.as_slice() {
                [Part::Lit(name)] => name.clone(),
                _ => return Err("syntax error: bad for loop variable".into()),
            },
            Some(token) => return Err(unexpected(token)),
            None => return Err("syntax error: unexpected end of file".into()),
        };
        self.pos += 1;
        self.skip_separators();
        let words = if self.keyword() == Some("in") {
            self.pos += 1;
            let mut words = Vec::new();
            while let Some(Token::Word(parts)) = self.peek() {
                words.push(parts.clone());
                self.pos += 1;
            }
            self.skip_separators();
            Some(words)
        } else {
            None
        };
        self.expect("do")?;
        let body = self.list(&["done"])?;
        self.expect("done")?;
        Ok(Compound::For { name, words, body })
    }
}
