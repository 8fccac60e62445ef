"""`make package`: the project's Python packages in one zip for `spark-submit --py-files`.

Standard library only (no `zip` binary needed): every `.py` file of the packages pyproject.toml installs
(jobs/, udfs/, schemas/), without caches, at the paths Python imports them from.
"""

from __future__ import annotations

import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def project_packages(root: Path = ROOT) -> list[str]:
    """The top-level packages pyproject.toml installs: one list for the wheel and the zip."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    return sorted({name.split(".")[0] for name in config["tool"]["setuptools"]["packages"]})


def build_py_files_zip(out: str | Path, root: Path = ROOT) -> list[str]:
    """Write the zip to `out` (replacing it) and return the archived paths."""
    names = sorted(str(path.relative_to(root)) for package in project_packages(root)
                   for path in (root / package).rglob("*.py") if "__pycache__" not in path.parts)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.write(root / name, name)
    return names


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "dist/relevance.zip"
    print(f"{target}: {len(build_py_files_zip(target))} modules from {', '.join(project_packages())}")
