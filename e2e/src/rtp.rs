//! RTP for SIPp calls: the pcap a SIPp UAC plays (`play_pcap_audio`), generated at test
//! time, and kernel counters of the RTP packets each endpoint's namespace sent and
//! received.
//!
//! Debian 12's SIPp (3.6.1, built with PCAP and RTPSTREAM) plays a pcap from a raw
//! socket, one thread per call, from the port its SDP offered (`[auto_media_port]`: one
//! per call) to the `c=`/`m=` address of the answer; the UAS's `-rtp_echo` sends every
//! packet it gets on `-mp` back to its sender. SIPp counts the echoed packets ("Total
//! echo RTP pckts 1st stream", see `stop_echo`) but prints no final count of the pcap
//! packets it sent (its last screen reuses the previous line), so what the client sent
//! is counted by the kernel, as is what every namespace received.

use crate::netns::Netns;
use crate::sipp::Uas;
use anyhow::{bail, Context, Result};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Milliseconds of audio per packet, the usual ptime.
pub const PTIME_MS: u32 = 20;
/// PCMU (payload type 0) bytes per packet: 8 kHz, one byte a sample.
const PCMU_BYTES: usize = 160;
/// The UAS's RTP port (`-mp`), where `-rtp_echo` listens: `echo_args`.
pub const UAS_RTP_PORT: u16 = 6000;
/// The media ports of `media_uac.xml`: `[auto_media_port]` gives call n the port
/// `6000 + 4 (n - 1) mod 10000`.
pub const UAC_RTP_PORTS: (u16, u16) = (6000, 15999);

/// Puts `media_uac.xml` and the `packets`-long `rtp.pcap` it plays into `dir` (SIPp looks
/// for the pcap beside the scenario) and returns the scenario's path for
/// `Uac::scenario_file`.
pub fn media_uac_scenario(dir: &Path, packets: u16) -> Result<PathBuf> {
    let scenario = dir.join("media_uac.xml");
    std::fs::copy(crate::sipp::scenario("media_uac"), &scenario)
        .with_context(|| format!("copying media_uac.xml to {}", dir.display()))?;
    write_pcap(&dir.join("rtp.pcap"), packets)?;
    Ok(scenario)
}

/// Writes a classic pcap of `packets` RTP/PCMU packets `PTIME_MS` apart. SIPp keeps only
/// their UDP payload and timing; addresses and ports are its own at play time.
pub fn write_pcap(path: &Path, packets: u16) -> Result<()> {
    let mut out = Vec::with_capacity(24 + usize::from(packets) * 230);
    // Global header: magic, version 2.4, UTC offset 0, accuracy 0, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for w in [0u32, 0, 65535, 1] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    for seq in 0..packets {
        let frame = frame(seq);
        let us = u64::from(seq) * u64::from(PTIME_MS) * 1000;
        let len = frame.len() as u32;
        for w in [(us / 1_000_000) as u32, (us % 1_000_000) as u32, len, len] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Ethernet + IPv4 + UDP + RTP (PCMU silence) for packet `seq` of the stream.
fn frame(seq: u16) -> Vec<u8> {
    let (src, dst) = (Ipv4Addr::new(198, 18, 0, 10), Ipv4Addr::new(198, 18, 0, 2));
    let mut rtp = Vec::with_capacity(12 + PCMU_BYTES);
    rtp.extend_from_slice(&[0x80, 0]); // version 2, payload type 0 (PCMU)
    rtp.extend_from_slice(&seq.to_be_bytes());
    rtp.extend_from_slice(&(u32::from(seq) * PCMU_BYTES as u32).to_be_bytes());
    rtp.extend_from_slice(&0x5349_5050u32.to_be_bytes()); // SSRC
    rtp.resize(12 + PCMU_BYTES, 0xff); // µ-law silence
    let udp_len = (8 + rtp.len()) as u16;
    let ip_len = 20 + udp_len;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&ip_len.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]); // DF, TTL 64, UDP
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0];
    f.extend_from_slice(&ip);
    // UDP: ports 6000 → 6000 (SIPp replaces them), checksum 0 (none; SIPp computes it).
    for w in [6000u16, 6000, udp_len, 0] {
        f.extend_from_slice(&w.to_be_bytes());
    }
    f.extend_from_slice(&rtp);
    f
}

/// UDP packets a namespace received on and sent from a port range, counted by iptables
/// rules in it (they go with the namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpCounts {
    pub received: u64,
    pub sent: u64,
}

