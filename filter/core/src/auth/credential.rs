//! Where credentials are read from, and how they are kept from the upstream.

use crate::http::UpstreamEdits;
use crate::normalize::{decode_form, RequestView};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A header (lower-case name), possibly `authorization`.
    Header(String),
    Query(String),
    Cookie(String),
}

/// A credential as found in the request. `Debug` is not derived: the value
/// is a secret and must not reach a log by accident.
pub struct Found {
    pub value: String,
    pub location: Location,
}

/// `<scheme> <credential>` from a header, the scheme compared
/// case-insensitively (RFC 9110 §11.1). Without a scheme the whole value.
pub fn from_header(view: &RequestView, name: &str, scheme: Option<&str>) -> Option<Found> {
    let value = view.header(name)?.trim();
    let credential = match scheme {
        Some(scheme) => {
            let (given, rest) = value.split_once(' ')?;
            if !given.eq_ignore_ascii_case(scheme) {
                return None;
            }
            rest.trim()
        }
        None => value,
    };
    (!credential.is_empty()).then(|| Found {
        value: credential.to_string(),
        location: Location::Header(name.to_string()),
    })
}

pub fn from_query(view: &RequestView, name: &str) -> Option<Found> {
    let value = view.query_param(name).filter(|v| !v.is_empty())?;
    Some(Found {
        value: value.to_string(),
        location: Location::Query(name.to_string()),
    })
}

pub fn from_cookie(view: &RequestView, name: &str) -> Option<Found> {
    let value = cookies(view)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|v| !v.is_empty())?;
    Some(Found {
        value: value.to_string(),
        location: Location::Cookie(name.to_string()),
    })
}

/// Every cookie of every `cookie` header (HTTP/2 may split them).
fn cookies(view: &RequestView) -> impl Iterator<Item = (&str, &str)> {
    view.headers
        .iter()
        .filter(|(n, _)| n == "cookie")
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            Some((name.trim(), value.trim()))
        })
}

/// Keeps the credential from the upstream: its header or cookie is removed
/// unless the route forwards credentials.
pub fn strip(view: &RequestView, location: &Location, forward: bool) -> UpstreamEdits {
    if forward {
        return UpstreamEdits::default();
    }
    strip_all(view, std::slice::from_ref(location))
}

/// Removes the credentials at these locations from the upstream request:
/// headers by name, cookies cut out of the `cookie` header in one rewrite
/// (two rewrites would each put back the cookie the other removed). Query
/// parameters are left to [`path_without_params`].
pub fn strip_all(view: &RequestView, locations: &[Location]) -> UpstreamEdits {
    let mut edits = UpstreamEdits::default();
    let mut removed_cookies: Vec<&str> = Vec::new();
    for location in locations {
        match location {
            Location::Header(name) if !edits.remove_headers.contains(name) => {
                edits.remove_headers.push(name.clone());
            }
            Location::Cookie(name) => removed_cookies.push(name),
            _ => {}
        }
    }
    if !removed_cookies.is_empty() {
        let rest: Vec<String> = cookies(view)
            .filter(|(n, _)| !removed_cookies.contains(n))
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        if rest.is_empty() {
            edits.remove_headers.push("cookie".to_string());
        } else {
            edits
                .set_headers
                .push(("cookie".to_string(), rest.join("; ")));
        }
    }
    edits
}

/// The upstream `:path` without the named query parameters. Credentials in
/// URLs end up in upstream access logs, so they are removed even on routes
/// that do not read them. `None` when none is present.
pub fn path_without_params(view: &RequestView, names: &[&str]) -> Option<String> {
    if !view.query.iter().any(|(n, _)| names.contains(&n.as_str())) {
        return None;
    }
    let full = view.upstream_path();
    let path = full
        .strip_suffix(&view.raw_query)
        .and_then(|p| p.strip_suffix('?'))
        .unwrap_or(&full);
    let kept: Vec<&str> = view
        .raw_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !names.contains(&decode_form(name).as_str())
        })
        .collect();
    Some(if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    })
}

/// A raw request target without the named query parameters (names
/// compared decoded), or `None` when it has none of them. For requests
/// citygate answers itself: the path Envoy's access log records must not
/// carry a key either.
pub fn target_without_params(target: &str, names: &[&str]) -> Option<String> {
    let (path, query) = target.split_once('?')?;
    let is_credential = |pair: &&str| {
        let name = pair.split_once('=').map_or(*pair, |(n, _)| n);
        names.contains(&decode_form(name).as_str())
    };
    let pairs: Vec<&str> = query.split('&').collect();
    if !pairs.iter().any(is_credential) {
        return None;
    }
    let kept: Vec<&str> = pairs
        .into_iter()
        .filter(|pair| !pair.is_empty() && !is_credential(pair))
        .collect();
    Some(if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(path: &str, headers: &[(&str, &str)]) -> RequestView {
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        RequestView {
            path: p.to_string(),
            raw_path: path.to_string(),
            raw_query: q.to_string(),
            query: crate::normalize::parse_query(q),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn scheme_is_case_insensitive_and_required() {
        let v = view("/", &[("authorization", "bearer abc.def.ghi")]);
        assert_eq!(
            from_header(&v, "authorization", Some("Bearer"))
                .unwrap()
                .value,
            "abc.def.ghi"
        );
        assert!(from_header(&v, "authorization", Some("ApiKey")).is_none());
        let v = view("/", &[("authorization", "Bearer ")]);
        assert!(from_header(&v, "authorization", Some("Bearer")).is_none());
    }

    #[test]
    fn query_credentials_are_removed_from_the_upstream_path() {
        let v = view("/v2/entities?type=Parking&api_key=s3cret&limit=5", &[]);
        assert_eq!(
            path_without_params(&v, &["api_key"]).as_deref(),
            Some("/v2/entities?type=Parking&limit=5")
        );
        let v = view("/v2/entities?api%5Fkey=s3cret", &[]);
        assert_eq!(
            path_without_params(&v, &["api_key"]).as_deref(),
            Some("/v2/entities")
        );
        let v = view("/v2/entities?type=x", &[]);
        assert_eq!(path_without_params(&v, &["api_key"]), None);
    }

    #[test]
    fn credential_parameters_are_cut_out_of_a_raw_target() {
        let names = ["api_key", "access_token"];
        assert_eq!(
            target_without_params("/p?zone=5&api_key=s3cret&sort=asc", &names).as_deref(),
            Some("/p?zone=5&sort=asc")
        );
        assert_eq!(
            target_without_params("/p;x/%2F?api%5Fkey=s3cret&access_token=t", &names).as_deref(),
            Some("/p;x/%2F")
        );
        assert_eq!(target_without_params("/p?zone=5", &names), None);
        assert_eq!(target_without_params("/p", &names), None);
    }

    #[test]
    fn cookie_credentials_are_cut_out_of_the_cookie_header() {
        let v = view("/", &[("cookie", "a=1; session=tok"), ("cookie", "b=2")]);
        assert_eq!(from_cookie(&v, "session").unwrap().value, "tok");
        let edits = strip(&v, &Location::Cookie("session".into()), false);
        assert_eq!(
            edits.set_headers,
            vec![("cookie".into(), "a=1; b=2".into())]
        );
        let edits = strip(&v, &Location::Cookie("session".into()), true);
        assert_eq!(edits, UpstreamEdits::default());
    }
}
