"""site-configs/archer2.yaml renders the job scripts ARCHER2 documents, and site values cannot smuggle shell
lines into them.

The documented examples the scripts are held against:
- CPU (standard partition): https://docs.archer2.ac.uk/user-guide/scheduler/ ("Example: job submission script
  for MPI parallel job"); pw.x: https://docs.archer2.ac.uk/research-software/qe/ ; CASTEP:
  https://docs.archer2.ac.uk/research-software/castep/
- GPU (MI210 nodes): https://docs.archer2.ac.uk/user-guide/gpu/ ("Running jobs on the GPU nodes": partition gpu,
  QoS gpu-shd at most 2 GPUs, gpu-exc with --exclusive --nodes=1 for 4, --gpus=N, and "the submission script
  should not specify options such as --ntasks and --cpus-per-task. Such a job submission will be rejected");
  --nodes=1 with gpu-shd as in https://docs.archer2.ac.uk/user-guide/machine-learning/
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile

import pytest
import yaml

from reactforge.engine.cli import load_site
from reactforge.engine.parsl_config import render_submit_script
from reactforge.schemas.loading import InputError

from test_cli import ARCHER2_ENV, ROOT, cli

SITE = ROOT / "site-configs" / "archer2.yaml"
TASK_OPTIONS = re.compile(r"^#SBATCH\s+(--n?tasks|--cpus-per-task|-[nc]\b)")


@pytest.fixture
def archer2_env(monkeypatch):
    for key, value in ARCHER2_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def site(archer2_env):
    return load_site("archer2")[1]


def render(site, label, tmp_path):
    return render_submit_script(site, label, tmp_path / label).splitlines()


def sbatch(lines):
    return [ln for ln in lines if ln.startswith("#SBATCH")]


def commands(lines):
    return [ln for ln in lines if ln.strip() and not ln.startswith("#")]


def test_directives_come_before_any_command_and_the_scripts_parse(site, tmp_path):
    for label in site.executors:
        lines = render(site, label, tmp_path)
        assert lines[0] == "#!/bin/bash"
        first_command = lines.index(commands(lines)[0])
        # sbatch reads no #SBATCH line after the first command
        assert all(i < first_command for i, ln in enumerate(lines) if ln.startswith("#SBATCH")), label
        if shutil.which("bash"):
            subprocess.run(["bash", "-n"], input="\n".join(lines), text=True, check=True)


def test_reference_job_is_the_documented_standard_partition_job(site, tmp_path):
    lines = render(site, "cpu-dft", tmp_path)
    directives = sbatch(lines)
    for line in ("#SBATCH --nodes=1", "#SBATCH --partition=standard", "#SBATCH --qos=standard",
                 "#SBATCH --account=e999", "#SBATCH --exclusive", "#SBATCH --time=120"):  # 02:00:00 in minutes
        assert line in directives
    # the job holds one HTEX worker pool per node; the ranks are pw.x's srun's
    assert "#SBATCH --ntasks-per-node=1" in directives
    worker_init = commands(lines)[0].split("; ")
    assert worker_init == ["module load quantum_espresso", "module load castep",
                           "source /work/e999/venv/bin/activate", "export OMP_NUM_THREADS=1"]
    # pw.x / castep.mpi: "srun --hint=nomultithread --distribution=block:block pw.x" with 128 ranks per node,
    # one core each, OMP_NUM_THREADS=1
    launch = site.reference_launch.split()
    assert launch[0] == "srun"
    assert {"--distribution=block:block", "--hint=nomultithread", "--ntasks=128", "--ntasks-per-node=128",
            "--cpus-per-task=1", "--nodes=1"} == set(launch[1:])
    assert site.reference_env == {"OMP_NUM_THREADS": "1"}
    assert site.executors["cpu-dft"].provider.launcher == "single"


def test_mlff_job_is_a_standard_partition_job(site, tmp_path):
    directives = sbatch(render(site, "cpu-ml", tmp_path))
    for line in ("#SBATCH --nodes=1", "#SBATCH --partition=standard", "#SBATCH --qos=standard",
                 "#SBATCH --account=e999", "#SBATCH --time=240"):
        assert line in directives


def test_gpu_job_is_the_documented_shared_gpu_job(site, tmp_path):
    lines = render(site, "gpu", tmp_path)
    directives = sbatch(lines)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --qos=gpu-shd", "#SBATCH --gpus=1", "#SBATCH --nodes=1",
                 "#SBATCH --account=e999", "#SBATCH --time=240"):
        assert line in directives
    assert not [ln for ln in directives if TASK_OPTIONS.match(ln)]  # rejected in GPU jobs
    assert "#SBATCH --exclusive" not in directives  # gpu-shd shares the node
    assert not [ln for ln in directives if "--gpus-per-node" in ln or "--mem" in ln]
    # the ROCm PyTorch module, then the venv built on it (same Python minor version as the coordinator's)
    assert commands(lines)[0].split("; ") == ["module load pytorch/2.9.1-gpu",
                                              "source /work/e999/venv-rocm/bin/activate"]
    assert site.executors["gpu"].device == "cuda"


def test_four_gpus_render_the_documented_exclusive_job(site, tmp_path):
    gpu = site.executors["gpu"]
    gpu.provider = gpu.provider.model_copy(update={"qos": "gpu-exc", "exclusive": True, "gpus_per_job": 4})
    directives = sbatch(render(site, "gpu", tmp_path))
    for line in ("#SBATCH --gpus=4", "#SBATCH --nodes=1", "#SBATCH --exclusive", "#SBATCH --qos=gpu-exc",
                 "#SBATCH --partition=gpu"):
        assert line in directives
    assert not [ln for ln in directives if TASK_OPTIONS.match(ln)]


def archer2_data(**changes):
    data = yaml.safe_load(SITE.read_text())
    for path, value in changes.items():
        node = data
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return data


def load(tmp_path, data):
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_site(str(path))[1]


def test_srun_launcher_with_srun_reference_launch_is_refused(archer2_env, tmp_path):
    with pytest.raises(InputError) as err:
        load(tmp_path, archer2_data(**{"executors.cpu-dft.provider.launcher": "srun"}))
    message = str(err.value)
    assert "executors.cpu-dft.provider.launcher" in message and "reference_launch" in message
    assert "launcher: single" in message and "archer2.yaml" in message


def test_srun_launcher_is_fine_where_no_srun_is_nested(archer2_env, tmp_path):
    # an executor that runs no reference code, or a reference launch without srun
    load(tmp_path, archer2_data(**{"executors.cpu-ml.provider.launcher": "srun"}))
    load(tmp_path, archer2_data(**{"executors.cpu-dft.provider.launcher": "srun", "reference_launch": "mpirun -n 128"}))


SCRIPT_FIELDS = [
    "executors.cpu-dft.provider.account",
    "executors.cpu-dft.provider.partition",
    "executors.cpu-dft.provider.qos",
    "executors.cpu-dft.provider.constraint",
    "executors.cpu-dft.provider.worker_init",
    "executors.cpu-dft.address",
    "reference_launch",
    "reference_env.OMP_NUM_THREADS",
]


@pytest.mark.parametrize("field", SCRIPT_FIELDS)
@pytest.mark.parametrize("evil", ["e999\ntouch /tmp/owned", "e999\rx", "e999\tx"])
def test_control_characters_in_a_script_value_are_refused_naming_the_field(archer2_env, tmp_path, monkeypatch,
                                                                            field, evil):
    monkeypatch.setenv("EVIL", evil)  # read_yaml expands ${EVIL} when the site is loaded
    with pytest.raises(InputError) as err:
        load(tmp_path, archer2_data(**{field: "${EVIL}"}))
    shown = field.replace(".provider.", ".provider.slurm.")  # the provider's type tag is part of the path
    assert f"field '{shown}'" in str(err.value) and "control character" in str(err.value)


def test_scheduler_options_take_sbatch_lines_only(archer2_env, tmp_path, monkeypatch):
    field = "executors.cpu-dft.provider.scheduler_options"
    site = load(tmp_path, archer2_data(**{field: "#SBATCH --mail-type=END\n#SBATCH --mail-user=a@b.c\n"}))
    directives = sbatch(render(site, "cpu-dft", tmp_path))
    assert "#SBATCH --mail-type=END" in directives and "#SBATCH --mail-user=a@b.c" in directives
    monkeypatch.setenv("EVIL", "#SBATCH --mail-type=END\ntouch /tmp/owned")
    with pytest.raises(InputError) as err:
        load(tmp_path, archer2_data(**{field: "${EVIL}"}))
    assert "field 'executors.cpu-dft.provider.slurm.scheduler_options'" in str(err.value)
    assert "'#SBATCH'" in str(err.value)
    with pytest.raises(InputError, match="control character"):
        load(tmp_path, archer2_data(**{field: "#SBATCH --mail-type=END\r\n"}))


def test_executor_labels_are_one_line(archer2_env, tmp_path):
    data = archer2_data()
    data["executors"]["gpu\nx"] = data["executors"].pop("gpu")
    data["resources"]["training"] = "gpu\nx"
    with pytest.raises(InputError, match="control character"):
        load(tmp_path, data)


@pytest.mark.parametrize("options", [
    {"cores_per_node": 8},
    {"scheduler_options": "#SBATCH --ntasks=2"},
    {"scheduler_options": "#SBATCH --cpus-per-task=8"},
    {"scheduler_options": "#SBATCH -n 2"},
    {"gpus_per_node": 1},
])
def test_gpu_jobs_cannot_ask_for_tasks_or_cores(archer2_env, tmp_path, options):
    data = archer2_data(**{f"executors.gpu.provider.{k}": v for k, v in options.items()})
    with pytest.raises(InputError) as err:
        load(tmp_path, data)
    assert "executors.gpu.provider" in str(err.value)


def test_gpus_per_node_jobs_leave_out_the_tasks_line_too(archer2_env, tmp_path):
    data = archer2_data(**{"executors.gpu.provider.gpus_per_job": None, "executors.gpu.provider.gpus_per_node": 2})
    directives = sbatch(render(load(tmp_path, data), "gpu", tmp_path))
    assert "#SBATCH --gpus-per-node=2" in directives and not [ln for ln in directives if TASK_OPTIONS.match(ln)]


def test_check_prints_every_slurm_script_whole():
    p = cli("check", "--no-preview", "--site", "archer2", ROOT / "examples" / "in2o3-co2-hydrogenation.yaml", env=ARCHER2_ENV)
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    for label in ("cpu-dft", "cpu-ml", "gpu"):
        assert f"  {label} submit script (one per block):" in out
    assert out.count("    #!/bin/bash") == 3
    # the commands of the jobs, not only their directives
    assert ("    module load quantum_espresso; module load castep; source /work/e999/venv/bin/activate; "
            "export OMP_NUM_THREADS=1") in out
    assert "    module load pytorch/2.9.1-gpu; source /work/e999/venv-rocm/bin/activate" in out
    assert "    #SBATCH --gpus=1" in out and "    #SBATCH --qos=gpu-shd" in out
    assert any(ln.startswith("    process_worker_pool.py -a 10.1.2.3 ") for ln in out)
    # the throw-away render folder is not shown as if it were the run's
    assert "<submit_scripts>" in p.stdout and tempfile.gettempdir() + "/tmp" not in p.stdout
