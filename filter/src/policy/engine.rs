//! Parses and prepares the Rego modules once (in `on_configure`); per
//! request only a clone of the prepared engine, the input and one rule
//! evaluation remain.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::time::Duration;

use regorus::unstable::{Lexer, Rule, RuleHead, Source, TokenKind, BUILTINS};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};

use super::builtins::{self, EvalClock};
use super::config::PolicyConfig;
use super::input::json;
use crate::config::ConfigError;

/// Interpreter work units between two reads of the clock: small enough that
/// a budget of a few milliseconds is kept, large enough to cost nothing.
const TIMER_CHECK_INTERVAL: u32 = 32;
/// A policy may take at most this long; more is a misconfiguration.
const MAX_EVAL_BUDGET_MICROS: u64 = 10_000_000;
/// Deepest nesting of brackets a module may have. regorus' parser tries a
/// comprehension before an array at every `[`, so its time grows
/// exponentially with nesting: a module nesting ~40 `[` took minutes (found
/// by fuzzing the configuration), long enough to stall Envoy's main thread
/// in `on_configure`. Real policies nest a handful of levels.
const MAX_REGO_NESTING: usize = 24;
/// Longest error text logged (locations and a short message).
const MAX_ERROR_CHARS: usize = 160;

/// Words that may stand before `(` without being a function call.
const NOT_CALLS: &[&str] = &[
    "not", "if", "in", "some", "every", "else", "with", "as", "contains", "import", "package",
    "default", "set", "true", "false", "null", "print",
];

/// The compiled policy, ready to be cloned per request.
#[derive(Debug, Clone)]
pub struct PreparedPolicy {
    engine: Engine,
    clock: EvalClock,
}

impl PreparedPolicy {
    pub fn prepare(config: &PolicyConfig) -> Result<Self, ConfigError> {
        let mut prepared = Self::load(config)?;
        // Analyzing and scheduling the modules happens once, here, so that
        // work (and its errors) stays out of the request path. Nothing is
        // evaluated: there is no request yet.
        prepared
            .engine
            .compile_with_entrypoint(&config.entrypoint.as_str().into())
            .map_err(|e| ConfigError::new("$.policy.entrypoint", one_line(&e.to_string())))?;
        prepared.check_entrypoint(&config.entrypoint, "$.policy.entrypoint")?;
        Ok(prepared)
    }

    /// Parses the modules, loads the data and registers the extensions.
    pub fn load(config: &PolicyConfig) -> Result<Self, ConfigError> {
        if config.modules.is_empty() {
            return Err(ConfigError::new(
                "$.policy.modules",
                "at least one Rego module is required",
            ));
        }
        if !(1..=MAX_EVAL_BUDGET_MICROS).contains(&config.max_eval_micros) {
            return Err(ConfigError::new(
                "$.policy.max_eval_micros",
                format!("must be between 1 and {MAX_EVAL_BUDGET_MICROS}"),
            ));
        }
        let mut engine = Engine::new();
        engine.set_rego_v0(config.rego_v0);
        engine.set_strict_builtin_errors(config.strict_builtin_errors);
        engine.set_gather_prints(true);
        let clock = EvalClock::default();
        builtins::register(&mut engine, &clock, config.strict_builtin_errors)
            .map_err(|e| ConfigError::new("$.policy", one_line(&e.to_string())))?;
        for (name, source) in &config.modules {
            if let Some(line) = nesting_beyond(source, MAX_REGO_NESTING) {
                return Err(ConfigError::new(
                    module_path(name),
                    format!("{name}:{line}: brackets nest deeper than {MAX_REGO_NESTING} levels"),
                ));
            }
            engine
                .add_policy(name.clone(), source.clone())
                .map_err(|e| ConfigError::new(module_path(name), one_line(&e.to_string())))?;
        }
        engine
            .add_data(json(&config.data))
            .map_err(|e| ConfigError::new("$.policy.data", one_line(&e.to_string())))?;
        check_functions(&mut engine, config)?;
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: Duration::from_micros(config.max_eval_micros),
            check_interval: NonZeroU32::new(TIMER_CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
        });
        Ok(Self { engine, clock })
    }

    /// The rule must be declared by some module: a typo would otherwise deny
    /// every request as "undefined".
    pub fn check_entrypoint(&self, entrypoint: &str, at: &str) -> Result<(), ConfigError> {
        if !entrypoint.starts_with("data.") {
            return Err(ConfigError::new(at, "must start with `data.`"));
        }
        let mut engine = self.engine.clone();
        let declared = engine.get_modules().iter().any(|module| {
            let package = module.package.refr.span().text();
            module.policy.iter().any(|rule| {
                let head = match rule.as_ref() {
                    Rule::Spec { head, .. } => match head {
                        RuleHead::Compr { refr, .. }
                        | RuleHead::Set { refr, .. }
                        | RuleHead::Func { refr, .. } => refr,
                    },
                    Rule::Default { refr, .. } => refr,
                };
                let full = format!("data.{package}.{}", head.span().text());
                full == entrypoint || full.starts_with(&format!("{entrypoint}."))
            })
        });
        if declared {
            Ok(())
        } else {
            Err(ConfigError::new(
                at,
                format!("no module declares the rule `{entrypoint}`"),
            ))
        }
    }

    /// Evaluates `entrypoint` for one request. `now_unix_nanos` is what
    /// `time.now_ns` and `io.jwt.decode_verify` see.
    pub fn evaluate(
        &self,
        entrypoint: &str,
        input: Value,
        now_unix_nanos: u64,
    ) -> Result<Value, String> {
        self.clock.set(now_unix_nanos);
        let mut engine = self.engine.clone();
        engine.set_input(input);
        engine
            .eval_rule(entrypoint.to_string())
            .map_err(|e| describe_eval_error(&e))
    }

    /// For the Rego test runner: a fresh clone with the same modules.
    pub(super) fn engine(&self) -> Engine {
        self.engine.clone()
    }

    pub(super) fn clock(&self) -> &EvalClock {
        &self.clock
    }
}

