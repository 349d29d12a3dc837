//! PII detectors for free text: a candidate pattern per kind, then a check
//! that rules out look-alikes (IBAN mod-97, Luhn, address parsing, digit
//! counts and boundaries). Patterns come from the regex crate, whose matching
//! is linear in the input, so a user-defined pattern cannot stall a worker.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorKind {
    Email,
    Phone,
    Iban,
    PaymentCard,
    Ipv4,
    Ipv6,
    LicencePlate,
    Custom,
}

impl DetectorKind {
    pub fn is_ip(self) -> bool {
        matches!(self, Self::Ipv4 | Self::Ipv6)
    }
}

#[derive(Debug, Clone)]
pub struct Detector {
    pub kind: DetectorKind,
    pattern: Regex,
    prefilter: Prefilter,
}

/// What a text must contain before a built-in detector can confirm a hit
/// in it. Each is implied by the detector's pattern and confirmation, so
/// skipping a text that lacks it never loses a hit; most strings of a
/// city's JSON (types, ids, names, member names) then cost one byte scan
/// instead of a regex search per detector. Configured patterns (custom
/// detectors, licence plates of a country) are always searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefilter {
    None,
    /// `@` (e-mail).
    AtSign,
    /// At least this many ASCII digits (phone numbers 7, payment cards 13).
    Digits(usize),
    /// Two capitals followed by two digits, 15 bytes at least (IBAN).
    CountryAndCheckDigits,
    /// Four digits and three dots (IPv4).
    DottedQuad,
    /// Two colons (IPv6).
    Colons,
    /// A digit and a capital (the built-in German plate).
    DigitAndCapital,
}

/// Byte counts of one text, taken in one pass for all prefilters.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextShape {
    digits: usize,
    capitals: usize,
    dots: usize,
    colons: usize,
    at_sign: bool,
}

impl TextShape {
    pub fn of(text: &str) -> Self {
        let mut shape = Self::default();
        for byte in text.bytes() {
            match byte {
                b'0'..=b'9' => shape.digits += 1,
                b'A'..=b'Z' => shape.capitals += 1,
                b'.' => shape.dots += 1,
                b':' => shape.colons += 1,
                b'@' => shape.at_sign = true,
                _ => {}
            }
        }
        shape
    }
}

impl Prefilter {
    fn for_builtin(kind: DetectorKind, pattern: &str) -> Self {
        match (kind, pattern) {
            (DetectorKind::Email, EMAIL) => Self::AtSign,
            (DetectorKind::Phone, PHONE_INTERNATIONAL | PHONE_NATIONAL) => Self::Digits(7),
            (DetectorKind::Iban, IBAN) => Self::CountryAndCheckDigits,
            (DetectorKind::PaymentCard, PAYMENT_CARD) => Self::Digits(13),
            (DetectorKind::Ipv4, IPV4) => Self::DottedQuad,
            (DetectorKind::Ipv6, IPV6) => Self::Colons,
            (DetectorKind::LicencePlate, PLATE_DE) => Self::DigitAndCapital,
            _ => Self::None,
        }
    }

    fn admits(self, text: &str, shape: &TextShape) -> bool {
        match self {
            Self::None => true,
            Self::AtSign => shape.at_sign,
            Self::Digits(n) => shape.digits >= n,
            Self::CountryAndCheckDigits => {
                text.len() >= 15
                    && shape.capitals >= 2
                    && shape.digits >= 2
                    && text.as_bytes().windows(4).any(|w| {
                        w[0].is_ascii_uppercase()
                            && w[1].is_ascii_uppercase()
                            && w[2].is_ascii_digit()
                            && w[3].is_ascii_digit()
                    })
            }
            Self::DottedQuad => shape.digits >= 4 && shape.dots >= 3,
            Self::Colons => shape.colons >= 2,
            Self::DigitAndCapital => shape.digits >= 1 && shape.capitals >= 1,
        }
    }
}

/// A detector match inside a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub range: Range<usize>,
    pub kind: DetectorKind,
}

