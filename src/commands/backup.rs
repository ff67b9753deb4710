//! `kassa backup <file>`.

use std::io::Write;
use std::path::Path;

use super::CommandError;
use crate::db::{backup, DbTarget};

pub fn run(
    database: &DbTarget,
    target: &Path,
    force: bool,
    out: &mut impl Write,
) -> Result<(), CommandError> {
    let Some(db_path) = database.sqlite_path() else {
        let file = quoted(&target.to_string_lossy());
        return Err(postgres_refusal("backup", database, |url| {
            format!("pg_dump --format=custom --file={file} {url}")
        }));
    };
    if !db_path.exists() {
        return Err(CommandError::new(format!(
            "no database at {}; nothing to back up",
            db_path.display()
        )));
    }
    if target.exists() && !force {
        return Err(CommandError::new(format!(
            "{} exists; pass --force to replace it",
            target.display()
        )));
    }
    // Write beside the target and rename, so a crash never leaves a half backup under
    // the requested name.
    let mut partial = target.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    let pages = backup::copy(db_path, &partial)?;
    let check = backup::integrity_check(&partial)?;
    if check != "ok" {
        let _ = std::fs::remove_file(&partial);
        return Err(CommandError::new(format!(
            "the copy failed its integrity check: {check}"
        )));
    }
    std::fs::rename(&partial, target)
        .map_err(|e| CommandError::new(format!("cannot move backup into place: {e}")))?;
    writeln!(
        out,
        "backed up {} ({pages} pages) to {}; integrity_check: ok",
        db_path.display(),
        target.display()
    )
    .map_err(|e| CommandError::new(e.to_string()))?;
    Ok(())
}

/// Why `kassa backup` / `kassa restore` refuse a PostgreSQL database, with the
/// PostgreSQL tool's command to run instead (`tool` given the quoted URL), the URL
/// shown without its password: the tool reads that from `PGPASSWORD` or `~/.pgpass`,
/// and a password must not land in a shell history. Nothing is written.
pub(super) fn postgres_refusal(
    command: &str,
    database: &DbTarget,
    tool: impl FnOnce(&str) -> String,
) -> CommandError {
    let (url, hidden) = without_password(database);
    let mut message = format!(
        "kassa {command} copies a SQLite file, and this database is PostgreSQL: nothing was written. \
         Use PostgreSQL's own tool:\n  {}",
        tool(&quoted(&url))
    );
    if hidden {
        message.push_str(
            "\n(options of database.url that may hold a password are left out above: add them back)",
        );
    }
    message.push_str("\nSee README, Backing up and restoring.");
    CommandError::new(message)
}

/// The URL as `DbTarget` shows it, with the password left out rather than `***`, and
/// every option whose value is not shown left out too; true when one was.
fn without_password(database: &DbTarget) -> (String, bool) {
    let shown = database.to_string();
    let (scheme, rest) = shown.split_once("://").unwrap_or(("postgres", &shown));
    let (location, options) = match rest.split_once('?') {
        Some((location, options)) => (location, Some(options)),
        None => (rest, None),
    };
    let location = match location.rsplit_once('@') {
        Some((user, host)) => format!("{}@{host}", user.strip_suffix(":***").unwrap_or(user)),
        None => location.to_owned(),
    };
    let mut hidden = false;
    let kept: Vec<&str> = options
        .into_iter()
        .flat_map(|o| o.split('&'))
        .filter(|option| {
            let secret = option.ends_with("=***");
            hidden |= secret;
            !secret && !option.is_empty()
        })
        .collect();
    let url = if kept.is_empty() {
        format!("{scheme}://{location}")
    } else {
        format!("{scheme}://{location}?{}", kept.join("&"))
    };
    (url, hidden)
}

/// `text` as one POSIX shell word.
pub(super) fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(url: &str) -> (String, bool) {
        without_password(&DbTarget::parse(url).unwrap())
    }

    #[test]
    fn the_url_for_pg_dump_has_no_password_and_no_hidden_option() {
        assert_eq!(
            shown("postgresql://kassa:SECRET@db/shop"),
            ("postgresql://kassa@db/shop".to_owned(), false)
        );
        assert_eq!(
            shown("postgres://kassa@db:5433/shop?sslmode=require"),
            ("postgres://kassa@db:5433/shop?sslmode=require".to_owned(), false)
        );
        assert_eq!(
            shown("postgres://k:a@b@db/shop?password=SECRET&sslmode=disable"),
            ("postgres://k@db/shop?sslmode=disable".to_owned(), true)
        );
        assert_eq!(
            shown("postgres://db/shop"),
            ("postgres://db/shop".to_owned(), false)
        );
    }

    #[test]
    fn a_shell_word_keeps_its_quotes_inside() {
        assert_eq!(quoted("it's.dump"), "'it'\\''s.dump'");
    }
}
