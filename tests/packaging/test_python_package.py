"""switchboard-client installed as a user installs it: a wheel in a fresh venv, in a project of its own.

The project is laid out like full-stack-fastapi-template, with its own package named ``app``: the
name Switchboard's server also has, and that the clients used to live in. The project runs
docs/server-api.md's FastAPI example and docs/client.md's realtime example, unchanged but for
the server's address, against a live instance, and ``mypy --strict`` checks a typed module of its
own against the installed package (which needs its ``py.typed``).

Nothing is fetched at test time once the wheelhouse (the dependencies' wheels, at the versions
``requirements*.txt`` pin) is in pytest's cache: the fresh venv installs with ``--no-index``.
"""

from __future__ import annotations

import email.parser
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs_console import localize
from tests.docs_examples import example
from tests.support import ROOT, TEST_API_KEY, AppProcess, running

CLIENT = ROOT / "clients" / "python"
# What the user's project needs besides switchboard-client: the FastAPI example's framework.
USER_DEPENDENCIES = ["fastapi"]


def pins() -> str:
    """Every ``name==version`` of requirements*.txt, as a pip constraints file."""
    lines = []
    for name in ("requirements.txt", "requirements-dev.txt"):
        lines += [line for line in (ROOT / name).read_text().splitlines() if "==" in line and not line.startswith("-")]
    return "\n".join(sorted(set(lines))) + "\n"


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build``: the sdist, then the wheel built from that sdist (so the sdist builds)."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(CLIENT)], ROOT)
    return out


def the(dist: Path, pattern: str) -> Path:
    (found,) = dist.glob(pattern)
    return found


@pytest.fixture(scope="module")
def wheelhouse(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory, dist: Path) -> Path:
    """The wheels of every dependency, once per pin set (pip's own cache makes the first run quick)."""
    constraints = pins()
    key = hashlib.sha256((constraints + " ".join(USER_DEPENDENCIES)).encode()).hexdigest()[:16]
    cache = getattr(pytestconfig, "cache", None)  # none under -p no:cacheprovider: built for this run
    house = Path(cache.mkdir(f"wheelhouse-{key}")) if cache is not None else tmp_path_factory.mktemp("wheelhouse")
    if not (house / "complete").exists():
        (house / "constraints.txt").write_text(constraints)
        wheel = the(dist, "*.whl")
        cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(house)]
        run([*cmd, "-c", str(house / "constraints.txt"), str(wheel), *USER_DEPENDENCIES], ROOT, timeout=300)
        for ours in house.glob("switchboard_client-*"):
            ours.unlink()  # the project's wheel always comes from this run's build
        (house / "complete").touch()
    return house


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, dist: Path, wheelhouse: Path) -> Path:
    """A fresh venv with the wheel (and the user's FastAPI) installed from local files only."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(root)], ROOT)
    python = root / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-index"]
    run([*install, "--find-links", str(wheelhouse), str(the(dist, "*.whl")), *USER_DEPENDENCIES], ROOT)
    return root


USES = '''"""The user's own typed code against switchboard-client."""

from switchboard_client.api import APIError, SwitchboardAPISync
from switchboard_client.realtime import Client, Publication


def ship(api: SwitchboardAPISync, order: int) -> int:
    try:
        reply = api.publish(f"orders:#{order}", {"order": order}, idempotency_key=f"order-{order}")
    except APIError as error:
        return -error.code
    offset: int = reply["offset"]
    return offset


async def first(client: Client, channel: str) -> Publication:
    sub = await client.subscribe(channel)
    return await sub.get(timeout=5)
'''

MISUSE = """from switchboard_client.api import SwitchboardAPISync


def wrong(api: SwitchboardAPISync) -> None:
    api.publish(42, "a channel is a str")
"""

DRIVER = '''"""Ships an order through the user's app.main and watches it arrive as the customer would."""

import asyncio
import os
import sys
from pathlib import Path

import httpx

import app
import app.main as shop
import switchboard_client
from switchboard_client.realtime import Client

HERE = Path(__file__).resolve().parent
assert Path(app.__file__).resolve() == HERE / "app" / "__init__.py", app.__file__  # the user's app
INSTALLED = Path(switchboard_client.__file__).resolve()
assert INSTALLED.is_relative_to(Path(sys.prefix).resolve()), INSTALLED  # from the venv, not a checkout


