"""Offline checks of the scale-out files: Ray cluster YAMLs, KubeRay manifests, Dockerfile.

Nothing here needs a network, a cloud account or a Docker daemon: the cluster YAMLs go through
Ray's own ``prepare_config`` and ``validate_config``, the rest is parsed and cross-checked
against the pins in pyproject.toml.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
import yaml
from packaging.requirements import Requirement
from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
from ray.autoscaler._private.resource_demand_scheduler import (
    _resource_based_utilization_scorer,
    get_nodes_for,
)
from ray.autoscaler._private.util import prepare_config, validate_config
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig

from medmplm.config import find_config_file

REPO = Path(__file__).resolve().parents[1]
CLUSTER_DIR = REPO / "cluster"
KUBERAY_DIR = CLUSTER_DIR / "kuberay"
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PRETRAIN_CONFIG = REPO / "medmplm" / "configs" / "cluster_pretrain.yaml"

CLUSTER_YAMLS = sorted(CLUSTER_DIR.glob("*.yaml"))
IMAGE_TAG = re.compile(r":(?P<project>[\d.]+)-ray(?P<ray>\d+\.\d+\.\d+)-py(?P<py>\d+)-(?P<cuda>cu\d+)$")
# `ray==X`, `ray[extras]==X` in a pip command, or `ray.__version__ == 'X'` in an assertion.
RAY_PIN = re.compile(r"\bray(?:\[[^\]]*\])?==(\d[\w.]*)|ray\.__version__ == '([^']+)'")
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)

# Spec fields of the KubeRay ray.io/v1 API (ray-operator/apis/ray/v1/*_types.go) that these
# manifests may use; anything else in a spec is a typo that the API server would reject or prune.
RAYCLUSTER_SPEC_FIELDS = {
    "rayVersion",
    "enableInTreeAutoscaling",
    "autoscalerOptions",
    "headGroupSpec",
    "workerGroupSpecs",
    "headServiceAnnotations",
    "gcsFaultToleranceOptions",
    "suspend",
    "managedBy",
}
RAYJOB_SPEC_FIELDS = {
    "entrypoint",
    "rayClusterSpec",
    "shutdownAfterJobFinishes",
    "ttlSecondsAfterFinished",
    "activeDeadlineSeconds",
    "backoffLimit",
    "runtimeEnvYAML",
    "submissionMode",
    "submitterPodTemplate",
    "submitterConfig",
    "clusterSelector",
    "entrypointNumCpus",
    "entrypointNumGpus",
    "entrypointResources",
    "jobId",
    "metadata",
    "suspend",
    "deletionStrategy",
    "managedBy",
    "schedule",
}


# ---------------------------------------------------------------- helpers


def pyproject() -> dict[str, Any]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def pinned_versions() -> dict[str, str]:
    """Project dependency name -> the version its ``==`` pin names."""
    pins = {}
    for line in pyproject()["project"]["dependencies"]:
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"pyproject.toml: {line!r} is not an exact pin"
        pins[requirement.name] = specifier.version
    return pins


def load_cluster_yaml(path: Path) -> dict[str, Any]:
    with open(path) as f:
        return yaml.safe_load(f)


def prepare_and_validate(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does to a config before touching a cloud: fill defaults, then validate."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def kuberay_documents() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(KUBERAY_DIR.glob("*.yaml")):
        with open(path) as f:
            documents.extend(doc for doc in yaml.safe_load_all(f) if doc)
    return documents


def kuberay_resource(kind: str) -> dict[str, Any]:
    (resource,) = [doc for doc in kuberay_documents() if doc.get("kind") == kind]
    return resource


def ray_cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """(origin, RayCluster spec) for the RayCluster and the cluster embedded in the RayJob."""
    return [
        ("RayCluster", kuberay_resource("RayCluster")["spec"]),
        ("RayJob.rayClusterSpec", kuberay_resource("RayJob")["spec"]["rayClusterSpec"]),
    ]


def pod_containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return group["template"]["spec"]["containers"]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and ARG defaults substituted.

    Hand-written because the syntax used is only line continuations and ``${ARG}``
    references; no parser library is a dependency of this project.
    """
    logical, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    defaults: dict[str, str] = {}
    instructions = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        rest = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), rest.strip())
        if keyword.upper() == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name] = value.strip('"')
        instructions.append((keyword.upper(), rest))
    return instructions


