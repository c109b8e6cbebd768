//! This machine's name, as recorded in manifests, lock markers and records. A leaf module:
//! every layer may ask it.

/// The host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `unknown`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// The name of the user this process runs as (libpq's default PostgreSQL user): the
/// password database's entry for the effective uid, else `$USER`.
pub fn username() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; the name is copied
    // out at once, and Lifeboat does not call getpw* from other threads.
    let from_passwd = unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            None
        } else {
            Some(
                std::ffi::CStr::from_ptr((*pw).pw_name)
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    };
    from_passwd
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "postgres".into())
}
