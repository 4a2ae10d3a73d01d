//! Snapshot images as files in metad's data directory: the `SnapshotData` openraft moves
//! around, and the directory that holds them.
//!
//! Owns: [`SnapshotFile`] (an open, read-only handle to a complete image plus its length and
//! BLAKE3 hash) and [`SnapshotDir`] (`<data_dir>/snapshots/`: the current image
//! `snapshot-<index>.img`, images being received `incoming-*.part`). An image is written
//! to a temporary name, fsynced, renamed into place and the directory fsynced, so a crash leaves
//! either the old or the new image, never half of one. Handles stay valid after the file is
//! replaced (Unix keeps an unlinked file alive while it is open), so a snapshot being streamed
//! to a follower is never cut short by a newer one.
//! Must never: decide what an image contains (that is `state_machine`'s `Image`), or read an
//! image whose length exceeds [`MAX_SNAPSHOT_BYTES`] into memory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::command::TypeConfig;
use crate::error::{MetadError, Result};

/// A snapshot as openraft hands it around: meta plus the image file.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotFile>;

/// Largest snapshot image metad builds, accepts or loads (the image is decoded in memory).
pub const MAX_SNAPSHOT_BYTES: u64 = 4 << 30;

/// Name of the snapshot directory inside metad's data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";

const CURRENT_PREFIX: &str = "snapshot-";
const TMP_PREFIX: &str = "tmp-";
const INCOMING_PREFIX: &str = "incoming-";

/// A complete snapshot image on disk, opened for reading. Each [`SnapshotDir::open`] returns an
/// independent handle (its own read position).
#[derive(Debug)]
pub struct SnapshotFile {
    pub file: File,
    pub len: u64,
    pub hash: [u8; 32],
}

impl SnapshotFile {
    /// Reads the whole image (after checking its length against [`MAX_SNAPSHOT_BYTES`]) and
    /// verifies its hash.
    pub fn read_all(&mut self) -> Result<Vec<u8>> {
        if self.len > MAX_SNAPSHOT_BYTES {
            return Err(corrupt(format!("{} bytes is over the {MAX_SNAPSHOT_BYTES}-byte limit", self.len)));
        }
        let io_err = |e: io::Error| corrupt(format!("reading: {e}"));
        self.file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let mut data = Vec::with_capacity(self.len as usize);
        (&mut self.file).take(self.len).read_to_end(&mut data).map_err(io_err)?;
        if data.len() as u64 != self.len {
            return Err(corrupt(format!("{} bytes on disk, {} expected", data.len(), self.len)));
        }
        if *blake3::hash(&data).as_bytes() != self.hash {
            return Err(corrupt("BLAKE3 hash does not match".into()));
        }
        Ok(data)
    }
}

fn corrupt(reason: String) -> MetadError {
    MetadError::Corrupt { what: "snapshot image", reason }
}

/// `<data_dir>/snapshots/`.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    path: PathBuf,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn unique_suffix() -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

impl SnapshotDir {
    /// Creates the directory if needed and removes leftovers of interrupted writes and
    /// receptions (`tmp-*`, `incoming-*`).
    pub fn open(data_dir: &Path) -> Result<SnapshotDir> {
        let path = data_dir.join(SNAPSHOT_DIR);
        let dir_err = |source| MetadError::DataDir { path: path.clone(), source };
        fs::create_dir_all(&path).map_err(dir_err)?;
        for entry in fs::read_dir(&path).map_err(dir_err)? {
            let entry = entry.map_err(dir_err)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(TMP_PREFIX) || name.starts_with(INCOMING_PREFIX) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(SnapshotDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: io::Error) -> MetadError {
        MetadError::DataDir { path: self.path.clone(), source }
    }

    /// Writes `data` durably as the image `snapshot-<index>.img` (atomically replacing one of the
    /// same name) and returns the file name. Older images stay until the caller has recorded the
    /// new one as current and calls [`SnapshotDir::remove_others`]: a reader holding the old
    /// record must still find its file.
    pub fn store(&self, index: u64, data: &[u8]) -> Result<String> {
        let name = format!("{CURRENT_PREFIX}{index}.img");
        let tmp = self.path.join(format!("{TMP_PREFIX}{}", unique_suffix()));
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, self.path.join(&name))?;
            File::open(&self.path)?.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(self.io(e));
        }
        Ok(name)
    }

