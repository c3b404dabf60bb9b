//! Export what an auditor asks for: records in a time window, optionally for one topic or
//! one subject, as JSON lines (as stored, hashes included, so they can be re-verified) or
//! CSV (flattened, one row per topic-partition; never the payload).

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::record::AuditRecord;

/// Which records to export (also the `audit export` flags that say so).
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct Filter {
    /// Records at or after this time (RFC 3339, e.g. 2026-11-27T00:00:00Z).
    #[arg(long, value_parser = super::cli::parse_time)]
    pub since: Option<DateTime<Utc>>,
    /// Records before this time (RFC 3339).
    #[arg(long, value_parser = super::cli::parse_time)]
    pub until: Option<DateTime<Utc>>,
    /// Only records touching this topic (CSV: only its rows).
    #[arg(long)]
    pub topic: Option<String>,
    /// Only records of this subject (user or ServiceAccount name).
    #[arg(long)]
    pub subject: Option<String>,
}

impl Filter {
    /// Pure: does `record` belong in the export?
    pub fn matches(&self, record: &AuditRecord) -> bool {
        if self.since.is_some() || self.until.is_some() {
            let Some(t) = record.parsed_time() else {
                return false;
            };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t >= u) {
                return false;
            }
        }
        if let Some(topic) = &self.topic
            && !record.resources.iter().any(|r| &r.topic == topic)
        {
            return false;
        }
        if let Some(subject) = &self.subject
            && record.subject.as_ref().is_none_or(|s| &s.name != subject)
        {
            return false;
        }
        true
    }
}

/// Export format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

/// CSV columns, in order.
pub const CSV_HEADER: &[&str] = &[
    "seq",
    "time",
    "kind",
    "pod",
    "namespace",
    "serviceAccount",
    "subjectKind",
    "subjectName",
    "subjectGroups",
    "subjectIssuer",
    "clientId",
    "clientAddress",
    "api",
    "apiVersion",
    "operation",
    "topic",
    "partition",
    "offsetFirst",
    "offsetLast",
    "records",
    "bytes",
    "decision",
    "reason",
    "policyName",
    "policyGeneration",
    "maskingRule",
    "maskedFields",
    "payloadDigest",
    "hash",
];

/// Writes matching records.
#[derive(Debug)]
pub struct Exporter<W: Write> {
    out: W,
    format: Format,
    filter: Filter,
    pub exported: u64,
    pub skipped_unreadable: u64,
}

impl<W: Write> Exporter<W> {
    pub fn new(mut out: W, format: Format, filter: Filter) -> io::Result<Self> {
        if format == Format::Csv {
            write_row(&mut out, CSV_HEADER.iter().map(|s| (*s).to_owned()))?;
        }
        Ok(Self {
            out,
            format,
            filter,
            exported: 0,
            skipped_unreadable: 0,
        })
    }

