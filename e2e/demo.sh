#!/usr/bin/env bash
# The local demo: a real Kafka-compatible broker (tansu), a real OIDC provider,
# and the streamgate sidecar governed by the sample policies in examples/.
#   1. synthetic patient events and claims are written straight to the broker;
#   2. billing-app (group billing-analysts) reads them through the sidecar: masked;
#   3. intake-app (group clinicians, exempt from masking here) reads them in clear;
#   4. outsider (no rule) is refused with TOPIC_AUTHORIZATION_FAILED;
#   5. the audit trail is verified, exported, and proven against the broker;
#   6. who saw one patient's data: the accounting of disclosures for one MRN.
# Everything runs on 127.0.0.1 and stops when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

.ci/install-peers.sh
# shellcheck disable=SC1091
source "${STREAMGATE_CACHE:-$HOME/.cache/streamgate}/peers.env"
say "building the sidecar (release)"
cargo build --release --quiet -p streamgate-proxy
proxy_bin="${CARGO_TARGET_DIR:-$root/target}/release/streamgate-proxy"

work=$(mktemp -d -t streamgate-demo.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
free_port() { "$STREAMGATE_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; return 1; }

say "starting the broker (tansu, in memory) and the OIDC provider"
broker_port=$(free_port)
(cd "$work" && exec "$STREAMGATE_TANSU" broker --listener-url "tcp://127.0.0.1:$broker_port" \
   --advertised-listener-url "tcp://127.0.0.1:$broker_port" --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1) &
pids+=($!)
idp_port=$(free_port)
PORT=$idp_port AUDIENCE=urn:kafka:proxy TOKEN_TTL=300 "$STREAMGATE_NODE" "$STREAMGATE_IDP" >"$work/idp.log" 2>&1 &
pids+=($!)
wait_port "$broker_port"; wait_port "$idp_port"
for t in patient-events claims; do
  "$STREAMGATE_TANSU" topic create "$t" --partitions 3 --broker "tcp://127.0.0.1:$broker_port" >/dev/null
done

say "policies: examples/maskingrule.yaml + a StreamPolicy for the local IdP (e2e/demo/streampolicy.yaml)"
mkdir -p "$work/policy" "$work/secrets/masking-key" "$work/audit"
ISSUER="http://127.0.0.1:$idp_port" AUDIENCE=urn:kafka:proxy \
  "$STREAMGATE_PYTHON" -c 'import os,sys; print(os.path.expandvars(sys.stdin.read()))' \
  <e2e/demo/streampolicy.yaml >"$work/policy/streampolicy.yaml"
# The local IdP has no treating-clinicians group: its clinicians stand in.
sed 's/name: treating-clinicians/name: clinicians/' examples/maskingrule.yaml >"$work/policy/maskingrule.yaml"
head -c 32 /dev/urandom >"$work/secrets/masking-key/hmac"   # the HMAC key, as a mounted Secret
head -c 32 /dev/urandom >"$work/secrets/masking-key/patient-hmac"   # the patient key (patientKeySecretRef)
cat "$work/policy/streampolicy.yaml" | sed -n '/rules:/,/blockedOperations/p' | head -20

say "starting the sidecar on 127.0.0.1"
listen_port=$(free_port); admin_port=$(free_port)
STREAMGATE_POD_NAMESPACE=clinical STREAMGATE_POD_NAME=demo-pod RUST_LOG=warn "$proxy_bin" run \
  --listen "127.0.0.1:$listen_port" --upstream "127.0.0.1:$broker_port" --admin "127.0.0.1:$admin_port" \
  --policy-dir "$work/policy" --audit-dir "$work/audit" --secret-dir "$work/secrets" \
  --allow-insecure-issuers >"$work/proxy.log" 2>&1 &   # the local IdP serves plain http
pids+=($!)
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null || { cat "$work/proxy.log"; exit 1; }

say "1. writing the synthetic PHI straight to the broker (zstd)"
"$STREAMGATE_KCAT" -P -b "127.0.0.1:$broker_port" -t patient-events -z zstd -l examples/data/patient-events.jsonl
"$STREAMGATE_KCAT" -P -b "127.0.0.1:$broker_port" -t claims -z zstd -l examples/data/claims.jsonl
echo "patient-events: $(wc -l <examples/data/patient-events.jsonl) records, claims: $(wc -l <examples/data/claims.jsonl) records"

as_client() { # client-id, then kcat args
  local id=$1; shift
  "$STREAMGATE_KCAT" -b "127.0.0.1:$listen_port" -X security.protocol=SASL_PLAINTEXT -X sasl.mechanism=OAUTHBEARER \
    -X sasl.oauthbearer.method=oidc -X "sasl.oauthbearer.client.id=$id" -X "sasl.oauthbearer.client.secret=$id-secret" \
    -X "sasl.oauthbearer.token.endpoint.url=http://127.0.0.1:$idp_port/token" -X sasl.oauthbearer.scope=kafka "$@"
}

say "2. billing-app (billing-analysts) reads patient-events through the sidecar: masked"
as_client billing-app -C -t patient-events -p 0 -o beginning -c 1 -e -q -f '%o: %s\n' >"$work/masked.txt"
"$STREAMGATE_PYTHON" -c 'import json,sys; o,_,v=sys.stdin.read().partition(": "); print("offset",o); print(json.dumps(json.loads(v),indent=2)[:1500])' <"$work/masked.txt"
as_client billing-app -C -t patient-events -o beginning -e -q >"$work/masked-all.txt"
as_client billing-app -C -t claims -o beginning -e -q >>"$work/masked-all.txt"
"$STREAMGATE_PYTHON" - "$work/masked-all.txt" examples/data/phi-values.json <<'PY'
import json, sys
text = open(sys.argv[1]).read()
def strings(v):
    if isinstance(v, str): yield v
    elif isinstance(v, list):
        for x in v: yield from strings(x)
    elif isinstance(v, dict):
        for x in v.values(): yield from strings(x)
phi = set(strings(json.load(open(sys.argv[2]))))
leaked = [p for p in phi if p in text]
print(f"{len(text.splitlines())} records received, {len(phi)} planted PHI strings checked, {len(leaked)} leaked")
sys.exit(1 if leaked else 0)
PY

say "3. intake-app (clinicians, exempt in this demo) reads the same record in clear"
as_client intake-app -C -t patient-events -p 0 -o beginning -c 1 -e -q | cut -c1-400

say "4. outsider (no rule) is refused"
if as_client outsider -C -t claims -p 0 -o beginning -c 1 -e -q 2>"$work/refused.txt"; then
  echo "outsider was NOT refused" >&2; exit 1
fi
grep -i 'authorization failed' "$work/refused.txt" | head -1
grep -q -i 'authorization failed' "$work/refused.txt" || { echo "outsider was refused without TOPIC_AUTHORIZATION_FAILED:" >&2; cat "$work/refused.txt" >&2; exit 1; }

say "5. the audit trail: verify the hash chain, export what an auditor asks for"
"$proxy_bin" audit verify "$work/audit"
"$proxy_bin" audit export "$work/audit" --format csv >"$work/audit.csv"
echo "CSV (one row per topic-partition) in $work/audit.csv; the masked fetch:"
grep -m1 ',Fetch,.*,Masked,' "$work/audit.csv" | cut -c1-400
echo "what billing-app read, proven against the broker's log (each range fetched again and digested):"
"$proxy_bin" audit match "$work/audit" --subject billing-app --bootstrap "127.0.0.1:$broker_port" | cut -c1-160

say "6. who saw this patient's data? the accounting of disclosures for one MRN"
mrn=$("$STREAMGATE_PYTHON" -c 'import json,sys; print(json.loads(sys.stdin.readline())["patientMrn"])' <examples/data/claims.jsonl)
echo "patient $mrn — the trail holds only keyed pseudonyms; the privacy officer holds the patient key:"
"$proxy_bin" audit disclosures "$work/audit" --patient "$mrn" \
  --key "$work/secrets/masking-key/patient-hmac" --format csv >"$work/disclosures.csv"
cut -d, -f1,4,10-17 "$work/disclosures.csv" | column -s, -t | head -12
echo "($(($(wc -l <"$work/disclosures.csv") - 1)) disclosures; full CSV in $work/disclosures.csv)"
grep -q "$mrn" "$work"/audit/*.jsonl && { echo "the MRN itself is in the spool" >&2; exit 1; }

say "done — everything above ran against real peers; files in $work"
