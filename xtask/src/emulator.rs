//! Emulator tasks: fidelity tests through independent clients (python-tds, FreeTDS).

use anyhow::Result;

/// Runs the emulator's fidelity checks through clients other than tiberius.
pub fn fidelity_clients() -> Result<()> {
    crate::util::not_built_yet(
        "emulator fidelity through independent clients",
        "the emulator issue",
    )
}
