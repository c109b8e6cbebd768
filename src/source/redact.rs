//! Secret redaction for application configuration files (`lifeboat backup DIR --redact …`).
//!
//! A pure, filesystem-free pass over one file's bytes: values that look secret are replaced by
//! [`REDACTED`], and every other byte of the file — comments, blank lines, key order, quoting
//! style, indentation, line endings — stays exactly as it was.
//!
//! # Formats ([`format_of`])
//! `.env` files (`.env`, `.env.*`, `*.env`), TOML (`*.toml`), YAML (`*.yaml`, `*.yml`), JSON
//! (`*.json`, comments and trailing commas tolerated) and INI (`*.ini`, `*.cfg`, `*.cnf`).
//! `*.conf` is deliberately not mapped: the name is used by nginx, Apache, redis and many other
//! syntaxes that an INI reading would misread; such files get `None` and the caller decides.
//!
//! TOML is read with `toml_edit` (its spans locate each value in the original text). YAML,
//! JSON, INI and `.env` are read by the small span-keeping scanners below: no maintained crate
//! rewrites those formats while keeping comments and layout byte for byte.
//!
//! # What is secret
//! * A value whose **key** matches a pattern ([`Redactor::default_patterns`], or the caller's).
//!   Patterns are compared with the key's own name (the last part of its path), not the path.
//!   A key whose value is a table, mapping, object, array, or an INI section whose name matches,
//!   has every scalar under it redacted. Empty values, `null`/`~`, booleans and values that are
//!   only a variable reference (`$NAME`, `${NAME}`) are left alone: they hold no secret.
//! * Anywhere, in any value: the password of a URL (`postgres://user:pa55@host/db` →
//!   `postgres://user:REDACTED-BY-LIFEBOAT@host/db`), and the value of a `name=value` pair
//!   whose name matches the patterns (`host=db password=x`, `Server=db;Password=x`,
//!   `https://h/?token=x`, `--password=x`). The rest of the value is kept.
//!
//! # Pattern syntax
//! Case-insensitive globs: `*` is any run of characters, `?` is one character, everything else
//! is literal (letters, digits, `_`, `-`, `.`, space). Both the key and the pattern are compared
//! in snake case: lower case, with `-`, `.`, spaces and camelCase boundaries read as `_`
//! (`dbPassword`, `db-password` and `DB_PASSWORD` are all `db_password`). A key whose name ends
//! in digits is also tried without them (`PASSWORD2` is checked as `password`). Any other
//! character (`[`, `{`, `/`, `=`, …) makes the pattern an error that names it.
//!
//! # Files that cannot be read (fail closed)
//! If a file of a known format is not valid UTF-8, does not parse, or uses a form these
//! scanners do not read (YAML complex keys, a `.env` line that is not `KEY=value`, …), the
//! result has `warning: Some(reason)`, **empty `data`** and no keys: nothing of the file is
//! returned, so a caller that forgets to look at the warning still stores no secret. The caller
//! should report "file X could not be redacted: REASON; exclude it or pass --no-redact". The
//! reason gives a line number and never quotes the file. After redacting, the output is read
//! again in its format; if that fails (a bug), the file is refused the same way.
//!
//! # What is reported
//! [`Redaction::keys`] lists the path of every redacted value, in file order, without
//! duplicates: `DB_PASSWORD`, `database.password`, `servers[0].token`, `production.password`
//! (INI section `[production]`), `(root)` for a top-level value. Never a value.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

/// The text that replaces a secret value. Only capital letters and dashes, so it is valid
/// unquoted in a shell-sourced `.env`, a YAML plain scalar, an INI value and a URL's userinfo,
/// and needs no escaping inside any quoted string. Where the format needs quotes (a TOML or
/// JSON number that was secret) it is written quoted.
pub const REDACTED: &str = "REDACTED-BY-LIFEBOAT";

/// Which file formats are understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Env,
    Toml,
    Yaml,
    Json,
    Ini,
}

impl Format {
    /// The format's name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Env => ".env",
            Format::Toml => "TOML",
            Format::Yaml => "YAML",
            Format::Json => "JSON",
            Format::Ini => "INI",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Format from a file name (a path is accepted; only its last component counts), ignoring
/// case: `*.toml` TOML; `*.yaml`, `*.yml` YAML; `*.json` JSON; `*.ini`, `*.cfg`, `*.cnf` INI;
/// otherwise `.env`, `.env.*` (`.env.production`) and `*.env` (`app.env`) are `.env` files.
/// Anything else, `*.conf` included (nginx, Apache, redis… are not INI), is `None`.
pub fn format_of(file_name: &str) -> Option<Format> {
    let name = file_name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(file_name)
        .to_lowercase();
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "toml" => return Some(Format::Toml),
        "yaml" | "yml" => return Some(Format::Yaml),
        "json" => return Some(Format::Json),
        "ini" | "cfg" | "cnf" => return Some(Format::Ini),
        _ => {}
    }
    if name == ".env" || name.starts_with(".env.") || (ext == "env" && name.len() > 4) {
        return Some(Format::Env);
    }
    None
}

/// The default patterns. The rule: a key is secret when its name *ends* with a word that
/// names a secret (`DB_PASSWORD`, `access_token`, `stripe_secret_key`), not when the word is
/// only a qualifier (`token_ttl`, `password_min_length`, `secret_name`, `password_file`).
/// Generic `*_key` is not included (`cache_key`, `sort_key`); add such names with `--redact`.
const DEFAULT_PATTERNS: &[&str] = &[
    "*password",
    "*passwords",
    "*password_hash",
    "*passwd",
    "*passphrase",
    "pass",
    "*_pass",
    "pwd",
    "*_pwd",
    "*secret",
    "*secrets",
    "*secret_key",
    "*secret_key_base",
    "*token",
    "*tokens",
    "*api_key",
    "*api_keys",
    "*apikey",
    "*private_key",
    "*privatekey",
    "*access_key",
    "*encryption_key",
    "*signing_key",
    "*master_key",
    "*credential",
    "*credentials",
    "*creds",
    "*_auth",
    "*authorization",
    "*connection_string",
];

/// Decides which keys are secret and redacts files.
#[derive(Debug, Clone)]
pub struct Redactor {
    patterns: Vec<Vec<char>>,
}

/// One file's redaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redaction {
    /// The redacted file; empty when `warning` is set (the file could not be redacted).
    pub data: Vec<u8>,
    /// Paths of the redacted values, in file order, each once. Never a value.
    pub keys: Vec<String>,
    /// Set only when the file could not be redacted; then `data` is empty and `keys` too.
    pub warning: Option<String>,
}

impl Redaction {
    /// Whether the file could not be redacted (`warning` is set, `data` is empty).
    pub fn failed(&self) -> bool {
        self.warning.is_some()
    }
}

impl Redactor {
    /// The default secret-key patterns (see the module documentation for the rule).
    pub fn default_patterns() -> Vec<String> {
        DEFAULT_PATTERNS.iter().map(|p| p.to_string()).collect()
    }

    /// A redactor for exactly these patterns (pass [`Redactor::default_patterns`] plus the
    /// user's to extend the defaults; with an empty list only URL passwords are redacted).
    /// A bad pattern is a usage error naming it.
    pub fn new(patterns: &[String]) -> Result<Redactor> {
        let patterns = patterns
            .iter()
            .map(|p| parse_pattern(p))
            .collect::<Result<Vec<_>>>()?;
        Ok(Redactor { patterns })
    }

    /// Whether a key with this name holds a secret.
    pub fn is_secret_key(&self, key: &str) -> bool {
        // The key's characters once, for every pattern (a collect per pattern and key was
        // most of the time of a backup of 2,000 config files).
        let k: Vec<char> = snake_case(key).chars().collect();
        let kept = k
            .iter()
            .rposition(|c| !(c.is_ascii_digit() || *c == '_'))
            .map_or(0, |i| i + 1);
        let trimmed = &k[..kept];
        self.patterns.iter().any(|p| {
            glob(p, &k) || (!trimmed.is_empty() && trimmed.len() < k.len() && glob(p, trimmed))
        })
    }

    /// Redact one file's bytes. Returns the new bytes and what was redacted; see the module
    /// documentation for what happens to a file that cannot be read.
    pub fn redact(&self, format: Format, data: &[u8]) -> Redaction {
        let text = match std::str::from_utf8(data) {
            Ok(t) => t,
            Err(e) => {
                return failed(
                    format,
                    format!("not UTF-8 text (byte {} is not)", e.valid_up_to()),
                )
            }
        };
        let mut out = Out::new(self);
        if let Err(Unparsable(why)) = scan(format, text, &mut out) {
            return failed(format, why);
        }
        let Out {
            edits, mut keys, ..
        } = out;
        keys.sort_by_key(|(at, _)| *at);
        let keys = keys.into_iter().map(|(_, k)| k).collect();
        let redacted = apply(text, edits);
        // The output must read as the same format again; a bug here must not leak.
        if let Err(Unparsable(why)) = scan(format, &redacted, &mut Out::new(self)) {
            return failed(
                format,
                format!("internal error, the redacted file did not parse again ({why})"),
            );
        }
        Redaction {
            data: redacted.into_bytes(),
            keys,
            warning: None,
        }
    }
}

fn failed(format: Format, why: String) -> Redaction {
    Redaction {
        data: Vec::new(),
        keys: Vec::new(),
        warning: Some(format!("cannot redact this {format} file: {why}")),
    }
}

fn scan(format: Format, text: &str, out: &mut Out) -> std::result::Result<(), Unparsable> {
    // A byte-order mark is kept and skipped.
    let start = if text.starts_with('\u{feff}') { 3 } else { 0 };
    match format {
        Format::Env => scan_env(text, start, out),
        Format::Ini => scan_ini(text, start, out),
        Format::Json => scan_json(text, start, out),
        Format::Toml => scan_toml(text, start, out),
        Format::Yaml => scan_yaml(text, start, out),
    }
}

// ---------------------------------------------------------------------------------------------
// Patterns

fn parse_pattern(p: &str) -> Result<Vec<char>> {
    let bad = |why: String| {
        Error::usage(format!("bad redaction pattern {p:?}: {why}")).hint(
            "a pattern is a key name with * (any characters) and ? (one character), \
             e.g. \"*password*\" or \"db_*\"; case is ignored and -, . and spaces count as _",
        )
    };
    if p.trim().is_empty() {
        return Err(bad("it is empty".to_string()));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '*' | '?')))
    {
        return Err(bad(format!(
            "{c:?} is not allowed (only letters, digits, _ - . space, * and ?)"
        )));
    }
    Ok(snake_case(p.trim()).chars().collect())
}

/// Lower case, with `-`, `.`, whitespace and camelCase boundaries turned into `_`.
fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c == '-' || c == '.' || c.is_whitespace() {
            out.push('_');
            continue;
        }
        if c.is_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                out.push('_');
            }
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// `*` any run, `?` one character, the rest literal.
fn glob(pattern: &[char], s: &[char]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, i));
            p += 1;
        } else if p < pattern.len() && (pattern[p] == '?' || pattern[p] == s[i]) {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// `${NAME}`, or `$NAME` in the upper case of environment variables: a reference to a secret
/// kept elsewhere, not a secret. A bare `$Sup3rSecret` (lower case in it) is taken for the
/// password it probably is: JSON and TOML expand nothing, so keeping it would store it.
fn is_reference(v: &str) -> bool {
    let (name, braced) = if let Some(r) = v.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        (r, true)
    } else if let Some(r) = v.strip_prefix('$') {
        (r, false)
    } else {
        return false;
    };
    let mut cs = name.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && (braced || !name.chars().any(|c| c.is_ascii_lowercase()))
}

impl Redactor {
    /// Byte ranges of `text` that are secret whatever the key: URL passwords and the values
    /// of `name=value` pairs with a secret name. Sorted, not overlapping.
    fn inline_secrets(&self, text: &str) -> Vec<Range<usize>> {
        let b = text.as_bytes();
        let mut found: Vec<Range<usize>> = Vec::new();
        let scheme_char = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'.' | b'-');
        let url_stop =
            |c: u8| c.is_ascii_whitespace() || matches!(c, b'"' | b'\'' | b'<' | b'>' | b'`');

        // URL userinfo: scheme://user:PASSWORD@host…
        let mut from = 0;
        while let Some(off) = text[from..].find("://") {
            let sep = from + off;
            let auth = sep + 3;
            from = auth;
            let mut s = sep;
            while s > 0 && scheme_char(b[s - 1]) {
                s -= 1;
            }
            while s < sep && !b[s].is_ascii_alphabetic() {
                s += 1;
            }
            if s == sep {
                continue;
            }
            let mut end = auth;
            while end < b.len() && !url_stop(b[end]) {
                end += 1;
            }
            if let Some(next) = text[auth..end].find("://") {
                let mut e = auth + next;
                while e > auth && scheme_char(b[e - 1]) {
                    e -= 1;
                }
                end = e;
            }
            let r = &text[auth..end];
            let Some(colon) = r.find([':', '/', '?', '#', '@']) else {
                continue;
            };
            if r.as_bytes()[colon] != b':' {
                continue;
            }
            // The last `@`: unencoded `@` and `/` do occur in passwords.
            let Some(at) = r.rfind('@') else { continue };
            if at > colon + 1 && !is_reference(&r[colon + 1..at]) {
                found.push(auth + colon + 1..auth + at);
            }
        }

        // name=value pairs with a secret name.
        let name_char = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-');
        let boundary = |c: u8| {
            c.is_ascii_whitespace() || matches!(c, b';' | b'&' | b'?' | b',' | b'(' | b'"' | b'\'')
        };
        for (eq, _) in text.match_indices('=') {
            let mut s = eq;
            while s > 0 && name_char(b[s - 1]) {
                s -= 1;
            }
            if s == eq || (s > 0 && !boundary(b[s - 1])) || b.get(eq + 1) == Some(&b'=') {
                continue;
            }
            if !self.is_secret_key(&text[s..eq]) {
                continue;
            }
            let v = eq + 1;
            let (vs, ve) = match b.get(v) {
                Some(&q @ (b'"' | b'\'')) => {
                    let close = text[v + 1..].find(q as char).map_or(b.len(), |i| v + 1 + i);
                    (v + 1, close)
                }
                _ => {
                    let mut e = v;
                    while e < b.len()
                        && !(b[e].is_ascii_whitespace() || matches!(b[e], b';' | b'&'))
                    {
                        e += 1;
                    }
                    (v, e)
                }
            };
            if ve > vs && !is_reference(&text[vs..ve]) {
                found.push(vs..ve);
            }
        }

        found.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<usize>> = Vec::new();
        for r in found {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        merged
    }
}

