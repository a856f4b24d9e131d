//! On-disk format versions of a hearsay data dir and the ordered steps
//! between them. The format version lives in the `meta` tree under
//! `format_version` (u32, big-endian); a dir without it is version 0.
//! [`run`] applies every pending step in order and refuses a dir written by
//! a newer hearsay. Each step is a plain function over the sled `Db`, so it
//! can be tested against a store built in the old format.

/// Name of the tree holding format version and node identity.
pub const META_TREE: &str = "meta";
/// Key of the format version inside [`META_TREE`].
pub const FORMAT_VERSION_KEY: &str = "format_version";
/// Key of the unix-ms time the data dir was created.
pub const CREATED_AT_KEY: &str = "created_at_ms";

/// What went wrong while reading or migrating the format.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "data dir has on-disk format v{found}, but this hearsay supports up to v{supported}; upgrade hearsay or use another --data-dir"
    )]
    NewerFormat { found: u32, supported: u32 },
    #[error("stored format version is corrupt ({len} bytes, expected 4)")]
    CorruptVersion { len: usize },
    #[error("migration {name} (v{from} -> v{to}) failed: {source}")]
    Step { name: &'static str, from: u32, to: u32, source: sled::Error },
    #[error("reading the format version failed: {0}")]
    Io(#[from] sled::Error),
}

/// One step from `from` to `from + 1`.
pub struct Migration {
    pub from: u32,
    pub name: &'static str,
    pub apply: fn(&sled::Db) -> Result<(), sled::Error>,
}

/// Every step, in order. Append only; never edit a step that has shipped.
pub const MIGRATIONS: &[Migration] = &[
    Migration { from: 0, name: "create-meta", apply: v0_create_meta },
    Migration { from: 1, name: "record-format-2", apply: v1_record_format_2 },
];

/// The format this build writes.
pub const CURRENT: u32 = MIGRATIONS.len() as u32;

/// v0 (an empty or pre-format dir) → v1: the `meta` tree with its creation time.
fn v0_create_meta(db: &sled::Db) -> Result<(), sled::Error> {
    let meta = db.open_tree(META_TREE)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    meta.compare_and_swap(CREATED_AT_KEY, None as Option<&[u8]>, Some(&now.to_be_bytes()[..]))?.ok();
    Ok(())
}

/// v1 → v2: records may carry their value hash (record format 2, see
/// hearsay's `storage::codec`). Format-1 records stay readable and are
/// rewritten when their key is next written, so there is nothing to copy:
/// the step exists so that a hearsay which cannot read format 2 refuses
/// the dir up front instead of failing on the first such record.
fn v1_record_format_2(_db: &sled::Db) -> Result<(), sled::Error> {
    Ok(())
}

/// The format version a data dir is at.
pub fn format_version(db: &sled::Db) -> Result<u32, MigrationError> {
    let meta = db.open_tree(META_TREE)?;
    match meta.get(FORMAT_VERSION_KEY)? {
        None => Ok(0),
        Some(raw) => {
            let bytes: [u8; 4] = raw.as_ref().try_into().map_err(|_| MigrationError::CorruptVersion { len: raw.len() })?;
            Ok(u32::from_be_bytes(bytes))
        }
    }
}

/// What [`run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub from: u32,
    pub to: u32,
    pub applied: Vec<&'static str>,
}

/// Brings a data dir to [`CURRENT`], one step at a time, recording the new
/// version (and flushing) after each step so a crash resumes where it stopped.
pub fn run(db: &sled::Db) -> Result<Report, MigrationError> {
    let from = format_version(db)?;
    if from > CURRENT {
        return Err(MigrationError::NewerFormat { found: from, supported: CURRENT });
    }
    let meta = db.open_tree(META_TREE)?;
    let mut applied = Vec::new();
    for step in MIGRATIONS.iter().filter(|m| m.from >= from) {
        let to = step.from + 1;
        let fail = |source| MigrationError::Step { name: step.name, from: step.from, to, source };
        (step.apply)(db).map_err(fail)?;
        meta.insert(FORMAT_VERSION_KEY, &to.to_be_bytes()).map_err(fail)?;
        db.flush().map_err(fail)?;
        applied.push(step.name);
    }
    Ok(Report { from, to: CURRENT, applied })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens `dir`, waiting out the lock of a handle this test just
    /// dropped: sled's background threads release it a little later.
    fn open(dir: &std::path::Path) -> sled::Db {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match sled::Config::new().path(dir).open() {
                Err(e) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                opened => return opened.unwrap(),
            }
        }
    }

    #[test]
    fn v0_empty_dir_becomes_v1_with_meta() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        assert_eq!(format_version(&db).unwrap(), 0);
        let report = run(&db).unwrap();
        assert_eq!(report, Report { from: 0, to: 2, applied: vec!["create-meta", "record-format-2"] });
        let meta = db.open_tree(META_TREE).unwrap();
        assert_eq!(meta.get(FORMAT_VERSION_KEY).unwrap().unwrap().as_ref(), 2u32.to_be_bytes());
        assert_eq!(meta.get(CREATED_AT_KEY).unwrap().unwrap().len(), 8);
        // A tree handle keeps the Db (and its file lock) alive.
        drop((meta, db));
        // Reopened: already current, nothing to do.
        let db = open(dir.path());
        assert_eq!(run(&db).unwrap(), Report { from: 2, to: 2, applied: vec![] });
    }

    #[test]
    fn v1_becomes_v2_leaving_format_1_records_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let meta = db.open_tree(META_TREE).unwrap();
        meta.insert(FORMAT_VERSION_KEY, &1u32.to_be_bytes()).unwrap();
        meta.insert(CREATED_AT_KEY, &5u64.to_be_bytes()).unwrap();
        let shard = db.open_tree("shard/00000").unwrap();
        let v1_record = [&[1u8][..], &[0; 16], &[1], b"value"].concat();
        shard.insert(b"key", v1_record.as_slice()).unwrap();
        assert_eq!(run(&db).unwrap(), Report { from: 1, to: 2, applied: vec!["record-format-2"] });
        assert_eq!(meta.get(FORMAT_VERSION_KEY).unwrap().unwrap().as_ref(), 2u32.to_be_bytes());
        assert_eq!(meta.get(CREATED_AT_KEY).unwrap().unwrap().as_ref(), 5u64.to_be_bytes());
        assert_eq!(shard.get(b"key").unwrap().unwrap().as_ref(), v1_record.as_slice());
    }

    #[test]
    fn newer_format_is_refused_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        db.open_tree(META_TREE).unwrap().insert(FORMAT_VERSION_KEY, &7u32.to_be_bytes()).unwrap();
        let err = run(&db).unwrap_err();
        assert!(matches!(err, MigrationError::NewerFormat { found: 7, supported: 2 }));
        let msg = err.to_string();
        assert!(msg.contains("v7") && msg.contains("v2"), "{msg}");
        assert_eq!(format_version(&db).unwrap(), 7, "a refused dir is left untouched");
    }

    #[test]
    fn corrupt_version_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        db.open_tree(META_TREE).unwrap().insert(FORMAT_VERSION_KEY, &[1u8, 2][..]).unwrap();
        assert!(matches!(run(&db), Err(MigrationError::CorruptVersion { len: 2 })));
    }
}
