//! The NFS file handle: (share id, inode number, generation), as metad assigns them.
//!
//! Invariant 2: the handle is derived only from metad's identifiers, never from process
//! start time or gateway identity, so every gateway issues and accepts the same bytes
//! forever. The decoder rejects anything that is not exactly a handle this version wrote.
//!
//! Layout (25 bytes, big-endian): `version:u8 = 1 | share_id:u64 | ino:u64 | generation:u64`.

/// Current handle format version.
pub const HANDLE_VERSION: u8 = 1;
/// Encoded length of a version-1 handle.
pub const HANDLE_LEN: usize = 25;
/// NFSv3 allows up to 64 bytes (NFS3_FHSIZE); ours must stay within it.
pub const MAX_HANDLE_LEN: usize = 64;

/// A decoded file handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileHandle {
    pub share_id: u64,
    pub ino: u64,
    pub generation: u64,
}

/// Why a handle was rejected (NFS3ERR_BADHANDLE territory).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    #[error("file handle has {0} bytes, expected {HANDLE_LEN}")]
    Length(usize),
    #[error("file handle version {0} is not understood")]
    Version(u8),
    #[error("file handle names inode 0")]
    ZeroInode,
}

impl FileHandle {
    pub fn encode(&self) -> [u8; HANDLE_LEN] {
        let mut out = [0u8; HANDLE_LEN];
        out[0] = HANDLE_VERSION;
        out[1..9].copy_from_slice(&self.share_id.to_be_bytes());
        out[9..17].copy_from_slice(&self.ino.to_be_bytes());
        out[17..25].copy_from_slice(&self.generation.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<FileHandle, HandleError> {
        let b: &[u8; HANDLE_LEN] = bytes.try_into().map_err(|_| HandleError::Length(bytes.len()))?;
        if b[0] != HANDLE_VERSION {
            return Err(HandleError::Version(b[0]));
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(w)
        };
        let handle = FileHandle { share_id: word(1), ino: word(9), generation: word(17) };
        if handle.ino == 0 {
            return Err(HandleError::ZeroInode);
        }
        Ok(handle)
    }
}

impl From<crate::pb::NodeRef> for FileHandle {
    fn from(n: crate::pb::NodeRef) -> Self {
        FileHandle { share_id: n.share_id, ino: n.ino, generation: n.generation }
    }
}

impl From<FileHandle> for crate::pb::NodeRef {
    fn from(h: FileHandle) -> Self {
        crate::pb::NodeRef { share_id: h.share_id, ino: h.ino, generation: h.generation }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_fits_nfs3() {
        let h = FileHandle { share_id: 7, ino: 42, generation: 3 };
        let bytes = h.encode();
        assert!(bytes.len() <= MAX_HANDLE_LEN);
        assert_eq!(FileHandle::decode(&bytes), Ok(h));
    }

    #[test]
    fn rejects_malformed() {
        let good = FileHandle { share_id: 1, ino: 2, generation: 3 }.encode();
        assert_eq!(FileHandle::decode(&good[..24]), Err(HandleError::Length(24)));
        assert_eq!(FileHandle::decode(&[]), Err(HandleError::Length(0)));
        let mut v2 = good;
        v2[0] = 2;
        assert_eq!(FileHandle::decode(&v2), Err(HandleError::Version(2)));
        let zero = FileHandle { share_id: 1, ino: 0, generation: 3 }.encode();
        assert_eq!(FileHandle::decode(&zero), Err(HandleError::ZeroInode));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = FileHandle::decode(&bytes);
        }
    }
}
