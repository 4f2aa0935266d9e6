"""The cluster recipes in deploy/ name what the project really has: its entry points (with
arguments their parsers accept), its config files (which load), the Serve app of
configs/serve.yaml (import path and arguments the app builder accepts), its pinned Ray and
Python, the image built from deploy/Dockerfile and files that exist."""

from __future__ import annotations

import importlib
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import ray
import yaml

from abtest.config import load_config as load_experiment
from serving.app import IMPORT_PATH
from serving.args import app_args
from tuning.config import load_config as load_search

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
IMAGE_ROOT = re.search(r"^WORKDIR (\S+)$", DOCKERFILE, re.M).group(1)
IMAGE = f"{PROJECT['name']}:{PROJECT['version']}"
CONFIG_LOADERS = {"run_ab": load_experiment, "tuning.__main__": load_search}
"""What each command reads its ``--config`` with."""


def _manifests() -> list[dict]:
    return [
        doc
        for path in sorted((DEPLOY / "kuberay").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]


def _of_kind(kind: str) -> list[dict]:
    return [m for m in _manifests() if m["kind"] == kind]


def _local(path: str) -> Path:
    """A path in the image as a path of this checkout."""
    assert path.startswith(IMAGE_ROOT + "/"), path
    return ROOT / path.removeprefix(IMAGE_ROOT + "/")


def _clusters() -> list[dict]:
    return [m["spec"]["rayClusterConfig"] for m in _of_kind("RayService")] + [
        m["spec"]["rayClusterSpec"] for m in _of_kind("RayJob")
    ]


def _pods(cluster: dict) -> list[dict]:
    return [cluster["headGroupSpec"]["template"]["spec"]] + [
        group["template"]["spec"] for group in cluster["workerGroupSpecs"]
    ]


def test_the_image_is_the_pinned_ray_and_python_with_the_locked_project() -> None:
    python = re.search(r"<(\d+)\.(\d+)", PROJECT["requires-python"])  # the upper bound: 3.11 < 3.12
    minor = int(python.group(2)) - 1
    assert f"FROM rayproject/ray:{ray.__version__}-py{python.group(1)}{minor}-cpu\n" in DOCKERFILE
    assert f"ray[tune,serve]=={ray.__version__}" in PROJECT["dependencies"]
    assert "pip install --no-cache-dir -r requirements.lock" in DOCKERFILE
    assert (ROOT / "requirements.lock").is_file()
    assert f"-t {IMAGE} ." in DOCKERFILE


def test_every_kuberay_cluster_runs_the_project_image_and_its_ray() -> None:
    clusters = _clusters()
    assert len(clusters) == 3
    for cluster in clusters:
        assert cluster["rayVersion"] == ray.__version__
        for pod in _pods(cluster):
            assert [c["image"] for c in pod["containers"]] == [IMAGE]


def test_the_rayservice_serves_the_app_of_configs_serve_yaml() -> None:
    (service,) = _of_kind("RayService")
    served = yaml.safe_load(service["spec"]["serveConfigV2"])
    local = yaml.safe_load((ROOT / "configs" / "serve.yaml").read_text())
    assert served["applications"] == local["applications"]
    assert "http_options" not in served  # KubeRay's: 0.0.0.0:8000 inside the pod, for its Service
    for app in served["applications"]:
        assert app["import_path"] == IMPORT_PATH
        app_args(app["args"])  # the builder's own validation: raises on a bad or unknown key


def _command(entrypoint: str, local=_local) -> tuple[str, list[str]]:
    """(module, arguments) of ``python script.py ...`` or ``python -m package ...``; ``local``
    maps the script's path to this checkout."""
    argv = shlex.split(entrypoint)
    assert argv[0] == "python", entrypoint
    if argv[1] == "-m":
        return f"{argv[2]}.__main__", argv[3:]
    script = local(argv[1])
    assert script.is_file(), script
    return script.stem, argv[2:]


@pytest.mark.parametrize("job", _of_kind("RayJob"), ids=lambda job: job["metadata"]["name"])
def test_each_rayjob_runs_a_project_command_with_arguments_it_accepts(job) -> None:
    module, args = _command(job["spec"]["entrypoint"])
    assert f"{module}:main" in PROJECT["scripts"].values()  # an installed command's entry point
    parsed = importlib.import_module(module).build_parser().parse_args(args)
    config = _local(parsed.config)
    assert config.is_file(), config
    CONFIG_LOADERS[module](config)  # loads: every key known and valid
    _local(parsed.runs_dir)  # run folders inside the project, on the shared volume
    for pod in _pods(job["spec"]["rayClusterSpec"]):
        (container,) = pod["containers"]
        paths = {m["mountPath"] for m in container["volumeMounts"]}
        assert any(parsed.runs_dir.startswith(p) for p in paths), (parsed.runs_dir, paths)
        claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert claims <= {m["metadata"]["name"] for m in _of_kind("PersistentVolumeClaim")}


def test_the_rayjobs_run_the_ab_experiment_and_the_search() -> None:
    modules = sorted(_command(job["spec"]["entrypoint"])[0] for job in _of_kind("RayJob"))
    assert modules == sorted(CONFIG_LOADERS)
    (claim,) = _of_kind("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every pod mounts it


def test_the_cluster_launcher_syncs_this_checkout_and_installs_it_locked() -> None:
    header = (DEPLOY / "cluster.yaml").read_text()
    launcher = yaml.safe_load(header)
    ((remote, local),) = launcher["file_mounts"].items()
    assert (DEPLOY.parent / local).resolve() == ROOT  # relative to where `ray up` runs: the checkout
    assert {".venv", "runs", "data", ".git"} <= set(launcher["rsync_exclude"])
    setup = "\n".join(launcher["setup_commands"])
    assert f"pip install -r {remote}/requirements.lock" in setup
    assert f"pip install --no-deps -e {remote}" in setup
    assert any("ray start --head" in c for c in launcher["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in launcher["worker_start_ray_commands"])
    usage = re.findall(rf'ray exec deploy/cluster.yaml "cd {remote} && RAY_ADDRESS=auto (.+)"', header)
    assert len(usage) == 3, usage
    for command in usage:
        if command.startswith("serve run "):
            assert (ROOT / command.removeprefix("serve run ")).is_file(), command
            continue
        module, args = _command(command, local=lambda path: ROOT / path)
        parsed = importlib.import_module(module).build_parser().parse_args(args)
        CONFIG_LOADERS[module](ROOT / parsed.config)
