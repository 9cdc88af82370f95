"""The documentation builds as a site with no broken links (mkdocs --strict)."""
import subprocess
import sys

from harness import REPO


def test_mkdocs_build_is_strict_clean(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "site" / "sweep" / "index.html").is_file()
