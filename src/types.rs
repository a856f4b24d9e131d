//! The data model shared by every part: keys, versions, records, node ids and
//! shards (DESIGN.md §1, §2). Pure values; nothing here does I/O.

use bytes::Bytes;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::fmt;
use std::str::FromStr;

/// Longest key accepted anywhere, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Why a byte string is not a valid key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is empty; keys are 1..={max} bytes", max = MAX_KEY_LEN)]
    Empty,
    #[error("key is {len} bytes; the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("key is not valid percent-encoding: {0}")]
    BadEncoding(String),
}

/// A key: 1..=1024 arbitrary bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Bytes);

/// Bytes left as they are in a key's URL form: RFC 3986 unreserved and `/`.
const KEY_URL_SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

impl Key {
    pub fn new(bytes: impl Into<Bytes>) -> Result<Key, KeyError> {
        let bytes = bytes.into();
        check_key_len(bytes.len())?;
        Ok(Key(bytes))
    }

    /// Decodes the part of a URL path after `/v1/kv/`. The length is checked on
    /// the encoded form first (decoding never grows it), so an oversized key
    /// is refused before any copy is made.
    pub fn from_url_path(encoded: &str) -> Result<Key, KeyError> {
        if encoded.is_empty() {
            return Err(KeyError::Empty);
        }
        if encoded.len() > 3 * MAX_KEY_LEN {
            return Err(KeyError::TooLong { len: encoded.len(), max: MAX_KEY_LEN });
        }
        let bytes = decode_percent(encoded)?;
        Key::new(bytes)
    }

    /// The key as it appears in a URL path: `/` and unreserved bytes kept.
    pub fn to_url_path(&self) -> String {
        encode_key_bytes(&self.0)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn bytes(&self) -> Bytes {
        self.0.clone()
    }
}

pub fn check_key_len(len: usize) -> Result<(), KeyError> {
    match len {
        0 => Err(KeyError::Empty),
        n if n > MAX_KEY_LEN => Err(KeyError::TooLong { len: n, max: MAX_KEY_LEN }),
        _ => Ok(()),
    }
}

/// Percent-encodes arbitrary bytes the way keys appear in URLs.
pub fn encode_key_bytes(bytes: &[u8]) -> String {
    // Non-UTF-8 bytes are encoded byte by byte, so any key round-trips.
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.extend(utf8_percent_encode(chunk.valid(), KEY_URL_SET));
        for b in chunk.invalid() {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Strict percent-decoding: a `%` must be followed by two hex digits.
pub fn decode_percent(encoded: &str) -> Result<Vec<u8>, KeyError> {
    let raw = encoded.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let ok = raw.len() >= i + 3 && raw[i + 1].is_ascii_hexdigit() && raw[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(KeyError::BadEncoding(format!("'%' at byte {i} is not followed by two hex digits")));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(percent_decode_str(encoded).collect())
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.to_url_path())
    }
}

/// The 64-bit tag of a node: the first 8 bytes of `blake3(name)`.
pub type NodeTag = u64;

/// A node's name as given by `--node-id` (e.g. `n1`), and its tag.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    name: String,
    tag: NodeTag,
}

/// Why a node name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node id {0:?} is invalid: use 1..=64 characters from [A-Za-z0-9._-]")]
pub struct NodeIdError(pub String);

impl NodeId {
    pub fn new(name: &str) -> Result<NodeId, NodeIdError> {
        let valid = !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(NodeIdError(name.to_string()));
        }
        Ok(NodeId { name: name.to_string(), tag: node_tag(name) })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tag(&self) -> NodeTag {
        self.tag
    }
}

pub fn node_tag(name: &str) -> NodeTag {
    let hash = blake3::hash(name.as_bytes());
    u64::from_le_bytes(hash.as_bytes()[0..8].try_into().expect("8 bytes"))
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.name)
    }
}

/// A version: hybrid-logical-clock stamp, then the writer's tag. The derived
/// order compares `hlc` first, then `node`: last writer wins, ties broken by
/// node, so every replica picks the same winner.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Version {
    /// 48-bit unix milliseconds << 16 | 16-bit logical counter.
    pub hlc: u64,
    pub node: NodeTag,
}

impl Version {
    /// Unix milliseconds of the stamp's physical part.
    pub fn millis(&self) -> u64 {
        self.hlc >> 16
    }
}

impl Version {
    /// The text form `<hlc hex>-<node hex>` (as [`fmt::Display`] writes it),
    /// without allocating: it goes into two headers of every write's answer.
    pub fn hex(&self) -> [u8; 33] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 33];
        for (i, part) in [self.hlc, self.node].into_iter().enumerate() {
            for d in 0..16 {
                out[i * 17 + d] = DIGITS[((part >> (60 - 4 * d)) & 0xf) as usize];
            }
        }
        out
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.hex()).expect("hex digits are ASCII"))
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({self})")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a version; expected 16 hex digits, '-', 16 hex digits")]
pub struct VersionParseError(pub String);

