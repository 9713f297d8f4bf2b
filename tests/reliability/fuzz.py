"""Run schemathesis with every check over a running Lexia (`python -m tests.reliability.fuzz --help`).

The fuzzer gets a '*' key of its own tenant; every `key_id` it sends is pinned to a spare key of
that tenant, so it can PATCH and DELETE keys without revoking the key it is using. Refusals that
JSON Schema cannot express are accepted only as listed in tests/reliability/fuzz_hooks.py.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@dataclass
class FuzzResult:
    """What a run found."""

    exit_code: int
    cases: int
    failures: int
    server_errors: int
    operations: int
    output: str

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and self.failures == 0


def config_text(spare_key_id: str) -> str:
    """The run's schemathesis.toml."""
    return (
        'hooks = "tests.reliability.fuzz_hooks"\n'
        "[parameters]\n"
        f'"path.key_id" = "{spare_key_id}"\n'
        f'"query.key_id" = "{spare_key_id}"\n'
    )


def command(url: str, key: str, config: Path, *, max_time: int, workers: int, seed: int | None,
            report_dir: Path | None, max_examples: int | None) -> list[str]:
    """The schemathesis command line."""
    cmd = [
        str(SCHEMATHESIS), "--config-file", str(config), "run", f"{url.rstrip('/')}/openapi.json",
        "-H", f"Authorization: Bearer {key}", "--checks", "all", "--exclude-checks", "positive_data_acceptance,use_after_free",
        "--max-time", str(max_time), "-w", str(workers), "--no-color", "--generation-database", "none",
        "--request-timeout", "30", "--continue-on-failure",
    ]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if max_examples is not None:
        cmd += ["--max-examples", str(max_examples)]
    if report_dir is not None:
        cmd += ["--report", "junit,ndjson", "--report-dir", str(report_dir)]
    return cmd


def parse(output: str, exit_code: int) -> FuzzResult:
    """Counts from schemathesis' summary."""
    cases = re.search(r"(\d+) generated", output)
    failures = re.search(r"(\d+) unique failures", output)
    server = re.search(r"ST101 Server error: (\d+)", output)
    operations = re.search(r"Tested: (\d+)", output)
    return FuzzResult(
        exit_code=exit_code,
        cases=int(cases.group(1)) if cases else 0,
        failures=int(failures.group(1)) if failures else 0,
        server_errors=int(server.group(1)) if server else 0,
        operations=int(operations.group(1)) if operations else 0,
        output=output,
    )


def run_fuzz(url: str, key: str, spare_key_id: str, *, max_time: int = 60, workers: int = 2, seed: int | None = None,
             report_dir: Path | None = None, max_examples: int | None = None) -> FuzzResult:
    """Run schemathesis against `url` (blocking; run it in a thread from async code)."""
    with tempfile.TemporaryDirectory(prefix="lexia-fuzz-") as tmp:
        config = Path(tmp) / "schemathesis.toml"
        config.write_text(config_text(spare_key_id))
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        proc = subprocess.run(
            command(url, key, config, max_time=max_time, workers=workers, seed=seed, report_dir=report_dir,
                    max_examples=max_examples),
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=max_time + 300, check=False,
        )
    return parse(proc.stdout + proc.stderr, proc.returncode)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--key", required=True, help="a '*' key (its tenant is fuzzed)")
    parser.add_argument("--spare-key-id", required=True, help="another key of that tenant, for /v1/admin/keys/{id}")
    parser.add_argument("--max-time", type=int, default=120)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--report-dir", type=Path)
    args = parser.parse_args()
    result = run_fuzz(args.url, args.key, args.spare_key_id, max_time=args.max_time, workers=args.workers,
                      seed=args.seed, report_dir=args.report_dir)
    print(result.output)
    print(f"cases={result.cases} failures={result.failures} server_errors={result.server_errors}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
