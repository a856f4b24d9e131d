//! Tests of the SWIM state machine, one member at a time: merge order,
//! refutation, the probe cycle, relayed acks and the join.

use super::*;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;

fn update(id: &str, inc: u64, state: State) -> Update {
    Update { id: id.into(), addr: format!("{id}:1"), incarnation: inc, state }
}

fn node(id: &str) -> Swim {
    Swim::new(SwimConfig::default(), id, &format!("{id}:1"), 1, 0)
}

fn sends(out: &[Output]) -> Vec<(String, Message)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to, envelope } => Some((to.addr.clone(), envelope.msg.clone())),
            Output::Changed(_) | Output::Setting(_) => None,
        })
        .collect()
}

fn rng() -> SmallRng {
    SmallRng::seed_from_u64(7)
}

proptest! {
    /// Merging is a join: any order of the same updates ends in the same view.
    #[test]
    fn the_view_does_not_depend_on_the_order_updates_arrive_in(
        raw in proptest::collection::vec((0u8..4, 0u64..4, 0u8..5, any::<bool>()), 0..40),
        shuffle_seed in any::<u64>(),
    ) {
        let states = State::ALL;
        let updates: Vec<Update> = raw
            .iter()
            .map(|&(m, inc, st, addr)| Update {
                id: format!("m{m}"),
                addr: if addr { "a".into() } else { "b".into() },
                incarnation: inc,
                state: states[st as usize],
            })
            .collect();
        let mut shuffled = updates.clone();
        shuffled.shuffle(&mut SmallRng::seed_from_u64(shuffle_seed));
        let (mut a, mut b) = (node("me"), node("me"));
        let (mut out, mut r) = (Vec::new(), rng());
        for u in updates {
            a.apply(0, u, &mut r, &mut out);
        }
        for u in shuffled {
            b.apply(0, u, &mut r, &mut out);
        }
        let view = |s: &Swim| s.view().cloned().collect::<Vec<_>>();
        prop_assert_eq!(view(&a), view(&b));
        for state in states {
            prop_assert_eq!(a.count(state), a.view().filter(|u| u.state == state).count());
        }
    }
}

#[test]
fn a_member_that_hears_it_is_suspected_raises_its_incarnation_and_says_so() {
    let mut me = node("a");
    let (mut out, mut r) = (Vec::new(), rng());
    me.apply(0, update("b", 1, State::Alive), &mut r, &mut out);
    let from = update("b", 1, State::Alive);
    let msg = Message::Gossip { rumors: vec![Rumor::Member(update("a", 1, State::Suspect))] };
    me.handle(10, Envelope { from, msg }, &mut r, &mut out);
    assert_eq!(me.me().incarnation, 2);
    assert_eq!(me.me().state, State::Alive);
    // The refutation rides on the next message this member sends.
    out.clear();
    me.tick(1_000, &mut r, &mut out);
    let ping = sends(&out).into_iter().find(|(_, m)| matches!(m, Message::Ping { .. })).expect("a probe");
    let Message::Ping { rumors, .. } = ping.1 else { unreachable!() };
    assert!(rumors.contains(&Rumor::Member(update("a", 2, State::Alive))), "{rumors:?}");
}

#[test]
fn an_unanswered_probe_asks_others_then_suspects() {
    let mut me = node("a");
    let (mut out, mut r) = (Vec::new(), rng());
    for id in ["b", "c", "d", "e"] {
        me.apply(0, update(id, 1, State::Alive), &mut r, &mut out);
    }
    out.clear();
    me.tick(1_000, &mut r, &mut out);
    let (to, Message::Ping { target, .. }) = sends(&out).remove(0) else { panic!("expected a ping: {out:?}") };
    assert_eq!(to, format!("{target}:1"));
    out.clear();
    me.tick(1_500, &mut r, &mut out);
    let asks = sends(&out);
    assert_eq!(asks.len(), 3, "{asks:?}");
    assert!(asks.iter().all(|(to, m)| matches!(m, Message::PingReq { target: t, .. } if *t == target) && *to != format!("{target}:1")));
    out.clear();
    me.tick(2_000, &mut r, &mut out);
    assert_eq!(me.get(&target).map(|u| u.state), Some(State::Suspect));
    // Nobody refutes: after 4 · log10(5+1) · 1 s it is dead.
    me.tick(2_000 + me.suspicion_timeout(), &mut r, &mut out);
    assert_eq!(me.get(&target).map(|u| u.state), Some(State::Dead));
}