impl FromStr for Version {
    type Err = VersionParseError;
    fn from_str(s: &str) -> Result<Version, VersionParseError> {
        let err = || VersionParseError(s.chars().take(80).collect());
        let (hlc, node) = s.split_once('-').ok_or_else(err)?;
        if hlc.len() != 16 || node.len() != 16 {
            return Err(err());
        }
        Ok(Version { hlc: u64::from_str_radix(hlc, 16).map_err(|_| err())?, node: u64::from_str_radix(node, 16).map_err(|_| err())? })
    }
}

/// A versioned value; `value: None` is a tombstone (a delete).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Record {
    pub version: Version,
    pub value: Option<Bytes>,
}

impl Record {
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Bytes of value carried (0 for a tombstone).
    pub fn value_len(&self) -> usize {
        self.value.as_ref().map_or(0, |v| v.len())
    }
}

/// What apply decisions need of a stored record: its version and kind,
/// without copying the value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RecordHead {
    pub version: Version,
    pub tombstone: bool,
}

impl Record {
    pub fn head(&self) -> RecordHead {
        RecordHead { version: self.version, tombstone: self.is_tombstone() }
    }
}

/// A shard number in `0..S`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `shard(key) = u64::from_le_bytes(blake3(key)[0..8]) % S`.
pub fn shard_of(key: &[u8], shards: u32) -> ShardId {
    let hash = blake3::hash(key);
    let n = u64::from_le_bytes(hash.as_bytes()[0..8].try_into().expect("8 bytes"));
    ShardId((n % u64::from(shards)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_hlc_then_node() {
        let a = Version { hlc: 5, node: 9 };
        let b = Version { hlc: 6, node: 1 };
        let c = Version { hlc: 6, node: 2 };
        assert!(a < b && b < c);
        assert_eq!(c.to_string().parse::<Version>().unwrap(), c);
        assert!("zz".parse::<Version>().is_err());
        let v = Version { hlc: 0x0123_4567_89ab_cdef, node: 0xfedc_ba98_7654_3210 };
        assert_eq!(v.to_string(), "0123456789abcdef-fedcba9876543210");
        assert_eq!(Version { hlc: 1, node: 0 }.to_string(), "0000000000000001-0000000000000000");
        assert!("0000000000000001-00000000000000zz".parse::<Version>().is_err());
    }

    #[test]
    fn key_limits_and_url_round_trip() {
        assert_eq!(Key::new(Vec::new()), Err(KeyError::Empty));
        assert!(Key::new(vec![b'a'; MAX_KEY_LEN]).is_ok());
        assert_eq!(Key::new(vec![b'a'; MAX_KEY_LEN + 1]), Err(KeyError::TooLong { len: 1025, max: 1024 }));
        for raw in [&b"a/b/c"[..], "ünï/cødé".as_bytes(), &[0xff, 0x00, b'%', b'/'][..]] {
            let key = Key::new(raw.to_vec()).unwrap();
            assert_eq!(Key::from_url_path(&key.to_url_path()).unwrap(), key);
        }
        assert_eq!(Key::from_url_path("a%2Fb").unwrap().as_bytes(), b"a/b");
        assert!(matches!(Key::from_url_path("a%zz"), Err(KeyError::BadEncoding(_))));
        assert!(matches!(Key::from_url_path("a%2"), Err(KeyError::BadEncoding(_))));
    }

    #[test]
    fn shard_and_tag_are_the_documented_hashes() {
        // Golden values: changing them re-homes every key of every cluster.
        assert_eq!(node_tag("n1"), u64::from_le_bytes(blake3::hash(b"n1").as_bytes()[0..8].try_into().unwrap()));
        let s = shard_of(b"hello", 64);
        let h = u64::from_le_bytes(blake3::hash(b"hello").as_bytes()[0..8].try_into().unwrap());
        assert_eq!(u64::from(s.0), h % 64);
        assert!(NodeId::new("n1").is_ok());
        assert!(NodeId::new("bad name").is_err());
        assert!(NodeId::new("").is_err());
    }
}

/// How many replicas must answer a request (`?w=` / `?r=`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Consistency {
    One,
    #[default]
    Quorum,
    All,
}

impl Consistency {
    /// Replicas required out of `replicas`.
    pub fn required(self, replicas: usize) -> usize {
        match self {
            Consistency::One => 1.min(replicas),
            Consistency::Quorum => replicas / 2 + 1,
            Consistency::All => replicas,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a consistency level; use one, quorum or all")]
pub struct ConsistencyParseError(pub String);

impl FromStr for Consistency {
    type Err = ConsistencyParseError;
    fn from_str(s: &str) -> Result<Consistency, ConsistencyParseError> {
        match s {
            "one" => Ok(Consistency::One),
            "quorum" => Ok(Consistency::Quorum),
            "all" => Ok(Consistency::All),
            other => Err(ConsistencyParseError(other.chars().take(40).collect())),
        }
    }
}
