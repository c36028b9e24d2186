//! A reader that follows the tar block structure as the stream passes by and stops metadata entries (GNU long
//! names and links, PAX headers) bigger than a limit: the `tar` crate reads those whole into memory, so a
//! hostile layer declaring a 10 GiB "long name" would otherwise exhaust memory before any check of ours runs.
//!
//! It parses headers with the `tar` crate's own functions and applies PAX `size` records the way the crate
//! does, so both see the same entry boundaries. Once something is not understood (bad checksum, end of
//! archive) it stops looking and passes bytes through: the `tar` crate fails on those itself.

use std::io::{self, Read};

/// Bytes per tar block.
const BLOCK: u64 = 512;

#[derive(Debug)]
enum State {
    /// Collecting a 512-byte header.
    Header,
    /// Inside entry data (plus padding); `pax` collects a PAX header's records.
    Data {
        remaining: u64,
        pax: Option<Vec<u8>>,
    },
    /// GNU sparse extension headers, then `data` bytes of data.
    SparseExtension { data: u64 },
    /// No longer inspecting.
    PassThrough,
}

/// Wraps a tar stream, failing reads with `InvalidData` when a metadata entry exceeds `limit` bytes.
#[derive(Debug)]
pub struct MetadataLimit<R> {
    inner: R,
    limit: u64,
    state: State,
    block: Vec<u8>,
    /// Size from the last PAX header, applied to the next file entry (not to extension headers).
    pending_pax_size: Option<u64>,
}

impl<R: Read> MetadataLimit<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, limit: u64) -> Self {
        MetadataLimit {
            inner,
            limit,
            state: State::Header,
            block: Vec::with_capacity(512),
            pending_pax_size: None,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::PassThrough => return Ok(()),
                State::Header | State::SparseExtension { .. } => {
                    let take = (512 - self.block.len()).min(bytes.len());
                    self.block.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.block.len() == 512 {
                        let block = std::mem::replace(&mut self.block, Vec::with_capacity(512));
                        self.state = match self.state {
                            State::SparseExtension { data } => {
                                // `isextended` of a GNU sparse extension block is its byte 504.
                                if block[504] != 0 {
                                    State::SparseExtension { data }
                                } else {
                                    data_state(data, None)
                                }
                            }
                            _ => self.header(&block)?,
                        };
                    }
                }
                State::Data { remaining, pax } => {
                    let take = (*remaining).min(bytes.len() as u64) as usize;
                    if let Some(pax) = pax {
                        pax.extend_from_slice(&bytes[..take]);
                    }
                    *remaining -= take as u64;
                    bytes = &bytes[take..];
                    if *remaining == 0 {
                        if let Some(records) = pax.take() {
                            self.pending_pax_size = pax_size(&records);
                        }
                        self.state = State::Header;
                    }
                }
            }
        }
        Ok(())
    }

    /// The state after header `block`.
    fn header(&mut self, block: &[u8]) -> io::Result<State> {
        let header = tar::Header::from_byte_slice(block);
        if block.iter().all(|&b| b == 0) || !checksum_ok(header) {
            return Ok(State::PassThrough);
        }
        let Ok(header_size) = header.entry_size() else {
            return Ok(State::PassThrough);
        };
        let kind = header.entry_type();
        // Mirrors the tar crate: PAX records never resize extension headers (by type, recognised or not);
        // recognised L/K/x headers are consumed and keep the pending records, anything else is returned as
        // an entry and drops them.
        let extension_type = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        let recognised = header.as_gnu().is_some() || header.as_ustar().is_some();
        let metadata = recognised
            && (kind.is_gnu_longname() || kind.is_gnu_longlink() || kind.is_pax_local_extensions());
        let size = if extension_type {
            header_size
        } else {
            self.pending_pax_size.unwrap_or(header_size)
        };
        if metadata {
            if size > self.limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "tar {kind:?} entry of {size} bytes exceeds the limit of {} bytes",
                        self.limit
                    ),
                ));
            }
            let pax = kind
                .is_pax_local_extensions()
                .then(|| Vec::with_capacity(size as usize));
            return Ok(data_state(size, pax));
        }
        self.pending_pax_size = None;
        if kind.is_gnu_sparse() && header.as_gnu().is_some_and(|gnu| gnu.is_extended()) {
            return Ok(State::SparseExtension { data: size });
        }
        Ok(data_state(size, None))
    }
}

/// Data of `size` bytes padded to whole blocks (an empty PAX header goes straight back to the next header).
fn data_state(size: u64, pax: Option<Vec<u8>>) -> State {
    let padded = size.div_ceil(BLOCK).saturating_mul(BLOCK);
    if padded == 0 {
        State::Header
    } else {
        State::Data {
            remaining: padded,
            pax,
        }
    }
}

fn checksum_ok(header: &tar::Header) -> bool {
    let bytes = header.as_bytes();
    let sum: u32 = bytes[..148]
        .iter()
        .chain(&bytes[156..])
        .map(|&b| u32::from(b))
        .sum::<u32>()
        + 8 * 32;
    header.cksum().is_ok_and(|c| c == sum)
}

/// The `size` record of PAX records, as the `tar` crate reads it (first `size`, ignored when malformed).
fn pax_size(records: &[u8]) -> Option<u64> {
    for record in tar::PaxExtensions::new(records) {
        let record = record.ok()?;
        if record.key() == Ok("size") {
            return record.value().ok()?.parse().ok();
        }
    }
    None
}

