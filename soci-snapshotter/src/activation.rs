//! systemd socket activation (`--address fd://`, spec §5.1): systemd (or
//! `systemd-socket-activate`) listens on the socket and hands it over as file descriptor 3,
//! announced by `LISTEN_PID` (our pid) and `LISTEN_FDS` (how many descriptors from 3 on).

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// Set once the inherited descriptor is owned, so it is wrapped at most once.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Number of listeners systemd passed to this process: `LISTEN_FDS` when `LISTEN_PID` is our
/// pid, else 0.
fn listen_fds(pid: Option<&str>, fds: Option<&str>) -> Result<usize> {
    let ours = pid
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    if !ours {
        return Ok(0);
    }
    match fds {
        None => Ok(0),
        Some(n) => n
            .trim()
            .parse::<usize>()
            .map_err(|_| Error::Config(format!("invalid LISTEN_FDS {n:?}"))),
    }
}

/// Takes the one unix listener passed by systemd. `Ok(None)` when none was passed; an error
/// when several were, when descriptor 3 is not an open unix socket, or on a second call.
pub fn take_listener() -> Result<Option<UnixListener>> {
    let n = listen_fds(
        std::env::var("LISTEN_PID").ok().as_deref(),
        std::env::var("LISTEN_FDS").ok().as_deref(),
    )?;
    match n {
        0 => return Ok(None),
        1 => {}
        n => {
            return Err(Error::Config(format!(
                "expected exactly one socket from systemd, got {n}"
            )))
        }
    }
    // Check through /proc that descriptor 3 is open and a socket before owning it.
    let target = std::fs::read_link(format!("/proc/self/fd/{LISTEN_FDS_START}"))
        .map_err(Error::io("inherited socket", "/proc/self/fd/3"))?;
    if !target.to_string_lossy().starts_with("socket:") {
        return Err(Error::Config(format!(
            "inherited descriptor {LISTEN_FDS_START} is not a socket ({})",
            target.display()
        )));
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(Error::Config(
            "the inherited socket was already taken".into(),
        ));
    }
    let fd = adopt_inherited();
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| {
        Error::Config(format!(
            "cannot set close-on-exec on the inherited socket: {e}"
        ))
    })?;
    let listener = UnixListener::from(fd);
    // getsockname fails unless this is an AF_UNIX socket.
    listener.local_addr().map_err(|e| {
        Error::Config(format!(
            "inherited descriptor {LISTEN_FDS_START} is not a unix socket: {e}"
        ))
    })?;
    listener.set_nonblocking(true).map_err(|e| {
        Error::Config(format!(
            "cannot make the inherited socket non-blocking: {e}"
        ))
    })?;
    Ok(Some(listener))
}

#[allow(unsafe_code)]
fn adopt_inherited() -> OwnedFd {
    // SAFETY: systemd passed descriptor 3 to this process (LISTEN_PID is our pid and
    // LISTEN_FDS is 1), /proc shows it open and a socket, nothing else in the process opens,
    // uses or closes it, and TAKEN guarantees it is wrapped into an owner only once.
    unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) }
}

#[cfg(test)]
mod tests {
    use super::listen_fds;

    #[test]
    fn listen_env_is_ours_only_with_our_pid() {
        let me = std::process::id().to_string();
        assert_eq!(listen_fds(None, Some("1")).ok(), Some(0));
        assert_eq!(
            listen_fds(Some("1"), Some("1")).ok(),
            Some(0),
            "pid 1 is not us"
        );
        assert_eq!(listen_fds(Some(&me), None).ok(), Some(0));
        assert_eq!(listen_fds(Some(&me), Some("1")).ok(), Some(1));
        assert_eq!(listen_fds(Some(&me), Some("2")).ok(), Some(2));
        assert!(listen_fds(Some(&me), Some("x")).is_err());
    }

    #[test]
    fn no_listener_without_systemd() {
        // The test process was not socket-activated (LISTEN_PID is not its pid).
        assert!(matches!(super::take_listener(), Ok(None)));
    }
}
