//! Who is calling: the authentication stage's output, read by rate limits,
//! the policy (`input.identity`) and redaction.

use std::cell::OnceCell;
use std::ops::Deref;
use std::rc::Rc;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    ApiKey,
    Jwt,
    /// An opaque bearer token the authorization server vouched for (RFC 7662).
    OpaqueToken,
    Mtls,
    Anonymous,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Jwt => "jwt",
            Self::OpaqueToken => "opaque_token",
            Self::Mtls => "mtls",
            Self::Anonymous => "anonymous",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub kind: IdentityKind,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    /// Verified JWT claims (empty for other kinds). Shared: a cached
    /// token's identity is cloned for each of its requests.
    pub claims: Rc<Claims>,
}

impl Identity {
    pub fn anonymous() -> Self {
        Self {
            kind: IdentityKind::Anonymous,
            subject: None,
            client_id: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            claims: Rc::default(),
        }
    }

    /// The claims of this identity alone, to change (a shared copy is
    /// copied first).
    pub fn claims_mut(&mut self) -> &mut serde_json::Map<String, serde_json::Value> {
        Rc::make_mut(&mut self.claims).map_mut()
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Claims, immutable once built, with the policy's view of them built at
/// most once: a verified token's identity is cached and its claims shared
/// by every request that presents it, so their policy input is converted
/// once per token rather than once per request. A changed copy
/// (`Rc::make_mut`) goes through [`Clone`], which leaves the policy's view
/// behind, so that view always matches the claims it was built from.
#[derive(Debug, Default)]
pub struct Claims {
    map: serde_json::Map<String, serde_json::Value>,
    policy_value: OnceCell<regorus::Value>,
}

impl Claims {
    pub fn new(map: serde_json::Map<String, serde_json::Value>) -> Self {
        Self {
            map,
            policy_value: OnceCell::new(),
        }
    }

    /// For changing a copy (tests, claim mapping): the policy's view is
    /// rebuilt from the changed claims.
    pub fn map_mut(&mut self) -> &mut serde_json::Map<String, serde_json::Value> {
        self.policy_value = OnceCell::new();
        &mut self.map
    }

    /// The claims as the policy sees them, built by `convert` on first use.
    pub fn policy_value(
        &self,
        convert: impl FnOnce(&serde_json::Map<String, serde_json::Value>) -> regorus::Value,
    ) -> regorus::Value {
        self.policy_value.get_or_init(|| convert(&self.map)).clone()
    }
}

impl Clone for Claims {
    fn clone(&self) -> Self {
        Self::new(self.map.clone())
    }
}

impl PartialEq for Claims {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl Deref for Claims {
    type Target = serde_json::Map<String, serde_json::Value>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl From<serde_json::Map<String, serde_json::Value>> for Claims {
    fn from(map: serde_json::Map<String, serde_json::Value>) -> Self {
        Self::new(map)
    }
}
