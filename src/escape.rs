//! One line means one line: control characters in text that came from outside (file names,
//! header strings such as a label or a cipher name, vault replies) are escaped before they
//! reach a terminal or a log, so they can neither forge a second `vaultdisk:` line nor send
//! escape sequences to the terminal.
use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character (C0, DEL, C1) written as an escape: `\n`, `\r`, `\t`,
/// others as `\xNN`. Backslashes stay as they are (the text is for people, not for parsing).
/// Text without a control character is borrowed unchanged.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // char::is_control is exactly C0, DEL and C1: all below 0x100.
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// One line of a report: like [`escape_control`], but a tab stays a tab (report layouts use
/// them, as cryptsetup's do, and a tab neither ends a line nor drives a terminal).
pub fn escape_line(line: &str) -> Cow<'_, str> {
    if !line.chars().any(|c| c.is_control() && c != '\t') {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for part in line.split('\t') {
        out.push_str(&escape_control(part));
        out.push('\t');
    }
    out.pop();
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_keep_their_tabs() {
        assert_eq!(
            escape_line("Label:\tx\nvaultdisk: y"),
            "Label:\tx\\nvaultdisk: y"
        );
        assert_eq!(escape_line("\tcipher: a\x1b[2J\t"), "\tcipher: a\\x1b[2J\t");
        assert!(matches!(escape_line("\tplain\t"), Cow::Borrowed(_)));
    }

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(escape_control("disk.img: ok ü"), Cow::Borrowed(_)));
    }

    #[test]
    fn control_characters_are_escaped() {
        let cases = [
            ("a\nvaultdisk: forged", "a\\nvaultdisk: forged"),
            ("\x1b[2Jclear", "\\x1b[2Jclear"),
            ("cr\rtab\t", "cr\\rtab\\t"),
            ("del\x7f", "del\\x7f"),
            ("c1\u{9b}", "c1\\x9b"),
        ];
        for (raw, want) in cases {
            let got = escape_control(raw);
            assert_eq!(got, want);
            assert!(!got.chars().any(char::is_control), "{got:?}");
        }
    }
}
