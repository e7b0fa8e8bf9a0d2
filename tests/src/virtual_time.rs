//! [`VirtualTimeExecutor`]: a single-threaded, deterministic executor whose
//! clock only moves when nothing else can happen.

use crate::record::lock;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{AcqRel, Release};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use lifecycle::{BoxFuture, Instant, Runtime, SharedRuntime};

/// How long, in real time, [`VirtualTimeExecutor::block_on`] waits for a
/// wakeup from another thread when no task is ready and no timer is set,
/// before it declares a deadlock.
///
/// Everything the executor runs runs on the thread of `block_on`, but a waker
/// may be called from anywhere (a thread the scenario started, a callback of
/// another executor): such a wakeup within this time resumes the run.
pub const IDLE_WAIT_LIMIT: Duration = Duration::from_secs(1);

/// How many polls in a row [`VirtualTimeExecutor::block_on`] makes without
/// the ready queue ever becoming empty before it declares a livelock.
///
/// Time stands still while anything is ready, so tasks that keep waking each
/// other (a loop of `yield_now` waiting for a deadline) would otherwise spin
/// forever. Real scenarios drain the queue within a few thousand polls.
pub const BUSY_POLL_LIMIT: u64 = 10_000_000;

/// A single-threaded executor with a virtual clock.
///
/// - Tasks spawned through its [`runtime`](Self::runtime) go to a first-in,
///   first-out ready queue; a woken task goes to the back of it (once, however
///   often it is woken before it runs). Wakers are `Send + Sync` and may be
///   called from any thread.
/// - The clock starts at zero and stands still while anything is ready.
///   [`block_on`](Self::block_on) runs ready tasks (and the future it was
///   given) until none is left; then it advances the clock to the earliest
///   timer deadline and fires every timer due, in deadline order, timers with
///   equal deadlines in the order they were set. A sleep of an hour takes no
///   real time.
/// - Same program, same order of events, on every run: the only source of
///   ordering is the queue and the timers, both deterministic.
/// - If the future given to `block_on` is pending, nothing is ready and no
///   timer is set, nothing can ever make progress; after waiting
///   [`IDLE_WAIT_LIMIT`] for a wakeup from another thread, `block_on` panics
///   with a message starting `virtual-time runtime: nothing can make
///   progress`. It never hangs.
///
/// Dropping the executor drops every task it still holds, ready or not
/// (their joins report [`JoinError::Dropped`](lifecycle::JoinError::Dropped));
/// a task spawned after that is dropped at once.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use lifecycle::{Instant, RuntimeExt};
/// use lifecycle_conformance::VirtualTimeExecutor;
///
/// let executor = VirtualTimeExecutor::new();
/// let rt = executor.runtime();
/// let order = executor.block_on(async {
///     let slow = rt.spawn({
///         let rt = rt.clone();
///         async move {
///             rt.sleep(Duration::from_secs(3600)).await;
///             "slow"
///         }
///     });
///     let fast = rt.spawn({
///         let rt = rt.clone();
///         async move {
///             rt.sleep(Duration::from_secs(60)).await;
///             rt.now()
///         }
///     });
///     (fast.await.unwrap(), slow.await.unwrap())
/// });
/// // An hour went by on the virtual clock, instantly.
/// assert_eq!(order, (Instant::from_origin(Duration::from_secs(60)), "slow"));
/// assert_eq!(executor.now(), Instant::from_origin(Duration::from_secs(3600)));
/// ```
pub struct VirtualTimeExecutor {
    shared: Arc<Shared>,
}

