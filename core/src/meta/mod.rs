//! Metadata: the SQLite database (one owner thread, batched transactions), its schema,
//! and its upload to the backend as chunked generations.

mod db;
mod schema;
pub(crate) mod upload;

pub(crate) use db::run_statements_here;
pub use db::Db;
pub(crate) use schema::{
    counted_totals, create_later_schema, create_schema, create_temp_tables, recount_totals,
    stored_totals, META_NEXT_OBJECT_ID,
};
