//! The peer protocol's fingerprint: one sample of every peer message type,
//! with every field set and every enum variant present, encoded with the one
//! codec and hashed. Nodes of different builds speak to each other only if
//! their messages decode alike, and postcard is not self-describing: a field
//! added, removed, reordered or retyped makes an older node fail to decode,
//! or worse, decode something else. So any change to the wire changes this
//! hash, and the test then demands a new [`super::codec::FORMAT`], which
//! nodes of the old format refuse by name instead of misreading.

use super::*;
use crate::gossip::{Envelope, GossipPacket, Message, Rumor, Setting, State, Update};
use bytes::Bytes;

fn record(i: u8) -> WireRecord {
    WireRecord {
        key: Bytes::from(vec![b'k', i]),
        hlc: 300 + u64::from(i),
        node: 7,
        value: i.is_multiple_of(2).then(|| Bytes::from_static(b"v")),
    }
}

fn update(state: State) -> Update {
    Update { id: "n1".into(), addr: "h:1".into(), incarnation: 9, state }
}

fn rumors() -> Vec<Rumor> {
    let setting = Setting { name: "s".into(), stamp: 3, value: vec![1, 2] };
    vec![Rumor::Member(update(State::Suspect)), Rumor::Setting(setting)]
}

/// Every message type's encoding of its sample, in a fixed order.
fn samples() -> Vec<Vec<u8>> {
    use super::codec::encode;
    let modes = [SyncMode::Push, SyncMode::Pull, SyncMode::PushPull];
    let mut out = vec![
        encode(&ApplyBatch { records: vec![record(0), record(1)] }),
        encode(&ApplyReply { applied: 2, created: vec![true, false], below_floor: vec![1] }),
        encode(&ReadRequest { key: Bytes::from_static(b"k") }),
        encode(&ReadReply { record: Some(record(2)) }),
        encode(&Hello { node: "n1".into(), addr: "h:1".into(), shards: 64, rf: 3 }),
        encode(&HelloReply { node: "n1".into(), addr: "h:1".into(), shards: 64, rf: 3, members: vec![("n2".into(), "h:2".into())] }),
        encode(&TreeRequest { shard: 1, shards: 64, level: 2, indices: vec![3, 4], children: true }),
        encode(&TreeReply { digests: vec![[5; 16]], records: 6, replicates: true }),
        encode(&LeafDiffReply { want: vec![0b101], newer: vec![Bytes::from_static(b"k")] }),
        encode(&Fetch { keys: vec![Bytes::from_static(b"k")] }),
        encode(&FetchReply { records: vec![record(3)] }),
        encode(&SyncReport {
            equal: true,
            leaves_diverged: 1,
            keys_sent: 2,
            keys_received: 3,
            bytes: 4,
            record_bytes: 5,
            peer_replicates: true,
        }),
        encode(&Schedule { enabled: true, interval_secs: 600, max_bytes_per_sec: 1 << 20, stamp: 5 }),
        encode(&Verified { shard: 1, shards: 64, root: [8; 32], replicas: vec!["n1".into()], checked_at_ms: 10 }),
        encode(&ListRequest {
            ids: vec![1],
            shards: 64,
            prefix: Bytes::from_static(b"p"),
            after: Some(Bytes::from_static(b"a")),
            limit: 5,
        }),
        encode(&ListReply { keys: vec![Bytes::from_static(b"k")], more: true }),
    ];
    for mode in modes {
        out.push(encode(&LeafDiff { shard: 1, shards: 64, mode, nonce: 11, leaves: vec![2], counts: vec![3], fingerprints: vec![4] }));
        out.push(encode(&SyncRequest { shard: 1, shards: 64, peer: "n2".into(), mode }));
    }
    let messages = [
        Message::Ping { seq: 1, target: "n2".into(), rumors: rumors() },
        Message::Ack { seq: 1, rumors: rumors() },
        Message::PingReq { seq: 2, target: "n2".into(), target_addr: "h:2".into(), rumors: rumors() },
        Message::Gossip { rumors: rumors() },
        Message::Sync { members: State::ALL.into_iter().map(update).collect(), settings: vec![], reply: true },
    ];
    for msg in messages {
        out.push(encode(&Envelope { from: update(State::Alive), msg }));
    }
    let envelope = Envelope { from: update(State::Alive), msg: Message::Gossip { rumors: rumors() } };
    out.push(encode(&GossipPacket { shards: 64, rf: 3, envelope }));
    out
}