const EMAIL: &str = r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}";
const PHONE_INTERNATIONAL: &str = r"(?:\+|\b00)[1-9][0-9 ./()\-]{5,22}[0-9]";
const PHONE_NATIONAL: &str = r"\(?\b0[1-9][0-9]{1,4}\)?[ ./\-]?[0-9][0-9 ./\-]{3,14}[0-9]";
const IBAN: &str = r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,32}";
const PAYMENT_CARD: &str = r"\b[0-9](?:[ \-]?[0-9]){12,18}\b";
const IPV4: &str = r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b";
const IPV6: &str = r"(?i)(?:[0-9a-f]{0,4}:){2,7}(?:(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9a-f]{0,4})";
/// German plates: district (1–3 letters), 1–2 letters, 1–4 digits, optional
/// E (electric) or H (historic).
const PLATE_DE: &str = r"\b[A-ZÄÖÜ]{1,3}[\- ][A-Z]{1,2}[\- ]?[1-9][0-9]{0,3}[EH]?\b";

/// Every detector a rule can name, compiled once.
#[derive(Debug, Clone)]
pub struct DetectorLibrary {
    by_name: BTreeMap<String, Vec<Detector>>,
}

impl DetectorLibrary {
    /// `plates`: country → pattern (empty: the built-in German pattern);
    /// `custom`: name → pattern. Errors name the offending entry.
    pub fn compile(
        plates: &BTreeMap<String, String>,
        custom: &BTreeMap<String, String>,
    ) -> Result<Self, (String, String)> {
        let build = |kind, pattern: &str, prefilter| -> Result<Detector, String> {
            Regex::new(pattern)
                .map(|regex| Detector {
                    kind,
                    pattern: regex,
                    prefilter,
                })
                .map_err(|e| first_line(&e.to_string()))
        };
        let builtin = |kind, pattern| {
            build(kind, pattern, Prefilter::for_builtin(kind, pattern))
                .map_err(|e| (String::new(), e))
        };
        let mut by_name: BTreeMap<String, Vec<Detector>> = BTreeMap::new();
        by_name.insert("email".into(), vec![builtin(DetectorKind::Email, EMAIL)?]);
        by_name.insert(
            "phone".into(),
            vec![
                builtin(DetectorKind::Phone, PHONE_INTERNATIONAL)?,
                builtin(DetectorKind::Phone, PHONE_NATIONAL)?,
            ],
        );
        by_name.insert("iban".into(), vec![builtin(DetectorKind::Iban, IBAN)?]);
        by_name.insert(
            "payment_card".into(),
            vec![builtin(DetectorKind::PaymentCard, PAYMENT_CARD)?],
        );
        let v4 = builtin(DetectorKind::Ipv4, IPV4)?;
        let v6 = builtin(DetectorKind::Ipv6, IPV6)?;
        by_name.insert("ipv4".into(), vec![v4.clone()]);
        by_name.insert("ipv6".into(), vec![v6.clone()]);
        by_name.insert("ip".into(), vec![v4, v6]);

        let mut all_plates = Vec::new();
        if plates.is_empty() {
            let de = builtin(DetectorKind::LicencePlate, PLATE_DE)?;
            by_name.insert("licence_plate:DE".into(), vec![de.clone()]);
            all_plates.push(de);
        }
        for (country, pattern) in plates {
            let detector = build(DetectorKind::LicencePlate, pattern, Prefilter::None)
                .map_err(|e| (format!(".licence_plates.{country}"), e))?;
            by_name.insert(format!("licence_plate:{country}"), vec![detector.clone()]);
            all_plates.push(detector);
        }
        by_name.insert("licence_plate".into(), all_plates);

        for (name, pattern) in custom {
            if by_name.contains_key(name) {
                return Err((
                    format!(".custom.{name}"),
                    format!("`{name}` is the name of a built-in detector"),
                ));
            }
            let detector = build(DetectorKind::Custom, pattern, Prefilter::None)
                .map_err(|e| (format!(".custom.{name}"), e))?;
            by_name.insert(name.clone(), vec![detector]);
        }
        Ok(Self { by_name })
    }

