//! Which database kassa uses (`[database] url`): a SQLite file, or a PostgreSQL server
//! named by a `postgres://` URL. Parsed once, so every caller agrees on what a value
//! means, and shown only through `Display`, which never prints a password.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// A SQLite file; a relative path is relative to the working directory.
    Sqlite(PathBuf),
    /// A PostgreSQL URL, kept whole for the driver.
    Postgres(PgUrl),
}

/// A `postgres://` URL. It may carry a password, so it has no `Debug` or `Display` that
/// shows one.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl(String);

impl PgUrl {
    /// The URL as written, password included: for the driver, never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl DbTarget {
    /// Reads a `[database] url` value (trimmed here too, not empty): `postgres://…` or
    /// `postgresql://…` is PostgreSQL; `sqlite:<path>`, `sqlite://<path>` or a plain path
    /// is a SQLite file; any other `scheme://` is refused, and so is whatever looks like
    /// a database address gone wrong (quotes kept by Docker's `--env-file`, a `jdbc:`
    /// prefix, a libpq `host=… password=…` string), which would otherwise be taken as a
    /// file name and start on a new, empty database. An error never repeats the value
    /// (it may hold a password).
    pub fn parse(value: &str) -> Result<DbTarget, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err("is empty".to_owned());
        }
        if value.starts_with(['"', '\'']) || value.ends_with(['"', '\'']) {
            return Err(
                "is wrapped in quotes, which are kept as part of the value (a Docker --env-file keeps them): remove the quotes"
                    .to_owned(),
            );
        }
        let scheme = scheme_of(value);
        match scheme.map(str::to_ascii_lowercase).as_deref() {
            Some(lower @ ("postgres" | "postgresql")) => Ok(DbTarget::Postgres(PgUrl(format!(
                "{lower}{}",
                &value[lower.len()..]
            )))),
            Some("sqlite") => sqlite_path(&value["sqlite://".len()..]),
            Some(other) => Err(format!(
                "the scheme {other}:// is not a database kassa knows: give a SQLite file path, or a postgres:// URL"
            )),
            None if value.contains("://") => Err(
                "looks like a URL but does not start with a scheme kassa knows (postgres://, postgresql://, sqlite://): remove any quotes or prefix such as jdbc:"
                    .to_owned(),
            ),
            None if starts_with_ignore_case(value, "postgres:") || starts_with_ignore_case(value, "postgresql:") => {
                Err("starts with postgres: but not postgres://: write a PostgreSQL URL as postgres://host/database".to_owned())
            }
            None if is_keyword_string(value) => Err(
                "looks like a libpq keyword string (host=… password=…): give a postgres:// URL instead".to_owned(),
            ),
            None if starts_with_ignore_case(value, "sqlite:") => sqlite_path(&value[7..]),
            None => sqlite_path(value),
        }
    }

    /// The SQLite file, when the target is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            DbTarget::Sqlite(path) => Some(path),
            DbTarget::Postgres(_) => None,
        }
    }

    /// The SQLite file, or the error of a build that has no other backend.
    pub fn sqlite_file(&self) -> Result<&Path, super::DbError> {
        self.sqlite_path().ok_or_else(|| super::DbError::NotBuilt {
            target: self.to_string(),
        })
    }
}

/// The `scheme` of `scheme://…`, when the value starts with one (RFC 3986's characters).
fn scheme_of(value: &str) -> Option<&str> {
    let (scheme, _) = value.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic() && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
        .then_some(scheme)
}

/// `path` as SQLite reads it literally. The bundled SQLite is built with URIs on
/// (`SQLITE_USE_URI`), whatever the open flags say, so a relative path starting with
/// `file:` (a data directory so named) would be read as a URI naming another file;
/// `./` in front makes it the file it names for every connection.
pub fn not_a_uri(path: &Path) -> std::borrow::Cow<'_, Path> {
    if path.is_relative() && path.to_str().is_some_and(|p| starts_with_ignore_case(p, "file:")) {
        Path::new(".").join(path).into()
    } else {
        path.into()
    }
}

