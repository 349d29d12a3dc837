//! Builtins citygate adds to regorus as extensions. Extensions are looked up
//! before regorus's own builtins, so `time.now_ns` here replaces the guest
//! clock with the host's.

pub mod io_jwt;
mod time;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use regorus::{Engine, Value};

/// Why a builtin could not answer, in OPA's words for the same fault. Without
/// `strict_builtin_errors` it only makes the expression undefined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BuiltinError(String);

impl From<String> for BuiltinError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<&str> for BuiltinError {
    fn from(message: &str) -> Self {
        Self(message.to_string())
    }
}

pub type BuiltinResult = Result<Value, BuiltinError>;

type Builtin = fn(&[Value], u64) -> BuiltinResult;

/// The evaluation's "now", set from `Host::now_unix_nanos` before each
/// evaluation. Shared by every clone of the prepared engine; evaluations on
/// one VM never overlap.
#[derive(Debug, Clone, Default)]
pub struct EvalClock(Arc<AtomicU64>);

impl EvalClock {
    pub fn set(&self, now_unix_nanos: u64) {
        self.0.store(now_unix_nanos, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

const FIXED: &[(&str, u8, Builtin)] = &[
    ("time.now_ns", 0, time::now_ns),
    ("io.jwt.decode", 1, io_jwt::decode),
    ("io.jwt.decode_verify", 2, io_jwt::decode_verify),
];

/// Names of every extension, for the unknown-function check and the docs.
pub fn names() -> impl Iterator<Item = &'static str> {
    FIXED
        .iter()
        .map(|(name, _, _)| *name)
        .chain(io_jwt::VERIFY_BUILTINS.iter().map(|(name, _)| *name))
}

/// Registers the extensions. Without `strict`, a failing builtin makes its
/// expression undefined, as OPA does; with it, the evaluation fails.
pub fn register(engine: &mut Engine, clock: &EvalClock, strict: bool) -> anyhow::Result<()> {
    for (name, nargs, builtin) in FIXED {
        let clock = clock.clone();
        let builtin = *builtin;
        engine.add_extension(
            (*name).to_string(),
            *nargs,
            Box::new(move |args: Vec<Value>| outcome(builtin(&args, clock.get()), strict)),
        )?;
    }
    for (name, alg) in io_jwt::VERIFY_BUILTINS {
        let alg = *alg;
        engine.add_extension(
            (*name).to_string(),
            2,
            Box::new(move |args: Vec<Value>| outcome(io_jwt::verify(alg, &args), strict)),
        )?;
    }
    Ok(())
}

fn outcome(result: BuiltinResult, strict: bool) -> anyhow::Result<Value> {
    match result {
        Ok(value) => Ok(value),
        Err(error) if strict => Err(anyhow::Error::new(error)),
        Err(_) => Ok(Value::Undefined),
    }
}
