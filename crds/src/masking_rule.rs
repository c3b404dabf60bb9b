//! `MaskingRule` (`mr`): which fields a reader sees masked.
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Condition, Subject};

/// Which fields of which topics' records a reader sees masked.
// Each `printcolumn(..)` repeats `type_`/`priority`; clippy reads that as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "streamgate.dev",
    version = "v1alpha1",
    kind = "MaskingRule",
    namespaced,
    status = "MaskingRuleStatus",
    shortname = "mr",
    category = "streamgate",
    doc = "Which fields of which topics' records a reader sees masked.",
    printcolumn(
        name = "Topics",
        type_ = "string",
        json_path = ".spec.topics",
        description = "Topic globs this rule masks"
    ),
    printcolumn(
        name = "Format",
        type_ = "string",
        json_path = ".spec.format",
        priority = 1
    ),
    printcolumn(
        name = "Apply-To",
        type_ = "string",
        json_path = ".spec.applyTo",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the rule is valid and distributed"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.fields) || !self.fields.exists(f, f.strategy == 'Hash') || has(self.hashKeySecretRef)"
).message("a field with strategy Hash needs spec.hashKeySecretRef (the HMAC key)").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new(
    "!has(self.detectors) || !self.detectors.exists(d, d == 'MRN') || has(self.mrnPattern)"
).message("the MRN detector needs spec.mrnPattern (a regular expression for your record numbers)").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new(
    "!has(self.patientFields) || size(self.patientFields) == 0 || has(self.patientKeySecretRef)"
).message("spec.patientFields needs spec.patientKeySecretRef (the HMAC key for patient pseudonyms)").reason(Reason::FieldValueRequired))]
#[serde(rename_all = "camelCase")]
pub struct MaskingRuleSpec {
    /// Topic globs this rule applies to.
    #[schemars(length(max = 64), inner(length(max = 249)))]
    pub topics: Vec<String>,
    /// How record values are read (and keys and header values, when targeted).
    #[serde(default)]
    pub format: MaskFormat,
    /// Which parts of each record are masked and scanned (default `[Value]`).
    /// `Key` reads the record key, `Headers` each header value (header names
    /// are kept), both in `format` like the value: under `Json`, a key or
    /// header that is not JSON is replaced by a marker. For plain-string keys
    /// or headers, target them from a second rule with format `Text`.
    #[serde(default = "default_targets")]
    #[schemars(length(min = 1, max = 3))]
    pub targets: Vec<MaskTarget>,
    /// Field paths: `$.a.b`, `$.a[*].b`, `$..b`.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub fields: Vec<FieldMask>,
    /// Detectors that also scan every other string value.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub detectors: Vec<Detector>,
    /// A regular expression for medical record numbers (used by the `MRN` detector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrn_pattern: Option<String>,
    /// The HMAC key for `Hash`; never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key_secret_ref: Option<SecretKeyRef>,
    /// Subjects that see clear text.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub exempt_subjects: Vec<Subject>,
    /// Where each record of these topics names its patient (`$.patient.mrn`,
    /// `$.subscriber.id`; the `fields` path syntax), read from the record
    /// value as the broker holds it, for every reader — exempt ones too. The
    /// audit record of each Fetch and Produce then carries keyed pseudonyms
    /// of the patients it disclosed (an accounting of disclosures); never
    /// the identifiers themselves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub patient_fields: Vec<String>,
    /// The HMAC key for the patient pseudonyms in the audit trail; never
    /// logged. Give every rule the same key: a privacy officer's report
    /// (`audit disclosures --key`) finds a patient under one key. Keep it
    /// apart from `hashKeySecretRef`, so a reader's `Hash` pseudonyms cannot
    /// be matched against the trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_key_secret_ref: Option<SecretKeyRef>,
    /// Where masking happens (default `[Fetch]`).
    #[serde(default = "default_apply_to")]
    #[schemars(length(max = 2))]
    pub apply_to: Vec<ApplyTo>,
}

fn default_apply_to() -> Vec<ApplyTo> {
    vec![ApplyTo::Fetch]
}

fn default_targets() -> Vec<MaskTarget> {
    vec![MaskTarget::Value]
}

/// A part of a record that a rule masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum MaskTarget {
    /// The record value.
    Value,
    /// The record key.
    Key,
    /// Every header value (names are kept).
    Headers,
}

/// Record value format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum MaskFormat {
    #[default]
    Json,
    /// The whole value as a string (detectors only).
    Text,
}

/// One masked field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new(
    "self.strategy == 'Partial' ? has(self.keepLast) : !has(self.keepLast)"
).message("keepLast is required with strategy Partial and not allowed with any other strategy"))]
#[serde(rename_all = "camelCase")]
pub struct FieldMask {
    pub path: String,
    pub strategy: MaskStrategy,
    /// Only with `Partial`: how many trailing characters stay visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
}

/// How a field is masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum MaskStrategy {
    /// `"[REDACTED]"`.
    Redact,
    /// All but the last `keepLast` characters replaced.
    Partial,
    /// Keyed HMAC-SHA256: a stable pseudonym.
    Hash,
    /// The key is removed.
    Remove,
}

/// Built-in PHI detectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Detector {
    SSN,
    Email,
    Phone,
    CreditCard,
    NPI,
    MRN,
}

/// A key of a Secret in the same namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

/// Where masking is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ApplyTo {
    /// Consumers see masked data.
    Fetch,
    /// Masked before it is stored.
    Produce,
}

/// Observed state of a MaskingRule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaskingRuleStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions, one per `type`.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
