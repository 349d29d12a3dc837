//! Why a token was refused: one value per fault, with the fixed text a
//! client may see and the short name the decision log records.

/// Why a token was refused. [`JwtError::description`] is safe to show a
/// client: it never contains the token or any claim value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.description())]
pub enum JwtError {
    TooLarge,
    Malformed,
    AlgNone,
    UnsupportedAlgorithm,
    AlgorithmNotAllowed,
    /// `jku`, `x5u`, `jwk` or `crit`: key locations and extensions chosen
    /// by the token's author are never trusted.
    UntrustedHeader(&'static str),
    WrongType,
    /// The token names a `kid` no configured key has (JWKS may need a refresh).
    UnknownKid,
    /// No key of the right type (e.g. an HS256 token against RSA keys).
    NoMatchingKey,
    BadSignature,
    MissingExp,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
}

impl JwtError {
    /// RFC 6750 `error_description`: fixed text, no token data.
    pub fn description(self) -> &'static str {
        match self {
            Self::TooLarge => "the token is too large",
            Self::Malformed => "the token is malformed",
            Self::AlgNone => "unsigned tokens are not accepted",
            Self::UnsupportedAlgorithm => "the token's algorithm is not supported",
            Self::AlgorithmNotAllowed => "the token's algorithm is not accepted",
            Self::UntrustedHeader(_) => "the token carries a header that is not accepted",
            Self::WrongType => "the token has the wrong type",
            Self::UnknownKid => "the token was signed with an unknown key",
            Self::NoMatchingKey => "no key can verify this token",
            Self::BadSignature => "the token signature is invalid",
            Self::MissingExp => "the token has no expiry",
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet",
            Self::WrongIssuer => "the token has the wrong issuer",
            Self::WrongAudience => "the token is not meant for this API",
        }
    }

    /// Short machine name for the decision log's `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooLarge => "jwt-too-large",
            Self::Malformed => "jwt-malformed",
            Self::AlgNone => "jwt-alg-none",
            Self::UnsupportedAlgorithm => "jwt-unsupported-alg",
            Self::AlgorithmNotAllowed => "jwt-alg-not-allowed",
            Self::UntrustedHeader(_) => "jwt-untrusted-header",
            Self::WrongType => "jwt-wrong-typ",
            Self::UnknownKid => "jwt-unknown-kid",
            Self::NoMatchingKey => "jwt-no-matching-key",
            Self::BadSignature => "jwt-bad-signature",
            Self::MissingExp => "jwt-missing-exp",
            Self::Expired => "jwt-expired",
            Self::NotYetValid => "jwt-not-yet-valid",
            Self::WrongIssuer => "jwt-wrong-issuer",
            Self::WrongAudience => "jwt-wrong-audience",
        }
    }
}
