"""The typed run configuration: built-in defaults < YAML file (--config) < command line.

Every default lives here. A YAML file may set any field of `RunConfig` (same names, with
dashes or underscores) and a `protocol:` mapping describing the crop scheme (see
configs/ilsvrc2014.yaml); the command line overrides both.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .crops import CropScheme, SchemeError
from .errors import UserError

DEFAULT_BATCH_SIZE = {"cpu": 16, "cuda": 288}  # crops per forward pass
DEFAULT_WORKERS = min(2, os.cpu_count() or 1)
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(UserError):
    """A configuration value or file that cannot be used."""


@dataclass
class RunConfig:
    """Everything one evaluation run needs to know."""

    models: list[str] = field(default_factory=list)
    data: str | None = None
    labels: str | None = None
    crops: str = "144"
    table: bool = False
    device: str = "auto"
    batch_size: int | None = None  # crops per forward pass; None: DEFAULT_BATCH_SIZE[device]
    workers: int = DEFAULT_WORKERS
    limit: int | None = None
    out: str | None = None  # None: runs/<UTC timestamp>
    overwrite: bool = False
    channels_last: bool = True
    progress: bool = True
    protocol: CropScheme = field(default_factory=CropScheme)

    def validate(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"device {self.device!r} is not one of {list(DEVICES)}")
        if self.crops not in self.protocol.crop_sets:
            raise ConfigError(
                f"--crops {self.crops} is not a crop set of the protocol; choose one of "
                f"{list(self.protocol.crop_sets)} or define it under protocol.crop_sets in a --config file"
            )
        for name in ("batch_size", "limit"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers!r}")

    def batch_size_for(self, device_type: str) -> int:
        return self.batch_size or DEFAULT_BATCH_SIZE.get(device_type, DEFAULT_BATCH_SIZE["cpu"])

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "protocol"}
        d["protocol"] = self.protocol.to_dict()
        return d


FIELD_NAMES = {f.name for f in dataclasses.fields(RunConfig)}


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist; pass --config FILE.yaml (see configs/)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"config file {p} is not valid YAML{at}; fix the syntax") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of option: value, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_config(yaml_path: str | None, overrides: dict[str, Any]) -> RunConfig:
    """defaults < YAML < overrides (only the options the user actually gave)."""
    values: dict[str, Any] = {}
    if yaml_path:
        values.update(read_yaml(yaml_path))
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - FIELD_NAMES)
    if unknown:
        raise ConfigError(f"unknown config option(s) {unknown}; known options: {sorted(FIELD_NAMES)}")
    protocol = values.pop("protocol", None)
    try:
        scheme = CropScheme() if protocol is None else CropScheme.from_dict(protocol)
    except (SchemeError, TypeError) as exc:
        raise ConfigError(f"protocol in {yaml_path}: {exc}") from exc
    if "crops" in values:
        values["crops"] = str(values["crops"])
    if isinstance(values.get("models"), str):
        values["models"] = [values["models"]]
    config = RunConfig(protocol=scheme, **values)
    config.validate()
    return config
