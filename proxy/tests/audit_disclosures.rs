//! `streamgate-proxy audit disclosures` run as a binary on real spools: the
//! accounting of disclosures for one patient.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use streamgate_proxy::audit::record::{
    AuditDecision, AuditRecord, Operation, ResourceAccess, Subject,
};
use streamgate_proxy::audit::spool::{SpoolConfig, SpoolHandle};
use streamgate_proxy::masking::{HashKey, patient_pseudonym};

const KEY: &[u8] = b"patient-key-bytes";

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
        .unwrap()
        .into()
}

fn p(id: &str) -> String {
    patient_pseudonym(&HashKey::new(KEY.to_vec()).unwrap(), id)
}

/// Who read/wrote which patients: (minute, who, api, decision, partition,
/// first offset, patients).
type Row = (
    i64,
    &'static str,
    &'static str,
    AuditDecision,
    i32,
    i64,
    &'static [&'static str],
);
const ROWS: &[Row] = &[
    (
        0,
        "intake-app",
        "Produce",
        AuditDecision::Allow,
        0,
        0,
        &["MRN-00000001", "MRN-00000002"],
    ),
    (
        1,
        "clinician",
        "Fetch",
        AuditDecision::Allow,
        0,
        0,
        &["MRN-00000001", "MRN-00000002"],
    ),
    (
        2,
        "billing-app",
        "Fetch",
        AuditDecision::Masked,
        0,
        0,
        &["MRN-00000001", "MRN-00000002"],
    ),
    (
        3,
        "billing-app",
        "Fetch",
        AuditDecision::Masked,
        1,
        0,
        &["MRN-00000003"],
    ),
    (4, "research-app", "Fetch", AuditDecision::Deny, 0, 0, &[]),
    (
        5,
        "clinician",
        "Fetch",
        AuditDecision::Allow,
        0,
        10,
        &["MRN-00000001"],
    ),
];

fn generate(dir: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let spool = SpoolHandle::start(SpoolConfig {
            segment_bytes: 2048,
            checkpoint_interval: Duration::from_secs(3600),
            ..SpoolConfig::new(dir)
        });
        for &(minute, who, api, decision, partition, first, patients) in ROWS {
            let op = if api == "Produce" {
                Operation::Write
            } else {
                Operation::Read
            };
            let mut res = ResourceAccess::partition(
                "patient-events",
                partition,
                Some((first, first + 9)),
                10,
                10_240,
            );
            res.patients = patients.iter().map(|i| p(i)).collect();
            res.patients.sort();
            res.unattributed = u64::from(minute == 5);
            let mut rec = AuditRecord::request(api, 9, op)
                .at(start() + TimeDelta::minutes(minute))
                .subject(Subject::user(who, vec![], Some("http://idp".into())))
                .client(Some(format!("{who}-client")), "127.0.0.1:5000")
                .resource(res)
                .decision(decision, format!("rule {who}-rule"))
                .policy("phi-access", 2);
            if decision == AuditDecision::Masked {
                rec = rec.masking("patient-phi", Default::default());
            }
            spool.append(rec).await.unwrap().await.unwrap();
        }
        spool.close().await;
    });
}

fn run(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamgate-proxy"))
        .arg("audit")
        .arg("disclosures")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn setup() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    generate(&spool);
    let key = dir.path().join("patient-key");
    std::fs::write(&key, KEY).unwrap();
    let (s, k) = (spool.display().to_string(), key.display().to_string());
    (dir, s, k)
}

#[test]
fn lists_every_disclosure_of_one_patient_as_csv_and_nothing_else() {
    let (_dir, spool, key) = setup();
    let (code, out, err) = run(&[&spool, "--patient", "MRN-00000001", "--key", &key], "");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("time,seq,subjectKind,subject,issuer,pod,namespace,serviceAccount,clientId,operation,topic,partition,offsetFirst,offsetLast,records,view,decision,maskedBy,reason,policy,unattributed"), "{out}");
    let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split(',').collect()).collect();
    let who: Vec<(&str, &str, &str, &str, &str)> = rows
        .iter()
        .map(|r| (r[3], r[9], r[11], r[12], r[15]))
        .collect();
    assert_eq!(
        who,
        [
            ("intake-app", "write", "0", "0", "clear"),
            ("clinician", "read", "0", "0", "clear"),
            ("billing-app", "read", "0", "0", "masked"),
            ("clinician", "read", "0", "10", "clear"),
        ]
    );
    assert_eq!(rows[2][17], "patient-phi", "the masking rule named");
    assert_eq!(
        rows[1][18], "rule clinician-rule",
        "the rule that allowed it"
    );
    assert_eq!(rows[3][20], "1", "this range may have held other patients");
    assert!(!out.contains("MRN-"), "the identifier is never printed");
    assert!(err.contains("4 disclosure(s)"), "{err}");
}

