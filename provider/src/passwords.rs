//! Generated passwords for SQL logins and contained users.
//!
//! 32 characters from the OS random source, always with an upper-case letter, a lower-case
//! letter, a digit and a symbol, so SQL Server's password policy (CHECK_POLICY: 8+
//! characters from three of four classes, error 33064) accepts them. The symbol set avoids
//! quotes, semicolons, braces and backslashes: nothing a careless consumer could misquote.

/// Length of generated passwords.
pub const LENGTH: usize = 32;
const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
const DIGITS: &[u8] = b"23456789";
const SYMBOLS: &[u8] = b"-_.!#%+=:,";

/// Generates a password; fails only if the OS random source does.
pub fn generate() -> Result<String, getrandom::Error> {
    let all: Vec<u8> = [UPPER, LOWER, DIGITS, SYMBOLS].concat();
    let mut random = [0u8; LENGTH * 2];
    getrandom::fill(&mut random)?;
    // Rejection sampling keeps the choice uniform: bytes at or above the largest multiple of
    // the alphabet size are skipped (the doubled buffer leaves room; refill if it runs out).
    loop {
        let mut bytes = random.iter().copied();
        let mut out = Vec::with_capacity(LENGTH);
        for class in [UPPER, LOWER, DIGITS, SYMBOLS] {
            out.extend(pick(class, &mut bytes));
        }
        while out.len() < LENGTH {
            match pick(&all, &mut bytes) {
                Some(c) => out.push(c),
                None => break,
            }
        }
        if out.len() == LENGTH {
            // Move the four guaranteed characters to random places.
            let mut positions = [0u8; 4];
            getrandom::fill(&mut positions)?;
            for (i, p) in positions.iter().enumerate() {
                out.swap(i, *p as usize % LENGTH);
            }
            return Ok(String::from_utf8(out).expect("ASCII alphabet"));
        }
        getrandom::fill(&mut random)?;
    }
}

/// Picks one character of `alphabet` uniformly, skipping biased bytes.
fn pick<I: Iterator<Item = u8>>(alphabet: &[u8], bytes: &mut I) -> Option<u8> {
    let limit = 256 - (256 % alphabet.len());
    bytes
        .find(|b| (*b as usize) < limit)
        .map(|b| alphabet[b as usize % alphabet.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_meet_the_policy_and_differ() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let p = generate().unwrap();
            assert_eq!(p.len(), LENGTH);
            assert!(p.bytes().any(|b| UPPER.contains(&b)), "{p}");
            assert!(p.bytes().any(|b| LOWER.contains(&b)), "{p}");
            assert!(p.bytes().any(|b| DIGITS.contains(&b)), "{p}");
            assert!(p.bytes().any(|b| SYMBOLS.contains(&b)), "{p}");
            assert!(!p.contains(['\'', '"', ';', '{', '}', '\\', ' ']), "{p}");
            assert!(seen.insert(p), "no repeats");
        }
    }
}
