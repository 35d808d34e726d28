//! Tests of the shell's grammar.

use super::parse::{parse, tokenize, Cmd, Compound, Part, Token};

fn words(src: &str) -> Vec<String> {
    tokenize(src)
        .unwrap()
        .into_iter()
        .map(|t| match t {
            Token::Word(parts) => parts
                .into_iter()
                .map(|p| match p {
                    Part::Lit(s) => s,
                    Part::Var { name, quoted } => {
                        format!("<{name}{}>", if quoted { "q" } else { "" })
                    }
                    Part::Cmd { script, .. } => format!("[{script}]"),
                    Part::Arith(expr) => format!("(({expr}))"),
                })
                .collect(),
            Token::Op(op) => format!("{op:?}"),
        })
        .collect()
}

#[test]
fn scripts_split_into_words_quotes_variables_and_operators() {
    assert_eq!(
        words(r#"echo 'a b' "c $X" d\ e ${Y}z;ls>f 2>&1 && x||y"#),
        vec![
            "echo", "a b", "c <Xq>", "d e", "<Y>z", "Semi", "ls", "Out", "f", "ErrToOut", "And",
            "x", "Or", "y"
        ]
    );
    assert_eq!(
        words("a 2>/dev/null >>o # comment"),
        vec!["a", "ErrOut", "/dev/null", "Append", "o"]
    );
    assert_eq!(words("echo ''"), vec!["echo", ""]);
    assert!(tokenize("echo 'open").is_err());
}

#[test]
fn substitutions_and_arithmetic_are_read_whole() {
    assert_eq!(
        words(r#"echo "$i: $(date +%s)" `hostname` $((i+1)) (x)"#),
        vec![
            "echo",
            "<iq>: [date +%s]",
            "[hostname]",
            "((i+1))",
            "LParen",
            "x",
            "RParen"
        ]
    );
    assert_eq!(
        words("echo $(echo $(echo a) ')')"),
        vec!["echo", "[echo $(echo a) ')']"]
    );
    assert!(tokenize("echo $(oops").is_err());
}

#[test]
fn a_dangling_operator_is_a_syntax_error() {
    assert!(tokenize("a &&").map(parse).unwrap().is_err());
    assert!(tokenize("| a").map(parse).unwrap().is_err());
    assert_eq!(tokenize("a; b | c").map(parse).unwrap().unwrap().len(), 2);
}

fn compound(src: &str) -> Compound {
    let list = tokenize(src).and_then(parse).unwrap();
    match &list[0].1.commands[0] {
        Cmd::Compound(compound, _) => (**compound).clone(),
        Cmd::Simple(command) => panic!("not a compound command: {command:?}"),
    }
}

#[test]
fn loops_and_conditionals_parse_into_compound_commands() {
    assert!(matches!(
        compound("while true; do echo tick; sleep 1; done"),
        Compound::Loop { until: false, ref body, .. } if body.len() == 2
    ));
    assert!(matches!(
        compound("until false\ndo\n:\ndone"),
        Compound::Loop { until: true, .. }
    ));
    assert!(matches!(
        compound("for x in a b c; do echo $x; done"),
        Compound::For { ref name, words: Some(ref words), .. } if name == "x" && words.len() == 3
    ));
    assert!(matches!(
        compound("if a; then b; elif c; then d; else e; fi"),
        Compound::If { ref branches, otherwise: Some(_) } if branches.len() == 2
    ));
    assert!(matches!(compound("{ a; b; } > f"), Compound::Group(ref l) if l.len() == 2));
    assert!(matches!(compound("(cd /tmp; ls)"), Compound::Subshell(_)));
    // `done` and friends are plain words after the first word of a command.
    assert_eq!(tokenize("echo done fi").and_then(parse).unwrap().len(), 1);
}

#[test]
fn unfinished_or_misplaced_compound_commands_are_syntax_errors() {
    let error = |src: &str| tokenize(src).and_then(parse).unwrap_err();
    assert_eq!(
        error("while true; do echo"),
        "syntax error: unexpected end of file (expecting \"done\")"
    );
    assert_eq!(error("done"), "syntax error: unexpected \"done\"");
    assert_eq!(
        error("if true; then echo; "),
        "syntax error: unexpected end of file (expecting \"fi\")"
    );
    assert_eq!(error("echo a )"), "syntax error: unexpected \")\"");
}
