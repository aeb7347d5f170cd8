#!/bin/bash
# Parses meta-hybridboot with real bitbake and OpenEmbedded-Core, offline, and checks what the
# recipes resolve to. Not part of `make test` (it needs checkouts of the Yocto layers).
#
# Usage: parse-check.sh [options] SRCDIR BUILDDIR
#   SRCDIR holds checkouts of one Yocto series (the branch named after it, e.g. wrynose):
#     bitbake/ (the matching bitbake branch, e.g. 2.18 for wrynose, 2.16 for whinlatter),
#     openembedded-core/, meta-openembedded/, meta-security/, meta-yocto/
#   BUILDDIR is created (conf/, tmp/, downloads/) and may be reused by later runs.
# Options:
#   --machine M         MACHINE (default qemux86-64)
#   --crates DIR        a directory of <name>-<version>.crate files (e.g. cargo's registry
#                       cache, ~/.cargo/registry/cache/index.crates.io-*/): copied into the
#                       build's DL_DIR, so that `bitbake -c unpack hybridboot` runs offline too
#   --allow-series S    also accept series S for this run (LAYERSERIES_COMPAT): to see what a
#                       series the layer does not list says about the recipe
#   --recipe-only       skip the full parse, the dry runs and the unpack: only parse the recipe
#                       (tinfoil) under its configurations (with --allow-series: what a series
#                       the layer does not list says, in seconds)
#   --full              parse every recipe of meta-openembedded too; by default its recipes
#                       are masked (BBMASK; its layers and classes stay), which leaves OE-Core,
#                       meta-poky, meta-tpm and this layer: all that the agent and
#                       core-image-minimal need, in a fraction of the parse time
# Run it as an ordinary user: bitbake refuses root (`runuser -u USER -- parse-check.sh ...`).
# Steps (each must pass): bitbake -p; bitbake -e hybridboot (cargo features, S, DEPENDS,
# units); the recipe parsed (tinfoil) with other PACKAGECONFIGs, a git mirror with and without
# SRCREV, and an older RUSTVERSION (the recipe must skip itself, saying why); bitbake -e
# core-image-minimal (the image installs both packages, systemd is init); bitbake -n
# hybridboot (dry run); bitbake -g core-image-minimal (its task graph has the agent, its
# config, tpm2-tss and systemd); with --crates: bitbake -c unpack hybridboot
# (the local source and every locked crate unpack, do_unpack's QA passes).
set -euo pipefail

machine=qemux86-64
crates=""
allow=""
full=""
recipe_only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --machine) machine="$2"; shift 2 ;;
        --crates) crates="$2"; shift 2 ;;
        --allow-series) allow="$2"; shift 2 ;;
        --full) full=1; shift ;;
        --recipe-only) recipe_only=1; shift ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        -*) echo "parse-check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [ $# -ne 2 ]; then
    echo "usage: parse-check.sh [--machine M] [--crates DIR] [--allow-series S] SRCDIR BUILDDIR" >&2
    exit 2
fi
if [ "$(id -u)" = 0 ]; then
    echo "parse-check.sh: bitbake refuses to run as root; run as an ordinary user (runuser -u USER -- $0 ...)" >&2
    exit 2
fi
src=$(cd "$1" && pwd)
layer=${HYBRIDBOOT_LAYER:-$(cd "$(dirname "$0")/.." && pwd)}
for d in bitbake openembedded-core meta-openembedded meta-security meta-yocto; do
    if [ ! -d "$src/$d" ]; then
        echo "parse-check.sh: $src/$d is missing (a checkout of $d at the series' branch)" >&2
        exit 2
    fi
done
mkdir -p "$2/conf"
build=$(cd "$2" && pwd)
log="$build/parse-check.log"
: > "$log"

cat > "$build/conf/bblayers.conf" <<EOF
BBPATH = "\${TOPDIR}"
BBFILES ?= ""
BBLAYERS = " \\
  $src/openembedded-core/meta \\
  $src/meta-yocto/meta-poky \\
  $src/meta-openembedded/meta-oe \\
  $src/meta-openembedded/meta-python \\
  $src/meta-security/meta-tpm \\
  $layer \\
"
EOF
cat > "$build/conf/local.conf" <<EOF
MACHINE = "$machine"
DISTRO = "hybridnode"
BB_NO_NETWORK = "1"
DL_DIR = "$build/downloads"
SSTATE_DIR = "$build/sstate-cache"
TMPDIR = "$build/tmp"
PACKAGE_CLASSES = "package_ipk"
CONF_VERSION = "2"
EOF
if [ -z "$full" ]; then
    echo "BBMASK += \"$src/meta-openembedded/meta-oe/(recipes-.*|dynamic-layers)/ $src/meta-openembedded/meta-python/(recipes-.*|dynamic-layers)/\"" >> "$build/conf/local.conf"
