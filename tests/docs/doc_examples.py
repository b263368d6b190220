#!/usr/bin/python3
"""Runs the examples of README.md and docs/*.md against the real binary, agent and
Python module, so that a doc that drifts from the behaviour fails the build.

Usage: doc_examples.py [--build-dir DIR] [--list] [--only FILE[:LINE]]... [--file MD]...

Fenced blocks, by kind:
  console   `$ ` lines are commands (a trailing `\\` continues one); the lines after a
            command, up to the next `$ `, are its expected output (stdout and stderr).
            `$ build/release/gpucluster agent ... &` starts a managed agent (below).
  sh        every command must exit 0; its output is not compared.
  python    run as a script by this interpreter, PYTHONPATH=<build>/python; must exit 0.
  json      must parse as JSON.
  others    (yaml, cpp, promql, plain) are not run, unless a `check` marker says how.

Expected output: lines compare exactly (trailing blanks ignored). `…` alone on a line
matches any number of lines (none included); `…` inside a line matches any text in
that line; `{{number}}` matches one number.

Markers: one or more HTML comments on the lines right before a fence,
  <!-- doc-test: OPTION OPTION=VALUE OPTION="VALUE WITH SPACES" -->
  skip reason="..."     not run here (counted and listed with the reason); reason required
  agent args="..."      start an agent for this block with these arguments (console, sh, python)
  exit=N                every command of the block must exit N (default 0)
  vary="KEY,KEY"        the numbers of these JSON keys vary: expected values match any number
  setup="..."           python: code run before the block; console/sh: a command run first
  check="CMD {file}"    any kind: the block is written to a file and CMD must exit 0

Everything runs from the repository root; `build/release/` in commands is rewritten
to --build-dir. Agents listen on 127.0.0.1:0 (port read from the banner
"gpucluster agent on http://127.0.0.1:PORT"); `localhost:9420` and `127.0.0.1:9420`
in commands and python blocks are rewritten to that address, and the port back to
9420 in outputs.
Agents get SIGTERM at the end of their block (must exit 0), SIGKILL after 15 s.
Details: tests/docs/README.md.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import difflib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC_BUILD_DIR = "build/release"  # the build dir the docs' commands name
DOC_AGENT_PORT = 9420  # the port the docs' agent examples use
COMMAND_TIMEOUT_S = 30
AGENT_START_TIMEOUT_S = 10
AGENT_STOP_TIMEOUT_S = 15  # above the agent's default --drain-timeout (10 s)
RUN_KINDS = ("console", "sh", "python", "json")
MARKER_OPTIONS = {"skip", "reason", "agent", "args", "exit", "vary", "setup", "check"}
FLAG_OPTIONS = {"skip", "agent"}

FENCE_RE = re.compile(r"^```([A-Za-z0-9_+-]*)\s*$")
MARKER_RE = re.compile(r"^<!--\s*doc-test:(.*?)-->\s*$")
BANNER_RE = re.compile(r"gpucluster agent on http://127\.0\.0\.1:([0-9]+)")
READY_RE = re.compile(r"^ready: .*\n", re.M)
NUMBER_RE = r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
# Several agents in one block (a coordinator and the agents that join it): an agent
# started with `--listen …:942N` owns doc port 942N; the others own 9420.
DOC_ANY_ADDRESS_RE = re.compile(r"\b(?:localhost|127\.0\.0\.1):(942\d)\b")


class MarkerError(Exception):
    """A marker or block the script cannot interpret (exit 2)."""


class BlockFailure(Exception):
    """The block's example disagrees with the behaviour."""


@dataclass
class Block:
    path: str  # relative to the repository root
    line: int  # 1-based line of the opening fence
    kind: str
    lines: list[str]
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def runs(self) -> bool:
        return self.kind in RUN_KINDS or "check" in self.markers


