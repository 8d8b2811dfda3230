//! The importer on the small official-layout checkpoints of `bench/official_fixtures.py`
//! (`crates/mdm-prime/assets/official/`): configurations read from the files, names and shapes.
//! That the imported networks compute the official logits is tested in `mdm-prime`
//! (`tests/it/import.rs`).

use std::path::PathBuf;

use super::*;
use crate::config::{DataKind, ModelConfig};
use crate::solver::DrawMode;
use crate::tokenizer::TokenizerKind;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../mdm-prime/assets/official")
        .join(name)
}

fn shapes(ts: &[NamedTensor]) -> Vec<(&str, &[usize])> {
    ts.iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice()))
        .collect()
}

#[test]
fn mdlm_checkpoint_reads_its_dictconfig_and_drops_the_mask_row() {
    let imp = read_official(&fixture("mdlm_l1.ckpt"), &ImportOptions::default()).unwrap();
    let c = &imp.config;
    assert_eq!((c.prime.ell, c.prime.carry_over), (1, true));
    assert_eq!(
        (c.data.tokenizer, c.data.seq_len),
        (TokenizerKind::Bytes, 6)
    );
    let ModelConfig::Dit(d) = &c.model else {
        panic!("{:?}", c.model)
    };
    assert_eq!(
        (d.d_model, d.n_layers, d.n_heads, d.cond_dim, d.mlp_ratio),
        (8, 2, 2, 4, 4)
    );
    assert!(d.time_conditioning);
    assert_eq!(
        (c.train.warmup_steps, c.train.batch_size, c.train.ema_decay),
        (2500, 512, 0.9999)
    );
    assert_eq!(c.sample.steps, 256);
    assert_eq!(imp.progress, Progress::Steps(1234));
    let model = shapes(&imp.model);
    assert!(
        model.contains(&("vocab_embed.weight", &[257, 8][..])),
        "{model:?}"
    );
    assert!(model.contains(&("head.weight", &[8, 256][..])), "{model:?}");
    assert!(model.contains(&("head.bias", &[256][..])), "{model:?}");
    assert!(
        model.contains(&("blocks.1.qkv.weight", &[8, 24][..])),
        "{model:?}"
    );
    let ema = imp.ema.unwrap();
    assert_eq!(shapes(&ema), model);
    assert_ne!(
        ema[0].values, imp.model[0].values,
        "the EMA is its own copy"
    );
}

#[test]
fn prime_checkpoint_reads_ell_and_carry_over() {
    let imp = read_official(&fixture("prime_l4_co.ckpt"), &ImportOptions::default()).unwrap();
    let c = &imp.config;
    assert_eq!((c.prime.ell, c.prime.carry_over), (4, true));
    let ModelConfig::Dit(d) = &c.model else {
        panic!()
    };
    assert!(!d.time_conditioning);
    assert!(shapes(&imp.model).contains(&("vocab_embed.weight", &[5, 2][..])));
}

#[test]
fn unet_checkpoint_reads_its_structure_from_the_shapes() {
    let opts = ImportOptions {
        unet_groups: 2,
        unet_head_channels: 6,
        ..ImportOptions::default()
    };
    let imp = read_official(&fixture("unet_l2.pth"), &opts).unwrap();
    let c = &imp.config;
    assert_eq!(c.data.kind, DataKind::Image);
    assert_eq!(c.data.seq_len, 48);
    assert_eq!((c.prime.ell, c.prime.carry_over), (2, false));
    assert_eq!(c.sample.draw, DrawMode::Marginals);
    let ModelConfig::Unet(u) = &c.model else {
        panic!()
    };
    assert_eq!(
        (
            u.embed_dim,
            u.channels,
            u.channel_mult.clone(),
            u.num_res_blocks,
            u.attention_ds.clone()
        ),
        (2, 6, vec![1, 2], 1, vec![2])
    );
    assert_eq!(imp.progress, Progress::Epochs(4250));
    let model = shapes(&imp.model);
    assert!(
        model.contains(&("down.1.attn.qkv.weight", &[36, 12, 1, 1][..])),
        "{model:?}"
    );
    assert!(
        model.contains(&("down.0.res.scale_shift", &[12][..])),
        "{model:?}"
    );
    assert!(
        model.contains(&("out_conv.weight", &[768, 6, 3, 3][..])),
        "{model:?}"
    );
    assert_eq!(shapes(imp.ema.as_ref().unwrap()), model);
}

#[test]
fn a_unet_whose_groups_do_not_divide_the_widths_is_a_config_error() {
    // The official 32 groups cannot split the fixture's 6 channels.
    let err = read_official(&fixture("unet_l2.pth"), &ImportOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("the config read from the checkpoint"),
        "{err}"
    );
}

#[test]
fn a_checkpoint_of_another_kind_is_refused_with_its_keys() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/torch/state_dict.pt");
    let err = read_official(&path, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not an official MDM-Prime checkpoint"),
        "{err}"
    );
}

#[test]
fn a_pickle_that_runs_code_is_refused_naming_the_global() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/torch/malicious.pt");
    let err = read_official(&path, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused global `posix.system`"), "{err}");
    assert!(err.contains("gap in this list"), "{err}");
}
