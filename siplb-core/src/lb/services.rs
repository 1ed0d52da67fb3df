//! The balancer's view of its configuration at one instant: ports, farms, backends and
//! their Maglev tables, with the indexes the hot path searches. A `Services` is built off
//! the hot path (on the dataplane's main lcore) and published whole; workers only read
//! it, and a change builds a new one.

use super::security::{Buckets, Policy};
use super::snat::PORT_ADDRESS;
use crate::config::{
    Affinity, Config, FailoverConfig, FarmConfig, Ipv4Net, NatMode, PassiveConfig, Protocol,
    WhenFull, MAX_BACKENDS,
};
use crate::hash::hash64;
use crate::maglev::{self, MaglevBackend};
use crate::table::dialog::Timers;
use crate::wire::MacAddr;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// What a backend may receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Takes new and existing work.
    Up,
    /// Takes no new dialogs or registrations; finishes its own.
    Drained,
    /// Failed its health checks: takes nothing new; what happens to its dialogs in
    /// progress is the farm's `on_backend_down` policy.
    Down,
}

impl BackendState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Drained => "drained",
            Self::Down => "down",
        }
    }
}

/// A port of the balancer, as the hot path needs it.
#[derive(Debug, Clone)]
pub struct PortInfo {
    pub name: String,
    pub mac: MacAddr,
    pub net: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u16,
    /// Addresses owned by the active unit of an HA pair.
    pub floating: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub tls_port: u16,
    pub weight: u32,
    pub state: BackendState,
    /// Stable slot for counters and table entries (survives reconfiguration).
    pub slot: u16,
    /// Dialogs in progress it takes at most (0: no limit).
    pub max_dialogs: u32,
    /// Its priority group (lowest first).
    pub priority: u32,
}

impl Backend {
    pub fn takes_new_work(&self) -> bool {
        self.state == BackendState::Up && self.weight > 0
    }
}

#[derive(Debug, Clone)]
pub struct Farm {
    pub id: u8,
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub udp: bool,
    pub tcp: bool,
    pub tls: bool,
    pub tls_port: u16,
    pub nat: NatMode,
    pub affinity: Affinity,
    /// SNAT address slots of the farm's pool (`SlotRegistry::snat_slot`); empty: the
    /// egress port's own address (slot `PORT_ADDRESS`).
    pub snat_pool: Vec<u16>,
    pub move_dialogs_on_down: bool,
    /// Rewrite addresses in SIP (`[[farm]] alg`).
    pub alg: bool,
    /// Relay the media of SDP through the balancer (`media`, `media_ports`).
    pub media: Option<FarmMedia>,
    pub timers: Timers,
    /// Token buckets per source by method class (`[farm.limits]`, else `[security]`).
    pub limits: Buckets,
    pub backends: Vec<Backend>,
    /// Maglev lookup table: entries index `backends`. With priority groups, the
    /// table of the first group with a backend that takes new work.
    pub table: Vec<u16>,
    /// Priority groups, lowest first, when the backends have more than one
    /// priority; empty: one group of every backend, over `table`.
    pub groups: Vec<Group>,
    /// Indexes of every backend (the members of the single group).
    pub all: Vec<u16>,
    pub when_full: WhenFull,
    /// Seconds in the Retry-After of the 503 when no backend takes a new dialog.
    pub full_retry_after: u32,
    pub passive: PassiveConfig,
    /// `[farm.failover]` (`lb::failover`).
    pub failover: FailoverConfig,
    /// How long a passive mark lasts in the dataplane: `passive.down_ms` on a farm
    /// without active checks; unbounded with them (the control plane ends it after
    /// `rise` good checks).
    pub passive_hold_ms: u64,
}

/// The backends of one priority and their own Maglev table (entries index the
/// farm's `backends`).
#[derive(Debug, Clone)]
pub struct Group {
    pub priority: u32,
    pub table: Vec<u16>,
    pub members: Vec<u16>,
}

/// Where a farm's media mappings take their legs: the pools holding these first
/// ports on the VIP (client legs) and on the backend-side address (backend legs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FarmMedia {
    pub client_port: u16,
    pub backend_port: u16,
    /// Idle seconds before a mapping ends.
    pub timeout: u16,
}

