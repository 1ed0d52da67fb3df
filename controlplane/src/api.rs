//! What the CLI asks the control daemon over its Unix socket (one JSON request per
//! line, one JSON response per line), and the views it gets back. The HTTP API serves
//! the same views.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A backend as the operator names it: `farm` and `address[:port]` (port 5060).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRef {
    pub farm: String,
    pub address: Ipv4Addr,
    pub port: u16,
}

impl std::fmt::Display for BackendRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} in farm {}", self.address, self.port, self.farm)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    Stats,
    BackendAdd {
        backend: BackendRef,
        weight: u32,
    },
    BackendRemove {
        backend: BackendRef,
        force: bool,
    },
    BackendWeight {
        backend: BackendRef,
        weight: u32,
    },
    BackendDrain {
        backend: BackendRef,
    },
    BackendUndrain {
        backend: BackendRef,
    },
    Reload,
    Dialog {
        call_id: String,
    },
    /// HA: this unit (a synced standby) takes the VIPs over from its live peer.
    HaTakeover,
    /// The sources on the ban list (`[security] ban_*`).
    SecurityBans,
    /// Lifts a source's ban.
    SecurityUnban {
        source: Ipv4Addr,
    },
    /// `[bgp]`: withdraw this unit's VIPs from the router (ECMP moves new flows to the
    /// other units) and keep forwarding what still reaches it.
    DrainUnit,
    /// `[bgp]`: announce the VIPs again.
    UndrainUnit,
    Shutdown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    Done {
        message: String,
    },
    Error {
        message: String,
    },
    Status(Box<StatusView>),
    Stats(Box<StatsView>),
    Dialog(DialogView),
    /// A struct variant: a tagged newtype cannot hold a sequence.
    Bans {
        bans: Vec<BanView>,
    },
}

/// A banned source, as `siplb security bans` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BanView {
    pub source: Ipv4Addr,
    /// What got it banned: `flood` (its request buckets), `tcp_flood` (its SYN or RST
    /// buckets), `auth_failures` (refused credentials) or `dnsbl` (a DNSBL lists it).
    pub reason: String,
    pub remaining_s: u32,
    /// Packets dropped because of the ban.
    pub hits: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub file_prefix: String,
    pub config_file: String,
    pub dataplane_pid: u32,
    pub control_pid: u32,
    pub workers: u32,
    /// Generation of the state in force in the dataplane.
    pub generation: u64,
    pub http: Option<String>,
    /// The HA role and the peer's state, when HA is on.
    pub ha: Option<String>,
    /// The HA details, when HA is on.
    #[serde(default)]
    pub ha_detail: Option<HaView>,
    pub farms: Vec<FarmStatus>,
    /// `[security] deny_file` as the control plane last read it, when one is set.
    #[serde(default)]
    pub deny_file: Option<DenyFileView>,
    /// `[[security.feed]]`, as the control plane last fetched them.
    #[serde(default)]
    pub feeds: Vec<FeedView>,
    /// The route announcement, when `[bgp]` is on.
    #[serde(default)]
    pub bgp: Option<BgpView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedView {
    pub name: String,
    /// Its file or URL.
    pub source: String,
    /// Prefixes of its last good list, in force.
    pub prefixes: usize,
    /// Fetches since the control daemon started, and how many failed.
    pub fetches: u64,
    pub errors: u64,
    /// Why the last fetch failed; empty when it succeeded.
    pub error: String,
    /// Seconds since the last good fetch.
    pub last_ok_s_ago: Option<u64>,
}

/// What `siplb status` shows of `[bgp]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BgpView {
    pub router: String,
    /// The VIPs in BIRD's configuration.
    pub announcing: Vec<Ipv4Addr>,
    /// `siplb drain-unit` is in force.
    pub draining: bool,
    /// BIRD runs the file's content (its last `birdc configure` succeeded).
    pub configured: bool,
    pub config_file: String,
    /// Why the last `birdc configure` failed; empty when it succeeded.
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DenyFileView {
    pub path: String,
    /// Prefixes of the last good read, in force.
    pub prefixes: usize,
    /// Reads that failed since the control daemon started.
    pub errors: u64,
    /// Why the last read failed; empty when it succeeded.
    pub error: String,
}

