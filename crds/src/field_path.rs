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

impl FieldPath {
    /// JSON Pointers (RFC 6901) of every node of `value` this path selects,
    /// in document order. `$..b` selects `b` at any depth, through arrays too.
    pub fn select_pointers(&self, value: &serde_json::Value) -> Vec<String> {
        let mut current = vec![(String::new(), value)];
        for segment in &self.segments {
            let mut next = Vec::new();
            for (pointer, node) in current {
                match segment {
                    PathSegment::Child(name) => {
                        if let Some(child) = node.get(name.as_str()).filter(|_| node.is_object()) {
                            next.push((format!("{pointer}/{}", escape(name)), child));
                        }
                    }
                    PathSegment::AnyIndex => {
                        if let Some(items) = node.as_array() {
                            next.extend(
                                items
                                    .iter()
                                    .enumerate()
                                    .map(|(i, item)| (format!("{pointer}/{i}"), item)),
                            );
                        }
                    }
                    PathSegment::Descendant(name) => descendants(&pointer, node, name, &mut next),
                }
            }
            current = next;
        }
        current.into_iter().map(|(pointer, _)| pointer).collect()
    }
}

/// Every member `name` of `node` or of any object below it.
fn descendants<'v>(
    pointer: &str,
    node: &'v serde_json::Value,
    name: &str,
    out: &mut Vec<(String, &'v serde_json::Value)>,
) {
    match node {
        serde_json::Value::Object(map) => {
            for (key, child) in map {
                let child_pointer = format!("{pointer}/{}", escape(key));
                if key == name {
                    out.push((child_pointer.clone(), child));
                }
                descendants(&child_pointer, child, name, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                descendants(&format!("{pointer}/{i}"), item, name, out);
            }
        }
        _ => {}
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
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
    fn selects_json_pointers() {
        let record = serde_json::json!({
            "patient": {"name": {"given": "Ann"}, "dateOfBirth": "1970-01-01"},
            "encounter": {"diagnoses": [{"display": "x"}, {"display": "y", "dateOfBirth": "z"}]},
            "a/b": {"c": 1}
        });
        let select = |p: &str| FieldPath::parse(p).unwrap().select_pointers(&record);
        assert_eq!(select("$.patient.name.given"), ["/patient/name/given"]);
        assert_eq!(
            select("$.encounter.diagnoses[*].display"),
            [
                "/encounter/diagnoses/0/display",
                "/encounter/diagnoses/1/display"
            ]
        );
        assert_eq!(
            select("$..dateOfBirth"),
            ["/encounter/diagnoses/1/dateOfBirth", "/patient/dateOfBirth"]
        );
        assert_eq!(select("$.patient.missing"), Vec::<String>::new());
        assert_eq!(
            select("$.patient[*]"),
            Vec::<String>::new(),
            "[*] only walks arrays"
        );
        // Keys met on the way are escaped, so the pointer resolves.
        assert_eq!(select("$..c"), ["/a~1b/c"]);
        assert_eq!(record.pointer("/a~1b/c"), Some(&serde_json::json!(1)));
        for pointer in select("$..display") {
            assert!(record.pointer(&pointer).is_some(), "{pointer}");
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