// ---------------------------------------------------------------------------------------------
// Shared machinery

/// Why a file could not be read; says where, never quotes the file.
#[derive(Debug)]
struct Unparsable(String);

type Scan<T = ()> = std::result::Result<T, Unparsable>;

fn line_of(src: &str, pos: usize) -> usize {
    let pos = pos.min(src.len());
    src.as_bytes()[..pos]
        .iter()
        .filter(|&&c| c == b'\n')
        .count()
        + 1
}

fn at_line(src: &str, pos: usize, what: &str) -> Unparsable {
    Unparsable(format!("line {}: {what}", line_of(src, pos)))
}

/// A decoded value and, for each of its bytes, where it came from in the file (`raw` has one
/// more entry: the end), so a range found in the value maps back to a range of the file.
#[derive(Debug, Default, Clone)]
struct Mapped {
    text: String,
    raw: Vec<usize>,
}

impl Mapped {
    fn verbatim(src: &str, range: Range<usize>) -> Mapped {
        let mut m = Mapped::default();
        m.push_verbatim(src, range.clone());
        m.end(range.end);
        m
    }
    fn push(&mut self, c: char, at: usize) {
        self.raw.extend(std::iter::repeat_n(at, c.len_utf8()));
        self.text.push(c);
    }
    fn push_verbatim(&mut self, src: &str, range: Range<usize>) {
        self.raw.extend(range.clone());
        self.text.push_str(&src[range]);
    }
    fn end(&mut self, at: usize) {
        self.raw.push(at);
    }
    fn raw_range(&self, r: Range<usize>) -> Range<usize> {
        self.raw[r.start]..self.raw[r.end]
    }
}

struct Edit {
    range: Range<usize>,
    text: String,
}

/// What a scan found: edits to make and key paths to report.
struct Out<'r> {
    redactor: &'r Redactor,
    edits: Vec<Edit>,
    /// Key paths, each with where its first redaction is (to list them in file order).
    keys: Vec<(usize, String)>,
}

impl<'r> Out<'r> {
    fn new(redactor: &'r Redactor) -> Self {
        Out {
            redactor,
            edits: Vec::new(),
            keys: Vec::new(),
        }
    }
    fn secret(&self, key: &str) -> bool {
        self.redactor.is_secret_key(key)
    }
    /// How a redacted value is listed: under the outermost secret key of its path, so that
    /// the keys of a mapping under a secret key (`api_tokens: {"sk-live-…": "ci"}`), which
    /// may be secrets themselves, never reach the manifest.
    fn listed_as<'p>(&self, path: &'p str) -> &'p str {
        let mut end = 0;
        for (i, c) in path
            .char_indices()
            .chain(std::iter::once((path.len(), '.')))
        {
            if c != '.' && c != '[' {
                continue;
            }
            let segment = &path[end..i];
            let segment = segment.trim_start_matches('.');
            if !segment.is_empty() && !segment.ends_with(']') && self.secret(segment) {
                return &path[..i];
            }
            end = i;
        }
        path
    }
    fn report(&mut self, path: &str) {
        let path = self.listed_as(path);
        let path = if path.is_empty() { "(root)" } else { path };
        if !self.keys.iter().any(|(_, k)| k == path) {
            let at = self.edits.last().map_or(0, |e| e.range.start);
            self.keys.push((at, path.to_string()));
        }
    }
    fn edit(&mut self, range: Range<usize>, text: impl Into<String>) {
        self.edits.push(Edit {
            range,
            text: text.into(),
        });
    }
    /// A whole secret value: replaced unless it holds nothing secret.
    fn redact_whole(&mut self, path: &str, range: Range<usize>, value: &str, text: &str) {
        if value.trim().is_empty() || is_reference(value.trim()) {
            return;
        }
        self.edit(range, text);
        self.report(path);
    }
    /// A comment line (`range` after its `#` or `;`) of a line-based format: the secret
    /// `name=value` pairs and URL passwords in it, as a commented-out assignment holds them.
    /// Prose around them is kept; `key: value` is not read (prose uses colons).
    fn comment(&mut self, src: &str, range: Range<usize>) {
        let path = format!("(comment, line {})", line_of(src, range.start));
        self.scan_value(&path, &Mapped::verbatim(src, range));
    }
    /// A value under a non-secret key: its URL passwords and secret `name=value` pairs.
    fn scan_value(&mut self, path: &str, m: &Mapped) {
        let found = self.redactor.inline_secrets(&m.text);
        if found.is_empty() {
            return;
        }
        for r in found {
            self.edit(m.raw_range(r), REDACTED);
        }
        self.report(path);
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Apply edits (a range inside an earlier, wider one is dropped).
fn apply(src: &str, mut edits: Vec<Edit>) -> String {
    edits.sort_by(|a, b| {
        a.range
            .start
            .cmp(&b.range.start)
            .then(b.range.end.cmp(&a.range.end))
    });
    let mut out = String::with_capacity(src.len());
    let mut at = 0;
    for e in edits {
        if e.range.start < at {
            // Overlaps the previous edit: drop what is left of it (the re-read checks the result).
            at = at.max(e.range.end);
            continue;
        }
        out.push_str(&src[at..e.range.start]);
        out.push_str(&e.text);
        at = e.range.end;
    }
    out.push_str(&src[at..]);
    out
}

fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// End of the line holding `pos`, before its `\n` or `\r\n`.
fn line_end(b: &[u8], pos: usize) -> usize {
    let mut e = pos;
    while e < b.len() && b[e] != b'\n' {
        e += 1;
    }
    if e > pos && b[e - 1] == b'\r' {
        e - 1
    } else {
        e
    }
}

/// Past the line break at `pos` (if any).
fn past_eol(b: &[u8], pos: usize) -> usize {
    match b.get(pos) {
        Some(b'\r') if b.get(pos + 1) == Some(&b'\n') => pos + 2,
        Some(b'\n') => pos + 1,
        _ => pos,
    }
}

fn trim_end_at(b: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && (is_blank(b[end - 1]) || b[end - 1] == b'\r') {
        end -= 1;
    }
    end
}

// ---------------------------------------------------------------------------------------------
// .env: `[export] KEY=value`, `# comments`, values unquoted, '…', "…" (escapes) or `…`;
// quoted values may span lines. Any other line is refused (fail closed).

fn scan_env(src: &str, start: usize, out: &mut Out) -> Scan {
    let b = src.as_bytes();
    let mut pos = start;
    while pos < b.len() {
        while pos < b.len() && is_blank(b[pos]) {
            pos += 1;
        }
        if pos >= b.len() {
            break;
        }
        if matches!(b[pos], b'\n' | b'\r') {
            let next = past_eol(b, pos);
            if next == pos {
                return Err(at_line(src, pos, "stray carriage return"));
            }
            pos = next;
            continue;
        }
        if b[pos] == b'#' {
            // A commented-out assignment (`# DB_PASSWORD=old`) is a secret kept "for
            // reference": its secret `name=value` pairs and URL passwords are redacted, the
            // rest of the comment kept.
            let le = line_end(b, pos);
            out.comment(src, pos + 1..le);
            pos = past_eol(b, le);
            continue;
        }
        if src[pos..].starts_with("export") && b.get(pos + 6).is_some_and(|&c| is_blank(c)) {
            pos += 6;
            while pos < b.len() && is_blank(b[pos]) {
                pos += 1;
            }
        }
        let ks = pos;
        if !(b[pos].is_ascii_alphabetic() || b[pos] == b'_') {
            return Err(at_line(src, pos, "expected KEY=value"));
        }
        while pos < b.len()
            && (b[pos].is_ascii_alphanumeric() || matches!(b[pos], b'_' | b'.' | b'-'))
        {
            pos += 1;
        }
        let key = &src[ks..pos];
        while pos < b.len() && is_blank(b[pos]) {
            pos += 1;
        }
        if pos >= b.len() || line_end(b, pos) == pos {
            // `export KEY` or a bare `KEY`: no value.
            pos = past_eol(b, pos);
            continue;
        }
        if b[pos] != b'=' {
            return Err(at_line(src, pos, "expected = after the key"));
        }
        pos += 1;
        while pos < b.len() && is_blank(b[pos]) {
            pos += 1;
        }
        let (content, m) = match b.get(pos) {
            Some(&q @ (b'"' | b'\'' | b'`')) => {
                let open = pos;
                pos += 1;
                let mut m = Mapped::default();
                loop {
                    let Some(&c) = b.get(pos) else {
                        return Err(at_line(src, open, "quoted value never closed"));
                    };
                    if c == q {
                        break;
                    }
                    if c == b'\\' && q == b'"' && pos + 1 < b.len() {
                        let decoded = match b[pos + 1] {
                            b'n' => Some('\n'),
                            b'r' => Some('\r'),
                            b't' => Some('\t'),
                            b'"' => Some('"'),
                            b'\\' => Some('\\'),
                            b'$' => Some('$'),
                            b'`' => Some('`'),
                            _ => None,
                        };
                        if let Some(d) = decoded {
                            m.push(d, pos);
                            pos += 2;
                            continue;
                        }
                    }
                    let ch = src[pos..].chars().next().unwrap_or('\0');
                    m.push(ch, pos);
                    pos += ch.len_utf8();
                }
                m.end(pos);
                let content = open + 1..pos;
                pos += 1;
                while pos < b.len() && is_blank(b[pos]) {
                    pos += 1;
                }
                if b.get(pos) == Some(&b'#') {
                    pos = line_end(b, pos);
                }
                if line_end(b, pos) != pos {
                    return Err(at_line(src, pos, "text after the closing quote"));
                }
                (content, m)
            }
            _ => {
                let le = line_end(b, pos);
                let mut e = pos;
                while e < le && !(b[e] == b'#' && is_blank(b[e - 1])) {
                    e += 1;
                }
                // `KEY=abc\` continues the value on the next line in a shell-sourced file;
                // redacting only this line would store the rest of it.
                let escapes = b[pos..e].iter().rev().take_while(|&&c| c == b'\\').count();
                if e == le && escapes % 2 == 1 {
                    return Err(at_line(
                        src,
                        pos,
                        "a value continued on the next line with \\",
                    ));
                }
                let e = trim_end_at(b, pos, e);
                let content = pos..e;
                pos = le;
                (content.clone(), Mapped::verbatim(src, content))
            }
        };
        if out.secret(key) {
            out.redact_whole(key, content, &m.text, REDACTED);
        } else {
            out.scan_value(key, &m);
        }
        pos = past_eol(b, pos);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// INI: `[section]`, `key = value` or `key: value`, `;`/`#` comment lines, values continued on
// lines indented deeper than their key. A value is the rest of its line (an inline `; x` is
// part of it: redacting too much is safer than leaking), or the inside of its quotes.

fn scan_ini(src: &str, start: usize, out: &mut Out) -> Scan {
    let b = src.as_bytes();
    let mut section = String::new();
    let mut section_secret = false;
    // The last key line: its indentation, path and whether it is secret.
    let mut current: Option<(usize, String, bool)> = None;
    let mut ls = start;
    while ls < b.len() {
        let le = line_end(b, ls);
        let this = ls;
        ls = b[le..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(b.len(), |i| le + i + 1);
        let mut cs = this;
        while cs < le && is_blank(b[cs]) {
            cs += 1;
        }
        let indent = cs - this;
        let ce = trim_end_at(b, cs, le);
        let line = &src[cs..ce];
        if line.is_empty() {
            continue;
        }
        if let Some((key_indent, path, secret)) = &current {
            if indent > *key_indent {
                let path = path.clone();
                if *secret {
                    out.redact_whole(&path, cs..ce, line, REDACTED);
                } else if let Some((k, vr)) = ini_pair(src, cs, ce) {
                    if out.secret(k) {
                        let value = src[vr.clone()].to_string();
                        out.redact_whole(&path, vr, &value, REDACTED);
                    } else {
                        out.scan_value(&path, &Mapped::verbatim(src, cs..ce));
                    }
                } else {
                    out.scan_value(&path, &Mapped::verbatim(src, cs..ce));
                }
                continue;
            }
        }
        current = None;
        if line.starts_with('#') || line.starts_with(';') {
            out.comment(src, cs + 1..ce);
            continue;
        }
        if line.starts_with('[') {
            let Some(close) = line.find(']') else {
                return Err(at_line(src, this, "section header without ]"));
            };
            let after = line[close + 1..].trim();
            if !(after.is_empty() || after.starts_with('#') || after.starts_with(';')) {
                return Err(at_line(src, this, "text after a section header"));
            }
            section = line[1..close].trim().to_string();
            section_secret = out.secret(&section);
            continue;
        }
        let (key, value) = match ini_pair(src, cs, ce) {
            Some((k, v)) => (k, Some(v)),
            None => (line, None),
        };
        if key.is_empty() {
            return Err(at_line(src, this, "a value without a key"));
        }
        let path = child(&section, key);
        let secret = section_secret || out.secret(key);
        if let Some(vr) = value {
            let (content, m) = ini_value(src, vr);
            if secret {
                out.redact_whole(&path, content, &m.text, REDACTED);
            } else {
                out.scan_value(&path, &m);
            }
        }
        current = Some((indent, path, secret));
    }
    Ok(())
}

/// `key = value` / `key: value` on `src[cs..ce]`: the trimmed key and the value's range.
fn ini_pair(src: &str, cs: usize, ce: usize) -> Option<(&str, Range<usize>)> {
    let line = &src[cs..ce];
    let sep = line.find(['=', ':'])?;
    let key = line[..sep].trim();
    let mut vs = cs + sep + 1;
    while vs < ce && is_blank(src.as_bytes()[vs]) {
        vs += 1;
    }
    Some((key, vs..ce))
}

/// A value's content: inside its quotes when it is quoted and they close, else all of it.
fn ini_value(src: &str, vr: Range<usize>) -> (Range<usize>, Mapped) {
    let b = src.as_bytes();
    if let Some(&q @ (b'"' | b'\'')) = b.get(vr.start).filter(|_| vr.start < vr.end) {
        let mut i = vr.start + 1;
        while i < vr.end {
            if b[i] == b'\\' {
                i += 2;
                continue;
            }
            if b[i] == q {
                let content = vr.start + 1..i;
                return (content.clone(), Mapped::verbatim(src, content));
            }
            i += 1;
        }
    }
    (vr.clone(), Mapped::verbatim(src, vr))
}

// ---------------------------------------------------------------------------------------------
// JSON: a strict RFC 8259 reader that keeps every value's span; `//` and `/* */` comments and
// trailing commas (VS Code's settings.json, tsconfig.json) are tolerated.

const MAX_DEPTH: usize = 256;

fn scan_json(src: &str, start: usize, out: &mut Out) -> Scan {
    let mut p = Json {
        s: src,
        b: src.as_bytes(),
        pos: start,
        depth: 0,
    };
    p.ws()?;
    if p.pos >= p.b.len() {
        return Ok(()); // nothing but whitespace: nothing to redact
    }
    p.value("", false, out)?;
    p.ws()?;
    if p.pos < p.b.len() {
        return Err(p.err("text after the JSON value"));
    }
    Ok(())
}

struct Json<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Json<'_> {
    fn err(&self, what: &str) -> Unparsable {
        at_line(self.s, self.pos, what)
    }

    fn ws(&mut self) -> Scan {
        loop {
            match self.b.get(self.pos) {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.pos += 1,
                Some(b'/') if self.b.get(self.pos + 1) == Some(&b'/') => {
                    while self.pos < self.b.len() && self.b[self.pos] != b'\n' {
                        self.pos += 1;
                    }
                }
                Some(b'/') if self.b.get(self.pos + 1) == Some(&b'*') => {
                    let Some(end) = self.s[self.pos + 2..].find("*/") else {
                        return Err(self.err("comment never closed"));
                    };
                    self.pos += 2 + end + 2;
                }
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self, path: &str, secret: bool, out: &mut Out) -> Scan {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        match self.b.get(self.pos) {
            Some(b'{') => {
                self.pos += 1;
                loop {
                    self.ws()?;
                    match self.b.get(self.pos) {
                        Some(b'}') => {
                            self.pos += 1;
                            break;
                        }
                        Some(b'"') => {}
                        _ => return Err(self.err("expected a key in quotes")),
                    }
                    let (_, key) = self.string()?;
                    self.ws()?;
                    if self.b.get(self.pos) != Some(&b':') {
                        return Err(self.err("expected : after a key"));
                    }
                    self.pos += 1;
                    self.ws()?;
                    let key = key.text;
                    let s = secret || out.secret(&key);
                    self.value(&child(path, &key), s, out)?;
                    self.ws()?;
                    match self.b.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            break;
                        }
                        _ => return Err(self.err("expected , or }")),
                    }
                }
            }
            Some(b'[') => {
                self.pos += 1;
                let mut i = 0;
                loop {
                    self.ws()?;
                    if self.b.get(self.pos) == Some(&b']') {
                        self.pos += 1;
                        break;
                    }
                    self.value(&index(path, i), secret, out)?;
                    i += 1;
                    self.ws()?;
                    match self.b.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            break;
                        }
                        _ => return Err(self.err("expected , or ]")),
                    }
                }
            }
            Some(b'"') => {
                let (content, m) = self.string()?;
                if secret {
                    out.redact_whole(path, content, &m.text, REDACTED);
                } else {
                    out.scan_value(path, &m);
                }
            }
            Some(b't' | b'f' | b'n') => {
                let word = ["true", "false", "null"]
                    .into_iter()
                    .find(|w| self.s[self.pos..].starts_with(w))
                    .ok_or_else(|| self.err("unexpected word"))?;
                self.pos += word.len();
            }
            Some(b'-' | b'0'..=b'9') => {
                let r = self.number()?;
                if secret {
                    out.edit(r, format!("\"{REDACTED}\""));
                    out.report(path);
                }
            }
            _ => return Err(self.err("expected a value")),
        }
        self.depth -= 1;
        Ok(())
    }

    /// A string at `pos`: the range inside its quotes and its decoded text.
    fn string(&mut self) -> Scan<(Range<usize>, Mapped)> {
        let open = self.pos;
        self.pos += 1;
        let mut m = Mapped::default();
        loop {
            let Some(&c) = self.b.get(self.pos) else {
                return Err(at_line(self.s, open, "string never closed"));
            };
            match c {
                b'"' => break,
                b'\\' => {
                    let at = self.pos;
                    let (ch, len) = match self.b.get(at + 1) {
                        Some(b'"') => ('"', 2),
                        Some(b'\\') => ('\\', 2),
                        Some(b'/') => ('/', 2),
                        Some(b'b') => ('\u{8}', 2),
                        Some(b'f') => ('\u{c}', 2),
                        Some(b'n') => ('\n', 2),
                        Some(b'r') => ('\r', 2),
                        Some(b't') => ('\t', 2),
                        Some(b'u') => {
                            let hi = self.hex4(at + 2)?;
                            if (0xD800..0xDC00).contains(&hi) && self.s[at + 6..].starts_with("\\u")
                            {
                                let lo = self.hex4(at + 8)?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    let code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                                    (char::from_u32(code).unwrap_or('\u{fffd}'), 12)
                                } else {
                                    ('\u{fffd}', 6)
                                }
                            } else {
                                (char::from_u32(hi).unwrap_or('\u{fffd}'), 6)
                            }
                        }
                        _ => return Err(self.err("invalid escape in a string")),
                    };
                    m.push(ch, at);
                    self.pos += len;
                }
                0..=0x1f => return Err(self.err("control character in a string")),
                _ => {
                    let ch = self.s[self.pos..].chars().next().unwrap_or('\0');
                    m.push(ch, self.pos);
                    self.pos += ch.len_utf8();
                }
            }
        }
        m.end(self.pos);
        let content = open + 1..self.pos;
        self.pos += 1;
        Ok((content, m))
    }

    fn hex4(&self, at: usize) -> Scan<u32> {
        self.s
            .get(at..at + 4)
            .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.err("invalid \\u escape"))
    }

    fn number(&mut self) -> Scan<Range<usize>> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let s = p.pos;
            while p.b.get(p.pos).is_some_and(|c| c.is_ascii_digit()) {
                p.pos += 1;
            }
            p.pos > s
        };
        if self.b.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        if self.b.get(self.pos) == Some(&b'0') {
            self.pos += 1;
        } else if !digits(self) {
            return Err(self.err("invalid number"));
        }
        if self.b.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if !digits(self) {
                return Err(self.err("invalid number"));
            }
        }
        if matches!(self.b.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.b.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !digits(self) {
                return Err(self.err("invalid number"));
            }
        }
        Ok(start..self.pos)
    }
}

