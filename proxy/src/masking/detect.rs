//! PHI detectors: find PHI inside free text and replace each finding in place
//! by a tag such as `[SSN]`.
//!
//! Each detector is a regular expression that finds candidates plus a
//! validity check that removes false positives:
//! - `SSN`: `ddd-dd-dddd` or `ddd dd dddd` (plain 9-digit runs are not taken:
//!   too many ordinary numbers look like that) with the SSA rules — area not
//!   000, 666 or 900–999; group not 00; serial not 0000. → `[SSN]`
//! - `Email`: `local@domain.tld`. → `[EMAIL]`
//! - `Phone`: NANP numbers — optional `+1`/`1`, area code and exchange
//!   starting 2–9, optional `()`, `-`, `.` or space separators. → `[PHONE]`
//! - `CreditCard`: 13–19 digits, optionally grouped by spaces or dashes,
//!   passing the Luhn check. → `[CARD]`
//! - `NPI`: 10 digits starting with 1 or 2 whose Luhn check over `80840` +
//!   the number passes (the CMS rule). → `[NPI]`
//! - `MRN`: the rule's `mrnPattern`. → `[MRN]`
//!
//! Overlapping findings: the earliest start wins, then the longest.
//!
//! The built-in patterns are ASCII-only (`[0-9]`, `(?-u:\b)`): Unicode
//! classes and word boundaries would push the regex engine off its fast
//! DFA paths on every value.
use std::borrow::Cow;

use regex::Regex;
use streamgate_crds::Detector;

/// Why detectors cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error("detector MRN needs spec.mrnPattern")]
    MissingMrnPattern,
    #[error("spec.mrnPattern is not a valid regular expression: {0}")]
    BadMrnPattern(#[source] regex::Error),
}

/// The tag that replaces a finding, also the audit counter key.
pub fn tag(d: Detector) -> &'static str {
    match d {
        Detector::SSN => "[SSN]",
        Detector::Email => "[EMAIL]",
        Detector::Phone => "[PHONE]",
        Detector::CreditCard => "[CARD]",
        Detector::NPI => "[NPI]",
        Detector::MRN => "[MRN]",
    }
}

/// A set of compiled detectors.
#[derive(Debug, Clone, Default)]
pub struct Detectors {
    list: Vec<(Detector, Regex)>,
}

fn builtin(pattern: &str) -> Regex {
    // The built-in patterns are constants covered by the tests below.
    #[allow(clippy::expect_used)]
    Regex::new(pattern).expect("built-in detector pattern compiles")
}

impl Detectors {
    /// Compiles `detectors` (duplicates ignored).
    pub fn compile(
        detectors: &[Detector],
        mrn_pattern: Option<&str>,
    ) -> Result<Self, DetectorError> {
        let mut list: Vec<(Detector, Regex)> = Vec::new();
        for &d in detectors {
            if list.iter().any(|(x, _)| *x == d) {
                continue;
            }
            let re = match d {
                Detector::SSN => builtin(r"(?-u:\b)[0-9]{3}[- ][0-9]{2}[- ][0-9]{4}(?-u:\b)"),
                Detector::Email => {
                    builtin(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
                }
                Detector::Phone => builtin(
                    r"(?:\+1[-. ]?|(?-u:\b)1[-. ])?(?:\([2-9][0-9]{2}\) ?|(?-u:\b)[2-9][0-9]{2}[-. ]?)[2-9][0-9]{2}[-. ]?[0-9]{4}(?-u:\b)",
                ),
                Detector::CreditCard => builtin(r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)"),
                Detector::NPI => builtin(r"(?-u:\b)[12][0-9]{9}(?-u:\b)"),
                Detector::MRN => {
                    let p = mrn_pattern.ok_or(DetectorError::MissingMrnPattern)?;
                    Regex::new(p).map_err(DetectorError::BadMrnPattern)?
                }
            };
            list.push((d, re));
        }
        Ok(Self { list })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Replaces every finding in `text`; `found` is called once per finding.
    /// Returns `Cow::Borrowed` when nothing was found.
    pub fn scan<'t>(&self, text: &'t str, mut found: impl FnMut(Detector)) -> Cow<'t, str> {
        // Prefilter: the numeric detectors need that many digits, Email an
        // `@`; most short strings are ruled out by one pass over the bytes.
        let (mut digits, mut at) = (0usize, false);
        for c in text.bytes() {
            digits += usize::from(c.is_ascii_digit());
            at |= c == b'@';
        }
        let mut hits: Vec<(usize, usize, Detector)> = Vec::new();
        for (d, re) in &self.list {
            let possible = match d {
                Detector::SSN => digits >= 9,
                Detector::Phone | Detector::NPI => digits >= 10,
                Detector::CreditCard => digits >= 13,
                Detector::Email => at,
                Detector::MRN => true,
            };
            if !possible {
                continue;
            }
            for m in re.find_iter(text) {
                if valid(*d, m.as_str()) {
                    hits.push((m.start(), m.end(), *d));
                }
            }
        }
        if hits.is_empty() {
            return Cow::Borrowed(text);
        }
        hits.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut out = String::with_capacity(text.len());
        let mut pos = 0;
        for (start, end, d) in hits {
            if start < pos {
                continue; // overlaps a finding already replaced
            }
            out.push_str(&text[pos..start]);
            out.push_str(tag(d));
            found(d);
            pos = end;
        }
        out.push_str(&text[pos..]);
        Cow::Owned(out)
    }
}

