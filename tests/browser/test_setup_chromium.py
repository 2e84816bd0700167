"""`propledger_ensure_chromium` (scripts/_setup.sh), which `scripts/test` runs: it installs
Debian's chromium with apt-get when it is missing, as root or through `sudo -n`, and
otherwise says why the browser tests will be skipped. Run against stub `id`, `sudo` and
`apt-get` commands that record how they were called; nothing is installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REAL_TOOLS = ("bash", "cat", "rm", "mktemp", "env", "dirname")


def stub(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + script)
    path.chmod(0o755)


def run(
    tmp_path: Path,
    *,
    uid: int,
    sudo: str | None,
    apt: str | None,
    present: bool = False,
    **env: str,
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Sources _setup.sh with only stubs and a few real tools on PATH; returns the result
    and the recorded calls (one line each)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    calls.touch()
    for tool in REAL_TOOLS:
        real = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True)
        if real.stdout.strip().startswith("/"):
            (bin_dir / tool).symlink_to(real.stdout.strip())
    stub(bin_dir, "id", f"[[ $1 == -u ]] && echo {uid}\n")
    if sudo == "ok":
        stub(bin_dir, "sudo", f'echo "sudo $*" >> {calls}\n[[ $1 == -n ]] && shift\n"$@"\n')
    elif sudo == "password":
        stub(bin_dir, "sudo", f'echo "sudo $*" >> {calls}\nexit 1\n')
    if apt is not None:
        exit_code = 0 if apt == "ok" else 100
        stub(
            bin_dir,
            "apt-get",
            f'echo "apt-get $*" >> {calls}\necho apt says hi\nexit {exit_code}\n',
        )
    chromium = tmp_path / "chromium"
    if present:
        stub(tmp_path, "chromium", "exit 0\n")
    result = subprocess.run(
        ["bash", "-c", f"source {ROOT}/scripts/_setup.sh && propledger_ensure_chromium"],
        capture_output=True,
        text=True,
        env={"PATH": str(bin_dir), "PROPLEDGER_CHROMIUM": str(chromium), **env},
        timeout=30,
        check=False,
    )
    return result, calls.read_text().splitlines()


INSTALL = [
    "apt-get update -qq",
    "apt-get install -y -qq --no-install-recommends chromium",
]


def test_nothing_happens_when_chromium_is_there(tmp_path: Path) -> None:
    result, calls = run(tmp_path, uid=0, sudo=None, apt="ok", present=True)
    assert (result.returncode, calls, result.stderr) == (0, [], "")


def test_root_installs_it_with_apt_get_directly(tmp_path: Path) -> None:
    result, calls = run(tmp_path, uid=0, sudo="ok", apt="ok")
    assert result.returncode == 0
    assert calls == INSTALL
    assert "installing Debian's chromium" in result.stderr


def test_a_user_with_passwordless_sudo_installs_it_through_sudo(tmp_path: Path) -> None:
    result, calls = run(tmp_path, uid=1000, sudo="ok", apt="ok")
    assert result.returncode == 0
    assert calls == [
        "sudo -n true",
        "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        INSTALL[0],
        "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
        "--no-install-recommends chromium",
        INSTALL[1],
    ]


@pytest.mark.parametrize("sudo", [None, "password"])
def test_without_root_or_passwordless_sudo_it_says_why_and_installs_nothing(
    tmp_path: Path, sudo: str | None
) -> None:
    result, calls = run(tmp_path, uid=1000, sudo=sudo, apt="ok")
    assert result.returncode == 0
    assert [call for call in calls if call.startswith("apt-get")] == []
    assert "needs root or passwordless sudo" in result.stderr
    assert "will be skipped" in result.stderr


def test_without_apt_get_it_says_so(tmp_path: Path) -> None:
    result, calls = run(tmp_path, uid=0, sudo=None, apt=None)
    assert (result.returncode, calls) == (0, [])
    assert "there is no apt-get" in result.stderr


def test_a_failed_install_shows_apt_gets_output_and_does_not_stop_the_run(tmp_path: Path) -> None:
    result, calls = run(tmp_path, uid=0, sudo=None, apt="fail")
    assert result.returncode == 0
    assert calls == INSTALL[:1]  # install is not tried after a failed update
    assert "apt says hi" in result.stderr
    assert "could not install chromium" in result.stderr


def test_a_dry_run_prints_the_commands(tmp_path: Path) -> None:
    result, calls = run(tmp_path, uid=1000, sudo="ok", apt="ok", PROPLEDGER_SETUP_DRY_RUN="1")
    assert result.returncode == 0
    assert calls == ["sudo -n true"]
    assert result.stdout.splitlines() == [
        "dry run: sudo -n env DEBIAN_FRONTEND=noninteractive apt-get update -qq",
        "dry run: sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
        "--no-install-recommends chromium",
    ]


def test_the_test_command_runs_it_after_the_setup() -> None:
    script = (ROOT / "scripts" / "test").read_text()
    assert script.index("propledger_setup dev") < script.index("propledger_ensure_chromium")
    assert os.access(ROOT / "scripts" / "test", os.X_OK)
