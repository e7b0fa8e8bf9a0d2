//! Hierarchical stop tokens: [`StopSource`] stops, [`StopToken`] observes,
//! [`StopCause`] says why.
//!
//! Invariants:
//! - Stopping a node stops every descendant (with [`StopCause::ParentStopped`]);
//!   stopping a child never affects its parent. Children observe parents, never
//!   the other way round.
//! - A node's cause is written once: the first stop wins, later ones return
//!   `false` and change nothing.
//! - A parent holds only weak references to its children, and a child removes
//!   itself from its parent when its last handle is dropped, so a long-lived
//!   parent does not grow with the number of children it ever had.
//! - A child created under an already stopped parent is born stopped; so is
//!   a root attached under one (a component's scope, made when the component
//!   is built and attached when it is started).
//!
//! Each node is one [`Guarded`] flag: the stopped bit is its flag, the
//! cause, the children and the link to the parent live under its lock.
//! Propagation takes each node's children out under that node's lock and
//! stops them after releasing it, with an explicit stack instead of
//! recursion (embedded stacks are small). Lock order is parent before child;
//! no path holds a child's lock while taking its parent's.
//!
//! A node may share its allocation with a value ([`WithStop`]): a component
//! manager keeps its whole state beside the node of its workers' scope, so
//! starting one allocates once, not twice. Handles on a node are therefore
//! `Arc<WithStop<dyn Host>>`: the node sits at the same place whatever the
//! value is, so reaching it costs nothing more than before, and only the
//! last handle's drop looks at the value's type.

use alloc::boxed::Box;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use slab::Slab;

use crate::fatal::FatalError;
use crate::flag::{Flag, Guarded, HasFlag, Waiter};

/// Why a stop token was stopped. The first cause written wins.
///
/// # Example
///
/// ```
/// use lifecycle::{StopCause, StopSource};
///
/// let root = StopSource::new();
/// let child = root.token().child();
/// root.stop_with(StopCause::Timeout);
/// assert!(matches!(child.token().cause(), Some(StopCause::ParentStopped)));
/// assert!(matches!(child.token().origin_cause(), Some(StopCause::Timeout)));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StopCause {
    /// Someone called [`StopSource::stop`].
    Requested,
    /// An ancestor stopped first; [`StopToken::origin_cause`] tells why.
    ParentStopped,
    /// A fatal error stopped the scope.
    Fatal(FatalError),
    /// A deadline passed.
    Timeout,
    /// The service owning this scope was stopped through its own stop (see
    /// [`StartStop`](crate::StartStop)): a requested end of one generation,
    /// told apart from a parent's stop or a failure.
    ServiceStopped,
}

impl StopCause {
    /// The fatal error, if this cause is one.
    pub fn fatal_error(&self) -> Option<&FatalError> {
        match self {
            StopCause::Fatal(error) => Some(error),
            _ => None,
        }
    }
}

impl fmt::Display for StopCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopCause::Requested => f.write_str("stop requested"),
            StopCause::ParentStopped => f.write_str("parent stopped"),
            StopCause::Fatal(error) => write!(f, "fatal error: {error}"),
            StopCause::Timeout => f.write_str("timed out"),
            StopCause::ServiceStopped => f.write_str("service stopped"),
        }
    }
}

struct Node {
    flag: Guarded<NodeState>,
}

/// A stop node and a value in one allocation: the value lives as long as
/// any handle on the node (source, token, child, waiter) does. A plain node
/// carries `()`.
pub(crate) struct WithStop<T: ?Sized> {
    node: Node,
    value: T,
}

/// What may share a node's allocation: anything a handle may carry across
/// threads.
pub(crate) trait Host: Send + Sync + 'static {}

impl<T: Send + Sync + 'static> Host for T {}

/// A counted handle on a node, whatever shares its allocation.
type NodeRef = Arc<WithStop<dyn Host>>;

/// A parent's handle on a child: it does not keep the child alive.
type ChildRef = Weak<WithStop<dyn Host>>;

fn new_node(parent: Option<NodeRef>, key: Option<usize>) -> NodeRef {
    Arc::new(WithStop {
        node: Node::new(parent, key),
        value: (),
    })
}

