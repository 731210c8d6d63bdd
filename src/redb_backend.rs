//! `redb::StorageBackend` for the file handles (feature `redb`), so a redb database runs
//! on them with no adapter code:
//!
//! ```
//! use writebehind::{Config, WriteBehindFile};
//! let dir = tempfile::tempdir().unwrap();
//! let file = WriteBehindFile::create(dir.path().join("db.redb"), &Config::default()).unwrap();
//! let db = redb::Database::builder().create_with_backend(file).unwrap();
//! const TABLE: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("t");
//! let tx = db.begin_write().unwrap();
//! tx.open_table(TABLE).unwrap().insert("answer", 42).unwrap();
//! tx.commit().unwrap(); // durable: redb's sync_data is the handle's force
//! ```
//!
//! `len` is the handle's `end_position`, `set_len` its [`Handle::set_len`], `sync_data`
//! its `force`. `close` (called once, when the database is dropped) writes everything
//! back and syncs it, returning the handle's latched error if any. redb only logs an
//! error from `close`, so the handle keeps it: its own `close`/drop reports it again.
//! Errors are `io::Error`s with their errno.

use std::io;

use crate::{FileHandle, Handle, WriteBehindFile};

/// The same six lines for each file handle.
macro_rules! storage_backend {
    ($handle:ty) => {
        impl redb::StorageBackend for $handle {
            fn len(&self) -> io::Result<u64> {
                Ok(self.end_position())
            }

            fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
                Handle::read(self, offset, out)
            }

            fn set_len(&self, len: u64) -> io::Result<()> {
                Handle::set_len(self, len)
            }

            fn sync_data(&self) -> io::Result<()> {
                self.force()
            }

            fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
                Handle::write(self, offset, data)
            }

            fn close(&self) -> io::Result<()> {
                self.force()
            }
        }
    };
}

storage_backend!(WriteBehindFile);
storage_backend!(FileHandle);
