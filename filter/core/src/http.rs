//! The HTTP message as the core edits it: header edits for requests and
//! responses, the local reply, and header lookups. A leaf: every stage may
//! import it and it imports no stage, so no stage needs the pipeline to say
//! what it wants changed.

/// Header changes on a response on its way to the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub set_headers: Vec<(String, String)>,
    pub remove_headers: Vec<String>,
}

/// Changes to the request on its way upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamEdits {
    pub set_headers: Vec<(String, String)>,
    pub remove_headers: Vec<String>,
    /// A new `:path` (normalized, or with a credential parameter removed).
    pub path: Option<String>,
}

impl UpstreamEdits {
    pub fn merge(&mut self, other: UpstreamEdits) {
        self.set_headers.extend(other.set_headers);
        self.remove_headers.extend(other.remove_headers);
        if other.path.is_some() {
            self.path = other.path;
        }
    }
}

/// A reply ready to send: the shell passes it to `send_http_response`.
/// Only [`crate::deny::reply`] builds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The first value of a header, its name compared without case (header
/// lists from the proxy keep the case a client sent).
pub fn first_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every value of a header, in order, its name compared without case.
pub fn all_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> Vec<(String, String)> {
        vec![
            ("Content-Length".into(), "10".into()),
            ("x-a".into(), "1".into()),
            ("X-A".into(), "2".into()),
        ]
    }

    #[test]
    fn lookups_ignore_the_case_of_names_and_keep_order() {
        assert_eq!(first_value(&headers(), "content-length"), Some("10"));
        assert_eq!(first_value(&headers(), "x-a"), Some("1"));
        assert_eq!(all_values(&headers(), "x-a"), vec!["1", "2"]);
        assert_eq!(first_value(&headers(), "absent"), None);
        assert!(all_values(&headers(), "absent").is_empty());
    }

    #[test]
    fn a_merged_path_replaces_and_headers_accumulate() {
        let mut edits = UpstreamEdits {
            set_headers: vec![("a".into(), "1".into())],
            remove_headers: vec!["b".into()],
            path: Some("/one".into()),
        };
        edits.merge(UpstreamEdits {
            set_headers: vec![("c".into(), "3".into())],
            remove_headers: vec![],
            path: None,
        });
        assert_eq!(edits.path.as_deref(), Some("/one"));
        edits.merge(UpstreamEdits {
            path: Some("/two".into()),
            ..Default::default()
        });
        assert_eq!(edits.path.as_deref(), Some("/two"));
        assert_eq!(edits.set_headers.len(), 2);
        assert_eq!(edits.remove_headers, vec!["b".to_string()]);
    }
}
