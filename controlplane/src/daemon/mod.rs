//! `siplb run`: the control daemon. It starts the dataplane (or attaches to the one
//! running for the file prefix), attaches to its shared memory as a DPDK secondary,
//! keeps the desired state and applies every change over the command ring, samples
//! counters, and serves the CLI (Unix socket) and HTTP.
//!
//! Killing it changes nothing in the dataplane, which keeps forwarding with its last
//! state; started again, it reads that state back and carries on.

pub mod bgp;
pub mod dataplane;
pub mod dnsbl;
pub mod feeds;
pub mod ha;
pub mod health;
pub mod http;
pub mod passive;
pub mod sampler;
pub mod socket;
pub mod state;

use crate::api::{
    BackendStatus, BanView, BgpView, DenyFileView, DialogView, FarmStatus, Request, Response,
    StatsView, StatusView,
};
use anyhow::{bail, Context, Result};
use dataplane::Attached;
use runtime::names;
use runtime::stop::{self, STOP};
use sampler::Sampler;
use siplb_core::config::{Config, Runtime};
use siplb_core::control::{Command, Reply};
use siplb_core::hash::hash64;
use siplb_core::lb::security::limits;
use state::ControlState;
use std::cell::{Cell, RefCell};
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// What reaches the main loop from other threads.
pub enum Event {
    Api(Request, Sender<Response>),
    /// The HA thread decided this unit's role (true = active).
    HaRole(bool),
    /// The HA thread wants the VIPs announced again (a partition healed, the peer
    /// stepped down): the state is applied again, which makes the dataplane send
    /// gratuitous ARP.
    HaAnnounce,
    /// A blocklist feed was fetched (`feeds.rs`).
    Feed {
        cfg: siplb_core::config::FeedConfig,
        result: Result<Vec<siplb_core::config::Ipv4Net>, String>,
    },
    /// A backend's health checks changed their verdict.
    Health {
        farm: String,
        address: std::net::Ipv4Addr,
        port: u16,
        up: bool,
        reason: String,
    },
}

pub struct Options {
    pub config: PathBuf,
    pub eal_extra: Vec<String>,
    pub dataplane_bin: Option<PathBuf>,
    pub dataplane_log: Option<PathBuf>,
    /// Refuse to start a dataplane; only attach.
    pub attach_only: bool,
}

/// Holds `<run_dir>/<prefix>.lock` for the life of the daemon: one `siplb run` per
/// prefix.
struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    fn acquire(path: PathBuf) -> Result<InstanceLock> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let owner = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another `siplb run` (pid {}) already manages this balancer ({}): use `siplb status` to talk to it",
                owner.trim(),
                path.display()
            );
        }
        std::fs::write(&path, format!("{}\n", std::process::id()))?;
        Ok(InstanceLock { _file: file, path })
    }
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, "");
    }
}

fn dataplane_bin(opts: &Options) -> PathBuf {
    if let Some(b) = &opts.dataplane_bin {
        return b.clone();
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("siplb-dataplane")));
    match beside {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("siplb-dataplane"),
    }
}

