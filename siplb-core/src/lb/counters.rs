//! Per-worker counters, laid out for shared memory: each worker writes only its own
//! block (single writer: relaxed load + store, no locked instruction), other processes
//! read them without disturbing the worker. Blocks are cache-line aligned so two
//! workers never write the same line.

pub use super::counter::Counter;
use super::timing::ResponseCounters;
use crate::alg::MediaError;
use crate::alg::RewriteError;
use crate::config::{MAX_BACKENDS, MAX_FARMS};
use crate::sip::SipError;
use crate::table::media::MediaDrop;

/// `WorkerCtx::farm` of a packet that no farm handles (yet).
pub const NO_FARM: u8 = u8::MAX;

/// Why a packet was dropped. Dense, so counters are an array indexed by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DropReason {
    /// Destination MAC is neither ours nor broadcast (af_packet ports are promiscuous).
    NotOurMac,
    /// Shorter than an Ethernet header, or an IPv4/UDP length longer than the frame (a
    /// PMD that cut the frame: for af_packet, raise `framesz=` and `mbuf_data_size`).
    Truncated,
    /// Neither IPv4 nor ARP.
    UnsupportedEthertype,
    /// Not an Ethernet/IPv4 ARP packet.
    ArpMalformed,
    /// ARP that asks for none of our addresses and tells us nothing useful.
    ArpNotForUs,
    /// Bad IPv4 header: version, lengths or header checksum.
    Ipv4Malformed,
    /// TTL would reach zero on forwarding.
    TtlExpired,
    /// A fragment overlapping one already received (RFC 5722 style: the datagram is dropped).
    FragmentOverlap,
    /// A datagram whose fragments did not all arrive in time.
    FragmentTimeout,
    /// No free reassembly slot.
    FragmentNoSlot,
    /// A reassembled datagram would exceed the reassembly buffer.
    FragmentTooBig,
    /// Not for a VIP, not from a backend, not for a SNAT session: nothing to balance.
    NotBalanced,
    /// For a VIP, but a protocol or port the farm does not serve.
    VipPortClosed,
    /// Bad UDP header or checksum.
    UdpMalformed,
    /// The SIP message did not scan (the reason is in the SIP error counters).
    SipMalformed,
    /// The farm has no available backend.
    NoBackend,
    /// The next hop's MAC address is not known yet (an ARP request was sent).
    NeighbourUnresolved,
    /// No port reaches the destination.
    NoRoute,
    /// A packet to a SNAT address and port that no live session owns.
    SnatNoSession,
    /// No free SNAT port for a new client flow.
    SnatPortsExhausted,
    /// ICMP that is not an echo request to one of our addresses.
    IcmpUnsupported,
    /// TCP to a VIP whose farm serves no TCP or TLS.
    TcpUnsupported,
    /// A TCP header shorter than its data offset says.
    TcpMalformed,
    /// Larger than the egress MTU with Don't Fragment set.
    MtuExceeded,
    /// A frame split over several mbuf segments.
    MultiSegment,
    /// A source on the deny list, or not on the allow list (`[security]`).
    Denied,
    /// A request from a SIP scanner (its User-Agent).
    Scanner,
    /// More new dialogs or registrations per second from one source than allowed.
    Flood,
    /// For a VIP or floating address while this unit is the standby of an HA pair.
    Standby,
    /// A SIP message the ALG could not rewrite correctly (the reason is in the ALG
    /// error counters); never sent half-rewritten.
    AlgRefused,
    /// RTP/RTCP to a media port that no live mapping holds (a call that ended, a scan).
    MediaNotMapped,
    /// Media toward a side that has not said where it receives, or holds (`0.0.0.0`).
    MediaNoDestination,
    /// Media from a source other than the endpoint the stream latched or announced.
    MediaForeignSource,
    /// A TCP segment of an ALG farm whose connection's sequence correction another
    /// worker held for longer than the bounded wait (TCP retransmits it).
    TcpSeqBusy,
    /// The TX queue was full.
    TxFull,
    /// No mbuf available for a generated packet (ARP request, fragment).
    NoMbuf,
    /// A source on the ban list (`siplb security bans`).
    Banned,
    /// The rates table is full around the source's entry: a request or SYN the limits
    /// could not meter is refused (sources holding a registration or dialog pass).
    RateTableFull,
    /// An in-dialog request (To-tag, ACK, BYE, CANCEL) or a response that matches no
    /// dialog, on a `snat` farm: it would take a SNAT port for a dialog the backend
    /// cannot reach through it.
    NoDialog,
    /// A TCP segment other than a SYN that matches no connection, on a `snat` farm.
    TcpNoConnection,
    /// A TCP flag combination no stack sends (`[security] tcp_drop_bogus_flags`).
    TcpBogusFlags,
    /// More SYNs from one source than `[security] tcp_syn` allows.
    TcpSynRate,
    /// More RSTs from one source than `[security] tcp_rst` allows.
    TcpRstRate,
    /// A SYN from an unknown source beyond `[security] tcp_untrusted_syn_per_s`.
    TcpSynFlood,
    /// A source at `[security] tcp_max_connections_per_source`.
    TcpConnectionLimit,
    /// A new dialog no backend took (all full, held by Retry-After, shedding `oc`
    /// load, or marked down) on a farm with `when_full = "drop"`, or whose 503 did not
    /// fit.
    FarmFull,
    /// The ACK of a 503 the balancer sent for a full farm (its To tag is the
    /// balancer's): nothing behind the VIP knows the call.
    FullReplyAck,
    /// New work from a source whose DNSBL lookup is pending, with `[security]
    /// dnsbl_pending = "hold"` (SIP retransmits it).
    DnsblPending,
    /// A provisional or 2xx answer of a backend a held request has left
    /// (`[farm.failover]`): the call is another backend's now.
    FailoverLate,
}

