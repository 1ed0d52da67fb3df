//! The control plane's desired state: the running configuration (the file, plus the
//! operator's live edits: backends added, removed, re-weighted) and per-backend flags
//! (drained by the operator, down by the health checks). The dataplane gets all of it
//! as one `DesiredState`, with a new generation on every change.
//!
//! The control plane reads `[security] deny_file` (at start and on `siplb reload`) and
//! sends its prefixes inside the state, so the dataplane reads no file on an apply: a
//! feed that turns unreadable or malformed keeps its last good prefixes, is reported
//! and counted, and never blocks a role or health change.

use crate::api::BackendRef;
use anyhow::{bail, Result};
use siplb_core::config::{BackendConfig, Config, Ipv4Net};
use siplb_core::control::{DenyFileRead, DesiredState, Override};
use siplb_core::lb::security::feed::FeedsFile;
use siplb_core::lb::security::read_deny_file;
use siplb_core::lb::services::BackendState;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

type Key = (String, Ipv4Addr, u16);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub drained: bool,
    /// Failed its health checks.
    pub down: bool,
    /// Why it is down (the failing check's result).
    pub reason: String,
}

/// What the control plane read of `[security] deny_file`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DenyFile {
    /// The last good read (sent to the dataplane).
    pub prefixes: Vec<Ipv4Net>,
    /// Reads that failed since the daemon started.
    pub errors: u64,
    /// Why the last read failed; empty when it succeeded.
    pub error: String,
}

#[derive(Debug, Clone)]
pub struct ControlState {
    pub config: Config,
    pub flags: BTreeMap<Key, Flags>,
    pub generation: u64,
    /// This unit owns the VIPs (HA role; always true without HA).
    pub active: bool,
    pub deny_file: DenyFile,
    /// The feeds' file the dataplane reads (`feeds.rs`).
    pub feeds: Option<FeedsFile>,
}

fn key(b: &BackendRef) -> Key {
    (b.farm.clone(), b.address, b.port)
}

impl ControlState {
    #[cfg(test)]
    pub fn new(config: Config, generation: u64) -> Self {
        Self {
            active: !config.ha.enabled,
            config,
            flags: BTreeMap::new(),
            generation,
            deny_file: DenyFile::default(),
            feeds: None,
        }
    }

    /// Adopts a state read back from a running dataplane. A deny file it holds as
    /// prefixes is taken apart again; one it does not (the state the dataplane started
    /// with) is read.
    pub fn from_desired(d: DesiredState) -> Self {
        let mut flags = BTreeMap::new();
        for o in d.overrides {
            let f: &mut Flags = flags.entry((o.farm, o.address, o.port)).or_default();
            match o.state {
                BackendState::Drained => f.drained = true,
                BackendState::Down => {
                    f.down = true;
                    f.reason = o.reason;
                }
                BackendState::Up => {}
            }
        }
        let mut config = d.config;
        let mut deny_file = DenyFile::default();
        let read = match d.deny_file {
            Some(f) => {
                let deny = &mut config.security.deny;
                deny_file.prefixes = deny.split_off(deny.len().saturating_sub(f.prefixes));
                config.security.deny_file = f.path;
                true
            }
            None => false,
        };
        let mut s = Self {
            config,
            flags,
            generation: d.generation,
            active: d.active,
            deny_file,
            feeds: d.feeds,
        };
        if !read {
            if let Some(e) = s.read_deny_file() {
                eprintln!("siplb: {e}");
            }
        }
        s
    }

    /// Reads `[security] deny_file` (if set). On failure the last good prefixes stay,
    /// the failure is counted and returned, for the operator.
    pub fn read_deny_file(&mut self) -> Option<String> {
        let path = &self.config.security.deny_file;
        if path.is_empty() {
            self.deny_file.prefixes.clear();
            self.deny_file.error.clear();
            return None;
        }
        match read_deny_file(path) {
            Ok(p) => {
                self.deny_file.prefixes = p;
                self.deny_file.error.clear();
                None
            }
            Err(e) => {
                self.deny_file.errors += 1;
                self.deny_file.error = e;
                Some(format!(
                    "[security] deny_file: {}: the last good list ({} prefixes) stays in force; fix the file and run `siplb reload`",
                    self.deny_file.error,
                    self.deny_file.prefixes.len()
                ))
            }
        }
    }