def dockerfile_base_image() -> str:
    (base,) = [rest for keyword, rest in dockerfile_instructions() if keyword == "FROM"]
    return base


def pip_installs(commands: list[str]) -> list[list[str]]:
    """Argument lists of every `pip install` in shell commands (split on &&)."""
    installs = []
    for command in commands:
        for part in command.split("&&"):
            words = shlex.split(part)
            for i, word in enumerate(words[:-1]):
                if word == "pip" and words[i + 1] == "install":
                    installs.append(words[i + 2 :])
    return installs


def requirement_pins(args: list[str]) -> dict[str, str]:
    pins = {}
    for arg in args:
        if "==" in arg and not arg.startswith("-"):
            requirement = Requirement(arg)
            (specifier,) = requirement.specifier
            pins[requirement.name] = specifier.version
    return pins


def load_cost_calibration():
    """cluster/cost_calibration.py, a script rather than a package module."""
    spec = importlib.util.spec_from_file_location("cost_calibration", CLUSTER_DIR / "cost_calibration.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cost_calibration = load_cost_calibration()


# ---------------------------------------------------------------- Ray cluster launcher YAMLs


def test_both_clouds_have_a_cluster_yaml():
    assert {p.name for p in CLUSTER_YAMLS} >= {"aws-gpu.yaml", "gcp-gpu.yaml"}


@pytest.mark.parametrize("path", CLUSTER_YAMLS, ids=lambda p: p.name)
def test_cluster_yaml_passes_ray_schema(path):
    prepared = prepare_and_validate(load_cluster_yaml(path))

    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, f"{path.name}: the head node should be CPU-only"
    assert prepared["idle_timeout_minutes"] > 0
    assert prepared["docker"]["image"], f"{path.name}: no docker image"


@pytest.mark.parametrize("path", CLUSTER_YAMLS, ids=lambda p: p.name)
def test_cluster_yaml_has_gpu_workers_on_demand_and_spot(path):
    prepared = prepare_and_validate(load_cluster_yaml(path))
    workers = {
        name: node
        for name, node in prepared["available_node_types"].items()
        if name != prepared["head_node_type"]
    }
    gpu_workers = {name: node for name, node in workers.items() if node["resources"].get("GPU", 0) > 0}
    assert gpu_workers, f"{path.name}: no worker type declares GPUs"
    assert any(node["resources"]["GPU"] == 8 for node in gpu_workers.values()), "no 8-GPU pretraining node"
    assert any(node["resources"]["GPU"] == 1 for node in gpu_workers.values()), "no 1-GPU sweep node"

    def is_spot(node: dict[str, Any]) -> bool:
        node_config = node["node_config"]
        aws = node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
        gcp = node_config.get("scheduling", {}).get("provisioningModel") == "SPOT"
        return aws or gcp

    assert any(is_spot(node) for node in gpu_workers.values()), f"{path.name}: no spot GPU worker type"
    assert any(not is_spot(node) for node in gpu_workers.values()), f"{path.name}: no on-demand GPU type"
    for name, node in gpu_workers.items():
        assert node["min_workers"] == 0, f"{path.name}: {name} keeps GPU nodes up while idle"
        assert node["max_workers"] >= 1, f"{path.name}: {name} can never launch"
        accelerator = [r for r in node["resources"] if r.startswith("accelerator_type:")]
        assert len(accelerator) == 1, f"{path.name}: {name} should name its GPU type as a resource"


@pytest.mark.parametrize("path", CLUSTER_YAMLS, ids=lambda p: p.name)
def test_cluster_dashboard_is_not_exposed(path):
    config = load_cluster_yaml(path)
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in head_start
    # Ray's auto-created AWS security group allows SSH and intra-cluster traffic only; any
    # IpPermissions here would be added on top of that.
    assert "IpPermissions" not in config["provider"].get("security_group", {})
    for option in config["docker"].get("run_options", []):
        assert not re.match(r"(-p|--publish)\b", option), f"{path.name}: container publishes a port"


@pytest.mark.parametrize("path", CLUSTER_YAMLS, ids=lambda p: p.name)
def test_cluster_setup_installs_the_project_without_touching_pinned_deps(path):
    config = load_cluster_yaml(path)
    installs = pip_installs(config["setup_commands"])
    project_installs = [args for args in installs if "~/medmplm" in args]
    assert project_installs, f"{path.name}: setup_commands do not install the project"
    assert all("--no-deps" in args for args in project_installs)
    assert config["file_mounts"]["~/medmplm"] == "."


def nodes_launched_for(prepared: dict[str, Any], demand: list[dict[str, float]]) -> dict[str, int]:
    """Node types Ray's (v1) autoscaler would launch on an empty cluster for ``demand``."""

    def scorer(node_resources, resources, node_type):
        no_failures = NodeAvailabilitySummary(node_availabilities={})
        return _resource_based_utilization_scorer(
            node_resources, resources, node_availability_summary=no_failures
        )

    to_add, unfulfilled = get_nodes_for(
        prepared["available_node_types"],
        {},
        prepared["head_node_type"],
        prepared["max_workers"],
        copy.deepcopy(demand),
        scorer,
    )
    assert not unfulfilled, f"no node type fits {unfulfilled}"
    return {node_type: count for node_type, count in to_add.items() if count}


def pretrain_worker_bundles() -> list[dict[str, float]]:
    """Ray Train's per-worker resource bundles for the cluster_pretrain preset."""
    with open(PRETRAIN_CONFIG) as f:
        scaling = yaml.safe_load(f)["scaling"]
    assert scaling["use_gpu"], "medmplm/configs/cluster_pretrain.yaml should train on GPUs"
    bundle = {"CPU": scaling["cpus_per_worker"], "GPU": scaling["gpus_per_worker"]}
    return [bundle] * scaling["num_workers"]


@pytest.mark.parametrize("path", CLUSTER_YAMLS, ids=lambda p: p.name)
def test_autoscaler_places_each_workload_on_the_intended_node_type(path):
    prepared = prepare_and_validate(load_cluster_yaml(path))
    types = prepared["available_node_types"]

    def launched_kinds(demand):
        launched = nodes_launched_for(prepared, demand)
        return {(int(types[t]["resources"].get("GPU", 0)), "spot" in types[t]["resources"]) for t in launched}

    # Pretraining: all workers on one on-demand 8-GPU node (DeepSpeed stays on NVLink).
    pretrain = nodes_launched_for(prepared, pretrain_worker_bundles())
    assert sum(pretrain.values()) == 1, pretrain
    assert launched_kinds(pretrain_worker_bundles()) == {(8, False)}, pretrain
    # One fine-tuning trial: a one-GPU on-demand node.
    assert launched_kinds([{"CPU": 1, "GPU": 1}]) == {(1, False)}
    # Spot is opt-in, through the "spot" resource.
    assert launched_kinds([{"CPU": 1, "GPU": 1, "spot": 0.001}]) == {(1, True)}
    # A sweep pinned to the small GPU type stays on one-GPU nodes instead of packing an 8-GPU one.
    (small_gpu,) = {
        resource
        for node_type in types.values()
        if node_type["resources"].get("GPU") == 1
        for resource in node_type["resources"]
        if resource.startswith("accelerator_type:")
    }
    assert launched_kinds([{"CPU": 1, "GPU": 1, small_gpu: 0.001}] * 4) == {(1, False)}
    # CPU-only work (Ray Data) never launches a GPU node.
    assert launched_kinds([{"CPU": 8}] * 4) == {(0, False)}


def rename_top_level_key(config: dict[str, Any]) -> None:
    config["idle_timout_minutes"] = config.pop("idle_timeout_minutes")


def rename_node_type_key(config: dict[str, Any]) -> None:
    node = config["available_node_types"]["cpu_16"]
    node["max_worker"] = node.pop("max_workers")


def quote_max_workers(config: dict[str, Any]) -> None:
    config["max_workers"] = str(config["max_workers"])


def quote_gpu_count(config: dict[str, Any]) -> None:
    resources = config["available_node_types"]["a100_8gpu"]["resources"]
    resources["GPU"] = str(resources["GPU"])


def point_head_at_unknown_type(config: dict[str, Any]) -> None:
    config["head_node_type"] = "gpu_head"


@pytest.mark.parametrize("path", CLUSTER_YAMLS, ids=lambda p: p.name)
@pytest.mark.parametrize(
    "mutation, error",
    [
        (rename_top_level_key, jsonschema.ValidationError),
        (rename_node_type_key, jsonschema.ValidationError),
        (quote_max_workers, jsonschema.ValidationError),
        (quote_gpu_count, jsonschema.ValidationError),
        (point_head_at_unknown_type, ValueError),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_ray_schema_rejects_broken_cluster_yaml(path, mutation, error):
    config = load_cluster_yaml(path)
    prepare_and_validate(config)
    mutation(config)
    with pytest.raises(error):
        prepare_and_validate(config)


# ---------------------------------------------------------------- version agreement


def test_ray_version_agrees_across_pyproject_dockerfile_cluster_yamls_and_kuberay():
    ray_version = pinned_versions()["ray"]
    project_version = pyproject()["project"]["version"]

    base = re.fullmatch(r"rayproject/ray:(?P<ray>[\d.]+)-py(?P<py>\d+)-(?P<cuda>cu\d+)", dockerfile_base_image())
    assert base, f"docker/Dockerfile: unexpected base image {dockerfile_base_image()!r}"
    assert base["ray"] == ray_version

    images = []
    for path in CLUSTER_YAMLS:
        config = load_cluster_yaml(path)
        images.append((path.name, config["docker"]["image"]))
        commands = [c for key, value in config.items() if key.endswith("commands") for c in value]
        for command in commands:
            for pip_pin, asserted in RAY_PIN.findall(command):
                assert (pip_pin or asserted) == ray_version, f"{path.name}: {command!r}"
    for keyword, rest in dockerfile_instructions():
        for pip_pin, asserted in RAY_PIN.findall(rest):
            assert (pip_pin or asserted) == ray_version, f"docker/Dockerfile: {keyword} {rest!r}"

    for origin, spec in ray_cluster_specs():
        assert spec["rayVersion"] == ray_version, f"{origin}: rayVersion {spec['rayVersion']!r}"
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        images += [(origin, c["image"]) for g in groups for c in pod_containers(g)]

    for origin, image in images:
        tag = IMAGE_TAG.search(image)
        assert tag, f"{origin}: image {image!r} does not follow <project>-ray<ray>-py<py>-<cuda>"
        assert tag["ray"] == ray_version, f"{origin}: {image}"
        assert tag["project"] == project_version, f"{origin}: {image}"
        assert (tag["py"], tag["cuda"]) == (base["py"], base["cuda"]), f"{origin}: {image} vs Dockerfile"


# ---------------------------------------------------------------- KubeRay


def test_kuberay_ray_clusters_have_gpu_worker_groups():
    for origin, spec in ray_cluster_specs():
        unknown = set(spec) - RAYCLUSTER_SPEC_FIELDS
        assert not unknown, f"{origin}: unknown fields {unknown}"
        assert spec["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", origin
        assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP", origin
        assert spec["workerGroupSpecs"], f"{origin}: no workerGroupSpecs"
        for group in spec["workerGroupSpecs"]:
            name = f"{origin}/{group['groupName']}"
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
            pod = group["template"]["spec"]
            tolerations = pod.get("tolerations", [])
            assert any(t["key"] == "nvidia.com/gpu" and t["operator"] == "Exists" for t in tolerations), name
            for container in pod["containers"]:
                resources = container["resources"]
                gpus = int(resources["limits"]["nvidia.com/gpu"])
                assert gpus >= 1, name
                # Extended resources cannot be overcommitted: a request must equal the limit.
                requested = resources.get("requests", {}).get("nvidia.com/gpu")
                assert requested in (None, resources["limits"]["nvidia.com/gpu"]), name
                mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                assert "/dev/shm" in mounts, f"{name}: NCCL needs a larger /dev/shm than the 64 MB default"


def test_kuberay_manifests_have_required_fields():
    documents = kuberay_documents()
    kinds = sorted(doc["kind"] for doc in documents)
    assert kinds == ["RayCluster", "RayJob", "ServiceAccount"]
    for doc in documents:
        if doc["kind"] in ("RayCluster", "RayJob"):
            assert doc["apiVersion"] == "ray.io/v1", doc["kind"]
            assert doc["metadata"]["name"]

    job = kuberay_resource("RayJob")["spec"]
    unknown = set(job) - RAYJOB_SPEC_FIELDS
    assert not unknown, f"RayJob: unknown fields {unknown}"
    assert job["shutdownAfterJobFinishes"] is True
    entrypoint = shlex.split(job["entrypoint"])
    assert entrypoint[:3] == ["python", "-m", "medmplm.pretrain"]
    # The config is a preset of the package installed in the image (package data), found by name.
    assert find_config_file(entrypoint[entrypoint.index("--config") + 1]) == PRETRAIN_CONFIG
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert f"{PRETRAIN_CONFIG.parent.name}/*.yaml" in package_data["medmplm"]
    job_gpus = [
        int(container["resources"]["limits"]["nvidia.com/gpu"])
        for group in job["rayClusterSpec"]["workerGroupSpecs"]
        for container in pod_containers(group)
    ]
    assert 8 in job_gpus, "the pretraining RayJob should run on an 8-GPU pod"

    service_account = kuberay_resource("ServiceAccount")["metadata"]["name"]
    for origin, spec in ray_cluster_specs():
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            assert group["template"]["spec"]["serviceAccountName"] == service_account, origin


def test_kuberay_exposes_nothing_outside_the_cluster():
    for doc in kuberay_documents():
        assert doc["kind"] not in ("Ingress", "Service", "Gateway"), f"{doc['kind']} would expose the cluster"
    for origin, spec in ray_cluster_specs():
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            for container in pod_containers(group):
                context = container.get("securityContext", {})
                assert context.get("runAsNonRoot") is True, origin
                assert context.get("allowPrivilegeEscalation") is False, origin


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_installs_the_pyproject_pins_in_the_readme_order():
    pins = pinned_versions()
    instructions = dockerfile_instructions()
    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    installs = pip_installs(runs)

    installed_pins = {}
    for args in installs:
        installed_pins.update(requirement_pins(args))
    assert installed_pins["torch"] == pins["torch"]
    assert installed_pins["deepspeed"] == pins["deepspeed"]

    order = []
    for args in installs:
        names = set(requirement_pins(args))
        if "torch" in names:
            order.append("torch")
        elif "deepspeed" in names:
            order.append("deepspeed")
            assert "--no-build-isolation" in args, "DeepSpeed must build against the installed torch"
        elif "-r" in args:
            order.append("requirements")
        elif "." in args:
            order.append("project")
    assert order == ["torch", "deepspeed", "requirements", "project"]

    torch_install = next(args for args in installs if "torch" in requirement_pins(args))
    index = torch_install[torch_install.index("--index-url") + 1]
    cuda = dockerfile_base_image().rsplit("-", 1)[-1]
    assert index == f"https://download.pytorch.org/whl/{cuda}", "torch CUDA build must match the base image's CUDA"

    deepspeed_run = next(run for run in runs if "deepspeed==" in run)
    assert "DS_ACCELERATOR=cuda" in deepspeed_run
    assert "DS_ACCELERATOR=cpu" not in DOCKERFILE.read_text()


def test_dockerfile_runs_as_ray_user_and_bakes_in_no_data_or_credentials():
    instructions = dockerfile_instructions()
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users and users[-1] == "ray"
    for keyword, rest in instructions:
        if keyword in ("ENV", "ARG"):
            names = re.findall(r"(\w+)=", rest) or [rest.split()[0]]
            for name in names:
                assert not SECRET_NAME.search(name), f"docker/Dockerfile: {keyword} {name} looks like a secret"
        assert keyword != "ADD", "docker/Dockerfile: use COPY; ADD fetches URLs and unpacks archives"

    allowed = {line[1:] for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")}
    for keyword, rest in instructions:
        if keyword == "COPY":
            sources = [word for word in rest.split()[:-1] if not word.startswith("--")]
            for source in sources:
                assert source in allowed, f"docker/Dockerfile copies {source!r}, which .dockerignore excludes"
                assert (REPO / source).exists(), f"docker/Dockerfile copies {source!r}, which does not exist"


def test_dockerignore_is_an_allowlist_that_keeps_data_out():
    patterns = [
        line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", ".dockerignore must start by excluding everything"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    assert allowed <= {"pyproject.toml", "README.md", "medmplm", "tuning"}
    for data_pattern in ("**/*.csv", "**/*.csv.gz", "**/*.parquet", "**/*.safetensors", "**/.env"):
        assert data_pattern in patterns, f".dockerignore does not exclude {data_pattern}"
    assert patterns.index("**/*.csv") > max(patterns.index("!" + a) for a in allowed), (
        "data exclusions must come after the re-includes, or the re-includes win"
    )
    # The exclusions must not silently drop package files the image needs.
    excluded_suffixes = tuple(p[len("**/*"):] for p in patterns if p.startswith("**/*."))
    for entry in allowed:
        assert (REPO / entry).exists(), f".dockerignore admits {entry}, which a clean checkout lacks"
        files = [REPO / entry] if (REPO / entry).is_file() else (REPO / entry).rglob("*")
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts:
                assert not path.name.endswith(excluded_suffixes), f"{path.relative_to(REPO)} is left out of the image"


def test_readme_install_uses_the_same_pins():
    readme = REPO / "README.md"
    block = re.search(r"<!-- install -->(.*?)<!-- /install -->", readme.read_text(), re.DOTALL)
    assert block, "README.md has no <!-- install --> block"
    commands = [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("```")]
    installed_pins = {}
    for args in pip_installs(commands):
        installed_pins.update(requirement_pins(args))
    pins = pinned_versions()
    assert installed_pins["torch"] == pins["torch"]
    assert installed_pins["deepspeed"] == pins["deepspeed"]


# ---------------------------------------------------------------- shared storage


def test_cluster_yamls_share_one_storage_layout():
    layouts = {}
    for path in CLUSTER_YAMLS:
        storage = load_cluster_yaml(path)["metadata"]["medmplm"]
        assert storage["storage_path"].split("://")[0] in ("s3", "gs"), path.name
        layouts[path.name] = {key: value.split("://", 1)[1] for key, value in storage.items()}
    assert len({tuple(sorted(layout.items())) for layout in layouts.values()}) == 1, layouts


def test_pretrain_config_uses_the_clusters_shared_storage():
    with open(PRETRAIN_CONFIG) as f:
        config = yaml.safe_load(f)
    aws = load_cluster_yaml(CLUSTER_DIR / "aws-gpu.yaml")["metadata"]["medmplm"]
    assert config["run"]["storage_path"] == aws["storage_path"]
    assert config["data"]["prepared_dir"] == aws["prepared_data"]


# ---------------------------------------------------------------- cost model


@pytest.mark.parametrize("layers, trainable_layers", [(2, 2), (3, 1), (4, 0)])
def test_analytic_flops_match_torch_flop_counter(layers, trainable_layers):
    config = BertConfig(
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=32,
        vocab_size=100,
    )
    model = cost_calibration.build_partly_frozen_bert(config, trainable_layers)
    input_ids = torch.randint(0, config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        if trainable_layers:
            cost_calibration.train_step(model, input_ids)
        else:
            model(input_ids=input_ids)
    expected = cost_calibration.bert_step_flops(
        batch=2, seq=32, hidden=64, intermediate=128, layers=layers, trainable_layers=trainable_layers
    )
    assert counter.get_total_flops() == expected