impl DropReason {
    pub const COUNT: usize = DropReason::FailoverLate as usize + 1;
    pub const ALL: [DropReason; Self::COUNT] = [
        Self::NotOurMac,
        Self::Truncated,
        Self::UnsupportedEthertype,
        Self::ArpMalformed,
        Self::ArpNotForUs,
        Self::Ipv4Malformed,
        Self::TtlExpired,
        Self::FragmentOverlap,
        Self::FragmentTimeout,
        Self::FragmentNoSlot,
        Self::FragmentTooBig,
        Self::NotBalanced,
        Self::VipPortClosed,
        Self::UdpMalformed,
        Self::SipMalformed,
        Self::NoBackend,
        Self::NeighbourUnresolved,
        Self::NoRoute,
        Self::SnatNoSession,
        Self::SnatPortsExhausted,
        Self::IcmpUnsupported,
        Self::TcpUnsupported,
        Self::TcpMalformed,
        Self::MtuExceeded,
        Self::MultiSegment,
        Self::Denied,
        Self::Scanner,
        Self::Flood,
        Self::Standby,
        Self::AlgRefused,
        Self::MediaNotMapped,
        Self::MediaNoDestination,
        Self::MediaForeignSource,
        Self::TcpSeqBusy,
        Self::TxFull,
        Self::NoMbuf,
        Self::Banned,
        Self::RateTableFull,
        Self::NoDialog,
        Self::TcpNoConnection,
        Self::TcpBogusFlags,
        Self::TcpSynRate,
        Self::TcpRstRate,
        Self::TcpSynFlood,
        Self::TcpConnectionLimit,
        Self::FarmFull,
        Self::FullReplyAck,
        Self::DnsblPending,
        Self::FailoverLate,
    ];

