//! The Linux toolbox (issue 18): man pages and shell completions generated from the clap tree
//! (every verb and sub-verb, every long flag), scripts/install.sh, and the library example
//! examples/hash_plaintext.rs against the frozen volumes.

use crate::support::*;
use clap::CommandFactory;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// A visible verb: its path under `vaultdisk` ("open", "vault enroll") and its long flags.
struct Verb {
    path: Vec<String>,
    longs: BTreeSet<String>,
}

/// Every visible command of the built clap tree (globals propagated), the root first.
fn verbs() -> Vec<Verb> {
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<Verb>) {
        let longs = cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(String::from))
            .collect();
        for sub in cmd.get_subcommands() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            walk(sub, p, out);
        }
        out.insert(0, Verb { path, longs });
    }
    let mut cmd = vaultdisk::cli::Cli::command();
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, Vec::new(), &mut out);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The names under "Commands:" in `vaultdisk ARGS --help`, less `help`.
fn help_commands(args: &[&str]) -> BTreeSet<String> {
    let mut argv = args.to_vec();
    argv.push("--help");
    let out = vd(&argv);
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(String::from)
        .collect()
}

fn page_name(path: &[String]) -> String {
    std::iter::once("vaultdisk".to_string())
        .chain(path.iter().cloned())
        .collect::<Vec<_>>()
        .join("-")
        + ".8"
}

#[test]
fn help_lists_the_verbs_the_clap_tree_has() {
    let verbs = verbs();
    let top: BTreeSet<String> = verbs
        .iter()
        .filter(|v| v.path.len() == 1)
        .map(|v| v.path[0].clone())
        .collect();
    assert_eq!(help_commands(&[]), top);
    for parent in ["vault", "header"] {
        let subs: BTreeSet<String> = verbs
            .iter()
            .filter(|v| v.path.len() == 2 && v.path[0] == parent)
            .map(|v| v.path[1].clone())
            .collect();
        assert!(!subs.is_empty(), "{parent} has sub-verbs");
        assert_eq!(help_commands(&[parent]), subs, "{parent} --help");
    }
    assert!(top.contains("completions") && !top.contains("__man") && !top.contains("__daemon"));
}

#[test]
fn every_verb_and_sub_verb_has_a_man_page_that_renders() {
    let dir = temp();
    let out = vd(&["__man", s(dir.path())]);
    assert_eq!(out.code, 0, "{out:?}");
    let want: BTreeSet<String> = verbs().iter().map(|v| page_name(&v.path)).collect();
    assert!(want.contains("vaultdisk.8") && want.contains("vaultdisk-vault-enroll.8"));
    assert!(want.contains("vaultdisk-header-backup.8") && want.len() >= 29);
    let got: BTreeSet<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(got, want, "pages written by __man");
    assert_eq!(out.stdout.lines().count(), want.len(), "one path a line");

    let man = find_tool("man");
    if man.is_none() {
        assert!(
            require("toolbox::man pages (man -l)", &["groff"]),
            "neither man nor groff"
        );
    }
    for verb in verbs() {
        let page = dir.path().join(page_name(&verb.path));
        // groff parses every page without a warning.
        let g = run("groff", &["-man", "-Tutf8", "-z", "-ww", s(&page)], None);
        assert!(
            g.code == 0 && g.stderr.is_empty(),
            "groff {}: {g:?}",
            page.display()
        );
        let Some(man) = &man else { continue };
        let text = std::process::Command::new(man)
            .args(["-l", s(&page)])
            .env("MANWIDTH", "200")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .unwrap();
        assert!(text.status.success(), "man -l {}", page.display());
        let text = String::from_utf8_lossy(&text.stdout);
        let title = page_name(&verb.path).trim_end_matches(".8").to_string();
        assert!(
            text.contains("NAME") && text.contains(&title),
            "{title}: {text}"
        );
        for long in &verb.longs {
            assert!(
                text.contains(&format!("--{long}")),
                "{title} lacks --{long}"
            );
        }
    }
    // The root page lists the verbs, never the hidden ones.
    let root = fs::read_to_string(dir.path().join("vaultdisk.8")).unwrap();
    for verb in verbs().iter().filter(|v| v.path.len() == 1) {
        let name = verb.path[0].replace('-', "\\-");
        assert!(
            root.contains(&format!("vaultdisk\\-{name}(8)")),
            "vaultdisk.8 names {name}"
        );
    }
    assert!(!root.contains("__daemon") && !root.contains("__man"));
}

