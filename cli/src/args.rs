//! The command line, as clap sees it. The doc comments here are the `--help` text, so they
//! are written for the people who use Confer, not for its developers.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::duration::{parse_invite_lifetime, parse_wait};

/// Confer: small, private discussion rooms for professionals who work alone.
///
/// Rooms hold at most eight people. Everything is end-to-end encrypted, travels directly
/// between the members' computers (there is no server) and is stored encrypted on disk.
///
/// Start with `confer init --name NAME`, then keep `confer node run` going in one terminal
/// and use the other commands from another. Try `confer demo` to see a whole session.
#[derive(Debug, Parser)]
#[command(name = "confer", version, propagate_version = true)]
pub struct Cli {
    /// The directory holding your profile and your encrypted history
    /// [default: your data directory, e.g. ~/.local/share/confer]
    #[arg(long, global = true, env = "CONFER_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--json`, shared by every command that prints data.
#[derive(Debug, Clone, Copy, Args)]
pub struct Output {
    /// Print exactly one JSON document on standard output instead of text for people.
    #[arg(long)]
    pub json: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create your profile: your device key, protected by a passphrase.
    ///
    /// The passphrase is asked for twice, or taken from the CONFER_PASSPHRASE environment
    /// variable. Without it, nobody (including whoever copies the directory) can read
    /// anything Confer stores. It cannot be recovered if you forget it. It must be hard
    /// to guess: a few unrelated words are easy to remember and hard to guess; common
    /// passwords, names, dates, keyboard patterns and repeats are refused.
    Init {
        /// Your name as offered to rooms by default (each room can show a different one).
        #[arg(long)]
        name: String,
        /// Never connect directly to other members: everything goes through a relay, so
        /// they never learn your IP address (change it later with `confer config`).
        #[arg(long)]
        relay_only: bool,
        #[command(flatten)]
        output: Output,
    },

    /// Change the passphrase that protects your profile (the node must be stopped).
    #[command(subcommand)]
    Passphrase(PassphraseCommand),

    /// Show or change this profile's network settings (the node must be stopped).
    ///
    /// `confer config` alone shows them, as `confer config show` does.
    #[command(args_conflicts_with_subcommands = true, disable_help_subcommand = true)]
    Config {
        /// What to show or change (default: show).
        #[command(subcommand)]
        action: Option<ConfigCommand>,
        #[command(flatten)]
        output: Output,
    },

    /// Serve as a relay for members behind NAT or in relay-only mode.
    #[command(subcommand)]
    Relay(RelayCommand),

    /// Run your node: the program that talks to the other members.
    #[command(subcommand)]
    Node(NodeCommand),

    /// Show this node's network identity, addresses and rooms.
    Status {
        #[command(flatten)]
        output: Output,
    },

    /// Create or list rooms, or forget one you have left.
    #[command(subcommand)]
    Room(RoomCommand),

