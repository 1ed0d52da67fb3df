//! Command-line options after the EAL arguments: `siplb-gen [EAL args] -- [options]`.

use crate::flood::FloodMix;
use clap::{Parser, ValueEnum};
use siplb_core::config::Ipv4Net;
use siplb_core::wire::MacAddr;
use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Send requests on --client-port and count the responses.
    Client,
    /// Answer as --backends backends on --backend-port.
    Responder,
    /// Both in one process (one lcore).
    Both,
    /// Stateless requests from spoofed sources on --client-port (`flood.rs`): the
    /// --flood-* options, --rate, --budget or --duration.
    Flood,
}

/// siplb-gen: sends SIP through any DPDK port at a given rate and counts what comes
/// back; answers as N stateless backends. Usage: siplb-gen [EAL args] -- [options]
#[derive(Debug, Clone, Parser)]
#[command(
    name = "siplb-gen",
    version,
    about,
    override_usage = "siplb-gen [EAL args] -- [OPTIONS]"
)]
pub struct Options {
    #[arg(long, value_enum, default_value = "both")]
    pub mode: Mode,
    /// DPDK port of the client (requests out, responses in).
    #[arg(long, default_value_t = 0)]
    pub client_port: u16,
    /// DPDK port of the backends (requests in, responses out).
    #[arg(long, default_value_t = 1)]
    pub backend_port: u16,
    /// First client source address; the generator answers ARP for all of them.
    #[arg(long, default_value = "198.18.0.10")]
    pub src_ip: Ipv4Addr,
    /// Number of client source addresses.
    #[arg(long, default_value_t = 1)]
    pub src_ips: u32,
    /// First client source UDP port.
    #[arg(long, default_value_t = 5060)]
    pub src_port: u16,
    /// Number of client source ports.
    #[arg(long, default_value_t = 1)]
    pub src_ports: u16,
    /// Where requests go (the VIP).
    #[arg(long, default_value = "198.18.0.2")]
    pub dst_ip: Ipv4Addr,
    #[arg(long, default_value_t = 5060)]
    pub dst_port: u16,
    /// Destination MAC; without it, resolved by ARP for --dst-ip.
    #[arg(long, value_parser = parse_mac)]
    pub dst_mac: Option<MacAddr>,
    /// First backend address; the responder answers as --backends consecutive ones.
    #[arg(long, default_value = "198.18.1.11")]
    pub backend_ip: Ipv4Addr,
    #[arg(long, default_value_t = 1)]
    pub backends: u16,
    /// UDP port the backends listen on.
    #[arg(long, default_value_t = 5060)]
    pub backend_sip_port: u16,
    /// Requests per second (every request: INVITE, ACK, BYE...); 0 = as fast as possible.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds of sending (then in-flight transactions finish or time out).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Requests to send in all, ACKs and BYEs included: a call, registration or
    /// OPTIONS starts only if all its requests fit in what is left (a call with ACK and
    /// BYE is 3, 5 with --challenge), so without losses exactly this many go out when
    /// it is a multiple. In responder mode: stop after this many requests received.
    #[arg(long)]
    pub budget: Option<u64>,
    /// Distinct users (From / REGISTER AOR u<N>@siplb-gen.test).
    #[arg(long, default_value_t = 1000)]
    pub users: u32,
    /// Concurrent calls (transactions in flight).
    #[arg(long, default_value_t = 100)]
    pub calls: u32,
    /// Message mix: weights of REGISTER, INVITE (calls) and OPTIONS transactions; ack
    /// and bye > 0 put an ACK and a BYE in each call.
    #[arg(long, default_value = "register=1,invite=1,ack=1,bye=1,options=0", value_parser = Mix::parse)]
    pub mix: Mix,
    /// Pad INVITEs (SDP) so their frames have this many bytes.
    #[arg(long, default_value_t = 0)]
    pub payload: usize,
    /// Responder: challenge REGISTER (401) and INVITE (407) first; the client retries
    /// with credentials.
    #[arg(long)]
    pub challenge: bool,
    /// A transaction without its final response after this long counts as a timeout.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Seconds between periodic stats lines (0 = only the final summary).
    #[arg(long, default_value_t = 1.0)]
    pub stats_interval: f64,
    /// Also write the final summary as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Milliseconds between learning the destination's MAC (or starting, with
    /// --dst-mac) and the first request, so the peer can learn the backends first.
    #[arg(long, default_value_t = 200)]
    pub warmup_ms: u64,
    /// Sleep this long after a loop that neither received nor sent (0 = busy polling;
    /// > 0 lets the generator share a core in tests).
    #[arg(long, default_value_t = 0)]
    pub idle_sleep_us: u64,
    /// Packet buffers in the pool.
    #[arg(long, default_value_t = 8191)]
    pub mbufs: u32,
    /// Seconds to wait for the ports' links (a vhost-user port waits for its peer).
    #[arg(long, default_value_t = 60.0)]
    pub link_timeout: f64,
    /// Media: place this many calls whose INVITE and 200 carry SDP, hold them while each
    /// side sends RTP where the SDP it received said (one stream each way per call) for
    /// --duration seconds, then end them with BYE. Needs --mode both; sets --calls, the
    /// mix (INVITE, ACK, BYE) and the budget (one call per stream). 0: SIP only.
    #[arg(long, default_value_t = 0)]
    pub rtp_streams: u32,
    /// RTP packets per second, all streams and both directions together (half each
    /// way); 0 = as fast as possible.
    #[arg(long, default_value_t = 10_000)]
    pub rtp_pps: u64,
    /// RTP payload bytes per packet (160: 20 ms of PCMU).
    #[arg(long, default_value_t = 160)]
    pub rtp_payload: usize,
    /// Flood: the prefix the spoofed sources come from (--src-ip stays the generator's
    /// own address, the one it answers ARP for).
    #[arg(long, default_value = "198.19.0.0/16")]
    pub flood_prefix: Ipv4Net,
    /// Flood: "cold" sources, the prefix's first addresses, taken round robin.
    #[arg(long, default_value_t = 4096)]
    pub flood_sources: u32,
    /// Flood: "hot" sources, the addresses after the cold ones, that send
    /// --flood-hot-share percent of the packets.
    #[arg(long, default_value_t = 0)]
    pub flood_hot_sources: u32,
    #[arg(long, default_value_t = 0)]
    pub flood_hot_share: u32,
    /// Flood: weights of the kinds: invite, register, reinvite (INVITE with a To tag),
    /// ack, bye, cancel (of dialogs nobody knows), options, scanner (a scanner's
    /// User-Agent).
    #[arg(
        long,
        default_value = "invite=4,register=2,reinvite=1,ack=1,bye=1,cancel=1,options=1,scanner=1",
        value_parser = FloodMix::parse
    )]
    pub flood_mix: FloodMix,
}

