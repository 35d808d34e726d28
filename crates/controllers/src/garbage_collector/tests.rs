//! Unit tests of the garbage collector's graph and reference bookkeeping.

use super::*;

fn reference(uid: &str, block: Option<bool>) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: format!("cm-{uid}"),
        uid: uid.into(),
        controller: None,
        block_owner_deletion: block,
    }
}

#[test]
fn reference_diffs_match_owners_by_uid() {
    let old = [reference("a", None), reference("b", Some(true))];
    let new = [reference("b", Some(false)), reference("c", None)];
    let (added, removed, changed) = references_diffs(&old, &new);
    assert_eq!(added, [reference("c", None)]);
    assert_eq!(removed, [reference("a", None)]);
    assert_eq!(
        changed,
        [(reference("b", Some(true)), reference("b", Some(false)))]
    );
}

#[test]
fn groups_come_from_the_api_version() {
    assert_eq!(group_of("v1"), "");
    assert_eq!(group_of("apps/v1"), "apps");
    assert_eq!(group_of("example.com/v1beta1"), "example.com");
}

#[test]
fn the_absent_owner_cache_forgets_the_oldest_first() {
    let mut absent = AbsentOwners::default();
    let identity = |uid: usize| Identity {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: Some("default".into()),
        name: "cm".into(),
        uid: uid.to_string(),
    };
    for uid in 0..=ABSENT_OWNER_CACHE_SIZE {
        absent.add(identity(uid));
    }
    assert!(!absent.contains(&identity(0)));
    assert!(absent.contains(&identity(1)));
    assert!(absent.contains(&identity(ABSENT_OWNER_CACHE_SIZE)));
}
