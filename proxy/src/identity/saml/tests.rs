//! The pure core against assertions signed here with xmlsec (through
//! samael), by an IdP key and by a stranger's key.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509, X509NameBuilder};
use samael::crypto::{CertificateDer, Crypto, CryptoProvider};

use super::verify::{verify, verify_inspected};
use super::*;

const IDP: &str = "https://idp.test/metadata";
const AUD: &str = "urn:streamgate:gate";

struct Key {
    private_der: Vec<u8>,
    cert_der: Vec<u8>,
}

fn key() -> Key {
    let rsa = Rsa::generate(2048).unwrap();
    let pkey = PKey::from_rsa(rsa).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "test idp").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&pkey).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(&pkey, MessageDigest::sha256()).unwrap();
    Key {
        private_der: pkey.private_key_to_der().unwrap(),
        cert_der: b.build().to_der().unwrap(),
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap()
}

fn at(offset_secs: i64) -> String {
    (now() + chrono::Duration::seconds(offset_secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn cfg() -> SamlConfig {
    SamlConfig {
        issuer: IDP.into(),
        audience: AUD.into(),
        subject_attribute: None,
        groups_attribute: "groups".into(),
        clock_skew: Duration::from_secs(30),
        one_time_use: false,
        metadata: MetadataSource::File("/nonexistent".into()),
        allow_insecure: false,
    }
}

fn sig_template(id: &str) -> String {
    format!(
        r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#{id}"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/></ds:Signature>"##
    )
}

/// What an assertion says; each test changes one thing.
#[derive(Clone)]
struct Spec {
    id: &'static str,
    issuer: &'static str,
    subject: &'static str,
    audience: &'static str,
    not_before: i64,
    not_on_or_after: i64,
    confirmation_until: i64,
    groups: Vec<&'static str>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            id: "_a1",
            issuer: IDP,
            subject: "alice",
            audience: AUD,
            not_before: -60,
            not_on_or_after: 300,
            confirmation_until: 240,
            groups: vec!["analysts", "nurses"],
        }
    }
}

/// The assertion's XML; `sig` goes after its Issuer (the schema's place).
fn assertion(s: &Spec, sig: &str) -> String {
    let groups: String = s
        .groups
        .iter()
        .map(|g| format!("<saml:AttributeValue>{g}</saml:AttributeValue>"))
        .collect();
    format!(
        r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" IssueInstant="{now}" Version="2.0"><saml:Issuer>{issuer}</saml:Issuer>{sig}<saml:Subject><saml:NameID Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified">{subject}</saml:NameID><saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"><saml:SubjectConfirmationData NotOnOrAfter="{conf}"/></saml:SubjectConfirmation></saml:Subject><saml:Conditions NotBefore="{nb}" NotOnOrAfter="{noa}"><saml:AudienceRestriction><saml:Audience>{aud}</saml:Audience></saml:AudienceRestriction></saml:Conditions><saml:AttributeStatement><saml:Attribute Name="groups">{groups}</saml:Attribute><saml:Attribute Name="mail"><saml:AttributeValue>{subject}@example.org</saml:AttributeValue></saml:Attribute></saml:AttributeStatement></saml:Assertion>"#,
        id = s.id,
        now = at(0),
        issuer = s.issuer,
        subject = s.subject,
        conf = at(s.confirmation_until),
        nb = at(s.not_before),
        noa = at(s.not_on_or_after),
        aud = s.audience,
    )
}

fn sign(xml: &str, key: &Key) -> String {
    let signed = Crypto::sign_xml(xml, &key.private_der).unwrap();
    // Drop the XML declaration libxml adds, so the result can be embedded.
    match signed.strip_prefix("<?xml version=\"1.0\"?>") {
        Some(rest) => rest.trim().to_string(),
        None => signed,
    }
}

fn signed_assertion(s: &Spec, key: &Key) -> String {
    sign(&assertion(s, &sig_template(s.id)), key)
}

fn b64(xml: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(xml)
}

fn certs(key: &Key) -> Vec<CertificateDer> {
    vec![CertificateDer::from(key.cert_der.clone())]
}

fn check(xml: &str, key: &Key) -> Result<verify::VerifiedAssertion, SamlError> {
    verify(&b64(xml), &certs(key), &cfg(), now())
}

#[test]
fn a_signed_assertion_names_its_subject_and_groups() {
    let k = key();
    let v = check(&signed_assertion(&Spec::default(), &k), &k).unwrap();
    assert_eq!(v.principal.name, "alice");
    assert_eq!(v.principal.groups, vec!["analysts", "nurses"]);
    assert_eq!(v.principal.issuer.as_deref(), Some(IDP));
    assert_eq!(v.principal.kind, streamgate_crds::SubjectKind::User);
    // The bearer confirmation ends first: the session ends with it.
    assert_eq!(
        v.expires_at,
        u64::try_from(now().timestamp()).unwrap() + 240
    );
    assert_eq!(v.id, "_a1");
}

#[test]
fn base64url_without_padding_is_accepted_and_an_attribute_can_name_the_subject() {
    let k = key();
    let xml = signed_assertion(&Spec::default(), &k);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&xml);
    let cfg = SamlConfig {
        subject_attribute: Some("mail".into()),
        ..cfg()
    };
    let v = verify(&token, &certs(&k), &cfg, now()).unwrap();
    assert_eq!(v.principal.name, "alice@example.org");
}

