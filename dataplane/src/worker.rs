//! The worker loop: one per RX queue, pinned to its lcore.
//!
//! rx burst → prefetch → `lb::process` → per-port TX buffer → tx burst. Reading it
//! top to bottom is the whole hot path.

use crate::rcu::Published;
use dpdk::mbuf::{Burst, Mbuf};
use dpdk::mempool::Mempool;
use dpdk::port::{Flushed, Port, TxBuffer};
use dpdk::ring::Ring;
use runtime::clock::Clock;
use siplb_core::lb::counters::{DropReason, WorkerCounters};
use siplb_core::lb::services::Services;
use siplb_core::lb::{self, Tables, Verdict, WorkerCtx};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub const BURST: usize = 32;
/// How far ahead of the packet being processed its successors are prefetched.
const PREFETCH_AHEAD: usize = 3;
/// How far ahead the media leg of a packet is prefetched (its data was prefetched
/// `PREFETCH_AHEAD - LEG_AHEAD` packets earlier).
const LEG_AHEAD: usize = 1;
/// The kernel interfaces are polled once every this many loops: reading a TAP is a
/// system call, and the host's own traffic is light.
const KERNEL_POLL_EVERY: u32 = 16;

pub struct Worker {
    /// Index of this worker = its RX/TX queue on every port.
    pub index: u16,
    pub ports: Vec<Port>,
    /// The kernel (TAP) interface of each port, when the exception path is on.
    pub kernel: Vec<Port>,
    pub pool: Mempool,
    pub services: &'static Published<Services>,
    pub tables: &'static Tables<'static>,
    pub counters: &'static WorkerCounters,
    /// Frames the main lcore wants sent (ARP), with their port in `mbuf.port`.
    pub inject: Option<Ring>,
    pub clock: Clock,
    pub idle_sleep: Duration,
    pub stop: &'static AtomicBool,
    pub ctx: WorkerCtx<'static>,
    /// Room to build one fragment (the largest port MTU plus the Ethernet header).
    pub scratch: Vec<u8>,
    /// Where a held request is rebuilt to be sent again (`RESEND_BUF` bytes).
    pub resend_buf: Vec<u8>,
}

/// A held request (at most `failover::HELD_BYTES`) and what the ALG may add to it.
pub const RESEND_BUF: usize = siplb_core::lb::failover::HELD_BYTES + 4096;

/// The largest frame `port` may send: its MTU plus the Ethernet header.
#[inline(always)]
fn egress_limit(svc: &Services, port: u8) -> usize {
    usize::from(svc.ports[usize::from(port)].mtu) + 14
}

