//! Writes the valid inputs that start each fuzz target's corpus:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/seeds`
//! makes `fuzz/seeds/<target>/<n>`. `.ci/fuzz` runs it before fuzzing, so the seeds always
//! match the current formats.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds".into()),
    );
    let seeds = confer_fuzz::seeds();
    let mut per_target = std::collections::BTreeMap::<&str, usize>::new();
    for (target, bytes) in &seeds {
        let i = per_target.entry(target).or_default();
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join(format!("seed-{i}")), bytes)?;
        *i += 1;
    }
    println!("wrote {} seeds under {}", seeds.len(), dir.display());
    Ok(())
}
