//! A streaming JSON rewriter: validates the document and copies it through
//! byte for byte, except the spans it masks (masked fields, removed members,
//! strings and numbers in which a detector found PHI).
//!
//! Detectors scan every string and member name, and numbers where the
//! member name says what they hold (`{"phone": 3515550121}` becomes
//! `{"phone":"[PHONE]"}`: a finding is always written as a string; see
//! [`Named`]). A string or number under a member whose name says SSN is an
//! SSN also as 9 bare digits (`{"ssn": 838398865}`).
//!
//! Why not `serde_json::Value`: a round trip through `Value` reorders keys
//! (no `preserve_order`), turns big integers into floats and re-spaces the
//! document; here every byte that is not PHI reaches the reader unchanged,
//! and a record without PHI is not copied at all. With field rules only it
//! runs about twice as fast as a `Value` round trip (benches/masking.rs).
use std::borrow::Cow;

use streamgate_crds::MaskStrategy;

use super::detect::{Detectors, Named};
use super::path::{FieldPath, Seg};
use super::plan::MaskCounts;
use super::strategy::{HashKey, REDACTED, partial, pseudonym};

/// Nesting deeper than this is treated as unparseable (bounded recursion).
const MAX_DEPTH: usize = 128;

/// A compiled field rule.
#[derive(Debug, Clone)]
pub struct FieldRule {
    pub path: FieldPath,
    pub strategy: MaskStrategy,
    pub keep_last: usize,
}

/// The value is not valid JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

type R<T> = Result<T, Invalid>;

/// Masks `src`. `Ok(None)`: nothing to mask, the value passes unchanged.
pub fn rewrite(
    src: &[u8],
    fields: &[FieldRule],
    detectors: &Detectors,
    key: Option<&HashKey>,
    counts: &mut MaskCounts,
) -> R<Option<Vec<u8>>> {
    let text = std::str::from_utf8(src).map_err(|_| Invalid)?;
    let mut rw = Rewriter {
        s: text,
        b: src,
        i: 0,
        out: Vec::new(),
        copied: 0,
        changed: false,
        path: Vec::new(),
        depth: 0,
        skipping: 0,
        fields,
        detectors,
        key,
        counts,
    };
    rw.ws();
    rw.value(None)?;
    rw.ws();
    if rw.i != rw.b.len() {
        return Err(Invalid);
    }
    if !rw.changed {
        return Ok(None);
    }
    let mut out = rw.out;
    out.extend_from_slice(&src[rw.copied..]);
    Ok(Some(out))
}

struct Rewriter<'s, 'p> {
    s: &'s str,
    b: &'s [u8],
    i: usize,
    out: Vec<u8>,
    /// `b[..copied]` is already accounted for in `out`.
    copied: usize,
    changed: bool,
    path: Vec<Seg<'s>>,
    depth: usize,
    /// > 0 while validating a span that is masked as a whole.
    skipping: usize,
    fields: &'p [FieldRule],
    detectors: &'p Detectors,
    key: Option<&'p HashKey>,
    counts: &'p mut MaskCounts,
}

/// What the parent must do with a value it just parsed.
#[derive(PartialEq, Eq)]
enum Fate {
    Keep,
    Remove,
}

