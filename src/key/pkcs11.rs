//! PKCS#11 backend (cryptoki). PLACEHOLDER: being written.

use super::{Algorithm, KeyError, KeyOptions, NodeKey, OpenMode};

#[derive(Debug)]
pub struct Pkcs11Key {}

impl Pkcs11Key {
    pub fn open(
        _uri: &super::Pkcs11Uri,
        _opts: &KeyOptions,
        _mode: OpenMode,
    ) -> Result<Self, KeyError> {
        Err(KeyError::backend("PKCS#11", "not implemented yet"))
    }
}

impl NodeKey for Pkcs11Key {
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
