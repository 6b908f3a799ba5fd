"""The package's layers point down (.importlinter: launch/benchmarks -> jobs -> train -> library
-> audio/text; data never imports models): `lint-imports` must report every contract kept."""

import os
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_contracts_kept():
  exe = shutil.which("lint-imports")
  assert exe, "lint-imports (import-linter, requirements-test.txt) is not installed"
  proc = subprocess.run([exe, "--config", os.path.join(ROOT, ".importlinter")], cwd=ROOT,
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
  assert "0 broken" in proc.stdout