    /// Invite one person to a room you facilitate, or list or revoke your invites.
    ///
    /// `confer invite ROOM` prints a code to give to that person over a channel you trust.
    /// The code works once, only until it expires, and only while your node is running.
    ///
    /// `confer invite list ROOM` shows the codes you issued that can still be used, and
    /// `confer invite revoke ROOM CODE` withdraws one so that nobody can join with it.
    ///
    /// A room that is literally named "list", "revoke" or "create" must be given here by
    /// the first characters of its id (see `confer room list`).
    #[command(
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true,
        subcommand_value_name = "COMMAND",
        disable_help_subcommand = true
    )]
    Invite {
        /// List or revoke invites instead of issuing one.
        #[command(subcommand)]
        action: Option<InviteCommand>,
        /// The room: its name, or the first characters of its id.
        #[arg(required = true)]
        room: Option<String>,
        /// How long the code stays valid: a number followed by s, m, h or d
        /// (seconds, minutes, hours, days), e.g. 90s, 30m, 24h, 7d; at most 365d.
        #[arg(long, value_name = "DURATION", default_value = "7d",
              value_parser = parse_invite_lifetime)]
        expires: u64,
        #[command(flatten)]
        output: Output,
    },

    /// Join a room with an invite code you were given.
    ///
    /// Your node contacts the facilitator's node, which must be running (or, with
    /// --wait, start running before the wait ends); this can take a few seconds. You
    /// appear in the room under a new identity that is not linked to your other rooms.
    Join {
        /// The invite code, exactly as you received it.
        code: String,
        /// The name the other members will see for you in this room [default: your
        /// profile's name]. It must differ from every current member's (ignoring case and
        /// spacing) and hold no invisible characters, so that nobody can pass for someone
        /// else.
        #[arg(long = "as", value_name = "DISPLAY_NAME")]
        display_name: Option<String>,
        /// If the facilitator's node cannot be reached now, keep trying for this long
        /// (e.g. 30m, 12h, 2d) instead of giving up: your node tries again, less and less
        /// often (at most once a minute), until it can, or the invite expires. Press
        /// Ctrl-C to stop waiting.
        #[arg(long, value_name = "DURATION", value_parser = parse_wait)]
        wait: Option<u64>,
        #[command(flatten)]
        output: Output,
    },

    /// Send a message to a room.
    Send {
        /// The room: its name, or the first characters of its id.
        room: String,
        /// The message; use - to read it from standard input (at most 32 KiB).
        text: String,
        #[command(flatten)]
        output: Output,
    },

    /// Show a room's discussion, oldest first.
    ///
    /// Membership changes since you joined (who joined, left, was removed or became the
    /// facilitator) are shown among the messages, as lines starting with "—". With
    /// --json (and without --follow) only the messages are printed, as one JSON array.
    Read {
        /// The room: its name, or the first characters of its id.
        room: String,
        /// Keep running and show new messages as they arrive (stop with Ctrl-C).
        ///
        /// One of your own messages that no other member's node could take yet is marked
        /// "(not yet received by anyone else)"; a line says when another member has it.
        /// One you sent before you left the room (or were removed), that no member
        /// confirmed, is marked "(not known to have reached anyone else)".
        ///
        /// With --json, each message is printed as its own JSON object on its own line
        /// (JSON Lines), history first, instead of one JSON array, and each membership
        /// change as `{"event": {...}}` (`kind` is created, joined, left, removed or
        /// handover; `who`, and `by` for the last two); that a message marked
        /// `"pending": true` has been received is a line `{"delivered": "<message id>"}`;
        /// one not known to have reached anyone also has `"gone": true`. If messages
        /// arrive much faster than they can be shown (thousands at once, as after a long
        /// absence), those the node could not hold for this reader are then taken from
        /// the stored history: each is still shown once.
        #[arg(long, short)]
        follow: bool,
        /// Show only the last N messages of the history (with --follow, then every new
        /// one); a first line says how many earlier ones are not shown (not with --json).
        #[arg(long, short = 'n', value_name = "N", value_parser = parse_last)]
        last: Option<u64>,
        #[command(flatten)]
        output: Output,
    },

    /// List a room's members, their roles, who is connected now, and the room's key epoch.
    ///
    /// The key epoch is a number that goes up each time the room's key changes: whenever
    /// someone leaves or is removed, and whenever a member runs `confer rotate`.
    ///
    /// A connected member whose node runs another version of Confer is said so (with
    /// --json, `other_version`): messages between you may not get through until you both
    /// run the same version.
    Members {
        /// The room: its name, or the first characters of its id.
        room: String,
        #[command(flatten)]
        output: Output,
    },

    /// Leave a room.
    ///
    /// You can still read what was said while you were a member, but you will receive
    /// nothing new: the others change the room's key as soon as they learn you have gone.
    /// Leaving cannot be undone; to come back you need a new invite. The facilitator
    /// cannot leave; hand the role to another member first with `confer handover`.
    ///
    /// The others learn you have gone from your node: if none of theirs is connected when
    /// you leave, keep your node running until it has reached one (`confer room list`
    /// and `confer node run` say when).
    ///
    /// Members take nothing from someone who has gone, so a message of yours that no
    /// other member has yet would never reach them: leave first waits (up to 10 seconds)
    /// for a connected member's node to receive it, and otherwise refuses, unless you
    /// add --anyway.
    Leave {
        /// The room: its name, or the first characters of its id.
        room: String,
        /// Leave now, even if some of your messages have not reached anyone yet (they
        /// never will).
        #[arg(long)]
        anyway: bool,
        #[command(flatten)]
        output: Output,
    },

    /// Remove someone from a room you facilitate.
    ///
    /// Removal also changes the room's key, so the person removed cannot read anything
    /// sent afterwards (what they received before stays with them). Anything they send
    /// after the removal is ignored by the other members.
    Remove {
        /// The room: its name, or the first characters of its id.
        room: String,
        /// Who to remove: their name in this room, or the first characters of their id
        /// as shown by `confer members`.
        member: String,
        #[command(flatten)]
        output: Output,
    },

    /// Change a room's key now.
    ///
    /// Messages sent from now on are sealed with a fresh key, made at random and given
    /// only to the current members. Confer already does this by itself whenever someone
    /// leaves or is removed. Changing it now and then as well limits how much a single
    /// stolen key could reveal.
    Rotate {
        /// The room: its name, or the first characters of its id.
        room: String,
        #[command(flatten)]
        output: Output,
    },

    /// Make another member the facilitator of a room you facilitate.
    ///
    /// They can then invite and remove people; you stay in the room as an ordinary
    /// member (and may then leave it).
    Handover {
        /// The room: its name, or the first characters of its id.
        room: String,
        /// The new facilitator: their name in this room, or the first characters of
        /// their id as shown by `confer members`.
        member: String,
        #[command(flatten)]
        output: Output,
    },

    /// Watch a complete session between three people, on this computer only.
    ///
    /// Starts three nodes with temporary profiles, creates a room, invites two people,
    /// lets them join and hold a short check-in, and shows that all three see the same
    /// discussion. Nothing is kept afterwards and nothing leaves this computer.
    Demo,
}

