//! The operator's configuration file (TOML): ports, farms (virtual services) and their
//! backends, tables and timers. Every error a user can make names the file, the line
//! and the field, and says what is expected.

use crate::health::HealthConfig;
use crate::table::dialog::Timers;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::Path;

mod address_range;
mod error;
mod ipv4_net;
mod port_range;
mod runtime;
mod validate;
pub use address_range::AddressRange;
pub use error::ConfigError;
use error::{read, toml_error};
pub use ipv4_net::Ipv4Net;
pub use port_range::PortRange;
pub use runtime::Runtime;
use runtime::DEFAULT_RUN_DIR;

/// Backends per farm and in total are bounded so counters can live in fixed-size
/// shared memory.
pub const MAX_FARMS: usize = 64;
pub const MAX_BACKENDS: usize = 1024;
pub const MAX_PORTS: usize = 8;
pub const MAX_WORKERS: usize = 32;
/// SNAT pool addresses of all farms together (distinct): the reverse table takes
/// 16 bytes per address and port, about 0.5 MB per address.
pub const MAX_SNAT_ADDRESSES: usize = 256;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub dataplane: DataplaneConfig,
    #[serde(default)]
    pub tables: TableConfig,
    #[serde(default)]
    pub sip: SipLimitsConfig,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default)]
    pub security: SecurityConfig,
    #[serde(default)]
    pub ha: HaConfig,
    #[serde(default)]
    pub bgp: BgpConfig,
    #[serde(rename = "port", default)]
    pub ports: Vec<PortConfig>,
    #[serde(rename = "farm", default)]
    pub farms: Vec<FarmConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneConfig {
    /// EAL arguments (`-l`, `--vdev`, `-a`, `--file-prefix` ...); command-line
    /// arguments after `--` are appended.
    pub eal_args: Vec<String>,
    /// Worker lcores; each owns RX/TX queue `i` of every port.
    pub workers: u16,
    /// Sleep this long when a poll finds nothing (0 = pure busy polling). Tests on
    /// 2-core machines use it so generators and backends get CPU.
    pub idle_sleep_us: u32,
    /// Mbufs in the packet pool.
    pub mbufs: u32,
    /// Data bytes per mbuf (after DPDK's 128-byte headroom). The largest frame a port
    /// receives must fit: 2048 for 1500-byte MTUs; more for jumbo frames or for the
    /// af_packet PMD, whose kernel side reassembles IP fragments before DPDK sees them
    /// (give it `framesz=` of this size plus 32 or less).
    pub mbuf_data_size: u16,
    /// Seconds between ARP refreshes of backends and gateways, and gratuitous ARPs
    /// for the VIPs.
    pub arp_refresh_s: u32,
    /// Give each port a kernel interface (TAP) with the port's address: traffic to the
    /// balancer's own address that is not balanced (ARP answers, ICMP, SSH, health
    /// checks) goes to the kernel, and what the kernel sends leaves by the port.
    pub exception_path: bool,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        Self {
            eal_args: Vec::new(),
            workers: 1,
            idle_sleep_us: 0,
            mbufs: 16383,
            mbuf_data_size: 2048,
            arp_refresh_s: 30,
            exception_path: true,
        }
    }
}

/// Two units sharing the VIPs (`[ha]`): the active one owns the VIPs, SNAT addresses
/// and floating addresses; the standby receives the active unit's tables and takes
/// over when the active unit's heartbeats stop.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    pub enabled: bool,
    /// The other unit's own address (a port address of the peer, in one of our ports'
    /// subnets): heartbeats and table sync go there, through the exception path.
    pub peer: Option<Ipv4Addr>,
    /// UDP port of heartbeats and table sync, on both units.
    pub port: u16,
    /// The unit with the higher priority is active while both are alive (ties: the
    /// lower own address).
    pub priority: u8,
    pub heartbeat_ms: u64,
    /// Heartbeats missed before the peer is taken for dead.
    pub dead_after: u32,
    /// How often the active unit sends the peer what changed in its tables (a pass
    /// reads only the groups of slots the dataplane marked dirty: cheap when often).
    pub sync_ms: u64,
    /// Shared secret of the pair (at least 16 bytes): every HA datagram carries an
    /// HMAC-SHA256 made with it. Either this or `key_file`.
    pub key: Option<String>,
    /// A file holding the shared secret (trailing newline ignored), read when HA starts.
    pub key_file: Option<std::path::PathBuf>,
    /// Most table-sync datagrams sent per second (new and resent together).
    pub sync_rate: u32,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            peer: None,
            port: 5999,
            priority: 100,
            heartbeat_ms: 200,
            dead_after: 3,
            sync_ms: 20,
            key: None,
            key_file: None,
            sync_rate: 5000,
        }
    }
}

