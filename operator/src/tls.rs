//! Webhook TLS: a self-managed CA and serving certificate (rcgen), the
//! rustls certificate resolver that swaps certificates without a restart, and
//! the Secret/caBundle plumbing when the operator manages certificates itself.
//!
//! In cert-manager mode the chart mounts cert-manager's Secret and the
//! operator only reloads the files ([`load_dir`]); cert-manager's CA injector
//! fills `caBundle`.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::json;

use crate::CA_BUNDLE_FIELD_MANAGER;

/// Keys of the shared Secret (the same names cert-manager uses).
pub const CA_KEY: &str = "ca.crt";
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";
/// The CA's private key: kept so any replica can re-issue the serving cert.
pub const CA_PRIVATE_KEY: &str = "ca.key";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("bad PEM: {0}")]
    Pem(String),
    #[error("rustls refused the key or config: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Secret {0} lacks key {1}")]
    MissingKey(String, &'static str),
}

/// PEM material for the webhook: CA, serving certificate and its key.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookPki {
    pub ca_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for WebhookPki {
    // Private keys never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookPki")
            .field("ca_pem", &self.ca_pem)
            .finish_non_exhaustive()
    }
}

/// Serving certificates are re-issued when they have less than this left.
pub const RENEW_BEFORE: time::Duration = time::Duration::days(30);
const SERVING_DAYS: i64 = 365;
/// Secret annotation recording the serving certificate's notAfter (RFC 3339),
/// so renewal needs no X.509 parser.
pub const NOT_AFTER_ANNOTATION: &str = "streamgate.dev/serving-not-after";

/// The CA's identity. Re-creating the issuer from these params and the kept
/// CA key signs certificates that chain to the original CA certificate
/// (same subject, same key), so `caBundle` never changes on renewal.
fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "streamgate-webhook-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(ca_params)
}

/// A fresh CA (10 years) and a serving certificate (1 year) for `dns_names`.
pub fn generate(dns_names: &[String]) -> Result<WebhookPki, TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = ca_params()?;
    let now = time_now();
    ca_params.not_before = now - time::Duration::hours(1);
    ca_params.not_after = now + time::Duration::days(3650);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);
    let (cert_pem, key_pem) = issue_serving(dns_names, &issuer)?;
    Ok(WebhookPki {
        ca_pem: ca_cert.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        cert_pem,
        key_pem,
    })
}

/// A new serving certificate from the same CA (the CA certificate and caBundle stay).
pub fn renew_serving(pki: &WebhookPki, dns_names: &[String]) -> Result<WebhookPki, TlsError> {
    let ca_key = KeyPair::from_pem(&pki.ca_key_pem)?;
    let issuer = Issuer::new(ca_params()?, &ca_key);
    let (cert_pem, key_pem) = issue_serving(dns_names, &issuer)?;
    Ok(WebhookPki {
        cert_pem,
        key_pem,
        ..pki.clone()
    })
}

/// Does a serving certificate valid until `not_after` (RFC 3339) need renewing at `now`?
pub fn needs_renewal(not_after: Option<&str>, now: time::OffsetDateTime) -> bool {
    let parsed = not_after.and_then(|t| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    });
    parsed.is_none_or(|t| t - now < RENEW_BEFORE)
}

fn serving_not_after() -> String {
    // Matches issue_serving's validity (a little early: renewal only comes sooner).
    (time_now() + time::Duration::days(SERVING_DAYS) - time::Duration::minutes(5))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn issue_serving(
    dns_names: &[String],
    issuer: &Issuer<'_, &KeyPair>,
) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        dns_names.first().cloned().unwrap_or_default(),
    );
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = time_now();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(SERVING_DAYS);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The DNS names the API server uses to reach the webhook Service.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_string(),
    ]
}

/// A rustls signing bundle from PEM.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no certificate in PEM".into()));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| TlsError::Pem(format!("key: {e}")))?
        .ok_or_else(|| TlsError::Pem("no private key in PEM".into()))?;
    let signer = ring::sign::any_supported_type(&key)?;
    Ok(Arc::new(CertifiedKey::new(certs, signer)))
}

/// Serves whatever certificate was set last; swapping needs no restart and
/// affects only new handshakes.
#[derive(Debug, Default)]
pub struct ReloadingResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ReloadingResolver {
    pub fn set(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut cur) = self.current.write() {
            *cur = Some(key);
        }
    }

    pub fn has_cert(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }
}

/// A rustls server config (ring provider, TLS 1.2+, HTTP/1.1) over the resolver.
pub fn server_config(
    resolver: Arc<ReloadingResolver>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// cert-manager mode: read `tls.crt`/`tls.key` from a mounted Secret directory.
pub fn load_dir(dir: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| TlsError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    certified_key(&read(CERT_KEY)?, &read(KEY_KEY)?)
}

fn pki_from_secret(secret: &Secret) -> Result<WebhookPki, TlsError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let data = secret.data.clone().unwrap_or_default();
    let get = |key: &'static str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| TlsError::MissingKey(name.clone(), key))
    };
    Ok(WebhookPki {
        ca_pem: get(CA_KEY)?,
        ca_key_pem: get(CA_PRIVATE_KEY)?,
        cert_pem: get(CERT_KEY)?,
        key_pem: get(KEY_KEY)?,
    })
}