#[test]
fn a_ping_to_a_suspect_tells_it_so_and_its_ack_brings_the_refutation_back() {
    let (mut a, mut b) = (node("a"), node("b"));
    let (mut out, mut r) = (Vec::new(), rng());
    a.apply(0, update("b", 1, State::Suspect), &mut r, &mut out);
    // Told until retired: under load a suspicion's rumor runs out long before
    // the suspect is next probed by a member that holds it.
    while !a.piggyback().is_empty() {}
    out.clear();
    a.tick(1_000, &mut r, &mut out);
    let (to, ping) = sends(&out).remove(0);
    assert_eq!(to, "b:1");
    let Message::Ping { rumors, .. } = &ping else { panic!("expected a ping: {ping:?}") };
    assert_eq!(rumors, &[Rumor::Member(update("b", 1, State::Suspect))]);
    out.clear();
    b.handle(1_001, Envelope { from: a.me().clone(), msg: ping }, &mut r, &mut out);
    assert_eq!(b.me(), &update("b", 2, State::Alive));
    let (_, ack) = sends(&out).remove(0);
    a.handle(1_002, Envelope { from: b.me().clone(), msg: ack }, &mut r, &mut out);
    assert_eq!(a.get("b"), Some(&update("b", 2, State::Alive)));
    // A member relaying a probe of a suspect it holds tells it too.
    let mut helper = node("h");
    helper.apply(0, update("c", 4, State::Suspect), &mut r, &mut out);
    while !helper.piggyback().is_empty() {}
    out.clear();
    let req = Message::PingReq { seq: 9, target: "c".into(), target_addr: "c:1".into(), rumors: vec![] };
    helper.handle(5, Envelope { from: a.me().clone(), msg: req }, &mut r, &mut out);
    let (to, relayed) = sends(&out).remove(0);
    assert_eq!(to, "c:1");
    assert!(
        matches!(&relayed, Message::Ping { rumors, .. } if rumors.contains(&Rumor::Member(update("c", 4, State::Suspect)))),
        "{relayed:?}"
    );
}

#[test]
fn an_ack_relayed_by_another_member_clears_the_probe() {
    let (mut a, mut helper) = (node("a"), node("h"));
    let (mut out, mut r) = (Vec::new(), rng());
    a.apply(0, update("b", 1, State::Alive), &mut r, &mut out);
    a.apply(0, update("h", 1, State::Alive), &mut r, &mut out);
    // Probe b (the first target may be h: tick until b is probed).
    let mut now = 1_000;
    let seq = loop {
        out.clear();
        a.tick(now, &mut r, &mut out);
        if let Some(Message::Ping { seq, .. }) =
            sends(&out).into_iter().map(|(_, m)| m).find(|m| matches!(m, Message::Ping { target, .. } if target == "b"))
        {
            break seq;
        }
        now += 1_000;
    };
    out.clear();
    a.tick(now + 500, &mut r, &mut out);
    let (_, req) = sends(&out).into_iter().find(|(to, _)| to == "h:1").expect("a ping-req to h");
    // h pings b for a; b's ack to h goes back to a under a's sequence number.
    out.clear();
    helper.handle(now + 501, Envelope { from: a.me().clone(), msg: req }, &mut r, &mut out);
    let (to, Message::Ping { seq: own, .. }) = sends(&out).remove(0) else { panic!("h should ping b") };
    assert_eq!(to, "b:1");
    out.clear();
    let ack = Message::Ack { seq: own, rumors: vec![] };
    helper.handle(now + 502, Envelope { from: update("b", 1, State::Alive), msg: ack }, &mut r, &mut out);
    let (to, forwarded) = sends(&out).remove(0);
    assert_eq!(to, "a:1");
    assert!(matches!(forwarded, Message::Ack { seq: s, .. } if s == seq), "{forwarded:?}");
    out.clear();
    a.handle(now + 503, Envelope { from: helper.me().clone(), msg: forwarded }, &mut r, &mut out);
    a.tick(now + 1_000, &mut r, &mut out);
    assert_eq!(a.get("b").map(|u| u.state), Some(State::Alive));
}

#[test]
fn a_member_wrongly_held_dead_is_put_right_by_its_first_message() {
    let mut me = node("a");
    let (mut out, mut r) = (Vec::new(), rng());
    me.apply(0, update("b", 1, State::Dead), &mut r, &mut out);
    let msg = Message::Gossip { rumors: vec![] };
    me.handle(5, Envelope { from: update("b", 2, State::Alive), msg }, &mut r, &mut out);
    assert_eq!(me.get("b"), Some(&update("b", 2, State::Alive)));
}

