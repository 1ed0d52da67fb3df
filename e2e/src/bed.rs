//! A test bed: the standard topology with a running dataplane, and helpers to run SIPp
//! scenarios on its client and backends.

use crate::sipp::{self, Uac, Uas};
use crate::topology::{backend_ip, Dataplane, Spec, Topology, CLIENT_IP, VIP};
use anyhow::Result;
use std::path::PathBuf;
use std::time::Duration;

pub struct Bed {
    pub topo: Topology,
    pub dp: Dataplane,
}

/// A scenario file shipped in `e2e/scenarios/`.
pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.xml"))
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

    /// Starts a SIPp UAS on every backend (`scenario` None = built-in `uas`).
    pub fn backends(
        &self,
        scenario_name: Option<&str>,
        tag: &str,
        extra: &[&str],
    ) -> Result<Vec<Uas>> {
        let sc = scenario_name.map(scenario);
        self.topo
            .backends
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                sipp::start_uas(
                    ns,
                    backend_ip(i),
                    5060,
                    &self.topo.dir,
                    &format!("{tag}-be{i}"),
                    sc.as_deref(),
                    extra,
                )
            })
            .collect()
    }

    /// A UAC on the client calling the VIP.
    pub fn client(
        &self,
        scenario_name: Option<&str>,
        tag: &str,
        calls: u32,
        rate: u32,
        extra: Vec<String>,
    ) -> Uac<'_> {
        Uac {
            ns: &self.topo.client,
            local_ip: CLIENT_IP,
            local_port: 5060,
            target: format!("{VIP}:5060"),
            calls,
            rate,
            limit: 200,
            scenario: scenario_name.map(scenario),
            extra,
            timeout: Duration::from_secs(60),
            name: tag.to_string(),
            trace: false,
        }
    }

    /// Writes a SIPp injection file with one user per line.
    pub fn users(&self, name: &str, users: &[String]) -> Result<PathBuf> {
        let p = self.topo.dir.join(format!("{name}.csv"));
        std::fs::write(&p, format!("SEQUENTIAL\n{}\n", users.join("\n")))?;
        Ok(p)
    }

    /// Stops the dataplane and returns its final counters line.
    pub fn stop(&mut self) -> String {
        let out = self.dp.stop();
        out.lines()
            .rev()
            .find(|l| l.contains("final"))
            .unwrap_or("")
            .to_string()
    }
}

/// The value of `name=` in a stats line (`0` if absent).
pub fn stat(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
