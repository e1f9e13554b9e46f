//! Writing the store's own files so that a crash leaves either the old file or the new
//! one, complete: a temporary file in the same directory, fsync, then a link or rename
//! into place, then an fsync of the directory. Without that last fsync the new name is
//! durable only on file systems that commit directory changes in order (ext4, XFS); on
//! others (btrfs) a crash can leave the old file, or none, however the file was synced.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::{Result, StoreError};

/// Maps an I/O error to [`StoreError::Io`] naming what was being done to which path.
pub(crate) fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// Creates `dir` and any missing parents with mode 0700. An existing
/// directory is left as it is.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(io_error("create the directory", dir))
}

/// Writes `contents` to `dest`, which must not exist, so that `dest` either does not
/// appear or appears complete: temporary file, fsync, hard link into place (which fails
/// if `dest` exists), fsync of the directory. `exists` is the error for a `dest` that is
/// already there.
pub(crate) fn write_new_file(
    dir: &Path,
    dest: &Path,
    contents: &[u8],
    exists: impl Fn() -> StoreError,
) -> Result<()> {
    let tmp = temporary_name(dir, dest)?;
    let written =
        write_and_sync(&tmp, contents).and_then(|()| link_into_place(&tmp, dest, &exists));
    // Best effort: the temporary file holds only ciphertext, and after a
    // successful link it is a second name for the same file.
    let _ = fs::remove_file(&tmp);
    written?;
    sync_dir(dir)
}

/// Replaces `dest` (or creates it) with `contents`, so that after a crash `dest` holds
/// either its old contents or the new ones: temporary file (mode 0600), fsync, rename
/// over `dest`, fsync of the directory. On an error before the rename `dest` is
/// unchanged and the temporary file is removed.
pub(crate) fn replace_file(dir: &Path, dest: &Path, contents: &[u8]) -> Result<()> {
    let tmp = temporary_name(dir, dest)?;
    let renamed = write_and_sync(&tmp, contents)
        .and_then(|()| fs::rename(&tmp, dest).map_err(io_error("replace", dest)));
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed?;
    sync_dir(dir)
}

/// Makes the directory's entries (names created, renamed or removed in it) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(test)]
    tests::DIR_SYNCS.with(|syncs| syncs.set(syncs.get() + 1));
    #[cfg(unix)]
    {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("sync the directory", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// `.<name of dest>.tmp-<16 random hex digits>` in `dir`: two writers never share one.
fn temporary_name(dir: &Path, dest: &Path) -> Result<PathBuf> {
    let mut suffix = [0u8; 8];
    crate::crypto::fill_random(&mut suffix)?;
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(dir.join(format!(".{name}.tmp-{suffix}")))
}

fn write_and_sync(path: &Path, contents: &[u8]) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_error("create", path))?;
    file.write_all(contents).map_err(io_error("write", path))?;
    file.sync_all().map_err(io_error("write", path))
}

fn link_into_place(tmp: &Path, dest: &Path, exists: impl Fn() -> StoreError) -> Result<()> {
    match fs::hard_link(tmp, dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(exists()),
        // File systems without hard links: check, then rename. Only a
        // concurrent writer in the same directory can slip in between.
        Err(_) if fs::symlink_metadata(dest).is_ok() => Err(exists()),
        Err(_) => fs::rename(tmp, dest).map_err(io_error("create", dest)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    use super::*;

    thread_local! {
        /// How many times [`sync_dir`] ran on this thread: tests check that a write path
        /// syncs its directory.
        pub(crate) static DIR_SYNCS: Cell<u64> = const { Cell::new(0) };
    }

    /// How many directory syncs `f` made on this thread.
    pub(crate) fn dir_syncs_during(f: impl FnOnce()) -> u64 {
        let before = DIR_SYNCS.with(Cell::get);
        f();
        DIR_SYNCS.with(Cell::get) - before
    }

    #[test]
    fn a_directory_syncs_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(dir_syncs_during(|| sync_dir(dir.path()).unwrap()), 1);
        let err = sync_dir(&dir.path().join("missing")).unwrap_err();
        assert!(
            err.to_string().starts_with("could not sync the directory"),
            "{err}"
        );
    }

    /// A replaced file holds the new contents with mode 0600, nothing temporary is left,
    /// and the directory was synced after the rename.
    #[test]
    fn a_replaced_file_is_complete_private_and_its_directory_synced() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("file");
        fs::write(&dest, b"old").unwrap();
        let syncs = dir_syncs_during(|| replace_file(dir.path(), &dest, b"new").unwrap());
        assert_eq!(syncs, 1);
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    /// A replacement that cannot be renamed into place leaves the old file and no
    /// temporary one.
    #[test]
    fn a_failed_replacement_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in the destination's place: the rename fails.
        let dest = dir.path().join("taken");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("inside"), b"x").unwrap();
        assert!(replace_file(dir.path(), &dest, b"new").is_err());
        assert_eq!(fs::read(dest.join("inside")).unwrap(), b"x");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
