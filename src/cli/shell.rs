//! Which files a shell command line writes, read before it runs.
//!
//! The Claude Code guard gets the Bash tool's `command` before it runs, and refuses it when it
//! would write a file that another agent has reserved. This module reads the command line the
//! way a shell splits it (words, quotes, operators, redirections, heredocs) and knows what some
//! common commands write: redirections, `tee`, `sed -i`, `perl -i`, `mv`, `cp`, `install`, `ln`,
//! `rm`, `touch`, `truncate`, `chmod`, `dd`, `git mv`/`rm`/`checkout`/`restore`. It follows a
//! literal `cd` (and `pushd`, `popd`, `git -C`), and reads the commands inside `bash -c '...'`,
//! `eval '...'`, `$(...)` and `<(...)`.
//!
//! It is not a shell: it expands nothing, runs nothing and looks at no file. The check after the
//! command (git status) sees what the command really did, so this reader prefers no target to a
//! wrong one: what it cannot read with confidence it leaves out (`make`, `python script.py`) or
//! names in [`Writes::unread`] (`rm "$f"`, `git checkout main`). It never panics and reads a 1 MiB
//! command in linear time: nested commands are read at most [`MAX_DEPTH`] levels deep, and the
//! lists it returns are bounded.
//!
//! Paths are lexical: `a/../b` is `b` even when `a` is a symbolic link, and a destination that
//! is a directory on disk (`mv a.rs src`) is for the caller to see, through [`Writes::into`].

use std::collections::HashSet;
use std::rc::Rc;

/// How deep commands inside commands (`bash -c`, `eval`, `$(...)`, `find -exec`) are read.
const MAX_DEPTH: usize = 4;
/// The longest path kept (Linux's `PATH_MAX`): the system refuses longer ones, so a command
/// naming one fails; it goes to [`Writes::unread`].
const MAX_PATH: usize = 4096;
/// At most this many entries in each list of [`Writes`]; the later check sees the rest.
const MAX_ENTRIES: usize = 4096;
/// At most this many directories on the `pushd` stack: a `popd` past the oldest kept one leaves
/// the directory unknown. Bounds what each subshell copies.
const MAX_PUSHED: usize = 64;

/// What a shell command line writes, as far as it can be read.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Writes {
    /// Paths the command writes, as written in it but joined onto the directory a literal `cd` moved to
    /// (`cd src && sed -i s/a/b/ a.rs` gives `src/a.rs`); relative paths stay relative to the
    /// command's starting directory, absolute ones stay absolute. In order of appearance, no duplicates.
    pub(crate) paths: Vec<String>,
    /// Words that name a write target that could not be read (with `$`, a backtick, `$(`, a glob
    /// character `*?[`, or `~`): the command is not refused for them; a later check sees what they did.
    /// Also relative targets after a `cd` that could not be read, and the names of commands that
    /// write files they do not name (`git checkout`, `git pull`, `find`, `patch`).
    pub(crate) unread: Vec<String>,
    /// `(destination, source)` pairs of `mv`, `cp`, `install`, `ln` and `git mv` whose destination
    /// may be a directory. The destination is in `paths` already; when it is an existing directory
    /// on disk, the command writes `destination/basename(source)` instead, which only the caller
    /// can see: it must treat such a pair as that path. Joined like `paths`. (A destination that
    /// ends with `/` has `destination/basename(source)` in `paths` too.)
    pub(crate) into: Vec<(String, String)>,
}

/// The files `command` writes, as far as they can be read (see the module's documentation).
pub(crate) fn writes(command: &str) -> Writes {
    let mut out = Out::default();
    read(command, &mut Shell::start(), &mut out, 0);
    out.writes
}

// ---------------------------------------------------------------------------------------------
// Words and operators.

/// A word of the command line.
#[derive(Debug, Clone, Default)]
struct Word {
    /// Its text with quotes removed; expansions stay as written (`$f`).
    text: String,
    /// As written in the command, quotes included: what [`Writes::unread`] shows.
    raw: String,
    /// Where it starts in the text it was read from: orders what one command writes.
    pos: usize,
    /// It has an expansion, a glob or a leading `~`: what it names is known only when it runs.
    dynamic: bool,
    /// Part of it is quoted or escaped, so `'{'` or `"if"` is no keyword.
    quoted: bool,
    /// It is a process substitution (`>(...)`): a pipe, not a file.
    process: bool,
    /// The commands inside it (`$(...)`, backticks, `<(...)`), read as commands of their own.
    subs: Vec<String>,
}

impl Word {
    /// This word with another text: an option's value inside it (`--target-directory=DIR`).
    fn with_text(&self, text: &str) -> Word {
        Word { text: text.to_owned(), raw: self.raw.clone(), subs: Vec::new(), ..*self }
    }

    /// It is the unquoted keyword `keyword`.
    fn is(&self, keyword: &str) -> bool {
        !self.quoted && self.text == keyword
    }
}

/// A token of the command line.
enum Token {
    /// A word.
    Word(Word),
    /// An operator.
    Op(Op),
}

/// The operators, as far as they matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `;`, a newline, `&`, `|`, `|&`: ends a command.
    End,
    /// `&&`, `||`: ends a command (but not a `[[ ... ]]` test).
    Logic,
    /// `;;`, `;&`, `;;&`: ends a branch of a `case`.
    CaseEnd,
    /// `(`: opens a subshell.
    Open,
    /// `)`: closes a subshell, or a `case` pattern.
    Close,
    /// A redirection; the next word is its target.
    Redirect(Redirect),
}

/// What a redirection does to the word after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redirect {
    /// `>`, `>>`, `>|`, `&>`, `&>>`, `<>` (all with an optional fd number): writes a file.
    Write,
    /// `>&`: duplicates a file descriptor, or (`>& file`, not a number) writes a file.
    Dup,
    /// `<`, `<&`, `<<`, `<<-`, `<<<`: reads.
    Read,
}

/// Splits a command line into words and operators, and skips heredoc bodies.
struct Lexer<'a> {
    /// The command line.
    src: &'a [u8],
    /// Where reading is.
    pos: usize,
    /// Heredocs whose bodies start after the next newline.
    heredocs: Heredocs,
    /// The next word is a heredoc's delimiter (`Some(strip_tabs)`).
    delimiter: Option<bool>,
}

/// What a word is being built from.
#[derive(Default)]
struct Builder {
    /// The text, quotes removed.
    text: Vec<u8>,
    /// As [`Word::dynamic`].
    dynamic: bool,
    /// As [`Word::quoted`].
    quoted: bool,
    /// As [`Word::subs`].
    subs: Vec<String>,
    /// It starts with a process substitution.
    process: bool,
    /// An unquoted `{` was seen, and then a `,` or `..`: a `}` after them is a brace expansion.
    brace: bool,
    /// A `,` or `..` followed that `{`.
    brace_list: bool,
}

impl Builder {
    /// An unquoted character that is no quote, escape or expansion.
    fn plain(&mut self, c: u8, first: bool) {
        match c {
            b'*' | b'?' | b'[' => self.dynamic = true,
            b'~' if first => self.dynamic = true,
            b'{' => self.brace = true,
            b',' if self.brace => self.brace_list = true,
            b'.' if self.brace && self.text.last() == Some(&b'.') => self.brace_list = true,
            b'}' if self.brace_list => self.dynamic = true,
            _ => {}
        }
        self.text.push(c);
    }

    /// The word, which starts at `pos` and is written `raw`.
    fn finish(self, pos: usize, raw: &[u8]) -> Word {
        Word {
            text: lossy(&self.text),
            raw: lossy(raw),
            pos,
            dynamic: self.dynamic,
            quoted: self.quoted,
            process: self.process,
            subs: self.subs,
        }
    }
}

