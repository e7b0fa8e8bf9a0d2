//! The command line: [`Options`], their parsing, and the help text.

use std::fmt;
use std::time::Duration;

/// The help text, printed by `--help` and after a usage error.
pub(crate) const USAGE: &str = "\
lifecycle-demo: a supervised service on the loopback, built with lifecycle

USAGE:
    lifecycle-demo [OPTIONS]

The service is one supervisor over five nodes:

    config ──▶ store ──▶ echo ──▶ heartbeat
                  └───▶ flaky

    config     loads the settings once, then completes (a oneshot)
    store      keeps the echo counters; flushes them when it stops
    echo       a TCP echo server on 127.0.0.1; ready once bound
    heartbeat  prints a beat every second, with the counters
    flaky      fails every 3 seconds; restarted with a growing backoff

A node starts once what it depends on is ready (or completed), and stops
only once what depends on it has stopped: heartbeat and flaky first, then
echo, then store. Every transition is printed with the status of every node.

OPTIONS:
    --runtime NAME          the executor: tokio (default), smol or async-std
    --port N                the echo server's port (default 0: any free port)
    --spin-halt-after SECS  make heartbeat fail after SECS seconds with the
                            spin-halt verdict: every node stops and the
                            process waits for SIGTERM (SIGINT is ignored)
    --stop-delay SECS       make store take SECS seconds to flush when it
                            stops (default 0); past its 10 s stop timeout it
                            is aborted and the exit code is 4
    -h, --help              print this help

SIGNALS:
    SIGINT (Ctrl-C)  stop gracefully, in reverse dependency order; a second
                     one during the stop exits at once (code 130)
    SIGTERM          stop gracefully; the only way out of a spin-halt

    Under systemd (NOTIFY_SOCKET set), the demo reports READY=1, STATUS=
    with the status of every node, and STOPPING=1.

EXIT CODES:
    0    clean stop
    1    a node's failure shut the service down (e.g. the port is taken)
    2    bad command line
    3    spin-halt released by SIGTERM
    4    the stop overran a node's stop timeout
    130  forced exit by a second SIGINT
";

/// The executor the demo runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RuntimeChoice {
    /// A tokio multi-thread runtime.
    Tokio,
    /// smol's global executor.
    Smol,
    /// async-std's global executor.
    AsyncStd,
}

impl fmt::Display for RuntimeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeChoice::Tokio => "tokio",
            RuntimeChoice::Smol => "smol",
            RuntimeChoice::AsyncStd => "async-std",
        })
    }
}

/// What the command line asked for.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// `--runtime`.
    pub(crate) runtime: RuntimeChoice,
    /// `--port`: 0 lets the system pick a free port.
    pub(crate) port: u16,
    /// `--spin-halt-after`.
    pub(crate) spin_halt_after: Option<Duration>,
    /// `--stop-delay`.
    pub(crate) stop_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            runtime: RuntimeChoice::Tokio,
            port: 0,
            spin_halt_after: None,
            stop_delay: Duration::ZERO,
        }
    }
}

/// What the command line means.
#[derive(Debug)]
pub(crate) enum Command {
    /// Run the service.
    Run(Options),
    /// Print the help and exit.
    Help,
}

impl Options {
    /// Parses the arguments (without the program name). Both `--name value`
    /// and `--name=value` work.
    ///
    /// # Errors
    ///
    /// A message naming the bad argument.
    pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
        let mut options = Options::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline_value) = match arg.split_once('=') {
                Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
                _ => (arg.as_str(), None),
            };
            if matches!(name, "-h" | "--help") {
                return Ok(Command::Help);
            }
            if !matches!(
                name,
                "--runtime" | "--port" | "--spin-halt-after" | "--stop-delay"
            ) {
                return Err(format!("unknown argument `{arg}`"));
            }
            let value = match inline_value.or_else(|| args.next()) {
                Some(value) => value,
                None => return Err(format!("{name} needs a value")),
            };
            match name {
                "--runtime" => options.runtime = parse_runtime(&value)?,
                "--port" => {
                    options.port = value.parse().map_err(|_| {
                        format!("--port: `{value}` is not a port number (0 to 65535)")
                    })?;
                }
                "--spin-halt-after" => options.spin_halt_after = Some(parse_seconds(name, &value)?),
                _ => options.stop_delay = parse_seconds(name, &value)?,
            }
        }
        Ok(Command::Run(options))
    }
}

fn parse_runtime(value: &str) -> Result<RuntimeChoice, String> {
    match value {
        "tokio" => Ok(RuntimeChoice::Tokio),
        "smol" => Ok(RuntimeChoice::Smol),
        "async-std" => Ok(RuntimeChoice::AsyncStd),
        _ => Err(format!(
            "--runtime: `{value}` is not one of tokio, smol, async-std"
        )),
    }
}

/// A duration in (possibly fractional) seconds, such as `1` or `0.5`.
fn parse_seconds(name: &str, value: &str) -> Result<Duration, String> {
    let seconds: f64 = value
        .parse()
        .map_err(|_| format!("{name}: `{value}` is not a number of seconds"))?;
    // Rejects negative, infinite and NaN values.
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("{name}: `{value}` is not a valid duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        Options::parse(args.iter().map(|arg| arg.to_string()))
    }

    #[test]
    fn both_value_forms_are_read() {
        let Ok(Command::Run(options)) = parse(&["--runtime=smol", "--port", "8080"]) else {
            panic!("valid arguments refused");
        };
        assert_eq!(options.runtime, RuntimeChoice::Smol);
        assert_eq!(options.port, 8080);
        let Ok(Command::Run(options)) = parse(&["--spin-halt-after", "1.5", "--stop-delay=2"])
        else {
            panic!("valid arguments refused");
        };
        assert_eq!(options.spin_halt_after, Some(Duration::from_millis(1500)));
        assert_eq!(options.stop_delay, Duration::from_secs(2));
    }

    #[test]
    fn errors_name_the_culprit() {
        let error = |args: &[&str]| parse(args).err().unwrap_or_default();
        assert_eq!(error(&["--bogus"]), "unknown argument `--bogus`");
        assert_eq!(error(&["--port"]), "--port needs a value");
        assert!(error(&["--port", "70000"]).contains("`70000` is not a port number"));
        assert!(error(&["--runtime", "glommio"]).contains("`glommio` is not one of"));
        assert!(error(&["--stop-delay", "-1"]).contains("`-1` is not a valid duration"));
        assert!(error(&["--spin-halt-after", "soon"]).contains("`soon` is not a number"));
    }
}
