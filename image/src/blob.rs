//! Content-addressed blobs: bytes, their `sha256:` digest, and the one JSON
//! rendering every manifest, config and index goes through.

use std::io::{self, Read, Write};

use oci_spec::image::{Descriptor, Digest, MediaType};
use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `value` as compact JSON with object keys sorted: oci-spec holds
/// annotations and labels in hash maps, whose order changes from run to
/// run, so they go through `serde_json::Value` (a sorted map) first.
pub fn canonical_json(value: &impl serde::Serialize) -> Vec<u8> {
    let value = serde_json::to_value(value).expect("an OCI document serializes");
    serde_json::to_vec(&value).expect("a JSON value serializes")
}

/// A blob held in memory, ready for the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: MediaType,
    pub bytes: Vec<u8>,
    pub digest: String,
}

impl Blob {
    pub fn new(media_type: MediaType, bytes: Vec<u8>) -> Blob {
        let digest = sha256(&bytes);
        Blob {
            media_type,
            bytes,
            digest,
        }
    }

    pub fn json(media_type: MediaType, value: &impl serde::Serialize) -> Blob {
        Blob::new(media_type, canonical_json(value))
    }

    pub fn descriptor(&self) -> Descriptor {
        descriptor(self.media_type.clone(), self.bytes.len() as u64, &self.digest)
    }
}

/// A descriptor for a blob whose digest this crate computed.
pub fn descriptor(media_type: MediaType, size: u64, digest: &str) -> Descriptor {
    let digest: Digest = digest.parse().expect("a sha256 digest this crate computed");
    Descriptor::new(media_type, size, digest)
}

/// A writer that hashes what passes through it: a layer's diff id is the
/// digest of its tar before compression.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// The inner writer and `sha256:<hex>` of everything written.
    pub fn finish(self) -> (W, String) {
        (
            self.inner,
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what is read through it: a base layer copied from
/// an archive is checked against its digest as it is copied.
pub struct HashingReader<R: Read> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// `sha256:<hex>` of everything read.
    pub fn digest(self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn json_keys_are_sorted_whatever_the_map_order() {
        let map: HashMap<String, u32> = (0..32).map(|i| (format!("k{i:02}"), i)).collect();
        let text = String::from_utf8(canonical_json(&map)).unwrap();
        let keys: Vec<&str> = text
            .match_indices("\"k")
            .map(|(at, _)| &text[at + 1..at + 4])
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn the_hashing_writer_hashes_what_it_passes_on() {
        let mut writer = HashingWriter::new(Vec::new());
        writer.write_all(b"abc").unwrap();
        let (bytes, digest) = writer.finish();
        assert_eq!(bytes, b"abc");
        assert_eq!(digest, sha256(b"abc"));
        assert_eq!(
            digest,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
