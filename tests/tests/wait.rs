//! The wait helpers on every executor: `wait_all`, `wait_signal_or_stop` and
//! `wait_error_or_done`, with their preferences when both sides are there.

use futures_util::FutureExt;
use lifecycle::{
    wait_all, wait_error_or_done, wait_signal_or_stop, FatalError, FatalSlot, Latch, RuntimeExt,
    SharedRuntime, SignalOrStop, StopSource,
};
use lifecycle_conformance::{conformance, let_others_run};

conformance!(
    wait_all_waits_for_every_signal,
    wait_signal_or_stop_prefers_the_signal,
    wait_error_or_done_prefers_the_error,
);

async fn wait_all_waits_for_every_signal(rt: SharedRuntime) {
    assert_eq!(
        Box::pin(wait_all([])).now_or_never(),
        Some(()),
        "zero signals: wait_all must complete at once"
    );
    assert_eq!(Box::pin(wait_all(Vec::new())).now_or_never(), Some(()));

    let latches: Vec<Latch> = (0..3).map(|_| Latch::new()).collect();
    let mut local = Box::pin(wait_all(
        latches.iter().map(Latch::signal).collect::<Vec<_>>(),
    ));
    let spawned = rt.spawn(wait_all(
        latches.iter().map(Latch::signal).collect::<Vec<_>>(),
    ));
    // Set out of order; the wait ends with the last one only.
    for index in [2, 0, 1] {
        assert_eq!((&mut local).now_or_never(), None);
        let_others_run(&rt).await;
        assert!(
            !spawned.is_finished(),
            "wait_all completed before every signal was set"
        );
        latches[index].set();
    }
    local.await;
    assert_eq!(spawned.await, Ok(()));

    // All set already: at once.
    let signals: Vec<_> = latches.iter().map(Latch::signal).collect();
    assert_eq!(Box::pin(wait_all(signals)).now_or_never(), Some(()));
}

async fn wait_signal_or_stop_prefers_the_signal(rt: SharedRuntime) {
    // Both there before the wait: the signal wins.
    let latch = Latch::new();
    let stop = StopSource::new();
    latch.set();
    stop.stop();
    assert_eq!(
        Box::pin(wait_signal_or_stop(&latch.signal(), &stop.token())).now_or_never(),
        Some(SignalOrStop::Signal),
        "with both set, the signal must win"
    );

    // Only one of them.
    let (latch, stop) = (Latch::new(), StopSource::new());
    stop.stop();
    assert_eq!(
        wait_signal_or_stop(&latch.signal(), &stop.token()).await,
        SignalOrStop::Stopped
    );
    let (latch, stop) = (Latch::new(), StopSource::new());
    latch.set();
    assert_eq!(
        wait_signal_or_stop(&latch.signal(), &stop.token()).await,
        SignalOrStop::Signal
    );

    // Neither yet: waits, then wakes for whichever comes.
    for (set_signal, expected) in [(true, SignalOrStop::Signal), (false, SignalOrStop::Stopped)] {
        let (latch, stop) = (Latch::new(), StopSource::new());
        let waiter = rt.spawn({
            let (signal, token) = (latch.signal(), stop.token());
            async move { wait_signal_or_stop(&signal, &token).await }
        });
        let_others_run(&rt).await;
        assert!(!waiter.is_finished(), "woke with neither signal nor stop");
        if set_signal {
            latch.set();
        } else {
            stop.stop();
        }
        assert_eq!(waiter.await, Ok(expected));
    }
}

async fn wait_error_or_done_prefers_the_error(rt: SharedRuntime) {
    // Both there before the wait: the error wins.
    let slot = FatalSlot::new();
    let done = Latch::new();
    done.set();
    slot.report(FatalError::msg("boom"));
    let error = Box::pin(wait_error_or_done(&slot, &done.signal()))
        .now_or_never()
        .expect("both were there: it must complete at once");
    assert_eq!(
        error.map(|e| e.to_string()).as_deref(),
        Some("boom"),
        "with both there, the error must win"
    );
    assert!(slot.take().is_none(), "the error was taken, once");

    // Done alone: no error.
    let (slot, done) = (FatalSlot::new(), Latch::new());
    done.set();
    assert!(wait_error_or_done(&slot, &done.signal()).await.is_none());

    // An error alone: no need to wait for done.
    let (slot, done) = (FatalSlot::new(), Latch::new());
    slot.report(FatalError::msg("alone"));
    let error = wait_error_or_done(&slot, &done.signal()).await;
    assert_eq!(error.map(|e| e.to_string()).as_deref(), Some("alone"));

    // Neither yet: waits, then wakes for whichever comes.
    for report in [true, false] {
        let (slot, done) = (FatalSlot::new(), Latch::new());
        let waiter = rt.spawn({
            let (slot, done) = (slot.clone(), done.signal());
            async move {
                wait_error_or_done(&slot, &done)
                    .await
                    .map(|e| e.to_string())
            }
        });
        let_others_run(&rt).await;
        assert!(!waiter.is_finished(), "woke with neither error nor done");
        if report {
            slot.report(FatalError::msg("later"));
            assert_eq!(waiter.await, Ok(Some("later".to_owned())));
        } else {
            done.set();
            assert_eq!(waiter.await, Ok(None));
        }
    }

    // The error taken by someone else: only done ends the wait.
    let (slot, done) = (FatalSlot::new(), Latch::new());
    let waiter = rt.spawn({
        let (slot, done) = (slot.clone(), done.signal());
        async move {
            wait_error_or_done(&slot, &done)
                .await
                .map(|e| e.to_string())
        }
    });
    slot.report(FatalError::msg("taken"));
    let taken = slot.take();
    let_others_run(&rt).await;
    if taken.is_some() {
        assert!(
            !waiter.is_finished(),
            "the wait ended although the error went elsewhere and done is unset"
        );
        done.set();
        assert_eq!(waiter.await, Ok(None));
    } else {
        // The waiter took it first.
        assert_eq!(waiter.await, Ok(Some("taken".to_owned())));
        done.set();
    }
}
