"""streamgate proxy benchmark: the same load direct-to-broker and through the
sidecar, in one run, alternating rounds, medians. Started by run.sh (which
sources the peers, waits for tansu and builds the release proxy).

Not a test: it measures. A mode whose proxy feature is missing fails with a
message naming the missing flag instead of measuring something else.
"""

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TANSU_NODE_ID = 111  # tansu leads every partition from node 111
CLK_TCK = int(subprocess.run(["getconf", "CLK_TCK"], capture_output=True, text=True, check=True).stdout)
MB = 1_000_000  # MB means 10^6 bytes everywhere in the output


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg():
    return float(Path("/proc/loadavg").read_text().split()[0])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(p):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", p))
            return True
        except OSError:
            return False


def proxy_port():
    """A bootstrap port p with p + 1 + 111 (tansu's node id) also free."""
    for _ in range(200):
        p = free_port()
        if p < 60000 and port_free(p + 1 + TANSU_NODE_ID):
            return p
    sys.exit("no free port pair for the proxy")


def wait_port(port, timeout, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def http_status(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status
    except Exception:  # noqa: BLE001 — any failure means "not ready yet"
        return None


def proc_cpu_ticks(pid):
    # Fields after the parenthesised comm (which may hold spaces): utime is
    # field 14 and stime field 15 of /proc/<pid>/stat, i.e. index 11, 12 here.
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


def proc_status_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


class Procs:
    """Children started by the benchmark, stopped by their pid at exit."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.children = []

    def start(self, name, cmd, env=None, cwd=None):
        logf = open(self.workdir / f"{name}.log", "wb")
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=cwd or self.workdir)
        self.children.append((name, p))
        return p

    def tail(self, name, n=30):
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    def stop_all(self):
        for name, p in reversed(self.children):
            if p.poll() is None:
                # perf writes its data file on SIGINT; the rest stop on SIGTERM.
                p.send_signal(signal.SIGINT if name == "perf" else signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


# ---------------------------------------------------------------- the peers


def start_tansu(procs, tansu, name="tansu", advertised_port=None):
    """Returns (port, pid). With `advertised_port` the broker tells clients to
    reach it there (the relay's port) instead of its own listener."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    p = procs.start(
        name,
        [tansu, "broker", "--listener-url", url, "--advertised-listener-url", advertised, "--storage-engine", "memory://tansu/"],
    )
    if not wait_port(port, 60, p):
        sys.exit(f"{name} did not start:\n{procs.tail(name)}")
    return port, p.pid


HAPROXY_CFG = """global
    maxconn 1024
defaults
    mode tcp
    timeout connect 5s
    timeout client 5m
    timeout server 5m
listen kafka
    bind 127.0.0.1:{listen}
    server broker 127.0.0.1:{broker}
"""


def start_relay(procs, haproxy, workdir, listen, broker_port):
    """HAProxy as a plain TCP relay in front of `broker_port`: the byte-copy
    baseline (it parses nothing, so its cost is copies, syscalls and wake-ups)."""
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(listen=listen, broker=broker_port))
    p = procs.start("haproxy", [haproxy, "-db", "-f", str(cfg)])
    if not wait_port(listen, 30, p):
        sys.exit(f"haproxy did not start:\n{procs.tail('haproxy')}")
    return p


def create_topic(tansu, broker_port, name):
    out = subprocess.run(
        [tansu, "topic", "create", name, "--partitions", "1", "--broker", f"tcp://127.0.0.1:{broker_port}"],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"tansu topic create {name} failed: {out.stdout}{out.stderr}")


def delete_topic(tansu, broker_port, name):
    # Frees the broker's memory between phases; a failure only costs memory.
    subprocess.run(
        [tansu, "topic", "delete", name, "--broker", f"tcp://127.0.0.1:{broker_port}"],
        capture_output=True,
    )


def proxy_flags(proxy_bin):
    help_text = subprocess.run([proxy_bin, "run", "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]+", help_text))


ALLOW_ALL = REPO / "examples" / "policies" / "allow-all.yaml"
NAMESPACE = "clinical"
SERVICE_ACCOUNT = "bench-reader"  # non-exempt: the MaskingRule exempts only a group


def policy_text(payload, failure_mode):
    """examples/policies/allow-all.yaml with the audit settings of the mode."""
    text = ALLOW_ALL.read_text()
    text = re.sub(r"payload: \w+", f"payload: {payload}", text)
    return re.sub(r"failureMode: \w+", f"failureMode: {failure_mode}", text)


MASKING_RULE = """\
apiVersion: streamgate.dev/v1alpha1
kind: MaskingRule
metadata:
  name: bench-phi
spec:
  topics: ["bench-phi-*"]
  format: Json
  fields:
    - {path: "$.patient.mrn",   strategy: Hash}
    - {path: "$.patient.ssn",   strategy: Partial, keepLast: 4}
    - {path: "$.patient.email", strategy: Redact}
  hashKeySecretRef: {name: masking-key, key: hmac}
  exemptSubjects:
    - {kind: Group, name: treating-clinicians}
  applyTo: [Fetch]
"""


MODE_NEEDS = {
    "pass": [],
    "audit": ["--policy-dir", "--audit-dir"],
    "mask": ["--policy-dir", "--secret-dir"],
}


def check_mode(mode, flags):
    """Exit, measuring nothing, when the proxy lacks what the mode needs."""
    missing = [f for f in MODE_NEEDS[mode] if f not in flags]
    if missing:
        sys.exit(
            f"mode '{mode}' needs `streamgate-proxy run {' '.join(missing)}`, which this proxy build does not have "
            f"(the feature is not wired into the data path yet). Nothing was measured for '{mode}'."
        )


def mode_setup(mode, flags, workdir):
    """Extra proxy arguments and environment for a mode."""
    args, env = [], {}
    if "--policy-dir" in flags:
        # Governed build: an allow-all policy for the pod's own ServiceAccount
        # (workload identity: the clients connect without SASL).
        pdir = workdir / "policy"
        pdir.mkdir()
        payload, failure = ("Digest", "Closed") if mode == "audit" else ("None", "Open")
        (pdir / "allow-all.yaml").write_text(policy_text(payload, failure))
        if mode == "mask":
            (pdir / "masking.yaml").write_text(MASKING_RULE)
            sdir = workdir / "secrets" / "masking-key"
            sdir.mkdir(parents=True)
            (sdir / "hmac").write_bytes(os.urandom(32))
            args += ["--secret-dir", str(workdir / "secrets")]
        args += ["--policy-dir", str(pdir)]
        env.update(
            STREAMGATE_SERVICE_ACCOUNT=SERVICE_ACCOUNT,
            STREAMGATE_POD_NAMESPACE=NAMESPACE,
            STREAMGATE_POD_NAME="bench-0",
        )
    if "--audit-dir" in flags:
        # The audit spool always goes to the run's scratch dir; shippers off.
        args += ["--audit-dir", str(workdir / "audit"), "--audit-otlp", "false", "--audit-events", "false"]
    if "--audit-payload" in flags:
        # The defaults until the policy loads; the policy's audit block then rules.
        payload, failure = ("Digest", "Closed") if mode == "audit" else ("None", "Open")
        args += ["--audit-payload", payload, "--audit-failure-mode", failure]
    return args, env


def start_proxy(procs, proxy_bin, broker_port, extra_args, extra_env):
    listen, admin = proxy_port(), free_port()
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"), **extra_env)
    cmd = [
        proxy_bin, "run",
        "--listen", f"127.0.0.1:{listen}",
        "--upstream", f"127.0.0.1:{broker_port}",
        "--admin", f"127.0.0.1:{admin}",
        *extra_args,
    ]  # fmt: skip
    log("proxy: " + " ".join(cmd))
    p = procs.start("proxy", cmd, env=env)
    deadline = time.time() + 30
    while http_status(admin, "/readyz") != 200:
        if p.poll() is not None or time.time() > deadline:
            sys.exit(f"the proxy did not become ready:\n{procs.tail('proxy')}")
        time.sleep(0.1)
    return p, listen


# ---------------------------------------------------------------- the load

# "% N messages produced (B bytes), D delivered (…) in Tms: …" (producer) and
# "% N messages (B bytes) consumed in Tms: …" (consumer), printed last.
PRODUCED = re.compile(r"% \d+ messages produced \((\d+) bytes\), (\d+) delivered .*? in (\d+)ms")
CONSUMED = re.compile(r"% (\d+) messages \((\d+) bytes\) consumed in (\d+)ms")


def rdkafka_perf(perf, args, expect_msgs, timeout):
    """Run rdkafka_performance; return (msgs, bytes, seconds) from its summary
    line (its own clock: from first send/receive, not process start)."""
    t0 = time.monotonic()
    out = subprocess.run([perf, *args], capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    text = out.stdout + out.stderr
    if args[0] == "-P":
        found = [(m, b, t) for b, m, t in PRODUCED.findall(text)]
    else:
        found = CONSUMED.findall(text)
    if out.returncode != 0 or not found:
        sys.exit(f"rdkafka_performance {' '.join(args)} failed (rc {out.returncode}):\n{text[-3000:]}")
    msgs, nbytes, ms = (int(x) for x in found[-1])
    if msgs < expect_msgs:
        sys.exit(f"rdkafka_performance moved {msgs} of {expect_msgs} messages:\n{text[-3000:]}")
    return msgs, nbytes, max(ms, 1) / 1000.0, wall


def produce_perf(perf, addr, topic, n, size):
    return rdkafka_perf(
        perf,
        ["-P", "-t", topic, "-p", "0", "-b", addr, "-s", str(size), "-c", str(n), "-a", "1", "-X", "linger.ms=5"],
        n,
        timeout=600,
    )


def consume_perf(perf, addr, topic, n):
    return rdkafka_perf(perf, ["-C", "-t", topic, "-p", "0", "-b", addr, "-o", "beginning", "-c", str(n)], n, timeout=600)


JSON_PRODUCER = r"""
import json, random, string, sys, time
from confluent_kafka import Producer
addr, topic, n, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(7)
p = Producer({"bootstrap.servers": addr, "acks": "1", "linger.ms": 5, "queue.buffering.max.messages": 1000000})
def record(i):
    doc = {
        "eventId": f"evt-{i:08d}", "eventType": "lab-result", "timestamp": "2026-11-27T06:00:00Z",
        "patient": {
            "mrn": f"MRN-{rnd.randrange(10**8):08d}",
            "ssn": f"{rnd.randrange(100, 899):03d}-{rnd.randrange(10, 99):02d}-{rnd.randrange(1000, 9999):04d}",
            "email": f"patient{i}@example.org",
            "state": "TX",
        },
        "observations": [],
    }
    body = json.dumps(doc, separators=(",", ":"))
    k = 0
    while len(body) < size - 25:
        doc["observations"].append({"code": f"{rnd.randrange(1000, 99999)}-{k % 10}", "value": round(rnd.random() * 200, 2), "unit": "mg/dL"})
        body = json.dumps(doc, separators=(",", ":"))
        k += 1
    return body.encode()
t0 = time.monotonic()
total = 0
for i in range(n):
    v = record(i)
    total += len(v)
    while True:
        try:
            p.produce(topic, v, partition=0)
            break
        except BufferError:
            p.poll(0.05)
    p.poll(0)
left = p.flush(120)
if left:
    sys.exit(f"{left} records not delivered")
print(json.dumps({"records": n, "bytes": total, "seconds": time.monotonic() - t0}))
"""

MASK_CHECK = r"""
import json, sys
from confluent_kafka import Consumer, TopicPartition
addr, topic = sys.argv[1], sys.argv[2]
c = Consumer({"bootstrap.servers": addr, "group.id": "bench-check", "enable.auto.commit": False})
c.assign([TopicPartition(topic, 0, 0)])
seen = []
while len(seen) < 20:
    m = c.poll(10)
    if m is None:
        break
    if m.error():
        sys.exit(str(m.error()))
    seen.append(m.value())
c.close()
print(json.dumps([json.loads(v)["patient"] for v in seen]))
"""


def python_json(py, script, *args):
    out = subprocess.run([py, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        sys.exit(f"python helper failed:\n{out.stdout}{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the run


def median(xs):
    return statistics.median(xs) if xs else None


def phase(kind, side, fn, middle_pid):
    """Run one measured phase; for a side with a process in the middle (the
    sidecar or the relay), that process's CPU ticks over the phase."""
    load = loadavg()
    before = proc_cpu_ticks(middle_pid) if middle_pid else None
    msgs, nbytes, secs, wall = fn()
    cpu_ms = (proc_cpu_ticks(middle_pid) - before) * 1000.0 / CLK_TCK if middle_pid else None
    r = {
        "kind": kind,
        "side": side,
        "msgs": msgs,
        "bytes": nbytes,
        "seconds": round(secs, 3),
        "wall_seconds": round(wall, 3),
        "msgs_per_s": round(msgs / secs),
        "mb_per_s": round(nbytes / MB / secs, 2),
        "load1": load,
    }
    if cpu_ms is not None:
        r["cpu_ms"] = round(cpu_ms, 1)
        r["cpu_ms_per_mb"] = round(cpu_ms / (nbytes / MB), 3)
    log(
        f"{kind:8} {side:6} {msgs} msgs {r['msgs_per_s']:>8} msgs/s {r['mb_per_s']:>7} MB/s"
        + (f"  {side} {cpu_ms:.0f} ms CPU = {r['cpu_ms_per_mb']} ms/MB" if cpu_ms is not None else "")
        + f"  (load {load})"
    )
    return r


def rounds_order(sides, rnd):
    """Round r runs the sides rotated by r, so every side is first, middle and
    last equally often and the pairs compared see the same background load."""
    k = rnd % len(sides)
    return sides[k:] + sides[:k]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["pass", "audit", "mask"], default="pass")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds (>= 3; ratios are reported over >= 7)")
    ap.add_argument("--records", type=int, default=300_000, help="records per phase (>= 200000)")
    ap.add_argument("--size", type=int, default=1024, help="record size in bytes")
    ap.add_argument("--proxy-bin", required=True)
    ap.add_argument("--no-relay", action="store_true", help="leave out the HAProxy byte-relay baseline")
    ap.add_argument("--results", default=str(HERE / "results.jsonl"))
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (logs, audit spool)")
    ap.add_argument("--perf", metavar="FILE", help="record a `perf record -g` profile of the sidecar into FILE")
    a = ap.parse_args()
    if a.rounds < 3 or a.records < 200_000:
        sys.exit("the benchmark needs --rounds >= 3 and --records >= 200000")

    tansu = os.environ["STREAMGATE_TANSU"]
    perf = os.environ["STREAMGATE_RDKAFKA_PERF"]
    py = os.environ["STREAMGATE_PYTHON"]
    # The relay baseline moves the same produce/consume load; mask mode reads
    # one pre-filled topic and has no relay counterpart.
    relay = not a.no_relay and a.mode != "mask"
    haproxy = shutil.which("haproxy") if relay else None
    if relay and not haproxy:
        sys.exit("haproxy is not installed (apt-get install haproxy, or .ci/install-peers.sh); "
                 "pass --no-relay to measure without the byte-relay baseline")
    flags = proxy_flags(a.proxy_bin)
    check_mode(a.mode, flags)
    workdir = Path(tempfile.mkdtemp(prefix=f"streamgate-bench-{a.mode}-"))
    extra_args, extra_env = mode_setup(a.mode, flags, workdir)
    procs = Procs(workdir)
    relay_proc = None
    try:
        broker, broker_pid = start_tansu(procs, tansu)
        direct_addr = f"127.0.0.1:{broker}"
        proxy, listen = start_proxy(procs, a.proxy_bin, broker, extra_args, extra_env)
        proxy_addr = f"127.0.0.1:{listen}"
        # The relay has its own broker (same binary, same memory storage): a
        # broker advertises one address, and the relay's must advertise the
        # relay's, or clients would connect past it after bootstrap.
        if relay:
            relay_listen = free_port()
            relay_broker, _ = start_tansu(procs, tansu, name="tansu-relay", advertised_port=relay_listen)
            relay_proc = start_relay(procs, haproxy, workdir, relay_listen, relay_broker)
            relay_addr = f"127.0.0.1:{relay_listen}"
        time.sleep(1.0)  # let the sidecar settle before the idle reading
        rss_idle = proc_status_kib(proxy.pid, "VmRSS")
        relay_rss_idle = proc_status_kib(relay_proc.pid, "VmRSS") if relay_proc else None
        log(f"tansu on {direct_addr} (memory storage), sidecar pid {proxy.pid} on {proxy_addr}, idle RSS {rss_idle} KiB"
            + (f"; haproxy on {relay_addr} -> tansu {relay_broker}, idle RSS {relay_rss_idle} KiB" if relay_proc else ""))

        if a.perf:
            # The sidecar idles during direct phases, so the samples are its proxied work.
            procs.start("perf", ["perf", "record", "-F", "499", "-g", "-o", str(Path(a.perf).resolve()), "-p", str(proxy.pid)])
            time.sleep(1.0)
        phases = []
        sides = {"direct": (direct_addr, broker, None), "proxy": (proxy_addr, broker, proxy.pid)}
        if relay_proc:
            sides["relay"] = (relay_addr, relay_broker, relay_proc.pid)
        if a.mode == "mask":
            topic = "bench-phi-0"
            create_topic(tansu, broker, topic)
            made = python_json(py, JSON_PRODUCER, direct_addr, topic, a.records, a.size)
            log(f"produced {made['records']} JSON records ({made['bytes'] / made['records']:.0f} B avg) directly")
            clear = python_json(py, MASK_CHECK, direct_addr, topic)
            masked = python_json(py, MASK_CHECK, proxy_addr, topic)
            leaks = [c[f] for c, m in zip(clear, masked) for f in ("mrn", "ssn", "email") if c[f] == m.get(f)]
            if not masked or leaks:
                sys.exit(f"masking is not in effect through the sidecar (clear values seen: {leaks[:5]}); not measuring")
            log(f"masking in effect: {clear[0]['ssn']} -> {masked[0].get('ssn')}, {clear[0]['email']} -> {masked[0].get('email')}")
            for rnd in range(a.rounds):
                for side in rounds_order(list(sides), rnd):
                    addr, _, pid = sides[side]
                    phases.append(phase("consume", side, lambda addr=addr: consume_perf(perf, addr, topic, a.records), pid))
        else:
            for rnd in range(a.rounds):
                for side in rounds_order(list(sides), rnd):
                    addr, bport, pid = sides[side]
                    topic = f"bench-{rnd}-{side}"
                    create_topic(tansu, bport, topic)
                    phases.append(phase("produce", side, lambda: produce_perf(perf, addr, topic, a.records, a.size), pid))
                    phases.append(phase("consume", side, lambda: consume_perf(perf, addr, topic, a.records), pid))
                    delete_topic(tansu, bport, topic)
        rss_peak = proc_status_kib(proxy.pid, "VmHWM")
        relay_rss_peak = proc_status_kib(relay_proc.pid, "VmHWM") if relay_proc else None
        broker_peak = proc_status_kib(broker_pid, "VmHWM")
        if proxy.poll() is not None:
            sys.exit(f"the proxy exited during the run:\n{procs.tail('proxy')}")
    finally:
        procs.stop_all()

    summary = summarize(a, phases, rss_idle, rss_peak, extra_args)
    summary["broker_rss_peak_kib"] = broker_peak
    if relay_proc:
        summary["relay"] = {"rss_idle_kib": relay_rss_idle, "rss_peak_kib": relay_rss_peak,
                            "version": subprocess.run([haproxy, "-v"], capture_output=True, text=True).stdout.split("\n")[0]}
    print_table(summary)
    with open(a.results, "a") as f:
        f.write(json.dumps(summary, separators=(",", ":")) + "\n")
    log(f"appended to {a.results}")
    if a.keep:
        log(f"scratch dir kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


MIDDLES = ("proxy", "relay")


def summarize(a, phases, rss_idle, rss_peak, extra_args):
    med = {}
    for kind in ("produce", "consume"):
        for side in ("direct", *MIDDLES):
            ps = [p for p in phases if p["kind"] == kind and p["side"] == side]
            if not ps:
                continue
            m = {
                "msgs_per_s": median([p["msgs_per_s"] for p in ps]),
                "mb_per_s": median([p["mb_per_s"] for p in ps]),
                "load1": median([p["load1"] for p in ps]),
            }
            if side != "direct":
                m["cpu_ms_per_mb"] = median([p["cpu_ms_per_mb"] for p in ps])
            med[f"{kind}_{side}"] = m
    ratios = {}
    for kind in ("produce", "consume"):
        d = med.get(f"{kind}_direct")
        ds = [x for x in phases if x["kind"] == kind and x["side"] == "direct"]
        for side in MIDDLES:
            p = med.get(f"{kind}_{side}")
            if not (d and p):
                continue
            # Ratio of medians, and the median of per-round ratios (each round
            # measures every side back to back under the same background load).
            xs = [x for x in phases if x["kind"] == kind and x["side"] == side]
            rounds = [px["msgs_per_s"] / dx["msgs_per_s"] for dx, px in zip(ds, xs)]
            ratios[f"{kind}_{side}"] = {
                "of_medians": round(p["msgs_per_s"] / d["msgs_per_s"], 3),
                "median_per_round": round(median(rounds), 3),
                "per_round": [round(r, 3) for r in rounds],
            }
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": a.mode,
        "commit": git,
        "rounds": a.rounds,
        "records": a.records,
        "size": a.size,
        "proxy_args": extra_args,
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "broker": "tansu, memory storage"},
        "medians": med,
        "ratios": ratios,
        "proxy_rss_idle_kib": rss_idle,
        "proxy_rss_peak_kib": rss_peak,
        "phases": phases,
    }


def print_table(s):
    print(f"\nstreamgate bench — mode {s['mode']}, {s['rounds']} rounds × {s['records']} records × {s['size']} B, "
          f"commit {s['commit']}, {s['machine']['cpus']} cores, tansu memory storage")
    print(f"{'phase':9}{'via':7}{'direct msgs/s':>15}{'via msgs/s':>12}{'direct MB/s':>13}{'via MB/s':>10}"
          f"{'ratio':>8}{'per-round':>11}{'CPU ms/MB':>11}{'load1':>7}")
    for kind in ("produce", "consume"):
        d = s["medians"].get(f"{kind}_direct")
        for side in MIDDLES:
            p = s["medians"].get(f"{kind}_{side}")
            if not (d and p):
                continue
            r = s["ratios"][f"{kind}_{side}"]
            print(f"{kind:9}{side:7}{d['msgs_per_s']:>15.0f}{p['msgs_per_s']:>12.0f}{d['mb_per_s']:>13.1f}{p['mb_per_s']:>10.1f}"
                  f"{r['of_medians']:>8.3f}{r['median_per_round']:>11.3f}{p['cpu_ms_per_mb']:>11.2f}"
                  f"{max(d['load1'], p['load1']):>7.1f}")
    print(f"sidecar RSS: idle {s['proxy_rss_idle_kib'] / 1024:.1f} MiB, peak (VmHWM) {s['proxy_rss_peak_kib'] / 1024:.1f} MiB")
    if s.get("relay"):
        r = s["relay"]
        print(f"relay ({r['version']}) RSS: idle {r['rss_idle_kib'] / 1024:.1f} MiB, peak {r['rss_peak_kib'] / 1024:.1f} MiB")
    if s.get("broker_rss_peak_kib"):
        print(f"(tansu broker peak RSS {s['broker_rss_peak_kib'] / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