    pub fn desired(&self) -> DesiredState {
        let overrides = self
            .flags
            .iter()
            .filter(|(_, f)| f.down || f.drained)
            .map(|((farm, address, port), f)| Override {
                farm: farm.clone(),
                address: *address,
                port: *port,
                state: if f.down {
                    BackendState::Down
                } else {
                    BackendState::Drained
                },
                weight: None,
                reason: if f.down {
                    f.reason.clone()
                } else {
                    "drained by the operator".into()
                },
            })
            .collect();
        let mut config = self.config.clone();
        let path = std::mem::take(&mut config.security.deny_file);
        let deny_file = (!path.is_empty()).then(|| {
            config
                .security
                .deny
                .extend_from_slice(&self.deny_file.prefixes);
            DenyFileRead {
                path,
                prefixes: self.deny_file.prefixes.len(),
            }
        });
        DesiredState {
            generation: self.generation,
            config,
            overrides,
            active: self.active,
            deny_file,
            feeds: self.feeds.clone(),
        }
    }

    /// The state a backend is applied with.
    pub fn backend_state(&self, farm: &str, address: Ipv4Addr, port: u16) -> BackendState {
        match self.flags.get(&(farm.to_string(), address, port)) {
            Some(f) if f.down => BackendState::Down,
            Some(f) if f.drained => BackendState::Drained,
            _ => BackendState::Up,
        }
    }

    fn farm_index(&self, farm: &str) -> Result<usize> {
        match self.config.farms.iter().position(|f| f.name == farm) {
            Some(i) => Ok(i),
            None => {
                let names: Vec<&str> = self.config.farms.iter().map(|f| f.name.as_str()).collect();
                bail!("no farm named `{farm}` (farms: {})", names.join(", "))
            }
        }
    }

    fn backend_index(&self, b: &BackendRef) -> Result<(usize, usize)> {
        let fi = self.farm_index(&b.farm)?;
        match self.config.farms[fi]
            .backends
            .iter()
            .position(|x| x.address == b.address && x.port == b.port)
        {
            Some(bi) => Ok((fi, bi)),
            None => {
                let list: Vec<String> = self.config.farms[fi]
                    .backends
                    .iter()
                    .map(|x| format!("{}:{}", x.address, x.port))
                    .collect();
                bail!(
                    "farm `{}` has no backend {}:{} (it has {})",
                    b.farm,
                    b.address,
                    b.port,
                    list.join(", ")
                )
            }
        }
    }

    /// Applies `change` to a copy of the configuration, validates the result and keeps
    /// it only if it is valid.
    fn edit(&mut self, change: impl FnOnce(&mut Config) -> Result<()>) -> Result<()> {
        let mut c = self.config.clone();
        change(&mut c)?;
        c.check()?;
        self.config = c;
        self.generation += 1;
        Ok(())
    }

    pub fn add_backend(&mut self, b: &BackendRef, weight: u32) -> Result<()> {
        let fi = self.farm_index(&b.farm)?;
        if self.backend_index(b).is_ok() {
            bail!("{b} already exists");
        }
        self.edit(|c| {
            c.farms[fi].backends.push(BackendConfig {
                address: b.address,
                port: b.port,
                tls_port: 5061,
                weight,
                max_dialogs: 0,
                priority: 0,
            });
            Ok(())
        })
    }

    /// Removes a backend; `active_dialogs` is how many dialogs it still carries.
    pub fn remove_backend(
        &mut self,
        b: &BackendRef,
        active_dialogs: u64,
        force: bool,
    ) -> Result<()> {
        let (fi, bi) = self.backend_index(b)?;
        if active_dialogs > 0 && !force {
            bail!(
                "{b} carries {active_dialogs} dialogs in progress: drain it (`siplb backend drain`) and remove it when they have ended, or pass --force to cut them"
            );
        }
        self.edit(|c| {
            c.farms[fi].backends.remove(bi);
            Ok(())
        })?;
        self.flags.remove(&key(b));
        Ok(())
    }

