"""Writes the PyTorch archives that `mdm_prime_core::torch` tests read.

Run from the repository root with any Python that has PyTorch (the bench venv does):

    /work/wt-flash/bench/.venv/bin/python bench/torch_fixtures.py

It writes `crates/mdm-prime-core/assets/torch/`: a few tiny `torch.save` / `torch.jit.save`
archives, two malicious pickles, and `expected.json` with what PyTorch itself reads back (names,
dtypes, shapes, strides, storage offsets and values as float32), which the Rust tests compare
against. Seeded; the archives are a few KB each.
"""

import argparse
import collections
import dataclasses
import json
import os
import pickle
import sys

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "mdm-prime-core",
                   "assets", "torch")


@dataclasses.dataclass
class TinyConfig:
    """A config class the reader refuses unless the caller allows it as plain data."""
    hidden: int = 8
    name: str = "tiny"


class Evil:
    """Unpickling this in Python would run `os.system`; the Rust reader must refuse it."""

    def __reduce__(self):
        return (os.system, ("echo pwned-by-pickle",))


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3)
        self.bn = torch.nn.BatchNorm2d(3)
        self.head = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).mean((2, 3)))


def describe(name, t):
    t = t.detach()
    return {
        "name": name,
        "dtype": str(t.dtype).removeprefix("torch."),
        "shape": list(t.shape),
        "stride": list(t.stride()),
        "offset": t.storage_offset(),
        "values": [float(v) for v in t.float().flatten().tolist()],
    }


def state_dict_fixture():
    g = torch.Generator().manual_seed(0)
    base = torch.arange(12, dtype=torch.float32) * 0.25 - 1.0
    sd = collections.OrderedDict()
    sd["w32"] = torch.randn(2, 3, generator=g)
    sd["h16"] = torch.tensor([1.0, -2.5, 65504.0, 6.1e-5, 5.96e-8, 0.0], dtype=torch.float16)
    sd["b16"] = torch.tensor([[1.0, -3.140625], [1e30, -1e-30]], dtype=torch.bfloat16)
    sd["transposed"] = torch.randn(3, 4, generator=g).t()       # shape (4, 3), stride (1, 4)
    sd["base"] = base                                            # storage shared with the next two
    sd["view"] = base[3:9].view(2, 3)                           # offset 3
    sd["every_third"] = base[1::3]                              # offset 1, stride (3,)
    sd["scalar"] = torch.tensor(7.5)                            # shape ()
    sd["empty"] = torch.zeros(0, 3)
    sd["param"] = torch.nn.Parameter(torch.ones(2))
    sd["long"] = torch.tensor([1, 2, 3], dtype=torch.int64)     # not a float: tensor_f32 refuses
    return sd


def lightning_fixture():
    g = torch.Generator().manual_seed(1)
    sd = collections.OrderedDict(
        [("backbone.weight", torch.randn(2, 2, generator=g)), ("backbone.bias", torch.zeros(2))])
    return {
        "epoch": 3,
        "global_step": 1234,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": sd,
        "ema": {"decay": 0.9999, "num_updates": 1234,
                "shadow_params": [torch.randn(2, 2, generator=g), torch.full((2,), 0.5)]},
        "hyper_parameters": {
            "config": {"lr": 3e-4, "layers": [1, 2, 3], "name": "tiny", "flag": True,
                       "nothing": None, "pair": (1, "a"), "big": 2 ** 40, "neg": -5,
                       "huge": -(2 ** 62), "raw": b"\x00\x01\xff", "tags": {"x"},
                       "device": torch.device("cuda", 0)},
            "args": argparse.Namespace(seed=42, data="cifar10", ell=2),
        },
    }


def image_fixture(model):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(1, 2, 5, 5)).sum().backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "lr_schedule": {"last_epoch": 1},
        "epoch": 1,
        "scaler": None,
        "args": argparse.Namespace(batch_size=4, lr=1e-3, ell=2),
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    expected = {"torch": torch.__version__, "python": sys.version.split()[0]}

    sd = state_dict_fixture()
    torch.save(sd, os.path.join(OUT, "state_dict.pt"))
    expected["state_dict.pt"] = [describe(k, v) for k, v in sd.items()]

    ckpt = lightning_fixture()
    torch.save(ckpt, os.path.join(OUT, "lightning.ckpt"))
    expected["lightning.ckpt"] = {
        "state_dict": [describe(k, v) for k, v in ckpt["state_dict"].items()],
        "shadow_params": [describe(str(i), v) for i, v in enumerate(ckpt["ema"]["shadow_params"])],
    }

    model = Tiny()
    model.eval()
    image = image_fixture(model)
    torch.save(image, os.path.join(OUT, "image.pth"))
    expected["image.pth"] = {
        "model": [describe(k, v) for k, v in image["model"].items()],
        "exp_avg.0": describe("exp_avg.0", image["optimizer"]["state"][0]["exp_avg"]),
    }

    scripted = torch.jit.script(model)
    torch.jit.save(scripted, os.path.join(OUT, "script.pt"))
    # What the Rust walk should name: parameters and buffers by attribute path.
    expected["script.pt"] = [describe(k, v) for k, v in
                             list(model.named_parameters()) + list(model.named_buffers())]

    torch.save({"config": TinyConfig(), "w": torch.ones(1)}, os.path.join(OUT, "custom_class.pt"))

    # torch.save of an object whose __reduce__ calls os.system: the global is `posix.system`.
    torch.save({"payload": Evil()}, os.path.join(OUT, "malicious.pt"))
    with open(os.path.join(OUT, "malicious.pkl"), "wb") as f:
        pickle.dump(Evil(), f, protocol=2)

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    for name in sorted(os.listdir(OUT)):
        print(f"{name}: {os.path.getsize(os.path.join(OUT, name))} bytes")


if __name__ == "__main__":
    main()
