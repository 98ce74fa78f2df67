//! Secrets sealed at rest. Each value is encrypted with AES-256-GCM under a
//! data key of its own; the data key is encrypted (wrapped) under the master
//! key. The tenant and the secret's name are the associated data of both,
//! so a sealed value copied to another tenant's or name's row does not open.
//! The store keeps only the sealed document: a copy of the store alone
//! reveals no value.
//!
//! The master key is `CAIRN_MASTER_KEY` (64 hex digits; every host sharing a
//! PostgreSQL store needs the same one), else the file `CAIRN_MASTER_KEY_FILE`
//! names, else `.cairn/master.key` (made on first use, mode 0600; refused
//! when others can read it). `CAIRN_OLD_MASTER_KEY` adds a key that still
//! opens values (during a rotation). Values read are held in zeroising memory.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::model::Tenant;
use crate::store::{SecretStore, StoreError};

/// The environment variable holding the master key (64 hex digits).
pub const MASTER_KEY_ENV: &str = "CAIRN_MASTER_KEY";
/// The environment variable naming a file that holds the master key.
pub const MASTER_KEY_FILE_ENV: &str = "CAIRN_MASTER_KEY_FILE";
/// The environment variable holding a former master key, still accepted.
pub const OLD_MASTER_KEY_ENV: &str = "CAIRN_OLD_MASTER_KEY";
/// The master key's file in a project's `.cairn/`, when no variable names one.
pub const MASTER_KEY_FILE: &str = "master.key";

/// What went wrong with a secret or the master key. Messages never hold a value or a key.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The master key could not be read or made.
    #[error("the master key {where_}: {message}")]
    Key {
        /// Where it was looked for.
        where_: String,
        /// What is wrong, and how to fix it.
        message: String,
    },
    /// No key this host has sealed the value.
    #[error(
        "secret {name:?} of {tenant} was sealed under master key {sealed_with}, and this host has {have}; give every host the same key ({MASTER_KEY_ENV}, or the same .cairn/{MASTER_KEY_FILE})"
    )]
    WrongKey {
        /// The tenant.
        tenant: Tenant,
        /// The secret's name.
        name: String,
        /// The key id in the sealed value.
        sealed_with: String,
        /// The key ids this host has.
        have: String,
    },
    /// The sealed value is damaged, or was moved from another tenant or name.
    #[error(
        "secret {name:?} of {tenant} does not open: it is damaged, or was copied from another tenant's or name's row; store it again with `cairn secret create {name} -`"
    )]
    Damaged {
        /// The tenant.
        tenant: Tenant,
        /// The secret's name.
        name: String,
    },
}

/// A 256-bit key (a master key, or a value's data key) and its public id
/// (a hash of it, never the key).
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    bytes: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    /// The id only: a key is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> MasterKey {
        let mut key = Aes256Gcm::generate_key(&mut OsRng);
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(&key);
        zeroize::Zeroize::zeroize(key.as_mut_slice());
        MasterKey::from_bytes(bytes)
    }

    fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> MasterKey {
        let id =
            hex::encode(&Sha256::new().chain_update(b"cairn master key id\0").chain_update(*bytes).finalize()[..8]);
        MasterKey { id, bytes }
    }

    /// The key written as 64 hex digits (`where_` names its source, for errors).
    pub fn parse(text: &str, where_: &str) -> Result<MasterKey, VaultError> {
        let text = Zeroizing::new(text.trim().to_owned());
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.as_bytes(), &mut *bytes).map_err(|_| VaultError::Key {
            where_: where_.to_owned(),
            message: "is not 64 hex digits (a 256-bit key); make one with `openssl rand -hex 32`".into(),
        })?;
        Ok(MasterKey::from_bytes(bytes))
    }

    /// Its id, as sealed values name it.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(*self.bytes))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&*self.bytes))
    }
}

/// The master keys a host has: the one that seals, and others that still open.
#[derive(Clone)]
pub struct Keyring {
    current: MasterKey,
    others: Vec<MasterKey>,
    /// Where the current key lives, if in a file (rotation replaces it).
    file: Option<PathBuf>,
}

