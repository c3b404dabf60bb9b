//! The confluent-kafka driver the identity, policy and approval end-to-end
//! tests share: librdkafka with OIDC client credentials (or plaintext) through
//! the sidecar, one JSON answer per command.
#![allow(dead_code)]
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::Value;
use streamgate_e2e::{Idp, Proxy, peers};

/// Kafka's TOPIC_AUTHORIZATION_FAILED, as librdkafka reports it.
pub const TOPIC_AUTH: i64 = 29;

/// A small confluent-kafka driver, fed commands on stdin, one JSON answer per line:
///   produce TOPIC N      → {"ok": n, "errors": [codes]}
///   consume TOPIC N      → {"records": n, "error": code|null}   (consumer group)
///   delete TOPIC         → {"error": code|null}
///   read TOPIC N         → {"values": [utf-8 values], "error": code|null}  (consumer group)
/// argv: bootstrap, then either `plain` or `oidc TOKEN_URL CLIENT_ID
/// [EXTENSIONS]` (librdkafka's `sasl.oauthbearer.extensions`, `k=v,k2=v2`).
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
    if len(sys.argv) > 5:
        conf["sasl.oauthbearer.extensions"] = sys.argv[5]

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
    elif cmd[0] == "read":
        c = Consumer(dict(conf, **{"group.id": "g-" + cmd[1], "auto.offset.reset": "earliest",
                                   "enable.auto.commit": False}))
        c.subscribe([cmd[1]])
        values, error, deadline = [], None, time.time() + 20
        while len(values) < int(cmd[2]) and time.time() < deadline:
            m = c.poll(0.5)
            if m is None: continue
            if m.error():
                error = m.error().code(); break
            values.append(m.value().decode("utf-8", "replace"))
        c.close()
        say({"values": values, "error": error})
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

pub struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    pub fn start(dir: &Path, args: &[&str]) -> Client {
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

    pub fn oidc(dir: &Path, proxy: &Proxy, idp: &Idp, client_id: &str) -> Client {
        Client::start(dir, &[&proxy.addr(), "oidc", &idp.token_url(), client_id])
    }

    /// An OIDC client whose every authentication carries the OAUTHBEARER
    /// extensions `extensions` (`key=value,…`).
    pub fn oidc_with_extensions(
        dir: &Path,
        proxy: &Proxy,
        idp: &Idp,
        client_id: &str,
        extensions: &str,
    ) -> Client {
        Client::start(
            dir,
            &[
                &proxy.addr(),
                "oidc",
                &idp.token_url(),
                client_id,
                extensions,
            ],
        )
    }

    pub fn plain(dir: &Path, proxy: &Proxy) -> Client {
        Client::start(dir, &[&proxy.addr(), "plain"])
    }

    pub fn ask(&mut self, cmd: &str) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{cmd}: {e}: {line:?}"))
    }

    pub fn produce(&mut self, topic: &str, n: u32) -> Value {
        self.ask(&format!("produce {topic} {n}"))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn refused_with(v: &Value, code: i64) -> bool {
    v["ok"] == 0
        && v["errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty() && e.iter().all(|c| c == code))
}
