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

impl Subject {
    /// Does this subject name `principal`? `object_namespace` is the namespace
    /// of the object holding the subject (the default for ServiceAccounts).
    pub fn matches(&self, principal: &Principal, object_namespace: &str) -> bool {
        match self.kind {
            SubjectKind::User => principal.kind == SubjectKind::User && principal.name == self.name,
            SubjectKind::Group => {
                principal.kind == SubjectKind::User && principal.groups.iter().any(|g| *g == self.name)
            }
            SubjectKind::ServiceAccount => {
                let ns = self.namespace.as_deref().unwrap_or(object_namespace);
                principal.kind == SubjectKind::ServiceAccount
                    && principal.name == self.name
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
        assert!(s(SubjectKind::Group, "clinicians", None).matches(&user("bob", &["clinicians"]), "x"));
        assert!(!s(SubjectKind::Group, "billing-app", None).matches(&sa, "clinical"));
        assert!(s(SubjectKind::ServiceAccount, "billing-app", None).matches(&sa, "clinical"));
        assert!(!s(SubjectKind::ServiceAccount, "billing-app", None).matches(&sa, "other"));
        assert!(s(SubjectKind::ServiceAccount, "billing-app", Some("clinical")).matches(&sa, "other"));
        // A user named like a ServiceAccount is not that ServiceAccount.
        assert!(!s(SubjectKind::ServiceAccount, "billing-app", None).matches(&user("billing-app", &[]), "clinical"));
    }
}
