//! Authentication of peer requests: `blake3::keyed_hash(key, method ‖ path ‖
//! timestamp ‖ sender ‖ blake3(body))`, key derived from the cluster secret,
//! carried as `x-hearsay-auth: <sender> <unix ms> <mac hex>`. A request whose
//! MAC is missing or wrong, or whose timestamp is more than 30 s off, is refused.
//! The MAC is checked first, so the send time of a refused-as-stale request
//! is known to come from a holder of the secret (see [`crate::clock::PeerClocks`]).

pub const HEADER: &str = "x-hearsay-auth";
/// Largest accepted clock difference between sender and receiver.
pub const MAX_SKEW_MS: u64 = 30_000;
/// Shortest accepted cluster secret.
pub const MIN_SECRET_LEN: usize = 16;

#[derive(Clone)]
pub struct MacKey([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing x-hearsay-auth header")]
    Missing,
    #[error("malformed x-hearsay-auth header")]
    Malformed,
    #[error("request timestamp is {skew_ms} ms away from this node's clock (limit {MAX_SKEW_MS} ms)")]
    Stale { skew_ms: u64 },
    #[error("request MAC does not match (wrong cluster secret or altered request)")]
    BadMac,
    #[error("the cluster secret must be at least {MIN_SECRET_LEN} bytes, got {0}")]
    ShortSecret(usize),
}

impl MacKey {
    pub fn from_secret(secret: &[u8]) -> Result<MacKey, AuthError> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_SECRET_LEN {
            return Err(AuthError::ShortSecret(secret.len()));
        }
        Ok(MacKey(blake3::derive_key("hearsay peer request mac v1", secret)))
    }

    fn mac(&self, method: &str, path: &str, ts_ms: u64, sender: &str, body: &[u8]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        for part in [method.as_bytes(), path.as_bytes(), &ts_ms.to_be_bytes(), sender.as_bytes(), blake3::hash(body).as_bytes()] {
            // Length-prefixed, so no two field splits give the same input.
            h.update(&(part.len() as u32).to_be_bytes());
            h.update(part);
        }
        h.finalize()
    }

    /// The header value for a request.
    pub fn sign(&self, method: &str, path: &str, ts_ms: u64, sender: &str, body: &[u8]) -> String {
        format!("{sender} {ts_ms} {}", self.mac(method, path, ts_ms, sender, body).to_hex())
    }

    /// Checks a request's MAC but not its age: who sent it and when by the
    /// sender's clock, which the caller checks with [`Signed::check_fresh`]
    /// (after learning from it how far the sender's clock is from its own).
    pub fn authenticate<'h>(&self, header: Option<&'h str>, method: &str, path: &str, body: &[u8]) -> Result<Signed<'h>, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let mut parts = header.split(' ');
        let (Some(sender), Some(ts), Some(mac), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(AuthError::Malformed);
        };
        let sent_ms: u64 = ts.parse().map_err(|_| AuthError::Malformed)?;
        let given = blake3::Hash::from_hex(mac).map_err(|_| AuthError::Malformed)?;
        // blake3::Hash compares in constant time.
        if self.mac(method, path, sent_ms, sender, body) != given {
            return Err(AuthError::BadMac);
        }
        Ok(Signed { sender, sent_ms })
    }
}

/// An authenticated request's sender and its send time by the sender's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signed<'h> {
    pub sender: &'h str,
    pub sent_ms: u64,
}

impl Signed<'_> {
    /// Refuses a request sent more than [`MAX_SKEW_MS`] away from `now_ms`,
    /// which bounds how long a captured request can be replayed.
    pub fn check_fresh(&self, now_ms: u64) -> Result<(), AuthError> {
        let skew_ms = now_ms.abs_diff(self.sent_ms);
        if skew_ms > MAX_SKEW_MS {
            return Err(AuthError::Stale { skew_ms });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the server side does: the MAC, then the age; the sender's name.
    fn verify<'h>(key: &MacKey, header: Option<&'h str>, method: &str, path: &str, body: &[u8], now_ms: u64) -> Result<&'h str, AuthError> {
        let signed = key.authenticate(header, method, path, body)?;
        signed.check_fresh(now_ms)?;
        Ok(signed.sender)
    }

    #[test]
    fn sign_verify_and_every_way_to_fail() {
        let key = MacKey::from_secret(b"0123456789abcdef-secret").unwrap();
        let now = 1_800_000_000_000;
        let h = key.sign("POST", "/internal/apply", now, "n1", b"body");
        assert_eq!(verify(&key, Some(&h), "POST", "/internal/apply", b"body", now + 5), Ok("n1"));
        assert_eq!(verify(&key, None, "POST", "/internal/apply", b"body", now), Err(AuthError::Missing));
        assert_eq!(verify(&key, Some("n1 12"), "POST", "/internal/apply", b"body", now), Err(AuthError::Malformed));
        assert_eq!(verify(&key, Some(&h), "POST", "/internal/apply", b"bodY", now), Err(AuthError::BadMac));
        assert_eq!(verify(&key, Some(&h), "POST", "/internal/read", b"body", now), Err(AuthError::BadMac));
        assert_eq!(verify(&key, Some(&h), "POST", "/internal/apply", b"body", now + 31_000), Err(AuthError::Stale { skew_ms: 31_000 }));
        let forged = h.replacen("n1", "n2", 1);
        assert_eq!(verify(&key, Some(&forged), "POST", "/internal/apply", b"body", now), Err(AuthError::BadMac));
        let other = MacKey::from_secret(b"another-secret-of-16").unwrap();
        assert_eq!(verify(&other, Some(&h), "POST", "/internal/apply", b"body", now), Err(AuthError::BadMac));
        assert!(matches!(MacKey::from_secret(b"short"), Err(AuthError::ShortSecret(5))));
        // A stale request is still authenticated first: its sender and send time are known.
        let old = key.authenticate(Some(&h), "POST", "/internal/apply", b"body").unwrap();
        assert_eq!(old, Signed { sender: "n1", sent_ms: now });
        assert_eq!(old.check_fresh(now - 31_000), Err(AuthError::Stale { skew_ms: 31_000 }));
        assert_eq!(key.authenticate(Some(&h), "POST", "/internal/apply", b"bodY"), Err(AuthError::BadMac));
    }
}
