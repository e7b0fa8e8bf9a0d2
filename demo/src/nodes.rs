//! The five nodes of the service, written once for every executor.
//!
//! Each node is a [`ComponentManager`] built by a factory (called again on
//! every restart). Workers only use what they are given: the runtime of
//! their [`WorkerContext`] to sleep and spawn, and its stop token to know
//! when to stop. Nothing here names an executor.

use std::fmt;
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_net::{TcpListener, TcpStream};
use futures_util::future::{select, Either};
use futures_util::{AsyncReadExt, AsyncWriteExt};
use lifecycle::{
    ComponentManager, FatalError, JoinError, JoinHandle, Node, RestartPolicy, RuntimeExt,
    StopToken, SupervisorBuilder, Verdict, WorkerContext,
};

use crate::options::Options;

/// How often heartbeat beats.
const BEAT_EVERY: Duration = Duration::from_secs(1);
/// How long each flaky instance runs before it fails (`--help` says 3 s).
const FLAKY_RUNS_FOR: Duration = Duration::from_secs(3);
/// How long store may take to stop before the supervisor aborts it
/// (`--help` says 10 s). Long, so that a test can send a second SIGINT
/// during a slow stop well before it runs out, even on a loaded machine.
const STORE_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the nodes share: the settings config loads, and the counters store
/// keeps, echo updates and heartbeat reports.
#[derive(Default)]
struct Shared {
    /// Set once by config; the nodes that depend on config start after it
    /// completed, so they always find it set.
    settings: OnceLock<Settings>,
    /// Connections echo accepted.
    connections: AtomicU64,
    /// Bytes echo sent back.
    bytes: AtomicU64,
}

impl Shared {
    /// The settings config loaded.
    fn settings(&self) -> Result<&Settings, FatalError> {
        // Unreachable through the graph; an error rather than a panic all
        // the same, should someone rewire the nodes.
        self.settings.get().ok_or_else(|| {
            FatalError::msg("the settings are not loaded: does the node depend on config?")
        })
    }

    /// One line with the counters.
    fn counters(&self) -> String {
        // Relaxed: the counters are statistics; nothing is ordered by them.
        let connections = self.connections.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let plural = if connections == 1 { "" } else { "s" };
        format!("{connections} connection{plural}, {bytes} bytes echoed")
    }
}

/// What config loads. In a real service it would come from a file or the
/// environment; here, from the command line.
#[derive(Clone, Debug)]
struct Settings {
    /// echo's port; 0 for any free one.
    port: u16,
    /// When heartbeat fails with [`LostTheBeat`], if ever.
    spin_halt_after: Option<Duration>,
    /// How long store takes to flush when it stops.
    stop_delay: Duration,
}

/// The service's graph; the caller adds the event hook and builds it.
///
/// ```text
/// config ──▶ store ──▶ echo ──▶ heartbeat
///               └───▶ flaky
/// ```
///
/// config completes once loaded, which satisfies store (a oneshot, as in
/// systemd). The stop runs backwards: heartbeat and flaky, then echo, then
/// store.
pub(crate) fn service(options: &Options) -> SupervisorBuilder {
    let shared = Arc::new(Shared::default());
    let settings = Settings {
        port: options.port,
        spin_halt_after: options.spin_halt_after,
        stop_delay: options.stop_delay,
    };
    lifecycle::Supervisor::builder()
        .node(config(settings, shared.clone()))
        .node(store(shared.clone()))
        .node(echo(shared.clone()))
        .node(heartbeat(shared.clone()))
        .node(flaky())
}

/// A oneshot: loads the settings, reports ready and completes.
fn config(settings: Settings, shared: Arc<Shared>) -> Node {
    Node::new("config", move || {
        let (settings, shared) = (settings.clone(), shared.clone());
        Ok(ComponentManager::builder()
            .add_worker(move |ctx, ready| {
                let (settings, shared) = (settings.clone(), shared.clone());
                async move {
                    // Stands for reading a file.
                    ctx.runtime().sleep(Duration::from_millis(100)).await;
                    println!("config: loaded (port {})", settings.port);
                    // Set once: config is never restarted (a clean end is
                    // final for a node that is not `permanent`).
                    let _ = shared.settings.set(settings);
                    ready.ready();
                    Ok(()) // done: its dependents keep running
                }
            })
            .build())
    })
}

/// Opens the counters, keeps them while the service runs, and flushes
/// them when it stops (slowly with `--stop-delay`).
fn store(shared: Arc<Shared>) -> Node {
    Node::new("store", move || {
        let shared = shared.clone();
        Ok(ComponentManager::builder()
            .add_worker(move |ctx, ready| {
                let shared = shared.clone();
                async move {
                    let stop_delay = shared.settings()?.stop_delay;
                    println!("store: opened");
                    ready.ready();
                    ctx.stopped().await;
                    println!("store: flushing ({})", shared.counters());
                    ctx.runtime().sleep(stop_delay).await;
                    println!("store: stopped");
                    Ok(())
                }
            })
            .build())
    })
    .depends_on(["config"])
    .stop_timeout(STORE_STOP_TIMEOUT)
}

/// A TCP echo server on 127.0.0.1, ready once bound. A failure (the port
/// is taken, say) is restarted under the default policy; once its budget
/// is spent, the service shuts down (exit code 1).
fn echo(shared: Arc<Shared>) -> Node {
    Node::new("echo", move || {
        let shared = shared.clone();
        Ok(ComponentManager::builder()
            .add_worker(move |ctx, ready| {
                let shared = shared.clone();
                async move {
                    let port = shared.settings()?.port;
                    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
                        .await
                        .map_err(|error| {
                            FatalError::msg(format!("cannot listen on 127.0.0.1:{port}: {error}"))
                        })?;
                    let address = listener.local_addr().map_err(FatalError::new)?;
                    println!("echo: listening on {address}");
                    ready.ready();
                    serve(&ctx, &listener, &shared).await?;
                    println!("echo: stopped");
                    Ok(())
                }
            })
            .build())
    })
    .depends_on(["store"])
    .policy(RestartPolicy::default())
}