struct NodeState {
    cause: Option<StopCause>,
    children: Children,
    /// Set when the node is created as a child, or when a root is attached
    /// under a parent (a component's scope made before it is started).
    parent: Option<NodeRef>,
    /// This node's entry in `parent`'s children; `None` if born stopped.
    key: Option<usize>,
}

/// A node's children, held weakly. Most nodes have none or one (a scope
/// for one component), so the first lives inline and only more allocate a
/// slab. Key 0 is the inline slot, key `k + 1` is slot `k` of the slab.
#[derive(Default)]
struct Children {
    first: Option<ChildRef>,
    rest: Option<Box<Slab<ChildRef>>>,
}

impl Children {
    fn insert(&mut self, child: ChildRef) -> usize {
        if self.first.is_none() {
            self.first = Some(child);
            return 0;
        }
        self.rest.get_or_insert_with(Box::default).insert(child) + 1
    }

    /// The key the next `insert` returns.
    fn vacant_key(&self) -> usize {
        match (&self.first, &self.rest) {
            (None, _) => 0,
            (Some(_), None) => 1,
            (Some(_), Some(rest)) => rest.vacant_key() + 1,
        }
    }

    fn remove(&mut self, key: usize) -> Option<ChildRef> {
        match key.checked_sub(1) {
            None => self.first.take(),
            Some(k) => self.rest.as_mut()?.try_remove(k),
        }
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.as_ref().is_none_or(|rest| rest.is_empty())
    }

    /// The children still alive; a child whose last handle is being dropped
    /// right now fails to upgrade and needs no stop.
    fn alive(self) -> impl Iterator<Item = NodeRef> {
        let rest = self
            .rest
            .into_iter()
            .flat_map(|rest| rest.into_iter().map(|(_, child)| child));
        self.first
            .into_iter()
            .chain(rest)
            .filter_map(|child| child.upgrade())
    }

    #[cfg(all(test, not(loom)))]
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |rest| rest.len())
    }
}

impl<T: ?Sized> HasFlag for WithStop<T> {
    fn flag(&self) -> &Flag {
        self.node.flag.flag()
    }
}

impl<T: Host> WithStop<T> {
    /// `value` beside a new root node, which nobody has attached yet.
    pub(crate) fn root(value: T) -> Arc<Self> {
        Arc::new(WithStop {
            node: Node::new(None, None),
            value,
        })
    }

    /// A token observing the node.
    pub(crate) fn token(self: &Arc<Self>) -> StopToken {
        StopToken { node: self.clone() }
    }

    /// Makes the node, a root nobody has attached yet, a child of
    /// `parent`'s: a component's scope, made when the component is built,
    /// attached when it is started. The token becomes the node's link to
    /// its parent.
    pub(crate) fn attach_to(self: &Arc<Self>, parent: StopToken) {
        let parent = parent.node;
        // Lock order parent before child, as everywhere.
        let key = parent.node.flag.with_state(|stopped, state| {
            (!stopped).then(|| state.children.insert(Arc::<WithStop<T>>::downgrade(self)))
        });
        let stopped_parent = key.is_none();
        self.node.flag.with_state(|_, own| {
            debug_assert!(own.parent.is_none(), "attached twice");
            own.parent = Some(parent);
            own.key = key;
        });
        if stopped_parent {
            self.node.stop(StopCause::ParentStopped);
        }
    }
}

impl<T: ?Sized> WithStop<T> {
    /// Stops the node and its descendants with `cause`; `true` if this call
    /// stopped it.
    pub(crate) fn stop(&self, cause: StopCause) -> bool {
        self.node.stop(cause)
    }

    /// Whether the node is stopped: one atomic load.
    pub(crate) fn is_stopped(&self) -> bool {
        self.node.flag.is_set()
    }

    /// The node's flag: a component's shutdown signal is its scope stopped.
    pub(crate) fn stop_flag(&self) -> &Flag {
        self.node.flag.flag()
    }
}

