"""Shell completion and the man pages (issue 18), from the CLI itself.

Completion is click's own (``_VAULTPKI_COMPLETE``): the bash script the docs tell an operator to source
is produced, and a real bash completes subcommands and option values with it. The man pages in ``man/``
are click-man's rendering of the CLI's help, committed so that a wheel can ship them: they must equal a
fresh rendering (else: ``make man``), render without a warning, and land in the wheel where pip installs
them, ``<prefix>/share/man/man1``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest
from click_man.core import write_man_pages

from tests.support.wheel import REPO, build_wheels
from vaultpki.cli.main import main

MAN = REPO / "man"
BIN = Path(sys.executable).parent          # where the venv's `vaultpki` console script is


def completion_env(**extra: str) -> dict[str, str]:
    return {"PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "HOME": "/nonexistent", **extra}


def test_bash_completion_source_is_produced() -> None:
    done = subprocess.run(["vaultpki"], env=completion_env(_VAULTPKI_COMPLETE="bash_source"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "_vaultpki_completion()" in done.stdout
    assert "complete -o nosort -F _vaultpki_completion vaultpki" in done.stdout


COMPLETIONS = {
    "vaultpki iss": ["issue-node", "issue-user"],                               # subcommands
    "vaultpki ca ": ["activate", "retire", "rotate", "status"],                 # a group's subcommands
    "vaultpki sync --log-format ": ["text", "json"],                             # an option's choices
    "vaultpki init --mode split": ["split-node", "split-ca"],
    "vaultpki status --js": ["--json"],                                          # option names
}


def test_bash_completes_with_the_sourced_script() -> None:
    """What a shell does at <TAB>: source the script (as ~/.bashrc would), then call the function it registered,
    with the command's name as its first argument as ``complete -F`` does, for each line typed so far."""
    script = ['eval "$(_VAULTPKI_COMPLETE=bash_source vaultpki)"']
    for typed in COMPLETIONS:
        words = typed.split(" ")                 # a trailing space: the word being completed is empty
        script += [f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={len(words) - 1}; COMPREPLY=()",
                   "_vaultpki_completion vaultpki", 'echo "${COMPREPLY[*]}"']
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", "\n".join(script)], env=completion_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert dict(zip(COMPLETIONS, (line.split() for line in done.stdout.splitlines()), strict=True)) == COMPLETIONS


@pytest.mark.parametrize(("shell", "needle"), [("zsh", "#compdef vaultpki"), ("fish", "complete --no-files --command vaultpki")])
def test_zsh_and_fish_sources_are_produced(shell: str, needle: str) -> None:
    done = subprocess.run(["vaultpki"], env=completion_env(_VAULTPKI_COMPLETE=f"{shell}_source"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and needle in done.stdout, (done.stdout, done.stderr)


def committed_date() -> str:
    """The date in vaultpki.1's header: when the pages were last made (a date alone is no drift)."""
    header = (MAN / "vaultpki.1").read_text().splitlines()[0]
    match = re.fullmatch(r'\.TH "VAULTPKI" "1" "(?P<date>\d{4}-\d\d-\d\d)" .*', header)
    assert match, header
    return match["date"]


def test_the_committed_man_pages_are_the_cli_s_own(tmp_path: Path) -> None:
    write_man_pages("vaultpki", main, version=version("vaultpki"), target_dir=str(tmp_path), date=committed_date())
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*.1")}
    committed = {p.name: p.read_text() for p in MAN.glob("*.1")}
    assert sorted(committed) == sorted(fresh), "man/ lists other pages than the CLI has: run `make man`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"man pages differ from the CLI's help: run `make man` ({', '.join(stale)})"
    assert {"vaultpki.1", "vaultpki-sync.1", "vaultpki-init.1", "vaultpki-ca-rotate.1"} <= set(committed)


def test_every_man_page_renders_without_a_warning() -> None:
    groff = shutil.which("groff")
    assert groff, "groff is missing (Debian package groff-base): the man pages cannot be checked"
    for page in sorted(MAN.glob("*.1")):
        done = subprocess.run([groff, "-man", "-ww", "-z", str(page)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stderr == "", (page.name, done.stderr)


def test_the_wheel_installs_the_man_pages_under_share_man_man1(tmp_path: Path) -> None:
    """pip installs a wheel's ``<name>.data/data/`` under the environment's prefix: ``share/man/man1`` there
    is where ``man`` looks (``/usr/local/share/man`` for a system-wide pip, the venv's own for a venv)."""
    wheels = build_wheels(tmp_path)
    with zipfile.ZipFile(wheels.vaultpki) as zf:
        pages = [n for n in zf.namelist() if re.fullmatch(r"[^/]+\.data/data/share/man/man1/[^/]+", n)]
        shipped = {Path(n).name: zf.read(n).decode() for n in pages}
    assert shipped == {p.name: p.read_text() for p in MAN.glob("*.1")}
