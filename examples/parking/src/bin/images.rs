//! `spright-parking-images <dir> <count>`: writes camera frames `0.pgm`..`<count-1>.pgm` for
//! the parking workload's load generator, and `plates.txt` with the plate in each, one per line.
//! Frames alternate between registered vehicles and visitors.

use anyhow::{bail, Context};
use spright_example_parking::stages::REGISTERED;
use spright_example_parking::vision::{pgm, synth};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(count)) = (args.next(), args.next()) else {
        bail!("usage: spright-parking-images <dir> <count>");
    };
    let dir = PathBuf::from(dir);
    let count: u64 = count.parse().context("count must be a number")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut plates = String::new();
    for i in 0..count {
        // Even frames: registered vehicles; odd: visitors (seeds past the registry).
        let seed = if i % 2 == 0 {
            i / 2 % REGISTERED
        } else {
            REGISTERED + i
        };
        let plate = synth::random_plate(seed);
        let path = dir.join(format!("{i}.pgm"));
        std::fs::write(&path, pgm::encode(&synth::plate_image(&plate, seed)))
            .with_context(|| format!("writing {}", path.display()))?;
        plates.push_str(&plate);
        plates.push('\n');
    }
    std::fs::write(dir.join("plates.txt"), plates)?;
    Ok(())
}
