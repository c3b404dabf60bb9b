//! Topic ownership across namespaces: which topic globs each namespace's
//! StreamPolicies may name in Allow rules.
//!
//! Policies are namespaced but Kafka topics are cluster-wide, so without this
//! anyone allowed to write a StreamPolicy in one namespace could allow
//! `Read **` and reach another team's PHI. A cluster admin states the grants
//! in the operator's config (`--topic-grants` file or
//! `STREAMGATE_TOPIC_GRANTS_YAML`, chart value `topicGrants`):
//!
//! ```yaml
//! clinical: ["patient-*", "claims.**"]
//! billing: ["claims.**"]
//! ```
//!
//! A namespace not listed is granted nothing. Deny rules never need a grant
//! (they only narrow). With no grants configured at all, nothing is checked.
//!
//! "Within" is decided conservatively: a rule glob is within a grant when one
//! granted glob covers it *structurally* (see [`glob_within`]): sound (every
//! topic the rule glob can match is matched by that granted glob), but it does
//! not combine several granted globs, so a rule glob covered only by a union
//! (`a*` under grants `a` and `a?*`-like sets) is refused; name the rule's
//! topics more narrowly, or widen the grant.
use std::collections::BTreeMap;

use streamgate_crds::matching::check_topic_glob;
use streamgate_crds::{Effect, StreamPolicySpec};

/// Per-namespace topic-glob grants (cluster-admin configuration).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicGrants {
    by_namespace: BTreeMap<String, Vec<String>>,
}

/// An Allow rule naming topics outside its namespace's grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ungranted {
    pub rule: String,
    pub globs: Vec<String>,
}

impl TopicGrants {
    /// Parse `namespace: [glob, ...]` YAML (JSON is YAML too). Every glob
    /// must be a well-formed topic glob.
    pub fn parse(text: &str) -> Result<Self, String> {
        let by_namespace: BTreeMap<String, Vec<String>> = if text.trim().is_empty() {
            BTreeMap::new()
        } else {
            serde_yaml::from_str::<Option<BTreeMap<String, Vec<String>>>>(text)
                .map_err(|e| format!("topic grants: expected `namespace: [glob, ...]`: {e}"))?
                .unwrap_or_default()
        };
        for (ns, globs) in &by_namespace {
            for g in globs {
                check_topic_glob(g).map_err(|e| format!("topic grants of {ns:?}: {e}"))?;
            }
        }
        Ok(Self { by_namespace })
    }