pub fn run(opts: Options) -> Result<()> {
    let cfg = Config::load(&opts.config)?;
    let Runtime {
        file_prefix: prefix,
        run_dir,
    } = cfg.runtime(&opts.eal_extra);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let _lock = InstanceLock::acquire(names::lock_file(&run_dir, &prefix))?;

    let mut child = None;
    match dataplane::running(&prefix) {
        Some(pid) => println!(
            "siplb: attaching to the running dataplane (pid {pid}, file prefix `{prefix}`)"
        ),
        None if opts.attach_only => {
            bail!("no siplb dataplane is running with file prefix `{prefix}`")
        }
        None => {
            let log = opts
                .dataplane_log
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("/var/log/siplb/{prefix}-dataplane.log")));
            let c = dataplane::start(
                &dataplane_bin(&opts),
                &opts.config,
                &opts.eal_extra,
                &prefix,
                &log,
            )?;
            println!(
                "siplb: started the dataplane (pid {}, file prefix `{prefix}`, log {})",
                c.id(),
                log.display()
            );
            child = Some(c);
        }
    }
    let mut att = Attached::attach(&prefix)?;
    let mut state = match att.call(Command::GetState, Duration::from_secs(5))? {
        Reply::State { state, .. } => ControlState::from_desired(*state),
        other => bail!("unexpected reply from the dataplane: {other:?}"),
    };
    let mut applied = state.generation;
    if state.config != cfg {
        println!(
            "siplb: the running configuration differs from {}; `siplb reload` applies the file",
            opts.config.display()
        );
    }

    stop::on_signals();
    let (tx, rx) = channel();
    let ha_status = if state.config.ha.enabled {
        let peer = state.config.ha.peer.expect("validated: HA has a peer");
        let own = state
            .config
            .ports
            .iter()
            .find(|p| p.address.contains(peer))
            .map(|p| p.address.addr)
            .expect("validated: the peer is in a port's subnet");
        let s = ha::Ha::start(
            state.config.ha.clone(),
            own,
            att.shared.tables,
            att.shared.header,
            state.active,
            ha::numbering::digests(&state.config, att.shared.directory),
            tx.clone(),
        )?;
        println!(
            "siplb: HA with peer {peer} from {own}: this unit starts {}",
            if state.active { "active" } else { "standby" }
        );
        Some(s)
    } else {
        None
    };
    let lookups = dnsbl::Dnsbl::start(&state.config.security, att.shared.tables, att.shared.header)
        .context("starting the DNSBL lookup thread")?;
    let mut checkers = health::Checkers::new(tx.clone());
    sync_health(&mut checkers, &mut att, &mut state, &mut applied);
    let mut feeds = feeds::Feeds::new(names::feeds_file(&run_dir, &prefix), tx.clone());
    feeds.sync(&state.config.security.feed);
    let socket_path = names::socket_file(&run_dir, &prefix);
    socket::serve(&socket_path, tx)?;
    let views: http::Views = Default::default();
    let http_addr = if state.config.control.http.is_empty() {
        None
    } else {
        let a = http::serve(&state.config.control.http, views.clone())?;
        println!("siplb: metrics on http://{a}/metrics, JSON on /status and /stats");
        Some(a)
    };
    println!(
        "siplb: control socket {} (pid {})",
        socket_path.display(),
        std::process::id()
    );

    let mut sampler = Sampler::new(&att.shared);
    let mut stats = StatsView::default();
    let mut next_sample = Instant::now();
    let ctx = Ctx {
        prefix,
        config_file: opts.config.clone(),
        http: http_addr,
        ha: ha_status,
        health: checkers.board.clone(),
        draining: Cell::new(false),
        bgp: Default::default(),
    };
    let mut speaker = bgp::Speaker::new(&state.config, &run_dir, &ctx.prefix);
    let mut numbered = applied;
    let mut looked_up = applied;
    let mut passive = passive::Passive::default();
    let exit = loop {
        if STOP.load(Ordering::Relaxed) {
            break Ok(());
        }
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(Event::Api(req, reply)) => {
                let shutdown = matches!(req, Request::Shutdown);
                let resp = handle(
                    &ctx,
                    &mut att,
                    &mut state,
                    &mut applied,
                    &stats,
                    &feeds,
                    req,
                );
                let _ = reply.send(resp);
                sync_health(&mut checkers, &mut att, &mut state, &mut applied);
                if feeds.sync(&state.config.security.feed) {
                    apply_feeds(&feeds, &mut att, &mut state, &mut applied);
                }
                if shutdown {
                    if let Some(sp) = speaker.as_mut() {
                        sp.update(Vec::new());
                    }
                    break Ok(());
                }
            }
            Ok(Event::HaRole(active)) => {
                if state.active != active {
                    let before = state.clone();
                    state.active = active;
                    state.generation += 1;
                    let what = if active {
                        "active: owning the VIPs"
                    } else {
                        "standby"
                    }
                    .to_string();
                    if let Response::Error { message } = apply(
                        &mut att,
                        &mut state,
                        before,
                        &mut applied,
                        format!("HA role {what}"),
                    ) {
                        eprintln!("siplb: HA: the role change to {what} failed: {message}");
                    }
                }
            }
            Ok(Event::HaAnnounce) => {
                if state.active {
                    let before = state.clone();
                    state.generation += 1;
                    apply(
                        &mut att,
                        &mut state,
                        before,
                        &mut applied,
                        "HA: announcing the VIPs again (the peer stepped down)".into(),
                    );
                }
            }
            Ok(Event::Health {
                farm,
                address,
                port,
                up,
                reason,
            }) => {
                let before = state.clone();
                if state.set_down(&farm, address, port, !up, &reason) {
                    let what = format!(
                        "health: {farm} {address}:{port} is {} after {reason}",
                        if up { "up" } else { "down" }
                    );
                    if let Response::Error { message } =
                        apply(&mut att, &mut state, before, &mut applied, what)
                    {
                        eprintln!("siplb: health: {farm} {address}:{port}: {message}");
                    }
                }
            }
            Ok(Event::Feed { cfg, result }) => {
                let (failed, changed) = feeds.done(&cfg, result);
                if let Some(e) = failed {
                    eprintln!("siplb: {e}");
                }
                if changed {
                    apply_feeds(&feeds, &mut att, &mut state, &mut applied);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break Ok(()),
        }
        feeds.poll();
        if let Some(sp) = speaker.as_mut() {
            sp.update(bgp::announced(&state, ctx.draining.get()));
            *ctx.bgp.borrow_mut() = Some(sp.view(ctx.draining.get()));
        }
        passive.poll(&att.shared, &state.config, &ctx.health);
        if let Some(h) = ctx.ha.as_ref().filter(|_| numbered != applied) {
            // What the peer must number alike, from the state in force.
            *h.numbering.lock().unwrap_or_else(|p| p.into_inner()) =
                ha::numbering::digests(&state.config, att.shared.directory);
            numbered = applied;
        }
        if looked_up != applied {
            lookups.configure(&state.config.security);
            looked_up = applied;
        }
        if Instant::now() >= next_sample {
            stats = sampler.sample(&att.shared, &state);
            stats.dnsbl = lookups.view();
            *views.lock().unwrap_or_else(|p| p.into_inner()) = Some((
                status_view(&ctx, &att, &state, applied, &feeds),
                stats.clone(),
            ));
            next_sample = Instant::now()
                + Duration::from_secs(u64::from(state.config.control.sample_interval_s));
            let gone = match child.as_mut() {
                Some(c) => c.try_wait().ok().flatten().is_some(),
                // SAFETY: signal 0 only checks that the process exists.
                None => (unsafe { libc::kill(att.dataplane_pid() as i32, 0) }) != 0,
            };
            if gone {
                if let Some(sp) = speaker.as_mut() {
                    sp.update(Vec::new());
                }
                break Err(anyhow::anyhow!(
                    "the dataplane (pid {}) has exited",
                    att.dataplane_pid()
                ));
            }
        }
    };
    let _ = std::fs::remove_file(&socket_path);
    exit
}

