//! Every metric citygate defines. Names follow `citygate_<stage>_<outcome>`
//! (the contract in README.md "Metrics") and appear in Envoy's `/stats/prometheus`.

use crate::deny::Stage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricKind {
    Counter,
    Histogram,
}

macro_rules! metrics {
    ($($variant:ident => ($name:literal, $kind:ident, $help:literal),)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Metric { $($variant,)* }

        impl Metric {
            pub const ALL: &'static [Metric] = &[$(Metric::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Metric::$variant => $name,)* }
            }

            pub fn kind(self) -> MetricKind {
                match self { $(Metric::$variant => MetricKind::$kind,)* }
            }

            pub fn help(self) -> &'static str {
                match self { $(Metric::$variant => $help,)* }
            }
        }
    };
}

metrics! {
    RequestsTotal => ("citygate_requests_total", Counter, "requests seen by the filter"),
    RequestsAllowed => ("citygate_requests_allowed", Counter, "requests forwarded upstream"),
    RequestsDenied => ("citygate_requests_denied", Counter, "requests answered locally with a denial"),
    NormalizeRejected => ("citygate_normalize_rejected", Counter, "requests refused because the path or headers could not be normalized safely"),
    RouteUnmatched => ("citygate_route_unmatched", Counter, "requests for a path no route declares"),
    IpRulesDenied => ("citygate_ip_rules_denied", Counter, "requests refused by an IP allow or deny rule (403)"),
    CorsPreflightAnswered => ("citygate_cors_preflight_answered", Counter, "CORS preflights answered by citygate with the route's grant (204)"),
    CorsPreflightRefused => ("citygate_cors_preflight_refused", Counter, "CORS preflights refused: origin, method or header not allowed (403)"),
    RequestLimitsBodyDenied => ("citygate_request_limits_body_denied", Counter, "requests refused because the body was larger than the route's max_body_bytes (413)"),
    RequestLimitsHeadersDenied => ("citygate_request_limits_headers_denied", Counter, "requests refused because the headers were larger than the route's max_header_bytes (431)"),
    AuthAllowed => ("citygate_auth_allowed", Counter, "requests authenticated (or anonymous where allowed)"),
    AuthDenied => ("citygate_auth_denied", Counter, "requests refused by authentication (401/403)"),
    AuthMissingCredentials => ("citygate_auth_missing_credentials", Counter, "requests refused because a route needs credentials and none were sent (401)"),
    AuthInvalidCredentials => ("citygate_auth_invalid_credentials", Counter, "requests refused because a credential was invalid (401)"),
    AuthInsufficientScope => ("citygate_auth_insufficient_scope", Counter, "authenticated requests lacking a scope or role the route requires (403)"),
    AuthUnavailable => ("citygate_auth_unavailable", Counter, "requests refused because keys or introspection answers were not available (503)"),
    JwtCacheHit => ("citygate_jwt_cache_hit", Counter, "JWTs accepted from the verified-token cache"),
    JwksFetched => ("citygate_jwks_fetched", Counter, "JWKS documents fetched and accepted"),
    JwksFetchFailed => ("citygate_jwks_fetch_failed", Counter, "JWKS fetches that failed or returned an unusable document"),
    IntrospectionCalls => ("citygate_introspection_calls", Counter, "RFC 7662 introspection calls started"),
    IntrospectionActive => ("citygate_introspection_active", Counter, "introspection answers: the token is active"),
    IntrospectionInactive => ("citygate_introspection_inactive", Counter, "introspection answers: the token is not active (or not for this gateway)"),
    IntrospectionFailed => ("citygate_introspection_failed", Counter, "introspection calls that failed, timed out or gave an unusable answer (the request gets 503)"),
    IntrospectionBusy => ("citygate_introspection_busy", Counter, "requests refused with 503 because max_in_flight introspection calls were running"),
    IntrospectionCacheHit => ("citygate_introspection_cache_hit", Counter, "opaque tokens judged from the introspection cache"),
    RatelimitChecked => ("citygate_ratelimit_checked", Counter, "rate-limit rule checks"),
    RatelimitLimited => ("citygate_ratelimit_limited", Counter, "requests refused by a rate limit (429)"),
    RatelimitShadowLimited => ("citygate_ratelimit_shadow_limited", Counter, "would-be refusals of rules in shadow mode"),
    RatelimitOverflow => ("citygate_ratelimit_overflow", Counter, "requests counted in the overflow bucket because the key cap was reached"),
    PolicyAllowed => ("citygate_policy_allowed", Counter, "requests the Rego policy allowed"),
    PolicyDenied => ("citygate_policy_denied", Counter, "requests the Rego policy denied"),
    PolicyError => ("citygate_policy_error", Counter, "policy evaluations that failed or were undefined (denied)"),
    PolicyDryRunDenied => ("citygate_policy_dry_run_denied", Counter, "denials not enforced because the policy runs in dry-run mode"),
    PolicyEvalMicros => ("citygate_policy_eval_us", Histogram, "Rego evaluation time in microseconds"),
    RedactionResponses => ("citygate_redaction_responses", Counter, "responses rewritten by a redaction profile"),
    RedactionFields => ("citygate_redaction_fields", Counter, "fields changed by redaction (all actions)"),
    RedactionRemoved => ("citygate_redaction_removed", Counter, "fields removed by redaction"),
    RedactionMasked => ("citygate_redaction_masked", Counter, "values masked or replaced by redaction"),
    RedactionHashed => ("citygate_redaction_hashed", Counter, "values pseudonymized by redaction"),
    RedactionGeneralized => ("citygate_redaction_generalized", Counter, "values generalized by redaction"),
    RedactionDetectorHits => ("citygate_redaction_detector_hits", Counter, "PII detector matches inside strings"),
    RedactionFailedClosed => ("citygate_redaction_failed_closed", Counter, "responses replaced by a 502 because they could not be minimized"),
    RedactionNonJsonPassed => ("citygate_redaction_non_json_passed", Counter, "non-JSON responses passed unminimized on routes that allow it (a fail-open switch)"),
}

