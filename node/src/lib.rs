//! The Confer node.
//!
//! A node runs one person's side of Confer: it owns the libp2p swarm ([`net`]), the
//! encrypted store (`confer-store`) and the person's rooms (`confer-room`), in one
//! event loop ([`Node`]); and it serves a local control API ([`api`]) on a Unix socket
//! in the profile directory, readable by the owner only, which the `confer` binary
//! talks to ([`client`]).
//!
//! Architecture invariant: this is the only crate that knows libp2p. It never logs
//! message text, names or key material.
#![deny(missing_docs)]

mod addresses;
pub mod api;
mod budget;
pub mod client;
mod control;
mod limits;
#[allow(missing_docs)] // `#[derive(NetworkBehaviour)]` generates an undocumented event enum
pub mod net;
mod node;
mod reach;
pub mod relay;
pub mod settings;
pub mod strangers;
pub mod sync;

pub use node::{FOLLOW_QUEUE, FollowUpdate, Following, Node, NodeConfig, NodeError};
