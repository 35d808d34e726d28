//! Stable short names for dataplane chains.
//!
//! Chain names must be short (iptables allows 28 characters) and stable across restarts and
//! versions, so a proxy that restarts recognises the chains it wrote. A name is the 128-bit
//! FNV-1a hash of its input, finished by a multiply-xorshift mix, of which the first 80 bits are spelled in RFC 4648 base32
//! (`A`–`Z`, `2`–`7`): 16 characters.

use std::fmt::{self, Write as _};
use std::net::SocketAddr;

use super::ServicePortName;

const FNV_OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
const FNV_PRIME: u128 = 0x0000000001000000000000000000013B;
const MIX: u128 = 0x9e3779b97f4a7c15f39cc0605cedc835;
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// FNV-1a over whatever is written into it, so hashed names need no temporary string.
struct Hasher(u128);

impl Hasher {
    fn new() -> Self {
        Hasher(FNV_OFFSET)
    }

    fn finish(self) -> String {
        let mut hash = self.0;
        // FNV's last bytes barely reach the high bits; a final mix spreads them over all bits.
        hash ^= hash >> 67;
        hash = hash.wrapping_mul(MIX);
        hash ^= hash >> 59;
        hash = hash.wrapping_mul(MIX);
        hash ^= hash >> 64;
        (0..16)
            .map(|i| char::from(BASE32[((hash >> (123 - 5 * i)) & 0x1f) as usize]))
            .collect()
    }
}

impl fmt::Write for Hasher {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        for byte in text.bytes() {
            self.0 ^= u128::from(byte);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
        Ok(())
    }
}

/// The 16-character base32 hash of `input`.
pub fn short_hash(input: &str) -> String {
    let mut hasher = Hasher::new();
    let _ = hasher.write_str(input);
    hasher.finish()
}

/// The hash naming a Service port's chains: of `namespace/name:port` and its protocol.
pub fn service_hash(name: &ServicePortName) -> String {
    let mut hasher = Hasher::new();
    let _ = write!(hasher, "{name}{}", name.protocol);
    hasher.finish()
}

/// The hash naming one endpoint's chain of a Service port.
pub fn endpoint_hash(name: &ServicePortName, endpoint: &SocketAddr) -> String {
    let mut hasher = Hasher::new();
    let _ = write!(hasher, "{name}{}{endpoint}", name.protocol);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Protocol;

    #[test]
    fn hashes_are_stable_base32_of_sixteen_characters() {
        // Fixed values: a change here renames every chain on every node.
        assert_eq!(short_hash(""), "NFEIBDNOUBVZTOTT");
        let hash = short_hash("default/web:httptcp");
        assert_eq!(hash.len(), 16);
        assert!(hash
            .chars()
            .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c)));
        assert_eq!(hash, short_hash("default/web:httptcp"));
    }

    #[test]
    fn the_protocol_and_the_endpoint_change_the_hash() {
        let tcp = ServicePortName::new("default", "dns", "dns", Protocol::Tcp);
        let udp = ServicePortName::new("default", "dns", "dns", Protocol::Udp);
        assert_ne!(service_hash(&tcp), service_hash(&udp));
        let a = endpoint_hash(&tcp, &"10.0.0.1:53".parse().unwrap());
        let b = endpoint_hash(&tcp, &"10.0.0.2:53".parse().unwrap());
        assert_ne!(a, b);
    }
}