    pub fn get(&self, name: &str) -> Option<&[Detector]> {
        self.by_name.get(name).map(Vec::as_slice)
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The detectors of one rule.
#[derive(Debug, Clone, Default)]
pub struct DetectorSet {
    detectors: Vec<Detector>,
}

impl DetectorSet {
    pub fn new(detectors: Vec<Detector>) -> Self {
        Self { detectors }
    }

    pub fn only_ip(&self) -> bool {
        self.detectors.iter().all(|d| d.kind.is_ip())
    }

    /// Non-overlapping hits, left to right (the longest wins at one start),
    /// none touching a `protected` span (pseudonym tokens). Detectors whose
    /// prefilter rules the text out are not searched.
    pub fn find(&self, text: &str, protected: &[Range<usize>]) -> Vec<Hit> {
        self.find_shaped(text, &TextShape::of(text), protected)
    }

    /// [`find`](Self::find) with the text's shape already counted: the
    /// detect rules of one traversal count each text once.
    pub fn find_shaped(
        &self,
        text: &str,
        shape: &TextShape,
        protected: &[Range<usize>],
    ) -> Vec<Hit> {
        self.search(
            self.detectors
                .iter()
                .filter(|detector| detector.prefilter.admits(text, shape)),
            text,
            protected,
        )
    }

    /// [`find`](Self::find) without prefilters: every detector searches the
    /// text. The differential tests hold the two to the same hits.
    #[cfg(test)]
    pub fn find_unfiltered(&self, text: &str, protected: &[Range<usize>]) -> Vec<Hit> {
        self.search(self.detectors.iter(), text, protected)
    }

    fn search<'d>(
        &self,
        detectors: impl Iterator<Item = &'d Detector>,
        text: &str,
        protected: &[Range<usize>],
    ) -> Vec<Hit> {
        let mut hits: Vec<Hit> = Vec::new();
        for detector in detectors {
            for candidate in detector.pattern.find_iter(text) {
                if let Some(range) = confirm(detector.kind, text, candidate.range()) {
                    hits.push(Hit {
                        range,
                        kind: detector.kind,
                    });
                }
            }
        }
        if hits.is_empty() {
            return hits;
        }
        hits.sort_by(|a, b| {
            a.range
                .start
                .cmp(&b.range.start)
                .then(b.range.end.cmp(&a.range.end))
        });
        let mut kept: Vec<Hit> = Vec::new();
        for hit in hits {
            let overlaps_kept = kept.last().is_some_and(|k| hit.range.start < k.range.end);
            let overlaps_token = protected
                .iter()
                .any(|p| hit.range.start < p.end && p.start < hit.range.end);
            if !overlaps_kept && !overlaps_token {
                kept.push(hit);
            }
        }
        kept
    }
}

fn confirm(kind: DetectorKind, text: &str, range: Range<usize>) -> Option<Range<usize>> {
    let candidate = text.get(range.clone())?;
    let before = text.get(..range.start)?.chars().next_back();
    let after = text.get(range.end..)?.chars().next();
    match kind {
        DetectorKind::Email | DetectorKind::LicencePlate | DetectorKind::Custom => Some(range),
        DetectorKind::Phone => {
            let digits = candidate.bytes().filter(u8::is_ascii_digit).count();
            let free_standing = !before.is_some_and(|c| c.is_alphanumeric())
                && !after.is_some_and(|c| c.is_ascii_digit());
            (free_standing && (7..=15).contains(&digits)).then_some(range)
        }
        DetectorKind::Iban => iban_prefix(candidate).map(|len| range.start..range.start + len),
        DetectorKind::PaymentCard => {
            let digits: Vec<u32> = candidate.chars().filter_map(|c| c.to_digit(10)).collect();
            ((13..=19).contains(&digits.len()) && luhn(&digits)).then_some(range)
        }
        DetectorKind::Ipv4 => candidate.parse::<Ipv4Addr>().ok().map(|_| range),
        DetectorKind::Ipv6 => {
            let free_standing = !before.is_some_and(|c| c.is_alphanumeric() || c == ':')
                && !after.is_some_and(|c| c.is_alphanumeric() || c == ':');
            let hex_digits = candidate.chars().filter(char::is_ascii_hexdigit).count();
            (free_standing && hex_digits >= 3 && candidate.parse::<Ipv6Addr>().is_ok())
                .then_some(range)
        }
    }
}

/// The byte length of the longest checksum-valid IBAN at the start of
/// `candidate` (the pattern may have run on into following capitals).
fn iban_prefix(candidate: &str) -> Option<usize> {
    let compact: Vec<(usize, char)> = candidate
        .char_indices()
        .filter(|(_, c)| *c != ' ')
        .collect();
    let longest = compact.len().min(34);
    (15..=longest).rev().find_map(|len| {
        let chars: String = compact.get(..len)?.iter().map(|(_, c)| *c).collect();
        let (last_index, last_char) = compact.get(len - 1)?;
        iban_valid(&chars).then_some(last_index + last_char.len_utf8())
    })
}

pub fn iban_valid(compact: &str) -> bool {
    if compact.len() < 15 || !compact.is_ascii() {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let value = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        let (factor, value) = if value >= 10 {
            (100, value)
        } else {
            (10, value)
        };
        remainder = (remainder * factor + value) % 97;
    }
    remainder == 1
}

pub fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                *d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    fn library() -> DetectorLibrary {
        let custom = BTreeMap::from([("case_number".to_string(), r"\bAZ-[0-9]{6}\b".to_string())]);
        DetectorLibrary::compile(&BTreeMap::new(), &custom).unwrap()
    }

