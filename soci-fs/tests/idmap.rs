//! An id-mapped view of a layer (SPEC §5.3.7, §5.11): a second mount over the same tree and
//! span manager reports every owner through the mapping and shares fetched spans with the plain
//! mount, which keeps working after the view is unmounted.

mod common;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use soci_fs::{
    BlobSource, FaultInjector, FileSource, FsOptions, IdMap, IdRange, LayerFs, Metrics,
    MountOptions, SpanManager, SpanOptions, Tree, OVERFLOW_ID, STATE_DIR,
};

#[test]
fn id_mapped_view_reports_host_owners_and_shares_spans() {
    skip_without_fuse!();
    let layer = common::fixture_layer();
    // Two uid ranges (the fixture's uid 1234 lies in neither: overflow id), one gid range.
    let map = IdMap::new(
        vec![IdRange::new(0, 12345, 1000), IdRange::new(1000, 22222, 200)],
        vec![IdRange::new(0, 30000, 65536)],
    )
    .expect("valid mapping");

    let source = Arc::new(FaultInjector::new(
        FileSource::open(&layer.blob_path).expect("open blob"),
    ));
    let metrics = Arc::new(Metrics::default());
    let cache = tempfile::tempdir().expect("cache dir");
    let spans = SpanManager::new(
        &layer.ztoc,
        source.clone() as Arc<dyn BlobSource>,
        cache.path(),
        SpanOptions::default(),
        metrics.clone(),
    )
    .expect("span manager");
    let plain_fs = LayerFs::new(
        Tree::from_ztoc(&layer.ztoc).expect("tree"),
        spans.clone(),
        layer.digest.clone(),
        FsOptions::default(),
    );
    let mut mapped_opts = FsOptions::default();
    mapped_opts.id_map = Some(map.clone());
    let mapped_fs = LayerFs::new(
        plain_fs.shared_tree(),
        spans.clone(),
        layer.digest.clone(),
        mapped_opts,
    );

    let plain_mnt = tempfile::tempdir().expect("mountpoint");
    let plain = common::Mounted {
        handle: Some(
            soci_fs::mount(plain_fs, plain_mnt.path(), &MountOptions::default()).expect("mount"),
        ),
        mnt: plain_mnt,
        cache,
        spans: spans.clone(),
        metrics: metrics.clone(),
        source: source.clone(),
    };
    let mut shared = MountOptions::default();
    shared.close_spans_on_unmount = false;
    let mapped_mnt = tempfile::tempdir().expect("mountpoint");
    let mut mapped = common::Mounted {
        handle: Some(soci_fs::mount(mapped_fs, mapped_mnt.path(), &shared).expect("mount")),
        mnt: mapped_mnt,
        cache: tempfile::tempdir().expect("unused cache dir"),
        spans: spans.clone(),
        metrics: metrics.clone(),
        source: source.clone(),
    };

    // Owners: the mapped view is the plain view with every uid/gid mapped, nothing else differs.
    let before = source.reads();
    let plain_tree = common::snapshot(plain.path());
    let reads_plain = source.reads() - before;
    assert!(reads_plain > 0, "the snapshot reads every file");
    let mapped_tree = common::snapshot(mapped.path());
    assert_eq!(
        source.reads() - before,
        reads_plain,
        "the mapped view reads the spans the plain view already fetched"
    );
    let expected: std::collections::BTreeMap<_, _> = plain_tree
        .iter()
        .map(|(p, e)| {
            let mut e = e.clone();
            e.uid = map.uid(e.uid);
            e.gid = map.gid(e.gid);
            (p.clone(), e)
        })
        .collect();
    assert_eq!(mapped_tree, expected);
    let owner = |root: &std::path::Path, p: &str| {
        let md = std::fs::symlink_metadata(root.join(p)).expect("lstat");
        (md.uid(), md.gid())
    };
    // Spot checks against the fixture's owners (root 0:0, etc/hosts 1234:5678, later/ 42:0,
    // whiteouts 0:0).
    assert_eq!(owner(plain.path(), "etc/hosts"), (1234, 5678));
    assert_eq!(owner(mapped.path(), "etc/hosts"), (OVERFLOW_ID, 35678));
    assert_eq!(owner(mapped.path(), ""), (12345, 30000));
    assert_eq!(owner(mapped.path(), "later"), (12387, 30000));
    assert_eq!(owner(mapped.path(), "old/gone"), (12345, 30000));
    assert_eq!(owner(plain.path(), STATE_DIR), (0, 0));
    assert_eq!(owner(mapped.path(), STATE_DIR), (12345, 30000));
    let state = format!("{STATE_DIR}/{}.json", layer.digest);
    assert_eq!(owner(mapped.path(), &state), (12345, 30000));

    // Unmounting the view leaves the shared span manager open: the plain mount still reads.
    mapped.unmount();
    assert!(!spans.is_closed());
    let content = common::read(plain.path().join("big.bin")).expect("read after view unmount");
    assert_eq!(content, common::expected_content(&layer, "big.bin"));
    drop(plain);
    assert!(spans.is_closed(), "the plain mount closes the spans");
}