    /// snake_case name, for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::NotOurMac => "not_our_mac",
            Self::Truncated => "truncated",
            Self::UnsupportedEthertype => "unsupported_ethertype",
            Self::ArpMalformed => "arp_malformed",
            Self::ArpNotForUs => "arp_not_for_us",
            Self::Ipv4Malformed => "ipv4_malformed",
            Self::TtlExpired => "ttl_expired",
            Self::FragmentOverlap => "fragment_overlap",
            Self::FragmentTimeout => "fragment_timeout",
            Self::FragmentNoSlot => "fragment_no_slot",
            Self::FragmentTooBig => "fragment_too_big",
            Self::NotBalanced => "not_balanced",
            Self::VipPortClosed => "vip_port_closed",
            Self::UdpMalformed => "udp_malformed",
            Self::SipMalformed => "sip_malformed",
            Self::NoBackend => "no_backend",
            Self::NeighbourUnresolved => "neighbour_unresolved",
            Self::NoRoute => "no_route",
            Self::SnatNoSession => "snat_no_session",
            Self::SnatPortsExhausted => "snat_ports_exhausted",
            Self::IcmpUnsupported => "icmp_unsupported",
            Self::TcpUnsupported => "tcp_unsupported",
            Self::TcpMalformed => "tcp_malformed",
            Self::MtuExceeded => "mtu_exceeded",
            Self::MultiSegment => "multi_segment",
            Self::Denied => "denied",
            Self::Scanner => "scanner",
            Self::Flood => "flood",
            Self::Standby => "standby",
            Self::AlgRefused => "alg_refused",
            Self::MediaNotMapped => "media_not_mapped",
            Self::MediaNoDestination => "media_no_destination",
            Self::MediaForeignSource => "media_foreign_source",
            Self::TcpSeqBusy => "tcp_seq_busy",
            Self::TxFull => "tx_full",
            Self::NoMbuf => "no_mbuf",
            Self::Banned => "banned",
            Self::RateTableFull => "rate_table_full",
            Self::NoDialog => "no_dialog",
            Self::TcpNoConnection => "tcp_no_connection",
            Self::TcpBogusFlags => "tcp_bogus_flags",
            Self::TcpSynRate => "tcp_syn_rate",
            Self::TcpRstRate => "tcp_rst_rate",
            Self::TcpSynFlood => "tcp_syn_flood",
            Self::TcpConnectionLimit => "tcp_connection_limit",
            Self::FarmFull => "farm_full",
            Self::FullReplyAck => "full_reply_ack",
            Self::DnsblPending => "dnsbl_pending",
            Self::FailoverLate => "failover_late",
        }
    }
}

/// Why a TCP segment of an ALG farm went on without a rewrite it needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpAlgSkip {
    /// Bytes naming an address to rewrite are not a whole SIP message: part of one
    /// (its start, or the continuation of a message begun in an earlier segment,
    /// which may even frame as a message but does not parse).
    Partial,
    /// The rewritten segment would exceed the mbuf's room or the egress port's MTU.
    TooLarge,
    /// A whole message the rewriter refused (its reason in `alg_errors`).
    Refused,
    /// The connection's sequence correction could not be recorded (its table is full
    /// around the connection's key, or another worker held the slot).
    NoSeqState,
}

impl TcpAlgSkip {
    pub const COUNT: usize = TcpAlgSkip::NoSeqState as usize + 1;
    pub const ALL: [TcpAlgSkip; Self::COUNT] = [
        Self::Partial,
        Self::TooLarge,
        Self::Refused,
        Self::NoSeqState,
    ];

    /// snake_case name, for metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Partial => "partial_message",
            Self::TooLarge => "too_large",
            Self::Refused => "refused",
            Self::NoSeqState => "no_seq_state",
        }
    }
}

/// Packets and bytes in each direction for one backend.
#[derive(Default)]
#[repr(C)]
pub struct BackendCounters {
    pub to_packets: Counter,
    pub to_bytes: Counter,
    pub from_packets: Counter,
    pub from_bytes: Counter,
    /// New dialogs the backend's hash choice turned away because it carried
    /// `max_dialogs` (they went to another backend, or got the farm's `when_full`).
    pub full: Counter,
    /// New dialogs its RFC 7339 `oc` value shed to other backends.
    pub oc_shed: Counter,
    /// New dialogs turned away while a Retry-After held it.
    pub held: Counter,
    /// 503s with Retry-After that set or extended a hold.
    pub retry_after: Counter,
    /// Its failure answers (`[farm.failover] on`) that sent a new call or
    /// registration to another backend.
    pub failover_answers: Counter,
    /// New calls and registrations it left unanswered for `timeout_ms`, sent to
    /// another backend.
    pub failover_timeouts: Counter,
    /// Requests another backend failed that were sent here.
    pub failover_to: Counter,
}

impl From<MediaDrop> for DropReason {
    fn from(d: MediaDrop) -> Self {
        match d {
            MediaDrop::NotMapped => Self::MediaNotMapped,
            MediaDrop::NoDestination => Self::MediaNoDestination,
            MediaDrop::ForeignSource => Self::MediaForeignSource,
        }
    }
}

