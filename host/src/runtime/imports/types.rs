//! The `relish:policy/types` interface: types only, no functions, so nothing to implement; a
//! policy that uses its types imports it all the same, so it is in the linker too.

use wasmtime::component::{HasSelf, Linker};

use super::CallState;
use crate::runtime::bindings;

impl bindings::relish::policy::types::Host for CallState {}

/// Adds the `relish:policy/types` interface to `linker`, in every contract version served.
pub(in crate::runtime) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    bindings::relish::policy::types::add_to_linker::<_, HasSelf<_>>(linker, |state| state)?;
    linker.instance("relish:policy/types@0.2.0")?;
    linker.instance("relish:policy/types@0.1.0")?;
    Ok(())
}
