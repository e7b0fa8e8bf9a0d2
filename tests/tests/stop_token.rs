//! The stop tree on every executor: causes flow down, never up; the first
//! cause wins; children come and go without the parent noticing; waiters on
//! every level wake.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use lifecycle::{
    FatalError, JoinError, Latch, RuntimeExt, SharedRuntime, StopCause, StopSource, StopToken,
};
use lifecycle_conformance::{conformance, eventually, let_others_run, yield_now};

conformance!(
    cause_propagates_down_the_tree,
    first_cause_wins,
    racing_stops_have_one_winner,
    child_does_not_stop_parent,
    dropped_children_are_forgotten,
    stop_races_with_child_churn,
    expired_timeout_leaves_nothing_behind,
);

fn is_parent_stopped(cause: Option<StopCause>) -> bool {
    matches!(cause, Some(StopCause::ParentStopped))
}

fn is_requested(cause: Option<StopCause>) -> bool {
    matches!(cause, Some(StopCause::Requested))
}

fn is_timeout(cause: Option<StopCause>) -> bool {
    matches!(cause, Some(StopCause::Timeout))
}

fn is_fatal(cause: Option<StopCause>, error: &FatalError) -> bool {
    matches!(cause, Some(StopCause::Fatal(fatal)) if fatal.same_as(error))
}

async fn cause_propagates_down_the_tree(rt: SharedRuntime) {
    let root = StopSource::new();
    let child = root.child();
    let grandchild = child.token().child();
    let great_grandchild = grandchild.child();
    let sibling = root.token().child();
    let descendants = [
        ("child", child.token()),
        ("grandchild", grandchild.token()),
        ("great-grandchild", great_grandchild.token()),
        ("sibling", sibling.token()),
    ];
    let everyone: Vec<(&str, StopToken)> = std::iter::once(("root", root.token()))
        .chain(descendants.iter().cloned())
        .collect();

    // Two waiters per level: one borrowing its token, one owning it.
    let borrowing: Vec<_> = everyone
        .iter()
        .map(|(_, token)| {
            let token = token.clone();
            rt.spawn(async move {
                token.stopped().await;
                token.cause()
            })
        })
        .collect();
    let owning: Vec<_> = everyone
        .iter()
        .map(|(_, token)| rt.spawn(token.clone().stopped_owned()))
        .collect();

    let_others_run(&rt).await;
    for ((name, token), (waiter, owned)) in everyone.iter().zip(borrowing.iter().zip(&owning)) {
        assert!(
            !token.is_stopped(),
            "{name} stopped before anything was stopped"
        );
        assert!(
            token.cause().is_none() && token.origin_cause().is_none(),
            "{name}"
        );
        assert!(
            !waiter.is_finished() && !owned.is_finished(),
            "{name}'s waiter completed early"
        );
    }

    let error = FatalError::msg("disk full");
    assert!(root.stop_with(StopCause::Fatal(error.clone())));
    assert!(root.is_stopped());
    assert!(
        is_fatal(root.token().cause(), &error),
        "the root keeps its own cause"
    );
    assert!(is_fatal(root.token().origin_cause(), &error));
    for (name, token) in &descendants {
        assert!(token.is_stopped(), "{name} not stopped with the root");
        assert!(
            is_parent_stopped(token.cause()),
            "{name}: {:?}",
            token.cause()
        );
        assert!(
            is_fatal(token.origin_cause(), &error),
            "{name}: {:?}",
            token.origin_cause()
        );
        assert_eq!(token.stopped().now_or_never(), Some(()), "{name}");
    }

    for ((name, _), (waiter, owned)) in everyone.iter().zip(borrowing.into_iter().zip(owning)) {
        let cause = waiter.await.unwrap();
        if *name == "root" {
            assert!(is_fatal(cause, &error));
        } else {
            assert!(is_parent_stopped(cause), "{name}");
        }
        assert_eq!(owned.await, Ok(()), "{name}");
    }
}

async fn first_cause_wins(rt: SharedRuntime) {
    let source = StopSource::new();
    assert!(source.stop_with(StopCause::Timeout));
    assert!(
        !source.stop(),
        "a second stop reports that it changed nothing"
    );
    assert!(!source.stop_with(StopCause::Fatal(FatalError::msg("too late"))));
    assert!(source.is_stopped());
    assert!(
        is_timeout(source.token().cause()),
        "{:?}",
        source.token().cause()
    );

    // A child stopped for its own reason keeps it when the parent stops later.
    let parent = StopSource::new();
    let child = parent.child();
    let grandchild = child.child();
    let waiter = rt.spawn(grandchild.token().stopped_owned());
    assert!(child.stop_with(StopCause::Timeout));
    assert_eq!(waiter.await, Ok(()));
    assert!(!parent.is_stopped());

    assert!(parent.stop());
    assert!(is_requested(parent.token().cause()));
    assert!(
        is_timeout(child.token().cause()),
        "{:?}",
        child.token().cause()
    );
    assert!(
        is_timeout(child.token().origin_cause()),
        "the child's stop was its own"
    );
    assert!(is_parent_stopped(grandchild.token().cause()));
    assert!(
        is_timeout(grandchild.token().origin_cause()),
        "{:?}",
        grandchild.token().origin_cause()
    );
    assert!(!child.stop() && !grandchild.stop());
}

