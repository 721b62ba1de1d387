//! Release versions and the templates that make them.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::DomainError;
use super::text::parse_impls;

/// The longest version accepted, in characters.
pub const MAX_VERSION_LEN: usize = 100;

fn is_version_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')
}

/// The version of a release, unique within its pipeline (`1.0.7`, `20270328.4`).
///
/// Non-empty, at most 100 characters of `[A-Za-z0-9._+-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version(String);

impl Version {
    /// Validates `value` as a version.
    pub fn parse(value: impl Into<String>) -> Result<Self, DomainError> {
        let value = value.into();
        let reason = if value.is_empty() {
            Some("a version must not be empty".to_owned())
        } else if value.chars().count() > MAX_VERSION_LEN {
            Some(format!(
                "a version is at most {MAX_VERSION_LEN} characters long"
            ))
        } else {
            value
                .chars()
                .find(|c| !is_version_char(*c))
                .map(|c| format!("character `{c}` is not allowed (allowed: A-Z a-z 0-9 . _ + -)"))
        };
        match reason {
            None => Ok(Version(value)),
            Some(reason) => Err(DomainError::InvalidVersion { value, reason }),
        }
    }

    /// The version as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

parse_impls!(Version, owned);

impl From<Version> for String {
    fn from(value: Version) -> String {
        value.0
    }
}

impl AsRef<str> for Version {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A placeholder of a version template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placeholder {
    Build,
    Date,
    Branch,
    Sha7,
    Tag,
}

impl Placeholder {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "build" => Placeholder::Build,
            "date" => Placeholder::Date,
            "branch" => Placeholder::Branch,
            "sha7" => Placeholder::Sha7,
            "tag" => Placeholder::Tag,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Placeholder(Placeholder),
}

/// The values a version template is rendered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionContext {
    /// The build number, counting from 1 per pipeline.
    pub build: u64,
    /// The build date (`{date}` renders as `YYYYMMDD`).
    pub date: NaiveDate,
    /// The branch that was built (`{branch}` replaces characters a version
    /// cannot hold, such as `/`, with `-`).
    pub branch: String,
    /// The full commit id (`{sha7}` is its first seven characters).
    pub sha: String,
    /// The git tag on the commit, if any (`{tag}` fails without one).
    pub tag: Option<String>,
}

/// How a release's version is made: `1.0.{build}`, `{date}.{build}`, `{tag}`.
///
/// Placeholders: `{build}`, `{date}`, `{branch}`, `{sha7}`, `{tag}`. At least
/// one of `{build}`, `{sha7}`, `{tag}` or `{date}` must appear; literal text is
/// limited to the characters a [`Version`] may contain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VersionTemplate(String);

impl VersionTemplate {
    /// Validates a template.
    pub fn parse(text: impl Into<String>) -> Result<Self, DomainError> {
        let text = text.into();
        match Self::segments(&text) {
            Ok(segments) => {
                let distinct = segments.iter().any(|s| {
                    matches!(
                        s,
                        Segment::Placeholder(
                            Placeholder::Build
                                | Placeholder::Sha7
                                | Placeholder::Tag
                                | Placeholder::Date
                        )
                    )
                });
                if distinct {
                    Ok(VersionTemplate(text))
                } else {
                    Err(DomainError::InvalidVersionTemplate {
                        value: text,
                        reason: "must contain at least one of {build}, {sha7}, {tag} or {date} \
                                 so that versions differ"
                            .to_owned(),
                    })
                }
            }
            Err(reason) => Err(DomainError::InvalidVersionTemplate {
                value: text,
                reason,
            }),
        }
    }

