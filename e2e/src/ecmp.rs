//! N active units behind a router's ECMP, the VIP announced by BIRD (issue 16):
//!
//! ```text
//!  [client] cli0 198.18.2.10-13 ── r0 198.18.2.1 [router: bird2, ECMP, L4 hash] rf 198.18.0.254 ── [front switch br0] ─┬─ unit 0 lbf 198.18.0.1 (bird2 on its TAP)  lbb 198.18.1.1 ─┬─ [back switch br0] ── backends 198.18.1.11+i
//!                                                                                                                     └─ unit 1 lbf 198.18.0.3 (bird2 on its TAP)  lbb 198.18.1.3 ─┘   gw: multipath via 198.18.1.1, .3
//! ```
//!
//! Each unit's BIRD runs in the unit's namespace, on the config its control daemon
//! writes (`[bgp]`), and peers with the router's BIRD through the dataplane's exception
//! path. The router installs the VIP's /32 as a multipath route over the units' front
//! addresses; the backends (dnat: the units are their gateway) reach the clients by a
//! static multipath default route over the units' back addresses.

use crate::netns::{veth, Netns};
use crate::process::Proc;
use crate::siplb::Siplb;
use crate::sipp::{self, Uas};
use crate::topology::{backend_ip, VIP};
use anyhow::{Context, Result};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

pub const ROUTER_FRONT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
pub const ROUTER_AS: u32 = 65000;
pub const UNIT_AS: u32 = 65001;

/// The client addresses (one SIPp per address in the tests).
pub fn client_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 2, 10 + i as u8)
}

/// Unit `i`'s front address (its BGP next hop).
pub fn unit_front(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 1 + 2 * i as u8)
}

pub fn unit_back(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 1 + 2 * i as u8)
}

/// A unit: its `siplb run` and the BIRD on the configuration it writes. BIRD stops
/// after siplb (fields drop in order), so siplb's last withdrawal reaches it.
pub struct Unit {
    pub siplb: Siplb,
    pub bird: Proc,
}

pub struct Ecmp {
    /// The router's BIRD; stops before the namespaces go.
    router_bird: Option<Proc>,
    pub tag: String,
    pub dir: PathBuf,
    pub client: Netns,
    pub router: Netns,
    pub units: Vec<Netns>,
    pub front: Netns,
    pub back: Netns,
    pub backends: Vec<Netns>,
}

