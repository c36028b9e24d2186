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

/// Chunk size handed from the decompressing thread to the unpacker.
const CHUNK: usize = 256 << 10;
/// Chunks in flight (bounds memory to a few MiB whatever the layer size).
const IN_FLIGHT: usize = 8;

/// A layer's uncompressed tar stream, decompressed and hashed on a second thread so that
/// decompression and file creation overlap (what `gzip -dc | tar -x` gets from its pipe).
pub struct Pipelined {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    worker: Option<std::thread::JoinHandle<io::Result<(String, u64)>>>,
}

impl Pipelined {
    /// Start decompressing `input` (the compressed blob).
    pub fn start<R: Read + Send + 'static>(input: R) -> io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(IN_FLIGHT);
        let worker = std::thread::Builder::new()
            .name("layer-decompress".into())
            .spawn(move || {
                let (_, reader) = decompressed(input)?;
                let mut hashing = HashingReader::new(reader);
                loop {
                    let mut buf = vec![0u8; CHUNK];
                    let mut filled = 0;
                    while filled < CHUNK {
                        match hashing.read(&mut buf[filled..]) {
                            Ok(0) => break,
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                let msg = e.to_string();
                                let _ = tx.send(Err(e));
                                return Err(io::Error::other(msg));
                            }
                        }
                    }
                    if filled == 0 {
                        return hashing.finish();
                    }
                    buf.truncate(filled);
                    if tx.send(Ok(buf)).is_err() {
                        // The consumer stopped (unpack error): nothing more to do.
                        return Err(io::Error::other("layer consumer stopped"));
                    }
                }
            })?;
        Ok(Self {
            rx,
            cur: Vec::new(),
            pos: 0,
            worker: Some(worker),
        })
    }

    /// Drain what the unpacker left unread and return the diff_id and the byte count.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        let mut sink = [0u8; 64 << 10];
        while self.read(&mut sink)? > 0 {}
        let worker = self.worker.take().expect("finish once");
        drop(self.rx);
        worker
            .join()
            .map_err(|_| io::Error::other("decompression thread panicked"))?
    }
}

impl Read for Pipelined {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(buf)) => {
                    self.cur = buf;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0), // worker done: end of stream
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
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
    fn pipelined_matches_direct() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let mut p = Pipelined::start(std::io::Cursor::new(gz.finish().unwrap())).unwrap();
        let mut head = vec![0u8; 300_000];
        p.read_exact(&mut head).unwrap();
        assert_eq!(head, data[..300_000]);
        let (digest, n) = p.finish().unwrap();
        assert_eq!(
            (digest, n),
            (crate::cache::sha256_digest(&data), data.len() as u64)
        );
        let mut bad = zstd::encode_all(&data[..], 1).unwrap();
        bad.truncate(bad.len() / 2);
        let mut p = Pipelined::start(std::io::Cursor::new(bad)).unwrap();
        assert!(io::copy(&mut p, &mut io::sink()).is_err());
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
