//! The sidecar's session with the operator: the broker credential and the
//! sidecar's own API identity, obtained at start, held in memory only.
//!
//! The injector mounts a projected token of audience `streamgate.dev/sidecar`
//! into this container alone; the operator verifies it (TokenReview for that
//! audience, pod carries the genuine sidecar) and answers with the
//! namespace's broker credential and a short-lived token of the namespace's
//! `streamgate-sidecar` ServiceAccount (not bound to this pod: the API server
//! refuses to bind one account's token to a pod running as another, so it is
//! kept short and renewed through new sessions, which only a live injected
//! pod can open). Neither is written to disk or logged. The API token is renewed before it expires by opening
//! a new session; the kube client reads the current token on every request.
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::http::{HeaderValue, Request, header};
use streamgate_crds::contract::{SESSION_PATH, SidecarSession};

use crate::datapath::upstream::Credentials;

/// Where and how to reach the operator.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub url: String,
    pub ca_pem: Option<String>,
    pub token_file: std::path::PathBuf,
}

/// An open session: the credential (if the namespace has one) and a kube
/// client authenticating as `streamgate-sidecar`, its token kept fresh.
#[derive(Clone)]
pub struct Session {
    pub credentials: Option<Credentials>,
    pub kube: kube::Client,
    _renew: Arc<RenewTask>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

struct RenewTask(tokio::task::JoinHandle<()>);

impl Drop for RenewTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Ask the operator once. The error carries the operator's reason (never the token).
pub async fn fetch(config: &SessionConfig) -> anyhow::Result<SidecarSession> {
    let token = read_token(&config.token_file)?;
    let mut client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .https_only(true);
    if let Some(pem) = &config.ca_pem {
        let ca = reqwest::Certificate::from_pem(pem.as_bytes())
            .context("STREAMGATE_OPERATOR_CA is not a PEM certificate")?;
        // Only the operator's CA: a public root must not vouch for "the operator".
        client = client
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca);
    }
    let client = client.build().context("HTTPS client for the operator")?;
    let url = format!("{}{SESSION_PATH}", config.url.trim_end_matches('/'));
    let answer = client
        .post(&url)
        .bearer_auth(token.trim())
        .send()
        .await
        .with_context(|| format!("reaching the operator at {url}"))?;
    let status = answer.status();
    if !status.is_success() {
        let body: serde_json::Value = answer.json().await.unwrap_or_default();
        let reason = body["error"].as_str().unwrap_or("no reason given");
        anyhow::bail!("the operator refused the sidecar session ({status}): {reason}");
    }
    answer
        .json::<SidecarSession>()
        .await
        .context("the operator's session answer is not a session")
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("reading the sidecar's projected token {}", path.display()))
}

/// Open the session (retrying while the operator is not reachable yet) and
/// build the kube client on it.
pub async fn open(config: SessionConfig) -> anyhow::Result<Session> {
    let mut attempt = 0u32;
    let first = loop {
        match fetch(&config).await {
            Ok(s) => break s,
            Err(e) if attempt < 20 => {
                attempt += 1;
                tracing::warn!(error = %format!("{e:#}"), attempt, "no sidecar session yet; retrying");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt.min(6)))).await;
            }
            Err(e) => return Err(e),
        }
    };
    let credentials = match &first.credentials {
        Some(c) => Some(Credentials::new(c.username.clone(), c.password.clone())?),
        None => None,
    };
    tracing::info!(
        credential = credentials.is_some(),
        expires = first.kube_token_expires,
        "sidecar session opened: API access as streamgate-sidecar"
    );
    let token = Arc::new(RwLock::new(first.kube_token.clone()));
    let kube = kube_client(Arc::clone(&token))?;
    let renew = tokio::spawn(renew(config, token, first.kube_token_expires));
    Ok(Session {
        credentials,
        kube,
        _renew: Arc::new(RenewTask(renew)),
    })
}

/// How long to wait before renewing a token that expires at `expires`:
/// 80 % of what is left, at least 5 s, at most an hour.
pub fn renew_after(expires: &str, now: chrono::DateTime<chrono::Utc>) -> Duration {
    let left = chrono::DateTime::parse_from_rfc3339(expires)
        .map(|t| t.with_timezone(&chrono::Utc) - now)
        .ok()
        .and_then(|d| d.to_std().ok())
        .unwrap_or_default();
    (left.mul_f64(0.8)).clamp(Duration::from_secs(5), Duration::from_secs(3600))
}

async fn renew(config: SessionConfig, token: Arc<RwLock<String>>, mut expires: String) {
    loop {
        tokio::time::sleep(renew_after(&expires, chrono::Utc::now())).await;
        match fetch(&config).await {
            Ok(s) => {
                if let Ok(mut t) = token.write() {
                    *t = s.kube_token;
                }
                expires = s.kube_token_expires;
                tracing::debug!(expires, "sidecar API token renewed");
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "renewing the sidecar API token failed; retrying");
                expires = (chrono::Utc::now() + chrono::Duration::seconds(6)).to_rfc3339();
            }
        }
    }
}

/// The in-cluster client (API server URL and CA from the pod) with the
/// session's token on every request instead of a token file.
fn kube_client(token: Arc<RwLock<String>>) -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::incluster_env().context("in-cluster API server settings")?;
    config.auth_info = kube::config::AuthInfo::default();
    let bearer = tower::util::MapRequestLayer::new(move |mut req: Request<kube::client::Body>| {
        let current = token.read().map(|t| t.clone()).unwrap_or_default();
        if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {current}")) {
            value.set_sensitive(true);
            req.headers_mut().insert(header::AUTHORIZATION, value);
        }
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&bearer)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_four_fifths_of_the_lifetime_within_bounds() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-02T05:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            renew_after("2026-12-02T05:10:00Z", now),
            Duration::from_secs(480)
        );
        assert_eq!(
            renew_after("2026-12-02T04:00:00Z", now),
            Duration::from_secs(5)
        );
        assert_eq!(renew_after("garbage", now), Duration::from_secs(5));
        assert_eq!(
            renew_after("2026-12-03T05:00:00Z", now),
            Duration::from_secs(3600)
        );
    }
}
