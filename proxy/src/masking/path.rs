//! Field paths: the subset `$.a.b`, `$.a[*].b`, `$..b` (and combinations such
//! as `$..items[*].ssn`), parsed once when a rule is compiled.
//!
//! Grammar: `$` followed by one or more steps; a step is `.name` (a child
//! key), `[*]` (every array element) or `..name` (a key at any depth below).
//! A name is one or more characters other than `.`, `[`, `]` and whitespace.
use std::fmt;

/// One step of a compiled path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `.name`: the member `name` of an object.
    Child(String),
    /// `[*]`: every element of an array.
    AnyIndex,
    /// `..name`: the member `name` of an object at any depth below.
    Descendant(String),
}

/// A parsed field path.
#[derive(Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    steps: Vec<Step>,
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldPath({})", self.text)
    }
}

/// Why a path does not parse; `at` is a byte offset into the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field path {path:?} at byte {at}: {reason}")]
pub struct PathError {
    pub path: String,
    pub at: usize,
    pub reason: &'static str,
}

/// One element of the concrete location of a value inside a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(std::borrow::Cow<'a, str>),
    Index,
}

impl FieldPath {
    /// Parses `text`, e.g. `$.patient.ssn`, `$.items[*].code`, `$..dateOfBirth`.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let err = |at, reason| PathError {
            path: text.to_string(),
            at,
            reason,
        };
        let b = text.as_bytes();
        if b.first() != Some(&b'$') {
            return Err(err(0, "a path starts with `$`"));
        }
        let mut steps = Vec::new();
        let mut i = 1;
        while i < b.len() {
            match b[i] {
                b'.' => {
                    let descendant = b.get(i + 1) == Some(&b'.');
                    let start = i + if descendant { 2 } else { 1 };
                    let end = name_end(b, start);
                    if end == start {
                        return Err(err(start, "expected a field name after `.`"));
                    }
                    let name = text[start..end].to_string();
                    steps.push(if descendant {
                        Step::Descendant(name)
                    } else {
                        Step::Child(name)
                    });
                    i = end;
                }
                b'[' => {
                    if b.get(i + 1..i + 3) != Some(b"*]".as_slice()) {
                        return Err(err(i, "only `[*]` is supported inside brackets"));
                    }
                    steps.push(Step::AnyIndex);
                    i += 3;
                }
                _ => return Err(err(i, "expected `.name`, `..name` or `[*]`")),
            }
        }
        if steps.is_empty() {
            return Err(err(
                1,
                "the whole value (`$`) cannot be a field; use detectors or Text",
            ));
        }
        Ok(Self {
            text: text.to_string(),
            steps,
        })
    }

    /// The path as written in the rule (used as the audit counter key).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Does the concrete location `at` match this path?
    pub fn matches(&self, at: &[Seg<'_>]) -> bool {
        matches_steps(&self.steps, at)
    }
}

fn name_end(b: &[u8], start: usize) -> usize {
    let mut end = start;
    while end < b.len() && !matches!(b[end], b'.' | b'[' | b']') && !b[end].is_ascii_whitespace() {
        end += 1;
    }
    end
}

fn matches_steps(steps: &[Step], at: &[Seg<'_>]) -> bool {
    let Some((step, rest)) = steps.split_first() else {
        return at.is_empty();
    };
    match step {
        Step::Child(name) => match at.split_first() {
            Some((Seg::Key(k), tail)) => k == name && matches_steps(rest, tail),
            _ => false,
        },
        Step::AnyIndex => match at.split_first() {
            Some((Seg::Index, tail)) => matches_steps(rest, tail),
            _ => false,
        },
        Step::Descendant(name) => at.iter().enumerate().any(|(i, seg)| {
            matches!(seg, Seg::Key(k) if k == name) && matches_steps(rest, &at[i + 1..])
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Seg<'_> {
        Seg::Key(k.into())
    }

    #[test]
    fn parses_supported_forms() {
        assert_eq!(
            FieldPath::parse("$.patient.ssn").unwrap().steps,
            vec![Step::Child("patient".into()), Step::Child("ssn".into())]
        );
        assert_eq!(
            FieldPath::parse("$.a[*].b").unwrap().steps,
            vec![
                Step::Child("a".into()),
                Step::AnyIndex,
                Step::Child("b".into())
            ]
        );
        assert_eq!(
            FieldPath::parse("$..dateOfBirth").unwrap().steps,
            vec![Step::Descendant("dateOfBirth".into())]
        );
        assert_eq!(
            FieldPath::parse("$..items[*][*].x").unwrap().steps,
            vec![
                Step::Descendant("items".into()),
                Step::AnyIndex,
                Step::AnyIndex,
                Step::Child("x".into())
            ]
        );
    }

    #[test]
    fn rejects_bad_paths_with_a_position() {
        for (bad, at) in [
            ("patient.ssn", 0),
            ("$", 1),
            ("$.", 2),
            ("$..", 3),
            ("$.a[0]", 3),
            ("$.a b", 3),
            ("$a", 1),
        ] {
            let e = FieldPath::parse(bad).unwrap_err();
            assert_eq!(e.at, at, "{bad}: {e}");
        }
    }

    #[test]
    fn matching() {
        let p = FieldPath::parse("$.patient.ssn").unwrap();
        assert!(p.matches(&[key("patient"), key("ssn")]));
        assert!(!p.matches(&[key("patient")]));
        assert!(!p.matches(&[key("patient"), key("ssn"), key("x")]));
        assert!(!p.matches(&[key("other"), key("patient"), key("ssn")]));

        let p = FieldPath::parse("$.a[*].b").unwrap();
        assert!(p.matches(&[key("a"), Seg::Index, key("b")]));
        assert!(!p.matches(&[key("a"), key("b")]));

        let p = FieldPath::parse("$..dob").unwrap();
        assert!(p.matches(&[key("dob")]));
        assert!(p.matches(&[key("x"), Seg::Index, key("dob")]));
        assert!(!p.matches(&[key("dob"), key("y")]));

        let p = FieldPath::parse("$..name.given").unwrap();
        assert!(p.matches(&[key("a"), key("name"), key("given")]));
        assert!(!p.matches(&[key("a"), key("name"), key("x"), key("given")]));
    }
}
