//! Scale-out behind ECMP (`[bgp]`): this unit's VIPs are announced to the router by a
//! BIRD (Debian's `bird2`) running in the unit's kernel side, its BGP session going out
//! through the exception path (the port's TAP). siplb does not speak BGP itself: it
//! writes BIRD's configuration with a static protocol holding the VIP routes to
//! announce, and runs `birdc configure` when that set changes (BIRD then adds or
//! removes the routes without restarting the session).
//!
//! A VIP is announced while this unit can serve it: the unit owns the VIPs (always
//! without HA; the active role with it), it is not draining, and every farm on that
//! VIP has a backend up. When the dataplane stops forwarding, its TAP goes quiet and
//! the router drops the session after the hold time (or BFD's detection time), which
//! withdraws everything without any help from this process.

use super::state::ControlState;
use crate::api::BgpView;
use anyhow::{bail, Context, Result};
use runtime::names;
use siplb_core::config::{BgpConfig, Config};
use siplb_core::lb::services::BackendState;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Name of BIRD's static protocol that holds the announced VIPs.
const VIPS_PROTOCOL: &str = "siplb_vips";
/// How often a failed `birdc configure` is retried (BIRD may start after siplb; it
/// then reads the file itself, and the retry is a no-op).
const RETRY: Duration = Duration::from_secs(1);

/// The VIPs this unit should announce now, sorted.
pub fn announced(state: &ControlState, draining: bool) -> Vec<Ipv4Addr> {
    if !state.active || draining {
        return Vec::new();
    }
    let farms = &state.config.farms;
    let mut vips: Vec<Ipv4Addr> = farms.iter().map(|f| f.vip).collect();
    vips.sort_unstable();
    vips.dedup();
    // A VIP stays while every farm on it can place a call: the router then sends its
    // traffic to units that can.
    vips.retain(|vip| {
        farms.iter().filter(|f| f.vip == *vip).all(|f| {
            f.backends
                .iter()
                .any(|b| state.backend_state(&f.name, b.address, b.port) == BackendState::Up)
        })
    });
    vips
}

/// BIRD's configuration for this unit: the BGP session from `local` to the router,
/// exporting only the static routes of `vips` (host routes; BIRD sets itself as the
/// next hop on an eBGP session).
pub fn bird_config(bgp: &BgpConfig, local: Ipv4Addr, vips: &[Ipv4Addr]) -> String {
    let router = bgp.router.expect("validated: [bgp] has a router");
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Written by siplb ([bgp]); rewritten, then `birdc configure`d, when the announced VIPs change."
    );
    let _ = writeln!(c, "router id {local};");
    let _ = writeln!(c, "protocol device {{ }}");
    let _ = writeln!(c, "protocol static {VIPS_PROTOCOL} {{");
    let _ = writeln!(c, "  ipv4;");
    for v in vips {
        let _ = writeln!(c, "  route {v}/32 blackhole;");
    }
    let _ = writeln!(c, "}}");
    if bgp.bfd {
        let ms = bgp.bfd_interval_ms;
        let _ = writeln!(c, "protocol bfd {{");
        let _ = writeln!(
            c,
            "  interface \"*\" {{ min rx interval {ms} ms; min tx interval {ms} ms; multiplier 3; }};"
        );
        let _ = writeln!(c, "}}");
    }
    let _ = writeln!(c, "protocol bgp uplink {{");
    let _ = writeln!(c, "  local {local} as {};", bgp.local_as);
    let _ = writeln!(c, "  neighbor {router} as {};", bgp.router_as);
    let _ = writeln!(c, "  hold time {};", bgp.hold_s);
    if bgp.hold_s > 0 {
        let _ = writeln!(c, "  keepalive time {};", (bgp.hold_s / 3).max(1));
    }
    // Come back quickly after the router or the path was away.
    let _ = writeln!(c, "  connect retry time 1;");
    let _ = writeln!(c, "  error wait time 1, 5;");
    if bgp.bfd {
        let _ = writeln!(c, "  bfd on;");
    }
    let _ = writeln!(c, "  ipv4 {{");
    let _ = writeln!(c, "    import none;");
    let _ = writeln!(c, "    export where proto = \"{VIPS_PROTOCOL}\";");
    let _ = writeln!(c, "  }};");
    let _ = writeln!(c, "}}");
    c
}

/// Keeps BIRD's configuration in line with what this unit should announce.
pub struct Speaker {
    bgp: BgpConfig,
    local: Ipv4Addr,
    pub file: PathBuf,
    pub socket: PathBuf,
    /// The VIPs in the file.
    written: Option<Vec<Ipv4Addr>>,
    /// BIRD runs the file's content.
    configured: bool,
    next_try: Instant,
    /// Why the last `birdc configure` failed; empty after a success.
    pub error: String,
}

