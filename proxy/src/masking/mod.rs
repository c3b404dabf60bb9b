//! Masking PHI in the stream (MaskingRule).
//!
//! # Interface for the connection code
//!
//! ```text
//! // once per namespace (and again whenever the MaskingRules change):
//! let (set, errors) = MaskingSet::compile_from_secret_dir(namespace, &rules, secret_dir);
//! for e in &errors { tracing::error!(%e, "masking rule fails closed") }   // never logs key bytes
//!
//! // Simplest: on the decoded message (see `wire`), in place; re-encode when
//! // `masked.changed`; audit `masked.topics`; failures are already answered
//! // in the response (Fetch) or must refuse the request (Produce: Err):
//! let masked = mask_fetch_response(&set, &principal, &mut fetch_response, |t| topic_name(t));
//! let masked = mask_produce_request(&set, &principal, &mut produce_request, |t| topic_name(t))?;
//!
//! // Or per (topic, partition) with non-null `records`:
//! if let Some(plan) = set.plan_for(topic, &principal, ApplyTo::Fetch) {
//!     match mask_record_set(&plan, &records) {
//!         Ok((masked, counts)) => { records = masked; audit.masking(topic, plan.rule_names(), &counts) }
//!         // never forward the original bytes: answer the partition with an
//!         // error (e.g. CORRUPT_MESSAGE / UNKNOWN_SERVER_ERROR) and empty records
//!         Err(e) => ...
//!     }
//! }
//! // Produce request, per (topic, partition): the same with ApplyTo::Produce
//! // and `mask_produce_records` (a truncated batch is an error there).
//! ```
//!
//! Memory: no batch is decompressed (or copied) past the set's budget,
//! `--masking-max-batch-bytes` ([`DEFAULT_MAX_BATCH_BYTES`]); a larger batch
//! is refused like any other that cannot be masked (`MaskError::TooLarge`),
//! never forwarded unmasked. The connection code moves masking whose
//! [`wire::fetch_work`]/[`wire::produce_work`] exceeds
//! [`wire::INLINE_MAX_WORK`] to the blocking pool.
//!
//! `plan_for` returns `None` when no rule covers the topic for that
//! direction, or the principal is exempt from every rule that does
//! (`exemptSubjects`): the records pass byte-identical. A `MaskPlan` is
//! cheap to clone (a list of `Arc`s) and can be kept per connection.
//!
//! # Layout (pure cores, IO only in `key`)
//! - `path`     — field path parser/matcher (`$.a.b`, `$.a[*].b`, `$..b`)
//! - `detect`   — PHI detectors (SSN, Email, Phone, CreditCard, NPI, MRN);
//!   non-ASCII text scanned through a folded copy (Unicode digits, dashes,
//!   full-width forms), JSON numbers where the member name says what they hold
//! - `strategy` — Redact, Partial, Hash (HMAC-SHA256), and the `HashKey`
//! - `json`     — streaming JSON rewriter (masks in place, keeps other bytes)
//! - `plan`     — compiled rules, `MaskPlan::mask_value`, `MaskCounts`
//! - `batch`    — RecordBatch v2 rewriting (values masked; keys and header
//!   values too where a rule's `targets` name them; CRC recomputed)
//! - `codec`    — gzip/snappy/lz4/zstd via kafka-protocol's compression module
//! - `key`      — IO edge: the HMAC key from `--secret-dir DIR/<name>/<key>`
//!
//! Dependencies used here and why: `hmac`/`sha2` (keyed pseudonyms), `regex`
//! (detectors), `crc32c` (batch checksums), `kafka-protocol`'s compression
//! module (snappy), `flate2`/`lz4`/`zstd`/`snap` (added for masking:
//! size-capped decompression, fast gzip/lz4/zstd writing;
//! all already in the tree through kafka-protocol), `serde_json` (decoding
//! escaped JSON strings).
//!
//! Several rules covering the same topic all apply, in rule-name order,
//! each to the parts of a record its `targets` name (value by default; key,
//! header values). A rule that fails to compile (bad path, missing key, bad
//! `mrnPattern`, no targets) fails closed: every value of its topics — and
//! every key and header value it targets — is replaced by a marker.
use std::path::Path;
use std::sync::Arc;

use streamgate_crds::matching::{Principal, topic_matches};
use streamgate_crds::{ApplyTo, MaskingRuleSpec, SecretKeyRef, Subject};

use crate::policy::decide::MaskingDoc;