/// One farm's media relay: streams mapped and ended, what was forwarded, what was
/// dropped, and SDP streams the table could not map.
#[derive(Default)]
#[repr(C)]
pub struct MediaCounters {
    /// Mappings created (a stream announced in SDP for the first time).
    pub flows: Counter,
    /// Mappings ended by the dialog (BYE, CANCEL, a final error to the INVITE).
    pub ended: Counter,
    pub packets: Counter,
    pub bytes: Counter,
    /// Drops by `MediaDrop::index` (forwarding).
    pub drops: [Counter; MediaDrop::COUNT],
    /// SDP streams not mapped, by `MediaError::index` (the message was refused).
    pub refused: [Counter; MediaError::COUNT],
    /// SDP left as it was because the farm's media pools do not exist (added by a
    /// reload: pools are laid out when the dataplane starts).
    pub unplaced: Counter,
}

/// One worker's counters. `#[repr(C)]` with fixed-size arrays: the layout is the same in
/// every process of one build.
#[repr(C, align(64))]
pub struct WorkerCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    pub polls: Counter,
    pub busy_polls: Counter,
    pub arp_replies: Counter,
    pub arp_requests: Counter,
    pub arp_learned: Counter,
    pub icmp_replies: Counter,
    pub sip_requests: Counter,
    pub sip_responses: Counter,
    /// SIP messages of known dialogs steered from the light scan (a subset of the
    /// requests and responses above; the rest were parsed in full).
    pub sip_steered: Counter,
    /// SIP messages whose addresses the ALG rewrote.
    pub alg_rewritten: Counter,
    pub dialogs_created: Counter,
    pub registrations_created: Counter,
    pub dialog_table_full: Counter,
    pub registration_table_full: Counter,
    pub snat_sessions_created: Counter,
    pub tcp_connections_created: Counter,
    pub connection_table_full: Counter,
    /// Rates-table operations that found no slot (`[tables] rate_sources`).
    pub rate_table_full: Counter,
    /// Sources put on the ban list.
    pub sources_banned: Counter,
    /// Credentials a backend refused (401/407 to a REGISTER or INVITE that carried
    /// them) and 403s (`security/brute.rs`).
    pub auth_failures: Counter,
    /// New sources handed to the control plane's DNSBL lookups, and those the ring
    /// had no room for (`security/dnsbl.rs`).
    pub dnsbl_noted: Counter,
    pub dnsbl_ring_full: Counter,
    /// In-dialog requests and responses that matched no dialog, forwarded on a `dnat`
    /// farm with a transaction's lifetime.
    pub stray_sip_forwarded: Counter,
    /// TCP segments other than SYNs that matched no connection, forwarded on a `dnat`
    /// farm without creating one.
    pub stray_tcp_forwarded: Counter,
    pub fragments_in: Counter,
    /// UDP/TCP checksums a sender's kernel left unfinished (TX offload on a veth) and
    /// the worker finished (`Flow::finish_partial_checksum`).
    pub checksums_finished: Counter,
    pub datagrams_reassembled: Counter,
    pub fragments_out: Counter,
    /// Frames handed to the kernel interfaces (exception path) and taken from them.
    pub to_kernel: Counter,
    pub from_kernel: Counter,
    pub drops: [Counter; DropReason::COUNT],
    pub sip_errors: [Counter; SipError::COUNT],
    /// Why the ALG refused messages (`RewriteError::index`).
    pub alg_errors: [Counter; RewriteError::COUNT],
    /// TCP segments of ALG farms whose sequence number, acknowledgment or SACK edges
    /// were mapped through their connection's correction.
    pub tcp_seq_mapped: Counter,
    /// Why TCP segments of ALG farms went on without a rewrite (`TcpAlgSkip`).
    pub tcp_alg_skipped: [Counter; TcpAlgSkip::COUNT],
    /// New dialogs answered with the farm's 503 because no backend took them
    /// (`when_full = "reject"`).
    pub farm_full_rejected: Counter,
    /// Backends this worker marked down passively (unanswered requests, ICMP).
    pub passive_marks: Counter,
    /// Failover (`lb::failover`): requests not held because no slot was free, or
    /// because they were larger than a slot; failures passed to the caller because
    /// no backend was left to try; answers of backends a request had left; ACKs
    /// sent for failures; re-sends that did not leave.
    pub held_full: Counter,
    pub held_too_big: Counter,
    pub failover_exhausted: Counter,
    pub failover_late: Counter,
    pub failover_acks: Counter,
    pub failover_resend_failed: Counter,
    pub backends: [BackendCounters; MAX_BACKENDS],
    /// Per farm (`Farm::id`).
    pub media: [MediaCounters; MAX_FARMS],
    /// Requests not timed: another transaction's stamp held their slot of the
    /// request times (`lb::timing`).
    pub request_times_full: Counter,
    /// Drops of packets for a farm (to its VIP, from its backends, its SNAT sessions),
    /// by farm (`Farm::id`) and reason; a subset of `drops`.
    pub farm_drops: [[Counter; DropReason::COUNT]; MAX_FARMS],
    /// Each backend's answers and response times, by backend slot.
    pub responses: [ResponseCounters; MAX_BACKENDS],
}

