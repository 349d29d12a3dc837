//! Which response bodies are rewritten and how they are read: JSON media
//! types only, identity/gzip/deflate codings only, within a size bound, and
//! complete. Every other case is a 502 from the one denial function — the
//! original bytes never pass on a route that minimizes.

use std::borrow::Cow;
use std::io::Read;

use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

use super::ResponseRedaction;
use crate::deny::Denial;
use crate::host::Host;
use crate::http::{all_values, HeaderEdits};
use crate::metrics::Metric;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentCoding {
    Identity,
    Gzip,
    Deflate,
}

/// How to read a buffered body once it is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferPlan {
    pub max_bytes: usize,
    pub coding: ContentCoding,
    /// `content-length` as sent upstream; a body of another size was cut.
    pub declared_length: Option<usize>,
}

/// What the response headers phase decided about the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyAction {
    PassThrough,
    /// Hold the body until its end, with these header edits (length and
    /// digests of the original bytes removed).
    Buffer {
        plan: BufferPlan,
        edits: HeaderEdits,
    },
}

/// Headers that describe the upstream's bytes, which the client will not get.
const ORIGINAL_BYTES_HEADERS: &[&str] = &[
    "content-length",
    "etag",
    "content-md5",
    "digest",
    "content-digest",
    "repr-digest",
    "accept-ranges",
];

pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

pub fn plan(
    redaction: &ResponseRedaction,
    status: u16,
    headers: &[(String, String)],
    end_of_stream: bool,
    host: &dyn Host,
) -> Result<BodyAction, Denial> {
    let bodiless = redaction.head_request || matches!(status, 100..=199 | 204 | 304);
    if redaction.profiles.is_empty() || bodiless || end_of_stream {
        return Ok(BodyAction::PassThrough);
    }
    if status == 206 {
        return Err(Denial::bad_gateway(
            "the upstream sent a partial response, which cannot be minimized",
        ));
    }
    let content_types = all_values(headers, "content-type");
    let json = matches!(content_types.as_slice(), [one] if is_json_media_type(one));
    if !json {
        if redaction.allow_non_json {
            host.count(Metric::RedactionNonJsonPassed, 1);
            return Ok(BodyAction::PassThrough);
        }
        return Err(Denial::bad_gateway(
            "the upstream response is not JSON and this API minimizes its responses",
        ));
    }
    let coding = match all_values(headers, "content-encoding").as_slice() {
        [] => ContentCoding::Identity,
        [one] => match one.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => ContentCoding::Identity,
            "gzip" | "x-gzip" => ContentCoding::Gzip,
            "deflate" => ContentCoding::Deflate,
            _ => return Err(unsupported_coding()),
        },
        _ => return Err(unsupported_coding()),
    };
    let declared_length = match all_values(headers, "content-length").as_slice() {
        [] => None,
        [one] => Some(one.trim().parse::<usize>().map_err(|_| truncated())?),
        _ => return Err(truncated()),
    };
    if declared_length.is_some_and(|n| n > redaction.max_body_bytes) {
        return Err(too_large(redaction.max_body_bytes));
    }
    let mut edits = HeaderEdits::default();
    edits
        .remove_headers
        .extend(ORIGINAL_BYTES_HEADERS.iter().map(|h| h.to_string()));
    if coding != ContentCoding::Identity {
        edits.remove_headers.push("content-encoding".into());
    }
    Ok(BodyAction::Buffer {
        plan: BufferPlan {
            max_bytes: redaction.max_body_bytes,
            coding,
            declared_length,
        },
        edits,
    })
}

