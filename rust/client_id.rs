//! Client ids and browser ids: 40 lowercase hex characters. The first 16 encode the Unix time in
//! nanoseconds (low 64 bits), the last 24 come from the operating system's CSPRNG.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

const LEN: usize = 20;

/// A 160-bit id, printed as 40 lowercase hex characters. Used for both `clientId` and the
/// `BAYEUX_BROWSER` cookie value, which share one format.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id([u8; LEN]);

impl Id {
    /// A fresh id: time prefix for rough ordering, random suffix for unguessability.
    pub fn generate() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut bytes = [0u8; LEN];
        bytes[..8].copy_from_slice(&nanos.to_be_bytes());
        // The OS generator failing is not recoverable in any useful way for a server.
        getrandom::fill(&mut bytes[8..]).expect("the operating system's random generator failed");
        Id(bytes)
    }

    /// Parses exactly 40 lowercase hex characters; anything else (length, case, non-ASCII) is `None`.
    /// Works on bytes, so no input can split a multi-byte character.
    pub fn parse(text: &str) -> Option<Self> {
        let raw = text.as_bytes();
        if raw.len() != LEN * 2 {
            return None;
        }
        let mut bytes = [0u8; LEN];
        for (out, pair) in bytes.iter_mut().zip(raw.chunks_exact(2)) {
            *out = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Some(Id(bytes))
    }

    /// The Unix time in nanoseconds (low 64 bits) when this id was generated.
    pub fn timestamp_nanos(&self) -> u64 {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(prefix)
    }

    /// Writes the 40 hex characters into `out` without allocating.
    pub fn write_hex(&self, out: &mut Vec<u8>) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for byte in self.0 {
            out.push(DIGITS[(byte >> 4) as usize]);
            out.push(DIGITS[(byte & 0x0f) as usize]);
        }
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::with_capacity(LEN * 2);
        self.write_hex(&mut out);
        // write_hex only emits ASCII hex digits.
        f.write_str(std::str::from_utf8(&out).unwrap_or_default())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_round_trip_and_differ() {
        let a = Id::generate();
        let b = Id::generate();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 40);
        assert!(text
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_eq!(Id::parse(&text), Some(a));
    }

    #[test]
    fn prefix_is_the_time_in_nanoseconds() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let id = Id::generate();
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert!(before <= id.timestamp_nanos() && id.timestamp_nanos() <= after);
    }

    #[test]
    fn parse_rejects_anything_but_forty_lowercase_hex() {
        let good = "0123456789abcdef0123456789abcdef01234567";
        assert!(Id::parse(good).is_some());
        assert!(Id::parse(&good.to_uppercase()).is_none());
        assert!(Id::parse(&good[..39]).is_none());
        assert!(Id::parse(&format!("{good}0")).is_none());
        assert!(Id::parse("").is_none());
        // Multi-byte characters whose byte length is 40 must not panic or pass.
        assert!(Id::parse(&"é".repeat(20)).is_none());
        assert!(Id::parse(&format!("{}é", &good[..38])).is_none());
        assert!(Id::parse("g123456789abcdef0123456789abcdef01234567").is_none());
    }
}
