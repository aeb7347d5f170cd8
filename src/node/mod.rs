//! Joining the cluster like `nodeadm init`: the NodeConfig ([`config`]), the files nodeadm
//! writes rendered as pure functions of the configuration, the cluster details and a few node
//! facts ([`render`]), the pure parts of its validations ([`checks`]), and writing the files
//! idempotently under a `--root` prefix ([`init`]).

#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod checks;
#[allow(missing_docs)] // public items here are documented as the module is next reworked
pub mod config;
pub mod facts;
pub mod init;

pub mod install;
pub mod kubeconfig;
pub mod render;
pub mod sandbox;
pub mod upgrade;
