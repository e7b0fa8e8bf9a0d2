//! `lifecycle-demo`: a worker with a ready latch and a stop token, on tokio.
//!
//! The worker runs in its own stop scope (a child of the demo's root scope),
//! reports ready through a latch, beats until the root is stopped (after
//! `--seconds`, or on Ctrl-C), and is joined before the demo exits.

use std::process::ExitCode;
use std::time::Duration;

use lifecycle::{Latch, RuntimeExt, SharedRuntime, StopSource, StopToken};

const USAGE: &str = "\
lifecycle-demo: a worker with a ready latch and a stop token, on tokio

USAGE:
    lifecycle-demo [--seconds N]

OPTIONS:
    --seconds N    stop the worker after N seconds (default 2); Ctrl-C stops it sooner
    -h, --help     print this help
";

struct Options {
    run_for: Duration,
}

fn parse_options() -> Result<Option<Options>, String> {
    let mut options = Options {
        run_for: Duration::from_secs(2),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--seconds" => {
                let value = args.next().ok_or("--seconds needs a value")?;
                let seconds: f64 = value
                    .parse()
                    .map_err(|_| format!("--seconds: `{value}` is not a number"))?;
                options.run_for = Duration::try_from_secs_f64(seconds)
                    .map_err(|_| format!("--seconds: `{value}` is not a valid duration"))?;
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Some(options))
}

/// Beats every 250 ms until its scope is stopped; returns the number of beats.
async fn heartbeat(rt: SharedRuntime, ready: Latch, token: StopToken) -> u32 {
    println!("worker: starting");
    println!("worker: ready");
    ready.set();
    let mut beats = 0;
    loop {
        let tick = rt.timeout(Duration::from_millis(250), token.stopped());
        if tick.await.is_ok() {
            break;
        }
        beats += 1;
        println!("worker: heartbeat {beats}");
    }
    let cause = token.cause().map(|c| c.to_string()).unwrap_or_default();
    let origin = token
        .origin_cause()
        .map(|c| c.to_string())
        .unwrap_or_default();
    println!("worker: stopped ({cause}; origin: {origin})");
    beats
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("lifecycle-demo: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let rt = lifecycle_tokio::runtime();
    let root = StopSource::new();
    let ready = Latch::new();
    println!("lifecycle demo on tokio");

    let worker = rt.spawn(heartbeat(rt.clone(), ready.clone(), root.child().token()));
    ready.wait().await;
    println!(
        "main: worker is ready; stopping it in {:?} (Ctrl-C stops it sooner)",
        options.run_for
    );

    tokio::select! {
        () = rt.sleep(options.run_for) => println!("main: time is up, stopping"),
        _ = tokio::signal::ctrl_c() => println!("main: Ctrl-C, stopping"),
    }
    root.stop();

    match worker.await {
        Ok(beats) => {
            println!("main: worker done after {beats} heartbeats");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("main: worker failed: {error}");
            ExitCode::FAILURE
        }
    }
}
