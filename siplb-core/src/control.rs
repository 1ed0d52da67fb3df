//! What the control plane and the dataplane say to each other over their `rte_ring`s:
//! commands one way, replies the other, as JSON (small, rare messages; the hot path
//! never sees them).
//!
//! The dataplane owns no policy: the control plane sends the whole desired state
//! (configuration plus live overrides of backends: drained, down, re-weighted) and the
//! dataplane's main lcore builds the services and Maglev tables from it and swaps them
//! in. The same code builds the same tables in every unit (see `maglev`).

use crate::config::Config;
use crate::lb::security::feed::FeedsFile;
use crate::lb::services::BackendState;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// A live change to one backend, kept apart from the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub farm: String,
    pub address: Ipv4Addr,
    pub port: u16,
    pub state: BackendState,
    /// Replaces the configured weight.
    pub weight: Option<u32>,
    /// Why (operator drain, health check failure ...), for status output.
    pub reason: String,
}

/// Everything the dataplane needs to balance: what the control plane wants now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Bumped by the control plane on every change.
    pub generation: u64,
    pub config: Config,
    pub overrides: Vec<Override>,
    /// This unit owns the VIPs, SNAT and floating addresses (always, without HA).
    #[serde(default = "active_by_default")]
    pub active: bool,
    /// `[security] deny_file` as the control plane last read it: its prefixes end
    /// `config.security.deny` and `config.security.deny_file` is empty, so an apply
    /// reads no file and a broken feed never blocks a role or health change. `None`:
    /// no deny file, or the state the dataplane started with (it read the file).
    #[serde(default)]
    pub deny_file: Option<DenyFileRead>,
    /// `[[security.feed]]`'s prefixes, too many for this message: the file the control
    /// plane wrote them to (`lb::security::feed`). `None`: no feed fetched yet.
    #[serde(default)]
    pub feeds: Option<FeedsFile>,
}

/// Where the last prefixes of `config.security.deny` came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyFileRead {
    /// The operator's `deny_file`.
    pub path: String,
    /// How many prefixes it gave (the last ones of `config.security.deny`).
    pub prefixes: usize,
}

fn active_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Apply this state (build services and tables, publish them to the workers).
    Apply { state: Box<DesiredState> },
    /// Send back the state in force.
    GetState,
    /// Stop the dataplane (the operator's `siplb shutdown`).
    Shutdown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Applied {
        generation: u64,
    },
    /// The state was not applied; the previous one stays in force.
    Rejected {
        reason: String,
    },
    State {
        state: Box<DesiredState>,
        pid: u32,
    },
    ShuttingDown,
}

/// A command or reply with the id that pairs them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub id: u64,
    pub body: T,
}

impl<T: Serialize> Envelope<T> {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("control messages always serialise")
    }
}

impl<T: for<'de> Deserialize<'de>> Envelope<T> {
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("malformed control message: {e}"))
    }
}

/// Why a new configuration cannot be applied to a running dataplane (it needs a
/// restart), or `None` if it can.
pub fn needs_restart(running: &Config, new: &Config) -> Option<String> {
    if running.dataplane != new.dataplane {
        return Some("[dataplane] changed: restart the dataplane to apply it".into());
    }
    if running.tables != new.tables {
        return Some("[tables] changed: table sizes are fixed while the dataplane runs".into());
    }
    if running.ports.len() != new.ports.len() {
        return Some(
            "the number of [[port]] sections changed: ports are fixed while the dataplane runs"
                .into(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn commands_round_trip_and_garbage_is_an_error() {
        let cfg = Config::parse(
            "[[port]]\nname='p'\naddress='198.18.0.1/24'\n[[farm]]\nname='f'\nvip='198.18.0.2'\nbackends=[{address='198.18.0.11'}]\n",
            Path::new("x"),
        )
        .unwrap();
        let e = Envelope {
            id: 7,
            body: Command::Apply {
                state: Box::new(DesiredState {
                    generation: 3,
                    config: cfg.clone(),
                    active: true,
                    deny_file: None,
                    feeds: None,
                    overrides: vec![Override {
                        farm: "f".into(),
                        address: "198.18.0.11".parse().unwrap(),
                        port: 5060,
                        state: BackendState::Drained,
                        weight: Some(2),
                        reason: "operator".into(),
                    }],
                }),
            },
        };
        let back = Envelope::<Command>::decode(&e.encode()).unwrap();
        match back.body {
            Command::Apply { state } => {
                assert_eq!(state.config, cfg);
                assert_eq!(state.overrides[0].state, BackendState::Drained);
            }
            other => panic!("{other:?}"),
        }
        assert!(Envelope::<Command>::decode(b"{\"id\":1").is_err());
        let mut more = cfg.clone();
        more.tables.dialogs *= 2;
        assert!(needs_restart(&cfg, &more).is_some());
        assert!(needs_restart(&cfg, &cfg).is_none());
    }
}
