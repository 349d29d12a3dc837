//! Parses and prepares the Rego modules once (in `on_configure`). Policies
//! regorus can compile run as bytecode on its VM (RVM), one VM reused for
//! every request; the others run in its interpreter, a clone of the
//! prepared engine per request. Either way only the input and one
//! evaluation remain per request.

use std::cell::RefCell;
use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::{Program, RegoVM};
use regorus::unstable::{Lexer, Rule, RuleHead, Source, TokenKind, BUILTINS};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{CompiledPolicy, Engine, Value};

use super::builtins::{self, EvalClock};
use super::config::PolicyConfig;
use super::input::json;
use crate::config::ConfigError;

/// Work units between two reads of the clock by the evaluation timer. Each
/// read is a hostcall in Envoy (WASI `clock_time_get`): at 32 the city
/// pack's decision read it 4 times, at 256 once (its start). A unit is one
/// VM instruction or interpreter step, so 256 of them overshoot a budget
/// by well under a millisecond, against a default budget of 50 ms.
const TIMER_CHECK_INTERVAL: u32 = 256;
/// A policy may take at most this long; more is a misconfiguration.
const MAX_EVAL_BUDGET_MICROS: u64 = 10_000_000;
/// Deepest nesting of `[` and `{` a module may have. regorus' parser tries a
/// comprehension before an array, set or object at every `[` and `{`, so
/// its time doubles with each level: 16 balanced `[` took seconds, 24 would
/// take many minutes (both found by fuzzing the configuration), long enough
/// to stall Envoy's main thread in `on_configure`. At 10 a module parses in
/// milliseconds; real policies nest a handful of levels, and deeper data
/// belongs in `policy.data`.
const MAX_REGO_COLLECTION_NESTING: usize = 10;
/// Deepest nesting of all brackets, `(` included: parentheses cost no
/// backtracking, but the parser recurses once per level.
const MAX_REGO_NESTING: usize = 32;
/// Longest error text logged (locations and a short message).
const MAX_ERROR_CHARS: usize = 160;

/// Words that may stand before `(` without being a function call.
const NOT_CALLS: &[&str] = &[
    "not", "if", "in", "some", "every", "else", "with", "as", "contains", "import", "package",
    "default", "set", "true", "false", "null", "print",
];

/// Which of regorus's two evaluators runs the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluator {
    /// The bytecode VM (RVM): about ten times faster than the interpreter.
    Vm,
    /// The tree-walking interpreter: every Rego feature and every citygate
    /// builtin.
    Interpreter,
}

impl Evaluator {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vm => "vm",
            Self::Interpreter => "interpreter",
        }
    }
}

/// The compiled policy, ready to evaluate requests.
#[derive(Debug)]
pub struct PreparedPolicy {
    engine: Engine,
    clock: EvalClock,
    /// The bytecode of the entrypoints when the policy runs on the VM, else
    /// why it runs in the interpreter (for the log).
    vm: Result<PolicyVm, VmUnavailable>,
    /// Functions the modules call, for choosing the evaluator.
    calls: HashSet<String>,
    mode: EvaluatorMode,
    timer: ExecutionTimerConfig,
    strict_builtin_errors: bool,
}

/// Why a policy runs in the interpreter rather than on the VM (the
/// configuration log line says it; with `evaluator: "vm"` it is an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmUnavailable {
    #[error("the configuration asks for it")]
    Configured,
    /// citygate's builtins and `print`, which the VM cannot call.
    #[error("it calls {0}")]
    Calls(String),
    #[error("strict_builtin_errors is set")]
    StrictBuiltinErrors,
    /// The VM's compiler refused the policy (e.g. `with`), in one line.
    #[error("{0}")]
    Compile(String),
    #[error("not compiled yet")]
    NotCompiled,
}

/// Why an evaluation failed. Safe to log: quoted values from the input are
/// left out of the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("policy evaluation exceeded its time budget")]
    TimeBudget,
    #[error("{0}")]
    Failed(String),
}

/// The policy's entrypoints compiled to RVM bytecode, and the one VM that
/// runs them. A VM resets its state at the start of every execution;
/// evaluations on one Wasm VM never overlap, so one is enough.
struct PolicyVm {
    program: Arc<Program>,
    entrypoints: Vec<String>,
    machine: RefCell<RegoVM>,
}

impl PolicyVm {
    fn new(
        compiled: CompiledPolicy,
        program: Arc<Program>,
        data: Value,
        timer: ExecutionTimerConfig,
        entrypoints: Vec<String>,
    ) -> Result<Self, VmUnavailable> {
        let mut machine = RegoVM::new_with_policy(compiled);
        machine.load_program(program.clone());
        machine
            .set_data(data)
            .map_err(|e| VmUnavailable::Compile(one_line(&e.to_string())))?;
        // The wall-clock budget bounds the evaluation, as in the interpreter;
        // the VM's default instruction cap (25 000) would deny policies that
        // the interpreter runs within their budget.
        machine.set_max_instructions(usize::MAX);
        machine.set_execution_timer_config(Some(timer));
        Ok(Self {
            program,
            entrypoints,
            machine: RefCell::new(machine),
        })
    }
}

