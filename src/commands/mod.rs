//! One module per command-line subcommand other than `serve`.

pub mod admin;
pub mod apikey;
pub mod backup;
pub mod config;
pub mod doctor;
pub mod export;
pub mod healthcheck;
pub mod migrate;
pub mod restore;
pub mod webhooks;

/// A command's failure: a sentence for the operator and an exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    pub message: String,
}

impl CommandError {
    pub fn new(message: impl Into<String>) -> Self {
        CommandError {
            message: message.into(),
        }
    }
}

impl From<crate::db::DbError> for CommandError {
    fn from(e: crate::db::DbError) -> Self {
        CommandError::new(e.to_string())
    }
}