async def main(base: str) -> None:
    with shop.db:
        shop.db.execute("INSERT INTO orders VALUES (1, '42', 'paid')")
    async with httpx.AsyncClient(base_url=base) as switchboard:
        token = (await switchboard.post("/dev/token", json={"sub": "42"})).json()["token"]
    async with Client(base.replace("http", "ws") + "/ws", token=token) as customer:
        orders = await customer.subscribe("orders:#42")
        transport = httpx.ASGITransport(app=shop.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
            for _ in range(2):  # a retried request publishes once
                print((await http.post("/orders/1/ship")).json())
        print((await orders.get(timeout=5)).data)
        try:
            print("again:", (await orders.get(timeout=0.5)).data)
        except TimeoutError:
            print("once")
    await shop.switchboard.aclose()


asyncio.run(main(sys.argv[1]))
'''


@pytest.fixture(scope="module")
def switchboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    """A live instance as the pages claim it: dev mode, the shipped namespaces file."""
    env = {"SWITCHBOARD_DEV_MODE": "true", "SWITCHBOARD_CONFIG": str(ROOT / "deploy" / "switchboard.toml")}
    with running(AppProcess("installed", tmp_path_factory.mktemp("switchboard"), env)) as (app,):
        yield app


@pytest.fixture
def project(tmp_path: Path, switchboard: AppProcess) -> Path:
    """The user's project: its own package ``app`` (``app/main.py`` is the page's FastAPI app)."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "main.py").write_text(
        localize(example("docs/server-api.md", "fastapi-after-commit"), switchboard.port)
    )
    (tmp_path / "app" / "uses.py").write_text(USES)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "shop"\nversion = "1"\n')
    return tmp_path


def user_env(venv: Path) -> dict[str, str]:
    """The user's shell: the fresh venv first on PATH, nothing of this checkout importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}", "KEY": TEST_API_KEY}


def test_the_fastapi_example_runs_in_a_project_with_its_own_app(
    project: Path, venv: Path, switchboard: AppProcess
) -> None:
    (project / "driver.py").write_text(DRIVER)
    out = run([str(venv / "bin" / "python"), "driver.py", switchboard.http], project, user_env(venv))
    assert out.splitlines() == [
        "{'status': 'shipped'}",
        "{'status': 'shipped'}",
        "{'order': 1, 'status': 'shipped'}",
        "once",
    ]


def test_the_realtime_example_runs_as_written(project: Path, venv: Path, switchboard: AppProcess) -> None:
    (project / "realtime.py").write_text(localize(example("docs/client.md", "client-py"), switchboard.port))
    out = run([str(venv / "bin" / "python"), "realtime.py"], project, user_env(venv))
    assert out.splitlines() == example("docs/client.md", "client-py-output").splitlines()


def test_mypy_strict_checks_the_users_code_against_the_installed_types(project: Path, venv: Path) -> None:
    (project / "app" / "misuse.py").write_text(MISUSE)
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--no-incremental",
        "--python-executable",
        str(venv / "bin" / "python"),
    ]
    done = subprocess.run(
        [*cmd, "app/uses.py", "app/misuse.py"], cwd=project, capture_output=True, text=True, timeout=120
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    # The good module passes; the bad call is caught, so the package's own annotations were read.
    assert len(errors) == 1, done.stdout
    assert errors[0].startswith("app/misuse.py:5: error: Argument 1"), done.stdout
    assert "[arg-type]" in errors[0], done.stdout


def test_the_artefacts_hold_the_package_and_nothing_else(dist: Path) -> None:
    wheel = sorted(name for name in zipfile.ZipFile(the(dist, "*.whl")).namelist() if ".dist-info/" not in name)
    with tarfile.open(the(dist, "*.tar.gz")) as sdist:
        source = sorted(member.name.split("/", 1)[1] for member in sdist.getmembers() if member.isfile())
    assert wheel == example_list("python-wheel")
    assert source == example_list("python-sdist")


def example_list(name: str) -> list[str]:
    return sorted(example("docs/client.md", name).split())


def test_the_wheel_declares_its_version_python_and_dependency_ranges(dist: Path) -> None:
    wheel = zipfile.ZipFile(the(dist, "*.whl"))
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = email.parser.Parser().parsestr(wheel.read(name).decode())
    version: dict[str, object] = {}  # the one place the version is written
    exec((CLIENT / "src" / "switchboard_client" / "__init__.py").read_text(), version)
    assert metadata["Name"] == "switchboard-client"
    assert metadata["Version"] == version["__version__"]
    assert metadata["Requires-Python"] == ">=3.11"
    every = metadata.get_all("Requires-Dist") or []
    requires = {line.split("<")[0].split(">")[0]: line for line in every if "extra ==" not in line}
    assert sorted(requires) == ["httpx", "orjson", "websockets"]
    assert all("<" in spec and ">=" in spec for spec in requires.values()), requires  # ranges, not pins
    # The outbox's drivers only with the extra (switchboard-client[outbox]), as ranges too.
    extras = {re.split(r"[\[<>=;]", line)[0]: line for line in every if "extra ==" in line}
    assert sorted(extras) == ["psycopg", "sqlalchemy"], every
    assert all("extra == 'outbox'" in spec and "<" in spec for spec in extras.values()), extras
    assert metadata.get_all("Provides-Extra") == ["outbox"]
    assert str(metadata.get_payload()).startswith("# switchboard-client")  # its README is the PyPI page
