//! The runtime binding on every executor: spawn and join, abort, panics,
//! sleeps, the clock and timeouts behave the same whoever runs them.

use std::future::{pending, ready};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{self, Either};
use futures_util::FutureExt;
use lifecycle::{Instant, JoinError, Latch, RuntimeExt, SharedRuntime};
use lifecycle_conformance::{conformance, eventually, yield_now, DropProbe};

conformance!(
    spawn_and_join,
    abort_stops_a_pending_task,
    abort_after_completion_keeps_the_output,
    panic_is_reported_and_the_runtime_survives,
    sleeps_wake_in_deadline_order,
    clock_advances_at_least_by_the_sleep,
    timeout_outcomes,
);

/// Long enough never to fire during a test.
const FOREVER: Duration = Duration::from_secs(3600);

async fn spawn_and_join(rt: SharedRuntime) {
    assert_eq!(rt.spawn(async { 6 * 7 }).await, Ok(42));
    assert_eq!(
        rt.spawn(async { String::from("done") }).await.as_deref(),
        Ok("done")
    );

    let many: Vec<_> = (0..1_000_u64)
        .map(|index| {
            rt.spawn(async move {
                yield_now().await;
                index * 2
            })
        })
        .collect();
    let mut sum = 0;
    for handle in many {
        sum += handle.await.unwrap();
    }
    assert_eq!(sum, 999 * 1_000);

    let nested = rt.spawn({
        let rt = rt.clone();
        async move { rt.spawn(async { 1 }).await.unwrap() + 1 }
    });
    assert_eq!(
        nested.await,
        Ok(2),
        "a task spawns and joins a task of its own"
    );

    let mut handle = rt.spawn(async { 3 });
    assert_eq!((&mut handle).await, Ok(3));
    assert!(handle.is_finished());
    assert_eq!(
        (&mut handle).now_or_never(),
        None,
        "the output is delivered once"
    );

    // Dropping the handle detaches the task; it still runs to the end.
    let done = Latch::new();
    drop(rt.spawn({
        let done = done.clone();
        async move {
            yield_now().await;
            done.set();
        }
    }));
    done.wait().await;
}

async fn abort_stops_a_pending_task(rt: SharedRuntime) {
    let (probe, dropped) = DropProbe::new();
    let started = Latch::new();
    let task = rt.spawn({
        let started = started.clone();
        async move {
            let _probe = probe;
            started.set();
            pending::<()>().await;
        }
    });
    started.wait().await;
    assert!(!task.is_finished());
    task.abort();
    assert_eq!(task.await, Err(JoinError::Aborted));
    assert!(
        dropped.is_set(),
        "the join returned before the task's future was dropped"
    );

    // Aborted in a long sleep: the timer goes with it.
    let sleeping = rt.spawn({
        let rt = rt.clone();
        async move { rt.sleep(FOREVER).await }
    });
    yield_now().await;
    sleeping.abort();
    assert_eq!(sleeping.await, Err(JoinError::Aborted));

    // Aborted right away, maybe before its first poll, and twice.
    let (probe, dropped) = DropProbe::new();
    let early = rt.spawn(async move {
        let _probe = probe;
        pending::<()>().await;
    });
    early.abort();
    early.abort();
    assert_eq!(early.await, Err(JoinError::Aborted));
    assert!(dropped.is_set());

    let crowd: Vec<_> = (0..100).map(|_| rt.spawn(pending::<()>())).collect();
    for task in &crowd {
        task.abort();
    }
    for task in crowd {
        assert_eq!(task.await, Err(JoinError::Aborted));
    }
}

async fn abort_after_completion_keeps_the_output(rt: SharedRuntime) {
    let task = rt.spawn(async { String::from("kept") });
    eventually(&rt, "the task finished", || task.is_finished()).await;
    task.abort();
    assert_eq!(
        task.await.as_deref(),
        Ok("kept"),
        "an abort after the end changes nothing"
    );

    let (probe, dropped) = DropProbe::new();
    let task = rt.spawn(async move {
        drop(probe);
        7
    });
    dropped.wait().await;
    eventually(&rt, "the task finished", || task.is_finished()).await;
    task.abort();
    assert_eq!(task.await, Ok(7));
}

