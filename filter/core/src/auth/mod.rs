//! Authentication: credentials → [`Identity`]. API keys (by digest), JWTs
//! from identity providers, and client certificates of devices; each route
//! says which it accepts, and which scopes or roles it requires.
//!
//! `Identity.client_id` is the application (API key `client_id`, JWT `azp`,
//! device mapping); an API key's own `id` is in `Identity.claims["api_key_id"]`
//! for rate limits and policies.

pub mod api_key;
pub mod challenge;
pub mod config;
pub mod credential;
pub mod headers;
pub mod introspection;
pub mod jwt;
pub mod mtls;
pub mod time;
pub mod token_source;

use std::cell::RefCell;
use std::collections::HashMap;

pub use config::{AuthConfig, AuthMethod, RouteAuth};

use crate::config::{ConfigError, RouteConfig};
use crate::deny::Denial;
use crate::host::Host;
use crate::http::UpstreamEdits;
use crate::identity::Identity;
use crate::metrics::Metric;
use crate::normalize::RequestView;
use api_key::ApiKeyStore;
use credential::{Found, Location};
use headers::IdentityHeaders;
use introspection::{Introspector, Lookup};
use jwt::provider::{JwtOutcome, Provider};
use jwt::JwtError;
use mtls::DeviceMapper;

pub enum AuthOutcome {
    Authenticated(Identity, UpstreamEdits),
    /// The denial and the precise reason for the decision log
    /// (`jwt-expired`, `api-key-revoked`, …); the client sees less.
    Denied(Denial, &'static str),
    /// A remote JWKS has not arrived yet. The shell waits up to
    /// `max_wait_ms` (resuming when keys arrive) and then asks again with
    /// waiting disallowed, which yields a 503 — never an allow.
    KeysPending {
        max_wait_ms: u64,
    },
    /// An opaque token this worker has no answer for: the pipeline asks
    /// the authorization server and judges the request again.
    Introspect(IntrospectionCall),
}

/// A token to introspect. `Debug` shows the provider only: the token is a
/// credential.
#[derive(Clone)]
pub struct IntrospectionCall {
    provider: usize,
    token: Box<str>,
}

impl std::fmt::Debug for IntrospectionCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionCall")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

const MISSING: &str = "missing-credentials";

/// Per route: the providers its `jwt` and `introspection` methods may use.
#[derive(Debug, Default)]
struct RoutePlan {
    providers: Vec<usize>,
    introspectors: Vec<usize>,
}

pub struct Authenticator {
    api_keys: ApiKeyStore,
    providers: Vec<Provider>,
    introspectors: Vec<Introspector>,
    devices: DeviceMapper,
    headers: IdentityHeaders,
    /// Every query parameter that can carry a credential.
    query_params: Vec<String>,
    routes: HashMap<String, RoutePlan>,
    /// In-flight JWKS fetches of this VM: callout token → provider.
    fetches: RefCell<HashMap<u32, usize>>,
}

impl Authenticator {
    pub fn compile(config: &AuthConfig, routes: &[RouteConfig]) -> Result<Self, ConfigError> {
        let api_keys = ApiKeyStore::compile(&config.api_keys)?;
        let mut providers = Vec::new();
        for (index, provider) in config.jwt.providers.iter().enumerate() {
            let compiled = Provider::compile(index, provider)?;
            if providers.iter().any(|p: &Provider| p.name == compiled.name) {
                return Err(ConfigError::new(
                    format!("$.auth.jwt.providers[{index}].name"),
                    format!("duplicate provider name `{}`", compiled.name),
                ));
            }
            providers.push(compiled);
        }
        let mut introspectors: Vec<Introspector> = Vec::new();
        for (index, provider) in config.introspection.providers.iter().enumerate() {
            let compiled = Introspector::compile(index, provider)?;
            if introspectors.iter().any(|p| p.name == compiled.name) {
                return Err(ConfigError::new(
                    format!("$.auth.introspection.providers[{index}].name"),
                    format!("duplicate provider name `{}`", compiled.name),
                ));
            }
            introspectors.push(compiled);
        }
        let mut query_params = vec![api_keys.query_param().to_string()];
        for provider in &providers {
            query_params.extend(provider.query_params().map(str::to_string));
        }
        for provider in &introspectors {
            query_params.extend(provider.query_params().map(str::to_string));
        }
        let names = ProviderNames {
            jwt: providers.iter().map(|p| p.name.as_str()).collect(),
            introspection: introspectors.iter().map(|p| p.name.as_str()).collect(),
        };
        let mut plans = HashMap::new();
        for (index, route) in routes.iter().enumerate() {
            let plan = plan_route(&route.auth, &names, &format!("$.routes[{index}].auth"))?;
            plans.insert(route.name.clone(), plan);
        }
        Ok(Self {
            api_keys,
            devices: DeviceMapper::compile(&config.mtls)?,
            headers: IdentityHeaders::compile(&config.identity_headers)?,
            providers,
            introspectors,
            query_params,
            routes: plans,
            fetches: RefCell::new(HashMap::new()),
        })
    }

