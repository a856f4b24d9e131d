//! The on-disk encoding of a record (the value stored under its key in a
//! shard tree). Layout, format 1:
//! `[0x01][hlc: u64 BE][node: u64 BE][kind: 0 = tombstone, 1 = value][value bytes]`.
//! Decoding checks every length and never panics.

use super::StorageError;
use crate::types::{Record, RecordHead, Version};
use bytes::Bytes;

const FORMAT: u8 = 1;
const HEADER: usize = 1 + 8 + 8 + 1;

pub fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + record.value_len());
    out.push(FORMAT);
    out.extend_from_slice(&record.version.hlc.to_be_bytes());
    out.extend_from_slice(&record.version.node.to_be_bytes());
    match &record.value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            out.extend_from_slice(v);
        }
    }
    out
}

/// Version and kind only, without copying the value.
pub fn decode_head(bytes: &[u8]) -> Result<RecordHead, StorageError> {
    let (version, value) = split(bytes)?;
    Ok(RecordHead { version, tombstone: value.is_none() })
}

/// The Merkle digest of a stored record, hashed straight from its bytes.
pub fn digest(key: &[u8], bytes: &[u8]) -> Result<crate::merkle::Digest, StorageError> {
    let (version, value) = split(bytes)?;
    Ok(crate::merkle::record_digest(key, version, value))
}

pub fn decode(bytes: &[u8]) -> Result<Record, StorageError> {
    let (version, value) = split(bytes)?;
    Ok(Record { version, value: value.map(Bytes::copy_from_slice) })
}

fn split(bytes: &[u8]) -> Result<(Version, Option<&[u8]>), StorageError> {
    if bytes.len() < HEADER {
        return Err(StorageError::Corrupt(format!("record is {} bytes, shorter than its {HEADER}-byte header", bytes.len())));
    }
    if bytes[0] != FORMAT {
        return Err(StorageError::Corrupt(format!("record format {} is unknown (expected {FORMAT})", bytes[0])));
    }
    let hlc = u64::from_be_bytes(bytes[1..9].try_into().expect("8 bytes"));
    let node = u64::from_be_bytes(bytes[9..17].try_into().expect("8 bytes"));
    let value = match bytes[17] {
        0 if bytes.len() == HEADER => None,
        0 => return Err(StorageError::Corrupt("tombstone carries value bytes".into())),
        1 => Some(&bytes[HEADER..]),
        k => return Err(StorageError::Corrupt(format!("record kind {k} is unknown"))),
    };
    Ok((Version { hlc, node }, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes() {
        let v = Version { hlc: 0x0102030405060708, node: 0x1112131415161718 };
        let rec = Record { version: v, value: Some(Bytes::from_static(b"hi")) };
        let expect = [1, 1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 1, b'h', b'i'];
        assert_eq!(encode(&rec), expect);
        assert_eq!(decode(&expect).unwrap(), rec);
        let tomb = Record { version: v, value: None };
        assert_eq!(encode(&tomb)[17..], [0]);
        assert_eq!(decode(&encode(&tomb)).unwrap(), tomb);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [&[][..], &[1, 2, 3], &[9; 18], &[1; 17], &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let mut tomb_with_value = encode(&Record { version: Version::default(), value: None });
        tomb_with_value.push(1);
        assert!(decode(&tomb_with_value).is_err());
    }
}
