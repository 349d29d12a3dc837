//! One identity provider: where its tokens are read, which keys verify
//! them, and how their claims become an identity.

use std::rc::Rc;

use jsonwebtoken::Algorithm;

use super::cache::TokenCache;
use super::jwks::JwksStore;
use super::keys::KeySet;
use super::verify::{self, JwtError, VerifyOptions};
use super::{claims, decode_unverified};
use crate::auth::config::{
    check_provider_name, ClaimMappingConfig, JwtKeysConfig, JwtProviderConfig,
};
use crate::auth::credential::{self, Found};
use crate::auth::token_source::TokenSources;
use crate::config::ConfigError;
use crate::host::Host;
use crate::identity::Identity;
use crate::metrics::Metric;
use crate::normalize::RequestView;

/// Verified tokens kept per provider and VM.
pub const CACHE_CAPACITY: usize = 4096;
/// Refused tokens kept per provider and VM, and for how long: a token
/// refused for what it is (its signature, times, issuer, audience, header)
/// is refused the same way while the keys stay the same, so a repeated bad
/// token (a leaked expired one, a forged one replayed) costs a lookup, not
/// a signature check. Fewer than verified ones: they are the attacker's
/// choice and each may be `max_token_bytes` long.
pub const REFUSED_CACHE_CAPACITY: usize = 256;
pub const REFUSED_CACHE_SECONDS: u64 = 300;

enum Keys {
    Inline(Rc<KeySet>),
    Remote(JwksStore),
}

pub enum JwtOutcome {
    Verified(Identity),
    Invalid(JwtError),
    /// The remote key set has not arrived yet.
    KeysPending {
        max_wait_ms: u64,
    },
}

pub struct Provider {
    pub name: String,
    pub issuer: String,
    options: VerifyOptions,
    sources: TokenSources,
    keys: Keys,
    claims: ClaimMappingConfig,
    cache: TokenCache,
    refused: TokenCache<JwtError>,
}

impl Provider {
    pub fn compile(index: usize, config: &JwtProviderConfig) -> Result<Self, ConfigError> {
        let at = format!("$.auth.jwt.providers[{index}]");
        check_provider_name(&at, &config.name)?;
        if config.issuer.is_empty() {
            return Err(ConfigError::new(
                format!("{at}.issuer"),
                "must not be empty",
            ));
        }
        if config.algorithms.is_empty() {
            return Err(ConfigError::new(
                format!("{at}.algorithms"),
                "list the accepted algorithms, e.g. [\"RS256\"]",
            ));
        }
        let mut algorithms = Vec::new();
        for (i, name) in config.algorithms.iter().enumerate() {
            let alg: Algorithm = name.parse().map_err(|_| {
                ConfigError::new(
                    format!("{at}.algorithms[{i}]"),
                    format!("`{name}` is not one of RS256/384/512, PS256/384/512, ES256/384, EdDSA, HS256/384/512"),
                )
            })?;
            algorithms.push(alg);
        }
        if config.max_token_bytes == 0 {
            return Err(ConfigError::new(
                format!("{at}.max_token_bytes"),
                "must be positive",
            ));
        }
        let sources = TokenSources::compile(&config.sources, &format!("{at}.sources"))?;
        let keys = keys(
            &config.keys,
            &config.name,
            &algorithms,
            &format!("{at}.keys"),
        )?;
        Ok(Self {
            name: config.name.clone(),
            issuer: config.issuer.clone(),
            options: VerifyOptions {
                algorithms,
                issuer: Some(config.issuer.clone()),
                audiences: config.audiences.clone(),
                clock_skew_seconds: config.clock_skew_seconds,
                require_exp: config.require_exp,
                required_typ: config.typ.clone(),
                max_token_bytes: config.max_token_bytes,
            },
            sources,
            keys,
            claims: config.claims.clone(),
            cache: TokenCache::new(CACHE_CAPACITY),
            refused: TokenCache::new(REFUSED_CACHE_CAPACITY),
        })
    }

    /// Query parameters this provider reads tokens from.
    pub fn query_params(&self) -> impl Iterator<Item = &str> {
        self.sources.query_params()
    }

    pub fn find_token(&self, view: &RequestView, allow_query: bool) -> Option<Found> {
        self.sources.find(view, allow_query)
    }

    /// Every token in this provider's header and cookie sources.
    pub fn tokens_in_headers(&self, view: &RequestView) -> Vec<Found> {
        self.sources.in_headers(view)
    }

    /// Whether this provider reads tokens at `location` (several providers
    /// may share `Authorization: Bearer`; then `iss` picks one).
    pub fn reads(&self, location: &credential::Location) -> bool {
        self.sources.reads(location)
    }

    /// The unverified `iss`, to choose among providers (then verified).
    pub fn claimed_issuer(token: &str) -> Option<String> {
        let (_, claims) = decode_unverified(token).ok()?;
        claims.get("iss")?.as_str().map(str::to_string)
    }

    /// Remote providers: the key store the shell drives.
    pub fn jwks(&self) -> Option<&JwksStore> {
        match &self.keys {
            Keys::Remote(store) => Some(store),
            Keys::Inline(_) => None,
        }
    }

