"""Write the bundled UNTRAINED demonstration models (deterministic: fixed seed).

They exist so the pipeline runs end to end before our trained model is bundled; their output is
not an enhanced map, and every run that uses them says so.
"""
from pathlib import Path

import torch

from deepemhancer.models.store import save_model
from deepemhancer.nn import UNet, count_parameters

BUNDLED = Path(__file__).resolve().parent.parent / "deepemhancer" / "models" / "bundled"
WIDTH = 0.125


def write(name: str, normalization: str, default: bool, seed: int) -> None:
    torch.manual_seed(seed)
    network = UNet(width=WIDTH)
    metadata = {
        "name": name,
        "description": f"UNTRAINED U-Net (Table-1 layout, width {WIDTH}, {count_parameters(network):,} parameters, "
                       f"seed {seed}) for demonstrations; {normalization} normalisation",
        "architecture": network.architecture(),
        "normalization": normalization,
        "cube_size": 64,
        "stride": 16,
        "voxel_size": 1.0,
        "trained": False,
        "default": default,
    }
    path = save_model(BUNDLED / f"{name}.json", metadata, network.state_dict())
    print(f"wrote {path}")


if __name__ == "__main__":
    write("demo-untrained", "noise", default=True, seed=2021)
    write("demo-untrained-masked", "masked", default=False, seed=2022)
