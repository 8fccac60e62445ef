"""What `spark-submit` ships to executors: the project's code and its Python environment.

- `make package`: the project's Python packages in one zip for `--py-files`. Standard library only (no `zip`
  binary needed): every `.py` file of the packages pyproject.toml installs (jobs/, udfs/, schemas/), without
  caches, at the paths Python imports them from, and their package data (the report's templates).
- `make env-archive`: the virtual environment's runtime dependencies as a gzipped tar for
  `--archives dist/env.tar.gz#env` and `spark.pyspark.python=./env/bin/python`. Gzipped because Spark 4.1
  unpacks a `.tar.gz` with the system's tar, but a plain `.tar` with a Java untar that drops the executable bits
  (SPARK-38631/SPARK-38632). Only the distributions the project
  needs at run time (its requirements' closure, no test extras, not the project itself: that is the zip), without
  byte-code caches and without pyspark's jars (executors run on the cluster's own Spark). The CUDA libraries
  (nvidia-*, about 2.7 GB) stay: torch from PyPI is a CUDA build and does not import without them, even on a
  CPU. `--cpu-only` leaves out what only GPU kernels compiled at run time use (triton, the CUDA Python
  bindings).
  venv-pack cannot be used on an editable install, which `make install` makes. As with venv-pack's archives,
  the workers need the base Python the venv was made from at the same path (its standard library; same image).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT_DISTRIBUTION = "relevance-scoring"
# What only GPU kernels compiled at run time use (torch.compile's triton, the CUDA Python bindings): `--cpu-only`.
GPU_ONLY_DISTRIBUTIONS = re.compile(r"^(triton|cuda-bindings|cuda-pathfinder)$")
# Parts of the runtime distributions executors never use: byte-code caches (rebuilt on import) and Spark's JVM jars.
EXCLUDED_PARTS = ("__pycache__",)
EXCLUDED_PREFIXES = ("pyspark/jars/",)


def _setuptools_config(root: Path) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]


def project_packages(root: Path = ROOT) -> list[str]:
    """The top-level packages pyproject.toml installs: one list for the wheel and the zip."""
    return sorted({name.split(".")[0] for name in _setuptools_config(root)["packages"]})


def package_data_files(root: Path = ROOT) -> list[str]:
    """The non-Python files pyproject.toml's `package-data` installs (the report's templates), relative to `root`."""
    patterns = _setuptools_config(root).get("package-data", {})
    return sorted(str(path.relative_to(root)) for package, globs in patterns.items() for pattern in globs
                  for path in (root / package.replace(".", "/")).glob(pattern) if path.is_file())


def build_py_files_zip(out: str | Path, root: Path = ROOT) -> list[str]:
    """Write the zip to `out` (replacing it) and return the archived paths: every module and the package data."""
    modules = [str(path.relative_to(root)) for package in project_packages(root)
               for path in (root / package).rglob("*.py") if "__pycache__" not in path.parts]
    names = sorted([*modules, *package_data_files(root)])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.write(root / name, name)
    return names


def runtime_distributions(root: str = PROJECT_DISTRIBUTION, cpu_only: bool = False) -> list[metadata.Distribution]:
    """The installed distributions `root` needs at run time: its requirements and theirs, markers evaluated for
    this interpreter, no extras; without GPU_ONLY_DISTRIBUTIONS when `cpu_only`. `root` itself is not included."""
    from packaging.requirements import Requirement  # imported here: `make package` runs on the system Python
    from packaging.utils import canonicalize_name

    seen: dict[str, metadata.Distribution] = {}
    pending: list[tuple[str, tuple[str, ...]]] = [(req, ()) for req in metadata.requires(root) or []]
    while pending:
        text, extras = pending.pop()
        requirement = Requirement(text)
        if requirement.marker and not any(requirement.marker.evaluate({"extra": e}) for e in (*extras, "")):
            continue
        name = canonicalize_name(requirement.name)
        if name in seen or (cpu_only and GPU_ONLY_DISTRIBUTIONS.match(name)):
            continue
        try:
            seen[name] = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"env archive: {requirement.name} (required at run time) is not installed in {sys.prefix}") from None
        pending.extend((req, tuple(requirement.extras)) for req in seen[name].requires or [])
    return [seen[name] for name in sorted(seen)]


def environment_files(distributions: Iterable[metadata.Distribution], prefix: Path) -> list[str]:
    """The files of `distributions` inside the environment at `prefix` (their RECORDs), less EXCLUDED_*, as paths
    relative to `prefix`."""
    files: set[str] = set()
    for distribution in distributions:
        for record in distribution.files or []:
            relative = str(record)
            if any(part in EXCLUDED_PARTS for part in Path(relative).parts) or relative.startswith(EXCLUDED_PREFIXES):
                continue
            path = Path(os.path.normpath(str(distribution.locate_file(record))))  # site-packages/../../../bin/x -> bin/x
            if path.is_relative_to(prefix) and (path.is_file() or path.is_symlink()):
                files.add(str(path.relative_to(prefix)))
    return sorted(files)


def archived_source(prefix: Path, name: str) -> str:
    """What to archive as `name`: the file itself, or, for a link leading out of the environment (the venv's
    `bin/python3.11` -> the base interpreter), the file it leads to. Spark's untar refuses links that leave the
    folder it unpacks into; a copied interpreter runs as the venv's as well (`python -m venv --copies`), finding
    its standard library through pyvenv.cfg's `home`."""
    source = prefix / name
    if not source.is_symlink():
        return str(source)
    leads_to = Path(os.path.normpath(source.parent / os.readlink(source)))
    return str(source) if leads_to.is_relative_to(prefix) else os.path.realpath(source)


