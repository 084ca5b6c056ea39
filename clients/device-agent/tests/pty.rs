//! Real commands in real pseudo-terminals: output, input, resize, kill, and the time and output
//! caps.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use pa_device::pty::{PtyLimits, PtyManager};

fn manager(limits: PtyLimits) -> PtyManager {
    PtyManager::new(std::env::temp_dir(), limits)
}

#[tokio::test]
async fn echo_hello_is_read_back() {
    let pty = manager(PtyLimits::default());
    let done = pty.exec("echo hello", None).await.unwrap();
    assert_eq!(done.output.trim(), "hello", "{done:?}");
    let exit = done.exit.unwrap();
    assert_eq!(exit.code, 0);
    assert_eq!(exit.killed, None);

    let failed = pty.exec("echo oops >&2; exit 3", None).await.unwrap();
    assert!(failed.output.contains("oops"));
    assert_eq!(failed.exit.unwrap().code, 3);
}

#[tokio::test]
async fn a_command_past_its_time_cap_is_killed() {
    let pty = manager(PtyLimits::default());
    // A cap the shell's start cannot miss under load, and a command far longer than the bound.
    let started = Instant::now();
    let done = pty
        .exec("echo started; sleep 300", Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
    assert!(done.output.contains("started"));
    let exit = done.exit.unwrap();
    assert_eq!(exit.killed.as_deref(), Some("time limit"), "{exit:?}");
    assert_ne!(exit.code, 0);

    // The operator's cap wins over a longer timeout asked for.
    let capped = manager(PtyLimits {
        max_runtime: Duration::from_secs(1),
        ..PtyLimits::default()
    });
    let started = Instant::now();
    let done = capped
        .exec("sleep 300", Some(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(120));
    assert_eq!(done.exit.unwrap().killed.as_deref(), Some("time limit"));
}

#[tokio::test]
async fn runaway_output_is_capped_and_killed() {
    let pty = manager(PtyLimits {
        max_output_bytes: 10_000,
        ..PtyLimits::default()
    });
    let started = Instant::now();
    let done = pty
        .exec("yes", Some(Duration::from_secs(300)))
        .await
        .unwrap();
    // The kill reason below tells the output cap from the time cap; this is only a bound.
    assert!(started.elapsed() < Duration::from_secs(120));
    assert!(done.truncated);
    assert!(done.output.len() <= 10_000);
    assert_eq!(done.exit.unwrap().killed.as_deref(), Some("output limit"));
}

#[tokio::test]
async fn interactive_session_input_resize_and_kill() {
    let pty = manager(PtyLimits::default());
    let session = pty.start("cat", 80, 24, None).unwrap();
    pty.write(&session.id, "ping-123\n").unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.contains("ping-123") && Instant::now() < deadline {
        seen.push_str(
            &pty.read(&session.id, Duration::from_millis(500))
                .await
                .unwrap()
                .output,
        );
    }
    assert!(seen.contains("ping-123"), "{seen:?}");
    pty.resize(&session.id, 100, 30).unwrap();

    // The terminal's size is what the command sees.
    let sized = pty.start("stty size", 132, 43, None).unwrap();
    let mut out = String::new();
    loop {
        let chunk = pty.read(&sized.id, Duration::from_secs(5)).await.unwrap();
        out.push_str(&chunk.output);
        if chunk.exit.is_some() {
            break;
        }
    }
    assert_eq!(out.trim(), "43 132");
    // Collected once its exit was read.
    assert!(pty.read(&sized.id, Duration::ZERO).await.is_err());

    let killed = pty.kill(&session.id).await.unwrap();
    assert_eq!(
        killed.exit.unwrap().killed.as_deref(),
        Some("killed on request")
    );
    assert!(pty.write(&session.id, "x").is_err());
}

#[tokio::test]
async fn kill_takes_the_whole_process_group() {
    let pty = manager(PtyLimits::default());
    // A background child of the shell, findable by its unusual duration.
    let marker = format!("sleep 301.{}", std::process::id());
    let session = pty
        .start(&format!("{marker} & wait"), 80, 24, None)
        .unwrap();
    let running = || {
        let ps = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&ps.stdout).contains(&marker)
    };
    // The signals, not guesses at how long a loaded machine takes: the child has started...
    let deadline = Instant::now() + Duration::from_secs(30);
    while !running() {
        assert!(
            Instant::now() < deadline,
            "the background child never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pty.kill(&session.id).await.unwrap();
    // ...and is gone after the kill.
    let deadline = Instant::now() + Duration::from_secs(30);
    while running() {
        assert!(
            Instant::now() < deadline,
            "the background child outlived the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn session_count_is_capped() {
    let pty = manager(PtyLimits {
        max_sessions: 2,
        ..PtyLimits::default()
    });
    let a = pty.start("sleep 30", 80, 24, None).unwrap();
    let _b = pty.start("sleep 30", 80, 24, None).unwrap();
    assert!(pty.start("sleep 30", 80, 24, None).is_err());
    pty.kill(&a.id).await.unwrap();
    assert!(pty.start("true", 80, 24, None).is_ok());
    pty.kill_all();
}

#[tokio::test]
async fn a_cancelled_exec_is_killed_and_the_next_one_runs() {
    let pty = manager(PtyLimits::default());
    let marker = format!("sleep 302.{}", std::process::id());
    let running = || {
        let ps = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&ps.stdout).contains(&marker)
    };
    // The caller gives up: the future is dropped mid-run, once the command runs.
    {
        let exec = pty.exec(&marker, None);
        tokio::pin!(exec);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !running() {
            assert!(Instant::now() < deadline, "the command never started");
            tokio::select! {
                done = &mut exec => panic!("finished before it was cancelled: {done:?}"),
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while running() {
        assert!(
            Instant::now() < deadline,
            "the cancelled command still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        let next = tokio::time::timeout(Duration::from_secs(30), pty.exec("echo next", None))
            .await
            .expect("the next command hung")
            .unwrap();
        assert_eq!(next.output.trim(), "next");
    }
}
