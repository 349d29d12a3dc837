//! The four gateways under test, as data: each is the shared bootstrap
//! (`envoy/bench/bench.yaml`) plus its own filter chain
//! (`envoy/bench/variants/<file>`).

use std::fmt;

use clap::ValueEnum;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// (a) Envoy without filters.
    NoFilter,
    /// (b) a proxy-wasm filter that reads the headers and continues.
    WasmFloor,
    /// (c) citygate with its whole pipeline.
    Citygate,
    /// (d) jwt_authn + local_ratelimit + rbac.
    Native,
}

impl Variant {
    /// Interleaving order within a round: A B C D.
    pub const ALL: [Variant; 4] = [
        Variant::NoFilter,
        Variant::WasmFloor,
        Variant::Citygate,
        Variant::Native,
    ];

    pub fn letter(self) -> char {
        match self {
            Variant::NoFilter => 'a',
            Variant::WasmFloor => 'b',
            Variant::Citygate => 'c',
            Variant::Native => 'd',
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::NoFilter => "no-filter",
            Variant::WasmFloor => "wasm-floor",
            Variant::Citygate => "citygate",
            Variant::Native => "native",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Variant::NoFilter => "Envoy, no filter",
            Variant::WasmFloor => "wasm floor (read headers, continue)",
            Variant::Citygate => "citygate pipeline",
            Variant::Native => "Envoy C++: jwt_authn + local_ratelimit + rbac",
        }
    }

    /// The filter chain file under `envoy/bench/variants/`.
    pub fn chain_file(self) -> &'static str {
        match self {
            Variant::NoFilter => "no-filter.yaml",
            Variant::WasmFloor => "wasm-floor.yaml",
            Variant::Citygate => "citygate.yaml",
            Variant::Native => "native.yaml",
        }
    }

    /// Every variant gets the same request bytes, the operator's bearer
    /// token included; those without auth ignore it.
    ///
    /// Whether a request without credentials must be refused (checked
    /// before measuring, so a variant that silently does nothing is caught).
    pub fn enforces_auth(self) -> bool {
        matches!(self, Variant::Citygate | Variant::Native)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}) {}", self.letter(), self.name())
    }
}

/// What the load generator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// One entity by id; answered without a body (request pipeline only).
    Request,
    /// The 16 KiB NGSI entity list (citygate minimizes it).
    Response,
    /// The city mix (envoy/bench/city-mix.lua replays it; no single path).
    CityMix,
}

impl Workload {
    pub fn path(self) -> &'static str {
        match self {
            Workload::Request => "/v2/entities/urn:ngsi-ld:Vehicle:example-city:bus-001",
            Workload::Response => "/v2/entities?type=Vehicle",
            Workload::CityMix => "/",
        }
    }
}
