//! The `citygate` command: configuration checks, policy and scenario tests
//! through the real .wasm, demo credentials, and the demo gateway.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use citygate_host::cli;
use citygate_host::scenario::credentials::{Credentials, Tamper};

#[derive(Parser)]
#[command(
    name = "citygate",
    version,
    about = "citygate: test and run the citygate gateway filter"
)]
struct Cli {
    /// The filter .wasm to use (default: $CITYGATE_WASM, else build it from this workspace).
    #[arg(long, global = true)]
    wasm: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a plugin configuration through the real .wasm; prints the
    /// error Envoy would log.
    Check {
        /// The plugin configuration (JSON).
        config: PathBuf,
        /// VM environment variables for `${env:NAME}` secrets, as NAME=VALUE.
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
    },
    /// Run every scenario file (`scenarios/*.yaml`) and `*_test.rego` below DIR.
    Test {
        dir: PathBuf,
        /// Show every case, not only failures.
        #[arg(short, long)]
        verbose: bool,
        /// Only cases whose `scenario::case` name contains this text.
        #[arg(long)]
        filter: Option<String>,
    },
    /// Print the SHA-256 digest of an API key, for the plugin configuration.
    /// Reads the key from standard input when not given.
    HashKey { key: Option<String> },
    /// Print a demo credential (DEMO ONLY keys).
    Mint {
        #[command(subcommand)]
        what: MintWhat,
    },
    /// Print the public JWKS of a demo issuer.
    Jwks {
        #[arg(long, default_value = "city-idp")]
        issuer: String,
        /// Only these key ids (repeatable); default: all of the issuer's.
        #[arg(long = "kid")]
        kids: Vec<String>,
        #[arg(long, default_value = cli::DEFAULT_CREDENTIALS)]
        credentials: PathBuf,
    },
    /// Run the demo gateway in the foreground: Envoy + citygate + the city
    /// policy pack + a demo city API.
    Demo,
}

#[derive(Subcommand)]
enum MintWhat {
    /// A signed demo JWT, e.g. `citygate mint jwt operator`.
    Jwt {
        name: String,
        /// Damage the token (alg_none, expired, payload, …) to see a refusal.
        #[arg(long, default_value = "")]
        tamper: String,
        #[arg(long, default_value = cli::DEFAULT_CREDENTIALS)]
        credentials: PathBuf,
    },
    /// A demo API key.
    ApiKey {
        name: String,
        #[arg(long, default_value = cli::DEFAULT_CREDENTIALS)]
        credentials: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Cli::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("citygate: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn wasm(path: Option<PathBuf>) -> Result<PathBuf> {
    match path {
        Some(path) => Ok(path),
        None => citygate_host::wasm_build::filter_wasm(),
    }
}

fn run(args: Cli) -> Result<ExitCode> {
    match args.command {
        Command::Check { config, env } => {
            let json = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let env = cli::parse_env(&env)?;
            match cli::check_config(&wasm(args.wasm)?, &json, &env)? {
                Ok(summary) => {
                    println!("{}: OK ({summary})", config.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(line) => {
                    println!("{line}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Test {
            dir,
            verbose,
            filter,
        } => {
            let summary = cli::test_dir(&wasm(args.wasm)?, &dir, verbose, filter.as_deref())?;
            println!("{} passed, {} failed", summary.passed, summary.failed);
            Ok(if summary.failed == 0 && summary.passed > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::HashKey { key } => {
            let key = match key {
                Some(key) => key,
                None => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            anyhow::ensure!(!key.is_empty(), "the API key is empty");
            println!("{}", cli::hash_key(&key));
            Ok(ExitCode::SUCCESS)
        }
        Command::Mint { what } => {
            let now = cli::unix_now();
            let value = match what {
                MintWhat::Jwt {
                    name,
                    tamper,
                    credentials,
                } => {
                    let credentials = Credentials::load(&cli::resolve(&credentials))?;
                    let tamper = Tamper::parse(&tamper)?;
                    credentials.mint(&name, tamper, now)?
                }
                MintWhat::ApiKey { name, credentials } => {
                    let credentials = Credentials::load(&cli::resolve(&credentials))?;
                    credentials.api_key(&name)?.to_string()
                }
            };
            println!("{value}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Jwks {
            issuer,
            kids,
            credentials,
        } => {
            let credentials = Credentials::load(&cli::resolve(&credentials))?;
            let kids: Vec<&str> = kids.iter().map(String::as_str).collect();
            let only = (!kids.is_empty()).then_some(kids.as_slice());
            println!(
                "{}",
                serde_json::to_string_pretty(&credentials.jwks(&issuer, only)?)?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            cli::demo(&wasm(args.wasm)?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