/// The complete body as identity bytes, without a UTF-8 byte order mark
/// (RFC 8259 §8.1 lets a parser ignore one; anything else is not UTF-8 and
/// fails to parse).
pub fn decode<'a>(plan: &BufferPlan, body: &'a [u8]) -> Result<Cow<'a, [u8]>, Denial> {
    if body.len() > plan.max_bytes {
        return Err(too_large(plan.max_bytes));
    }
    if plan.declared_length.is_some_and(|n| n != body.len()) {
        return Err(truncated());
    }
    let decoded = match plan.coding {
        ContentCoding::Identity => Cow::Borrowed(body),
        ContentCoding::Gzip => Cow::Owned(inflate(MultiGzDecoder::new(body), plan.max_bytes)?),
        // "deflate" is zlib-wrapped by the RFC, raw by some servers: try both.
        ContentCoding::Deflate => match inflate(ZlibDecoder::new(body), plan.max_bytes) {
            Ok(bytes) => Cow::Owned(bytes),
            Err(denial) if denial.problem == "response-too-large" => return Err(denial),
            Err(_) => Cow::Owned(inflate(DeflateDecoder::new(body), plan.max_bytes)?),
        },
    };
    Ok(match decoded {
        Cow::Borrowed(bytes) => Cow::Borrowed(strip_bom(bytes)),
        Cow::Owned(bytes) => match bytes.strip_prefix(BOM) {
            Some(rest) => Cow::Owned(rest.to_vec()),
            None => Cow::Owned(bytes),
        },
    })
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(BOM).unwrap_or(bytes)
}

/// Decompresses at most `max` bytes: a small compressed body cannot expand
/// into more memory than the bound allows.
fn inflate(decoder: impl Read, max: usize) -> Result<Vec<u8>, Denial> {
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    decoder
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| Denial::bad_gateway("the upstream response body cannot be decoded"))?;
    if out.len() > max {
        return Err(too_large(max));
    }
    Ok(out)
}

pub fn too_large(max_bytes: usize) -> Denial {
    let mut denial = Denial::bad_gateway(format!(
        "the upstream response is larger than the {max_bytes}-byte minimization bound"
    ));
    denial.problem = "response-too-large";
    denial
}

fn truncated() -> Denial {
    Denial::bad_gateway("the upstream response body is incomplete")
}