impl std::fmt::Debug for PolicyVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyVm")
            .field("entrypoints", &self.entrypoints)
            .field("instructions", &self.program.instructions.len())
            .finish()
    }
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
        prepared.choose_evaluator(&[config.entrypoint.as_str()], "$.policy.evaluator")?;
        Ok(prepared)
    }

    /// Which evaluator runs the policy, and why it is the interpreter when
    /// it is (for the configuration log line).
    pub fn evaluator(&self) -> (Evaluator, Option<&VmUnavailable>) {
        match &self.vm {
            Ok(_) => (Evaluator::Vm, None),
            Err(reason) => (Evaluator::Interpreter, Some(reason)),
        }
    }

    /// Whether `entrypoint` is evaluated on the VM (else the interpreter).
    pub(super) fn runs_on_vm(&self, entrypoint: &str) -> bool {
        self.vm
            .as_ref()
            .is_ok_and(|vm| vm.entrypoints.iter().any(|e| e == entrypoint))
    }

    /// Compiles `entrypoints` to VM bytecode when the configuration allows
    /// the VM and the policy needs nothing the VM lacks; otherwise the
    /// interpreter runs the policy (with `evaluator: "vm"` that is a
    /// configuration error, reported at `at`).
    pub fn choose_evaluator(&mut self, entrypoints: &[&str], at: &str) -> Result<(), ConfigError> {
        self.vm = if self.mode == EvaluatorMode::Interpreter {
            Err(VmUnavailable::Configured)
        } else {
            self.compile_vm(entrypoints)
        };
        match &self.vm {
            Err(reason) if self.mode == EvaluatorMode::Vm => Err(ConfigError::new(
                at,
                format!("the policy cannot run on the VM: {reason}"),
            )),
            _ => Ok(()),
        }
    }

    fn compile_vm(&mut self, entrypoints: &[&str]) -> Result<PolicyVm, VmUnavailable> {
        // citygate's builtins are interpreter extensions the VM cannot call
        // (its own `time.now_ns` would read the guest clock instead of the
        // proxy's), and the VM has no `print`.
        let mut needs: Vec<&str> = self
            .calls
            .iter()
            .map(String::as_str)
            .filter(|call| *call == "print" || builtins::names().any(|name| name == *call))
            .collect();
        needs.sort_unstable();
        if !needs.is_empty() {
            return Err(VmUnavailable::Calls(needs.join(", ")));
        }
        // regorus 0.14's VM makes a failing builtin undefined even when
        // asked to fail the evaluation.
        if self.strict_builtin_errors {
            return Err(VmUnavailable::StrictBuiltinErrors);
        }
        let first = entrypoints.first().copied().unwrap_or_default();
        let compiled = self
            .engine
            .compile_with_entrypoint(&first.into())
            .map_err(|e| VmUnavailable::Compile(one_line(&e.to_string())))?;
        let program = Compiler::compile_from_policy(&compiled, entrypoints)
            .map_err(|e| VmUnavailable::Compile(one_line(&e.to_string())))?;
        PolicyVm::new(
            compiled,
            program,
            self.engine.get_data(),
            self.timer,
            entrypoints.iter().map(|e| (*e).to_string()).collect(),
        )
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
        let mode = EvaluatorMode::parse(&config.evaluator)?;
        let mut engine = Engine::new();
        engine.set_rego_v0(config.rego_v0);
        engine.set_strict_builtin_errors(config.strict_builtin_errors);
        engine.set_gather_prints(true);
        let clock = EvalClock::default();
        builtins::register(&mut engine, &clock, config.strict_builtin_errors)
            .map_err(|e| ConfigError::new("$.policy", one_line(&e.to_string())))?;
        for (name, source) in &config.modules {
            if let Some(nesting) = nesting_beyond(source) {
                return Err(ConfigError::new(
                    module_path(name),
                    format!("{name}:{nesting}"),
                ));
            }
            engine
                .add_policy(name.clone(), source.clone())
                .map_err(|e| ConfigError::new(module_path(name), one_line(&e.to_string())))?;
        }
        engine
            .add_data(json(&config.data))
            .map_err(|e| ConfigError::new("$.policy.data", one_line(&e.to_string())))?;
        let calls = check_functions(&mut engine, config)?;
        let timer = ExecutionTimerConfig {
            limit: Duration::from_micros(config.max_eval_micros),
            check_interval: NonZeroU32::new(TIMER_CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
        };
        engine.set_execution_timer_config(timer);
        Ok(Self {
            engine,
            clock,
            vm: Err(VmUnavailable::NotCompiled),
            calls,
            mode,
            timer,
            strict_builtin_errors: config.strict_builtin_errors,
        })
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
    ) -> Result<Value, EvalError> {
        self.clock.set(now_unix_nanos);
        // The VM is busy only if an evaluation were re-entered, which
        // nothing does; the interpreter would still answer then.
        let machine = self
            .vm
            .as_ref()
            .ok()
            .filter(|_| self.runs_on_vm(entrypoint))
            .and_then(|vm| vm.machine.try_borrow_mut().ok());
        if let Some(mut machine) = machine {
            machine.set_input(input);
            let result = machine
                .execute_entry_point_by_name(entrypoint)
                .map_err(|e| describe_eval_error(&e.to_string()));
            // The input holds the request's credentials and personal data:
            // it does not outlive the evaluation.
            machine.set_input(Value::Null);
            return result;
        }
        self.evaluate_in_interpreter(entrypoint, input)
    }

    /// The interpreter's answer, whatever evaluator the policy has (for the
    /// differential tests of the VM).
    pub fn evaluate_in_interpreter(
        &self,
        entrypoint: &str,
        input: Value,
    ) -> Result<Value, EvalError> {
        let mut engine = self.engine.clone();
        engine.set_input(input);
        engine
            .eval_rule(entrypoint.to_string())
            .map_err(|e| describe_eval_error(&e.to_string()))
    }

    /// For the Rego test runner: a fresh clone with the same modules.
    pub(super) fn engine(&self) -> Engine {
        self.engine.clone()
    }

    pub(super) fn clock(&self) -> &EvalClock {
        &self.clock
    }
}

