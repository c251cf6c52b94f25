//! The README's curl session, run line by line with `curl` against the
//! `bank-service` binary (on its default store, an SQLite file, here a
//! new one), each answer compared with the one the README shows. Then SIGTERM: the service exits cleanly, having logged one
//! line per request.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Values that differ on every run: compared by kind, not by value.
const VOLATILE: [&str; 4] = ["recorded_at", "event_id", "correlation_id", "causation_id"];

/// The commands of the README's session with the output shown after each.
fn session() -> Vec<(String, String)> {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("<!-- curl-session:start -->")
        .expect("the README marks its curl session");
    let end = readme[start..]
        .find("<!-- curl-session:end -->")
        .expect("the session's end")
        + start;
    let mut steps: Vec<(String, String)> = Vec::new();
    let mut continuing = false;
    for line in readme[start..end].lines() {
        if line.starts_with("```") || line.starts_with("<!--") {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            steps.push((command.trim_end_matches('\\').to_owned(), String::new()));
            continuing = line.ends_with('\\');
        } else if continuing {
            let (command, _) = steps.last_mut().expect("a command");
            command.push_str(line.trim_end_matches('\\'));
            continuing = line.ends_with('\\');
        } else if let Some((_, output)) = steps.last_mut() {
            output.push_str(line);
            output.push('\n');
        }
    }
    steps
}

/// Whether `actual` matches `expected`, volatile values by kind only.
fn same(expected: &Value, actual: &Value, key: Option<&str>) -> bool {
    if key.is_some_and(|k| VOLATILE.contains(&k)) {
        return std::mem::discriminant(expected) == std::mem::discriminant(actual);
    }
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, v)| a.get(k).is_some_and(|av| same(v, av, Some(k))))
        }
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(e, a)| same(e, a, None))
        }
        _ => expected == actual,
    }
}

/// The service's process, killed if the test fails before it is stopped.
struct Started(Option<std::process::Child>);

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn the_readme_curl_session_runs_against_the_binary() {
    let steps = session();
    assert!(steps.len() >= 10, "the session has its steps: {steps:?}");
    let port = free_port();
    let data = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "readme-session-{}-{}.sqlite",
        std::process::id(),
        fastrand::u32(..)
    ));
    let mut started = Started(Some(
        Command::new(env!("CARGO_BIN_EXE_bank-service"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data")
            .arg(&data)
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bank-service"),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "bank-service never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    for (command, expected) in &steps {
        let command = command.replace("localhost:8080", &format!("127.0.0.1:{port}"));
        let output = Command::new("sh")
            .args(["-c", &command])
            .output()
            .expect("run curl");
        assert!(output.status.success(), "{command}: {output:?}");
        let actual = String::from_utf8(output.stdout).expect("utf-8");
        // A header printed by curl (`-w '%header{link}'`) is compared as
        // text; bodies as JSON.
        let Ok(expected_json) = serde_json::from_str::<Value>(expected.trim()) else {
            assert_eq!(actual.trim(), expected.trim(), "{command}");
            continue;
        };
        let actual_json: Value = serde_json::from_str(actual.trim())
            .unwrap_or_else(|e| panic!("{command} answered {actual:?}: {e}"));
        assert!(
            same(&expected_json, &actual_json, None),
            "{command}\nREADME: {expected}\nactual: {actual}"
        );
    }
    let pid = started.0.as_ref().expect("running").id().to_string();
    let term = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(term.success());
    let stdout = started.0.as_mut().and_then(|c| c.stdout.take());
    let log = BufReader::new(stdout.expect("stdout"));
    let lines: Vec<String> = log.lines().map_while(Result::ok).collect();
    let mut service = started.0.take().expect("running");
    let status = service.wait().expect("wait");
    assert!(
        status.success(),
        "a clean exit on SIGTERM: {status:?}\n{lines:#?}"
    );
    let requests = lines.iter().filter(|l| l.contains(" request ")).count();
    assert_eq!(
        requests,
        steps.len(),
        "one log line per request: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("read model checkpoint saved")),
        "{lines:#?}"
    );
}
