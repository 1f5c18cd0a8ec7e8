"""The peers' virtualenvs (bench/.peers/<name>, gitignored) and running their drivers.

`ensure()` creates a virtualenv and installs the pinned requirements from PyPI with uv (pip where
uv is missing); a stamp holding the requirements' hash makes the next run skip the install.
Drivers run as subprocesses with telemetry and tracing off and print one JSON document.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
PEERS_DIR = BENCH / ".peers"
DRIVERS = BENCH / "peers"

QUIET_ENV = {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "OTEL_SDK_DISABLED": "true",
    "LANGCHAIN_TRACING_V2": "false",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING": "false",
    "DO_NOT_TRACK": "1",
    "ANONYMIZED_TELEMETRY": "false",
    "PYTHONUNBUFFERED": "1",
    "OPENAI_API_KEY": "bench",
}


@dataclass(frozen=True)
class Peer:
    name: str
    label: str
    driver: str
    packages: tuple[str, ...]

    @property
    def requirements(self) -> Path:
        return DRIVERS / f"requirements-{self.name}.txt"

    @property
    def venv(self) -> Path:
        return PEERS_DIR / self.name

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def stamp(self) -> Path:
        return self.venv / ".bench-stamp"

    def wanted(self) -> str:
        return hashlib.sha256(self.requirements.read_bytes()).hexdigest()

    def installed(self) -> bool:
        return (
            self.python.exists()
            and self.stamp.exists()
            and self.stamp.read_text().strip() == self.wanted()
        )


CREWAI = Peer("crewai", "CrewAI", "crewai_driver.py", ("crewai",))
LANGGRAPH = Peer(
    "langgraph",
    "LangGraph",
    "langgraph_driver.py",
    ("langgraph", "langchain-openai", "langchain-core"),
)
PEERS = (CREWAI, LANGGRAPH)


def _uv() -> str | None:
    return os.environ.get("UV") or shutil.which("uv")


def ensure(peer: Peer, log: Any = print) -> None:
    """Install the peer's pinned requirements into its own virtualenv (once)."""
    if peer.installed():
        return
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    log(f"installing {peer.label} into {peer.venv} (pinned in {peer.requirements.name})")
    uv = _uv()
    if uv:
        subprocess.run(
            [uv, "venv", "--quiet", "--clear", "--python", sys.executable, str(peer.venv)],
            check=True,
        )
        subprocess.run(
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--python",
                str(peer.python),
                "-r",
                str(peer.requirements),
            ],
            check=True,
        )
    else:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(peer.venv)], check=True)
        subprocess.run(
            [
                str(peer.python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(peer.requirements),
            ],
            check=True,
        )
    peer.stamp.write_text(peer.wanted() + "\n")


def versions(peer: Peer) -> dict[str, str]:
    """Installed versions of the peer's main packages, read from its virtualenv."""
    if not peer.python.exists():
        return {}
    code = (
        "import json, importlib.metadata as m\n"
        f"names = {list(peer.packages)!r}\n"
        "out = {}\n"
        "for n in names:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [str(peer.python), "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    return dict(json.loads(done.stdout)) if done.returncode == 0 else {}


class DriverFailed(RuntimeError):
    pass


def run_driver(
    python: str | Path, driver: str, config: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """Run bench/peers/<driver> with `python`; returns the JSON it printed last."""
    env = {**os.environ, **QUIET_ENV}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [os.path.abspath(python), str(DRIVERS / driver), json.dumps(config)],
        cwd=DRIVERS,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise DriverFailed(
            f"{driver} exited {done.returncode}: {(done.stderr or done.stdout)[-1500:]}"
        )
    return dict(json.loads(lines[-1]))
