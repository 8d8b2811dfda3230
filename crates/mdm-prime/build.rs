//! Records the git commit (and whether the tree was dirty) as MDM_PRIME_GIT for run directories.

fn main() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let version = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty { format!("{rev}-dirty") } else { rev }
        }
        None => "unknown".to_string(),
    };
    println!("cargo:rustc-env=MDM_PRIME_GIT={version}");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/index");
    // An edit to a tracked source makes the tree dirty without touching the index: without
    // these a binary built from edited sources would name the clean commit (seen: a run
    // resumed by such a build recorded the commit before the edit).
    for dir in [
        "src",
        "../mdm-prime-core/src",
        "../mdm-prime-core/assets",
        "../mdm-prime-cli/src",
        "../../configs",
    ] {
        println!("cargo:rerun-if-changed={dir}");
    }
    // A commit moves the branch, not HEAD (which names the branch). Only paths that exist: a
    // missing one would make cargo rerun this script on every build.
    for path in ["../../.git/refs/heads", "../../.git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