impl Keyring {
    /// A keyring of one key, kept nowhere (tests, benchmarks).
    pub fn of(key: MasterKey) -> Keyring {
        Keyring { current: key, others: Vec::new(), file: None }
    }

    /// The keys of a project whose state directory is `state_dir`: from the
    /// environment, else its key file, made now if missing.
    pub fn load(state_dir: &Path) -> Result<Keyring, VaultError> {
        let mut ring = match std::env::var(MASTER_KEY_ENV).ok().filter(|v| !v.trim().is_empty()) {
            Some(text) => Keyring::of(MasterKey::parse(&text, MASTER_KEY_ENV)?),
            None => {
                let file = match std::env::var_os(MASTER_KEY_FILE_ENV).filter(|v| !v.is_empty()) {
                    Some(path) => PathBuf::from(path),
                    None => state_dir.join(MASTER_KEY_FILE),
                };
                let current = read_or_make(&file)?;
                let mut ring = Keyring { current, others: Vec::new(), file: Some(file.clone()) };
                // A rotation that stopped half way: its new key opens what it rewrapped.
                let pending = pending_file(&file);
                if pending.exists() {
                    ring.others.push(read_key_file(&pending)?);
                }
                ring
            }
        };
        if let Some(text) = std::env::var(OLD_MASTER_KEY_ENV).ok().filter(|v| !v.trim().is_empty()) {
            ring.others.push(MasterKey::parse(&text, OLD_MASTER_KEY_ENV)?);
        }
        Ok(ring)
    }

    fn find(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current).chain(&self.others).find(|k| k.id == id)
    }

    fn ids(&self) -> String {
        std::iter::once(&self.current).chain(&self.others).map(|k| k.id.as_str()).collect::<Vec<_>>().join(", ")
    }
}

fn pending_file(file: &Path) -> PathBuf {
    file.with_extension("key.new")
}

fn read_key_file(file: &Path) -> Result<MasterKey, VaultError> {
    let where_ = file.display().to_string();
    let failed = |message: String| VaultError::Key { where_: where_.clone(), message };
    let meta = std::fs::metadata(file).map_err(|e| failed(format!("cannot be read: {e}")))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(failed(format!(
            "can be read by others (mode {:o}); make it private with `chmod 600 {where_}`",
            meta.permissions().mode() & 0o777
        )));
    }
    let text = Zeroizing::new(std::fs::read_to_string(file).map_err(|e| failed(format!("cannot be read: {e}")))?);
    MasterKey::parse(&text, &where_)
}

