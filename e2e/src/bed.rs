//! A test bed: the standard topology with a running dataplane, and helpers to run SIPp
//! scenarios on its client and backends.

use crate::sipp::{self, Uac, Uas};
use crate::topology::{Dataplane, Spec, Topology};
use anyhow::Result;
use std::path::PathBuf;

pub struct Bed {
    pub topo: Topology,
    pub dp: Dataplane,
}

impl Bed {
    /// Brings the topology up and starts the dataplane with one farm on the VIP.
    pub fn start(
        backends: usize,
        workers: u16,
        nat: &str,
        affinity: &str,
        extra: &str,
    ) -> Result<Bed> {
        let topo = Topology::up(Spec { backends, workers })?;
        let weights = vec![1; backends];
        let cfg = topo.base_config() + &topo.farm_config(nat, affinity, &weights, extra);
        let dp = topo.start_dataplane(&cfg, &["--stats-interval", "5"])?;
        Ok(Bed { topo, dp })
    }

    /// Starts a SIPp UAS on every backend (`scenario` None = built-in `uas`), named
    /// `<tag>-be<i>`.
    pub fn backends(&self, scenario: Option<&str>, tag: &str, extra: &[&str]) -> Result<Vec<Uas>> {
        sipp::start_backend_uases(
            &self.topo.backends,
            &self.topo.dir,
            &format!("{tag}-be"),
            scenario,
            extra,
        )
    }

    /// A UAC on the client calling the VIP (`Uac::new`'s defaults).
    pub fn client(&self, tag: &str, calls: u32, rate: u32) -> Uac<'_> {
        Uac::new(&self.topo.client, tag, calls, rate)
    }

    /// Writes a SIPp injection file with one user per line.
    pub fn users(&self, name: &str, users: &[String]) -> Result<PathBuf> {
        let p = self.topo.dir.join(format!("{name}.csv"));
        std::fs::write(&p, format!("SEQUENTIAL\n{}\n", users.join("\n")))?;
        Ok(p)
    }

    /// Stops the dataplane and returns its final counters line.
    pub fn stop(&mut self) -> String {
        self.dp.stop_final_stats()
    }
}

/// The value of `name=` in a stats line (`0` if absent).
pub fn stat(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
