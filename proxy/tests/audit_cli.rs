//! `streamgate-proxy audit verify|export` run as a binary on real spools.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use streamgate_proxy::audit::chain::record_hash;
use streamgate_proxy::audit::record::{
    AuditDecision, AuditRecord, Operation, ResourceAccess, Subject,
};
use streamgate_proxy::audit::spool::{SpoolConfig, SpoolHandle};

const N: usize = 50;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
        .unwrap()
        .into()
}

/// 50 requests, one a minute from 10:00, alternating alice/patient-records and
/// bob/billing, spread over several segments.
fn generate(dir: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let spool = SpoolHandle::start(SpoolConfig {
            segment_bytes: 4096,
            max_batch: 3,
            checkpoint_every: 1_000_000,
            checkpoint_interval: Duration::from_secs(3600),
            ..SpoolConfig::new(dir)
        });
        for i in 0..N {
            let (who, topic) = if i % 2 == 0 {
                ("alice", "patient-records")
            } else {
                ("bob", "billing")
            };
            let rec = AuditRecord::request("Fetch", 13, Operation::Read)
                .at(start() + TimeDelta::minutes(i as i64))
                .subject(Subject::user(
                    who,
                    vec!["clinicians".into()],
                    Some("http://idp".into()),
                ))
                .client(Some("reader".into()), "127.0.0.1:5000")
                .resource(ResourceAccess::partition(
                    topic,
                    0,
                    Some((i as i64 * 10, i as i64 * 10 + 9)),
                    10,
                    1000,
                ))
                .resource(ResourceAccess::partition(topic, 1, Some((0, 4)), 5, 500))
                .decision(AuditDecision::Allow, "rule read")
                .policy("phi-access", 3);
            spool.append(rec).await.unwrap().await.unwrap();
        }
        spool.close().await;
    });
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate-proxy"))
        .arg("audit")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Every segment's lines, in spool order.
fn load(dir: &Path) -> Vec<(PathBuf, Vec<String>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let lines = text.lines().map(str::to_owned).collect();
            (p, lines)
        })
        .collect()
}

/// Copy the spool, apply `tamper` to the flat list of lines (keeping each line in its
/// segment where possible), return the copy.
fn tampered(src: &Path, tamper: impl FnOnce(&mut Vec<(usize, String)>)) -> tempfile::TempDir {
    let files = load(src);
    let mut flat: Vec<(usize, String)> = files
        .iter()
        .enumerate()
        .flat_map(|(f, (_, lines))| lines.iter().map(move |l| (f, l.clone())))
        .collect();
    tamper(&mut flat);
    let copy = tempfile::tempdir().unwrap();
    for (f, (path, _)) in files.iter().enumerate() {
        let text: String = flat
            .iter()
            .filter(|(g, _)| *g == f)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        std::fs::write(copy.path().join(path.file_name().unwrap()), text).unwrap();
    }
    copy
}

fn assert_broken_at(dir: &Path, seq: usize, what: &str) {
    let (code, stdout, stderr) = run(&["verify", dir.to_str().unwrap()]);
    assert_eq!(
        code, 1,
        "{what}: exit code; stdout {stdout} stderr {stderr}"
    );
    assert!(
        stdout.starts_with(&format!("BROKEN at seq {seq}:")),
        "{what}: {stdout}"
    );
}

#[test]
fn verify_reports_an_intact_spool() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    assert!(
        load(dir.path()).len() >= 3,
        "the spool spans several segments"
    );
    let (code, stdout, _) = run(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.starts_with("50 records, seq 1..50, head hash sha256:"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with(", OK"), "{stdout}");
}

#[test]
fn verify_names_the_first_broken_seq_for_every_single_record_tamper() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    for seq in [1, 2, 17, 25, 49] {
        let i = seq - 1;
        let copy = tampered(dir.path(), |l| {
            l.remove(i);
        });
        assert_broken_at(copy.path(), seq, &format!("delete {seq}"));

        let copy = tampered(dir.path(), |l| {
            l[i].1 = l[i].1.replace("\"records\":10", "\"records\":1")
        });
        assert_broken_at(copy.path(), seq, &format!("edit {seq}"));

        let copy = tampered(dir.path(), |l| {
            let (a, b) = (l[i].1.clone(), l[i + 1].1.clone());
            l[i].1 = b;
            l[i + 1].1 = a;
        });
        assert_broken_at(copy.path(), seq, &format!("reorder {seq}"));

        let copy = tampered(dir.path(), |l| {
            // A forged record claiming seq `seq`, linked and hashed like the real one.
            let mut forged: serde_json::Value = serde_json::from_str(&l[i].1).unwrap();
            forged["subject"]["name"] = "mallory".into();
            let prev = forged["prevHash"].as_str().unwrap().to_owned();
            forged["hash"] = record_hash(&prev, &forged).into();
            let f = l[i].0;
            l.insert(i, (f, forged.to_string()));
        });
        assert_broken_at(copy.path(), seq, &format!("insert at {seq}"));
    }
}

#[test]
fn verify_and_export_refuse_a_directory_without_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no audit segments"), "{stderr}");
    let (code, _, _) = run(&["export", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2);
}

#[test]
fn export_filters_by_window_topic_and_subject() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let d = dir.path().to_str().unwrap();

    // 10:10 (inclusive) to 10:20 (exclusive): records 11..=20.
    let (code, stdout, stderr) = run(&[
        "export",
        d,
        "--since",
        "2026-11-27T10:10:00Z",
        "--until",
        "2026-11-27T10:20:00Z",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let seqs: Vec<u64> = stdout
        .lines()
        .map(|l| serde_json::from_str::<AuditRecord>(l).unwrap().seq)
        .collect();
    assert_eq!(seqs, (11..=20).collect::<Vec<_>>());

    let (_, stdout, _) = run(&[
        "export",
        d,
        "--topic",
        "billing",
        "--subject",
        "bob",
        "--format",
        "jsonl",
    ]);
    assert_eq!(stdout.lines().count(), 25);
    let (_, stdout, _) = run(&[
        "export",
        d,
        "--subject",
        "bob",
        "--topic",
        "patient-records",
    ]);
    assert_eq!(stdout.lines().count(), 0);

    // CSV: a header, then one row per partition.
    let (code, stdout, _) = run(&[
        "export",
        d,
        "--until",
        "2026-11-27T10:03:00Z",
        "--format",
        "csv",
    ]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("seq,time,kind,"), "{}", lines[0]);
    assert_eq!(lines.len(), 1 + 3 * 2);
    assert!(
        lines[1].starts_with("1,2026-11-27T10:00:00.000000Z,Request,"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains(",patient-records,1,0,4,5,500,Allow,"),
        "{}",
        lines[2]
    );

    let (code, _, stderr) = run(&["export", d, "--since", "yesterday"]);
    assert_eq!(code, 2, "clap rejects a bad time");
    assert!(stderr.contains("RFC 3339"), "{stderr}");
}

#[test]
fn export_warns_when_the_chain_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let copy = tampered(dir.path(), |l| {
        l.remove(9);
    });
    let (code, stdout, stderr) = run(&["export", copy.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 49);
    assert!(stderr.contains("BROKEN at seq 10"), "{stderr}");
}
