//! `streamgate-proxy audit …`: verify and export a spool.
//!
//! Exit codes: 0 success; 1 the evidence does not hold (a broken chain, a spool
//! that disagrees with its anchors, a torn tail, a copy with gaps); 2 the spool
//! or arguments could not be used. Results go to stdout, progress and warnings
//! to stderr.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use super::anchors::{CopyReport, Witnessed, event_anchors, records_in_copy};
use super::chain::Verifier;
use super::disclosures::ReportFormat;
use super::export::{Exporter, Filter, Format};
use super::record::AuditRecord;
use super::replay::{accesses, text_line};
use super::segment;
use super::verify::{Verdict, summary, torn_files, verify_dir};

/// Progress is printed every this many records.
const PROGRESS_EVERY: u64 = 100_000;

/// `streamgate-proxy audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain of a spool; name the first broken seq (exit 1) or print OK.
    ///
    /// Given a file instead of a directory, verify an auditor's copy (the
    /// collector's OTLP JSON lines, or `audit export` JSON lines): every chain
    /// in it must link from its genesis, with no record edited and none missing.
    Verify {
        /// The spool directory (the sidecar's --audit-dir), or a copy file.
        dir: PathBuf,
        /// Anchors witnessed outside the pod — the collector's copy (OTLP JSON
        /// lines), exported records, or the sidecar's checkpoint Events
        /// (`kubectl get events -o json`); repeat for several. The spool must
        /// start from a witnessed genesis, agree with every witnessed record
        /// and checkpoint, and reach the last witnessed seq.
        #[arg(long, value_name = "FILE")]
        anchors: Vec<PathBuf>,
    },
    /// What one principal read and wrote: topic/partition/offset ranges with
    /// the decision and the rule or approval behind each, from a spool or the
    /// collector's copy (verified first: exit 1 when it does not verify).
    Replay {
        /// The spool directory, or a copy file (OTLP JSON lines or exported records).
        path: PathBuf,
        /// The principal: a user's name or a ServiceAccount's.
        #[arg(long)]
        subject: String,
        /// Accesses at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Accesses before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
        /// Print the record values as delivered where the policy kept payloads
        /// (`Full`): PHI on your terminal.
        #[arg(long)]
        payloads: bool,
        /// One JSON object per access instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Prove a trail against the broker: fetch every range the selected
    /// records read or wrote and compare it with the partition digest
    /// recorded (exit 1 on any mismatch, or when the trail does not verify).
    Match {
        /// The spool directory, or a copy file (OTLP JSON lines or exported records).
        path: PathBuf,
        #[command(flatten)]
        filter: Filter,
        #[command(flatten)]
        broker: BrokerFlags,
        /// One JSON object per range instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The accounting of disclosures: every read and write whose records held
    /// one patient — when, who (principal, workload), topic/partition/offsets,
    /// masked or clear, under which rule or approval — from a spool or the
    /// collector's copy (verified first: exit 1 when it does not verify).
    Disclosures {
        /// The spool directory, or a copy file (OTLP JSON lines or exported records).
        path: PathBuf,
        /// The patient identifier as the records hold it (e.g. the MRN);
        /// `-` reads it from stdin, off the command line.
        #[arg(long)]
        patient: String,
        /// The patient key (the Secret entry a MaskingRule's
        /// patientKeySecretRef names), byte for byte.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Disclosures at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Disclosures before this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        #[arg(long, value_enum, default_value = "csv")]
        format: ReportFormat,
    },
    /// Export records in a time window as JSON lines or CSV.
    Export {
        /// The spool directory (the sidecar's --audit-dir).
        dir: PathBuf,
        #[command(flatten)]
        filter: Filter,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// How `audit match` reaches the brokers (the same settings as the sidecar's upstream).
#[derive(Debug, clap::Args)]
pub struct BrokerFlags {
    /// Bootstrap servers (`host:port`, comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub bootstrap: Vec<String>,
    /// Connect with TLS.
    #[arg(long)]
    pub tls: bool,
    /// PEM file with the CA(s) that signed the brokers' certificates.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// SASL mechanism (with --credentials).
    #[arg(long, value_enum, requires = "credentials")]
    pub sasl_mechanism: Option<crate::datapath::upstream::SaslMechanism>,
    /// File (YAML/JSON: username, password) with a broker credential that may read the topics.
    #[arg(long, requires = "sasl_mechanism")]
    pub credentials: Option<PathBuf>,
}

impl BrokerFlags {
    fn upstream(&self) -> anyhow::Result<crate::datapath::upstream::UpstreamConfig> {
        use crate::datapath::upstream::{Credentials, tls::TlsSettings};
        let tls = self
            .tls
            .then(|| TlsSettings::new(self.ca_file.as_deref(), None, None, None))
            .transpose()?;
        let sasl = match (self.sasl_mechanism, &self.credentials) {
            (Some(m), Some(path)) => Some((m, std::sync::Arc::new(Credentials::from_file(path)?))),
            _ => None,
        };
        Ok(crate::datapath::upstream::UpstreamConfig {
            bootstrap: self.bootstrap.clone(),
            tls,
            sasl,
            connect_timeout: std::time::Duration::from_secs(10),
            max_frame: 64 * 1024 * 1024,
        })
    }
}

pub(super) fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e}: expected RFC 3339, e.g. 2026-11-27T10:00:00Z"))
}

/// Run an audit subcommand; returns the process exit code.
pub fn run(cmd: AuditCommand) -> anyhow::Result<i32> {
    let result = match cmd {
        AuditCommand::Verify { dir, anchors } if dir.is_file() && anchors.is_empty() => {
            verify_copy(&dir)
        }
        AuditCommand::Verify { dir, anchors } => verify(&dir, &anchors),
        AuditCommand::Replay {
            path,
            subject,
            since,
            until,
            topic,
            payloads,
            json,
        } => replay(
            &path,
            &Filter {
                since,
                until,
                topic,
                subject: Some(subject),
            },
            payloads,
            json,
        ),
        AuditCommand::Match {
            path,
            filter,
            broker,
            json,
        } => match_ranges(&path, &filter, &broker, json),
        AuditCommand::Export {
            dir,
            filter,
            format,
            output,
        } => export(&dir, filter, format, output),
        AuditCommand::Disclosures {
            path,
            patient,
            key,
            since,
            until,
            format,
        } => super::disclosures::run(
            &path,
            &patient,
            &key,
            &Filter {
                since,
                until,
                ..Filter::default()
            },
            format,
        ),
    };
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(2)
        }
    }
}

