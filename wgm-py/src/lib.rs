//! # wgm-py
//!
//! The native half of wgm's Python bindings: the extension module `wgm._wgm`, which the
//! pure-Python package `wgm` (in `python/wgm/`) wraps into its public, typed API. Build
//! it with maturin (`pip install ./wgm-py`); see `docs/python.md`.
//!
//! The boundary is deliberately narrow: a `Native` object holds one
//! [`wgm_core::manager::Manager`] and runs *operations* by name, with their arguments
//! and results as JSON text ([`ops`]). The Python layer turns keyword arguments into that
//! JSON and the results into immutable objects (`ipaddress`, `datetime`, `uuid` values);
//! every rule — validation, authorization, allocation, sealing, audit — stays in the
//! library, exactly as for the CLI, whose value parsers and store opening this crate
//! shares (`wgm_cli::parse`, `wgm_cli::open`, `wgm_cli::host`).
//!
//! - Blocking calls release the GIL while the library does store or device I/O, on one
//!   tokio runtime shared by the whole process ([`runtime`]); one `Native` may be used
//!   from many threads.
//! - Awaitable calls (`*_async`) run the operation as a task of that runtime: cancelling
//!   the Python task stops the waiting, never the operation, so a commit is never cut in
//!   half.
//! - Errors are raised as the classes of `wgm.errors`, one per error kind, carrying the
//!   library's field and reason ([`errors`]).
//!
//! ```text
//! >>> import wgm
//! >>> m = wgm.Manager.open("sqlite::memory:", local_admin=True)
//! >>> admin = m.local_admin("ada")
//! >>> m.create_server(admin, "office", listen_port=51820).name
//! 'office'
//! ```

#![warn(clippy::unwrap_used)]

use pyo3::prelude::*;

pub mod errors;
pub mod native;
pub mod ops;
pub mod runtime;
pub mod util;

/// The module `wgm._wgm`.
#[pymodule]
fn _wgm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<native::Native>()?;
    m.add_class::<native::PyPrincipal>()?;
    m.add_function(wrap_pyfunction!(util::generate_private_key, m)?)?;
    m.add_function(wrap_pyfunction!(util::public_key, m)?)?;
    m.add_function(wrap_pyfunction!(util::generate_preshared_key, m)?)?;
    m.add_function(wrap_pyfunction!(util::wgquick_parse, m)?)?;
    m.add_function(wrap_pyfunction!(util::wgquick_render, m)?)?;
    Ok(())
}