/// Bytes as text (they always are UTF-8: they are cut from a `&str` at ASCII characters).
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl<'a> Lexer<'a> {
    /// A lexer at the start of `text`.
    fn new(text: &'a str) -> Self {
        Lexer { src: text.as_bytes(), pos: 0, heredocs: Vec::new(), delimiter: None }
    }

    /// The byte at `i`, or 0 past the end (0 is nothing the lexer looks for).
    fn at(&self, i: usize) -> u8 {
        self.src.get(i).copied().unwrap_or(0)
    }

    /// The next token, or `None` at the end.
    fn next_token(&mut self) -> Option<Token> {
        loop {
            self.skip_blanks();
            let c = *self.src.get(self.pos)?;
            if c == b'#' {
                self.pos = line_end(self.src, self.pos);
                continue;
            }
            let next = self.at(self.pos + 1);
            let token = match c {
                b'\n' => {
                    self.pos += 1;
                    self.skip_heredocs();
                    Token::Op(Op::End)
                }
                b'(' if next == b'(' => Token::Word(self.arithmetic()),
                b'<' | b'>' if next == b'(' => Token::Word(self.word()),
                b'<' | b'>' => Token::Op(Op::Redirect(self.redirect())),
                b'&' if next == b'>' => Token::Op(Op::Redirect(self.redirect())),
                b';' | b'&' | b'|' | b'(' | b')' => Token::Op(self.operator()),
                b'0'..=b'9' if self.fd_number() => Token::Op(Op::Redirect(self.redirect())),
                _ => Token::Word(self.word()),
            };
            match &token {
                Token::Word(word) => {
                    if let Some(strip) = self.delimiter.take() {
                        self.heredocs.push((word.text.as_bytes().to_vec(), strip));
                    }
                }
                Token::Op(Op::Redirect(_)) => {}
                Token::Op(_) => self.delimiter = None,
            }
            return Some(token);
        }
    }

    /// Skips spaces, tabs, carriage returns and escaped newlines.
    fn skip_blanks(&mut self) {
        loop {
            match (self.at(self.pos), self.at(self.pos + 1)) {
                (b' ' | b'\t' | b'\r', _) => self.pos += 1,
                (b'\\', b'\n') => self.pos += 2,
                _ => return,
            }
        }
    }

    /// Skips the bodies of the heredocs opened on the line that just ended: they are input.
    fn skip_heredocs(&mut self) {
        self.pos = skip_bodies(self.src, self.pos, &std::mem::take(&mut self.heredocs));
    }

    /// Digits right before `<` or `>` are the fd of a redirection (`2>err.log`): skips them.
    fn fd_number(&mut self) -> bool {
        let rest = self.src.get(self.pos..).unwrap_or_default();
        let after = self.pos + rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let redirects = matches!(self.at(after), b'<' | b'>') && self.at(after + 1) != b'(';
        if redirects {
            self.pos = after;
        }
        redirects
    }

    /// Reads a redirection operator (at `<`, `>` or `&>`).
    fn redirect(&mut self) -> Redirect {
        let (len, kind) = match (self.at(self.pos), self.at(self.pos + 1), self.at(self.pos + 2)) {
            (b'&', _, b'>') => (3, Redirect::Write),
            (b'&', _, _) => (2, Redirect::Write),
            (b'>', b'>' | b'|', _) => (2, Redirect::Write),
            (b'>', b'&', _) => (2, Redirect::Dup),
            (b'>', _, _) => (1, Redirect::Write),
            (b'<', b'<', b'<') => (3, Redirect::Read),
            (b'<', b'<', b'-') => {
                self.delimiter = Some(true);
                (3, Redirect::Read)
            }
            (b'<', b'<', _) => {
                self.delimiter = Some(false);
                (2, Redirect::Read)
            }
            (b'<', b'>', _) => (2, Redirect::Write),
            (b'<', b'&', _) => (2, Redirect::Read),
            _ => (1, Redirect::Read),
        };
        self.pos += len;
        kind
    }

    /// Reads a control operator (at `;`, `&`, `|`, `(` or `)`).
    fn operator(&mut self) -> Op {
        let (len, op) = match (self.at(self.pos), self.at(self.pos + 1), self.at(self.pos + 2)) {
            (b';', b';', b'&') => (3, Op::CaseEnd),
            (b';', b';' | b'&', _) => (2, Op::CaseEnd),
            (b'&', b'&', _) | (b'|', b'|', _) => (2, Op::Logic),
            (b'|', b'&', _) => (2, Op::End),
            (b'(', _, _) => (1, Op::Open),
            (b')', _, _) => (1, Op::Close),
            _ => (1, Op::End),
        };
        self.pos += len;
        op
    }

    /// An arithmetic command `(( ... ))`: one word that names nothing (its `>` compares).
    fn arithmetic(&mut self) -> Word {
        let start = self.pos;
        let (end, _) = skip_nested(self.src, start + 1, Nest::Arith);
        self.pos = end;
        let raw = lossy(self.src.get(start..end).unwrap_or_default());
        Word { text: raw.clone(), raw, pos: start, dynamic: true, ..Word::default() }
    }

    /// Reads a word.
    fn word(&mut self) -> Word {
        let start = self.pos;
        let mut b = Builder::default();
        if matches!(self.at(start), b'<' | b'>') {
            // A process substitution, `<(...)` or `>(...)`.
            self.substitution(&mut b, true);
            b.process = true;
        }
        while let Some(&c) = self.src.get(self.pos) {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'<' | b'>' => break,
                b'\\' => self.escaped(&mut b),
                b'\'' => self.single_quoted(&mut b),
                b'"' => self.double_quoted(&mut b),
                b'$' => self.dollar(&mut b, false),
                b'`' => self.backtick(&mut b),
                _ => {
                    b.plain(c, self.pos == start);
                    self.pos += 1;
                }
            }
        }
        if self.pos == start {
            self.pos += 1;
        }
        b.finish(start, self.src.get(start..self.pos).unwrap_or_default())
    }

    /// A backslash outside quotes: the next character is literal (a newline is removed).
    fn escaped(&mut self, b: &mut Builder) {
        b.quoted = true;
        match self.src.get(self.pos + 1) {
            Some(b'\n') => self.pos += 2,
            Some(&c) => {
                b.text.push(c);
                self.pos += 2;
            }
            None => self.pos += 1,
        }
    }

    /// `'...'`: literal up to the next `'` (or the end).
    fn single_quoted(&mut self, b: &mut Builder) {
        b.quoted = true;
        let open = self.pos + 1;
        let rest = self.src.get(open..).unwrap_or_default();
        let end = rest.iter().position(|&c| c == b'\'').map_or(self.src.len(), |p| open + p);
        b.text.extend_from_slice(self.src.get(open..end).unwrap_or_default());
        self.pos = (end + 1).min(self.src.len());
    }

    /// `"..."`: literal but for expansions and the escapes `\"`, `\\`, `\$`, `` \` ``.
    fn double_quoted(&mut self, b: &mut Builder) {
        b.quoted = true;
        self.pos += 1;
        while let Some(&c) = self.src.get(self.pos) {
            match c {
                b'"' => {
                    self.pos += 1;
                    return;
                }
                b'\\' => {
                    let next = self.at(self.pos + 1);
                    if matches!(next, b'"' | b'\\' | b'$' | b'`') {
                        b.text.push(next);
                        self.pos += 2;
                    } else if next == b'\n' {
                        self.pos += 2;
                    } else {
                        b.text.push(c);
                        self.pos += 1;
                    }
                }
                b'$' => self.dollar(b, true),
                b'`' => self.backtick(b),
                _ => {
                    b.text.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// A `$`: an expansion (`$x`, `${x}`, `$(...)`, `$((...))`), a quote (`$'...'`, `$"..."`),
    /// or a literal `$`.
    fn dollar(&mut self, b: &mut Builder, in_double_quotes: bool) {
        match self.at(self.pos + 1) {
            b'(' => {
                let arithmetic = self.at(self.pos + 2) == b'(';
                self.substitution(b, !arithmetic);
            }
            b'{' => {
                let (end, _) = skip_nested(self.src, self.pos + 2, Nest::Brace);
                b.text.extend_from_slice(self.src.get(self.pos..end).unwrap_or_default());
                b.dynamic = true;
                self.pos = end;
            }
            b'\'' if !in_double_quotes => self.ansi_c(b),
            b'"' if !in_double_quotes => {
                self.pos += 1;
                self.double_quoted(b);
            }
            c if c.is_ascii_alphanumeric() || b"_@*#?$!-".contains(&c) => {
                b.dynamic = true;
                b.text.push(b'$');
                self.pos += 1;
            }
            _ => {
                b.text.push(b'$');
                self.pos += 1;
            }
        }
    }

    /// `$(...)`, `$((...))`, `<(...)` or `>(...)` (at its first character): kept as written, and
    /// but for arithmetic, its body is a command to read.
    fn substitution(&mut self, b: &mut Builder, command: bool) {
        let open = self.pos + 2;
        let (end, closed) = skip_nested(self.src, open, if command { Nest::Paren } else { Nest::Arith });
        if command {
            let body_end = if closed { end - 1 } else { end };
            b.subs.push(lossy(self.src.get(open..body_end).unwrap_or_default()));
        }
        b.text.extend_from_slice(self.src.get(self.pos..end).unwrap_or_default());
        b.dynamic = true;
        self.pos = end;
    }

    /// `` `...` ``: an old-style command substitution.
    fn backtick(&mut self, b: &mut Builder) {
        let open = self.pos + 1;
        let (end, closed) = skip_nested(self.src, open, Nest::Tick);
        let body_end = if closed { end - 1 } else { end };
        b.subs.push(unescape_backticks(self.src.get(open..body_end).unwrap_or_default()));
        b.text.extend_from_slice(self.src.get(self.pos..end).unwrap_or_default());
        b.dynamic = true;
        self.pos = end;
    }

    /// `$'...'`: literal when it has no backslash; with one, its escapes are not decoded, so the
    /// word is not read.
    fn ansi_c(&mut self, b: &mut Builder) {
        b.quoted = true;
        let open = self.pos + 2;
        let mut i = open;
        while let Some(&c) = self.src.get(i) {
            match c {
                b'\\' => {
                    b.dynamic = true;
                    i += 2;
                }
                b'\'' => break,
                _ => i += 1,
            }
        }
        let end = i.min(self.src.len());
        b.text.extend_from_slice(self.src.get(open..end).unwrap_or_default());
        self.pos = (end + 1).min(self.src.len());
    }
}

/// The body of a backtick substitution as a command: `` \` ``, `\\` and `\$` lose their backslash.
fn unescape_backticks(body: &[u8]) -> String {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while let Some(&c) = body.get(i) {
        let next = body.get(i + 1).copied();
        if c == b'\\'
            && let Some(n @ (b'`' | b'\\' | b'$')) = next
        {
            out.push(n);
            i += 2;
        } else {
            out.push(c);
            i += 1;
        }
    }
    lossy(&out)
}

/// Heredocs whose bodies start after the next newline: each delimiter, and whether the lines
/// of its body lose their leading tabs (`<<-`).
type Heredocs = Vec<(Vec<u8>, bool)>;

/// Where the line that `from` is in ends (its newline, or the end of `src`).
fn line_end(src: &[u8], from: usize) -> usize {
    let rest = src.get(from..).unwrap_or_default();
    rest.iter().position(|&b| b == b'\n').map_or(src.len(), |p| from + p)
}

/// Skips the bodies of `docs`, which start at `pos` (the start of a line): where reading goes on.
fn skip_bodies(src: &[u8], mut pos: usize, docs: &[(Vec<u8>, bool)]) -> usize {
    for (delimiter, strip) in docs {
        while pos < src.len() {
            let end = line_end(src, pos);
            let mut line = src.get(pos..end).unwrap_or_default();
            pos = (end + 1).min(src.len());
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            while *strip && let Some(l) = line.strip_prefix(b"\t") {
                line = l;
            }
            if line == delimiter.as_slice() {
                break;
            }
        }
    }
    pos
}

/// The delimiter of a heredoc whose `<<` ends right before `from`, quotes removed; whether its
/// body loses leading tabs (`<<-`); and where the delimiter ends.
fn heredoc_delimiter(src: &[u8], from: usize) -> (Vec<u8>, bool, usize) {
    let strip = src.get(from) == Some(&b'-');
    let mut i = from + usize::from(strip);
    while matches!(src.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    let mut delimiter = Vec::new();
    while let Some(&c) = src.get(i) {
        match c {
            b' ' | b'\t' | b'\r' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'<' | b'>' => break,
            b'\'' | b'"' => {
                let rest = src.get(i + 1..).unwrap_or_default();
                let close = rest.iter().position(|&b| b == c).map_or(src.len(), |p| i + 1 + p);
                delimiter.extend_from_slice(src.get(i + 1..close).unwrap_or_default());
                i = close + 1;
            }
            b'\\' => {
                delimiter.extend(src.get(i + 1).copied());
                i += 2;
            }
            _ => {
                delimiter.push(c);
                i += 1;
            }
        }
    }
    (delimiter, strip, i.min(src.len()))
}

/// A construct that [`skip_nested`] is inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nest {
    /// `$(`, `(`, `<(`: ends at `)`. Comments and heredocs are skipped inside.
    Paren,
    /// `$((`, `((`: one for each parenthesis; `<<` is a shift, not a heredoc.
    Arith,
    /// `${`: ends at `}`.
    Brace,
    /// `"`: ends at `"`.
    Quote,
    /// `` ` ``: ends at `` ` ``.
    Tick,
}

/// Where the construct `open`, whose body starts at `start`, ends: the index after its closing
/// character, and whether it was closed (else the end of `src`). Iterative, with its own stack,
/// so deep nesting costs no call stack; each byte is looked at once (a heredoc body, where an
/// apostrophe or a parenthesis means nothing, is skipped as a whole).
fn skip_nested(src: &[u8], start: usize, open: Nest) -> (usize, bool) {
    let mut stack = vec![open];
    let mut heredocs = Heredocs::new();
    let mut i = start;
    while let Some(&c) = src.get(i) {
        let at = i;
        i += 1;
        let next = src.get(i).copied().unwrap_or(0);
        let top = stack.last().copied().unwrap_or(open);
        match (top, c) {
            (_, b'\\') => i += 1,
            (Nest::Tick, b'`') | (Nest::Quote, b'"') => {
                stack.pop();
            }
            (Nest::Tick, _) => {}
            (_, b'`') => stack.push(Nest::Tick),
            (_, b'$') if next == b'(' && src.get(i + 1) == Some(&b'(') => {
                stack.extend([Nest::Arith, Nest::Arith]);
                i += 2;
            }
            (_, b'$') if next == b'(' => {
                stack.push(Nest::Paren);
                i += 1;
            }
            (_, b'$') if next == b'{' => {
                stack.push(Nest::Brace);
                i += 1;
            }
            (Nest::Quote, _) => {}
            (_, b'"') => stack.push(Nest::Quote),
            (_, b'\'') => {
                let rest = src.get(i..).unwrap_or_default();
                i = rest.iter().position(|&b| b == b'\'').map_or(src.len(), |p| i + p + 1);
            }
            (Nest::Paren, b'(') if next == b'(' => {
                stack.extend([Nest::Arith, Nest::Arith]);
                i += 1;
            }
            (Nest::Paren | Nest::Arith, b'(') => stack.push(top),
            (Nest::Paren | Nest::Arith, b')') | (Nest::Brace, b'}') => {
                stack.pop();
            }
            (Nest::Paren, b'<') if next == b'<' && src.get(i + 1) == Some(&b'<') => i += 2,
            (Nest::Paren, b'<') if next == b'<' => {
                let (delimiter, strip, end) = heredoc_delimiter(src, i + 1);
                if !delimiter.is_empty() {
                    heredocs.push((delimiter, strip));
                }
                i = end;
            }
            (Nest::Paren, b'\n') if !heredocs.is_empty() => i = skip_bodies(src, i, &std::mem::take(&mut heredocs)),
            (Nest::Paren, b'#') if at == start || matches!(src[at - 1], b' ' | b'\t' | b'\n' | b';') => {
                let rest = src.get(i..).unwrap_or_default();
                i = rest.iter().position(|&b| b == b'\n').map_or(src.len(), |p| i + p);
            }
            _ => {}
        }
        if stack.is_empty() {
            return (i.min(src.len()), true);
        }
    }
    (src.len(), false)
}

// ---------------------------------------------------------------------------------------------
// The shell's directory, and what is found.

/// What is known of the shell's working directory: a normalized path (relative to where the
/// command line starts, `.` for there, or absolute), or `None` after a `cd` that could not be read.
type Dir = Option<Rc<str>>;

/// The part of the shell's state that this reader follows.
#[derive(Debug, Clone)]
struct Shell {
    /// The working directory.
    dir: Dir,
    /// The `pushd` stack.
    pushed: Vec<Dir>,
}

impl Shell {
    /// Where the command line starts.
    fn start() -> Self {
        Shell { dir: Some(Rc::from(".")), pushed: Vec::new() }
    }
}

/// `path` joined onto `dir` and normalized lexically, or `None` when it is relative and `dir`
/// is unknown, or the result is too long to be a path.
fn join(dir: &Dir, path: &str) -> Option<String> {
    if path.len() > MAX_PATH {
        return None;
    }
    let joined = if path.starts_with('/') { normalize(path) } else { onto(dir.as_deref()?, &normalize(path)) };
    (joined.len() <= MAX_PATH).then_some(joined)
}

/// The normalized relative path `path` joined onto the normalized directory `dir` (no trailing
/// slash). Only `path` and the `..` at its start are looked at, so many paths joined onto a long
/// directory cost no more than copying it.
fn onto(dir: &str, path: &str) -> String {
    let mut base = dir;
    let mut rest = if path == "." { "" } else { path };
    while let Some(r) = rest.strip_prefix("..").filter(|r| r.is_empty() || r.starts_with('/')) {
        base = match base.rsplit_once('/') {
            _ if base == "/" => base,
            _ if base == "." || base == ".." || base.ends_with("/..") => break,
            Some(("", _)) => "/",
            Some((parent, _)) => parent,
            None => ".",
        };
        rest = r.trim_start_matches('/');
    }
    match (base, rest) {
        (_, "") => base.to_owned(),
        (".", _) => rest.to_owned(),
        ("/", _) => format!("/{rest}"),
        _ => format!("{base}/{rest}"),
    }
}

/// The directory that `cd word` goes to from `dir`, if it can be read.
fn join_dir(dir: &Dir, word: &Word) -> Dir {
    if word.dynamic || word.text.is_empty() || word.text == "-" {
        return None;
    }
    let joined = join(dir, &word.text)?;
    let trimmed = joined.trim_end_matches('/');
    Some(Rc::from(if trimmed.is_empty() { "/" } else { trimmed }))
}

/// `path` without `.`, doubled slashes and `dir/..` (lexically); `.` when nothing is left of a
/// relative path. A trailing slash stays: it says the path is a directory.
fn normalize(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if absolute => {}
            _ => parts.push(part),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    if absolute {
        out.push('/');
    }
    out.push_str(&parts.join("/"));
    if parts.is_empty() {
        if !absolute {
            out.push('.');
        }
    } else if path.ends_with('/') {
        out.push('/');
    }
    out
}

/// The last component of `path`, unless it is none (`/`, `.`, `..`).
fn basename(path: &str) -> Option<&str> {
    let base = path.trim_end_matches('/').rsplit('/').next()?;
    (!matches!(base, "" | "." | "..")).then_some(base)
}

/// Files that writing to changes nothing on disk.
fn is_device(path: &str) -> bool {
    matches!(path, "/dev/null" | "/dev/stdout" | "/dev/stderr" | "/dev/stdin" | "/dev/tty")
        || path.starts_with("/dev/fd/")
}

/// One finding of a command.
#[derive(Debug)]
enum Item {
    /// A path it writes.
    Path(String),
    /// A word or command whose writes could not be read.
    Unread(String),
    /// A destination that may be a directory, and the source that would go into it.
    Into(String, String),
}

/// The findings of a whole command line, without duplicates.
#[derive(Default)]
struct Out {
    /// What is found.
    writes: Writes,
    /// What is in each of its lists, to keep out duplicates.
    paths: HashSet<String>,
    unread: HashSet<String>,
    into: HashSet<(String, String)>,
}

impl Out {
    /// Adds a finding (but a device, a duplicate, or one past [`MAX_ENTRIES`]).
    fn add(&mut self, item: Item) {
        let writes = &mut self.writes;
        match item {
            Item::Path(path) => {
                if !is_device(&path) {
                    keep(&mut writes.paths, &mut self.paths, path);
                }
            }
            Item::Unread(word) => keep(&mut writes.unread, &mut self.unread, word),
            Item::Into(dst, src) => {
                if !is_device(&dst) {
                    keep(&mut writes.into, &mut self.into, (dst, src));
                }
            }
        }
    }
}

/// Adds `entry` to `list` unless it is there (`seen`) or the list is full.
fn keep<T: Clone + Eq + std::hash::Hash>(list: &mut Vec<T>, seen: &mut HashSet<T>, entry: T) {
    if list.len() < MAX_ENTRIES && !seen.contains(&entry) {
        seen.insert(entry.clone());
        list.push(entry);
    }
}

/// What one simple command writes, before it joins the rest: each finding with where its word
/// stood, so that a command's findings come out in the order of its words (`> log cmd file`).
#[derive(Default)]
struct Emit {
    /// The directory relative paths are joined onto (the shell's, or `git -C`'s, `env -C`'s).
    dir: Dir,
    /// The text that stands for each input item (`xargs -I{}`, `find -exec ... {}`): a word
    /// with it cannot be read.
    placeholder: Option<String>,
    /// The findings, each with the position of the word it comes from.
    items: Vec<(usize, Item)>,
}

impl Emit {
    /// Findings of a command run in `dir`.
    fn new(dir: Dir) -> Self {
        Emit { dir, ..Emit::default() }
    }

    /// What `word` names is known only when the command runs.
    fn unknown(&self, word: &Word) -> bool {
        word.dynamic || self.placeholder.as_deref().is_some_and(|p| word.text.contains(p))
    }

    /// A redirection's target.
    fn redirect(&mut self, kind: Redirect, word: &Word) {
        match kind {
            Redirect::Write => self.target(word),
            Redirect::Dup if !is_fd(&word.text) => self.target(word),
            Redirect::Dup | Redirect::Read => {}
        }
    }

    /// `word` names a file that is written.
    fn target(&mut self, word: &Word) {
        self.path(word.pos, word, &word.text);
    }

    /// `text`, made from `word`, names a file that is written.
    fn path(&mut self, pos: usize, word: &Word, text: &str) {
        if text.is_empty() || word.process || self.full() {
            return;
        }
        let path = if self.unknown(word) { None } else { join(&self.dir, text) };
        let item = path.map_or_else(|| Item::Unread(word.raw.clone()), Item::Path);
        self.push(pos, item);
    }

    /// A git pathspec is written: its glob characters are git's, even when quoted.
    fn pathspec(&mut self, word: &Word) {
        if word.text.contains(['*', '?', '[']) || word.text.starts_with(':') {
            self.push(word.pos, Item::Unread(word.raw.clone()));
        } else {
            self.target(word);
        }
    }

    /// `source` goes into the directory `dir`: `dir/basename(source)` is written.
    /// Nothing when `dir` cannot be read: the caller says so once ([`Emit::directory`]).
    fn inside(&mut self, pos: usize, dir: &Word, source: &Word) {
        if self.unknown(dir) || self.unknown(source) || dir.text.is_empty() || dir.text.len() > MAX_PATH {
            return;
        }
        if let Some(base) = basename(&source.text) {
            let text = format!("{}/{base}", dir.text);
            if let Some(path) = join(&self.dir, &text) {
                self.push(pos, Item::Path(path));
            }
        }
    }

    /// The directory of `-t DIR`, when it cannot be read.
    fn directory(&mut self, dir: &Word) {
        if self.unknown(dir) || join(&self.dir, &dir.text).is_none() {
            self.push(dir.pos, Item::Unread(dir.raw.clone()));
        }
    }

    /// Keeps a finding: at most [`MAX_ENTRIES`] of one command (the list it goes to holds no more).
    fn push(&mut self, pos: usize, item: Item) {
        if !self.full() {
            self.items.push((pos, item));
        }
    }

    /// The command has as many findings as a list of [`Writes`] holds.
    fn full(&self) -> bool {
        self.items.len() >= MAX_ENTRIES
    }

    /// `source` goes to `dst`, which may be a directory (not when the source has no name of its
    /// own to take there: `cp -a src/. dst` copies what is in `src`).
    fn into(&mut self, dst: &Word, source: &Word) {
        if self.unknown(dst) || self.unknown(source) || dst.text.is_empty() || basename(&source.text).is_none() {
            return;
        }
        if let (Some(d), Some(s)) = (join(&self.dir, &dst.text), join(&self.dir, &source.text)) {
            self.push(dst.pos, Item::Into(d, s));
        }
    }

    /// The command writes files it does not name.
    fn label(&mut self, pos: usize, label: &str) {
        self.push(pos, Item::Unread(label.to_owned()));
    }

    /// Adds the findings to `out`, in the order of their words.
    fn flush(mut self, out: &mut Out) {
        self.items.sort_by_key(|(pos, _)| *pos);
        for (_, item) in self.items {
            out.add(item);
        }
    }
}

/// `>&word` duplicates a descriptor when the word is a number (`2`, `3-`) or `-`.
fn is_fd(text: &str) -> bool {
    let digits = text.strip_suffix('-').unwrap_or(text);
    text == "-" || (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

// ---------------------------------------------------------------------------------------------
// Commands and their structure.

/// What a word means where the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Words of a command.
    Command,
    /// `case WORD` before `in`.
    CaseHead,
    /// A `case` pattern, up to its `)`.
    CasePattern,
    /// Inside `[[ ... ]]`, where `>` and `<` compare.
    Test,
}

/// An open construct.
enum Frame {
    /// `( ... )`: the shell to go back to at its end (a `cd` inside stays inside).
    Subshell(Shell),
    /// `case ... esac`.
    Case,
}

/// A simple command being read.
#[derive(Default)]
struct Simple {
    /// Its words, assignments and command name included.
    words: Vec<Word>,
    /// Its redirections, wherever they stood, and their words.
    redirects: Vec<(Redirect, Word)>,
}

/// Reads one command line (or the text of a `bash -c`, `eval`, `$(...)`).
struct Script<'r> {
    /// The shell it runs in (a `cd` changes it).
    shell: &'r mut Shell,
    /// Where findings go.
    out: &'r mut Out,
    /// How many levels inside the command line given to [`writes`] it is.
    depth: usize,
    /// What a word means here.
    mode: Mode,
    /// The open subshells and `case`s, innermost last.
    frames: Vec<Frame>,
    /// The simple command being read.
    simple: Simple,
    /// A redirection waiting for its word.
    redirect: Option<Redirect>,
}

/// Reads the command line `text`, run in `shell`, `depth` levels inside the one given to [`writes`].
fn read(text: &str, shell: &mut Shell, out: &mut Out, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let mut lexer = Lexer::new(text);
    let mut script = Script {
        shell,
        out,
        depth,
        mode: Mode::Command,
        frames: Vec::new(),
        simple: Simple::default(),
        redirect: None,
    };
    while let Some(token) = lexer.next_token() {
        match token {
            Token::Word(word) => script.word(word),
            Token::Op(op) => script.op(op),
        }
    }
    script.finish();
}

impl Script<'_> {
    /// Takes a word: its substitutions are read first (they run before the command).
    fn word(&mut self, mut word: Word) {
        for sub in std::mem::take(&mut word.subs) {
            read(&sub, &mut (*self.shell).clone(), self.out, self.depth + 1);
        }
        if let Some(kind) = self.redirect.take() {
            self.simple.redirects.push((kind, word));
            return;
        }
        match self.mode {
            Mode::CaseHead => {
                if word.is("in") {
                    self.mode = Mode::CasePattern;
                    self.frames.push(Frame::Case);
                }
            }
            Mode::CasePattern => {
                if word.is("esac") {
                    self.close_case();
                }
            }
            Mode::Test => {
                if word.is("]]") {
                    self.mode = Mode::Command;
                }
            }
            Mode::Command => {
                if !(self.simple.words.is_empty() && self.keyword(&word)) {
                    self.simple.words.push(word);
                }
            }
        }
    }

    /// Handles `word` if it is a keyword at the start of a command.
    fn keyword(&mut self, word: &Word) -> bool {
        if word.quoted {
            return false;
        }
        match word.text.as_str() {
            "case" => self.mode = Mode::CaseHead,
            "[[" => self.mode = Mode::Test,
            "esac" => self.close_case(),
            "!" | "{" | "}" | "if" | "then" | "else" | "elif" | "fi" | "while" | "until" | "do" | "done" => {}
            _ => return false,
        }
        true
    }

    /// Takes an operator: most end the command being read.
    fn op(&mut self, op: Op) {
        // A redirection without a word has nothing to read.
        self.redirect = None;
        match self.mode {
            Mode::Test if matches!(op, Op::End | Op::CaseEnd) => self.mode = Mode::Command,
            Mode::Test | Mode::CaseHead => return,
            Mode::CasePattern => {
                if op == Op::Close {
                    self.mode = Mode::Command;
                }
                return;
            }
            Mode::Command => {}
        }
        if let Op::Redirect(kind) = op {
            self.redirect = Some(kind);
            return;
        }
        self.end_command();
        match op {
            Op::Open => self.frames.push(Frame::Subshell((*self.shell).clone())),
            Op::Close => {
                if matches!(self.frames.last(), Some(Frame::Subshell(_)))
                    && let Some(Frame::Subshell(shell)) = self.frames.pop()
                {
                    *self.shell = shell;
                }
            }
            Op::CaseEnd => {
                if let Some(Frame::Case) = self.frames.last() {
                    self.mode = Mode::CasePattern;
                }
            }
            Op::End | Op::Logic | Op::Redirect(_) => {}
        }
    }

    /// `esac`.
    fn close_case(&mut self) {
        if let Some(Frame::Case) = self.frames.last() {
            self.frames.pop();
        }
        self.mode = Mode::Command;
    }

    /// Reads what the simple command that just ended writes.
    fn end_command(&mut self) {
        let simple = std::mem::take(&mut self.simple);
        if !simple.words.is_empty() || !simple.redirects.is_empty() {
            run(&simple, self.shell, self.out, self.depth);
        }
    }

    /// The end of the text.
    fn finish(mut self) {
        self.redirect = None;
        self.end_command();
        // A subshell left open still ends with the text (an `eval` must not keep its `cd`).
        let first = self.frames.into_iter().find_map(|f| match f {
            Frame::Subshell(shell) => Some(shell),
            Frame::Case => None,
        });
        if let Some(shell) = first {
            *self.shell = shell;
        }
    }
}

/// What a simple command's reader works with.
struct Cx<'r> {
    /// The shell it runs in.
    shell: &'r mut Shell,
    /// Where the findings of commands inside it (`bash -c`) go.
    out: &'r mut Out,
    /// As [`Script::depth`].
    depth: usize,
    /// Its own findings.
    emit: Emit,
    /// `xargs` adds words from its input after the command's own, so its last word is not the
    /// command's last argument (the destination of `cp`).
    appended: bool,
}

/// Reads what the simple command `simple` writes.
fn run(simple: &Simple, shell: &mut Shell, out: &mut Out, depth: usize) {
    let mut cx = Cx { emit: Emit::new(shell.dir.clone()), shell, out, depth, appended: false };
    for (kind, word) in &simple.redirects {
        cx.emit.redirect(*kind, word);
    }
    command(&simple.words, &mut cx);
    std::mem::take(&mut cx.emit).flush(cx.out);
}

/// `NAME=value` or `NAME+=value`, with an unquoted name.
fn is_assignment(word: &Word) -> bool {
    let raw = word.raw.as_bytes();
    let name = raw.iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
    let starts = raw.first().is_some_and(|b| !b.is_ascii_digit());
    let assigns = match raw.get(name) {
        Some(b'=') => true,
        Some(b'+') => raw.get(name + 1) == Some(&b'='),
        _ => false,
    };
    name > 0 && starts && assigns
}

/// Reads the words of a simple command (its redirections are read): skips assignments and
/// wrappers (`sudo`, `env`, `xargs`...), then reads the command they run.
fn command(words: &[Word], cx: &mut Cx<'_>) {
    let mut i = 0;
    loop {
        while words.get(i).is_some_and(is_assignment) {
            i += 1;
        }
        let Some(name) = words.get(i) else { return };
        if name.dynamic {
            return;
        }
        let base = name.text.rsplit('/').next().unwrap_or_default();
        let rest = words.get(i + 1..).unwrap_or_default();
        match wrapper(base, rest, cx) {
            Wrapper::Runs(used) => i += 1 + used,
            Wrapper::RunsNothing => return,
            Wrapper::NotOne => return dispatch(name, base, rest, cx),
        }
    }
}

/// What a wrapper leaves to run.
enum Wrapper {
    /// The command is no wrapper.
    NotOne,
    /// The command that starts after this many of the wrapper's words.
    Runs(usize),
    /// Nothing (`command -v`, `sudo -l`, `env -S`).
    RunsNothing,
}

/// `sudo`'s options.
const SUDO: Spec = Spec {
    short: "CDghpRrtTUu",
    attached: "",
    long: &["chdir", "close-from", "group", "host", "prompt", "chroot", "role", "type", "command-timeout", "user"],
};
/// `env`'s options.
const ENV: Spec = Spec { short: "uCS", attached: "", long: &["unset", "chdir", "split-string"] };
/// `nice`'s options.
const NICE: Spec = Spec { short: "n", attached: "", long: &["adjustment"] };
/// `time`'s options (GNU time: `-o` is a file it writes).
const TIME: Spec = Spec { short: "fo", attached: "", long: &["format", "output"] };
/// `exec`'s options.
const EXEC: Spec = Spec { short: "a", attached: "", long: &[] };
/// `timeout`'s options.
const TIMEOUT: Spec = Spec { short: "ks", attached: "", long: &["kill-after", "signal"] };
/// `stdbuf`'s options.
const STDBUF: Spec = Spec { short: "ioe", attached: "", long: &["input", "output", "error"] };
/// `xargs`'s options.
const XARGS: Spec = Spec {
    short: "adEILnPs",
    attached: "eil",
    long: &["arg-file", "delimiter", "max-args", "max-procs", "max-chars", "process-slot-var"],
};

/// If `name` is a wrapper, reads its options (`rest` are its words).
fn wrapper(name: &str, rest: &[Word], cx: &mut Cx<'_>) -> Wrapper {
    let spec = match name {
        "sudo" | "doas" => &SUDO,
        "env" => &ENV,
        "nice" => &NICE,
        "time" => &TIME,
        "exec" => &EXEC,
        "timeout" => &TIMEOUT,
        "stdbuf" => &STDBUF,
        "xargs" => &XARGS,
        "command" | "nohup" | "builtin" => &NO_ARGS,
        _ => return Wrapper::NotOne,
    };
    let (opts, mut used) = leading_options(rest, spec);
    match name {
        "sudo" | "doas" => {
            if has(&opts, &["-l", "--list", "-v", "--validate", "-e", "--edit", "-V", "--version"]) {
                return Wrapper::RunsNothing;
            }
            if let Some(dir) = value(&opts, &["-D", "--chdir"]) {
                cx.emit.dir = join_dir(&cx.emit.dir, dir);
            }
        }
        "command" if has(&opts, &["-v", "-V"]) => return Wrapper::RunsNothing,
        "env" => {
            if has(&opts, &["-S", "--split-string"]) {
                return Wrapper::RunsNothing;
            }
            if let Some(dir) = value(&opts, &["-C", "--chdir"]) {
                cx.emit.dir = join_dir(&cx.emit.dir, dir);
            }
            while rest.get(used).is_some_and(|w| w.text == "-") {
                used += 1;
            }
        }
        "time" => {
            if let Some(file) = value(&opts, &["-o", "--output"]) {
                cx.emit.target(file);
            }
        }
        "timeout" => used += 1,
        "xargs" => xargs(&opts, cx),
        _ => {}
    }
    Wrapper::Runs(used)
}

/// `xargs` runs its command with words from its input: after the command's own, or (`-I R`) in
/// place of `R`. Either way only the literal words can be read.
fn xargs(opts: &[Arg<'_>], cx: &mut Cx<'_>) {
    let mut placeholder = None;
    for arg in opts {
        if let Arg::Opt(name, value) = arg {
            let text = value.as_ref().map(|w| w.text.clone());
            match name.as_str() {
                "-I" => placeholder = text,
                "-i" | "--replace" => placeholder = Some(text.unwrap_or_else(|| "{}".to_owned())),
                _ => {}
            }
        }
    }
    match placeholder.filter(|p| !p.is_empty()) {
        Some(p) => cx.emit.placeholder = Some(p),
        None => cx.appended = true,
    }
}

/// Reads what the command `name` (its basename `base`) writes, given its arguments.
fn dispatch(name: &Word, base: &str, args: &[Word], cx: &mut Cx<'_>) {
    let appended = cx.appended;
    let emit = &mut cx.emit;
    match base {
        "tee" | "rm" | "rmdir" | "unlink" => every_operand(args, &NO_ARGS, emit),
        "shred" => every_operand(args, &SHRED, emit),
        "touch" => every_operand(args, &TOUCH, emit),
        "truncate" => every_operand(args, &TRUNCATE, emit),
        "sed" => sed(args, emit),
        "perl" => in_place(args, &PERL, emit),
        "ruby" => in_place(args, &RUBY, emit),
        "mv" => copy(args, &MV, Kind::Move, emit, appended),
        "cp" => copy(args, &CP, Kind::Copy, emit, appended),
        "ln" => copy(args, &MV, Kind::Link, emit, appended),
        "install" => install(args, emit, appended),
        "chmod" | "chown" | "chgrp" => chmod(args, emit),
        "dd" => dd(args, emit),
        "patch" => patch(name, args, emit),
        "git" => git(args, emit),
        "cd" => cd(args, cx.shell),
        "pushd" => pushd(args, cx.shell),
        "popd" => popd(args, cx.shell),
        "sh" | "bash" | "zsh" | "dash" | "ksh" => shell_c(args, cx),
        "eval" => eval(args, cx),
        "find" => find(name, args, cx),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Options.

/// How a command's options are read (GNU style: options anywhere before `--`, short ones
/// clustered, long ones with `=VALUE` or the next word).
struct Spec {
    /// Short options that take a value: the rest of the word, or else the next word.
    short: &'static str,
    /// Short options whose value can only be the rest of the word (`sed -i.bak`).
    attached: &'static str,
    /// Long options (without `--`) that take a value: after `=`, or else the next word.
    long: &'static [&'static str],
}

/// Options that take no value.
const NO_ARGS: Spec = Spec { short: "", attached: "", long: &[] };

/// An argument of a command, its options read.
enum Arg<'a> {
    /// An option: its name as written (`-t`, `--target-directory`), and its value if it takes one.
    Opt(String, Option<Word>),
    /// An operand.
    Operand(&'a Word),
}

/// The word looks like an option.
fn is_option(text: &str) -> bool {
    text.len() > 1 && text.starts_with('-')
}

/// Reads the option word `word` (whose next word is `words[next]`) into `args`; the index of
/// the word after what it took.
fn read_option(words: &[Word], next: usize, word: &Word, spec: &Spec, args: &mut Vec<Arg<'_>>) -> usize {
    let text = word.text.as_str();
    if let Some(long) = text.strip_prefix("--") {
        if let Some((name, value)) = long.split_once('=') {
            args.push(Arg::Opt(format!("--{name}"), Some(word.with_text(value))));
            return next;
        }
        if spec.long.contains(&long) {
            args.push(Arg::Opt(text.to_owned(), words.get(next).cloned()));
            return next + 1;
        }
        args.push(Arg::Opt(text.to_owned(), None));
        return next;
    }
    for (k, c) in text.char_indices().skip(1) {
        let rest = text.get(k + c.len_utf8()..).unwrap_or_default();
        if spec.attached.contains(c) {
            args.push(Arg::Opt(format!("-{c}"), (!rest.is_empty()).then(|| word.with_text(rest))));
            return next;
        }
        if spec.short.contains(c) {
            if !rest.is_empty() {
                args.push(Arg::Opt(format!("-{c}"), Some(word.with_text(rest))));
                return next;
            }
            args.push(Arg::Opt(format!("-{c}"), words.get(next).cloned()));
            return next + 1;
        }
        args.push(Arg::Opt(format!("-{c}"), None));
    }
    next
}

/// Reads all of `words`: options anywhere before `--`, operands.
fn parse<'a>(words: &'a [Word], spec: &Spec) -> Vec<Arg<'a>> {
    let mut args = Vec::new();
    let mut options = true;
    let mut i = 0;
    while let Some(word) = words.get(i) {
        i += 1;
        if options && word.text == "--" {
            options = false;
        } else if options && is_option(&word.text) {
            i = read_option(words, i, word, spec, &mut args);
        } else {
            args.push(Arg::Operand(word));
        }
    }
    args
}

/// Reads the options at the start of `words`, up to the first operand or `--` (a wrapper's,
/// before the command it runs): them, and how many words they took.
fn leading_options<'a>(words: &'a [Word], spec: &Spec) -> (Vec<Arg<'a>>, usize) {
    let mut args = Vec::new();
    let mut i = 0;
    while let Some(word) = words.get(i) {
        if word.text == "--" {
            i += 1;
            break;
        }
        if !is_option(&word.text) {
            break;
        }
        i = read_option(words, i + 1, word, spec, &mut args);
    }
    (args, i.min(words.len()))
}