/// Transaction weights of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub register: u32,
    pub invite: u32,
    pub options: u32,
    pub ack: bool,
    pub bye: bool,
}

impl Mix {
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut m = Mix {
            register: 0,
            invite: 0,
            options: 0,
            ack: false,
            bye: false,
        };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected name=weight"))?;
            let w: u32 = v
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: the weight must be a whole number"))?;
            match k.trim().to_ascii_lowercase().as_str() {
                "register" => m.register = w,
                "invite" => m.invite = w,
                "options" => m.options = w,
                "ack" => m.ack = w > 0,
                "bye" => m.bye = w > 0,
                other => {
                    return Err(format!(
                        "unknown message `{other}` (register, invite, ack, bye, options)"
                    ))
                }
            }
        }
        if m.register + m.invite + m.options == 0 {
            return Err("register, invite and options weights are all 0: nothing to send".into());
        }
        Ok(m)
    }

    pub fn total(&self) -> u32 {
        self.register + self.invite + self.options
    }
}

fn parse_mac(s: &str) -> Result<MacAddr, String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!(
            "`{s}`: expected six hex bytes like 02:00:00:00:00:01"
        ));
    }
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("`{s}`: `{p}` is not a hex byte"))?;
    }
    Ok(MacAddr(m))
}

impl Options {
    /// Checks what clap cannot; the error says which option to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.calls == 0 || self.users == 0 || self.src_ips == 0 || self.src_ports == 0 {
            return Err("--calls, --users, --src-ips and --src-ports must be at least 1".into());
        }
        if self.mode != Mode::Client && self.backends == 0 {
            return Err("--backends must be at least 1".into());
        }
        if u32::from(self.src_port) + u32::from(self.src_ports) > 65536 {
            return Err("--src-port + --src-ports goes past port 65535".into());
        }
        if self.payload > 1514 {
            return Err("--payload: frames larger than 1514 bytes would need IP fragments".into());
        }
        if self.mode == Mode::Flood {
            if self.rtp_streams > 0 {
                return Err("--rtp-streams does not go with --mode flood".into());
            }
            self.flood_config(0, 0).validate()?;
        }
        if self.rtp_streams > 0 {
            if self.mode != Mode::Both {
                return Err("--rtp-streams needs --mode both (one process sends both ways)".into());
            }
            if self.rtp_streams > u32::from(crate::media::PORT_SLOTS) {
                return Err(format!(
                    "--rtp-streams: at most {} (one RTP port pair per stream and side)",
                    crate::media::PORT_SLOTS
                ));
            }
            if crate::frame::HEADERS_LEN + crate::media::RTP_HEADER_LEN + self.rtp_payload > 1514 {
                return Err(
                    "--rtp-payload: frames larger than 1514 bytes would need IP fragments".into(),
                );
            }
        }
        Ok(())
    }
}

