//! TPM 2.0 backend (tss-esapi). PLACEHOLDER: being written.
use std::path::Path;

use super::{Algorithm, KeyError, KeyOptions, NodeKey, OpenMode};

#[derive(Debug)]
pub struct TpmKey {}

impl TpmKey {
    pub fn open_persistent(
        _handle: u32,
        _opts: &KeyOptions,
        _mode: OpenMode,
    ) -> Result<Self, KeyError> {
        Err(KeyError::backend("TPM", "not implemented yet"))
    }
    pub fn open_tss2_pem(
        _path: &Path,
        _opts: &KeyOptions,
        _mode: OpenMode,
    ) -> Result<Self, KeyError> {
        Err(KeyError::backend("TPM", "not implemented yet"))
    }
}

impl NodeKey for TpmKey {
    fn algorithm(&self) -> Algorithm {
        unimplemented!()
    }
    fn public_key_der(&self) -> &[u8] {
        unimplemented!()
    }
    fn sign_digest(&self, _digest: &[u8; 32]) -> Result<Vec<u8>, KeyError> {
        unimplemented!()
    }
    fn describe(&self) -> String {
        unimplemented!()
    }
}