/// One of the options `names` was given.
fn has(args: &[Arg<'_>], names: &[&str]) -> bool {
    args.iter().any(|a| matches!(a, Arg::Opt(name, _) if names.contains(&name.as_str())))
}

/// The value of the last of the options `names` given.
fn value<'b>(args: &'b [Arg<'_>], names: &[&str]) -> Option<&'b Word> {
    args.iter().rev().find_map(|a| match a {
        Arg::Opt(name, value) if names.contains(&name.as_str()) => value.as_ref(),
        _ => None,
    })
}

/// The operands.
fn operands<'a>(args: &[Arg<'a>]) -> Vec<&'a Word> {
    args.iter()
        .filter_map(|a| match a {
            Arg::Operand(word) => Some(*word),
            Arg::Opt(..) => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// What each command writes.

/// `shred`'s options.
const SHRED: Spec = Spec { short: "ns", attached: "", long: &["iterations", "size", "random-source"] };
/// `touch`'s options.
const TOUCH: Spec = Spec { short: "dtr", attached: "", long: &["date", "reference", "time"] };
/// `truncate`'s options.
const TRUNCATE: Spec = Spec { short: "sr", attached: "", long: &["size", "reference"] };

/// `rm`, `tee`, `touch`...: every operand is written.
fn every_operand(args: &[Word], spec: &Spec, emit: &mut Emit) {
    for word in operands(&parse(args, spec)) {
        emit.target(word);
    }
}

/// `sed`'s options (`-i` takes an optional suffix in the same word: `-ie` is `-i` with suffix `e`).
const SED: Spec = Spec { short: "efl", attached: "i", long: &["expression", "file", "line-length"] };

/// `sed -i`: its files (the operands, but the first when it is the script).
fn sed(args: &[Word], emit: &mut Emit) {
    let parsed = parse(args, &SED);
    if !has(&parsed, &["-i", "--in-place"]) {
        return;
    }
    let scripted = has(&parsed, &["-e", "--expression", "-f", "--file"]);
    let mut files = Vec::new();
    let mut after_bare_i = false;
    for arg in &parsed {
        match arg {
            Arg::Opt(name, value) => after_bare_i = name == "-i" && value.is_none(),
            Arg::Operand(word) => {
                // BSD's `sed -i '' ...`: the empty word is the suffix, not the script.
                if !(after_bare_i && word.text.is_empty()) {
                    files.push(*word);
                }
                after_bare_i = false;
            }
        }
    }
    for word in files.iter().skip(usize::from(!scripted)) {
        emit.target(word);
    }
}

/// How `perl` or `ruby` reads its switches (clustered, up to the first operand).
struct Switches {
    /// Switches whose value is the code to run (the rest of the word, or the next word).
    code: &'static str,
    /// Other switches with a value, the rest of the word or the next word.
    value: &'static str,
    /// Switches whose optional value is the rest of the word.
    rest: &'static str,
    /// Switches followed by optional digits (`-l`, `-0777`).
    digits: &'static str,
}

/// `perl`'s switches.
const PERL: Switches = Switches { code: "eE", value: "IMm", rest: "xdDCFV", digits: "l0" };
/// `ruby`'s switches.
const RUBY: Switches = Switches { code: "e", value: "IrEC", rest: "xTWKF", digits: "0" };

/// What one switch word of `perl` or `ruby` says: `(in_place, code_given, takes_next_word)`.
fn switch_word(text: &str, sw: &Switches) -> (bool, bool, bool) {
    let mut chars = text.char_indices().skip(1).peekable();
    while let Some((k, c)) = chars.next() {
        let rest = text.get(k + c.len_utf8()..).unwrap_or_default();
        if c == 'i' {
            return (true, false, false);
        }
        if sw.code.contains(c) || sw.value.contains(c) {
            return (false, sw.code.contains(c), rest.is_empty());
        }
        if sw.rest.contains(c) {
            break;
        }
        if sw.digits.contains(c) {
            let hex = c == '0' && chars.peek().is_some_and(|(_, d)| *d == 'x');
            let digit = |d: &char| d.is_ascii_digit() || (hex && (d.is_ascii_hexdigit() || *d == 'x'));
            while chars.next_if(|(_, d)| digit(d)).is_some() {}
        }
    }
    (false, false, false)
}

/// `perl -i` and `ruby -i`: the operands after the script (the code of `-e`, or the first).
fn in_place(args: &[Word], sw: &Switches, emit: &mut Emit) {
    let (mut in_place, mut coded) = (false, false);
    let mut i = 0;
    while let Some(word) = args.get(i) {
        let text = word.text.as_str();
        if text == "--" {
            i += 1;
            break;
        }
        if !is_option(text) {
            break;
        }
        i += 1;
        if text.starts_with("--") {
            continue;
        }
        let (i_flag, code, takes_next) = switch_word(text, sw);
        in_place |= i_flag;
        coded |= code;
        i += usize::from(takes_next);
    }
    if !in_place {
        return;
    }
    for word in args.get(i..).unwrap_or_default().iter().skip(usize::from(!coded)) {
        emit.target(word);
    }
}

/// What `mv`, `cp` or `ln` does with its sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Moves them: they are written (deleted) too.
    Move,
    /// Copies them.
    Copy,
    /// Links to them: a single operand links it into the current directory.
    Link,
}

/// `mv`'s and `ln`'s options.
const MV: Spec = Spec { short: "tS", attached: "", long: &["target-directory", "suffix"] };
/// `cp`'s options.
const CP: Spec = Spec { short: "tS", attached: "", long: &["target-directory", "suffix", "no-preserve", "sparse"] };
/// `install`'s options.
const INSTALL: Spec = Spec {
    short: "gmoSt",
    attached: "",
    long: &["group", "mode", "owner", "suffix", "target-directory", "strip-program"],
};

/// `mv`, `cp`, `ln`: `SRC... DST`, or `-t DIR SRC...`.
fn copy(args: &[Word], spec: &Spec, kind: Kind, emit: &mut Emit, appended: bool) {
    copy_parsed(&parse(args, spec), kind, emit, appended);
}

/// `install`: like `cp`, but `-d` makes directories (which this reader leaves out).
fn install(args: &[Word], emit: &mut Emit, appended: bool) {
    let parsed = parse(args, &INSTALL);
    if !has(&parsed, &["-d", "--directory"]) {
        copy_parsed(&parsed, Kind::Copy, emit, appended);
    }
}

/// `mv`, `cp`, `ln`, `install`, `git mv`, their options read: the sources (moved), the
/// destination, and the pairs of [`Writes::into`].
fn copy_parsed(parsed: &[Arg<'_>], kind: Kind, emit: &mut Emit, appended: bool) {
    let sources = operands(parsed);
    if let Some(dir) = value(parsed, &["-t", "--target-directory"]) {
        emit.directory(dir);
        for source in sources {
            if kind == Kind::Move {
                emit.target(source);
            }
            emit.inside(source.pos, dir, source);
        }
        return;
    }
    if appended {
        // `xargs mv a b` moves a and b somewhere; `xargs cp a b` copies them somewhere.
        if kind == Kind::Move {
            sources.into_iter().for_each(|s| emit.target(s));
        }
        return;
    }
    let Some((dst, sources)) = sources.split_last() else { return };
    if sources.is_empty() {
        if kind == Kind::Link {
            let here = Word { text: ".".to_owned(), raw: ".".to_owned(), pos: dst.pos, ..Word::default() };
            emit.inside(dst.pos, &here, dst);
        }
        return;
    }
    if kind == Kind::Move {
        sources.iter().for_each(|s| emit.target(s));
    }
    emit.target(dst);
    if has(parsed, &["-T", "--no-target-directory"]) {
        return;
    }
    for source in sources {
        emit.into(dst, source);
        if dst.text.ends_with('/') {
            emit.inside(dst.pos, dst, source);
        }
    }
}

/// `chmod MODE FILE...`, `chown OWNER FILE...`, `chgrp GROUP FILE...` (the first operand is no
/// file unless `--reference` is given). `chmod -x f`: `-x` is a mode, not an option.
fn chmod(args: &[Word], emit: &mut Emit) {
    let (mut options, mut reference, mut mode_seen) = (true, false, false);
    let mut i = 0;
    while let Some(word) = args.get(i) {
        i += 1;
        let text = word.text.as_str();
        if options && text == "--" {
            options = false;
            continue;
        }
        if options && let Some(long) = text.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or_default();
            reference |= name == "reference";
            if matches!(name, "reference" | "from") && !long.contains('=') {
                i += 1;
            }
            continue;
        }
        if options && is_option(text) && text.chars().skip(1).all(|c| "cfvRhHLP".contains(c)) {
            continue;
        }
        if !reference && !mode_seen {
            mode_seen = true;
            continue;
        }
        emit.target(word);
    }
}

/// `dd ... of=FILE`.
fn dd(args: &[Word], emit: &mut Emit) {
    for word in args {
        if let Some(file) = word.text.strip_prefix("of=") {
            emit.path(word.pos, word, file);
        }
    }
}

/// `patch`'s options.
const PATCH: Spec = Spec {
    short: "BDFgiopdrVYz",
    attached: "",
    long: &[
        "prefix",
        "ifdef",
        "fuzz",
        "get",
        "input",
        "output",
        "strip",
        "directory",
        "reject-file",
        "version-control",
        "basename-prefix",
        "suffix",
        "quoting-style",
    ],
};

/// `patch`: its `-o FILE`, else the file it is given; the files a patch names are not read.
fn patch(name: &Word, args: &[Word], emit: &mut Emit) {
    let parsed = parse(args, &PATCH);
    if has(&parsed, &["--dry-run"]) {
        return;
    }
    if has(&parsed, &["-d", "--directory"]) {
        return emit.label(name.pos, "patch");
    }
    if let Some(output) = value(&parsed, &["-o", "--output"]) {
        if output.text != "-" {
            emit.target(output);
        }
        return;
    }
    match operands(&parsed).first() {
        Some(file) => emit.target(file),
        None => emit.label(name.pos, "patch"),
    }
}

/// `git`: skips its global options (`-C DIR` joins like `cd`), then reads the subcommand.
fn git(args: &[Word], emit: &mut Emit) {
    let mut i = 0;
    while let Some(word) = args.get(i) {
        let text = word.text.as_str();
        if !is_option(text) {
            break;
        }
        i += 1;
        match text {
            "-C" => {
                if let Some(dir) = args.get(i) {
                    emit.dir = join_dir(&emit.dir, dir);
                }
                i += 1;
            }
            "-c" | "--git-dir" | "--work-tree" | "--namespace" | "--config-env" => i += 1,
            _ => {}
        }
    }
    let Some(sub) = args.get(i) else { return };
    let rest = args.get(i + 1..).unwrap_or_default();
    let label = format!("git {}", sub.text);
    let any = |names: &[&str]| rest.iter().any(|w| names.contains(&w.text.as_str()));
    match sub.text.as_str() {
        "mv" => {
            let parsed = parse(rest, &NO_ARGS);
            if !has(&parsed, &["-n", "--dry-run"]) {
                copy_parsed(&parsed, Kind::Move, emit, false);
            }
        }
        "rm" => git_rm(sub, rest, emit),
        "checkout" => git_checkout(sub, rest, emit),
        "restore" => git_restore(sub, rest, emit),
        "reset" if any(&["--hard", "--merge", "--keep"]) => emit.label(sub.pos, &label),
        "stash" if !matches!(rest.first().map(|w| w.text.as_str()), Some("list" | "show")) => {
            emit.label(sub.pos, &label);
        }
        "apply" if any(&["--apply"]) || !any(&["--check", "--stat", "--numstat", "--summary"]) => {
            emit.label(sub.pos, &label);
        }
        "clean" if !any(&["-n", "--dry-run"]) => emit.label(sub.pos, &label),
        "am" | "merge" | "pull" | "rebase" | "cherry-pick" | "revert" | "switch" | "bisect" => {
            emit.label(sub.pos, &label);
        }
        _ => {}
    }
}

/// `git rm [opts] PATHSPEC...` (`--cached` too: the guard counts the index as the file).
fn git_rm(sub: &Word, rest: &[Word], emit: &mut Emit) {
    let parsed = parse(rest, &Spec { short: "", attached: "", long: &["pathspec-from-file"] });
    if has(&parsed, &["-n", "--dry-run"]) {
        return;
    }
    if has(&parsed, &["--pathspec-from-file"]) {
        emit.label(sub.pos, "git rm");
    }
    for word in operands(&parsed) {
        emit.pathspec(word);
    }
}

/// `git checkout [opts] [TREE] -- PATHSPEC...` writes those paths; without `--` it switches
/// branches (or restores paths it cannot tell from a branch): many files, not read.
fn git_checkout(sub: &Word, rest: &[Word], emit: &mut Emit) {
    if let Some(dashes) = rest.iter().position(|w| w.text == "--") {
        for word in rest.get(dashes + 1..).unwrap_or_default() {
            emit.pathspec(word);
        }
        return;
    }
    let spec = Spec { short: "bB", attached: "", long: &["orphan", "conflict", "pathspec-from-file"] };
    let parsed = parse(rest, &spec);
    if !operands(&parsed).is_empty() || has(&parsed, &["--pathspec-from-file"]) {
        emit.label(sub.pos, "git checkout");
    }
}

/// `git restore [opts] PATHSPEC...` (not with `--staged` alone: then only the index changes).
fn git_restore(sub: &Word, rest: &[Word], emit: &mut Emit) {
    let spec = Spec { short: "s", attached: "", long: &["source", "pathspec-from-file", "conflict"] };
    let parsed = parse(rest, &spec);
    if has(&parsed, &["-S", "--staged"]) && !has(&parsed, &["-W", "--worktree"]) {
        return;
    }
    if has(&parsed, &["--pathspec-from-file"]) {
        emit.label(sub.pos, "git restore");
    }
    for word in operands(&parsed) {
        emit.pathspec(word);
    }
}

/// `cd DIR`: later relative paths are joined onto DIR (unknown for `cd`, `cd -`, `cd "$x"`).
fn cd(args: &[Word], shell: &mut Shell) {
    let parsed = parse(args, &NO_ARGS);
    shell.dir = operands(&parsed).first().and_then(|dir| join_dir(&shell.dir, dir));
}

/// `pushd DIR`: like `cd`, and remembers where it was for `popd`.
fn pushd(args: &[Word], shell: &mut Shell) {
    let to = match args {
        [dir] if !dir.text.starts_with(['-', '+']) => join_dir(&shell.dir, dir),
        _ => None,
    };
    if shell.pushed.len() >= MAX_PUSHED {
        shell.pushed.remove(0);
    }
    let from = std::mem::replace(&mut shell.dir, to);
    shell.pushed.push(from);
}

/// `popd`: back to where the last `pushd` was.
fn popd(args: &[Word], shell: &mut Shell) {
    shell.dir = if args.is_empty() { shell.pushed.pop().flatten() } else { None };
}

/// `bash -c 'STRING'` (and `sh`, `zsh`, `dash`, `ksh`): reads STRING, which runs in a shell of
/// its own (its `cd` stays inside). A script file is not read.
fn shell_c(args: &[Word], cx: &mut Cx<'_>) {
    let mut has_c = false;
    let mut i = 0;
    while let Some(word) = args.get(i) {
        let text = word.text.as_str();
        if text == "--" || text == "-" {
            i += 1;
            break;
        }
        if text.len() < 2 || !text.starts_with(['-', '+']) {
            break;
        }
        i += 1;
        if text.starts_with("--") {
            i += usize::from(matches!(text, "--rcfile" | "--init-file"));
            continue;
        }
        has_c |= text.starts_with('-') && text.contains('c');
        i += usize::from(text.contains(['o', 'O']));
    }
    let Some(code) = args.get(i).filter(|_| has_c) else { return };
    if cx.emit.placeholder.is_some() && cx.emit.unknown(code) {
        return;
    }
    let mut shell = Shell { dir: cx.emit.dir.clone(), pushed: Vec::new() };
    read(&code.text, &mut shell, cx.out, cx.depth + 1);
}

/// `eval WORDS`: reads the words joined by spaces, in this shell (its `cd` stays).
fn eval(args: &[Word], cx: &mut Cx<'_>) {
    if cx.emit.placeholder.is_some() && args.iter().any(|w| cx.emit.unknown(w)) {
        return;
    }
    let code = args.iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" ");
    read(&code, cx.shell, cx.out, cx.depth + 1);
}