    fn segments(text: &str) -> Result<Vec<Segment>, String> {
        let mut segments = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after_open) = rest.strip_prefix('{') {
                let Some(close) = after_open.find(['}', '{']) else {
                    return Err("unbalanced `{`: a placeholder must end with `}`".to_owned());
                };
                if after_open[close..].starts_with('{') {
                    return Err("unbalanced `{`: a placeholder must end with `}`".to_owned());
                }
                let name = &after_open[..close];
                let placeholder = Placeholder::from_name(name).ok_or_else(|| {
                    format!(
                        "unknown placeholder `{{{name}}}`; expected one of {{build}}, {{date}}, \
                         {{branch}}, {{sha7}}, {{tag}}"
                    )
                })?;
                segments.push(Segment::Placeholder(placeholder));
                rest = &after_open[close + 1..];
            } else {
                let end = rest.find('{').unwrap_or(rest.len());
                let literal = &rest[..end];
                if literal.contains('}') {
                    return Err("unbalanced `}` without a matching `{`".to_owned());
                }
                if let Some(c) = literal.chars().find(|c| !is_version_char(*c)) {
                    return Err(format!(
                        "character `{c}` is not allowed in a version (allowed: A-Z a-z 0-9 . _ + -)"
                    ));
                }
                segments.push(Segment::Literal(literal.to_owned()));
                rest = &rest[end..];
            }
        }
        Ok(segments)
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Makes the version of a build.
    pub fn render(&self, ctx: &VersionContext) -> Result<Version, DomainError> {
        let segments =
            Self::segments(&self.0).map_err(|reason| DomainError::InvalidVersionTemplate {
                value: self.0.clone(),
                reason,
            })?;
        let mut out = String::new();
        for segment in segments {
            match segment {
                Segment::Literal(text) => out.push_str(&text),
                Segment::Placeholder(Placeholder::Build) => out.push_str(&ctx.build.to_string()),
                Segment::Placeholder(Placeholder::Date) => {
                    out.push_str(&ctx.date.format("%Y%m%d").to_string())
                }
                Segment::Placeholder(Placeholder::Branch) => out.extend(
                    ctx.branch
                        .chars()
                        .map(|c| if is_version_char(c) { c } else { '-' }),
                ),
                Segment::Placeholder(Placeholder::Sha7) => {
                    out.extend(ctx.sha.chars().take(7).map(|c| c.to_ascii_lowercase()))
                }
                Segment::Placeholder(Placeholder::Tag) => match &ctx.tag {
                    Some(tag) => out.push_str(tag),
                    None => {
                        return Err(DomainError::InvalidVersion {
                            value: self.0.clone(),
                            reason: "the template uses {tag} but the commit has no tag".to_owned(),
                        });
                    }
                },
            }
        }
        Version::parse(out)
    }
}

impl fmt::Display for VersionTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

parse_impls!(VersionTemplate, owned);

impl From<VersionTemplate> for String {
    fn from(value: VersionTemplate) -> String {
        value.0
    }
}

#[cfg(test)]
// Tests may unwrap: a panic is a failed test. (`allow`, not `expect`, so this
// stays quiet if clippy.toml sets `allow-unwrap-in-tests`.)
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ctx() -> VersionContext {
        VersionContext {
            build: 7,
            date: NaiveDate::from_ymd_opt(2027, 3, 28).unwrap(),
            branch: "feature/x".to_owned(),
            sha: "ABCDEF0123456789".to_owned(),
            tag: Some("v2.1.0".to_owned()),
        }
    }

    #[test]
    fn renders_placeholders() {
        let cases = [
            ("1.0.{build}", "1.0.7"),
            ("{date}.{build}", "20270328.7"),
            ("{tag}", "v2.1.0"),
            ("{branch}-{sha7}", "feature-x-abcdef0"),
            ("0.{build}+{sha7}", "0.7+abcdef0"),
        ];
        for (template, version) in cases {
            let t = VersionTemplate::parse(template).unwrap();
            assert_eq!(t.render(&ctx()).unwrap().as_str(), version);
        }
    }

    #[test]
    fn rejects_bad_templates() {
        for (bad, needle) in [
            ("1.0.{nope}", "unknown placeholder `{nope}`"),
            ("1.0.{build", "unbalanced `{`"),
            ("1.0.build}", "unbalanced `}`"),
            ("1.0.{{build}}", "unbalanced `{`"),
            ("{branch}", "at least one of"),
            ("1.0", "at least one of"),
            ("", "at least one of"),
            ("1 .{build}", "character ` `"),
        ] {
            let err = VersionTemplate::parse(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn tag_is_required_when_used() {
        let mut c = ctx();
        c.tag = None;
        assert!(VersionTemplate::parse("{tag}").unwrap().render(&c).is_err());
    }

    #[test]
    fn versions_are_validated() {
        assert!(Version::parse("1.0.7").is_ok());
        assert!(Version::parse("").is_err());
        assert!(Version::parse("1 0").is_err());
        assert!(Version::parse("a/b").is_err());
        assert!(Version::parse("a".repeat(100)).is_ok());
        assert!(Version::parse("a".repeat(101)).is_err());
    }
}
