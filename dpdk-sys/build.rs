//! Generates bindings to the system DPDK and builds the shim for its inline functions.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim.h");
    println!("cargo:rerun-if-changed=shim.c");

    let dpdk = match pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
    {
        Ok(lib) => lib,
        Err(e) => {
            // One line an operator can act on; the full pkg-config text follows for detail.
            eprintln!(
                "error: DPDK 22.11 not found by pkg-config (libdpdk): install the Debian package libdpdk-dev (apt-get install libdpdk-dev)"
            );
            panic!("libdpdk not found: install libdpdk-dev ({e})");
        }
    };

    // pkg-config's cflags carry `-include rte_config.h -march=corei7`: rte_memcpy.h needs
    // the SSSE3 that -march brings, so both clang (bindgen) and cc get them unchanged.
    let cflags: Vec<String> = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();

    // rte_vdev_init (creating TAP ports at run time) lives in the vdev bus driver,
    // which pkg-config does not list among the libraries to link.
    println!("cargo:rustc-link-lib=dylib=rte_bus_vdev");

    let mut shim = cc::Build::new();
    shim.file("shim.c").include(".").opt_level(3).warnings(true);
    for f in &cflags {
        shim.flag(f);
    }
    for p in &dpdk.include_paths {
        shim.include(p);
    }
    shim.compile("siplb_dpdk_shim");

    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(cflags.iter())
        .clang_arg("-I.")
        .allowlist_function("rte_.*")
        .allowlist_function("shim_.*")
        .allowlist_var("RTE_.*")
        .allowlist_var("RING_F_.*")
        .allowlist_type("rte_eth_conf")
        // Packed structs with an align(2) member that Rust cannot express.
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_arp_ipv4")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for p in &dpdk.include_paths {
        builder = builder.clang_arg(format!("-I{}", p.display()));
    }
    let bindings = builder
        .generate()
        .expect("bindgen failed on the DPDK headers");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings
        .write_to_file(out)
        .expect("could not write bindings.rs");
}
