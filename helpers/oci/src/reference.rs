//! Image references: the one grammar and type live in [`man8s::reference`] (the declaration
//! check uses them too); re-exported here for the fetch path.

pub use man8s::reference::{
    DOCKER_HUB, DOCKER_HUB_API, ImageRef, ReferenceError, digest_hex, host_is_loopback,
};

impl From<ReferenceError> for crate::error::Error {
    fn from(e: ReferenceError) -> Self {
        Self::Reference {
            reference: e.reference,
            reason: e.reason,
        }
    }
}