impl<T: ?Sized> core::ops::Deref for WithStop<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl WithStop<dyn Host> {
    fn child(self: &Arc<Self>) -> NodeRef {
        let registered = self.node.flag.with_state(|stopped, state| {
            if stopped {
                return None;
            }
            let key = state.children.vacant_key();
            let child = new_node(Some(self.clone()), Some(key));
            state.children.insert(Arc::downgrade(&child));
            Some(child)
        });
        registered.unwrap_or_else(|| {
            let child = new_node(Some(self.clone()), None);
            child.node.stop(StopCause::ParentStopped);
            child
        })
    }
}

impl Node {
    fn new(parent: Option<NodeRef>, key: Option<usize>) -> Self {
        Self {
            flag: Guarded::new(NodeState {
                cause: None,
                children: Children::default(),
                parent,
                key,
            }),
        }
    }

    fn stop(&self, cause: StopCause) -> bool {
        let Some(children) = self.flag.set(|state| {
            state.cause = Some(cause);
            core::mem::take(&mut state.children)
        }) else {
            return false;
        };
        // One pass per list: each child is stopped as soon as it is upgraded
        // (its memory is hot once), and only non-empty lists of grandchildren
        // wait on the stack.
        let mut pending: Vec<Children> = Vec::new();
        let mut current = children;
        loop {
            for node in current.alive() {
                let grandchildren = node.node.flag.set(|state| {
                    state.cause = Some(StopCause::ParentStopped);
                    core::mem::take(&mut state.children)
                });
                if let Some(grandchildren) = grandchildren {
                    if !grandchildren.is_empty() {
                        pending.push(grandchildren);
                    }
                }
            }
            match pending.pop() {
                Some(next) => current = next,
                None => return true,
            }
        }
    }

    fn cause(&self) -> Option<StopCause> {
        if !self.flag.is_set() {
            return None;
        }
        self.flag.with_state(|_, state| state.cause.clone())
    }

    /// The cause and the parent, read together.
    fn cause_and_parent(&self) -> (Option<StopCause>, Option<NodeRef>) {
        if !self.flag.is_set() {
            return (None, None);
        }
        self.flag
            .with_state(|_, state| (state.cause.clone(), state.parent.clone()))
    }

    /// Takes the link to the parent, for the drop.
    fn take_parent(&mut self) -> (Option<NodeRef>, Option<usize>) {
        self.flag
            .with_state_mut(|state| (state.parent.take(), state.key.take()))
    }

    #[cfg(all(test, not(loom)))]
    fn child_count(&self) -> usize {
        self.flag.with_state(|_, state| state.children.len())
    }
}

impl Drop for Node {
    /// Unregisters from the parent. When this was the parent's last reference
    /// the parent goes too, and so on up the chain: done in a loop, because a
    /// recursive drop of a deep chain of scopes would overflow the stack.
    fn drop(&mut self) {
        let (mut parent, mut key) = self.take_parent();
        while let Some(node) = parent {
            // A stopped parent has drained its children already: skip its
            // lock, which every child of a big fan-out would contend for.
            if let (Some(key), false) = (key, node.node.flag.is_set()) {
                let removed = node.node.flag.with_state(|stopped, state| {
                    // A stopped parent has drained its children (and never
                    // takes new ones), so `key` can only still be ours while
                    // it runs.
                    if stopped {
                        return None;
                    }
                    state.children.remove(key)
                });
                drop(removed); // a dead `Weak`: frees nothing but a count
            }
            // Only the last handle on the parent goes on up the chain. The
            // count cannot read 1 while another handle exists that could
            // look at the parent's link: a handle is made only from another
            // (so the count never fell to 1 in between), except by a stop
            // upgrading its child list, which stops the node and never reads
            // the link. So unlinking here is unseen, and the parent's own
            // drop, from this handle or that stop's, finds no link: no
            // recursion.
            if Arc::strong_count(&node) != 1 {
                return;
            }
            (parent, key) = node
                .node
                .flag
                .with_state(|_, state| (state.parent.take(), state.key.take()));
        }
    }
}