/// The chains of an auditor's copy.
fn witnessed(path: &std::path::Path) -> anyhow::Result<Witnessed> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let records = records_in_copy(&text).with_context(|| path.display().to_string())?;
    Witnessed::from_records(&records).with_context(|| path.display().to_string())
}

/// Every anchor file together: copies' records linked into chains, then the
/// checkpoints Events witness.
fn anchors_of(paths: &[PathBuf]) -> anyhow::Result<Option<Witnessed>> {
    if paths.is_empty() {
        return Ok(None);
    }
    let mut records = Vec::new();
    let mut events = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        match event_anchors(&text) {
            Some(found) if found.is_empty() => anyhow::bail!(
                "{}: an Event list without AuditCheckpoint Events naming their chain",
                path.display()
            ),
            Some(found) => events.extend(found),
            None => {
                records.extend(records_in_copy(&text).with_context(|| path.display().to_string())?)
            }
        }
    }
    let mut witnessed = Witnessed::from_records(&records)?;
    for (genesis, seq, hash) in &events {
        witnessed.witness(genesis, *seq, hash)?;
    }
    Ok(Some(witnessed))
}

fn verify(dir: &std::path::Path, anchors: &[PathBuf]) -> anyhow::Result<i32> {
    let anchors = anchors_of(anchors)?;
    let verdict = verify_dir(dir, anchors.as_ref(), PROGRESS_EVERY, |n| {
        eprintln!("audit verify: {n} records verified…")
    })?;
    println!("{}", summary(&verdict));
    // A torn tail is bytes the chain does not cover: evidence that a write was
    // cut off, or that someone appended by hand. An auditor must look.
    let torn = torn_files(dir).unwrap_or_default();
    for t in &torn {
        println!(
            "TORN: {} holds bytes moved aside on recovery, outside the chain (see the SpoolRecovered record)",
            t.display()
        );
    }
    Ok(match verdict {
        Verdict::Intact(_) if torn.is_empty() => 0,
        _ => 1,
    })
}

fn verify_copy(path: &std::path::Path) -> anyhow::Result<i32> {
    let report = CopyReport::of(&witnessed(path)?);
    for (genesis, linked, last) in &report.chains {
        println!(
            "chain {genesis}: seq 1..{linked} linked from its genesis, last witnessed seq {last}"
        );
    }
    for (genesis, from) in &report.gaps {
        println!("GAP: chain {genesis}: records from seq {from} are missing from the copy");
    }
    if report.unlinked > 0 {
        println!(
            "GAP: {} record(s) link to no genesis in the copy (their predecessors are missing)",
            report.unlinked
        );
    }
    if report.chains.is_empty() {
        println!("no chain in the copy: it holds no genesis record or checkpoint");
    }
    println!(
        "{}",
        if report.is_complete() {
            "OK"
        } else {
            "INCOMPLETE"
        }
    );
    Ok(if report.is_complete() { 0 } else { 1 })
}

