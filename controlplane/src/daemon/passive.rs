//! The end of passive health marks. The dataplane's workers mark a backend down from
//! live traffic (`siplb_core::lb::load`: unanswered dialog-creating requests, ICMP
//! port unreachable); on a farm with active checks the mark holds until `rise` good
//! checks that all ended after it was seen here, then this clears it. (On a farm
//! without checks the dataplane lets a mark lapse after `passive.down_ms`.)

use super::health::{Board, Key};
use runtime::shm::Shared;
use siplb_core::config::Config;
use siplb_core::health::CheckKind;
use std::collections::HashMap;

#[derive(Default)]
pub struct Passive {
    /// Marks in force: the backend's check count when the mark was first seen.
    seen: HashMap<usize, u64>,
}

impl Passive {
    /// Looks at every backend slot's mark (one load each) and ends those the checks
    /// have answered for.
    pub fn poll(&mut self, shared: &Shared, config: &Config, board: &Board) {
        for (slot, dir) in shared.directory.iter().enumerate() {
            let load = shared.tables.load.get(slot as u16);
            if load.view().passive_down_ms.is_none() {
                self.seen.remove(&slot);
                continue;
            }
            let Some(key) = dir.get() else { continue };
            let Some(rise) = rise_of(config, &key) else {
                continue;
            };
            let status = board
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key)
                .cloned()
                .unwrap_or_default();
            let first = *self.seen.entry(slot).or_insert_with(|| {
                println!(
                    "siplb: passive health: {} {}:{} marked down by the dataplane ({} marks); back after {rise} good checks",
                    key.0,
                    key.1,
                    key.2,
                    load.view().passive_marks
                );
                status.checks
            });
            if status.checks >= first + u64::from(rise) && status.ok_streak >= rise {
                load.clear_passive();
                self.seen.remove(&slot);
                println!(
                    "siplb: passive health: {} {}:{} back: {rise} good checks after the mark",
                    key.0, key.1, key.2
                );
            }
        }
    }
}

/// The `rise` of the backend's farm, if the farm runs active checks.
fn rise_of(config: &Config, key: &Key) -> Option<u32> {
    config
        .farms
        .iter()
        .find(|f| f.name == key.0)
        .filter(|f| f.health.check != CheckKind::None)
        .filter(|f| {
            f.backends
                .iter()
                .any(|b| b.address == key.1 && b.port == key.2)
        })
        .map(|f| f.health.rise.max(1))
}