def build_env_archive(out: str | Path, prefix: str | Path = sys.prefix, cpu_only: bool = False) -> int:
    """Write the runtime environment at `prefix` (a virtual environment) to the gzipped tar `out`, with paths
    relative to the environment's root (links kept as links, except those leaving it: archived_source); return
    the number of files archived."""
    out, prefix = Path(out), Path(os.path.normpath(Path(prefix).absolute()))
    if not out.name.endswith((".tar.gz", ".tgz")):
        raise SystemExit(f"env archive: {out} must end in .tar.gz or .tgz (Spark unpacks a plain .tar without "
                         "the executable bits)")
    if not (prefix / "pyvenv.cfg").is_file():
        raise SystemExit(f"env archive: {prefix} is not a virtual environment (no pyvenv.cfg)")
    skeleton = ["pyvenv.cfg", *sorted(str(p.relative_to(prefix)) for p in (prefix / "bin").glob("python*"))]
    names = [*skeleton, *environment_files(runtime_distributions(cpu_only=cpu_only), prefix)]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    folders = sorted({str(parent) for name in names for parent in Path(name).parents if parent != Path(".")})
    with tarfile.open(partial, "w:gz", compresslevel=1) as archive:  # level 1: 5 GB in about a minute
        for name in [*folders, *names]:  # folders first: Hadoop's untar makes no parent folder for a link
            archive.add(archived_source(prefix, name), arcname=name, recursive=False)
    partial.replace(out)
    return len(names)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.core.package", description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", default="dist/relevance.zip", help="the --py-files zip to write")
    parser.add_argument("--env", metavar="TAR", help="write the environment archive (--archives) instead")
    parser.add_argument("--cpu-only", action="store_true", help="leave triton and the CUDA Python bindings out")
    args = parser.parse_args(argv)
    if args.env:
        count = build_env_archive(args.env, cpu_only=args.cpu_only)
        size = Path(args.env).stat().st_size / 2**30
        print(f"{args.env}: {count} files of {sys.prefix}, {size:.1f} GiB{' (no triton)' if args.cpu_only else ''}")
    else:
        print(f"{args.target}: {len(build_py_files_zip(args.target))} modules and templates from {', '.join(project_packages())}")


if __name__ == "__main__":
    main()
