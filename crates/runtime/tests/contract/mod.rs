//! The behaviour every `ContainerRuntime` backend shares (the crate docs' contract: ids,
//! identity, idempotency, cascades, errors), as one function each backend's tests call.

use std::time::{Duration, Instant};

use capstan_runtime::*;

/// Walks `runtime` through the contract with sandbox `pod` (its metadata unused so far) and
/// `long_running`, a container of an image present on the node that runs until stopped.
pub(crate) async fn check_contract(
    runtime: &dyn ContainerRuntime,
    pod: PodSandboxConfig,
    long_running: ContainerConfig,
) {
    // Missing objects: statuses are NotFound, stop and remove are Ok.
    let missing = "0".repeat(64);
    assert!(runtime
        .pod_sandbox_status(&missing)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(runtime
        .container_status(&missing)
        .await
        .unwrap_err()
        .is_not_found());
    runtime.stop_pod_sandbox(&missing).await.unwrap();
    runtime.remove_pod_sandbox(&missing).await.unwrap();
    runtime
        .stop_container(&missing, Duration::ZERO)
        .await
        .unwrap();
    runtime.remove_container(&missing).await.unwrap();
    assert!(matches!(
        runtime
            .create_container(&missing, long_running.clone(), &pod)
            .await,
        Err(RuntimeError::NotFound { .. })
    ));

    // Sandboxes: ids are 64 hex characters; the metadata is reserved.
    let sandbox = runtime.run_pod_sandbox(pod.clone()).await.unwrap();
    assert_eq!(sandbox.len(), 64);
    assert!(sandbox
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    match runtime.run_pod_sandbox(pod.clone()).await {
        Err(RuntimeError::AlreadyExists { id, .. }) => assert_eq!(id, sandbox),
        other => panic!("a second sandbox with the same metadata: {other:?}"),
    }
    let status = runtime.pod_sandbox_status(&sandbox).await.unwrap();
    assert_eq!(status.state, PodSandboxState::Ready);
    assert_eq!(status.metadata, pod.metadata);
    let (key, value) = pod.labels.iter().next().expect("the pod has a label");
    let listed = runtime
        .list_pod_sandboxes(PodSandboxFilter::all().label(key, value))
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [sandbox.as_str()]
    );

    // Containers: the image must be present; name and attempt are reserved.
    let mut absent = long_running.clone();
    absent.image = ImageSpec::new("capstan.test/absent:1");
    assert!(matches!(
        runtime.create_container(&sandbox, absent, &pod).await,
        Err(RuntimeError::ImageNotFound { .. })
    ));
    let id = runtime
        .create_container(&sandbox, long_running.clone(), &pod)
        .await
        .unwrap();
    assert!(matches!(
        runtime
            .create_container(&sandbox, long_running.clone(), &pod)
            .await,
        Err(RuntimeError::AlreadyExists { .. })
    ));
    assert_eq!(
        runtime.container_status(&id).await.unwrap().state,
        ContainerState::Created
    );
    runtime.start_container(&id).await.unwrap();
    assert!(matches!(
        runtime.start_container(&id).await,
        Err(RuntimeError::FailedPrecondition(_))
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while runtime.container_status(&id).await.unwrap().state != ContainerState::Running {
        assert!(Instant::now() < deadline, "never running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let running = runtime
        .list_containers(
            ContainerFilter::all()
                .pod_sandbox(&sandbox)
                .state(ContainerState::Running),
        )
        .await
        .unwrap();
    assert_eq!(
        running.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );
    assert!(matches!(
        runtime
            .exec_sync(ExecRequest::new(&id, Vec::<String>::new()))
            .await,
        Err(RuntimeError::InvalidArgument(_))
    ));

    // Stopping the sandbox stops its containers; a stopped sandbox takes no new ones.
    runtime.stop_pod_sandbox(&sandbox).await.unwrap();
    runtime.stop_pod_sandbox(&sandbox).await.unwrap();
    let status = runtime.pod_sandbox_status(&sandbox).await.unwrap();
    assert_eq!(status.state, PodSandboxState::NotReady);
    let stopped = runtime.container_status(&id).await.unwrap();
    assert_eq!(stopped.state, ContainerState::Exited);
    assert!(stopped.exit_code.is_some() && stopped.finished_at.is_some());
    runtime.stop_container(&id, Duration::ZERO).await.unwrap();
    let mut next = long_running.clone();
    next.metadata.attempt += 1;
    assert!(matches!(
        runtime.create_container(&sandbox, next, &pod).await,
        Err(RuntimeError::FailedPrecondition(_))
    ));

    // Removing the sandbox removes its containers; removing again is Ok.
    runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    assert!(runtime
        .pod_sandbox_status(&sandbox)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(runtime
        .container_status(&id)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(runtime
        .list_containers(ContainerFilter::all().pod_sandbox(&sandbox))
        .await
        .unwrap()
        .is_empty());
}