    pub fn authenticate(&self, token: &str, host: &dyn Host) -> JwtOutcome {
        if token.len() > self.options.max_token_bytes {
            return JwtOutcome::Invalid(JwtError::TooLarge);
        }
        let now = host.now_unix_seconds();
        // The keys and their generation, or how long to wait for a remote
        // set that has not arrived yet.
        let current = match &self.keys {
            Keys::Inline(keys) => Ok((keys.clone(), 0)),
            Keys::Remote(store) => store.keys(host).ok_or(store.max_wait_ms()),
        };
        // A token verified before, against the same keys, is still valid
        // until its cache entry ends: a lookup by its exact bytes is all a
        // repeated token costs (no decoding, no signature check).
        if let Ok((_, generation)) = &current {
            if let Some(identity) = self.cache.get(token, now, *generation) {
                host.count(Metric::JwtCacheHit, 1);
                return JwtOutcome::Verified(identity);
            }
            if let Some(error) = self.refused.get(token, now, *generation) {
                return JwtOutcome::Invalid(error);
            }
        }
        // Garbage is refused before waiting for keys that cannot help.
        if let Err(error) = decode_unverified(token) {
            return JwtOutcome::Invalid(error);
        }
        let (keys, generation) = match current {
            Ok(current) => current,
            Err(max_wait_ms) => return JwtOutcome::KeysPending { max_wait_ms },
        };
        match verify::verify_token(token, &keys, &self.options, now) {
            Ok(claims) => {
                let valid_until = verify::valid_until(&claims, &self.options);
                let identity = claims::identity(claims, &self.claims);
                if let Some(until) = valid_until {
                    self.cache
                        .insert(token, identity.clone(), until, generation, now);
                }
                JwtOutcome::Verified(identity)
            }
            Err(JwtError::UnknownKid) => {
                // The issuer may have rotated: refetch (rate-limited) so the
                // client's retry finds the new key. This request is refused.
                if let Keys::Remote(store) = &self.keys {
                    store.request_refetch(host);
                }
                JwtOutcome::Invalid(JwtError::UnknownKid)
            }
            Err(error) => {
                if stays_refused(error) {
                    self.refused.insert(
                        token,
                        error,
                        now.saturating_add(REFUSED_CACHE_SECONDS),
                        generation,
                        now,
                    );
                }
                JwtOutcome::Invalid(error)
            }
        }
    }
}

/// Whether a token refused with `error` is refused the same way on every
/// later request while the keys stay the same. Not a token that is not
/// valid yet (time makes it valid), nor one with an unknown `kid` (each
/// such request asks for a refetch, and the new keys may know it).
fn stays_refused(error: JwtError) -> bool {
    !matches!(error, JwtError::NotYetValid | JwtError::UnknownKid)
}

fn keys(
    config: &JwtKeysConfig,
    provider: &str,
    algorithms: &[Algorithm],
    at: &str,
) -> Result<Keys, ConfigError> {
    let given = [
        config.jwks.is_some(),
        config.pem.is_some(),
        config.hmac_secret.is_some(),
        config.remote.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ConfigError::new(
            at,
            "exactly one of `jwks`, `pem`, `hmac_secret`, `remote` is required",
        ));
    }
    if config.kid.is_some() && config.pem.is_none() && config.hmac_secret.is_none() {
        return Err(ConfigError::new(
            format!("{at}.kid"),
            "only applies to `pem` and `hmac_secret`",
        ));
    }
    let inline = |result: Result<KeySet, super::KeyError>, field: &str| {
        let set = result.map_err(|e| ConfigError::new(format!("{at}.{field}"), e.0))?;
        let set = match &config.kid {
            Some(kid) => set.with_kid(kid),
            None => set,
        };
        let usable = set
            .keys()
            .iter()
            .any(|key| algorithms.iter().any(|alg| key.key_type.verifies(*alg)));
        if !usable {
            return Err(ConfigError::new(
                format!("{at}.{field}"),
                "no key here verifies any of the provider's algorithms",
            ));
        }
        Ok(Keys::Inline(Rc::new(set)))
    };
    if let Some(jwks) = &config.jwks {
        return inline(KeySet::from_jwks_json(&jwks.to_string()), "jwks");
    }
    if let Some(pem) = &config.pem {
        return inline(KeySet::from_pem(pem), "pem");
    }
    if let Some(secret) = &config.hmac_secret {
        return inline(KeySet::from_hmac_secret(secret.0.as_bytes()), "hmac_secret");
    }
    let Some(remote) = &config.remote else {
        return Err(ConfigError::new(at, "no keys configured"));
    };
    if algorithms
        .iter()
        .any(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
    {
        return Err(ConfigError::new(
            format!("{at}.remote"),
            "a remote JWKS never supplies HMAC keys; HS* needs `hmac_secret`",
        ));
    }
    let fields = [
        ("cluster", &remote.cluster),
        ("authority", &remote.authority),
        ("path", &remote.path),
    ];
    if let Some((field, _)) = fields.iter().find(|(_, v)| v.is_empty()) {
        return Err(ConfigError::new(
            format!("{at}.remote.{field}"),
            "must not be empty",
        ));
    }
    if !remote.path.starts_with('/') {
        return Err(ConfigError::new(
            format!("{at}.remote.path"),
            "must start with `/`",
        ));
    }
    if remote.refresh_seconds == 0 || remote.timeout_ms == 0 {
        return Err(ConfigError::new(
            format!("{at}.remote"),
            "`refresh_seconds` and `timeout_ms` must be positive",
        ));
    }
    Ok(Keys::Remote(JwksStore::new(provider, remote.clone())))
}
