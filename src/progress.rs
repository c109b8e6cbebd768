//! Progress reporting: a byte counter the engine ticks, drawn as a bar only when a person
//! is watching (stderr is a terminal and output is not JSON).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar on stderr if `visible` and stderr is a terminal; otherwise a silent counter.
    pub fn new(visible: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(
            None,
            if visible && std::io::stderr().is_terminal() {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        Progress { bar }
    }

    pub fn hidden() -> Progress {
        Progress::new(false)
    }

    /// Start a step measured in bytes.
    pub fn start(&self, message: &str, total_bytes: u64) {
        self.bar.reset();
        self.bar.set_length(total_bytes);
        self.bar.set_style(
            ProgressStyle::with_template(
                "{msg:>8} [{bar:24}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        self.bar.set_message(message.to_string());
    }

    pub fn inc(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    /// The step's name, bytes done and total (what the daemon's job status shows).
    pub fn snapshot(&self) -> (String, u64, u64) {
        (
            self.bar.message(),
            self.bar.position(),
            self.bar.length().unwrap_or(0),
        )
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