fn starts_with_ignore_case(value: &str, prefix: &str) -> bool {
    value
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// `host=db user=kassa password=…`: libpq's other way to name a server.
pub(crate) fn is_keyword_string(value: &str) -> bool {
    value.to_ascii_lowercase().contains("password=")
        || ["host=", "hostaddr=", "dbname=", "user="]
            .iter()
            .any(|k| starts_with_ignore_case(value, k))
}

fn sqlite_path(path: &str) -> Result<DbTarget, String> {
    if path.is_empty() {
        return Err("names no SQLite file after `sqlite:`".to_owned());
    }
    // Other tools' URLs carry options (`?mode=rwc`) that kassa would take as part of a
    // file name; and `:memory:` would lose every order at exit.
    if path.contains('?') {
        return Err("a SQLite path here takes no `?` options; give the file's path only".to_owned());
    }
    if path == ":memory:" {
        return Err(
            "an in-memory SQLite database would lose every order at exit; give a file path".to_owned(),
        );
    }
    // SQLite (built with URIs on) reads `file:…` as a URI, so `file:shop.db` is
    // `shop.db` to it but `file:shop.db` to the lock and every check that a file
    // exists, and `file::memory:` is no file at all: one name must mean one file.
    if starts_with_ignore_case(path, "file:") {
        return Err("a SQLite file: URI is not taken here; give the file's path only".to_owned());
    }
    if path.ends_with('/') {
        return Err(
            "names a directory (it ends in /); give the database file, e.g. /var/lib/kassa/kassa.db"
                .to_owned(),
        );
    }
    Ok(DbTarget::Sqlite(PathBuf::from(path)))
}

impl fmt::Display for DbTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbTarget::Sqlite(path) => write!(f, "{}", path.display()),
            DbTarget::Postgres(url) => url.fmt(f),
        }
    }
}

impl fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbTarget::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            DbTarget::Postgres(url) => f.debug_tuple("Postgres").field(&url.to_string()).finish(),
        }
    }
}

/// The URL options whose values are shown; every other option's value is `***`.
const SHOWN_OPTIONS: &[&str] = &[
    "sslmode",
    "application_name",
    "connect_timeout",
    "host",
    "port",
    "dbname",
    "user",
    "target_session_attrs",
];

