//! `proxy_log` and `proxy_get_log_level`. Lines are kept per VM so tests can
//! read them and errors can quote them.

use super::call::{finish, hostcall, ENV};
use super::memory::{self, Cx};
use super::state::{HostState, LogEntry, ProxyLogLevel};
use super::status::Status;
use wasmtime::Linker;

pub(crate) fn link(l: &mut Linker<HostState>) -> anyhow::Result<()> {
    hostcall(
        l,
        ENV,
        "proxy_log",
        |mut c: Cx<'_>, level: u32, p: u32, n: u32| {
            finish((|| {
                let level = ProxyLogLevel::from_u32(level).ok_or(Status::BadArgument)?;
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
    hostcall(l, ENV, "proxy_get_log_level", |mut c: Cx<'_>, rp: u32| {
        finish({
            let level = c.data().settings.log_level as u32;
            memory::write_u32(&mut c, rp, level)
        })
    })?;
    Ok(())
}
