//! Topic-glob and subject matching, shared by the operator and the proxy.
//!
//! Globs: `*` matches any run of characters except `.`; `**` matches any run
//! including `.`; every other character matches itself. So `claims.*`
//! matches `claims.2026` but not `claims.2026.q1`, and `claims.**` matches both.

use crate::common::{Subject, SubjectKind};

/// Does `topic` match the glob `pattern`?
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    glob_match(pattern.as_bytes(), topic.as_bytes())
}

/// Longest Kafka topic name; a glob longer than this cannot match anything.
const MAX_TOPIC_LEN: usize = 249;

/// Is `pattern` a well-formed topic glob? The error says what is wrong and
/// what is allowed: Kafka topic characters (letters, digits, `.`, `_`, `-`)
/// plus `*` and `**`.
pub fn check_topic_glob(pattern: &str) -> Result<(), String> {
    const ALLOWED: &str = "allowed: letters, digits, '.', '_', '-', and the wildcards * (within a segment) and ** (across segments)";
    if pattern.is_empty() {
        return Err(format!("topic glob \"\" is empty; {ALLOWED}"));
    }
    if pattern.len() > MAX_TOPIC_LEN {
        return Err(format!(
            "topic glob {pattern:?} is {} characters; Kafka topic names have at most {MAX_TOPIC_LEN}",
            pattern.len()
        ));
    }
    if let Some(bad) = pattern
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*')))
    {
        return Err(format!("topic glob {pattern:?} has {bad:?}; {ALLOWED}"));
    }
    if pattern.contains("***") {
        return Err(format!("topic glob {pattern:?} has '***'; {ALLOWED}"));
    }
    Ok(())
}

/// Iterative glob matcher with backtracking on the last star (linear for
/// typical patterns, no recursion, no allocation).
fn glob_match(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // (pattern index after the star, text index the star resumes at, crosses dots)
    let mut star: Option<(usize, usize, bool)> = None;
    while t < text.len() {
        if p < pat.len() && pat[p] == b'*' {
            let double = pat.get(p + 1) == Some(&b'*');
            p += if double { 2 } else { 1 };
            star = Some((p, t, double));
            continue;
        }
        if p < pat.len() && pat[p] == text[t] {
            p += 1;
            t += 1;
            continue;
        }
        match star {
            // The star swallows one more character, unless it is a dot and
            // the star is a single one.
            Some((sp, st, double)) if double || text[st] != b'.' => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1, double));
            }
            _ => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// The authenticated caller of a connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    /// `User` (OIDC) or `ServiceAccount` (workload identity). Never `Group`.
    pub kind: SubjectKind,
    /// OIDC username, or the ServiceAccount's name.
    pub name: String,
    /// The ServiceAccount's namespace; `None` for users.
    pub namespace: Option<String>,
    /// OIDC groups (empty for ServiceAccounts).
    pub groups: Vec<String>,
}

/// The subject name that matches every principal of its kind.
pub const ANY_NAME: &str = "*";

impl Subject {
    /// Is this the wildcard subject of its kind (`name: "*"`)?
    pub fn is_wildcard(&self) -> bool {
        self.name == ANY_NAME
    }