impl Farm {
    /// The SNAT address slots new client flows of this farm take ports from.
    #[inline]
    pub fn snat_slots(&self) -> &[u16] {
        if self.snat_pool.is_empty() {
            &[PORT_ADDRESS]
        } else {
            &self.snat_pool
        }
    }

    /// The priority groups in order: each one's Maglev table and members.
    #[inline]
    pub fn groups(&self) -> impl Iterator<Item = (&[u16], &[u16])> {
        let single = self
            .groups
            .is_empty()
            .then_some((self.table.as_slice(), self.all.as_slice()));
        single.into_iter().chain(
            self.groups
                .iter()
                .map(|g| (g.table.as_slice(), g.members.as_slice())),
        )
    }

    /// The backend for a key hash by consistent hashing, if any backend takes work:
    /// a pure function of the configuration and the backends' states, the same on
    /// every unit (the live load is not asked: `Ctx::place_new` does that).
    #[inline]
    pub fn pick(&self, key: u64) -> Option<usize> {
        let i = maglev::lookup(&self.table, key);
        (i != maglev::NO_BACKEND).then_some(usize::from(i))
    }
}

/// Live state the operator or the health checker set for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendOverride {
    pub state: BackendState,
    pub weight: Option<u32>,
}

/// Assigns each (farm, address, port) a stable slot so counters and table entries keep
/// meaning across reconfigurations. Slots of removed backends are not reused while the
/// process lives (MAX_BACKENDS bounds the total).
///
/// Likewise every SNAT pool address gets a slot (its share of the SNAT reverse table,
/// whose size the dataplane fixed at start: `snat_address_slots`, slot 0 being the
/// ports' own addresses), so sessions keep their address across reconfigurations.
#[derive(Debug, Clone)]
pub struct SlotRegistry {
    slots: HashMap<(String, Ipv4Addr, u16), u16>,
    /// Pool address of slot `i + 1`.
    snat: Vec<Ipv4Addr>,
    snat_address_slots: usize,
}

impl SlotRegistry {
    /// A registry for a SNAT reverse table of `snat_address_slots` address slots
    /// (`SnatTable::addresses`).
    pub fn new(snat_address_slots: usize) -> Self {
        Self {
            slots: HashMap::new(),
            snat: Vec::new(),
            snat_address_slots,
        }
    }

    /// The SNAT address slot of pool address `a`; `None` when the reverse table has
    /// no slot left for a new address.
    pub fn snat_slot(&mut self, a: Ipv4Addr) -> Option<u16> {
        if let Some(i) = self.snat.iter().position(|x| *x == a) {
            return Some(i as u16 + 1);
        }
        if self.snat.len() + 1 >= self.snat_address_slots {
            return None;
        }
        self.snat.push(a);
        Some(self.snat.len() as u16)
    }

    pub fn slot(&mut self, farm: &str, addr: Ipv4Addr, port: u16) -> Option<u16> {
        let next = self.slots.len();
        if let Some(s) = self.slots.get(&(farm.to_owned(), addr, port)) {
            return Some(*s);
        }
        if next >= MAX_BACKENDS {
            return None;
        }
        self.slots
            .insert((farm.to_owned(), addr, port), next as u16);
        Some(next as u16)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&(String, Ipv4Addr, u16), &u16)> {
        self.slots.iter()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("more than {MAX_BACKENDS} backends were configured over the process's life; restart the dataplane to renumber them")]
    TooManyBackends,
    #[error("{0} ports are configured but the dataplane has {1}")]
    PortCount(usize, usize),
    #[error("[security] deny_file: {0}")]
    Security(String),
    #[error("farm `{0}`: SNAT address {1} is new and the SNAT table has room for the {2} pool addresses it started with; restart the dataplane to add SNAT addresses")]
    SnatAddresses(String, Ipv4Addr, usize),
}

fn key(ip: Ipv4Addr, port: u16) -> u64 {
    (u64::from(u32::from(ip)) << 16) | u64::from(port)
}

/// Sorted `(key, value)` pairs searched by binary search: small, cache-friendly and
/// allocation-free to query.
#[derive(Debug, Clone, Default)]
struct Index<V: Copy> {
    entries: Vec<(u64, V)>,
}

