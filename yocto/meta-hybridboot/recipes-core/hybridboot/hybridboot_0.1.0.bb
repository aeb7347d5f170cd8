SUMMARY = "First-boot agent that joins an appliance to Amazon EKS as a hybrid node"
DESCRIPTION = "hybridboot creates the node key in the TPM or HSM, enrolls a certificate with \
               Vault PKI, exchanges it for AWS credentials with IAM Roles Anywhere and writes \
               the kubelet and containerd configuration, as one crash-safe first-boot unit."
HOMEPAGE = "https://github.com/hybridboot/hybridboot"
BUGTRACKER = "https://github.com/hybridboot/hybridboot/issues"
SECTION = "admin"
CVE_PRODUCT = "hybridboot"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

# The source: point HYBRIDBOOT_GIT_URI / SRCREV at your mirror in local.conf or a bbappend.
HYBRIDBOOT_GIT_URI ??= "git://github.com/hybridboot/hybridboot.git;protocol=https;branch=main"
PV .= "+git"
SRC_URI = "${HYBRIDBOOT_GIT_URI}"
# Sites pin the reviewed commit (SRCREV:pn-hybridboot = "<sha>" in local.conf or a bbappend);
# the floating default only serves a first evaluation build.
# nooelint: oelint.vars.autorev
SRCREV ?= "${AUTOREV}"

S = "${WORKDIR}/git"

inherit cargo cargo-update-recipe-crates systemd

require ${BPN}-crates.inc

# Key backends map to cargo features (cargo.bbclass passes PACKAGECONFIG_CONFARGS to cargo build).
#   tpm        TPM 2.0 through tss-esapi and the image's tpm2-tss (device TCTI at run time)
#   tpm-native TPM 2.0 through hybridboot's own Rust TPM stack (no tpm2-tss needed)
#   pkcs11     PKCS#11 HSMs and smart cards (module dlopened at run time)
PACKAGECONFIG ??= "tpm"
PACKAGECONFIG[tpm] = "--features tpm,,tpm2-tss,libtss2-tcti-device"
PACKAGECONFIG[tpm-native] = "--features tpm-native"
PACKAGECONFIG[pkcs11] = "--features pkcs11"
CARGO_BUILD_FLAGS:append = " --no-default-features"

SYSTEMD_SERVICE:${PN} = "hybridboot-firstboot.service hybridboot-renew.timer"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/hybridboot-firstboot.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/systemd/hybridboot-renew.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/systemd/hybridboot-renew.timer ${D}${systemd_system_unitdir}/
    install -d ${D}${systemd_unitdir}/system-preset
    install -m 0644 ${S}/systemd/80-hybridboot.preset ${D}${systemd_unitdir}/system-preset/
    install -d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/systemd/hybridboot-tmpfiles.conf ${D}${nonarch_libdir}/tmpfiles.d/hybridboot.conf
    install -d ${D}${docdir}/${BPN}
    install -m 0644 ${S}/README.md ${D}${docdir}/${BPN}/
}

FILES:${PN} += "${systemd_system_unitdir} ${systemd_unitdir}/system-preset ${nonarch_libdir}/tmpfiles.d"
# The site configuration (NodeConfig + BootstrapConfig) comes from hybridboot-config.
RRECOMMENDS:${PN} += "hybridboot-config"
