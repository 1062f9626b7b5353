//! `s3qladm clear`, `restore-metadata`, `shrink-db` and `upgrade` through the real commands
//! and real mounts: their prompts, what they change in the storage and the cache directory,
//! and S3QL's exit codes.

use std::fs;
use std::path::Path;

use s3ql_tests::harness::{random_bytes, tool, Backend};
use s3ql_tests::{note, TestFs};

/// Names of the `s3ql_*` objects in the store.
fn s3ql_objects(fs: &TestFs) -> Vec<String> {
    let mut names: Vec<String> = fs
        .store_objects()
        .into_iter()
        .filter(|n| n.starts_with("s3ql_"))
        .collect();
    names.sort();
    names
}

/// Files in the cache directory (names only).
fn cache_entries(fs: &TestFs) -> Vec<String> {
    fs::read_dir(&fs.cache)
        .expect("read cache directory")
        .map(|e| {
            e.expect("dirent")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Size of the local metadata database (with its WAL).
fn local_db_size(fs: &TestFs) -> u64 {
    fs::read_dir(&fs.cache)
        .expect("read cache directory")
        .map(|e| e.expect("dirent"))
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".db") || name.ends_with(".db-wal")
        })
        .map(|e| e.metadata().expect("stat").len())
        .sum()
}

fn clear_on(backend: Backend, test: &str) {
    let Some(mut fs) = TestFs::with_backend(test, backend) else {
        return;
    };
    fs.mkfs();
    fs.mount();
    fs::write(fs.mnt.join("f"), random_bytes(200_000)).expect("write");
    fs.umount();
    if backend == Backend::Local {
        // Not an s3ql object: clear deletes everything under the URL, as S3QL's does.
        fs::write(fs.store.join("foreign-object"), b"x").expect("write foreign object");
    }
    let before = fs.store_objects();
    assert!(s3ql_objects(&fs).len() > 3, "{before:?}");

    for input in ["", "no\n", "yes please\n"] {
        let out = fs.adm_cmd("clear", &fs.url, input);
        out.expect_code(1);
        assert!(out.stdout.contains("DELETE ALL DATA"), "{}", out.output());
        assert_eq!(
            fs.store_objects(),
            before,
            "clear without yes changed the store"
        );
    }
    let out = fs.adm_cmd("clear", &fs.url, "YeS\n");
    out.expect_success();
    assert!(out.stdout.contains("Deleted"), "{}", out.output());
    let left = if backend == Backend::Local {
        fs.store_objects()
    } else {
        s3ql_objects(&fs)
    };
    assert!(left.is_empty(), "objects left after clear: {left:?}");
    let local = cache_entries(&fs);
    assert!(
        local
            .iter()
            .all(|n| !n.ends_with(".db") && !n.ends_with(".params") && !n.ends_with("-cache")),
        "local files left after clear: {local:?}"
    );

    // The storage is empty: mkfs works again and the new filesystem is empty.
    fs.mkfs();
    fs.mount();
    assert!(!fs.mnt.join("f").exists(), "a file survived clear");
    fs::write(fs.mnt.join("g"), b"new").expect("write on the new filesystem");
    fs.umount();
    note(&format!(
        "{test}: refused without yes (exit 1), store emptied, mkfs again"
    ));
}

#[test]
fn clear_local() {
    clear_on(Backend::Local, "adm_clear_local");
}

#[test]
fn clear_s3c() {
    clear_on(Backend::S3c, "adm_clear_s3c");
}

/// The generation numbers in the listing (rows `<index> <generation> <time>`), by index.
fn listed_generations(listing: &str) -> Vec<u64> {
    listing
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let idx = words.next()?.parse::<usize>().ok()?;
            Some((idx, words.next()?.parse::<u64>().ok()?))
        })
        .enumerate()
        .map(|(i, (idx, generation))| {
            assert_eq!(i, idx, "indexes are not consecutive:\n{listing}");
            generation
        })
        .collect()
}

