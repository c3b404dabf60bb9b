#!/usr/bin/env bash
# Installs every real peer the tests need (see e2e/README.md and the design's
# test-peers.md) into $STREAMGATE_CACHE (default ~/.cache/streamgate), reusing
# what is already there, and writes $STREAMGATE_CACHE/peers.env for the tests.
# Fails loudly when a peer cannot be installed or does not work afterwards.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${STREAMGATE_CACHE:-$HOME/.cache/streamgate}
mkdir -p "$CACHE"
log() { printf '[peers %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# --- Debian packages: kcat (CLI), librdkafka-dev (rdkafka_performance source), libpython (rotel);
#     the SAML peer and build: xmlsec1 (the CLI pysaml2 signs with), and what the proxy's
#     samael crate links and binds (libxml2, xmlsec1, OpenSSL headers; libclang for bindgen) ---
need_apt=()
for p in kcat librdkafka-dev libpython3.11 xmlsec1 libxmlsec1-dev libxml2-dev libssl-dev libclang-dev pkg-config; do dpkg -s "$p" >/dev/null 2>&1 || need_apt+=("$p"); done
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# --- Python clients, codecs, collector, chart tooling in one venv ---
VENV=$CACHE/venv
PIP_PKGS=(confluent-kafka==2.16.* kafka-python==3.0.* aiokafka==0.14.* lz4 zstandard python-snappy cramjam
          rotel helm-python-sdk kubernetes-validate pyyaml pysaml2==7.*)
stamp="$VENV/.streamgate-$(printf '%s ' "${PIP_PKGS[@]}" | sha256sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  log "creating venv $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q "${PIP_PKGS[@]}" || die "pip install failed"
  touch "$stamp"
fi
PY=$VENV/bin/python
"$PY" -c 'import confluent_kafka, kafka, aiokafka, lz4, zstandard, snappy, yaml, saml2' || die "python clients incomplete"
# --- the SAML IdP (pysaml2 signs through the xmlsec1 CLI) ---
XMLSEC1=$(command -v xmlsec1) || die "xmlsec1 missing"
"$XMLSEC1" --version >/dev/null 2>&1 || die "xmlsec1 does not run"
pkg-config --exists xmlsec1 libxml-2.0 || die "libxmlsec1-dev/libxml2-dev missing (the proxy's samael links them)"
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ROTEL=$SITE/rotel/rotel-agent
[ -x "$ROTEL" ] || die "rotel-agent missing at $ROTEL"

# --- kcat linked against confluent-kafka's newer librdkafka (Debian's 2.0.2 fails against tansu) ---
LIB=$(ls "$SITE"/confluent_kafka.libs/librdkafka-*.so.1 | head -1)
[ -f "$LIB" ] || die "librdkafka from confluent-kafka not found"
mkdir -p "$CACHE/rdk" "$CACHE/bin"
ln -sf "$LIB" "$CACHE/rdk/librdkafka.so.1"
cat >"$CACHE/bin/kcat" <<KCAT
#!/bin/sh
LD_LIBRARY_PATH="$CACHE/rdk" exec /usr/bin/kcat "\$@"
KCAT
chmod +x "$CACHE/bin/kcat"
"$CACHE/bin/kcat" -V 2>&1 | grep -q 'librdkafka 2\.1[6-9]' || die "kcat does not use librdkafka >= 2.16: $("$CACHE/bin/kcat" -V 2>&1 | head -2)"

# --- rdkafka_performance (benchmarks) ---
PERF=$CACHE/rdkafka_performance
if [ ! -x "$PERF" ]; then
  log "building rdkafka_performance"
  "$here/e2e/peers/perf/build.sh" "$LIB" "$PERF" || die "rdkafka_performance build failed"
fi

# --- the OIDC provider (oidc-provider from npm) ---
IDP=$CACHE/idp
if [ ! -d "$IDP/node_modules/oidc-provider" ] || ! cmp -s "$here/e2e/peers/oidc/package.json" "$IDP/package.json"; then
  log "npm install oidc-provider"
  mkdir -p "$IDP"
  cp "$here/e2e/peers/oidc/package.json" "$IDP/"
  (cd "$IDP" && npm install --no-audit --no-fund --silent >/dev/null) || die "npm install failed"
fi
cp "$here/e2e/peers/oidc/idp.mjs" "$IDP/"
NODE=$(command -v node) || die "node missing"

# --- a real Kubernetes control plane: etcd (Debian) + kube-apiserver 1.20.2 built from
#     Debian's source package (~15 min on 2 cores; cached under $CACHE/kube) + kubectl ---
KUBE_CACHE=$CACHE/kube "$here/e2e/peers/kube/control-plane.sh" install >"$CACHE/kube-install.log" 2>&1 \
  || { tail -30 "$CACHE/kube-install.log" >&2; die "kube-apiserver/etcd/kubectl install failed"; }
KUBE_APISERVER=$CACHE/kube/bin/kube-apiserver
ETCD=$(command -v etcd) || die "etcd missing after install"
KUBECTL=$(command -v kubectl) || die "kubectl missing after install"
"$KUBE_APISERVER" --version >/dev/null 2>&1 || die "kube-apiserver does not run"

# --- the broker: tansu 0.6.0 from crates.io (~20 min on 2 cores; cached) ---
TANSU=$CACHE/tansu/bin/tansu
exec 9>"$CACHE/.tansu.lock"; flock 9
if [ ! -x "$TANSU" ]; then
  log "building tansu 0.6.0 (cached under $CACHE/tansu; ~20 min on 2 cores)"
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql --root "$CACHE/tansu" \
    >"$CACHE/tansu-build.log" 2>&1 || { tail -30 "$CACHE/tansu-build.log" >&2; die "tansu build failed"; }
fi
"$TANSU" --version >/dev/null 2>&1 || "$TANSU" --help >/dev/null 2>&1 || die "tansu does not run"

cat >"$CACHE/peers.env" <<ENV
# written by .ci/install-peers.sh — absolute paths of the real peers the tests use
export STREAMGATE_CACHE="$CACHE"
export STREAMGATE_TANSU="$TANSU"
export STREAMGATE_PYTHON="$PY"
export STREAMGATE_KCAT="$CACHE/bin/kcat"
export STREAMGATE_RDKAFKA_PERF="$PERF"
export STREAMGATE_NODE="$NODE"
export STREAMGATE_IDP="$IDP/idp.mjs"
export STREAMGATE_XMLSEC1="$XMLSEC1"
export STREAMGATE_ROTEL="$ROTEL"
export STREAMGATE_KUBE_APISERVER="$KUBE_APISERVER"
export STREAMGATE_ETCD="$ETCD"
export STREAMGATE_KUBECTL="$KUBECTL"
ENV
log "peers ready: $CACHE/peers.env"