impl<V: Copy> Index<V> {
    fn build(mut entries: Vec<(u64, V)>) -> Self {
        entries.sort_by_key(|e| e.0);
        Self { entries }
    }

    #[inline]
    fn get(&self, k: u64) -> Option<V> {
        self.entries
            .binary_search_by_key(&k, |e| e.0)
            .ok()
            .map(|i| self.entries[i].1)
    }
}

#[derive(Debug, Clone)]
pub struct Services {
    pub ports: Vec<PortInfo>,
    pub farms: Vec<Farm>,
    /// (vip, port) → farm.
    vips: Index<u8>,
    /// vip → farm (any port), for ICMP and ARP.
    vip_addrs: Index<u8>,
    /// (backend address, port) → (farm, backend index). A backend in several farms is
    /// found for the first farm; its answers are rewritten to that farm's VIP.
    backends: Index<(u8, u16)>,
    /// Slot → (farm, backend index).
    slots: Vec<Option<(u8, u16)>>,
    /// (vip, port) → (farm, is TLS) for TCP and TLS listeners.
    tcp_vips: Index<(u8, bool)>,
    /// (backend address, TCP or TLS port) → (farm, backend index, is TLS).
    tcp_backends: Index<(u8, u16, bool)>,
    /// Addresses of ours that are not VIPs: port addresses and SNAT addresses.
    own: Index<u8>,
    /// SNAT pool address → its slot, for the addresses of the current farms' pools.
    snat_slots: Index<u16>,
    /// Slot → SNAT pool address, every slot ever assigned (sessions outlive a
    /// reconfiguration); slot 0 (the port addresses) is unspecified.
    snat_addrs: Vec<Ipv4Addr>,
    /// Each port has a kernel interface for the host's own traffic.
    pub exception_path: bool,
    /// Deny/allow lists, scanner User-Agents, per-source limits.
    pub security: Policy,
    /// This unit owns the VIPs, SNAT and floating addresses (the active unit of an HA
    /// pair; always without HA).
    pub active: bool,
}

impl Services {
    /// Builds the services from the configuration, the ports' MAC addresses, and the
    /// live state of backends (absent = up at configured weight).
    pub fn build(
        cfg: &Config,
        macs: &[MacAddr],
        overrides: &HashMap<(String, Ipv4Addr, u16), BackendOverride>,
        registry: &mut SlotRegistry,
    ) -> Result<Services, BuildError> {
        if macs.len() != cfg.ports.len() {
            return Err(BuildError::PortCount(cfg.ports.len(), macs.len()));
        }
        let ports: Vec<PortInfo> = cfg
            .ports
            .iter()
            .zip(macs)
            .map(|(p, mac)| PortInfo {
                name: p.name.clone(),
                mac: *mac,
                net: p.address,
                gateway: p.gateway,
                mtu: p.mtu,
                floating: p.floating.clone(),
            })
            .collect();
        let mut farms = Vec::with_capacity(cfg.farms.len());
        for (id, f) in cfg.farms.iter().enumerate() {
            farms.push(build_farm(id as u8, f, overrides, registry)?);
        }
        let mut security = Policy::build(&cfg.security).map_err(BuildError::Security)?;
        for (farm, f) in farms.iter_mut().zip(&cfg.farms) {
            farm.limits = security.farm_buckets(&f.limits);
        }
        security.enable_bans(&farms.iter().map(|f| f.limits).collect::<Vec<_>>());
        let snat_addrs = std::iter::once(Ipv4Addr::UNSPECIFIED)
            .chain(registry.snat.iter().copied())
            .collect();
        let mut s = Self::index(
            ports,
            farms,
            snat_addrs,
            cfg.dataplane.exception_path,
            security,
        );
        s.active = !cfg.ha.enabled;
        Ok(s)
    }

    /// The same services with the HA role set.
    pub fn with_active(mut self, active: bool) -> Self {
        self.active = active;
        self
    }

