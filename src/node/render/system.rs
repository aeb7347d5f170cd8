//! Kernel settings nodeadm applies on hybrid nodes.

use super::{Effect, RenderedFile};

/// nodeadm's sysctl drop-in.
pub const SYSCTL_PATH: &str = "/etc/sysctl.d/99-nodeadm.conf";

/// `/etc/sysctl.d/99-nodeadm.conf`: overcommit for the kubelet, reboot on panic, IP forwarding
/// for pod traffic (byte for byte nodeadm's, which has no final newline).
pub fn sysctl() -> RenderedFile {
    RenderedFile::new(
        SYSCTL_PATH,
        "vm.overcommit_memory=1\nkernel.panic=10\nkernel.panic_on_oops=1\nnet.ipv4.ip_forward=1",
        &[Effect::Sysctl],
    )
}