// ---------------------------------------------------------------------------------------------
// TOML, with toml_edit: its `Document` keeps each value's span in the original text, and only
// those spans are rewritten, so every other byte stays as it was.

fn scan_toml(src: &str, start: usize, out: &mut Out) -> Scan {
    let body = &src[start..];
    let doc = toml_edit::Document::parse(body).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        let what = e.message().lines().next().unwrap_or("syntax error");
        Unparsable(format!("line {}: {what}", line_of(body, at)))
    })?;
    let mut w = TomlWalk { src, start, out };
    w.table(doc.as_table(), "", false)
}

struct TomlWalk<'s, 'o, 'r> {
    src: &'s str,
    start: usize,
    out: &'o mut Out<'r>,
}

impl TomlWalk<'_, '_, '_> {
    fn table(&mut self, t: &toml_edit::Table, path: &str, secret: bool) -> Scan {
        for (k, item) in t.iter() {
            let s = secret || self.out.secret(k);
            self.item(item, &child(path, k), s)?;
        }
        Ok(())
    }

    fn item(&mut self, item: &toml_edit::Item, path: &str, secret: bool) -> Scan {
        match item {
            toml_edit::Item::None => Ok(()),
            toml_edit::Item::Value(v) => self.value(v, path, secret),
            toml_edit::Item::Table(t) => self.table(t, path, secret),
            toml_edit::Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    self.table(t, &index(path, i), secret)?;
                }
                Ok(())
            }
        }
    }

    fn span(&self, v: &toml_edit::Value) -> Scan<Range<usize>> {
        let r = v
            .span()
            .ok_or_else(|| Unparsable("internal error: a TOML value without a span".into()))?;
        Ok(r.start + self.start..r.end + self.start)
    }

    fn value(&mut self, v: &toml_edit::Value, path: &str, secret: bool) -> Scan {
        use toml_edit::Value as V;
        match v {
            V::String(s) => {
                let span = self.span(v)?;
                let raw = &self.src[span.clone()];
                let delim = ["\"\"\"", "'''", "\"", "'"]
                    .into_iter()
                    .find(|d| raw.starts_with(d) && raw.ends_with(d) && raw.len() >= 2 * d.len())
                    .ok_or_else(|| Unparsable("internal error: a TOML string span".into()))?;
                let content = span.start + delim.len()..span.end - delim.len();
                let value = s.value();
                if secret {
                    self.out.redact_whole(path, content, value, REDACTED);
                    return Ok(());
                }
                let found = self.out.redactor.inline_secrets(value);
                if found.is_empty() {
                    return Ok(());
                }
                // Where the text between the delimiters is the value itself (no escapes, no
                // trimmed first newline), replace just the secret parts in place.
                let mut inner = content.clone();
                if delim.len() == 3 {
                    let c = &self.src[inner.clone()];
                    inner.start += if c.starts_with("\r\n") {
                        2
                    } else if c.starts_with('\n') {
                        1
                    } else {
                        0
                    };
                }
                if &self.src[inner.clone()] == value {
                    for r in found {
                        self.out
                            .edit(inner.start + r.start..inner.start + r.end, REDACTED);
                    }
                } else {
                    // Escapes: rewrite the whole string, the rest of its text kept.
                    let mut redacted = String::new();
                    let mut at = 0;
                    for r in found {
                        redacted.push_str(&value[at..r.start]);
                        redacted.push_str(REDACTED);
                        at = r.end;
                    }
                    redacted.push_str(&value[at..]);
                    let repr = toml_edit::Formatted::new(redacted)
                        .display_repr()
                        .into_owned();
                    self.out.edit(span, repr);
                }
                self.out.report(path);
                Ok(())
            }
            V::Integer(_) | V::Float(_) | V::Datetime(_) => {
                if secret {
                    let span = self.span(v)?;
                    self.out.edit(span, format!("\"{REDACTED}\""));
                    self.out.report(path);
                }
                Ok(())
            }
            V::Boolean(_) => Ok(()),
            V::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    self.value(v, &index(path, i), secret)?;
                }
                Ok(())
            }
            V::InlineTable(t) => {
                for (k, v) in t.iter() {
                    let s = secret || self.out.secret(k);
                    self.value(v, &child(path, k), s)?;
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// YAML: a reader for the block and flow YAML that configuration files use (mappings,
// sequences, plain / quoted / block scalars, flow collections, anchors, aliases, tags,
// comments, several documents), keeping each scalar's span. Forms it does not read — complex
// `? ` keys, a mapping as a flow key, tabs as indentation, bad indentation — refuse the file.

fn scan_yaml(src: &str, start: usize, out: &mut Out) -> Scan {
    let mut p = Yaml {
        s: src,
        b: src.as_bytes(),
        start,
        pos: start,
        depth: 0,
    };
    let docs = p.stream()?;
    let mut anchors: HashMap<&str, Vec<&YNode>> = HashMap::new();
    for d in &docs {
        collect_anchors(d, &mut anchors);
    }
    let mut chain = Vec::new();
    for d in &docs {
        walk_yaml(d, "", false, &anchors, &mut chain, out);
    }
    Ok(())
}

#[derive(Debug)]
enum YNode {
    Null,
    Scalar(YScalar),
    Map(Vec<(String, YNode)>),
    Seq(Vec<YNode>),
    Alias(String),
    Anchored(String, Box<YNode>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum YStyle {
    Plain,
    Quoted,
    Block,
}

#[derive(Debug)]
struct YScalar {
    style: YStyle,
    /// What a whole redaction replaces: the plain text, the inside of the quotes, or the
    /// content lines of a block scalar (from the first line's start, indentation included).
    content: Range<usize>,
    /// A block scalar's content indentation.
    indent: usize,
    /// The tag (`!!int `, `!vault `) with the blanks after it: dropped with the value.
    tag: Option<Range<usize>>,
    text: Mapped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// At the start of a line's content.
    Block,
    /// After `- ` on the same line: a mapping may start here.
    SeqEntry,
    /// After `key: ` on the same line: no mapping or sequence may start here.
    MapValue,
}

fn collect_anchors<'n>(node: &'n YNode, map: &mut HashMap<&'n str, Vec<&'n YNode>>) {
    match node {
        YNode::Anchored(name, inner) => {
            map.entry(name.as_str()).or_default().push(inner);
            collect_anchors(inner, map);
        }
        YNode::Map(entries) => entries.iter().for_each(|(_, v)| collect_anchors(v, map)),
        YNode::Seq(items) => items.iter().for_each(|v| collect_anchors(v, map)),
        YNode::Null | YNode::Scalar(_) | YNode::Alias(_) => {}
    }
}

fn walk_yaml<'n>(
    node: &'n YNode,
    path: &str,
    secret: bool,
    anchors: &HashMap<&'n str, Vec<&'n YNode>>,
    chain: &mut Vec<&'n str>,
    out: &mut Out,
) {
    match node {
        YNode::Null => {}
        YNode::Anchored(_, inner) => walk_yaml(inner, path, secret, anchors, chain, out),
        YNode::Scalar(s) if secret => {
            let t = s.text.text.as_str();
            let plain_nothing = s.style == YStyle::Plain
                && s.tag.is_none()
                && matches!(
                    t,
                    "~" | "null"
                        | "Null"
                        | "NULL"
                        | "true"
                        | "True"
                        | "TRUE"
                        | "false"
                        | "False"
                        | "FALSE"
                );
            if plain_nothing || t.trim().is_empty() || is_reference(t.trim()) {
                return;
            }
            if let Some(tag) = &s.tag {
                out.edit(tag.clone(), "");
            }
            let text = match s.style {
                YStyle::Block => format!("{}{REDACTED}", " ".repeat(s.indent)),
                YStyle::Plain | YStyle::Quoted => REDACTED.to_string(),
            };
            out.edit(s.content.clone(), text);
            out.report(path);
        }
        YNode::Scalar(s) => out.scan_value(path, &s.text),
        YNode::Map(entries) => {
            for (k, v) in entries {
                let s = secret || out.secret(k);
                walk_yaml(v, &child(path, k), s, anchors, chain, out);
            }
        }
        YNode::Seq(items) => {
            for (i, v) in items.iter().enumerate() {
                walk_yaml(v, &index(path, i), secret, anchors, chain, out);
            }
        }
        YNode::Alias(name) => {
            // A secret key whose value is an alias: redact what the anchor holds, wherever it is.
            if secret && !chain.contains(&name.as_str()) {
                if let Some((&key, nodes)) = anchors.get_key_value(name.as_str()) {
                    chain.push(key);
                    for n in nodes {
                        walk_yaml(n, path, true, anchors, chain, out);
                    }
                    chain.pop();
                }
            }
        }
    }
}

struct Yaml<'a> {
    s: &'a str,
    b: &'a [u8],
    /// Where the text starts (after a byte-order mark).
    start: usize,
    pos: usize,
    depth: usize,
}

fn is_flow_indicator(c: u8) -> bool {
    matches!(c, b',' | b'[' | b']' | b'{' | b'}')
}

impl Yaml<'_> {
    fn err(&self, what: &str) -> Unparsable {
        at_line(self.s, self.pos, what)
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }
    fn is_eol_at(&self, i: usize) -> bool {
        matches!(self.b.get(i), None | Some(b'\n' | b'\r'))
    }
    fn blank_or_eol_after(&self, i: usize) -> bool {
        matches!(self.b.get(i + 1), None | Some(b' ' | b'\t' | b'\n' | b'\r'))
    }
    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }
    fn skip_eol(&mut self) {
        match self.peek() {
            Some(b'\r') => {
                self.pos += 1;
                if self.peek() == Some(b'\n') {
                    self.pos += 1;
                }
            }
            Some(b'\n') => self.pos += 1,
            _ => {}
        }
    }
    fn at_comment_or_eol(&self) -> bool {
        self.is_eol_at(self.pos) || self.peek() == Some(b'#')
    }
    /// The rest of the line must be blanks and perhaps a comment; moves to the next line.
    fn finish_line(&mut self) -> Scan {
        self.skip_blanks();
        if self.peek() == Some(b'#') {
            while !self.is_eol_at(self.pos) {
                self.pos += 1;
            }
        }
        if !self.is_eol_at(self.pos) {
            return Err(self.err("unexpected text after a value"));
        }
        self.skip_eol();
        Ok(())
    }
    fn line_start(&self, pos: usize) -> usize {
        self.s[..pos]
            .rfind(['\n', '\r'])
            .map_or(self.start, |i| (i + 1).max(self.start))
    }
    fn col(&self) -> usize {
        self.pos - self.line_start(self.pos)
    }
    fn at_doc_marker(&self) -> bool {
        self.col() == 0
            && (self.s[self.pos..].starts_with("---") || self.s[self.pos..].starts_with("..."))
            && self.blank_or_eol_after(self.pos + 2)
    }
    fn at_seq_entry(&self) -> bool {
        self.peek() == Some(b'-') && self.blank_or_eol_after(self.pos)
    }

    /// Skip blank and comment lines; stop at the next content, returning its indentation.
    fn next_content(&mut self) -> Scan<Option<usize>> {
        if self.pos >= self.b.len() {
            return Ok(None);
        }
        // Called at a line start, or at a line's content with only indentation before it.
        let ls = self.line_start(self.pos);
        if !self.b[ls..self.pos].iter().all(|&c| c == b' ') {
            return Err(self.err("internal error: lost the line structure"));
        }
        self.pos = ls;
        loop {
            if self.pos >= self.b.len() {
                return Ok(None);
            }
            let ls = self.pos;
            let mut i = ls;
            while self.b.get(i) == Some(&b' ') {
                i += 1;
            }
            let mut j = i;
            while matches!(self.b.get(j), Some(b' ' | b'\t')) {
                j += 1;
            }
            if self.is_eol_at(j) || self.b[j] == b'#' {
                self.pos = j;
                while !self.is_eol_at(self.pos) {
                    self.pos += 1;
                }
                self.skip_eol();
                continue;
            }
            if j != i {
                self.pos = i;
                return Err(self.err("a tab in indentation"));
            }
            self.pos = i;
            return Ok(Some(i - ls));
        }
    }

    fn stream(&mut self) -> Scan<Vec<YNode>> {
        let mut docs = Vec::new();
        while self.next_content()?.is_some() {
            if self.col() == 0
                && (self.s[self.pos..].starts_with("%YAML ")
                    || self.s[self.pos..].starts_with("%TAG "))
            {
                while !self.is_eol_at(self.pos) {
                    self.pos += 1;
                }
                self.skip_eol();
                continue;
            }
            if self.at_doc_marker() {
                let start = self.peek() == Some(b'-');
                self.pos += 3;
                self.skip_blanks();
                if start && !self.at_comment_or_eol() {
                    docs.push(self.node(-1, Ctx::MapValue)?);
                } else {
                    self.finish_line()?;
                }
                continue;
            }
            docs.push(self.node(-1, Ctx::Block)?);
        }
        Ok(docs)
    }

    /// A node at `pos`, inside a block whose indentation is `parent`. Returns at a line start.
    fn node(&mut self, parent: isize, ctx: Ctx) -> Scan<YNode> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        let (anchor, tag) = self.properties()?;
        let mut node = if (anchor.is_some() || tag.is_some()) && self.at_comment_or_eol() {
            self.finish_line()?;
            self.value_below(parent, ctx == Ctx::MapValue)?
        } else {
            self.content(parent, ctx)?
        };
        if let YNode::Scalar(s) = &mut node {
            if s.tag.is_none() {
                s.tag = tag;
            }
        }
        self.depth -= 1;
        Ok(match anchor {
            Some(a) => YNode::Anchored(a, Box::new(node)),
            None => node,
        })
    }

    /// The value of a key (or `- `) whose line ended: on the lines below, or null.
    fn value_below(&mut self, parent: isize, map_value: bool) -> Scan<YNode> {
        match self.next_content()? {
            Some(m) if m as isize > parent && !self.at_doc_marker() => {
                self.node(parent, Ctx::Block)
            }
            Some(m) if map_value && m as isize == parent && self.at_seq_entry() => {
                self.block_seq(m)
            }
            _ => Ok(YNode::Null),
        }
    }

    fn content(&mut self, parent: isize, ctx: Ctx) -> Scan<YNode> {
        let n = self.col();
        let Some(c) = self.peek() else {
            return Ok(YNode::Null);
        };
        match c {
            b'-' if self.blank_or_eol_after(self.pos) => {
                if ctx == Ctx::MapValue {
                    return Err(self.err("a sequence cannot start on the line of its key"));
                }
                self.block_seq(n)
            }
            b'?' if self.blank_or_eol_after(self.pos) => {
                Err(self.err("complex mapping keys (\"? \") are not supported"))
            }
            b'|' | b'>' => self.block_scalar(parent),
            b'[' | b'{' => {
                let f = self.flow()?;
                self.finish_line()?;
                Ok(f)
            }
            b'*' => {
                let name = self.alias()?;
                self.finish_line()?;
                Ok(YNode::Alias(name))
            }
            b'@' | b'`' => Err(self.err("a value cannot start with @ or `")),
            _ => {
                if self.is_key_line() {
                    if ctx == Ctx::MapValue {
                        return Err(self.err("a mapping cannot start on the line of its key"));
                    }
                    return self.block_map(n);
                }
                if c == b'"' || c == b'\'' {
                    let s = self.quoted()?;
                    self.finish_line()?;
                    Ok(YNode::Scalar(s))
                } else {
                    self.plain(parent)
                }
            }
        }
    }

    /// Whether the line from `pos` is `key: …` (a plain or quoted key).
    fn is_key_line(&self) -> bool {
        let b = self.b;
        let mut i = self.pos;
        match b.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                i += 1;
                loop {
                    if self.is_eol_at(i) {
                        return false;
                    }
                    if q == b'"' && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == q {
                        if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    i += 1;
                }
                while matches!(b.get(i), Some(b' ' | b'\t')) {
                    i += 1;
                }
                b.get(i) == Some(&b':') && self.blank_or_eol_after(i)
            }
            _ => {
                while !self.is_eol_at(i) {
                    if b[i] == b'#' && i > self.pos && matches!(b[i - 1], b' ' | b'\t') {
                        return false;
                    }
                    if b[i] == b':' && self.blank_or_eol_after(i) {
                        return true;
                    }
                    i += 1;
                }
                false
            }
        }
    }

    /// `&anchor` and `!tag` before a node; returns the anchor's name and the tag's range.
    fn properties(&mut self) -> Scan<(Option<String>, Option<Range<usize>>)> {
        let (mut anchor, mut tag) = (None, None);
        loop {
            match self.peek() {
                Some(b'&') => {
                    self.pos += 1;
                    let start = self.pos;
                    self.token();
                    if start == self.pos {
                        return Err(self.err("an anchor without a name"));
                    }
                    anchor = Some(self.s[start..self.pos].to_string());
                    self.skip_blanks();
                }
                Some(b'!') => {
                    let start = self.pos;
                    if self.s[self.pos..].starts_with("!<") {
                        let close = self.s[self.pos..]
                            .find('>')
                            .filter(|&i| !self.s[self.pos..self.pos + i].contains(['\n', '\r']))
                            .ok_or_else(|| self.err("a tag never closed"))?;
                        self.pos += close + 1;
                    } else {
                        self.token();
                    }
                    self.skip_blanks();
                    tag = Some(start..self.pos);
                }
                _ => return Ok((anchor, tag)),
            }
        }
    }

    /// Skip to the next blank, line end or flow indicator.
    fn token(&mut self) {
        while let Some(c) = self.peek() {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') || is_flow_indicator(c) {
                break;
            }
            self.pos += 1;
        }
    }

    fn alias(&mut self) -> Scan<String> {
        self.pos += 1;
        let start = self.pos;
        self.token();
        if start == self.pos {
            return Err(self.err("an alias without a name"));
        }
        Ok(self.s[start..self.pos].to_string())
    }

    fn block_map(&mut self, n: usize) -> Scan<YNode> {
        let mut entries = Vec::new();
        loop {
            let key = self.map_key()?;
            self.skip_blanks();
            let value = if self.at_comment_or_eol() {
                self.finish_line()?;
                self.value_below(n as isize, true)?
            } else {
                self.node(n as isize, Ctx::MapValue)?
            };
            entries.push((key, value));
            match self.next_content()? {
                Some(m) if m == n && !self.at_doc_marker() => continue,
                Some(m) if m > n => return Err(self.err("unexpected indentation")),
                _ => break,
            }
        }
        Ok(YNode::Map(entries))
    }

    /// A key and its `:`.
    fn map_key(&mut self) -> Scan<String> {
        let _ = self.properties()?;
        let key = match self.peek() {
            Some(b'"' | b'\'') => self.quoted()?.text.text,
            Some(b'?') if self.blank_or_eol_after(self.pos) => {
                return Err(self.err("complex mapping keys (\"? \") are not supported"))
            }
            _ => {
                let start = self.pos;
                loop {
                    if self.is_eol_at(self.pos) {
                        return Err(self.err("expected a key and :"));
                    }
                    let c = self.b[self.pos];
                    if c == b':' && self.blank_or_eol_after(self.pos) {
                        break;
                    }
                    if c == b'#' && self.pos > start && matches!(self.b[self.pos - 1], b' ' | b'\t')
                    {
                        return Err(self.err("expected a key and :"));
                    }
                    self.pos += 1;
                }
                let key = self.s[start..self.pos].trim_end();
                if key.is_empty() {
                    return Err(self.err("an empty key"));
                }
                key.to_string()
            }
        };
        self.skip_blanks();
        if self.peek() != Some(b':') {
            return Err(self.err("expected : after a key"));
        }
        self.pos += 1;
        Ok(key)
    }

    fn block_seq(&mut self, c: usize) -> Scan<YNode> {
        let mut items = Vec::new();
        loop {
            self.pos += 1; // the '-'
            self.skip_blanks();
            let item = if self.at_comment_or_eol() {
                self.finish_line()?;
                self.value_below(c as isize, false)?
            } else {
                self.node(c as isize, Ctx::SeqEntry)?
            };
            items.push(item);
            match self.next_content()? {
                Some(m) if m == c && self.at_seq_entry() && !self.at_doc_marker() => continue,
                Some(m) if m > c => return Err(self.err("unexpected indentation")),
                _ => break,
            }
        }
        Ok(YNode::Seq(items))
    }

    /// A single- or double-quoted scalar at `pos` (may span lines); `pos` ends after it.
    fn quoted(&mut self) -> Scan<YScalar> {
        let open = self.pos;
        let q = self.b[open];
        self.pos += 1;
        let mut m = Mapped::default();
        loop {
            let Some(c) = self.peek() else {
                return Err(at_line(self.s, open, "quoted string never closed"));
            };
            if c == q {
                if q == b'\'' && self.b.get(self.pos + 1) == Some(&b'\'') {
                    m.push('\'', self.pos);
                    self.pos += 2;
                    continue;
                }
                break;
            }
            match c {
                b'\\' if q == b'"' => {
                    let at = self.pos;
                    if matches!(self.b.get(at + 1), Some(b'\n' | b'\r')) {
                        // An escaped line break joins the lines.
                        self.pos = at + 1;
                        self.skip_eol();
                        self.skip_blanks();
                        continue;
                    }
                    let (ch, len) = self.escape(at)?;
                    m.push(ch, at);
                    self.pos = at + len;
                }
                b'\n' | b'\r' => {
                    let at = self.pos;
                    self.skip_eol();
                    let mut blank = 0;
                    loop {
                        self.skip_blanks();
                        if matches!(self.peek(), Some(b'\n' | b'\r')) {
                            blank += 1;
                            self.skip_eol();
                        } else {
                            break;
                        }
                    }
                    if blank == 0 {
                        m.push(' ', at);
                    }
                    for _ in 0..blank {
                        m.push('\n', at);
                    }
                }
                _ => {
                    let ch = self.s[self.pos..].chars().next().unwrap_or('\0');
                    m.push(ch, self.pos);
                    self.pos += ch.len_utf8();
                }
            }
        }
        m.end(self.pos);
        let content = open + 1..self.pos;
        self.pos += 1;
        Ok(YScalar {
            style: YStyle::Quoted,
            content,
            indent: 0,
            tag: None,
            text: m,
        })
    }

    /// A double-quoted escape at `at`: the character and the escape's length.
    fn escape(&self, at: usize) -> Scan<(char, usize)> {
        let hex = |len: usize| -> Scan<(char, usize)> {
            self.s
                .get(at + 2..at + 2 + len)
                .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .map(|v| (char::from_u32(v).unwrap_or('\u{fffd}'), 2 + len))
                .ok_or_else(|| self.err("invalid escape"))
        };
        let ch = match self.b.get(at + 1) {
            Some(b'0') => '\0',
            Some(b'a') => '\u{7}',
            Some(b'b') => '\u{8}',
            Some(b't' | b'\t') => '\t',
            Some(b'n') => '\n',
            Some(b'v') => '\u{b}',
            Some(b'f') => '\u{c}',
            Some(b'r') => '\r',
            Some(b'e') => '\u{1b}',
            Some(b' ') => ' ',
            Some(b'"') => '"',
            Some(b'/') => '/',
            Some(b'\\') => '\\',
            Some(b'N') => '\u{85}',
            Some(b'_') => '\u{a0}',
            Some(b'L') => '\u{2028}',
            Some(b'P') => '\u{2029}',
            Some(b'x') => return hex(2),
            Some(b'u') => return hex(4),
            Some(b'U') => return hex(8),
            _ => return Err(self.err("invalid escape")),
        };
        Ok((ch, 2))
    }

    /// End of a plain scalar's text on the line from `i` (blanks trimmed), and whether a
    /// comment follows it.
    fn plain_line_end(&self, i: usize) -> (usize, bool) {
        let mut j = i;
        let mut comment = false;
        while !self.is_eol_at(j) {
            if self.b[j] == b'#' && j > i && matches!(self.b[j - 1], b' ' | b'\t') {
                comment = true;
                break;
            }
            j += 1;
        }
        let mut e = j;
        while e > i && matches!(self.b[e - 1], b' ' | b'\t') {
            e -= 1;
        }
        (e, comment)
    }

    /// A plain scalar in block context; it goes on over lines indented deeper than `parent`.
    fn plain(&mut self, parent: isize) -> Scan<YNode> {
        let start = self.pos;
        let mut m = Mapped::default();
        let (end, mut comment) = self.plain_line_end(start);
        m.push_verbatim(self.s, start..end);
        let mut last = end;
        self.pos = end;
        self.finish_line()?;
        while !comment {
            let save = self.pos;
            let mut blank_lines = 0;
            let i = loop {
                let mut i = self.pos;
                while self.b.get(i) == Some(&b' ') {
                    i += 1;
                }
                if i < self.b.len() && matches!(self.b[i], b'\n' | b'\r') {
                    self.pos = i;
                    self.skip_eol();
                    blank_lines += 1;
                    continue;
                }
                break i;
            };
            let indent = i - self.pos;
            if i >= self.b.len() || indent as isize <= parent || matches!(self.b[i], b'#' | b'\t') {
                self.pos = save;
                break;
            }
            if indent == 0 {
                self.pos = i;
                if self.at_doc_marker() {
                    self.pos = save;
                    break;
                }
            }
            let (e, c) = self.plain_line_end(i);
            let line = &self.s[i..e];
            if line.ends_with(':') || line.contains(": ") || line.contains(":\t") {
                self.pos = i;
                return Err(self.err("a plain value goes on over a line that looks like a key"));
            }
            if blank_lines == 0 {
                m.push(' ', last);
            }
            for _ in 0..blank_lines {
                m.push('\n', last);
            }
            m.push_verbatim(self.s, i..e);
            last = e;
            self.pos = e;
            self.finish_line()?;
            comment = c;
        }
        m.end(last);
        Ok(YNode::Scalar(YScalar {
            style: YStyle::Plain,
            content: start..last,
            indent: 0,
            tag: None,
            text: m,
        }))
    }

    /// `|` or `>` with its indicators, then the content lines.
    fn block_scalar(&mut self, parent: isize) -> Scan<YNode> {
        self.pos += 1;
        let mut explicit = None;
        for _ in 0..2 {
            match self.peek() {
                Some(d @ b'1'..=b'9') => {
                    explicit = Some((d - b'0') as usize);
                    self.pos += 1;
                }
                Some(b'+' | b'-') => self.pos += 1,
                _ => {}
            }
        }
        if !(matches!(self.peek(), Some(b' ' | b'\t')) || self.at_comment_or_eol()) {
            return Err(self.err("a bad block scalar header"));
        }
        self.finish_line()?;
        let content_start = self.pos;
        let b = self.b;
        let indent = match explicit {
            Some(d) => Some(parent.max(0) as usize + d),
            None => {
                let mut i = content_start;
                loop {
                    let ls = i;
                    while b.get(i) == Some(&b' ') {
                        i += 1;
                    }
                    if i < b.len() && matches!(b[i], b'\n' | b'\r') {
                        i = self.next_line(i);
                        continue;
                    }
                    let m = i - ls;
                    break (i < b.len() && m as isize > parent).then_some(m);
                }
            }
        };
        let mut m = Mapped::default();
        let mut last: Option<usize> = None; // end of the last content line
        let mut pending: Vec<usize> = Vec::new(); // line breaks not yet known to be content
        let mut i = content_start;
        let mut resume = content_start;
        while let (Some(indent), true) = (indent, i < b.len()) {
            let ls = i;
            let mut j = ls;
            while b.get(j) == Some(&b' ') {
                j += 1;
            }
            if self.is_eol_at(j) {
                pending.push(j);
                i = self.next_line(j);
                continue;
            }
            let doc_marker = j == ls
                && (self.s[ls..].starts_with("---") || self.s[ls..].starts_with("..."))
                && self.blank_or_eol_after(ls + 2);
            if j - ls < indent || doc_marker {
                break;
            }
            let mut e = j;
            while !self.is_eol_at(e) {
                e += 1;
            }
            for &at in &pending {
                m.push('\n', at);
            }
            pending.clear();
            m.push_verbatim(self.s, ls + indent..e);
            pending.push(e);
            last = Some(e);
            i = self.next_line(e);
            resume = i;
        }
        let end = last.unwrap_or(content_start);
        m.end(end);
        self.pos = resume;
        Ok(YNode::Scalar(YScalar {
            style: YStyle::Block,
            content: content_start..end,
            indent: indent.unwrap_or(0),
            tag: None,
            text: m,
        }))
    }

    /// The start of the line after the line break at `eol` (a line end position).
    fn next_line(&self, eol: usize) -> usize {
        match self.b.get(eol) {
            Some(b'\r') if self.b.get(eol + 1) == Some(&b'\n') => eol + 2,
            Some(b'\n' | b'\r') => eol + 1,
            _ => eol,
        }
    }

    fn flow_ws(&mut self) -> Scan {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.pos += 1,
                Some(b'#') => {
                    while !self.is_eol_at(self.pos) {
                        self.pos += 1;
                    }
                }
                None => return Err(self.err("flow collection never closed")),
                _ => return Ok(()),
            }
        }
    }

    /// `[…]` or `{…}` at `pos`, over as many lines as it takes; `pos` ends after it.
    fn flow(&mut self) -> Scan<YNode> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        let open = self.b[self.pos];
        let close = if open == b'[' { b']' } else { b'}' };
        self.pos += 1;
        let mut seq = Vec::new();
        let mut map = Vec::new();
        loop {
            self.flow_ws()?;
            if self.peek() == Some(close) {
                self.pos += 1;
                break;
            }
            if open == b'{' {
                let _ = self.properties()?;
                let key = match self.peek() {
                    Some(b'"' | b'\'') => self.quoted()?.text.text,
                    Some(b'[' | b'{') => return Err(self.err("a collection as a key")),
                    _ => {
                        let r = self.flow_plain();
                        self.s[r].to_string()
                    }
                };
                self.flow_ws()?;
                let value = if self.peek() == Some(b':') {
                    self.pos += 1;
                    self.flow_ws()?;
                    self.flow_value()?
                } else {
                    YNode::Null
                };
                map.push((key, value));
            } else {
                let v = self.flow_value()?;
                self.flow_ws()?;
                if self.peek() == Some(b':') {
                    // `[key: value]`: a one-pair mapping.
                    let YNode::Scalar(k) = v else {
                        return Err(self.err("a collection as a key"));
                    };
                    self.pos += 1;
                    self.flow_ws()?;
                    let value = self.flow_value()?;
                    seq.push(YNode::Map(vec![(k.text.text, value)]));
                } else {
                    seq.push(v);
                }
            }
            self.flow_ws()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(c) if c == close => {
                    self.pos += 1;
                    break;
                }
                _ => return Err(self.err("expected , or the end of the flow collection")),
            }
        }
        self.depth -= 1;
        Ok(if open == b'[' {
            YNode::Seq(seq)
        } else {
            YNode::Map(map)
        })
    }

    fn flow_value(&mut self) -> Scan<YNode> {
        let (anchor, tag) = self.properties()?;
        let mut node = match self.peek() {
            Some(b'[' | b'{') => self.flow()?,
            Some(b'"' | b'\'') => YNode::Scalar(self.quoted()?),
            Some(b'*') => YNode::Alias(self.alias()?),
            Some(b',' | b']' | b'}') | None => YNode::Null,
            _ => {
                let r = self.flow_plain();
                if r.is_empty() {
                    return Err(self.err("expected a value"));
                }
                YNode::Scalar(YScalar {
                    style: YStyle::Plain,
                    content: r.clone(),
                    indent: 0,
                    tag: None,
                    text: Mapped::verbatim(self.s, r),
                })
            }
        };
        if let YNode::Scalar(s) = &mut node {
            s.tag = tag;
        }
        Ok(match anchor {
            Some(a) => YNode::Anchored(a, Box::new(node)),
            None => node,
        })
    }

    /// A plain scalar inside a flow collection (one line); `pos` ends after its text.
    fn flow_plain(&mut self) -> Range<usize> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            let stop = match c {
                b'\n' | b'\r' => true,
                c if is_flow_indicator(c) => true,
                b'#' => self.pos > start && matches!(self.b[self.pos - 1], b' ' | b'\t'),
                b':' => matches!(
                    self.b.get(self.pos + 1),
                    None | Some(b' ' | b'\t' | b'\n' | b'\r' | b',' | b'[' | b']' | b'{' | b'}')
                ),
                _ => false,
            };
            if stop {
                break;
            }
            self.pos += 1;
        }
        let mut end = self.pos;
        while end > start && matches!(self.b[end - 1], b' ' | b'\t') {
            end -= 1;
        }
        start..end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A fixture written after its opening quote's line break.
    fn t(s: &'static str) -> &'static str {
        &s[1..]
    }

    fn defaults() -> Redactor {
        Redactor::new(&Redactor::default_patterns()).expect("the default patterns are valid")
    }

    /// Redact `input`, check what every result must hold — accepted, none of `secrets` in the
    /// output or the keys, a second pass changes nothing — and return the text and keys.
    fn run(r: &Redactor, format: Format, input: &str, secrets: &[&str]) -> (String, Vec<String>) {
        for s in secrets {
            assert!(input.contains(s), "fixture lacks {s:?}");
        }
        let out = r.redact(format, input.as_bytes());
        assert_eq!(out.warning, None, "{format} input refused");
        assert!(!out.failed());
        let text = String::from_utf8(out.data.clone()).expect("output is UTF-8");
        for s in secrets {
            assert!(
                !text.contains(s),
                "secret {s:?} left in the output:\n{text}"
            );
            assert!(
                out.keys.iter().all(|k| !k.contains(s)),
                "secret {s:?} in keys {:?}",
                out.keys
            );
        }
        let again = r.redact(format, &out.data);
        assert_eq!(again.warning, None);
        assert_eq!(
            String::from_utf8_lossy(&again.data),
            text,
            "a second pass changed the output"
        );
        (text, out.keys)
    }

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|k| k.to_string()).collect()
    }

    /// Same structure; every scalar equal, or replaced (wholly or in part) by REDACTED.
    fn same_shape(before: &serde_json::Value, after: &serde_json::Value, path: &str) {
        use serde_json::Value as V;
        match (before, after) {
            (V::Object(a), V::Object(b)) => {
                let ak: Vec<_> = a.keys().collect();
                let bk: Vec<_> = b.keys().collect();
                assert_eq!(ak, bk, "keys differ at {path}");
                for (k, v) in a {
                    same_shape(v, &b[k], &child(path, k));
                }
            }
            (V::Array(a), V::Array(b)) => {
                assert_eq!(a.len(), b.len(), "length differs at {path}");
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    same_shape(x, y, &index(path, i));
                }
            }
            (x, y) if x == y => {}
            (_, V::String(s)) if s.contains(REDACTED) => {}
            (x, y) => panic!("{path}: {x:?} became {y:?}"),
        }
    }

    // ---- names and patterns -----------------------------------------------------------------

    #[test]
    fn formats_from_file_names() {
        let cases = [
            (".env", Some(Format::Env)),
            (".env.production", Some(Format::Env)),
            ("/etc/myapp/.env.local", Some(Format::Env)),
            ("app.env", Some(Format::Env)),
            ("config.toml", Some(Format::Toml)),
            ("Cargo.TOML", Some(Format::Toml)),
            ("docker-compose.yml", Some(Format::Yaml)),
            ("deploy/values.yaml", Some(Format::Yaml)),
            ("settings.json", Some(Format::Json)),
            (".env.json", Some(Format::Json)),
            ("app.ini", Some(Format::Ini)),
            ("setup.cfg", Some(Format::Ini)),
            ("my.cnf", Some(Format::Ini)),
            ("C:\\app\\php.ini", Some(Format::Ini)),
            ("nginx.conf", None),
            ("redis.conf", None),
            (".envrc", None),
            ("env", None),
            (".env-example", None),
            ("README.md", None),
            ("Makefile", None),
        ];
        for (name, want) in cases {
            assert_eq!(format_of(name), want, "{name}");
        }
    }

    #[test]
    fn default_patterns_catch_secret_names_and_spare_qualifiers() {
        let r = defaults();
        for k in [
            "password",
            "DB_PASSWORD",
            "dbPassword",
            "db-password",
            "db.password",
            "PASSWORD2",
            "password_2",
            "admin_password_hash",
            "passwd",
            "passphrase",
            "DB_PASS",
            "pass",
            "pwd",
            "MYSQL_PWD",
            "secret",
            "client_secret",
            "clientSecret",
            "SECRET_KEY_BASE",
            "secret_key",
            "secrets",
            "access_token",
            "GITHUB_TOKEN",
            "refreshToken",
            "tokens",
            "api_key",
            "apiKey",
            "APIKey",
            "X-Api-Key",
            "apikey",
            "STRIPE_API_KEYS",
            "private_key",
            "privateKey",
            "privatekey",
            "AWS_SECRET_ACCESS_KEY",
            "encryption_key",
            "credentials",
            "credential",
            "creds",
            "basic_auth",
            "Authorization",
            "proxy_authorization",
            "connection_string",
            "ConnectionString",
        ] {
            assert!(r.is_secret_key(k), "{k} should be secret");
        }
        for k in [
            "token_ttl",
            "TOKEN_TTL",
            "tokenTtl",
            "token_url",
            "tokenizer",
            "password_min_length",
            "passwordMinLength",
            "password_file",
            "password_reset_url",
            "secret_name",
            "secretName",
            "username",
            "user",
            "passenger",
            "bypass",
            "compass",
            "auth_url",
            // A section name far more often than a secret: `auth: {provider, client_id,
            // client_secret}` keeps its provider, and its secret is caught by name.
            "auth",
            "oauth",
            "author",
            "key",
            "cache_key",
            "sort_key",
            "AWS_ACCESS_KEY_ID",
            "host",
            "pwd_dir",
            "",
        ] {
            assert!(!r.is_secret_key(k), "{k} should not be secret");
        }
    }

    #[test]
    fn custom_patterns_are_case_insensitive_snake_case_globs() {
        let r = Redactor::new(&keys(&["db_*", "*Stripe*", "licen?e", "пароль"])).expect("valid");
        for k in [
            "DB_HOST",
            "db-name",
            "dbName",
            "MY_STRIPE_ID",
            "license",
            "licence",
            "ПАРОЛЬ",
        ] {
            assert!(r.is_secret_key(k), "{k}");
        }
        for k in ["PASSWORD", "mydb_host", "licenses", "db"] {
            assert!(!r.is_secret_key(k), "{k}");
        }
        // Patterns replace the defaults; pass both to extend them.
        let mut both = Redactor::default_patterns();
        both.push("db_*".into());
        let r = Redactor::new(&both).expect("valid");
        assert!(r.is_secret_key("PASSWORD") && r.is_secret_key("DB_HOST"));
        // With no pattern at all, only URL passwords are redacted.
        let none = Redactor::new(&[]).expect("valid");
        let (out, k) = run(
            &none,
            Format::Env,
            "PASSWORD=kept\nURL=mysql://u:Url-pw1@h/d\n",
            &["Url-pw1"],
        );
        assert_eq!(
            out,
            "PASSWORD=kept\nURL=mysql://u:REDACTED-BY-LIFEBOAT@h/d\n"
        );
        assert_eq!(k, keys(&["URL"]));
    }

    #[test]
    fn a_bad_pattern_is_a_usage_error_naming_it() {
        for p in [
            "",
            "   ",
            "[abc]",
            "pass/word",
            "a=b",
            "{x,y}",
            "back\\slash",
        ] {
            let e = Redactor::new(&keys(&["*password", p])).expect_err(p);
            assert_eq!(e.kind, crate::error::ErrorKind::Usage, "{p:?}");
            assert!(
                e.message.contains(&format!("{p:?}")),
                "{p:?}: {}",
                e.message
            );
            assert!(e.hint.is_some());
        }
    }

    // ---- one real-looking file per format ---------------------------------------------------

    const RAILS_ENV: &str = r#"
