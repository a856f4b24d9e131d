//! The one codec for peer messages: `[format byte][postcard body]`.
//! Decoding never panics and never allocates more than the input implies.
//! The format byte names the encoding of every message type, so a node
//! refuses a peer of another format by name instead of misreading it; the
//! `rpc::fingerprint` test makes every wire change raise it.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The peer protocol's format. 1: every earlier build (its messages changed
/// more than once under it). 2: from the build that added decommissioning;
/// from then on every change raises it. 3: hellos and gossip carry the
/// shard count and replication factor, checked before a sender is learned.
pub const FORMAT: u8 = 3;
pub const CONTENT_TYPE: &str = "application/x-hearsay-v3";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("empty message body")]
    Empty,
    #[error("peer message format {0} is not this node's ({FORMAT}): the peer runs another hearsay version; upgrade every node of a cluster together")]
    UnknownFormat(u8),
    #[error("message body does not decode: {0}")]
    Malformed(String),
    #[error("message has {0} trailing bytes")]
    Trailing(usize),
}

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing our own message types into a Vec cannot fail.
    postcard::to_extend(msg, vec![FORMAT]).expect("postcard serializes plain data")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&format, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if format != FORMAT {
        return Err(CodecError::UnknownFormat(format));
    }
    let (msg, rest) = postcard::take_from_bytes(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Trailing(rest.len()));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{ApplyBatch, WireRecord};
    use bytes::Bytes;

    #[test]
    fn golden_bytes_of_an_apply_batch() {
        let batch = ApplyBatch {
            records: vec![WireRecord { key: Bytes::from_static(b"k"), hlc: 300, node: 1, value: Some(Bytes::from_static(b"v")) }],
        };
        // format, 1 record, key len 1 'k', hlc varint 300, node 1, Some, len 1 'v'
        let expect = [FORMAT, 1, 1, b'k', 0xac, 0x02, 1, 1, 1, b'v'];
        assert_eq!(encode(&batch), expect);
        assert_eq!(decode::<ApplyBatch>(&expect).unwrap(), batch);
    }

    #[test]
    fn golden_bytes_of_a_schedule_setting() {
        let schedule = crate::rpc::Schedule { enabled: true, interval_secs: 600, max_bytes_per_sec: 1 << 20, stamp: 5 };
        // format, true, varint 600, varint 2^20, stamp 5
        let expect = [FORMAT, 1, 0xd8, 0x04, 0x80, 0x80, 0x40, 5];
        assert_eq!(encode(&schedule), expect);
        assert_eq!(decode::<crate::rpc::Schedule>(&expect).unwrap(), schedule);
    }

    #[test]
    fn golden_bytes_of_a_reply_and_hello() {
        // applied 2, created [true, false], below_floor [1]
        let reply = crate::rpc::ApplyReply { applied: 2, created: vec![true, false], below_floor: vec![1] };
        assert_eq!(encode(&reply), [FORMAT, 2, 2, 1, 0, 1, 1]);
        let hello = crate::rpc::Hello { node: "n1".into(), addr: "a:1".into(), shards: 64, rf: 3 };
        assert_eq!(encode(&hello), [FORMAT, 2, b'n', b'1', 3, b'a', b':', b'1', 64, 3]);
    }

    #[test]
    fn golden_bytes_of_a_tree_reply_and_a_sync_report() {
        let tree = crate::rpc::TreeReply { digests: vec![[7; 16]], records: 300, replicates: true };
        // format, 1 digest of 16 bytes (arrays have no length), records varint 300, replicates
        let mut expect = vec![FORMAT, 1];
        expect.extend([7; 16]);
        expect.extend([0xac, 0x02, 1]);
        assert_eq!(encode(&tree), expect);
        assert_eq!(decode::<crate::rpc::TreeReply>(&expect).unwrap(), tree);
        // peer_replicates stays with the node that ran the exchange.
        let report = crate::rpc::SyncReport { keys_sent: 2, peer_replicates: true, ..Default::default() };
        let expect = [FORMAT, 0, 0, 2, 0, 0, 0];
        assert_eq!(encode(&report), expect);
        assert_eq!(decode::<crate::rpc::SyncReport>(&expect).unwrap(), crate::rpc::SyncReport { peer_replicates: false, ..report });
    }

    #[test]
    fn golden_bytes_of_a_listing() {
        let req = crate::rpc::ListRequest { ids: vec![3], shards: 8, prefix: Bytes::from_static(b"p"), after: None, limit: 10 };
        // format, 1 id: 3, 8 shards, prefix len 1 'p', no after, limit 10
        let expect = [FORMAT, 1, 3, 8, 1, b'p', 0, 10];
        assert_eq!(encode(&req), expect);
        assert_eq!(decode::<crate::rpc::ListRequest>(&expect).unwrap(), req);
        let reply = crate::rpc::ListReply { keys: vec![Bytes::from_static(b"a")], more: true };
        assert_eq!(encode(&reply), [FORMAT, 1, 1, b'a', 1]);
    }

    #[test]
    fn golden_bytes_of_a_verification() {
        let v = crate::rpc::Verified { shard: 2, shards: 8, root: [7; 32], replicas: vec!["n1".into()], checked_at_ms: 300 };
        // format, shard 2, 8 shards, 32 root bytes, 1 replica "n1", checked_at varint 300
        let expect = [&[FORMAT, 2, 8][..], &[7; 32], &[1, 2, b'n', b'1', 0xac, 0x02]].concat();
        assert_eq!(encode(&v), expect);
        assert_eq!(decode::<crate::rpc::Verified>(&expect).unwrap(), v);
    }

    #[test]
    fn bad_bytes_are_errors() {
        assert_eq!(decode::<ApplyBatch>(&[]), Err(CodecError::Empty));
        assert_eq!(decode::<ApplyBatch>(&[9, 0]), Err(CodecError::UnknownFormat(9)));
        let good = encode(&ApplyBatch { records: vec![WireRecord { key: Bytes::from_static(b"abc"), hlc: 1, node: 2, value: None }] });
        for cut in 1..good.len() {
            assert!(decode::<ApplyBatch>(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode::<ApplyBatch>(&long), Err(CodecError::Trailing(1)));
        // A length prefix claiming 2^62 records must not allocate for them.
        let huge = [FORMAT, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f];
        assert!(decode::<ApplyBatch>(&huge).is_err());
    }
}
