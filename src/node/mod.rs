//! Joining the cluster like `nodeadm init`: the NodeConfig ([`config`]), the files nodeadm
//! writes rendered as pure functions of the configuration, the cluster details and a few node
//! facts ([`render`]), the pure parts of its validations ([`checks`]), and writing the files
//! idempotently under a `--root` prefix ([`init`]).

pub mod checks;
pub mod cmd;
pub mod config;
pub mod facts;
pub mod init;
pub mod init_cmd;
pub mod install;
pub mod kubeconfig_cmd;
pub mod render;
pub mod sandbox;