# Rails environment: production
RAILS_ENV=production
RAILS_LOG_TO_STDOUT=true
SECRET_KEY_BASE=9f8e7d6c5b4a39281706f5e4d3c2b1a0
DATABASE_URL=postgres://app:Pg-s3cret@db.internal:5432/app_production
REDIS_URL=redis://:R3dis-s3cret@cache:6379/0

# Mail
SMTP_USERNAME=mailer@example.com
SMTP_PASSWORD='Sm7p pass#1'
export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE
export AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # rotate yearly
STRIPE_API_KEY = sk_live_4eC39HqLyjWDarjtT1zdp7dc # live key
SESSION_TOKEN_TTL=3600
PASSWORD_MIN_LENGTH=12
GITHUB_TOKEN=${GITHUB_TOKEN}
EMPTY_PASSWORD=
JWT_PRIVATE_KEY="-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASC
-----END PRIVATE KEY-----"
ESCAPED_TOKEN="tok\"en-\$Esc4ped"
WORKER_ARGS=--queue=default --api-token=Wk-t0ken-77 --verbose
GREETING="héllo wörld 👋"
"#;

    const RAILS_ENV_REDACTED: &str = r#"
# Rails environment: production
RAILS_ENV=production
RAILS_LOG_TO_STDOUT=true
SECRET_KEY_BASE=REDACTED-BY-LIFEBOAT
DATABASE_URL=postgres://app:REDACTED-BY-LIFEBOAT@db.internal:5432/app_production
REDIS_URL=redis://:REDACTED-BY-LIFEBOAT@cache:6379/0

