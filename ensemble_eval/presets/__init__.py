"""The papers' test-time protocols, shipped with the package: one YAML run config each.

`ensemble-eval --protocol NAME` (or `protocol: NAME` in a --config file) starts from a preset;
`--protocol list` shows them. A preset is an ordinary run config (docs/protocol.md): copy one
to define your own and pass it with --config.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from ..errors import UserError

PRESETS_DIR = Path(__file__).resolve().parent
DEFAULT = "googlenet-144"  # the built-in protocol (config.CropScheme's defaults) spelled out


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The file of preset `name`; a UserError naming the closest preset when there is none."""
    names = preset_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise UserError(
            f"--protocol {name!r} is not a preset; {hint}choose one of {names} (`--protocol list` describes them), "
            "or pass your own file with --config FILE.yaml"
        )
    return PRESETS_DIR / f"{name}.yaml"


def describe_presets() -> str:
    """`--protocol list`: each preset's name, description and file."""
    from ..config import read_yaml

    lines = []
    for name in preset_names():
        path = preset_path(name)
        lines.append(f"{name:18s} {read_yaml(path).get('description', '')}")
    lines.append(f"files: {PRESETS_DIR} (copy one to make your own; pass it with --config FILE.yaml)")
    return "\n".join(lines) + "\n"


__all__ = ["DEFAULT", "PRESETS_DIR", "describe_presets", "preset_names", "preset_path"]
