//! Parsing sizes like "10G" (binary units, as cryptsetup and truncate).
use crate::error::{Error, Result};

/// Bytes in `text`: digits with an optional K/M/G/T/P suffix (KiB units; "KiB"/"K"/"k" alike).
pub fn parse(text: &str) -> Result<u64> {
    let bad = || {
        Error::Usage(format!(
            "invalid size {text:?}: use a number with K, M, G or T"
        ))
    };
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        "p" | "pib" => 50,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn suffixes_are_binary() {
        assert_eq!(parse("512").ok(), Some(512));
        assert_eq!(parse("4K").ok(), Some(4096));
        assert_eq!(parse("10M").ok(), Some(10 << 20));
        assert_eq!(parse("1g").ok(), Some(1 << 30));
        assert_eq!(parse("1T").ok(), Some(1 << 40));
        assert_eq!(parse("2GiB").ok(), Some(2 << 30));
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        for bad in ["", "G", "-1", "12Q", "1.5G", "99999999999P"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