/// Scale-out behind a router's ECMP (`[bgp]`): the control plane writes a BIRD
/// configuration that announces the VIPs to the router over BGP (through the exception
/// path) while this unit can serve them, and withdraws them when it cannot.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BgpConfig {
    pub enabled: bool,
    /// This unit's AS number.
    pub local_as: u32,
    /// The router's address, in one of our ports' subnets: the BGP session runs from
    /// that port's address.
    pub router: Option<Ipv4Addr>,
    /// The router's AS number.
    pub router_as: u32,
    /// BGP hold time in seconds (0 or 3..=65535): the router withdraws the unit's
    /// routes this long after its last message when the unit stops forwarding.
    pub hold_s: u16,
    /// BFD on the session (both sides must run it): loss detected in about
    /// `bfd_interval_ms` × 3 instead of the hold time.
    pub bfd: bool,
    pub bfd_interval_ms: u32,
    /// BIRD's control client, run as `<birdc> -s <socket> configure` after each
    /// rewrite of the configuration.
    pub birdc: String,
    /// BIRD's control socket; empty: `bird-<file prefix>.ctl` in the run directory.
    pub socket: String,
    /// The BIRD configuration file siplb writes; empty: `bird-<file prefix>.conf` in
    /// the run directory (start `bird -c <it> -s <socket>`).
    pub config_file: String,
}

impl Default for BgpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            local_as: 65001,
            router: None,
            router_as: 65000,
            hold_s: 3,
            bfd: false,
            bfd_interval_ms: 100,
            birdc: "birdc".into(),
            socket: String::new(),
            config_file: String::new(),
        }
    }
}

/// Defence against abuse of the VIPs (`[security]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Sources whose packets to the VIPs are dropped (addresses or prefixes).
    pub deny: Vec<Ipv4Net>,
    /// More of them, one per line (`#` comments), e.g. a blocklist feed; read at start
    /// and on every `siplb reload`.
    pub deny_file: String,
    /// If not empty, only these sources reach the VIPs.
    pub allow: Vec<Ipv4Net>,
    /// User-Agent substrings of SIP scanners (case-insensitive): their requests to the
    /// VIPs are dropped.
    pub scanner_user_agents: Vec<String>,
    /// Shorthand: rate and burst of every method class below that sets neither (the
    /// fixed one-second window it used to name is gone; 0 = no limit).
    pub max_new_per_source: u32,
    /// Token buckets per source, farm and method class, for requests that match no
    /// dialog (new work, and in-dialog-looking requests the tables do not know) and
    /// every REGISTER. Per farm in `[farm.limits]`.
    pub register: Bucket,
    pub invite: Bucket,
    pub options: Bucket,
    /// Every other method (ACK, BYE, CANCEL, MESSAGE, SUBSCRIBE...).
    pub other: Bucket,
    /// A source refused by its buckets more than `ban_overruns` times within
    /// `ban_window_s` seconds is banned (everything it sends to the VIPs dropped) for
    /// `ban_s` seconds: the numbers of Kamailio's pike + htable default config (more
    /// than 16 requests in 2 s, 300 s). 0 = never ban.
    pub ban_overruns: u32,
    pub ban_window_s: u32,
    pub ban_s: u32,
    /// Brute force, judged from the backends' own answers: a source whose REGISTERs
    /// and INVITEs carrying credentials are answered 401/407 (or anything answered
    /// 403) `auth_failures` times within `auth_window_s` seconds is banned for
    /// `auth_ban_s` seconds (fail2ban's defaults: 10 in 600 s, 600 s). A first
    /// challenge (a request without credentials) never counts. 0 = off.
    pub auth_failures: u32,
    pub auth_window_s: u32,
    pub auth_ban_s: u32,
    /// TCP segments with an impossible flag combination (SKUDONET's 13
    /// `bogustcpflags`) are dropped.
    pub tcp_drop_bogus_flags: bool,
    /// TCP connections at once from one source address (0 = no limit; SKUDONET's
    /// `limitconns` default is 20).
    pub tcp_max_connections_per_source: u32,
    /// SYNs per source (0 = no limit; SKUDONET's `limitsec`: rate 20, burst 15).
    pub tcp_syn: Bucket,
    /// RSTs per source (0 = no limit; SKUDONET's `limitrst`: rate 10, burst 5).
    pub tcp_rst: Bucket,
    /// SYNs per second, all sources together, from sources that hold no registration,
    /// dialog or established connection; beyond it only such sources may connect (0 =
    /// no limit): a SYN flood from spoofed sources does not lock customers out.
    pub tcp_untrusted_syn_per_s: u32,
    /// DNSBL zones (e.g. `"bl.example."`) the control plane looks each new source up
    /// in: `d.c.b.a.<zone>` answered with an A record in 127.0.0.0/8 means listed, and a
    /// listed source is banned (reason `dnsbl`). Empty: off.
    pub dnsbl: Vec<String>,
    /// The resolver asked (`address` or `address:port`); empty: the first
    /// `nameserver` of /etc/resolv.conf.
    pub dnsbl_resolver: String,
    /// Queries per second at most (all zones together).
    pub dnsbl_qps: u32,
    /// Sources waiting for a query at most; more are counted (`queue_full`) and looked
    /// up when they come back after their pending mark expired.
    pub dnsbl_queue: u32,
    /// What new work from a source whose lookup is pending gets: `admit` (default: a
    /// dead resolver or a stopped control plane never locks customers out) or `hold`
    /// (dropped, counted as `dnsbl_pending`, until the verdict; SIP retransmits).
    pub dnsbl_pending: DnsblPending,
    /// Seconds a listed source stays banned; 0: the listing's TTL.
    pub dnsbl_ban_s: u32,
    /// Seconds a "not listed" answer is kept when it carries no SOA (else the SOA's
    /// minimum, RFC 2308).
    pub dnsbl_negative_ttl_s: u32,
    /// Blocklist feeds (`[[security.feed]]`): their sources are dropped like `deny`'s.
    /// The control plane fetches each and refreshes it every `refresh_s`; a feed that
    /// fails keeps its last good list.
    pub feed: Vec<FeedConfig>,
}

