//! `siplb`: the operator's command line for a siplb SIP load balancer.

mod api;
mod client;
mod daemon;
mod metrics;
mod render;

use anyhow::{bail, Result};
use api::{BackendRef, Request, Response};
use clap::{Args, Parser, Subcommand};
use siplb_core::config::Runtime;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// siplb: a DPDK SIP load balancer for carriers and hosted PBX farms.
///
/// `siplb run` starts the dataplane and the control daemon; the other commands talk to
/// that daemon (through its socket in [control] run_dir).
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// The balancer's configuration file (TOML; see siplb.example.toml).
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    /// The DPDK file prefix of the balancer to talk to (default: from the configuration).
    #[arg(long, global = true)]
    prefix: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the dataplane (or attach to the running one) and run the control daemon
    /// in the foreground: applies the configuration, serves this CLI and HTTP metrics.
    /// Stopping it leaves the dataplane forwarding; start it again to reattach.
    Run {
        /// Only attach to a running dataplane; never start one.
        #[arg(long)]
        attach: bool,
        /// The siplb-dataplane binary (default: beside this one, else on PATH).
        #[arg(long, value_name = "PATH")]
        dataplane_bin: Option<PathBuf>,
        /// Where the dataplane's output goes (default /var/log/siplb/<prefix>-dataplane.log).
        #[arg(long, value_name = "PATH")]
        dataplane_log: Option<PathBuf>,
        /// EAL arguments for the dataplane, after `--` (added to [dataplane] eal_args).
        #[arg(last = true)]
        eal: Vec<String>,
    },
    /// Farms and backends: weight, state (up, drained, down), health.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Traffic per worker, farm and backend: packets and bits per second, dialogs and
    /// registrations in progress, drops by reason.
    Stats {
        /// Print again every interval until interrupted (or --count times).
        #[arg(long)]
        watch: bool,
        /// Seconds between prints with --watch.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// Stop after this many prints with --watch.
        #[arg(long)]
        count: Option<u32>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change the backends of a farm while it runs.
    Backend {
        #[command(subcommand)]
        action: BackendCmd,
    },
    /// Read the configuration file again and apply it (dialogs in progress keep their
    /// backends; ports, workers and table sizes need a restart).
    Reload,
    /// Which backend a dialog (Call-ID) is on, its state and idle time.
    Dialog {
        /// The Call-ID, exactly as in the SIP messages.
        call_id: String,
    },
    /// High availability: switch the active unit by hand.
    Ha {
        #[command(subcommand)]
        action: HaCmd,
    },
    /// The ban list: sources that kept overrunning their limits ([security] ban_*).
    Security {
        #[command(subcommand)]
        action: SecurityCmd,
    },
    /// `[bgp]`: withdraw this unit's VIPs from the router, so that its ECMP sends new
    /// flows to the other units; the unit keeps forwarding what still reaches it.
    DrainUnit,
    /// `[bgp]`: announce this unit's VIPs again after `drain-unit`.
    UndrainUnit,
    /// Stop the dataplane and the control daemon: all SIP traffic through the VIPs stops.
    Shutdown,
}

