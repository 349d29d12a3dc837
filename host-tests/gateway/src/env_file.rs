//! VM environment files: one `NAME=VALUE` per line, `#` comments. They hold
//! the values of the `"${env:NAME}"` secrets of a plugin configuration
//! (`policies/config/demo.env`, a package's `citygate.env`), and are read by
//! the CLI, the scenario loader, the soak and the tests alike.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};

/// `NAME=VALUE` pairs (the value may itself contain `=`).
pub fn parse_env(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("`{pair}` is not NAME=VALUE"))
        })
        .collect()
}

/// Reads a `NAME=VALUE` per line file (`#` comments).
pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    parse_env(&lines)
}