/// A DNS resolver's socket address from `address` or `address:port` (port 53).
pub fn resolver_addr(s: &str) -> Option<std::net::SocketAddrV4> {
    s.parse()
        .ok()
        .or_else(|| Some(std::net::SocketAddrV4::new(s.parse().ok()?, 53)))
}

/// `[security] dnsbl_pending`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DnsblPending {
    #[default]
    Admit,
    Hold,
}

/// One blocklist feed: a `file` or a `url` (http or https), in `format`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    /// In `siplb status` and the metrics (default: the file or URL).
    pub name: String,
    pub file: String,
    pub url: String,
    pub format: FeedFormat,
    /// Seconds between fetches (also after a failure).
    pub refresh_s: u32,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            file: String::new(),
            url: String::new(),
            format: FeedFormat::Lines,
            refresh_s: 300,
        }
    }
}

impl FeedConfig {
    /// The file or URL it is read from.
    pub fn source(&self) -> &str {
        if self.file.is_empty() {
            &self.url
        } else {
            &self.file
        }
    }

    /// `name`, else the source.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            self.source()
        } else {
            &self.name
        }
    }
}

/// What a feed holds.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FeedFormat {
    /// One address or prefix per line, `#` comments.
    Lines,
    /// APIBAN's JSON: `{"ipaddress": ["1.2.3.4", ...], "ID": "..."}`, paged: the URL
    /// is fetched again with `/<ID>` appended until an answer has no new addresses.
    Apiban,
}

/// A token bucket: `rate` tokens a second, at most `burst` kept; a request takes one.
/// Rate 0 turns the bucket off. Refilled in whole seconds (the tables' clock).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Bucket {
    pub rate: u32,
    /// Default (0): equal to `rate`.
    pub burst: u32,
}

impl Bucket {
    pub fn is_off(&self) -> bool {
        self.rate == 0
    }
}

/// Per-farm token buckets (`[farm.limits]`): each class left out takes `[security]`'s.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FarmLimits {
    pub register: Option<Bucket>,
    pub invite: Option<Bucket>,
    pub options: Option<Bucket>,
    pub other: Option<Bucket>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            deny: Vec::new(),
            deny_file: String::new(),
            allow: Vec::new(),
            scanner_user_agents: [
                "friendly-scanner",
                "sipvicious",
                "sipcli",
                "sip-scan",
                "sundayddr",
                "iwar",
                "vaxsipuseragent",
                "pplsip",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            max_new_per_source: 0,
            register: Bucket::default(),
            invite: Bucket::default(),
            options: Bucket::default(),
            other: Bucket::default(),
            ban_overruns: 16,
            ban_window_s: 2,
            ban_s: 300,
            auth_failures: 10,
            auth_window_s: 600,
            auth_ban_s: 600,
            tcp_drop_bogus_flags: true,
            tcp_max_connections_per_source: 0,
            tcp_syn: Bucket::default(),
            tcp_rst: Bucket::default(),
            tcp_untrusted_syn_per_s: 0,
            dnsbl: Vec::new(),
            dnsbl_resolver: String::new(),
            dnsbl_qps: 50,
            dnsbl_queue: 1024,
            dnsbl_pending: DnsblPending::Admit,
            dnsbl_ban_s: 0,
            dnsbl_negative_ttl_s: 300,
            feed: Vec::new(),
        }
    }
}