impl Worker {
    pub fn run(mut self) -> i32 {
        let queue = self.index;
        let mut rx = Burst::<BURST>::default();
        let mut tx: Vec<TxBuffer> = (0..self.ports.len() + self.kernel.len())
            .map(|_| TxBuffer::default())
            .collect();
        let mut loops = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            let svc = self.services.read(usize::from(queue));
            let now = self.clock.now();
            self.ctx.now_us = self.clock.micros() as u32;
            self.ctx.now_ms = self.clock.millis();
            let mut received = 0;
            for pi in 0..self.ports.len() {
                let n = self.ports[pi].rx_burst(queue, &mut rx);
                received += n;
                for i in 0..n.min(PREFETCH_AHEAD) {
                    rx.prefetch(i);
                }
                for i in 0..n {
                    rx.prefetch(i + PREFETCH_AHEAD);
                    // Media legs are random lines of a large table: the leg of a packet
                    // whose data arrived (prefetched earlier) is fetched while this
                    // one is handled.
                    if let Some(m) = rx.get(i + LEG_AHEAD) {
                        if let Some(leg) = lb::media_leg(self.tables, m.data()) {
                            dpdk::prefetch(leg);
                        }
                    }
                    if let Some(m) = rx.take(i) {
                        self.handle(svc, m, pi as u8, now, &mut tx);
                    }
                }
                rx.clear();
            }
            loops = loops.wrapping_add(1);
            if loops.is_multiple_of(KERNEL_POLL_EVERY) {
                received += self.forward_kernel_traffic(&mut rx, &mut tx);
            }
            lb::failover_poll(svc, self.tables, &mut self.ctx, now);
            self.send_held_again(svc, now, &mut tx);
            self.drain_injected(&mut rx, &mut tx);
            for (i, b) in tx.iter_mut().enumerate() {
                let f = b.flush(&self.port_at(i), queue);
                self.account(f);
            }
            self.counters.polls.inc();
            if received > 0 {
                self.counters.busy_polls.inc();
            } else if !self.idle_sleep.is_zero() {
                std::thread::sleep(self.idle_sleep);
            }
        }
        self.services.offline(usize::from(queue));
        0
    }

    /// The port behind TX buffer `i`: physical ports first, then their kernel
    /// interfaces in the same order.
    #[inline(always)]
    fn port_at(&self, i: usize) -> Port {
        match self.ports.get(i) {
            Some(p) => *p,
            None => self.kernel[i - self.ports.len()],
        }
    }

    /// What the kernel sends leaves by the port its interface stands for, unchanged.
    fn forward_kernel_traffic(&mut self, rx: &mut Burst<BURST>, tx: &mut [TxBuffer]) -> usize {
        let mut total = 0;
        for k in 0..self.kernel.len() {
            let n = self.kernel[k].rx_burst(self.index, rx);
            total += n;
            for i in 0..n {
                if let Some(m) = rx.take(i) {
                    self.counters.from_kernel.inc();
                    self.send(tx, k, m);
                }
            }
            rx.clear();
        }
        total
    }

    #[inline(always)]
    fn handle(&mut self, svc: &Services, mut m: Mbuf, in_port: u8, now: u32, tx: &mut [TxBuffer]) {
        let c = self.counters;
        c.rx_packets.inc();
        c.rx_bytes.add(m.pkt_len() as u64);
        if m.segments() != 1 {
            c.dropped(DropReason::MultiSegment);
            return;
        }
        // The stages see the mbuf's tailroom too: the SIP ALG may lengthen a message.
        let len = m.data_len();
        m.set_len(m.capacity());
        let v = lb::process_in(
            svc,
            self.tables,
            &mut self.ctx,
            m.data_mut(),
            len,
            in_port,
            now,
        );
        m.set_len(self.ctx.out_len);
        match v {
            Verdict::Forward(p) => {
                if m.data_len() > egress_limit(svc, p) {
                    self.send_copies(svc, tx, p, m.data());
                } else {
                    self.send(tx, usize::from(p), m);
                }
            }
            Verdict::ToKernel => self.to_kernel(tx, in_port, m),
            Verdict::Drop(r) => c.dropped_at(r, self.ctx.farm),
            Verdict::Consumed => {}
            Verdict::Reassembled => {
                drop(m);
                // Process the whole datagram out of the reassembler's buffer (moved out
                // and back: no allocation), then send it as fragments again.
                let (mut buf, len) = self.ctx.reassembly.take_frame();
                let v =
                    lb::process_in(svc, self.tables, &mut self.ctx, &mut buf, len, in_port, now);
                let out = self.ctx.out_len;
                match v {
                    Verdict::Forward(p) => self.send_copies(svc, tx, p, &buf[..out]),
                    Verdict::ToKernel => {
                        if let Some(m) = self.copy_into_mbuf(&buf[..out]) {
                            self.to_kernel(tx, in_port, m);
                        }
                    }
                    Verdict::Drop(r) => c.dropped_at(r, self.ctx.farm),
                    Verdict::Consumed | Verdict::Reassembled => {}
                }
                self.ctx.reassembly.put_back(buf);
            }
        }
        if !self.ctx.arp_requests.is_empty() {
            self.send_arp_requests(svc, tx);
        }
        if lb::resends_pending(&self.ctx) {
            self.send_held_again(svc, now, tx);
        }
    }

    /// Sends the held requests whose backend failed to their next backend
    /// (`lb::failover`): each is rebuilt in `resend_buf` and sent in new mbufs.
    fn send_held_again(&mut self, svc: &Services, now: u32, tx: &mut [TxBuffer]) {
        let mut buf = std::mem::take(&mut self.resend_buf);
        while let Some((v, _)) = lb::process_resend(svc, self.tables, &mut self.ctx, &mut buf, now)
        {
            let out = self.ctx.out_len;
            match v {
                Verdict::Forward(p) => self.send_copies(svc, tx, p, &buf[..out]),
                Verdict::Drop(r) => self.counters.dropped_at(r, self.ctx.farm),
                Verdict::ToKernel | Verdict::Consumed | Verdict::Reassembled => {}
            }
        }
        self.resend_buf = buf;
    }

    /// Queues `m` on TX buffer `i` (see `port_at`).
    #[inline(always)]
    fn send(&self, tx: &mut [TxBuffer], i: usize, m: Mbuf) {
        if tx[i].is_full() {
            let f = tx[i].flush(&self.port_at(i), self.index);
            self.account(f);
        }
        tx[i].push(m);
    }

    /// Hands `m`, which arrived on `port`, to that port's kernel interface.
    fn to_kernel(&self, tx: &mut [TxBuffer], port: u8, m: Mbuf) {
        if usize::from(port) >= self.kernel.len() {
            self.counters.dropped(DropReason::NotBalanced);
            return;
        }
        self.counters.to_kernel.inc();
        self.send(tx, self.ports.len() + usize::from(port), m);
    }

    /// Sends `frame` on `port` in new mbufs: as it is if it fits the port's MTU, else cut
    /// into fragments. The copy is the price of the fragment path only.
    fn send_copies(&mut self, svc: &Services, tx: &mut [TxBuffer], port: u8, frame: &[u8]) {
        let limit = egress_limit(svc, port);
        if frame.len() <= limit {
            if let Some(m) = self.copy_into_mbuf(frame) {
                self.send(tx, usize::from(port), m);
            }
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut out: [Option<Mbuf>; 48] = std::array::from_fn(|_| None);
        let mut n = 0;
        let r = siplb_core::lb::reassembly::fragment(frame, limit - 14, &mut scratch, |f| {
            if n < out.len() {
                out[n] = self.copy_into_mbuf(f);
                n += 1;
            }
        });
        self.scratch = scratch;
        match r {
            Ok(_) => {
                for m in out.iter_mut().take(n).filter_map(Option::take) {
                    self.counters.fragments_out.inc();
                    self.send(tx, usize::from(port), m);
                }
            }
            Err(reason) => self.counters.dropped(reason),
        }
    }

    fn copy_into_mbuf(&self, frame: &[u8]) -> Option<Mbuf> {
        let Some(mut m) = self.pool.alloc() else {
            self.counters.dropped(DropReason::NoMbuf);
            return None;
        };
        if !m.set_len(frame.len()) {
            self.counters.dropped(DropReason::MtuExceeded);
            return None;
        }
        m.data_mut().copy_from_slice(frame);
        Some(m)
    }

    fn account(&self, f: Flushed) {
        let c = self.counters;
        if f.sent > 0 {
            c.tx_packets.add(f.sent as u64);
            c.tx_bytes.add(f.bytes as u64);
        }
        if f.dropped > 0 {
            c.drops[DropReason::TxFull as usize].add(f.dropped as u64);
        }
    }

    fn send_arp_requests(&mut self, svc: &Services, tx: &mut [TxBuffer]) {
        let mut reqs = std::mem::take(&mut self.ctx.arp_requests);
        for (port, ip) in reqs.drain() {
            let Some(mut m) = self.pool.alloc() else {
                self.counters.dropped(DropReason::NoMbuf);
                continue;
            };
            if !m.set_len(60) {
                continue;
            }
            let n = lb::write_arp_request(svc, port, ip, m.data_mut());
            m.set_len(n);
            self.counters.arp_requests.inc();
            self.send(tx, usize::from(port), m);
        }
    }

    fn drain_injected(&self, burst: &mut Burst<BURST>, tx: &mut [TxBuffer]) {
        let Some(ring) = self.inject else { return };
        let n = ring.dequeue_burst(burst);
        for i in 0..n {
            if let Some(m) = burst.take(i) {
                let port = usize::from(m.port());
                if port < self.ports.len() {
                    self.send(tx, port, m);
                }
            }
        }
        burst.clear();
    }
}
