//! Reads the workers' counters and the tables from shared memory (plain loads: the
//! workers are never disturbed) and turns two successive samples into rates.

use crate::api::{
    BackendLoadStats, BackendStats, FailoverStats, FarmStats, LatencyView, MediaStats,
    ResponseStats, StatsView, TableCounts, Traffic, WorkerStats,
};
use crate::daemon::state::ControlState;
use runtime::shm::Shared;
use siplb_core::alg::{MediaError, RewriteError};
use siplb_core::config::{MAX_BACKENDS, MAX_FARMS};
use siplb_core::lb::counters::{DropReason, WorkerCounters};
use siplb_core::lb::timing::{LatencyCounters, LATENCY_BUCKETS};
use siplb_core::lb::TcpAlgSkip;
use siplb_core::sip::SipError;
use siplb_core::table::media::MediaDrop;
use siplb_core::table::DialogState;
use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Default)]
struct Raw {
    time: f64,
    workers: Vec<[u64; 6]>,
    backends: Vec<[u64; 4]>,
    /// Media packets per farm.
    media_packets: Vec<u64>,
}

fn read(shared: &Shared) -> Raw {
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let workers = shared
        .counters
        .iter()
        .map(|c: &WorkerCounters| {
            [
                c.rx_packets.get(),
                c.tx_packets.get(),
                c.rx_bytes.get(),
                c.tx_bytes.get(),
                c.polls.get(),
                c.busy_polls.get(),
            ]
        })
        .collect();
    let backends = (0..MAX_BACKENDS)
        .map(|s| {
            let mut v = [0u64; 4];
            for c in shared.counters {
                let b = &c.backends[s];
                v[0] += b.to_packets.get();
                v[1] += b.to_bytes.get();
                v[2] += b.from_packets.get();
                v[3] += b.from_bytes.get();
            }
            v
        })
        .collect();
    let media_packets = (0..MAX_FARMS)
        .map(|f| {
            shared
                .counters
                .iter()
                .map(|c| c.media[f].packets.get())
                .sum()
        })
        .collect();
    Raw {
        time,
        workers,
        backends,
        media_packets,
    }
}

/// Farm `id`'s media relay as the workers counted it; `live` from a scan.
fn media_stats(shared: &Shared, id: usize, live: u64, pps: f64) -> MediaStats {
    let sum = |f: &dyn Fn(&WorkerCounters) -> u64| -> u64 { shared.counters.iter().map(f).sum() };
    let named = |pairs: Vec<(&str, u64)>| -> BTreeMap<String, u64> {
        pairs
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_string(), n))
            .collect()
    };
    let drops = [
        MediaDrop::NotMapped,
        MediaDrop::NoDestination,
        MediaDrop::ForeignSource,
    ]
    .map(|d| (d.name(), sum(&|c| c.media[id].drops[d.index()].get())));
    let refused = [
        MediaError::Exhausted,
        MediaError::TableFull,
        MediaError::Refused,
    ]
    .map(|e| (e.name(), sum(&|c| c.media[id].refused[e.index()].get())));
    MediaStats {
        flows: sum(&|c| c.media[id].flows.get()),
        live,
        ended: sum(&|c| c.media[id].ended.get()),
        packets: sum(&|c| c.media[id].packets.get()),
        bytes: sum(&|c| c.media[id].bytes.get()),
        pps,
        drops: named(drops.to_vec()),
        refused: named(refused.to_vec()),
        unplaced: sum(&|c| c.media[id].unplaced.get()),
    }
}

fn table_counts(c: &WorkerCounters) -> TableCounts {
    TableCounts {
        dialog_table_full: c.dialog_table_full.get(),
        registration_table_full: c.registration_table_full.get(),
        connection_table_full: c.connection_table_full.get(),
        tcp_connections_created: c.tcp_connections_created.get(),
        snat_sessions_created: c.snat_sessions_created.get(),
        arp_requests: c.arp_requests.get(),
        arp_replies: c.arp_replies.get(),
        arp_learned: c.arp_learned.get(),
        icmp_replies: c.icmp_replies.get(),
        fragments_in: c.fragments_in.get(),
        datagrams_reassembled: c.datagrams_reassembled.get(),
        fragments_out: c.fragments_out.get(),
        checksums_finished: c.checksums_finished.get(),
        to_kernel: c.to_kernel.get(),
        from_kernel: c.from_kernel.get(),
        request_times_full: c.request_times_full.get(),
        rate_table_full: c.rate_table_full.get(),
        sources_banned: c.sources_banned.get(),
        auth_failures: c.auth_failures.get(),
        dnsbl_noted: c.dnsbl_noted.get(),
        dnsbl_ring_full: c.dnsbl_ring_full.get(),
        stray_sip_forwarded: c.stray_sip_forwarded.get(),
        stray_tcp_forwarded: c.stray_tcp_forwarded.get(),
    }
}

