//! Unit tests of the containerd backend that need no containerd.

use super::status::observe;

use super::*;
use containerd_client::types::v1::Process;

fn task(status: i32, exit_status: u32) -> Process {
    Process {
        status,
        exit_status,
        exited_at: Some(Timestamp {
            seconds: 100,
            nanos: 5,
        }),
        ..Default::default()
    }
}

#[test]
fn recorded_exits_win_over_what_the_task_says() {
    let labels: HashMap<String, String> = [
        (LABEL_EXIT_CODE.to_string(), "3".to_string()),
        (LABEL_STARTED.to_string(), "1000000000".to_string()),
        (LABEL_FINISHED.to_string(), "2000000000".to_string()),
    ]
    .into();
    let observed = observe(&labels, Some(&task(task_status::RUNNING, 0)));
    assert_eq!(observed.state, ContainerState::Exited);
    assert_eq!(observed.exit_code, Some(3));
    assert_eq!(observed.reason, "Error");
    assert_eq!(
        observed.finished_at,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2))
    );
}

#[test]
fn a_stopped_task_is_an_exit_before_it_is_recorded() {
    let observed = observe(&HashMap::new(), Some(&task(task_status::STOPPED, 0)));
    assert_eq!(observed.state, ContainerState::Exited);
    assert_eq!(
        (observed.exit_code, observed.reason.as_str()),
        (Some(0), "Completed")
    );
    assert_eq!(
        observed.finished_at,
        Some(SystemTime::UNIX_EPOCH + Duration::new(100, 5))
    );
    let running = observe(&HashMap::new(), Some(&task(task_status::RUNNING, 0)));
    assert_eq!(running.state, ContainerState::Running);
}

#[test]
fn a_started_container_without_task_or_record_exited_unseen() {
    let never = observe(&HashMap::new(), None);
    assert_eq!(never.state, ContainerState::Created);
    let labels: HashMap<String, String> = [(LABEL_STARTED.to_string(), "1".to_string())].into();
    let lost = observe(&labels, None);
    assert_eq!(lost.state, ContainerState::Exited);
    assert_eq!(lost.reason, "Unknown");
}

#[test]
fn containerd_errors_map_onto_runtime_errors() {
    assert!(map_status(Status::not_found("x"), "container", "c").is_not_found());
    assert!(matches!(
        map_status(Status::unavailable("down"), "container", "c"),
        RuntimeError::Unavailable(_)
    ));
    assert!(matches!(
        map_status(Status::already_exists("x"), "sandbox", "s"),
        RuntimeError::AlreadyExists {
            kind: "sandbox",
            ..
        }
    ));
    assert!(matches!(
        map_status(Status::internal("x"), "image", "i"),
        RuntimeError::Internal(_)
    ));
}

#[test]
fn ids_are_64_lowercase_hex_characters_and_differ() {
    let (a, b) = (new_id().unwrap(), new_id().unwrap());
    assert_eq!(a.len(), 64);
    assert!(a
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    assert_ne!(a, b);
}