pub mod batch;
pub mod codec;
pub mod detect;
pub mod json;
pub mod key;
pub mod path;
pub mod patients;
pub mod plan;
pub mod state;
pub mod strategy;
pub mod wire;

pub use batch::{MaskError, Trailing, mask_produce_records, mask_record_set, mask_records};
pub use key::{KeyError, read_hash_key};
pub use patients::{PartitionPatients, PatientFields, patient_pseudonym};
pub use plan::{CompileError, MaskCounts, MaskPlan, RulePlan};
pub use strategy::HashKey;
pub use wire::{Masked, PartitionFailure, TopicMasking, mask_fetch_response, mask_produce_request};

/// The default per-batch budget: how many bytes of records one batch may
/// hold once decompressed. Masking holds a batch's records and their masked
/// copy at once, per connection, so this is kept far below the sidecar's
/// memory limit (256 MiB): 8 MiB is eight times Kafka's default
/// `max.message.bytes`.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 8 << 20;

/// One compiled MaskingRule with its scope.
#[derive(Debug)]
struct ScopedRule {
    topics: Vec<String>,
    exempt: Vec<Subject>,
    apply_to: Vec<ApplyTo>,
    plan: Arc<RulePlan>,
    /// `patientFields`, for every reader and both directions.
    patients: Option<Arc<PatientFields>>,
}

/// The compiled MaskingRules of one namespace.
#[derive(Debug)]
pub struct MaskingSet {
    namespace: String,
    rules: Vec<ScopedRule>,
    /// Handed to every plan (see [`DEFAULT_MAX_BATCH_BYTES`]).
    max_batch_bytes: usize,
    /// The one OIDC issuer the pod's policies trust, if exactly one: User
    /// and Group exemptions name users of it. With several, a name does not
    /// say whose user is meant, so no User/Group exemption applies (masked:
    /// fail closed); ServiceAccount exemptions are unaffected.
    exempt_issuer: Option<String>,
}

impl Default for MaskingSet {
    fn default() -> Self {
        Self {
            namespace: String::new(),
            rules: Vec::new(),
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            exempt_issuer: None,
        }
    }
}

impl MaskingSet {
    /// The same set with another per-batch budget (`--masking-max-batch-bytes`).
    pub fn with_max_batch_bytes(mut self, max_batch_bytes: usize) -> Self {
        self.max_batch_bytes = max_batch_bytes;
        self
    }

    /// The issuer whose users User/Group exemptions name (see the field).
    pub fn with_exempt_issuer(mut self, issuer: Option<String>) -> Self {
        self.exempt_issuer = issuer;
        self
    }

    /// The per-batch budget its plans get.
    pub fn max_batch_bytes(&self) -> usize {
        self.max_batch_bytes
    }

    /// Compiles `rules` (name, spec) of `namespace`; `key_for` loads the HMAC
    /// key of a rule's `hashKeySecretRef`. Rules that fail to compile are
    /// returned as errors and fail closed in the set.
    pub fn compile(
        namespace: &str,
        rules: &[(String, MaskingRuleSpec)],
        mut key_for: impl FnMut(&SecretKeyRef) -> Result<HashKey, KeyError>,
    ) -> (Self, Vec<CompileError>) {
        let mut sorted: Vec<&(String, MaskingRuleSpec)> = rules.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut errors = Vec::new();
        let mut compiled = Vec::with_capacity(sorted.len());
        for (name, spec) in sorted {
            let key = match &spec.hash_key_secret_ref {
                Some(r) => match key_for(r) {
                    Ok(k) => Ok(Some(k)),
                    Err(e) => Err(CompileError::HashKey {
                        rule: name.clone(),
                        reason: e.to_string(),
                    }),
                },
                None => Ok(None),
            };
            let plan = key
                .and_then(|k| RulePlan::compile(name, spec, k))
                .unwrap_or_else(|e| {
                    errors.push(e);
                    RulePlan::blocked(name, &spec.targets)
                });
            let patients = (!spec.patient_fields.is_empty())
                .then(|| compile_patients(name, spec, &mut key_for, &mut errors));
            compiled.push(ScopedRule {
                topics: spec.topics.clone(),
                exempt: spec.exempt_subjects.clone(),
                apply_to: spec.apply_to.clone(),
                plan: Arc::new(plan),
                patients: patients.map(Arc::new),
            });
        }
        (
            Self {
                namespace: namespace.to_string(),
                rules: compiled,
                ..Self::default()
            },
            errors,
        )
    }