/// The control plane (`siplb run`): where it listens.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// HTTP listener for Prometheus metrics (`/metrics`) and JSON (`/status`,
    /// `/stats`); loopback by default, `""` turns it off, port 0 picks a free port.
    pub http: String,
    /// Directory of the control socket and lock (`<dir>/<file-prefix>.sock`).
    pub run_dir: String,
    /// Seconds between counter samples (rates in `siplb stats` are over this).
    pub sample_interval_s: u32,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            http: "127.0.0.1:9060".into(),
            run_dir: DEFAULT_RUN_DIR.into(),
            sample_interval_s: 1,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TableConfig {
    /// Dialog table capacity in entries (rounded up to a power of two of slots).
    pub dialogs: u64,
    /// Registration table capacity in entries.
    pub registrations: u64,
    /// SNAT sessions (client flows) capacity in entries.
    pub snat_sessions: u64,
    /// TCP/TLS connections through the VIPs, capacity in entries.
    pub tcp_connections: u64,
    /// Rates-table entries (`[security]`): a token bucket per source, farm and method
    /// class in use, bans, trusted sources, TCP connection counts.
    pub rate_sources: u64,
    /// New INVITEs and REGISTERs held for failover until their final answer (4 KiB
    /// each, shared by the workers; `[farm.failover]`).
    pub held_requests: u64,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            dialogs: 1 << 20,
            registrations: 1 << 18,
            snat_sessions: 1 << 16,
            tcp_connections: 1 << 16,
            rate_sources: 1 << 16,
            held_requests: 4096,
        }
    }
}

/// Bounds on the work spent per SIP message; unset fields keep the scanner's defaults
/// (`sip::Limits::default()`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SipLimitsConfig {
    pub max_headers: Option<usize>,
    pub max_line_len: Option<usize>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    pub name: String,
    /// The balancer's own address on this port, with the subnet's prefix length
    /// (`198.18.0.1/24`). Backends and clients in this subnet are reached directly.
    #[serde(deserialize_with = "Ipv4Net::deserialize_with_len")]
    pub address: Ipv4Net,
    /// Next hop for destinations outside every port's subnet.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Name of the kernel interface that carries this port's own traffic (exception
    /// path); default `siplb<N>`.
    #[serde(default)]
    pub kernel_iface: Option<String>,
    /// Addresses on this port that move with the active unit of an HA pair, like the
    /// VIPs (e.g. the backends' default gateway in dnat mode).
    #[serde(default)]
    pub floating: Vec<Ipv4Addr>,
}

fn default_mtu() -> u16 {
    1500
}

