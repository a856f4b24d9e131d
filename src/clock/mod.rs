//! Time: the injectable wall [`Clock`] and the hybrid logical clock [`Hlc`]
//! that stamps versions. The HLC never goes backwards: not when the wall clock
//! steps back, not across restarts (it persists a high-water mark through
//! [`HighWater`]), and it advances past every version it observes, unless
//! that version is further ahead of this node's wall clock than the allowed
//! drift ([`Hlc::check_drift`]): one node with a wildly wrong clock must not
//! drag every clock in the cluster (persistently) into the future.
//! [`PeerClocks`] estimates how far each peer's clock is from this node's,
//! so a clock drifting apart shows up long before its requests are refused;
//! a node whose clock most of its peers find far behind theirs is ahead, and
//! stamps nothing ([`Hlc::check_trusted`]) until its clock is put right.

mod peers;

pub use peers::{ClockWatch, PeerClocks, OFFSET_WARN_MS, OFFSET_WINDOW_MS};

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the unix epoch; injectable for tests.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
    /// Milliseconds on a clock that is never stepped (any origin): between
    /// two readings it tells how much time really passed, so a step of the
    /// wall clock shows as the two disagreeing.
    fn steady_ms(&self) -> u64;
}

/// [`Clock::steady_ms`] of this process.
fn process_steady_ms() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
    fn steady_ms(&self) -> u64 {
        process_steady_ms()
    }
}

/// A clock tests set by hand, also backwards: each setting is time passing
/// (its steady reading follows), never a step.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(ms: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicU64::new(ms)))
    }
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    fn steady_ms(&self) -> u64 {
        self.now_ms()
    }
}

/// The system clock shifted by an offset tests set and change, to play a
/// node whose clock jumps.
#[derive(Debug, Default)]
pub struct SkewedClock(AtomicI64);

impl SkewedClock {
    pub fn new(offset_ms: i64) -> Arc<SkewedClock> {
        Arc::new(SkewedClock(AtomicI64::new(offset_ms)))
    }
    pub fn set_offset(&self, offset_ms: i64) {
        self.0.store(offset_ms, Ordering::SeqCst);
    }
}

impl Clock for SkewedClock {
    fn now_ms(&self) -> u64 {
        SystemClock.now_ms().saturating_add_signed(self.0.load(Ordering::SeqCst))
    }
    /// A change of offset is a step: real time does not move with it.
    fn steady_ms(&self) -> u64 {
        process_steady_ms()
    }
}

/// Where the HLC keeps its high-water mark so a restart resumes above it.
pub trait HighWater: Send + Sync + 'static {
    fn load(&self) -> Result<u64, crate::storage::StorageError>;
    /// Must be durable when it returns.
    fn store(&self, hwm: u64) -> Result<(), crate::storage::StorageError>;
}

/// How far ahead of the newest stamp the persisted mark is reserved, so the
/// mark is written about once per this interval rather than on every write.
const RESERVE_MS: u64 = 2_000;
/// How often a node renews the reservation in the background
/// ([`Hlc::renew_reservation`]).
pub const RENEW_EVERY_MS: u64 = RESERVE_MS / 4;

/// How far ahead of this node's wall clock a received version may be, by
/// default: generous enough for clocks that NTP keeps in step (and for
/// versions that travelled through a retry buffer), small enough that a
/// clock set hours or years ahead is refused rather than followed.
pub const DEFAULT_MAX_DRIFT_MS: u64 = 60_000;
/// `--max-clock-drift-ms` is 1 s to 1 day: less would refuse peers for
/// ordinary NTP error, more would let one bad clock drag every node's a day
/// ahead.
pub const MAX_DRIFT_MS_RANGE: std::ops::RangeInclusive<u64> = 1_000..=86_400_000;

/// How long a node with peers waits, after start, for them to judge its
/// clock before renewing its reservation ahead of it ([`Hlc::with_unjudged_grace`]).
pub const UNJUDGED_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The least [`Hlc::peer_skew_limit_ms`].
pub const MIN_PEER_SKEW_LIMIT_MS: u64 = 2_000;

