//! The typed edits on metadata built in memory: each result is checked, each refusal typed.
use super::*;
use crate::luks2::metadata::Keyslot;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::json;

const AREA: u64 = 258048;

fn fresh() -> Metadata {
    let digest = NewDigest {
        hash: "sha256".into(),
        iterations: 1000,
        salt: vec![7; 32],
        digest: vec![8; 32],
    };
    new_volume(&Layout::default(), 4096, &digest).expect("new volume")
}

fn keyslot(offset: u64) -> json::Keyslot {
    json::Keyslot {
        kind: "luks2".into(),
        key_size: 64,
        priority: None,
        af: json::Af {
            kind: "luks1".into(),
            stripes: 4000,
            hash: "sha256".into(),
            extra: Default::default(),
        },
        area: json::Area {
            kind: "raw".into(),
            offset,
            size: AREA,
            encryption: "aes-xts-plain64".into(),
            key_size: 64,
            extra: Default::default(),
        },
        kdf: json::Kdf {
            kind: "pbkdf2".into(),
            hash: Some("sha256".into()),
            iterations: Some(1000),
            time: None,
            memory: None,
            cpus: None,
            salt: B64.encode([3u8; 32]),
            extra: Default::default(),
        },
        extra: Default::default(),
    }
}

/// Adds a keyslot at the first free area under the lowest free id (or `want`).
fn add(meta: &Metadata, want: Option<u32>, token: Option<Value>) -> (Metadata, u32, Option<u32>) {
    let id = free_keyslot(meta, want).expect("free id");
    let offset = free_area(meta, AREA).expect("free area");
    let (m, t) = add_keyslot(meta, id, &keyslot(offset), 0, token).expect("add");
    (m, id, t)
}

fn digest_keyslots(m: &Metadata) -> Value {
    m.wire.digests["0"]["keyslots"].clone()
}

#[test]
fn new_volume_is_valid_and_empty() {
    let m = fresh();
    assert!(m.keyslots.is_empty() && m.tokens.is_empty());
    assert_eq!(m.hdr_size(), 0x4000);
    assert_eq!(m.wire.config.json_size, 12288);
    let seg = m.data_segment().expect("supported");
    assert_eq!(
        (seg.offset_bytes, seg.size_bytes, seg.sector_size),
        (16 << 20, None, 4096)
    );
    assert_eq!(digest_keyslots(&m), json!([]));
}

#[test]
fn add_keyslot_links_digest_and_token_in_order() {
    let (m, id0, t0) = add(&fresh(), None, None);
    assert_eq!((id0, t0), (0, None));
    assert_eq!(m.areas[&0], (32768, AREA));
    // docs/format.md §4.7: the second keyslot lands at 290816.
    let (m, id3, t) = add(&m, Some(3), Some(json!({"type": "vaultdisk-recovery"})));
    assert_eq!((id3, t), (3, Some(0)));
    assert_eq!(m.areas[&3], (290816, AREA));
    let (m, id1, _) = add(&m, None, None);
    assert_eq!(id1, 1);
    // Digest members sorted by id; the token names only its keyslot.
    assert_eq!(digest_keyslots(&m), json!(["0", "1", "3"]));
    assert_eq!(m.tokens[&0], ("vaultdisk-recovery".to_owned(), vec![3]));
    assert_eq!(
        m.wire.tokens["0"],
        json!({"type": "vaultdisk-recovery", "keyslots": ["3"]})
    );
    assert!(matches!(m.keyslots[&1], Keyslot::Luks2(_)));
    assert_eq!(m.digest_id_of_keyslot(3), Some(0));
    assert_eq!(m.digest_id_of_keyslot(2), None);
    assert_eq!(
        m.keyslot_areas(),
        vec![(32768, AREA), (32768 + 2 * AREA, AREA), (290816, AREA)]
    );
}