/// The handle that stops a node of the stop tree.
///
/// Clones stop the same node. Dropping every `StopSource` does not stop
/// anything; the node lives as long as any source, token or child of it does.
///
/// # Example
///
/// ```
/// use lifecycle::{StopCause, StopSource};
/// # futures_executor::block_on(async {
/// let root = StopSource::new();
/// let worker = root.token().child(); // a scope for one worker
///
/// assert!(worker.stop()); // the child stops alone...
/// assert!(!root.is_stopped()); // ...never its parent
///
/// let other = root.token().child();
/// let token = other.token();
/// root.stop();
/// token.stopped().await; // stopping the parent stops every descendant
/// assert!(matches!(token.cause(), Some(StopCause::ParentStopped)));
/// # });
/// ```
#[derive(Clone)]
pub struct StopSource {
    node: NodeRef,
}

impl StopSource {
    /// A new root of a stop tree.
    pub fn new() -> Self {
        Self {
            node: new_node(None, None),
        }
    }

    /// A new root sharing its allocation with `value`: the source, and a
    /// handle on the value (which keeps the node alive, as a token does).
    pub(crate) fn root_with<T: Host>(value: T) -> (StopSource, Arc<WithStop<T>>) {
        let shared = WithStop::root(value);
        (
            StopSource {
                node: shared.clone(),
            },
            shared,
        )
    }

    /// A token observing this node.
    pub fn token(&self) -> StopToken {
        StopToken {
            node: self.node.clone(),
        }
    }

    /// Stops this node and its descendants with [`StopCause::Requested`].
    /// Returns `true` if this call stopped it.
    ///
    /// # Example
    ///
    /// A shutdown requested twice stops the tree once; a child that had
    /// stopped on its own keeps its own cause:
    ///
    /// ```
    /// use lifecycle::{StopCause, StopSource};
    ///
    /// let shutdown = StopSource::new();
    /// let http = shutdown.child();
    /// let cache = shutdown.child();
    /// cache.stop_with(StopCause::Timeout); // it gave up earlier
    ///
    /// assert!(shutdown.stop(), "this call stopped it");
    /// assert!(!shutdown.stop(), "a second request changes nothing");
    /// assert!(matches!(shutdown.token().cause(), Some(StopCause::Requested)));
    /// assert!(matches!(http.token().cause(), Some(StopCause::ParentStopped)));
    /// assert!(matches!(cache.token().cause(), Some(StopCause::Timeout)), "the first cause stays");
    /// ```
    pub fn stop(&self) -> bool {
        self.node.stop(StopCause::Requested)
    }

    /// Stops this node and its descendants with `cause`. Returns `true` if this
    /// call stopped it, `false` if it was stopped already (the first cause
    /// stays).
    ///
    /// # Example
    ///
    /// A deadline stops the node with [`StopCause::Timeout`]; a later stop
    /// changes nothing:
    ///
    /// ```
    /// use lifecycle::{StopCause, StopSource};
    ///
    /// let source = StopSource::new();
    /// assert!(source.stop_with(StopCause::Timeout));
    /// assert!(!source.stop(), "stopped already");
    /// assert!(matches!(source.token().cause(), Some(StopCause::Timeout)));
    /// ```
    pub fn stop_with(&self, cause: StopCause) -> bool {
        self.node.stop(cause)
    }

    /// Whether this node is stopped: one atomic load.
    #[inline]
    pub fn is_stopped(&self) -> bool {
        self.node.is_stopped()
    }

    /// A new child of this node: stopped when this node is.
    ///
    /// # Example
    ///
    /// A child stops with its parent, and a child made under a stopped parent
    /// is born stopped:
    ///
    /// ```
    /// use lifecycle::StopSource;
    ///
    /// let parent = StopSource::new();
    /// let child = parent.child();
    /// parent.stop();
    /// assert!(child.is_stopped());
    /// assert!(parent.child().is_stopped(), "born stopped");
    /// ```
    pub fn child(&self) -> StopSource {
        StopSource {
            node: self.node.child(),
        }
    }
}

impl Default for StopSource {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for StopSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopSource")
            .field("cause", &self.node.node.cause())
            .finish()
    }
}

