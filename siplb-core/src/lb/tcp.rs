//! SIP over TCP and TLS: balanced per connection. The first segment of a connection
//! (normally the SYN) picks the backend, and the connection table keeps every later
//! segment, both ways, on it; the byte stream is never read, so TLS passes through
//! untouched. `source`, `registrar` and `callee` affinity place by the client's address alone, so
//! a phone that reconnects (from a new port) meets the same registrar; `call-id`
//! affinity places by address and port. Because placement is a pure function of the
//! client, a segment of a connection the table does not know (after a restart, or on
//! another unit) lands where the connection began.
//!
//! On farms with `alg` on, the SIP messages of TCP (not TLS) segments are rewritten as
//! on UDP, with the same rules, and every segment's sequence numbers are corrected
//! for the bytes the rewrites added or removed (`alg_tcp.rs`).

use super::alg_rules::{rules_to_backend, rules_to_client};
use super::alg_tcp::{refill_tcp_checksum, TcpAlgConn};
use super::context::{Ctx, Verdict};
use super::counters::DropReason;
use super::media::MediaPlan;
use super::nat::rewrite_l4;
use super::packet::Flow;
use super::services::{source_key, BackendState, Farm};
use super::snat::SnatSession;
use crate::config::Affinity;
use crate::hash::hash64;
use crate::table::connection::{ConnState, Connection};
use crate::table::media::Side;
use crate::table::tcp_seq::{FROM_BACKEND, FROM_CLIENT};
use crate::wire::tcp;
use std::net::Ipv4Addr;

/// The connection's key: client address and port, VIP and port.
fn conn_key(client: Ipv4Addr, cport: u16, vip: Ipv4Addr, vport: u16) -> u64 {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&u32::from(client).to_be_bytes());
    b[4..6].copy_from_slice(&cport.to_be_bytes());
    b[6..10].copy_from_slice(&u32::from(vip).to_be_bytes());
    b[10..12].copy_from_slice(&vport.to_be_bytes());
    hash64(&b)
}

/// The state after a segment with `flags`.
fn next_state(old: Option<ConnState>, flags: u8) -> ConnState {
    if flags & (tcp::FIN | tcp::RST) != 0 {
        ConnState::Closing
    } else if flags & tcp::SYN != 0 && flags & tcp::ACK == 0 {
        ConnState::Opening
    } else {
        match old {
            Some(ConnState::Closing) => ConnState::Closing,
            _ => ConnState::Established,
        }
    }
}

fn placement_key(farm: &Farm, client: Ipv4Addr, cport: u16) -> u64 {
    match farm.affinity {
        Affinity::Source | Affinity::Registrar | Affinity::Callee => source_key(client),
        Affinity::CallId => {
            let mut b = [0u8; 6];
            b[..4].copy_from_slice(&u32::from(client).to_be_bytes());
            b[4..].copy_from_slice(&cport.to_be_bytes());
            hash64(&b)
        }
    }
}