fn unsupported_coding() -> Denial {
    Denial::bad_gateway("the upstream response uses a content-encoding citygate cannot decode")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::host::memory::MemoryHost;

    fn redaction() -> ResponseRedaction {
        ResponseRedaction {
            profiles: vec!["analyst".into()],
            allow_non_json: false,
            max_body_bytes: 1024,
            head_request: false,
            ngsi_attribute: None,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn json_media_types() {
        for t in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/ld+json",
            "application/geo+json",
            "application/problem+json",
        ] {
            assert!(is_json_media_type(t), "{t}");
        }
        for t in [
            "text/plain",
            "text/json+html",
            "application/jsonx",
            "",
            "application/x-ndjson",
        ] {
            assert!(!is_json_media_type(t), "{t}");
        }
    }

    #[test]
    fn json_is_buffered_with_length_and_digests_removed() {
        let host = MemoryHost::default();
        let action = plan(
            &redaction(),
            200,
            &headers(&[
                ("content-type", "application/json"),
                ("content-length", "20"),
            ]),
            false,
            &host,
        )
        .unwrap();
        let BodyAction::Buffer { plan, edits } = action else {
            panic!("expected buffering")
        };
        assert_eq!(plan.declared_length, Some(20));
        assert_eq!(plan.coding, ContentCoding::Identity);
        assert!(edits.remove_headers.contains(&"content-length".to_string()));
        assert!(edits.remove_headers.contains(&"etag".to_string()));
        assert!(!edits
            .remove_headers
            .contains(&"content-encoding".to_string()));
    }

    #[test]
    fn bodiless_and_unprofiled_responses_pass() {
        let host = MemoryHost::default();
        let html = headers(&[("content-type", "text/html")]);
        for status in [204, 304, 101] {
            assert_eq!(
                plan(&redaction(), status, &html, false, &host),
                Ok(BodyAction::PassThrough)
            );
        }
        let head = ResponseRedaction {
            head_request: true,
            ..redaction()
        };
        assert_eq!(
            plan(&head, 200, &html, false, &host),
            Ok(BodyAction::PassThrough)
        );
        let none = ResponseRedaction::default();
        assert_eq!(
            plan(&none, 200, &html, false, &host),
            Ok(BodyAction::PassThrough)
        );
        assert_eq!(
            plan(&redaction(), 200, &html, true, &host),
            Ok(BodyAction::PassThrough)
        );
    }

    #[test]
    fn what_cannot_be_minimized_is_refused_at_the_headers() {
        let host = MemoryHost::default();
        let refused = |pairs: &[(&str, &str)], status| {
            plan(&redaction(), status, &headers(pairs), false, &host).unwrap_err()
        };
        assert_eq!(refused(&[("content-type", "text/html")], 200).status, 502);
        assert_eq!(refused(&[], 200).status, 502);
        assert_eq!(
            refused(
                &[
                    ("content-type", "application/json"),
                    ("content-type", "text/html")
                ],
                200
            )
            .status,
            502
        );
        assert_eq!(
            refused(
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", "br")
                ],
                200
            )
            .status,
            502
        );
        assert_eq!(
            refused(
                &[
                    ("content-type", "application/json"),
                    ("content-encoding", "gzip, br")
                ],
                200
            )
            .status,
            502
        );
        assert_eq!(
            refused(&[("content-type", "application/json")], 206).status,
            502
        );
        let big = refused(
            &[
                ("content-type", "application/json"),
                ("content-length", "4096"),
            ],
            200,
        );
        assert_eq!(big.problem, "response-too-large");
    }

    #[test]
    fn non_json_passes_only_where_the_route_allows_it_and_is_counted() {
        let host = MemoryHost::default();
        let lenient = ResponseRedaction {
            allow_non_json: true,
            ..redaction()
        };
        let html = headers(&[("content-type", "text/html")]);
        assert_eq!(
            plan(&lenient, 200, &html, false, &host),
            Ok(BodyAction::PassThrough)
        );
        assert_eq!(host.counter(Metric::RedactionNonJsonPassed), 1);
    }

    #[test]
    fn gzip_and_deflate_are_decoded_and_the_coding_header_dropped() {
        let host = MemoryHost::default();
        let action = plan(
            &redaction(),
            200,
            &headers(&[
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ]),
            false,
            &host,
        )
        .unwrap();
        let BodyAction::Buffer {
            plan: buffer,
            edits,
        } = action
        else {
            panic!("expected buffering")
        };
        assert!(edits
            .remove_headers
            .contains(&"content-encoding".to_string()));
        let body = gzip(b"{\"a\":1}");
        assert_eq!(decode(&buffer, &body).unwrap().as_ref(), b"{\"a\":1}");

        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(b"[1]").unwrap();
        let deflate_plan = BufferPlan {
            coding: ContentCoding::Deflate,
            ..buffer.clone()
        };
        assert_eq!(
            decode(&deflate_plan, &zlib.finish().unwrap())
                .unwrap()
                .as_ref(),
            b"[1]"
        );
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        raw.write_all(b"[2]").unwrap();
        assert_eq!(
            decode(&deflate_plan, &raw.finish().unwrap())
                .unwrap()
                .as_ref(),
            b"[2]"
        );
    }

    #[test]
    fn broken_truncated_oversized_and_bomb_bodies_fail() {
        let plan = BufferPlan {
            max_bytes: 1024,
            coding: ContentCoding::Gzip,
            declared_length: None,
        };
        let body = gzip(b"{\"name\":\"Erika Mustermann\"}");
        let cut = &body[..body.len() - 6];
        assert_eq!(decode(&plan, cut).unwrap_err().status, 502);
        assert_eq!(decode(&plan, b"not gzip").unwrap_err().status, 502);
        let bomb = gzip(&vec![b' '; 1_000_000]);
        assert!(bomb.len() < 1024);
        assert_eq!(
            decode(&plan, &bomb).unwrap_err().problem,
            "response-too-large"
        );
        let identity = BufferPlan {
            coding: ContentCoding::Identity,
            declared_length: Some(10),
            ..plan.clone()
        };
        assert_eq!(
            decode(&identity, b"{}").unwrap_err().detail,
            "the upstream response body is incomplete"
        );
        let small = BufferPlan {
            max_bytes: 4,
            coding: ContentCoding::Identity,
            declared_length: None,
        };
        assert_eq!(
            decode(&small, b"[1,2,3]").unwrap_err().problem,
            "response-too-large"
        );
    }

    #[test]
    fn a_utf8_bom_is_stripped() {
        let plan = BufferPlan {
            max_bytes: 1024,
            coding: ContentCoding::Identity,
            declared_length: None,
        };
        assert_eq!(decode(&plan, b"\xEF\xBB\xBF{}").unwrap().as_ref(), b"{}");
    }
}
