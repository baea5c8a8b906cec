"""The SLURM profile against a real scheduler: a private single-node SLURM (munged + slurmctld + slurmd as root),
brought up by the test itself, runs part of the smoke DAG through `workflow/profiles/slurm`, and is torn down.

Needs root (slurmd runs as root) and Debian's slurm-wlm + munge: when they are missing and apt-get is there, the
fixture installs them (`slurmctld slurmd slurm-client munge`, ~10 s); without root or apt-get it skips, saying why.
Deselect with `-m "not slurm"`. Pitfalls handled here (they each cost an hour once):
- the config must be reachable at /etc/slurm/slurm.conf: the slurm-jobstep plugin strips SLURM_CONF from the
  environment of the `srun` it runs inside every job; a symlink to our private config goes there and is removed;
- without slurmdbd there is no sacct, and the plugin would poll sacct forever: `--slurm-status-command squeue`;
- every snakemake run has an outer timeout that ends in SIGKILL of its whole process group.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_copy import copy_workflow

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
PROFILE = REPO / "workflow" / "profiles" / "slurm"
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "sinfo", "squeue", "sbatch", "scancel", "munged", "munge", "unmunge"]
SYS_CONF = Path("/etc/slurm/slurm.conf")
SBIN = "/usr/sbin:/sbin"
LOCK = Path("/tmp/wsae-test-slurm.lock")  # /etc/slurm/slurm.conf is machine-wide: one test cluster at a time
SMK_TIMEOUT_S = 600
# The smoke config; WSAE_SLURM_TEST_CONFIG=<absolute path> swaps it (debugging the scheduler side alone).
CONFIG = os.environ.get("WSAE_SLURM_TEST_CONFIG", "config/smoke.yaml")
TARGET = "results/tables/toy_theory.csv"

SLURM_CONF = """\
ClusterName=wsaetest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={state}/munge/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={state}/log/jobcomp.txt
MinJobAge=300
SchedulerParameters=sched_interval=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0
StateSaveLocation={state}/spool/ctld
SlurmdSpoolDir={state}/spool/d
SlurmctldPidFile={state}/run/slurmctld.pid
SlurmdPidFile={state}/run/slurmd.pid
SlurmctldLogFile={state}/log/slurmctld.log
SlurmdLogFile={state}/log/slurmd.log
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _env() -> dict:
    return {**os.environ, "PATH": os.environ.get("PATH", "") + ":" + SBIN}


def _which(name: str) -> str | None:
    return shutil.which(name, path=_env()["PATH"])


def _run(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=kw.pop("env", _env()), **kw)