fn secret_for(name: &str, namespace: &str, pki: &WebhookPki) -> Secret {
    let mut data = BTreeMap::new();
    data.insert(
        CA_KEY.to_string(),
        ByteString(pki.ca_pem.clone().into_bytes()),
    );
    data.insert(
        CA_PRIVATE_KEY.to_string(),
        ByteString(pki.ca_key_pem.clone().into_bytes()),
    );
    data.insert(
        CERT_KEY.to_string(),
        ByteString(pki.cert_pem.clone().into_bytes()),
    );
    data.insert(
        KEY_KEY.to_string(),
        ByteString(pki.key_pem.clone().into_bytes()),
    );
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            annotations: Some(BTreeMap::from([(
                NOT_AFTER_ANNOTATION.to_string(),
                serving_not_after(),
            )])),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "streamgate-operator".to_string(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(data),
        ..Default::default()
    }
}

/// Self-managed mode: the one Secret all replicas share. The first replica to
/// get here creates it; a replica that loses the create race reads the winner's.
pub async fn ensure_secret(
    client: Client,
    namespace: &str,
    name: &str,
    dns_names: &[String],
) -> Result<WebhookPki, TlsError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    if let Some(existing) = api.get_opt(name).await? {
        let pki = pki_from_secret(&existing)?;
        let not_after = existing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(NOT_AFTER_ANNOTATION));
        if !needs_renewal(not_after.map(String::as_str), time_now()) {
            return Ok(pki);
        }
        // Close to expiry: re-issue from the same CA. Optimistic update; a
        // replica that loses the race reads the winner's certificate.
        tracing::info!(
            secret = name,
            "renewing the webhook serving certificate (same CA)"
        );
        let renewed = renew_serving(&pki, dns_names)?;
        let mut updated = secret_for(name, namespace, &renewed);
        updated.metadata.resource_version = existing.metadata.resource_version.clone();
        return match api.replace(name, &PostParams::default(), &updated).await {
            Ok(_) => Ok(renewed),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                pki_from_secret(&api.get(name).await?)
            }
            Err(e) => Err(e.into()),
        };
    }
    let pki = generate(dns_names)?;
    match api
        .create(&PostParams::default(), &secret_for(name, namespace, &pki))
        .await
    {
        Ok(_) => Ok(pki),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            pki_from_secret(&api.get(name).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Read the shared Secret again (for hot reload after rotation).
pub async fn read_secret(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<Option<WebhookPki>, TlsError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    match api.get_opt(name).await? {
        Some(s) => Ok(Some(pki_from_secret(&s)?)),
        None => Ok(None),
    }
}

/// Server-side apply of `caBundle` on every webhook of both configurations,
/// under its own field manager so Helm keeps owning everything else.
pub async fn patch_ca_bundle(
    client: Client,
    mutating: &str,
    validating: &str,
    ca_pem: &str,
) -> Result<(), TlsError> {
    use base64::Engine as _;
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    let params = PatchParams::apply(CA_BUNDLE_FIELD_MANAGER).force();

    let mapi: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mcfg = mapi.get(mutating).await?;
    let hooks: Vec<_> = mcfg
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .map(|w| json!({"name": w.name, "clientConfig": {"caBundle": bundle}}))
        .collect();
    let body = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": mutating}, "webhooks": hooks});
    mapi.patch(mutating, &params, &Patch::Apply(&body)).await?;

    let vapi: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let vcfg = vapi.get(validating).await?;
    let hooks: Vec<_> = vcfg
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .map(|w| json!({"name": w.name, "clientConfig": {"caBundle": bundle}}))
        .collect();
    let body = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": validating}, "webhooks": hooks});
    vapi.patch(validating, &params, &Patch::Apply(&body))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pki_loads_into_rustls_and_debug_hides_keys() {
        let pki = generate(&service_dns_names(
            "streamgate-webhook",
            "streamgate-system",
        ))
        .unwrap();
        assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        certified_key(&pki.cert_pem, &pki.key_pem).unwrap();
        let shown = format!("{pki:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }

    #[test]
    fn renewal_is_due_within_thirty_days_or_when_unknown() {
        let now = time::OffsetDateTime::parse(
            "2026-11-27T05:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert!(!needs_renewal(Some("2027-06-01T00:00:00Z"), now));
        assert!(needs_renewal(Some("2026-12-20T00:00:00Z"), now));
        assert!(needs_renewal(None, now));
        assert!(needs_renewal(Some("garbage"), now));
    }

    #[test]
    fn garbage_pem_is_a_clear_error() {
        let err = certified_key("not a cert", "nor a key").unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
