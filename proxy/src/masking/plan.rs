//! Compiled rules (`RulePlan`), the plan for one topic and reader
//! (`MaskPlan`), and the audit counters (`MaskCounts`).
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use streamgate_crds::{Detector, MaskFormat, MaskStrategy, MaskTarget, MaskingRuleSpec};

use super::detect::{DetectorError, Detectors, tag};
use super::json::{self, FieldRule};
use super::path::{FieldPath, PathError};
use super::strategy::HashKey;

/// What replaces a `Json` value that is not valid JSON.
pub const UNPARSEABLE_JSON: &[u8] = br#"{"streamgate":"unparseable"}"#;
/// What replaces a `Text` value that is not valid UTF-8.
pub const UNPARSEABLE_TEXT: &[u8] = b"[UNPARSEABLE]";
/// What replaces every value of a topic whose rule failed to compile.
pub const BLOCKED: &[u8] = br#"{"streamgate":"masking-rule-invalid"}"#;

/// Default for `Partial` without `keepLast`.
pub const DEFAULT_KEEP_LAST: u32 = 4;

/// Why a MaskingRule cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("MaskingRule {rule}: {source}")]
    Path { rule: String, source: PathError },
    #[error("MaskingRule {rule}: {source}")]
    Detector { rule: String, source: DetectorError },
    #[error("MaskingRule {rule}: field {path} uses Hash but spec.hashKeySecretRef is not set")]
    MissingHashKey { rule: String, path: String },
    #[error("MaskingRule {rule}: the hash key cannot be loaded: {reason}")]
    HashKey { rule: String, reason: String },
    /// `patientFields` without a loadable key: the rule masks as before, but
    /// its records are counted unattributed in the audit trail.
    #[error("MaskingRule {rule}: the patient key cannot be loaded: {reason}")]
    PatientKey { rule: String, reason: String },
    #[error("MaskingRule {rule}: format Text takes detectors only, not fields")]
    FieldsWithText { rule: String },
    #[error("MaskingRule {rule}: spec.targets is empty")]
    NoTargets { rule: String },
}

/// Masking counters for the audit record: how many values were masked per
/// field path and per detector — never the values themselves.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MaskCounts {
    /// Records examined: with a value, or a key or header value a rule
    /// targets (null ones excluded).
    pub records: u64,
    /// Records changed (value, key or any header value).
    pub masked_records: u64,
    /// Per field path as written in the rule, e.g. `$.patient.ssn`.
    pub fields: BTreeMap<String, u64>,
    /// Per detector tag, e.g. `[SSN]`.
    pub detectors: BTreeMap<String, u64>,
    /// Values that did not parse as the rule's format and were replaced by a marker.
    pub unparseable: u64,
    /// Values blocked because their rule failed to compile.
    pub blocked: u64,
}

impl MaskCounts {
    pub(crate) fn found(&mut self, d: Detector) {
        *self.detectors.entry(tag(d).to_string()).or_default() += 1;
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &MaskCounts) {
        self.records += other.records;
        self.masked_records += other.masked_records;
        self.unparseable += other.unparseable;
        self.blocked += other.blocked;
        for (k, v) in &other.fields {
            *self.fields.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.detectors {
            *self.detectors.entry(k.clone()).or_default() += v;
        }
    }

    /// Did masking change anything?
    pub fn is_empty(&self) -> bool {
        self.masked_records == 0
    }
}

/// One compiled MaskingRule.
#[derive(Debug)]
pub struct RulePlan {
    name: String,
    format: MaskFormat,
    fields: Vec<FieldRule>,
    detectors: Detectors,
    key: Option<HashKey>,
    /// The parts of a record the rule masks (`spec.targets`).
    targets: Vec<MaskTarget>,
    /// The rule did not compile: every value is replaced (fail closed).
    blocked: bool,
}

impl RulePlan {
    /// Compiles `spec`; `key` is the HMAC key named by `hashKeySecretRef`
    /// (already read by the IO edge), needed when a field uses `Hash`.
    pub fn compile(
        name: &str,
        spec: &MaskingRuleSpec,
        key: Option<HashKey>,
    ) -> Result<Self, CompileError> {
        let rule = || name.to_string();
        if spec.format == MaskFormat::Text && !spec.fields.is_empty() {
            return Err(CompileError::FieldsWithText { rule: rule() });
        }
        if spec.targets.is_empty() {
            return Err(CompileError::NoTargets { rule: rule() });
        }
        let mut fields = Vec::with_capacity(spec.fields.len());
        for f in &spec.fields {
            let path = FieldPath::parse(&f.path).map_err(|source| CompileError::Path {
                rule: rule(),
                source,
            })?;
            if f.strategy == MaskStrategy::Hash && key.is_none() {
                return Err(CompileError::MissingHashKey {
                    rule: rule(),
                    path: f.path.clone(),
                });
            }
            let keep_last = f.keep_last.unwrap_or(DEFAULT_KEEP_LAST) as usize;
            fields.push(FieldRule {
                path,
                strategy: f.strategy,
                keep_last,
            });
        }
        let detectors =
            Detectors::compile(&spec.detectors, spec.mrn_pattern.as_deref()).map_err(|source| {
                CompileError::Detector {
                    rule: rule(),
                    source,
                }
            })?;
        Ok(Self {
            name: name.to_string(),
            format: spec.format,
            fields,
            detectors,
            key,
            targets: spec.targets.clone(),
            blocked: false,
        })
    }

