//! The data directory: where it is, the paths inside it, and how files are written there
//! (atomically, secrets with mode 0600, the directory itself with mode 0700).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// File name of the identity key (32 raw bytes, mode 0600).
pub const IDENTITY_FILE: &str = "identity.key";
/// File name of the HTTP API key (64 lowercase hex characters and a newline, mode 0600).
pub const API_KEY_FILE: &str = "api_key";
/// File name of the config file.
pub const CONFIG_FILE: &str = "config.toml";
/// Directory name of the receipt store.
pub const STORE_DIR: &str = "store";

/// A node's data directory. Knows its paths; creates nothing until asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The directory `--data-dir` (or TALLY_DATA_DIR) names, else the platform's data directory
    /// for tally (`~/.local/share/tally` on Linux).
    pub fn resolve(flag: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Some(root) = flag {
            if root.as_os_str().is_empty() {
                bail!("--data-dir is empty: pass the directory to use");
            }
            return Ok(Self { root });
        }
        match directories::ProjectDirs::from("", "", "tally") {
            Some(dirs) => Ok(Self {
                root: dirs.data_dir().to_owned(),
            }),
            None => bail!(
                "cannot find this platform's data directory (is HOME set?): pass --data-dir DIR \
                 or set TALLY_DATA_DIR"
            ),
        }
    }

    /// A data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `identity.key`.
    pub fn identity_file(&self) -> PathBuf {
        self.root.join(IDENTITY_FILE)
    }

    /// `api_key`.
    pub fn api_key_file(&self) -> PathBuf {
        self.root.join(API_KEY_FILE)
    }

    /// `config.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }

    /// `store/`.
    pub fn store_dir(&self) -> PathBuf {
        self.root.join(STORE_DIR)
    }

    /// Creates the directory (and missing parents) with mode 0700 if it does not exist. An
    /// existing directory is left as it is. Returns whether it was created.
    pub fn create(&self) -> anyhow::Result<bool> {
        if self.root.is_dir() {
            return Ok(false);
        }
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(&self.root)
            .with_context(|| format!("cannot create data directory {}", self.root.display()))?;
        Ok(true)
    }

    /// Fails with a message telling to run `tally init` if the directory does not exist.
    pub fn require_exists(&self) -> anyhow::Result<()> {
        if self.root.is_dir() {
            Ok(())
        } else {
            bail!(
                "no data directory at {}: run `tally init` first (or pass --data-dir)",
                self.root.display()
            )
        }
    }
}

/// Who may read a file written by [`write_atomic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Mode 0600: a secret.
    OwnerOnly,
    /// The process's default (umask) mode.
    Default,
}

/// Writes `contents` to `path` through a temporary file renamed into place, so a crash leaves
/// the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, contents: &[u8], access: Access) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if access == Access::OwnerOnly {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        #[cfg(unix)]
        if access == Access::OwnerOnly {
            // A leftover temp file from a crash keeps its old mode through `open`: set it.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// Fails if others than the owner may read `path` (a secret such as the API key), telling how
/// to fix it.
pub fn check_owner_only(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "{} has mode {mode:o}; it must be readable by its owner only: run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_inside_the_root() {
        let dir = DataDir::new("/x/y");
        assert_eq!(dir.identity_file(), Path::new("/x/y/identity.key"));
        assert_eq!(dir.api_key_file(), Path::new("/x/y/api_key"));
        assert_eq!(dir.config_file(), Path::new("/x/y/config.toml"));
        assert_eq!(dir.store_dir(), Path::new("/x/y/store"));
    }

    #[test]
    fn an_empty_flag_is_refused() {
        assert!(DataDir::resolve(Some(PathBuf::new())).is_err());
        let dir = DataDir::resolve(Some("/a".into())).unwrap();
        assert_eq!(dir.root(), Path::new("/a"));
    }

    #[cfg(unix)]
    #[test]
    fn create_makes_a_private_directory_and_secrets_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("a/b"));
        assert!(dir.require_exists().is_err());
        assert!(dir.create().unwrap());
        assert!(!dir.create().unwrap());
        dir.require_exists().unwrap();
        let mode = fs::metadata(dir.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        let secret = dir.api_key_file();
        write_atomic(&secret, b"one", Access::OwnerOnly).unwrap();
        write_atomic(&secret, b"two", Access::OwnerOnly).unwrap();
        assert_eq!(fs::read(&secret).unwrap(), b"two");
        let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        check_owner_only(&secret).unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o640)).unwrap();
        let err = check_owner_only(&secret).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert_eq!(
            fs::read_dir(dir.root()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
