//! The `citygate` command: configuration checks, policy and scenario tests
//! through the real .wasm, demo credentials, and the demo gateway.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use citygate_host::scenario::credentials::{unix_now, Credentials, Tamper};
use citygate_host::{cli, env_file};

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
        /// A file of NAME=VALUE lines read first (e.g. policies/config/demo.env).
        #[arg(long)]
        env_file: Option<PathBuf>,
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
    /// Show what the gateway does with one request (natively): the policy
    /// input built for it, the decision, the redaction profile and the
    /// evaluation time.
    Eval(EvalArgs),
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
    Demo {
        /// Start Prometheus (from PATH) beside Envoy with the shipped scrape
        /// configuration and alert rules, on http://127.0.0.1:9090.
        #[arg(long)]
        with_prometheus: bool,
    },
    /// Print the JSON Schema of the plugin configuration.
    Schema,
    /// Build a self-contained plugin configuration from a source with
    /// `{"$file": …}` / `{"$rego_dir": …}` references.
    Bundle {
        source: PathBuf,
        /// Write here instead of standard output.
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Only check that OUT is up to date (exit 1 if not).
        #[arg(long, requires = "out")]
        check: bool,
    },
    /// Package citygate for a gateway: an OCI image of the .wasm (what an
    /// Istio WasmPlugin pulls; prints its digest), or a directory Envoy runs
    /// from (TLS, mTLS devices, live-reloaded plugin configuration).
    Package(PackageArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PackageTarget {
    /// An OCI image layout; the manifest digest goes to standard output.
    Oci,
    /// bootstrap.json, xds/lds.json, xds/rds.json, certificates, secrets.
    Envoy,
}

#[derive(clap::Args)]
struct PackageArgs {
    /// The directory to write.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value_t = PackageTarget::Oci)]
    target: PackageTarget,
    /// oci: the image tag.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    tag: String,
    /// envoy: the plugin configuration.
    #[arg(long, default_value = cli::CITY_CONFIG)]
    config: PathBuf,
    /// envoy: the secrets (NAME=VALUE lines) for `${env:NAME}` references.
    #[arg(long, default_value = cli::CITY_ENV)]
    env_file: PathBuf,
    /// envoy: directory with server.crt, server.key and device-ca.crt
    /// (default: DEMO ONLY certificates generated into OUT/certs).
    #[arg(long)]
    certs: Option<PathBuf>,
    /// envoy: the city API, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8080")]
    upstream: String,
    /// envoy: CA bundle to verify the city API over TLS (default: plain HTTP).
    #[arg(long)]
    upstream_tls_ca: Option<PathBuf>,
    /// envoy: the JWKS endpoint's HOST:PORT (default: the city API).
    #[arg(long)]
    jwks: Option<String>,
    /// envoy: CA bundle to verify the JWKS endpoint over TLS.
    #[arg(long)]
    jwks_tls_ca: Option<PathBuf>,
    /// envoy: the listeners' address.
    #[arg(long, default_value = "0.0.0.0")]
    bind: String,
    #[arg(long, default_value_t = 8443)]
    https_port: u16,
    #[arg(long, default_value_t = 8444)]
    devices_port: u16,
    /// envoy: the admin interface's port (always on 127.0.0.1).
    #[arg(long, default_value_t = 9901)]
    admin_port: u16,
    /// envoy: the SPIFFE ID prefix device certificates must carry.
    #[arg(long, default_value = citygate_host::envoy::pki::DEVICE_URI_PREFIX)]
    device_uri_prefix: String,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// The plugin configuration (JSON).
    #[arg(long)]
    config: PathBuf,
    /// A file of NAME=VALUE lines for `${env:NAME}` secrets (e.g. policies/config/demo.env).
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// More VM environment variables, as NAME=VALUE.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// The request: a scenario case's `request` (JSON or YAML).
    #[arg(long, conflicts_with_all = ["method", "path", "headers", "body"])]
    request: Option<PathBuf>,
    #[arg(long, default_value = "GET")]
    method: String,
    #[arg(long, required_unless_present = "request")]
    path: Option<String>,
    /// A request header, as NAME:VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE")]
    headers: Vec<String>,
    #[arg(long)]
    body: Option<String>,
    /// DEMO ONLY credentials for `{{jwt:NAME}}` / `{{api_key:NAME}}` references.
    #[arg(long, default_value = cli::DEFAULT_CREDENTIALS)]
    credentials: PathBuf,
    /// A JWKS file answering the configuration's remote key fetches
    /// (default: the public keys of the demo issuer `--jwks-of`).
    #[arg(long)]
    jwks: Option<PathBuf>,
    #[arg(long, default_value = "city-idp")]
    jwks_of: String,
    /// Print the evaluation as one JSON document.
    #[arg(long)]
    json: bool,
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
        Command::Check {
            config,
            env,
            env_file,
        } => {
            let json = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let mut vm_env = match env_file {
                Some(file) => env_file::read_env_file(&cli::resolve(&file))?,
                None => Default::default(),
            };
            vm_env.extend(env_file::parse_env(&env)?);
            let env = vm_env;
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
        Command::Eval(args) => eval(&args),
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
            let now = unix_now();
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
        Command::Schema => {
            println!("{}", cli::schema_text()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Bundle { source, out, check } => {
            let text = citygate_host::bundle::bundle_text(&cli::resolve(&source))?;
            match (out, check) {
                (Some(out), true) => {
                    let current = std::fs::read_to_string(cli::resolve(&out)).unwrap_or_default();
                    if current != text {
                        println!(
                            "{} is out of date: run `cargo citygate bundle {} -o {}`",
                            out.display(),
                            source.display(),
                            out.display()
                        );
                        return Ok(ExitCode::FAILURE);
                    }
                    println!("{}: up to date", out.display());
                }
                (Some(out), false) => std::fs::write(&out, text)
                    .with_context(|| format!("writing {}", out.display()))?,
                (None, _) => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { with_prometheus } => {
            let options = citygate_host::demo::DemoOptions {
                wasm: args.wasm,
                with_prometheus,
                ..Default::default()
            };
            citygate_host::demo::run(&options)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Package(package) => {
            let wasm = wasm(args.wasm)?;
            match package.target {
                PackageTarget::Oci => package_oci(&wasm, &package),
                PackageTarget::Envoy => package_envoy(&wasm, &package),
            }?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn eval(args: &EvalArgs) -> Result<ExitCode> {
    use citygate_host::eval::{evaluate, render, EvalRequest, RemoteKeys};
    let config_path = cli::resolve(&args.config);
    let config = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let mut env = match &args.env_file {
        Some(file) => env_file::read_env_file(&cli::resolve(file))?,
        None => Default::default(),
    };
    env.extend(env_file::parse_env(&args.env)?);
    let credentials = Credentials::load(&cli::resolve(&args.credentials)).ok();
    let request = match &args.request {
        Some(file) => EvalRequest::from_file(&cli::resolve(file), credentials.as_ref())?,
        None => EvalRequest {
            method: args.method.clone(),
            path: args.path.clone().unwrap_or_default(),
            headers: args
                .headers
                .iter()
                .map(|h| EvalRequest::parse_header(h))
                .collect::<Result<_>>()?,
            body: args.body.clone().unwrap_or_default().into_bytes(),
            ..EvalRequest::default()
        }
        .expanded(credentials.as_ref())?,
    };
    let keys = match (&args.jwks, &credentials) {
        (Some(file), _) => {
            let path = cli::resolve(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            RemoteKeys::Jwks(serde_json::from_str(&text)?)
        }
        (None, Some(credentials)) => credentials
            .jwks(&args.jwks_of, None)
            .map_or(RemoteKeys::None, RemoteKeys::Jwks),
        (None, None) => RemoteKeys::None,
    };
    let evaluation = evaluate(&config, &env, &keys, &request)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&evaluation)?);
    } else {
        print!("{}", render(&evaluation)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn package_oci(wasm: &std::path::Path, args: &PackageArgs) -> Result<()> {
    let image = citygate_host::package::write_oci_layout(wasm, &args.out, &args.tag)?;
    eprintln!(
        "citygate: wrote the OCI image layout {} (tag {}; one layer with plugin.wasm)",
        image.dir.display(),
        image.tag
    );
    eprintln!(
        "  push:  skopeo copy --preserve-digests oci:{}:{} docker://REGISTRY/citygate:{}",
        image.dir.display(),
        image.tag,
        image.tag
    );
    eprintln!(
        "  WasmPlugin:  url: oci://REGISTRY/citygate:{}   sha256: {}",
        image.tag,
        image.sha256_hex()
    );
    println!("{}", image.manifest_digest);
    Ok(())
}

fn package_envoy(wasm: &std::path::Path, args: &PackageArgs) -> Result<()> {
    use citygate_host::envoy::production::{Ports, ProductionGateway, Upstream};
    let upstream = |address: &str, ca: &Option<PathBuf>| -> Result<Upstream> {
        let mut upstream = Upstream::parse(address)?;
        upstream.tls_ca = ca.clone();
        Ok(upstream)
    };
    let config_path = cli::resolve(&args.config);
    let plugin_config = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let package = citygate_host::package::EnvoyPackage {
        wasm: wasm.to_path_buf(),
        out: args.out.clone(),
        plugin_config,
        secrets: env_file::read_env_file(&cli::resolve(&args.env_file))?,
        certs: args.certs.clone(),
        city_api: upstream(&args.upstream, &args.upstream_tls_ca)?,
        jwks: upstream(
            args.jwks.as_deref().unwrap_or(&args.upstream),
            &args.jwks_tls_ca,
        )?,
        bind_address: args.bind.clone(),
        ports: Ports {
            https: args.https_port,
            devices: args.devices_port,
            admin: args.admin_port,
        },
        device_uri_prefix: args.device_uri_prefix.clone(),
        version: unix_now().to_string(),
    };
    let written = citygate_host::package::write_envoy_dir(&package)?;
    eprintln!("citygate: wrote the Envoy gateway {}", args.out.display());
    if written.demo_certs {
        eprintln!(
            "  certificates: DEMO ONLY, generated into {}/certs (give --certs DIR for real ones)",
            args.out.display()
        );
    }
    eprintln!(
        "  run:  (set -a; . {}; exec envoy --config-path {} {})",
        written.env_file.display(),
        written.bootstrap.display(),
        ProductionGateway::envoy_args().join(" ")
    );
    eprintln!(
        "  a new --config written to the same --out reaches the running Envoy without a restart"
    );
    Ok(())
}
