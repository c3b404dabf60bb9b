//! Identity and policy end to end: confluent-kafka (librdkafka, OIDC
//! client-credentials against the real oidc-provider) and workload identity
//! through the sidecar against tansu. Every refusal is checked by the error
//! code the client library reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use streamgate_e2e::{Broker, IDP_AUDIENCE, Idp, Proxy, ProxyOptions, Storage, peers};

/// Kafka's TOPIC_AUTHORIZATION_FAILED, as librdkafka reports it.
const TOPIC_AUTH: i64 = 29;

/// A small confluent-kafka driver, fed commands on stdin, one JSON answer per line:
///   produce TOPIC N      → {"ok": n, "errors": [codes]}
///   consume TOPIC N      → {"records": n, "error": code|null}   (consumer group)
///   delete TOPIC         → {"error": code|null}
/// argv: bootstrap, then either `plain` or `oidc TOKEN_URL CLIENT_ID`.
const CLIENT: &str = r#"
import json, sys, time
from confluent_kafka import Producer, Consumer, KafkaException
from confluent_kafka.admin import AdminClient

bootstrap, mode = sys.argv[1], sys.argv[2]
conf = {"bootstrap.servers": bootstrap, "enable.idempotence": False}
if mode == "oidc":
    conf.update({
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.token.endpoint.url": sys.argv[3],
        "sasl.oauthbearer.client.id": sys.argv[4],
        "sasl.oauthbearer.client.secret": sys.argv[4] + "-secret",
        "sasl.oauthbearer.scope": "kafka",
    })

def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()

producer = Producer(dict(conf, **{"linger.ms": 0, "message.timeout.ms": 10000}))
for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "produce":
        ok, errors = [0], []
        def cb(err, msg):
            if err is None: ok[0] += 1
            else: errors.append(err.code())
        for i in range(int(cmd[2])):
            try:
                producer.produce(cmd[1], value=b"v%d" % i, on_delivery=cb)
            except KafkaException as e:
                errors.append(e.args[0].code())
        producer.flush(15)
        say({"ok": ok[0], "errors": errors})
    elif cmd[0] == "consume":
        c = Consumer(dict(conf, **{"group.id": "g-" + cmd[1], "auto.offset.reset": "earliest",
                                   "enable.auto.commit": False}))
        c.subscribe([cmd[1]])
        n, error, deadline = 0, None, time.time() + 20
        while n < int(cmd[2]) and time.time() < deadline:
            m = c.poll(0.5)
            if m is None: continue
            if m.error():
                error = m.error().code(); break
            n += 1
        if n: c.commit(asynchronous=False)
        c.close()
        say({"records": n, "error": error})
    elif cmd[0] == "delete":
        admin = AdminClient(conf)
        try:
            admin.delete_topics([cmd[1]], operation_timeout=10)[cmd[1]].result(15)
            say({"error": None})
        except Exception as e:
            err = e.args[0] if e.args else None
            say({"error": err.code() if hasattr(err, "code") else str(e)})
"#;

struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    fn start(dir: &Path, args: &[&str]) -> Client {
        let script = dir.join("idclient.py");
        std::fs::write(&script, CLIENT).unwrap();
        let mut child = Command::new(&peers().python)
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Client {
            child,
            stdin,
            stdout,
        }
    }

    fn oidc(dir: &Path, proxy: &Proxy, idp: &Idp, client_id: &str) -> Client {
        Client::start(dir, &[&proxy.addr(), "oidc", &idp.token_url(), client_id])
    }

    fn plain(dir: &Path, proxy: &Proxy) -> Client {
        Client::start(dir, &[&proxy.addr(), "plain"])
    }

    fn ask(&mut self, cmd: &str) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{cmd}: {e}: {line:?}"))
    }

    fn produce(&mut self, topic: &str, n: u32) -> Value {
        self.ask(&format!("produce {topic} {n}"))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn oidc_policy(issuer: &str) -> String {
    format!(
        r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {{name: phi-access, namespace: clinical}}
spec:
  identity:
    oidc: {{issuer: "{issuer}", audiences: ["{IDP_AUDIENCE}"]}}
  rules:
    - name: clinicians
      subjects: [{{kind: Group, name: clinicians}}]
      topics: ["patient-*"]
      operations: [Write, Read, Describe]
    - name: no-restricted
      subjects: [{{kind: Group, name: clinicians}}]
      topics: ["patient-restricted"]
      operations: [Write, Read, Describe]
      effect: Deny
    - name: compliance-admin
      subjects: [{{kind: Group, name: compliance-officers}}]
      topics: ["**"]
      operations: [Admin, Describe]
  blockedOperations: [DeleteTopics]
"#
    )
}

fn workload_policy(enabled: bool) -> String {
    format!(
        r#"
apiVersion: streamgate.dev/v1alpha1
kind: StreamPolicy
metadata: {{name: intake, namespace: clinical}}
spec:
  identity: {{workloadIdentity: {enabled}}}
  rules:
    - name: intake-app
      subjects: [{{kind: ServiceAccount, name: intake}}]
      topics: ["intake-*"]
      operations: [Write, Describe]
"#
    )
}

fn start_proxy(broker: &Broker, policy_dir: &Path) -> Proxy {
    Proxy::start(
        broker,
        ProxyOptions {
            args: vec!["--policy-dir".into(), policy_dir.display().to_string()],
            envs: vec![
                ("STREAMGATE_SERVICE_ACCOUNT".into(), "intake".into()),
                ("STREAMGATE_POD_NAME".into(), "intake-0".into()),
                ("STREAMGATE_POD_NAMESPACE".into(), "clinical".into()),
            ],
            ..ProxyOptions::default()
        },
    )
}

fn refused_with(v: &Value, code: i64) -> bool {
    v["ok"] == 0
        && v["errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty() && e.iter().all(|c| c == code))
}

#[test]
fn oidc_clients_are_decided_by_policy() {
    let broker = Broker::start(Storage::Memory);
    for t in ["patient-events", "patient-restricted", "claims.2026"] {
        broker.create_topic(t, 1);
    }
    let idp = Idp::start(300, None);
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("policy.yaml"), oidc_policy(&idp.issuer())).unwrap();
    let proxy = start_proxy(&broker, &policies);

    // A clinician produces and consumes (in a consumer group) on patient-*.
    let mut clinician = Client::oidc(dir.path(), &proxy, &idp, "intake-app");
    let v = clinician.produce("patient-events", 5);
    assert_eq!(v["ok"], 5, "{v}\n{}", proxy.output());
    let v = clinician.ask("consume patient-events 5");
    assert_eq!(v["records"], 5, "{v}\n{}", proxy.output());
    // A topic outside the rules.
    let v = clinician.produce("claims.2026", 2);
    assert!(refused_with(&v, TOPIC_AUTH), "denied topic: {v}");
    // Deny beats the patient-* Allow.
    let v = clinician.produce("patient-restricted", 2);
    assert!(refused_with(&v, TOPIC_AUTH), "deny over allow: {v}");

    // A user outside every rule.
    let mut outsider = Client::oidc(dir.path(), &proxy, &idp, "outsider");
    let v = outsider.produce("patient-events", 2);
    assert!(refused_with(&v, TOPIC_AUTH), "outsider: {v}");

    // DeleteTopics is blocked even for the admin group.
    let mut officer = Client::oidc(dir.path(), &proxy, &idp, "compliance-officer");
    let v = officer.ask("delete patient-events");
    assert_eq!(v["error"], TOPIC_AUTH, "blocked DeleteTopics: {v}");
    // …and the topic is still there.
    let v = clinician.produce("patient-events", 1);
    assert_eq!(v["ok"], 1, "{v}");
}

#[test]
fn workload_identity_and_live_policy_reload() {
    let broker = Broker::start(Storage::Memory);
    broker.create_topic("intake-forms", 1);
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let file = policies.join("intake.yaml");
    std::fs::write(&file, workload_policy(true)).unwrap();
    let proxy = start_proxy(&broker, &policies);

    // No SASL: the caller is the pod's ServiceAccount, allowed by the policy.
    let mut app = Client::plain(dir.path(), &proxy);
    let v = app.produce("intake-forms", 3);
    assert_eq!(v["ok"], 3, "{v}\n{}", proxy.output());

    // Turn workload identity off: within a second, the same producer (same
    // connections) is refused.
    let (_, before) = proxy.admin_get("/metrics");
    std::fs::write(&file, workload_policy(false)).unwrap();
    let start = Instant::now();
    loop {
        let v = app.produce("intake-forms", 1);
        if refused_with(&v, TOPIC_AUTH) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "still allowed after the edit: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = start.elapsed();
    assert!(took < Duration::from_millis(1500), "reload took {took:?}");
    // And back on: allowed again, still no reconnect needed (the client may
    // take a metadata refresh to retry a topic it saw refused).
    std::fs::write(&file, workload_policy(true)).unwrap();
    let start = Instant::now();
    loop {
        let v = app.produce("intake-forms", 1);
        if v["ok"] == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not allowed again: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, after) = proxy.admin_get("/metrics");
    let total = |m: &str| {
        m.lines()
            .find(|l| l.contains("connections_total") && !l.starts_with('#'))
            .and_then(|l| l.split_whitespace().last())
            .map(str::to_string)
    };
    assert_eq!(
        total(&before),
        total(&after),
        "policy reloads do not drop or reopen connections"
    );

    // A broken edit keeps the last good policy.
    std::fs::write(
        &file,
        "apiVersion: streamgate.dev/v1alpha1\nkind: StreamPolicy\nspec: [",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let v = app.produce("intake-forms", 1);
    assert_eq!(v["ok"], 1, "{v}");
}
