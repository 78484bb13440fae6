//! PostgreSQL: connections and the SQL run on them, the control file, WAL names and headers.

pub mod conn;
pub mod control;
pub mod layout;
pub mod page;
pub mod probe;
pub mod session;
pub mod timeline;
pub mod wal;
pub mod walrec;
