//! The standard test topology, all in 198.18.0.0/15:
//!
//! ```text
//!  [client ns]                 [lb ns]                  [switch ns]        [backend ns i]
//!  cli0 198.18.0.10/24 ── lbf ║ siplb-dataplane ║ lbb ── sw0 ┐
//!       gw 198.18.0.1          (af_packet, no IP)           br0 ├─ swi ── be0 198.18.1.(11+i)/24
//!                                                                            gw 198.18.1.1
//! ```
//!
//! The balancer owns 198.18.0.1 on its front port and 198.18.1.1 on its back port, and
//! serves the VIP 198.18.0.2. Backends route to clients through it (its `dnat` mode).

use crate::netns::{veth, Netns};
use crate::process::Proc;
use anyhow::Result;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
pub const FRONT_ADDR: &str = "198.18.0.1/24";
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const BACK_ADDR: &str = "198.18.1.1/24";

pub fn backend_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 11 + i as u8)
}

pub struct Spec {
    pub backends: usize,
    /// Worker lcores of the dataplane (= af_packet qpairs).
    pub workers: u16,
}

pub struct Topology {
    pub tag: String,
    /// Logs, configs and SIPp traces of this run.
    pub dir: PathBuf,
    pub workers: u16,
    pub client: Netns,
    pub lb: Netns,
    pub switch: Netns,
    pub backends: Vec<Netns>,
}

impl Topology {
    /// The topology with `backends` backends and a one-worker dataplane.
    pub fn with_backends(backends: usize) -> Result<Topology> {
        Topology::up(Spec {
            backends,
            workers: 1,
        })
    }

    pub fn up(spec: Spec) -> Result<Topology> {
        let tag = crate::unique_tag("slb");
        let dir = std::env::temp_dir().join(format!("siplb-{tag}"));
        std::fs::create_dir_all(&dir)?;
        let client = Netns::create(&format!("{tag}-cli"))?;
        let lb = Netns::create(&format!("{tag}-lb"))?;
        let switch = Netns::create(&format!("{tag}-sw"))?;
        let mut backends = Vec::new();
        for i in 0..spec.backends {
            backends.push(Netns::create(&format!("{tag}-be{i}"))?);
        }
        let t = Topology {
            tag,
            dir,
            workers: spec.workers,
            client,
            lb,
            switch,
            backends,
        };
        veth(&t.client, "cli0", &t.lb, "lbf")?;
        t.client.iface_up("cli0", Some("198.18.0.10/24"))?;
        t.client
            .ip(&["route", "add", "default", "via", "198.18.0.1"])?;
        // The DPDK side has no IP: af_packet would clear its neighbours anyway.
        t.lb.ip(&["link", "set", "lbf", "up"])?;
        veth(&t.lb, "lbb", &t.switch, "sw0")?;
        t.lb.ip(&["link", "set", "lbb", "up"])?;
        t.switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        t.switch.ip(&["link", "set", "br0", "up"])?;
        t.switch
            .ip(&["link", "set", "sw0", "master", "br0", "up"])?;
        for (i, b) in t.backends.iter().enumerate() {
            let sw = format!("sw{}", i + 1);
            veth(b, "be0", &t.switch, &sw)?;
            t.switch.ip(&["link", "set", &sw, "master", "br0", "up"])?;
            b.iface_up("be0", Some(&format!("{}/24", backend_ip(i))))?;
            b.ip(&["route", "add", "default", "via", "198.18.1.1"])?;
        }
        Ok(t)
    }

    /// EAL arguments that attach the dataplane to its two veth ends.
    pub fn eal_args(&self) -> Vec<String> {
        let q = self.workers;
        // 2-core machines: the main lcore and workers share the CPUs; workers sleep when
        // idle (`idle_sleep_us` in the config).
        let lcores: Vec<String> = (0..=q).map(|l| format!("{l}@{}", l % 2)).collect();
        vec![
            "--lcores".into(),
            lcores.join(","),
            "--no-pci".into(),
            "--file-prefix".into(),
            self.tag.clone(),
            "--vdev".into(),
            format!("net_af_packet0,iface=lbf,qpairs={q},framesz=4096"),
            "--vdev".into(),
            format!("net_af_packet1,iface=lbb,qpairs={q},framesz=4096"),
        ]
    }

    /// The `[dataplane]` and `[[port]]` part of a config for this topology.
    pub fn base_config(&self) -> String {
        format!(
            r#"[dataplane]
workers = {w}
idle_sleep_us = 200
mbufs = 8191
# af_packet's kernel side reassembles IP fragments: frames up to 4 KiB (framesz=4096).
mbuf_data_size = 4096
arp_refresh_s = 5

[tables]
dialogs = 65536
registrations = 16384
snat_sessions = 16384

[[port]]
name = "front"
address = "{FRONT_ADDR}"

[[port]]
name = "back"
address = "{BACK_ADDR}"
"#,
            w = self.workers
        )
    }

    /// A farm on the VIP with these backend weights (backend i at `backend_ip(i)`).
    pub fn farm_config(&self, nat: &str, affinity: &str, weights: &[u32], extra: &str) -> String {
        let backends: Vec<String> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                format!(
                    "  {{ address = \"{}\", port = 5060, weight = {w} }},",
                    backend_ip(i)
                )
            })
            .collect();
        format!(
            "\n[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\nport = 5060\nnat = \"{nat}\"\naffinity = \"{affinity}\"\n{extra}\nbackends = [\n{}\n]\n",
            backends.join("\n")
        )
    }

    /// Starts `siplb-dataplane` in the lb namespace with `config`, and waits until its
    /// workers run.
    pub fn start_dataplane(&self, config: &str, extra: &[&str]) -> Result<Dataplane> {
        let path = self.dir.join("siplb.toml");
        std::fs::write(&path, config)?;
        let mut cmd = self.lb.command(crate::bins::path("siplb-dataplane"));
        cmd.arg("-c")
            .arg(&path)
            .args(extra)
            .arg("--")
            .args(self.eal_args());
        let mut proc = Proc::spawn("siplb-dataplane", cmd, &self.dir.join("dataplane.log"))?;
        proc.wait_for_output("worker(s) on lcores", Duration::from_secs(30))?;
        Ok(Dataplane {
            proc,
            prefix: self.tag.clone(),
        })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if std::env::var_os("SIPLB_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A running dataplane; stopped, and its hugepage files removed, on drop.
pub struct Dataplane {
    pub proc: Proc,
    pub prefix: String,
}

impl Dataplane {
    /// Stops it (SIGTERM) and returns its whole output (the final stats line included).
    pub fn stop(&mut self) -> String {
        self.proc.stop(Duration::from_secs(10));
        self.proc.output()
    }

    /// Stops it and returns its final counters line (empty if it printed none).
    pub fn stop_final_stats(&mut self) -> String {
        let out = self.stop();
        out.lines()
            .rev()
            .find(|l| l.contains("final"))
            .unwrap_or("")
            .to_string()
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.proc.stop(Duration::from_secs(10));
        remove_dpdk_files(&self.prefix);
    }
}

/// Removes the hugepage files and runtime directory of a DPDK file prefix.
pub fn remove_dpdk_files(prefix: &str) {
    if let Ok(rd) = std::fs::read_dir("/dev/hugepages") {
        for e in rd.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}map_"))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir_all(runtime::names::dpdk_runtime_dir(prefix));
}