async fn racing_stops_have_one_winner(rt: SharedRuntime) {
    const RACERS: usize = 4;
    fn cause(racer: usize) -> StopCause {
        match racer {
            0 => StopCause::Requested,
            1 => StopCause::Timeout,
            _ => StopCause::Fatal(FatalError::msg(format!("racer {racer}"))),
        }
    }

    for round in 0..100 {
        let source = StopSource::new();
        let child = source.child();
        let go = Latch::new();
        let racers: Vec<_> = (0..RACERS)
            .map(|racer| {
                let source = source.clone();
                let go = go.clone();
                rt.spawn(async move {
                    go.wait().await;
                    if racer == 0 {
                        source.stop()
                    } else {
                        source.stop_with(cause(racer))
                    }
                })
            })
            .collect();
        go.set();

        let mut winners = Vec::new();
        for (racer, handle) in racers.into_iter().enumerate() {
            if handle.await.unwrap() {
                winners.push(racer);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let cause_now = source.token().cause().unwrap();
        assert_eq!(
            cause_now.to_string(),
            cause(winners[0]).to_string(),
            "round {round}: the winner's cause stays"
        );
        assert!(is_parent_stopped(child.token().cause()), "round {round}");
    }
}

async fn child_does_not_stop_parent(rt: SharedRuntime) {
    let root = StopSource::new();
    let stopped_child = root.child();
    let grandchild = stopped_child.child();
    let sibling = root.child();
    let root_waiter = rt.spawn(root.token().stopped_owned());
    let sibling_waiter = rt.spawn(sibling.token().stopped_owned());
    let grandchild_waiter = rt.spawn(grandchild.token().stopped_owned());

    assert!(stopped_child.stop());
    assert_eq!(
        grandchild_waiter.await,
        Ok(()),
        "the stopped child's own children stop"
    );
    assert!(is_parent_stopped(grandchild.token().cause()));
    assert!(is_requested(grandchild.token().origin_cause()));

    let_others_run(&rt).await;
    assert!(!root.is_stopped(), "a child stopped its parent");
    assert!(!sibling.is_stopped(), "a child stopped its sibling");
    assert!(root.token().cause().is_none() && sibling.token().cause().is_none());
    assert!(!root_waiter.is_finished() && !sibling_waiter.is_finished());

    let newcomer = root.child();
    assert!(
        !newcomer.is_stopped(),
        "the parent still takes running children"
    );

    assert!(root.stop());
    assert_eq!(root_waiter.await, Ok(()));
    assert_eq!(sibling_waiter.await, Ok(()));
    assert!(is_parent_stopped(sibling.token().cause()));
    assert!(is_parent_stopped(newcomer.token().cause()));
    assert!(
        is_requested(stopped_child.token().cause()),
        "the child keeps its own cause"
    );
}

async fn dropped_children_are_forgotten(rt: SharedRuntime) {
    const CHILDREN: usize = 100_000;
    let root = StopSource::new();
    let token = root.token();
    let mut kept = Vec::new();
    for index in 0..CHILDREN {
        let child = if index % 2 == 0 {
            root.child()
        } else {
            token.child()
        };
        if index % 10_000 == 1 {
            // Keep only a token: the child's source is gone, the node is not.
            kept.push(child.token());
        }
        match index % 1_000 {
            0 => {
                // A child whose waiter is aborted, then dropped with it.
                let waiter = rt.spawn(child.token().stopped_owned());
                yield_now().await;
                waiter.abort();
                assert_eq!(waiter.await, Err(JoinError::Aborted));
            }
            500 => {
                // A child stopped on its own, with a waiting grandchild.
                let grandchild = child.child();
                let waiter = rt.spawn(grandchild.token().stopped_owned());
                assert!(child.stop());
                assert_eq!(waiter.await, Ok(()));
            }
            _ if index % 7 == 0 => drop(child.child()),
            _ => {}
        }
    }

    let waiters: Vec<_> = kept
        .iter()
        .map(|kept| rt.spawn(kept.clone().stopped_owned()))
        .collect();
    assert!(kept.iter().all(|kept| !kept.is_stopped()));
    assert!(!root.is_stopped());
    assert!(
        root.stop(),
        "a root that outlived {CHILDREN} children still stops"
    );
    for (kept, waiter) in kept.iter().zip(waiters) {
        assert_eq!(waiter.await, Ok(()));
        assert!(is_parent_stopped(kept.cause()));
    }

    // Children of a stopped node are born stopped, however they are made.
    for late in [
        root.child(),
        token.child(),
        kept[0].child(),
        root.child().child(),
    ] {
        assert!(
            late.is_stopped(),
            "a child born under a stopped parent runs"
        );
        assert!(is_parent_stopped(late.token().cause()));
        assert!(is_requested(late.token().origin_cause()));
        assert_eq!(late.token().stopped().now_or_never(), Some(()));
        assert!(!late.stop(), "born stopped: a stop changes nothing");
        assert_eq!(rt.spawn(late.token().stopped_owned()).await, Ok(()));
    }
}

async fn stop_races_with_child_churn(rt: SharedRuntime) {
    const TASKS: usize = 4;
    const ITERATIONS: usize = 5_000;
    let root = StopSource::new();
    let progress = Arc::new(AtomicUsize::new(0));
    let churners: Vec<_> = (0..TASKS)
        .map(|_| {
            let root = root.clone();
            let token = root.token();
            let progress = progress.clone();
            rt.spawn(async move {
                let mut held = Vec::new();
                let mut stopped_it = false;
                for index in 0..ITERATIONS {
                    let parent_was_stopped = token.is_stopped();
                    let child = token.child();
                    assert!(
                        !parent_was_stopped || child.is_stopped(),
                        "a child created after its parent stopped was born running"
                    );
                    let grandchild = child.child();
                    if index % 10 == 0 {
                        held.push((child, grandchild));
                    }
                    // Halfway through the churn of all tasks, one of them stops the root.
                    if progress.fetch_add(1, Relaxed) == TASKS * ITERATIONS / 2 {
                        stopped_it = root.stop();
                    }
                    if index % 100 == 0 {
                        yield_now().await;
                    }
                }
                (held, stopped_it)
            })
        })
        .collect();

    // Join every churner before looking: until the one that stops the root
    // has finished, the others' children may rightly be running.
    let mut results = Vec::new();
    for churner in churners {
        results.push(churner.await.unwrap());
    }
    let mut stops = 0;
    for (held, stopped_it) in results {
        stops += usize::from(stopped_it);
        for (child, grandchild) in held {
            assert!(
                child.is_stopped(),
                "a child of the stopped root is still running"
            );
            assert!(
                grandchild.is_stopped(),
                "a grandchild of the stopped root is still running"
            );
            assert!(is_parent_stopped(child.token().cause()));
            assert!(is_parent_stopped(grandchild.token().cause()));
            assert!(is_requested(grandchild.token().origin_cause()));
        }
    }
    assert_eq!(stops, 1);
    assert!(is_requested(root.token().cause()));
}

async fn expired_timeout_leaves_nothing_behind(rt: SharedRuntime) {
    const WAITERS: usize = 100;
    const LIMIT: Duration = Duration::from_millis(10);
    let root = StopSource::new();
    let started = rt.now();
    let waiters: Vec<_> = (0..WAITERS)
        .map(|index| {
            // Half wait on the root itself, half on a child of their own.
            let token = if index % 2 == 0 {
                root.token()
            } else {
                root.child().token()
            };
            let rt = rt.clone();
            rt.clone()
                .spawn(async move { rt.timeout(LIMIT, token.stopped()).await })
        })
        .collect();
    for waiter in waiters {
        let elapsed = waiter.await.unwrap().unwrap_err();
        assert_eq!(elapsed.duration(), LIMIT);
    }
    let waited = rt.now().saturating_duration_since(started);
    assert!(
        waited >= LIMIT,
        "the timeouts expired after {waited:?}, before {LIMIT:?}"
    );
    assert!(!root.is_stopped());

    // The tree still works after its waiters gave up.
    let registered = Arc::new(AtomicUsize::new(0));
    let patient: Vec<_> = (0..WAITERS)
        .map(|index| {
            let token = if index % 2 == 0 {
                root.token()
            } else {
                root.child().token()
            };
            let rt = rt.clone();
            let registered = registered.clone();
            rt.clone().spawn(async move {
                let mut stopped = token.stopped();
                assert_eq!((&mut stopped).now_or_never(), None);
                registered.fetch_add(1, Relaxed);
                rt.timeout(Duration::from_secs(3600), stopped).await
            })
        })
        .collect();
    eventually(&rt, "every patient waiter registered", || {
        registered.load(Relaxed) == WAITERS
    })
    .await;
    assert!(root.stop());
    for waiter in patient {
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }
}
