"""Lint, render and validate the streamgate Helm chart offline.

Run by operator/tests/chart.rs with the project's venv python (helm-python-sdk
for lint/render, kubernetes-validate for the rendered manifests). Exits
non-zero with a message on the first problem.

usage: chart_check.py CHART_DIR   (webhook paths come from env
STREAMGATE_PATH_INJECT / _STAMP / _VALIDATE, set by the Rust test from the
server's constants, so the chart and the server cannot drift apart)
"""
import os
import sys

import helm_python as helm
import kubernetes_validate
import yaml

KUBE = "1.33.0"
RELEASE, NAMESPACE = "streamgate", "streamgate-system"
CERT_MANAGER_KINDS = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}


def fail(msg):
    print(f"chart check FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def lint(chart_dir, values):
    report = helm.lint(chart_dir, values, strict=True, namespace=NAMESPACE, kube_version="v" + KUBE)
    problems = [m for m in report.get("messages") or [] if m.get("severity", 0) >= 2] + [
        {"error": e} for e in report.get("errors") or []
    ]
    check(not problems, f"helm lint (strict) with {values}: {problems}")


def render(chart_dir, values):
    chart = helm.Chart.load(chart_dir)
    out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((path, doc))
    return docs


def validate(docs):
    for path, doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CERT_MANAGER_KINDS:
            check(doc["spec"], f"{path}: empty {key}")
            continue
        try:
            kubernetes_validate.validate(doc, KUBE, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{path}: {doc.get('kind')} {doc['metadata'].get('name')}: {e.message} at {list(e.path)}")


def by_kind(docs, kind, name=None):
    found = [d for _, d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    check(found, f"no {kind} {name or ''} rendered")
    return found


def semantics(docs, mode, values=None):
    dep = by_kind(docs, "Deployment")[0]
    check(dep["spec"]["replicas"] == 2, "operator Deployment must run 2 replicas")
    pod = dep["spec"]["template"]["spec"]
    check("podAntiAffinity" in pod.get("affinity", {}), "operator pods need anti-affinity")
    check(pod["securityContext"]["runAsNonRoot"] is True, "operator must run as non-root")
    c = pod["containers"][0]
    check(c["securityContext"]["readOnlyRootFilesystem"] is True, "read-only root FS")
    check(c["securityContext"]["capabilities"]["drop"] == ["ALL"], "drop all capabilities")
    env = {e["name"]: e for e in c["env"]}
    check(env["STREAMGATE_CERT_MODE"]["value"] == ("cert-manager" if mode == "certManager" else "self-managed"), "cert mode env")
    pdb = by_kind(docs, "PodDisruptionBudget")[0]
    check(pdb["spec"]["minAvailable"] == 1, "PDB keeps one webhook replica")

    paths = {
        os.environ.get("STREAMGATE_PATH_INJECT", "/inject-pod"),
        os.environ.get("STREAMGATE_PATH_STAMP", "/mutate-accessapproval"),
        os.environ.get("STREAMGATE_PATH_VALIDATE", "/validate-accessapproval"),
        os.environ.get("STREAMGATE_PATH_GUARD", "/validate-pod"),
    }
    svc = by_kind(docs, "Service")[0]
    seen_paths = set()
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        cfg = by_kind(docs, kind)[0]
        injected_ca = "cert-manager.io/inject-ca-from" in (cfg["metadata"].get("annotations") or {})
        check(injected_ca == (mode == "certManager"), f"{kind}: cert-manager CA injection only in certManager mode")
        for hook in cfg["webhooks"]:
            name = hook["name"]
            check(hook["failurePolicy"] == "Fail", f"{name}: failurePolicy Fail by default")
            check(hook["sideEffects"] in ("NoneOnDryRun", "None"), f"{name}: sideEffects None/NoneOnDryRun")
            check(1 <= hook["timeoutSeconds"] <= 30, f"{name}: timeoutSeconds")
            excluded = hook["namespaceSelector"]["matchExpressions"][0]
            check(excluded["operator"] == "NotIn" and {"kube-system", NAMESPACE} <= set(excluded["values"]),
                  f"{name}: namespaceSelector must exclude kube-system and {NAMESPACE}")
            ref = hook["clientConfig"]["service"]
            check(ref["name"] == svc["metadata"]["name"] and ref["namespace"] == NAMESPACE, f"{name}: service ref")
            seen_paths.add(ref["path"])
    check(seen_paths == paths, f"webhook paths {sorted(seen_paths)} != server routes {sorted(paths)}")

    sidecar = by_kind(docs, "ClusterRole", "streamgate-sidecar")[0]
    grants = {(g, r, v) for rule in sidecar["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    allowed = {("streamgate.dev", r, v) for r in ("streampolicies", "maskingrules", "accessapprovals") for v in ("get", "list", "watch")}
    allowed |= {("streamgate.dev", "accessapprovals", "create")}
    allowed |= {(g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")}
    check(grants <= allowed, f"streamgate-sidecar grants more than it should: {sorted(grants - allowed)}")
    for _, d in docs:
        if d["kind"] in ("ClusterRole", "Role"):
            for rule in d["rules"]:
                check("*" not in rule["verbs"] and "*" not in rule["resources"], f"{d['metadata']['name']}: no wildcards")
                if "secrets" in rule["resources"]:
                    check(d["kind"] == "Role", "secrets only through a namespaced Role")
    # Sidecar sessions: TokenReview, and tokens/accounts of streamgate-sidecar only.
    operator = by_kind(docs, "ClusterRole", f"{RELEASE}-operator")[0]
    for rule in operator["rules"]:
        if "serviceaccounts/token" in rule["resources"] or (
            "serviceaccounts" in rule["resources"] and rule["verbs"] != ["create"]
        ):
            check(rule.get("resourceNames") == ["streamgate-sidecar"],
                  f"operator: {rule['resources']} only for streamgate-sidecar, got {rule}")
    check(any("tokenreviews" in r["resources"] and r["verbs"] == ["create"] for r in operator["rules"]),
          "operator: create tokenreviews (sidecar sessions)")
    credentials = (values or {}).get("sidecarCredentials") or {}
    role = by_kind(docs, "Role", f"{RELEASE}-operator")[0]
    readable = {n for r in role["rules"] if r["resources"] == ["secrets"] and r["verbs"] == ["get"]
                for n in r.get("resourceNames", [])}
    wanted = set(credentials.values()) | ({(values or {}).get("certs", {}).get("secretName", "streamgate-webhook-tls")}
                                          if mode == "selfManaged" else set())
    check(readable <= wanted | {"streamgate-webhook-tls"} and set(credentials.values()) <= readable,
          f"operator reads exactly the credential Secrets {sorted(credentials.values())}: {sorted(readable)}")
    check(("STREAMGATE_SIDECAR_CREDENTIALS_YAML" in env) == bool(credentials), "credential map reaches the operator")
    otlp = ((values or {}).get("audit") or {}).get("otlp") or {}
    got = (env.get("STREAMGATE_AUDIT_OTLP_ENDPOINT") or {}).get("value")
    check(got == (otlp.get("endpoint") or None), f"the collector endpoint reaches the operator: {got}")
    certs = [d for _, d in docs if (d["apiVersion"], d["kind"]) in CERT_MANAGER_KINDS]
    check(bool(certs) == (mode == "certManager"), "cert-manager Issuer/Certificate only in certManager mode")


def external(docs, base):
    """webhook.externalURL: the API server calls the operator at that URL; nothing runs in-cluster."""
    for _, d in docs:
        check(d["kind"] not in ("Deployment", "Service", "PodDisruptionBudget"),
              f"externalURL mode renders no {d['kind']} (the operator runs outside the cluster)")
    paths = {
        os.environ.get("STREAMGATE_PATH_INJECT", "/inject-pod"),
        os.environ.get("STREAMGATE_PATH_STAMP", "/mutate-accessapproval"),
        os.environ.get("STREAMGATE_PATH_VALIDATE", "/validate-accessapproval"),
        os.environ.get("STREAMGATE_PATH_GUARD", "/validate-pod"),
    }
    urls = set()
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        for hook in by_kind(docs, kind)[0]["webhooks"]:
            check("service" not in hook["clientConfig"], f"{hook['name']}: url and service are exclusive")
            urls.add(hook["clientConfig"]["url"])
    check(urls == {base + p for p in paths}, f"webhook urls {sorted(urls)}")


def crds(chart_dir):
    d = os.path.join(chart_dir, "crds")
    names = sorted(f for f in os.listdir(d) if f.endswith(".yaml"))
    check(len(names) == 3, f"expected the three CRDs in {d}, found {names}")
    for f in names:
        with open(os.path.join(d, f)) as fh:
            for doc in yaml.safe_load_all(fh):
                if doc:
                    try:
                        kubernetes_validate.validate(doc, KUBE, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        fail(f"crds/{f}: {e.message} at {list(e.path)}")


def main():
    chart_dir = sys.argv[1]
    crds(chart_dir)
    variants = [
        ("selfManaged", {}),
        ("certManager", {"certs": {"mode": "certManager"}}),
        ("selfManaged", {"upstream": {"bootstrapServers": "kafka.kafka.svc:9092"}}),
        ("selfManaged", {"sidecarCredentials": {"clinical": "kafka-clinical", "billing": "kafka-billing"}}),
        ("selfManaged", {"audit": {"otlp": {"endpoint": "https://otel.observability:4317", "headers": "x-tenant=a"}}}),
    ]
    for mode, values in variants:
        lint(chart_dir, values)
        docs = render(chart_dir, values)
        validate(docs)
        semantics(docs, mode, values)
        print(f"ok: {mode} {values}: {len(docs)} manifests linted, rendered and validated against Kubernetes {KUBE}")
    values = {"webhook": {"externalURL": "https://127.0.0.1:18443/"}}
    lint(chart_dir, values)
    docs = render(chart_dir, values)
    validate(docs)
    external(docs, "https://127.0.0.1:18443")
    print(f"ok: external {values}: {len(docs)} manifests linted, rendered and validated against Kubernetes {KUBE}")


if __name__ == "__main__":
    main()
