//! `streamgate-proxy audit verify|export` run as a binary on real spools.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use streamgate_proxy::audit::chain::record_hash;
use streamgate_proxy::audit::events::checkpoint_note;
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

// ------------------------------------------------ anchors: evidence outside the pod

/// What the collector holds of a spool: every record, once or twice (at-least-once).
fn collector_copy(spool: &Path, into: &Path) -> PathBuf {
    let lines: Vec<String> = load(spool).into_iter().flat_map(|(_, l)| l).collect();
    let path = into.join("collector.jsonl");
    let mut text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    text.push_str(&format!("{}\n", lines[3])); // a record shipped twice
    std::fs::write(&path, text).unwrap();
    path
}

fn verify_anchored(dir: &Path, anchors: &Path) -> (i32, String) {
    let (code, stdout, stderr) = run(&[
        "verify",
        dir.to_str().unwrap(),
        "--anchors",
        anchors.to_str().unwrap(),
    ]);
    (code, format!("{stdout}{stderr}"))
}

/// Re-link every line from seq 1 with fresh hashes after `edit`: a rewrite
/// the spool alone cannot show.
fn rewritten(src: &Path, edit: impl Fn(&mut serde_json::Value)) -> tempfile::TempDir {
    tampered(src, |lines| {
        let mut prev: Option<String> = None;
        for (_, line) in lines.iter_mut() {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            edit(&mut v);
            let p = prev
                .clone()
                .unwrap_or_else(|| v["genesis"].as_str().unwrap().to_owned());
            v["prevHash"] = p.clone().into();
            v["hash"] = record_hash(&p, &v).into();
            prev = v["hash"].as_str().map(str::to_owned);
            *line = v.to_string();
        }
    })
}

#[test]
fn a_spool_agreeing_with_its_anchors_verifies() {
    let (dir, scratch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    generate(dir.path());
    let copy = collector_copy(dir.path(), scratch.path());
    let (code, out) = verify_anchored(dir.path(), &copy);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(", OK"), "{out}");
}

#[test]
fn attacks_the_spool_alone_cannot_show_fail_against_the_anchors() {
    let (dir, scratch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    generate(dir.path());
    let copy = collector_copy(dir.path(), scratch.path());

    // Truncation at a line boundary: the spool alone still verifies.
    let cut = tampered(dir.path(), |l| l.truncate(l.len() - 3));
    assert_eq!(run(&["verify", cut.path().to_str().unwrap()]).0, 0);
    let (code, out) = verify_anchored(cut.path(), &copy);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ends at seq 47 but the anchors witnessed seq 50"),
        "{out}"
    );

    // The last segment deleted.
    let files = load(dir.path());
    let in_last = files.last().unwrap().1.len();
    let gone = tampered(dir.path(), |_| {});
    std::fs::remove_file(
        gone.path()
            .join(files.last().unwrap().0.file_name().unwrap()),
    )
    .unwrap();
    assert_eq!(run(&["verify", gone.path().to_str().unwrap()]).0, 0);
    let (code, out) = verify_anchored(gone.path(), &copy);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("ends at seq {}", 50 - in_last)),
        "{out}"
    );

    // Every record rewritten and re-linked from the same genesis.
    let forged = rewritten(dir.path(), |v| {
        if v.get("subject").is_some() {
            v["subject"]["name"] = "mallory".into();
        }
    });
    assert_eq!(run(&["verify", forged.path().to_str().unwrap()]).0, 0);
    let (code, out) = verify_anchored(forged.path(), &copy);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("seq 1 has hash"), "{out}");

    // The spool deleted and a fresh one started in its place.
    let fresh = tempfile::tempdir().unwrap();
    generate(fresh.path());
    assert_eq!(run(&["verify", fresh.path().to_str().unwrap()]).0, 0);
    let (code, out) = verify_anchored(fresh.path(), &copy);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("a fresh genesis"), "{out}");
}

/// The sidecar's checkpoint Events as `kubectl get events -o json` lists
/// them (core/v1 `message`; one as events.k8s.io `note`), witnessing the
/// spool's records at `seqs`.
fn checkpoint_events(spool: &Path, seqs: &[u64], into: &Path) -> PathBuf {
    let records: Vec<serde_json::Value> = load(spool)
        .into_iter()
        .flat_map(|(_, l)| l)
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    let genesis = records[0]["genesis"].as_str().unwrap();
    let items: Vec<serde_json::Value> = seqs
        .iter()
        .enumerate()
        .map(|(i, &seq)| {
            let hash = records[seq as usize - 1]["hash"].as_str().unwrap();
            let note = checkpoint_note(seq, hash, Some(genesis));
            let text = if i == 0 { "note" } else { "message" };
            serde_json::json!({"kind": "Event", "reason": "AuditCheckpoint", text: note})
        })
        .chain([serde_json::json!({"kind": "Event", "reason": "AccessAllowed", "message": "…"})])
        .collect();
    let path = into.join("events.json");
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    std::fs::write(&path, serde_json::to_string_pretty(&list).unwrap()).unwrap();
    path
}

