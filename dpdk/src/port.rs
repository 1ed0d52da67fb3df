//! Ethernet ports: configuration, start/stop, bursts, statistics.

use crate::mbuf::{Burst, Mbuf};
use crate::mempool::Mempool;
use crate::{DpdkError, Result};
use siplb_core::wire::MacAddr;
use std::ffi::{CStr, CString};

const RSS_IPV4: u64 = 1 << 2;
const RSS_FRAG_IPV4: u64 = 1 << 3;
const RSS_NONFRAG_IPV4_TCP: u64 = 1 << 4;
const RSS_NONFRAG_IPV4_UDP: u64 = 1 << 5;

/// A configured port. Just an id: each queue must be used by one thread at a time,
/// which the worker layout guarantees (worker `i` owns queue `i`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    id: u16,
}

/// Port-level counters from the driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

impl Port {
    /// Refers to an already configured port (secondary processes, tools).
    pub fn from_id(id: u16) -> Port {
        Port { id }
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    /// Configures `queues` RX and TX queues with `desc` descriptors each, receiving into
    /// `pool`, with RSS over IPv4 addresses and UDP/TCP ports where the driver supports
    /// it, then sets the MTU (best effort: virtual PMDs may refuse) and starts the port
    /// in promiscuous mode.
    pub fn start(id: u16, queues: u16, desc: u16, pool: Mempool, mtu: u16) -> Result<Port> {
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: `info` is a valid out-parameter for the call.
        let rc = unsafe { dpdk_sys::rte_eth_dev_info_get(id, &mut info) };
        if rc != 0 {
            return Err(DpdkError::new(
                format!("rte_eth_dev_info_get(port {id})"),
                rc,
            ));
        }
        if queues > info.max_rx_queues || queues > info.max_tx_queues {
            return Err(DpdkError {
                what: format!("port {id} ({})", port_name(id)),
                code: libc::EINVAL,
                reason: format!(
                    "{queues} queues wanted, the driver offers {} RX / {} TX (for af_packet add qpairs={queues} to the --vdev)",
                    info.max_rx_queues, info.max_tx_queues
                ),
            });
        }
        let mut conf = dpdk_sys::rte_eth_conf::default();
        let rss = info.flow_type_rss_offloads
            & (RSS_IPV4 | RSS_FRAG_IPV4 | RSS_NONFRAG_IPV4_UDP | RSS_NONFRAG_IPV4_TCP);
        if queues > 1 && rss != 0 {
            conf.rxmode.mq_mode = dpdk_sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss;
        }
        // SAFETY: conf is a valid configuration struct for the duration of the call.
        let rc = unsafe { dpdk_sys::rte_eth_dev_configure(id, queues, queues, &conf) };
        if rc != 0 {
            return Err(DpdkError::new(
                format!("rte_eth_dev_configure(port {id})"),
                rc,
            ));
        }
        let mut nrx = desc;
        let mut ntx = desc;
        // SAFETY: valid out-parameters.
        unsafe { dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nrx, &mut ntx) };
        // SAFETY: plain query.
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for q in 0..queues {
            // SAFETY: queue index < configured count; NULL conf = driver defaults; pool
            // outlives the port (pools are never freed).
            let rc = unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    id,
                    q,
                    nrx,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if rc != 0 {
                return Err(DpdkError::new(
                    format!("rte_eth_rx_queue_setup(port {id}, queue {q})"),
                    rc,
                ));
            }
            // SAFETY: as above.
            let rc =
                unsafe { dpdk_sys::rte_eth_tx_queue_setup(id, q, ntx, socket, std::ptr::null()) };
            if rc != 0 {
                return Err(DpdkError::new(
                    format!("rte_eth_tx_queue_setup(port {id}, queue {q})"),
                    rc,
                ));
            }
        }
        // SAFETY: plain configuration calls on a configured port; failures are
        // tolerated (virtual devices may not support MTU changes).
        unsafe {
            dpdk_sys::rte_eth_dev_set_mtu(id, mtu);
        }
        // SAFETY: queues are set up.
        let rc = unsafe { dpdk_sys::rte_eth_dev_start(id) };
        if rc != 0 {
            return Err(DpdkError::new(format!("rte_eth_dev_start(port {id})"), rc));
        }
        // SAFETY: started port.
        unsafe { dpdk_sys::rte_eth_promiscuous_enable(id) };
        Ok(Port { id })
    }