    fn index(
        ports: Vec<PortInfo>,
        farms: Vec<Farm>,
        snat_addrs: Vec<Ipv4Addr>,
        exception_path: bool,
        security: Policy,
    ) -> Services {
        let mut snat_slots = Vec::new();
        let mut vips = Vec::new();
        let mut vip_addrs = Vec::new();
        let mut backends = Vec::new();
        let mut slots = vec![None; MAX_BACKENDS];
        let mut own = Vec::new();
        let mut tcp_vips = Vec::new();
        let mut tcp_backends = Vec::new();
        for f in &farms {
            if f.tcp {
                tcp_vips.push((key(f.vip, f.port), (f.id, false)));
            }
            if f.tls {
                tcp_vips.push((key(f.vip, f.tls_port), (f.id, true)));
            }
            for (i, b) in f.backends.iter().enumerate() {
                if f.tcp {
                    tcp_backends.push((key(b.addr, b.port), (f.id, i as u16, false)));
                }
                if f.tls {
                    tcp_backends.push((key(b.addr, b.tls_port), (f.id, i as u16, true)));
                }
            }
            vips.push((key(f.vip, f.port), f.id));
            if !vip_addrs
                .iter()
                .any(|(k, _)| *k == u64::from(u32::from(f.vip)))
            {
                vip_addrs.push((u64::from(u32::from(f.vip)), f.id));
            }
            for (i, b) in f.backends.iter().enumerate() {
                let k = key(b.addr, b.port);
                if !backends.iter().any(|(e, _)| *e == k) {
                    backends.push((k, (f.id, i as u16)));
                }
                slots[usize::from(b.slot)] = Some((f.id, i as u16));
            }
            for &slot in &f.snat_pool {
                let a = u64::from(u32::from(snat_addrs[usize::from(slot)]));
                own.push((a, 0u8));
                snat_slots.push((a, slot));
            }
        }
        for (i, p) in ports.iter().enumerate() {
            own.push((u64::from(u32::from(p.net.addr)), i as u8));
            for f in &p.floating {
                own.push((u64::from(u32::from(*f)), i as u8));
            }
        }
        own.dedup_by_key(|e| e.0);
        snat_slots.sort_by_key(|e| e.0);
        snat_slots.dedup_by_key(|e| e.0);
        Services {
            ports,
            farms,
            vips: Index::build(vips),
            vip_addrs: Index::build(vip_addrs),
            backends: Index::build(backends),
            slots,
            own: Index::build(own),
            snat_slots: Index::build(snat_slots),
            snat_addrs,
            tcp_vips: Index::build(tcp_vips),
            tcp_backends: Index::build(tcp_backends),
            exception_path,
            security,
            active: true,
        }
    }

    /// The farm serving `vip:port`.
    #[inline]
    pub fn farm_for(&self, vip: Ipv4Addr, port: u16) -> Option<&Farm> {
        self.vips
            .get(key(vip, port))
            .map(|f| &self.farms[usize::from(f)])
    }

    /// A farm whose VIP is `ip` (any port).
    #[inline]
    pub fn farm_with_vip(&self, ip: Ipv4Addr) -> Option<&Farm> {
        self.vip_addrs
            .get(u64::from(u32::from(ip)))
            .map(|f| &self.farms[usize::from(f)])
    }

    /// The farm and backend index of the backend at `ip:port`.
    #[inline]
    pub fn backend_at(&self, ip: Ipv4Addr, port: u16) -> Option<(&Farm, usize)> {
        self.backends
            .get(key(ip, port))
            .map(|(f, i)| (&self.farms[usize::from(f)], usize::from(i)))
    }

    /// The farm listening for TCP (or TLS) on `vip:port`, and whether it is TLS.
    #[inline]
    pub fn tcp_farm_for(&self, vip: Ipv4Addr, port: u16) -> Option<(&Farm, bool)> {
        self.tcp_vips
            .get(key(vip, port))
            .map(|(f, tls)| (&self.farms[usize::from(f)], tls))
    }

    /// The farm, backend index and TLS flag of a backend's TCP or TLS port.
    #[inline]
    pub fn tcp_backend_at(&self, ip: Ipv4Addr, port: u16) -> Option<(&Farm, usize, bool)> {
        self.tcp_backends
            .get(key(ip, port))
            .map(|(f, i, tls)| (&self.farms[usize::from(f)], usize::from(i), tls))
    }

    /// True if `ip` is the address of any backend (any port).
    #[inline]
    pub fn is_backend_addr(&self, ip: Ipv4Addr) -> bool {
        let lo = key(ip, 0);
        let i = self.backends.entries.partition_point(|e| e.0 < lo);
        self.backends
            .entries
            .get(i)
            .is_some_and(|e| e.0 >> 16 == u64::from(u32::from(ip)))
    }

