"""``micromine agent install-service``: the agent as a systemd service.

:func:`render_unit` is pure (settings in, unit text out) so that it can be tested and
checked with ``systemd-analyze verify``; :func:`install` is the thin writer.

Choices, and why:

- **DynamicUser=yes** by default: systemd allocates an unprivileged user while the
  service runs, so there is no account to create, and the agent can write nothing
  outside its state directory.  ``--user NAME`` runs it as an existing account instead
  (create it with ``sudo useradd --system --home-dir /var/lib/micromine --shell
  /usr/sbin/nologin micromine``), for example to let that user's group read the status.
- **StateDirectory=micromine**: systemd creates ``/var/lib/micromine`` owned by the
  service user (mode 0700), and it survives restarts and upgrades; the agent keeps its
  key, status and pause files there (``MICROMINE_STATE_DIR``).
- **The settings** are read from ``/etc/micromine/agent.toml`` (``MICROMINE_CONFIG``),
  which install-service starts with every setting commented out; root edits it, the
  service only reads it.
- **Out of the owner's way**: Nice=10, CPUSchedulingPolicy=idle and IOSchedulingClass=idle
  (the agent only gets CPU and disk nobody else wants), and MemoryMax as a backstop (the
  agent uses under 40 MB, docs/PERFORMANCE.md).  The agent applies its own nice and
  SCHED_IDLE as well, for when it is not run by systemd.
- **Restart=on-failure** with a pause (RestartSec) so a broken broker address does not
  spin; a clean stop (SIGTERM, exit 0) stays stopped.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from micromine.device_agent.config import toml_value
from micromine.device_agent.settings import SETTINGS

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_UNIT",
    "InstallError",
    "ServiceOptions",
    "find_executable",
    "home_warning",
    "install",
    "render_starter_config",
    "render_unit",
]

DEFAULT_UNIT = Path("/etc/systemd/system/micromine-agent.service")
DEFAULT_CONFIG = Path("/etc/micromine/agent.toml")
STATE_DIR = Path("/var/lib/micromine")
MEMORY_MAX = "128M"


class InstallError(RuntimeError):
    """install-service cannot do its job here (not root, no systemd, bad path)."""


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    executable: Path  # the installed `micromine` script, absolute
    config: Path = DEFAULT_CONFIG
    user: str | None = None  # None: DynamicUser=yes
    nice: int = 10
    memory_max: str = MEMORY_MAX


def find_executable() -> Path:
    """The absolute path of the `micromine` this process runs as (pipx, venv or system)."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "micromine" and argv0.exists():
        return Path(os.path.abspath(argv0))  # not resolved: pipx's link survives upgrades
    found = shutil.which("micromine")
    if found is None:
        raise InstallError("cannot find the `micromine` command; give --executable PATH")
    return Path(os.path.abspath(found))


def home_warning(executable: Path) -> str | None:
    """The service cannot see home directories (ProtectHome=yes, and they are private)."""
    if executable.parts[1:2] in (("home",), ("root",)):
        return (
            f"{executable} is in a home directory, which the service cannot read; install "
            "micromine system-wide: sudo PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin "
            "pipx install micromine (docs/RASPBERRY_PI.md)"
        )
    return None


def render_unit(options: ServiceOptions) -> str:
    """The unit file's text."""
    if not options.executable.is_absolute() or not options.config.is_absolute():
        raise InstallError("the executable and the config file need absolute paths")
    user = f"User={options.user}" if options.user else "DynamicUser=yes"
    # The flags keep this agent's state in /var/lib/micromine whatever the file says.
    exec_start = f"{_quote(str(options.executable))} agent"
    return f"""\
# micromine device agent; written by `micromine agent install-service`.
# Settings: {options.config}  (then: sudo systemctl restart micromine-agent)
# Set-up, updates and removal: docs/RASPBERRY_PI.md in the micromine sources.
[Unit]
Description=micromine device agent (checks signed transactions with spare CPU)
Wants=network-online.target
After=network-online.target

[Service]
Type=exec
ExecStart={exec_start}
Environment=MICROMINE_CONFIG={_quote(str(options.config))}
Environment=MICROMINE_STATE_DIR={STATE_DIR}
Environment=MICROMINE_LOG_JSON=false
Environment=PYTHONUNBUFFERED=1
{user}
StateDirectory=micromine
StateDirectoryMode=0700
Restart=on-failure
RestartSec=10s
TimeoutStopSec=15s
Nice={options.nice}
CPUSchedulingPolicy=idle
IOSchedulingClass=idle
MemoryMax={options.memory_max}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
LockPersonality=yes
RestrictRealtime=yes
SystemCallArchitectures=native
UMask=0077

[Install]
WantedBy=multi-user.target
"""


def render_starter_config() -> str:
    """/etc/micromine/agent.toml for a new install: every setting, commented out."""
    examples = {
        "broker": '"mqtts://broker.example.net:8883"',
        "key": f'"{STATE_DIR}/device.key"',
        "pause_file": f'"{STATE_DIR}/paused"',
        "status_file": f'"{STATE_DIR}/status.json"',
        "issuer": '["<a ledger node public key, 64 hex characters>"]',
        "tls_ca": '"/etc/micromine/ca.pem"',
        "tls_cert": '"/etc/micromine/device.crt"',
        "tls_key": '"/etc/micromine/device.pem"',
        "schedule": '"22:00-07:00"',
    }
    lines = [
        "# micromine agent settings (TOML).  Every setting is also a flag (--cpu-budget)",
        "# and an environment variable (MICROMINE_CPU_BUDGET); `micromine agent config",
        "# --show` prints what the agent will use and where each value came from.",
        f"# The service keeps its key and status in {STATE_DIR} (MICROMINE_STATE_DIR).",
        "# Uncomment and edit; the values shown are the defaults, or examples (e.g.).",
        "",
    ]
    for s in SETTINGS:
        if s.hidden or s.name == "state_dir":
            continue
        example = examples.get(s.name)
        shown = example or toml_value(s.name, s.default)
        lines += [f"# {s.help}", f"# {s.name} = {shown}" + ("  # e.g." if example else ""), ""]
    return "\n".join(lines)


def install(options: ServiceOptions, unit_path: Path = DEFAULT_UNIT) -> list[str]:
    """Write the unit (and a starter config unless one exists); returns what was done."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise InstallError("needs root to write system units: run it with sudo")
    if not Path("/run/systemd/system").is_dir():
        raise InstallError("systemd is not running on this machine (no /run/systemd/system)")
    unit = render_unit(options)
    done = []
    try:
        unit_path.parent.mkdir(parents=True, exist_ok=True)
        unit_path.write_text(unit, encoding="utf-8")
        done.append(f"wrote {unit_path}")
        if options.config.exists():
            done.append(f"kept {options.config}")
        else:
            options.config.parent.mkdir(parents=True, exist_ok=True)
            options.config.write_text(render_starter_config(), encoding="utf-8")
            done.append(f"wrote {options.config} (set broker = ... in it)")
    except OSError as exc:
        raise InstallError(f"cannot write: {exc}") from None
    return done


def _quote(text: str) -> str:
    """A word for a unit file: quoted if it has spaces (systemd's own quoting rules)."""
    if not text or any(c in text for c in " \t\"'\\"):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text
