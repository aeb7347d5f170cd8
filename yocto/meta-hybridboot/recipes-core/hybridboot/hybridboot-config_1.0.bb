SUMMARY = "Site configuration for hybridboot (NodeConfig and BootstrapConfig)"
DESCRIPTION = "The slot for a site's /etc/hybridboot/config.yaml. Replace config.yaml in a \
               bbappend of your own layer with the site's NodeConfig and BootstrapConfig."
HOMEPAGE = "https://github.com/hybridboot/hybridboot"
BUGTRACKER = "https://github.com/hybridboot/hybridboot/issues"
SECTION = "admin"
CVE_PRODUCT = ""
# A site's configuration belongs to the site.
LICENSE = "CLOSED"

SRC_URI = "file://config.yaml"

# The fetcher puts local files into UNPACKDIR (styhead and later; whinlatter and later refuse
# S = "${WORKDIR}"); scarthgap has no UNPACKDIR and unpacks into WORKDIR.
S = "${@d.getVar('UNPACKDIR') or d.getVar('WORKDIR')}"

inherit allarch

do_install() {
    install -d ${D}${sysconfdir}/hybridboot
    install -m 0600 ${S}/config.yaml ${D}${sysconfdir}/hybridboot/config.yaml
}

FILES:${PN} += "${sysconfdir}/hybridboot"
CONFFILES:${PN} = "${sysconfdir}/hybridboot/config.yaml"