def parse_marker(text: str, where: str) -> dict[str, str]:
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise MarkerError(f"{where}: marker {text.strip()!r}: {error}") from None
    options: dict[str, str] = {}
    for word in words:
        name, has_value, value = word.partition("=")
        if name not in MARKER_OPTIONS:
            known = ", ".join(sorted(MARKER_OPTIONS))
            raise MarkerError(f"{where}: marker option {name!r} is unknown (known: {known})")
        if bool(has_value) == (name in FLAG_OPTIONS):
            rule = "takes no value" if name in FLAG_OPTIONS else "needs a value (name=value)"
            raise MarkerError(f"{where}: marker option {word!r}: {name} {rule}")
        options[name] = value
    if "skip" in options and not options.get("reason"):
        raise MarkerError(f'{where}: skip needs reason="..."')
    if "reason" in options and "skip" not in options:
        raise MarkerError(f"{where}: reason is for skip")
    if "args" in options and "agent" not in options:
        raise MarkerError(f"{where}: args is for agent")
    if "exit" in options and not options["exit"].isdigit():
        raise MarkerError(f"{where}: exit={options['exit']!r}: must be a whole number")
    if "check" in options and "{file}" not in options["check"]:
        raise MarkerError(f"{where}: check={options['check']!r}: must name {{file}}")
    return options


# Which options make sense for which kinds of block (the others always do).
OPTION_KINDS = {"agent": ("console", "sh", "python"), "exit": ("console", "sh", "python"), "vary": ("console",),
                "setup": ("console", "sh", "python")}


def check_marker_kinds(block: Block) -> None:
    for name, kinds in OPTION_KINDS.items():
        if name in block.markers and block.kind not in kinds:
            raise MarkerError(f"{block.where}: marker option {name} is for {'/'.join(kinds)} blocks, "
                              f"not {block.kind or 'plain'}")


def parse_markdown(path: Path) -> list[Block]:
    rel = path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks: list[Block] = []
    pending: dict[str, str] = {}
    pending_line = 0
    index = 0
    while index < len(lines):
        line = lines[index]
        marker = MARKER_RE.match(line)
        if marker:
            for name, value in parse_marker(marker.group(1), f"{rel}:{index + 1}").items():
                pending[name] = value
            pending_line = pending_line or index + 1
            index += 1
            continue
        fence = FENCE_RE.match(line)
        if fence:
            end = index + 1
            while end < len(lines) and lines[end].rstrip() != "```":
                end += 1
            if end == len(lines):
                raise MarkerError(f"{rel}:{index + 1}: fence never closed")
            block = Block(rel, index + 1, fence.group(1), lines[index + 1 : end], pending)
            check_marker_kinds(block)
            blocks.append(block)
            pending, pending_line = {}, 0
            index = end + 1
            continue
        if pending:
            raise MarkerError(f"{rel}:{pending_line}: a doc-test marker must be on the line right before a fence")
        index += 1
    if pending:
        raise MarkerError(f"{rel}:{pending_line}: a doc-test marker must be on the line right before a fence")
    return blocks


@dataclass
class Command:
    text: str
    line: int  # line in the document
    expected: list[str] = field(default_factory=list)


def logical_lines(block: Block) -> list[tuple[int, str]]:
    """(document line, text) per line, with `\\` continuations joined."""
    out: list[tuple[int, str]] = []
    joined, start = "", 0
    for offset, line in enumerate(block.lines):
        if not joined:
            start = block.line + 1 + offset
        if line.endswith("\\"):
            joined += line[:-1] + " "
            continue
        out.append((start, joined + line))
        joined = ""
    if joined:
        raise MarkerError(f"{block.path}:{start}: a `\\` continuation at the end of the block")
    return out


def console_commands(block: Block) -> list[Command]:
    commands: list[Command] = []
    continuing = False
    for offset, line in enumerate(block.lines):
        number = block.line + 1 + offset
        if continuing:
            commands[-1].text += " " + line.rstrip("\\")
            continuing = line.endswith("\\")
        elif line.startswith("$ "):
            commands.append(Command(line[2:].rstrip("\\"), number))
            continuing = line.endswith("\\")
        elif not commands:
            raise MarkerError(f"{block.path}:{number}: console output before any `$ ` command")
        else:
            commands[-1].expected.append(line)
    for command in commands:  # as output_lines() does with the actual output
        while command.expected and not command.expected[-1].strip():
            command.expected.pop()
    return commands