#[derive(Subcommand)]
enum SecurityCmd {
    /// List the banned sources: reason, seconds left, packets dropped.
    Bans {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Lift a source's ban.
    Unban {
        /// The banned source address.
        source: Ipv4Addr,
    },
}

#[derive(Subcommand)]
enum HaCmd {
    /// Make this unit (a synced standby) the active one; the peer becomes standby and
    /// is resynced from it. For rolling restarts and upgrades: restart the standby,
    /// wait until it is synced, take over here, then restart the other.
    Takeover {
        /// Seconds to wait for this unit to become active.
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
    },
}

#[derive(Args)]
struct Target {
    /// The farm (a [[farm]] name).
    farm: String,
    /// The backend's address, with :port if not 5060.
    backend: String,
}

#[derive(Subcommand)]
enum BackendCmd {
    /// Add a backend; it takes its weight's share of new calls and registrations.
    Add {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Remove a backend (refused while it carries dialogs, unless --force).
    Remove {
        #[command(flatten)]
        target: Target,
        /// Remove it even with dialogs in progress (they move on their next request).
        #[arg(long)]
        force: bool,
    },
    /// Change a backend's weight (only keys of the changed share move).
    Weight {
        #[command(flatten)]
        target: Target,
        weight: u32,
    },
    /// Give a backend no new dialogs or registrations; it finishes its own.
    Drain {
        #[command(flatten)]
        target: Target,
    },
    /// Put a drained backend back into service.
    Undrain {
        #[command(flatten)]
        target: Target,
    },
}

fn backend_ref(t: &Target) -> Result<BackendRef> {
    let (addr, port) = match t.backend.rsplit_once(':') {
        Some((a, p)) => (
            a,
            p.parse::<u16>()
                .map_err(|_| anyhow::anyhow!("`{p}` is not a port number"))?,
        ),
        None => (t.backend.as_str(), 5060),
    };
    let address: Ipv4Addr = addr.parse().map_err(|_| {
        anyhow::anyhow!(
            "`{addr}` is not an IPv4 address (expected e.g. 198.18.1.11 or 198.18.1.11:5080)"
        )
    })?;
    Ok(BackendRef {
        farm: t.farm.clone(),
        address,
        port,
    })
}

fn default_config() -> PathBuf {
    let local = PathBuf::from("siplb.toml");
    if local.exists() {
        local
    } else {
        PathBuf::from("/etc/siplb/siplb.toml")
    }
}

/// The control socket of the balancer named by --prefix / --config. The file is read
/// leniently (`Runtime::of_file`): a configuration with a mistake must not stop the
/// operator from talking to the running balancer.
fn socket_path(cli: &Cli) -> Result<PathBuf> {
    let path = cli.config.clone().unwrap_or_else(default_config);
    let mut rt = if cli.config.is_none() && !path.exists() {
        Runtime::default()
    } else {
        Runtime::of_file(&path)?
    };
    if let Some(p) = &cli.prefix {
        rt.file_prefix = p.clone();
    }
    Ok(runtime::names::socket_file(&rt.run_dir, &rt.file_prefix))
}

fn ask(cli: &Cli, req: Request) -> Result<Response> {
    let r = client::call(&socket_path(cli)?, &req)?;
    if let Response::Error { message } = r {
        bail!("{message}");
    }
    Ok(r)
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("siplb: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        Cmd::Run {
            attach,
            dataplane_bin,
            dataplane_log,
            eal,
        } => daemon::run(daemon::Options {
            config: cli.config.clone().unwrap_or_else(default_config),
            eal_extra: eal.clone(),
            dataplane_bin: dataplane_bin.clone(),
            dataplane_log: dataplane_log.clone(),
            attach_only: *attach,
        }),
        Cmd::Status { json } => {
            if let Response::Status(s) = ask(cli, Request::Status)? {
                if *json {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                } else {
                    print!("{}", render::status(&s));
                }
            }
            Ok(())
        }
        Cmd::Stats {
            watch,
            interval,
            count,
            json,
        } => {
            let mut printed = 0u32;
            loop {
                if let Response::Stats(s) = ask(cli, Request::Stats)? {
                    if *json {
                        println!("{}", serde_json::to_string(&s)?);
                    } else {
                        print!("{}", render::stats(&s));
                        if *watch {
                            println!("---");
                        }
                    }
                }
                printed += 1;
                if !*watch || count.is_some_and(|c| printed >= c) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_secs_f64(interval.max(0.2)));
            }
        }
        Cmd::Backend { action } => {
            let req = match action {
                BackendCmd::Add { target, weight } => Request::BackendAdd {
                    backend: backend_ref(target)?,
                    weight: *weight,
                },
                BackendCmd::Remove { target, force } => Request::BackendRemove {
                    backend: backend_ref(target)?,
                    force: *force,
                },
                BackendCmd::Weight { target, weight } => Request::BackendWeight {
                    backend: backend_ref(target)?,
                    weight: *weight,
                },
                BackendCmd::Drain { target } => Request::BackendDrain {
                    backend: backend_ref(target)?,
                },
                BackendCmd::Undrain { target } => Request::BackendUndrain {
                    backend: backend_ref(target)?,
                },
            };
            done(ask(cli, req)?)
        }
        Cmd::Reload => done(ask(cli, Request::Reload)?),
        Cmd::Dialog { call_id } => {
            if let Response::Dialog(d) = ask(
                cli,
                Request::Dialog {
                    call_id: call_id.clone(),
                },
            )? {
                print!("{}", render::dialog(&d));
            }
            Ok(())
        }
        Cmd::Ha {
            action: HaCmd::Takeover { wait },
        } => {
            let started = std::time::Instant::now();
            done(ask(cli, Request::HaTakeover)?)?;
            loop {
                if let Response::Status(s) = ask(cli, Request::Status)? {
                    if s.ha.as_deref().is_some_and(|r| r.starts_with("active")) {
                        println!(
                            "siplb: this unit is active ({} ms after the request)",
                            started.elapsed().as_millis()
                        );
                        return Ok(());
                    }
                }
                if started.elapsed().as_secs_f64() > *wait {
                    anyhow::bail!(
                        "this unit did not become active within {wait} s: see `siplb status`"
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Cmd::Security {
            action: SecurityCmd::Bans { json },
        } => {
            if let Response::Bans { bans } = ask(cli, Request::SecurityBans)? {
                if *json {
                    println!("{}", serde_json::to_string_pretty(&bans)?);
                } else {
                    println!(
                        "{:<16} {:<10} {:>11} {:>10}",
                        "SOURCE", "REASON", "REMAINING_S", "HITS"
                    );
                    for b in &bans {
                        println!(
                            "{:<16} {:<10} {:>11} {:>10}",
                            b.source.to_string(),
                            b.reason,
                            b.remaining_s,
                            b.hits
                        );
                    }
                    println!("{} banned", bans.len());
                }
            }
            Ok(())
        }
        Cmd::Security {
            action: SecurityCmd::Unban { source },
        } => done(ask(cli, Request::SecurityUnban { source: *source })?),
        Cmd::DrainUnit => done(ask(cli, Request::DrainUnit)?),
        Cmd::UndrainUnit => done(ask(cli, Request::UndrainUnit)?),
        Cmd::Shutdown => done(ask(cli, Request::Shutdown)?),
    }
}

fn done(r: Response) -> Result<()> {
    if let Response::Done { message } = r {
        println!("siplb: {message}");
    }
    Ok(())
}
