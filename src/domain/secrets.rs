//! Secret references and masking (pure).
//!
//! A definition refers to a secret as `${{ secrets.NAME }}` (spaces inside
//! the braces are optional); [`references`] lists the names a text uses and
//! [`substitute`] replaces them with their values. Every text that leaves
//! the engine (task logs, gate evidence, error messages) goes through
//! [`mask`] (or a [`Masker`] built once per run), which replaces each
//! occurrence of a secret value with `***`.
//!
//! Masking works on the text it is given: a log is masked line by line, so a
//! multi-line value (a PEM key) is also masked line by line — each of its
//! non-blank lines is a value of its own.

/// What replaces a secret value in masked text.
pub const MASK: &str = "***";

/// Replaces every occurrence of every non-empty secret value in `text`
/// with `***`. Overlapping and adjacent occurrences are merged, so no
/// character of any occurrence survives.
pub fn mask(text: &str, secrets: &[&str]) -> String {
    Masker::new(secrets.iter().copied()).mask(text)
}

/// The secret values of one run, prepared once and applied to each line.
#[derive(Clone, Default)]
pub struct Masker {
    /// Distinct non-empty values, longest first.
    values: Vec<String>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masker({} values)", self.values.len())
    }
}

impl Masker {
    /// A masker for these values. Empty values are ignored; a multi-line
    /// value also contributes each of its non-blank lines.
    pub fn new<I, S>(secrets: I) -> Masker
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut values: Vec<String> = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.is_empty() {
                continue;
            }
            values.push(secret.to_string());
            if secret.contains('\n') {
                values.extend(
                    secret
                        .lines()
                        .map(|l| l.trim_end_matches('\r'))
                        .filter(|l| !l.trim().is_empty())
                        .map(str::to_string),
                );
            }
        }
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Masker { values }
    }

    /// True when there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every occurrence of every value replaced by `***`.
    pub fn mask(&self, text: &str) -> String {
        if self.values.is_empty() || text.is_empty() {
            return text.to_string();
        }
        // Byte ranges covered by some occurrence (overlapping ones included).
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for value in &self.values {
            let mut from = 0;
            while let Some(found) = text[from..].find(value.as_str()) {
                let start = from + found;
                ranges.push((start, start + value.len()));
                // The next possible start: the next character boundary.
                from = start + text[start..].chars().next().map_or(1, char::len_utf8);
                if from >= text.len() {
                    break;
                }
            }
        }
        if ranges.is_empty() {
            return text.to_string();
        }
        ranges.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut current: Option<(usize, usize)> = None;
        for (start, end) in ranges {
            match current {
                Some((s, e)) if start <= e => current = Some((s, e.max(end))),
                Some((s, e)) => {
                    out.push_str(&text[copied..s]);
                    out.push_str(MASK);
                    copied = e;
                    current = Some((start, end));
                }
                None => current = Some((start, end)),
            }
        }
        if let Some((s, e)) = current {
            out.push_str(&text[copied..s]);
            out.push_str(MASK);
            copied = e;
        }
        out.push_str(&text[copied..]);
        out
    }
}

/// One `${{ … }}` expression found in a text.
struct Expression<'a> {
    /// Byte range of the whole `${{ … }}`.
    start: usize,
    end: usize,
    /// What is between the braces, trimmed.
    inner: &'a str,
}

/// Every `${{ … }}` of `text`, left to right.
fn expressions(text: &str) -> Vec<Expression<'_>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("${{") {
        let start = from + open;
        let body = start + 3;
        let Some(close) = text[body..].find("}}") else {
            break;
        };
        let end = body + close + 2;
        found.push(Expression {
            start,
            end,
            inner: text[body..body + close].trim(),
        });
        from = end;
    }
    found
}

/// Whether `name` is a valid secret name: `[A-Za-z_][A-Za-z0-9_]*` (shared
/// with [`SecretRef`](super::definition::SecretRef)).
pub(crate) fn is_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What a `${{ … }}` expression is, if it is about secrets.
enum SecretExpr<'a> {
    /// `${{ secrets.NAME }}` with a valid name.
    Name(&'a str),
    /// `${{ secrets.… }}` whose name is not `[A-Za-z_][A-Za-z0-9_]*`.
    Malformed,
}

fn secret_expr<'a>(e: &Expression<'a>) -> Option<SecretExpr<'a>> {
    let name = e.inner.strip_prefix("secrets.")?.trim();
    Some(if is_secret_name(name) {
        SecretExpr::Name(name)
    } else {
        SecretExpr::Malformed
    })
}

/// The names of the secrets that `text` refers to as `${{ secrets.NAME }}`,
/// in order of first appearance, each once. Malformed references are not
/// names and are left out (see [`substitute`], which rejects them).
pub fn references(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for e in expressions(text) {
        if let Some(SecretExpr::Name(name)) = secret_expr(&e)
            && !names.iter().any(|n| n == name)
        {
            names.push(name.to_string());
        }
    }
    names
}