#[test]
fn json_a_window_and_the_patient_from_stdin() {
    let (_dir, spool, key) = setup();
    let (code, out, err) = run(
        &[
            &spool,
            "--patient",
            "-",
            "--key",
            &key,
            "--format",
            "json",
            "--since",
            "2026-11-27T10:02:00Z",
            "--until",
            "2026-11-27T10:04:00Z",
        ],
        "MRN-00000003\n",
    );
    assert_eq!(code, 0, "{err}");
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    let got = got.as_array().unwrap();
    assert_eq!(got.len(), 1, "{out}");
    assert_eq!(got[0]["subject"], "billing-app");
    assert_eq!(got[0]["partition"], 1);
    assert_eq!(got[0]["view"], "masked");
    assert_eq!(got[0]["operation"], "read");
}

#[test]
fn a_patient_never_read_or_another_key_yields_an_empty_report() {
    let (dir, spool, key) = setup();
    let (code, out, _) = run(
        &[
            &spool,
            "--patient",
            "MRN-99999999",
            "--key",
            &key,
            "--format",
            "json",
        ],
        "",
    );
    assert_eq!((code, out.trim()), (0, "[]"));
    let other = dir.path().join("other-key");
    std::fs::write(&other, b"another key").unwrap();
    let (code, out, _) = run(
        &[
            &spool,
            "--patient",
            "MRN-00000001",
            "--key",
            other.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "header only: {out}");
}

#[test]
fn a_tampered_trail_exits_non_zero_and_says_why() {
    let (_dir, spool, key) = setup();
    // Hide one disclosure: drop the patients of the clinician's first read.
    let mut segments: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    segments.sort();
    let mut edited = false;
    for seg in segments {
        let text = std::fs::read_to_string(&seg).unwrap();
        let mut out = String::new();
        for line in text.lines() {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            if !edited && v["subject"]["name"] == "clinician" {
                v["resources"][0]["patients"] = serde_json::json!([]);
                edited = true;
                out.push_str(&serde_json::to_string(&v).unwrap());
            } else {
                out.push_str(line); // every other line byte for byte
            }
            out.push('\n');
        }
        std::fs::write(&seg, out).unwrap();
    }
    assert!(edited);
    let (code, _, err) = run(&[&spool, "--patient", "MRN-00000001", "--key", &key], "");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not verify"), "{err}");
}

#[test]
fn the_collectors_copy_gives_the_same_report() {
    let (dir, spool, key) = setup();
    let mut segments: Vec<_> = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    segments.sort();
    // As a collector's file exporter writes it: one ExportLogsServiceRequest
    // per line, the record JSON as each log's body.
    let mut copy = String::new();
    for seg in segments {
        for line in std::fs::read_to_string(seg).unwrap().lines() {
            let log = serde_json::json!({"timeUnixNano": "1", "body": {"stringValue": line}});
            copy.push_str(
                &serde_json::json!({"resourceLogs": [{"resource": {"attributes": []},
                    "scopeLogs": [{"scope": {}, "logRecords": [log]}]}]})
                .to_string(),
            );
            copy.push('\n');
        }
    }
    let path = dir.path().join("collector-copy.jsonl");
    std::fs::write(&path, copy).unwrap();
    let args = |p: &str| {
        vec![
            p.to_string(),
            "--patient".into(),
            "MRN-00000001".into(),
            "--key".into(),
            key.clone(),
        ]
    };
    let from_spool = run(
        &args(&spool).iter().map(String::as_str).collect::<Vec<_>>(),
        "",
    );
    let from_copy = run(
        &args(path.to_str().unwrap())
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        "",
    );
    assert_eq!(from_copy.0, 0, "{}", from_copy.2);
    assert_eq!(from_copy.1, from_spool.1);
    assert_eq!(
        from_copy.1.lines().count(),
        5,
        "header and four disclosures"
    );
}