/// Backend slot `slot`'s answers, summed over the workers.
fn response_stats(shared: &Shared, slot: usize) -> ResponseStats {
    let mut r = ResponseStats::default();
    let mut first = ([0u64; LATENCY_BUCKETS + 1], 0u64);
    let mut fin = first;
    let add = |into: &mut ([u64; LATENCY_BUCKETS + 1], u64), l: &LatencyCounters| {
        for (n, b) in into.0.iter_mut().zip(&l.buckets) {
            *n += b.get();
        }
        into.1 += l.sum_us.get();
    };
    for c in shared.counters {
        let x = &c.responses[slot];
        for (n, k) in r.classes.iter_mut().zip(&x.classes) {
            *n += k.get();
        }
        r.service_unavailable += x.service_unavailable.get();
        add(&mut first, &x.first_response);
        add(&mut fin, &x.invite_final);
    }
    r.first_response = latency_view(&first.0, first.1);
    r.invite_final = latency_view(&fin.0, fin.1);
    r
}

/// A histogram from the workers' buckets, its quantiles through hdrhistogram (each
/// bucket counted at its upper bound; the overflow at twice the last bound).
pub fn latency_view(buckets: &[u64], sum_us: u64) -> LatencyView {
    let le_us: Vec<u64> = (0..LATENCY_BUCKETS)
        .filter_map(LatencyCounters::upper_us)
        .collect();
    let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("3 significant digits is valid");
    for (i, n) in buckets.iter().enumerate() {
        let at = LatencyCounters::upper_us(i).unwrap_or(2 * le_us[LATENCY_BUCKETS - 1]);
        if *n > 0 && h.record_n(at, *n).is_err() {
            break;
        }
    }
    let q = |q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1000.0
        }
    };
    LatencyView {
        le_us,
        buckets: buckets.to_vec(),
        count: buckets.iter().sum(),
        sum_us,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
    }
}

/// Farm `id`'s drops by reason, only non-zero ones.
fn farm_drops(shared: &Shared, id: usize) -> BTreeMap<String, u64> {
    DropReason::ALL
        .iter()
        .filter_map(|r| {
            let n: u64 = shared
                .counters
                .iter()
                .map(|c| c.farm_drops[id][*r as usize].get())
                .sum();
            (n > 0).then(|| (r.name().to_string(), n))
        })
        .collect()
}

pub struct Sampler {
    last: Raw,
}

impl Sampler {
    pub fn new(shared: &Shared) -> Self {
        Self { last: read(shared) }
    }

