//! The on-disk encoding of a record (the value stored under its key in a
//! shard tree, and in retry buffers). Decoding checks every length and never
//! panics. Layouts, by their first byte:
//! - format 2 (written): `[0x02][hlc: u64 BE][node: u64 BE][kind: 0 = tombstone, 1 = value]`
//!   then, for a value, `[value hash: 32 B][value bytes]`. The value hash is
//!   [`crate::merkle::value_hash`], so replacing a record updates its Merkle
//!   leaf without hashing the old value again.
//! - format 1 (read only, written before): the same without the value hash.
//!   Such records are rewritten as format 2 when their key is next written.

use super::StorageError;
use crate::merkle::{value_hash, Digest};
use crate::types::{Record, RecordHead, Version};
use bytes::Bytes;

const FORMAT: u8 = 2;
const FORMAT_1: u8 = 1;
const HEADER: usize = 1 + 8 + 8 + 1;
const HASH: usize = 32;

/// The encoding of `record`.
pub fn encode(record: &Record) -> Vec<u8> {
    encode_hashed(record).0
}

/// The encoding of `record` and its value hash, computed once for both.
pub fn encode_hashed(record: &Record) -> (Vec<u8>, Digest) {
    let hash = value_hash(record.value.as_deref());
    let mut out = Vec::with_capacity(HEADER + HASH + record.value_len());
    out.push(FORMAT);
    out.extend_from_slice(&record.version.hlc.to_be_bytes());
    out.extend_from_slice(&record.version.node.to_be_bytes());
    match &record.value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&hash);
            out.extend_from_slice(v);
        }
    }
    (out, hash)
}

/// Version and kind only, without copying the value.
pub fn decode_head(bytes: &[u8]) -> Result<RecordHead, StorageError> {
    let parts = split(bytes)?;
    Ok(RecordHead { version: parts.version, tombstone: parts.value.is_none() })
}

/// The Merkle digest of a stored record, from its stored value hash.
pub fn digest(key: &[u8], bytes: &[u8]) -> Result<Digest, StorageError> {
    let parts = split(bytes)?;
    let hash = parts.stored_hash.unwrap_or_else(|| value_hash(parts.value));
    Ok(crate::merkle::record_digest_with(key, parts.version, &hash))
}

/// The Merkle digest of a stored record hashed from its value bytes, and
/// whether a stored value hash disagrees with them (the bytes changed after
/// they were written).
pub fn digest_checked(key: &[u8], bytes: &[u8]) -> Result<(Digest, bool), StorageError> {
    let parts = split(bytes)?;
    let hash = value_hash(parts.value);
    let rotted = parts.stored_hash.is_some_and(|stored| stored != hash);
    Ok((crate::merkle::record_digest_with(key, parts.version, &hash), rotted))
}

pub fn decode(bytes: &[u8]) -> Result<Record, StorageError> {
    let parts = split(bytes)?;
    Ok(Record { version: parts.version, value: parts.value.map(Bytes::copy_from_slice) })
}

/// [`decode`] of a buffer the record can share instead of copying its value
/// out (an engine's stored bytes): the value is a slice of `bytes`.
pub fn decode_shared<B: AsRef<[u8]> + Send + 'static>(bytes: B) -> Result<Record, StorageError> {
    let (version, value_at) = {
        let raw = bytes.as_ref();
        let parts = split(raw)?;
        (parts.version, parts.value.map(|v| raw.len() - v.len()))
    };
    Ok(Record { version, value: value_at.map(|at| Bytes::from_owner(bytes).slice(at..)) })
}

struct Parts<'a> {
    version: Version,
    value: Option<&'a [u8]>,
    /// Present in format 2 values.
    stored_hash: Option<Digest>,
}

