"""What `skaffold run -p <profile>` would do, derived from skaffold.yaml: the image builds and the
helm commands, in skaffold's order, with skaffold's values.

Used by the end-to-end run when skaffold is not installed, and by the chart tests, so that
skaffold.yaml stays the only place those values are written down.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SKAFFOLD = ROOT / "skaffold.yaml"


def load_config(path: Path = SKAFFOLD) -> dict:
    return yaml.safe_load(path.read_text())


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def apply_patches(config: dict, patches: list[dict]) -> dict:
    """A copy of ``config`` with JSON patches (RFC 6902 add / replace / remove) applied."""
    config = copy.deepcopy(config)
    for patch in patches:
        op = patch["op"]
        if op not in {"add", "replace", "remove"}:
            raise ValueError(f"unsupported skaffold patch op {op!r} at {patch['path']}")
        *parents, last = _pointer(patch["path"])
        node = config
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op == "add":
                node.insert(index, copy.deepcopy(patch["value"]))
            elif op == "replace":
                node[index] = copy.deepcopy(patch["value"])
            else:
                del node[index]
        elif op == "remove":
            del node[last]
        else:
            if op == "replace" and last not in node:
                raise ValueError(f"replace of a missing key at {patch['path']}")
            node[last] = copy.deepcopy(patch["value"])
    return config


def with_profiles(config: dict, names: list[str] | None = None, kube_context: str = "") -> dict:
    """``config`` with the named profiles applied, or, when none is named, the profiles whose
    ``activation`` matches ``kube_context`` (as skaffold activates them)."""
    chosen = []
    for profile in config.get("profiles", []):
        if names is not None:
            active = profile["name"] in names
        else:
            active = any(
                "kubeContext" in a and re.fullmatch(a["kubeContext"], kube_context)
                for a in profile.get("activation", [])
            )
        if active:
            chosen.append(profile)
    missing = set(names or ()) - {p["name"] for p in chosen}
    if missing:
        raise ValueError(f"no profile {sorted(missing)} in skaffold.yaml")
    for profile in chosen:
        config = apply_patches(config, profile.get("patches", []))
    return config


@dataclass
class Artifact:
    image: str
    context: Path
    build_command: str = ""  # custom build
    dockerfile: str = ""  # docker build
    build_args: dict[str, str] = field(default_factory=dict)
    target: str = ""  # docker build --target
    buildkit: bool = False
    deps_command: str = ""  # custom build: prints its inputs as a JSON list
    deps_paths: list[str] = field(default_factory=list)  # custom build: globs of its inputs

    def inputs(self) -> list[Path]:
        """The files the image is built from, as skaffold's dependency rules name them."""
        if self.deps_command:
            out = subprocess.run(["bash", "-c", self.deps_command], cwd=self.context,
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
            return [self.context / p for p in json.loads(out)]
        if self.deps_paths:
            return [p for g in self.deps_paths for p in self.context.glob(g) if p.is_file()]
        files = _git_files(self.context)
        ignore = self.context / (self.dockerfile + ".dockerignore")
        if ignore.exists():  # the `*` + `!path` form: only the listed paths are sent
            keep = [
                line[1:].strip().rstrip("/")
                for line in ignore.read_text().splitlines()
                if line.startswith("!")
            ]
            files = [
                f
                for f in files
                if any(f.relative_to(self.context).as_posix().startswith(k) for k in keep)
            ]
            files.append(self.context / self.dockerfile)
        return files

    def tag(self) -> str:
        """A tag from the content of the inputs, like skaffold's ``inputDigest``."""
        digest = hashlib.sha256()
        for path in sorted(set(self.inputs())):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(
                    str(path).encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest()
                )
        return "e2e-" + digest.hexdigest()[:12]

    @property
    def template_key(self) -> str:
        """The suffix skaffold uses in IMAGE_REPO_<key>, IMAGE_TAG_<key>, IMAGE_DIGEST_<key>."""
        return re.sub(r"[^A-Za-z0-9]", "_", self.image)

    def build_argv(self, ref: str) -> tuple[list[str], dict[str, str]]:
        """Command and extra environment that build ``ref`` the way skaffold does."""
        if self.build_command:
            env = {"IMAGE": ref, "BUILD_CONTEXT": str(self.context), "PUSH_IMAGE": "false"}
            return ["bash", "-c", self.build_command], env
        argv = ["docker", "build", "-f", str(self.context / self.dockerfile), "-t", ref]
        if self.target:
            argv += ["--target", self.target]
        for key, value in self.build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        env = {"DOCKER_BUILDKIT": "1" if self.buildkit else "0"}
        return [*argv, str(self.context)], env


def artifacts(config: dict, root: Path = ROOT) -> list[Artifact]:
    build = config.get("build", {})
    buildkit = bool(build.get("local", {}).get("useBuildkit", False))
    found = []
    for a in build.get("artifacts", []):
        context = (root / a.get("context", ".")).resolve()
        if "custom" in a:
            deps = a["custom"].get("dependencies", {})
            found.append(
                Artifact(
                    a["image"],
                    context,
                    build_command=a["custom"]["buildCommand"],
                    deps_command=deps.get("command", ""),
                    deps_paths=list(deps.get("paths", [])),
                )
            )
        elif "docker" in a or set(a) <= {"image", "context"}:
            docker = a.get("docker", {})
            found.append(
                Artifact(
                    a["image"],
                    context,
                    dockerfile=docker.get("dockerfile", "Dockerfile"),
                    build_args={k: str(v) for k, v in (docker.get("buildArgs") or {}).items()},
                    target=docker.get("target", ""),
                    buildkit=buildkit,
                )
            )
        else:
            raise ValueError(f"artifact {a['image']}: only custom and docker builds are supported")
    return found


def _git_files(root: Path) -> list[Path]:
    """Every file git knows under ``root``, committed or not (ignored ones left out)."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return [root / name.decode() for name in out if name]


@dataclass
class Release:
    name: str
    namespace: str
    chart: str  # local path or remote chart name
    repo: str = ""
    version: str = ""
    values_files: list[str] = field(default_factory=list)
    sets: dict[str, str] = field(default_factory=dict)
    create_namespace: bool = False
    wait: bool = False
    upgrade_on_change: bool = True
    install_flags: list[str] = field(default_factory=list)
    upgrade_flags: list[str] = field(default_factory=list)

    @property
    def remote(self) -> bool:
        return bool(self.repo)

    def argv(self, kube_context: str, installed: bool) -> list[str]:
        """``helm install`` or ``helm upgrade`` of this release, as skaffold runs it."""
        argv = ["helm", "--kube-context", kube_context]
        argv += ["upgrade" if installed else "install", self.name, self.chart]
        argv += ["--namespace", self.namespace]
        if self.create_namespace and not installed:
            argv.append("--create-namespace")
        if self.repo:
            argv += ["--repo", self.repo]
        if self.version:
            argv += ["--version", self.version]
        for path in self.values_files:
            argv += ["-f", path]
        for key, value in self.sets.items():
            argv += ["--set-string" if key.endswith(".tag") else "--set", f"{key}={value}"]
        if self.wait:
            argv.append("--wait")
        argv += self.upgrade_flags if installed else self.install_flags
        return argv


TEMPLATE = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


def releases(config: dict, images: dict[str, str], root: Path = ROOT) -> list[Release]:
    """The helm releases in skaffold's order. ``images`` maps an artifact's image name to the
    reference that was built (``repo:tag``), for ``setValueTemplates``."""
    helm = config["deploy"]["helm"]
    flags = helm.get("flags", {})
    variables: dict[str, str] = {}
    for image, ref in images.items():
        key = re.sub(r"[^A-Za-z0-9]", "_", image)
        repo, _, tag = ref.rpartition(":")
        variables |= {
            f"IMAGE_REPO_{key}": repo,
            f"IMAGE_TAG_{key}": tag,
            f"IMAGE_DIGEST_{key}": "",  # loaded into the nodes, never pushed: no digest
            f"IMAGE_FULLY_QUALIFIED_{key}": ref,
        }

    def render(text: str) -> str:
        return TEMPLATE.sub(lambda m: variables.get(m.group(1), ""), str(text))

    found = []
    for r in helm["releases"]:
        sets = {k: str(v) for k, v in (r.get("setValues") or {}).items()}
        sets |= {k: render(v) for k, v in (r.get("setValueTemplates") or {}).items()}
        chart = r.get("chartPath") or r.get("remoteChart")
        if r.get("chartPath"):
            chart = str((root / r["chartPath"]).resolve())
        found.append(
            Release(
                name=r["name"],
                namespace=r.get("namespace", "default"),
                chart=chart,
                repo=r.get("repo", ""),
                version=str(r.get("version", "")),
                values_files=[str(root / p) for p in r.get("valuesFiles", [])],
                sets={k: v for k, v in sets.items() if v != ""},
                create_namespace=bool(r.get("createNamespace", False)),
                wait=bool(r.get("wait", False)),
                upgrade_on_change=r.get("upgradeOnChange", True),
                install_flags=list(flags.get("install", [])),
                upgrade_flags=list(flags.get("upgrade", [])),
            )
        )
    return found