impl<R: Read> Read for MetadataLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.feed(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(builder: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, data: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_path("x").unwrap();
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }

    fn read_all(data: &[u8], limit: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        MetadataLimit::new(data, limit).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn passes_normal_archives_through_unchanged() {
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, tar::EntryType::Regular, &[1; 5000]);
        entry(&mut b, tar::EntryType::GNULongName, &[b'n'; 300]);
        entry(&mut b, tar::EntryType::Regular, &[2; 10]);
        entry(&mut b, tar::EntryType::XHeader, b"16 size=1000000\n");
        entry(&mut b, tar::EntryType::Regular, &[]); // header size 0, PAX size would say otherwise: not here
        let data = b.into_inner().unwrap();
        assert_eq!(read_all(&data, 1024).unwrap(), data);
    }

    #[test]
    fn refuses_oversized_long_names_and_pax_headers() {
        for kind in [
            tar::EntryType::GNULongName,
            tar::EntryType::GNULongLink,
            tar::EntryType::XHeader,
        ] {
            let mut b = tar::Builder::new(Vec::new());
            entry(&mut b, tar::EntryType::Regular, &[1; 700]);
            entry(&mut b, kind, &[b'n'; 2000]);
            let err = read_all(&b.into_inner().unwrap(), 1024).unwrap_err();
            assert!(
                err.to_string().contains("2000 bytes exceeds the limit"),
                "{kind:?}: {err}"
            );
        }
    }

    #[test]
    fn pax_size_moves_the_next_header() {
        // A PAX size larger than the header's: the long-name header hidden in that data must not be seen.
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, tar::EntryType::XHeader, b"12 size=512\n");
        let mut inner = tar::Builder::new(Vec::new());
        entry(&mut inner, tar::EntryType::GNULongName, &[b'n'; 2000]);
        let hidden = inner.into_inner().unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(0);
        header.set_path("f").unwrap();
        header.set_cksum();
        let mut data = b.into_inner().unwrap();
        data.truncate(data.len() - 1024);
        data.extend_from_slice(header.as_bytes());
        data.extend_from_slice(&hidden[..512]); // the entry's 512 data bytes look like an oversized header
        data.extend_from_slice(&[0; 1024]);
        assert_eq!(read_all(&data, 1024).unwrap(), data);
        let mut archive = tar::Archive::new(data.as_slice());
        let sizes: Vec<u64> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().size())
            .collect();
        assert_eq!(sizes, [512], "the tar crate sees the same boundaries");
    }

    /// One generated member: an optional GNU long name of `long_name` bytes, an optional PAX header giving
    /// the real size, and a regular file whose header size may lie when the PAX size is there.
    #[derive(Debug, Clone)]
    struct Member {
        long_name: Option<usize>,
        pax_size: bool,
        header_size: u64,
        data: usize,
    }

    fn member() -> impl proptest::strategy::Strategy<Value = Member> {
        use proptest::prelude::*;
        (
            proptest::option::of(1usize..3000),
            any::<bool>(),
            0u64..5000,
            0usize..3000,
        )
            .prop_map(|(long_name, pax_size, header_size, data)| Member {
                long_name,
                pax_size,
                header_size,
                data,
            })
    }

    /// The PAX record "LEN size=N\n", LEN counting itself.
    fn size_record(n: usize) -> Vec<u8> {
        let rest = "size=".len() + n.to_string().len() + 2;
        let mut len = rest + 1;
        while len.to_string().len() + rest > len {
            len += 1;
        }
        format!("{len} size={n}\n").into_bytes()
    }

    fn archive(members: &[Member]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for m in members {
            if let Some(n) = m.long_name {
                entry(&mut b, tar::EntryType::GNULongName, &vec![b'n'; n]);
            }
            let header_size = if m.pax_size {
                entry(&mut b, tar::EntryType::XHeader, &size_record(m.data));
                m.header_size
            } else {
                m.data as u64
            };
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(header_size);
            header.set_path("f").unwrap();
            header.set_mode(0o644);
            header.set_cksum();
            let mut block = header.as_bytes().to_vec();
            let data = vec![b'\x7f'; m.data];
            block.extend_from_slice(&data);
            block.resize(512 + m.data.div_ceil(512) * 512, 0);
            b.get_mut().extend_from_slice(&block);
        }
        b.into_inner().unwrap()
    }

    proptest::proptest! {
        /// The sniffer sees the same boundaries as the tar crate: it fails exactly when a long name or PAX
        /// header is over the limit, and the tar crate reads every member with the sizes we wrote.
        #[test]
        fn agrees_with_the_tar_crate(
            members in proptest::collection::vec(member(), 0..8),
            limit in proptest::prop_oneof![0u64..20, 0u64..4000],
        ) {
            let data = archive(&members);
            let mut parsed = tar::Archive::new(data.as_slice());
            let sizes: Vec<u64> = parsed.entries().unwrap().map(|e| e.unwrap().size()).collect();
            let expected: Vec<u64> = members.iter().map(|m| m.data as u64).collect();
            proptest::prop_assert_eq!(sizes, expected);

            let too_big = members.iter().any(|m| {
                m.long_name.is_some_and(|n| n as u64 > limit)
                    || (m.pax_size && size_record(m.data).len() as u64 > limit)
            });
            let result = read_all(&data, limit);
            proptest::prop_assert_eq!(result.is_err(), too_big, "{:?}", result.err());
        }
    }
}
