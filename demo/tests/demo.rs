//! Runs the demo binary the way a user does and checks what it prints.

use std::process::Command;

fn demo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lifecycle-demo"))
}

#[test]
fn runs_readies_stops_and_exits_cleanly() {
    let output = demo().args(["--seconds", "0.3"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "exit {:?}\n{stdout}",
        output.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let position = |needle: &str| {
        lines
            .iter()
            .position(|line| line.starts_with(needle))
            .unwrap_or_else(|| panic!("no line starting with `{needle}` in:\n{stdout}"))
    };
    // Ordering, not timing: ready before main sees it, stop before done.
    assert!(position("worker: ready") < position("main: worker is ready"));
    assert!(
        position("main: time is up")
            < position("worker: stopped (parent stopped; origin: stop requested)")
    );
    assert!(position("worker: stopped") < position("main: worker done"));
}

#[test]
fn bad_arguments_are_reported_with_the_culprit() {
    let output = demo().args(["--seconds", "soon"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`soon` is not a number"), "{stderr}");
}

#[test]
fn help_explains_the_options() {
    let output = demo().arg("--help").output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("--seconds N"));
}