    /// Does this subject name `principal`? `object_namespace` is the namespace
    /// of the object holding the subject (the default for ServiceAccounts).
    ///
    /// `name: "*"` matches any principal of the kind: User `*` any
    /// authenticated OIDC user, Group `*` any OIDC user (with or without
    /// groups), ServiceAccount `*` any ServiceAccount of the subject's
    /// namespace (never of another namespace).
    pub fn matches(&self, principal: &Principal, object_namespace: &str) -> bool {
        let any = self.is_wildcard();
        match self.kind {
            SubjectKind::User => {
                principal.kind == SubjectKind::User && (any || principal.name == self.name)
            }
            SubjectKind::Group => {
                principal.kind == SubjectKind::User
                    && (any || principal.groups.contains(&self.name))
            }
            SubjectKind::ServiceAccount => {
                let ns = self.namespace.as_deref().unwrap_or(object_namespace);
                principal.kind == SubjectKind::ServiceAccount
                    && (any || principal.name == self.name)
                    && principal.namespace.as_deref() == Some(ns)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases = [
            ("claims.*", "claims.2026", true),
            ("claims.*", "claims.2026.q1", false),
            ("claims.**", "claims.2026.q1", true),
            ("claims.*", "claims.", true),
            ("claims.*", "claimsx", false),
            ("patient-*", "patient-events", true),
            ("patient-*", "patient", false),
            ("patient-records", "patient-records", true),
            ("patient-records", "patient-records2", false),
            ("*", "a.b", false),
            ("**", "a.b", true),
            ("*.events", "clinic.events", true),
            ("*.events", "clinic.x.events", false),
            ("**.events", "clinic.x.events", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("", "", true),
            ("", "a", false),
        ];
        for (pat, topic, want) in cases {
            assert_eq!(topic_matches(pat, topic), want, "{pat} vs {topic}");
        }
    }

    fn user(name: &str, groups: &[&str]) -> Principal {
        Principal {
            kind: SubjectKind::User,
            name: name.into(),
            namespace: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn subjects() {
        let sa = Principal {
            kind: SubjectKind::ServiceAccount,
            name: "billing-app".into(),
            namespace: Some("clinical".into()),
            groups: vec![],
        };
        let s = |kind, name: &str, ns: Option<&str>| Subject {
            kind,
            name: name.into(),
            namespace: ns.map(str::to_string),
        };
        assert!(s(SubjectKind::User, "alice", None).matches(&user("alice", &[]), "clinical"));
        assert!(!s(SubjectKind::User, "alice", None).matches(&user("bob", &[]), "clinical"));
        assert!(
            s(SubjectKind::Group, "clinicians", None).matches(&user("bob", &["clinicians"]), "x")
        );
        assert!(!s(SubjectKind::Group, "billing-app", None).matches(&sa, "clinical"));
        assert!(s(SubjectKind::ServiceAccount, "billing-app", None).matches(&sa, "clinical"));
        assert!(!s(SubjectKind::ServiceAccount, "billing-app", None).matches(&sa, "other"));
        assert!(
            s(SubjectKind::ServiceAccount, "billing-app", Some("clinical")).matches(&sa, "other")
        );
        // A user named like a ServiceAccount is not that ServiceAccount.
        assert!(
            !s(SubjectKind::ServiceAccount, "billing-app", None)
                .matches(&user("billing-app", &[]), "clinical")
        );
    }

    #[test]
    fn wildcard_subjects() {
        let sa = |name: &str, ns: &str| Principal {
            kind: ServiceAccount,
            name: name.into(),
            namespace: Some(ns.into()),
            groups: vec![],
        };
        let any = |kind, ns: Option<&str>| Subject {
            kind,
            name: "*".into(),
            namespace: ns.map(str::to_string),
        };
        use SubjectKind::*;
        // (subject, principal, namespace of the object holding the subject, matches?)
        let cases = [
            (any(User, None), user("alice", &[]), "clinical", true),
            (any(User, None), user("bob", &["g"]), "other", true),
            (
                any(User, None),
                sa("billing-app", "clinical"),
                "clinical",
                false,
            ),
            (any(Group, None), user("alice", &[]), "clinical", true),
            (
                any(Group, None),
                user("bob", &["clinicians"]),
                "clinical",
                true,
            ),
            (
                any(Group, None),
                sa("billing-app", "clinical"),
                "clinical",
                false,
            ),
            (
                any(ServiceAccount, None),
                sa("billing-app", "clinical"),
                "clinical",
                true,
            ),
            (
                any(ServiceAccount, None),
                sa("intake", "clinical"),
                "clinical",
                true,
            ),
            (
                any(ServiceAccount, None),
                sa("billing-app", "other"),
                "clinical",
                false,
            ),
            (
                any(ServiceAccount, Some("other")),
                sa("billing-app", "other"),
                "clinical",
                true,
            ),
            (
                any(ServiceAccount, Some("other")),
                sa("billing-app", "clinical"),
                "clinical",
                false,
            ),
            (
                any(ServiceAccount, None),
                user("alice", &[]),
                "clinical",
                false,
            ),
            // "*" is only special as the whole name: a literal group called "*x" is not a wildcard.
            (
                Subject {
                    kind: Group,
                    name: "*x".into(),
                    namespace: None,
                },
                user("alice", &["clinicians"]),
                "clinical",
                false,
            ),
        ];
        for (i, (subject, principal, ns, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                subject.matches(&principal, ns),
                want,
                "case {i}: {subject:?} vs {principal:?} in {ns}"
            );
        }
    }

    #[test]
    fn topic_glob_syntax() {
        for ok in [
            "claims.*",
            "**",
            "patient-events",
            "a_b.c-d.*.x",
            "*.events",
        ] {
            assert_eq!(check_topic_glob(ok), Ok(()), "{ok}");
        }
        let bad = [
            ("", "is empty"),
            ("a.***", "has '***'"),
            ("bad topic", "has ' '"),
            ("claims/2026", "has '/'"),
            ("claims.?", "has '?'"),
        ];
        for (pattern, want) in bad {
            let err = check_topic_glob(pattern).unwrap_err();
            assert!(
                err.contains(want) && err.contains("allowed:"),
                "{pattern}: {err}"
            );
        }
        assert!(
            check_topic_glob(&"a".repeat(250))
                .unwrap_err()
                .contains("at most 249")
        );
    }
}
