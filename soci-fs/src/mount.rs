//! Mounting a [`LayerFs`] and unmounting it cleanly, also with reads in flight.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{MountOption, SessionACL, SessionUnmounter};

use crate::error::{Error, Result};
use crate::fs::LayerFs;
use crate::spans::{ConcurrencyLimit, SpanManager};

/// How a layer is mounted.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MountOptions {
    /// Let every user access the mount (`allow_other`), as the reference does. By default true.
    pub allow_other: bool,
    /// FUSE worker threads. Reads that wait for a fetch occupy one each. By default 8.
    pub fuse_threads: usize,
    /// Span ranges (inclusive) from the layer's prefetch artifact, fetched right after mount.
    /// By default none.
    pub prefetch_spans: Vec<(u32, u32)>,
    /// Shared bound on the layers prefetching at once (`[prefetch].max_concurrency`): the
    /// prefetch of this layer waits for a permit. By default none (no bound).
    pub prefetch_limit: Option<Arc<ConcurrencyLimit>>,
    /// Mount source shown in `/proc/mounts`. By default `soci`.
    pub fs_name: String,
    /// How long [`MountHandle::unmount`] waits for the session to end after a lazy unmount.
    /// By default 5 s.
    pub unmount_timeout: Duration,
    /// Close the layer's span manager on unmount (waiting reads fail at once). Turn off for a
    /// second mount that shares the span manager with one that stays mounted (an id-mapped
    /// view). By default true.
    pub close_spans_on_unmount: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            allow_other: true,
            fuse_threads: 8,
            prefetch_spans: Vec::new(),
            prefetch_limit: None,
            fs_name: "soci".into(),
            unmount_timeout: Duration::from_secs(5),
            close_spans_on_unmount: true,
        }
    }
}

/// A mounted layer. Unmounts on [`MountHandle::unmount`] or drop.
#[derive(Debug)]
pub struct MountHandle {
    mountpoint: PathBuf,
    unmounter: Option<SessionUnmounter>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    spans: Arc<SpanManager>,
    timeout: Duration,
    close_spans: bool,
}

/// Mounts `fs` at `mountpoint` (read-only, `suid`, `dev`, no `default_permissions`) and starts
/// the prefetch of [`MountOptions::prefetch_spans`].
pub fn mount(
    mut fs: LayerFs,
    mountpoint: impl AsRef<Path>,
    opts: &MountOptions,
) -> Result<MountHandle> {
    let mountpoint = mountpoint.as_ref().to_path_buf();
    let spans = fs.spans().clone();
    fs.close_spans = opts.close_spans_on_unmount;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName(opts.fs_name.clone()),
        MountOption::RO,
        MountOption::Suid,
        MountOption::Dev,
    ];
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.fuse_threads.max(1));
    config.clone_fd = true;
    let mount_err = |source| Error::Mount {
        path: mountpoint.clone(),
        source,
    };
    let mut session = fuser::Session::new(fs, &mountpoint, &config).map_err(mount_err)?;
    let unmounter = session.unmount_callable();
    let thread = std::thread::Builder::new()
        .name("soci-fuse".into())
        .spawn(move || session.run())
        .map_err(Error::io("spawning the fuse session thread"))?;
    let handle = MountHandle {
        mountpoint,
        unmounter: Some(unmounter),
        thread: Some(thread),
        spans: spans.clone(),
        timeout: opts.unmount_timeout,
        close_spans: opts.close_spans_on_unmount,
    };
    if !opts.prefetch_spans.is_empty() {
        match spans.prefetch_limited(&opts.prefetch_spans, opts.prefetch_limit.clone()) {
            Ok(p) => drop(p),
            Err(e) => {
                tracing::warn!(error = %e, "Failed to execute prefetch, continuing without prefetch")
            }
        }
    }
    tracing::info!(mountpoint = %handle.mountpoint.display(), "layer mounted");
    Ok(handle)
}

impl MountHandle {
    /// Where the layer is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The layer's span manager.
    pub fn spans(&self) -> &Arc<SpanManager> {
        &self.spans
    }

    /// Unmounts. Waiting reads fail at once (EIO) unless the span manager is shared
    /// ([`MountOptions::close_spans_on_unmount`] off); if files are still open the mount is
    /// detached lazily and the session ends when the last one closes (waited for up to
    /// [`MountOptions::unmount_timeout`]).
    pub fn unmount(mut self) -> Result<()> {
        self.do_unmount()
    }

    fn do_unmount(&mut self) -> Result<()> {
        let Some(mut unmounter) = self.unmounter.take() else {
            return Ok(());
        };
        if self.close_spans {
            self.spans.close();
        }
        if let Err(e) = unmounter.unmount() {
            tracing::debug!(error = %e, "unmount failed; detaching lazily");
            nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH).map_err(
                |errno| Error::Mount {
                    path: self.mountpoint.clone(),
                    source: std::io::Error::from_raw_os_error(errno as i32),
                },
            )?;
        }
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + self.timeout;
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                if let Ok(Err(e)) = t.join() {
                    tracing::debug!(error = %e, "fuse session ended with an error");
                }
            } else {
                tracing::warn!(mountpoint = %self.mountpoint.display(), "fuse session still busy after unmount; leaving it to finish");
            }
        }
        tracing::info!(mountpoint = %self.mountpoint.display(), "layer unmounted");
        Ok(())
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.do_unmount() {
            tracing::warn!(error = %e, "unmount on drop failed");
        }
    }
}