struct Ctx {
    prefix: String,
    config_file: PathBuf,
    http: Option<String>,
    ha: Option<std::sync::Arc<ha::HaStatus>>,
    health: health::Board,
    /// `siplb drain-unit` is in force (`[bgp]`).
    draining: Cell<bool>,
    /// The speaker's view, updated by the main loop.
    bgp: RefCell<Option<BgpView>>,
}

/// Keeps the checkers in line with the configuration, and clears the "down" mark of
/// backends that are no longer checked (their farm's checks were turned off).
fn sync_health(
    checkers: &mut health::Checkers,
    att: &mut Attached,
    state: &mut ControlState,
    applied: &mut u64,
) {
    checkers.sync(&state.config, |k| {
        state.flags.get(k).is_some_and(|f| f.down)
    });
    let stale: Vec<health::Key> = state
        .flags
        .iter()
        .filter(|(k, f)| f.down && !checkers.checked(k))
        .map(|(k, _)| k.clone())
        .collect();
    if stale.is_empty() {
        return;
    }
    let before = state.clone();
    for (farm, address, port) in &stale {
        state.set_down(farm, *address, *port, false, "health checks are off");
    }
    let _ = apply(
        att,
        state,
        before,
        applied,
        format!(
            "health: {} backend(s) no longer checked are up",
            stale.len()
        ),
    );
}