/// `find`: `-delete` and an `-exec` of a command that writes (`-exec rm {} ;`) write files
/// that it finds: not read, so `find` goes to [`Writes::unread`]. `-fprint FILE` writes FILE.
fn find(name: &Word, args: &[Word], cx: &mut Cx<'_>) {
    let mut i = 0;
    while let Some(word) = args.get(i) {
        i += 1;
        match word.text.as_str() {
            "-delete" => cx.emit.label(name.pos, "find"),
            "-fprint" | "-fprint0" | "-fprintf" | "-fls" => {
                if let Some(file) = args.get(i) {
                    cx.emit.target(file);
                }
                i += 1;
            }
            "-exec" | "-execdir" | "-ok" | "-okdir" => {
                let rest = args.get(i..).unwrap_or_default();
                let end = rest.iter().position(|w| w.text == ";" || w.text == "+").unwrap_or(rest.len());
                if exec_writes(rest.get(..end).unwrap_or_default(), cx) {
                    cx.emit.label(name.pos, "find");
                }
                i += end + 1;
            }
            _ => {}
        }
    }
}

/// Whether the command of a `find -exec` writes anything (a word with `{}` is a found file).
fn exec_writes(words: &[Word], cx: &Cx<'_>) -> bool {
    if cx.depth >= MAX_DEPTH {
        return false;
    }
    let mut shell = (*cx.shell).clone();
    let mut out = Out::default();
    let mut inner = Cx {
        shell: &mut shell,
        out: &mut out,
        depth: cx.depth + 1,
        emit: Emit::new(cx.emit.dir.clone()),
        appended: false,
    };
    inner.emit.placeholder = Some("{}".to_owned());
    command(words, &mut inner);
    std::mem::take(&mut inner.emit).flush(inner.out);
    out.writes != Writes::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the paths and unread words of `command`.
    #[track_caller]
    fn check(command: &str, paths: &[&str], unread: &[&str]) {
        let got = writes(command);
        assert_eq!(got.paths, paths, "paths of {command:?}");
        assert_eq!(got.unread, unread, "unread of {command:?}");
    }

    /// Checks the `into` pairs of `command`.
    #[track_caller]
    fn check_into(command: &str, into: &[(&str, &str)]) {
        let writes = writes(command);
        let got: Vec<(&str, &str)> = writes.into.iter().map(|(d, s)| (d.as_str(), s.as_str())).collect();
        assert_eq!(got, into, "into of {command:?}");
    }

    #[test]
    fn sed_in_place() {
        check("sed -i 's/foo/bar/g' src/a.rs", &["src/a.rs"], &[]);
        check("sed -i.bak -e s/a/b/ -e 's/c/d/' a b", &["a", "b"], &[]);
        check("sed -Ei 's/a/b/' f", &["f"], &[]);
        check("sed -ni p f", &["f"], &[]);
        check("sed --in-place=.orig s/a/b/ f", &["f"], &[]);
        check("sed --in-place --expression=s/a/b/ f g", &["f", "g"], &[]);
        check("sed -i'' s/a/b/ f", &["f"], &[]);
        check("sed -i '' 's/a/b/' f", &["f"], &[]);
        check("sed -ie s/a/b/ f", &["f"], &[]);
        check("sed -f prog.sed -i f", &["f"], &[]);
        check("sed -e 's/x/y/' -i -- -weird", &["-weird"], &[]);
    }

    #[test]
    fn sed_without_in_place_writes_only_its_redirections() {
        check("sed s/a/b/ f", &[], &[]);
        check("sed -n 's/a/b/p' f > g", &["g"], &[]);
        check("sed -e 's/a/b/w out' f", &[], &[]);
    }

    #[test]
    fn redirections() {
        check(r#"echo "x" > src/new.rs"#, &["src/new.rs"], &[]);
        check("echo x >> a; echo y >| b; echo z 2>c 2>>d", &["a", "b", "c", "d"], &[]);
        check("cmd &>all.log", &["all.log"], &[]);
        check("cmd &>> all.log", &["all.log"], &[]);
        check("cmd >& both.log", &["both.log"], &[]);
        check(">empty.txt", &["empty.txt"], &[]);
        check("> first cat in", &["first"], &[]);
    }

    #[test]
    fn fd_duplications_and_devices_write_nothing() {
        check("cargo build 2>&1 | tail -5", &[], &[]);
        check("cmd >&2 2>&1 1>&- 3>&2-", &[], &[]);
        check("ls 2>/dev/null", &[], &[]);
        check("echo x > /dev/stderr >/dev/stdout >/dev/tty > /dev/fd/3", &[], &[]);
        check("cd /dev && echo > null", &[], &[]);
    }

    #[test]
    fn input_redirections_read() {
        check("sort < in.txt", &[], &[]);
        check("exec 3<> rw.txt", &["rw.txt"], &[]);
        check("exec 3>fd.txt", &["fd.txt"], &[]);
        check("cat <<< \"x > y\" > f", &["f"], &[]);
        check("cat 0<in 3<&0", &[], &[]);
    }

    #[test]
    fn heredocs() {
        check("cat <<'EOF' > src/gen.rs\nfn main() {}\nEOF", &["src/gen.rs"], &[]);
        check("cat <<EOF > a\nrm x > y\nEOF\nrm b", &["a", "b"], &[]);
        check("cat <<-END >a\n\trm x\n\tEND\ntouch c", &["a", "c"], &[]);
        check("cat <<A <<\"B\" >o\nrm a\nA\nrm b\nB\ntouch d", &["o", "d"], &[]);
        check("cat <<EOF > a\nnever closed\nrm x", &["a"], &[]);
    }

    #[test]
    fn git_mv_moves() {
        check("git mv src/a.rs src/b.rs", &["src/a.rs", "src/b.rs"], &[]);
        check_into("git mv src/a.rs src/b.rs", &[("src/b.rs", "src/a.rs")]);
        check("git -c core.x=y --no-pager mv -f a b", &["a", "b"], &[]);
        check("git mv -n a b", &[], &[]);
    }

    #[test]
    fn cd_joins() {
        check("cd src && echo hi >> notes.md", &["src/notes.md"], &[]);
        check("cd src && sed -i s/a/b/ a.rs", &["src/a.rs"], &[]);
        check("cd ./src/../lib && touch ./x/../y.rs", &["lib/y.rs"], &[]);
        check("cd .. && rm a", &["../a"], &[]);
        check("cd /tmp && rm a", &["/tmp/a"], &[]);
        check("cd a; cd b; touch c; cd /x; touch d; cd ../y; touch e", &["a/b/c", "/x/d", "/y/e"], &[]);
    }

    #[test]
    fn cd_unread_places_nothing() {
        check("cd && rm a /abs/b", &["/abs/b"], &["a"]);
        check(r#"cd "$DIR" && touch x"#, &[], &["x"]);
        check("cd ~/p && touch 'x y'", &[], &["'x y'"]);
        check("cd - && touch x", &[], &["x"]);
        check("cd $(mktemp -d) && touch x; cd /tmp && touch y", &["/tmp/y"], &["x"]);
    }

    #[test]
    fn pushd_popd() {
        check("pushd src && touch a && popd && touch b", &["src/a", "b"], &[]);
        check("pushd a; pushd b; touch x; popd; touch y; popd; touch z", &["a/b/x", "a/y", "z"], &[]);
        check("popd; touch x", &[], &["x"]);
    }

    #[test]
    fn subshells_keep_their_cd() {
        check("(cd a && touch x); touch y", &["a/x", "y"], &[]);
        check("(cd a && (cd b && touch x) && touch y) && touch z", &["a/b/x", "a/y", "z"], &[]);
        check("{ cd a; touch x; }; touch y", &["a/x", "a/y"], &[]);
        check("(cd a; (cd b; (cd c; touch x)); touch y) > log", &["a/b/c/x", "a/y", "log"], &[]);
    }

    #[test]
    fn tee_pipeline() {
        check("printf '%s\\n' a b | tee -a log.txt >/dev/null", &["log.txt"], &[]);
        check("cat x | sudo tee /etc/hosts other", &["/etc/hosts", "other"], &[]);
    }

    #[test]
    fn code_runners_are_not_guessed() {
        check(r#"python3 -c "open('x','w')""#, &[], &[]);
        check("python script.py out.txt", &[], &[]);
        check("node -e 'fs.writeFileSync(\"a\")'", &[], &[]);
        check("make install && npm run build && cargo fmt", &[], &[]);
        check("perl -e 'unlink \"x\"'", &[], &[]);
        check("perl -ne 'print' f", &[], &[]);
    }

    #[test]
    fn perl_and_ruby_in_place() {
        check("perl -pi -e 's/a/b/' a.txt b.txt", &["a.txt", "b.txt"], &[]);
        check("perl -i.bak -pe 's/a/b/' f", &["f"], &[]);
        check("perl -i -p script.pl f", &["f"], &[]);
        check("perl -0777 -i -pe 's/a/b/' f", &["f"], &[]);
        check("perl -lnie 'print' f", &["f"], &[]);
        check("ruby -i -pe '$_.upcase!' f", &["f"], &[]);
    }

    #[test]
    fn for_loop_over_a_glob_is_unread() {
        check(r#"for f in *.rs; do sed -i s/a/b/ "$f"; done"#, &[], &[r#""$f""#]);
    }

    #[test]
    fn quoted_operators_are_text() {
        check("npm test && git add -A && git commit -m 'x > y'", &[], &[]);
        check(r#"echo "a > b" 'c >> d' e\>f"#, &[], &[]);
        check("echo 'a;rm b' \"c && rm d\"", &[], &[]);
    }

    #[test]
    fn rm_and_friends() {
        check("rm -rf build/ dist", &["build/", "dist"], &[]);
        check("rm -- -f ./x//y", &["-f", "x/y"], &[]);
        check("/bin/rm -r a; rmdir -p b; unlink c; shred -n 3 -u d", &["a", "b", "c", "d"], &[]);
        check("rm a b a", &["a", "b"], &[]);
    }

    #[test]
    fn cp_destination_and_into() {
        let command = "cp a.rs b.rs && cp -r src/ /tmp/backup/";
        check(command, &["b.rs", "/tmp/backup/", "/tmp/backup/src"], &[]);
        check_into(command, &[("b.rs", "a.rs"), ("/tmp/backup/", "src/")]);
        check("cp -T a b", &["b"], &[]);
        check_into("cp -T a b", &[]);
        check("cp only", &[], &[]);
        check("cp -a src/. /tmp/dst", &["/tmp/dst"], &[]);
        check_into("cp -a src/. /tmp/dst", &[]);
        check("cp --no-preserve mode a b", &["b"], &[]);
    }

    #[test]
    fn mv_sources_and_destination() {
        check("mv a.rs b.rs out/", &["a.rs", "b.rs", "out/", "out/a.rs", "out/b.rs"], &[]);
        check_into("mv a.rs b.rs out", &[("out", "a.rs"), ("out", "b.rs")]);
        check("mv -t dest/ a b", &["a", "dest/a", "b", "dest/b"], &[]);
        check("mv --target-directory=d x/a", &["x/a", "d/a"], &[]);
        check(r#"mv "$f" out/"#, &["out/"], &[r#""$f""#]);
        check(r#"mv -t "$D" a"#, &["a"], &[r#""$D""#]);
    }

    #[test]
    fn ln_and_install() {
        check("ln -sf ../shared/x.rs src/x.rs", &["src/x.rs"], &[]);
        check_into("ln -s a b", &[("b", "a")]);
        check("ln -s /opt/tool/bin/tool", &["tool"], &[]);
        check("install -m 755 build/tool bin/tool", &["bin/tool"], &[]);
        check("install -D -t /usr/local/bin a", &["/usr/local/bin/a"], &[]);
        check("install -d a b", &[], &[]);
    }

    #[test]
    fn touch_truncate_chmod_dd() {
        check("touch -d '2 days ago' f", &["f"], &[]);
        check("touch -r ref -t 202401010000 a -c b", &["a", "b"], &[]);
        check("truncate -s 0 big.log", &["big.log"], &[]);
        check("truncate --size=0 a -r ref b", &["a", "b"], &[]);
        check("chmod +x a.sh b.sh", &["a.sh", "b.sh"], &[]);
        check("chmod -R 755 dir", &["dir"], &[]);
        check("chmod -x s.sh", &["s.sh"], &[]);
        check("chmod --reference=ref f; chown -R me:me g", &["f", "g"], &[]);
        check("dd if=/dev/zero of=disk.img bs=1M count=1", &["disk.img"], &[]);
        check("mkdir -p a/b", &[], &[]);
    }

    #[test]
    fn patch_files() {
        check("patch -p1 < fix.diff", &[], &["patch"]);
        check("patch src/a.rs fix.diff", &["src/a.rs"], &[]);
        check("patch -o out.rs a.rs d.diff", &["out.rs"], &[]);
        check("patch --dry-run -p1 < d", &[], &[]);
    }

    #[test]
    fn git_paths() {
        check("git rm --cached -r old/ 'x.rs'", &["old/", "x.rs"], &[]);
        check("git rm '*.log'", &[], &["'*.log'"]);
        check("git checkout -- a.rs b.rs", &["a.rs", "b.rs"], &[]);
        check("git checkout HEAD~1 -- src/x.rs", &["src/x.rs"], &[]);
        check("git checkout main", &[], &["git checkout"]);
        check("git checkout -b feature", &[], &[]);
        check("git restore --source HEAD~2 src/a.rs", &["src/a.rs"], &[]);
        check("git restore --staged a.rs", &[], &[]);
        check("git restore -SW a.rs", &["a.rs"], &[]);
        check("git -C sub rm x && cd src && git -C .. rm y", &["sub/x", "y"], &[]);
    }

    #[test]
    fn git_commands_with_unknown_files() {
        check("git stash && git pull --rebase && git stash pop", &[], &["git stash", "git pull"]);
        check("git reset --hard HEAD", &[], &["git reset"]);
        check("git reset HEAD a; git stash list; git status; git add -A", &[], &[]);
        check(
            "git switch main; git merge x; git apply p.diff; git apply --check p.diff",
            &[],
            &["git switch", "git merge", "git apply"],
        );
        check("git clean -fd; git clean -n", &[], &["git clean"]);
    }

    #[test]
    fn shell_c_and_eval() {
        check(r#"bash -c "echo 1 > out.txt""#, &["out.txt"], &[]);
        check("sh -c 'cd a && rm b'; rm c", &["a/b", "c"], &[]);
        check("bash -euo pipefail -c 'touch a'", &["a"], &[]);
        check("zsh -lc 'touch a' name arg", &["a"], &[]);
        check("bash script.sh > log", &["log"], &[]);
        check(r#"bash -c "$CMD""#, &[], &[]);
        check("bash -c \"rm \\$X\"", &[], &["$X"]);
        check("eval 'cd a'; touch x", &["a/x"], &[]);
        check("eval rm b '>' c", &["b", "c"], &[]);
    }

    #[test]
    fn wrappers() {
        check("sudo -u root rm /etc/x", &["/etc/x"], &[]);
        check("env -i PATH=/bin FOO=1 rm x", &["x"], &[]);
        check("env -u HOME - rm x", &["x"], &[]);
        check("env -C sub touch x", &["sub/x"], &[]);
        check("nice -n 5 nohup time rm y", &["y"], &[]);
        check("command rm z; command -v rm", &["z"], &[]);
        check("X=1 Y+=2 rm v; Z=3", &["v"], &[]);
        check("timeout 10 rm t; timeout -s KILL 5s rm u", &["t", "u"], &[]);
        check("exec rm q", &["q"], &[]);
        check("/usr/bin/time -o times.txt make", &["times.txt"], &[]);
        check("sudo sudo env nice rm w", &["w"], &[]);
    }

    #[test]
    fn xargs_only_literal_words() {
        check("find . -name '*.o' | xargs rm -f", &[], &[]);
        check("xargs rm stale.txt", &["stale.txt"], &[]);
        check("ls | xargs -I{} cp {} backup/", &["backup/"], &[]);
        check("ls | xargs -I % sh -c 'rm %'", &[], &[]);
        check("xargs cp a b; xargs mv -t dest", &[], &[]);
        check("xargs -0 -n 1 sed -i s/a/b/", &[], &[]);
    }

    #[test]
    fn find_is_unread_when_it_writes() {
        check("find . -name '*.tmp' -delete", &[], &["find"]);
        check("find . -name x -exec rm {} \\;", &[], &["find"]);
        check("find . -exec grep -l x {} + ; find . -type f -print", &[], &[]);
        check("find . -fprint out.txt", &["out.txt"], &[]);
    }

    #[test]
    fn unreadable_words() {
        check("rm *.o $X `ls` ~/x a?b [ab]", &[], &["*.o", "$X", "`ls`", "~/x", "a?b", "[ab]"]);
        check("touch {a,b}.rs x{1..3}", &[], &["{a,b}.rs", "x{1..3}"]);
        check("rm 'a*b' a\\?c \"[x]\" '~'", &["a*b", "a?c", "[x]", "~"], &[]);
        check("echo $'a\\nb' > $'x\\ty' > $'plain'", &["plain"], &["$'x\\ty'"]);
        check("echo > \"$HOME/x\" > \"${D}/y\"", &[], &["\"$HOME/x\"", "\"${D}/y\""]);
        check("echo > 'a$b' > \"c\\$d\" > e$", &["a$b", "c$d", "e$"], &[]);
    }

    #[test]
    fn heredocs_inside_substitutions() {
        let commit = concat!(
            "git commit -m \"$(cat <<'EOF'\nFix the parser's bug (see #12)\n\n",
            "It's \"done\" > now\nEOF\n)\" && rm done.txt",
        );
        check(commit, &["done.txt"], &[]);
        check("gh pr create --body \"$(cat <<-EOF\n\tdon't ) stop\n\tEOF\n)\"; touch after", &["after"], &[]);
        check("echo $((1 << 2)) $(( (3) << 1 )) > f\ntouch g", &["f", "g"], &[]);
        check("echo $( (( x << 2 )); touch h ) <<< 'y'", &["h"], &[]);
        check("echo $(cat <<< \"it's\" ; touch i)", &["i"], &[]);
    }

    #[test]
    fn comments() {
        check("# rm x", &[], &[]);
        check("echo a # > x\ntouch y", &["y"], &[]);
        check("echo a#b > c", &["c"], &[]);
    }

    #[test]
    fn substitutions_are_read() {
        check("echo $(rm -f x) > y", &["x", "y"], &[]);
        check("diff <(sort a) <(sort b > s) > d.txt", &["s", "d.txt"], &[]);
        check("cmd | tee >(gzip > out.gz) > /dev/null", &["out.gz"], &[]);
        check("echo \"$(touch q)\" `touch r`", &["q", "r"], &[]);
        check("echo $(( 1 > 2 ))", &[], &[]);
        check("echo $(echo ')' ; touch p)", &["p"], &[]);
        check("echo $(echo a # ) \n touch c)", &["c"], &[]);
    }

    #[test]
    fn compound_commands() {
        check("if [ -f a ]; then rm a; elif true; then touch b; else touch c; fi", &["a", "b", "c"], &[]);
        check("while read l; do echo $l; done < in.txt > out.txt", &["out.txt"], &[]);
        check("case $x in a|b) rm y;; (*) touch z;; esac; touch w", &["y", "z", "w"], &[]);
        check("case $x in a) (cd q; touch y);; esac; touch z", &["q/y", "z"], &[]);
        check("[[ a > b && c < d ]] && touch c", &["c"], &[]);
        check("(( x > 3 )) && touch d", &["d"], &[]);
        check("[ a > b ]", &["b"], &[]);
        check("! rm x; f() { rm y; }; f", &["x", "y"], &[]);
    }

    #[test]
    fn order_of_appearance() {
        check("sed -i s/a/b/ f > log", &["f", "log"], &[]);
        check("> log sed -i s/a/b/ f", &["log", "f"], &[]);
        check("echo a > f; echo b >> f", &["f"], &[]);
    }

    #[test]
    fn lexing_corners() {
        check("echo \"abc > x", &[], &[]);
        check("rm 'abc", &["abc"], &[]);
        check("rm \\\n a", &["a"], &[]);
        check("rm a\\\nb", &["ab"], &[]);
        check("touch a;touch b&touch c|touch d&&touch e||touch f", &["a", "b", "c", "d", "e", "f"], &[]);
        check("touch 'é ü' \"日本\"", &["é ü", "日本"], &[]);
        check("rm \"a\"'b'c", &["abc"], &[]);
        check("echo x >", &[], &[]);
        check("2>e rm 1 2 3", &["e", "1", "2", "3"], &[]);
        check("touch a\r\ntouch b\r\n", &["a", "b"], &[]);
    }

    #[test]
    fn joins_are_lexical() {
        let dir = |d: &str| Some(Rc::from(d));
        let cases = [
            (".", "a", "a"),
            (".", ".", "."),
            (".", "../a", "../a"),
            ("src", "a/", "src/a/"),
            ("src", "..", "."),
            ("src", "./x/../../lib/y", "lib/y"),
            ("a/b", "../../../x", "../x"),
            ("..", "../a", "../../a"),
            ("../a", "../..", "../.."),
            ("/", "a", "/a"),
            ("/a", "../../x", "/x"),
            ("/a/b", ".", "/a/b"),
            ("src", "/abs/./x//y/", "/abs/x/y/"),
        ];
        for (base, path, joined) in cases {
            assert_eq!(join(&dir(base), path).as_deref(), Some(joined), "{path} onto {base}");
        }
        assert_eq!(join(&None, "a"), None);
        assert_eq!(join(&None, "/a").as_deref(), Some("/a"));
        check("cd src/ && cd ./sub// && touch x", &["src/sub/x"], &[]);
    }

    #[test]
    fn pathological_inputs_stay_bounded() {
        let dir = "d/".repeat(2000);
        let repeated = format!("cd {dir} && {}", "rm ../b; ".repeat(100_000));
        assert_eq!(writes(&repeated).paths.len(), 1);
        let wide = format!("mv -t \"$D{}\" {}", "x".repeat(500_000), "a ".repeat(200_000));
        let got = writes(&wide);
        assert_eq!((got.paths.len(), got.unread.len()), (1, 1));
        let long = format!("cp {} {}", "s ".repeat(200_000), "y".repeat(4000));
        assert_eq!(writes(&long).into.len(), 1);
    }

    #[test]
    fn bounded_paths() {
        let long = "a/".repeat(3000);
        check(&format!("cd {long} && touch x"), &[], &["x"]);
        check(&format!("touch {long}x"), &[], &[&format!("{long}x")]);
        let many: String = (0..5000).map(|i| format!(" f{i}")).collect();
        assert_eq!(writes(&format!("rm{many}")).paths.len(), MAX_ENTRIES);
    }

    #[test]
    fn nested_bash_c_is_read_to_a_limit() {
        // Each level quotes the one inside it with double quotes.
        let nest = |levels: usize| {
            let mut command = "touch deep".to_owned();
            for _ in 0..levels {
                command = format!("bash -c \"{}\"", command.replace('\\', "\\\\").replace('"', "\\\""));
            }
            command
        };
        check(&nest(MAX_DEPTH), &["deep"], &[]);
        check(&nest(MAX_DEPTH + 1), &[], &[]);
        check(&nest(14), &[], &[]);
        let eval = format!("{}touch e", "eval ".repeat(10_000));
        check(&eval, &[], &[]);
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let n = 200_000;
        let parens = format!("{}touch x{}", "( ".repeat(n), " )".repeat(n));
        check(&parens, &["x"], &[]);
        let subs = format!("echo {}touch x{}", "$(".repeat(n), ")".repeat(n));
        let _ = writes(&subs);
        let ticks = format!("echo {}", "`".repeat(n));
        let _ = writes(&ticks);
        let finds = format!("{}rm y", "find . -exec ".repeat(n / 10));
        let _ = writes(&finds);
        let wrappers = format!("{}rm z", "sudo env nice xargs ".repeat(n / 10));
        let _ = writes(&wrappers);
        let cases = "case x in a) ".repeat(n / 10);
        let _ = writes(&cases);
        let pushes = "pushd a; ( ".repeat(n / 10);
        let _ = writes(&pushes);
    }

    #[test]
    fn random_megabyte_does_not_panic() {
        let alphabet: Vec<char> = "abc/._-=~*?[]{},$`'\"\\()<>|&;#! \t\n\r0123456789é\0".chars().collect();
        let words = ["rm ", "mv ", "cp ", "cd ", "sed -i ", "<<EOF\n", "$(", "bash -c ", "git mv ", "2>&1 ", "-t "];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut command = String::with_capacity(1 << 20);
        while command.len() < 1 << 20 {
            let r = next();
            if r % 7 == 0 {
                command.push_str(words[(r >> 8) as usize % words.len()]);
            } else {
                command.push(alphabet[(r >> 8) as usize % alphabet.len()]);
            }
        }
        let got = writes(&command);
        assert!(got.paths.len() <= MAX_ENTRIES && got.unread.len() <= MAX_ENTRIES);
        // The same, with the quotes that end everything taken out.
        let _ = writes(&command.replace(['\'', '"', '`', '('], " "));
    }
}
