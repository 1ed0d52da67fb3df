//! ICMP echo (RFC 792): the balancer answers pings to its VIPs and own addresses.

use super::checksum;
use super::{get_u16, set_u16, WireError};

pub const TYPE_ECHO_REPLY: u8 = 0;
pub const TYPE_ECHO_REQUEST: u8 = 8;
const TYPE: usize = 0;
const CODE: usize = 1;
const CHECKSUM: usize = 2;
pub const HEADER_LEN: usize = 8;

pub struct IcmpPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if checksum::checksum(buf.as_ref()) != 0 {
            return Err(WireError::Malformed);
        }
        Ok(Self { buf })
    }

    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[TYPE]
    }

    pub fn code(&self) -> u8 {
        self.buf.as_ref()[CODE]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Turns an echo request into its reply in place (type 8 → 0, checksum patched).
    pub fn make_echo_reply(&mut self) {
        let b = self.buf.as_mut();
        let old = get_u16(b, TYPE);
        b[TYPE] = TYPE_ECHO_REPLY;
        let new = get_u16(b, TYPE);
        let c = checksum::update16(get_u16(b, CHECKSUM), old, new);
        set_u16(b, CHECKSUM, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_reply_checksum_verifies() {
        let mut m = vec![
            TYPE_ECHO_REQUEST,
            0,
            0,
            0,
            0x12,
            0x34,
            0,
            1,
            b'p',
            b'i',
            b'n',
            b'g',
        ];
        let c = checksum::checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let mut p = IcmpPacket::new_checked(&mut m[..]).unwrap();
        assert_eq!(p.msg_type(), TYPE_ECHO_REQUEST);
        p.make_echo_reply();
        assert_eq!(p.msg_type(), TYPE_ECHO_REPLY);
        assert_eq!(checksum::checksum(&m), 0);
    }

    #[test]
    fn corrupt_icmp_is_malformed() {
        let m = [TYPE_ECHO_REQUEST, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(
            IcmpPacket::new_checked(&m[..]).err(),
            Some(WireError::Malformed)
        );
    }
}
