//! Counters of the client, the latency histogram, and the final summary (printed like
//! testpmd's `show port stats`, and as JSON).

use crate::flood::FloodSummary;
use crate::media::MediaStats;
use crate::request::Kind;
use crate::responder::ResponderStats;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Response codes the client counts one by one; the rest are `other`.
pub const CODES: [u16; 5] = [100, 180, 200, 401, 407];

pub struct ClientStats {
    /// Requests sent, by `Kind`.
    pub sent: [u64; 5],
    /// Responses received, by `CODES` index, then other.
    pub received: [u64; 6],
    /// Requests (ACK excepted) that got their final response.
    pub answered: u64,
    /// Requests (ACK excepted) whose final response did not come within the timeout.
    pub timeouts: u64,
    /// Final responses that were neither 2xx nor an expected challenge.
    pub failed: u64,
    /// Responses that matched no transaction waiting for one (late, duplicated, foreign).
    pub stray: u64,
    /// Frames that could not be built (no mbuf, buffer too small).
    pub build_failures: u64,
    /// Requests the pacer dropped from its schedule after the loop fell more than a
    /// millisecond behind (the generator was descheduled).
    pub pacer_skipped: u64,
    pub calls_completed: u64,
    pub registrations_completed: u64,
    pub options_completed: u64,
    /// Request → final response, nanoseconds.
    pub latency_ns: Histogram<u64>,
}

impl Default for ClientStats {
    fn default() -> Self {
        ClientStats {
            sent: [0; 5],
            received: [0; 6],
            answered: 0,
            timeouts: 0,
            failed: 0,
            stray: 0,
            build_failures: 0,
            pacer_skipped: 0,
            calls_completed: 0,
            registrations_completed: 0,
            options_completed: 0,
            // 1 ns to 100 s at 3 significant digits (about 200 KiB, allocated once).
            latency_ns: Histogram::new_with_bounds(1, 100_000_000_000, 3)
                .expect("valid histogram bounds"),
        }
    }
}

impl ClientStats {
    pub fn requests(&self) -> u64 {
        self.sent.iter().sum()
    }

    pub fn responses(&self) -> u64 {
        self.received.iter().sum()
    }

    #[inline]
    pub fn count_response(&mut self, code: u16) {
        let i = CODES.iter().position(|&c| c == code).unwrap_or(CODES.len());
        self.received[i] += 1;
    }
}