#[test]
fn restore_metadata_brings_back_an_older_tree() {
    let Some(mut fs) = TestFs::new("adm_restore_metadata") else {
        return;
    };
    let link = fs.root.join("store-link");
    std::os::unix::fs::symlink(&fs.store, &link).expect("symlink");
    fs.mkfs();
    fs.mount();
    let a = random_bytes(300_000);
    fs::create_dir(fs.mnt.join("dir")).expect("mkdir");
    fs::write(fs.mnt.join("dir/a"), &a).expect("write a");
    fs::write(fs.mnt.join("b"), b"bee").expect("write b");
    // Data reaches the metadata once it is uploaded: flush first, as a user would.
    for action in ["flushcache", "backup-metadata"] {
        tool("s3qlctrl", &[action.as_ref(), fs.mnt.as_os_str()], None).expect_success();
    }
    // Changes after that generation.
    fs::write(fs.mnt.join("c"), random_bytes(100_000)).expect("write c");
    fs::rename(fs.mnt.join("b"), fs.mnt.join("b2")).expect("rename");
    fs::create_dir(fs.mnt.join("dir2")).expect("mkdir dir2");

    // Refused while mounted: here (found in /proc/mounts) 1, through another spelling of
    // the URL (only the mount lock sees it) 31.
    fs.adm_cmd("restore-metadata", &fs.url, "0\n")
        .expect_code(1);
    let other_url = format!("local://{}", link.display());
    let out = fs.adm_cmd("restore-metadata", &other_url, "0\n");
    out.expect_code(31);
    fs.umount();

    // The listing, then no index at all: nothing changes.
    let out = fs.adm_cmd("restore-metadata", &fs.url, "");
    out.expect_code(1);
    let generations = listed_generations(&out.stdout);
    // mkfs, backup-metadata, umount.
    assert_eq!(generations.len(), 3, "{}", out.stdout);
    assert!(
        generations.windows(2).all(|w| w[0] < w[1]),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("(current)"), "{}", out.stdout);
    // Index 1: the generation of backup-metadata.
    let input = "bogus\n99\n1\n";
    let out = fs.adm_cmd("restore-metadata", &fs.url, input);
    out.expect_success();
    assert!(
        out.stdout.contains("Invalid selection."),
        "{}",
        out.output()
    );
    assert!(out.stdout.contains("fsck.s3ql"), "{}", out.output());

    // Mount is refused until fsck has run; then the older tree is back.
    let mnt = fs.mnt.clone();
    fs.mount_cmd(&[], &mnt).expect_code(30);
    assert!(!fs.is_mounted(), "mounted restored metadata before fsck");
    let out = fs.fsck_cmd(&[]);
    let fsck_code = out.code();
    assert!(
        matches!(fsck_code, Some(0 | 128)),
        "fsck after restore-metadata\n{}",
        out.output()
    );
    fs.mount();
    assert!(
        fs::read(fs.mnt.join("dir/a")).expect("read a") == a,
        "dir/a differs after the restore"
    );
    assert_eq!(fs::read(fs.mnt.join("b")).expect("read b"), b"bee");
    for gone in ["c", "b2", "dir2"] {
        assert!(
            !fs.mnt.join(gone).exists(),
            "{gone} was created after the restored generation"
        );
    }
    fs::write(fs.mnt.join("after"), b"writable").expect("write after restore");
    fs.umount();
    // fsck committed it: a fresh cache sees the same tree.
    fs.new_cache();
    fs.mount();
    assert_eq!(fs::read(fs.mnt.join("b")).expect("read b"), b"bee");
    assert_eq!(fs::read(fs.mnt.join("after")).expect("read"), b"writable");
    assert!(!fs.mnt.join("c").exists());
    fs.umount();
    note(&format!(
        "adm_restore_metadata: refused while mounted (1, 31), mount 30 until fsck (exit {:?}), \
         older tree back",
        fsck_code
    ));
}

