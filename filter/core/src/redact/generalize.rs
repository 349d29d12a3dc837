//! Generalization: numbers and coordinates rounded, timestamps truncated,
//! dates of birth cut to the year, IP addresses cut to their network. A value
//! that cannot be generalized as asked is withheld (`None`): passing it on
//! unchanged would leak exactly the precision the rule exists to remove.

use std::net::IpAddr;

use serde_json::{Number, Value};

use super::config::TimeUnit;

pub fn round_number(number: &Number, decimals: u8) -> Option<Number> {
    if number.is_i64() || number.is_u64() {
        return Some(number.clone());
    }
    let x = number.as_f64()?;
    let scale = 10f64.powi(i32::from(decimals));
    let rounded = (x * scale).round() / scale;
    Number::from_f64(if rounded.is_finite() { rounded } else { x })
}

/// Coordinates inside a value: numbers (Open311 `lat`/`long`), arrays of
/// them (GeoJSON `coordinates`, `bbox`), GeoJSON objects, and NGSI
/// `geo:point` strings `"lat, lon"`. Strings inside GeoJSON objects (the
/// `type` tags) are left alone.
pub fn coordinates(value: &Value, decimals: u8) -> Option<Value> {
    match value {
        Value::Number(n) => round_number(n, decimals).map(Value::Number),
        Value::String(text) => geo_point(text, decimals).map(Value::String),
        Value::Array(items) => items
            .iter()
            .map(|item| coordinates(item, decimals))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        Value::Object(fields) => {
            let mut out = serde_json::Map::new();
            for (key, item) in fields {
                let generalized = match item {
                    Value::String(_) | Value::Bool(_) | Value::Null => item.clone(),
                    _ => coordinates(item, decimals)?,
                };
                out.insert(key.clone(), generalized);
            }
            Some(Value::Object(out))
        }
        Value::Null => Some(Value::Null),
        Value::Bool(_) => None,
    }
}

fn geo_point(text: &str, decimals: u8) -> Option<String> {
    let (lat, lon) = text.split_once(',')?;
    let lat: f64 = lat.trim().parse().ok()?;
    let lon: f64 = lon.trim().parse().ok()?;
    if !(lat.is_finite() && lon.is_finite()) {
        return None;
    }
    let d = usize::from(decimals);
    Some(format!("{lat:.d$}, {lon:.d$}"))
}

/// An RFC 3339 timestamp or a plain date, split where truncation needs it.
struct Timestamp<'a> {
    year: &'a str,
    month: &'a str,
    day: &'a str,
    /// `Some((separator, hour, zone))` when a time part follows the date.
    time: Option<(char, &'a str, &'a str)>,
}

fn parse_timestamp(text: &str) -> Option<Timestamp<'_>> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let year = text.get(0..4)?;
    let month = text.get(5..7)?;
    let day = text.get(8..10)?;
    let dashes = text.get(4..5)? == "-" && text.get(7..8)? == "-";
    if !(dashes && digits(year) && digits(month) && digits(day)) {
        return None;
    }
    let rest = text.get(10..)?;
    if rest.is_empty() {
        return Some(Timestamp {
            year,
            month,
            day,
            time: None,
        });
    }
    let separator = rest.chars().next()?;
    if !matches!(separator, 'T' | 't' | ' ') {
        return None;
    }
    let hour = rest.get(1..3)?;
    if !digits(hour) || rest.get(3..4)? != ":" {
        return None;
    }
    // Seconds and fractions are dropped whatever the unit; the zone is kept
    // so the truncated instant stays in the caller's offset.
    let after_minutes = rest.get(4..)?;
    let clock_len = after_minutes
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b':' || *b == b'.')
        .count();
    let zone = after_minutes.get(clock_len..)?;
    let zone_ok = zone.is_empty()
        || zone.eq_ignore_ascii_case("z")
        || ((zone.starts_with('+') || zone.starts_with('-'))
            && zone.len() == 6
            && zone.get(3..4) == Some(":"));
    if !zone_ok {
        return None;
    }
    Some(Timestamp {
        year,
        month,
        day,
        time: Some((separator, hour, zone)),
    })
}

pub fn timestamp(text: &str, unit: TimeUnit) -> Option<String> {
    let ts = parse_timestamp(text)?;
    let (month, day) = match unit {
        TimeUnit::Hour | TimeUnit::Day => (ts.month, ts.day),
        TimeUnit::Month => (ts.month, "01"),
        TimeUnit::Year => ("01", "01"),
    };
    let date = format!("{}-{month}-{day}", ts.year);
    Some(match ts.time {
        None => date,
        Some((separator, hour, zone)) => {
            let hour = if unit == TimeUnit::Hour { hour } else { "00" };
            format!("{date}{separator}{hour}:00:00{zone}")
        }
    })
}

/// Epoch seconds or milliseconds floored to the hour or day; months and
/// years need a calendar and are withheld instead.
pub fn epoch(number: &Number, unit: TimeUnit) -> Option<Number> {
    let value = number.as_u64()?;
    let millis = value >= 100_000_000_000;
    let seconds_per_unit: u64 = match unit {
        TimeUnit::Hour => 3600,
        TimeUnit::Day => 86_400,
        TimeUnit::Month | TimeUnit::Year => return None,
    };
    let unit_len = if millis {
        seconds_per_unit * 1000
    } else {
        seconds_per_unit
    };
    Some(Number::from(value - value % unit_len))
}

