//! `citygate bundle`: turns a configuration source with file references into
//! the one self-contained JSON document Envoy and Istio take as the plugin
//! configuration. Rego modules and data stay editable as files; the bundle
//! is generated, committed, and checked against its source by a test.
//!
//! References (objects with exactly these keys):
//! - `{"$file": "path.json"}` → the parsed JSON file; `{"$file": "x.rego"}`
//!   (any other extension) → its text; `"$pick": "key"` takes one member.
//! - `{"$rego_dir": "dir"}` → `{"<name>.rego": "<source>"}` for every
//!   `*.rego` in `dir` except `*_test.rego`.
//!
//! Members named `//` are comments and are dropped.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};

pub fn bundle(source: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(source).with_context(|| format!("reading {}", source.display()))?;
    let document: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", source.display()))?;
    resolve(document, source.parent().unwrap_or(Path::new(".")))
}

/// The bundle as committed: pretty JSON with a trailing newline.
pub fn bundle_text(source: &Path) -> Result<String> {
    Ok(format!(
        "{}\n",
        serde_json::to_string_pretty(&bundle(source)?)?
    ))
}

fn resolve(value: Value, dir: &Path) -> Result<Value> {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(file)) = map.get("$file") {
                let picked = map.get("$pick").and_then(Value::as_str);
                if map.keys().any(|k| k != "$file" && k != "$pick") {
                    bail!("a `$file` reference takes only `$pick` beside it");
                }
                return include_file(&dir.join(file), picked);
            }
            if let Some(Value::String(rego_dir)) = map.get("$rego_dir") {
                if map.len() != 1 {
                    bail!("a `$rego_dir` reference stands alone");
                }
                return rego_modules(&dir.join(rego_dir));
            }
            let mut out = Map::new();
            for (key, item) in map {
                if key != "//" {
                    out.insert(key, resolve(item, dir)?);
                }
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => Ok(Value::Array(
            items
                .into_iter()
                .map(|item| resolve(item, dir))
                .collect::<Result<_>>()?,
        )),
        other => Ok(other),
    }
}

fn include_file(path: &Path, pick: Option<&str>) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value = if path.extension().is_some_and(|e| e == "json") {
        let parsed: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        resolve(parsed, path.parent().unwrap_or(Path::new(".")))?
    } else {
        Value::String(text)
    };
    match pick {
        None => Ok(value),
        Some(key) => value
            .get(key)
            .cloned()
            .ok_or_else(|| anyhow!("{} has no member `{key}`", path.display())),
    }
}

fn rego_modules(dir: &Path) -> Result<Value> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".rego") && !name.ends_with("_test.rego")
        })
        .collect();
    names.sort();
    let mut modules = Map::new();
    for path in names {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("bad file name {}", path.display()))?
            .to_string();
        modules.insert(name, Value::String(std::fs::read_to_string(&path)?));
    }
    if modules.is_empty() {
        bail!("no Rego modules in {}", dir.display());
    }
    Ok(Value::Object(modules))
}
