//! Two balancer units sharing the VIP (HA), on the standard addresses:
//!
//! ```text
//!  [client] cli0 198.18.0.10 ── [front switch br0] ─┬─ unit 0 lbf (198.18.0.1)  lbb (198.18.1.1) ─┬─ [switch br0] ── backends
//!   gw 198.18.0.254 (floating)                      └─ unit 1 lbf (198.18.0.3)  lbb (198.18.1.3) ─┘     gw 198.18.1.254 (floating)
//! ```

use crate::netns::{veth, Netns};
use crate::siplb::Siplb;
use crate::sipp::{self, Uas};
use crate::topology::{backend_ip, VIP};
use anyhow::Result;
use std::path::PathBuf;

pub const FRONT: [&str; 2] = ["198.18.0.1/24", "198.18.0.3/24"];
pub const BACK: [&str; 2] = ["198.18.1.1/24", "198.18.1.3/24"];
pub const FLOAT_FRONT: &str = "198.18.0.254";
pub const FLOAT_BACK: &str = "198.18.1.254";

pub struct Pair {
    pub tag: String,
    pub dir: PathBuf,
    pub client: Netns,
    pub units: Vec<Netns>,
    pub front: Netns,
    pub back: Netns,
    pub backends: Vec<Netns>,
}

impl Pair {
    pub fn up(backends: usize) -> Result<Pair> {
        let tag = crate::unique_tag("slbha");
        let dir = std::env::temp_dir().join(format!("siplb-{tag}"));
        std::fs::create_dir_all(&dir)?;
        let p = Pair {
            client: Netns::create(&format!("{tag}-cli"))?,
            units: vec![
                Netns::create(&format!("{tag}-u0"))?,
                Netns::create(&format!("{tag}-u1"))?,
            ],
            front: Netns::create(&format!("{tag}-fsw"))?,
            back: Netns::create(&format!("{tag}-bsw"))?,
            backends: (0..backends)
                .map(|i| Netns::create(&format!("{tag}-be{i}")))
                .collect::<Result<_>>()?,
            tag,
            dir,
        };
        for sw in [&p.front, &p.back] {
            sw.ip(&["link", "add", "br0", "type", "bridge"])?;
            sw.ip(&["link", "set", "br0", "up"])?;
        }
        let attach = |sw: &Netns, port: &str| sw.ip(&["link", "set", port, "master", "br0", "up"]);
        veth(&p.client, "cli0", &p.front, "f0")?;
        attach(&p.front, "f0")?;
        p.client.iface_up("cli0", Some("198.18.0.10/24"))?;
        p.client
            .ip(&["route", "add", "default", "via", FLOAT_FRONT])?;
        for (i, u) in p.units.iter().enumerate() {
            let (f, b) = (format!("f{}", i + 1), format!("b{}", i + 100));
            veth(u, "lbf", &p.front, &f)?;
            attach(&p.front, &f)?;
            veth(u, "lbb", &p.back, &b)?;
            attach(&p.back, &b)?;
            u.ip(&["link", "set", "lbf", "up"])?;
            u.ip(&["link", "set", "lbb", "up"])?;
        }
        for (i, be) in p.backends.iter().enumerate() {
            let sw = format!("b{i}");
            veth(be, "be0", &p.back, &sw)?;
            attach(&p.back, &sw)?;
            be.iface_up("be0", Some(&format!("{}/24", backend_ip(i))))?;
            be.ip(&["route", "add", "default", "via", FLOAT_BACK])?;
        }
        Ok(p)
    }

    /// A SIPp UAS on every backend (built-in `uas` with `extra` options), named `uas<i>`.
    pub fn start_uas_backends(&self, extra: &[&str]) -> Result<Vec<Uas>> {
        sipp::start_backend_uases(&self.backends, &self.dir, "uas", None, extra)
    }