    fn found(name: &str, text: &str) -> Vec<String> {
        let set = DetectorSet::new(library().get(name).unwrap().to_vec());
        set.find(text, &[])
            .into_iter()
            .map(|h| text[h.range].to_string())
            .collect()
    }

    #[test]
    fn emails() {
        assert_eq!(
            found("email", "write to erika.m+city@example.org, or not"),
            ["erika.m+city@example.org"]
        );
        assert!(found("email", "no at-sign here, nor user@localhost").is_empty());
    }

    #[test]
    fn phones_in_international_and_national_formats() {
        assert_eq!(
            found("phone", "call me at +49 170 1234567 or erika@example.org"),
            ["+49 170 1234567"]
        );
        assert_eq!(
            found("phone", "Tel. 089/233-96000 bitte"),
            ["089/233-96000"]
        );
        assert_eq!(found("phone", "(0170) 1234567"), ["(0170) 1234567"]);
        assert_eq!(found("phone", "0049 89 12345678."), ["0049 89 12345678"]);
        assert!(found("phone", "on 2026-11-20 at 08:15:42, ticket 638344").is_empty());
        assert!(found("phone", "+49 12").is_empty());
    }

    #[test]
    fn ibans_need_a_valid_checksum() {
        assert_eq!(
            found("iban", "IBAN DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX"),
            ["DE89 3704 0044 0532 0130 00"]
        );
        assert_eq!(
            found("iban", "GB82WEST12345698765432"),
            ["GB82WEST12345698765432"]
        );
        assert!(found("iban", "DE89 3704 0044 0532 0130 01").is_empty());
    }

