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

/// Is `name` a Kafka topic name — a literal, no glob? (1 to 249 of
/// letters, digits, `.`, `_`, `-`; not `.` or `..`, as Kafka requires.)
/// An AccessApproval grants named topics: a client chooses the names of its
/// request, and a `*` copied from one would turn into a glob once approved.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    const ALLOWED: &str =
        "a Kafka topic name has 1 to 249 letters, digits, '.', '_', '-', and no wildcards";
    let legal = !name.is_empty()
        && name.len() <= MAX_TOPIC_LEN
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if legal {
        Ok(())
    } else {
        Err(format!("{name:?} is not a Kafka topic name: {ALLOWED}"))
    }
}

/// One element of a topic glob.
#[derive(Clone, Copy, Debug)]
enum Token {
    /// A character that matches itself.
    Literal(u8),
    /// `*`: any run of characters except `.`.
    Star,
    /// `**`: any run of characters, `.` included.
    DoubleStar,
}

/// Splits a glob into tokens, reading `**` before `*` left to right (so
/// `***` is `**` then `*`; both match any run, as `**` alone does).
fn tokenize(pat: &[u8]) -> Vec<Token> {
    let mut tokens = Vec::with_capacity(pat.len());
    let mut i = 0;
    while let Some(&c) = pat.get(i) {
        if c != b'*' {
            tokens.push(Token::Literal(c));
            i += 1;
        } else if pat.get(i + 1) == Some(&b'*') {
            tokens.push(Token::DoubleStar);
            i += 2;
        } else {
            tokens.push(Token::Star);
            i += 1;
        }
    }
    tokens
}

/// Glob matcher by NFA simulation: `live[k]` says whether the first `k`
/// tokens can match the text read so far. Every text byte updates every
/// token once, so a match costs O(pattern × text) time, O(pattern) space,
/// and never backtracks: correct for any mix of `*` and `**` by
/// construction (the old last-star backtracking missed `**.phi-*` against
/// `us.phi-east.phi-records`).
fn glob_match(pat: &[u8], text: &[u8]) -> bool {
    if !pat.contains(&b'*') {
        return pat == text;
    }
    let tokens = tokenize(pat);
    let mut live = vec![false; tokens.len() + 1];
    live[0] = true;
    skip_stars(&tokens, &mut live);
    for &c in text {
        // All tokens consumed: nothing is left to match `c`.
        live[tokens.len()] = false;
        let mut any = false;
        // Descending, so `live[k]` still holds the state before `c` when
        // token `k` is read, while `live[k + 1]` already holds the one after.
        for (k, &token) in tokens.iter().enumerate().rev() {
            if !live[k] {
                continue;
            }
            let (stays, advances) = match token {
                Token::Literal(l) => (false, l == c),
                Token::Star => (c != b'.', false),
                Token::DoubleStar => (true, false),
            };
            if advances {
                live[k + 1] = true;
            }
            live[k] = stays;
            any |= stays || advances;
        }
        if !any {
            return false;
        }
        skip_stars(&tokens, &mut live);
    }
    live[tokens.len()]
}

/// A star may match the empty run: wherever a star token is reached, the
/// token after it is reached too.
fn skip_stars(tokens: &[Token], live: &mut [bool]) {
    for (k, token) in tokens.iter().enumerate() {
        if live[k] && !matches!(token, Token::Literal(_)) {
            live[k + 1] = true;
        }
    }
}