    /// Offer one spool line.
    pub fn line(&mut self, line: &str) -> io::Result<()> {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            self.skipped_unreadable += 1;
            return Ok(());
        };
        let Ok(record) = serde_json::from_value::<AuditRecord>(value) else {
            self.skipped_unreadable += 1;
            return Ok(());
        };
        if !self.filter.matches(&record) {
            return Ok(());
        }
        self.exported += 1;
        match self.format {
            Format::Jsonl => writeln!(self.out, "{line}"),
            Format::Csv => {
                for row in csv_rows(&record, self.filter.topic.as_deref()) {
                    write_row(&mut self.out, row)?;
                }
                Ok(())
            }
        }
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The CSV rows of a record: one per resource (only `topic`'s when given), or one row with
/// empty resource columns when it has none.
pub fn csv_rows(rec: &AuditRecord, topic: Option<&str>) -> Vec<Vec<String>> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    let subject = rec.subject.clone().unwrap_or_default();
    let masked = rec
        .masking
        .as_ref()
        .map(|m| {
            m.fields
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";")
        })
        .unwrap_or_default();
    let base = |res: Option<&super::record::ResourceAccess>| {
        vec![
            rec.seq.to_string(),
            rec.time.clone(),
            format!("{:?}", rec.kind),
            opt(&rec.pod),
            opt(&rec.namespace),
            opt(&rec.service_account),
            subject.kind.clone(),
            subject.name.clone(),
            subject.groups.join(";"),
            opt(&subject.issuer),
            opt(&rec.client_id),
            opt(&rec.client_address),
            opt(&rec.api),
            num(rec.api_version.map(i64::from)),
            rec.operation
                .map(|o| crate::audit::record::operation_name(o).to_owned())
                .unwrap_or_default(),
            res.map(|r| r.topic.clone()).unwrap_or_default(),
            num(res.and_then(|r| r.partition.map(i64::from))),
            num(res.and_then(|r| r.offset_first)),
            num(res.and_then(|r| r.offset_last)),
            res.map(|r| r.records.to_string()).unwrap_or_default(),
            res.map(|r| r.bytes.to_string()).unwrap_or_default(),
            rec.decision
                .map(|d| d.as_str().to_owned())
                .unwrap_or_default(),
            opt(&rec.reason),
            rec.policy
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_default(),
            num(rec.policy.as_ref().map(|p| p.generation)),
            rec.masking
                .as_ref()
                .map(|m| m.rule.clone())
                .unwrap_or_default(),
            masked.clone(),
            opt(&rec.payload_digest),
            rec.hash.clone(),
        ]
    };
    let resources: Vec<_> = rec
        .resources
        .iter()
        .filter(|r| topic.is_none_or(|t| r.topic == t))
        .collect();
    if resources.is_empty() {
        vec![base(None)]
    } else {
        resources.into_iter().map(|r| base(Some(r))).collect()
    }
}

fn write_row(out: &mut impl Write, cells: impl IntoIterator<Item = String>) -> io::Result<()> {
    let line: Vec<String> = cells.into_iter().map(|c| csv_cell(&c)).collect();
    writeln!(out, "{}", line.join(","))
}

/// RFC 4180 quoting.
pub(super) fn csv_cell(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditDecision, Operation, ResourceAccess, Subject};

    fn at(t: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(t).unwrap().into()
    }

    fn rec(time: &str, who: &str, topics: &[&str]) -> AuditRecord {
        AuditRecord::request("Fetch", 13, Operation::Read)
            .at(at(time))
            .subject(Subject::user(who, vec!["a".into(), "b".into()], None))
            .resources(
                topics
                    .iter()
                    .enumerate()
                    .map(|(p, t)| ResourceAccess::partition(*t, p as i32, Some((1, 2)), 2, 20)),
            )
            .decision(AuditDecision::Allow, "rule x, via \"approval\"")
    }

    #[test]
    fn filter_window_is_half_open_and_topic_subject_exact() {
        let f = Filter {
            since: Some(at("2026-11-27T10:00:00Z")),
            until: Some(at("2026-11-27T11:00:00Z")),
            topic: Some("patient-records".into()),
            subject: Some("alice".into()),
        };
        assert!(f.matches(&rec("2026-11-27T10:00:00Z", "alice", &["patient-records"])));
        assert!(!f.matches(&rec("2026-11-27T11:00:00Z", "alice", &["patient-records"])));
        assert!(!f.matches(&rec(
            "2026-11-27T09:59:59.999999Z",
            "alice",
            &["patient-records"]
        )));
        assert!(!f.matches(&rec("2026-11-27T10:30:00Z", "bob", &["patient-records"])));
        assert!(!f.matches(&rec("2026-11-27T10:30:00Z", "alice", &["billing"])));
    }

    #[test]
    fn csv_has_one_row_per_resource_and_quotes() {
        let r = rec(
            "2026-11-27T10:00:00Z",
            "alice",
            &["patient-records", "billing"],
        );
        let rows = csv_rows(&r, None);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].len(), CSV_HEADER.len());
        assert_eq!(rows[1][15], "billing");
        assert_eq!(csv_rows(&r, Some("billing")).len(), 1);
        let mut out = Vec::new();
        write_row(&mut out, rows[0].clone()).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.contains("\"rule x, via \"\"approval\"\"\""), "{line}");
        assert!(line.contains(",a;b,"), "{line}");
    }
}
