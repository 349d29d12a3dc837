//! The attributes a query parameter references (`q`, `mq`, `orderBy`,
//! `attrs`, `pick`, `omit`, the geo-query). A filter, sort or projection
//! on an attribute a caller's profile removes answers questions about it
//! without ever showing it (`q=occupiedBy=="B-CG 1000"` tells which spot a
//! car occupies), so the policy must see every name. Parsing errs on the
//! safe side: anything it cannot read becomes [`ANY`].

use super::Api;

/// "Could be any attribute (or type)": what the input holds for a name
/// citygate cannot determine. No allowlist contains it.
pub const ANY: &str = "*";

/// The attribute names a `q` (NGSI-v2 simple query language or NGSI-LD
/// query language) or an `mq` expression tests. For `mq` the name is the
/// attribute whose metadata is tested.
pub fn q_attributes(api: Api, expression: &str, names: &mut Vec<String>) {
    let Some(terms) = split_terms(expression) else {
        names.push(ANY.to_string());
        return;
    };
    for term in terms {
        let term = term.trim();
        let term = term.strip_prefix('!').unwrap_or(term).trim_start();
        if term.is_empty() {
            continue;
        }
        let end = operator_start(term).unwrap_or(term.len());
        push_attribute(api, term.get(..end).unwrap_or_default().trim(), names);
    }
}

/// `orderBy`: comma-separated names, `!` for descending; `geo:distance`,
/// `dateCreated` and `dateModified` order by what every entity has.
pub fn order_by_attributes(api: Api, expression: &str, names: &mut Vec<String>) {
    for item in expression.split(',') {
        let name = item.trim();
        let name = name.strip_prefix('!').unwrap_or(name);
        if matches!(
            name,
            "geo:distance" | "dateCreated" | "dateModified" | "id" | "type"
        ) {
            continue;
        }
        push_attribute(api, name, names);
    }
}

/// `attrs`, `pick`, `omit`: comma-separated names; `*` is every attribute.
pub fn list_attributes(api: Api, list: &str, names: &mut Vec<String>) {
    for item in list.split(',') {
        let name = item.trim();
        if name == ANY {
            names.push(ANY.to_string());
        } else if !name.is_empty() {
            push_attribute(api, name, names);
        }
    }
}

/// The top-level attribute of a (possibly nested, possibly quoted) path,
/// or [`ANY`] when it holds anything a name may not.
fn push_attribute(api: Api, path: &str, names: &mut Vec<String>) {
    let name = match path.strip_prefix('\'') {
        // NGSI-v2 quotes a name that contains dots: 'a.b'.c
        Some(rest) if api == Api::V2 => rest.split_once('\'').map(|(name, _)| name),
        Some(_) => None,
        None => Some(path.split(['.', '[']).next().unwrap_or_default()),
    };
    match name {
        Some(name) if valid_name(api, name) => names.push(name.to_string()),
        _ => names.push(ANY.to_string()),
    }
}

/// Names the brokers accept: NGSI-v2 forbids `<>"'=;()` and controls (and
/// citygate accepts less, letters, digits, `_` and `-`); NGSI-LD names may
/// be IRIs. Anything else could be read by a broker differently.
fn valid_name(api: Api, name: &str) -> bool {
    let extra: &[u8] = match api {
        Api::V2 => b"_-",
        Api::Ld => b"_-:/#@",
    };
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// The terms of an expression: split at `;` (and), `|` (or) and
/// parentheses outside quoted values. `None` when a quote is not closed.
fn split_terms(expression: &str) -> Option<Vec<&str>> {
    let mut terms = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    for (at, c) in expression.char_indices() {
        match (quote, c) {
            (Some(open), c) if c == open => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ';' | '|' | '(' | ')') => {
                terms.push(expression.get(start..at)?);
                start = at + c.len_utf8();
            }
            (None, _) => {}
        }
    }
    if quote.is_some() {
        return None;
    }
    terms.push(expression.get(start..)?);
    Some(terms)
}

/// Where the comparison operator of a term starts (`==`, `!=`, `>`, `<`,
/// `>=`, `<=`, `~=`, `!~=`), outside a quoted name.
fn operator_start(term: &str) -> Option<usize> {
    let mut quoted = false;
    for (at, c) in term.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            '=' | '!' | '<' | '>' | '~' if !quoted => return Some(at),
            _ => {}
        }
    }
    None
}
