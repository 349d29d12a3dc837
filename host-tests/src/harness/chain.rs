//! One direction of a stream through the filter's callbacks, the way
//! Envoy's filter chain calls them: headers, body chunks, trailers; a
//! `Pause` holds what follows until the filter continues the stream (the
//! rules are in the `harness` module doc).

use super::driver::{Dir, MessagePart};
use super::vm::{Vm, CONTINUE};
use anyhow::Result;

impl Vm {
    /// Envoy's `continueDecoding`/`continueEncoding`: forwards what was held.
    fn resume(&mut self, id: u32, dir: Dir) -> Result<()> {
        let flow = std::mem::take(&mut dir.flow(self.stream(id)?).body);
        let (headers, trailers) = {
            let f = dir.flow(self.stream(id)?);
            (f.headers.clone(), f.trailers.clone())
        };
        let p = self.driver(id)?.pump(dir);
        p.stopped = None;
        if p.fwd_headers.is_none() {
            p.fwd_headers = Some(headers);
        }
        p.fwd_body.extend(flow);
        if p.trailers_delivered && p.fwd_trailers.is_none() {
            p.fwd_trailers = Some(trailers);
        }
        Ok(())
    }

    fn interrupted(&mut self, id: u32) -> Result<bool> {
        let s = self.stream(id)?;
        Ok(s.local_reply.is_some() || s.closed)
    }

    /// Runs one direction through the filter as far as it can go.
    pub(super) fn pump(&mut self, id: u32, dir: Dir) -> Result<()> {
        let [on_headers, on_body, on_trailers] = dir.callbacks();
        let ctx = id as i32;
        loop {
            if self.interrupted(id)? {
                return Ok(());
            }
            let resumed = dir.take_continue(self.stream(id)?);
            if resumed && self.driver(id)?.pump(dir).stopped.is_some() {
                self.resume(id, dir)?;
            }
            let p = self.driver(id)?.pump(dir);
            match (p.stage, p.stopped) {
                (MessagePart::Headers, _) => {
                    let eos = p.chunks.is_empty() && p.trailers.is_none();
                    p.stage = MessagePart::Body;
                    let n = dir.flow(self.stream(id)?).headers.len() as i32;
                    if self.callback(on_headers, id, &[ctx, n, i32::from(eos)])? == CONTINUE {
                        self.resume(id, dir)?;
                    } else if self.headers_stop_iteration {
                        // Headers held; the body still reaches the filter.
                        self.driver(id)?.pump(dir).stopped = Some(MessagePart::Body);
                    } else {
                        let p = self.driver(id)?.pump(dir);
                        p.stopped = Some(MessagePart::Headers);
                        p.coalesce = true;
                    }
                }
                (MessagePart::Body, Some(MessagePart::Headers | MessagePart::Trailers)) => {
                    return Ok(())
                }
                (MessagePart::Body, _) if p.chunks.is_empty() => p.stage = MessagePart::Trailers,
                (MessagePart::Body, _) => {
                    let chunk: Vec<u8> = if std::mem::take(&mut p.coalesce) {
                        p.chunks.drain(..).flatten().collect()
                    } else {
                        p.chunks.pop_front().unwrap_or_default()
                    };
                    let eos = p.chunks.is_empty() && p.trailers.is_none();
                    let body = &mut dir.flow(self.stream(id)?).body;
                    body.extend(chunk);
                    let n = body.len() as i32;
                    if self.callback(on_body, id, &[ctx, n, i32::from(eos)])? == CONTINUE {
                        self.resume(id, dir)?;
                    } else {
                        self.driver(id)?.pump(dir).stopped = Some(MessagePart::Body);
                    }
                }
                (MessagePart::Trailers, Some(MessagePart::Headers)) => return Ok(()),
                (MessagePart::Trailers, _) => {
                    p.stage = MessagePart::Done;
                    let Some(t) = p.trailers.take() else { continue };
                    p.trailers_delivered = true;
                    let n = t.len() as i32;
                    dir.flow(self.stream(id)?).trailers = t;
                    if self.callback(on_trailers, id, &[ctx, n])? == CONTINUE {
                        self.resume(id, dir)?;
                    } else {
                        self.driver(id)?.pump(dir).stopped = Some(MessagePart::Trailers);
                    }
                }
                (MessagePart::Done, _) => return Ok(()),
            }
        }
    }
}