impl Options {
    /// The flood's settings; `run` tags its Call-IDs.
    pub fn flood_config(&self, run: u32, budget: u64) -> crate::flood::FloodConfig {
        crate::flood::FloodConfig {
            prefix: self.flood_prefix,
            sources: self.flood_sources,
            hot_sources: self.flood_hot_sources,
            hot_share: self.flood_hot_share,
            mix: self.flood_mix,
            src_port: self.src_port,
            dst_ip: self.dst_ip,
            dst_port: self.dst_port,
            run,
            budget,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_weights_and_switches() {
        let m = Mix::parse("register=1,invite=3,ack=1,bye=0,options=2").unwrap();
        assert_eq!(
            (m.register, m.invite, m.options, m.ack, m.bye),
            (1, 3, 2, true, false)
        );
        assert!(Mix::parse("invite=0").is_err());
        assert!(Mix::parse("notify=1").is_err());
        assert!(Mix::parse("invite").is_err());
    }

    #[test]
    fn cli_contract_names() {
        let o = Options::try_parse_from([
            "siplb-gen",
            "--mode",
            "both",
            "--client-port",
            "0",
            "--backend-port",
            "1",
            "--src-ip",
            "198.18.0.10",
            "--src-ips",
            "4",
            "--src-port",
            "5070",
            "--src-ports",
            "8",
            "--dst-ip",
            "198.18.0.2",
            "--dst-port",
            "5060",
            "--dst-mac",
            "02:00:00:00:00:01",
            "--backend-ip",
            "198.18.1.11",
            "--backends",
            "3",
            "--backend-sip-port",
            "5060",
            "--rate",
            "0",
            "--duration",
            "2.5",
            "--budget",
            "100",
            "--users",
            "10",
            "--calls",
            "5",
            "--mix",
            "invite=1,ack=1,bye=1",
            "--payload",
            "600",
            "--challenge",
            "--stats-interval",
            "0",
            "--json",
            "/tmp/x.json",
        ])
        .unwrap();
        assert_eq!(o.dst_mac, Some(MacAddr([2, 0, 0, 0, 0, 1])));
        assert_eq!(o.mode, Mode::Both);
        assert!(o.validate().is_ok());
        assert_eq!(o.rtp_streams, 0);
    }

    #[test]
    fn flood_options_parse_and_are_checked() {
        let parse = |extra: &[&str]| {
            Options::try_parse_from(
                ["siplb-gen", "--mode", "flood"]
                    .iter()
                    .chain(extra)
                    .copied(),
            )
            .unwrap()
        };
        let o = parse(&[
            "--flood-prefix",
            "198.19.0.0/16",
            "--flood-sources",
            "8192",
            "--flood-hot-sources",
            "4",
            "--flood-hot-share",
            "40",
            "--flood-mix",
            "invite=1,scanner=1",
        ]);
        assert_eq!(o.mode, Mode::Flood);
        assert!(o.validate().is_ok());
        let f = o.flood_config(1, 10);
        assert_eq!((f.sources, f.hot_sources, f.hot_share), (8192, 4, 40));
        assert!(parse(&[]).validate().is_ok());
        assert!(parse(&["--flood-hot-share", "10"]).validate().is_err());
        assert!(parse(&["--flood-prefix", "198.19.0.0/24"])
            .validate()
            .is_err());
        assert!(parse(&["--rtp-streams", "1"]).validate().is_err());
    }

    #[test]
    fn media_needs_both_sides_and_room() {
        let parse = |extra: &[&str]| {
            Options::try_parse_from(["siplb-gen"].iter().chain(extra).copied()).unwrap()
        };
        let o = parse(&[
            "--rtp-streams",
            "100",
            "--rtp-pps",
            "50000",
            "--rtp-payload",
            "160",
        ]);
        assert_eq!(
            (o.rtp_streams, o.rtp_pps, o.rtp_payload),
            (100, 50_000, 160)
        );
        assert!(o.validate().is_ok());
        assert!(parse(&["--rtp-streams", "1", "--mode", "client"])
            .validate()
            .is_err());
        assert!(parse(&["--rtp-streams", "20001"]).validate().is_err());
        assert!(parse(&["--rtp-streams", "1", "--rtp-payload", "1500"])
            .validate()
            .is_err());
    }
}