/// A received version stamped too far ahead of this node's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the version is {ahead_ms} ms ahead of this node's clock (at most {max_ms} ms is accepted): check the clock of the node that wrote it"
)]
pub struct TooFarAhead {
    pub ahead_ms: u64,
    pub max_ms: u64,
}

/// Why this node stamps no writes for now: a version it stamped would be
/// in its peers' future, beat writes made after it elsewhere, and (persisted
/// as the high-water mark) outlive the clock's correction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClockAhead {
    #[error(
        "this node's clock is {ahead_ms} ms ahead of most of its peers' clocks (more than {limit_ms} ms): it stamps no writes until its clock is put right (check NTP)"
    )]
    OfPeers { ahead_ms: u64, limit_ms: u64 },
    #[error(
        "this node's newest version is {ahead_ms} ms ahead of its clock (peers accept {limit_ms} ms), left by a clock that ran ahead earlier: it stamps no writes until its clock catches up"
    )]
    OfItsClock { ahead_ms: u64, limit_ms: u64 },
    #[error(
        "this node has not compared its clock with its peers' since it started (it waits at most {grace_ms} ms for an answer): it stamps no writes until it has"
    )]
    NotJudgedYet { grace_ms: u64 },
}

impl ClockAhead {
    /// How far ahead the clock is, whichever the reason; 0 while unknown.
    pub fn ahead_ms(&self) -> u64 {
        match *self {
            ClockAhead::OfPeers { ahead_ms, .. } | ClockAhead::OfItsClock { ahead_ms, .. } => ahead_ms,
            ClockAhead::NotJudgedYet { .. } => 0,
        }
    }
}

/// A hybrid logical clock: stamps are `unix_ms << 16 | logical`.
pub struct Hlc {
    clock: Arc<dyn Clock>,
    max_drift_ms: u64,
    /// How far the wall clock is ahead of most peers' when beyond
    /// [`Hlc::peer_skew_limit_ms`]; 0 when it is not.
    ahead_of_peers_ms: AtomicU64,
    last: AtomicU64,
    reserved: Mutex<u64>,
    /// Copy of `reserved` for a lock-free check on the common path.
    reserved_hint: AtomicU64,
    high_water: Arc<dyn HighWater>,
    /// Until peers have judged the wall clock (or this passes, for a node
    /// nobody will judge), nothing is stamped by it.
    unjudged_until: Option<std::time::Instant>,
    unjudged_grace: std::time::Duration,
    /// Peers judged the wall clock, or the grace ran out: waiting for a
    /// verdict is over for good, and the write path reads only this.
    settled: AtomicBool,
}

impl Hlc {
    /// Starts above the persisted high-water mark.
    pub fn open(clock: Arc<dyn Clock>, high_water: Arc<dyn HighWater>) -> Result<Hlc, crate::storage::StorageError> {
        let hwm = high_water.load()?;
        Ok(Hlc {
            clock,
            max_drift_ms: DEFAULT_MAX_DRIFT_MS,
            ahead_of_peers_ms: AtomicU64::new(0),
            last: AtomicU64::new(hwm),
            reserved: Mutex::new(hwm),
            reserved_hint: AtomicU64::new(hwm),
            high_water,
            unjudged_until: None,
            unjudged_grace: std::time::Duration::ZERO,
            settled: AtomicBool::new(false),
        })
    }

    /// Trusts the wall clock only once peers have judged it
    /// ([`Hlc::mark_ahead_of_peers`]), or after `grace` for a node nobody
    /// judges: until then [`Hlc::check_trusted`] refuses, and no reservation
    /// is renewed ahead of the clock. A machine often boots with its clock
    /// wrong until NTP steps it. A write stamped by that clock in the moment
    /// before the first peer answers would beat every write made elsewhere
    /// until real time caught up with it, and its persisted mark would hold
    /// the node's writes back for as long.
    pub fn with_unjudged_grace(mut self, grace: std::time::Duration) -> Hlc {
        self.unjudged_until = Some(std::time::Instant::now() + grace);
        self.unjudged_grace = grace;
        self
    }