fi
if [ -n "$allow" ]; then
    # bitbake checks the series right after the layer.conf files, before local.conf; an
    # :append set earlier survives layer.conf's plain assignment.
    echo "LAYERSERIES_COMPAT_hybridboot:append = \" $allow\"" >> "$build/conf/bblayers.conf"
fi
: > "$build/conf/auto.conf"

export PATH="$src/bitbake/bin:$src/openembedded-core/scripts:$PATH"
export BBPATH="$build"
unset BBSERVER || true
cd "$build"

fail=0
step() { echo "== $*" | tee -a "$log"; }
ok() { echo "   ok: $*" | tee -a "$log"; }
bad() { echo "   FAIL: $*" | tee -a "$log"; fail=1; }
# value VAR FILE: the value bitbake -e printed for VAR (export lines included)
value() { sed -n "s/^\(export \)\{0,1\}$1=\"\(.*\)\"\$/\2/p" "$2" | tail -1; }
expect() { # expect FILE VAR SUBSTRING WHAT
    local v; v=$(value "$2" "$1")
    case " $v " in *"$3"*) ok "$4: $2 has \"$3\"" ;; *) bad "$4: $2 lacks \"$3\" (it is \"$v\")" ;; esac
}
reject() { # reject FILE VAR SUBSTRING WHAT
    local v; v=$(value "$2" "$1")
    case " $v " in *"$3"*) bad "$4: $2 has \"$3\" (\"$v\")" ;; *) ok "$4: $2 has no \"$3\"" ;; esac
}
run() { # run NAME bitbake-args...: output to $build/NAME.out
    local name=$1; shift
    if bitbake "$@" > "$build/$name.out" 2>&1; then
        ok "bitbake $* (output: $build/$name.out)"
        return 0
    fi
    bad "bitbake $* failed; last lines of $build/$name.out:"
    tail -25 "$build/$name.out" | sed 's/^/      /' | tee -a "$log"
    return 1
}

step "series: ${full:+(--full) }$(sed -n 's/^LAYERSERIES_CORENAMES = "\(.*\)"/\1/p' "$src/openembedded-core/meta/conf/layer.conf"), bitbake $(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$src/bitbake/lib/bb/__init__.py"), python $(python3 -c 'import platform; print(platform.python_version())'), MACHINE $machine"
if [ -z "$recipe_only" ]; then
step "bitbake -p"
run parse -p || { echo "parse failed: see $log" >&2; exit 1; }
if grep -q 'hybridboot.*[Ss]kip' "$build/parse.out"; then
    bad "the recipe was skipped:"; grep -i 'skip' "$build/parse.out" | sed 's/^/      /' | tee -a "$log"
fi

step "bitbake -e hybridboot (default PACKAGECONFIG)"
if run env-default -e hybridboot; then
    e="$build/env-default.out"
    expect "$e" PACKAGECONFIG tpm "default backend"
    expect "$e" CARGO_BUILD_FLAGS "--no-default-features --features=tpm" "cargo features"
    reject "$e" CARGO_BUILD_FLAGS "pkcs11" "cargo features"
    expect "$e" DEPENDS tpm2-tss "tpm needs tpm2-tss"
    # pkgconfig.bbclass: pkgconfig-native up to whinlatter, pkgconf-native since wrynose
    expect "$e" DEPENDS pkgconf "tss-esapi's build script runs pkg-config"
    expect "$e" RDEPENDS:hybridboot libtss2-tcti-device "device TCTI at run time"
    unpackdir=$(value UNPACKDIR "$e")
    s=$(value S "$e")
    if [ -n "$unpackdir" ] && [ "$s" = "$unpackdir/hybridboot" ]; then ok "S = $s (in UNPACKDIR)"; else bad "S = $s, UNPACKDIR = $unpackdir"; fi
    expect "$e" SRC_URI "file://Cargo.lock;subdir=hybridboot" "source is the tree the layer is part of"
    expect "$e" SRC_URI "crate://crates.io/" "locked crates"
    reject "$e" SRC_URI "git://" "no git source by default"
    reject "$e" SRCREV "AUTOINC" "no floating revision"
    expect "$e" SYSTEMD_SERVICE:hybridboot "hybridboot-firstboot.service hybridboot-renew.timer" "units"
    expect "$e" SYSTEMD_AUTO_ENABLE:hybridboot "enable" "units enabled"
    expect "$e" DISTRO_FEATURES systemd "init"
    reject "$e" DISTRO_FEATURES sysvinit "init"
    rust=$(value RUSTVERSION "$e")
    ok "RUSTVERSION $rust, HYBRIDBOOT_RUST_MIN $(value HYBRIDBOOT_RUST_MIN "$e")"
