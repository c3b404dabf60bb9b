//! `streamgate-proxy audit …`: verify and export a spool.
//!
//! Exit codes: 0 success; 1 the chain is broken (verify) ; 2 the spool or arguments could
//! not be used. Results go to stdout, progress and warnings to stderr.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use super::chain::Verifier;
use super::export::{Exporter, Filter, Format};
use super::segment;
use super::verify::{Verdict, summary, torn_files, verify_dir};

/// Progress is printed every this many records.
const PROGRESS_EVERY: u64 = 100_000;

/// `streamgate-proxy audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain of a spool; name the first broken seq (exit 1) or print OK.
    Verify {
        /// The spool directory (the sidecar's --audit-dir).
        dir: PathBuf,
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

pub(super) fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e}: expected RFC 3339, e.g. 2026-11-27T10:00:00Z"))
}

/// Run an audit subcommand; returns the process exit code.
pub fn run(cmd: AuditCommand) -> anyhow::Result<i32> {
    let result = match cmd {
        AuditCommand::Verify { dir } => verify(&dir),
        AuditCommand::Export {
            dir,
            filter,
            format,
            output,
        } => export(&dir, filter, format, output),
    };
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(2)
        }
    }
}

fn verify(dir: &std::path::Path) -> anyhow::Result<i32> {
    let verdict = verify_dir(dir, PROGRESS_EVERY, |n| {
        eprintln!("audit verify: {n} records verified…")
    })?;
    for torn in torn_files(dir).unwrap_or_default() {
        eprintln!(
            "note: {} holds bytes moved aside after a crash (see the SpoolRecovered record)",
            torn.display()
        );
    }
    println!("{}", summary(&verdict));
    Ok(match verdict {
        Verdict::Intact(_) => 0,
        Verdict::Broken { .. } => 1,
    })
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
