"""A non-editable install ships the Hydra configs and the kernels package under a non-colliding name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_install_finds_configs(tmp_path: Path) -> None:
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO),
                    "-w", str(wheel_dir)], check=True, capture_output=True)
    (wheel,) = wheel_dir.glob("sustainml_exp-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = (
        "import sustainml_exp, sustainml_kernels;"
        f"assert sustainml_exp.__file__.startswith({str(target)!r}), sustainml_exp.__file__;"
        "from sustainml_exp.cli import _compose_typed;"
        "typed, _ = _compose_typed(['experiment=gnn_flickr', 'G_R=4']);"
        "assert typed.dataset == 'flickr' and typed.compress.G_R == 4"
    )
    # Run from an unrelated folder with only the installed copy on the path (no source checkout visible).
    env = {**os.environ, "PYTHONPATH": str(target)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env)
    assert not (target / "kernels").exists()
