//! The one tokio runtime of the process, and the two ways Python waits for it.
//!
//! Blocking calls ([`block`]) release the GIL and wait on the calling thread; awaitable
//! calls ([`awaitable`]) spawn the operation as a task of the runtime first and hand
//! asyncio a future that waits for that task. Cancelling the asyncio future drops only
//! the waiting: the task runs to its end, so an operation is done whole or not at all
//! (the store's commit is one transaction either way), never abandoned between two of
//! its steps.

use std::future::Future;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::IntoPyObject;

use crate::errors;

/// The runtime pyo3-async-runtimes drives asyncio futures with; blocking calls use the
/// same one, so backends and their background tasks (netlink connections) live on one
/// runtime whatever the caller's style.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    pyo3_async_runtimes::tokio::get_runtime()
}

/// Run the future `make` makes on the shared runtime with the GIL released, and raise
/// its error as the matching `wgm.errors` class. The future is made on the waiting
/// thread, so it need not be `Send`.
pub fn block<T, M, F>(py: Python<'_>, make: M) -> PyResult<T>
where
    T: Send,
    M: FnOnce() -> F + Send,
    F: Future<Output = wgm_core::Result<T>>,
{
    py.detach(|| runtime().block_on(make()))
        .map_err(|e| errors::to_py(py, &e))
}

/// An asyncio awaitable of `fut`, which starts now as a task of the shared runtime.
pub fn awaitable<'py, T, F>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    T: for<'a> IntoPyObject<'a> + Send + 'static,
    F: Future<Output = wgm_core::Result<T>> + Send + 'static,
{
    // Started before asyncio sees it, and never aborted: dropping a JoinHandle detaches.
    wait_for(py, runtime().spawn(fut))
}

/// An asyncio awaitable of the future `make` makes, run on one of the runtime's
/// blocking threads: for futures the compiler cannot prove `Send` (opening a store).
pub fn awaitable_blocking<'py, T, M, F>(py: Python<'py>, make: M) -> PyResult<Bound<'py, PyAny>>
where
    T: for<'a> IntoPyObject<'a> + Send + 'static,
    M: FnOnce() -> F + Send + 'static,
    F: Future<Output = wgm_core::Result<T>>,
{
    let handle = runtime().handle().clone();
    wait_for(
        py,
        runtime().spawn_blocking(move || handle.block_on(make())),
    )
}

/// Wait for `task` from asyncio.
fn wait_for<T>(
    py: Python<'_>,
    task: tokio::task::JoinHandle<wgm_core::Result<T>>,
) -> PyResult<Bound<'_, PyAny>>
where
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    pyo3_async_runtimes::tokio::future_into_py(py, async move {
        match task.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Python::attach(|py| errors::to_py(py, &e))),
            Err(join) => Err(PyRuntimeError::new_err(format!(
                "wgm operation failed: {join}"
            ))),
        }
    })
}