/// The [`Runtime`] of a [`VirtualTimeExecutor`]: spawns onto its ready queue,
/// sleeps and reads the time on its virtual clock.
///
/// Obtained with [`VirtualTimeExecutor::runtime`]. It holds the executor's
/// state but does not keep its tasks running: once the executor is dropped,
/// spawned tasks are dropped at once and sleeps never end.
pub struct VirtualTimeRuntime {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Notified whenever something is queued or a timer is set, for a
    /// `block_on` waiting for a wakeup from another thread.
    wakeup: Condvar,
    /// Whether the future of `block_on` is in the ready queue.
    main_queued: AtomicBool,
    /// Whether a `block_on` is running.
    running: AtomicBool,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Runnable>,
    /// The virtual time since the origin.
    now: Duration,
    /// Pending timers by (deadline, sequence number): equal deadlines fire in
    /// the order they were set.
    timers: BTreeMap<(Duration, u64), Waker>,
    next_timer: u64,
    /// Every task whose future is not finished yet, by spawn order.
    tasks: BTreeMap<u64, Arc<Task>>,
    next_task: u64,
    shut_down: bool,
}

enum Runnable {
    /// The future given to `block_on`.
    Main,
    Task(Arc<Task>),
}

struct Task {
    id: u64,
    future: Mutex<Option<BoxFuture>>,
    /// Whether the task is in the ready queue: a task is queued once however
    /// often it is woken before it runs.
    queued: AtomicBool,
    shared: Weak<Shared>,
}

struct MainWaker {
    shared: Weak<Shared>,
}

/// What `block_on` does next.
enum Step {
    Run(Runnable),
    Fire(Vec<Waker>),
    Idle,
}

impl VirtualTimeExecutor {
    /// An executor with no task, no timer and its clock at zero.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::default(),
                wakeup: Condvar::new(),
                main_queued: AtomicBool::new(false),
                running: AtomicBool::new(false),
            }),
        }
    }

    /// The runtime to give to the code under test.
    pub fn runtime(&self) -> SharedRuntime {
        Arc::new(VirtualTimeRuntime {
            shared: self.shared.clone(),
        })
    }

    /// The virtual clock: zero at creation, moved only by `block_on` when
    /// nothing is ready.
    pub fn now(&self) -> Instant {
        self.shared.now()
    }

    /// Runs `future` on the calling thread, together with every task of the
    /// executor, until `future` completes; returns its output. Tasks still
    /// ready or pending then stay with the executor, for the next `block_on`
    /// or for the drop of the executor.
    ///
    /// # Panics
    ///
    /// - If `future` or a task panics (tasks spawned with
    ///   [`RuntimeExt::spawn`](lifecycle::RuntimeExt::spawn) catch their own
    ///   panics).
    /// - If nothing can make progress: `future` is pending, no task is ready,
    ///   no timer is set, and no other thread wakes a task within
    ///   [`IDLE_WAIT_LIMIT`].
    /// - If tasks keep each other ready for [`BUSY_POLL_LIMIT`] polls in a
    ///   row, so that time can never advance.
    /// - If called while a `block_on` of the same executor is running (from
    ///   inside one of its tasks, or from another thread).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        assert!(
            !self.shared.running.swap(true, AcqRel),
            "virtual-time runtime: block_on called while another block_on of the same \
             executor is running"
        );
        let _running = RunningGuard(&self.shared);
        let mut future = pin!(future);
        let waker = Waker::from(Arc::new(MainWaker {
            shared: Arc::downgrade(&self.shared),
        }));
        let mut cx = Context::from_waker(&waker);
        waker.wake_by_ref();
        let mut busy_polls = 0_u64;
        loop {
            match self.shared.next_step() {
                Step::Run(runnable) => {
                    busy_polls += 1;
                    if busy_polls > BUSY_POLL_LIMIT {
                        self.shared.livelock(busy_polls);
                    }
                    match runnable {
                        Runnable::Main => {
                            self.shared.main_queued.store(false, Release);
                            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                                return output;
                            }
                        }
                        Runnable::Task(task) => task.run(),
                    }
                }
                Step::Fire(wakers) => {
                    busy_polls = 0;
                    wakers.into_iter().for_each(Waker::wake);
                }
                Step::Idle => {
                    busy_polls = 0;
                    self.shared.wait_for_wakeup();
                }
            }
        }
    }
}