    /// Sets how far ahead of the wall clock a received version may be.
    pub fn with_max_drift_ms(mut self, max_drift_ms: u64) -> Hlc {
        self.max_drift_ms = max_drift_ms;
        self
    }

    /// Refuses a received stamp whose wall-clock part is more than the
    /// allowed drift ahead of this node's clock. Checked before a version is
    /// observed or stored; stamps in the past are always fine.
    pub fn check_drift(&self, stamp: u64) -> Result<(), TooFarAhead> {
        let ahead_ms = (stamp >> 16).saturating_sub(self.clock.now_ms());
        if ahead_ms > self.max_drift_ms {
            return Err(TooFarAhead { ahead_ms, max_ms: self.max_drift_ms });
        }
        Ok(())
    }

    /// How far ahead of most peers' clocks this node's may run before it
    /// stops stamping: half the drift a peer accepts, so a version stamped
    /// just under the limit is still accepted everywhere; but at least
    /// [`MIN_PEER_SKEW_LIMIT_MS`], beyond any time a request spends in transit.
    pub fn peer_skew_limit_ms(&self) -> u64 {
        (self.max_drift_ms / 2).max(MIN_PEER_SKEW_LIMIT_MS)
    }

    /// Records how far this node's clock is ahead of most peers' (`None`:
    /// not beyond the limit, see [`PeerClocks::ahead_of_peers`]). Returns
    /// whether that changed between ahead and not, for the caller to log.
    pub fn mark_ahead_of_peers(&self, ahead_ms: Option<u64>) -> bool {
        self.settled.store(true, Ordering::SeqCst);
        // 0 stands for "not ahead", so an offset of 0 ms (never beyond a limit) is stored as 1.
        let new = ahead_ms.map_or(0, |ms| ms.max(1));
        let old = self.ahead_of_peers_ms.swap(new, Ordering::SeqCst);
        (old == 0) != (new == 0)
    }

    /// The wall clock this HLC stamps by: the node's own, injected in tests.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// A reading of [`Hlc::clock`].
    pub fn wall_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Refuses to stamp while the wall clock is ahead of most peers', while
    /// the newest stamp is further ahead of the wall clock than peers accept
    /// (a clock that ran ahead before a restart left it there), or while
    /// peers have not judged the clock yet ([`Hlc::with_unjudged_grace`]).
    pub fn check_trusted(&self) -> Result<(), ClockAhead> {
        if self.unjudged_for().is_some() {
            return Err(ClockAhead::NotJudgedYet { grace_ms: self.unjudged_grace.as_millis() as u64 });
        }
        match self.ahead_of_peers_ms.load(Ordering::SeqCst) {
            0 => {}
            ahead_ms => return Err(ClockAhead::OfPeers { ahead_ms, limit_ms: self.peer_skew_limit_ms() }),
        }
        self.check_lead()
    }

    /// The part of [`Hlc::check_trusted`] this node can tell alone: refuses
    /// while the newest stamp is further ahead of the wall clock than peers
    /// accept.
    pub fn check_lead(&self) -> Result<(), ClockAhead> {
        let lead_ms = (self.last() >> 16).saturating_sub(self.clock.now_ms());
        if lead_ms > self.max_drift_ms {
            return Err(ClockAhead::OfItsClock { ahead_ms: lead_ms, limit_ms: self.max_drift_ms });
        }
        Ok(())
    }

    /// A fresh stamp, greater than every stamp issued or observed before.
    pub fn now(&self) -> Result<u64, crate::storage::StorageError> {
        let physical = self.physical();
        let mut prev = self.last.load(Ordering::SeqCst);
        let stamp = loop {
            let next = physical.max(prev + 1);
            match self.last.compare_exchange_weak(prev, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break next,
                Err(actual) => prev = actual,
            }
        };
        self.reserve(stamp)?;
        Ok(stamp)
    }