    /// Creates a TAP device (a kernel interface named `iface`, DPDK's `net_tap` PMD)
    /// and returns its port, not yet configured.
    pub fn create_tap(vdev_name: &str, iface: &str) -> Result<Port> {
        let name = CString::new(vdev_name).expect("vdev name without NUL");
        let args = CString::new(format!("iface={iface}")).map_err(|_| DpdkError {
            what: format!("TAP interface `{iface}`"),
            code: libc::EINVAL,
            reason: "the name contains a NUL byte".into(),
        })?;
        // SAFETY: valid NUL-terminated strings; DPDK copies them.
        let rc = unsafe { dpdk_sys::rte_vdev_init(name.as_ptr(), args.as_ptr()) };
        if rc != 0 {
            return Err(DpdkError::new(
                format!("creating TAP interface `{iface}` (rte_vdev_init {vdev_name}; is /dev/net/tun there?)"),
                rc,
            ));
        }
        let mut id = 0u16;
        // SAFETY: valid name and out-parameter.
        let rc = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(name.as_ptr(), &mut id) };
        if rc != 0 {
            return Err(DpdkError::new(
                format!("finding the port of {vdev_name}"),
                rc,
            ));
        }
        Ok(Port { id })
    }

    /// The kernel interface behind an af_packet port (whose kernel side also sees every
    /// frame the port receives), `None` for other drivers.
    pub fn af_packet_iface(&self) -> Option<String> {
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: valid out-parameter.
        if unsafe { dpdk_sys::rte_eth_dev_info_get(self.id, &mut info) } != 0
            || info.driver_name.is_null()
        {
            return None;
        }
        // SAFETY: DPDK's static, NUL-terminated driver name.
        let driver = unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy();
        if driver != "net_af_packet" || info.if_index == 0 {
            return None;
        }
        let mut name = [0 as std::os::raw::c_char; libc::IF_NAMESIZE];
        // SAFETY: the buffer has IF_NAMESIZE bytes as if_indextoname requires.
        let p = unsafe { libc::if_indextoname(info.if_index, name.as_mut_ptr()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: if_indextoname wrote a NUL-terminated name.
        Some(
            unsafe { CStr::from_ptr(name.as_ptr()) }
                .to_string_lossy()
                .into_owned(),
        )
    }

    /// Sets the port's MAC address.
    pub fn set_mac(&self, mac: MacAddr) -> Result<()> {
        let mut a = dpdk_sys::rte_ether_addr { addr_bytes: mac.0 };
        // SAFETY: valid address struct for the duration of the call.
        let rc = unsafe { dpdk_sys::rte_eth_dev_default_mac_addr_set(self.id, &mut a) };
        if rc != 0 {
            return Err(DpdkError::new(
                format!("setting the MAC of port {}", self.id),
                rc,
            ));
        }
        Ok(())
    }

    pub fn mac(&self) -> MacAddr {
        let mut a = dpdk_sys::rte_ether_addr::default();
        // SAFETY: valid out-parameter.
        unsafe { dpdk_sys::rte_eth_macaddr_get(self.id, &mut a) };
        MacAddr(a.addr_bytes)
    }

    pub fn name(&self) -> String {
        port_name(self.id)
    }

    /// Receives up to N packets from `queue` into an empty `burst`.
    #[inline(always)]
    pub fn rx_burst<const N: usize>(&self, queue: u16, burst: &mut Burst<N>) -> usize {
        // SAFETY: the burst's slots are N writable pointer slots; DPDK writes at most N
        // valid mbuf pointers and returns how many, ownership passing to the burst.
        let n =
            unsafe { dpdk_sys::shim_rte_eth_rx_burst(self.id, queue, burst.raw_slots(), N as u16) };
        burst.set_len(usize::from(n));
        usize::from(n)
    }

    /// Transmits `pkts` on `queue`; returns how many the driver took. Ownership of the
    /// first `n` passes to the driver; the caller still owns the rest.
    #[inline(always)]
    pub(crate) fn tx_burst(&self, queue: u16, pkts: &mut [*mut dpdk_sys::rte_mbuf]) -> usize {
        // SAFETY: pkts holds valid owned mbuf pointers; the driver takes the first n.
        usize::from(unsafe {
            dpdk_sys::shim_rte_eth_tx_burst(self.id, queue, pkts.as_mut_ptr(), pkts.len() as u16)
        })
    }

    pub fn stats(&self) -> PortStats {
        let mut s = dpdk_sys::rte_eth_stats::default();
        // SAFETY: valid out-parameter.
        unsafe { dpdk_sys::rte_eth_stats_get(self.id, &mut s) };
        PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        }
    }

    /// Whether the link is up, without waiting (a vhost-user port is up once its
    /// virtio-user peer has connected and started its queues).
    pub fn link_up(&self) -> bool {
        let mut l = dpdk_sys::rte_eth_link::default();
        // SAFETY: valid out-parameter; the nowait variant does not block.
        let rc = unsafe { dpdk_sys::rte_eth_link_get_nowait(self.id, &mut l) };
        rc == 0 && l.link_status() != 0
    }

    /// Stops and closes the port (releases the kernel socket of af_packet, the TAP...).
    pub fn stop(&self) {
        // SAFETY: no worker uses the port any more (the caller joined them).
        unsafe {
            dpdk_sys::rte_eth_dev_stop(self.id);
            dpdk_sys::rte_eth_dev_close(self.id);
        }
    }
}