# Mail
SMTP_USERNAME=mailer@example.com
SMTP_PASSWORD='REDACTED-BY-LIFEBOAT'
export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE
export AWS_SECRET_ACCESS_KEY="REDACTED-BY-LIFEBOAT"  # rotate yearly
STRIPE_API_KEY = REDACTED-BY-LIFEBOAT # live key
SESSION_TOKEN_TTL=3600
PASSWORD_MIN_LENGTH=12
GITHUB_TOKEN=${GITHUB_TOKEN}
EMPTY_PASSWORD=
JWT_PRIVATE_KEY="REDACTED-BY-LIFEBOAT"
ESCAPED_TOKEN="REDACTED-BY-LIFEBOAT"
WORKER_ARGS=--queue=default --api-token=REDACTED-BY-LIFEBOAT --verbose
GREETING="héllo wörld 👋"
"#;

    const RAILS_ENV_SECRETS: &[&str] = &[
        "9f8e7d6c5b4a",
        "Pg-s3cret",
        "R3dis-s3cret",
        "Sm7p",
        "wJalrXUtnFEMI",
        "sk_live",
        "MIIEvQ",
        "BEGIN PRIVATE",
        "Esc4ped",
        "Wk-t0ken",
    ];

    const RAILS_ENV_KEYS: &[&str] = &[
        "SECRET_KEY_BASE",
        "DATABASE_URL",
        "REDIS_URL",
        "SMTP_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "STRIPE_API_KEY",
        "JWT_PRIVATE_KEY",
        "ESCAPED_TOKEN",
        "WORKER_ARGS",
    ];

    #[test]
    fn rails_env_file() {
        let (out, k) = run(&defaults(), Format::Env, t(RAILS_ENV), RAILS_ENV_SECRETS);
        assert_eq!(out, t(RAILS_ENV_REDACTED));
        assert_eq!(k, keys(RAILS_ENV_KEYS));
    }

    const CONFIG_TOML: &str = r#"
