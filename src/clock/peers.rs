//! What a node learns about clocks from its peers: each peer's offset
//! ([`PeerClocks`]) and, from those, whether this node's own clock is the
//! one that is off ([`ClockWatch`]), which stops it stamping writes.

use super::{Clock, Hlc};
use prometheus_client::metrics::counter::Counter;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Span over which the smallest arrival difference of a peer is taken.
pub const OFFSET_WINDOW_MS: u64 = 30_000;
/// A peer clock offset beyond this is logged. Last writer wins by these
/// clocks: a node whose clock is this far behind loses its writes to any
/// write made up to this long before them.
pub const OFFSET_WARN_MS: i64 = 1_000;

/// `later - earlier`, saturated to the range of an i64.
fn difference_ms(later: u64, earlier: u64) -> i64 {
    (i128::from(later) - i128::from(earlier)).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Records a reply dated `date_ms` (an HTTP `Date`, rounded down to the
/// second) that arrived at `now_ms`, against the end of that second.
fn note_reply(replies: &mut BTreeMap<String, (u64, i64)>, from: &str, date_ms: u64, now_ms: u64) {
    let heard = (now_ms, difference_ms(now_ms, date_ms.saturating_add(999)));
    match replies.get_mut(from) {
        Some(r) => *r = heard,
        None => {
            replies.insert(from.to_string(), heard);
        }
    }
}

/// A wall clock that moved this much more or less than real time between two
/// readings was stepped. NTP slews far slower (0.5 ms/s), and a false step
/// only makes the estimates start afresh.
const STEP_MS: i128 = 1_000;

/// Judging passes over every peer heard from: at most this often, and at
/// once when the wall clock moved further since (a jump, either way).
const JUDGE_EVERY_MS: u64 = 250;

/// How far each peer's clock is from this node's, estimated from the
/// timestamps of the peer's authenticated requests. Arrival time minus the
/// sender's stamp is the offset plus the time the request spent in transit,
/// and transit only ever adds, so the smallest difference seen over a window
/// is the estimate. The `Date` of a peer's replies (whole seconds) gives a
/// rougher one, kept apart: it only votes on this node's own clock
/// ([`PeerClocks::ahead_of_peers`]) for a peer whose requests stopped
/// coming (one that holds this node dead, say). Replies from an address
/// whose member is not known yet (a seed, at boot) vote only while no member
/// is heard from: the same node would otherwise count twice, under its
/// address and its name. Pure: callers pass the times in.
#[derive(Default)]
pub struct PeerClocks(Mutex<Heard>);

#[derive(Default)]
struct Heard {
    requests: BTreeMap<String, OffsetWindow>,
    /// Per peer: when its last reply arrived, and the offset it gave.
    replies: BTreeMap<String, (u64, i64)>,
    /// The same, per address, for replies from peers not known by name.
    unnamed_replies: BTreeMap<String, (u64, i64)>,
}

#[derive(Debug, Clone, Copy)]
struct OffsetWindow {
    started_ms: u64,
    /// When the peer's last request arrived.
    heard_ms: u64,
    current: i64,
    previous: Option<i64>,
    warned_ms: Option<u64>,
}

impl OffsetWindow {
    fn estimate(&self) -> i64 {
        self.previous.map_or(self.current, |p| p.min(self.current))
    }
}

impl PeerClocks {
    /// Records a request `peer` stamped `sent_ms` that arrived at `now_ms`.
    /// Returns the estimate when it is beyond [`OFFSET_WARN_MS`] and was not
    /// reported for this peer within the last window, for the caller to log.
    pub fn observe(&self, peer: &str, sent_ms: u64, now_ms: u64) -> Option<i64> {
        let sample = difference_ms(now_ms, sent_ms);
        let peers = &mut self.0.lock().expect("peer clocks lock").requests;
        // Looked up by &str first: a known peer (every request but its first) costs no allocation.
        if !peers.contains_key(peer) {
            let fresh = OffsetWindow { started_ms: now_ms, heard_ms: now_ms, current: sample, previous: None, warned_ms: None };
            peers.insert(peer.to_string(), fresh);
        }
        let w = peers.get_mut(peer).expect("just inserted");
        if now_ms < w.started_ms {
            // This clock went back since the window began: its samples were
            // taken against a reading that was wrong then or is wrong now.
            *w = OffsetWindow { started_ms: now_ms, heard_ms: now_ms, current: sample, previous: None, warned_ms: w.warned_ms };
        } else if now_ms - w.started_ms >= OFFSET_WINDOW_MS {
            *w = OffsetWindow { started_ms: now_ms, heard_ms: now_ms, current: sample, previous: Some(w.current), warned_ms: w.warned_ms };
        } else {
            w.current = w.current.min(sample);
            w.heard_ms = now_ms;
        }
        let estimate = w.estimate();
        let quiet = w.warned_ms.is_some_and(|at| now_ms.saturating_sub(at) < OFFSET_WINDOW_MS);
        if estimate.abs() > OFFSET_WARN_MS && !quiet {
            w.warned_ms = Some(now_ms);
            return Some(estimate);
        }
        None
    }

    /// Records a reply from `peer` dated `date_ms` (an HTTP `Date`: the
    /// peer's clock, rounded down to the second) that arrived at `now_ms`.
    /// The offset is taken against the end of that second, so rounding can
    /// only make it smaller, never make a sound clock look ahead.
    pub fn observe_reply(&self, peer: &str, date_ms: u64, now_ms: u64) {
        let replies = &mut self.0.lock().expect("peer clocks lock").replies;
        note_reply(replies, peer, date_ms, now_ms);
    }

    /// [`PeerClocks::observe_reply`] for a reply from `addr`, whose member is not known.
    pub fn observe_unnamed_reply(&self, addr: &str, date_ms: u64, now_ms: u64) {
        let replies = &mut self.0.lock().expect("peer clocks lock").unnamed_replies;
        note_reply(replies, addr, date_ms, now_ms);
    }

    /// How far this node's clock is ahead of its peers' when a majority of
    /// the peers heard from within the last window run more than `limit_ms`
    /// behind it (by their current window, so a jump shows at its first
    /// request; by its last reply for a peer whose requests stopped): the
    /// least of those offsets. With most peers agreeing, the odd clock out
    /// is this node's; a lone peer behind is that peer's problem, and it
    /// finds out the same way.
    pub fn ahead_of_peers(&self, now_ms: u64, limit_ms: u64) -> Option<u64> {
        let heard = self.0.lock().expect("peer clocks lock");
        // Heard "later" than now means this clock went back since: that
        // sample was taken against another reading and has no vote.
        let recent_ms = |at: u64| at <= now_ms && now_ms - at <= OFFSET_WINDOW_MS;
        let mut votes: BTreeMap<&str, i64> =
            heard.requests.iter().filter(|(_, w)| recent_ms(w.heard_ms)).map(|(p, w)| (p.as_str(), w.current)).collect();
        for (p, &(at, sample)) in &heard.replies {
            if recent_ms(at) {
                votes.entry(p.as_str()).or_insert(sample);
            }
        }
        if votes.is_empty() {
            votes = heard.unnamed_replies.iter().filter(|(_, r)| recent_ms(r.0)).map(|(a, r)| (a.as_str(), r.1)).collect();
        }
        let recent: Vec<i64> = votes.into_values().collect();
        let behind: Vec<i64> = recent.iter().copied().filter(|&o| o > limit_ms as i64).collect();
        if behind.len() * 2 > recent.len() {
            behind.into_iter().min().map(|o| o as u64)
        } else {
            None
        }
    }

    /// Each peer's estimated offset in ms: how far its clock is behind this
    /// node's (negative: ahead), over the last one to two windows.
    pub fn offsets(&self) -> BTreeMap<String, i64> {
        self.0.lock().expect("peer clocks lock").requests.iter().map(|(p, w)| (p.clone(), w.estimate())).collect()
    }

    /// Drops everything heard: this node's clock was stepped, and every
    /// sample was taken against the reading before it.
    pub fn forget(&self) {
        *self.0.lock().expect("peer clocks lock") = Heard::default();
    }
}

/// Peers' clocks and this node's verdict on its own: fed by peers' signed
/// requests and by the dates on their replies, it marks the HLC ahead (no
/// writes stamped) while most recent peers find this clock far ahead.
pub struct ClockWatch {
    pub peers: PeerClocks,
    hlc: Arc<Hlc>,
    /// When the clock was last judged, by its own reading.
    judged_at_ms: AtomicU64,
    /// The last (wall, steady) readings, to catch a step of the wall clock.
    last_read: Mutex<(u64, u64)>,
    /// Steps caught, for the node's metrics.
    steps: Counter,
}

impl ClockWatch {
    /// Watches the wall clock `hlc` stamps by.
    pub fn new(hlc: Arc<Hlc>) -> ClockWatch {
        let clock = hlc.clock();
        let last_read = Mutex::new((clock.now_ms(), clock.steady_ms()));
        ClockWatch { peers: PeerClocks::default(), hlc, judged_at_ms: AtomicU64::new(0), last_read, steps: Counter::default() }
    }

    /// Counts the steps it catches in `steps` (a metric's counter).
    pub fn with_step_counter(mut self, steps: Counter) -> ClockWatch {
        self.steps = steps;
        self
    }

    /// Reads the wall clock. When it was stepped since the last reading, the
    /// offsets heard are void: the window minimum would hide a step smaller
    /// than the window (up to 30 s) for as long as the window lasts.
    fn read(&self) -> u64 {
        let (wall, stepped_ms) = {
            // Read under the lock, so readings are compared in the order they
            // were taken: a reading from before a step, stored after one from
            // after it, would look like a step back.
            let mut last = self.last_read.lock().expect("clock readings lock");
            let clock = self.hlc.clock();
            let (wall, steady) = (clock.now_ms(), clock.steady_ms());
            let (last_wall, last_steady) = std::mem::replace(&mut *last, (wall, steady));
            (wall, (i128::from(wall) - i128::from(last_wall)) - (i128::from(steady) - i128::from(last_steady)))
        };
        if stepped_ms.abs() > STEP_MS {
            self.steps.inc();
            self.peers.forget();
            tracing::warn!(stepped_ms = stepped_ms as i64, "this node's wall clock was stepped; peers' clock offsets are measured afresh");
        }
        wall
    }

    /// The node's wall clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        self.hlc.clock()
    }

    /// A signed request `peer` sent at `sent_ms` by its clock arrives;
    /// returns the time it arrived by this node's clock.
    pub fn request_from(&self, peer: &str, sent_ms: u64) -> u64 {
        let now = self.read();
        if let Some(offset_ms) = self.peers.observe(peer, sent_ms, now) {
            tracing::warn!(
                peer,
                offset_ms,
                "peer clock is off: its requests arrive this many ms behind this node's clock (negative: ahead); last writer wins by these clocks, so check NTP on both"
            );
        }
        self.judge(now);
        now
    }

    /// A reply from the peer `(name, addr)` dated `date_ms` (its HTTP
    /// `Date`) arrives; `name` is empty for a peer not known by name.
    pub fn reply_from(&self, (name, addr): (&str, &str), date_ms: u64) {
        let now = self.read();
        if name.is_empty() {
            self.peers.observe_unnamed_reply(addr, date_ms, now);
        } else {
            self.peers.observe_reply(name, date_ms, now);
        }
        self.judge(now);
    }

    /// Stops or resumes stamping writes on a change of verdict.
    /// Runs on peer traffic (every replicated write brings some), so it is
    /// rate-limited; peers keep talking, so a later sample brings any change.
    fn judge(&self, now_ms: u64) {
        if now_ms.abs_diff(self.judged_at_ms.load(Ordering::Relaxed)) < JUDGE_EVERY_MS {
            return;
        }
        // Two callers may both judge at once; the verdict is the same.
        self.judged_at_ms.store(now_ms, Ordering::Relaxed);
        let limit_ms = self.hlc.peer_skew_limit_ms();
        let ahead = self.peers.ahead_of_peers(now_ms, limit_ms);
        if self.hlc.mark_ahead_of_peers(ahead) {
            match ahead {
                Some(ahead_ms) => tracing::error!(
                    ahead_ms,
                    limit_ms,
                    "this node's clock is ahead of most peers' clocks: refusing writes (503 clock_ahead) and not ready until it is put right; check NTP"
                ),
                None => tracing::warn!("this node's clock agrees with its peers' again: writes resume"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A high-water mark kept in memory.
    #[derive(Default)]
    struct Mark(Mutex<u64>);
    impl super::super::HighWater for Mark {
        fn load(&self) -> Result<u64, crate::storage::StorageError> {
            Ok(*self.0.lock().unwrap())
        }
        fn store(&self, hwm: u64) -> Result<(), crate::storage::StorageError> {
            *self.0.lock().unwrap() = hwm;
            Ok(())
        }
    }

    #[test]
    fn the_watch_judges_a_jump_at_once_and_otherwise_at_most_every_quarter_second() {
        let (t, j) = (10_000_000, 600_000);
        let clock = super::super::ManualClock::new(t);
        let hlc = Arc::new(Hlc::open(clock.clone(), Arc::new(Mark::default())).unwrap());
        let watch = ClockWatch::new(hlc.clone());
        watch.request_from("n2", t - 3);
        assert!(hlc.check_trusted().is_ok());
        // The clock jumps 10 min: the first request after it is judged.
        clock.set(t + j + 50);
        watch.request_from("n2", t + 47);
        assert!(hlc.check_trusted().is_err());
        // Put right: a jump back is judged at once too.
        clock.set(t + 100);
        watch.request_from("n2", t + 97);
        assert!(hlc.check_trusted().is_ok());
        // Within a quarter second of the last verdict, a reply saying
        // otherwise waits for the next sample.
        clock.set(t + 200);
        watch.reply_from(("n3", "a3"), t + 200 - j);
        watch.reply_from(("n4", "a4"), t + 200 - j);
        assert!(hlc.check_trusted().is_ok(), "judged 100 ms ago");
        clock.set(t + 400);
        watch.reply_from(("n4", "a4"), t + 400 - j);
        assert!(hlc.check_trusted().is_err(), "n3 and n4 of n2, n3, n4 find this clock ahead");
    }

    #[test]
    fn a_peer_offset_is_the_smallest_arrival_difference_and_warned_once_per_window() {
        let clocks = PeerClocks::default();
        let t = 1_000_000;
        // n2 runs 5 s behind; its requests take 2 to 40 ms to arrive.
        assert_eq!(clocks.observe("n2", t - 5_000 - 40, t), Some(5_040), "beyond the warning level");
        assert_eq!(clocks.observe("n2", t + 100 - 5_000 - 2, t + 100), None, "warned once per window");
        assert_eq!(clocks.offsets()["n2"], 5_002);
        // n3 runs 3 s ahead; n4 is fine (within the warning level).
        assert_eq!(clocks.observe("n3", t - 5 + 3_000, t), Some(-2_995));
        assert_eq!(clocks.observe("n4", t - 7, t), None);
        assert_eq!(clocks.offsets()["n4"], 7);
        // n2's clock is fixed: a smaller difference is a better estimate at once.
        assert_eq!(clocks.observe("n2", t + 200 - 3, t + 200), None);
        assert_eq!(clocks.offsets()["n2"], 3);
        // n4's clock falls 4 s behind: the old minimum lasts one to two windows.
        let w = OFFSET_WINDOW_MS;
        assert_eq!(clocks.observe("n4", t + 10 - 4_000, t + 10), None);
        assert_eq!(clocks.observe("n4", t + w - 4_000, t + w), None, "the previous window still holds 7");
        assert_eq!(clocks.offsets()["n4"], 7);
        assert_eq!(clocks.observe("n4", t + 2 * w - 4_000, t + 2 * w), Some(4_000));
        assert_eq!(clocks.offsets()["n4"], 4_000);
    }

    #[test]
    fn a_clock_most_peers_find_far_ahead_is_this_nodes_and_shows_at_once() {
        let clocks = PeerClocks::default();
        let (t, limit, j) = (10_000_000, 30_000, 600_000);
        // n2's clock runs 10 min behind, n3's and n4's are in step: n2's problem.
        clocks.observe("n2", t - j, t);
        clocks.observe("n3", t - 3, t);
        clocks.observe("n4", t - 4, t);
        assert_eq!(clocks.ahead_of_peers(t, limit), None, "one of three behind: that peer's clock is off");
        // This node's clock jumps 10 min ahead. Peers heard before the jump
        // seem a window quiet and do not vote; the first request after it
        // already counts, though the displayed estimate keeps the old minimum.
        let now = t + j + 1_000;
        clocks.observe("n3", t + 1_000 - 4, now);
        assert_eq!(clocks.ahead_of_peers(now, limit), Some(j + 4));
        assert_eq!(clocks.offsets()["n3"], 3);
        clocks.observe("n4", t + 1_000 - 2, now);
        assert_eq!(clocks.ahead_of_peers(now, limit), Some(j + 2), "the least offset of those behind");
        // The clock is put right: the next requests clear it.
        let fixed = now - j + 50;
        clocks.observe("n3", fixed - 2, fixed);
        clocks.observe("n4", fixed - 2, fixed);
        assert_eq!(clocks.ahead_of_peers(fixed, limit), None);
    }

    #[test]
    fn a_peer_heard_only_by_its_replies_votes_by_their_date_rounded_in_this_clocks_favour() {
        let clocks = PeerClocks::default();
        let (t, limit) = (10_000_000, 30_000);
        // Dated the whole second: at most 999 ms of rounding, never counted against this clock.
        clocks.observe_reply("n2", t - 999, t + 5);
        clocks.observe_reply("n3", t - 999, t + 5);
        assert_eq!(clocks.ahead_of_peers(t + 5, limit), None);
        clocks.observe_reply("n2", t + 1_000 - 600_000, t + 1_400);
        clocks.observe_reply("n3", t + 1_000 - 600_000, t + 1_400);
        assert_eq!(clocks.ahead_of_peers(t + 1_400, limit), Some(600_000 + 400 - 999));
        assert!(clocks.offsets().is_empty(), "replies are too rough to show as offsets");
        // A peer's requests, when recent, speak for it rather than its replies.
        clocks.observe("n2", t + 1_500, t + 1_502);
        clocks.observe("n3", t + 1_500, t + 1_502);
        assert_eq!(clocks.ahead_of_peers(t + 1_502, limit), None);
    }

    #[test]
    fn what_was_heard_while_this_clock_ran_ahead_has_no_vote_once_it_is_put_back() {
        let clocks = PeerClocks::default();
        let (t, limit, ahead) = (10_000_000, 2_000, 6_000);
        // Booted 6 s ahead (before NTP stepped the clock): n2's requests and
        // n3's and n4's replies all find it ahead.
        let booted = t + ahead;
        clocks.observe("n2", t - 3, booted);
        clocks.observe_reply("n3", t - 999, booted);
        clocks.observe_reply("n4", t - 999, booted);
        assert_eq!(clocks.ahead_of_peers(booted, limit), Some(ahead), "the least of 6003, 6000, 6000");
        // Put back 6 s: n3 and n4 have not answered since, and what they said
        // was measured against the wrong reading. n2's next request decides.
        let fixed = t + 500;
        clocks.observe("n2", fixed - 2, fixed);
        assert_eq!(clocks.ahead_of_peers(fixed, limit), None);
        assert_eq!(clocks.offsets()["n2"], 2, "the window restarted at the step back");
    }

    #[test]
    fn replies_from_peers_not_known_by_name_vote_only_while_no_member_is_heard() {
        let clocks = PeerClocks::default();
        let (t, limit, ahead) = (10_000_000, 2_000, 600_000);
        // Booted 10 min ahead and knowing no member yet (peers refuse its
        // hellos): the seeds' refusals are all it hears, and they decide.
        clocks.observe_unnamed_reply("10.0.0.1:7000", t - 999, t + ahead);
        clocks.observe_unnamed_reply("10.0.0.2:7000", t - 999, t + ahead);
        assert_eq!(clocks.ahead_of_peers(t + ahead, limit), Some(ahead));
        // Once a member is heard by name, the seeds (the same nodes, likely)
        // do not count a second time under their addresses.
        clocks.observe_reply("n2", t + ahead - 999, t + ahead + 10);
        assert_eq!(clocks.ahead_of_peers(t + ahead + 10, limit), None);
    }

    /// A wall clock tests step without real time passing.
    struct Steppable {
        wall: AtomicU64,
        steady: AtomicU64,
    }
    impl Clock for Steppable {
        fn now_ms(&self) -> u64 {
            self.wall.load(Ordering::SeqCst)
        }
        fn steady_ms(&self) -> u64 {
            self.steady.load(Ordering::SeqCst)
        }
    }
    impl Steppable {
        fn pass(&self, ms: u64) {
            self.wall.fetch_add(ms, Ordering::SeqCst);
            self.steady.fetch_add(ms, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_step_shorter_than_the_window_is_judged_at_the_first_sample_after_it() {
        let t = 10_000_000;
        let clock = Arc::new(Steppable { wall: AtomicU64::new(t), steady: AtomicU64::new(0) });
        // Peers accept 1 s of drift, so a clock 2 s ahead of theirs stamps nothing.
        let hlc = Arc::new(Hlc::open(clock.clone(), Arc::new(Mark::default())).unwrap().with_max_drift_ms(1_000));
        let watch = ClockWatch::new(hlc.clone());
        watch.request_from("n2", t - 3);
        watch.request_from("n3", t - 4);
        clock.pass(1_000);
        watch.request_from("n2", t + 1_000 - 3);
        assert!(hlc.check_trusted().is_ok());
        // Stepped 6 s ahead, 300 ms later: the window's 3 ms minimum must not hide it.
        clock.wall.fetch_add(6_000, Ordering::SeqCst);
        clock.pass(300);
        watch.request_from("n2", t + 1_300 - 3);
        assert_eq!(hlc.check_trusted().map_err(|e| e.ahead_ms()), Err(6_003), "n3, not heard since the step, has no vote");
        assert_eq!(watch.peers.offsets().into_iter().collect::<Vec<_>>(), vec![("n2".to_string(), 6_003)]);
        // Time passing as it should is no step.
        clock.pass(5_000);
        watch.request_from("n3", t + 6_300 - 4);
        assert_eq!(watch.peers.offsets().len(), 2);
    }
}
