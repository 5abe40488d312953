//! The library's errors as Python exceptions: the classes of `wgm.errors`, one per error
//! kind, chosen there by the library's machine code (`Error::code`, the class's `kind`:
//! `wgm.errors.error_class` is the one table), each with the CLI's exit code (`code`),
//! the field and rule of invalid input, and a `details` dict of the rest (a parse
//! error's line, what was not found, a throttle's wait). Messages are the library's:
//! they name fields and rules, never a secret.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use wgm_core::error::ConflictKind;
use wgm_core::Error;

/// The machine name of a conflict's kind.
fn conflict_name(k: &ConflictKind) -> &'static str {
    match k {
        ConflictKind::StaleRevision { .. } => "stale_revision",
        ConflictKind::StaleUser { .. } => "stale_user",
        ConflictKind::Taken(_) => "taken",
        ConflictKind::Quarantined { .. } => "quarantined",
        ConflictKind::AuditChainBroken(_) => "audit_chain_broken",
        ConflictKind::RevisionAltered { .. } => "revision_altered",
        _ => "other",
    }
}

/// `field`, `reason` and `details` of an error.
fn parts<'py>(
    py: Python<'py>,
    e: &Error,
) -> PyResult<(Option<String>, Option<String>, Bound<'py, PyDict>)> {
    let d = PyDict::new(py);
    let mut field = None;
    let mut reason = None;
    match e {
        Error::InvalidInput {
            field: f,
            reason: r,
        } => {
            field = Some(f.to_string());
            reason = Some(r.to_string());
        }
        Error::Parse {
            line,
            field: f,
            reason: r,
        } => {
            field = Some(f.to_string());
            reason = Some(r.to_string());
            d.set_item("line", line)?;
        }
        Error::NotFound { kind, id } | Error::AlreadyExists { kind, id } => {
            d.set_item("object", kind)?;
            d.set_item("id", id)?;
        }
        Error::Conflict { kind } => {
            d.set_item("conflict", conflict_name(kind))?;
            reason = Some(kind.to_string());
        }
        Error::PermissionDenied { reason: r }
        | Error::Unauthenticated { reason: r }
        | Error::Sealed { reason: r } => reason = Some(r.to_string()),
        Error::Unsupported { what } => reason = Some(what.to_string()),
        Error::Throttled { retry_after_secs } => d.set_item("retry_after", retry_after_secs)?,
        Error::PoolExhausted { pool } => d.set_item("pool", pool)?,
        Error::Backend { backend, .. } => d.set_item("backend", backend)?,
        Error::Store { store, .. } => d.set_item("store", store)?,
        _ => {}
    }
    Ok((field, reason, d))
}

/// The Python exception of `e`: an instance of its `wgm.errors` class, or a
/// `RuntimeError` with the same message when that module cannot be imported (the
/// native module used on its own).
pub fn to_py(py: Python<'_>, e: &Error) -> PyErr {
    let message = e.to_string();
    let build = || -> PyResult<PyErr> {
        let class = py
            .import("wgm.errors")?
            .getattr("error_class")?
            .call1((e.code(),))?;
        let (field, reason, details) = parts(py, e)?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("field", field)?;
        kwargs.set_item("reason", reason)?;
        kwargs.set_item("details", details)?;
        let instance = class.call((message.as_str(),), Some(&kwargs))?;
        Ok(PyErr::from_value(instance))
    };
    build().unwrap_or_else(|_| PyRuntimeError::new_err(message.clone()))
}

/// `r`, its error raised as the matching `wgm.errors` class (taking the GIL for that).
pub fn raise<T>(r: wgm_core::Result<T>) -> PyResult<T> {
    r.map_err(|e| Python::attach(|py| to_py(py, &e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_named_for_machines() {
        use wgm_core::error::Taken;
        let taken = ConflictKind::Taken(Taken::Address("fd00::2".parse().unwrap()));
        assert_eq!(conflict_name(&taken), "taken");
        let other = ConflictKind::Other { reason: "x".into() };
        assert_eq!(conflict_name(&other), "other");
    }
}