/// `text` with every `${{ secrets.NAME }}` replaced by `lookup(NAME)`.
///
/// An unknown secret (`lookup` answers `None`) or a malformed reference is
/// an error whose message names it. Other `${{ … }}` expressions are left
/// as they are.
pub fn substitute(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for e in expressions(text) {
        let Some(expr) = secret_expr(&e) else {
            continue;
        };
        let value = match expr {
            SecretExpr::Name(name) => lookup(name).ok_or_else(|| {
                format!(
                    "the secret `{name}` is not set (set it with `slipway secret set PIPELINE {name}`)"
                )
            })?,
            SecretExpr::Malformed => {
                return Err(format!(
                    "`{}` is not a valid secret reference: expected `${{{{ secrets.NAME }}}}` where NAME is [A-Za-z_][A-Za-z0-9_]*",
                    &text[e.start..e.end]
                ));
            }
        };
        out.push_str(&text[copied..e.start]);
        out.push_str(&value);
        copied = e.end;
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence() {
        assert_eq!(
            mask("token=hunter2 again hunter2.", &["hunter2"]),
            "token=*** again ***."
        );
        assert_eq!(mask("nothing here", &["hunter2"]), "nothing here");
        assert_eq!(mask("", &["x"]), "");
    }

    #[test]
    fn empty_values_are_ignored() {
        assert_eq!(mask("abc", &["", "b"]), "a***c");
        assert!(Masker::new([""]).is_empty());
    }

    #[test]
    fn longest_first_and_overlaps_are_merged() {
        // `abc` inside `abcdef`: the longer value wins, nothing leaks.
        assert_eq!(mask("x abcdef y", &["abc", "abcdef"]), "x *** y");
        // Overlapping occurrences of one value.
        assert_eq!(mask("aaaa", &["aaa"]), "***");
        // Overlapping different values.
        assert_eq!(mask("12345", &["123", "345"]), "***");
        // Adjacent occurrences become one mask.
        assert_eq!(mask("pwpw", &["pw"]), "***");
        // A value that contains the mask itself terminates.
        assert_eq!(mask("a***b", &["*"]), "a***b");
    }

    #[test]
    fn non_ascii_text_and_values() {
        assert_eq!(mask("grüße geheim grüße", &["geheim"]), "grüße *** grüße");
        assert_eq!(mask("ÄÄÄ", &["ÄÄ"]), "***");
        assert_eq!(mask("x💥y", &["💥"]), "x***y");
    }

    #[test]
    fn multi_line_values_are_masked_line_by_line() {
        let pem = "-----BEGIN KEY-----\nMIIBOgIBAAJBAK\r\n-----END KEY-----\n";
        let m = Masker::new([pem]);
        assert_eq!(m.mask("key: MIIBOgIBAAJBAK"), "key: ***");
        assert_eq!(m.mask("-----END KEY-----"), "***");
        assert_eq!(m.mask(&format!("all: {pem}")), "all: ***");
    }

    #[test]
    fn masker_debug_shows_no_value() {
        let m = Masker::new(["hunter2"]);
        assert_eq!(format!("{m:?}"), "Masker(1 values)");
    }

    #[test]
    fn references_in_order_each_once() {
        let text = "a ${{ secrets.TOKEN }} b ${{secrets.HOOK}} c ${{   secrets.TOKEN   }} \
                    ${{ vars.X }} ${{ secrets.bad-name }} ${{ secrets._x1 }}";
        assert_eq!(references(text), vec!["TOKEN", "HOOK", "_x1"]);
        assert!(references("plain $ {{ text }} ${{ unterminated").is_empty());
    }

    #[test]
    fn substitutes_known_secrets() {
        let lookup = |name: &str| match name {
            "USER" => Some("mara".to_string()),
            "PASS" => Some("s3cr3t ${{ secrets.USER }}".to_string()),
            _ => None,
        };
        assert_eq!(
            substitute("curl -u ${{ secrets.USER }}:${{secrets.PASS}} x", lookup).unwrap(),
            "curl -u mara:s3cr3t ${{ secrets.USER }} x",
            "a value is inserted as is, never expanded again"
        );
        assert_eq!(substitute("no refs", lookup).unwrap(), "no refs");
        assert_eq!(
            substitute("keep ${{ vars.X }} and ${{ open", lookup).unwrap(),
            "keep ${{ vars.X }} and ${{ open"
        );
        assert_eq!(substitute("", lookup).unwrap(), "");
    }

    #[test]
    fn unknown_or_malformed_secret_is_an_error_naming_it() {
        let lookup = |_: &str| None;
        let err = substitute("x ${{ secrets.MISSING }}", lookup).unwrap_err();
        assert!(err.contains("`MISSING`"), "{err}");
        let err = substitute("x ${{ secrets.9lives }}", |_| Some("v".into())).unwrap_err();
        assert!(err.contains("${{ secrets.9lives }}"), "{err}");
    }
}