impl Ecmp {
    /// The namespaces and links for `units` units, `clients` client addresses and
    /// `backends` backends, and the router's BIRD.
    pub fn up(units: usize, clients: usize, backends: usize) -> Result<Ecmp> {
        let tag = crate::unique_tag("slbecmp");
        let dir = std::env::temp_dir().join(format!("siplb-{tag}"));
        std::fs::create_dir_all(&dir)?;
        let mut e = Ecmp {
            router_bird: None,
            client: Netns::create(&format!("{tag}-cli"))?,
            router: Netns::create(&format!("{tag}-rt"))?,
            units: (0..units)
                .map(|i| Netns::create(&format!("{tag}-u{i}")))
                .collect::<Result<_>>()?,
            front: Netns::create(&format!("{tag}-fsw"))?,
            back: Netns::create(&format!("{tag}-bsw"))?,
            backends: (0..backends)
                .map(|i| Netns::create(&format!("{tag}-be{i}")))
                .collect::<Result<_>>()?,
            tag,
            dir,
        };
        for sw in [&e.front, &e.back] {
            sw.ip(&["link", "add", "br0", "type", "bridge"])?;
            sw.ip(&["link", "set", "br0", "up"])?;
        }
        let attach = |sw: &Netns, port: &str| sw.ip(&["link", "set", port, "master", "br0", "up"]);
        // Clients behind the router.
        veth(&e.client, "cli0", &e.router, "r0")?;
        e.client
            .iface_up("cli0", Some(&format!("{}/24", client_ip(0))))?;
        for i in 1..clients {
            e.client.ip(&[
                "addr",
                "add",
                &format!("{}/24", client_ip(i)),
                "dev",
                "cli0",
            ])?;
        }
        e.client
            .ip(&["route", "add", "default", "via", "198.18.2.1"])?;
        e.router.iface_up("r0", Some("198.18.2.1/24"))?;
        veth(&e.router, "rf", &e.front, "f0")?;
        attach(&e.front, "f0")?;
        e.router
            .iface_up("rf", Some(&format!("{ROUTER_FRONT}/24")))?;
        e.router.run(
            "sysctl",
            &[
                "-qw",
                "net.ipv4.ip_forward=1",
                "net.ipv4.fib_multipath_hash_policy=1",
            ],
        )?;
        for (i, u) in e.units.iter().enumerate() {
            let (f, b) = (format!("f{}", i + 1), format!("b{}", i + 100));
            veth(u, "lbf", &e.front, &f)?;
            attach(&e.front, &f)?;
            veth(u, "lbb", &e.back, &b)?;
            attach(&e.back, &b)?;
            u.ip(&["link", "set", "lbf", "up"])?;
            u.ip(&["link", "set", "lbb", "up"])?;
        }
        let mut gw = vec!["route", "add", "default"];
        let hops: Vec<String> = (0..units).map(|i| unit_back(i).to_string()).collect();
        for h in &hops {
            gw.extend_from_slice(&["nexthop", "via", h.as_str()]);
        }
        for (i, be) in e.backends.iter().enumerate() {
            let sw = format!("b{i}");
            veth(be, "be0", &e.back, &sw)?;
            attach(&e.back, &sw)?;
            be.iface_up("be0", Some(&format!("{}/24", backend_ip(i))))?;
            // A unit that stops answering ARP leaves the backends' multipath route within
            // about a second (a FAILED neighbour is skipped), so that their answers
            // reach the survivors.
            be.run(
                "sysctl",
                &[
                    "-qw",
                    "net.ipv4.fib_multipath_hash_policy=1",
                    "net.ipv4.fib_multipath_use_neigh=1",
                    "net.ipv4.neigh.be0.base_reachable_time_ms=500",
                    "net.ipv4.neigh.be0.delay_first_probe_time=1",
                    "net.ipv4.neigh.be0.retrans_time_ms=200",
                    "net.ipv4.neigh.be0.ucast_solicit=2",
                ],
            )?;
            be.ip(&gw)?;
        }
        let conf = e.dir.join("router-bird.conf");
        std::fs::write(&conf, e.router_bird_config(units))?;
        let mut cmd = e.router.command("bird");
        cmd.arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(e.dir.join("router-bird.ctl"));
        e.router_bird = Some(Proc::spawn(
            "router bird",
            cmd,
            &e.dir.join("router-bird.log"),
        )?);
        Ok(e)
    }

    /// The router: a BGP session to each unit, their routes merged into one multipath
    /// kernel route.
    fn router_bird_config(&self, units: usize) -> String {
        let mut c = format!(
            "router id {ROUTER_FRONT};\nlog stderr all;\nprotocol device {{ }}\n\
             protocol kernel {{\n  merge paths on;\n  ipv4 {{ import none; export all; }};\n}}\n"
        );
        for i in 0..units {
            c.push_str(&format!(
                "protocol bgp unit{i} {{\n  local {ROUTER_FRONT} as {ROUTER_AS};\n  \
                 neighbor {} as {UNIT_AS};\n  hold time 3;\n  keepalive time 1;\n  \
                 connect retry time 1;\n  error wait time 1, 5;\n  \
                 ipv4 {{ import all; export none; }};\n}}\n",
                unit_front(i)
            ));
        }
        c
    }

    /// The configuration of unit `i` with `extra` (`[farm]`s and more) appended.
    pub fn config(&self, i: usize, extra: &str) -> String {
        let prefix = format!("{}u{i}", self.tag);
        // One core per unit: the two units' workers do not share one.
        let c = i % 2;
        let lcores = format!("0@{c},1@{c}");
        let run = self.dir.join(format!("run-u{i}"));
        format!(
            r#"{head}
[bgp]
enabled = true
local_as = {UNIT_AS}
router = "{ROUTER_FRONT}"
router_as = {ROUTER_AS}
hold_s = 3

[[port]]
name = "front"
address = "{front}/24"
gateway = "{ROUTER_FRONT}"

[[port]]
name = "back"
address = "{back}/24"

{extra}"#,
            head = crate::pair::unit_head(&prefix, &lcores, &run),
            front = unit_front(i),
            back = unit_back(i),
        )
    }

