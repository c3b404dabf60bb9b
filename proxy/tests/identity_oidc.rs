//! JWT validation against a real OpenID provider (oidc-provider, see
//! test-peers.md): discovery, JWKS, client-credentials tokens, and every
//! refusal a hostile or stale token can earn. Needs node and the test IdP
//! (`STREAMGATE_NODE`, `STREAMGATE_IDP`, or the coordinator's peers.env);
//! fails loudly when they are missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use serde_json::Value;
use streamgate_proxy::identity::jwt::{IssuerSet, JwtError, JwtValidator, OidcConfig};
use streamgate_proxy::identity::sasl::SaslServer;

#[path = "support/gate.rs"]
mod gate;
use gate::{Conn, FrameAction, on_frame};

const AUDIENCE: &str = "urn:kafka:proxy";

/// A peer path from the environment, else from the coordinator's peers.env.
fn peer(var: &str) -> String {
    if let Ok(v) = std::env::var(var) {
        return v;
    }
    let cache = std::env::var("STREAMGATE_CACHE").unwrap_or_else(|_| {
        format!(
            "{}/.cache/streamgate",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let env_file = Path::new(&cache).join("peers.env");
    let text = std::fs::read_to_string(&env_file).unwrap_or_else(|e| {
        panic!("missing peer: {var} is not set and {} cannot be read ({e}); install the peers (.ci/install-peers.sh)", env_file.display())
    });
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| *k == var)
        .map(|(_, v)| v.trim_matches('"').to_string())
        .unwrap_or_else(|| {
            panic!(
                "missing peer: {var} is neither set nor in {}",
                env_file.display()
            )
        })
}

fn node() -> String {
    let node = peer("STREAMGATE_NODE");
    assert!(
        Path::new(&node).exists(),
        "missing peer: node not found at {node}"
    );
    node
}

fn idp_script() -> String {
    let idp = peer("STREAMGATE_IDP");
    assert!(
        Path::new(&idp).exists(),
        "missing peer: the test IdP (oidc-provider) not found at {idp}"
    );
    idp
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running oidc-provider; killed on drop.
struct Idp {
    child: Child,
    port: u16,
}

impl Idp {
    async fn start(port: u16, ttl: u32, jwks_file: Option<&Path>) -> Idp {
        let mut cmd = Command::new(node());
        cmd.arg(idp_script())
            .env("PORT", port.to_string())
            .env("AUDIENCE", AUDIENCE)
            .env("TOKEN_TTL", ttl.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(f) = jwks_file {
            cmd.env("JWKS_FILE", f);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("missing peer: cannot start node ({e})"));
        let idp = Idp { child, port };
        let url = format!("{}/.well-known/openid-configuration", idp.issuer());
        for _ in 0..150 {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return idp;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the test IdP did not come up on port {port}");
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn token(&self, client: &str) -> String {
        let resp: Value = reqwest::Client::new()
            .post(format!("{}/token", self.issuer()))
            .basic_auth(client, Some(format!("{client}-secret")))
            .form(&[("grant_type", "client_credentials"), ("scope", "kafka")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        resp["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {resp}"))
            .to_string()
    }

    async fn jwks(&self) -> Value {
        reqwest::get(format!("{}/jwks", self.issuer()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(issuer: &str) -> OidcConfig {
    OidcConfig {
        issuer: issuer.to_string(),
        audiences: vec!["urn:other".into(), AUDIENCE.into()],
        username_claim: "sub".into(),
        groups_claim: "groups".into(),
        leeway: Duration::from_secs(30),
        min_refresh_interval: Duration::from_secs(10),
        // The test IdP serves plain http.
        allow_insecure: true,
    }
}

/// A private JWK set with one RSA key `kid`, made by node's crypto.
fn write_jwks(dir: &Path, kid: &str) -> PathBuf {
    let script = format!(
        "const c=require('crypto');const {{privateKey}}=c.generateKeyPairSync('rsa',{{modulusLength:2048}});\
         const j=privateKey.export({{format:'jwk'}});j.kid='{kid}';j.use='sig';j.alg='RS256';\
         process.stdout.write(JSON.stringify({{keys:[j]}}));"
    );
    let out = Command::new(node()).arg("-e").arg(script).output().unwrap();
    assert!(out.status.success(), "node could not make a key");
    let path = dir.join(format!("{kid}.json"));
    std::fs::write(&path, out.stdout).unwrap();
    path
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

fn parts(token: &str) -> (Value, Value, String) {
    let mut it = token.split('.');
    let h = serde_json::from_slice(&unb64(it.next().unwrap())).unwrap();
    let c = serde_json::from_slice(&unb64(it.next().unwrap())).unwrap();
    (h, c, it.next().unwrap().to_string())
}

fn der_len(n: usize) -> Vec<u8> {
    if n < 128 {
        vec![n as u8]
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        let mut out = vec![0x80 | bytes.len() as u8];
        out.extend(bytes);
        out
    }
}

fn der(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(body.len()));
    out.extend_from_slice(body);
    out
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    if b[0] & 0x80 != 0 {
        b.insert(0, 0);
    }
    der(0x02, &b)
}

/// The issuer's RSA public key as the PEM an attacker would find: the
/// "secret" of the classic HS256 key-confusion attack.
fn public_key_pem(jwk: &Value) -> String {
    let n = unb64(jwk["n"].as_str().unwrap());
    let e = unb64(jwk["e"].as_str().unwrap());
    let rsa_key = der(0x30, &[der_uint(&n), der_uint(&e)].concat());
    let mut bitstring = vec![0u8];
    bitstring.extend(rsa_key);
    let alg = der(
        0x30,
        &[
            der(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            vec![0x05, 0x00],
        ]
        .concat(),
    );
    let spki = der(0x30, &[alg, der(0x03, &bitstring)].concat());
    let body = base64::engine::general_purpose::STANDARD.encode(spki);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn client_credentials_token_becomes_a_principal_with_groups() {
    let idp = Idp::start(free_port(), 300, None).await;
    let v = JwtValidator::new(config(&idp.issuer()));
    let tok = v.validate(&idp.token("billing-app").await).await.unwrap();
    assert_eq!(tok.principal.name, "billing-app");
    assert_eq!(tok.principal.groups, vec!["billing-analysts"]);
    let lifetime = tok.session_lifetime_ms(SystemTime::now());
    assert!(
        (290_000..=300_000).contains(&lifetime),
        "session lifetime {lifetime} ms from a 300 s token"
    );
    let tok = v.validate(&idp.token("outsider").await).await.unwrap();
    assert!(tok.principal.groups.is_empty());
    // Through IssuerSet (what the SASL server uses), picking the issuer by `iss`.
    let set = IssuerSet::new(vec![config(&idp.issuer())]);
    assert_eq!(
        set.validate(&idp.token("intake-app").await)
            .await
            .unwrap()
            .principal
            .groups,
        vec!["clinicians"]
    );
}

#[tokio::test]
async fn expired_token_is_refused() {
    let idp = Idp::start(free_port(), 1, None).await;
    let token = idp.token("intake-app").await;
    // Production leeway is 30 s; a 1 s leeway keeps this test short.
    let cfg = OidcConfig {
        leeway: Duration::from_secs(1),
        ..config(&idp.issuer())
    };
    let v = JwtValidator::new(cfg);
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    assert_eq!(v.validate(&token).await, Err(JwtError::Expired));
}

#[tokio::test]
async fn wrong_audience_and_wrong_issuer_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = write_jwks(dir.path(), "shared");
    // Two issuers signing with the same key: only `iss` tells them apart.
    let a = Idp::start(free_port(), 300, Some(&keys)).await;
    let b = Idp::start(free_port(), 300, Some(&keys)).await;
    let token = a.token("intake-app").await;
    let wrong_aud = OidcConfig {
        audiences: vec!["urn:kafka:elsewhere".into()],
        ..config(&a.issuer())
    };
    assert_eq!(
        JwtValidator::new(wrong_aud).validate(&token).await,
        Err(JwtError::WrongAudience)
    );
    assert_eq!(
        JwtValidator::new(config(&b.issuer()))
            .validate(&token)
            .await,
        Err(JwtError::WrongIssuer)
    );
    // An issuer no policy names.
    let set = IssuerSet::new(vec![config(&b.issuer())]);
    assert_eq!(set.validate(&token).await, Err(JwtError::WrongIssuer));
}

#[tokio::test]
async fn tampered_none_and_hmac_confusion_tokens_are_refused() {
    let idp = Idp::start(free_port(), 300, None).await;
    let v = JwtValidator::new(config(&idp.issuer()));
    let token = idp.token("outsider").await;
    let (header, mut claims, sig) = parts(&token);
    v.validate(&token).await.unwrap();

    // Bad signature: the outsider claims to be a clinician.
    claims["groups"] = serde_json::json!(["clinicians"]);
    let h64 = token.split('.').next().unwrap();
    let tampered = format!("{h64}.{}.{sig}", b64(&serde_json::to_vec(&claims).unwrap()));
    assert_eq!(v.validate(&tampered).await, Err(JwtError::BadSignature));

    // alg: none, no signature.
    let mut none_header = header.clone();
    none_header["alg"] = "none".into();
    let none = format!(
        "{}.{}.",
        b64(&serde_json::to_vec(&none_header).unwrap()),
        b64(&serde_json::to_vec(&claims).unwrap())
    );
    assert_eq!(
        v.validate(&none).await,
        Err(JwtError::AlgorithmNotAllowed("none".into()))
    );

    // HS256 "signed" with the issuer's public RSA key as the HMAC secret.
    let jwks = idp.jwks().await;
    let kid = header["kid"].as_str().unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap();
    let pem = public_key_pem(jwk);
    let mut hs_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs_header.kid = Some(kid.to_string());
    let forged = jsonwebtoken::encode(
        &hs_header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(pem.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        v.validate(&forged).await,
        Err(JwtError::AlgorithmNotAllowed("HS256".into()))
    );
}

#[tokio::test]
async fn key_rotation_refreshes_once_and_refuses_the_removed_key() {
    let dir = tempfile::tempdir().unwrap();
    let (keys_a, keys_b) = (
        write_jwks(dir.path(), "key-a"),
        write_jwks(dir.path(), "key-b"),
    );
    let port = free_port();
    let idp = Idp::start(port, 300, Some(&keys_a)).await;
    let token_a = idp.token("intake-app").await;
    let eager = JwtValidator::new(OidcConfig {
        min_refresh_interval: Duration::ZERO,
        ..config(&idp.issuer())
    });
    let limited = JwtValidator::new(OidcConfig {
        min_refresh_interval: Duration::from_secs(60),
        ..config(&idp.issuer())
    });
    eager.validate(&token_a).await.unwrap();
    limited.validate(&token_a).await.unwrap();

    // Rotate: the issuer now signs with key-b only.
    drop(idp);
    let idp = Idp::start(port, 300, Some(&keys_b)).await;
    let token_b = idp.token("intake-app").await;
    // An unknown kid refetches the key set…
    assert_eq!(
        eager.validate(&token_b).await.unwrap().principal.name,
        "intake-app"
    );
    // …and a token signed with the removed key is refused by kid.
    assert_eq!(
        eager.validate(&token_a).await,
        Err(JwtError::UnknownKey("key-a".into()))
    );
    // The refresh is rate-limited: within the interval the cache stays as it was.
    assert_eq!(
        limited.validate(&token_b).await,
        Err(JwtError::UnknownKey("key-b".into()))
    );
    assert!(
        limited.validate(&token_a).await.is_ok(),
        "cached key-a is still trusted until the next refresh"
    );
}

#[tokio::test]
async fn sasl_oauthbearer_with_real_tokens() {
    let idp = Idp::start(free_port(), 300, None).await;
    let set = IssuerSet::new(vec![config(&idp.issuer())]);
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("OAUTHBEARER"));
    let auth = |tok: &str| {
        SaslAuthenticateRequest::default()
            .with_auth_bytes(Bytes::from(format!("n,,\x01auth=Bearer {tok}\x01\x01")))
    };
    let mut ok = SaslServer::new();
    assert_eq!(ok.handshake(1, &handshake).error_code, 0);
    let out = ok
        .authenticate(
            &set,
            &auth(&idp.token("research-app").await),
            SystemTime::now(),
        )
        .await;
    assert_eq!(out.response.error_code, 0);
    assert!(out.response.session_lifetime_ms > 290_000);
    assert_eq!(ok.session().unwrap().principal.groups, vec!["researchers"]);

    let wrong_aud = IssuerSet::new(vec![OidcConfig {
        audiences: vec!["urn:nope".into()],
        ..config(&idp.issuer())
    }]);
    let mut bad = SaslServer::new();
    bad.handshake(1, &handshake);
    let token = idp.token("research-app").await;
    let out = bad
        .authenticate(&wrong_aud, &auth(&token), SystemTime::now())
        .await;
    assert_eq!(
        out.response.error_code,
        ResponseError::SaslAuthenticationFailed.code()
    );
    let msg = out.response.error_message.unwrap().to_string();
    assert!(msg.contains("audience"), "{msg}");
    assert!(!msg.contains(&token[..20]), "the token is never echoed");
    assert!(out.close);
}

/// The connection gate: SASL v1 and v0 (raw token frame) with real tokens,
/// then requests decided for the token's groups.
#[tokio::test]
async fn connection_gate_authenticates_and_decides_by_token_groups() {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use bytes::BytesMut;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Decodable, Encodable};
    use streamgate_proxy::policy::conn::GateShared;
    use streamgate_proxy::policy::decide::PolicyDoc;
    use streamgate_proxy::policy::{PolicyInputs, policy_channel};

    let idp = Idp::start(free_port(), 300, None).await;
    let spec = serde_yaml::from_str(&format!(
        r#"
identity: {{oidc: {{issuer: "{}", audiences: ["{AUDIENCE}"]}}}}
rules:
  - {{name: clinicians, subjects: [{{kind: Group, name: clinicians}}], topics: ["patient-*"], operations: [Write]}}
"#,
        idp.issuer()
    ))
    .unwrap();
    let (publisher, handle) = policy_channel(BTreeMap::new());
    publisher.publish(
        "test",
        PolicyInputs {
            policies: vec![PolicyDoc {
                name: "p".into(),
                namespace: "ns".into(),
                generation: None,
                spec,
            }],
            ..Default::default()
        },
    );
    // The test IdP serves plain http.
    let shared = GateShared::new(handle, None, true);
    let frame = |key: ApiKey, version: i16, body: &dyn Fn(&mut BytesMut)| {
        let mut out = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .encode(&mut out, key.request_header_version(version))
            .unwrap();
        body(&mut out);
        out.freeze()
    };
    let produce = frame(ApiKey::Produce, 9, &|out| {
        ProduceRequest::default()
            .with_acks(1)
            .with_topic_data(vec![
                produce_request::TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("patient-records")))
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_records(Some(Bytes::new())),
                    ]),
            ])
            .encode(out, 9)
            .unwrap()
    });
    let handshake = |v: i16| {
        frame(ApiKey::SaslHandshake, v, &|out| {
            SaslHandshakeRequest::default()
                .with_mechanism(StrBytes::from_static_str("OAUTHBEARER"))
                .encode(out, v)
                .unwrap()
        })
    };
    let client_msg = |tok: &str| Bytes::from(format!("n,,\x01auth=Bearer {tok}\x01\x01"));

    // v1: SaslAuthenticate; a clinician may write patient-records.
    let mut conn = Conn::new(Arc::clone(&shared));
    assert!(matches!(
        on_frame(&mut conn, handshake(1)).await.0,
        FrameAction::Answer(_)
    ));
    let tok = idp.token("intake-app").await;
    let auth = frame(ApiKey::SaslAuthenticate, 2, &|out| {
        SaslAuthenticateRequest::default()
            .with_auth_bytes(client_msg(&tok))
            .encode(out, 2)
            .unwrap()
    });
    let FrameAction::Answer(a) = on_frame(&mut conn, auth).await.0 else {
        panic!("authenticated")
    };
    let mut buf = a.clone();
    ResponseHeader::decode(
        &mut buf,
        ApiKey::SaslAuthenticate.response_header_version(2),
    )
    .unwrap();
    let r = SaslAuthenticateResponse::decode(&mut buf, 2).unwrap();
    assert_eq!(r.error_code, 0);
    assert!(r.session_lifetime_ms > 0);
    assert!(matches!(
        on_frame(&mut conn, produce.clone()).await.0,
        FrameAction::Forward { .. }
    ));

    // v0: the token comes as a raw frame; a billing analyst may not write.
    let mut conn = Conn::new(Arc::clone(&shared));
    assert!(matches!(
        on_frame(&mut conn, handshake(0)).await.0,
        FrameAction::Answer(_)
    ));
    let FrameAction::Answer(empty) =
        on_frame(&mut conn, client_msg(&idp.token("billing-app").await))
            .await
            .0
    else {
        panic!("raw token accepted")
    };
    assert!(empty.is_empty());
    assert!(matches!(
        on_frame(&mut conn, produce.clone()).await.0,
        FrameAction::Answer(_)
    ));

    // v0 with a forged token: the connection is closed.
    let mut conn = Conn::new(shared);
    on_frame(&mut conn, handshake(0)).await;
    assert!(matches!(
        on_frame(&mut conn, client_msg("a.b.c")).await.0,
        FrameAction::Close(_)
    ));
}

/// Issue 12 item 7: a principal is (issuer, subject). Two policies trust two
/// issuers; issuer B mints a token whose `sub` is the name issuer A's user
/// has. A's rule (User `intake-app` may write) must not apply to it.
#[tokio::test]
async fn a_same_named_user_of_another_issuer_does_not_get_its_rights() {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use bytes::BytesMut;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Encodable;
    use streamgate_proxy::policy::conn::GateShared;
    use streamgate_proxy::policy::decide::PolicyDoc;
    use streamgate_proxy::policy::{PolicyInputs, policy_channel};

    let a = Idp::start(free_port(), 300, None).await;
    let b = Idp::start(free_port(), 300, None).await;
    let policy = |name: &str, issuer: &str, user: &str| {
        PolicyDoc {
        name: name.into(),
        namespace: "ns".into(),
        generation: None,
        spec: serde_yaml::from_str(&format!(
            r#"
identity: {{oidc: {{issuer: "{issuer}", audiences: ["{AUDIENCE}"]}}}}
rules:
  - {{name: writers, subjects: [{{kind: User, name: {user}}}], topics: ["patient-records"], operations: [Write]}}
"#
        ))
        .unwrap(),
    }
    };
    let (publisher, handle) = policy_channel(BTreeMap::new());
    publisher.publish(
        "test",
        PolicyInputs {
            policies: vec![
                policy("trusts-a", &a.issuer(), "intake-app"),
                policy("trusts-b", &b.issuer(), "billing-app"),
            ],
            ..Default::default()
        },
    );
    // The test IdP serves plain http.
    let shared = GateShared::new(handle, None, true);
    let frame = |key: ApiKey, version: i16, body: &dyn Fn(&mut BytesMut)| {
        let mut out = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .encode(&mut out, key.request_header_version(version))
            .unwrap();
        body(&mut out);
        out.freeze()
    };
    let produce = frame(ApiKey::Produce, 9, &|out| {
        ProduceRequest::default()
            .with_acks(1)
            .with_topic_data(vec![
                produce_request::TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("patient-records")))
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_records(Some(Bytes::new())),
                    ]),
            ])
            .encode(out, 9)
            .unwrap()
    });
    let handshake = frame(ApiKey::SaslHandshake, 1, &|out| {
        SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str("OAUTHBEARER"))
            .encode(out, 1)
            .unwrap()
    });
    // Authenticates a new connection with `token`; what the Produce gets.
    let produce_as = async |token: String| {
        let mut conn = Conn::new(Arc::clone(&shared));
        on_frame(&mut conn, handshake.clone()).await;
        let auth = frame(ApiKey::SaslAuthenticate, 2, &|out| {
            SaslAuthenticateRequest::default()
                .with_auth_bytes(Bytes::from(format!("n,,\x01auth=Bearer {token}\x01\x01")))
                .encode(out, 2)
                .unwrap()
        });
        assert!(matches!(
            on_frame(&mut conn, auth).await.0,
            FrameAction::Answer(_)
        ));
        assert_eq!(
            conn.sasl().session().unwrap().principal.name,
            "intake-app",
            "both issuers name the client intake-app"
        );
        on_frame(&mut conn, produce.clone()).await.0
    };
    assert!(
        matches!(
            produce_as(a.token("intake-app").await).await,
            FrameAction::Forward { .. }
        ),
        "issuer A's intake-app may write"
    );
    assert!(
        matches!(
            produce_as(b.token("intake-app").await).await,
            FrameAction::Answer(_)
        ),
        "issuer B's intake-app is someone else: refused"
    );
}

/// Issue 12 item 7: a plain-http issuer (discovery and keys fetched without
/// TLS, so anyone on the path can swap the keys and mint tokens) is refused
/// as a policy writes it, with an error naming the flag that allows it.
#[tokio::test]
async fn an_http_issuer_is_refused_unless_the_sidecar_allows_insecure_issuers() {
    let idp = Idp::start(free_port(), 300, None).await;
    let token = idp.token("intake-app").await;
    let as_written = OidcConfig::from(&streamgate_crds::OidcIdentity {
        issuer: idp.issuer(),
        audiences: vec![AUDIENCE.into()],
        username_claim: None,
        groups_claim: None,
    });
    let err = IssuerSet::new(vec![as_written])
        .validate(&token)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&idp.issuer()) && msg.contains("--allow-insecure-issuers"),
        "{msg}"
    );
    // Accepted once the sidecar allows it.
    let allowed = OidcConfig {
        allow_insecure: true,
        ..OidcConfig::from(&streamgate_crds::OidcIdentity {
            issuer: idp.issuer(),
            audiences: vec![AUDIENCE.into()],
            username_claim: None,
            groups_claim: None,
        })
    };
    let tok = IssuerSet::new(vec![allowed])
        .validate(&token)
        .await
        .unwrap();
    assert_eq!(tok.principal.name, "intake-app");

    // The same through the connection gate, as `run` builds it: SASL fails
    // with the reason without the flag, succeeds with it.
    use std::collections::BTreeMap;

    use bytes::BytesMut;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Decodable, Encodable};
    use streamgate_proxy::policy::conn::GateShared;
    use streamgate_proxy::policy::decide::PolicyDoc;
    use streamgate_proxy::policy::{PolicyInputs, policy_channel};
    let spec = serde_yaml::from_str(&format!(
        "identity: {{oidc: {{issuer: \"{}\", audiences: [\"{AUDIENCE}\"]}}}}\nrules: []\n",
        idp.issuer()
    ))
    .unwrap();
    let (publisher, handle) = policy_channel(BTreeMap::new());
    publisher.publish(
        "test",
        PolicyInputs {
            policies: vec![PolicyDoc {
                name: "p".into(),
                namespace: "ns".into(),
                generation: None,
                spec,
            }],
            ..Default::default()
        },
    );
    let frame = |key: ApiKey, version: i16, body: &dyn Fn(&mut BytesMut)| {
        let mut out = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .encode(&mut out, key.request_header_version(version))
            .unwrap();
        body(&mut out);
        out.freeze()
    };
    for allow in [false, true] {
        let mut conn = Conn::new(GateShared::new(handle.clone(), None, allow));
        on_frame(
            &mut conn,
            frame(ApiKey::SaslHandshake, 1, &|out| {
                SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str("OAUTHBEARER"))
                    .encode(out, 1)
                    .unwrap()
            }),
        )
        .await;
        let auth = frame(ApiKey::SaslAuthenticate, 2, &|out| {
            SaslAuthenticateRequest::default()
                .with_auth_bytes(Bytes::from(format!("n,,\x01auth=Bearer {token}\x01\x01")))
                .encode(out, 2)
                .unwrap()
        });
        let (FrameAction::Answer(mut a) | FrameAction::AnswerThenClose(mut a)) =
            on_frame(&mut conn, auth).await.0
        else {
            panic!("SaslAuthenticate is answered")
        };
        ResponseHeader::decode(&mut a, ApiKey::SaslAuthenticate.response_header_version(2))
            .unwrap();
        let r = SaslAuthenticateResponse::decode(&mut a, 2).unwrap();
        if allow {
            assert_eq!(r.error_code, 0, "{:?}", r.error_message);
        } else {
            assert_eq!(r.error_code, ResponseError::SaslAuthenticationFailed.code());
            let msg = r.error_message.unwrap().to_string();
            assert!(msg.contains("--allow-insecure-issuers"), "{msg}");
        }
    }
}