/// Counters of one port from the driver.
#[derive(Debug, Clone, Serialize)]
pub struct PortSummary {
    pub port: u16,
    pub name: String,
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
    /// Frames our TX burst could not hand to the driver (ring full), freed.
    pub tx_dropped: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientSummary {
    /// Requests sent by method.
    pub sent: std::collections::BTreeMap<String, u64>,
    /// Responses received by status code ("other" for the rest).
    pub received: std::collections::BTreeMap<String, u64>,
    pub requests: u64,
    pub responses: u64,
    pub answered: u64,
    pub unanswered: u64,
    pub timeouts: u64,
    pub failed: u64,
    pub stray: u64,
    pub build_failures: u64,
    pub pacer_skipped: u64,
    pub calls_completed: u64,
    pub registrations_completed: u64,
    pub options_completed: u64,
    /// Seconds from the first request to the end (the last answer, or the timeout of
    /// the last lost request).
    pub elapsed_s: f64,
    /// Seconds from the first request to the last one sent: the divisor of the rates.
    pub sending_s: f64,
    pub requests_per_s: f64,
    pub responses_per_s: f64,
    /// Requests + responses per second, in millions: every packet the balancer
    /// forwarded for us, both directions.
    pub mpps_total: f64,
    pub latency: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendSummary {
    pub address: String,
    pub requests: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResponderSummary {
    pub received: std::collections::BTreeMap<String, u64>,
    pub malformed: u64,
    pub responses: u64,
    pub challenges: u64,
    pub per_backend: Vec<BackendSummary>,
    pub call_ids: u64,
    /// Call-IDs seen at more than one backend.
    pub split_dialogs: u64,
    pub split_messages: u64,
}

/// RTP of one direction: sent by one side, received by the other.
#[derive(Debug, Clone, Serialize)]
pub struct DirectionSummary {
    pub sent: u64,
    /// Packets of the expected stream at the port the receiver announced.
    pub received: u64,
    pub received_bytes: u64,
    /// RTP at a port the receiver never announced, or with another stream's SSRC.
    pub misdelivered: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MediaSummary {
    /// Calls asked for (`--rtp-streams`).
    pub streams: u32,
    /// Streams opened by the client (its 200 named where to send) and by the backends
    /// (their INVITE did).
    pub client_legs: u64,
    pub backend_legs: u64,
    /// Calls whose SDP named no usable address, both sides.
    pub no_sdp: u64,
    pub rtp_pps_requested: u64,
    pub rtp_payload: usize,
    /// Seconds from the first RTP packet to the last one sent: the divisor of the rates.
    pub sending_s: f64,
    pub client_to_backend: DirectionSummary,
    pub backend_to_client: DirectionSummary,
    /// RTP packets per second sent and received, both directions together.
    pub sent_pps: f64,
    pub delivered_pps: f64,
    /// 1 - received / sent, both directions together.
    pub loss: f64,
    /// Packets the pacer dropped from its schedule (the generator was descheduled).
    pub pacer_skipped: u64,
    /// Packets not built (no mbuf).
    pub build_failures: u64,
}

impl MediaSummary {
    /// The summary of a run whose client side counted `client` and backend side
    /// `backend`, sending for `sending_s` seconds.
    pub fn new(
        streams: u32,
        rtp_pps_requested: u64,
        rtp_payload: usize,
        client: &MediaStats,
        backend: &MediaStats,
        sending_s: f64,
    ) -> MediaSummary {
        let direction = |from: &MediaStats, to: &MediaStats| DirectionSummary {
            sent: from.sent,
            received: to.received,
            received_bytes: to.received_bytes,
            misdelivered: to.misdelivered,
        };
        let sent = client.sent + backend.sent;
        let received = client.received + backend.received;
        let e = sending_s.max(1e-9);
        MediaSummary {
            streams,
            client_legs: client.legs,
            backend_legs: backend.legs,
            no_sdp: client.no_sdp + backend.no_sdp,
            rtp_pps_requested,
            rtp_payload,
            sending_s,
            client_to_backend: direction(client, backend),
            backend_to_client: direction(backend, client),
            sent_pps: sent as f64 / e,
            delivered_pps: received as f64 / e,
            loss: if sent == 0 {
                0.0
            } else {
                1.0 - received as f64 / sent as f64
            },
            pacer_skipped: 0,
            build_failures: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub mode: String,
    pub rate_requested: u64,
    pub tsc_hz: u64,
    pub client: Option<ClientSummary>,
    pub responder: Option<ResponderSummary>,
    /// With `--rtp-streams`.
    pub media: Option<MediaSummary>,
    /// With `--mode flood`.
    pub flood: Option<FloodSummary>,
    pub ports: Vec<PortSummary>,
}

/// `k=v k=v`: one token per count, for scripts and tests to read.
fn pairs(m: &std::collections::BTreeMap<String, u64>) -> String {
    let v: Vec<String> = m.iter().map(|(k, n)| format!("{k}={n}")).collect();
    v.join(" ")
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl ClientStats {
    pub fn summary(&self, elapsed_s: f64, sending_s: f64) -> ClientSummary {
        let h = &self.latency_ns;
        let e = sending_s.max(1e-9);
        ClientSummary {
            sent: Kind::ALL
                .iter()
                .map(|k| (k.name().to_string(), self.sent[*k as usize]))
                .collect(),
            received: CODES
                .iter()
                .map(|c| c.to_string())
                .chain(["other".to_string()])
                .zip(self.received)
                .collect(),
            requests: self.requests(),
            responses: self.responses(),
            answered: self.answered,
            unanswered: self.timeouts,
            timeouts: self.timeouts,
            failed: self.failed,
            stray: self.stray,
            build_failures: self.build_failures,
            pacer_skipped: self.pacer_skipped,
            calls_completed: self.calls_completed,
            registrations_completed: self.registrations_completed,
            options_completed: self.options_completed,
            elapsed_s,
            sending_s,
            requests_per_s: self.requests() as f64 / e,
            responses_per_s: self.responses() as f64 / e,
            mpps_total: (self.requests() + self.responses()) as f64 / e / 1e6,
            latency: Latency {
                count: h.len(),
                p50_us: us(h.value_at_quantile(0.5)),
                p99_us: us(h.value_at_quantile(0.99)),
                p999_us: us(h.value_at_quantile(0.999)),
                max_us: us(h.max()),
                mean_us: h.mean() / 1000.0,
            },
        }
    }
}

impl ResponderStats {
    pub fn summary(
        &self,
        backend_ip: impl Fn(u16) -> std::net::Ipv4Addr,
        stick: &crate::stickiness::Stickiness,
    ) -> ResponderSummary {
        ResponderSummary {
            received: Kind::ALL
                .iter()
                .map(|k| (k.name().to_string(), self.received[*k as usize]))
                .chain([("other".to_string(), self.received_other)])
                .collect(),
            malformed: self.malformed,
            responses: self.responses,
            challenges: self.challenges,
            per_backend: self
                .per_backend
                .iter()
                .enumerate()
                .map(|(i, &n)| BackendSummary {
                    address: backend_ip(i as u16).to_string(),
                    requests: n,
                })
                .collect(),
            call_ids: stick.call_ids,
            split_dialogs: stick.split_dialogs,
            split_messages: stick.split_messages,
        }
    }
}

impl Summary {
    /// The human-readable final summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for p in &self.ports {
            s += &format!(
                "  ######################## port {} ({}) ########################\n  RX-packets: {:<14} RX-missed: {:<10} RX-bytes:  {}\n  RX-errors:  {:<14} RX-nombuf: {}\n  TX-packets: {:<14} TX-errors: {:<10} TX-bytes:  {}\n  TX-dropped: {}\n",
                p.port, p.name, p.ipackets, p.imissed, p.ibytes, p.ierrors, p.rx_nombuf,
                p.opackets, p.oerrors, p.obytes, p.tx_dropped
            );
        }
        if let Some(c) = &self.client {
            s += &format!(
                "  client: {} requests {:?}, {} responses {:?}\n  client: answered {} unanswered {} (timeouts) failed {} stray {} build-failures {} pacer-skipped {}\n  client: completed calls {} registrations {} options {}\n  client: {:.3} s ({:.3} s sending), {:.0} requests/s, {:.0} responses/s, {:.3} Mpps through the balancer (both directions)\n  latency request -> final response (us): p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} mean {:.1} ({} samples)\n",
                c.requests, c.sent, c.responses, c.received, c.answered, c.unanswered, c.failed,
                c.stray, c.build_failures, c.pacer_skipped, c.calls_completed, c.registrations_completed,
                c.options_completed, c.elapsed_s, c.sending_s, c.requests_per_s, c.responses_per_s,
                c.mpps_total, c.latency.p50_us, c.latency.p99_us, c.latency.p999_us,
                c.latency.max_us, c.latency.mean_us, c.latency.count
            );
        }
        if let Some(r) = &self.responder {
            let per: Vec<String> = r
                .per_backend
                .iter()
                .map(|b| format!("{}={}", b.address, b.requests))
                .collect();
            s += &format!(
                "  responder: received {:?}, {} responses ({} challenges), malformed {}\n  responder: per backend {}\n  responder: call-ids {} split dialogs {} (messages at another backend {})\n",
                r.received, r.responses, r.challenges, r.malformed, per.join(" "), r.call_ids,
                r.split_dialogs, r.split_messages
            );
        }
        if let Some(f) = &self.flood {
            s += &format!(
                "  flood: sent {} in {:.3} s: {}\n  flood: {} from {} cold sources, {} from hot sources {}\n  flood: responses {}, build-failures {} pacer-skipped {}\n",
                f.total,
                f.sending_s,
                pairs(&f.sent),
                f.cold,
                f.cold_sources,
                f.hot,
                f.hot_sources.join(","),
                pairs(&f.responses),
                f.build_failures,
                f.pacer_skipped
            );
        }
        if let Some(m) = &self.media {
            let (cb, bc) = (&m.client_to_backend, &m.backend_to_client);
            s += &format!(
                "  media: {} streams asked, legs client {} backend {}, no SDP {}, {} B payload\n  media: client -> backend sent {} received {} misdelivered {}; backend -> client sent {} received {} misdelivered {}\n  media: {:.3} s sending, {:.0} packets/s sent, {:.0} delivered (both directions), loss {:.6}, pacer-skipped {} build-failures {}\n",
                m.streams, m.client_legs, m.backend_legs, m.no_sdp, m.rtp_payload, cb.sent,
                cb.received, cb.misdelivered, bc.sent, bc.received, bc.misdelivered, m.sending_s,
                m.sent_pps, m.delivered_pps, m.loss, m.pacer_skipped, m.build_failures
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_has_percentiles_and_rates() {
        let mut c = ClientStats::default();
        c.sent[Kind::Invite as usize] = 10;
        for i in 1..=1000u64 {
            c.latency_ns.record(i * 1000).unwrap();
        }
        c.count_response(200);
        c.count_response(503);
        let s = c.summary(2.5, 2.0);
        assert_eq!(s.received["200"], 1);
        assert_eq!(s.received["other"], 1);
        assert_eq!(s.sent["INVITE"], 10);
        assert!(
            (s.latency.p50_us - 500.0).abs() < 1.0,
            "{}",
            s.latency.p50_us
        );
        assert!((s.latency.p99_us - 990.0).abs() < 1.0);
        assert!((s.mpps_total - 6e-6).abs() < 1e-12);
    }

    #[test]
    fn media_summary_pairs_each_side_with_its_peer() {
        let client = MediaStats {
            legs: 10,
            sent: 1000,
            received: 990,
            received_bytes: 990 * 172,
            ..Default::default()
        };
        let backend = MediaStats {
            legs: 10,
            sent: 1000,
            received: 1000,
            misdelivered: 2,
            ..Default::default()
        };
        let m = MediaSummary::new(10, 2000, 160, &client, &backend, 2.0);
        assert_eq!(
            (m.client_to_backend.sent, m.client_to_backend.received),
            (1000, 1000)
        );
        assert_eq!(m.client_to_backend.misdelivered, 2);
        assert_eq!(
            (m.backend_to_client.sent, m.backend_to_client.received),
            (1000, 990)
        );
        assert!((m.loss - 0.005).abs() < 1e-12);
        assert!((m.delivered_pps - 995.0).abs() < 1e-9);
    }
}