    /// Starts `siplb run` on unit `i`, then BIRD on the configuration it wrote.
    pub fn start(&self, i: usize, extra: &str) -> Result<Unit> {
        let prefix = format!("{}u{i}", self.tag);
        let siplb = Siplb::launch(
            &self.units[i],
            &self.dir,
            &format!("u{i}"),
            &self.config(i, extra),
            &prefix,
        )?;
        let conf = runtime::names::bird_config_file(&siplb.run_dir, &prefix);
        let ctl = runtime::names::bird_socket_file(&siplb.run_dir, &prefix);
        crate::wait_until(
            &format!("unit {i}'s BIRD configuration"),
            Duration::from_secs(10),
            || conf.exists(),
        );
        let mut cmd = self.units[i].command("bird");
        cmd.arg("-f").arg("-c").arg(&conf).arg("-s").arg(&ctl);
        let bird = Proc::spawn(
            &format!("unit {i} bird"),
            cmd,
            &self.dir.join(format!("u{i}-bird.log")),
        )
        .with_context(|| format!("starting BIRD for unit {i}"))?;
        Ok(Unit { siplb, bird })
    }

    /// Kills unit `i`'s control daemon and dataplane (SIGKILL, by PID), as a crash of
    /// the box's forwarding would; its BIRD keeps running, so only the silent path
    /// (hold time) withdraws its routes.
    pub fn kill(&self, unit: &Unit) {
        let dataplane = unit.siplb.dataplane_pid().expect("the unit's dataplane");
        unit.siplb.daemon.signal(libc::SIGKILL);
        // SAFETY: the PID of the dataplane this unit runs (from its ready file).
        unsafe { libc::kill(dataplane as i32, libc::SIGKILL) };
    }

    /// Starts unit `i`'s killed `siplb run` again (a fresh dataplane); its BIRD, still
    /// running, is reconfigured by the new daemon.
    pub fn restart(&self, i: usize, unit: &mut Unit) -> Result<()> {
        let pid = unit.siplb.dataplane_pid();
        crate::wait_until(
            &format!("unit {i}'s dataplane gone"),
            Duration::from_secs(5),
            // SAFETY: signal 0 only probes the PID.
            || pid.is_none_or(|p| unsafe { libc::kill(p as i32, 0) } != 0),
        );
        crate::topology::remove_dpdk_files(&unit.siplb.prefix);
        unit.siplb.start_daemon(&self.units[i])
    }

    /// The units (front addresses) the router's route to the VIP goes to now.
    pub fn vip_next_hops(&self) -> Vec<Ipv4Addr> {
        let out = self
            .router
            .run("ip", &["-4", "route", "show", &format!("{VIP}/32")])
            .unwrap_or_default();
        let mut hops: Vec<Ipv4Addr> = out
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect();
        hops.sort_unstable();
        hops
    }

    /// Waits until the router's VIP route goes to exactly the units `want`.
    pub fn wait_next_hops(&self, want: &[usize], limit: Duration) -> Duration {
        let want: Vec<Ipv4Addr> = want.iter().map(|&i| unit_front(i)).collect();
        crate::wait_until(
            &format!("the router's VIP route over {want:?}"),
            limit,
            || self.vip_next_hops() == want,
        )
    }

    /// A SIPp UAS on every backend (built-in `uas` with `extra` options), named `uas<i>`.
    pub fn start_uas_backends(&self, extra: &[&str]) -> Result<Vec<Uas>> {
        sipp::start_backend_uases(&self.backends, &self.dir, "uas", None, extra)
    }

    /// A farm on the VIP over every backend.
    pub fn farm(&self, nat: &str, extra: &str) -> String {
        let b: Vec<String> = (0..self.backends.len())
            .map(|i| format!("{{ address = \"{}\" }}", backend_ip(i)))
            .collect();
        format!(
            "[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\nnat = \"{nat}\"\n{extra}\nbackends = [ {} ]\n",
            b.join(", ")
        )
    }
}

impl Drop for Ecmp {
    fn drop(&mut self) {
        if let Some(mut b) = self.router_bird.take() {
            b.stop(Duration::from_secs(5));
        }
        if std::env::var_os("SIPLB_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
