use super::*;

fn rules(allow: &[&str], deny: &[&str]) -> NetworkRules {
    let config = IpRulesConfig {
        allow: allow.iter().map(|s| s.to_string()).collect(),
        deny: deny.iter().map(|s| s.to_string()).collect(),
    };
    NetworkRules::compile(&config, "$.gateway.ip_rules").unwrap()
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn no_rules_pass_every_client_even_an_unknown_one() {
    let none = rules(&[], &[]);
    assert_eq!(none.judge(ip("198.51.100.4"), "gateway"), Ok(()));
    assert_eq!(none.judge(None, "gateway"), Ok(()));
}

#[test]
fn deny_wins_over_allow_in_ipv4_and_ipv6() {
    let r = rules(
        &["192.0.2.0/24", "2001:db8::/32"],
        &["192.0.2.128/25", "2001:db8:bad::/48"],
    );
    assert_eq!(r.judge(ip("192.0.2.5"), "route"), Ok(()));
    assert_eq!(r.judge(ip("2001:db8:c17::9"), "route"), Ok(()));
    let denied = r.judge(ip("192.0.2.200"), "route").unwrap_err();
    assert_eq!(
        denied.reason,
        "client address in denied network 192.0.2.128/25 (route ip_rules)"
    );
    let denied_v6 = r.judge(ip("2001:db8:bad::1"), "route").unwrap_err();
    assert_eq!(
        denied_v6.reason,
        "client address in denied network 2001:db8:bad::/48 (route ip_rules)"
    );
    let outside = r.judge(ip("203.0.113.7"), "route").unwrap_err();
    assert_eq!(
        outside.reason,
        "client address outside the allowed networks (route ip_rules)"
    );
}

#[test]
fn a_deny_list_alone_passes_everyone_else() {
    let r = rules(&[], &["198.51.100.0/24"]);
    assert_eq!(r.judge(ip("203.0.113.7"), "gateway"), Ok(()));
    assert!(r.judge(ip("198.51.100.4"), "gateway").is_err());
}

#[test]
fn an_ipv4_mapped_ipv6_client_is_judged_as_the_ipv4_client() {
    let r = rules(&["192.0.2.0/24"], &["198.51.100.0/24"]);
    assert!(r.judge(ip("::ffff:198.51.100.4"), "gateway").is_err());
    assert_eq!(r.judge(ip("::ffff:192.0.2.9"), "gateway"), Ok(()));
}

#[test]
fn a_client_without_an_address_is_refused_wherever_a_rule_applies() {
    assert_eq!(
        rules(&[], &["198.51.100.0/24"])
            .judge(None, "gateway")
            .unwrap_err()
            .reason,
        "client address unknown and gateway ip_rules apply"
    );
    assert!(rules(&["0.0.0.0/0", "::/0"], &[])
        .judge(None, "route")
        .is_err());
}

#[test]
fn a_bare_address_is_one_host() {
    let r = rules(&["192.0.2.7", "2001:db8::7"], &[]);
    assert_eq!(r.judge(ip("192.0.2.7"), "route"), Ok(()));
    assert_eq!(r.judge(ip("2001:db8::7"), "route"), Ok(()));
    assert!(r.judge(ip("192.0.2.8"), "route").is_err());
}

#[test]
fn bad_entries_name_their_json_path() {
    let bad = |allow: &[&str], deny: &[&str]| {
        let config = IpRulesConfig {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        };
        NetworkRules::compile(&config, "$.routes[3].ip_rules").unwrap_err()
    };
    let err = bad(&["192.0.2.0/24", "192.0.2.0/33"], &[]);
    assert_eq!(err.path, "$.routes[3].ip_rules.allow[1]");
    assert!(
        err.message.contains("not a CIDR network"),
        "{}",
        err.message
    );
    let err = bad(&[], &["city-hall"]);
    assert_eq!(err.path, "$.routes[3].ip_rules.deny[0]");
    let err = bad(&["10.1.2.3/8"], &[]);
    assert_eq!(err.path, "$.routes[3].ip_rules.allow[0]");
    assert!(
        err.message.contains("write the network `10.0.0.0/8`"),
        "{}",
        err.message
    );
}

#[test]
fn the_compiled_rules_judge_gateway_and_route_apart() {
    let routes: Vec<RouteConfig> = serde_json::from_value(serde_json::json!([
        {"name": "open", "match": {"path_prefix": "/open"}},
        {"name": "staff", "match": {"path_prefix": "/staff"},
         "ip_rules": {"allow": ["192.0.2.0/24"]}},
    ]))
    .unwrap();
    let gateway = IpRulesConfig {
        allow: vec![],
        deny: vec!["198.51.100.0/24".into()],
    };
    let compiled = IpRules::compile(&gateway, &routes).unwrap();
    assert!(compiled.check_gateway(ip("203.0.113.7")).is_ok());
    let refusal = compiled.check_gateway(ip("198.51.100.4")).unwrap_err();
    let denial = refusal.denial();
    assert_eq!((denial.status, denial.stage), (403, Stage::IpRules));
    assert_eq!(denial.problem, "client-address-refused");
    assert!(!denial.detail.contains("198.51.100"), "{}", denial.detail);
    assert!(refusal.reason.contains("gateway ip_rules"));
    assert!(compiled.check_route(0, ip("203.0.113.7")).is_ok());
    assert!(compiled.check_route(1, ip("203.0.113.7")).is_err());
    assert!(compiled.check_route(1, ip("192.0.2.1")).is_ok());
}
