"""The box at the top of every rendered section, and the section's resolved settings.

Each notebook's first code cell after its parameters calls :func:`show_header`. It resolves
the profile's parameters (with the notebook's papermill overrides), picks the data root
(synthetic fixtures under ``smoke``), and displays what a reader needs to trust the numbers
below it: the profile and its parameters, where each dataset came from, the softlib commit,
the torch version and device, and the papermill command that reruns the section.
"""
from __future__ import annotations

import html
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from . import profiles
from ..cache import ResultCache
from ..paths import cache_root, data_root as default_data_root

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_PARAMS = ("profile", "data_root", "output_dir", "seed", "device")


@dataclass
class Section:
    """What a notebook needs after its header: resolved parameters and where things live."""
    name: str
    profile: str
    params: dict[str, Any]
    data_root: Path
    cache: ResultCache
    device: str
    seed: int
    synthetic: bool
    output_dir: Path
    #: sections 3-4: the architectures whose fine-tuned models this page shows (None: all)
    only_archs: list[str] | None = None


def git_commit() -> str:
    """The softlib commit (``SOFTLIB_COMMIT`` if the runner set it), marked ``+dirty`` if edited."""
    if os.environ.get("SOFTLIB_COMMIT"):
        return os.environ["SOFTLIB_COMMIT"]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, text=True, capture_output=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def fixture_data_root() -> Path:
    """Where the smoke profile's synthetic datasets live (written on first use)."""
    from ..data import fixtures
    root = cache_root() / "fixture-data"
    if not (root / ".complete").exists():
        fixtures.write_fixture_root(root)
        (root / ".complete").write_text("synthetic fixture data written by softlib\n")
    return root


def _dataset_rows(datasets: Iterable[str], root: Path) -> list[tuple[str, str, str]]:
    from .. import data
    rows = []
    for name in datasets:
        try:
            present = data.available(name, root=root)
        except Exception as exc:  # an unknown name is a bug in the notebook: show it
            rows.append((name, "error", f"{type(exc).__name__}: {exc}"))
            continue
        if not present:
            rows.append((name, "absent", f"not under {root / name}; this section says what it "
                                         "cannot show without it"))
            continue
        try:
            text = data.provenance(name, root=root)
        except Exception as exc:
            text = f"(provenance unreadable: {exc})"
        rows.append((name, "present", text))
    return rows


def _papermill_command(section: str, profile: str) -> str:
    nb = f"notebooks/{section_notebook(section)}"
    return (f"jupytext --to ipynb {nb} -o /tmp/{section}.ipynb && "
            f"papermill /tmp/{section}.ipynb /tmp/{section}.out.ipynb -p profile {profile}"
            f" -p data_root \"$SOFTLIB_DATA\"")


def section_notebook(section: str) -> str:
    from .toc import SECTIONS
    return SECTIONS[section]


def show_header(profile: str, section: str, datasets: Iterable[str] = (),
                params: dict[str, Any] | None = None) -> Section:
    """Resolve ``section`` under ``profile``, display the provenance box, return the settings.

    ``params`` is the notebook's namespace (``locals()``): the standard notebook parameters
    (data_root, output_dir, seed, device) and any override of the section's own parameters
    (a name of the section's parameters set to something other than None) are taken from it.
    """
    params = dict(params or {})
    prof = profiles.get_profile(profile)
    section_defaults = profiles.resolve(profile, section)
    overrides = {k: params[k] for k in section_defaults if params.get(k) is not None}
    resolved = profiles.resolve(profile, section, **overrides)
    synthetic = bool(prof["synthetic_data"])
    root = fixture_data_root() if synthetic else default_data_root(params.get("data_root"))
    os.environ["SOFTLIB_DATA"] = str(root)
    from ..train import resolve_device
    device = str(resolve_device(params.get("device", "auto")))
    out = Path(params.get("output_dir") or (cache_root() / "outputs" / profile / section))
    out.mkdir(parents=True, exist_ok=True)
    sec = Section(name=section, profile=profile, params=resolved, data_root=root,
                  cache=ResultCache(), device=device, seed=int(params.get("seed", 0) or 0),
                  synthetic=synthetic, output_dir=out,
                  only_archs=list(params["only_archs"]) if params.get("only_archs") else None)
    _display(sec, prof["description"], _dataset_rows(datasets, root), overrides)
    return sec


def _display(sec: Section, description: str, rows, overrides) -> None:
    import torch
    commit = git_commit()
    lines = [f"softlib section '{sec.name}' | profile {sec.profile}: {description}",
             f"  commit {commit} | torch {torch.__version__} | device {sec.device} | "
             f"data root {sec.data_root}"]
    lines += [f"  {k} = {v!r}" for k, v in sec.params.items()]
    if sec.only_archs:
        lines.append(f"  only_archs = {sec.only_archs!r} (fine-tuned models of these only)")
    lines += [f"  dataset {n}: {status}" for n, status, _ in rows]
    warn = ""
    if sec.synthetic:
        warn = ("<p style='color:#a00;font-weight:bold'>SMOKE PROFILE: synthetic fixture data "
                "and tiny models. The numbers below are NOT results; they only show that the "
                "section runs.</p>")
        lines.insert(0, "!!! SMOKE PROFILE: synthetic data, numbers are NOT results !!!")
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:  # a script or a terminal: plain text
        print("\n".join(lines))
        return
    e = html.escape
    prow = "".join(
        f"<tr><td><code>{e(k)}</code></td><td><code>{e(repr(v))}</code>"
        f"{' (override)' if k in overrides else ''}</td></tr>" for k, v in sec.params.items())
    if sec.only_archs:
        prow += (f"<tr><td><code>only_archs</code></td><td><code>{e(repr(sec.only_archs))}</code>"
                 " (the fine-tuned models of these architectures only)</td></tr>")
    drow = "".join(
        f"<tr><td><code>{e(n)}</code></td><td>{e(s)}</td><td><details><summary>provenance"
        f"</summary><pre style='white-space:pre-wrap;font-size:0.8em'>{e(t)}</pre></details>"
        f"</td></tr>" for n, s, t in rows)
    box = f"""<div class="softlib-header" style="border:2px solid #446;border-radius:6px;padding:0.6em 1em;margin-bottom:1em;background:#f6f7fb">
{warn}<p><b>Profile <code>{e(sec.profile)}</code></b>: {e(description)}<br>
softlib commit <code>{e(commit)}</code> &middot; torch <code>{e(torch.__version__)}</code>
&middot; Python <code>{e(sys.version.split()[0])}</code> &middot; device <code>{e(sec.device)}</code>
&middot; seed <code>{sec.seed}</code></p>
<details><summary>Parameters of this section</summary><table>{prow}</table></details>
<details><summary>Datasets and their provenance</summary><table>{drow}</table></details>
<details><summary>Rerun this section with other parameters</summary>
<pre style="white-space:pre-wrap">{e(_papermill_command(sec.name, sec.profile))}</pre>
<p>Override any parameter above with <code>-p NAME VALUE</code> (lists as YAML, e.g. <code>-y "lr: [0.01]"</code>).</p></details>
</div>"""
    display(HTML(box))