/// Sends the feeds' union to the dataplane when it changed.
fn apply_feeds(
    feeds: &feeds::Feeds,
    att: &mut Attached,
    state: &mut ControlState,
    applied: &mut u64,
) {
    let file = match feeds.write() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("siplb: feeds: {e}: the dataplane keeps the lists in force");
            return;
        }
    };
    if file == state.feeds {
        return;
    }
    let before = state.clone();
    let what = format!(
        "feeds: {} prefixes",
        file.as_ref().map_or(0, |f| f.prefixes)
    );
    state.feeds = file;
    state.generation += 1;
    if let Response::Error { message } = apply(att, state, before, applied, what) {
        eprintln!("siplb: feeds: {message}");
    }
}

/// Sends the state to the dataplane; on refusal the previous state is restored.
fn apply(
    att: &mut Attached,
    state: &mut ControlState,
    before: ControlState,
    applied: &mut u64,
    what: String,
) -> Response {
    match att.call(
        Command::Apply {
            state: Box::new(state.desired()),
        },
        Duration::from_secs(10),
    ) {
        Ok(Reply::Applied { generation }) => {
            *applied = generation;
            println!("siplb: {what} (generation {generation})");
            Response::Done { message: what }
        }
        Ok(Reply::Rejected { reason }) => {
            *state = before;
            Response::Error {
                message: format!("the dataplane refused the change: {reason}"),
            }
        }
        Ok(other) => {
            *state = before;
            Response::Error {
                message: format!("unexpected reply from the dataplane: {other:?}"),
            }
        }
        Err(e) => {
            *state = before;
            Response::Error {
                message: e.to_string(),
            }
        }
    }
}

