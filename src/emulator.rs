//! The rp2040js emulator driver (`scripts/emulator/run.mjs`, run by node): where it is, how it
//! is started, and a scratch directory for the files one run reads and writes. `bench
//! --emulator` and `chat --emulator` start it.

use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The driver's directory: `$STARMIND_EMULATOR_DIR`, else scripts/emulator of this tree.
pub fn dir() -> PathBuf {
    std::env::var_os("STARMIND_EMULATOR_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/emulator"))
}

/// `node run.mjs` (node: `$STARMIND_NODE`, else `node` on the PATH), once rp2040js is installed;
/// the caller adds the driver's arguments.
pub fn driver() -> Result<Command> {
    let dir = dir();
    if !dir.join("node_modules/rp2040js/package.json").is_file() {
        bail!(
            "the emulator is not installed: {} has no node_modules/rp2040js; run \
             `npm ci --prefix scripts/emulator` (needs node ≥ 18)",
            dir.display()
        );
    }
    let mut command = Command::new(node());
    command.arg(dir.join("run.mjs"));
    Ok(command)
}

/// Whether the driver can run here: rp2040js installed and node starting.
pub fn available() -> bool {
    dir().join("node_modules/rp2040js/package.json").is_file()
        && Command::new(node())
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// What to say when the driver does not start.
pub fn not_started() -> String {
    format!(
        "cannot run `{}`: install Node.js ≥ 18 (or set STARMIND_NODE)",
        node().to_string_lossy()
    )
}

fn node() -> std::ffi::OsString {
    std::env::var_os("STARMIND_NODE").unwrap_or_else(|| "node".into())
}

/// A fresh directory for one emulator run's files (its UF2 image, a profile), removed when
/// dropped.
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates `starmind-<tag>-<pid>-<nanos>` in the system's temp directory.
    pub fn new(tag: &str) -> Result<RunDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos();
        let path =
            std::env::temp_dir().join(format!("starmind-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(RunDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
