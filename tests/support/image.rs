//! Building small, valid image blobs without extra crates: a one-file tar archive,
//! gzip with stored (uncompressed) deflate blocks, and `sha256:` digests.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// `sha256:<hex>` of `bytes`, as registries name blobs and manifests.
#[must_use]
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash {
        write!(out, "{byte:02x}").expect("writing to a String");
    }
    out
}

/// A POSIX (ustar) tar archive holding one regular file.
#[must_use]
pub fn tar_with_file(name: &str, content: &[u8]) -> Vec<u8> {
    fn put(field: &mut [u8], value: &[u8]) {
        field[..value.len()].copy_from_slice(value);
    }
    assert!(name.len() < 100, "tar member name too long: {name}");
    let mut header = [0u8; 512];
    put(&mut header[0..100], name.as_bytes());
    put(&mut header[100..108], b"0000644\0"); // mode
    put(&mut header[108..116], b"0000000\0"); // uid
    put(&mut header[116..124], b"0000000\0"); // gid
    put(
        &mut header[124..136],
        format!("{:011o}\0", content.len()).as_bytes(),
    );
    put(&mut header[136..148], b"00000000000\0"); // mtime: the epoch, reproducible
    header[148..156].fill(b' '); // checksum counts as spaces while summing
    header[156] = b'0'; // regular file
    put(&mut header[257..263], b"ustar\0");
    put(&mut header[263..265], b"00");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    put(&mut header[148..156], format!("{sum:06o}\0 ").as_bytes());

    let mut out = header.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().next_multiple_of(512), 0);
    out.extend_from_slice(&[0u8; 1024]); // end of archive
    out
}

/// `data` in gzip format, using stored deflate blocks (valid gzip, no compression).
#[must_use]
pub fn gzip_stored(data: &[u8]) -> Vec<u8> {
    // magic, deflate, no flags, mtime 0, no extra flags, OS unknown
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let mut chunks: Vec<&[u8]> = data.chunks(usize::from(u16::MAX)).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        out.push(u8::from(i == last)); // BFINAL, BTYPE=00 (stored)
        let len = u16::try_from(chunk.len()).expect("chunk fits a stored block");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    // ISIZE is the length modulo 2^32.
    let size = u32::try_from(data.len() % (1 << 32)).expect("reduced modulo 2^32");
    out.extend_from_slice(&size.to_le_bytes());
    out
}

/// CRC-32 (IEEE), as gzip needs it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}