def _install_or_skip() -> None:
    """Make sure the SLURM and munge binaries exist: apt-get them when root and apt are there, else skip."""
    missing = [b for b in BINARIES if _which(b) is None]
    if not missing:
        return
    if _which("apt-get") is None:
        pytest.skip(f"SLURM binaries {missing} missing and apt-get is not available to install {PACKAGES}")
    env = {**_env(), "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]
    proc = _run(cmd, timeout=600, env=env)
    if proc.returncode != 0:  # stale package lists on a fresh machine
        _run(["apt-get", "update", "-qq"], timeout=600, env=env)
        proc = _run(cmd, timeout=600, env=env)
    if proc.returncode != 0:
        pytest.fail(f"apt-get install {' '.join(PACKAGES)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    still = [b for b in BINARIES if _which(b) is None]
    assert not still, f"installed {PACKAGES} but {still} still missing"


def _free_port(avoid: set[int]) -> int:
    for port in range(16817, 17817):
        if port in avoid:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for slurmctld/slurmd")


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def _teardown(state: Path, conf: Path) -> None:
    """Cancel jobs, stop our daemons by their PID files, remove our /etc symlink and the state folder."""
    env = {**_env(), "SLURM_CONF": str(conf)}
    if _alive(state / "run" / "slurmctld.pid"):
        subprocess.run(["scancel", "--quiet", "--user", "root"], env=env, capture_output=True, timeout=20)
        for _ in range(20):
            q = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, timeout=20)
            if not q.stdout.strip():
                break
            time.sleep(0.5)
    for pid_file in (state / "run" / "slurmd.pid", state / "run" / "slurmctld.pid", state / "munge" / "munged.pid"):
        pid = _alive(pid_file)
        if pid is None:
            continue
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if _alive(pid_file) != pid:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
    if SYS_CONF.is_symlink() and os.readlink(SYS_CONF) == str(conf):
        SYS_CONF.unlink()
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A private single-node SLURM cluster for this module; yields the environment that talks to it."""
    if sys.platform != "linux":
        pytest.skip("SLURM test needs Linux")
    if os.geteuid() != 0:
        pytest.skip("SLURM test needs root: slurmd must run as root and the config goes to /etc/slurm")
    _install_or_skip()
    LOCK.touch(exist_ok=True)
    lock = LOCK.open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # wait for another session's test cluster to go
    if SYS_CONF.exists():  # a real cluster's config, or the link of another private cluster that is up
        lock.close()
        pytest.skip(f"{SYS_CONF} exists (another SLURM set-up on this machine); the test does not touch it")
    if SYS_CONF.is_symlink():
        SYS_CONF.unlink()  # dangling: left by a killed test session (we hold the lock)
    state = tmp_path_factory.mktemp("slurm")
    conf = state / "etc" / "slurm.conf"
    try:
        for sub in ("etc", "spool/ctld", "spool/d", "log", "run", "munge"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        (state / "munge").chmod(0o700)
        key = state / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = state / "munge" / "munge.socket"
        proc = _run(["munged", "--force", f"--socket={sock}", f"--key-file={key}",
                     f"--pid-file={state}/munge/munged.pid", f"--log-file={state}/log/munged.log",
                     f"--seed-file={state}/munge/munged.seed"])
        assert proc.returncode == 0, f"munged failed: {proc.stderr}"
        for _ in range(50):
            if sock.exists():
                break
            time.sleep(0.1)
        ctld_port = _free_port(set())
        slurmd_port = _free_port({ctld_port})
        mem_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        conf.write_text(SLURM_CONF.format(host=socket.gethostname().split(".")[0], state=state, cpus=os.cpu_count(),
                                          mem=max(1024, mem_total - 1024), ctld_port=ctld_port,
                                          slurmd_port=slurmd_port))
        (state / "etc" / "plugstack.conf").write_text("")  # keep the system's plugstack.conf out of the picture
        SYS_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYS_CONF.symlink_to(conf)
        env = {**_env(), "SLURM_CONF": str(conf)}
        for daemon in (["slurmctld", "-c", "-f", str(conf)], ["slurmd", "-f", str(conf)]):
            proc = _run(daemon, env=env)
            assert proc.returncode == 0, f"{daemon[0]} failed: {proc.stderr}"
        node_state = ""
        for _ in range(120):
            node_state = _run(["sinfo", "-h", "-o", "%t"], env=env).stdout.strip()
            if node_state.startswith(("idle", "mix", "alloc")):
                break
            time.sleep(0.5)
        else:
            logs = "".join((state / "log" / f).read_text()[-1500:] for f in ("slurmctld.log", "slurmd.log")
                           if (state / "log" / f).exists())
            raise AssertionError(f"SLURM node never became idle (state {node_state!r}):\n{logs}")
        yield {"env": env, "state": state}
    finally:
        _teardown(state, conf)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _snakemake(args: list[str], cwd: Path, env: dict, timeout: float = SMK_TIMEOUT_S) -> tuple[int, str]:
    """Run snakemake in its own process group; past `timeout` the whole group is SIGKILLed (a stuck status poll
    ignores SIGTERM)."""
    proc = subprocess.Popen([SNAKEMAKE, *args], cwd=cwd, env={**env, "PYTHONUNBUFFERED": "1"}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"snakemake through SLURM did not finish in {timeout} s:\n{out[-6000:]}") from None
    return proc.returncode, out


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    """The toy theory notebook and its table, on the smoke config, submitted through the SLURM profile."""
    root = tmp_path_factory.mktemp("wf_slurm")
    copy_workflow(root)
    t0 = time.monotonic()
    rc, out = _snakemake(
        [TARGET, "--workflow-profile", "workflow/profiles/slurm",
         "--configfile", CONFIG, "--config", "device=cpu",  # no GPU on this node
         "--jobs", "2", "--slurm-status-command", "squeue",  # no slurmdbd here, so no sacct
         "--slurm-init-seconds-before-status-checks", "1"],
        cwd=root, env=slurm_cluster["env"])
    assert rc == 0, f"snakemake through SLURM failed (rc {rc}):\n{out[-8000:]}"
    return {"root": root, "out": out, "wall_s": time.monotonic() - t0, **slurm_cluster}


@pytest.mark.slurm
@pytest.mark.slow
def test_smoke_rules_run_as_slurm_jobs(slurm_run):
    root, out = slurm_run["root"], slurm_run["out"]
    table = pd.read_csv(root / "results" / "tables" / "toy_theory.csv")
    assert len(table) > 0
    theory = root / "results" / "toy" / "theory"
    assert (theory / "metrics.json").stat().st_size > 0 and (theory / "report.html").stat().st_size > 0
    # the jobs really went through the scheduler: submitted with a SLURM id, and recorded by slurmctld as done
    assert out.count("has been submitted with SLURM jobid") >= 2, out[-4000:]
    jobcomp = (slurm_run["state"] / "log" / "jobcomp.txt").read_text()
    completed = [line for line in jobcomp.splitlines() if "JobState=COMPLETED" in line]
    assert len(completed) >= 2, jobcomp
    assert not [line for line in jobcomp.splitlines() if "JobState=FAILED" in line], jobcomp


@pytest.mark.slurm
@pytest.mark.slow
def test_rerun_through_slurm_has_nothing_to_do(slurm_run):
    rc, out = _snakemake([TARGET, "--workflow-profile", "workflow/profiles/slurm", "--configfile", CONFIG,
                          "--config", "device=cpu", "--slurm-status-command", "squeue"],
                         cwd=slurm_run["root"], env=slurm_run["env"], timeout=120)
    assert rc == 0 and "Nothing to be done" in out, out[-3000:]


def test_profile_groups_lm_layers_and_derives_resources():
    """Static check of the profile: one group job per LM layer, and every heavy rule gets a runtime and GPU."""
    prof = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert prof["executor"] == "slurm"
    groups = dict(g.split("=") for g in prof["groups"])
    assert groups.get("lm_train") == groups.get("lm_sae") is not None
    set_res = prof["set-resources"]
    for rule in ("lm_acts", "lm_train", "lm_sae", "vision_backbone", "vision_sae"):
        assert rule in set_res and set_res[rule].get("runtime", 0) > 0, rule
    assert any("runtime" in str(r) for r in prof["default-resources"])


def test_profile_names_only_rules_of_the_workflow(tmp_path):
    """A renamed rule must not silently lose its SLURM resources: every rule the profile names exists."""
    prof = yaml.safe_load((PROFILE / "config.yaml").read_text())
    named = {g.split("=")[0] for g in prof["groups"]} | set(prof["set-resources"]) | set(prof["set-threads"])
    proc = subprocess.run([SNAKEMAKE, "--list-rules", "--configfile", "config/paper.yaml", "--directory",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rules = set(proc.stdout.split())
    assert named <= rules, f"profile names rules the workflow does not have: {sorted(named - rules)}"
