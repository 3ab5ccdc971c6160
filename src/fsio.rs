//! Writing files so that nothing a user made is lost.
//!
//! - Every file is replaced atomically ([`write_atomic`]): a temp file
//!   `.starmind-tmp-<pid>-<name>` in the target's directory, fsync, rename, fsync of the
//!   directory, so a reader or a killed run sees the old or the new complete file, never a torn
//!   one. Temp files a killed run left behind are removed by [`remove_stale_temp_files`] (only
//!   ours, only those of processes that are gone).
//! - Before a command writes a file the user named, [`check_output`] refuses to write over the
//!   command's own inputs, over anything that is not a regular file (a device node, a directory,
//!   a pipe), and over an existing file unless `--force` was given.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Start of the name of every temp file [`write_atomic`] makes; the process id and the target's
/// name follow.
pub const TEMP_PREFIX: &str = ".starmind-tmp-";

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The temp file [`write_atomic`] writes before renaming it onto `path`.
pub fn temp_path(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{}: path has no file name", path.display()))?;
    Ok(parent_dir(path).join(format!(
        "{TEMP_PREFIX}{}-{}",
        std::process::id(),
        name.to_string_lossy()
    )))
}

/// Writes `bytes` to `path` so that `path` is at every instant either the old or the new complete
/// file: a temp file in the same directory, fsync, rename, fsync of the directory. Refuses to
/// replace anything that is not a regular file (a rename would swap a device node or a pipe for
/// a plain file); a failed write removes its temp file, and temp files killed runs left in the
/// directory are removed first ([`remove_stale_temp_files`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    remove_stale_temp_files(parent_dir(path));
    if let Ok(meta) = std::fs::metadata(path) {
        if !meta.is_file() {
            bail!(
                "{} is not a regular file (a directory, device or pipe): refusing to replace it",
                path.display()
            );
        }
    }
    let tmp = temp_path(path)?;
    let written = write_and_sync(&tmp, bytes).and_then(|()| {
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Ok(d) = std::fs::File::open(parent_dir(path)) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_and_sync(tmp: &Path, bytes: &[u8]) -> Result<()> {
    let mut file =
        std::fs::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))
}

/// The process id in one of our temp file names, if `name` is one.
fn temp_file_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    let (pid, target) = rest.split_once('-')?;
    if target.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` is running (Linux: `/proc/<pid>`; elsewhere assumed running, so that
/// nothing live is ever removed).
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    if proc.join("self").exists() {
        proc.join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Removes the temp files of [`write_atomic`]s that a killed run left in `dir`: only files named
/// like ours whose process is gone, never a live file or another program's. Returns the removed
/// paths.
pub fn remove_stale_temp_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_file_pid(&name) else {
            continue;
        };
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && !process_alive(pid) && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// Whether `a` and `b` name the same file (same device and inode on unix, else the same
/// canonical path); false when either does not exist.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
        false
    }
    #[cfg(not(unix))]
    {
        match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// Checks that a command may write `output` (given as `flag`, e.g. `-o`): refuses when it is one
/// of `inputs` (a file the command reads), when it exists and is not a regular file, when it
/// exists and `force` is false, and when its directory does not exist. Call before any work.
pub fn check_output(flag: &str, output: &Path, inputs: &[PathBuf], force: bool) -> Result<()> {
    if let Some(input) = inputs.iter().find(|i| same_file(i, output)) {
        bail!(
            "{flag} {}: that is {}, an input of this command: refusing to write over it (choose another output path)",
            output.display(),
            input.display()
        );
    }
    match std::fs::metadata(output) {
        Ok(meta) if !meta.is_file() => bail!(
            "{flag} {}: not a regular file (a directory, device or pipe): refusing to write over it",
            output.display()
        ),
        Ok(_) if !force => bail!(
            "{flag} {}: the file exists: pass --force to replace it, or choose another path",
            output.display()
        ),
        Ok(_) => {}
        Err(_) => {
            let dir = parent_dir(output);
            if !dir.is_dir() {
                bail!(
                    "{flag} {}: the directory {} does not exist",
                    output.display(),
                    dir.display()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("starmind-fsio-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_file_and_cleans_only_stale_temps_of_ours() {
        let dir = scratch("atomic");
        let path = dir.join("a.txt");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        // A dead process's temp (pid beyond the kernel's pid_max), a live one (ours), and a
        // file of someone else's that merely looks similar.
        let dead = format!("{TEMP_PREFIX}4294967294-a.txt");
        let live = format!("{TEMP_PREFIX}{}-b.txt", std::process::id());
        for name in [dead.as_str(), live.as_str(), ".a.txt.tmp999"] {
            std::fs::write(dir.join(name), b"torn").unwrap();
        }
        let removed = remove_stale_temp_files(&dir);
        assert_eq!(removed, [dir.join(&dead)]);
        let mut expected = vec![live, ".a.txt.tmp999".to_string(), "a.txt".to_string()];
        expected.sort();
        assert_eq!(names(&dir), expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_non_regular_targets_and_inputs_and_existing_files() {
        let dir = scratch("check");
        let input = dir.join("in.smb");
        std::fs::write(&input, b"x").unwrap();
        let other = dir.join("out.smb");
        let via_dots = dir.join(".").join("in.smb");
        assert!(check_output("-o", &via_dots, std::slice::from_ref(&input), true).is_err());
        assert!(check_output("-o", &other, std::slice::from_ref(&input), false).is_ok());
        std::fs::write(&other, b"y").unwrap();
        let err = check_output("-o", &other, std::slice::from_ref(&input), false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert!(check_output("-o", &other, std::slice::from_ref(&input), true).is_ok());
        assert!(check_output("-o", &dir, &[], true).is_err());
        assert!(check_output("-o", &dir.join("no/such/dir/x"), &[], true).is_err());
        assert!(write_atomic(&dir, b"z").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
