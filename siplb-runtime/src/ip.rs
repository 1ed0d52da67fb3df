//! iproute2's `ip`, as the processes and the test bed run it to set up interfaces,
//! addresses, routes, rules and namespaces.

use anyhow::{bail, Context, Result};
use std::process::Command;

/// Runs `ip args...`; fails with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    ip_output(args).map(drop)
}

/// Runs `ip args...` and returns what it printed; fails with its stderr.
pub fn ip_output(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