    /// A plan for a rule that failed to compile: it hides every value, and
    /// every key and header value its `targets` name.
    pub fn blocked(name: &str, targets: &[MaskTarget]) -> Self {
        let mut all = vec![MaskTarget::Value];
        all.extend(targets.iter().filter(|t| **t != MaskTarget::Value));
        Self {
            name: name.to_string(),
            format: MaskFormat::Text,
            fields: Vec::new(),
            detectors: Detectors::default(),
            key: None,
            targets: all,
            blocked: true,
        }
    }

    /// Does the rule mask this part of a record?
    pub fn targets(&self, target: MaskTarget) -> bool {
        self.targets.contains(&target)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Masks one record value (or a key or header value, read the same
    /// way). `None`: unchanged.
    fn mask(&self, value: &[u8], counts: &mut MaskCounts) -> Option<Vec<u8>> {
        if self.blocked {
            counts.blocked += 1;
            return Some(BLOCKED.to_vec());
        }
        match self.format {
            MaskFormat::Json => {
                match json::rewrite(
                    value,
                    &self.fields,
                    &self.detectors,
                    self.key.as_ref(),
                    counts,
                ) {
                    Ok(out) => out,
                    Err(json::Invalid) => {
                        counts.unparseable += 1;
                        Some(UNPARSEABLE_JSON.to_vec())
                    }
                }
            }
            MaskFormat::Text => match std::str::from_utf8(value) {
                Ok(text) => match self.detectors.scan(text, |d| counts.found(d)) {
                    std::borrow::Cow::Borrowed(_) => None,
                    std::borrow::Cow::Owned(s) => Some(s.into_bytes()),
                },
                Err(_) => {
                    counts.unparseable += 1;
                    Some(UNPARSEABLE_TEXT.to_vec())
                }
            },
        }
    }
}

/// What to do to the records of one topic for one reader (or writer): the
/// rules that apply, in name order.
#[derive(Debug, Clone)]
pub struct MaskPlan {
    rules: Vec<Arc<RulePlan>>,
    /// Does any rule target keys / header values? (Most plans mask values
    /// only: the batch rewriter then leaves keys and headers unread.)
    keys: bool,
    headers: bool,
    /// The most bytes of records one batch may hold once decompressed;
    /// larger batches are refused (see [`super::DEFAULT_MAX_BATCH_BYTES`]).
    max_batch_bytes: usize,
}

impl MaskPlan {
    pub fn new(rules: Vec<Arc<RulePlan>>) -> Self {
        Self {
            keys: rules.iter().any(|r| r.targets(MaskTarget::Key)),
            headers: rules.iter().any(|r| r.targets(MaskTarget::Headers)),
            rules,
            max_batch_bytes: super::DEFAULT_MAX_BATCH_BYTES,
        }
    }

    /// A plan with one rule.
    pub fn single(rule: RulePlan) -> Self {
        Self::new(vec![Arc::new(rule)])
    }

    /// The same plan with another per-batch budget (`--masking-max-batch-bytes`).
    pub fn with_max_batch_bytes(mut self, max_batch_bytes: usize) -> Self {
        self.max_batch_bytes = max_batch_bytes;
        self
    }

    /// The most bytes of records one batch may hold once decompressed.
    pub fn max_batch_bytes(&self) -> usize {
        self.max_batch_bytes
    }

    /// The names of the rules applied (for the audit record).
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name())
    }

    /// Does any rule mask this part of a record?
    pub fn masks(&self, target: MaskTarget) -> bool {
        match target {
            MaskTarget::Value => self.rules.iter().any(|r| r.targets(target)),
            MaskTarget::Key => self.keys,
            MaskTarget::Headers => self.headers,
        }
    }

    /// Masks one record value (counted as one record examined); `None` when
    /// the value passes unchanged.
    pub fn mask_value(&self, value: &[u8], counts: &mut MaskCounts) -> Option<Vec<u8>> {
        counts.records += 1;
        let out = self.mask_part(MaskTarget::Value, value, counts);
        if out.is_some() {
            counts.masked_records += 1;
        }
        out
    }

