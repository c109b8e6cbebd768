//! SIGINT and SIGTERM: the first asks the running command to stop at its next safe point
//! (the engine polls `check`), so it can remove what it created and release its markers; a
//! second one ends the process at once.

use crate::error::{Error, ErrorKind, Result};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// The signal received (0: none). Written by the handler, read anywhere.
static RECEIVED: AtomicUsize = AtomicUsize::new(0);

/// Install the handlers. Call once, early in `main`.
pub fn install() {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let again = Arc::new(AtomicBool::new(false));
        // Registered first, so it runs before `again` is set: a second signal (`again` is
        // already true by then) exits at once with the shell's code for that signal.
        let _ =
            signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, again.clone());
        let _ = signal_hook::flag::register(signal, again);
        // SAFETY: the handler stores to an atomic and calls write(2), both
        // async-signal-safe; it allocates nothing.
        let _ = unsafe {
            signal_hook::low_level::register(signal, move || {
                let first = RECEIVED
                    .compare_exchange(0, signal as usize, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok();
                if first {
                    const SAY: &[u8] =
                        b"\nlifeboat: stopping at the next safe point (again to stop at once)\n";
                    libc::write(2, SAY.as_ptr().cast(), SAY.len());
                }
            })
        };
    }
}

/// The signal that asked this process to stop, if one did.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s as i32),
    }
}

/// Stop here if a signal asked to: an `Interrupted` error that unwinds the operation
/// through its usual clean-up.
pub fn check() -> Result<()> {
    match received() {
        None => Ok(()),
        Some(s) => Err(Error::new(
            ErrorKind::Interrupted,
            format!("interrupted by {}", signal_name(s)),
        )),
    }
}

pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        signal_hook::consts::SIGINT => "SIGINT (Ctrl-C)",
        signal_hook::consts::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// The exit code for an interruption: 128 + the signal, as a shell reports a process the
/// signal killed (130 for SIGINT, 143 for SIGTERM).
pub fn exit_code() -> i32 {
    128 + received().unwrap_or(signal_hook::consts::SIGINT)
}
