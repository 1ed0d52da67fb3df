//! The control plane's desired state: the running configuration (the file, plus the
//! operator's live edits: backends added, removed, re-weighted) and per-backend flags
//! (drained by the operator, down by the health checks). The dataplane gets all of it
//! as one `DesiredState`, with a new generation on every change.

use crate::api::BackendRef;
use anyhow::{bail, Result};
use siplb_core::config::{BackendConfig, Config};
use siplb_core::control::{DesiredState, Override};
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

#[derive(Debug, Clone)]
pub struct ControlState {
    pub config: Config,
    pub flags: BTreeMap<Key, Flags>,
    pub generation: u64,
    /// This unit owns the VIPs (HA role; always true without HA).
    pub active: bool,
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
        }
    }

    /// Adopts a state read back from a running dataplane.
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
        Self {
            config: d.config,
            flags,
            generation: d.generation,
            active: d.active,
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
        DesiredState {
            generation: self.generation,
            config: self.config.clone(),
            overrides,
            active: self.active,
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