fn handle(
    ctx: &Ctx,
    att: &mut Attached,
    state: &mut ControlState,
    applied: &mut u64,
    stats: &StatsView,
    feeds: &feeds::Feeds,
    req: Request,
) -> Response {
    let before = state.clone();
    let edit = |r: Result<()>,
                what: String,
                att: &mut Attached,
                state: &mut ControlState,
                applied: &mut u64| match r {
        Ok(()) => apply(att, state, before.clone(), applied, what),
        Err(e) => Response::Error {
            message: e.to_string(),
        },
    };
    match req {
        Request::Status => {
            Response::Status(Box::new(status_view(ctx, att, state, *applied, feeds)))
        }
        Request::Stats => Response::Stats(Box::new(stats.clone())),
        Request::BackendAdd { backend, weight } => {
            let r = state.add_backend(&backend, weight);
            edit(
                r,
                format!("added {backend} with weight {weight}"),
                att,
                state,
                applied,
            )
        }
        Request::BackendRemove { backend, force } => {
            let active = stats
                .farms
                .iter()
                .filter(|f| f.name == backend.farm)
                .flat_map(|f| &f.backends)
                .filter(|b| b.address == backend.address.to_string() && b.port == backend.port)
                .map(|b| b.dialogs_active)
                .sum();
            let r = state.remove_backend(&backend, active, force);
            edit(r, format!("removed {backend}"), att, state, applied)
        }
        Request::BackendWeight { backend, weight } => {
            let r = state.set_weight(&backend, weight);
            edit(
                r,
                format!("{backend} now has weight {weight}"),
                att,
                state,
                applied,
            )
        }
        Request::BackendDrain { backend } => {
            let r = state.set_drained(&backend, true);
            edit(
                r,
                format!("drained {backend}: no new dialogs or registrations"),
                att,
                state,
                applied,
            )
        }
        Request::BackendUndrain { backend } => {
            let r = state.set_drained(&backend, false);
            edit(
                r,
                format!("{backend} takes new work again"),
                att,
                state,
                applied,
            )
        }
        Request::Reload => match Config::load(&ctx.config_file) {
            Ok(cfg) => {
                state.reload(cfg);
                let mut what = format!("reloaded {}", ctx.config_file.display());
                if let Some(e) = state.read_deny_file() {
                    eprintln!("siplb: {e}");
                    what = format!("{what}; {e}");
                }
                apply(att, state, before, applied, what)
            }
            Err(e) => Response::Error {
                message: e.to_string(),
            },
        },
        Request::Dialog { call_id } => dialog_view(att, state, &call_id),
        Request::HaTakeover => ha_takeover(ctx),
        Request::SecurityBans => {
            let rates = &att.shared.tables.rates;
            let bans = limits::list_bans(rates, att.shared.header.clock.now());
            Response::Bans {
                bans: bans
                    .into_iter()
                    .map(|b| BanView {
                        source: b.source,
                        reason: b.reason.into(),
                        remaining_s: b.remaining_s,
                        hits: b.hits,
                    })
                    .collect(),
            }
        }
        Request::SecurityUnban { source } => {
            let rates = &att.shared.tables.rates;
            if limits::unban(rates, source, att.shared.header.clock.now()) {
                Response::Done {
                    message: format!("lifted the ban of {source}"),
                }
            } else {
                Response::Error {
                    message: format!("{source} is not banned (see `siplb security bans`)"),
                }
            }
        }
        Request::DrainUnit | Request::UndrainUnit if !state.config.bgp.enabled => Response::Error {
            message: "this unit announces no route ([bgp] enabled = false)".into(),
        },
        Request::DrainUnit => {
            ctx.draining.set(true);
            Response::Done {
                message:
                    "draining: withdrawing the VIPs; what still reaches this unit is forwarded"
                        .into(),
            }
        }
        Request::UndrainUnit => {
            ctx.draining.set(false);
            Response::Done {
                message: "announcing the VIPs again while the unit can serve them".into(),
            }
        }
        Request::Shutdown => match att.call(Command::Shutdown, Duration::from_secs(5)) {
            Ok(_) => Response::Done {
                message: format!(
                    "the dataplane (pid {}) is shutting down; the control daemon exits",
                    att.dataplane_pid()
                ),
            },
            Err(e) => Response::Error {
                message: e.to_string(),
            },
        },
    }
}

/// `siplb ha takeover`: refused unless this unit is a standby that may take over now
/// (a live active peer, our tables resynced, the same numbering); the HA thread then
/// outranks the peer, which hands over at its next heartbeat.
fn ha_takeover(ctx: &Ctx) -> Response {
    let refuse = |message: String| Response::Error { message };
    let Some(ha) = ctx.ha.as_ref() else {
        return refuse("HA is off ([ha] enabled = false)".into());
    };
    let v = ha.view();
    if v.active {
        return refuse("this unit is already active".into());
    }
    if !v.peer_alive {
        return refuse(
            "the peer is not answering: there is nothing to take over from (a unit whose peer is dead becomes active by itself)".into(),
        );
    }
    if !v.peer_active {
        return refuse("the peer is not active: wait for the election to settle".into());
    }
    if v.resyncing {
        return refuse("this unit is still receiving the peer's tables: try again when `siplb status` no longer says resyncing".into());
    }
    if !v.numbering.is_empty() {
        return refuse(format!(
            "{}: apply the same farms and backends on both units first",
            v.numbering
        ));
    }
    ha.takeover.store(true, Ordering::SeqCst);
    Response::Done {
        message: format!(
            "takeover asked: the peer {} hands the VIPs over at its next heartbeat",
            v.peer
        ),
    }
}