/// The format these samples were last encoded under, and their hash.
const RECORDED: (u8, &str) = (3, "3f7e77873eff8e4f");

#[test]
fn a_change_to_the_wire_comes_with_a_new_format() {
    let mut h = blake3::Hasher::new();
    for s in samples() {
        h.update(&(s.len() as u32).to_be_bytes());
        h.update(&s);
    }
    let now = h.finalize().to_hex()[..16].to_string();
    assert_eq!(
        (super::codec::FORMAT, now.as_str()),
        RECORDED,
        "the peer protocol's encoding changed: raise codec::FORMAT (older nodes then refuse the new messages by name) and record the new format and hash here"
    );
}

/// The types `source` declares with a serde `Serialize` derive, each with
/// its variants if it is an enum.
fn serialized_types(source: &str) -> Vec<(&str, Vec<&str>)> {
    let ident = |s: &'_ str| s.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or("").to_string();
    let mut lines = source.lines();
    let mut out = Vec::new();
    while let Some(line) = lines.next() {
        if !(line.trim().starts_with("#[derive(") && line.contains("Serialize")) {
            continue;
        }
        // Other attributes and comments may sit between the derive and the type.
        let decl = lines.find(|l| !l.trim().starts_with("#[") && !l.trim().starts_with("//")).unwrap_or("").trim();
        let decl = decl.strip_prefix("pub ").unwrap_or(decl);
        let Some((kind, rest)) = decl.split_once(' ') else { continue };
        let name = &rest[..ident(rest).len()];
        let mut variants = Vec::new();
        if kind == "enum" {
            // Variants open lines indented one level; the enum ends at a bare `}`.
            for body in lines.by_ref().take_while(|l| *l != "}") {
                let v = body.strip_prefix("    ").filter(|v| v.starts_with(|c: char| c.is_ascii_uppercase()));
                variants.extend(v.map(|v| &v[..ident(v).len()]));
            }
        }
        if kind == "struct" || kind == "enum" {
            out.push((name, variants));
        }
    }
    out
}

/// Whether `word` occurs in `text` as a whole identifier.
fn names(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let ident = |c: char| c.is_alphanumeric() || c == '_';
        !text[..at].ends_with(ident) && !text[at + word.len()..].starts_with(ident)
    })
}

/// The samples are kept by hand: a message type or enum variant added to
/// the protocol but not to them would change the wire without changing the
/// hash. Every type the protocol's modules serialize must be named in the
/// samples' code, and every variant as `Type::Variant` (or all at once by
/// `Type::ALL`).
#[test]
fn every_type_on_the_wire_has_a_sample() {
    let this = include_str!("fingerprint.rs");
    let sampled = &this[..this.find("/// The format these samples").expect("the samples end there")];
    for (module, source) in [("rpc", include_str!("mod.rs")), ("gossip::message", include_str!("../gossip/message.rs"))] {
        let types = serialized_types(source);
        assert!(types.len() >= 5, "{module}: the declarations were not found: {types:?}");
        for (t, variants) in types {
            assert!(names(sampled, t), "{module}::{t} is serialized for peers but has no sample in fingerprint.rs: add one");
            // `Type::ALL` stands for the variants its declaration lists.
            let all = source.lines().find(|l| l.contains(&format!("const ALL: [{t};"))).filter(|_| names(sampled, &format!("{t}::ALL")));
            for v in variants {
                let variant = format!("{t}::{v}");
                let named = names(sampled, &variant) || all.is_some_and(|all| names(all, &variant));
                assert!(named, "{module}::{t}::{v} is serialized for peers but has no sample in fingerprint.rs: add one");
            }
        }
    }
}

#[test]
fn the_type_scan_finds_declarations_variants_and_whole_names() {
    let src = "#[derive(Serialize, Deserialize)]\npub struct Ping {\n    seq: u64,\n}\n#[derive(Debug)]\npub struct Local;\n\
               #[derive(Clone, Serialize)]\n#[serde(rename_all = \"lowercase\")]\nenum Mode {\n    /// Doc.\n    Push,\n    Pull { n: u8 },\n    \
               Both(u8),\n}\n";
    assert_eq!(serialized_types(src), [("Ping", vec![]), ("Mode", vec!["Push", "Pull", "Both"])]);
    assert!(names("encode(&Ping { seq })", "Ping"));
    assert!(!names("encode(&PingReq { seq })", "Ping"));
    assert!(names("[Mode::Push, Mode::Pull]", "Mode::Pull"));
    assert!(!names("[Mode::PushPull]", "Mode::Push"));
}