    pub fn authenticate(
        &self,
        view: &RequestView,
        route: &RouteConfig,
        realm: &str,
        host: &dyn Host,
    ) -> AuthOutcome {
        let outcome = self.judge(view, route, realm, host);
        if let AuthOutcome::Denied(..) = outcome {
            host.count(Metric::AuthDenied, 1);
        }
        outcome
    }

    fn judge(
        &self,
        view: &RequestView,
        route: &RouteConfig,
        realm: &str,
        host: &dyn Host,
    ) -> AuthOutcome {
        let auth = &route.auth;
        let Some(plan) = self.routes.get(&route.name) else {
            // A route compiled without a plan cannot happen; fail closed.
            return AuthOutcome::Denied(
                challenge::missing_credentials(realm, &auth.methods),
                MISSING,
            );
        };
        for method in &auth.methods {
            match method {
                AuthMethod::ApiKey => {
                    let Some(found) = self.api_keys.find(view, auth.credentials_in_query) else {
                        continue;
                    };
                    return match self
                        .api_keys
                        .authenticate(&found.value, host.now_unix_seconds())
                    {
                        Ok(identity) => self.admit(view, route, realm, identity, Some(&found)),
                        Err(error) => AuthOutcome::Denied(
                            challenge::invalid_api_key(realm, error),
                            error.reason(),
                        ),
                    };
                }
                AuthMethod::Jwt => {
                    let Some((provider, found)) = self.find_jwt(view, route, plan) else {
                        continue;
                    };
                    // On a route that also introspects, a token that is not
                    // a JWT of a configured issuer is the authorization
                    // server's to judge. Decoding the claimed `iss` costs a
                    // base64 and JSON pass: only such routes pay it.
                    let introspects = auth.methods.contains(&AuthMethod::Introspection);
                    if introspects && !issued_by(provider, &found.value) {
                        continue;
                    }
                    let Some(provider) = provider else {
                        // A token nobody can parse is malformed, not of
                        // another issuer.
                        let error = jwt::decode_unverified(&found.value)
                            .err()
                            .unwrap_or(JwtError::WrongIssuer);
                        return AuthOutcome::Denied(
                            challenge::invalid_token(realm, error),
                            error.reason(),
                        );
                    };
                    return match provider.authenticate(&found.value, host) {
                        JwtOutcome::Verified(identity) => {
                            self.admit(view, route, realm, identity, Some(&found))
                        }
                        JwtOutcome::Invalid(error) => AuthOutcome::Denied(
                            challenge::invalid_token(realm, error),
                            error.reason(),
                        ),
                        JwtOutcome::KeysPending { max_wait_ms } => {
                            AuthOutcome::KeysPending { max_wait_ms }
                        }
                    };
                }
                AuthMethod::Introspection => {
                    let Some((index, found)) = self.find_opaque(view, route, plan) else {
                        continue;
                    };
                    let Some(introspector) = self.introspectors.get(index) else {
                        continue;
                    };
                    return match introspector.lookup(&found.value, host) {
                        Lookup::Active(identity) => {
                            self.admit(view, route, realm, identity, Some(&found))
                        }
                        Lookup::Inactive(reason) => {
                            AuthOutcome::Denied(challenge::inactive_token(realm), reason)
                        }
                        Lookup::Unknown => AuthOutcome::Introspect(IntrospectionCall {
                            provider: index,
                            token: found.value.into_boxed_str(),
                        }),
                    };
                }
                AuthMethod::Mtls => {
                    let identity = view
                        .peer_certificate
                        .as_ref()
                        .and_then(|c| self.devices.identify(c));
                    if let Some(identity) = identity {
                        return self.admit(view, route, realm, identity, None);
                    }
                }
            }
        }
        if auth.anonymous {
            return self.admit(view, route, realm, Identity::anonymous(), None);
        }
        AuthOutcome::Denied(
            challenge::missing_credentials(realm, &auth.methods),
            MISSING,
        )
    }