    #[test]
    fn payment_cards_need_luhn() {
        assert_eq!(
            found("payment_card", "card 4111 1111 1111 1111 ok"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            found("payment_card", "5500-0000-0000-0004"),
            ["5500-0000-0000-0004"]
        );
        assert!(found("payment_card", "4111 1111 1111 1112").is_empty());
    }

    #[test]
    fn ip_addresses_parse() {
        assert_eq!(
            found("ip", "from 203.0.113.77 and 2001:db8::1."),
            ["203.0.113.77", "2001:db8::1"]
        );
        assert!(found("ip", "999.1.1.1 at 08:15:42 in Foo::Bar").is_empty());
    }

    #[test]
    fn licence_plates_and_custom_patterns() {
        assert_eq!(
            found("licence_plate", "van M-AB 1234 parked"),
            ["M-AB 1234"]
        );
        assert_eq!(found("licence_plate:DE", "car B XY 12E"), ["B XY 12E"]);
        assert_eq!(found("case_number", "see AZ-123456."), ["AZ-123456"]);
        let plates =
            BTreeMap::from([("NL".to_string(), r"\b[0-9]{2}-[A-Z]{3}-[0-9]\b".to_string())]);
        let lib = DetectorLibrary::compile(&plates, &BTreeMap::new()).unwrap();
        assert!(lib.get("licence_plate:DE").is_none());
        let set = DetectorSet::new(lib.get("licence_plate").unwrap().to_vec());
        assert_eq!(set.find("auto 12-ABC-3", &[]).len(), 1);
    }

    #[test]
    fn protected_spans_and_overlaps() {
        let set = DetectorSet::new(
            [
                library().get("phone").unwrap(),
                library().get("payment_card").unwrap(),
            ]
            .concat(),
        );
        let text = "pn_k1:0170123456789abc and 4111111111111111";
        let protected = [Range { start: 0, end: 22 }];
        let hits = set.find(text, &protected);
        assert_eq!(hits.len(), 1);
        assert_eq!(&text[hits[0].range.clone()], "4111111111111111");
    }

    /// Every detector at once: the built-ins, a configured plate and a
    /// custom pattern (neither prefiltered), and the built-in German plate.
    fn every_detector() -> Vec<DetectorSet> {
        let plates =
            BTreeMap::from([("NL".to_string(), r"\b[0-9]{2}-[A-Z]{3}-[0-9]\b".to_string())]);
        let configured = DetectorLibrary::compile(&plates, &BTreeMap::new()).unwrap();
        let names = [
            "email",
            "phone",
            "iban",
            "payment_card",
            "ip",
            "licence_plate",
            "case_number",
        ];
        let builtin = library();
        let all = |lib: &DetectorLibrary, names: &[&str]| {
            DetectorSet::new(
                names
                    .iter()
                    .filter_map(|n| lib.get(n))
                    .flatten()
                    .cloned()
                    .collect(),
            )
        };
        vec![
            all(&builtin, &names),
            all(&configured, &names),
            all(&builtin, &["iban"]),
            all(&builtin, &["phone", "payment_card"]),
        ]
    }

    #[test]
    fn prefilters_skip_texts_without_the_characters_a_hit_needs() {
        let sets = every_detector();
        for text in [
            "Vehicle",
            "urn:ngsi-ld:Vehicle:example-city:bus-001",
            "Erika Mustermann",
            "2026-03-14T08:00:02.000Z",
        ] {
            assert!(sets[0].find(text, &[]).is_empty(), "{text}");
        }
        // The least each prefilter admits is still found.
        for text in [
            "+1234567",
            "4222222222222",
            "1.2.3.4",
            "1::23",
            "NO9386011117947",
            "x@example.org",
        ] {
            let hits = sets[0].find(text, &[]);
            assert_eq!(hits.len(), 1, "{text}");
            assert_eq!(hits, sets[0].find_unfiltered(text, &[]), "{text}");
        }
        let plate = DetectorSet::new(library().get("licence_plate").unwrap().to_vec());
        assert_eq!(plate.find("B X 1", &[]).len(), 1);
        let shape = TextShape::of("DE89 3704 0044 0532 0130 00");
        assert!(Prefilter::CountryAndCheckDigits.admits("DE89 3704 0044 0532 0130 00", &shape));
        let shape = TextShape::of("de89 3704 0044 0532 0130 00");
        assert!(!Prefilter::CountryAndCheckDigits.admits("de89 3704 0044 0532 0130 00", &shape));
        assert!(!Prefilter::Digits(7).admits("+49 30 5", &TextShape::of("+49 30 5")));
    }

    proptest::proptest! {
        /// The prefilters change how much is searched, never what is found.
        #[test]
        fn prefiltered_and_exhaustive_search_find_the_same_hits(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    "[0-9A-Za-z@.:+ ()/\\-ÄÖÜé]{0,24}",
                    proptest::sample::select(vec![
                        "erika@example.org", "+49 170 1234567", "089/233-96000",
                        "DE89 3704 0044 0532 0130 00", "4111 1111 1111 1111",
                        "203.0.113.77", "2001:db8::1", "M-AB 1234", "AZ-123456",
                        "12-ABC-3", "pn_k1:0170123456789abc", "GB82WEST12345698765432",
                        // Each at the least its prefilter admits.
                        "+1234567", "+123456", "4222222222222", "1.2.3.4", "1::23",
                        "NO9386011117947", "B X 1",
                    ]).prop_map(str::to_string),
                ],
                0..6,
            ),
        ) {
            let text = parts.concat();
            let protected = [Range { start: 0, end: text.len().min(5) }];
            for set in every_detector() {
                proptest::prop_assert_eq!(set.find(&text, &[]), set.find_unfiltered(&text, &[]));
                proptest::prop_assert_eq!(
                    set.find(&text, &protected),
                    set.find_unfiltered(&text, &protected)
                );
            }
        }
    }

    #[test]
    fn bad_custom_patterns_and_name_clashes_are_config_errors() {
        let bad = BTreeMap::from([("x".to_string(), "(".to_string())]);
        let (path, message) = DetectorLibrary::compile(&BTreeMap::new(), &bad).unwrap_err();
        assert_eq!(path, ".custom.x");
        assert!(!message.contains('\n'));
        let clash = BTreeMap::from([("email".to_string(), "x".to_string())]);
        assert!(DetectorLibrary::compile(&BTreeMap::new(), &clash).is_err());
    }
}
