//! Locating the workspace's binaries from a test or the demo.

use std::path::PathBuf;

/// The path of a binary built in the same target directory as the running executable
/// (`target/<profile>/` for binaries, `target/<profile>/deps/` for tests).
pub fn path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace --bins` (same profile) first",
        p.display()
    );
    p
}