/// `confer node …`
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Run your node in the foreground until you press Ctrl-C (or it receives SIGTERM).
    ///
    /// Asks for your passphrase (or reads CONFER_PASSPHRASE), then prints its network
    /// identity and addresses once it is ready. While it runs, the other commands work.
    /// When it receives messages you missed while it was off, it says how many, and when
    /// it has caught up (it never prints room names or people's names).
    Run {
        /// An address to listen on, as a multiaddr; repeat for several
        /// [default: /ip4/0.0.0.0/tcp/0, or nothing in relay-only mode].
        #[arg(long, value_name = "MULTIADDR")]
        listen: Vec<String>,
        /// A relay to reserve a slot on for this run, as `confer relay run` prints it
        /// (…/p2p/RELAY_ID); repeat for several. To keep one, use `confer config add-relay`.
        #[arg(long, value_name = "MULTIADDR")]
        relay: Vec<String>,
        /// Print JSON lines: first the readiness line {"peer_id": ..., "listen": [...],
        /// "relays": [...]}, then catch-up progress {"event": "catching_up" or
        /// "caught_up", "received": N}, leaves {"event": "leave_unheard", "rooms": N} and
        /// {"event": "leave_heard"}, {"event": "other_copy"} if the profile seems to be
        /// running on another computer too, and {"event": "other_version", "nodes": N}
        /// when more members' nodes connected to this one run another version of Confer.
        #[arg(long)]
        json: bool,
    },
}

/// `confer passphrase …`
#[derive(Debug, Subcommand)]
pub enum PassphraseCommand {
    /// Change your passphrase: asks for the current one, then the new one twice.
    ///
    /// Stop your node first (Ctrl-C where it runs) and start it again afterwards with the
    /// new passphrase. Your rooms, history and identity stay as they are; only the lock
    /// on them changes. A copy of your profile folder made before the change (a backup)
    /// still opens with the old passphrase: replace or delete such copies.
    ///
    /// Scripts can give the current passphrase in CONFER_PASSPHRASE and the new one in
    /// CONFER_NEW_PASSPHRASE.
    Change {
        #[command(flatten)]
        output: Output,
    },
}