    /// [`MaskingSet::compile`] with keys read from a mounted Secret directory.
    pub fn compile_from_secret_dir(
        namespace: &str,
        rules: &[(String, MaskingRuleSpec)],
        secret_dir: &Path,
    ) -> (Self, Vec<CompileError>) {
        Self::compile(namespace, rules, |r| read_hash_key(secret_dir, r))
    }

    /// [`MaskingSet::compile_from_secret_dir`] from the MaskingRules the
    /// policy sources loaded (`CompiledPolicy::masking_rules()`), keeping
    /// those of `namespace`.
    pub fn from_docs(
        namespace: &str,
        docs: &[MaskingDoc],
        secret_dir: &Path,
    ) -> (Self, Vec<CompileError>) {
        let rules: Vec<(String, MaskingRuleSpec)> = docs
            .iter()
            .filter(|d| d.namespace == namespace)
            .map(|d| (d.name.clone(), d.spec.clone()))
            .collect();
        Self::compile_from_secret_dir(namespace, &rules, secret_dir)
    }

    /// Does any rule apply in `direction`? When not, the connection code
    /// need not decode that message at all.
    pub fn has_rules_for(&self, direction: ApplyTo) -> bool {
        self.rules.iter().any(|r| r.apply_to.contains(&direction))
    }

    /// Does any rule name where its records' patients are? Then every Fetch
    /// response and Produce request is read for them, whoever the reader.
    pub fn names_patients(&self) -> bool {
        self.rules.iter().any(|r| r.patients.is_some())
    }

    /// The `patientFields` of every rule covering `topic` (any direction,
    /// exempt readers included); empty: the topic's records name no patient.
    pub fn patients_for(&self, topic: &str) -> Vec<Arc<PatientFields>> {
        self.rules
            .iter()
            .filter(|r| r.topics.iter().any(|t| topic_matches(t, topic)))
            .filter_map(|r| r.patients.clone())
            .collect()
    }

    /// The masking to apply to `topic` for `principal` in `direction`;
    /// `None`: records pass unchanged.
    pub fn plan_for(
        &self,
        topic: &str,
        principal: &Principal,
        direction: ApplyTo,
    ) -> Option<MaskPlan> {
        let rules: Vec<Arc<RulePlan>> = self
            .rules
            .iter()
            .filter(|r| r.apply_to.contains(&direction))
            .filter(|r| r.topics.iter().any(|t| topic_matches(t, topic)))
            .filter(|r| {
                !r.exempt.iter().any(|s| {
                    s.matches_from_issuer(principal, &self.namespace, self.exempt_issuer.as_deref())
                })
            })
            .map(|r| Arc::clone(&r.plan))
            .collect();
        if rules.is_empty() {
            None
        } else {
            Some(MaskPlan::new(rules).with_max_batch_bytes(self.max_batch_bytes))
        }
    }

    /// Does any rule mask `topic` in `direction` for someone (exempt or not)?
    pub fn covers(&self, topic: &str, direction: ApplyTo) -> bool {
        self.rules.iter().any(|r| {
            r.apply_to.contains(&direction) && r.topics.iter().any(|t| topic_matches(t, topic))
        })
    }

    /// Does `principal` see `topic` in clear text (no rule masks it for them)?
    pub fn sees_clear_text(&self, topic: &str, principal: &Principal, direction: ApplyTo) -> bool {
        self.plan_for(topic, principal, direction).is_none()
    }
}