/// The URL with its password (in the user part, or any option but the plain ones) as `***`.
/// When unsure where the user part ends it hides more, never less: everything up to
/// the last `@` counts as the user part, of which only the user name shows.
impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("postgres", &self.0));
        write!(f, "{scheme}://")?;
        let rest = match rest.rfind('@') {
            Some(at) => {
                let user_part = &rest[..at];
                match user_part.split_once(':') {
                    Some((user, _)) => write!(f, "{user}:***@")?,
                    None => write!(f, "{user_part}@")?,
                }
                &rest[at + 1..]
            }
            None => rest,
        };
        let Some((location, options)) = rest.split_once('?') else {
            return f.write_str(rest);
        };
        write!(f, "{location}?")?;
        for (n, option) in options.split('&').enumerate() {
            if n > 0 {
                f.write_str("&")?;
            }
            // An allowlist, not a search for `password`: a name may be percent-encoded
            // (`pass%77ord`), and then only libpq knows what it is.
            match option.split_once('=') {
                Some((name, _)) if !SHOWN_OPTIONS.contains(&name) => write!(f, "{name}=***")?,
                _ => f.write_str(option)?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(value: &str) -> String {
        DbTarget::parse(value).unwrap().to_string()
    }

    #[test]
    fn plain_paths_and_sqlite_urls_name_a_sqlite_file() {
        for (value, path) in [
            ("data/kassa.db", "data/kassa.db"),
            ("/var/lib/kassa/shop.db", "/var/lib/kassa/shop.db"),
            ("sqlite:shop.db", "shop.db"),
            ("sqlite://shop.db", "shop.db"),
            ("sqlite:///var/lib/shop.db", "/var/lib/shop.db"),
            ("SQLITE:///var/lib/shop.db", "/var/lib/shop.db"),
            // Trimmed as the configuration trims.
            ("  data/kassa.db ", "data/kassa.db"),
            // Not a `scheme://`: a relative file whose name has a colon.
            ("notes:2026.db", "notes:2026.db"),
        ] {
            let target = DbTarget::parse(value).unwrap();
            assert_eq!(target.sqlite_path(), Some(Path::new(path)), "{value}");
        }
    }

    #[test]
    fn postgres_urls_name_postgresql_and_have_no_sqlite_path() {
        for value in [
            "postgres://db/kassa",
            "postgresql://u@%2Ftmp%2Fpg/kassa",
            "PostgreSQL://h/k",
        ] {
            let target = DbTarget::parse(value).unwrap();
            assert!(matches!(target, DbTarget::Postgres(_)), "{value}");
            assert_eq!(target.sqlite_path(), None, "{value}");
        }
    }

    #[test]
    fn a_postgres_url_keeps_its_scheme_in_lower_case_for_the_driver() {
        let DbTarget::Postgres(url) = DbTarget::parse("PostgreSQL://kassa@Db/Shop").unwrap() else {
            panic!("not PostgreSQL");
        };
        assert_eq!(url.expose(), "postgresql://kassa@Db/Shop");
    }

    #[test]
    fn addresses_gone_wrong_are_refused_rather_than_taken_as_a_file_and_never_echoed() {
        for value in [
            // Quotes kept by Docker's --env-file.
            "\"postgres://kassa:hunter2@db/shop\"",
            "'/var/lib/kassa/shop.db'",
            "jdbc:postgresql://db/shop?user=kassa&password=hunter2",
            "host=db user=kassa password=hunter2",
            "dbname=shop",
            "user=kassa",
            "postgres:notes.db",
            "POSTGRESQL:/kassa:hunter2@db/shop",
            "file:shop.db",
            "FILE:shop.db",
            "sqlite:file:x.db",
            "file::memory:",
            "data/",
            "sqlite:/var/lib/kassa/",
        ] {
            let err = DbTarget::parse(value)
                .err()
                .unwrap_or_else(|| panic!("{value:?} accepted"));
            assert!(!err.contains("hunter2") && !err.contains(value), "{value}: {err}");
        }
    }

    #[test]
    fn other_schemes_options_memory_and_empty_values_are_refused_without_echoing_the_value() {
        for value in [
            "mysql://root:hunter2@db/kassa",
            "file:///var/lib/kassa.db",
            "sqlite://kassa.db?mode=rwc",
            "sqlite::memory:",
            ":memory:",
            "sqlite:",
            "",
        ] {
            let err = DbTarget::parse(value)
                .err()
                .unwrap_or_else(|| panic!("{value:?} accepted"));
            assert!(!err.contains("hunter2"), "{err}");
            if value.starts_with("mysql") {
                assert!(err.contains("mysql://"), "{err}");
            }
        }
    }

    #[test]
    fn display_hides_every_password_and_keeps_the_rest() {
        for (value, expected) in [
            (
                "postgres://kassa:hunter2@db:5432/shop",
                "postgres://kassa:***@db:5432/shop",
            ),
            ("postgres://kassa@db/shop", "postgres://kassa@db/shop"),
            ("postgres://db/shop", "postgres://db/shop"),
            // Unencoded `@`, `/`, `?` in the password: the last `@` ends the user part.
            (
                "postgresql://kassa:hun@t/er?2@db/shop",
                "postgresql://kassa:***@db/shop",
            ),
            (
                "postgres://db/shop?sslmode=require&password=hunter2",
                "postgres://db/shop?sslmode=require&password=***",
            ),
            (
                "postgres://db/shop?PassWord=hunter2",
                "postgres://db/shop?PassWord=***",
            ),
            // Percent-encoded, the name is still `password` to libpq.
            (
                "postgres://db/shop?sslmode=require&pass%77ord=hunter2&application_name=kassa",
                "postgres://db/shop?sslmode=require&pass%77ord=***&application_name=kassa",
            ),
            (
                "postgres://db/shop?sslpassword=hunter2&options=-c%20x%3Dhunter2",
                "postgres://db/shop?sslpassword=***&options=***",
            ),
            // Spaces around it are not part of it.
            (
                " postgres://kassa:hunter2@db/shop ",
                "postgres://kassa:***@db/shop",
            ),
        ] {
            assert_eq!(shown(value), expected);
            let debug = format!("{:?}", DbTarget::parse(value).unwrap());
            assert!(!debug.contains("hunter2") && !debug.contains("hun@t"), "{debug}");
        }
    }
}