/// The authenticated caller of a connection.
///
/// An OIDC user is the pair (issuer, subject): two issuers may each mint a
/// token for a user called `alice`, and they are two people. Policy
/// matching ([`Subject::matches_from_issuer`]) compares both.
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
    /// The issuer (`iss`) of the validated token a User authenticated with;
    /// `None` for ServiceAccounts (Kubernetes names them, no token issuer
    /// does) and for the nameless caller before authentication.
    pub issuer: Option<String>,
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

    /// [`Subject::matches`] for a subject of an object that trusts the OIDC
    /// issuer `issuer` (a StreamPolicy's `identity.oidc.issuer`; `None`: the
    /// object trusts no issuer). User and Group subjects name users *of that
    /// issuer*: a principal from another issuer — or from none — is someone
    /// else, whatever its name or groups, so an issuer cannot mint a token
    /// for another issuer's user and get their rights. ServiceAccount
    /// subjects are named by Kubernetes and do not depend on the issuer.
    pub fn matches_from_issuer(
        &self,
        principal: &Principal,
        object_namespace: &str,
        issuer: Option<&str>,
    ) -> bool {
        let same_issuer = match self.kind {
            SubjectKind::User | SubjectKind::Group => {
                issuer.is_some() && principal.issuer.as_deref() == issuer
            }
            SubjectKind::ServiceAccount => true,
        };
        same_issuer && self.matches(principal, object_namespace)
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
            // A `*` after a `**` must not cut the `**`'s backtracking short.
            ("**.phi-*", "us.phi-east.phi-records", true),
            ("**.phi-*", "phi-records", false),
            ("**.phi-*", "us.phi-east.phi-records.x", false),
            ("**.patient-*", "x.patient-a.patient-b", true),
            ("**-*", "a-b.c-d", true),
            ("**-*", "a-b.cd", false),
            ("*.**.*", "a.b", false),
            ("*.**.*", "a..b", true),
            ("*.**.*", "a.b.c.d", true),
            ("*.**.*", "a", false),
            ("a**b*c", "a.b.bc", true),
            ("a**b*c", "a.b.b.c", false),
            ("*-**", "a.b-c", false),
            ("**.*.x", "a.b.x", true),
            ("**.*.x", "a.b.c.y.x", true),
            ("**.*.x", "a.x", false),
        ];
        for (pat, topic, want) in cases {
            assert_eq!(topic_matches(pat, topic), want, "{pat} vs {topic}");
        }
    }

    /// Issue 12: only the last star backtracked, so a `*` after a `**` made
    /// the `**` give up too early. A Deny rule or MaskingRule on such a glob
    /// failed open.
    #[test]
    fn issue_12_double_star_then_star_phi() {
        assert!(topic_matches("**.phi-*", "us.phi-east.phi-records"));
    }

    #[test]
    fn issue_12_double_star_then_star_patient() {
        assert!(topic_matches("**.patient-*", "x.patient-a.patient-b"));
    }

    /// Many stars against a long name that almost matches: quadratic at
    /// worst, never exponential.
    #[test]
    fn many_stars_stay_fast() {
        let name = format!("{}b", "a.".repeat(124));
        let pattern = "**a*".repeat(60);
        assert!(!topic_matches(&format!("{pattern}c"), &name));
        assert!(!topic_matches(&format!("{pattern}b"), &name));
        assert!(topic_matches(&format!("{pattern}.b"), &name));
    }

    /// Differential tests against an independent reference: the glob turned
    /// into an anchored regex (`**` → `.*`, `*` → `[^.]*`, anything else
    /// escaped), as the module docs define it.
    mod reference {
        use super::super::topic_matches;
        use proptest::prelude::*;
        use regex::Regex;

        fn reference_regex(pattern: &str) -> Regex {
            let mut re = String::from("^(?s:");
            let mut rest = pattern;
            while let Some(c) = rest.chars().next() {
                if let Some(after) = rest.strip_prefix("**") {
                    re.push_str(".*");
                    rest = after;
                } else if let Some(after) = rest.strip_prefix('*') {
                    re.push_str("[^.]*");
                    rest = after;
                } else {
                    re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
                    rest = &rest[c.len_utf8()..];
                }
            }
            re.push_str(")$");
            Regex::new(&re).unwrap()
        }

        /// Pieces of patterns: literals, `.`, `-` and both wildcards. Adjacent
        /// stars also produce `***` and longer runs.
        fn pattern_piece() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec!["a", "b", ".", "-", "*", "**"])
        }

        fn name_piece() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec!["a", "b", ".", "-"])
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(6000))]

            /// Random patterns against random names (mostly non-matches).
            #[test]
            fn agrees_with_reference_on_random_names(
                pattern in prop::collection::vec(pattern_piece(), 0..10),
                name in prop::collection::vec(name_piece(), 0..14),
            ) {
                let (pattern, name) = (pattern.concat(), name.concat());
                prop_assert_eq!(
                    topic_matches(&pattern, &name),
                    reference_regex(&pattern).is_match(&name),
                    "{} vs {}", pattern, name
                );
            }

            /// Names made from the pattern, each wildcard replaced by a random
            /// run that may contain a dot (so many match, and many only just
            /// fail because a `*` met a dot).
            #[test]
            fn agrees_with_reference_on_near_matches(
                pattern in prop::collection::vec(pattern_piece(), 0..10),
                fills in prop::collection::vec("[-ab.]{0,4}", 10),
            ) {
                let name: String = pattern
                    .iter()
                    .zip(&fills)
                    .map(|(piece, fill)| if piece.starts_with('*') { fill.as_str() } else { piece })
                    .collect();
                let pattern = pattern.concat();
                prop_assert_eq!(
                    topic_matches(&pattern, &name),
                    reference_regex(&pattern).is_match(&name),
                    "{} vs {}", pattern, name
                );
            }
        }

        /// Every pattern over `a . - *` up to 5 characters against every
        /// name over `a b . -` up to 4 characters.
        #[test]
        fn agrees_with_reference_exhaustively() {
            fn all(alphabet: &[char], max_len: usize) -> Vec<String> {
                let mut out = vec![String::new()];
                let mut last = vec![String::new()];
                for _ in 0..max_len {
                    last = last
                        .iter()
                        .flat_map(|s| alphabet.iter().map(move |&c| format!("{s}{c}")))
                        .collect();
                    out.extend(last.iter().cloned());
                }
                out
            }
            let names = all(&['a', 'b', '.', '-'], 4);
            for pattern in all(&['a', '.', '-', '*'], 5) {
                let re = reference_regex(&pattern);
                for name in &names {
                    assert_eq!(
                        topic_matches(&pattern, name),
                        re.is_match(name),
                        "{pattern} vs {name}"
                    );
                }
            }
        }
    }

    const IDP: &str = "https://idp.example.com";

    fn user(name: &str, groups: &[&str]) -> Principal {
        Principal {
            kind: SubjectKind::User,
            name: name.into(),
            namespace: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            issuer: Some(IDP.into()),
        }
    }

    #[test]
    fn subjects() {
        let sa = Principal {
            kind: SubjectKind::ServiceAccount,
            name: "billing-app".into(),
            namespace: Some("clinical".into()),
            groups: vec![],
            issuer: None,
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

    /// Issue 12 item 7: User and Group subjects of a policy name users of
    /// the issuer that policy trusts; ServiceAccounts need no issuer.
    #[test]
    fn subjects_from_an_issuer_match_only_its_users() {
        let other = |name: &str, groups: &[&str]| Principal {
            issuer: Some("https://other-idp.example.com".into()),
            ..user(name, groups)
        };
        let s = |kind, name: &str| Subject {
            kind,
            name: name.into(),
            namespace: None,
        };
        let sa = Principal {
            kind: SubjectKind::ServiceAccount,
            name: "billing-app".into(),
            namespace: Some("clinical".into()),
            groups: vec![],
            issuer: None,
        };
        let alice = s(SubjectKind::User, "alice");
        let clinicians = s(SubjectKind::Group, "clinicians");
        let anyone = s(SubjectKind::User, ANY_NAME);
        let trusted = Some(IDP);
        assert!(alice.matches_from_issuer(&user("alice", &[]), "clinical", trusted));
        assert!(!alice.matches_from_issuer(&other("alice", &[]), "clinical", trusted));
        assert!(clinicians.matches_from_issuer(&user("bob", &["clinicians"]), "x", trusted));
        assert!(!clinicians.matches_from_issuer(&other("bob", &["clinicians"]), "x", trusted));
        assert!(anyone.matches_from_issuer(&user("eve", &[]), "clinical", trusted));
        assert!(!anyone.matches_from_issuer(&other("eve", &[]), "clinical", trusted));
        // An object that trusts no issuer names no OIDC user.
        assert!(!alice.matches_from_issuer(&user("alice", &[]), "clinical", None));
        assert!(!anyone.matches_from_issuer(&user("alice", &[]), "clinical", None));
        // A user without an issuer (the caller before authentication) is nobody's.
        let no_issuer = Principal {
            issuer: None,
            ..user("alice", &[])
        };
        assert!(!alice.matches_from_issuer(&no_issuer, "clinical", trusted));
        // ServiceAccounts are Kubernetes' names, with or without an issuer.
        let app = s(SubjectKind::ServiceAccount, "billing-app");
        assert!(app.matches_from_issuer(&sa, "clinical", None));
        assert!(app.matches_from_issuer(&sa, "clinical", trusted));
        assert!(!app.matches_from_issuer(&user("billing-app", &[]), "clinical", trusted));
    }

    #[test]
    fn wildcard_subjects() {
        let sa = |name: &str, ns: &str| Principal {
            kind: ServiceAccount,
            name: name.into(),
            namespace: Some(ns.into()),
            groups: vec![],
            issuer: None,
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
    fn topic_names_are_literal() {
        for ok in [
            "patient-records",
            "claims.2026",
            "a_b-c.D9",
            &"a".repeat(249),
        ] {
            assert_eq!(check_topic_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "patients.**",
            "patients.*",
            "*",
            "",
            ".",
            "..",
            "a b",
            "a/b",
            &"a".repeat(250),
        ] {
            let err = check_topic_name(bad).unwrap_err();
            assert!(err.contains("not a Kafka topic name"), "{bad}: {err}");
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
