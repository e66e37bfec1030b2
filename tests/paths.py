"""Where tests find data that lives outside the repository (present on CI, maybe not elsewhere)."""

from pathlib import Path

# ../shared/data/tinyshakespeare.txt beside the checkout; tests that need it skip with a reason when absent.
SHAKESPEARE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tinyshakespeare.txt"