/// `1984-05-12` (or a timestamp) → `"1984"`; an already generalized year stays.
pub fn birth_year(text: &str) -> Option<String> {
    if text.len() == 4 && text.bytes().all(|b| b.is_ascii_digit()) {
        return Some(text.to_string());
    }
    parse_timestamp(text).map(|ts| ts.year.to_string())
}

pub fn ip(address: IpAddr, v4_prefix: u8, v6_prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = u32::MAX
                .checked_shl(32 - u32::from(v4_prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((bits & mask).into())
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => ip(IpAddr::V4(v4), v4_prefix, v6_prefix),
            None => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(v6_prefix.min(128)))
                    .unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_round_and_integers_stay() {
        let n = |v: Value| match v {
            Value::Number(n) => n,
            _ => unreachable!(),
        };
        assert_eq!(round_number(&n(json!(48.1374)), 3), Some(n(json!(48.137))));
        assert_eq!(round_number(&n(json!(48.137)), 3), Some(n(json!(48.137))));
        assert_eq!(round_number(&n(json!(11.5766)), 2), Some(n(json!(11.58))));
        assert_eq!(round_number(&n(json!(42)), 0), Some(n(json!(42))));
    }

    #[test]
    fn coordinates_in_geojson_geo_points_and_numbers() {
        let point = json!({"type":"Point","coordinates":[11.5761,48.1374]});
        assert_eq!(
            coordinates(&point, 2),
            Some(json!({"type":"Point","coordinates":[11.58,48.14]}))
        );
        let line = json!({"type":"LineString","coordinates":[[11.5761,48.1374],[11.5801,48.1399]]});
        assert_eq!(
            coordinates(&line, 3),
            Some(json!({"type":"LineString","coordinates":[[11.576,48.137],[11.58,48.14]]}))
        );
        assert_eq!(
            coordinates(&json!("48.1374, 11.5761"), 3),
            Some(json!("48.137, 11.576"))
        );
        assert_eq!(
            coordinates(&json!("48.137,11.576"), 3),
            Some(json!("48.137, 11.576"))
        );
        assert_eq!(coordinates(&json!("Marienplatz 1"), 3), None);
        assert_eq!(coordinates(&json!(true), 3), None);
    }

    #[test]
    fn timestamps_truncate_and_keep_their_zone() {
        let t = "2026-11-20T08:15:42.123+01:00";
        assert_eq!(
            timestamp(t, TimeUnit::Hour).unwrap(),
            "2026-11-20T08:00:00+01:00"
        );
        assert_eq!(
            timestamp(t, TimeUnit::Day).unwrap(),
            "2026-11-20T00:00:00+01:00"
        );
        assert_eq!(
            timestamp(t, TimeUnit::Month).unwrap(),
            "2026-11-01T00:00:00+01:00"
        );
        assert_eq!(
            timestamp(t, TimeUnit::Year).unwrap(),
            "2026-01-01T00:00:00+01:00"
        );
        assert_eq!(
            timestamp("2026-11-20T08:15:42Z", TimeUnit::Hour).unwrap(),
            "2026-11-20T08:00:00Z"
        );
        assert_eq!(
            timestamp("2026-11-20", TimeUnit::Month).unwrap(),
            "2026-11-01"
        );
        assert_eq!(timestamp("yesterday", TimeUnit::Hour), None);
        assert_eq!(timestamp("2026-11-20T08:15:42 CET", TimeUnit::Hour), None);
        let once = timestamp(t, TimeUnit::Hour).unwrap();
        assert_eq!(timestamp(&once, TimeUnit::Hour).unwrap(), once);
    }

    #[test]
    fn epoch_seconds_and_millis_floor() {
        let n = |v: u64| Number::from(v);
        assert_eq!(
            epoch(&n(1_795_680_942), TimeUnit::Hour),
            Some(n(1_795_680_000))
        );
        assert_eq!(
            epoch(&n(1_795_680_942_123), TimeUnit::Day),
            Some(n(1_795_651_200_000))
        );
        assert_eq!(epoch(&n(1_795_680_942), TimeUnit::Month), None);
    }

    #[test]
    fn birth_dates_become_years() {
        assert_eq!(birth_year("1984-05-12").as_deref(), Some("1984"));
        assert_eq!(birth_year("1984").as_deref(), Some("1984"));
        assert_eq!(birth_year("12.05.1984"), None);
    }

    #[test]
    fn ip_host_parts_are_zeroed() {
        let v4: IpAddr = "203.0.113.77".parse().unwrap();
        assert_eq!(ip(v4, 24, 48).to_string(), "203.0.113.0");
        assert_eq!(ip(v4, 16, 48).to_string(), "203.0.0.0");
        assert_eq!(ip(v4, 0, 48).to_string(), "0.0.0.0");
        assert_eq!(ip(v4, 32, 48), v4);
        let v6: IpAddr = "2001:db8:abcd:12:1:2:3:4".parse().unwrap();
        assert_eq!(ip(v6, 24, 48).to_string(), "2001:db8:abcd::");
        let mapped: IpAddr = "::ffff:203.0.113.77".parse().unwrap();
        assert_eq!(ip(mapped, 24, 48).to_string(), "203.0.113.0");
    }
}