#[test]
fn unsigned_and_foreign_signatures_are_refused() {
    let k = key();
    let unsigned = assertion(&Spec::default(), "");
    assert_eq!(check(&unsigned, &k), Err(SamlError::BadSignature));
    let stranger = key();
    let foreign = signed_assertion(&Spec::default(), &stranger);
    assert_eq!(check(&foreign, &k), Err(SamlError::BadSignature));
    // Rotation: the metadata lists old and new; either verifies.
    let both = [certs(&stranger), certs(&k)].concat();
    assert!(verify(&b64(&foreign), &both, &cfg(), now()).is_ok());
}

#[test]
fn a_tampered_signed_assertion_is_refused() {
    let k = key();
    let xml = signed_assertion(&Spec::default(), &k).replace(">alice<", ">mallory<");
    assert_eq!(check(&xml, &k), Err(SamlError::BadSignature));
}

#[test]
fn time_audience_and_issuer_are_checked() {
    let k = key();
    let cases = [
        (
            Spec {
                not_on_or_after: -31,
                ..Spec::default()
            },
            SamlError::Expired,
        ),
        (
            Spec {
                not_before: 31,
                ..Spec::default()
            },
            SamlError::NotYetValid,
        ),
        (
            Spec {
                confirmation_until: -31,
                ..Spec::default()
            },
            SamlError::ConfirmationExpired,
        ),
        (
            Spec {
                audience: "urn:someone-else",
                ..Spec::default()
            },
            SamlError::WrongAudience,
        ),
        (
            Spec {
                issuer: "https://evil.test/",
                ..Spec::default()
            },
            SamlError::WrongIssuer,
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(check(&signed_assertion(&spec, &k), &k), Err(want));
    }
    // Within the skew: accepted.
    let skewed = Spec {
        not_before: 20,
        not_on_or_after: -20,
        confirmation_until: -20,
        ..Spec::default()
    };
    assert!(check(&signed_assertion(&skewed, &k), &k).is_ok());
}

fn response(id: &str, inner: &str, sig: &str) -> String {
    format!(
        r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="{now}"><saml:Issuer>{IDP}</saml:Issuer>{sig}<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>{inner}</samlp:Response>"#,
        now = at(0)
    )
}

#[test]
fn a_signed_response_or_a_response_with_a_signed_assertion_is_accepted() {
    let k = key();
    let inner = assertion(&Spec::default(), "");
    let signed_response = sign(&response("_r1", &inner, &sig_template("_r1")), &k);
    assert_eq!(check(&signed_response, &k).unwrap().principal.name, "alice");
    let wrapped = response("_r2", &signed_assertion(&Spec::default(), &k), "");
    assert_eq!(check(&wrapped, &k).unwrap().principal.name, "alice");
}

/// XSW: the genuinely signed assertion stays intact (so its signature
/// verifies) and an unsigned one with another subject sits beside, around
/// or inside it.
#[test]
fn signature_wrapping_is_refused() {
    let k = key();
    let signed = signed_assertion(&Spec::default(), &k);
    let evil = |inner: &str| {
        assertion(
            &Spec {
                id: "_evil",
                subject: "mallory",
                groups: vec!["admins"],
                ..Spec::default()
            },
            inner,
        )
    };
    let wrapping = [
        // Beside it in a Response, before and after.
        response("_r", &format!("{}{signed}", evil("")), ""),
        response("_r", &format!("{signed}{}", evil("")), ""),
        // The signed one inside the evil one (Advice-like placement).
        evil(&format!("<saml:Advice>{signed}</saml:Advice>")),
        // The evil one inside the signed one's Signature/Object.
        signed.replace(
            "</ds:Signature>",
            &format!("<ds:Object>{}</ds:Object></ds:Signature>", evil("")),
        ),
    ];
    for xml in wrapping {
        let got = check(&xml, &k);
        assert!(matches!(got, Err(SamlError::Wrapping(_))), "{got:?}");
    }
    // A signed Response without an assertion, nested in an unsigned
    // Response carrying an evil assertion: one assertion, but not the signed one.
    let bare = sign(&response("_r1", "", &sig_template("_r1")), &k);
    let xml = response(
        "_r2",
        &format!("<samlp:Extensions>{bare}</samlp:Extensions>{}", evil("")),
        "",
    );
    let got = check(&xml, &k);
    assert!(matches!(got, Err(SamlError::Wrapping(_))), "{got:?}");
}

#[test]
fn dtds_and_garbage_are_refused_without_echoing_the_token() {
    let k = key();
    let dtd = format!(
        "<!DOCTYPE x [<!ENTITY e \"alice\">]>{}",
        signed_assertion(&Spec::default(), &k)
    );
    assert_eq!(
        check(&dtd, &k),
        Err(SamlError::Malformed("a DTD is not allowed"))
    );
    assert!(matches!(
        verify("%%%", &certs(&k), &cfg(), now()),
        Err(SamlError::Malformed(_))
    ));
    let err = check(&signed_assertion(&Spec::default(), &k), &key()).unwrap_err();
    assert!(!err.to_string().contains("alice"));
}

#[test]
fn metadata_lists_the_signing_certificates_of_the_named_entity() {
    let (a, b) = (key(), key());
    let cert = |k: &Key, usage: &str| {
        format!(
            r#"<md:KeyDescriptor {usage}><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#,
            base64::engine::general_purpose::STANDARD.encode(&k.cert_der)
        )
    };
    let xml = format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{IDP}"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{}{}{}</md:IDPSSODescriptor></md:EntityDescriptor>"#,
        cert(&a, r#"use="signing""#),
        cert(&b, ""),
        cert(&key(), r#"use="encryption""#),
    );
    let got = metadata::signing_certificates(&xml, IDP).unwrap();
    assert_eq!(
        got,
        vec![
            CertificateDer::from(a.cert_der.clone()),
            CertificateDer::from(b.cert_der.clone())
        ]
    );
    assert!(matches!(
        metadata::signing_certificates(&xml, "https://other/"),
        Err(SamlError::MetadataUnavailable(_))
    ));
}

#[tokio::test]
async fn one_time_use_refuses_a_replay_and_rotation_follows_the_metadata_file() {
    let (old, new) = (key(), key());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idp.xml");
    let metadata_of = |keys: &[&Key]| {
        let kds: String = keys
            .iter()
            .map(|k| {
                format!(
                    r#"<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#,
                    base64::engine::general_purpose::STANDARD.encode(&k.cert_der)
                )
            })
            .collect();
        format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{IDP}"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{kds}</md:IDPSSODescriptor></md:EntityDescriptor>"#
        )
    };
    std::fs::write(&path, metadata_of(&[&old, &new])).unwrap();
    let set = SamlSet::default().reconcile(vec![SamlConfig {
        one_time_use: true,
        metadata: MetadataSource::File(path.clone()),
        // The set reads the real clock and these assertions are dated 2030:
        // a skew of two centuries puts today inside their window.
        clock_skew: Duration::from_secs(200 * 24 * 3600 * 365),
        ..cfg()
    }]);
    let by_old = b64(&signed_assertion(
        &Spec {
            id: "_o1",
            ..Spec::default()
        },
        &old,
    ));
    let by_new = b64(&signed_assertion(
        &Spec {
            id: "_n1",
            ..Spec::default()
        },
        &new,
    ));
    assert!(set.validate(&by_old).await.is_ok());
    assert_eq!(set.validate(&by_old).await, Err(SamlError::Replayed));
    assert!(set.validate(&by_new).await.is_ok());
    // The old key leaves the metadata: its assertions are refused from then on.
    std::fs::write(&path, metadata_of(&[&new])).unwrap();
    let by_old2 = b64(&signed_assertion(
        &Spec {
            id: "_o2",
            ..Spec::default()
        },
        &old,
    ));
    assert_eq!(set.validate(&by_old2).await, Err(SamlError::BadSignature));
    let by_new2 = b64(&signed_assertion(
        &Spec {
            id: "_n2",
            ..Spec::default()
        },
        &new,
    ));
    assert!(set.validate(&by_new2).await.is_ok());
    // Inspected once, verified against the IdP the Issuer names.
    let inspected = verify::inspect(&by_new2).unwrap();
    assert!(verify_inspected(&inspected, &certs(&new), &cfg(), now()).is_ok());
}

/// A SAML user is a principal of the IdP the policy names, as an OIDC user
/// is of its issuer: Allow rules match only that IdP's users, the IdP counts
/// as a trusted issuer, and approval requests record it.
#[test]
fn saml_principals_flow_through_policy_like_oidc_ones() {
    use crate::policy::decide::{CompiledPolicy, PolicyDoc};
    use streamgate_crds::{Operation, StreamPolicySpec};
    let spec: StreamPolicySpec = serde_yaml::from_str(&format!(
        "identity: {{saml: {{issuer: \"{IDP}\", audience: \"{AUD}\", metadata: {{file: /m.xml}}}}}}\n\
         rules:\n  - {{name: r, subjects: [{{kind: Group, name: nurses}}], topics: [\"patient-*\"], operations: [Read]}}\n"
    ))
    .unwrap();
    let policy = CompiledPolicy::compile(
        vec![PolicyDoc {
            name: "p".into(),
            namespace: "clinical".into(),
            generation: None,
            spec,
        }],
        Vec::new(),
        Vec::new(),
        &std::collections::BTreeMap::new(),
    );
    let k = key();
    let mut principal = check(&signed_assertion(&Spec::default(), &k), &k)
        .unwrap()
        .principal;
    assert!(
        policy
            .decide(&principal, Operation::Read, "patient-a")
            .is_allow()
    );
    assert_eq!(
        policy.token_issuers().into_iter().collect::<Vec<_>>(),
        vec![IDP]
    );
    let requester = crate::approval::requester_oidc(&policy, &principal).unwrap();
    assert_eq!(
        (requester.issuer.as_str(), requester.username_claim.as_str()),
        (IDP, "NameID")
    );
    // The same name and groups from another issuer get nothing.
    principal.issuer = Some("https://other-idp/".into());
    assert!(
        !policy
            .decide(&principal, Operation::Read, "patient-a")
            .is_allow()
    );
}

/// Tokens are routed by shape: a JWT to the OIDC issuers, base64 XML to the
/// SAML IdPs; each is refused by its own rules.
#[tokio::test]
async fn verifiers_route_jwts_and_assertions() {
    use crate::identity::sasl::TokenVerifier;
    let k = key();
    let token = b64(&signed_assertion(&Spec::default(), &k));
    let none = Verifiers::default();
    // No SAML IdP configured: everything goes to OIDC, which has no issuer.
    assert_eq!(none.verify(&token).await, Err(JwtError::NoIssuer));
    let saml = Verifiers {
        oidc: IssuerSet::default(),
        saml: SamlSet::default().reconcile(vec![cfg()]),
    };
    assert_eq!(saml.verify("a.b.c").await, Err(JwtError::NoIssuer));
    // The configured metadata file does not exist: refused, saying why.
    assert!(matches!(
        saml.verify(&token).await,
        Err(JwtError::Saml(SamlError::MetadataUnavailable(_)))
    ));
    // An assertion of an IdP no policy trusts.
    let other = b64(&signed_assertion(
        &Spec {
            issuer: "https://elsewhere/",
            ..Spec::default()
        },
        &k,
    ));
    assert_eq!(
        saml.verify(&other).await,
        Err(JwtError::Saml(SamlError::WrongIssuer))
    );
}