#[test]
fn a_death_read_from_a_synced_view_is_only_a_suspicion_here() {
    // After a partition heals, the far side's view holds this side dead.
    let mut me = node("a");
    let (mut out, mut r) = (Vec::new(), rng());
    me.apply(0, update("b", 1, State::Alive), &mut r, &mut out);
    let far_view = vec![update("b", 1, State::Dead), update("c", 1, State::Dead)];
    let msg = Message::Sync { members: far_view, settings: vec![], reply: false };
    me.handle(5, Envelope { from: update("d", 1, State::Alive), msg }, &mut r, &mut out);
    assert_eq!(me.get("b"), Some(&update("b", 1, State::Suspect)), "b answers here: it gets its time to refute");
    assert_eq!(me.get("c"), Some(&update("c", 1, State::Dead)), "a member unknown here is taken as told");
    // b refutes before the timeout, and stays alive.
    let msg = Message::Gossip { rumors: vec![] };
    me.handle(500, Envelope { from: update("b", 2, State::Alive), msg }, &mut r, &mut out);
    assert_eq!(me.get("b"), Some(&update("b", 2, State::Alive)));
    // The same death as a rumor is fresh news, and stands.
    let msg = Message::Gossip { rumors: vec![Rumor::Member(update("b", 2, State::Dead))] };
    me.handle(600, Envelope { from: update("d", 1, State::Alive), msg }, &mut r, &mut out);
    assert_eq!(me.get("b").map(|u| u.state), Some(State::Dead));
}

#[test]
fn a_join_is_retried_until_a_member_answers_with_its_view() {
    let mut me = node("a");
    let (mut out, mut r) = (Vec::new(), rng());
    me.join(&["s:1".to_string()], &mut out);
    assert_eq!(sends(&out).len(), 1);
    out.clear();
    me.tick(1_000, &mut r, &mut out);
    assert!(sends(&out).iter().any(|(to, m)| to == "s:1" && matches!(m, Message::Sync { reply: true, .. })));
    let reply = Message::Sync { members: vec![update("s", 1, State::Alive)], settings: vec![], reply: false };
    me.handle(1_100, Envelope { from: update("s", 1, State::Alive), msg: reply }, &mut r, &mut out);
    assert!(me.joined());
    out.clear();
    me.tick(2_000, &mut r, &mut out);
    assert!(!sends(&out).iter().any(|(_, m)| matches!(m, Message::Sync { .. })));
}

#[test]
fn a_setting_keeps_the_newest_stamp_and_travels_in_a_sync() {
    let (mut a, mut b) = (node("a"), node("b"));
    let (mut out, mut r) = (Vec::new(), rng());
    let setting = |stamp: u64, v: &[u8]| Setting { name: "s".into(), stamp, value: v.to_vec() };
    assert!(a.apply_setting(setting(5, b"x"), &mut out));
    assert!(!a.apply_setting(setting(4, b"z"), &mut out), "an older stamp is ignored");
    assert!(a.apply_setting(setting(5, b"y"), &mut out), "a tie goes to the greater value");
    assert_eq!(out.iter().filter(|o| matches!(o, Output::Setting(_))).count(), 2);
    // b joins through a: a's reply to the sync carries the setting.
    out.clear();
    b.join(&["a:1".to_string()], &mut out);
    let (_, sync) = sends(&out).remove(0);
    out.clear();
    a.handle(1, Envelope { from: b.me().clone(), msg: sync }, &mut r, &mut out);
    let (_, reply) = sends(&out).into_iter().find(|(to, _)| to == "b:1").expect("a sync reply");
    out.clear();
    b.handle(2, Envelope { from: a.me().clone(), msg: reply }, &mut r, &mut out);
    assert_eq!(b.setting("s"), Some(&setting(5, b"y")));
    assert!(out.contains(&Output::Setting(setting(5, b"y"))));
}

#[test]
fn a_retired_member_claims_removal_keeps_it_and_others_adopt_it() {
    let (mut a, mut b) = (node("a"), node("b"));
    let (mut out, mut r) = (Vec::new(), rng());
    a.apply(0, update("b", 1, State::Alive), &mut r, &mut out);
    b.apply(0, update("a", 1, State::Alive), &mut r, &mut out);
    out.clear();
    a.retire(&mut r, &mut out);
    assert_eq!(a.me(), &update("a", 1, State::Removed));
    assert!(out.contains(&Output::Changed(update("a", 1, State::Removed))));
    // Its own message carries the claim, and the other member adopts it.
    let (_, msg) = sends(&out).into_iter().next().expect("the retirement is gossiped at once");
    b.handle(5, Envelope { from: a.me().clone(), msg }, &mut r, &mut out);
    assert_eq!(b.get("a"), Some(&update("a", 1, State::Removed)));
    // Unlike any other claim about itself, it is not out-bid (even from a
    // higher incarnation), and leaving does not weaken it.
    let msg = Message::Gossip { rumors: vec![Rumor::Member(update("a", 2, State::Dead))] };
    a.handle(10, Envelope { from: b.me().clone(), msg }, &mut r, &mut out);
    assert_eq!(a.me(), &update("a", 1, State::Removed));
    a.leave(&mut r, &mut out);
    assert_eq!(a.me(), &update("a", 1, State::Removed));
}
