//! Where the Inception forward spends its time, per stage (a measurement, by hand):
//! `cargo run --release -p mdm-prime --example inception_profile -- default_1.pt [batch]`.
use std::time::Instant;

use mdm_prime::inception::Inception;
use mdm_prime_core::metrics::inception::InceptionWeights;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: inception_profile default_1.pt [batch]")?;
    let batch: usize = args.next().map(|b| b.parse()).transpose()?.unwrap_or(50);
    let device = mdm_prime::device::cpu();
    let net = Inception::new(&InceptionWeights::load(path.as_ref())?, &device);
    let pixels: Vec<u8> = (0..batch * 28 * 28).map(|i| (i * 37 % 256) as u8).collect();
    let shape = mdm_prime_core::data::image::ImageShape::new(28, 28, 1);
    for round in 0..2 {
        let t = Instant::now();
        let x = net.transform(&pixels, batch, shape);
        let _: Vec<f32> = x.clone().sum().try_into_vec_as().unwrap_or_default();
        let t_in = t.elapsed().as_secs_f64();
        let stages = net.features_timed(x);
        let total: f64 = stages.iter().map(|(_, s)| s).sum();
        println!(
            "round {round}: transform {t_in:.3} s, network {total:.2} s, {:.1} images/s",
            batch as f64 / (total + t_in)
        );
        for (name, s) in stages {
            println!("  {name:10} {s:.3} s ({:.0}%)", 100.0 * s / total);
        }
    }
    Ok(())
}
