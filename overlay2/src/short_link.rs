//! Short links: `l/<26 characters>` → `../<id>/diff`, so a legacy mount's option string
//! names each lower layer in 28 bytes whatever the root path and layer id.

use std::io::Read;

/// Length of a short link name.
pub const LEN: usize = 26;

/// A new random name from `[A-Z2-7]` (base32 of 16 random bytes, as peers use).
pub fn random_name() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(base32(&bytes)[..LEN].to_owned())
}

fn base32(b: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &x in b {
        acc = (acc << 8) | u32::from(x);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Whether `s` could be a short link name (so a damaged `link` file is noticed).
pub fn is_valid(s: &str) -> bool {
    s.len() == LEN
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_26_base32_characters() {
        let n = random_name().unwrap();
        assert!(is_valid(&n), "{n}");
        assert_ne!(n, random_name().unwrap());
        assert!(!is_valid("short"));
        assert!(!is_valid(&"a".repeat(26)));
        assert_eq!(base32(b"\0\0\0\0\0"), "AAAAAAAA");
    }
}
