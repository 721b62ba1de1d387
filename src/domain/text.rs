//! Small text helpers shared by the parsers and the pages.

/// A number of things: whether it is exactly one. Implemented for the
/// integer types and references to them (templates pass references).
pub trait Count: std::fmt::Display {
    fn is_one(&self) -> bool;
}

macro_rules! count {
    ($($t:ty),*) => {
        $(impl Count for $t {
            fn is_one(&self) -> bool {
                *self == 1
            }
        })*
    };
}
count!(i32, i64, u32, u64, usize);

impl<T: Count + ?Sized> Count for &T {
    fn is_one(&self) -> bool {
        (**self).is_one()
    }
}

/// `FromStr` and `TryFrom<String>` for a type read from text by its
/// `parse` (errors are its [`DomainError`](super::DomainError)s); with
/// `owned`, `parse` takes the `String` itself.
macro_rules! parse_impls {
    ($name:ident $(, $owned:ident)?) => {
        impl std::str::FromStr for $name {
            type Err = $crate::domain::DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::domain::DomainError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                parse_impls!(@arg $name, value $(, $owned)?)
            }
        }
    };
    (@arg $name:ident, $value:ident) => {
        $name::parse(&$value)
    };
    (@arg $name:ident, $value:ident, owned) => {
        $name::parse($value)
    };
}
pub(crate) use parse_impls;

/// A count with its noun, singular for exactly one: `plural(1, "round",
/// "rounds")` is "1 round", `plural(0, …)` "0 rounds", `plural(2, …)`
/// "2 rounds". Every "N things" shown to a person goes through it.
pub fn plural(n: impl Count, one: &str, many: &str) -> String {
    format!("{n} {}", if n.is_one() { one } else { many })
}

/// Levenshtein distance between `a` and `b`, in characters (for "did you mean" hints).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::{edit_distance, plural};

    #[test]
    fn plurals() {
        assert_eq!(plural(1, "round", "rounds"), "1 round");
        assert_eq!(plural(0, "round", "rounds"), "0 rounds");
        assert_eq!(plural(2usize, "approval", "approvals"), "2 approvals");
        assert_eq!(
            plural(1u64, "more approval", "more approvals"),
            "1 more approval"
        );
        assert_eq!(plural(-1i32, "day", "days"), "-1 days");
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("trigger", "trigers"), 2);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("abc", ""), 3);
    }
}
