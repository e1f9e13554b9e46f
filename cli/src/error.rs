//! Why a command failed. Every variant displays as one sentence that `main` prints after
//! `error: ` before exiting with status 1.

use confer_node::NodeError;
use confer_node::client::ClientError;
use confer_store::StoreError;

/// A command's failure, already in the user's words.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Talking to the running node failed (including: no node is running).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The node answered `Reply::Error`; its message is meant for the user as is.
    #[error("{0}")]
    Refused(String),
    /// Creating or unlocking the profile failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Starting or running a node in this process failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Standard output could not be written (e.g. the reader went away).
    #[error("could not write the output: {0}")]
    Output(std::io::Error),
    /// Something about the input or the environment, described for the user.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// A failure described by a sentence.
    pub fn usage(sentence: impl Into<String>) -> Self {
        Self::Usage(sentence.into())
    }
}