    /// The configuration of unit `i` (priority 200 for unit 0, 100 for unit 1) with
    /// `farms` appended.
    pub fn config(&self, i: usize, farms: &str) -> String {
        let prefix = format!("{}u{i}", self.tag);
        let peer = BACK[1 - i].split('/').next().unwrap();
        let run = self.dir.join(format!("run-u{i}"));
        format!(
            r#"{head}
[ha]
enabled = true
peer = "{peer}"
priority = {prio}
heartbeat_ms = 100
dead_after = 3
sync_ms = 20
key = "e2e-pair-shared-secret"

[[port]]
name = "front"
address = "{front}"
floating = ["{FLOAT_FRONT}"]

[[port]]
name = "back"
address = "{back}"
floating = ["{FLOAT_BACK}"]

{farms}"#,
            head = unit_head(&prefix, "0@0,1@1", &run),
            prio = if i == 0 { 200 } else { 100 },
            front = FRONT[i],
            back = BACK[i],
        )
    }

    /// Starts `siplb run` on unit `i`.
    pub fn start(&self, i: usize, farms: &str) -> Result<Siplb> {
        Siplb::launch(
            &self.units[i],
            &self.dir,
            &format!("u{i}"),
            &self.config(i, farms),
            &format!("{}u{i}", self.tag),
        )
    }

    /// The MAC addresses that answer an ARP request for the VIP on the client's link
    /// within a second: one per unit that claims it.
    pub fn vip_owners(&self) -> Vec<String> {
        let script = r#"
import socket, struct, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(("cli0", 0))
mac = s.getsockname()[4]
me, vip = socket.inet_aton("198.18.0.10"), socket.inet_aton("198.18.0.2")
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, me, b"\0" * 6, vip)
s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
s.settimeout(0.1)
seen, end = set(), time.time() + 1.0
while time.time() < end:
    try:
        f = s.recv(128)
    except socket.timeout:
        continue
    if len(f) >= 42 and f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02" and f[28:32] == vip:
        seen.add(f[22:28].hex(":"))
print(" ".join(sorted(seen)))
"#;
        let out = self
            .client
            .run("python3", &["-c", script])
            .expect("ARP probe");
        out.split_whitespace().map(str::to_string).collect()
    }

    /// A farm on the VIP over the backends, in `nat` mode.
    pub fn farm(&self, nat: &str, extra: &str) -> String {
        self.farm_of(nat, extra, self.backends.len())
    }

    /// A farm on the VIP over the first `backends` backends (the others can be added
    /// live), in `nat` mode.
    pub fn farm_of(&self, nat: &str, extra: &str, backends: usize) -> String {
        let b: Vec<String> = (0..backends)
            .map(|i| format!("{{ address = \"{}\" }}", backend_ip(i)))
            .collect();
        format!(
            "[[farm]]\nname = \"pbx\"\nvip = \"{VIP}\"\nnat = \"{nat}\"\n{extra}\nbackends = [ {} ]\n",
            b.join(", ")
        )
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if std::env::var_os("SIPLB_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The part of a test unit's configuration that the HA pair and the ECMP units share:
/// one worker on `lcores` (EAL `--lcores`), two af_packet ports on `lbf` and `lbb`,
/// small tables, no HTTP, `run` as the run directory.
pub fn unit_head(prefix: &str, lcores: &str, run: &std::path::Path) -> String {
    format!(
        r#"[dataplane]
eal_args = ["--lcores", "{lcores}", "--no-pci", "--file-prefix", "{prefix}", "--vdev", "net_af_packet0,iface=lbf,framesz=4096", "--vdev", "net_af_packet1,iface=lbb,framesz=4096"]
workers = 1
idle_sleep_us = 200
mbufs = 8191
mbuf_data_size = 4096
arp_refresh_s = 5

[tables]
dialogs = 65536
registrations = 16384
snat_sessions = 16384
tcp_connections = 16384
rate_sources = 16384

[control]
http = ""
run_dir = "{run}"
"#,
        run = run.display()
    )
}
