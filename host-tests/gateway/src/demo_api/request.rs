//! A request as the demo API received it (recorded for the tests'
//! assertions), and its query parameters.

/// One request as the demo API received it.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: String,
    /// Path without the query, as sent on the wire.
    pub path: String,
    /// Raw query string (without `?`), empty if none.
    pub query: String,
    /// Lower-cased names, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ReceivedRequest {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A GET with only this query (the data behind the `/test/*` bodies).
    pub(super) fn synthetic(query: &str) -> Self {
        ReceivedRequest {
            method: "GET".to_owned(),
            path: String::new(),
            query: query.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

fn query_params(req: &ReceivedRequest) -> Vec<(String, String)> {
    req.query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub(super) fn param(req: &ReceivedRequest, name: &str) -> Option<String> {
    query_params(req)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("Waste%2CVehicle"), "Waste,Vehicle");
        assert_eq!(percent_decode("a+b%"), "a b%");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