impl Ctx<'_, '_, '_> {
    /// Records the connection's state; counts new connections and a full table.
    fn record_connection(&self, key: u64, c: Connection, farm: &Farm) {
        match self.t.connections.record(key, self.now, c, &farm.timers) {
            Ok(true) => self.w.counters.tcp_connections_created.inc(),
            Ok(false) => {}
            Err(_) => self.w.counters.connection_table_full.inc(),
        }
    }

    /// A client's segment to a VIP's TCP or TLS port.
    pub(super) fn tcp_client_to_vip(
        &mut self,
        frame: &mut [u8],
        flow: &Flow,
        farm: &Farm,
        tls: bool,
    ) -> Verdict {
        let (t, now) = (self.t, self.now);
        let (client, vip) = (flow.src, flow.dst);
        let (cport, vport) = (flow.sport(), flow.dport());
        let fl = flow.tcp_flags;
        let key = conn_key(client, cport, vip, vport);
        let known = t.connections.get(key, now);
        // Only an admitted SYN creates a connection entry (`security`).
        let record = match self.admit_tcp_segment(flow, farm, known.map(|c| c.state)) {
            Ok(r) => r,
            Err(r) => return Verdict::Drop(r),
        };
        let kept = known
            .and_then(|c| self.slot_in_farm(farm, c.backend))
            .filter(|i| {
                farm.backends[*i].state != BackendState::Down || !farm.move_dialogs_on_down
            });
        let Some(idx) = kept.or_else(|| farm.pick(placement_key(farm, client, cport))) else {
            return Verdict::Drop(DropReason::NoBackend);
        };
        let b = &farm.backends[idx];
        let conn = Connection {
            backend: b.slot,
            farm: farm.id,
            state: next_state(known.map(|c| c.state), fl),
        };
        if record {
            self.record_connection(key, conn, farm);
            self.note_connection_state(client, known.map(|c| c.state), conn.state);
        }
        let Some((out_port, _)) = self.svc.route(b.addr) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let lifetime = conn.state.lifetime(&farm.timers);
        let new_src = match self.nat_source(farm, out_port, (client, cport), lifetime) {
            Ok(src) => src,
            Err(r) => return Verdict::Drop(r),
        };
        let bport = if tls { b.tls_port } else { b.port };
        let rewritten = if farm.alg && !tls {
            let deadline = now.saturating_add(lifetime);
            if fl & tcp::SYN != 0 && fl & tcp::ACK == 0 {
                // A new connection (or a 4-tuple used again) starts with no correction.
                // A full table is counted when a rewrite needs the slot.
                let _ = t.tcp_seq.open(key, now, deadline);
            }
            let conn = TcpAlgConn {
                key,
                dir: FROM_CLIENT,
                deadline,
                toward: b.addr,
                media: MediaPlan {
                    farm,
                    from: Side::Client,
                    client: (client, cport),
                    backend_side: new_src.map_or(farm.vip, |(a, _)| a),
                },
            };
            let media = farm.media.is_some();
            let svc = self.svc;
            let rules = || rules_to_backend(svc, farm, idx, (client, cport), new_src, media);
            match self.tcp_alg(frame, flow, &conn, rules) {
                Ok(r) => r,
                Err(r) => return Verdict::Drop(r),
            }
        } else {
            false
        };
        if let Err(r) = rewrite_l4(frame, flow, new_src, Some((b.addr, bport))) {
            return Verdict::Drop(r);
        }
        if rewritten {
            refill_tcp_checksum(frame, flow, self.len);
        }
        self.count_to(farm, idx, self.len);
        self.next_hop(frame, b.addr)
    }

    /// A backend's segment toward a client, in dnat mode: it comes from the VIP.
    pub(super) fn tcp_dnat_backend_to_client(
        &mut self,
        frame: &mut [u8],
        flow: &Flow,
        farm: &Farm,
        idx: usize,
        tls: bool,
    ) -> Verdict {
        let (client, cport) = (flow.dst, flow.dport());
        let vport = if tls { farm.tls_port } else { farm.port };
        let (key, state) = self.backend_segment(flow, farm, idx, (client, cport), vport);
        let rewritten = if farm.alg && !tls {
            let conn = TcpAlgConn {
                key,
                dir: FROM_BACKEND,
                deadline: self.now.saturating_add(state.lifetime(&farm.timers)),
                toward: client,
                media: MediaPlan {
                    farm,
                    from: Side::Backend,
                    client: (client, cport),
                    backend_side: farm.vip,
                },
            };
            let svc = self.svc;
            match self.tcp_alg(frame, flow, &conn, || rules_to_client(svc, farm, idx, None)) {
                Ok(r) => r,
                Err(r) => return Verdict::Drop(r),
            }
        } else {
            false
        };
        if let Err(r) = rewrite_l4(frame, flow, Some((farm.vip, vport)), None) {
            return Verdict::Drop(r);
        }
        if rewritten {
            refill_tcp_checksum(frame, flow, self.len);
        }
        self.count_from(farm, idx, self.len);
        self.next_hop(frame, client)
    }

    /// A backend's segment to a SNAT port: back to the client, from the VIP.
    pub(super) fn tcp_snat_backend_to_client(
        &mut self,
        frame: &mut [u8],
        flow: &Flow,
        session: SnatSession,
    ) -> Verdict {
        let found = self
            .svc
            .tcp_backend_at(flow.src, flow.sport())
            .filter(|(f, _, _)| f.id == session.farm);
        let Some((farm, idx, tls)) = found else {
            // Only the farm's backends may use a client's session.
            return Verdict::Drop(DropReason::NotBalanced);
        };
        let vport = if tls { farm.tls_port } else { farm.port };
        let client = (session.client, session.client_port);
        let (key, state) = self.backend_segment(flow, farm, idx, client, vport);
        self.t.snat.extend(
            &session,
            self.now.saturating_add(state.lifetime(&farm.timers)),
        );
        let rewritten = if farm.alg && !tls {
            let conn = TcpAlgConn {
                key,
                dir: FROM_BACKEND,
                deadline: self.now.saturating_add(state.lifetime(&farm.timers)),
                toward: session.client,
                media: MediaPlan {
                    farm,
                    from: Side::Backend,
                    client,
                    backend_side: flow.dst,
                },
            };
            let snat = (flow.dst, flow.dport());
            let svc = self.svc;
            let rules = || rules_to_client(svc, farm, idx, Some((snat, client)));
            match self.tcp_alg(frame, flow, &conn, rules) {
                Ok(r) => r,
                Err(r) => return Verdict::Drop(r),
            }
        } else {
            false
        };
        if let Err(r) = rewrite_l4(frame, flow, Some((farm.vip, vport)), Some(client)) {
            return Verdict::Drop(r);
        }
        if rewritten {
            refill_tcp_checksum(frame, flow, self.len);
        }
        self.count_from(farm, idx, self.len);
        self.next_hop(frame, session.client)
    }

    /// Notes a backend's segment of a known connection in the connection table (it
    /// creates none); returns the connection's key and new state.
    fn backend_segment(
        &self,
        flow: &Flow,
        farm: &Farm,
        idx: usize,
        (client, cport): (Ipv4Addr, u16),
        vport: u16,
    ) -> (u64, ConnState) {
        let key = conn_key(client, cport, farm.vip, vport);
        let known = self.t.connections.get(key, self.now);
        let state = next_state(known.map(|c| c.state), flow.tcp_flags & !tcp::SYN);
        let conn = Connection {
            backend: farm.backends[idx].slot,
            farm: farm.id,
            state,
        };
        if known.is_some() {
            self.record_connection(key, conn, farm);
            self.note_connection_state(client, known.map(|c| c.state), state);
            self.note_backend_segment(farm, client, flow.tcp_flags);
        }
        (key, state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::counters::WorkerCounters;
    use crate::lb::sim::{self, host_mac, port_mac, SimMemory};
    use crate::lb::Verdict;
    use crate::wire::ipv4::Ipv4Packet;
    use crate::wire::tcp::TcpSegment;

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    fn cfg(nat: &str) -> String {
        format!(
            "[[port]]\nname='f'\naddress='198.18.0.1/24'\n[[port]]\nname='b'\naddress='198.18.1.1/24'\n[[farm]]\nname='pbx'\nvip='198.18.0.2'\nnat='{nat}'\naffinity='call-id'\nprotocols=['udp','tcp','tls']\nbackends=[{{address='198.18.1.11'}},{{address='198.18.1.12'}},{{address='198.18.1.13'}}]\n"
        )
    }

    /// (src, dst) of a TCP frame after checking its checksums.
    fn addrs(f: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        let t = TcpSegment::new_checked(ip.payload()).unwrap();
        assert!(t.verify(ip.src(), ip.dst()), "TCP checksum");
        ((ip.src(), t.src_port()), (ip.dst(), t.dst_port()))
    }

    fn run(nat: &str) {
        let svc = sim::services(&cfg(nat));
        let mem = SimMemory::new(1 << 10);
        let t = mem.tables();
        for i in 0..3 {
            let b = Ipv4Addr::new(198, 18, 1, 11 + i);
            t.neighbours.learn(b, host_mac(b), 1, 1);
        }
        t.neighbours.learn(CLIENT, host_mac(CLIENT), 0, 1);
        let c: Box<WorkerCounters> = Box::default();
        let mut w = sim::worker(&c);
        for (vport, tls) in [(5060u16, false), (5061, true)] {
            for cport in 40000..40020u16 {
                let mut syn =
                    sim::tcp_frame(port_mac(0), (CLIENT, cport), (VIP, vport), tcp::SYN, b"");
                assert_eq!(
                    sim::run(&svc, &t, &mut w, &mut syn, 0, 10),
                    Verdict::Forward(1)
                );
                let (src, backend) = addrs(&syn);
                assert_eq!(backend.1, vport, "TLS goes to the backends' TLS port");
                // Everything later on the connection goes to the same backend.
                for fl in [tcp::ACK, tcp::ACK | 0x08, tcp::FIN | tcp::ACK] {
                    let mut seg = sim::tcp_frame(
                        port_mac(0),
                        (CLIENT, cport),
                        (VIP, vport),
                        fl,
                        b"REGISTER sip:x SIP/2.0\r\n",
                    );
                    sim::run(&svc, &t, &mut w, &mut seg, 0, 11);
                    assert_eq!(addrs(&seg).1, backend);
                }
                // The backend's answer reaches the client from the VIP.
                let mut ack = sim::tcp_frame(port_mac(1), backend, src, tcp::SYN | tcp::ACK, b"");
                assert_eq!(
                    sim::run(&svc, &t, &mut w, &mut ack, 1, 11),
                    Verdict::Forward(0)
                );
                assert_eq!(addrs(&ack), ((VIP, vport), (CLIENT, cport)));
                let _ = tls;
            }
        }
        assert_eq!(c.tcp_connections_created.get(), 40);
    }

    #[test]
    fn dnat_tcp_and_tls_connections_stay_on_one_backend() {
        run("dnat");
    }

    #[test]
    fn snat_tcp_and_tls_connections_stay_on_one_backend() {
        run("snat");
    }

    #[test]
    fn a_connection_unknown_to_the_table_lands_where_it_began() {
        // After a restart (empty tables) a mid-connection segment is placed by the
        // same hash as its SYN was.
        let svc = sim::services(&cfg("dnat"));
        let c: Box<WorkerCounters> = Box::default();
        let mut places = Vec::new();
        for _ in 0..2 {
            let mem = SimMemory::new(1 << 10);
            let t = mem.tables();
            for i in 0..3 {
                let b = Ipv4Addr::new(198, 18, 1, 11 + i);
                t.neighbours.learn(b, host_mac(b), 1, 1);
            }
            let mut w = sim::worker(&c);
            let fl = if places.is_empty() {
                tcp::SYN
            } else {
                tcp::ACK
            };
            let mut seg = sim::tcp_frame(port_mac(0), (CLIENT, 41000), (VIP, 5060), fl, b"");
            sim::run(&svc, &t, &mut w, &mut seg, 0, 10);
            places.push(addrs(&seg).1);
        }
        assert_eq!(places[0], places[1]);
    }
}
