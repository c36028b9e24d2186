//! Hand an nftables JSON document to `nft -j -f -` (through the `nftables` crate) and read the
//! table back. One document is one kernel transaction.

use nftables::helper::{self, NftablesError};
use nftables::schema::Nftables;

use crate::filter::TABLE;

/// Why the filter could not be applied or read.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// No `nft` program: nftables is not installed.
    #[error(
        "nft not found (install nftables): machines are UNFILTERED, every port answers the whole mesh"
    )]
    Missing,
    /// `nft` ran and refused (its own message went to stderr, i.e. the journal).
    #[error("nft refused the man8s table: {0}")]
    Failed(String),
}

impl From<NftablesError> for NftError {
    fn from(e: NftablesError) -> Self {
        match e {
            NftablesError::NftExecution { inner, .. }
                if inner.kind() == std::io::ErrorKind::NotFound =>
            {
                Self::Missing
            }
            NftablesError::NftFailed { stderr, .. } if !stderr.trim().is_empty() => {
                Self::Failed(stderr.trim().to_owned())
            }
            other => Self::Failed(other.to_string()),
        }
    }
}

/// Apply `doc` as one transaction.
pub fn apply(doc: &Nftables) -> Result<(), NftError> {
    Ok(helper::apply_ruleset(doc)?)
}

/// The table as the kernel has it (`nft -j list table inet man8s`); `Ok(None)` when absent.
pub fn list_table() -> Result<Option<Nftables<'static>>, NftError> {
    match helper::get_current_ruleset_with_args(
        helper::DEFAULT_NFT,
        ["list", "table", "inet", TABLE],
    ) {
        Ok(r) => Ok(Some(r)),
        // nft says "No such file or directory" for a table that is not there.
        Err(NftablesError::NftFailed { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
