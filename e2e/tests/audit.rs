//! The audit trail end to end: the real broker (tansu), the real proxy binary, real
//! clients (confluent-kafka/librdkafka) and a real OTLP collector (rotel). What the
//! sidecar lets through must be accounted for in its spool, exactly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use streamgate_e2e::*;

const PARTITIONS: u32 = 3;

/// The examples' synthetic claims (PHI-shaped), one record per line.
fn input_file(dir: &Path, copies: usize) -> (PathBuf, usize) {
    let lines = fixture_lines("claims.jsonl");
    let path = dir.join(format!("input-{copies}.jsonl"));
    let mut text = String::new();
    for _ in 0..copies {
        for l in &lines {
            text.push_str(l);
            text.push('\n');
        }
    }
    std::fs::write(&path, text).unwrap();
    (path, lines.len() * copies)
}

/// Produce with librdkafka; (partition, offset) of every acknowledged record.
fn produce(bootstrap: &str, topic: &str, input: &Path) -> (Vec<(i32, i64)>, std::process::Output) {
    let out = python_client(
        "kclient.py",
        &[
            "confluent",
            "produce",
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--input",
            input.to_str().unwrap(),
        ],
    );
    let acked = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.is_object())
        .map(|v| {
            (
                v["partition"].as_i64().unwrap() as i32,
                v["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    (acked, out)
}

/// Consume from the start of every partition; (partition, offset) of every record.
fn consume(
    bootstrap: &str,
    topic: &str,
    expect: usize,
    timeout: u32,
) -> (Vec<(i32, i64)>, std::process::Output) {
    let out = python_client(
        "kclient.py",
        &[
            "confluent",
            "consume",
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--expect",
            &expect.to_string(),
            "--timeout",
            &timeout.to_string(),
        ],
    );
    let got = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            (
                v["partition"].as_i64().unwrap() as i32,
                v["offset"].as_i64().unwrap(),
            )
        })
        .collect();
    (got, out)
}

fn audit_cli(args: &[&str]) -> std::process::Output {
    Command::new(proxy_bin())
        .arg("audit")
        .args(args)
        .output()
        .unwrap()
}

/// Every record of a spool, via `streamgate-proxy audit export DIR --format jsonl`.
fn export(dir: &Path) -> Vec<Value> {
    let out = audit_cli(&["export", dir.to_str().unwrap(), "--format", "jsonl"]);
    check(&out, "audit export")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verify(dir: &Path) {
    let out = audit_cli(&["verify", dir.to_str().unwrap()]);
    check(&out, "audit verify");
}

/// Per partition of `topic`: (records summed, offsets covered) over the `api` records.
fn accounted(
    records: &[Value],
    api: &str,
    topic: &str,
) -> BTreeMap<i64, (u64, BTreeSet<i64>, u64)> {
    let mut per: BTreeMap<i64, (u64, BTreeSet<i64>, u64)> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r["kind"] == "Request" && r["api"] == api)
    {
        for res in r["resources"].as_array().into_iter().flatten() {
            if res["topic"] != topic || res["partition"].is_null() {
                continue;
            }
            let e = per.entry(res["partition"].as_i64().unwrap()).or_default();
            e.0 += res["records"].as_u64().unwrap();
            e.2 += 1;
            if let (Some(first), Some(last)) =
                (res["offsetFirst"].as_i64(), res["offsetLast"].as_i64())
            {
                e.1.extend(first..=last);
            }
        }
    }
    per
}

fn by_partition(acked: &[(i32, i64)]) -> BTreeMap<i64, BTreeSet<i64>> {
    let mut m: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for (p, o) in acked {
        m.entry(i64::from(*p)).or_default().insert(*o);
    }
    m
}

/// The proxy denies everything without a policy: these tests run as a workload whose
/// policy allows every topic, with the given audit `failureMode`.
fn governed(failure_mode: &str, args: Vec<String>, envs: Vec<(String, String)>) -> ProxyOptions {
    governed_topics(failure_mode, "**", args, envs)
}

fn governed_topics(
    failure_mode: &str,
    topics: &str,
    mut args: Vec<String>,
    mut envs: Vec<(String, String)>,
) -> ProxyOptions {
    let dir = tempfile::tempdir().unwrap().keep();
    let policy = format!(
        r#"apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {{name: audit-e2e, namespace: e2e}}
spec:
  identity: {{workloadIdentity: true}}
  audit: {{payload: Digest, failureMode: {failure_mode}}}
  rules:
    - name: everything
      subjects: [{{kind: ServiceAccount, name: audit-e2e}}]
      topics: ["{topics}"]
      operations: [Write, Read, Describe, Create, Admin]
      groups: ["**"]
"#
    );
    std::fs::write(dir.join("policy.yaml"), policy).unwrap();
    args.extend(["--policy-dir".to_string(), dir.display().to_string()]);
    envs.extend([
        (
            "STREAMGATE_SERVICE_ACCOUNT".to_string(),
            "audit-e2e".to_string(),
        ),
        ("STREAMGATE_POD_NAMESPACE".to_string(), "e2e".to_string()),
    ]);
    ProxyOptions {
        args,
        envs,
        ..ProxyOptions::default()
    }
}

fn spool_dir(proxy: &Proxy) -> PathBuf {
    proxy.dir.path().join("audit")
}

#[test]
fn the_spool_accounts_for_exactly_what_was_written_and_read() {
    let broker = Broker::start(Storage::Memory);
    let topic = "audit-claims";
    broker.create_topic(topic, PARTITIONS);
    let mut proxy = Proxy::start(&broker, governed("Closed", vec![], vec![]));
    let (input, n) = input_file(proxy.dir.path(), 1);

    let (acked, out) = produce(&proxy.addr(), topic, &input);
    check(&out, "produce through the sidecar");
    assert_eq!(acked.len(), n, "every record acknowledged");
    let (got, out) = consume(&proxy.addr(), topic, n, 60);
    assert_eq!(
        got.len(),
        n,
        "every record consumed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        proxy.proc.terminate(Duration::from_secs(15)),
        Some(0),
        "{}",
        proxy.output()
    );

    let dir = spool_dir(&proxy);
    verify(&dir);
    let records = export(&dir);
    let want = by_partition(&acked);
    assert_eq!(
        want.len(),
        PARTITIONS as usize,
        "records spread over every partition"
    );

    // Written: per partition, the record counts sum to what was acknowledged and the
    // offset ranges from the Produce responses are exactly the acknowledged offsets.
    let written = accounted(&records, "Produce", topic);
    for (p, offsets) in &want {
        let (count, covered, _) = written.get(p).cloned().unwrap_or_default();
        assert_eq!(
            count,
            offsets.len() as u64,
            "partition {p}: records written"
        );
        assert_eq!(&covered, offsets, "partition {p}: offsets written");
        // Contiguous: the broker numbered this partition's records without gaps (where the
        // numbering starts is the broker's business).
        let (lo, hi) = (*offsets.first().unwrap(), *offsets.last().unwrap());
        assert_eq!(
            hi - lo + 1,
            offsets.len() as i64,
            "partition {p}: contiguous"
        );
    }
    // Read: the union of the Fetch ranges is exactly the produced offsets; a client may
    // refetch (overlap), so the summed counts are at least N and the distinct offsets exactly N.
    let read = accounted(&records, "Fetch", topic);
    let mut read_total = 0;
    for (p, offsets) in &want {
        let (count, covered, _) = read.get(p).cloned().unwrap_or_default();
        assert_eq!(&covered, offsets, "partition {p}: offsets read");
        assert!(
            count >= offsets.len() as u64,
            "partition {p}: {count} records read"
        );
        read_total += covered.len();
    }
    assert_eq!(read_total, n, "N distinct records read");

    // Each data record names the client, the decision and a digest; no payload in Digest mode.
    for r in records
        .iter()
        .filter(|r| r["api"] == "Fetch" && r["resources"][0]["offsetFirst"].is_i64())
    {
        assert!(
            r["payloadDigest"].as_str().unwrap().starts_with("blake3:"),
            "{r}"
        );
        assert!(r.get("payload").is_none(), "no payload in Digest mode");
        assert_eq!(r["operation"], "Read");
        assert!(
            r["clientAddress"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
    }
    // Light records for the rest: Metadata names its topic.
    assert!(
        records
            .iter()
            .any(|r| r["api"] == "Metadata" && r["operation"] == "Describe")
    );
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .filter(|k| *k != "Checkpoint")
        .collect();
    assert_eq!(kinds.first(), Some(&"SidecarStart"));
    assert_eq!(
        kinds.last(),
        Some(&"SidecarStop"),
        "SIGTERM flushes and closes the trail"
    );
    let spooled: String = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    let first_line = fixture_lines("claims.jsonl").remove(0);
    assert!(
        !spooled.contains(&first_line[..first_line.len().min(40)]),
        "no PHI in the spool"
    );
}

#[test]
fn a_sigkilled_sidecar_restarts_on_its_spool_and_the_chain_continues() {
    let broker = Broker::start(Storage::Memory);
    let topic = "audit-kill";
    broker.create_topic(topic, PARTITIONS);
    let mut proxy = Proxy::start(&broker, governed("Closed", vec![], vec![]));
    let (input, _) = input_file(proxy.dir.path(), 20);
    // A load in flight when the sidecar dies.
    let mut load = Command::new(&peers().python)
        .arg(repo_root().join("e2e/clients/kclient.py"))
        .args([
            "confluent",
            "produce",
            "--bootstrap",
            &proxy.addr(),
            "--topic",
            topic,
        ])
        .args(["--input", input.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dir = spool_dir(&proxy);
    let deadline = Instant::now() + Duration::from_secs(60);
    // Read the live spool's files directly (the writer may be mid-line).
    let produce_records = |dir: &Path| -> usize {
        std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .map(|t| t.matches("\"api\":\"Produce\"").count())
                    .sum()
            })
            .unwrap_or(0)
    };
    while produce_records(&dir) < 5 {
        assert!(
            Instant::now() < deadline,
            "no Produce records during the load:\n{}",
            proxy.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    proxy.restart(); // SIGKILL, then the same command line on the same spool
    let _ = load.kill();
    let _ = load.wait();
    let (small, n) = input_file(proxy.dir.path(), 1);
    let (acked, out) = produce(&proxy.addr(), topic, &small);
    check(&out, "produce after the restart");
    assert_eq!(acked.len(), n);
    assert_eq!(proxy.proc.terminate(Duration::from_secs(15)), Some(0));

    verify(&dir);
    let records = export(&dir);
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "seq gapless across the kill"
    );
    let starts: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r["kind"] == "SidecarStart")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(starts.len(), 2, "one SidecarStart per run");
    assert!(
        !records[..starts[1]]
            .iter()
            .any(|r| r["kind"] == "SidecarStop"),
        "the killed run never stopped cleanly"
    );
    assert!(
        records[starts[1]..].iter().any(|r| r["api"] == "Produce"),
        "the second run records on the same chain"
    );
}

fn metric(proxy: &Proxy, name: &str) -> u64 {
    let (_, text) = proxy.admin_get("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

/// A spool path whose parent is a regular file: nothing can ever be written there.
fn unwritable_spool(base: &Path) -> PathBuf {
    let file = base.join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    file.join("audit")
}

#[test]
fn closed_refuses_phi_traffic_when_the_spool_is_unwritable_and_open_keeps_it_flowing() {
    let broker = Broker::start(Storage::Memory);
    let base = tempfile::tempdir().unwrap();
    let spool = unwritable_spool(base.path());
    let (input, n) = input_file(base.path(), 1);
    let topic = "audit-closed";
    for t in [topic, "audit-closed-writes", "audit-open-writes"] {
        broker.create_topic(t, PARTITIONS);
    }
    // Data already in the broker (written directly), to be read through the sidecar.
    let (acked, out) = produce(&broker.addr(), topic, &input);
    check(&out, "produce directly to the broker");
    assert_eq!(acked.len(), n);

    let closed = Proxy::start(
        &broker,
        governed(
            "Closed",
            vec!["--audit-dir".into(), spool.to_str().unwrap().into()],
            vec![],
        ),
    );
    let (got, out) = consume(&closed.addr(), topic, n, 15);
    assert!(
        got.is_empty(),
        "Closed: no record released unaudited, got {}",
        got.len()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("consumer error"),
        "the consumer reports the refusal:\n{stderr}\nproxy:\n{}",
        closed.output()
    );
    let (acked, out) = produce(&closed.addr(), "audit-closed-writes", &input);
    assert!(acked.is_empty(), "Closed: no write acknowledged");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("POLICY_VIOLATION") || stderr.contains("olicy violation"),
        "the producer reports the refusal:\n{stderr}"
    );
    let log = closed.output();
    assert!(log.contains("records withheld"), "{log}");
    assert!(log.contains("Produce refused"), "{log}");
    assert!(metric(&closed, "streamgate_audit_failed_records_total") > 0);
    assert_eq!(metric(&closed, "streamgate_audit_spool_healthy"), 0);
    for phi in fixture_lines("claims.jsonl").iter().take(20) {
        assert!(!log.contains(phi.as_str()), "no PHI in the sidecar's log");
    }

    let open = Proxy::start(
        &broker,
        governed(
            "Open",
            vec!["--audit-dir".into(), spool.to_str().unwrap().into()],
            vec![],
        ),
    );
    let (got, out) = consume(&open.addr(), topic, n, 60);
    assert_eq!(
        got.len(),
        n,
        "Open: traffic flows\n{}\nproxy:\n{}",
        String::from_utf8_lossy(&out.stderr),
        open.output()
    );
    let (acked, out) = produce(&open.addr(), "audit-open-writes", &input);
    check(&out, "Open: produce flows");
    assert_eq!(acked.len(), n);
    assert!(
        metric(&open, "streamgate_audit_failed_records_total") > 0,
        "Open: the failure is reported"
    );
    assert!(
        open.output().contains("audit record"),
        "Open: the failure is logged"
    );
}

#[test]
fn the_records_reach_a_real_otlp_collector() {
    let broker = Broker::start(Storage::Memory);
    let collector = Collector::start();
    let topic = "audit-otlp";
    broker.create_topic(topic, PARTITIONS);
    let proxy = Proxy::start(&broker, governed("Closed", vec![], collector.otel_env()));
    write_and_read_back(&proxy, topic);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = collector.output();
        let fetch_line = text.lines().any(|l| {
            l.contains("\"api\":\"Fetch\"")
                && l.contains(&format!("\"topic\":\"{topic}\""))
                && l.contains("offsetFirst")
        });
        if fetch_line && text.contains("messaging.operation.name: Str(Fetch)") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Fetch record for {topic} reached the collector:\n{}\nproxy:\n{}",
            &text[text.len().saturating_sub(4000)..],
            proxy.output()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The claims fixture written to `topic` through `proxy` and read back whole.
fn write_and_read_back(proxy: &Proxy, topic: &str) {
    let (input, n) = input_file(proxy.dir.path(), 1);
    let (acked, out) = produce(&proxy.addr(), topic, &input);
    check(&out, "produce");
    assert_eq!(acked.len(), n);
    let (got, _) = consume(&proxy.addr(), topic, n, 60);
    assert_eq!(got.len(), n);
}

/// The collector's copy, as an auditor reads it off the topic the collector
/// writes to: one OTLP JSON batch per line.
fn read_copy(broker: &Broker, topic: &str, into: &Path) -> String {
    let out = kcat(
        &[
            "-b",
            &broker.addr(),
            "-t",
            topic,
            "-C",
            "-e",
            "-o",
            "beginning",
            "-q",
            "-f",
            "%s\n",
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    std::fs::write(into, &text).unwrap();
    text
}

#[test]
fn audit_match_proves_the_recorded_ranges_against_the_broker_and_catches_changed_data() {
    let mut broker = Broker::start(Storage::Memory);
    let topic = "audit-match";
    broker.create_topic(topic, PARTITIONS);
    // The reader gets a masked member name: the trail must still prove the
    // broker's bytes, not only what the reader saw.
    let opts = governed("Closed", vec![], vec![]);
    let policy_dir = opts.args.last().unwrap().clone();
    std::fs::write(
        Path::new(&policy_dir).join("masking.yaml"),
        r#"apiVersion: streamgate.dev/v1alpha1
kind: MaskingRule
metadata: {name: member-names, namespace: e2e}
spec:
  topics: [audit-match]
  fields: [{path: "$.memberName", strategy: Redact}]
"#,
    )
    .unwrap();
    let mut proxy = Proxy::start(&broker, opts);
    write_and_read_back(&proxy, topic);
    assert_eq!(
        proxy.proc.terminate(Duration::from_secs(15)),
        Some(0),
        "{}",
        proxy.output()
    );
    let dir = spool_dir(&proxy);
    let spool = dir.to_str().unwrap();
    let bootstrap = broker.addr();
    let matched = |args: &[&str]| {
        let mut all = vec!["match", spool, "--bootstrap", &bootstrap];
        all.extend_from_slice(args);
        audit_cli(&all)
    };

    // Every range written and read, fetched again from the broker, digests
    // to what the trail recorded: produced and fetched batches alike.
    let out = matched(&[]);
    let text = check(&out, "audit match");
    let lines: Vec<&str> = text.lines().collect();
    let proved = |api: &str| {
        lines
            .iter()
            .filter(|l| l.starts_with("MATCH") && l.contains(api))
            .count()
    };
    assert!(
        proved("Produce") >= PARTITIONS as usize && proved("Fetch") >= PARTITIONS as usize,
        "{text}"
    );
    assert!(lines.iter().all(|l| l.starts_with("MATCH")), "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Fetch") && l.contains("Masked")),
        "the reads were masked, and still proven: {text}"
    );

    // The broker's data changes under the trail (the topic is lost and
    // rewritten with other records at the same offsets): match says so.
    broker.restart(Duration::from_millis(200));
    broker.create_topic(topic, PARTITIONS);
    let (input, _) = input_file(proxy.dir.path(), 1);
    let forged: String = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(|l| format!("{}\n", l.replace("MRN", "XRN")))
        .collect();
    let forged_file = proxy.dir.path().join("forged.jsonl");
    std::fs::write(&forged_file, forged).unwrap();
    let (_, out) = produce(&broker.addr(), topic, &forged_file);
    check(&out, "produce other records directly");
    let out = matched(&["--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        verdicts
            .iter()
            .any(|v| v["verdict"]["result"] == "Mismatch"),
        "{verdicts:?}"
    );
    assert!(
        verdicts.iter().all(|v| v["verdict"]["result"] != "Match"),
        "no range still matches after the rewrite: {verdicts:?}"
    );
}

#[test]
fn the_collectors_copy_outlives_the_pod_and_anchors_its_spool() {
    let broker = Broker::start(Storage::Memory);
    let copy_topic = "audit-copy";
    broker.create_topic(copy_topic, 1);
    let collector = Collector::start_exporting_to(&broker, copy_topic);
    let topic = "audit-anchored";
    broker.create_topic(topic, PARTITIONS);
    let mut proxy = Proxy::start(&broker, governed("Closed", vec![], collector.otel_env()));
    write_and_read_back(&proxy, topic);
    // The pod goes away: SIGTERM, its last records (SidecarStop with the
    // final head) shipped within the grace period.
    assert_eq!(proxy.proc.terminate(Duration::from_secs(30)), Some(0));

    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("collector-copy.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read_copy(&broker, copy_topic, &copy).contains("SidecarStop") {
        assert!(
            Instant::now() < deadline,
            "SidecarStop never reached the collector's copy:\n{}",
            proxy.output()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // What the auditor holds verifies on its own, to the final head…
    let out = audit_cli(&["verify", copy.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK"), "{stdout}");
    // …and anchors the spool: intact, it agrees;
    let spool = spool_dir(&proxy);
    let out = audit_cli(&[
        "verify",
        spool.to_str().unwrap(),
        "--anchors",
        copy.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // with its tail cut at a line boundary (which `verify` alone accepts), it does not.
    let last = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .max()
        .unwrap();
    let text = std::fs::read_to_string(&last).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    let cut: String = kept[..kept.len() - 1]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&last, cut).unwrap();
    let out = audit_cli(&["verify", spool.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a cut tail passes the spool's own check"
    );
    let out = audit_cli(&[
        "verify",
        spool.to_str().unwrap(),
        "--anchors",
        copy.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("cut from the end"), "{stdout}");
}

/// The same governed options with the policy's `audit.maxShipLag` set.
fn with_max_ship_lag(opts: ProxyOptions, lag: &str) -> ProxyOptions {
    let at = opts.args.iter().position(|a| a == "--policy-dir").unwrap();
    let file = Path::new(&opts.args[at + 1]).join("policy.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let text = text.replace(
        "audit: {payload: Digest, ",
        &format!("audit: {{maxShipLag: {lag}, payload: Digest, "),
    );
    std::fs::write(&file, text).unwrap();
    opts
}

#[test]
fn past_max_ship_lag_closed_refuses_and_open_carries_on_and_records_the_lag() {
    let broker = Broker::start(Storage::Memory);
    let mut collector = Collector::start();
    let base = tempfile::tempdir().unwrap();
    let (input, n) = input_file(base.path(), 1);
    for t in ["lag-closed", "lag-open"] {
        broker.create_topic(t, PARTITIONS);
    }
    let otel = collector.otel_env();
    let closed = Proxy::start(
        &broker,
        with_max_ship_lag(governed("Closed", vec![], otel.clone()), "2s"),
    );
    let open = Proxy::start(
        &broker,
        with_max_ship_lag(governed("Open", vec![], otel), "2s"),
    );
    for (proxy, topic) in [(&closed, "lag-closed"), (&open, "lag-open")] {
        let (acked, out) = produce(&proxy.addr(), topic, &input);
        check(&out, "produce while the collector is up");
        assert_eq!(acked.len(), n);
    }

    // The collector goes down; records pile up unshipped past maxShipLag.
    collector.stop();
    for (proxy, topic) in [(&closed, "lag-closed"), (&open, "lag-open")] {
        let (acked, out) = produce(&proxy.addr(), topic, &input);
        check(
            &out,
            "produce just after the collector went down (within maxShipLag)",
        );
        assert_eq!(acked.len(), n);
    }
    std::thread::sleep(Duration::from_secs(3));

    let (acked, out) = produce(&closed.addr(), "lag-closed", &input);
    assert!(
        acked.is_empty(),
        "Closed: nothing acknowledged past maxShipLag"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("POLICY_VIOLATION") || stderr.contains("olicy violation"),
        "the producer is told:\n{stderr}"
    );
    assert!(closed.output().contains("lags"), "{}", closed.output());

    let (acked, out) = produce(&open.addr(), "lag-open", &input);
    check(&out, "Open carries on past maxShipLag");
    assert_eq!(acked.len(), n);
    let lag_records: Vec<Value> = export(&spool_dir(&open))
        .into_iter()
        .filter(|r| {
            r["kind"] == "SpoolFailure" && r["reason"].as_str().is_some_and(|s| s.contains("lags"))
        })
        .collect();
    assert_eq!(lag_records.len(), 1, "Open records the crossing once");

    // The collector comes back: once it caught up, Closed accepts writes again.
    collector.start_again();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (acked, _) = produce(&closed.addr(), "lag-closed", &input);
        if acked.len() == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Closed never recovered after the collector came back:\n{}",
            closed.output()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_refusal_by_policy_is_a_record_too() {
    let broker = Broker::start(Storage::Memory);
    for t in ["audit-allowed", "audit-forbidden"] {
        broker.create_topic(t, 1);
    }
    let mut proxy = Proxy::start(
        &broker,
        governed_topics("Closed", "audit-allowed", vec![], vec![]),
    );
    let (input, n) = input_file(proxy.dir.path(), 1);
    let (acked, out) = produce(&proxy.addr(), "audit-allowed", &input);
    check(&out, "produce to the allowed topic");
    assert_eq!(acked.len(), n);
    let (acked, _) = produce(&proxy.addr(), "audit-forbidden", &input);
    assert!(acked.is_empty(), "the policy refuses the other topic");
    assert_eq!(proxy.proc.terminate(Duration::from_secs(15)), Some(0));

    let dir = spool_dir(&proxy);
    verify(&dir);
    let records = export(&dir);
    let allowed = records
        .iter()
        .find(|r| r["api"] == "Produce" && r["decision"] == "Allow")
        .expect("an allowed Produce record");
    assert_eq!(allowed["subject"]["kind"], "ServiceAccount", "{allowed}");
    assert_eq!(allowed["policy"]["name"], "audit-e2e", "{allowed}");
    assert!(
        allowed["reason"].as_str().unwrap().contains("everything"),
        "{allowed}"
    );
    let denied: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "Request" && r["decision"] == "Deny")
        .collect();
    assert!(
        denied.iter().any(|r| r["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("audit-forbidden")),
        "a Deny record names the refused topic: {denied:?}"
    );
}

#[test]
fn policy_reloads_applied_and_rejected_are_records() {
    let broker = Broker::start(Storage::Memory);
    let opts = governed("Closed", vec![], vec![]);
    let policy_dir = PathBuf::from(
        opts.args
            .iter()
            .skip_while(|a| *a != "--policy-dir")
            .nth(1)
            .unwrap(),
    );
    let mut proxy = Proxy::start(&broker, opts);
    let file = policy_dir.join("policy.yaml");
    let good = std::fs::read_to_string(&file).unwrap();
    // A typo in an operation: the reload is rejected, the old policy stays.
    std::fs::write(
        &file,
        good.replace("operations: [Write,", "operations: [Wrte,"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // Fixed, and the policy changes generation-free content: applied again.
    std::fs::write(
        &file,
        good.replace("audit-e2e, namespace", "audit-e2e-v2, namespace"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(proxy.proc.terminate(Duration::from_secs(15)), Some(0));

    let dir = spool_dir(&proxy);
    verify(&dir);
    let reloads: Vec<String> = export(&dir)
        .iter()
        .filter(|r| r["kind"] == "PolicyReload")
        .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        reloads
            .iter()
            .any(|r| r.starts_with("policy in force at start: audit-e2e")),
        "the policy in force at start is recorded: {reloads:?}"
    );
    assert!(
        reloads
            .iter()
            .any(|r| r.contains("rejected") && r.contains("Wrte")),
        "the rejected reload is recorded with its error: {reloads:?}"
    );
    assert!(
        reloads
            .iter()
            .any(|r| r.contains("applied") && r.contains("audit-e2e-v2")),
        "the applied reload names the new policy: {reloads:?}"
    );
}
