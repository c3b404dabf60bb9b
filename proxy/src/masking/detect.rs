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
//! A 9-digit SSN without separators is taken only in context: after an SSN
//! keyword in the same text (`SSN: 838398865`, `social security number
//! 838398865`), or anywhere in a JSON value whose member name says SSN
//! (`{"ssn": 838398865}`, `{"patientSSN": "838398865"}`; see [`Named`] and
//! [`Detectors::scan_in`]).
//!
//! JSON numbers ([`Detectors::scan_number`]) are PHI only where the member
//! name says which kind (`{"phone": 3515550121}`, `{"ssn": 838398865}`,
//! `{"cardNumber": 4708073826424685}`, `{"npi": 1702309729}`, `{"mrn":
//! 35976135}`), then checked by that detector's pattern and rules: bare
//! numbers are mostly ids, counts and timestamps, and one in ten 13-digit
//! millisecond timestamps passes the Luhn check.
//!
//! Overlapping findings: the earliest start wins, then the longest.
//!
//! Non-ASCII text: the built-in patterns are ASCII (`[0-9]`, `(?-u:\b)`):
//! Unicode digit classes and word boundaries would push the regex engine off
//! its fast DFA paths on every value. Instead a text that is not all ASCII
//! is scanned through a folded copy ([`fold`]) in which every Unicode
//! decimal digit (full-width `８`, Arabic-Indic `٨`, Devanagari `८`, …) is
//! its ASCII digit, the full-width ASCII forms (`－`, `＠`, `（`) are ASCII,
//! Unicode dashes are `-` and spaces ` `, and zero-width characters are
//! gone; findings are replaced in the original text. Letters with accents
//! and other scripts stay as they are (not word characters to `\b`, so
//! `José838-39-8865` is found). Email local parts and domains take Unicode
//! letters (`josé@bücher.de`).
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
    /// With `SSN`: bare 9-digit SSNs after a keyword, and any 9-digit run
    /// (for values named SSN).
    ssn_context: Option<SsnContext>,
}

#[derive(Debug, Clone)]
struct SsnContext {
    /// Group 1: the 9 digits after an SSN keyword.
    after_keyword: Regex,
    nine_digits: Regex,
}

/// Which detectors a JSON member name points at: its words (split at
/// non-alphanumerics, lower→upper case changes and letter/digit changes,
/// lowercased) say SSN (`ssn`, `socialSecurity…`), Phone (`phone`, `tel`,
/// `telephone`, `mobile`, `cell`, `fax`), CreditCard (`card`, `pan`, `cc`,
/// `creditCard…`), NPI (`npi`) or MRN (`mrn`, `medicalRecord…`).
/// `patientSSN`, `ssn_number`, `SocialSecurityNo`, `homePhone`,
/// `cardNumber` do; `className`, `timestamp`, `id` say nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Named(u8);

impl Named {
    fn bit(d: Detector) -> u8 {
        match d {
            Detector::SSN => 1,
            Detector::Email => 2,
            Detector::Phone => 4,
            Detector::CreditCard => 8,
            Detector::NPI => 16,
            Detector::MRN => 32,
        }
    }

