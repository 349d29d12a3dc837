//! `cargo demo`: the demo gateway in the foreground (Envoy + citygate + the
//! city policy pack + the demo city API), with a guided tour.

use std::path::PathBuf;
use std::process::ExitCode;

use citygate_gateway::demo::{run, DemoOptions};

const USAGE: &str = "usage: cargo demo [--wasm PATH] [--with-prometheus]

Builds the filter's .wasm and installs Envoy (once per checkout), starts the
demo city API and Envoy with citygate and the city policy pack on
http://127.0.0.1:10000 (admin on 9901), and prints a guided tour.

  --wasm PATH   run this citygate_filter.wasm instead of building one
                (CITYGATE_WASM does the same)
  --with-prometheus
                also start Prometheus (from PATH; on Debian: apt-get install
                prometheus) on http://127.0.0.1:9090 with the shipped scrape
                configuration and alert rules; the tour then ends with an
                alert firing";

fn main() -> ExitCode {
    let mut options = DemoOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--with-prometheus" => options.with_prometheus = true,
            "--wasm" => match args.next() {
                Some(path) => options.wasm = Some(PathBuf::from(path)),
                None => {
                    eprintln!("citygate demo: --wasm needs a path\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("citygate demo: unknown argument {other:?}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("citygate demo: {error:#}");
            ExitCode::FAILURE
        }
    }
}
