//! Spinners on stderr, drawn only when stderr is a terminal.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::out::Out;

/// A spinner that disappears when finished; invisible off a terminal.
pub struct Progress(ProgressBar);

impl Progress {
    /// Remove it from the terminal.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A spinner for an operation of unknown length (one revision with many peers).
pub fn spinner(out: Out, msg: &str) -> Progress {
    if !out.interactive {
        return Progress(ProgressBar::hidden());
    }
    let pb = ProgressBar::new_spinner();
    pb.set_draw_target(ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        pb.set_style(style);
    }
    pb.set_message(msg.to_owned());
    pb.enable_steady_tick(Duration::from_millis(100));
    Progress(pb)
}
