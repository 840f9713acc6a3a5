"""``ltcl export CKPT OUT``: a trained backbone as a plain ``state_dict`` plus a small JSON.

    ltcl export runs/sdclr/version_0/checkpoints/last.ckpt backbone.pt   # + backbone.json

The weights are the backbone's only (no projector, no probe; SDCLR: the dense branch with the
dense batch norm, masks dropped), saved with ``torch.save`` as a dict of tensors (loadable with
``weights_only=True``). For ``resnet18_cifar``, ``resnet50`` and ``resnext50_32x4d`` the keys are
torchvision's, so that::

    net = torchvision.models.resnet18(); net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = net.fc = nn.Identity()          # ResNet-18-CIFAR (see backbone.json)
    net.load_state_dict(torch.load("backbone.pt", weights_only=True))

computes the same features (resnet50 / resnext50_32x4d: ``fc = nn.Identity()``). Other backbones
keep their own keys (``torchvision: null`` in the JSON). The JSON records the method, the
datamodule, the input normalisation and image size, the feature dimension and the backbone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ltcl_lightning.methods.linear_probe import checkpoint_datamodule, data_signature, load_pretrained
from ltcl_lightning.modules.backbones import TORCHVISION_EQUIVALENT, to_torchvision_state_dict


def export(checkpoint: str, out: str | Path, method: str | None = None) -> dict:
    """Write ``out`` (the state_dict) and ``out`` with suffix ``.json``; return the JSON's content."""
    backbone, counts, num_classes, hparams = load_pretrained(checkpoint, method)
    dense = backbone.to_dense() if hasattr(backbone, "to_dense") else backbone  # type: ignore[operator]  # SDCLR: the dense branch
    name = hparams.get("backbone")
    state = {k: v.detach().clone() for k, v in dense.state_dict().items()}
    torchvision_layout = None
    if isinstance(name, str) and name in TORCHVISION_EQUIVALENT:
        state = to_torchvision_state_dict(name, state)
        torchvision_layout = TORCHVISION_EQUIVALENT[name][0]
    # the pre-training data's normalisation and image size (rebuilt without reading any data)
    data = data_signature(checkpoint_datamodule(hparams, repr(checkpoint))) if hparams.get("_datamodule_class") else {}
    info = {
        "checkpoint": str(checkpoint),
        "method": hparams.get("_method_class"),
        "datamodule": hparams.get("_datamodule_class"),
        "num_classes": num_classes,
        "mean": list(data["mean"]) if data.get("mean") else None,
        "std": list(data["std"]) if data.get("std") else None,
        "image_size": data.get("image_size"),
        "backbone": name if isinstance(name, str) else type(dense).__name__,
        "feature_dim": int(backbone.out_dim),  # type: ignore[arg-type]
        "torchvision": torchvision_layout,
        "class_counts": counts.tolist(),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(
        prog="ltcl export",
        description="Export a checkpoint's backbone as a plain state_dict "
        "(torchvision keys for ResNet-18-CIFAR / ResNet-50 / ResNeXt-50) plus a JSON description.",
    )
    p.add_argument("checkpoint", help="a .ckpt written by `ltcl fit`")
    p.add_argument("out", help="where to write the state_dict (e.g. backbone.pt); the JSON goes next to it (backbone.json)")
    p.add_argument("--method", default=None, help="class path of the method, if the checkpoint does not record it")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    info = export(args.checkpoint, args.out, args.method)
    print(
        f"ltcl export: {args.out} ({info['backbone']}, {info['feature_dim']}-d features"
        f"{', torchvision keys' if info['torchvision'] else ''}) and {Path(args.out).with_suffix('.json')}",
        flush=True,
    )
    return info


if __name__ == "__main__":
    main()