impl PortConfig {
    /// The kernel interface of port `index` on the exception path.
    pub fn kernel_iface_name(&self, index: usize) -> String {
        self.kernel_iface
            .clone()
            .unwrap_or_else(|| format!("siplb{index}"))
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NatMode {
    /// Destination VIP → backend; the client's address is kept; the balancer is the
    /// backends' gateway and rewrites their answers to come from the VIP.
    Dnat,
    /// Source rewritten to a balancer address and a port per client flow.
    Snat,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Affinity {
    /// New out-of-dialog work placed by the hash of its Call-ID.
    CallId,
    /// Out-of-dialog requests follow the sender's registration (From AOR).
    Registrar,
    /// Out-of-dialog requests go to the registrar of the AOR they are addressed to
    /// (Request-URI) when it registered through the VIP, else follow the sender's
    /// registration, else the Call-ID: a call between phones registered on separate
    /// registrars reaches the one that knows the callee. UDP; TCP/TLS connections
    /// are placed as for `source`.
    Callee,
    /// Placed by the hash of the client's source address.
    Source,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FarmConfig {
    pub name: String,
    pub vip: Ipv4Addr,
    #[serde(default = "default_sip_port")]
    pub port: u16,
    #[serde(default = "default_protocols")]
    pub protocols: Vec<Protocol>,
    /// The VIP's port for SIP over TLS (`protocols` with "tls"), passed through to the
    /// backends' `tls_port` untouched.
    #[serde(default = "default_tls_port")]
    pub tls_port: u16,
    #[serde(default = "default_nat")]
    pub nat: NatMode,
    #[serde(default = "default_affinity")]
    pub affinity: Affinity,
    /// Source address for `snat`; defaults to the egress port's own address.
    #[serde(default)]
    pub snat_address: Option<Ipv4Addr>,
    /// A pool of SNAT source addresses (single addresses, `a-b` ranges, prefixes),
    /// each with its own ports 1024-32767; instead of `snat_address`.
    #[serde(default)]
    pub snat_addresses: Vec<AddressRange>,
    /// What happens to dialogs in progress on a backend that goes down: `keep` them
    /// there until they end, or `move` them on their next request.
    #[serde(default = "default_down_policy")]
    pub on_backend_down: DownPolicy,
    /// The SIP ALG (SIP over UDP): backend addresses in the headers a phone acts on
    /// become the VIP, and in `snat` the client's transport addresses become the
    /// balancer's toward backends. Off for backends that advertise the VIP themselves.
    #[serde(default = "default_alg")]
    pub alg: bool,
    /// Media through the VIP (with `alg`): the RTP/RTCP of every SDP that crosses is
    /// relayed by the balancer on ports of `media_ports`, and the SDP says so.
    /// Default: on when `alg` is.
    #[serde(default)]
    pub media: Option<bool>,
    /// Ports of the media relay. In `dnat` both legs of a stream are on the VIP: the
    /// lower half of the range faces clients, the upper half backends. In `snat` the
    /// client leg is on the VIP and the backend leg on the flow's SNAT address (above
    /// the SNAT ports 1024-32767), both from the whole range.
    #[serde(default = "default_media_ports")]
    pub media_ports: PortRange,
    /// Seconds a stream may carry no packet in either direction before its ports are
    /// freed (a call that ended without a BYE the balancer saw).
    #[serde(default = "default_media_timeout")]
    pub media_timeout: u16,
    #[serde(default)]
    pub timers: Timers,
    /// Token buckets of this farm (`[farm.limits]`), overriding `[security]`'s.
    #[serde(default)]
    pub limits: FarmLimits,
    /// What a new dialog gets when every backend is full, down, or shedding load
    /// (`max_dialogs`, Retry-After, `oc`): `reject` answers it with a stateless 503
    /// carrying `Retry-After: full_retry_after`; `drop` drops it (the client
    /// retransmits). Counted either way.
    #[serde(default = "default_when_full")]
    pub when_full: WhenFull,
    /// Seconds in the Retry-After of the 503 `when_full = "reject"` sends.
    #[serde(default = "default_full_retry_after")]
    pub full_retry_after: u32,
    /// Passive health (`[farm.passive]`): backends marked down from live traffic.
    #[serde(default)]
    pub passive: PassiveConfig,
    /// Failover of new calls and registrations (`[farm.failover]`): off by default.
    #[serde(default)]
    pub failover: FailoverConfig,
    /// How backends are checked (`[farm.health]`); none by default.
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
}

/// Passive health: a backend is marked down at once, from the traffic it fails to
/// answer, and new work avoids it until the farm's active checks pass `rise` times
/// (or, without active checks, for `down_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveConfig {
    /// Dialog-creating requests in a row the backend left unanswered (no message
    /// from it at all) within `window_ms` of the first; 0: off.
    pub unanswered: u32,
    pub window_ms: u32,
    /// An ICMP port unreachable from the backend's address about its SIP port.
    pub icmp: bool,
    /// How long a passive mark lasts on a farm without active checks.
    pub down_ms: u64,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        Self {
            unanswered: 0,
            window_ms: 250,
            icmp: false,
            down_ms: 5000,
        }
    }
}

/// Failover of new work (`lb::failover`): a new INVITE or REGISTER is held until its
/// final answer; a failure answer (`on`) or silence for `timeout_ms` sends it to the
/// next backend by the farm's order of preference, up to `tries` backends in all.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverConfig {
    /// Backends a new call or registration may try, the first included; 1: off.
    pub tries: u32,
    /// Milliseconds without any answer (not even 100 Trying) after which the
    /// request goes to the next backend.
    pub timeout_ms: u32,
    /// Final answers that send the request to the next backend.
    pub on: Vec<u16>,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            tries: 1,
            timeout_ms: 2000,
            on: vec![500, 503, 408],
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WhenFull {
    Drop,
    Reject,
}

fn default_when_full() -> WhenFull {
    WhenFull::Reject
}

fn default_full_retry_after() -> u32 {
    5
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DownPolicy {
    Keep,
    Move,
}

fn default_alg() -> bool {
    true
}

fn default_media_ports() -> PortRange {
    PortRange::new(40000, 59999)
}

fn default_media_timeout() -> u16 {
    120
}

fn default_down_policy() -> DownPolicy {
    DownPolicy::Keep
}

fn default_sip_port() -> u16 {
    5060
}
fn default_tls_port() -> u16 {
    5061
}
fn default_protocols() -> Vec<Protocol> {
    vec![Protocol::Udp]
}
fn default_nat() -> NatMode {
    NatMode::Dnat
}
fn default_affinity() -> Affinity {
    Affinity::CallId
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub address: Ipv4Addr,
    /// SIP over UDP and TCP.
    #[serde(default = "default_sip_port")]
    pub port: u16,
    /// SIP over TLS.
    #[serde(default = "default_tls_port")]
    pub tls_port: u16,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Dialogs (calls) in progress the backend takes at most; new ones go to the next
    /// backend when it is reached. 0: no limit.
    #[serde(default)]
    pub max_dialogs: u32,
    /// Backup group: the lowest `priority` takes all new work while any of its
    /// backends is up and not full, then the next.
    #[serde(default)]
    pub priority: u32,
}

fn default_weight() -> u32 {
    1
}

/// Where a farm's media legs live: the client legs' ports on the VIP, the backend
/// legs' ports on the VIP (`dnat`) or on the SNAT addresses (`snat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaPorts {
    pub client: PortRange,
    pub backend: PortRange,
}

impl FarmConfig {
    /// Whether the farm relays media (`media`, default: with `alg`).
    pub fn media_on(&self) -> bool {
        self.alg && self.media.unwrap_or(true)
    }

    /// The farm's media port ranges, if it relays media.
    pub fn media_ports(&self) -> Option<MediaPorts> {
        if !self.media_on() {
            return None;
        }
        Some(match self.nat {
            NatMode::Dnat => {
                let (client, backend) = self.media_ports.halves();
                MediaPorts { client, backend }
            }
            NatMode::Snat => MediaPorts {
                client: self.media_ports,
                backend: self.media_ports,
            },
        })
    }

    /// The farm's SNAT source addresses in configured order, without repeats; empty
    /// means the egress port's own address.
    pub fn snat_pool(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self.snat_address.into_iter().collect();
        for a in self.snat_addresses.iter().flat_map(AddressRange::iter) {
            if !v.contains(&a) {
                v.push(a);
            }
        }
        v
    }
}

impl Config {
    /// The media pools of every farm that relays media, each (address, range) once
    /// (farms may share one): the client legs' on the VIP; the backend legs' on the VIP
    /// (`dnat`), or on each SNAT address the farm may use (`snat`: its pool, else the
    /// own address of every port that reaches one of its backends).
    pub fn media_pools(&self) -> Vec<crate::table::media::PoolSpec> {
        use crate::table::media::PoolSpec;
        let mut v: Vec<PoolSpec> = Vec::new();
        let mut add = |addr: Ipv4Addr, r: PortRange| {
            let s = PoolSpec {
                addr,
                ports: r.ports(),
            };
            if !v.contains(&s) {
                v.push(s);
            }
        };
        for f in &self.farms {
            let Some(m) = f.media_ports() else { continue };
            add(f.vip, m.client);
            match f.nat {
                NatMode::Dnat => add(f.vip, m.backend),
                NatMode::Snat => {
                    let pool = f.snat_pool();
                    if pool.is_empty() {
                        for a in self.egress_addresses(f) {
                            add(a, m.backend);
                        }
                    } else {
                        for a in pool {
                            add(a, m.backend);
                        }
                    }
                }
            }
        }
        v
    }

    /// The own addresses of the ports that reach `f`'s backends (a connected subnet,
    /// else the first port with a gateway), without repeats.
    fn egress_addresses(&self, f: &FarmConfig) -> Vec<Ipv4Addr> {
        let mut v = Vec::new();
        for (port, _) in f.backends.iter().filter_map(|b| self.route(b.address)) {
            let a = self.ports[port].address.addr;
            if !v.contains(&a) {
                v.push(a);
            }
        }
        v
    }

    /// Every farm's SNAT pool address once, in farm and pool order: the order in which
    /// they get their share of the SNAT reverse table.
    pub fn snat_pool_addresses(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = Vec::new();
        for a in self.farms.iter().flat_map(FarmConfig::snat_pool) {
            if !v.contains(&a) {
                v.push(a);
            }
        }
        v
    }

    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::parse(&read(path)?, path)
    }

    /// Parses and validates `src`; `file` only names the source in errors.
    pub fn parse(src: &str, file: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(src).map_err(|e| toml_error(src, file, e))?;
        cfg.validate().map_err(|e| e.in_file(src, file))?;
        Ok(cfg)
    }

    /// Validates a configuration that did not come from a file (e.g. one edited by
    /// the control plane); errors name the field.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.validate().map_err(|e| e.in_running())
    }