/// Denials per route and stage: `citygate_route_denied{route, stage}`.
///
/// proxy-wasm metrics carry no labels, so each (route, stage) is its own
/// counter with its tags in the name, the way Istio's stats write them
/// (`NAME=.=VALUE;.;`): Envoy's `stats_tags` (the shipped bootstraps) or
/// Istio's `extraStatTags` turn them into Prometheus labels. Routes are
/// declared in the configuration, so the set is bounded; requests refused
/// before a route is known count in `citygate_normalize_rejected` and
/// `citygate_route_unmatched` instead.
pub const ROUTE_DENIED: &str = "citygate_route_denied";

/// The stages that can refuse a request once its route is known.
pub const ROUTE_DENIED_STAGES: &[Stage] = &[
    Stage::IpRules,
    Stage::Cors,
    Stage::RequestLimits,
    Stage::Auth,
    Stage::RateLimit,
    Stage::Policy,
    Stage::Redaction,
];

/// The Envoy stat name of `citygate_route_denied{route, stage}`. Characters
/// a tag value cannot hold (`.` separates Envoy's name segments, `;` and
/// `=` the tags) become `_`.
pub fn route_denied_name(route: &str, stage: Stage) -> String {
    let route: String = route
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "route=.={route};.;stage=.={};.;{ROUTE_DENIED}",
        stage.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_denial_names_carry_both_tags_and_no_separator_from_the_route() {
        assert_eq!(
            route_denied_name("ngsi-v2", Stage::Auth),
            "route=.=ngsi-v2;.;stage=.=auth;.;citygate_route_denied"
        );
        assert_eq!(
            route_denied_name("a.b;c=d e", Stage::RateLimit),
            "route=.=a_b_c_d_e;.;stage=.=rate_limit;.;citygate_route_denied"
        );
    }

    #[test]
    fn names_follow_the_contract_and_are_unique() {
        let mut names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        for name in &names {
            assert!(name.starts_with("citygate_"), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}
