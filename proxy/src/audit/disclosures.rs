//! The accounting of disclosures (45 CFR 164.528): "who saw this patient's
//! data?", from the trail alone.
//!
//! The data path puts, on each Fetch and Produce record, the keyed
//! pseudonyms of the patients its records held (`ResourceAccess::patients`,
//! [`with_patients`]); `audit disclosures` computes one patient's pseudonym
//! from the identifier and the key and lists every range that held it: when,
//! who (principal and workload), topic/partition/offsets, read or write,
//! masked or clear for that reader, and the rule or approval behind it.
//! Input is a spool or the collector's copy, read and verified as `audit
//! replay` does.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use super::export::{Filter, csv_cell};
use super::record::{AuditDecision, AuditRecord, Operation, RecordKind};
use crate::masking::{HashKey, TopicMasking, patient_pseudonym};

/// Put on each partition of `record` the patients its records held, from
/// what the masking stage read (`TopicMasking::patients`).
pub fn with_patients(mut record: AuditRecord, masking: &[TopicMasking]) -> AuditRecord {
    for res in &mut record.resources {
        let Some(partition) = res.partition else {
            continue;
        };
        let found = masking
            .iter()
            .filter(|t| t.topic == res.topic)
            .flat_map(|t| &t.patients)
            .find(|p| p.partition == partition);
        let Some(found) = found else {
            continue;
        };
        res.patients = found.patients.iter().cloned().collect();
        // Unreadable records were passed on uncounted: all of them.
        res.unattributed = if found.unreadable {
            res.records
        } else {
            found.unattributed
        };
    }
    record
}

/// Report format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Csv,
    Json,
}

/// One disclosure of the patient: a range of one request that held them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Disclosure {
    pub time: String,
    pub seq: u64,
    pub subject_kind: String,
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The workload whose sidecar served the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `read` (Fetch) or `write` (Produce).
    pub operation: String,
    pub topic: String,
    pub partition: i32,
    pub offset_first: Option<i64>,
    pub offset_last: Option<i64>,
    pub records: u64,
    /// `masked` (the decision was `Masked`) or `clear`.
    pub view: String,
    pub decision: String,
    /// The MaskingRules that masked what this reader saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masked_by: Option<String>,
    /// The rule or approval that allowed the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Records of the range that named no identifiable patient.
    pub unattributed: u64,
}

/// Every range of an allowed request in `records` (selected by `filter`)
/// whose records held the patient `pseudonym`, in trail order; a record
/// shipped twice counts once.
pub fn disclosures<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    pseudonym: &str,
    filter: &Filter,
) -> Vec<Disclosure> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for r in records {
        let disclosed = matches!(
            r.decision,
            Some(AuditDecision::Allow | AuditDecision::Masked)
        );
        if r.kind != RecordKind::Request
            || !disclosed
            || !filter.matches(r)
            || !seen.insert((r.seq, r.hash.clone()))
        {
            continue;
        }
        for res in &r.resources {
            let Some(partition) = res.partition else {
                continue;
            };
            if res
                .patients
                .binary_search_by(|p| p.as_str().cmp(pseudonym))
                .is_err()
            {
                continue;
            }
            let subject = r.subject.clone().unwrap_or_default();
            out.push(Disclosure {
                time: r.time.clone(),
                seq: r.seq,
                subject_kind: subject.kind,
                subject: subject.name,
                issuer: subject.issuer,
                pod: r.pod.clone(),
                namespace: r.namespace.clone(),
                service_account: r.service_account.clone(),
                client_id: r.client_id.clone(),
                operation: match r.operation {
                    Some(Operation::Write) => "write".into(),
                    Some(Operation::Read) => "read".into(),
                    other => other.map(|o| format!("{o:?}")).unwrap_or_default(),
                },
                topic: res.topic.clone(),
                partition,
                offset_first: res.offset_first,
                offset_last: res.offset_last,
                records: res.records,
                view: match r.decision {
                    Some(AuditDecision::Masked) => "masked".into(),
                    _ => "clear".into(),
                },
                decision: r
                    .decision
                    .map(|d| d.as_str().to_owned())
                    .unwrap_or_default(),
                masked_by: r.masking.as_ref().map(|m| m.rule.clone()),
                reason: r.reason.clone(),
                policy: r
                    .policy
                    .as_ref()
                    .map(|p| format!("{} (generation {})", p.name, p.generation)),
                unattributed: res.unattributed,
            });
        }
    }
    out
}

/// CSV columns, in order.
pub const CSV_HEADER: &[&str] = &[
    "time",
    "seq",
    "subjectKind",
    "subject",
    "issuer",
    "pod",
    "namespace",
    "serviceAccount",
    "clientId",
    "operation",
    "topic",
    "partition",
    "offsetFirst",
    "offsetLast",
    "records",
    "view",
    "decision",
    "maskedBy",
    "reason",
    "policy",
    "unattributed",
];