fn completions(shell: &str) -> String {
    let out = vd(&["completions", shell]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    assert!(!out.stdout.contains("__daemon") && !out.stdout.contains("__man"));
    out.stdout
}

/// Long flags (`--x`) in a whitespace- or quote-separated text.
fn flags_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || "'\"[=()*".contains(c))
        .filter_map(|w| w.strip_prefix("--"))
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn bash_completion_lists_every_verb_and_flag_and_completes() {
    let script = completions("bash");
    // Each command's case arm names its function, then `opts="..."`: the words it offers.
    for verb in verbs() {
        // The script's own name for the command: `PARENT,NAME)` then `cmd="NAME'S FUNCTION"`.
        let mut func = "vaultdisk".to_string();
        for name in &verb.path {
            let pick = format!("{func},{name})");
            let next = script
                .lines()
                .skip_while(|l| l.trim() != pick)
                .nth(1)
                .unwrap_or_else(|| panic!("bash names no {pick}"));
            func = next
                .trim()
                .strip_prefix("cmd=")
                .unwrap()
                .trim_matches('"')
                .to_string();
        }
        let arm = func + ")";
        let opts = script
            .lines()
            .skip_while(|l| l.trim() != arm)
            .nth(1)
            .unwrap_or_else(|| panic!("no bash arm {arm}"));
        let opts = opts.trim().strip_prefix("opts=").expect("opts line");
        let words: BTreeSet<&str> = opts.trim_matches('"').split_whitespace().collect();
        for long in &verb.longs {
            assert!(
                words.contains(format!("--{long}").as_str()),
                "{arm} --{long}"
            );
        }
        let subs = verbs()
            .into_iter()
            .filter(|v| v.path.len() == verb.path.len() + 1 && v.path.starts_with(&verb.path));
        for sub in subs {
            let name = sub.path.last().unwrap();
            assert!(words.contains(name.as_str()), "{arm} offers {name}");
        }
    }
    let dir = temp();
    let file = dir.path().join("vaultdisk.bash");
    fs::write(&file, &script).unwrap();
    let syntax = run("bash", &["-n", s(&file)], None);
    assert_eq!(syntax.code, 0, "bash -n: {syntax:?}");
    // What bash offers at `vaultdisk op<TAB>` and `vaultdisk vault en<TAB>`.
    let complete = |words: &str| {
        let line = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); \
             COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
             _vaultdisk vaultdisk \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            s(&file)
        );
        let out = run("bash", &["-c", line.as_str()], None);
        assert_eq!(out.code, 0, "{out:?}");
        out.stdout.lines().map(String::from).collect::<Vec<_>>()
    };
    assert_eq!(complete("vaultdisk op"), ["open"]);
    assert_eq!(complete("vaultdisk vault en"), ["enroll"]);
    assert!(complete("vaultdisk open --key-f").contains(&"--key-file".to_string()));
}

