//! Prometheus text exposition (version 0.0.4) of the control plane's views.
//!
//! Every family is a row of a table — name, type, help, and how its samples come out
//! of one item (a worker, a backend, ...) — and one loop renders a table over its
//! items: HELP and TYPE, then the family's samples together.

use crate::api::{
    BackendStats, BackendStatus, DenyFileView, DnsblView, FarmStats, FeedView, HaView, LatencyView,
    MediaStats, StatsView, StatusView, TableCounts, WorkerStats,
};
use crate::daemon::health::CheckStatus;
use std::fmt::Write;

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// How one item gives its samples of a family.
enum Get<T> {
    /// One sample.
    One(fn(&T) -> f64),
    /// One sample per value of the label named first.
    By(&'static str, fn(&T) -> Vec<(&str, f64)>),
}

struct Family<T> {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    get: Get<T>,
}

use Get::{By, One};
use Kind::{Counter, Gauge};

const PROCESS: &[Family<StatusView>] = &[
    Family {
        name: "siplb_up",
        kind: Gauge,
        help: "1 while the control plane is attached to a running dataplane.",
        get: One(|_| 1.0),
    },
    Family {
        name: "siplb_config_generation",
        kind: Gauge,
        help: "Generation of the state applied in the dataplane.",
        get: One(|s| s.generation as f64),
    },
];

/// Only when HA is on.
const HA: &[Family<HaView>] = &[
    Family {
        name: "siplb_ha_active",
        kind: Gauge,
        help: "1 while this unit is the active one of its HA pair.",
        get: One(|h| f64::from(u8::from(h.active))),
    },
    Family {
        name: "siplb_ha_peer_alive",
        kind: Gauge,
        help: "1 while the HA peer's heartbeats arrive.",
        get: One(|h| f64::from(u8::from(h.peer_alive))),
    },
    Family {
        name: "siplb_ha_peer_active",
        kind: Gauge,
        help: "1 while the HA peer says it is active.",
        get: One(|h| f64::from(u8::from(h.peer_alive && h.peer_active))),
    },
    Family {
        name: "siplb_ha_numbering_match",
        kind: Gauge,
        help:
            "1 while both units number farms, backends and pools alike (else replication is off).",
        get: One(|h| f64::from(u8::from(h.numbering.is_empty()))),
    },
    Family {
        name: "siplb_ha_resyncing",
        kind: Gauge,
        help: "1 while this standby receives a full resync.",
        get: One(|h| f64::from(u8::from(h.resyncing))),
    },
    Family {
        name: "siplb_ha_lag_seconds",
        kind: Gauge,
        help: "Age of the oldest unacknowledged sync datagram.",
        get: One(|h| h.lag_ms as f64 / 1000.0),
    },
    Family {
        name: "siplb_ha_ack_seconds",
        kind: Gauge,
        help: "Send-to-acknowledgement time of recent sync datagrams, by quantile.",
        get: By("quantile", |h| {
            vec![
                ("0.5", h.ack_p50_ms / 1000.0),
                ("0.99", h.ack_p99_ms / 1000.0),
            ]
        }),
    },
    Family {
        name: "siplb_ha_change_lag_seconds",
        kind: Gauge,
        help: "Upper bound of the time from a table change to the peer's acknowledgement, by quantile.",
        get: By("quantile", |h| {
            vec![
                ("0.5", h.change_lag_p50_ms / 1000.0),
                ("0.99", h.change_lag_p99_ms / 1000.0),
            ]
        }),
    },
    Family {
        name: "siplb_ha_sync_slots_read_total",
        kind: Counter,
        help: "Table slots the active unit read to find changes (dirty groups; every slot of a resync).",
        get: One(|h| h.sync_slots_read as f64),
    },
    Family {
        name: "siplb_ha_in_flight",
        kind: Gauge,
        help: "Sync datagrams sent and not yet acknowledged.",
        get: One(|h| h.in_flight as f64),
    },
    Family {
        name: "siplb_ha_sync_datagrams_total",
        kind: Counter,
        help: "Sync datagrams sent, first sends and resends.",
        get: By("kind", |h| {
            vec![
                ("first", (h.sent - h.resent) as f64),
                ("resent", h.resent as f64),
            ]
        }),
    },
    Family {
        name: "siplb_ha_streams_total",
        kind: Counter,
        help: "Replication streams started, each with a full resync.",
        get: One(|h| h.streams as f64),
    },
    Family {
        name: "siplb_ha_imported_entries_total",
        kind: Counter,
        help: "Table entries written into this unit's tables from the peer.",
        get: One(|h| h.imported as f64),
    },
    Family {
        name: "siplb_ha_rejected_total",
        kind: Counter,
        help: "HA datagrams dropped, by reason (address, malformed, version, mac).",
        get: By("reason", |h| {
            h.rejected
                .iter()
                .map(|(r, n)| (r.as_str(), *n as f64))
                .collect()
        }),
    },
    Family {
        name: "siplb_ha_last_resync_entries",
        kind: Gauge,
        help: "Entries of the last full resync sent or received.",
        get: One(|h| h.last_resync.as_ref().map_or(0.0, |r| r.entries as f64)),
    },
    Family {
        name: "siplb_ha_last_resync_seconds",
        kind: Gauge,
        help: "How long the last full resync took.",
        get: One(|h| {
            h.last_resync
                .as_ref()
                .map_or(0.0, |r| r.duration_ms as f64 / 1000.0)
        }),
    },
    Family {
        name: "siplb_ha_last_resync_timestamp_seconds",
        kind: Gauge,
        help: "When the last full resync ended (Unix time).",
        get: One(|h| {
            h.last_resync
                .as_ref()
                .map_or(0.0, |r| r.at_ms as f64 / 1000.0)
        }),
    },
];

/// Only when a deny file is configured.
const DENY_FILE: &[Family<DenyFileView>] = &[
    Family {
        name: "siplb_deny_file_prefixes",
        kind: Gauge,
        help: "Prefixes of [security] deny_file in force (its last good read).",
        get: One(|d| d.prefixes as f64),
    },
    Family {
        name: "siplb_deny_file_errors_total",
        kind: Counter,
        help: "Reads of [security] deny_file that failed (the last good list stayed).",
        get: One(|d| d.errors as f64),
    },
];

/// Per `[[security.feed]]`, labelled `feed`.
const FEEDS: &[Family<FeedView>] = &[
    Family {
        name: "siplb_feed_prefixes",
        kind: Gauge,
        help: "Prefixes of a blocklist feed in force (its last good list).",
        get: One(|f| f.prefixes as f64),
    },
    Family {
        name: "siplb_feed_errors_total",
        kind: Counter,
        help: "Fetches of a blocklist feed that failed (its last good list stayed).",
        get: One(|f| f.errors as f64),
    },
];

const WORKERS: &[Family<WorkerStats>] = &[
    Family {
        name: "siplb_rx_packets_total",
        kind: Counter,
        help: "Packets received, per worker.",
        get: One(|w| w.traffic.rx_packets as f64),
    },
    Family {
        name: "siplb_tx_packets_total",
        kind: Counter,
        help: "Packets sent, per worker.",
        get: One(|w| w.traffic.tx_packets as f64),
    },
    Family {
        name: "siplb_rx_bytes_total",
        kind: Counter,
        help: "Bytes received, per worker.",
        get: One(|w| w.traffic.rx_bytes as f64),
    },
    Family {
        name: "siplb_tx_bytes_total",
        kind: Counter,
        help: "Bytes sent, per worker.",
        get: One(|w| w.traffic.tx_bytes as f64),
    },
    Family {
        name: "siplb_sip_requests_total",
        kind: Counter,
        help: "SIP requests balanced, per worker.",
        get: One(|w| w.traffic.sip_requests as f64),
    },
    Family {
        name: "siplb_sip_responses_total",
        kind: Counter,
        help: "SIP responses balanced, per worker.",
        get: One(|w| w.traffic.sip_responses as f64),
    },
    Family {
        name: "siplb_sip_steered_total",
        kind: Counter,
        help: "SIP messages of known dialogs steered from the light scan (part of requests and responses), per worker.",
        get: One(|w| w.traffic.sip_steered as f64),
    },
    Family {
        name: "siplb_alg_rewritten_total",
        kind: Counter,
        help: "SIP messages whose addresses the ALG rewrote, per worker.",
        get: One(|w| w.traffic.alg_rewritten as f64),
    },
    Family {
        name: "siplb_tcp_seq_mapped_total",
        kind: Counter,
        help: "TCP segments whose sequence numbers were corrected for the ALG's rewrites, per worker.",
        get: One(|w| w.traffic.tcp_seq_mapped as f64),
    },
    Family {
        name: "siplb_dialogs_created_total",
        kind: Counter,
        help: "Dialogs recorded, per worker.",
        get: One(|w| w.traffic.dialogs_created as f64),
    },
    Family {
        name: "siplb_registrations_created_total",
        kind: Counter,
        help: "Registrations recorded, per worker.",
        get: One(|w| w.traffic.registrations_created as f64),
    },
    Family {
        name: "siplb_worker_busy_ratio",
        kind: Gauge,
        help: "Share of a worker's polls that found packets.",
        get: One(|w| w.busy),
    },
];

const EXPIRED: &[Family<StatsView>] = &[
    Family {
        name: "siplb_dialogs_expired_total",
        kind: Counter,
        help: "Dialogs forgotten because their timer ran out (no BYE or final answer seen).",
        get: One(|s| s.dialogs_expired as f64),
    },
    Family {
        name: "siplb_registrations_expired_total",
        kind: Counter,
        help: "Registrations forgotten because their Expires ran out.",
        get: One(|s| s.registrations_expired as f64),
    },
    Family {
        name: "siplb_media_expired_total",
        kind: Counter,
        help: "Media mappings ended idle by the dataplane's sweep.",
        get: One(|s| s.media_expired as f64),
    },
    Family {
        name: "siplb_dataplane_stood_down_total",
        kind: Counter,
        help: "Times the dataplane stood down on its own because its control plane's HA heartbeats stopped.",
        get: One(|s| s.stood_down as f64),
    },
];

const DROPS: &[Family<StatsView>] = &[
    Family {
        name: "siplb_drops_total",
        kind: Counter,
        help: "Packets dropped, by reason (sip_* = SIP scanner errors).",
        get: By("reason", |s| {
            s.drops
                .iter()
                .map(|(r, n)| (r.as_str(), *n as f64))
                .collect()
        }),
    },
    Family {
        name: "siplb_tcp_alg_skipped_total",
        kind: Counter,
        help: "TCP segments of ALG farms forwarded without a rewrite they needed, by reason.",
        get: By("reason", |s| {
            s.tcp_alg_skipped
                .iter()
                .map(|(r, n)| (r.as_str(), *n as f64))
                .collect()
        }),
    },
    Family {
        name: "siplb_farm_full_rejected_total",
        kind: Counter,
        help: "New dialogs answered with a 503 because no backend took them (when_full = reject).",
        get: One(|s| s.farm_full_rejected as f64),
    },
    Family {
        name: "siplb_failover_held",
        kind: Gauge,
        help: "New INVITEs and REGISTERs held for failover now, waiting for their final answer.",
        get: One(|s| s.failover.held as f64),
    },
    Family {
        name: "siplb_failover_not_held_total",
        kind: Counter,
        help: "New requests of failover farms not held, by reason (store full, too big).",
        get: By("reason", |s| {
            vec![
                ("store_full", s.failover.held_full as f64),
                ("too_big", s.failover.held_too_big as f64),
            ]
        }),
    },
    Family {
        name: "siplb_failover_exhausted_total",
        kind: Counter,
        help: "Failure answers passed to the caller because no backend was left to try.",
        get: One(|s| s.failover.exhausted as f64),
    },
    Family {
        name: "siplb_failover_late_answers_total",
        kind: Counter,
        help: "Answers of backends a held request had left (never passed to the caller).",
        get: One(|s| s.failover.late as f64),
    },
    Family {
        name: "siplb_failover_acks_total",
        kind: Counter,
        help: "ACKs the balancer sent for backends' failure answers to INVITEs it failed over.",
        get: One(|s| s.failover.acks as f64),
    },
];

/// Only when `[security] dnsbl` names zones.
const DNSBL: &[Family<DnsblView>] = &[
    Family {
        name: "siplb_dnsbl_queries_total",
        kind: Counter,
        help: "DNSBL queries sent (one per zone and source).",
        get: One(|d| d.queries as f64),
    },
    Family {
        name: "siplb_dnsbl_verdicts_total",
        kind: Counter,
        help: "DNSBL verdicts on sources: listed (banned, reason dnsbl) or clean.",
        get: By("verdict", |d| {
            vec![("listed", d.listed as f64), ("clean", d.clean as f64)]
        }),
    },
    Family {
        name: "siplb_dnsbl_errors_total",
        kind: Counter,
        help: "DNSBL zone answers that failed (the source is admitted and asked again later), by kind.",
        get: By("kind", |d| {
            vec![
                ("timeout", d.timeouts as f64),
                ("other", d.errors.saturating_sub(d.timeouts) as f64),
            ]
        }),
    },
    Family {
        name: "siplb_dnsbl_cache_hits_total",
        kind: Counter,
        help: "New sources answered from the DNSBL cache, without a query.",
        get: One(|d| d.cache_hits as f64),
    },
    Family {
        name: "siplb_dnsbl_queue_full_total",
        kind: Counter,
        help: "New sources not queued for a DNSBL lookup: [security] dnsbl_queue was full.",
        get: One(|d| d.queue_full as f64),
    },
    Family {
        name: "siplb_dnsbl_pending",
        kind: Gauge,
        help: "Sources queued or in flight for a DNSBL lookup.",
        get: One(|d| d.pending as f64),
    },
    Family {
        name: "siplb_dnsbl_cached",
        kind: Gauge,
        help: "DNSBL answers cached.",
        get: One(|d| d.cached as f64),
    },
    Family {
        name: "siplb_dnsbl_latency_seconds_sum",
        kind: Counter,
        help: "Time from taking a new source to its verdict in the rates table, summed over resolved lookups (divide by siplb_dnsbl_latency_seconds_count).",
        get: One(|d| d.latency_us_sum as f64 / 1e6),
    },
    Family {
        name: "siplb_dnsbl_latency_seconds_count",
        kind: Counter,
        help: "DNSBL lookups the resolver answered.",
        get: One(|d| d.verdicts as f64),
    },
    Family {
        name: "siplb_dnsbl_latency_seconds_max",
        kind: Gauge,
        help: "The slowest DNSBL lookup so far.",
        get: One(|d| d.latency_us_max as f64 / 1e6),
    },
];

const BACKEND_TRAFFIC: &[Family<BackendStats>] = &[
    Family {
        name: "siplb_backend_packets_total",
        kind: Counter,
        help: "Packets to and from each backend.",
        get: By("direction", |b| {
            vec![("to", b.to_packets as f64), ("from", b.from_packets as f64)]
        }),
    },
    Family {
        name: "siplb_backend_bytes_total",
        kind: Counter,
        help: "Bytes to and from each backend.",
        get: By("direction", |b| {
            vec![("to", b.to_bytes as f64), ("from", b.from_bytes as f64)]
        }),
    },
    Family {
        name: "siplb_backend_dialogs_active",
        kind: Gauge,
        help: "Dialogs in progress (not ending) per backend.",
        get: One(|b| b.dialogs_active as f64),
    },
    Family {
        name: "siplb_backend_registrations_active",
        kind: Gauge,
        help: "Registrations held per backend.",
        get: One(|b| b.registrations_active as f64),
    },
    Family {
        name: "siplb_backend_responses_total",
        kind: Counter,
        help: "Each backend's answers to clients' requests over UDP, by class (1xx ... 6xx).",
        get: By("class", |b| {
            CLASSES
                .iter()
                .zip(b.responses.classes)
                .map(|(c, n)| (*c, n as f64))
                .collect()
        }),
    },
    Family {
        name: "siplb_backend_503_total",
        kind: Counter,
        help: "Each backend's 503 Service Unavailable answers (also in siplb_backend_responses_total class 5xx).",
        get: One(|b| b.responses.service_unavailable as f64),
    },
    Family {
        name: "siplb_backend_dialogs",
        kind: Gauge,
        help: "Calls in progress the balancer placed on each backend (its count for max_dialogs).",
        get: One(|b| b.load.dialogs as f64),
    },
    Family {
        name: "siplb_backend_max_dialogs",
        kind: Gauge,
        help: "Configured max_dialogs of each backend (0: no limit).",
        get: One(|b| f64::from(b.load.max_dialogs)),
    },
    Family {
        name: "siplb_backend_full_total",
        kind: Counter,
        help: "New dialogs each backend's hash choice turned away because it carried max_dialogs.",
        get: One(|b| b.load.full as f64),
    },
    Family {
        name: "siplb_backend_oc_shed_total",
        kind: Counter,
        help: "New dialogs shed from each backend by its RFC 7339 oc value.",
        get: One(|b| b.load.oc_shed as f64),
    },
    Family {
        name: "siplb_backend_held_total",
        kind: Counter,
        help: "New dialogs turned away from each backend while its Retry-After held it.",
        get: One(|b| b.load.held as f64),
    },
    Family {
        name: "siplb_backend_retry_after_total",
        kind: Counter,
        help: "503s with Retry-After from each backend that set or extended a hold.",
        get: One(|b| b.load.retry_after as f64),
    },
    Family {
        name: "siplb_backend_oc_percent",
        kind: Gauge,
        help: "Share of new dialogs each backend's oc value sheds now (percent).",
        get: One(|b| f64::from(b.load.oc_percent)),
    },
    Family {
        name: "siplb_backend_passive_down",
        kind: Gauge,
        help: "1 while a backend is marked down by passive health.",
        get: One(|b| f64::from(u8::from(b.load.passive_down))),
    },
    Family {
        name: "siplb_backend_passive_marks_total",
        kind: Counter,
        help: "Times passive health marked each backend down.",
        get: One(|b| b.load.passive_marks as f64),
    },
    Family {
        name: "siplb_backend_failovers_total",
        kind: Counter,
        help: "New calls and registrations each backend failed, sent to another, by why (answer: a failure answer; timeout: no answer in timeout_ms).",
        get: By("why", |b| {
            vec![
                ("answer", b.load.failover_answers as f64),
                ("timeout", b.load.failover_timeouts as f64),
            ]
        }),
    },
    Family {
        name: "siplb_backend_failover_received_total",
        kind: Counter,
        help: "New calls and registrations another backend failed that were sent to each backend.",
        get: One(|b| b.load.failover_to as f64),
    },
];

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx"];

/// A histogram family: name, help, and where an item keeps its histogram.
type HistogramFamily<T> = (&'static str, &'static str, fn(&T) -> &LatencyView);

/// Per backend, from `BackendStats::responses`.
const BACKEND_LATENCY: [HistogramFamily<BackendStats>; 2] = [
    (
        "siplb_backend_first_response_seconds",
        "Time from a client's request (first send) to the backend's first answer, provisional or final (UDP).",
        |b| &b.responses.first_response,
    ),
    (
        "siplb_backend_invite_final_seconds",
        "Time from a client's INVITE (first send) to the backend's final answer (UDP).",
        |b| &b.responses.invite_final,
    ),
];

const FARMS: &[Family<FarmStats>] = &[Family {
    name: "siplb_farm_drops_total",
    kind: Counter,
    help: "Packets dropped that were for a farm (to its VIP, from its backends, for its SNAT sessions), by farm and reason.",
    get: By("reason", |f| {
        f.drops
            .iter()
            .map(|(r, n)| (r.as_str(), *n as f64))
            .collect()
    }),
}];

const MEDIA: &[Family<MediaStats>] = &[
    Family {
        name: "siplb_media_flows_total",
        kind: Counter,
        help: "RTP/RTCP streams mapped through the balancer from SDP, per farm.",
        get: One(|m| m.flows as f64),
    },
    Family {
        name: "siplb_media_mappings",
        kind: Gauge,
        help: "Media mappings live now, per farm.",
        get: One(|m| m.live as f64),
    },
    Family {
        name: "siplb_media_ended_total",
        kind: Counter,
        help: "Media mappings ended by their dialog (BYE, CANCEL, a failed INVITE), per farm.",
        get: One(|m| m.ended as f64),
    },
    Family {
        name: "siplb_media_packets_total",
        kind: Counter,
        help: "RTP/RTCP packets forwarded, per farm.",
        get: One(|m| m.packets as f64),
    },
    Family {
        name: "siplb_media_bytes_total",
        kind: Counter,
        help: "RTP/RTCP bytes forwarded (UDP header and payload), per farm.",
        get: One(|m| m.bytes as f64),
    },
    Family {
        name: "siplb_media_unplaced_total",
        kind: Counter,
        help: "SDP bodies left as they were: the farm's media pools came with a reload (restart to relay them), per farm.",
        get: One(|m| m.unplaced as f64),
    },
    Family {
        name: "siplb_media_drops_total",
        kind: Counter,
        help: "Media packets dropped, per farm and reason.",
        get: By("reason", |m| {
            m.drops
                .iter()
                .map(|(r, n)| (r.as_str(), *n as f64))
                .collect()
        }),
    },
    Family {
        name: "siplb_media_refused_total",
        kind: Counter,
        help: "SDP streams the media table refused (the message was dropped), per farm and reason.",
        get: By("reason", |m| {
            m.refused
                .iter()
                .map(|(r, n)| (r.as_str(), *n as f64))
                .collect()
        }),
    },
];

const BACKEND_STATE: &[Family<BackendStatus>] = &[
    Family {
        name: "siplb_backend_state",
        kind: Gauge,
        help: "1 for the state each backend is in (up, drained, down).",
        get: By("state", |b| vec![(b.state.as_str(), 1.0)]),
    },
    Family {
        name: "siplb_backend_healthy",
        kind: Gauge,
        help: "1 if the backend's health checks pass (or none is configured).",
        get: One(|b| if b.health == "down" { 0.0 } else { 1.0 }),
    },
    Family {
        name: "siplb_backend_weight",
        kind: Gauge,
        help: "Configured weight of each backend.",
        get: One(|b| f64::from(b.weight)),
    },
];

const HEALTH_CHECKS: &[Family<CheckStatus>] = &[
    Family {
        name: "siplb_health_checks_total",
        kind: Counter,
        help: "Health checks run per backend, by result (ok, failed).",
        get: By("result", |c| {
            vec![
                ("ok", (c.checks - c.failed) as f64),
                ("failed", c.failed as f64),
            ]
        }),
    },
    Family {
        name: "siplb_health_transitions_total",
        kind: Counter,
        help: "State changes decided by the health checks, by the state entered (down, up).",
        get: By("to", |c| {
            vec![("down", c.went_down as f64), ("up", c.came_up as f64)]
        }),
    },
    Family {
        name: "siplb_health_last_check_seconds",
        kind: Gauge,
        help: "How long the last health check of each backend took.",
        get: One(|c| c.last_took_ms as f64 / 1000.0),
    },
];

/// The labels that name an item (`worker`, or `farm` and `backend`).
type Labels = Vec<(&'static str, String)>;

pub fn render(status: &StatusView, stats: &StatsView) -> String {
    let mut out = String::new();
    let o = &mut out;
    table(o, PROCESS, &[(vec![], status)]);
    if let Some(h) = &status.ha_detail {
        table(o, HA, &[(vec![], h)]);
    }
    if let Some(d) = &status.deny_file {
        table(o, DENY_FILE, &[(vec![], d)]);
    }
    let feeds: Vec<_> = status
        .feeds
        .iter()
        .map(|f| (vec![("feed", f.name.clone())], f))
        .collect();
    if !feeds.is_empty() {
        table(o, FEEDS, &feeds);
    }
    let workers: Vec<_> = stats
        .workers
        .iter()
        .map(|w| (vec![("worker", w.worker.to_string())], w))
        .collect();
    table(o, WORKERS, &workers);
    table_counts(o, &workers);
    table(o, EXPIRED, &[(vec![], stats)]);
    table(o, DROPS, &[(vec![], stats)]);
    if let Some(d) = &stats.dnsbl {
        table(o, DNSBL, &[(vec![], d)]);
    }
    let traffic: Vec<_> = stats
        .farms
        .iter()
        .flat_map(|f| {
            f.backends
                .iter()
                .map(move |b| (backend(&f.name, &b.address, b.port), b))
        })
        .collect();
    table(o, BACKEND_TRAFFIC, &traffic);
    for (name, help, get) in BACKEND_LATENCY {
        let items: Vec<_> = traffic.iter().map(|(l, b)| (l, get(b))).collect();
        histogram(o, name, help, &items);
    }
    let farms: Vec<_> = stats
        .farms
        .iter()
        .map(|f| (vec![("farm", f.name.clone())], f))
        .collect();
    table(o, FARMS, &farms);
    let media: Vec<_> = stats
        .farms
        .iter()
        .map(|f| (vec![("farm", f.name.clone())], &f.media))
        .collect();
    table(o, MEDIA, &media);
    let state: Vec<_> = status
        .farms
        .iter()
        .flat_map(|f| {
            f.backends
                .iter()
                .map(move |b| (backend(&f.name, &b.address, b.port), b))
        })
        .collect();
    table(o, BACKEND_STATE, &state);
    let checks: Vec<_> = state
        .iter()
        .filter_map(|(l, b)| Some((l.clone(), b.checks.as_ref()?)))
        .collect();
    table(o, HEALTH_CHECKS, &checks);
    out
}

/// One counter family per `TableCounts` field (`siplb_<name>_total`), a sample per
/// worker.
fn table_counts(out: &mut String, workers: &[(Labels, &WorkerStats)]) {
    for (i, (name, help, _)) in TableCounts::default().named().iter().enumerate() {
        let name = format!("siplb_{name}_total");
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, w) in workers {
            sample(
                out,
                &name,
                labels,
                None,
                w.traffic.tables.named()[i].2 as f64,
            );
        }
    }
}

/// A Prometheus histogram per item, in seconds: cumulative `_bucket`s up to `+Inf`,
/// `_sum` and `_count`.
fn histogram(out: &mut String, name: &str, help: &str, items: &[(&Labels, &LatencyView)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let bucket = format!("{name}_bucket");
    for (labels, h) in items {
        let mut total = 0;
        for (i, n) in h.buckets.iter().enumerate() {
            total += n;
            let le = h
                .le_us
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |us| (*us as f64 / 1e6).to_string());
            sample(out, &bucket, labels, Some(("le", &le)), total as f64);
        }
        if h.buckets.is_empty() {
            sample(out, &bucket, labels, Some(("le", "+Inf")), 0.0);
        }
        sample(
            out,
            &format!("{name}_sum"),
            labels,
            None,
            h.sum_us as f64 / 1e6,
        );
        sample(out, &format!("{name}_count"), labels, None, h.count as f64);
    }
}

/// The labels of a backend.
fn backend(farm: &str, address: &dyn std::fmt::Display, port: u16) -> Labels {
    vec![
        ("farm", farm.to_string()),
        ("backend", format!("{address}:{port}")),
    ]
}

/// Writes every family of `families`: HELP, TYPE, then one or more samples per item.
fn table<T>(out: &mut String, families: &[Family<T>], items: &[(Labels, &T)]) {
    for f in families {
        let kind = match f.kind {
            Counter => "counter",
            Gauge => "gauge",
        };
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {kind}",
            f.name, f.help, f.name
        );
        for (labels, item) in items {
            match &f.get {
                One(get) => sample(out, f.name, labels, None, get(item)),
                By(key, get) => {
                    for (v, x) in get(item) {
                        sample(out, f.name, labels, Some((key, v)), x);
                    }
                }
            }
        }
    }
}