#[test]
fn add_keyslot_refusals() {
    let (m, _, _) = add(&fresh(), None, None);
    let ks = keyslot(free_area(&m, AREA).expect("area"));
    assert_eq!(free_keyslot(&m, Some(0)), Err(EditError::KeyslotInUse(0)));
    assert_eq!(free_keyslot(&m, Some(32)), Err(EditError::OutOfRange(32)));
    assert_eq!(free_keyslot(&m, Some(31)), Ok(31));
    assert_eq!(
        add_keyslot(&m, 0, &ks, 0, None).err(),
        Some(EditError::KeyslotInUse(0))
    );
    assert_eq!(
        add_keyslot(&m, 32, &ks, 0, None).err(),
        Some(EditError::OutOfRange(32))
    );
    assert_eq!(
        add_keyslot(&m, 1, &ks, 4, None).err(),
        Some(EditError::NoSuchDigest(4))
    );
    assert_eq!(
        add_keyslot(&m, 1, &ks, 0, Some(json!("not an object"))).err(),
        Some(EditError::TokenNotObject)
    );
    // An area overlapping keyslot 0: Metadata::check refuses the result.
    let overlap = add_keyslot(&m, 1, &keyslot(32768 + 4096), 0, None);
    assert!(
        matches!(&overlap, Err(EditError::Invalid(FormatError::Invalid(why))) if why.contains("overlaps")),
        "{overlap:?}"
    );
    // A keyslot too large for the JSON area.
    let mut huge = ks.clone();
    huge.extra
        .insert("pad".into(), Value::String("x".repeat(12000)));
    assert!(matches!(
        add_keyslot(&m, 1, &huge, 0, None),
        Err(EditError::NoRoom { area: 12288, .. })
    ));
    // Nothing left: every id taken, or no gap in the keyslots area.
    let mut full = m.clone();
    for n in 0..MAX_OBJECTS {
        full.wire.keyslots.insert(n.to_string(), json!({}));
    }
    assert_eq!(free_keyslot(&full, None), Err(EditError::NoFreeKeyslot));
    let mut no_gap = m.clone();
    no_gap
        .areas
        .insert(9, (32768, no_gap.wire.config.keyslots_size));
    assert_eq!(free_area(&no_gap, AREA), Err(EditError::NoArea(AREA)));
    let mut no_token = m.clone();
    for n in 0..MAX_OBJECTS {
        no_token.wire.tokens.insert(n.to_string(), json!({}));
    }
    assert_eq!(
        add_keyslot(&no_token, 1, &ks, 0, Some(json!({"type": "t"}))).err(),
        Some(EditError::NoFreeToken)
    );
}

#[test]
fn remove_keyslot_drops_digest_links_and_emptied_tokens() {
    let (m, _, _) = add(&fresh(), None, None);
    let (m, _, _) = add(&m, None, Some(json!({"type": "only-1"})));
    let (mut m, _, _) = add(&m, None, None);
    // A token naming keyslots 1 and 2 keeps keyslot 2 when 1 goes.
    let (shared, tid) =
        put_token(&m, json!({"type": "both", "keyslots": ["1", "2"]})).expect("put");
    assert_eq!(tid, 1);
    m = shared;
    let (after, removed) = remove_keyslot(&m, 1).expect("remove");
    assert_eq!(
        removed,
        Removed {
            area: Some((32768 + AREA, AREA)),
            tokens: vec![0]
        }
    );
    assert!(!after.keyslots.contains_key(&1));
    assert_eq!(digest_keyslots(&after), json!(["0", "2"]));
    assert_eq!(after.tokens.len(), 1);
    assert_eq!(after.tokens[&1], ("both".to_owned(), vec![2]));
    assert_eq!(
        remove_keyslot(&after, 1).err(),
        Some(EditError::NoSuchKeyslot(1))
    );
    // The last keyslots can go too (remove-key --force): the digest is left empty.
    let (after, _) = remove_keyslot(&after, 0).expect("remove 0");
    let (after, removed) = remove_keyslot(&after, 2).expect("remove 2");
    assert_eq!(removed.tokens, vec![1]);
    assert!(after.keyslots.is_empty() && after.tokens.is_empty());
    assert_eq!(digest_keyslots(&after), json!([]));
}

#[test]
fn unknown_members_survive_edits() {
    let (mut m, _, _) = add(&fresh(), None, None);
    m.wire.keyslots.get_mut("0").expect("ks")["x-future"] = json!("kept");
    m.wire.config.extra.insert("x-config".into(), json!(1));
    let (m, _, _) = add(&m, None, None);
    let (m, _) = remove_keyslot(&m, 1).expect("remove");
    let m = set_segment_size(&m, Some(1 << 20)).expect("size");
    assert_eq!(m.wire.keyslots["0"]["x-future"], json!("kept"));
    assert_eq!(m.wire.config.extra["x-config"], json!(1));
}