def agent_command(command: str) -> tuple[list[str], bool] | None:
    """(the arguments after `gpucluster agent`, whether it ends with `&`), or None for
    another command."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return None  # not for shlex: bash says what is wrong with it
    background = bool(words) and words[-1].endswith("&") and not words[-1].endswith("&&")
    if background:
        words[-1] = words[-1][:-1]
        words = [word for word in words if word]
    if len(words) >= 2 and Path(words[0]).name == "gpucluster" and words[1] == "agent":
        return words[2:], background
    return None


def expected_pattern(line: str, vary: list[str]) -> re.Pattern[str]:
    for key in vary:
        line = re.sub(r'("' + re.escape(key) + r'"\s*:\s*)' + NUMBER_RE, r"\1{{number}}", line)
    parts = re.split(r"(…|\{\{number\}\})", line.rstrip())
    regex = "".join(".*" if p == "…" else NUMBER_RE if p == "{{number}}" else re.escape(p) for p in parts)
    return re.compile(regex)


def output_matches(expected: list[str], actual: list[str], vary: list[str]) -> bool:
    """Line by line; a lone `…` matches any number of lines (dynamic programming, O(E×A))."""
    patterns = [None if line.strip() == "…" else expected_pattern(line, vary) for line in expected]
    # reachable[j]: expected[:i] can match actual[:j]
    reachable = [True] + [False] * len(actual)
    for pattern in patterns:
        following = [False] * (len(actual) + 1)
        for j in range(len(actual) + 1):
            if pattern is None:
                following[j] = reachable[j] or (j > 0 and following[j - 1])
            elif j > 0 and reachable[j - 1]:
                following[j] = pattern.fullmatch(actual[j - 1]) is not None
        reachable = following
    return reachable[len(actual)]


def output_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def diff(expected: list[str], actual: list[str]) -> str:
    lines = list(difflib.unified_diff(expected, actual, "expected (doc)", "actual", lineterm="", n=1))
    return "\n".join(lines[:40] + (["  … (diff shortened)"] if len(lines) > 40 else []))


def prctl(option: int, value: int) -> None:
    if ctypes.CDLL(None, use_errno=True).prctl(option, value) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value})")


def die_with_parent() -> None:
    # If this script is killed (a CTest timeout sends SIGKILL), its children get
    # SIGTERM from the kernel rather than living on.
    PR_SET_PDEATHSIG = 1
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def descendants(pid: int) -> list[int]:
    """The processes below pid, from /proc (a snapshot)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        children[int(stat[stat.rindex(")") + 2 :].split()[1])].append(int(entry.name))
    found, queue = [], list(children.get(pid, []))  # a process tree is finite and acyclic
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def kill_tree(pid: int) -> None:
    """SIGKILL pid and everything below it. Killing the process group is not enough:
    ninja, for one, puts each job into a group of its own."""
    for victim in [pid, *descendants(pid)]:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


def reap_strays(keep: set[int]) -> None:
    """SIGKILL and reap our children other than keep: what a command left running
    (with the subreaper set in main(), orphans of commands become our children)."""
    for _ in range(10):  # bounded: each round kills what the previous one found
        strays = [process for process in descendants(os.getpid()) if process not in keep]
        if not strays:
            return
        for stray in strays:
            kill_tree(stray)
        for stray in strays:
            try:
                os.waitpid(stray, 0)
            except ChildProcessError:
                pass  # not our direct child: its own parent reaps it