fn split(bytes: &[u8]) -> Result<Parts<'_>, StorageError> {
    if bytes.len() < HEADER {
        return Err(StorageError::Corrupt(format!("record is {} bytes, shorter than its {HEADER}-byte header", bytes.len())));
    }
    let format = bytes[0];
    if format != FORMAT && format != FORMAT_1 {
        return Err(StorageError::Corrupt(format!("record format {format} is unknown (expected {FORMAT_1} or {FORMAT})")));
    }
    let hlc = u64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes"));
    let node = u64::from_be_bytes(bytes[9..17].try_into().expect("8 bytes"));
    let version = Version { hlc, node };
    match (bytes[17], format) {
        (0, _) if bytes.len() == HEADER => Ok(Parts { version, value: None, stored_hash: None }),
        (0, _) => Err(StorageError::Corrupt("tombstone carries value bytes".into())),
        (1, FORMAT_1) => Ok(Parts { version, value: Some(&bytes[HEADER..]), stored_hash: None }),
        (1, _) if bytes.len() < HEADER + HASH => Err(StorageError::Corrupt("value record is shorter than its value hash".into())),
        (1, _) => {
            let stored: Digest = bytes[HEADER..HEADER + HASH].try_into().expect("32 bytes");
            Ok(Parts { version, value: Some(&bytes[HEADER + HASH..]), stored_hash: Some(stored) })
        }
        (k, _) => Err(StorageError::Corrupt(format!("record kind {k} is unknown"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Version = Version { hlc: 0x0102030405060708, node: 0x1112131415161718 };
    const HEAD: [u8; 17] = [1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 1];

    #[test]
    fn golden_bytes_format_2() {
        let rec = Record { version: V, value: Some(Bytes::from_static(b"hi")) };
        let hash = value_hash(Some(b"hi"));
        let expect = [&[2u8][..], &HEAD, &hash, b"hi"].concat();
        assert_eq!(&expect[..18], &[2, 1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 1]);
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "3b6cd9a830e28bfdd0bb9b049a3130144e14964ce2492e072434baf9d6396a61", "blake3(0x01 ‖ b\"hi\")");
        assert_eq!(encode(&rec), expect);
        assert_eq!(decode(&expect).unwrap(), rec);
        assert_eq!(decode_shared(expect.clone()).unwrap(), rec);
        assert_eq!(digest(b"k", &expect).unwrap(), crate::merkle::record_digest(b"k", V, Some(b"hi")));
        let tomb = Record { version: V, value: None };
        assert_eq!(encode(&tomb)[17..], [0]);
        assert_eq!(encode(&tomb).len(), 18);
        assert_eq!(decode(&encode(&tomb)).unwrap(), tomb);
        assert_eq!(decode_shared(encode(&tomb)).unwrap(), tomb);
    }

    #[test]
    fn format_1_records_still_read() {
        let v1 = [&[1u8][..], &HEAD, b"hi"].concat();
        assert_eq!(decode(&v1).unwrap(), Record { version: V, value: Some(Bytes::from_static(b"hi")) });
        assert_eq!(digest(b"k", &v1).unwrap(), crate::merkle::record_digest(b"k", V, Some(b"hi")));
        let tomb_v1 = [&v1[..17], &[0u8][..]].concat();
        assert_eq!(decode(&tomb_v1).unwrap(), Record { version: V, value: None });
    }

    #[test]
    fn a_value_that_changed_after_it_was_written_is_caught() {
        let mut bytes = encode(&Record { version: V, value: Some(Bytes::from_static(b"hello")) });
        assert!(!digest_checked(b"k", &bytes).unwrap().1);
        *bytes.last_mut().unwrap() ^= 1;
        let (d, rotted) = digest_checked(b"k", &bytes).unwrap();
        assert!(rotted);
        assert_eq!(d, crate::merkle::record_digest(b"k", V, Some(b"helln")), "the tree reflects the bytes actually held");
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        let short_hash = [&[2u8][..], &[0; 16], &[1], &[7; 10]].concat();
        for bad in [&[][..], &[1, 2, 3], &[9; 18], &[1; 17], &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7], &short_hash] {
            assert!(decode(bad).is_err(), "{bad:?}");
            assert!(decode_shared(bad.to_vec()).is_err(), "{bad:?}");
        }
        let mut tomb_with_value = encode(&Record { version: Version::default(), value: None });
        tomb_with_value.push(1);
        assert!(decode(&tomb_with_value).is_err());
    }
}
