//! [`Scope`]: what a component is started in.

use core::fmt;

use crate::fatal::{FatalError, FatalSlot, Reported};
use crate::runtime::SharedRuntime;
use crate::stop::StopToken;

/// Where a component runs: the runtime to spawn on, the stop token that
/// tells it to shut down, and the fatal slot its supervising party reads.
///
/// The Rust form of Go's signaler context: `start` receives one, stops when
/// its token stops, and reports a fatal error with [`throw`](Scope::throw)
/// instead of killing its goroutine.
///
/// # Example
///
/// ```
/// use lifecycle::{FatalError, FatalSlot, Scope, StopSource};
/// # use lifecycle::{BoxFuture, Instant, Runtime};
/// # use std::{sync::Arc, time::Duration};
/// # struct Nothing;
/// # impl Runtime for Nothing {
/// #     fn spawn_detached(&self, _: BoxFuture) {}
/// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
/// #     fn now(&self) -> Instant { Instant::default() }
/// # }
/// # let runtime = Arc::new(Nothing);
/// let stop = StopSource::new();
/// let fatal = FatalSlot::new();
/// let scope = Scope::new(runtime, stop.token(), fatal.clone());
///
/// scope.throw(FatalError::msg("lost the database"));
/// assert_eq!(fatal.take().unwrap().to_string(), "lost the database");
/// ```
#[derive(Clone)]
pub struct Scope {
    runtime: SharedRuntime,
    token: StopToken,
    fatal: FatalSlot,
}

impl Scope {
    /// A scope on `runtime`, stopped by `token`, reporting into `fatal`.
    pub fn new(runtime: SharedRuntime, token: StopToken, fatal: FatalSlot) -> Self {
        Self {
            runtime,
            token,
            fatal,
        }
    }

    /// The runtime to spawn tasks and timers on.
    pub fn runtime(&self) -> &SharedRuntime {
        &self.runtime
    }

    /// The token that tells the component to shut down.
    pub fn token(&self) -> &StopToken {
        &self.token
    }

    /// The slot fatal errors are reported into.
    pub fn fatal(&self) -> &FatalSlot {
        &self.fatal
    }

    /// Reports a fatal error to the supervising party: the scope's first is
    /// delivered, later ones go to the slot's hook.
    ///
    /// # Example
    ///
    /// Any error converts; the answer says whether this one is the scope's
    /// verdict:
    ///
    /// ```
    /// use lifecycle::{FatalError, FatalHook, FatalSlot, Reported, Scope, StopSource};
    /// # use lifecycle::{BoxFuture, Instant, Runtime};
    /// # use std::{sync::Arc, time::Duration};
    /// # struct Nothing;
    /// # impl Runtime for Nothing {
    /// #     fn spawn_detached(&self, _: BoxFuture) {}
    /// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
    /// #     fn now(&self) -> Instant { Instant::default() }
    /// # }
    /// # let runtime = Arc::new(Nothing);
    /// let fatal = FatalSlot::with_hook(FatalHook::new(|_| {}));
    /// let scope = Scope::new(runtime, StopSource::new().token(), fatal.clone());
    ///
    /// let disk = std::io::Error::other("disk full");
    /// assert_eq!(scope.throw(disk), Reported::First);
    /// assert_eq!(scope.throw(FatalError::msg("write failed")), Reported::Unhandled);
    /// assert_eq!(fatal.take().unwrap().to_string(), "disk full");
    /// assert_eq!(fatal.unhandled_count(), 1);
    /// ```
    pub fn throw(&self, error: impl Into<FatalError>) -> Reported {
        self.fatal.report(error.into())
    }

    /// The runtime, the token and the fatal slot, by value.
    ///
    /// # Example
    ///
    /// The parts are the scope's own: its token observes the same node, and its
    /// slot is the same slot:
    ///
    /// ```
    /// use lifecycle::{FatalError, FatalSlot, Scope, StopSource};
    /// # use lifecycle::{BoxFuture, Instant, Runtime};
    /// # use std::{sync::Arc, time::Duration};
    /// # struct Nothing;
    /// # impl Runtime for Nothing {
    /// #     fn spawn_detached(&self, _: BoxFuture) {}
    /// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
    /// #     fn now(&self) -> Instant { Instant::default() }
    /// # }
    /// # let runtime = Arc::new(Nothing);
    /// let stop = StopSource::new();
    /// let fatal = FatalSlot::new();
    /// let scope = Scope::new(runtime, stop.token(), fatal.clone());
    ///
    /// let (_runtime, token, slot) = scope.into_parts();
    /// assert!(token.same_as(&stop.token()));
    /// slot.report(FatalError::msg("lost the database"));
    /// assert_eq!(fatal.take().unwrap().to_string(), "lost the database");
    /// ```
    pub fn into_parts(self) -> (SharedRuntime, StopToken, FatalSlot) {
        (self.runtime, self.token, self.fatal)
    }

    /// The same scope with another stop token (typically a child of this
    /// one's).
    ///
    /// # Example
    ///
    /// A sub-task that can be stopped on its own, reporting into the same
    /// slot:
    ///
    /// ```
    /// use lifecycle::{FatalError, FatalSlot, Scope, StopSource};
    /// # use lifecycle::{BoxFuture, Instant, Runtime};
    /// # use std::{sync::Arc, time::Duration};
    /// # struct Nothing;
    /// # impl Runtime for Nothing {
    /// #     fn spawn_detached(&self, _: BoxFuture) {}
    /// #     fn sleep(&self, _: Duration) -> BoxFuture { Box::pin(std::future::pending()) }
    /// #     fn now(&self) -> Instant { Instant::default() }
    /// # }
    /// # let runtime = Arc::new(Nothing);
    /// let parent = StopSource::new();
    /// let fatal = FatalSlot::new();
    /// let scope = Scope::new(runtime, parent.token(), fatal.clone());
    ///
    /// let refresher = scope.token().child();
    /// let sub = scope.with_token(refresher.token());
    /// refresher.stop(); // the refresher alone
    /// assert!(sub.token().is_stopped() && !scope.token().is_stopped());
    ///
    /// sub.throw(FatalError::msg("token refresh failed"));
    /// assert_eq!(fatal.take().unwrap().to_string(), "token refresh failed");
    /// ```
    pub fn with_token(&self, token: StopToken) -> Scope {
        Scope {
            runtime: self.runtime.clone(),
            token,
            fatal: self.fatal.clone(),
        }
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("token", &self.token)
            .field("fatal", &self.fatal)
            .finish_non_exhaustive()
    }
}
