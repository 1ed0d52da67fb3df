//! `siplb-dataplane`: the DPDK primary process of siplb.

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// The siplb dataplane: owns the NIC ports through DPDK and balances SIP over the
/// backends of the configured farms. Normally started by `siplb run`.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(short, long, default_value = "siplb.toml")]
    config: PathBuf,
    /// Print a stats line every SECS seconds.
    #[arg(long, value_name = "SECS")]
    stats_interval: Option<f64>,
    /// Stop by itself after SECS seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// EAL arguments, after `--`, appended to `[dataplane] eal_args`.
    #[arg(last = true)]
    eal: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    let opts = dataplane::app::Options {
        config: cli.config,
        eal_extra: cli.eal,
        stats_interval: cli.stats_interval.map(Duration::from_secs_f64),
        duration: cli.duration.map(Duration::from_secs_f64),
    };
    if let Err(e) = dataplane::app::run(opts) {
        eprintln!("siplb-dataplane: error: {e:#}");
        std::process::exit(2);
    }
}