    /// The farm and backend index for a backend slot found in a table entry.
    #[inline]
    pub fn backend_by_slot(&self, slot: u16) -> Option<(&Farm, usize)> {
        self.slots
            .get(usize::from(slot))
            .copied()
            .flatten()
            .map(|(f, i)| (&self.farms[usize::from(f)], usize::from(i)))
    }

    /// True if `ip` is one of the balancer's own (non-VIP) addresses.
    #[inline]
    pub fn is_own(&self, ip: Ipv4Addr) -> bool {
        self.own.get(u64::from(u32::from(ip))).is_some()
    }

    /// The port reaching `dst` and the next hop: a connected subnet first, then the
    /// first port with a gateway.
    #[inline]
    pub fn route(&self, dst: Ipv4Addr) -> Option<(u8, Ipv4Addr)> {
        if let Some(i) = self.ports.iter().position(|p| p.net.contains(dst)) {
            return Some((i as u8, dst));
        }
        self.ports
            .iter()
            .enumerate()
            .find_map(|(i, p)| p.gateway.map(|g| (i as u8, g)))
    }

    /// The source address of SNAT address slot `slot` on `port`: a pool address, or
    /// for slot `PORT_ADDRESS` the port's own.
    #[inline]
    pub fn snat_source(&self, slot: u16, port: u8) -> Ipv4Addr {
        match self.snat_addrs.get(usize::from(slot)) {
            Some(a) if slot != PORT_ADDRESS => *a,
            _ => self.ports[usize::from(port)].net.addr,
        }
    }

    /// The SNAT address slot of `ip` if it is in a farm's pool.
    #[inline]
    pub fn snat_slot(&self, ip: Ipv4Addr) -> Option<u16> {
        self.snat_slots.get(u64::from(u32::from(ip)))
    }

    /// Every address ARP should answer for on `port`: its own address, SNAT addresses
    /// and VIPs inside its subnet (VIPs are answered on every port for simplicity when
    /// no subnet holds them).
    pub fn answers_arp(&self, port: u8, ip: Ipv4Addr) -> bool {
        let p = &self.ports[usize::from(port)];
        if p.net.addr == ip {
            return true;
        }
        if !self.active {
            // The standby of an HA pair owns only its own port addresses.
            return false;
        }
        if p.floating.contains(&ip) {
            return true;
        }
        let ours = self.farm_with_vip(ip).is_some() || self.snat_slot(ip).is_some();
        ours && (p.net.contains(ip) || !self.ports.iter().any(|q| q.net.contains(ip)))
    }

    /// The addresses to announce with gratuitous ARP on `port`.
    pub fn announced(&self, port: u8) -> Vec<Ipv4Addr> {
        let p = &self.ports[usize::from(port)];
        let mut v = vec![p.net.addr];
        if self.active {
            v.extend(p.floating.iter().copied());
        }
        let vips = self.farms.iter().map(|f| f.vip);
        let pools = self
            .snat_slots
            .entries
            .iter()
            .map(|e| Ipv4Addr::from(e.0 as u32));
        for a in vips.chain(pools) {
            if self.answers_arp(port, a) && !v.contains(&a) {
                v.push(a);
            }
        }
        v
    }

    /// Next hops the dataplane keeps resolved: every backend, every gateway.
    pub fn next_hops(&self) -> Vec<(u8, Ipv4Addr)> {
        let mut v: Vec<(u8, Ipv4Addr)> = Vec::new();
        for f in &self.farms {
            for b in &f.backends {
                if let Some(r) = self.route(b.addr) {
                    if !v.contains(&r) {
                        v.push(r);
                    }
                }
            }
        }
        for (i, p) in self.ports.iter().enumerate() {
            if let Some(g) = p.gateway {
                if !v.contains(&(i as u8, g)) {
                    v.push((i as u8, g));
                }
            }
        }
        v
    }
}

