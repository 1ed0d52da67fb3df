//! Network namespaces and links, made with iproute2 and removed on drop.

use anyhow::{bail, Context, Result};
use runtime::ip::ip;
use std::process::Command;

/// A network namespace; deleted (with every interface in it) on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(name: &str) -> Result<Netns> {
        // A namespace left by a killed earlier run with the same name goes first.
        let _ = ip(&["netns", "del", name]);
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs a command in the namespace to completion; fails with its output.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("running {program} in {}", self.name))?;
        if !out.status.success() {
            bail!(
                "{program} {} in {}: {}{}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Brings an interface up with an optional address (`a.b.c.d/len`), and turns off
    /// TX checksum offload so kernel-sent UDP leaves with finished checksums (veth
    /// otherwise hands the balancer CHECKSUM_PARTIAL packets).
    pub fn iface_up(&self, ifname: &str, addr: Option<&str>) -> Result<()> {
        if let Some(a) = addr {
            self.ip(&["addr", "add", a, "dev", ifname])?;
        }
        self.ip(&["link", "set", ifname, "up"])?;
        self.run("ethtool", &["-K", ifname, "tx", "off"])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Creates a veth pair with one end in each namespace (names never appear in the root
/// namespace, so parallel tests cannot collide).
pub fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) -> Result<()> {
    ip(&[
        "link",
        "add",
        a_name,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ])
}
