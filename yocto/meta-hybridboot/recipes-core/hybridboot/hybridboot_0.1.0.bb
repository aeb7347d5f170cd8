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

# The source. By default: the hybridboot tree this layer is part of (the layer is
# yocto/meta-hybridboot inside it), so the image carries exactly the code whose Cargo.lock
# hybridboot-crates.inc lists, and a build fetches nothing but the locked crates (no SRCREV,
# no network at parse time). HYBRIDBOOT_BUILD_INPUTS are the files of that tree the build reads.
HYBRIDBOOT_SRCDIR ??= "${@os.path.normpath(os.path.join(d.getVar('FILE_DIRNAME'), '..', '..', '..', '..'))}"
# nooelint: oelint.vars.mispell.unknown
HYBRIDBOOT_BUILD_INPUTS ??= "Cargo.toml Cargo.lock build.rs LICENSE README.md benches src systemd"
# Or fetch the tree from your git mirror: set HYBRIDBOOT_GIT_URI (without destsuffix) and
# SRCREV:pn-hybridboot to the commit this layer was checked out from (its Cargo.lock is the one
# hybridboot-crates.inc lists), e.g. in local.conf:
#   HYBRIDBOOT_GIT_URI = "git://git.example.com/hybridboot.git;protocol=https;branch=main"
#   SRCREV:pn-hybridboot = "<git -C path/to/hybridboot rev-parse HEAD>"
HYBRIDBOOT_GIT_URI ??= ""
PV .= "${@'+git' if d.getVar('HYBRIDBOOT_GIT_URI') else ''}"
# The tree lies outside this recipe's directory: the fetcher finds its files through
# FILESEXTRAPATHS (a file:// URL with an absolute path would unpack under that whole path).
# nooelint: oelint.vars.fileextrapaths,oelint.vars.outofcontext
FILESEXTRAPATHS:prepend := "${HYBRIDBOOT_SRCDIR}:"
SRC_URI = "${@d.getVar('HYBRIDBOOT_GIT_URI') + ';destsuffix=hybridboot' if d.getVar('HYBRIDBOOT_GIT_URI') else ' '.join('file://%s;subdir=hybridboot' % f for f in '${HYBRIDBOOT_BUILD_INPUTS}'.split())}"

# The fetcher unpacks into UNPACKDIR (styhead and later; scarthgap has none and unpacks into
# WORKDIR, for a build with a newer Rust layer).
S = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}/hybridboot"

inherit cargo pkgconfig systemd

require ${BPN}-crates.inc

# The oldest Rust that builds the locked crates: Cargo.toml's rust-version (tests/packaging.rs
# keeps the two equal and derives it from Cargo.lock). A build whose RUSTVERSION is older skips
# the recipe at parse time with this reason instead of failing in do_compile.
HYBRIDBOOT_RUST_MIN = "1.85"
# tpm-native adds tpm2-protocol, which needs Rust 1.95 (no released Yocto series has it yet).
HYBRIDBOOT_RUST_MIN_TPM_NATIVE = "1.95"

# Key backends are cargo features:
#   tpm        TPM 2.0 through tss-esapi and the image's tpm2-tss (device TCTI at run time);
#              its build script finds the tss2 libraries with pkg-config
#   tpm-native TPM 2.0 through hybridboot's own Rust TPM stack (no tpm2-tss needed)
#   pkcs11     PKCS#11 HSMs and smart cards (the site's module is dlopened at run time)
PACKAGECONFIG ??= "tpm"
PACKAGECONFIG[tpm] = ",,tpm2-tss,libtss2-tcti-device"
PACKAGECONFIG[tpm-native] = ",,,"
PACKAGECONFIG[pkcs11] = ",,,"
# The features reach cargo through CARGO_BUILD_FLAGS, which cargo.bbclass passes to cargo build
# in every series (PACKAGECONFIG_CONFARGS reaches it only since walnascar, so the options above
# carry no configure arguments).
def hybridboot_cargo_features(d):
    features = bb.utils.filter('PACKAGECONFIG', 'tpm tpm-native pkcs11', d).split()
    return ' --features=' + ','.join(features) if features else ''

CARGO_BUILD_FLAGS:append = " --no-default-features${@hybridboot_cargo_features(d)}"

# At parse time, so that a build that cannot work says why before fetching anything.
# nooelint: oelint.task.noanonpython
python __anonymous() {
    gituri = d.getVar('HYBRIDBOOT_GIT_URI')
    if gituri and (d.getVar('SRCREV') or 'INVALID') in ('INVALID', 'AUTOINC'):
        raise bb.parse.SkipRecipe('HYBRIDBOOT_GIT_URI is set but SRCREV is not: set '
                                  'SRCREV:pn-hybridboot to the commit this layer comes from')
    rust = (d.getVar('RUSTVERSION') or '').rstrip('%')
    if not rust:
        return
    need = d.getVar('HYBRIDBOOT_RUST_MIN')
    if bb.utils.vercmp_string_op(rust, need, '<'):
        raise bb.parse.SkipRecipe('hybridboot needs Rust >= %s (its locked crates) but this build '
                                  'has RUSTVERSION %s: use Yocto whinlatter or wrynose, or a layer '
                                  'that provides a newer rust, cargo and libstd-rs' % (need, rust))
    need = d.getVar('HYBRIDBOOT_RUST_MIN_TPM_NATIVE')
    if bb.utils.contains('PACKAGECONFIG', 'tpm-native', True, False, d) and \
            bb.utils.vercmp_string_op(rust, need, '<'):
        raise bb.parse.SkipRecipe('PACKAGECONFIG tpm-native needs Rust >= %s (tpm2-protocol) but '
                                  'this build has RUSTVERSION %s: use the tpm backend (tpm2-tss), '
                                  'or a layer that provides Rust >= %s' % (need, rust, need))
}

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
