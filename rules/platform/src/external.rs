//! External checks: a user's command judges a candidate from its model IR
//! and resource report, given as JSON on stdin.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use wait_timeout::ChildExt;

use crate::error::PlatformError;

/// A command's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExternalVerdict {
    Accept,
    /// The command's exit code and the end of its stderr.
    Reject {
        code: i32,
        message: String,
    },
}

/// Runs an external check: `command` is the process to start, set up by
/// the caller (program, arguments, working directory, environment) and
/// named `name` in errors. `input` goes to its stdin from another thread,
/// so that a command that does not read it cannot stall the clock: a
/// command still running `timeout` after it started is killed and counts
/// as an error (not a verdict, as it says nothing about the candidate).
pub fn run_check(
    mut command: Command,
    name: &str,
    input: &[u8],
    timeout: Duration,
) -> Result<ExternalVerdict, PlatformError> {
    let fail = |message: String| PlatformError::Check {
        command: name.to_owned(),
        message,
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    let writer = child.stdin.take().map(|mut stdin| {
        let input = input.to_vec();
        // A command that does not read its input closes the pipe early;
        // that is its right, not an error.
        std::thread::spawn(move || drop(stdin.write_all(&input)))
    });
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_string(&mut text);
        }
        text
    });
    let status = match child.wait_timeout(timeout).map_err(|e| fail(e.to_string()))? {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("still running after {} s; killed", timeout.as_secs())));
        }
    };
    // The command has exited: its end of the pipe is closed, so the writer
    // is done or failing.
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let text = reader.join().unwrap_or_default();
    if status.success() {
        return Ok(ExternalVerdict::Accept);
    }
    let tail: Vec<&str> = text.lines().rev().take(10).collect();
    let message = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    Ok(ExternalVerdict::Reject {
        code: status.code().unwrap_or(-1),
        message: if message.is_empty() {
            "rejected (no message)".to_owned()
        } else {
            message
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    fn check(script: &str, input: &[u8], timeout: Duration) -> Result<ExternalVerdict, PlatformError> {
        run_check(sh(script), script, input, timeout)
    }

    #[test]
    fn verdicts() {
        assert_eq!(check("cat > /dev/null", b"{}", T).unwrap(), ExternalVerdict::Accept);
        assert_eq!(
            check("grep -q big || { echo 'too small' >&2; exit 3; }", b"{\"size\": 1}", T).unwrap(),
            ExternalVerdict::Reject {
                code: 3,
                message: "too small".into()
            }
        );
    }

    #[test]
    fn a_hung_command_is_an_error() {
        let e = check("sleep 5", b"", Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("killed"), "{e}");
    }

    #[test]
    fn a_command_that_never_reads_a_large_input_still_times_out() {
        // Far more than a pipe holds: writing it blocks until the command
        // reads, which it never does.
        let input = vec![b'x'; 8 << 20];
        let started = std::time::Instant::now();
        let e = check("sleep 30", &input, Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("killed"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }
}