    /// A new sample, with rates since the previous one.
    pub fn sample(&mut self, shared: &Shared, state: &ControlState) -> StatsView {
        let now = read(shared);
        let dt = (now.time - self.last.time).max(1e-3);
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
        let clock_now = shared.header.clock.now();
        let clock_ms = shared.header.clock.millis();

        let mut workers = Vec::new();
        let mut totals = Traffic::default();
        for (i, (w, l)) in now
            .workers
            .iter()
            .zip(self.last.workers.iter().chain(std::iter::repeat(&[0; 6])))
            .enumerate()
        {
            let c = &shared.counters[i];
            let t = Traffic {
                rx_packets: w[0],
                tx_packets: w[1],
                rx_bytes: w[2],
                tx_bytes: w[3],
                drops: c.total_drops(),
                rx_pps: rate(w[0], l[0]),
                tx_pps: rate(w[1], l[1]),
                rx_bps: 8.0 * rate(w[2], l[2]),
                tx_bps: 8.0 * rate(w[3], l[3]),
                sip_requests: c.sip_requests.get(),
                sip_responses: c.sip_responses.get(),
                sip_steered: c.sip_steered.get(),
                alg_rewritten: c.alg_rewritten.get(),
                tcp_seq_mapped: c.tcp_seq_mapped.get(),
                dialogs_created: c.dialogs_created.get(),
                registrations_created: c.registrations_created.get(),
                tables: table_counts(c),
            };
            totals.rx_packets += t.rx_packets;
            totals.tx_packets += t.tx_packets;
            totals.rx_bytes += t.rx_bytes;
            totals.tx_bytes += t.tx_bytes;
            totals.drops += t.drops;
            totals.rx_pps += t.rx_pps;
            totals.tx_pps += t.tx_pps;
            totals.rx_bps += t.rx_bps;
            totals.tx_bps += t.tx_bps;
            totals.sip_requests += t.sip_requests;
            totals.sip_responses += t.sip_responses;
            totals.sip_steered += t.sip_steered;
            totals.alg_rewritten += t.alg_rewritten;
            totals.tcp_seq_mapped += t.tcp_seq_mapped;
            totals.dialogs_created += t.dialogs_created;
            totals.registrations_created += t.registrations_created;
            totals.tables.add(&t.tables);
            let polls = w[4].saturating_sub(l[4]);
            let busy = w[5].saturating_sub(l[5]);
            workers.push(WorkerStats {
                worker: i,
                traffic: t,
                busy: if polls == 0 {
                    0.0
                } else {
                    busy as f64 / polls as f64
                },
            });
        }

        // Active dialogs and registrations per backend slot, from one scan of each table.
        let mut dialogs = vec![0u64; MAX_BACKENDS];
        shared.tables.dialogs.for_each_live(clock_now, |_, d, _| {
            if d.state != DialogState::Terminating {
                if let Some(n) = dialogs.get_mut(usize::from(d.backend)) {
                    *n += 1;
                }
            }
        });
        let mut regs = vec![0u64; MAX_BACKENDS];
        shared
            .tables
            .registrations
            .for_each_live(clock_now, |_, r, _| {
                if let Some(n) = regs.get_mut(usize::from(r.backend)) {
                    *n += 1;
                }
            });
        let slots: HashMap<(String, std::net::Ipv4Addr, u16), usize> = shared
            .directory
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.get().map(|id| (id, i)))
            .collect();
        let mut media_live = vec![0u64; MAX_FARMS];
        shared.tables.media.live_by_farm(&mut media_live);
        let farms = state
            .config
            .farms
            .iter()
            .enumerate()
            .map(|(id, f)| {
                let backends: Vec<BackendStats> = f
                    .backends
                    .iter()
                    .map(|b| {
                        let slot = slots.get(&(f.name.clone(), b.address, b.port)).copied();
                        let (n, l) = match slot {
                            Some(s) => (
                                now.backends[s],
                                self.last.backends.get(s).copied().unwrap_or_default(),
                            ),
                            None => ([0; 4], [0; 4]),
                        };
                        BackendStats {
                            address: b.address.to_string(),
                            port: b.port,
                            state: state
                                .backend_state(&f.name, b.address, b.port)
                                .name()
                                .into(),
                            to_packets: n[0],
                            to_bytes: n[1],
                            from_packets: n[2],
                            from_bytes: n[3],
                            to_pps: rate(n[0], l[0]),
                            from_pps: rate(n[2], l[2]),
                            to_bps: 8.0 * rate(n[1], l[1]),
                            from_bps: 8.0 * rate(n[3], l[3]),
                            dialogs_active: slot.map_or(0, |s| dialogs[s]),
                            registrations_active: slot.map_or(0, |s| regs[s]),
                            responses: slot.map(|s| response_stats(shared, s)).unwrap_or_default(),
                            load: load_stats(shared, slot, f, b, clock_ms),
                        }
                    })
                    .collect();
                FarmStats {
                    name: f.name.clone(),
                    vip: format!("{}:{}", f.vip, f.port),
                    dialogs_active: backends.iter().map(|b| b.dialogs_active).sum(),
                    registrations_active: backends.iter().map(|b| b.registrations_active).sum(),
                    backends,
                    drops: farm_drops(shared, id),
                    media: media_stats(
                        shared,
                        id,
                        media_live[id],
                        rate(
                            now.media_packets[id],
                            self.last.media_packets.get(id).copied().unwrap_or_default(),
                        ),
                    ),
                }
            })
            .collect();