fn sample(out: &mut String, name: &str, labels: &Labels, more: Option<(&str, &str)>, value: f64) {
    let l: Vec<String> = labels
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(more)
        .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
        .collect();
    if l.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{}}} {value}", l.join(","));
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn views() -> (StatusView, StatsView) {
        let backend = |ip: &str, checks: serde_json::Value| {
            json!({ "address": ip, "port": 5060, "weight": 2, "state": "up", "drained": false,
                    "health": "up", "last_check": "", "checks": checks })
        };
        let checks = json!({ "check": "options", "up": true, "checks": 7, "failed": 2,
            "went_down": 1, "came_up": 1, "last_ok": true, "last_result": "200",
            "last_at_ms": 0, "last_took_ms": 1500 });
        let status = json!({ "file_prefix": "p", "config_file": "c", "dataplane_pid": 1,
            "control_pid": 2, "workers": 2, "generation": 5, "http": null, "ha": null,
            "farms": [{ "name": "pbx", "vip": "198.18.0.2", "nat": "dnat", "affinity": "call-id",
                "backends": [backend("198.18.1.11", checks), backend("198.18.1.12", json!(null))] }] });
        let traffic = json!({ "rx_packets": 10, "tx_packets": 9, "rx_bytes": 1000, "tx_bytes": 900,
            "drops": 1, "rx_pps": 0.0, "tx_pps": 0.0, "rx_bps": 0.0, "tx_bps": 0.0,
            "sip_requests": 4, "sip_responses": 5, "dialogs_created": 2, "registrations_created": 1,
            "tables": { "dialog_table_full": 7, "from_kernel": 3 } });
        let be = |ip: &str| {
            json!({ "address": ip, "port": 5060, "state": "up", "to_packets": 3,
            "to_bytes": 300, "from_packets": 4, "from_bytes": 400, "to_pps": 0.0, "from_pps": 0.0,
            "to_bps": 0.0, "from_bps": 0.0, "dialogs_active": 1, "registrations_active": 0 })
        };
        let stats = json!({ "time": 0.0, "interval": 1.0, "totals": traffic,
            "workers": [{ "worker": 0, "traffic": traffic, "busy": 0.25 },
                        { "worker": 1, "traffic": traffic, "busy": 0.5 }],
            "farms": [{ "name": "pbx", "vip": "198.18.0.2", "dialogs_active": 1,
                        "registrations_active": 0,
                        "backends": [be("198.18.1.11"), be("198.18.1.12")] }],
            "drops": { "not_our_mac": 3, "sip_bad_via": 1 },
            "tcp_alg_skipped": { "partial_message": 2 },
            "dialogs_expired": 0, "registrations_expired": 0 });
        (
            serde_json::from_value(status).unwrap(),
            serde_json::from_value(stats).unwrap(),
        )
    }

    #[test]
    fn ha_families_come_with_ha() {
        let (mut status, stats) = views();
        assert!(!render(&status, &stats).contains("siplb_ha_"));
        status.ha_detail = Some(HaView {
            active: true,
            peer_alive: true,
            sent: 10,
            resent: 3,
            rejected: vec![("mac".into(), 4)],
            ..Default::default()
        });
        let text = render(&status, &stats);
        for want in [
            "siplb_ha_active 1",
            "siplb_ha_peer_active 0",
            "siplb_ha_numbering_match 1",
            "siplb_ha_sync_datagrams_total{kind=\"resent\"} 3",
            "siplb_ha_sync_datagrams_total{kind=\"first\"} 7",
            "siplb_ha_rejected_total{reason=\"mac\"} 4",
            "siplb_ha_ack_seconds{quantile=\"0.99\"} 0",
        ] {
            assert!(text.lines().any(|l| l == want), "no `{want}` in:\n{text}");
        }
    }

    #[test]
    fn a_deny_file_has_its_prefixes_and_failed_reads() {
        let (mut status, stats) = views();
        status.deny_file = Some(DenyFileView {
            path: "/etc/siplb/deny.txt".into(),
            prefixes: 3,
            errors: 2,
            error: "/etc/siplb/deny.txt:4: bad".into(),
        });
        let text = render(&status, &stats);
        for want in [
            "siplb_deny_file_prefixes 3",
            "siplb_deny_file_errors_total 2",
        ] {
            assert!(text.lines().any(|l| l == want), "{want}:\n{text}");
        }
    }

    #[test]
    fn each_family_is_one_group_of_its_samples() {
        let (status, mut stats) = views();
        let mut buckets = [0u64; 19];
        buckets[2] = 3; // ≤ 1 ms
        buckets[18] = 1; // beyond 32.768 s
        let r = &mut stats.farms[0].backends[0].responses;
        r.classes = [5, 4, 0, 0, 2, 0];
        r.service_unavailable = 2;
        r.first_response = crate::daemon::sampler::latency_view(&buckets, 40_002_400);
        r.invite_final = r.first_response.clone();
        stats.farms[0].drops.insert("no_backend".into(), 4);
        let text = render(&status, &stats);
        let mut seen = Vec::new();
        let mut current = "";
        let mut samples = 0;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap();
                assert!(!seen.contains(&current), "{current} twice:\n{text}");
                seen.push(current);
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let name = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|x| name.strip_suffix(x).filter(|n| *n == current))
                    .unwrap_or(name);
                assert_eq!(name, current, "a sample outside its family:\n{text}");
                samples += 1;
            }
        }
        // 2 process, (12 + 23 table counts) × 2 workers, 3 expired and 1 stood down, 2 drops, 1 TCP ALG
        // skip and 1 farm-full count, (2 + 2 + 1 + 1 + 6 + 1 + 9 load) × 2 backends, 2
        // histograms of (19 buckets + sum + count) for the answering backend and (+Inf,
        // sum, count) for the other, 1 farm drop, 6 media of the one farm (its drops and
        // refusals none), 3 × 2 backends, 2 + 2 + 1 for the one checked backend; failover:
        // 5 families of 6 samples, and 2 per backend of 3.
        assert_eq!(
            seen.len(),
            2 + 12 + 23 + 4 + 3 + 6 + 9 + 2 + 1 + 8 + 3 + 3 + 5 + 2,
            "{text}"
        );
        assert_eq!(
            samples,
            2 + 24 + 46 + 4 + 4 + 26 + 18 + 2 * (21 + 3) + 1 + 6 + 6 + 5 + 6 + 2 * 3,
            "{text}"
        );
        for want in [
            "siplb_up 1",
            "siplb_config_generation 5",
            "siplb_rx_packets_total{worker=\"1\"} 10",
            "siplb_worker_busy_ratio{worker=\"0\"} 0.25",
            "siplb_drops_total{reason=\"not_our_mac\"} 3",
            "siplb_dialog_table_full_total{worker=\"1\"} 7",
            "siplb_from_kernel_total{worker=\"0\"} 3",
            "siplb_connection_table_full_total{worker=\"0\"} 0",
            "siplb_stray_tcp_forwarded_total{worker=\"1\"} 0",
            "siplb_dialogs_expired_total 0",
            "siplb_dataplane_stood_down_total 0",
            "siplb_backend_responses_total{farm=\"pbx\",backend=\"198.18.1.11:5060\",class=\"1xx\"} 5",
            "siplb_backend_responses_total{farm=\"pbx\",backend=\"198.18.1.12:5060\",class=\"6xx\"} 0",
            "siplb_backend_503_total{farm=\"pbx\",backend=\"198.18.1.11:5060\"} 2",
            "# TYPE siplb_backend_first_response_seconds histogram",
            "siplb_backend_first_response_seconds_bucket{farm=\"pbx\",backend=\"198.18.1.11:5060\",le=\"0.0005\"} 0",
            "siplb_backend_first_response_seconds_bucket{farm=\"pbx\",backend=\"198.18.1.11:5060\",le=\"0.001\"} 3",
            "siplb_backend_first_response_seconds_bucket{farm=\"pbx\",backend=\"198.18.1.11:5060\",le=\"32.768\"} 3",
            "siplb_backend_invite_final_seconds_bucket{farm=\"pbx\",backend=\"198.18.1.11:5060\",le=\"+Inf\"} 4",
            "siplb_backend_invite_final_seconds_sum{farm=\"pbx\",backend=\"198.18.1.11:5060\"} 40.0024",
            "siplb_backend_invite_final_seconds_count{farm=\"pbx\",backend=\"198.18.1.11:5060\"} 4",
            "siplb_backend_invite_final_seconds_bucket{farm=\"pbx\",backend=\"198.18.1.12:5060\",le=\"+Inf\"} 0",
            "siplb_farm_drops_total{farm=\"pbx\",reason=\"no_backend\"} 4",
            "siplb_media_flows_total{farm=\"pbx\"} 0",
            "siplb_tcp_alg_skipped_total{reason=\"partial_message\"} 2",
            "siplb_backend_packets_total{farm=\"pbx\",backend=\"198.18.1.11:5060\",direction=\"to\"} 3",
            "siplb_backend_bytes_total{farm=\"pbx\",backend=\"198.18.1.12:5060\",direction=\"from\"} 400",
            "siplb_backend_state{farm=\"pbx\",backend=\"198.18.1.12:5060\",state=\"up\"} 1",
            "siplb_backend_weight{farm=\"pbx\",backend=\"198.18.1.11:5060\"} 2",
            "siplb_health_checks_total{farm=\"pbx\",backend=\"198.18.1.11:5060\",result=\"ok\"} 5",
            "siplb_health_transitions_total{farm=\"pbx\",backend=\"198.18.1.11:5060\",to=\"down\"} 1",
            "siplb_health_last_check_seconds{farm=\"pbx\",backend=\"198.18.1.11:5060\"} 1.5",
            "# TYPE siplb_drops_total counter",
        ] {
            assert!(text.lines().any(|l| l == want), "no `{want}` in:\n{text}");
        }
    }
}