/// Writes `key` to `file` (mode 0600), whole or not at all, durably, unless
/// the file exists: of several processes making it at once (workers starting
/// together), the first one's key is everyone's. Returns the key in the file.
fn write_key_file(file: &Path, key: &MasterKey) -> Result<MasterKey, VaultError> {
    let failed = |e: std::io::Error| VaultError::Key {
        where_: file.display().to_string(),
        message: format!("cannot be written: {e}"),
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let temp = file.with_extension(format!("key.tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp).map_err(failed)?;
    let written = out.write_all(key.hex().as_bytes()).and_then(|()| out.sync_all());
    // A link fails where a rename would replace: the file another process made stays.
    let linked = written.and_then(|()| std::fs::hard_link(&temp, file));
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            if let Some(dir) = file.parent() {
                std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(failed)?;
            }
            Ok(key.clone())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key_file(file),
        Err(e) => Err(failed(e)),
    }
}

fn read_or_make(file: &Path) -> Result<MasterKey, VaultError> {
    if file.exists() {
        return read_key_file(file);
    }
    let key = write_key_file(file, &MasterKey::generate())?;
    tracing::info!("the master key is {} (id {})", file.display(), key.id);
    Ok(key)
}

/// A sealed value as stored: JSON with hex fields.
#[derive(Serialize, Deserialize)]
struct Sealed {
    /// Format version.
    v: u32,
    /// The id of the master key that wrapped `key`.
    kid: String,
    /// Nonce of the wrapped data key.
    key_nonce: String,
    /// The data key, encrypted under the master key (with its tag).
    key: String,
    /// Nonce of the value.
    nonce: String,
    /// The value, encrypted under the data key (with its tag).
    value: String,
}

/// The associated data of a tenant's secret `name`: both ciphertexts are bound to it.
fn bound_to(tenant: &Tenant, name: &str) -> Vec<u8> {
    format!("cairn secret v1\0{tenant}\0{name}").into_bytes()
}

/// Seals `value` as `tenant`'s secret `name` under `master`.
pub fn seal(master: &MasterKey, tenant: &Tenant, name: &str, value: &str) -> String {
    let aad = bound_to(tenant, name);
    let data_key = MasterKey::generate();
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let key_nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    // Encryption with a fresh key and nonce cannot fail.
    let value = data_key.cipher().encrypt(&nonce, Payload { msg: value.as_bytes(), aad: &aad }).unwrap_or_default();
    let key = master.cipher().encrypt(&key_nonce, Payload { msg: &data_key.bytes[..], aad: &aad }).unwrap_or_default();
    let sealed = Sealed {
        v: 1,
        kid: master.id.clone(),
        key_nonce: hex::encode(key_nonce),
        key: hex::encode(key),
        nonce: hex::encode(nonce),
        value: hex::encode(value),
    };
    serde_json::to_string(&sealed).unwrap_or_default()
}

fn parse_sealed(text: &str) -> Option<Sealed> {
    serde_json::from_str::<Sealed>(text).ok().filter(|s| s.v == 1)
}

/// The data key of a sealed value, unwrapped with the ring's keys.
fn data_key(ring: &Keyring, sealed: &Sealed, tenant: &Tenant, name: &str) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let damaged = || VaultError::Damaged { tenant: tenant.clone(), name: name.to_owned() };
    let master = ring.find(&sealed.kid).ok_or_else(|| VaultError::WrongKey {
        tenant: tenant.clone(),
        name: name.to_owned(),
        sealed_with: sealed.kid.clone(),
        have: ring.ids(),
    })?;
    let key_nonce = hex::decode(&sealed.key_nonce).ok().filter(|n| n.len() == 12).ok_or_else(damaged)?;
    let wrapped = hex::decode(&sealed.key).map_err(|_| damaged())?;
    let aad = bound_to(tenant, name);
    let key = master
        .cipher()
        .decrypt(Nonce::from_slice(&key_nonce), Payload { msg: &wrapped, aad: &aad })
        .map_err(|_| damaged())?;
    let key = Zeroizing::new(key);
    if key.len() != 32 {
        return Err(damaged());
    }
    Ok(key)
}

/// Opens a sealed value of `tenant`'s secret `name`.
pub fn open(ring: &Keyring, tenant: &Tenant, name: &str, text: &str) -> Result<Zeroizing<String>, VaultError> {
    let damaged = || VaultError::Damaged { tenant: tenant.clone(), name: name.to_owned() };
    let sealed = parse_sealed(text).ok_or_else(damaged)?;
    let key = data_key(ring, &sealed, tenant, name)?;
    let nonce = hex::decode(&sealed.nonce).ok().filter(|n| n.len() == 12).ok_or_else(damaged)?;
    let value = hex::decode(&sealed.value).map_err(|_| damaged())?;
    let aad = bound_to(tenant, name);
    let plain = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key))
        .decrypt(Nonce::from_slice(&nonce), Payload { msg: &value, aad: &aad })
        .map_err(|_| damaged())?;
    let plain = Zeroizing::new(plain);
    Ok(Zeroizing::new(String::from_utf8(plain.to_vec()).map_err(|_| damaged())?))
}

/// Re-wraps a sealed value's data key under `to` (its value is not touched).
fn rewrap(ring: &Keyring, to: &MasterKey, tenant: &Tenant, name: &str, text: &str) -> Result<String, VaultError> {
    let damaged = || VaultError::Damaged { tenant: tenant.clone(), name: name.to_owned() };
    let mut sealed = parse_sealed(text).ok_or_else(damaged)?;
    let key = data_key(ring, &sealed, tenant, name)?;
    let key_nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let aad = bound_to(tenant, name);
    let wrapped = to.cipher().encrypt(&key_nonce, Payload { msg: &key[..], aad: &aad }).unwrap_or_default();
    sealed.kid = to.id.clone();
    sealed.key_nonce = hex::encode(key_nonce);
    sealed.key = hex::encode(wrapped);
    Ok(serde_json::to_string(&sealed).unwrap_or_default())
}

