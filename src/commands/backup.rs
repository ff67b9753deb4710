//! `kassa backup <file>`.

use std::io::Write;
use std::path::Path;

use super::CommandError;
use crate::db::backup;

pub fn run(db_path: &Path, target: &Path, force: bool, out: &mut impl Write) -> Result<(), CommandError> {
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