#[test]
fn segment_size_edits() {
    let m = fresh();
    let fixed = set_segment_size(&m, Some(8 << 20)).expect("fixed");
    assert_eq!(fixed.segments[&0].size_bytes, Some(8 << 20));
    assert_eq!(fixed.wire.segments["0"]["size"], json!("8388608"));
    let back = set_segment_size(&fixed, None).expect("dynamic");
    assert_eq!(back.segments[&0].size_bytes, None);
    assert_eq!(back.wire, m.wire);
    for bad in [0, 1000, 4096 + 512] {
        assert!(
            matches!(set_segment_size(&m, Some(bad)), Err(EditError::Invalid(_))),
            "{bad}"
        );
    }
    let mut linear = m.clone();
    linear.wire.segments.get_mut("0").expect("seg")["type"] = json!("linear");
    assert_eq!(
        set_segment_size(&linear, Some(4096)).err(),
        Some(EditError::NoCryptSegment)
    );
}

#[test]
fn token_edits() {
    let (m, _, _) = add(&fresh(), None, None);
    let (m, t0) = put_token(&m, json!({"type": "a", "keyslots": ["0"]})).expect("put");
    let (m, t1) = put_token(&m, json!({"type": "b", "keyslots": []})).expect("put");
    assert_eq!((t0, t1), (0, 1));
    let m = replace_token(&m, 1, json!({"type": "c", "keyslots": ["0"], "x": 1})).expect("replace");
    assert_eq!(m.tokens[&1], ("c".to_owned(), vec![0]));
    assert_eq!(m.wire.tokens["1"]["x"], json!(1));
    assert_eq!(
        replace_token(&m, 5, json!({"type": "c", "keyslots": []})).err(),
        Some(EditError::NoSuchToken(5))
    );
    assert!(matches!(
        put_token(&m, json!({"type": "d", "keyslots": ["7"]})),
        Err(EditError::Invalid(_))
    ));
    assert!(matches!(
        put_token(&m, json!({"type": "", "keyslots": []})),
        Err(EditError::Invalid(_))
    ));
    assert_eq!(
        put_token(&m, json!([1])).err(),
        Some(EditError::TokenNotObject)
    );
    assert_eq!(
        replace_token(&m, 0, json!(null)).err(),
        Some(EditError::TokenNotObject)
    );
    let m = remove_token(&m, 0).expect("remove");
    assert!(!m.tokens.contains_key(&0) && m.keyslots.contains_key(&0));
    assert_eq!(remove_token(&m, 0).err(), Some(EditError::NoSuchToken(0)));
    let both = replace_tokens(
        &m,
        BTreeMap::from([(1, json!({"type": "e", "keyslots": []}))]),
    )
    .expect("replace all");
    assert_eq!(both.tokens[&1].0, "e");
}

#[test]
fn error_messages() {
    assert_eq!(
        EditError::OutOfRange(40).to_string(),
        "keyslot 40 is out of range 0..31"
    );
    assert_eq!(
        EditError::NoArea(AREA).to_string(),
        "no 258048-byte gap left in the keyslots area"
    );
    assert_eq!(
        EditError::NoSuchDigest(2).to_string(),
        "digest 2 has no keyslots"
    );
}

#[test]
fn config_flag_edits() {
    let m = fresh();
    assert!(!has_config_flag(&m, "allow-discards"));
    let on = set_config_flag(&m, "allow-discards", true)
        .expect("set")
        .expect("changed");
    assert!(has_config_flag(&on, "allow-discards"));
    assert_eq!(
        on.wire.config.flags.as_deref(),
        Some(&["allow-discards".to_owned()][..])
    );
    assert!(
        set_config_flag(&on, "allow-discards", true)
            .expect("again")
            .is_none()
    );
    let mut two = on.wire.clone();
    two.config.flags = Some(vec!["no-read-workqueue".into(), "allow-discards".into()]);
    let two = checked(two, m.hdr_size()).expect("checked");
    let off = set_config_flag(&two, "allow-discards", false)
        .expect("clear")
        .expect("changed");
    assert_eq!(
        off.wire.config.flags.as_deref(),
        Some(&["no-read-workqueue".to_owned()][..])
    );
}