/// A rule's `patientFields` with the key of its `patientKeySecretRef`; a
/// failure is reported and leaves the rule unable to attribute (its records
/// are counted unattributed), its masking untouched.
fn compile_patients(
    name: &str,
    spec: &MaskingRuleSpec,
    key_for: &mut impl FnMut(&SecretKeyRef) -> Result<HashKey, KeyError>,
    errors: &mut Vec<CompileError>,
) -> PatientFields {
    let key = match &spec.patient_key_secret_ref {
        Some(r) => key_for(r).map_err(|e| CompileError::PatientKey {
            rule: name.to_string(),
            reason: e.to_string(),
        }),
        None => Err(CompileError::PatientKey {
            rule: name.to_string(),
            reason: "spec.patientKeySecretRef is not set".into(),
        }),
    };
    let fields = key.and_then(|k| {
        PatientFields::compile(&spec.patient_fields, k).map_err(|source| CompileError::Path {
            rule: name.to_string(),
            source,
        })
    });
    fields.unwrap_or_else(|e| {
        errors.push(e);
        PatientFields::unattributable()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamgate_crds::{FieldMask, MaskFormat, MaskStrategy, SubjectKind};

    fn rule(topics: &[&str], apply_to: Vec<ApplyTo>, hash: bool) -> MaskingRuleSpec {
        MaskingRuleSpec {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            format: MaskFormat::Json,
            targets: vec![streamgate_crds::MaskTarget::Value],
            fields: vec![FieldMask {
                path: "$.ssn".into(),
                strategy: if hash {
                    MaskStrategy::Hash
                } else {
                    MaskStrategy::Redact
                },
                keep_last: None,
            }],
            detectors: vec![],
            mrn_pattern: None,
            hash_key_secret_ref: hash.then(|| SecretKeyRef {
                name: "masking-key".into(),
                key: "hmac".into(),
            }),
            patient_fields: vec![],
            patient_key_secret_ref: None,
            exempt_subjects: vec![Subject {
                kind: SubjectKind::Group,
                name: "treating-clinicians".into(),
                namespace: None,
            }],
            apply_to,
        }
    }

    fn user(groups: &[&str]) -> Principal {
        Principal {
            kind: SubjectKind::User,
            name: "alice".into(),
            namespace: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            issuer: Some("https://idp.example.com".into()),
        }
    }

    fn no_key(_: &SecretKeyRef) -> Result<HashKey, KeyError> {
        Err(KeyError::Empty { path: "x".into() })
    }

    #[test]
    fn plans_by_topic_direction_and_exemption() {
        let (set, errors) = MaskingSet::compile(
            "clinical",
            &[(
                "a".into(),
                rule(&["patient-*"], vec![ApplyTo::Fetch], false),
            )],
            no_key,
        );
        assert!(errors.is_empty());
        // With several trusted issuers (none set) a name does not say whose
        // user is meant: no User/Group exemption applies (fail closed).
        assert!(
            set.plan_for(
                "patient-events",
                &user(&["treating-clinicians"]),
                ApplyTo::Fetch
            )
            .is_some()
        );
        let set = set.with_exempt_issuer(Some("https://idp.example.com".into()));
        let reader = user(&["billing"]);
        assert!(
            set.plan_for("patient-events", &reader, ApplyTo::Fetch)
                .is_some()
        );
        assert!(
            set.plan_for("patient-events", &reader, ApplyTo::Produce)
                .is_none()
        );
        assert!(set.plan_for("claims", &reader, ApplyTo::Fetch).is_none());
        assert!(set.sees_clear_text(
            "patient-events",
            &user(&["treating-clinicians"]),
            ApplyTo::Fetch
        ));
        assert!(set.covers("patient-events", ApplyTo::Fetch));
    }

    #[test]
    fn a_rule_whose_key_is_missing_fails_closed() {
        let (set, errors) = MaskingSet::compile(
            "clinical",
            &[("a".into(), rule(&["patient-*"], vec![ApplyTo::Fetch], true))],
            no_key,
        );
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("hash key"), "{}", errors[0]);
        let plan = set
            .plan_for("patient-events", &user(&[]), ApplyTo::Fetch)
            .unwrap();
        let mut c = MaskCounts::default();
        assert_eq!(
            plan.mask_value(br#"{"ok":1}"#, &mut c).unwrap(),
            plan::BLOCKED
        );
    }

    #[test]
    fn keys_come_from_the_secret_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("masking-key")).unwrap();
        std::fs::write(dir.path().join("masking-key/hmac"), b"k").unwrap();
        let rules = [("a".into(), rule(&["p"], vec![ApplyTo::Produce], true))];
        let (set, errors) = MaskingSet::compile_from_secret_dir("ns", &rules, dir.path());
        assert!(errors.is_empty(), "{errors:?}");
        let plan = set.plan_for("p", &user(&[]), ApplyTo::Produce).unwrap();
        let mut c = MaskCounts::default();
        let out = String::from_utf8(
            plan.mask_value(br#"{"ssn":"838-39-8865"}"#, &mut c)
                .unwrap(),
        )
        .unwrap();
        let key = HashKey::new(b"k".to_vec()).unwrap();
        assert_eq!(
            out,
            format!(
                r#"{{"ssn":"{}"}}"#,
                strategy::pseudonym(&key, b"838-39-8865")
            )
        );
    }
}