fn build_farm(
    id: u8,
    f: &FarmConfig,
    overrides: &HashMap<(String, Ipv4Addr, u16), BackendOverride>,
    registry: &mut SlotRegistry,
) -> Result<Farm, BuildError> {
    let mut backends = Vec::with_capacity(f.backends.len());
    for b in &f.backends {
        let o = overrides.get(&(f.name.clone(), b.address, b.port));
        backends.push(Backend {
            addr: b.address,
            port: b.port,
            tls_port: b.tls_port,
            weight: o.and_then(|o| o.weight).unwrap_or(b.weight),
            state: o.map(|o| o.state).unwrap_or(BackendState::Up),
            slot: registry
                .slot(&f.name, b.address, b.port)
                .ok_or(BuildError::TooManyBackends)?,
            max_dialogs: b.max_dialogs,
            priority: b.priority,
        });
    }
    let groups = build_groups(&backends);
    let table = match groups.iter().find(|g| g.table[0] != maglev::NO_BACKEND) {
        Some(g) => g.table.clone(),
        None => build_table(&backends),
    };
    let mut snat_pool = Vec::new();
    for a in f.snat_pool() {
        let slot = registry.snat_slot(a).ok_or_else(|| {
            BuildError::SnatAddresses(
                f.name.clone(),
                a,
                registry.snat_address_slots.saturating_sub(1),
            )
        })?;
        snat_pool.push(slot);
    }
    Ok(Farm {
        id,
        name: f.name.clone(),
        vip: f.vip,
        port: f.port,
        udp: f.protocols.contains(&Protocol::Udp),
        tcp: f.protocols.contains(&Protocol::Tcp),
        tls: f.protocols.contains(&Protocol::Tls),
        tls_port: f.tls_port,
        nat: f.nat,
        affinity: f.affinity,
        snat_pool,
        move_dialogs_on_down: f.on_backend_down == crate::config::DownPolicy::Move,
        alg: f.alg,
        media: f.media_ports().map(|m| FarmMedia {
            client_port: m.client.first,
            backend_port: m.backend.first,
            timeout: f.media_timeout,
        }),
        timers: f.timers.clone(),
        limits: Default::default(),
        all: (0..backends.len() as u16).collect(),
        backends,
        table,
        groups,
        when_full: f.when_full,
        full_retry_after: f.full_retry_after,
        passive: f.passive.clone(),
        failover: f.failover.clone(),
        passive_hold_ms: if f.health.check == crate::health::CheckKind::None {
            f.passive.down_ms
        } else {
            u64::MAX
        },
    })
}

/// One Maglev table per priority when the backends have several (none when they
/// share one: the farm's table serves). A group's table holds only its members: the
/// others compete with weight 0, so its keys spread as if they were the farm.
pub fn build_groups(backends: &[Backend]) -> Vec<Group> {
    let mut prios: Vec<u32> = backends.iter().map(|b| b.priority).collect();
    prios.sort_unstable();
    prios.dedup();
    if prios.len() < 2 {
        return Vec::new();
    }
    prios
        .into_iter()
        .map(|p| {
            let members: Vec<u16> = (0..backends.len() as u16)
                .filter(|&i| backends[usize::from(i)].priority == p)
                .collect();
            let view: Vec<Backend> = backends
                .iter()
                .map(|b| Backend {
                    weight: if b.priority == p { b.weight } else { 0 },
                    ..b.clone()
                })
                .collect();
            Group {
                priority: p,
                table: build_table(&view),
                members,
            }
        })
        .collect()
}

/// The Maglev table for these backends: every configured backend competes for slots by
/// weight, then the slots of those that take no new work go to the rest, so a backend
/// going down or being drained moves only its own keys.
pub fn build_table(backends: &[Backend]) -> Vec<u16> {
    let ids: Vec<String> = backends
        .iter()
        .map(|b| format!("{}:{}", b.addr, b.port))
        .collect();
    let input: Vec<MaglevBackend<'_>> = backends
        .iter()
        .zip(&ids)
        .map(|(b, id)| MaglevBackend {
            id: id.as_bytes(),
            weight: b.weight,
            available: b.takes_new_work(),
        })
        .collect();
    maglev::build(&input, maglev::table_size_for(backends.len()))
}

/// The hash of a client's source address, for `source` affinity.
#[inline]
pub fn source_key(ip: Ipv4Addr) -> u64 {
    hash64(&u32::from(ip).to_be_bytes())
}