/// The records at `path` (a spool or a copy), and whether they verify.
pub(super) fn trail(path: &std::path::Path) -> anyhow::Result<(Vec<AuditRecord>, Option<String>)> {
    let (values, problem) = if path.is_file() {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let values = records_in_copy(&text).with_context(|| path.display().to_string())?;
        let report = CopyReport::of(
            &Witnessed::from_records(&values).with_context(|| path.display().to_string())?,
        );
        let problem = (!report.is_complete())
            .then(|| "the copy has gaps (run `audit verify` on it)".to_owned());
        (values, problem)
    } else {
        let verdict = verify_dir(path, None, 0, |_| {})?;
        let problem = match &verdict {
            Verdict::Intact(_) => None,
            other => Some(summary(other)),
        };
        let mut values = Vec::new();
        for line in segment::read_lines(path)? {
            let (_, _, text) = line?;
            if let Ok(v) = serde_json::from_str(&text) {
                values.push(v);
            }
        }
        (values, problem)
    };
    let records = values
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    Ok((records, problem))
}

fn replay(
    path: &std::path::Path,
    filter: &Filter,
    payloads: bool,
    json: bool,
) -> anyhow::Result<i32> {
    let (records, problem) = trail(path)?;
    let found = accesses(&records, filter, payloads);
    let mut out = std::io::stdout().lock();
    for a in &found {
        if json {
            writeln!(out, "{}", serde_json::to_string(a)?)?;
            continue;
        }
        writeln!(out, "{}", text_line(a))?;
        for value in a.delivered.iter().flatten() {
            writeln!(out, "    {value}")?;
        }
    }
    eprintln!("audit replay: {} access(es) found", found.len());
    if let Some(problem) = problem {
        eprintln!("error: the trail does not verify, so this list cannot be trusted: {problem}");
        return Ok(1);
    }
    Ok(0)
}

fn match_ranges(
    path: &std::path::Path,
    filter: &Filter,
    broker: &BrokerFlags,
    json: bool,
) -> anyhow::Result<i32> {
    use super::matcher::{Verdict, fetch_range, judge};
    let (records, problem) = trail(path)?;
    let upstream = broker.upstream()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = std::io::stdout().lock();
    let (mut matched, mut failed, mut other) = (0u64, 0u64, 0u64);
    for a in accesses(&records, filter, false) {
        // Only what reached a client or the broker has a range to prove.
        if !matches!(a.decision.as_str(), "Allow" | "Masked") {
            continue;
        }
        let (Some(partition), Some((first, last))) = (a.partition, a.offsets) else {
            continue;
        };
        let fetched = if a.digest.is_some() {
            runtime
                .block_on(fetch_range(&upstream, &a.topic, partition, first, last))
                .with_context(|| format!("fetching {}[{partition}] {first}..{last}", a.topic))?
        } else {
            Ok(Vec::new())
        };
        let verdict = judge(&a, fetched);
        match &verdict {
            Verdict::Match => matched += 1,
            v if v.is_failure() => failed += 1,
            _ => other += 1,
        }
        if json {
            let line = serde_json::json!({"access": &a, "verdict": &verdict});
            writeln!(out, "{line}")?;
        } else {
            let detail = match &verdict {
                Verdict::Mismatch { recorded, broker } => {
                    format!("  recorded {recorded}, broker {broker}")
                }
                Verdict::Unavailable { why } => format!("  {why}"),
                _ => String::new(),
            };
            writeln!(out, "{:<11} {}{detail}", verdict.label(), text_line(&a))?;
        }
    }
    eprintln!("audit match: {matched} matched, {failed} mismatched, {other} not compared");
    if let Some(problem) = problem {
        eprintln!("error: the trail does not verify, so matching it proves nothing: {problem}");
        return Ok(1);
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

fn export(
    dir: &std::path::Path,
    filter: Filter,
    format: Format,
    output: Option<PathBuf>,
) -> anyhow::Result<i32> {
    if segment::list_segments(dir)
        .with_context(|| dir.display().to_string())?
        .is_empty()
    {
        anyhow::bail!(
            "{}: no audit segments (audit-*.jsonl) in this directory",
            dir.display()
        );
    }
    let out: Box<dyn Write> = match &output {
        Some(path) => {
            Box::new(std::fs::File::create(path).with_context(|| path.display().to_string())?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut exporter = Exporter::new(BufWriter::new(out), format, filter)?;
    // The export also re-verifies the chain, so an auditor learns when the trail is broken.
    let mut verifier = Verifier::new();
    let mut broken = None;
    let mut seen = 0u64;
    for line in segment::read_lines(dir)? {
        let (_, _, text) = line?;
        if broken.is_none() {
            broken = verifier.push_line(&text).err();
        }
        exporter.line(&text)?;
        seen += 1;
        if seen.is_multiple_of(PROGRESS_EVERY) {
            eprintln!("audit export: {seen} records read…");
        }
    }
    let (exported, unreadable) = (exporter.exported, exporter.skipped_unreadable);
    exporter.finish()?;
    eprintln!("audit export: {exported} of {seen} records exported");
    if unreadable > 0 {
        eprintln!("warning: {unreadable} lines were not audit records and were not exported");
    }
    if let Some(b) = broken {
        eprintln!("warning: the chain is {b}; run `streamgate-proxy audit verify`");
    }
    Ok(0)
}