#[test]
fn zsh_and_fish_completions_list_every_verb_and_flag() {
    let zsh = completions("zsh");
    assert!(zsh.starts_with("#compdef vaultdisk"), "{}", &zsh[..40]);
    let fish = completions("fish");
    for verb in verbs().iter().filter(|v| !v.path.is_empty()) {
        let name = verb.path.last().unwrap();
        // zsh: the `(name)` arms of the verb's `_arguments` (a `help` arm may share the name).
        let mut zsh_flags = BTreeSet::new();
        let mut lines = zsh.lines();
        while let Some(l) = lines.next() {
            if l.trim() == format!("({name})") {
                let arm: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != ";;").collect();
                zsh_flags.extend(flags_in(&arm.join("\n")));
            }
        }
        // fish: `complete -c vaultdisk -n "<condition on the path>" -l FLAG`.
        // (a verb with sub-verbs adds "; and not __fish_seen_subcommand_from SUBS").
        let conds = match verb.path.as_slice() {
            [v] => [
                format!("\"__fish_vaultdisk_using_subcommand {v}\""),
                format!("\"__fish_vaultdisk_using_subcommand {v}; and not "),
            ],
            [v, s] => [
                format!(
                    "\"__fish_vaultdisk_using_subcommand {v}; and __fish_seen_subcommand_from {s}\""
                ),
                "-never-".into(),
            ],
            p => panic!("unexpected depth {p:?}"),
        };
        let fish_flags: BTreeSet<String> = fish
            .lines()
            .filter(|l| conds.iter().any(|c| l.contains(c.as_str())))
            .filter_map(|l| l.split(" -l ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(String::from)
            .collect();
        for long in &verb.longs {
            assert!(zsh_flags.contains(long), "zsh {:?} --{long}", verb.path);
            assert!(fish_flags.contains(long), "fish {:?} --{long}", verb.path);
        }
        let offered = if verb.path.len() == 1 {
            "__fish_vaultdisk_needs_command\" -f -a \"".to_string()
        } else {
            format!("__fish_seen_subcommand_from {}", verb.path[0])
        };
        assert!(
            fish.lines()
                .any(|l| l.contains(&offered) && l.contains(&format!("-a \"{name}\""))),
            "fish offers {name}"
        );
        assert!(zsh.contains(&format!("'{name}:")), "zsh offers {name}");
    }
    for (shell, text) in [("zsh", &zsh), ("fish", &fish)] {
        if find_tool(shell).is_some() {
            let dir = temp();
            let file = dir.path().join("script");
            fs::write(&file, text).unwrap();
            let out = run(shell, &["-n", s(&file)], None);
            assert_eq!(out.code, 0, "{shell} -n: {out:?}");
        }
    }
}

#[test]
fn install_script_puts_binary_pages_and_completions_under_prefix() {
    let dir = temp();
    let prefix = dir.path().join("usr");
    let out = std::process::Command::new("bash")
        .arg(repo_file("scripts/install.sh"))
        .arg(&prefix)
        .env("VAULTDISK_BIN", BIN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let bin = prefix.join("bin/vaultdisk");
    let version = run(&bin, &["--version"], None);
    assert!(
        version.code == 0 && version.stdout.starts_with("vaultdisk "),
        "{version:?}"
    );
    for verb in verbs() {
        let gz = prefix
            .join("share/man/man8")
            .join(page_name(&verb.path) + ".gz");
        let page = run("gzip", &["-dc", s(&gz)], None);
        assert!(
            page.code == 0 && page.stdout.contains(".TH"),
            "{}",
            gz.display()
        );
    }
    for (rel, shell) in [
        ("share/bash-completion/completions/vaultdisk", "bash"),
        ("share/zsh/site-functions/_vaultdisk", "zsh"),
        ("share/fish/vendor_completions.d/vaultdisk.fish", "fish"),
    ] {
        let text = fs::read_to_string(prefix.join(rel)).unwrap();
        assert_eq!(text.trim_end(), completions(shell).trim_end(), "{rel}");
    }
    if find_tool("man").is_some() {
        let w = std::process::Command::new("man")
            .args(["-w", "vaultdisk-open"])
            .env("MANPATH", prefix.join("share/man"))
            .output()
            .unwrap();
        let w = String::from_utf8_lossy(&w.stdout);
        assert!(
            w.trim().ends_with("man8/vaultdisk-open.8.gz"),
            "man -w: {w}"
        );
    }
}

/// target/debug/examples/hash_plaintext, built by `cargo test` (which builds every example) or
/// `cargo build --example hash_plaintext`; `cargo test --test it` alone does not build it.
fn example_bin() -> Option<PathBuf> {
    let bin = Path::new(BIN).parent()?.join("examples/hash_plaintext");
    bin.exists().then_some(bin)
}

#[test]
fn hash_plaintext_example_matches_the_frozen_manifest() {
    let Some(example) = example_bin() else {
        let test = "toolbox::hash_plaintext_example_matches_the_frozen_manifest";
        if std::env::var("VAULTDISK_REQUIRE_ALL").as_deref() == Ok("1") {
            panic!("{test}: the example is not built and VAULTDISK_REQUIRE_ALL=1");
        }
        note_skip(
            test,
            "examples/hash_plaintext not built (cargo build --example)",
        );
        return;
    };
    let dir = temp();
    let key = write_key(dir.path(), "pass", b"frozen-pass");
    let manifest = fs::read_to_string(repo_file("tests/data/frozen/MANIFEST")).unwrap();
    let mut tried = 0;
    for row in manifest.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = row.split('\t').collect();
        if f[1] != "-" {
            continue; // detached headers are not part of the facade yet
        }
        let image = dir.path().join(f[0].trim_end_matches(".gz"));
        let bytes = std::process::Command::new("gzip")
            .args(["-dc", s(&repo_file(&format!("tests/data/frozen/{}", f[0])))])
            .output()
            .unwrap();
        fs::write(&image, &bytes.stdout).unwrap();
        let before = sha256_file(&image);
        let out = run(&example, &[s(&image), s(&key)], None);
        assert_eq!(out.code, 0, "{}: {out:?}", f[0]);
        assert_eq!(
            out.stdout,
            format!("{}  {}\n", f[2], image.display()),
            "{}",
            f[0]
        );
        // The same line as `vaultdisk digest`, and nothing written.
        let digest = vd(&["digest", s(&image), "--key-file", s(&key)]);
        assert_eq!(digest.stdout, out.stdout, "{}", f[0]);
        assert_eq!(sha256_file(&image), before, "{} unchanged", f[0]);
        tried += 1;
    }
    assert!(tried >= 6, "{tried} frozen volumes");
    // A wrong key: one error line, exit 1, no digest.
    let wrong = write_key(dir.path(), "wrong", b"not-the-pass");
    let image = dir.path().join("vd-luks2.img");
    let out = run(&example, &[s(&image), s(&wrong)], None);
    assert!(out.code == 1 && out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr.starts_with("hash_plaintext: "), "{out:?}");
}
