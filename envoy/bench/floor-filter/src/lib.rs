//! The wasm floor: the least any proxy-wasm filter costs in Envoy.
//!
//! It reads the request headers (the one thing every real filter does) and
//! continues. citygate's benchmarks compare against it, so the ratio
//! "citygate vs wasm floor" is what citygate's own work costs, apart from
//! the price of entering a Wasm VM at all.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FloorRoot) });
}}

struct FloorRoot;

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor))
    }
}

struct Floor;

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Copy the header map into the VM, as every real filter must, and
        // keep the result alive past the optimizer.
        let headers = self.get_http_request_headers();
        std::hint::black_box(headers);
        Action::Continue
    }
}
