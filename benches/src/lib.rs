//! What the bench binaries share.

pub mod measure;

/// A binary built beside the running one (`ferry`, `baseline-bench`), checked to exist.
pub fn sibling(name: &str) -> std::path::PathBuf {
    let bin = std::env::current_exe()
        .expect("exe")
        .parent()
        .expect("dir")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "build the binaries first: cargo build --release -p ferry -p ferry-benches"
    );
    bin
}