    /// Masks one part of a record — the value, the key or a header value —
    /// with the rules that target it, in order; `None` when it passes
    /// unchanged. Record counts are the caller's.
    pub fn mask_part(
        &self,
        target: MaskTarget,
        bytes: &[u8],
        counts: &mut MaskCounts,
    ) -> Option<Vec<u8>> {
        let mut current: Option<Vec<u8>> = None;
        for rule in self.rules.iter().filter(|r| r.targets(target)) {
            let input = current.as_deref().unwrap_or(bytes);
            if let Some(next) = rule.mask(input, counts) {
                current = Some(next);
            }
        }
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamgate_crds::{FieldMask, SecretKeyRef};

    pub(crate) fn spec(
        format: MaskFormat,
        fields: &[(&str, MaskStrategy)],
        detectors: &[Detector],
    ) -> MaskingRuleSpec {
        MaskingRuleSpec {
            topics: vec!["patient-*".into()],
            format,
            targets: vec![MaskTarget::Value],
            fields: fields
                .iter()
                .map(|(p, s)| FieldMask {
                    path: (*p).into(),
                    strategy: *s,
                    keep_last: None,
                })
                .collect(),
            detectors: detectors.to_vec(),
            mrn_pattern: None,
            hash_key_secret_ref: Some(SecretKeyRef {
                name: "k".into(),
                key: "hmac".into(),
            }),
            patient_fields: vec![],
            patient_key_secret_ref: None,
            exempt_subjects: vec![],
            apply_to: vec![],
        }
    }

    fn key() -> Option<HashKey> {
        HashKey::new(b"test-key".to_vec())
    }

    #[test]
    fn unparseable_values_become_markers() {
        let plan = MaskPlan::single(
            RulePlan::compile("r", &spec(MaskFormat::Json, &[], &[Detector::SSN]), key()).unwrap(),
        );
        let mut c = MaskCounts::default();
        assert_eq!(
            plan.mask_value(b"SSN 838-39-8865", &mut c).unwrap(),
            UNPARSEABLE_JSON
        );
        assert_eq!(c.unparseable, 1);

        let plan = MaskPlan::single(
            RulePlan::compile("r", &spec(MaskFormat::Text, &[], &[Detector::SSN]), key()).unwrap(),
        );
        let mut c = MaskCounts::default();
        assert_eq!(
            plan.mask_value(b"\xff838-39-8865", &mut c).unwrap(),
            UNPARSEABLE_TEXT
        );
        assert_eq!(
            plan.mask_value(b"SSN 838-39-8865!", &mut c).unwrap(),
            b"SSN [SSN]!"
        );
        assert_eq!(plan.mask_value(b"nothing", &mut c), None);
        assert_eq!((c.records, c.masked_records, c.unparseable), (3, 2, 1));
        assert_eq!(c.detectors.get("[SSN]"), Some(&1));
    }

    #[test]
    fn compile_errors_are_clear() {
        let e = RulePlan::compile(
            "r",
            &spec(MaskFormat::Json, &[("ssn", MaskStrategy::Redact)], &[]),
            key(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("starts with `$`"), "{e}");
        let e = RulePlan::compile(
            "r",
            &spec(MaskFormat::Json, &[("$.a", MaskStrategy::Hash)], &[]),
            None,
        )
        .unwrap_err();
        assert!(matches!(e, CompileError::MissingHashKey { .. }), "{e}");
        let e = RulePlan::compile(
            "r",
            &spec(MaskFormat::Text, &[("$.a", MaskStrategy::Redact)], &[]),
            key(),
        )
        .unwrap_err();
        assert!(matches!(e, CompileError::FieldsWithText { .. }), "{e}");
        let e = RulePlan::compile("r", &spec(MaskFormat::Json, &[], &[Detector::MRN]), key())
            .unwrap_err();
        assert!(e.to_string().contains("mrnPattern"), "{e}");
    }

    #[test]
    fn blocked_rule_hides_everything() {
        let plan = MaskPlan::single(RulePlan::blocked("broken", &[]));
        let mut c = MaskCounts::default();
        assert_eq!(plan.mask_value(b"{\"ok\":1}", &mut c).unwrap(), BLOCKED);
        assert_eq!(c.blocked, 1);
    }

    #[test]
    fn rules_compose() {
        let a = RulePlan::compile(
            "a",
            &spec(MaskFormat::Json, &[("$.ssn", MaskStrategy::Redact)], &[]),
            key(),
        )
        .unwrap();
        let b = RulePlan::compile("b", &spec(MaskFormat::Json, &[], &[Detector::Email]), key())
            .unwrap();
        let plan = MaskPlan::new(vec![Arc::new(a), Arc::new(b)]);
        let mut c = MaskCounts::default();
        let out = plan
            .mask_value(br#"{"ssn":"838-39-8865","m":"a@b.org"}"#, &mut c)
            .unwrap();
        assert_eq!(out, br#"{"ssn":"[REDACTED]","m":"[EMAIL]"}"#);
        assert_eq!(c.masked_records, 1);
    }
}
