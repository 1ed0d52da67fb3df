//! `siplb run` (control daemon + the dataplane it starts) on the standard topology,
//! and the `siplb` CLI against it.

use crate::netns::Netns;
use crate::process::Proc;
use crate::topology::{remove_dpdk_files, Topology};
use anyhow::{bail, Context, Result};
use runtime::names;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct Siplb {
    pub daemon: Proc,
    pub config: PathBuf,
    pub prefix: String,
    pub run_dir: PathBuf,
    pub dataplane_log: PathBuf,
    starts: u32,
}

/// The output of one CLI call.
pub struct CliOutput {
    pub ok: bool,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Topology {
    /// A complete configuration for `siplb run` on this topology: the dataplane's EAL
    /// arguments, a private run directory and an HTTP listener on a free port.
    pub fn siplb_config(&self, farms: &str) -> String {
        let eal: Vec<String> = self.eal_args().iter().map(|a| format!("{a:?}")).collect();
        let base = self.base_config().replacen(
            "[dataplane]\n",
            &format!("[dataplane]\neal_args = [{}]\n", eal.join(", ")),
            1,
        );
        format!(
            "{base}\n[control]\nhttp = \"127.0.0.1:0\"\nrun_dir = \"{}\"\n{farms}",
            self.dir.join("run").display()
        )
    }

    /// Writes `config` and starts `siplb run` in the balancer's namespace.
    pub fn start_siplb(&self, config: &str) -> Result<Siplb> {
        Siplb::launch(&self.lb, &self.dir, "siplb", config, &self.tag)
    }
}

impl Siplb {
    /// Writes `config` as `<dir>/<name>.toml` and starts `siplb run` in `ns`; the config
    /// must use file prefix `prefix` and run directory `<dir>/run` (or `<dir>/run-<name>`
    /// for a name other than "siplb").
    pub fn launch(ns: &Netns, dir: &Path, name: &str, config: &str, prefix: &str) -> Result<Siplb> {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config)?;
        let run_dir = if name == "siplb" {
            dir.join("run")
        } else {
            dir.join(format!("run-{name}"))
        };
        let mut s = Siplb {
            daemon: Proc::spawn("siplb", Command::new("true"), &dir.join("unused.log"))?,
            config: path,
            prefix: prefix.to_string(),
            dataplane_log: dir.join(format!("{name}-dataplane.log")),
            run_dir,
            starts: 0,
        };
        s.start_daemon(ns)?;
        Ok(s)
    }

    /// Starts (again) the control daemon in `lb`; it starts or reattaches to the
    /// dataplane.
    pub fn start_daemon(&mut self, lb: &Netns) -> Result<()> {
        self.starts += 1;
        let mut cmd = lb.command(crate::bins::path("siplb"));
        cmd.arg("-c")
            .arg(&self.config)
            .arg("run")
            .arg("--dataplane-log")
            .arg(&self.dataplane_log);
        // Beside the run directory, named after it: the two units of a `Pair` share
        // one test directory (`run-u0`, `run-u1`) and must not share a log.
        let run = self
            .run_dir
            .file_name()
            .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
        let log = self
            .run_dir
            .with_file_name(format!("siplb-{run}-{}.log", self.starts));
        self.daemon = Proc::spawn("siplb run", cmd, &log)?;
        self.daemon
            .wait_for_output("control socket", Duration::from_secs(60))?;
        Ok(())
    }

    /// Runs `siplb -c <config> args...` (from the root namespace: the socket is a file).
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let out = Command::new(crate::bins::path("siplb"))
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("running siplb");
        CliOutput {
            ok: out.status.success(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Like `cli`, failing on a non-zero exit.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let o = self.cli(args);
        if !o.ok {
            bail!(
                "siplb {} failed ({}): {}{}",
                args.join(" "),
                o.code,
                o.stdout,
                o.stderr
            );
        }
        Ok(o.stdout)
    }

    /// `siplb status --json` (null if the daemon does not answer).
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli(&["status", "--json"]).stdout).unwrap_or_default()
    }

    /// The HA role line of `siplb status` ("active (peer alive ...)", "standby ..."),
    /// empty if the daemon does not answer.
    pub fn ha_role(&self) -> String {
        self.status_json()["ha"].as_str().unwrap_or("").to_string()
    }

    /// The dataplane's `final` counters line, once it printed it on exit (after
    /// `shutdown` or a signal), waiting up to `d`; panics naming its log if it does not.
    pub fn final_counters(&self, d: Duration) -> String {
        let log = || std::fs::read_to_string(&self.dataplane_log).unwrap_or_default();
        let line = |log: &str| {
            log.lines()
                .find(|l| l.starts_with("siplb-dataplane: final"))
                .map(str::to_string)
        };
        crate::wait_until("the dataplane's final counters", d, || {
            line(&log()).is_some()
        });
        line(&log()).unwrap_or_default()
    }

    /// The dataplane's PID (from its ready file).
    pub fn dataplane_pid(&self) -> Option<u32> {
        let f = names::ready_file(&names::dpdk_runtime_dir(&self.prefix));
        std::fs::read_to_string(f).ok()?.trim().parse().ok()
    }

    /// The HTTP address the daemon printed.
    pub fn http_addr(&self) -> Result<String> {
        let out = self.daemon.output();
        let line = out
            .lines()
            .find(|l| l.contains("metrics on http://"))
            .context("no HTTP listener announced")?;
        let rest = line.split("http://").nth(1).context("no address")?;
        Ok(rest.split('/').next().unwrap_or("").to_string())
    }

    /// GET `path` from the daemon's HTTP listener (inside the balancer's namespace).
    pub fn http_get(&self, lb: &Netns, path: &str) -> Result<String> {
        let url = format!("http://{}{path}", self.http_addr()?);
        lb.run(
            "python3",
            &["-c", "import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=5).read().decode())", &url],
        )
    }
}

impl Drop for Siplb {
    fn drop(&mut self) {
        let pid = self.dataplane_pid();
        let _ = self.cli(&["shutdown"]);
        self.daemon.stop(Duration::from_secs(5));
        if let Some(pid) = pid {
            // The dataplane runs in its own process group; make sure it is gone.
            // SAFETY: signal 0 only probes the PID we read from its ready file.
            let alive = || unsafe { libc::kill(pid as i32, 0) } == 0;
            for _ in 0..100 {
                if !alive() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive() {
                // SAFETY: the dataplane we started did not stop by itself.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        remove_dpdk_files(&self.prefix);
    }
}
