//! sd_notify(3) without libsystemd: when systemd starts vaultdisk from a `Type=notify` unit
//! it sets NOTIFY_SOCKET, and `READY=1` with `MAINPID=<daemon>` tells it that PLAIN is
//! served and which process to watch (the one that `open` started; `open` itself exits).
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};

static HELD: AtomicBool = AtomicBool::new(false);

/// Stops [`ready`] from sending: `crypttab open` runs several opens and tells systemd once,
/// when all are done.
pub fn hold() {
    HELD.store(true, Ordering::SeqCst);
}

/// Tells systemd the service is ready, with `main_pid` as its main process, if
/// NOTIFY_SOCKET is set (and [`hold`] was not called unless `force`). Errors are logged,
/// never fatal: the volume is open either way.
pub fn ready(main_pid: Option<u32>, force: bool) {
    if HELD.load(Ordering::SeqCst) && !force {
        return;
    }
    let mut message = String::from("READY=1\n");
    if let Some(pid) = main_pid {
        message.push_str(&format!("MAINPID={pid}\n"));
    }
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&target, &message) {
        log::warn!("cannot notify systemd (NOTIFY_SOCKET): {e}");
    }
}

/// [`ready`] with the daemon serving `plain` as the main process (after `vaultdisk open`
/// or `mount`); nothing without NOTIFY_SOCKET.
pub fn ready_for_plain(plain: &std::path::Path) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let canon = plain.canonicalize().unwrap_or_else(|_| plain.to_path_buf());
    let pid = super::open_volumes()
        .into_iter()
        .find(|v| v.plain == canon || v.plain == plain)
        .map(|v| v.pid);
    ready(pid, false);
}

/// Sends one datagram to `target`, NOTIFY_SOCKET's value: a path, or `@name` in the
/// abstract namespace.
fn send(target: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = target.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        socket.send_to(message.as_bytes(), std::path::Path::new(target))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_a_socket_with_the_main_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\nMAINPID=42\n").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nMAINPID=42\n");
    }
}