    /// The token and the provider to verify it: the first token any of the
    /// route's providers reads, then the provider whose issuer the token
    /// claims (verified afterwards). `Some((None, _))`: nobody issues it.
    fn find_jwt<'a>(
        &'a self,
        view: &RequestView,
        route: &RouteConfig,
        plan: &RoutePlan,
    ) -> Option<(Option<&'a Provider>, Found)> {
        let candidates: Vec<&Provider> = plan
            .providers
            .iter()
            .filter_map(|i| self.providers.get(*i))
            .collect();
        let found = candidates
            .iter()
            .find_map(|p| p.find_token(view, route.auth.credentials_in_query))?;
        let readers: Vec<&Provider> = candidates
            .into_iter()
            .filter(|p| p.reads(&found.location))
            .collect();
        let provider = match readers.as_slice() {
            [only] => Some(*only),
            _ => {
                let issuer = Provider::claimed_issuer(&found.value);
                readers
                    .into_iter()
                    .find(|p| issuer.as_deref() == Some(p.issuer.as_str()))
            }
        };
        Some((provider, found))
    }

    /// The first token one of the route's introspection providers reads,
    /// with the first provider (in the route's order) that reads it there.
    fn find_opaque(
        &self,
        view: &RequestView,
        route: &RouteConfig,
        plan: &RoutePlan,
    ) -> Option<(usize, Found)> {
        let allow_query = route.auth.credentials_in_query;
        plan.introspectors.iter().find_map(|&index| {
            let found = self
                .introspectors
                .get(index)?
                .find_token(view, allow_query)?;
            Some((index, found))
        })
    }

    /// Starts the call for an opaque token (from the request's own
    /// context, so the answer comes back to it); the callout's token.
    pub fn start_introspection(
        &self,
        call: &IntrospectionCall,
        host: &dyn Host,
    ) -> Result<u32, introspection::StartError> {
        match self.introspectors.get(call.provider) {
            Some(introspector) => introspector.start(&call.token, host),
            None => Err("introspection-dispatch-failed"),
        }
    }

    /// The authorization server's answer to `callout` (`status` 0 for a
    /// failed call), kept for the request's next judgement.
    pub fn accept_introspection(
        &self,
        call: &IntrospectionCall,
        callout: u32,
        status: u16,
        body: &[u8],
        host: &dyn Host,
    ) {
        if let Some(introspector) = self.introspectors.get(call.provider) {
            introspector.accept(&call.token, callout, status, body, host);
        }
    }

    /// The request waiting for `callout` ended first.
    pub fn abandon_introspection(&self, call: &IntrospectionCall, callout: u32) {
        if let Some(introspector) = self.introspectors.get(call.provider) {
            introspector.abandon(callout);
        }
    }

    /// Route requirements, then the upstream edits for an accepted identity.
    fn admit(
        &self,
        view: &RequestView,
        route: &RouteConfig,
        realm: &str,
        identity: Identity,
        credential: Option<&Found>,
    ) -> AuthOutcome {
        let auth = &route.auth;
        let scopes_ok = auth
            .required_scopes
            .iter()
            .all(|s| identity.scopes.contains(s));
        let roles_ok = auth.required_roles.is_empty()
            || auth.required_roles.iter().any(|r| identity.has_role(r));
        if !scopes_ok || !roles_ok {
            return AuthOutcome::Denied(
                challenge::insufficient_scope(realm, &identity, &auth.required_scopes),
                "insufficient-scope",
            );
        }
        let mut edits = UpstreamEdits::default();
        let params: Vec<&str> = self.query_params.iter().map(String::as_str).collect();
        edits.path = credential::path_without_params(view, &params);
        let used = credential.map(|found| &found.location);
        let mut strip: Vec<Location> = Vec::new();
        if let Some(location) = used.filter(|_| !auth.forward_credential) {
            strip.push(location.clone());
        }
        // A credential the gateway did not use (a key beside a token, a
        // second provider's token) is not verified: an upstream that reads
        // it must not act on it, and keys must not land in upstream logs.
        for other in self.credentials_in_request(view) {
            if used != Some(&other.location) && !strip.contains(&other.location) {
                strip.push(other.location);
            }
        }
        edits.merge(credential::strip_all(view, &strip));
        edits.merge(self.headers.edits(&identity));
        AuthOutcome::Authenticated(identity, edits)
    }

    /// Every query parameter that can carry a credential.
    pub fn credential_query_params(&self) -> impl Iterator<Item = &str> {
        self.query_params.iter().map(String::as_str)
    }

