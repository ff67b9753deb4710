//! `kassa admin passwd | add | remove <user>`.

use std::io::{BufRead, IsTerminal, Write};

use chrono::Utc;

use super::CommandError;
use crate::db::DbTarget;
use crate::domain::admin::Role;
use crate::service::admin::change_password_offline;
use crate::service::staff::{add_user_offline, remove_user_offline};

/// The new password: typed twice without echo on a terminal, else the first line of
/// standard input (so scripts can pipe it in).
fn read_password() -> Result<String, CommandError> {
    let io = |e: std::io::Error| CommandError::new(format!("cannot read the password: {e}"));
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New password: ").map_err(io)?;
        let second = rpassword::prompt_password("Repeat it: ").map_err(io)?;
        if first != second {
            return Err(CommandError::new("the two passwords differ; nothing was changed"));
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(io)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

pub fn passwd(db: &DbTarget, user: &str, out: &mut impl Write) -> Result<(), CommandError> {
    let password = read_password()?;
    change_password_offline(db, user, &password, Utc::now()).map_err(|e| CommandError::new(e.to_string()))?;
    writeln!(out, "password of {user:?} changed; their sessions have ended")
        .map_err(|e| CommandError::new(e.to_string()))
}

pub fn add(db: &DbTarget, user: &str, role: Role, out: &mut impl Write) -> Result<(), CommandError> {
    let password = read_password()?;
    add_user_offline(db, user, &password, role, Utc::now()).map_err(|e| CommandError::new(e.to_string()))?;
    writeln!(out, "added {user:?} as {role}").map_err(|e| CommandError::new(e.to_string()))
}

pub fn remove(db: &DbTarget, user: &str, out: &mut impl Write) -> Result<(), CommandError> {
    remove_user_offline(db, user, Utc::now()).map_err(|e| CommandError::new(e.to_string()))?;
    writeln!(out, "removed {user:?}; their sessions have ended").map_err(|e| CommandError::new(e.to_string()))
}
