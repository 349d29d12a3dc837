//! IP rules in the pipeline: where they sit (before routing and before
//! authentication), what they count and what the decision line says.

use super::*;

const CITY: &str = r#"{
  "gateway": {"trusted_hops": 1, "ip_rules": {"deny": ["198.51.100.0/24", "2001:db8:bad::/48"]}},
  "routes": [
    {"name": "open", "match": {"path_prefix": "/open"}, "auth": {"anonymous": true}},
    {"name": "staff", "match": {"path_prefix": "/staff"},
     "ip_rules": {"allow": ["192.0.2.0/24", "2001:db8:c17::/48"]}}
  ]
}"#;

/// A request through one trusted proxy (the socket peer) for `client`,
/// with whatever the client itself wrote left of it.
fn from(path: &str, forwarded_for: &str) -> RawRequest {
    let mut raw = get(path, &[("x-forwarded-for", forwarded_for)]);
    raw.connection.source = Some("10.0.0.2:40000".into());
    raw
}

fn decision_line(host: &MemoryHost) -> serde_json::Value {
    serde_json::from_str(host.log_lines().last().unwrap()).unwrap()
}

#[test]
fn a_denied_network_is_refused_before_routing_so_it_learns_no_path() {
    let gw = gateway(CITY);
    for path in ["/open/parking", "/no-such-api"] {
        let host = MemoryHost::default();
        let reply = gw.admit(&from(path, "198.51.100.4"), &host).unwrap_err();
        assert_eq!(reply.status, 403, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["type"], "urn:citygate:problem:client-address-refused");
        assert!(!String::from_utf8_lossy(&reply.body).contains("198.51.100"));
        assert_eq!(host.counter(Metric::IpRulesDenied), 1);
        assert_eq!(host.counter(Metric::RouteUnmatched), 0);
        let line = decision_line(&host);
        assert_eq!(line["stage"], "ip_rules");
        assert_eq!(
            line["reason"],
            "client address in denied network 198.51.100.0/24 (gateway ip_rules)"
        );
    }
}

#[test]
fn a_route_allow_list_refuses_before_authentication_and_passes_to_it() {
    let gw = gateway(CITY);
    let host = MemoryHost::default();
    // No credentials: outside the allow list it is 403, not 401.
    let reply = gw
        .admit(&from("/staff/rota", "203.0.113.7"), &host)
        .unwrap_err();
    assert_eq!(reply.status, 403);
    assert_eq!(host.counter(Metric::AuthDenied), 0);
    assert_eq!(
        host.named_counters
            .borrow()
            .get(&metrics::route_denied_name("staff", Stage::IpRules))
            .copied(),
        Some(1)
    );
    let reply = gw
        .admit(&from("/staff/rota", "192.0.2.5"), &host)
        .unwrap_err();
    assert_eq!(reply.status, 401);
    let reply = gw
        .admit(&from("/staff/rota", "2001:db8:c17::9"), &host)
        .unwrap_err();
    assert_eq!(reply.status, 401);
}

#[test]
fn what_the_client_writes_left_of_the_trusted_hop_changes_nothing() {
    let gw = gateway(CITY);
    let host = MemoryHost::default();
    // The denied client claims an allowed address: still its own network.
    let reply = gw
        .admit(&from("/staff/rota", "192.0.2.5, 198.51.100.4"), &host)
        .unwrap_err();
    assert_eq!(reply.status, 403);
    let reply = gw
        .admit(&from("/staff/rota", "192.0.2.5, 203.0.113.7"), &host)
        .unwrap_err();
    assert_eq!(reply.status, 403);
    // And a claim of a denied network does not hurt an allowed client.
    assert!(gw
        .admit(&from("/open/parking", "198.51.100.4, 203.0.113.7"), &host)
        .is_ok());
    // An IPv4-mapped address is the IPv4 client.
    let reply = gw
        .admit(&from("/open/parking", "::ffff:198.51.100.4"), &host)
        .unwrap_err();
    assert_eq!(reply.status, 403);
    let reply = gw
        .admit(&from("/open/parking", "2001:db8:bad::1"), &host)
        .unwrap_err();
    assert_eq!(reply.status, 403);
}

#[test]
fn a_bad_network_is_a_configuration_error_naming_its_path() {
    let config = CITY.replace("2001:db8:c17::/48", "2001:db8:c17::1/48");
    let err = CompiledConfig::from_json(config.as_bytes(), &|_| None)
        .err()
        .unwrap();
    assert_eq!(err.path, "$.routes[1].ip_rules.allow[1]");
    assert!(err.message.contains("host bits set"), "{}", err.message);
}