# myapp configuration
title = "My App"

[database]
host = "db.internal"
port = 5432
username = "app"
password = "Hunter2-db"          # from the vault
url = 'postgres://app:Hunter2-db@db.internal/app'
pool = { size = 10, token_ttl = 300, password_min_length = 12 }

[cache]
redis.url = "redis://default:C4che-pw@cache:6379"
redis.password = 'C4che-pw'

# One table per server
[[servers]]
name = "alpha"
token = "tok-alpha-123"

[[servers]]
name = "beta"
token = "tok-beta-456"
api = { key = "k1", api_key = "ak-789" }

[credentials]
user = "svc-user"
pin = 4711
enabled = true

[tls]
private_key = """
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIBkg
-----END EC PRIVATE KEY-----
"""
escaped = "amqp://guest:Gu\u0065st-pw@rabbit/"
motto = "ünïcödé ✓"
"#;

    const CONFIG_TOML_REDACTED: &str = r#"
# myapp configuration
title = "My App"

[database]
host = "db.internal"
port = 5432
username = "app"
password = "REDACTED-BY-LIFEBOAT"          # from the vault
url = 'postgres://app:REDACTED-BY-LIFEBOAT@db.internal/app'
pool = { size = 10, token_ttl = 300, password_min_length = 12 }

[cache]
redis.url = "redis://default:REDACTED-BY-LIFEBOAT@cache:6379"
redis.password = 'REDACTED-BY-LIFEBOAT'

# One table per server
[[servers]]
name = "alpha"
token = "REDACTED-BY-LIFEBOAT"

[[servers]]
name = "beta"
token = "REDACTED-BY-LIFEBOAT"
api = { key = "k1", api_key = "REDACTED-BY-LIFEBOAT" }

[credentials]
user = "REDACTED-BY-LIFEBOAT"
pin = "REDACTED-BY-LIFEBOAT"
enabled = true

[tls]
private_key = """REDACTED-BY-LIFEBOAT"""
escaped = "amqp://guest:REDACTED-BY-LIFEBOAT@rabbit/"
motto = "ünïcödé ✓"
"#;

    const CONFIG_TOML_SECRETS: &[&str] = &[
        "Hunter2",
        "C4che",
        "tok-alpha",
        "tok-beta",
        "ak-789",
        "svc-user",
        "4711",
        "MHcCAQ",
        "Gu\\u0065st",
    ];

    const CONFIG_TOML_KEYS: &[&str] = &[
        "database.password",
        "database.url",
        "cache.redis.url",
        "cache.redis.password",
        "servers[0].token",
        "servers[1].token",
        "servers[1].api.api_key",
        "credentials",
        "tls.private_key",
        "tls.escaped",
    ];

    #[test]
    fn config_toml() {
        let input = t(CONFIG_TOML);
        let (out, k) = run(&defaults(), Format::Toml, input, CONFIG_TOML_SECRETS);
        assert_eq!(out, t(CONFIG_TOML_REDACTED));
        assert_eq!(k, keys(CONFIG_TOML_KEYS));
        let before: serde_json::Value = toml::from_str(input).expect("input is TOML");
        let after: serde_json::Value = toml::from_str(&out).expect("output is TOML");
        same_shape(&before, &after, "");
        assert_eq!(after["credentials"]["pin"], REDACTED);
        assert_eq!(after["database"]["pool"]["token_ttl"], 300);
    }

    const COMPOSE_YAML: &str = r#"
# docker-compose.yml for myapp
version: "3.9"

x-shared: &shared "s3cr3t-anch0r"

services:
  web:
    image: myapp:latest   # pinned in CI
    ports: ["8080:80", "8443:443"]
    environment:
      RAILS_ENV: production
      DATABASE_URL: postgres://app:Pa55-db@db:5432/app
      SECRET_KEY_BASE: >-
        d41d8cd98f00b204
        e9800998ecf8427e
      TOKEN_TTL: 3600
      GREETING: "grüß dich 👋"
    depends_on:
      - db
  db:
    image: postgres:16
    environment:
      - POSTGRES_USER=app
      - POSTGRES_PASSWORD=Pa55-db
      - POSTGRES_DB=app
  worker:
    environment:
      API_TOKEN: 'w0rker''s-token'
      DB_PASSWORD: *shared
      GITHUB_TOKEN: ${GITHUB_TOKEN}
      PASSWORD_MIN_LENGTH: 12
      SMTP_PASSWORD: "m4il\tpa\u00df"

deploy:
  servers:
    - name: alpha
      token: tok-alpha
    - name: beta
      token: "tok-beta"   # rotated
  credentials:
    username: deploy-bot
    keys:
      - k1-c4fe
      - k2-b4be
  tls:
    private_key: |
      -----BEGIN RSA PRIVATE KEY-----
      MIIEowIBAAKCAQEAx

      -----END RSA PRIVATE KEY-----
    certificate: |
      -----BEGIN CERTIFICATE-----
      MIIC
      -----END CERTIFICATE-----
  smtp: {host: mail.example.com, password: m4il-pw, port: 587}
  admin_pwd: !!int 8642
"#;

    const COMPOSE_YAML_REDACTED: &str = r#"
# docker-compose.yml for myapp
version: "3.9"

x-shared: &shared "REDACTED-BY-LIFEBOAT"

services:
  web:
    image: myapp:latest   # pinned in CI
    ports: ["8080:80", "8443:443"]
    environment:
      RAILS_ENV: production
      DATABASE_URL: postgres://app:REDACTED-BY-LIFEBOAT@db:5432/app
      SECRET_KEY_BASE: >-
        REDACTED-BY-LIFEBOAT
      TOKEN_TTL: 3600
      GREETING: "grüß dich 👋"
    depends_on:
      - db
  db:
    image: postgres:16
    environment:
      - POSTGRES_USER=app
      - POSTGRES_PASSWORD=REDACTED-BY-LIFEBOAT
      - POSTGRES_DB=app
  worker:
    environment:
      API_TOKEN: 'REDACTED-BY-LIFEBOAT'
      DB_PASSWORD: *shared
      GITHUB_TOKEN: ${GITHUB_TOKEN}
      PASSWORD_MIN_LENGTH: 12
      SMTP_PASSWORD: "REDACTED-BY-LIFEBOAT"

deploy:
  servers:
    - name: alpha
      token: REDACTED-BY-LIFEBOAT
    - name: beta
      token: "REDACTED-BY-LIFEBOAT"   # rotated
  credentials:
    username: REDACTED-BY-LIFEBOAT
    keys:
      - REDACTED-BY-LIFEBOAT
      - REDACTED-BY-LIFEBOAT
  tls:
    private_key: |
      REDACTED-BY-LIFEBOAT
    certificate: |
      -----BEGIN CERTIFICATE-----
      MIIC
      -----END CERTIFICATE-----
  smtp: {host: mail.example.com, password: REDACTED-BY-LIFEBOAT, port: 587}
  admin_pwd: REDACTED-BY-LIFEBOAT
