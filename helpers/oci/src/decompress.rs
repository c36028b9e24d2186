//! Layer decompression (gzip, zstd, none), chosen by magic bytes, and diff_id hashing.
//!
//! Media types are hints only: registries and tools mislabel layers (a "tar.gzip" that is plain
//! tar, a zstd layer under a gzip type). The first bytes decide: `1f 8b` gzip, `28 b5 2f fd` zstd,
//! anything else is taken as a plain tar (which the unpacker then checks).

use std::io::{self, BufRead, BufReader, Read};

use sha2::{Digest as _, Sha256};

/// Compression actually found in a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Read buffer for compressed input.
const BUF: usize = 256 << 10;

/// Classify by magic bytes.
pub fn sniff(head: &[u8]) -> Detected {
    match head {
        [0x1f, 0x8b, ..] => Detected::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Detected::Zstd,
        _ => Detected::None,
    }
}

/// A reader of the uncompressed tar stream of a layer.
pub fn decompressed<'a, R: Read + 'a>(input: R) -> io::Result<(Detected, Box<dyn Read + 'a>)> {
    let mut buffered = BufReader::with_capacity(BUF, input);
    let kind = sniff(buffered.fill_buf()?);
    let reader: Box<dyn Read + 'a> = match kind {
        // Multi-member gzip is legal and some tools write it.
        Detected::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Detected::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Detected::None => Box::new(buffered),
    };
    Ok((kind, reader))
}

/// Passes bytes through while hashing them (the diff_id is the sha256 of the uncompressed tar).
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wrap a reader.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Read what the consumer left unread (tar padding, trailing zero blocks) and return the
    /// `sha256:` digest of everything and the byte count.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = self.read(&mut buf)?;
            if n == 0 {
                break;
            }
        }
        Ok((
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.bytes,
        ))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn roundtrip(data: &[u8], compressed: Vec<u8>, want: Detected) {
        let (kind, mut r) = decompressed(&compressed[..]).unwrap();
        assert_eq!(kind, want);
        let mut h = HashingReader::new(&mut r);
        let mut first = [0u8; 3];
        h.read_exact(&mut first).unwrap();
        let (digest, n) = h.finish().unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(digest, crate::cache::sha256_digest(data));
    }

    #[test]
    fn detects_and_hashes_all_kinds() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        roundtrip(&data, gz.finish().unwrap(), Detected::Gzip);
        roundtrip(
            &data,
            zstd::encode_all(&data[..], 3).unwrap(),
            Detected::Zstd,
        );
        roundtrip(&data, data.clone(), Detected::None);
    }

    #[test]
    fn truncated_gzip_is_an_error() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[7u8; 50_000]).unwrap();
        let mut c = gz.finish().unwrap();
        c.truncate(c.len() / 2);
        let (_, mut r) = decompressed(&c[..]).unwrap();
        assert!(io::copy(&mut r, &mut io::sink()).is_err());
    }
}