/// `confer config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Show the network settings.
    Show {
        #[command(flatten)]
        output: Output,
    },
    /// Turn relay-only mode on or off.
    ///
    /// In relay-only mode your node never connects directly to other members and never
    /// listens for them directly: everything goes through a relay, so the other members
    /// never learn your IP address. The relay does (it needs it to pass traffic on), but
    /// it only ever sees encrypted traffic. You need at least one relay: add one with
    /// `confer config add-relay`, or join with an invite from a facilitator who uses one.
    RelayOnly {
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        mode: String,
        #[command(flatten)]
        output: Output,
    },
    /// Keep a relay to reserve a slot on whenever the node runs.
    AddRelay {
        /// The relay's address as `confer relay run` prints it (…/p2p/RELAY_ID).
        #[arg(value_name = "MULTIADDR")]
        address: String,
        #[command(flatten)]
        output: Output,
    },
    /// Stop using a relay.
    RemoveRelay {
        /// The relay's address, as `confer config show` lists it.
        #[arg(value_name = "MULTIADDR")]
        address: String,
        #[command(flatten)]
        output: Output,
    },
}

/// `confer relay …`
#[derive(Debug, Subcommand)]
pub enum RelayCommand {
    /// Run a relay in the foreground until Ctrl-C (or SIGTERM).
    ///
    /// A relay passes encrypted traffic between members who cannot reach each other
    /// directly (behind NAT or firewalls, or in relay-only mode). It needs no profile and
    /// no passphrase and stores nothing but its own key (in --home), and it can never read
    /// what members say; it does see their IP addresses and when they talk. Give members
    /// one of the addresses it prints; run it where they can all reach it.
    Run {
        /// An address to listen on, as a multiaddr; repeat for several.
        #[arg(
            long,
            value_name = "MULTIADDR",
            default_value = "/ip4/0.0.0.0/tcp/4001"
        )]
        listen: Vec<String>,
        /// A public address to announce as well (e.g. behind a port forward); repeat for
        /// several.
        #[arg(long, value_name = "MULTIADDR")]
        announce: Vec<String>,
        /// Print the readiness line as JSON: {"peer_id": ..., "addresses": [...]}.
        #[arg(long)]
        json: bool,
    },
}

/// `confer invite …`
#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// The same as `confer invite ROOM` (as `confer room create` creates a room).
    #[command(hide = true)]
    Create {
        /// The room: its name, or the first characters of its id.
        room: String,
        /// How long the code stays valid (see `confer invite --help`).
        #[arg(long, value_name = "DURATION", default_value = "7d",
              value_parser = parse_invite_lifetime)]
        expires: u64,
        #[command(flatten)]
        output: Output,
    },
    /// List the invites to a room that can still be used, soonest expiry first.
    ///
    /// Only the invites issued from this node are shown; each has an id, which
    /// `confer invite revoke` accepts instead of the code.
    List {
        /// The room: its name, or the first characters of its id.
        room: String,
        #[command(flatten)]
        output: Output,
    },
    /// Withdraw an invite so that nobody can join with it.
    Revoke {
        /// The room: its name, or the first characters of its id.
        room: String,
        /// The invite: its code as printed by `confer invite`, or the first characters
        /// of its id as shown by `confer invite list`.
        #[arg(value_name = "CODE|ID")]
        invite: String,
        #[command(flatten)]
        output: Output,
    },
}