"#;

    const COMPOSE_YAML_SECRETS: &[&str] = &[
        "s3cr3t-anch0r",
        "Pa55-db",
        "d41d8cd9",
        "e9800998",
        "w0rker",
        "m4il",
        "tok-alpha",
        "tok-beta",
        "deploy-bot",
        "c4fe",
        "b4be",
        "MIIEow",
        "BEGIN RSA",
        "8642",
    ];

    const COMPOSE_YAML_KEYS: &[&str] = &[
        // The alias's target is redacted where the anchor is, so it is listed first.
        "services.worker.environment.DB_PASSWORD",
        "services.web.environment.DATABASE_URL",
        "services.web.environment.SECRET_KEY_BASE",
        "services.db.environment[1]",
        "services.worker.environment.API_TOKEN",
        "services.worker.environment.SMTP_PASSWORD",
        "deploy.servers[0].token",
        "deploy.servers[1].token",
        "deploy.credentials",
        "deploy.tls.private_key",
        "deploy.smtp.password",
        "deploy.admin_pwd",
    ];

    #[test]
    fn compose_yaml() {
        let input = t(COMPOSE_YAML);
        let (out, k) = run(&defaults(), Format::Yaml, input, COMPOSE_YAML_SECRETS);
        assert_eq!(out, t(COMPOSE_YAML_REDACTED));
        assert_eq!(k, keys(COMPOSE_YAML_KEYS));
        let before: serde_json::Value = serde_norway::from_str(input).expect("input is YAML");
        let after: serde_json::Value = serde_norway::from_str(&out).expect("output is YAML");
        same_shape(&before, &after, "");
        assert_eq!(
            after["deploy"]["tls"]["private_key"],
            "REDACTED-BY-LIFEBOAT\n"
        );
        assert_eq!(
            after["services"]["worker"]["environment"]["DB_PASSWORD"],
            REDACTED
        );
    }

    const SETTINGS_JSON: &str = r#"
{
  "name": "myapp",
  "database": {
    "host": "db.internal",
    "user": "app",
    "password": "Hunter2-db",
    "options": {"sslmode": "require", "connect_timeout": 10}
  },
  "servers": [
    {"name": "alpha", "token": "tok-\"quoted\"-1"},
    {"name": "beta", "token": "tok-b\u00e9ta-2", "port": 8443}
  ],
  "auth": {"provider": "oidc", "client_id": "myapp-web", "clientSecret": "cs-0f9e"},
  "apiKey": 987654321,
  "sentry_dsn": "https://pub1ic:S3ntry-pw@o0.ingest.sentry.io/1",
  "mongo": "mongodb://root:M0ngo\u0040pw@m1:27017,m2:27017/admin?replicaSet=rs0",
  "features": {"token_ttl": 3600, "password_min_length": 12, "enabled": true, "token": null, "password": ""},
  "private_key": "-----BEGIN KEY-----\nMIIBxyz\n-----END KEY-----\n",
  "ünïcode_password": "pässwörd-😀"
}
"#;

    const SETTINGS_JSON_REDACTED: &str = r#"
{
  "name": "myapp",
  "database": {
    "host": "db.internal",
    "user": "app",
    "password": "REDACTED-BY-LIFEBOAT",
    "options": {"sslmode": "require", "connect_timeout": 10}
  },
  "servers": [
    {"name": "alpha", "token": "REDACTED-BY-LIFEBOAT"},
    {"name": "beta", "token": "REDACTED-BY-LIFEBOAT", "port": 8443}
  ],
  "auth": {"provider": "oidc", "client_id": "myapp-web", "clientSecret": "REDACTED-BY-LIFEBOAT"},
  "apiKey": "REDACTED-BY-LIFEBOAT",
  "sentry_dsn": "https://pub1ic:REDACTED-BY-LIFEBOAT@o0.ingest.sentry.io/1",
  "mongo": "mongodb://root:REDACTED-BY-LIFEBOAT@m1:27017,m2:27017/admin?replicaSet=rs0",
  "features": {"token_ttl": 3600, "password_min_length": 12, "enabled": true, "token": null, "password": ""},
  "private_key": "REDACTED-BY-LIFEBOAT",
  "ünïcode_password": "REDACTED-BY-LIFEBOAT"
}
"#;

    const SETTINGS_JSON_SECRETS: &[&str] = &[
        "Hunter2",
        "quoted",
        "tok-b",
        "cs-0f9e",
        "987654321",
        "S3ntry",
        "M0ngo",
        "MIIBxyz",
        "pässwörd",
    ];

    const SETTINGS_JSON_KEYS: &[&str] = &[
        "database.password",
        "servers[0].token",
        "servers[1].token",
        "auth.clientSecret",
        "apiKey",
        "sentry_dsn",
        "mongo",
        "private_key",
        "ünïcode_password",
    ];

    #[test]
    fn settings_json() {
        let input = t(SETTINGS_JSON);
        let (out, k) = run(&defaults(), Format::Json, input, SETTINGS_JSON_SECRETS);
        assert_eq!(out, t(SETTINGS_JSON_REDACTED));
        assert_eq!(k, keys(SETTINGS_JSON_KEYS));
        let before: serde_json::Value = serde_json::from_str(input).expect("input is JSON");
        let after: serde_json::Value = serde_json::from_str(&out).expect("output is JSON");
        same_shape(&before, &after, "");
    }

    const APP_INI: &str = r#"
; myapp settings
[general]
name = My App
debug = false

[database]
host = db.internal
user = app
password = "Hunter2-db" ; from vault
dsn = mysql://app:Hunter2-db@db.internal/app
password_min_length = 12

[secrets]
signing = Sign-abc123
  continued-S3cret-line

[smtp]
Password: M4il pass
token_ttl: 60

[client]
# my.cnf style: a key without a value
skip-ssl
"#;

    const APP_INI_REDACTED: &str = r#"
; myapp settings
[general]
name = My App
debug = false

[database]
host = db.internal
user = app
password = "REDACTED-BY-LIFEBOAT" ; from vault
dsn = mysql://app:REDACTED-BY-LIFEBOAT@db.internal/app
password_min_length = 12

[secrets]
signing = REDACTED-BY-LIFEBOAT
  REDACTED-BY-LIFEBOAT

[smtp]
Password: REDACTED-BY-LIFEBOAT
token_ttl: 60

