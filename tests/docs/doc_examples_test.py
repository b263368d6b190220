#!/usr/bin/python3
"""Tests of tests/docs/doc_examples.py: that a doc which drifts from the behaviour fails,
that the markers and placeholders mean what tests/docs/README.md says, and that nothing
it starts is left running.

Usage: doc_examples_test.py --build-dir DIR [unittest options]
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import textwrap
import unittest
import uuid
from pathlib import Path

sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import doc_examples as de  # noqa: E402

SCRIPT = Path(__file__).resolve().parent / "doc_examples.py"
BUILD_DIR = "build/release"  # set from --build-dir in __main__


def matches(expected: str, actual: str, vary: tuple[str, ...] = ()) -> bool:
    return de.output_matches(expected.split("\n"), actual.split("\n"), list(vary))


class OutputMatching(unittest.TestCase):
    def test_exact_lines_match_and_any_difference_fails(self) -> None:
        self.assertTrue(matches("a b\nc", "a b\nc"))
        self.assertFalse(matches("a b\nc", "a b\nd"))
        self.assertFalse(matches("a b\nc", "a b\nc\nextra"))
        self.assertFalse(matches("a b\nc", "a b"))
        self.assertFalse(matches("a.b", "axb"))  # text is literal, not a regex

    def test_no_expected_output_means_none(self) -> None:
        self.assertTrue(de.output_matches([], [], []))
        self.assertFalse(de.output_matches([], ["surprise"], []))

    def test_lone_ellipsis_matches_any_number_of_lines(self) -> None:
        for actual in ("first\nlast", "first\nx\nlast", "first\nx\ny\nz\nlast"):
            self.assertTrue(matches("first\n…\nlast", actual), actual)
        self.assertFalse(matches("first\n…\nlast", "first\nx\nnot last"))
        self.assertTrue(matches("first\n…", "first\nmore\nmore"))

    def test_inline_ellipsis_stays_within_its_line(self) -> None:
        self.assertTrue(matches('{"message": "…", "x": 1}', '{"message": "anything at all", "x": 1}'))
        self.assertFalse(matches("a … z", "a b\nc z"))
        self.assertFalse(matches("a … z", "a b c y"))

    def test_number_placeholder_matches_one_number_only(self) -> None:
        for number in ("0", "42", "-3", "1796616604.965326", "1e+30", "2.5E-3"):
            self.assertTrue(matches('{"t":{{number}}}', '{"t":' + number + "}"), number)
        for not_a_number in ("", "abc", "1 2", '"1"'):
            self.assertFalse(matches('{"t":{{number}}}', '{"t":' + not_a_number + "}"), not_a_number)

    def test_vary_lets_only_the_named_keys_numbers_differ(self) -> None:
        expected = '{"count":3,"timestamp":1795753864.3966846}'
        self.assertFalse(matches(expected, '{"count":3,"timestamp":1796616604.965326}'))
        self.assertTrue(matches(expected, '{"count":3,"timestamp":1796616604.965326}', ("timestamp",)))
        self.assertFalse(matches(expected, '{"count":4,"timestamp":1796616604.965326}', ("timestamp",)))
        self.assertFalse(matches(expected, '{"count":3,"timestamp":"soon"}', ("timestamp",)))


def write_doc(directory: Path, text: str) -> Path:
    path = directory / "doc.md"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


class Parsing(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = tempfile.TemporaryDirectory()
        self.addCleanup(self.directory.cleanup)

    def parse(self, text: str) -> list[de.Block]:
        return de.parse_markdown(write_doc(Path(self.directory.name), text))

    def test_blocks_kinds_lines_and_markers(self) -> None:
        blocks = self.parse("""\
            # Title
            <!-- doc-test: skip reason="needs a GPU" -->
            ```sh
            nvidia-smi
            ```
            ```console
            $ echo a \\
              b
            a b
            ```
            ```
            plain
            ```
            """)
        self.assertEqual([(b.line, b.kind) for b in blocks], [(3, "sh"), (6, "console"), (11, "")])
        self.assertEqual(blocks[0].markers, {"skip": "", "reason": "needs a GPU"})
        commands = de.console_commands(blocks[1])
        self.assertEqual([(c.text.split(), c.line, c.expected) for c in commands], [(["echo", "a", "b"], 7, ["a b"])])
        self.assertFalse(blocks[2].runs())

    def test_bad_markers_are_errors_naming_the_place_and_the_rule(self) -> None:
        cases = {
            '<!-- doc-test: skp reason="x" -->\n```sh\ntrue\n```\n': "doc.md:1: marker option 'skp' is unknown",
            "<!-- doc-test: skip -->\n```sh\ntrue\n```\n": 'doc.md:1: skip needs reason="..."',
            "<!-- doc-test: exit=two -->\n```sh\ntrue\n```\n": "doc.md:1: exit='two': must be a whole number",
            "<!-- doc-test: agent=yes -->\n```sh\ntrue\n```\n": "agent takes no value",
            '<!-- doc-test: check="promtool" -->\n```yaml\na: 1\n```\n': "must name {file}",
            '<!-- doc-test: vary="t" -->\n```sh\ntrue\n```\n':
                "doc.md:2: marker option vary is for console blocks, not sh",
            '<!-- doc-test: skip reason="x" -->\n\n```sh\ntrue\n```\n':
                "doc.md:1: a doc-test marker must be on the line right before a fence",
            '<!-- doc-test: skip reason="unclosed -->\n```sh\ntrue\n```\n': "doc.md:1: marker",
            "```console\noutput before a command\n```\n": "doc.md:2: console output before any `$ ` command",
            "```sh\ntrue\n": "doc.md:1: fence never closed",
        }
        for text, message in cases.items():
            with self.subTest(text=text), self.assertRaises(de.MarkerError) as raised:
                for block in self.parse(text):
                    de.console_commands(block) if block.kind == "console" else None
            self.assertIn(message, str(raised.exception))


def processes_mentioning(token: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if token in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


class EndToEnd(unittest.TestCase):
    """The script run on small documents against the real binary, agent and module."""

    def setUp(self) -> None:
        self.directory = tempfile.TemporaryDirectory()
        self.addCleanup(self.directory.cleanup)
        self.token = f"doc-test-{uuid.uuid4().hex[:12]}"

    def run_doc(self, text: str, *extra: str) -> subprocess.CompletedProcess[str]:
        doc = write_doc(Path(self.directory.name), text.replace("TOKEN", self.token))
        return subprocess.run([sys.executable, str(SCRIPT), "--build-dir", BUILD_DIR, "--file", str(doc), *extra],
                              capture_output=True, text=True, timeout=120)

    def assertCounts(self, result: subprocess.CompletedProcess[str], run: int, passed: int, failed: int,
                     skipped: int) -> None:
        self.assertIn(f"{run} run, {passed} passed, {failed} failed, {skipped} skipped", result.stdout,
                      result.stdout + result.stderr)
        self.assertEqual(result.returncode, 1 if failed else 0, result.stdout + result.stderr)

    def test_cli_output_as_documented_passes_and_drift_fails_with_a_diff(self) -> None:
        good = """\
            ```console
            $ build/release/gpucluster select --fleet examples/fleet-8x-h100.json --min-memory 40GiB --json
            {
              "device": "dgx-h100-01/cuda:7",
              "reason": "highest score among 2 eligible of 8 devices",
              "score": …
            }
            ```
            """
        self.assertCounts(self.run_doc(good), 1, 1, 0, 0)
        drifted = self.run_doc(good.replace("cuda:7", "cuda:6"))
        self.assertCounts(drifted, 1, 0, 1, 0)
        self.assertIn('-  "device": "dgx-h100-01/cuda:6",', drifted.stdout)
        self.assertIn('+  "device": "dgx-h100-01/cuda:7",', drifted.stdout)

    def test_exit_status_is_checked_and_the_exit_marker_sets_it(self) -> None:
        bad_input = """\
            ```console
            $ build/release/gpucluster select --fleet examples/fleet-8x-h100.json --min-memory lots >/dev/null 2>&1
            ```
            """
        failed = self.run_doc(bad_input)
        self.assertCounts(failed, 1, 0, 1, 0)
        self.assertIn("exited 2, expected 0", failed.stdout)
        self.assertCounts(self.run_doc("<!-- doc-test: exit=2 -->\n" + textwrap.dedent(bad_input)), 1, 1, 0, 0)

    def test_skipped_blocks_are_counted_with_their_reason_and_not_run(self) -> None:
        result = self.run_doc("""\
            <!-- doc-test: skip reason="needs an NVIDIA GPU" -->
            ```sh
            false
            ```
            <!-- doc-test: skip reason="needs an NVIDIA GPU" -->
            ```console
            $ nvidia-smi
            ```
            ```json
            {"valid": true}
            ```
            """)
        self.assertCounts(result, 1, 1, 0, 2)
        self.assertIn("skipped, needs an NVIDIA GPU: 2", result.stdout)

    def test_json_blocks_must_parse(self) -> None:
        result = self.run_doc('```json\n{"a": 1,}\n```\n')
        self.assertCounts(result, 1, 0, 1, 0)
        self.assertIn("not valid JSON", result.stdout)

    def test_python_blocks_run_against_the_built_module_with_setup(self) -> None:
        block = """\
            <!-- doc-test: setup="jobs = list(range(10))" -->
            ```python
            import gpucluster
            with gpucluster.Manager(fleet="examples/fleet-home.json") as m:
                m.start()
                assert sum(len(v) for v in m.plan("capacity", items=len(jobs)).apply(jobs).values()) == 10
                assert m.select(min_free_memory_bytes=8 << 30).id == EXPECTED
            ```
            """
        self.assertCounts(self.run_doc(block.replace("EXPECTED", '"home/cuda:1"')), 1, 1, 0, 0)
        wrong = self.run_doc(block.replace("EXPECTED", '"home/cuda:0"'))
        self.assertCounts(wrong, 1, 0, 1, 0)
        self.assertIn("AssertionError", wrong.stdout)
        self.assertCounts(self.run_doc(block.replace("jobs = list(range(10))", "pass")), 1, 0, 1, 0)

    def test_python_block_with_an_agent_marker_talks_to_that_agent(self) -> None:
        block = """\
            <!-- doc-test: agent args="--fleet examples/fleet-home.json --node-name TOKEN" -->
            ```python
            import json, urllib.request
            with urllib.request.urlopen("http://localhost:9420/healthz") as answer:
                assert json.load(answer)["node"]["name"] == EXPECTED
            ```
            """
        self.assertCounts(self.run_doc(block.replace("EXPECTED", '"TOKEN"')), 1, 1, 0, 0)
        self.assertEqual(processes_mentioning(self.token), [])
        wrong = self.run_doc(block.replace("EXPECTED", '"someone-else"'))
        self.assertCounts(wrong, 1, 0, 1, 0)
        self.assertIn("AssertionError", wrong.stdout)
        self.assertEqual(processes_mentioning(self.token), [])
        without = self.run_doc(textwrap.dedent(block).split("\n", 1)[1].replace("EXPECTED", '"TOKEN"'))
        self.assertCounts(without, 1, 0, 1, 0)
        self.assertIn("none runs for this block", without.stdout)

    def test_check_marker_runs_the_command_on_the_block(self) -> None:
        fleet = """\
            <!-- doc-test: check="build/release/gpucluster devices --fleet {file}" -->
            ```json
            {"host": "t", "devices": [{"device_id": "cuda:0", "name": "X", "vendor": "nvidia", "device_type": "cuda",
              "memory_bytes": 1000, "metrics": {"memory_used_bytes": USED}}]}
            ```
            """
        self.assertCounts(self.run_doc(fleet.replace("USED", "10")), 1, 1, 0, 0)
        refused = self.run_doc(fleet.replace("USED", "2000"))  # used > total: the binary refuses the fleet
        self.assertCounts(refused, 1, 0, 1, 0)
        self.assertIn("exited 2", refused.stdout)

    def test_agent_from_the_doc_serves_the_rewritten_address_and_is_stopped(self) -> None:
        fleet = Path(self.directory.name) / f"{self.token}.json"
        fleet.write_bytes((de.REPO_ROOT / "examples" / "fleet-home.json").read_bytes())
        doc = f"""\
            ```console
            $ build/release/gpucluster agent --fleet {fleet} --listen 0.0.0.0:9420 &
            $ curl -s localhost:9420/v1/cluster
            {{"available_memory_bytes":47781511169,…,"device_count":3,…}}
            $ curl -s -X POST http://127.0.0.1:9420/v1/select -d '{{"min_memory_bytes": 8589934592}}'
            {{"device":"home/cuda:1",…}}
            ```
            <!-- doc-test: agent args="--fleet {fleet}" -->
            ```sh
            curl -sf localhost:9420/healthz
            ```
            """
        with contextlib.ExitStack() as stack:
            # Port 9420 taken (by us, or by whoever has it already): the agents must not need it.
            holder = stack.enter_context(socket.socket())
            try:
                holder.bind(("127.0.0.1", de.DOC_AGENT_PORT))
                holder.listen()
            except OSError:
                pass
            result = self.run_doc(doc)
        self.assertCounts(result, 2, 2, 0, 0)
        self.assertEqual(processes_mentioning(self.token), [])
        drifted = self.run_doc(doc.replace('"device_count":3', '"device_count":4'))
        self.assertCounts(drifted, 2, 1, 1, 0)
        self.assertEqual(processes_mentioning(self.token), [])

    def test_agent_address_without_an_agent_is_a_failure_not_a_request_to_port_9420(self) -> None:
        result = self.run_doc("```console\n$ curl -s localhost:9420/healthz\n```\n")
        self.assertCounts(result, 1, 0, 1, 0)
        self.assertIn("none runs for this block", result.stdout)

    def test_foreground_agent_shows_its_banner_and_is_stopped(self) -> None:
        result = self.run_doc("""\
            ```console
            $ build/release/gpucluster agent --fleet examples/fleet-home.json
            gpucluster agent on http://127.0.0.1:9420 (host …; discovering devices: …)
            …
            SIGTERM or Ctrl-C drains and stops it.
            ready: devices: 3 simulated (discovered in {{number}} s)
            ```
            """)
        self.assertCounts(result, 1, 1, 0, 0)

    def test_what_a_command_leaves_running_is_stopped(self) -> None:
        result = self.run_doc("""\
            ```sh
            (exec -a TOKEN sleep 300) >/dev/null 2>&1 &
            ```
            """)
        self.assertCounts(result, 1, 1, 0, 0)
        self.assertEqual(processes_mentioning(self.token), [])

    def test_only_and_list_select_blocks(self) -> None:
        doc = "```sh\ntrue\n```\n```sh\nfalse\n```\n"
        self.assertCounts(self.run_doc(doc), 2, 1, 1, 0)
        self.assertCounts(self.run_doc(doc, "--only", "doc.md:1"), 1, 1, 0, 0)
        listing = self.run_doc(doc, "--list")
        self.assertEqual(listing.returncode, 0)
        self.assertEqual(len(re.findall(r"doc\.md:\d+ +sh +runs", listing.stdout)), 2, listing.stdout)
        nothing = self.run_doc(doc, "--only", "doc.md:2")
        self.assertEqual(nothing.returncode, 2)
        self.assertIn("no block there", nothing.stderr)


if __name__ == "__main__":
    if "--build-dir" in sys.argv:
        at = sys.argv.index("--build-dir")
        BUILD_DIR = sys.argv[at + 1]
        del sys.argv[at : at + 2]
    unittest.main()
