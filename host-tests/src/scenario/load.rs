//! Loading a scenario file: its config, credentials, and each case's
//! request and upstream reply with credential references expanded.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::credentials::{expand, Credentials};
use super::file::{Case, ConfigSource, Headers, RequestSpec, ScenarioFile, UpstreamSpec};

pub struct Scenario {
    pub path: PathBuf,
    pub file: ScenarioFile,
    /// `env_file` then `env`: the VM environment.
    pub env: std::collections::BTreeMap<String, String>,
    pub config_json: String,
    pub credentials: Option<Credentials>,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: ScenarioFile = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("parsing {}", path.display()))?;
        for case in &file.cases {
            if case.wasm_only.is_some() && case.envoy_only.is_some() {
                bail!(
                    "{}: case `{}`: `wasm_only` and `envoy_only` together mean no runner runs it",
                    path.display(),
                    case.name
                );
            }
            if case.repeat > 1 && case.expect_each.is_none() {
                bail!(
                    "{}: case `{}`: `repeat: {}` needs `expect_each` (what every repetition must answer; `expect` checks only the last)",
                    path.display(),
                    case.name,
                    case.repeat
                );
            }
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let config_json = match &file.config {
            ConfigSource::Path(p) => std::fs::read_to_string(dir.join(p))
                .with_context(|| format!("reading config {}", dir.join(p).display()))?,
            ConfigSource::Inline(value) => serde_json::to_string(value)?,
        };
        let credentials = match &file.credentials {
            Some(p) => Some(Credentials::load(&dir.join(p))?),
            None => None,
        };
        let mut env = match &file.env_file {
            Some(p) => crate::env_file::read_env_file(&dir.join(p))?,
            None => Default::default(),
        };
        env.extend(file.env.clone());
        Ok(Self {
            path: path.to_path_buf(),
            file,
            env,
            config_json,
            credentials,
        })
    }

    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    pub fn name(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn expand(&self, text: &str, now: i64) -> Result<String> {
        expand(text, self.credentials.as_ref(), now)
    }

    fn expand_headers(&self, headers: &Headers, now: i64) -> Result<Vec<(String, String)>> {
        headers
            .pairs()
            .into_iter()
            .map(|(n, v)| Ok((n, self.expand(&v, now)?)))
            .collect()
    }

    /// The case's request with credentials minted at `now` (Unix seconds).
    pub fn request(&self, case: &Case, now: i64) -> Result<PreparedRequest> {
        let spec: &RequestSpec = &case.request;
        let mut headers = self.expand_headers(&spec.headers, now)?;
        let body = match (&spec.body, &spec.json) {
            (Some(_), Some(_)) => bail!("case `{}`: request has both `body` and `json`", case.name),
            (Some(body), None) => self.expand(body, now)?.into_bytes(),
            (None, Some(json)) => {
                if !headers
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                {
                    headers.push(("content-type".into(), "application/json".into()));
                }
                self.expand(&serde_json::to_string(json)?, now)?
                    .into_bytes()
            }
            (None, None) => Vec::new(),
        };
        Ok(PreparedRequest {
            method: spec.method.clone(),
            path: self.expand(&spec.path, now)?,
            headers,
            body,
            chunk_size: spec.chunk_size,
            trailers: self.expand_headers(&spec.trailers, now)?,
            source: spec.source.clone(),
            peer_certificate: spec.peer_certificate.clone(),
        })
    }

    /// The upstream's reply for the case (default: `200 {}` as JSON).
    pub fn upstream(&self, case: &Case) -> Result<PreparedUpstream> {
        let Some(spec): Option<&UpstreamSpec> = case.upstream.as_ref() else {
            return Ok(PreparedUpstream {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: b"{}".to_vec(),
                chunk_size: None,
                trailers: Vec::new(),
            });
        };
        let mut headers = spec.headers.pairs();
        let mut body = match (&spec.body, &spec.json, &spec.file) {
            (Some(body), None, None) => body.clone().into_bytes(),
            (None, Some(json), None) => {
                if !headers
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                {
                    headers.push(("content-type".into(), "application/json".into()));
                }
                serde_json::to_vec(json)?
            }
            (None, None, Some(file)) => std::fs::read(self.dir().join(file))
                .with_context(|| format!("reading {}", file.display()))?,
            (None, None, None) => Vec::new(),
            _ => bail!(
                "case `{}`: upstream takes one of `body`, `json`, `file`",
                case.name
            ),
        };
        if spec.gzip {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&body)?;
            body = encoder.finish()?;
            headers.push(("content-encoding".into(), "gzip".into()));
        }
        Ok(PreparedUpstream {
            status: spec.status,
            headers,
            body,
            chunk_size: spec.chunk_size,
            trailers: spec.trailers.pairs(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct PreparedRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunk_size: Option<usize>,
    pub trailers: Vec<(String, String)>,
    pub source: Option<String>,
    pub peer_certificate: Option<super::file::PeerCertificateSpec>,
}

#[derive(Debug, Clone)]
pub struct PreparedUpstream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunk_size: Option<usize>,
    pub trailers: Vec<(String, String)>,
}

/// Scenario files below a directory (`*.yaml` / `*.yml` under any
/// `scenarios/` folder, or directly given), sorted.
pub fn find_scenarios(root: &Path) -> Result<Vec<PathBuf>> {
    if root.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut found = Vec::new();
    walk(root, &mut |path| {
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        let in_scenarios = path
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "scenarios");
        if is_yaml && in_scenarios {
            found.push(path.to_path_buf());
        }
    })?;
    found.sort();
    Ok(found)
}

/// Every file below `root`, depth first.
pub fn walk(root: &Path, visit: &mut dyn FnMut(&Path)) -> Result<()> {
    for entry in std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, visit)?;
        } else {
            visit(&path);
        }
    }
    Ok(())
}
