//! Password rotation without storing the password: SQL Server's own `PWDCOMPARE`, computed
//! in the worker from `sys.sql_logins.password_hash` (`0x0200 ‖ salt(4) ‖
//! SHA-512(UTF-16LE(password) ‖ salt)`, the format of SQL Server 2012 and later). The worker
//! reads the hash in its batched observe query, compares it with the Secret's current value,
//! and issues `ALTER LOGIN … WITH PASSWORD` only when they differ. Neither the password nor a
//! derivative of it is written anywhere.

use sha2::{Digest, Sha512};

/// What comparing the Secret's password with the server's hash found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordState {
    /// The server has this password.
    Matches,
    /// The server has another password: rotate.
    Differs,
    /// Cannot tell (hash not visible without CONTROL SERVER, an older hash format, or no
    /// Secret value at hand): never rotate on a guess.
    Unknown,
}

/// `PWDCOMPARE(candidate, hash)` for the 0x0200 format.
pub fn compare(candidate: &str, hash: Option<&[u8]>) -> PasswordState {
    let Some(hash) = hash else {
        return PasswordState::Unknown;
    };
    if hash.len() != 70 || hash[..2] != [0x02, 0x00] {
        return PasswordState::Unknown;
    }
    let salt = &hash[2..6];
    let mut h = Sha512::new();
    for unit in candidate.encode_utf16() {
        h.update(unit.to_le_bytes());
    }
    h.update(salt);
    if h.finalize().as_slice() == &hash[6..] {
        PasswordState::Matches
    } else {
        PasswordState::Differs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(pw: &str, salt: [u8; 4]) -> Vec<u8> {
        let mut h = Sha512::new();
        for unit in pw.encode_utf16() {
            h.update(unit.to_le_bytes());
        }
        h.update(salt);
        let mut out = vec![0x02, 0x00];
        out.extend_from_slice(&salt);
        out.extend_from_slice(&h.finalize());
        out
    }

    #[test]
    fn compare_table() {
        let stored = hash("Pässw0rd!", [1, 2, 3, 4]);
        let cases: Vec<(&str, &str, Option<&[u8]>, PasswordState)> = vec![
            (
                "same password, non-ASCII",
                "Pässw0rd!",
                Some(&stored),
                PasswordState::Matches,
            ),
            ("rotated", "Other!Passw0rd", Some(&stored), PasswordState::Differs),
            ("case matters", "pässw0rd!", Some(&stored), PasswordState::Differs),
            (
                "hash hidden (no CONTROL SERVER)",
                "x",
                None,
                PasswordState::Unknown,
            ),
            (
                "SHA-1 era format",
                "x",
                Some(&[0x01, 0x00, 1, 2]),
                PasswordState::Unknown,
            ),
        ];
        for (why, candidate, h, want) in cases {
            assert_eq!(compare(candidate, h), want, "{why}");
        }
    }
}