impl Default for VirtualTimeExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for VirtualTimeExecutor {
    fn drop(&mut self) {
        // Taken under the lock, dropped outside it: dropping a future may
        // wake, spawn or cancel a timer, which all take the lock.
        let (queue, timers, tasks) = {
            let mut state = lock(&self.shared.state);
            state.shut_down = true;
            (
                std::mem::take(&mut state.queue),
                std::mem::take(&mut state.timers),
                std::mem::take(&mut state.tasks),
            )
        };
        drop(queue);
        drop(timers);
        for task in tasks.into_values() {
            let future = lock(&task.future).take();
            drop(future);
        }
    }
}

impl fmt::Debug for VirtualTimeExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt("VirtualTimeExecutor", f)
    }
}

struct RunningGuard<'a>(&'a Shared);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.running.store(false, Release);
    }
}

impl Shared {
    fn now(&self) -> Instant {
        Instant::from_origin(lock(&self.state).now)
    }

    /// Queues `runnable` unless the executor is shut down.
    fn push(&self, runnable: Runnable) {
        let mut state = lock(&self.state);
        if !state.shut_down {
            state.queue.push_back(runnable);
            self.wakeup.notify_all();
        }
    }

    /// The next ready runnable; else the timers due once the clock is moved
    /// to the earliest deadline; else idle.
    fn next_step(&self) -> Step {
        let mut state = lock(&self.state);
        if let Some(runnable) = state.queue.pop_front() {
            return Step::Run(runnable);
        }
        let Some((&(deadline, _), _)) = state.timers.first_key_value() else {
            return Step::Idle;
        };
        state.now = state.now.max(deadline);
        let now = state.now;
        let mut due = Vec::new();
        while let Some(entry) = state.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        Step::Fire(due)
    }

    /// Waits up to [`IDLE_WAIT_LIMIT`] for another thread to queue a task or
    /// set a timer; panics if none does.
    fn wait_for_wakeup(&self) {
        let state = lock(&self.state);
        let (state, _) = self
            .wakeup
            .wait_timeout_while(state, IDLE_WAIT_LIMIT, |state| {
                state.queue.is_empty() && state.timers.is_empty()
            })
            .unwrap_or_else(PoisonError::into_inner);
        if state.queue.is_empty() && state.timers.is_empty() {
            let (now, parked) = (state.now, state.tasks.len());
            drop(state);
            panic!(
                "virtual-time runtime: nothing can make progress: the future of block_on is \
                 pending, no task is ready, no timer is set and no other thread woke anything \
                 within {IDLE_WAIT_LIMIT:?} (virtual time {now:?}, {parked} task(s) parked): \
                 a lost wakeup or a deadlock"
            );
        }
    }

    fn livelock(&self, polls: u64) -> ! {
        let (now, tasks) = {
            let state = lock(&self.state);
            (state.now, state.tasks.len())
        };
        panic!(
            "virtual-time runtime: nothing can make progress: {polls} polls in a row without \
             the ready queue ever running empty, so the clock cannot advance (virtual time \
             {now:?}, {tasks} task(s) alive): tasks keep waking each other, e.g. a loop of \
             yields waiting for time to pass"
        );
    }

    fn fmt(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct(name)
            .field("now", &state.now)
            .field("ready", &state.queue.len())
            .field("tasks", &state.tasks.len())
            .field("timers", &state.timers.len())
            .finish_non_exhaustive()
    }
}

impl Task {
    fn run(self: Arc<Self>) {
        // Cleared before the poll, so that a wakeup during the poll queues
        // the task again.
        self.queued.store(false, Release);
        let waker = Waker::from(self.clone());
        let mut slot = lock(&self.future);
        let Some(future) = slot.as_mut() else {
            return;
        };
        if future
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
        {
            return;
        }
        let finished = slot.take();
        drop(slot);
        drop(finished);
        if let Some(shared) = self.shared.upgrade() {
            let removed = lock(&shared.state).tasks.remove(&self.id);
            drop(removed);
        }
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, AcqRel) {
            if let Some(shared) = self.shared.upgrade() {
                shared.push(Runnable::Task(self.clone()));
            }
        }
    }
}

