//! RTP for the dummy call: PCMU (G.711 µ-law, 8 kHz) in 20 ms packets, from a file
//! or a generated tone, and a count of what the backend sends back.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Samples (and PCMU bytes) in 20 ms at 8 kHz.
pub const FRAME: usize = 160;
const PACKET_INTERVAL: Duration = Duration::from_millis(20);
const PT_PCMU: u8 = 0;

/// G.711 µ-law of a 16-bit linear sample.
pub fn ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    let s = s.min(CLIP) + BIAS;
    // The biased magnitude's highest set bit is bit 7..=14: the segment (exponent).
    let exponent = (31 - (s as u32).leading_zeros()) as i32 - 7;
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// One second of a 400 Hz tone in PCMU.
pub fn tone() -> Vec<u8> {
    (0..8000)
        .map(|n| {
            let x = (2.0 * std::f64::consts::PI * 400.0 * f64::from(n) / 8000.0).sin();
            ulaw((x * 8000.0) as i16)
        })
        .collect()
}

/// An RTP packet: version 2, no padding, extension or CSRCs.
pub fn packet(seq: u16, timestamp: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push(PT_PCMU | if marker { 0x80 } else { 0 });
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&timestamp.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// True if `p` looks like RTP (version 2, a full header).
pub fn is_rtp(p: &[u8]) -> bool {
    p.len() >= 12 && p[0] >> 6 == 2
}

/// Sends `audio` (looped) to `dest` for `duration`, one packet per 20 ms, and counts
/// the RTP packets that arrive meanwhile. Returns (sent, received).
pub fn stream(
    sock: &UdpSocket,
    dest: SocketAddr,
    duration: Duration,
    audio: &[u8],
    stop: &AtomicBool,
) -> Result<(u64, u64), String> {
    if audio.is_empty() {
        return Err("no audio to send".into());
    }
    let ssrc = siplb_core::hash::hash64(super::sipclient::token().as_bytes()) as u32;
    let start = Instant::now();
    let end = start + duration;
    let (mut sent, mut received) = (0u64, 0u64);
    let mut buf = [0u8; 2048];
    let mut offset = 0usize;
    let mut next = start;
    while next < end && !stop.load(Ordering::Relaxed) {
        let mut frame = [0u8; FRAME];
        for b in frame.iter_mut() {
            *b = audio[offset % audio.len()];
            offset += 1;
        }
        let p = packet(
            sent as u16,
            (sent as u32).wrapping_mul(FRAME as u32),
            ssrc,
            sent == 0,
            &frame,
        );
        sock.send_to(&p, dest)
            .map_err(|e| format!("RTP to {dest}: {e}"))?;
        sent += 1;
        next += PACKET_INTERVAL;
        // Until the next packet is due, count what comes back.
        loop {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = sock.set_read_timeout(Some(left));
            match sock.recv_from(&mut buf) {
                Ok((n, _)) if is_rtp(&buf[..n]) => received += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    Ok((sent, received))
}

/// The audio address of an SDP answer: `c=IN IP4 <addr>` and `m=audio <port>`.
pub fn audio_destination(sdp: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(sdp).ok()?;
    let mut addr = None;
    let mut port = None;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            // The media-level c= (after m=) wins over the session-level one.
            if addr.is_none() || port.is_some() {
                addr = c.split('/').next()?.trim().parse().ok();
            }
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            port = m.split_whitespace().next()?.parse::<u16>().ok();
        }
    }
    Some(SocketAddr::new(addr?, port?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_matches_g711_reference_points() {
        // Values from the G.711 tables: silence, the first segment, full scale.
        assert_eq!(ulaw(0), 0xff);
        assert_eq!(ulaw(-1), 0x7f);
        assert_eq!(ulaw(8), 0xfe);
        assert_eq!(ulaw(32767), 0x80);
        assert_eq!(ulaw(-32768), 0x00);
        // Monotonic in magnitude: a louder sample never encodes to a quieter code.
        let mag = |c: u8| {
            let c = !c;
            (c >> 4 & 7, c & 0xf)
        };
        let mut last = (0, 0);
        for s in (0..32767).step_by(97) {
            let m = mag(ulaw(s as i16));
            assert!(m >= last, "{s}");
            last = m;
        }
    }

    #[test]
    fn packets_and_sdp() {
        let p = packet(7, 1120, 0xdead_beef, true, &[0xff; FRAME]);
        assert_eq!(p.len(), 12 + FRAME);
        assert!(is_rtp(&p));
        assert_eq!((p[1], u16::from_be_bytes([p[2], p[3]])), (0x80, 7));
        assert_eq!(tone().len(), 8000);
        let sdp = b"v=0\r\no=- 1 1 IN IP4 198.18.1.11\r\ns=-\r\nc=IN IP4 198.18.1.11\r\nt=0 0\r\nm=audio 6002 RTP/AVP 0\r\nc=IN IP4 198.18.1.12\r\n";
        assert_eq!(
            audio_destination(sdp),
            Some("198.18.1.12:6002".parse().unwrap())
        );
        assert_eq!(audio_destination(b"v=0\r\nm=audio 1 RTP/AVP 0\r\n"), None);
    }
}
