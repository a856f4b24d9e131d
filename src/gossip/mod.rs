//! Membership by gossip (DESIGN.md §6): the SWIM failure detector and the
//! rumors that spread membership changes, as a sans-I/O state machine
//! ([`swim::Swim`]), and the simulator that runs thousands of them over a
//! virtual network ([`sim`], behind `hearsay sim`). Owns no sockets, tasks or
//! clocks; it must not touch storage or placement.

pub mod message;
pub mod rumors;
pub mod sim;
pub mod swim;

pub use message::{Envelope, GossipPacket, Message, Rumor, Setting, State, Update};
pub use swim::{Millis, Output, Peer, Swim, SwimConfig};
