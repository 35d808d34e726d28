//! The shell's arithmetic expansion, `$((...))`: integers (64-bit, wrapping), variables by
//! name (`i` or `$i`; unset or empty is 0), `+ - * / %`, comparisons (`< <= > >= == !=`),
//! `&& || !`, unary minus and parentheses.

/// Evaluates `expr`, reading variables with `lookup`. `Err` carries the shell's message.
pub(super) fn eval(expr: &str, lookup: &dyn Fn(&str) -> String) -> Result<i64, String> {
    let tokens = lex(expr)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        lookup,
    };
    let value = parser.binary(0)?;
    match parser.tokens.get(parser.pos) {
        None => Ok(value),
        Some(_) => Err(format!("arithmetic syntax error: {}", expr.trim())),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Num(i64),
    Name(String),
    Op(&'static str),
}

fn lex(expr: &str) -> Result<Vec<Tok>, String> {
    const OPS: &[&str] = &[
        "&&", "||", "<=", ">=", "==", "!=", "+", "-", "*", "/", "%", "<", ">", "!", "(", ")",
    ];
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    'outer: while i < bytes.len() {
        let c = bytes[i] as char;
        if c.is_whitespace() || c == '$' {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let text = &expr[start..i];
            let value = if let Some(hex) = text.strip_prefix("0x") {
                i64::from_str_radix(hex, 16)
            } else {
                text.parse()
            };
            out.push(Tok::Num(value.map_err(|_| {
                format!("arithmetic syntax error: {}", expr.trim())
            })?));
            continue;
        }
        if c == '_' || c.is_ascii_alphabetic() {
            let start = i;
            while i < bytes.len() && (bytes[i] == b'_' || bytes[i].is_ascii_alphanumeric()) {
                i += 1;
            }
            out.push(Tok::Name(expr[start..i].to_string()));
            continue;
        }
        for op in OPS {
            if expr[i..].starts_with(op) {
                out.push(Tok::Op(op));
                i += op.len();
                continue 'outer;
            }
        }
        return Err(format!("arithmetic syntax error: {}", expr.trim()));
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Tok>,
    pos: usize,
    lookup: &'a dyn Fn(&str) -> String,
}

/// Binding power of a binary operator.
fn power(op: &str) -> Option<u8> {
    Some(match op {
        "||" => 1,
        "&&" => 2,
        "==" | "!=" => 3,
        "<" | "<=" | ">" | ">=" => 4,
        "+" | "-" => 5,
        "*" | "/" | "%" => 6,
        _ => return None,
    })
}

impl Parser<'_> {
    fn error(&self) -> String {
        "arithmetic syntax error".to_string()
    }

    fn binary(&mut self, min: u8) -> Result<i64, String> {
        let mut left = self.unary()?;
        while let Some(Tok::Op(op)) = self.tokens.get(self.pos) {
            let op = *op;
            let Some(bp) = power(op) else { break };
            if bp <= min {
                break;
            }
            self.pos += 1;
            let right = self.binary(bp)?;
            left = match op {
                "||" => i64::from(left != 0 || right != 0),
                "&&" => i64::from(left != 0 && right != 0),
                "==" => i64::from(left == right),
                "!=" => i64::from(left != right),
                "<" => i64::from(left < right),
                "<=" => i64::from(left <= right),
                ">" => i64::from(left > right),
                ">=" => i64::from(left >= right),
                "+" => left.wrapping_add(right),
                "-" => left.wrapping_sub(right),
                "*" => left.wrapping_mul(right),
                "/" | "%" if right == 0 => return Err("divide by zero".into()),
                "/" => left.wrapping_div(right),
                _ => left.wrapping_rem(right),
            };
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<i64, String> {
        let token = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or_else(|| self.error())?;
        self.pos += 1;
        match token {
            Tok::Num(n) => Ok(n),
            Tok::Name(name) => {
                let value = (self.lookup)(&name);
                let value = value.trim();
                if value.is_empty() {
                    return Ok(0);
                }
                value.parse().map_err(|_| self.error())
            }
            Tok::Op("-") => Ok(self.unary()?.wrapping_neg()),
            Tok::Op("+") => self.unary(),
            Tok::Op("!") => Ok(i64::from(self.unary()? == 0)),
            Tok::Op("(") => {
                let value = self.binary(0)?;
                match self.tokens.get(self.pos) {
                    Some(Tok::Op(")")) => {
                        self.pos += 1;
                        Ok(value)
                    }
                    _ => Err(self.error()),
                }
            }
            Tok::Op(_) => Err(self.error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_follows_precedence_and_reads_variables() {
        let vars = |name: &str| match name {
            "i" => "41".to_string(),
            _ => String::new(),
        };
        assert_eq!(eval("i+1", &vars), Ok(42));
        assert_eq!(eval("$i * 2 - (1 + 1)", &vars), Ok(80));
        assert_eq!(eval("unset + 3", &vars), Ok(3));
        assert_eq!(eval("7 % 3 == 1 && !0", &vars), Ok(1));
        assert_eq!(eval("-2 * 3", &vars), Ok(-6));
        assert!(eval("1 / 0", &vars).is_err());
        assert!(eval("1 +", &vars).is_err());
    }
}
