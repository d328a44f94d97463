"""Run every shipped bundle's three TorchScript files on fixed inputs with whatever torch this
Python has; save the outputs (``save``) or compare them with saved ones (``compare``).

Used by check-older-torch.sh: the bundles are exported with a recent torch, and Slicer platforms
such as Intel macOS have only older ones (2.2.2), so it tells which torch really loads them.
It reads the TorchScript files directly: the older torch's Python need not have the package.
"""

import sys
from pathlib import Path

import torch

MODELS = Path(__file__).resolve().parents[1] / "CycleGANExplain" / "CycleGANExplainLib" / "resources" / "models"
FILES = ("classifier.pt", "generator_pos.pt", "generator_neg.pt")


def outputs() -> dict:
    torch.manual_seed(0)
    x = torch.rand(4, 1, 64, 64) * 2 - 1
    result = {}
    for bundle in sorted(path for path in MODELS.iterdir() if (path / "SHA256SUMS").is_file()):
        for name in FILES:
            key = f"{bundle.name}/{name}"
            try:
                with torch.no_grad():
                    result[key] = torch.jit.load(str(bundle / name), map_location="cpu").eval()(x)
            except Exception as error:  # noqa: BLE001 - the point is to report what fails to load
                result[key] = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:150]}"
    return result


def main(mode: str, path: str) -> int:
    if mode == "save":
        torch.save(outputs(), path)
        return 0
    reference, here = torch.load(path), outputs()
    failed = 0
    print(f"torch {torch.__version__} against the outputs saved with the package's torch:")
    for key, expected in reference.items():
        got = here[key]
        if isinstance(got, str) or isinstance(expected, str):
            failed += 1
            print(f"  {key}: FAILS ({got if isinstance(got, str) else 'reference failed: ' + expected})")
        else:
            print(f"  {key}: loads, largest difference {float((got - expected).abs().max()):.2e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
