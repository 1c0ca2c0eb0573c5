//! Entra ID security tokens in LOGIN7's FEDAUTH feature (spec A7, security-token library):
//! the JWT's `oid` (else `appid`) is mapped to an external login whose SID is that GUID. When
//! the emulator is configured with an HS256 key the signature must verify; without one the
//! signature is not checked (spec C1.2 allows both for v1).

use sha2::{Digest, Sha256};

/// Why a token was refused (always reported to the client as 18456).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("federated authentication refused: {0}")]
pub struct FedAuthError(pub String);

fn fail<T>(m: impl Into<String>) -> Result<T, FedAuthError> {
    Err(FedAuthError(m.into()))
}

/// The FEDAUTH feature data of a LOGIN7.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FedAuthRequest {
    /// Library 0x01: a security token (a JWT).
    SecurityToken {
        /// fFedAuthEcho.
        echo: bool,
        /// The token text.
        token: String,
    },
    /// Library 0x02: the ADAL workflow (not supported).
    Adal {
        /// Workflow byte.
        workflow: u8,
    },
}

/// Parses FEDAUTH feature data.
pub fn parse_feature(data: &[u8]) -> Result<FedAuthRequest, FedAuthError> {
    let Some((&opts, rest)) = data.split_first() else {
        return fail("empty FEDAUTH feature");
    };
    match opts >> 1 {
        0x01 => {
            if rest.len() < 4 {
                return fail("short FEDAUTH token length");
            }
            let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let Some(tok) = rest.get(4..4usize.saturating_add(n)) else {
                return fail("FEDAUTH token out of range");
            };
            Ok(FedAuthRequest::SecurityToken {
                echo: opts & 1 != 0,
                token: crate::tds::utf16_to_string(tok),
            })
        }
        0x02 => Ok(FedAuthRequest::Adal {
            workflow: rest.first().copied().unwrap_or(0),
        }),
        other => fail(format!("unknown FEDAUTH library {other}")),
    }
}

/// Decodes base64url without padding (RFC 7515 §2).
pub fn base64url(s: &str) -> Result<Vec<u8>, FedAuthError> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return fail("invalid base64url"),
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// Encodes base64url without padding (used by tests to build tokens).
pub fn base64url_encode(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, x)| a | (*x as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new().chain_update(&ipad).chain_update(msg).finalize();
    let outer = Sha256::new().chain_update(&opad).chain_update(inner).finalize();
    outer.into()
}

/// Builds an HS256 JWT with `claims` (used by tests and examples).
pub fn sign_hs256(claims: &serde_json::Value, key: &[u8]) -> String {
    let head = base64url_encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = base64url_encode(claims.to_string().as_bytes());
    let sig = hmac_sha256(key, format!("{head}.{body}").as_bytes());
    format!("{head}.{body}.{}", base64url_encode(&sig))
}

/// Validates a token and returns the SID (GUID bytes) of the principal it names.
pub fn principal_sid(token: &str, hs256_key: Option<&[u8]>, now_s: i64) -> Result<Vec<u8>, FedAuthError> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return fail("not a JWS compact token");
    }
    let header: serde_json::Value =
        serde_json::from_slice(&base64url(parts[0])?).map_err(|e| FedAuthError(format!("header: {e}")))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&base64url(parts[1])?).map_err(|e| FedAuthError(format!("claims: {e}")))?;
    if let Some(key) = hs256_key {
        if header["alg"] != "HS256" {
            return fail("signature algorithm is not HS256");
        }
        let want = hmac_sha256(key, format!("{}.{}", parts[0], parts[1]).as_bytes());
        let got = base64url(parts[2])?;
        // Constant-time comparison is moot in a test emulator, but cheap.
        if got.len() != want.len() || got.iter().zip(want.iter()).fold(0u8, |a, (x, y)| a | (x ^ y)) != 0 {
            return fail("bad signature");
        }
    }
    if let Some(exp) = claims["exp"].as_i64()
        && exp < now_s
    {
        return fail("token expired");
    }
    let id = claims["oid"]
        .as_str()
        .or_else(|| claims["appid"].as_str())
        .ok_or_else(|| FedAuthError("no oid or appid claim".into()))?;
    crate::engine::parse_guid(id).ok_or_else(|| FedAuthError(format!("oid {id:?} is not a GUID")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn base64url_round_trips() {
        for s in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\xff\xfe\x00"] {
            assert_eq!(base64url(&base64url_encode(s)).expect("decodes"), s);
        }
    }

    #[test]
    fn tokens_are_checked() {
        let g = "6a1b3a7e-1f0c-4c55-9d1e-2f3a4b5c6d7e";
        let key = b"k";
        let good = sign_hs256(&serde_json::json!({"oid": g, "exp": 2_000_000_000i64}), key);
        // (token, key, expected ok): why each case exists is in its label.
        let cases: Vec<(&str, String, Option<&[u8]>, bool)> = vec![
            ("signed with the configured key", good.clone(), Some(key), true),
            (
                "no key configured: signature not checked",
                good.clone(),
                None,
                true,
            ),
            ("wrong key", good.clone(), Some(b"other"), false),
            (
                "expired",
                sign_hs256(&serde_json::json!({"oid": g, "exp": 1}), key),
                Some(key),
                false,
            ),
            (
                "no oid/appid",
                sign_hs256(&serde_json::json!({"sub": "x"}), key),
                Some(key),
                false,
            ),
            ("garbage", "a.b".to_string(), None, false),
        ];
        for (label, tok, k, want) in cases {
            assert_eq!(principal_sid(&tok, k, 1_900_000_000).is_ok(), want, "{label}");
        }
    }
}