/// Observes a node of the stop tree: whether and why it stopped, and a future
/// that completes when it does.
///
/// # Example
///
/// ```
/// use lifecycle::StopSource;
/// # futures_executor::block_on(async {
/// let source = StopSource::new();
/// let token = source.token();
/// assert!(!token.is_stopped());
///
/// let stopped = token.clone().stopped_owned(); // 'static: can move into a task
/// source.stop();
/// stopped.await;
/// assert!(token.is_stopped());
/// # });
/// ```
#[derive(Clone)]
pub struct StopToken {
    node: NodeRef,
}

impl StopToken {
    /// Whether this node is stopped: one atomic load with `Acquire` ordering,
    /// so what the stopper wrote before stopping is visible after `true`.
    #[inline]
    pub fn is_stopped(&self) -> bool {
        self.node.is_stopped()
    }

    /// Why this node stopped; `None` while it runs.
    ///
    /// # Example
    ///
    /// A child stopped by its parent gives the parent's stop as its cause,
    /// not the parent's own cause:
    ///
    /// ```
    /// use lifecycle::{StopCause, StopSource};
    ///
    /// let root = StopSource::new();
    /// let child = root.child();
    /// assert!(child.token().cause().is_none(), "running: no cause");
    /// root.stop();
    /// assert!(matches!(root.token().cause(), Some(StopCause::Requested)));
    /// assert!(matches!(child.token().cause(), Some(StopCause::ParentStopped)));
    /// ```
    pub fn cause(&self) -> Option<StopCause> {
        self.node.node.cause()
    }

    /// The cause at the top of the chain of [`StopCause::ParentStopped`]: why
    /// the ancestor that started this stop stopped.
    ///
    /// # Example
    ///
    /// A fatal error stops the root; two levels down, the cause is the
    /// parent's stop and the origin is the error:
    ///
    /// ```
    /// use lifecycle::{FatalError, StopCause, StopSource};
    ///
    /// let root = StopSource::new();
    /// let grandchild = root.child().child();
    /// let error = FatalError::msg("disk full");
    /// root.stop_with(StopCause::Fatal(error.clone()));
    ///
    /// let token = grandchild.token();
    /// assert!(matches!(token.cause(), Some(StopCause::ParentStopped)));
    /// let origin = token.origin_cause();
    /// let fatal = origin.as_ref().and_then(StopCause::fatal_error);
    /// assert!(fatal.is_some_and(|fatal| fatal.same_as(&error)));
    /// ```
    pub fn origin_cause(&self) -> Option<StopCause> {
        let (mut cause, mut parent) = self.node.node.cause_and_parent();
        while let (Some(StopCause::ParentStopped), Some(node)) = (&cause, parent) {
            (cause, parent) = node.node.cause_and_parent();
        }
        cause
    }

