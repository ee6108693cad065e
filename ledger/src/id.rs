//! Who signs: a node's ed25519 identity, its public `PeerId`, and the `NetworkId` that keeps one
//! network's receipts from verifying on another.

use std::fs;
use std::io::Write;
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::CryptoRng;

use crate::bytes::byte_newtype;
use crate::error::IdentityError;

byte_newtype!(
    /// A peer's identity: its 32-byte ed25519 public key. Displays as 64 lowercase hex characters;
    /// serializes as hex in JSON and as 32 raw bytes in postcard.
    PeerId,
    32
);

byte_newtype!(
    /// A network's id: BLAKE3 of its name. Part of every signed receipt, so a receipt made on one
    /// network (a testnet, say) never verifies on another.
    NetworkId,
    32
);

byte_newtype!(
    /// A 64-byte ed25519 signature. All zero means "not signed yet".
    Signature,
    64
);

impl PeerId {
    /// The first 10 hex characters, for logs and people. Not unique: never use it as a key.
    pub fn fmt_short(&self) -> String {
        hex::encode(&self.0[..5])
    }

    /// The ed25519 key, if these bytes are a valid point that is not of small order.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0)
            .ok()
            .filter(|key| !key.is_weak())
    }

    /// Whether `signature` is this key's strict ed25519 signature of `message` (for records
    /// other than receipts: provider and peer records).
    pub fn verifies(&self, message: &[u8], signature: &Signature) -> bool {
        self.verifying_key().is_some_and(|key| {
            key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&signature.0))
                .is_ok()
        })
    }
}

impl NetworkId {
    /// The id of the network called `name`: BLAKE3 of its UTF-8 bytes.
    pub fn from_name(name: &str) -> Self {
        Self(*blake3::hash(name.as_bytes()).as_bytes())
    }
}

impl Signature {
    /// The all-zero placeholder of a party that has not signed.
    pub const UNSIGNED: Signature = Signature([0u8; 64]);

    /// Whether this is the unsigned placeholder.
    pub fn is_unsigned(&self) -> bool {
        self.0 == [0u8; 64]
    }
}

/// A node's key pair. The secret never leaves this type except through [`Identity::save`] and
/// [`Identity::secret_bytes`] (for test vectors and the TLS certificate).
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.peer_id().fmt_short())
    }
}

impl Identity {
    /// A fresh identity from a cryptographically secure generator.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Self {
            key: SigningKey::generate(rng),
        }
    }

    /// The identity whose ed25519 seed is `secret` (RFC 8032's 32-byte private key).
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// The 32-byte ed25519 seed.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// This identity's public `PeerId`.
    pub fn peer_id(&self) -> PeerId {
        PeerId(self.key.verifying_key().to_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.key.sign(message).to_bytes())
    }

    /// Loads the identity file: exactly 32 raw bytes, readable by its owner only.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = fs::metadata(path).map_err(io)?;
        check_owner_only(path, &meta)?;
        if meta.len() != 32 {
            return Err(IdentityError::WrongLength {
                path: path.to_owned(),
                len: meta.len(),
            });
        }
        let bytes = fs::read(path).map_err(io)?;
        let secret: [u8; 32] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| IdentityError::WrongLength {
                    path: path.to_owned(),
                    len: bytes.len() as u64,
                })?;
        Ok(Self::from_secret_bytes(secret))
    }

    /// Writes the identity file with mode 0600, atomically (a temp file renamed into place), so
    /// a crash leaves either the old identity or the new one. Refuses to replace an existing
    /// file unless `overwrite`.
    pub fn save(&self, path: &Path, overwrite: bool) -> Result<(), IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        if !overwrite && path.exists() {
            return Err(IdentityError::Exists {
                path: path.to_owned(),
            });
        }
        let tmp = path.with_extension("tmp");
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(io)?;
        file.write_all(&self.secret_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        fs::rename(&tmp, path).map_err(io)?;
        Ok(())
    }
}

#[cfg(unix)]
fn check_owner_only(path: &Path, meta: &fs::Metadata) -> Result<(), IdentityError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner_only(_path: &Path, _meta: &fs::Metadata) -> Result<(), IdentityError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(seed: u8) -> Identity {
        Identity::from_secret_bytes([seed; 32])
    }

    #[test]
    fn peer_id_is_64_lowercase_hex_and_parses_back() {
        let id = identity(7).peer_id();
        let text = id.to_string();
        assert_eq!(text.len(), 64);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
        assert_eq!(text.parse::<PeerId>().unwrap(), id);
        assert_eq!(text.to_uppercase().parse::<PeerId>().unwrap(), id);
        assert!("abc".parse::<PeerId>().is_err());
        assert!("zz".repeat(32).parse::<PeerId>().is_err());
    }

    #[test]
    fn peer_id_is_hex_in_json_and_raw_in_postcard() {
        let id = identity(1).peer_id();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<PeerId>(&json).unwrap(), id);
        let wire = postcard::to_stdvec(&id).unwrap();
        assert_eq!(wire, id.0.to_vec());
        assert_eq!(postcard::from_bytes::<PeerId>(&wire).unwrap(), id);
        assert!(postcard::from_bytes::<PeerId>(&wire[..31]).is_err());
    }

    #[test]
    fn network_id_is_blake3_of_the_name() {
        let id = NetworkId::from_name("tally");
        assert_eq!(id.0, *blake3::hash(b"tally").as_bytes());
        assert_ne!(id, NetworkId::from_name("tally-testnet"));
    }

    #[test]
    fn save_then_load_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        let original = identity(3);
        original.save(&path, false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(loaded.peer_id(), original.peer_id());
    }

    #[test]
    fn save_refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        identity(3).save(&path, false).unwrap();
        let err = identity(4).save(&path, false).unwrap_err();
        assert!(matches!(err, IdentityError::Exists { .. }), "{err}");
        assert_eq!(
            Identity::load(&path).unwrap().peer_id(),
            identity(3).peer_id()
        );
        identity(4).save(&path, true).unwrap();
        assert_eq!(
            Identity::load(&path).unwrap().peer_id(),
            identity(4).peer_id()
        );
    }

    #[test]
    fn load_rejects_wrong_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        identity(3).save(&path, false).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes.push(0);
        fs::write(&path, &bytes).unwrap();
        let err = Identity::load(&path).unwrap_err();
        assert!(
            matches!(err, IdentityError::WrongLength { len: 33, .. }),
            "{err}"
        );
        fs::write(&path, &bytes[..10]).unwrap();
        let err = Identity::load(&path).unwrap_err();
        assert!(
            matches!(err, IdentityError::WrongLength { len: 10, .. }),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn load_rejects_a_file_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        identity(3).save(&path, false).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load(&path).unwrap_err();
        assert!(
            matches!(err, IdentityError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn load_reports_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Identity::load(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, IdentityError::Io { .. }), "{err}");
    }
}