[client]
# my.cnf style: a key without a value
skip-ssl
"#;

    const APP_INI_SECRETS: &[&str] = &["Hunter2", "Sign-abc", "S3cret-line", "M4il"];

    const APP_INI_KEYS: &[&str] = &[
        "database.password",
        "database.dsn",
        "secrets",
        "smtp.Password",
    ];

    #[test]
    fn app_ini() {
        let (out, k) = run(&defaults(), Format::Ini, t(APP_INI), APP_INI_SECRETS);
        assert_eq!(out, t(APP_INI_REDACTED));
        assert_eq!(k, keys(APP_INI_KEYS));
    }

    type Fixture = (Format, &'static str, &'static str, &'static [&'static str]);

    fn fixtures() -> Vec<Fixture> {
        vec![
            (
                Format::Env,
                RAILS_ENV,
                RAILS_ENV_REDACTED,
                RAILS_ENV_SECRETS,
            ),
            (
                Format::Toml,
                CONFIG_TOML,
                CONFIG_TOML_REDACTED,
                CONFIG_TOML_SECRETS,
            ),
            (
                Format::Yaml,
                COMPOSE_YAML,
                COMPOSE_YAML_REDACTED,
                COMPOSE_YAML_SECRETS,
            ),
            (
                Format::Json,
                SETTINGS_JSON,
                SETTINGS_JSON_REDACTED,
                SETTINGS_JSON_SECRETS,
            ),
            (Format::Ini, APP_INI, APP_INI_REDACTED, APP_INI_SECRETS),
        ]
    }

    #[test]
    fn crlf_line_endings_are_kept() {
        for (format, input, want, secrets) in fixtures() {
            let input = t(input).replace('\n', "\r\n");
            let (out, _) = run(&defaults(), format, &input, secrets);
            assert_eq!(out, t(want).replace('\n', "\r\n"), "{format}");
        }
    }

    #[test]
    fn a_byte_order_mark_is_kept() {
        for (format, input, want, secrets) in fixtures() {
            let input = format!("\u{feff}{}", t(input));
            let (out, _) = run(&defaults(), format, &input, secrets);
            assert_eq!(out, format!("\u{feff}{}", t(want)), "{format}");
        }
    }

    #[test]
    fn empty_files_are_fine() {
        for format in [
            Format::Env,
            Format::Toml,
            Format::Yaml,
            Format::Json,
            Format::Ini,
        ] {
            for input in ["", "\n", "  \n\n"] {
                let (out, k) = run(&defaults(), format, input, &[]);
                assert_eq!(out, input, "{format}");
                assert!(k.is_empty());
            }
        }
    }

    // ---- rules ------------------------------------------------------------------------------

    #[test]
    fn passwords_in_urls_and_connection_strings_whatever_the_key() {
        let cases = [
            (
                "postgres://user:Pa55-1@host/db",
                "postgres://user:REDACTED-BY-LIFEBOAT@host/db",
                "Pa55-1",
            ),
            (
                "mysql://root:p@ss/w0rd+=@db:3306/x?charset=utf8",
                "mysql://root:REDACTED-BY-LIFEBOAT@db:3306/x?charset=utf8",
                "w0rd+=",
            ),
            (
                "redis://:R3d-2@cache:6379",
                "redis://:REDACTED-BY-LIFEBOAT@cache:6379",
                "R3d-2",
            ),
            (
                "amqp://u:Aq-3@h1,amqp://v:Aq-4@h2",
                "amqp://u:REDACTED-BY-LIFEBOAT@h1,amqp://v:REDACTED-BY-LIFEBOAT@h2",
                "Aq-",
            ),
            (
                "primary=postgres://a:Pg-5@h replica=postgres://b:Pg-6@h",
                "primary=postgres://a:REDACTED-BY-LIFEBOAT@h replica=postgres://b:REDACTED-BY-LIFEBOAT@h",
                "Pg-",
            ),
            (
                "jdbc:postgresql://db/app?user=app&password=Jd-7&ssl=true",
                "jdbc:postgresql://db/app?user=app&password=REDACTED-BY-LIFEBOAT&ssl=true",
                "Jd-7",
            ),
            (
                "host=db user=app password=Lq-8 dbname=app",
                "host=db user=app password=REDACTED-BY-LIFEBOAT dbname=app",
                "Lq-8",
            ),
            (
                "host=db password='Lq 9' dbname=app",
                "host=db password='REDACTED-BY-LIFEBOAT' dbname=app",
                "Lq 9",
            ),
            (
                "Server=db;Database=app;User Id=sa;Password=Ado-10;",
                "Server=db;Database=app;User Id=sa;Password=REDACTED-BY-LIFEBOAT;",
                "Ado-10",
            ),
            (
                "https://hooks.example.com/x?token=Hk-11",
                "https://hooks.example.com/x?token=REDACTED-BY-LIFEBOAT",
                "Hk-11",
            ),
        ];
        for (value, want, secret) in cases {
            let (out, k) = run(
                &defaults(),
                Format::Env,
                &format!("SOME_SETTING={value}\n"),
                &[secret],
            );
            assert_eq!(out, format!("SOME_SETTING={want}\n"), "{value}");
            assert_eq!(k, keys(&["SOME_SETTING"]));
        }
        for untouched in [
            "https://example.com:8443/path",
            "postgres://user@host/db",
            "postgres://user:@host/db",
            "postgres://user:${DB_PASSWORD}@host/db",
            "git@github.com:org/repo.git",
            "token_ttl=3600&password_min_length=12",
            "password=$DB_PASSWORD",
            "a == b",
        ] {
            let input = format!("SOME_SETTING={untouched}\n");
            let (out, k) = run(&defaults(), Format::Env, &input, &[]);
            assert_eq!(out, input);
            assert!(k.is_empty(), "{untouched}: {k:?}");
        }
    }

    #[test]
    fn url_passwords_in_every_format() {
        let dsn = "postgres://app:Dsn-pw@db/app";
        let red = "postgres://app:REDACTED-BY-LIFEBOAT@db/app";
        let cases = [
            (Format::Env, format!("DB_URL={dsn}\n"), "DB_URL"),
            (Format::Toml, format!("[db]\nurl = \"{dsn}\"\n"), "db.url"),
            (
                Format::Yaml,
                format!("db:\n  urls:\n    - {dsn}\n"),
                "db.urls[0]",
            ),
            (
                Format::Json,
                format!("{{\"db\": [{{\"url\": \"{dsn}\"}}]}}"),
                "db[0].url",
            ),
            (Format::Ini, format!("[db]\nurl = {dsn}\n"), "db.url"),
        ];
        for (format, input, path) in cases {
            let (out, k) = run(&defaults(), format, &input, &["Dsn-pw"]);
            assert_eq!(out, input.replace(dsn, red), "{format}");
            assert_eq!(k, keys(&[path]), "{format}");
        }
    }

    #[test]
    fn nothing_secret_is_left_alone() {
        let cases = [
            (Format::Env, "PASSWORD=\nTOKEN=${VAULT_TOKEN}\nAPI_KEY=$API_KEY\nUSERNAME=bob\n"),
            (
                Format::Yaml,
                "password: ~\ntoken: null\napi_key:\nsecret: ''\nauth: true\nDB_PASSWORD: ${DB_PASSWORD}\nusername: bob\n",
            ),
            (
                Format::Json,
                r#"{"password": null, "auth": false, "token": "", "secret": "${S}", "user": "bob"}"#,
            ),
            (Format::Toml, "auth = true\npassword = \"\"\ntoken = '${T}'\nuser = \"bob\"\n"),
            (Format::Ini, "[db]\npassword =\ntoken = ${T}\nuser = bob\n"),
        ];
        for (format, input) in cases {
            let (out, k) = run(&defaults(), format, input, &[]);
            assert_eq!(out, input, "{format}");
            assert!(k.is_empty(), "{format}: {k:?}");
        }
    }

    #[test]
    fn a_secret_key_over_a_table_redacts_everything_under_it() {
        let cases: [(Format, &str, &str, &[&str]); 4] = [
            (
                Format::Yaml,
                "credentials:\n  user: svc-1\n  nested:\n    - a-2\n    - {b: b-3}\nhost: h\n",
                "credentials:\n  user: REDACTED-BY-LIFEBOAT\n  nested:\n    - REDACTED-BY-LIFEBOAT\n    - {b: REDACTED-BY-LIFEBOAT}\nhost: h\n",
                &["credentials"],
            ),
            (
                Format::Toml,
                "[credentials]\nuser = \"svc-1\"\nlist = [\"a-2\", 3]\n[credentials.more]\nb = \"b-3\"\n[other]\nhost = \"h\"\n",
                "[credentials]\nuser = \"REDACTED-BY-LIFEBOAT\"\nlist = [\"REDACTED-BY-LIFEBOAT\", \"REDACTED-BY-LIFEBOAT\"]\n[credentials.more]\nb = \"REDACTED-BY-LIFEBOAT\"\n[other]\nhost = \"h\"\n",
                &["credentials"],
            ),
            (
                Format::Json,
                r#"{"credentials": {"user": "svc-1", "n": [{"b": "b-3"}, 2]}, "host": "h"}"#,
                r#"{"credentials": {"user": "REDACTED-BY-LIFEBOAT", "n": [{"b": "REDACTED-BY-LIFEBOAT"}, "REDACTED-BY-LIFEBOAT"]}, "host": "h"}"#,
                &["credentials"],
            ),
            (
                Format::Ini,
                "[credentials]\nuser = svc-1\n[other]\nhost = h\n",
                "[credentials]\nuser = REDACTED-BY-LIFEBOAT\n[other]\nhost = h\n",
                &["credentials"],
            ),
        ];
        for (format, input, want, paths) in cases {
            let (out, k) = run(&defaults(), format, input, &["svc-1"]);
            assert_eq!(out, want, "{format}");
            assert_eq!(k, keys(paths), "{format}");
        }
    }

    #[test]
    fn multi_line_secret_values_are_replaced_whole() {
        let cases = [
            (
                Format::Env,
                "KEY_PEM='-----BEGIN-----\nL1ne-one\n-----END-----'\nNEXT=1\n",
                "KEY_PEM='-----BEGIN-----\nL1ne-one\n-----END-----'\nNEXT=1\n",
            ),
            (
                Format::Env,
                "PRIVATE_KEY='-----BEGIN-----\nL1ne-one\n-----END-----'\nNEXT=1\n",
                "PRIVATE_KEY='REDACTED-BY-LIFEBOAT'\nNEXT=1\n",
            ),
            (
                Format::Yaml,
                "a:\n  private_key: |-\n\n      L1ne-one\n    \n      L1ne-two\n\n  next: 1\n",
                "a:\n  private_key: |-\n      REDACTED-BY-LIFEBOAT\n\n  next: 1\n",
            ),
            (
                Format::Yaml,
                "- token: >\n    L1ne-one\n    L1ne-two\n# trailing comment\n- x\n",
                "- token: >\n    REDACTED-BY-LIFEBOAT\n# trailing comment\n- x\n",
            ),
            (
                Format::Yaml,
                "password: plain L1ne-one\n  goes on L1ne-two\nnext: 1\n",
                "password: REDACTED-BY-LIFEBOAT\nnext: 1\n",
            ),
            (
                Format::Yaml,
                "password: \"L1ne-one\n  \\\n  L1ne-two\"\nnext: 1\n",
                "password: \"REDACTED-BY-LIFEBOAT\"\nnext: 1\n",
            ),
            (
                Format::Toml,
                "private_key = '''\nL1ne-one\nL1ne-two'''\nnext = 1\n",
                "private_key = '''REDACTED-BY-LIFEBOAT'''\nnext = 1\n",
            ),
            (
                Format::Toml,
                "token = \"\"\"L1ne-one \\\n   L1ne-two\"\"\"\n",
                "token = \"\"\"REDACTED-BY-LIFEBOAT\"\"\"\n",
            ),
            (
                Format::Json,
                r#"{"private_key": "L1ne-one\nL1ne-two\u0021\"\\"}"#,
                r#"{"private_key": "REDACTED-BY-LIFEBOAT"}"#,
            ),
            (
                Format::Ini,
                "[k]\nprivate_key = L1ne-one\n    L1ne-two\n\n    L1ne-three\nnext = 1\n",
                "[k]\nprivate_key = REDACTED-BY-LIFEBOAT\n    REDACTED-BY-LIFEBOAT\n\n    REDACTED-BY-LIFEBOAT\nnext = 1\n",
            ),
        ];
        for (i, (format, input, want)) in cases.into_iter().enumerate() {
            let secrets: &[&str] = if i == 0 { &[] } else { &["L1ne-one"] };
            let (out, _) = run(&defaults(), format, input, secrets);
            assert_eq!(out, want, "case {i} ({format})");
        }
    }

    #[test]
    fn yaml_forms_configs_use() {
        let input = t(r#"
%YAML 1.2
---
defaults: &defaults
  adapter: postgresql
  password: Anch0r-pw
development:
  <<: *defaults
  database: dev
"quoted key": {"token": "Fl0w-tok", list: [a, 'b', {api_key: Fl0w-key}]}
? |
  never mind
"#);
        // Complex keys are refused; without them the rest reads.
        let cut = input.find("? |").expect("fixture");
        let input = &input[..cut];
        let (out, k) = run(
            &defaults(),
            Format::Yaml,
            input,
            &["Anch0r", "Fl0w-tok", "Fl0w-key"],
        );
        assert_eq!(
            k,
            keys(&[
                "defaults.password",
                "quoted key.token",
                "quoted key.list[2].api_key"
            ])
        );
        let before: serde_json::Value = serde_norway::from_str(input).expect("input is YAML");
        let after: serde_json::Value = serde_norway::from_str(&out).expect("output is YAML");
        same_shape(&before, &after, "");
        // Several documents; keys restart at each.
        let (out, k) = run(
            &defaults(),
            Format::Yaml,
            "token: D0c-1\n---\ntoken: D0c-2\n...\n",
            &["D0c-1", "D0c-2"],
        );
        assert_eq!(
            out,
            "token: REDACTED-BY-LIFEBOAT\n---\ntoken: REDACTED-BY-LIFEBOAT\n...\n"
        );
        assert_eq!(k, keys(&["token"]));
        // Only %YAML and %TAG lines are directives; anything else is content.
        let (out, _) = run(&defaults(), Format::Yaml, "%password: Pct-1\n", &["Pct-1"]);
        assert_eq!(out, "%password: REDACTED-BY-LIFEBOAT\n");
    }

    #[test]
    fn unicode_keys_and_values() {
        let r = Redactor::new(&keys(&["пароль", "*password"])).expect("valid");
        let input = "база:\n  пароль: \"Секрет-1\"\n  имя: Дмитрий\n  password: 密码-2\n";
        let (out, k) = run(&r, Format::Yaml, input, &["Секрет", "密码"]);
        assert_eq!(
            out,
            "база:\n  пароль: \"REDACTED-BY-LIFEBOAT\"\n  имя: Дмитрий\n  password: REDACTED-BY-LIFEBOAT\n"
        );
        assert_eq!(k, keys(&["база.пароль", "база.password"]));
        let (out, _) = run(
            &r,
            Format::Env,
            "URL=postgres://ünï:pässwörd😀@höst/db\n",
            &["pässwörd"],
        );
        assert_eq!(out, "URL=postgres://ünï:REDACTED-BY-LIFEBOAT@höst/db\n");
    }

    #[test]
    fn files_that_cannot_be_read_are_refused_not_returned() {
        let cases: [(Format, &[u8]); 14] = [
            (
                Format::Env,
                b"DB_HOST=x\nthis is not env DB_PASSWORD=Leak-1\n",
            ),
            (Format::Env, b"DB_PASSWORD=\"Leak-1\nNEXT=2\n"),
            (Format::Env, b"DB_PASSWORD=\"Leak-1\" trailing\n"),
            (Format::Toml, b"[db]\npassword = \"Leak-1\nhost = 1\n"),
            (Format::Toml, b"password = Leak-1\n"),
            (Format::Yaml, b"db:\n  password: \"Leak-1\n"),
            (Format::Yaml, b"? complex\n: Leak-1\n"),
            (Format::Yaml, b"db:\n\tpassword: Leak-1\n"),
            (Format::Yaml, b"password: Leak-1\n  bad: indent\n"),
            (Format::Yaml, b"a: b: Leak-1\n"),
            (Format::Json, b"{\"password\": \"Leak-1\"} x"),
            (Format::Json, b"{\"password\": Leak-1}"),
            (Format::Ini, b"[db\npassword = Leak-1\n"),
            (Format::Env, b"PASSWORD=Leak-1\xff\n"),
        ];
        for (format, input) in cases {
            let out = defaults().redact(format, input);
            let shown = String::from_utf8_lossy(input);
            assert!(out.failed(), "{format} accepted {shown:?}");
            assert!(out.data.is_empty() && out.keys.is_empty(), "{shown:?}");
            let w = out.warning.unwrap_or_default();
            assert!(
                w.starts_with(&format!("cannot redact this {format} file: ")),
                "{w}"
            );
            assert!(w.contains("line ") || w.contains("UTF-8"), "{w}");
            assert!(!w.contains("Leak"), "the warning quotes the file: {w}");
        }
    }

    #[test]
    fn commented_out_assignments_lose_their_secrets_and_keep_their_prose() {
        let (out, keys) = run(
            &defaults(),
            Format::Env,
            "# DB_PASSWORD=old-s3cret kept for reference\nA=1\n#  see https://u:pw-9@h/x\n",
            &["old-s3cret", "pw-9"],
        );
        assert_eq!(
            out,
            "# DB_PASSWORD=REDACTED-BY-LIFEBOAT kept for reference\nA=1\n#  see https://u:REDACTED-BY-LIFEBOAT@h/x\n"
        );
        assert_eq!(keys, ["(comment, line 1)", "(comment, line 3)"]);
        let (out, _) = run(
            &defaults(),
            Format::Ini,
            "; password=ini-old\n[a]\nb = 1\n",
            &["ini-old"],
        );
        assert_eq!(out, "; password=REDACTED-BY-LIFEBOAT\n[a]\nb = 1\n");
        // Prose is left alone, colons included.
        let prose = "# the password: rotate it monthly\nA=1\n";
        let (out, keys) = run(&defaults(), Format::Env, prose, &[]);
        assert_eq!((out.as_str(), keys.len()), (prose, 0));
    }

    #[test]
    fn only_values_are_replaced_not_keys_or_comments() {
        // A comment and a key that hold secret-looking words stay as they are.
        let input = "# password: Not-a-value\npassword_hint: see vault # token=keep-me\n";
        let (out, k) = run(&defaults(), Format::Yaml, input, &[]);
        assert_eq!(out, input);
        assert!(k.is_empty());
    }

    // ---- properties -------------------------------------------------------------------------

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value as V;
        let leaf = prop_oneof![
            Just(V::Null),
            any::<bool>().prop_map(V::Bool),
            any::<i32>().prop_map(V::from),
            "[a-zA-Z0-9 \"\\\\/:@éß😀\n\t]{0,12}".prop_map(V::String),
            Just(V::String("postgres://u:Pp-1@h/d".into())),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(V::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("password".to_string()),
                            Just("apiKey".to_string()),
                            Just("token_ttl".to_string()),
                            Just("credentials".to_string()),
                            "[a-z_]{1,8}",
                        ],
                        inner
                    ),
                    0..5
                )
                .prop_map(|kv| V::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// Under a secret key every non-empty string and number is REDACTED; elsewhere values
    /// are equal, or hold REDACTED in place of a URL password.
    fn check_json(
        r: &Redactor,
        before: &serde_json::Value,
        after: &serde_json::Value,
        secret: bool,
    ) {
        use serde_json::Value as V;
        match (before, after) {
            (V::Object(a), V::Object(b)) => {
                assert_eq!(a.len(), b.len());
                for (k, v) in a {
                    check_json(r, v, &b[k], secret || r.is_secret_key(k));
                }
            }
            (V::Array(a), V::Array(b)) => {
                assert_eq!(a.len(), b.len());
                for (x, y) in a.iter().zip(b) {
                    check_json(r, x, y, secret);
                }
            }
            // (A YAML block scalar keeps its final line break.)
            (V::String(s), y) if secret && !s.trim().is_empty() && !is_reference(s.trim()) => {
                assert_eq!(y.as_str().map(|y| y.trim_end_matches('\n')), Some(REDACTED))
            }
            (V::Number(_), y) if secret => assert_eq!(y, REDACTED),
            (V::String(s), V::String(t)) if s.contains("://") => {
                assert!(s == t || t.contains(REDACTED), "{s:?} -> {t:?}")
            }
            (x, y) => assert_eq!(x, y),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics_and_failures_return_nothing(
            input in "[ a-z:=#\\-\\[\\]{}\"',\\\\|>&*!?%\n\r\t]{0,80}"
        ) {
            let r = defaults();
            for format in [Format::Env, Format::Toml, Format::Yaml, Format::Json, Format::Ini] {
                let out = r.redact(format, input.as_bytes());
                if out.failed() {
                    prop_assert!(out.data.is_empty() && out.keys.is_empty());
                } else {
                    let again = r.redact(format, &out.data);
                    prop_assert!(!again.failed(), "{} output no longer reads", format);
                }
            }
        }

        #[test]
        fn random_json_is_redacted_and_still_parses(value in json_value(), pretty in any::<bool>()) {
            let r = defaults();
            let input = if pretty {
                serde_json::to_string_pretty(&value)
            } else {
                serde_json::to_string(&value)
            }.expect("serializable");
            let out = r.redact(Format::Json, input.as_bytes());
            prop_assert_eq!(&out.warning, &None);
            let after: serde_json::Value = serde_json::from_slice(&out.data).expect("output is JSON");
            check_json(&r, &value, &after, false);
            prop_assert!(!String::from_utf8_lossy(&out.data).contains("Pp-1"));
        }

        #[test]
        fn random_yaml_is_redacted_and_still_parses(value in json_value()) {
            let r = defaults();
            let input = serde_norway::to_string(&value).expect("serializable");
            let out = r.redact(Format::Yaml, input.as_bytes());
            prop_assert_eq!(&out.warning, &None, "{}", input);
            let text = String::from_utf8_lossy(&out.data);
            let after: serde_json::Value = serde_norway::from_str(&text)
                .unwrap_or_else(|e| panic!("output is not YAML ({e}):\n{input}\n->\n{text}"));
            check_json(&r, &value, &after, false);
            prop_assert!(!text.contains("Pp-1"));
        }

        #[test]
        fn random_toml_is_redacted_and_still_parses(value in json_value()) {
            fn no_nulls(v: serde_json::Value) -> Option<serde_json::Value> {
                use serde_json::Value as V;
                match v {
                    V::Null => None,
                    V::Array(a) => Some(V::Array(a.into_iter().filter_map(no_nulls).collect())),
                    V::Object(o) => Some(V::Object(
                        o.into_iter().filter_map(|(k, v)| no_nulls(v).map(|v| (k, v))).collect(),
                    )),
                    v => Some(v),
                }
            }
            let value = serde_json::json!({ "root": no_nulls(value) });
            let input = toml::to_string(&value);
            prop_assume!(input.is_ok());
            let input = input.expect("checked");
            let r = defaults();
            let out = r.redact(Format::Toml, input.as_bytes());
            prop_assert_eq!(&out.warning, &None, "{}", input);
            let text = String::from_utf8_lossy(&out.data);
            let after: serde_json::Value = toml::from_str(&text)
                .unwrap_or_else(|e| panic!("output is not TOML ({e}):\n{input}\n->\n{text}"));
            check_json(&r, &value, &after, false);
        }

        #[test]
        fn random_env_files_are_redacted_line_by_line(
            lines in prop::collection::vec(
                (
                    prop_oneof![
                        Just("DB_PASSWORD"), Just("API_TOKEN"), Just("TOKEN_TTL"),
                        Just("USERNAME"), Just("SECRET"), Just("HOST")
                    ],
                    "[A-Za-z0-9_.@/+-]{1,12}",
                    0..4usize,
                    any::<bool>(),
                ),
                0..12,
            ),
            crlf in any::<bool>(),
        ) {
            let r = defaults();
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut input = String::new();
            let mut expected = String::new();
            for (i, (key, value, style, comment)) in lines.iter().enumerate() {
                let value = format!("v{i}x{value}");
                let quoted = match style {
                    0 => value.clone(),
                    1 => format!("'{value}'"),
                    2 => format!("\"{value}\""),
                    _ => format!("export {key}={value}"),
                };
                let line = if *style == 3 { quoted } else { format!("{key}={quoted}") };
                let tail = if *comment { " # note" } else { "" };
                input.push_str(&format!("{line}{tail}{eol}"));
                let want = if r.is_secret_key(key) { line.replace(&value, REDACTED) } else { line };
                expected.push_str(&format!("{want}{tail}{eol}"));
            }
            let out = r.redact(Format::Env, input.as_bytes());
            prop_assert_eq!(&out.warning, &None);
            prop_assert_eq!(String::from_utf8_lossy(&out.data), expected);
        }
    }
}