/// `policy.evaluator` as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EvaluatorMode {
    /// The VM when the policy can run on it, else the interpreter.
    Auto,
    /// The VM; a policy it cannot run is a configuration error.
    Vm,
    Interpreter,
}

impl EvaluatorMode {
    fn parse(text: &str) -> Result<Self, ConfigError> {
        match text {
            "auto" => Ok(Self::Auto),
            "vm" => Ok(Self::Vm),
            "interpreter" => Ok(Self::Interpreter),
            other => Err(ConfigError::new(
                "$.policy.evaluator",
                format!(
                    "must be \"auto\", \"vm\" or \"interpreter\", not {}",
                    serde_json::Value::String(other.chars().take(40).collect())
                ),
            )),
        }
    }
}

/// Where a module's brackets first nest deeper than regorus' parser handles
/// quickly (`MAX_REGO_COLLECTION_NESTING` of `[` and `{`, `MAX_REGO_NESTING`
/// of all), outside strings and comments; `None` when they never do.
fn nesting_beyond(source: &str) -> Option<TooDeep> {
    // The open brackets, innermost last; a stray closer pops whatever is open.
    let mut open: Vec<char> = Vec::new();
    let mut collections = 0usize;
    let mut line = 1usize;
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
                open.push(c);
                if c != '(' {
                    collections += 1;
                }
                if collections > MAX_REGO_COLLECTION_NESTING {
                    return Some(TooDeep::Collections(line));
                }
                if open.len() > MAX_REGO_NESTING {
                    return Some(TooDeep::Brackets(line));
                }
            }
            ']' | '}' | ')' => {
                if matches!(open.pop(), Some('[' | '{')) {
                    collections -= 1;
                }
            }
            _ => {}
        }
    }
    None
}

/// A module nesting deeper than `nesting_beyond` allows, at a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum TooDeep {
    #[error(
        "{0}: `[` and `{{` nest deeper than {MAX_REGO_COLLECTION_NESTING} levels \
         (regorus parses deeper nesting in exponential time; move deep data to policy.data)"
    )]
    Collections(usize),
    #[error("{0}: brackets nest deeper than {MAX_REGO_NESTING} levels")]
    Brackets(usize),
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
fn describe_eval_error(text: &str) -> EvalError {
    if text.contains("exceeded time limit") {
        return EvalError::TimeBudget;
    }
    let mut out = String::new();
    let mut quote: Option<char> = None;
    for c in one_line(text).chars() {
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
    EvalError::Failed(format!(
        "policy evaluation failed: {}",
        out.chars().take(MAX_ERROR_CHARS).collect::<String>()
    ))
}

/// regorus resolves functions only when a call is evaluated; an unknown
/// builtin (an OPA builtin regorus lacks, a typo) must instead reject the
/// configuration. Calls are found in the token stream: a dotted name
/// followed by `(`. Returns the names called.
fn check_functions(
    engine: &mut Engine,
    config: &PolicyConfig,
) -> Result<HashSet<String>, ConfigError> {
    let user_functions = user_function_names(engine);
    let mut calls = HashSet::new();
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
                    calls.insert(call);
                    path.clear();
                }
                _ => path.clear(),
            }
            after_dot = token.0 == TokenKind::Symbol && text == "." && !path.is_empty();
            previous_was_dot = token.0 == TokenKind::Symbol && text == ".";
        }
    }
    Ok(calls)
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