#[test]
fn shrink_db_returns_space_of_deleted_files() {
    let Some(mut fs) = TestFs::new("adm_shrink_db") else {
        return;
    };
    fs.mkfs();
    fs.mount();
    let data = random_bytes(500_000);
    fs::write(fs.mnt.join("kept"), &data).expect("write");
    let many = fs.mnt.join("many");
    fs::create_dir(&many).expect("mkdir");
    let long = "n".repeat(200);
    for i in 0..2000 {
        fs::write(many.join(format!("{long}{i}")), b"").expect("create");
    }
    fs.umount();
    let full = local_db_size(&fs);
    fs.mount();
    fs::remove_dir_all(&many).expect("delete the files");
    // Refused while mounted.
    fs.adm_cmd("shrink-db", &fs.url, "").expect_code(1);
    fs.umount();
    let deleted = local_db_size(&fs);

    let out = fs.adm_cmd("shrink-db", &fs.url, "");
    out.expect_success();
    assert!(
        out.stdout.contains("Database size reduced from"),
        "{}",
        out.output()
    );
    let shrunk = local_db_size(&fs);
    note(&format!(
        "adm_shrink_db: database {full} bytes with 2000 files, {deleted} after deleting them, \
         {shrunk} after shrink-db"
    ));
    assert!(
        shrunk * 2 < deleted,
        "shrink-db did not shrink the database: {deleted} -> {shrunk} bytes\n{}",
        out.output()
    );

    // The local copy (current) and the uploaded generation (fresh cache) both mount.
    for fresh in [false, true] {
        if fresh {
            fs.new_cache();
        }
        fs.mount();
        assert!(
            fs::read(fs.mnt.join("kept")).expect("read") == data,
            "kept differs after shrink-db (fresh cache: {fresh})"
        );
        assert!(!many.exists());
        fs::write(fs.mnt.join(format!("w{fresh}")), b"x").expect("write");
        fs.umount();
    }
    let out = fs.fsck_cmd(&["--force"]);
    out.expect_success();
}

/// A plain (unencrypted) object of the documented format (docs/FORMAT.md §2) holding
/// `payload` uncompressed.
fn plain_object(payload: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut object = b"S3QLRS".to_vec();
    object.extend_from_slice(&[1, 0, 0, 0]);
    object.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    object.extend_from_slice(payload);
    let sum = Sha256::digest(&object);
    object.extend_from_slice(&sum);
    object
}

/// Rewrites the `revision` field of the plain `s3ql_params` object in `store`.
fn set_revision(store: &Path, revision: u32) {
    let path = store.join("s3ql_params");
    let object = fs::read(&path).expect("read s3ql_params");
    assert_eq!(&object[..6], b"S3QLRS");
    assert_eq!(object[7], 0, "s3ql_params is expected uncompressed");
    let json = String::from_utf8(object[18..object.len() - 32].to_vec()).expect("utf-8");
    let start = json.find("\"revision\":").expect("revision field") + "\"revision\":".len();
    let end = start
        + json[start..]
            .find(|c: char| !c.is_ascii_digit())
            .expect("end of the revision");
    let edited = format!("{}{revision}{}", &json[..start], &json[end..]);
    fs::write(&path, plain_object(edited.as_bytes())).expect("write s3ql_params");
}

#[test]
fn upgrade_checks_the_revision() {
    let Some(fs) = TestFs::new("adm_upgrade") else {
        return;
    };
    fs.adm_cmd("upgrade", &fs.url, "").expect_code(18);
    fs.mkfs();
    let out = fs.adm_cmd("upgrade", &fs.url, "");
    out.expect_success();
    assert!(
        out.stdout.contains("most-recent revision"),
        "{}",
        out.output()
    );

    set_revision(&fs.store, 0);
    let out = fs.adm_cmd("upgrade", &fs.url, "");
    out.expect_code(32);
    assert!(out.stderr.contains("revision 0"), "{}", out.output());
    set_revision(&fs.store, 7);
    let out = fs.adm_cmd("upgrade", &fs.url, "");
    out.expect_code(33);
    assert!(out.stderr.contains("revision 7"), "{}", out.output());
    set_revision(&fs.store, 1);
    fs.adm_cmd("upgrade", &fs.url, "").expect_success();

    fs::remove_file(fs.store.join("s3ql_params")).expect("remove s3ql_params");
    let out = fs.adm_cmd("upgrade", &fs.url, "");
    out.expect_code(32);
    assert!(out.stderr.contains("no s3ql_params"), "{}", out.output());

    // A filesystem of S3QL itself (its per-generation parameter copies).
    fs::write(fs.store.join("s3ql_params_0000000001"), b"x").expect("write");
    let out = fs.adm_cmd("upgrade", &fs.url, "");
    out.expect_code(32);
    assert!(out.stderr.contains("S3QL (Python)"), "{}", out.output());
}
