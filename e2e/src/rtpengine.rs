//! rtpengine (Debian `rtpengine-daemon` 10.5), the media relay a Kamailio backend
//! anchors calls on: userspace forwarding only (`--table=-1`, no kernel module), media
//! on the backend's own address, the NG control protocol on the namespace's loopback.

use crate::netns::Netns;
use crate::process::Proc;
use anyhow::Result;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// The NG control port, on the backend namespace's loopback.
pub const NG_PORT: u16 = 2223;

pub struct Rtpengine {
    pub addr: Ipv4Addr,
    pub ng: SocketAddr,
    proc: Proc,
}

impl Rtpengine {
    /// Starts rtpengine in `ns` relaying media on `addr`, ports `ports`; stops by
    /// itself after `life`. Returns once it is ready for commands.
    pub fn start(
        ns: &Netns,
        dir: &Path,
        name: &str,
        addr: Ipv4Addr,
        ports: (u16, u16),
        life: Duration,
    ) -> Result<Rtpengine> {
        let ng = SocketAddr::from(([127, 0, 0, 1], NG_PORT));
        let mut cmd = ns.command("timeout");
        cmd.arg(life.as_secs().max(1).to_string()).args([
            "rtpengine",
            // No /etc/rtpengine/rtpengine.conf: everything is on this line.
            "--config-file=none",
            "--foreground",
            "--log-stderr",
            "--log-level=6",
            "--table=-1",
            &format!("--interface={addr}"),
            &format!("--listen-ng={ng}"),
            &format!("--port-min={}", ports.0),
            &format!("--port-max={}", ports.1),
            // Forget a call's ports as soon as it is deleted (default: 30 s later).
            "--delete-delay=0",
        ]);
        let mut proc = Proc::spawn(name, cmd, &dir.join(format!("{name}.log")))?;
        proc.wait_for_output("Startup complete", Duration::from_secs(10))?;
        Ok(Rtpengine { addr, ng, proc })
    }

    /// Its log so far (offers, answers, per-call statistics on delete).
    pub fn log(&self) -> String {
        self.proc.output()
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        self.proc.stop(Duration::from_secs(5));
    }
}
