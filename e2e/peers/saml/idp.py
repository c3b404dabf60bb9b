#!/usr/bin/env python3
"""A real SAML 2.0 IdP for the end-to-end tests: pysaml2's Server, signing
with the xmlsec1 CLI, from its own keys and metadata.

    idp.py keys DIR NAME...                 a key pair + self-signed cert per NAME
    idp.py metadata DIR OUT ENTITY CERT...  IdP metadata listing those certs (rotation)
    idp.py tokens DIR ENTITY SP USER GROUPS KEY  JSON {case: base64 token} on stdout,
                                             signed with KEY (the "other key" case: `stranger`)

Cases: the valid ones (a signed Assertion; a Response with a signed
Assertion; a signed Response), and every way to be refused: unsigned,
signed by another key, expired, not yet valid, wrong audience, wrong
issuer, SHA-1, and the eight XML signature-wrapping attacks of the literature
(Somorovsky et al., "On Breaking SAML", 2012): XSW1–XSW8, each built from a
genuinely signed document plus an unsigned assertion for another subject.
The wrapped documents are edited as text so the signed bytes stay exactly
as the IdP signed them.
"""
import base64
import warnings
import datetime
import json
import os
import re
import shutil
import sys

warnings.simplefilter("ignore")  # pysaml2's deprecation noise on stderr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2 import assertion as saml_assertion
from saml2.config import IdPConfig
from saml2.saml import NAMEID_FORMAT_UNSPECIFIED, NameID
from saml2.server import Server

ALGORITHMS = {
    "sha256": ("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", "http://www.w3.org/2001/04/xmlenc#sha256"),
    "sha1": ("http://www.w3.org/2000/09/xmldsig#rsa-sha1", "http://www.w3.org/2000/09/xmldsig#sha1"),
}
NS_MD = "urn:oasis:names:tc:SAML:2.0:metadata"
NS_DS = "http://www.w3.org/2000/09/xmldsig#"


