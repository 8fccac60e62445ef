"""`make package`: the project's Python packages in one zip for `spark-submit --py-files`.

Standard library only (no `zip` binary needed): every `.py` file under jobs/, udfs/ and schemas/,
without caches, at the paths Python imports them from.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

PACKAGES = ("jobs", "udfs", "schemas")
ROOT = Path(__file__).resolve().parents[2]


def build_py_files_zip(out: str | Path, root: Path = ROOT) -> list[str]:
    """Write the zip to `out` (replacing it) and return the archived paths."""
    names = sorted(str(path.relative_to(root)) for package in PACKAGES for path in (root / package).rglob("*.py")
                   if "__pycache__" not in path.parts)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.write(root / name, name)
    return names


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "dist/relevance.zip"
    print(f"{target}: {len(build_py_files_zip(target))} modules from {', '.join(PACKAGES)}")