impl WorkerCounters {
    #[inline(always)]
    pub fn dropped(&self, r: DropReason) {
        self.drops[r as usize].inc();
    }

    /// A drop of a packet that `farm` (`Farm::id`, or `NO_FARM`) was handling.
    #[inline(always)]
    pub fn dropped_at(&self, r: DropReason, farm: u8) {
        self.dropped(r);
        if let Some(f) = self.farm_drops.get(usize::from(farm)) {
            f[r as usize].inc();
        }
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }
}

impl Default for WorkerCounters {
    fn default() -> Self {
        Self {
            rx_packets: Counter::default(),
            rx_bytes: Counter::default(),
            tx_packets: Counter::default(),
            tx_bytes: Counter::default(),
            polls: Counter::default(),
            busy_polls: Counter::default(),
            arp_replies: Counter::default(),
            arp_requests: Counter::default(),
            arp_learned: Counter::default(),
            icmp_replies: Counter::default(),
            sip_requests: Counter::default(),
            sip_responses: Counter::default(),
            sip_steered: Counter::default(),
            alg_rewritten: Counter::default(),
            dialogs_created: Counter::default(),
            registrations_created: Counter::default(),
            dialog_table_full: Counter::default(),
            registration_table_full: Counter::default(),
            snat_sessions_created: Counter::default(),
            tcp_connections_created: Counter::default(),
            connection_table_full: Counter::default(),
            rate_table_full: Counter::default(),
            sources_banned: Counter::default(),
            auth_failures: Counter::default(),
            dnsbl_noted: Counter::default(),
            dnsbl_ring_full: Counter::default(),
            stray_sip_forwarded: Counter::default(),
            stray_tcp_forwarded: Counter::default(),
            fragments_in: Counter::default(),
            checksums_finished: Counter::default(),
            datagrams_reassembled: Counter::default(),
            fragments_out: Counter::default(),
            to_kernel: Counter::default(),
            from_kernel: Counter::default(),
            drops: std::array::from_fn(|_| Counter::default()),
            sip_errors: std::array::from_fn(|_| Counter::default()),
            alg_errors: std::array::from_fn(|_| Counter::default()),
            tcp_seq_mapped: Counter::default(),
            tcp_alg_skipped: std::array::from_fn(|_| Counter::default()),
            farm_full_rejected: Counter::default(),
            passive_marks: Counter::default(),
            held_full: Counter::default(),
            held_too_big: Counter::default(),
            failover_exhausted: Counter::default(),
            failover_late: Counter::default(),
            failover_acks: Counter::default(),
            failover_resend_failed: Counter::default(),
            backends: std::array::from_fn(|_| BackendCounters::default()),
            media: std::array::from_fn(|_| MediaCounters::default()),
            request_times_full: Counter::default(),
            farm_drops: std::array::from_fn(|_| std::array::from_fn(|_| Counter::default())),
            responses: std::array::from_fn(|_| ResponseCounters::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_dense_and_named_uniquely() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn counters_are_cache_line_aligned_and_count() {
        assert_eq!(std::mem::align_of::<WorkerCounters>(), 64);
        let c = Box::<WorkerCounters>::default();
        c.dropped(DropReason::NoRoute);
        c.dropped(DropReason::NoRoute);
        c.rx_packets.add(3);
        assert_eq!(c.drops[DropReason::NoRoute as usize].get(), 2);
        assert_eq!(c.total_drops(), 2);
        assert_eq!(c.rx_packets.get(), 3);
        c.dropped_at(DropReason::NoBackend, 2);
        c.dropped_at(DropReason::NoBackend, NO_FARM);
        assert_eq!(c.drops[DropReason::NoBackend as usize].get(), 2);
        assert_eq!(c.farm_drops[2][DropReason::NoBackend as usize].get(), 1);
        let by_farm: u64 = c.farm_drops.iter().flatten().map(Counter::get).sum();
        assert_eq!(by_farm, 1);
    }
}