    /// Deletes every image except `keep` (best effort: a leftover only costs disk space and is
    /// retried on the next snapshot).
    pub fn remove_others(&self, keep: &str) {
        let Ok(entries) = fs::read_dir(&self.path) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(CURRENT_PREFIX) && name != keep {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Opens the stored image `name` with its recorded length and hash; refuses a file whose
    /// length differs or a name that is not one of ours. A missing file is `Ok(None)`: a newer
    /// image replaced it after the caller read its record (read the record again).
    pub fn open_image(&self, name: &str, len: u64, hash: [u8; 32]) -> Result<Option<SnapshotFile>> {
        if !name.starts_with(CURRENT_PREFIX) || name.contains('/') || name.contains("..") {
            return Err(corrupt(format!("bad image name {name:?}")));
        }
        let file = match File::open(self.path.join(name)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        let on_disk = file.metadata().map_err(|e| self.io(e))?.len();
        if on_disk != len {
            return Err(corrupt(format!("{name}: {on_disk} bytes on disk, {len} recorded")));
        }
        Ok(Some(SnapshotFile { file, len, hash }))
    }

    /// A new file for an image being received, removed when the returned guard drops.
    pub fn incoming(&self) -> Result<Incoming> {
        let path = self.path.join(format!("{INCOMING_PREFIX}{}.part", unique_suffix()));
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(|e| self.io(e))?;
        Ok(Incoming { path, file: Some(file), hasher: blake3::Hasher::new(), len: 0 })
    }
}

/// An image being received: bytes are appended and hashed; [`Incoming::finish`] turns it into a
/// [`SnapshotFile`]. The file is deleted when this is dropped (a finished handle stays readable).
pub struct Incoming {
    path: PathBuf,
    file: Option<File>,
    hasher: blake3::Hasher,
    len: u64,
}

impl Incoming {
    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data`; the caller checks limits before calling.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let f = self.file.as_mut().ok_or_else(|| io::Error::other("incoming snapshot already finished"))?;
        f.write_all(data)?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// Completes the image: returns it as a [`SnapshotFile`] positioned at the start.
    pub fn finish(&mut self) -> io::Result<SnapshotFile> {
        let mut file = self.file.take().ok_or_else(|| io::Error::other("incoming snapshot already finished"))?;
        file.flush()?;
        file.seek(SeekFrom::Start(0))?;
        Ok(SnapshotFile { file, len: self.len, hash: *self.hasher.finalize().as_bytes() })
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_images_read_back_and_replace_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let sd = SnapshotDir::open(dir.path()).unwrap();
        let a = sd.store(5, b"first").unwrap();
        let mut old = sd.open_image(&a, 5, *blake3::hash(b"first").as_bytes()).unwrap().unwrap();
        let b = sd.store(9, b"second image").unwrap();
        assert!(sd.path().join(&a).exists(), "the older image stays until the new one is recorded");
        sd.remove_others(&b);
        assert!(!sd.path().join(&a).exists(), "older image removed");
        assert!(sd.open_image(&a, 5, [0; 32]).unwrap().is_none(), "a replaced image reads as missing");
        // A handle opened before the replacement still reads the old image.
        assert_eq!(old.read_all().unwrap(), b"first");
        let mut cur = sd.open_image(&b, 12, *blake3::hash(b"second image").as_bytes()).unwrap().unwrap();
        assert_eq!(cur.read_all().unwrap(), b"second image");
        assert!(sd.open_image(&b, 11, [0; 32]).is_err(), "length mismatch refused");
        assert!(sd.open_image("../x", 1, [0; 32]).is_err());
        let mut bad = sd.open_image(&b, 12, [0; 32]).unwrap().unwrap();
        assert!(bad.read_all().is_err(), "hash mismatch refused");
    }

    #[test]
    fn incoming_images_hash_and_vanish_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let sd = SnapshotDir::open(dir.path()).unwrap();
        let mut inc = sd.incoming().unwrap();
        inc.append(b"ab").unwrap();
        inc.append(b"cd").unwrap();
        let mut f = inc.finish().unwrap();
        assert_eq!(f.len, 4);
        assert_eq!(f.read_all().unwrap(), b"abcd");
        drop(inc);
        assert_eq!(fs::read_dir(sd.path()).unwrap().count(), 0, "incoming file removed");
        assert_eq!(f.read_all().unwrap(), b"abcd", "the open handle outlives the name");
    }
}