/// What `siplb status` shows of HA (written by the HA thread).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HaView {
    pub active: bool,
    pub priority: u8,
    pub peer: String,
    pub peer_alive: bool,
    pub peer_active: bool,
    pub peer_priority: u8,
    /// Empty when both units number farms, backends and pools alike; else what differs.
    pub numbering: String,
    /// Standby: a full resync of the active unit's tables is under way (it does not
    /// take over by preference until it ends).
    pub resyncing: bool,
    /// Active: the peer reports having received our full resync.
    pub peer_synced: bool,
    /// The operator asked this unit to take over (`siplb ha takeover`).
    #[serde(default)]
    pub preferred: bool,
    /// Age of the oldest unacknowledged sync datagram (replication lag).
    pub lag_ms: u64,
    /// Send-to-acknowledgement time of recent sync datagrams.
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    /// Upper bound of the time from a table change to the peer's acknowledgement of
    /// it (previous sync pass → ack), recent samples.
    #[serde(default)]
    pub change_lag_p50_ms: f64,
    #[serde(default)]
    pub change_lag_p99_ms: f64,
    /// Table slots read to find changes (the dirty groups, or every slot of a resync).
    #[serde(default)]
    pub sync_slots_read: u64,
    pub in_flight: u64,
    pub sent: u64,
    pub resent: u64,
    /// Replication streams started (each with a full resync).
    pub streams: u64,
    /// Table entries written into this unit's tables from the peer.
    pub imported: u64,
    /// Datagrams dropped, by reason (address, malformed, version, mac).
    pub rejected: Vec<(String, u64)>,
    pub last_resync: Option<ResyncView>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResyncView {
    /// "sent" (this unit was active) or "received".
    pub direction: String,
    /// When it ended (ms since 1970).
    pub at_ms: u64,
    pub entries: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FarmStatus {
    pub name: String,
    pub vip: String,
    pub nat: String,
    pub affinity: String,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendStatus {
    pub address: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
    /// up, drained or down, as the dataplane applies it.
    pub state: String,
    pub drained: bool,
    /// Health as the checks see it: up, down, pending (no check finished yet) or
    /// unchecked (the farm has no checks).
    pub health: String,
    /// The last check's result, for operators.
    pub last_check: String,
    /// Why the checks took it down (empty while it is not down).
    #[serde(default)]
    pub down_reason: String,
    /// The checks' counters and last result (absent when unchecked).
    #[serde(default)]
    pub checks: Option<crate::daemon::health::CheckStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatsView {
    /// Seconds since the Unix epoch when sampled.
    pub time: f64,
    /// Seconds the rates below are computed over.
    pub interval: f64,
    pub totals: Traffic,
    pub workers: Vec<WorkerStats>,
    pub farms: Vec<FarmStats>,
    /// Drops by reason (including `sip_*` scanner errors, and `alg_*`: why the ALG refused
    /// messages, and what it left as it was and counted), only non-zero ones.
    pub drops: BTreeMap<String, u64>,
    /// TCP segments of ALG farms forwarded without a rewrite they needed, by reason
    /// (`TcpAlgSkip`), only non-zero ones.
    #[serde(default)]
    pub tcp_alg_skipped: BTreeMap<String, u64>,
    /// Table entries whose time ran out, counted by the dataplane's table sweeps.
    pub dialogs_expired: u64,
    pub registrations_expired: u64,
    /// Media mappings ended idle by the dataplane's sweep.
    #[serde(default)]
    pub media_expired: u64,
    /// New dialogs answered 503 because no backend took them (`when_full`).
    #[serde(default)]
    pub farm_full_rejected: u64,
    #[serde(default)]
    pub failover: FailoverStats,
    /// Times the dataplane stood down on its own (HA: its control plane fell silent).
    #[serde(default)]
    pub stood_down: u64,
    /// The control plane's DNSBL lookups, when `[security] dnsbl` names zones.
    #[serde(default)]
    pub dnsbl: Option<DnsblView>,
}

/// What the control plane's DNSBL lookups did (`daemon/dnsbl.rs`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct DnsblView {
    pub zones: Vec<String>,
    pub resolver: String,
    /// Queries sent (one per zone and source).
    pub queries: u64,
    /// Verdicts: sources listed (banned), and not listed.
    pub listed: u64,
    pub clean: u64,
    /// Failed zone answers (SERVFAIL, refusals, timeouts, no resolver), and of them
    /// the timeouts.
    pub errors: u64,
    pub timeouts: u64,
    /// Sources answered from the cache, without a query.
    pub cache_hits: u64,
    /// Sources not queued: `dnsbl_queue` was full.
    pub queue_full: u64,
    /// Lookups the resolver answered, and their latency (taken from the ring to the
    /// verdict in the rates table), summed and the worst, in microseconds.
    pub verdicts: u64,
    pub latency_us_sum: u64,
    pub latency_us_max: u64,
    /// Sources queued or in flight now, and answers cached now.
    pub pending: u64,
    pub cached: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Traffic {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub drops: u64,
    pub rx_pps: f64,
    pub tx_pps: f64,
    pub rx_bps: f64,
    pub tx_bps: f64,
    pub sip_requests: u64,
    pub sip_responses: u64,
    /// Messages of known dialogs steered from the light scan (part of the above).
    #[serde(default)]
    pub sip_steered: u64,
    /// SIP messages whose addresses the ALG rewrote.
    #[serde(default)]
    pub alg_rewritten: u64,
    /// TCP segments whose sequence, acknowledgment or SACK numbers were corrected for
    /// the ALG's rewrites on their connection.
    #[serde(default)]
    pub tcp_seq_mapped: u64,
    pub dialogs_created: u64,
    pub registrations_created: u64,
    /// The tables' refusals and what else the workers count.
    #[serde(default)]
    pub tables: TableCounts,
}

/// Entries the workers created and could not create, and the smaller paths they count:
/// the numbers that tell a table is too small or a path is busy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct TableCounts {
    /// New dialogs not recorded: the dialog table was full around the Call-ID
    /// (`[tables] dialogs`); stickiness then rests on the Call-ID hash alone.
    pub dialog_table_full: u64,
    /// Registrations not recorded: the registration table was full (`[tables]
    /// registrations`).
    pub registration_table_full: u64,
    /// TCP connections not recorded: the connection table was full (`[tables]
    /// connections`).
    pub connection_table_full: u64,
    pub tcp_connections_created: u64,
    pub snat_sessions_created: u64,
    pub arp_requests: u64,
    pub arp_replies: u64,
    pub arp_learned: u64,
    pub icmp_replies: u64,
    pub fragments_in: u64,
    pub datagrams_reassembled: u64,
    pub fragments_out: u64,
    /// UDP/TCP checksums a sender's kernel left unfinished and the worker finished.
    pub checksums_finished: u64,
    /// Frames handed to the kernel interfaces (exception path) and taken from them.
    pub to_kernel: u64,
    pub from_kernel: u64,
    /// Requests whose response time was not measured: another transaction held their
    /// slot of the request times (a quarter of `[tables] dialogs`, 2^16 to 2^20 slots).
    pub request_times_full: u64,
    /// Rates-table operations that found no slot (`[tables] rate_sources`): what the
    /// limits could not meter was refused (`rate_table_full` drops) unless trusted.
    pub rate_table_full: u64,
    /// Sources put on the ban list (`siplb security bans`).
    pub sources_banned: u64,
    /// Credentials the backends refused (401/407 to a REGISTER or INVITE that carried
    /// them) and 403s: the brute-force count.
    #[serde(default)]
    pub auth_failures: u64,
    /// New sources handed to the control plane's DNSBL lookups, and those the ring had
    /// no room for.
    pub dnsbl_noted: u64,
    pub dnsbl_ring_full: u64,
    /// In-dialog-looking SIP of no known dialog forwarded on `dnat` farms with a
    /// transaction's lifetime.
    pub stray_sip_forwarded: u64,
    /// TCP segments other than SYNs of no known connection forwarded on `dnat` farms
    /// without creating one.
    pub stray_tcp_forwarded: u64,
}

impl TableCounts {
    /// The fields by their JSON and metric names, with what they count (the metric's
    /// help), in declaration order: a new field added here reaches `/metrics`.
    pub fn named(&self) -> [(&'static str, &'static str, u64); 23] {
        [
            ("dialog_table_full", "New dialogs not recorded: the dialog table was full around the Call-ID (raise [tables] dialogs).", self.dialog_table_full),
            ("registration_table_full", "Registrations not recorded: the registration table was full (raise [tables] registrations).", self.registration_table_full),
            ("connection_table_full", "TCP connections not recorded: the connection table was full (raise [tables] tcp_connections).", self.connection_table_full),
            ("tcp_connections_created", "TCP connections recorded.", self.tcp_connections_created),
            ("snat_sessions_created", "SNAT sessions created.", self.snat_sessions_created),
            ("arp_requests", "ARP requests sent for next hops.", self.arp_requests),
            ("arp_replies", "ARP requests answered for our addresses and VIPs.", self.arp_replies),
            ("arp_learned", "Neighbours learned from ARP.", self.arp_learned),
            ("icmp_replies", "ICMP echo requests answered.", self.icmp_replies),
            ("fragments_in", "IPv4 fragments received for reassembly.", self.fragments_in),
            ("datagrams_reassembled", "Datagrams reassembled from fragments.", self.datagrams_reassembled),
            ("fragments_out", "Fragments sent (datagrams larger than the egress MTU).", self.fragments_out),
            ("checksums_finished", "UDP/TCP checksums a sender's kernel left unfinished and the worker finished.", self.checksums_finished),
            ("to_kernel", "Frames handed to the kernel interfaces (exception path).", self.to_kernel),
            ("from_kernel", "Frames taken from the kernel interfaces (exception path).", self.from_kernel),
            ("request_times_full", "Requests whose response time was not measured: another transaction held their slot.", self.request_times_full),
            ("rate_table_full", "Rates-table operations that found no slot (raise [tables] rate_sources); what could not be metered was refused unless trusted.", self.rate_table_full),
            ("sources_banned", "Sources put on the ban list (siplb security bans).", self.sources_banned),
            ("auth_failures", "Credentials the backends refused (401/407 to a REGISTER or INVITE that carried them) and 403s.", self.auth_failures),
            ("dnsbl_noted", "New sources handed to the control plane's DNSBL lookups.", self.dnsbl_noted),
            ("dnsbl_ring_full", "New sources the DNSBL ring had no room for (looked up at their next request).", self.dnsbl_ring_full),
            ("stray_sip_forwarded", "In-dialog-looking SIP of no known dialog forwarded on dnat farms.", self.stray_sip_forwarded),
            ("stray_tcp_forwarded", "TCP segments other than SYNs of no known connection forwarded on dnat farms.", self.stray_tcp_forwarded),
        ]
    }

    pub fn add(&mut self, o: &TableCounts) {
        self.dialog_table_full += o.dialog_table_full;
        self.registration_table_full += o.registration_table_full;
        self.connection_table_full += o.connection_table_full;
        self.tcp_connections_created += o.tcp_connections_created;
        self.snat_sessions_created += o.snat_sessions_created;
        self.arp_requests += o.arp_requests;
        self.arp_replies += o.arp_replies;
        self.arp_learned += o.arp_learned;
        self.icmp_replies += o.icmp_replies;
        self.fragments_in += o.fragments_in;
        self.datagrams_reassembled += o.datagrams_reassembled;
        self.fragments_out += o.fragments_out;
        self.checksums_finished += o.checksums_finished;
        self.to_kernel += o.to_kernel;
        self.from_kernel += o.from_kernel;
        self.request_times_full += o.request_times_full;
        self.rate_table_full += o.rate_table_full;
        self.sources_banned += o.sources_banned;
        self.auth_failures += o.auth_failures;
        self.dnsbl_noted += o.dnsbl_noted;
        self.dnsbl_ring_full += o.dnsbl_ring_full;
        self.stray_sip_forwarded += o.stray_sip_forwarded;
        self.stray_tcp_forwarded += o.stray_tcp_forwarded;
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerStats {
    pub worker: usize,
    pub traffic: Traffic,
    /// Share of polls that found packets.
    pub busy: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FarmStats {
    pub name: String,
    pub vip: String,
    pub dialogs_active: u64,
    pub registrations_active: u64,
    pub backends: Vec<BackendStats>,
    /// The media relay of the farm (all zero when it relays none).
    #[serde(default)]
    pub media: MediaStats,
    /// Drops of packets for this farm (to its VIP, from its backends, for its SNAT
    /// sessions) by reason, only non-zero ones; part of `StatsView::drops`.
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
}

/// One farm's media relay: RTP/RTCP streams mapped from SDP and forwarded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MediaStats {
    /// Streams mapped (a stream seen in SDP for the first time).
    pub flows: u64,
    /// Mappings live now (a scan of the media table).
    pub live: u64,
    /// Mappings ended by their dialog (BYE, CANCEL, a failed INVITE).
    pub ended: u64,
    pub packets: u64,
    pub bytes: u64,
    pub pps: f64,
    /// Media datagrams dropped, by reason (only non-zero ones).
    pub drops: BTreeMap<String, u64>,
    /// SDP streams the table refused to map, by reason (the message was dropped).
    pub refused: BTreeMap<String, u64>,
    /// SDP bodies left as they were: the farm's media pools came with a reload.
    pub unplaced: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackendStats {
    pub address: String,
    pub port: u16,
    pub state: String,
    pub to_packets: u64,
    pub to_bytes: u64,
    pub from_packets: u64,
    pub from_bytes: u64,
    pub to_pps: f64,
    pub from_pps: f64,
    pub to_bps: f64,
    pub from_bps: f64,
    /// Dialogs not yet ending (trying, early, confirmed).
    pub dialogs_active: u64,
    pub registrations_active: u64,
    /// Live load and overload signals (`lb::load`).
    #[serde(default)]
    pub load: BackendLoadStats,
    /// Its answers to clients' requests (UDP), by class and time.
    #[serde(default)]
    pub responses: ResponseStats,
}

/// One backend's answers to clients' requests over UDP (TCP and TLS are balanced per
/// connection: their messages are not read).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ResponseStats {
    /// Answers by class: 1xx at 0 ... 6xx at 5.
    pub classes: [u64; 6],
    /// 503 Service Unavailable answers (also in `classes[4]`).
    pub service_unavailable: u64,
    /// Request → the transaction's first answer (provisional or final).
    pub first_response: LatencyView,
    /// INVITE → its final answer.
    pub invite_final: LatencyView,
}

/// A latency histogram merged over the workers: counts per bucket (`le_us`, the last
/// bucket unbounded), sum and quantiles.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LatencyView {
    /// Upper bound of each bounded bucket, in microseconds.
    pub le_us: Vec<u64>,
    /// Count per bucket (not cumulative): one more than `le_us`, the overflow last.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_us: u64,
    /// The 50th and 99th percentiles, in milliseconds: the upper bound of the bucket
    /// that holds them (buckets double, so within a factor 2 above the true value).
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What a backend carries and how much new work it takes now.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackendLoadStats {
    /// Calls in progress the balancer placed there (its count for `max_dialogs`).
    pub dialogs: u64,
    /// 0: no limit.
    pub max_dialogs: u32,
    pub priority: u32,
    /// New dialogs its hash choice turned away because it was full.
    pub full: u64,
    /// New dialogs its `oc` value shed to other backends.
    pub oc_shed: u64,
    /// New dialogs turned away while a Retry-After held it.
    pub held: u64,
    /// 503s with Retry-After that set or extended a hold.
    pub retry_after: u64,
    /// Milliseconds its Retry-After hold has left.
    pub held_for_ms: u64,
    /// Percentage of new dialogs its `oc` value sheds now (0: none in force).
    pub oc_percent: u8,
    /// Marked down passively (unanswered requests, ICMP), not yet back.
    pub passive_down: bool,
    pub passive_marks: u64,
    /// Unix time (ms) of the latest passive mark, 0 if none.
    pub passive_marked_at_ms: u64,
    /// Failover (`[farm.failover]`): its failure answers that sent a new call or
    /// registration on, the ones it left unanswered past `timeout_ms`, and those
    /// other backends failed that were sent here.
    #[serde(default)]
    pub failover_answers: u64,
    #[serde(default)]
    pub failover_timeouts: u64,
    #[serde(default)]
    pub failover_to: u64,
}

/// Failover of new work, over all farms (`lb::failover`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FailoverStats {
    /// Requests held now (waiting for their final answer).
    pub held: u64,
    /// Not held: no free slot (`[tables] held_requests`), or larger than a slot.
    pub held_full: u64,
    pub held_too_big: u64,
    /// Failures passed to the caller: no backend left to try (`tries`, all down).
    pub exhausted: u64,
    /// Answers of backends a request had left (dropped, or acknowledged).
    pub late: u64,
    /// ACKs sent for failure answers.
    pub acks: u64,
    /// Re-sends that did not leave.
    pub resend_failed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DialogView {
    pub call_id: String,
    pub farm: String,
    pub backend: String,
    pub state: String,
    /// Seconds since its last message.
    pub idle_s: u32,
    /// Seconds until it is forgotten without news.
    pub expires_in_s: u32,
}