    /// The globs `namespace` may name (empty: none).
    pub fn granted(&self, namespace: &str) -> &[String] {
        self.by_namespace
            .get(namespace)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Allow rules of `spec` (in `namespace`) naming a glob outside the grant,
    /// in rule order, each with the offending globs.
    pub fn ungranted(&self, namespace: &str, spec: &StreamPolicySpec) -> Vec<Ungranted> {
        let granted = self.granted(namespace);
        spec.rules
            .iter()
            .filter(|r| r.effect == Effect::Allow)
            .filter_map(|r| {
                let globs: Vec<String> = r
                    .topics
                    .iter()
                    .filter(|t| !granted.iter().any(|g| glob_within(t, g)))
                    .cloned()
                    .collect();
                (!globs.is_empty()).then(|| Ungranted {
                    rule: r.name.clone(),
                    globs,
                })
            })
            .collect()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(u8),
    /// `*`: any run without `.`.
    Star,
    /// `**`: any run.
    DoubleStar,
}

fn tokens(glob: &str) -> Vec<Tok> {
    let b = glob.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'*' {
            let double = b.get(i + 1) == Some(&b'*');
            out.push(if double { Tok::DoubleStar } else { Tok::Star });
            i += if double { 2 } else { 1 };
        } else {
            out.push(Tok::Lit(b[i]));
            i += 1;
        }
    }
    out
}

/// Is every topic `inner` can match also matched by `outer`? Decided by
/// matching `outer` against `inner`'s *text*: a literal of `outer` matches
/// only the same literal of `inner`; `outer`'s `*` consumes a run of
/// `inner` made of non-`.` literals and `*` (each of which can only produce
/// non-`.` text); `outer`'s `**` consumes anything. Any such match turns into
/// a match of every concrete topic of `inner`, so `true` is always right;
/// `false` may be over-cautious in corner cases, and a rule glob covered only
/// by the union of several granted globs is refused. Exact topic names reduce
/// to plain glob matching.
pub fn glob_within(inner: &str, outer: &str) -> bool {
    let p = tokens(inner);
    let g = tokens(outer);
    let (m, n) = (g.len(), p.len());
    // covers[i][j]: outer[i..] covers inner[j..].
    let mut covers = vec![vec![false; n + 1]; m + 1];
    covers[m][n] = true;
    for i in (0..m).rev() {
        for j in (0..=n).rev() {
            covers[i][j] = match g[i] {
                Tok::DoubleStar => covers[i + 1][j] || (j < n && covers[i][j + 1]),
                Tok::Star => {
                    covers[i + 1][j]
                        || (j < n
                            && p[j] != Tok::DoubleStar
                            && p[j] != Tok::Lit(b'.')
                            && covers[i][j + 1])
                }
                Tok::Lit(c) => j < n && p[j] == Tok::Lit(c) && covers[i + 1][j + 1],
            };
        }
    }
    covers[0][0]
}

/// The `Ready=False` message: each rule and glob outside the grant.
pub fn message(namespace: &str, grants: &TopicGrants, ungranted: &[Ungranted]) -> String {
    let rules: Vec<String> = ungranted
        .iter()
        .map(|u| format!("rule {:?} names {}", u.rule, u.globs.join(", ")))
        .collect();
    let granted = grants.granted(namespace);
    let grant = if granted.is_empty() {
        "no topics".to_string()
    } else {
        granted.join(", ")
    };
    format!(
        "topics outside namespace {namespace:?}'s grant ({grant}): {}; sidecars do not enforce these Allow rules (a cluster admin sets the grants in the operator's --topic-grants)",
        rules.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamgate_crds::matching::topic_matches;

    #[test]
    fn within_is_sound_on_examples() {
        let cases = [
            // (inner, outer, within?)
            ("patient-events", "patient-*", true),
            ("patient-*", "patient-*", true),
            ("patient-a*", "patient-*", true),
            ("patient-*", "patient-a*", false),
            ("patient.*", "patient-*", false),
            ("claims.*", "claims.**", true),
            ("claims.**", "claims.*", false),
            ("claims.*.q1", "claims.*", false),
            ("claims.*.q1", "claims.**", true),
            ("claims.*.*", "claims.**", true),
            ("**", "patient-*", false),
            ("*", "patient-*", false),
            ("**", "**", true),
            ("anything.at.all", "**", true),
            ("*", "**", true),
            ("*", "*", true),
            ("**", "*", false),
            ("a.b", "*", false),
            ("claims", "claims*", true),
            ("claims-*", "claims*", true),
            ("claims.x", "claims*", false),
            ("billing.claims", "claims*", false),
            ("*claims", "claims*", false),
        ];
        for (inner, outer, want) in cases {
            assert_eq!(glob_within(inner, outer), want, "{inner} within {outer}");
        }
    }

    /// Whenever `glob_within` says yes, every concrete topic drawn from the
    /// inner glob (wildcards replaced by sample runs) matches the outer one.
    #[test]
    fn within_implies_every_sample_topic_matches() {
        let globs = [
            "a", "a*", "*a", "a.*", "a.**", "**", "*", "*.*", "a*.b", "a.*.c", "**.c", "a**",
            "a-*-b", "*-*", "a.b.c",
        ];
        let fills_star = ["", "x", "a", "xa-b", "-"];
        let fills_double = ["", "x", ".", "a.b", "x.y.z", "a-"];
        for inner in globs {
            for outer in globs {
                if !glob_within(inner, outer) {
                    continue;
                }
                for s in fills_star {
                    for d in fills_double {
                        let topic = tokens(inner)
                            .iter()
                            .map(|t| match t {
                                Tok::Lit(c) => (*c as char).to_string(),
                                Tok::Star => s.to_string(),
                                Tok::DoubleStar => d.to_string(),
                            })
                            .collect::<String>();
                        assert!(topic_matches(inner, &topic), "sample {topic} of {inner}");
                        assert!(
                            topic_matches(outer, &topic),
                            "{inner} judged within {outer}, but {topic} escapes"
                        );
                    }
                }
            }
        }
    }

    fn spec(yaml: &str) -> StreamPolicySpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn only_allow_rules_outside_the_grant_are_reported() {
        let grants =
            TopicGrants::parse("clinical: [\"patient-*\", \"claims*\"]\nbilling: [\"claims*\"]\n")
                .unwrap();
        let s = spec(
            "rules:\n\
             - {name: own, subjects: [], topics: [patient-events, claims-2026], operations: [Read]}\n\
             - {name: grab-all, subjects: [], topics: [\"**\"], operations: [Read]}\n\
             - {name: mixed, subjects: [], topics: [claims, lab.results], operations: [Read], effect: Allow}\n\
             - {name: deny-all, subjects: [], topics: [\"**\"], operations: [Read], effect: Deny}\n",
        );
        let clinical = grants.ungranted("clinical", &s);
        assert_eq!(
            clinical,
            vec![
                Ungranted {
                    rule: "grab-all".into(),
                    globs: vec!["**".into()]
                },
                Ungranted {
                    rule: "mixed".into(),
                    globs: vec!["lab.results".into()]
                },
            ]
        );
        let billing: Vec<String> = grants
            .ungranted("billing", &s)
            .into_iter()
            .map(|u| u.rule)
            .collect();
        assert_eq!(billing, ["own", "grab-all", "mixed"]);
        // A namespace with no grant may name no topic in an Allow rule.
        assert_eq!(grants.ungranted("intake", &s).len(), 3);
        let msg = message("billing", &grants, &grants.ungranted("billing", &s));
        assert!(
            msg.contains("rule \"own\" names patient-events")
                && msg.contains("rule \"grab-all\" names **")
                && msg.contains("(claims*)"),
            "{msg}"
        );
    }

    #[test]
    fn malformed_grants_are_refused_with_the_namespace() {
        let err = TopicGrants::parse("clinical: [\"bad topic\"]").unwrap_err();
        assert!(err.contains("\"clinical\"") && err.contains("' '"), "{err}");
        assert!(TopicGrants::parse("clinical: patient-*").is_err());
        assert_eq!(TopicGrants::parse("").unwrap(), TopicGrants::default());
        assert_eq!(TopicGrants::parse("{}").unwrap(), TopicGrants::default());
    }
}
