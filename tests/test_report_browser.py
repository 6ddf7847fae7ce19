"""report/index.html as a user opens it: rendered by a real headless browser (Debian's chromium), every
image on the page loaded."""
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from reactforge.workflows import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (make test installs Debian's)")

# after the page's load event: how many images there are and which did not decode
CHECK = """<script>
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  document.title = 'IMAGES ' + JSON.stringify({count: images.length, broken: broken});
});
</script>"""


def _render(page):
    """The page's DOM after load, with the check above appended (a copy beside it: same relative paths)."""
    probe = page.with_name("browser-check.html")
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    m = re.search(r"<title>IMAGES (.*?)</title>", out.stdout)
    assert m, "the page's load event never ran:\n" + out.stdout[:2000]
    return json.loads(m.group(1).replace("&quot;", '"'))


def _summary():
    return {"name": "browser", "blocks": {"neb": {"iterations": 2, "labels_added": 8, "reference_calls": 8,
                                                   "termination_met": True, "criterion_value": 0.02}},
            "barriers": [{"reaction": "hop", "permutations_screened": 1, "mlff_barrier_eV": 0.31,
                          "reference_barrier_eV": 0.3, "abs_error_eV": 0.01, "validation_converged": True}],
            "adsorption": {"profile": [{"label": "A", "kind": "intermediate", "mlff_eV": -0.5, "reference_eV": -0.52},
                                       {"label": "hop TS", "kind": "ts", "mlff_eV": -0.19, "reference_eV": -0.22},
                                       {"label": "B", "kind": "intermediate", "mlff_eV": -0.6, "reference_eV": -0.6}],
                           "iterations": [{"block": "neb", "iteration": 1, "mae_eV": 0.03,
                                           "intermediates": {"A": {"error_eV": 0.02}, "B": {"error_eV": -0.04}}}]}}


def test_every_figure_of_the_report_loads_in_a_browser(tmp_path):
    rng = np.random.default_rng(1)
    page = report.write_report(
        tmp_path / "report", _summary(),
        growth=[{"block": 0, "iteration": 0, "reason": "bulk", "count": 3},
                {"block": 6, "iteration": 1, "reason": "NEB image", "count": 4}],
        barrier_iterations={"hop": [{"iteration": 1, "mlff_barrier_eV": 0.4, "reference_barrier_eV": 0.33},
                                    {"iteration": 2, "mlff_barrier_eV": 0.31, "reference_barrier_eV": 0.3}]},
        profiles={"hop": {"mlff_eV": [0, 0.31, -0.1], "reference_eV": [0, 0.3, -0.1]}},
        parity_data={"reference_energy_eV_per_atom": [-3.0, -3.1], "mlff_energy_eV_per_atom": [-3.01, -3.1],
                     "reference_forces_eV_per_A": rng.normal(size=12).tolist(),
                     "mlff_forces_eV_per_A": rng.normal(size=12).tolist()})
    seen = _render(page)
    figures = sorted(p.name for p in page.parent.glob("*.png"))
    assert len(figures) == 6
    assert seen == {"count": len(figures), "broken": []}


def test_a_missing_figure_is_seen_as_broken(tmp_path):
    """The check can fail: a figure deleted after the page was written does not load."""
    page = report.write_report(tmp_path / "report", _summary(),
                               barrier_iterations={"hop": [{"iteration": 1, "mlff_barrier_eV": 0.4}]})
    (page.parent / "barrier_history.png").unlink()
    seen = _render(page)
    assert seen["broken"] == ["barrier_history.png"]