fn csv_row(d: &Disclosure) -> String {
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    let num = |o: Option<i64>| o.map(|n| n.to_string()).unwrap_or_default();
    [
        d.time.clone(),
        d.seq.to_string(),
        d.subject_kind.clone(),
        d.subject.clone(),
        opt(&d.issuer),
        opt(&d.pod),
        opt(&d.namespace),
        opt(&d.service_account),
        opt(&d.client_id),
        d.operation.clone(),
        d.topic.clone(),
        d.partition.to_string(),
        num(d.offset_first),
        num(d.offset_last),
        d.records.to_string(),
        d.view.clone(),
        d.decision.clone(),
        opt(&d.masked_by),
        opt(&d.reason),
        opt(&d.policy),
        d.unattributed.to_string(),
    ]
    .iter()
    .map(|c| csv_cell(c))
    .collect::<Vec<_>>()
    .join(",")
}

/// Writes the report: CSV with its header line, or one JSON array.
pub fn write_report(
    out: &mut impl Write,
    found: &[Disclosure],
    format: ReportFormat,
) -> std::io::Result<()> {
    match format {
        ReportFormat::Csv => {
            writeln!(out, "{}", CSV_HEADER.join(","))?;
            for d in found {
                writeln!(out, "{}", csv_row(d))?;
            }
        }
        ReportFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, found)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// The patient key, byte for byte as stored (as the sidecar reads its
/// mounted Secret); never printed.
fn read_key(path: &Path) -> anyhow::Result<HashKey> {
    let bytes = std::fs::read(path).with_context(|| format!("key file {}", path.display()))?;
    if bytes.ends_with(b"\n") {
        eprintln!(
            "warning: the key file ends with a newline; the key is used byte for byte, as the sidecar reads its Secret"
        );
    }
    HashKey::new(bytes).with_context(|| format!("key file {} is empty", path.display()))
}

/// `audit disclosures`: returns the exit code (1: the trail does not verify).
pub fn run(
    path: &Path,
    patient: &str,
    key: &Path,
    filter: &Filter,
    format: ReportFormat,
) -> anyhow::Result<i32> {
    let key = read_key(key)?;
    let patient = if patient == "-" {
        // Off the command line (shell history, process list): from stdin.
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        patient.to_owned()
    };
    anyhow::ensure!(!patient.is_empty(), "--patient is empty");
    let pseudonym = patient_pseudonym(&key, &patient);
    let (records, problem) = super::cli::trail(path)?;
    let found = disclosures(&records, &pseudonym, filter);
    write_report(&mut std::io::stdout().lock(), &found, format)?;
    eprintln!(
        "audit disclosures: {} disclosure(s) of the patient found",
        found.len()
    );
    if let Some(problem) = problem {
        eprintln!("error: the trail does not verify, so this report cannot be trusted: {problem}");
        return Ok(1);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{ResourceAccess, Subject};
    use crate::masking::{MaskCounts, PartitionPatients};
    use std::collections::BTreeSet;

    fn key() -> HashKey {
        HashKey::new(b"patient-key".to_vec()).unwrap()
    }

    fn scanned(partition: i32, ids: &[&str], unattributed: u64) -> PartitionPatients {
        PartitionPatients {
            partition,
            patients: ids.iter().map(|i| patient_pseudonym(&key(), i)).collect(),
            unattributed,
            unreadable: false,
        }
    }

    fn fetch(who: &str, seq: u64, decision: AuditDecision, parts: &[(i32, i64)]) -> AuditRecord {
        let mut r = AuditRecord::request("Fetch", 13, Operation::Read)
            .subject(Subject::user(who, vec![], None))
            .resources(parts.iter().map(|&(p, first)| {
                ResourceAccess::partition("claims", p, Some((first, first + 9)), 10, 900)
            }))
            .decision(decision, "rule billing-read");
        r.seq = seq;
        r.hash = format!("h{seq}");
        r
    }

    #[test]
    fn patients_land_on_their_partition_only() {
        let masking = [TopicMasking {
            topic: "claims".into(),
            rules: vec![],
            counts: MaskCounts::default(),
            originals: Vec::new(),
            patients: vec![
                scanned(0, &["MRN-2", "MRN-1"], 1),
                PartitionPatients {
                    partition: 1,
                    unreadable: true,
                    ..PartitionPatients::default()
                },
            ],
        }];
        let rec = with_patients(
            fetch("a", 1, AuditDecision::Allow, &[(0, 0), (1, 0), (2, 0)]),
            &masking,
        );
        let want: Vec<String> = ["MRN-1", "MRN-2"]
            .iter()
            .map(|i| patient_pseudonym(&key(), i))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(rec.resources[0].patients, want);
        assert_eq!(rec.resources[0].unattributed, 1);
        assert!(rec.resources[1].patients.is_empty());
        assert_eq!(
            rec.resources[1].unattributed, 10,
            "unreadable: every record"
        );
        assert_eq!(
            rec.resources[2],
            ResourceAccess::partition("claims", 2, Some((0, 9)), 10, 900)
        );
        let json = serde_json::to_string(&rec.resources[2]).unwrap();
        assert!(
            !json.contains("patients") && !json.contains("unattributed"),
            "{json}"
        );
    }

    /// The spool volume the pseudonyms add: a Fetch of 500 records of 1 KiB
    /// (one partition) holding N distinct patients, serialised as the spool
    /// writes it, with and without them. Run with `--nocapture` for the table.
    #[test]
    fn pseudonyms_cost_35_bytes_per_distinct_patient_per_range() {
        const RECORDS: u64 = 500;
        let base = || {
            AuditRecord::request("Fetch", 13, Operation::Read)
                .subject(Subject::user("billing-app", vec!["billing".into()], None))
                .resource(ResourceAccess::partition(
                    "patient-events",
                    0,
                    Some((1000, 1000 + RECORDS as i64 - 1)),
                    RECORDS,
                    RECORDS * 1024,
                ))
                .decision(AuditDecision::Masked, "rule billing-read")
        };
        let without = serde_json::to_vec(&base()).unwrap().len();
        for n in [1usize, 10, 100, 500] {
            let ids: Vec<String> = (0..n).map(|i| format!("MRN-{i:08}")).collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let masking = [TopicMasking {
                topic: "patient-events".into(),
                rules: vec![],
                counts: MaskCounts::default(),
                originals: Vec::new(),
                patients: vec![scanned(0, &ids, 0)],
            }];
            let with = serde_json::to_vec(&with_patients(base(), &masking))
                .unwrap()
                .len();
            let added = with - without;
            // `,"patients":[` `]` once, then `"<32 hex>",` per patient.
            assert_eq!(added, 14 + 35 * n - 1, "N = {n}");
            println!(
                "N={n:>3} distinct patients: record {without} -> {with} bytes (+{added}); \
                 +{:.1} bytes per 1 KiB record disclosed ({:.2} %)",
                added as f64 / RECORDS as f64,
                100.0 * added as f64 / (RECORDS * 1024) as f64
            );
        }
    }

    #[test]
    fn lists_exactly_the_ranges_that_held_the_patient() {
        let with = |r: AuditRecord, p: i32, ids: &[&str]| {
            with_patients(
                r,
                &[TopicMasking {
                    topic: "claims".into(),
                    rules: vec![],
                    counts: MaskCounts::default(),
                    originals: Vec::new(),
                    patients: vec![scanned(p, ids, 0)],
                }],
            )
        };
        let mut masked = with(
            fetch("billing", 2, AuditDecision::Masked, &[(0, 10)]),
            0,
            &["MRN-1"],
        );
        masked = masked.masking("mask-claims", Default::default());
        let records = [
            with(
                fetch("clinician", 1, AuditDecision::Allow, &[(0, 0), (1, 0)]),
                1,
                &["MRN-1", "MRN-3"],
            ),
            masked.clone(),
            masked, // shipped twice
            with(
                fetch("other", 3, AuditDecision::Allow, &[(0, 0)]),
                0,
                &["MRN-2"],
            ),
            with(
                fetch("denied", 4, AuditDecision::Deny, &[(0, 0)]),
                0,
                &["MRN-1"],
            ),
        ];
        let me = patient_pseudonym(&key(), "MRN-1");
        let got = disclosures(&records, &me, &Filter::default());
        let summary: Vec<_> = got
            .iter()
            .map(|d| {
                (
                    d.subject.as_str(),
                    d.partition,
                    d.offset_first,
                    d.view.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("clinician", 1, Some(0), "clear"),
                ("billing", 0, Some(10), "masked")
            ]
        );
        assert_eq!(got[1].masked_by.as_deref(), Some("mask-claims"));
        assert_eq!(got[0].operation, "read");
        let never = patient_pseudonym(&key(), "MRN-404");
        assert!(disclosures(&records, &never, &Filter::default()).is_empty());

        let mut csv = Vec::new();
        write_report(&mut csv, &got, ReportFormat::Csv).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("time,seq,subjectKind,subject,"));
        assert!(
            lines[2]
                .contains(",read,claims,0,10,19,10,masked,Masked,mask-claims,rule billing-read,,0"),
            "{}",
            lines[2]
        );
        let mut json = Vec::new();
        write_report(&mut json, &[], ReportFormat::Json).unwrap();
        assert_eq!(String::from_utf8(json).unwrap().trim(), "[]");
    }
}
