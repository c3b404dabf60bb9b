//! Whose data a record holds: the `patientFields` of the MaskingRules that
//! cover a topic, read from each record value as the broker holds it (before
//! masking), and turned into keyed pseudonyms for the audit trail — never
//! the identifiers themselves (45 CFR 164.528, the accounting of
//! disclosures: "who saw this patient's data?").
//!
//! A pseudonym is `hex(HMAC-SHA256(key, "streamgate/patient\0" ‖ id)[..16])`:
//! 32 hex digits. 16 bytes keep collisions negligible (the birthday bound is
//! ~2^64 patients); the domain prefix keeps it apart from the `Hash`
//! strategy's pseudonyms even if someone reuses that key. The identifier is
//! the JSON string as written, or a JSON number's text; `audit disclosures`
//! computes the same function from `--patient` and `--key`.
//!
//! A record counts as *unattributed* — "this disclosure may have held other
//! patients" — when its value is null or not JSON, when no path yields a
//! string or number, or when a covering rule could not load its key or
//! paths. Scanning never changes what is forwarded: a record is masked,
//! passed or refused exactly as without it.
use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use super::path::{FieldPath, PathError, Seg};
use super::strategy::{HashKey, mac16};

/// Keeps the patient pseudonyms apart from every other use of an HMAC key.
const DOMAIN: &[u8] = b"streamgate/patient\0";

/// The keyed pseudonym of one patient identifier (see the module docs).
pub fn patient_pseudonym(key: &HashKey, identifier: &str) -> String {
    hex::encode(mac16(key, &[DOMAIN, identifier.as_bytes()]))
}

/// One rule's `patientFields`, compiled, with the key to hash them with.
#[derive(Debug)]
pub struct PatientFields {
    paths: Vec<FieldPath>,
    /// `None`: the rule's key or paths could not be loaded; every record of
    /// its topics is unattributed.
    key: Option<HashKey>,
}

impl PatientFields {
    /// Parses the paths (the masking `fields` grammar).
    pub fn compile(paths: &[String], key: HashKey) -> Result<Self, PathError> {
        Ok(Self {
            paths: paths
                .iter()
                .map(|p| FieldPath::parse(p))
                .collect::<Result<_, _>>()?,
            key: Some(key),
        })
    }

    /// A rule whose patient paths or key failed: nothing is attributed.
    pub fn unattributable() -> Self {
        Self {
            paths: Vec::new(),
            key: None,
        }
    }

    /// Adds the pseudonyms of the patients `doc` names to `into`; `false`
    /// when it names none (or the rule cannot attribute at all).
    fn pseudonyms(&self, doc: &Value, into: &mut BTreeSet<String>) -> bool {
        let Some(key) = &self.key else {
            return false;
        };
        let mut found = false;
        let mut at = Vec::new();
        walk(doc, &mut at, &mut |at, v| {
            let id = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return,
            };
            if self.paths.iter().any(|p| p.matches(at)) {
                into.insert(patient_pseudonym(key, &id));
                found = true;
            }
        });
        found
    }

    /// Can this rule attribute at all (its key and paths loaded)?
    pub fn attributes(&self) -> bool {
        self.key.is_some()
    }
}

/// Visits every value below `v` with its concrete location.
fn walk<'a>(v: &'a Value, at: &mut Vec<Seg<'a>>, f: &mut impl FnMut(&[Seg<'a>], &'a Value)) {
    f(at, v);
    match v {
        Value::Object(members) => {
            for (k, child) in members {
                at.push(Seg::Key(k.as_str().into()));
                walk(child, at, f);
                at.pop();
            }
        }
        Value::Array(items) => {
            for child in items {
                at.push(Seg::Index);
                walk(child, at, f);
                at.pop();
            }
        }
        _ => {}
    }
}

/// The patients of one partition's records, as disclosed (Fetch) or
/// accepted (Produce).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionPatients {
    pub partition: i32,
    /// Sorted, de-duplicated pseudonyms.
    pub patients: BTreeSet<String>,
    /// Records that named no identifiable patient.
    pub unattributed: u64,
    /// The records could not be read for patients (a batch that does not
    /// decode): how many were disclosed is the audit summary's count, and
    /// all of them are unattributed.
    pub unreadable: bool,
}

/// Collects the patients of one partition, record value by record value.
#[derive(Debug)]
pub struct PatientScan<'a> {
    rules: &'a [Arc<PatientFields>],
    pub out: PartitionPatients,
}

impl<'a> PatientScan<'a> {
    pub fn new(rules: &'a [Arc<PatientFields>], partition: i32) -> Self {
        Self {
            rules,
            out: PartitionPatients {
                partition,
                ..PartitionPatients::default()
            },
        }
    }

