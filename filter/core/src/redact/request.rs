//! Request-side minimization: what the upstream is not told. The client
//! address is cut to its network, headers the upstream does not need
//! (cookies, credentials) are dropped, and where the response is minimized
//! the upstream is asked for the whole body in identity encoding.

use super::generalize;
use super::ResponseRedaction;
use crate::config::RouteConfig;
use crate::http::UpstreamEdits;
use crate::normalize::RequestView;

/// Headers that carry the client address to the upstream.
const CLIENT_ADDRESS_HEADERS: &[&str] = &["x-forwarded-for", "x-real-ip"];

pub fn request_edits(
    route: &RouteConfig,
    view: &RequestView,
    response: &ResponseRedaction,
) -> UpstreamEdits {
    let options = &route.redaction;
    let mut edits = UpstreamEdits::default();
    edits
        .remove_headers
        .extend(options.drop_request_headers.iter().cloned());
    if !response.profiles.is_empty() {
        // A range or a compressed coding other than gzip/deflate would make
        // the response unminimizable; ask for what we can rewrite.
        edits
            .set_headers
            .push(("accept-encoding".into(), "identity".into()));
        edits.remove_headers.push("range".into());
        edits.remove_headers.push("if-range".into());
    }
    if options.client_ip_prefix_v4.is_some() || options.client_ip_prefix_v6.is_some() {
        // RFC 7239 `forwarded` repeats the chain in another syntax.
        edits.remove_headers.push("forwarded".into());
        match view.client_ip {
            Some(client) => {
                let network = generalize::ip(
                    client,
                    options.client_ip_prefix_v4.unwrap_or(32),
                    options.client_ip_prefix_v6.unwrap_or(128),
                )
                .to_string();
                for name in CLIENT_ADDRESS_HEADERS {
                    edits.set_headers.push((name.to_string(), network.clone()));
                }
            }
            None => edits
                .remove_headers
                .extend(CLIENT_ADDRESS_HEADERS.iter().map(|h| h.to_string())),
        }
    }
    edits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteMatch;
    use crate::redact::RouteRedaction;

    fn route(redaction: RouteRedaction) -> RouteConfig {
        RouteConfig {
            name: "r".into(),
            matcher: RouteMatch::default(),
            ip_rules: Default::default(),
            cors: None,
            request_limits: Default::default(),
            auth: Default::default(),
            policy: Default::default(),
            redaction,
            request_body: Default::default(),
            ngsi: None,
        }
    }

    fn view(ip: &str) -> RequestView {
        RequestView {
            client_ip: Some(ip.parse().unwrap()),
            ..Default::default()
        }
    }

    #[test]
    fn client_addresses_are_cut_to_their_network() {
        let r = route(RouteRedaction {
            client_ip_prefix_v4: Some(24),
            client_ip_prefix_v6: Some(48),
            ..Default::default()
        });
        let edits = request_edits(&r, &view("203.0.113.77"), &ResponseRedaction::default());
        assert!(edits
            .set_headers
            .contains(&("x-forwarded-for".into(), "203.0.113.0".into())));
        assert!(edits
            .set_headers
            .contains(&("x-real-ip".into(), "203.0.113.0".into())));
        assert!(edits.remove_headers.contains(&"forwarded".to_string()));
        let edits = request_edits(
            &r,
            &view("2001:db8:abcd:12::1"),
            &ResponseRedaction::default(),
        );
        assert!(edits
            .set_headers
            .contains(&("x-forwarded-for".into(), "2001:db8:abcd::".into())));
        let unknown = request_edits(&r, &RequestView::default(), &ResponseRedaction::default());
        assert!(unknown
            .remove_headers
            .contains(&"x-forwarded-for".to_string()));
        assert!(unknown.set_headers.is_empty());
    }

    #[test]
    fn addresses_are_left_alone_without_a_prefix_option() {
        let edits = request_edits(
            &route(RouteRedaction::default()),
            &view("203.0.113.77"),
            &ResponseRedaction::default(),
        );
        assert_eq!(edits, UpstreamEdits::default());
    }

    #[test]
    fn minimized_responses_are_requested_whole_and_uncompressed() {
        let r = route(RouteRedaction {
            drop_request_headers: vec!["cookie".into(), "authorization".into()],
            ..Default::default()
        });
        let plan = ResponseRedaction {
            profiles: vec!["analyst".into()],
            ..Default::default()
        };
        let edits = request_edits(&r, &view("203.0.113.77"), &plan);
        assert!(edits
            .set_headers
            .contains(&("accept-encoding".into(), "identity".into())));
        for name in ["range", "if-range", "cookie", "authorization"] {
            assert!(edits.remove_headers.contains(&name.to_string()), "{name}");
        }
    }
}