fn status_view(
    ctx: &Ctx,
    att: &Attached,
    state: &ControlState,
    applied: u64,
    feeds: &feeds::Feeds,
) -> StatusView {
    let board = ctx.health.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    StatusView {
        file_prefix: ctx.prefix.clone(),
        config_file: ctx.config_file.display().to_string(),
        dataplane_pid: att.dataplane_pid(),
        control_pid: std::process::id(),
        workers: att.shared.header.workers,
        generation: applied,
        http: ctx.http.clone(),
        ha: ctx.ha.as_ref().map(|h| {
            format!(
                "{} (peer {})",
                if h.active.load(Ordering::SeqCst) {
                    "active"
                } else {
                    "standby"
                },
                if h.peer_alive.load(Ordering::SeqCst) {
                    "alive"
                } else {
                    "not answering"
                }
            )
        }),
        ha_detail: ctx.ha.as_ref().map(|h| h.view()),
        farms: state
            .config
            .farms
            .iter()
            .map(|f| FarmStatus {
                name: f.name.clone(),
                vip: format!("{}:{}", f.vip, f.port),
                nat: format!("{:?}", f.nat).to_lowercase(),
                affinity: match f.affinity {
                    siplb_core::config::Affinity::CallId => "call-id",
                    siplb_core::config::Affinity::Registrar => "registrar",
                    siplb_core::config::Affinity::Callee => "callee",
                    siplb_core::config::Affinity::Source => "source",
                }
                .into(),
                backends: f
                    .backends
                    .iter()
                    .map(|b| {
                        let flags = state
                            .flags
                            .get(&(f.name.clone(), b.address, b.port))
                            .cloned()
                            .unwrap_or_default();
                        let checks = board.get(&(f.name.clone(), b.address, b.port));
                        let health = match checks {
                            _ if flags.down => "down",
                            None => "unchecked",
                            Some(c) if c.checks == 0 => "pending",
                            Some(_) => "up",
                        };
                        let last_check = match checks {
                            Some(c) if c.checks > 0 => format!(
                                "{} {}: {} ({:.1} s ago)",
                                c.check,
                                if c.last_ok { "ok" } else { "failed" },
                                c.last_result,
                                now_ms.saturating_sub(c.last_at_ms) as f64 / 1000.0
                            ),
                            _ => flags.reason.clone(),
                        };
                        BackendStatus {
                            address: b.address,
                            port: b.port,
                            weight: b.weight,
                            state: state
                                .backend_state(&f.name, b.address, b.port)
                                .name()
                                .into(),
                            drained: flags.drained,
                            health: health.into(),
                            last_check,
                            down_reason: if flags.down {
                                flags.reason.clone()
                            } else {
                                String::new()
                            },
                            checks: checks.cloned(),
                        }
                    })
                    .collect(),
            })
            .collect(),
        bgp: ctx.bgp.borrow().clone(),
        deny_file: (!state.config.security.deny_file.is_empty()).then(|| DenyFileView {
            path: state.config.security.deny_file.clone(),
            prefixes: state.deny_file.prefixes.len(),
            errors: state.deny_file.errors,
            error: state.deny_file.error.clone(),
        }),
        feeds: feeds.views(),
    }
}

fn dialog_view(att: &Attached, state: &ControlState, call_id: &str) -> Response {
    let now = att.shared.header.clock.now();
    let Some((d, deadline)) = att
        .shared
        .tables
        .dialogs
        .get_entry(hash64(call_id.as_bytes()), now)
    else {
        return Response::Error {
            message: format!(
                "no dialog with Call-ID `{call_id}` (unknown, or ended and forgotten)"
            ),
        };
    };
    let backend = att
        .shared
        .directory
        .get(usize::from(d.backend))
        .and_then(|e| e.get())
        .map(|(_, a, p)| format!("{a}:{p}"))
        .unwrap_or_else(|| format!("slot {}", d.backend));
    let farm = state.config.farms.get(usize::from(d.farm));
    let lifetime = farm.map(|f| d.state.lifetime(&f.timers)).unwrap_or(0);
    let left = deadline.saturating_sub(now);
    Response::Dialog(DialogView {
        call_id: call_id.to_string(),
        farm: farm
            .map(|f| f.name.clone())
            .unwrap_or_else(|| format!("#{}", d.farm)),
        backend,
        state: d.state.name().into(),
        idle_s: lifetime.saturating_sub(left),
        expires_in_s: left,
    })
}
