//! What the guest logs: the proxy-wasm log levels and the lines kept per VM.

use std::fmt;

/// The proxy-wasm ABI's log levels, numbered as `proxy_log` passes them (the
/// core's `citygate_core::host::LogLevel` is what the filter logs with).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProxyLogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl ProxyLogLevel {
    pub fn from_u32(v: u32) -> Option<ProxyLogLevel> {
        use ProxyLogLevel::*;
        [Trace, Debug, Info, Warn, Error, Critical]
            .get(v as usize)
            .copied()
    }
}

impl fmt::Display for ProxyLogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ProxyLogLevel::Trace => "trace",
            ProxyLogLevel::Debug => "debug",
            ProxyLogLevel::Info => "info",
            ProxyLogLevel::Warn => "warn",
            ProxyLogLevel::Error => "error",
            ProxyLogLevel::Critical => "critical",
        };
        f.write_str(s)
    }
}

/// One line the guest logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub level: ProxyLogLevel,
    pub message: String,
    pub context_id: u32,
}

impl fmt::Display for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] ({}) {}", self.level, self.context_id, self.message)
    }
}