    /// Completes once this node is stopped; at once if it already is.
    /// Cancel-safe: dropping it unregisters the waiter.
    ///
    /// # Example
    ///
    /// A worker thread serves until its token stops; once it has, a wait
    /// completes at once:
    ///
    /// ```
    /// use futures_util::FutureExt;
    /// use lifecycle::StopSource;
    ///
    /// let source = StopSource::new();
    /// let token = source.token();
    /// assert!(token.stopped().now_or_never().is_none(), "running: the wait is pending");
    ///
    /// let worker = std::thread::spawn({
    ///     let token = token.clone();
    ///     move || {
    ///         futures_executor::block_on(token.stopped()); // serve until told to stop
    ///         "drained"
    ///     }
    /// });
    /// source.stop();
    /// assert_eq!(worker.join().expect("the worker does not panic"), "drained");
    /// assert_eq!(token.stopped().now_or_never(), Some(()), "stopped: no wait");
    /// ```
    pub fn stopped(&self) -> Stopped<'_> {
        Stopped(Waiter::new(&*self.node))
    }

    /// As [`stopped`](StopToken::stopped), owning the token: the future is
    /// `'static`.
    ///
    /// # Example
    ///
    /// The future borrows nothing, so another thread can wait on it:
    ///
    /// ```
    /// use lifecycle::StopSource;
    ///
    /// let source = StopSource::new();
    /// let stopped = source.token().stopped_owned();
    /// let waiter = std::thread::spawn(move || futures_executor::block_on(stopped));
    /// source.stop();
    /// waiter.join().expect("the waiter returns once the node stops");
    /// ```
    pub fn stopped_owned(self) -> StoppedOwned {
        StoppedOwned(Waiter::new(self.node))
    }

    /// Wakes `waker` once when this node stops, from the task that stops it
    /// (at once, from this call, if it is stopped already). Dropping the
    /// returned guard before then cancels the wakeup.
    ///
    /// This is a stop callback without a task: a waker made from an
    /// `Arc<impl Wake>` runs its `wake` synchronously, after the node's lock
    /// is released, so it may stop or set other things but should be quick.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::task::{Wake, Waker};
    /// use lifecycle::{Latch, StopSource};
    ///
    /// struct SetLatch(Latch);
    /// impl Wake for SetLatch {
    ///     fn wake(self: Arc<Self>) {
    ///         self.0.set();
    ///     }
    /// }
    ///
    /// let source = StopSource::new();
    /// let mirrored = Latch::new();
    /// let waker = Waker::from(Arc::new(SetLatch(mirrored.clone())));
    /// let _guard = source.token().wake_on_stop(&waker);
    /// source.stop();
    /// assert!(mirrored.is_set());
    /// ```
    pub fn wake_on_stop(&self, waker: &Waker) -> WakeOnStop {
        let mut waiter = Waiter::new(self.node.clone());
        if waiter.poll(&mut Context::from_waker(waker)).is_ready() {
            waker.wake_by_ref();
        }
        WakeOnStop(waiter)
    }

    /// A new child of this node, with the source that stops it.
    ///
    /// # Example
    ///
    /// A component that holds only a token cannot stop its scope, but it can
    /// make a sub-scope of its own and stop that:
    ///
    /// ```
    /// use lifecycle::{StopCause, StopSource};
    ///
    /// let root = StopSource::new();
    /// let token = root.token(); // what the component was given
    /// let sub = token.child();
    /// assert!(sub.stop());
    /// assert!(matches!(sub.token().cause(), Some(StopCause::Requested)));
    /// assert!(!token.is_stopped(), "the parent runs on");
    /// ```
    pub fn child(&self) -> StopSource {
        StopSource {
            node: self.node.child(),
        }
    }

    /// Whether both tokens observe the same node.
    ///
    /// # Example
    ///
    /// Tokens made from one source observe one node; a child's does not:
    ///
    /// ```
    /// use lifecycle::StopSource;
    ///
    /// let source = StopSource::new();
    /// let token = source.token();
    /// assert!(token.same_as(&source.token()), "two tokens of one node");
    /// assert!(!token.same_as(&token.child().token()), "a child is another node");
    /// ```
    pub fn same_as(&self, other: &StopToken) -> bool {
        core::ptr::addr_eq(Arc::as_ptr(&self.node), Arc::as_ptr(&other.node))
    }
}

impl From<&StopSource> for StopToken {
    fn from(source: &StopSource) -> Self {
        source.token()
    }
}

impl fmt::Debug for StopToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopToken")
            .field("cause", &self.node.node.cause())
            .finish()
    }
}

/// Guard returned by [`StopToken::wake_on_stop`]: dropping it cancels the
/// wakeup if the node has not stopped yet.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::task::{Wake, Waker};
/// use lifecycle::{Latch, StopSource};
///
/// struct SetLatch(Latch);
/// impl Wake for SetLatch {
///     fn wake(self: Arc<Self>) {
///         self.0.set();
///     }
/// }
///
/// let source = StopSource::new();
/// let (kept, cancelled) = (Latch::new(), Latch::new());
/// let guard = source.token().wake_on_stop(&Waker::from(Arc::new(SetLatch(kept.clone()))));
/// let dropped = source.token().wake_on_stop(&Waker::from(Arc::new(SetLatch(cancelled.clone()))));
/// drop(dropped); // cancels its wakeup
///
/// source.stop();
/// assert!(kept.is_set(), "the live guard's waker ran");
/// assert!(!cancelled.is_set(), "the dropped guard's did not");
/// drop(guard);
/// ```
#[must_use = "dropping the guard cancels the wakeup"]
pub struct WakeOnStop(Waiter<NodeRef>);

