//! One line from an error and its causes, for the CLI's last word, logs and
//! the reasons in error bodies.
//!
//! Two habits meet here. Our error types name their cause in their own
//! message (`opening the data dir …: {source}`) and also expose it as the
//! source, so printing the whole chain said each cause twice or three times.
//! hyper's client errors do the opposite: `client error (Connect)` keeps the
//! reason (`Connection refused`) in its sources only, so printing the top
//! error alone hid it.

use std::error::Error;

/// `e` and its causes joined by ": ", leaving out a cause the message before
/// it already ends with.
pub fn error_line(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut previous = out.clone();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !previous.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        previous = text;
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("opening the data dir d: {0}")]
    struct Opening(#[source] Io);

    #[derive(Debug, thiserror::Error)]
    #[error("storage I/O failed: {0}")]
    struct Io(#[from] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Terse(#[source] std::io::Error);

    #[test]
    fn each_cause_is_said_once() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        assert_eq!(error_line(&Opening(Io(refused()))), "opening the data dir d: storage I/O failed: Connection refused");
        assert_eq!(error_line(&Terse(refused())), "client error (Connect): Connection refused");
        assert_eq!(error_line(&refused()), "Connection refused");
    }
}