    /// One record's value (`None`: a null value, e.g. a tombstone).
    pub fn value(&mut self, value: Option<&[u8]>) {
        let doc = value.and_then(|v| serde_json::from_slice::<Value>(v).ok());
        let Some(doc) = doc else {
            self.out.unattributed += 1;
            return;
        };
        let mut named = false;
        let mut blind = false;
        for rule in self.rules {
            named |= rule.pseudonyms(&doc, &mut self.out.patients);
            blind |= !rule.attributes();
        }
        if !named || blind {
            self.out.unattributed += 1;
        }
    }

    /// The records could not be walked: count them as unattributed.
    pub fn unreadable(mut self) -> PartitionPatients {
        self.out.unreadable = true;
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &[u8]) -> HashKey {
        HashKey::new(k.to_vec()).unwrap()
    }

    fn fields(paths: &[&str]) -> Arc<PatientFields> {
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        Arc::new(PatientFields::compile(&paths, key(b"patient-key")).unwrap())
    }

    fn scan(rules: &[Arc<PatientFields>], values: &[Option<&str>]) -> PartitionPatients {
        let mut s = PatientScan::new(rules, 3);
        for v in values {
            s.value(v.map(str::as_bytes));
        }
        s.out
    }

    fn p(id: &str) -> String {
        patient_pseudonym(&key(b"patient-key"), id)
    }

    #[test]
    fn pseudonyms_are_deterministic_keyed_and_compact() {
        let a = patient_pseudonym(&key(b"k1"), "MRN-00000001");
        assert_eq!(a, patient_pseudonym(&key(b"k1"), "MRN-00000001"));
        assert_ne!(a, patient_pseudonym(&key(b"k2"), "MRN-00000001"));
        assert_ne!(a, patient_pseudonym(&key(b"k1"), "MRN-00000002"));
        assert_eq!(a.len(), 32, "16 bytes, hex");
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!a.contains("MRN"));
        // Not the `Hash` strategy's pseudonym under the same key.
        let hashed = super::super::strategy::pseudonym(&key(b"k1"), b"MRN-00000001");
        assert_ne!(format!("h:{a}"), hashed);
    }

    #[test]
    fn nested_paths_arrays_and_descendants_name_patients() {
        let rules = [fields(&[
            "$.patient.mrn",
            "$.subscriber.id",
            "$.members[*].mrn",
            "$..guarantor",
        ])];
        let got = scan(
            &rules,
            &[
                Some(r#"{"patient":{"mrn":"MRN-1","name":"x"}}"#),
                Some(
                    r#"{"subscriber":{"id":42},"members":[{"mrn":"MRN-2"},{"mrn":"MRN-3"},{"x":1}]}"#,
                ),
                Some(r#"{"a":{"b":{"guarantor":"MRN-4"}}}"#),
                Some(r#"{"patient":{"mrn":"MRN-1"}}"#),
            ],
        );
        let want: BTreeSet<String> = ["MRN-1", "42", "MRN-2", "MRN-3", "MRN-4"]
            .iter()
            .map(|i| p(i))
            .collect();
        assert_eq!(got.patients, want, "sorted and de-duplicated");
        assert_eq!(got.unattributed, 0);
        assert_eq!(got.partition, 3);
    }

    #[test]
    fn records_without_a_patient_are_counted_not_dropped() {
        let rules = [fields(&["$.patient.mrn"])];
        let got = scan(
            &rules,
            &[
                Some(r#"{"patient":{"name":"no mrn"}}"#), // missing field
                Some("MRN-1 in plain text"),              // not JSON
                Some(r#"{"patient":{"mrn":{"v":"MRN-1"}}}"#), // not a string or number
                Some(r#"{"patient":{"mrn":null}}"#),
                None, // tombstone
                Some(r#"{"patient":{"mrn":"MRN-9"}}"#),
            ],
        );
        assert_eq!(got.unattributed, 5);
        assert_eq!(got.patients, BTreeSet::from([p("MRN-9")]));
    }

    #[test]
    fn a_rule_that_cannot_attribute_makes_every_record_unattributed() {
        let rules = [
            fields(&["$.mrn"]),
            Arc::new(PatientFields::unattributable()),
        ];
        let got = scan(&rules, &[Some(r#"{"mrn":"MRN-1"}"#), Some("{}")]);
        assert_eq!(got.unattributed, 2);
        assert_eq!(got.patients, BTreeSet::from([p("MRN-1")]));
    }

    #[test]
    fn bad_paths_do_not_compile() {
        assert!(PatientFields::compile(&["mrn".into()], key(b"k")).is_err());
    }
}