impl fmt::Debug for WakeOnStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let is_stopped = self.0.holder().is_stopped();
        f.debug_struct("WakeOnStop")
            .field("is_stopped", &is_stopped)
            .finish()
    }
}

/// Future returned by [`StopToken::stopped`].
///
/// It borrows the token, so it suits waiting in the task that holds the
/// token, typically raced against the work so that a stop cuts it short.
/// Dropping it unregisters its waker.
///
/// # Example
///
/// ```
/// use std::pin::pin;
/// use futures_util::future::{select, Either};
/// use lifecycle::StopSource;
/// # futures_executor::block_on(async {
/// let source = StopSource::new();
/// let token = source.token();
///
/// source.stop(); // say, the process is shutting down
/// let request = pin!(std::future::pending::<u32>()); // a request that never ends
/// match select(request, token.stopped()).await {
///     Either::Left((answer, _)) => panic!("answered {answer} after the stop"),
///     Either::Right(((), _request)) => {} // cut short: `_request` is dropped here
/// }
/// assert!(token.is_stopped());
/// # });
/// ```
#[must_use = "futures do nothing unless awaited"]
pub struct Stopped<'a>(Waiter<&'a WithStop<dyn Host>>);

/// Future returned by [`StopToken::stopped_owned`].
///
/// It owns its token, so it is `'static` and `Send`: it can move into a
/// spawned task or another thread.
///
/// # Example
///
/// ```
/// use lifecycle::StopSource;
///
/// let source = StopSource::new();
/// let stopped = source.token().stopped_owned(); // owns a token of its own
/// let worker = std::thread::spawn(move || {
///     futures_executor::block_on(stopped); // serve until told to stop
///     "cleaned up"
/// });
///
/// source.stop();
/// assert_eq!(worker.join().expect("the worker does not panic"), "cleaned up");
/// ```
#[must_use = "futures do nothing unless awaited"]
pub struct StoppedOwned(Waiter<NodeRef>);

impl Future for Stopped<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().0.poll(cx)
    }
}

impl Future for StoppedOwned {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().0.poll(cx)
    }
}

impl fmt::Debug for Stopped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let is_stopped = self.0.holder().is_stopped();
        f.debug_struct("Stopped")
            .field("is_stopped", &is_stopped)
            .finish()
    }
}

