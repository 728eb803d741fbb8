//! Bodies of the fuzz targets, shared with the corpus replay test (tests/it/reliability.rs),
//! so CI runs exactly what the fuzzer ran. Each returns whether the input was accepted; a
//! reject must be an `Err`, never a panic, a hang or a large allocation.
#![allow(dead_code)] // each fuzz target uses one function
use vaultdisk::luks2::binary::{ALLOWED_HDR_SIZES, BINARY_SIZE};
use vaultdisk::report::{Luks1Dump, Luks2Dump, Report};
use vaultdisk::{luks1, luks2};

/// Where the sha256 of a binary header sits (docs/format.md §2).
const CSUM_OFFSET: usize = 448;

/// LUKS2 device bytes (both copies, as found at offset 0 of a backing file): read as they
/// are, then again with every copy's checksum made right, so that mutations reach the JSON
/// checks instead of stopping at the checksum.
pub fn luks2_header(data: &[u8]) -> bool {
    let as_is = luks2_device(data);
    let mut fixed = data.to_vec();
    if fix_checksums(&mut fixed) {
        luks2_device(&fixed) || as_is
    } else {
        as_is
    }
}

/// Rewrites the checksum of each header copy found at 0 or at an allowed secondary offset.
fn fix_checksums(dev: &mut [u8]) -> bool {
    let mut changed = false;
    for offset in std::iter::once(0).chain(ALLOWED_HDR_SIZES.iter().map(|&s| s as usize)) {
        let Some(bin) = dev.get(offset..offset + BINARY_SIZE) else {
            continue;
        };
        let hdr_size = u64::from_be_bytes(bin[8..16].try_into().unwrap_or_default()) as usize;
        if !ALLOWED_HDR_SIZES.contains(&(hdr_size as u64)) || dev.len() < offset + hdr_size {
            continue;
        }
        let mut b = [0u8; BINARY_SIZE];
        b.copy_from_slice(&dev[offset..offset + BINARY_SIZE]);
        let sum = luks2::binary::checksum(&b, &dev[offset + BINARY_SIZE..offset + hdr_size]);
        dev[offset + CSUM_OFFSET..offset + CSUM_OFFSET + 32].copy_from_slice(&sum);
        changed = true;
    }
    changed
}

fn luks2_device(data: &[u8]) -> bool {
    let Ok(header) = luks2::read(data) else {
        return false;
    };
    // What `dump` and `open` do next with a header that parsed.
    let report = Luks2Dump::new(&header);
    let _ = report.to_text();
    let _ = report.to_json();
    let _ = header.metadata.data_segment();
    let _ = header.damaged_copy();
    for id in header.metadata.keyslots.keys() {
        let _ = header.metadata.digest_of_keyslot(*id);
    }
    // parse(encode(x)) == x: a header we accept must survive our own rewrite unchanged.
    if let Ok(copy) = luks2::encode_copy(&header.binary, &header.metadata.wire) {
        let area = &copy[BINARY_SIZE..];
        let again = luks2::parse_json_area(area, header.binary.hdr_size)
            .expect("re-encoded metadata parses again");
        assert_eq!(again, header.metadata, "re-encoded metadata is unchanged");
    }
    true
}

/// The LUKS2 JSON text alone, placed in the JSON area of a 16, 32 or 64 KiB header copy (the
/// first whose area holds it and whose size the text's config.json_size can match).
pub fn luks2_json(data: &[u8]) -> bool {
    for hdr_size in [16384u64, 32768, 65536] {
        let area_len = (hdr_size - 4096) as usize;
        if data.len() >= area_len {
            continue;
        }
        let mut area = data.to_vec();
        area.resize(area_len, 0);
        match luks2::parse_json_area(&area, hdr_size) {
            Ok(meta) => {
                let _ = meta.data_segment();
                // What `open` and `vault list` do with the tokens: typed parse and re-encode.
                for (_, token) in vaultdisk::token::vault_tokens(&meta.wire.tokens) {
                    if let Ok(t) = token {
                        let again = vaultdisk::token::VaultToken::parse(&t.encode());
                        assert_eq!(again.as_ref(), Ok(&t), "token re-encodes unchanged");
                    }
                }
                return true;
            }
            // Only a json_size naming another header size is worth another try.
            Err(luks2::FormatError::Invalid(why)) if why.contains("json_size") => continue,
            Err(_) => return false,
        }
    }
    false
}

/// A JSON text (cryptsetup's pbkdf2 header with two keyslots) with the `tokens` object cut out.
pub const TOKEN_TEMPLATE: &str = include_str!("token_template.json");

/// The `tokens` object of a LUKS2 header, spliced into `TOKEN_TEMPLATE`.
// Every accepted `vaultdisk-vault` token also goes through src/token.rs (see luks2_json).
pub fn token_json(data: &[u8]) -> bool {
    let Some(at) = TOKEN_TEMPLATE.find("@TOKENS@") else {
        panic!("token template lost its @TOKENS@ marker");
    };
    let mut text = TOKEN_TEMPLATE.as_bytes()[..at].to_vec();
    text.extend_from_slice(data);
    text.extend_from_slice(&TOKEN_TEMPLATE.as_bytes()[at + "@TOKENS@".len()..]);
    luks2_json(&text)
}

/// The LUKS1 phdr (592 bytes or more), checked against a 20 MiB device.
pub fn luks1_header(data: &[u8]) -> bool {
    let Ok(header) = luks1::parse(data) else {
        return false;
    };
    let _ = Luks1Dump::new(&header).to_json();
    let _ = header.key_material_bytes();
    let _ = header.validate_against_device(20 << 20);
    let _ = header.segment(20 << 20);
    true
}