/// The line where `[`, `{` and `(` first nest deeper than `limit`, outside
/// strings and comments; `None` when they never do.
fn nesting_beyond(source: &str, limit: usize) -> Option<usize> {
    let (mut depth, mut line) = (0usize, 1usize);
    let mut chars = source.chars();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            // A comment runs to the end of the line (consumed by the guard).
            '#' if chars.by_ref().any(|c| c == '\n') => line += 1,
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => break,
                        _ => escaped = false,
                    }
                }
            }
            '`' => {
                for c in chars.by_ref() {
                    match c {
                        '`' => break,
                        '\n' => line += 1,
                        _ => {}
                    }
                }
            }
            '[' | '{' | '(' => {
                depth += 1;
                if depth > limit {
                    return Some(line);
                }
            }
            ']' | '}' | ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

fn module_path(name: &str) -> String {
    format!(
        "$.policy.modules[{}]",
        serde_json::Value::String(name.to_string())
    )
}

/// regorus errors come as `\n--> file:line:col\n | source…\nerror: message`;
/// the config error wants `file:line:col: message` on one line.
pub fn one_line(error: &str) -> String {
    let location = error
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("--> "));
    let message = error
        .lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| error.trim());
    let text = match location {
        Some(location) => format!("{}: {}", location.trim(), message.trim()),
        None => message.split_whitespace().collect::<Vec<_>>().join(" "),
    };
    text.chars().take(MAX_ERROR_CHARS * 2).collect()
}

/// An evaluation error for the log: location and message, with quoted text
/// removed (a builtin's message may quote a value from the input) and bounded.
fn describe_eval_error(error: &anyhow::Error) -> String {
    let text = error.to_string();
    if text.contains("exceeded time limit") {
        return "policy evaluation exceeded its time budget".to_string();
    }
    let mut out = String::new();
    let mut quote: Option<char> = None;
    for c in one_line(&text).chars() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                out.push(c);
            }
            Some(_) => {}
            None => {
                if c == '"' || c == '`' {
                    quote = Some(c);
                    out.push(c);
                    out.push('…');
                } else {
                    out.push(c);
                }
            }
        }
    }
    format!(
        "policy evaluation failed: {}",
        out.chars().take(MAX_ERROR_CHARS).collect::<String>()
    )
}

/// regorus resolves functions only when a call is evaluated; an unknown
/// builtin (an OPA builtin regorus lacks, a typo) must instead reject the
/// configuration. Calls are found in the token stream: a dotted name
/// followed by `(`.
fn check_functions(engine: &mut Engine, config: &PolicyConfig) -> Result<(), ConfigError> {
    let user_functions = user_function_names(engine);
    let extensions: HashSet<&str> = builtins::names().collect();
    for (name, source) in &config.modules {
        let source = Source::from_contents(name.clone(), source.clone())
            .map_err(|e| ConfigError::new(module_path(name), one_line(&e.to_string())))?;
        let mut lexer = Lexer::new(&source);
        let mut path: Vec<String> = Vec::new();
        let mut start = (0, 0);
        let mut after_dot = false;
        let mut previous_was_dot = false;
        loop {
            let token = lexer
                .next_token()
                .map_err(|e| ConfigError::new(module_path(name), one_line(&e.to_string())))?;
            let text = token.1.text();
            match token.0 {
                TokenKind::Eof => break,
                TokenKind::Ident if after_dot => path.push(text.to_string()),
                TokenKind::Ident if previous_was_dot => path.clear(),
                TokenKind::Ident => {
                    start = (token.1.line, token.1.col);
                    path = vec![text.to_string()];
                }
                TokenKind::Symbol if text == "." && !path.is_empty() && !after_dot => {}
                TokenKind::Symbol if text == "(" && !path.is_empty() && !after_dot => {
                    let call = path.join(".");
                    let known = (path.len() == 1 && NOT_CALLS.contains(&call.as_str()))
                        || BUILTINS.contains_key(call.as_str())
                        || extensions.contains(call.as_str())
                        || path
                            .last()
                            .is_some_and(|last| user_functions.contains(last.as_str()));
                    if !known {
                        return Err(ConfigError::new(
                            module_path(name),
                            format!(
                                "{name}:{}:{}: unknown function `{call}` (not a builtin citygate provides)",
                                start.0, start.1
                            ),
                        ));
                    }
                    path.clear();
                }
                _ => path.clear(),
            }
            after_dot = token.0 == TokenKind::Symbol && text == "." && !path.is_empty();
            previous_was_dot = token.0 == TokenKind::Symbol && text == ".";
        }
    }
    Ok(())
}

/// Last segment of every function a module defines (`f(x) := …`).
fn user_function_names(engine: &mut Engine) -> HashSet<String> {
    let mut names = HashSet::new();
    for module in engine.get_modules() {
        for rule in &module.policy {
            let refr = match rule.as_ref() {
                Rule::Spec {
                    head: RuleHead::Func { refr, .. },
                    ..
                } => refr,
                Rule::Default { refr, args, .. } if !args.is_empty() => refr,
                _ => continue,
            };
            let text = refr.span().text();
            if let Some(last) = text.rsplit('.').next() {
                names.insert(last.to_string());
            }
        }
    }
    names
}