/// A tenant's secrets, sealed in the store and opened here.
pub struct Vault {
    store: Arc<dyn SecretStore>,
    ring: std::sync::RwLock<Keyring>,
    /// The state directory the keys were loaded for (read again when a
    /// value names a key this host lacks: another process rotated).
    state_dir: Option<PathBuf>,
}

impl Vault {
    /// Secrets of `store` under the keys of `ring`.
    pub fn new(store: Arc<dyn SecretStore>, ring: Keyring) -> Vault {
        Vault { store, ring: std::sync::RwLock::new(ring), state_dir: None }
    }

    /// The vault of a project's store: the keys from the environment or its key file.
    pub fn open(state_dir: &Path, store: Arc<dyn SecretStore>) -> Result<Vault, VaultError> {
        let mut vault = Vault::new(store, Keyring::load(state_dir)?);
        vault.state_dir = Some(state_dir.to_path_buf());
        Ok(vault)
    }

    fn ring(&self) -> Keyring {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The value of `tenant`'s secret `name`, if it has one.
    pub fn get(&self, tenant: &Tenant, name: &str) -> Result<Option<Zeroizing<String>>, VaultError> {
        let Some(text) = self.store.get_secret(tenant, name)? else { return Ok(None) };
        let text = Zeroizing::new(text);
        if !text.starts_with("{\"v\":") {
            // Stored in plain text by a cairn from before sealing (sealed when a host starts).
            return Ok(Some(text));
        }
        match open(&self.ring(), tenant, name, &text) {
            Err(VaultError::WrongKey { .. }) if self.state_dir.is_some() => {
                // Another process may have rotated the key file since this one read it.
                let ring = Keyring::load(self.state_dir.as_deref().unwrap_or(Path::new(".")))?;
                let opened = open(&ring, tenant, name, &text);
                *self.ring.write().unwrap_or_else(|e| e.into_inner()) = ring;
                opened.map(Some)
            }
            opened => opened.map(Some),
        }
    }

    /// Seals and stores `value` as `tenant`'s secret `name`.
    pub async fn put(&self, tenant: &Tenant, name: &str, value: &str) -> Result<(), VaultError> {
        let sealed = seal(&self.ring().current, tenant, name, value);
        Ok(self.store.put_secret(tenant, name, &sealed).await?)
    }

    /// Seals every value stored in plain text by a cairn from before sealing;
    /// returns how many.
    pub async fn seal_plain(&self) -> Result<usize, VaultError> {
        let mut sealed = 0;
        for (tenant, name, text) in self.store.all_secrets()? {
            let text: Zeroizing<String> = Zeroizing::new(text);
            if parse_sealed(&text).is_none() {
                self.put(&tenant, &name, &text).await?;
                sealed += 1;
            }
        }
        Ok(sealed)
    }

    /// Moves every secret to a new master key: each data key is re-wrapped
    /// (values stay as they are). With a key file, the new key is written
    /// beside it first and replaces it only once every secret moved, so a
    /// rotation stopped half way opens every value and can be run again.
    /// With `CAIRN_MASTER_KEY`, the values move to that key from
    /// `CAIRN_OLD_MASTER_KEY`. Returns the new key's id and how many moved.
    pub async fn rotate(&self) -> Result<(String, usize), VaultError> {
        let ring = self.ring();
        let (ring, to) = match &ring.file {
            Some(file) => {
                let pending = pending_file(file);
                let to = match pending.exists() {
                    true => read_key_file(&pending)?,
                    false => write_key_file(&pending, &MasterKey::generate())?,
                };
                let mut ring = ring.clone();
                if ring.find(&to.id).is_none() {
                    ring.others.push(to.clone());
                }
                (ring, to)
            }
            None => (ring.clone(), ring.current.clone()),
        };
        let mut moved = 0;
        for (tenant, name, text) in self.store.all_secrets()? {
            let text: Zeroizing<String> = Zeroizing::new(text);
            let rewrapped = match parse_sealed(&text) {
                Some(sealed) if sealed.kid == to.id => continue,
                Some(_) => rewrap(&ring, &to, &tenant, &name, &text)?,
                None => seal(&to, &tenant, &name, &text),
            };
            self.store.put_secret(&tenant, &name, &rewrapped).await?;
            moved += 1;
        }
        if let Some(file) = &ring.file {
            let failed = |e: std::io::Error| VaultError::Key {
                where_: file.display().to_string(),
                message: format!("cannot be replaced by the new key: {e}"),
            };
            std::fs::rename(pending_file(file), file).map_err(failed)?;
            *self.ring.write().unwrap_or_else(|e| e.into_inner()) =
                Keyring { current: to.clone(), others: Vec::new(), file: Some(file.clone()) };
        }
        Ok((to.id.clone(), moved))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(project: &str) -> Tenant {
        Tenant::new(project, "prod").unwrap()
    }

    #[test]
    fn a_sealed_value_opens_only_as_its_tenant_and_name_under_its_key() {
        let key = MasterKey::generate();
        let ring = Keyring::of(key.clone());
        let sealed = seal(&key, &tenant("a"), "db-url", "postgres://s3cret");
        assert!(!sealed.contains("s3cret"));
        assert_eq!(&*open(&ring, &tenant("a"), "db-url", &sealed).unwrap(), "postgres://s3cret");
        // Moved to another tenant's or name's row: it does not open.
        assert!(matches!(open(&ring, &tenant("b"), "db-url", &sealed), Err(VaultError::Damaged { .. })));
        assert!(matches!(open(&ring, &tenant("a"), "other", &sealed), Err(VaultError::Damaged { .. })));
        // Another host's key: named, not guessed at.
        let other = Keyring::of(MasterKey::generate());
        let err = open(&other, &tenant("a"), "db-url", &sealed).unwrap_err();
        assert!(matches!(err, VaultError::WrongKey { .. }) && err.to_string().contains(key.id()));
        // A flipped bit in the value is caught.
        let mut doc: serde_json::Value = serde_json::from_str(&sealed).unwrap();
        let value = doc["value"].as_str().unwrap().to_owned();
        let flipped = format!("{}{}", if value.starts_with('0') { "1" } else { "0" }, &value[1..]);
        doc["value"] = flipped.into();
        assert!(matches!(open(&ring, &tenant("a"), "db-url", &doc.to_string()), Err(VaultError::Damaged { .. })));
        // Two seals of one value differ (fresh data key and nonces).
        assert_ne!(seal(&key, &tenant("a"), "db-url", "x"), seal(&key, &tenant("a"), "db-url", "x"));
    }

    #[test]
    fn a_rewrapped_value_opens_under_the_new_key_only() {
        let (old, new) = (MasterKey::generate(), MasterKey::generate());
        let sealed = seal(&old, &tenant("a"), "k", "v4lue");
        let moved = rewrap(&Keyring::of(old.clone()), &new, &tenant("a"), "k", &sealed).unwrap();
        assert_eq!(&*open(&Keyring::of(new), &tenant("a"), "k", &moved).unwrap(), "v4lue");
        assert!(open(&Keyring::of(old), &tenant("a"), "k", &moved).is_err());
    }

    #[test]
    fn keys_are_parsed_and_their_files_must_be_private() {
        assert!(MasterKey::parse("zz", "test").unwrap_err().to_string().contains("64 hex digits"));
        let key = MasterKey::generate();
        assert_eq!(MasterKey::parse(&key.hex(), "test").unwrap().id(), key.id());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(MASTER_KEY_FILE);
        let made = read_or_make(&file).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_or_make(&file).unwrap().id(), made.id());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_key_file(&file).unwrap_err().to_string().contains("chmod 600"));
        // Made by many at once: one key, everyone's.
        let file = dir.path().join("raced.key");
        let made: Vec<String> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..8).map(|_| s.spawn(|| read_or_make(&file).unwrap().id().to_owned())).collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert!(made.iter().all(|id| *id == made[0]), "{made:?}");
        assert_eq!(read_key_file(&file).unwrap().id(), made[0]);
    }
}