        let mut drops = BTreeMap::new();
        for r in DropReason::ALL {
            let n: u64 = shared
                .counters
                .iter()
                .map(|c| c.drops[r as usize].get())
                .sum();
            if n > 0 {
                drops.insert(r.name().to_string(), n);
            }
        }
        for e in SipError::ALL {
            let n: u64 = shared
                .counters
                .iter()
                .map(|c| c.sip_errors[e.index()].get())
                .sum();
            if n > 0 {
                drops.insert(format!("sip_{}", e.name()), n);
            }
        }
        // The ALG's reasons: why messages were refused (`alg_refused`), and what it
        // left as it was and counted (IPv6 media, foreign flow tokens).
        for e in RewriteError::all() {
            let n: u64 = shared
                .counters
                .iter()
                .map(|c| c.alg_errors[e.index()].get())
                .sum();
            if n > 0 {
                drops.insert(format!("alg_{}", e.name()), n);
            }
        }
        let mut tcp_alg_skipped = BTreeMap::new();
        for why in TcpAlgSkip::ALL {
            let n: u64 = shared
                .counters
                .iter()
                .map(|c| c.tcp_alg_skipped[why as usize].get())
                .sum();
            if n > 0 {
                tcp_alg_skipped.insert(why.name().to_string(), n);
            }
        }
        let farm_full_rejected = shared
            .counters
            .iter()
            .map(|c| c.farm_full_rejected.get())
            .sum();
        let sum = |f: fn(&WorkerCounters) -> u64| shared.counters.iter().map(f).sum::<u64>();
        let failover = FailoverStats {
            held: shared.tables.held.held() as u64,
            held_full: sum(|c| c.held_full.get()),
            held_too_big: sum(|c| c.held_too_big.get()),
            exhausted: sum(|c| c.failover_exhausted.get()),
            late: sum(|c| c.failover_late.get()),
            acks: sum(|c| c.failover_acks.get()),
            resend_failed: sum(|c| c.failover_resend_failed.get()),
        };
        let view = StatsView {
            failover,
            time: now.time,
            interval: dt,
            totals,
            workers,
            farms,
            drops,
            tcp_alg_skipped,
            farm_full_rejected,
            dialogs_expired: shared
                .header
                .dialogs_expired
                .load(std::sync::atomic::Ordering::Relaxed),
            registrations_expired: shared
                .header
                .registrations_expired
                .load(std::sync::atomic::Ordering::Relaxed),
            media_expired: shared
                .header
                .media_expired
                .load(std::sync::atomic::Ordering::Relaxed),
            stood_down: shared
                .header
                .stood_down
                .load(std::sync::atomic::Ordering::Relaxed),
            dnsbl: None,
        };
        self.last = now;
        view
    }
}

/// A backend's live load (`lb::load`) and its overload counters summed over the
/// workers.
fn load_stats(
    shared: &Shared,
    slot: Option<usize>,
    f: &siplb_core::config::FarmConfig,
    b: &siplb_core::config::BackendConfig,
    clock_ms: u64,
) -> BackendLoadStats {
    let mut s = BackendLoadStats {
        max_dialogs: b.max_dialogs,
        priority: b.priority,
        ..Default::default()
    };
    let Some(slot) = slot else { return s };
    let v = shared.tables.load.get(slot as u16).view();
    s.dialogs = u64::from(v.dialogs);
    s.held_for_ms = v.hold_until_ms.saturating_sub(clock_ms);
    s.oc_percent = if v.oc_until_ms > clock_ms {
        v.oc_percent
    } else {
        0
    };
    if let Some(at) = v.passive_down_ms {
        // A mark lapses by itself only on a farm without active checks.
        let checked = f.health.check != siplb_core::health::CheckKind::None;
        s.passive_down = checked || clock_ms.saturating_sub(at) < f.passive.down_ms;
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        s.passive_marked_at_ms = unix_ms.saturating_sub(clock_ms.saturating_sub(at));
    }
    s.passive_marks = v.passive_marks;
    for c in shared.counters {
        let c = &c.backends[slot];
        s.full += c.full.get();
        s.oc_shed += c.oc_shed.get();
        s.held += c.held.get();
        s.retry_after += c.retry_after.get();
        s.failover_answers += c.failover_answers.get();
        s.failover_timeouts += c.failover_timeouts.get();
        s.failover_to += c.failover_to.get();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_are_the_bounds_of_their_buckets() {
        let mut buckets = [0u64; LATENCY_BUCKETS + 1];
        buckets[2] = 98; // ≤ 1 ms
        buckets[LATENCY_BUCKETS] = 2; // beyond 32.768 s
        let v = latency_view(&buckets, 1);
        assert_eq!((v.count, v.le_us.len(), v.buckets.len()), (100, 18, 19));
        assert_eq!((v.le_us[0], v.le_us[17]), (250, 32_768_000));
        assert!((v.p50_ms - 1.0).abs() < 0.01, "{v:?}");
        assert!((v.p99_ms - 65_536.0).abs() < 65.0, "{v:?}");
        let empty = latency_view(&[0; LATENCY_BUCKETS + 1], 0);
        assert_eq!((empty.count, empty.p50_ms, empty.p99_ms), (0, 0.0, 0.0));
    }
}