    /// The configuration as TOML text (what `siplb` shows and hands to the dataplane).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a Config always serialises")
    }

    /// The port that reaches `dst` (connected subnet first, then a port with a
    /// gateway) and the next hop on it.
    pub fn route(&self, dst: Ipv4Addr) -> Option<(usize, Ipv4Addr)> {
        if let Some(i) = self.ports.iter().position(|p| p.address.contains(dst)) {
            return Some((i, dst));
        }
        self.ports
            .iter()
            .enumerate()
            .find_map(|(i, p)| p.gateway.map(|g| (i, g)))
    }
}

#[cfg(test)]
mod round_trip {
    use super::*;

    #[test]
    fn toml_round_trip_keeps_everything() {
        let src = r#"
[[port]]
name = "p"
address = "198.18.0.1/24"
[[farm]]
name = "f"
vip = "198.18.0.2"
nat = "snat"
affinity = "registrar"
timers = { linger = 10 }
backends = [ { address = "198.18.0.11", weight = 5 } ]
"#;
        let c = Config::parse(src, Path::new("x")).unwrap();
        let again = Config::parse(&c.to_toml(), Path::new("y")).unwrap();
        assert_eq!(c, again);
        assert_eq!(again.farms[0].timers.linger, 10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[dataplane]
workers = 2
idle_sleep_us = 100

[[port]]
name = "front"
address = "198.18.0.1/24"

[[port]]
name = "back"
address = "198.18.1.1/24"

[[farm]]
name = "pbx"
vip = "198.18.0.2"
port = 5060
nat = "dnat"
affinity = "call-id"
backends = [
  { address = "198.18.1.11", port = 5060, weight = 3 },
  { address = "198.18.1.12", weight = 1 },
]
"#;

    fn err(src: &str) -> ConfigError {
        Config::parse(src, Path::new("siplb.toml")).unwrap_err()
    }

    #[test]
    fn dnsbl_settings_are_checked_and_name_their_field() {
        let with = |sec: &str| format!("[security]\n{sec}\n{GOOD}");
        let c = Config::parse(
            &with("dnsbl = [\"bl.test.\"]\ndnsbl_resolver = \"198.18.9.2:5353\"\ndnsbl_pending = \"hold\""),
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.security.dnsbl_pending, DnsblPending::Hold);
        assert_eq!(
            resolver_addr(&c.security.dnsbl_resolver),
            Some("198.18.9.2:5353".parse().unwrap())
        );
        assert_eq!(resolver_addr("198.18.9.2").map(|a| a.port()), Some(53));
        let e = err(&with("dnsbl = [\"bl..test\"]"));
        assert_eq!(e.field, "security.dnsbl[0]");
        let e = err(&with(
            "dnsbl = [\"bl.test\"]\ndnsbl_resolver = \"resolver.example\"",
        ));
        assert_eq!(e.field, "security.dnsbl_resolver");
        assert!(e.message.contains("198.18.9.2:53"), "{e}");
        let e = err(&with("dnsbl = [\"bl.test\"]\ndnsbl_qps = 0"));
        assert_eq!(e.field, "security.dnsbl_qps");
        assert!(err(&with("dnsbl_pending = \"wait\""))
            .to_string()
            .contains("dnsbl_pending"));
    }

    #[test]
    fn bgp_settings_are_checked_and_name_their_field() {
        let with = |sec: &str| format!("[bgp]\nenabled = true\n{sec}\n{GOOD}");
        let c = Config::parse(&with("router = \"198.18.0.254\""), Path::new("x.toml")).unwrap();
        assert_eq!(
            (c.bgp.local_as, c.bgp.router_as, c.bgp.hold_s),
            (65001, 65000, 3)
        );
        assert_eq!(err(&with("")).field, "bgp.router");
        let e = err(&with("router = \"198.19.0.1\""));
        assert_eq!(e.field, "bgp.router");
        assert!(e.message.contains("no port's subnet"), "{e}");
        let e = err(&with("router = \"198.18.0.254\"\nhold_s = 2"));
        assert_eq!(e.field, "bgp.hold_s");
        let e = err(&with("router = \"198.18.0.254\"\nlocal_as = 0"));
        assert_eq!(e.field, "bgp.local_as");
        let e = err(&with(
            "router = \"198.18.0.254\"\nbfd = true\nbfd_interval_ms = 1",
        ));
        assert_eq!(e.field, "bgp.bfd_interval_ms");
        assert!(
            Config::parse(&format!("[bgp]\nhold_s = 1\n{GOOD}"), Path::new("x")).is_ok(),
            "[bgp] off: its fields are not checked"
        );
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = Config::parse(GOOD, Path::new("x.toml")).unwrap();
        assert_eq!(c.dataplane.workers, 2);
        assert_eq!(c.farms[0].backends[1].port, 5060);
        assert_eq!(c.farms[0].backends[0].weight, 3);
        assert_eq!(c.farms[0].protocols, vec![Protocol::Udp]);
        assert_eq!(
            c.route(Ipv4Addr::new(198, 18, 1, 12)),
            Some((1, Ipv4Addr::new(198, 18, 1, 12)))
        );
        assert_eq!(c.route(Ipv4Addr::new(198, 19, 0, 1)), None);
    }

    #[test]
    fn media_pools_follow_the_nat_mode() {
        use crate::table::media::PoolSpec;
        let c = Config::parse(GOOD, Path::new("x.toml")).unwrap();
        let vip = Ipv4Addr::new(198, 18, 0, 2);
        assert_eq!(
            c.media_pools(),
            [
                PoolSpec {
                    addr: vip,
                    ports: 40000..=49999
                },
                PoolSpec {
                    addr: vip,
                    ports: 50000..=59999
                },
            ],
            "dnat: both halves on the VIP"
        );
        let c = Config::parse(&GOOD.replace("\"dnat\"", "\"snat\""), Path::new("x.toml")).unwrap();
        assert_eq!(
            c.media_pools(),
            [
                PoolSpec {
                    addr: vip,
                    ports: 40000..=59999
                },
                PoolSpec {
                    addr: Ipv4Addr::new(198, 18, 1, 1),
                    ports: 40000..=59999
                },
            ],
            "snat: the VIP and the back port's own address"
        );
        let off = GOOD.replace(
            "affinity = \"call-id\"",
            "affinity = \"call-id\"\nmedia = false",
        );
        assert!(Config::parse(&off, Path::new("x.toml"))
            .unwrap()
            .media_pools()
            .is_empty());
    }

    #[test]
    fn media_ports_errors_say_what_to_change() {
        let with = |nat: &str, ports: &str| {
            err(&GOOD.replace("\"dnat\"", &format!("\"{nat}\"\nmedia_ports = \"{ports}\"")))
        };
        let e = with("snat", "20000-40000");
        assert_eq!(e.field, "farm[0].media_ports");
        assert!(e.message.contains("SNAT ports"), "{e}");
        let e = with("dnat", "5000-5100");
        assert!(e.message.contains("SIP port 5060"), "{e}");
        let e = with("dnat", "40000-40004");
        assert!(e.message.contains("at least 8 ports"), "{e}");
        let e = with("dnat", "40000");
        assert!(e.message.contains("range of ports"), "{e}");
        let two = format!(
            "{GOOD}\n[[farm]]\nname = \"b\"\nvip = \"198.18.0.2\"\nport = 5070\nmedia_ports = \"45000-46001\"\nbackends = [{{ address = \"198.18.1.13\" }}]\n"
        );
        let e = err(&two);
        assert_eq!(e.field, "farm[1].media_ports");
        assert!(e.message.contains("overlap"), "{e}");
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let e = err(&GOOD.replace("weight = 3", "wieght = 3"));
        let s = e.to_string();
        assert!(s.starts_with("siplb.toml:21"), "{s}");
        assert!(s.contains("wieght"), "{s}");
    }

    #[test]
    fn semantic_errors_name_line_and_field() {
        let e = err(&GOOD.replace("198.18.1.12", "198.19.9.9"));
        assert_eq!(e.field, "farm[0].backends[1].address");
        assert_eq!(e.line, Some(22), "{e}");
        assert!(e.message.contains("no port's subnet"));

        let e = err(&GOOD.replace("weight = 3", "weight = 70000"));
        assert_eq!(e.field, "farm[0].backends[0].weight");
        assert_eq!(e.line, Some(21));

        let e = err(&GOOD.replace("workers = 2", "workers = 0"));
        assert_eq!(e.field, "dataplane.workers");
        assert_eq!(e.line, Some(3));

        let e = err(&GOOD.replace("vip = \"198.18.0.2\"", "vip = \"198.18.0.1\""));
        assert_eq!(e.field, "farm[0].vip");
        assert_eq!(e.line, Some(16));
    }

    #[test]
    fn bad_values_are_explained() {
        let e = err(&GOOD.replace("198.18.0.1/24", "198.18.0.1"));
        assert!(e.to_string().contains("prefix length"), "{e}");
        assert_eq!(e.line, Some(8));
        let e = err(&GOOD.replace("nat = \"dnat\"", "nat = \"masquerade\""));
        assert!(e.to_string().contains("dnat"), "{e}");
        let e = err("[[farm]]\nname='x'\n");
        assert!(e.to_string().contains("vip"), "{e}");
        let e = err("this is not toml");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn a_backend_in_two_dnat_farms_is_refused() {
        let two = format!(
            "{GOOD}\n[[farm]]\nname = \"pbx2\"\nvip = \"198.18.0.3\"\nbackends = [ {{ address = \"198.18.1.12\" }} ]\n"
        );
        let e = err(&two);
        assert_eq!(e.field, "farm[1].backends[0].address");
        assert!(e.message.contains("also a backend of farm `pbx`"), "{e}");
        let snat = two
            .replace("nat = \"dnat\"", "nat = \"snat\"")
            .replace("name = \"pbx2\"", "name = \"pbx2\"\nnat = \"snat\"");
        Config::parse(&snat, Path::new("x")).unwrap();
    }

    #[test]
    fn ha_needs_a_shared_key_of_16_bytes() {
        let ha =
            |extra: &str| format!("{GOOD}\n[ha]\nenabled = true\npeer = \"198.18.1.3\"\n{extra}\n");
        let e = err(&ha(""));
        assert_eq!(e.field, "ha.key");
        assert!(e.message.contains("at least 16 bytes"), "{e}");
        let e = err(&ha("key = \"short\""));
        assert_eq!(e.field, "ha.key");
        assert!(e.message.contains("5 bytes"), "{e}");
        let e = err(&ha("key = \"0123456789abcdef\"\nkey_file = \"/k\""));
        assert!(e.message.contains("not both"), "{e}");
        let c = Config::parse(&ha("key = \"0123456789abcdef\""), Path::new("x")).unwrap();
        assert_eq!(c.ha.sync_rate, 5000);
        Config::parse(&ha("key_file = \"/etc/siplb/ha.key\""), Path::new("x")).unwrap();
    }
}

#[cfg(test)]
mod example {
    use super::*;

    #[test]
    fn the_documented_example_is_valid_and_sets_every_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../siplb.example.toml");
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.farms[0].backends.len(), 2);
        assert_eq!(c.farms[0].health.check, crate::health::CheckKind::Options);
        assert_eq!(c.runtime(&[]).file_prefix, "siplb");
    }
}