fi

fi

# The other configurations of the recipe, parsed through tinfoil with the same base
# configuration plus one setting each: a change to local.conf would make bitbake reparse every
# recipe of every layer for each of them.
step "other configurations of the recipe (tinfoil: the recipe parsed with one more setting)"
# The bitbake server outlives one tinfoil session, and seeing the same recipe parsed under
# another configuration it reports "basehash value changed" (true, and expected here): those
# lines go to tinfoil.err, not to the log.
if BITBAKEDIR="$src/bitbake" RECIPE="$layer/recipes-core/hybridboot/hybridboot_0.1.0.bb" \
    python3 - >> "$log" 2> "$build/tinfoil.err" <<'PYEOF2'
import os
import sys
sys.path.insert(0, os.path.join(os.environ["BITBAKEDIR"], "lib"))
import bb.data
import bb.tinfoil
import bb.utils

RUST_MIN, RUST_NATIVE = "1.85", "1.95"
GIT = "git://git.example.com/hybridboot.git;protocol=https;branch=main"
# (name, settings, {var: substring expected}, {var: substring refused})
cases = [
    ("PACKAGECONFIG default (tpm)", {},
     {"CARGO_BUILD_FLAGS": "--no-default-features --features=tpm", "DEPENDS": "tpm2-tss"}, {}),
    ("PACKAGECONFIG pkcs11", {"PACKAGECONFIG:pn-hybridboot": "pkcs11"},
     {"CARGO_BUILD_FLAGS": "--no-default-features --features=pkcs11"},
     {"DEPENDS": "tpm2-tss", "CARGO_BUILD_FLAGS": "--features=tpm"}),
    ("PACKAGECONFIG tpm pkcs11", {"PACKAGECONFIG:pn-hybridboot": "tpm pkcs11"},
     {"CARGO_BUILD_FLAGS": "--no-default-features --features=pkcs11,tpm", "DEPENDS": "tpm2-tss"},
     {}),
    ("PACKAGECONFIG tpm-native pkcs11", {"PACKAGECONFIG:pn-hybridboot": "tpm-native pkcs11"},
     {"CARGO_BUILD_FLAGS": "--no-default-features --features=pkcs11,tpm-native"},
     {"DEPENDS": "tpm2-tss"}),
    ("git mirror without SRCREV", {"HYBRIDBOOT_GIT_URI": GIT}, {}, {}),
    ("git mirror with SRCREV", {"HYBRIDBOOT_GIT_URI": GIT,
                                "SRCREV:pn-hybridboot": "0123456789abcdef0123456789abcdef01234567"},
     {"SRC_URI": GIT + ";destsuffix=hybridboot", "PV": "0.1.0+git"}, {"SRC_URI": "file://"}),
    ("RUSTVERSION 1.84.1 (walnascar's)", {"RUSTVERSION": "1.84.1%"}, {}, {}),
    ("RUSTVERSION 1.90 (as a newer Rust layer would set it)", {"RUSTVERSION": "1.90%"},
     {"CARGO_BUILD_FLAGS": "--no-default-features --features=tpm"}, {}),
]


def expected_skip(settings, rust):
    """The reason the recipe must give for skipping itself, or None."""
    if "HYBRIDBOOT_GIT_URI" in settings and "SRCREV:pn-hybridboot" not in settings:
        return "HYBRIDBOOT_GIT_URI is set but SRCREV is not"
    if rust and bb.utils.vercmp_string_op(rust, RUST_MIN, "<"):
        return "hybridboot needs Rust >= " + RUST_MIN
    native = "tpm-native" in settings.get("PACKAGECONFIG:pn-hybridboot", "")
    if native and rust and bb.utils.vercmp_string_op(rust, RUST_NATIVE, "<"):
        return "PACKAGECONFIG tpm-native needs Rust >= " + RUST_NATIVE
    return None