impl Speaker {
    /// The speaker of `config` (None without `[bgp]`).
    pub fn new(config: &Config, run_dir: &Path, prefix: &str) -> Option<Speaker> {
        let bgp = &config.bgp;
        if !bgp.enabled {
            return None;
        }
        let router = bgp.router.expect("validated: [bgp] has a router");
        let local = config
            .ports
            .iter()
            .find(|p| p.address.contains(router))
            .map(|p| p.address.addr)
            .expect("validated: the router is in a port's subnet");
        let path = |v: &str, default: PathBuf| {
            if v.is_empty() {
                default
            } else {
                PathBuf::from(v)
            }
        };
        Some(Speaker {
            bgp: bgp.clone(),
            local,
            file: path(&bgp.config_file, names::bird_config_file(run_dir, prefix)),
            socket: path(&bgp.socket, names::bird_socket_file(run_dir, prefix)),
            written: None,
            configured: false,
            next_try: Instant::now(),
            error: String::new(),
        })
    }

    pub fn view(&self, draining: bool) -> BgpView {
        BgpView {
            router: format!(
                "{} (AS {})",
                self.bgp.router.expect("validated: [bgp] has a router"),
                self.bgp.router_as
            ),
            announcing: self.written.clone().unwrap_or_default(),
            draining,
            configured: self.configured,
            config_file: self.file.display().to_string(),
            error: self.error.clone(),
        }
    }

    /// Rewrites the file when `vips` changed and has BIRD load it; retries a failed
    /// load every second.
    pub fn update(&mut self, vips: Vec<Ipv4Addr>) {
        if self.written.as_ref() != Some(&vips) {
            let text = bird_config(&self.bgp, self.local, &vips);
            if let Err(e) = write_atomically(&self.file, &text) {
                eprintln!("siplb: bgp: {e:#}");
                return;
            }
            println!(
                "siplb: bgp: {} (BIRD configuration {})",
                if vips.is_empty() {
                    "announcing no VIP".to_string()
                } else {
                    let v: Vec<String> = vips.iter().map(Ipv4Addr::to_string).collect();
                    format!("announcing {}", v.join(", "))
                },
                self.file.display()
            );
            self.written = Some(vips);
            self.configured = false;
            self.next_try = Instant::now();
        }
        if self.configured || Instant::now() < self.next_try {
            return;
        }
        match self.configure() {
            Ok(()) => {
                self.configured = true;
                self.error.clear();
            }
            Err(e) => {
                let e = format!("{e:#}");
                if e != self.error {
                    eprintln!("siplb: bgp: {e} (retrying every second)");
                }
                self.error = e;
                self.next_try = Instant::now() + RETRY;
            }
        }
    }

