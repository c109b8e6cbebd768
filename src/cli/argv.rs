//! Hiding passwords from `ps`: a URI's password given on the command line
//! (`lifeboat backup postgres://app:pw@db/shop`) is overwritten in this process's own
//! argument memory once the arguments are parsed, so `/proc/PID/cmdline` (what `ps` and
//! process listings show) reads `postgres://app:xx@db/shop`, as the MySQL client does with
//! `-p`. It is visible only for the instant between exec and this call; `~/.pgpass` or
//! `PGPASSWORD` keep it off the command line entirely.
//!
//! Written by hand: the standard library copies the arguments and offers no way to the
//! original memory; glibc hands `argc` and `argv` to every `.init_array` function, which is
//! how this module finds them.

use std::sync::atomic::{AtomicIsize, AtomicPtr, Ordering};

static ARGC: AtomicIsize = AtomicIsize::new(0);
static ARGV: AtomicPtr<*mut libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn capture(
    argc: libc::c_int,
    argv: *mut *mut libc::c_char,
    _env: *mut *mut libc::c_char,
) {
    ARGC.store(argc as isize, Ordering::Relaxed);
    ARGV.store(argv, Ordering::Relaxed);
}

#[used]
#[link_section = ".init_array"]
static CAPTURE: extern "C" fn(libc::c_int, *mut *mut libc::c_char, *mut *mut libc::c_char) =
    capture;

/// Overwrite the password of every `scheme://user:password@…` argument with `x`s.
pub fn hide_uri_passwords() {
    let argc = ARGC.load(Ordering::Relaxed);
    let argv = ARGV.load(Ordering::Relaxed);
    if argv.is_null() {
        return;
    }
    for i in 0..argc {
        // SAFETY: argv holds argc valid, NUL-terminated, writable strings for the life of the
        // process (the kernel placed them on the stack); each is only shortened in place.
        unsafe {
            let arg = *argv.offset(i);
            if arg.is_null() {
                continue;
            }
            let len = libc::strlen(arg);
            let bytes = std::slice::from_raw_parts_mut(arg.cast::<u8>(), len);
            if let Some(range) = password_range(bytes) {
                bytes[range].fill(b'x');
            }
            for range in password_parameters(bytes) {
                bytes[range].fill(b'x');
            }
        }
    }
}

/// Where the password is in `scheme://user:password@host…`.
fn password_range(arg: &[u8]) -> Option<std::ops::Range<usize>> {
    let scheme_end = arg.windows(3).position(|w| w == b"://")? + 3;
    let rest = &arg[scheme_end..];
    let authority_end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?' || b == b'#')
        .unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let at = authority.iter().rposition(|&b| b == b'@')?;
    let colon = authority[..at].iter().position(|&b| b == b':')?;
    (colon + 1 < at).then(|| scheme_end + colon + 1..scheme_end + at)
}

/// The values of `password=` parameters in a URI's query (`?password=…&…`).
fn password_parameters(arg: &[u8]) -> Vec<std::ops::Range<usize>> {
    let Some(q) = arg.iter().position(|&b| b == b'?') else {
        return Vec::new();
    };
    if !arg.windows(3).any(|w| w == b"://") {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut start = q + 1;
    for part in arg[q + 1..].split(|&b| b == b'&' || b == b'#') {
        let value = part
            .strip_prefix(b"password=")
            .or_else(|| part.strip_prefix(b"sslpassword="))
            .or_else(|| part.strip_prefix(b"pass%77ord="))
            .or_else(|| part.strip_prefix(b"%70assword="));
        if let Some(value) = value {
            let from = start + (part.len() - value.len());
            if !value.is_empty() {
                out.push(from..from + value.len());
            }
        }
        start += part.len() + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_password_only() {
        let arg = b"postgres://app:s3cret@db:5432/shop?sslmode=require";
        let r = password_range(arg).unwrap();
        assert_eq!(&arg[r], b"s3cret");
        let arg = b"postgres://app:p%40ss@db/x";
        assert_eq!(&arg[password_range(arg).unwrap()], b"p%40ss");
        assert_eq!(password_range(b"postgres://app@db:5432/shop"), None);
        assert_eq!(password_range(b"s3://bucket/prefix"), None);
        assert_eq!(password_range(b"/srv/app.db"), None);
        let arg = b"postgres://app@db/x?sslmode=require&password=s3cret&x=1";
        let r = password_parameters(arg);
        assert_eq!(r.len(), 1);
        assert_eq!(&arg[r[0].clone()], b"s3cret");
    }
}