impl Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(shared) = self.shared.upgrade() {
            if !shared.main_queued.swap(true, AcqRel) {
                shared.push(Runnable::Main);
            }
        }
    }
}

impl Runtime for VirtualTimeRuntime {
    fn spawn_detached(&self, task: BoxFuture) {
        let mut state = lock(&self.shared.state);
        if state.shut_down {
            drop(state);
            drop(task);
            return;
        }
        let id = state.next_task;
        state.next_task += 1;
        let task = Arc::new(Task {
            id,
            future: Mutex::new(Some(task)),
            queued: AtomicBool::new(true),
            shared: Arc::downgrade(&self.shared),
        });
        state.tasks.insert(id, task.clone());
        state.queue.push_back(Runnable::Task(task));
        self.shared.wakeup.notify_all();
    }

    fn sleep(&self, duration: Duration) -> BoxFuture {
        Box::pin(Sleep {
            shared: self.shared.clone(),
            deadline: lock(&self.shared.state).now.saturating_add(duration),
            timer: None,
        })
    }

    fn now(&self) -> Instant {
        self.shared.now()
    }
}

impl fmt::Debug for VirtualTimeRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt("VirtualTimeRuntime", f)
    }
}

/// The future of [`VirtualTimeRuntime::sleep`]: ends once the virtual clock
/// reaches `deadline`.
struct Sleep {
    shared: Arc<Shared>,
    deadline: Duration,
    /// The key of its timer, once set.
    timer: Option<(Duration, u64)>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut state = lock(&this.shared.state);
        if state.now >= this.deadline {
            let fired = this.timer.take().and_then(|key| state.timers.remove(&key));
            drop(state);
            drop(fired);
            return Poll::Ready(());
        }
        match this.timer {
            // The timer is gone only if the executor shut down: never ends.
            Some(key) => {
                if let Some(waker) = state.timers.get_mut(&key) {
                    waker.clone_from(cx.waker());
                }
            }
            None if state.shut_down => {}
            None => {
                let key = (this.deadline, state.next_timer);
                state.next_timer += 1;
                state.timers.insert(key, cx.waker().clone());
                this.timer = Some(key);
                this.shared.wakeup.notify_all();
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.timer.take() {
            let removed = lock(&self.shared.state).timers.remove(&key);
            drop(removed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use lifecycle::{Instant, JoinError, Latch, RuntimeExt, SharedRuntime};

    use super::VirtualTimeExecutor;
    use crate::{yield_now, DropProbe};

    fn at(millis: u64) -> Instant {
        Instant::from_origin(Duration::from_millis(millis))
    }

    #[test]
    fn timers_fire_by_deadline_then_creation_order() {
        let executor = VirtualTimeExecutor::new();
        let rt = executor.runtime();
        let fired = Arc::new(Mutex::new(Vec::new()));
        executor.block_on(async {
            let sleepers: Vec<_> = [(30, "c"), (10, "a"), (30, "d"), (10, "b")]
                .into_iter()
                .map(|(millis, name)| {
                    let (rt, fired) = (rt.clone(), fired.clone());
                    rt.clone().spawn(async move {
                        rt.sleep(Duration::from_millis(millis)).await;
                        fired.lock().unwrap().push((name, rt.now()));
                    })
                })
                .collect();
            for sleeper in sleepers {
                sleeper.await.unwrap();
            }
        });
        assert_eq!(
            *fired.lock().unwrap(),
            [("a", at(10)), ("b", at(10)), ("c", at(30)), ("d", at(30))]
        );
        assert_eq!(executor.now(), at(30));
    }

    #[test]
    fn the_clock_stands_still_while_anything_is_ready() {
        let executor = VirtualTimeExecutor::new();
        let rt = executor.runtime();
        executor.block_on(async {
            let spinner = rt.spawn(async {
                for _ in 0..1_000 {
                    yield_now().await;
                }
            });
            assert_eq!(rt.now(), at(0));
            spinner.await.unwrap();
            assert_eq!(rt.now(), at(0));
            rt.sleep(Duration::ZERO).await;
            assert_eq!(rt.now(), at(0));
            rt.sleep(Duration::from_secs(3600)).await;
            assert_eq!(rt.now(), at(3_600_000));
        });
    }

    #[test]
    fn a_cancelled_sleep_does_not_move_the_clock() {
        let executor = VirtualTimeExecutor::new();
        let rt = executor.runtime();
        executor.block_on(async {
            let outcome = rt
                .timeout(
                    Duration::from_millis(5),
                    rt.sleep(Duration::from_secs(3600)),
                )
                .await;
            assert!(outcome.is_err());
            assert_eq!(rt.now(), at(5));
            rt.sleep(Duration::from_millis(1)).await;
            assert_eq!(rt.now(), at(6));
        });
    }

    /// Many tasks racing through latches, yields and sleeps: the same log
    /// on every run.
    fn interleaving() -> Vec<String> {
        let executor = VirtualTimeExecutor::new();
        let rt = executor.runtime();
        let log = Arc::new(Mutex::new(Vec::new()));
        let gate = Latch::new();
        executor.block_on(async {
            let tasks: Vec<_> = (0..20_u64)
                .map(|index| {
                    let (rt2, log, gate) = (rt.clone(), log.clone(), gate.clone());
                    rt.spawn(async move {
                        for _ in 0..index % 3 {
                            yield_now().await;
                        }
                        log.lock().unwrap().push(format!("{index} waits"));
                        gate.wait().await;
                        rt2.sleep(Duration::from_millis(index % 4)).await;
                        log.lock()
                            .unwrap()
                            .push(format!("{index} at {:?}", rt2.now()));
                    })
                })
                .collect();
            rt.sleep(Duration::from_millis(1)).await;
            gate.set();
            for task in tasks {
                task.await.unwrap();
            }
        });
        Arc::try_unwrap(log).unwrap().into_inner().unwrap()
    }

    #[test]
    fn runs_are_deterministic() {
        let first = interleaving();
        assert_eq!(first.len(), 40);
        for _ in 0..10 {
            assert_eq!(interleaving(), first);
        }
    }

    #[test]
    fn a_wakeup_from_another_thread_resumes_the_run() {
        let executor = VirtualTimeExecutor::new();
        let rt = executor.runtime();
        let latch = Latch::new();
        let setter = std::thread::spawn({
            let latch = latch.clone();
            move || {
                std::thread::sleep(Duration::from_millis(50));
                latch.set();
            }
        });
        executor.block_on(async {
            let waiter = rt.spawn(latch.clone().wait_owned());
            waiter.await.unwrap();
        });
        setter.join().unwrap();
        assert_eq!(executor.now(), at(0));
    }

    #[test]
    #[should_panic(expected = "virtual-time runtime: nothing can make progress")]
    fn a_deadlock_panics_instead_of_hanging() {
        let executor = VirtualTimeExecutor::new();
        let rt = executor.runtime();
        executor.block_on(async {
            let never = Latch::new();
            rt.spawn(never.clone().wait_owned()).await.unwrap();
        });
    }

    #[test]
    fn dropping_the_executor_drops_its_tasks() {
        let executor = VirtualTimeExecutor::new();
        let rt: SharedRuntime = executor.runtime();
        let (probe, dropped) = DropProbe::new();
        let parked = rt.spawn(async move {
            let _probe = probe;
            std::future::pending::<()>().await;
        });
        // Polled once: parked on a future that never ends.
        executor.block_on(yield_now());
        assert!(!dropped.is_set());
        drop(executor);
        assert!(dropped.is_set());
        assert_eq!(futures_executor::block_on(parked), Err(JoinError::Dropped));
        // A spawn after the drop is dropped at once.
        assert_eq!(
            futures_executor::block_on(rt.spawn(async {})),
            Err(JoinError::Dropped)
        );
    }
}
