"""npm packages for the tests that run JavaScript (real SDKs, the browser driver): installed once
into tests/.node and reused while they stay at the wanted major versions."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).resolve().parent / ".node"
MIN_NODE = 20  # @segment/analytics-node and puppeteer-core need it


def installed(directory: Path, packages: dict[str, str]) -> bool:
    for name, major in packages.items():
        manifest = directory / "node_modules" / name / "package.json"
        if not manifest.exists():
            return False
        if json.loads(manifest.read_text())["version"].split(".")[0] != major:
            return False
    return True


def node_packages(packages: dict[str, str], what: str) -> Path:
    """tests/.node with `packages` (name → major version) installed; skips the test, saying why,
    when node or npm is missing or the install fails."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip(f"node and npm are needed for {what}")
    node_version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    if int(node_version.strip().lstrip("v").split(".")[0]) < MIN_NODE:
        pytest.skip(f"{what} need Node >= {MIN_NODE}, found {node_version.strip()}")
    NODE_DIR.mkdir(exist_ok=True)
    with open(NODE_DIR / ".lock", "w") as lock:  # parallel sessions install once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not installed(NODE_DIR, packages):
            # `npm init -y` rejects the directory name ".node", so write the manifest ourselves
            manifest = NODE_DIR / "package.json"
            if not manifest.exists():
                manifest.write_text('{"name": "gateway-sdk-tests", "private": true}\n')
            specs = [f"{name}@{major}" for name, major in packages.items()]
            try:
                result = subprocess.run([npm, "install", "--no-audit", "--no-fund", *specs],
                                        cwd=NODE_DIR, capture_output=True, text=True, timeout=300)
            except subprocess.TimeoutExpired:
                pytest.skip(f"npm install of {what} timed out")
            if result.returncode != 0 or not installed(NODE_DIR, packages):
                pytest.skip(f"npm install of {what} failed: {result.stderr[-2000:]}")
    return NODE_DIR