fn valid(d: Detector, m: &str) -> bool {
    match d {
        Detector::SSN => valid_ssn(m),
        Detector::CreditCard => {
            let digits: Vec<u8> = m
                .bytes()
                .filter(u8::is_ascii_digit)
                .map(|c| c - b'0')
                .collect();
            (13..=19).contains(&digits.len()) && luhn(&digits)
        }
        Detector::NPI => valid_npi(m),
        Detector::Email | Detector::Phone | Detector::MRN => true,
    }
}

/// SSA rules for a `ddd-dd-dddd` candidate.
pub fn valid_ssn(m: &str) -> bool {
    let digits: Vec<u32> = m
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|c| u32::from(c - b'0'))
        .collect();
    if digits.len() != 9 {
        return false;
    }
    let area = digits[0] * 100 + digits[1] * 10 + digits[2];
    let group = digits[3] * 10 + digits[4];
    let serial = digits[5..].iter().fold(0, |a, d| a * 10 + d);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// The Luhn check over `digits` (the last one is the check digit).
pub fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// An NPI: 10 digits, Luhn over the `80840` prefix plus the number.
pub fn valid_npi(m: &str) -> bool {
    if m.len() != 10 || !m.bytes().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let digits: Vec<u8> = b"80840"
        .iter()
        .chain(m.as_bytes())
        .map(|c| c - b'0')
        .collect();
    luhn(&digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Detectors {
        Detectors::compile(
            &[
                Detector::SSN,
                Detector::Email,
                Detector::Phone,
                Detector::CreditCard,
                Detector::NPI,
                Detector::MRN,
            ],
            Some(r"\bMRN-\d{8}\b"),
        )
        .unwrap()
    }

    fn scan(d: &Detectors, s: &str) -> (String, Vec<Detector>) {
        let mut found = Vec::new();
        let out = d.scan(s, |x| found.push(x)).into_owned();
        (out, found)
    }

    #[test]
    fn ssn_validity_rules() {
        for ok in ["838-39-8865", "042-89-4695", "123 45 6789", "899-99-9999"] {
            assert!(valid_ssn(ok), "{ok}");
        }
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "999-12-3456",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert!(!valid_ssn(bad), "{bad}");
        }
        let d = Detectors::compile(&[Detector::SSN], None).unwrap();
        assert_eq!(scan(&d, "SSN 838-39-8865.").0, "SSN [SSN].");
        assert_eq!(
            scan(&d, "bad 666-39-8865 and 123-00-4567").0,
            "bad 666-39-8865 and 123-00-4567"
        );
        // Part of a longer number is not an SSN.
        assert_eq!(scan(&d, "x1838-39-8865").0, "x1838-39-8865");
    }

    #[test]
    fn luhn_cards() {
        let d = Detectors::compile(&[Detector::CreditCard], None).unwrap();
        assert_eq!(scan(&d, "card 4708073826424685 ok").0, "card [CARD] ok");
        assert_eq!(scan(&d, "4111 1111 1111 1111").0, "[CARD]");
        assert_eq!(scan(&d, "4111-1111-1111-1111").0, "[CARD]");
        assert_eq!(scan(&d, "378282246310005").0, "[CARD]"); // Amex, 15 digits
        // Luhn fails: left alone.
        assert_eq!(scan(&d, "4708073826424686").0, "4708073826424686");
        // Too short.
        assert_eq!(scan(&d, "424242424242").0, "424242424242");
    }

    #[test]
    fn npi_luhn_with_prefix() {
        assert!(valid_npi("1702309729"));
        assert!(valid_npi("1234567893")); // the CMS worked example
        assert!(!valid_npi("1234567890"));
        assert!(!valid_npi("123456789"));
        let d = Detectors::compile(&[Detector::NPI], None).unwrap();
        assert_eq!(scan(&d, "npi 1729110902").0, "npi [NPI]");
        assert_eq!(scan(&d, "npi 1729110903").0, "npi 1729110903");
    }

    #[test]
    fn email_phone_mrn() {
        let d = all();
        let (out, found) = scan(
            &d,
            "James (DOB 1971-07-08, SSN 838-39-8865) called from 351-555-0121; mail james.silva0@example.org, MRN-35976135",
        );
        assert_eq!(
            out,
            "James (DOB 1971-07-08, SSN [SSN]) called from [PHONE]; mail [EMAIL], [MRN]"
        );
        assert_eq!(found.len(), 4);
        for phone in [
            "(351) 555-0121",
            "+1 351 555 0121",
            "351.555.0121",
            "3515550121",
            "1-351-555-0121",
        ] {
            assert_eq!(scan(&d, phone).0, "[PHONE]", "{phone}");
        }
        // Area code starting with 0 or 1 is not NANP.
        assert_eq!(scan(&d, "051-555-0121").0, "051-555-0121");
    }

    #[test]
    fn mrn_needs_a_valid_pattern() {
        assert!(matches!(
            Detectors::compile(&[Detector::MRN], None),
            Err(DetectorError::MissingMrnPattern)
        ));
        assert!(matches!(
            Detectors::compile(&[Detector::MRN], Some("(")),
            Err(DetectorError::BadMrnPattern(_))
        ));
    }

    #[test]
    fn nothing_found_borrows() {
        let d = all();
        assert!(matches!(
            d.scan("Essential hypertension", |_| {}),
            Cow::Borrowed(_)
        ));
    }
}