    /// Advances the clock past a stamp seen on a received version.
    pub fn observe(&self, stamp: u64) -> Result<(), crate::storage::StorageError> {
        let prev = self.last.fetch_max(stamp, Ordering::SeqCst);
        if stamp > prev {
            self.reserve(stamp)?;
        }
        Ok(())
    }

    /// The newest stamp issued or observed.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::SeqCst)
    }

    /// Renews the persisted reservation before stamps reach it: once less
    /// than half a reserve period is left, the mark moves a whole period
    /// ahead of now. Run by a worker every [`RENEW_EVERY_MS`], this keeps the
    /// flush behind the mark off the write path, where it would hold the
    /// key being written, and every writer that crossed the mark with it, for
    /// an fsync. Returns whether it moved the mark.
    pub fn renew_reservation(&self) -> Result<bool, crate::storage::StorageError> {
        // A clock ahead of the peers' (or not judged yet) must not carry
        // the mark into the future.
        if self.check_trusted().is_err() {
            return Ok(false);
        }
        let physical = self.physical();
        let now = physical.max(self.last.load(Ordering::SeqCst));
        let needed = now.saturating_add((RESERVE_MS / 2) << 16);
        if needed <= self.reserved_hint.load(Ordering::SeqCst) {
            return Ok(false);
        }
        self.extend(needed, now.saturating_add(RESERVE_MS << 16))
    }

    /// How much longer the clock goes untrusted unless peers judge it first:
    /// `None` once judged, or after the grace of [`Hlc::with_unjudged_grace`].
    pub fn unjudged_for(&self) -> Option<std::time::Duration> {
        if self.settled.load(Ordering::SeqCst) {
            return None;
        }
        let left = self.unjudged_until.map_or(std::time::Duration::ZERO, |t| t.saturating_duration_since(std::time::Instant::now()));
        if left.is_zero() {
            self.settled.store(true, Ordering::SeqCst);
            return None;
        }
        Some(left)
    }

    /// The wall clock as a stamp with no logical part (ms capped at 48 bits).
    fn physical(&self) -> u64 {
        self.clock.now_ms().min((1 << 48) - 1) << 16
    }

    /// Makes sure `stamp` is covered by the persisted mark; only a stamp the
    /// renewal did not see coming (a worker that fell behind, or a version
    /// observed from a peer) waits for the mark to be written.
    fn reserve(&self, stamp: u64) -> Result<(), crate::storage::StorageError> {
        if stamp <= self.reserved_hint.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.extend(stamp, stamp.saturating_add(RESERVE_MS << 16)).map(|_| ())
    }

    /// Persists `next` as the mark unless the mark already covers `needed`.
    fn extend(&self, needed: u64, next: u64) -> Result<bool, crate::storage::StorageError> {
        let mut reserved = self.reserved.lock().expect("hlc lock");
        if needed <= *reserved {
            return Ok(false);
        }
        self.high_water.store(next)?;
        *reserved = next;
        self.reserved_hint.store(next, Ordering::SeqCst);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageError;

    #[derive(Default)]
    struct Cell(Mutex<u64>);
    impl HighWater for Cell {
        fn load(&self) -> Result<u64, StorageError> {
            Ok(*self.0.lock().unwrap())
        }
        fn store(&self, hwm: u64) -> Result<(), StorageError> {
            *self.0.lock().unwrap() = hwm;
            Ok(())
        }
    }

    #[test]
    fn a_clock_ahead_of_its_peers_stamps_nothing_and_reserves_nothing() {
        let (clock, hw) = (ManualClock::new(1_000_000), Arc::new(Counted::default()));
        let hlc = Hlc::open(clock.clone(), hw.clone()).unwrap().with_max_drift_ms(10_000);
        assert_eq!(hlc.peer_skew_limit_ms(), 5_000);
        assert!(hlc.mark_ahead_of_peers(Some(600_000)), "a change to report");
        assert!(!hlc.mark_ahead_of_peers(Some(600_100)), "still ahead: nothing new");
        assert_eq!(hlc.check_trusted(), Err(ClockAhead::OfPeers { ahead_ms: 600_100, limit_ms: 5_000 }));
        assert!(!hlc.renew_reservation().unwrap(), "the mark is not carried into the future");
        assert_eq!(hw.0.lock().unwrap().1, 0);
        assert!(hlc.mark_ahead_of_peers(None));
        assert_eq!(hlc.check_trusted(), Ok(()));
        assert!(hlc.renew_reservation().unwrap());
        let small = Hlc::open(clock, Arc::new(Cell::default())).unwrap().with_max_drift_ms(1_000);
        assert_eq!(small.peer_skew_limit_ms(), MIN_PEER_SKEW_LIMIT_MS, "above transit delays");
    }

    #[test]
    fn an_unjudged_clock_is_not_trusted_until_peers_judge_it_or_the_grace_ends() {
        let (clock, hw) = (ManualClock::new(1_600_000), Arc::new(Counted::default()));
        let hlc = Hlc::open(clock.clone(), hw.clone()).unwrap().with_unjudged_grace(std::time::Duration::from_secs(60));
        assert_eq!(hlc.check_trusted(), Err(ClockAhead::NotJudgedYet { grace_ms: 60_000 }));
        assert!(hlc.unjudged_for().is_some_and(|left| left > std::time::Duration::from_secs(50)));
        assert!(!hlc.renew_reservation().unwrap(), "not judged yet");
        assert_eq!(hw.0.lock().unwrap().1, 0);
        // A stamp (taken by a caller that checked nothing) still reserves for itself.
        let stamp = hlc.now().unwrap();
        assert!(hw.0.lock().unwrap().0 >= stamp);
        hlc.mark_ahead_of_peers(None);
        assert_eq!(hlc.unjudged_for(), None);
        assert_eq!(hlc.check_trusted(), Ok(()), "judged sound");
        clock.set(1_605_000);
        assert!(hlc.renew_reservation().unwrap(), "judged sound");
        let alone = Hlc::open(clock.clone(), Arc::new(Cell::default())).unwrap().with_unjudged_grace(std::time::Duration::ZERO);
        assert_eq!(alone.check_trusted(), Ok(()), "nobody judged it within the grace");
        assert!(alone.renew_reservation().unwrap(), "nobody judged it within the grace");
        let seedless = Hlc::open(clock, Arc::new(Cell::default())).unwrap();
        assert_eq!(seedless.check_trusted(), Ok(()), "without a grace there is nobody to wait for");
    }

    #[test]
    fn a_clock_that_ran_ahead_before_a_restart_stamps_nothing_until_it_catches_up() {
        let (clock, hw) = (ManualClock::new(1_600_000), Arc::new(Cell::default()));
        let hlc = Hlc::open(clock.clone(), hw.clone()).unwrap().with_max_drift_ms(10_000);
        hlc.now().unwrap();
        // Put right by 10 min and restarted: the mark keeps the lead.
        clock.set(1_000_000);
        let hlc = Hlc::open(clock.clone(), hw.clone()).unwrap().with_max_drift_ms(10_000);
        match hlc.check_trusted() {
            Err(ClockAhead::OfItsClock { ahead_ms, limit_ms: 10_000 }) => assert!((600_000..602_001).contains(&ahead_ms), "{ahead_ms}"),
            other => panic!("{other:?}"),
        }
        // Before peers judge it, the lead is still told apart (the node logs it at start).
        let unjudged =
            Hlc::open(clock.clone(), hw).unwrap().with_max_drift_ms(10_000).with_unjudged_grace(std::time::Duration::from_secs(60));
        assert!(matches!(unjudged.check_trusted(), Err(ClockAhead::NotJudgedYet { .. })));
        assert!(matches!(unjudged.check_lead(), Err(ClockAhead::OfItsClock { .. })));
        clock.set(1_592_000);
        assert_eq!(hlc.check_trusted(), Ok(()), "within what peers accept");
    }

    #[test]
    fn monotonic_when_the_wall_clock_steps_back() {
        let clock = ManualClock::new(1_000_000);
        let hlc = Hlc::open(clock.clone(), Arc::new(Cell::default())).unwrap();
        let a = hlc.now().unwrap();
        clock.set(10);
        let b = hlc.now().unwrap();
        let c = hlc.now().unwrap();
        assert!(a < b && b < c);
        clock.set(2_000_000);
        let d = hlc.now().unwrap();
        assert_eq!(d, 2_000_000 << 16);
    }

    #[test]
    fn a_stamp_too_far_ahead_is_refused_and_moves_nothing() {
        let clock = ManualClock::new(1_000_000);
        let hlc = Hlc::open(clock.clone(), Arc::new(Cell::default())).unwrap().with_max_drift_ms(5_000);
        assert_eq!(hlc.check_drift(1_005_000 << 16 | 7), Ok(()));
        assert_eq!(hlc.check_drift(1 << 16), Ok(()), "the past is always fine");
        assert_eq!(hlc.check_drift(1_005_001 << 16), Err(TooFarAhead { ahead_ms: 5_001, max_ms: 5_000 }));
        clock.set(1_000_002);
        assert_eq!(hlc.check_drift(1_005_001 << 16), Ok(()), "the same stamp once the clock caught up");
        assert!(hlc.now().unwrap() >> 16 == 1_000_002);
    }

    #[test]
    fn observe_moves_past_remote_stamps() {
        let clock = ManualClock::new(5);
        let hlc = Hlc::open(clock, Arc::new(Cell::default())).unwrap();
        hlc.observe(99 << 16).unwrap();
        assert!(hlc.now().unwrap() > 99 << 16);
    }

    /// Counts how often the mark is written.
    #[derive(Default)]
    struct Counted(Mutex<(u64, u32)>);
    impl HighWater for Counted {
        fn load(&self) -> Result<u64, StorageError> {
            Ok(self.0.lock().unwrap().0)
        }
        fn store(&self, hwm: u64) -> Result<(), StorageError> {
            let mut c = self.0.lock().unwrap();
            *c = (hwm, c.1 + 1);
            Ok(())
        }
    }

    #[test]
    fn renewing_ahead_keeps_the_mark_write_off_the_stamping_path() {
        let (clock, hw) = (ManualClock::new(1_000_000), Arc::new(Counted::default()));
        let hlc = Hlc::open(clock.clone(), hw.clone()).unwrap();
        let writes = || hw.0.lock().unwrap().1;
        assert!(hlc.renew_reservation().unwrap(), "a fresh clock reserves at once");
        assert_eq!(writes(), 1);
        assert_eq!(hw.load().unwrap() >> 16, 1_000_000 + RESERVE_MS);
        // Stamps and renewals every RENEW_EVERY_MS for a minute: only the
        // renewals write the mark, once per three quarters of a reserve period
        // (when less than half of it is left at a check).
        for step in 1..=60_000 / RENEW_EVERY_MS {
            clock.set(1_000_000 + step * RENEW_EVERY_MS);
            let before = writes();
            for _ in 0..100 {
                let stamp = hlc.now().unwrap();
                assert!(stamp < hw.load().unwrap(), "every stamp stays below the persisted mark");
            }
            assert_eq!(writes(), before, "stamping wrote the mark at step {step}");
            hlc.renew_reservation().unwrap();
        }
        assert!((38..=44).contains(&writes()), "{} writes of the mark in a minute", writes());
        // Without renewals, a stamp past the mark still moves it first.
        clock.set(2_000_000);
        let before = writes();
        let stamp = hlc.now().unwrap();
        assert_eq!(writes(), before + 1);
        assert!(stamp < hw.load().unwrap());
    }

    #[test]
    fn monotonic_across_restart_even_if_the_clock_went_back() {
        let hw = Arc::new(Cell::default());
        let clock = ManualClock::new(1_000_000);
        let issued = {
            let hlc = Hlc::open(clock.clone(), hw.clone()).unwrap();
            (0..1000).map(|_| hlc.now().unwrap()).max().unwrap()
        };
        clock.set(1);
        let hlc = Hlc::open(clock, hw).unwrap();
        assert!(hlc.now().unwrap() > issued);
    }
}
