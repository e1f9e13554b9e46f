//! `confer`: the command-line front end of Confer.
//!
//! This binary is deliberately thin. It parses arguments, sets up tracing (to stderr,
//! level `warn` unless `RUST_LOG` says otherwise), reads passphrases, and then either
//! - creates the profile, or changes its passphrase, through the store crate (`init`,
//!   `passphrase change`),
//! - runs a node from the node crate in this process (`node run`, `demo`), or
//! - sends one request to the running node over its control socket (everything else).
//!
//! It knows nothing of rooms, invites or encryption; those decisions belong to the node.
//!
//! Exit status: 0 on success; 1 with one sentence on stderr, prefixed `error: `, when a
//! command fails (nothing is changed); 2 for a command line clap cannot accept.

mod args;
mod commands;
mod config;
mod demo;
mod duration;
mod error;
mod init;
mod node_run;
mod output;
mod passphrase;
mod passphrase_change;
mod relay_run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::args::{
    Cli, Command, ConfigCommand, InviteCommand, NodeCommand, PassphraseCommand, RelayCommand,
    RoomCommand,
};
use crate::error::Error;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // First, while this is the only thread: passphrases in the environment are taken out
    // of it (this may start `confer` again in this process, see `passphrase`).
    let given = if takes_passphrase(&cli.command) {
        match passphrase::Given::take() {
            Ok(given) => given,
            Err(e) => {
                eprintln!("error: {}", output::safe(&e.to_string()));
                return ExitCode::FAILURE;
            }
        }
    } else {
        passphrase::Given::default()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    match run(cli, given) {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever was reading our output has gone (e.g. `confer read ROOM | head`).
        Err(Error::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::FAILURE,
        Err(e) => {
            // Refusals echo what was typed and names other members chose: nothing in
            // them may move the cursor or recolour the terminal.
            eprintln!("error: {}", output::safe(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Whether `command` unlocks or creates the profile, and so may read a passphrase from
/// the environment. The others never read it, and some read their standard input.
fn takes_passphrase(command: &Command) -> bool {
    matches!(
        command,
        Command::Init { .. }
            | Command::Config { .. }
            | Command::Node(NodeCommand::Run { .. })
            | Command::Passphrase(_)
    )
}

fn run(cli: Cli, given: passphrase::Given) -> Result<(), Error> {
    if let Command::Demo = cli.command {
        return demo::run();
    }
    let home = home(cli.home)?;
    let home = home.as_path();
    match cli.command {
        Command::Demo => demo::run(),
        Command::Init {
            name,
            relay_only,
            output,
        } => init::run(home, given, &name, relay_only, output.json),
        Command::Config { action, output } => config::run(
            home,
            given,
            action.unwrap_or(ConfigCommand::Show { output }),
        ),
        Command::Passphrase(PassphraseCommand::Change { output }) => {
            passphrase_change::run(home, given, output.json)
        }
        Command::Relay(RelayCommand::Run {
            listen,
            announce,
            json,
        }) => relay_run::run(home, listen, announce, json),
        Command::Node(NodeCommand::Run {
            listen,
            relay,
            json,
        }) => node_run::run(home, given, listen, relay, json),
        Command::Status { output } => client(commands::status(home, output.json)),
        Command::Room(RoomCommand::Create {
            name,
            display_name,
            output,
        }) => client(commands::create_room(home, name, display_name, output.json)),
        Command::Room(RoomCommand::List { output }) => {
            client(commands::list_rooms(home, output.json))
        }
        Command::Room(RoomCommand::Forget { room, output }) => {
            client(commands::forget_room(home, room, output.json))
        }
        Command::Invite {
            action: Some(InviteCommand::List { room, output }),
            ..
        } => client(commands::list_invites(home, room, output.json)),
        Command::Invite {
            action:
                Some(InviteCommand::Revoke {
                    room,
                    invite,
                    output,
                }),
            ..
        } => client(commands::revoke_invite(home, room, invite, output.json)),
        Command::Invite {
            action:
                Some(InviteCommand::Create {
                    room,
                    expires,
                    output,
                }),
            ..
        } => client(commands::invite(home, room, expires, output.json)),
        Command::Invite {
            action: None,
            room,
            expires,
            output,
        } => {
            // clap requires ROOM when there is no subcommand.
            let room = room.ok_or_else(|| Error::usage("say which room to invite to"))?;
            client(commands::invite(home, room, expires, output.json))
        }
        Command::Join {
            code,
            display_name,
            wait,
            output,
        } => client(commands::join(home, code, display_name, wait, output.json)),
        Command::Send { room, text, output } => {
            client(commands::send(home, room, text, output.json))
        }
        Command::Read {
            room,
            follow,
            last,
            output,
        } => client(commands::read(home, room, follow, last, output.json)),
        Command::Members { room, output } => client(commands::members(home, room, output.json)),
        Command::Leave {
            room,
            anyway,
            output,
        } => client(commands::leave(home, room, anyway, output.json)),
        Command::Remove {
            room,
            member,
            output,
        } => client(commands::remove(home, room, member, output.json)),
        Command::Rotate { room, output } => client(commands::rotate(home, room, output.json)),
        Command::Handover {
            room,
            member,
            output,
        } => client(commands::handover(home, room, member, output.json)),
    }
}

/// The profile directory: `--home`, else `CONFER_HOME` (clap reads both), else the
/// platform's data directory.
fn home(given: Option<PathBuf>) -> Result<PathBuf, Error> {
    match given {
        Some(dir) if dir.as_os_str().is_empty() => Err(Error::usage(
            "the profile directory (--home or CONFER_HOME) is empty",
        )),
        Some(dir) => Ok(dir),
        None => dirs::data_dir()
            .map(|dir| dir.join("confer"))
            .ok_or_else(|| {
                Error::usage("could not find your data directory; choose one with --home DIR")
            }),
    }
}

/// A runtime for the commands that run nodes in this process.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::usage(format!("could not start the async runtime: {e}")))
}

/// Runs one control-socket command on a small single-threaded runtime.
fn client(command: impl std::future::Future<Output = Result<(), Error>>) -> Result<(), Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::usage(format!("could not start the async runtime: {e}")))?
        .block_on(command)
}