impl<'s> Rewriter<'s, '_> {
    fn replace(&mut self, start: usize, end: usize, with: &[u8]) {
        self.out.extend_from_slice(&self.b[self.copied..start]);
        self.out.extend_from_slice(with);
        self.copied = end;
        self.changed = true;
    }

    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn peek(&self) -> R<u8> {
        self.b.get(self.i).copied().ok_or(Invalid)
    }

    fn expect(&mut self, c: u8) -> R<()> {
        if self.peek()? != c {
            return Err(Invalid);
        }
        self.i += 1;
        Ok(())
    }

    /// The field rule for the current location, if any (first match wins).
    fn rule_here(&self) -> Option<usize> {
        if self.skipping > 0 || self.fields.is_empty() {
            return None;
        }
        self.fields.iter().position(|f| f.path.matches(&self.path))
    }

    /// Parses one value; `rule` is the field rule matching its location.
    fn value(&mut self, rule: Option<usize>) -> R<Fate> {
        if let Some(r) = rule {
            return self.masked_value(r);
        }
        match self.peek()? {
            b'{' => self.object()?,
            b'[' => self.array()?,
            b'"' => {
                let (start, end, text) = self.string()?;
                if self.skipping == 0 {
                    let named = self.named();
                    self.detect(start, end, &text, named, false);
                }
            }
            _ => {
                let start = self.i;
                let number = self.scalar()?;
                if number && self.skipping == 0 {
                    let (src, end) = (self.s, self.i);
                    let named = self.named();
                    self.detect(start, end, &src[start..end], named, true);
                }
            }
        }
        Ok(Fate::Keep)
    }

    /// What the innermost member name around the current value says it
    /// holds (array elements take the name of the array's member).
    fn named(&self) -> Named {
        if self.detectors.is_empty() {
            return Named::default();
        }
        self.path
            .iter()
            .rev()
            .find_map(|s| match s {
                Seg::Key(k) => Some(Named::of(k)),
                Seg::Index => None,
            })
            .unwrap_or_default()
    }

    fn masked_value(&mut self, r: usize) -> R<Fate> {
        let start = self.i;
        let first = self.peek()?;
        let decoded = if first == b'"' {
            Some(self.string()?.2)
        } else {
            self.skipping += 1;
            let res = self.value(None);
            self.skipping -= 1;
            res?;
            None
        };
        let end = self.i;
        let rule = &self.fields[r];
        if first == b'n' && rule.strategy != MaskStrategy::Remove {
            return Ok(Fate::Keep); // null holds nothing to hide
        }
        let counter = rule.path.as_str();
        match self.counts.fields.get_mut(counter) {
            Some(n) => *n += 1,
            None => {
                self.counts.fields.insert(counter.to_string(), 1);
            }
        }
        let raw = &self.s[start..end];
        let replacement = match rule.strategy {
            MaskStrategy::Remove => return Ok(Fate::Remove),
            MaskStrategy::Redact => REDACTED.to_string(),
            MaskStrategy::Partial => match (&decoded, first) {
                (Some(text), _) => partial(text, rule.keep_last),
                (None, b'{' | b'[') => REDACTED.to_string(),
                (None, _) => partial(raw, rule.keep_last),
            },
            MaskStrategy::Hash => match (&decoded, self.key) {
                (Some(text), Some(k)) => pseudonym(k, text.as_bytes()),
                (None, Some(k)) => pseudonym(k, raw.as_bytes()),
                // Compilation refuses Hash without a key; stay safe anyway.
                (_, None) => REDACTED.to_string(),
            },
        };
        let encoded = json_string(&replacement);
        self.replace(start, end, encoded.as_bytes());
        Ok(Fate::Keep)
    }

    /// Runs the detectors over a string (its decoded text) or a number
    /// token under a member `named` so, and replaces the token, as a string,
    /// if PHI was found.
    fn detect(&mut self, start: usize, end: usize, text: &str, named: Named, number: bool) {
        if self.detectors.is_empty() {
            return;
        }
        let counts = &mut *self.counts;
        let scanned = if number {
            self.detectors.scan_number(text, named, |d| counts.found(d))
        } else {
            self.detectors.scan_in(text, named, |d| counts.found(d))
        };
        if let Cow::Owned(masked) = scanned {
            let encoded = json_string(&masked);
            self.replace(start, end, encoded.as_bytes());
        }
    }

    fn enter(&mut self) -> R<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(Invalid)
        } else {
            Ok(())
        }
    }

    /// Step into a container at its opening bracket; true when it is empty
    /// (and already left again).
    fn open(&mut self, close: u8) -> R<bool> {
        self.enter()?;
        self.i += 1;
        self.ws();
        if self.peek()? == close {
            self.i += 1;
            self.depth -= 1;
            return Ok(true);
        }
        Ok(false)
    }

    fn object(&mut self) -> R<()> {
        if self.open(b'}')? {
            return Ok(());
        }
        let mut kept_any = false;
        let mut comma_before: Option<usize> = None;
        loop {
            self.ws();
            let member_start = self.i;
            if self.peek()? != b'"' {
                return Err(Invalid);
            }
            let (kstart, kend, key) = self.string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            let tracking = self.skipping == 0;
            if tracking {
                self.path.push(Seg::Key(key.clone()));
            }
            let rule = self.rule_here();
            let removing = rule.is_some_and(|r| self.fields[r].strategy == MaskStrategy::Remove);
            if tracking && !removing {
                self.detect(kstart, kend, &key, Named::default(), false);
            }
            let fate = self.value(rule);
            if tracking {
                self.path.pop();
            }
            if self.after_value(fate?, member_start, &mut comma_before, &mut kept_any, b'}')? {
                break;
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// After one object member or array element (`start..value_end`, `next`
    /// the `,` or closing bracket at `self.i`): cut it out, with the comma
    /// that separated it, when its fate is Remove; otherwise note that an
    /// earlier sibling survives (so a later removal takes its leading comma).
    /// After a member's or element's value: settle its fate, then step over
    /// the `,` (another follows: false) or the `close` (the container ends: true).
    fn after_value(
        &mut self,
        fate: Fate,
        start: usize,
        comma_before: &mut Option<usize>,
        kept_any: &mut bool,
        close: u8,
    ) -> R<bool> {
        let value_end = self.i;
        self.ws();
        let next = self.peek()?;
        self.settle(fate, start, value_end, next, *comma_before, kept_any);
        self.i += 1;
        match next {
            b',' => {
                *comma_before = Some(self.i - 1);
                Ok(false)
            }
            c if c == close => Ok(true),
            _ => Err(Invalid),
        }
    }

    fn settle(
        &mut self,
        fate: Fate,
        start: usize,
        value_end: usize,
        next: u8,
        comma_before: Option<usize>,
        kept_any: &mut bool,
    ) {
        if fate != Fate::Remove {
            *kept_any = true;
            return;
        }
        match comma_before {
            Some(c) if *kept_any => self.replace(c, value_end, b""),
            _ => {
                let end = if next == b',' { self.i + 1 } else { value_end };
                self.replace(start, end, b"");
            }
        }
    }

    fn array(&mut self) -> R<()> {
        if self.open(b']')? {
            return Ok(());
        }
        let mut kept_any = false;
        let mut comma_before: Option<usize> = None;
        loop {
            self.ws();
            let element_start = self.i;
            let tracking = self.skipping == 0;
            if tracking {
                self.path.push(Seg::Index);
            }
            let rule = self.rule_here();
            let fate = self.value(rule);
            if tracking {
                self.path.pop();
            }
            if self.after_value(fate?, element_start, &mut comma_before, &mut kept_any, b']')? {
                break;
            }
        }
        self.depth -= 1;
        Ok(())
    }

    /// A string token at `self.i`: (start, end, decoded text).
    fn string(&mut self) -> R<(usize, usize, Cow<'s, str>)> {
        let start = self.i;
        self.i += 1; // '"'
        let mut escaped = false;
        loop {
            let c = self.peek()?;
            match c {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    let e = self.b.get(self.i + 1).copied().ok_or(Invalid)?;
                    match e {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                        b'u' => {
                            let hex = self.b.get(self.i + 2..self.i + 6).ok_or(Invalid)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Invalid);
                            }
                            self.i += 6;
                        }
                        _ => return Err(Invalid),
                    }
                }
                0..=0x1f => return Err(Invalid),
                _ => self.i += 1,
            }
        }
        self.i += 1; // closing '"'
        let end = self.i;
        let inner = &self.s[start + 1..end - 1];
        if !escaped {
            return Ok((start, end, Cow::Borrowed(inner)));
        }
        if self.skipping > 0 {
            // Escapes were validated above; a span masked whole needs no text.
            return Ok((start, end, Cow::Borrowed("")));
        }
        // serde_json also checks surrogate pairs.
        let decoded: String = serde_json::from_str(&self.s[start..end]).map_err(|_| Invalid)?;
        Ok((start, end, Cow::Owned(decoded)))
    }

    /// A number or `true`/`false`/`null`, validated by the JSON grammar;
    /// `true` when it was a number.
    fn scalar(&mut self) -> R<bool> {
        for lit in [b"true".as_slice(), b"false", b"null"] {
            if self.b[self.i..].starts_with(lit) {
                self.i += lit.len();
                return Ok(false);
            }
        }
        let digits = |rw: &mut Self| {
            let s = rw.i;
            while rw.i < rw.b.len() && rw.b[rw.i].is_ascii_digit() {
                rw.i += 1;
            }
            rw.i - s
        };
        if self.peek()? == b'-' {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                digits(self);
            }
            _ => return Err(Invalid),
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return Err(Invalid);
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(Invalid);
            }
        }
        Ok(true)
    }
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamgate_crds::Detector;

    fn rule(path: &str, strategy: MaskStrategy) -> FieldRule {
        FieldRule {
            path: FieldPath::parse(path).unwrap(),
            strategy,
            keep_last: 4,
        }
    }

    fn run(
        src: &str,
        fields: &[FieldRule],
        detectors: &[Detector],
    ) -> (R<Option<String>>, MaskCounts) {
        let d = Detectors::compile(detectors, None).unwrap();
        let key = HashKey::new(b"k".to_vec()).unwrap();
        let mut counts = MaskCounts::default();
        let out = rewrite(src.as_bytes(), fields, &d, Some(&key), &mut counts)
            .map(|o| o.map(|v| String::from_utf8(v).unwrap()));
        (out, counts)
    }

    fn masked(src: &str, fields: &[FieldRule], detectors: &[Detector]) -> String {
        run(src, fields, detectors)
            .0
            .unwrap()
            .unwrap_or_else(|| src.to_string())
    }

    #[test]
    fn strategies_on_paths() {
        let fields = [
            rule("$.patient.ssn", MaskStrategy::Partial),
            rule("$..dateOfBirth", MaskStrategy::Redact),
            rule("$.notes", MaskStrategy::Remove),
        ];
        let src = r#"{"id":7, "patient":{"ssn":"838-39-8865","x":{"dateOfBirth":"1971-07-08"}},"notes":"hi","big":123456789012345678901234567890}"#;
        let (out, counts) = run(src, &fields, &[]);
        assert_eq!(
            out.unwrap().unwrap(),
            r#"{"id":7, "patient":{"ssn":"***-**-8865","x":{"dateOfBirth":"[REDACTED]"}},"big":123456789012345678901234567890}"#
        );
        assert_eq!(counts.fields.get("$.patient.ssn"), Some(&1));
        assert_eq!(counts.fields.get("$.notes"), Some(&1));
    }

    #[test]
    fn hash_objects_and_strings() {
        let fields = [rule("$.name", MaskStrategy::Hash)];
        let a = masked(
            r#"{"name":{"given":"James","family":"Silva"}}"#,
            &fields,
            &[],
        );
        let b = masked(
            r#"{"name":{"given":"James","family":"Silva"}}"#,
            &fields,
            &[],
        );
        assert_eq!(a, b);
        assert!(
            a.starts_with(r#"{"name":"h:"#) && !a.contains("James"),
            "{a}"
        );
        let s = masked(r#"{"name":"James Silva"}"#, &fields, &[]);
        let key = HashKey::new(b"k".to_vec()).unwrap();
        assert_eq!(
            s,
            format!(r#"{{"name":"{}"}}"#, pseudonym(&key, b"James Silva"))
        );
    }

    #[test]
    fn remove_first_middle_last_and_all() {
        let f = |p: &[&str]| {
            p.iter()
                .map(|p| rule(p, MaskStrategy::Remove))
                .collect::<Vec<_>>()
        };
        let src = r#"{"a":1,"b":2,"c":3}"#;
        assert_eq!(masked(src, &f(&["$.a"]), &[]), r#"{"b":2,"c":3}"#);
        assert_eq!(masked(src, &f(&["$.b"]), &[]), r#"{"a":1,"c":3}"#);
        assert_eq!(masked(src, &f(&["$.c"]), &[]), r#"{"a":1,"b":2}"#);
        assert_eq!(masked(src, &f(&["$.a", "$.c"]), &[]), r#"{"b":2}"#);
        assert_eq!(masked(src, &f(&["$.a", "$.b"]), &[]), r#"{"c":3}"#);
        assert_eq!(masked(src, &f(&["$.a", "$.b", "$.c"]), &[]), r#"{}"#);
        let arr = r#"{"l":[{"s":1,"t":2},{"s":3}]}"#;
        assert_eq!(masked(arr, &f(&["$.l[*].s"]), &[]), r#"{"l":[{"t":2},{}]}"#);
        assert_eq!(masked(arr, &f(&["$.l[*]"]), &[]), r#"{"l":[]}"#);
        for out in [
            masked(src, &f(&["$.a", "$.c"]), &[]),
            masked(arr, &f(&["$.l[*].s"]), &[]),
        ] {
            serde_json::from_str::<serde_json::Value>(&out).unwrap();
        }
    }

    #[test]
    fn detectors_in_free_text_keys_and_escapes() {
        let src = r#"{"note":"SSN 838-39-8865 \"quoted\"\n","838-39-8865":true,"n":5}"#;
        let out = masked(src, &[], &[Detector::SSN]);
        assert_eq!(
            out,
            r#"{"note":"SSN [SSN] \"quoted\"\n","[SSN]":true,"n":5}"#
        );
        // A planted value spelled with escapes is found too.
        let out = masked(r#"{"x":"\u0038\u00338-39-8865"}"#, &[], &[Detector::SSN]);
        assert_eq!(out, r#"{"x":"[SSN]"}"#);
    }

    #[test]
    fn detectors_see_numbers_and_ssns_named_as_such() {
        let all = [
            Detector::SSN,
            Detector::Phone,
            Detector::CreditCard,
            Detector::NPI,
        ];
        let (out, counts) = run(
            r#"{"ssn":838398865,"phone":3515550121,"card":4708073826424685,"npi":1702309729,"n":838398865,"x":1.5}"#,
            &[],
            &all,
        );
        assert_eq!(
            out.unwrap().unwrap(),
            r#"{"ssn":"[SSN]","phone":"[PHONE]","card":"[CARD]","npi":"[NPI]","n":838398865,"x":1.5}"#
        );
        assert_eq!(counts.detectors.get("[SSN]"), Some(&1));
        // Named SSN: strings without separators, nested names, array elements.
        let out = masked(
            r#"{"patient":{"patientSSN":"838398865","ids":{"ssns":[838398865,"042894695"]}},"order":"838398865"}"#,
            &[],
            &[Detector::SSN],
        );
        assert_eq!(
            out,
            r#"{"patient":{"patientSSN":"[SSN]","ids":{"ssns":["[SSN]","[SSN]"]}},"order":"838398865"}"#
        );
        // A number the SSA rules refuse stays a number; unnamed ones are
        // not PHI (ids, timestamps: this one passes Luhn).
        let src = r#"{"ssn":900398865,"ts":1764220000004,"tel":-3515550121}"#;
        assert_eq!(
            masked(src, &[], &all),
            r#"{"ssn":900398865,"ts":1764220000004,"tel":"-[PHONE]"}"#
        );
        // Inside a masked span nothing is scanned twice.
        let fields = [rule("$.a", MaskStrategy::Redact)];
        assert_eq!(
            masked(r#"{"a":{"ssn":838398865}}"#, &fields, &[Detector::SSN]),
            r#"{"a":"[REDACTED]"}"#
        );
    }

    #[test]
    fn non_ascii_strings_are_scanned() {
        let out = masked(
            r#"{"note":"Séverine Müller, ＳＳＮ ８３８－３９－８８６５","mail":"josé@bücher.de"}"#,
            &[],
            &[Detector::SSN, Detector::Email],
        );
        assert_eq!(
            out,
            r#"{"note":"Séverine Müller, ＳＳＮ [SSN]","mail":"[EMAIL]"}"#
        );
    }

    #[test]
    fn unchanged_values_are_not_copied() {
        let (out, counts) = run(
            r#"{"a":"nothing here","b":[1,2,{"c":null}]}"#,
            &[rule("$.z", MaskStrategy::Redact)],
            &[Detector::SSN],
        );
        assert_eq!(out, Ok(None));
        assert!(counts.fields.is_empty());
    }

    #[test]
    fn nulls_stay_null() {
        assert_eq!(
            masked(r#"{"a":null}"#, &[rule("$.a", MaskStrategy::Redact)], &[]),
            r#"{"a":null}"#
        );
    }

    #[test]
    fn invalid_json_is_rejected() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        for bad in [
            "",
            "{",
            "{\"a\":}",
            "{\"a\":1,}",
            "[1,]",
            "{\"a\" 1}",
            "01",
            "1.",
            "-",
            "tru",
            "\"\\x\"",
            "\"a\nb\"",
            "{} x",
            "[\"\\u12\"]",
            "{\"a\":\"\\ud800\"}",
            "nul",
            &deep,
        ] {
            let (out, _) = run(bad, &[], &[Detector::SSN]);
            assert_eq!(out, Err(Invalid), "{bad:?}");
        }
        let mut counts = MaskCounts::default();
        let d = Detectors::compile(&[], None).unwrap();
        assert_eq!(
            rewrite(b"{\"a\":\"\xff\"}", &[], &d, None, &mut counts),
            Err(Invalid)
        );
    }

    #[test]
    fn valid_json_passes() {
        for ok in [
            "0",
            "-1.5e+3",
            "true",
            " [ ] ",
            "{\"a\":[{},[],\"\",0.0]}",
            "\"\\ud83d\\ude00\"",
        ] {
            assert_eq!(run(ok, &[], &[Detector::SSN]).0, Ok(None), "{ok}");
        }
    }
}