def keys(d, names):
    os.makedirs(d, exist_ok=True)
    for name in names:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"streamgate test idp {name}")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        with open(os.path.join(d, f"{name}.key"), "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                )
            )
        with open(os.path.join(d, f"{name}.crt"), "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))


def cert_b64(d, name):
    pem = open(os.path.join(d, f"{name}.crt")).read()
    return "".join(line for line in pem.splitlines() if "-----" not in line)


def metadata(d, out, entity, cert_names):
    kds = "".join(
        f'<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>'
        f"{cert_b64(d, n)}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
        for n in cert_names
    )
    xml = (
        f'<?xml version="1.0"?>\n<md:EntityDescriptor xmlns:md="{NS_MD}" xmlns:ds="{NS_DS}" entityID="{entity}">'
        f'<md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{kds}'
        f'<md:SingleSignOnService Binding="{BINDING_HTTP_REDIRECT}" Location="https://idp.invalid/sso"/>'
        f"</md:IDPSSODescriptor></md:EntityDescriptor>\n"
    )
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write(xml)
    os.replace(tmp, out)  # atomic: the gate never reads half a file


def sp_metadata(d, sp):
    path = os.path.join(d, f"sp-{abs(hash(sp))}.xml")
    with open(path, "w") as f:
        f.write(
            f'<?xml version="1.0"?>\n<md:EntityDescriptor xmlns:md="{NS_MD}" entityID="{sp}">'
            f'<md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
            f'<md:AssertionConsumerService Binding="{BINDING_HTTP_POST}" Location="https://gate.invalid/acs" index="0"/>'
            f"</md:SPSSODescriptor></md:EntityDescriptor>\n"
        )
    return path


def server(d, entity, key, sps, lifetime_minutes=15, digest="sha256"):
    xmlsec = os.environ.get("STREAMGATE_XMLSEC1") or shutil.which("xmlsec1")
    conf = IdPConfig()
    conf.load(
        {
            "entityid": entity,
            "service": {
                "idp": {
                    "endpoints": {
                        "single_sign_on_service": [("https://idp.invalid/sso", BINDING_HTTP_REDIRECT)]
                    },
                    "policy": {"default": {"lifetime": {"minutes": lifetime_minutes}}},
                    "name_id_format": [NAMEID_FORMAT_UNSPECIFIED],
                    # pysaml2 defaults to SHA-1, which the gate refuses.
                    "signing_algorithm": ALGORITHMS[digest][0],
                    "digest_algorithm": ALGORITHMS[digest][1],
                }
            },
            "key_file": os.path.join(d, f"{key}.key"),
            "cert_file": os.path.join(d, f"{key}.crt"),
            "xmlsec_binary": xmlsec,
            "metadata": {"local": [sp_metadata(d, sp) for sp in sps]},
        }
    )
    return Server(config=conf)


def response(srv, sp, user, groups, sign_assertion=True, sign_response=False):
    resp = srv.create_authn_response(
        identity={"groups": groups},
        in_response_to=None,
        destination="https://gate.invalid/acs",
        sp_entity_id=sp,
        name_id=NameID(format=NAMEID_FORMAT_UNSPECIFIED, text=user),
        userid=user,
        authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:Password"},
        sign_assertion=sign_assertion,
        sign_response=sign_response,
    )
    return str(resp)


ASSERTION = re.compile(r"<(?P<p>[\w.-]+:)?Assertion[\s>].*?</(?P=p)?Assertion>", re.S)
SIGNATURE = re.compile(r"<(?P<p>[\w.-]+:)?Signature[\s>].*?</(?P=p)?Signature>", re.S)
ROOT_OPEN = re.compile(r"<(?P<p>[\w.-]+:)?Response\b[^>]*>", re.S)
XMLNS = re.compile(r'\sxmlns(:[\w.-]+)?="[^"]*"')


def strip_decl(xml):
    return re.sub(r"^<\?xml[^>]*\?>\s*", "", xml)


def parts(resp):
    """Root start tag, root end tag, the assertion text and its namespace declarations."""
    resp = strip_decl(resp)
    open_tag = ROOT_OPEN.search(resp).group(0)
    prefix = ROOT_OPEN.search(resp).group("p") or ""
    close_tag = f"</{prefix}Response>"
    a = ASSERTION.search(resp).group(0)
    xmlns = " ".join(m.group(0).strip() for m in XMLNS.finditer(open_tag))
    return resp, open_tag, close_tag, a, xmlns


def standalone(assertion_xml, xmlns):
    """The assertion as its own document: the root's namespace declarations
    copied onto it (exclusive c14n ignores unused ones, so the signature holds)."""
    m = re.match(r"<([\w.-]+:)?Assertion", assertion_xml)
    head = m.group(0)
    existing = set(x.group(0).strip() for x in XMLNS.finditer(assertion_xml.split(">", 1)[0]))
    extra = " ".join(x for x in xmlns.split(" ") if x and x not in existing)
    return head + (" " + extra if extra else "") + assertion_xml[len(head):]


def with_id(open_tag, new_id):
    return re.sub(r'\sID="[^"]*"', f' ID="{new_id}"', open_tag, count=1)


def b64(xml):
    return base64.b64encode(xml.encode()).decode()


def tokens(d, entity, sp, user, groups, key):
    groups = [g for g in groups.split(",") if g]
    main = server(d, entity, key, [sp, "urn:streamgate:someone-else"])
    out = {}

    # Valid: a signed Assertion alone; a Response with a signed Assertion; a signed Response.
    resp, open_tag, close_tag, signed_a, xmlns = parts(response(main, sp, user, groups))
    out["valid_assertion"] = b64(standalone(signed_a, xmlns))
    out["valid_response"] = b64(resp)
    signed_resp = strip_decl(response(main, sp, user, groups, sign_assertion=False, sign_response=True))
    out["valid_signed_response"] = b64(signed_resp)

    # Refused.
    _, _, _, unsigned_a, _ = parts(response(main, sp, user, groups, sign_assertion=False))
    out["unsigned"] = b64(standalone(unsigned_a, xmlns))
    other = server(d, entity, "stranger", [sp])
    _, _, _, a, ns = parts(response(other, sp, user, groups))
    out["other_key"] = b64(standalone(a, ns))
    expired = server(d, entity, key, [sp], lifetime_minutes=-10)
    _, _, _, a, ns = parts(response(expired, sp, user, groups))
    out["expired"] = b64(standalone(a, ns))
    # Not yet valid: the IdP's clock an hour ahead (NotBefore in the future).
    later = server(d, entity, key, [sp], lifetime_minutes=120)
    real_instant = saml_assertion.instant
    saml_assertion.instant = lambda *a, **k: (
        datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        _, _, _, a, ns = parts(response(later, sp, user, groups))
    finally:
        saml_assertion.instant = real_instant
    out["not_yet_valid"] = b64(standalone(a, ns))
    sha1 = server(d, entity, key, [sp], digest="sha1")
    _, _, _, a, ns = parts(response(sha1, sp, user, groups))
    out["sha1"] = b64(standalone(a, ns))
    _, _, _, a, ns = parts(response(main, "urn:streamgate:someone-else", user, groups))
    out["wrong_audience"] = b64(standalone(a, ns))
    impostor = server(d, entity.rstrip("/") + "/impostor", key, [sp])
    _, _, _, a, ns = parts(response(impostor, sp, user, groups))
    out["wrong_issuer"] = b64(standalone(a, ns))

    # Signature wrapping. The evil assertion: unsigned, another subject, admin groups.
    _, _, _, evil, _ = parts(response(main, sp, "mallory", ["admins"] + groups, sign_assertion=False))
    evil = re.sub(r'\sID="[^"]*"', ' ID="_evil_assertion"', evil, count=1)
    sig_a = SIGNATURE.search(signed_a).group(0)
    a_nosig = signed_a.replace(sig_a, "")
    sig_r = SIGNATURE.search(signed_resp[len(ROOT_OPEN.search(signed_resp).group(0)):]).group(0)
    r_open = ROOT_OPEN.search(signed_resp).group(0)
    r_body = signed_resp[len(r_open):]
    r_body_nosig = r_body.replace(sig_r, "", 1)
    r_body_evil = ASSERTION.sub(lambda _: evil, r_body_nosig, count=1)
    evil_open = with_id(r_open, "_evil_response")
    # XSW1: evil Response root; the original signed Response inside its (copied) Signature.
    out["xsw1"] = b64(evil_open + sig_holding(sig_r, signed_resp) + r_body_evil)
    # XSW2: as XSW1, the original Response detached beside the Signature.
    out["xsw2"] = b64(evil_open + sig_r + signed_resp + r_body_evil)
    # XSW3: the evil assertion before the signed one, siblings in the Response.
    out["xsw3"] = b64(open_tag + evil + signed_a + close_tag)
    # XSW4: the signed assertion inside the evil one.
    out["xsw4"] = b64(open_tag + insert_child(evil, signed_a) + close_tag)
    # XSW5: the signature moved into the evil assertion; the signed one (unsigned now) beside it.
    out["xsw5"] = b64(open_tag + insert_after_issuer(evil, sig_a) + a_nosig + close_tag)
    # XSW6: the evil assertion holds the copied signature, whose Object holds
    # the original signed assertion.
    out["xsw6"] = b64(open_tag + insert_after_issuer(evil, sig_holding(sig_a, signed_a)) + close_tag)
    # XSW7: the signed assertion hidden in an Extensions element; the evil one used.
    ext_prefix = ROOT_OPEN.search(open_tag).group("p") or ""
    out["xsw7"] = b64(
        open_tag + f"<{ext_prefix}Extensions>{signed_a}</{ext_prefix}Extensions>" + evil + close_tag
    )
    # XSW8: as XSW6 with the original assertion's own signature removed.
    out["xsw8"] = b64(open_tag + insert_after_issuer(evil, sig_holding(sig_a, a_nosig)) + close_tag)
    print(json.dumps(out))


ISSUER_END = re.compile(r"</([\w.-]+:)?Issuer>")


def insert_after_issuer(assertion_xml, fragment):
    m = ISSUER_END.search(assertion_xml)
    return assertion_xml[: m.end()] + fragment + assertion_xml[m.end():]


def sig_holding(sig, inner):
    """The Signature `sig` with `inner` in a ds:Object as its last child."""
    end = sig.rfind("</")
    return sig[:end] + f'<ds:Object xmlns:ds="{NS_DS}">{inner}</ds:Object>' + sig[end:]


def insert_child(parent_xml, child):
    """`child` as the last child of the element `parent_xml`."""
    end = parent_xml.rfind("</")
    return parent_xml[:end] + child + parent_xml[end:]


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "keys":
        keys(argv[2], argv[3:])
    elif cmd == "metadata":
        metadata(argv[2], argv[3], argv[4], argv[5:])
    elif cmd == "tokens":
        tokens(argv[2], argv[3], argv[4], argv[5], argv[6], argv[7])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
