use super::*;

#[test]
fn the_lru_evicts_the_least_recently_used_entry() {
    let mut lru = Lru::new(2);
    lru.insert("a", 1);
    lru.insert("b", 2);
    assert_eq!(lru.get_mut(&"a"), Some(&mut 1)); // "b" is now the oldest
    lru.insert("c", 3);
    assert_eq!(lru.len(), 2);
    assert!(lru.get_mut(&"b").is_none());
    assert!(lru.get_mut(&"a").is_some());
    lru.insert("a", 4); // replacing does not grow it
    assert_eq!(lru.len(), 2);
    assert_eq!(lru.get_mut(&"a"), Some(&mut 4));
}

fn about(object: &str, component: &str, reason: &str) -> Event {
    Event {
        involved_object: ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("default".into()),
            name: Some(object.into()),
            uid: Some(format!("uid-{object}")),
            ..ObjectReference::default()
        },
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        reason: Some(reason.into()),
        ..Event::default()
    }
}

#[test]
fn the_spam_filter_allows_a_burst_of_25_per_source_and_object_then_one_per_5_minutes() {
    let mut correlator = Correlator::new(&EventOptions::default());
    let start = Timestamp::from_second(1_750_000_000).unwrap();
    let at = |seconds: i64| Timestamp::from_second(1_750_000_000 + seconds).unwrap();
    let allowed = (0..30)
        .filter(|i| correlator.allow(&about("web", "kubelet", &format!("R{i}")), start))
        .count();
    assert_eq!(allowed, 25, "the burst");
    // Another object, or another source about the same object, has its own bucket.
    assert!(correlator.allow(&about("db", "kubelet", "R"), start));
    assert!(correlator.allow(&about("web", "scheduler", "R"), start));
    // Tokens come back at one per 5 minutes, never beyond the burst.
    assert!(!correlator.allow(&about("web", "kubelet", "R"), at(299)));
    assert!(correlator.allow(&about("web", "kubelet", "R"), at(300)));
    assert!(!correlator.allow(&about("web", "kubelet", "R"), at(301)));
    assert!(correlator.allow(&about("web", "kubelet", "R"), at(600)));
    let refilled = (0..30)
        .filter(|_| correlator.allow(&about("web", "kubelet", "R"), at(600 + 300 * 100)))
        .count();
    assert_eq!(refilled, 25, "a long pause refills to the burst only");
}

#[test]
fn a_spam_burst_of_zero_disables_the_filter() {
    let mut correlator = Correlator::new(&EventOptions::default().spam_filter(0, Duration::ZERO));
    let now = Timestamp::from_second(1_750_000_000).unwrap();
    assert!((0..100).all(|_| correlator.allow(&about("web", "kubelet", "R"), now)));
}

#[test]
fn names_are_unique_even_at_the_same_instant() {
    let mut correlator = Correlator::new(&EventOptions::default());
    let now = Timestamp::from_second(1_750_000_000).unwrap();
    let event = |name: &str, reason: &str| Event {
        involved_object: ObjectReference {
            name: Some(name.into()),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        ..Event::default()
    };
    let (first, repeat) = correlator.correlate(event("web", "A"), now);
    assert!(!repeat);
    let (second, repeat) = correlator.correlate(event("web", "B"), now);
    assert!(!repeat);
    let first = first.metadata.name.unwrap();
    let second = second.metadata.name.unwrap();
    assert_eq!(
        first,
        format!("web.{:x}", 1_750_000_000u128 * 1_000_000_000)
    );
    assert_eq!(
        second,
        format!("web.{:x}", 1_750_000_000u128 * 1_000_000_000 + 1)
    );

    let (again, repeat) = correlator.correlate(event("web", "A"), now);
    assert!(repeat);
    assert_eq!(again.metadata.name.unwrap(), first);
    assert_eq!(again.count, Some(2));
}