impl fmt::Debug for StoppedOwned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let is_stopped = self.0.holder().is_stopped();
        f.debug_struct("StoppedOwned")
            .field("is_stopped", &is_stopped)
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::CountingWaker;
    use alloc::boxed::Box;
    use alloc::string::ToString;
    use futures_util::FutureExt;

    fn cause_name(token: &StopToken) -> Option<&'static str> {
        token.cause().map(|cause| match cause {
            StopCause::Requested => "requested",
            StopCause::ParentStopped => "parent",
            StopCause::Fatal(_) => "fatal",
            StopCause::Timeout => "timeout",
            StopCause::ServiceStopped => "service",
        })
    }

    #[test]
    fn stopping_a_parent_stops_every_descendant() {
        let root = StopSource::new();
        let child = root.child();
        let grandchild = child.child();
        let sibling = root.token().child();
        assert!(root.stop_with(StopCause::Timeout));
        for token in [child.token(), grandchild.token(), sibling.token()] {
            assert!(token.is_stopped());
            assert_eq!(cause_name(&token), Some("parent"));
            assert_eq!(
                token
                    .origin_cause()
                    .map(|c| matches!(c, StopCause::Timeout)),
                Some(true)
            );
        }
    }

    #[test]
    fn stopping_a_child_never_stops_its_parent_or_siblings() {
        let root = StopSource::new();
        let child = root.child();
        let sibling = root.child();
        assert!(child.stop());
        assert!(!root.is_stopped());
        assert!(!sibling.is_stopped());
        assert_eq!(cause_name(&child.token()), Some("requested"));
    }

    #[test]
    fn the_first_cause_wins() {
        let root = StopSource::new();
        let child = root.child();
        assert!(child.stop_with(StopCause::Fatal(FatalError::msg("boom"))));
        assert!(!child.stop());
        assert!(root.stop());
        assert!(!root.stop_with(StopCause::Timeout));
        assert_eq!(cause_name(&child.token()), Some("fatal"));
        assert_eq!(cause_name(&root.token()), Some("requested"));
        assert_eq!(
            child
                .token()
                .cause()
                .and_then(|c| c.fatal_error().map(|e| e.to_string())),
            Some("boom".into())
        );
    }

    #[test]
    fn a_child_of_a_stopped_parent_is_born_stopped() {
        let root = StopSource::new();
        root.stop();
        let child = root.token().child();
        assert!(child.is_stopped());
        assert_eq!(cause_name(&child.token()), Some("parent"));
        assert_eq!(child.token().stopped().now_or_never(), Some(()));
    }

    #[test]
    fn stopped_wakes_waiters_at_every_level() {
        let root = StopSource::new();
        let child = root.child();
        let tokens = [root.token(), child.token(), child.child().token()];
        let (counter, waker) = CountingWaker::new();
        let mut cx = Context::from_waker(&waker);
        let mut waits: alloc::vec::Vec<_> = tokens.iter().map(|t| Box::pin(t.stopped())).collect();
        for wait in &mut waits {
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        root.stop();
        assert_eq!(counter.wakes(), 3);
        for wait in &mut waits {
            assert!(wait.as_mut().poll(&mut cx).is_ready());
        }
    }

    #[test]
    fn dropped_children_are_released_by_their_parent() {
        let root = StopSource::new();
        let rounds = if cfg!(miri) { 1_000 } else { 1_000_000 };
        for _ in 0..rounds {
            let child = root.child();
            let grandchild = child.token().child();
            drop((child, grandchild));
        }
        assert_eq!(root.node.node.child_count(), 0);
        // A child kept alive stays registered and is still stopped.
        let kept = root.child();
        assert_eq!(root.node.node.child_count(), 1);
        root.stop();
        assert!(kept.is_stopped());
    }

    #[test]
    fn a_child_dropped_while_waited_on_unregisters_everything() {
        let root = StopSource::new();
        let child = root.child();
        let (_, waker) = CountingWaker::new();
        let mut wait = Box::pin(child.token().stopped_owned());
        assert!(wait
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        drop(child);
        assert_eq!(
            root.node.node.child_count(),
            1,
            "the waiter keeps the child alive"
        );
        drop(wait);
        assert_eq!(root.node.node.child_count(), 0);
    }

    #[test]
    fn a_deep_chain_stops_without_recursion() {
        let root = StopSource::new();
        let depth = if cfg!(miri) { 100 } else { 10_000 };
        let mut chain = alloc::vec::Vec::with_capacity(depth);
        let mut last = root.clone();
        for _ in 0..depth {
            last = last.child();
            chain.push(last.clone());
        }
        root.stop();
        assert!(last.is_stopped());
        drop((root, chain));
        // The leaf holds the only reference to the whole chain now.
        drop(last);
    }

    #[test]
    fn concurrent_stops_agree_on_one_cause() {
        let root = StopSource::new();
        let child = root.child();
        let stoppers: alloc::vec::Vec<_> = (0..4)
            .map(|i| {
                let (root, child) = (root.clone(), child.clone());
                std::thread::spawn(move || {
                    if i % 2 == 0 {
                        root.stop()
                    } else {
                        child.stop_with(StopCause::Timeout)
                    }
                })
            })
            .collect();
        let won: usize = stoppers
            .into_iter()
            .map(|t| t.join().unwrap() as usize)
            .sum();
        assert!((1..=2).contains(&won));
        assert!(child.is_stopped() && root.is_stopped());
        assert!(matches!(
            child.token().cause(),
            Some(StopCause::ParentStopped | StopCause::Timeout)
        ));
    }
}
