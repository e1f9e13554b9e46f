//! A profile's network settings, kept sealed in its store: relay-only mode (a privacy
//! choice) and the relays the node reserves a slot on; and, in a record of its own, the
//! port the node chose to listen on, so that it comes back at the same address.
//!
//! They are read when the node starts; `confer config` changes them while the node is
//! stopped. Relays learned from invites are added by the running node.

use confer_store::{Profile, Store, StoreError};
use libp2p::{Multiaddr, multiaddr::Protocol};
use serde::{Deserialize, Serialize};

/// The store record holding the settings.
const RECORD: &str = "network";
/// Largest encoded settings record.
const MAX_BYTES: usize = 16 * 1024;
/// Most relays a profile keeps.
pub const MAX_RELAYS: usize = 8;

/// A profile's network settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Never connect directly to other members: listen and dial only through relays, so
    /// that other members never learn this node's IP address.
    pub relay_only: bool,
    /// Relays to reserve a slot on, as multiaddresses ending in `/p2p/<relay peer id>`.
    pub relays: Vec<String>,
}

/// Why a relay address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayAddressError {
    /// Not a multiaddress.
    #[error("`{0}` is not a valid address (expected e.g. /ip4/203.0.113.5/tcp/4001/p2p/12D3KooW…)")]
    Invalid(String),
    /// No peer id, or a relayed address.
    #[error(
        "`{0}` must end with /p2p/ and the relay's peer id, as `confer relay run` prints it, and must not contain /p2p-circuit"
    )]
    NotRelay(String),
    /// Too many relays.
    #[error("a profile keeps at most {MAX_RELAYS} relays")]
    TooMany,
}

/// Parses a relay's address: a host and port followed by `/p2p/<relay peer id>`.
pub fn parse_relay(addr: &str) -> Result<Multiaddr, RelayAddressError> {
    let parsed: Multiaddr = addr
        .trim()
        .parse()
        .map_err(|_| RelayAddressError::Invalid(addr.to_owned()))?;
    let ends_with_peer = matches!(parsed.iter().last(), Some(Protocol::P2p(_)));
    let relayed = parsed.iter().any(|p| matches!(p, Protocol::P2pCircuit));
    if !ends_with_peer || relayed || parsed.iter().count() < 2 {
        return Err(RelayAddressError::NotRelay(addr.to_owned()));
    }
    Ok(parsed)
}

/// The store record holding the TCP port the node last listened on.
const LISTEN_PORT_RECORD: &str = "listen-port";

/// The TCP port the node listened on last time it chose one itself (no `--listen`), if
/// any: it listens there again, so that members who stored its address can redial it
/// after a restart. Only a hint: a record that does not decode is ignored.
pub fn remembered_port(store: &Store) -> Option<u16> {
    let bytes = store.setting(LISTEN_PORT_RECORD).ok()??;
    let port = u16::from_be_bytes(bytes.as_slice().try_into().ok()?);
    (port != 0).then_some(port)
}

/// Records the port for [`remembered_port`].
pub fn remember_port(store: &Store, port: u16) -> Result<(), StoreError> {
    store.put_setting(LISTEN_PORT_RECORD, &port.to_be_bytes())
}

impl Settings {
    /// Reads the settings from an open store (defaults if none were saved). A record that
    /// does not decode is reported as damage, never silently reset.
    pub fn read(store: &Store) -> Result<Settings, StoreError> {
        match store.setting(RECORD)? {
            None => Ok(Settings::default()),
            Some(bytes) => {
                confer_room::wire::decode(&bytes, MAX_BYTES).map_err(|_| StoreError::Corrupt {
                    dir: store.home().to_path_buf(),
                    reason: "the network settings do not decode".into(),
                })
            }
        }
    }

    /// Writes the settings to an open store, durably.
    pub fn write(&self, store: &Store) -> Result<(), StoreError> {
        let bytes = confer_room::wire::encode(self).map_err(|_| StoreError::Crypto {
            reason: "encoding the network settings",
        })?;
        store.put_setting(RECORD, &bytes)
    }

    /// Opens the profile's store (so the node must not be running) and reads them.
    pub fn load(profile: &Profile) -> Result<Settings, StoreError> {
        Settings::read(&Store::open(profile)?)
    }

    /// Opens the profile's store (so the node must not be running) and writes them.
    pub fn save(&self, profile: &Profile) -> Result<(), StoreError> {
        self.write(&Store::open(profile)?)
    }

    /// Adds a relay (validated); false if it was already there.
    pub fn add_relay(&mut self, addr: &str) -> Result<bool, RelayAddressError> {
        let parsed = parse_relay(addr)?.to_string();
        if self.relays.contains(&parsed) {
            return Ok(false);
        }
        if self.relays.len() >= MAX_RELAYS {
            return Err(RelayAddressError::TooMany);
        }
        self.relays.push(parsed);
        Ok(true)
    }

    /// Removes a relay; false if it was not there.
    pub fn remove_relay(&mut self, addr: &str) -> bool {
        let normalised = parse_relay(addr).map(|a| a.to_string());
        let before = self.relays.len();
        self.relays
            .retain(|r| r != addr.trim() && Ok(r) != normalised.as_ref());
        self.relays.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: &str =
        "/ip4/203.0.113.5/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

    #[test]
    fn relay_addresses_must_name_the_relay_and_not_be_relayed() {
        assert!(parse_relay(RELAY).is_ok());
        assert!(matches!(
            parse_relay("/ip4/203.0.113.5/tcp/4001"),
            Err(RelayAddressError::NotRelay(_))
        ));
        assert!(matches!(
            parse_relay(&format!("{RELAY}/p2p-circuit")),
            Err(RelayAddressError::NotRelay(_))
        ));
        assert!(matches!(
            parse_relay("not an address"),
            Err(RelayAddressError::Invalid(_))
        ));
    }

    #[test]
    fn relays_are_deduplicated_bounded_and_removable() {
        let mut settings = Settings::default();
        assert_eq!(settings.add_relay(RELAY), Ok(true));
        assert_eq!(settings.add_relay(&format!(" {RELAY} ")), Ok(false));
        for port in 1..MAX_RELAYS {
            let addr = RELAY.replace("4001", &(4001 + port).to_string());
            assert_eq!(settings.add_relay(&addr), Ok(true));
        }
        let one_more = RELAY.replace("4001", "5000");
        assert_eq!(
            settings.add_relay(&one_more),
            Err(RelayAddressError::TooMany)
        );
        assert!(settings.remove_relay(RELAY));
        assert!(!settings.remove_relay(RELAY));
        assert_eq!(settings.relays.len(), MAX_RELAYS - 1);
    }
}