    /// Every credential the request carries where this gateway reads
    /// credentials (headers and cookies; query parameters are removed from
    /// the upstream path separately), whether or not its route accepts it.
    fn credentials_in_request(&self, view: &RequestView) -> Vec<Found> {
        let mut found = self.api_keys.in_headers(view);
        for provider in &self.providers {
            found.extend(provider.tokens_in_headers(view));
        }
        for provider in &self.introspectors {
            found.extend(provider.tokens_in_headers(view));
        }
        found
    }

    /// Root-context tick: start due JWKS fetches (one VM per process wins
    /// each). Returns the callout tokens started.
    pub fn on_tick(&self, host: &dyn Host) -> Vec<u32> {
        let mut started = Vec::new();
        for (index, provider) in self.providers.iter().enumerate() {
            if let Some(store) = provider.jwks() {
                store.sync(host);
                if let Some(token) = store.start_fetch(host) {
                    self.fetches.borrow_mut().insert(token, index);
                    started.push(token);
                }
            }
        }
        started
    }

    /// Whether any provider fetches its keys remotely (the shell then ticks
    /// faster so waiting requests resume promptly).
    pub fn has_remote_keys(&self) -> bool {
        self.providers.iter().any(|p| p.jwks().is_some())
    }

    /// A callout reply. Returns `false` when the token is not a JWKS fetch.
    pub fn on_callout_response(
        &self,
        token: u32,
        status: u16,
        body: &[u8],
        host: &dyn Host,
    ) -> bool {
        let Some(index) = self.fetches.borrow_mut().remove(&token) else {
            return false;
        };
        if let Some(store) = self.providers.get(index).and_then(Provider::jwks) {
            store.accept_response(status, body, host);
        }
        true
    }
}

/// Whether `token` claims the issuer of `provider` (unverified; the
/// provider verifies it afterwards).
fn issued_by(provider: Option<&Provider>, token: &str) -> bool {
    provider.is_some_and(|p| Provider::claimed_issuer(token).as_deref() == Some(p.issuer.as_str()))
}

/// The names of the configured providers, for the routes' references.
struct ProviderNames<'a> {
    jwt: Vec<&'a str>,
    introspection: Vec<&'a str>,
}

fn plan_route(auth: &RouteAuth, names: &ProviderNames, at: &str) -> Result<RoutePlan, ConfigError> {
    for (i, method) in auth.methods.iter().enumerate() {
        if auth
            .methods
            .get(..i)
            .is_some_and(|before| before.contains(method))
        {
            return Err(ConfigError::new(
                format!("{at}.methods[{i}]"),
                "listed twice",
            ));
        }
    }
    let requires_something = !auth.required_scopes.is_empty() || !auth.required_roles.is_empty();
    if requires_something && (auth.anonymous || auth.methods.is_empty()) {
        return Err(ConfigError::new(
            at,
            "`required_scopes`/`required_roles` need credentials: list `methods` and do not allow `anonymous`",
        ));
    }
    let providers = plan_providers(
        auth,
        AuthMethod::Jwt,
        ("jwt", "jwt_providers", "$.auth.jwt.providers"),
        &auth.jwt_providers,
        &names.jwt,
        at,
    )?;
    let introspectors = plan_providers(
        auth,
        AuthMethod::Introspection,
        (
            "introspection",
            "introspection_providers",
            "$.auth.introspection.providers",
        ),
        &auth.introspection_providers,
        &names.introspection,
        at,
    )?;
    Ok(RoutePlan {
        providers,
        introspectors,
    })
}

/// The providers a route's `method` may use: the ones it names, else all.
/// `labels` are the method's name, the route field and the providers' path.
fn plan_providers(
    auth: &RouteAuth,
    method: AuthMethod,
    (label, field, providers_at): (&str, &str, &str),
    named: &[String],
    configured: &[&str],
    at: &str,
) -> Result<Vec<usize>, ConfigError> {
    let uses = auth.methods.contains(&method);
    if uses && configured.is_empty() {
        return Err(ConfigError::new(
            format!("{at}.methods"),
            format!("`{label}` needs at least one provider in {providers_at}"),
        ));
    }
    if !named.is_empty() && !uses {
        return Err(ConfigError::new(
            format!("{at}.{field}"),
            format!("only applies when `methods` contains `{label}`"),
        ));
    }
    if !uses {
        return Ok(Vec::new());
    }
    if named.is_empty() {
        return Ok((0..configured.len()).collect());
    }
    named
        .iter()
        .enumerate()
        .map(|(i, name)| {
            configured.iter().position(|p| p == name).ok_or_else(|| {
                ConfigError::new(
                    format!("{at}.{field}[{i}]"),
                    format!("no provider named `{name}`"),
                )
            })
        })
        .collect()
}