    pub fn set_weight(&mut self, b: &BackendRef, weight: u32) -> Result<()> {
        let (fi, bi) = self.backend_index(b)?;
        self.edit(|c| {
            c.farms[fi].backends[bi].weight = weight;
            Ok(())
        })
    }

    pub fn set_drained(&mut self, b: &BackendRef, drained: bool) -> Result<()> {
        self.backend_index(b)?;
        let f = self.flags.entry(key(b)).or_default();
        if f.drained == drained {
            bail!(
                "{b} is already {}",
                if drained { "drained" } else { "in service" }
            );
        }
        f.drained = drained;
        self.generation += 1;
        Ok(())
    }

    /// Health checks' verdict; returns true if it changed anything.
    pub fn set_down(
        &mut self,
        farm: &str,
        address: Ipv4Addr,
        port: u16,
        down: bool,
        reason: &str,
    ) -> bool {
        let f = self
            .flags
            .entry((farm.to_string(), address, port))
            .or_default();
        if f.down == down {
            return false;
        }
        f.down = down;
        f.reason = reason.to_string();
        self.generation += 1;
        true
    }

    /// Replaces the configuration by the file's (`siplb reload`); flags of backends
    /// that remain are kept.
    pub fn reload(&mut self, config: Config) {
        self.flags.retain(|(farm, addr, port), _| {
            config.farms.iter().any(|f| {
                &f.name == farm
                    && f.backends
                        .iter()
                        .any(|b| b.address == *addr && b.port == *port)
            })
        });
        self.config = config;
        self.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use siplb_core::lb::services::{BuildError, Services, SlotRegistry};
    use siplb_core::wire::MacAddr;
    use std::collections::HashMap;
    use std::path::Path;

    fn state() -> ControlState {
        let cfg = Config::parse(
            "[[port]]\nname='b'\naddress='198.18.1.1/24'\n[[farm]]\nname='pbx'\nvip='198.18.0.2'\nbackends=[{address='198.18.1.11'},{address='198.18.1.12'}]\n",
            Path::new("x"),
        )
        .unwrap();
        ControlState::new(cfg, 1)
    }

    fn b(addr: &str) -> BackendRef {
        BackendRef {
            farm: "pbx".into(),
            address: addr.parse().unwrap(),
            port: 5060,
        }
    }

    #[test]
    fn edits_validate_and_bump_the_generation() {
        let mut s = state();
        s.add_backend(&b("198.18.1.13"), 2).unwrap();
        assert_eq!(s.generation, 2);
        assert!(s
            .add_backend(&b("198.18.1.13"), 2)
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        let e = s.add_backend(&b("198.19.0.1"), 1).unwrap_err().to_string();
        assert!(e.contains("no port's subnet"), "{e}");
        assert_eq!(s.generation, 2, "a rejected edit changes nothing");
        s.set_weight(&b("198.18.1.13"), 5).unwrap();
        assert_eq!(s.config.farms[0].backends[2].weight, 5);
        let e = s.set_weight(&b("198.18.1.99"), 1).unwrap_err().to_string();
        assert!(e.contains("has no backend 198.18.1.99:5060"), "{e}");
        let e = s
            .set_weight(
                &BackendRef {
                    farm: "nope".into(),
                    ..b("198.18.1.11")
                },
                1,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("no farm named `nope`"), "{e}");
    }

    #[test]
    fn drain_and_health_make_overrides() {
        let mut s = state();
        s.set_drained(&b("198.18.1.11"), true).unwrap();
        assert!(s.set_drained(&b("198.18.1.11"), true).is_err());
        assert!(s.set_down(
            "pbx",
            "198.18.1.12".parse().unwrap(),
            5060,
            true,
            "OPTIONS timed out"
        ));
        assert!(!s.set_down("pbx", "198.18.1.12".parse().unwrap(), 5060, true, "again"));
        let d = s.desired();
        assert_eq!(d.overrides.len(), 2);
        assert_eq!(d.overrides[0].state, BackendState::Drained);
        assert_eq!(d.overrides[1].state, BackendState::Down);
        let back = ControlState::from_desired(d);
        assert!(back.flags[&("pbx".into(), "198.18.1.11".parse().unwrap(), 5060)].drained);
        assert_eq!(
            back.backend_state("pbx", "198.18.1.12".parse().unwrap(), 5060),
            BackendState::Down
        );
    }

    /// The services a dataplane builds from a desired state (as `Command::Apply`).
    fn build(d: &DesiredState) -> Result<Services, BuildError> {
        let macs = vec![MacAddr([2, 0, 0, 0, 0, 1]); d.config.ports.len()];
        Services::build(&d.config, &macs, &HashMap::new(), &mut SlotRegistry::new(2))
            .map(|s| s.with_active(d.active))
    }

    #[test]
    fn a_broken_deny_file_keeps_its_last_good_list_and_blocks_no_role_change() {
        let dir = std::env::temp_dir().join(format!("siplb-deny-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("deny.txt");
        std::fs::write(&file, "198.18.9.0/24\n198.18.7.7 # a scanner\n").unwrap();
        let cfg = Config::parse(
            &format!(
                "[security]\ndeny=['198.18.8.8']\ndeny_file='{}'\n[ha]\nenabled=true\npeer='198.18.1.3'\nkey='a-test-secret-of-32-bytes-at-least'\n[[port]]\nname='b'\naddress='198.18.1.1/24'\n[[farm]]\nname='pbx'\nvip='198.18.0.2'\nbackends=[{{address='198.18.1.11'}}]\n",
                file.display()
            ),
            Path::new("x"),
        )
        .unwrap();
        let mut s = ControlState::new(cfg, 1);
        assert_eq!(s.read_deny_file(), None);
        let d = s.desired();
        assert_eq!(
            d.config.security.deny.len(),
            3,
            "configured + the file's two"
        );
        assert!(
            d.config.security.deny_file.is_empty(),
            "the dataplane reads no file"
        );
        let svc = build(&d).unwrap();
        assert!(svc.security.deny.contains("198.18.7.7".parse().unwrap()));
        assert!(svc.security.deny.contains("198.18.9.200".parse().unwrap()));

        // The feed breaks: its last good list stays, the failure is said and counted.
        std::fs::write(&file, "198.18.9.0/24\nnot-a-prefix\n").unwrap();
        let e = s.read_deny_file().expect("a broken file is reported");
        assert!(
            e.contains("deny.txt:2") && e.contains("(2 prefixes)"),
            "{e}"
        );
        assert_eq!((s.deny_file.errors, s.deny_file.prefixes.len()), (1, 2));

        // The standby becomes active: the state sent builds, with the last good list.
        assert!(!s.active);
        s.active = true;
        s.generation += 1;
        let d = s.desired();
        let svc = build(&d).expect("a role change never reads the deny file");
        assert!(svc.active);
        assert!(svc.security.deny.contains("198.18.7.7".parse().unwrap()));
        // What the dataplane hit before: the configuration as written, file and all.
        let as_written = DesiredState {
            config: s.config.clone(),
            deny_file: None,
            ..d.clone()
        };
        let e = build(&as_written).unwrap_err().to_string();
        assert!(e.contains("deny.txt:2"), "{e}");

        // A daemon that attaches again reads the operator's configuration back.
        let back = ControlState::from_desired(d);
        assert_eq!(back.config, s.config);
        assert_eq!(back.deny_file.prefixes, s.deny_file.prefixes);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn remove_refuses_while_dialogs_run() {
        let mut s = state();
        let e = s
            .remove_backend(&b("198.18.1.12"), 3, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 dialogs in progress"), "{e}");
        s.remove_backend(&b("198.18.1.12"), 0, false).unwrap();
        assert_eq!(s.config.farms[0].backends.len(), 1);
        assert!(
            s.remove_backend(&b("198.18.1.11"), 0, false).is_err(),
            "a farm needs a backend"
        );
    }
}
