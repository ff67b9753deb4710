//! `kassa config`: every key's effective value and where it came from.

use std::io::Write;

use super::CommandError;
use crate::config::Settings;

pub fn show(settings: &Settings, out: &mut impl Write) -> Result<(), CommandError> {
    for (key, value, source) in settings.describe() {
        writeln!(out, "{key} = {value:?}    # {source}").map_err(|e| CommandError::new(e.to_string()))?;
    }
    Ok(())
}
