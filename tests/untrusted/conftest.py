"""Fixtures of the untrusted-input tests (helpers to build artifacts: untrusted_artifacts.py)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def small_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real torch.export archive of a 3-layer MLP (exported once per session)."""
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    ep = torch.export.export(model, (torch.zeros(2, 8),))
    path = tmp_path_factory.mktemp("pt2") / "mlp.pt2"
    torch.export.save(ep, str(path))
    return path


@pytest.fixture(scope="session")
def small_model_json(small_pt2: Path) -> dict[str, Any]:
    with zipfile.ZipFile(small_pt2) as z:
        name = next(n for n in z.namelist() if n.endswith("models/model.json"))
        return json.loads(z.read(name))
