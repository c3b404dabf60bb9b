#!/usr/bin/env bash
# streamgate on a real cluster (kind): build and load the images, install the
# chart, run a broker and an injected client, and check the whole path.
# Needs: docker (with BuildKit), kind, kubectl, helm (v3.14+ or v4), python3. Run from anywhere:
#   e2e/kind/run.sh            # KEEP_CLUSTER=1 to leave the cluster up afterwards
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=streamgate
NS=streamgate-system
TAG=e2e
started=$(date +%s)
step() { printf '\n==> [%ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }
fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl helm python3; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done

cleanup() {
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

step "creating the kind cluster from kind-config.yaml"
kind get clusters 2>/dev/null | grep -qx "$CLUSTER" || kind create cluster --config kind-config.yaml --wait 120s

step "building images (operator, proxy, tansu, client)"
export DOCKER_BUILDKIT=1
docker build -f operator/Dockerfile -t streamgate/streamgate-operator:$TAG .
docker build -f proxy/Dockerfile -t streamgate/streamgate-proxy:$TAG .
docker build -f e2e/kind/tansu.Dockerfile -t streamgate/tansu:0.6.0 e2e/kind
docker build -f e2e/kind/client.Dockerfile -t streamgate/e2e-client:dev .
for img in streamgate/streamgate-operator:$TAG streamgate/streamgate-proxy:$TAG streamgate/tansu:0.6.0 streamgate/e2e-client:dev; do
  kind load docker-image --name "$CLUSTER" "$img"
done

step "installing the chart (CRDs from charts/streamgate/crds)"
helm upgrade --install streamgate charts/streamgate -n "$NS" --create-namespace --wait --timeout 5m \
  --set operator.image.repository=streamgate/streamgate-operator --set operator.image.tag=$TAG \
  --set operator.image.pullPolicy=Never \
  --set proxy.image.repository=streamgate/streamgate-proxy --set proxy.image.tag=$TAG \
  --set proxy.image.pullPolicy=Never
# The operator patches caBundle once it leads; wait until both configurations carry one.
for kind in mutatingwebhookconfiguration validatingwebhookconfiguration; do
  for _ in $(seq 60); do
    [ -n "$(kubectl get $kind streamgate -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ] && break
    sleep 2
  done
  [ -n "$(kubectl get $kind streamgate -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ] || fail "$kind has no caBundle"
done

step "deploying the broker"
kubectl apply -f e2e/kind/manifests/kafka.yaml
kubectl -n kafka rollout status deploy/tansu --timeout=120s
for topic in claims patient-events secret-topic; do
  kubectl -n kafka exec deploy/tansu -- tansu topic create "$topic" --partitions 1 --broker tcp://localhost:9092
done

step "deploying the governed namespace and the injected client"
kubectl apply -f e2e/kind/manifests/clinical.yaml
kubectl -n clinical rollout status deploy/billing --timeout=180s
POD=$(kubectl -n clinical get pod -l app=billing -o jsonpath='{.items[0].metadata.name}')

step "the pod has the sidecar (native: first init container, restartPolicy Always)"
[ "$(kubectl -n clinical get pod "$POD" -o jsonpath='{.spec.initContainers[0].name}')" = streamgate-proxy ] || fail "no sidecar in $POD"
[ "$(kubectl -n clinical get pod "$POD" -o jsonpath='{.spec.initContainers[0].restartPolicy}')" = Always ] || fail "sidecar is not native"
[ "$(kubectl -n clinical get pod "$POD" -o jsonpath='{.metadata.annotations.streamgate\.dev/injected}')" = true ] || fail "no status annotation"
kubectl -n clinical get pod "$POD" -o jsonpath='{.spec.containers[0].env}' | grep -q '"KAFKA_BOOTSTRAP_SERVERS","value":"127.0.0.1:9092"' \
  || fail "app container has no KAFKA_BOOTSTRAP_SERVERS"
kubectl -n clinical get rolebinding streamgate-sidecar >/dev/null || fail "no sidecar RoleBinding in clinical"

kc() { kubectl -n clinical exec "$POD" -c client -- "$@"; }

step "records flow through the sidecar"
kc sh -c 'for i in $(seq 10); do echo "{\"claim\": $i}"; done > /tmp/claims.jsonl'
kc python /usr/local/bin/kclient.py confluent produce --bootstrap 127.0.0.1:9092 --topic claims --input /tmp/claims.jsonl | grep -q 'DONE 10' \
  || fail "produce to claims did not complete"
got=$(kc python /usr/local/bin/kclient.py confluent consume --bootstrap 127.0.0.1:9092 --topic claims --expect 10 --timeout 60 | grep -c '"offset"')
[ "$got" = 10 ] || fail "consumed $got of 10 records from claims"

step "a topic the policy does not allow is refused"
kc sh -c 'echo "{\"x\": 1}" > /tmp/one.jsonl'
if kc python /usr/local/bin/kclient.py confluent produce --bootstrap 127.0.0.1:9092 --topic secret-topic --input /tmp/one.jsonl 2>&1 | grep -q 'DONE 1'; then
  fail "produce to secret-topic was allowed"
fi

step "masked fields arrive masked"
kc sh -c 'echo "{\"patient\": {\"ssn\": \"123-45-6789\", \"name\": \"Jane Roe\", \"dateOfBirth\": \"1980-02-29\"}}" > /tmp/phi.jsonl'
kc python /usr/local/bin/kclient.py confluent produce --bootstrap 127.0.0.1:9092 --topic patient-events --input /tmp/phi.jsonl | grep -q 'DONE 1' \
  || fail "produce to patient-events did not complete"
value_hex=$(kc python /usr/local/bin/kclient.py confluent consume --bootstrap 127.0.0.1:9092 --topic patient-events --expect 1 --timeout 60 \
  | python3 -c 'import json,sys; print([json.loads(l)["value"] for l in sys.stdin if "offset" in l][0])')
value=$(python3 -c "import sys; print(bytes.fromhex(sys.argv[1]).decode())" "$value_hex")
echo "consumer saw: $value"
for clear in 123-45-6789 "Jane Roe" 1980-02-29; do
  case "$value" in *"$clear"*) fail "cleartext $clear reached the consumer";; esac
done
case "$value" in *6789*) ;; *) fail "Partial masking should keep the last 4 digits";; esac

step "approvals: self-approval refused, an approver approves, decisions are final"
if kubectl -n clinical patch aa write-patient-records-alice-e2e --type merge -p '{"spec":{"decision":"Approved"}}' \
    --as alice@example.com --as-group compliance-officers 2>/tmp/self.err; then
  fail "alice approved her own request"
fi
grep -q "cannot decide their own request" /tmp/self.err || fail "self-approval refused without the reason: $(cat /tmp/self.err)"
kubectl -n clinical patch aa write-patient-records-alice-e2e --type merge -p '{"spec":{"decision":"Approved"}}'
[ "$(kubectl -n clinical get aa write-patient-records-alice-e2e -o jsonpath='{.spec.decidedBy}')" = kubernetes-admin ] \
  || fail "decidedBy was not stamped from the requesting user"
if kubectl -n clinical patch aa write-patient-records-alice-e2e --type merge -p '{"spec":{"decision":"Denied"}}' 2>/dev/null; then
  fail "a decided AccessApproval changed"
fi

step "kubectl get sp,mr,aa shows Ready"
kubectl -n clinical wait --for=condition=Ready --timeout=60s sp/phi-access mr/patient-phi aa/write-patient-records-alice-e2e
kubectl -n clinical get sp,mr,aa
[ "$(kubectl -n clinical get sp phi-access -o jsonpath='{.status.workloads}')" = 1 ] || fail "StreamPolicy does not count the injected pod"
[ "$(kubectl -n clinical get aa write-patient-records-alice-e2e -o jsonpath='{.status.phase}')" = Approved ] || fail "AccessApproval not Approved"

step "all kind e2e checks passed in $(( $(date +%s) - started ))s"
