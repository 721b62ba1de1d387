//! Small readers shared by the form's parts: a field's `id`, an error
//! message as a sentence, a list of patterns, a duration field.

use crate::domain::Duration;
use crate::domain::definition::fields::DurationField;

/// A form field's `id`: its `name` with `.` and `_` made `-`.
pub(super) fn field_id(name: &str) -> String {
    name.replace(['.', '_'], "-")
}

/// An error message as a sentence: capitalised, ending with a full stop.
pub(super) fn sentence(text: impl std::fmt::Display) -> String {
    let text = text.to_string();
    let mut chars = text.chars();
    let mut out: String = match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => return text,
    };
    if !out.ends_with(['.', '?', '!']) {
        out.push('.');
    }
    out
}

/// Splits a list typed with commas, spaces or new lines.
pub(super) fn patterns(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// A duration field by the domain's rule: empty is its default; a
/// positive one refuses `0s`.
pub(super) fn duration_field(
    text: &str,
    field: DurationField,
    what: &str,
) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(field.default);
    }
    match Duration::parse(text) {
        Ok(d) if !field.accepts(d) => Err(format!("{what} must be longer than 0s.")),
        Ok(d) => Ok(d),
        Err(e) => Err(sentence(e)),
    }
}