/// Counts UDP to and from `ports` (`first:last`) in `ns`. `drop_received`: received
/// packets are counted, then dropped, so a port without a socket (SIPp's pcap play binds
/// none) answers no ICMP port unreachable that would reach the balancer.
pub fn count_udp(ns: &Netns, ports: (u16, u16), drop_received: bool) -> Result<()> {
    let range = format!("{}:{}", ports.0, ports.1);
    let mut input = vec!["-A", "INPUT", "-p", "udp", "--dport", &range];
    if drop_received {
        input.extend(["-j", "DROP"]);
    }
    ns.run("iptables", &input)?;
    ns.run(
        "iptables",
        &["-A", "OUTPUT", "-p", "udp", "--sport", &range],
    )?;
    Ok(())
}

/// What the rules of `count_udp` counted so far.
pub fn udp_counts(ns: &Netns) -> Result<UdpCounts> {
    let chain = |name: &str| -> Result<u64> {
        let out = ns.run("iptables", &["-L", name, "-v", "-n", "-x"])?;
        // Header lines, then one rule: `pkts bytes target prot ...`.
        let rules: Vec<u64> = out
            .lines()
            .filter(|l| l.contains("udp "))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        match rules[..] {
            [n] => Ok(n),
            _ => bail!(
                "{}: {name} should hold the one UDP rule of count_udp:\n{out}",
                ns.name()
            ),
        }
    };
    Ok(UdpCounts {
        received: chain("INPUT")?,
        sent: chain("OUTPUT")?,
    })
}

/// SIPp UAS options for an RTP echo on `port` whose count `stop_echo` reads back from
/// `screens`.
pub fn echo_args(port: u16, screens: &Path) -> Vec<String> {
    vec![
        "-rtp_echo".into(),
        "-mp".into(),
        port.to_string(),
        "-trace_screen".into(),
        "-screen_file".into(),
        screens.display().to_string(),
    ]
}

/// Stops a UAS started with `echo_args` and returns how many RTP packets it echoed.
/// SIPp prints that count only on a screen drawn at least 1 ms after its last periodic
/// one, which its exit screen (SIGTERM) often is not: two screen dumps (SIGUSR2) 200 ms
/// apart go to `screens` first; the exit closes, so flushes, that file.
pub fn stop_echo(uas: &mut Uas, screens: &Path) -> Result<u64> {
    for _ in 0..2 {
        uas.proc.signal(libc::SIGUSR2);
        std::thread::sleep(Duration::from_millis(200));
    }
    uas.proc.stop(Duration::from_secs(5));
    let text = std::fs::read_to_string(screens)
        .with_context(|| format!("reading {}", screens.display()))?;
    sipp_echoed(&text).with_context(|| {
        format!(
            "{}: no RTP echo count in {}:\n{text}\n{}",
            uas.proc.name,
            screens.display(),
            uas.proc.output()
        )
    })
}

/// The last "Total echo RTP pckts 1st stream" of a SIPp `-rtp_echo` screen: the RTP
/// packets it received on `-mp` and sent back.
fn sipp_echoed(screens: &str) -> Option<u64> {
    screens
        .lines()
        .rev()
        .find(|l| l.contains("Total echo RTP pckts 1st stream"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pcap_holds_the_stream_20_ms_apart() {
        let p = std::env::temp_dir().join(format!("rtp-{}.pcap", std::process::id()));
        write_pcap(&p, 3).unwrap();
        let frames = crate::capture::read_pcap(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(frames.len(), 3);
        let f = &frames[2].data;
        // 14 Ethernet + 20 IPv4 + 8 UDP + 12 RTP + 160 PCMU.
        assert_eq!(f.len(), 214);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 180, "UDP length");
        assert_eq!(&f[42..44], &[0x80, 0], "RTP v2, PCMU");
        assert_eq!(u16::from_be_bytes([f[44], f[45]]), 2, "sequence number");
    }

    #[test]
    fn echo_count_is_read_from_the_last_screen() {
        let out = "  10 Total echo RTP pckts 1st stream    1.0 last period\n\
                   ...\n  3000 Total echo RTP pckts 1st stream    1040.160 last period\n\
                   \x20 0 Total echo RTP pckts 2nd stream       0.000 last period\n";
        assert_eq!(sipp_echoed(out), Some(3000));
        assert_eq!(sipp_echoed("no media here"), None);
    }
}
