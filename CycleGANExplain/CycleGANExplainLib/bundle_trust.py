"""Which model bundles may run without asking: the ones this package ships (docs/architecture.md, contract 3).

A TorchScript file is code: loading one can read and write any file the user can. SHA256SUMS lives
inside the bundle, so it proves only that the files were not corrupted since it was written; anyone
can write a new one for files of their own. Trust therefore comes from outside the bundle: this
module holds the digest of each shipped bundle's SHA256SUMS (which pins every file, because the
loader verifies them against it), and a bundle whose digest is not here is refused unless the
user says, for this load, that they trust where it came from.

The digest is ``model_bundle.bundle_digest``. To ship a new bundle, export it, then add the
digest that ``export`` (or ``cyclegan-explain bundles``) prints to ``KNOWN_BUNDLE_DIGESTS``; a
test fails until you do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

# SHA-256 of each shipped bundle's SHA256SUMS file, by "name version".
KNOWN_BUNDLE_DIGESTS: Dict[str, str] = {
    "lidc-voi 2.2.0": "b78f5b880b7a1efd53c42ed13c5e8bdbc6956b6e7d4d67ce659487e1ffa71282",
    "lidc-phantoms 0.2.1": "7be79a70d048777a437853f69d85032cfb198cb4c2571989b95e442b66d3342f",
}

ALLOW_FLAG = "--allow-unknown-bundle"
ALLOW_HELP = ("run a --bundle that was not shipped with CycleGANExplain. Its TorchScript files are code that runs "
              "with your permissions: allow only bundles from a source you trust")


def known_bundle_name(digest: str) -> Optional[str]:
    """"name version" of the shipped bundle with this digest, or None."""
    for name, known in KNOWN_BUNDLE_DIGESTS.items():
        if known == digest:
            return name
    return None


def unknown_bundle_message(bundle_dir: Path, digest: str) -> str:
    return (f"Model bundle {Path(bundle_dir).name} is not one of the bundles shipped with CycleGANExplain "
            f"(SHA256SUMS digest {digest[:16]}...). Its TorchScript files are code that would run with your "
            "permissions: load it only if you trust where it came from, and then allow it explicitly "
            f"({ALLOW_FLAG} on the command line and in the web viewer; the module asks).")


def unknown_bundle_warning(bundle_dir: Path, digest: str) -> str:
    return (f"Running model bundle {Path(bundle_dir).name}, which was not shipped with CycleGANExplain "
            f"(digest {digest[:16]}...): you allowed it; its code runs with your permissions.")