/// `confer room …`
#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// Create a room; you become its facilitator.
    ///
    /// The name is only ever shown to the room's members; it is never sent in clear.
    Create {
        /// The room's name, e.g. "Monthly peer supervision".
        name: String,
        /// The name the members will see for you in this room [default: your profile's name].
        #[arg(long = "as", value_name = "DISPLAY_NAME")]
        display_name: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// List your rooms, including those you have left.
    ///
    /// For each: how many members and messages it has, how many of your messages no
    /// other member has confirmed receiving yet, and whether you have left it (and if
    /// so, whether any other member has heard yet).
    List {
        #[command(flatten)]
        output: Output,
    },
    /// Delete a room you have left from this computer: its whole history and keys.
    ///
    /// For when you no longer need your copy of a discussion. It cannot be undone; the
    /// other members keep theirs. Only for rooms you have left or were removed from, and
    /// only once another member has heard that you left. The deleted data is encrypted;
    /// the database may keep unreadable traces of it until it reuses the space.
    Forget {
        /// The room: its name, or the first characters of its id.
        room: String,
        #[command(flatten)]
        output: Output,
    },
}

/// `--last N`: a whole number of messages, at least one.
fn parse_last(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("show at least one message (leave --last out to see them all)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a number of messages")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn listening_is_left_to_the_node_and_relays_repeat() {
        // No --listen: the node picks (all interfaces, or nothing in relay-only mode).
        let cli = Cli::try_parse_from(["confer", "node", "run", "--relay", "/a", "--relay", "/b"])
            .unwrap();
        let Command::Node(NodeCommand::Run {
            listen,
            relay,
            json,
        }) = cli.command
        else {
            panic!("wrong command");
        };
        assert!(listen.is_empty());
        assert_eq!(relay, vec!["/a".to_owned(), "/b".to_owned()]);
        assert!(!json);
    }

    #[test]
    fn invite_room_still_issues_an_invite() {
        let cli = Cli::try_parse_from(["confer", "invite", "room", "--expires", "1h"]).unwrap();
        let Command::Invite {
            action: None,
            room: Some(room),
            expires,
            ..
        } = cli.command
        else {
            panic!("wrong command");
        };
        assert_eq!((room.as_str(), expires), ("room", 3600));
    }

    #[test]
    fn invite_list_and_revoke_are_subcommands() {
        let cli = Cli::try_parse_from(["confer", "invite", "list", "room", "--json"]).unwrap();
        let Command::Invite {
            action: Some(InviteCommand::List { room, output }),
            room: None,
            ..
        } = cli.command
        else {
            panic!("wrong command");
        };
        assert_eq!(room, "room");
        assert!(output.json);

        let cli = Cli::try_parse_from(["confer", "invite", "revoke", "room", "abc"]).unwrap();
        let Command::Invite {
            action: Some(InviteCommand::Revoke { room, invite, .. }),
            ..
        } = cli.command
        else {
            panic!("wrong command");
        };
        assert_eq!((room.as_str(), invite.as_str()), ("room", "abc"));
    }

    #[test]
    fn last_is_a_positive_number() {
        let last = |n: &str| Cli::try_parse_from(["confer", "read", "room", "--last", n]);
        assert!(last("3").is_ok());
        for bad in ["0", "ten"] {
            let error = last(bad).unwrap_err().to_string();
            assert!(
                error.contains("at least one message") || error.contains("not a number"),
                "{error}"
            );
        }
    }

    /// `room create` creates a room, so people type `invite create ROOM` too.
    #[test]
    fn invite_create_is_invite() {
        let cli =
            Cli::try_parse_from(["confer", "invite", "create", "room", "--expires", "1h"]).unwrap();
        let Command::Invite {
            action: Some(InviteCommand::Create { room, expires, .. }),
            ..
        } = cli.command
        else {
            panic!("wrong command");
        };
        assert_eq!((room.as_str(), expires), ("room", 3600));
    }

    #[test]
    fn invite_needs_a_room_or_a_subcommand() {
        for args in [
            &["confer", "invite"][..],
            &["confer", "invite", "--expires", "1h"],
            &["confer", "invite", "list"],
            &["confer", "invite", "revoke", "room"],
            &["confer", "invite", "room", "list"],
            &["confer", "invite", "list", "room", "--expires", "1h"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn invite_defaults_to_seven_days() {
        let cli = Cli::try_parse_from(["confer", "invite", "room"]).unwrap();
        let Command::Invite { expires, .. } = cli.command else {
            panic!("wrong command");
        };
        assert_eq!(expires, 7 * 24 * 60 * 60);
    }
}
