//! `proxy_log` and `proxy_get_log_level`. Lines are kept per VM so tests can
//! read them and errors can quote them.

use super::context::HostState;
use super::memory::{self, Cx};
use super::{finish, Status, ENV};
use std::fmt;
use wasmtime::Linker;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    pub fn from_u32(v: u32) -> Option<LogLevel> {
        use LogLevel::*;
        [Trace, Debug, Info, Warn, Error, Critical]
            .get(v as usize)
            .copied()
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        };
        f.write_str(s)
    }
}

/// One line the guest logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub level: LogLevel,
    pub message: String,
    pub context_id: u32,
}

impl fmt::Display for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] ({}) {}", self.level, self.context_id, self.message)
    }
}

pub(crate) fn link(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    l.func_wrap(
        ENV,
        "proxy_log",
        |mut c: Cx<'_>, level: u32, p: u32, n: u32| {
            finish((|| {
                let level = LogLevel::from_u32(level).ok_or(Status::BadArgument)?;
                let bytes = memory::read(&mut c, p, n)?;
                let s = c.data_mut();
                if level >= s.settings.log_level {
                    s.logs.push(LogEntry {
                        level,
                        message: String::from_utf8_lossy(&bytes).into_owned(),
                        context_id: s.effective,
                    });
                }
                Ok(())
            })())
        },
    )?;
    l.func_wrap(ENV, "proxy_get_log_level", |mut c: Cx<'_>, rp: u32| {
        finish({
            let level = c.data().settings.log_level as u32;
            memory::write_u32(&mut c, rp, level)
        })
    })?;
    Ok(())
}