fn port_name(id: u16) -> String {
    let mut buf = [0 as std::os::raw::c_char; 64];
    // SAFETY: buf is large enough for RTE_ETH_NAME_MAX_LEN (64) with NUL.
    let rc = unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) };
    if rc != 0 {
        return format!("port{id}");
    }
    // SAFETY: DPDK wrote a NUL-terminated string into buf.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Per-port packets waiting to be sent by one worker, flushed when full and after
/// every poll.
pub struct TxBuffer {
    pkts: [*mut dpdk_sys::rte_mbuf; 32],
    len: usize,
}

impl Default for TxBuffer {
    fn default() -> Self {
        Self {
            pkts: [std::ptr::null_mut(); 32],
            len: 0,
        }
    }
}

// SAFETY: holds owned mbufs only; moved with the worker that owns it.
unsafe impl Send for TxBuffer {}

/// What a flush did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flushed {
    pub sent: usize,
    pub bytes: usize,
    pub dropped: usize,
}

impl TxBuffer {
    pub fn is_full(&self) -> bool {
        self.len == self.pkts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `m`; flush first when full.
    #[inline(always)]
    pub fn push(&mut self, m: Mbuf) {
        debug_assert!(!self.is_full());
        self.pkts[self.len] = m.into_raw().as_ptr();
        self.len += 1;
    }

    /// Sends what is queued; what the driver refuses is freed and counted.
    #[inline]
    pub fn flush(&mut self, port: &Port, queue: u16) -> Flushed {
        if self.len == 0 {
            return Flushed::default();
        }
        let mut bytes = 0;
        for p in &self.pkts[..self.len] {
            // SAFETY: every queued pointer is a valid owned mbuf.
            bytes += unsafe { (**p).pkt_len } as usize;
        }
        let sent = port.tx_burst(queue, &mut self.pkts[..self.len]);
        let mut dropped_bytes = 0;
        for p in &self.pkts[sent..self.len] {
            // SAFETY: the driver did not take these; we still own them.
            let m = unsafe { Mbuf::from_raw(std::ptr::NonNull::new_unchecked(*p)) };
            dropped_bytes += m.pkt_len();
            drop(m);
        }
        let f = Flushed {
            sent,
            bytes: bytes - dropped_bytes,
            dropped: self.len - sent,
        };
        self.len = 0;
        f
    }
}

impl Drop for TxBuffer {
    fn drop(&mut self) {
        for p in &self.pkts[..self.len] {
            // SAFETY: queued pointers are owned mbufs not handed to the driver.
            drop(unsafe { Mbuf::from_raw(std::ptr::NonNull::new_unchecked(*p)) });
        }
    }
}