    pub fn of(key: &str) -> Self {
        let mut words: Vec<String> = Vec::new();
        let mut word = String::new();
        let mut prev: Option<char> = None;
        for c in key.chars() {
            if !c.is_alphanumeric() {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                prev = None;
                continue;
            }
            let split = prev.is_some_and(|p| {
                (p.is_lowercase() && c.is_uppercase()) || (p.is_numeric() != c.is_numeric())
            });
            if split && !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            word.extend(c.to_lowercase());
            prev = Some(c);
        }
        if !word.is_empty() {
            words.push(word);
        }
        let all = words.concat();
        let has = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str()));
        let mut bits = 0;
        let mut add = |d, yes: bool| {
            if yes {
                bits |= Self::bit(d);
            }
        };
        add(
            Detector::SSN,
            has(&["ssn", "ssns"]) || all.contains("socialsecurity"),
        );
        add(
            Detector::Phone,
            has(&[
                "phone",
                "phones",
                "tel",
                "telephone",
                "mobile",
                "cell",
                "cellphone",
                "fax",
            ]) || all.contains("phonenumber"),
        );
        add(
            Detector::CreditCard,
            has(&["card", "cards", "pan", "cc", "ccn"]) || all.contains("creditcard"),
        );
        add(Detector::NPI, has(&["npi"]));
        add(
            Detector::MRN,
            has(&["mrn", "mrns"]) || all.contains("medicalrecord"),
        );
        Self(bits)
    }

    /// Does the name point at `d`?
    pub fn has(self, d: Detector) -> bool {
        self.0 & Self::bit(d) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The first code point of every run of ten Unicode decimal digits (`Nd`,
/// 0–9 in order) outside ASCII, ascending; the `fold` tests check each run
/// and that every `\p{Nd}` character the regex crate knows is covered.
const DIGIT_ZEROS: &[u32] = &[
    0x660, 0x6f0, 0x7c0, 0x966, 0x9e6, 0xa66, 0xae6, 0xb66, 0xbe6, 0xc66, 0xce6, 0xd66, 0xde6,
    0xe50, 0xed0, 0xf20, 0x1040, 0x1090, 0x17e0, 0x1810, 0x1946, 0x19d0, 0x1a80, 0x1a90, 0x1b50,
    0x1bb0, 0x1c40, 0x1c50, 0xa620, 0xa8d0, 0xa900, 0xa9d0, 0xa9f0, 0xaa50, 0xabf0, 0xff10,
    0x104a0, 0x10d30, 0x10d40, 0x11066, 0x110f0, 0x11136, 0x111d0, 0x112f0, 0x11450, 0x114d0,
    0x11650, 0x116c0, 0x116d0, 0x116da, 0x11730, 0x118e0, 0x11950, 0x11bf0, 0x11c50, 0x11d50,
    0x11da0, 0x11f50, 0x16130, 0x16a60, 0x16ac0, 0x16b50, 0x16d70, 0x1ccf0, 0x1d7ce, 0x1d7d8,
    0x1d7e2, 0x1d7ec, 0x1d7f6, 0x1e140, 0x1e2f0, 0x1e4f0, 0x1e5f1, 0x1e950, 0x1fbf0,
];

/// The value of a non-ASCII decimal digit.
fn unicode_digit(c: char) -> Option<u8> {
    let u = c as u32;
    let run = DIGIT_ZEROS.partition_point(|&z| z <= u).checked_sub(1)?;
    let value = u - DIGIT_ZEROS[run];
    // < 10, so the cast keeps it.
    (value < 10).then_some(value as u8)
}

/// What [`fold`] makes of one character.
enum Folded {
    Keep,
    Ascii(u8),
    Drop,
}

fn fold_char(c: char) -> Folded {
    let u = c as u32;
    if u < 0x80 {
        return Folded::Keep;
    }
    if let Some(d) = unicode_digit(c) {
        return Folded::Ascii(b'0' + d);
    }
    match u {
        // Full-width `!`..`~` (digits, letters, `－`, `＠`, `．`, `（`, `）`, `＋`).
        0xFF01..=0xFF5E => Folded::Ascii((u - 0xFEE0) as u8),
        // Hyphens and dashes, the minus sign, small and full-width hyphen-minus.
        0x2010..=0x2015 | 0x2212 | 0xFE58 | 0xFE63 => Folded::Ascii(b'-'),
        // No-break, typographic and ideographic spaces.
        0xA0 | 0x2000..=0x200A | 0x202F | 0x205F | 0x3000 => Folded::Ascii(b' '),
        // Soft hyphen, zero-width space/joiners, word joiner, BOM: invisible,
        // and able to split a number so no pattern sees it.
        0xAD | 0x200B..=0x200D | 0x2060 | 0xFEFF => Folded::Drop,
        _ => Folded::Keep,
    }
}

/// A folded copy of a non-ASCII text and, per byte of it, the byte range of
/// the original character it came from.
struct Fold {
    text: String,
    origin: Vec<(usize, usize)>,
}

/// Folds `text` for scanning (see the module doc); `None` when nothing
/// needs folding.
fn fold(text: &str) -> Option<Fold> {
    let mut out = String::with_capacity(text.len());
    let mut origin = Vec::with_capacity(text.len());
    let mut changed = false;
    for (at, c) in text.char_indices() {
        let span = (at, at + c.len_utf8());
        match fold_char(c) {
            Folded::Keep => {
                out.push(c);
                origin.extend(std::iter::repeat_n(span, c.len_utf8()));
            }
            Folded::Ascii(a) => {
                out.push(char::from(a));
                origin.push(span);
                changed = true;
            }
            Folded::Drop => changed = true,
        }
    }
    changed.then_some(Fold { text: out, origin })
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
                // Unicode letters and marks in the local part and the domain
                // (internationalised addresses); matched only where an `@` is.
                Detector::Email => builtin(
                    r"[\p{L}\p{M}0-9._%+\-]+@[\p{L}\p{M}0-9\-]+(?:\.[\p{L}\p{M}0-9\-]+)*\.[\p{L}\p{M}]{2,}",
                ),
                // `(NPA) NXX-XXXX`, or NPA-NXX-XXXX after `+1`, `1` or a word
                // boundary, separators optional (E.164 `+13515550121` too).
                Detector::Phone => builtin(
                    r"(?:(?:\+1[-. ]?|(?-u:\b)1[-. ]?)?\([2-9][0-9]{2}\) ?|(?:\+1[-. ]?|(?-u:\b)1[-. ]?|(?-u:\b))[2-9][0-9]{2}[-. ]?)[2-9][0-9]{2}[-. ]?[0-9]{4}(?-u:\b)",
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
        let ssn_context = list
            .iter()
            .any(|(d, _)| *d == Detector::SSN)
            .then(|| SsnContext {
                after_keyword: builtin(
                    r"(?-u:\b)(?i:ssn|social[ _-]?security(?:[ _-]?(?:number|num|no))?)[^0-9A-Za-z]{0,4}([0-9]{9})(?-u:\b)",
                ),
                nine_digits: builtin(r"(?-u:\b)[0-9]{9}(?-u:\b)"),
            });
        Ok(Self { list, ssn_context })
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Replaces every finding in `text`; `found` is called once per finding.
    /// Returns `Cow::Borrowed` when nothing was found.
    pub fn scan<'t>(&self, text: &'t str, found: impl FnMut(Detector)) -> Cow<'t, str> {
        self.scan_in(text, Named::default(), found)
    }

    /// [`Detectors::scan`] for a string value under a member `named` so:
    /// where the name says SSN, a 9-digit run without separators that passes
    /// the SSA rules is an SSN too.
    pub fn scan_in<'t>(
        &self,
        text: &'t str,
        named: Named,
        found: impl FnMut(Detector),
    ) -> Cow<'t, str> {
        self.run(text, None, named.has(Detector::SSN), found)
    }

    /// A JSON number token under a member `named` so: only the detectors
    /// the name points at look at it (see the module doc).
    pub fn scan_number<'t>(
        &self,
        text: &'t str,
        named: Named,
        found: impl FnMut(Detector),
    ) -> Cow<'t, str> {
        if named.is_empty() {
            return Cow::Borrowed(text);
        }
        self.run(text, Some(named), named.has(Detector::SSN), found)
    }

    /// The scan: every detector, or `only` those named; `ssn_field` adds
    /// bare 9-digit SSNs.
    fn run<'t>(
        &self,
        text: &'t str,
        only: Option<Named>,
        ssn_field: bool,
        mut found: impl FnMut(Detector),
    ) -> Cow<'t, str> {
        if self.list.is_empty() {
            return Cow::Borrowed(text);
        }
        let folded = if text.is_ascii() { None } else { fold(text) };
        let hay = folded.as_ref().map_or(text, |f| f.text.as_str());
        // Prefilter: the numeric detectors need that many digits, Email an
        // `@`; most short strings are ruled out by one pass over the bytes.
        let (mut digits, mut at) = (0usize, false);
        for c in hay.bytes() {
            digits += usize::from(c.is_ascii_digit());
            at |= c == b'@';
        }
        let mut hits: Vec<(usize, usize, Detector)> = Vec::new();
        for (d, re) in &self.list {
            if only.is_some_and(|n| !n.has(*d)) {
                continue;
            }
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
            for m in re.find_iter(hay) {
                if valid(*d, m.as_str()) {
                    hits.push((m.start(), m.end(), *d));
                }
            }
        }
        if let Some(ctx) = self
            .ssn_context
            .as_ref()
            .filter(|_| digits >= 9 && only.is_none_or(|n| n.has(Detector::SSN)))
        {
            for m in ctx
                .after_keyword
                .captures_iter(hay)
                .filter_map(|c| c.get(1))
            {
                if valid_ssn(m.as_str()) {
                    hits.push((m.start(), m.end(), Detector::SSN));
                }
            }
            if ssn_field {
                for m in ctx.nine_digits.find_iter(hay) {
                    if valid_ssn(m.as_str()) {
                        hits.push((m.start(), m.end(), Detector::SSN));
                    }
                }
            }
        }
        if hits.is_empty() {
            return Cow::Borrowed(text);
        }
        if let Some(f) = &folded {
            // Back to the original text: from the first folded byte's
            // character to the last one's (a match never ends inside a
            // character: folded characters are ASCII).
            for h in &mut hits {
                h.0 = f.origin[h.0].0;
                h.1 = f.origin[h.1 - 1].1;
            }
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
    fn every_unicode_decimal_digit_folds_to_its_value() {
        let nd = Regex::new(r"^\p{Nd}$").unwrap();
        for &zero in DIGIT_ZEROS {
            for v in 0..10u32 {
                let c = char::from_u32(zero + v).unwrap();
                assert!(nd.is_match(c.encode_utf8(&mut [0; 4])), "{:x}", zero + v);
                assert_eq!(unicode_digit(c), Some(v as u8), "{:x}", zero + v);
            }
        }
        // Every non-ASCII digit the regex crate's Unicode tables know.
        let all: String = (0x80..=0x10FFFFu32).filter_map(char::from_u32).collect();
        let missing: Vec<String> = Regex::new(r"\p{Nd}")
            .unwrap()
            .find_iter(&all)
            .filter_map(|m| m.as_str().chars().next())
            .filter(|&c| unicode_digit(c).is_none())
            .map(|c| format!("{:x}", c as u32))
            .collect();
        assert!(missing.is_empty(), "digits not folded: {missing:?}");
        assert_eq!(unicode_digit('a'), None);
        assert_eq!(unicode_digit('\u{65f}'), None);
    }

    #[test]
    fn non_ascii_text_is_scanned_and_kept() {
        let d = all();
        for (text, want) in [
            // Full-width digits and hyphens, keyword and colon.
            ("ＳＳＮ：８３８－３９－８８６５。", "ＳＳＮ：[SSN]。"),
            // Accented names around it, an en dash, Arabic-Indic digits.
            (
                "Séverine Müller (née 838–39–8865) à Zürich",
                "Séverine Müller (née [SSN]) à Zürich",
            ),
            ("رقم ٨٣٨-٣٩-٨٨٦٥ هنا", "رقم [SSN] هنا"),
            ("José838-39-8865", "José[SSN]"),
            // No-break spaces and a zero-width space inside the number.
            ("SSN 838\u{a0}39\u{a0}88\u{200b}65.", "SSN [SSN]."),
            // Phones in full-width and with a no-break space.
            ("Tél （３５１） ５５５－０１２１", "Tél [PHONE]"),
            ("電話 351\u{a0}555\u{a0}0121 です", "電話 [PHONE] です"),
            // Internationalised addresses.
            ("écrire à josé.núñez@bücher.de svp", "écrire à [EMAIL] svp"),
            (
                "ｍａｉｌ： ｊａｍｅｓ＠ｅｘａｍｐｌｅ．ｏｒｇ",
                "ｍａｉｌ： [EMAIL]",
            ),
            // A card in Devanagari digits.
            ("कार्ड ४७०८०७३८२६४२४६८५", "कार्ड [CARD]"),
        ] {
            assert_eq!(scan(&d, text).0, want, "{text}");
        }
        // Non-ASCII text without PHI is not copied.
        assert!(matches!(
            d.scan("Zürich, 12 Straße", |_| {}),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn bare_nine_digit_ssns_need_context() {
        let d = Detectors::compile(&[Detector::SSN], None).unwrap();
        assert_eq!(scan(&d, "SSN: 838398865").0, "SSN: [SSN]");
        assert_eq!(
            scan(&d, "social security number 838398865.").0,
            "social security number [SSN]."
        );
        assert_eq!(scan(&d, "ＳＳＮ ８３８３９８８６５").0, "ＳＳＮ [SSN]");
        // Without a keyword a 9-digit number is not an SSN …
        assert_eq!(scan(&d, "order 838398865").0, "order 838398865");
        assert_eq!(scan(&d, "lessn 838398865").0, "lessn 838398865");
        // … unless the value is named one; the SSA rules still apply.
        let ssn = Named::of("ssn");
        let mut found = Vec::new();
        let got = d.scan_in("838398865", ssn, |x| found.push(x));
        assert_eq!(got, "[SSN]");
        assert_eq!(found, vec![Detector::SSN]);
        assert_eq!(d.scan_in("000398865", ssn, |_| {}), "000398865");
        assert_eq!(d.scan_in("8383988650", ssn, |_| {}), "8383988650");
    }

    #[test]
    fn numbers_are_scanned_by_what_their_name_says() {
        let d = all();
        let number = |key: &str, n: &str| d.scan_number(n, Named::of(key), |_| {}).into_owned();
        assert_eq!(number("ssn", "838398865"), "[SSN]");
        assert_eq!(number("homePhone", "3515550121"), "[PHONE]");
        assert_eq!(number("phone", "13515550121"), "[PHONE]");
        assert_eq!(number("cardNumber", "4708073826424685"), "[CARD]");
        assert_eq!(number("npi", "1702309729"), "[NPI]");
        // A name says one kind: an SSN-named number is not read as a phone.
        assert_eq!(number("ssn", "3515550121"), "3515550121");
        // Unnamed numbers are ids, counts, timestamps (this one passes Luhn).
        assert_eq!(number("timestamp", "1764220000004"), "1764220000004");
        assert_eq!(number("id", "838398865"), "838398865");
        assert!(matches!(
            d.scan_number("3515550121", Named::default(), |_| {}),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn member_names_that_say_ssn() {
        for yes in [
            "ssn",
            "SSN",
            "patientSSN",
            "patient_ssn",
            "ssnNumber",
            "ssns",
            "SocialSecurityNo",
            "social_security_number",
            "socialsecurity",
        ] {
            assert!(Named::of(yes).has(Detector::SSN), "{yes}");
        }
        for no in ["className", "lessness", "id", "assn", "social", "security"] {
            assert!(!Named::of(no).has(Detector::SSN), "{no}");
        }
        for (key, d) in [
            ("phone", Detector::Phone),
            ("homePhone", Detector::Phone),
            ("phoneNumber", Detector::Phone),
            ("mobile_no", Detector::Phone),
            ("cardNumber", Detector::CreditCard),
            ("creditCardNo", Detector::CreditCard),
            ("cc_number", Detector::CreditCard),
            ("providerNPI", Detector::NPI),
            ("mrn", Detector::MRN),
            ("medicalRecordNumber", Detector::MRN),
        ] {
            assert!(Named::of(key).has(d), "{key}");
        }
        for no in [
            "timestamp",
            "id",
            "count",
            "telemetry",
            "scanned",
            "capacity",
        ] {
            assert!(Named::of(no).is_empty(), "{no}");
        }
    }

    #[test]
    fn e164_and_prefixed_phones() {
        let d = Detectors::compile(&[Detector::Phone], None).unwrap();
        for phone in [
            "+13515550121",
            "13515550121",
            "+1 (351) 555-0121",
            "1 (351) 555-0121",
        ] {
            assert_eq!(scan(&d, phone).0, "[PHONE]", "{phone}");
        }
        assert_eq!(scan(&d, "x3515550121").0, "x3515550121");
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