#[test]
fn the_sidecars_checkpoint_events_anchor_the_spool() {
    let (dir, scratch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    generate(dir.path());
    let events = checkpoint_events(dir.path(), &[20, 50], scratch.path());
    let (code, out) = verify_anchored(dir.path(), &events);
    assert_eq!(code, 0, "{out}");

    // Cut at a line boundary: the Events witnessed seq 50.
    let cut = tampered(dir.path(), |l| l.truncate(l.len() - 3));
    let (code, out) = verify_anchored(cut.path(), &events);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("but the anchors witnessed seq 50"), "{out}");

    // A fresh spool in its place.
    let fresh = tempfile::tempdir().unwrap();
    generate(fresh.path());
    let (code, out) = verify_anchored(fresh.path(), &events);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("a fresh genesis"), "{out}");

    // Rewritten and re-linked from the same genesis.
    let forged = rewritten(dir.path(), |v| {
        if v.get("subject").is_some() {
            v["subject"]["name"] = "mallory".into();
        }
    });
    let (code, out) = verify_anchored(forged.path(), &events);
    assert_eq!(code, 1, "{out}");

    // Events and the collector's copy together.
    let copy = collector_copy(dir.path(), scratch.path());
    let (code, stdout, stderr) = run(&[
        "verify",
        dir.path().to_str().unwrap(),
        "--anchors",
        events.to_str().unwrap(),
        "--anchors",
        copy.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn a_torn_tail_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    let last = load(dir.path()).last().unwrap().0.clone();
    std::fs::write(
        format!("{}.1764000000000.torn", last.display()),
        "{\"seq\":51,\"ti",
    )
    .unwrap();
    let (code, stdout, _) = run(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("TORN:"), "{stdout}");
}

#[test]
fn the_collector_copy_verifies_on_its_own_in_otlp_json_and_shows_gaps() {
    let (dir, scratch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    generate(dir.path());
    let lines: Vec<String> = load(dir.path()).into_iter().flat_map(|(_, l)| l).collect();
    // As a collector's file exporter writes it: one ExportLogsServiceRequest per line.
    let otlp = |lines: &[String]| -> String {
        lines
            .chunks(7)
            .map(|chunk| {
                let logs: Vec<serde_json::Value> = chunk
                    .iter()
                    .map(|l| serde_json::json!({"timeUnixNano": "1", "body": {"stringValue": l}}))
                    .collect();
                serde_json::json!({"resourceLogs": [{"resource": {"attributes": []},
                    "scopeLogs": [{"scope": {}, "logRecords": logs}]}]})
                .to_string()
                    + "\n"
            })
            .collect()
    };
    let whole = scratch.path().join("whole.jsonl");
    std::fs::write(&whole, otlp(&lines)).unwrap();
    let (code, stdout, stderr) = run(&["verify", whole.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("seq 1..50 linked"), "{stdout}");
    let (code, out) = verify_anchored(dir.path(), &whole);
    assert_eq!(code, 0, "{out}");

    let mut holed = lines.clone();
    holed.drain(20..25);
    let gap = scratch.path().join("gap.jsonl");
    std::fs::write(&gap, otlp(&holed)).unwrap();
    let (code, stdout, _) = run(&["verify", gap.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("GAP"), "{stdout}");

    let mut edited = lines.clone();
    edited[10] = edited[10].replace("\"records\":10", "\"records\":1");
    let bad = scratch.path().join("edited.jsonl");
    std::fs::write(&bad, otlp(&edited)).unwrap();
    let (code, _, stderr) = run(&["verify", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("the copy was edited"), "{stderr}");
}

#[test]
fn replay_lists_what_one_principal_read_from_the_spool_or_the_collectors_copy() {
    let (dir, scratch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    generate(dir.path());
    let spool = dir.path().to_str().unwrap();
    let (code, stdout, stderr) = run(&["replay", spool, "--subject", "alice"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    // 25 reads by alice, each of two partitions; none of bob's.
    assert_eq!(lines.len(), 50, "{stdout}");
    assert!(
        lines.iter().all(|l| l.contains("patient-records")),
        "{stdout}"
    );
    assert!(
        lines[0].contains("patient-records[0] offsets 0..9 (10 records)  Allow  (rule read)"),
        "{}",
        lines[0]
    );
    // A window: 10:00 to 10:10 holds alice's reads at minutes 0, 2, 4, 6, 8.
    let (_, stdout, _) = run(&[
        "replay",
        spool,
        "--subject",
        "alice",
        "--until",
        "2026-11-27T10:10:00Z",
        "--json",
    ]);
    let got: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 10);
    assert_eq!(got[2]["offsets"], serde_json::json!([20, 29]));

    // The collector's copy (a record shipped twice counts once) says the same.
    let copy = collector_copy(dir.path(), scratch.path());
    let (code, from_copy, _) = run(&["replay", copy.to_str().unwrap(), "--subject", "alice"]);
    assert_eq!(code, 0);
    assert_eq!(
        from_copy,
        stdout_of(&["replay", spool, "--subject", "alice"])
    );

    // A trail that does not verify: listed, but the exit code says not to trust it.
    let broken = tampered(dir.path(), |l| {
        l.remove(10);
    });
    let (code, _, stderr) = run(&[
        "replay",
        broken.path().to_str().unwrap(),
        "--subject",
        "alice",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("does not verify"), "{stderr}");
}

fn stdout_of(args: &[&str]) -> String {
    run(args).1
}
