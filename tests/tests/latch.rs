//! `Latch` on every executor: a one-shot broadcast signal, sticky once set,
//! that wakes every waiter, tolerates waiters going away, and publishes what
//! was written before it was set.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{self, Either};
use futures_util::FutureExt;
use lifecycle::{JoinError, Latch, RuntimeExt, SharedRuntime};
use lifecycle_conformance::{conformance, eventually, let_others_run, yield_now};

conformance!(
    set_before_wait,
    set_after_wait,
    thousand_waiters,
    dropped_waiters,
    writes_before_set_are_visible,
);

async fn set_before_wait(rt: SharedRuntime) {
    let latch = Latch::new();
    assert!(!latch.is_set());
    assert!(latch.set(), "the first set() reports that it set the latch");
    assert!(!latch.set(), "a latch is set once");
    assert!(latch.is_set());

    let clone = latch.clone();
    assert!(
        clone.same_as(&latch) && clone.is_set(),
        "clones share the signal"
    );
    assert!(!Latch::new().same_as(&latch));

    assert_eq!(
        latch.wait().now_or_never(),
        Some(()),
        "wait on a set latch is ready at once"
    );
    assert_eq!(latch.clone().wait_owned().now_or_never(), Some(()));
    latch.wait().await;

    let waiter = rt.spawn(latch.clone().wait_owned());
    assert_eq!(waiter.await, Ok(()));
}

async fn set_after_wait(rt: SharedRuntime) {
    let latch = Latch::new();
    let borrowing = rt.spawn({
        let latch = latch.clone();
        async move {
            latch.wait().await;
            latch.is_set()
        }
    });
    let owning = rt.spawn(latch.clone().wait_owned());
    let mut local = latch.wait();
    assert_eq!((&mut local).now_or_never(), None);

    let_others_run(&rt).await;
    assert!(
        !borrowing.is_finished(),
        "a waiter completed before the latch was set"
    );
    assert!(
        !owning.is_finished(),
        "an owned waiter completed before the latch was set"
    );
    assert_eq!((&mut local).now_or_never(), None);

    assert!(latch.set());
    assert_eq!(
        borrowing.await,
        Ok(true),
        "the woken waiter sees the latch set"
    );
    assert_eq!(owning.await, Ok(()));
    local.await;
}

async fn thousand_waiters(rt: SharedRuntime) {
    const WAITERS: usize = 1_000;
    let latch = Latch::new();
    let started = Arc::new(AtomicUsize::new(0));
    let woken = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let latch = latch.clone();
            let started = started.clone();
            let woken = woken.clone();
            rt.spawn(async move {
                started.fetch_add(1, Relaxed);
                latch.wait().await;
                woken.fetch_add(1, Relaxed);
            })
        })
        .collect();

    eventually(&rt, "every waiter task started", || {
        started.load(Relaxed) == WAITERS
    })
    .await;
    let_others_run(&rt).await;
    assert_eq!(woken.load(Relaxed), 0, "waiters completed before the set");
    assert!(waiters.iter().all(|waiter| !waiter.is_finished()));

    assert!(latch.set());
    for waiter in waiters {
        assert_eq!(waiter.await, Ok(()));
    }
    assert_eq!(woken.load(Relaxed), WAITERS, "one set wakes every waiter");
}

async fn dropped_waiters(rt: SharedRuntime) {
    let latch = Latch::new();

    // Register every other waiter, then drop a third of them, newest first,
    // so the waiter list has holes in odd places.
    let mut waits: Vec<_> = (0..1_000).map(|_| latch.wait()).collect();
    for wait in waits.iter_mut().step_by(2) {
        assert_eq!(wait.now_or_never(), None);
    }
    let mut kept = Vec::new();
    for (index, wait) in waits.into_iter().enumerate().rev() {
        if index % 3 != 0 {
            kept.push(wait);
        }
    }

    // Churn: freed places get reused many times over.
    for _ in 0..10_000 {
        let mut wait = latch.clone().wait_owned();
        assert_eq!((&mut wait).now_or_never(), None);
    }

    // A waiter dropped because the other side of a select won.
    let mut loser = latch.wait();
    assert_eq!((&mut loser).now_or_never(), None);
    match future::select(loser, future::ready(())).await {
        Either::Right(((), loser)) => drop(loser),
        Either::Left(_) => panic!("the latch is not set, its waiter cannot win"),
    }

    // A waiter dropped inside a spawned task by an expiring timeout.
    let timed_out = rt.spawn({
        let latch = latch.clone();
        let rt = rt.clone();
        async move {
            rt.timeout(Duration::from_millis(5), latch.wait())
                .await
                .is_err()
        }
    });
    assert_eq!(
        timed_out.await,
        Ok(true),
        "the timeout expires: the latch is not set"
    );

    // A waiter dropped by aborting its task.
    let registered = Latch::new();
    let aborted = rt.spawn({
        let latch = latch.clone();
        let registered = registered.clone();
        async move {
            let mut wait = latch.wait();
            assert_eq!((&mut wait).now_or_never(), None);
            registered.set();
            wait.await;
        }
    });
    registered.wait().await;
    aborted.abort();
    assert_eq!(aborted.await, Err(JoinError::Aborted));

    // A waiter registered before the set and dropped after it, unpolled.
    let mut stale = latch.wait();
    assert_eq!((&mut stale).now_or_never(), None);

    let late = rt.spawn(latch.clone().wait_owned());
    assert!(latch.set());
    drop(stale);
    for wait in kept {
        assert_eq!(
            wait.now_or_never(),
            Some(()),
            "a remaining waiter was not woken"
        );
    }
    assert_eq!(late.await, Ok(()));
}

async fn writes_before_set_are_visible(rt: SharedRuntime) {
    const ROUNDS: usize = 200;
    const WORDS: usize = 16;
    for round in 0..ROUNDS {
        let latch = Latch::new();
        let data: Arc<Vec<AtomicUsize>> =
            Arc::new((0..WORDS).map(|_| AtomicUsize::new(0)).collect());
        let read = |data: &[AtomicUsize]| {
            data.iter()
                .map(|word| word.load(Relaxed))
                .collect::<Vec<_>>()
        };

        let waiting_reader = rt.spawn({
            let latch = latch.clone();
            let data = data.clone();
            async move {
                latch.wait().await;
                read(&data)
            }
        });
        let polling_reader = rt.spawn({
            let latch = latch.clone();
            let data = data.clone();
            async move {
                while !latch.is_set() {
                    yield_now().await;
                }
                read(&data)
            }
        });
        let writer = rt.spawn({
            let latch = latch.clone();
            let data = data.clone();
            async move {
                // Relaxed on purpose: only the latch orders these writes.
                for (index, word) in data.iter().enumerate() {
                    word.store(round * WORDS + index + 1, Relaxed);
                }
                latch.set();
            }
        });

        let expected: Vec<_> = (0..WORDS).map(|index| round * WORDS + index + 1).collect();
        assert_eq!(writer.await, Ok(()));
        assert_eq!(
            waiting_reader.await.unwrap(),
            expected,
            "round {round}: wait()"
        );
        assert_eq!(
            polling_reader.await.unwrap(),
            expected,
            "round {round}: is_set()"
        );
    }
}
