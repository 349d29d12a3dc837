//! Where a token provider (a JWT issuer, an introspection endpoint) reads
//! its bearer tokens: headers with an optional scheme, query parameters
//! (only on routes that allow credentials in the query) and cookies.

use crate::auth::api_key::is_header_name;
use crate::auth::config::TokenSourceConfig;
use crate::auth::credential::{self, Found, Location};
use crate::config::ConfigError;
use crate::normalize::RequestView;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Header {
        name: String,
        scheme: Option<String>,
    },
    Query(String),
    Cookie(String),
}

/// A provider's token sources, in the order they are tried.
#[derive(Debug, Clone)]
pub struct TokenSources(Vec<Source>);

impl TokenSources {
    /// `at` is the JSON path of the `sources` list, for errors.
    pub fn compile(configs: &[TokenSourceConfig], at: &str) -> Result<Self, ConfigError> {
        let sources = configs
            .iter()
            .enumerate()
            .map(|(i, s)| source(s, &format!("{at}[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        if sources.is_empty() {
            return Err(ConfigError::new(at, "must not be empty"));
        }
        Ok(Self(sources))
    }

    /// Query parameters tokens are read from.
    pub fn query_params(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|s| match s {
            Source::Query(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The first token of the request in these sources.
    pub fn find(&self, view: &RequestView, allow_query: bool) -> Option<Found> {
        self.0.iter().find_map(|s| match s {
            Source::Header { name, scheme } => {
                credential::from_header(view, name, scheme.as_deref())
            }
            Source::Query(name) if allow_query => credential::from_query(view, name),
            Source::Query(_) => None,
            Source::Cookie(name) => credential::from_cookie(view, name),
        })
    }

    /// Every token in the header and cookie sources.
    pub fn in_headers(&self, view: &RequestView) -> Vec<Found> {
        self.0
            .iter()
            .filter_map(|s| match s {
                Source::Header { name, scheme } => {
                    credential::from_header(view, name, scheme.as_deref())
                }
                Source::Cookie(name) => credential::from_cookie(view, name),
                Source::Query(_) => None,
            })
            .collect()
    }

    /// Whether tokens are read at `location` (several providers may share
    /// `Authorization: Bearer`).
    pub fn reads(&self, location: &Location) -> bool {
        self.0.iter().any(|s| match (s, location) {
            (Source::Header { name, .. }, Location::Header(h)) => name == h,
            (Source::Query(name), Location::Query(q)) => name == q,
            (Source::Cookie(name), Location::Cookie(c)) => name == c,
            _ => false,
        })
    }
}

fn source(config: &TokenSourceConfig, at: &str) -> Result<Source, ConfigError> {
    let lower = |name: &String, field: &str| {
        if is_header_name(name) {
            Ok(name.clone())
        } else {
            Err(ConfigError::new(
                format!("{at}.{field}"),
                "must be a lower-case header name",
            ))
        }
    };
    match (&config.header, &config.query, &config.cookie) {
        (Some(header), None, None) => Ok(Source::Header {
            name: lower(header, "header")?,
            scheme: config.prefix.clone(),
        }),
        (None, Some(query), None) if config.prefix.is_none() && !query.is_empty() => {
            Ok(Source::Query(query.clone()))
        }
        (None, None, Some(cookie)) if config.prefix.is_none() && !cookie.is_empty() => {
            Ok(Source::Cookie(cookie.clone()))
        }
        _ => Err(ConfigError::new(
            at,
            "exactly one of `header` (with optional `prefix`), `query`, `cookie` is required",
        )),
    }
}