/// Accepts connections until the node is stopped, each served by a task
/// of its own; returns once every connection is closed.
async fn serve(
    ctx: &WorkerContext,
    listener: &TcpListener,
    shared: &Arc<Shared>,
) -> Result<(), FatalError> {
    let mut connections = Vec::new();
    while let Some(accepted) = until_stopped(ctx.token(), listener.accept()).await {
        let (stream, _peer) = accepted
            .map_err(|error| FatalError::msg(format!("cannot accept a connection: {error}")))?;
        shared.connections.fetch_add(1, Ordering::Relaxed);
        // Join the connections that have closed (at once: they are
        // finished), so the list stays short.
        let (closed, open): (Vec<JoinHandle<()>>, _) = connections
            .into_iter()
            .partition(|connection: &JoinHandle<()>| connection.is_finished());
        connections = open;
        for connection in closed {
            report_panic(connection.await);
        }
        connections.push(ctx.runtime().spawn(echo_back(
            stream,
            ctx.token().clone(),
            shared.clone(),
        )));
    }
    // Each connection watches the same token, so these end promptly.
    for connection in connections {
        report_panic(connection.await);
    }
    Ok(())
}

/// A connection's handler that panicked ended that connection only, like a
/// read error, but it is a bug: say so rather than lose it.
fn report_panic(outcome: Result<(), JoinError>) {
    if let Err(JoinError::Panicked(message)) = outcome {
        eprintln!("echo: a connection's handler panicked: {message}");
    }
}

/// Sends back what a client sends until it hangs up or the node stops.
async fn echo_back(mut stream: TcpStream, stop: StopToken, shared: Arc<Shared>) {
    let mut buffer = [0; 4096];
    // A read or write error only ends this connection.
    while let Some(Ok(read)) = until_stopped(&stop, stream.read(&mut buffer)).await {
        if read == 0 || stream.write_all(&buffer[..read]).await.is_err() {
            break;
        }
        shared.bytes.fetch_add(read as u64, Ordering::Relaxed);
    }
}

/// Beats every second with the counters. With `--spin-halt-after`, a second
/// worker fails after that long with [`LostTheBeat`], which the node's
/// handler answers with a spin-halt.
fn heartbeat(shared: Arc<Shared>) -> Node {
    Node::new("heartbeat", move || {
        // The factory runs once config has completed: the settings are in.
        let spin_halt_after = shared.settings()?.spin_halt_after;
        let shared = shared.clone();
        let mut workers = ComponentManager::builder().add_worker(move |ctx, ready| {
            let shared = shared.clone();
            async move {
                println!("heartbeat: started");
                ready.ready();
                let mut beat = 0;
                // A beat each time the wait for a stop times out.
                while ctx
                    .runtime()
                    .timeout(BEAT_EVERY, ctx.stopped())
                    .await
                    .is_err()
                {
                    beat += 1;
                    println!("heartbeat: beat {beat} ({})", shared.counters());
                }
                println!("heartbeat: stopped");
                Ok(())
            }
        });
        if let Some(after) = spin_halt_after {
            // A manager's first fatal error stops its other workers.
            workers = workers.add_worker(move |ctx, ready| async move {
                ready.ready();
                match ctx.runtime().timeout(after, ctx.stopped()).await {
                    Ok(()) => Ok(()),
                    Err(_) => Err(FatalError::new(LostTheBeat(after))),
                }
            });
        }
        Ok(workers.build())
    })
    .depends_on(["echo"])
    .handler(|failure| {
        if failure.error.downcast_ref::<LostTheBeat>().is_some() {
            Verdict::SpinHalt
        } else {
            Verdict::Restart
        }
    })
}

/// The fault `--spin-halt-after` injects into heartbeat.
#[derive(Debug)]
struct LostTheBeat(Duration);

impl fmt::Display for LostTheBeat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lost the beat after {:?} (--spin-halt-after)", self.0)
    }
}

impl std::error::Error for LostTheBeat {}

/// Fails every few seconds; restarted with a growing backoff. Its failures
/// concern it alone: nothing depends on it.
fn flaky() -> Node {
    Node::new("flaky", || {
        Ok(ComponentManager::builder()
            .add_worker(|ctx, ready| async move {
                println!("flaky: started");
                ready.ready();
                match ctx.runtime().timeout(FLAKY_RUNS_FOR, ctx.stopped()).await {
                    Ok(()) => {
                        println!("flaky: stopped");
                        Ok(())
                    }
                    Err(_) => Err(FatalError::msg("simulated failure")),
                }
            })
            .build())
    })
    .depends_on(["store"])
    // 0.5 s, 1 s, 2 s, then 4 s between an instance's failure and the next.
    // A crash loop faster than 20 restarts a minute gives up on flaky alone
    // (the `Stop` escalation) and leaves the rest running.
    .policy(
        RestartPolicy::default()
            .backoff(Duration::from_millis(500), Duration::from_secs(4))
            .intensity(20, Duration::from_secs(60)),
    )
    .on_exhausted(Verdict::Stop)
}

/// Runs `work` until `stop` is stopped: `None` if the stop came first.
async fn until_stopped<T>(stop: &StopToken, work: impl Future<Output = T>) -> Option<T> {
    match select(pin!(work), stop.stopped()).await {
        Either::Left((done, _)) => Some(done),
        Either::Right(_) => None,
    }
}
