//! thaw-maintenance owns the store's lifecycle: getting space back without ever losing a
//! referenced byte, and finding and repairing damage.
//!
//! - [`gc::collect_garbage`]: retention ([`retention`]), then the mark phase ([`mark`]: what the
//!   tags reach, read from manifests and chunk maps only), then [`repack`] (packs that are mostly
//!   garbage are rewritten with their live frames), then the sweep, under the store's exclusive
//!   lock ([`thaw_core::lock`]) and in an order that a kill at any point cannot break.
//! - [`check::check_store`]: the whole-store consistency check, optionally reading every byte.
//! - [`repair::repair_store`]: pack indexes rebuilt from the packs themselves (every frame
//!   header names its chunk and lengths), chunk maps rebuilt from the indexes, and tags whose
//!   manifest cannot be recovered dropped.
//!
//! Every command starts from one listing of the store ([`inventory::Inventory`]). Progress goes
//! to a caller's [`thaw_core::progress::Progress`]; this crate prints nothing.

pub mod check;
mod crash;
mod display;
mod error;
pub mod freed;
pub mod gc;
pub mod inventory;
pub mod mark;
pub mod repack;
pub mod repair;
pub mod retention;
pub mod tags;

pub use error::{Error, Result};
