//! The solver behind both programs: `good_lp` over microlp, with its failures as [`Error`].

use good_lp::ResolutionError;

use crate::Error;

/// A solver failure as an [`Error`].
pub(crate) fn solver_error(err: ResolutionError) -> Error {
    Error::Solver(err.to_string())
}

/// `value` rounded to the nearest whole number (solvers return 2.9999999 for 3).
pub(crate) fn whole(value: f64) -> u64 {
    value.round().max(0.0) as u64
}
