//! One line means one line (issue 11 item 7): a file name or a header string holding a newline
//! or a terminal escape never splits an error into a forged second `vaultdisk:` line and never
//! reaches the terminal raw.

use crate::corrupt::edit_json_both;
use crate::support::*;

/// Exactly one `vaultdisk:` line, and no control character other than its final newline.
fn assert_escaped(out: &Out, needle: &str) {
    one_error_line(&out.stderr).unwrap_or_else(|e| panic!("{e}:\n{}", out.describe()));
    let body = out.stderr.trim_end_matches('\n');
    assert!(
        !body.chars().any(char::is_control),
        "raw control character in stderr:\n{}",
        out.describe()
    );
    assert!(
        out.stderr.contains(needle),
        "{needle:?} not in:\n{}",
        out.describe()
    );
}

#[test]
fn a_file_name_with_a_newline_stays_on_one_line() {
    let dir = temp();
    let forged = dir
        .path()
        .join("x\nvaultdisk: all keyslots verified\x1b[2J");
    let out = vd(&["dump", s(&forged)]).fails_with(4);
    assert_escaped(&out, "x\\nvaultdisk: all keyslots verified\\x1b[2J");
    let out = vd(&["open", s(&forged), s(&dir.path().join("plain"))]);
    assert_ne!(out.code, 0, "{}", out.describe());
    assert_escaped(&out, "\\n");
}

#[test]
fn a_header_string_with_control_characters_is_escaped() {
    let vol = Vol::new("4M", &[]);
    edit_json_both(&vol.backing, |j| {
        j["segments"]["0"]["encryption"] = "aes-cbc\nvaultdisk: forged\x1b[31m".into();
    });
    let out = vd(&[
        "open",
        s(&vol.backing),
        s(&vol.plain),
        "--key-file",
        s(&vol.key),
    ]);
    out.check_error(&[4]).unwrap_or_else(|e| panic!("{e}"));
    assert_escaped(&out, "aes-cbc\\nvaultdisk: forged\\x1b[31m");
    assert!(!is_mounted(&vol.plain));
}

#[test]
fn dump_text_escapes_header_strings() {
    let vol = Vol::new("4M", &[]);
    edit_json_both(&vol.backing, |j| {
        j["tokens"]["0"] = serde_json::json!({
            "type": "evil\nvaultdisk: forged line\x1b[2J",
            "keyslots": ["0"],
        });
    });
    let out = vd(&["dump", s(&vol.backing)]).ok();
    assert!(
        !out.stdout
            .lines()
            .any(|l| l.starts_with("vaultdisk: forged")),
        "a header string started a line of its own:\n{}",
        out.stdout
    );
    assert!(
        !out.stdout
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'),
        "raw control character in dump text:\n{:?}",
        out.stdout
    );
    assert!(
        out.stdout.contains("evil\\nvaultdisk: forged line\\x1b[2J"),
        "{}",
        out.stdout
    );
    // JSON stays exact.
    let (v, _) = dump_json(&vol.backing);
    let types: Vec<&str> = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["type"].as_str())
        .collect();
    assert!(
        types.contains(&"evil\nvaultdisk: forged line\x1b[2J"),
        "{v}"
    );
}