class Agent:
    """A `gpucluster agent` on a free loopback port, stopped by stop()."""

    def __init__(self, binary: str, args: list[str], workdir: Path):
        args = list(args)
        self.doc_port = DOC_AGENT_PORT
        for i, arg in enumerate(args):
            listen = args[i + 1] if arg == "--listen" and i + 1 < len(args) else (
                arg.split("=", 1)[1] if arg.startswith("--listen=") else None)
            if listen is None:
                continue
            port = listen.rsplit(":", 1)[-1]
            if port.isdigit() and DOC_AGENT_PORT <= int(port) <= DOC_AGENT_PORT + 9:
                self.doc_port = int(port)
            del args[i : i + (2 if arg == "--listen" else 1)]
            break
        self.argv = [binary, "agent", *args, "--listen", "127.0.0.1:0"]
        self.stdout_path = workdir / f"agent-{id(self)}.out"
        self.stderr_path = workdir / f"agent-{id(self)}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(self.argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=err, preexec_fn=die_with_parent)
        self.port = 0
        deadline = time.monotonic() + AGENT_START_TIMEOUT_S
        while time.monotonic() < deadline:
            banner = self.stdout_path.read_text(errors="replace")
            found = BANNER_RE.search(banner)
            if found and READY_RE.search(banner):  # it listens first, then says when its devices are discovered
                self.port = int(found.group(1))
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise BlockFailure(f"agent {shlex.join(self.argv)} did not print its banner within "
                           f"{AGENT_START_TIMEOUT_S} s (exit {self.process.returncode}); stderr:\n"
                           + self.stderr()[-2000:])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(AGENT_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


class Runner:
    def __init__(self, build_dir: Path, workdir: Path):
        self.build_dir = build_dir
        self.workdir = workdir
        self.env = dict(os.environ)
        python_dir = str(build_dir / "python")
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [python_dir, self.env.get("PYTHONPATH")]))
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.agents: list[Agent] = []

    # -- helpers ---------------------------------------------------------------------
    def rewrite(self, command: str) -> str:
        command = re.sub(r"(?<![\w/.-])" + re.escape(DOC_BUILD_DIR) + r"/", str(self.build_dir) + "/", command)

        def real_address(match: re.Match) -> str:
            doc_port = int(match.group(1))
            owners = [agent for agent in self.agents if agent.doc_port == doc_port]
            if not owners and doc_port == DOC_AGENT_PORT and self.agents:
                owners = self.agents[-1:]
            if not owners:
                raise BlockFailure(f"`{command}` talks to an agent on port {doc_port}, but none runs for this "
                                   "block: start one with `$ build/release/gpucluster agent ... &` or a marker "
                                   '<!-- doc-test: agent args="..." -->')
            return f"127.0.0.1:{owners[-1].port}"

        return DOC_ANY_ADDRESS_RE.sub(real_address, command)

    def unrewrite(self, output: str, agents: list[Agent] | None = None) -> str:
        for agent in self.agents if agents is None else agents:
            output = output.replace(f"127.0.0.1:{agent.port}", f"127.0.0.1:{agent.doc_port}")
        return output

    def shell(self, command: str) -> tuple[int, str]:
        """Runs one command with bash in the repository root; stdout and stderr merged."""
        process = subprocess.Popen(["/bin/bash", "-c", command], cwd=REPO_ROOT, env=self.env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   preexec_fn=die_with_parent)
        try:
            output, _ = process.communicate(timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            kill_tree(process.pid)
            process.communicate()
            raise BlockFailure(f"`{command}` did not finish within {COMMAND_TIMEOUT_S} s") from None
        finally:
            reap_strays({agent.process.pid for agent in self.agents})
        return process.returncode, output.decode("utf-8", errors="replace")

    def start_agent(self, args: list[str]) -> Agent:
        agent = Agent(str(self.build_dir / "gpucluster"), args, self.workdir)
        self.agents.append(agent)
        return agent

    def stop_agent(self, agent: Agent) -> None:
        self.agents.remove(agent)
        status = agent.stop()
        if status != 0:
            raise BlockFailure(f"agent {shlex.join(agent.argv)} exited {status} on SIGTERM (docs: 0); stderr:\n"
                               + agent.stderr()[-2000:])

    def stop_agents(self) -> None:
        failure = None
        while self.agents:
            try:
                self.stop_agent(self.agents[-1])
            except BlockFailure as error:
                failure = failure or error
        if failure:
            raise failure

    @staticmethod
    def expected_status(block: Block) -> int:
        return int(block.markers.get("exit", "0"))

    def run_setup(self, block: Block) -> None:
        if "setup" in block.markers and block.kind != "python":
            command = self.rewrite(block.markers["setup"])
            status, output = self.shell(command)
            if status != 0:
                raise BlockFailure(f"setup `{command}` exited {status}; output:\n{output[-3000:]}")

    # -- kinds -----------------------------------------------------------------------
    def run_console(self, block: Block) -> None:
        vary = [key.strip() for key in block.markers.get("vary", "").split(",") if key.strip()]
        for command in console_commands(block):
            agent_invocation = agent_command(command.text)
            if agent_invocation is not None:
                args, background = agent_invocation
                # Addresses of agents started before (--join URL) are rewritten; its own --listen is not.
                agent = self.start_agent([arg if i > 0 and args[i - 1] == "--listen" or arg.startswith("--listen=")
                                          else self.rewrite(arg) for i, arg in enumerate(args)])
                if background and not command.expected:
                    continue  # the doc shows no banner for it: nothing to compare
                if not background:  # it would run until Ctrl-C: its banner is what the doc shows
                    self.stop_agent(agent)
                actual = output_lines(self.unrewrite(agent.stdout(), [agent]))
            else:
                text = self.rewrite(command.text)
                status, output = self.shell(text)
                if status != self.expected_status(block):
                    raise BlockFailure(f"line {command.line}: `{command.text}` exited {status}, expected "
                                       f"{self.expected_status(block)}; output:\n{output[-3000:]}")
                actual = output_lines(self.unrewrite(output))
            if not output_matches(command.expected, actual, vary):
                raise BlockFailure(f"line {command.line}: `{command.text}`: the output differs\n"
                                   + diff(command.expected, actual))

    def run_sh(self, block: Block) -> None:
        for line, text in logical_lines(block):
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            command = self.rewrite(text)
            status, output = self.shell(command)
            if status != self.expected_status(block):
                raise BlockFailure(f"line {line}: `{text}` exited {status}, expected "
                                   f"{self.expected_status(block)}; output:\n{output[-3000:]}")

    def run_python(self, block: Block) -> None:
        if not (self.build_dir / "python" / "gpucluster").is_dir():
            raise BlockFailure(f"the Python module is not built: {self.build_dir / 'python' / 'gpucluster'} is "
                               "missing (target gpucluster_python)")
        script = self.workdir / f"block-{block.line}.py"
        setup = block.markers.get("setup", "")
        # With an `agent` marker, the script's localhost:9420 is that agent (as in commands).
        text = self.rewrite((setup + "\n" if setup else "") + "\n".join(block.lines) + "\n")
        script.write_text(text, encoding="utf-8")
        status, output = self.shell(shlex.join([sys.executable, str(script)]))
        if status != self.expected_status(block):
            raise BlockFailure(f"the script exited {status}, expected {self.expected_status(block)}; output:\n"
                               + output[-3000:])

    def run_json(self, block: Block) -> None:
        try:
            json.loads("\n".join(block.lines))
        except json.JSONDecodeError as error:
            raise BlockFailure(f"not valid JSON: {error} (document line {block.line + error.lineno})") from None

    def run_check(self, block: Block) -> None:
        suffix = {"json": ".json", "yaml": ".yml", "yml": ".yml"}.get(block.kind, ".txt")
        path = self.workdir / f"block-{block.line}{suffix}"
        path.write_text("\n".join(block.lines) + "\n", encoding="utf-8")
        command = self.rewrite(block.markers["check"]).replace("{file}", shlex.quote(str(path)))
        status, output = self.shell(command)
        if status != 0:
            raise BlockFailure(f"check `{command}` exited {status}; output:\n{output[-3000:]}")

    def run(self, block: Block) -> None:
        try:
            if "agent" in block.markers:
                self.start_agent(shlex.split(block.markers.get("args", "")))
            self.run_setup(block)
            if "check" in block.markers:
                self.run_check(block)
            if block.kind in RUN_KINDS:
                getattr(self, f"run_{block.kind}")(block)
        except BaseException:
            while self.agents:  # the block already failed: stop them, their exit status aside
                self.agents.pop().stop()
            raise
        self.stop_agents()


def default_documents() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def selected(block: Block, only: list[str]) -> bool:
    if not only:
        return True
    for spec in only:
        path, _, line = spec.partition(":")
        path = Path(path).resolve().relative_to(REPO_ROOT).as_posix() if Path(path).exists() else path
        if (block.path == path or block.path.endswith("/" + path)) and (not line or int(line) == block.line):
            return True
    return False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-dir", default=DOC_BUILD_DIR, help="build tree under test (default build/release)")
    parser.add_argument("--list", action="store_true", help="list the blocks and their markers, run nothing")
    parser.add_argument("--only", action="append", default=[], metavar="FILE[:LINE]",
                        help="run only the blocks of FILE (at the fence on LINE); repeatable")
    parser.add_argument("--file", action="append", type=Path, default=[], metavar="MD",
                        help="documents to read instead of README.md and docs/*.md; repeatable")
    options = parser.parse_args(argv)
    for spec in options.only:
        if not re.fullmatch(r"[^:]+(:[0-9]+)?", spec):
            parser.error(f"--only {spec!r}: must be FILE or FILE:LINE (LINE a whole number)")
    build_dir = Path(options.build_dir)
    build_dir = (build_dir if build_dir.is_absolute() else REPO_ROOT / build_dir).resolve()

    try:
        documents = [path.resolve() for path in options.file] or default_documents()
        blocks = [block for path in documents for block in parse_markdown(path) if selected(block, options.only)]
    except (MarkerError, OSError) as error:
        print(f"doc_examples: {error}", file=sys.stderr)
        return 2
    if options.only and not blocks:
        print(f"doc_examples: --only {' '.join(options.only)}: no block there", file=sys.stderr)
        return 2

    if options.list:
        for block in blocks:
            markers = " ".join(f"{k}={v!r}" if v else k for k, v in block.markers.items())
            state = "skipped" if "skip" in block.markers else "runs" if block.runs() else "not run"
            print(f"{block.where:24} {block.kind or 'plain':8} {state:8} {markers}")
        return 0
    if not (build_dir / "gpucluster").is_file():
        print(f"doc_examples: --build-dir {build_dir}: no gpucluster binary there (build it first)", file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds through Runner.run, which stops the agents
    PR_SET_CHILD_SUBREAPER = 36
    prctl(PR_SET_CHILD_SUBREAPER, 1)  # what a command leaves behind becomes ours to stop
    counts = collections.Counter()
    skip_reasons: dict[str, list[str]] = collections.defaultdict(list)
    failures: list[str] = []
    not_run = collections.Counter()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="doc-examples-") as workdir:
        runner = Runner(build_dir, Path(workdir))
        for block in blocks:
            kind = block.kind or "plain"
            if not block.runs():
                not_run[kind] += 1
                continue
            if "skip" in block.markers:
                counts["skipped"] += 1
                skip_reasons[block.markers["reason"]].append(block.where)
                print(f"{block.where} {kind}: skipped ({block.markers['reason']})", flush=True)
                continue
            counts["run"] += 1
            try:
                runner.run(block)
            except (BlockFailure, MarkerError) as error:
                counts["failed"] += 1
                failures.append(block.where)
                detail = "\n".join("    " + line for line in str(error).split("\n"))
                print(f"{block.where} {kind}: FAILED\n{detail}", flush=True)
                continue
            counts["passed"] += 1
            print(f"{block.where} {kind}: passed", flush=True)

    print(f"\ndoc examples: {counts['run']} run, {counts['passed']} passed, {counts['failed']} failed, "
          f"{counts['skipped']} skipped ({time.monotonic() - started:.1f} s; build dir {build_dir})")
    for reason, wheres in sorted(skip_reasons.items()):
        print(f"  skipped, {reason}: {len(wheres)} ({', '.join(wheres)})")
    if not_run:
        print("  not examples to run (no check marker): "
              + ", ".join(f"{count} {kind}" for kind, count in sorted(not_run.items())))
    if failures:
        print(f"  failed: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
