//! The soak's command line.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "Soak test: a long mixed workload through Envoy + citygate")]
pub struct Args {
    /// Requests to send in all.
    #[arg(long, default_value_t = 1_000_000)]
    pub requests: u64,
    /// Client threads, each with its own keep-alive connection pool.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Envoy worker threads (one VM each).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Distinct JWT subjects in the many-subjects pool.
    #[arg(long, default_value_t = 5000)]
    pub subjects: usize,
    /// `rate_limits.max_keys_per_rule` for the run; 0 keeps the pack's.
    #[arg(long, default_value_t = 100)]
    pub max_keys: u32,
    /// Share of the requests that is warm-up (percent).
    #[arg(long, default_value_t = 20)]
    pub warmup_percent: u64,
    /// Allowed RSS growth over the warm-up baseline (percent).
    #[arg(long, default_value_t = 5.0)]
    pub rss_tolerance: f64,
    /// Stop sending after this long, whatever the count (a bound, not a goal).
    #[arg(long, default_value_t = 180)]
    pub max_minutes: u64,
    /// Write the figures as JSON here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}
