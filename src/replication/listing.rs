//! The cluster-wide key listing behind `GET /v1/kv`: every shard is read
//! from one replica (this node's copy where it holds one, else the first
//! replica in ring order that answers), and the pages are merged in key
//! order. A shard no replica answers for fails the listing rather than
//! leaving its keys out silently.

use super::{Replication, ReplicationError};
use crate::kv::KeyPage;
use crate::rpc::{ListReply, ListRequest, PATH_LIST};
use crate::types::{NodeId, ShardId};
use bytes::Bytes;
use futures_util::future::join_all;
use std::collections::BTreeMap;
use std::sync::Arc;

impl Replication {
    /// Live keys that start with `prefix` and follow `after`, in key order,
    /// at most `limit`.
    pub async fn list(self: &Arc<Self>, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<KeyPage, ReplicationError> {
        let placement = self.membership.placement();
        let (mut local, mut remote) = (Vec::new(), Vec::new());
        for s in 0..self.membership.shards() {
            let replicas = placement.replicas(ShardId(s));
            if replicas.contains(&self.me) {
                local.push(s);
            } else {
                remote.push((s, replicas.to_vec()));
            }
        }
        let mine = self.kv.list(&local, prefix, after, limit)?;
        let (mut keys, mut more) = (mine.keys, mine.more);
        // Round k asks each pending shard's k-th replica; shards whose
        // replica failed move on to the next one.
        for attempt in 0.. {
            if remote.is_empty() {
                break;
            }
            let mut by_peer: BTreeMap<&NodeId, Vec<u32>> = BTreeMap::new();
            let mut unavailable = Vec::new();
            for (s, replicas) in &remote {
                match replicas.get(attempt) {
                    Some(peer) => by_peer.entry(peer).or_default().push(*s),
                    None => unavailable.push(*s),
                }
            }
            if !unavailable.is_empty() {
                return Err(ReplicationError::ShardsUnavailable { shards: unavailable });
            }
            // One request per peer, all at once: the listing waits for the
            // slowest peer, not for the sum of them.
            let asks =
                by_peer.into_iter().map(|(peer, ids)| async move { (ids.clone(), self.list_on(peer, ids, prefix, after, limit).await) });
            let mut failed = Vec::new();
            for (ids, answer) in join_all(asks).await {
                match answer {
                    Some(page) => {
                        keys.extend(page.keys);
                        more |= page.more;
                    }
                    None => failed.extend(ids),
                }
            }
            remote.retain(|(s, _)| failed.contains(s));
        }
        Ok(KeyPage::merged(keys, more, limit))
    }

    /// One peer's page of `ids`; `None` if it did not answer in time.
    async fn list_on(&self, peer: &NodeId, ids: Vec<u32>, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Option<ListReply> {
        let addr = self.membership.addr_of(peer.name())?;
        let req = ListRequest {
            ids,
            shards: self.membership.shards(),
            prefix: Bytes::copy_from_slice(prefix),
            after: after.map(Bytes::copy_from_slice),
            limit: limit as u32,
        };
        match self.peers.call((peer.name(), &addr), PATH_LIST, &req, self.timeout).await {
            Ok(reply) => Some(reply),
            Err(e) => {
                tracing::debug!(peer = peer.name(), error = %e, "listing: peer did not answer; trying the next replica");
                None
            }
        }
    }
}