    fn configure(&self) -> Result<()> {
        let out = std::process::Command::new(&self.bgp.birdc)
            .arg("-s")
            .arg(&self.socket)
            .arg("configure")
            .output()
            .with_context(|| format!("running `{}` (bgp.birdc)", self.bgp.birdc))?;
        let text = String::from_utf8_lossy(&out.stdout);
        // birdc exits 0 even when BIRD refuses the file; its answer says so.
        if !out.status.success() || !text.contains("Reconfigur") {
            bail!(
                "`{} -s {} configure` did not reconfigure BIRD: {}{}",
                self.bgp.birdc,
                self.socket.display(),
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("conf.new");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[bgp]
enabled = true
local_as = 65011
router = "198.18.0.254"
router_as = 65000
hold_s = 3

[[port]]
name = "front"
address = "198.18.0.1/24"

[[port]]
name = "back"
address = "198.18.1.1/24"

[[farm]]
name = "pbx"
vip = "198.18.0.2"
backends = [ { address = "198.18.1.11" }, { address = "198.18.1.12" } ]

[[farm]]
name = "reg"
vip = "198.18.0.5"
backends = [ { address = "198.18.1.21" } ]
"#;

    fn state(text: &str) -> ControlState {
        ControlState::new(
            Config::parse(text, Path::new("bgp-test.toml")).expect("valid config"),
            1,
        )
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn announces_every_vip_of_a_healthy_unit() {
        let s = state(CONFIG);
        assert_eq!(
            announced(&s, false),
            vec![ip("198.18.0.2"), ip("198.18.0.5")]
        );
    }

    #[test]
    fn withdraws_a_vip_whose_farm_has_no_backend_up() {
        let mut s = state(CONFIG);
        s.set_down("pbx", ip("198.18.1.11"), 5060, true, "timeout");
        assert_eq!(
            announced(&s, false),
            vec![ip("198.18.0.2"), ip("198.18.0.5")],
            "one backend of two down keeps the VIP"
        );
        s.set_down("pbx", ip("198.18.1.12"), 5060, true, "timeout");
        assert_eq!(announced(&s, false), vec![ip("198.18.0.5")]);
        s.set_down("pbx", ip("198.18.1.12"), 5060, false, "ok");
        assert_eq!(
            announced(&s, false),
            vec![ip("198.18.0.2"), ip("198.18.0.5")],
            "announced again when a backend is back"
        );
    }

    #[test]
    fn a_vip_shared_by_farms_needs_every_farm_serving() {
        let text = CONFIG
            .replace("198.18.0.5", "198.18.0.2")
            .replace("name = \"reg\"", "name = \"reg\"\nport = 5080");
        let mut s = state(&text);
        assert_eq!(announced(&s, false), vec![ip("198.18.0.2")]);
        s.set_down("reg", ip("198.18.1.21"), 5060, true, "timeout");
        assert_eq!(announced(&s, false), Vec::<Ipv4Addr>::new());
    }

    #[test]
    fn withdraws_everything_when_draining_or_standby() {
        let mut s = state(CONFIG);
        assert!(announced(&s, true).is_empty(), "draining");
        s.active = false;
        assert!(announced(&s, false).is_empty(), "HA standby");
    }

    #[test]
    fn bird_config_exports_only_the_vip_routes() {
        let s = state(CONFIG);
        let c = bird_config(&s.config.bgp, ip("198.18.0.1"), &announced(&s, false));
        for line in [
            "router id 198.18.0.1;",
            "protocol static siplb_vips {",
            "  route 198.18.0.2/32 blackhole;",
            "  route 198.18.0.5/32 blackhole;",
            "  local 198.18.0.1 as 65011;",
            "  neighbor 198.18.0.254 as 65000;",
            "  hold time 3;",
            "  keepalive time 1;",
            "    import none;",
            "    export where proto = \"siplb_vips\";",
        ] {
            assert!(c.lines().any(|l| l == line), "no `{line}` in:\n{c}");
        }
        assert!(!c.contains("bfd"), "no BFD unless asked:\n{c}");
        let none = bird_config(&s.config.bgp, ip("198.18.0.1"), &[]);
        assert!(!none.contains("route "), "withdrawn: no route:\n{none}");
        assert!(none.contains("protocol static siplb_vips {"));
    }

    #[test]
    fn bird_config_with_bfd() {
        let s =
            state(&CONFIG.replace("hold_s = 3", "hold_s = 9\nbfd = true\nbfd_interval_ms = 50"));
        let c = bird_config(&s.config.bgp, ip("198.18.0.1"), &[ip("198.18.0.2")]);
        assert!(c.contains("  bfd on;"), "{c}");
        assert!(
            c.contains("  interface \"*\" { min rx interval 50 ms; min tx interval 50 ms; multiplier 3; };"),
            "{c}"
        );
        assert!(c.contains("  keepalive time 3;"), "{c}");
    }

    #[test]
    fn bird_parses_the_generated_config() {
        // Debian's bird2 (ci/setup-host.sh) checks the file without running it.
        let Ok(out) = std::process::Command::new("bird").arg("--version").output() else {
            panic!("bird is not installed: run ci/setup-host.sh (package bird2)");
        };
        assert!(out.status.success() || !out.stderr.is_empty());
        let s = state(&CONFIG.replace("hold_s = 3", "hold_s = 3\nbfd = true"));
        let dir = std::env::temp_dir().join(format!("siplb-bgp-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for vips in [announced(&s, false), Vec::new()] {
            let f = dir.join("bird.conf");
            std::fs::write(&f, bird_config(&s.config.bgp, ip("198.18.0.1"), &vips)).unwrap();
            let out = std::process::Command::new("bird")
                .arg("-p")
                .arg("-c")
                .arg(&f)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "bird -p refused {vips:?}: {text}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn speaker_rewrites_only_on_change_and_retries_a_failed_load() {
        let dir = std::env::temp_dir().join(format!("siplb-bgp-spk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = state(CONFIG);
        // A birdc that always fails (`false`): the file is written, the load retried.
        s.config.bgp.birdc = "false".into();
        let mut sp = Speaker::new(&s.config, &dir, "t").expect("bgp enabled");
        assert_eq!(sp.file, dir.join("bird-t.conf"));
        sp.update(announced(&s, false));
        let first = std::fs::read_to_string(&sp.file).unwrap();
        assert!(first.contains("route 198.18.0.2/32"));
        assert!(!sp.error.is_empty(), "the failed load is reported");
        s.set_down("reg", ip("198.18.1.21"), 5060, true, "timeout");
        sp.update(announced(&s, false));
        let second = std::fs::read_to_string(&sp.file).unwrap();
        assert!(!second.contains("198.18.0.5"), "{second}");
        assert_eq!(sp.view(false).announcing, vec![ip("198.18.0.2")]);
        assert!(!sp.view(false).configured);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
