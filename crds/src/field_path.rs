//! The field-path subset a `MaskingRule` accepts: `$.a.b`, `$.a[*].b`, `$..b`.
//!
//! Parsed here (not in the proxy) so the operator refuses a bad path with the
//! same grammar the proxy's masker evaluates.

use std::fmt;

/// One step of a [`FieldPath`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathSegment {
    /// `.name`: the member `name` of an object.
    Child(String),
    /// `[*]`: every element of an array.
    AnyIndex,
    /// `..name`: the member `name` of this value or of any object below it.
    Descendant(String),
}

/// A parsed field path, e.g. `$.patient.name.given` or `$..dateOfBirth`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldPath {
    pub segments: Vec<PathSegment>,
}

/// Why a path is outside the supported subset.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "field path {path:?} {reason} (supported: $.a.b, $.a[*].b, $..b; member names use letters, digits, '_' and '-')"
)]
pub struct FieldPathError {
    pub path: String,
    pub reason: String,
}

impl FieldPath {
    /// Parse `path`; every problem names the path and what is allowed.
    pub fn parse(path: &str) -> Result<Self, FieldPathError> {
        let fail = |reason: String| FieldPathError {
            path: path.to_string(),
            reason,
        };
        let Some(mut rest) = path.strip_prefix('$') else {
            return Err(fail("must start with '$'".into()));
        };
        let mut segments = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("[*]") {
                segments.push(PathSegment::AnyIndex);
                rest = after;
                continue;
            }
            let (descendant, after_dots) = if let Some(after) = rest.strip_prefix("..") {
                (true, after)
            } else if let Some(after) = rest.strip_prefix('.') {
                (false, after)
            } else {
                return Err(fail(format!(
                    "has {rest:?} where '.name', '..name' or '[*]' was expected"
                )));
            };
            let name_len = after_dots
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(after_dots.len());
            if name_len == 0 {
                let what = if after_dots.is_empty() {
                    "ends without a member name".to_string()
                } else {
                    format!("has no member name before {after_dots:?}")
                };
                return Err(fail(what));
            }
            let name = after_dots[..name_len].to_string();
            segments.push(if descendant {
                PathSegment::Descendant(name)
            } else {
                PathSegment::Child(name)
            });
            rest = &after_dots[name_len..];
        }
        if segments.is_empty() {
            return Err(fail("selects the whole record; name a field".into()));
        }
        Ok(Self { segments })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("$")?;
        for segment in &self.segments {
            match segment {
                PathSegment::Child(name) => write!(f, ".{name}")?,
                PathSegment::AnyIndex => f.write_str("[*]")?,
                PathSegment::Descendant(name) => write!(f, "..{name}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathSegment::*;

    #[test]
    fn parses_the_supported_subset() {
        let cases: [(&str, Vec<PathSegment>); 5] = [
            (
                "$.patient.ssn",
                vec![Child("patient".into()), Child("ssn".into())],
            ),
            (
                "$.encounter.diagnoses[*].display",
                vec![
                    Child("encounter".into()),
                    Child("diagnoses".into()),
                    AnyIndex,
                    Child("display".into()),
                ],
            ),
            ("$..dateOfBirth", vec![Descendant("dateOfBirth".into())]),
            (
                "$.diagnosisCodes[*]",
                vec![Child("diagnosisCodes".into()), AnyIndex],
            ),
            ("$.a_b.c-d", vec![Child("a_b".into()), Child("c-d".into())]),
        ];
        for (text, want) in cases {
            let parsed = FieldPath::parse(text).unwrap();
            assert_eq!(parsed.segments, want, "{text}");
            assert_eq!(parsed.to_string(), text, "round trip");
        }
    }

    #[test]
    fn refuses_paths_outside_the_subset() {
        let cases = [
            ("patient.ssn", "must start with '$'"),
            ("$", "selects the whole record"),
            ("$.", "ends without a member name"),
            ("$...a", "no member name"),
            ("$.a[0]", "where '.name', '..name' or '[*]' was expected"),
            ("$['a']", "where '.name', '..name' or '[*]' was expected"),
            ("$.a b", "where '.name', '..name' or '[*]' was expected"),
            ("", "must start with '$'"),
        ];
        for (text, want) in cases {
            let err = FieldPath::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.contains("supported: $.a.b"), "{text}: {err}");
        }
    }
}