async fn panic_is_reported_and_the_runtime_survives(rt: SharedRuntime) {
    let task = rt.spawn(async {
        let code = 7;
        panic!("boom {code}");
    });
    assert_eq!(task.await, Err(JoinError::Panicked(String::from("boom 7"))));

    // A panic after an await point drops the rest of the future too.
    let (probe, dropped) = DropProbe::new();
    let task = rt.spawn({
        let rt = rt.clone();
        async move {
            let _probe = probe;
            rt.sleep(Duration::from_millis(1)).await;
            panic!("after a sleep");
        }
    });
    assert_eq!(
        task.await,
        Err(JoinError::Panicked(String::from("after a sleep")))
    );
    assert!(dropped.is_set());

    let task = rt.spawn(async { std::panic::panic_any(42_u32) });
    assert!(
        matches!(task.await, Err(JoinError::Panicked(_))),
        "a non-string payload"
    );

    // Panics among healthy tasks, all at once.
    let mixed: Vec<_> = (0..10_u32)
        .map(|index| {
            rt.spawn(async move {
                yield_now().await;
                assert!(index % 2 == 1, "task {index} gives up");
                index
            })
        })
        .collect();
    for (index, task) in (0..).zip(mixed) {
        if index % 2 == 1 {
            assert_eq!(task.await, Ok(index));
        } else {
            assert_eq!(
                task.await,
                Err(JoinError::Panicked(format!("task {index} gives up")))
            );
        }
    }

    // The runtime carries on: spawn, sleep, timeout.
    assert_eq!(rt.spawn(async { 1 }).await, Ok(1));
    rt.sleep(Duration::from_millis(1)).await;
    assert_eq!(rt.timeout(FOREVER, ready(2)).await, Ok(2));
    let sleeper = rt.spawn({
        let rt = rt.clone();
        async move { rt.sleep(Duration::from_millis(1)).await }
    });
    assert_eq!(sleeper.await, Ok(()));
}

async fn sleeps_wake_in_deadline_order(rt: SharedRuntime) {
    // Wide enough apart that scheduling jitter between the sleepers' first
    // polls cannot reorder them.
    const TICK: Duration = Duration::from_millis(20);
    let order = Arc::new(Mutex::new(Vec::new()));
    let go = Latch::new();
    let sleepers: Vec<_> = [3_u32, 1, 2]
        .into_iter()
        .map(|ticks| {
            let rt = rt.clone();
            let order = order.clone();
            let go = go.clone();
            rt.clone().spawn(async move {
                go.wait().await;
                let before = rt.now();
                rt.sleep(TICK * ticks).await;
                let slept = rt.now().saturating_duration_since(before);
                order.lock().unwrap().push(ticks);
                slept >= TICK * ticks
            })
        })
        .collect();
    go.set();
    for sleeper in sleepers {
        assert_eq!(
            sleeper.await,
            Ok(true),
            "a sleep ended early by the runtime's clock"
        );
    }
    assert_eq!(
        *order.lock().unwrap(),
        [1, 2, 3],
        "sleeps ended out of deadline order"
    );
}

async fn clock_advances_at_least_by_the_sleep(rt: SharedRuntime) {
    const NAP: Duration = Duration::from_millis(15);
    let before = rt.now();
    rt.sleep(NAP).await;
    let slept = rt.now().saturating_duration_since(before);
    assert!(slept >= NAP, "slept {NAP:?} but the clock moved {slept:?}");

    let deadline = rt.now() + NAP;
    rt.sleep_until(deadline).await;
    assert!(
        rt.now() >= deadline,
        "sleep_until ended before its deadline"
    );

    let mut last = rt.now();
    for _ in 0..1_000 {
        let now = rt.now();
        assert!(now >= last, "the clock went back from {last:?} to {now:?}");
        last = now;
    }

    // Deadlines in the past, and a zero sleep, end at once: before any real sleep.
    let past = rt.now();
    rt.sleep(Duration::from_millis(1)).await;
    for (what, sleep) in [
        ("sleep_until(a past instant)", rt.sleep_until(past)),
        (
            "sleep_until(the origin)",
            rt.sleep_until(Instant::default()),
        ),
        ("sleep(zero)", rt.sleep(Duration::ZERO)),
    ] {
        match future::select(sleep, rt.sleep(FOREVER)).await {
            Either::Left(_) => {}
            Either::Right(_) => panic!("{what} did not end before a sleep of {FOREVER:?}"),
        }
    }
}

async fn timeout_outcomes(rt: SharedRuntime) {
    const LIMIT: Duration = Duration::from_millis(20);
    let started = rt.now();
    let elapsed = rt.timeout(LIMIT, pending::<()>()).await.unwrap_err();
    assert_eq!(elapsed.duration(), LIMIT);
    let waited = rt.now().saturating_duration_since(started);
    assert!(
        waited >= LIMIT,
        "the time limit expired after {waited:?}, before {LIMIT:?}"
    );

    assert_eq!(rt.timeout(FOREVER, ready(5)).await, Ok(5));
    assert_eq!(
        rt.timeout(Duration::ZERO, ready(5)).await,
        Ok(5),
        "a ready future beats an expired limit"
    );
    let slow_enough = async {
        rt.sleep(Duration::from_millis(5)).await;
        6
    };
    assert_eq!(rt.timeout(FOREVER, slow_enough).await, Ok(6));

    // A time limit on a join: expiring leaves the task running.
    let mut task = rt.spawn(pending::<()>());
    assert!(rt
        .timeout(Duration::from_millis(5), &mut task)
        .await
        .is_err());
    assert!(!task.is_finished());
    task.abort();
    assert_eq!(task.await, Err(JoinError::Aborted));

    // Inside a spawned task, on whatever thread runs it.
    let inside = rt.spawn({
        let rt = rt.clone();
        async move {
            rt.timeout(Duration::from_millis(5), pending::<()>())
                .await
                .is_err()
        }
    });
    assert_eq!(inside.await, Ok(true));
}