failed = 0
for name, settings, want, refuse in cases:
    # A server of its own for each: one that parsed the recipe under another configuration
    # would (rightly) report changed task hashes.
    with bb.tinfoil.Tinfoil() as tf:
        tf.prepare(config_only=True, quiet=2)
        d = bb.data.createCopy(tf.config_data)
        for k, v in settings.items():
            d.setVar(k, v)
        rust = (d.getVar("RUSTVERSION") or "").rstrip("%")
        skip = expected_skip(settings, rust)
        try:
            rd = tf.parse_recipe_file(os.environ["RECIPE"], appends=False, config_data=d)
            err = rd.getVar("__SKIPPED")
            if err:
                err = "skipped: " + err
        except Exception as e:
            rd, err = None, str(e)
        problems = []
        if skip:
            if err is None or skip not in err:
                problems.append("expected the recipe to be skipped with %r, got %r" % (skip, err))
        elif err is not None:
            problems.append("parse failed: %s" % err)
        else:
            for var, sub in want.items():
                if sub not in (rd.getVar(var) or ""):
                    problems.append("%s lacks %r (%r)" % (var, sub, rd.getVar(var)))
            for var, sub in refuse.items():
                if sub in (rd.getVar(var) or ""):
                    problems.append("%s has %r (%r)" % (var, sub, rd.getVar(var)))
            # scarthgap has no UNPACKDIR and unpacks into WORKDIR
            s, unpackdir = rd.getVar("S"), rd.getVar("UNPACKDIR") or rd.getVar("WORKDIR")
            if s != unpackdir + "/hybridboot":
                problems.append("S = %s, UNPACKDIR/WORKDIR = %s" % (s, unpackdir))
        label = "%s [RUSTVERSION %s]" % (name, rust)
        if problems:
            failed = 1
            print("   FAIL: %s: %s" % (label, "; ".join(problems)))
        elif skip:
            print("   ok: %s: %s" % (label, err.strip().splitlines()[-1][:230]))
        else:
            print("   ok: %s: CARGO_BUILD_FLAGS ...%s, S %s, SRC_URI %s..." % (
                label, rd.getVar("CARGO_BUILD_FLAGS").split("--no-default-features")[-1],
                rd.getVar("S"), rd.getVar("SRC_URI").split()[0]))
sys.exit(failed)
PYEOF2
then
    ok "all configurations as expected"
else
    bad "a configuration differs (see the lines above in $log)"
fi
sed -n '/^== other configurations/,$p' "$log" | grep -E '^   (ok|FAIL): ' | grep -v "all configurations" || true

if [ -z "$recipe_only" ]; then
step "bitbake -e core-image-minimal"
if run env-image -e core-image-minimal; then
    e="$build/env-image.out"
    expect "$e" IMAGE_INSTALL "hybridboot hybridboot-config" "image installs the agent"
    expect "$e" VIRTUAL-RUNTIME_init_manager systemd "systemd is PID 1"
fi

step "bitbake -e hybridboot-config"
if run env-config -e hybridboot-config; then
    e="$build/env-config.out"
    unpackdir=$(value UNPACKDIR "$e")
    s=$(value S "$e")
    if [ "$s" = "$unpackdir" ]; then ok "S = UNPACKDIR ($s)"; else bad "S = $s, UNPACKDIR = $unpackdir"; fi
fi

step "dry run of hybridboot, task graph of core-image-minimal"
run dry-hybridboot -n hybridboot || true
# A dry run of the whole image walks some 5,000 tasks; its task graph (every provider resolved,
# the image's runqueue built) says what matters here in a fraction of the time.
if run graph-image -g core-image-minimal; then
    for task in hybridboot.do_compile hybridboot-config.do_install tpm2-tss.do_compile systemd.do_compile; do
        if grep -q "\"$task\"" "$build/task-depends.dot"; then ok "core-image-minimal's task graph has $task"; else bad "core-image-minimal's task graph lacks $task"; fi
    done
fi

if [ -n "$crates" ]; then
    step "bitbake -c unpack hybridboot (crates from $crates)"
    mkdir -p "$build/downloads"
    n=0
    for c in "$crates"/*.crate; do
        [ -e "$c" ] || continue
        cp -n "$c" "$build/downloads/" && n=$((n + 1))
    done
    ok "$n crate files in DL_DIR"
    if run unpack -c unpack hybridboot; then
        e="$build/env-default.out"
        s=$(value S "$e")
        for f in Cargo.toml Cargo.lock build.rs src/main.rs systemd/hybridboot-firstboot.service; do
            if [ -e "$s/$f" ]; then ok "unpacked $f"; else bad "$s/$f missing after do_unpack"; fi
        done
        vendor=$(value CARGO_VENDORING_DIRECTORY "$e")
        want=$(grep -c '^SRC_URI\[' "$layer/recipes-core/hybridboot/hybridboot-crates.inc")
        have=$(find "$vendor" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)
        if [ "$have" = "$want" ]; then ok "$have crates vendored for cargo in $vendor"; else bad "$have of $want crates vendored in $vendor"; fi
    fi
fi

fi

if [ "$fail" = 0 ]; then echo "parse-check: all passed (log: $log)"; else echo "parse-check: FAILED (log: $log)"; fi
exit "$fail"
