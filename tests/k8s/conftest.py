"""Make ``scripts/e2e_kind`` (the end-to-end run's plan and checks) importable by these tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
