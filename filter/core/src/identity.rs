//! Who is calling: the authentication stage's output, read by rate limits,
//! the policy (`input.identity`) and redaction.

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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    pub kind: IdentityKind,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    /// Verified JWT claims (empty for other kinds).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Identity {
    pub fn anonymous() -> Self {
        Self {
            kind: IdentityKind::Anonymous,
            subject: None,
            client_id: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            claims: serde_json::Map::new(),
        }
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}
